// Rebuilding heads for forwarding, loop detection, and egressd's own error responses.
#include "egressd/http/forward.hpp"

#include <gtest/gtest.h>

#include <ostream>
#include <string>
#include <string_view>
#include <vector>

// Readable gtest output for framing (found by argument-dependent lookup).
namespace egressd::http {
static void PrintTo(framing f, std::ostream* os) {
  constexpr const char* names[] = {"none", "content_length", "chunked", "until_close"};
  *os << names[static_cast<int>(f)];
}
}  // namespace egressd::http

namespace egressd::http {
namespace {

std::string printable(std::string_view s) {
  std::string out;
  for (char c : s) {
    if (c == '\r') {
      out += "\\r";
    } else if (c == '\n') {
      out += "\\n\n";
    } else {
      out += c;
    }
  }
  return out;
}

std::string head_of(std::string_view start_line, const std::vector<std::string_view>& fields) {
  std::string h(start_line);
  h += "\r\n";
  for (auto f : fields) {
    h += f;
    h += "\r\n";
  }
  h += "\r\n";
  return h;
}

// The parsed head keeps views into the raw text, so both live together.
struct parsed_request {
  std::string raw;
  request_head head;
};

parsed_request request(std::string_view line, const std::vector<std::string_view>& fields) {
  parsed_request p{head_of(line, fields), {}};
  auto e = parse_request(p.raw, head_limits{}, p.head);
  EXPECT_FALSE(e) << e.detail << " in " << printable(p.raw);
  return p;
}

struct parsed_response {
  std::string raw;
  response_head head;
};

parsed_response response(std::string_view line, const std::vector<std::string_view>& fields,
                         std::string_view method = "GET") {
  parsed_response p{head_of(line, fields), {}};
  auto e = parse_response(p.raw, method, head_limits{}, p.head);
  EXPECT_FALSE(e) << e.detail << " in " << printable(p.raw);
  return p;
}

forward_options opts(xff_policy xff = xff_policy::append, bool via = true) {
  forward_options o;
  o.xff = xff;
  o.via = via;
  o.client_ip = "192.0.2.7";
  return o;
}

// ---------------------------------------------------------------------------------------------
// via_has_loop

TEST(ViaHasLoop, Table) {
  struct via_case {
    std::vector<field> fields;
    std::string_view name;
    bool loop;
  };
  const std::vector<via_case> cases = {
      {{{"Via", "1.1 egressd"}}, "egressd", true},
      {{{"Via", "1.0 egressd"}}, "egressd", true},
      {{{"Via", "HTTP/1.1 egressd"}}, "egressd", true},
      {{{"Via", "1.1 EGRESSD"}}, "egressd", true},
      {{{"Via", "1.1 egressd"}}, "EgressD", true},
      {{{"via", "1.1 egressd"}}, "egressd", true},
      {{{"VIA", "1.1 egressd"}}, "egressd", true},
      {{{"Via", "1.1 egressd (egressd/0.1)"}}, "egressd", true},
      {{{"Via", "1.1 egressd\t(comment)"}}, "egressd", true},
      {{{"Via", "1.1   egressd  "}}, "egressd", true},
      {{{"Via", "1.1\tegressd"}}, "egressd", true},
      {{{"Via", "1.0 fred, 1.1 egressd"}}, "egressd", true},
      {{{"Via", "1.1 egressd, 1.0 fred"}}, "egressd", true},
      {{{"Via", "1.0 fred,1.1 egressd,1.1 p.example (Apache/1.1)"}}, "egressd", true},
      {{{"Via", "1.0 fred"}, {"Via", "1.1 egressd"}}, "egressd", true},
      {{{"Via", "1.1 proxy-a.example"}}, "proxy-a.example", true},
      {{{"Via", "1.1 other"}}, "egressd", false},
      {{{"Via", "1.1 egressd2"}}, "egressd", false},
      {{{"Via", "1.1 my-egressd"}}, "egressd", false},
      {{{"Via", "1.1 egress"}}, "egressd", false},
      {{{"Via", "1.1 other (egressd)"}}, "egressd", false},
      {{{"Via", "1.1 other egressd"}}, "egressd", false},
      {{{"Via", "egressd"}}, "egressd", false},
      {{{"Via", "egressd 1.1"}}, "egressd", false},
      {{{"Via", ""}}, "egressd", false},
      {{{"Via", ", ,"}}, "egressd", false},
      {{{"X-Via", "1.1 egressd"}}, "egressd", false},
      {{{"Vias", "1.1 egressd"}}, "egressd", false},
      {{{"Server", "egressd"}, {"User-Agent", "1.1 egressd"}}, "egressd", false},
      {{}, "egressd", false},
      {{{"Via", "1.1 egressd"}}, "proxy-a", false},
  };
  for (const auto& c : cases) {
    std::string trace;
    for (const auto& f : c.fields)
      trace += std::string(f.name) + ": " + std::string(f.value) + "; ";
    SCOPED_TRACE(trace + "name=" + std::string(c.name));
    EXPECT_EQ(via_has_loop(c.fields, c.name), c.loop);
  }
}

// ---------------------------------------------------------------------------------------------
// build_request

TEST(BuildRequest, ExactBytesWithHopByHopFields) {
  auto p = request("POST http://Example.com:8080/submit?x=1 HTTP/1.1",
                   {"Host: example.com:8080", "User-Agent: t/1", "Connection: keep-alive, X-Secret",
                    "X-Secret: s", "Keep-Alive: timeout=5", "Proxy-Connection: keep-alive",
                    "Proxy-Authorization: Basic eHg=", "Proxy-Authenticate: Basic", "TE: trailers",
                    "Trailer: X-Sum", "Upgrade: h2c", "Accept: */*", "X-Forwarded-For: 10.0.0.1",
                    "Content-Length: 3", "Cookie: a=1"});
  std::string out = "stale";
  build_request(p.head, opts(), out);
  EXPECT_EQ(out,
            "POST /submit?x=1 HTTP/1.1\r\n"
            "Host: example.com:8080\r\n"
            "User-Agent: t/1\r\n"
            "Accept: */*\r\n"
            "Cookie: a=1\r\n"
            "X-Forwarded-For: 10.0.0.1, 192.0.2.7\r\n"
            "Via: 1.1 egressd\r\n"
            "Content-Length: 3\r\n"
            "Connection: close\r\n"
            "\r\n")
      << printable(out);
}

TEST(BuildRequest, ConnectionListedFieldsRemoved) {
  auto p = request("GET http://example.com/ HTTP/1.1",
                   {"Host: example.com", "Connection: X-A, x-b", "connection: X-C", "X-A: 1",
                    "X-B: 2", "X-C: 3", "X-D: 4", "Connection-Extra: 5"});
  std::string out;
  build_request(p.head, opts(xff_policy::off, false), out);
  EXPECT_EQ(out,
            "GET / HTTP/1.1\r\n"
            "Host: example.com\r\n"
            "X-D: 4\r\n"
            "Connection-Extra: 5\r\n"
            "Connection: close\r\n"
            "\r\n")
      << printable(out);
}

// Content_Length / Transfer_Encoding are not framing here, but CGI-style servers fold '_' into
// '-': they are dropped, while other underscore names (and near misses) pass.
TEST(BuildRequest, UnderscoreFramingNamesDropped) {
  auto p = request(
      "POST http://example.com/ HTTP/1.1",
      {"Host: example.com", "Content_Length: 5", "transfer_ENCODING: chunked", "Content-Length: 2",
       "X_Trace: a", "Content_Lengthy: 1", "Content_Lengt: 1", "Transfer_Encodinx: 1"});
  std::string out;
  build_request(p.head, opts(xff_policy::off, false), out);
  EXPECT_EQ(out,
            "POST / HTTP/1.1\r\n"
            "Host: example.com\r\n"
            "X_Trace: a\r\n"
            "Content_Lengthy: 1\r\n"
            "Content_Lengt: 1\r\n"
            "Transfer_Encodinx: 1\r\n"
            "Content-Length: 2\r\n"
            "Connection: close\r\n"
            "\r\n")
      << printable(out);
}

TEST(BuildResponse, ManyConnectionTokensAllRemoved) {
  // More Connection tokens than build_response gathers up front: the rest are still honoured.
  std::string list;
  std::vector<std::string> names;
  for (int i = 0; i < 40; ++i) {
    names.push_back("X-F" + std::to_string(i));
    list += (i == 0 ? "" : " ,, ") + names.back();
  }
  std::string conn = "Connection: " + list;
  std::vector<std::string_view> fields{conn, "Content-Length: 0"};
  std::vector<std::string> lines;
  for (const auto& n : names) lines.push_back(n + ": v");
  for (const auto& l : lines) fields.push_back(l);
  fields.push_back("X-Kept: 1");
  auto p = response("HTTP/1.1 200 OK", fields);
  response_options ro;
  ro.via = false;
  ro.to_client = framing::content_length;
  std::string out;
  build_response(p.head, ro, out);
  EXPECT_EQ(out, "HTTP/1.1 200 OK\r\nX-Kept: 1\r\nContent-Length: 0\r\n\r\n") << printable(out);
}

TEST(ParseHeads, ReusedHeadsAreReset) {
  // A session parses every request (and response) of a connection into the same object.
  request_head r;
  std::string a = head_of("GET http://[::1]:8080/long/path/here?q=1 HTTP/1.1",
                          {"Host: [::1]:8080", "X-A: 1", "X-B: 2", "Content-Length: 3"});
  ASSERT_FALSE(parse_request(a, head_limits{}, r));
  std::string b = head_of("GET http://example.com/ HTTP/1.0", {"X-C: 3"});
  ASSERT_FALSE(parse_request(b, head_limits{}, r));
  EXPECT_EQ(r.fields.size(), 1u);
  EXPECT_EQ(r.tgt.host, "example.com");
  EXPECT_FALSE(r.tgt.host_is_ip);
  EXPECT_EQ(r.tgt.port, 80);
  EXPECT_EQ(r.tgt.path, "/");
  EXPECT_EQ(r.body, framing::none);
  EXPECT_EQ(r.content_length, 0u);
  EXPECT_FALSE(r.keep_alive);
  std::string c = "GET / HTTP/1.1\r\n\r\n";
  EXPECT_TRUE(parse_request(c, head_limits{}, r));
  EXPECT_TRUE(r.fields.empty());
  EXPECT_TRUE(r.tgt.host.empty());
  EXPECT_TRUE(r.tgt.path.empty());

  response_head s;
  std::string d = head_of("HTTP/1.1 200 OK", {"Content-Length: 5", "X-A: 1"});
  ASSERT_FALSE(parse_response(d, "GET", head_limits{}, s));
  std::string e = head_of("HTTP/1.1 204 No Content", {"X-B: 1"});
  ASSERT_FALSE(parse_response(e, "GET", head_limits{}, s));
  EXPECT_EQ(s.status, 204);
  EXPECT_EQ(s.fields.size(), 1u);
  EXPECT_EQ(s.body, framing::none);
  EXPECT_EQ(s.content_length, 0u);
}

TEST(BuildRequest, HostRebuiltFromTarget) {
  struct host_case {
    std::string_view line;
    std::string_view host_field;
    std::string_view request_line;
    std::string_view host;
  };
  const std::vector<host_case> cases = {
      {"GET http://example.com/ HTTP/1.1", "Host: example.com", "GET / HTTP/1.1", "example.com"},
      {"GET http://example.com:80/ HTTP/1.1", "Host: example.com", "GET / HTTP/1.1", "example.com"},
      {"GET http://EXAMPLE.com:8080 HTTP/1.1", "Host: example.com:8080", "GET / HTTP/1.1",
       "example.com:8080"},
      {"GET http://example.com?q=1 HTTP/1.1", "Host: example.com", "GET /?q=1 HTTP/1.1",
       "example.com"},
      {"GET http://example.com/a HTTP/1.1", "Host: attacker.example", "GET /a HTTP/1.1",
       "example.com"},
      {"GET http://1.2.3.4:81/x HTTP/1.1", "Host: 1.2.3.4:81", "GET /x HTTP/1.1", "1.2.3.4:81"},
      {"GET http://[::1]/ HTTP/1.1", "Host: [::1]", "GET / HTTP/1.1", "[::1]"},
      {"GET http://[2001:db8::1]:8080/ HTTP/1.1", "Host: [2001:db8::1]:8080", "GET / HTTP/1.1",
       "[2001:db8::1]:8080"},
      {"GET http://example.com:443/ HTTP/1.1", "Host: example.com:443", "GET / HTTP/1.1",
       "example.com:443"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(std::string(c.line));
    auto p = request(c.line, {c.host_field, "Accept: */*"});
    std::string out;
    build_request(p.head, opts(xff_policy::off, false), out);
    EXPECT_EQ(out, std::string(c.request_line) + "\r\nHost: " + std::string(c.host) +
                       "\r\nAccept: */*\r\nConnection: close\r\n\r\n")
        << printable(out);
  }
  // HTTP/1.0 without a Host field still gets one, and the request line is sent as 1.1.
  auto p = request("GET http://example.com:8000/ HTTP/1.0", {});
  std::string out;
  build_request(p.head, opts(xff_policy::off, false), out);
  EXPECT_EQ(out, "GET / HTTP/1.1\r\nHost: example.com:8000\r\nConnection: close\r\n\r\n")
      << printable(out);
}

TEST(BuildRequest, XForwardedForPolicies) {
  struct xff_case {
    xff_policy policy;
    std::vector<std::string_view> fields;  // after Host
    std::string_view expected;             // the fields between Host and Connection
  };
  const std::vector<xff_case> cases = {
      {xff_policy::append, {}, "X-Forwarded-For: 192.0.2.7\r\n"},
      {xff_policy::append,
       {"X-Forwarded-For: 10.0.0.1"},
       "X-Forwarded-For: 10.0.0.1, 192.0.2.7\r\n"},
      {xff_policy::append,
       {"X-Forwarded-For: 10.0.0.1", "A: 1", "x-forwarded-for: 10.0.0.2, 10.0.0.3"},
       "A: 1\r\nX-Forwarded-For: 10.0.0.1, 10.0.0.2, 10.0.0.3, 192.0.2.7\r\n"},
      {xff_policy::replace, {}, "X-Forwarded-For: 192.0.2.7\r\n"},
      {xff_policy::replace,
       {"X-Forwarded-For: 10.0.0.1", "A: 1", "X-Forwarded-For: 10.0.0.2"},
       "A: 1\r\nX-Forwarded-For: 192.0.2.7\r\n"},
      {xff_policy::remove, {}, ""},
      {xff_policy::remove,
       {"X-Forwarded-For: 10.0.0.1", "A: 1", "X-FORWARDED-FOR: 10.0.0.2"},
       "A: 1\r\n"},
      {xff_policy::off, {}, ""},
      {xff_policy::off,
       {"X-Forwarded-For: 10.0.0.1", "A: 1", "X-Forwarded-For: 10.0.0.2"},
       "X-Forwarded-For: 10.0.0.1\r\nA: 1\r\nX-Forwarded-For: 10.0.0.2\r\n"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(static_cast<int>(c.policy));
    std::vector<std::string_view> fields = {"Host: example.com"};
    fields.insert(fields.end(), c.fields.begin(), c.fields.end());
    auto p = request("GET http://example.com/ HTTP/1.1", fields);
    std::string out;
    build_request(p.head, opts(c.policy, false), out);
    EXPECT_EQ(out, "GET / HTTP/1.1\r\nHost: example.com\r\n" + std::string(c.expected) +
                       "Connection: close\r\n\r\n")
        << printable(out);
  }
}

TEST(BuildRequest, Via) {
  struct via_case {
    std::string_view version;
    bool via;
    std::string_view name;
    std::string_view expected;
  };
  const std::vector<via_case> cases = {
      {"HTTP/1.1", true, "egressd", "Via: 1.1 egressd\r\n"},
      {"HTTP/1.0", true, "egressd", "Via: 1.0 egressd\r\n"},
      {"HTTP/1.1", true, "proxy-a.example", "Via: 1.1 proxy-a.example\r\n"},
      {"HTTP/1.1", false, "egressd", ""},
      {"HTTP/1.0", false, "egressd", ""},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(std::string(c.version) + " via=" + (c.via ? "on " : "off ") + std::string(c.name));
    std::string line = "GET http://example.com/ " + std::string(c.version);
    // An earlier proxy's Via passes through untouched; ours is added after it.
    auto p = request(line, {"Host: example.com", "Via: 1.0 fred"});
    auto o = opts(xff_policy::off, c.via);
    o.via_name = c.name;
    std::string out;
    build_request(p.head, o, out);
    EXPECT_EQ(out, "GET / HTTP/1.1\r\nHost: example.com\r\nVia: 1.0 fred\r\n" +
                       std::string(c.expected) + "Connection: close\r\n\r\n")
        << printable(out);
  }
}

TEST(BuildRequest, BodyFraming) {
  struct framing_case {
    std::string_view line;
    std::vector<std::string_view> fields;
    std::string_view expected;
  };
  const std::vector<framing_case> cases = {
      {"GET http://e.example/ HTTP/1.1", {"Host: e.example"}, ""},
      {"POST http://e.example/ HTTP/1.1",
       {"Host: e.example", "Content-Length: 0"},
       "Content-Length: 0\r\n"},
      {"POST http://e.example/ HTTP/1.1",
       {"Host: e.example", "content-length:  42 "},
       "Content-Length: 42\r\n"},
      {"POST http://e.example/ HTTP/1.1",
       {"Host: e.example", "Transfer-Encoding: Chunked"},
       "Transfer-Encoding: chunked\r\n"},
      {"POST http://e.example/ HTTP/1.0", {"Content-Length: 7"}, "Content-Length: 7\r\n"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(std::string(c.line));
    auto p = request(c.line, c.fields);
    std::string out;
    build_request(p.head, opts(xff_policy::off, false), out);
    std::string method(p.head.method);
    EXPECT_EQ(out, method + " / HTTP/1.1\r\nHost: e.example\r\n" + std::string(c.expected) +
                       "Connection: close\r\n\r\n")
        << printable(out);
  }
}

TEST(BuildRequest, EndToEndFieldsKeptInOrderWithCase) {
  auto p = request("PUT http://e.example/p HTTP/1.1",
                   {"Host: e.example", "x-lower: 1", "X-UPPER: 2", "Expect: 100-continue",
                    "Content-Type: text/plain; charset=utf-8", "Authorization: Bearer t",
                    "X-Empty:", "Content-Length: 2", "X-Obs: caf\xc3\xa9"});
  std::string out;
  build_request(p.head, opts(xff_policy::off, false), out);
  EXPECT_EQ(out,
            "PUT /p HTTP/1.1\r\n"
            "Host: e.example\r\n"
            "x-lower: 1\r\n"
            "X-UPPER: 2\r\n"
            "Expect: 100-continue\r\n"
            "Content-Type: text/plain; charset=utf-8\r\n"
            "Authorization: Bearer t\r\n"
            "X-Empty: \r\n"
            "X-Obs: caf\xc3\xa9\r\n"
            "Content-Length: 2\r\n"
            "Connection: close\r\n"
            "\r\n")
      << printable(out);
}

TEST(BuildRequest, OutputIsAValidRequest) {
  // What egressd sends must itself pass egressd's strict parser (as origin-form aside).
  auto p = request("POST http://e.example:8080/a?b HTTP/1.0",
                   {"Host: e.example:8080", "Connection: keep-alive", "Content-Length: 3",
                    "X-Forwarded-For: 10.0.0.1"});
  std::string out;
  build_request(p.head, opts(), out);
  // Turn the origin-form line back into absolute-form to reuse parse_request.
  std::string absolute = "POST http://e.example:8080" + out.substr(5);
  request_head again;
  auto e = parse_request(absolute, head_limits{}, again);
  ASSERT_FALSE(e) << e.detail << " in " << printable(absolute);
  EXPECT_EQ(again.version_minor, 1);
  EXPECT_EQ(again.body, framing::content_length);
  EXPECT_EQ(again.content_length, 3u);
  EXPECT_FALSE(again.keep_alive);
  EXPECT_EQ(again.tgt.path, "/a?b");
}

// ---------------------------------------------------------------------------------------------
// build_response

TEST(BuildResponse, ExactBytesWithHopByHopFields) {
  auto p = response("HTTP/1.1 200 OK",
                    {"Content-Type: text/plain", "Connection: keep-alive, X-Hop", "X-Hop: 1",
                     "Keep-Alive: timeout=5", "Transfer-Encoding: chunked",
                     "Proxy-Authenticate: Basic", "Proxy-Connection: keep-alive", "Upgrade: h2",
                     "Trailer: X-Sum", "TE: trailers", "Set-Cookie: a=1", "Set-Cookie: b=2"});
  response_options o;
  o.to_client = framing::chunked;
  std::string out = "stale";
  build_response(p.head, o, out);
  EXPECT_EQ(out,
            "HTTP/1.1 200 OK\r\n"
            "Content-Type: text/plain\r\n"
            "Set-Cookie: a=1\r\n"
            "Set-Cookie: b=2\r\n"
            "Via: 1.1 egressd\r\n"
            "Transfer-Encoding: chunked\r\n"
            "\r\n")
      << printable(out);
}

TEST(BuildResponse, FramingAndConnection) {
  struct resp_case {
    framing to_client;
    int client_minor;
    bool close;
    std::string_view expected;  // fields after Via
  };
  const std::vector<resp_case> cases = {
      {framing::content_length, 1, false, "Content-Length: 5\r\n"},
      {framing::content_length, 1, true, "Content-Length: 5\r\nConnection: close\r\n"},
      {framing::content_length, 0, false, "Content-Length: 5\r\nConnection: keep-alive\r\n"},
      {framing::content_length, 0, true, "Content-Length: 5\r\nConnection: close\r\n"},
      {framing::chunked, 1, false, "Transfer-Encoding: chunked\r\n"},
      {framing::chunked, 1, true, "Transfer-Encoding: chunked\r\nConnection: close\r\n"},
      {framing::none, 1, false, ""},
      {framing::none, 1, true, "Connection: close\r\n"},
      {framing::none, 0, false, "Connection: keep-alive\r\n"},
      {framing::until_close, 1, true, "Connection: close\r\n"},
      {framing::until_close, 0, true, "Connection: close\r\n"},
  };
  auto p = response("HTTP/1.1 201 Created", {"Content-Length: 5", "Location: /x"});
  for (const auto& c : cases) {
    SCOPED_TRACE(std::string("to_client=") + std::to_string(static_cast<int>(c.to_client)) +
                 " client 1." + std::to_string(c.client_minor) + (c.close ? " close" : ""));
    response_options o;
    o.to_client = c.to_client;
    o.client_version_minor = c.client_minor;
    o.close = c.close;
    std::string out;
    build_response(p.head, o, out);
    EXPECT_EQ(out, "HTTP/1.1 201 Created\r\nLocation: /x\r\nVia: 1.1 egressd\r\n" +
                       std::string(c.expected) + "\r\n")
        << printable(out);
  }
}

TEST(BuildResponse, HeadOnlyKeepsContentLength) {
  auto p = response("HTTP/1.1 200 OK", {"Content-Length: 1234", "ETag: \"x\""}, "HEAD");
  ASSERT_EQ(p.head.body, framing::none);
  response_options o;
  o.head_only = true;
  o.to_client = framing::none;
  std::string out;
  build_response(p.head, o, out);
  EXPECT_EQ(out,
            "HTTP/1.1 200 OK\r\nContent-Length: 1234\r\nETag: \"x\"\r\nVia: 1.1 egressd\r\n\r\n")
      << printable(out);

  auto nm = response("HTTP/1.1 304 Not Modified", {"ETag: \"x\"", "Content-Length: 99"});
  build_response(nm.head, o, out);
  EXPECT_EQ(out,
            "HTTP/1.1 304 Not Modified\r\nETag: \"x\"\r\nContent-Length: 99\r\nVia: 1.1 "
            "egressd\r\n\r\n")
      << printable(out);

  // Without head_only the upstream's Content-Length is never copied.
  response_options plain;
  build_response(nm.head, plain, out);
  EXPECT_EQ(out, "HTTP/1.1 304 Not Modified\r\nETag: \"x\"\r\nVia: 1.1 egressd\r\n\r\n")
      << printable(out);
}

TEST(BuildResponse, VersionReasonAndVia) {
  auto p10 = response("HTTP/1.0 404 Not Found", {"Content-Length: 0"});
  response_options o;
  o.to_client = framing::content_length;
  std::string out;
  build_response(p10.head, o, out);
  EXPECT_EQ(out, "HTTP/1.1 404 Not Found\r\nVia: 1.0 egressd\r\nContent-Length: 0\r\n\r\n")
      << printable(out);

  auto empty_reason = response("HTTP/1.1 200", {"Content-Length: 0"});
  build_response(empty_reason.head, o, out);
  EXPECT_EQ(out, "HTTP/1.1 200 \r\nVia: 1.1 egressd\r\nContent-Length: 0\r\n\r\n")
      << printable(out);

  o.via = false;
  build_response(p10.head, o, out);
  EXPECT_EQ(out, "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n") << printable(out);

  o.via = true;
  o.via_name = "edge-1";
  auto with_via = response("HTTP/1.1 200 OK", {"Via: 1.1 origin-cache", "Content-Length: 0"});
  build_response(with_via.head, o, out);
  EXPECT_EQ(out,
            "HTTP/1.1 200 OK\r\nVia: 1.1 origin-cache\r\nVia: 1.1 edge-1\r\nContent-Length: "
            "0\r\n\r\n")
      << printable(out);
}

// ---------------------------------------------------------------------------------------------
// build_interim

TEST(BuildInterim, Table) {
  struct interim_case {
    std::string_view line;
    std::vector<std::string_view> fields;
    std::string_view expected;
  };
  const std::vector<interim_case> cases = {
      {"HTTP/1.1 100 Continue", {}, "HTTP/1.1 100 Continue\r\n\r\n"},
      {"HTTP/1.1 100", {}, "HTTP/1.1 100 \r\n\r\n"},
      {"HTTP/1.1 103 Early Hints",
       {"Link: </style.css>; rel=preload", "Connection: X-Hop", "X-Hop: 1", "Keep-Alive: 5"},
       "HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(std::string(c.line));
    auto p = response(c.line, c.fields);
    std::string out = "stale";
    build_interim(p.head, out);
    EXPECT_EQ(out, c.expected) << printable(out);
  }
}

// ---------------------------------------------------------------------------------------------
// error_response

TEST(ErrorResponse, ExactBytes) {
  std::string out = error_response(proxy_error::destination_denied, "", true);
  const std::string body = "Destination address is not allowed\n";
  EXPECT_EQ(out,
            "HTTP/1.1 403 Forbidden\r\n"
            "Proxy-Status: egressd; error=destination_ip_prohibited\r\n"
            "Content-Type: text/plain; charset=utf-8\r\n"
            "Content-Length: " +
                std::to_string(body.size()) +
                "\r\n"
                "Cache-Control: no-store\r\n"
                "Connection: close\r\n"
                "\r\n" +
                body)
      << printable(out);
}

TEST(ErrorResponse, DetailsAndKeepAlive) {
  std::string out = error_response(proxy_error::bad_request, "missing Host", false, "edge-1");
  const std::string body = "Malformed or ambiguous request: missing Host\n";
  EXPECT_EQ(out,
            "HTTP/1.1 400 Bad Request\r\n"
            "Proxy-Status: edge-1; error=http_request_error; details=\"missing Host\"\r\n"
            "Content-Type: text/plain; charset=utf-8\r\n"
            "Content-Length: " +
                std::to_string(body.size()) +
                "\r\n"
                "Cache-Control: no-store\r\n"
                "\r\n" +
                body)
      << printable(out);
}

TEST(ErrorResponse, DetailsAreAnEscapedSfString) {
  // Details may carry system text; it must stay one sf-string inside one field line.
  const std::string detail = "a \"quoted\" \\ path\r\nX-Injected: 1\x01\xc3\xa9";
  std::string out = error_response(proxy_error::connect_refused, detail, true);
  auto head_end = out.find("\r\n\r\n");
  ASSERT_NE(head_end, std::string::npos);
  std::string head = out.substr(0, head_end + 4);
  response_head r;
  ASSERT_FALSE(parse_response(head, "GET", head_limits{}, r)) << printable(head);
  int proxy_status = 0;
  for (const auto& f : r.fields) {
    EXPECT_FALSE(iequals(f.name, "x-injected"));
    if (!iequals(f.name, "proxy-status")) continue;
    ++proxy_status;
    EXPECT_EQ(f.value,
              "egressd; error=connection_refused; "
              "details=\"a \\\"quoted\\\" \\\\ path??X-Injected: 1???\"");
  }
  EXPECT_EQ(proxy_status, 1);
  // The body is plain text and keeps the detail as given.
  std::string body = out.substr(head_end + 4);
  EXPECT_EQ(body, "Could not connect to the destination: " + detail + "\n");
  EXPECT_EQ(r.content_length, body.size());
}

TEST(ErrorResponse, EveryErrorIsAWellFormedResponse) {
  struct err_case {
    proxy_error err;
    int status;
    std::string_view status_line;
  };
  const std::vector<err_case> cases = {
      {proxy_error::bad_request, 400, "HTTP/1.1 400 Bad Request"},
      {proxy_error::uri_too_long, 414, "HTTP/1.1 414 URI Too Long"},
      {proxy_error::header_too_large, 431, "HTTP/1.1 431 Request Header Fields Too Large"},
      {proxy_error::header_timeout, 408, "HTTP/1.1 408 Request Timeout"},
      {proxy_error::method_not_allowed, 405, "HTTP/1.1 405 Method Not Allowed"},
      {proxy_error::not_implemented, 501, "HTTP/1.1 501 Not Implemented"},
      {proxy_error::version_not_supported, 505, "HTTP/1.1 505 HTTP Version Not Supported"},
      {proxy_error::expectation_failed, 417, "HTTP/1.1 417 Expectation Failed"},
      {proxy_error::source_denied, 403, "HTTP/1.1 403 Forbidden"},
      {proxy_error::port_denied, 403, "HTTP/1.1 403 Forbidden"},
      {proxy_error::rule_denied, 403, "HTTP/1.1 403 Forbidden"},
      {proxy_error::destination_denied, 403, "HTTP/1.1 403 Forbidden"},
      {proxy_error::loop_detected, 508, "HTTP/1.1 508 Loop Detected"},
      {proxy_error::dns_error, 502, "HTTP/1.1 502 Bad Gateway"},
      {proxy_error::dns_timeout, 504, "HTTP/1.1 504 Gateway Timeout"},
      {proxy_error::connect_refused, 502, "HTTP/1.1 502 Bad Gateway"},
      {proxy_error::connect_timeout, 504, "HTTP/1.1 504 Gateway Timeout"},
      {proxy_error::upstream_bad_response, 502, "HTTP/1.1 502 Bad Gateway"},
      {proxy_error::upstream_timeout, 504, "HTTP/1.1 504 Gateway Timeout"},
      {proxy_error::upstream_closed, 502, "HTTP/1.1 502 Bad Gateway"},
      {proxy_error::draining, 503, "HTTP/1.1 503 Service Unavailable"},
      {proxy_error::over_limit, 503, "HTTP/1.1 503 Service Unavailable"},
      {proxy_error::internal_error, 500, "HTTP/1.1 500 Internal Server Error"},
      // Errors with no response of their own still produce a sane 500 if asked.
      {proxy_error::none, 500, "HTTP/1.1 500 Internal Server Error"},
      {proxy_error::client_closed, 500, "HTTP/1.1 500 Internal Server Error"},
      {proxy_error::tunnel_idle, 500, "HTTP/1.1 500 Internal Server Error"},
  };
  for (const auto& c : cases) {
    const auto& info = describe(c.err);
    SCOPED_TRACE(std::string(info.name));
    for (bool close : {true, false}) {
      for (std::string_view detail : {std::string_view(""), std::string_view("some detail")}) {
        std::string out = error_response(c.err, detail, close);
        auto head_end = out.find("\r\n\r\n");
        ASSERT_NE(head_end, std::string::npos);
        std::string head = out.substr(0, head_end + 4);
        std::string body = out.substr(head_end + 4);
        EXPECT_EQ(head.substr(0, head.find("\r\n")), c.status_line);

        // Our own responses pass our own strict response parser.
        response_head r;
        auto e = parse_response(head, "GET", head_limits{}, r);
        ASSERT_FALSE(e) << e.detail << " in " << printable(head);
        EXPECT_EQ(r.status, c.status);
        EXPECT_EQ(r.body, framing::content_length);
        EXPECT_EQ(r.content_length, body.size());
        EXPECT_EQ(r.keep_alive, !close);

        // Body: the reason, the detail when given, a newline.
        std::string want_body(info.reason);
        if (!detail.empty()) want_body += ": " + std::string(detail);
        want_body += "\n";
        EXPECT_EQ(body, want_body);

        // Proxy-Status (RFC 9209): our name, the error type, the details.
        std::string want_ps = "egressd";
        if (!info.proxy_status.empty()) want_ps += "; error=" + std::string(info.proxy_status);
        if (!detail.empty()) want_ps += "; details=\"" + std::string(detail) + "\"";
        int proxy_status = 0, connection = 0, content_type = 0;
        for (const auto& f : r.fields) {
          if (iequals(f.name, "proxy-status")) {
            ++proxy_status;
            EXPECT_EQ(f.value, want_ps);
          } else if (iequals(f.name, "connection")) {
            ++connection;
            EXPECT_EQ(f.value, "close");
          } else if (iequals(f.name, "content-type")) {
            ++content_type;
            EXPECT_EQ(f.value, "text/plain; charset=utf-8");
          }
        }
        EXPECT_EQ(proxy_status, 1);
        EXPECT_EQ(content_type, 1);
        EXPECT_EQ(connection, close ? 1 : 0);
      }
    }
  }
}

}  // namespace
}  // namespace egressd::http
