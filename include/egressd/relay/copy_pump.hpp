#pragma once
// Buffered copy relay for one direction of a tunnel. Moves bytes, never reads them.
#include <boost/asio/awaitable.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <chrono>
#include <cstdint>
#include <span>

namespace egressd::relay {

struct pump_state {
  std::uint64_t bytes = 0;       // bytes written to `to`
  bool eof = false;              // `from` ended cleanly and `to` was shut down for sending
  bool failed = false;           // a read or write error ended the pump (both sockets closed)
  boost::system::error_code ec;  // the error, when failed
  bool fell_back = false;        // (splice_pump) continued with a copy: no pipe or no splice
  bool write_failed = false;     // (splice pumps) the error was on the `to` side
};

// Copies from -> to until `from` ends (then shuts down `to` for sending, so the half-close
// reaches the other peer while the opposite direction keeps flowing) or until an error (then
// closes both sockets so that the opposite pump ends too). Each completed transfer stores the
// time in last_activity, which the session's idle watchdog reads.
boost::asio::awaitable<void> copy_pump(boost::asio::ip::tcp::socket& from,
                                       boost::asio::ip::tcp::socket& to, std::span<char> buffer,
                                       pump_state& state,
                                       std::chrono::steady_clock::time_point& last_activity);

}  // namespace egressd::relay
