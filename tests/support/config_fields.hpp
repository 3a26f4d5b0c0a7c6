#pragma once
// An independent description of every field of egressd::config::config as (name, value) pairs,
// so that equality checks on configs do not lean on to_yaml (whose round trip is what they
// test). Shared by tests/unit/config_test.cpp (diff) and fuzz/fuzz_config.cpp (describe).
//
// Left out on purpose:
//  - source: the file name a config was read from; a config and its printed-and-reloaded copy
//    differ in it by design.
//  - watched_files: derived by load_yaml from the source-list files it read, not a key; a config
//    built by hand (or by defaults()) has none even when it names a sources_file. The fuzzer
//    appends it itself, since it only ever compares configs that load_yaml produced.
//
// A new field in config belongs here (and in the DiffSeesEveryField mutations of config_test).
#include <cstddef>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "egressd/acl/cidr.hpp"
#include "egressd/acl/port_set.hpp"
#include "egressd/config/config.hpp"

namespace egressd::test_support {

using field_list = std::vector<std::pair<std::string, std::string>>;

// "[10.0.0.0/8,fd00::/8,]"
inline std::string cidrs(const acl::cidr_set& s) {
  std::string out = "[";
  for (const auto& c : s.items()) out += c.to_string() + ",";
  return out + "]";
}

// "[443-443,8000-8100,]"
inline std::string ports(const acl::port_set& s) {
  std::string out = "[";
  for (const auto& r : s.ranges()) out += std::to_string(r.lo) + "-" + std::to_string(r.hi) + ",";
  return out + "]";
}

// "a,b,"
inline std::string list(const std::vector<std::string>& items) {
  std::string out;
  for (const auto& v : items) out += v + ",";
  return out;
}

// "cert|key|client_ca|client_crl", or "none"
inline std::string tls(const std::optional<config::tls_settings>& t) {
  return t ? t->cert_file + "|" + t->key_file + "|" + t->client_ca_file + "|" + t->client_crl_file
           : "none";
}

// Every field but source and watched_files (see above), in declaration order; list elements are
// named with their index ("listeners[0].address", "rules[1].ports").
inline field_list config_fields(const config::config& c) {
  field_list f;
  auto add = [&](std::string name, std::string value) {
    f.emplace_back(std::move(name), std::move(value));
  };
  auto num = [](auto v) { return std::to_string(v); };
  add("version", num(c.version));
  add("workers", num(c.workers));
  add("listeners.size", num(c.listeners.size()));
  for (std::size_t i = 0; i < c.listeners.size(); ++i) {
    const auto& l = c.listeners[i];
    const std::string p = "listeners[" + num(i) + "].";
    add(p + "address", l.address.host + " " + num(l.address.port));
    add(p + "proxy_protocol", num(static_cast<int>(l.proxy_protocol)));
    add(p + "trusted_proxies", cidrs(l.trusted_proxies));
    add(p + "tls", tls(l.tls));
  }
  add("admin", c.admin.address.host + " " + num(c.admin.address.port));
  add("admin.tls", tls(c.admin.tls));
  add("admin.health_address",
      c.admin.health_address ? c.admin.health_address->to_string() : "none");
  add("gates.sources", cidrs(c.gate.sources));
  add("gates.sources_file", c.gate.sources_file);
  add("gates.connect_ports", ports(c.gate.connect_ports));
  add("gates.http_ports", ports(c.gate.http_ports));
  add("gates.deny_ip_literals", num(c.gate.deny_ip_literals));
  add("destinations.deny_special", num(c.dest.deny_special));
  add("destinations.allow", cidrs(c.dest.allow));
  add("destinations.deny", cidrs(c.dest.deny));
  add("rules.size", num(c.rules.size()));
  for (std::size_t i = 0; i < c.rules.size(); ++i) {
    const auto& r = c.rules[i];
    const std::string p = "rules[" + num(i) + "].";
    add(p + "name", r.name);
    add(p + "action", num(static_cast<int>(r.action)));
    add(p + "sources", r.sources ? cidrs(*r.sources) : "any");
    add(p + "domains", list(r.domains));
    add(p + "destinations", r.destinations ? cidrs(*r.destinations) : "any");
    add(p + "ports", r.ports ? ports(*r.ports) : "any");
    add(p + "methods", num(r.methods));
    add(p + "vpce_ids", list(r.vpce_ids));
    add(p + "client_identities", list(r.client_identities));
    add(p + "bind", r.bind ? r.bind->to_string() : "none");
    add(p + "report_only", num(r.report_only));
    add(p + "sources_file", r.sources_file);
  }
  add("egress.bind", c.egress_bind ? c.egress_bind->to_string() : "none");
  add("headers.x_forwarded_for", num(static_cast<int>(c.hdr.x_forwarded_for)));
  add("headers.via", num(c.hdr.via));
  add("headers.via_name", c.hdr.via_name);
  const auto& t = c.timeout;
  for (const auto& [name, d] : {std::pair{"header", t.header},
                                {"keepalive_idle", t.keepalive_idle},
                                {"connect", t.connect},
                                {"dns", t.dns},
                                {"response_header", t.response_header},
                                {"idle", t.idle},
                                {"tunnel_idle", t.tunnel_idle},
                                {"tls_handshake", t.tls_handshake}}) {
    add(std::string("timeouts.") + name, num(d.count()));
  }
  add("limits.request_line", num(c.limit.request_line));
  add("limits.header_block", num(c.limit.header_block));
  add("limits.header_fields", num(c.limit.header_fields));
  add("limits.max_connections", num(c.limit.max_connections));
  add("limits.buffer_size", num(c.limit.buffer_size));
  add("relay.splice", num(c.relay.splice));
  add("relay.pipe_size", num(c.relay.pipe_size));
  add("relay.max_pipes", num(c.relay.max_pipes));
  add("upstream.keepalive", num(c.upstream.keepalive));
  add("upstream.idle_timeout", num(c.upstream.idle_timeout.count()));
  add("upstream.max_idle", num(c.upstream.max_idle));
  add("upstream.max_idle_per_host", num(c.upstream.max_idle_per_host));
  add("dns.servers", list(c.dns.servers));
  add("dns.cache_size", num(c.dns.cache_size));
  add("dns.min_ttl", num(c.dns.min_ttl.count()));
  add("dns.max_ttl", num(c.dns.max_ttl.count()));
  add("dns.negative_ttl", num(c.dns.negative_ttl.count()));
  add("log.level", c.log.level);
  add("log.format", num(static_cast<int>(c.log.format)));
  add("log.access", c.log.access);
  add("drain.delay", num(c.drain_.delay.count()));
  add("drain.timeout", num(c.drain_.timeout.count()));
  return f;
}

}  // namespace egressd::test_support
