#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace egressd::acl {

struct port_range {
  std::uint16_t lo = 0;
  std::uint16_t hi = 0;
  friend bool operator==(const port_range&, const port_range&) = default;
};

class port_set {
 public:
  // One item: "443" or "8000-8100" (inclusive, lo <= hi, 1..65535, decimal digits only).
  static std::optional<port_range> parse_item(std::string_view text, std::string* error = nullptr);
  // A comma list of items, spaces around items allowed: "443, 8443, 9000-9100". Empty text or an
  // empty item is an error.
  static std::optional<port_set> parse_list(std::string_view text, std::string* error = nullptr);

  void add(port_range r) { ranges_.push_back(r); }
  bool contains(std::uint16_t port) const noexcept;
  bool empty() const noexcept { return ranges_.empty(); }
  const std::vector<port_range>& ranges() const noexcept { return ranges_; }
  std::string to_string() const;  // "443,8000-8100"

 private:
  std::vector<port_range> ranges_;
};

}  // namespace egressd::acl
