#include "egressd/admin/status_page.hpp"

#include <openssl/evp.h>

#include <cstdio>
#include <ctime>

namespace egressd::admin {
namespace {

std::string utc(std::chrono::system_clock::time_point t) {
  const std::time_t secs = std::chrono::system_clock::to_time_t(t);
  std::tm tm{};
  gmtime_r(&secs, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

std::string duration_text(std::chrono::steady_clock::duration d) {
  auto s = std::chrono::duration_cast<std::chrono::seconds>(d).count();
  char buf[48];
  if (s >= 86400) {
    std::snprintf(buf, sizeof buf, "%lldd %02lldh%02lldm", s / 86400LL, s % 86400 / 3600LL,
                  s % 3600 / 60LL);
  } else if (s >= 3600) {
    std::snprintf(buf, sizeof buf, "%lldh%02lldm%02llds", s / 3600LL, s % 3600 / 60LL, s % 60LL);
  } else if (s >= 60) {
    std::snprintf(buf, sizeof buf, "%lldm%02llds", s / 60LL, s % 60LL);
  } else {
    const double secs = std::chrono::duration<double>(d).count();
    std::snprintf(buf, sizeof buf, "%.1fs", secs);
  }
  return buf;
}

std::string number(double v) {
  char buf[64];
  if (v == static_cast<double>(static_cast<long long>(v)) && v < 1e15 && v > -1e15) {
    std::snprintf(buf, sizeof buf, "%lld", static_cast<long long>(v));
  } else {
    std::snprintf(buf, sizeof buf, "%.6g", v);
  }
  return buf;
}

void row(std::string& out, std::initializer_list<std::string_view> cells, bool head = false) {
  out += "<tr>";
  for (auto c : cells) {
    out += head ? "<th>" : "<td>";
    out += html_escape(c);
    out += head ? "</th>" : "</td>";
  }
  out += "</tr>\n";
}

}  // namespace

std::string html_escape(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (char ch : s) {
    const auto c = static_cast<unsigned char>(ch);
    switch (ch) {
      case '&':
        out += "&amp;";
        break;
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '"':
        out += "&quot;";
        break;
      case '\'':
        out += "&#39;";
        break;
      default:
        if (c < 0x20 || c >= 0x7f) {
          char buf[8];
          std::snprintf(buf, sizeof buf, "\\x%02x", c);  // client bytes: shown, never interpreted
          out += buf;
        } else {
          out.push_back(ch);
        }
    }
  }
  return out;
}

std::string sha256_hex(std::string_view text) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  if (EVP_Digest(text.data(), text.size(), digest, &len, EVP_sha256(), nullptr) != 1) return {};
  static constexpr char hex[] = "0123456789abcdef";
  std::string out;
  for (unsigned i = 0; i < len; ++i) {
    out.push_back(hex[digest[i] >> 4]);
    out.push_back(hex[digest[i] & 15]);
  }
  return out;
}

std::string render_status(const status_facts& f,
                          const std::vector<proxy::connection_status>& connections,
                          const std::vector<prometheus::MetricFamily>& metrics,
                          std::size_t max_connections) {
  std::string out;
  out.reserve(8192 + connections.size() * 200);
  out +=
      "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
      "<title>egressd status</title>\n<style>"
      "body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}"
      "h1{font-size:1.4em}h2{font-size:1.1em;margin-top:1.5em}"
      "table{border-collapse:collapse;font-size:.9em}"
      "td,th{border:1px solid #ccc;padding:.25em .6em;text-align:left}"
      "th{background:#f0f0f0}td.n{text-align:right;font-variant-numeric:tabular-nums}"
      ".draining{color:#b00;font-weight:bold}.ok{color:#070;font-weight:bold}"
      "</style></head><body>\n";
  out += "<h1>egressd " + html_escape(f.version) + "</h1>\n<table>\n";
  row(out, {"state", f.draining ? "draining" : "serving"});
  row(out, {"started", utc(f.started)});
  row(out, {"uptime", duration_text(f.uptime)});
  row(out, {"config", f.config_source});
  row(out, {"config sha256 (effective)", f.config_sha256});
  row(out, {"last reload", f.last_reload});
  std::string listeners;
  for (const auto& l : f.listeners) listeners += (listeners.empty() ? "" : ", ") + l;
  row(out, {"proxy listeners", listeners});
  row(out, {"admin listener", f.admin});
  out += "</table>\n";

  std::size_t tunnels = 0;
  for (const auto& c : connections) tunnels += c.state == "tunnel";
  out += "<h2>Connections: " + std::to_string(connections.size()) + " open, " +
         std::to_string(tunnels) + " tunnels (oldest first)</h2>\n<table id=\"connections\">\n";
  row(out, {"id", "age", "client", "state", "method", "target", "bytes in", "bytes out"}, true);
  std::size_t shown = 0;
  for (const auto& c : connections) {
    if (shown++ == max_connections) break;
    out += "<tr><td class=\"n\">" + std::to_string(c.id) + "</td><td class=\"n\">" +
           duration_text(c.age) + "</td><td>" + html_escape(c.client) + "</td><td>" +
           html_escape(c.state) + "</td><td>" + html_escape(c.method) + "</td><td>" +
           html_escape(c.target) + "</td><td class=\"n\">" + std::to_string(c.bytes_in) +
           "</td><td class=\"n\">" + std::to_string(c.bytes_out) + "</td></tr>\n";
  }
  out += "</table>\n";
  if (connections.size() > max_connections) {
    out += "<p>" + std::to_string(connections.size() - max_connections) +
           " more connections not shown.</p>\n";
  }

  out += "<h2>Counters (as in /metrics)</h2>\n<table id=\"counters\">\n";
  row(out, {"metric", "labels", "value"}, true);
  for (const auto& fam : metrics) {
    for (const auto& m : fam.metric) {
      std::string labels;
      for (const auto& l : m.label) {
        labels += (labels.empty() ? "" : ", ") + l.name + "=" + l.value;
      }
      double value = 0;
      switch (fam.type) {
        case prometheus::MetricType::Counter:
          value = m.counter.value;
          break;
        case prometheus::MetricType::Gauge:
          value = m.gauge.value;
          break;
        case prometheus::MetricType::Histogram:
          value = static_cast<double>(m.histogram.sample_count);
          labels += labels.empty() ? "count" : ", count";
          break;
        default:
          continue;
      }
      out += "<tr><td>" + html_escape(fam.name) + "</td><td>" + html_escape(labels) +
             "</td><td class=\"n\">" + number(value) + "</td></tr>\n";
    }
  }
  out += "</table>\n</body></html>\n";
  return out;
}

}  // namespace egressd::admin
