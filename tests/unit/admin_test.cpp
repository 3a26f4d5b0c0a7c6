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

// The health port (role::health) and TLS (set_tls).
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include <cstdio>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <memory>

#include "egressd/net/tls.hpp"
#include "egressd/proxy/runtime.hpp"

namespace egressd::admin {
namespace {

TEST_F(AdminTest, HealthRoleAnswersOnlyHealthAndReadiness) {
  server_.emplace(io_, "127.0.0.1", 0, stats_, draining_, admin_server::limits{});
  server_->set_role(admin_server::role::health);
  server_->set_status_page([] { return std::string("<html>status</html>"); });
  ASSERT_EQ(server_->bind(), "");
  server_->start();
  thread_ = std::thread([this] { io_.run(); });
  EXPECT_EQ(server_->url(), "http://" + server_->endpoint().address().to_string() + ":" +
                                std::to_string(server_->endpoint().port()));
  auto r = fetch(get("/healthz"));
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(r->body, "ok\n");
  r = fetch(get("/readyz"));
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  draining_ = true;
  r = fetch(get("/readyz?verbose=1"));
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 503);
  for (const char* path : {"/metrics", "/status", "/", "/metrics?x=1"}) {
    r = fetch(get(path));
    ASSERT_TRUE(r) << path;
    EXPECT_EQ(r->status, 404) << path;
    EXPECT_EQ(r->body, "not found\n") << path;
  }
  r = fetch(get("/metrics", "POST"));
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 404);  // nothing but health here, whatever the method
  r = fetch(get("/healthz", "POST"));
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 405);
}

// A self-signed EC certificate for CN=name, written as PEM files in a temp dir.
struct test_cert {
  std::filesystem::path dir;
  config::tls_settings files;

  explicit test_cert(const std::string& name) {
    char tmpl[] = "/tmp/egressd-admin-test-XXXXXX";
    dir = ::mkdtemp(tmpl);
    files.cert_file = (dir / "cert.pem").string();
    files.key_file = (dir / "key.pem").string();
    EVP_PKEY* key = EVP_EC_gen("P-256");
    X509* x = X509_new();
    X509_set_version(x, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
    X509_gmtime_adj(X509_getm_notBefore(x), -60);
    X509_gmtime_adj(X509_getm_notAfter(x), 3600);
    X509_set_pubkey(x, key);
    X509_NAME* subject = X509_get_subject_name(x);
    X509_NAME_add_entry_by_txt(subject, "CN", MBSTRING_ASC,
                               reinterpret_cast<const unsigned char*>(name.c_str()), -1, -1, 0);
    X509_set_issuer_name(x, subject);
    X509_sign(x, key, EVP_sha256());
    FILE* f = std::fopen(files.cert_file.c_str(), "w");
    PEM_write_X509(f, x);
    std::fclose(f);
    f = std::fopen(files.key_file.c_str(), "w");
    PEM_write_PrivateKey(f, key, nullptr, nullptr, 0, nullptr, nullptr);
    std::fclose(f);
    X509_free(x);
    EVP_PKEY_free(key);
  }
  ~test_cert() { std::filesystem::remove_all(dir); }

  std::shared_ptr<const net::tls_context> load() const {
    std::string err;
    auto ctx = net::tls_context::load(files, &err);
    EXPECT_TRUE(ctx) << err;
    return ctx;
  }
};

// A blocking TLS client over a plain socket (the receive timeout bounds every read), with
// OpenSSL on memory BIOs so that prefix (a PROXY header) leaves in the same segment as the
// ClientHello.
struct tls_client {
  int fd = -1;
  SSL_CTX* ctx = SSL_CTX_new(TLS_client_method());
  SSL* ssl = nullptr;
  BIO* in = nullptr;   // socket -> OpenSSL
  BIO* out = nullptr;  // OpenSSL -> socket
  bool handshake_ok = false;

  explicit tls_client(const asio::ip::tcp::endpoint& ep, const std::string& prefix = {}) {
    fd = ::socket(AF_INET, SOCK_STREAM, 0);
    timeval tv{5, 0};
    ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    sockaddr_in sa{};
    sa.sin_family = AF_INET;
    sa.sin_port = htons(ep.port());
    sa.sin_addr.s_addr = htonl(ep.address().to_v4().to_uint());
    if (::connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0) return;
    ssl = SSL_new(ctx);
    in = BIO_new(BIO_s_mem());
    out = BIO_new(BIO_s_mem());
    SSL_set_bio(ssl, in, out);
    std::string pending = prefix;
    for (;;) {
      const int r = SSL_connect(ssl);
      flush(std::move(pending));
      pending.clear();
      if (r == 1) {
        handshake_ok = true;
        break;
      }
      if (SSL_get_error(ssl, r) != SSL_ERROR_WANT_READ || !fill()) break;
    }
  }
  ~tls_client() {
    if (ssl != nullptr) SSL_free(ssl);  // frees the BIOs
    SSL_CTX_free(ctx);
    if (fd >= 0) ::close(fd);
  }
  tls_client(const tls_client&) = delete;
  tls_client& operator=(const tls_client&) = delete;

  // Sends before + whatever OpenSSL wrote.
  void flush(std::string before = {}) {
    char* data = nullptr;
    const long n = BIO_get_mem_data(out, &data);
    before.append(data, static_cast<std::size_t>(n));
    (void)BIO_reset(out);
    if (!before.empty()) ::send(fd, before.data(), before.size(), MSG_NOSIGNAL);
  }
  // Feeds OpenSSL what the socket has; false on EOF, error or the receive timeout.
  bool fill() {
    char buf[16384];
    const auto n = ::recv(fd, buf, sizeof buf, 0);
    if (n <= 0) return false;
    BIO_write(in, buf, static_cast<int>(n));
    return true;
  }
  // Decrypted bytes; empty when the connection ended.
  std::string read() {
    char buf[4096];
    for (;;) {
      const int n = SSL_read(ssl, buf, sizeof buf);
      flush();
      if (n > 0) return std::string(buf, static_cast<std::size_t>(n));
      if (SSL_get_error(ssl, n) != SSL_ERROR_WANT_READ || !fill()) return {};
    }
  }

  std::string peer_cn() const {
    X509* cert = SSL_get0_peer_certificate(ssl);
    if (cert == nullptr) return {};
    char buf[256] = {};
    X509_NAME_get_text_by_NID(X509_get_subject_name(cert), NID_commonName, buf, sizeof buf);
    return buf;
  }

  // One request, the status of its response (0 if none came).
  int request(const std::string& req) {
    if (SSL_write(ssl, req.data(), static_cast<int>(req.size())) <= 0) return 0;
    flush();
    std::string got;
    while (got.find("\r\n\r\n") == std::string::npos) {
      auto more = read();
      if (more.empty()) return 0;
      got += more;
    }
    // Read the (short) body too, so that the next request starts clean.
    const auto cl = got.find("Content-Length: ");
    const auto head_end = got.find("\r\n\r\n") + 4;
    const std::size_t len = cl == std::string::npos ? 0 : std::stoul(got.substr(cl + 16));
    while (got.size() < head_end + len) {
      auto more = read();
      if (more.empty()) return 0;
      got += more;
    }
    return std::stoi(got.substr(9, 3));
  }
};

class AdminTlsTest : public AdminTest {
 protected:
  // The admin server counts a failed handshake on its own thread, after the client saw it
  // fail: waits (bounded) for the counter to reach n.
  double admin_failures(metrics::tls_failure reason, double n) {
    auto& c = stats_.admin_tls_handshake_failures(reason);
    for (int i = 0; i < 500 && c.Value() < n; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return c.Value();
  }

  void start_tls(std::shared_ptr<const net::tls_context> ctx) {
    server_.emplace(io_, "127.0.0.1", 0, stats_, draining_, admin_server::limits{});
    server_->set_tls(std::move(ctx));
    ASSERT_EQ(server_->bind(), "");
    server_->start();
    thread_ = std::thread([this] { io_.run(); });
  }
};

TEST_F(AdminTlsTest, ServesOverTlsOnly) {
  test_cert cert("admin-one");
  start_tls(cert.load());
  EXPECT_EQ(server_->url().rfind("https://127.0.0.1:", 0), 0u) << server_->url();
  tls_client c(server_->endpoint());
  ASSERT_TRUE(c.handshake_ok);
  EXPECT_EQ(c.peer_cn(), "admin-one");
  EXPECT_EQ(c.request(get("/healthz")), 200);
  EXPECT_EQ(c.request(get("/metrics")), 200);  // keep-alive over TLS

  // Plain HTTP on the TLS port: no HTTP answer, the connection closes, counted as not_tls.
  client plain(server_->endpoint());
  plain.send(get("/healthz"));
  EXPECT_FALSE(plain.read_reply());
  EXPECT_EQ(admin_failures(metrics::tls_failure::not_tls, 1), 1);
  // The listener still serves TLS afterwards.
  tls_client again(server_->endpoint());
  ASSERT_TRUE(again.handshake_ok);
  EXPECT_EQ(again.request(get("/readyz")), 200);
}

TEST_F(AdminTlsTest, ProxyHeaderInTheSameSegmentAsTheClientHello) {
  test_cert cert("admin-pp");
  start_tls(cert.load());
  tls_client v2(server_->endpoint(), v2_header(0x20, 0x00, ""));
  ASSERT_TRUE(v2.handshake_ok);
  EXPECT_EQ(v2.request(get("/healthz")), 200);
  tls_client v1(server_->endpoint(), "PROXY TCP4 192.0.2.1 192.0.2.2 1234 9090\r\n");
  ASSERT_TRUE(v1.handshake_ok);
  EXPECT_EQ(v1.request(get("/healthz")), 200);
}

TEST_F(AdminTlsTest, NewContextAppliesToNewConnectionsOnly) {
  test_cert one("admin-one");
  test_cert two("admin-two");
  start_tls(one.load());
  tls_client before(server_->endpoint());
  ASSERT_TRUE(before.handshake_ok);
  EXPECT_EQ(before.request(get("/healthz")), 200);
  server_->set_tls(two.load());
  tls_client after(server_->endpoint());
  ASSERT_TRUE(after.handshake_ok);
  EXPECT_EQ(after.peer_cn(), "admin-two");
  EXPECT_EQ(after.request(get("/healthz")), 200);
  EXPECT_EQ(before.peer_cn(), "admin-one");
  EXPECT_EQ(before.request(get("/healthz")), 200);  // the open connection keeps working
}

// One load per config (start, --check-config, reload): load_tls_contexts reads every TLS block
// once, and runtime::build serves exactly those contexts without reading a file again.
TEST(TlsContexts, LoadedOnceAndHandedToTheRuntime) {
  auto proxy_cert = std::make_unique<test_cert>("proxy-one");
  test_cert admin_cert("admin-two");
  auto cfg = config::defaults();
  ASSERT_FALSE(cfg.listeners.empty());
  cfg.listeners.resize(1);
  cfg.listeners[0].tls = proxy_cert->files;
  cfg.listeners.push_back(cfg.listeners[0]);
  cfg.listeners[1].address.port = static_cast<std::uint16_t>(cfg.listeners[0].address.port + 1);
  cfg.listeners[1].tls.reset();
  cfg.admin.tls = admin_cert.files;

  std::vector<std::string> errors;
  auto tls = net::load_tls_contexts(cfg, &errors);
  EXPECT_TRUE(errors.empty()) << errors.front();
  ASSERT_EQ(tls.listeners.size(), 2u);
  ASSERT_TRUE(tls.listeners[0]);
  EXPECT_NE(tls.listeners[0]->subject().find("proxy-one"), std::string::npos);
  EXPECT_FALSE(tls.listeners[1]);
  ASSERT_TRUE(tls.admin);
  EXPECT_NE(tls.admin->subject().find("admin-two"), std::string::npos);

  // The files are gone: build must not need them, and serves the very contexts it was given.
  const auto* given = tls.listeners[0].get();
  proxy_cert.reset();
  auto rt = proxy::runtime::build(cfg, tls.listeners);
  ASSERT_EQ(rt->listener_tls.size(), 2u);
  EXPECT_EQ(rt->listener_tls[0].get(), given);
  EXPECT_FALSE(rt->listener_tls[1]);

  // Contexts that do not match the listeners are a programming error, not a silent fallback.
  EXPECT_THROW(proxy::runtime::build(cfg, {}), std::invalid_argument);
  EXPECT_THROW(proxy::runtime::build(cfg, {nullptr, nullptr}), std::invalid_argument);
  EXPECT_THROW(proxy::runtime::build(cfg, {tls.listeners[0], tls.listeners[0]}),
               std::invalid_argument);
}

TEST(TlsContexts, EveryFailureNamesItsBlock) {
  test_cert one("one");
  test_cert two("two");
  auto cfg = config::defaults();
  ASSERT_FALSE(cfg.listeners.empty());
  cfg.listeners.resize(1);
  cfg.listeners[0].tls = config::tls_settings{one.files.cert_file, two.files.key_file, ""};
  cfg.admin.tls = config::tls_settings{(one.dir / "missing.pem").string(), one.files.key_file, ""};
  std::vector<std::string> errors;
  auto tls = net::load_tls_contexts(cfg, &errors);
  ASSERT_EQ(errors.size(), 2u);
  // OpenSSL refuses a key that does not match the certificate already as it loads the key.
  EXPECT_EQ(
      errors[0].rfind("listeners[0].tls: cannot load the private key " + two.files.key_file, 0), 0u)
      << errors[0];
  EXPECT_EQ(
      errors[1].rfind(
          "admin.tls: cannot load the certificate chain " + (one.dir / "missing.pem").string(), 0),
      0u)
      << errors[1];
  ASSERT_EQ(tls.listeners.size(), 1u);
  EXPECT_FALSE(tls.listeners[0]);
  EXPECT_FALSE(tls.admin);
}

// A CRL issued by the test CA (its key.pem), valid for next_update_in seconds from now.
std::string write_crl(const test_cert& ca, long next_update_in) {
  FILE* f = std::fopen(ca.files.key_file.c_str(), "r");
  EVP_PKEY* key = PEM_read_PrivateKey(f, nullptr, nullptr, nullptr);
  std::fclose(f);
  f = std::fopen(ca.files.cert_file.c_str(), "r");
  X509* cert = PEM_read_X509(f, nullptr, nullptr, nullptr);
  std::fclose(f);
  X509_CRL* crl = X509_CRL_new();
  X509_CRL_set_version(crl, 1);
  X509_CRL_set_issuer_name(crl, X509_get_subject_name(cert));
  ASN1_TIME* t = X509_gmtime_adj(nullptr, -60);
  X509_CRL_set1_lastUpdate(crl, t);
  X509_gmtime_adj(t, next_update_in);
  X509_CRL_set1_nextUpdate(crl, t);
  ASN1_TIME_free(t);
  X509_CRL_sign(crl, key, EVP_sha256());
  const std::string path = (ca.dir / "ca.crl").string();
  f = std::fopen(path.c_str(), "w");
  PEM_write_X509_CRL(f, crl);
  std::fclose(f);
  X509_CRL_free(crl);
  X509_free(cert);
  EVP_PKEY_free(key);
  return path;
}

TEST(TlsContexts, ClientCrlFileIsLoadedOrRefusedWithItsReason) {
  test_cert server_cert("proxy");
  test_cert client_ca("clients");
  auto settings = server_cert.files;
  settings.client_ca_file = client_ca.files.cert_file;
  std::string err;

  // A CRL from the client CA: loaded, with its nextUpdate.
  settings.client_crl_file = write_crl(client_ca, 7200);
  auto ctx = net::tls_context::load(settings, &err);
  ASSERT_TRUE(ctx) << err;
  EXPECT_EQ(ctx->crl_count(), 1);
  EXPECT_NEAR(static_cast<double>(ctx->crl_next_update()),
              static_cast<double>(std::time(nullptr) + 7200), 120.0);
  EXPECT_TRUE(ctx->warnings().empty()) << ctx->warnings().front();

  // Loads, but would refuse every client: each case is a warning for the operator's log.
  settings.client_crl_file = write_crl(client_ca, -30);  // past its nextUpdate
  ctx = net::tls_context::load(settings, &err);
  ASSERT_TRUE(ctx) << err;
  ASSERT_EQ(ctx->warnings().size(), 1u);
  EXPECT_NE(ctx->warnings()[0].find("the CRL for the client CA /CN=clients in " +
                                    settings.client_crl_file + " is past its nextUpdate"),
            std::string::npos)
      << ctx->warnings()[0];
  settings.client_crl_file = write_crl(server_cert, 7200);  // another CA's CRL only
  ctx = net::tls_context::load(settings, &err);
  ASSERT_TRUE(ctx) << err;
  ASSERT_EQ(ctx->warnings().size(), 1u);
  EXPECT_NE(ctx->warnings()[0].find("the client CA /CN=clients has no CRL in"), std::string::npos)
      << ctx->warnings()[0];
  // A rotation: the previous (expired) CRL and the current one in one file. OpenSSL uses the
  // current one, and so do the gauge and the warnings.
  auto slurp = [](const std::string& path) {
    std::ifstream in(path);
    return std::string(std::istreambuf_iterator<char>(in), {});
  };
  const std::string old_crl = slurp(write_crl(client_ca, -30));
  const std::string new_crl = slurp(write_crl(client_ca, 7200));
  settings.client_crl_file = (client_ca.dir / "both.crl").string();
  std::ofstream(settings.client_crl_file) << new_crl << old_crl;
  ctx = net::tls_context::load(settings, &err);
  ASSERT_TRUE(ctx) << err;
  EXPECT_EQ(ctx->crl_count(), 2);
  EXPECT_TRUE(ctx->warnings().empty()) << ctx->warnings().front();
  EXPECT_NEAR(static_cast<double>(ctx->crl_next_update()),
              static_cast<double>(std::time(nullptr) + 7200), 120.0);

  test_cert impostor("clients");  // same name, another key
  settings.client_crl_file = write_crl(impostor, 7200);
  ctx = net::tls_context::load(settings, &err);
  ASSERT_TRUE(ctx) << err;
  ASSERT_EQ(ctx->warnings().size(), 1u);
  EXPECT_NE(ctx->warnings()[0].find("is not signed by it"), std::string::npos)
      << ctx->warnings()[0];

  // No client_crl: nothing loaded.
  settings.client_crl_file.clear();
  ctx = net::tls_context::load(settings, &err);
  ASSERT_TRUE(ctx) << err;
  EXPECT_EQ(ctx->crl_count(), 0);
  EXPECT_EQ(ctx->crl_next_update(), 0);

  // A PEM file without a CRL (a certificate given by mistake).
  settings.client_crl_file = client_ca.files.cert_file;
  err.clear();
  EXPECT_FALSE(net::tls_context::load(settings, &err));
  EXPECT_EQ(
      err.rfind("no CRL in the client CRL file (PEM expected) " + client_ca.files.cert_file, 0), 0u)
      << err;

  // A CRL block that does not decode.
  const std::string bad = (client_ca.dir / "bad.crl").string();
  {
    FILE* f = std::fopen(bad.c_str(), "w");
    std::fputs("-----BEGIN X509 CRL-----\nbm90IGEgQ1JM\n-----END X509 CRL-----\n", f);
    std::fclose(f);
  }
  settings.client_crl_file = bad;
  err.clear();
  EXPECT_FALSE(net::tls_context::load(settings, &err));
  EXPECT_EQ(err.rfind("cannot load the client CRL file " + bad, 0), 0u) << err;
}

TEST_F(AdminTlsTest, ClientWithoutCertificateIsRefusedWhenClientsAreVerified) {
  test_cert server_cert("admin");
  test_cert client_ca("scrapers");
  auto settings = server_cert.files;
  settings.client_ca_file = client_ca.files.cert_file;
  std::string err;
  auto ctx = net::tls_context::load(settings, &err);
  ASSERT_TRUE(ctx) << err;
  start_tls(ctx);
  tls_client c(server_->endpoint());
  // TLS 1.3: the client's side of the handshake may complete before the server checks the
  // (missing) certificate; then the first request gets no answer.
  if (c.handshake_ok) EXPECT_EQ(c.request(get("/healthz")), 0);
  EXPECT_EQ(admin_failures(metrics::tls_failure::no_client_cert, 1), 1);
  EXPECT_EQ(stats_.admin_tls_handshake_failures(metrics::tls_failure::other).Value(), 0);
  // The proxy listeners' family is not touched.
  EXPECT_EQ(stats_.tls_handshake_failures(metrics::tls_failure::no_client_cert).Value(), 0);
}

TEST(Probe, HttpsIsRefusedWithAPointerToTheHealthPort) {
  auto r = probe("https://127.0.0.1:9090/readyz", std::chrono::seconds(1));
  EXPECT_FALSE(r.healthy);
  EXPECT_NE(r.message.find("health_address"), std::string::npos) << r.message;
}

TEST(Probe, UrlFromTheAdminSettings) {
  config::admin_settings a;
  std::string why;
  a.address = {"127.0.0.1", 9090};
  EXPECT_EQ(probe_url(a, &why), "http://127.0.0.1:9090/readyz");
  a.address = {"0.0.0.0", 9091};  // a wildcard is probed on loopback
  EXPECT_EQ(probe_url(a, &why), "http://127.0.0.1:9091/readyz");
  a.address = {"::", 9092};
  EXPECT_EQ(probe_url(a, &why), "http://[::1]:9092/readyz");
  a.address = {"fd00::5", 9093};
  EXPECT_EQ(probe_url(a, &why), "http://[fd00::5]:9093/readyz");
  // A TLS admin listener needs a client certificate the probe does not have: the health port.
  a.tls = config::tls_settings{"cert.pem", "key.pem", ""};
  EXPECT_EQ(probe_url(a, &why), "");
  EXPECT_NE(why.find("admin.health_address"), std::string::npos) << why;
  a.health_address = config::endpoint{"0.0.0.0", 9094};
  EXPECT_EQ(probe_url(a, &why), "http://127.0.0.1:9094/readyz");
  a.tls.reset();  // the health port wins whenever it is set
  EXPECT_EQ(probe_url(a, &why), "http://127.0.0.1:9094/readyz");
}

}  // namespace
}  // namespace egressd::admin
