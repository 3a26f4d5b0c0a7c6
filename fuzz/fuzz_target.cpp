// libFuzzer target: request-target parsing (src/http/target.cpp), absolute-form for plain HTTP
// and authority-form for CONNECT. The input is tried as it is, and behind "http://" so that
// plain host[:port] inputs reach the absolute-form parser too. On every accepted target:
//  - the host is well formed: lower case, a strict IP literal or LDH labels of 1-63 bytes within
//    253 (254 with the FQDN dot), a port of 1-65535, a path of visible ASCII starting with '/';
//  - "is an IP" means the same thing everywhere an address is judged: host_is_ip exactly when
//    acl::parse_address takes the host, the session's make_address() succeeds on it (it connects
//    to what that returns), and acl::is_ip_literal agrees (deny_ip_literals and domain rules);
//    a name is never a number to inet_aton (no "127.1", "0x7f.1", "2130706433" slipping past as
//    a name to the resolver);
//  - printing and re-parsing is stable: authority() and "http://" + host_header() + path parse
//    back to the same target;
//  - the authority form is case-insensitive.
#include <arpa/inet.h>

#include <boost/asio/ip/address.hpp>
#include <cstdint>
#include <string>
#include <string_view>

#include "egressd/acl/cidr.hpp"
#include "egressd/acl/rules.hpp"
#include "egressd/http/target.hpp"
#include "fuzz_check.hpp"

namespace http = egressd::http;
namespace acl = egressd::acl;

namespace {

bool same_target(const http::target& a, const http::target& b) {
  return a.host == b.host && a.host_is_ip == b.host_is_ip && a.host_is_v6 == b.host_is_v6 &&
         a.port == b.port && a.path == b.path;
}

void check_host(const http::target& t) {
  const std::string& h = t.host;
  FUZZ_CHECK(!h.empty());
  for (char c : h) FUZZ_CHECK(!(c >= 'A' && c <= 'Z'));

  const auto parsed = acl::parse_address(h);
  boost::system::error_code ec;
  const auto made = boost::asio::ip::make_address(h, ec);
  if (t.host_is_ip) {
    FUZZ_CHECK(parsed.has_value());
    FUZZ_CHECK(parsed->is_v6() == t.host_is_v6);
    FUZZ_CHECK(!ec);
    FUZZ_CHECK(made == *parsed);
    FUZZ_CHECK(acl::is_ip_literal(h));
    FUZZ_CHECK(!acl::domain_matches(h, h));
    return;
  }
  FUZZ_CHECK(!t.host_is_v6);
  FUZZ_CHECK(!parsed.has_value());
  FUZZ_CHECK(!acl::is_ip_literal(h));
  in_addr a4{};
  FUZZ_CHECK(inet_aton(h.c_str(), &a4) == 0);
  // A name: LDH labels ('_' tolerated), one optional trailing dot.
  FUZZ_CHECK(h.size() <= (h.back() == '.' ? 254u : 253u));
  std::size_t label = 0;
  for (std::size_t i = 0; i < h.size(); ++i) {
    const char c = h[i];
    if (c == '.') {
      FUZZ_CHECK(label > 0);
      label = 0;
      continue;
    }
    FUZZ_CHECK((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_');
    ++label;
    FUZZ_CHECK(label <= 63);
  }
  // Domain rules see the name as the target parser does (trailing dot ignored).
  std::string bare = h;
  if (bare.back() == '.') bare.pop_back();
  FUZZ_CHECK(acl::domain_matches(bare, h));
  FUZZ_CHECK(acl::domain_matches("*." + bare, "x." + h));
  FUZZ_CHECK(!acl::domain_matches("*." + bare, h));
}

void check_absolute(std::string_view raw) {
  http::target t;
  const auto e = http::parse_absolute_target(raw, t);
  FUZZ_CHECK(!http::to_string(e).empty());
  if (e != http::target_error::none) return;
  check_host(t);
  FUZZ_CHECK(t.port != 0);
  FUZZ_CHECK(!t.path.empty() && t.path.front() == '/');
  for (char ch : t.path) {
    const auto c = static_cast<unsigned char>(ch);
    FUZZ_CHECK(c > 0x20 && c < 0x7f && c != '#');
  }
  // The input started with the scheme (any case) and holds the path as given (or "/" before
  // a query).
  FUZZ_CHECK(raw.size() >= 7);
  const std::string_view rest = raw.substr(7);
  FUZZ_CHECK(t.path == "/" || rest.ends_with(t.path) ||
             (t.path.starts_with("/?") && rest.ends_with(std::string_view(t.path).substr(1))));

  http::target again;
  const std::string printed = "http://" + t.host_header(80) + t.path;
  FUZZ_CHECK(http::parse_absolute_target(printed, again) == http::target_error::none);
  FUZZ_CHECK(same_target(again, t));
  FUZZ_CHECK(http::parse_authority_target(t.authority(), again) == http::target_error::none);
  FUZZ_CHECK(again.host == t.host && again.port == t.port && again.host_is_ip == t.host_is_ip &&
             again.host_is_v6 == t.host_is_v6);
}

void check_authority(std::string_view raw) {
  http::target t;
  const auto e = http::parse_authority_target(raw, t);
  FUZZ_CHECK(!http::to_string(e).empty());

  // Case does not matter in an authority (names and IPv6 hex digits alike).
  std::string upper(raw);
  for (char& c : upper)
    if (c >= 'a' && c <= 'z') c = static_cast<char>(c - 'a' + 'A');
  http::target u;
  const auto ue = http::parse_authority_target(upper, u);
  FUZZ_CHECK(ue == e);
  if (e != http::target_error::none) return;
  FUZZ_CHECK(same_target(u, t));

  check_host(t);
  FUZZ_CHECK(t.port != 0 && t.path.empty());
  FUZZ_CHECK(raw.find_first_of("/?#@") == std::string_view::npos);
  http::target again;
  FUZZ_CHECK(http::parse_authority_target(t.authority(), again) == http::target_error::none);
  FUZZ_CHECK(same_target(again, t));
  // The same authority in absolute form names the same host and port.
  FUZZ_CHECK(http::parse_absolute_target("http://" + std::string(raw) + "/", again) ==
             http::target_error::none);
  FUZZ_CHECK(again.host == t.host && again.port == t.port);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view in(reinterpret_cast<const char*>(data), size);
  check_absolute(in);
  check_authority(in);
  check_absolute("http://" + std::string(in));
  return 0;
}
