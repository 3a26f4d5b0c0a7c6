#pragma once
// What a session needs to decide and forward: an immutable snapshot of the config (swapped as a
// whole on reload, so a request sees one consistent policy), plus process-wide shared state.
#include <atomic>
#include <boost/asio/ip/tcp.hpp>
#include <cstdint>
#include <memory>
#include <unordered_set>
#include <vector>

#include "egressd/acl/destination_policy.hpp"
#include "egressd/acl/rules.hpp"
#include "egressd/config/config.hpp"
#include "egressd/http/forward.hpp"
#include "egressd/http/message.hpp"
#include "egressd/metrics/stats.hpp"
#include "egressd/net/dns.hpp"
#include "egressd/net/tls.hpp"
#include "egressd/proxy/access_log.hpp"
#include "egressd/proxy/upstream_pool.hpp"
#include "egressd/relay/pipe_pool.hpp"

namespace egressd::proxy {

struct runtime {
  config::config cfg;
  acl::rule_set rules;
  acl::destination_policy destinations;
  http::head_limits limits;
  http::xff_policy xff = http::xff_policy::append;
  // Per listener (same index as cfg.listeners): its TLS context, or null for plain TCP. Part of
  // the snapshot, so a reload serves renewed certificates to new connections while open ones
  // keep the context they started with.
  std::vector<std::shared_ptr<const net::tls_context>> listener_tls;

  // listener_tls: the contexts loaded with cfg (net::load_tls_contexts(cfg).listeners); no file
  // is read here. Throws std::invalid_argument when they do not match cfg.listeners (another
  // count, a TLS listener without a context or a plain one with one).
  static std::shared_ptr<const runtime> build(
      config::config cfg, std::vector<std::shared_ptr<const net::tls_context>> listener_tls);
};

// Process-wide state shared by all workers; every member is safe to use from any thread.
struct shared_state {
  shared_state(access_log& l, std::size_t max_pipes) : log(l), pipes(max_pipes) {}
  access_log& log;
  relay::pipe_budget pipes;         // global cap on splice pipes
  metrics::stats* stats = nullptr;  // the metric set (thread-safe counters); null in some tests
  // Our own listening endpoints (wildcards expanded to the host's addresses), fixed at start:
  // connecting to one of them would loop back into egressd.
  std::vector<boost::asio::ip::tcp::endpoint> self;
  std::atomic<std::uint64_t> next_conn_id{1};
  std::atomic<std::size_t> active{0};
  std::atomic<bool> draining{false};

  bool is_self(const boost::asio::ip::address& a, std::uint16_t port) const noexcept;
};

class session;

// Per-worker state: touched only by the worker's own thread, so it needs no lock.
struct worker_context {
  shared_state* shared = nullptr;
  std::shared_ptr<const runtime> rt;        // current snapshot; replaced on reload
  std::unordered_set<session*> sessions;    // live sessions, for drain
  upstream_pool pool;                       // idle upstream connections (plain HTTP)
  std::unique_ptr<relay::pipe_pool> pipes;  // splice pipes (used while relay.splice is on)
  std::unique_ptr<net::dns_resolver> dns;   // c-ares with a TTL cache, this worker's own
};

}  // namespace egressd::proxy
