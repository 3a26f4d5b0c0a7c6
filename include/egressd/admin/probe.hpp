#pragma once
// `egressd probe URL`: the container health check without curl in the image. One HTTP/1.0 GET
// to a literal address, bounded by a timeout; healthy means status 200.
#include <chrono>
#include <string>

#include "egressd/config/config.hpp"

namespace egressd::admin {

struct probe_result {
  bool healthy = false;
  int status = 0;       // HTTP status received; 0: none
  std::string message;  // one line for stderr: what was received or what failed
};

// url: "http://HOST:PORT/PATH" with HOST an IP literal ("127.0.0.1", "[::1]"). Plain HTTP only:
// with a TLS admin listener, probe the plain health port (admin.health_address) instead.
probe_result probe(const std::string& url, std::chrono::milliseconds timeout);

// The readiness URL `egressd probe` uses when given none: admin.health_address when set, else
// the admin listener unless it is TLS (the probe has no client certificate); a wildcard address
// is probed on the loopback address of its family. Empty with *why set when there is none.
std::string probe_url(const config::admin_settings& admin, std::string* why);

}  // namespace egressd::admin
