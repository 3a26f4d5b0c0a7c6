// The hand-written JSON formatter against the snprintf-based one it replaced: byte-identical
// lines over many records (escapes, control and non-ASCII bytes, empty fields, extreme numbers,
// times and durations, including rounding ties).
#include <gtest/gtest.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <ctime>
#include <limits>
#include <random>
#include <string>

#include "egressd/proxy/access_log.hpp"

namespace egressd::proxy {
namespace {

// system_clock counts nanoseconds in 64 bits: times it can hold lie within about +-292 years of
// 1970 (a time point beyond that cannot be made without overflow).
constexpr std::int64_t max_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                                    std::chrono::system_clock::time_point::max().time_since_epoch())
                                    .count();
constexpr std::int64_t min_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                                    std::chrono::system_clock::time_point::min().time_since_epoch())
                                    .count();

// --- the formatter as it was (reference) ---------------------------------------------------
void ref_json_string(std::string& out, std::string_view s) {
  out.push_back('"');
  for (char ch : s) {
    auto c = static_cast<unsigned char>(ch);
    if (c == '"' || c == '\\') {
      out.push_back('\\');
      out.push_back(ch);
    } else if (c < 0x20 || c >= 0x7f) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\u%04x", c);
      out.append(buf);
    } else {
      out.push_back(ch);
    }
  }
  out.push_back('"');
}

void ref_nullable(std::string& out, const std::string& s) {
  if (s.empty()) {
    out.append("null");
  } else {
    ref_json_string(out, s);
  }
}

std::string ref_rfc3339(std::chrono::system_clock::time_point t) {
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(t.time_since_epoch()).count();
  std::time_t secs = static_cast<std::time_t>(ms / 1000);
  std::tm tm{};
  gmtime_r(&secs, &tm);
  char buf[96];
  std::snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900,
                tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                static_cast<int>(ms % 1000));
  return buf;
}

std::string ref_format_json(const access_record& r) {
  std::string out;
  out.append("{\"time\":");
  ref_json_string(out, ref_rfc3339(r.start));
  out.append(",\"conn_id\":").append(std::to_string(r.conn_id));
  out.append(",\"client_addr\":");
  ref_json_string(out, r.client_addr);
  out.append(",\"client_port\":").append(std::to_string(r.client_port));
  out.append(",\"proxy_addr\":");
  ref_nullable(out, r.proxy_addr);
  out.append(",\"lb_peer\":");
  ref_nullable(out, r.lb_peer);
  out.append(",\"method\":");
  ref_nullable(out, r.method);
  out.append(",\"target\":");
  ref_nullable(out, r.target);
  out.append(",\"status\":").append(std::to_string(r.status));
  out.append(",\"rule\":");
  ref_nullable(out, r.rule);
  out.append(",\"bytes_in\":").append(std::to_string(r.bytes_in));
  out.append(",\"bytes_out\":").append(std::to_string(r.bytes_out));
  char dur[32];
  std::snprintf(dur, sizeof dur, "%.3f", r.duration_ms);
  out.append(",\"duration_ms\":").append(dur);
  out.append(",\"upstream_addr\":");
  ref_nullable(out, r.upstream_addr);
  out.append(",\"egress_addr\":");
  ref_nullable(out, r.egress_addr);
  out.append(",\"error\":");
  ref_nullable(out, r.error);
  out.append(",\"vpce_id\":");
  ref_nullable(out, r.vpce_id);
  out.append(",\"user\":");
  ref_nullable(out, r.user);
  out.append(",\"would_deny\":");
  ref_nullable(out, r.would_deny);
  out.append(",\"client_identity\":");
  ref_nullable(out, r.client_identity);
  out.append(",\"relay\":");
  ref_nullable(out, r.relay);
  out.append("}\n");
  return out;
}

// --- random records --------------------------------------------------------------------------
std::string random_text(std::mt19937_64& rng) {
  static const std::string pool[] = {
      "",
      "127.0.0.1",
      "CONNECT",
      "api.example.com:443",
      "http://h/p?q=\"x\"&y=\\z",
      "splice",
      "tab\there",
      "nl\nhere\r",
      "\x01\x1f\x7f\x80\xff",
      "caf\xc3\xa9",
      "vpce-0123456789abcdef0",
      "a much longer string that does not fit any small buffer at all"};
  std::string s;
  switch (rng() % 3) {
    case 0:
      return pool[rng() % std::size(pool)];
    case 1:
      for (int n = static_cast<int>(rng() % 40); n > 0; --n) s.push_back(static_cast<char>(rng()));
      return s;
    default:
      for (int n = static_cast<int>(rng() % 40); n > 0; --n)
        s.push_back(static_cast<char>(0x20 + rng() % 0x60));
      return s;
  }
}

double random_duration(std::mt19937_64& rng) {
  switch (rng() % 6) {
    case 0:
      return static_cast<double>(rng() % 100000000) / 1000.0;  // the usual microsecond values
    case 1:
      return static_cast<double>(rng() % 1000000) / 16.0 + 0.0005;  // near rounding ties
    case 2:
      return static_cast<double>(rng() % 100000) / 2048.0;  // exact binary ties (x.xxx5)
    case 3:
      return std::uniform_real_distribution<double>(0, 1e7)(rng);
    case 4:
      return std::uniform_real_distribution<double>(0, 1e-2)(rng);
    default:
      return std::ldexp(std::uniform_real_distribution<double>(0.5, 1)(rng),
                        static_cast<int>(rng() % 200) - 100);
  }
}

access_record random_record(std::mt19937_64& rng) {
  access_record r;
  std::int64_t ms = 0;
  switch (rng() % 4) {
    case 0:
      ms = 1700000000000 + static_cast<std::int64_t>(rng() % 100000000000);
      break;
    case 1:
      ms = static_cast<std::int64_t>(rng() % static_cast<std::uint64_t>(max_ms));  // to 2262
      break;
    case 2:
      ms = -static_cast<std::int64_t>(rng() % 100000000000);  // before the epoch
      break;
    default:
      ms = max_ms - static_cast<std::int64_t>(rng() % 100000000000);  // the clock's last years
      break;
  }
  r.start = std::chrono::system_clock::time_point(std::chrono::milliseconds(ms));
  r.conn_id = rng() % 2 ? rng() : rng() % 1000;
  r.client_addr = random_text(rng);
  r.client_port = static_cast<std::uint16_t>(rng());
  r.proxy_addr = random_text(rng);
  r.lb_peer = random_text(rng);
  r.method = random_text(rng);
  r.target = random_text(rng);
  r.status = rng() % 5 == 0 ? static_cast<int>(rng()) : static_cast<int>(rng() % 600);
  r.rule = random_text(rng);
  r.bytes_in = rng() % 2 ? rng() : rng() % 100000;
  r.bytes_out = rng() % 2 ? rng() : rng() % 100000;
  r.duration_ms = random_duration(rng);
  r.upstream_addr = random_text(rng);
  r.egress_addr = random_text(rng);
  r.error = random_text(rng);
  r.vpce_id = random_text(rng);
  r.user = random_text(rng);
  r.would_deny = random_text(rng);
  r.client_identity = random_text(rng);
  r.relay = random_text(rng);
  return r;
}

TEST(AccessLogFormat, JsonMatchesTheSnprintfFormatter) {
  std::mt19937_64 rng(20261123);
  std::string reused;
  for (int i = 0; i < 200000; ++i) {
    auto r = random_record(rng);
    const auto want = ref_format_json(r);
    ASSERT_EQ(format_json(r), want) << "record " << i;
    reused.clear();
    format_json(reused, r);
    ASSERT_EQ(reused, want) << "record " << i;
  }
}

TEST(AccessLogFormat, JsonMatchesOnEdgeValues) {
  const double durations[] = {0.0,
                              -0.0,
                              0.0005,
                              0.0015,
                              0.0025,
                              1.0005,
                              2.5e-4,
                              999.9995,
                              1e15,
                              1e300,
                              -1.5,
                              0.125,
                              0.0625,
                              1500.25,
                              1e-320,
                              1.79e308,
                              123456789.0004999,
                              std::numeric_limits<double>::infinity(),
                              -std::numeric_limits<double>::infinity(),
                              std::numeric_limits<double>::quiet_NaN(),
                              -std::numeric_limits<double>::quiet_NaN()};
  const std::int64_t times[] = {0,          999,    1000,       -1,    -1000, -1001, 1700000000123,
                                max_ms - 1, max_ms, min_ms + 1, min_ms};
  const char all_bytes[] = {'\0', '"', '\\', '/', '\x1f', ' ', '~', '\x7f', '\x80', '\xff'};
  std::mt19937_64 rng(7);
  for (double d : durations) {
    for (auto ms : times) {
      auto r = random_record(rng);
      r.duration_ms = d;
      r.start = std::chrono::system_clock::time_point(std::chrono::milliseconds(ms));
      r.target.assign(all_bytes, sizeof all_bytes);
      r.conn_id = UINT64_MAX;
      r.status = INT32_MIN;
      EXPECT_EQ(format_json(r), ref_format_json(r)) << d << " " << ms;
    }
  }
  std::string all;
  for (int c = 0; c < 256; ++c) all.push_back(static_cast<char>(c));
  std::string a, b;
  append_json_string(a, all);
  ref_json_string(b, all);
  EXPECT_EQ(a, b);
}

}  // namespace
}  // namespace egressd::proxy
