// loadgen: the client side of egressd's side-by-side benchmark (bench/run.sh).
//
// One file, C++20, raw epoll, no dependencies beyond libc and OpenSSL (libssl, libcrypto: only
// `fetch --tls-ca` uses them). Every mode speaks IPv4 over loopback only and prints one line of
// `key=value` pairs that run.sh parses. Build: g++ -O2 -std=c++20 loadgen.cpp -pthread -lssl
// -lcrypto
//
//   loadgen fetch    --target H:P --origin H:P --path P [--via direct|connect|forward]
//                    [--discard trunc|copy] [--tls-ca CA.pem]
//       one GET of a large object; reports body bytes, seconds, GB/s (1 GB = 1e9 bytes) and the
//       client's own CPU seconds (client_cpu_s, user + system). --tls-ca: speak TLS to --target
//       (HTTPS to the proxy, or to the origin with --via direct), its certificate verified
//       against CA.pem for the target's IP; the CONNECT, the GET and the body all go through
//       TLS, and the body is decrypted into a 64 KiB buffer (--discard does not apply). Adds
//       tls=VERSION cipher=NAME to the output.
//   loadgen tunnels  --target H:P --origin H:P --path P [--via connect|direct]
//                    [--conns N] [--threads T] [--duration S]
//       closed-loop new connections: CONNECT, wait for 200, one GET with Connection: close,
//       read the whole response, close, start over. Reports completed tunnels per second.
//   loadgen idle     --target H:P --sink H:P [--count N] [--hold S] [--parallel P]
//       listens on --sink, opens N CONNECT tunnels through --target to it (at most P being set
//       up at once), echoes one byte through each, prints a READY line, then holds them until
//       SIGUSR1/SIGTERM or --hold seconds.
//   loadgen latency  --target H:P --origin H:P --path P [--via forward|direct]
//                    [--rate R] [--conns C] [--duration S] [--warmup S] [--baseline 1]
//       open-loop fixed request rate over C keep-alive connections; latency is measured from
//       the scheduled send time (queueing counts, as in wrk2), reports p50/p90/p99/max in us.
//       --baseline 1 sends the same requests straight to --origin on the same ticks, reports
//       them as base_*, and added_p50_us/added_p99_us: percentiles of the per-tick difference.
//   loadgen proc     PID...
//       CPU seconds (utime+stime+cutime+cstime) and RSS summed over the PIDs and all their
//       descendants, from /proc.
//   loadgen report   RESULTS.tsv OUT.md OUT.json
//       builds the table (markdown on stdout and OUT.md) and the raw JSON from run.sh's results.

#include <arpa/inet.h>
#include <dirent.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <fstream>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

namespace {

// ---------------------------------------------------------------------------------------------
// Small utilities

[[noreturn]] void die(const std::string& msg) {
  std::fprintf(stderr, "loadgen: %s\n", msg.c_str());
  std::exit(2);
}

[[noreturn]] void die_errno(const std::string& what) {
  die(what + ": " + std::strerror(errno));
}

uint64_t now_ns() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1'000'000'000ULL + static_cast<uint64_t>(ts.tv_nsec);
}

// Owns one file descriptor; closes it on destruction.
class Fd {
 public:
  Fd() = default;
  explicit Fd(int fd) : fd_(fd) {}
  Fd(Fd&& o) noexcept : fd_(std::exchange(o.fd_, -1)) {}
  Fd& operator=(Fd&& o) noexcept {
    if (this != &o) {
      reset();
      fd_ = std::exchange(o.fd_, -1);
    }
    return *this;
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  ~Fd() { reset(); }
  void reset() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }
  int get() const { return fd_; }
  int release() { return std::exchange(fd_, -1); }
  explicit operator bool() const { return fd_ >= 0; }

 private:
  int fd_ = -1;
};

// Command-line options: `--key value` pairs after the mode; positional arguments kept in order.
class Args {
 public:
  Args(int argc, char** argv, int first) {
    for (int i = first; i < argc; ++i) {
      std::string_view a = argv[i];
      if (a.starts_with("--")) {
        if (i + 1 >= argc) die("option " + std::string(a) + " needs a value");
        opts_[std::string(a.substr(2))] = argv[++i];
      } else {
        positional_.emplace_back(a);
      }
    }
  }
  std::string str(const std::string& key, const std::string& def = {}) const {
    auto it = opts_.find(key);
    used_.insert(key);
    if (it != opts_.end()) return it->second;
    if (def.empty()) die("missing --" + key);
    return def;
  }
  double num(const std::string& key, double def) const {
    auto it = opts_.find(key);
    used_.insert(key);
    if (it == opts_.end()) return def;
    char* end = nullptr;
    double v = std::strtod(it->second.c_str(), &end);
    if (end == it->second.c_str() || *end != '\0') die("--" + key + ": not a number");
    return v;
  }
  const std::vector<std::string>& positional() const { return positional_; }
  // Rejects options no mode asked for, so a typo is not silently ignored.
  void check_all_used() const {
    for (const auto& [k, v] : opts_)
      if (!used_.contains(k)) die("unknown option --" + k);
  }

 private:
  std::map<std::string, std::string> opts_;
  std::vector<std::string> positional_;
  mutable std::set<std::string> used_;
};

sockaddr_in parse_addr(const std::string& hostport) {
  auto colon = hostport.rfind(':');
  if (colon == std::string::npos) die("address without port: " + hostport);
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  int port = std::atoi(hostport.c_str() + colon + 1);
  if (port <= 0 || port > 65535) die("bad port in " + hostport);
  sa.sin_port = htons(static_cast<uint16_t>(port));
  std::string host = hostport.substr(0, colon);
  if (inet_pton(AF_INET, host.c_str(), &sa.sin_addr) != 1) die("not an IPv4 address: " + host);
  // Everything this tool does stays on loopback.
  if ((ntohl(sa.sin_addr.s_addr) >> 24) != 127) die("refusing non-loopback address " + host);
  return sa;
}

void set_nodelay(int fd) {
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

// Blocking connect, used by the single-connection modes.
Fd connect_blocking(const sockaddr_in& sa) {
  Fd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd) die_errno("socket");
  if (::connect(fd.get(), reinterpret_cast<const sockaddr*>(&sa), sizeof sa) != 0)
    die_errno("connect");
  set_nodelay(fd.get());
  return fd;
}

// Starts a non-blocking connect. Returns the socket (connect in progress or done) or -1.
int connect_nonblocking(const sockaddr_in& sa) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  set_nodelay(fd);
  if (::connect(fd, reinterpret_cast<const sockaddr*>(&sa), sizeof sa) != 0 &&
      errno != EINPROGRESS) {
    ::close(fd);
    return -1;
  }
  return fd;
}

bool send_all_blocking(int fd, std::string_view data) {
  while (!data.empty()) {
    ssize_t n = ::send(fd, data.data(), data.size(), MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    data.remove_prefix(static_cast<size_t>(n));
  }
  return true;
}

// Small requests always fit an empty socket buffer; a short write is treated as a failure.
bool send_small(int fd, std::string_view data) {
  ssize_t n = ::send(fd, data.data(), data.size(), MSG_NOSIGNAL);
  return n == static_cast<ssize_t>(data.size());
}

bool iequals_prefix(std::string_view line, std::string_view name) {
  if (line.size() < name.size()) return false;
  for (size_t i = 0; i < name.size(); ++i)
    if (std::tolower(static_cast<unsigned char>(line[i])) != name[i]) return false;
  return true;
}

// ---------------------------------------------------------------------------------------------
// HTTP/1.1 response head, just enough to frame the bodies the origin sends.

struct ResponseHead {
  int status = 0;
  size_t head_len = 0;          // bytes up to and including the blank line
  int64_t content_length = -1;  // -1: not given
  bool chunked = false;
  bool close = false;  // the server will close after this response
};

// Parses a response head at the start of `buf`. nullopt: incomplete; status 0: malformed.
std::optional<ResponseHead> parse_head(std::string_view buf) {
  auto end = buf.find("\r\n\r\n");
  if (end == std::string_view::npos) return std::nullopt;
  ResponseHead h;
  h.head_len = end + 4;
  std::string_view head = buf.substr(0, end + 2);
  auto eol = head.find("\r\n");
  std::string_view status_line = head.substr(0, eol);
  if (!status_line.starts_with("HTTP/1.") || status_line.size() < 12) return h;
  std::from_chars(status_line.data() + 9, status_line.data() + 12, h.status);
  bool keep_alive_header = false;
  size_t pos = eol + 2;
  while (pos < head.size()) {
    auto next = head.find("\r\n", pos);
    std::string_view line = head.substr(pos, next - pos);
    pos = next + 2;
    auto value_of = [&](std::string_view l) {
      auto colon = l.find(':');
      std::string_view v = l.substr(colon + 1);
      while (!v.empty() && (v.front() == ' ' || v.front() == '\t')) v.remove_prefix(1);
      return v;
    };
    if (iequals_prefix(line, "content-length:")) {
      auto v = value_of(line);
      int64_t n = -1;
      auto [p, ec] = std::from_chars(v.data(), v.data() + v.size(), n);
      if (ec == std::errc()) h.content_length = n;
    } else if (iequals_prefix(line, "transfer-encoding:")) {
      h.chunked = value_of(line).find("chunked") != std::string_view::npos;
    } else if (iequals_prefix(line, "connection:") || iequals_prefix(line, "proxy-connection:")) {
      std::string v(value_of(line));
      for (auto& c : v) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
      if (v.find("close") != std::string::npos) h.close = true;
      if (v.find("keep-alive") != std::string::npos) keep_alive_header = true;
    }
  }
  // HTTP/1.0 closes unless it says otherwise.
  if (status_line.starts_with("HTTP/1.0") && !keep_alive_header) h.close = true;
  return h;
}

std::string connect_request(const std::string& origin) {
  return "CONNECT " + origin + " HTTP/1.1\r\nHost: " + origin + "\r\n\r\n";
}

// via=forward uses the absolute form a client sends to a forward proxy; otherwise origin form.
std::string get_request(const std::string& via, const std::string& origin, const std::string& path,
                        bool close) {
  std::string target = via == "forward" ? "http://" + origin + path : path;
  std::string req = "GET " + target + " HTTP/1.1\r\nHost: " + origin + "\r\n";
  if (close) req += "Connection: close\r\n";
  req += "\r\n";
  return req;
}

void check_via(const std::string& via, std::initializer_list<std::string_view> allowed) {
  for (auto a : allowed)
    if (via == a) return;
  die("--via " + via + " not supported in this mode");
}

// ---------------------------------------------------------------------------------------------
// fetch: one large GET, the body discarded as cheaply as the kernel allows.

[[noreturn]] void die_ssl(const std::string& what) {
  std::string msg = what;
  while (unsigned long e = ERR_get_error()) {
    char b[256];
    ERR_error_string_n(e, b, sizeof b);
    msg += std::string(": ") + b;
  }
  die(msg);
}

// A blocking byte stream to the target: the plain socket, or (start_tls) OpenSSL over it.
class Stream {
 public:
  explicit Stream(Fd fd) : fd_(std::move(fd)) {}
  Stream(const Stream&) = delete;
  Stream& operator=(const Stream&) = delete;
  ~Stream() {
    if (ssl_) SSL_free(ssl_);
    if (ctx_) SSL_CTX_free(ctx_);
  }

  // TLS 1.2+ client handshake; the server certificate must chain to ca_file and name ip (an IP
  // SAN: no SNI is sent for an address). OpenSSL's default cipher list and groups, as curl's.
  void start_tls(const std::string& ca_file, const std::string& ip) {
    ctx_ = SSL_CTX_new(TLS_client_method());
    if (!ctx_) die_ssl("SSL_CTX_new");
    SSL_CTX_set_min_proto_version(ctx_, TLS1_2_VERSION);
    if (SSL_CTX_load_verify_locations(ctx_, ca_file.c_str(), nullptr) != 1)
      die_ssl("cannot load CA file " + ca_file);
    SSL_CTX_set_verify(ctx_, SSL_VERIFY_PEER, nullptr);
    // A peer that closes without close_notify ends the body like a TCP close would.
    SSL_CTX_set_options(ctx_, SSL_OP_IGNORE_UNEXPECTED_EOF);
    // Read ahead into a 256 KiB buffer: several records per recv() instead of two recv()s per
    // 16 KiB record, so the client spends its CPU on decryption, not on system calls.
    SSL_CTX_set_read_ahead(ctx_, 1);
    SSL_CTX_set_default_read_buffer_len(ctx_, 256 * 1024);
    ssl_ = SSL_new(ctx_);
    if (!ssl_) die_ssl("SSL_new");
    if (X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl_), ip.c_str()) != 1)
      die_ssl("X509_VERIFY_PARAM_set1_ip_asc");
    SSL_set_fd(ssl_, fd_.get());
    if (SSL_connect(ssl_) != 1) die_ssl("TLS handshake with the target failed");
  }

  bool tls() const { return ssl_ != nullptr; }
  std::string tls_version() const { return ssl_ ? SSL_get_version(ssl_) : "none"; }
  std::string tls_cipher() const { return ssl_ ? SSL_get_cipher_name(ssl_) : "none"; }

  // > 0: bytes read; 0: end of stream; < 0: error (errno set for the plain socket). flags are
  // recv() flags, plain socket only.
  ssize_t read(char* buf, size_t n, int flags = 0) {
    if (!ssl_) {
      for (;;) {
        ssize_t r = ::recv(fd_.get(), buf, n, flags);
        if (r < 0 && errno == EINTR) continue;
        return r;
      }
    }
    size_t got = 0;
    if (SSL_read_ex(ssl_, buf, n, &got) == 1) return static_cast<ssize_t>(got);
    int err = SSL_get_error(ssl_, 0);
    if (err == SSL_ERROR_ZERO_RETURN) return 0;
    die_ssl("TLS read failed (SSL_get_error " + std::to_string(err) + ")");
  }

  bool write_all(std::string_view data) {
    if (!ssl_) return send_all_blocking(fd_.get(), data);
    size_t done = 0;
    return SSL_write_ex(ssl_, data.data(), data.size(), &done) == 1 && done == data.size();
  }

 private:
  Fd fd_;
  SSL_CTX* ctx_ = nullptr;
  SSL* ssl_ = nullptr;
};

// Reads a response head from a blocking stream. Returns the head and any body bytes after it.
std::pair<ResponseHead, std::string> read_head_blocking(Stream& s) {
  std::string buf;
  char tmp[16384];
  for (;;) {
    if (auto h = parse_head(buf)) {
      if (h->status == 0) die("malformed response head: " + buf.substr(0, 200));
      return {*h, buf.substr(h->head_len)};
    }
    if (buf.size() > 65536) die("response head too large");
    // MSG_PEEK then consume exactly the head would avoid copying body bytes here, but the few
    // body bytes that ride along with the head do not matter for a 1 GiB transfer.
    ssize_t n = s.read(tmp, sizeof tmp);
    if (n <= 0) die("connection closed before the response head (got: " + buf.substr(0, 200) + ")");
    buf.append(tmp, static_cast<size_t>(n));
  }
}

double own_cpu_seconds() {
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  auto secs = [](const timeval& tv) {
    return static_cast<double>(tv.tv_sec) + static_cast<double>(tv.tv_usec) / 1e6;
  };
  return secs(ru.ru_utime) + secs(ru.ru_stime);
}

int mode_fetch(const Args& args) {
  const std::string target_str = args.str("target");
  auto target = parse_addr(target_str);
  std::string origin = args.str("origin");
  parse_addr(origin);
  std::string path = args.str("path");
  std::string via = args.str("via", "direct");
  std::string discard = args.str("discard", "trunc");
  std::string tls_ca = args.str("tls-ca", "-");
  args.check_all_used();
  check_via(via, {"direct", "connect", "forward"});
  if (discard != "trunc" && discard != "copy") die("--discard must be trunc or copy");
  const bool tls = tls_ca != "-";

  const double cpu0 = own_cpu_seconds();
  uint64_t t0 = now_ns();
  Stream s(connect_blocking(target));
  if (tls) s.start_tls(tls_ca, target_str.substr(0, target_str.rfind(':')));
  if (via == "connect") {
    if (!s.write_all(connect_request(origin))) die_errno("send CONNECT");
    auto [head, rest] = read_head_blocking(s);
    if (head.status != 200) die("CONNECT answered " + std::to_string(head.status));
    if (!rest.empty()) die("bytes after the CONNECT response");
  }
  if (!s.write_all(get_request(via, origin, path, false))) die_errno("send GET");
  auto [head, rest] = read_head_blocking(s);
  if (head.status != 200) die("GET answered " + std::to_string(head.status));
  if (head.chunked) die("chunked response: this mode expects Content-Length");

  uint64_t body = rest.size();
  const uint64_t want =
      head.content_length >= 0 ? static_cast<uint64_t>(head.content_length) : UINT64_MAX;
  // MSG_TRUNC on a TCP socket drops the data in the kernel without copying it to user space
  // (tcp(7)), so the client costs the least CPU possible; --discard copy reads into a 4 MiB
  // buffer like an ordinary client. Over TLS every byte must be decrypted: the records are read
  // into a 64 KiB buffer (small enough to stay in the cache) and dropped.
  const int flags = discard == "trunc" ? MSG_TRUNC : 0;
  std::vector<char> buf(tls ? 64 << 10 : 4 << 20);
  while (body < want) {
    size_t ask = static_cast<size_t>(std::min<uint64_t>(buf.size(), want - body));
    ssize_t n = s.read(buf.data(), ask, flags);
    if (n < 0) die_errno("recv body");
    if (n == 0) {
      if (want == UINT64_MAX) break;
      die("connection closed after " + std::to_string(body) + " of " + std::to_string(want) +
          " body bytes");
    }
    body += static_cast<uint64_t>(n);
  }
  double secs = static_cast<double>(now_ns() - t0) / 1e9;
  std::printf("bytes=%llu seconds=%.6f gbps=%.4f client_cpu_s=%.3f",
              static_cast<unsigned long long>(body), secs, static_cast<double>(body) / secs / 1e9,
              own_cpu_seconds() - cpu0);
  if (tls) std::printf(" tls=%s cipher=%s", s.tls_version().c_str(), s.tls_cipher().c_str());
  std::printf("\n");
  return 0;
}

// ---------------------------------------------------------------------------------------------
// tunnels: closed-loop new CONNECT tunnels, one small GET each, many in parallel.

struct TunnelStats {
  uint64_t completed = 0;
  uint64_t failed = 0;
  std::vector<uint32_t> durations_us;  // connect() to last response byte, per completed tunnel
};

class TunnelWorker {
 public:
  TunnelWorker(const sockaddr_in& target, std::string connect_req, std::string get_req,
               bool via_connect, int conns)
      : target_(target),
        connect_req_(std::move(connect_req)),
        get_req_(std::move(get_req)),
        via_connect_(via_connect),
        slots_(static_cast<size_t>(conns)) {}

  TunnelStats run(uint64_t deadline_ns) {
    epoll_ = Fd(::epoll_create1(EPOLL_CLOEXEC));
    if (!epoll_) die_errno("epoll_create1");
    for (size_t i = 0; i < slots_.size(); ++i) start(i);
    std::vector<epoll_event> events(256);
    while (now_ns() < deadline_ns) {
      int n = ::epoll_wait(epoll_.get(), events.data(), static_cast<int>(events.size()), 10);
      if (n < 0 && errno != EINTR) die_errno("epoll_wait");
      for (int i = 0; i < n; ++i) handle(events[static_cast<size_t>(i)].data.u32);
      // A slot whose connect failed outright is restarted here, after a short pause, so a
      // refusing proxy does not turn this loop into a spin.
      if (!retry_.empty()) {
        std::vector<size_t> again;
        again.swap(retry_);
        if (n == 0) ::usleep(1000);
        for (size_t s : again) start(s);
      }
    }
    for (auto& s : slots_)
      if (s.fd >= 0) ::close(s.fd);
    return std::move(stats_);
  }

 private:
  enum class Phase { connecting, await_established, await_response };
  struct Slot {
    int fd = -1;
    Phase phase = Phase::connecting;
    uint64_t started_ns = 0;
    size_t len = 0;
    std::optional<ResponseHead> head;
    uint64_t body = 0;
    char buf[4096];
  };

  void start(size_t i) {
    Slot& s = slots_[i];
    s.fd = connect_nonblocking(target_);
    s.phase = Phase::connecting;
    s.started_ns = now_ns();
    s.len = 0;
    s.head.reset();
    s.body = 0;
    if (s.fd < 0) {
      ++stats_.failed;
      retry_.push_back(i);
      return;
    }
    // Edge-triggered, both directions at once: the EPOLLOUT edge says the connect finished,
    // every EPOLLIN edge is drained to EAGAIN. No epoll_ctl(MOD) per phase.
    epoll_event ev{};
    ev.events = EPOLLIN | EPOLLOUT | EPOLLET | EPOLLRDHUP;
    ev.data.u32 = static_cast<uint32_t>(i);
    if (::epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, s.fd, &ev) != 0) die_errno("epoll_ctl");
  }

  void finish(size_t i, bool ok) {
    Slot& s = slots_[i];
    ::close(s.fd);  // also removes it from the epoll set
    s.fd = -1;
    if (ok) {
      ++stats_.completed;
      stats_.durations_us.push_back(static_cast<uint32_t>((now_ns() - s.started_ns) / 1000));
    } else {
      ++stats_.failed;
    }
    start(i);
  }

  void handle(uint32_t i) {
    Slot& s = slots_[i];
    if (s.fd < 0) return;
    if (s.phase == Phase::connecting) {
      int err = 0;
      socklen_t len = sizeof err;
      ::getsockopt(s.fd, SOL_SOCKET, SO_ERROR, &err, &len);
      if (err != 0) return finish(i, false);
      if (!send_small(s.fd, via_connect_ ? connect_req_ : get_req_)) return finish(i, false);
      s.phase = via_connect_ ? Phase::await_established : Phase::await_response;
    }
    for (;;) {
      if (s.len == sizeof s.buf) s.len = 0;  // only body bytes can fill it: counted already
      ssize_t n = ::recv(s.fd, s.buf + s.len, sizeof s.buf - s.len, 0);
      if (n < 0) {
        if (errno == EAGAIN) return;
        if (errno == EINTR) continue;
        return finish(i, false);
      }
      if (n == 0) {
        // EOF: a complete response only if it was framed by the close.
        bool ok = s.phase == Phase::await_response && s.head && s.head->content_length < 0 &&
                  !s.head->chunked && s.head->status == 200;
        return finish(i, ok);
      }
      s.len += static_cast<size_t>(n);
      if (s.phase == Phase::await_established) {
        auto h = parse_head(std::string_view(s.buf, s.len));
        if (!h) continue;
        if (h->status != 200 || h->head_len != s.len) return finish(i, false);
        s.len = 0;
        if (!send_small(s.fd, get_req_)) return finish(i, false);
        s.phase = Phase::await_response;
        continue;
      }
      if (!s.head) {
        s.head = parse_head(std::string_view(s.buf, s.len));
        if (!s.head) continue;
        if (s.head->status != 200 || s.head->chunked) return finish(i, false);
        s.body = s.len - s.head->head_len;
      } else {
        s.body += static_cast<uint64_t>(n);
      }
      if (s.head->content_length >= 0 && s.body >= static_cast<uint64_t>(s.head->content_length))
        return finish(i, true);
    }
  }

  sockaddr_in target_;
  std::string connect_req_;
  std::string get_req_;
  bool via_connect_;
  std::vector<Slot> slots_;
  std::vector<size_t> retry_;
  Fd epoll_;
  TunnelStats stats_;
};

template <typename T>
T percentile(std::vector<T>& v, double p) {
  if (v.empty()) return T{};
  size_t k = static_cast<size_t>(std::ceil(p / 100.0 * static_cast<double>(v.size())));
  k = std::clamp<size_t>(k, 1, v.size()) - 1;
  std::nth_element(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(k), v.end());
  return v[k];
}

int mode_tunnels(const Args& args) {
  auto target = parse_addr(args.str("target"));
  std::string origin = args.str("origin");
  parse_addr(origin);
  std::string path = args.str("path");
  std::string via = args.str("via", "connect");
  int conns = static_cast<int>(args.num("conns", 64));
  int threads = static_cast<int>(args.num("threads", 1));
  double duration = args.num("duration", 5);
  args.check_all_used();
  check_via(via, {"connect", "direct"});
  if (conns < threads || threads < 1) die("need --conns >= --threads >= 1");

  uint64_t t0 = now_ns();
  uint64_t deadline = t0 + static_cast<uint64_t>(duration * 1e9);
  std::vector<TunnelStats> results(static_cast<size_t>(threads));
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t) {
    int share = conns / threads + (t < conns % threads ? 1 : 0);
    pool.emplace_back([&, t, share] {
      TunnelWorker w(target, connect_request(origin), get_request("direct", origin, path, true),
                     via == "connect", share);
      results[static_cast<size_t>(t)] = w.run(deadline);
    });
  }
  for (auto& th : pool) th.join();
  double secs = static_cast<double>(now_ns() - t0) / 1e9;
  TunnelStats all;
  for (auto& r : results) {
    all.completed += r.completed;
    all.failed += r.failed;
    all.durations_us.insert(all.durations_us.end(), r.durations_us.begin(), r.durations_us.end());
  }
  std::printf("completed=%llu failed=%llu seconds=%.3f rate=%.1f p50_us=%u p99_us=%u\n",
              static_cast<unsigned long long>(all.completed),
              static_cast<unsigned long long>(all.failed), secs,
              static_cast<double>(all.completed) / secs, percentile(all.durations_us, 50),
              percentile(all.durations_us, 99));
  return 0;
}

// ---------------------------------------------------------------------------------------------
// idle: N established, verified, then idle CONNECT tunnels to our own sink.

int mode_idle(const Args& args) {
  auto target = parse_addr(args.str("target"));
  std::string sink_addr = args.str("sink");
  auto sink_sa = parse_addr(sink_addr);
  int count = static_cast<int>(args.num("count", 5000));
  double hold = args.num("hold", 120);
  int parallel = static_cast<int>(args.num("parallel", 200));
  args.check_all_used();

  // SIGUSR1 ends the hold; SIGTERM/SIGINT too. Taken through a signalfd in the same loop.
  sigset_t mask;
  sigemptyset(&mask);
  sigaddset(&mask, SIGUSR1);
  sigaddset(&mask, SIGTERM);
  sigaddset(&mask, SIGINT);
  sigprocmask(SIG_BLOCK, &mask, nullptr);
  Fd sigfd(::signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK));

  Fd listener(::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  int one = 1;
  setsockopt(listener.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (::bind(listener.get(), reinterpret_cast<const sockaddr*>(&sink_sa), sizeof sink_sa) != 0)
    die_errno("bind sink " + sink_addr);
  if (::listen(listener.get(), 4096) != 0) die_errno("listen");

  Fd ep(::epoll_create1(EPOLL_CLOEXEC));
  auto add = [&](int fd, uint32_t events, uint64_t tag) {
    epoll_event ev{};
    ev.events = events;
    ev.data.u64 = tag;
    if (::epoll_ctl(ep.get(), EPOLL_CTL_ADD, fd, &ev) != 0) die_errno("epoll_ctl");
  };
  // Tags: high bit set = sink-side socket; 0x4000... = listener; 0x2000... = signalfd;
  // otherwise the index of a client slot.
  constexpr uint64_t kSink = 1ULL << 63, kListener = 1ULL << 62, kSignal = 1ULL << 61;
  add(listener.get(), EPOLLIN, kListener);
  add(sigfd.get(), EPOLLIN, kSignal);

  enum class Phase { connecting, await_established, await_echo, idle, failed };
  struct Client {
    int fd = -1;
    Phase phase = Phase::connecting;
    std::string in;
  };
  std::vector<Client> clients(static_cast<size_t>(count));
  std::vector<int> sink_fds;
  sink_fds.reserve(static_cast<size_t>(count));
  const std::string req = connect_request(sink_addr);
  int launched = 0, in_flight = 0, established = 0, failed = 0;

  auto fail = [&](size_t i) {
    Client& c = clients[i];
    if (c.fd >= 0) ::close(c.fd);
    c.fd = -1;
    c.phase = Phase::failed;
    ++failed;
    --in_flight;
  };
  auto launch_more = [&] {
    while (launched < count && in_flight < parallel) {
      size_t i = static_cast<size_t>(launched++);
      ++in_flight;
      clients[i].fd = connect_nonblocking(target);
      if (clients[i].fd < 0) {
        fail(i);
        continue;
      }
      add(clients[i].fd, EPOLLIN | EPOLLOUT | EPOLLET, i);
    }
  };
  auto on_client = [&](size_t i) {
    Client& c = clients[i];
    if (c.fd < 0) return;
    if (c.phase == Phase::connecting) {
      int err = 0;
      socklen_t len = sizeof err;
      ::getsockopt(c.fd, SOL_SOCKET, SO_ERROR, &err, &len);
      if (err != 0 || !send_small(c.fd, req)) return fail(i);
      c.phase = Phase::await_established;
    }
    char buf[1024];
    for (;;) {
      ssize_t n = ::recv(c.fd, buf, sizeof buf, 0);
      if (n < 0 && errno == EAGAIN) return;
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) {
        if (c.phase == Phase::idle) {  // the proxy closed an established tunnel
          ::close(c.fd);
          c.fd = -1;
          c.phase = Phase::failed;
          --established;
          ++failed;
          return;
        }
        return fail(i);
      }
      c.in.append(buf, static_cast<size_t>(n));
      if (c.phase == Phase::await_established) {
        auto h = parse_head(c.in);
        if (!h) continue;
        if (h->status != 200 || h->head_len != c.in.size()) return fail(i);
        c.in.clear();
        if (!send_small(c.fd, "x")) return fail(i);
        c.phase = Phase::await_echo;
      } else if (c.phase == Phase::await_echo) {
        if (c.in != "x") return fail(i);
        c.in.clear();
        c.in.shrink_to_fit();
        c.phase = Phase::idle;
        ++established;
        --in_flight;
      }
    }
  };
  auto on_sink = [&](int fd) {
    char buf[256];
    for (;;) {
      ssize_t n = ::recv(fd, buf, sizeof buf, 0);
      if (n > 0) {
        send_small(fd, std::string_view(buf, static_cast<size_t>(n)));  // echo
        continue;
      }
      if (n < 0 && (errno == EAGAIN || errno == EINTR)) return;
      ::epoll_ctl(ep.get(), EPOLL_CTL_DEL, fd, nullptr);  // closed at exit
      return;
    }
  };

  launch_more();
  std::vector<epoll_event> events(512);
  const uint64_t setup_deadline = now_ns() + 180'000'000'000ULL;
  uint64_t hold_deadline = 0;
  bool done = false;
  while (!done) {
    uint64_t now = now_ns();
    if (!hold_deadline && established + failed == count) {
      std::printf("READY established=%d failed=%d\n", established, failed);
      std::fflush(stdout);
      hold_deadline = now + static_cast<uint64_t>(hold * 1e9);
    }
    if (!hold_deadline && now > setup_deadline) {
      std::printf("READY established=%d failed=%d timeout=1\n", established, failed + in_flight);
      std::fflush(stdout);
      hold_deadline = now + static_cast<uint64_t>(hold * 1e9);
    }
    if (hold_deadline && now > hold_deadline) break;
    int n = ::epoll_wait(ep.get(), events.data(), static_cast<int>(events.size()), 100);
    if (n < 0 && errno != EINTR) die_errno("epoll_wait");
    for (int k = 0; k < n; ++k) {
      uint64_t tag = events[static_cast<size_t>(k)].data.u64;
      if (tag == kSignal) {
        done = true;
      } else if (tag == kListener) {
        for (;;) {
          int fd = ::accept4(listener.get(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
          if (fd < 0) break;
          sink_fds.push_back(fd);
          add(fd, EPOLLIN | EPOLLET, kSink | static_cast<uint64_t>(fd));
        }
      } else if (tag & kSink) {
        on_sink(static_cast<int>(tag & 0xffffffff));
      } else {
        on_client(static_cast<size_t>(tag));
      }
    }
    launch_more();
  }
  int still_open = 0;
  for (auto& c : clients)
    if (c.phase == Phase::idle) ++still_open;
  for (auto& c : clients)
    if (c.fd >= 0) ::close(c.fd);
  for (int fd : sink_fds) ::close(fd);
  std::printf("DONE established=%d still_open=%d failed=%d\n", established, still_open, failed);
  return 0;
}

// ---------------------------------------------------------------------------------------------
// latency: open-loop fixed rate over keep-alive connections.
//
// A lane is one path under test: its keep-alive connections, the requests due on it and the
// latency of each timer tick's request. With --baseline a second lane sends the same request
// straight to the origin on every tick, and the latency added by the path under test is taken per
// tick (its request's latency minus the baseline request's of the same tick): a stall of the
// shared machine delays both and cancels out, where comparing two runs minutes apart would not.

class LatencyLane {
 public:
  LatencyLane(int epoll_fd, uint32_t lane_id, const sockaddr_in& target, std::string request,
              int conns, size_t ticks)
      : epoll_fd_(epoll_fd),
        lane_id_(lane_id),
        target_(target),
        req_(std::move(request)),
        pool_(static_cast<size_t>(conns)),
        tick_us_(ticks, -1) {
    for (size_t i = 0; i < pool_.size(); ++i) {
      open(i);
      idle_.push_back(i);
    }
  }
  LatencyLane(const LatencyLane&) = delete;
  LatencyLane& operator=(const LatencyLane&) = delete;
  ~LatencyLane() {
    for (auto& c : pool_)
      if (c.fd >= 0) ::close(c.fd);
  }

  // Epoll tags: lane id in the upper 32 bits, connection index in the lower.
  static uint64_t tag(uint32_t lane, size_t conn) { return (uint64_t{lane} << 32) | conn; }

  void schedule(uint64_t due_ns, size_t tick) { due_.push_back({due_ns, tick}); }

  void dispatch() {
    while (!due_.empty() && !idle_.empty()) {
      size_t i = idle_.back();
      idle_.pop_back();
      Conn& c = pool_[i];
      c.busy = true;
      c.intended_ns = due_.front().first;
      c.tick = due_.front().second;
      due_.pop_front();
      c.in.clear();
      c.head.reset();
      c.sent_ns = now_ns();
      if (!send_small(c.fd, req_)) die("send failed on a keep-alive connection");
    }
  }

  bool quiet() const { return due_.empty() && idle_.size() == pool_.size(); }

  // Reads what connection `i` has; records a latency when a response completes. Samples count
  // only for requests due inside [from, to). `now` is taken once per epoll_wait batch, so two
  // lanes whose responses arrived together get the same completion time whatever order they are
  // read in.
  void on_readable(size_t i, uint64_t from, uint64_t to, uint64_t now) {
    Conn& c = pool_[i];
    char buf[8192];
    for (;;) {
      ssize_t r = ::recv(c.fd, buf, sizeof buf, 0);
      if (r < 0 && errno == EAGAIN) return;
      if (r < 0 && errno == EINTR) continue;
      if (r <= 0) return on_closed(i);
      c.in.append(buf, static_cast<size_t>(r));
      if (!c.head) c.head = parse_head(c.in);
      if (!c.head) continue;
      if (c.head->status != 200 || c.head->chunked || c.head->content_length < 0)
        die("unexpected response: " + c.in.substr(0, 200));
      if (c.in.size() < c.head->head_len + static_cast<size_t>(c.head->content_length)) continue;
      if (c.intended_ns >= from && c.intended_ns < to) {
        lat_us_.push_back(static_cast<uint32_t>((now - c.intended_ns) / 1000));
        // The paired figure uses the time from the request's own send, so the lane that sends
        // second within a tick is not charged for the other's send call.
        if (c.tick < tick_us_.size())
          tick_us_[c.tick] = static_cast<int64_t>((now - c.sent_ns) / 1000);
      }
      if (c.head->close) {
        // The server said it will close: reconnect now rather than race the next request
        // against the close.
        ::close(c.fd);
        ++reconnects_;
        open(i);
      }
      c.busy = false;
      idle_.push_back(i);
      return;
    }
  }

  std::vector<uint32_t>& latencies() { return lat_us_; }
  // Send-to-response time of each tick's request in us, -1 where it was outside the window or
  // lost.
  const std::vector<int64_t>& per_tick() const { return tick_us_; }
  uint64_t reconnects() const { return reconnects_; }
  uint64_t retries() const { return retries_; }
  uint64_t errors() const { return errors_; }

 private:
  struct Conn {
    int fd = -1;
    bool busy = false;
    uint64_t intended_ns = 0;
    uint64_t sent_ns = 0;
    size_t tick = 0;
    std::string in;
    std::optional<ResponseHead> head;
  };

  void open(size_t i) {
    Fd fd = connect_blocking(target_);
    int flags = ::fcntl(fd.get(), F_GETFL);
    ::fcntl(fd.get(), F_SETFL, flags | O_NONBLOCK);
    epoll_event ev{};
    ev.events = EPOLLIN | EPOLLRDHUP;
    ev.data.u64 = tag(lane_id_, i);
    if (::epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, fd.get(), &ev) != 0) die_errno("epoll_ctl");
    Conn& c = pool_[i];
    c.fd = fd.release();
    c.in.clear();
    c.head.reset();
  }

  // The peer closed the connection. A request that got no byte back is retried once on a new
  // connection with its original due time, as clients retry an idempotent request on a stale
  // keep-alive connection (tinyproxy closes after every response without saying so); a request
  // cut off mid-response is an error.
  void on_closed(size_t i) {
    Conn& c = pool_[i];
    ::close(c.fd);  // also leaves the epoll set
    ++reconnects_;
    const bool untouched = c.in.empty();
    open(i);
    if (!c.busy) return;  // idle: listed in idle_ already
    if (untouched) {
      ++retries_;
      if (!send_small(c.fd, req_)) die("send failed on a new connection");
      return;  // still busy, same due and send times: the client waited for the dead one too
    }
    ++errors_;
    c.busy = false;
    idle_.push_back(i);
  }

  int epoll_fd_;
  uint32_t lane_id_;
  sockaddr_in target_;
  std::string req_;
  std::vector<Conn> pool_;
  std::vector<size_t> idle_;
  std::deque<std::pair<uint64_t, size_t>> due_;  // (due time, tick)
  std::vector<uint32_t> lat_us_;
  std::vector<int64_t> tick_us_;
  uint64_t reconnects_ = 0, retries_ = 0, errors_ = 0;
};

int mode_latency(const Args& args) {
  auto target = parse_addr(args.str("target"));
  std::string origin = args.str("origin");
  auto origin_sa = parse_addr(origin);
  std::string path = args.str("path");
  std::string via = args.str("via", "forward");
  double rate = args.num("rate", 2000);
  int conns = static_cast<int>(args.num("conns", 16));
  double duration = args.num("duration", 10);
  double warmup = args.num("warmup", 1);
  const bool baseline = args.num("baseline", 0) != 0;
  args.check_all_used();
  check_via(via, {"forward", "direct"});
  if (rate <= 0 || conns < 1) die("need --rate > 0 and --conns >= 1");

  Fd ep(::epoll_create1(EPOLL_CLOEXEC));
  const size_t max_ticks = static_cast<size_t>((warmup + duration) * rate) + 2;
  std::vector<std::unique_ptr<LatencyLane>> lanes;
  lanes.push_back(std::make_unique<LatencyLane>(
      ep.get(), 0, target, get_request(via, origin, path, false), conns, max_ticks));
  if (baseline)
    lanes.push_back(std::make_unique<LatencyLane>(
        ep.get(), 1, origin_sa, get_request("direct", origin, path, false), conns, max_ticks));

  // The timer ticks every 1/rate seconds; each expiry makes one request due on every lane,
  // stamped with the time it was due, so a slow path is charged for the requests that waited
  // behind it (as in wrk2).
  Fd tfd(::timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC));
  const uint64_t period = static_cast<uint64_t>(1e9 / rate);
  itimerspec its{};
  its.it_interval.tv_sec = static_cast<time_t>(period / 1'000'000'000ULL);
  its.it_interval.tv_nsec = static_cast<long>(period % 1'000'000'000ULL);
  its.it_value = its.it_interval;
  const uint64_t t0 = now_ns();
  if (::timerfd_settime(tfd.get(), 0, &its, nullptr) != 0) die_errno("timerfd_settime");
  constexpr uint64_t kTimer = ~0ULL;
  epoll_event tev{};
  tev.events = EPOLLIN;
  tev.data.u64 = kTimer;
  if (::epoll_ctl(ep.get(), EPOLL_CTL_ADD, tfd.get(), &tev) != 0) die_errno("epoll_ctl");

  const uint64_t measure_from = t0 + static_cast<uint64_t>(warmup * 1e9);
  const uint64_t stop_at = measure_from + static_cast<uint64_t>(duration * 1e9);
  uint64_t ticks = 0;  // request k is due at t0 + k * period
  bool draining = false;
  std::vector<epoll_event> events(256);
  for (;;) {
    int n = ::epoll_wait(ep.get(), events.data(), static_cast<int>(events.size()), 100);
    if (n < 0 && errno != EINTR) die_errno("epoll_wait");
    const uint64_t batch_now = now_ns();
    for (int k = 0; k < n; ++k) {
      uint64_t tag = events[static_cast<size_t>(k)].data.u64;
      if (tag == kTimer) {
        uint64_t expirations = 0;
        if (::read(tfd.get(), &expirations, sizeof expirations) != sizeof expirations) continue;
        for (uint64_t e = 0; e < expirations && !draining; ++e) {
          uint64_t at = t0 + (++ticks) * period;
          if (at >= stop_at) {
            draining = true;
            break;
          }
          for (auto& lane : lanes) lane->schedule(at, static_cast<size_t>(ticks));
        }
        continue;
      }
      lanes[tag >> 32]->on_readable(static_cast<size_t>(tag & 0xffffffffU), measure_from, stop_at,
                                    batch_now);
    }
    bool quiet = true;
    for (auto& lane : lanes) {
      lane->dispatch();
      quiet = quiet && lane->quiet();
    }
    if (draining && quiet) break;
  }

  auto summary = [&](LatencyLane& lane, const char* prefix) {
    auto& lat = lane.latencies();
    size_t samples = lat.size();
    uint32_t mx = lat.empty() ? 0 : *std::max_element(lat.begin(), lat.end());
    auto p50 = percentile(lat, 50), p90 = percentile(lat, 90), p99 = percentile(lat, 99);
    auto p999 = percentile(lat, 99.9);
    std::printf(
        "%ssamples=%zu %sp50_us=%u %sp90_us=%u %sp99_us=%u %sp999_us=%u %smax_us=%u "
        "%serrors=%llu %sreconnects=%llu %sretries=%llu",
        prefix, samples, prefix, p50, prefix, p90, prefix, p99, prefix, p999, prefix, mx, prefix,
        static_cast<unsigned long long>(lane.errors()), prefix,
        static_cast<unsigned long long>(lane.reconnects()), prefix,
        static_cast<unsigned long long>(lane.retries()));
  };
  summary(*lanes[0], "");
  if (baseline) {
    std::printf(" ");
    summary(*lanes[1], "base_");
    std::vector<int64_t> added;
    const auto& a = lanes[0]->per_tick();
    const auto& b = lanes[1]->per_tick();
    for (size_t k = 0; k < a.size(); ++k)
      if (a[k] >= 0 && b[k] >= 0) added.push_back(a[k] - b[k]);
    long long a50 = percentile(added, 50), a99 = percentile(added, 99);
    std::printf(" paired=%zu added_p50_us=%lld added_p99_us=%lld", added.size(), a50, a99);
  }
  std::printf("\n");
  return 0;
}

// ---------------------------------------------------------------------------------------------
// proc: CPU and RSS of a process tree.

struct ProcInfo {
  int ppid = 0;
  uint64_t cpu_ticks = 0;  // utime + stime + cutime + cstime
};

std::optional<ProcInfo> read_stat(int pid) {
  std::ifstream f("/proc/" + std::to_string(pid) + "/stat");
  std::string s;
  if (!std::getline(f, s)) return std::nullopt;
  // The command name is in parentheses and may hold spaces: parse after the last ')'.
  auto rp = s.rfind(')');
  if (rp == std::string::npos) return std::nullopt;
  std::istringstream in(s.substr(rp + 2));
  std::vector<std::string> fields;  // fields[0] is field 3 (state)
  std::string tok;
  while (in >> tok) fields.push_back(tok);
  if (fields.size() < 15) return std::nullopt;
  ProcInfo p;
  p.ppid = std::stoi(fields[1]);
  // utime(14) stime(15) cutime(16) cstime(17): fields[11..14]. cutime/cstime hold the children
  // that exited and were reaped (socat's per-connection forks); threads are already summed in.
  for (int k = 11; k <= 14; ++k) p.cpu_ticks += std::stoull(fields[static_cast<size_t>(k)]);
  return p;
}

uint64_t read_rss_kb(int pid) {
  std::ifstream f("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(f, line))
    if (line.starts_with("VmRSS:")) return std::stoull(line.substr(6));
  return 0;
}

int mode_proc(const Args& args) {
  args.check_all_used();
  std::map<int, ProcInfo> all;
  if (DIR* d = ::opendir("/proc")) {
    while (dirent* e = ::readdir(d)) {
      int pid = std::atoi(e->d_name);
      if (pid <= 0) continue;
      if (auto p = read_stat(pid)) all[pid] = *p;
    }
    ::closedir(d);
  }
  std::set<int> tree;
  for (const auto& s : args.positional()) tree.insert(std::stoi(s));
  // Add descendants until nothing changes: process trees here are a few levels deep.
  for (bool grew = true; grew;) {
    grew = false;
    for (const auto& [pid, p] : all)
      if (!tree.contains(pid) && tree.contains(p.ppid)) grew = tree.insert(pid).second || grew;
  }
  uint64_t ticks = 0, rss = 0;
  int alive = 0;
  for (int pid : tree) {
    auto it = all.find(pid);
    if (it == all.end()) continue;
    ++alive;
    ticks += it->second.cpu_ticks;
    rss += read_rss_kb(pid);
  }
  std::printf("cpu_s=%.3f rss_kb=%llu procs=%d\n",
              static_cast<double>(ticks) / static_cast<double>(sysconf(_SC_CLK_TCK)),
              static_cast<unsigned long long>(rss), alive);
  return alive > 0 ? 0 : 1;
}

// ---------------------------------------------------------------------------------------------
// report: the table.

struct Metric {
  const char* key;
  const char* label;
  bool higher_is_better;
  int decimals;
  bool ratios = true;  // false: context, not a comparison (the ratio columns read n/a)
};

// Rows in print order. Keys are what run.sh writes into results.tsv.
constexpr Metric kMetrics[] = {
    {"tunnel_gbps", "1. CONNECT tunnel throughput, GB/s (median of 3)", true, 2},
    {"tunnel_cpu_s_per_gib", "5. CPU s per GiB, CONNECT tunnel", false, 3},
    {"forward_gbps", "2. plain-HTTP forward throughput, GB/s (median of 3)", true, 2},
    {"forward_cpu_s_per_gib", "5. CPU s per GiB, plain-HTTP forward", false, 3},
    {"small_rps", "3. small GETs/s, keep-alive, 50 conns (wrk, median)", true, 0},
    {"small_cpu_us_per_req", "5. CPU us per small GET", false, 1},
    {"tunnels_per_s", "4. new CONNECT tunnels/s, 1 GET each (median)", true, 0},
    {"tunnel_cpu_us", "5. CPU us per new tunnel", false, 1},
    {"idle_kb_per_tunnel", "6. RSS KB per idle tunnel", false, 1},
    {"lat_p50_us", "7. latency p50 at fixed rate, us", false, 0},
    {"lat_p99_us", "7. latency p99 at fixed rate, us", false, 0},
    {"lat_added_p50_us", "7. p50 latency added over direct (paired per tick), us", false, 0},
    {"lat_added_p99_us", "7. p99 latency added over direct (paired per tick), us", false, 0},
    {"tls_tunnel_gbps",
     "8. CONNECT tunnel throughput over a TLS proxy listener, GB/s (median of 3)", true, 2},
    {"tls_tunnel_cpu_s_per_gib", "5. CPU s per GiB, CONNECT tunnel over a TLS proxy listener",
     false, 3},
    {"tls_tunnel_client_cpu_s_per_gib", "8. load generator's own CPU s per GiB over TLS (context)",
     false, 3, false},
};

constexpr const char* kColumns[] = {"direct", "relay",     "floor",        "egressd",
                                    "squid",  "tinyproxy", "trafficserver"};
constexpr const char* kPeers[] = {"squid", "tinyproxy", "trafficserver"};

std::string fmt_num(double v, int decimals) {
  char b[64];
  std::snprintf(b, sizeof b, "%.*f", decimals, v);
  return b;
}

std::string json_escape(const std::string& s) {
  std::string o;
  for (char c : s) {
    if (c == '"' || c == '\\') {
      o += '\\';
      o += c;
    } else if (static_cast<unsigned char>(c) < 0x20) {
      o += ' ';
    } else {
      o += c;
    }
  }
  return o;
}

int mode_report(const Args& args) {
  args.check_all_used();
  if (args.positional().size() != 3) die("report RESULTS.tsv OUT.md OUT.json");
  std::ifstream in(args.positional()[0]);
  if (!in) die("cannot read " + args.positional()[0]);
  // values[column][metric]; info lines (key starting with '#') are kept as notes.
  std::map<std::string, std::map<std::string, double>> values;
  std::map<std::string, std::map<std::string, std::string>> texts;
  std::vector<std::string> notes;
  std::string line;
  while (std::getline(in, line)) {
    std::vector<std::string> f;
    std::istringstream ls(line);
    std::string part;
    while (std::getline(ls, part, '\t')) f.push_back(part);
    if (f.size() < 3) continue;
    if (f[1] == "note") {
      notes.push_back(f[0] + ": " + f[2]);
    } else if (f[1].starts_with("info_")) {
      texts[f[0]][f[1]] = f[2];
    } else {
      char* end = nullptr;
      double v = std::strtod(f[2].c_str(), &end);
      if (end != f[2].c_str()) values[f[0]][f[1]] = v;
    }
  }
  // run.sh measures the added latency against a direct baseline sent on the same ticks; only
  // where it did not is it derived here from the direct column's own run.
  if (values.contains("direct")) {
    const auto direct = values["direct"];
    for (auto& [col, m] : values) {
      if (col == "direct") continue;
      for (const char* p : {"p50", "p99"}) {
        std::string abs = std::string("lat_") + p + "_us",
                    added = std::string("lat_added_") + p + "_us";
        if (m.contains(abs) && !m.contains(added) && direct.contains(abs))
          m[added] = m[abs] - direct.at(abs);
      }
    }
  }
  auto get = [&](const std::string& col, const std::string& key) -> std::optional<double> {
    auto c = values.find(col);
    if (c == values.end()) return std::nullopt;
    auto m = c->second.find(key);
    if (m == c->second.end()) return std::nullopt;
    return m->second;
  };

  std::ostringstream md;
  md << "| metric | direct | bare relay | epoll floor | egressd | squid | tinyproxy | "
        "trafficserver | egressd/squid | egressd/tinyproxy | egressd/trafficserver | "
        "egressd/relay | egressd/floor |\n";
  md << "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n";
  for (const auto& m : kMetrics) {
    md << "| " << m.label;
    for (const char* col : kColumns) {
      auto v = get(col, m.key);
      md << " | " << (v ? fmt_num(*v, m.decimals) : "n/a");
    }
    auto e = get("egressd", m.key);
    for (const char* peer : {"squid", "tinyproxy", "trafficserver", "relay", "floor"}) {
      auto p = get(peer, m.key);
      md << " | ";
      if (m.ratios && e && p && *p != 0)
        md << fmt_num(*e / *p, 2);
      else
        md << "n/a";
    }
    md << " |\n";
  }

  // Targets from issue 3, each against the best peer (or the bare relay) of this same run.
  struct Target {
    std::string text;
    std::optional<bool> met;
  };
  std::vector<Target> targets;
  auto best_peer = [&](const std::string& key, bool higher) -> std::optional<double> {
    std::optional<double> best;
    for (const char* p : kPeers)
      if (auto v = get(p, key))
        if (!best || (higher ? *v > *best : *v < *best)) best = *v;
    return best;
  };
  auto check = [&](const std::string& what, std::optional<double> e, std::optional<double> ref,
                   double factor, bool at_least, int decimals) {
    Target t;
    std::string op = at_least ? ">=" : "<=";
    if (e && ref) {
      double bound = *ref * factor;
      t.met = at_least ? *e >= bound : *e <= bound;
      t.text =
          what + ": egressd " + fmt_num(*e, decimals) + " " + op + " " + fmt_num(bound, decimals);
    } else {
      t.text = what + ": not measured";
    }
    targets.push_back(t);
  };
  check("tunnel throughput >= 0.9 x bare relay (GB/s)", get("egressd", "tunnel_gbps"),
        get("relay", "tunnel_gbps"), 0.9, true, 2);
  check("tunnel CPU/GiB <= bare relay", get("egressd", "tunnel_cpu_s_per_gib"),
        get("relay", "tunnel_cpu_s_per_gib"), 1.0, false, 3);
  check("forward throughput >= 1.2 x best peer (GB/s)", get("egressd", "forward_gbps"),
        best_peer("forward_gbps", true), 1.2, true, 2);
  check("forward CPU/GiB <= 0.5 x best peer", get("egressd", "forward_cpu_s_per_gib"),
        best_peer("forward_cpu_s_per_gib", false), 0.5, false, 3);
  check("small GET rate >= 1.3 x best peer", get("egressd", "small_rps"),
        best_peer("small_rps", true), 1.3, true, 0);
  check("CPU per small GET <= 0.5 x best peer (us)", get("egressd", "small_cpu_us_per_req"),
        best_peer("small_cpu_us_per_req", false), 0.5, false, 1);
  check("CPU per new tunnel <= 0.5 x best peer (us)", get("egressd", "tunnel_cpu_us"),
        best_peer("tunnel_cpu_us", false), 0.5, false, 1);
  check("RSS per idle tunnel <= 0.25 x best peer (KB)", get("egressd", "idle_kb_per_tunnel"),
        best_peer("idle_kb_per_tunnel", false), 0.25, false, 1);
  // Context for the new-tunnel target: what the least possible relay spends in the same run.
  std::string floor_note;
  if (auto f = get("floor", "tunnel_cpu_us"), b = best_peer("tunnel_cpu_us", false); f && b)
    floor_note =
        "CPU per new tunnel of the epoll floor (bench/minrelay.cpp, no policy, logs or "
        "timeouts): " +
        fmt_num(*f, 1) + " us = " + fmt_num(*f / *b, 2) + " x best peer" +
        (get("egressd", "tunnel_cpu_us")
             ? "; egressd = " + fmt_num(*get("egressd", "tunnel_cpu_us") / *f, 2) + " x the floor"
             : std::string());

  md << "\nTargets (issue 3), against this run:\n\n";
  for (const auto& t : targets)
    md << "- " << (t.met ? (*t.met ? "MET    " : "MISSED ") : "n/a    ") << t.text << "\n";
  if (!floor_note.empty()) md << "\nContext: " << floor_note << "\n";
  if (!notes.empty()) {
    md << "\nNotes:\n\n";
    for (const auto& n : notes) md << "- " << n << "\n";
  }
  if (!texts.empty()) {
    md << "\nSetup:\n\n";
    if (texts.contains("run"))
      for (const auto& [k, v] : texts["run"]) md << "- " << k.substr(5) << ": " << v << "\n";
    for (const char* col : kColumns)
      if (texts.contains(col))
        for (const auto& [k, v] : texts[col])
          md << "- " << col << " " << k.substr(5) << ": " << v << "\n";
  }

  std::string table = md.str();
  std::fputs(table.c_str(), stdout);
  std::ofstream(args.positional()[1]) << table;

  std::ofstream js(args.positional()[2]);
  js << "{\n  \"columns\": {";
  bool first_col = true;
  for (const char* col : kColumns) {
    js << (first_col ? "\n" : ",\n") << "    \"" << col << "\": {";
    first_col = false;
    bool first = true;
    if (values.contains(col))
      for (const auto& [k, v] : values[col]) {
        js << (first ? "" : ", ") << "\"" << json_escape(k) << "\": " << fmt_num(v, 6);
        first = false;
      }
    if (texts.contains(col))
      for (const auto& [k, v] : texts[col]) {
        js << (first ? "" : ", ") << "\"" << json_escape(k) << "\": \"" << json_escape(v) << "\"";
        first = false;
      }
    js << "}";
  }
  js << "\n  },\n  \"run\": {";
  bool first_run = true;
  if (texts.contains("run"))
    for (const auto& [k, v] : texts["run"]) {
      js << (first_run ? "" : ", ") << "\"" << json_escape(k.substr(5)) << "\": \""
         << json_escape(v) << "\"";
      first_run = false;
    }
  js << "},\n  \"targets\": [";
  for (size_t i = 0; i < targets.size(); ++i) {
    const auto& t = targets[i];
    js << (i ? ",\n" : "\n") << "    {\"check\": \"" << json_escape(t.text)
       << "\", \"met\": " << (t.met ? (*t.met ? "true" : "false") : "null") << "}";
  }
  js << "\n  ],\n  \"notes\": [";
  for (size_t i = 0; i < notes.size(); ++i)
    js << (i ? ", " : "") << "\"" << json_escape(notes[i]) << "\"";
  js << "]\n}\n";
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr,
                 "usage: loadgen fetch|tunnels|idle|latency|proc|report [options]\n"
                 "       (see the comment at the top of bench/loadgen.cpp)\n");
    return 2;
  }
  std::signal(SIGPIPE, SIG_IGN);
  std::string_view mode = argv[1];
  Args args(argc, argv, 2);
  if (mode == "fetch") return mode_fetch(args);
  if (mode == "tunnels") return mode_tunnels(args);
  if (mode == "idle") return mode_idle(args);
  if (mode == "latency") return mode_latency(args);
  if (mode == "proc") return mode_proc(args);
  if (mode == "report") return mode_report(args);
  die("unknown mode " + std::string(mode));
}
