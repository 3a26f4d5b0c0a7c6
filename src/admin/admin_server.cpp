#include "egressd/admin/admin_server.hpp"

#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <spdlog/spdlog.h>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/dispatch.hpp>
#include <boost/asio/ip/v6_only.hpp>
#include <boost/asio/ssl/error.hpp>
#include <boost/asio/ssl/stream.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core/error.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/stream_traits.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http/error.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/http/write.hpp>
#include <exception>
#include <optional>
#include <span>
#include <string_view>
#include <type_traits>
#include <utility>

#include "egressd/metrics/stats.hpp"
#include "egressd/net/proxy_protocol.hpp"
#include "egressd/net/socket_util.hpp"
#include "egressd/net/tls.hpp"

namespace egressd::admin {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace pp = net::proxy_protocol;
using asio::ip::tcp;

namespace {

using tls_stream = asio::ssl::stream<beast::tcp_stream>;

constexpr auto token = asio::as_tuple(asio::use_awaitable);

// A scrape request is a request line and a few headers; a body has no use here at all.
constexpr std::uint32_t header_limit = 8 * 1024;
constexpr std::uint64_t body_limit = 1024;
// Room for a PROXY v2 header at its largest plus a request header at its largest. Beast's read
// fails with buffer_overflow rather than growing past this.
constexpr std::size_t buffer_limit = pp::v2_fixed_length + pp::v2_max_payload + 2 * header_limit;
// A response is a few KiB (the metrics page maybe a few tens); a client that does not read it
// within this time is gone or hostile.
constexpr std::chrono::seconds write_timeout(10);

using response = http::response<http::string_body>;

response make_response(http::status status, unsigned version, std::string_view content_type,
                       std::string body) {
  response res{status, version};
  res.set(http::field::content_type, content_type);
  // Health and metrics answers describe this instant; no proxy or client may reuse them.
  res.set(http::field::cache_control, "no-store");
  res.body() = std::move(body);
  return res;
}

// The one place a request becomes a response. health_only: the health port, where everything
// but /healthz and /readyz is 404 (metrics and status stay behind the TLS admin listener).
response handle(const http::request<http::string_body>& req, metrics::stats& stats,
                const std::atomic<bool>& draining, const std::function<std::string()>& status,
                bool health_only) {
  constexpr std::string_view text = "text/plain; charset=utf-8";
  const auto method = req.method();
  std::string_view path = req.target();
  path = path.substr(0, path.find('?'));  // scrapers may add parameters; they change nothing

  response res;
  if (health_only && path != "/healthz" && path != "/readyz") {
    res = make_response(http::status::not_found, req.version(), text, "not found\n");
  } else if (method != http::verb::get && method != http::verb::head) {
    res = make_response(http::status::method_not_allowed, req.version(), text,
                        "method not allowed\n");
    res.set(http::field::allow, "GET, HEAD");
  } else if (path == "/metrics") {
    res = make_response(http::status::ok, req.version(), "text/plain; version=0.0.4; charset=utf-8",
                        stats.serialize());
  } else if (path == "/status" && status) {
    res = make_response(http::status::ok, req.version(), "text/html; charset=utf-8", status());
  } else if (path == "/healthz") {
    res = make_response(http::status::ok, req.version(), text, "ok\n");
  } else if (path == "/readyz") {
    if (draining.load(std::memory_order_relaxed)) {
      res = make_response(http::status::service_unavailable, req.version(), text, "draining\n");
    } else {
      res = make_response(http::status::ok, req.version(), text, "ready\n");
    }
  } else {
    res = make_response(http::status::not_found, req.version(), text, "not found\n");
  }
  res.keep_alive(req.keep_alive());
  res.prepare_payload();
  // HEAD: the headers GET would send, Content-Length included, and no body.
  if (method == http::verb::head) res.body().clear();
  return res;
}

// Why a handshake failed, for the log: OpenSSL's reason, with the certificate check's own
// reason when it was the client certificate that failed ("certificate has expired").
std::string handshake_error(const boost::system::error_code& ec, SSL* ssl) {
  if (ec == beast::error::timeout) return "timed out";
  std::string why = ec.message();
  const long v = SSL_get_verify_result(ssl);
  if (v != X509_V_OK) why += std::string(": ") + X509_verify_cert_error_string(v);
  return why;
}

// The reason a failed admin handshake is counted under (the proxy listeners' reasons); nullopt
// for a handshake cut short by stop(), which is no failure of the client's.
std::optional<metrics::tls_failure> handshake_failure(const boost::system::error_code& ec,
                                                      SSL* ssl) {
  using metrics::tls_failure;
  if (ec == asio::error::operation_aborted) return std::nullopt;
  if (ec == beast::error::timeout) return tls_failure::timeout;
  if (ec == asio::error::eof || ec == asio::ssl::error::stream_truncated ||
      ec == asio::error::connection_reset) {
    return tls_failure::client_closed;
  }
  if (ec.category() == asio::error::get_ssl_category()) {
    return net::classify_tls_error(static_cast<unsigned long>(ec.value()), ssl, nullptr);
  }
  return tls_failure::other;
}

// A client that went away without a word (a TCP health check, a port scan) is not worth an
// info line; a refused certificate or plain HTTP on the TLS port is.
bool quiet_failure(const boost::system::error_code& ec) {
  return ec == beast::error::timeout || ec == asio::error::eof ||
         ec == asio::ssl::error::stream_truncated || ec == asio::error::connection_reset ||
         ec == asio::error::operation_aborted;
}

void log_exception(std::exception_ptr e, const char* what) {
  if (!e) return;
  try {
    std::rethrow_exception(e);
  } catch (const std::exception& ex) {
    spdlog::error("admin: {} ended with an exception: {}", what, ex.what());
  }
}

}  // namespace

admin_server::admin_server(asio::io_context& io, std::string host, std::uint16_t port,
                           metrics::stats& stats, std::atomic<bool>& draining)
    : admin_server(io, std::move(host), port, stats, draining, limits{}) {}

admin_server::admin_server(asio::io_context& io, std::string host, std::uint16_t port,
                           metrics::stats& stats, std::atomic<bool>& draining, limits lim)
    : strand_(asio::make_strand(io)),
      host_(std::move(host)),
      port_(port),
      stats_(stats),
      draining_(draining),
      limits_(lim),
      acceptor_(strand_) {}

admin_server::~admin_server() = default;

std::string admin_server::bind() {
  auto fail = [this](const boost::system::error_code& ec) {
    boost::system::error_code ignored;
    acceptor_.close(ignored);
    return "admin listener " + host_ + ":" + std::to_string(port_) + ": " + ec.message();
  };
  boost::system::error_code ec;
  auto addr = asio::ip::make_address(host_, ec);
  if (ec) return fail(ec);
  tcp::endpoint ep(addr, port_);
  acceptor_.open(ep.protocol(), ec);
  if (ec) return fail(ec);
  acceptor_.set_option(asio::socket_base::reuse_address(true), ec);
  if (ec) return fail(ec);
  if (addr.is_v6()) {
    acceptor_.set_option(asio::ip::v6_only(true), ec);
    if (ec) return fail(ec);
  }
  acceptor_.bind(ep, ec);
  if (ec) return fail(ec);
  acceptor_.listen(asio::socket_base::max_listen_connections, ec);
  if (ec) return fail(ec);
  bound_ = acceptor_.local_endpoint(ec);
  if (ec) return fail(ec);
  spdlog::info("listening on {} ({})", net::to_string(bound_),
               role_ == role::health ? "admin health" : "admin");
  return {};
}

void admin_server::start() {
  asio::co_spawn(strand_, accept_loop(),
                 [](std::exception_ptr e) { log_exception(e, "accept loop"); });
}

void admin_server::stop() {
  asio::dispatch(strand_, [this] {
    stopped_ = true;
    boost::system::error_code ec;
    acceptor_.close(ec);
    // Pending reads and writes complete with operation_aborted; each coroutine then ends and
    // unregisters itself. Closing does not run handlers inline, so the set is stable here.
    for (tcp::socket* s : connections_) s->close(ec);
  });
}

asio::awaitable<void> admin_server::accept_loop() {
  asio::steady_timer backoff(strand_);
  while (!stopped_) {
    auto [ec, socket] = co_await acceptor_.async_accept(token);
    if (stopped_ || !acceptor_.is_open() || ec == asio::error::operation_aborted) co_return;
    if (ec) {
      // EMFILE and the like repeat at once if retried at once: pause instead of spinning.
      spdlog::warn("admin: accept failed: {}", ec.message());
      backoff.expires_after(std::chrono::milliseconds(100));
      co_await backoff.async_wait(token);
      continue;
    }
    if (connections_.size() >= limits_.max_connections) {
      // A health checker or scraper opens one or two connections; this many means a leak or
      // abuse, and each open one holds a descriptor the proxy needs.
      boost::system::error_code ignored;
      socket.close(ignored);
      continue;
    }
    asio::co_spawn(strand_, serve(std::move(socket)),
                   [](std::exception_ptr e) { log_exception(e, "connection"); });
  }
}

void admin_server::set_tls(std::shared_ptr<const net::tls_context> ctx) {
  std::lock_guard lock(tls_mutex_);
  tls_ = std::move(ctx);
}

std::shared_ptr<const net::tls_context> admin_server::tls() const {
  std::lock_guard lock(tls_mutex_);
  return tls_;
}

std::string admin_server::url() const {
  return (tls() ? "https://" : "http://") + net::to_string(bound_);
}

void admin_server::log_handshake_failure(const tcp::endpoint& peer, const std::string& why) {
  std::uint64_t held = 0;
  if (!handshake_log_.allow(&held)) return;
  if (held == 0) {
    spdlog::info("admin: TLS handshake with {} failed: {}", net::to_string(peer), why);
  } else {
    spdlog::info("admin: TLS handshake with {} failed: {} ({} more failure(s) not logged)",
                 net::to_string(peer), why, held);
  }
}

asio::awaitable<void> admin_server::serve(tcp::socket socket) {
  // The context is taken once per connection: a reload changes it for the next ones only.
  // The SSL object holds its own reference to the SSL_CTX, so the connection outlives a swap.
  if (auto ctx = tls()) {
    SSL* ssl = SSL_new(ctx->native());
    if (ssl == nullptr) {
      spdlog::error("admin: cannot create a TLS session (out of memory?)");
      co_return;
    }
    tls_stream stream(beast::tcp_stream(std::move(socket)), ssl);  // owns ssl from here
    co_await session(stream);
  } else {
    beast::tcp_stream stream(std::move(socket));
    co_await session(stream);
  }
}

template <class Stream>
asio::awaitable<void> admin_server::session(Stream& stream) {
  constexpr bool is_tls = std::is_same_v<Stream, tls_stream>;
  beast::tcp_stream& lowest = beast::get_lowest_layer(stream);
  connections_.insert(&lowest.socket());
  struct unregister {
    admin_server* self;
    tcp::socket* s;
    ~unregister() { self->connections_.erase(s); }
  } guard{this, &lowest.socket()};
  if (stopped_) co_return;

  beast::flat_buffer buffer(buffer_limit);
  // The header deadline runs from the accept and covers the PROXY header, the TLS handshake and
  // the first request header together.
  lowest.expires_after(limits_.header_timeout);

  // Optional PROXY header, read from the TCP layer (it precedes any TLS). parse() never asks
  // for more than the header's own length, so these reads never take bytes of what follows;
  // what they did read when it turns out not to be a PROXY header stays in the buffer for the
  // handshake or for Beast.
  for (;;) {
    auto data = buffer.data();
    auto r = pp::parse(
        std::span<const std::uint8_t>(static_cast<const std::uint8_t*>(data.data()), data.size()));
    if (r.status == pp::status::not_proxy) break;
    if (r.status == pp::status::done) {
      buffer.consume(r.header.header_length);
      break;
    }
    if (r.status == pp::status::error) {
      spdlog::debug("admin: closing a connection with a bad PROXY header: {}",
                    pp::to_string(r.error));
      co_return;
    }
    auto [ec, n] =
        co_await lowest.async_read_some(buffer.prepare(r.bytes_needed - data.size()), token);
    if (ec) co_return;
    buffer.commit(n);
  }

  if constexpr (is_tls) {
    boost::system::error_code ignored;
    const auto peer = lowest.socket().remote_endpoint(ignored);
    // The bytes already read (the start of the ClientHello) go to OpenSSL before the socket.
    auto [hec, used] =
        co_await stream.async_handshake(asio::ssl::stream_base::server, buffer.data(), token);
    if (hec) {
      if (auto why = handshake_failure(hec, stream.native_handle())) {
        stats_.admin_tls_handshake_failure(*why);
      }
      if (quiet_failure(hec)) {
        spdlog::debug("admin: TLS handshake with {} ended: {}", net::to_string(peer),
                      handshake_error(hec, stream.native_handle()));
      } else {
        log_handshake_failure(peer, handshake_error(hec, stream.native_handle()));
      }
      co_return;
    }
    buffer.consume(used);
    // A client cannot send data before the server's handshake flight, so nothing that was read
    // before the handshake can be left; if it were, it could not be decrypted in order.
    if (buffer.size() != 0) co_return;
  }

  for (;;) {
    http::request_parser<http::string_body> parser;
    parser.header_limit(header_limit);
    parser.body_limit(body_limit);
    auto [ec, n] = co_await http::async_read(stream, buffer, parser, token);
    if (ec) {
      // A clean close between requests, a timeout or a reset: nothing to answer. A request
      // Beast could not parse or that broke a limit gets 400, then the connection closes
      // (what follows a bad request cannot be framed).
      if (ec.category() == http::make_error_code(http::error::bad_method).category() &&
          ec != http::error::end_of_stream && ec != http::error::partial_message) {
        auto res = make_response(http::status::bad_request, 11, "text/plain; charset=utf-8",
                                 "bad request\n");
        res.keep_alive(false);
        res.prepare_payload();
        lowest.expires_after(write_timeout);
        co_await http::async_write(stream, res, token);
      }
      break;
    }

    auto res = handle(parser.get(), stats_, draining_, status_page_, role_ == role::health);
    lowest.expires_after(write_timeout);
    auto [wec, wn] = co_await http::async_write(stream, res, token);
    if (wec || !res.keep_alive() || stopped_) break;

    // Keep-alive: wait for the first byte of the next request (unless it came with this one),
    // then give the rest of its header the header deadline.
    if (buffer.size() == 0) {
      lowest.expires_after(limits_.keepalive_timeout);
      auto [rec, rn] = co_await stream.async_read_some(buffer.prepare(header_limit), token);
      if (rec) co_return;
      buffer.commit(rn);
    }
    lowest.expires_after(limits_.header_timeout);
  }
  if constexpr (is_tls) {
    // close_notify, without waiting for the client's: marking the client's as received makes
    // SSL_shutdown complete once ours is written (a client that never answers it would
    // otherwise hold the connection until the deadline).
    SSL* ssl = stream.native_handle();
    SSL_set_shutdown(ssl, SSL_get_shutdown(ssl) | SSL_RECEIVED_SHUTDOWN);
    lowest.expires_after(write_timeout);
    auto [sec] = co_await stream.async_shutdown(token);
    if (sec) co_return;
  }
  boost::system::error_code ignored;
  lowest.socket().shutdown(tcp::socket::shutdown_send, ignored);
}

}  // namespace egressd::admin
