// libFuzzer target for the PROXY protocol parser. Beyond "no crash, no sanitizer report", it
// checks the parser's contract on every input and traps when one is broken:
//  - a decision (done, not_proxy, error) on a prefix never changes when a byte is appended;
//  - need_more asks for more than it has, and not for a byte past the header it then accepts;
//  - done never claims bytes it was not given, and the header alone parses to the same result;
//  - with the CRC32C field of a v2 header recomputed, the checksum is never what fails, so the
//    fuzzer gets past the checksum to the TLV and VPC endpoint id code behind it.
//
// Build (not part of the CMake build yet):
//   clang++ -fsanitize=fuzzer,address -std=c++20 -Iinclude tests/fuzz/proxy_protocol_fuzz.cpp \
//     src/net/proxy_protocol.cpp src/acl/cidr.cpp -o proxy_protocol_fuzz
//   ./proxy_protocol_fuzz tests/fuzz/corpus/proxy_protocol
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string_view>
#include <vector>

#include "egressd/net/proxy_protocol.hpp"

namespace pp = egressd::net::proxy_protocol;

namespace {

void check(bool ok) {
  if (!ok) __builtin_trap();
}

bool same(const pp::result& a, const pp::result& b) {
  return a.status == b.status && a.error == b.error && a.header == b.header;
}

// The offset of the value of the first 4-byte CRC32C TLV of a complete v2 PROXY header with a
// TCP family, found by walking the TLVs the way the spec lays them out (section 2.2).
std::optional<std::size_t> crc_field(std::span<const std::uint8_t> d) {
  static constexpr std::uint8_t sig[12] = {0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D,
                                           0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A};
  if (d.size() < 16 || !std::equal(sig, sig + 12, d.begin()) || d[12] != 0x21) return std::nullopt;
  const std::size_t block = d[13] == 0x11 ? 12 : d[13] == 0x21 ? 36 : 0;
  const std::size_t total = 16 + ((std::size_t{d[14]} << 8) | d[15]);
  if (block == 0 || total > d.size()) return std::nullopt;
  for (std::size_t pos = 16 + block; pos + 3 <= total;) {
    const std::size_t vlen = (std::size_t{d[pos + 1]} << 8) | d[pos + 2];
    if (pos + 3 + vlen > total) return std::nullopt;
    if (d[pos] == 0x03 && vlen == 4) return pos + 3;
    pos += 3 + vlen;
  }
  return std::nullopt;
}

void check_contract(std::span<const std::uint8_t> d) {
  const pp::result r = pp::parse(d);
  const std::string_view text(reinterpret_cast<const char*>(d.data()), d.size());
  check(same(r, pp::parse(text)));

  switch (r.status) {
    case pp::status::need_more:
      check(r.bytes_needed > d.size());
      check(r.bytes_needed <= pp::v2_fixed_length + pp::v2_max_payload);
      check(r.error == pp::error::none);
      break;
    case pp::status::done: {
      const pp::header& h = r.header;
      check(h.header_length <= d.size());
      check(same(r, pp::parse(d.first(h.header_length))));
      check(h.version == 1 || h.version == 2);
      if (h.version == 1) {
        check(h.header_length <= pp::v1_max_length);
        check(d[h.header_length - 2] == '\r' && d[h.header_length - 1] == '\n');
        check(!h.vpce_id && !h.crc32c_verified);
      } else {
        check(h.header_length >= pp::v2_fixed_length);
        check(h.header_length <= pp::v2_fixed_length + pp::v2_max_payload);
      }
      if (!h.has_addresses()) check(!h.vpce_id && !h.crc32c_verified);
      if (h.has_addresses()) {
        // Un-mapped: no IPv4-mapped IPv6 address ever leaves the parser.
        check(!(h.source_address.is_v6() && h.source_address.to_v6().is_v4_mapped()));
        check(!(h.destination_address.is_v6() && h.destination_address.to_v6().is_v4_mapped()));
      }
      if (h.vpce_id) {
        check(!h.vpce_id->empty() && h.vpce_id->size() <= pp::vpce_id_max_length);
        for (char c : *h.vpce_id) check(c >= 0x21 && c <= 0x7E);
      }
      break;
    }
    case pp::status::not_proxy:
      check(r.error == pp::error::none);
      break;
    case pp::status::error:
      check(r.error != pp::error::none);
      check(!pp::to_string(r.error).empty());
      break;
  }

  // One byte less: a decided answer must already have been the same, and an undecided one
  // must have asked for no more than this answer needed.
  if (!d.empty()) {
    const pp::result p = pp::parse(d.first(d.size() - 1));
    if (p.status != pp::status::need_more) {
      check(same(p, r));
    } else {
      check(p.bytes_needed >= d.size());
      if (r.status != pp::status::need_more) check(d.size() >= p.bytes_needed);
      if (r.status == pp::status::done) check(p.bytes_needed <= r.header.header_length);
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::span<const std::uint8_t> d(data, size);
  check_contract(d);

  // Recompute the checksum of a v2 header that carries one: the result must not be a checksum
  // failure, and the contract holds for the patched bytes too.
  if (const auto at = crc_field(d)) {
    std::vector<std::uint8_t> patched(d.begin(), d.end());
    const std::size_t total = 16 + ((std::size_t{patched[14]} << 8) | patched[15]);
    for (std::size_t i = 0; i < 4; ++i) patched[*at + i] = 0;
    const std::uint32_t crc = pp::crc32c(std::span<const std::uint8_t>(patched).first(total));
    for (std::size_t i = 0; i < 4; ++i)
      patched[*at + i] = static_cast<std::uint8_t>(crc >> (24 - 8 * i));
    check_contract(patched);
    const pp::result r = pp::parse(patched);
    check(r.error != pp::error::v2_crc32c_mismatch);
  }
  return 0;
}
