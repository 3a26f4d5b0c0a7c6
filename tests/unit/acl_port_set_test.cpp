// Port items, port lists and membership.
#include "egressd/acl/port_set.hpp"

#include <gtest/gtest.h>

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace egressd::acl {
namespace {

TEST(AclPortSet, ParseItemAccepted) {
  struct ok_case {
    std::string_view text;
    port_range range;
  };
  const std::vector<ok_case> cases = {
      {"443", {443, 443}},
      {"1", {1, 1}},
      {"65535", {65535, 65535}},
      {"8000-8100", {8000, 8100}},
      {"1-65535", {1, 65535}},
      {"80-80", {80, 80}},
      // Decimal digits only, so a leading zero is still decimal, never octal.
      {"0443", {443, 443}},
      {"010-012", {10, 12}},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.text);
    std::string error = "untouched";
    auto r = port_set::parse_item(c.text, &error);
    ASSERT_TRUE(r.has_value()) << error;
    EXPECT_EQ(*r, c.range);
    EXPECT_EQ(error, "untouched");
  }
}

TEST(AclPortSet, ParseItemRejected) {
  struct bad_case {
    std::string_view text;
    std::string_view error;
  };
  const std::vector<bad_case> cases = {
      {"0", "port 0 is not allowed"},
      {"00", "port 0 is not allowed"},
      {"0-10", "port 0 is not allowed"},
      {"900-800", "range 900-800 is reversed"},
      {"65535-1", "range 65535-1 is reversed"},
      {"abc", "not a number: 'abc'"},
      {"80-abc", "not a number: 'abc'"},
      {"0x50", "not a number: '0x50'"},
      {"+443", "not a number: '+443'"},
      {" 443", "not a number: ' 443'"},
      {"443 ", "not a number: '443 '"},
      {"44 3", "not a number: '44 3'"},
      {"1-2-3", "not a number: '2-3'"},
      {"443,80", "not a number: '443,80'"},
      {"70000", "port 70000 out of range"},
      {"65536", "port 65536 out of range"},
      {"10-70000", "port 70000 out of range"},
      {"99999999999999999999", "port 99999999999999999999 out of range"},
      // 2^64 + 443 and 2^32 + 443: a wrapping accumulator would read 443.
      {"18446744073709552059", "port 18446744073709552059 out of range"},
      {"4294967739", "port 4294967739 out of range"},
      {"", "missing port in ''"},
      {"-", "missing port in '-'"},
      {"80-", "missing port in '80-'"},
      {"-80", "missing port in '-80'"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.text);
    std::string error;
    EXPECT_FALSE(port_set::parse_item(c.text, &error).has_value());
    EXPECT_EQ(error, c.error);
  }
}

TEST(AclPortSet, ParseListAccepted) {
  struct ok_case {
    std::string_view text;
    std::vector<port_range> ranges;
    std::string_view canonical;
  };
  const std::vector<ok_case> cases = {
      {"443", {{443, 443}}, "443"},
      {"443, 8443, 9000-9100", {{443, 443}, {8443, 8443}, {9000, 9100}}, "443,8443,9000-9100"},
      {" 80 ,\t443\t", {{80, 80}, {443, 443}}, "80,443"},
      {"80-80", {{80, 80}}, "80"},
      {"8000-8100,443", {{8000, 8100}, {443, 443}}, "8000-8100,443"},
      {"80,80", {{80, 80}, {80, 80}}, "80,80"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.text);
    std::string error;
    auto s = port_set::parse_list(c.text, &error);
    ASSERT_TRUE(s.has_value()) << error;
    EXPECT_EQ(s->ranges(), c.ranges);
    EXPECT_EQ(s->to_string(), c.canonical);
    EXPECT_FALSE(s->empty());
  }
}

TEST(AclPortSet, ParseListRejected) {
  struct bad_case {
    std::string_view text;
    std::string_view error;
  };
  const std::vector<bad_case> cases = {
      {"", "empty port list"},
      {"   ", "empty port list"},
      {"\t", "empty port list"},
      {"443,", "empty item in port list"},
      {"443,,80", "empty item in port list"},
      {",443", "empty item in port list"},
      {"443, ,80", "empty item in port list"},
      {",", "empty item in port list"},
      {"443,abc", "not a number: 'abc'"},
      {"443;80", "not a number: '443;80'"},
      {"443 80", "not a number: '443 80'"},
      {"443,0", "port 0 is not allowed"},
      {"443, 900-800", "range 900-800 is reversed"},
      {"70000,80", "port 70000 out of range"},
      {"80,-", "missing port in '-'"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.text);
    std::string error;
    EXPECT_FALSE(port_set::parse_list(c.text, &error).has_value());
    EXPECT_EQ(error, c.error);
  }
}

TEST(AclPortSet, ParseWithoutErrorOutput) {
  EXPECT_FALSE(port_set::parse_item("0").has_value());
  EXPECT_FALSE(port_set::parse_item("2-1").has_value());
  EXPECT_FALSE(port_set::parse_item("x").has_value());
  EXPECT_FALSE(port_set::parse_item("").has_value());
  EXPECT_FALSE(port_set::parse_item("70000").has_value());
  EXPECT_FALSE(port_set::parse_list("").has_value());
  EXPECT_FALSE(port_set::parse_list("1,,2").has_value());
  EXPECT_FALSE(port_set::parse_list("1,x").has_value());
  EXPECT_TRUE(port_set::parse_list("1, 2").has_value());
}

TEST(AclPortSet, Contains) {
  auto s = port_set::parse_list("80,443,8000-8100");
  ASSERT_TRUE(s.has_value());
  struct contains_case {
    std::uint16_t port;
    bool in;
  };
  const std::vector<contains_case> cases = {
      {80, true},   {81, false},  {79, false},   {443, true}, {7999, false},  {8000, true},
      {8050, true}, {8100, true}, {8101, false}, {0, false},  {65535, false},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.port);
    EXPECT_EQ(s->contains(c.port), c.in);
  }

  auto all = port_set::parse_list("1-65535");
  ASSERT_TRUE(all.has_value());
  EXPECT_TRUE(all->contains(1));
  EXPECT_TRUE(all->contains(65535));
  EXPECT_FALSE(all->contains(0));
}

TEST(AclPortSet, EmptySetAndManualAdd) {
  port_set s;
  EXPECT_TRUE(s.empty());
  EXPECT_TRUE(s.ranges().empty());
  EXPECT_EQ(s.to_string(), "");
  EXPECT_FALSE(s.contains(443));

  s.add({443, 443});
  s.add({1000, 2000});
  EXPECT_FALSE(s.empty());
  EXPECT_EQ(s.to_string(), "443,1000-2000");
  EXPECT_TRUE(s.contains(443));
  EXPECT_TRUE(s.contains(1500));
  EXPECT_FALSE(s.contains(999));
}

}  // namespace
}  // namespace egressd::acl
