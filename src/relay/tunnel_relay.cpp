#include "egressd/relay/tunnel_relay.hpp"

#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <boost/asio/bind_allocator.hpp>
#include <boost/asio/error.hpp>
#include <boost/asio/write.hpp>
#include <cerrno>
#include <utility>

namespace egressd::relay {

namespace asio = boost::asio;
using asio::ip::tcp;

namespace {

constexpr unsigned splice_flags = SPLICE_F_MOVE | SPLICE_F_NONBLOCK;

boost::system::error_code errno_code() {
  return {errno, boost::system::system_category()};
}

}  // namespace

// handler with its memory in d (see handler_memory).
template <typename Handler>
auto tunnel_relay::in_memory(direction& d, Handler&& handler) {
  return asio::bind_allocator(handler_allocator<char>(d.memory), std::forward<Handler>(handler));
}

tunnel_relay::tunnel_relay(tcp::socket& client, tcp::socket& upstream, pipe_pool* pool,
                           std::size_t copy_buffer_size, clock::time_point& last_activity)
    : dirs_{{client, upstream}, {upstream, client}},
      pool_(pool),
      copy_buffer_size_(copy_buffer_size),
      last_activity_(last_activity) {}

tunnel_relay::~tunnel_relay() {
  // Only when the io_context is destroyed with the relay mid-transfer (shutdown): the pool may
  // already be gone, so a borrowed pipe is closed here rather than given back.
  for (auto& d : dirs_) {
    if (d.pipe) {
      ::close(d.pipe.read_fd);
      ::close(d.pipe.write_fd);
    }
  }
}

void tunnel_relay::start(keep_alive owner, std::function<void()> done) {
  done_ = std::move(done);
  if (pool_ == nullptr) {
    start_copy(dirs_[0], owner);
    start_copy(dirs_[1], std::move(owner));
    return;
  }
  // splice() is called on the raw descriptors; Asio only waits for readiness. SPLICE_F_NONBLOCK
  // covers the pipe end only: the sockets must be O_NONBLOCK themselves, which they are, since
  // Asio switched each to non-blocking mode for its first asynchronous operation (the request
  // read, the connect). Setting it again would cost an ioctl per socket per tunnel.
  boost::system::error_code ec;
  for (auto& d : dirs_) {
    if (!d.from.native_non_blocking()) d.from.native_non_blocking(true, ec);
  }
  wait_readable(dirs_[0], owner);
  wait_readable(dirs_[1], std::move(owner));
}

// Nothing in flight: wait until the source is readable before taking a pipe, so an idle tunnel
// holds none.
void tunnel_relay::wait_readable(direction& d, keep_alive keep) {
  d.from.async_wait(
      tcp::socket::wait_read,
      in_memory(d, [this, &d, keep = std::move(keep)](const boost::system::error_code& ec) mutable {
        on_readable(d, ec, std::move(keep));
      }));
}

void tunnel_relay::on_readable(direction& d, const boost::system::error_code& ec, keep_alive keep) {
  if (ec || !d.from.is_open()) {
    fail(d, ec ? ec : asio::error::operation_aborted);
    return;
  }
  d.pipe = pool_->acquire();
  if (!d.pipe) {
    d.state.fell_back = true;
    start_copy(d, std::move(keep));
    return;
  }
  splice_loop(d, std::move(keep));
}

void tunnel_relay::splice_loop(direction& d, keep_alive keep) {
  for (;;) {
    // The pipe is empty here: fill it from the socket.
    ssize_t n = ::splice(d.from.native_handle(), nullptr, d.pipe.write_fd, nullptr,
                         pool_->pipe_size(), splice_flags);
    if (n == 0) {
      give_back(d);
      boost::system::error_code ignored;
      d.to.shutdown(tcp::socket::shutdown_send, ignored);
      d.state.eof = true;
      finish(d);
      return;
    }
    if (n < 0) {
      if (errno == EAGAIN || errno == EINTR) {
        // The pipe is empty, so EAGAIN means the socket is drained (HAProxy's rule: with bytes
        // in the pipe it would mean "pipe full"). Return the pipe and wait for more.
        give_back(d);
        wait_readable(d, std::move(keep));
        return;
      }
      if (errno == EINVAL || errno == ENOSYS) {
        // This kernel or socket type cannot splice: copy instead, for the rest of the tunnel.
        give_back(d);
        d.state.fell_back = true;
        start_copy(d, std::move(keep));
        return;
      }
      fail(d, errno_code());
      return;
    }
    d.in_pipe = static_cast<std::size_t>(n);
    last_activity_ = clock::now();
    if (!drain(d, keep)) return;
    last_activity_ = clock::now();
    // Keep the (now empty) pipe and try the socket again at once: while data streams this
    // avoids a readiness round-trip per pipe-full.
  }
}

// Writes the bytes held in the pipe to `to`. Returns true once the pipe is empty; false when the
// direction waits for `to` to become writable (keep then moved into that wait) or has failed (the
// pipe, still holding bytes, is then closed rather than pooled).
bool tunnel_relay::drain(direction& d, keep_alive& keep) {
  while (d.in_pipe > 0) {
    ssize_t m =
        ::splice(d.pipe.read_fd, nullptr, d.to.native_handle(), nullptr, d.in_pipe, splice_flags);
    if (m > 0) {
      d.in_pipe -= static_cast<std::size_t>(m);
      d.state.bytes += static_cast<std::uint64_t>(m);
      continue;
    }
    if (m < 0 && (errno == EAGAIN || errno == EINTR)) {
      d.to.async_wait(tcp::socket::wait_write,
                      in_memory(d, [this, &d, keep = std::move(keep)](
                                       const boost::system::error_code& ec) mutable {
                        on_writable(d, ec, std::move(keep));
                      }));
      return false;
    }
    d.state.write_failed = true;
    fail(d, m == 0 ? asio::error::broken_pipe : errno_code());
    return false;
  }
  return true;
}

void tunnel_relay::on_writable(direction& d, const boost::system::error_code& ec, keep_alive keep) {
  if (ec || !d.to.is_open()) {
    d.state.write_failed = true;
    fail(d, ec ? ec : asio::error::operation_aborted);
    return;
  }
  if (!drain(d, keep)) return;
  last_activity_ = clock::now();
  splice_loop(d, std::move(keep));
}

void tunnel_relay::start_copy(direction& d, keep_alive keep) {
  d.buffer = std::make_unique_for_overwrite<char[]>(copy_buffer_size_);
  copy_read(d, std::move(keep));
}

void tunnel_relay::copy_read(direction& d, keep_alive keep) {
  d.from.async_read_some(
      asio::buffer(d.buffer.get(), copy_buffer_size_),
      in_memory(d, [this, &d, keep = std::move(keep)](const boost::system::error_code& ec,
                                                      std::size_t n) mutable {
        if (ec == asio::error::eof) {
          // The peer finished sending: pass the FIN on and let the other
          // direction run on.
          boost::system::error_code ignored;
          d.to.shutdown(tcp::socket::shutdown_send, ignored);
          d.state.eof = true;
          finish(d);
          return;
        }
        if (ec) {
          fail(d, ec);
          return;
        }
        last_activity_ = clock::now();
        copy_write(d, n, std::move(keep));
      }));
}

void tunnel_relay::copy_write(direction& d, std::size_t n, keep_alive keep) {
  asio::async_write(
      d.to, asio::buffer(d.buffer.get(), n),
      in_memory(d, [this, &d, keep = std::move(keep)](const boost::system::error_code& ec,
                                                      std::size_t written) mutable {
        d.state.bytes += written;
        if (ec) {
          d.state.write_failed = true;
          fail(d, ec);
          return;
        }
        last_activity_ = clock::now();
        copy_read(d, std::move(keep));
      }));
}

void tunnel_relay::give_back(direction& d) noexcept {
  pool_->release(d.pipe, d.in_pipe);
  d.pipe = {};
}

// An error ends this direction and closes both sockets, so that the opposite direction ends too.
void tunnel_relay::fail(direction& d, const boost::system::error_code& ec) {
  d.state.failed = true;
  d.state.ec = ec;
  if (d.pipe) give_back(d);  // still holding bytes: closed, never reused
  // A reset stays a reset: both peers see an RST, never a FIN that would make a cut stream look
  // finished.
  for (auto* s : {&d.from, &d.to}) {
    if (!s->is_open()) continue;
    const ::linger abort{1, 0};
    ::setsockopt(s->native_handle(), SOL_SOCKET, SO_LINGER, &abort, sizeof abort);
    boost::system::error_code ignored;
    s->close(ignored);
  }
  finish(d);
}

void tunnel_relay::finish(direction& d) {
  d.done = true;
  d.buffer.reset();
  if (dirs_[0].done && dirs_[1].done && done_) {
    auto done = std::move(done_);
    done_ = nullptr;
    done();
  }
}

}  // namespace egressd::relay
