#pragma once
// The effective configuration: plain structs, filled from the embedded defaults, then the YAML
// file, then the EGRESSD_* environment. Validation reports every error with its location.
#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "egressd/acl/cidr.hpp"
#include "egressd/acl/destination_policy.hpp"
#include "egressd/acl/port_set.hpp"
#include "egressd/acl/rules.hpp"

namespace egressd::config {

using duration = std::chrono::milliseconds;

enum class proxy_protocol_mode : std::uint8_t { off, optional, required };
enum class xff_mode : std::uint8_t {
  append,
  replace,
  remove,
  off
};  // YAML: append|replace|delete|off
enum class log_format : std::uint8_t { json, squid };

struct endpoint {
  std::string host;  // literal address: "0.0.0.0", "::", "127.0.0.1" (no names)
  std::uint16_t port = 0;
  std::string to_string() const;  // "0.0.0.0:3128", "[::]:3128"
};

struct tls_settings {
  std::string cert_file;
  std::string key_file;
  std::string client_ca_file;   // empty: no client certificate required
  std::string client_crl_file;  // PEM CRLs checked against client certificates; empty: none
};

struct listener {
  endpoint address;
  proxy_protocol_mode proxy_protocol = proxy_protocol_mode::off;
  acl::cidr_set trusted_proxies;    // peers allowed to send a PROXY header
  std::optional<tls_settings> tls;  // HTTPS-to-proxy: TLS before the first request byte
};

struct admin_settings {
  endpoint address;
  std::optional<tls_settings> tls;  // metrics, health and status over TLS (client_ca: mTLS)
  // A second, plain-HTTP admin port serving only /healthz and /readyz (for a load balancer
  // health check that cannot present a client certificate); unset: none.
  std::optional<endpoint> health_address;
};

struct gates {
  acl::cidr_set sources;          // clients allowed to use the proxy at all (incl. sources_file)
  std::string sources_file;       // CIDR list file merged into sources, re-read on change
  acl::port_set connect_ports;    // CONNECT destination ports
  acl::port_set http_ports;       // plain-HTTP destination ports
  bool deny_ip_literals = false;  // refuse targets written as an IP address (CONNECT and http)
};

struct destinations {
  bool deny_special = true;  // the SPEC section 5 list
  acl::cidr_set allow;       // exceptions to the special list
  acl::cidr_set deny;        // extra denied ranges
};

struct headers {
  xff_mode x_forwarded_for = xff_mode::append;
  bool via = true;
  std::string via_name = "egressd";  // pseudonym in Via; a received Via naming it is a loop
};

struct timeouts {
  duration header{std::chrono::seconds(10)};           // whole request header -> 408
  duration keepalive_idle{std::chrono::seconds(60)};   // client idle between requests
  duration connect{std::chrono::seconds(10)};          // upstream connect -> 504
  duration dns{std::chrono::seconds(5)};               // name resolution -> 504
  duration response_header{std::chrono::seconds(60)};  // upstream response header -> 504
  duration idle{std::chrono::seconds(60)};             // no read/write progress on a request
  duration tunnel_idle{std::chrono::seconds(300)};     // CONNECT tunnel with no bytes either way
  duration tls_handshake{std::chrono::seconds(10)};    // TLS listener handshake (after PROXY)
};

struct limits {
  std::size_t request_line = 8 * 1024;   // -> 414
  std::size_t header_block = 64 * 1024;  // -> 431
  std::size_t header_fields = 100;       // -> 431
  std::size_t max_connections = 10000;   // per process; beyond: 503 and close
  std::size_t buffer_size = 64 * 1024;   // relay copy buffer per direction
};

struct relay_settings {
  bool splice = true;                  // zero-copy splice(2) for tunnels; false: buffered copy
  std::size_t pipe_size = 256 * 1024;  // F_SETPIPE_SZ request per pipe
  std::size_t max_pipes = 1024;        // pipes across all workers; beyond: copy fallback
};

struct upstream_settings {
  bool keepalive = true;                            // reuse upstream connections (plain HTTP)
  duration idle_timeout{std::chrono::seconds(30)};  // idle pooled connection lifetime
  std::size_t max_idle = 256;                       // idle connections per worker
  std::size_t max_idle_per_host = 128;              // per (address, port, host, egress)
};

struct dns_settings {
  std::vector<std::string> servers;                // "IP[:PORT]", "[v6]:PORT"; empty: resolv.conf
  std::size_t cache_size = 10000;                  // entries per worker; 0: no cache
  duration min_ttl{std::chrono::seconds(1)};       // answers cached for their TTL, clamped
  duration max_ttl{std::chrono::seconds(300)};     // to [min_ttl, max_ttl]
  duration negative_ttl{std::chrono::seconds(5)};  // NXDOMAIN / no address; 0: not cached
};

struct logging {
  std::string level = "info";  // trace|debug|info|warn|error|critical|off
  log_format format = log_format::json;
  std::string access = "stdout";  // stdout|off|PATH
};

struct drain {
  duration delay{std::chrono::seconds(5)};
  duration timeout{std::chrono::seconds(90)};
};

struct config {
  int version = 1;
  std::string source = "<defaults>";  // file name, or "<defaults>"
  unsigned workers = 0;               // 0: one per core
  std::vector<listener> listeners;
  admin_settings admin;
  gates gate;
  destinations dest;
  std::vector<acl::rule> rules;
  std::optional<acl::address> egress_bind;  // default source address for upstream connections
  headers hdr;
  timeouts timeout;
  limits limit;
  relay_settings relay;
  upstream_settings upstream;
  dns_settings dns;
  logging log;
  drain drain_;
  // Derived, not a key: every source-list file the config read (gates and rules), as opened.
  // A change to one of them reloads the config like SIGHUP.
  std::vector<std::string> watched_files;
};

// One problem, printed as "FILE:LINE: key.path: message" (LINE omitted when unknown, e.g. for
// an environment variable, where FILE is "env:EGRESSD_NAME").
struct config_error {
  std::string file;
  int line = 0;  // 1-based; 0 when unknown
  std::string path;
  std::string message;
  std::string to_string() const;
};

struct load_result {
  std::optional<config> cfg;         // set when errors is empty
  std::vector<config_error> errors;  // every error found, in file order
};

// The embedded defaults (SPEC section 2): proxy on 0.0.0.0:3128, admin on 127.0.0.1:9090,
// sources loopback + RFC 1918 + ULA, CONNECT 443, HTTP 80, special destinations denied.
config defaults();

// Parses YAML text over the defaults. file_name is used in error messages only.
load_result load_yaml(const std::string& text, const std::string& file_name);

// Reads and parses a file (an unreadable file is one error).
load_result load_file(const std::string& path);

// Applies EGRESSD_* overrides from env (name -> value) over cfg. Returns the errors; cfg is
// modified only by the valid variables.
std::vector<config_error> apply_env(config& cfg, const std::map<std::string, std::string>& env);

// The process environment's EGRESSD_* variables.
std::map<std::string, std::string> environment();

// The effective config as YAML that load_yaml accepts (round-trips).
std::string to_yaml(const config& cfg);

}  // namespace egressd::config
