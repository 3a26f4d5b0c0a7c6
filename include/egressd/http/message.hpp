#pragma once
// HTTP/1.1 message heads as egressd parses them: strict request parsing (STYLE.md "Strict
// parsing"), response parsing for relaying, and the framing decisions of RFC 9112 section 6.
// Pure code; the parsed fields are views into the caller's buffer, which must outlive them.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "egressd/core/error.hpp"
#include "egressd/http/target.hpp"

namespace egressd::http {

struct field {
  std::string_view name;   // as received (case preserved)
  std::string_view value;  // leading and trailing whitespace removed
};

enum class framing : std::uint8_t {
  none,            // no body
  content_length,  // exactly content_length bytes
  chunked,         // chunked transfer coding
  until_close,     // (responses only) body ends when the upstream closes
};

struct head_limits {
  std::size_t request_line = 8 * 1024;
  std::size_t header_block = 64 * 1024;
  std::size_t header_fields = 100;
};

// Outcome of scanning a growing buffer for the end of a message head.
struct scan_result {
  enum kind : std::uint8_t { need_more, complete, error } status = need_more;
  std::size_t head_length = 0;  // complete: bytes up to and including the blank line
  std::size_t skipped = 0;      // complete: leading empty lines skipped (RFC 9112 section 2.2)
  proxy_error err = proxy_error::none;
};

// Incremental scan: call again with the same (grown) buffer as bytes arrive. Rejects a bare CR
// or bare LF as soon as it is seen, a request line longer than limits.request_line (414) and a
// head longer than limits.header_block (431), so a hostile client cannot make us buffer more.
class head_scanner {
 public:
  explicit head_scanner(head_limits limits) : limits_(limits) {}
  scan_result scan(std::string_view buffer);
  void reset() {
    pos_ = 0;
    skipped_ = 0;
    line_end_ = 0;
  }

 private:
  head_limits limits_;
  std::size_t pos_ = 0;       // bytes already checked
  std::size_t skipped_ = 0;   // leading CRLFs skipped
  std::size_t line_end_ = 0;  // end of the request line once seen (0: not yet)
};

struct request_head {
  std::string_view method;
  std::string_view target_raw;
  int version_minor = 1;  // HTTP/1.0 or HTTP/1.1
  std::vector<field> fields;

  bool is_connect = false;
  target tgt;
  framing body = framing::none;
  std::uint64_t content_length = 0;
  bool keep_alive = true;        // the client allows another request on this connection
  bool expect_continue = false;  // Expect: 100-continue
};

struct parse_error {
  proxy_error err = proxy_error::none;
  std::string_view detail;  // short constant text for logs, e.g. "whitespace before colon"
  explicit operator bool() const noexcept { return err != proxy_error::none; }
};

// Parses a complete request head (as delimited by head_scanner, leading empty lines already
// skipped) and validates it: request line, field syntax, Host, framing, target. On error, out is
// partially filled (method and target when they parsed) for logging.
parse_error parse_request(std::string_view head, const head_limits& limits, request_head& out);

struct response_head {
  int version_minor = 1;
  int status = 0;
  std::string_view reason;
  std::vector<field> fields;
  framing body = framing::none;
  std::uint64_t content_length = 0;
  bool keep_alive = false;  // the upstream allows reuse (not used for pooling yet)
};

// Parses an upstream response head. request_method decides bodies of HEAD and 2xx CONNECT.
// Ambiguous framing (CL with TE, differing CLs, non-chunked TE codings before chunked) is an
// upstream_bad_response: we refuse to guess, as a desync between us and the client is worse.
parse_error parse_response(std::string_view head, std::string_view request_method,
                           const head_limits& limits, response_head& out);

// Case-insensitive ASCII comparison. Inline: the parsers call it for every field against each
// name they look for, and most calls end at the size check.
inline bool iequals(std::string_view a, std::string_view b) noexcept {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i) {
    char x = a[i], y = b[i];
    if (x >= 'A' && x <= 'Z') x = static_cast<char>(x - 'A' + 'a');
    if (y >= 'A' && y <= 'Z') y = static_cast<char>(y - 'A' + 'a');
    if (x != y) return false;
  }
  return true;
}

// True for the hop-by-hop fields of RFC 9110 section 7.6.1 that egressd always removes:
// Connection, Proxy-Connection, Keep-Alive, Proxy-Authorization, Proxy-Authenticate, TE,
// Trailer, Upgrade, and Transfer-Encoding/Content-Length (re-framed by egressd).
bool is_hop_by_hop(std::string_view name) noexcept;

// True when name is listed in any Connection field of fields (those fields are hop-by-hop too).
bool listed_in_connection(const std::vector<field>& fields, std::string_view name) noexcept;

}  // namespace egressd::http
