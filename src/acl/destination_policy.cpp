#include "egressd/acl/destination_policy.hpp"

#include <stdexcept>
#include <string>

namespace egressd::acl {
namespace {

cidr must_parse(std::string_view text) {
  std::string error;
  auto c = cidr::parse(text, &error);
  // The table below is fixed text; a failure here is a bug in this file, not bad input.
  if (!c) throw std::logic_error("special range '" + std::string(text) + "': " + error);
  return *c;
}

std::vector<special_range> build_special_ranges() {
  using boost::asio::ip::address_v6;
  // Built without parse(): un-mapping would turn it into 0.0.0.0/0. check() never sees a mapped
  // address, so this entry only guards callers that skip un-mapping.
  const auto mapped = cidr::from_address(
      address(address_v6({0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0, 0, 0, 0})), 96);
  if (!mapped) throw std::logic_error("special range ::ffff:0:0/96");
  return {
      {must_parse("0.0.0.0/8"), "this_network"},
      {must_parse("10.0.0.0/8"), "private"},
      {must_parse("100.64.0.0/10"), "shared_cgnat"},
      {must_parse("127.0.0.0/8"), "loopback"},
      // Cloud metadata lives here: 169.254.169.254 (AWS, GCP, Azure) and 169.254.170.2 (ECS).
      {must_parse("169.254.0.0/16"), "link_local"},
      {must_parse("172.16.0.0/12"), "private"},
      {must_parse("192.0.0.0/24"), "ietf_protocol"},
      {must_parse("192.0.2.0/24"), "documentation"},
      {must_parse("192.168.0.0/16"), "private"},
      {must_parse("198.18.0.0/15"), "benchmarking"},
      {must_parse("198.51.100.0/24"), "documentation"},
      {must_parse("203.0.113.0/24"), "documentation"},
      {must_parse("224.0.0.0/4"), "multicast"},
      {must_parse("240.0.0.0/4"), "reserved"},
      {must_parse("::/128"), "unspecified"},
      {must_parse("::1/128"), "loopback"},
      {*mapped, "ipv4_mapped"},
      // NAT64, Teredo and 6to4 embed an IPv4 address a gateway would reach on our behalf
      // (64:ff9b::a9fe:a9fe is 169.254.169.254), so they are denied whole.
      {must_parse("64:ff9b::/96"), "nat64"},
      // Beyond the SPEC list: the local-use NAT64 prefix (RFC 8215), and IPv4-compatible
      // addresses (::a.b.c.d, deprecated by RFC 4291; a host with a sit tunnel would still carry
      // them to the IPv4 address).
      {must_parse("64:ff9b:1::/48"), "nat64"},
      {must_parse("::/96"), "ipv4_compatible"},
      {must_parse("100::/64"), "discard"},
      {must_parse("2001::/32"), "teredo"},
      {must_parse("2001:db8::/32"), "documentation"},
      {must_parse("2002::/16"), "6to4"},
      {must_parse("fc00::/7"), "unique_local"},
      {must_parse("fe80::/10"), "link_local"},
      {must_parse("ff00::/8"), "multicast"},
  };
}

}  // namespace

const std::vector<special_range>& special_ranges() {
  static const std::vector<special_range> ranges = build_special_ranges();
  return ranges;
}

destination_verdict destination_policy::check(const address& a) const noexcept {
  const address u = unmap(a);
  if (deny_.contains(u)) return {false, "denied_by_config"};
  if (allow_.contains(u)) return {true, {}};
  if (deny_special_) {
    for (const auto& s : special_ranges()) {
      if (s.range.contains(u)) return {false, s.name};
    }
  }
  return {true, {}};
}

}  // namespace egressd::acl
