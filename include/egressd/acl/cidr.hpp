#pragma once
// IP prefixes and sets of them. Pure code: no sockets, no allocation on lookups.
#include <algorithm>
#include <array>
#include <boost/asio/ip/address.hpp>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace egressd::acl {

using address = boost::asio::ip::address;

// An IPv4-mapped IPv6 address (::ffff:a.b.c.d) becomes the IPv4 address it carries; every other
// address is returned unchanged. All matching in egressd happens on un-mapped addresses, so a
// mapped form can never slip past a v4 rule.
address unmap(const address& a) noexcept;

// Parses an address literal: dotted IPv4 (exactly four decimal parts, no leading zeros, no
// octal/hex forms) or IPv6 without brackets or zone id. Returns nullopt on anything else.
std::optional<address> parse_address(std::string_view text) noexcept;

class cidr {
 public:
  // "10.0.0.0/8", "fd00::/8", or a bare address (a /32 or /128). Host bits set below the prefix
  // are an error ("10.0.0.1/8"), so a typo never silently widens a rule. The address is un-mapped
  // first, so "::ffff:10.0.0.0/104" becomes "10.0.0.0/8".
  static std::optional<cidr> parse(std::string_view text, std::string* error = nullptr);

  // The prefix network/prefix_length taken exactly as given, without un-mapping: the special
  // range ::ffff:0:0/96 must stay a v6 prefix, where parse() would turn it into 0.0.0.0/0. Same
  // checks as parse(): prefix length in range, no host bits set.
  static std::optional<cidr> from_address(const address& network, unsigned prefix_length,
                                          std::string* error = nullptr);

  // True when a (after unmap) is inside the prefix. A v4 prefix never matches a native v6
  // address and vice versa.
  bool contains(const address& a) const noexcept;

  bool is_v4() const noexcept { return v4_; }
  unsigned prefix_length() const noexcept { return prefix_; }
  std::string to_string() const;

  friend bool operator==(const cidr&, const cidr&) = default;

 private:
  std::array<unsigned char, 16> bytes_{};  // network address; v4 uses the first 4 bytes
  unsigned prefix_ = 0;
  bool v4_ = true;
};

class cidr_set {
 public:
  cidr_set() = default;
  explicit cidr_set(std::vector<cidr> items) : items_(std::move(items)) {}

  void add(const cidr& c) { items_.push_back(c); }
  // Adds the prefixes not already present (merging lists is idempotent).
  void add(const cidr_set& other) {
    for (const auto& c : other.items_) {
      if (std::find(items_.begin(), items_.end(), c) == items_.end()) items_.push_back(c);
    }
  }
  bool contains(const address& a) const noexcept;
  // The first prefix containing a, or nullptr.
  const cidr* find(const address& a) const noexcept;
  bool empty() const noexcept { return items_.empty(); }
  std::size_t size() const noexcept { return items_.size(); }
  const std::vector<cidr>& items() const noexcept { return items_; }

 private:
  std::vector<cidr> items_;
};

}  // namespace egressd::acl
