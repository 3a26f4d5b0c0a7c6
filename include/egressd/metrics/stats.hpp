#pragma once
// The metric set of SPEC section 6, declared once at start-up on a prometheus-cpp registry and
// passed by reference to every module that counts. Every labelled child is created here, in the
// constructor, so the data path never looks a metric up by its labels (a hash of strings under
// the family's mutex): it increments a Counter it already holds. Label values come only from
// the enums below and the listener names given at construction, so no label is unbounded;
// a host name is never a label.
//
// Thread safety: prometheus-cpp counters and gauges are atomics and histograms take a short
// mutex, so every worker may count into the same stats while the admin thread serializes it.
// Counting still costs an atomic read-modify-write on a shared cache line: callers count per
// request or per chunk, never per byte (STYLE.md).
#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

// The metric types are part of this interface (callers increment the children directly).
#include <prometheus/counter.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/metric_family.h>

namespace prometheus {
class Registry;
}  // namespace prometheus

namespace egressd::metrics {

// Label values. The last enumerator of each is `count_`, the number of values.

enum class request_kind : std::uint8_t { connect, http, count_ };

enum class request_outcome : std::uint8_t {
  ok,              // response relayed, or tunnel ended normally
  client_error,    // malformed or over-limit request (4xx other than a denial)
  denied,          // refused by policy (403)
  upstream_error,  // origin unreachable or misbehaving (502)
  timeout,         // any deadline, either side (408, 504, or a closed tunnel)
  internal_error,  // a bug or resource exhaustion on our side (500, 503)
  count_
};

enum class denial_reason : std::uint8_t {
  source,
  port,
  rule,
  destination,
  ip_literal,
  loop,
  method,
  count_
};

enum class direction : std::uint8_t { client_to_upstream, upstream_to_client, count_ };

enum class timeout_phase : std::uint8_t {
  header,           // the whole request header did not arrive in time
  keepalive,        // a keep-alive connection stayed idle between requests
  dns,              // name resolution
  connect,          // upstream TCP connect
  response_header,  // upstream response header
  idle,             // no read or write progress while relaying a request or response
  tunnel_idle,      // no traffic either way on a CONNECT tunnel
  count_
};

enum class upstream_error_kind : std::uint8_t {
  dns,
  refused,
  timeout,
  reset,
  bad_response,
  count_
};

// tls_copy: a tunnel on a TLS listener, relayed through user space (TLS records must be
// decrypted; splice cannot apply).
enum class relay_mode : std::uint8_t { splice, copy, tls_copy, count_ };

// Why a TLS listener's handshake failed.
enum class tls_failure : std::uint8_t {
  timeout,         // timeouts.tls_handshake expired
  no_client_cert,  // client_ca is set and the client sent no certificate
  cert_expired,    // the client certificate is expired or not yet valid
  cert_untrusted,  // the client certificate does not chain to client_ca (or is malformed)
  cert_revoked,    // the client certificate is listed in client_crl
  crl_unusable,    // client_crl has no valid CRL for the certificate's issuer (missing, expired)
  protocol,        // no common version or cipher, or a malformed handshake
  not_tls,         // the client spoke plain HTTP to a TLS listener
  client_closed,   // the client closed or reset the connection during the handshake
  other,
  count_
};

enum class cache_result : std::uint8_t { hit, miss, count_ };

// Why an idle upstream connection left the pool without being reused.
enum class pool_close_reason : std::uint8_t {
  host_limit,  // upstream.max_idle_per_host idle connections to its destination were kept
  pool_limit,  // upstream.max_idle idle connections were kept by its worker
  expired,     // idle for upstream.idle_timeout
  stale,       // the origin closed it, or sent bytes nobody asked for
  count_
};

enum class reload_result : std::uint8_t { success, failure, count_ };

enum class proxy_protocol_error : std::uint8_t {
  invalid,    // a malformed PROXY header
  untrusted,  // a PROXY header from a peer not allowed to send one
  missing,    // no header where the listener requires one
  count_
};

// The label value as it appears in the exposition ("client_to_upstream", ...).
std::string_view to_string(request_kind v) noexcept;
std::string_view to_string(request_outcome v) noexcept;
std::string_view to_string(denial_reason v) noexcept;
std::string_view to_string(direction v) noexcept;
std::string_view to_string(timeout_phase v) noexcept;
std::string_view to_string(upstream_error_kind v) noexcept;
std::string_view to_string(relay_mode v) noexcept;
std::string_view to_string(cache_result v) noexcept;
std::string_view to_string(reload_result v) noexcept;
std::string_view to_string(proxy_protocol_error v) noexcept;
std::string_view to_string(tls_failure v) noexcept;
std::string_view to_string(pool_close_reason v) noexcept;

template <typename E>
inline constexpr std::size_t count_of = static_cast<std::size_t>(E::count_);

class stats {
  // First member: every reference below points into it, so it is built first and dies last.
  std::unique_ptr<prometheus::Registry> registry_;

 public:
  // listeners: one label value per proxy listener, in configuration order ("0.0.0.0:3128");
  // the index into this list is the `listener` argument of the per-listener helpers. Throws
  // (std::invalid_argument from prometheus-cpp) only on a programming error in the names.
  explicit stats(const std::vector<std::string>& listeners);
  ~stats();
  stats(const stats&) = delete;
  stats& operator=(const stats&) = delete;

  // Unlabelled metrics, used directly: `stats.accept_errors.Increment();`.
  prometheus::Counter& accept_errors;         // egressd_accept_errors_total
  prometheus::Counter& connections_rejected;  // egressd_connections_rejected_total
  prometheus::Counter& splice_fallbacks;      // egressd_splice_fallbacks_total
  prometheus::Counter& upstream_pool_reuses;  // egressd_upstream_pool_reuses_total
  prometheus::Counter& tls_handshakes;        // egressd_tls_handshakes_total (completed)
  prometheus::Gauge& draining;                // egressd_draining (0 or 1)
  prometheus::Gauge& tunnels_active;          // egressd_tunnels_active
  prometheus::Gauge& reload_ok;               // egressd_config_last_reload_successful
  prometheus::Gauge& reload_time;  // egressd_config_last_reload_success_timestamp_seconds
  prometheus::Histogram& upstream_connect_duration;  // egressd_upstream_connect_duration_seconds
  prometheus::Histogram& dns_duration;               // egressd_dns_duration_seconds
  prometheus::Histogram& tunnel_duration;            // egressd_tunnel_duration_seconds

  // Per listener (index as in the constructor's list; an index out of range is ignored).
  void connection_opened(std::size_t listener) noexcept;            // accepted_total +1, active +1
  void connection_closed(std::size_t listener) noexcept;            // active -1
  prometheus::Counter& connections_accepted(std::size_t listener);  // at(): throws out of range
  prometheus::Gauge& connections_active(std::size_t listener);
  std::size_t listener_count() const noexcept { return accepted_.size(); }

  // Labelled counters, one call per event.
  void request_done(request_kind kind, request_outcome outcome) noexcept;
  void denial(denial_reason reason) noexcept;
  void bytes(direction dir, std::uint64_t n) noexcept;
  void bytes(std::uint64_t client_to_upstream, std::uint64_t upstream_to_client) noexcept;
  void dns_cache(cache_result result) noexcept;
  void timeout(timeout_phase phase) noexcept;
  void upstream_error(upstream_error_kind kind) noexcept;
  void relay(relay_mode mode) noexcept;
  void config_reload(reload_result result) noexcept;  // also sets the last-reload gauges
  void config_loaded(bool ok) noexcept;               // last-reload gauges only (at start)
  void proxy_protocol_failure(proxy_protocol_error reason) noexcept;
  void set_draining(bool on) noexcept;
  // A report-only rule matched (its request went on to the next rules). Labelled by rule name:
  // names come only from the config, so the label stays bounded. report_only_rules() creates
  // the children of the configured report-only rules (at start and on reload) so each series
  // exists at 0 before its first match; a match finds its child by label (a short lock, and
  // only for report-only matches).
  void report_only_rules(const std::vector<std::string>& names) noexcept;
  void report_only_match(std::string_view rule) noexcept;
  // The same for rules with client_identities: egressd_client_identity_matches_total{rule}
  // counts requests such a rule decided (by rule, never by identity: identities are unbounded).
  void identity_rules(const std::vector<std::string>& names) noexcept;
  void identity_match(std::string_view rule) noexcept;
  void tls_handshake_failure(tls_failure reason) noexcept;
  // The same for the admin listener's TLS (egressd_admin_tls_handshake_failures_total).
  void admin_tls_handshake_failure(tls_failure reason) noexcept;
  // egressd_tls_certificate_expiry_timestamp_seconds{listener}: the notAfter (Unix time) of the
  // certificate a TLS listener serves; listener is the proxy listener's address, or "admin".
  // Set at start and after every reload (which reads the certificates again).
  void tls_certificate_expiry(const std::string& listener, double unix_time) noexcept;
  // egressd_tls_client_crl_next_update_timestamp_seconds{listener}: the earliest nextUpdate of
  // the CRLs a TLS listener checks client certificates against; unix_time 0 removes the series
  // (no client_crl any more after a reload, or CRLs without a nextUpdate).
  void tls_client_crl_next_update(const std::string& listener, double unix_time) noexcept;

  // Histogram observations; durations are exported in seconds.
  void observe_upstream_connect(std::chrono::nanoseconds d) noexcept;
  void observe_dns(std::chrono::nanoseconds d) noexcept;
  void observe_tunnel(std::chrono::nanoseconds d) noexcept;

  // The children themselves, for callers that keep a reference (and for tests).
  prometheus::Counter& requests(request_kind kind, request_outcome outcome) noexcept;
  prometheus::Counter& denials(denial_reason reason) noexcept;
  prometheus::Counter& bytes_counter(direction dir) noexcept;
  prometheus::Counter& dns_cache_counter(cache_result result) noexcept;
  prometheus::Counter& timeouts(timeout_phase phase) noexcept;
  prometheus::Counter& upstream_errors(upstream_error_kind kind) noexcept;
  prometheus::Counter& relays(relay_mode mode) noexcept;
  prometheus::Counter& config_reloads(reload_result result) noexcept;
  prometheus::Counter& proxy_protocol_errors(proxy_protocol_error reason) noexcept;
  prometheus::Counter& tls_handshake_failures(tls_failure reason) noexcept;
  prometheus::Counter& admin_tls_handshake_failures(tls_failure reason) noexcept;
  prometheus::Counter& upstream_pool_closes(pool_close_reason reason) noexcept;

  // Every family: the registry's, then the process_* metrics read from /proc/self now.
  std::vector<prometheus::MetricFamily> collect() const;
  // The Prometheus text exposition format (version 0.0.4) of collect().
  std::string serialize() const;

  // Buckets, exported for the documentation and the tests.
  static const std::vector<double>& connect_buckets();  // upstream connect and DNS
  static const std::vector<double>& tunnel_buckets();

 private:
  template <typename E>
  using by = std::array<prometheus::Counter*, count_of<E>>;

  prometheus::Family<prometheus::Counter>* report_only_ = nullptr;
  prometheus::Family<prometheus::Counter>* identity_matches_ = nullptr;
  prometheus::Family<prometheus::Gauge>* cert_expiry_ = nullptr;
  prometheus::Family<prometheus::Gauge>* crl_next_update_ = nullptr;
  std::vector<prometheus::Counter*> accepted_;
  std::vector<prometheus::Gauge*> active_;
  std::array<by<request_outcome>, count_of<request_kind>> requests_{};
  by<denial_reason> denials_{};
  by<direction> bytes_{};
  by<cache_result> dns_cache_{};
  by<timeout_phase> timeouts_{};
  by<upstream_error_kind> upstream_errors_{};
  by<relay_mode> relays_{};
  by<reload_result> reloads_{};
  by<proxy_protocol_error> proxy_protocol_errors_{};
  by<tls_failure> tls_failures_{};
  by<tls_failure> admin_tls_failures_{};
  by<pool_close_reason> pool_closes_{};
  double start_time_seconds_ = 0;  // process start, read once from /proc
};

}  // namespace egressd::metrics
