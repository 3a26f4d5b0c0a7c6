#include "egressd/proxy/upstream_pool.hpp"

#include <sys/socket.h>

#include <algorithm>
#include <cerrno>

#include "egressd/metrics/stats.hpp"

namespace egressd::proxy {

void upstream_pool::configure(std::size_t max_idle, std::size_t max_per_key,
                              clock::duration idle_timeout) {
  max_idle_ = max_idle;
  max_per_key_ = max_per_key;
  idle_timeout_ = idle_timeout;
  while (entries_.size() > max_idle_) {
    entries_.erase(entries_.begin());
    closed(metrics::pool_close_reason::pool_limit);
  }
}

void upstream_pool::closed(metrics::pool_close_reason why) noexcept {
  if (stats_ != nullptr) stats_->upstream_pool_closes(why).Increment();
}

// An idle HTTP/1.1 connection must have nothing to read: a 0 means the server closed it, bytes
// mean it sent something unsolicited (e.g. a 408) and its framing can no longer be trusted.
bool upstream_pool::alive(boost::asio::ip::tcp::socket& s) noexcept {
  char b;
  ssize_t n = ::recv(s.native_handle(), &b, 1, MSG_PEEK | MSG_DONTWAIT);
  return n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK);
}

// Entries are appended as they are parked, so the expired ones are a prefix: a request pays
// for the entries that expired, not for a scan of the pool.
void upstream_pool::expire(clock::time_point now) {
  auto live = std::find_if(entries_.begin(), entries_.end(),
                           [&](const entry& e) { return now - e.since < idle_timeout_; });
  for (auto n = live - entries_.begin(); n > 0; --n) closed(metrics::pool_close_reason::expired);
  entries_.erase(entries_.begin(), live);
}

std::optional<upstream_pool::pooled> upstream_pool::take(const upstream_key& key,
                                                         bool check_alive) {
  auto now = clock::now();
  expire(now);
  // Newest first: the most recently used connection is the least likely to have been closed.
  for (auto i = entries_.size(); i-- > 0;) {
    if (!(entries_[i].key == key)) continue;
    pooled p{std::move(entries_[i].socket), std::move(entries_[i].egress_addr)};
    entries_.erase(entries_.begin() + static_cast<std::ptrdiff_t>(i));
    if (!check_alive || alive(p.socket)) return p;
    closed(metrics::pool_close_reason::stale);
  }
  return std::nullopt;
}

void upstream_pool::put(const upstream_key& key, boost::asio::ip::tcp::socket s,
                        std::string egress_addr) {
  if (max_idle_ == 0 || !s.is_open()) return;
  auto now = clock::now();
  expire(now);
  std::size_t same = 0;
  for (const auto& e : entries_) same += e.key == key ? 1 : 0;
  if (same >= max_per_key_) {
    for (auto it = entries_.begin(); it != entries_.end(); ++it) {
      if (it->key == key) {
        entries_.erase(it);
        closed(metrics::pool_close_reason::host_limit);
        break;
      }
    }
  }
  if (entries_.size() >= max_idle_) {
    entries_.erase(entries_.begin());
    closed(metrics::pool_close_reason::pool_limit);
  }
  entries_.push_back({key, std::move(s), std::move(egress_addr), now});
}

void upstream_pool::sweep() {
  if (entries_.empty()) return;
  expire(clock::now());
  auto n = std::erase_if(entries_, [](entry& e) { return !alive(e.socket); });
  for (; n > 0; --n) closed(metrics::pool_close_reason::stale);
}

void upstream_pool::clear() {
  entries_.clear();
}

}  // namespace egressd::proxy
