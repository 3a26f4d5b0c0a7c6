// Strict chunked transfer coding decoder and the chunk header writer.
#include "egressd/http/chunked.hpp"

#include <gtest/gtest.h>

#include <cstddef>
#include <cstdint>
#include <limits>
#include <string>
#include <string_view>
#include <vector>

namespace egressd::http {
namespace {

std::string printable(std::string_view s) {
  std::string out;
  for (char ch : s) {
    auto c = static_cast<unsigned char>(ch);
    if (c == '\r') {
      out += "\\r";
    } else if (c == '\n') {
      out += "\\n";
    } else if (c < 0x20 || c >= 0x7f) {
      static constexpr char hex[] = "0123456789abcdef";
      out += "\\x";
      out += hex[c >> 4];
      out += hex[c & 0xf];
    } else {
      out += ch;
    }
  }
  return out;
}

struct outcome {
  std::string data;
  bool done = false;
  bool error = false;
  std::size_t consumed = 0;  // total input bytes consumed
  std::string detail;
};

// Feeds input to dec in pieces of the given sizes (the rest in one piece when sizes run out),
// the way a session would: unconsumed bytes stay buffered and are offered again with the next
// piece. Stops at done or error.
outcome feed(chunked_decoder& dec, std::string_view input, const std::vector<std::size_t>& sizes) {
  outcome o;
  std::string pending;
  std::size_t offset = 0;
  std::size_t piece = 0;
  while (true) {
    if (offset < input.size()) {
      std::size_t n = piece < sizes.size() ? sizes[piece] : input.size() - offset;
      n = std::min(n, input.size() - offset);
      pending.append(input.substr(offset, n));
      offset += n;
      ++piece;
    }
    // Decode everything the pending bytes allow.
    while (!pending.empty()) {
      auto s = dec.decode(pending);
      EXPECT_LE(s.consumed, pending.size());
      if (!s.data.empty()) {
        // The data is a view into the input it was given.
        EXPECT_GE(s.data.data(), pending.data());
        EXPECT_LE(s.data.data() + s.data.size(), pending.data() + pending.size());
        o.data.append(s.data);
      }
      o.consumed += s.consumed;
      pending.erase(0, s.consumed);
      if (s.error) {
        o.error = true;
        o.detail = s.detail;
        return o;
      }
      if (s.done) {
        o.done = true;
        return o;
      }
      if (s.consumed == 0) break;
    }
    if (offset >= input.size()) return o;
  }
}

outcome feed_whole(std::string_view input, std::size_t max_line = 4096,
                   std::size_t max_trailer = 64 * 1024) {
  chunked_decoder dec(max_line, max_trailer);
  return feed(dec, input, {});
}

outcome feed_bytewise(std::string_view input, std::size_t max_line = 4096,
                      std::size_t max_trailer = 64 * 1024) {
  chunked_decoder dec(max_line, max_trailer);
  return feed(dec, input, std::vector<std::size_t>(input.size(), 1));
}

struct valid_case {
  std::string body;
  std::string payload;
};

const std::vector<valid_case>& valid_cases() {
  static const std::vector<valid_case> cases = {
      {"0\r\n\r\n", ""},
      {"5\r\nhello\r\n0\r\n\r\n", "hello"},
      {"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n", "hello world"},
      {"1\r\na\r\n1\r\nb\r\n1\r\nc\r\n0\r\n\r\n", "abc"},
      {"a\r\n0123456789\r\n0\r\n\r\n", "0123456789"},
      {"A\r\n0123456789\r\n0\r\n\r\n", "0123456789"},
      {"1F\r\n" + std::string(31, 'x') + "\r\n0\r\n\r\n", std::string(31, 'x')},
      {"1f\r\n" + std::string(31, 'y') + "\r\n0\r\n\r\n", std::string(31, 'y')},
      {"100\r\n" + std::string(256, 'z') + "\r\n0\r\n\r\n", std::string(256, 'z')},
      {"00005\r\nhello\r\n000\r\n\r\n", "hello"},
      {"0000000000000005\r\nhello\r\n0000000000000000\r\n\r\n", "hello"},
      // Data may hold CR, LF and anything else: it is counted, not parsed.
      {"4\r\n\r\n\r\n\r\n0\r\n\r\n", "\r\n\r\n"},
      {std::string("3\r\n\0\xff\n\r\n0\r\n\r\n", 13), std::string("\0\xff\n", 3)},
      // Extensions, with and without BWS.
      {"5;name=value\r\nhello\r\n0\r\n\r\n", "hello"},
      {"5;name\r\nhello\r\n0\r\n\r\n", "hello"},
      {"5 ;name=value\r\nhello\r\n0\r\n\r\n", "hello"},
      {"5\t;name\r\nhello\r\n0\r\n\r\n", "hello"},
      {"5 \t ;a=1\r\nhello\r\n0\r\n\r\n", "hello"},
      {"5; a = 1\r\nhello\r\n0\r\n\r\n", "hello"},
      {"5;a=1;b=2\r\nhello\r\n0\r\n\r\n", "hello"},
      {"5;a=\"quoted; \\\"value\\\"\"\r\nhello\r\n0\r\n\r\n", "hello"},
      {"5;a=\xc3\xa9\r\nhello\r\n0;last\r\n\r\n", "hello"},
      // Trailers are checked and dropped.
      {"5\r\nhello\r\n0\r\nX-Sum: 1\r\n\r\n", "hello"},
      {"5\r\nhello\r\n0\r\nX-Sum: 1\r\nY:2\r\nZ: a\tb\r\n\r\n", "hello"},
      {"0\r\nX: \xc3\xa9\r\n\r\n", ""},
  };
  return cases;
}

TEST(ChunkedDecoder, ValidBodiesWhole) {
  for (const auto& c : valid_cases()) {
    SCOPED_TRACE(printable(c.body));
    auto o = feed_whole(c.body);
    EXPECT_FALSE(o.error) << o.detail;
    EXPECT_TRUE(o.done);
    EXPECT_EQ(o.data, c.payload);
    EXPECT_EQ(o.consumed, c.body.size());
  }
}

TEST(ChunkedDecoder, ValidBodiesByteByByte) {
  for (const auto& c : valid_cases()) {
    SCOPED_TRACE(printable(c.body));
    auto o = feed_bytewise(c.body);
    EXPECT_FALSE(o.error) << o.detail;
    EXPECT_TRUE(o.done);
    EXPECT_EQ(o.data, c.payload);
    EXPECT_EQ(o.consumed, c.body.size());
  }
}

TEST(ChunkedDecoder, ValidBodiesSplitAtEveryBoundary) {
  for (const auto& c : valid_cases()) {
    for (std::size_t k = 0; k <= c.body.size(); ++k) {
      SCOPED_TRACE(printable(c.body) + " split at " + std::to_string(k));
      chunked_decoder dec;
      auto o = feed(dec, c.body, {k});
      EXPECT_FALSE(o.error) << o.detail;
      EXPECT_TRUE(o.done);
      EXPECT_TRUE(dec.done());
      EXPECT_EQ(o.data, c.payload);
      EXPECT_EQ(o.consumed, c.body.size());
    }
  }
}

TEST(ChunkedDecoder, StepsReturnOneRunOfDataAtATime) {
  const std::string in = "5\r\nhello\r\n6\r\n world\r\n0\r\n\r\nNEXT";
  chunked_decoder dec;
  auto s1 = dec.decode(in);
  EXPECT_EQ(s1.consumed, 8u);  // "5\r\nhello"
  EXPECT_EQ(s1.data, "hello");
  EXPECT_EQ(s1.data.data(), in.data() + 3);
  EXPECT_FALSE(s1.done);
  EXPECT_FALSE(s1.error);
  std::string_view rest = std::string_view(in).substr(s1.consumed);
  auto s2 = dec.decode(rest);
  EXPECT_EQ(s2.data, " world");
  EXPECT_EQ(s2.consumed, 11u);  // "\r\n6\r\n world"
  rest.remove_prefix(s2.consumed);
  auto s3 = dec.decode(rest);
  EXPECT_TRUE(s3.done);
  EXPECT_TRUE(s3.data.empty());
  EXPECT_EQ(s3.consumed, 7u);  // "\r\n0\r\n\r\n": bytes after the body are left alone
  EXPECT_EQ(rest.substr(s3.consumed), "NEXT");
  EXPECT_TRUE(dec.done());
}

TEST(ChunkedDecoder, PartialData) {
  chunked_decoder dec;
  auto s1 = dec.decode("a\r\n0123");
  EXPECT_EQ(s1.data, "0123");
  EXPECT_EQ(s1.consumed, 7u);
  auto s2 = dec.decode("456");
  EXPECT_EQ(s2.data, "456");
  EXPECT_EQ(s2.consumed, 3u);
  auto s3 = dec.decode("789\r");
  EXPECT_EQ(s3.data, "789");
  EXPECT_EQ(s3.consumed, 3u);
  auto s4 = dec.decode("\r");
  EXPECT_TRUE(s4.data.empty());
  EXPECT_EQ(s4.consumed, 1u);
  EXPECT_FALSE(s4.done);
  EXPECT_FALSE(s4.error);
  auto s5 = dec.decode("");
  EXPECT_EQ(s5.consumed, 0u);
  EXPECT_FALSE(s5.done);
  EXPECT_FALSE(s5.error);
  auto s6 = dec.decode("\n0\r\n\r\n");
  EXPECT_TRUE(s6.done);
  EXPECT_FALSE(dec.decode("").error);
}

TEST(ChunkedDecoder, LargestSize) {
  // 16 hex digits is the most a size can have; ffffffffffffffff itself is representable.
  chunked_decoder dec;
  auto s = dec.decode("ffffffffffffffff\r\nabc");
  EXPECT_FALSE(s.error) << s.detail;
  EXPECT_EQ(s.data, "abc");
  EXPECT_FALSE(dec.done());
}

struct invalid_case {
  std::string body;
  std::size_t max_line = 4096;
  std::size_t max_trailer = 64 * 1024;
};

TEST(ChunkedDecoder, InvalidBodies) {
  const std::vector<invalid_case> cases = {
      // Sizes.
      {"g\r\nx\r\n0\r\n\r\n"},
      {"\r\n"},
      {"\r\nhello\r\n0\r\n\r\n"},
      {";ext\r\n"},
      {" 5\r\nhello\r\n0\r\n\r\n"},
      {"\t5\r\nhello\r\n0\r\n\r\n"},
      {"11111111111111111\r\n"},
      {"00000000000000005\r\nhello\r\n0\r\n\r\n"},
      {"0x10\r\n"},
      {"0X10\r\n"},
      {"-1\r\n"},
      {"+1\r\na\r\n0\r\n\r\n"},
      {"5h\r\nhello\r\n0\r\n\r\n"},
      {"5.0\r\nhello\r\n0\r\n\r\n"},
      {"5,\r\nhello\r\n0\r\n\r\n"},
      {"\xef\xbc\x95\r\n"},
      // Whitespace after the size only before an extension.
      {"5 \r\nhello\r\n0\r\n\r\n"},
      {"5\t\r\nhello\r\n0\r\n\r\n"},
      {"5 x\r\nhello\r\n0\r\n\r\n"},
      {"5 5\r\nhello\r\n0\r\n\r\n"},
      {"0 \r\n\r\n"},
      // Line ends after the size.
      {"5\nhello\r\n0\r\n\r\n"},
      {"5\rhello\r\n0\r\n\r\n"},
      {"5\r\rhello\r\n0\r\n\r\n"},
      {"5;a\nhello\r\n0\r\n\r\n"},
      {"5;a\rhello\r\n0\r\n\r\n"},
      {"0\n\r\n"},
      // After the data.
      {"5\r\nhelloX\r\n0\r\n\r\n"},
      {"5\r\nhello\n0\r\n\r\n"},
      {"5\r\nhello\r0\r\n\r\n"},
      {"5\r\nhello0\r\n\r\n"},
      {"5\r\nhello\r\r\n0\r\n\r\n"},
      {"5\r\nhello world\r\n0\r\n\r\n"},
      // Extensions.
      {std::string("5;a\0b\r\nhello\r\n0\r\n\r\n", 19)},
      {"5;a\x01\r\nhello\r\n0\r\n\r\n"},
      {"5;a\x1f\r\nhello\r\n0\r\n\r\n"},
      {"5;a\x7f\r\nhello\r\n0\r\n\r\n"},
      {"5;a=\"\x0b\"\r\nhello\r\n0\r\n\r\n"},
      // Trailers.
      {"0\r\nX: y\n\r\n"},
      {"0\r\nX: y\r\n\n"},
      {"0\r\n\n"},
      {"0\r\nX: y\rZ\r\n\r\n"},
      {"0\r\nX: y\r\r\n\r\n"},
      {"0\r\n\rX"},
      {"0\r\nX: y\r\n z\r\n\r\n"},
      {"0\r\nX: y\r\n\tz\r\n\r\n"},
      {"0\r\n X: y\r\n\r\n"},
      {"0\r\nX: \x01\r\n\r\n"},
      {"0\r\nX: \x7f\r\n\r\n"},
      {std::string("0\r\nX: \0\r\n\r\n", 11)},
      // Limits.
      {"5;" + std::string(100, 'e') + "\r\nhello\r\n0\r\n\r\n", 64},
      {"5 " + std::string(100, ' ') + ";e\r\nhello\r\n0\r\n\r\n", 64},
      {"0\r\nX: " + std::string(100, 'v') + "\r\n\r\n", 64},
      {"0\r\nX: 1\r\nY: 2\r\nZ: 3\r\n\r\n", 4096, 16},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(printable(c.body));
    auto whole = feed_whole(c.body, c.max_line, c.max_trailer);
    EXPECT_TRUE(whole.error);
    EXPECT_FALSE(whole.done);
    EXPECT_STRNE(whole.detail.c_str(), "");
    auto bytewise = feed_bytewise(c.body, c.max_line, c.max_trailer);
    EXPECT_TRUE(bytewise.error);
    EXPECT_FALSE(bytewise.done);
    EXPECT_EQ(bytewise.detail, whole.detail);
  }
}

TEST(ChunkedDecoder, ErrorDetails) {
  const std::vector<std::pair<std::string, std::string_view>> cases = {
      {"g\r\n", "chunk size is not hex"},
      {"11111111111111111\r\n", "chunk size overflows"},
      {"5 \r\n", "whitespace after chunk size"},
      {"5\n", "invalid byte after chunk size"},
      {"5\rx", "chunk size line not ended by CRLF"},
      {"5\r\nhelloX", "chunk data not followed by CRLF"},
      {"5\r\nhello\rX", "chunk data not followed by CRLF"},
      {"5;\x01", "control byte in chunk extension"},
      {"0\r\nX: y\n", "bare LF in trailer"},
      {"0\r\nX: y\rZ", "bare CR in trailer"},
      {"0\r\nX: y\r\n z", "obs-fold in trailer"},
      {"0\r\nX: \x01", "control byte in trailer"},
  };
  for (const auto& [body, detail] : cases) {
    SCOPED_TRACE(printable(body));
    auto o = feed_whole(body);
    EXPECT_TRUE(o.error);
    EXPECT_EQ(o.detail, detail);
  }
}

TEST(ChunkedDecoder, LineLimitBoundary) {
  // A trailer line of exactly max_line bytes (without CRLF) passes, one more fails.
  const std::size_t max_line = 32;
  const std::string at = "X: " + std::string(max_line - 3, 'v');
  const std::string over = at + "v";
  auto ok = feed_whole("0\r\n" + at + "\r\n\r\n", max_line);
  EXPECT_TRUE(ok.done) << ok.detail;
  auto bad = feed_whole("0\r\n" + over + "\r\n\r\n", max_line);
  EXPECT_TRUE(bad.error);
  EXPECT_EQ(bad.detail, "trailer line too long");
  // A chunk extension far under the limit passes, one far over fails.
  auto ext_ok = feed_whole("1;" + std::string(max_line / 2, 'e') + "\r\na\r\n0\r\n\r\n", max_line);
  EXPECT_TRUE(ext_ok.done) << ext_ok.detail;
  auto ext_bad = feed_whole("1;" + std::string(max_line * 2, 'e') + "\r\na\r\n0\r\n\r\n", max_line);
  EXPECT_TRUE(ext_bad.error);
  EXPECT_EQ(ext_bad.detail, "chunk line too long");
}

TEST(ChunkedDecoder, TrailerLimitBoundary) {
  // The trailer section counts every byte after the last-chunk line, final CRLF included.
  const std::string body = "0\r\nX: 123456789\r\n\r\n";  // trailer section: 16 bytes
  auto ok = feed_whole(body, 4096, 16);
  EXPECT_TRUE(ok.done) << ok.detail;
  auto ok_bytewise = feed_bytewise(body, 4096, 16);
  EXPECT_TRUE(ok_bytewise.done) << ok_bytewise.detail;
  auto bad = feed_whole(body, 4096, 15);
  EXPECT_TRUE(bad.error);
  EXPECT_EQ(bad.detail, "trailer section too large");
  // Many short lines add up.
  std::string many = "0\r\n";
  for (int i = 0; i < 100; ++i) many += "X: y\r\n";
  many += "\r\n";
  auto big = feed_whole(many, 4096, 256);
  EXPECT_TRUE(big.error);
  EXPECT_EQ(big.detail, "trailer section too large");
}

TEST(ChunkedDecoder, DecodeAfterDone) {
  chunked_decoder dec;
  auto s = dec.decode("0\r\n\r\n");
  ASSERT_TRUE(s.done);
  EXPECT_EQ(s.consumed, 5u);
  EXPECT_TRUE(dec.done());
  auto again = dec.decode("5\r\nhello\r\n");
  EXPECT_TRUE(again.done);
  EXPECT_FALSE(again.error);
  EXPECT_EQ(again.consumed, 0u);
  EXPECT_TRUE(again.data.empty());
  auto empty = dec.decode("");
  EXPECT_TRUE(empty.done);
  EXPECT_EQ(empty.consumed, 0u);
}

TEST(ChunkedDecoder, DecodeAfterErrorStaysFailed) {
  chunked_decoder dec;
  auto s = dec.decode("x\r\n");
  ASSERT_TRUE(s.error);
  EXPECT_EQ(s.consumed, 0u);
  EXPECT_FALSE(dec.done());
  auto again = dec.decode("0\r\n\r\n");
  EXPECT_TRUE(again.error);
  EXPECT_FALSE(again.done);
  EXPECT_TRUE(again.data.empty());
}

TEST(AppendChunkHeader, Formatting) {
  const std::vector<std::pair<std::size_t, std::string_view>> cases = {
      {0, "0\r\n"},
      {1, "1\r\n"},
      {9, "9\r\n"},
      {10, "a\r\n"},
      {15, "f\r\n"},
      {16, "10\r\n"},
      {255, "ff\r\n"},
      {256, "100\r\n"},
      {0x1a2b, "1a2b\r\n"},
      {65536, "10000\r\n"},
      {std::numeric_limits<std::size_t>::max(), "ffffffffffffffff\r\n"},
  };
  for (const auto& [n, want] : cases) {
    SCOPED_TRACE(n);
    std::string out;
    append_chunk_header(out, n);
    EXPECT_EQ(out, want);
  }
  std::string out = "prefix|";
  append_chunk_header(out, 0x2f);
  EXPECT_EQ(out, "prefix|2f\r\n");
}

TEST(AppendChunkHeader, RoundTripsThroughDecoder) {
  const std::vector<std::string> chunks = {"a", std::string(15, 'b'), std::string(16, 'c'),
                                           std::string(4097, 'd'), "\r\n0\r\n\r\n"};
  std::string body, payload;
  for (const auto& c : chunks) {
    append_chunk_header(body, c.size());
    body += c;
    body += "\r\n";
    payload += c;
  }
  append_chunk_header(body, 0);
  body += "\r\n";
  auto whole = feed_whole(body);
  EXPECT_TRUE(whole.done) << whole.detail;
  EXPECT_EQ(whole.data, payload);
  auto bytewise = feed_bytewise(body);
  EXPECT_TRUE(bytewise.done) << bytewise.detail;
  EXPECT_EQ(bytewise.data, payload);
}

}  // namespace
}  // namespace egressd::http
