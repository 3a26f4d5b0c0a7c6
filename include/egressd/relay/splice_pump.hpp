#pragma once
// Zero-copy relay for one direction of a tunnel: socket -> pipe -> socket with splice(2), so the
// payload never enters user space. Same contract as copy_pump (half-close, error closes both).
#include <boost/asio/awaitable.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <chrono>
#include <span>

#include "egressd/relay/copy_pump.hpp"
#include "egressd/relay/pipe_pool.hpp"

namespace egressd::relay {

// Borrows a pipe from pool while bytes flow and returns it (empty) when the source has nothing
// more to read for now. When no pipe can be had or the kernel refuses splice for these sockets,
// the pump falls back to copy_pump through a buffer of copy_buffer_size bytes (allocated only
// then, so a spliced tunnel holds no user-space buffer) and sets state.fell_back.
boost::asio::awaitable<void> splice_pump(boost::asio::ip::tcp::socket& from,
                                         boost::asio::ip::tcp::socket& to, pipe_pool& pool,
                                         std::size_t copy_buffer_size, pump_state& state,
                                         std::chrono::steady_clock::time_point& last_activity);

// Moves exactly n bytes from -> to through one borrowed pipe (an HTTP body of known length), and
// returns how many were moved. Stops early when `from` ends (state.eof) or on an error
// (state.failed; the sockets are left open for the caller to decide). When no pipe can be had it
// moves nothing and sets state.fell_back, and the caller copies instead.
boost::asio::awaitable<std::uint64_t> splice_exact(
    boost::asio::ip::tcp::socket& from, boost::asio::ip::tcp::socket& to, pipe_pool& pool,
    std::uint64_t n, pump_state& state, std::chrono::steady_clock::time_point& last_activity);

}  // namespace egressd::relay
