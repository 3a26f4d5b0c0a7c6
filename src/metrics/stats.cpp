#include "egressd/metrics/stats.hpp"

#include <dirent.h>
#include <sys/resource.h>
#include <unistd.h>

#include <prometheus/client_metric.h>
#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/metric_family.h>
#include <prometheus/metric_type.h>
#include <prometheus/registry.h>
#include <prometheus/text_serializer.h>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <limits>
#include <sstream>
#include <string>
#include <utility>

namespace egressd::metrics {

namespace {

// Label value tables, indexed by the enum; the static_asserts keep them in step with the enums.
constexpr std::string_view kind_names[] = {"connect", "http"};
constexpr std::string_view outcome_names[] = {
    "ok", "client_error", "denied", "upstream_error", "timeout", "internal_error"};
constexpr std::string_view denial_names[] = {"source",     "port", "rule",  "destination",
                                             "ip_literal", "loop", "method"};
constexpr std::string_view direction_names[] = {"client_to_upstream", "upstream_to_client"};
constexpr std::string_view phase_names[] = {"header",          "keepalive", "dns",        "connect",
                                            "response_header", "idle",      "tunnel_idle"};
constexpr std::string_view upstream_error_names[] = {"dns", "refused", "timeout", "reset",
                                                     "bad_response"};
constexpr std::string_view mode_names[] = {"splice", "copy", "tls_copy"};
constexpr std::string_view cache_names[] = {"hit", "miss"};
constexpr std::string_view reload_names[] = {"success", "failure"};
constexpr std::string_view pp_error_names[] = {"invalid", "untrusted", "missing"};
constexpr std::string_view tls_failure_names[] = {
    "timeout",      "no_client_cert", "cert_expired", "cert_untrusted", "cert_revoked",
    "crl_unusable", "protocol",       "not_tls",      "client_closed",  "other"};
constexpr std::string_view pool_close_names[] = {"host_limit", "pool_limit", "expired", "stale"};

static_assert(std::size(kind_names) == count_of<request_kind>);
static_assert(std::size(outcome_names) == count_of<request_outcome>);
static_assert(std::size(denial_names) == count_of<denial_reason>);
static_assert(std::size(direction_names) == count_of<direction>);
static_assert(std::size(phase_names) == count_of<timeout_phase>);
static_assert(std::size(upstream_error_names) == count_of<upstream_error_kind>);
static_assert(std::size(mode_names) == count_of<relay_mode>);
static_assert(std::size(cache_names) == count_of<cache_result>);
static_assert(std::size(reload_names) == count_of<reload_result>);
static_assert(std::size(pp_error_names) == count_of<proxy_protocol_error>);
static_assert(std::size(tls_failure_names) == count_of<tls_failure>);
static_assert(std::size(pool_close_names) == count_of<pool_close_reason>);

// Rule-labelled counters (report-only and identity rules): children made ahead for the
// configured rules, a match finds its child by label. Only an invalid label value could throw,
// and rule names are validated; never fatal.
void add_rules(prometheus::Family<prometheus::Counter>& f,
               const std::vector<std::string>& names) noexcept {
  for (const auto& n : names) {
    try {
      f.Add({{"rule", n}});
    } catch (const std::exception&) {
    }
  }
}

void count_rule(prometheus::Family<prometheus::Counter>& f, std::string_view rule) noexcept {
  try {
    f.Add({{"rule", std::string(rule)}}).Increment();
  } catch (const std::exception&) {
  }
}

template <typename E, std::size_t N>
std::string_view name_of(const std::string_view (&names)[N], E v) noexcept {
  auto i = static_cast<std::size_t>(v);
  return i < N ? names[i] : std::string_view("unknown");
}

// An enum value used as an index; out-of-range values (a cast from garbage) map to nothing.
template <typename E>
std::size_t index_of(E v) noexcept {
  return static_cast<std::size_t>(v);
}

prometheus::Family<prometheus::Counter>& counter_family(prometheus::Registry& r,
                                                        const std::string& name,
                                                        const std::string& help) {
  return prometheus::BuildCounter().Name(name).Help(help).Register(r);
}

prometheus::Counter& counter(prometheus::Registry& r, const std::string& name,
                             const std::string& help) {
  return counter_family(r, name, help).Add({});
}

prometheus::Gauge& gauge(prometheus::Registry& r, const std::string& name,
                         const std::string& help) {
  return prometheus::BuildGauge().Name(name).Help(help).Register(r).Add({});
}

prometheus::Histogram& histogram(prometheus::Registry& r, const std::string& name,
                                 const std::string& help, const std::vector<double>& buckets) {
  return prometheus::BuildHistogram().Name(name).Help(help).Register(r).Add({}, buckets);
}

// One child per label value, created now so that no lookup happens later.
template <std::size_t N>
void fill(std::array<prometheus::Counter*, N>& out, prometheus::Family<prometheus::Counter>& f,
          const std::string& label, const std::string_view (&names)[N]) {
  for (std::size_t i = 0; i < N; ++i) out[i] = &f.Add({{label, std::string(names[i])}});
}

double seconds(std::chrono::nanoseconds d) noexcept {
  return std::chrono::duration<double>(d).count();
}

// --- process_* metrics, read from /proc at scrape time -----------------------------------

// Fields of /proc/self/stat after the command name, which is in parentheses and may itself
// contain spaces and parentheses: the last ')' ends it. Field 3 (state) is element 0.
std::vector<std::string> proc_stat_fields() {
  std::ifstream in("/proc/self/stat");
  std::string line((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::vector<std::string> fields;
  auto close = line.rfind(')');
  if (close == std::string::npos) return fields;
  std::istringstream rest(line.substr(close + 1));
  for (std::string f; rest >> f;) fields.push_back(std::move(f));
  return fields;
}

// proc(5) field number n (1-based, as the man page counts) from proc_stat_fields().
double stat_field(const std::vector<std::string>& fields, std::size_t n) {
  std::size_t i = n - 3;
  return i < fields.size() ? std::strtod(fields[i].c_str(), nullptr) : 0.0;
}

double boot_time_seconds() {
  std::ifstream in("/proc/stat");
  for (std::string key; in >> key;) {
    if (key == "btime") {
      double v = 0;
      in >> v;
      return v;
    }
    in.ignore(std::numeric_limits<std::streamsize>::max(), '\n');
  }
  return 0;
}

double read_start_time() {
  auto fields = proc_stat_fields();
  double ticks = stat_field(fields, 22);  // starttime, clock ticks after boot
  double btime = boot_time_seconds();
  long hz = ::sysconf(_SC_CLK_TCK);
  if (fields.empty() || btime == 0 || hz <= 0) {
    // No /proc: the stats are built at start-up, so "now" is close enough.
    return seconds(std::chrono::system_clock::now().time_since_epoch());
  }
  return btime + ticks / static_cast<double>(hz);
}

// Descriptors open now, not counting the one opendir() itself holds.
double open_fds() {
  DIR* dir = ::opendir("/proc/self/fd");
  if (dir == nullptr) return 0;
  int own = ::dirfd(dir);
  double n = 0;
  while (const dirent* e = ::readdir(dir)) {
    if (e->d_name[0] == '.') continue;
    if (std::atoi(e->d_name) == own) continue;
    ++n;
  }
  ::closedir(dir);
  return n;
}

prometheus::MetricFamily single(std::string name, std::string help, prometheus::MetricType type,
                                double value) {
  prometheus::ClientMetric m;
  if (type == prometheus::MetricType::Counter) {
    m.counter.value = value;
  } else {
    m.gauge.value = value;
  }
  return prometheus::MetricFamily{std::move(name), std::move(help), type, {std::move(m)}};
}

void append_process_metrics(std::vector<prometheus::MetricFamily>& out, double start_time) {
  using prometheus::MetricType;
  auto fields = proc_stat_fields();
  long page = ::sysconf(_SC_PAGESIZE);

  double cpu = 0;
  rusage ru{};
  if (::getrusage(RUSAGE_SELF, &ru) == 0) {
    cpu = static_cast<double>(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
          static_cast<double>(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
  }
  double max_fds = 0;
  rlimit rl{};
  if (::getrlimit(RLIMIT_NOFILE, &rl) == 0) {
    max_fds = static_cast<double>(rl.rlim_cur);  // RLIM_INFINITY shows as 2^64-1
  }

  out.push_back(single("process_cpu_seconds_total",
                       "Total user and system CPU time spent in seconds.", MetricType::Counter,
                       cpu));
  out.push_back(single("process_open_fds", "Number of open file descriptors.", MetricType::Gauge,
                       open_fds()));
  out.push_back(single("process_max_fds", "Maximum number of open file descriptors.",
                       MetricType::Gauge, max_fds));
  out.push_back(single("process_virtual_memory_bytes", "Virtual memory size in bytes.",
                       MetricType::Gauge, stat_field(fields, 23)));
  out.push_back(single("process_resident_memory_bytes", "Resident memory size in bytes.",
                       MetricType::Gauge, stat_field(fields, 24) * static_cast<double>(page)));
  out.push_back(single("process_start_time_seconds",
                       "Start time of the process since unix epoch in seconds.", MetricType::Gauge,
                       start_time));
}

}  // namespace

std::string_view to_string(request_kind v) noexcept {
  return name_of(kind_names, v);
}
std::string_view to_string(request_outcome v) noexcept {
  return name_of(outcome_names, v);
}
std::string_view to_string(denial_reason v) noexcept {
  return name_of(denial_names, v);
}
std::string_view to_string(direction v) noexcept {
  return name_of(direction_names, v);
}
std::string_view to_string(timeout_phase v) noexcept {
  return name_of(phase_names, v);
}
std::string_view to_string(upstream_error_kind v) noexcept {
  return name_of(upstream_error_names, v);
}
std::string_view to_string(relay_mode v) noexcept {
  return name_of(mode_names, v);
}
std::string_view to_string(cache_result v) noexcept {
  return name_of(cache_names, v);
}
std::string_view to_string(reload_result v) noexcept {
  return name_of(reload_names, v);
}
std::string_view to_string(proxy_protocol_error v) noexcept {
  return name_of(pp_error_names, v);
}
std::string_view to_string(tls_failure v) noexcept {
  return name_of(tls_failure_names, v);
}
std::string_view to_string(pool_close_reason v) noexcept {
  return name_of(pool_close_names, v);
}

const std::vector<double>& stats::connect_buckets() {
  // Connects inside a region take well under a millisecond to a few ms; across regions and to
  // the internet tens to hundreds of ms; the 10 s connect timeout caps the top.
  static const std::vector<double> b = {.0005, .001, .0025, .005, .01, .025, .05,
                                        .1,    .25,  .5,    1,    2.5, 5,    10};
  return b;
}

const std::vector<double>& stats::tunnel_buckets() {
  // Tunnels last from one TLS request (a second) to long-lived streams (hours).
  static const std::vector<double> b = {1, 5, 15, 30, 60, 300, 900, 1800, 3600, 7200, 14400, 43200};
  return b;
}

stats::stats(const std::vector<std::string>& listeners)
    : registry_(
          std::make_unique<prometheus::Registry>(prometheus::Registry::InsertBehavior::Throw)),
      accept_errors(counter(*registry_, "egressd_accept_errors_total",
                            "Failed accept() calls on the proxy listeners (EMFILE, ENFILE, ...).")),
      connections_rejected(counter(*registry_, "egressd_connections_rejected_total",
                                   "Client connections answered 503 and closed at once because "
                                   "limits.max_connections were open.")),
      splice_fallbacks(counter(*registry_, "egressd_splice_fallbacks_total",
                               "Tunnels relayed by copy because no splice pipe was available.")),
      upstream_pool_reuses(counter(*registry_, "egressd_upstream_pool_reuses_total",
                                   "Requests sent on an idle upstream connection from the pool.")),
      tls_handshakes(counter(*registry_, "egressd_tls_handshakes_total",
                             "TLS handshakes completed on TLS proxy listeners.")),
      draining(gauge(*registry_, "egressd_draining",
                     "1 while the process drains after SIGTERM (/readyz answers 503), else 0.")),
      tunnels_active(gauge(*registry_, "egressd_tunnels_active",
                           "CONNECT tunnels relaying now (counted in connections_active too).")),
      reload_ok(gauge(*registry_, "egressd_config_last_reload_successful",
                      "1 when the last config load (start or reload) succeeded, 0 after a "
                      "rejected reload (the previous config stays in force).")),
      reload_time(gauge(*registry_, "egressd_config_last_reload_success_timestamp_seconds",
                        "Unix time of the last successful config load (start or reload).")),
      upstream_connect_duration(histogram(*registry_, "egressd_upstream_connect_duration_seconds",
                                          "Time to establish the upstream TCP connection.",
                                          connect_buckets())),
      dns_duration(histogram(*registry_, "egressd_dns_duration_seconds",
                             "Time to resolve a destination name (cache misses only).",
                             connect_buckets())),
      tunnel_duration(histogram(*registry_, "egressd_tunnel_duration_seconds",
                                "Lifetime of CONNECT tunnels, from 200 to close.",
                                tunnel_buckets())) {
  auto& r = *registry_;
  auto& accepted = counter_family(r, "egressd_connections_accepted_total",
                                  "Client connections accepted, by proxy listener.");
  auto& active = prometheus::BuildGauge()
                     .Name("egressd_connections_active")
                     .Help("Client connections open now, by proxy listener.")
                     .Register(r);
  for (const auto& l : listeners) {
    accepted_.push_back(&accepted.Add({{"listener", l}}));
    active_.push_back(&active.Add({{"listener", l}}));
  }

  auto& req = counter_family(r, "egressd_requests_total",
                             "Requests and CONNECT tunnels handled, by kind and outcome.");
  for (std::size_t k = 0; k < count_of<request_kind>; ++k) {
    for (std::size_t o = 0; o < count_of<request_outcome>; ++o) {
      requests_[k][o] = &req.Add(
          {{"kind", std::string(kind_names[k])}, {"outcome", std::string(outcome_names[o])}});
    }
  }
  fill(denials_,
       counter_family(r, "egressd_denials_total", "Requests denied by policy, by reason."),
       "reason", denial_names);
  fill(bytes_,
       counter_family(r, "egressd_bytes_total",
                      "Payload bytes relayed (requests, responses, tunnels), by direction."),
       "direction", direction_names);
  fill(dns_cache_, counter_family(r, "egressd_dns_cache_total", "DNS cache lookups, by result."),
       "result", cache_names);
  fill(timeouts_,
       counter_family(r, "egressd_timeouts_total", "Deadlines that expired, by connection phase."),
       "phase", phase_names);
  fill(upstream_errors_,
       counter_family(r, "egressd_upstream_errors_total", "Failures reaching an origin, by kind."),
       "kind", upstream_error_names);
  fill(relays_,
       counter_family(r, "egressd_relays_total", "Tunnels relayed, by mode (splice or copy)."),
       "mode", mode_names);
  fill(reloads_,
       counter_family(r, "egressd_config_reloads_total",
                      "Configuration reloads (SIGHUP), by result."),
       "result", reload_names);
  fill(proxy_protocol_errors_,
       counter_family(r, "egressd_proxy_protocol_errors_total",
                      "Connections closed for a PROXY protocol problem, by reason."),
       "reason", pp_error_names);

  fill(tls_failures_,
       counter_family(r, "egressd_tls_handshake_failures_total",
                      "TLS handshakes on proxy listeners that failed, by reason."),
       "reason", tls_failure_names);
  fill(admin_tls_failures_,
       counter_family(r, "egressd_admin_tls_handshake_failures_total",
                      "TLS handshakes on the admin listener that failed, by reason."),
       "reason", tls_failure_names);
  fill(pool_closes_,
       counter_family(r, "egressd_upstream_pool_closes_total",
                      "Idle upstream connections closed without being reused, by reason "
                      "(host_limit or pool_limit: raise upstream.max_idle_per_host / max_idle)."),
       "reason", pool_close_names);
  report_only_ = &counter_family(r, "egressd_report_only_matches_total",
                                 "Requests a report-only deny rule would have denied, by rule.");
  identity_matches_ =
      &counter_family(r, "egressd_client_identity_matches_total",
                      "Requests decided by a rule with client_identities, by rule (the "
                      "identities themselves are in the access log).");
  cert_expiry_ = &prometheus::BuildGauge()
                      .Name("egressd_tls_certificate_expiry_timestamp_seconds")
                      .Help(
                          "Unix time at which the certificate served on a TLS listener expires "
                          "(its notAfter), by listener address, or \"admin\".")
                      .Register(r);
  crl_next_update_ = &prometheus::BuildGauge()
                          .Name("egressd_tls_client_crl_next_update_timestamp_seconds")
                          .Help(
                              "Unix time of the earliest nextUpdate among the CRLs (client_crl) a "
                              "TLS listener checks client certificates against, by listener "
                              "address, or \"admin\". After it, certificates from that issuer are "
                              "refused until a reload loads a fresh CRL.")
                          .Register(r);
  start_time_seconds_ = read_start_time();
}

void stats::report_only_rules(const std::vector<std::string>& names) noexcept {
  add_rules(*report_only_, names);
}
void stats::report_only_match(std::string_view rule) noexcept {
  count_rule(*report_only_, rule);
}
void stats::identity_rules(const std::vector<std::string>& names) noexcept {
  add_rules(*identity_matches_, names);
}
void stats::identity_match(std::string_view rule) noexcept {
  count_rule(*identity_matches_, rule);
}

void stats::tls_certificate_expiry(const std::string& listener, double unix_time) noexcept {
  try {
    cert_expiry_->Add({{"listener", listener}}).Set(unix_time);
  } catch (const std::exception&) {
  }
}

void stats::tls_client_crl_next_update(const std::string& listener, double unix_time) noexcept {
  try {
    const prometheus::Labels labels{{"listener", listener}};
    if (unix_time > 0) {
      crl_next_update_->Add(labels).Set(unix_time);
    } else if (crl_next_update_->Has(labels)) {
      crl_next_update_->Remove(&crl_next_update_->Add(labels));
    }
  } catch (const std::exception&) {
  }
}

stats::~stats() = default;

void stats::connection_opened(std::size_t listener) noexcept {
  if (listener >= accepted_.size()) return;
  accepted_[listener]->Increment();
  active_[listener]->Increment();
}

void stats::connection_closed(std::size_t listener) noexcept {
  if (listener >= active_.size()) return;
  active_[listener]->Decrement();
}

prometheus::Counter& stats::connections_accepted(std::size_t listener) {
  return *accepted_.at(listener);
}

prometheus::Gauge& stats::connections_active(std::size_t listener) {
  return *active_.at(listener);
}

prometheus::Counter& stats::requests(request_kind kind, request_outcome outcome) noexcept {
  return *requests_[index_of(kind) % count_of<request_kind>]
                   [index_of(outcome) % count_of<request_outcome>];
}

// The modulo keeps a bad enum value (a cast from an int) inside the array: it is counted under
// a wrong label rather than writing through a wild pointer.
prometheus::Counter& stats::denials(denial_reason v) noexcept {
  return *denials_[index_of(v) % denials_.size()];
}
prometheus::Counter& stats::bytes_counter(direction v) noexcept {
  return *bytes_[index_of(v) % bytes_.size()];
}
prometheus::Counter& stats::dns_cache_counter(cache_result v) noexcept {
  return *dns_cache_[index_of(v) % dns_cache_.size()];
}
prometheus::Counter& stats::timeouts(timeout_phase v) noexcept {
  return *timeouts_[index_of(v) % timeouts_.size()];
}
prometheus::Counter& stats::upstream_errors(upstream_error_kind v) noexcept {
  return *upstream_errors_[index_of(v) % upstream_errors_.size()];
}
prometheus::Counter& stats::relays(relay_mode v) noexcept {
  return *relays_[index_of(v) % relays_.size()];
}
prometheus::Counter& stats::config_reloads(reload_result v) noexcept {
  return *reloads_[index_of(v) % reloads_.size()];
}
prometheus::Counter& stats::proxy_protocol_errors(proxy_protocol_error v) noexcept {
  return *proxy_protocol_errors_[index_of(v) % proxy_protocol_errors_.size()];
}
prometheus::Counter& stats::tls_handshake_failures(tls_failure v) noexcept {
  return *tls_failures_[index_of(v) % tls_failures_.size()];
}
prometheus::Counter& stats::admin_tls_handshake_failures(tls_failure v) noexcept {
  return *admin_tls_failures_[index_of(v) % admin_tls_failures_.size()];
}
prometheus::Counter& stats::upstream_pool_closes(pool_close_reason v) noexcept {
  return *pool_closes_[index_of(v) % pool_closes_.size()];
}

void stats::request_done(request_kind kind, request_outcome outcome) noexcept {
  requests(kind, outcome).Increment();
}
void stats::denial(denial_reason reason) noexcept {
  denials(reason).Increment();
}
void stats::bytes(direction dir, std::uint64_t n) noexcept {
  if (n != 0) bytes_counter(dir).Increment(static_cast<double>(n));
}
void stats::bytes(std::uint64_t client_to_upstream, std::uint64_t upstream_to_client) noexcept {
  bytes(direction::client_to_upstream, client_to_upstream);
  bytes(direction::upstream_to_client, upstream_to_client);
}
void stats::dns_cache(cache_result result) noexcept {
  dns_cache_counter(result).Increment();
}
void stats::timeout(timeout_phase phase) noexcept {
  timeouts(phase).Increment();
}
void stats::upstream_error(upstream_error_kind kind) noexcept {
  upstream_errors(kind).Increment();
}
void stats::relay(relay_mode mode) noexcept {
  relays(mode).Increment();
}
void stats::config_reload(reload_result result) noexcept {
  config_reloads(result).Increment();
  config_loaded(result == reload_result::success);
}

void stats::config_loaded(bool ok) noexcept {
  reload_ok.Set(ok ? 1 : 0);
  if (ok) {
    reload_time.Set(
        std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count());
  }
}
void stats::tls_handshake_failure(tls_failure reason) noexcept {
  tls_handshake_failures(reason).Increment();
}
void stats::admin_tls_handshake_failure(tls_failure reason) noexcept {
  admin_tls_handshake_failures(reason).Increment();
}
void stats::proxy_protocol_failure(proxy_protocol_error reason) noexcept {
  proxy_protocol_errors(reason).Increment();
}
void stats::set_draining(bool on) noexcept {
  draining.Set(on ? 1.0 : 0.0);
}

void stats::observe_upstream_connect(std::chrono::nanoseconds d) noexcept {
  upstream_connect_duration.Observe(seconds(d));
}
void stats::observe_dns(std::chrono::nanoseconds d) noexcept {
  dns_duration.Observe(seconds(d));
}
void stats::observe_tunnel(std::chrono::nanoseconds d) noexcept {
  tunnel_duration.Observe(seconds(d));
}

std::vector<prometheus::MetricFamily> stats::collect() const {
  auto families = registry_->Collect();
  append_process_metrics(families, start_time_seconds_);
  return families;
}

std::string stats::serialize() const {
  return prometheus::TextSerializer().Serialize(collect());
}

}  // namespace egressd::metrics
