#pragma once
// The result of a name lookup (net::dns_resolver, dns.hpp); IP literals never reach a resolver.
#include <boost/asio/ip/address.hpp>
#include <string>
#include <vector>

#include "egressd/core/error.hpp"

namespace egressd::net {

struct resolve_outcome {
  proxy_error err = proxy_error::none;              // dns_error when the name has no usable address
  std::vector<boost::asio::ip::address> addresses;  // in resolver order, duplicates removed
  std::string detail;                               // resolver message for the log
};

}  // namespace egressd::net
