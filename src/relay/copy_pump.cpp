#include "egressd/relay/copy_pump.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/buffer.hpp>
#include <boost/asio/error.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>

namespace egressd::relay {

namespace asio = boost::asio;
using asio::ip::tcp;

namespace {

void close_both(tcp::socket& a, tcp::socket& b) {
  boost::system::error_code ignored;
  a.close(ignored);
  b.close(ignored);
}

}  // namespace

asio::awaitable<void> copy_pump(tcp::socket& from, tcp::socket& to, std::span<char> buffer,
                                pump_state& state,
                                std::chrono::steady_clock::time_point& last_activity) {
  constexpr auto token = asio::as_tuple(asio::use_awaitable);
  for (;;) {
    auto [rec, n] =
        co_await from.async_read_some(asio::buffer(buffer.data(), buffer.size()), token);
    if (rec == asio::error::eof) {
      // The peer finished sending: pass the FIN on and let the other direction run on.
      boost::system::error_code ignored;
      to.shutdown(tcp::socket::shutdown_send, ignored);
      state.eof = true;
      co_return;
    }
    if (rec) {
      state.failed = true;
      state.ec = rec;
      close_both(from, to);
      co_return;
    }
    last_activity = std::chrono::steady_clock::now();
    auto [wec, written] = co_await asio::async_write(to, asio::buffer(buffer.data(), n), token);
    state.bytes += written;
    if (wec) {
      state.failed = true;
      state.ec = wec;
      close_both(from, to);
      co_return;
    }
    last_activity = std::chrono::steady_clock::now();
  }
}

}  // namespace egressd::relay
