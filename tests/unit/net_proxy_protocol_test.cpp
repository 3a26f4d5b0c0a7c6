// PROXY protocol v1/v2 parser: valid headers (including the exact bytes of AWS NLB headers),
// incremental feeding, not_proxy for other protocols, and every error branch with the earliest
// prefix at which it must be reported.
#include "egressd/net/proxy_protocol.hpp"

#include <gtest/gtest.h>

#include <cstdint>
#include <optional>
#include <ostream>
#include <random>
#include <string>
#include <string_view>
#include <vector>

namespace egressd::net::proxy_protocol {
// Readable gtest output (found by argument-dependent lookup).
static void PrintTo(status s, std::ostream* os) {
  static constexpr const char* names[] = {"need_more", "done", "not_proxy", "error"};
  *os << names[static_cast<int>(s)];
}
static void PrintTo(error e, std::ostream* os) {
  *os << to_string(e);
}
static void PrintTo(const header& h, std::ostream* os) {
  *os << "{v" << int(h.version) << (h.command == command::proxy ? " proxy" : " local")
      << " family=" << int(h.family) << " src=" << h.source_address.to_string() << ":"
      << h.source_port << " dst=" << h.destination_address.to_string() << ":" << h.destination_port
      << " vpce=" << (h.vpce_id ? *h.vpce_id : "-") << " crc=" << h.crc32c_verified
      << " len=" << h.header_length << "}";
}
}  // namespace egressd::net::proxy_protocol

namespace egressd::net::proxy_protocol {
namespace {

using bytes = std::vector<std::uint8_t>;

bytes b(std::string_view s) {
  return bytes(s.begin(), s.end());
}

bytes cat(std::initializer_list<bytes> parts) {
  bytes out;
  for (const bytes& p : parts) out.insert(out.end(), p.begin(), p.end());
  return out;
}

std::string printable(const bytes& s) {
  std::string out;
  for (std::uint8_t c : s) {
    if (c < 0x20 || c >= 0x7f) {
      static constexpr char hex[] = "0123456789abcdef";
      out += "\\x";
      out += hex[c >> 4];
      out += hex[c & 0xf];
    } else {
      out += static_cast<char>(c);
    }
  }
  return out;
}

result parse_bytes(const bytes& data, std::size_t n) {
  return parse(std::span<const std::uint8_t>(data.data(), n));
}

// A second CRC32C, bit by bit, written from RFC 4960 appendix B independently of the table in
// the parser: the checksums in these tests never come from the code under test.
std::uint32_t ref_crc32c(const bytes& data) {
  std::uint32_t crc = 0xFFFFFFFFu;
  for (std::uint8_t byte : data) {
    crc ^= byte;
    for (int i = 0; i < 8; ++i) crc = (crc >> 1) ^ (0x82F63B78u & (0u - (crc & 1u)));
  }
  return ~crc;
}

const bytes sig = {0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A};

// A v2 header: signature, ver_cmd, fam, the length of payload (or len when given), payload.
bytes v2(std::uint8_t ver_cmd, std::uint8_t fam, const bytes& payload,
         std::optional<std::uint16_t> len = std::nullopt) {
  const std::uint16_t l = len ? *len : static_cast<std::uint16_t>(payload.size());
  bytes out = sig;
  out.push_back(ver_cmd);
  out.push_back(fam);
  out.push_back(static_cast<std::uint8_t>(l >> 8));
  out.push_back(static_cast<std::uint8_t>(l & 0xFF));
  out.insert(out.end(), payload.begin(), payload.end());
  return out;
}

bytes tlv(std::uint8_t type, const bytes& value) {
  bytes out = {type, static_cast<std::uint8_t>(value.size() >> 8),
               static_cast<std::uint8_t>(value.size() & 0xFF)};
  out.insert(out.end(), value.begin(), value.end());
  return out;
}

const bytes crc_placeholder = tlv(0x03, {0, 0, 0, 0});

// Fills the value of the first CRC32C TLV (found as crc_placeholder after the 16-byte fixed part
// and the address block) with the reference checksum of the whole header.
bytes seal_crc(bytes h, std::size_t block) {
  for (std::size_t pos = 16 + block; pos + 3 <= h.size();) {
    const std::size_t vlen = (std::size_t{h[pos + 1]} << 8) | h[pos + 2];
    if (h[pos] == 0x03 && vlen == 4) {
      const std::uint32_t crc = ref_crc32c(h);  // the field is still zero here
      h[pos + 3] = static_cast<std::uint8_t>(crc >> 24);
      h[pos + 4] = static_cast<std::uint8_t>(crc >> 16);
      h[pos + 5] = static_cast<std::uint8_t>(crc >> 8);
      h[pos + 6] = static_cast<std::uint8_t>(crc);
      return h;
    }
    pos += 3 + vlen;
  }
  ADD_FAILURE() << "no CRC32C TLV to seal";
  return h;
}

acl::address addr(std::string_view s) {
  return boost::asio::ip::make_address(std::string(s));
}

header proxied(std::uint8_t version, family fam, std::string_view src, std::uint16_t sport,
               std::string_view dst, std::uint16_t dport, std::size_t length,
               std::optional<std::string> vpce = std::nullopt, bool crc = false) {
  header h;
  h.version = version;
  h.command = command::proxy;
  h.family = fam;
  h.source_address = addr(src);
  h.source_port = sport;
  h.destination_address = addr(dst);
  h.destination_port = dport;
  h.vpce_id = std::move(vpce);
  h.crc32c_verified = crc;
  h.header_length = length;
  return h;
}

header local(std::uint8_t version, std::size_t length) {
  header h;
  h.version = version;
  h.command = command::local;
  h.header_length = length;
  return h;
}

// PROXY with AF_UNSPEC: a relayed connection whose addresses are not given.
header proxy_unspec(std::size_t length) {
  header h = local(2, length);
  h.command = command::proxy;
  return h;
}

// ---- the real headers ----

// An AWS NLB header for a connection through a PrivateLink (VPC endpoint service): TCP over
// IPv4, TLVs CRC32C, AWS 0xEA/0x01 "vpce-08d2bf15fac5001c9" and NOOP padding. These are the
// bytes AWS publishes as "the header generated by AWS Network Load Balancer" in
// aws/elastic-load-balancing-tools, proprot/tst/.../Compatibility_AwsNetworkLoadBalancerTest.java.
const bytes nlb_privatelink = {
    0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a,  // signature
    0x21, 0x11, 0x00, 0x54,                                                  // PROXY, TCP4, 84
    0xac, 0x1f, 0x07, 0x71,                                                  // 172.31.7.113
    0xac, 0x1f, 0x0a, 0x1f,                                                  // 172.31.10.31
    0xc8, 0xf2, 0x00, 0x50,                                                  // 51442, 80
    0x03, 0x00, 0x04, 0xe8, 0xd6, 0x89, 0x2d,                                // CRC32C
    0xea, 0x00, 0x17, 0x01, 0x76, 0x70, 0x63, 0x65, 0x2d, 0x30, 0x38, 0x64,  // AWS, VPCE id
    0x32, 0x62, 0x66, 0x31, 0x35, 0x66, 0x61, 0x63, 0x35, 0x30, 0x30, 0x31,  //
    0x63, 0x39,                                                              //
    0x04, 0x00, 0x24,                                                        // NOOP, 36 bytes
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,  //
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,  //
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,  //
};
constexpr std::size_t nlb_crc_at = 31;  // offset of the CRC32C value in nlb_privatelink

// An AWS NLB health check, captured with tcpdump in kubernetes/kubernetes issue #57250: LOCAL,
// family byte 0x11 but no address block, TLVs CRC32C and NOOP right after the fixed 16 bytes,
// 100 bytes in all. Its checksum is correct when the TLVs are read from byte 16, which is why the
// parser does not interpret a LOCAL block by its family byte.
const bytes nlb_health_check = [] {
  bytes h = {0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51,
             0x55, 0x49, 0x54, 0x0a, 0x20, 0x11, 0x00, 0x54,  // LOCAL, "TCP4", 84
             0x03, 0x00, 0x04, 0xbc, 0xe5, 0x95, 0x1f,        // CRC32C
             0x04, 0x00, 0x4a};                               // NOOP, 74 bytes
  h.resize(100, 0x00);
  return h;
}();

// HAProxy "send-proxy-v2" in front of a netcat, from seriousben/experiment-proxy-protocol:
// PROXY TCP4 172.19.0.1:42578 -> 172.19.0.3:80, no TLVs.
const bytes haproxy_tcp4 = {0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49,
                            0x54, 0x0a, 0x21, 0x11, 0x00, 0x0c, 0xac, 0x13, 0x00, 0x01,
                            0xac, 0x13, 0x00, 0x03, 0xa6, 0x52, 0x00, 0x50};

bytes with_byte(bytes h, std::size_t at, std::uint8_t value) {
  h.at(at) = value;
  return h;
}

// 172.31.7.113:51442 -> 172.31.10.31:80, as in the NLB header.
const bytes tcp4_block = {0xac, 0x1f, 0x07, 0x71, 0xac, 0x1f, 0x0a, 0x1f, 0xc8, 0xf2, 0x00, 0x50};
// [2001:db8::1]:443 -> [2001:db8::2]:8080
const bytes tcp6_block = {0x20, 0x01, 0x0d, 0xb8, 0,    0,    0,    0,    0,    0,    0,    0,
                          0,    0,    0,    0x01, 0x20, 0x01, 0x0d, 0xb8, 0,    0,    0,    0,
                          0,    0,    0,    0,    0,    0,    0,    0x02, 0x01, 0xbb, 0x1f, 0x90};
// [::ffff:198.51.100.7]:1 -> [::ffff:10.0.0.1]:65535
const bytes tcp6_mapped_block = {0,   0,  0,    0,    0,  0, 0, 0, 0,    0,    0xff, 0xff,
                                 198, 51, 100,  7,    0,  0, 0, 0, 0,    0,    0,    0,
                                 0,   0,  0xff, 0xff, 10, 0, 0, 1, 0x00, 0x01, 0xff, 0xff};

struct valid_case {
  std::string name;
  bytes raw;
  header expected;
};

std::vector<valid_case> valid_cases() {
  std::vector<valid_case> cases;
  // A header_length of 0 in h stands for "the whole of raw".
  auto add = [&](std::string name, bytes raw, header h) {
    if (h.header_length == 0) h.header_length = raw.size();
    cases.push_back({std::move(name), std::move(raw), std::move(h)});
  };

  // --- v2 ---
  add("nlb_privatelink", nlb_privatelink,
      proxied(2, family::tcp4, "172.31.7.113", 51442, "172.31.10.31", 80, 100,
              "vpce-08d2bf15fac5001c9", true));
  add("nlb_health_check", nlb_health_check, local(2, 100));
  add("haproxy_tcp4", haproxy_tcp4,
      proxied(2, family::tcp4, "172.19.0.1", 42578, "172.19.0.3", 80, 28));
  add("local_empty", v2(0x20, 0x00, {}), local(2, 16));
  // LOCAL: family and block are discarded (section 2.2), whatever they hold.
  add("local_unassigned_family", v2(0x20, 0xFF, {1, 2, 3, 4, 5}), local(2, 21));
  add("local_udp_family", v2(0x20, 0x12, {}), local(2, 16));
  add("local_block_not_parsed", v2(0x20, 0x11, {0x03, 0xFF, 0xFF}), local(2, 19));
  add("local_max_length", v2(0x20, 0x00, bytes(v2_max_payload, 0)), local(2, 16 + 4096));
  add("proxy_unspec_empty", v2(0x21, 0x00, {}), proxy_unspec(16));
  add("proxy_unspec_with_bytes", v2(0x21, 0x00, {9, 9, 9, 9, 9, 9, 9}), proxy_unspec(23));
  add("tcp4_plain", v2(0x21, 0x11, tcp4_block),
      proxied(2, family::tcp4, "172.31.7.113", 51442, "172.31.10.31", 80, 28));
  add("tcp6_plain", v2(0x21, 0x21, tcp6_block),
      proxied(2, family::tcp6, "2001:db8::1", 443, "2001:db8::2", 8080, 52));
  add("tcp6_mapped_unmapped", v2(0x21, 0x21, tcp6_mapped_block),
      proxied(2, family::tcp6, "198.51.100.7", 1, "10.0.0.1", 65535, 52));
  add("tcp4_skipped_tlvs",
      v2(0x21, 0x11,
         cat({tcp4_block, tlv(0x01, b("h2")), tlv(0x02, b("example.com")),
              tlv(0x05, bytes(128, 0xAB)),
              tlv(0x20, cat({{0x07, 0, 0, 0, 0}, tlv(0x21, b("TLSv1.3")), tlv(0x22, b("cn"))})),
              tlv(0x30, b("netns")), tlv(0xF0, {1, 2, 3}), tlv(0x04, {}), tlv(0x00, {}),
              tlv(0xEA, {0x02, 'x'}), tlv(0xEA, {0x02})})),
      proxied(2, family::tcp4, "172.31.7.113", 51442, "172.31.10.31", 80, 0));
  add("tcp4_crc_only", seal_crc(v2(0x21, 0x11, cat({tcp4_block, crc_placeholder})), 12),
      proxied(2, family::tcp4, "172.31.7.113", 51442, "172.31.10.31", 80, 35, std::nullopt, true));
  add("tcp4_crc_last",
      seal_crc(v2(0x21, 0x11, cat({tcp4_block, tlv(0x04, bytes(9, 0xEE)), crc_placeholder})), 12),
      proxied(2, family::tcp4, "172.31.7.113", 51442, "172.31.10.31", 80, 47, std::nullopt, true));
  add("tcp6_crc_vpce",
      seal_crc(v2(0x21, 0x21,
                  cat({tcp6_block, crc_placeholder, tlv(0xEA, cat({{0x01}, b("vpce-0abc")}))})),
               36),
      proxied(2, family::tcp6, "2001:db8::1", 443, "2001:db8::2", 8080, 52 + 7 + 13, "vpce-0abc",
              true));
  add("vpce_max_length",
      v2(0x21, 0x11, cat({tcp4_block, tlv(0xEA, cat({{0x01}, bytes(64, '~')}))})),
      proxied(2, family::tcp4, "172.31.7.113", 51442, "172.31.10.31", 80, 28 + 3 + 65,
              std::string(64, '~')));
  add("tcp4_max_length",
      v2(0x21, 0x11, cat({tcp4_block, tlv(0x04, bytes(v2_max_payload - 12 - 3, 0))})),
      proxied(2, family::tcp4, "172.31.7.113", 51442, "172.31.10.31", 80, 16 + 4096));

  // --- v1 (section 2.1) ---
  add("v1_spec_example", b("PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n"),
      proxied(1, family::tcp4, "192.168.0.1", 56324, "192.168.0.11", 443, 47));
  add("v1_tcp4_max", b("PROXY TCP4 255.255.255.255 255.255.255.255 65535 65535\r\n"),
      proxied(1, family::tcp4, "255.255.255.255", 65535, "255.255.255.255", 65535, 56));
  add("v1_tcp4_zero", b("PROXY TCP4 0.0.0.0 0.0.0.0 0 0\r\n"),
      proxied(1, family::tcp4, "0.0.0.0", 0, "0.0.0.0", 0, 32));
  const std::string full6 = "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff";
  add("v1_tcp6_max", b("PROXY TCP6 " + full6 + " " + full6 + " 65535 65535\r\n"),
      proxied(1, family::tcp6, full6, 65535, full6, 65535, 104));
  add("v1_tcp6_short", b("PROXY TCP6 ::1 ::1 1 2\r\n"),
      proxied(1, family::tcp6, "::1", 1, "::1", 2, 24));
  add("v1_tcp6_upper", b("PROXY TCP6 2001:DB8::A 2001:db8::b 80 443\r\n"),
      proxied(1, family::tcp6, "2001:db8::a", 80, "2001:db8::b", 443, 43));
  add("v1_tcp6_mapped", b("PROXY TCP6 ::ffff:192.0.2.1 ::ffff:10.1.2.3 5 6\r\n"),
      proxied(1, family::tcp6, "192.0.2.1", 5, "10.1.2.3", 6, 49));
  add("v1_unknown_short", b("PROXY UNKNOWN\r\n"), local(1, 15));
  add("v1_unknown_worst_case", b("PROXY UNKNOWN " + full6 + " " + full6 + " 65535 65535\r\n"),
      local(1, 107));
  add("v1_unknown_anything", b("PROXY UNKNOWN whatever ~!@#$%^&*() \r\n"), local(1, 37));
  return cases;
}

// ---- CRC32C ----

TEST(NetProxyProtocol, Crc32cKnownAnswers) {
  // RFC 3720 appendix B.4 and the usual "123456789" check value.
  EXPECT_EQ(crc32c(b("123456789")), 0xE3069283u);
  EXPECT_EQ(crc32c(bytes(32, 0x00)), 0x8A9136AAu);
  EXPECT_EQ(crc32c(bytes(32, 0xFF)), 0x62A8AB43u);
  bytes inc(32), dec(32);
  for (int i = 0; i < 32; ++i) {
    inc[i] = static_cast<std::uint8_t>(i);
    dec[i] = static_cast<std::uint8_t>(31 - i);
  }
  EXPECT_EQ(crc32c(inc), 0x46DD794Eu);
  EXPECT_EQ(crc32c(dec), 0x113FDB5Cu);
  EXPECT_EQ(crc32c(bytes{}), 0u);
  EXPECT_EQ(ref_crc32c(b("123456789")), 0xE3069283u);  // the test's own implementation too
}

TEST(NetProxyProtocol, Crc32cMatchesBitwiseAndChains) {
  std::mt19937 rng(4);
  for (int round = 0; round < 200; ++round) {
    bytes data(rng() % 300);
    for (auto& c : data) c = static_cast<std::uint8_t>(rng());
    ASSERT_EQ(crc32c(data), ref_crc32c(data)) << "size " << data.size();
    const std::size_t cut = data.empty() ? 0 : rng() % data.size();
    const std::span<const std::uint8_t> all(data);
    EXPECT_EQ(crc32c(all.subspan(cut), crc32c(all.first(cut))), ref_crc32c(data));
  }
}

// The checksums in the two real NLB headers, recomputed here with the bitwise implementation:
// both are correct, so the NLB checksums exactly as section 2.2.3 says.
TEST(NetProxyProtocol, NlbHeadersCarryCorrectChecksums) {
  bytes z = nlb_privatelink;
  for (std::size_t i = 0; i < 4; ++i) z[nlb_crc_at + i] = 0;
  EXPECT_EQ(ref_crc32c(z), 0xE8D6892Du);
  z = nlb_health_check;
  for (std::size_t i = 0; i < 4; ++i) z[19 + i] = 0;
  EXPECT_EQ(ref_crc32c(z), 0xBCE5951Fu);
}

// ---- valid headers ----

TEST(NetProxyProtocol, ValidHeaders) {
  for (const valid_case& c : valid_cases()) {
    SCOPED_TRACE(c.name + ": " + printable(c.raw));
    const result r = parse(c.raw);
    ASSERT_EQ(r.status, status::done) << to_string(r.error);
    EXPECT_EQ(r.error, error::none);
    EXPECT_EQ(r.header, c.expected);
    EXPECT_EQ(r.header.header_length, c.raw.size());
    EXPECT_EQ(r.header.has_addresses(),
              c.expected.command == command::proxy && c.expected.family != family::unspec);

    // The request that follows is never read: same result, same length.
    for (const bytes& tail :
         {b("GET / HTTP/1.1\r\nHost: a\r\n\r\n"), b("\r\n"), b("PROXY "), bytes{0x00}, sig}) {
      const bytes more = cat({c.raw, tail});
      const result r2 = parse(more);
      ASSERT_EQ(r2.status, status::done);
      EXPECT_EQ(r2.header, c.expected);
    }

    // The string_view overload sees the same bytes.
    const std::string as_text(c.raw.begin(), c.raw.end());
    EXPECT_EQ(parse(std::string_view(as_text)).header, c.expected);
  }
}

// Every proper prefix is need_more, asking for more than it has and never past the end of the
// header; a v2 prefix that holds the length field asks for exactly the whole header.
TEST(NetProxyProtocol, EveryPrefixNeedsMore) {
  for (const valid_case& c : valid_cases()) {
    SCOPED_TRACE(c.name);
    for (std::size_t n = 0; n < c.raw.size(); ++n) {
      const result r = parse_bytes(c.raw, n);
      ASSERT_EQ(r.status, status::need_more) << "prefix " << n << ": " << to_string(r.error);
      EXPECT_GT(r.bytes_needed, n);
      EXPECT_LE(r.bytes_needed, c.raw.size());
      if (c.expected.version == 2 && n >= 16) {
        EXPECT_EQ(r.bytes_needed, c.raw.size());
      }
    }
  }
}

// The session appends what each read returns and parses again; the header may arrive in any
// number of pieces, the request may arrive with its last piece.
result feed(const bytes& stream, const std::vector<std::size_t>& cuts) {
  bytes buffer;
  std::size_t at = 0;
  result r;
  for (std::size_t cut : cuts) {
    buffer.insert(buffer.end(), stream.begin() + static_cast<std::ptrdiff_t>(at),
                  stream.begin() + static_cast<std::ptrdiff_t>(cut));
    at = cut;
    r = parse(buffer);
    if (r.status != status::need_more) return r;
  }
  return r;
}

TEST(NetProxyProtocol, SplitAtEveryBoundaryAndByteByByte) {
  for (const valid_case& c : valid_cases()) {
    SCOPED_TRACE(c.name);
    const bytes stream = cat({c.raw, b("GET / HTTP/1.1\r\n\r\n")});
    for (std::size_t k = 1; k < c.raw.size(); ++k) {
      const result r = feed(stream, {k, stream.size()});
      ASSERT_EQ(r.status, status::done) << "split at " << k;
      ASSERT_EQ(r.header, c.expected) << "split at " << k;
    }
    std::vector<std::size_t> one_by_one;
    for (std::size_t k = 1; k <= c.raw.size(); ++k) one_by_one.push_back(k);
    const result r = feed(stream, one_by_one);
    ASSERT_EQ(r.status, status::done);
    EXPECT_EQ(r.header, c.expected);
    // Reading exactly bytes_needed each time (what a session that must not over-read would do)
    // ends exactly at the end of the header.
    std::size_t have = 0;
    while (true) {
      const result step = parse_bytes(stream, have);
      if (step.status != status::need_more) {
        EXPECT_EQ(step.status, status::done);
        EXPECT_EQ(have, c.raw.size());
        break;
      }
      ASSERT_LE(step.bytes_needed, c.raw.size());
      have = step.bytes_needed;
    }
  }
}

TEST(NetProxyProtocol, EmptyInputNeedsOneByte) {
  const result r = parse(std::string_view());
  EXPECT_EQ(r.status, status::need_more);
  EXPECT_EQ(r.bytes_needed, 1u);
}

// ---- not a PROXY header ----

struct decided_case {
  std::string name;
  bytes raw;
  std::size_t decided_at;  // the shortest prefix that gives the answer
  error err = error::none;
};

std::vector<decided_case> not_proxy_cases() {
  std::vector<decided_case> cases = {
      {"http_get", b("GET / HTTP/1.1\r\nHost: a\r\n\r\n"), 1},
      {"connect", b("CONNECT example.com:443 HTTP/1.1\r\n\r\n"), 1},
      {"post", b("POST / HTTP/1.1\r\n"), 2},
      {"put", b("PUT / HTTP/1.1\r\n"), 2},
      {"patch", b("PATCH / HTTP/1.1\r\n"), 2},
      {"h2_preface", b("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"), 3},
      {"proxyfoo_method", b("PROXYFOO / HTTP/1.1\r\n"), 6},
      {"proxy_crlf", b("PROXY\r\n"), 6},
      {"lowercase_proxy", b("proxy TCP4 1.2.3.4 5.6.7.8 1 2\r\n"), 1},
      {"tls_client_hello", {0x16, 0x03, 0x01, 0x02, 0x00, 0x01}, 1},
      {"ssh", b("SSH-2.0-OpenSSH\r\n"), 1},
      {"empty_line_then_get", b("\r\nGET / HTTP/1.1\r\n"), 3},
      {"two_empty_lines_then_get", b("\r\n\r\nGET / HTTP/1.1\r\n"), 5},
      {"nul", {0x00}, 1},
  };
  // The v2 signature, wrong at each position in turn: decided at that very byte.
  for (std::size_t i = 0; i < sig.size(); ++i) {
    bytes raw = haproxy_tcp4;
    raw[i] ^= 0x80;
    cases.push_back({"v2_signature_byte_" + std::to_string(i), raw, i + 1});
  }
  // The v1 prefix "PROXY ", wrong at each position in turn.
  for (std::size_t i = 0; i < 6; ++i) {
    bytes raw = b("PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n");
    raw[i] ^= 0x20;
    cases.push_back({"v1_prefix_byte_" + std::to_string(i), raw, i + 1});
  }
  return cases;
}

TEST(NetProxyProtocol, NotProxyDecidedOnFirstDifferingByte) {
  for (const decided_case& c : not_proxy_cases()) {
    SCOPED_TRACE(c.name + ": " + printable(c.raw));
    for (std::size_t n = 0; n < c.decided_at; ++n)
      ASSERT_EQ(parse_bytes(c.raw, n).status, status::need_more) << "prefix " << n;
    for (std::size_t n = c.decided_at; n <= c.raw.size(); ++n) {
      const result r = parse_bytes(c.raw, n);
      ASSERT_EQ(r.status, status::not_proxy) << "prefix " << n << ": " << to_string(r.error);
      EXPECT_EQ(r.error, error::none);
    }
  }
}

// ---- errors ----

std::vector<decided_case> v2_error_cases() {
  auto tcp4 = [](const bytes& tlvs) { return v2(0x21, 0x11, cat({tcp4_block, tlvs})); };
  auto aws = [](const bytes& value) { return tlv(0xEA, value); };
  std::vector<decided_case> cases = {
      // Byte 13: version and command, decided as soon as it arrives.
      {"version_1_in_v2_framing", v2(0x11, 0x11, tcp4_block), 13, error::v2_bad_version},
      {"version_0", v2(0x01, 0x11, tcp4_block), 13, error::v2_bad_version},
      {"version_3", v2(0x31, 0x11, tcp4_block), 13, error::v2_bad_version},
      {"version_f_local", v2(0xF0, 0x00, {}), 13, error::v2_bad_version},
      {"command_2", v2(0x22, 0x11, tcp4_block), 13, error::v2_bad_command},
      {"command_3", v2(0x23, 0x11, tcp4_block), 13, error::v2_bad_command},
      {"command_f", v2(0x2F, 0x00, {}), 13, error::v2_bad_command},
      // Byte 14 for PROXY.
      {"unsupported_udp4", v2(0x21, 0x12, tcp4_block), 14, error::v2_unsupported_transport},
      {"unsupported_udp6", v2(0x21, 0x22, tcp6_block), 14, error::v2_unsupported_transport},
      {"unsupported_unix_stream", v2(0x21, 0x31, bytes(216, 0)), 14,
       error::v2_unsupported_transport},
      {"unsupported_unix_dgram", v2(0x21, 0x32, bytes(216, 0)), 14,
       error::v2_unsupported_transport},
      // Bytes 15-16.
      {"tcp4_length_0", v2(0x21, 0x11, {}), 16, error::v2_short_length},
      {"tcp4_length_11", v2(0x21, 0x11, bytes(11, 1)), 16, error::v2_short_length},
      {"tcp6_length_12", v2(0x21, 0x21, tcp4_block), 16, error::v2_short_length},
      {"tcp6_length_35", v2(0x21, 0x21, bytes(35, 1)), 16, error::v2_short_length},
      {"tcp4_length_4097", v2(0x21, 0x11, tcp4_block, 4097), 16, error::v2_too_long},
      {"tcp4_length_ffff", v2(0x21, 0x11, tcp4_block, 0xFFFF), 16, error::v2_too_long},
      {"local_length_4097", v2(0x20, 0x00, {}, 4097), 16, error::v2_too_long},
      {"unspec_length_ffff", v2(0x21, 0x00, {}, 0xFFFF), 16, error::v2_too_long},
  };
  // Unassigned family/transport bytes for PROXY.
  for (std::uint8_t fam : {0x01, 0x02, 0x03, 0x10, 0x13, 0x20, 0x23, 0x30, 0x33, 0x41, 0xFF}) {
    cases.push_back(
        {"bad_family_" + std::to_string(fam), v2(0x21, fam, tcp6_block), 14, error::v2_bad_family});
  }
  // TLVs: decided once the whole header (its announced length) is there.
  auto at_end = [&](std::string name, bytes raw, error e) {
    const std::size_t n = raw.size();
    cases.push_back({std::move(name), std::move(raw), n, e});
  };
  at_end("tlv_one_byte", tcp4({0x04}), error::v2_tlv_truncated);
  at_end("tlv_two_bytes", tcp4({0x04, 0x00}), error::v2_tlv_truncated);
  at_end("tlv_value_overrun_by_one", tcp4({0x04, 0x00, 0x02, 0xAA}), error::v2_tlv_truncated);
  at_end("tlv_value_length_ffff", tcp4({0x01, 0xFF, 0xFF, 'h', '2'}), error::v2_tlv_truncated);
  at_end("tlv_trailing_bytes", tcp4(cat({tlv(0x04, {}), {0x04, 0x00}})), error::v2_tlv_truncated);
  at_end("tcp6_tlv_overrun", v2(0x21, 0x21, cat({tcp6_block, {0xEA, 0x00, 0x09, 0x01}})),
         error::v2_tlv_truncated);
  // CRC32C.
  at_end("nlb_src_address_flipped", with_byte(nlb_privatelink, 16, 0xad),
         error::v2_crc32c_mismatch);
  at_end("nlb_crc_value_flipped", with_byte(nlb_privatelink, nlb_crc_at + 3, 0x2c),
         error::v2_crc32c_mismatch);
  at_end("nlb_padding_flipped", with_byte(nlb_privatelink, 99, 0x01), error::v2_crc32c_mismatch);
  at_end("crc_zero_value", tcp4(crc_placeholder), error::v2_crc32c_mismatch);
  at_end("crc_length_3", tcp4(tlv(0x03, {1, 2, 3})), error::v2_bad_crc32c_tlv);
  at_end("crc_length_5", tcp4(tlv(0x03, {1, 2, 3, 4, 5})), error::v2_bad_crc32c_tlv);
  at_end("crc_length_0", tcp4(tlv(0x03, {})), error::v2_bad_crc32c_tlv);
  at_end("crc_twice", seal_crc(tcp4(cat({crc_placeholder, crc_placeholder})), 12),
         error::v2_duplicate_tlv);
  // AWS 0xEA.
  at_end("aws_empty_value", tcp4(aws({})), error::v2_bad_aws_tlv);
  at_end("vpce_empty", tcp4(aws({0x01})), error::v2_bad_vpce_id);
  at_end("vpce_65_chars", tcp4(aws(cat({{0x01}, bytes(65, 'a')}))), error::v2_bad_vpce_id);
  at_end("vpce_space", tcp4(aws(cat({{0x01}, b("vpce 1")}))), error::v2_bad_vpce_id);
  at_end("vpce_del", tcp4(aws(cat({{0x01}, b("vpce-1\x7f")}))), error::v2_bad_vpce_id);
  at_end("vpce_high_byte", tcp4(aws(cat({{0x01}, b("vpce-\xc3\xa9")}))), error::v2_bad_vpce_id);
  at_end("vpce_nul", tcp4(aws(cat({{0x01}, b(std::string_view("vpce-\0x", 7))}))),
         error::v2_bad_vpce_id);
  at_end("vpce_newline", tcp4(aws(cat({{0x01}, b("vpce-1\nx")}))), error::v2_bad_vpce_id);
  at_end("vpce_twice",
         tcp4(cat({aws(cat({{0x01}, b("vpce-1")})), aws(cat({{0x01}, b("vpce-2")}))})),
         error::v2_duplicate_tlv);
  return cases;
}

std::vector<decided_case> v1_error_cases() {
  // n: the length of the prefix that ends with the offending byte.
  auto at = [](std::string name, std::string_view raw, std::size_t n, error e) {
    return decided_case{std::move(name), b(raw), n, e};
  };
  auto at_end = [](std::string name, std::string_view raw, error e) {
    return decided_case{std::move(name), b(raw), raw.size(), e};
  };
  const std::string a93(93, 'a');
  std::vector<decided_case> cases = {
      // Protocol token, judged byte by byte.
      at("tcp5", "PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n", 10, error::v1_bad_protocol),
      at("lowercase_tcp4", "PROXY tcp4 1.2.3.4 5.6.7.8 1 2\r\n", 7, error::v1_bad_protocol),
      at("two_spaces_before_protocol", "PROXY  TCP4 1.2.3.4 5.6.7.8 1 2\r\n", 7,
         error::v1_bad_protocol),
      // 'U' could still start "UNKNOWN"; 'D' cannot.
      at("udp4", "PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n", 8, error::v1_bad_protocol),
      at("no_protocol", "PROXY \r\n", 7, error::v1_bad_protocol),
      at("tcp4_no_fields", "PROXY TCP4\r\n", 11, error::v1_bad_protocol),
      at("unknownx", "PROXY UNKNOWNX\r\n", 14, error::v1_bad_protocol),
      at("unknow", "PROXY UNKNOW\r\n", 13, error::v1_bad_protocol),
      // Line ends (section 2.1: no single CR or LF).
      at_end("lf_without_cr", "PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n", error::v1_bad_line_end),
      at_end("unknown_lf_only", "PROXY UNKNOWN\n", error::v1_bad_line_end),
      at_end("cr_then_x", "PROXY TCP4 1.2.3.4 5.6.7.8 1 2\rX", error::v1_bad_line_end),
      at("cr_cr_lf", "PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\r\n", 32, error::v1_bad_line_end),
      at("lf_in_middle", "PROXY TCP4 1.2.3.4\n5.6.7.8 1 2\r\n", 19, error::v1_bad_line_end),
      at("cr_in_middle", "PROXY UNKNOWN a\rb\r\n", 17, error::v1_bad_line_end),
      // Characters outside the family's alphabet, refused when they arrive.
      at("tab", "PROXY TCP4 1.2.3.4\t5.6.7.8 1 2\r\n", 19, error::v1_bad_char),
      at("nul", std::string_view("PROXY TCP4 1.2.3.4\0 5.6.7.8 1 2\r\n", 33), 19,
         error::v1_bad_char),
      at("unknown_control", "PROXY UNKNOWN \x01\r\n", 15, error::v1_bad_char),
      at("unknown_del", "PROXY UNKNOWN \x7f\r\n", 15, error::v1_bad_char),
      at("unknown_high_byte", "PROXY UNKNOWN \xc3\xa9\r\n", 15, error::v1_bad_char),
      at("tcp4_hex_form", "PROXY TCP4 0x7f.0.0.1 5.6.7.8 1 2\r\n", 13, error::v1_bad_char),
      at("tcp4_v6_address", "PROXY TCP4 ::1 ::1 1 2\r\n", 12, error::v1_bad_char),
      at("tcp4_negative_port", "PROXY TCP4 1.2.3.4 5.6.7.8 -1 2\r\n", 28, error::v1_bad_char),
      at("tcp4_plus_port", "PROXY TCP4 1.2.3.4 5.6.7.8 +1 2\r\n", 28, error::v1_bad_char),
      at("tcp6_zone_id", "PROXY TCP6 fe80::1%eth0 ::1 1 2\r\n", 19, error::v1_bad_char),
      at("tcp6_brackets", "PROXY TCP6 [::1] ::1 1 2\r\n", 12, error::v1_bad_char),
      at("tcp6_g", "PROXY TCP6 ::g ::1 1 2\r\n", 14, error::v1_bad_char),
      // Field layout.
      at_end("double_space_between_fields", "PROXY TCP4 1.2.3.4  5.6.7.8 1 2\r\n",
             error::v1_bad_format),
      at_end("trailing_space", "PROXY TCP4 1.2.3.4 5.6.7.8 1 2 \r\n", error::v1_bad_format),
      // Four fields of which one is empty: a format error, not an address or port error.
      at_end("double_space_four_fields", "PROXY TCP4 1.2.3.4  5.6.7.8 1\r\n", error::v1_bad_format),
      at_end("trailing_space_four_fields", "PROXY TCP4 1.2.3.4 5.6.7.8 1 \r\n",
             error::v1_bad_format),
      at_end("three_fields", "PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n", error::v1_bad_format),
      at_end("five_fields", "PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n", error::v1_bad_format),
      at_end("empty_fields", "PROXY TCP4 \r\n", error::v1_bad_format),
      at_end("tcp6_leading_space", "PROXY TCP6  ::1 ::1 1 2\r\n", error::v1_bad_format),
      // Addresses (strict dotted quad, IPv6 of the right family).
      at_end("leading_zero", "PROXY TCP4 01.2.3.4 5.6.7.8 1 2\r\n", error::v1_bad_address),
      at_end("octal_looking", "PROXY TCP4 010.1.1.1 5.6.7.8 1 2\r\n", error::v1_bad_address),
      at_end("three_parts", "PROXY TCP4 1.2.3 5.6.7.8 1 2\r\n", error::v1_bad_address),
      at_end("five_parts", "PROXY TCP4 1.2.3.4.5 5.6.7.8 1 2\r\n", error::v1_bad_address),
      at_end("part_256", "PROXY TCP4 256.1.1.1 5.6.7.8 1 2\r\n", error::v1_bad_address),
      at_end("decimal_address", "PROXY TCP4 2130706433 5.6.7.8 1 2\r\n", error::v1_bad_address),
      at_end("bad_destination", "PROXY TCP4 1.2.3.4 5.6.7 1 2\r\n", error::v1_bad_address),
      at_end("tcp6_with_v4", "PROXY TCP6 1.2.3.4 5.6.7.8 1 2\r\n", error::v1_bad_address),
      at_end("tcp6_mixed_families", "PROXY TCP6 ::1 5.6.7.8 1 2\r\n", error::v1_bad_address),
      at_end("tcp6_two_double_colons", "PROXY TCP6 1::2::3 ::1 1 2\r\n", error::v1_bad_address),
      at_end("tcp6_long_group", "PROXY TCP6 12345::1 ::1 1 2\r\n", error::v1_bad_address),
      at_end("tcp6_nine_groups", "PROXY TCP6 1:2:3:4:5:6:7:8:9 ::1 1 2\r\n", error::v1_bad_address),
      at_end("tcp6_mapped_leading_zero", "PROXY TCP6 ::ffff:01.2.3.4 ::1 1 2\r\n",
             error::v1_bad_address),
      at_end("tcp6_triple_colon", "PROXY TCP6 ::: ::1 1 2\r\n", error::v1_bad_address),
      // Ports.
      at_end("port_65536", "PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n", error::v1_bad_port),
      at_end("port_99999", "PROXY TCP4 1.2.3.4 5.6.7.8 99999 2\r\n", error::v1_bad_port),
      at_end("port_six_digits", "PROXY TCP4 1.2.3.4 5.6.7.8 100000 2\r\n", error::v1_bad_port),
      at_end("port_leading_zero", "PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n", error::v1_bad_port),
      at_end("port_00", "PROXY TCP4 1.2.3.4 5.6.7.8 1 00\r\n", error::v1_bad_port),
      at_end("port_with_dot", "PROXY TCP4 1.2.3.4 5.6.7.8 1.5 2\r\n", error::v1_bad_port),
      at_end("tcp6_hex_port", "PROXY TCP6 ::1 ::1 ff 2\r\n", error::v1_bad_port),
      at_end("dport_65536", "PROXY TCP6 ::1 ::1 1 65536\r\n", error::v1_bad_port),
      // Length (section 2.1: the CRLF within 107 bytes).
      at("no_crlf_in_107", "PROXY UNKNOWN " + a93 + "aaaa", 107, error::v1_too_long),
      at("crlf_at_108", "PROXY UNKNOWN " + a93.substr(1) + "\r\n", 107, error::v1_too_long),
  };
  return cases;
}

void expect_decided(const std::vector<decided_case>& cases) {
  for (const decided_case& c : cases) {
    SCOPED_TRACE(c.name + ": " + printable(c.raw));
    ASSERT_LE(c.decided_at, c.raw.size());
    for (std::size_t n = 0; n < c.decided_at; ++n) {
      const result r = parse_bytes(c.raw, n);
      ASSERT_EQ(r.status, status::need_more) << "prefix " << n << ": " << to_string(r.error);
    }
    // Decided at that byte, and more bytes (the rest, then a request) never change it.
    const bytes longer = cat({c.raw, b("GET / HTTP/1.1\r\n\r\n")});
    for (std::size_t n = c.decided_at; n <= longer.size(); ++n) {
      const result r = parse_bytes(longer, n);
      ASSERT_EQ(r.status, status::error) << "prefix " << n;
      ASSERT_EQ(r.error, c.err) << "prefix " << n;
    }
  }
}

TEST(NetProxyProtocol, V2ErrorsDecidedEarly) {
  expect_decided(v2_error_cases());
}

TEST(NetProxyProtocol, V1ErrorsDecidedEarly) {
  expect_decided(v1_error_cases());
}

// The 107-byte worst case is accepted and one more byte is not, for every way of being too long.
TEST(NetProxyProtocol, V1LengthBoundary) {
  const std::string f = "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff";
  const std::string worst = "PROXY UNKNOWN " + f + " " + f + " 65535 65535\r\n";
  ASSERT_EQ(worst.size(), v1_max_length);
  EXPECT_EQ(parse(worst).status, status::done);
  const std::string longer = "PROXY UNKNOWN " + f + " " + f + " 65535 655350\r\n";
  ASSERT_EQ(longer.size(), v1_max_length + 1);
  EXPECT_EQ(parse(longer).error, error::v1_too_long);
}

// Every error has its own description, and none is empty.
TEST(NetProxyProtocol, ErrorDescriptions) {
  std::vector<std::string_view> seen;
  for (int i = 0; i <= static_cast<int>(error::v2_bad_vpce_id); ++i) {
    const std::string_view s = to_string(static_cast<error>(i));
    EXPECT_FALSE(s.empty());
    EXPECT_NE(s, "unknown error");
    for (std::string_view other : seen) EXPECT_NE(s, other);
    seen.push_back(s);
  }
}

// Random damage to valid headers: whatever parse() answers, it is consistent with itself. This
// is the fuzz target's oracle run on a fixed seed, so a regression shows up in the unit tests.
TEST(NetProxyProtocol, MutatedHeadersStayConsistent) {
  std::mt19937 rng(20240601);
  std::size_t done_count = 0, error_count = 0;
  for (const valid_case& c : valid_cases()) {
    for (int round = 0; round < 300; ++round) {
      bytes m = c.raw;
      const int edits = 1 + static_cast<int>(rng() % 3);
      for (int e = 0; e < edits && !m.empty(); ++e) {
        const std::size_t at = rng() % m.size();
        switch (rng() % 4) {
          case 0:
            m[at] = static_cast<std::uint8_t>(rng());
            break;
          case 1:
            m.erase(m.begin() + static_cast<std::ptrdiff_t>(at));
            break;
          case 2:
            m.insert(m.begin() + static_cast<std::ptrdiff_t>(at), static_cast<std::uint8_t>(rng()));
            break;
          default:
            m.resize(at);
            break;
        }
      }
      result prev = parse_bytes(m, 0);
      for (std::size_t n = 1; n <= m.size(); ++n) {
        const result r = parse_bytes(m, n);
        if (prev.status != status::need_more) {
          // A decision never changes with more bytes.
          ASSERT_EQ(r.status, prev.status) << printable(m) << " at " << n;
          ASSERT_EQ(r.error, prev.error);
          ASSERT_EQ(r.header, prev.header);
        } else {
          // bytes_needed is a promise: no other answer before that many bytes, and never a
          // byte past the end of the header.
          ASSERT_GT(prev.bytes_needed, n - 1);
          if (r.status != status::need_more) {
            ASSERT_GE(n, prev.bytes_needed) << printable(m);
          }
          if (r.status == status::need_more) {
            ASSERT_GE(r.bytes_needed, prev.bytes_needed);
          }
          if (r.status == status::done) {
            ASSERT_LE(prev.bytes_needed, r.header.header_length);
          }
        }
        if (r.status == status::done) {
          ASSERT_LE(r.header.header_length, n);
          ASSERT_EQ(parse_bytes(m, r.header.header_length).header, r.header);
          if (r.header.vpce_id) {
            ASSERT_LE(r.header.vpce_id->size(), vpce_id_max_length);
          }
        }
        prev = r;
      }
      done_count += prev.status == status::done;
      error_count += prev.status == status::error;
    }
  }
  // The mutations reach both outcomes (otherwise this test would prove little).
  EXPECT_GT(done_count, 100u);
  EXPECT_GT(error_count, 100u);
}

}  // namespace
}  // namespace egressd::net::proxy_protocol
