// libFuzzer target: the PROXY protocol v1/v2 parser (src/net/proxy_protocol.cpp). Grown from
// tests/fuzz/proxy_protocol_fuzz.cpp; beyond "no crash, no sanitizer report" it checks, on every
// input:
//  - the parser's incremental contract: a decision (done, not_proxy, error) never changes when
//    bytes are appended (checked against the prefix one byte shorter and an input-derived
//    prefix); need_more asks for more than it has and never for a byte past the header it then
//    accepts; a session that reads exactly bytes_needed each time reaches the same decision and
//    never reads a byte of the request behind the header;
//  - the lengths of a parsed header agree with its bytes: v1 ends at the first CRLF, within 107
//    bytes; v2 is 16 + the length field, within v2_max_payload, and covers the address block;
//  - the addresses and ports are the ones on the wire (v2: the raw block, un-mapped; v1: the
//    text fields, and for TCP4 the line printed back from the header is the line received);
//  - the header parsed alone gives the same result; the span and string_view overloads agree;
//  - a VPC endpoint id is printable, bounded and really is in an AWS TLV of the header;
//  - with the CRC32C field of a v2 header recomputed, the checksum is never what fails, so the
//    fuzzer gets past the checksum to the TLV and VPC endpoint id code behind it.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "egressd/acl/cidr.hpp"
#include "egressd/net/proxy_protocol.hpp"
#include "fuzz_check.hpp"

namespace pp = egressd::net::proxy_protocol;
namespace acl = egressd::acl;

namespace {

using bytes = std::span<const std::uint8_t>;

constexpr std::uint8_t sig[12] = {0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D,
                                  0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A};

bool same(const pp::result& a, const pp::result& b) {
  return a.status == b.status && a.error == b.error && a.header == b.header &&
         (a.status != pp::status::need_more || a.bytes_needed == b.bytes_needed);
}

bool same_decision(const pp::result& a, const pp::result& b) {
  return a.status == b.status && a.error == b.error && a.header == b.header;
}

std::size_t be16(bytes d, std::size_t at) {
  return (std::size_t{d[at]} << 8) | d[at + 1];
}

// The offset of the value of the first 4-byte CRC32C TLV of a complete v2 PROXY header with a
// TCP family, found by walking the TLVs the way the spec lays them out (section 2.2).
std::optional<std::size_t> crc_field(bytes d) {
  if (d.size() < 16 || !std::equal(sig, sig + 12, d.begin()) || d[12] != 0x21) return std::nullopt;
  const std::size_t block = d[13] == 0x11 ? 12 : d[13] == 0x21 ? 36 : 0;
  const std::size_t total = 16 + be16(d, 14);
  if (block == 0 || total > d.size()) return std::nullopt;
  for (std::size_t pos = 16 + block; pos + 3 <= total;) {
    const std::size_t vlen = be16(d, pos + 1);
    if (pos + 3 + vlen > total) return std::nullopt;
    if (d[pos] == 0x03 && vlen == 4) return pos + 3;
    pos += 3 + vlen;
  }
  return std::nullopt;
}

// True when an AWS TLV (0xEA) with subtype 0x01 and exactly this value sits in the TLV area.
bool has_vpce_tlv(bytes d, std::size_t from, std::size_t total, const std::string& id) {
  for (std::size_t pos = from; pos + 3 <= total;) {
    const std::size_t vlen = be16(d, pos + 1);
    if (pos + 3 + vlen > total) return false;
    if (d[pos] == 0xEA && vlen == id.size() + 1 && d[pos + 3] == 0x01 &&
        std::equal(id.begin(), id.end(), d.begin() + static_cast<std::ptrdiff_t>(pos + 4)))
      return true;
    pos += 3 + vlen;
  }
  return false;
}

acl::address v4_at(bytes d, std::size_t at) {
  return boost::asio::ip::address_v4(
      boost::asio::ip::address_v4::bytes_type{d[at], d[at + 1], d[at + 2], d[at + 3]});
}

acl::address v6_at(bytes d, std::size_t at) {
  boost::asio::ip::address_v6::bytes_type b{};
  std::copy(d.begin() + static_cast<std::ptrdiff_t>(at),
            d.begin() + static_cast<std::ptrdiff_t>(at + 16), b.begin());
  return acl::unmap(boost::asio::ip::address_v6(b));
}

// A v1 address as the TCP6 family prints it: an un-mapped IPv4 goes back into ::ffff:.
std::string v1_text(const acl::address& a, bool v6_family) {
  if (v6_family && a.is_v4()) return "::ffff:" + a.to_string();
  return a.to_string();
}

void check_v2_done(bytes d, const pp::header& h) {
  FUZZ_CHECK(d.size() >= pp::v2_fixed_length && std::equal(sig, sig + 12, d.begin()));
  FUZZ_CHECK(h.header_length == pp::v2_fixed_length + be16(d, 14));
  FUZZ_CHECK(h.header_length <= pp::v2_fixed_length + pp::v2_max_payload);
  FUZZ_CHECK((d[12] >> 4) == 2);
  const bool local = (d[12] & 0x0F) == 0;
  FUZZ_CHECK((d[12] & 0x0F) <= 1);
  FUZZ_CHECK(h.command == (local ? pp::command::local : pp::command::proxy));
  if (local || d[13] == 0x00) {
    FUZZ_CHECK(h.family == pp::family::unspec && !h.has_addresses());
    return;
  }
  FUZZ_CHECK(d[13] == 0x11 || d[13] == 0x21);
  const bool v4 = d[13] == 0x11;
  FUZZ_CHECK(h.family == (v4 ? pp::family::tcp4 : pp::family::tcp6));
  const std::size_t block = v4 ? 12 : 36;
  FUZZ_CHECK(h.header_length >= pp::v2_fixed_length + block);
  const std::size_t a = pp::v2_fixed_length;
  if (v4) {
    FUZZ_CHECK(h.source_address == v4_at(d, a) && h.destination_address == v4_at(d, a + 4));
    FUZZ_CHECK(h.source_port == be16(d, a + 8) && h.destination_port == be16(d, a + 10));
  } else {
    FUZZ_CHECK(h.source_address == v6_at(d, a) && h.destination_address == v6_at(d, a + 16));
    FUZZ_CHECK(h.source_port == be16(d, a + 32) && h.destination_port == be16(d, a + 34));
  }
  if (h.vpce_id) FUZZ_CHECK(has_vpce_tlv(d, a + block, h.header_length, *h.vpce_id));
}

void check_v1_done(bytes d, const pp::header& h) {
  const std::string_view text(reinterpret_cast<const char*>(d.data()), h.header_length);
  FUZZ_CHECK(text.starts_with("PROXY "));
  FUZZ_CHECK(h.header_length <= pp::v1_max_length);
  // The header ends at the first CRLF, and holds no other CR or LF.
  FUZZ_CHECK(text.find("\r\n") == text.size() - 2);
  FUZZ_CHECK(text.find('\n') == text.size() - 1 && text.find('\r') == text.size() - 2);
  if (text.starts_with("PROXY UNKNOWN")) {
    FUZZ_CHECK(h.command == pp::command::local && h.family == pp::family::unspec);
    return;
  }
  FUZZ_CHECK(h.command == pp::command::proxy);
  const bool v6 = text.starts_with("PROXY TCP6 ");
  FUZZ_CHECK(v6 || text.starts_with("PROXY TCP4 "));
  FUZZ_CHECK(h.family == (v6 ? pp::family::tcp6 : pp::family::tcp4));
  // The four fields, parsed here independently.
  std::string_view rest = text.substr(11, text.size() - 13);
  std::vector<std::string_view> f;
  for (std::size_t sp; (sp = rest.find(' ')) != std::string_view::npos; rest.remove_prefix(sp + 1))
    f.push_back(rest.substr(0, sp));
  f.push_back(rest);
  FUZZ_CHECK(f.size() == 4);
  const auto src = acl::parse_address(f[0]);
  const auto dst = acl::parse_address(f[1]);
  FUZZ_CHECK(src && dst);
  FUZZ_CHECK(h.source_address == acl::unmap(*src) && h.destination_address == acl::unmap(*dst));
  FUZZ_CHECK(std::to_string(h.source_port) == f[2] && std::to_string(h.destination_port) == f[3]);
  // Printed back: TCP4 literals are canonical, so the line is the one received; a TCP6 line
  // printed back parses to the same header.
  const std::string line =
      std::string(v6 ? "PROXY TCP6 " : "PROXY TCP4 ") + v1_text(h.source_address, v6) + " " +
      v1_text(h.destination_address, v6) + " " + std::to_string(h.source_port) + " " +
      std::to_string(h.destination_port) + "\r\n";
  if (!v6) FUZZ_CHECK(line == text);
  const pp::result again = pp::parse(line);
  FUZZ_CHECK(again.status == pp::status::done);
  pp::header expect = h;
  expect.header_length = line.size();
  FUZZ_CHECK(again.header == expect);
}

void check_contract(bytes d) {
  const pp::result r = pp::parse(d);
  const std::string_view text(reinterpret_cast<const char*>(d.data()), d.size());
  FUZZ_CHECK(same(r, pp::parse(text)));

  switch (r.status) {
    case pp::status::need_more:
      FUZZ_CHECK(r.bytes_needed > d.size());
      FUZZ_CHECK(r.bytes_needed <= pp::v2_fixed_length + pp::v2_max_payload);
      FUZZ_CHECK(r.error == pp::error::none);
      break;
    case pp::status::done: {
      const pp::header& h = r.header;
      FUZZ_CHECK(h.header_length <= d.size());
      FUZZ_CHECK(same(r, pp::parse(d.first(h.header_length))));
      FUZZ_CHECK(h.version == 1 || h.version == 2);
      if (h.version == 1) {
        FUZZ_CHECK(!h.vpce_id && !h.crc32c_verified);
        check_v1_done(d, h);
      } else {
        check_v2_done(d, h);
      }
      if (!h.has_addresses()) FUZZ_CHECK(!h.vpce_id && !h.crc32c_verified);
      if (h.has_addresses()) {
        // Un-mapped: no IPv4-mapped IPv6 address ever leaves the parser.
        FUZZ_CHECK(!(h.source_address.is_v6() && h.source_address.to_v6().is_v4_mapped()));
        FUZZ_CHECK(
            !(h.destination_address.is_v6() && h.destination_address.to_v6().is_v4_mapped()));
      }
      if (h.vpce_id) {
        FUZZ_CHECK(!h.vpce_id->empty() && h.vpce_id->size() <= pp::vpce_id_max_length);
        for (char c : *h.vpce_id) FUZZ_CHECK(c >= 0x21 && c <= 0x7E);
      }
      break;
    }
    case pp::status::not_proxy:
      FUZZ_CHECK(r.error == pp::error::none);
      // Neither magic: the first bytes differ from both "PROXY " and the v2 signature.
      FUZZ_CHECK(!d.empty());
      FUZZ_CHECK(!text.starts_with(
          std::string_view("PROXY ").substr(0, std::min<std::size_t>(6, d.size()))));
      FUZZ_CHECK(!std::equal(sig, sig + std::min<std::size_t>(12, d.size()), d.begin()));
      break;
    case pp::status::error:
      FUZZ_CHECK(r.error != pp::error::none);
      FUZZ_CHECK(!pp::to_string(r.error).empty());
      break;
  }

  // One byte less, and an input-derived prefix: a decided answer must already have been the
  // same, and an undecided one must have asked for no more than this answer needed.
  std::vector<std::size_t> cuts;
  if (!d.empty()) cuts.push_back(d.size() - 1);
  if (!d.empty()) cuts.push_back(egressd::fuzz::input_hash(text) % d.size());
  for (std::size_t cut : cuts) {
    const pp::result p = pp::parse(d.first(cut));
    if (p.status != pp::status::need_more) {
      FUZZ_CHECK(same_decision(p, r));
    } else {
      FUZZ_CHECK(p.bytes_needed > cut);
      if (cut == d.size() - 1) FUZZ_CHECK(p.bytes_needed >= d.size());
      if (r.status == pp::status::done) FUZZ_CHECK(p.bytes_needed <= r.header.header_length);
    }
  }

  // A session reading exactly what parse() asks for: never past the header, same decision.
  std::size_t have = 0;
  pp::result walk = pp::parse(d.first(0));
  for (int steps = 0; walk.status == pp::status::need_more && walk.bytes_needed <= d.size();
       ++steps) {
    FUZZ_CHECK(steps <= 1100);  // v1 asks a byte at a time; v2 at most 4 times
    FUZZ_CHECK(walk.bytes_needed > have);
    have = walk.bytes_needed;
    walk = pp::parse(d.first(have));
  }
  if (walk.status == pp::status::need_more) {
    FUZZ_CHECK(r.status == pp::status::need_more);
  } else {
    FUZZ_CHECK(same_decision(walk, r));
    if (r.status == pp::status::done) FUZZ_CHECK(have == r.header.header_length);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const bytes d(data, size);
  check_contract(d);

  // Recompute the checksum of a v2 header that carries one: the result must not be a checksum
  // failure, and the contract holds for the patched bytes too.
  if (const auto at = crc_field(d)) {
    std::vector<std::uint8_t> patched(d.begin(), d.end());
    const std::size_t total = 16 + be16(patched, 14);
    for (std::size_t i = 0; i < 4; ++i) patched[*at + i] = 0;
    const std::uint32_t crc = pp::crc32c(bytes(patched).first(total));
    for (std::size_t i = 0; i < 4; ++i)
      patched[*at + i] = static_cast<std::uint8_t>(crc >> (24 - 8 * i));
    check_contract(patched);
    const pp::result r = pp::parse(patched);
    FUZZ_CHECK(r.error != pp::error::v2_crc32c_mismatch);
    if (r.status == pp::status::done) FUZZ_CHECK(r.header.crc32c_verified);
  }
  return 0;
}
