#include "egressd/proxy/session.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>

#include "egressd/acl/cidr.hpp"
#include "egressd/core/log_limiter.hpp"
#include "egressd/http/chunked.hpp"
#include "egressd/http/forward.hpp"
#include "egressd/net/proxy_protocol.hpp"
#include "egressd/net/resolver.hpp"
#include "egressd/net/socket_util.hpp"
#include "egressd/net/tls.hpp"
#include "egressd/relay/splice_pump.hpp"
#include "egressd/relay/tunnel_relay.hpp"

namespace egressd::proxy {

namespace asio = boost::asio;
using asio::ip::tcp;
using namespace asio::experimental::awaitable_operators;
constexpr auto token = asio::as_tuple(asio::use_awaitable);

namespace {

constexpr std::size_t read_chunk = 16 * 1024;
// Heads are read in small steps (the buffer grows as needed, up to the header limits): most are
// well under 1 KiB, and a 16 KiB block per connection, freed once a tunnel starts, would leave
// the heap fragmented under many idle tunnels.
constexpr std::size_t head_chunk = 2 * 1024;
// Bodies of known length at least this large are spliced rather than copied.
constexpr std::uint64_t splice_threshold = 64 * 1024;
constexpr std::string_view connect_established = "HTTP/1.1 200 Connection established\r\n\r\n";

// A pooled connection may have been closed by the server just as we reuse it. Retrying is safe
// only when the request is idempotent and carried no body (nothing of the client's was
// consumed), and only once, on a fresh connection (RFC 9110 section 9.2.2).
bool retryable(const http::request_head& req) {
  bool no_body = req.body == http::framing::none ||
                 (req.body == http::framing::content_length && req.content_length == 0);
  return no_body && (req.method == "GET" || req.method == "HEAD" || req.method == "OPTIONS" ||
                     req.method == "PUT" || req.method == "DELETE");
}

// Client bytes for a diagnostic line: control bytes, DEL and non-ASCII as \xNN, so a target
// cannot put terminal escapes or fake lines into the log.
std::string printable(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (char ch : s) {
    const auto c = static_cast<unsigned char>(ch);
    if (c < 0x20 || c >= 0x7f || c == '\\') {
      static constexpr char hex[] = "0123456789abcdef";
      out += "\\x";
      out.push_back(hex[c >> 4]);
      out.push_back(hex[c & 15]);
    } else {
      out.push_back(ch);
    }
  }
  return out;
}

// Errors that mean this process ran out of something, not that a destination failed.
bool out_of_resources(const boost::system::error_code& ec) {
  const int e = ec.value();
  return ec.category() == boost::system::system_category() &&
         (e == EMFILE || e == ENFILE || e == ENOBUFS || e == ENOMEM);
}

// The user a security service (Zscaler, Netskope, ...) names in X-Authenticated-User, for the
// access log only: it is never forwarded (build_request drops it). Capped, since a client may
// send anything; the log writers escape the bytes.
std::string_view authenticated_user(const std::vector<http::field>& fields) {
  constexpr std::size_t max_length = 256;
  for (const auto& f : fields) {
    if (http::iequals(f.name, "x-authenticated-user") && !f.value.empty()) {
      return f.value.substr(0, max_length);
    }
  }
  return {};
}

// r as a default-constructed record, except that its strings keep their storage (cleared): a
// keep-alive connection then fills the next request's record without allocating again.
void reset_record(access_record& r) {
  access_record fresh;
  auto keep = [](std::string& from, std::string& to) {
    from.clear();
    to.swap(from);
  };
  keep(r.client_addr, fresh.client_addr);
  keep(r.proxy_addr, fresh.proxy_addr);
  keep(r.lb_peer, fresh.lb_peer);
  keep(r.method, fresh.method);
  keep(r.target, fresh.target);
  keep(r.rule, fresh.rule);
  keep(r.content_type, fresh.content_type);
  keep(r.upstream_addr, fresh.upstream_addr);
  keep(r.egress_addr, fresh.egress_addr);
  keep(r.error, fresh.error);
  keep(r.vpce_id, fresh.vpce_id);
  keep(r.user, fresh.user);
  keep(r.would_deny, fresh.would_deny);
  keep(r.client_identity, fresh.client_identity);
  keep(r.relay, fresh.relay);
  r = std::move(fresh);
}
}  // namespace

std::span<char> byte_buffer::prepare(std::size_t want) {
  if (data_.size() - end_ < want) {
    if (begin_ > 0) {
      std::memmove(data_.data(), data_.data() + begin_, end_ - begin_);
      end_ -= begin_;
      begin_ = 0;
    }
    if (data_.size() - end_ < want) data_.resize(end_ + want);
  }
  return {data_.data() + end_, data_.size() - end_};
}

void byte_buffer::release() noexcept {
  if (empty()) {
    std::vector<char>().swap(data_);
    begin_ = end_ = 0;
  }
}

session::session(tcp::socket client, const tcp::endpoint& peer, worker_context& ctx,
                 std::size_t listener)
    : client_(std::move(client)),
      upstream_(client_.get_executor()),
      timer_(client_.get_executor()),
      ctx_(ctx),
      rt_(ctx.rt),
      id_(ctx.shared->next_conn_id.fetch_add(1, std::memory_order_relaxed)),
      listener_(listener) {
  client_ip_ = acl::unmap(peer.address());
  client_ip_text_ = net::to_string(client_ip_);
  client_port_ = peer.port();
  // A new connection must send its first request head within timeouts.header.
  phase_ = phase::header;
  phase_deadline_ = clock::now() + rt_->cfg.timeout.header;
  ctx_.sessions.insert(this);
  ctx_.shared->active.fetch_add(1, std::memory_order_relaxed);
  if (ctx_.shared->stats) ctx_.shared->stats->connection_opened(listener_);
}

session::~session() {
  ctx_.sessions.erase(this);
  ctx_.shared->active.fetch_sub(1, std::memory_order_relaxed);
  if (ctx_.shared->stats) ctx_.shared->stats->connection_closed(listener_);
}

void session::close_if_idle() {
  if (phase_ == phase::idle) {
    boost::system::error_code ec;
    client_.close(ec);
  }
}

void session::set_phase(phase p, clock::duration timeout) {
  phase_ = p;
  auto now = clock::now();
  last_activity_ = now;
  idle_timeout_ = timeout;
  phase_deadline_ = now + timeout;
  // Wake the watchdog only when it sleeps towards a later time than the new deadline; if it
  // wakes early it just re-arms. Most phase changes push the deadline later, so a request costs
  // no timer cancellation at all.
  if (phase_deadline_ < armed_) timer_.cancel();
}

session::clock::time_point session::deadline() const noexcept {
  switch (phase_) {
    case phase::relay:
    case phase::tunnel:
      return last_activity_ + idle_timeout_;
    case phase::done:
      return clock::time_point::max();
    default:
      return phase_deadline_;
  }
}

// Cancels whatever the current phase waits on; the waiting code sees the error and checks
// timed_out_ to tell a timeout from a peer's doing.
connection_status session::status() const {
  static constexpr const char* names[] = {"idle",     "header", "dns",     "connect", "relay",
                                          "response", "tunnel", "closing", "done"};
  connection_status st;
  st.id = id_;
  st.client = rec_.client_addr.empty() ? client_ip_text_ : rec_.client_addr;
  st.client += ":" + std::to_string(rec_.client_port != 0 ? rec_.client_port : client_port_);
  st.state = names[static_cast<std::size_t>(phase_)];
  if (phase_ != phase::idle) {
    st.method = rec_.method;
    st.target = rec_.target;
  }
  st.age = clock::now() - accepted_;
  std::tie(st.bytes_in, st.bytes_out) = bytes_so_far();
  return st;
}

namespace {
// Shows a body splice's progress to bytes_so_far while it runs.
struct splice_progress {
  const relay::pump_state*& slot;
  splice_progress(const relay::pump_state*& s, const relay::pump_state& st) noexcept : slot(s) {
    slot = &st;
  }
  ~splice_progress() { slot = nullptr; }
  splice_progress(const splice_progress&) = delete;
  splice_progress& operator=(const splice_progress&) = delete;
};
}  // namespace

std::pair<std::uint64_t, std::uint64_t> session::bytes_so_far() const noexcept {
  std::pair<std::uint64_t, std::uint64_t> b{rec_.bytes_in, rec_.bytes_out};
  if (!live_.on) return b;  // between requests, or the last one is counted (a tunnel's included)
  if (relay_) {             // a running tunnel counts in its relay until it ends
    b.first += relay_->up().bytes;
    b.second += relay_->down().bytes;
  } else if (tls_pumps_) {
    b.first += (*tls_pumps_)[0].bytes;
    b.second += (*tls_pumps_)[1].bytes;
  } else {
    if (body_splice_[0] != nullptr) b.first += body_splice_[0]->bytes;
    if (body_splice_[1] != nullptr) b.second += body_splice_[1]->bytes;
  }
  return b;
}

void session::count_live_bytes() noexcept {
  auto* m = ctx_.shared->stats;
  if (m == nullptr || !live_.on) return;
  const auto [in, out] = bytes_so_far();
  if (in == live_.in && out == live_.out) return;
  m->bytes(in - live_.in, out - live_.out);
  live_.in = in;
  live_.out = out;
}

void session::on_timeout() {
  timed_out_ = true;
  timed_out_phase_ = phase_;
  boost::system::error_code ec;
  switch (phase_) {
    case phase::idle:
    case phase::header:
      client_.cancel(ec);
      break;
    case phase::dns:
      // The resolver bounds every lookup by timeouts.dns itself and always completes; this
      // deadline is only a backstop, so there is nothing to cancel here.
      break;
    case phase::connect:
    case phase::response_header:
      upstream_.close(ec);
      break;
    case phase::relay:
      upstream_.close(ec);
      // A response cut short must not end like a complete one (a FIN ends a close-delimited
      // body): reset the client connection once any of it was sent.
      if (response_started_) {
        net::abort_close(client_);
      } else {
        client_.close(ec);
      }
      break;
    case phase::tunnel:
    case phase::closing:
      upstream_.close(ec);
      client_.close(ec);
      break;
    case phase::done:
      break;
  }
  phase_deadline_ = clock::time_point::max();
  phase_ = phase_ == phase::relay || phase_ == phase::tunnel ? phase::done : phase_;
}

// The watchdog is a plain timer callback rather than a coroutine: one per connection, so it
// should cost a timer and a small handler, not a coroutine frame and its own awaitable thread.
// The handler holds the session until run() ends and cancels the timer.
void session::arm_watchdog() {
  armed_ = deadline();
  timer_.expires_at(armed_);
  timer_.async_wait([self = shared_from_this()](boost::system::error_code) {
    if (self->stopped_) return;
    if (clock::now() >= self->deadline()) self->on_timeout();
    if (!self->stopped_) self->arm_watchdog();
  });
}

asio::awaitable<void> session::run(std::shared_ptr<session> self) {
  // No TCP_NODELAY here: the client socket inherited it from the listener (open_acceptor).
  // Not a coroutine itself: main_loop's frame is the connection's only one.
  self->arm_watchdog();
  session& s = *self;
  return s.main_loop(std::move(self));
}

void session::end() {
  stopped_ = true;
  phase_ = phase::done;
  timer_.cancel();
  boost::system::error_code ec;
  upstream_.close(ec);
  client_.close(ec);
}

// Reads and checks the PROXY protocol header the listener expects (SPEC section 5). Returns
// false when the connection must close: a malformed or truncated header, a header from a peer
// outside trusted_proxies, or none where one is required. Nothing after a bad header is read.
asio::awaitable<bool> session::read_proxy_header() {
  const auto& cfg = rt_->cfg;
  if (listener_ >= cfg.listeners.size()) co_return true;
  const auto& l = cfg.listeners[listener_];
  if (l.proxy_protocol == config::proxy_protocol_mode::off) co_return true;
  set_phase(phase::header, cfg.timeout.header);
  rec_.conn_id = id_;
  rec_.client_addr = client_ip_text_;
  rec_.client_port = client_port_;
  rec_.start = std::chrono::system_clock::now();
  req_start_ = clock::now();
  net::proxy_protocol::result r;
  for (;;) {
    r = net::proxy_protocol::parse(in_.view());
    if (r.status != net::proxy_protocol::status::need_more) break;
    auto buf = in_.prepare(head_chunk);
    auto [ec, n] = co_await client_.async_read_some(asio::buffer(buf.data(), buf.size()), token);
    if (ec) {
      // A load balancer's TCP health check connects and closes: not worth a log line.
      if (!in_.empty()) {
        set_error(proxy_error::proxy_header_invalid);
        spdlog::info("[C{}] PROXY header: connection ended after {} bytes", id_, in_.size());
        finish_record();
      }
      co_return false;
    }
    in_.commit(n);
  }
  bool trusted = l.trusted_proxies.contains(client_ip_);
  proxy_error bad = proxy_error::none;
  std::string_view why;
  if (r.status == net::proxy_protocol::status::error) {
    bad = proxy_error::proxy_header_invalid;
    why = net::proxy_protocol::to_string(r.error);
  } else if (r.status == net::proxy_protocol::status::not_proxy) {
    if (l.proxy_protocol == config::proxy_protocol_mode::required) {
      bad = proxy_error::proxy_header_missing;
      why = "no PROXY header";
    } else {
      co_return true;  // optional: these bytes are the request itself
    }
  } else if (!trusted) {
    bad = proxy_error::proxy_header_untrusted;
    why = "peer not in trusted_proxies";
  }
  if (bad != proxy_error::none) {
    set_error(bad);
    spdlog::info("[C{}] {}: {} (peer {})", id_, describe(bad).name, why, client_ip_text_);
    finish_record();
    co_return false;
  }
  in_.consume(r.header.header_length);
  const auto& h = r.header;
  if (h.has_addresses()) {
    lb_peer_ = client_ip_text_ + ":" + std::to_string(client_port_);
    client_ip_ = h.source_address;
    client_ip_text_ = net::to_string(client_ip_);
    client_port_ = h.source_port;
    proxy_addr_ = client_ip_text_;
  }
  if (h.vpce_id) vpce_id_ = *h.vpce_id;
  co_return true;
}

// The client side of every exchange: the socket itself, or the TLS stream on it. Plain
// functions returning the operation's awaitable, so a plain connection pays no extra frame.
asio::awaitable<session::io_result> session::client_read(asio::mutable_buffer buf) {
  if (tls_) return tls_->read_some(buf);
  return client_.async_read_some(buf, token);
}

asio::awaitable<session::io_result> session::client_write(asio::const_buffer buf) {
  if (tls_) return tls_->write(buf);
  return asio::async_write(client_, buf, token);
}

asio::awaitable<session::io_result> session::client_write(
    std::span<const asio::const_buffer> bufs) {
  if (tls_) return tls_->write(bufs);
  return asio::async_write(client_, bufs, token);
}

// A TLS listener: the handshake runs under timeouts.tls_handshake, after the PROXY header (whose
// trailing bytes, if any, are the start of the ClientHello). A failure is counted by reason and
// logged (one line a second per reason); it writes no access-log record, as no request came.
asio::awaitable<bool> session::start_tls() {
  const auto& rt = *rt_;
  if (listener_ >= rt.listener_tls.size() || !rt.listener_tls[listener_]) co_return true;
  set_phase(phase::header, rt.cfg.timeout.tls_handshake);
  tls_ = std::make_unique<net::tls_stream>(client_, rt.listener_tls[listener_], in_.view());
  in_.consume(in_.size());
  auto ec = co_await tls_->handshake();
  auto* m = ctx_.shared->stats;
  if (!ec) {
    if (m) m->tls_handshakes.Increment();
    for (const auto& id : tls_->identities()) {
      if (!identity_.empty()) identity_ += ',';
      identity_ += id;
    }
    co_return true;
  }
  const auto why = timed_out_ ? metrics::tls_failure::timeout : tls_->failure();
  if (m) m->tls_handshake_failure(why);
  static std::array<log_limiter, metrics::count_of<metrics::tls_failure>> limiters;
  if (std::uint64_t held = 0; limiters[static_cast<std::size_t>(why)].allow(&held)) {
    spdlog::info("[C{}] TLS handshake from {} failed: {} ({}){}", id_, client_ip_text_,
                 metrics::to_string(why), printable(tls_->failure_detail()),
                 held == 0 ? std::string() : fmt::format(" [{} more since the last report]", held));
  }
  if (why == metrics::tls_failure::not_tls && client_.is_open()) {
    // A client configured with http:// for a TLS listener gets a readable answer, not a reset.
    static constexpr std::string_view answer =
        "HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\nContent-Length: 55\r\n"
        "Connection: close\r\n\r\nThis proxy port speaks TLS: use an https:// proxy URL.\n";
    co_await asio::async_write(client_, asio::buffer(answer), token);
  }
  co_return false;
}

asio::awaitable<void> session::main_loop(std::shared_ptr<session> self) {
  // However main_loop ends: a started tunnel relay holds the session from here on and ends it in
  // tunnel_done(); otherwise the connection is over.
  struct at_exit {
    session& s;
    ~at_exit() {
      if (!s.relay_) s.end();
    }
  } ender{*self};
  {
    // Checked here, so that a plain listener enters neither coroutine (two frames per
    // connection); both functions check the same again.
    const auto& rt = *rt_;
    if (listener_ < rt.cfg.listeners.size() &&
        rt.cfg.listeners[listener_].proxy_protocol != config::proxy_protocol_mode::off &&
        !co_await read_proxy_header())
      co_return;
    if (listener_ < rt.listener_tls.size() && rt.listener_tls[listener_] && !co_await start_tls())
      co_return;
  }
  bool first = true;
  for (;;) {
    // Each request sees the newest config snapshot as a whole. Compare first: copying the
    // shared_ptr is an atomic increment on a count every worker shares.
    if (rt_ != ctx_.rt) rt_ = ctx_.rt;
    bool keep = co_await handle_request(first);
    first = false;
    if (linger_) {  // an error response was sent and logged: close the way it needs
      co_await lingering_close();
      co_return;
    }
    if (tunnel_pending_) {
      // Answer the CONNECT, then relay. Written out here rather than in a coroutine of its own:
      // a frame fewer per tunnel.
      tunnel_pending_ = false;
      set_phase(phase::tunnel, rt_->cfg.timeout.tunnel_idle);
      rec_.status = 200;
      auto [ec, n] = co_await client_write(asio::buffer(connect_established));
      last_activity_ = clock::now();
      rec_.reply_bytes += n;
      if (ec) {
        set_error(proxy_error::client_closed);
        finish_record();
        co_return;
      }
      if (!in_.empty() && !co_await tunnel_early_bytes()) {
        finish_record();
        co_return;
      }
      in_.release();
      if (tls_) {
        co_await tls_tunnel();
      } else {
        start_relay();
      }
      co_return;
    }
    if (!keep || !client_.is_open()) co_return;
    if (ctx_.shared->draining.load(std::memory_order_relaxed) && in_.empty()) co_return;
  }
}

void session::set_error(proxy_error e) {
  err_ = e;
  rec_.error.assign(describe(e).name);
}

// The single mapping from a finished request's error to the metric labels (SPEC section 6).
void session::count_request() {
  const auto counted = live_;  // the bytes count_live_bytes added already
  live_ = {};
  auto* m = ctx_.shared->stats;
  if (m == nullptr) return;
  using namespace metrics;
  auto kind = rec_.method == "CONNECT" ? request_kind::connect : request_kind::http;
  auto outcome = request_outcome::ok;
  switch (err_) {
    case proxy_error::none:
      break;
    case proxy_error::source_denied:
      outcome = request_outcome::denied;
      m->denial(denial_reason::source);
      break;
    case proxy_error::port_denied:
      outcome = request_outcome::denied;
      m->denial(denial_reason::port);
      break;
    case proxy_error::rule_denied:
      outcome = request_outcome::denied;
      m->denial(denial_reason::rule);
      break;
    case proxy_error::destination_denied:
      outcome = request_outcome::denied;
      m->denial(denial_reason::destination);
      break;
    case proxy_error::ip_literal_denied:
      outcome = request_outcome::denied;
      m->denial(denial_reason::ip_literal);
      break;
    case proxy_error::loop_detected:
      outcome = request_outcome::denied;
      m->denial(denial_reason::loop);
      break;
    case proxy_error::method_not_allowed:
      outcome = request_outcome::denied;
      m->denial(denial_reason::method);
      break;
    case proxy_error::header_timeout:
      outcome = request_outcome::timeout;
      m->timeout(timeout_phase::header);
      break;
    case proxy_error::client_timeout:
    case proxy_error::upstream_idle:
      outcome = request_outcome::timeout;
      m->timeout(timeout_phase::idle);
      break;
    case proxy_error::tunnel_idle:
      // A tunnel closed for silence ended as configured: counted as a timeout phase only.
      m->timeout(timeout_phase::tunnel_idle);
      break;
    case proxy_error::dns_timeout:
      outcome = request_outcome::timeout;
      m->timeout(timeout_phase::dns);
      m->upstream_error(upstream_error_kind::timeout);
      break;
    case proxy_error::connect_timeout:
      outcome = request_outcome::timeout;
      m->timeout(timeout_phase::connect);
      m->upstream_error(upstream_error_kind::timeout);
      break;
    case proxy_error::upstream_timeout:
      outcome = request_outcome::timeout;
      m->timeout(timeout_phase::response_header);
      m->upstream_error(upstream_error_kind::timeout);
      break;
    case proxy_error::dns_error:
      outcome = request_outcome::upstream_error;
      m->upstream_error(upstream_error_kind::dns);
      break;
    case proxy_error::connect_refused:
      outcome = request_outcome::upstream_error;
      m->upstream_error(upstream_error_kind::refused);
      break;
    case proxy_error::upstream_bad_response:
      outcome = request_outcome::upstream_error;
      m->upstream_error(upstream_error_kind::bad_response);
      break;
    case proxy_error::upstream_closed:
    case proxy_error::tunnel_reset:
      outcome = request_outcome::upstream_error;
      m->upstream_error(upstream_error_kind::reset);
      break;
    case proxy_error::proxy_header_invalid:
      outcome = request_outcome::client_error;
      m->proxy_protocol_failure(proxy_protocol_error::invalid);
      break;
    case proxy_error::proxy_header_untrusted:
      outcome = request_outcome::denied;
      m->proxy_protocol_failure(proxy_protocol_error::untrusted);
      break;
    case proxy_error::proxy_header_missing:
      outcome = request_outcome::client_error;
      m->proxy_protocol_failure(proxy_protocol_error::missing);
      break;
    case proxy_error::draining:
    case proxy_error::over_limit:
    case proxy_error::internal_error:
      outcome = request_outcome::internal_error;
      break;
    default:  // malformed or over-limit requests, a client that went away
      outcome = request_outcome::client_error;
      break;
  }
  m->request_done(kind, outcome);
  // The final counts include what the relay moved; count_live_bytes added a part already.
  m->bytes(rec_.bytes_in - std::min(counted.in, rec_.bytes_in),
           rec_.bytes_out - std::min(counted.out, rec_.bytes_out));
  if (!identity_.empty() && !rec_.rule.empty()) {
    // Counted by the rule that decided, when it is an identity rule (identities are unbounded).
    for (const auto& r : rt_->cfg.rules) {
      if (r.name != rec_.rule) continue;
      if (!r.client_identities.empty()) m->identity_match(r.name);
      break;
    }
  }
}

void session::finish_record() {
  count_request();
  rec_.duration_ms = std::chrono::duration<double, std::milli>(clock::now() - req_start_).count();
  ctx_.shared->log.write(rec_);
  if (!spdlog::should_log(spdlog::level::debug)) return;
  spdlog::debug("[C{}] {} {} -> {} status={} error={}", id_, printable(rec_.method),
                printable(rec_.target), rec_.upstream_addr.empty() ? "-" : rec_.upstream_addr,
                rec_.status, rec_.error.empty() ? "-" : rec_.error);
}

asio::awaitable<bool> session::write_client(std::string_view data) {
  auto [ec, n] = co_await client_write(asio::buffer(data.data(), data.size()));
  last_activity_ = clock::now();
  rec_.reply_bytes += n;
  co_return !ec;
}

asio::awaitable<void> session::respond_error(proxy_error e, std::string_view detail) {
  const auto& info = describe(e);
  set_error(e);
  if (info.status != 0 && client_.is_open()) {
    rec_.status = info.status;
    rec_.content_type = "text/plain";
    auto resp = http::error_response(e, detail, true, rt_->cfg.hdr.via_name);
    set_phase(phase::closing, rt_->cfg.timeout.header);
    co_await write_client(resp);
  }
  if (info.status >= 500 || info.source == error_source::upstream) {
    // An origin or DNS outage fails every request the same way: one line a second per kind.
    static std::array<log_limiter, 64> limiters;
    static_assert(static_cast<std::size_t>(proxy_error::internal_error) < limiters.size());
    if (std::uint64_t held = 0; limiters[static_cast<std::size_t>(e)].allow(&held)) {
      spdlog::info("[C{}] {} {}: {} ({}){}", id_, printable(rec_.method), printable(rec_.target),
                   info.name, printable(detail),
                   held == 0 ? std::string()
                             : fmt::format(" [{} more {} since the last report]", held, info.name));
    }
  }
  // The lingering close comes after the request is logged and counted (main_loop), so the
  // access log and the metrics do not wait up to 2 s for a client that keeps sending.
  linger_ = true;
}

// Closing right after a response while the client still sends would make the kernel answer with
// a reset that can destroy the response before the client reads it. So: stop sending, then read
// and discard (never parse) for a short while, as nginx's lingering_close does.
asio::awaitable<void> session::lingering_close() {
  boost::system::error_code ec;
  if (!client_.is_open()) co_return;
  set_phase(phase::closing, std::chrono::seconds(2));
  if (tls_) {
    co_await tls_->shutdown_send();  // close_notify, then FIN
  } else {
    client_.shutdown(tcp::socket::shutdown_send, ec);
  }
  std::array<char, 4096> discard;
  std::size_t total = 0;
  while (client_.is_open() && total < 256 * 1024) {
    auto [rec, n] = co_await client_.async_read_some(asio::buffer(discard), token);
    if (rec) break;
    total += n;
  }
  client_.close(ec);
}

asio::awaitable<bool> session::handle_request(bool first) {
  // The head is read under the snapshot the connection has; the request is decided under the
  // newest one (a keep-alive connection may have waited across a reload).
  const config::config* head_cfg = &rt_->cfg;
  reset_record(rec_);
  live_ = {};
  live_.on = true;
  err_ = proxy_error::none;
  rec_.conn_id = id_;
  rec_.client_addr = client_ip_text_;
  rec_.client_port = client_port_;
  rec_.proxy_addr = proxy_addr_;
  rec_.lb_peer = lb_peer_;
  rec_.vpce_id = vpce_id_;
  upload_done_ = response_started_ = response_head_received_ = response_done_ = close_after_ =
      false;
  upstream_reusable_ = stale_ = reused_ = false;
  upload_err_ = download_err_ = proxy_error::none;
  err_detail_ = {};
  timed_out_ = false;
  rec_.start = std::chrono::system_clock::now();
  req_start_ = clock::now();

  // --- read the head -------------------------------------------------------------------------
  http::head_scanner scanner(rt_->limits);
  if (first || !in_.empty()) {
    set_phase(phase::header, head_cfg->timeout.header);
  } else {
    set_phase(phase::idle, head_cfg->timeout.keepalive_idle);
  }
  http::scan_result scan;
  for (;;) {
    scan = scanner.scan(in_.view());
    if (scan.status != http::scan_result::need_more) break;
    if (phase_ == phase::idle && ctx_.shared->draining.load(std::memory_order_relaxed))
      co_return false;
    auto buf = in_.prepare(head_chunk);
    auto [ec, n] = co_await client_read(asio::buffer(buf.data(), buf.size()));
    if (ec) {
      if (in_.empty() && phase_ == phase::idle) {
        if (first) in_.release();
        if (timed_out_ && ctx_.shared->stats)
          ctx_.shared->stats->timeout(metrics::timeout_phase::keepalive);
        co_return false;  // idle keep-alive connection ended: nothing to log
      }
      if (timed_out_ && in_.size() > 0) {
        rec_.start = std::chrono::system_clock::now();
        co_await respond_error(proxy_error::header_timeout, "");
        finish_record();
      } else if (!in_.empty()) {
        set_error(proxy_error::client_closed);
        finish_record();
      }
      co_return false;
    }
    in_.commit(n);
    if (phase_ == phase::idle) {
      // First byte of the next request: the header deadline starts now.
      req_start_ = clock::now();
      rec_.start = std::chrono::system_clock::now();
      set_phase(phase::header, head_cfg->timeout.header);
    }
  }
  if (scan.status == http::scan_result::error) {
    co_await respond_error(scan.err, "malformed request head");
    finish_record();
    co_return false;
  }
  // A CONNECT is parsed where it was read: nothing reads into in_ again before the tunnel starts
  // (and then the parsed request is dropped) or the connection closes, so its views stay valid.
  // Any other request is copied, as its body is read into in_ while the head is in use.
  std::string_view head = in_.view().substr(scan.skipped, scan.head_length);
  if (!head.starts_with("CONNECT ")) {
    head_.assign(head);
    head = head_;
  }
  in_.consume(scan.skipped + scan.head_length);

  // --- parse and decide ------------------------------------------------------------------------
  if (rt_ != ctx_.rt) rt_ = ctx_.rt;  // head_cfg is not used from here on
  const auto& cfg = rt_->cfg;
  // Parsed into the session's own head: its field list and target strings keep their storage
  // from one request to the next.
  http::request_head& req = req_;
  auto perr = http::parse_request(head, rt_->limits, req);
  rec_.method.assign(req.method);
  rec_.target.assign(req.target_raw);
  if (perr) {
    co_await respond_error(perr.err, perr.detail);
    finish_record();
    co_return false;
  }
  rec_.user.assign(authenticated_user(req.fields));
  proxy_error deny = proxy_error::none;
  std::string_view deny_detail;
  if (!cfg.gate.sources.contains(client_ip_)) {
    deny = proxy_error::source_denied;
  } else if (req.method == "TRACE") {
    deny = proxy_error::method_not_allowed;
  } else if (cfg.hdr.via && http::via_has_loop(req.fields, cfg.hdr.via_name)) {
    deny = proxy_error::loop_detected;
    deny_detail = "own Via received";
  } else if (!(req.is_connect ? cfg.gate.connect_ports : cfg.gate.http_ports)
                  .contains(req.tgt.port)) {
    deny = proxy_error::port_denied;
  } else if (cfg.gate.deny_ip_literals &&
             (req.tgt.host_is_ip || acl::is_ip_literal(req.tgt.host))) {
    deny = proxy_error::ip_literal_denied;
  }
  acl::request_facts facts{client_ip_, req.tgt.host, req.tgt.port,
                           req.is_connect ? acl::method_class::connect : acl::method_class::http,
                           vpce_id_};
  if (tls_) {
    facts.identities = tls_->identities();
    rec_.client_identity = identity_;
  }
  if (deny == proxy_error::none) {
    const acl::rule* decided = nullptr;
    if (!rt_->rules.may_allow(facts, &decided)) {
      deny = proxy_error::rule_denied;
      if (decided != nullptr) rec_.rule = decided->name;
    }
  }
  if (deny != proxy_error::none) {
    co_await respond_error(deny, deny_detail);
    finish_record();
    co_return false;
  }

  // --- resolve and check every address (the port gate was checked before any lookup) ---------
  // An IP literal is its only address: checked from a local, no list is built.
  asio::ip::address literal;
  std::span<const asio::ip::address> addrs;
  if (req.tgt.host_is_ip) {
    boost::system::error_code ec;
    literal = acl::unmap(asio::ip::make_address(req.tgt.host, ec));
    addrs = {&literal, 1};
  } else {
    set_phase(phase::dns, cfg.timeout.dns + std::chrono::seconds(1));
    const auto hits_before = ctx_.dns->stats().cache_hits;
    const auto dns_start = clock::now();
    auto res = co_await ctx_.dns->resolve(req.tgt.host);
    if (auto* m = ctx_.shared->stats) {
      // The resolver's own counter tells whether this call was answered from the cache.
      bool hit = ctx_.dns->stats().cache_hits != hits_before;
      m->dns_cache(hit ? metrics::cache_result::hit : metrics::cache_result::miss);
      if (!hit) m->observe_dns(clock::now() - dns_start);
    }
    if (res.err != proxy_error::none) {
      bool to = timed_out_ || res.err == proxy_error::dns_timeout;
      co_await respond_error(to ? proxy_error::dns_timeout : res.err, "");
      spdlog::debug("[C{}] resolve {}: {}", id_, req.tgt.host, res.detail);
      finish_record();
      co_return false;
    }
    addrs_ = std::move(res.addresses);
    addrs = addrs_;
  }
  candidates_.clear();
  bool loop = false, dest_denied = false, rule_denied = false;
  for (const auto& a : addrs) {
    if (ctx_.shared->is_self(a, req.tgt.port)) {
      loop = true;
      continue;
    }
    auto v = rt_->destinations.check(a);
    if (!v.allowed) {
      dest_denied = true;
      spdlog::debug("[C{}] destination {} denied: {}", id_, a.to_string(), v.reason);
      continue;
    }
    auto d = rt_->rules.decide(facts, a);
    if (d.matched) rec_.rule = d.matched->name;
    if (d.reported && rec_.would_deny.empty()) rec_.would_deny = d.reported->name;
    if (!d.allowed) {
      rule_denied = true;
      continue;
    }
    candidates_.emplace_back(a, d.matched);
  }
  if (!rec_.would_deny.empty()) {
    if (auto* m = ctx_.shared->stats) m->report_only_match(rec_.would_deny);
  }
  if (candidates_.empty()) {
    auto e = loop          ? proxy_error::loop_detected
             : dest_denied ? proxy_error::destination_denied
             : rule_denied ? proxy_error::rule_denied
                           : proxy_error::dns_error;
    co_await respond_error(e, loop ? "destination is this proxy" : "");
    finish_record();
    co_return false;
  }
  // An idle pooled connection is taken without entering the connect coroutine.
  bool have_upstream = connect_pooled(req, !req.is_connect);
  if (!have_upstream) have_upstream = co_await connect_upstream(req);
  if (!have_upstream) {
    finish_record();
    co_return false;
  }
  if (req.is_connect) {
    // A tunnel may sit idle for hours: main_loop runs it after this frame (the parsed request,
    // the address lists) is gone, and the parse buffers are given back, so an idle tunnel costs
    // little more than its two sockets.
    decltype(candidates_)().swap(candidates_);
    addrs_ = {};
    req_ = http::request_head{};
    resp_ = http::response_head{};
    std::string().swap(head_);
    std::string().swap(scratch_);
    std::string().swap(resp_head_);
    up_.release();
    tunnel_pending_ = true;
    co_return false;
  }
  bool keep = co_await forward(req);
  finish_record();
  co_return keep;
}

// The egress source address for a connection allowed by rule (nullptr: the kernel's choice).
const asio::ip::address* session::egress_for(const acl::rule* rule) const noexcept {
  if (rule != nullptr && rule->bind) return &*rule->bind;
  if (rt_->cfg.egress_bind) return &*rt_->cfg.egress_bind;
  return nullptr;
}

// upstream_ is connected to candidate i: record it for the pool, the log and the metrics.
void session::connected(const http::request_head& req, std::size_t i, clock::time_point start) {
  const auto& [addr, rule] = candidates_[i];
  const auto* bind = egress_for(rule);
  if (auto* m = ctx_.shared->stats) m->observe_upstream_connect(clock::now() - start);
  net::set_nodelay(upstream_);
  key_ = upstream_key{addr, req.tgt.port, req.tgt.host,
                      bind ? std::optional<asio::ip::address>(*bind) : std::nullopt};
  if (rule != nullptr) {
    rec_.rule = rule->name;
  } else {
    rec_.rule.clear();
  }
  rec_.upstream_addr = net::to_string(tcp::endpoint(addr, req.tgt.port));
  // The egress address is an access-log field only (and travels with a pooled connection into
  // later requests' records): without a log, skip the getsockname(). The log is opened once at
  // startup, so no record can later need an address that was skipped.
  if (ctx_.shared->log.enabled()) {
    boost::system::error_code ec;
    auto local = upstream_.local_endpoint(ec);
    if (!ec) rec_.egress_addr = net::to_string(acl::unmap(local.address()));
  }
}

// Takes an idle pooled connection to candidate i if there is one.
bool session::take_pooled(const http::request_head& req, std::size_t i) {
  const auto& [addr, rule] = candidates_[i];
  const auto* bind = egress_for(rule);
  if (bind != nullptr && bind->is_v4() != addr.is_v4()) return false;
  upstream_key key{addr, req.tgt.port, req.tgt.host,
                   bind ? std::optional<asio::ip::address>(*bind) : std::nullopt};
  // Always checked: a connection with unsolicited bytes waiting (a 408 before an idle close, a
  // body the origin sent after a HEAD/204/304) would answer this request with them. The retry of
  // an idempotent request still covers a close that races with the check.
  auto idle = ctx_.pool.take(key, true);
  if (!idle) return false;
  boost::system::error_code ec;
  upstream_.close(ec);
  upstream_ = std::move(idle->socket);
  key_ = std::move(key);
  reused_ = true;
  if (auto* m = ctx_.shared->stats) m->upstream_pool_reuses.Increment();
  if (rule != nullptr) {
    rec_.rule = rule->name;
  } else {
    rec_.rule.clear();
  }
  rec_.upstream_addr = net::to_string(tcp::endpoint(addr, req.tgt.port));
  rec_.egress_addr = std::move(idle->egress_addr);
  return true;
}

// Connects to exactly the addresses that were checked, within one overall connect deadline; the
// first that accepts wins. The access log names the rule that allowed the address in use.
//
// With several addresses this is Happy Eyeballs (RFC 8305): the address families alternate,
// starting with the resolver's first (section 4); the next attempt starts when one fails or
// after 250 ms without an answer, while the earlier ones keep running (section 5); the first
// connection established wins and the others are closed. A black-holed address (often an IPv6
// path) then costs 250 ms instead of the whole connect timeout.
bool session::connect_pooled(const http::request_head& req, bool allow_pool) {
  set_phase(phase::connect, rt_->cfg.timeout.connect);
  reused_ = false;
  if (allow_pool) {
    for (std::size_t i = 0; i < candidates_.size(); ++i) {
      if (take_pooled(req, i)) return true;
    }
  }
  return false;
}

asio::awaitable<bool> session::connect_upstream(const http::request_head& req) {
  const std::size_t n = candidates_.size();

  if (n == 1) {
    // The common case needs no race: one connect, bounded by the watchdog's deadline.
    const auto& [addr, rule] = candidates_[0];
    const auto* bind = egress_for(rule);
    if (rule != nullptr) {
      rec_.rule = rule->name;
    } else {
      rec_.rule.clear();
    }
    const tcp::endpoint ep(addr, req.tgt.port);
    boost::system::error_code ec;
    upstream_.close(ec);
    upstream_ = tcp::socket(client_.get_executor());
    std::string detail;
    bool exhausted = false;
    if (bind != nullptr && bind->is_v4() != addr.is_v4()) {
      detail = "egress address family does not match the destination";
    } else if ((ec = net::open_for(upstream_, ep, bind))) {
      exhausted = out_of_resources(ec);
      detail = (exhausted ? "cannot open the upstream socket: " : "cannot bind egress address: ") +
               ec.message();
      spdlog::warn("[C{}] {}", id_, detail);
    } else {
      const auto start = clock::now();
      // connect(2) directly, then wait for writability: no extra poll round before it.
      auto cec = net::start_connect(upstream_, ep);
      if (cec == asio::error::in_progress) {
        auto [wec] = co_await upstream_.async_wait(tcp::socket::wait_write, token);
        cec = wec ? wec : net::connect_result(upstream_);
      }
      if (!cec) {
        connected(req, 0, start);
        co_return true;
      }
      detail = cec.message();
    }
    spdlog::debug("[C{}] connect {} failed: {}", id_, net::to_string(ep), detail);
    // Out of descriptors is our own failure (500, internal_error), not the destination's.
    co_await respond_error(exhausted    ? proxy_error::internal_error
                           : timed_out_ ? proxy_error::connect_timeout
                                        : proxy_error::connect_refused,
                           exhausted ? "out of file descriptors" : "");
    co_return false;
  }

  // Attempt order: alternate families, each family in resolver order.
  std::vector<std::size_t> order;
  order.reserve(n);
  {
    std::vector<std::size_t> first, other;
    const bool v4_first = candidates_[0].first.is_v4();
    for (std::size_t i = 0; i < n; ++i) {
      (candidates_[i].first.is_v4() == v4_first ? first : other).push_back(i);
    }
    for (std::size_t k = 0; k < std::max(first.size(), other.size()); ++k) {
      if (k < first.size()) order.push_back(first[k]);
      if (k < other.size()) order.push_back(other[k]);
    }
  }

  struct attempt {
    tcp::socket socket;
    std::size_t candidate;
    clock::time_point start;
  };
  // Lives in this frame; every handler has run before the function returns (see the end).
  struct race {
    explicit race(const asio::any_io_executor& ex) : wake(ex) {}
    std::vector<attempt> attempts;
    std::size_t pending = 0;
    std::size_t failed = 0;
    std::optional<std::size_t> winner;
    boost::system::error_code last_error;
    asio::steady_timer wake;
  } r(client_.get_executor());
  r.attempts.reserve(n);  // never reallocated while connects are in flight

  constexpr auto attempt_delay = std::chrono::milliseconds(250);
  const auto until = deadline();
  std::size_t next = 0;
  bool exhausted = false;  // an attempt could not even open its socket (no descriptors)
  clock::time_point last_start{};
  std::string last_detail;
  // Starts the next attempt that can be started; false when none is left.
  auto launch = [&]() -> bool {
    while (next < order.size()) {
      const std::size_t i = order[next++];
      const auto& [addr, rule] = candidates_[i];
      const auto* bind = egress_for(rule);
      if (bind != nullptr && bind->is_v4() != addr.is_v4()) {
        last_detail = "egress address family does not match the destination";
        continue;
      }
      const tcp::endpoint ep(addr, req.tgt.port);
      r.attempts.push_back({tcp::socket(client_.get_executor()), i, clock::now()});
      const std::size_t k = r.attempts.size() - 1;
      auto& a = r.attempts[k];
      if (auto ec = net::open_for(a.socket, ep, bind)) {
        exhausted = exhausted || out_of_resources(ec);
        last_detail = "cannot bind egress address: " + ec.message();
        spdlog::warn("[C{}] {}", id_, last_detail);
        continue;
      }
      last_start = a.start;
      ++r.pending;
      a.socket.async_connect(ep, [&r, k](boost::system::error_code ec) {
        --r.pending;
        if (!ec && !r.winner) {
          r.winner = k;
        } else if (ec) {
          ++r.failed;
          if (ec != asio::error::operation_aborted) r.last_error = ec;
        }
        r.wake.cancel();
      });
      return true;
    }
    return false;
  };

  launch();
  std::size_t failures_handled = 0;
  while (!r.winner) {
    bool more = next < order.size();
    if (r.failed > failures_handled) {
      failures_handled = r.failed;
      if (more && launch()) continue;  // an attempt failed: the next one starts at once
      more = next < order.size();
    }
    if (r.pending == 0 && !(more && launch())) break;  // nothing running and nothing left
    if (timed_out_ || clock::now() >= until) break;
    more = next < order.size();
    const auto wake_at = more ? std::min(until, last_start + attempt_delay) : until;
    if (clock::now() >= wake_at) {
      launch();  // 250 ms without an answer: the next attempt joins the race
      continue;
    }
    r.wake.expires_at(wake_at);
    co_await r.wake.async_wait(token);
  }

  // Close the losers and wait for their handlers, which refer to this frame.
  for (std::size_t k = 0; k < r.attempts.size(); ++k) {
    if (r.winner && *r.winner == k) continue;
    boost::system::error_code ec;
    r.attempts[k].socket.close(ec);
  }
  while (r.pending > 0) {
    r.wake.expires_at(clock::time_point::max());
    co_await r.wake.async_wait(token);
  }

  if (r.winner) {
    auto& a = r.attempts[*r.winner];
    boost::system::error_code ec;
    upstream_.close(ec);
    upstream_ = std::move(a.socket);
    connected(req, a.candidate, a.start);
    co_return true;
  }
  proxy_error err = proxy_error::connect_refused;
  if (exhausted && r.failed == 0) {
    err = proxy_error::internal_error;  // no attempt got as far as a connect
  } else if (timed_out_ || (clock::now() >= until && r.failed < r.attempts.size())) {
    err = proxy_error::connect_timeout;
  } else if (r.last_error) {
    last_detail = r.last_error.message();
  }
  if (!r.attempts.empty()) {
    const auto& a = r.attempts.back();
    rec_.rule = candidates_[a.candidate].second != nullptr ? candidates_[a.candidate].second->name
                                                           : std::string();
  }
  spdlog::debug("[C{}] connect {} failed: {}", id_, req.tgt.host, last_detail);
  co_await respond_error(err, "");
  co_return false;
}

asio::awaitable<bool> session::tunnel_early_bytes() {
  auto early = in_.view();
  auto [ec, n] =
      co_await asio::async_write(upstream_, asio::buffer(early.data(), early.size()), token);
  rec_.bytes_in += n;
  in_.consume(in_.size());
  if (ec) {
    set_error(proxy_error::tunnel_reset);
    co_return false;
  }
  co_return true;
}

// The relay runs on callbacks after main_loop and run have returned, so an idle tunnel keeps no
// coroutine frame alive. It lives in the session (no allocation of its own).
void session::start_relay() {
  const auto& cfg = rt_->cfg;
  relay::pipe_pool* pipes = cfg.relay.splice ? ctx_.pipes.get() : nullptr;
  relay_.emplace(client_, upstream_, pipes, cfg.limit.buffer_size, last_activity_);
  if (auto* m = ctx_.shared->stats) m->tunnels_active.Increment();
  relay_->start(shared_from_this(), [this] { tunnel_done(); });
}

// Both directions of the tunnel have ended: log it and close.
void session::tunnel_done() {
  auto* m = ctx_.shared->stats;
  if (relay_->splicing()) {
    const auto& up = relay_->up();
    const auto& down = relay_->down();
    rec_.relay = up.fell_back || down.fell_back ? "copy_fallback" : "splice";
    if (m) {
      m->relay(metrics::relay_mode::splice);
      if (up.fell_back || down.fell_back) m->splice_fallbacks.Increment();
    }
  } else {
    rec_.relay = "copy";
    if (m) m->relay(metrics::relay_mode::copy);
  }
  finish_tunnel(relay_->up(), relay_->down());
}

// A tunnel on a TLS listener. The client side is TLS records, which only user space can
// decrypt, so splice does not apply: each direction copies through a 64 KiB buffer, held only
// while bytes flow.
asio::awaitable<void> session::tls_tunnel() {
  using namespace asio::experimental::awaitable_operators;
  auto* m = ctx_.shared->stats;
  if (m) m->tunnels_active.Increment();
  tls_pumps_ = std::make_unique<std::array<relay::pump_state, 2>>();
  auto& [up, down] = *tls_pumps_;
  co_await (tls_pump_up(up) && tls_pump_down(down));
  rec_.relay = "tls_copy";
  if (m) m->relay(metrics::relay_mode::tls_copy);
  finish_tunnel(up, down);
}

namespace {
// Per direction, allocated only while bytes flow (an idle TLS tunnel holds no buffer).
constexpr std::size_t tls_chunk = 64 * 1024;
}  // namespace

// An error ends both directions: the other pump sees its socket closed.
void session::tls_pump_failed(relay::pump_state& st, const boost::system::error_code& ec,
                              bool write_side) {
  st.failed = true;
  st.ec = ec;
  st.write_failed = write_side;
  boost::system::error_code ignored;
  upstream_.close(ignored);
  client_.close(ignored);
}

// Client (TLS) -> upstream. The client's close_notify (or FIN) half-closes the upstream.
asio::awaitable<void> session::tls_pump_up(relay::pump_state& st) {
  std::unique_ptr<char[]> buf;
  for (;;) {
    if (!buf) buf = std::make_unique<char[]>(tls_chunk);
    auto [ec, n] = co_await tls_->read_some(asio::buffer(buf.get(), tls_chunk), false);
    if (ec == asio::error::would_block) {
      buf.reset();
      if (auto wec = co_await tls_->wait_readable()) co_return tls_pump_failed(st, wec, false);
      continue;
    }
    if (ec == asio::error::eof) {
      st.eof = true;
      boost::system::error_code ignored;
      upstream_.shutdown(tcp::socket::shutdown_send, ignored);
      co_return;
    }
    if (ec) co_return tls_pump_failed(st, ec, false);
    last_activity_ = clock::now();
    auto [wec, w] = co_await asio::async_write(upstream_, asio::buffer(buf.get(), n), token);
    st.bytes += w;
    if (wec) co_return tls_pump_failed(st, wec, true);
    last_activity_ = clock::now();
  }
}

// Upstream -> client (TLS). The origin's FIN becomes close_notify and a FIN to the client, which
// may go on sending (TLS 1.3 and OpenSSL allow the half-close).
asio::awaitable<void> session::tls_pump_down(relay::pump_state& st) {
  std::unique_ptr<char[]> buf;
  boost::system::error_code nb;
  upstream_.non_blocking(true, nb);
  for (;;) {
    if (!buf) buf = std::make_unique<char[]>(tls_chunk);
    boost::system::error_code ec;
    const std::size_t n = upstream_.read_some(asio::buffer(buf.get(), tls_chunk), ec);
    if (ec == asio::error::would_block) {
      buf.reset();
      tls_->release_buffers();
      auto [wec] = co_await upstream_.async_wait(tcp::socket::wait_read, token);
      if (wec) co_return tls_pump_failed(st, wec, false);
      continue;
    }
    if (ec == asio::error::eof) {
      st.eof = true;
      co_await tls_->shutdown_send();
      co_return;
    }
    if (ec) co_return tls_pump_failed(st, ec, false);
    last_activity_ = clock::now();
    auto [wec, w] = co_await tls_->write(asio::buffer(buf.get(), n));
    st.bytes += w;
    if (wec) co_return tls_pump_failed(st, wec, true);
    last_activity_ = clock::now();
  }
}

void session::finish_tunnel(const relay::pump_state& up, const relay::pump_state& down) {
  auto* m = ctx_.shared->stats;
  if (m) m->tunnels_active.Decrement();
  rec_.bytes_in += up.bytes;
  rec_.bytes_out += down.bytes;
  rec_.reply_bytes += down.bytes;
  if (timed_out_) {
    set_error(proxy_error::tunnel_idle);
  } else if (up.failed || down.failed) {
    // Blame the side whose socket failed first: the other direction then only sees its own
    // sockets closed (operation_aborted, bad descriptor). Up reads the client and writes the
    // upstream; down reads the upstream and writes the client.
    auto genuine = [](const relay::pump_state& p) {
      return p.failed && p.ec != asio::error::operation_aborted &&
             p.ec != asio::error::bad_descriptor;
    };
    const relay::pump_state& first = genuine(up) || !genuine(down) ? (up.failed ? up : down) : down;
    const bool client_side = (&first == &up) != first.write_failed;
    set_error(client_side ? proxy_error::client_closed : proxy_error::tunnel_reset);
  }
  if (m) m->observe_tunnel(clock::now() - req_start_);
  finish_record();
  end();
}

asio::awaitable<bool> session::forward(const http::request_head& req) {
  const auto& cfg = rt_->cfg;
  http::forward_options opt;
  opt.xff = rt_->xff;
  opt.via = cfg.hdr.via;
  opt.via_name = cfg.hdr.via_name;
  opt.client_ip = client_ip_text_;
  opt.upstream_keep_alive = cfg.upstream.keepalive;
  http::build_request(req, opt, scratch_);
  // A pooled connection may have been closed by the server just as we reused it. Retrying is
  // safe only when the request is idempotent and carried no body (nothing of the client's was
  // consumed), and only once, on a fresh connection (RFC 9110 section 9.2.2).
  const bool can_retry = retryable(req);
  for (int attempt = 0;; ++attempt) {
    set_phase(phase::relay, cfg.timeout.idle);
    stale_ = false;
    auto [ec, n] = co_await asio::async_write(upstream_, asio::buffer(scratch_), token);
    if (ec) {
      if (reused_ && can_retry && attempt == 0) {
        connect_pooled(req, false);
        if (!co_await connect_upstream(req)) co_return false;
        continue;
      }
      co_await respond_error(proxy_error::upstream_closed, "");
      co_return false;
    }
    if (req.body == http::framing::none ||
        (req.body == http::framing::content_length && req.content_length == 0)) {
      // Nothing to upload: skip the parallel group and wait for the response head at once.
      upload_done_ = true;
      set_phase(phase::response_header, cfg.timeout.response_header);
      co_await download(req);
    } else {
      co_await (upload(req) && download(req));
    }
    if (stale_ && can_retry && attempt == 0 && !response_started_) {
      spdlog::debug("[C{}] pooled upstream closed before answering; retrying", id_);
      upload_done_ = response_head_received_ = response_done_ = close_after_ = false;
      upstream_reusable_ = false;
      upload_err_ = download_err_ = proxy_error::none;
      err_detail_ = {};
      connect_pooled(req, false);
      if (!co_await connect_upstream(req)) co_return false;
      continue;
    }
    break;
  }

  if (upload_err_ != proxy_error::none || download_err_ != proxy_error::none) {
    // A client-side fault (bad chunk, client gone) explains the failure better than the
    // upstream abort it caused.
    proxy_error e = upload_err_ != proxy_error::none ? upload_err_ : download_err_;
    if (!response_started_) {
      if (timed_out_ && e != proxy_error::bad_request) {
        e = upload_done_ ? proxy_error::upstream_timeout : proxy_error::client_timeout;
      }
      co_await respond_error(e, err_detail_);
    } else {
      // The client already has part of a response: cut the connection hard so it cannot take
      // a truncated body for a complete one.
      set_error(e);
      net::abort_close(client_);
    }
    boost::system::error_code ignored;
    upstream_.close(ignored);
    co_return false;
  }
  boost::system::error_code ignored;
  if (upstream_reusable_ && upstream_.is_open()) {
    ctx_.pool.put(key_, std::move(upstream_), rec_.egress_addr);
    upstream_ = tcp::socket(client_.get_executor());
  } else {
    upstream_.close(ignored);
  }
  bool draining = ctx_.shared->draining.load(std::memory_order_relaxed);
  co_return req.keep_alive && !close_after_ && !draining;
}

asio::awaitable<void> session::upload(const http::request_head& req) {
  auto finish = [this] {
    upload_done_ = true;
    if (!response_head_received_ && upload_err_ == proxy_error::none)
      set_phase(phase::response_header, rt_->cfg.timeout.response_header);
  };
  auto fail = [this](proxy_error e, std::string_view why) {
    // After a complete early response, the upload was stopped on purpose: not an error.
    if (response_done_) return;
    if (upload_err_ == proxy_error::none) {
      upload_err_ = e;
      err_detail_ = why;
    }
    // Whatever the upstream got so far is not a complete request: end it with a reset.
    net::abort_close(upstream_);
  };
  if (req.body == http::framing::content_length) {
    std::uint64_t remaining = req.content_length;
    if (!in_.empty() && remaining > 0) {
      std::size_t take = static_cast<std::size_t>(std::min<std::uint64_t>(remaining, in_.size()));
      auto [ec, n] =
          co_await asio::async_write(upstream_, asio::buffer(in_.view().data(), take), token);
      if (ec) {
        if (!response_head_received_)
          fail(proxy_error::upstream_closed, "upstream closed during the request body");
        co_return;
      }
      in_.consume(take);
      remaining -= take;
      rec_.bytes_in += take;
    }
    if (remaining >= splice_threshold && rt_->cfg.relay.splice && ctx_.pipes && !tls_) {
      relay::pump_state st;
      std::uint64_t moved = 0;
      {
        const splice_progress progress(body_splice_[0], st);
        moved = co_await relay::splice_exact(client_, upstream_, *ctx_.pipes, remaining, st,
                                             last_activity_);
      }
      rec_.bytes_in += moved;
      remaining -= moved;
      if (st.write_failed) {
        if (!response_head_received_)
          fail(proxy_error::upstream_closed, "upstream closed during the request body");
        co_return;
      }
      if (st.eof || st.failed) {
        fail(timed_out_ ? proxy_error::client_timeout : proxy_error::client_closed,
             "client ended during the request body");
        co_return;
      }
    }
    while (remaining > 0) {
      if (in_.empty()) {
        auto buf = in_.prepare(read_chunk);
        auto [ec, n] = co_await client_read(asio::buffer(buf.data(), buf.size()));
        if (ec) {
          fail(timed_out_ ? proxy_error::client_timeout : proxy_error::client_closed,
               "client ended during the request body");
          co_return;
        }
        in_.commit(n);
        last_activity_ = clock::now();
      }
      std::size_t take = static_cast<std::size_t>(std::min<std::uint64_t>(remaining, in_.size()));
      auto [ec, n] =
          co_await asio::async_write(upstream_, asio::buffer(in_.view().data(), take), token);
      if (ec) {
        if (download_err_ == proxy_error::none && !response_head_received_)
          fail(proxy_error::upstream_closed, "upstream closed during the request body");
        co_return;
      }
      in_.consume(take);
      remaining -= take;
      rec_.bytes_in += take;
      last_activity_ = clock::now();
    }
  } else if (req.body == http::framing::chunked) {
    http::chunked_decoder decoder(4096, rt_->limits.header_block);
    std::string chunk_head;
    for (;;) {
      auto step = decoder.decode(in_.view());
      if (step.error) {
        fail(proxy_error::bad_request, step.detail);
        co_return;
      }
      if (!step.data.empty()) {
        chunk_head.clear();
        http::append_chunk_header(chunk_head, step.data.size());
        std::array<asio::const_buffer, 3> bufs{asio::buffer(chunk_head),
                                               asio::buffer(step.data.data(), step.data.size()),
                                               asio::buffer("\r\n", 2)};
        auto [ec, n] = co_await asio::async_write(upstream_, bufs, token);
        if (ec) {
          if (!response_head_received_)
            fail(proxy_error::upstream_closed, "upstream closed during the request body");
          co_return;
        }
        rec_.bytes_in += step.data.size();
        last_activity_ = clock::now();
      }
      in_.consume(step.consumed);
      if (step.done) break;
      if (step.consumed == 0 || in_.empty()) {
        auto buf = in_.prepare(read_chunk);
        auto [ec, n] = co_await client_read(asio::buffer(buf.data(), buf.size()));
        if (ec) {
          fail(timed_out_ ? proxy_error::client_timeout : proxy_error::client_closed,
               "client ended during the request body");
          co_return;
        }
        in_.commit(n);
        last_activity_ = clock::now();
      }
    }
    auto [ec, n] = co_await asio::async_write(upstream_, asio::buffer("0\r\n\r\n", 5), token);
    if (ec) {
      if (!response_head_received_)
        fail(proxy_error::upstream_closed, "upstream closed during the request body");
      co_return;
    }
  }
  finish();
}

// One read from the upstream into up_ (not a coroutine: no frame of its own per read).
asio::awaitable<session::io_result> session::upstream_read() {
  auto buf = up_.prepare(read_chunk);
  return upstream_.async_read_some(asio::buffer(buf.data(), buf.size()), token);
}

// Bytes an upstream_read() added to up_; 0 when it failed.
std::size_t session::upstream_read_done(const io_result& r) {
  const auto& [ec, n] = r;
  if (ec) return 0;
  up_.commit(n);
  last_activity_ = clock::now();
  return n;
}

asio::awaitable<void> session::download(const http::request_head& req) {
  auto fail = [this](proxy_error e, std::string_view why) {
    // A write to the client fails after the idle timer closed it: a client that stopped
    // reading timed out, it did not close.
    if (e == proxy_error::client_closed && timed_out_) {
      e = proxy_error::client_timeout;
      why = "client stopped reading";
    }
    if (download_err_ == proxy_error::none) {
      download_err_ = e;
      if (upload_err_ == proxy_error::none) err_detail_ = why;
    }
    boost::system::error_code ignored;
    upstream_.close(ignored);
    // Stop an upload still waiting on the client; the connection cannot be reused anyway.
    if (!upload_done_) client_.cancel(ignored);
  };

  http::response_head& resp = resp_;  // its field list keeps its storage across requests
  int interim = 0;
  for (;;) {
    http::head_scanner scanner(rt_->limits);
    http::scan_result scan;
    for (;;) {
      scan = scanner.scan(up_.view());
      if (scan.status != http::scan_result::need_more) break;
      if (upstream_read_done(co_await upstream_read()) == 0) {
        if (upload_err_ != proxy_error::none) co_return;  // the upload already explains it
        if (reused_ && interim == 0 && up_.empty() && !timed_out_) stale_ = true;
        fail(timed_out_ ? proxy_error::upstream_timeout : proxy_error::upstream_closed,
             "no response from the destination");
        co_return;
      }
    }
    if (scan.status == http::scan_result::error || scan.skipped > 0) {
      fail(proxy_error::upstream_bad_response, "malformed response head");
      co_return;
    }
    resp_head_.assign(up_.view().substr(0, scan.head_length));
    up_.consume(scan.head_length);
    auto perr = http::parse_response(resp_head_, req.method, rt_->limits, resp);
    if (perr) {
      fail(proxy_error::upstream_bad_response, perr.detail);
      co_return;
    }
    if (resp.status >= 200) break;
    if (resp.status == 101 || ++interim > 10) {
      fail(proxy_error::upstream_bad_response, "unexpected interim response");
      co_return;
    }
    // 100 Continue and other 1xx go to HTTP/1.1 clients (they may be waiting on them); an
    // HTTP/1.0 client cannot understand them.
    if (req.version_minor == 1) {
      http::build_interim(resp, scratch_);
      if (!co_await write_client(scratch_)) {
        fail(proxy_error::client_closed, "client closed");
        co_return;
      }
    }
  }
  response_head_received_ = true;
  set_phase(phase::relay, rt_->cfg.timeout.idle);

  http::response_options ro;
  ro.via = rt_->cfg.hdr.via;
  ro.via_name = rt_->cfg.hdr.via_name;
  ro.client_version_minor = req.version_minor;
  ro.to_client = resp.body;
  ro.head_only = resp.body == http::framing::none && (req.method == "HEAD" || resp.status == 304);
  if (resp.body == http::framing::chunked && req.version_minor == 0)
    ro.to_client = http::framing::until_close;
  bool draining = ctx_.shared->draining.load(std::memory_order_relaxed);
  close_after_ = close_after_ || !req.keep_alive || draining || !upload_done_ ||
                 ro.to_client == http::framing::until_close;
  ro.close = close_after_;
  http::build_response(resp, ro, scratch_);
  rec_.status = resp.status;
  for (const auto& f : resp.fields) {
    if (http::iequals(f.name, "content-type")) {
      rec_.content_type.assign(f.value.substr(0, 128));
      break;
    }
  }
  // The head goes out together with the body bytes already read (a small response is usually
  // whole in up_): one write instead of two.
  std::uint64_t first_body = 0;
  if (resp.body == http::framing::content_length)
    first_body = std::min<std::uint64_t>(resp.content_length, up_.size());
  {
    std::array<asio::const_buffer, 2> bufs{
        asio::buffer(scratch_),
        asio::buffer(up_.view().data(), static_cast<std::size_t>(first_body))};
    auto [ec, n] = co_await client_write(bufs);
    last_activity_ = clock::now();
    rec_.reply_bytes += n;
    if (ec) {
      fail(proxy_error::client_closed, "client closed");
      co_return;
    }
  }
  response_started_ = true;
  rec_.bytes_out += first_body;
  up_.consume(static_cast<std::size_t>(first_body));

  auto send = [this](std::string_view data) -> asio::awaitable<bool> {
    bool ok = co_await write_client(data);
    if (ok) rec_.bytes_out += data.size();
    co_return ok;
  };

  if (resp.body == http::framing::content_length) {
    std::uint64_t remaining = resp.content_length - first_body;
    if (!up_.empty() && remaining > 0) {
      std::size_t take = static_cast<std::size_t>(std::min<std::uint64_t>(remaining, up_.size()));
      if (!co_await send(up_.view().substr(0, take))) {
        fail(proxy_error::client_closed, "client closed");
        co_return;
      }
      up_.consume(take);
      remaining -= take;
    }
    if (remaining >= splice_threshold && rt_->cfg.relay.splice && ctx_.pipes && !tls_) {
      // A large body of known length moves socket to socket through a pipe, never through
      // user space; the length bounds it, so the next response's bytes are never touched.
      relay::pump_state st;
      std::uint64_t moved = 0;
      {
        const splice_progress progress(body_splice_[1], st);
        moved = co_await relay::splice_exact(upstream_, client_, *ctx_.pipes, remaining, st,
                                             last_activity_);
      }
      rec_.bytes_out += moved;
      rec_.reply_bytes += moved;
      remaining -= moved;
      if (st.write_failed) {
        fail(proxy_error::client_closed, "client closed");
        co_return;
      }
      if (st.eof || st.failed) {
        fail(timed_out_ ? proxy_error::upstream_idle : proxy_error::upstream_closed,
             "destination closed mid-body");
        co_return;
      }
    }
    while (remaining > 0) {
      if (up_.empty() && upstream_read_done(co_await upstream_read()) == 0) {
        fail(timed_out_ ? proxy_error::upstream_idle : proxy_error::upstream_closed,
             "destination closed mid-body");
        co_return;
      }
      std::size_t take = static_cast<std::size_t>(std::min<std::uint64_t>(remaining, up_.size()));
      if (!co_await send(up_.view().substr(0, take))) {
        fail(proxy_error::client_closed, "client closed");
        co_return;
      }
      up_.consume(take);
      remaining -= take;
    }
  } else if (resp.body == http::framing::chunked) {
    http::chunked_decoder decoder(4096, rt_->limits.header_block);
    bool rechunk = ro.to_client == http::framing::chunked;
    std::string chunk_head;
    for (;;) {
      auto step = decoder.decode(up_.view());
      if (step.error) {
        fail(proxy_error::upstream_bad_response, step.detail);
        co_return;
      }
      if (!step.data.empty()) {
        bool ok;
        if (rechunk) {
          chunk_head.clear();
          http::append_chunk_header(chunk_head, step.data.size());
          std::array<asio::const_buffer, 3> bufs{asio::buffer(chunk_head),
                                                 asio::buffer(step.data.data(), step.data.size()),
                                                 asio::buffer("\r\n", 2)};
          auto [ec, n] = co_await client_write(bufs);
          rec_.reply_bytes += n;
          ok = !ec;
          if (ok) rec_.bytes_out += step.data.size();
          last_activity_ = clock::now();
        } else {
          ok = co_await send(step.data);
        }
        if (!ok) {
          fail(proxy_error::client_closed, "client closed");
          co_return;
        }
      }
      up_.consume(step.consumed);
      if (step.done) break;
      if ((step.consumed == 0 || up_.empty()) &&
          upstream_read_done(co_await upstream_read()) == 0) {
        fail(timed_out_ ? proxy_error::upstream_idle : proxy_error::upstream_closed,
             "destination closed mid-body");
        co_return;
      }
    }
    if (rechunk && !co_await write_client("0\r\n\r\n")) {
      fail(proxy_error::client_closed, "client closed");
      co_return;
    }
  } else if (resp.body == http::framing::until_close) {
    for (;;) {
      if (!up_.empty()) {
        if (!co_await send(up_.view())) {
          fail(proxy_error::client_closed, "client closed");
          co_return;
        }
        up_.consume(up_.size());
      }
      auto buf = up_.prepare(read_chunk);
      auto [ec, n] =
          co_await upstream_.async_read_some(asio::buffer(buf.data(), buf.size()), token);
      if (ec == asio::error::eof) break;
      if (ec) {
        fail(timed_out_ ? proxy_error::upstream_idle : proxy_error::upstream_closed,
             "destination reset mid-body");
        co_return;
      }
      up_.commit(n);
      last_activity_ = clock::now();
    }
  }
  // Reuse only after a complete, self-delimited response with nothing extra behind it.
  upstream_reusable_ = resp.keep_alive && resp.body != http::framing::until_close && up_.empty() &&
                       upload_done_ && !timed_out_;
  up_.consume(up_.size());
  response_done_ = true;
  if (!upload_done_) {
    // The destination answered before taking the whole request body (e.g. an early 413). The
    // client connection cannot carry another request: stop the upload and close after.
    close_after_ = true;
    boost::system::error_code ignored;
    upstream_.close(ignored);
    client_.cancel(ignored);
  }
}

}  // namespace egressd::proxy
