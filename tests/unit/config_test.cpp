// Config loading: YAML over the defaults, EGRESSD_* overrides, validation, and the round trip
// through to_yaml. Errors are compared as printed ("FILE:LINE: path: message"), since that text
// is what operators see and what --check-config promises.
#include "egressd/config/config.hpp"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "support/config_fields.hpp"

namespace egressd::config {
namespace {

namespace fs = std::filesystem;

constexpr const char* test_file = "t.yaml";

load_result load(const std::string& text) {
  return load_yaml(text, test_file);
}

std::vector<std::string> printed(const std::vector<config_error>& errors) {
  std::vector<std::string> out;
  for (const auto& e : errors) out.push_back(e.to_string());
  return out;
}

std::vector<std::string> errors_of(const std::string& text) {
  return printed(load(text).errors);
}

config load_ok(const std::string& text) {
  auto res = load(text);
  EXPECT_TRUE(res.errors.empty()) << ::testing::PrintToString(printed(res.errors)) << "\n" << text;
  return res.cfg.value_or(defaults());
}

// --- An independent description of every field (tests/support/config_fields.hpp, shared with
// fuzz/fuzz_config.cpp), so equality checks do not lean on to_yaml. ---

using test_support::cidrs;
using test_support::ports;

// Empty when a and b are equal in every field but source; otherwise the differing fields.
std::string diff(const config& a, const config& b) {
  const auto fa = test_support::config_fields(a);
  const auto fb = test_support::config_fields(b);
  std::string out;
  for (std::size_t i = 0; i < std::max(fa.size(), fb.size()); ++i) {
    const auto left = i < fa.size() ? fa[i] : std::pair<std::string, std::string>{"-", "-"};
    const auto right = i < fb.size() ? fb[i] : std::pair<std::string, std::string>{"-", "-"};
    if (left != right) {
      out += left.first + "=" + left.second + " vs " + right.first + "=" + right.second + "\n";
    }
  }
  return out;
}

// Files for the TLS settings: only their readability is checked at load time.
class temp_files {
 public:
  temp_files() {
    dir_ = fs::path(::testing::TempDir()) / ("egressd_config_test_" + std::to_string(::getpid()));
    fs::create_directories(dir_);
    for (const char* name : {"cert.pem", "key.pem", "ca.pem", "egressd.yaml"}) {
      std::ofstream(dir_ / name) << "placeholder\n";
    }
  }
  ~temp_files() {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }
  std::string path(const char* name) const { return (dir_ / name).string(); }
  std::string dir() const { return dir_.string(); }

 private:
  fs::path dir_;
};

const temp_files& files() {
  static const temp_files f;
  return f;
}

// ------------------------------------------------------------------------------------------
// Defaults and the shipped config files

TEST(ConfigDefaults, MatchSpec) {
  const config c = defaults();
  EXPECT_EQ(c.version, 1);
  EXPECT_EQ(c.source, "<defaults>");
  EXPECT_EQ(c.workers, 0u);
  ASSERT_EQ(c.listeners.size(), 1u);
  EXPECT_EQ(c.listeners[0].address.to_string(), "0.0.0.0:3128");
  EXPECT_EQ(c.listeners[0].proxy_protocol, proxy_protocol_mode::off);
  EXPECT_TRUE(c.listeners[0].trusted_proxies.empty());
  EXPECT_FALSE(c.listeners[0].tls);
  EXPECT_EQ(c.admin.address.to_string(), "127.0.0.1:9090");
  EXPECT_EQ(cidrs(c.gate.sources),
            "[127.0.0.0/8,::1/128,10.0.0.0/8,172.16.0.0/12,192.168.0.0/16,fc00::/7,]");
  EXPECT_EQ(ports(c.gate.connect_ports), "[443-443,]");
  EXPECT_EQ(ports(c.gate.http_ports), "[80-80,]");
  EXPECT_TRUE(c.dest.deny_special);
  EXPECT_TRUE(c.dest.allow.empty());
  EXPECT_TRUE(c.dest.deny.empty());
  EXPECT_TRUE(c.rules.empty());
  EXPECT_FALSE(c.egress_bind);
  EXPECT_EQ(c.hdr.x_forwarded_for, xff_mode::append);
  EXPECT_TRUE(c.hdr.via);
  EXPECT_EQ(c.hdr.via_name, "egressd");
  EXPECT_EQ(c.timeout.header, std::chrono::seconds(10));
  EXPECT_EQ(c.timeout.keepalive_idle, std::chrono::seconds(60));
  EXPECT_EQ(c.timeout.connect, std::chrono::seconds(10));
  EXPECT_EQ(c.timeout.dns, std::chrono::seconds(5));
  EXPECT_EQ(c.timeout.response_header, std::chrono::seconds(60));
  EXPECT_EQ(c.timeout.idle, std::chrono::seconds(60));
  EXPECT_EQ(c.timeout.tunnel_idle, std::chrono::seconds(300));
  EXPECT_EQ(c.limit.request_line, 8u * 1024);
  EXPECT_EQ(c.limit.header_block, 64u * 1024);
  EXPECT_EQ(c.limit.header_fields, 100u);
  EXPECT_EQ(c.limit.max_connections, 10000u);
  EXPECT_EQ(c.limit.buffer_size, 64u * 1024);
  EXPECT_TRUE(c.dns.servers.empty());
  EXPECT_EQ(c.dns.cache_size, 10000u);
  EXPECT_EQ(c.dns.min_ttl, std::chrono::seconds(1));
  EXPECT_EQ(c.dns.max_ttl, std::chrono::seconds(300));
  EXPECT_EQ(c.dns.negative_ttl, std::chrono::seconds(5));
  EXPECT_EQ(c.log.level, "info");
  EXPECT_EQ(c.log.format, log_format::json);
  EXPECT_EQ(c.log.access, "stdout");
  EXPECT_EQ(c.drain_.delay, std::chrono::seconds(5));
  EXPECT_EQ(c.drain_.timeout, std::chrono::seconds(90));
}

TEST(ConfigDefaults, MinimalFileKeepsEveryDefault) {
  auto res = load("version: 1\n");
  ASSERT_TRUE(res.errors.empty()) << ::testing::PrintToString(printed(res.errors));
  ASSERT_TRUE(res.cfg);
  EXPECT_EQ(res.cfg->source, test_file);
  EXPECT_EQ(diff(*res.cfg, defaults()), "");
}

TEST(ConfigDefaults, DefaultsAreValid) {
  config c = defaults();
  EXPECT_TRUE(apply_env(c, {}).empty());
}

// The comparison helper must notice a change in any field, or the round-trip tests prove nothing.
TEST(ConfigDefaults, DiffSeesEveryField) {
  const std::vector<std::pair<const char*, std::function<void(config&)>>> mutations = {
      {"version", [](config& c) { c.version = 2; }},
      {"workers", [](config& c) { c.workers = 3; }},
      {"listeners", [](config& c) { c.listeners.push_back({}); }},
      {"listener address", [](config& c) { c.listeners[0].address.port = 1; }},
      {"listener pp",
       [](config& c) { c.listeners[0].proxy_protocol = proxy_protocol_mode::optional; }},
      {"listener trusted",
       [](config& c) { c.listeners[0].trusted_proxies.add(*acl::cidr::parse("10.0.0.0/8")); }},
      {"listener tls",
       [](config& c) {
         c.listeners[0].tls = tls_settings{"a", "b", ""};
       }},
      {"admin", [](config& c) { c.admin.address.host = "::1"; }},
      {"admin tls",
       [](config& c) {
         c.admin.tls = tls_settings{"a", "b", ""};
       }},
      {"admin health",
       [](config& c) {
         c.admin.health_address = endpoint{"::1", 1};
       }},
      {"sources", [](config& c) { c.gate.sources = {}; }},
      {"connect ports",
       [](config& c) {
         c.gate.connect_ports.add({8443, 8443});
       }},
      {"http ports", [](config& c) { c.gate.http_ports = {}; }},
      {"sources_file", [](config& c) { c.gate.sources_file = "/x"; }},
      {"deny_ip_literals", [](config& c) { c.gate.deny_ip_literals = true; }},
      {"deny_special", [](config& c) { c.dest.deny_special = false; }},
      {"dest allow", [](config& c) { c.dest.allow.add(*acl::cidr::parse("10.1.0.0/16")); }},
      {"dest deny", [](config& c) { c.dest.deny.add(*acl::cidr::parse("10.1.0.0/16")); }},
      {"rules", [](config& c) { c.rules.push_back({}); }},
      {"egress bind", [](config& c) { c.egress_bind = acl::parse_address("10.0.0.1"); }},
      {"xff", [](config& c) { c.hdr.x_forwarded_for = xff_mode::remove; }},
      {"via", [](config& c) { c.hdr.via = false; }},
      {"via_name", [](config& c) { c.hdr.via_name = "x"; }},
      {"header", [](config& c) { c.timeout.header = duration(1); }},
      {"keepalive_idle", [](config& c) { c.timeout.keepalive_idle = duration(1); }},
      {"connect", [](config& c) { c.timeout.connect = duration(1); }},
      {"dns", [](config& c) { c.timeout.dns = duration(1); }},
      {"response_header", [](config& c) { c.timeout.response_header = duration(1); }},
      {"idle", [](config& c) { c.timeout.idle = duration(1); }},
      {"tunnel_idle", [](config& c) { c.timeout.tunnel_idle = duration(1); }},
      {"tls_handshake", [](config& c) { c.timeout.tls_handshake = duration(1); }},
      {"request_line", [](config& c) { c.limit.request_line = 1; }},
      {"header_block", [](config& c) { c.limit.header_block = 1; }},
      {"header_fields", [](config& c) { c.limit.header_fields = 1; }},
      {"max_connections", [](config& c) { c.limit.max_connections = 1; }},
      {"buffer_size", [](config& c) { c.limit.buffer_size = 1; }},
      {"splice", [](config& c) { c.relay.splice = false; }},
      {"pipe_size", [](config& c) { c.relay.pipe_size = 1; }},
      {"max_pipes", [](config& c) { c.relay.max_pipes = 1; }},
      {"keepalive", [](config& c) { c.upstream.keepalive = false; }},
      {"idle_timeout", [](config& c) { c.upstream.idle_timeout = duration(1); }},
      {"max_idle", [](config& c) { c.upstream.max_idle = 1; }},
      {"max_idle_per_host", [](config& c) { c.upstream.max_idle_per_host = 1; }},
      {"servers", [](config& c) { c.dns.servers.push_back("10.0.0.2"); }},
      {"cache_size", [](config& c) { c.dns.cache_size = 1; }},
      {"min_ttl", [](config& c) { c.dns.min_ttl = duration(0); }},
      {"max_ttl", [](config& c) { c.dns.max_ttl = duration(1); }},
      {"negative_ttl", [](config& c) { c.dns.negative_ttl = duration(0); }},
      {"level", [](config& c) { c.log.level = "debug"; }},
      {"format", [](config& c) { c.log.format = log_format::squid; }},
      {"access", [](config& c) { c.log.access = "off"; }},
      {"delay", [](config& c) { c.drain_.delay = duration(1); }},
      {"timeout", [](config& c) { c.drain_.timeout = duration(1); }},
  };
  for (const auto& [name, mutate] : mutations) {
    config c = defaults();
    mutate(c);
    EXPECT_NE(diff(defaults(), c), "") << name;
  }

  const std::vector<std::pair<const char*, std::function<void(acl::rule&)>>> rule_mutations = {
      {"name", [](acl::rule& r) { r.name = "x"; }},
      {"action", [](acl::rule& r) { r.action = acl::rule_action::allow; }},
      {"sources", [](acl::rule& r) { r.sources = acl::cidr_set{}; }},
      {"domains", [](acl::rule& r) { r.domains.push_back("a.example"); }},
      {"destinations", [](acl::rule& r) { r.destinations = acl::cidr_set{}; }},
      {"ports", [](acl::rule& r) { r.ports = acl::port_set{}; }},
      {"methods", [](acl::rule& r) { r.methods = 1; }},
      {"bind", [](acl::rule& r) { r.bind = acl::parse_address("10.0.0.1"); }},
      {"vpce_ids", [](acl::rule& r) { r.vpce_ids.push_back("vpce-1"); }},
      {"client_identities", [](acl::rule& r) { r.client_identities.push_back("a"); }},
      {"report_only", [](acl::rule& r) { r.report_only = true; }},
      {"sources_file", [](acl::rule& r) { r.sources_file = "/x"; }},
  };
  config base = defaults();
  base.rules.push_back({});
  for (const auto& [name, mutate] : rule_mutations) {
    config c = base;
    mutate(c.rules[0]);
    EXPECT_NE(diff(base, c), "") << name;
  }
}

TEST(ConfigReference, LoadsAndEqualsDefaults) {
  const std::string path = std::string(EGRESSD_SOURCE_DIR) + "/conf/egressd.yaml";
  auto res = load_file(path);
  ASSERT_TRUE(res.errors.empty()) << ::testing::PrintToString(printed(res.errors));
  ASSERT_TRUE(res.cfg);
  EXPECT_EQ(res.cfg->source, path);
  EXPECT_EQ(diff(*res.cfg, defaults()), "");
}

// Every key to_yaml prints for the defaults (and so conf/egressd.yaml must document).
constexpr std::string_view printed_keys[] = {"version:",
                                             "workers:",
                                             "listeners:",
                                             "address:",
                                             "proxy_protocol:",
                                             "trusted_proxies:",
                                             "admin:",
                                             "gates:",
                                             "sources:",
                                             "connect_ports:",
                                             "http_ports:",
                                             "destinations:",
                                             "deny_special:",
                                             "allow:",
                                             "deny:",
                                             "rules:",
                                             "egress:",
                                             "bind:",
                                             "headers:",
                                             "x_forwarded_for:",
                                             "via:",
                                             "via_name:",
                                             "timeouts:",
                                             "header:",
                                             "keepalive_idle:",
                                             "connect:",
                                             "dns:",
                                             "response_header:",
                                             "idle:",
                                             "tunnel_idle:",
                                             "limits:",
                                             "request_line:",
                                             "header_block:",
                                             "header_fields:",
                                             "max_connections:",
                                             "buffer_size:",
                                             "relay:",
                                             "splice:",
                                             "pipe_size:",
                                             "max_pipes:",
                                             "upstream:",
                                             "keepalive:",
                                             "idle_timeout:",
                                             "max_idle:",
                                             "max_idle_per_host:",
                                             "servers:",
                                             "cache_size:",
                                             "min_ttl:",
                                             "max_ttl:",
                                             "negative_ttl:",
                                             "log:",
                                             "level:",
                                             "format:",
                                             "access:",
                                             "drain:",
                                             "delay:",
                                             "timeout:"};

// Keys of optional blocks (tls, rules, ...): documented in conf/egressd.yaml, absent from the
// defaults.
constexpr std::string_view optional_keys[] = {"tls:",
                                              "cert:",
                                              "key:",
                                              "client_ca:",
                                              "client_crl:",
                                              "sources_file:",
                                              "deny_ip_literals:",
                                              "vpce_ids:",
                                              "client_identities:",
                                              "health_address:",
                                              "tls_handshake:",
                                              "report_only:",
                                              "name:",
                                              "action:",
                                              "domains:",
                                              "ports:",
                                              "methods:"};

TEST(ConfigReference, DocumentsEveryKey) {
  std::ifstream in(std::string(EGRESSD_SOURCE_DIR) + "/conf/egressd.yaml");
  ASSERT_TRUE(in);
  const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  // Optional blocks (tls, rule items) are documented as comments, so a plain text search.
  std::vector<std::string_view> keys(std::begin(printed_keys), std::end(printed_keys));
  keys.insert(keys.end(), std::begin(optional_keys), std::end(optional_keys));
  for (std::string_view key : keys) {
    EXPECT_NE(text.find(key), std::string::npos) << key;
  }
}

TEST(ConfigReference, NlbFargateExampleLoads) {
  auto res = load_file(std::string(EGRESSD_SOURCE_DIR) + "/conf/examples/nlb-fargate.yaml");
  ASSERT_TRUE(res.errors.empty()) << ::testing::PrintToString(printed(res.errors));
  ASSERT_TRUE(res.cfg);
  const config& c = *res.cfg;
  ASSERT_EQ(c.listeners.size(), 1u);
  EXPECT_EQ(c.listeners[0].address.to_string(), "0.0.0.0:3128");
  EXPECT_EQ(c.listeners[0].proxy_protocol, proxy_protocol_mode::required);
  EXPECT_EQ(cidrs(c.listeners[0].trusted_proxies), "[10.0.0.0/8,]");
  EXPECT_EQ(c.admin.address.to_string(), "0.0.0.0:9090");
  EXPECT_GE(c.rules.size(), 2u);
}

// ------------------------------------------------------------------------------------------
// Values accepted

TEST(ConfigLoad, EveryKeySet) {
  const auto& f = files();
  const std::string text = R"(version: 1
workers: 8
listeners:
  - address: "[::]:8080"
    proxy_protocol: optional
    trusted_proxies: [10.1.0.0/16, "fd00::/8"]
    tls:
      cert: ")" + f.path("cert.pem") +
                           R"("
      key: ")" + f.path("key.pem") +
                           R"("
      client_ca: ")" + f.path("ca.pem") +
                           R"("
  - address: 127.0.0.1:0
admin:
  address: "[::1]:9191"
gates:
  sources: [0.0.0.0/0]
  connect_ports: [443, "8000-8100", 22]
  http_ports: []
destinations:
  deny_special: false
  allow: [10.5.0.0/16]
  deny: [203.0.113.7]
rules:
  - name: office.saas_1
    action: allow
    sources: [192.168.0.0/16]
    domains: ["Example.COM.", "*.example.com"]
    destinations: ["2001:db8::/32"]
    ports: ["443"]
    methods: [connect]
    bind: 10.0.1.5
  - action: deny
    methods: [http, connect]
egress:
  bind: "::1"
headers:
  x_forwarded_for: delete
  via: false
  via_name: my-proxy
timeouts:
  header: 500ms
  keepalive_idle: 2m
  connect: 1s
  dns: 1500ms
  response_header: 1h
  idle: 24h
  tunnel_idle: 7s
limits:
  request_line: 256
  header_block: 1MiB
  header_fields: 10000
  max_connections: 1
  buffer_size: 16MiB
dns:
  servers: [10.0.0.2, "10.0.0.3:5353", "fd00::53", "[fd00::54]:53"]
  cache_size: 0
  min_ttl: 0s
  max_ttl: 1h
  negative_ttl: 0s
log:
  level: trace
  format: squid
  access: /var/log/egressd/access.log
drain:
  delay: 1ms
  timeout: 2h
)";
  const config c = load_ok(text);
  EXPECT_EQ(c.workers, 8u);
  ASSERT_EQ(c.listeners.size(), 2u);
  EXPECT_EQ(c.listeners[0].address.host, "::");
  EXPECT_EQ(c.listeners[0].address.port, 8080);
  EXPECT_EQ(c.listeners[0].address.to_string(), "[::]:8080");
  EXPECT_EQ(c.listeners[0].proxy_protocol, proxy_protocol_mode::optional);
  EXPECT_EQ(cidrs(c.listeners[0].trusted_proxies), "[10.1.0.0/16,fd00::/8,]");
  ASSERT_TRUE(c.listeners[0].tls);
  EXPECT_EQ(c.listeners[0].tls->cert_file, f.path("cert.pem"));
  EXPECT_EQ(c.listeners[0].tls->key_file, f.path("key.pem"));
  EXPECT_EQ(c.listeners[0].tls->client_ca_file, f.path("ca.pem"));
  EXPECT_EQ(c.listeners[1].address.to_string(), "127.0.0.1:0");
  EXPECT_EQ(c.listeners[1].proxy_protocol, proxy_protocol_mode::off);
  EXPECT_FALSE(c.listeners[1].tls);
  EXPECT_EQ(c.admin.address.to_string(), "[::1]:9191");
  EXPECT_EQ(cidrs(c.gate.sources), "[0.0.0.0/0,]");
  EXPECT_EQ(ports(c.gate.connect_ports), "[443-443,8000-8100,22-22,]");
  EXPECT_TRUE(c.gate.http_ports.empty());
  EXPECT_FALSE(c.dest.deny_special);
  EXPECT_EQ(cidrs(c.dest.allow), "[10.5.0.0/16,]");
  EXPECT_EQ(cidrs(c.dest.deny), "[203.0.113.7/32,]");
  ASSERT_EQ(c.rules.size(), 2u);
  const auto& r0 = c.rules[0];
  EXPECT_EQ(r0.name, "office.saas_1");
  EXPECT_EQ(r0.action, acl::rule_action::allow);
  ASSERT_TRUE(r0.sources);
  EXPECT_EQ(cidrs(*r0.sources), "[192.168.0.0/16,]");
  EXPECT_EQ(r0.domains, (std::vector<std::string>{"example.com", "*.example.com"}));
  ASSERT_TRUE(r0.destinations);
  EXPECT_EQ(cidrs(*r0.destinations), "[2001:db8::/32,]");
  ASSERT_TRUE(r0.ports);
  EXPECT_EQ(ports(*r0.ports), "[443-443,]");
  EXPECT_EQ(r0.methods, static_cast<std::uint8_t>(acl::method_class::connect));
  ASSERT_TRUE(r0.bind);
  EXPECT_EQ(r0.bind->to_string(), "10.0.1.5");
  const auto& r1 = c.rules[1];
  EXPECT_EQ(r1.name, "rule-2");
  EXPECT_EQ(r1.action, acl::rule_action::deny);
  EXPECT_FALSE(r1.sources);
  EXPECT_TRUE(r1.domains.empty());
  EXPECT_FALSE(r1.destinations);
  EXPECT_FALSE(r1.ports);
  EXPECT_EQ(r1.methods, 3);
  EXPECT_FALSE(r1.bind);
  ASSERT_TRUE(c.egress_bind);
  EXPECT_EQ(c.egress_bind->to_string(), "::1");
  EXPECT_EQ(c.hdr.x_forwarded_for, xff_mode::remove);
  EXPECT_FALSE(c.hdr.via);
  EXPECT_EQ(c.hdr.via_name, "my-proxy");
  EXPECT_EQ(c.timeout.header, duration(500));
  EXPECT_EQ(c.timeout.keepalive_idle, std::chrono::minutes(2));
  EXPECT_EQ(c.timeout.connect, std::chrono::seconds(1));
  EXPECT_EQ(c.timeout.dns, duration(1500));
  EXPECT_EQ(c.timeout.response_header, std::chrono::hours(1));
  EXPECT_EQ(c.timeout.idle, std::chrono::hours(24));
  EXPECT_EQ(c.timeout.tunnel_idle, std::chrono::seconds(7));
  EXPECT_EQ(c.limit.request_line, 256u);
  EXPECT_EQ(c.limit.header_block, 1024u * 1024);
  EXPECT_EQ(c.limit.header_fields, 10000u);
  EXPECT_EQ(c.limit.max_connections, 1u);
  EXPECT_EQ(c.limit.buffer_size, 16u * 1024 * 1024);
  EXPECT_EQ(c.dns.servers,
            (std::vector<std::string>{"10.0.0.2", "10.0.0.3:5353", "fd00::53", "[fd00::54]:53"}));
  EXPECT_EQ(c.dns.cache_size, 0u);
  EXPECT_EQ(c.dns.min_ttl, duration(0));
  EXPECT_EQ(c.dns.max_ttl, std::chrono::hours(1));
  EXPECT_EQ(c.dns.negative_ttl, duration(0));
  EXPECT_EQ(c.log.level, "trace");
  EXPECT_EQ(c.log.format, log_format::squid);
  EXPECT_EQ(c.log.access, "/var/log/egressd/access.log");
  EXPECT_EQ(c.drain_.delay, duration(1));
  EXPECT_EQ(c.drain_.timeout, std::chrono::hours(2));
}

TEST(ConfigLoad, PresentListReplacesDefault) {
  const config c = load_ok("version: 1\ngates:\n  sources: [203.0.113.0/24]\n");
  EXPECT_EQ(cidrs(c.gate.sources), "[203.0.113.0/24,]");
  EXPECT_EQ(ports(c.gate.connect_ports), "[443-443,]");  // sibling keeps its default
}

TEST(ConfigLoad, OffSpellings) {
  struct row {
    const char* text;
    proxy_protocol_mode mode;
  };
  const std::vector<row> rows = {
      {"off", proxy_protocol_mode::off},           {"\"off\"", proxy_protocol_mode::off},
      {"false", proxy_protocol_mode::off},         {"False", proxy_protocol_mode::off},
      {"Off", proxy_protocol_mode::off},           {"optional", proxy_protocol_mode::optional},
      {"required", proxy_protocol_mode::required},
  };
  for (const auto& r : rows) {
    const config c =
        load_ok(std::string("version: 1\nlisteners:\n  - address: 0.0.0.0:1\n") +
                "    trusted_proxies: [10.0.0.0/8]\n    proxy_protocol: " + r.text + "\n");
    ASSERT_EQ(c.listeners.size(), 1u) << r.text;
    EXPECT_EQ(c.listeners[0].proxy_protocol, r.mode) << r.text;
  }
  EXPECT_EQ(load_ok("version: 1\nheaders:\n  x_forwarded_for: off\n").hdr.x_forwarded_for,
            xff_mode::off);
  EXPECT_EQ(load_ok("version: 1\nheaders:\n  x_forwarded_for: false\n").hdr.x_forwarded_for,
            xff_mode::off);
  EXPECT_EQ(load_ok("version: 1\nheaders:\n  x_forwarded_for: replace\n").hdr.x_forwarded_for,
            xff_mode::replace);
  EXPECT_EQ(load_ok("version: 1\nlog:\n  level: off\n").log.level, "off");
  EXPECT_EQ(load_ok("version: 1\nlog:\n  level: false\n").log.level, "off");
  EXPECT_EQ(load_ok("version: 1\nlog:\n  access: off\n").log.access, "off");
  EXPECT_EQ(load_ok("version: 1\nlog:\n  access: false\n").log.access, "off");
  // Only false itself: "no" may be a file name.
  EXPECT_EQ(load_ok("version: 1\nlog:\n  access: no\n").log.access, "no");
}

TEST(ConfigLoad, Booleans) {
  EXPECT_FALSE(load_ok("version: 1\nheaders:\n  via: false\n").hdr.via);
  EXPECT_TRUE(load_ok("version: 1\nheaders:\n  via: true\n").hdr.via);
  EXPECT_FALSE(load_ok("version: 1\ndestinations:\n  deny_special: no\n").dest.deny_special);
}

TEST(ConfigLoad, Durations) {
  const std::vector<std::pair<const char*, duration>> rows = {
      {"1ms", duration(1)},
      {"500ms", duration(500)},
      {"10s", std::chrono::seconds(10)},
      {"5m", std::chrono::minutes(5)},
      {"1h", std::chrono::hours(1)},
      {"24h", std::chrono::hours(24)},
      {"86400000ms", std::chrono::hours(24)},
      {"\"90s\"", std::chrono::seconds(90)},
      {"007s", std::chrono::seconds(7)},
  };
  for (const auto& [text, want] : rows) {
    EXPECT_EQ(
        load_ok(std::string("version: 1\ntimeouts:\n  connect: ") + text + "\n").timeout.connect,
        want)
        << text;
  }
}

TEST(ConfigLoad, Sizes) {
  const std::vector<std::pair<const char*, std::size_t>> rows = {
      {"256", 256},   {"\"300\"", 300},  {"1000B", 1000},
      {"8KiB", 8192}, {"1MiB", 1048576}, {"1048576", 1048576},
  };
  for (const auto& [text, want] : rows) {
    EXPECT_EQ(load_ok(std::string("version: 1\nlimits:\n  header_block: 1MiB\n  request_line: ") +
                      text + "\n")
                  .limit.request_line,
              want)
        << text;
  }
}

TEST(ConfigLoad, Endpoints) {
  const std::vector<std::pair<const char*, const char*>> rows = {
      {"0.0.0.0:9090", "0.0.0.0:9090"},
      {"127.0.0.1:0", "127.0.0.1:0"},
      {"\"[::]:3128\"", "[::]:3128"},
      {"\"[::1]:65535\"", "[::1]:65535"},
      {"\"[2001:DB8::1]:80\"", "[2001:db8::1]:80"},
  };
  for (const auto& [text, want] : rows) {
    EXPECT_EQ(load_ok(std::string("version: 1\nadmin:\n  address: ") + text + "\n")
                  .admin.address.to_string(),
              want)
        << text;
  }
}

TEST(ConfigLoad, Domains) {
  const std::vector<std::pair<const char*, const char*>> rows = {
      {"example.com", "example.com"},     {"EXAMPLE.Com.", "example.com"},
      {"*.example.com", "*.example.com"}, {"*.COM", "*.com"},
      {"localhost", "localhost"},         {"a-b.c-d.example", "a-b.c-d.example"},
      {"x1.example.io", "x1.example.io"}, {"1.example.com", "1.example.com"},
  };
  for (const auto& [text, want] : rows) {
    const config c = load_ok(
        std::string("version: 1\nrules:\n  - action: allow\n    domains: [\"") + text + "\"]\n");
    ASSERT_EQ(c.rules.size(), 1u) << text;
    EXPECT_EQ(c.rules[0].domains, std::vector<std::string>{want}) << text;
  }
  // The longest name allowed: 253 characters.
  std::string longest = std::string(63, 'a') + "." + std::string(63, 'b') + "." +
                        std::string(63, 'c') + "." + std::string(61, 'd');
  ASSERT_EQ(longest.size(), 253u);
  EXPECT_EQ(load_ok("version: 1\nrules:\n  - action: allow\n    domains: [" + longest + "]\n")
                .rules.at(0)
                .domains.at(0),
            longest);
}

TEST(ConfigLoad, RuleNamesAndMethods) {
  const config c = load_ok(R"(version: 1
rules:
  - action: deny
    methods: [http]
  - name: second
    action: allow
  - action: allow
    methods: [connect, connect]
)");
  ASSERT_EQ(c.rules.size(), 3u);
  EXPECT_EQ(c.rules[0].name, "rule-1");
  EXPECT_EQ(c.rules[0].methods, static_cast<std::uint8_t>(acl::method_class::http));
  EXPECT_EQ(c.rules[1].name, "second");
  EXPECT_EQ(c.rules[1].methods, 0);
  EXPECT_EQ(c.rules[2].name, "rule-3");
  EXPECT_EQ(c.rules[2].methods, static_cast<std::uint8_t>(acl::method_class::connect));
}

TEST(ConfigLoad, EmptyEgressBindIsKernelChoice) {
  EXPECT_FALSE(load_ok("version: 1\negress:\n  bind: \"\"\n").egress_bind);
  EXPECT_TRUE(load_ok("version: 1\negress:\n  bind: 10.0.0.1\n").egress_bind);
}

TEST(ConfigLoad, EphemeralPortsMayRepeat) {
  const config c = load_ok(
      "version: 1\nlisteners:\n  - address: 127.0.0.1:0\n  - address: 127.0.0.1:0\n"
      "admin:\n  address: 127.0.0.1:0\n");
  EXPECT_EQ(c.listeners.size(), 2u);
}

// ------------------------------------------------------------------------------------------
// Errors

struct error_case {
  std::string name;
  std::string text;
  std::vector<std::string> want;
};

void expect_errors(const std::vector<error_case>& cases) {
  for (const auto& c : cases) {
    auto res = load(c.text);
    EXPECT_EQ(printed(res.errors), c.want) << c.name << "\n" << c.text;
    EXPECT_FALSE(res.cfg) << c.name;
  }
}

TEST(ConfigErrors, Document) {
  expect_errors({
      {"empty", "", {"t.yaml: empty config; expected at least version: 1"}},
      {"comments only",
       "# nothing here\n\n",
       {"t.yaml: empty config; expected at least version: 1"}},
      {"null document", "~\n", {"t.yaml: empty config; expected at least version: 1"}},
      {"two documents",
       "version: 1\n---\nversion: 1\n",
       {"t.yaml:3: more than one YAML document; expected exactly one"}},
      {"top-level list",
       "- version: 1\n",
       {"t.yaml:1: expected a mapping at the top level, got a list"}},
      {"top-level scalar",
       "hello\n",
       {"t.yaml:1: expected a mapping at the top level, got 'hello'"}},
      {"missing version", "workers: 1\n", {"t.yaml:1: version: required; expected version: 1"}},
      {"wrong version", "version: 2\n", {"t.yaml:1: version: unsupported version 2; expected 1"}},
      {"version not a number",
       "version: one\n",
       {"t.yaml:1: version: expected a non-negative integer, got 'one'"}},
      {"version list", "version: [1]\n", {"t.yaml:1: version: expected an integer, got a list"}},
      {"duplicate key",
       "version: 1\nworkers: 1\nworkers: 2\n",
       {"t.yaml:3: workers: duplicate key (first at line 2)"}},
      {"non-scalar key", "version: 1\n? [a]\n: 1\n", {"t.yaml:2: expected a key name, got a list"}},
  });
}

TEST(ConfigErrors, SyntaxErrorIsOneErrorWithItsLine) {
  for (const std::string text :
       {"version: 1\nworkers: [1, 2\n", "version: 1\nlisteners:\n  - a: b: c\n",
        "version: 1\n  bad indent: x\n workers: 1\n"}) {
    auto res = load(text);
    ASSERT_EQ(res.errors.size(), 1u) << text;
    EXPECT_EQ(res.errors[0].file, test_file);
    EXPECT_GE(res.errors[0].line, 2) << text;
    EXPECT_EQ(res.errors[0].message.rfind("YAML syntax error: ", 0), 0u) << res.errors[0].message;
    EXPECT_FALSE(res.cfg);
  }
  auto res = load("version: 1\nworkers: 2\nlisteners: [a\n");
  ASSERT_EQ(res.errors.size(), 1u);
  EXPECT_EQ(res.errors[0].line, 4);  // where the parser noticed the flow list never closed
}

TEST(ConfigErrors, UnknownKeysAtEveryLevel) {
  const auto& f = files();
  expect_errors({
      {"top",
       "version: 1\nworker: 2\n",
       {"t.yaml:2: worker: unknown key; did you mean 'workers'?"}},
      {"top, far from any key",
       "version: 1\nfrobnicate: 2\n",
       {"t.yaml:2: frobnicate: unknown key; expected one of: version, workers, listeners, admin, "
        "gates, destinations, rules, egress, headers, timeouts, limits, relay, upstream, dns, "
        "log, drain"}},
      {"listener",
       "version: 1\nlisteners:\n  - address: 0.0.0.0:1\n    proxy: required\n",
       {"t.yaml:4: listeners[0].proxy: unknown key; expected one of: address, proxy_protocol, "
        "trusted_proxies, tls"}},
      {"tls",
       "version: 1\nlisteners:\n  - address: 0.0.0.0:1\n    tls:\n      cert: " +
           f.path("cert.pem") + "\n      key: " + f.path("key.pem") + "\n      ca: x\n",
       {"t.yaml:7: listeners[0].tls.ca: unknown key; expected one of: cert, key, client_ca, "
        "client_crl"}},
      {"admin",
       "version: 1\nadmin:\n  adress: 127.0.0.1:1\n",
       {"t.yaml:3: admin.adress: unknown key; did you mean 'address'?"}},
      {"gates",
       "version: 1\ngates:\n  source: [10.0.0.0/8]\n",
       {"t.yaml:3: gates.source: unknown key; did you mean 'sources'?"}},
      {"destinations",
       "version: 1\ndestinations:\n  allowed: []\n",
       {"t.yaml:3: destinations.allowed: unknown key; did you mean 'allow'?"}},
      {"rule",
       "version: 1\nrules:\n  - action: allow\n    domain: [example.com]\n",
       {"t.yaml:4: rules[0].domain: unknown key; did you mean 'domains'?"}},
      {"egress",
       "version: 1\negress:\n  bnd: 10.0.0.1\n",
       {"t.yaml:3: egress.bnd: unknown key; did you mean 'bind'?"}},
      {"headers",
       "version: 1\nheaders:\n  xff: off\n",
       {"t.yaml:3: headers.xff: unknown key; expected one of: x_forwarded_for, via, via_name"}},
      {"timeouts",
       "version: 1\ntimeouts:\n  conect: 1s\n",
       {"t.yaml:3: timeouts.conect: unknown key; did you mean 'connect'?"}},
      {"limits",
       "version: 1\nlimits:\n  max_conns: 5\n",
       {"t.yaml:3: limits.max_conns: unknown key; expected one of: request_line, header_block, "
        "header_fields, max_connections, buffer_size"}},
      {"log",
       "version: 1\nlog:\n  levl: info\n",
       {"t.yaml:3: log.levl: unknown key; did you mean 'level'?"}},
      {"drain",
       "version: 1\ndrain:\n  grace: 1s\n",
       {"t.yaml:3: drain.grace: unknown key; expected one of: delay, timeout"}},
      {"dns",
       "version: 1\ndns:\n  server: []\n",
       {"t.yaml:3: dns.server: unknown key; did you mean 'servers'?"}},
      {"dns, far from any key",
       "version: 1\ndns:\n  search: [corp.example]\n",
       {"t.yaml:3: dns.search: unknown key; expected one of: servers, cache_size, min_ttl, "
        "max_ttl, negative_ttl"}},
  });
}

TEST(ConfigErrors, WrongTypes) {
  expect_errors({
      {"section is a list",
       "version: 1\ngates: [1]\n",
       {"t.yaml:2: gates: expected a mapping, got a list"}},
      {"section is empty",
       "version: 1\ngates:\n",
       {"t.yaml:2: gates: expected a mapping, got nothing"}},
      {"section is a scalar",
       "version: 1\ntimeouts: 10s\n",
       {"t.yaml:2: timeouts: expected a mapping, got '10s'"}},
      {"listeners not a list",
       "version: 1\nlisteners: {address: 0.0.0.0:1}\n",
       {"t.yaml:2: listeners: expected a list, got a mapping"}},
      {"listener not a mapping",
       "version: 1\nlisteners:\n  - 0.0.0.0:3128\n",
       {"t.yaml:3: listeners[0]: expected a mapping, got '0.0.0.0:3128'"}},
      {"cidr list is a scalar",
       "version: 1\ngates:\n  sources: 10.0.0.0/8\n",
       {"t.yaml:3: gates.sources: expected a list, got '10.0.0.0/8'"}},
      {"port list is a scalar",
       "version: 1\ngates:\n  connect_ports: 443\n",
       {"t.yaml:3: gates.connect_ports: expected a list, got '443'"}},
      {"cidr item is a list",
       "version: 1\ngates:\n  sources: [[10.0.0.0/8]]\n",
       {"t.yaml:3: gates.sources[0]: expected a CIDR, got a list"}},
      {"boolean quoted",
       "version: 1\nheaders:\n  via: \"true\"\n",
       {"t.yaml:3: headers.via: expected true or false, got 'true'"}},
      {"boolean number",
       "version: 1\ndestinations:\n  deny_special: 1\n",
       {"t.yaml:3: destinations.deny_special: expected true or false, got '1'"}},
      {"integer with unit",
       "version: 1\nlimits:\n  header_fields: 10k\n",
       {"t.yaml:3: limits.header_fields: expected a non-negative integer, got '10k'"}},
      {"rules not a list",
       "version: 1\nrules: {action: allow}\n",
       {"t.yaml:2: rules: expected a list, got a mapping"}},
      {"rule not a mapping",
       "version: 1\nrules:\n  - allow\n",
       {"t.yaml:3: rules[0]: expected a mapping, got 'allow'"}},
      {"tls empty",
       "version: 1\nlisteners:\n  - address: 0.0.0.0:1\n    tls:\n",
       {"t.yaml:4: listeners[0].tls: expected a mapping, got nothing"}},
      {"string list of maps",
       "version: 1\nrules:\n  - action: allow\n    domains: [{a: b}]\n",
       {"t.yaml:4: rules[0].domains[0]: expected a domain, got a mapping"}},
  });
}

TEST(ConfigErrors, TopLevelValues) {
  expect_errors({
      {"workers over max",
       "version: 1\nworkers: 257\n",
       {"t.yaml:2: workers: must be between 0 and 256, got 257"}},
      {"workers negative",
       "version: 1\nworkers: -1\n",
       {"t.yaml:2: workers: expected a non-negative integer, got '-1'"}},
      {"workers huge",
       "version: 1\nworkers: 99999999999999999999999999\n",
       {"t.yaml:2: workers: must be between 0 and 256, got 4294967295"}},
  });
}

TEST(ConfigErrors, Listeners) {
  const std::string l = "version: 1\nlisteners:\n  - address: ";
  expect_errors({
      {"none",
       "version: 1\nlisteners: []\n",
       {"t.yaml:2: listeners: at least one listener is required"}},
      {"address missing",
       "version: 1\nlisteners:\n  - proxy_protocol: \"off\"\n",
       {"t.yaml:3: listeners[0].address: required, e.g. address: \"0.0.0.0:3128\""}},
      {"host name",
       l + "localhost:3128\n",
       {"t.yaml:3: listeners[0].address: host 'localhost' is not a literal IP address (names "
        "are not allowed)"}},
      {"no port",
       l + "0.0.0.0\n",
       {"t.yaml:3: listeners[0].address: expected HOST:PORT with a literal IP address, e.g. "
        "\"0.0.0.0:3128\" or \"[::]:3128\", got '0.0.0.0'"}},
      {"unbracketed v6",
       l + "\"::1:3128\"\n",
       {"t.yaml:3: listeners[0].address: IPv6 address must be in brackets, e.g. \"[::1]:3128\", "
        "got '::1:3128'"}},
      {"bracketed v4",
       l + "\"[127.0.0.1]:80\"\n",
       {"t.yaml:3: listeners[0].address: brackets are for IPv6 addresses only, got "
        "'[127.0.0.1]:80'"}},
      {"unclosed bracket",
       l + "\"[::1:80\"\n",
       {"t.yaml:3: listeners[0].address: expected HOST:PORT with a literal IP address, e.g. "
        "\"0.0.0.0:3128\" or \"[::]:3128\", got '[::1:80'"}},
      {"port too big",
       l + "0.0.0.0:65536\n",
       {"t.yaml:3: listeners[0].address: invalid port '65536' (0-65535)"}},
      {"port not numeric",
       l + "0.0.0.0:http\n",
       {"t.yaml:3: listeners[0].address: invalid port 'http' (0-65535)"}},
      {"port empty",
       l + "\"0.0.0.0:\"\n",
       {"t.yaml:3: listeners[0].address: invalid port '' (0-65535)"}},
      {"proxy_protocol value",
       l + "0.0.0.0:1\n    proxy_protocol: on\n",
       {"t.yaml:4: listeners[0].proxy_protocol: must be off, optional or required, got 'on'"}},
      {"proxy_protocol without trusted",
       l + "0.0.0.0:1\n    proxy_protocol: required\n",
       {"t.yaml:4: listeners[0].trusted_proxies: must not be empty when proxy_protocol is "
        "optional or required"}},
      {"proxy_protocol with empty trusted",
       l + "0.0.0.0:1\n    proxy_protocol: optional\n    trusted_proxies: []\n",
       {"t.yaml:5: listeners[0].trusted_proxies: must not be empty when proxy_protocol is "
        "optional or required"}},
      {"bad trusted cidr only reported once",
       l + "0.0.0.0:1\n    proxy_protocol: required\n    trusted_proxies: [10.0.0.1/8]\n",
       {"t.yaml:5: listeners[0].trusted_proxies[0]: invalid CIDR '10.0.0.1/8': host bits set; "
        "did you mean 10.0.0.0/8?"}},
      {"duplicate address",
       "version: 1\nlisteners:\n  - address: 0.0.0.0:1\n  - address: 0.0.0.0:1\n",
       {"t.yaml:4: listeners[1].address: duplicate listener address (same as listeners[0])"}},
      {"admin on a listener",
       "version: 1\nadmin:\n  address: 0.0.0.0:3128\n",
       {"t.yaml:3: admin.address: same address as listeners[0].address"}},
      {"admin address bad",
       "version: 1\nadmin:\n  address: 1.2.3:4\n",
       {"t.yaml:3: admin.address: host '1.2.3' is not a literal IP address (names are not "
        "allowed)"}},
  });
}

TEST(ConfigErrors, Tls) {
  const auto& f = files();
  const std::string head = "version: 1\nlisteners:\n  - address: 0.0.0.0:1\n    tls:\n";
  expect_errors({
      {"key missing",
       head + "      cert: " + f.path("cert.pem") + "\n",
       {"t.yaml:4: listeners[0].tls.key: required when tls is set"}},
      {"cert missing",
       head + "      key: " + f.path("key.pem") + "\n",
       {"t.yaml:4: listeners[0].tls.cert: required when tls is set"}},
      {"both missing",
       head + "      client_ca: " + f.path("ca.pem") + "\n",
       {"t.yaml:4: listeners[0].tls.cert: required when tls is set",
        "t.yaml:4: listeners[0].tls.key: required when tls is set"}},
      {"cert unreadable",
       head + "      cert: /nonexistent/cert.pem\n      key: " + f.path("key.pem") + "\n",
       {"t.yaml:5: listeners[0].tls.cert: cannot read '/nonexistent/cert.pem': No such file or "
        "directory"}},
      {"key is a directory",
       head + "      cert: " + f.path("cert.pem") + "\n      key: " + f.dir() + "\n",
       {"t.yaml:6: listeners[0].tls.key: '" + f.dir() + "' is not a regular file"}},
      {"client_ca empty",
       head + "      cert: " + f.path("cert.pem") + "\n      key: " + f.path("key.pem") +
           "\n      client_ca: \"\"\n",
       {"t.yaml:7: listeners[0].tls.client_ca: must be a file path"}},
      {"client_crl without client_ca",
       head + "      cert: " + f.path("cert.pem") + "\n      key: " + f.path("key.pem") +
           "\n      client_crl: " + f.path("ca.pem") + "\n",
       {"t.yaml:7: listeners[0].tls.client_crl: needs client_ca (only client certificates are "
        "checked)"}},
      {"client_crl unreadable",
       head + "      cert: " + f.path("cert.pem") + "\n      key: " + f.path("key.pem") +
           "\n      client_ca: " + f.path("ca.pem") + "\n      client_crl: /nonexistent/crl.pem\n",
       {"t.yaml:8: listeners[0].tls.client_crl: cannot read '/nonexistent/crl.pem': No such file "
        "or directory"}},
  });
}

TEST(ConfigErrors, GatesAndDestinations) {
  expect_errors({
      {"no sources",
       "version: 1\ngates:\n  sources: []\n",
       {"t.yaml:3: gates.sources: must not be empty: no client could use the proxy"}},
      {"bad source",
       "version: 1\ngates:\n  sources: [10.0.0.0/8, nonsense]\n",
       {"t.yaml:3: gates.sources[1]: invalid CIDR 'nonsense': invalid address 'nonsense'"}},
      {"bad prefix",
       "version: 1\ngates:\n  sources:\n    - 10.0.0.0/33\n",
       {"t.yaml:4: gates.sources[0]: invalid CIDR '10.0.0.0/33': prefix length 33 out of range "
        "(0-32)"}},
      {"port zero",
       "version: 1\ngates:\n  connect_ports: [0]\n",
       {"t.yaml:3: gates.connect_ports[0]: invalid port or range '0': port 0 is not allowed"}},
      {"port reversed",
       "version: 1\ngates:\n  http_ports: [80, \"90-85\"]\n",
       {"t.yaml:3: gates.http_ports[1]: invalid port or range '90-85': range 90-85 is reversed"}},
      {"port out of range",
       "version: 1\ngates:\n  http_ports: [70000]\n",
       {"t.yaml:3: gates.http_ports[0]: invalid port or range '70000': port 70000 out of range"}},
      {"dest allow",
       "version: 1\ndestinations:\n  allow: [169.254.169.254/16]\n",
       {"t.yaml:3: destinations.allow[0]: invalid CIDR '169.254.169.254/16': host bits set; did "
        "you mean 169.254.0.0/16?"}},
      {"dest deny",
       "version: 1\ndestinations:\n  deny: [\"fe80::/129\"]\n",
       {"t.yaml:3: destinations.deny[0]: invalid CIDR 'fe80::/129': prefix length 129 out of "
        "range (0-128)"}},
      {"deny_special",
       "version: 1\ndestinations:\n  deny_special: maybe\n",
       {"t.yaml:3: destinations.deny_special: expected true or false, got 'maybe'"}},
  });
}

TEST(ConfigErrors, Rules) {
  const std::string r = "version: 1\nrules:\n  - action: allow\n";
  expect_errors({
      {"action missing",
       "version: 1\nrules:\n  - name: x\n",
       {"t.yaml:3: rules[0].action: required (allow or deny)"}},
      {"action value",
       "version: 1\nrules:\n  - action: permit\n",
       {"t.yaml:3: rules[0].action: must be allow or deny, got 'permit'"}},
      {"report_only on allow",
       r + "    report_only: true\n",
       {"t.yaml:4: rules[0].report_only: only allowed on deny rules"}},
      {"report_only not a boolean",
       "version: 1\nrules:\n  - action: deny\n    report_only: maybe\n",
       {"t.yaml:4: rules[0].report_only: expected true or false, got 'maybe'"}},
      {"vpce id",
       r + "    vpce_ids: [vpce-ok1, endpoint-1]\n",
       {"t.yaml:4: rules[0].vpce_ids[1]: invalid VPC endpoint id 'endpoint-1': expected vpce- "
        "and up to 32 letters or digits, e.g. vpce-0123456789abcdef0"}},
      {"vpce ids empty",
       r + "    vpce_ids: []\n",
       {"t.yaml:4: rules[0].vpce_ids: must not be empty; omit the key to match any"}},
      {"client identities empty",
       r + "    client_identities: []\n",
       {"t.yaml:4: rules[0].client_identities: must not be empty; omit the key to match any"}},
      {"client identity just a star",
       r + "    client_identities: [ok, '*']\n",
       {"t.yaml:4: rules[0].client_identities[1]: must name an identity or a prefix ending in "
        "'*', got '*'"}},
      {"bind on deny",
       "version: 1\nrules:\n  - action: deny\n    bind: 10.0.0.1\n",
       {"t.yaml:4: rules[0].bind: only allowed on allow rules"}},
      {"bind not an address",
       r + "    bind: egress.example\n",
       {"t.yaml:4: rules[0].bind: 'egress.example' is not an IP address literal"}},
      {"duplicate names",
       "version: 1\nrules:\n  - name: a\n    action: allow\n  - name: a\n"
       "    action: deny\n",
       {"t.yaml:5: rules[1].name: duplicate rule name (same as rules[0])"}},
      {"default name taken",
       "version: 1\nrules:\n  - name: rule-2\n    action: allow\n"
       "  - action: deny\n",
       {"t.yaml:5: rules[1].name: duplicate rule name (same as rules[0])"}},
      {"name with space",
       r + "    name: my rule\n",
       {"t.yaml:4: rules[0].name: must be 1-64 characters: letters, digits, '.', '_', ':' or '-'"}},
      {"name empty",
       r + "    name: \"\"\n",
       {"t.yaml:4: rules[0].name: must be 1-64 characters: letters, digits, '.', '_', ':' or '-'"}},
      {"name too long",
       r + "    name: " + std::string(65, 'n') + "\n",
       {"t.yaml:4: rules[0].name: must be 1-64 characters: letters, digits, '.', '_', ':' or '-'"}},
      {"empty sources",
       r + "    sources: []\n",
       {"t.yaml:4: rules[0].sources: must not be empty; omit the key to match any"}},
      {"empty domains",
       r + "    domains: []\n",
       {"t.yaml:4: rules[0].domains: must not be empty; omit the key to match any"}},
      {"empty destinations",
       r + "    destinations: []\n",
       {"t.yaml:4: rules[0].destinations: must not be empty; omit the key to match any"}},
      {"empty ports",
       r + "    ports: []\n",
       {"t.yaml:4: rules[0].ports: must not be empty; omit the key to match any"}},
      {"empty methods",
       r + "    methods: []\n",
       {"t.yaml:4: rules[0].methods: must not be empty; omit the key to match any"}},
      {"method value",
       r + "    methods: [connect, GET]\n",
       {"t.yaml:4: rules[0].methods[1]: must be connect or http, got 'GET'"}},
      {"bad source",
       r + "    sources:\n      - 10.0.0.0/8\n      - 300.0.0.0/8\n",
       {"t.yaml:6: rules[0].sources[1]: invalid CIDR '300.0.0.0/8': invalid address "
        "'300.0.0.0'"}},
      {"bad destination",
       r + "    destinations: [\"10.0.0.0/8x\"]\n",
       {"t.yaml:4: rules[0].destinations[0]: invalid CIDR '10.0.0.0/8x': invalid prefix length "
        "'8x'"}},
      {"bad port",
       r + "    ports: [\"443-\"]\n",
       {"t.yaml:4: rules[0].ports[0]: invalid port or range '443-': missing port in '443-'"}},
      {"later rule",
       "version: 1\nrules:\n  - action: allow\n  - action: allow\n"
       "    ports: [x]\n",
       {"t.yaml:5: rules[1].ports[0]: invalid port or range 'x': not a number: 'x'"}},
  });
}

TEST(ConfigErrors, Domains) {
  struct row {
    std::string domain;
    std::string why;
  };
  const std::vector<row> rows = {
      {"", "empty"},
      {".", "empty"},
      {"*", "a wildcard is only allowed as a leading \"*.\""},
      {"*example.com", "a wildcard is only allowed as a leading \"*.\""},
      {"www.*.example.com", "a wildcard is only allowed as a leading \"*.\""},
      {"*.*.example.com", "a wildcard is only allowed as a leading \"*.\""},
      {"ex*ample.com", "a wildcard is only allowed as a leading \"*.\""},
      {"a..b", "empty label"},
      {".example.com", "empty label"},
      {"example.com..", "empty label"},
      {"*.", "a wildcard is only allowed as a leading \"*.\""},
      {"*..", "empty label"},
      {"exa_mple.com", "invalid character '_' (letters, digits and hyphens only)"},
      {"example.com/path", "invalid character '/' (letters, digits and hyphens only)"},
      {"exa mple.com", "invalid character ' ' (letters, digits and hyphens only)"},
      {"example.com:443", "invalid character ':' (letters, digits and hyphens only)"},
      {"-example.com", "label starts or ends with a hyphen"},
      {"example-.com", "label starts or ends with a hyphen"},
      {std::string(64, 'a') + ".com", "label longer than 63 characters"},
      {std::string(63, 'a') + "." + std::string(63, 'b') + "." + std::string(63, 'c') + "." +
           std::string(62, 'd'),
       "longer than 253 characters"},
      {"10.0.0.1", "an IP address, not a name; use destinations for addresses"},
      {"example.123", "an IP address, not a name; use destinations for addresses"},
      {"0x7f.1", "an IP address, not a name; use destinations for addresses"},
      {"a.0x7f", "an IP address, not a name; use destinations for addresses"},
  };
  for (const auto& r : rows) {
    const std::string text =
        "version: 1\nrules:\n  - action: allow\n    domains:\n      - ok.example\n"
        "      - \"" +
        r.domain + "\"\n";
    EXPECT_EQ(errors_of(text),
              std::vector<std::string>{"t.yaml:6: rules[0].domains[1]: invalid domain '" +
                                       r.domain + "': " + r.why})
        << r.domain;
  }
}

TEST(ConfigErrors, EgressAndHeaders) {
  expect_errors({
      {"egress bind name",
       "version: 1\negress:\n  bind: gw.example\n",
       {"t.yaml:3: egress.bind: 'gw.example' is not an IP address literal (use \"\" for the "
        "kernel's choice)"}},
      {"egress bind cidr",
       "version: 1\negress:\n  bind: 10.0.0.0/8\n",
       {"t.yaml:3: egress.bind: '10.0.0.0/8' is not an IP address literal (use \"\" for the "
        "kernel's choice)"}},
      {"xff value",
       "version: 1\nheaders:\n  x_forwarded_for: remove\n",
       {"t.yaml:3: headers.x_forwarded_for: must be append, replace, delete or off, got "
        "'remove'"}},
      {"xff true",
       "version: 1\nheaders:\n  x_forwarded_for: true\n",
       {"t.yaml:3: headers.x_forwarded_for: must be append, replace, delete or off, got 'true'"}},
      {"via_name with space",
       "version: 1\nheaders:\n  via_name: my proxy\n",
       {"t.yaml:3: headers.via_name: must be a non-empty HTTP token (letters, digits and "
        "!#$%&'*+-.^_`|~), got 'my proxy'"}},
      {"via_name empty",
       "version: 1\nheaders:\n  via_name: \"\"\n",
       {"t.yaml:3: headers.via_name: must be a non-empty HTTP token (letters, digits and "
        "!#$%&'*+-.^_`|~), got ''"}},
      {"via_name with comma",
       "version: 1\nheaders:\n  via_name: \"a,b\"\n",
       {"t.yaml:3: headers.via_name: must be a non-empty HTTP token (letters, digits and "
        "!#$%&'*+-.^_`|~), got 'a,b'"}},
  });
}

TEST(ConfigErrors, Durations) {
  const std::string unit = "expected a duration with a unit (ms, s, m, h), e.g. \"10s\", got ";
  const std::vector<std::pair<std::string, std::string>> rows = {
      {"10", unit + "'10'"},
      {"\"10 s\"", unit + "'10 s'"},
      {"1.5s", unit + "'1.5s'"},
      {"-1s", unit + "'-1s'"},
      {"10S", unit + "'10S'"},
      {"1d", unit + "'1d'"},
      {"s", unit + "'s'"},
      {"1m30s", unit + "'1m30s'"},
      {"\"\"", unit + "''"},
      {"0s", "must be greater than 0"},
      {"0ms", "must be greater than 0"},
      {"25h", "must be at most 24h, got 90000s"},
      {"86400001ms", "must be at most 24h, got 86400001ms"},
      {"99999999999999999999999h", "must be at most 24h, got 3600000000000000s"},
  };
  for (const std::string key :
       {"header", "keepalive_idle", "connect", "dns", "response_header", "idle", "tunnel_idle"}) {
    for (const auto& [value, why] : rows) {
      EXPECT_EQ(errors_of("version: 1\ntimeouts:\n  " + key + ": " + value + "\n"),
                std::vector<std::string>{"t.yaml:3: timeouts." + key + ": " + why})
          << key << " " << value;
    }
  }
  for (const std::string key : {"delay", "timeout"}) {
    EXPECT_EQ(errors_of("version: 1\ndrain:\n  " + key + ": 0s\n"),
              std::vector<std::string>{"t.yaml:3: drain." + key + ": must be greater than 0"});
    EXPECT_EQ(errors_of("version: 1\ndrain:\n  " + key + ": 5\n"),
              std::vector<std::string>{"t.yaml:3: drain." + key + ": " + unit + "'5'"});
  }
}

TEST(ConfigErrors, Limits) {
  const std::string size =
      "expected a size in bytes, or a number with B, KiB or MiB, e.g. \"64KiB\", got ";
  expect_errors({
      {"request_line small",
       "version: 1\nlimits:\n  request_line: 255\n",
       {"t.yaml:3: limits.request_line: must be between 256 B and 1 MiB, got 255 B"}},
      {"request_line big",
       "version: 1\nlimits:\n  request_line: 1025KiB\n  header_block: 1MiB\n",
       {"t.yaml:3: limits.request_line: must be between 256 B and 1 MiB, got 1025 KiB"}},
      {"header_block small",
       "version: 1\nlimits:\n  request_line: 256\n  header_block: 1023\n",
       {"t.yaml:4: limits.header_block: must be between 1 KiB and 1 MiB, got 1023 B"}},
      {"header_block big",
       "version: 1\nlimits:\n  header_block: 2MiB\n",
       {"t.yaml:3: limits.header_block: must be between 1 KiB and 1 MiB, got 2 MiB"}},
      {"header_block below request_line",
       "version: 1\nlimits:\n  request_line: 32KiB\n  header_block: 16KiB\n",
       {"t.yaml:4: limits.header_block: must be at least limits.request_line (32 KiB), got 16 "
        "KiB"}},
      {"request_line above default header_block",
       "version: 1\nlimits:\n  request_line: 128KiB\n",
       {"t.yaml:3: limits.header_block: must be at least limits.request_line (128 KiB), got 64 "
        "KiB"}},
      {"header_fields zero",
       "version: 1\nlimits:\n  header_fields: 0\n",
       {"t.yaml:3: limits.header_fields: must be between 1 and 10000, got 0"}},
      {"header_fields big",
       "version: 1\nlimits:\n  header_fields: 10001\n",
       {"t.yaml:3: limits.header_fields: must be between 1 and 10000, got 10001"}},
      {"max_connections zero",
       "version: 1\nlimits:\n  max_connections: 0\n",
       {"t.yaml:3: limits.max_connections: must be between 1 and 1000000, got 0"}},
      {"max_connections big",
       "version: 1\nlimits:\n  max_connections: 1000001\n",
       {"t.yaml:3: limits.max_connections: must be between 1 and 1000000, got 1000001"}},
      {"buffer small",
       "version: 1\nlimits:\n  buffer_size: 4095\n",
       {"t.yaml:3: limits.buffer_size: must be between 4 KiB and 16 MiB, got 4095 B"}},
      {"buffer big",
       "version: 1\nlimits:\n  buffer_size: 17MiB\n",
       {"t.yaml:3: limits.buffer_size: must be between 4 KiB and 16 MiB, got 17 MiB"}},
      {"size unit KB",
       "version: 1\nlimits:\n  buffer_size: 64KB\n",
       {"t.yaml:3: limits.buffer_size: " + size + "'64KB'"}},
      {"size lower-case",
       "version: 1\nlimits:\n  buffer_size: 64kib\n",
       {"t.yaml:3: limits.buffer_size: " + size + "'64kib'"}},
      {"size with space",
       "version: 1\nlimits:\n  buffer_size: 64 KiB\n",
       {"t.yaml:3: limits.buffer_size: " + size + "'64 KiB'"}},
      {"size negative",
       "version: 1\nlimits:\n  buffer_size: -1\n",
       {"t.yaml:3: limits.buffer_size: " + size + "'-1'"}},
      {"size fraction",
       "version: 1\nlimits:\n  buffer_size: 1.5MiB\n",
       {"t.yaml:3: limits.buffer_size: " + size + "'1.5MiB'"}},
      {"size huge",
       "version: 1\nlimits:\n  buffer_size: 99999999999999999999999MiB\n",
       {"t.yaml:3: limits.buffer_size: must be between 4 KiB and 16 MiB, got 1000000000000 "
        "MiB"}},
  });
}

TEST(ConfigErrors, Dns) {
  const std::string shape =
      "expected IP, IP:PORT or [IPv6]:PORT with a literal address, e.g. \"10.0.0.2\" or "
      "\"[fd00::53]:5353\", got ";
  const std::string unit = "expected a duration with a unit (ms, s, m, h), e.g. \"10s\", got ";
  expect_errors({
      {"server name",
       "version: 1\ndns:\n  servers: [dns.example]\n",
       {"t.yaml:3: dns.servers[0]: " + shape + "'dns.example'"}},
      {"server name with port",
       "version: 1\ndns:\n  servers: [\"dns.example:53\"]\n",
       {"t.yaml:3: dns.servers[0]: " + shape + "'dns.example:53'"}},
      {"each bad server, on its line",
       "version: 1\ndns:\n  servers:\n    - 10.0.0.2\n    - \"\"\n    - \"[10.0.0.3]:53\"\n"
       "    - \"[::1]\"\n    - \"::1:53x\"\n",
       {"t.yaml:5: dns.servers[1]: " + shape + "''",
        "t.yaml:6: dns.servers[2]: " + shape + "'[10.0.0.3]:53'",
        "t.yaml:7: dns.servers[3]: " + shape + "'[::1]'",
        "t.yaml:8: dns.servers[4]: " + shape + "'::1:53x'"}},
      {"port zero",
       "version: 1\ndns:\n  servers: [\"10.0.0.2:0\"]\n",
       {"t.yaml:3: dns.servers[0]: port must be between 1 and 65535, got '0'"}},
      {"port too big",
       "version: 1\ndns:\n  servers: [\"[fd00::53]:65536\"]\n",
       {"t.yaml:3: dns.servers[0]: port must be between 1 and 65535, got '65536'"}},
      {"port empty",
       "version: 1\ndns:\n  servers: [\"10.0.0.2:\"]\n",
       {"t.yaml:3: dns.servers[0]: port must be between 1 and 65535, got ''"}},
      {"port not a number",
       "version: 1\ndns:\n  servers: [\"10.0.0.2:dns\"]\n",
       {"t.yaml:3: dns.servers[0]: port must be between 1 and 65535, got 'dns'"}},
      {"servers not a list",
       "version: 1\ndns:\n  servers: 10.0.0.2\n",
       {"t.yaml:3: dns.servers: expected a list, got '10.0.0.2'"}},
      {"server not a scalar",
       "version: 1\ndns:\n  servers:\n    - {a: 1}\n",
       {"t.yaml:4: dns.servers[0]: expected a DNS server address, got a mapping"}},
      {"cache_size big",
       "version: 1\ndns:\n  cache_size: 1000001\n",
       {"t.yaml:3: dns.cache_size: must be between 0 and 1000000, got 1000001"}},
      {"cache_size negative",
       "version: 1\ndns:\n  cache_size: -1\n",
       {"t.yaml:3: dns.cache_size: expected a non-negative integer, got '-1'"}},
      {"min_ttl big",
       "version: 1\ndns:\n  min_ttl: 25h\n",
       {"t.yaml:3: dns.min_ttl: must be at most 24h, got 90000s"}},
      {"min_ttl no unit",
       "version: 1\ndns:\n  min_ttl: 1\n",
       {"t.yaml:3: dns.min_ttl: " + unit + "'1'"}},
      {"max_ttl zero",
       "version: 1\ndns:\n  max_ttl: 0s\n",
       {"t.yaml:3: dns.max_ttl: must be greater than 0"}},
      {"max_ttl big",
       "version: 1\ndns:\n  max_ttl: 86400001ms\n",
       {"t.yaml:3: dns.max_ttl: must be at most 24h, got 86400001ms"}},
      {"max_ttl below min_ttl",
       "version: 1\ndns:\n  min_ttl: 10m\n  max_ttl: 300s\n",
       {"t.yaml:4: dns.max_ttl: must be at least dns.min_ttl (600s), got 300s"}},
      {"min_ttl above default max_ttl",
       "version: 1\ndns:\n  min_ttl: 301s\n",
       {"t.yaml:3: dns.max_ttl: must be at least dns.min_ttl (301s), got 300s"}},
      {"negative_ttl big",
       "version: 1\ndns:\n  negative_ttl: 2d\n",
       {"t.yaml:3: dns.negative_ttl: " + unit + "'2d'"}},
      {"negative_ttl over 24h",
       "version: 1\ndns:\n  negative_ttl: 1441m\n",
       {"t.yaml:3: dns.negative_ttl: must be at most 24h, got 86460s"}},
  });
}

TEST(ConfigLoad, DnsZeroesAndServerForms) {
  const config c = load_ok(
      "version: 1\ndns:\n  servers: [\"127.0.0.1\", \"127.0.0.1:5353\", \"::1\", "
      "\"[::1]:5353\"]\n  cache_size: 0\n  min_ttl: 0s\n  negative_ttl: 0ms\n");
  EXPECT_EQ(c.dns.servers,
            (std::vector<std::string>{"127.0.0.1", "127.0.0.1:5353", "::1", "[::1]:5353"}));
  EXPECT_EQ(c.dns.cache_size, 0u);
  EXPECT_EQ(c.dns.min_ttl, duration(0));
  EXPECT_EQ(c.dns.max_ttl, std::chrono::seconds(300));
  EXPECT_EQ(c.dns.negative_ttl, duration(0));
  // An empty list is the system's resolv.conf.
  EXPECT_TRUE(load_ok("version: 1\ndns:\n  servers: []\n").dns.servers.empty());
}

TEST(ConfigErrors, Log) {
  expect_errors({
      {"level",
       "version: 1\nlog:\n  level: verbose\n",
       {"t.yaml:3: log.level: must be trace, debug, info, warn, error, critical or off, got "
        "'verbose'"}},
      {"level upper",
       "version: 1\nlog:\n  level: INFO\n",
       {"t.yaml:3: log.level: must be trace, debug, info, warn, error, critical or off, got "
        "'INFO'"}},
      {"format",
       "version: 1\nlog:\n  format: text\n",
       {"t.yaml:3: log.format: must be json or squid, got 'text'"}},
      {"access empty",
       "version: 1\nlog:\n  access: \"\"\n",
       {"t.yaml:3: log.access: must be stdout, off or a file path"}},
      {"access list",
       "version: 1\nlog:\n  access: [stdout]\n",
       {"t.yaml:3: log.access: expected stdout, off or a file path, got a list"}},
  });
}

TEST(ConfigErrors, AllCollectedInFileOrder) {
  const std::string text = R"(version: 1
workers: 1000
listeners:
  - address: 0.0.0.0:1
    proxy_protocol: required
  - address: bad
gates:
  sources: []
rules:
  - action: deny
    bind: 10.0.0.1
    domains: ["a*b"]
limits:
  request_line: 64KiB
  header_block: 32KiB
timeouts:
  connect: 0s
typo: 1
)";
  EXPECT_EQ(
      errors_of(text),
      (std::vector<std::string>{
          "t.yaml:2: workers: must be between 0 and 256, got 1000",
          "t.yaml:5: listeners[0].trusted_proxies: must not be empty when proxy_protocol "
          "is optional or required",
          "t.yaml:6: listeners[1].address: expected HOST:PORT with a literal IP address, "
          "e.g. \"0.0.0.0:3128\" or \"[::]:3128\", got 'bad'",
          "t.yaml:8: gates.sources: must not be empty: no client could use the proxy",
          "t.yaml:11: rules[0].bind: only allowed on allow rules",
          "t.yaml:12: rules[0].domains[0]: invalid domain 'a*b': a wildcard is only allowed "
          "as a leading \"*.\"",
          "t.yaml:15: limits.header_block: must be at least limits.request_line (64 KiB), "
          "got 32 KiB",
          "t.yaml:17: timeouts.connect: must be greater than 0",
          "t.yaml:18: typo: unknown key; expected one of: version, workers, listeners, "
          "admin, gates, "
          "destinations, rules, egress, headers, timeouts, limits, relay, upstream, dns, log, "
          "drain",
      }));
}

TEST(ConfigErrors, NothingEscapes) {
  const std::vector<std::string> inputs = {
      std::string(5000, '[') + std::string(5000, ']'),
      "version: 1\nlisteners: &a\n  - address: *a\n",
      "version: !!binary AAAA\n",
      "version: 1\nworkers: !!int 3\n",
      std::string("version: 1\n\xff\xfe: 1\n"),
      std::string("version: 1\nlog:\n  access: \"a\0b\"\n", 30),
      "version: 1\n<<: {workers: 1}\n",
      "version: 1\nrules:\n  - &r {action: allow}\n  - *r\n",
      "\t",
      "version: 1\nlisteners:\n  - address: !!map {}\n",
      "%YAML 1.2\n---\nversion: 1\n",
      "version: 1\n...\n",
  };
  for (const auto& text : inputs) {
    EXPECT_NO_THROW({
      auto res = load(text);
      EXPECT_EQ(res.cfg.has_value(), res.errors.empty());
    }) << text;
  }
}

// ------------------------------------------------------------------------------------------
// Printing

TEST(ConfigPrint, ErrorFormat) {
  EXPECT_EQ((config_error{"a.yaml", 7, "timeouts.connect", "must be greater than 0"}).to_string(),
            "a.yaml:7: timeouts.connect: must be greater than 0");
  EXPECT_EQ((config_error{"env:EGRESSD_WORKERS", 0, "workers", "bad"}).to_string(),
            "env:EGRESSD_WORKERS: workers: bad");
  EXPECT_EQ((config_error{"a.yaml", 3, "", "YAML syntax error: x"}).to_string(),
            "a.yaml:3: YAML syntax error: x");
  EXPECT_EQ((config_error{"a.yaml", 0, "", "empty"}).to_string(), "a.yaml: empty");
}

TEST(ConfigPrint, Endpoint) {
  EXPECT_EQ((endpoint{"0.0.0.0", 3128}).to_string(), "0.0.0.0:3128");
  EXPECT_EQ((endpoint{"::", 3128}).to_string(), "[::]:3128");
  EXPECT_EQ((endpoint{"fe80::1", 0}).to_string(), "[fe80::1]:0");
}

// ------------------------------------------------------------------------------------------
// Round trip through to_yaml

void expect_round_trip(const config& c) {
  const std::string text = to_yaml(c);
  auto res = load_yaml(text, "roundtrip.yaml");
  ASSERT_TRUE(res.errors.empty()) << ::testing::PrintToString(printed(res.errors)) << "\n" << text;
  ASSERT_TRUE(res.cfg);
  EXPECT_EQ(diff(*res.cfg, c), "") << text;
  // Stable: printing the reloaded config gives the same text, apart from the source line.
  const std::string again = to_yaml(*res.cfg);
  EXPECT_EQ(again.substr(again.find('\n')), text.substr(text.find('\n')));
}

TEST(ConfigRoundTrip, Defaults) {
  expect_round_trip(defaults());
}

TEST(ConfigRoundTrip, DefaultsPrintEveryKey) {
  const std::string text = to_yaml(defaults());
  for (std::string_view key : printed_keys) {
    EXPECT_NE(text.find(key), std::string::npos) << key;
  }
  EXPECT_NE(text.find("tunnel_idle: 300s\n"), std::string::npos) << text;
  EXPECT_NE(text.find("request_line: 8KiB\n"), std::string::npos) << text;
  EXPECT_NE(text.find("proxy_protocol: \"off\"\n"), std::string::npos) << text;
}

TEST(ConfigRoundTrip, EveryFieldChanged) {
  const auto& f = files();
  config c = defaults();
  c.source = "a file with \"quotes\"\nand a newline";
  c.workers = 256;
  c.listeners.clear();
  {
    listener l;
    l.address = {"::", 8443};
    l.proxy_protocol = proxy_protocol_mode::required;
    l.trusted_proxies.add(*acl::cidr::parse("10.0.0.0/8"));
    l.trusted_proxies.add(*acl::cidr::parse("fd00::/8"));
    l.tls = tls_settings{f.path("cert.pem"), f.path("key.pem"), f.path("ca.pem")};
    c.listeners.push_back(l);
  }
  {
    listener l;
    l.address = {"127.0.0.1", 0};
    l.proxy_protocol = proxy_protocol_mode::optional;
    l.trusted_proxies.add(*acl::cidr::parse("192.0.2.1"));
    l.tls = tls_settings{f.path("cert.pem"), f.path("key.pem"), ""};
    c.listeners.push_back(l);
  }
  c.admin.address = {"::1", 19090};
  c.admin.tls = tls_settings{f.path("cert.pem"), f.path("key.pem"), f.path("ca.pem")};
  c.admin.health_address = endpoint{"0.0.0.0", 19091};
  c.gate.sources = acl::cidr_set({*acl::cidr::parse("0.0.0.0/0"), *acl::cidr::parse("::/0")});
  c.gate.connect_ports = *acl::port_set::parse_list("443,8000-8100,22");
  c.gate.http_ports = {};
  c.gate.deny_ip_literals = true;
  c.dest.deny_special = false;
  c.dest.allow.add(*acl::cidr::parse("169.254.170.2/32"));
  c.dest.deny.add(*acl::cidr::parse("2001:db8::/32"));
  {
    acl::rule r;
    r.name = "first";
    r.action = acl::rule_action::allow;
    r.sources = acl::cidr_set({*acl::cidr::parse("10.1.0.0/16")});
    r.domains = {"example.com", "*.example.org"};
    r.destinations = acl::cidr_set({*acl::cidr::parse("198.51.100.0/24")});
    r.ports = *acl::port_set::parse_list("443,9000-9001");
    r.methods = static_cast<std::uint8_t>(acl::method_class::connect);
    r.bind = acl::parse_address("2001:db8::5");
    c.rules.push_back(r);
  }
  {
    acl::rule r;
    r.name = "rule-2";
    r.action = acl::rule_action::deny;
    r.methods = 3;
    r.vpce_ids = {"vpce-0123456789abcdef0", "vpce-1"};
    r.client_identities = {"spiffe://corp.example/egress/*", "tenant a \"quoted\""};
    r.report_only = true;
    c.rules.push_back(r);
  }
  {
    acl::rule r;
    r.name = "only-http";
    r.action = acl::rule_action::allow;
    r.methods = static_cast<std::uint8_t>(acl::method_class::http);
    c.rules.push_back(r);
  }
  c.egress_bind = acl::parse_address("10.0.1.5");
  c.hdr = {xff_mode::remove, false, "proxy.example!#$%&'*+-.^_`|~"};
  c.timeout = {
      duration(1),   duration(1500),           std::chrono::minutes(5), std::chrono::hours(24),
      duration(999), std::chrono::seconds(61), duration(86399999),      duration(2500)};
  c.limit = {256, 1025, 1, 1000000, 16 * 1024 * 1024};
  c.dns = {{"192.0.2.53", "192.0.2.54:5353", "2001:db8::53", "[2001:db8::54]:5353"},
           1000000,
           duration(1500),
           std::chrono::hours(24),
           duration(0)};
  c.log = {"critical", log_format::squid, "/var/log/a \"b\" \\c #d: e\tf"};
  c.drain_ = {duration(1), std::chrono::hours(3)};
  for (auto xff : {xff_mode::append, xff_mode::replace, xff_mode::remove, xff_mode::off}) {
    c.hdr.x_forwarded_for = xff;
    for (const char* level : {"trace", "debug", "info", "warn", "error", "critical", "off"}) {
      c.log.level = level;
      expect_round_trip(c);
    }
  }
  c.log.access = "off";
  c.log.format = log_format::json;
  c.hdr.via = true;
  c.egress_bind.reset();
  c.listeners[0].proxy_protocol = proxy_protocol_mode::off;
  expect_round_trip(c);
}

// ------------------------------------------------------------------------------------------
// Files

TEST(ConfigFile, Unreadable) {
  auto res = load_file("/nonexistent/egressd.yaml");
  EXPECT_EQ(printed(res.errors),
            std::vector<std::string>{
                "/nonexistent/egressd.yaml: cannot open config file: No such file or directory"});
  EXPECT_FALSE(res.cfg);

  res = load_file(files().dir());
  EXPECT_EQ(printed(res.errors),
            std::vector<std::string>{files().dir() + ": cannot read config file: Is a directory"});
}

TEST(ConfigFile, ErrorsNameTheFile) {
  const std::string path = files().path("egressd.yaml");
  std::ofstream(path) << "version: 1\nworkers: x\n";
  auto res = load_file(path);
  EXPECT_EQ(
      printed(res.errors),
      std::vector<std::string>{path + ":2: workers: expected a non-negative integer, got 'x'"});
  std::ofstream(path) << "version: 1\nworkers: 2\n";
  res = load_file(path);
  ASSERT_TRUE(res.cfg);
  EXPECT_EQ(res.cfg->source, path);
  EXPECT_EQ(res.cfg->workers, 2u);
}

// ------------------------------------------------------------------------------------------
// Environment

using env_map = std::map<std::string, std::string>;

struct env_ok_case {
  std::string name;
  env_map env;
  std::function<void(const config&)> check;
};

TEST(ConfigEnv, ValidOverrides) {
  const auto& f = files();
  const std::vector<env_ok_case> cases = {
      {"listen",
       {{"EGRESSD_LISTEN", "127.0.0.1:8080, [::]:8080"}},
       [](const config& c) {
         ASSERT_EQ(c.listeners.size(), 2u);
         EXPECT_EQ(c.listeners[0].address.to_string(), "127.0.0.1:8080");
         EXPECT_EQ(c.listeners[1].address.to_string(), "[::]:8080");
         EXPECT_EQ(c.listeners[1].proxy_protocol, proxy_protocol_mode::off);
       }},
      {"admin",
       {{"EGRESSD_ADMIN_LISTEN", "0.0.0.0:9191"}},
       [](const config& c) { EXPECT_EQ(c.admin.address.to_string(), "0.0.0.0:9191"); }},
      {"sources",
       {{"EGRESSD_ALLOW_SOURCES", "203.0.113.0/24,2001:db8::/32"}},
       [](const config& c) {
         EXPECT_EQ(cidrs(c.gate.sources), "[203.0.113.0/24,2001:db8::/32,]");
       }},
      {"destinations",
       {{"EGRESSD_ALLOW_DESTINATIONS", "10.20.0.0/16"}},
       [](const config& c) { EXPECT_EQ(cidrs(c.dest.allow), "[10.20.0.0/16,]"); }},
      {"connect ports",
       {{"EGRESSD_CONNECT_PORTS", "443, 8443, 9000-9100"}},
       [](const config& c) {
         EXPECT_EQ(ports(c.gate.connect_ports), "[443-443,8443-8443,9000-9100,]");
       }},
      {"http ports",
       {{"EGRESSD_HTTP_PORTS", "80,8080"}},
       [](const config& c) { EXPECT_EQ(ports(c.gate.http_ports), "[80-80,8080-8080,]"); }},
      {"proxy protocol",
       {{"EGRESSD_PROXY_PROTOCOL", "required"},
        {"EGRESSD_TRUSTED_PROXIES", "10.0.0.0/8, 172.16.0.0/12"}},
       [](const config& c) {
         EXPECT_EQ(c.listeners[0].proxy_protocol, proxy_protocol_mode::required);
         EXPECT_EQ(cidrs(c.listeners[0].trusted_proxies), "[10.0.0.0/8,172.16.0.0/12,]");
       }},
      {"listen then proxy protocol",
       {{"EGRESSD_LISTEN", "0.0.0.0:1,0.0.0.0:2"},
        {"EGRESSD_PROXY_PROTOCOL", "optional"},
        {"EGRESSD_TRUSTED_PROXIES", "10.0.0.0/8"}},
       [](const config& c) {
         ASSERT_EQ(c.listeners.size(), 2u);
         for (const auto& l : c.listeners) {
           EXPECT_EQ(l.proxy_protocol, proxy_protocol_mode::optional);
           EXPECT_EQ(cidrs(l.trusted_proxies), "[10.0.0.0/8,]");
         }
       }},
      {"proxy protocol off",
       {{"EGRESSD_PROXY_PROTOCOL", "off"}},
       [](const config& c) { EXPECT_EQ(c.listeners[0].proxy_protocol, proxy_protocol_mode::off); }},
      {"log level",
       {{"EGRESSD_LOG_LEVEL", "debug"}},
       [](const config& c) { EXPECT_EQ(c.log.level, "debug"); }},
      {"log format",
       {{"EGRESSD_LOG_FORMAT", "squid"}},
       [](const config& c) { EXPECT_EQ(c.log.format, log_format::squid); }},
      {"access off",
       {{"EGRESSD_ACCESS_LOG", "off"}},
       [](const config& c) { EXPECT_EQ(c.log.access, "off"); }},
      {"access path",
       {{"EGRESSD_ACCESS_LOG", "/var/log/egressd.log"}},
       [](const config& c) { EXPECT_EQ(c.log.access, "/var/log/egressd.log"); }},
      {"workers", {{"EGRESSD_WORKERS", "4"}}, [](const config& c) { EXPECT_EQ(c.workers, 4u); }},
      {"workers max",
       {{"EGRESSD_WORKERS", "256"}},
       [](const config& c) { EXPECT_EQ(c.workers, 256u); }},
      {"egress bind",
       {{"EGRESSD_EGRESS_BIND", "10.0.1.5"}},
       [](const config& c) {
         ASSERT_TRUE(c.egress_bind);
         EXPECT_EQ(c.egress_bind->to_string(), "10.0.1.5");
       }},
      {"egress bind empty",
       {{"EGRESSD_EGRESS_BIND", ""}},
       [](const config& c) { EXPECT_FALSE(c.egress_bind); }},
      {"tls",
       {{"EGRESSD_LISTEN", "0.0.0.0:1,0.0.0.0:2"},
        {"EGRESSD_TLS_CERT", f.path("cert.pem")},
        {"EGRESSD_TLS_KEY", f.path("key.pem")}},
       [&](const config& c) {
         ASSERT_EQ(c.listeners.size(), 2u);
         for (const auto& l : c.listeners) {
           ASSERT_TRUE(l.tls);
           EXPECT_EQ(l.tls->cert_file, f.path("cert.pem"));
           EXPECT_EQ(l.tls->key_file, f.path("key.pem"));
           EXPECT_EQ(l.tls->client_ca_file, "");
         }
       }},
      {"tls with client ca",
       {{"EGRESSD_TLS_CERT", f.path("cert.pem")},
        {"EGRESSD_TLS_KEY", f.path("key.pem")},
        {"EGRESSD_TLS_CLIENT_CA", f.path("ca.pem")}},
       [&](const config& c) {
         ASSERT_TRUE(c.listeners[0].tls);
         EXPECT_EQ(c.listeners[0].tls->client_ca_file, f.path("ca.pem"));
         EXPECT_EQ(c.listeners[0].tls->client_crl_file, "");
       }},
      {"tls with client ca and crl",
       {{"EGRESSD_LISTEN", "0.0.0.0:1,0.0.0.0:2"},
        {"EGRESSD_TLS_CERT", f.path("cert.pem")},
        {"EGRESSD_TLS_KEY", f.path("key.pem")},
        {"EGRESSD_TLS_CLIENT_CA", f.path("ca.pem")},
        {"EGRESSD_TLS_CLIENT_CRL", f.path("key.pem")}},
       [&](const config& c) {
         ASSERT_EQ(c.listeners.size(), 2u);
         for (const auto& l : c.listeners) {
           ASSERT_TRUE(l.tls);
           EXPECT_EQ(l.tls->client_crl_file, f.path("key.pem"));
         }
         // Watched (a new CRL reloads by itself), once.
         EXPECT_EQ(std::count(c.watched_files.begin(), c.watched_files.end(), f.path("key.pem")),
                   1);
       }},
      {"ignored names",
       {{"EGRESSD_CONFIG", "/etc/egressd/egressd.yaml"},
        {"EGRESSD_BIN", "/usr/bin/egressd"},
        {"PATH", "/usr/bin"},
        {"EGRESS_LISTEN", "x"}},
       [](const config& c) { EXPECT_EQ(diff(c, defaults()), ""); }},
  };
  for (const auto& tc : cases) {
    SCOPED_TRACE(tc.name);
    config c = defaults();
    const auto errors = apply_env(c, tc.env);
    EXPECT_TRUE(errors.empty()) << ::testing::PrintToString(printed(errors));
    tc.check(c);
  }
}

TEST(ConfigEnv, OverridesApplyOverTheFile) {
  config c = load_ok(R"(version: 1
listeners:
  - address: 0.0.0.0:1
  - address: 0.0.0.0:2
    proxy_protocol: required
    trusted_proxies: [10.0.0.0/8]
)");
  const auto errors = apply_env(c, {{"EGRESSD_PROXY_PROTOCOL", "optional"},
                                    {"EGRESSD_TRUSTED_PROXIES", "192.168.0.0/16"},
                                    {"EGRESSD_WORKERS", "2"}});
  EXPECT_TRUE(errors.empty()) << ::testing::PrintToString(printed(errors));
  ASSERT_EQ(c.listeners.size(), 2u);
  EXPECT_EQ(c.listeners[0].address.to_string(), "0.0.0.0:1");
  for (const auto& l : c.listeners) {
    EXPECT_EQ(l.proxy_protocol, proxy_protocol_mode::optional);
    EXPECT_EQ(cidrs(l.trusted_proxies), "[192.168.0.0/16,]");
  }
  EXPECT_EQ(c.workers, 2u);
  EXPECT_EQ(c.source, "t.yaml");
}

TEST(ConfigEnv, ListenKeepsTheFileListenerSettings) {
  config c = load_ok(R"(version: 1
listeners:
  - address: 0.0.0.0:3128
    proxy_protocol: required
    trusted_proxies: [10.0.0.0/8]
)");
  const auto errors = apply_env(c, {{"EGRESSD_LISTEN", "127.0.0.1:1,[::1]:2"}});
  EXPECT_TRUE(errors.empty()) << ::testing::PrintToString(printed(errors));
  ASSERT_EQ(c.listeners.size(), 2u);
  EXPECT_EQ(c.listeners[0].address.to_string(), "127.0.0.1:1");
  EXPECT_EQ(c.listeners[1].address.to_string(), "[::1]:2");
  for (const auto& l : c.listeners) {
    EXPECT_EQ(l.proxy_protocol, proxy_protocol_mode::required) << "PROXY protocol kept";
    EXPECT_EQ(cidrs(l.trusted_proxies), "[10.0.0.0/8,]");
  }
  // Over the defaults (no PROXY protocol) the listeners stay plain.
  c = defaults();
  EXPECT_TRUE(apply_env(c, {{"EGRESSD_LISTEN", "127.0.0.1:1"}}).empty());
  EXPECT_EQ(c.listeners.at(0).proxy_protocol, proxy_protocol_mode::off);
}

TEST(ConfigEnv, KubernetesServiceLinkVariablesAreIgnored) {
  config c = defaults();
  const auto errors = apply_env(c, {{"EGRESSD_SERVICE_HOST", "10.100.0.7"},
                                    {"EGRESSD_SERVICE_PORT", "3128"},
                                    {"EGRESSD_SERVICE_PORT_PROXY", "3128"},
                                    {"EGRESSD_PORT", "tcp://10.100.0.7:3128"},
                                    {"EGRESSD_PORT_3128_TCP", "tcp://10.100.0.7:3128"},
                                    {"EGRESSD_PORT_3128_TCP_PROTO", "tcp"},
                                    {"EGRESSD_PORT_3128_TCP_PORT", "3128"},
                                    {"EGRESSD_PORT_3128_TCP_ADDR", "10.100.0.7"}});
  EXPECT_TRUE(errors.empty()) << ::testing::PrintToString(printed(errors));
  // Near misses are still errors.
  for (const char* bad : {"EGRESSD_PORTS", "EGRESSD_PORT_X_TCP", "EGRESSD_PORT_3128_TCP_HOST",
                          "EGRESSD_SERVICE_HOSTS"}) {
    c = defaults();
    EXPECT_EQ(apply_env(c, {{bad, "1"}}).size(), 1u) << bad;
  }
}

struct env_error_case {
  std::string name;
  env_map env;
  std::vector<std::string> want;
};

TEST(ConfigEnv, Malformed) {
  const auto& f = files();
  const std::string cidr_bits =
      "invalid CIDR '10.0.0.1/8': host bits set; did you mean 10.0.0.0/8?";
  const std::vector<env_error_case> cases = {
      {"listen name",
       {{"EGRESSD_LISTEN", "localhost:3128"}},
       {"env:EGRESSD_LISTEN: listeners: host 'localhost' is not a literal IP address (names are "
        "not allowed)"}},
      {"listen empty", {{"EGRESSD_LISTEN", ""}}, {"env:EGRESSD_LISTEN: listeners: empty value"}},
      {"listen empty item",
       {{"EGRESSD_LISTEN", "0.0.0.0:1,,0.0.0.0:2"}},
       {"env:EGRESSD_LISTEN: listeners: empty item in the comma list"}},
      {"listen two bad items",
       {{"EGRESSD_LISTEN", "0.0.0.0,0.0.0.0:99999"}},
       {"env:EGRESSD_LISTEN: listeners: expected HOST:PORT with a literal IP address, e.g. "
        "\"0.0.0.0:3128\" or \"[::]:3128\", got '0.0.0.0'",
        "env:EGRESSD_LISTEN: listeners: invalid port '99999' (0-65535)"}},
      {"listen duplicate",
       {{"EGRESSD_LISTEN", "0.0.0.0:1,0.0.0.0:1"}},
       {"env:EGRESSD_LISTEN: listeners[1].address: duplicate listener address (same as "
        "listeners[0])"}},
      {"admin",
       {{"EGRESSD_ADMIN_LISTEN", "9090"}},
       {"env:EGRESSD_ADMIN_LISTEN: admin.address: expected HOST:PORT with a literal IP address, "
        "e.g. \"0.0.0.0:3128\" or \"[::]:3128\", got '9090'"}},
      {"admin clashes with default listener",
       {{"EGRESSD_ADMIN_LISTEN", "0.0.0.0:3128"}},
       {"env:EGRESSD_ADMIN_LISTEN: admin.address: same address as listeners[0].address"}},
      {"sources",
       {{"EGRESSD_ALLOW_SOURCES", "10.0.0.1/8"}},
       {"env:EGRESSD_ALLOW_SOURCES: gates.sources: " + cidr_bits}},
      {"sources empty item",
       {{"EGRESSD_ALLOW_SOURCES", "10.0.0.0/8,"}},
       {"env:EGRESSD_ALLOW_SOURCES: gates.sources: empty item in the comma list"}},
      {"sources empty",
       {{"EGRESSD_ALLOW_SOURCES", ""}},
       {"env:EGRESSD_ALLOW_SOURCES: gates.sources: empty value"}},
      {"destinations",
       {{"EGRESSD_ALLOW_DESTINATIONS", "internal.example"}},
       {"env:EGRESSD_ALLOW_DESTINATIONS: destinations.allow: invalid CIDR 'internal.example': "
        "invalid address 'internal.example'"}},
      {"connect ports",
       {{"EGRESSD_CONNECT_PORTS", "443,abc"}},
       {"env:EGRESSD_CONNECT_PORTS: gates.connect_ports: invalid port list '443,abc': not a "
        "number: 'abc'"}},
      {"http ports",
       {{"EGRESSD_HTTP_PORTS", "90-80"}},
       {"env:EGRESSD_HTTP_PORTS: gates.http_ports: invalid port list '90-80': range 90-80 is "
        "reversed"}},
      {"http ports empty",
       {{"EGRESSD_HTTP_PORTS", ""}},
       {"env:EGRESSD_HTTP_PORTS: gates.http_ports: empty value"}},
      {"proxy protocol value",
       {{"EGRESSD_PROXY_PROTOCOL", "yes"}},
       {"env:EGRESSD_PROXY_PROTOCOL: listeners[*].proxy_protocol: must be off, optional or "
        "required, got 'yes'"}},
      {"proxy protocol without trusted",
       {{"EGRESSD_PROXY_PROTOCOL", "required"}},
       {"env:EGRESSD_PROXY_PROTOCOL: listeners[0].trusted_proxies: must not be empty when "
        "proxy_protocol is optional or required"}},
      {"listeners from env then proxy protocol",
       {{"EGRESSD_LISTEN", "0.0.0.0:1,0.0.0.0:2"}, {"EGRESSD_PROXY_PROTOCOL", "optional"}},
       {"env:EGRESSD_PROXY_PROTOCOL: listeners[0].trusted_proxies: must not be empty when "
        "proxy_protocol is optional or required",
        "env:EGRESSD_PROXY_PROTOCOL: listeners[1].trusted_proxies: must not be empty when "
        "proxy_protocol is optional or required"}},
      {"trusted proxies",
       {{"EGRESSD_TRUSTED_PROXIES", "10.0.0.1/8"}},
       {"env:EGRESSD_TRUSTED_PROXIES: listeners[*].trusted_proxies: " + cidr_bits}},
      {"bad trusted proxies with proxy protocol",
       {{"EGRESSD_PROXY_PROTOCOL", "required"}, {"EGRESSD_TRUSTED_PROXIES", "nope"}},
       {"env:EGRESSD_TRUSTED_PROXIES: listeners[*].trusted_proxies: invalid CIDR 'nope': "
        "invalid address 'nope'",
        "env:EGRESSD_PROXY_PROTOCOL: listeners[0].trusted_proxies: must not be empty when "
        "proxy_protocol is optional or required"}},
      {"log level",
       {{"EGRESSD_LOG_LEVEL", "loud"}},
       {"env:EGRESSD_LOG_LEVEL: log.level: must be trace, debug, info, warn, error, critical or "
        "off, got 'loud'"}},
      {"log format",
       {{"EGRESSD_LOG_FORMAT", "xml"}},
       {"env:EGRESSD_LOG_FORMAT: log.format: must be json or squid, got 'xml'"}},
      {"access log empty",
       {{"EGRESSD_ACCESS_LOG", ""}},
       {"env:EGRESSD_ACCESS_LOG: log.access: empty value"}},
      {"workers word",
       {{"EGRESSD_WORKERS", "four"}},
       {"env:EGRESSD_WORKERS: workers: expected a non-negative integer, got 'four'"}},
      {"workers negative",
       {{"EGRESSD_WORKERS", "-1"}},
       {"env:EGRESSD_WORKERS: workers: expected a non-negative integer, got '-1'"}},
      {"workers over max",
       {{"EGRESSD_WORKERS", "257"}},
       {"env:EGRESSD_WORKERS: workers: must be between 0 and 256, got 257"}},
      {"egress bind",
       {{"EGRESSD_EGRESS_BIND", "eth0"}},
       {"env:EGRESSD_EGRESS_BIND: egress.bind: 'eth0' is not an IP address literal (empty for "
        "the kernel's choice)"}},
      {"tls cert alone",
       {{"EGRESSD_TLS_CERT", f.path("cert.pem")}},
       {"env:EGRESSD_TLS_CERT: listeners[*].tls.cert: set without EGRESSD_TLS_KEY; set both or "
        "neither"}},
      {"tls key alone",
       {{"EGRESSD_TLS_KEY", f.path("key.pem")}},
       {"env:EGRESSD_TLS_KEY: listeners[*].tls.key: set without EGRESSD_TLS_CERT; set both or "
        "neither"}},
      {"tls cert missing file",
       {{"EGRESSD_TLS_CERT", "/nonexistent/c.pem"}, {"EGRESSD_TLS_KEY", f.path("key.pem")}},
       {"env:EGRESSD_TLS_CERT: listeners[*].tls.cert: cannot read '/nonexistent/c.pem': No such "
        "file or directory"}},
      {"tls key empty",
       {{"EGRESSD_TLS_CERT", f.path("cert.pem")}, {"EGRESSD_TLS_KEY", ""}},
       {"env:EGRESSD_TLS_KEY: listeners[*].tls.key: empty value"}},
      {"client ca without tls",
       {{"EGRESSD_TLS_CLIENT_CA", f.path("ca.pem")}},
       {"env:EGRESSD_TLS_CLIENT_CA: listeners[*].tls.client_ca: needs EGRESSD_TLS_CERT and "
        "EGRESSD_TLS_KEY (listeners[0] has no tls)"}},
      {"client crl without tls",
       {{"EGRESSD_TLS_CLIENT_CRL", f.path("ca.pem")}},
       {"env:EGRESSD_TLS_CLIENT_CRL: listeners[*].tls.client_crl: needs EGRESSD_TLS_CERT and "
        "EGRESSD_TLS_KEY (listeners[0] has no tls)"}},
      {"client crl without client ca",
       {{"EGRESSD_TLS_CERT", f.path("cert.pem")},
        {"EGRESSD_TLS_KEY", f.path("key.pem")},
        {"EGRESSD_TLS_CLIENT_CRL", f.path("ca.pem")}},
       {"env:EGRESSD_TLS_CLIENT_CRL: listeners[0].tls.client_crl: needs client_ca (only client "
        "certificates are checked)"}},
      {"client ca unreadable",
       {{"EGRESSD_TLS_CERT", f.path("cert.pem")},
        {"EGRESSD_TLS_KEY", f.path("key.pem")},
        {"EGRESSD_TLS_CLIENT_CA", f.dir()}},
       {"env:EGRESSD_TLS_CLIENT_CA: listeners[*].tls.client_ca: '" + f.dir() +
        "' is not a regular file"}},
      {"unknown, close to a known name",
       {{"EGRESSD_LISTN", "0.0.0.0:1"}},
       {"env:EGRESSD_LISTN: unknown variable; did you mean EGRESSD_LISTEN?"}},
      {"unknown, plural",
       {{"EGRESSD_ALLOW_SOURCE", "10.0.0.0/8"}},
       {"env:EGRESSD_ALLOW_SOURCE: unknown variable; did you mean EGRESSD_ALLOW_SOURCES?"}},
      {"unknown, far from any name",
       {{"EGRESSD_SOMETHING_ELSE", "1"}},
       {"env:EGRESSD_SOMETHING_ELSE: unknown variable; known: EGRESSD_LISTEN, "
        "EGRESSD_PROXY_PROTOCOL, EGRESSD_TRUSTED_PROXIES, EGRESSD_TLS_CERT, EGRESSD_TLS_KEY, "
        "EGRESSD_TLS_CLIENT_CA, EGRESSD_TLS_CLIENT_CRL, EGRESSD_ADMIN_LISTEN, EGRESSD_WORKERS, "
        "EGRESSD_ALLOW_SOURCES, "
        "EGRESSD_CONNECT_PORTS, EGRESSD_HTTP_PORTS, EGRESSD_ALLOW_DESTINATIONS, "
        "EGRESSD_EGRESS_BIND, EGRESSD_LOG_LEVEL, EGRESSD_LOG_FORMAT, EGRESSD_ACCESS_LOG"}},
      {"several at once",
       {{"EGRESSD_WORKERS", "x"}, {"EGRESSD_LOG_LEVEL", "y"}, {"EGRESSD_LISTEN", "z"}},
       {"env:EGRESSD_LISTEN: listeners: expected HOST:PORT with a literal IP address, e.g. "
        "\"0.0.0.0:3128\" or \"[::]:3128\", got 'z'",
        "env:EGRESSD_WORKERS: workers: expected a non-negative integer, got 'x'",
        "env:EGRESSD_LOG_LEVEL: log.level: must be trace, debug, info, warn, error, critical or "
        "off, got 'y'"}},
  };
  for (const auto& tc : cases) {
    config c = defaults();
    EXPECT_EQ(printed(apply_env(c, tc.env)), tc.want) << tc.name;
  }
}

TEST(ConfigEnv, MalformedValueLeavesFieldUnchanged) {
  config c = defaults();
  const auto errors = apply_env(c, {{"EGRESSD_ALLOW_SOURCES", "10.0.0.0/8,bad"},
                                    {"EGRESSD_LISTEN", "0.0.0.0:1,bad"},
                                    {"EGRESSD_LOG_FORMAT", "xml"},
                                    {"EGRESSD_WORKERS", "8"}});
  EXPECT_EQ(errors.size(), 3u);
  EXPECT_EQ(cidrs(c.gate.sources), cidrs(defaults().gate.sources));
  ASSERT_EQ(c.listeners.size(), 1u);
  EXPECT_EQ(c.listeners[0].address.to_string(), "0.0.0.0:3128");
  EXPECT_EQ(c.log.format, log_format::json);
  EXPECT_EQ(c.workers, 8u);  // the valid variable still applies
}

TEST(ConfigEnv, InvalidConfigWithoutEnvIsBlamedOnItsSource) {
  config c = defaults();
  c.gate.sources = {};
  EXPECT_EQ(printed(apply_env(c, {})),
            std::vector<std::string>{
                "<defaults>: gates.sources: must not be empty: no client could use the proxy"});
}

TEST(ConfigEnv, ClientCaOverFileTls) {
  const auto& f = files();
  config c = load_ok("version: 1\nlisteners:\n  - address: 0.0.0.0:1\n    tls:\n      cert: " +
                     f.path("cert.pem") + "\n      key: " + f.path("key.pem") + "\n");
  EXPECT_TRUE(apply_env(c, {{"EGRESSD_TLS_CLIENT_CA", f.path("ca.pem")}}).empty());
  ASSERT_TRUE(c.listeners[0].tls);
  EXPECT_EQ(c.listeners[0].tls->cert_file, f.path("cert.pem"));
  EXPECT_EQ(c.listeners[0].tls->client_ca_file, f.path("ca.pem"));
}

TEST(ConfigEnv, EnvironmentReadsOnlyEgressdVariables) {
  ASSERT_EQ(::setenv("EGRESSD_UNIT_TEST_PROBE", "a=b", 1), 0);
  ASSERT_EQ(::setenv("NOT_EGRESSD_UNIT_TEST_PROBE", "x", 1), 0);
  const auto env = environment();
  ::unsetenv("EGRESSD_UNIT_TEST_PROBE");
  ::unsetenv("NOT_EGRESSD_UNIT_TEST_PROBE");
  ASSERT_TRUE(env.contains("EGRESSD_UNIT_TEST_PROBE"));
  EXPECT_EQ(env.at("EGRESSD_UNIT_TEST_PROBE"), "a=b");
  EXPECT_FALSE(env.contains("NOT_EGRESSD_UNIT_TEST_PROBE"));
  for (const auto& [name, value] : env) EXPECT_EQ(name.rfind("EGRESSD_", 0), 0u) << name;
  EXPECT_FALSE(environment().contains("EGRESSD_UNIT_TEST_PROBE"));
}

}  // namespace
}  // namespace egressd::config

namespace egressd::config {
namespace {

// Source lists from files: merged with inline CIDRs, remembered for the watcher, and errors that
// point into the list file.
TEST(ConfigSourceFiles, LoadMergeAndWatch) {
  const std::string clients = files().path("clients.txt");
  const std::string ranges = files().path("ranges.txt");
  std::ofstream(clients) << "# office\n10.9.0.0/16\n\n  192.0.2.7  # one host\r\n";
  std::ofstream(ranges) << "198.51.100.0/24\n2001:db8::/32\n";
  const config c = load_ok("version: 1\ngates:\n  sources_file: " + clients +
                           "\n  deny_ip_literals: true\nrules:\n  - action: allow\n"
                           "    sources: [203.0.113.0/24]\n    sources_file: " +
                           ranges + "\n    vpce_ids: [VPCE-0ABC]\n");
  // The gate file replaces the default list (10.0.0.0/8 and loopback are gone).
  EXPECT_EQ(cidrs(c.gate.sources), "[10.9.0.0/16,192.0.2.7/32,]");
  EXPECT_EQ(c.gate.sources_file, clients);
  EXPECT_TRUE(c.gate.deny_ip_literals);
  ASSERT_EQ(c.rules.size(), 1u);
  ASSERT_TRUE(c.rules[0].sources);
  EXPECT_EQ(cidrs(*c.rules[0].sources), "[203.0.113.0/24,198.51.100.0/24,2001:db8::/32,]");
  EXPECT_EQ(c.rules[0].vpce_ids, std::vector<std::string>{"vpce-0abc"});
  EXPECT_EQ(c.watched_files, (std::vector<std::string>{clients, ranges}));

  // The printed config shows the merged list and reads back to the same config.
  auto again = load_yaml(to_yaml(c), "printed");
  ASSERT_TRUE(again.errors.empty()) << ::testing::PrintToString(printed(again.errors));
  EXPECT_EQ(diff(c, *again.cfg), "");

  // An empty file: a rule matching no client is fine, an empty gate is not.
  const std::string empty = files().path("empty.txt");
  std::ofstream(empty) << "# nothing yet\n";
  const config e =
      load_ok("version: 1\nrules:\n  - action: deny\n    sources_file: " + empty + "\n");
  ASSERT_TRUE(e.rules[0].sources);
  EXPECT_TRUE(e.rules[0].sources->empty());
  EXPECT_EQ(load_yaml(to_yaml(e), "printed").errors.size(), 0u);
  EXPECT_EQ(errors_of("version: 1\ngates:\n  sources_file: " + empty + "\n"),
            std::vector<std::string>{"t.yaml:3: gates.sources_file: leaves the source gate "
                                     "empty: no client could use the proxy"});
}

TEST(ConfigSourceFiles, ErrorsPointIntoTheListFile) {
  const std::string bad = files().path("bad.txt");
  std::ofstream(bad) << "10.0.0.0/8\n10.0.0.1/8\nnot-a-cidr\n";
  EXPECT_EQ(errors_of("version: 1\nrules:\n  - action: allow\n    sources_file: " + bad + "\n"),
            (std::vector<std::string>{
                bad + ":2: rules[0].sources_file: invalid CIDR '10.0.0.1/8': host bits set; did "
                      "you mean 10.0.0.0/8?",
                bad + ":3: rules[0].sources_file: invalid CIDR 'not-a-cidr': invalid address "
                      "'not-a-cidr'"}));
  const std::string missing = files().path("missing.txt");
  auto res = load("version: 1\ngates:\n  sources_file: " + missing + "\n");
  ASSERT_EQ(res.errors.size(), 1u);
  EXPECT_EQ(res.errors[0].line, 3);
  EXPECT_EQ(res.errors[0].path, "gates.sources_file");
  EXPECT_NE(res.errors[0].message.find("cannot read"), std::string::npos);
}

}  // namespace
}  // namespace egressd::config

#include "egressd/config/file_watch.hpp"

namespace egressd::config {
namespace {

TEST(ConfigFileWatch, AChangeSinceTheStampIsReported) {
  const std::string a = files().path("watch-stamp.txt");
  std::ofstream(a) << "1\n";
  const auto stamps = file_watch::stamp({a});
  std::ofstream(a, std::ios::app) << "2\n";  // replaced after it was read, before the watch
  file_watch w;
  w.reset({a}, stamps);
  EXPECT_FALSE(w.poll());
  EXPECT_TRUE(w.poll());
  EXPECT_EQ(w.changed(), std::vector<std::string>{a});
  w.reset({a});  // the current state: nothing to report
  EXPECT_FALSE(w.poll());
  EXPECT_FALSE(w.poll());
}

TEST(ConfigFileWatch, ReportsAChangeOnceItHoldsForTwoPolls) {
  const std::string a = files().path("watch-a.txt");
  const std::string b = files().path("watch-b.txt");
  std::ofstream(a) << "10.0.0.0/8\n";
  std::filesystem::remove(b);
  file_watch w;
  w.reset({a, b});
  EXPECT_FALSE(w.poll()) << "nothing changed";

  std::ofstream(a, std::ios::app) << "10.1.0.0/16\n";  // size changes
  EXPECT_FALSE(w.poll()) << "first sight of a change: wait one more poll";
  EXPECT_TRUE(w.poll()) << "the same changed state again: report it";
  EXPECT_EQ(w.changed(), std::vector<std::string>{a});
  EXPECT_FALSE(w.poll()) << "reported once";

  std::ofstream(b) << "x\n";  // appears
  EXPECT_FALSE(w.poll());
  std::ofstream(b, std::ios::app) << "y\n";  // still being written: the state moved again
  EXPECT_FALSE(w.poll());
  EXPECT_TRUE(w.poll());

  // Replaced by rename (new inode, same size): still a change.
  const std::string tmp = files().path("watch-tmp.txt");
  std::ofstream(tmp) << "x\ny\n";
  std::filesystem::rename(tmp, b);
  EXPECT_FALSE(w.poll());
  EXPECT_TRUE(w.poll());

  std::filesystem::remove(a);  // vanishes
  EXPECT_FALSE(w.poll());
  EXPECT_TRUE(w.poll());

  // A change that reverts before the second poll is not reported.
  std::ofstream(a) << "1\n";
  EXPECT_FALSE(w.poll());
  std::filesystem::remove(a);
  EXPECT_FALSE(w.poll());
  EXPECT_FALSE(w.poll());
}

// Found by fuzz/fuzz_config.cpp: a document that starts with a stray ',' made YAML::LoadAll
// (yaml-cpp 0.7) report empty documents forever, appending each until memory ran out, so a typo
// in the config hung --check-config and a reload. load_yaml now counts documents itself and
// stops at the second.
TEST(ConfigErrors, StrayCommaDocumentDoesNotHang) {
  expect_errors({
      {"comma only", ",\n", {"t.yaml: empty config; expected at least version: 1"}},
      {"commas before a key",
       ",,,version: 1\nrules: [[[]]]\n",
       {"t.yaml: empty config; expected at least version: 1"}},
      {"comma document after a valid one",
       "version: 1\n---\n,\n",
       {"t.yaml: more than one YAML document; expected exactly one"}},
      {"comma after a document end",
       "version: 1\n...\n,\n",
       {"t.yaml: more than one YAML document; expected exactly one"}},
  });
}

}  // namespace
}  // namespace egressd::config
