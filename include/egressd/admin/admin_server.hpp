#pragma once
// The admin listener (SPEC section 6): GET /metrics (Prometheus text format), /healthz and
// /readyz, served with Boost.Beast on an io_context the caller runs (typically its own thread,
// so a busy proxy worker never delays a health check or a scrape).
//
//   /metrics  200, stats.serialize(), "text/plain; version=0.0.4; charset=utf-8"
//   /healthz  200 "ok" while the process runs
//   /readyz   200 "ready", or 503 "draining" once the draining flag is set
//   other     404; a method other than GET or HEAD gets 405 with "Allow: GET, HEAD"
//
// Every connection may start with a PROXY protocol v1 or v2 header, which is skipped: an AWS
// NLB with PROXY protocol v2 enabled on the target group sends one (a LOCAL header) on its
// health-check connections too, and the admin endpoints do not care who the client is. Bytes
// that cannot start a PROXY header are the HTTP request; a malformed header closes the
// connection.
//
// Limits: the PROXY header and each request header must arrive within limits.header_timeout
// after the connection opens or the previous response was sent (the keep-alive wait before the
// first byte of a next request is limits.keepalive_timeout); headers are capped at 8 KiB and
// bodies at 1 KiB; at most limits.max_connections connections at once, more are closed on
// accept. A malformed request gets 400 and the connection closes.
//
// TLS (set_tls): every connection speaks TLS only, with egressd's policy from net::tls_context
// (TLS 1.2+, AEAD ciphers, no renegotiation; with a client CA, a client without a certificate
// that chains to it is refused in the handshake). The PROXY header, when present, comes before
// the ClientHello, as on the proxy listeners; bytes read past it are fed to the handshake. The
// header deadline covers the PROXY header, the handshake and the first request header together.
// A failed handshake closes that connection only and is logged (info, at most one line a second
// with a count of those held back). A new context (reload) applies to connections accepted
// afterwards; open ones keep theirs.
//
// Health role (set_role(role::health)): the same server answering only /healthz and /readyz
// (every other path 404), the plain-HTTP port beside a TLS admin listener for a load balancer
// health check that cannot present a client certificate.
#include <atomic>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/strand.hpp>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_set>

#include "egressd/core/log_limiter.hpp"

namespace egressd::metrics {
class stats;
}  // namespace egressd::metrics

namespace egressd::net {
class tls_context;
}  // namespace egressd::net

namespace egressd::admin {

class admin_server {
 public:
  struct limits {
    std::chrono::milliseconds header_timeout{std::chrono::seconds(10)};
    std::chrono::milliseconds keepalive_timeout{std::chrono::seconds(60)};
    std::size_t max_connections = 64;
  };

  enum class role : std::uint8_t {
    admin,   // every endpoint; logs "listening on HOST:PORT (admin)"
    health,  // /healthz and /readyz only; logs "listening on HOST:PORT (admin health)"
  };

  // host is an IP literal ("127.0.0.1", "::"); port 0 picks a free port (see endpoint()).
  // stats and draining must outlive the server; draining is only read.
  admin_server(boost::asio::io_context& io, std::string host, std::uint16_t port,
               metrics::stats& stats, std::atomic<bool>& draining);
  admin_server(boost::asio::io_context& io, std::string host, std::uint16_t port,
               metrics::stats& stats, std::atomic<bool>& draining, limits lim);
  // Lifetime: the connections' coroutines run on io and refer to this object. Call stop() and
  // let io run out of work (or destroy io) before destroying the server.
  ~admin_server();
  admin_server(const admin_server&) = delete;
  admin_server& operator=(const admin_server&) = delete;

  // Opens, binds and listens; logs "listening on HOST:PORT (admin)". Returns an error message
  // ("admin listener 127.0.0.1:9090: Address already in use"), empty on success.
  std::string bind();
  // Starts accepting on io (call after a successful bind()).
  void start();
  // Closes the listener and every open admin connection. Thread-safe; returns at once, the
  // connections end on io's thread(s).
  void stop();
  // The bound address, with the real port when the configured port was 0.
  boost::asio::ip::tcp::endpoint endpoint() const { return bound_; }
  // GET /status answers page() as text/html (404 while unset). Called on the admin thread; set
  // before start().
  void set_status_page(std::function<std::string()> page) { status_page_ = std::move(page); }
  // Call before bind().
  void set_role(role r) { role_ = r; }
  // Serve TLS with ctx (nullptr: plain HTTP) on connections accepted from now on; open ones keep
  // the context they started with. Thread-safe (a reload may swap it while connections run).
  void set_tls(std::shared_ptr<const net::tls_context> ctx);
  std::shared_ptr<const net::tls_context> tls() const;
  // "https://HOST:PORT" with TLS, else "http://HOST:PORT": for the status page and logs.
  std::string url() const;

 private:
  boost::asio::awaitable<void> accept_loop();
  boost::asio::awaitable<void> serve(boost::asio::ip::tcp::socket socket);
  // The connection after the accept: PROXY header, TLS handshake (when Stream is the TLS one),
  // then requests until close. Defined and instantiated in admin_server.cpp only.
  template <class Stream>
  boost::asio::awaitable<void> session(Stream& stream);
  void log_handshake_failure(const boost::asio::ip::tcp::endpoint& peer, const std::string& why);

  boost::asio::strand<boost::asio::io_context::executor_type> strand_;
  std::string host_;
  std::uint16_t port_;
  metrics::stats& stats_;
  std::atomic<bool>& draining_;
  limits limits_;
  boost::asio::ip::tcp::acceptor acceptor_;
  boost::asio::ip::tcp::endpoint bound_;
  // Open connections' sockets, so stop() can close them. Touched only on strand_.
  std::unordered_set<boost::asio::ip::tcp::socket*> connections_;
  bool stopped_ = false;  // on strand_
  std::function<std::string()> status_page_;
  role role_ = role::admin;
  mutable std::mutex tls_mutex_;  // guards tls_ only
  std::shared_ptr<const net::tls_context> tls_;
  log_limiter handshake_log_;
};

}  // namespace egressd::admin
