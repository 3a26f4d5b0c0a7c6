#include "egressd/acl/rules.hpp"

#include <algorithm>

namespace egressd::acl {
namespace {

constexpr char lower(char c) noexcept {
  return c >= 'A' && c <= 'Z' ? char(c - 'A' + 'a') : c;
}

bool iequals(std::string_view a, std::string_view b) noexcept {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(),
                                            [](char x, char y) { return lower(x) == lower(y); });
}

std::string_view drop_trailing_dot(std::string_view s) noexcept {
  if (!s.empty() && s.back() == '.') s.remove_suffix(1);
  return s;
}

bool all_of_chars(std::string_view s, bool (*pred)(char)) noexcept {
  return !s.empty() && std::all_of(s.begin(), s.end(), pred);
}

bool matches_besides_destination(const rule& r, const request_facts& f) noexcept {
  if (r.sources && !r.sources->contains(f.client)) return false;
  if (r.ports && !r.ports->contains(f.port)) return false;
  if (r.methods != 0 && (r.methods & static_cast<std::uint8_t>(f.method)) == 0) return false;
  if (!r.vpce_ids.empty() &&
      std::none_of(r.vpce_ids.begin(), r.vpce_ids.end(),
                   [&](const std::string& id) { return iequals(id, f.vpce_id); })) {
    return false;
  }
  if (!r.client_identities.empty() &&
      std::none_of(
          r.client_identities.begin(), r.client_identities.end(), [&](const std::string& p) {
            return std::any_of(f.identities.begin(), f.identities.end(),
                               [&](const std::string& id) { return identity_matches(p, id); });
          })) {
    return false;
  }
  if (!r.domains.empty() &&
      std::none_of(r.domains.begin(), r.domains.end(),
                   [&](const std::string& p) { return domain_matches(p, f.host); })) {
    return false;
  }
  return true;
}

}  // namespace

// Broader than "a dotted quad": a host whose last label is a number (decimal, or 0x hex) is an
// IPv4 address to inet_aton and to browsers ("010.0.0.1", "127.1", "0x7f.1", "2130706433").
// Treating them all as literals stops a name pattern from matching something that will be
// dialled as an address.
bool is_ip_literal(std::string_view host) noexcept {
  host = drop_trailing_dot(host);
  if (host.find(':') != std::string_view::npos) return true;
  const auto dot = host.rfind('.');
  const std::string_view last = dot == std::string_view::npos ? host : host.substr(dot + 1);
  if (all_of_chars(last, [](char c) { return c >= '0' && c <= '9'; })) return true;
  if (last.size() > 2 && last[0] == '0' && lower(last[1]) == 'x') {
    return all_of_chars(last.substr(2), [](char c) {
      return (c >= '0' && c <= '9') || (lower(c) >= 'a' && lower(c) <= 'f');
    });
  }
  return false;
}

bool domain_matches(std::string_view pattern, std::string_view host) noexcept {
  host = drop_trailing_dot(host);
  pattern = drop_trailing_dot(pattern);
  if (host.empty() || pattern.empty() || is_ip_literal(host)) return false;
  if (pattern.size() > 2 && pattern[0] == '*' && pattern[1] == '.') {
    // Keep the dot in the suffix so "*.example.com" cannot match "badexample.com", and require a
    // label before it so it does not match "example.com" itself.
    const std::string_view suffix = pattern.substr(1);
    return host.size() > suffix.size() && iequals(host.substr(host.size() - suffix.size()), suffix);
  }
  return iequals(pattern, host);
}

// Identities are compared byte for byte (a URI or a certificate name has no case rule egressd
// could apply safely); a trailing '*' makes the rest of the pattern a prefix.
bool identity_matches(std::string_view pattern, std::string_view identity) noexcept {
  if (identity.empty()) return false;
  if (!pattern.empty() && pattern.back() == '*') {
    pattern.remove_suffix(1);
    return identity.substr(0, pattern.size()) == pattern;
  }
  return pattern == identity;
}

rule_set::rule_set(std::vector<rule> rules) : rules_(std::move(rules)) {
  default_allow_ =
      std::all_of(rules_.begin(), rules_.end(), [](const rule& r) { return r.report_only; });
}

rule_decision rule_set::decide(const request_facts& f, const address& dest) const noexcept {
  const rule* reported = nullptr;
  for (const auto& r : rules_) {
    if (!matches_besides_destination(r, f)) continue;
    if (r.destinations && !r.destinations->contains(dest)) continue;
    if (r.report_only) {
      if (reported == nullptr) reported = &r;
      continue;
    }
    return {r.action == rule_action::allow, &r, reported};
  }
  return {default_allow_, nullptr, reported};
}

bool rule_set::may_allow(const request_facts& f, const rule** decided) const noexcept {
  if (decided != nullptr) *decided = nullptr;
  for (const auto& r : rules_) {
    if (r.report_only || !matches_besides_destination(r, f)) continue;
    if (!r.destinations) {
      if (decided != nullptr) *decided = &r;
      return r.action == rule_action::allow;
    }
    // Whether this rule applies depends on the address DNS returns: an allow rule might, so the
    // lookup is worth doing; a deny rule might not, so the rules after it still count.
    if (r.action == rule_action::allow) return true;
  }
  return default_allow_;
}

}  // namespace egressd::acl
