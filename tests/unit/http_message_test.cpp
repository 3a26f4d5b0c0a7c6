// Message heads: the incremental head scanner, strict request parsing, response parsing.
#include "egressd/http/message.hpp"

#include <gtest/gtest.h>

#include <cstddef>
#include <ostream>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

// Readable gtest output for the enums under test (found by argument-dependent lookup).
namespace egressd {
static void PrintTo(proxy_error e, std::ostream* os) {
  *os << describe(e).name;
}
namespace http {
static void PrintTo(scan_result::kind k, std::ostream* os) {
  *os << (k == scan_result::need_more  ? "need_more"
          : k == scan_result::complete ? "complete"
                                       : "error");
}
static void PrintTo(framing f, std::ostream* os) {
  constexpr const char* names[] = {"none", "content_length", "chunked", "until_close"};
  *os << names[static_cast<int>(f)];
}
}  // namespace http
}  // namespace egressd

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

// ---------------------------------------------------------------------------------------------
// head_scanner

struct fed_result {
  scan_result r;
  std::size_t fed = 0;  // length of the prefix that produced r
};

// Feeds growing prefixes of data, one byte more each time, to a fresh scanner; stops at the
// first result that is not need_more.
fed_result feed_bytewise(const head_limits& limits, std::string_view data) {
  head_scanner s(limits);
  fed_result out;
  for (std::size_t k = 1; k <= data.size(); ++k) {
    out.r = s.scan(data.substr(0, k));
    out.fed = k;
    if (out.r.status != scan_result::need_more) return out;
  }
  return out;
}

scan_result feed_whole(const head_limits& limits, std::string_view data) {
  head_scanner s(limits);
  return s.scan(data);
}

const std::string kHead = "GET http://example.com/ HTTP/1.1\r\nHost: example.com\r\n\r\n";

TEST(HeadScanner, CompleteHead) {
  head_scanner s(head_limits{});
  auto r = s.scan(kHead);
  EXPECT_EQ(r.status, scan_result::complete);
  EXPECT_EQ(r.head_length, kHead.size());
  EXPECT_EQ(r.skipped, 0u);
  EXPECT_EQ(r.err, proxy_error::none);
}

TEST(HeadScanner, CompleteHeadFollowedByBody) {
  std::string buf = kHead + "body bytes\r\n\r\nmore";
  auto r = feed_whole(head_limits{}, buf);
  EXPECT_EQ(r.status, scan_result::complete);
  EXPECT_EQ(r.head_length, kHead.size());
}

TEST(HeadScanner, MinimalHeadWithoutFields) {
  std::string h = "GET http://e/ HTTP/1.0\r\n\r\n";
  auto r = feed_whole(head_limits{}, h);
  EXPECT_EQ(r.status, scan_result::complete);
  EXPECT_EQ(r.head_length, h.size());
}

TEST(HeadScanner, EmptyBufferNeedsMore) {
  head_scanner s(head_limits{});
  auto r = s.scan("");
  EXPECT_EQ(r.status, scan_result::need_more);
  EXPECT_EQ(r.err, proxy_error::none);
}

TEST(HeadScanner, GrowingPrefixesEveryByte) {
  const std::vector<std::string> heads = {
      kHead,
      "GET http://e/ HTTP/1.0\r\n\r\n",
      "POST http://e/x HTTP/1.1\r\nHost: e\r\nContent-Length: 3\r\nX: \r\n\r\n",
      "\r\nGET http://e/ HTTP/1.1\r\nHost: e\r\n\r\n",
      "\r\n\r\n\r\n\r\nGET http://e/ HTTP/1.1\r\nHost: e\r\n\r\n",
  };
  for (const auto& h : heads) {
    SCOPED_TRACE(printable(h));
    std::size_t skipped = 0;
    while (h.compare(skipped, 2, "\r\n") == 0) skipped += 2;
    auto whole = feed_whole(head_limits{}, h);
    ASSERT_EQ(whole.status, scan_result::complete);
    EXPECT_EQ(whole.skipped, skipped);
    EXPECT_EQ(whole.head_length, h.size() - skipped);

    auto fed = feed_bytewise(head_limits{}, h);
    EXPECT_EQ(fed.fed, h.size()) << "completed early";
    EXPECT_EQ(fed.r.status, scan_result::complete);
    EXPECT_EQ(fed.r.skipped, skipped);
    EXPECT_EQ(fed.r.head_length, h.size() - skipped);
  }
}

TEST(HeadScanner, TwoPieceSplitAtEveryBoundary) {
  const std::vector<std::string> heads = {
      kHead,
      "\r\n\r\nPUT http://e/ HTTP/1.1\r\nHost: e\r\nA: b\r\n\r\n",
  };
  for (const auto& h : heads) {
    std::size_t skipped = 0;
    while (h.compare(skipped, 2, "\r\n") == 0) skipped += 2;
    for (std::size_t k = 0; k <= h.size(); ++k) {
      SCOPED_TRACE(printable(h) + " split at " + std::to_string(k));
      head_scanner s(head_limits{});
      auto first = s.scan(std::string_view(h).substr(0, k));
      // The whole head in the first piece completes at once (a scanner is reset after that).
      auto second = first;
      if (k < h.size()) {
        EXPECT_EQ(first.status, scan_result::need_more);
        second = s.scan(h);
      }
      EXPECT_EQ(second.status, scan_result::complete);
      EXPECT_EQ(second.skipped, skipped);
      EXPECT_EQ(second.head_length, h.size() - skipped);
    }
  }
}

TEST(HeadScanner, BareLineEndsRejected) {
  // Each case is rejected fed whole and fed one byte at a time; the error comes no later than
  // one byte after the offending one (a CR needs its successor to be judged).
  struct bad {
    std::string data;
    std::size_t offending;  // index of the bare CR or LF
  };
  const std::vector<bad> cases = {
      {"\n", 0},
      {"\nGET http://e/ HTTP/1.1\r\n\r\n", 0},
      {"GET http://e/ HTTP/1.1\n", 22},
      {"GET http://e/ HTTP/1.1\nHost: e\r\n\r\n", 22},
      {"GET http://e/ HTTP/1.1\rHost: e\r\n\r\n", 22},
      {"GET http://e/\r HTTP/1.1\r\n\r\n", 13},
      {"GET\r http://e/ HTTP/1.1\r\n\r\n", 3},
      {"\r\r\nGET http://e/ HTTP/1.1\r\n\r\n", 0},
      {"\rGET http://e/ HTTP/1.1\r\n\r\n", 0},
      {"GET http://e/ HTTP/1.1\r\nHost: e\n\r\n", 31},
      {"GET http://e/ HTTP/1.1\r\nHost: e\rX\r\n\r\n", 31},
      {"GET http://e/ HTTP/1.1\r\nHo\nst: e\r\n\r\n", 26},
      {"GET http://e/ HTTP/1.1\r\nHost: e\r\n\n", 33},
      {"GET http://e/ HTTP/1.1\r\nHost: e\r\n\r\r\n", 33},
      {"GET http://e/ HTTP/1.1\r\nHost: e\r\n\rX", 33},
      {"GET http://e/ HTTP/1.1\r\nHost: e\r\n\n\r\n", 33},
      {"GET http://e/ HTTP/1.1\r\n\n", 24},
      {"\r\n\n", 2},
      {"\r\n\rX", 2},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(printable(c.data));
    ASSERT_TRUE(c.data[c.offending] == '\r' || c.data[c.offending] == '\n');
    auto whole = feed_whole(head_limits{}, c.data);
    EXPECT_EQ(whole.status, scan_result::error);
    EXPECT_EQ(whole.err, proxy_error::bad_request);
    auto fed = feed_bytewise(head_limits{}, c.data);
    EXPECT_EQ(fed.r.status, scan_result::error);
    EXPECT_EQ(fed.r.err, proxy_error::bad_request);
    EXPECT_LE(fed.fed, c.offending + 2);
    EXPECT_GE(fed.fed, c.offending + 1);
  }
}

TEST(HeadScanner, LeadingEmptyLines) {
  const std::string req = "GET http://e/ HTTP/1.1\r\nHost: e\r\n\r\n";
  for (std::size_t n = 0; n <= 6; ++n) {
    SCOPED_TRACE(std::to_string(n) + " leading CRLFs");
    std::string buf;
    for (std::size_t i = 0; i < n; ++i) buf += "\r\n";
    buf += req;
    for (bool bytewise : {false, true}) {
      SCOPED_TRACE(bytewise ? "bytewise" : "whole");
      scan_result r =
          bytewise ? feed_bytewise(head_limits{}, buf).r : feed_whole(head_limits{}, buf);
      if (n <= 4) {
        EXPECT_EQ(r.status, scan_result::complete);
        EXPECT_EQ(r.skipped, 2 * n);
        EXPECT_EQ(r.head_length, req.size());
      } else {
        EXPECT_EQ(r.status, scan_result::error);
        EXPECT_EQ(r.err, proxy_error::bad_request);
      }
    }
  }
}

TEST(HeadScanner, OnlyEmptyLinesNeedMore) {
  for (std::string_view buf : {"\r", "\r\n", "\r\n\r", "\r\n\r\n", "\r\n\r\n\r\n\r\n"}) {
    SCOPED_TRACE(printable(buf));
    EXPECT_EQ(feed_whole(head_limits{}, buf).status, scan_result::need_more);
    EXPECT_EQ(feed_bytewise(head_limits{}, buf).r.status, scan_result::need_more);
  }
}

TEST(HeadScanner, RequestLineLimit) {
  head_limits lim;
  lim.request_line = 32;
  lim.header_block = 1024;
  auto line_of = [](std::size_t len) {
    std::string prefix = "GET http://e/";
    std::string suffix = " HTTP/1.1";
    return prefix + std::string(len - prefix.size() - suffix.size(), 'a') + suffix;
  };
  const std::string at = line_of(32);
  const std::string over = line_of(33);
  ASSERT_EQ(at.size(), 32u);
  ASSERT_EQ(over.size(), 33u);

  for (bool bytewise : {false, true}) {
    SCOPED_TRACE(bytewise ? "bytewise" : "whole");
    auto run = [&](const std::string& data) {
      return bytewise ? feed_bytewise(lim, data).r : feed_whole(lim, data);
    };
    // Complete heads.
    auto ok = run(at + "\r\nHost: e\r\n\r\n");
    EXPECT_EQ(ok.status, scan_result::complete);
    auto bad = run(over + "\r\nHost: e\r\n\r\n");
    EXPECT_EQ(bad.status, scan_result::error);
    EXPECT_EQ(bad.err, proxy_error::uri_too_long);
    // Leading empty lines do not count against the request line.
    auto skipped = run("\r\n\r\n" + at + "\r\nHost: e\r\n\r\n");
    EXPECT_EQ(skipped.status, scan_result::complete);
    EXPECT_EQ(skipped.skipped, 4u);
    // Incomplete lines: the limit, the limit plus a pending CR, and one byte too many.
    EXPECT_EQ(run(at).status, scan_result::need_more);
    EXPECT_EQ(run(at + "\r").status, scan_result::need_more);
    auto incomplete = run(over);
    EXPECT_EQ(incomplete.status, scan_result::error);
    EXPECT_EQ(incomplete.err, proxy_error::uri_too_long);
    auto long_junk = run(std::string(100, 'x'));
    EXPECT_EQ(long_junk.status, scan_result::error);
    EXPECT_EQ(long_junk.err, proxy_error::uri_too_long);
  }
  // An over-long line is reported as soon as the limit is passed, before any CRLF arrives.
  auto fed = feed_bytewise(lim, over + "\r\nHost: e\r\n\r\n");
  EXPECT_EQ(fed.fed, 33u);
  EXPECT_EQ(fed.r.err, proxy_error::uri_too_long);
}

TEST(HeadScanner, HeaderBlockLimit) {
  const std::string line = "GET http://e/ HTTP/1.1\r\n";
  auto head_of = [&](std::size_t len) {
    // line + "X: " + value + "\r\n\r\n" == len
    std::size_t value = len - line.size() - 3 - 4;
    return line + "X: " + std::string(value, 'v') + "\r\n\r\n";
  };
  head_limits lim;
  lim.request_line = 64;
  lim.header_block = 100;
  const std::string at = head_of(100);
  const std::string over = head_of(101);
  ASSERT_EQ(at.size(), 100u);
  ASSERT_EQ(over.size(), 101u);
  for (bool bytewise : {false, true}) {
    SCOPED_TRACE(bytewise ? "bytewise" : "whole");
    auto run = [&](const std::string& data) {
      return bytewise ? feed_bytewise(lim, data).r : feed_whole(lim, data);
    };
    auto ok = run(at);
    EXPECT_EQ(ok.status, scan_result::complete);
    EXPECT_EQ(ok.head_length, 100u);
    auto bad = run(over);
    EXPECT_EQ(bad.status, scan_result::error);
    EXPECT_EQ(bad.err, proxy_error::header_too_large);
    // Skipped empty lines do not count against the block either.
    auto skipped = run("\r\n" + at);
    EXPECT_EQ(skipped.status, scan_result::complete);
    EXPECT_EQ(skipped.head_length, 100u);
    // An endless header is cut off at the limit, not buffered.
    auto endless = run(line + "X: " + std::string(200, 'v'));
    EXPECT_EQ(endless.status, scan_result::error);
    EXPECT_EQ(endless.err, proxy_error::header_too_large);
  }
  auto fed = feed_bytewise(lim, line + "X: " + std::string(200, 'v'));
  EXPECT_EQ(fed.fed, 101u);
  // An incomplete head of exactly the limit still waits.
  EXPECT_EQ(feed_whole(lim, std::string_view(at).substr(0, 100 - 1)).status,
            scan_result::need_more);
}

TEST(HeadScanner, ResetStartsOver) {
  head_scanner s(head_limits{});
  ASSERT_EQ(s.scan(kHead).status, scan_result::complete);
  s.reset();
  std::string next = "\r\n" + kHead;
  auto r = s.scan(next);
  EXPECT_EQ(r.status, scan_result::complete);
  EXPECT_EQ(r.skipped, 2u);
  EXPECT_EQ(r.head_length, kHead.size());
}

// ---------------------------------------------------------------------------------------------
// parse_request

std::string head_of(std::string_view request_line, std::vector<std::string_view> fields = {}) {
  std::string h(request_line);
  h += "\r\n";
  for (auto f : fields) {
    h += f;
    h += "\r\n";
  }
  h += "\r\n";
  return h;
}

struct req_case {
  std::string head;
  proxy_error err;
};

void expect_request_errors(const std::vector<req_case>& cases, head_limits lim = {}) {
  for (const auto& c : cases) {
    SCOPED_TRACE(printable(c.head));
    request_head out;
    auto e = parse_request(c.head, lim, out);
    EXPECT_EQ(e.err, c.err) << "detail: " << e.detail;
    EXPECT_EQ(static_cast<bool>(e), c.err != proxy_error::none);
    if (c.err != proxy_error::none) {
      EXPECT_FALSE(e.detail.empty());
    }
  }
}

constexpr std::string_view kGet = "GET http://example.com/ HTTP/1.1";
constexpr std::string_view kHost = "Host: example.com";

TEST(ParseRequest, FullRequest) {
  std::string h = head_of("POST http://Example.com:8080/a/b?c=d HTTP/1.1",
                          {"Host: example.com:8080", "User-Agent:   curl/8 \t",
                           "Content-Length: 11", "X-Empty:", "Expect: 100-continue"});
  request_head r;
  auto e = parse_request(h, head_limits{}, r);
  ASSERT_FALSE(e) << e.detail;
  EXPECT_EQ(r.method, "POST");
  EXPECT_EQ(r.target_raw, "http://Example.com:8080/a/b?c=d");
  EXPECT_EQ(r.version_minor, 1);
  ASSERT_EQ(r.fields.size(), 5u);
  EXPECT_EQ(r.fields[0].name, "Host");
  EXPECT_EQ(r.fields[0].value, "example.com:8080");
  EXPECT_EQ(r.fields[1].name, "User-Agent");
  EXPECT_EQ(r.fields[1].value, "curl/8");
  EXPECT_EQ(r.fields[2].name, "Content-Length");
  EXPECT_EQ(r.fields[2].value, "11");
  EXPECT_EQ(r.fields[3].name, "X-Empty");
  EXPECT_EQ(r.fields[3].value, "");
  EXPECT_EQ(r.fields[4].name, "Expect");
  EXPECT_FALSE(r.is_connect);
  EXPECT_EQ(r.tgt.host, "example.com");
  EXPECT_EQ(r.tgt.port, 8080);
  EXPECT_EQ(r.tgt.path, "/a/b?c=d");
  EXPECT_EQ(r.body, framing::content_length);
  EXPECT_EQ(r.content_length, 11u);
  EXPECT_TRUE(r.keep_alive);
  EXPECT_TRUE(r.expect_continue);
  // Views point into the caller's buffer.
  EXPECT_GE(r.method.data(), h.data());
  EXPECT_LT(r.method.data(), h.data() + h.size());
}

TEST(ParseRequest, OutIsResetBetweenCalls) {
  request_head r;
  ASSERT_FALSE(parse_request(
      head_of("POST http://a/ HTTP/1.1",
              {"Host: a", "Content-Length: 3", "Expect: 100-continue", "Connection: close"}),
      head_limits{}, r));
  std::string h = head_of("GET http://b/ HTTP/1.1", {"Host: b"});
  ASSERT_FALSE(parse_request(h, head_limits{}, r));
  EXPECT_EQ(r.fields.size(), 1u);
  EXPECT_EQ(r.body, framing::none);
  EXPECT_EQ(r.content_length, 0u);
  EXPECT_TRUE(r.keep_alive);
  EXPECT_FALSE(r.expect_continue);
  EXPECT_EQ(r.tgt.host, "b");
}

TEST(ParseRequest, PartialFillOnError) {
  request_head r;
  std::string h = head_of("GET http://example.com/x HTTP/1.1");
  auto e = parse_request(h, head_limits{}, r);
  EXPECT_EQ(e.err, proxy_error::bad_request);
  EXPECT_EQ(e.detail, "missing Host");
  EXPECT_EQ(r.method, "GET");
  EXPECT_EQ(r.target_raw, "http://example.com/x");
}

TEST(ParseRequest, RequestLine) {
  using pe = proxy_error;
  const std::vector<req_case> cases = {
      {head_of("GET http://example.com/ HTTP/1.1", {kHost}), pe::none},
      {head_of("GET http://example.com/ HTTP/1.0"), pe::none},
      {head_of("DELETE http://example.com/ HTTP/1.1", {kHost}), pe::none},
      {head_of("M-SEARCH http://example.com/ HTTP/1.1", {kHost}), pe::none},
      {head_of("X!#$%&'*+-.^_`|~ http://example.com/ HTTP/1.1", {kHost}), pe::none},
      // Version.
      {head_of("GET http://example.com/ HTTP/1.2", {kHost}), pe::version_not_supported},
      {head_of("GET http://example.com/ HTTP/2.0", {kHost}), pe::version_not_supported},
      {head_of("GET http://example.com/ HTTP/0.9", {kHost}), pe::version_not_supported},
      {head_of("GET http://example.com/ HTTP/9.9", {kHost}), pe::version_not_supported},
      {head_of("GET http://example.com/ http/1.1", {kHost}), pe::bad_request},
      {head_of("GET http://example.com/ Http/1.1", {kHost}), pe::bad_request},
      {head_of("GET http://example.com/ HTTP/1.1 ", {kHost}), pe::bad_request},
      {head_of("GET http://example.com/ HTTP/11", {kHost}), pe::bad_request},
      {head_of("GET http://example.com/ HTTP/1", {kHost}), pe::bad_request},
      {head_of("GET http://example.com/ HTTP/2", {kHost}), pe::bad_request},
      {head_of("GET http://example.com/ HTTP/1.10", {kHost}), pe::bad_request},
      {head_of("GET http://example.com/ HTTP/1.a", {kHost}), pe::bad_request},
      {head_of("GET http://example.com/ HTTP-1.1", {kHost}), pe::bad_request},
      {head_of("GET http://example.com/ ", {kHost}), pe::bad_request},
      {head_of("GET http://example.com/", {kHost}), pe::bad_request},
      {head_of("GET", {kHost}), pe::bad_request},
      {head_of("", {kHost}), pe::bad_request},
      // Single SP exactly.
      {head_of("GET  http://example.com/ HTTP/1.1", {kHost}), pe::bad_request},
      {head_of("GET http://example.com/  HTTP/1.1", {kHost}), pe::bad_request},
      {head_of(" GET http://example.com/ HTTP/1.1", {kHost}), pe::bad_request},
      {head_of("GET\thttp://example.com/ HTTP/1.1", {kHost}), pe::bad_request},
      {head_of("GET http://example.com/\tHTTP/1.1", {kHost}), pe::bad_request},
      {head_of("GET http://example.com/ x HTTP/1.1", {kHost}), pe::bad_request},
      // Method token.
      {head_of("G@T http://example.com/ HTTP/1.1", {kHost}), pe::bad_request},
      {head_of("GET/ http://example.com/ HTTP/1.1", {kHost}), pe::bad_request},
      {head_of("G\"T http://example.com/ HTTP/1.1", {kHost}), pe::bad_request},
      {head_of("G\x01T http://example.com/ HTTP/1.1", {kHost}), pe::bad_request},
      {head_of("G\xc3\xa9T http://example.com/ HTTP/1.1", {kHost}), pe::bad_request},
      // Target bytes and form.
      {head_of("GET http://example.com/\x01 HTTP/1.1", {kHost}), pe::bad_request},
      {head_of("GET http://example.com/\x7f HTTP/1.1", {kHost}), pe::bad_request},
      {head_of("GET http://example.com/\xc3\xa9 HTTP/1.1", {kHost}), pe::bad_request},
      {head_of("GET http://example.com/#f HTTP/1.1", {kHost}), pe::bad_request},
      {head_of("GET /x HTTP/1.1", {kHost}), pe::bad_request},
      {head_of("GET / HTTP/1.1", {kHost}), pe::bad_request},
      {head_of("OPTIONS * HTTP/1.1", {kHost}), pe::bad_request},
      {head_of("GET https://example.com/ HTTP/1.1", {kHost}), pe::bad_request},
      {head_of("GET ftp://example.com/ HTTP/1.1", {kHost}), pe::bad_request},
      {head_of("GET http://u:p@example.com/ HTTP/1.1", {kHost}), pe::bad_request},
      {head_of("GET http://example.com:0/ HTTP/1.1", {kHost}), pe::bad_request},
      {head_of("GET http://127.1/ HTTP/1.1", {kHost}), pe::bad_request},
      {head_of("GET example.com:80 HTTP/1.1", {kHost}), pe::bad_request},
      {"GET http://example.com/ HTTP/1.1", pe::bad_request},
  };
  expect_request_errors(cases);
}

TEST(ParseRequest, TargetErrorIsTheDetail) {
  const std::vector<std::pair<std::string_view, target_error>> cases = {
      {"GET /x HTTP/1.1", target_error::not_absolute},
      {"GET https://example.com/ HTTP/1.1", target_error::bad_scheme},
      {"GET http://u@example.com/ HTTP/1.1", target_error::userinfo},
      {"GET http://a..b/ HTTP/1.1", target_error::bad_host},
      {"GET http://example.com:0/ HTTP/1.1", target_error::bad_port},
  };
  for (const auto& [line, te] : cases) {
    SCOPED_TRACE(std::string(line));
    request_head r;
    auto e = parse_request(head_of(line, {kHost}), head_limits{}, r);
    EXPECT_EQ(e.err, proxy_error::bad_request);
    EXPECT_EQ(e.detail, to_string(te));
  }
}

TEST(ParseRequest, Versions) {
  request_head r;
  std::string h11 = head_of(kGet, {kHost});
  ASSERT_FALSE(parse_request(h11, head_limits{}, r));
  EXPECT_EQ(r.version_minor, 1);
  std::string h10 = head_of("GET http://example.com/ HTTP/1.0");
  ASSERT_FALSE(parse_request(h10, head_limits{}, r));
  EXPECT_EQ(r.version_minor, 0);
}

TEST(ParseRequest, FieldSyntax) {
  using pe = proxy_error;
  const std::vector<req_case> cases = {
      {head_of(kGet, {kHost, "X: a\r\n b"}), pe::bad_request},
      {head_of(kGet, {kHost, "X: a\r\n\tb"}), pe::bad_request},
      {head_of(kGet, {kHost, " X: a"}), pe::bad_request},
      {head_of(kGet, {"Host : example.com"}), pe::bad_request},
      {head_of(kGet, {kHost, "X : a"}), pe::bad_request},
      {head_of(kGet, {kHost, "X\t: a"}), pe::bad_request},
      {head_of(kGet, {kHost, "X a"}), pe::bad_request},
      {head_of(kGet, {kHost, "X"}), pe::bad_request},
      {head_of(kGet, {kHost, ": a"}), pe::bad_request},
      {head_of(kGet, {kHost, ":"}), pe::bad_request},
      {head_of(kGet, {kHost, "X@Y: a"}), pe::bad_request},
      {head_of(kGet, {kHost, "X(Y): a"}), pe::bad_request},
      {head_of(kGet, {kHost, "X\xc3\xa9: a"}), pe::bad_request},
      {head_of(kGet, {kHost, "X Y: a"}), pe::bad_request},
      {head_of(kGet, {kHost, std::string_view("X: a\0b", 6)}), pe::bad_request},
      {head_of(kGet, {kHost, "X: a\rb"}), pe::bad_request},
      {head_of(kGet, {kHost, "X: a\nb"}), pe::bad_request},
      {head_of(kGet, {kHost, "X: a\x7f"}), pe::bad_request},
      {head_of(kGet, {kHost, "X: a\x01"}), pe::bad_request},
      {head_of(kGet, {kHost, "X: a\x1f"}), pe::bad_request},
      {head_of(kGet, {kHost, "X: \x0b"}), pe::bad_request},
      // Accepted: obs-text, HTAB and SP inside values, empty values, odd but legal names.
      {head_of(kGet, {kHost, "X: caf\xc3\xa9"}), pe::none},
      {head_of(kGet, {kHost, "X: \x80\xff"}), pe::none},
      {head_of(kGet, {kHost, "X: a\tb c"}), pe::none},
      {head_of(kGet, {kHost, "X:"}), pe::none},
      {head_of(kGet, {kHost, "X:   "}), pe::none},
      {head_of(kGet, {kHost, "X-Y_Z.1~!: v"}), pe::none},
      {head_of(kGet, {kHost, "X:a"}), pe::none},
      {head_of(kGet, {kHost, "X: a:b: c"}), pe::none},
  };
  expect_request_errors(cases);
}

TEST(ParseRequest, FieldSyntaxDetails) {
  const std::vector<std::pair<std::string_view, std::string_view>> cases = {
      {"X: a\r\n b", "obs-fold line continuation"}, {"X : a", "whitespace before colon"},
      {"X a", "field line without colon"},          {": a", "invalid field name"},
      {"X: a\x01", "control byte in field value"},
  };
  for (const auto& [f, detail] : cases) {
    SCOPED_TRACE(printable(f));
    request_head r;
    auto e = parse_request(head_of(kGet, {kHost, f}), head_limits{}, r);
    EXPECT_EQ(e.err, proxy_error::bad_request);
    EXPECT_EQ(e.detail, detail);
  }
}

TEST(ParseRequest, OwsTrimmed) {
  const std::vector<std::pair<std::string_view, std::string_view>> cases = {
      {"X: a", "a"},
      {"X:a", "a"},
      {"X:  a  ", "a"},
      {"X:\ta\t", "a"},
      {"X: \t a b \t ", "a b"},
      {"X: a \t b", "a \t b"},
      {"X:", ""},
      {"X: \t ", ""},
  };
  for (const auto& [f, value] : cases) {
    SCOPED_TRACE(printable(f));
    std::string h = head_of(kGet, {kHost, f});
    request_head r;
    ASSERT_FALSE(parse_request(h, head_limits{}, r));
    ASSERT_EQ(r.fields.size(), 2u);
    EXPECT_EQ(r.fields[1].name, "X");
    EXPECT_EQ(r.fields[1].value, value);
  }
}

TEST(ParseRequest, FieldCountLimit) {
  head_limits lim;
  lim.header_fields = 3;
  using pe = proxy_error;
  expect_request_errors(
      {
          {head_of(kGet, {kHost}), pe::none},
          {head_of(kGet, {kHost, "A: 1", "B: 2"}), pe::none},
          {head_of(kGet, {kHost, "A: 1", "B: 2", "C: 3"}), pe::header_too_large},
          {head_of(kGet, {kHost, "A: 1", "B: 2", "C: 3", "D: 4"}), pe::header_too_large},
      },
      lim);
  lim.header_fields = 0;
  expect_request_errors(
      {{head_of("GET http://example.com/ HTTP/1.0"), pe::none},
       {head_of("GET http://example.com/ HTTP/1.0", {"A: 1"}), pe::header_too_large}},
      lim);
}

TEST(ParseRequest, Host) {
  using pe = proxy_error;
  const std::vector<req_case> cases = {
      {head_of(kGet), pe::bad_request},
      {head_of("GET http://example.com/ HTTP/1.0"), pe::none},
      {head_of("CONNECT example.com:443 HTTP/1.1"), pe::none},
      {head_of(kGet, {kHost, kHost}), pe::bad_request},
      {head_of(kGet, {"Host: a.example", "host: b.example"}), pe::bad_request},
      {head_of("GET http://example.com/ HTTP/1.0", {kHost, kHost}), pe::bad_request},
      {head_of("CONNECT example.com:443 HTTP/1.1", {"Host: example.com:443", "Host: x"}),
       pe::bad_request},
      {head_of(kGet, {"HOST: example.com"}), pe::none},
      {head_of(kGet, {"Host: example.com:8080"}), pe::none},
      {head_of(kGet, {"Host: other.example"}), pe::none},  // target wins; Host is rebuilt
      {head_of(kGet, {"Host: 1.2.3.4"}), pe::none},
      {head_of(kGet, {"Host: [::1]"}), pe::none},
      {head_of(kGet, {"Host: [::1]:8080"}), pe::none},
      {head_of(kGet, {"Host: example.com."}), pe::none},
      {head_of(kGet, {"Host:"}), pe::bad_request},
      {head_of(kGet, {"Host:  "}), pe::bad_request},
      {head_of(kGet, {"Host: exa mple.com"}), pe::bad_request},
      {head_of(kGet, {"Host: user@example.com"}), pe::bad_request},
      {head_of(kGet, {"Host: example.com/x"}), pe::bad_request},
      {head_of(kGet, {"Host: example.com?x"}), pe::bad_request},
      {head_of(kGet, {"Host: example.com#x"}), pe::bad_request},
      {head_of(kGet, {"Host: example.com:"}), pe::bad_request},
      {head_of(kGet, {"Host: example.com:0"}), pe::bad_request},
      {head_of(kGet, {"Host: example.com:65536"}), pe::bad_request},
      {head_of(kGet, {"Host: example.com:x"}), pe::bad_request},
      {head_of(kGet, {"Host: ::1"}), pe::bad_request},
      {head_of(kGet, {"Host: [::1"}), pe::bad_request},
      {head_of(kGet, {"Host: 127.1"}), pe::bad_request},
      {head_of(kGet, {"Host: ex%61mple.com"}), pe::bad_request},
      {head_of(kGet, {"Host: exa\xc3\xa9.com"}), pe::bad_request},
      {head_of(kGet, {"Host: a..b"}), pe::bad_request},
      {head_of(kGet, {"Host: http://example.com"}), pe::bad_request},
      {head_of(kGet, {"Host: example.com, other.example"}), pe::bad_request},
  };
  expect_request_errors(cases);
}

TEST(ParseRequest, ContentLength) {
  struct cl_case {
    std::string_view field;
    bool ok;
    std::uint64_t length;
  };
  const std::vector<cl_case> cases = {
      {"Content-Length: 5", true, 5},
      {"Content-Length: 0", true, 0},
      {"content-length: 7", true, 7},
      {"CONTENT-LENGTH: 7", true, 7},
      {"Content-Length:  5", true, 5},
      {"Content-Length: 5 \t", true, 5},
      {"Content-Length:5", true, 5},
      {"Content-Length: 007", true, 7},
      {"Content-Length: 1234567890", true, 1234567890},
      {"Content-Length: 9999999999999999999", true, 9999999999999999999ull},
      {"Content-Length: 18446744073709551615", false, 0},
      {"Content-Length: 99999999999999999999", false, 0},
      {"Content-Length: 00000000000000000001", false, 0},
      {"Content-Length:", false, 0},
      {"Content-Length:  ", false, 0},
      {"Content-Length: abc", false, 0},
      {"Content-Length: 5a", false, 0},
      {"Content-Length: 0x5", false, 0},
      {"Content-Length: -1", false, 0},
      {"Content-Length: +5", false, 0},
      {"Content-Length: 5, 5", false, 0},
      {"Content-Length: 5,5", false, 0},
      {"Content-Length: 5 5", false, 0},
      {"Content-Length: 5.0", false, 0},
      {"Content-Length: 1e3", false, 0},
      {"Content-Length: \"5\"", false, 0},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(std::string(c.field));
    std::string h = head_of("POST http://example.com/ HTTP/1.1", {kHost, c.field});
    request_head r;
    auto e = parse_request(h, head_limits{}, r);
    if (c.ok) {
      ASSERT_FALSE(e) << e.detail;
      EXPECT_EQ(r.body, framing::content_length);
      EXPECT_EQ(r.content_length, c.length);
    } else {
      EXPECT_EQ(e.err, proxy_error::bad_request);
    }
  }
}

TEST(ParseRequest, ContentLengthDuplicates) {
  using pe = proxy_error;
  constexpr std::string_view post = "POST http://example.com/ HTTP/1.1";
  expect_request_errors({
      {head_of(post, {kHost, "Content-Length: 5", "Content-Length: 5"}), pe::bad_request},
      {head_of(post, {kHost, "Content-Length: 5", "Content-Length: 6"}), pe::bad_request},
      {head_of(post, {kHost, "Content-Length: 0", "content-length: 0"}), pe::bad_request},
      {head_of(post, {kHost, "Content-Length: 5", "X: 1", "Content-Length: 5"}), pe::bad_request},
  });
}

TEST(ParseRequest, NoBodyWithoutFraming) {
  request_head r;
  std::string h = head_of("POST http://example.com/ HTTP/1.1", {kHost});
  ASSERT_FALSE(parse_request(h, head_limits{}, r));
  EXPECT_EQ(r.body, framing::none);
  EXPECT_EQ(r.content_length, 0u);
}

TEST(ParseRequest, TransferEncoding) {
  using pe = proxy_error;
  constexpr std::string_view post = "POST http://example.com/ HTTP/1.1";
  constexpr std::string_view post10 = "POST http://example.com/ HTTP/1.0";
  const std::vector<req_case> cases = {
      {head_of(post, {kHost, "Transfer-Encoding: chunked"}), pe::none},
      {head_of(post, {kHost, "Transfer-Encoding: Chunked"}), pe::none},
      {head_of(post, {kHost, "transfer-encoding: CHUNKED"}), pe::none},
      {head_of(post, {kHost, "Transfer-Encoding:  chunked \t"}), pe::none},
      {head_of(post, {kHost, "Transfer-Encoding: , chunked"}), pe::none},
      {head_of(post, {kHost, "Transfer-Encoding: gzip, chunked"}), pe::not_implemented},
      {head_of(post, {kHost, "Transfer-Encoding: deflate,chunked"}), pe::not_implemented},
      {head_of(post, {kHost, "Transfer-Encoding: identity"}), pe::not_implemented},
      {head_of(post, {kHost, "Transfer-Encoding: gzip"}), pe::not_implemented},
      {head_of(post, {kHost, "Transfer-Encoding: chunked, gzip"}), pe::bad_request},
      {head_of(post, {kHost, "Transfer-Encoding: gzip, deflate"}), pe::bad_request},
      {head_of(post, {kHost, "Transfer-Encoding: chunked, chunked"}), pe::bad_request},
      {head_of(post, {kHost, "Transfer-Encoding: chunked,chunked"}), pe::bad_request},
      {head_of(post, {kHost, "Transfer-Encoding: chunked, gzip, chunked"}), pe::bad_request},
      {head_of(post, {kHost, "Transfer-Encoding: chunked;x=1"}), pe::bad_request},
      {head_of(post, {kHost, "Transfer-Encoding: chunked ; x=1"}), pe::bad_request},
      {head_of(post, {kHost, "Transfer-Encoding: gzip, chunked;q=1"}), pe::bad_request},
      {head_of(post, {kHost, "Transfer-Encoding: xchunked"}), pe::not_implemented},
      {head_of(post, {kHost, "Transfer-Encoding: chunkedx"}), pe::not_implemented},
      {head_of(post, {kHost, "Transfer-Encoding: \"chunked\""}), pe::not_implemented},
      {head_of(post, {kHost, "Transfer-Encoding:"}), pe::bad_request},
      {head_of(post, {kHost, "Transfer-Encoding: ,"}), pe::bad_request},
      // Duplicate fields, whatever their values.
      {head_of(post, {kHost, "Transfer-Encoding: chunked", "Transfer-Encoding: chunked"}),
       pe::bad_request},
      {head_of(post, {kHost, "Transfer-Encoding: gzip", "Transfer-Encoding: chunked"}),
       pe::bad_request},
      // Both framings.
      {head_of(post, {kHost, "Transfer-Encoding: chunked", "Content-Length: 5"}), pe::bad_request},
      {head_of(post, {kHost, "Content-Length: 0", "Transfer-Encoding: chunked"}), pe::bad_request},
      // HTTP/1.0 has no transfer codings.
      {head_of(post10, {"Transfer-Encoding: chunked"}), pe::bad_request},
      {head_of(post10, {kHost, "Transfer-Encoding: chunked"}), pe::bad_request},
  };
  expect_request_errors(cases);

  request_head r;
  std::string h = head_of(post, {kHost, "Transfer-Encoding: chunked"});
  ASSERT_FALSE(parse_request(h, head_limits{}, r));
  EXPECT_EQ(r.body, framing::chunked);
  EXPECT_EQ(r.content_length, 0u);
}

TEST(ParseRequest, KeepAlive) {
  struct ka_case {
    std::string_view line;
    std::vector<std::string_view> fields;
    bool keep_alive;
  };
  constexpr std::string_view v11 = "GET http://example.com/ HTTP/1.1";
  constexpr std::string_view v10 = "GET http://example.com/ HTTP/1.0";
  const std::vector<ka_case> cases = {
      {v11, {kHost}, true},
      {v11, {kHost, "Connection: keep-alive"}, true},
      {v11, {kHost, "Connection: close"}, false},
      {v11, {kHost, "Connection: Close"}, false},
      {v11, {kHost, "connection: CLOSE"}, false},
      {v11, {kHost, "Connection: keep-alive, close"}, false},
      {v11, {kHost, "Connection: foo,close"}, false},
      {v11, {kHost, "Connection: keep-alive", "Connection: close"}, false},
      {v11, {kHost, "Proxy-Connection: close"}, false},
      {v11, {kHost, "Connection: closed"}, true},
      {v11, {kHost, "X-Connection: close"}, true},
      {v10, {}, false},
      {v10, {"Connection: keep-alive"}, true},
      {v10, {"Connection: Keep-Alive"}, true},
      {v10, {"Proxy-Connection: keep-alive"}, true},
      {v10, {"Proxy-Connection: Keep-Alive"}, true},
      {v10, {"Connection: keep-alive, close"}, false},
      {v10, {"Connection: keep-alive", "Connection: close"}, false},
      {v10, {"Proxy-Connection: keep-alive", "Connection: close"}, false},
      {v10, {"Connection: close"}, false},
      {v10, {"Connection: foo"}, false},
      {v10, {"Keep-Alive: timeout=5"}, false},
  };
  for (const auto& c : cases) {
    std::string h = head_of(c.line, c.fields);
    SCOPED_TRACE(printable(h));
    request_head r;
    auto e = parse_request(h, head_limits{}, r);
    ASSERT_FALSE(e) << e.detail;
    EXPECT_EQ(r.keep_alive, c.keep_alive);
  }
}

TEST(ParseRequest, Expect) {
  struct ex_case {
    std::string_view line;
    std::string_view field;
    proxy_error err;
    bool expect_continue;
  };
  constexpr std::string_view v11 = "POST http://example.com/ HTTP/1.1";
  constexpr std::string_view v10 = "POST http://example.com/ HTTP/1.0";
  const std::vector<ex_case> cases = {
      {v11, "Expect: 100-continue", proxy_error::none, true},
      {v11, "Expect: 100-Continue", proxy_error::none, true},
      {v11, "expect:  100-CONTINUE ", proxy_error::none, true},
      {v11, "X-Expect: foo", proxy_error::none, false},
      {v11, "Expect: foo", proxy_error::expectation_failed, false},
      {v11, "Expect: 100-continue, foo", proxy_error::expectation_failed, false},
      {v11, "Expect: 200-ok", proxy_error::expectation_failed, false},
      {v11, "Expect: 100-continuex", proxy_error::expectation_failed, false},
      {v10, "Expect: foo", proxy_error::expectation_failed, false},
      // RFC 9110 10.1.1: a 100-continue expectation in an HTTP/1.0 request MUST be ignored
      // (a 1.0 client cannot handle an interim response).
      {v10, "Expect: 100-continue", proxy_error::none, false},
  };
  for (const auto& c : cases) {
    std::vector<std::string_view> fields = {c.field, "Content-Length: 1"};
    if (c.line == v11) fields.push_back(kHost);
    std::string h = head_of(c.line, fields);
    SCOPED_TRACE(printable(h));
    request_head r;
    auto e = parse_request(h, head_limits{}, r);
    EXPECT_EQ(e.err, c.err) << e.detail;
    if (!e) {
      EXPECT_EQ(r.expect_continue, c.expect_continue);
    }
  }
}

TEST(ParseRequest, Connect) {
  using pe = proxy_error;
  const std::vector<req_case> cases = {
      {head_of("CONNECT example.com:443 HTTP/1.1", {"Host: example.com:443"}), pe::none},
      {head_of("CONNECT example.com:443 HTTP/1.1"), pe::none},
      {head_of("CONNECT example.com:443 HTTP/1.0"), pe::none},
      {head_of("CONNECT [::1]:443 HTTP/1.1"), pe::none},
      {head_of("CONNECT 1.2.3.4:8443 HTTP/1.1"), pe::none},
      {head_of("CONNECT example.com:443 HTTP/1.1", {"Content-Length: 0"}), pe::none},
      {head_of("CONNECT example.com:443 HTTP/1.1", {"Content-Length: 5"}), pe::bad_request},
      {head_of("CONNECT example.com:443 HTTP/1.1", {"Transfer-Encoding: chunked"}),
       pe::bad_request},
      {head_of("CONNECT example.com:443 HTTP/1.1", {"Content-Length: x"}), pe::bad_request},
      {head_of("CONNECT example.com HTTP/1.1"), pe::bad_request},
      {head_of("CONNECT example.com: HTTP/1.1"), pe::bad_request},
      {head_of("CONNECT example.com:0 HTTP/1.1"), pe::bad_request},
      {head_of("CONNECT example.com:65536 HTTP/1.1"), pe::bad_request},
      {head_of("CONNECT :443 HTTP/1.1"), pe::bad_request},
      {head_of("CONNECT ::1:443 HTTP/1.1"), pe::bad_request},
      {head_of("CONNECT user@example.com:443 HTTP/1.1"), pe::bad_request},
      {head_of("CONNECT http://example.com:443/ HTTP/1.1"), pe::bad_request},
      {head_of("CONNECT example.com:443/ HTTP/1.1"), pe::bad_request},
      {head_of("CONNECT /x HTTP/1.1"), pe::bad_request},
      {head_of("CONNECT 127.1:443 HTTP/1.1"), pe::bad_request},
      {head_of("CONNECT example.com:443 HTTP/1.1", {"Host: bad host"}), pe::bad_request},
      // Methods are case-sensitive: "connect" is some other method and needs absolute-form.
      {head_of("connect example.com:443 HTTP/1.1", {"Host: example.com"}), pe::bad_request},
  };
  expect_request_errors(cases);

  request_head r;
  std::string h = head_of("CONNECT Example.com:443 HTTP/1.1",
                          {"Host: example.com:443", "Connection: keep-alive"});
  ASSERT_FALSE(parse_request(h, head_limits{}, r));
  EXPECT_TRUE(r.is_connect);
  EXPECT_EQ(r.method, "CONNECT");
  EXPECT_EQ(r.tgt.host, "example.com");
  EXPECT_EQ(r.tgt.port, 443);
  EXPECT_EQ(r.tgt.path, "");
  EXPECT_EQ(r.body, framing::none);
  EXPECT_FALSE(r.keep_alive);  // the connection becomes a tunnel

  std::string h0 = head_of("CONNECT example.com:443 HTTP/1.1", {"Content-Length: 0"});
  ASSERT_FALSE(parse_request(h0, head_limits{}, r));
  EXPECT_EQ(r.content_length, 0u);
}

// ---------------------------------------------------------------------------------------------
// parse_response

struct resp_case {
  std::string head;
  std::string_view method;
  bool ok;
  int status;
  framing body;
  std::uint64_t length;
  bool keep_alive;
};

std::string resp_of(std::string_view status_line, std::vector<std::string_view> fields = {}) {
  return head_of(status_line, std::move(fields));
}

TEST(ParseResponse, StatusLine) {
  struct sl_case {
    std::string_view line;
    bool ok;
    int version_minor;
    int status;
    std::string_view reason;
  };
  const std::vector<sl_case> cases = {
      {"HTTP/1.1 200 OK", true, 1, 200, "OK"},
      {"HTTP/1.0 404 Not Found", true, 0, 404, "Not Found"},
      {"HTTP/1.1 200", true, 1, 200, ""},
      {"HTTP/1.1 200 ", true, 1, 200, ""},
      {"HTTP/1.1 200 OK ", true, 1, 200, "OK "},
      {"HTTP/1.1 200 \tOK", true, 1, 200, "\tOK"},
      {"HTTP/1.1 200 D\xc3\xa9j\xc3\xa0", true, 1, 200, "D\xc3\xa9j\xc3\xa0"},
      {"HTTP/1.1 100 Continue", true, 1, 100, "Continue"},
      {"HTTP/1.1 599 Custom", true, 1, 599, "Custom"},
      {"HTTP/1.1 099 X", false, 0, 0, ""},
      {"HTTP/1.1 000 X", false, 0, 0, ""},
      {"HTTP/1.1 600 X", false, 0, 0, ""},
      {"HTTP/1.1 999 X", false, 0, 0, ""},
      {"HTTP/1.1 20 OK", false, 0, 0, ""},
      {"HTTP/1.1 2000 OK", false, 0, 0, ""},
      {"HTTP/1.1 20a OK", false, 0, 0, ""},
      {"HTTP/1.1 -20 OK", false, 0, 0, ""},
      {"HTTP/1.1 +20 OK", false, 0, 0, ""},
      {"HTTP/1.1  200 OK", false, 0, 0, ""},
      {"HTTP/1.1\t200 OK", false, 0, 0, ""},
      {"HTTP/1.1200 OK", false, 0, 0, ""},
      {"HTTP/1.1 200\tOK", false, 0, 0, ""},
      {"HTTP/1.1 200 O\x01K", false, 0, 0, ""},
      {"HTTP/1.1 200 O\x7fK", false, 0, 0, ""},
      {"HTTP/1.1 200 O\rK", false, 0, 0, ""},
      {"HTTP/1.2 200 OK", false, 0, 0, ""},
      {"HTTP/2.0 200 OK", false, 0, 0, ""},
      {"HTTP/2 200 OK", false, 0, 0, ""},
      {"HTTP/1.1", false, 0, 0, ""},
      {"HTTP/1.1 ", false, 0, 0, ""},
      {"http/1.1 200 OK", false, 0, 0, ""},
      {"HTTP/1,1 200 OK", false, 0, 0, ""},
      {"ICY 200 OK", false, 0, 0, ""},
      {" HTTP/1.1 200 OK", false, 0, 0, ""},
      {"", false, 0, 0, ""},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(printable(c.line));
    std::string h = resp_of(c.line, {"Content-Length: 0"});
    response_head r;
    auto e = parse_response(h, "GET", head_limits{}, r);
    if (c.ok) {
      ASSERT_FALSE(e) << e.detail;
      EXPECT_EQ(r.version_minor, c.version_minor);
      EXPECT_EQ(r.status, c.status);
      EXPECT_EQ(r.reason, c.reason);
    } else {
      EXPECT_EQ(e.err, proxy_error::upstream_bad_response);
      EXPECT_FALSE(e.detail.empty());
    }
  }
  response_head r;
  EXPECT_EQ(parse_response("HTTP/1.1 200 OK", "GET", head_limits{}, r).err,
            proxy_error::upstream_bad_response);
}

TEST(ParseResponse, Framing) {
  constexpr auto none = framing::none;
  constexpr auto cl = framing::content_length;
  constexpr auto ch = framing::chunked;
  constexpr auto uc = framing::until_close;
  const std::vector<resp_case> cases = {
      // No body whatever the fields say.
      {resp_of("HTTP/1.1 200 OK", {"Content-Length: 10"}), "HEAD", true, 200, none, 10, true},
      {resp_of("HTTP/1.1 200 OK", {"Transfer-Encoding: chunked"}), "HEAD", true, 200, none, 0,
       true},
      {resp_of("HTTP/1.1 404 Not Found", {"Content-Length: 10"}), "HEAD", true, 404, none, 10,
       true},
      {resp_of("HTTP/1.1 100 Continue"), "GET", true, 100, none, 0, true},
      {resp_of("HTTP/1.1 101 Switching Protocols"), "GET", true, 101, none, 0, true},
      {resp_of("HTTP/1.1 103 Early Hints", {"Link: </a>"}), "GET", true, 103, none, 0, true},
      {resp_of("HTTP/1.1 199 X"), "GET", true, 199, none, 0, true},
      {resp_of("HTTP/1.1 204 No Content"), "GET", true, 204, none, 0, true},
      {resp_of("HTTP/1.1 304 Not Modified", {"Content-Length: 10"}), "GET", true, 304, none, 10,
       true},
      // RFC 9112 6.3: a 2xx answer to CONNECT starts a tunnel, it has no body.
      {resp_of("HTTP/1.1 200 Connection established"), "CONNECT", true, 200, none, 0, true},
      {resp_of("HTTP/1.1 299 X"), "CONNECT", true, 299, none, 0, true},
      {resp_of("HTTP/1.1 407 Auth", {"Content-Length: 3"}), "CONNECT", true, 407, cl, 3, true},
      {resp_of("HTTP/1.1 502 Bad", {"Content-Length: 3"}), "CONNECT", true, 502, cl, 3, true},
      // Content-Length.
      {resp_of("HTTP/1.1 200 OK", {"Content-Length: 5"}), "GET", true, 200, cl, 5, true},
      {resp_of("HTTP/1.1 200 OK", {"Content-Length: 0"}), "GET", true, 200, cl, 0, true},
      {resp_of("HTTP/1.1 205 Reset", {"Content-Length: 0"}), "GET", true, 205, cl, 0, true},
      {resp_of("HTTP/1.1 200 OK", {"Content-Length: 5"}), "POST", true, 200, cl, 5, true},
      {resp_of("HTTP/1.1 200 OK", {"Content-Length: 5", "Content-Length: 5"}), "GET", true, 200, cl,
       5, true},
      {resp_of("HTTP/1.1 200 OK", {"Content-Length: 5, 5"}), "GET", true, 200, cl, 5, true},
      {resp_of("HTTP/1.1 200 OK", {"Content-Length: 5,5", "content-length: 5"}), "GET", true, 200,
       cl, 5, true},
      {resp_of("HTTP/1.1 200 OK", {"Content-Length: 5", "Content-Length: 6"}), "GET", false, 0,
       none, 0, false},
      {resp_of("HTTP/1.1 200 OK", {"Content-Length: 5, 6"}), "GET", false, 0, none, 0, false},
      {resp_of("HTTP/1.1 200 OK", {"Content-Length: 6", "Content-Length: 5, 6"}), "GET", false, 0,
       none, 0, false},
      {resp_of("HTTP/1.1 200 OK", {"Content-Length: abc"}), "GET", false, 0, none, 0, false},
      {resp_of("HTTP/1.1 200 OK", {"Content-Length: -1"}), "GET", false, 0, none, 0, false},
      {resp_of("HTTP/1.1 200 OK", {"Content-Length: +5"}), "GET", false, 0, none, 0, false},
      {resp_of("HTTP/1.1 200 OK", {"Content-Length:"}), "GET", false, 0, none, 0, false},
      {resp_of("HTTP/1.1 200 OK", {"Content-Length: ,"}), "GET", false, 0, none, 0, false},
      {resp_of("HTTP/1.1 200 OK", {"Content-Length: 5,"}), "GET", true, 200, cl, 5, true},
      {resp_of("HTTP/1.1 200 OK", {"Content-Length: 99999999999999999999"}), "GET", false, 0, none,
       0, false},
      // Transfer-Encoding.
      {resp_of("HTTP/1.1 200 OK", {"Transfer-Encoding: chunked"}), "GET", true, 200, ch, 0, true},
      {resp_of("HTTP/1.1 200 OK", {"Transfer-Encoding: Chunked"}), "GET", true, 200, ch, 0, true},
      {resp_of("HTTP/1.1 200 OK", {"Transfer-Encoding: gzip"}), "GET", true, 200, uc, 0, false},
      {resp_of("HTTP/1.1 200 OK", {"Transfer-Encoding: chunked, gzip"}), "GET", true, 200, uc, 0,
       false},
      {resp_of("HTTP/1.1 200 OK", {"Transfer-Encoding: gzip, chunked"}), "GET", false, 0, none, 0,
       false},
      {resp_of("HTTP/1.1 200 OK", {"Transfer-Encoding: gzip", "Transfer-Encoding: chunked"}), "GET",
       false, 0, none, 0, false},
      {resp_of("HTTP/1.1 200 OK", {"Transfer-Encoding: chunked, chunked"}), "GET", false, 0, none,
       0, false},
      {resp_of("HTTP/1.1 200 OK", {"Transfer-Encoding: chunked", "Transfer-Encoding: chunked"}),
       "GET", false, 0, none, 0, false},
      {resp_of("HTTP/1.1 200 OK", {"Transfer-Encoding: chunked", "Content-Length: 5"}), "GET",
       false, 0, none, 0, false},
      {resp_of("HTTP/1.1 200 OK", {"Content-Length: 5", "Transfer-Encoding: chunked"}), "GET",
       false, 0, none, 0, false},
      {resp_of("HTTP/1.1 200 OK", {"Content-Length: 5", "Transfer-Encoding: gzip"}), "GET", false,
       0, none, 0, false},
      {resp_of("HTTP/1.0 200 OK", {"Transfer-Encoding: chunked"}), "GET", false, 0, none, 0, false},
      // Nothing: the body runs until the upstream closes.
      {resp_of("HTTP/1.1 200 OK"), "GET", true, 200, uc, 0, false},
      {resp_of("HTTP/1.1 200 OK", {"Connection: keep-alive"}), "GET", true, 200, uc, 0, false},
      {resp_of("HTTP/1.0 200 OK"), "GET", true, 200, uc, 0, false},
      {resp_of("HTTP/1.1 500 Oops"), "POST", true, 500, uc, 0, false},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(printable(c.head) + " for " + std::string(c.method));
    response_head r;
    auto e = parse_response(c.head, c.method, head_limits{}, r);
    if (!c.ok) {
      EXPECT_EQ(e.err, proxy_error::upstream_bad_response);
      EXPECT_FALSE(e.detail.empty());
      continue;
    }
    ASSERT_FALSE(e) << e.detail;
    EXPECT_EQ(r.status, c.status);
    EXPECT_EQ(r.body, c.body);
    if (c.body == framing::content_length || c.body == framing::none) {
      EXPECT_EQ(r.content_length, c.length);
    }
    EXPECT_EQ(r.keep_alive, c.keep_alive);
  }
}

TEST(ParseResponse, KeepAlive) {
  struct ka_case {
    std::string_view line;
    std::vector<std::string_view> fields;
    bool keep_alive;
  };
  const std::vector<ka_case> cases = {
      {"HTTP/1.1 200 OK", {"Content-Length: 1"}, true},
      {"HTTP/1.1 200 OK", {"Content-Length: 1", "Connection: close"}, false},
      {"HTTP/1.1 200 OK", {"Content-Length: 1", "Connection: Keep-Alive, Close"}, false},
      {"HTTP/1.1 200 OK", {"Transfer-Encoding: chunked"}, true},
      {"HTTP/1.1 200 OK", {"Transfer-Encoding: chunked", "Connection: close"}, false},
      {"HTTP/1.1 204 No Content", {}, true},
      {"HTTP/1.1 204 No Content", {"Connection: close"}, false},
      {"HTTP/1.0 200 OK", {"Content-Length: 1"}, false},
      {"HTTP/1.0 200 OK", {"Content-Length: 1", "Connection: keep-alive"}, true},
      {"HTTP/1.0 200 OK", {"Content-Length: 1", "Connection: Keep-Alive"}, true},
      {"HTTP/1.0 200 OK", {"Content-Length: 1", "Connection: keep-alive, close"}, false},
      {"HTTP/1.0 204 No Content", {}, false},
      {"HTTP/1.0 200 OK", {"Connection: keep-alive"}, false},  // until close
  };
  for (const auto& c : cases) {
    std::string h = resp_of(c.line, c.fields);
    SCOPED_TRACE(printable(h));
    response_head r;
    auto e = parse_response(h, "GET", head_limits{}, r);
    ASSERT_FALSE(e) << e.detail;
    EXPECT_EQ(r.keep_alive, c.keep_alive);
  }
}

TEST(ParseResponse, FieldsAndLimits) {
  head_limits lim;
  lim.header_fields = 2;
  const std::vector<std::pair<std::string, bool>> cases = {
      {resp_of("HTTP/1.1 200 OK", {"A: 1", "Content-Length: 0"}), true},
      {resp_of("HTTP/1.1 200 OK", {"A: 1", "B: 2", "Content-Length: 0"}), false},
      {resp_of("HTTP/1.1 200 OK", {"A: 1\r\n folded"}), false},
      {resp_of("HTTP/1.1 200 OK", {"A : 1"}), false},
      {resp_of("HTTP/1.1 200 OK", {"A 1"}), false},
      {resp_of("HTTP/1.1 200 OK", {": 1"}), false},
      {resp_of("HTTP/1.1 200 OK", {"A: \x01"}), false},
      {resp_of("HTTP/1.1 200 OK", {"A: \xc3\xa9"}), true},
  };
  for (const auto& [h, ok] : cases) {
    SCOPED_TRACE(printable(h));
    response_head r;
    auto e = parse_response(h, "GET", lim, r);
    if (ok) {
      EXPECT_FALSE(e) << e.detail;
    } else {
      // Upstream errors are 502s, never the client's 400/431.
      EXPECT_EQ(e.err, proxy_error::upstream_bad_response);
    }
  }
  response_head r;
  std::string h = resp_of("HTTP/1.1 200 OK", {"Set-Cookie: a=1", "set-cookie:  b=2 "});
  ASSERT_FALSE(parse_response(h, "GET", head_limits{}, r));
  ASSERT_EQ(r.fields.size(), 2u);
  EXPECT_EQ(r.fields[0].name, "Set-Cookie");
  EXPECT_EQ(r.fields[0].value, "a=1");
  EXPECT_EQ(r.fields[1].name, "set-cookie");
  EXPECT_EQ(r.fields[1].value, "b=2");
}

// ---------------------------------------------------------------------------------------------
// helpers

TEST(MessageHelpers, Iequals) {
  EXPECT_TRUE(iequals("", ""));
  EXPECT_TRUE(iequals("Content-Length", "content-length"));
  EXPECT_TRUE(iequals("ABC", "abc"));
  EXPECT_FALSE(iequals("abc", "abd"));
  EXPECT_FALSE(iequals("abc", "abcd"));
  EXPECT_FALSE(iequals("a", ""));
  // Only ASCII letters fold: '@' (0x40) and '`' (0x60) differ by the case bit but are not letters.
  EXPECT_FALSE(iequals("@", "`"));
  EXPECT_FALSE(iequals("[", "{"));
}

TEST(MessageHelpers, HopByHop) {
  for (std::string_view n : {"Connection", "connection", "Proxy-Connection", "Keep-Alive",
                             "Proxy-Authorization", "Proxy-Authenticate", "TE", "te", "Trailer",
                             "Upgrade", "Transfer-Encoding", "Content-Length", "UPGRADE"}) {
    SCOPED_TRACE(std::string(n));
    EXPECT_TRUE(is_hop_by_hop(n));
  }
  for (std::string_view n : {"Host", "Via", "X-Forwarded-For", "Trailers", "Content-Type",
                             "Authorization", "Cookie", "Expect", "T", "", "Connections"}) {
    SCOPED_TRACE(std::string(n));
    EXPECT_FALSE(is_hop_by_hop(n));
  }
}

TEST(MessageHelpers, ListedInConnection) {
  std::vector<field> f = {{"Connection", "keep-alive, X-A"},
                          {"X-A", "1"},
                          {"connection", " x-b ,,"},
                          {"X-Connection", "X-C"}};
  EXPECT_TRUE(listed_in_connection(f, "X-A"));
  EXPECT_TRUE(listed_in_connection(f, "x-a"));
  EXPECT_TRUE(listed_in_connection(f, "X-B"));
  EXPECT_TRUE(listed_in_connection(f, "Keep-Alive"));
  EXPECT_FALSE(listed_in_connection(f, "X-C"));
  EXPECT_FALSE(listed_in_connection(f, "X"));
  EXPECT_FALSE(listed_in_connection(f, ""));
  EXPECT_FALSE(listed_in_connection({}, "X-A"));
}

}  // namespace
}  // namespace egressd::http
