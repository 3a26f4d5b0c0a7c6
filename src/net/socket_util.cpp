#include "egressd/net/socket_util.hpp"

#include <ifaddrs.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/resource.h>
#include <sys/socket.h>

#include <boost/asio/error.hpp>
#include <cerrno>
#include <charconv>
#include <cstring>

#include "egressd/acl/cidr.hpp"

namespace egressd::net {

void set_nodelay(tcp::socket& s) noexcept {
  boost::system::error_code ec;
  s.set_option(tcp::no_delay(true), ec);
}

boost::system::error_code open_for(tcp::socket& s, const tcp::endpoint& dest,
                                   const boost::asio::ip::address* bind) noexcept {
  boost::system::error_code ec;
  s.open(dest.protocol(), ec);
  if (ec) return ec;
  set_keepalive(s.native_handle());
  if (bind != nullptr) {
    int one = 1;
    // Best effort: without it (old kernels) bind() reserves a port per address, which still works.
    ::setsockopt(s.native_handle(), IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
    s.bind(tcp::endpoint(*bind, 0), ec);
    if (ec) return ec;
  }
  return ec;
}

void set_keepalive(int fd) noexcept {
  int one = 1;
  int idle = keepalive_idle_seconds;
  ::setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof one);
  ::setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof idle);
}

boost::system::error_code start_connect(tcp::socket& s, const tcp::endpoint& dest) noexcept {
  boost::system::error_code ec;
  if (!s.native_non_blocking()) s.native_non_blocking(true, ec);
  if (ec) return ec;
  if (::connect(s.native_handle(), dest.data(), static_cast<socklen_t>(dest.size())) == 0)
    return {};
  // EINTR: a non-blocking connect goes on asynchronously, as with EINPROGRESS.
  if (errno == EINPROGRESS || errno == EINTR) return boost::asio::error::in_progress;
  return {errno, boost::system::system_category()};
}

boost::system::error_code connect_result(tcp::socket& s) noexcept {
  int err = 0;
  socklen_t len = sizeof err;
  if (::getsockopt(s.native_handle(), SOL_SOCKET, SO_ERROR, &err, &len) != 0) err = errno;
  return {err, boost::system::system_category()};
}

void abort_close(tcp::socket& s) noexcept {
  boost::system::error_code ec;
  if (!s.is_open()) return;
  s.set_option(boost::asio::socket_base::linger(true, 0), ec);
  s.close(ec);
}

std::uint64_t raise_nofile_limit() noexcept {
  rlimit rl{};
  if (::getrlimit(RLIMIT_NOFILE, &rl) != 0) return 0;
  if (rl.rlim_cur < rl.rlim_max) {
    rlimit want = rl;
    want.rlim_cur = rl.rlim_max;
    if (::setrlimit(RLIMIT_NOFILE, &want) == 0) rl = want;
  }
  return rl.rlim_cur;
}

std::vector<boost::asio::ip::address> local_addresses() {
  std::vector<boost::asio::ip::address> out;
  ifaddrs* list = nullptr;
  if (::getifaddrs(&list) != 0) return out;
  for (ifaddrs* i = list; i != nullptr; i = i->ifa_next) {
    if (i->ifa_addr == nullptr) continue;
    if (i->ifa_addr->sa_family == AF_INET) {
      auto* sin = reinterpret_cast<sockaddr_in*>(i->ifa_addr);
      boost::asio::ip::address_v4::bytes_type b;
      std::memcpy(b.data(), &sin->sin_addr, 4);
      out.emplace_back(boost::asio::ip::address_v4(b));
    } else if (i->ifa_addr->sa_family == AF_INET6) {
      auto* sin6 = reinterpret_cast<sockaddr_in6*>(i->ifa_addr);
      boost::asio::ip::address_v6::bytes_type b;
      std::memcpy(b.data(), &sin6->sin6_addr, 16);
      out.emplace_back(acl::unmap(boost::asio::ip::address_v6(b)));
    }
  }
  ::freeifaddrs(list);
  return out;
}

std::string to_string(const boost::asio::ip::address& a) {
  if (!a.is_v4()) return a.to_string();
  const auto b = a.to_v4().to_bytes();
  char buf[16];
  char* p = buf;
  for (std::size_t i = 0; i < b.size(); ++i) {
    if (i > 0) *p++ = '.';
    p = std::to_chars(p, buf + sizeof buf, b[i]).ptr;
  }
  return std::string(buf, p);
}

std::string to_string(const tcp::endpoint& ep) {
  auto a = acl::unmap(ep.address());
  char port[8];
  auto* end = std::to_chars(port, port + sizeof port, ep.port()).ptr;
  std::string out;
  if (a.is_v6()) {
    out = "[" + a.to_string() + "]:";
  } else {
    out = to_string(a) + ":";
  }
  out.append(port, end);
  return out;
}

}  // namespace egressd::net
