// libFuzzer target: the request head path of a session (src/http/message.cpp, target.cpp,
// forward.cpp) -- head_scanner over the bytes as they arrive, parse_request on the delimited
// head, and build_request, which writes what goes upstream. Checked on every input, under two
// sets of limits (the defaults, and small ones so the 414/431 paths are reachable):
//  - the scanner fed the whole input at once agrees exactly with a byte-at-a-time reference
//    model of its contract (leading CRLFs, bare CR/LF, request-line and head limits);
//  - fed in two pieces split at an input-derived point, and fed one byte at a time, it reaches
//    the same decision (complete at the same length, or an error; a limit error may come earlier
//    when a piece ends inside an over-long line, since the limit is checked at the piece end);
//  - parse_request reads only the head (parsed from an exactly sized heap copy, so ASan sees an
//    over-read), every view it returns lies inside that head, and a second parse agrees;
//  - an accepted request is well formed as the STYLE.md strict rules promise: token method and
//    field names, clean field values, at most one Host, unambiguous framing (one Content-Length
//    with digits only, or one Transfer-Encoding ending in chunked, never both), a target that
//    re-parses to the same host and port;
//  - the request build_request writes for upstream is one head that the scanner delimits at its
//    exact end (no injected line, no second request) and that parses again with the same
//    framing, the same Content-Length and the same target;
//  - parse_response on the same head: views inside it, framing consistent with its fields, and
//    build_response's output is again exactly one head;
//  - every response egressd generates itself (error_response) is one head whose Content-Length
//    is exactly its body, even with client bytes as the detail text.
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "egressd/core/error.hpp"
#include "egressd/http/forward.hpp"
#include "egressd/http/message.hpp"
#include "egressd/http/target.hpp"
#include "fuzz_check.hpp"

namespace http = egressd::http;
using egressd::proxy_error;
using egressd::fuzz::within;

namespace {

bool is_limit_error(proxy_error e) {
  return e == proxy_error::uri_too_long || e == proxy_error::header_too_large;
}

// The scanner's contract, one byte at a time over the whole buffer (the shape of the scanner
// before it jumped from line to line with memchr). Stateless: a pure function of the bytes.
http::scan_result reference_scan(std::string_view buf, const http::head_limits& lim) {
  using r = http::scan_result;
  std::size_t s = 0;
  while (buf.size() >= s + 2 && buf[s] == '\r' && buf[s + 1] == '\n') {
    s += 2;
    if (s > 8) return {r::error, 0, 0, proxy_error::bad_request};
  }
  std::size_t line_end = 0;
  for (std::size_t i = s; i < buf.size(); ++i) {
    const char c = buf[i];
    if (i > s && buf[i - 1] == '\r' && c != '\n') return {r::error, 0, 0, proxy_error::bad_request};
    if (c != '\n') continue;
    if (i == s || buf[i - 1] != '\r') return {r::error, 0, 0, proxy_error::bad_request};
    if (line_end == 0) {
      line_end = i + 1;
      if (line_end - s - 2 > lim.request_line) return {r::error, 0, 0, proxy_error::uri_too_long};
    } else if (i >= s + 3 && buf[i - 2] == '\n' && buf[i - 3] == '\r') {
      const std::size_t len = i + 1 - s;
      if (len > lim.header_block) return {r::error, 0, 0, proxy_error::header_too_large};
      return {r::complete, len, s, proxy_error::none};
    }
  }
  const std::size_t have = buf.size() - std::min(buf.size(), s);
  const std::size_t line_so_far = have > 0 && buf.back() == '\r' ? have - 1 : have;
  if (line_end == 0 && line_so_far > lim.request_line)
    return {r::error, 0, 0, proxy_error::uri_too_long};
  if (have > lim.header_block) return {r::error, 0, 0, proxy_error::header_too_large};
  return {};
}

bool same_scan(const http::scan_result& a, const http::scan_result& b) {
  return a.status == b.status && a.err == b.err && a.head_length == b.head_length &&
         a.skipped == b.skipped;
}

// The decision of an incremental run must match the whole-buffer one: the same complete head, or
// an error (the same one, unless a piece boundary inside an over-long line surfaced the limit
// first).
void check_incremental(const http::scan_result& got, const http::scan_result& whole) {
  FUZZ_CHECK(got.status == whole.status);
  if (got.status == http::scan_result::complete) {
    FUZZ_CHECK(got.head_length == whole.head_length && got.skipped == whole.skipped);
  } else if (got.status == http::scan_result::error) {
    FUZZ_CHECK(got.err == whole.err || is_limit_error(got.err));
  }
}

// Feeds growing prefixes ending at each cut (and finally the whole buffer) to one scanner, the
// way a session calls it after every read; stops at the first decision.
template <class Cuts>
http::scan_result feed(const http::head_limits& lim, std::string_view buf, const Cuts& cuts) {
  http::head_scanner s(lim);
  http::scan_result r;
  for (std::size_t cut : cuts) {
    r = s.scan(buf.substr(0, cut));
    if (r.status != http::scan_result::need_more) return r;
  }
  return s.scan(buf);
}

bool is_tchar(char c) {
  if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')) return true;
  return std::string_view("!#$%&'*+-.^_`|~").find(c) != std::string_view::npos;
}

bool is_token(std::string_view s) {
  if (s.empty()) return false;
  for (char c : s)
    if (!is_tchar(c)) return false;
  return true;
}

bool clean_value(std::string_view v) {
  if (!v.empty() && (v.front() == ' ' || v.front() == '\t' || v.back() == ' ' || v.back() == '\t'))
    return false;
  for (char ch : v) {
    const auto c = static_cast<unsigned char>(ch);
    if ((c < 0x20 && c != '\t') || c == 0x7f) return false;
  }
  return true;
}

std::size_t count_fields(const std::vector<http::field>& fields, std::string_view name) {
  std::size_t n = 0;
  for (const auto& f : fields) n += http::iequals(f.name, name) ? 1 : 0;
  return n;
}

const http::field* find_field(const std::vector<http::field>& fields, std::string_view name) {
  for (const auto& f : fields)
    if (http::iequals(f.name, name)) return &f;
  return nullptr;
}

bool same_target(const http::target& a, const http::target& b) {
  return a.host == b.host && a.host_is_ip == b.host_is_ip && a.host_is_v6 == b.host_is_v6 &&
         a.port == b.port && a.path == b.path;
}

bool same_request(const http::request_head& a, const http::request_head& b) {
  if (a.method != b.method || a.target_raw != b.target_raw || a.version_minor != b.version_minor ||
      a.is_connect != b.is_connect || a.body != b.body || a.content_length != b.content_length ||
      a.keep_alive != b.keep_alive || a.expect_continue != b.expect_continue ||
      !same_target(a.tgt, b.tgt) || a.fields.size() != b.fields.size())
    return false;
  for (std::size_t i = 0; i < a.fields.size(); ++i)
    if (a.fields[i].name != b.fields[i].name || a.fields[i].value != b.fields[i].value)
      return false;
  return true;
}

void check_target(const http::target& t, bool connect) {
  FUZZ_CHECK(!t.host.empty());
  FUZZ_CHECK(t.port != 0);
  FUZZ_CHECK(!t.host_is_v6 || t.host_is_ip);
  for (char c : t.host) FUZZ_CHECK(!(c >= 'A' && c <= 'Z'));
  if (connect) {
    FUZZ_CHECK(t.path.empty());
  } else {
    FUZZ_CHECK(!t.path.empty() && t.path.front() == '/');
    for (char ch : t.path) {
      const auto c = static_cast<unsigned char>(ch);
      FUZZ_CHECK(c > 0x20 && c < 0x7f && c != '#');
    }
  }
}

// The upstream request as the session writes it: one head, delimited at its exact end, whose
// framing and target are the ones egressd decided on.
void check_rebuilt(const http::request_head& req) {
  static constexpr http::xff_policy policies[] = {http::xff_policy::append,
                                                  http::xff_policy::replace,
                                                  http::xff_policy::remove, http::xff_policy::off};
  for (const auto xff : policies) {
    http::forward_options opt;
    opt.xff = xff;
    opt.client_ip = "192.0.2.1";
    opt.upstream_keep_alive = xff == http::xff_policy::append;
    std::string out;
    http::build_request(req, opt, out);

    // The scanner must see one head ending exactly where build_request stopped. Generous limits:
    // the rebuilt head may be longer than the received one (Via, X-Forwarded-For).
    http::head_limits big{out.size() + 1, out.size() + 1, req.fields.size() + 8};
    http::head_scanner s(big);
    const auto scanned = s.scan(out);
    FUZZ_CHECK(scanned.status == http::scan_result::complete);
    FUZZ_CHECK(scanned.skipped == 0 && scanned.head_length == out.size());

    // Re-parse it in absolute form (parse_request wants what a client sends a proxy).
    const std::size_t eol = out.find("\r\n");
    const std::string line =
        std::string(req.method) + " http://" + req.tgt.host_header(80) + req.tgt.path + " HTTP/1.1";
    FUZZ_CHECK(out.compare(0, eol, std::string(req.method) + " " + req.tgt.path + " HTTP/1.1") ==
               0);
    const std::string again_text = line + out.substr(eol);
    http::request_head again;
    big.request_line = again_text.size();
    big.header_block = again_text.size();
    const auto err = http::parse_request(again_text, big, again);
    FUZZ_CHECK(!err);
    FUZZ_CHECK(again.body == req.body);
    FUZZ_CHECK(again.content_length == req.content_length);
    FUZZ_CHECK(again.tgt.host == req.tgt.host && again.tgt.port == req.tgt.port &&
               again.tgt.path == req.tgt.path);
    FUZZ_CHECK(count_fields(again.fields, "host") == 1);
    FUZZ_CHECK(count_fields(again.fields, "content-length") ==
               (req.body == http::framing::content_length ? 1u : 0u));
    FUZZ_CHECK(count_fields(again.fields, "transfer-encoding") ==
               (req.body == http::framing::chunked ? 1u : 0u));
    // Hop-by-hop fields never travel, except the ones egressd itself adds for its framing and
    // its Connection: close.
    for (const auto& f : again.fields) {
      if (!http::is_hop_by_hop(f.name)) continue;
      FUZZ_CHECK(http::iequals(f.name, "content-length") ||
                 http::iequals(f.name, "transfer-encoding") ||
                 (http::iequals(f.name, "connection") && f.value == "close"));
    }
    FUZZ_CHECK(count_fields(again.fields, "connection") == (opt.upstream_keep_alive ? 0u : 1u));
    // append/replace: one X-Forwarded-For of ours; remove: none; off: the received ones pass
    // as they are (unless the client listed the name in Connection).
    std::size_t xff_fields = 0;
    if (xff == http::xff_policy::append || xff == http::xff_policy::replace) {
      xff_fields = 1;
    } else if (xff == http::xff_policy::off &&
               !http::listed_in_connection(req.fields, "x-forwarded-for")) {
      xff_fields = count_fields(req.fields, "x-forwarded-for");
    }
    FUZZ_CHECK(count_fields(again.fields, "x-forwarded-for") == xff_fields);
    FUZZ_CHECK(count_fields(again.fields, "x-authenticated-user") == 0);
  }
}

// A response egressd generates: one head whose Content-Length is exactly the body that
// follows, whatever the detail text holds (it can carry client bytes or system messages, and a
// CR or LF in it must not end the Proxy-Status field and start another).
void check_error_response(proxy_error e, std::string_view detail, bool close) {
  const std::string out = http::error_response(e, detail, close);
  http::head_scanner s({out.size() + 1, out.size() + 1, 16});
  const auto scanned = s.scan(out);
  FUZZ_CHECK(scanned.status == http::scan_result::complete && scanned.skipped == 0);
  const std::string_view head = std::string_view(out).substr(0, scanned.head_length);
  http::response_head resp;
  FUZZ_CHECK(!http::parse_response(head, "GET", {out.size(), out.size(), 16}, resp));
  const int want = egressd::describe(e).status;
  FUZZ_CHECK(resp.status == (want != 0 ? want : 500));
  FUZZ_CHECK(resp.body == http::framing::content_length);
  FUZZ_CHECK(resp.content_length == out.size() - head.size());
  FUZZ_CHECK(count_fields(resp.fields, "proxy-status") == 1);
  FUZZ_CHECK(count_fields(resp.fields, "connection") == (close ? 1u : 0u));
}

void check_request(std::string_view head, const http::head_limits& lim) {
  // An exactly sized heap copy: a read past the head is a heap-buffer-overflow for ASan.
  const std::unique_ptr<char[]> copy(new char[head.size()]);
  std::memcpy(copy.get(), head.data(), head.size());
  const std::string_view exact(copy.get(), head.size());

  http::request_head req;
  const http::parse_error err = http::parse_request(exact, lim, req);
  FUZZ_CHECK(within(req.method, exact.data(), exact.size()));
  FUZZ_CHECK(within(req.target_raw, exact.data(), exact.size()));
  for (const auto& f : req.fields) {
    FUZZ_CHECK(within(f.name, exact.data(), exact.size()));
    FUZZ_CHECK(within(f.value, exact.data(), exact.size()));
  }
  if (err) {
    FUZZ_CHECK(err.detail.data() != nullptr && !err.detail.empty());
    check_error_response(err.err, err.detail, true);
    return;
  }

  // Deterministic, and independent of where the head sits in memory.
  const std::string moved(head);
  http::request_head again;
  FUZZ_CHECK(!http::parse_request(moved, lim, again));
  FUZZ_CHECK(same_request(req, again));

  FUZZ_CHECK(is_token(req.method));
  FUZZ_CHECK(!req.target_raw.empty());
  for (char ch : req.target_raw) {
    const auto c = static_cast<unsigned char>(ch);
    FUZZ_CHECK(c > 0x20 && c < 0x7f);
  }
  FUZZ_CHECK(req.version_minor == 0 || req.version_minor == 1);
  FUZZ_CHECK(req.fields.size() <= lim.header_fields);
  for (const auto& f : req.fields) {
    FUZZ_CHECK(is_token(f.name));
    FUZZ_CHECK(clean_value(f.value));
  }
  // The request line is the first line of the head, single spaces exactly.
  const std::string line = std::string(req.method) + " " + std::string(req.target_raw) +
                           (req.version_minor == 1 ? " HTTP/1.1\r\n" : " HTTP/1.0\r\n");
  FUZZ_CHECK(exact.substr(0, line.size()) == line);

  FUZZ_CHECK(count_fields(req.fields, "host") <= 1);
  if (req.version_minor == 1 && !req.is_connect) FUZZ_CHECK(count_fields(req.fields, "host") == 1);
  const std::size_t lengths = count_fields(req.fields, "content-length");
  const std::size_t codings = count_fields(req.fields, "transfer-encoding");
  FUZZ_CHECK(lengths <= 1 && codings <= 1 && lengths + codings <= 1);
  switch (req.body) {
    case http::framing::none:
      FUZZ_CHECK(lengths == 0 && codings == 0 && req.content_length == 0);
      break;
    case http::framing::content_length: {
      FUZZ_CHECK(lengths == 1);
      const auto v = find_field(req.fields, "content-length")->value;
      FUZZ_CHECK(!v.empty() && v.size() <= 19);
      std::uint64_t n = 0;
      for (char c : v) {
        FUZZ_CHECK(c >= '0' && c <= '9');
        n = n * 10 + static_cast<std::uint64_t>(c - '0');
      }
      FUZZ_CHECK(n == req.content_length);
      break;
    }
    case http::framing::chunked: {
      FUZZ_CHECK(codings == 1 && req.version_minor == 1 && req.content_length == 0);
      // The final coding is chunked (and, as egressd implements no other, the only one).
      auto v = find_field(req.fields, "transfer-encoding")->value;
      while (!v.empty() && (v.back() == ',' || v.back() == ' ' || v.back() == '\t'))
        v.remove_suffix(1);
      FUZZ_CHECK(v.size() >= 7 && http::iequals(v.substr(v.size() - 7), "chunked"));
      break;
    }
    case http::framing::until_close:
      FUZZ_CHECK(false);  // requests never frame by close
  }
  if (req.expect_continue) {
    FUZZ_CHECK(req.version_minor == 1 && count_fields(req.fields, "expect") >= 1);
  }

  // A loop is only ever reported for a Via that names us.
  if (http::via_has_loop(req.fields, "egressd")) {
    bool named = false;
    for (const auto& f : req.fields) {
      if (!http::iequals(f.name, "via")) continue;
      for (std::size_t i = 0; i + 7 <= f.value.size(); ++i)
        named = named || http::iequals(f.value.substr(i, 7), "egressd");
    }
    FUZZ_CHECK(named);
  }

  FUZZ_CHECK(req.is_connect == (req.method == "CONNECT"));
  http::target t;
  if (req.is_connect) {
    FUZZ_CHECK(req.body != http::framing::chunked && req.content_length == 0);
    FUZZ_CHECK(!req.keep_alive);
    check_target(req.tgt, true);
    FUZZ_CHECK(http::parse_authority_target(req.target_raw, t) == http::target_error::none);
    FUZZ_CHECK(same_target(t, req.tgt));
    FUZZ_CHECK(http::parse_authority_target(req.tgt.authority(), t) == http::target_error::none);
    FUZZ_CHECK(same_target(t, req.tgt));
  } else {
    check_target(req.tgt, false);
    FUZZ_CHECK(http::parse_absolute_target(req.target_raw, t) == http::target_error::none);
    FUZZ_CHECK(same_target(t, req.tgt));
    check_rebuilt(req);
  }
}

void check_response(std::string_view head, const http::head_limits& lim) {
  const std::unique_ptr<char[]> copy(new char[head.size()]);
  std::memcpy(copy.get(), head.data(), head.size());
  const std::string_view exact(copy.get(), head.size());
  for (std::string_view method : {"GET", "HEAD", "CONNECT"}) {
    http::response_head resp;
    const auto err = http::parse_response(exact, method, lim, resp);
    FUZZ_CHECK(within(resp.reason, exact.data(), exact.size()));
    for (const auto& f : resp.fields) {
      FUZZ_CHECK(within(f.name, exact.data(), exact.size()));
      FUZZ_CHECK(within(f.value, exact.data(), exact.size()));
    }
    if (err) {
      FUZZ_CHECK(err.err == proxy_error::upstream_bad_response);
      continue;
    }
    FUZZ_CHECK(resp.status >= 100 && resp.status <= 599);
    FUZZ_CHECK(resp.version_minor == 0 || resp.version_minor == 1);
    FUZZ_CHECK(resp.fields.size() <= lim.header_fields);
    for (const auto& f : resp.fields) {
      FUZZ_CHECK(is_token(f.name));
      FUZZ_CHECK(clean_value(f.value));
    }
    const bool no_body = resp.status < 200 || resp.status == 204 || resp.status == 304 ||
                         method == "HEAD" ||
                         (method == "CONNECT" && resp.status >= 200 && resp.status < 300);
    if (no_body) FUZZ_CHECK(resp.body == http::framing::none);
    if (resp.body == http::framing::content_length)
      FUZZ_CHECK(count_fields(resp.fields, "content-length") >= 1 &&
                 count_fields(resp.fields, "transfer-encoding") == 0);
    if (resp.body == http::framing::chunked)
      FUZZ_CHECK(count_fields(resp.fields, "content-length") == 0 && resp.version_minor == 1);
    if (resp.body == http::framing::until_close) FUZZ_CHECK(!resp.keep_alive);

    // What the client receives is again exactly one head, framed as the session frames it: as
    // received, except that a chunked body for an HTTP/1.0 client (the GET case here) is
    // unchunked and close-delimited.
    http::response_options opt;
    opt.client_version_minor = method == "GET" ? 0 : 1;
    opt.to_client = resp.body;
    if (resp.body == http::framing::chunked && opt.client_version_minor == 0)
      opt.to_client = http::framing::until_close;
    opt.close = opt.to_client == http::framing::until_close || method == "GET";
    opt.head_only = resp.body == http::framing::none && (method == "HEAD" || resp.status == 304);
    std::string out;
    http::build_response(resp, opt, out);
    http::head_scanner s({out.size() + 1, out.size() + 1, resp.fields.size() + 8});
    const auto scanned = s.scan(out);
    FUZZ_CHECK(scanned.status == http::scan_result::complete);
    FUZZ_CHECK(scanned.skipped == 0 && scanned.head_length == out.size());
    http::response_head back;
    FUZZ_CHECK(
        !http::parse_response(out, method, {out.size(), out.size(), resp.fields.size() + 8}, back));
    FUZZ_CHECK(back.status == resp.status);
    if (!no_body) FUZZ_CHECK(back.body == opt.to_client);
    if (!no_body && opt.to_client == http::framing::content_length)
      FUZZ_CHECK(back.content_length == resp.content_length);
  }
}

void run(std::string_view data, const http::head_limits& lim) {
  const http::scan_result ref = reference_scan(data, lim);

  http::head_scanner whole_scanner(lim);
  const http::scan_result whole = whole_scanner.scan(data);
  FUZZ_CHECK(same_scan(whole, ref));
  if (whole.status == http::scan_result::complete) {
    FUZZ_CHECK(whole.skipped % 2 == 0 && whole.skipped <= 8);
    FUZZ_CHECK(whole.skipped + whole.head_length <= data.size());
    FUZZ_CHECK(whole.head_length <= lim.header_block);
  }
  if (whole.status == http::scan_result::error) FUZZ_CHECK(whole.err != proxy_error::none);

  // Split in two at an input-derived point, in three, and one byte at a time.
  if (!data.empty()) {
    const std::size_t h = egressd::fuzz::input_hash(data);
    const std::size_t a = h % (data.size() + 1);
    const std::size_t b = (h >> 20) % (data.size() + 1);
    check_incremental(feed(lim, data, std::vector<std::size_t>{a}), whole);
    check_incremental(feed(lim, data, std::vector<std::size_t>{std::min(a, b), std::max(a, b)}),
                      whole);
    std::vector<std::size_t> bytewise(data.size());
    for (std::size_t i = 0; i < data.size(); ++i) bytewise[i] = i + 1;
    check_incremental(feed(lim, data, bytewise), whole);
  }

  // Client bytes as the detail of a generated response (the worst case of what it may carry).
  if (!data.empty()) {
    const std::size_t h = egressd::fuzz::input_hash(data);
    check_error_response(
        static_cast<proxy_error>(h % (static_cast<int>(proxy_error::internal_error) + 1)),
        data.substr(0, 256), (h >> 8) & 1);
  }
  if (whole.status == http::scan_result::error) check_error_response(whole.err, "", true);

  if (whole.status != http::scan_result::complete) return;
  const std::string_view head = data.substr(whole.skipped, whole.head_length);
  check_request(head, lim);
  check_response(head, lim);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view in(reinterpret_cast<const char*>(data), size);
  run(in, http::head_limits{});
  // Small limits put the 414 / 431 / field-count paths within reach of short inputs.
  run(in, http::head_limits{48, 256, 6});
  return 0;
}
