#pragma once
// The read-only status page (GET /status on the admin listener): plain HTML, no script. Pure:
// the caller gathers the facts, this renders them with every value HTML-escaped.
#include <chrono>
#include <string>
#include <string_view>
#include <vector>

#include <prometheus/metric_family.h>

#include "egressd/proxy/status.hpp"

namespace egressd::admin {

struct status_facts {
  std::string version;
  std::chrono::system_clock::time_point started;
  std::chrono::steady_clock::duration uptime{};
  std::string config_source;  // file name or "<defaults>"
  std::string
      config_sha256;  // of the effective config (file + environment), as --check-config prints it
  std::string last_reload;  // "never", or "success at ..." / "failure at ..."
  std::vector<std::string> listeners;
  std::string admin;
  bool draining = false;
};

std::string html_escape(std::string_view s);

// Connections are shown in the given order (the caller sorts oldest first); at most
// max_connections rows, with a line saying how many were left out.
std::string render_status(const status_facts& facts,
                          const std::vector<proxy::connection_status>& connections,
                          const std::vector<prometheus::MetricFamily>& metrics,
                          std::size_t max_connections = 500);

// SHA-256 of text as lower-case hex.
std::string sha256_hex(std::string_view text);

}  // namespace egressd::admin
