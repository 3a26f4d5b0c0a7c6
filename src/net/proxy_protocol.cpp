#include "egressd/net/proxy_protocol.hpp"

#include <algorithm>
#include <array>

namespace egressd::net::proxy_protocol {
namespace {

using bytes = std::span<const std::uint8_t>;

// Section 2.2: "\r\n\r\n\0\r\nQUIT\n". It holds a NUL, so it is never treated as a C string.
constexpr std::array<std::uint8_t, 12> v2_signature = {0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D,
                                                       0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A};
// Section 2.1: "PROXY" and exactly one space. Matching the space too keeps "PROXYFOO ..." (an
// HTTP extension method) out of v1.
constexpr std::string_view v1_prefix = "PROXY ";

// Section 2.2, byte 14 for the PROXY command, and the address block length each one implies.
constexpr std::uint8_t fam_unspec = 0x00;
constexpr std::uint8_t fam_tcp4 = 0x11;
constexpr std::uint8_t fam_udp4 = 0x12;
constexpr std::uint8_t fam_tcp6 = 0x21;
constexpr std::uint8_t fam_udp6 = 0x22;
constexpr std::uint8_t fam_unix_stream = 0x31;
constexpr std::uint8_t fam_unix_dgram = 0x32;
constexpr std::size_t tcp4_block = 2 * 4 + 2 * 2;
constexpr std::size_t tcp6_block = 2 * 16 + 2 * 2;

// TLV types (section 2.2 and 2.2.3-2.2.4; 0xEA is AWS's, in the custom range of 2.2.8).
constexpr std::uint8_t pp2_type_crc32c = 0x03;
constexpr std::uint8_t pp2_type_aws = 0xEA;
constexpr std::uint8_t pp2_subtype_aws_vpce_id = 0x01;
constexpr std::size_t tlv_header = 3;  // type, length high, length low

constexpr std::array<std::uint32_t, 256> make_crc32c_table() {
  std::array<std::uint32_t, 256> table{};
  for (std::uint32_t n = 0; n < 256; ++n) {
    std::uint32_t c = n;
    for (int bit = 0; bit < 8; ++bit) c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : c >> 1;
    table[n] = c;
  }
  return table;
}
constexpr auto crc32c_table = make_crc32c_table();

result need(std::size_t n) {
  result r;
  r.status = status::need_more;
  r.bytes_needed = n;
  return r;
}

result fail(error e) {
  result r;
  r.status = status::error;
  r.error = e;
  return r;
}

result not_proxy() {
  result r;
  r.status = status::not_proxy;
  return r;
}

result done(header h) {
  result r;
  r.status = status::done;
  r.header = std::move(h);
  return r;
}

std::uint16_t be16(const std::uint8_t* p) noexcept {
  return static_cast<std::uint16_t>((p[0] << 8) | p[1]);
}

std::uint32_t be32(const std::uint8_t* p) noexcept {
  return (std::uint32_t{p[0]} << 24) | (std::uint32_t{p[1]} << 16) | (std::uint32_t{p[2]} << 8) |
         std::uint32_t{p[3]};
}

// ---- v1 (section 2.1) ----

enum class v1_proto : std::uint8_t { tcp4, tcp6, unknown };

struct v1_token {
  std::string_view text;
  v1_proto proto;
};

// "TCP4"/"TCP6" are always followed by one space and four fields; "UNKNOWN" by a space or the
// CRLF, which is checked separately.
constexpr std::array<v1_token, 3> v1_tokens = {{
    {"TCP4 ", v1_proto::tcp4},
    {"TCP6 ", v1_proto::tcp6},
    {"UNKNOWN", v1_proto::unknown},
}};

constexpr bool is_digit(std::uint8_t c) noexcept {
  return c >= '0' && c <= '9';
}

constexpr bool is_hex(std::uint8_t c) noexcept {
  return is_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

// The bytes a line of this protocol can hold between the protocol token and the CRLF. Checked
// byte by byte as the line arrives, so "PROXY TCP4 1.2.3.4\0..." is refused at the NUL instead
// of after waiting for a CRLF that a confused sender may never send. The full parse at the
// CRLF does not rely on it.
constexpr bool v1_allowed(v1_proto proto, std::uint8_t c) noexcept {
  switch (proto) {
    case v1_proto::tcp4:
      return is_digit(c) || c == '.' || c == ' ';
    case v1_proto::tcp6:
      // Hex groups, colons, and the dotted tail of forms like ::ffff:192.0.2.1.
      return is_hex(c) || c == ':' || c == '.' || c == ' ';
    case v1_proto::unknown:
      // The spec says to ignore what follows UNKNOWN; it still has to be a line of text.
      return c >= 0x20 && c <= 0x7E;
  }
  return false;
}

// Decimal 0-65535, no sign, no leading zero (section 2.1: no confusion with octal).
std::optional<std::uint16_t> parse_v1_port(std::string_view s) noexcept {
  if (s.empty() || s.size() > 5) return std::nullopt;
  if (s.size() > 1 && s[0] == '0') return std::nullopt;
  std::uint32_t v = 0;
  for (char ch : s) {
    if (!is_digit(static_cast<std::uint8_t>(ch))) return std::nullopt;
    v = v * 10 + static_cast<std::uint32_t>(ch - '0');
  }
  if (v > 65535) return std::nullopt;
  return static_cast<std::uint16_t>(v);
}

// line: the whole header including "PROXY " and the CRLF; every byte already checked against
// the alphabet of proto.
result parse_v1_line(v1_proto proto, std::string_view line) {
  header h;
  h.version = 1;
  h.header_length = line.size();
  if (proto == v1_proto::unknown) {
    // Section 2.1: the receiver must ignore the rest of an UNKNOWN line and use the real
    // connection's parameters, as for a v2 LOCAL.
    h.command = command::local;
    h.family = family::unspec;
    return done(std::move(h));
  }

  // "SRC DST SPORT DPORT" between "PROXY TCPx " and the CRLF: exactly one space between fields,
  // none before the first or after the last.
  const std::size_t start = v1_prefix.size() + 5;
  std::string_view rest = line.substr(start, line.size() - start - 2);
  std::array<std::string_view, 4> fields;
  std::size_t count = 0;
  while (true) {
    const std::size_t sp = rest.find(' ');
    const std::string_view f = rest.substr(0, sp);
    if (f.empty() || count == fields.size()) return fail(error::v1_bad_format);
    fields[count++] = f;
    if (sp == std::string_view::npos) break;
    rest.remove_prefix(sp + 1);
  }
  if (count != fields.size()) return fail(error::v1_bad_format);

  // acl::parse_address is strict (dotted quad without leading zeros; IPv6 without zone or
  // brackets); the family must also be the announced one.
  const bool want_v4 = proto == v1_proto::tcp4;
  const auto src = acl::parse_address(fields[0]);
  const auto dst = acl::parse_address(fields[1]);
  if (!src || !dst || src->is_v4() != want_v4 || dst->is_v4() != want_v4)
    return fail(error::v1_bad_address);
  const auto sport = parse_v1_port(fields[2]);
  const auto dport = parse_v1_port(fields[3]);
  if (!sport || !dport) return fail(error::v1_bad_port);

  h.command = command::proxy;
  h.family = want_v4 ? family::tcp4 : family::tcp6;
  h.source_address = acl::unmap(*src);
  h.source_port = *sport;
  h.destination_address = acl::unmap(*dst);
  h.destination_port = *dport;
  return done(std::move(h));
}

// d starts with "PROXY ".
result parse_v1(bytes d) {
  const std::size_t limit = std::min(d.size(), v1_max_length);
  const std::size_t token_at = v1_prefix.size();

  // The protocol token, as far as it has arrived: a byte that fits none of the three is an
  // error at once.
  bool candidate = false;
  std::optional<v1_proto> proto;
  std::size_t body_at = 0;
  for (const v1_token& t : v1_tokens) {
    const std::size_t n = std::min(limit - token_at, t.text.size());
    if (!std::equal(t.text.begin(), t.text.begin() + static_cast<std::ptrdiff_t>(n),
                    d.begin() + static_cast<std::ptrdiff_t>(token_at)))
      continue;
    candidate = true;
    if (n == t.text.size()) {
      proto = t.proto;
      body_at = token_at + t.text.size();
    }
  }
  if (!candidate) return fail(error::v1_bad_protocol);
  if (!proto) return need(d.size() + 1);

  for (std::size_t i = body_at; i < limit; ++i) {
    const std::uint8_t c = d[i];
    if (c == '\r') {
      // Section 2.1: the CRLF must lie within the first 107 bytes.
      if (i + 1 >= v1_max_length) return fail(error::v1_too_long);
      if (i + 1 >= d.size()) return need(d.size() + 1);
      // "must not tolerate a single CR or LF character to end the line"
      if (d[i + 1] != '\n') return fail(error::v1_bad_line_end);
      const std::string_view line(reinterpret_cast<const char*>(d.data()), i + 2);
      return parse_v1_line(*proto, line);
    }
    if (c == '\n') return fail(error::v1_bad_line_end);
    // "UNKNOWNX" is not the token UNKNOWN.
    if (*proto == v1_proto::unknown && i == body_at && c != ' ')
      return fail(error::v1_bad_protocol);
    if (!v1_allowed(*proto, c)) return fail(error::v1_bad_char);
  }
  if (limit == v1_max_length) return fail(error::v1_too_long);
  return need(d.size() + 1);
}

// ---- v2 (section 2.2) ----

bool valid_vpce_id(bytes id) noexcept {
  if (id.empty() || id.size() > vpce_id_max_length) return false;
  // Real ids are "vpce-" and hex digits. Anything printable is let through for ids AWS may
  // introduce, but no space or control byte: the value goes into logs and rule matching.
  return std::all_of(id.begin(), id.end(), [](std::uint8_t c) { return c >= 0x21 && c <= 0x7E; });
}

acl::address v4_at(const std::uint8_t* p) {
  return boost::asio::ip::address_v4(
      boost::asio::ip::address_v4::bytes_type{p[0], p[1], p[2], p[3]});
}

acl::address v6_at(const std::uint8_t* p) {
  boost::asio::ip::address_v6::bytes_type b{};
  std::copy(p, p + b.size(), b.begin());
  return acl::unmap(boost::asio::ip::address_v6(b));
}

// d starts with the full 12-byte signature. Each field is judged as soon as its byte arrives.
result parse_v2(bytes d) {
  // Byte 13: version (high nibble, must be 2) and command (low nibble).
  if (d.size() < 13) return need(13);
  if ((d[12] >> 4) != 0x2) return fail(error::v2_bad_version);
  const std::uint8_t cmd = d[12] & 0x0F;
  if (cmd > 0x1) return fail(error::v2_bad_command);  // "must drop ... unexpected values"
  const bool is_local = cmd == 0x0;

  // Byte 14: family and transport. For LOCAL the spec says to discard "the protocol block
  // including the family which is ignored", so any value passes.
  if (d.size() < 14) return need(14);
  const std::uint8_t fam = d[13];
  std::size_t block = 0;
  if (!is_local) {
    switch (fam) {
      case fam_unspec:
        block = 0;
        break;
      case fam_tcp4:
        block = tcp4_block;
        break;
      case fam_tcp6:
        block = tcp6_block;
        break;
      case fam_udp4:
      case fam_udp6:
      case fam_unix_stream:
      case fam_unix_dgram:
        // Valid in the spec, but a TCP proxy handed one of these is misconfigured upstream.
        return fail(error::v2_unsupported_transport);
      default:
        return fail(error::v2_bad_family);  // "must be rejected as invalid by receivers"
    }
  }

  // Bytes 15-16: length of what follows, which must cover the address block.
  if (d.size() < v2_fixed_length) return need(v2_fixed_length);
  const std::size_t len = be16(&d[14]);
  if (len > v2_max_payload) return fail(error::v2_too_long);
  if (len < block) return fail(error::v2_short_length);
  const std::size_t total = v2_fixed_length + len;
  if (d.size() < total) return need(total);

  header h;
  h.version = 2;
  h.header_length = total;
  if (is_local) {
    // Nothing in the block is used, so nothing in it is parsed, TLVs and CRC32C included. The
    // block's layout cannot be trusted anyway: an AWS NLB health check announces family 0x11
    // but puts its TLVs right after byte 16, with no address block.
    h.command = command::local;
    return done(std::move(h));
  }
  h.command = command::proxy;
  if (fam == fam_unspec) {
    // Section 2.2: "The receiver should ignore address information"; with no address block
    // size there is also no telling where TLVs would start.
    return done(std::move(h));
  }

  const std::uint8_t* a = &d[v2_fixed_length];
  if (fam == fam_tcp4) {
    h.family = family::tcp4;
    h.source_address = v4_at(a);
    h.destination_address = v4_at(a + 4);
    h.source_port = be16(a + 8);
    h.destination_port = be16(a + 10);
  } else {
    h.family = family::tcp6;
    h.source_address = v6_at(a);
    h.destination_address = v6_at(a + 16);
    h.source_port = be16(a + 32);
    h.destination_port = be16(a + 34);
  }

  // TLVs fill the rest exactly (section 2.2): type, 16-bit length, value.
  std::optional<std::size_t> crc_at;
  std::size_t pos = v2_fixed_length + block;
  while (pos < total) {
    if (total - pos < tlv_header) return fail(error::v2_tlv_truncated);
    const std::uint8_t type = d[pos];
    const std::size_t vlen = be16(&d[pos + 1]);
    const std::size_t value_at = pos + tlv_header;
    if (vlen > total - value_at) return fail(error::v2_tlv_truncated);
    const bytes value = d.subspan(value_at, vlen);
    if (type == pp2_type_crc32c) {
      if (vlen != 4) return fail(error::v2_bad_crc32c_tlv);
      if (crc_at) return fail(error::v2_duplicate_tlv);
      crc_at = value_at;
    } else if (type == pp2_type_aws) {
      // docs.aws.amazon.com, NLB target groups, "VPC endpoint services": the first value byte is
      // the subtype, 0x01 the endpoint id. Other subtypes are skipped like unknown TLVs.
      if (value.empty()) return fail(error::v2_bad_aws_tlv);
      if (value[0] == pp2_subtype_aws_vpce_id) {
        if (h.vpce_id) return fail(error::v2_duplicate_tlv);
        const bytes id = value.subspan(1);
        if (!valid_vpce_id(id)) return fail(error::v2_bad_vpce_id);
        h.vpce_id.emplace(id.begin(), id.end());
      }
    }
    // NOOP (0x04, section 2.2.4), ALPN, AUTHORITY, UNIQUE_ID, SSL, NETNS and unknown types:
    // skipped, as section 2.2 allows.
    pos = value_at + vlen;
  }

  if (crc_at) {
    // Section 2.2.3: checksum of the whole header with the 32 bits of the field as zeros.
    constexpr std::array<std::uint8_t, 4> zeros{};
    std::uint32_t crc = crc32c(d.first(*crc_at));
    crc = crc32c(zeros, crc);
    crc = crc32c(d.subspan(*crc_at + 4, total - *crc_at - 4), crc);
    if (crc != be32(&d[*crc_at])) return fail(error::v2_crc32c_mismatch);
    h.crc32c_verified = true;
  }
  return done(std::move(h));
}

}  // namespace

std::uint32_t crc32c(std::span<const std::uint8_t> data, std::uint32_t crc) noexcept {
  crc = ~crc;
  for (std::uint8_t b : data) crc = crc32c_table[(crc ^ b) & 0xFF] ^ (crc >> 8);
  return ~crc;
}

result parse(std::span<const std::uint8_t> data) {
  if (data.empty()) return need(1);
  // The first byte tells which magic to compare; both are compared byte by byte so a stream
  // that is neither is recognised on its first differing byte, without waiting for more.
  if (data[0] == v2_signature[0]) {
    const std::size_t n = std::min(data.size(), v2_signature.size());
    if (!std::equal(v2_signature.begin(), v2_signature.begin() + static_cast<std::ptrdiff_t>(n),
                    data.begin()))
      return not_proxy();
    if (n < v2_signature.size()) return need(data.size() + 1);
    return parse_v2(data);
  }
  if (data[0] == static_cast<std::uint8_t>(v1_prefix[0])) {
    const std::size_t n = std::min(data.size(), v1_prefix.size());
    if (!std::equal(v1_prefix.begin(), v1_prefix.begin() + static_cast<std::ptrdiff_t>(n),
                    data.begin(),
                    [](char a, std::uint8_t b) { return static_cast<std::uint8_t>(a) == b; }))
      return not_proxy();
    if (n < v1_prefix.size()) return need(data.size() + 1);
    return parse_v1(data);
  }
  return not_proxy();
}

result parse(std::string_view data) {
  return parse(std::span<const std::uint8_t>(reinterpret_cast<const std::uint8_t*>(data.data()),
                                             data.size()));
}

std::string_view to_string(error e) noexcept {
  switch (e) {
    case error::none:
      return "no error";
    case error::v1_too_long:
      return "v1: no CRLF within 107 bytes";
    case error::v1_bad_line_end:
      return "v1: line not ended by CRLF";
    case error::v1_bad_char:
      return "v1: invalid character";
    case error::v1_bad_protocol:
      return "v1: protocol not TCP4, TCP6 or UNKNOWN";
    case error::v1_bad_format:
      return "v1: malformed fields";
    case error::v1_bad_address:
      return "v1: invalid address";
    case error::v1_bad_port:
      return "v1: invalid port";
    case error::v2_bad_version:
      return "v2: version not 2";
    case error::v2_bad_command:
      return "v2: unknown command";
    case error::v2_bad_family:
      return "v2: invalid address family";
    case error::v2_unsupported_transport:
      return "v2: unsupported transport";
    case error::v2_too_long:
      return "v2: header too long";
    case error::v2_short_length:
      return "v2: length shorter than the address block";
    case error::v2_tlv_truncated:
      return "v2: truncated TLV";
    case error::v2_bad_crc32c_tlv:
      return "v2: CRC32C TLV not 4 bytes";
    case error::v2_crc32c_mismatch:
      return "v2: CRC32C mismatch";
    case error::v2_duplicate_tlv:
      return "v2: duplicate TLV";
    case error::v2_bad_aws_tlv:
      return "v2: AWS TLV without subtype";
    case error::v2_bad_vpce_id:
      return "v2: invalid VPC endpoint id";
  }
  return "unknown error";
}

}  // namespace egressd::net::proxy_protocol
