#pragma once
// One client connection, from accept to close, on one worker thread (no locks). Phases:
// read head -> parse -> decide (gates, rules) -> resolve -> check every address -> connect to a
// checked address -> relay (tunnel, or request/response streaming) -> log. Every failure is a
// proxy_error, turned into a response in one place (respond_error).
#include <array>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/container/small_vector.hpp>
#include <chrono>
#include <cstring>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "egressd/core/error.hpp"
#include "egressd/http/message.hpp"
#include "egressd/proxy/access_log.hpp"
#include "egressd/proxy/runtime.hpp"
#include "egressd/proxy/status.hpp"
#include "egressd/relay/pump_state.hpp"
#include "egressd/relay/tunnel_relay.hpp"

namespace egressd::net {
class tls_stream;
}

namespace egressd::proxy {

// A contiguous byte buffer with a read and a write position; grows on demand and compacts
// before growing, so pipelined bytes survive across requests.
class byte_buffer {
 public:
  std::string_view view() const noexcept { return {data_.data() + begin_, end_ - begin_}; }
  std::size_t size() const noexcept { return end_ - begin_; }
  bool empty() const noexcept { return begin_ == end_; }
  void consume(std::size_t n) noexcept {
    begin_ += n;
    if (begin_ == end_) begin_ = end_ = 0;
  }
  std::span<char> prepare(std::size_t want);
  void commit(std::size_t n) noexcept { end_ += n; }
  void release() noexcept;  // frees memory when empty (idle keep-alive connections)

 private:
  std::vector<char> data_;
  std::size_t begin_ = 0;
  std::size_t end_ = 0;
};

class session : public std::enable_shared_from_this<session> {
 public:
  // peer: the client's address as accept() returned it. listener: index into the config's
  // listeners (its PROXY protocol settings).
  session(boost::asio::ip::tcp::socket client, const boost::asio::ip::tcp::endpoint& peer,
          worker_context& ctx, std::size_t listener);
  ~session();
  session(const session&) = delete;
  session& operator=(const session&) = delete;

  // Runs the connection to its end; self keeps the session alive meanwhile.
  static boost::asio::awaitable<void> run(std::shared_ptr<session> self);

  // Drain: closes the connection if it is between requests; otherwise it ends after the
  // current request (responses then carry Connection: close).
  void close_if_idle();

  // For the status page; called on the session's own worker thread.
  connection_status status() const;
  // Adds what the request in progress moved since the last call to egressd_bytes_total, so that
  // a long tunnel or download shows in the metric while it runs, not only when it ends. Called by
  // the worker's once-a-second sweep, on the session's thread.
  void count_live_bytes() noexcept;

 private:
  enum class phase : std::uint8_t {
    idle,             // waiting for the first byte of a request (keep-alive idle)
    header,           // reading a request head (header deadline)
    dns,              // resolving
    connect,          // connecting
    relay,            // streaming a request/response; idle = no progress
    response_header,  // request sent, waiting for the response head
    tunnel,           // CONNECT tunnel; idle = tunnel idle
    closing,          // writing a final response / lingering close
    done,
  };
  using clock = std::chrono::steady_clock;
  using io_result = std::tuple<boost::system::error_code, std::size_t>;

  // The connection's one long-lived coroutine (run() enters it directly); self keeps the session
  // alive, and on the way out the sockets are closed unless a tunnel relay took them over.
  boost::asio::awaitable<void> main_loop(std::shared_ptr<session> self);
  boost::asio::awaitable<bool> read_proxy_header();
  // A TLS listener's handshake (after the PROXY header); false when the connection must close.
  boost::asio::awaitable<bool> start_tls();
  // The client side, plain or TLS: every read and write of client payload goes through these.
  boost::asio::awaitable<io_result> client_read(boost::asio::mutable_buffer buf);
  boost::asio::awaitable<io_result> client_write(boost::asio::const_buffer buf);
  boost::asio::awaitable<io_result> client_write(std::span<const boost::asio::const_buffer> bufs);
  boost::asio::awaitable<bool> handle_request(bool first);
  void arm_watchdog();
  boost::asio::awaitable<void> respond_error(proxy_error e, std::string_view detail);
  boost::asio::awaitable<void> lingering_close();
  // Enters the connect phase and, when allow_pool, takes an idle pooled connection to a
  // candidate: true when it did. Otherwise connect_upstream connects a new one.
  bool connect_pooled(const http::request_head& req, bool allow_pool);
  boost::asio::awaitable<bool> connect_upstream(const http::request_head& req);
  const boost::asio::ip::address* egress_for(const acl::rule* rule) const noexcept;
  bool take_pooled(const http::request_head& req, std::size_t i);
  void connected(const http::request_head& req, std::size_t i, clock::time_point start);
  // Bytes the client pipelined after the CONNECT head go to the upstream first, unparsed; false
  // when that failed (the error is set).
  boost::asio::awaitable<bool> tunnel_early_bytes();
  // Starts the relay of an answered CONNECT on a plain listener (callbacks, no coroutine).
  void start_relay();
  void tunnel_done();
  // A tunnel on a TLS listener: two coroutine pumps copying through user space.
  boost::asio::awaitable<void> tls_tunnel();
  boost::asio::awaitable<void> tls_pump_up(relay::pump_state& st);
  boost::asio::awaitable<void> tls_pump_down(relay::pump_state& st);
  void tls_pump_failed(relay::pump_state& st, const boost::system::error_code& ec, bool write_side);
  // Logs and closes a finished tunnel, whichever relay ran it.
  void finish_tunnel(const relay::pump_state& up, const relay::pump_state& down);
  void end();  // closes both sockets and stops the watchdog
  boost::asio::awaitable<bool> forward(const http::request_head& req);
  boost::asio::awaitable<void> upload(const http::request_head& req);
  boost::asio::awaitable<void> download(const http::request_head& req);
  boost::asio::awaitable<io_result> upstream_read();
  std::size_t upstream_read_done(const io_result& r);
  boost::asio::awaitable<bool> write_client(std::string_view data);

  void set_phase(phase p, clock::duration timeout);
  clock::time_point deadline() const noexcept;
  void on_timeout();
  void finish_record();
  void set_error(proxy_error e);
  void count_request();  // metrics for the request just logged
  // Payload bytes of the request in progress so far (client -> upstream, upstream -> client),
  // a running tunnel's relay included.
  std::pair<std::uint64_t, std::uint64_t> bytes_so_far() const noexcept;

  boost::asio::ip::tcp::socket client_;
  boost::asio::ip::tcp::socket upstream_;
  boost::asio::steady_timer timer_;
  worker_context& ctx_;
  std::shared_ptr<const runtime> rt_;

  std::uint64_t id_;
  std::size_t listener_;
  std::string lb_peer_;     // "ip:port" of the load balancer when a PROXY header named the client
  std::string proxy_addr_;  // the client address the PROXY header gave
  std::string vpce_id_;     // AWS VPC endpoint id from the PROXY header
  boost::asio::ip::address client_ip_;
  std::string client_ip_text_;
  std::uint16_t client_port_ = 0;

  byte_buffer in_;          // bytes from the client
  byte_buffer up_;          // bytes from the upstream
  std::string head_;        // the current request head (parsed views point into it)
  http::request_head req_;  // head_ parsed (the current request)
  std::string resp_head_;
  http::response_head resp_;  // resp_head_ parsed
  std::string scratch_;

  phase phase_ = phase::idle;
  clock::time_point phase_deadline_ = clock::time_point::max();
  clock::time_point armed_ = clock::time_point::min();  // what the watchdog's timer waits for
  clock::time_point last_activity_ = clock::now();
  clock::duration idle_timeout_{};
  bool timed_out_ = false;
  phase timed_out_phase_ = phase::idle;
  bool stopped_ = false;

  // Per-request state of the plain-HTTP exchange.
  bool upload_done_ = false;
  bool response_started_ = false;
  bool response_head_received_ = false;
  bool response_done_ = false;
  bool tunnel_pending_ = false;     // handle_request approved a CONNECT: main_loop runs it
  bool linger_ = false;             // an error response went out: main_loop closes lingering
  bool reused_ = false;             // upstream_ came from the pool
  bool stale_ = false;              // a reused upstream closed before answering
  bool upstream_reusable_ = false;  // response complete and the upstream allows reuse
  upstream_key key_;
  bool close_after_ = false;
  proxy_error upload_err_ = proxy_error::none;
  proxy_error download_err_ = proxy_error::none;
  std::string_view err_detail_;
  std::vector<boost::asio::ip::address> addrs_;  // the destination's addresses, before checks
  // The checked addresses: mostly one (an IP literal, a single A record), kept in place.
  boost::container::small_vector<std::pair<boost::asio::ip::address, const acl::rule*>, 2>
      candidates_;

  std::optional<relay::tunnel_relay> relay_;  // set once a tunnel's relay has started
  std::unique_ptr<net::tls_stream> tls_;      // set on a TLS listener, after the PROXY header
  std::string identity_;  // the verified client certificate's identities, ", "-joined
  std::unique_ptr<std::array<relay::pump_state, 2>> tls_pumps_;  // a running TLS tunnel

  access_record rec_;
  // What count_live_bytes already added for the request in progress (on: one is in progress);
  // count_request adds the rest.
  struct {
    std::uint64_t in = 0, out = 0;
    bool on = false;
  } live_;
  // Plain-HTTP bodies being spliced ([0] request, [1] response; both may run at once): their
  // bytes reach rec_ when the splice returns; until then bytes_so_far reads them here.
  std::array<const relay::pump_state*, 2> body_splice_{};
  proxy_error err_ = proxy_error::none;  // what rec_.error names
  clock::time_point req_start_;
  clock::time_point accepted_ = clock::now();
};

}  // namespace egressd::proxy
