// The SPEC section 5 destination deny list and the policy around it.
#include "egressd/acl/destination_policy.hpp"

#include <gtest/gtest.h>

#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace egressd::acl {
namespace {

address ip(std::string_view text) {
  auto a = parse_address(text);
  if (!a) throw std::invalid_argument("test address '" + std::string(text) + "'");
  return *a;
}

cidr_set prefixes(std::vector<std::string_view> texts) {
  cidr_set s;
  for (auto t : texts) {
    std::string error;
    auto c = cidr::parse(t, &error);
    if (!c) throw std::invalid_argument("test prefix '" + std::string(t) + "': " + error);
    s.add(*c);
  }
  return s;
}

// SPEC section 5's list, in its order, plus 64:ff9b:1::/48 and ::/96 (README, "Choices").
TEST(AclSpecialRanges, ExactlyTheListInOrder) {
  struct expected_range {
    std::string_view text;
    std::string_view name;
    bool v4;
  };
  const std::vector<expected_range> expected = {
      {"0.0.0.0/8", "this_network", true},
      {"10.0.0.0/8", "private", true},
      {"100.64.0.0/10", "shared_cgnat", true},
      {"127.0.0.0/8", "loopback", true},
      {"169.254.0.0/16", "link_local", true},
      {"172.16.0.0/12", "private", true},
      {"192.0.0.0/24", "ietf_protocol", true},
      {"192.0.2.0/24", "documentation", true},
      {"192.168.0.0/16", "private", true},
      {"198.18.0.0/15", "benchmarking", true},
      {"198.51.100.0/24", "documentation", true},
      {"203.0.113.0/24", "documentation", true},
      {"224.0.0.0/4", "multicast", true},
      {"240.0.0.0/4", "reserved", true},
      {"::/128", "unspecified", false},
      {"::1/128", "loopback", false},
      {"::ffff:0.0.0.0/96", "ipv4_mapped", false},
      {"64:ff9b::/96", "nat64", false},
      {"64:ff9b:1::/48", "nat64", false},
      {"::/96", "ipv4_compatible", false},
      {"100::/64", "discard", false},
      {"2001::/32", "teredo", false},
      {"2001:db8::/32", "documentation", false},
      {"2002::/16", "6to4", false},
      {"fc00::/7", "unique_local", false},
      {"fe80::/10", "link_local", false},
      {"ff00::/8", "multicast", false},
  };
  const auto& actual = special_ranges();
  ASSERT_EQ(actual.size(), expected.size());
  for (std::size_t i = 0; i < expected.size(); ++i) {
    SCOPED_TRACE(expected[i].text);
    EXPECT_EQ(actual[i].range.to_string(), expected[i].text);
    EXPECT_EQ(actual[i].range.is_v4(), expected[i].v4);
    EXPECT_EQ(actual[i].name, expected[i].name);
  }
  // The same object every time: check() walks it on every connection.
  EXPECT_EQ(&special_ranges(), &actual);
}

TEST(AclSpecialRanges, MappedEntryIsNotEverything) {
  // Parsed through the un-mapping rule this entry would be 0.0.0.0/0 and deny all of IPv4.
  const auto& ranges = special_ranges();
  for (const auto& r : ranges) {
    SCOPED_TRACE(r.range.to_string());
    EXPECT_GT(r.range.prefix_length(), 0u);
  }
  EXPECT_EQ(ranges[16].range.prefix_length(), 96u);
  EXPECT_FALSE(ranges[16].range.contains(ip("8.8.8.8")));
  EXPECT_FALSE(ranges[16].range.contains(ip("::ffff:8.8.8.8")));
}

struct check_case {
  std::string_view addr;
  bool allowed;
  std::string_view reason;
};

void expect_verdicts(const destination_policy& p, const std::vector<check_case>& cases) {
  for (const auto& c : cases) {
    SCOPED_TRACE(c.addr);
    const destination_verdict v = p.check(ip(c.addr));
    EXPECT_EQ(v.allowed, c.allowed);
    EXPECT_EQ(v.reason, c.reason);
  }
}

TEST(AclDestinationPolicy, DefaultDeniesSpecialRanges) {
  const destination_policy p;
  expect_verdicts(p, {
                         {"0.0.0.0", false, "this_network"},
                         {"0.1.2.3", false, "this_network"},
                         {"1.0.0.0", true, ""},
                         {"10.1.2.3", false, "private"},
                         {"100.64.0.1", false, "shared_cgnat"},
                         {"100.127.255.255", false, "shared_cgnat"},
                         {"100.128.0.0", true, ""},
                         {"127.0.0.1", false, "loopback"},
                         {"127.255.255.254", false, "loopback"},
                         {"169.254.169.254", false, "link_local"},
                         {"169.254.170.2", false, "link_local"},
                         {"172.16.0.1", false, "private"},
                         {"172.31.255.255", false, "private"},
                         {"172.32.0.0", true, ""},
                         {"192.0.0.8", false, "ietf_protocol"},
                         {"192.0.2.1", false, "documentation"},
                         {"192.168.1.1", false, "private"},
                         {"198.18.0.1", false, "benchmarking"},
                         {"198.19.255.255", false, "benchmarking"},
                         {"198.20.0.0", true, ""},
                         {"198.51.100.7", false, "documentation"},
                         {"203.0.113.9", false, "documentation"},
                         {"224.0.0.1", false, "multicast"},
                         {"239.255.255.255", false, "multicast"},
                         {"240.0.0.1", false, "reserved"},
                         {"255.255.255.255", false, "reserved"},
                         {"8.8.8.8", true, ""},
                         {"1.1.1.1", true, ""},
                         {"93.184.216.34", true, ""},
                         {"::", false, "unspecified"},
                         {"::1", false, "loopback"},
                         {"64:ff9b::a9fe:a9fe", false, "nat64"},
                         {"64:ff9b::808:808", false, "nat64"},
                         {"64:ff9b:1::a9fe:a9fe", false, "nat64"},
                         {"64:ff9b:1:ffff::1", false, "nat64"},
                         {"64:ff9b:2::1", true, ""},
                         {"::a9fe:a9fe", false, "ipv4_compatible"},
                         {"::8.8.8.8", false, "ipv4_compatible"},
                         {"::1:0:0:0", true, ""},
                         {"100::1", false, "discard"},
                         {"100:0:0:1::", true, ""},
                         {"2001::1", false, "teredo"},
                         {"2001:0:ffff::1", false, "teredo"},
                         {"2001:db8::1", false, "documentation"},
                         {"2002::1", false, "6to4"},
                         {"2002:a9fe:a9fe::", false, "6to4"},
                         {"fc00::1", false, "unique_local"},
                         {"fd12:3456::1", false, "unique_local"},
                         {"fe80::1", false, "link_local"},
                         {"febf::1", false, "link_local"},
                         {"ff02::1", false, "multicast"},
                         {"2606:4700:4700::1111", true, ""},
                         {"2a00:1450::1", true, ""},
                         // Mapped forms are judged as the IPv4 address they carry.
                         {"::ffff:169.254.169.254", false, "link_local"},
                         {"::ffff:127.0.0.1", false, "loopback"},
                         {"::ffff:10.0.0.1", false, "private"},
                         {"::ffff:0.0.0.0", false, "this_network"},
                         {"::ffff:8.8.8.8", true, ""},
                     });
}

TEST(AclDestinationPolicy, SpecialListCanBeSwitchedOff) {
  const destination_policy p(false, {}, prefixes({"8.8.8.0/24"}));
  expect_verdicts(p, {
                         {"10.1.2.3", true, ""},
                         {"169.254.169.254", true, ""},
                         {"::1", true, ""},
                         {"::ffff:127.0.0.1", true, ""},
                         {"8.8.8.8", false, "denied_by_config"},
                         {"::ffff:8.8.8.8", false, "denied_by_config"},
                         {"8.8.4.4", true, ""},
                     });
}

TEST(AclDestinationPolicy, AllowLiftsSpecialOnly) {
  const destination_policy p(true, prefixes({"10.1.0.0/16", "fd00:1::/32", "127.0.0.0/8"}),
                             prefixes({"10.1.9.0/24", "127.0.0.53"}));
  expect_verdicts(p, {
                         {"10.1.2.3", true, ""},
                         {"::ffff:10.1.2.3", true, ""},
                         {"10.2.0.1", false, "private"},
                         {"fd00:1::5", true, ""},
                         {"fd00:2::5", false, "unique_local"},
                         {"127.0.0.1", true, ""},
                         // An allow exception never lifts an extra deny.
                         {"10.1.9.9", false, "denied_by_config"},
                         {"::ffff:10.1.9.9", false, "denied_by_config"},
                         {"127.0.0.53", false, "denied_by_config"},
                         {"169.254.169.254", false, "link_local"},
                         {"8.8.8.8", true, ""},
                     });
}

TEST(AclDestinationPolicy, ExtraDenyReportedBeforeSpecialName) {
  const destination_policy p(true, {},
                             prefixes({"127.0.0.0/8", "203.0.113.0/24", "2001:4860::/32"}));
  expect_verdicts(p, {
                         {"127.0.0.1", false, "denied_by_config"},
                         {"203.0.113.5", false, "denied_by_config"},
                         {"2001:4860::8888", false, "denied_by_config"},
                         {"10.0.0.1", false, "private"},
                         {"2001:4861::1", true, ""},
                     });
}

}  // namespace
}  // namespace egressd::acl
