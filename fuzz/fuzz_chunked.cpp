// libFuzzer target: the chunked transfer-coding decoder (src/http/chunked.cpp), driven the way a
// session drives it (decode the unconsumed bytes, consume, read more when it asks). The input is
// a message body as it arrives after the head. Checked on every input, with the session's limits
// and with small ones:
//  - every step consumes no more than it was given, and its data is a view into the input that
//    ends where the step's consumption ends;
//  - fed at once, split at an input-derived point, and one byte at a time, the decoder returns
//    the same payload, the same outcome (done / error / needs more) and, when done or failed,
//    the same stream offset: where the body ends cannot depend on how TCP cut it;
//  - it agrees with an independent reference decoder of RFC 9112 section 7.1 as STYLE.md
//    narrows it (plain hex sizes of at most 16 digits, extensions after optional blanks and a
//    ';', trailer lines without controls or obs-fold, CRLF everywhere): the same payload, the
//    same end of the body, and errors at the same byte (line and trailer limits aside);
//  - the payload re-encoded with append_chunk_header decodes back to itself.
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "egressd/http/chunked.hpp"
#include "fuzz_check.hpp"

namespace http = egressd::http;

namespace {

struct outcome {
  std::string payload;
  bool done = false;
  bool error = false;
  std::size_t offset = 0;  // stream offset of the end of the body (done) or the bad byte (error)
  std::string detail;
};

outcome decode_in_pieces(std::string_view in, const std::vector<std::size_t>& cuts,
                         std::size_t max_line, std::size_t max_trailer) {
  http::chunked_decoder dec(max_line, max_trailer);
  outcome out;
  std::string buffer;  // received, not yet consumed
  std::size_t fed = 0;
  std::vector<std::size_t> ends(cuts);
  ends.push_back(in.size());
  for (std::size_t end : ends) {
    if (end < fed) continue;
    buffer.append(in.substr(fed, end - fed));
    fed = end;
    while (true) {
      const auto s = dec.decode(buffer);
      FUZZ_CHECK(s.consumed <= buffer.size());
      FUZZ_CHECK(!(s.done && s.error));
      if (!s.data.empty()) {
        FUZZ_CHECK(egressd::fuzz::within(s.data, buffer.data(), buffer.size()));
        FUZZ_CHECK(s.data.data() + s.data.size() == buffer.data() + s.consumed);
        out.payload.append(s.data);
      }
      if (s.error) {
        FUZZ_CHECK(s.detail != nullptr && *s.detail != '\0' && s.data.empty());
        out.error = true;
        out.offset += s.consumed;
        out.detail = s.detail;
        FUZZ_CHECK(!dec.done());
        // A failed decoder stays failed.
        FUZZ_CHECK(dec.decode("0\r\n\r\n").error);
        return out;
      }
      out.offset += s.consumed;
      buffer.erase(0, s.consumed);
      if (s.done) {
        out.done = true;
        FUZZ_CHECK(dec.done());
        // Bytes after the body belong to the next message: none is taken.
        const auto next = dec.decode("GET");
        FUZZ_CHECK(next.done && next.consumed == 0);
        return out;
      }
      // "Need more" only when everything given was used.
      if (s.consumed == 0) FUZZ_CHECK(buffer.empty());
      if (buffer.empty()) break;
    }
  }
  return out;
}

// ---- reference decoder: the grammar, byte by byte, without limits ----

int hex(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

bool is_ctl(char ch) {
  const auto c = static_cast<unsigned char>(ch);
  return (c < 0x20 && c != '\t') || c == 0x7f;
}

// Error: offset of the first byte no valid body can have there. Incomplete: done and error both
// false, offset unused.
outcome reference(std::string_view in) {
  outcome out;
  std::size_t i = 0;
  auto fail = [&](std::size_t at) {
    out.error = true;
    out.offset = at;
    return out;
  };
  const std::size_t n = in.size();
  while (true) {
    // chunk-size
    std::uint64_t size = 0;
    std::size_t digits = 0;
    while (i < n && hex(in[i]) >= 0) {
      if (++digits > 16) return fail(i);
      size = (size << 4) | static_cast<unsigned>(hex(in[i]));
      ++i;
    }
    if (i == n) return out;
    if (digits == 0) return fail(i);
    // [ *( SP / HTAB ) ";" *( not CTL, or HTAB ) ]
    if (in[i] != '\r') {
      while (i < n && (in[i] == ' ' || in[i] == '\t')) ++i;
      if (i == n) return out;
      if (in[i] != ';') return fail(i);
      ++i;
      while (i < n && in[i] != '\r' && !is_ctl(in[i])) ++i;
      if (i == n) return out;
      if (in[i] != '\r') return fail(i);
    }
    ++i;  // CR
    if (i == n) return out;
    if (in[i] != '\n') return fail(i);
    ++i;
    if (size == 0) break;
    // chunk-data CRLF
    const std::uint64_t avail = n - i;
    if (avail <= size) {
      out.payload.append(in.substr(i));
      return out;
    }
    out.payload.append(in.substr(i, size));
    i += size;
    if (in[i] != '\r') return fail(i);
    if (++i == n) return out;
    if (in[i] != '\n') return fail(i);
    ++i;
  }
  // trailer-section CRLF: lines of non-CTL bytes, the first not a blank (obs-fold).
  while (true) {
    const std::size_t start = i;
    while (i < n && in[i] != '\r') {
      if (in[i] == '\n' || is_ctl(in[i])) return fail(i);
      if (i == start && (in[i] == ' ' || in[i] == '\t')) return fail(i);
      ++i;
    }
    if (i == n) return out;
    if (++i == n) return out;
    if (in[i] != '\n') return fail(i);
    ++i;
    if (i - start == 2) {
      out.done = true;
      out.offset = i;
      return out;
    }
  }
}

bool limit_error(const outcome& o) {
  return o.error && (o.detail.find("too long") != std::string::npos ||
                     o.detail.find("too large") != std::string::npos);
}

void run(std::string_view in, std::size_t max_line, std::size_t max_trailer) {
  const outcome whole = decode_in_pieces(in, {}, max_line, max_trailer);

  const std::size_t h = egressd::fuzz::input_hash(in);
  const std::size_t a = in.empty() ? 0 : h % (in.size() + 1);
  const outcome split = decode_in_pieces(in, {a}, max_line, max_trailer);
  std::vector<std::size_t> bytewise;
  for (std::size_t k = 1; k < in.size(); ++k) bytewise.push_back(k);
  const outcome bytes = decode_in_pieces(in, bytewise, max_line, max_trailer);
  for (const outcome* o : {&split, &bytes}) {
    FUZZ_CHECK(o->payload == whole.payload);
    FUZZ_CHECK(o->done == whole.done && o->error == whole.error);
    if (whole.done || whole.error) FUZZ_CHECK(o->offset == whole.offset);
    FUZZ_CHECK(o->detail == whole.detail);
  }

  const outcome ref = reference(in);
  if (!limit_error(whole)) {
    FUZZ_CHECK(whole.done == ref.done && whole.error == ref.error);
    if (whole.done || whole.error) FUZZ_CHECK(whole.offset == ref.offset);
    // Payload bytes decoded before an error are equal too: the reference stops at the same byte.
    FUZZ_CHECK(whole.payload == ref.payload);
  } else {
    // A limit only ever stops a body early.
    FUZZ_CHECK(!ref.error || ref.offset >= whole.offset);
  }

  // Re-encoded in chunks of input-derived sizes, the payload decodes back to itself.
  std::string encoded;
  std::string_view rest = whole.payload;
  std::size_t step = (h >> 8) % 7 + 1;
  while (!rest.empty()) {
    const std::size_t n = std::min(rest.size(), step);
    http::append_chunk_header(encoded, n);
    encoded.append(rest.substr(0, n));
    encoded.append("\r\n");
    rest.remove_prefix(n);
    step = step * 3 + 1;
  }
  encoded.append("0\r\n\r\n");
  const outcome back = decode_in_pieces(encoded, {encoded.size() / 2}, 4096, 64 * 1024);
  FUZZ_CHECK(back.done && back.payload == whole.payload && back.offset == encoded.size());
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view in(reinterpret_cast<const char*>(data), size);
  run(in, 4096, 64 * 1024);  // as the session builds it (max_trailer: limits.header_block)
  run(in, 8, 24);            // small: the line and trailer limits within reach
  return 0;
}
