#include "egressd/relay/splice_pump.hpp"

#include <fcntl.h>

#include <algorithm>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <cerrno>

namespace egressd::relay {

namespace asio = boost::asio;
using asio::ip::tcp;

namespace {

boost::system::error_code errno_code() {
  return {errno, boost::system::system_category()};
}

// Writes the in_pipe bytes held in pipe to `to`, waiting for writability when its buffer is
// full; each byte written is counted in state.bytes and in *moved when given. Returns false on
// an error (state.failed, state.write_failed and state.ec set); in_pipe then still counts the
// bytes left in the pipe, so the caller closes it rather than pooling it.
asio::awaitable<bool> drain_pipe(const pipe_fds& pipe, tcp::socket& to, std::size_t& in_pipe,
                                 pump_state& state, std::uint64_t* moved) {
  constexpr auto token = asio::as_tuple(asio::use_awaitable);
  while (in_pipe > 0) {
    ssize_t m = ::splice(pipe.read_fd, nullptr, to.native_handle(), nullptr, in_pipe,
                         SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
    if (m > 0) {
      in_pipe -= static_cast<std::size_t>(m);
      state.bytes += static_cast<std::uint64_t>(m);
      if (moved != nullptr) *moved += static_cast<std::uint64_t>(m);
      continue;
    }
    if (m < 0 && (errno == EAGAIN || errno == EINTR)) {
      auto [wec] = co_await to.async_wait(tcp::socket::wait_write, token);
      if (!wec && to.is_open()) continue;
      state.ec = wec ? wec : asio::error::operation_aborted;
    } else {
      state.ec = m == 0 ? asio::error::broken_pipe : errno_code();
    }
    state.failed = true;
    state.write_failed = true;
    co_return false;
  }
  co_return true;
}

}  // namespace

asio::awaitable<std::uint64_t> splice_exact(tcp::socket& from, tcp::socket& to, pipe_pool& pool,
                                            std::uint64_t n, pump_state& state,
                                            std::chrono::steady_clock::time_point& last_activity) {
  constexpr auto token = asio::as_tuple(asio::use_awaitable);
  constexpr unsigned flags = SPLICE_F_MOVE | SPLICE_F_NONBLOCK;
  pipe_fds pipe = pool.acquire();
  if (!pipe) {
    state.fell_back = true;
    co_return 0;
  }
  boost::system::error_code ec;
  if (!from.native_non_blocking()) from.native_non_blocking(true, ec);
  if (!to.native_non_blocking()) to.native_non_blocking(true, ec);
  std::uint64_t moved = 0;
  std::size_t in_pipe = 0;
  while (moved < n) {
    // The pipe is empty here; never ask for more than the body has left, so the bytes of a
    // following message stay in the socket.
    std::size_t want =
        static_cast<std::size_t>(std::min<std::uint64_t>(pool.pipe_size(), n - moved));
    ssize_t r = ::splice(from.native_handle(), nullptr, pipe.write_fd, nullptr, want, flags);
    if (r == 0) {
      state.eof = true;
      break;
    }
    if (r < 0) {
      if (errno == EAGAIN || errno == EINTR) {
        auto [wec] = co_await from.async_wait(tcp::socket::wait_read, token);
        if (!wec && from.is_open()) continue;
        state.ec = wec ? wec : asio::error::operation_aborted;
      } else {
        state.ec = errno_code();
      }
      state.failed = true;
      break;
    }
    in_pipe = static_cast<std::size_t>(r);
    last_activity = std::chrono::steady_clock::now();
    if (!co_await drain_pipe(pipe, to, in_pipe, state, &moved)) break;
    last_activity = std::chrono::steady_clock::now();
  }
  pool.release(pipe, in_pipe);
  co_return moved;
}

}  // namespace egressd::relay
