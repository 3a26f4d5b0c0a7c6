#include "egressd/http/message.hpp"

#include <algorithm>
#include <array>
#include <cstring>

namespace egressd::http {
namespace {

constexpr std::array<bool, 256> make_tchar() {
  std::array<bool, 256> t{};
  for (int c = '0'; c <= '9'; ++c) t[c] = true;
  for (int c = 'a'; c <= 'z'; ++c) t[c] = true;
  for (int c = 'A'; c <= 'Z'; ++c) t[c] = true;
  for (char c : std::string_view("!#$%&'*+-.^_`|~")) t[static_cast<unsigned char>(c)] = true;
  return t;
}
constexpr auto tchar = make_tchar();

bool is_token(std::string_view s) {
  if (s.empty()) return false;
  for (char c : s)
    if (!tchar[static_cast<unsigned char>(c)]) return false;
  return true;
}

// field-value bytes: HTAB, SP, VCHAR, obs-text. Everything else (NUL, CR, LF, other controls,
// DEL) is rejected rather than stripped: a byte one parser drops and another keeps is a desync.
bool is_field_value(std::string_view s) {
  for (char ch : s) {
    auto c = static_cast<unsigned char>(ch);
    if (c == '\t') continue;
    if (c < 0x20 || c == 0x7f) return false;
  }
  return true;
}

std::string_view trim_ows(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

// Calls f(token) for each element of a comma list (RFC 9110 section 5.6.1), empty elements
// skipped as the RFC requires of recipients.
template <class F>
void for_each_token(std::string_view list, F&& f) {
  while (!list.empty()) {
    auto comma = list.find(',');
    auto item = trim_ows(list.substr(0, comma));
    if (!item.empty()) f(item);
    if (comma == std::string_view::npos) break;
    list.remove_prefix(comma + 1);
  }
}

// 1*DIGIT into a uint64 without overflow; 19 digits always fit.
bool parse_content_length(std::string_view v, std::uint64_t& out) {
  if (v.empty() || v.size() > 19) return false;
  std::uint64_t n = 0;
  for (char c : v) {
    if (c < '0' || c > '9') return false;
    n = n * 10 + static_cast<std::uint64_t>(c - '0');
  }
  out = n;
  return true;
}

// Splits head (ending in CRLF CRLF) into lines without CRLF; the blank line is not returned.
template <class F>
bool for_each_line(std::string_view head, F&& f) {
  while (true) {
    auto eol = head.find("\r\n");
    if (eol == std::string_view::npos) return true;
    auto line = head.substr(0, eol);
    if (line.empty()) return true;
    if (!f(line)) return false;
    head.remove_prefix(eol + 2);
  }
}

// Parses the field lines after the start line into out. limit_err is what an oversized count maps
// to (431 for requests, bad response for upstreams), bad_err what a syntax error maps to.
parse_error parse_fields(std::string_view rest, std::size_t max_fields, proxy_error limit_err,
                         proxy_error bad_err, std::vector<field>& out) {
  parse_error result;
  out.clear();
  for_each_line(rest, [&](std::string_view line) {
    if (line.front() == ' ' || line.front() == '\t') {
      result = {bad_err, "obs-fold line continuation"};
      return false;
    }
    auto colon = line.find(':');
    if (colon == std::string_view::npos) {
      result = {bad_err, "field line without colon"};
      return false;
    }
    auto name = line.substr(0, colon);
    if (!is_token(name)) {
      bool ws = !name.empty() && (name.back() == ' ' || name.back() == '\t');
      result = {bad_err, ws ? "whitespace before colon" : "invalid field name"};
      return false;
    }
    auto value = trim_ows(line.substr(colon + 1));
    if (!is_field_value(value)) {
      result = {bad_err, "control byte in field value"};
      return false;
    }
    if (out.size() >= max_fields) {
      result = {limit_err, "too many header fields"};
      return false;
    }
    out.push_back({name, value});
    return true;
  });
  return result;
}

}  // namespace

bool is_hop_by_hop(std::string_view name) noexcept {
  // Connection, Proxy-Connection, Keep-Alive, Proxy-Authorization, Proxy-Authenticate, TE,
  // Trailer, Upgrade, Transfer-Encoding, Content-Length: sorted by length first, as this runs for
  // every field of every forwarded head and most names match no length.
  switch (name.size()) {
    case 2:
      return iequals(name, "te");
    case 7:
      return iequals(name, "trailer") || iequals(name, "upgrade");
    case 10:
      return iequals(name, "connection") || iequals(name, "keep-alive");
    case 14:
      return iequals(name, "content-length");
    case 16:
      return iequals(name, "proxy-connection");
    case 17:
      return iequals(name, "transfer-encoding");
    case 18:
      return iequals(name, "proxy-authenticate");
    case 19:
      return iequals(name, "proxy-authorization");
    default:
      return false;
  }
}

bool listed_in_connection(const std::vector<field>& fields, std::string_view name) noexcept {
  bool found = false;
  for (const auto& f : fields) {
    if (!iequals(f.name, "connection")) continue;
    for_each_token(f.value, [&](std::string_view t) { found = found || iequals(t, name); });
  }
  return found;
}

scan_result head_scanner::scan(std::string_view buf) {
  scan_result r;
  // RFC 9112 section 2.2: ignore empty lines before the request line (a few, not forever).
  // Keyed on line_end_, not pos_: a CR that arrived alone at skipped_ has advanced pos_ already,
  // and its LF in the next read must still make an empty line, not an empty request line.
  while (line_end_ == 0 && buf.size() >= skipped_ + 2 && buf[skipped_] == '\r' &&
         buf[skipped_ + 1] == '\n') {
    skipped_ += 2;
    pos_ = skipped_;
    if (skipped_ > 8) return {scan_result::error, 0, 0, proxy_error::bad_request};
  }
  const char* p = buf.data();
  const std::size_t n = buf.size();
  std::size_t i = std::max(pos_, skipped_);
  // A CR that ended the previous piece needs its LF first in this one.
  if (i > skipped_ && i < n && p[i - 1] == '\r' && p[i] != '\n')
    return {scan_result::error, 0, 0, proxy_error::bad_request};  // bare CR
  for (; i < n; ++i) {
    // Only CR and LF need a look, so jump from line to line with memchr (this scan runs over
    // every request and response head; byte by byte it cost ~10 instructions a byte). The only
    // CR allowed before the next LF is the one right in front of it -- or, when this piece has
    // no LF yet, one at its very end, whose LF comes with the next piece.
    const auto* lf = static_cast<const char*>(std::memchr(p + i, '\n', n - i));
    const std::size_t j = lf != nullptr ? static_cast<std::size_t>(lf - p) : n;
    const auto* cr = static_cast<const char*>(std::memchr(p + i, '\r', j - i));
    if (cr != nullptr && static_cast<std::size_t>(cr - p) + 1 != j)
      return {scan_result::error, 0, 0, proxy_error::bad_request};  // bare CR
    if (j == n) break;
    i = j;
    if (i == skipped_ || p[i - 1] != '\r')
      return {scan_result::error, 0, 0, proxy_error::bad_request};  // bare LF
    if (line_end_ == 0) {
      line_end_ = i + 1;
      if (line_end_ - skipped_ - 2 > limits_.request_line)
        return {scan_result::error, 0, 0, proxy_error::uri_too_long};
    } else if (i >= skipped_ + 3 && buf[i - 2] == '\n' && buf[i - 3] == '\r') {
      std::size_t len = i + 1 - skipped_;
      if (len > limits_.header_block)
        return {scan_result::error, 0, 0, proxy_error::header_too_large};
      pos_ = i + 1;
      return {scan_result::complete, len, skipped_, proxy_error::none};
    }
  }
  pos_ = buf.size();
  std::size_t have = buf.size() - std::min(buf.size(), skipped_);
  // A trailing CR may be the start of the request line's CRLF: it is not part of the line, so a
  // line of exactly the limit still waits for its LF.
  std::size_t line_so_far = have > 0 && buf.back() == '\r' ? have - 1 : have;
  if (line_end_ == 0 && line_so_far > limits_.request_line)
    return {scan_result::error, 0, 0, proxy_error::uri_too_long};
  if (have > limits_.header_block) return {scan_result::error, 0, 0, proxy_error::header_too_large};
  r.status = scan_result::need_more;
  return r;
}

namespace {

// Reset to the default state, keeping the capacity of the fields vector and the target's
// strings: a session parses one head per request into the same object.
void reset_keeping_capacity(request_head& out) {
  auto fields = std::move(out.fields);
  auto host = std::move(out.tgt.host);
  auto path = std::move(out.tgt.path);
  out = request_head{};
  fields.clear();
  host.clear();
  path.clear();
  out.fields = std::move(fields);
  out.tgt.host = std::move(host);
  out.tgt.path = std::move(path);
}

void reset_keeping_capacity(response_head& out) {
  auto fields = std::move(out.fields);
  out = response_head{};
  fields.clear();
  out.fields = std::move(fields);
}

}  // namespace

parse_error parse_request(std::string_view head, const head_limits& limits, request_head& out) {
  reset_keeping_capacity(out);
  auto eol = head.find("\r\n");
  if (eol == std::string_view::npos) return {proxy_error::bad_request, "no request line"};
  std::string_view line = head.substr(0, eol);

  // request-line = method SP request-target SP HTTP-version, single spaces exactly.
  auto sp1 = line.find(' ');
  if (sp1 == std::string_view::npos) return {proxy_error::bad_request, "malformed request line"};
  auto sp2 = line.find(' ', sp1 + 1);
  if (sp2 == std::string_view::npos) return {proxy_error::bad_request, "malformed request line"};
  out.method = line.substr(0, sp1);
  out.target_raw = line.substr(sp1 + 1, sp2 - sp1 - 1);
  std::string_view version = line.substr(sp2 + 1);
  if (!is_token(out.method)) return {proxy_error::bad_request, "invalid method"};
  if (out.target_raw.empty()) return {proxy_error::bad_request, "empty request target"};
  for (char ch : out.target_raw) {
    auto c = static_cast<unsigned char>(ch);
    if (c <= 0x20 || c >= 0x7f) return {proxy_error::bad_request, "invalid byte in target"};
  }
  if (version == "HTTP/1.1") {
    out.version_minor = 1;
  } else if (version == "HTTP/1.0") {
    out.version_minor = 0;
  } else if (version.size() == 8 && version.substr(0, 5) == "HTTP/" && version[5] >= '0' &&
             version[5] <= '9' && version[6] == '.' && version[7] >= '0' && version[7] <= '9') {
    return {proxy_error::version_not_supported, "unsupported HTTP version"};
  } else {
    return {proxy_error::bad_request, "malformed HTTP version"};
  }

  if (auto e = parse_fields(head.substr(eol + 2), limits.header_fields,
                            proxy_error::header_too_large, proxy_error::bad_request, out.fields))
    return e;

  out.is_connect = out.method == "CONNECT";
  int hosts = 0, lengths = 0, codings = 0;
  std::string_view host_value, te_value;
  bool conn_close = false, conn_keep_alive = false;
  for (const auto& f : out.fields) {
    if (iequals(f.name, "host")) {
      ++hosts;
      host_value = f.value;
    } else if (iequals(f.name, "content-length")) {
      ++lengths;
      if (!parse_content_length(f.value, out.content_length))
        return {proxy_error::bad_request, "invalid Content-Length"};
    } else if (iequals(f.name, "transfer-encoding")) {
      ++codings;
      te_value = f.value;
    } else if (iequals(f.name, "connection") || iequals(f.name, "proxy-connection")) {
      for_each_token(f.value, [&](std::string_view t) {
        if (iequals(t, "close")) conn_close = true;
        if (iequals(t, "keep-alive")) conn_keep_alive = true;
      });
    } else if (iequals(f.name, "expect")) {
      if (!iequals(f.value, "100-continue"))
        return {proxy_error::expectation_failed, "unsupported expectation"};
      // RFC 9110 10.1.1: a 100-continue expectation in an HTTP/1.0 request MUST be ignored
      // (a 1.0 client does not expect an interim response).
      out.expect_continue = out.version_minor == 1;
    }
  }

  // Framing (RFC 9112 section 6): any doubt is a 400, never a guess.
  if (lengths > 1) return {proxy_error::bad_request, "duplicate Content-Length"};
  if (codings > 1) return {proxy_error::bad_request, "duplicate Transfer-Encoding"};
  if (codings == 1) {
    if (lengths == 1)
      return {proxy_error::bad_request, "both Content-Length and Transfer-Encoding"};
    if (out.version_minor == 0)
      return {proxy_error::bad_request, "Transfer-Encoding in an HTTP/1.0 request"};
    int chunked = 0, others = 0;
    bool last_chunked = false, params = false;
    for_each_token(te_value, [&](std::string_view t) {
      last_chunked = iequals(t, "chunked");
      if (last_chunked) {
        ++chunked;
      } else {
        ++others;
        if (t.find(';') != std::string_view::npos && iequals(t.substr(0, 7), "chunked"))
          params = true;
      }
    });
    if (params) return {proxy_error::bad_request, "parameters on chunked"};
    if (chunked == 0 && others == 0) return {proxy_error::bad_request, "empty Transfer-Encoding"};
    if (!last_chunked) {
      // RFC 9112 6.3: a request whose final coding is not chunked cannot be delimited -> 400.
      // A lone unknown coding ("gzip", "identity") is reported as not implemented.
      if (chunked == 0 && others == 1) return {proxy_error::not_implemented, "unsupported coding"};
      return {proxy_error::bad_request, "chunked is not the final transfer coding"};
    }
    if (chunked > 1) return {proxy_error::bad_request, "chunked applied twice"};
    if (others > 0) return {proxy_error::not_implemented, "unsupported transfer coding"};
    out.body = framing::chunked;
  } else if (lengths == 1) {
    // Content-Length: 0 stays explicit so that a POST still carries it upstream.
    out.body = framing::content_length;
  }

  if (hosts > 1) return {proxy_error::bad_request, "duplicate Host"};
  if (out.version_minor == 1 && hosts == 0 && !out.is_connect)
    return {proxy_error::bad_request, "missing Host"};
  if (hosts == 1) {
    // The Host value is replaced by the target's authority, but it must still be valid.
    // (What parse_absolute_target accepts as the authority of "http://" + value, checked
    // without building that string.)
    if (host_value.empty() || host_value.find_first_of("/?#@") != std::string_view::npos ||
        !valid_host_field(host_value))
      return {proxy_error::bad_request, "invalid Host"};
  }

  if (out.is_connect) {
    if (out.body == framing::chunked || out.content_length > 0)
      return {proxy_error::bad_request, "CONNECT with a body"};
    if (parse_authority_target(out.target_raw, out.tgt) != target_error::none)
      return {proxy_error::bad_request, "invalid CONNECT target"};
    out.keep_alive = false;
  } else {
    if (auto e = parse_absolute_target(out.target_raw, out.tgt); e != target_error::none)
      return {proxy_error::bad_request, to_string(e)};
    out.keep_alive = out.version_minor == 1 ? !conn_close : (conn_keep_alive && !conn_close);
  }
  return {};
}

parse_error parse_response(std::string_view head, std::string_view request_method,
                           const head_limits& limits, response_head& out) {
  reset_keeping_capacity(out);
  constexpr auto bad = proxy_error::upstream_bad_response;
  auto eol = head.find("\r\n");
  if (eol == std::string_view::npos) return {bad, "no status line"};
  std::string_view line = head.substr(0, eol);
  if (line.size() < 12 || line.substr(0, 7) != "HTTP/1." || (line[7] != '0' && line[7] != '1') ||
      line[8] != ' ')
    return {bad, "malformed status line"};
  out.version_minor = line[7] - '0';
  int status = 0;
  for (int i = 9; i < 12; ++i) {
    if (line[i] < '0' || line[i] > '9') return {bad, "malformed status code"};
    status = status * 10 + (line[i] - '0');
  }
  if (status < 100 || status > 599) return {bad, "status code out of range"};
  out.status = status;
  if (line.size() > 12) {
    if (line[12] != ' ') return {bad, "malformed status line"};
    out.reason = line.substr(13);
    if (!is_field_value(out.reason)) return {bad, "control byte in reason phrase"};
  }
  if (auto e = parse_fields(head.substr(eol + 2), limits.header_fields, bad, bad, out.fields))
    return e;

  int lengths = 0, codings = 0;
  std::uint64_t length = 0;
  bool chunked_last = false, others = false, chunked_twice = false;
  bool conn_close = false, conn_keep_alive = false;
  for (const auto& f : out.fields) {
    if (iequals(f.name, "content-length")) {
      // Identical repeated values (even as a list "5, 5") are tolerated from upstreams, as RFC
      // 9110 8.6 allows; differing ones are not.
      bool ok = true;
      int elements = 0;
      for_each_token(f.value, [&](std::string_view t) {
        std::uint64_t v = 0;
        if (!parse_content_length(t, v) || (lengths > 0 && v != length)) ok = false;
        length = v;
        ++lengths;
        ++elements;
      });
      // A field with no value at all ("", ",") is as invalid as a non-numeric one.
      if (!ok || elements == 0) return {bad, "invalid or conflicting Content-Length"};
    } else if (iequals(f.name, "transfer-encoding")) {
      ++codings;
      for_each_token(f.value, [&](std::string_view t) {
        bool is_chunked = iequals(t, "chunked");
        if (is_chunked && chunked_last) chunked_twice = true;
        if (!is_chunked) others = true;
        chunked_last = is_chunked;
      });
    } else if (iequals(f.name, "connection")) {
      for_each_token(f.value, [&](std::string_view t) {
        if (iequals(t, "close")) conn_close = true;
        if (iequals(t, "keep-alive")) conn_keep_alive = true;
      });
    }
  }
  out.keep_alive = out.version_minor == 1 ? !conn_close : (conn_keep_alive && !conn_close);
  out.content_length = length;

  // RFC 9112 section 6.3 rules 1 and 2: HEAD, 1xx, 204, 304 and a 2xx to CONNECT (the
  // connection becomes a tunnel after the head) have no body, whatever the fields say.
  bool no_body = (status >= 100 && status < 200) || status == 204 || status == 304 ||
                 request_method == "HEAD" ||
                 (request_method == "CONNECT" && status >= 200 && status < 300);
  if (no_body) {
    out.body = framing::none;
    return {};
  }
  if (codings > 0) {
    if (lengths > 0) return {bad, "both Content-Length and Transfer-Encoding"};
    if (out.version_minor == 0) return {bad, "Transfer-Encoding in an HTTP/1.0 response"};
    if (chunked_twice) return {bad, "chunked applied twice"};
    if (chunked_last && others) return {bad, "unsupported transfer coding before chunked"};
    out.body = chunked_last ? framing::chunked : framing::until_close;
    if (!chunked_last) out.keep_alive = false;
    return {};
  }
  if (lengths > 0) {
    out.body = framing::content_length;
    return {};
  }
  out.body = framing::until_close;
  out.keep_alive = false;
  return {};
}

}  // namespace egressd::http
