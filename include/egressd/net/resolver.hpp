#pragma once
// Name resolution for upstream connections. getaddrinfo on Asio's resolver thread for now (the
// DNS issue replaces it with c-ares and a TTL cache); IP literals never reach it.
#include <boost/asio/awaitable.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <string>
#include <vector>

#include "egressd/core/error.hpp"

namespace egressd::net {

struct resolve_outcome {
  proxy_error err = proxy_error::none;              // dns_error when the name has no usable address
  std::vector<boost::asio::ip::address> addresses;  // in resolver order, duplicates removed
  std::string detail;                               // resolver message for the log
};

// Resolves host (a name, already validated by the target parser). The caller bounds the time
// and cancels r to give up; a cancelled lookup returns err == dns_timeout.
boost::asio::awaitable<resolve_outcome> resolve(boost::asio::ip::tcp::resolver& r,
                                                const std::string& host);

}  // namespace egressd::net
