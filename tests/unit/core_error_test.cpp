// The single error -> status / blame / name mapping (SPEC.md section 4).
#include "egressd/core/error.hpp"

#include <gtest/gtest.h>

#include <set>
#include <string>
#include <string_view>
#include <vector>

namespace egressd {
namespace {

struct expected {
  proxy_error err;
  std::string_view name;
  int status;
  error_source source;
};

// Every enumerator, in declaration order, with what SPEC.md section 4 requires of it.
const std::vector<expected>& all_errors() {
  using pe = proxy_error;
  using es = error_source;
  static const std::vector<expected> v = {
      {pe::none, "none", 0, es::none},
      {pe::bad_request, "bad_request", 400, es::downstream},
      {pe::uri_too_long, "uri_too_long", 414, es::downstream},
      {pe::header_too_large, "header_too_large", 431, es::downstream},
      {pe::header_timeout, "header_timeout", 408, es::downstream},
      {pe::method_not_allowed, "method_not_allowed", 405, es::downstream},
      {pe::not_implemented, "not_implemented", 501, es::downstream},
      {pe::version_not_supported, "version_not_supported", 505, es::downstream},
      {pe::expectation_failed, "expectation_failed", 417, es::downstream},
      {pe::client_closed, "client_closed", 0, es::downstream},
      {pe::client_timeout, "client_timeout", 0, es::downstream},
      {pe::source_denied, "source_denied", 403, es::policy},
      {pe::port_denied, "port_denied", 403, es::policy},
      {pe::rule_denied, "rule_denied", 403, es::policy},
      {pe::destination_denied, "destination_denied", 403, es::policy},
      {pe::ip_literal_denied, "ip_literal_denied", 403, es::policy},
      {pe::loop_detected, "loop_detected", 508, es::policy},
      {pe::dns_error, "dns_error", 502, es::upstream},
      {pe::dns_timeout, "dns_timeout", 504, es::upstream},
      {pe::connect_refused, "connect_refused", 502, es::upstream},
      {pe::connect_timeout, "connect_timeout", 504, es::upstream},
      {pe::upstream_bad_response, "upstream_bad_response", 502, es::upstream},
      {pe::upstream_timeout, "upstream_timeout", 504, es::upstream},
      {pe::upstream_closed, "upstream_closed", 502, es::upstream},
      {pe::upstream_idle, "upstream_idle", 0, es::upstream},
      {pe::tunnel_idle, "tunnel_idle", 0, es::none},
      {pe::tunnel_reset, "tunnel_reset", 0, es::none},
      {pe::proxy_header_invalid, "proxy_header_invalid", 0, es::downstream},
      {pe::proxy_header_untrusted, "proxy_header_untrusted", 0, es::policy},
      {pe::proxy_header_missing, "proxy_header_missing", 0, es::downstream},
      {pe::draining, "draining", 503, es::internal},
      {pe::over_limit, "over_limit", 503, es::internal},
      {pe::internal_error, "internal_error", 500, es::internal},
  };
  return v;
}

bool is_snake_case(std::string_view s) {
  if (s.empty() || s.front() == '_' || s.back() == '_') return false;
  if (s.front() < 'a' || s.front() > 'z') return false;
  char prev = 0;
  for (char c : s) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_';
    if (!ok) return false;
    if (c == '_' && prev == '_') return false;
    prev = c;
  }
  return true;
}

TEST(CoreError, TableCoversEveryEnumeratorInOrder) {
  const auto& v = all_errors();
  ASSERT_EQ(v.size(), static_cast<std::size_t>(proxy_error::internal_error) + 1);
  for (std::size_t i = 0; i < v.size(); ++i) EXPECT_EQ(static_cast<std::size_t>(v[i].err), i);
}

TEST(CoreError, StatusSourceAndName) {
  for (const auto& e : all_errors()) {
    SCOPED_TRACE(std::string(e.name));
    const auto& info = describe(e.err);
    EXPECT_EQ(info.name, e.name);
    EXPECT_EQ(info.status, e.status);
    EXPECT_EQ(info.source, e.source);
  }
}

TEST(CoreError, SpecStatusTable) {
  // SPEC.md section 4, row by row.
  using pe = proxy_error;
  EXPECT_EQ(describe(pe::bad_request).status, 400);
  for (auto e : {pe::source_denied, pe::rule_denied, pe::destination_denied, pe::port_denied})
    EXPECT_EQ(describe(e).status, 403) << describe(e).name;
  EXPECT_EQ(describe(pe::method_not_allowed).status, 405);
  EXPECT_EQ(describe(pe::header_too_large).status, 431);
  EXPECT_EQ(describe(pe::uri_too_long).status, 414);
  EXPECT_EQ(describe(pe::header_timeout).status, 408);
  EXPECT_EQ(describe(pe::not_implemented).status, 501);
  for (auto e : {pe::dns_error, pe::connect_refused, pe::upstream_bad_response})
    EXPECT_EQ(describe(e).status, 502) << describe(e).name;
  for (auto e : {pe::draining, pe::over_limit})
    EXPECT_EQ(describe(e).status, 503) << describe(e).name;
  for (auto e : {pe::dns_timeout, pe::connect_timeout, pe::upstream_timeout})
    EXPECT_EQ(describe(e).status, 504) << describe(e).name;
  EXPECT_EQ(describe(pe::loop_detected).status, 508);
  EXPECT_EQ(describe(pe::version_not_supported).status, 505);
}

TEST(CoreError, NamesUniqueAndSnakeCase) {
  std::set<std::string_view> names;
  for (const auto& e : all_errors()) {
    const auto& info = describe(e.err);
    SCOPED_TRACE(std::string(info.name));
    EXPECT_TRUE(is_snake_case(info.name));
    EXPECT_TRUE(names.insert(info.name).second) << "duplicate name";
  }
  EXPECT_EQ(names.size(), all_errors().size());
}

TEST(CoreError, ProxyStatusTypesAreRegistered) {
  // RFC 9209 section 2.3 error types; an unregistered type would confuse log pipelines.
  const std::set<std::string_view> registered = {
      "dns_timeout",
      "dns_error",
      "destination_not_found",
      "destination_unavailable",
      "destination_ip_prohibited",
      "destination_ip_unroutable",
      "connection_refused",
      "connection_terminated",
      "connection_timeout",
      "connection_read_timeout",
      "connection_write_timeout",
      "connection_limit_reached",
      "tls_protocol_error",
      "tls_certificate_error",
      "tls_alert_received",
      "http_request_error",
      "http_request_denied",
      "http_response_incomplete",
      "http_response_header_section_size",
      "http_response_header_size",
      "http_response_body_size",
      "http_response_trailer_section_size",
      "http_response_trailer_size",
      "http_response_transfer_coding",
      "http_response_content_coding",
      "http_response_timeout",
      "http_upgrade_failed",
      "http_protocol_error",
      "proxy_internal_response",
      "proxy_internal_error",
      "proxy_configuration_error",
      "proxy_loop_detected",
  };
  for (const auto& e : all_errors()) {
    const auto& info = describe(e.err);
    SCOPED_TRACE(std::string(info.name));
    if (info.proxy_status.empty()) {
      // Only errors that never produce a response may lack a type.
      EXPECT_EQ(info.status, 0);
      continue;
    }
    EXPECT_TRUE(registered.count(info.proxy_status)) << info.proxy_status;
  }
  EXPECT_EQ(describe(proxy_error::destination_denied).proxy_status, "destination_ip_prohibited");
  EXPECT_EQ(describe(proxy_error::loop_detected).proxy_status, "proxy_loop_detected");
  EXPECT_EQ(describe(proxy_error::dns_error).proxy_status, "dns_error");
  EXPECT_EQ(describe(proxy_error::dns_timeout).proxy_status, "dns_timeout");
  EXPECT_EQ(describe(proxy_error::connect_refused).proxy_status, "connection_refused");
  EXPECT_EQ(describe(proxy_error::connect_timeout).proxy_status, "connection_timeout");
  EXPECT_EQ(describe(proxy_error::upstream_timeout).proxy_status, "http_response_timeout");
  EXPECT_EQ(describe(proxy_error::over_limit).proxy_status, "connection_limit_reached");
}

TEST(CoreError, ResponsesHaveReasonText) {
  for (const auto& e : all_errors()) {
    const auto& info = describe(e.err);
    SCOPED_TRACE(std::string(info.name));
    if (e.err == proxy_error::none) {
      EXPECT_TRUE(info.reason.empty());
      continue;
    }
    EXPECT_FALSE(info.reason.empty());
    for (char c : info.reason) {
      // Plain printable ASCII: it goes into a response body and a log line as is.
      EXPECT_TRUE(c >= 0x20 && c < 0x7f) << static_cast<int>(c);
    }
  }
}

TEST(CoreError, StatusClassMatchesSource) {
  for (const auto& e : all_errors()) {
    const auto& info = describe(e.err);
    SCOPED_TRACE(std::string(info.name));
    if (info.status == 0) continue;
    switch (info.source) {
      case error_source::downstream:
        // 4xx, except the two 5xx RFC 9110 defines for what a client asks that we do not do.
        EXPECT_TRUE((info.status >= 400 && info.status < 500) || info.status == 501 ||
                    info.status == 505);
        break;
      case error_source::policy:
        EXPECT_TRUE(info.status == 403 || info.status == 508);
        break;
      case error_source::upstream:
        EXPECT_TRUE(info.status == 502 || info.status == 504);
        break;
      case error_source::internal:
        EXPECT_TRUE(info.status == 500 || info.status == 503);
        break;
      case error_source::none:
        ADD_FAILURE() << "a response needs someone to blame";
        break;
    }
  }
}

TEST(CoreError, OutOfRangeFallsBackToInternalError) {
  auto bogus = static_cast<proxy_error>(200);
  const auto& info = describe(bogus);
  EXPECT_EQ(info.name, "internal_error");
  EXPECT_EQ(info.status, 500);
  EXPECT_EQ(&info, &describe(proxy_error::internal_error));
}

}  // namespace
}  // namespace egressd

#include <thread>
#include <vector>

#include "egressd/core/log_limiter.hpp"

namespace egressd {
namespace {

TEST(LogLimiter, OneLineEachIntervalAndCountsTheRest) {
  using namespace std::chrono_literals;
  log_limiter lim(1s);
  const auto t0 = log_limiter::clock::time_point(100s);
  std::uint64_t held = 99;
  EXPECT_TRUE(lim.allow(&held, t0));
  EXPECT_EQ(held, 0u);
  for (int i = 0; i < 5; ++i) {
    EXPECT_FALSE(lim.allow(&held, t0 + 999ms));
    EXPECT_EQ(held, 0u);
  }
  EXPECT_TRUE(lim.allow(&held, t0 + 1s)) << "the next interval lets one through";
  EXPECT_EQ(held, 5u) << "and it reports the lines held back";
  EXPECT_FALSE(lim.allow(&held, t0 + 1500ms));
  EXPECT_TRUE(lim.allow(&held, t0 + 10s));
  EXPECT_EQ(held, 1u);
}

TEST(LogLimiter, ConcurrentCallersLetOneThrough) {
  log_limiter lim(std::chrono::hours(1));
  std::atomic<int> allowed{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 1000; ++i) {
        std::uint64_t held = 0;
        if (lim.allow(&held)) ++allowed;
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(allowed.load(), 1);
  std::uint64_t held = 0;
  EXPECT_TRUE(lim.allow(&held, log_limiter::clock::now() + std::chrono::hours(2)));
  EXPECT_EQ(held, 3999u);
}

}  // namespace
}  // namespace egressd
