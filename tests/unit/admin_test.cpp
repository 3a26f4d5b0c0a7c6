// The admin listener on 127.0.0.1 port 0, driven by a plain blocking client: the endpoints and
// their status codes, keep-alive, HEAD, the optional PROXY v1/v2 header (an NLB health check
// sends a v2 LOCAL header), malformed input, the header deadline, the connection cap and stop().
#include "egressd/admin/admin_server.hpp"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <boost/asio/io_context.hpp>
#include <cctype>
#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <thread>

#include "egressd/metrics/stats.hpp"

namespace egressd::admin {
namespace {

namespace asio = boost::asio;
using namespace std::chrono_literals;

struct reply {
  int status = 0;
  std::map<std::string, std::string> headers;  // names lower-cased
  std::string body;
};

// A blocking POSIX client with a receive timeout, so a server that hangs fails the test
// instead of hanging it (Asio's blocking reads would poll past SO_RCVTIMEO).
class client {
 public:
  explicit client(const asio::ip::tcp::endpoint& ep) {
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    timeval tv{5, 0};
    ::setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    int one = 1;
    ::setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    sockaddr_in sa{};
    sa.sin_family = AF_INET;
    sa.sin_port = htons(ep.port());
    sa.sin_addr.s_addr = htonl(ep.address().to_v4().to_uint());
    connected_ = ::connect(fd_, reinterpret_cast<sockaddr*>(&sa), sizeof sa) == 0;
  }
  ~client() { ::close(fd_); }
  client(const client&) = delete;
  client& operator=(const client&) = delete;

  bool connected() const { return connected_; }

  void send(std::string_view data) {
    while (!data.empty()) {
      auto n = ::send(fd_, data.data(), data.size(), MSG_NOSIGNAL);
      if (n <= 0) return;  // the server closed: the read that follows shows it
      data.remove_prefix(static_cast<std::size_t>(n));
    }
  }

  // One response; nullopt if the connection ends (or the 5 s receive timeout passes) first.
  // head: the response to a HEAD request, which has no body whatever Content-Length says.
  std::optional<reply> read_reply(bool head = false) {
    std::size_t end;
    while ((end = buf_.find("\r\n\r\n")) == std::string::npos) {
      if (!fill()) return std::nullopt;
    }
    reply r;
    std::string head_block = buf_.substr(0, end);
    buf_.erase(0, end + 4);
    auto line_end = head_block.find("\r\n");
    std::string status_line = head_block.substr(0, line_end);
    if (status_line.size() < 12 || status_line.compare(0, 5, "HTTP/") != 0) return std::nullopt;
    r.status = std::stoi(status_line.substr(9, 3));
    std::size_t pos = line_end == std::string::npos ? head_block.size() : line_end + 2;
    while (pos < head_block.size()) {
      auto next = head_block.find("\r\n", pos);
      if (next == std::string::npos) next = head_block.size();
      std::string field = head_block.substr(pos, next - pos);
      auto colon = field.find(':');
      if (colon != std::string::npos) {
        std::string name = field.substr(0, colon);
        std::transform(name.begin(), name.end(), name.begin(),
                       [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
        r.headers[name] = field.substr(field.find_first_not_of(' ', colon + 1));
      }
      pos = next + 2;
    }
    std::size_t length = 0;
    if (auto it = r.headers.find("content-length"); it != r.headers.end() && !head) {
      length = std::stoul(it->second);
    }
    while (buf_.size() < length) {
      if (!fill()) return std::nullopt;
    }
    r.body = buf_.substr(0, length);
    buf_.erase(0, length);
    return r;
  }

  // True when the server closed the connection without sending anything more (a reset counts
  // as closed too); false when bytes arrive or the receive timeout passes.
  bool closed_by_peer() {
    if (!buf_.empty()) return false;
    char c;
    auto n = ::recv(fd_, &c, 1, 0);
    if (n == 0) return true;
    return n < 0 && errno == ECONNRESET;
  }

 private:
  bool fill() {
    char tmp[4096];
    auto n = ::recv(fd_, tmp, sizeof tmp, 0);
    if (n <= 0) return false;
    buf_.append(tmp, static_cast<std::size_t>(n));
    return true;
  }

  int fd_ = -1;
  bool connected_ = false;
  std::string buf_;
};

std::string get(std::string_view path, std::string_view method = "GET") {
  return std::string(method) + " " + std::string(path) + " HTTP/1.1\r\nHost: admin\r\n\r\n";
}

// PROXY v2: signature, version/command, family, 16-bit length, then the payload.
std::string v2_header(std::uint8_t ver_cmd, std::uint8_t family, std::string payload) {
  std::string h("\r\n\r\n\0\r\nQUIT\n", 12);
  h += static_cast<char>(ver_cmd);
  h += static_cast<char>(family);
  h += static_cast<char>((payload.size() >> 8) & 0xff);
  h += static_cast<char>(payload.size() & 0xff);
  return h + payload;
}

class AdminTest : public ::testing::Test {
 protected:
  void start(admin_server::limits lim = {}) {
    server_.emplace(io_, "127.0.0.1", 0, stats_, draining_, lim);
    ASSERT_EQ(server_->bind(), "");
    ASSERT_NE(server_->endpoint().port(), 0);
    server_->start();
    thread_ = std::thread([this] { io_.run(); });
  }

  void TearDown() override {
    if (server_) server_->stop();
    // run() returns only once every connection coroutine has ended: stop() must close them.
    if (thread_.joinable()) thread_.join();
  }

  std::optional<reply> fetch(const std::string& request, bool head = false) {
    client c(server_->endpoint());
    EXPECT_TRUE(c.connected());
    c.send(request);
    return c.read_reply(head);
  }

  metrics::stats stats_{{"0.0.0.0:3128"}};
  std::atomic<bool> draining_{false};
  asio::io_context io_{1};
  std::optional<admin_server> server_;
  std::thread thread_;
};

TEST_F(AdminTest, MetricsServesTheExpositionFormat) {
  start();
  stats_.accept_errors.Increment(3);
  stats_.request_done(metrics::request_kind::connect, metrics::request_outcome::ok);
  auto r = fetch(get("/metrics"));
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(r->headers["content-type"], "text/plain; version=0.0.4; charset=utf-8");
  EXPECT_NE(r->body.find("# TYPE egressd_requests_total counter\n"), std::string::npos);
  EXPECT_NE(r->body.find("\negressd_accept_errors_total 3\n"), std::string::npos);
  EXPECT_NE(r->body.find("egressd_requests_total{kind=\"connect\",outcome=\"ok\"} 1\n"),
            std::string::npos)
      << r->body.substr(0, 2000);
  EXPECT_NE(r->body.find("\nprocess_open_fds "), std::string::npos);

  // Counters move between scrapes; a query string changes nothing.
  stats_.accept_errors.Increment();
  r = fetch(get("/metrics?x=1"));
  ASSERT_TRUE(r);
  EXPECT_NE(r->body.find("\negressd_accept_errors_total 4\n"), std::string::npos);
}

TEST_F(AdminTest, HealthzIsOkAndReadyzFollowsTheDrainFlag) {
  start();
  auto h = fetch(get("/healthz"));
  ASSERT_TRUE(h);
  EXPECT_EQ(h->status, 200);
  EXPECT_EQ(h->body, "ok\n");

  auto ready = fetch(get("/readyz"));
  ASSERT_TRUE(ready);
  EXPECT_EQ(ready->status, 200);
  EXPECT_EQ(ready->body, "ready\n");

  draining_ = true;
  auto drain = fetch(get("/readyz"));
  ASSERT_TRUE(drain);
  EXPECT_EQ(drain->status, 503);
  EXPECT_EQ(drain->body, "draining\n");
  // Liveness is not readiness: the process still runs.
  h = fetch(get("/healthz"));
  ASSERT_TRUE(h);
  EXPECT_EQ(h->status, 200);
}

TEST_F(AdminTest, UnknownPathIs404AndOtherMethodsAre405) {
  start();
  for (const char* path : {"/", "/metricsx", "/healthz/", "/readyz/x", "/Metrics"}) {
    auto r = fetch(get(path));
    ASSERT_TRUE(r) << path;
    EXPECT_EQ(r->status, 404) << path;
  }
  for (const char* method : {"POST", "PUT", "DELETE", "OPTIONS", "PATCH"}) {
    auto r = fetch(std::string(method) +
                   " /metrics HTTP/1.1\r\nHost: admin\r\nContent-Length: 0\r\n\r\n");
    ASSERT_TRUE(r) << method;
    EXPECT_EQ(r->status, 405) << method;
    EXPECT_EQ(r->headers["allow"], "GET, HEAD") << method;
  }
}

TEST_F(AdminTest, HeadSendsHeadersWithoutBody) {
  start();
  client c(server_->endpoint());
  c.send(get("/healthz", "HEAD"));
  auto r = c.read_reply(/*head=*/true);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(r->headers["content-length"], "3");
  EXPECT_EQ(r->body, "");
  // Had a body followed, it would be read as the next response and fail to parse.
  c.send(get("/readyz"));
  auto next = c.read_reply();
  ASSERT_TRUE(next);
  EXPECT_EQ(next->body, "ready\n");
}

TEST_F(AdminTest, KeepAliveServesSeveralRequestsIncludingPipelined) {
  start();
  client c(server_->endpoint());
  ASSERT_TRUE(c.connected());
  c.send(get("/healthz"));
  auto a = c.read_reply();
  ASSERT_TRUE(a);
  EXPECT_EQ(a->body, "ok\n");
  c.send(get("/readyz") + get("/nope") + get("/healthz"));
  auto b = c.read_reply();
  auto d = c.read_reply();
  auto e = c.read_reply();
  ASSERT_TRUE(b && d && e);
  EXPECT_EQ(b->status, 200);
  EXPECT_EQ(d->status, 404);
  EXPECT_EQ(e->status, 200);
  // Connection: close is honoured.
  c.send("GET /healthz HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n");
  auto f = c.read_reply();
  ASSERT_TRUE(f);
  EXPECT_EQ(f->status, 200);
  EXPECT_TRUE(c.closed_by_peer());
}

TEST_F(AdminTest, Http10ClosesAfterTheResponse) {
  start();
  client c(server_->endpoint());
  c.send("GET /healthz HTTP/1.0\r\n\r\n");
  auto r = c.read_reply();
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  EXPECT_TRUE(c.closed_by_peer());
}

TEST_F(AdminTest, ProxyV2LocalHeaderBeforeTheRequestIsSkipped) {
  start();
  // An NLB health check: v2 LOCAL, AF_UNSPEC, 4 bytes of padding.
  auto r = fetch(v2_header(0x20, 0x00, std::string(4, '\0')) + get("/readyz"));
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(r->body, "ready\n");

  // LOCAL announcing TCP4 with an empty-looking block, as NLBs do.
  r = fetch(v2_header(0x20, 0x11, std::string(12, '\0')) + get("/healthz"));
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
}

TEST_F(AdminTest, ProxyV2ProxyHeaderIsSkippedToo) {
  start();
  // PROXY TCP4 192.0.2.1:40000 -> 192.0.2.2:9090
  std::string block = {'\xc0', '\x00', '\x02', '\x01', '\xc0', '\x00',
                       '\x02', '\x02', '\x9c', '\x40', '\x23', '\x82'};
  auto r = fetch(v2_header(0x21, 0x11, block) + get("/healthz"));
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
}

TEST_F(AdminTest, ProxyHeaderArrivingByteByByteIsSkipped) {
  start();
  client c(server_->endpoint());
  std::string header = v2_header(0x20, 0x00, std::string(4, '\0'));
  for (char ch : header) {
    c.send(std::string_view(&ch, 1));
    std::this_thread::sleep_for(1ms);
  }
  c.send(get("/healthz"));
  auto r = c.read_reply();
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  // The header is only allowed first: the next request on the connection is plain HTTP.
  c.send(get("/readyz"));
  r = c.read_reply();
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
}

TEST_F(AdminTest, ProxyV1HeaderBeforeTheRequestIsSkipped) {
  start();
  auto r = fetch("PROXY TCP4 192.0.2.1 192.0.2.2 40000 9090\r\n" + get("/healthz"));
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(r->body, "ok\n");

  r = fetch("PROXY UNKNOWN\r\n" + get("/readyz"));
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
}

TEST_F(AdminTest, MalformedProxyHeaderClosesWithoutAnswer) {
  start();
  {
    // Garbage after a v2 signature: version nibble 9.
    client c(server_->endpoint());
    c.send(std::string("\r\n\r\n\0\r\nQUIT\n", 12) + "\x99\x11garbage" + get("/healthz"));
    EXPECT_TRUE(c.closed_by_peer());
  }
  {
    // "PROXY " starts a v1 header, so a request with the PROXY method is a bad header.
    client c(server_->endpoint());
    c.send("PROXY / HTTP/1.1\r\nHost: admin\r\n\r\n");
    EXPECT_TRUE(c.closed_by_peer());
  }
  {
    // A v1 header with a bad address.
    client c(server_->endpoint());
    c.send("PROXY TCP4 192.0.2.300 192.0.2.2 40000 9090\r\n" + get("/healthz"));
    EXPECT_TRUE(c.closed_by_peer());
  }
  // The listener is still fine.
  auto r = fetch(get("/healthz"));
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
}

TEST_F(AdminTest, MalformedOrOversizedRequestGets400AndClose) {
  start();
  {
    client c(server_->endpoint());
    c.send("GET /healthz HTTP/1.1\r\nHost admin\r\n\r\n");  // no colon
    auto r = c.read_reply();
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 400);
    EXPECT_TRUE(c.closed_by_peer());
  }
  {
    client c(server_->endpoint());
    c.send("GET /healthz HTTP/1.1\r\nHost: admin\r\nX-Big: " + std::string(16 * 1024, 'a') +
           "\r\n\r\n");
    auto r = c.read_reply();
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 400);
    EXPECT_TRUE(c.closed_by_peer());
  }
  {
    client c(server_->endpoint());
    c.send("GET /healthz HTTP/1.1\r\nHost: admin\r\nContent-Length: 4096\r\n\r\n" +
           std::string(4096, 'b'));
    auto r = c.read_reply();
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 400);
  }
}

TEST_F(AdminTest, SilentConnectionIsClosedAtTheHeaderDeadline) {
  admin_server::limits lim;
  lim.header_timeout = 200ms;
  start(lim);
  client silent(server_->endpoint());
  EXPECT_TRUE(silent.closed_by_peer());  // well before the client's own 5 s receive timeout
  client partial(server_->endpoint());
  partial.send("GET /healthz HTTP/1.1\r\n");
  EXPECT_TRUE(partial.closed_by_peer());
  client partial_proxy(server_->endpoint());
  partial_proxy.send("PROXY TCP4 192.0.2.1");
  EXPECT_TRUE(partial_proxy.closed_by_peer());
}

TEST_F(AdminTest, IdleKeepAliveConnectionIsClosed) {
  admin_server::limits lim;
  lim.keepalive_timeout = 200ms;
  start(lim);
  client c(server_->endpoint());
  c.send(get("/healthz"));
  ASSERT_TRUE(c.read_reply());
  EXPECT_TRUE(c.closed_by_peer());
}

TEST_F(AdminTest, ConnectionsBeyondTheCapAreClosed) {
  admin_server::limits lim;
  lim.max_connections = 1;
  start(lim);
  client first(server_->endpoint());
  first.send(get("/healthz"));
  ASSERT_TRUE(first.read_reply());  // now certainly registered, and kept alive
  client second(server_->endpoint());
  EXPECT_TRUE(second.closed_by_peer());
  // The first one still works.
  first.send(get("/readyz"));
  auto r = first.read_reply();
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
}

TEST_F(AdminTest, StopClosesOpenConnectionsAndTheListener) {
  start();
  client c(server_->endpoint());
  c.send(get("/healthz"));
  ASSERT_TRUE(c.read_reply());
  auto ep = server_->endpoint();
  server_->stop();
  EXPECT_TRUE(c.closed_by_peer());
  thread_.join();  // io ran out of work: no coroutine was left behind
  client late(ep);
  EXPECT_FALSE(late.connected());
}

TEST_F(AdminTest, BindReportsAnAddressInUse) {
  start();
  asio::io_context other;
  admin_server second(other, "127.0.0.1", server_->endpoint().port(), stats_, draining_);
  auto err = second.bind();
  EXPECT_NE(err.find("admin listener 127.0.0.1:"), std::string::npos) << err;
  admin_server bad(other, "not-an-ip", 0, stats_, draining_);
  EXPECT_NE(bad.bind(), "");
}

}  // namespace
}  // namespace egressd::admin

#include "egressd/admin/probe.hpp"

namespace egressd::admin {
namespace {

class ProbeTest : public AdminTest {};

TEST_F(ProbeTest, HealthyOnlyOn200) {
  start();
  const std::string base = "http://127.0.0.1:" + std::to_string(server_->endpoint().port());
  auto r = probe(base + "/readyz", std::chrono::seconds(5));
  EXPECT_TRUE(r.healthy) << r.message;
  EXPECT_EQ(r.status, 200);

  draining_ = true;
  r = probe(base + "/readyz", std::chrono::seconds(5));
  EXPECT_FALSE(r.healthy);
  EXPECT_EQ(r.status, 503);
  EXPECT_NE(r.message.find("503"), std::string::npos) << r.message;

  r = probe(base + "/nope", std::chrono::seconds(5));
  EXPECT_FALSE(r.healthy);
  EXPECT_EQ(r.status, 404);
}

TEST(Probe, FailuresAreUnhealthyWithAReason) {
  // A port nobody listens on: take one, close it.
  int port = 0;
  {
    asio::io_context io;
    asio::ip::tcp::acceptor a(io, {asio::ip::make_address("127.0.0.1"), 0});
    port = a.local_endpoint().port();
  }
  auto r = probe("http://127.0.0.1:" + std::to_string(port) + "/readyz", std::chrono::seconds(5));
  EXPECT_FALSE(r.healthy);
  EXPECT_EQ(r.status, 0);
  EXPECT_NE(r.message.find("connect"), std::string::npos) << r.message;

  for (const char* bad : {"https://127.0.0.1:9090/", "http://localhost:9090/", "http://127.0.0.1/",
                          "http://127.0.0.1:99999/", "http://[::1/"}) {
    r = probe(bad, std::chrono::seconds(1));
    EXPECT_FALSE(r.healthy) << bad;
    EXPECT_NE(r.message.find("bad URL"), std::string::npos) << bad << ": " << r.message;
  }

  // A server that accepts and never answers: the timeout ends the probe.
  asio::io_context io;
  asio::ip::tcp::acceptor silent(io, {asio::ip::make_address("::1"), 0});
  r = probe("http://[::1]:" + std::to_string(silent.local_endpoint().port()) + "/readyz",
            std::chrono::milliseconds(300));
  EXPECT_FALSE(r.healthy);
  EXPECT_NE(r.message.find("timed out"), std::string::npos) << r.message;
}

}  // namespace
}  // namespace egressd::admin

#include "egressd/admin/status_page.hpp"

namespace egressd::admin {
namespace {

TEST(StatusPage, RendersFactsConnectionsAndCountersEscaped) {
  status_facts f;
  f.version = "1.2.3";
  f.uptime = std::chrono::seconds(3725);
  f.config_source = "/etc/egressd/egressd.yaml";
  f.config_sha256 = sha256_hex("abc");
  f.last_reload = "never";
  f.listeners = {"0.0.0.0:3128"};
  f.admin = "127.0.0.1:9090";
  std::vector<proxy::connection_status> conns(3);
  conns[0] = {7,        "10.0.0.5:40000",          "CONNECT", "old.example:443",
              "tunnel", std::chrono::seconds(120), 10,        20};
  conns[1] = {9,       "10.0.0.6:40001",        "GET", "http://x/<script>alert(1)</script>",
              "relay", std::chrono::seconds(5), 0,     0};
  conns[2] = {11, "10.0.0.7:40002", "", "", "idle", std::chrono::seconds(1), 0, 0};
  metrics::stats stats({"0.0.0.0:3128"});
  stats.request_done(metrics::request_kind::connect, metrics::request_outcome::ok);
  const auto html = render_status(f, conns, stats.collect());

  EXPECT_EQ(f.config_sha256, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_NE(html.find("<h1>egressd 1.2.3</h1>"), std::string::npos);
  EXPECT_NE(html.find("1h02m05s"), std::string::npos) << "uptime";
  EXPECT_NE(html.find("ba7816bf"), std::string::npos);
  EXPECT_NE(html.find("3 open, 1 tunnels"), std::string::npos);
  // Given order (oldest first) kept; hostile bytes escaped, never markup.
  EXPECT_LT(html.find("old.example:443"), html.find("http://x/"));
  EXPECT_EQ(html.find("<script>"), std::string::npos);
  EXPECT_NE(html.find("&lt;script&gt;alert(1)&lt;/script&gt;"), std::string::npos);
  // Counters as in /metrics.
  EXPECT_NE(html.find("<td>egressd_requests_total</td><td>kind=connect, outcome=ok</td>"
                      "<td class=\"n\">1</td>"),
            std::string::npos);
  EXPECT_EQ(html.find("<script"), std::string::npos) << "no JavaScript";

  // Row cap.
  const auto capped = render_status(f, conns, {}, 1);
  EXPECT_NE(capped.find("2 more connections not shown"), std::string::npos);
  EXPECT_EQ(capped.find("10.0.0.7"), std::string::npos);
}

TEST_F(AdminTest, StatusPathServesThePage) {
  server_.emplace(io_, "127.0.0.1", 0, stats_, draining_, admin_server::limits{});
  server_->set_status_page([] { return std::string("<html>status</html>"); });
  ASSERT_EQ(server_->bind(), "");
  server_->start();
  thread_ = std::thread([this] { io_.run(); });
  auto r = fetch(get("/status"));
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(r->headers["content-type"], "text/html; charset=utf-8");
  EXPECT_EQ(r->body, "<html>status</html>");
}

}  // namespace
}  // namespace egressd::admin
