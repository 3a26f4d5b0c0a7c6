#pragma once
// Per-worker pool of kernel pipes for splice(2) relays (HAProxy's pipe.c is the model). A pipe is
// borrowed only while bytes flow, so an idle tunnel holds none; a pipe returned with bytes still
// inside is closed, never reused, so one tunnel's bytes can never leak into another's. A global
// cap across workers bounds the descriptors pipes take (two each).
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <vector>

namespace egressd::relay {

struct pipe_fds {
  int read_fd = -1;
  int write_fd = -1;
  explicit operator bool() const noexcept { return read_fd >= 0; }
};

// Counts shared by every worker's pool.
struct pipe_budget {
  explicit pipe_budget(std::size_t max_pipes) : max(max_pipes) {}
  const std::size_t max;
  std::atomic<std::size_t> open{0};        // pipes in existence (pooled or borrowed)
  std::atomic<std::uint64_t> failures{0};  // pipe2() failed or the cap was reached
};

class pipe_pool {
 public:
  // requested_size: F_SETPIPE_SZ target (0 keeps the kernel default). The size the kernel grants
  // is kept, as it may round up or refuse (pipe-user-pages limits).
  pipe_pool(pipe_budget& budget, std::size_t requested_size, std::size_t max_idle = 64);
  ~pipe_pool();
  pipe_pool(const pipe_pool&) = delete;
  pipe_pool& operator=(const pipe_pool&) = delete;

  // A pipe, or an empty pipe_fds when none can be had (cap reached, pipe2 failed): the caller
  // falls back to copying.
  pipe_fds acquire() noexcept;
  // Returns p; bytes_inside != 0 closes it instead of pooling it.
  void release(pipe_fds p, std::size_t bytes_inside) noexcept;

  std::size_t pipe_size() const noexcept { return pipe_size_; }
  std::size_t idle() const noexcept { return idle_.size(); }

 private:
  void destroy(pipe_fds p) noexcept;

  pipe_budget& budget_;
  std::size_t requested_size_;
  std::size_t pipe_size_ = 65536;
  std::size_t max_idle_;
  std::vector<pipe_fds> idle_;
};

}  // namespace egressd::relay
