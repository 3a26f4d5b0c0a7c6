#pragma once
// Every failure a proxy session can end in, mapped to a response in exactly one place
// (describe()). The session records the first error it meets; the access log, the response and
// (later) the metrics all read the same value, so they never disagree.
#include <cstdint>
#include <string_view>

namespace egressd {

// Who caused the error: the client, the upstream, our own policy, or egressd itself.
enum class error_source : std::uint8_t { none, downstream, upstream, policy, internal };

enum class proxy_error : std::uint8_t {
  none,
  // downstream (client) errors
  bad_request,            // malformed syntax, bad target, framing conflict -> 400, close
  uri_too_long,           // request line over the limit -> 414
  header_too_large,       // header block or field count over the limit -> 431
  header_timeout,         // whole header not received in time -> 408
  method_not_allowed,     // TRACE -> 405
  not_implemented,        // unsupported transfer coding -> 501
  version_not_supported,  // HTTP/x.y other than 1.0 and 1.1 -> 505
  expectation_failed,     // Expect other than 100-continue -> 417
  client_closed,          // client went away mid-request (no response possible)
  client_timeout,         // no progress from the client (body, tunnel) -> close
  // policy
  source_denied,       // client address outside the source gate -> 403
  port_denied,         // destination port outside the port gate -> 403
  rule_denied,         // an access rule denies (or no rule matched) -> 403
  destination_denied,  // every resolved address is a special/forbidden range -> 403
  ip_literal_denied,   // target is an IP address and gates.deny_ip_literals is on -> 403
  loop_detected,       // our own Via, or the destination is egressd itself -> 508
  // upstream
  dns_error,               // NXDOMAIN, SERVFAIL, no address -> 502
  dns_timeout,             // -> 504
  connect_refused,         // refused / reset / unreachable -> 502
  connect_timeout,         // -> 504
  upstream_bad_response,   // unparsable or ambiguous response -> 502
  upstream_timeout,        // no response header in time -> 504
  upstream_closed,         // upstream closed or reset mid-response -> 502 (or abort)
  upstream_idle,           // no progress from the upstream -> close
  tunnel_idle,             // tunnel carried no byte either way for tunnel_idle -> close
  tunnel_reset,            // a tunnel side reset or failed -> close
  proxy_header_invalid,    // malformed or truncated PROXY protocol header -> close, no response
  proxy_header_untrusted,  // PROXY header from a peer outside trusted_proxies -> close
  proxy_header_missing,    // proxy_protocol: required, and no header came -> close
  // internal
  draining,        // shutting down -> 503
  over_limit,      // over the connection limit -> 503
  internal_error,  // -> 500
};

struct error_info {
  int status;                     // HTTP status egressd answers with (0: none possible)
  error_source source;            // who is to blame
  std::string_view name;          // stable snake_case name for logs and metric labels
  std::string_view proxy_status;  // RFC 9209 error type for the Proxy-Status header
  std::string_view reason;        // short human text for the response body
};

// The single mapping from error to status, blame, names and text.
const error_info& describe(proxy_error e) noexcept;

}  // namespace egressd
