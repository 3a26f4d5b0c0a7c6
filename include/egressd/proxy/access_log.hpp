#pragma once
// One line per request or tunnel (SPEC section 6): JSON by default, Squid's native access.log
// format as a drop-in for existing pipelines. Written with one write(2) per line so lines from
// different workers never interleave.
#include <chrono>
#include <cstdint>
#include <mutex>
#include <string>

namespace egressd::proxy {

struct access_record {
  std::chrono::system_clock::time_point start;
  std::uint64_t conn_id = 0;
  std::string client_addr;
  std::uint16_t client_port = 0;
  std::string proxy_addr;  // address from a PROXY header; empty: none
  std::string lb_peer;     // the load balancer peer when a PROXY header was used; empty: none
  std::string method;
  std::string target;
  int status = 0;  // 0: no response was sent
  std::string rule;
  std::uint64_t bytes_in = 0;     // payload bytes received from the client (body or tunnel)
  std::uint64_t bytes_out = 0;    // payload bytes sent to the client (body or tunnel)
  std::uint64_t reply_bytes = 0;  // every byte written to the client: heads, framing, payload
  std::string content_type;       // the response's Content-Type (ours for error responses)
  double duration_ms = 0;
  std::string upstream_addr;
  std::string egress_addr;
  std::string error;
  std::string vpce_id;
  std::string user;             // X-Authenticated-User from the security service; empty: none
  std::string would_deny;       // the report-only rule that would have denied; empty: none
  std::string client_identity;  // TLS listener with client_ca: the certificate's identities
  std::string relay;            // tunnels: splice | copy | copy_fallback | tls_copy; else empty
};

enum class access_format : std::uint8_t { json, squid };

// Appends s to out as a JSON string literal. Bytes >= 0x80 are escaped as \u00XX so every line
// is valid JSON whatever a client put in a target.
void append_json_string(std::string& out, std::string_view s);

std::string format_json(const access_record& r);
// Appends the JSON line (newline included) to out.
void format_json(std::string& out, const access_record& r);
std::string format_squid(const access_record& r);

class access_log {
 public:
  access_log() = default;
  ~access_log();
  access_log(const access_log&) = delete;
  access_log& operator=(const access_log&) = delete;

  // destination: "stdout", "off", or a file path (opened for append). Returns an error message,
  // empty on success.
  std::string open(const std::string& destination, access_format format);
  void write(const access_record& r);
  bool enabled() const noexcept { return fd_ >= 0; }
  // A file destination is opened again by its path (after log rotation moved it away); the
  // descriptor number stays, so concurrent writers need no lock. Returns an error message (the
  // old file stays in use), empty on success or when the destination is not a file.
  std::string reopen();

 private:
  int fd_ = -1;
  bool owned_ = false;
  std::string path_;  // the file destination, for reopen()
  access_format format_ = access_format::json;
  std::mutex mutex_;
};

}  // namespace egressd::proxy
