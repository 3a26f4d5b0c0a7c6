#pragma once
// The checks that look at a finished config rather than at one value: ranges, and rules that
// span fields (proxy_protocol needs trusted_proxies, header_block >= request_line, ...). They run
// once on the final result, after the file and after the environment, so neither source can
// leave behind a combination the other would have refused.
#include <string>
#include <vector>

#include "egressd/config/config.hpp"

namespace egressd::config::detail {

struct issue {
  std::string path;                  // where the error is reported
  std::vector<std::string> related;  // other fields that take part (for attributing to a source)
  std::string message;
};

std::vector<issue> validate(const config& cfg);

// True when path is prefix itself or lies below it ("a.b" is below "a", "a[0]" is below "a").
bool path_within(const std::string& path, const std::string& prefix);

}  // namespace egressd::config::detail
