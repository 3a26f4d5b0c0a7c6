// Domain patterns and ordered rules, before and after DNS.
#include "egressd/acl/rules.hpp"

#include <gtest/gtest.h>

#include <cstdint>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
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

port_set ports(std::string_view text) {
  std::string error;
  auto p = port_set::parse_list(text, &error);
  if (!p) throw std::invalid_argument("test ports '" + std::string(text) + "': " + error);
  return *p;
}

constexpr std::uint8_t kConnect = static_cast<std::uint8_t>(method_class::connect);
constexpr std::uint8_t kHttp = static_cast<std::uint8_t>(method_class::http);

TEST(AclDomainMatches, Table) {
  struct match_case {
    std::string_view pattern;
    std::string_view host;
    bool match;
  };
  const std::vector<match_case> cases = {
      // Exact names.
      {"example.com", "example.com", true},
      {"example.com", "EXAMPLE.COM", true},
      {"EXAMPLE.com", "example.COM", true},
      {"example.com", "example.com.", true},
      {"example.com.", "example.com", true},
      {"example.com.", "example.com.", true},
      {"example.com", "example.com..", false},
      {"example.com", "www.example.com", false},
      {"example.com", "example.co", false},
      {"example.com", "xexample.com", false},
      {"example.com", "example.com.evil.net", false},
      {"example.com", "", false},
      {"example.com", ".", false},
      {"", "example.com", false},
      {"", "", false},
      {".", ".", false},
      // Wildcards: strictly below the named domain.
      {"*.example.com", "a.example.com", true},
      {"*.example.com", "a.b.example.com", true},
      {"*.example.com", "A.Example.Com.", true},
      {"*.EXAMPLE.com", "a.example.COM", true},
      {"*.example.com.", "a.example.com", true},
      {"*.example.com", "example.com", false},
      {"*.example.com", "example.com.", false},
      {"*.example.com", "badexample.com", false},
      {"*.example.com", ".example.com", false},
      {"*.example.com", "a.example.org", false},
      {"*.example.com", "a.example.com.evil.net", false},
      {"*.com", "example.com", true},
      // A star anywhere else is not a wildcard, so it matches no real name.
      {"*", "example.com", false},
      {"*.", "example.com", false},
      {"*example.com", "badexample.com", false},
      {"a.*.com", "a.b.com", false},
      // IP literal hosts never match a name pattern, however the pattern is written.
      {"1.2.3.4", "1.2.3.4", false},
      {"1.2.3.4.", "1.2.3.4.", false},
      {"*.2.3.4", "1.2.3.4", false},
      {"*.0.0.1", "010.0.0.1", false},
      {"127.1", "127.1", false},
      {"2130706433", "2130706433", false},
      {"0x7f.1", "0x7f.1", false},
      {"*.0X7F", "a.0X7F", false},
      {"::1", "::1", false},
      {"*.1", "fe80::1", false},
      {"[::1]", "[::1]", false},
      // Near-numeric last labels are names.
      {"a.0x", "a.0x", true},
      {"a.0xfg", "a.0xfg", true},
      {"*.example.123abc", "www.example.123abc", true},
      {"1.2.3.com", "1.2.3.com", true},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(std::string(c.pattern) + " vs " + std::string(c.host));
    EXPECT_EQ(domain_matches(c.pattern, c.host), c.match);
  }
}

// The facts and destination every case starts from; each case changes what it tests.
request_facts base_facts() {
  return {ip("10.0.0.5"), "api.example.com", 443, method_class::connect};
}

struct decide_case {
  std::string_view name;
  std::vector<rule> rules;
  request_facts facts;
  std::string_view dest;
  bool allowed;
  int matched;  // index into rules, -1: default decision
};

request_facts with_client(std::string_view client) {
  auto f = base_facts();
  f.client = ip(client);
  return f;
}
request_facts with_host(std::string_view host) {
  auto f = base_facts();
  f.host = host;
  return f;
}
request_facts with_port(std::uint16_t port) {
  auto f = base_facts();
  f.port = port;
  return f;
}
request_facts with_method(method_class m) {
  auto f = base_facts();
  f.method = m;
  return f;
}

rule make_rule(std::string name, rule_action action) {
  rule r;
  r.name = std::move(name);
  r.action = action;
  return r;
}
rule allow() {
  return make_rule("allow", rule_action::allow);
}
rule deny() {
  return make_rule("deny", rule_action::deny);
}
rule with_sources(rule r, std::vector<std::string_view> s) {
  r.sources = prefixes(std::move(s));
  return r;
}
rule with_domains(rule r, std::vector<std::string> d) {
  r.domains = std::move(d);
  return r;
}
rule with_dest(rule r, std::vector<std::string_view> d) {
  r.destinations = prefixes(std::move(d));
  return r;
}
rule with_ports(rule r, std::string_view p) {
  r.ports = ports(p);
  return r;
}
rule with_methods(rule r, std::uint8_t m) {
  r.methods = m;
  return r;
}

TEST(AclRuleSet, Decide) {
  const std::vector<decide_case> cases = {
      {"no rules: allowed by default", {}, base_facts(), "93.184.216.34", true, -1},
      {"rules, none matching: denied",
       {with_ports(allow(), "80")},
       base_facts(),
       "1.1.1.1",
       false,
       -1},
      {"unconditional allow", {allow()}, base_facts(), "1.1.1.1", true, 0},
      {"unconditional deny", {deny()}, base_facts(), "1.1.1.1", false, 0},

      {"source inside", {with_sources(allow(), {"10.0.0.0/8"})}, base_facts(), "1.1.1.1", true, 0},
      {"source outside",
       {with_sources(allow(), {"10.0.0.0/8"})},
       with_client("192.168.1.1"),
       "1.1.1.1",
       false,
       -1},
      {"source mapped client",
       {with_sources(allow(), {"10.0.0.0/8"})},
       with_client("::ffff:10.9.9.9"),
       "1.1.1.1",
       true,
       0},
      {"source set present but empty matches nobody",
       {with_sources(allow(), {})},
       base_facts(),
       "1.1.1.1",
       false,
       -1},

      {"domain wildcard",
       {with_domains(allow(), {"*.example.com"})},
       base_facts(),
       "1.1.1.1",
       true,
       0},
      {"domain apex not below wildcard",
       {with_domains(allow(), {"*.example.com"})},
       with_host("example.com"),
       "1.1.1.1",
       false,
       -1},
      {"domain second pattern",
       {with_domains(allow(), {"example.org", "*.example.com"})},
       base_facts(),
       "1.1.1.1",
       true,
       0},
      {"domain none of the patterns",
       {with_domains(allow(), {"example.org", "*.example.net"})},
       base_facts(),
       "1.1.1.1",
       false,
       -1},
      {"domain vs IP literal host",
       {with_domains(allow(), {"*.example.com", "1.1.1.1"})},
       with_host("1.1.1.1"),
       "1.1.1.1",
       false,
       -1},
      {"no domains: any host, IP literal too", {allow()}, with_host("1.1.1.1"), "1.1.1.1", true, 0},

      {"port inside", {with_ports(allow(), "443,8443")}, base_facts(), "1.1.1.1", true, 0},
      {"port outside", {with_ports(allow(), "443,8443")}, with_port(80), "1.1.1.1", false, -1},

      {"method connect only, connect",
       {with_methods(allow(), kConnect)},
       base_facts(),
       "1.1.1.1",
       true,
       0},
      {"method connect only, http",
       {with_methods(allow(), kConnect)},
       with_method(method_class::http),
       "1.1.1.1",
       false,
       -1},
      {"method http only, connect",
       {with_methods(allow(), kHttp)},
       base_facts(),
       "1.1.1.1",
       false,
       -1},
      {"method http only, http",
       {with_methods(allow(), kHttp)},
       with_method(method_class::http),
       "1.1.1.1",
       true,
       0},
      {"method both",
       {with_methods(allow(), kHttp | kConnect)},
       with_method(method_class::http),
       "1.1.1.1",
       true,
       0},

      {"destination inside",
       {with_dest(allow(), {"93.184.216.0/24"})},
       base_facts(),
       "93.184.216.34",
       true,
       0},
      {"destination mapped",
       {with_dest(allow(), {"93.184.216.0/24"})},
       base_facts(),
       "::ffff:93.184.216.34",
       true,
       0},
      {"destination outside",
       {with_dest(allow(), {"93.184.216.0/24"})},
       base_facts(),
       "93.184.217.1",
       false,
       -1},
      {"destination v6",
       {with_dest(allow(), {"2606:2800::/32"})},
       base_facts(),
       "2606:2800:220:1::1",
       true,
       0},

      {"every condition holds",
       {with_methods(with_ports(with_dest(with_domains(with_sources(allow(), {"10.0.0.0/24"}),
                                                       {"*.example.com"}),
                                          {"93.184.216.0/24"}),
                                "443"),
                     kConnect)},
       base_facts(),
       "93.184.216.34",
       true,
       0},
      {"one condition fails",
       {with_methods(with_ports(with_dest(with_domains(with_sources(allow(), {"10.0.0.0/24"}),
                                                       {"*.example.com"}),
                                          {"93.184.216.0/24"}),
                                "443"),
                     kHttp)},
       base_facts(),
       "93.184.216.34",
       false,
       -1},

      {"first match wins: deny first",
       {with_sources(deny(), {"10.0.0.0/24"}), allow()},
       base_facts(),
       "1.1.1.1",
       false,
       0},
      {"first match wins: falls through",
       {with_sources(deny(), {"10.0.0.0/24"}), allow()},
       with_client("10.0.1.5"),
       "1.1.1.1",
       true,
       1},
      {"deny by destination then allow: dest inside",
       {with_dest(deny(), {"10.0.0.0/8"}), allow()},
       base_facts(),
       "10.1.1.1",
       false,
       0},
      {"deny by destination then allow: dest outside",
       {with_dest(deny(), {"10.0.0.0/8"}), allow()},
       base_facts(),
       "8.8.8.8",
       true,
       1},
      {"later allow shadowed", {allow(), deny()}, base_facts(), "8.8.8.8", true, 0},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.name);
    const rule_set rs(c.rules);
    EXPECT_EQ(rs.empty(), c.rules.empty());
    const rule_decision d = rs.decide(c.facts, ip(c.dest));
    EXPECT_EQ(d.allowed, c.allowed);
    if (c.matched < 0) {
      EXPECT_EQ(d.matched, nullptr);
    } else {
      ASSERT_LT(static_cast<std::size_t>(c.matched), rs.rules().size());
      EXPECT_EQ(d.matched, &rs.rules()[static_cast<std::size_t>(c.matched)]);
    }
  }
}

TEST(AclRuleSet, MayAllow) {
  struct may_case {
    std::string_view name;
    std::vector<rule> rules;
    request_facts facts;
    bool may;
  };
  const std::vector<may_case> cases = {
      {"no rules", {}, base_facts(), true},
      {"no rule matches", {with_ports(allow(), "80")}, base_facts(), false},
      {"allow without destination decides", {allow()}, base_facts(), true},
      {"deny without destination decides", {deny(), allow()}, base_facts(), false},
      {"allow with destination: maybe",
       {with_dest(allow(), {"93.184.216.0/24"})},
       base_facts(),
       true},
      {"allow with destination, other conditions fail",
       {with_ports(with_dest(allow(), {"93.184.216.0/24"}), "80")},
       base_facts(),
       false},
      {"deny with destination skipped, then default",
       {with_dest(deny(), {"10.0.0.0/8"})},
       base_facts(),
       false},
      {"deny with destination skipped, then allow",
       {with_dest(deny(), {"10.0.0.0/8"}), allow()},
       base_facts(),
       true},
      {"deny with destination skipped, then deny",
       {with_dest(deny(), {"10.0.0.0/8"}), deny()},
       base_facts(),
       false},
      {"allow with destination before a catch-all deny",
       {with_dest(allow(), {"93.184.216.0/24"}), deny()},
       base_facts(),
       true},
      {"non-matching allow skipped",
       {with_sources(allow(), {"192.168.0.0/16"}), with_ports(deny(), "443")},
       base_facts(),
       false},
      {"domain deny decides before DNS",
       {with_domains(deny(), {"*.example.com"}), allow()},
       base_facts(),
       false},
      {"domain deny does not apply elsewhere",
       {with_domains(deny(), {"*.example.com"}), allow()},
       with_host("example.org"),
       true},
      {"method gate", {with_methods(allow(), kHttp)}, base_facts(), false},
      {"port allow after destination deny",
       {with_dest(deny(), {"10.0.0.0/8"}), with_ports(allow(), "443")},
       base_facts(),
       true},
      {"port allow after destination deny, other port",
       {with_dest(deny(), {"10.0.0.0/8"}), with_ports(allow(), "443")},
       with_port(80),
       false},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.name);
    const rule_set rs(c.rules);
    EXPECT_EQ(rs.may_allow(c.facts), c.may);
  }
}

// may_allow() must never refuse what decide() would allow for some address.
TEST(AclRuleSet, MayAllowIsNeverStricterThanDecide) {
  const std::vector<std::vector<rule>> sets = {
      {},
      {allow()},
      {deny()},
      {with_dest(deny(), {"10.0.0.0/8"}), allow()},
      {with_dest(allow(), {"10.0.0.0/8"}), deny()},
      {with_dest(deny(), {"0.0.0.0/0", "::/0"})},
      {with_sources(deny(), {"10.0.0.0/24"}), with_dest(allow(), {"8.8.8.0/24"})},
      {with_ports(deny(), "443"), allow()},
  };
  const std::vector<std::string_view> dests = {"10.1.1.1", "8.8.8.8", "2001:4860::1", "::1"};
  for (std::size_t i = 0; i < sets.size(); ++i) {
    SCOPED_TRACE(i);
    const rule_set rs(sets[i]);
    const auto f = base_facts();
    bool any = false;
    for (auto d : dests) any = any || rs.decide(f, ip(d)).allowed;
    if (any) {
      EXPECT_TRUE(rs.may_allow(f));
    }
  }
}

rule reporting(rule r) {
  r.report_only = true;
  return r;
}

TEST(AclRuleSet, VpceIdCondition) {
  rule r = make_rule("vpce", rule_action::allow);
  r.vpce_ids = {"vpce-0aaa", "vpce-0bbb"};
  const rule_set rs({r});
  auto f = base_facts();
  EXPECT_FALSE(rs.decide(f, ip("8.8.8.8")).allowed) << "no endpoint id: no match";
  EXPECT_FALSE(rs.may_allow(f));
  f.vpce_id = "vpce-0bbb";
  EXPECT_TRUE(rs.decide(f, ip("8.8.8.8")).allowed);
  EXPECT_TRUE(rs.may_allow(f));
  f.vpce_id = "VPCE-0AAA";
  EXPECT_TRUE(rs.decide(f, ip("8.8.8.8")).allowed) << "ids compare case-insensitively";
  f.vpce_id = "vpce-0aaa0";
  EXPECT_FALSE(rs.decide(f, ip("8.8.8.8")).allowed) << "no prefix match";
}

TEST(AclIdentity, Matches) {
  EXPECT_TRUE(identity_matches("tenant-a", "tenant-a"));
  EXPECT_FALSE(identity_matches("tenant-a", "Tenant-A")) << "identities are case-sensitive";
  EXPECT_FALSE(identity_matches("tenant-a", "tenant-ab"));
  EXPECT_FALSE(identity_matches("tenant-a", "tenant-"));
  EXPECT_TRUE(identity_matches("spiffe://corp/egress/*", "spiffe://corp/egress/a"));
  EXPECT_TRUE(identity_matches("spiffe://corp/egress/*", "spiffe://corp/egress/"));
  EXPECT_FALSE(identity_matches("spiffe://corp/egress/*", "spiffe://corp/egres"));
  EXPECT_FALSE(identity_matches("spiffe://corp/egress/*", "spiffe://corp/egressX"));
  EXPECT_FALSE(identity_matches("*", "")) << "an empty identity never matches";
  EXPECT_FALSE(identity_matches("", ""));
}

TEST(AclRuleSet, ClientIdentityCondition) {
  rule a = make_rule("tenant-a", rule_action::allow);
  a.client_identities = {"tenant-a", "spiffe://corp/a/*"};
  rule b = make_rule("tenant-b", rule_action::deny);
  b.client_identities = {"tenant-b"};
  const rule_set rs({a, b});
  auto f = base_facts();
  EXPECT_FALSE(rs.decide(f, ip("8.8.8.8")).allowed) << "no certificate: no identity rule";
  EXPECT_FALSE(rs.may_allow(f));
  const std::vector<std::string> alice = {"alice", "spiffe://corp/a/alice"};
  f.identities = alice;
  auto d = rs.decide(f, ip("8.8.8.8"));
  EXPECT_TRUE(d.allowed);
  ASSERT_NE(d.matched, nullptr);
  EXPECT_EQ(d.matched->name, "tenant-a") << "any identity of the certificate may match";
  EXPECT_TRUE(rs.may_allow(f));
  const std::vector<std::string> bob = {"tenant-b", "bob.example"};
  f.identities = bob;
  d = rs.decide(f, ip("8.8.8.8"));
  EXPECT_FALSE(d.allowed);
  ASSERT_NE(d.matched, nullptr);
  EXPECT_EQ(d.matched->name, "tenant-b");
  const rule_set open({make_rule("any", rule_action::allow)});
  EXPECT_TRUE(open.decide(f, ip("8.8.8.8")).allowed) << "a rule without identities matches all";
}

TEST(AclRuleSet, ReportOnlyRulesReportAndGoOn) {
  const auto f = base_facts();
  // A report-only deny before an allow: allowed, the deny is reported, the allow decided.
  const rule_set rs({reporting(with_domains(deny(), {"api.example.com"})), allow()});
  auto d = rs.decide(f, ip("8.8.8.8"));
  EXPECT_TRUE(d.allowed);
  ASSERT_NE(d.reported, nullptr);
  EXPECT_EQ(d.reported->name, "deny");
  ASSERT_NE(d.matched, nullptr);
  EXPECT_EQ(d.matched->name, "allow");
  EXPECT_TRUE(rs.may_allow(f));

  // Not matching: nothing reported.
  auto other = f;
  other.host = "other.example.com";
  EXPECT_EQ(rs.decide(other, ip("8.8.8.8")).reported, nullptr);

  // Only report-only rules: behaves like no rules (allow), still reports.
  const rule_set only({reporting(deny())});
  d = only.decide(f, ip("8.8.8.8"));
  EXPECT_TRUE(d.allowed);
  EXPECT_EQ(d.matched, nullptr);
  EXPECT_NE(d.reported, nullptr);
  EXPECT_TRUE(only.may_allow(f));

  // A report-only rule followed by a real deny: denied, and the report is still there.
  const rule_set both({reporting(deny()), deny()});
  d = both.decide(f, ip("8.8.8.8"));
  EXPECT_FALSE(d.allowed);
  EXPECT_NE(d.reported, nullptr);
  EXPECT_FALSE(both.may_allow(f));

  // The same rule without report_only denies: the flag is what changes the outcome.
  const rule_set real({with_domains(deny(), {"api.example.com"}), allow()});
  EXPECT_FALSE(real.decide(f, ip("8.8.8.8")).allowed);
  const rule* by = &real.rules()[1];
  EXPECT_FALSE(real.may_allow(f, &by));
  EXPECT_EQ(by, &real.rules()[0]) << "the deciding rule is named for the log";
  EXPECT_TRUE(real.may_allow(other, &by));
  EXPECT_EQ(by, &real.rules()[1]);
}

TEST(AclIpLiteral, NumericHostsAreLiterals) {
  for (auto h : {"1.2.3.4", "127.1", "2130706433", "0x7f.1", "0X7F000001", "::1", "[::1]",
                 "010.0.0.1", "1.2.3.4."}) {
    EXPECT_TRUE(is_ip_literal(h)) << h;
  }
  for (auto h : {"example.com", "1.2.3.example", "0x.com", "a0x12", "localhost", "x.0xg1"}) {
    EXPECT_FALSE(is_ip_literal(h)) << h;
  }
}

}  // namespace
}  // namespace egressd::acl
