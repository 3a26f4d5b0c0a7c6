#pragma once
// PROXY protocol v1 and v2 receiver (HAProxy "The PROXY protocol, Versions 1 & 2", 2020/03/05;
// section numbers below refer to it). Pure code: no sockets, no allocation except the VPC
// endpoint id. The caller buffers the first bytes of a connection and calls parse() on all of
// them after every read; parse() is stateless, so calling it again on a longer buffer is how it
// is fed incrementally.
//
// Strictness: a header that matches the protocol only loosely is an error, never "fixed up".
// What is a PROXY header at all is decided on the first bytes: the 12-byte v2 signature, or the
// 6 bytes "PROXY " (v1), compared byte by byte, so anything else is not_proxy as soon as one
// byte differs. Note that "PROXY" is a valid HTTP method token: a request "PROXY / HTTP/1.1"
// starts with "PROXY " and is therefore read as a (bad) v1 header, never as HTTP. "PROXYFOO ..."
// or "PROXY\r\n" do not start with "PROXY " and are not_proxy.
//
// Trust is not this parser's business: the session must honour a header only from a trusted
// peer (section 5), and use the real peer when has_addresses() is false.
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include "egressd/acl/cidr.hpp"

namespace egressd::net::proxy_protocol {

// Section 2.1: "PROXY UNKNOWN ...\r\n" with the worst-case fields is 107 bytes including CRLF.
inline constexpr std::size_t v1_max_length = 107;

// The 16-bit v2 length field could announce 64 KiB, all of which the receiver would have to
// buffer before the first byte of the request, per connection. The spec wants the header to fit
// in one 536-byte segment (section 2); an AWS NLB sends 84 bytes after the fixed part, HAProxy's
// send-proxy-v2 with every SSL sub-TLV stays well under 1 KiB. 4096 leaves a wide margin for
// padding and TLVs and bounds the cost of a slow or hostile sender.
inline constexpr std::size_t v2_max_payload = 4096;
inline constexpr std::size_t v2_fixed_length = 16;  // signature, ver/cmd, family, length

// The AWS VPC endpoint id is logged and matched in rules; real ones are 22 characters.
inline constexpr std::size_t vpce_id_max_length = 64;

enum class command : std::uint8_t {
  local,  // v2 LOCAL or v1 UNKNOWN: health check or unknown origin, use the real peer
  proxy,  // relayed connection: addresses come from the header (unless family is unspec)
};

enum class family : std::uint8_t {
  unspec,  // v2 AF_UNSPEC, and every LOCAL / UNKNOWN header: no addresses
  tcp4,    // v1 TCP4, v2 0x11
  tcp6,    // v1 TCP6, v2 0x21 (the addresses may still be IPv4 after un-mapping)
};

struct header {
  std::uint8_t version = 0;  // 1 or 2
  proxy_protocol::command command = proxy_protocol::command::local;
  proxy_protocol::family family = proxy_protocol::family::unspec;
  // Valid only when has_addresses(). Both are un-mapped (acl::unmap): "::ffff:192.0.2.1" in a
  // TCP6 header becomes 192.0.2.1, so a mapped form can never slip past an IPv4 rule.
  acl::address source_address;
  std::uint16_t source_port = 0;
  acl::address destination_address;
  std::uint16_t destination_port = 0;
  // AWS TLV 0xEA subtype 0x01, only in v2 PROXY headers with a TCP family. Printable ASCII
  // without spaces (0x21-0x7e), 1 to vpce_id_max_length characters.
  std::optional<std::string> vpce_id;
  bool crc32c_verified = false;   // a PP2_TYPE_CRC32C TLV was present and matched
  std::size_t header_length = 0;  // bytes to drop from the start of the connection

  // False for LOCAL, v1 UNKNOWN and v2 PROXY with AF_UNSPEC: the session then uses the real
  // connection endpoints, as sections 2.1 and 2.2 require.
  bool has_addresses() const noexcept {
    return command == proxy_protocol::command::proxy && family != proxy_protocol::family::unspec;
  }

  friend bool operator==(const header&, const header&) = default;
};

enum class status : std::uint8_t {
  need_more,  // a prefix of a possible header: read more, then call parse() again
  done,       // a complete, valid header of header.header_length bytes
  not_proxy,  // these bytes cannot start a PROXY header (mode optional: hand them to HTTP)
  error,      // a PROXY header, but malformed or unsupported: close the connection
};

enum class error : std::uint8_t {
  none,
  // v1 (section 2.1)
  v1_too_long,      // no CRLF within the first 107 bytes
  v1_bad_line_end,  // CR not followed by LF, or LF without CR
  v1_bad_char,      // a byte outside printable ASCII, or outside the family's alphabet
  v1_bad_protocol,  // not "TCP4", "TCP6" or "UNKNOWN" after exactly one space
  v1_bad_format,    // wrong number of fields, or not exactly one space between them
  v1_bad_address,   // not a strict literal of the announced family
  v1_bad_port,      // not 0-65535 in decimal without leading zeros
  // v2 (section 2.2)
  v2_bad_version,            // high nibble of byte 13 is not 2
  v2_bad_command,            // neither LOCAL nor PROXY
  v2_bad_family,             // an unassigned family/transport byte
  v2_unsupported_transport,  // UDP or UNIX: egressd relays TCP only
  v2_too_long,               // length field over v2_max_payload
  v2_short_length,           // length does not cover the address block
  v2_tlv_truncated,          // a TLV's header or value runs past the end of the header
  v2_bad_crc32c_tlv,         // CRC32C TLV whose value is not exactly 4 bytes
  v2_crc32c_mismatch,        // checksum does not match (section 2.2.3: the receiver MUST drop)
  v2_duplicate_tlv,          // a second CRC32C or VPC endpoint id TLV (which one would count?)
  v2_bad_aws_tlv,            // AWS TLV (0xEA) without a subtype byte
  v2_bad_vpce_id,            // empty, too long, or not printable ASCII
};

// A short constant description ("v2: CRC32C mismatch"), for logs.
std::string_view to_string(error e) noexcept;

struct result {
  proxy_protocol::status status = proxy_protocol::status::need_more;
  // need_more: parse() cannot answer differently before the buffer (counted from the first byte
  // of the connection) holds at least this many bytes. Always > the size passed in, and never
  // beyond the end of the header, so reading exactly up to it never takes bytes of the request
  // that follows. Once a v2 length is known this is the whole header length.
  std::size_t bytes_needed = 0;
  proxy_protocol::error error = proxy_protocol::error::none;  // status::error
  proxy_protocol::header header;                              // status::done
};

// Parses the PROXY header at the start of data (all bytes received so far). Never reads past
// the header: the bytes after header.header_length belong to the request. A decided answer
// (done, not_proxy, error) never changes when more bytes are appended.
result parse(std::span<const std::uint8_t> data);
result parse(std::string_view data);

// CRC32C (Castagnoli, reflected polynomial 0x82F63B78), as RFC 4960 appendix B and section
// 2.2.3 use it. crc is the value returned for the previous piece, so a message can be
// checksummed in pieces: crc32c(b, crc32c(a)) == crc32c(a + b).
std::uint32_t crc32c(std::span<const std::uint8_t> data, std::uint32_t crc = 0) noexcept;

}  // namespace egressd::net::proxy_protocol
