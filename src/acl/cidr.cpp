#include "egressd/acl/cidr.hpp"

#include <arpa/inet.h>

#include <algorithm>
#include <cstddef>

namespace egressd::acl {
namespace {

using boost::asio::ip::address_v4;
using boost::asio::ip::address_v6;

constexpr bool is_digit(char c) noexcept {
  return c >= '0' && c <= '9';
}

constexpr bool is_hex(char c) noexcept {
  return is_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

// Exactly four decimal parts of 1-3 digits, 0..255, no leading zeros. Written by hand rather than
// left to inet_pton/inet_aton because the libc family disagrees on "010" (octal 8 for inet_aton,
// rejected or decimal elsewhere), and an ACL must read the same text the same way everywhere.
std::optional<address_v4> parse_v4(std::string_view s) noexcept {
  address_v4::bytes_type bytes{};
  std::size_t i = 0;
  for (std::size_t part = 0; part < 4; ++part) {
    if (part > 0) {
      if (i >= s.size() || s[i] != '.') return std::nullopt;
      ++i;
    }
    const std::size_t start = i;
    unsigned value = 0;
    while (i < s.size() && is_digit(s[i]) && i - start < 3) {
      value = value * 10 + static_cast<unsigned>(s[i] - '0');
      ++i;
    }
    const std::size_t len = i - start;
    if (len == 0 || value > 255) return std::nullopt;
    if (len > 1 && s[start] == '0') return std::nullopt;
    bytes[part] = static_cast<unsigned char>(value);
  }
  // Trailing text, including a fourth digit in the last part, is refused here.
  if (i != s.size()) return std::nullopt;
  return address_v4(bytes);
}

std::optional<address_v6> parse_v6(std::string_view s) noexcept {
  // The longest valid form is "ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255" (45 chars).
  constexpr std::size_t max_len = 45;
  if (s.empty() || s.size() > max_len) return std::nullopt;
  // Only the characters of a plain literal: this keeps out zone ids ("%eth0"), brackets, spaces
  // and embedded NULs, which would otherwise cut the copy short and parse a prefix of the text.
  if (!std::all_of(s.begin(), s.end(), [](char c) { return is_hex(c) || c == ':' || c == '.'; }))
    return std::nullopt;
  char buf[max_len + 1];
  std::copy(s.begin(), s.end(), buf);
  buf[s.size()] = '\0';
  address_v6::bytes_type bytes{};
  if (::inet_pton(AF_INET6, buf, bytes.data()) != 1) return std::nullopt;
  return address_v6(bytes);
}

// Accepts decimal digits only; saturates instead of overflowing so "/000000000000000008" and
// "/99999999999" are judged by value, not by wrap-around.
std::optional<unsigned> parse_prefix_length(std::string_view s) noexcept {
  if (s.empty()) return std::nullopt;
  unsigned value = 0;
  for (char c : s) {
    if (!is_digit(c)) return std::nullopt;
    value = std::min(value * 10 + static_cast<unsigned>(c - '0'), 1000u);
  }
  return value;
}

void set_error(std::string* error, std::string message) {
  if (error) *error = std::move(message);
}

}  // namespace

address unmap(const address& a) noexcept {
  if (!a.is_v6()) return a;
  const address_v6 v6 = a.to_v6();
  if (!v6.is_v4_mapped()) return a;
  const auto b = v6.to_bytes();
  return address_v4(address_v4::bytes_type{b[12], b[13], b[14], b[15]});
}

std::optional<address> parse_address(std::string_view text) noexcept {
  // Anything with a colon can only be IPv6; everything else must be a dotted quad.
  if (text.find(':') != std::string_view::npos) {
    if (auto v6 = parse_v6(text)) return address(*v6);
    return std::nullopt;
  }
  if (auto v4 = parse_v4(text)) return address(*v4);
  return std::nullopt;
}

std::optional<cidr> cidr::from_address(const address& network, unsigned prefix_length,
                                       std::string* error) {
  cidr c;
  c.v4_ = network.is_v4();
  const unsigned max_len = c.v4_ ? 32 : 128;
  if (prefix_length > max_len) {
    set_error(error, "prefix length " + std::to_string(prefix_length) + " out of range (0-" +
                         std::to_string(max_len) + ")");
    return std::nullopt;
  }
  if (c.v4_) {
    const auto b = network.to_v4().to_bytes();
    std::copy(b.begin(), b.end(), c.bytes_.begin());
  } else {
    c.bytes_ = network.to_v6().to_bytes();
  }
  c.prefix_ = prefix_length;

  cidr masked = c;
  for (unsigned byte = prefix_length / 8; byte < masked.bytes_.size(); ++byte) {
    const unsigned kept_bits = byte == prefix_length / 8 ? prefix_length % 8 : 0;
    masked.bytes_[byte] &= static_cast<unsigned char>(0xff00u >> kept_bits);
  }
  if (masked != c) {
    set_error(error, "host bits set; did you mean " + masked.to_string() + "?");
    return std::nullopt;
  }
  return c;
}

std::optional<cidr> cidr::parse(std::string_view text, std::string* error) {
  const auto slash = text.find('/');
  const std::string_view addr_text = text.substr(0, slash);
  auto addr = parse_address(addr_text);
  if (!addr) {
    set_error(error, "invalid address '" + std::string(addr_text) + "'");
    return std::nullopt;
  }
  unsigned len = addr->is_v4() ? 32 : 128;
  if (slash != std::string_view::npos) {
    const std::string_view len_text = text.substr(slash + 1);
    auto parsed = parse_prefix_length(len_text);
    if (!parsed) {
      set_error(error, "invalid prefix length '" + std::string(len_text) + "'");
      return std::nullopt;
    }
    // Checked here, on the text, so the message quotes what was written rather than the
    // saturated value.
    if (*parsed > len) {
      set_error(error, "prefix length " + std::string(len_text) + " out of range (0-" +
                           std::to_string(len) + ")");
      return std::nullopt;
    }
    len = *parsed;
  }
  // A mapped prefix is only meaningful over the embedded IPv4 part; below /96 the ffff marker
  // itself is cut, which from_address reports as host bits set.
  const address unmapped = unmap(*addr);
  if (unmapped.is_v4() && addr->is_v6() && len >= 96) {
    addr = unmapped;
    len -= 96;
  }
  return from_address(*addr, len, error);
}

bool cidr::contains(const address& a) const noexcept {
  const address u = unmap(a);
  if (u.is_v4() != v4_) return false;
  std::array<unsigned char, 16> b{};
  if (v4_) {
    const auto b4 = u.to_v4().to_bytes();
    std::copy(b4.begin(), b4.end(), b.begin());
  } else {
    b = u.to_v6().to_bytes();
  }
  const unsigned full = prefix_ / 8;
  for (unsigned i = 0; i < full; ++i) {
    if (b[i] != bytes_[i]) return false;
  }
  const unsigned rest = prefix_ % 8;
  if (rest == 0) return true;
  const auto mask = static_cast<unsigned char>(0xff00u >> rest);
  return (b[full] & mask) == bytes_[full];
}

std::string cidr::to_string() const {
  std::string out;
  if (v4_) {
    out =
        address_v4(address_v4::bytes_type{bytes_[0], bytes_[1], bytes_[2], bytes_[3]}).to_string();
  } else {
    out = address_v6(bytes_).to_string();
  }
  out += '/';
  out += std::to_string(prefix_);
  return out;
}

bool cidr_set::contains(const address& a) const noexcept {
  return find(a) != nullptr;
}

const cidr* cidr_set::find(const address& a) const noexcept {
  for (const auto& c : items_) {
    if (c.contains(a)) return &c;
  }
  return nullptr;
}

}  // namespace egressd::acl
