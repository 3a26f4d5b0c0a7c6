#pragma once
// A point-in-time view of one client connection, for the admin status page.
#include <chrono>
#include <cstdint>
#include <string>

namespace egressd::proxy {

struct connection_status {
  std::uint64_t id = 0;
  std::string client;  // "ip:port" (the PROXY header's client when there was one)
  std::string method;  // of the current request; empty between requests
  std::string target;
  std::string state;  // idle, header, dns, connect, relay, response, tunnel, closing, done
  std::chrono::steady_clock::duration age{};  // since the connection was accepted
  std::uint64_t bytes_in = 0;                 // payload from the client, this request/tunnel
  std::uint64_t bytes_out = 0;                // payload to the client
};

}  // namespace egressd::proxy
