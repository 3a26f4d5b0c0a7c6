#include "validate.hpp"

#include "values.hpp"

namespace egressd::config::detail {
namespace {

std::string indexed(std::string_view base, std::size_t i) {
  return std::string(base) + "[" + std::to_string(i) + "]";
}

void check_duration(std::vector<issue>& out, const std::string& path, duration d) {
  if (d.count() <= 0) {
    out.push_back({path, {}, "must be greater than 0"});
  } else if (d > max_duration) {
    out.push_back({path, {}, "must be at most 24h, got " + format_duration(d)});
  }
}

void check_size(std::vector<issue>& out, const std::string& path, std::size_t v, std::size_t lo,
                std::size_t hi) {
  if (v < lo || v > hi) {
    out.push_back({path,
                   {},
                   "must be between " + human_size(lo) + " and " + human_size(hi) + ", got " +
                       human_size(v)});
  }
}

void check_count(std::vector<issue>& out, const std::string& path, std::size_t v, std::size_t lo,
                 std::size_t hi) {
  if (v < lo || v > hi) {
    out.push_back({path,
                   {},
                   "must be between " + std::to_string(lo) + " and " + std::to_string(hi) +
                       ", got " + std::to_string(v)});
  }
}

// For durations where 0 means "off".
void check_duration_or_zero(std::vector<issue>& out, const std::string& path, duration d) {
  if (d.count() < 0) {
    out.push_back({path, {}, "must not be negative"});
  } else if (d > max_duration) {
    out.push_back({path, {}, "must be at most 24h, got " + format_duration(d)});
  }
}

bool same(const endpoint& a, const endpoint& b) {
  // Port 0 asks the kernel for a fresh port each time, so two of them never collide.
  return a.port != 0 && a.port == b.port && a.host == b.host;
}

}  // namespace

bool path_within(const std::string& path, const std::string& prefix) {
  if (!path.starts_with(prefix)) return false;
  if (path.size() == prefix.size()) return true;
  const char next = path[prefix.size()];
  return next == '.' || next == '[';
}

static void check_tls(const tls_settings& tls, const std::string& base, std::vector<issue>& out) {
  if (tls.cert_file.empty()) out.push_back({base + ".cert", {}, "required when tls is set"});
  if (tls.key_file.empty()) out.push_back({base + ".key", {}, "required when tls is set"});
  // A CRL without client_ca would check nothing: refuse it rather than let an operator believe
  // revoked certificates are refused.
  if (!tls.client_crl_file.empty() && tls.client_ca_file.empty()) {
    out.push_back(
        {base + ".client_crl", {}, "needs client_ca (only client certificates are checked)"});
  }
}

std::vector<issue> validate(const config& cfg) {
  std::vector<issue> out;
  if (cfg.version != 1) {
    out.push_back(
        {"version", {}, "unsupported version " + std::to_string(cfg.version) + "; expected 1"});
  }
  if (cfg.workers > max_workers) {
    out.push_back({"workers",
                   {},
                   "must be between 0 and " + std::to_string(max_workers) + ", got " +
                       std::to_string(cfg.workers)});
  }

  if (cfg.listeners.empty()) {
    out.push_back({"listeners", {}, "at least one listener is required"});
  }
  for (std::size_t i = 0; i < cfg.listeners.size(); ++i) {
    const auto& l = cfg.listeners[i];
    const std::string base = indexed("listeners", i);
    for (std::size_t j = 0; j < i; ++j) {
      if (same(l.address, cfg.listeners[j].address)) {
        out.push_back({base + ".address",
                       {},
                       "duplicate listener address (same as " + indexed("listeners", j) + ")"});
        break;
      }
    }
    // Without trusted peers every PROXY header would be refused (required) or ignored
    // (optional); trusting everyone instead would let any client forge its source address.
    if (l.proxy_protocol != proxy_protocol_mode::off && l.trusted_proxies.empty()) {
      out.push_back({base + ".trusted_proxies",
                     {base + ".proxy_protocol"},
                     "must not be empty when proxy_protocol is optional or required"});
    }
    if (l.tls) check_tls(*l.tls, base + ".tls", out);
  }
  const auto& admin = cfg.admin;
  for (std::size_t j = 0; j < cfg.listeners.size(); ++j) {
    if (same(admin.address, cfg.listeners[j].address)) {
      out.push_back(
          {"admin.address", {}, "same address as " + indexed("listeners", j) + ".address"});
      break;
    }
  }
  if (admin.tls) check_tls(*admin.tls, "admin.tls", out);
  if (admin.health_address) {
    if (same(*admin.health_address, admin.address)) {
      out.push_back({"admin.health_address", {}, "same address as admin.address"});
    }
    for (std::size_t j = 0; j < cfg.listeners.size(); ++j) {
      if (same(*admin.health_address, cfg.listeners[j].address)) {
        out.push_back({"admin.health_address",
                       {},
                       "same address as " + indexed("listeners", j) + ".address"});
        break;
      }
    }
  }

  // An empty gate is safe but useless; far more often it is a list that went missing.
  if (cfg.gate.sources.empty()) {
    if (cfg.gate.sources_file.empty()) {
      out.push_back({"gates.sources", {}, "must not be empty: no client could use the proxy"});
    } else {
      out.push_back({"gates.sources_file",
                     {"gates.sources"},
                     "leaves the source gate empty: no client could use the proxy"});
    }
  }

  for (std::size_t i = 0; i < cfg.rules.size(); ++i) {
    const auto& r = cfg.rules[i];
    const std::string base = indexed("rules", i);
    for (std::size_t j = 0; j < i; ++j) {
      if (r.name == cfg.rules[j].name) {
        out.push_back(
            {base + ".name", {}, "duplicate rule name (same as " + indexed("rules", j) + ")"});
        break;
      }
    }
    if (r.bind && r.action != acl::rule_action::allow) {
      out.push_back({base + ".bind", {base + ".action"}, "only allowed on allow rules"});
    }
    // An allow rule that only reports would change nothing and read as a permission.
    if (r.report_only && r.action != acl::rule_action::deny) {
      out.push_back({base + ".report_only", {base + ".action"}, "only allowed on deny rules"});
    }
  }

  const auto& t = cfg.timeout;
  check_duration(out, "timeouts.header", t.header);
  check_duration(out, "timeouts.keepalive_idle", t.keepalive_idle);
  check_duration(out, "timeouts.connect", t.connect);
  check_duration(out, "timeouts.dns", t.dns);
  check_duration(out, "timeouts.response_header", t.response_header);
  check_duration(out, "timeouts.idle", t.idle);
  check_duration(out, "timeouts.tunnel_idle", t.tunnel_idle);

  const auto& lim = cfg.limit;
  check_size(out, "limits.request_line", lim.request_line, 256, mib);
  check_size(out, "limits.header_block", lim.header_block, kib, mib);
  // The request line is part of the header block, so a smaller block could never hold it. An
  // out-of-range request_line is reported once, above, not again here.
  if (lim.header_block < lim.request_line && lim.request_line <= mib) {
    out.push_back({"limits.header_block",
                   {"limits.request_line"},
                   "must be at least limits.request_line (" + human_size(lim.request_line) +
                       "), got " + human_size(lim.header_block)});
  }
  check_count(out, "limits.header_fields", lim.header_fields, 1, 10000);
  check_count(out, "limits.max_connections", lim.max_connections, 1, 1000000);
  check_size(out, "limits.buffer_size", lim.buffer_size, 4 * kib, 16 * mib);

  check_size(out, "relay.pipe_size", cfg.relay.pipe_size, 4 * kib, 16 * mib);
  check_count(out, "relay.max_pipes", cfg.relay.max_pipes, 0, 100000);
  check_duration(out, "upstream.idle_timeout", cfg.upstream.idle_timeout);
  check_count(out, "upstream.max_idle", cfg.upstream.max_idle, 0, 100000);
  check_count(out, "upstream.max_idle_per_host", cfg.upstream.max_idle_per_host, 1, 10000);
  check_count(out, "dns.cache_size", cfg.dns.cache_size, 0, 1000000);
  check_duration_or_zero(out, "dns.min_ttl", cfg.dns.min_ttl);
  check_duration(out, "dns.max_ttl", cfg.dns.max_ttl);
  // Out-of-range values are reported once, above, not again here.
  if (cfg.dns.max_ttl.count() > 0 && cfg.dns.max_ttl < cfg.dns.min_ttl &&
      cfg.dns.min_ttl <= max_duration) {
    out.push_back({"dns.max_ttl",
                   {"dns.min_ttl"},
                   "must be at least dns.min_ttl (" + format_duration(cfg.dns.min_ttl) + "), got " +
                       format_duration(cfg.dns.max_ttl)});
  }
  check_duration_or_zero(out, "dns.negative_ttl", cfg.dns.negative_ttl);

  check_duration(out, "drain.delay", cfg.drain_.delay);
  check_duration(out, "drain.timeout", cfg.drain_.timeout);
  return out;
}

}  // namespace egressd::config::detail
