// minrelay: the least work a CONNECT proxy can do per tunnel on Linux, as a floor for line 4
// (CPU per new tunnel) of egressd's benchmark (bench/floor.sh).
//
// What it does per tunnel, and nothing else: accept4 (non-blocking), read the request head,
// take "CONNECT a.b.c.d:port" (IPv4 literal only; no policy, no DNS, no limits, no logging, no
// timeouts, no metrics), a non-blocking connect with TCP_NODELAY, "200" to the client once the
// connect completes, then a copy relay (recv/send through one per-thread 16 KiB buffer) with
// half-close passed on (shutdown SHUT_WR on EOF), and close both sockets when both directions
// have ended. Raw epoll, edge-triggered, each socket registered once; one thread per --threads
// with its own SO_REUSEPORT listener. It is a measuring stick, not a proxy: it trusts its
// client and never sends traffic anywhere but the address the CONNECT names.
//
//   minrelay --listen 127.0.0.1:PORT [--threads N]
//
// Build: g++ -O2 -std=c++20 minrelay.cpp -pthread -o minrelay

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

namespace {

struct conn;

// One socket's registration: which connection, and whether it is the client side.
struct end_point {
  conn* c;
  bool client;
};

struct conn {
  int cfd = -1, ufd = -1;
  enum { head, connecting, relaying } state = head;
  std::string req;               // request head bytes so far
  std::string pend[2];           // bytes not yet written: [0] to upstream, [1] to client
  bool eof[2] = {false, false};  // [0] client sent FIN, [1] upstream sent FIN
  bool early = false;            // client bytes (or FIN) arrived while connecting
  end_point ce{this, true}, ue{this, false};
};

sockaddr_in listen_addr{};
constexpr std::size_t buf_size = 16384;

void close_conn(conn* c) {
  if (c->cfd >= 0) ::close(c->cfd);
  if (c->ufd >= 0) ::close(c->ufd);
  delete c;
}

bool send_all(int fd, std::string& pend, const char* p, std::size_t n) {
  if (!pend.empty()) {
    pend.append(p, n);
    return true;
  }
  while (n > 0) {
    ssize_t k = ::send(fd, p, n, MSG_NOSIGNAL);
    if (k < 0) {
      if (errno == EAGAIN) {
        pend.assign(p, n);
        return true;
      }
      return false;
    }
    p += k;
    n -= static_cast<std::size_t>(k);
  }
  return true;
}

bool flush(int fd, std::string& pend) {
  std::size_t off = 0;
  while (off < pend.size()) {
    ssize_t k = ::send(fd, pend.data() + off, pend.size() - off, MSG_NOSIGNAL);
    if (k < 0) {
      if (errno == EAGAIN) break;
      return false;
    }
    off += static_cast<std::size_t>(k);
  }
  pend.erase(0, off);
  return true;
}

// Relays from one side (d: 0 client->upstream, 1 upstream->client) until the socket is
// drained or at EOF. With edge-triggered epoll a short read means drained unless the peer's FIN
// came too (EPOLLRDHUP): new bytes make a new edge. Returns false to tear the connection down.
bool pump(conn* c, int d, char* buf, bool rdhup) {
  int from = d == 0 ? c->cfd : c->ufd, to = d == 0 ? c->ufd : c->cfd;
  if (!c->pend[d].empty() && !flush(to, c->pend[d])) return false;
  if (!c->pend[d].empty() || c->eof[d]) return true;
  for (;;) {
    ssize_t n = ::recv(from, buf, buf_size, 0);
    if (n == 0) {
      c->eof[d] = true;
      ::shutdown(to, SHUT_WR);
      return true;
    }
    if (n < 0) return errno == EAGAIN;
    if (!send_all(to, c->pend[d], buf, static_cast<std::size_t>(n))) return false;
    if (!c->pend[d].empty()) return true;
    if (static_cast<std::size_t>(n) < buf_size && !rdhup) return true;
  }
}

void on_client_head(int ep, conn* c) {
  char tmp[2048];
  for (;;) {
    ssize_t n = ::recv(c->cfd, tmp, sizeof tmp, 0);
    if (n <= 0) {
      if (n < 0 && errno == EAGAIN) break;
      close_conn(c);
      return;
    }
    c->req.append(tmp, static_cast<std::size_t>(n));
    if (c->req.size() > 8192) {
      close_conn(c);
      return;
    }
  }
  auto end = c->req.find("\r\n\r\n");
  if (end == std::string::npos) return;
  std::string_view line(c->req);
  line = line.substr(0, line.find("\r\n"));
  if (!line.starts_with("CONNECT ")) {
    close_conn(c);
    return;
  }
  line.remove_prefix(8);
  line = line.substr(0, line.find(' '));
  auto colon = line.rfind(':');
  sockaddr_in to{};
  to.sin_family = AF_INET;
  to.sin_port =
      htons(static_cast<std::uint16_t>(std::atoi(std::string(line.substr(colon + 1)).c_str())));
  if (colon == std::string_view::npos ||
      ::inet_pton(AF_INET, std::string(line.substr(0, colon)).c_str(), &to.sin_addr) != 1) {
    close_conn(c);
    return;
  }
  c->ufd = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  int one = 1;
  ::setsockopt(c->ufd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  if (::connect(c->ufd, reinterpret_cast<sockaddr*>(&to), sizeof to) != 0 && errno != EINPROGRESS) {
    close_conn(c);
    return;
  }
  c->state = conn::connecting;
  epoll_event ev{};
  ev.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET;
  ev.data.ptr = &c->ue;
  ::epoll_ctl(ep, EPOLL_CTL_ADD, c->ufd, &ev);
}

void worker() {
  int lfd = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  int one = 1;
  ::setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  ::setsockopt(lfd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
  ::setsockopt(lfd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);  // inherited by accept4
  if (::bind(lfd, reinterpret_cast<sockaddr*>(&listen_addr), sizeof listen_addr) != 0 ||
      ::listen(lfd, 4096) != 0) {
    std::perror("minrelay: bind/listen");
    std::exit(1);
  }
  int ep = ::epoll_create1(EPOLL_CLOEXEC);
  epoll_event lev{};
  lev.events = EPOLLIN;
  lev.data.ptr = nullptr;
  ::epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &lev);
  std::vector<char> buf(buf_size);
  epoll_event evs[256];
  for (;;) {
    int n = ::epoll_wait(ep, evs, 256, -1);
    for (int i = 0; i < n; ++i) {
      if (evs[i].data.ptr == nullptr) {
        for (;;) {
          int cfd = ::accept4(lfd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
          if (cfd < 0) break;
          auto* c = new conn;
          c->cfd = cfd;
          epoll_event ev{};
          ev.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET;
          ev.data.ptr = &c->ce;
          ::epoll_ctl(ep, EPOLL_CTL_ADD, cfd, &ev);
          on_client_head(ep, c);  // the request is usually there already
        }
        continue;
      }
      auto* e = static_cast<end_point*>(evs[i].data.ptr);
      conn* c = e->c;
      const auto ev = evs[i].events;
      if (c->state == conn::head) {
        if (e->client) on_client_head(ep, c);
        continue;
      }
      if (c->state == conn::connecting) {
        if (e->client) {  // client bytes wait until the tunnel is up
          c->early = true;
          continue;
        }
        if (ev & (EPOLLERR | EPOLLHUP)) {
          close_conn(c);
          continue;
        }
        c->state = conn::relaying;
        static constexpr char ok[] = "HTTP/1.1 200 Connection established\r\n\r\n";
        if (!send_all(c->cfd, c->pend[1], ok, sizeof ok - 1)) {
          close_conn(c);
          continue;
        }
        if (((ev & EPOLLIN) && !pump(c, 1, buf.data(), ev & EPOLLRDHUP)) ||  // server-first
            (c->early && !pump(c, 0, buf.data(), true))) {
          close_conn(c);
          continue;
        }
        continue;
      }
      const int in = e->client ? 0 : 1;  // the direction this socket feeds
      bool ok = true;
      if (ev & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR))
        ok = pump(c, in, buf.data(), ev & (EPOLLRDHUP | EPOLLHUP | EPOLLERR));
      if (ok && (ev & EPOLLOUT) && !c->pend[1 - in].empty()) ok = pump(c, 1 - in, buf.data(), true);
      if (!ok) {
        close_conn(c);
        continue;
      }
      if (c->eof[0] && c->eof[1] && c->pend[0].empty() && c->pend[1].empty()) close_conn(c);
    }
  }
}

}  // namespace

int main(int argc, char** argv) {
  std::string listen = "127.0.0.1:3129";
  int threads = 1;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string_view k = argv[i];
    if (k == "--listen")
      listen = argv[i + 1];
    else if (k == "--threads")
      threads = std::atoi(argv[i + 1]);
  }
  auto colon = listen.rfind(':');
  listen_addr.sin_family = AF_INET;
  listen_addr.sin_port = htons(static_cast<std::uint16_t>(std::atoi(listen.c_str() + colon + 1)));
  if (colon == std::string::npos ||
      ::inet_pton(AF_INET, listen.substr(0, colon).c_str(), &listen_addr.sin_addr) != 1) {
    std::fprintf(stderr, "minrelay: --listen IPv4:PORT\n");
    return 2;
  }
  std::vector<std::thread> ts;
  for (int i = 0; i < threads; ++i) ts.emplace_back(worker);
  for (auto& t : ts) t.join();
}
