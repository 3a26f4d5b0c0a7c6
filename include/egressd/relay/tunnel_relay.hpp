#pragma once
// Both directions of a tunnel, client <-> upstream, until each has ended. Moves bytes, never reads
// them. Driven by completion handlers rather than coroutines: a tunnel may sit idle for hours, and
// idle it then holds two pending readiness waits and this object -- no coroutine frames, no
// parallel group, no per-direction co_spawn (measured: about 4 KB less per idle tunnel, and fewer
// instructions per new tunnel).
//
// Per direction (the contract the coroutine pumps had): until `from` ends, then `to` is shut down
// for sending, so the half-close reaches the other peer while the opposite direction keeps
// flowing; or until an error, then both sockets are closed so that the opposite direction ends
// too. Each transfer stores the time in last_activity, which the session's idle watchdog reads.
//
// With a pipe pool the payload goes socket -> pipe -> socket with splice(2) and never enters user
// space. A pipe is borrowed only while bytes flow, so an idle tunnel holds none; a pipe returned
// with bytes still inside is closed, never reused (pipe_pool). When no pipe can be had or the
// kernel refuses splice for these sockets, that direction copies through a buffer of
// copy_buffer_size bytes (allocated only then) and sets fell_back. Without a pool both directions
// copy from the start.
#include <boost/asio/ip/tcp.hpp>
#include <chrono>
#include <cstddef>
#include <functional>
#include <memory>
#include <new>

#include "egressd/relay/pipe_pool.hpp"
#include "egressd/relay/pump_state.hpp"

namespace egressd::relay {

class tunnel_relay {
 public:
  using clock = std::chrono::steady_clock;

  // The sockets, the pool and last_activity must outlive the relay. pool == nullptr: copy relay.
  tunnel_relay(boost::asio::ip::tcp::socket& client, boost::asio::ip::tcp::socket& upstream,
               pipe_pool* pool, std::size_t copy_buffer_size, clock::time_point& last_activity);
  ~tunnel_relay();
  tunnel_relay(const tunnel_relay&) = delete;
  tunnel_relay& operator=(const tunnel_relay&) = delete;

  // Starts both directions. Every pending operation holds `owner` (whatever owns the sockets and
  // this object), so it stays alive while the relay runs; done() is called once, from a handler,
  // when both directions have ended.
  void start(std::shared_ptr<void> owner, std::function<void()> done);

  bool splicing() const noexcept { return pool_ != nullptr; }
  const pump_state& up() const noexcept { return dirs_[0].state; }    // client -> upstream
  const pump_state& down() const noexcept { return dirs_[1].state; }  // upstream -> client

 private:
  // A direction has at most one operation pending at a time, so its handler's memory can live in
  // the direction rather than in Asio's per-thread cache (two blocks, fewer than a tunnel's two
  // waits plus the session's watchdog: a malloc per tunnel). Larger or overlapping requests go
  // to operator new. Asio frees an operation's memory before it runs the handler, so the next
  // operation started from the handler finds the block free again.
  struct handler_memory {
    alignas(std::max_align_t) unsigned char storage[256];
    bool in_use = false;
    void* allocate(std::size_t size) {
      if (!in_use && size <= sizeof storage) {
        in_use = true;
        return storage;
      }
      return ::operator new(size);
    }
    void deallocate(void* p) noexcept {
      if (p == storage) {
        in_use = false;
      } else {
        ::operator delete(p);
      }
    }
  };

 public:
  template <typename T>
  class handler_allocator {
   public:
    using value_type = T;
    explicit handler_allocator(handler_memory& m) noexcept : mem_(&m) {}
    template <typename U>
    handler_allocator(const handler_allocator<U>& other) noexcept : mem_(other.mem_) {}
    T* allocate(std::size_t n) { return static_cast<T*>(mem_->allocate(sizeof(T) * n)); }
    void deallocate(T* p, std::size_t) noexcept { mem_->deallocate(p); }
    friend bool operator==(const handler_allocator& a, const handler_allocator& b) noexcept {
      return a.mem_ == b.mem_;
    }

   private:
    template <typename>
    friend class handler_allocator;
    handler_memory* mem_;
  };

 private:
  struct direction {
    boost::asio::ip::tcp::socket& from;
    boost::asio::ip::tcp::socket& to;
    pump_state state;
    pipe_fds pipe;                   // borrowed while bytes flow
    std::size_t in_pipe = 0;         // bytes in the pipe, not yet written to `to`
    std::unique_ptr<char[]> buffer;  // copy mode only
    bool done = false;
    handler_memory memory;  // for the pending operation's handler
  };
  using keep_alive = std::shared_ptr<void>;
  template <typename Handler>
  static auto in_memory(direction& d, Handler&& handler);

  void wait_readable(direction& d, keep_alive keep);
  void on_readable(direction& d, const boost::system::error_code& ec, keep_alive keep);
  void splice_loop(direction& d, keep_alive keep);
  bool drain(direction& d, keep_alive& keep);
  void on_writable(direction& d, const boost::system::error_code& ec, keep_alive keep);
  void start_copy(direction& d, keep_alive keep);
  void copy_read(direction& d, keep_alive keep);
  void copy_write(direction& d, std::size_t n, keep_alive keep);
  void give_back(direction& d) noexcept;
  void fail(direction& d, const boost::system::error_code& ec);
  void finish(direction& d);

  direction dirs_[2];
  pipe_pool* pool_;
  std::size_t copy_buffer_size_;
  clock::time_point& last_activity_;
  std::function<void()> done_;
};

}  // namespace egressd::relay
