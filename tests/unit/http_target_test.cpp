// Request-target parsing: absolute-form for plain forwarding, authority-form for CONNECT.
#include "egressd/http/target.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <ostream>
#include <string>
#include <string_view>
#include <vector>

// Readable gtest output for target_error (found by argument-dependent lookup).
namespace egressd::http {
static void PrintTo(target_error e, std::ostream* os) {
  *os << to_string(e);
}
}  // namespace egressd::http

namespace egressd::http {
namespace {

struct ok_case {
  std::string_view raw;
  std::string_view host;
  std::uint16_t port;
  std::string_view path;
  bool is_ip;
  bool is_v6;
};

struct bad_case {
  std::string_view raw;
  target_error err;
};

std::string printable(std::string_view s) {
  std::string out;
  for (char ch : s) {
    auto c = static_cast<unsigned char>(ch);
    if (c < 0x20 || c >= 0x7f) {
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

TEST(HttpTarget, AbsoluteFormAccepted) {
  const std::vector<ok_case> cases = {
      {"http://example.com/", "example.com", 80, "/", false, false},
      {"http://example.com", "example.com", 80, "/", false, false},
      {"http://example.com?q=1", "example.com", 80, "/?q=1", false, false},
      {"http://example.com/?q=1", "example.com", 80, "/?q=1", false, false},
      {"http://example.com/a/b?c=d&e", "example.com", 80, "/a/b?c=d&e", false, false},
      {"http://example.com:8080/x", "example.com", 8080, "/x", false, false},
      {"http://example.com:80/x", "example.com", 80, "/x", false, false},
      {"http://example.com:1/", "example.com", 1, "/", false, false},
      {"http://example.com:65535/", "example.com", 65535, "/", false, false},
      {"http://example.com:8080", "example.com", 8080, "/", false, false},
      {"http://example.com:8080?x", "example.com", 8080, "/?x", false, false},
      // Scheme and host are case-insensitive; the path keeps its case.
      {"HTTP://Example.COM/Path", "example.com", 80, "/Path", false, false},
      {"hTtP://WWW.EXAMPLE.ORG/", "www.example.org", 80, "/", false, false},
      // Trailing dot on a name is the FQDN form.
      {"http://example.com./", "example.com.", 80, "/", false, false},
      {"http://a-b_c.example/", "a-b_c.example", 80, "/", false, false},
      {"http://localhost/", "localhost", 80, "/", false, false},
      {"http://3com.com/", "3com.com", 80, "/", false, false},
      // '@' and ':' are ordinary path bytes once the authority ended.
      {"http://example.com/a@b:c", "example.com", 80, "/a@b:c", false, false},
      {"http://example.com/%20x", "example.com", 80, "/%20x", false, false},
      // IPv4 literals.
      {"http://1.2.3.4/", "1.2.3.4", 80, "/", true, false},
      {"http://0.0.0.0/", "0.0.0.0", 80, "/", true, false},
      {"http://255.255.255.255:81/", "255.255.255.255", 81, "/", true, false},
      {"http://10.0.0.1:8080/x", "10.0.0.1", 8080, "/x", true, false},
      // IPv6 literals: host without brackets, lower-cased.
      {"http://[::1]/", "::1", 80, "/", true, true},
      {"http://[::1]:8080/p", "::1", 8080, "/p", true, true},
      {"http://[2001:DB8::A]/", "2001:db8::a", 80, "/", true, true},
      {"http://[::ffff:1.2.3.4]/", "::ffff:1.2.3.4", 80, "/", true, true},
      {"http://[::1]", "::1", 80, "/", true, true},
      {"http://[::1]?q", "::1", 80, "/?q", true, true},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(std::string(c.raw));
    target t;
    ASSERT_EQ(parse_absolute_target(c.raw, t), target_error::none);
    EXPECT_EQ(t.host, c.host);
    EXPECT_EQ(t.port, c.port);
    EXPECT_EQ(t.path, c.path);
    EXPECT_EQ(t.host_is_ip, c.is_ip);
    EXPECT_EQ(t.host_is_v6, c.is_v6);
  }
}

TEST(HttpTarget, AbsoluteFormRejected) {
  const std::string long_label(64, 'a');
  const std::string max_label(63, 'a');
  const std::vector<bad_case> cases = {
      // Not absolute-form at all.
      {"", target_error::not_absolute},
      {"/", target_error::not_absolute},
      {"/x", target_error::not_absolute},
      {"/x?y", target_error::not_absolute},
      {"*", target_error::not_absolute},
      {"example.com", target_error::not_absolute},
      {"example.com:80", target_error::not_absolute},
      {"http:/example.com/", target_error::not_absolute},
      {"http:example.com", target_error::not_absolute},
      {"http", target_error::not_absolute},
      // Other schemes.
      {"https://example.com/", target_error::bad_scheme},
      {"HTTPS://example.com/", target_error::bad_scheme},
      {"ftp://example.com/", target_error::bad_scheme},
      {"gopher://example.com/", target_error::bad_scheme},
      {"ws://example.com/", target_error::bad_scheme},
      {"httpx://example.com/", target_error::bad_scheme},
      // Userinfo.
      {"http://user@example.com/", target_error::userinfo},
      {"http://user:pw@example.com/", target_error::userinfo},
      {"http://:pw@example.com/", target_error::userinfo},
      {"http://@example.com/", target_error::userinfo},
      {"http://user@[::1]/", target_error::userinfo},
      // Ports.
      {"http://example.com:0/", target_error::bad_port},
      {"http://example.com:65536/", target_error::bad_port},
      {"http://example.com:99999/", target_error::bad_port},
      {"http://example.com:/", target_error::bad_port},
      {"http://example.com:", target_error::bad_port},
      {"http://example.com:abc/", target_error::bad_port},
      {"http://example.com:+80/", target_error::bad_port},
      {"http://example.com:-80/", target_error::bad_port},
      {"http://example.com:8 0/", target_error::bad_port},
      {"http://example.com:100000/", target_error::bad_port},
      {"http://example.com:000080/", target_error::bad_port},
      {"http://example.com:0x50/", target_error::bad_port},
      {"http://[::1]:/", target_error::bad_port},
      {"http://[::1]:0/", target_error::bad_port},
      // IPv6 forms.
      {"http://::1/", target_error::bad_host},
      {"http://2001:db8::1/", target_error::bad_host},
      {"http://[fe80::1%25eth0]/", target_error::bad_host},
      {"http://[fe80::1%eth0]/", target_error::bad_host},
      {"http://[::1/", target_error::bad_host},
      {"http://[]/", target_error::bad_host},
      {"http://[/", target_error::bad_host},
      {"http://[::1]x/", target_error::bad_host},
      {"http://[::1]]/", target_error::bad_host},
      {"http://[1.2.3.4]/", target_error::bad_host},
      {"http://[v1.fe]/", target_error::bad_host},
      {"http://[example.com]/", target_error::bad_host},
      {"http://[:::1]/", target_error::bad_host},
      // IPv4 spellings only inet_aton would love.
      {"http://127.1/", target_error::bad_host},
      {"http://127.0.1/", target_error::bad_host},
      {"http://0x7f.0.0.1/", target_error::bad_host},
      {"http://0x7f000001/", target_error::bad_host},
      {"http://0177.0.0.1/", target_error::bad_host},
      {"http://01.2.3.4/", target_error::bad_host},
      {"http://1.2.3.256/", target_error::bad_host},
      {"http://256.1.1.1/", target_error::bad_host},
      {"http://1.2.3.4.5/", target_error::bad_host},
      {"http://1.2.3.4./", target_error::bad_host},
      {"http://2130706433/", target_error::bad_host},
      {"http://1.2.3.04/", target_error::bad_host},
      {"http://1234.1.1.1/", target_error::bad_host},
      {"http://example.123/", target_error::bad_host},
      // Host bytes.
      {"http:///", target_error::bad_host},
      {"http://", target_error::bad_host},
      {"http://?q", target_error::bad_host},
      {"http://:80/", target_error::bad_host},
      {"http://ex%61mple.com/", target_error::bad_host},
      {"http://%65xample.com/", target_error::bad_host},
      {"http://ex\xc3\xa4mple.com/", target_error::bad_host},
      {"http://\xe4\xbe\x8b.com/", target_error::bad_host},
      {"http://exa mple.com/", target_error::bad_host},
      {"http://exa\tmple.com/", target_error::bad_host},
      {"http://example.com\\/", target_error::bad_host},
      {"http://exa!mple.com/", target_error::bad_host},
      {"http://a..b/", target_error::bad_host},
      {"http://.example.com/", target_error::bad_host},
      {"http://./", target_error::bad_host},
      {"http://example.com../", target_error::bad_host},
      // Paths.
      {"http://example.com/#frag", target_error::bad_path},
      {"http://example.com#frag", target_error::bad_path},
      {"http://example.com/a?b#c", target_error::bad_path},
      {"http://example.com/a b", target_error::bad_path},
      {"http://example.com/a\tb", target_error::bad_path},
      {"http://example.com/a\x7f", target_error::bad_path},
      {"http://example.com/\xc3\xa4", target_error::bad_path},
      {"http://example.com/a\rb", target_error::bad_path},
      {"http://example.com/a\nb", target_error::bad_path},
      {"http://example.com/?\x01", target_error::bad_path},
      {std::string_view("http://example.com/a\0b", 22), target_error::bad_path},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(printable(c.raw));
    target t;
    EXPECT_EQ(parse_absolute_target(c.raw, t), c.err);
  }

  // Labels: 63 bytes is the DNS maximum.
  {
    target t;
    EXPECT_EQ(parse_absolute_target("http://" + max_label + ".example/", t), target_error::none);
    EXPECT_EQ(t.host, max_label + ".example");
    EXPECT_EQ(parse_absolute_target("http://" + long_label + ".example/", t),
              target_error::bad_host);
    EXPECT_EQ(parse_absolute_target("http://example." + long_label + "/", t),
              target_error::bad_host);
    EXPECT_EQ(parse_absolute_target("http://" + long_label + "/", t), target_error::bad_host);
  }
}

TEST(HttpTarget, HostNameLengthLimit) {
  // 253 bytes is the longest name DNS can carry (254 with the FQDN trailing dot).
  auto name = [](std::size_t len) {
    std::string s;
    while (s.size() < len) {
      if (!s.empty()) s += '.';
      s += std::string(std::min<std::size_t>(63, len - s.size()), 'a');
    }
    return s;
  };
  std::string n253 = name(253);
  ASSERT_EQ(n253.size(), 253u);
  ASSERT_NE(n253.back(), '.');
  target t;
  EXPECT_EQ(parse_absolute_target("http://" + n253 + "/", t), target_error::none);
  EXPECT_EQ(parse_absolute_target("http://" + n253 + "./", t), target_error::none);
  std::string n254 = name(254);
  ASSERT_EQ(n254.size(), 254u);
  ASSERT_NE(n254.back(), '.');
  EXPECT_EQ(parse_absolute_target("http://" + n254 + "/", t), target_error::bad_host);
  EXPECT_EQ(parse_absolute_target("http://" + n254 + "./", t), target_error::bad_host);
}

TEST(HttpTarget, AuthorityFormAccepted) {
  const std::vector<ok_case> cases = {
      {"example.com:443", "example.com", 443, "", false, false},
      {"Example.COM:443", "example.com", 443, "", false, false},
      {"example.com.:443", "example.com.", 443, "", false, false},
      {"example.com:1", "example.com", 1, "", false, false},
      {"example.com:65535", "example.com", 65535, "", false, false},
      {"1.2.3.4:443", "1.2.3.4", 443, "", true, false},
      {"[::1]:443", "::1", 443, "", true, true},
      {"[2001:DB8::1]:8443", "2001:db8::1", 8443, "", true, true},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(std::string(c.raw));
    target t;
    t.path = "stale";
    ASSERT_EQ(parse_authority_target(c.raw, t), target_error::none);
    EXPECT_EQ(t.host, c.host);
    EXPECT_EQ(t.port, c.port);
    EXPECT_EQ(t.path, c.path);
    EXPECT_EQ(t.host_is_ip, c.is_ip);
    EXPECT_EQ(t.host_is_v6, c.is_v6);
  }
}

TEST(HttpTarget, AuthorityFormRejected) {
  const std::vector<bad_case> cases = {
      {"", target_error::bad_host},
      {"example.com", target_error::bad_port},
      {"[::1]", target_error::bad_port},
      {"1.2.3.4", target_error::bad_port},
      {"example.com:", target_error::bad_port},
      {"example.com:0", target_error::bad_port},
      {"example.com:65536", target_error::bad_port},
      {"example.com:abc", target_error::bad_port},
      {"example.com:+443", target_error::bad_port},
      {"example.com:-1", target_error::bad_port},
      {"example.com:100443", target_error::bad_port},
      {"example.com:443 ", target_error::bad_port},
      {":443", target_error::bad_host},
      {"::1:443", target_error::bad_host},
      {"2001:db8::1:443", target_error::bad_host},
      {"example.com:443:1", target_error::bad_host},
      {"[fe80::1%25eth0]:443", target_error::bad_host},
      {"[::1]443", target_error::bad_host},
      {"[::1:443", target_error::bad_host},
      {"127.1:443", target_error::bad_host},
      {"0x7f.0.0.1:443", target_error::bad_host},
      {"0177.0.0.1:443", target_error::bad_host},
      {"1.2.3.256:443", target_error::bad_host},
      {"a..b:443", target_error::bad_host},
      {"ex%61mple.com:443", target_error::bad_host},
      {"ex\xc3\xa4mple.com:443", target_error::bad_host},
      {"user@example.com:443", target_error::userinfo},
      {"user:pw@example.com:443", target_error::userinfo},
      // Anything path-like is not an authority.
      {"example.com:443/", target_error::bad_host},
      {"example.com:443?", target_error::bad_host},
      {"example.com:443#", target_error::bad_host},
      {"http://example.com:443", target_error::bad_host},
      {"/", target_error::bad_host},
      {"*", target_error::bad_host},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(printable(c.raw));
    target t;
    EXPECT_EQ(parse_authority_target(c.raw, t), c.err);
  }
}

TEST(HttpTarget, AuthorityAndHostHeader) {
  struct fmt_case {
    std::string_view raw;
    std::string_view authority;
    std::string_view host80;
    std::string_view host443;
  };
  const std::vector<fmt_case> cases = {
      {"http://Example.com/", "example.com:80", "example.com", "example.com:80"},
      {"http://example.com:8080/", "example.com:8080", "example.com:8080", "example.com:8080"},
      {"http://example.com:443/", "example.com:443", "example.com:443", "example.com"},
      {"http://1.2.3.4/", "1.2.3.4:80", "1.2.3.4", "1.2.3.4:80"},
      {"http://[::1]/", "[::1]:80", "[::1]", "[::1]:80"},
      {"http://[2001:DB8::1]:8080/", "[2001:db8::1]:8080", "[2001:db8::1]:8080",
       "[2001:db8::1]:8080"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(std::string(c.raw));
    target t;
    ASSERT_EQ(parse_absolute_target(c.raw, t), target_error::none);
    EXPECT_EQ(t.authority(), c.authority);
    EXPECT_EQ(t.host_header(80), c.host80);
    EXPECT_EQ(t.host_header(443), c.host443);
  }
  target t;
  ASSERT_EQ(parse_authority_target("[::1]:443", t), target_error::none);
  EXPECT_EQ(t.authority(), "[::1]:443");
  EXPECT_EQ(t.host_header(443), "[::1]");
}

TEST(HttpTarget, ReusedTargetIsOverwritten) {
  target t;
  ASSERT_EQ(parse_absolute_target("http://[::1]:8080/a", t), target_error::none);
  ASSERT_EQ(parse_absolute_target("http://example.com/b", t), target_error::none);
  EXPECT_EQ(t.host, "example.com");
  EXPECT_FALSE(t.host_is_ip);
  EXPECT_FALSE(t.host_is_v6);
  EXPECT_EQ(t.port, 80);
  EXPECT_EQ(t.path, "/b");
}

TEST(HttpTarget, HostFieldCheckMatchesAbsoluteForm) {
  // valid_host_field(v) is parse_absolute_target("http://" + v) without building that string.
  const std::vector<std::string> values{"example.com",
                                        "EXAMPLE.com:8080",
                                        "a.b.c.",
                                        "a..b",
                                        ".a",
                                        "127.0.0.1",
                                        "127.1",
                                        "1.2.3.4.",
                                        "0x7f.1",
                                        "999.1.1.1",
                                        "a.1b",
                                        "a.b1",
                                        "[::1]",
                                        "[::1]:80",
                                        "[::1",
                                        "::1",
                                        "[fe80::1%eth0]",
                                        "host:",
                                        "host:0",
                                        "host:65536",
                                        "host:65535",
                                        "host:8a",
                                        "h_st",
                                        "h st",
                                        "h\xc3\xa4st",
                                        std::string("a\0b", 3),
                                        "",
                                        ":80",
                                        "x.example:80:81",
                                        "[::1]x",
                                        std::string(253, 'a'),
                                        std::string(254, 'a'),
                                        std::string(63, 'a') + ".b",
                                        std::string(64, 'a') + ".b",
                                        "1.2.3.4:5",
                                        "123"};
  for (const auto& v : values) {
    SCOPED_TRACE(v);
    target t;
    EXPECT_EQ(valid_host_field(v), parse_absolute_target("http://" + v, t) == target_error::none);
  }
}

TEST(HttpTarget, ErrorStringsAreDistinct) {
  const std::vector<target_error> all = {
      target_error::none,     target_error::not_absolute, target_error::bad_scheme,
      target_error::userinfo, target_error::bad_host,     target_error::bad_port,
      target_error::bad_path,
  };
  for (std::size_t i = 0; i < all.size(); ++i) {
    EXPECT_FALSE(to_string(all[i]).empty());
    for (std::size_t j = i + 1; j < all.size(); ++j)
      EXPECT_NE(to_string(all[i]), to_string(all[j]));
  }
  EXPECT_EQ(to_string(target_error::none), "ok");
}

// Found by fuzz/fuzz_target.cpp: inet_pton read the bracketed literal as a C string, so a NUL
// inside the brackets cut it short ("[::\0...]" passed as "::") while the host kept the bytes
// after the NUL. Only hex digits, ':' and '.' may stand between the brackets.
TEST(HttpTarget, BracketedHostWithEmbeddedNulRejected) {
  using namespace std::string_literals;
  target t;
  EXPECT_EQ(parse_absolute_target("http://[::\0ffff:112.0.20.1]/"s, t), target_error::bad_host);
  EXPECT_EQ(parse_absolute_target("http://[::\0]/"s, t), target_error::bad_host);
  EXPECT_EQ(parse_authority_target("[::1\0junk]:443"s, t), target_error::bad_host);
  EXPECT_EQ(parse_authority_target("[2001:db8::1 ]:443", t), target_error::bad_host);
  // Plain literals, in either case, still pass.
  ASSERT_EQ(parse_authority_target("[2001:DB8::A]:443", t), target_error::none);
  EXPECT_EQ(t.host, "2001:db8::a");
  ASSERT_EQ(parse_absolute_target("http://[::ffff:192.0.2.1]/", t), target_error::none);
  EXPECT_EQ(t.host, "::ffff:192.0.2.1");
}

}  // namespace
}  // namespace egressd::http
