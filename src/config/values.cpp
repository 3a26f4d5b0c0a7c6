#include "values.hpp"

#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <filesystem>
#include <system_error>
#include <vector>

namespace egressd::config::detail {
namespace {

// Far beyond every limit in the schema, and small enough that multiplying by a unit (at most
// 3'600'000 for hours in milliseconds, 1 MiB for sizes) cannot overflow 64 bits.
constexpr std::uint64_t saturation = 1'000'000'000'000ull;

constexpr bool is_digit(char c) noexcept {
  return c >= '0' && c <= '9';
}

constexpr bool is_alnum(char c) noexcept {
  return is_digit(c) || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

void set_error(std::string* error, std::string message) {
  if (error) *error = std::move(message);
}

std::string in_quotes(std::string_view s) {
  return "'" + std::string(s) + "'";
}

// Splits "123abc" into 123 and "abc"; nullopt when there is no leading digit.
std::optional<std::pair<std::uint64_t, std::string_view>> split_number(std::string_view text) {
  std::size_t i = 0;
  std::uint64_t value = 0;
  while (i < text.size() && is_digit(text[i])) {
    value = std::min(value * 10 + static_cast<std::uint64_t>(text[i] - '0'), saturation);
    ++i;
  }
  if (i == 0) return std::nullopt;
  return std::pair{value, text.substr(i)};
}

std::string with_unit(std::uint64_t value, std::string_view unit) {
  return std::to_string(value) + std::string(unit);
}

}  // namespace

std::optional<std::uint64_t> parse_uint(std::string_view text, std::string* error) {
  auto split = split_number(text);
  if (!split || !split->second.empty()) {
    set_error(error, "expected a non-negative integer, got " + in_quotes(text));
    return std::nullopt;
  }
  return split->first;
}

std::optional<duration> parse_duration(std::string_view text, std::string* error) {
  auto split = split_number(text);
  const std::string message =
      "expected a duration with a unit (ms, s, m, h), e.g. \"10s\", got " + in_quotes(text);
  if (!split) {
    set_error(error, message);
    return std::nullopt;
  }
  const auto [value, unit] = *split;
  std::uint64_t factor = 0;
  if (unit == "ms") {
    factor = 1;
  } else if (unit == "s") {
    factor = 1000;
  } else if (unit == "m") {
    factor = 60 * 1000;
  } else if (unit == "h") {
    factor = 3600 * 1000;
  } else {
    set_error(error, message);
    return std::nullopt;
  }
  return duration(static_cast<duration::rep>(value * factor));
}

std::string format_duration(duration d) {
  const auto ms = d.count();
  if (ms % 1000 == 0) return std::to_string(ms / 1000) + "s";
  return std::to_string(ms) + "ms";
}

std::optional<std::size_t> parse_size(std::string_view text, std::string* error) {
  auto split = split_number(text);
  std::uint64_t factor = 0;
  if (split) {
    const auto unit = split->second;
    if (unit.empty() || unit == "B") {
      factor = 1;
    } else if (unit == "KiB") {
      factor = kib;
    } else if (unit == "MiB") {
      factor = mib;
    }
  }
  if (factor == 0) {
    set_error(error,
              "expected a size in bytes, or a number with B, KiB or MiB, e.g. \"64KiB\", got " +
                  in_quotes(text));
    return std::nullopt;
  }
  return static_cast<std::size_t>(split->first * factor);
}

std::string format_size(std::size_t bytes) {
  if (bytes != 0 && bytes % mib == 0) return with_unit(bytes / mib, "MiB");
  if (bytes != 0 && bytes % kib == 0) return with_unit(bytes / kib, "KiB");
  return std::to_string(bytes);
}

std::string human_size(std::size_t bytes) {
  if (bytes != 0 && bytes % mib == 0) return with_unit(bytes / mib, " MiB");
  if (bytes != 0 && bytes % kib == 0) return with_unit(bytes / kib, " KiB");
  return with_unit(bytes, " B");
}

std::optional<endpoint> parse_endpoint(std::string_view text, std::string* error) {
  const std::string shape =
      "expected HOST:PORT with a literal IP address, e.g. \"0.0.0.0:3128\" or \"[::]:3128\", got " +
      in_quotes(text);
  std::string_view host;
  std::string_view port;
  bool bracketed = false;
  if (!text.empty() && text.front() == '[') {
    const auto close = text.find(']');
    if (close == std::string_view::npos || close + 1 >= text.size() || text[close + 1] != ':') {
      set_error(error, shape);
      return std::nullopt;
    }
    host = text.substr(1, close - 1);
    port = text.substr(close + 2);
    bracketed = true;
  } else {
    const auto colon = text.rfind(':');
    if (colon == std::string_view::npos) {
      set_error(error, shape);
      return std::nullopt;
    }
    host = text.substr(0, colon);
    port = text.substr(colon + 1);
    // "::1:3128" could be read several ways; brackets make the port unambiguous.
    if (host.find(':') != std::string_view::npos) {
      set_error(error,
                "IPv6 address must be in brackets, e.g. \"[::1]:3128\", got " + in_quotes(text));
      return std::nullopt;
    }
  }
  const auto addr = acl::parse_address(host);
  if (addr && addr->is_v4() && bracketed) {
    set_error(error, "brackets are for IPv6 addresses only, got " + in_quotes(text));
    return std::nullopt;
  }
  if (!addr) {
    set_error(error,
              "host " + in_quotes(host) + " is not a literal IP address (names are not allowed)");
    return std::nullopt;
  }
  auto value = split_number(port);
  if (port.empty() || !value || !value->second.empty() || value->first > 65535) {
    set_error(error, "invalid port " + in_quotes(port) + " (0-65535)");
    return std::nullopt;
  }
  return endpoint{addr->to_string(), static_cast<std::uint16_t>(value->first)};
}

std::optional<proxy_protocol_mode> parse_proxy_protocol(std::string_view text, std::string* error) {
  if (text == "off") return proxy_protocol_mode::off;
  if (text == "optional") return proxy_protocol_mode::optional;
  if (text == "required") return proxy_protocol_mode::required;
  set_error(error, "must be off, optional or required, got " + in_quotes(text));
  return std::nullopt;
}

std::optional<xff_mode> parse_xff(std::string_view text, std::string* error) {
  if (text == "append") return xff_mode::append;
  if (text == "replace") return xff_mode::replace;
  if (text == "delete") return xff_mode::remove;
  if (text == "off") return xff_mode::off;
  set_error(error, "must be append, replace, delete or off, got " + in_quotes(text));
  return std::nullopt;
}

std::optional<log_format> parse_log_format(std::string_view text, std::string* error) {
  if (text == "json") return log_format::json;
  if (text == "squid") return log_format::squid;
  set_error(error, "must be json or squid, got " + in_quotes(text));
  return std::nullopt;
}

bool parse_log_level(std::string_view text, std::string* error) {
  static constexpr std::array<std::string_view, 7> levels = {"trace", "debug",    "info", "warn",
                                                             "error", "critical", "off"};
  if (std::find(levels.begin(), levels.end(), text) != levels.end()) return true;
  set_error(error,
            "must be trace, debug, info, warn, error, critical or off, got " + in_quotes(text));
  return false;
}

bool parse_access_log(std::string_view text, std::string* error) {
  if (!text.empty()) return true;
  set_error(error, "must be stdout, off or a file path");
  return false;
}

bool parse_via_name(std::string_view text, std::string* error) {
  // RFC 9110 tchar: the pseudonym is sent in Via and compared on receipt, so it must survive
  // header parsing unchanged.
  constexpr std::string_view extra = "!#$%&'*+-.^_`|~";
  const bool ok = !text.empty() && std::all_of(text.begin(), text.end(), [&](char c) {
    return is_alnum(c) || extra.find(c) != std::string_view::npos;
  });
  if (!ok) {
    set_error(error, "must be a non-empty HTTP token (letters, digits and !#$%&'*+-.^_`|~), got " +
                         in_quotes(text));
  }
  return ok;
}

std::optional<acl::address> parse_bind_address(std::string_view text, std::string* error) {
  auto addr = acl::parse_address(text);
  if (!addr) set_error(error, in_quotes(text) + " is not an IP address literal");
  return addr;
}

std::optional<acl::cidr> parse_cidr(std::string_view text, std::string* error) {
  std::string why;
  auto c = acl::cidr::parse(text, &why);
  if (!c) set_error(error, "invalid CIDR " + in_quotes(text) + ": " + why);
  return c;
}

std::optional<acl::port_range> parse_port_item(std::string_view text, std::string* error) {
  std::string why;
  auto r = acl::port_set::parse_item(text, &why);
  if (!r) set_error(error, "invalid port or range " + in_quotes(text) + ": " + why);
  return r;
}

std::optional<std::string> parse_vpce_id(std::string_view text, std::string* error) {
  std::string id(text);
  std::transform(id.begin(), id.end(), id.begin(),
                 [](char c) { return c >= 'A' && c <= 'Z' ? char(c - 'A' + 'a') : c; });
  const std::string_view prefix = "vpce-";
  const bool ok = id.size() > prefix.size() && id.size() <= prefix.size() + 32 &&
                  id.compare(0, prefix.size(), prefix) == 0 &&
                  std::all_of(id.begin() + prefix.size(), id.end(), [](char c) {
                    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
                  });
  if (!ok) {
    set_error(error, "invalid VPC endpoint id " + in_quotes(text) +
                         ": expected vpce- and up to 32 letters or digits, e.g. "
                         "vpce-0123456789abcdef0");
    return std::nullopt;
  }
  return id;
}

std::optional<std::string> parse_domain(std::string_view text, std::string* error) {
  std::string name(text);
  std::transform(name.begin(), name.end(), name.begin(),
                 [](char c) { return c >= 'A' && c <= 'Z' ? char(c - 'A' + 'a') : c; });
  if (!name.empty() && name.back() == '.') name.pop_back();
  auto fail = [&](const std::string& why) -> std::optional<std::string> {
    set_error(error, "invalid domain " + in_quotes(text) + ": " + why);
    return std::nullopt;
  };
  if (name.empty()) return fail("empty");
  if (name.size() > 253) return fail("longer than 253 characters");
  std::string_view rest = name;
  if (rest.starts_with("*.")) rest.remove_prefix(2);
  if (rest.find('*') != std::string_view::npos) {
    return fail("a wildcard is only allowed as a leading \"*.\"");
  }
  std::string_view last;
  while (true) {
    const auto dot = rest.find('.');
    const std::string_view label = rest.substr(0, dot);
    if (label.empty()) return fail("empty label");
    if (label.size() > 63) return fail("label longer than 63 characters");
    for (char c : label) {
      if (!is_alnum(c) && c != '-') {
        return fail("invalid character " + in_quotes(std::string_view(&c, 1)) +
                    " (letters, digits and hyphens only)");
      }
    }
    if (label.front() == '-' || label.back() == '-') {
      return fail("label starts or ends with a hyphen");
    }
    last = label;
    if (dot == std::string_view::npos) break;
    rest.remove_prefix(dot + 1);
  }
  // The rule matcher treats any host with a numeric last label as an address literal (inet_aton
  // reads "10.1" and "0x7f.1" as addresses), so such a pattern could never match anything.
  const bool numeric = std::all_of(last.begin(), last.end(), is_digit);
  const bool hex = last.size() > 2 && last.starts_with("0x") &&
                   std::all_of(last.begin() + 2, last.end(),
                               [](char c) { return is_digit(c) || (c >= 'a' && c <= 'f'); });
  if (numeric || hex) return fail("an IP address, not a name; use destinations for addresses");
  return name;
}

std::string check_readable_file(const std::string& path) {
  if (path.empty()) return "must be a file path";
  if (::access(path.c_str(), R_OK) != 0) {
    return "cannot read " + in_quotes(path) + ": " +
           std::error_code(errno, std::generic_category()).message();
  }
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec))
    return in_quotes(path) + " is not a regular file";
  return {};
}

std::string_view to_name(proxy_protocol_mode m) {
  switch (m) {
    case proxy_protocol_mode::off:
      return "off";
    case proxy_protocol_mode::optional:
      return "optional";
    case proxy_protocol_mode::required:
      return "required";
  }
  return "off";
}

std::string_view to_name(xff_mode m) {
  switch (m) {
    case xff_mode::append:
      return "append";
    case xff_mode::replace:
      return "replace";
    case xff_mode::remove:
      return "delete";
    case xff_mode::off:
      return "off";
  }
  return "append";
}

std::string_view to_name(log_format f) {
  return f == log_format::squid ? "squid" : "json";
}

std::size_t edit_distance(std::string_view a, std::string_view b) {
  std::vector<std::size_t> row(b.size() + 1);
  for (std::size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (std::size_t i = 1; i <= a.size(); ++i) {
    std::size_t diagonal = row[0];
    row[0] = i;
    for (std::size_t j = 1; j <= b.size(); ++j) {
      const std::size_t above = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diagonal + (a[i - 1] == b[j - 1] ? 0 : 1)});
      diagonal = above;
    }
  }
  return row[b.size()];
}

}  // namespace egressd::config::detail
