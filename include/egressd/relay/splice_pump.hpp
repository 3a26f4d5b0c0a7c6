#pragma once
// Zero-copy transfer of an HTTP body of known length: socket -> pipe -> socket with splice(2), so
// the payload never enters user space. (Tunnels use tunnel_relay.)
#include <boost/asio/awaitable.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <chrono>

#include "egressd/relay/pipe_pool.hpp"
#include "egressd/relay/pump_state.hpp"

namespace egressd::relay {

// Moves exactly n bytes from -> to through one borrowed pipe (an HTTP body of known length), and
// returns how many were moved. Stops early when `from` ends (state.eof) or on an error
// (state.failed; the sockets are left open for the caller to decide). When no pipe can be had it
// moves nothing and sets state.fell_back, and the caller copies instead.
boost::asio::awaitable<std::uint64_t> splice_exact(
    boost::asio::ip::tcp::socket& from, boost::asio::ip::tcp::socket& to, pipe_pool& pool,
    std::uint64_t n, pump_state& state, std::chrono::steady_clock::time_point& last_activity);

}  // namespace egressd::relay
