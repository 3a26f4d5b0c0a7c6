#pragma once
// Ordered access rules: first match wins. With no rules, everything that passed the gates is
// allowed; with rules and no match, deny. Pure code.
#include <cstdint>
#include <optional>
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
  std::optional<address> bind;           // egress source address for allow rules
};

// Matches a host name against a domain pattern. Both sides case-insensitive, one trailing dot on
// the host ignored. "example.com" matches exactly; "*.example.com" matches any name strictly below
// example.com (not example.com itself). An IP literal host matches no domain pattern.
bool domain_matches(std::string_view pattern, std::string_view host) noexcept;

struct request_facts {
  address client;         // the real client address (un-mapped)
  std::string_view host;  // target host as the client sent it (name or IP literal)
  std::uint16_t port = 0;
  method_class method = method_class::http;
};

struct rule_decision {
  bool allowed = false;
  const rule* matched = nullptr;  // nullptr: default decision (no rules, or none matched)
};

class rule_set {
 public:
  rule_set() = default;
  explicit rule_set(std::vector<rule> rules) : rules_(std::move(rules)) {}

  // The decision for one resolved destination address (un-mapped). First rule whose every
  // condition holds decides; a rule with destination CIDRs matches only if dest is inside them.
  rule_decision decide(const request_facts& f, const address& dest) const noexcept;

  // Before DNS: false only when no address could ever be allowed for these facts, so a request
  // that is denied whatever the name resolves to is refused without a lookup. Walks the rules in
  // order: a rule whose non-destination conditions match and that has no destination condition
  // decides; an allow rule with a destination condition means "maybe" (true); a deny rule with a
  // destination condition is skipped. End of list: the default.
  bool may_allow(const request_facts& f) const noexcept;

  bool empty() const noexcept { return rules_.empty(); }
  const std::vector<rule>& rules() const noexcept { return rules_; }

 private:
  std::vector<rule> rules_;
};

}  // namespace egressd::acl
