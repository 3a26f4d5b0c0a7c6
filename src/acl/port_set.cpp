#include "egressd/acl/port_set.hpp"

#include <algorithm>

namespace egressd::acl {
namespace {

void set_error(std::string* error, std::string message) {
  if (error) *error = std::move(message);
}

std::optional<std::uint16_t> parse_port(std::string_view s, std::string_view item,
                                        std::string* error) {
  if (s.empty()) {
    set_error(error, "missing port in '" + std::string(item) + "'");
    return std::nullopt;
  }
  unsigned long value = 0;
  for (char c : s) {
    if (c < '0' || c > '9') {
      set_error(error, "not a number: '" + std::string(s) + "'");
      return std::nullopt;
    }
    // Saturate so a long run of digits is reported as out of range, never wrapped into range.
    value = std::min(value * 10 + static_cast<unsigned long>(c - '0'), 100000ul);
  }
  if (value > 65535) {
    set_error(error, "port " + std::string(s) + " out of range");
    return std::nullopt;
  }
  // Port 0 is "any port" to the socket API; as a destination it is never legitimate.
  if (value == 0) {
    set_error(error, "port 0 is not allowed");
    return std::nullopt;
  }
  return static_cast<std::uint16_t>(value);
}

std::string_view trim_spaces(std::string_view s) noexcept {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

}  // namespace

std::optional<port_range> port_set::parse_item(std::string_view text, std::string* error) {
  const auto dash = text.find('-');
  if (dash == std::string_view::npos) {
    auto p = parse_port(text, text, error);
    if (!p) return std::nullopt;
    return port_range{*p, *p};
  }
  auto lo = parse_port(text.substr(0, dash), text, error);
  if (!lo) return std::nullopt;
  auto hi = parse_port(text.substr(dash + 1), text, error);
  if (!hi) return std::nullopt;
  if (*lo > *hi) {
    set_error(error, "range " + std::string(text) + " is reversed");
    return std::nullopt;
  }
  return port_range{*lo, *hi};
}

std::optional<port_set> port_set::parse_list(std::string_view text, std::string* error) {
  if (trim_spaces(text).empty()) {
    set_error(error, "empty port list");
    return std::nullopt;
  }
  port_set out;
  while (true) {
    const auto comma = text.find(',');
    const std::string_view item = trim_spaces(text.substr(0, comma));
    if (item.empty()) {
      set_error(error, "empty item in port list");
      return std::nullopt;
    }
    auto r = parse_item(item, error);
    if (!r) return std::nullopt;
    out.add(*r);
    if (comma == std::string_view::npos) break;
    text.remove_prefix(comma + 1);
  }
  return out;
}

bool port_set::contains(std::uint16_t port) const noexcept {
  return std::any_of(ranges_.begin(), ranges_.end(),
                     [port](const port_range& r) { return r.lo <= port && port <= r.hi; });
}

std::string port_set::to_string() const {
  std::string out;
  for (const auto& r : ranges_) {
    if (!out.empty()) out += ',';
    out += std::to_string(r.lo);
    if (r.hi != r.lo) {
      out += '-';
      out += std::to_string(r.hi);
    }
  }
  return out;
}

}  // namespace egressd::acl
