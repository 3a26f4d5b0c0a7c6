#include "egressd/server/server.hpp"

#include <spdlog/spdlog.h>
#include <sys/socket.h>
#include <algorithm>
#include <condition_variable>
#include <mutex>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/ip/v6_only.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <chrono>

#include "egressd/acl/cidr.hpp"
#include "egressd/core/log_limiter.hpp"
#include "egressd/http/forward.hpp"
#include "egressd/net/socket_util.hpp"
#include "egressd/proxy/session.hpp"

namespace egressd::server {

namespace asio = boost::asio;
using asio::ip::tcp;

struct server::worker {
  // Declared first so it outlives io: destroying io destroys suspended sessions, whose
  // destructors unregister from ctx.
  proxy::worker_context ctx;
  // One thread runs this context and is the only one to touch its sockets and timers (other
  // threads only post() to it), so the reactor's per-descriptor locking can go: UNSAFE_IO keeps
  // the scheduler's and the registration locks that post() and io.stop() from other threads need.
  // (Hint 1 alone, used before, still locked every descriptor on every operation: callgrind
  // counted ~3,100 instructions of mutex lock/unlock per new tunnel.)
  asio::io_context io{BOOST_ASIO_CONCURRENCY_HINT_UNSAFE_IO};
  std::vector<tcp::acceptor> acceptors;
  std::thread thread;
  asio::executor_work_guard<asio::io_context::executor_type> guard{io.get_executor()};
  asio::steady_timer sweep{io};  // the upstream pool's once-a-second sweep
};

namespace {

// Accept failures such as EMFILE repeat as fast as we retry: at most one line a second each.
log_limiter accept_error_log;
log_limiter over_limit_log;

asio::awaitable<void> accept_loop(tcp::acceptor& acceptor, proxy::worker_context& ctx,
                                  std::size_t listener) {
  constexpr auto token = asio::as_tuple(asio::use_awaitable);
  auto ex = co_await asio::this_coro::executor;
  asio::steady_timer backoff(ex);
  tcp::endpoint peer;  // filled by accept() itself: no getpeername() per connection
  for (;;) {
    auto [ec, socket] = co_await acceptor.async_accept(peer, token);
    if (!acceptor.is_open() || ec == asio::error::operation_aborted) co_return;
    if (ec) {
      // EMFILE/ENFILE/ENOBUFS: the pending connection stays in the backlog; retrying at once
      // would spin. Back off and let connections finish and free descriptors.
      if (ctx.shared->stats) ctx.shared->stats->accept_errors.Increment();
      if (std::uint64_t held = 0; accept_error_log.allow(&held)) {
        spdlog::error("accept failed: {} ({} more since the last report)", ec.message(), held);
      }
      backoff.expires_after(std::chrono::milliseconds(100));
      co_await backoff.async_wait(token);
      continue;
    }
    if (ctx.shared->active.load(std::memory_order_relaxed) >= ctx.rt->cfg.limit.max_connections) {
      // Over the limit: a short 503 without reading the request. The socket is non-blocking
      // under Asio, so a full send buffer just drops the message.
      auto resp = http::error_response(proxy_error::over_limit, "", true, ctx.rt->cfg.hdr.via_name);
      boost::system::error_code wec;
      socket.non_blocking(true, wec);
      socket.write_some(asio::buffer(resp), wec);
      socket.close(wec);
      if (ctx.shared->stats) ctx.shared->stats->connections_rejected.Increment();
      if (std::uint64_t held = 0; over_limit_log.allow(&held)) {
        spdlog::warn("connection limit reached: 503 ({} more since the last report)", held);
      }
      continue;
    }
    auto s = std::make_shared<proxy::session>(std::move(socket), peer, ctx, listener);
    asio::co_spawn(ex, proxy::session::run(std::move(s)), [](std::exception_ptr e) {
      if (!e) return;
      try {
        std::rethrow_exception(e);
      } catch (const std::exception& ex2) {
        spdlog::error("session ended with an exception: {}", ex2.what());
      }
    });
  }
}

void configure_pool(proxy::worker_context& ctx, const config::config& cfg) {
  const auto& u = cfg.upstream;
  ctx.pool.configure(u.keepalive ? u.max_idle : 0, u.max_idle_per_host, u.idle_timeout);
  ctx.pool.set_stats(ctx.shared != nullptr ? ctx.shared->stats : nullptr);
}

tcp::acceptor open_acceptor(asio::io_context& io, const tcp::endpoint& ep,
                            boost::system::error_code& ec) {
  tcp::acceptor a(io);
  a.open(ep.protocol(), ec);
  if (ec) return a;
  a.set_option(asio::socket_base::reuse_address(true), ec);
  int one = 1;
  if (::setsockopt(a.native_handle(), SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) != 0) {
    ec = boost::system::error_code(errno, boost::system::system_category());
    return a;
  }
  if (ep.address().is_v6()) a.set_option(asio::ip::v6_only(true), ec);
  net::set_keepalive(a.native_handle());  // inherited by every accepted socket
  // Linux copies TCP_NODELAY from the listener to every socket accept() returns: set once here
  // instead of a setsockopt() per connection (a relay must not delay the small writes it passes
  // on).
  boost::system::error_code ignored;  // as set_nodelay: best effort
  a.set_option(tcp::no_delay(true), ignored);
  a.bind(ep, ec);
  if (ec) return a;
  a.listen(asio::socket_base::max_listen_connections, ec);
  return a;
}

}  // namespace

server::server(std::shared_ptr<const proxy::runtime> rt, proxy::access_log& log,
               metrics::stats* stats)
    : rt_(std::move(rt)), shared_(log, rt_->cfg.relay.max_pipes) {
  shared_.stats = stats;
  unsigned n = rt_->cfg.workers;
  if (n == 0) n = std::max(1u, std::thread::hardware_concurrency());
  for (unsigned i = 0; i < n; ++i) {
    auto w = std::make_unique<worker>();
    w->ctx.shared = &shared_;
    w->ctx.rt = rt_;
    configure_pool(w->ctx, rt_->cfg);
    w->ctx.pipes = std::make_unique<relay::pipe_pool>(shared_.pipes, rt_->cfg.relay.pipe_size);
    const auto& d = rt_->cfg.dns;
    net::dns_options o;
    o.servers = d.servers;
    o.timeout = rt_->cfg.timeout.dns;
    o.cache_size = d.cache_size;
    o.min_ttl = d.min_ttl;
    o.max_ttl = d.max_ttl;
    o.negative_ttl = d.negative_ttl;
    w->ctx.dns = std::make_unique<net::dns_resolver>(w->io.get_executor(), std::move(o));
    workers_.push_back(std::move(w));
  }
}

server::~server() {
  stop();
}

std::string server::bind() {
  for (const auto& l : rt_->cfg.listeners) {
    boost::system::error_code ec;
    auto addr = asio::ip::make_address(l.address.host, ec);
    if (ec) return "listener " + l.address.to_string() + ": " + ec.message();
    tcp::endpoint ep(addr, l.address.port);
    for (auto& w : workers_) {
      auto a = open_acceptor(w->io, ep, ec);
      if (ec) return "listener " + l.address.to_string() + ": " + ec.message();
      // Port 0: the first acceptor picks the port; the other workers join it.
      ep = a.local_endpoint(ec);
      w->acceptors.push_back(std::move(a));
    }
    bound_.push_back(ep);
    spdlog::info("listening on {} (proxy)", net::to_string(ep));
  }
  for (const auto& ep : bound_) add_self(ep);
  return {};
}

// Our own endpoints are forbidden destinations: a wildcard listener is reachable on every local
// address.
void server::add_self(const tcp::endpoint& ep) {
  if (ep.address().is_unspecified()) {
    for (const auto& a : net::local_addresses()) shared_.self.emplace_back(a, ep.port());
  } else {
    shared_.self.emplace_back(acl::unmap(ep.address()), ep.port());
  }
}

// Every second, on the worker's own thread: idle upstream connections past their timeout or
// closed by the origin are closed even when no new request comes to reuse or replace them, and
// the bytes that running tunnels and transfers moved go into egressd_bytes_total.
void server::schedule_sweep(worker& w) {
  w.sweep.expires_after(std::chrono::seconds(1));
  w.sweep.async_wait([this, &w](boost::system::error_code ec) {
    if (ec) return;
    w.ctx.pool.sweep();
    for (auto* s : w.ctx.sessions) s->count_live_bytes();
    schedule_sweep(w);
  });
}

void server::start() {
  for (auto& w : workers_) {
    schedule_sweep(*w);
    for (std::size_t i = 0; i < w->acceptors.size(); ++i) {
      asio::co_spawn(w->io, accept_loop(w->acceptors[i], w->ctx, i), [](std::exception_ptr e) {
        if (!e) return;
        try {
          std::rethrow_exception(e);
        } catch (const std::exception& ex) {
          spdlog::critical("accept loop failed: {}", ex.what());
        }
      });
    }
    w->thread = std::thread([io = &w->io] {
      for (;;) {
        try {
          io->run();
          return;
        } catch (const std::exception& e) {
          // A handler threw: log and keep serving the other connections of this worker.
          spdlog::error("worker handler threw: {}", e.what());
        }
      }
    });
  }
}

std::vector<proxy::connection_status> server::snapshot(std::chrono::milliseconds timeout) {
  // Shared with the workers' handlers, which may run after this call gave up waiting.
  struct gather {
    std::mutex mutex;
    std::condition_variable done;
    std::size_t answered = 0;
    std::vector<proxy::connection_status> all;
  };
  auto g = std::make_shared<gather>();
  for (auto& w : workers_) {
    asio::post(w->io, [g, ctx = &w->ctx] {
      std::vector<proxy::connection_status> mine;
      mine.reserve(ctx->sessions.size());
      for (const auto* s : ctx->sessions) mine.push_back(s->status());
      std::lock_guard lock(g->mutex);
      g->all.insert(g->all.end(), std::make_move_iterator(mine.begin()),
                    std::make_move_iterator(mine.end()));
      ++g->answered;
      g->done.notify_all();
    });
  }
  std::unique_lock lock(g->mutex);
  g->done.wait_for(lock, timeout, [&] { return g->answered == workers_.size(); });
  auto out = g->all;
  lock.unlock();
  std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) { return a.age > b.age; });
  return out;
}

void server::update(std::shared_ptr<const proxy::runtime> rt) {
  rt_ = rt;
  for (auto& w : workers_) {
    asio::post(w->io, [w = w.get(), rt] {
      w->ctx.rt = rt;
      configure_pool(w->ctx, rt->cfg);
    });
  }
}

void server::begin_drain() {
  shared_.draining.store(true);
  for (auto& w : workers_) {
    asio::post(w->io, [w = w.get()] {
      // Copy first: closing a session may end it and erase it from the set.
      std::vector<proxy::session*> live(w->ctx.sessions.begin(), w->ctx.sessions.end());
      for (auto* s : live) s->close_if_idle();
    });
  }
}

void server::close_listeners() {
  for (auto& w : workers_) {
    asio::post(w->io, [w = w.get()] {
      boost::system::error_code ec;
      for (auto& a : w->acceptors) a.close(ec);
      std::vector<proxy::session*> live(w->ctx.sessions.begin(), w->ctx.sessions.end());
      for (auto* s : live) s->close_if_idle();
    });
  }
}

std::size_t server::active_connections() const noexcept {
  return shared_.active.load(std::memory_order_relaxed);
}

void server::stop() {
  if (stopped_) return;
  stopped_ = true;
  for (auto& w : workers_) {
    w->guard.reset();
    w->io.stop();
  }
  for (auto& w : workers_)
    if (w->thread.joinable()) w->thread.join();
  // Pooled sockets belong to the worker's io_context, which is destroyed before ctx: close
  // them while it still exists.
  for (auto& w : workers_) {
    w->sweep.cancel();
    w->ctx.pool.clear();
    w->ctx.pipes.reset();
    w->ctx.dns.reset();
    w->acceptors.clear();
  }
}

}  // namespace egressd::server
