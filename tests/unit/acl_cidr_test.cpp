// Address literals, un-mapping, prefixes and prefix sets.
#include "egressd/acl/cidr.hpp"

#include <gtest/gtest.h>

#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace egressd::acl {
namespace {

using namespace std::string_view_literals;

address ip(std::string_view text) {
  auto a = parse_address(text);
  if (!a) throw std::invalid_argument("test address '" + std::string(text) + "'");
  return *a;
}

cidr prefix(std::string_view text) {
  std::string error;
  auto c = cidr::parse(text, &error);
  if (!c) throw std::invalid_argument("test prefix '" + std::string(text) + "': " + error);
  return *c;
}

TEST(AclParseAddress, Accepted) {
  struct ok_case {
    std::string_view text;
    bool v4;
    std::string_view canonical;
  };
  const std::vector<ok_case> cases = {
      {"0.0.0.0", true, "0.0.0.0"},
      {"255.255.255.255", true, "255.255.255.255"},
      {"1.2.3.4", true, "1.2.3.4"},
      {"10.0.0.1", true, "10.0.0.1"},
      {"100.64.0.0", true, "100.64.0.0"},
      {"0.10.100.200", true, "0.10.100.200"},
      {"::", false, "::"},
      {"::1", false, "::1"},
      {"fe80::1", false, "fe80::1"},
      {"FC00::", false, "fc00::"},
      {"2001:DB8::AbCd", false, "2001:db8::abcd"},
      {"1:2:3:4:5:6:7:8", false, "1:2:3:4:5:6:7:8"},
      // parse_address does not un-map; that is unmap()'s job.
      {"::ffff:1.2.3.4", false, "::ffff:1.2.3.4"},
      {"::ffff:0102:0304", false, "::ffff:1.2.3.4"},
      // The longest literal (45 characters) still fits.
      {"0000:0000:0000:0000:0000:0000:255.255.255.255", false, "::255.255.255.255"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.text);
    auto a = parse_address(c.text);
    ASSERT_TRUE(a.has_value());
    EXPECT_EQ(a->is_v4(), c.v4);
    EXPECT_EQ(a->to_string(), c.canonical);
  }
}

TEST(AclParseAddress, Rejected) {
  const std::vector<std::string_view> cases = {
      "",
      "1.2.3",
      "1.2.3.4.5",
      "256.0.0.1",
      "1.2.3.256",
      "1.2.3.1234",
      "1234.1.1.1",
      // Would wrap to 1 in a 32-bit accumulator.
      "4294967297.0.0.1",
      // Leading zeros: octal to inet_aton, decimal elsewhere, so neither.
      "010.0.0.1",
      "10.0.0.01",
      "00.0.0.0",
      "1.2.3.00",
      "1..2.3",
      ".1.2.3",
      "1.2.3.4.",
      "1.2.3.",
      " 1.2.3.4",
      "1.2.3.4 ",
      "+1.2.3.4",
      "1.2.3.-4",
      "0x7f.0.0.1",
      "127.1",
      "2130706433",
      "a.b.c.d",
      "example.com",
      "1.2.3.4\0"sv,
      "1.2.3.4\0.5"sv,
      "fe80::1%eth0",
      "fe80::1%1",
      "[::1]",
      "[::1",
      "::1]",
      ":::",
      "1:2:3:4:5:6:7:8:9",
      "::g",
      ":: 1",
      "::1\0"sv,
      "::1\0::2"sv,
      "::ffff:010.0.0.1",
      "::ffff:1.2.3",
      // 46 characters: longer than any valid literal.
      "0000:0000:0000:0000:0000:0000:0000:0000:000000",
  };
  for (auto text : cases) {
    SCOPED_TRACE(std::string(text));
    EXPECT_FALSE(parse_address(text).has_value());
  }
}

TEST(AclUnmap, OnlyMappedV6Changes) {
  struct unmap_case {
    std::string_view in;
    bool v4;
    std::string_view out;
  };
  const std::vector<unmap_case> cases = {
      {"::ffff:1.2.3.4", true, "1.2.3.4"},
      {"::ffff:0.0.0.0", true, "0.0.0.0"},
      {"::ffff:169.254.169.254", true, "169.254.169.254"},
      {"::ffff:255.255.255.255", true, "255.255.255.255"},
      {"1.2.3.4", true, "1.2.3.4"},
      {"::1", false, "::1"},
      {"::", false, "::"},
      // Other v4-carrying forms are not the mapped form and stay v6.
      {"::1.2.3.4", false, "::1.2.3.4"},
      {"64:ff9b::1.2.3.4", false, "64:ff9b::102:304"},
      {"::ffff:0:1.2.3.4", false, "::ffff:0:102:304"},
      {"::fffe:1.2.3.4", false, "::fffe:102:304"},
      {"1::ffff:1.2.3.4", false, "1::ffff:102:304"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.in);
    const address u = unmap(ip(c.in));
    EXPECT_EQ(u.is_v4(), c.v4);
    EXPECT_EQ(u.to_string(), c.out);
  }
}

TEST(AclCidr, ParseAccepted) {
  struct ok_case {
    std::string_view text;
    std::string_view canonical;
    bool v4;
    unsigned len;
  };
  const std::vector<ok_case> cases = {
      {"10.0.0.0/8", "10.0.0.0/8", true, 8},
      {"0.0.0.0/0", "0.0.0.0/0", true, 0},
      {"128.0.0.0/1", "128.0.0.0/1", true, 1},
      {"10.0.0.0/7", "10.0.0.0/7", true, 7},
      {"100.64.0.0/10", "100.64.0.0/10", true, 10},
      {"192.168.0.0/16", "192.168.0.0/16", true, 16},
      {"1.2.3.4/32", "1.2.3.4/32", true, 32},
      {"1.2.3.4", "1.2.3.4/32", true, 32},
      // Prefix lengths are decimal digits; leading zeros are plain decimal.
      {"10.0.0.0/08", "10.0.0.0/8", true, 8},
      {"10.0.0.0/000000000008", "10.0.0.0/8", true, 8},
      {"fc00::/7", "fc00::/7", false, 7},
      {"FC00::/7", "fc00::/7", false, 7},
      {"::/0", "::/0", false, 0},
      {"8000::/1", "8000::/1", false, 1},
      {"::1", "::1/128", false, 128},
      {"::1/128", "::1/128", false, 128},
      {"2001:0db8:0000::/32", "2001:db8::/32", false, 32},
      {"fe80::/10", "fe80::/10", false, 10},
      {"64:ff9b::/96", "64:ff9b::/96", false, 96},
      // Mapped prefixes become the v4 prefix they cover.
      {"::ffff:10.0.0.0/104", "10.0.0.0/8", true, 8},
      {"::ffff:1.2.3.4", "1.2.3.4/32", true, 32},
      {"::ffff:1.2.3.4/128", "1.2.3.4/32", true, 32},
      {"::ffff:0:0/96", "0.0.0.0/0", true, 0},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.text);
    std::string error = "untouched";
    auto p = cidr::parse(c.text, &error);
    ASSERT_TRUE(p.has_value()) << error;
    EXPECT_EQ(p->to_string(), c.canonical);
    EXPECT_EQ(p->is_v4(), c.v4);
    EXPECT_EQ(p->prefix_length(), c.len);
    EXPECT_EQ(error, "untouched");
  }
}

TEST(AclCidr, ParseRejected) {
  struct bad_case {
    std::string_view text;
    std::string_view error;
  };
  const std::vector<bad_case> cases = {
      {"", "invalid address ''"},
      {"/8", "invalid address ''"},
      {"10.0.0/8", "invalid address '10.0.0'"},
      {"010.0.0.0/8", "invalid address '010.0.0.0'"},
      {"fe80::%eth0/64", "invalid address 'fe80::%eth0'"},
      {"[::1]/128", "invalid address '[::1]'"},
      {"[::1/128]", "invalid address '[::1'"},
      {"example.com/24", "invalid address 'example.com'"},
      {" 10.0.0.0/8", "invalid address ' 10.0.0.0'"},
      {"10.0.0.0/", "invalid prefix length ''"},
      {"10.0.0.0/+8", "invalid prefix length '+8'"},
      {"10.0.0.0/-1", "invalid prefix length '-1'"},
      {"10.0.0.0/ 8", "invalid prefix length ' 8'"},
      {"10.0.0.0/8 ", "invalid prefix length '8 '"},
      {"10.0.0.0/8/8", "invalid prefix length '8/8'"},
      {"10.0.0.0/0x8", "invalid prefix length '0x8'"},
      {"10.0.0.0/33", "prefix length 33 out of range (0-32)"},
      {"10.0.0.0/99999999999999", "prefix length 99999999999999 out of range (0-32)"},
      // 2^32 + 8: a wrapping accumulator would read /8.
      {"10.0.0.0/4294967304", "prefix length 4294967304 out of range (0-32)"},
      {"::/129", "prefix length 129 out of range (0-128)"},
      {"::ffff:10.0.0.0/129", "prefix length 129 out of range (0-128)"},
      {"10.0.0.1/8", "host bits set; did you mean 10.0.0.0/8?"},
      {"10.128.0.0/8", "host bits set; did you mean 10.0.0.0/8?"},
      {"11.0.0.0/7", "host bits set; did you mean 10.0.0.0/7?"},
      {"1.2.3.4/0", "host bits set; did you mean 0.0.0.0/0?"},
      {"192.168.1.1/31", "host bits set; did you mean 192.168.1.0/31?"},
      {"fc00::1/7", "host bits set; did you mean fc00::/7?"},
      {"fd00::/7", "host bits set; did you mean fc00::/7?"},
      {"::1/127", "host bits set; did you mean ::/127?"},
      {"::ffff:10.0.0.1/104", "host bits set; did you mean 10.0.0.0/8?"},
      // Below /96 the ffff marker is cut: host bits of the v6 prefix.
      {"::ffff:0:0/80", "host bits set; did you mean ::/80?"},
      {"::ffff:0:0/95", "host bits set; did you mean ::fffe:0:0/95?"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.text);
    std::string error;
    EXPECT_FALSE(cidr::parse(c.text, &error).has_value());
    EXPECT_EQ(error, c.error);
  }
}

TEST(AclCidr, ParseWithoutErrorOutput) {
  EXPECT_FALSE(cidr::parse("bogus").has_value());
  EXPECT_FALSE(cidr::parse("10.0.0.0/x").has_value());
  EXPECT_FALSE(cidr::parse("10.0.0.0/33").has_value());
  EXPECT_FALSE(cidr::parse("10.0.0.1/8").has_value());
  EXPECT_TRUE(cidr::parse("10.0.0.0/8").has_value());
}

TEST(AclCidr, FromAddressKeepsMappedPrefixV6) {
  std::string error;
  auto c = cidr::from_address(ip("::ffff:0:0"), 96, &error);
  ASSERT_TRUE(c.has_value()) << error;
  EXPECT_FALSE(c->is_v4());
  EXPECT_EQ(c->prefix_length(), 96u);
  EXPECT_EQ(c->to_string(), "::ffff:0.0.0.0/96");
  EXPECT_NE(*c, prefix("0.0.0.0/0"));
  // contains() un-maps first, so a mapped query is judged as the v4 address it carries.
  EXPECT_FALSE(c->contains(ip("::ffff:8.8.8.8")));
  EXPECT_FALSE(c->contains(ip("8.8.8.8")));
  EXPECT_FALSE(c->contains(ip("::1")));
}

TEST(AclCidr, FromAddressChecks) {
  struct case_t {
    std::string_view addr;
    unsigned len;
    std::string_view result;  // canonical text, or the error
    bool ok;
  };
  const std::vector<case_t> cases = {
      {"10.0.0.0", 8, "10.0.0.0/8", true},
      {"10.0.0.1", 32, "10.0.0.1/32", true},
      {"fd00::", 8, "fd00::/8", true},
      {"10.0.0.1", 8, "host bits set; did you mean 10.0.0.0/8?", false},
      {"10.0.0.0", 33, "prefix length 33 out of range (0-32)", false},
      {"::", 129, "prefix length 129 out of range (0-128)", false},
      {"::ffff:1.2.3.4", 128, "::ffff:1.2.3.4/128", true},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(std::string(c.addr) + "/" + std::to_string(c.len));
    std::string error;
    auto r = cidr::from_address(ip(c.addr), c.len, &error);
    ASSERT_EQ(r.has_value(), c.ok);
    EXPECT_EQ(c.ok ? r->to_string() : error, c.result);
  }
  EXPECT_FALSE(cidr::from_address(ip("10.0.0.1"), 8).has_value());
  EXPECT_FALSE(cidr::from_address(ip("10.0.0.0"), 40).has_value());
}

TEST(AclCidr, Contains) {
  struct contains_case {
    std::string_view prefix;
    std::string_view addr;
    bool in;
  };
  const std::vector<contains_case> cases = {
      {"10.0.0.0/8", "10.0.0.0", true},
      {"10.0.0.0/8", "10.255.255.255", true},
      {"10.0.0.0/8", "11.0.0.0", false},
      {"10.0.0.0/8", "9.255.255.255", false},
      {"10.0.0.0/8", "::ffff:10.1.2.3", true},
      {"10.0.0.0/8", "::ffff:11.1.2.3", false},
      {"10.0.0.0/8", "::10.1.2.3", false},
      {"10.0.0.0/8", "a00::", false},
      {"0.0.0.0/0", "1.2.3.4", true},
      {"0.0.0.0/0", "255.255.255.255", true},
      {"0.0.0.0/0", "::ffff:1.2.3.4", true},
      {"0.0.0.0/0", "::", false},
      {"0.0.0.0/0", "::1", false},
      {"::/0", "::1", true},
      {"::/0", "ffff::", true},
      {"::/0", "1.2.3.4", false},
      {"::/0", "::ffff:1.2.3.4", false},
      {"100.64.0.0/10", "100.64.0.0", true},
      {"100.64.0.0/10", "100.127.255.255", true},
      {"100.64.0.0/10", "100.128.0.0", false},
      {"100.64.0.0/10", "100.63.255.255", false},
      {"198.18.0.0/15", "198.19.1.1", true},
      {"198.18.0.0/15", "198.20.0.0", false},
      {"1.2.3.4/32", "1.2.3.4", true},
      {"1.2.3.4/32", "1.2.3.5", false},
      {"1.2.3.4", "::ffff:1.2.3.4", true},
      {"128.0.0.0/1", "128.0.0.0", true},
      {"128.0.0.0/1", "127.255.255.255", false},
      {"fc00::/7", "fc00::", true},
      {"fc00::/7", "fd00::1", true},
      {"fc00::/7", "fe00::", false},
      {"fc00::/7", "fbff:ffff::", false},
      {"fe80::/10", "febf:ffff::1", true},
      {"fe80::/10", "fec0::", false},
      {"2001:db8::/32", "2001:db8:ffff::1", true},
      {"2001:db8::/32", "2001:db9::", false},
      {"64:ff9b::/96", "64:ff9b::a9fe:a9fe", true},
      {"64:ff9b::/96", "64:ff9b::1:0:0", false},
      {"::1/128", "::1", true},
      {"::1/128", "::", false},
      {"::1/128", "0.0.0.1", false},
      {"::ffff:10.0.0.0/104", "10.9.9.9", true},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(std::string(c.prefix) + " contains " + std::string(c.addr));
    EXPECT_EQ(prefix(c.prefix).contains(ip(c.addr)), c.in);
  }
}

TEST(AclCidr, Equality) {
  EXPECT_EQ(prefix("10.0.0.0/8"), prefix("::ffff:10.0.0.0/104"));
  EXPECT_EQ(prefix("1.2.3.4"), prefix("1.2.3.4/32"));
  EXPECT_NE(prefix("10.0.0.0/8"), prefix("10.0.0.0/9"));
  EXPECT_NE(prefix("10.0.0.0/8"), prefix("11.0.0.0/8"));
  EXPECT_NE(prefix("0.0.0.0/0"), prefix("::/0"));
}

TEST(AclCidrSet, EmptyMatchesNothing) {
  const cidr_set s;
  EXPECT_TRUE(s.empty());
  EXPECT_EQ(s.size(), 0u);
  EXPECT_FALSE(s.contains(ip("10.0.0.1")));
  EXPECT_EQ(s.find(ip("::1")), nullptr);
}

TEST(AclCidrSet, FindReturnsFirstContainingPrefix) {
  cidr_set s({prefix("10.0.0.0/8"), prefix("10.1.0.0/16"), prefix("fd00::/8")});
  s.add(prefix("192.168.0.0/16"));
  EXPECT_FALSE(s.empty());
  ASSERT_EQ(s.size(), 4u);

  struct find_case {
    std::string_view addr;
    int index;  // -1: none
  };
  const std::vector<find_case> cases = {
      {"10.1.2.3", 0}, {"10.200.0.1", 0},         {"::ffff:10.1.2.3", 0},
      {"fd12::1", 2},  {"192.168.3.4", 3},        {"11.0.0.1", -1},
      {"fe80::1", -1}, {"::ffff:192.168.0.1", 3}, {"::ffff:8.8.8.8", -1},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.addr);
    const cidr* found = s.find(ip(c.addr));
    EXPECT_EQ(s.contains(ip(c.addr)), c.index >= 0);
    if (c.index < 0) {
      EXPECT_EQ(found, nullptr);
    } else {
      EXPECT_EQ(found, &s.items()[static_cast<std::size_t>(c.index)]);
    }
  }
}

}  // namespace
}  // namespace egressd::acl
