#include "egressd/core/error.hpp"

#include <array>

namespace egressd {
namespace {

using es = error_source;
constexpr std::array<error_info, static_cast<std::size_t>(proxy_error::internal_error) + 1> table{{
    {0, es::none, "none", "", ""},
    {400, es::downstream, "bad_request", "http_request_error", "Malformed or ambiguous request"},
    {414, es::downstream, "uri_too_long", "http_request_error", "Request line too long"},
    {431, es::downstream, "header_too_large", "http_request_error",
     "Request header block too large or too many fields"},
    {408, es::downstream, "header_timeout", "http_request_error",
     "Request header not received in time"},
    {405, es::downstream, "method_not_allowed", "http_request_denied", "Method not allowed"},
    {501, es::downstream, "not_implemented", "http_request_error",
     "Transfer coding not implemented"},
    {505, es::downstream, "version_not_supported", "http_protocol_error",
     "HTTP version not supported"},
    {417, es::downstream, "expectation_failed", "http_request_error", "Expectation not supported"},
    {0, es::downstream, "client_closed", "", "Client closed the connection"},
    {0, es::downstream, "client_timeout", "", "Client made no progress"},
    {403, es::policy, "source_denied", "http_request_denied",
     "Client address is not allowed to use this proxy"},
    {403, es::policy, "port_denied", "http_request_denied", "Destination port is not allowed"},
    {403, es::policy, "rule_denied", "http_request_denied", "Denied by access rules"},
    {403, es::policy, "destination_denied", "destination_ip_prohibited",
     "Destination address is not allowed"},
    {403, es::policy, "ip_literal_denied", "destination_ip_prohibited",
     "Destination must be a host name, not an IP address"},
    {508, es::policy, "loop_detected", "proxy_loop_detected", "Forwarding loop detected"},
    {502, es::upstream, "dns_error", "dns_error", "Destination host name could not be resolved"},
    {504, es::upstream, "dns_timeout", "dns_timeout", "DNS lookup timed out"},
    {502, es::upstream, "connect_refused", "connection_refused",
     "Could not connect to the destination"},
    {504, es::upstream, "connect_timeout", "connection_timeout",
     "Connecting to the destination timed out"},
    {502, es::upstream, "upstream_bad_response", "http_protocol_error",
     "Destination sent an invalid response"},
    {504, es::upstream, "upstream_timeout", "http_response_timeout",
     "Destination did not respond in time"},
    {502, es::upstream, "upstream_closed", "http_response_incomplete",
     "Destination closed the connection"},
    {0, es::upstream, "upstream_idle", "connection_read_timeout", "Destination made no progress"},
    {0, es::none, "tunnel_idle", "", "Tunnel idle timeout"},
    {0, es::none, "tunnel_reset", "", "Tunnel reset by a peer"},
    {0, es::downstream, "proxy_header_invalid", "", "Malformed PROXY protocol header"},
    {0, es::policy, "proxy_header_untrusted", "", "PROXY protocol header from an untrusted peer"},
    {0, es::downstream, "proxy_header_missing", "", "PROXY protocol header required"},
    {503, es::internal, "draining", "proxy_internal_response", "Proxy is shutting down"},
    {503, es::internal, "over_limit", "connection_limit_reached", "Proxy connection limit reached"},
    {500, es::internal, "internal_error", "proxy_internal_error", "Internal proxy error"},
}};

}  // namespace

const error_info& describe(proxy_error e) noexcept {
  auto i = static_cast<std::size_t>(e);
  return i < table.size() ? table[i] : table.back();
}

}  // namespace egressd
