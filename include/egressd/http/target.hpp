#pragma once
// Request-target parsing (RFC 9112 section 3.2): absolute-form http:// URIs for plain forwarding
// and authority-form host:port for CONNECT. Strict: anything ambiguous is rejected.
#include <cstdint>
#include <string>
#include <string_view>

namespace egressd::http {

struct target {
  std::string host;         // lower-cased name, or an IP literal without brackets
  bool host_is_ip = false;  // IPv4 dotted quad or IPv6 literal
  bool host_is_v6 = false;  // IPv6 literal (needs brackets when printed)
  std::uint16_t port = 0;
  std::string path;               // origin-form: path and query, "/" when the URI had none
  std::string authority() const;  // "host:port" / "[v6]:port", for logs and CONNECT
  std::string host_header(std::uint16_t default_port) const;  // port omitted when default
};

enum class target_error : std::uint8_t {
  none,
  not_absolute,  // origin-form or asterisk-form where absolute-form is required
  bad_scheme,    // https://, ftp://... (only http:// is forwarded in plain form)
  userinfo,      // user:pass@ in the authority
  bad_host,      // empty, non-ASCII, percent-encoded, unbracketed IPv6, bad label bytes
  bad_port,      // missing where required, empty, non-digit, 0, over 65535
  bad_path,      // control bytes, space, non-ASCII, fragment
};

std::string_view to_string(target_error e) noexcept;

// "http://host[:port][/path[?query]]": scheme case-insensitive; default port 80.
target_error parse_absolute_target(std::string_view raw, target& out);

// "host:port" for CONNECT; the port is required.
target_error parse_authority_target(std::string_view raw, target& out);

// A Host field value "host[:port]" (no '/', '?', '#' or '@' in it, which the caller rejects
// first): true exactly when parse_absolute_target accepts "http://" + value. Stores nothing.
bool valid_host_field(std::string_view value);

}  // namespace egressd::http
