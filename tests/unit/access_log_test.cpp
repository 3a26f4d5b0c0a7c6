// Access log lines: JSON (every field, escaping) and Squid's native format (field count kept
// whatever a client sends).
#include "egressd/proxy/access_log.hpp"

#include <gtest/gtest.h>

#include <chrono>
#include <sstream>
#include <string>
#include <vector>

namespace egressd::proxy {
namespace {

access_record sample() {
  access_record r;
  r.start = std::chrono::system_clock::time_point(std::chrono::milliseconds(1700000000123));
  r.conn_id = 42;
  r.client_addr = "10.0.0.5";
  r.client_port = 50000;
  r.method = "CONNECT";
  r.target = "api.example.com:443";
  r.status = 200;
  r.rule = "saas";
  r.bytes_in = 10;
  r.bytes_out = 20;
  r.duration_ms = 1500.25;
  r.upstream_addr = "198.51.100.7:443";
  r.egress_addr = "10.0.1.5:40000";
  r.relay = "splice";
  r.reply_bytes = 59;
  return r;
}

std::vector<std::string> words(const std::string& line) {
  std::istringstream in(line);
  std::vector<std::string> out;
  for (std::string w; in >> w;) out.push_back(w);
  return out;
}

TEST(AccessLogJson, EveryFieldInOrder) {
  auto r = sample();
  r.user = "alice@example.com";
  r.would_deny = "block-dropbox";
  r.vpce_id = "vpce-0abc";
  r.client_identity = "tenant-a,spiffe://corp/a";
  EXPECT_EQ(format_json(r),
            "{\"time\":\"2023-11-14T22:13:20.123Z\",\"conn_id\":42,\"client_addr\":\"10.0.0.5\","
            "\"client_port\":50000,\"proxy_addr\":null,\"lb_peer\":null,\"method\":\"CONNECT\","
            "\"target\":\"api.example.com:443\",\"status\":200,\"rule\":\"saas\",\"bytes_in\":10,"
            "\"bytes_out\":20,\"duration_ms\":1500.250,\"upstream_addr\":\"198.51.100.7:443\","
            "\"egress_addr\":\"10.0.1.5:40000\",\"error\":null,\"vpce_id\":\"vpce-0abc\","
            "\"user\":\"alice@example.com\",\"would_deny\":\"block-dropbox\","
            "\"client_identity\":\"tenant-a,spiffe://corp/a\","
            "\"relay\":\"splice\"}\n");
}

TEST(AccessLogJson, HostileBytesAreEscaped) {
  auto r = sample();
  r.user = std::string("a\"b\\c\n\x01\xff", 8);
  const auto line = format_json(r);
  EXPECT_NE(line.find("\"user\":\"a\\\"b\\\\c\\u000a\\u0001\\u00ff\""), std::string::npos) << line;
  EXPECT_EQ(line.find('\n'), line.size() - 1) << "one line";
}

TEST(AccessLogSquid, UserColumnAndFieldCount) {
  auto r = sample();
  auto w = words(format_squid(r));
  ASSERT_EQ(w.size(), 10u) << format_squid(r);
  EXPECT_EQ(w[0], "1700000000.123");
  EXPECT_EQ(w[1], "1500");
  EXPECT_EQ(w[2], "10.0.0.5");
  EXPECT_EQ(w[3], "TCP_TUNNEL/200");
  EXPECT_EQ(w[4], "59") << "the whole reply, not only the payload";
  EXPECT_EQ(w[5], "CONNECT");
  EXPECT_EQ(w[6], "api.example.com:443");
  EXPECT_EQ(w[7], "-") << "no user";
  EXPECT_EQ(w[8], "HIER_DIRECT/198.51.100.7");
  EXPECT_EQ(w[9], "-") << "no content type";

  // A refused CONNECT never became a tunnel; a GET with a body shows its type.
  r.status = 400;
  EXPECT_EQ(words(format_squid(r))[3], "NONE/400");
  r.status = 403;
  EXPECT_EQ(words(format_squid(r))[3], "TCP_DENIED/403");
  r.method = "GET";
  r.status = 200;
  r.content_type = "text/html; charset=utf-8";
  w = words(format_squid(r));
  ASSERT_EQ(w.size(), 10u);
  EXPECT_EQ(w[3], "TCP_MISS/200");
  EXPECT_EQ(w[9], "text/html;_charset=utf-8");
  r.content_type.clear();

  r.user = "bob smith\t\"x\"";
  r.target = "http://a b/\r\nc";
  w = words(format_squid(r));
  ASSERT_EQ(w.size(), 10u) << format_squid(r);
  EXPECT_EQ(w[7], "bob_smith_\"x\"");
  EXPECT_EQ(w[6], "http://a_b/__c");
}

}  // namespace
}  // namespace egressd::proxy
