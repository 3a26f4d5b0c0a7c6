// The effective config in the file schema, for --check-config. Every key is written, so the output
// shows the defaults an operator did not set, and load_yaml reads it back to an equal config.
#include <cstdio>

#include "egressd/config/config.hpp"
#include "values.hpp"

namespace egressd::config {
namespace {

// Double-quoted YAML scalar: the only style in which any byte string (a path with ": " or "#",
// a leading "*", a value like "off" or "1") reads back as exactly itself.
std::string quote(std::string_view s) {
  std::string out = "\"";
  for (char ch : s) {
    const auto c = static_cast<unsigned char>(ch);
    if (ch == '"' || ch == '\\') {
      out += '\\';
      out += ch;
    } else if (c < 0x20 || c == 0x7f) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\x%02x", c);
      out += buf;
    } else {
      out += ch;
    }
  }
  out += '"';
  return out;
}

std::string cidr_list(const acl::cidr_set& set) {
  std::string out = "[";
  for (const auto& c : set.items()) {
    if (out.size() > 1) out += ", ";
    out += quote(c.to_string());
  }
  return out + "]";
}

std::string port_list(const acl::port_set& set) {
  std::string out = "[";
  for (const auto& r : set.ranges()) {
    if (out.size() > 1) out += ", ";
    if (r.lo == r.hi) {
      out += std::to_string(r.lo);
    } else {
      out += quote(std::to_string(r.lo) + "-" + std::to_string(r.hi));
    }
  }
  return out + "]";
}

std::string string_list(const std::vector<std::string>& items) {
  std::string out = "[";
  for (const auto& s : items) {
    if (out.size() > 1) out += ", ";
    out += quote(s);
  }
  return out + "]";
}

std::string boolean(bool b) {
  return b ? "true" : "false";
}

void tls_block(std::string& y, const std::string& indent, const tls_settings& tls) {
  y += indent + "tls:\n";
  y += indent + "  cert: " + quote(tls.cert_file) + "\n";
  y += indent + "  key: " + quote(tls.key_file) + "\n";
  if (!tls.client_ca_file.empty()) y += indent + "  client_ca: " + quote(tls.client_ca_file) + "\n";
  if (!tls.client_crl_file.empty()) {
    y += indent + "  client_crl: " + quote(tls.client_crl_file) + "\n";
  }
}

}  // namespace

std::string to_yaml(const config& cfg) {
  std::string y;
  auto line = [&](std::string_view indent, std::string_view key, const std::string& value) {
    y += indent;
    y += key;
    y += ": ";
    y += value;
    y += '\n';
  };
  y += "# effective configuration, source: " + quote(cfg.source) + "\n";
  line("", "version", std::to_string(cfg.version));
  line("", "workers", std::to_string(cfg.workers));
  y += cfg.listeners.empty() ? "listeners: []\n" : "listeners:\n";
  for (const auto& l : cfg.listeners) {
    line("  - ", "address", quote(l.address.to_string()));
    line("    ", "proxy_protocol", quote(detail::to_name(l.proxy_protocol)));
    line("    ", "trusted_proxies", cidr_list(l.trusted_proxies));
    if (l.tls) tls_block(y, "    ", *l.tls);
  }
  y += "admin:\n";
  line("  ", "address", quote(cfg.admin.address.to_string()));
  if (cfg.admin.tls) tls_block(y, "  ", *cfg.admin.tls);
  if (cfg.admin.health_address) {
    line("  ", "health_address", quote(cfg.admin.health_address->to_string()));
  }
  y += "gates:\n";
  // sources holds the file's CIDRs too: this is the list as it will be evaluated, and reading
  // it back with the file merges the same entries again.
  line("  ", "sources", cidr_list(cfg.gate.sources));
  if (!cfg.gate.sources_file.empty()) line("  ", "sources_file", quote(cfg.gate.sources_file));
  line("  ", "connect_ports", port_list(cfg.gate.connect_ports));
  line("  ", "http_ports", port_list(cfg.gate.http_ports));
  line("  ", "deny_ip_literals", boolean(cfg.gate.deny_ip_literals));
  y += "destinations:\n";
  line("  ", "deny_special", boolean(cfg.dest.deny_special));
  line("  ", "allow", cidr_list(cfg.dest.allow));
  line("  ", "deny", cidr_list(cfg.dest.deny));
  y += cfg.rules.empty() ? "rules: []\n" : "rules:\n";
  for (const auto& r : cfg.rules) {
    line("  - ", "name", quote(r.name));
    line("    ", "action", r.action == acl::rule_action::allow ? "allow" : "deny");
    // With a file, sources already holds its CIDRs (an empty file leaves nothing to print).
    if (r.sources && (!r.sources->empty() || r.sources_file.empty())) {
      line("    ", "sources", cidr_list(*r.sources));
    }
    if (!r.sources_file.empty()) line("    ", "sources_file", quote(r.sources_file));
    if (!r.domains.empty()) line("    ", "domains", string_list(r.domains));
    if (r.destinations) line("    ", "destinations", cidr_list(*r.destinations));
    if (r.ports) line("    ", "ports", port_list(*r.ports));
    if (r.methods != 0) {
      std::vector<std::string> methods;
      if (r.methods & static_cast<std::uint8_t>(acl::method_class::connect)) {
        methods.emplace_back("connect");
      }
      if (r.methods & static_cast<std::uint8_t>(acl::method_class::http)) {
        methods.emplace_back("http");
      }
      line("    ", "methods", string_list(methods));
    }
    if (!r.vpce_ids.empty()) line("    ", "vpce_ids", string_list(r.vpce_ids));
    if (!r.client_identities.empty()) {
      line("    ", "client_identities", string_list(r.client_identities));
    }
    if (r.bind) line("    ", "bind", quote(r.bind->to_string()));
    if (r.report_only) line("    ", "report_only", "true");
  }
  y += "egress:\n";
  line("  ", "bind", quote(cfg.egress_bind ? cfg.egress_bind->to_string() : ""));
  y += "headers:\n";
  line("  ", "x_forwarded_for", quote(detail::to_name(cfg.hdr.x_forwarded_for)));
  line("  ", "via", boolean(cfg.hdr.via));
  line("  ", "via_name", quote(cfg.hdr.via_name));
  const auto& t = cfg.timeout;
  y += "timeouts:\n";
  line("  ", "header", detail::format_duration(t.header));
  line("  ", "keepalive_idle", detail::format_duration(t.keepalive_idle));
  line("  ", "connect", detail::format_duration(t.connect));
  line("  ", "dns", detail::format_duration(t.dns));
  line("  ", "response_header", detail::format_duration(t.response_header));
  line("  ", "idle", detail::format_duration(t.idle));
  line("  ", "tunnel_idle", detail::format_duration(t.tunnel_idle));
  line("  ", "tls_handshake", detail::format_duration(t.tls_handshake));
  const auto& lim = cfg.limit;
  y += "limits:\n";
  line("  ", "request_line", detail::format_size(lim.request_line));
  line("  ", "header_block", detail::format_size(lim.header_block));
  line("  ", "header_fields", std::to_string(lim.header_fields));
  line("  ", "max_connections", std::to_string(lim.max_connections));
  line("  ", "buffer_size", detail::format_size(lim.buffer_size));
  y += "relay:\n";
  line("  ", "splice", boolean(cfg.relay.splice));
  line("  ", "pipe_size", detail::format_size(cfg.relay.pipe_size));
  line("  ", "max_pipes", std::to_string(cfg.relay.max_pipes));
  y += "upstream:\n";
  line("  ", "keepalive", boolean(cfg.upstream.keepalive));
  line("  ", "idle_timeout", detail::format_duration(cfg.upstream.idle_timeout));
  line("  ", "max_idle", std::to_string(cfg.upstream.max_idle));
  line("  ", "max_idle_per_host", std::to_string(cfg.upstream.max_idle_per_host));
  y += "dns:\n";
  line("  ", "servers", string_list(cfg.dns.servers));
  line("  ", "cache_size", std::to_string(cfg.dns.cache_size));
  line("  ", "min_ttl", detail::format_duration(cfg.dns.min_ttl));
  line("  ", "max_ttl", detail::format_duration(cfg.dns.max_ttl));
  line("  ", "negative_ttl", detail::format_duration(cfg.dns.negative_ttl));
  y += "log:\n";
  line("  ", "level", quote(cfg.log.level));
  line("  ", "format", quote(detail::to_name(cfg.log.format)));
  line("  ", "access", quote(cfg.log.access));
  y += "drain:\n";
  line("  ", "delay", detail::format_duration(cfg.drain_.delay));
  line("  ", "timeout", detail::format_duration(cfg.drain_.timeout));
  return y;
}

}  // namespace egressd::config
