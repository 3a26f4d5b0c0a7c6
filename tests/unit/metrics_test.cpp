// The metric set: every helper moves exactly its own child, the exposition holds every family
// with HELP and TYPE, no label name or value outside the documented sets ever appears, and
// histogram buckets are cumulative at the documented boundaries.
#include "egressd/metrics/stats.hpp"

#include <gtest/gtest.h>

#include <prometheus/client_metric.h>
#include <prometheus/counter.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/metric_family.h>
#include <cstdint>

#include <chrono>
#include <cmath>
#include <ctime>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <vector>

namespace egressd::metrics {
namespace {

using namespace std::chrono_literals;

const std::vector<std::string> listeners = {"0.0.0.0:3128", "[::1]:8080"};

// The documented label sets (docs/metrics.md), written out independently of stats.cpp.
using label_sets = std::map<std::string, std::set<std::string>>;
const std::map<std::string, label_sets>& documented() {
  static const std::map<std::string, label_sets> d = {
      {"egressd_connections_accepted_total", {{"listener", {"0.0.0.0:3128", "[::1]:8080"}}}},
      {"egressd_connections_active", {{"listener", {"0.0.0.0:3128", "[::1]:8080"}}}},
      {"egressd_requests_total",
       {{"kind", {"connect", "http"}},
        {"outcome",
         {"ok", "client_error", "denied", "upstream_error", "timeout", "internal_error"}}}},
      {"egressd_denials_total",
       {{"reason", {"source", "port", "rule", "destination", "ip_literal", "loop", "method"}}}},
      {"egressd_bytes_total", {{"direction", {"client_to_upstream", "upstream_to_client"}}}},
      {"egressd_upstream_connect_duration_seconds", {}},
      {"egressd_dns_duration_seconds", {}},
      {"egressd_dns_cache_total", {{"result", {"hit", "miss"}}}},
      {"egressd_tunnel_duration_seconds", {}},
      {"egressd_timeouts_total",
       {{"phase",
         {"header", "keepalive", "dns", "connect", "response_header", "idle", "tunnel_idle"}}}},
      {"egressd_upstream_errors_total",
       {{"kind", {"dns", "refused", "timeout", "reset", "bad_response"}}}},
      {"egressd_accept_errors_total", {}},
      {"egressd_connections_rejected_total", {}},
      {"egressd_report_only_matches_total", {{"rule", {"shadow"}}}},
      {"egressd_relays_total", {{"mode", {"splice", "copy", "tls_copy"}}}},
      {"egressd_tls_handshakes_total", {}},
      {"egressd_tls_handshake_failures_total",
       {{"reason",
         {"timeout", "no_client_cert", "cert_expired", "cert_untrusted", "cert_revoked",
          "crl_unusable", "protocol", "not_tls", "client_closed", "other"}}}},
      {"egressd_admin_tls_handshake_failures_total",
       {{"reason",
         {"timeout", "no_client_cert", "cert_expired", "cert_untrusted", "cert_revoked",
          "crl_unusable", "protocol", "not_tls", "client_closed", "other"}}}},
      {"egressd_client_identity_matches_total", {{"rule", {"tenant-a"}}}},
      {"egressd_splice_fallbacks_total", {}},
      {"egressd_config_reloads_total", {{"result", {"success", "failure"}}}},
      {"egressd_draining", {}},
      {"egressd_tunnels_active", {}},
      {"egressd_config_last_reload_successful", {}},
      {"egressd_config_last_reload_success_timestamp_seconds", {}},
      {"egressd_proxy_protocol_errors_total", {{"reason", {"invalid", "untrusted", "missing"}}}},
      {"egressd_upstream_pool_reuses_total", {}},
      {"egressd_upstream_pool_closes_total",
       {{"reason", {"host_limit", "pool_limit", "expired", "stale"}}}},
      {"egressd_tls_certificate_expiry_timestamp_seconds",
       {{"listener", {"0.0.0.0:3128", "admin"}}}},
      {"egressd_tls_client_crl_next_update_timestamp_seconds",
       {{"listener", {"0.0.0.0:3128", "admin"}}}},
      {"process_open_fds", {}},
      {"process_max_fds", {}},
      {"process_resident_memory_bytes", {}},
      {"process_virtual_memory_bytes", {}},
      {"process_cpu_seconds_total", {}},
      {"process_start_time_seconds", {}},
  };
  return d;
}

const std::map<std::string, std::string> types = {
    {"egressd_connections_accepted_total", "counter"},
    {"egressd_connections_active", "gauge"},
    {"egressd_requests_total", "counter"},
    {"egressd_denials_total", "counter"},
    {"egressd_bytes_total", "counter"},
    {"egressd_upstream_connect_duration_seconds", "histogram"},
    {"egressd_dns_duration_seconds", "histogram"},
    {"egressd_dns_cache_total", "counter"},
    {"egressd_tunnel_duration_seconds", "histogram"},
    {"egressd_timeouts_total", "counter"},
    {"egressd_upstream_errors_total", "counter"},
    {"egressd_accept_errors_total", "counter"},
    {"egressd_connections_rejected_total", "counter"},
    {"egressd_report_only_matches_total", "counter"},
    {"egressd_tls_handshakes_total", "counter"},
    {"egressd_tls_handshake_failures_total", "counter"},
    {"egressd_admin_tls_handshake_failures_total", "counter"},
    {"egressd_client_identity_matches_total", "counter"},
    {"egressd_relays_total", "counter"},
    {"egressd_splice_fallbacks_total", "counter"},
    {"egressd_config_reloads_total", "counter"},
    {"egressd_draining", "gauge"},
    {"egressd_tunnels_active", "gauge"},
    {"egressd_config_last_reload_successful", "gauge"},
    {"egressd_config_last_reload_success_timestamp_seconds", "gauge"},
    {"egressd_proxy_protocol_errors_total", "counter"},
    {"egressd_upstream_pool_reuses_total", "counter"},
    {"egressd_upstream_pool_closes_total", "counter"},
    {"egressd_tls_certificate_expiry_timestamp_seconds", "gauge"},
    {"egressd_tls_client_crl_next_update_timestamp_seconds", "gauge"},
    {"process_open_fds", "gauge"},
    {"process_max_fds", "gauge"},
    {"process_resident_memory_bytes", "gauge"},
    {"process_virtual_memory_bytes", "gauge"},
    {"process_cpu_seconds_total", "counter"},
    {"process_start_time_seconds", "gauge"},
};

// One sample line of the text format: name{l1="v1",l2="v2"} value
struct sample {
  std::string name;
  std::map<std::string, std::string> labels;
  double value = 0;
};

// A deliberately small parser: label values here never hold quotes, backslashes or commas, and
// a line that does not fit the shape fails the test instead of being skipped.
std::vector<sample> samples_of(const std::string& text) {
  std::vector<sample> out;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) {
    if (line.empty() || line[0] == '#') continue;
    sample s;
    auto brace = line.find('{');
    auto space = line.rfind(' ');
    EXPECT_NE(space, std::string::npos) << line;
    if (space == std::string::npos) continue;
    if (brace != std::string::npos && brace < space) {
      s.name = line.substr(0, brace);
      auto close = line.find('}', brace);
      EXPECT_NE(close, std::string::npos) << line;
      std::string body = line.substr(brace + 1, close - brace - 1);
      std::size_t pos = 0;
      while (pos < body.size()) {
        auto eq = body.find('=', pos);
        auto q2 = body.find('"', eq + 2);
        EXPECT_TRUE(eq != std::string::npos && q2 != std::string::npos && body[eq + 1] == '"')
            << line;
        if (eq == std::string::npos || q2 == std::string::npos) break;
        s.labels[body.substr(pos, eq - pos)] = body.substr(eq + 2, q2 - eq - 2);
        pos = q2 + 1;
        if (pos < body.size()) {
          EXPECT_EQ(body[pos], ',') << line;
          ++pos;
        }
      }
    } else {
      s.name = line.substr(0, space);
    }
    s.value = std::stod(line.substr(space + 1));
    out.push_back(std::move(s));
  }
  return out;
}

// The family a sample belongs to: histogram series carry a suffix.
std::string family_of(const std::string& sample_name) {
  for (const char* suffix : {"_bucket", "_sum", "_count"}) {
    std::string sfx(suffix);
    if (sample_name.size() > sfx.size() &&
        sample_name.compare(sample_name.size() - sfx.size(), sfx.size(), sfx) == 0) {
      std::string base = sample_name.substr(0, sample_name.size() - sfx.size());
      auto t = types.find(base);
      if (t != types.end() && t->second == "histogram") return base;
    }
  }
  return sample_name;
}

double value_of(const std::vector<sample>& all, const std::string& name,
                const std::map<std::string, std::string>& labels) {
  for (const auto& s : all) {
    if (s.name == name && s.labels == labels) return s.value;
  }
  ADD_FAILURE() << "no sample " << name;
  return -1;
}

const prometheus::MetricFamily* find_family(const std::vector<prometheus::MetricFamily>& all,
                                            const std::string& name) {
  for (const auto& f : all) {
    if (f.name == name) return &f;
  }
  return nullptr;
}

TEST(MetricsTest, EveryFamilyHasHelpAndTypeAndNothingElseIsExported) {
  stats s(listeners);
  s.report_only_rules({"shadow"});  // the family has series only with report-only rules
  s.identity_rules({"tenant-a"});
  s.tls_certificate_expiry("0.0.0.0:3128", 1.9e9);  // series only for TLS listeners
  s.tls_certificate_expiry("admin", 1.9e9);
  s.tls_client_crl_next_update("0.0.0.0:3128", 1.8e9);  // only with client_crl
  const std::string text = s.serialize();
  for (const auto& [name, type] : types) {
    EXPECT_NE(text.find("# HELP " + name + " "), std::string::npos) << name;
    EXPECT_NE(text.find("# TYPE " + name + " " + type + "\n"), std::string::npos) << name;
  }
  // No family beyond the documented ones.
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) {
    if (line.rfind("# TYPE ", 0) != 0) continue;
    auto name = line.substr(7, line.find(' ', 7) - 7);
    EXPECT_EQ(types.count(name), 1u) << "undocumented family " << name;
  }
}

TEST(MetricsTest, NoLabelOutsideTheDocumentedSets) {
  stats s(listeners);
  s.report_only_rules({"shadow"});
  s.identity_rules({"tenant-a"});
  s.tls_certificate_expiry("0.0.0.0:3128", 1.9e9);
  s.tls_certificate_expiry("admin", 1.9e9);
  s.tls_client_crl_next_update("0.0.0.0:3128", 1.8e9);
  s.tls_client_crl_next_update("admin", 1.8e9);
  // Move everything once so that no series could hide behind a zero.
  s.request_done(request_kind::http, request_outcome::denied);
  s.denial(denial_reason::loop);
  s.observe_dns(2ms);
  const auto all = samples_of(s.serialize());
  ASSERT_FALSE(all.empty());
  std::map<std::string, std::set<std::map<std::string, std::string>>> seen;
  for (const auto& smp : all) {
    const std::string fam = family_of(smp.name);
    auto doc = documented().find(fam);
    ASSERT_NE(doc, documented().end()) << "undocumented sample " << smp.name;
    std::map<std::string, std::string> labels;
    for (const auto& [k, v] : smp.labels) {
      if (k == "le" && smp.name == fam + "_bucket") continue;  // the histogram bucket bound
      auto allowed = doc->second.find(k);
      ASSERT_NE(allowed, doc->second.end()) << smp.name << " has label " << k;
      EXPECT_EQ(allowed->second.count(v), 1u) << smp.name << " " << k << "=" << v;
      labels[k] = v;
    }
    EXPECT_EQ(labels.size(), doc->second.size()) << smp.name << " lacks a label";
    if (smp.name == fam || smp.name == fam + "_count") seen[fam].insert(labels);
  }
  // Every combination exists from the start (a series appearing only after its first event
  // would make rate() miss that event).
  for (const auto& [fam, sets] : documented()) {
    std::size_t combos = 1;
    for (const auto& [k, values] : sets) combos *= values.size();
    EXPECT_EQ(seen[fam].size(), combos) << fam;
  }
}

TEST(MetricsTest, LabelledHelpersMoveOnlyTheirOwnSeries) {
  stats s(listeners);
  s.request_done(request_kind::connect, request_outcome::ok);
  s.request_done(request_kind::connect, request_outcome::ok);
  s.request_done(request_kind::http, request_outcome::timeout);
  s.denial(denial_reason::destination);
  s.bytes(direction::client_to_upstream, 100);
  s.bytes(250, 7);
  s.dns_cache(cache_result::hit);
  s.dns_cache(cache_result::miss);
  s.dns_cache(cache_result::miss);
  s.timeout(timeout_phase::tunnel_idle);
  s.upstream_error(upstream_error_kind::refused);
  s.relay(relay_mode::splice);
  s.config_reload(reload_result::failure);
  s.proxy_protocol_failure(proxy_protocol_error::untrusted);
  s.accept_errors.Increment();
  s.splice_fallbacks.Increment();
  s.upstream_pool_reuses.Increment(3);
  s.upstream_pool_closes(pool_close_reason::host_limit).Increment(2);
  s.tls_certificate_expiry("admin", 1700000000);
  s.tls_certificate_expiry("admin", 1800000000);  // a reload with a renewed certificate
  s.tls_client_crl_next_update("0.0.0.0:3128", 1700000000);
  s.tls_client_crl_next_update("0.0.0.0:3128", 1700086400);  // a reload with a fresh CRL
  s.tls_client_crl_next_update("admin", 1700000000);
  s.tls_client_crl_next_update("admin", 0);  // a reload without client_crl: the series goes

  EXPECT_EQ(s.requests(request_kind::connect, request_outcome::ok).Value(), 2);
  EXPECT_EQ(s.requests(request_kind::http, request_outcome::timeout).Value(), 1);
  EXPECT_EQ(s.requests(request_kind::http, request_outcome::ok).Value(), 0);
  EXPECT_EQ(s.requests(request_kind::connect, request_outcome::timeout).Value(), 0);

  const auto all = samples_of(s.serialize());
  auto v = [&](const std::string& name, std::map<std::string, std::string> labels = {}) {
    return value_of(all, name, labels);
  };
  EXPECT_EQ(v("egressd_requests_total", {{"kind", "connect"}, {"outcome", "ok"}}), 2);
  EXPECT_EQ(v("egressd_requests_total", {{"kind", "http"}, {"outcome", "timeout"}}), 1);
  EXPECT_EQ(v("egressd_requests_total", {{"kind", "http"}, {"outcome", "denied"}}), 0);
  EXPECT_EQ(v("egressd_denials_total", {{"reason", "destination"}}), 1);
  EXPECT_EQ(v("egressd_denials_total", {{"reason", "rule"}}), 0);
  EXPECT_EQ(v("egressd_bytes_total", {{"direction", "client_to_upstream"}}), 350);
  EXPECT_EQ(v("egressd_bytes_total", {{"direction", "upstream_to_client"}}), 7);
  EXPECT_EQ(v("egressd_dns_cache_total", {{"result", "hit"}}), 1);
  EXPECT_EQ(v("egressd_dns_cache_total", {{"result", "miss"}}), 2);
  EXPECT_EQ(v("egressd_timeouts_total", {{"phase", "tunnel_idle"}}), 1);
  EXPECT_EQ(v("egressd_timeouts_total", {{"phase", "idle"}}), 0);
  EXPECT_EQ(v("egressd_upstream_errors_total", {{"kind", "refused"}}), 1);
  EXPECT_EQ(v("egressd_upstream_errors_total", {{"kind", "reset"}}), 0);
  EXPECT_EQ(v("egressd_relays_total", {{"mode", "splice"}}), 1);
  EXPECT_EQ(v("egressd_relays_total", {{"mode", "copy"}}), 0);
  EXPECT_EQ(v("egressd_config_reloads_total", {{"result", "failure"}}), 1);
  EXPECT_EQ(v("egressd_config_reloads_total", {{"result", "success"}}), 0);
  EXPECT_EQ(v("egressd_proxy_protocol_errors_total", {{"reason", "untrusted"}}), 1);
  EXPECT_EQ(v("egressd_proxy_protocol_errors_total", {{"reason", "invalid"}}), 0);
  EXPECT_EQ(v("egressd_accept_errors_total"), 1);
  EXPECT_EQ(v("egressd_splice_fallbacks_total"), 1);
  EXPECT_EQ(v("egressd_upstream_pool_reuses_total"), 3);
  EXPECT_EQ(v("egressd_upstream_pool_closes_total", {{"reason", "host_limit"}}), 2);
  EXPECT_EQ(v("egressd_upstream_pool_closes_total", {{"reason", "stale"}}), 0);
  EXPECT_EQ(v("egressd_tls_certificate_expiry_timestamp_seconds", {{"listener", "admin"}}),
            1800000000);
  EXPECT_EQ(
      v("egressd_tls_client_crl_next_update_timestamp_seconds", {{"listener", "0.0.0.0:3128"}}),
      1700086400);
  EXPECT_EQ(s.serialize().find(
                "egressd_tls_client_crl_next_update_timestamp_seconds{listener=\"admin\"}"),
            std::string::npos);
}

TEST(MetricsTest, ConnectionsAreCountedPerListener) {
  stats s(listeners);
  ASSERT_EQ(s.listener_count(), 2u);
  s.connection_opened(0);
  s.connection_opened(0);
  s.connection_opened(1);
  s.connection_closed(0);
  s.connection_opened(7);  // out of range: ignored, not a crash
  s.connection_closed(7);
  EXPECT_EQ(s.connections_accepted(0).Value(), 2);
  EXPECT_EQ(s.connections_active(0).Value(), 1);
  EXPECT_EQ(s.connections_accepted(1).Value(), 1);
  EXPECT_EQ(s.connections_active(1).Value(), 1);
  EXPECT_THROW(s.connections_accepted(2), std::out_of_range);

  const auto all = samples_of(s.serialize());
  EXPECT_EQ(value_of(all, "egressd_connections_accepted_total", {{"listener", "0.0.0.0:3128"}}), 2);
  EXPECT_EQ(value_of(all, "egressd_connections_active", {{"listener", "0.0.0.0:3128"}}), 1);
  EXPECT_EQ(value_of(all, "egressd_connections_accepted_total", {{"listener", "[::1]:8080"}}), 1);
}

TEST(MetricsTest, DrainingGaugeIsZeroOrOne) {
  stats s(listeners);
  EXPECT_EQ(s.draining.Value(), 0);
  s.set_draining(true);
  EXPECT_EQ(s.draining.Value(), 1);
  EXPECT_EQ(value_of(samples_of(s.serialize()), "egressd_draining", {}), 1);
  s.set_draining(false);
  EXPECT_EQ(s.draining.Value(), 0);
}

TEST(MetricsTest, HistogramBucketsAreCumulativeAtTheDocumentedBounds) {
  stats s(listeners);
  s.observe_upstream_connect(300us);  // <= .0005
  s.observe_upstream_connect(3ms);    // <= .005
  s.observe_upstream_connect(5ms);    // exactly on a bound: counted in it (le is <=)
  s.observe_upstream_connect(20s);    // past the last bound: +Inf only
  s.observe_tunnel(90s);              // <= 300
  s.observe_tunnel(1h);               // <= 3600
  s.observe_dns(1ms);

  const auto fams = s.collect();
  const auto* connect = find_family(fams, "egressd_upstream_connect_duration_seconds");
  ASSERT_NE(connect, nullptr);
  ASSERT_EQ(connect->metric.size(), 1u);
  const auto& h = connect->metric[0].histogram;
  EXPECT_EQ(h.sample_count, 4u);
  EXPECT_NEAR(h.sample_sum, 0.0003 + 0.003 + 0.005 + 20, 1e-9);
  const std::vector<double> bounds = {.0005, .001, .0025, .005, .01, .025, .05,
                                      .1,    .25,  .5,    1,    2.5, 5,    10};
  const std::vector<std::uint64_t> cumulative = {1, 1, 1, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3};
  ASSERT_EQ(h.bucket.size(), bounds.size() + 1);  // + the +Inf bucket
  for (std::size_t i = 0; i < bounds.size(); ++i) {
    EXPECT_DOUBLE_EQ(h.bucket[i].upper_bound, bounds[i]) << i;
    EXPECT_EQ(h.bucket[i].cumulative_count, cumulative[i]) << "le=" << bounds[i];
  }
  EXPECT_TRUE(std::isinf(h.bucket.back().upper_bound));
  EXPECT_EQ(h.bucket.back().cumulative_count, 4u);

  const auto* tunnel = find_family(fams, "egressd_tunnel_duration_seconds");
  ASSERT_NE(tunnel, nullptr);
  const auto& t = tunnel->metric.at(0).histogram;
  const std::vector<double> tbounds = {1, 5, 15, 30, 60, 300, 900, 1800, 3600, 7200, 14400, 43200};
  const std::vector<std::uint64_t> tcum = {0, 0, 0, 0, 0, 1, 1, 1, 2, 2, 2, 2};
  ASSERT_EQ(t.bucket.size(), tbounds.size() + 1);
  for (std::size_t i = 0; i < tbounds.size(); ++i) {
    EXPECT_DOUBLE_EQ(t.bucket[i].upper_bound, tbounds[i]) << i;
    EXPECT_EQ(t.bucket[i].cumulative_count, tcum[i]) << "le=" << tbounds[i];
  }

  const auto* dns = find_family(fams, "egressd_dns_duration_seconds");
  ASSERT_NE(dns, nullptr);
  EXPECT_EQ(dns->metric.at(0).histogram.sample_count, 1u);

  // The same numbers in the text format, "le" included.
  const auto all = samples_of(s.serialize());
  EXPECT_EQ(value_of(all, "egressd_upstream_connect_duration_seconds_bucket", {{"le", "0.005"}}),
            3);
  EXPECT_EQ(value_of(all, "egressd_upstream_connect_duration_seconds_bucket", {{"le", "+Inf"}}), 4);
  EXPECT_EQ(value_of(all, "egressd_upstream_connect_duration_seconds_count", {}), 4);
  EXPECT_EQ(value_of(all, "egressd_tunnel_duration_seconds_bucket", {{"le", "3600"}}), 2);
}

TEST(MetricsTest, ProcessMetricsDescribeThisProcess) {
  stats s(listeners);
  // Spend some CPU first, so the CPU counter must be positive if it reads this process.
  volatile std::uint64_t sink = 0;
  for (std::uint64_t i = 0; i < 200'000'000; ++i) sink = sink + (i ^ (i >> 3));
  const auto all = samples_of(s.serialize());
  EXPECT_GE(value_of(all, "process_open_fds", {}), 3);  // at least stdin, stdout, stderr
  EXPECT_GE(value_of(all, "process_max_fds", {}), value_of(all, "process_open_fds", {}));
  EXPECT_GT(value_of(all, "process_resident_memory_bytes", {}), 0);
  EXPECT_GE(value_of(all, "process_virtual_memory_bytes", {}),
            value_of(all, "process_resident_memory_bytes", {}));
  const double cpu = value_of(all, "process_cpu_seconds_total", {});
  EXPECT_GT(cpu, 0.0);
  const double start = value_of(all, "process_start_time_seconds", {});
  const double now = static_cast<double>(std::time(nullptr));
  EXPECT_GT(start, 1.6e9);  // after 2020: really an epoch time, not ticks since boot
  EXPECT_LE(start, now + 1);
}

TEST(MetricsTest, LabelValueNames) {
  EXPECT_EQ(to_string(request_kind::connect), "connect");
  EXPECT_EQ(to_string(request_outcome::internal_error), "internal_error");
  EXPECT_EQ(to_string(denial_reason::method), "method");
  EXPECT_EQ(to_string(direction::upstream_to_client), "upstream_to_client");
  EXPECT_EQ(to_string(timeout_phase::response_header), "response_header");
  EXPECT_EQ(to_string(upstream_error_kind::bad_response), "bad_response");
  EXPECT_EQ(to_string(relay_mode::copy), "copy");
  EXPECT_EQ(to_string(cache_result::hit), "hit");
  EXPECT_EQ(to_string(reload_result::success), "success");
  EXPECT_EQ(to_string(proxy_protocol_error::missing), "missing");
}

TEST(MetricsTest, TwoInstancesAreIndependent) {
  // No global registry: each stats (one per process in production, one per test here) has its
  // own, so tests cannot leak counts into each other.
  stats a(listeners);
  stats b({"127.0.0.1:1"});
  a.denial(denial_reason::port);
  EXPECT_EQ(a.denials(denial_reason::port).Value(), 1);
  EXPECT_EQ(b.denials(denial_reason::port).Value(), 0);
}

}  // namespace
}  // namespace egressd::metrics

namespace egressd::metrics {
namespace {

TEST(MetricsTest, ReportOnlySeriesExistAtZeroAndCountMatches) {
  stats s(listeners);
  EXPECT_EQ(s.serialize().find("egressd_report_only_matches_total{"), std::string::npos)
      << "no report-only rules: no series";
  s.report_only_rules({"shadow", "other"});
  auto all = samples_of(s.serialize());
  EXPECT_EQ(value_of(all, "egressd_report_only_matches_total", {{"rule", "shadow"}}), 0);
  s.report_only_match("shadow");
  s.report_only_match("shadow");
  s.report_only_rules({"shadow"});  // a reload keeps the count
  all = samples_of(s.serialize());
  EXPECT_EQ(value_of(all, "egressd_report_only_matches_total", {{"rule", "shadow"}}), 2);
  EXPECT_EQ(value_of(all, "egressd_report_only_matches_total", {{"rule", "other"}}), 0);
  s.connections_rejected.Increment();
  all = samples_of(s.serialize());
  EXPECT_EQ(value_of(all, "egressd_connections_rejected_total", {}), 1);
}

TEST(MetricsTest, IdentityRuleAndTlsFailureSeries) {
  stats s(listeners);
  EXPECT_EQ(s.serialize().find("egressd_client_identity_matches_total{"), std::string::npos)
      << "no identity rules: no series";
  s.identity_rules({"tenant-a", "tenant-b"});
  s.identity_match("tenant-a");
  s.identity_rules({"tenant-a"});  // a reload keeps the count
  s.tls_handshake_failure(tls_failure::cert_expired);
  s.tls_handshake_failure(tls_failure::cert_expired);
  s.tls_handshakes.Increment();
  s.relay(relay_mode::tls_copy);
  auto all = samples_of(s.serialize());
  EXPECT_EQ(value_of(all, "egressd_client_identity_matches_total", {{"rule", "tenant-a"}}), 1);
  EXPECT_EQ(value_of(all, "egressd_client_identity_matches_total", {{"rule", "tenant-b"}}), 0);
  EXPECT_EQ(value_of(all, "egressd_tls_handshake_failures_total", {{"reason", "cert_expired"}}), 2);
  EXPECT_EQ(value_of(all, "egressd_tls_handshake_failures_total", {{"reason", "timeout"}}), 0);
  EXPECT_EQ(value_of(all, "egressd_tls_handshakes_total", {}), 1);
  EXPECT_EQ(value_of(all, "egressd_relays_total", {{"mode", "tls_copy"}}), 1);
  EXPECT_EQ(to_string(tls_failure::not_tls), "not_tls");
}

TEST(MetricsTest, LastReloadGauges) {
  stats s(listeners);
  s.config_loaded(true);
  auto all = samples_of(s.serialize());
  EXPECT_EQ(value_of(all, "egressd_config_last_reload_successful", {}), 1);
  const double t0 = value_of(all, "egressd_config_last_reload_success_timestamp_seconds", {});
  EXPECT_GT(t0, 1.7e9);
  s.config_reload(reload_result::failure);
  all = samples_of(s.serialize());
  EXPECT_EQ(value_of(all, "egressd_config_last_reload_successful", {}), 0);
  EXPECT_EQ(value_of(all, "egressd_config_last_reload_success_timestamp_seconds", {}), t0)
      << "a failure keeps the last success time";
  EXPECT_EQ(value_of(all, "egressd_config_reloads_total", {{"result", "failure"}}), 1);
  s.config_reload(reload_result::success);
  all = samples_of(s.serialize());
  EXPECT_EQ(value_of(all, "egressd_config_last_reload_successful", {}), 1);
}

}  // namespace
}  // namespace egressd::metrics
