#include "egressd/http/forward.hpp"

#include <string>

namespace egressd::http {
namespace {

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

// X-Authenticated-User is meant for this proxy (the security service names the user for our
// logs); passing it on would tell every origin who is browsing.
bool is_removed(const std::vector<field>& fields, std::string_view name) {
  return is_hop_by_hop(name) || listed_in_connection(fields, name) ||
         iequals(name, "x-authenticated-user");
}

void append_field(std::string& out, std::string_view name, std::string_view value) {
  out.append(name);
  out.append(": ");
  out.append(value);
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
  append_field(out, "Host", req.tgt.host_header(80));

  std::string xff;
  for (const auto& f : req.fields) {
    if (iequals(f.name, "host") || is_removed(req.fields, f.name)) continue;
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
    if (!xff.empty()) xff.append(", ");
    xff.append(opt.client_ip);
    append_field(out, "X-Forwarded-For", xff);
  }
  if (opt.via) {
    std::string via = req.version_minor == 0 ? "1.0 " : "1.1 ";
    via.append(opt.via_name);
    append_field(out, "Via", via);
  }
  if (req.body == framing::content_length) {
    append_field(out, "Content-Length", std::to_string(req.content_length));
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
  out.append(std::to_string(resp.status));
  out.push_back(' ');
  out.append(resp.reason);
  out.append("\r\n");
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
    if (is_removed(resp.fields, f.name)) continue;
    append_field(out, f.name, f.value);
  }
  if (opt.via) {
    std::string via = resp.version_minor == 0 ? "1.0 " : "1.1 ";
    via.append(opt.via_name);
    append_field(out, "Via", via);
  }
  if (opt.to_client == framing::content_length) {
    append_field(out, "Content-Length", std::to_string(resp.content_length));
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
  for (const auto& f : resp.fields) {
    if (is_removed(resp.fields, f.name)) continue;
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
