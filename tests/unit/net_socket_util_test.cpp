// Address formatting: the hand-written IPv4 path must print exactly what Asio's to_string does.
#include <gtest/gtest.h>

#include <boost/asio/ip/address.hpp>

#include "egressd/net/socket_util.hpp"

namespace {

namespace asio = boost::asio;
using egressd::net::tcp;

TEST(AddressToString, MatchesAsio) {
  for (const char* text : {"0.0.0.0", "1.2.3.4", "9.10.99.100", "127.0.0.1", "192.168.255.254",
                           "255.255.255.255", "::", "::1", "2001:db8::42", "::ffff:10.1.2.3"}) {
    auto a = asio::ip::make_address(text);
    EXPECT_EQ(egressd::net::to_string(a), a.to_string()) << text;
  }
}

TEST(EndpointToString, BracketsV6AndUnmapsV4) {
  using egressd::net::to_string;
  EXPECT_EQ(to_string(tcp::endpoint(asio::ip::make_address("10.0.0.7"), 0)), "10.0.0.7:0");
  EXPECT_EQ(to_string(tcp::endpoint(asio::ip::make_address("1.2.3.4"), 65535)), "1.2.3.4:65535");
  EXPECT_EQ(to_string(tcp::endpoint(asio::ip::make_address("::1"), 443)), "[::1]:443");
  EXPECT_EQ(to_string(tcp::endpoint(asio::ip::make_address("::ffff:10.1.2.3"), 80)), "10.1.2.3:80");
}

}  // namespace
