#include "egressd/proxy/access_log.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstdio>
#include <cstring>
#include <ctime>

namespace egressd::proxy {
namespace {

void append_nullable(std::string& out, const std::string& s) {
  if (s.empty()) {
    out.append("null");
  } else {
    append_json_string(out, s);
  }
}

constexpr char hex_digits[] = "0123456789abcdef";

template <typename T>
void append_number(std::string& out, T v) {
  char buf[24];
  auto res = std::to_chars(buf, buf + sizeof buf, v);
  out.append(buf, res.ptr);
}

// Writes v (0 <= v < 10^width) as exactly width decimal digits.
void put_digits(char* p, int v, int width) {
  for (int i = width - 1; i >= 0; --i) {
    p[i] = static_cast<char>('0' + v % 10);
    v /= 10;
  }
}

// The general case of append_time: any time gmtime_r() takes.
void append_time_slow(std::string& out, long long ms) {
  std::time_t secs = static_cast<std::time_t>(ms / 1000);
  std::tm tm{};
  gmtime_r(&secs, &tm);
  char buf[96];
  std::snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900,
                tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                static_cast<int>(ms % 1000));
  append_json_string(out, buf);
}

// "YYYY-MM-DDTHH:MM:SS.mmmZ" (the quotes included), as append_time_slow writes it. The seconds
// part is computed once per second per thread; times outside years 0..9999 or before the epoch
// take the slow path.
void append_time(std::string& out, std::chrono::system_clock::time_point t) {
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(t.time_since_epoch()).count();
  std::time_t secs = static_cast<std::time_t>(ms / 1000);
  struct cache {
    std::time_t secs = -1;
    char text[20] = {};  // "YYYY-MM-DDTHH:MM:SS"
    bool valid = false;
  };
  thread_local cache c;
  if (ms < 0) {
    append_time_slow(out, ms);
    return;
  }
  if (!c.valid || c.secs != secs) {
    std::tm tm{};
    gmtime_r(&secs, &tm);
    const int year = tm.tm_year + 1900;
    if (year < 0 || year > 9999) {
      append_time_slow(out, ms);
      return;
    }
    char* p = c.text;
    put_digits(p, year, 4);
    p[4] = '-';
    put_digits(p + 5, tm.tm_mon + 1, 2);
    p[7] = '-';
    put_digits(p + 8, tm.tm_mday, 2);
    p[10] = 'T';
    put_digits(p + 11, tm.tm_hour, 2);
    p[13] = ':';
    put_digits(p + 14, tm.tm_min, 2);
    p[16] = ':';
    put_digits(p + 17, tm.tm_sec, 2);
    c.secs = secs;
    c.valid = true;
  }
  char buf[1 + 19 + 6];
  buf[0] = '"';
  std::memcpy(buf + 1, c.text, 19);
  buf[20] = '.';
  put_digits(buf + 21, static_cast<int>(ms % 1000), 3);
  buf[24] = 'Z';
  buf[25] = '"';
  out.append(buf, sizeof buf);
}

// As snprintf(buf, 32, "%.3f") wrote it, truncation of huge values to 31 characters included:
// std::to_chars with a precision rounds the exact binary value the same way.
void append_fixed3(std::string& out, double v) {
  char buf[512];  // enough for any double in fixed notation with 3 decimals
  auto res = std::to_chars(buf, buf + sizeof buf, v, std::chars_format::fixed, 3);
  std::size_t n = res.ec == std::errc() ? static_cast<std::size_t>(res.ptr - buf) : 0;
  if (res.ec != std::errc())
    n = static_cast<std::size_t>(std::max(0, std::snprintf(buf, 32, "%.3f", v)));
  out.append(buf, std::min<std::size_t>(n, 31));
}

}  // namespace

void append_json_string(std::string& out, std::string_view s) {
  out.push_back('"');
  const char* p = s.data();
  const char* end = p + s.size();
  while (p != end) {
    // The run of bytes that need no escape goes in one append.
    const char* run = p;
    while (p != end) {
      auto c = static_cast<unsigned char>(*p);
      if (c == '"' || c == '\\' || c < 0x20 || c >= 0x7f) break;
      ++p;
    }
    out.append(run, p);
    if (p == end) break;
    auto c = static_cast<unsigned char>(*p++);
    if (c == '"' || c == '\\') {
      const char esc[2] = {'\\', static_cast<char>(c)};
      out.append(esc, 2);
    } else {
      const char esc[6] = {'\\', 'u', '0', '0', hex_digits[c >> 4], hex_digits[c & 15]};
      out.append(esc, 6);
    }
  }
  out.push_back('"');
}

void format_json(std::string& out, const access_record& r) {
  out.append("{\"time\":");
  append_time(out, r.start);
  out.append(",\"conn_id\":");
  append_number(out, r.conn_id);
  out.append(",\"client_addr\":");
  append_json_string(out, r.client_addr);
  out.append(",\"client_port\":");
  append_number(out, r.client_port);
  out.append(",\"proxy_addr\":");
  append_nullable(out, r.proxy_addr);
  out.append(",\"lb_peer\":");
  append_nullable(out, r.lb_peer);
  out.append(",\"method\":");
  append_nullable(out, r.method);
  out.append(",\"target\":");
  append_nullable(out, r.target);
  out.append(",\"status\":");
  append_number(out, r.status);
  out.append(",\"rule\":");
  append_nullable(out, r.rule);
  out.append(",\"bytes_in\":");
  append_number(out, r.bytes_in);
  out.append(",\"bytes_out\":");
  append_number(out, r.bytes_out);
  out.append(",\"duration_ms\":");
  append_fixed3(out, r.duration_ms);
  out.append(",\"upstream_addr\":");
  append_nullable(out, r.upstream_addr);
  out.append(",\"egress_addr\":");
  append_nullable(out, r.egress_addr);
  out.append(",\"error\":");
  append_nullable(out, r.error);
  out.append(",\"vpce_id\":");
  append_nullable(out, r.vpce_id);
  out.append(",\"user\":");
  append_nullable(out, r.user);
  out.append(",\"would_deny\":");
  append_nullable(out, r.would_deny);
  out.append(",\"client_identity\":");
  append_nullable(out, r.client_identity);
  out.append(",\"relay\":");
  append_nullable(out, r.relay);
  out.append("}\n");
}

std::string format_json(const access_record& r) {
  std::string out;
  out.reserve(512);
  format_json(out, r);
  return out;
}

// Squid's default "squid" logformat:
//   %ts.%03tu %6tr %>a %Ss/%03>Hs %<st %rm %ru %[un %Sh/%<a %mt
// The result code is TCP_TUNNEL for CONNECT, TCP_MISS otherwise, TCP_DENIED for policy denials
// and NONE for requests that never reached a decision, as Squid reports them.
std::string format_squid(const access_record& r) {
  auto ms =
      std::chrono::duration_cast<std::chrono::milliseconds>(r.start.time_since_epoch()).count();
  std::string code;
  if (r.status == 403) {
    code = "TCP_DENIED";
  } else if (r.status == 0 || r.status == 400) {
    code = "NONE";
  } else if (r.method == "CONNECT") {
    code = "TCP_TUNNEL";
  } else {
    code = "TCP_MISS";
  }
  std::string peer = "HIER_NONE/-";
  if (!r.upstream_addr.empty()) {
    std::string host = r.upstream_addr.substr(0, r.upstream_addr.rfind(':'));
    if (!host.empty() && host.front() == '[') host = host.substr(1, host.size() - 2);
    peer = "HIER_DIRECT/" + host;
  }
  auto safe = [](const std::string& s) {
    // Squid logs space-separated fields; a space or control byte would split one.
    std::string o = s.empty() ? "-" : s;
    for (auto& c : o)
      if (static_cast<unsigned char>(c) <= 0x20 || static_cast<unsigned char>(c) >= 0x7f) c = '_';
    return o;
  };
  char buf[128];
  std::snprintf(buf, sizeof buf, "%lld.%03lld %6lld ", static_cast<long long>(ms / 1000),
                static_cast<long long>(ms % 1000), static_cast<long long>(r.duration_ms));
  std::string out = buf;
  out.append(safe(r.client_addr)).push_back(' ');
  // %<st is the whole reply as written to the client: head, framing and body.
  std::snprintf(buf, sizeof buf, "%s/%03d %llu ", code.c_str(), r.status,
                static_cast<unsigned long long>(r.reply_bytes));
  out.append(buf);
  out.append(safe(r.method)).push_back(' ');
  out.append(safe(r.target)).push_back(' ');
  out.append(safe(r.user)).push_back(' ');  // %[un: the X-Authenticated-User, else "-"
  out.append(peer).push_back(' ');
  out.append(safe(r.content_type)).push_back('\n');  // %mt
  return out;
}

access_log::~access_log() {
  if (owned_ && fd_ >= 0) ::close(fd_);
}

std::string access_log::open(const std::string& destination, access_format format) {
  format_ = format;
  if (destination == "off") {
    fd_ = -1;
    return {};
  }
  if (destination == "stdout") {
    fd_ = STDOUT_FILENO;
    return {};
  }
  int fd = ::open(destination.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
  if (fd < 0) return destination + ": " + std::strerror(errno);
  fd_ = fd;
  owned_ = true;
  path_ = destination;
  return {};
}

// logrotate's default (rename, then SIGHUP) and `create` mode: the file is opened again by name
// and dup2() puts it on the same descriptor number, atomically, so workers writing at that
// moment never see a closed descriptor. A failure keeps the old file.
std::string access_log::reopen() {
  if (!owned_ || path_.empty()) return {};
  int fd = ::open(path_.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
  if (fd < 0) return path_ + ": " + std::strerror(errno);
  std::string err;
  if (::dup3(fd, fd_, O_CLOEXEC) < 0) err = path_ + ": " + std::strerror(errno);
  ::close(fd);
  return err;
}

void access_log::write(const access_record& r) {
  if (fd_ < 0) return;
  // Formatted into a per-thread buffer that keeps its storage from one record to the next.
  thread_local std::string line;
  line.clear();
  if (format_ == access_format::json) {
    format_json(line, r);
  } else {
    line = format_squid(r);
  }
  std::lock_guard lock(mutex_);
  std::size_t off = 0;
  while (off < line.size()) {
    ssize_t n = ::write(fd_, line.data() + off, line.size() - off);
    if (n < 0) {
      if (errno == EINTR) continue;
      return;  // a full disk or closed pipe must not take the proxy down; the line is lost
    }
    off += static_cast<std::size_t>(n);
  }
}

}  // namespace egressd::proxy
