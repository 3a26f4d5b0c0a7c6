#pragma once
// Per-worker pool of idle upstream connections for plain HTTP (no lock: one worker, one thread).
// Keyed by (checked address, port, host, egress address): a connection is only ever reused for
// the same destination address the policy checked, from the same egress IP, for the same Host.
#include <boost/asio/ip/tcp.hpp>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace egressd::metrics {
class stats;
enum class pool_close_reason : std::uint8_t;
}  // namespace egressd::metrics

namespace egressd::proxy {

struct upstream_key {
  boost::asio::ip::address address;
  std::uint16_t port = 0;
  std::string host;
  std::optional<boost::asio::ip::address> bind;
  friend bool operator==(const upstream_key&, const upstream_key&) = default;
};

class upstream_pool {
 public:
  using clock = std::chrono::steady_clock;
  upstream_pool(std::size_t max_idle = 256, std::size_t max_per_key = 128,
                clock::duration idle_timeout = std::chrono::seconds(30))
      : max_idle_(max_idle), max_per_key_(max_per_key), idle_timeout_(idle_timeout) {}

  void configure(std::size_t max_idle, std::size_t max_per_key, clock::duration idle_timeout);
  // Where connections closed unused are counted (egressd_upstream_pool_closes_total); null: not.
  void set_stats(metrics::stats* stats) noexcept { stats_ = stats; }

  struct pooled {
    boost::asio::ip::tcp::socket socket;
    std::string egress_addr;  // its local address, kept so reuse costs no getsockname()
  };

  // An idle connection for key, or nullopt. Expired entries met on the way are closed. With
  // check_alive, a connection the server closed (or that has unsolicited bytes waiting) is
  // dropped first, at the cost of one recv(MSG_PEEK); callers that can retry a stale connection
  // safely (idempotent, bodiless requests) skip the check.
  std::optional<pooled> take(const upstream_key& key, bool check_alive);

  // Parks s for reuse. The caller guarantees the previous response was complete and nothing
  // else was read from s. Over a limit, the oldest entry is closed.
  void put(const upstream_key& key, boost::asio::ip::tcp::socket s, std::string egress_addr);

  // Closes entries past the idle timeout and those the server closed (or wrote to): one
  // recv(MSG_PEEK) each. The worker calls it every second, so an idle worker does not keep
  // connections in CLOSE_WAIT until its next plain-HTTP request.
  void sweep();

  std::size_t size() const noexcept { return entries_.size(); }
  void clear();

 private:
  struct entry {
    upstream_key key;
    boost::asio::ip::tcp::socket socket;
    std::string egress_addr;
    clock::time_point since;
  };
  static bool alive(boost::asio::ip::tcp::socket& s) noexcept;
  void expire(clock::time_point now);
  void closed(metrics::pool_close_reason why) noexcept;

  std::vector<entry> entries_;  // oldest first
  std::size_t max_idle_;
  std::size_t max_per_key_;
  clock::duration idle_timeout_;
  metrics::stats* stats_ = nullptr;
};

}  // namespace egressd::proxy
