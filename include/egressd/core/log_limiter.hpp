#pragma once
// Rate limit for log lines that repeat under a fault (accept failures, an unreachable origin, a
// DNS outage): at most one line per interval gets through, and it says how many were held back
// since the previous one, so nothing is lost but the flood. Thread-safe and lock-free.
#include <atomic>
#include <chrono>
#include <cstdint>
#include <limits>

namespace egressd {

class log_limiter {
 public:
  using clock = std::chrono::steady_clock;

  explicit log_limiter(clock::duration interval = std::chrono::seconds(1)) noexcept
      : interval_(interval.count()) {}

  // True when a line may be written now; *suppressed is then the number of lines refused since
  // the last one allowed (0 otherwise).
  bool allow(std::uint64_t* suppressed, clock::time_point now = clock::now()) noexcept {
    const auto t = now.time_since_epoch().count();
    auto next = next_.load(std::memory_order_relaxed);
    if (t >= next && next_.compare_exchange_strong(next, t + interval_)) {
      *suppressed = held_.exchange(0, std::memory_order_relaxed);
      return true;
    }
    held_.fetch_add(1, std::memory_order_relaxed);
    *suppressed = 0;
    return false;
  }

 private:
  clock::rep interval_;
  std::atomic<clock::rep> next_{std::numeric_limits<clock::rep>::min()};
  std::atomic<std::uint64_t> held_{0};
};

}  // namespace egressd
