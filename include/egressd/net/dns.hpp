#pragma once
// Asynchronous DNS on c-ares, one resolver per worker thread: lookups run on the worker's own
// event loop (no resolver thread, no locks), answers are cached for their TTL, failures for a
// short fixed time, and concurrent lookups of the same name share one query.
#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "egressd/net/resolver.hpp"

namespace egressd::net {

struct dns_options {
  // "IP", "IP:PORT" or "[IPv6]:PORT" (port 53 when omitted). Empty: the system's
  // /etc/resolv.conf (nameservers only; its search list is never applied, see dns_resolver).
  std::vector<std::string> servers;
  std::chrono::milliseconds timeout{5000};    // the whole lookup; then dns_timeout
  std::size_t cache_size = 10000;             // entries; 0: no cache (coalescing still applies)
  std::chrono::milliseconds min_ttl{1000};    // positive answers are cached for their TTL clamped
  std::chrono::milliseconds max_ttl{300000};  // to [min_ttl, max_ttl]; 0 after clamping: not cached
  std::chrono::milliseconds negative_ttl{5000};  // NXDOMAIN / no address; 0: not cached
  // The clock the cache reads, for tests; empty: std::chrono::steady_clock::now. The lookup
  // timeout always runs on real timers.
  std::function<std::chrono::steady_clock::time_point()> clock;
};

// Counters since construction. Every resolve() call is one of cache_hits, coalesced (joined a
// lookup already in flight) or cache_misses (started a lookup). failures and timeouts count
// lookups (not callers) that ended in dns_error or dns_timeout.
struct dns_stats {
  std::uint64_t queries = 0;
  std::uint64_t cache_hits = 0;
  std::uint64_t cache_misses = 0;
  std::uint64_t coalesced = 0;
  std::uint64_t failures = 0;
  std::uint64_t timeouts = 0;
};

// One per worker thread, used only from that thread (the thread running ex): not thread-safe,
// and it needs no locks. Names are looked up as absolute names: a proxy is handed fully
// qualified host names by its clients, so search domains from resolv.conf are never appended
// (that would send "example.com.corp.internal" upstream and could answer for another name).
// /etc/hosts is consulted too, in the order /etc/nsswitch.conf gives, as with getaddrinfo.
class dns_resolver {
 public:
  // Throws std::invalid_argument on a malformed server and std::runtime_error when c-ares cannot
  // start (unreadable resolv.conf, no memory): startup errors only.
  dns_resolver(boost::asio::any_io_executor ex, dns_options opt);
  ~dns_resolver();
  dns_resolver(const dns_resolver&) = delete;
  dns_resolver& operator=(const dns_resolver&) = delete;

  // A and AAAA records of host (a name validated by the target parser, never an IP literal):
  // IPv4 first, then IPv6, each in answer order, duplicates removed, IPv4-mapped IPv6 addresses
  // un-mapped. Nothing is filtered; the destination policy decides what is reachable.
  // err: none; dns_error for NXDOMAIN, no address, SERVFAIL, REFUSED, an unreachable server, or
  // "cancelled" (cancel_all(), or the resolver destroyed while waiting); dns_timeout when the
  // lookup took longer than the timeout, or when the caller cancelled the wait. Never throws,
  // and always completes: the timeout bounds every lookup.
  boost::asio::awaitable<resolve_outcome> resolve(std::string host);

  // Completes every lookup in flight with dns_error "cancelled". The cache is kept.
  void cancel_all();

  const dns_stats& stats() const noexcept;

 private:
  class impl;
  // Shared so that handlers queued on the executor can tell, through a weak_ptr, that the
  // resolver is gone; no one else holds it.
  std::shared_ptr<impl> impl_;
};

}  // namespace egressd::net
