#pragma once
// Ordered access rules: first match wins. With no rules, everything that passed the gates is
// allowed; with rules and no match, deny. Pure code.
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "egressd/acl/cidr.hpp"
#include "egressd/acl/port_set.hpp"

namespace egressd::acl {

enum class method_class : std::uint8_t { connect = 1, http = 2 };
enum class rule_action : std::uint8_t { allow, deny };

struct rule {
  std::string name;  // for logs; "rule-<index>" when the config gives none
  rule_action action = rule_action::deny;
  std::optional<cidr_set> sources;  // nullopt: any client
  std::vector<std::string>
      domains;  // lower case, no trailing dot; "example.com" or "*.example.com"
  std::optional<cidr_set> destinations;  // nullopt: any address
  std::optional<port_set> ports;         // nullopt: any port
  std::uint8_t methods = 0;              // bit mask of method_class; 0: any
  std::vector<std::string> vpce_ids;     // AWS VPC endpoint ids (PROXY v2 TLV 0xEA); empty: any
  // Verified TLS client certificate identities (subject CN, SAN DNS and URI): one must equal a
  // pattern, or start with a pattern's text before its trailing '*'. Empty: any client (with or
  // without a certificate); non-empty: clients without a verified certificate never match.
  std::vector<std::string> client_identities;
  std::optional<address> bind;  // egress source address for allow rules
  // Deny rules only: a match is reported (logged as "would deny", counted) and evaluation goes
  // on with the next rule, so a new deny rule can be rolled out without refusing anything.
  bool report_only = false;
  // Where part of `sources` came from (a file re-read on change); `sources` already holds its
  // CIDRs. Kept for --check-config and reload; empty: none.
  std::string sources_file;
};

// Matches a host name against a domain pattern. Both sides case-insensitive, one trailing dot on
// the host ignored. "example.com" matches exactly; "*.example.com" matches any name strictly below
// example.com (not example.com itself). An IP literal host matches no domain pattern.
bool domain_matches(std::string_view pattern, std::string_view host) noexcept;

// True for a host that is, or would be dialled as, an IP address: anything with a ':' and any
// name whose last label is numeric (decimal or 0x-hex: "127.1", "2130706433", "0x7f.1"), which
// inet_aton and browsers read as IPv4. No real top-level domain is numeric.
bool is_ip_literal(std::string_view host) noexcept;

// Matches a verified client identity against a rules[].client_identities pattern: equal, or, for
// a pattern ending in '*', starting with the text before it ("spiffe://corp/egress/*").
bool identity_matches(std::string_view pattern, std::string_view identity) noexcept;

struct request_facts {
  address client;         // the real client address (un-mapped)
  std::string_view host;  // target host as the client sent it (name or IP literal)
  std::uint16_t port = 0;
  method_class method = method_class::http;
  std::string_view vpce_id;                 // from the PROXY v2 header; empty: none
  std::span<const std::string> identities;  // verified client certificate identities; empty: none
};

struct rule_decision {
  bool allowed = false;
  const rule* matched = nullptr;   // nullptr: default decision (no rules, or none matched)
  const rule* reported = nullptr;  // the first report-only rule that matched on the way, if any
};

class rule_set {
 public:
  rule_set() = default;
  explicit rule_set(std::vector<rule> rules);

  // The decision for one resolved destination address (un-mapped). First rule whose every
  // condition holds decides; a rule with destination CIDRs matches only if dest is inside them.
  // Report-only rules never decide: the first that matches is returned in `reported`.
  rule_decision decide(const request_facts& f, const address& dest) const noexcept;

  // Before DNS: false only when no address could ever be allowed for these facts, so a request
  // that is denied whatever the name resolves to is refused without a lookup. Walks the rules in
  // order: a rule whose non-destination conditions match and that has no destination condition
  // decides; an allow rule with a destination condition means "maybe" (true); a deny rule with a
  // destination condition is skipped, and so is every report-only rule. End of list: the
  // default.
  // When it returns false, *decided (if given) is the deny rule that decided, or nullptr for
  // the default.
  bool may_allow(const request_facts& f, const rule** decided = nullptr) const noexcept;

  bool empty() const noexcept { return rules_.empty(); }
  const std::vector<rule>& rules() const noexcept { return rules_; }

 private:
  std::vector<rule> rules_;
  // Report-only rules never decide, so a list of only those behaves like no rules at all.
  bool default_allow_ = true;
};

}  // namespace egressd::acl
