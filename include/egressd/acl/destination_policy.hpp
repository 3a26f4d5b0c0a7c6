#pragma once
// Which resolved destination addresses egressd may connect to (SPEC section 5).
#include <string_view>

#include "egressd/acl/cidr.hpp"

namespace egressd::acl {

struct special_range {
  cidr range;
  std::string_view name;  // e.g. "loopback", "link_local", "private"
};

// The SPEC section 5 deny list, in SPEC order.
const std::vector<special_range>& special_ranges();

struct destination_verdict {
  bool allowed = false;
  std::string_view reason;  // empty when allowed; the special range name, or "denied_by_config"
};

class destination_policy {
 public:
  destination_policy() = default;
  // deny_special: apply special_ranges(). allow: exceptions re-allowed despite the deny list.
  // deny: extra ranges denied even when not special (an exception in allow does not lift these).
  destination_policy(bool deny_special, cidr_set allow, cidr_set deny)
      : deny_special_(deny_special), allow_(std::move(allow)), deny_(std::move(deny)) {}

  // Un-maps a first. Order: extra deny -> exception allow -> special deny -> allowed.
  destination_verdict check(const address& a) const noexcept;

 private:
  bool deny_special_ = true;
  cidr_set allow_;
  cidr_set deny_;
};

}  // namespace egressd::acl
