#include "egressd/http/target.hpp"

#include <arpa/inet.h>

#include <array>

namespace egressd::http {
namespace {

bool is_digit(char c) {
  return c >= '0' && c <= '9';
}
bool is_alpha(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}
char lower(char c) {
  return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c;
}

// Strict dotted quad: four decimal parts 0..255 without leading zeros. inet_aton would accept
// "127.1", "0x7f.1" or "0177.0.0.1"; we never let such spellings reach the resolver.
bool is_dotted_quad(std::string_view s) {
  int parts = 0;
  std::size_t i = 0;
  while (i <= s.size()) {
    std::size_t j = i;
    while (j < s.size() && is_digit(s[j])) ++j;
    std::size_t len = j - i;
    if (len == 0 || len > 3 || (len > 1 && s[i] == '0')) return false;
    int v = 0;
    for (std::size_t k = i; k < j; ++k) v = v * 10 + (s[k] - '0');
    if (v > 255) return false;
    ++parts;
    if (j == s.size()) break;
    if (s[j] != '.') return false;
    i = j + 1;
  }
  return parts == 4;
}

// host = "[" IPv6 "]" / IPv4 / reg-name (LDH labels, '_' tolerated, one trailing dot allowed).
// store: write the host to out.host (false: only check it; the flags are still set).
target_error parse_host(std::string_view h, target& out, bool store) {
  out.host_is_ip = false;
  out.host_is_v6 = false;
  if (h.empty()) return target_error::bad_host;
  if (h.front() == '[') {
    if (h.size() < 3 || h.back() != ']') return target_error::bad_host;
    std::string inner(h.substr(1, h.size() - 2));
    // Only the characters of a plain literal, checked before inet_pton reads inner as a C
    // string: an embedded NUL would end it early, so "[::\0junk]" would pass as "::" while the
    // host (and what the session hands to make_address) kept the junk.
    for (char c : inner) {
      if (!is_digit(c) && !(lower(c) >= 'a' && lower(c) <= 'f') && c != ':' && c != '.')
        return target_error::bad_host;
    }
    // inet_pton rejects zone ids ("%eth0") and IPvFuture, which is what we want.
    std::array<unsigned char, 16> buf{};
    if (inet_pton(AF_INET6, inner.c_str(), buf.data()) != 1) return target_error::bad_host;
    for (auto& c : inner) c = lower(c);
    if (store) out.host = std::move(inner);
    out.host_is_ip = out.host_is_v6 = true;
    return target_error::none;
  }
  // DNS names are at most 253 bytes, 254 with the trailing dot of the FQDN form.
  if (h.size() > (h.back() == '.' ? 254u : 253u)) return target_error::bad_host;
  // Checked on h as received: lower-casing changes letters only, and none of the checks below
  // depends on a letter's case. The lower-cased copy is written (into out.host's own storage,
  // reused across requests) only once the name is known to be valid.
  std::size_t label_len = 0;
  std::size_t last_label_start = 0;
  for (std::size_t i = 0; i < h.size(); ++i) {
    char c = h[i];
    if (c == '.') {
      // Empty labels ("a..b", ".a") are not names; a single trailing dot is the FQDN form.
      if (label_len == 0) return target_error::bad_host;
      if (i + 1 < h.size()) last_label_start = i + 1;
      label_len = 0;
    } else if (is_alpha(c) || is_digit(c) || c == '-' || c == '_') {
      if (++label_len > 63) return target_error::bad_host;
    } else {
      // ':' here is an unbracketed IPv6 literal, '%' percent-encoding, >= 0x80 non-ASCII.
      return target_error::bad_host;
    }
  }
  if (label_len == 0 && h.back() != '.') return target_error::bad_host;
  // A name whose last label starts with a digit is an attempt at an IPv4 literal (WHATWG's
  // "ends in a number" rule): accept it only as a strict dotted quad.
  std::string_view last = h.substr(last_label_start);
  if (!last.empty() && last.back() == '.') last.remove_suffix(1);
  if (!last.empty() && is_digit(last.front())) {
    std::string_view whole = h;
    if (!whole.empty() && whole.back() == '.') return target_error::bad_host;
    if (!is_dotted_quad(whole)) return target_error::bad_host;
    out.host_is_ip = true;
  }
  if (store) {
    out.host.assign(h);
    for (auto& c : out.host) c = lower(c);
  }
  return target_error::none;
}

target_error parse_port(std::string_view p, std::uint16_t& port) {
  if (p.empty() || p.size() > 5) return target_error::bad_port;
  unsigned v = 0;
  for (char c : p) {
    if (!is_digit(c)) return target_error::bad_port;
    v = v * 10 + static_cast<unsigned>(c - '0');
  }
  if (v == 0 || v > 65535) return target_error::bad_port;
  port = static_cast<std::uint16_t>(v);
  return target_error::none;
}

// Splits "host[:port]" respecting IPv6 brackets.
target_error parse_authority(std::string_view a, bool port_required, std::uint16_t default_port,
                             target& out, bool store_host = true) {
  if (a.find('@') != std::string_view::npos) return target_error::userinfo;
  std::string_view host = a;
  std::string_view port;
  bool has_port = false;
  if (!a.empty() && a.front() == '[') {
    auto close = a.find(']');
    if (close == std::string_view::npos) return target_error::bad_host;
    host = a.substr(0, close + 1);
    auto rest = a.substr(close + 1);
    if (!rest.empty()) {
      if (rest.front() != ':') return target_error::bad_host;
      port = rest.substr(1);
      has_port = true;
    }
  } else {
    auto colon = a.find(':');
    if (colon != std::string_view::npos) {
      host = a.substr(0, colon);
      port = a.substr(colon + 1);
      has_port = true;
      // A second colon means an unbracketed IPv6 literal.
      if (port.find(':') != std::string_view::npos) return target_error::bad_host;
    }
  }
  if (auto e = parse_host(host, out, store_host); e != target_error::none) return e;
  if (has_port) return parse_port(port, out.port);
  if (port_required) return target_error::bad_port;
  out.port = default_port;
  return target_error::none;
}

}  // namespace

std::string target::authority() const {
  std::string s;
  if (host_is_v6) {
    s = "[" + host + "]";
  } else {
    s = host;
  }
  s += ':';
  s += std::to_string(port);
  return s;
}

std::string target::host_header(std::uint16_t default_port) const {
  std::string s = host_is_v6 ? "[" + host + "]" : host;
  if (port != default_port) {
    s += ':';
    s += std::to_string(port);
  }
  return s;
}

std::string_view to_string(target_error e) noexcept {
  switch (e) {
    case target_error::none:
      return "ok";
    case target_error::not_absolute:
      return "request target is not an absolute http:// URI";
    case target_error::bad_scheme:
      return "only http:// is forwarded (use CONNECT for https)";
    case target_error::userinfo:
      return "userinfo in request target";
    case target_error::bad_host:
      return "invalid host in request target";
    case target_error::bad_port:
      return "invalid or missing port in request target";
    case target_error::bad_path:
      return "invalid bytes in request path";
  }
  return "invalid request target";
}

target_error parse_absolute_target(std::string_view raw, target& out) {
  constexpr std::string_view scheme = "http://";
  if (raw.empty() || raw.front() == '/' || raw == "*") return target_error::not_absolute;
  if (raw.size() < scheme.size() || !std::equal(scheme.begin(), scheme.end(), raw.begin(),
                                                [](char a, char b) { return a == lower(b); })) {
    // Tell "https://..." apart from junk for a clearer error; both are rejected.
    return raw.find("://") != std::string_view::npos ? target_error::bad_scheme
                                                     : target_error::not_absolute;
  }
  std::string_view rest = raw.substr(scheme.size());
  std::size_t end = rest.find_first_of("/?#");
  std::string_view authority = rest.substr(0, end);
  std::string_view path = end == std::string_view::npos ? std::string_view{} : rest.substr(end);
  if (auto e = parse_authority(authority, false, 80, out); e != target_error::none) return e;
  for (char c : path) {
    auto u = static_cast<unsigned char>(c);
    // Visible ASCII only; '#' never belongs in a request target (fragments stay in the client).
    if (u <= 0x20 || u >= 0x7f || c == '#') return target_error::bad_path;
  }
  if (path.empty()) {
    out.path = "/";
  } else if (path.front() == '?') {
    out.path = "/";
    out.path.append(path);
  } else {
    out.path.assign(path);
  }
  return target_error::none;
}

bool valid_host_field(std::string_view value) {
  target scratch;
  return parse_authority(value, false, 80, scratch, false) == target_error::none;
}

target_error parse_authority_target(std::string_view raw, target& out) {
  if (raw.empty()) return target_error::bad_host;
  if (raw.find_first_of("/?#") != std::string_view::npos) return target_error::bad_host;
  out.path.clear();
  return parse_authority(raw, true, 0, out);
}

}  // namespace egressd::http
