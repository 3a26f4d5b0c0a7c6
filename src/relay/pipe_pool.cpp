#include "egressd/relay/pipe_pool.hpp"

#include <fcntl.h>
#include <unistd.h>

namespace egressd::relay {

pipe_pool::pipe_pool(pipe_budget& budget, std::size_t requested_size, std::size_t max_idle)
    : budget_(budget), requested_size_(requested_size), max_idle_(max_idle) {}

pipe_pool::~pipe_pool() {
  for (auto p : idle_) destroy(p);
}

void pipe_pool::destroy(pipe_fds p) noexcept {
  ::close(p.read_fd);
  ::close(p.write_fd);
  budget_.open.fetch_sub(1, std::memory_order_relaxed);
}

pipe_fds pipe_pool::acquire() noexcept {
  if (!idle_.empty()) {
    auto p = idle_.back();
    idle_.pop_back();
    return p;
  }
  // Reserve a slot under the global cap before creating, so concurrent workers cannot overshoot.
  auto n = budget_.open.fetch_add(1, std::memory_order_relaxed);
  if (n >= budget_.max) {
    budget_.open.fetch_sub(1, std::memory_order_relaxed);
    budget_.failures.fetch_add(1, std::memory_order_relaxed);
    return {};
  }
  int fds[2];
  if (::pipe2(fds, O_NONBLOCK | O_CLOEXEC) != 0) {
    budget_.open.fetch_sub(1, std::memory_order_relaxed);
    budget_.failures.fetch_add(1, std::memory_order_relaxed);
    return {};
  }
  if (requested_size_ > 0) {
    // May fail (EPERM over /proc/sys/fs/pipe-max-size for non-root, or over the user's pipe
    // pages); the pipe keeps its default size then, which is still correct.
    ::fcntl(fds[1], F_SETPIPE_SZ, static_cast<int>(requested_size_));
  }
  int granted = ::fcntl(fds[1], F_GETPIPE_SZ);
  if (granted > 0) pipe_size_ = static_cast<std::size_t>(granted);
  return {fds[0], fds[1]};
}

void pipe_pool::release(pipe_fds p, std::size_t bytes_inside) noexcept {
  if (!p) return;
  if (bytes_inside != 0 || idle_.size() >= max_idle_) {
    destroy(p);
    return;
  }
  idle_.push_back(p);
}

}  // namespace egressd::relay
