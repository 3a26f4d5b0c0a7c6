#include "egressd/admin/probe.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <optional>
#include <string_view>

namespace egressd::admin {
namespace {

struct target {
  sockaddr_storage addr{};
  socklen_t len = 0;
  std::string path;
};

std::optional<target> parse_url(std::string_view url, std::string* why) {
  constexpr std::string_view scheme = "http://";
  if (url.substr(0, 8) == "https://") {
    // No TLS client here (and no client certificate for an mTLS admin listener): the plain
    // health port is the probe's target when the admin listener is TLS.
    *why = "https is not supported; with admin.tls, probe admin.health_address over http://";
    return std::nullopt;
  }
  if (url.substr(0, scheme.size()) != scheme) {
    *why = "URL must start with http://";
    return std::nullopt;
  }
  url.remove_prefix(scheme.size());
  const auto slash = url.find('/');
  std::string_view authority = url.substr(0, slash);
  target t;
  t.path = slash == std::string_view::npos ? "/" : std::string(url.substr(slash));
  std::string host;
  std::string_view port;
  if (!authority.empty() && authority.front() == '[') {
    const auto close = authority.find(']');
    if (close == std::string_view::npos || authority.substr(close + 1, 1) != ":") {
      *why = "expected [IPv6]:PORT";
      return std::nullopt;
    }
    host = std::string(authority.substr(1, close - 1));
    port = authority.substr(close + 2);
  } else {
    const auto colon = authority.rfind(':');
    if (colon == std::string_view::npos) {
      *why = "expected HOST:PORT";
      return std::nullopt;
    }
    host = std::string(authority.substr(0, colon));
    port = authority.substr(colon + 1);
  }
  unsigned p = 0;
  for (char c : port) {
    if (c < '0' || c > '9' || p > 65535) {
      p = 0;
      break;
    }
    p = p * 10 + unsigned(c - '0');
  }
  if (port.empty() || p == 0 || p > 65535) {
    *why = "invalid port";
    return std::nullopt;
  }
  auto* v4 = reinterpret_cast<sockaddr_in*>(&t.addr);
  auto* v6 = reinterpret_cast<sockaddr_in6*>(&t.addr);
  if (::inet_pton(AF_INET, host.c_str(), &v4->sin_addr) == 1) {
    v4->sin_family = AF_INET;
    v4->sin_port = htons(static_cast<std::uint16_t>(p));
    t.len = sizeof(sockaddr_in);
  } else if (::inet_pton(AF_INET6, host.c_str(), &v6->sin6_addr) == 1) {
    v6->sin6_family = AF_INET6;
    v6->sin6_port = htons(static_cast<std::uint16_t>(p));
    t.len = sizeof(sockaddr_in6);
  } else {
    *why = "host must be an IP address literal";
    return std::nullopt;
  }
  return t;
}

// Waits for fd to be ready for events until deadline; false on timeout or error.
bool wait_for(int fd, short events, std::chrono::steady_clock::time_point deadline) {
  for (;;) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) return false;
    pollfd p{fd, events, 0};
    const int r = ::poll(&p, 1, static_cast<int>(left.count()));
    if (r > 0) return true;
    if (r < 0 && errno != EINTR) return false;
  }
}

}  // namespace

std::string probe_url(const config::admin_settings& admin, std::string* why) {
  const config::endpoint* ep = nullptr;
  if (admin.health_address) {
    ep = &*admin.health_address;
  } else if (!admin.tls) {
    ep = &admin.address;
  } else {
    *why =
        "admin.tls is on and admin.health_address is not set: set a plain health port for "
        "probes, or give the URL";
    return {};
  }
  const bool v6 = ep->host.find(':') != std::string::npos;
  std::string host = ep->host;
  if (host == "0.0.0.0") host = "127.0.0.1";
  if (host == "::") host = "::1";
  return "http://" + (v6 ? "[" + host + "]" : host) + ":" + std::to_string(ep->port) + "/readyz";
}

probe_result probe(const std::string& url, std::chrono::milliseconds timeout) {
  probe_result res;
  std::string why;
  auto t = parse_url(url, &why);
  if (!t) {
    res.message = "bad URL '" + url + "': " + why;
    return res;
  }
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  const int fd = ::socket(t->addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    res.message = std::string("socket: ") + std::strerror(errno);
    return res;
  }
  auto fail = [&](const char* what) {
    res.message = std::string(what) + ": " + (errno != 0 ? std::strerror(errno) : "timed out");
    ::close(fd);
    return res;
  };
  errno = 0;
  if (::connect(fd, reinterpret_cast<sockaddr*>(&t->addr), t->len) != 0 && errno != EINPROGRESS) {
    return fail("connect");
  }
  errno = 0;
  if (!wait_for(fd, POLLOUT, deadline)) return fail("connect");
  int err = 0;
  socklen_t len = sizeof err;
  ::getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len);
  if (err != 0) {
    errno = err;
    return fail("connect");
  }
  const std::string request = "GET " + t->path + " HTTP/1.0\r\nHost: probe\r\n\r\n";
  std::size_t sent = 0;
  while (sent < request.size()) {
    errno = 0;
    if (!wait_for(fd, POLLOUT, deadline)) return fail("send");
    const auto n = ::send(fd, request.data() + sent, request.size() - sent, MSG_NOSIGNAL);
    if (n < 0 && errno != EAGAIN && errno != EINTR) return fail("send");
    if (n > 0) sent += static_cast<std::size_t>(n);
  }
  // The status line is all we need: "HTTP/1.x NNN".
  std::string got;
  while (got.find("\r\n") == std::string::npos && got.size() < 512) {
    errno = 0;
    if (!wait_for(fd, POLLIN, deadline)) return fail("receive");
    char buf[512];
    const auto n = ::recv(fd, buf, sizeof buf, 0);
    if (n == 0) break;
    if (n < 0) {
      if (errno == EAGAIN || errno == EINTR) continue;
      return fail("receive");
    }
    got.append(buf, static_cast<std::size_t>(n));
  }
  ::close(fd);
  const std::string line = got.substr(0, got.find("\r\n"));
  if (line.size() >= 12 && line.compare(0, 7, "HTTP/1.") == 0 && line[8] == ' ') {
    res.status = std::atoi(line.substr(9, 3).c_str());
  }
  res.healthy = res.status == 200;
  res.message = res.status != 0 ? line : "no HTTP status line received";
  return res;
}

}  // namespace egressd::admin
