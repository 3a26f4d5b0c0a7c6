#include "egressd/http/forward.hpp"

#include <array>
#include <charconv>
#include <cstdint>
#include <string>

namespace egressd::http {
namespace {

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

// Content_Length and Transfer_Encoding are not framing for us (a plain field), but CGI-style
// servers fold '_' and '-' together (CONTENT_LENGTH) and would read them as framing: a request
// smuggling vector with no legitimate use, so they are not passed on.
bool underscore_framing(std::string_view name) noexcept {
  if (name.size() != 14 && name.size() != 17) return false;
  if (name.find('_') == std::string_view::npos) return false;
  std::string_view want = name.size() == 14 ? "content-length" : "transfer-encoding";
  for (std::size_t i = 0; i < name.size(); ++i) {
    char c = name[i] == '_' ? '-' : name[i];
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
    if (c != want[i]) return false;
  }
  return true;
}

// X-Authenticated-User is meant for this proxy (the security service names the user for our
// logs); passing it on would tell every origin who is browsing.
//
// The Connection tokens are gathered once per head (as listed_in_connection splits them: comma
// list, OWS trimmed, empty elements skipped) rather than by scanning every field again for each
// field; a head with more tokens than fit falls back to listed_in_connection.
class removed_fields {
 public:
  explicit removed_fields(const std::vector<field>& fields) : fields_(fields) {
    for (const auto& f : fields) {
      if (!iequals(f.name, "connection")) continue;
      std::string_view list = f.value;
      while (!list.empty()) {
        auto comma = list.find(',');
        auto item = trim(list.substr(0, comma));
        if (!item.empty()) {
          if (count_ == tokens_.size()) {
            overflow_ = true;
            return;
          }
          tokens_[count_++] = item;
        }
        if (comma == std::string_view::npos) break;
        list.remove_prefix(comma + 1);
      }
    }
  }

  bool operator()(std::string_view name) const noexcept {
    return is_hop_by_hop(name) || listed(name) || iequals(name, "x-authenticated-user") ||
           underscore_framing(name);
  }

 private:
  bool listed(std::string_view name) const noexcept {
    if (overflow_) return listed_in_connection(fields_, name);
    for (std::size_t i = 0; i < count_; ++i) {
      if (iequals(tokens_[i], name)) return true;
    }
    return false;
  }

  const std::vector<field>& fields_;
  std::array<std::string_view, 16> tokens_;
  std::size_t count_ = 0;
  bool overflow_ = false;
};

void append_field(std::string& out, std::string_view name, std::string_view value) {
  out.append(name);
  out.append(": ");
  out.append(value);
  out.append("\r\n");
}

// n in decimal, as std::to_string writes it, without a temporary string.
void append_decimal(std::string& out, std::uint64_t n) {
  char buf[20];
  auto r = std::to_chars(buf, buf + sizeof buf, n);
  out.append(buf, static_cast<std::size_t>(r.ptr - buf));
}

void append_decimal_field(std::string& out, std::string_view name, std::uint64_t n) {
  out.append(name);
  out.append(": ");
  append_decimal(out, n);
  out.append("\r\n");
}

// "Via: 1.x name": the protocol version the message was received with, then our pseudonym.
void append_via(std::string& out, int version_minor, std::string_view via_name) {
  out.append(version_minor == 0 ? "Via: 1.0 " : "Via: 1.1 ");
  out.append(via_name);
  out.append("\r\n");
}

std::string_view status_text(int status) {
  switch (status) {
    case 400:
      return "Bad Request";
    case 403:
      return "Forbidden";
    case 405:
      return "Method Not Allowed";
    case 408:
      return "Request Timeout";
    case 414:
      return "URI Too Long";
    case 417:
      return "Expectation Failed";
    case 431:
      return "Request Header Fields Too Large";
    case 500:
      return "Internal Server Error";
    case 501:
      return "Not Implemented";
    case 502:
      return "Bad Gateway";
    case 503:
      return "Service Unavailable";
    case 504:
      return "Gateway Timeout";
    case 505:
      return "HTTP Version Not Supported";
    case 508:
      return "Loop Detected";
    default:
      return "Error";
  }
}

}  // namespace

bool via_has_loop(const std::vector<field>& fields, std::string_view via_name) noexcept {
  for (const auto& f : fields) {
    if (!iequals(f.name, "via")) continue;
    // Via = #( received-protocol RWS received-by [ RWS comment ] )
    std::string_view list = f.value;
    while (!list.empty()) {
      auto comma = list.find(',');
      auto item = trim(list.substr(0, comma));
      auto sp = item.find_first_of(" \t");
      if (sp != std::string_view::npos) {
        auto by = trim(item.substr(sp + 1));
        by = by.substr(0, by.find_first_of(" \t"));
        if (iequals(by, via_name)) return true;
      }
      if (comma == std::string_view::npos) break;
      list.remove_prefix(comma + 1);
    }
  }
  return false;
}

void build_request(const request_head& req, const forward_options& opt, std::string& out) {
  out.clear();
  out.reserve(512);
  out.append(req.method);
  out.push_back(' ');
  out.append(req.tgt.path);
  out.append(" HTTP/1.1\r\n");
  // Host from the target: what req.tgt.host_header(80) returns, written in place.
  out.append("Host: ");
  if (req.tgt.host_is_v6) {
    out.push_back('[');
    out.append(req.tgt.host);
    out.push_back(']');
  } else {
    out.append(req.tgt.host);
  }
  if (req.tgt.port != 80) {
    out.push_back(':');
    append_decimal(out, req.tgt.port);
  }
  out.append("\r\n");

  const removed_fields is_removed(req.fields);
  std::string xff;  // the received X-Forwarded-For values; stays empty when there are none
  for (const auto& f : req.fields) {
    if (iequals(f.name, "host") || is_removed(f.name)) continue;
    if (iequals(f.name, "x-forwarded-for") && opt.xff != xff_policy::off) {
      if (opt.xff == xff_policy::append) {
        // Several received fields are folded into one list, in order, as RFC 9110 5.3 allows.
        if (!xff.empty()) xff.append(", ");
        xff.append(f.value);
      }
      continue;
    }
    append_field(out, f.name, f.value);
  }
  if (opt.xff == xff_policy::append || opt.xff == xff_policy::replace) {
    out.append("X-Forwarded-For: ");
    if (!xff.empty()) {
      out.append(xff);
      out.append(", ");
    }
    out.append(opt.client_ip);
    out.append("\r\n");
  }
  if (opt.via) append_via(out, req.version_minor, opt.via_name);
  if (req.body == framing::content_length) {
    append_decimal_field(out, "Content-Length", req.content_length);
  } else if (req.body == framing::chunked) {
    append_field(out, "Transfer-Encoding", "chunked");
  }
  if (!opt.upstream_keep_alive) append_field(out, "Connection", "close");
  out.append("\r\n");
}

void build_response(const response_head& resp, const response_options& opt, std::string& out) {
  out.clear();
  out.reserve(512);
  out.append("HTTP/1.1 ");
  append_decimal(out, static_cast<std::uint64_t>(resp.status));
  out.push_back(' ');
  out.append(resp.reason);
  out.append("\r\n");
  const removed_fields is_removed(resp.fields);
  for (const auto& f : resp.fields) {
    if (opt.head_only && iequals(f.name, "content-length")) {
      // HEAD and 304 carry the length of the body they do not send: metadata, kept as is.
      append_field(out, f.name, f.value);
      continue;
    }
    // A transfer coding other than chunked (e.g. gzip alone) leaves the body close-delimited and
    // still coded: egressd relays those bytes as they are, so the field that says how to decode
    // them must go with them (RFC 9112 6.1).
    if (resp.body == framing::until_close && iequals(f.name, "transfer-encoding")) {
      append_field(out, f.name, f.value);
      continue;
    }
    if (is_removed(f.name)) continue;
    append_field(out, f.name, f.value);
  }
  if (opt.via) append_via(out, resp.version_minor, opt.via_name);
  if (opt.to_client == framing::content_length) {
    append_decimal_field(out, "Content-Length", resp.content_length);
  } else if (opt.to_client == framing::chunked) {
    append_field(out, "Transfer-Encoding", "chunked");
  }
  if (opt.close) {
    append_field(out, "Connection", "close");
  } else if (opt.client_version_minor == 0) {
    append_field(out, "Connection", "keep-alive");
  }
  out.append("\r\n");
}

void build_interim(const response_head& resp, std::string& out) {
  out.clear();
  out.append("HTTP/1.1 ");
  out.append(std::to_string(resp.status));
  out.push_back(' ');
  out.append(resp.reason);
  out.append("\r\n");
  const removed_fields is_removed(resp.fields);
  for (const auto& f : resp.fields) {
    if (is_removed(f.name)) continue;
    append_field(out, f.name, f.value);
  }
  out.append("\r\n");
}

std::string error_response(proxy_error err, std::string_view detail, bool close,
                           std::string_view proxy_name) {
  const auto& info = describe(err);
  int status = info.status != 0 ? info.status : 500;
  std::string body(info.reason);
  if (!detail.empty()) {
    body.append(": ");
    body.append(detail);
  }
  body.append("\n");
  std::string out = "HTTP/1.1 " + std::to_string(status) + " ";
  out.append(status_text(status));
  out.append("\r\n");
  std::string ps(proxy_name);
  if (!info.proxy_status.empty()) {
    ps.append("; error=");
    ps.append(info.proxy_status);
  }
  // RFC 9209 details is an sf-string (RFC 8941 3.3.3): printable ASCII with '"' and '\\'
  // escaped. Details can carry system messages (strerror text), so anything else becomes '?':
  // a CR or LF here would otherwise end the field and inject a header line.
  if (!detail.empty()) {
    ps.append("; details=\"");
    for (char c : detail) {
      auto u = static_cast<unsigned char>(c);
      if (c == '"' || c == '\\') ps.push_back('\\');
      ps.push_back(u >= 0x20 && u < 0x7f ? c : '?');
    }
    ps.append("\"");
  }
  append_field(out, "Proxy-Status", ps);
  append_field(out, "Content-Type", "text/plain; charset=utf-8");
  append_field(out, "Content-Length", std::to_string(body.size()));
  append_field(out, "Cache-Control", "no-store");
  if (close) append_field(out, "Connection", "close");
  out.append("\r\n");
  out.append(body);
  return out;
}

}  // namespace egressd::http
