#pragma once
// Small socket helpers whose errno handling we want in one place.
#include <boost/asio/ip/tcp.hpp>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace egressd::net {

using tcp = boost::asio::ip::tcp;

// Disables Nagle: a relay must not add delay to small writes it passes on.
void set_nodelay(tcp::socket& s) noexcept;

// Opens s for the family of dest and, when bind is set, binds it to (bind, 0) with
// IP_BIND_ADDRESS_NO_PORT so the ephemeral port is chosen at connect time (per 4-tuple), which
// keeps a fixed egress address from running out of ports under load.
boost::system::error_code open_for(tcp::socket& s, const tcp::endpoint& dest,
                                   const boost::asio::ip::address* bind) noexcept;

// Starts a non-blocking connect of the open socket s: returns success when it connected at once,
// error::in_progress when the caller must wait for writability and then ask connect_result().
// Asio's async_connect does the same plus a poll() after the wakeup; this saves that syscall.
boost::system::error_code start_connect(tcp::socket& s, const tcp::endpoint& dest) noexcept;

// The outcome of a connect started by start_connect, once s is writable (SO_ERROR).
boost::system::error_code connect_result(tcp::socket& s) noexcept;

// Closes s so that the peer sees a reset rather than a clean end (SO_LINGER 0): used when a
// relayed body is cut short, so the client cannot mistake a truncated message for a whole one.
void abort_close(tcp::socket& s) noexcept;

// TCP keepalive probes after this much idle time: below the 350 s idle timeout of AWS NAT
// gateways and NLBs, so a quiet tunnel keeps its NAT mapping and load balancer flow. Applied to
// upstream sockets, and to listeners (accepted sockets inherit it from them).
inline constexpr int keepalive_idle_seconds = 240;
void set_keepalive(int fd) noexcept;

// Raises RLIMIT_NOFILE's soft limit to the hard limit; returns the new soft limit.
std::uint64_t raise_nofile_limit() noexcept;

// Addresses of this host's interfaces (getifaddrs), un-mapped; used to expand a wildcard
// listener into the set of addresses a loop could reach us on.
std::vector<boost::asio::ip::address> local_addresses();

// The address as text, as address::to_string writes it; IPv4 without inet_ntop, whose sprintf
// cost about 1,700 instructions per call (three calls per new connection: client, upstream and
// egress address).
std::string to_string(const boost::asio::ip::address& a);

// "1.2.3.4:80" / "[::1]:80" (v4-mapped addresses un-mapped)
std::string to_string(const tcp::endpoint& ep);

}  // namespace egressd::net
