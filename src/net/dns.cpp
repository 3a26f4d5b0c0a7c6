#include "egressd/net/dns.hpp"

#include <ares.h>
#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <algorithm>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/error.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <charconv>
#include <climits>
#include <cstring>
#include <map>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string_view>
#include <unordered_map>
#include <utility>

#include "egressd/acl/cidr.hpp"

namespace egressd::net {

namespace asio = boost::asio;
using std::chrono::milliseconds;
using time_point = std::chrono::steady_clock::time_point;

namespace {

// ares_library_init is process-wide and not thread-safe; the workers each build a resolver at
// startup, possibly at the same time. ares_library_cleanup is never called: the library stays
// initialised until exit.
void init_library() {
  static std::once_flag once;
  static int status = ARES_SUCCESS;
  std::call_once(once, [] { status = ares_library_init(ARES_LIB_INIT_ALL); });
  if (status != ARES_SUCCESS) {
    throw std::runtime_error(std::string("c-ares: cannot initialise: ") + ares_strerror(status));
  }
}

struct server_address {
  asio::ip::address address;
  std::uint16_t port = 53;
};

// "IP", "IP:PORT", "[IPv6]:PORT", or a bare IPv6 address. Names are refused: the resolver would
// need a resolver to find its server.
std::optional<server_address> parse_server(std::string_view text) {
  std::string_view host = text;
  std::string_view port;
  if (!text.empty() && text.front() == '[') {
    const auto close = text.find(']');
    if (close == std::string_view::npos) return std::nullopt;
    host = text.substr(1, close - 1);
    const auto rest = text.substr(close + 1);
    if (rest.empty() || rest.front() != ':') return std::nullopt;
    port = rest.substr(1);
    const auto a = acl::parse_address(host);
    if (!a || !a->is_v6()) return std::nullopt;
  } else if (text.find(':') != text.rfind(':')) {
    host = text;  // two or more colons: a bare IPv6 address, no port
  } else if (const auto colon = text.find(':'); colon != std::string_view::npos) {
    host = text.substr(0, colon);
    port = text.substr(colon + 1);
  }
  server_address out;
  const auto a = acl::parse_address(host);
  if (!a) return std::nullopt;
  out.address = *a;
  if (!port.data()) return out;
  unsigned value = 0;
  const auto [end, ec] = std::from_chars(port.data(), port.data() + port.size(), value);
  if (ec != std::errc() || end != port.data() + port.size() || value == 0 || value > 65535) {
    return std::nullopt;
  }
  out.port = static_cast<std::uint16_t>(value);
  return out;
}

// Names are case-insensitive (RFC 4343) and "example.com." is "example.com". The normalised
// name is also what c-ares is asked: its hosts-file lookup misses "localhost." (1.18).
std::string normalise(std::string_view host) {
  if (!host.empty() && host.back() == '.') host.remove_suffix(1);
  std::string key(host);
  for (auto& c : key) {
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  }
  return key;
}

std::string ms_text(milliseconds d) {
  return std::to_string(d.count()) + "ms";
}

// The c-ares status of a lookup that found no address, as the session logs it. Only
// ENOTFOUND and ENODATA say something about the name itself; the rest are about the servers.
resolve_outcome failure(int status) {
  resolve_outcome out;
  out.err = proxy_error::dns_error;
  switch (status) {
    case ARES_SUCCESS:  // an answer without one A or AAAA record
    case ARES_ENODATA:
      out.detail = "no address (NODATA)";
      break;
    case ARES_ENOTFOUND:
      out.detail = "name does not exist (NXDOMAIN)";
      break;
    case ARES_ESERVFAIL:
      out.detail = "server failure (SERVFAIL)";
      break;
    case ARES_EREFUSED:
      out.detail = "query refused (REFUSED)";
      break;
    case ARES_ECONNREFUSED:
      // c-ares 1.18 moves on to the next server on SERVFAIL, REFUSED or NOTIMP (which is what
      // we want) and, when none is left, reports ECONNREFUSED as for an unreachable server.
      out.detail = "every DNS server failed (SERVFAIL, REFUSED or unreachable)";
      break;
    case ARES_ETIMEOUT:
      // c-ares ran out of retries before our own deadline: the servers did not answer.
      out.err = proxy_error::dns_timeout;
      out.detail = "no answer from the DNS servers";
      break;
    case ARES_ECANCELLED:
    case ARES_EDESTRUCTION:
      out.detail = "cancelled";
      break;
    default:
      out.detail = std::string("c-ares: ") + ares_strerror(status);
      break;
  }
  return out;
}

bool negative(int status) {
  return status == ARES_SUCCESS || status == ARES_ENODATA || status == ARES_ENOTFOUND;
}

}  // namespace

class dns_resolver::impl : public std::enable_shared_from_this<impl> {
 public:
  // One lookup in flight, shared by every resolve() waiting for it. Held by the waiters and by
  // the c-ares request, so it outlives the resolver when it has to. Invariant: !done exactly
  // while the lookup is in inflight_ of a live resolver, so owner is valid whenever !done.
  struct pending {
    explicit pending(const asio::any_io_executor& ex) : signal(ex) {}
    std::string key;
    // Expires at the lookup's deadline; cancelled (waking every waiter) when the result is in.
    asio::steady_timer signal;
    resolve_outcome result;
    bool done = false;
    impl* owner = nullptr;
  };

  impl(asio::any_io_executor ex, dns_options opt);
  ~impl();

  std::optional<resolve_outcome> cached(const std::string& key);
  std::shared_ptr<pending> join_or_start(std::string key);
  void expire(const std::shared_ptr<pending>& q);
  void cancel_all();
  void shutdown();

  dns_stats stats;

 private:
  // A socket c-ares opened, watched for readiness. The descriptor never owns the fd: c-ares
  // closes its own sockets, after telling sock_state_cb (0, 0), where the fd is released.
  struct watcher {
    explicit watcher(const asio::any_io_executor& ex) : sd(ex) {}
    ~watcher() { sd.release(); }
    asio::posix::stream_descriptor sd;
    bool want_read = false;
    bool want_write = false;
    bool reading = false;
    bool writing = false;
    bool closed = false;
  };

  // The argument c-ares carries to the addrinfo callback; freed there.
  struct request {
    std::shared_ptr<pending> query;
  };

  struct cache_entry {
    resolve_outcome outcome;
    time_point expires;
    std::multimap<time_point, std::string>::iterator by_expiry;
  };

  static void on_sock_state(void* data, ares_socket_t fd, int readable, int writable);
  static void on_addrinfo(void* arg, int status, int timeouts, ares_addrinfo* res);

  void sock_state(ares_socket_t fd, bool readable, bool writable);
  void start_waits(ares_socket_t fd, const std::shared_ptr<watcher>& w);
  void after_wait(ares_socket_t fd, const std::shared_ptr<watcher>& w,
                  boost::system::error_code ec);
  void arm_timer();
  void finish(const std::shared_ptr<pending>& q, int status, const ares_addrinfo* res);
  void complete(const std::shared_ptr<pending>& q, resolve_outcome out);
  void store(const std::string& key, const resolve_outcome& out, milliseconds ttl);
  void drop_orphans();
  time_point now() const { return opt_.clock ? opt_.clock() : std::chrono::steady_clock::now(); }

  asio::any_io_executor ex_;
  dns_options opt_;
  ares_channel channel_ = nullptr;
  asio::steady_timer timer_;  // c-ares's own retransmission and timeout schedule
  bool timer_armed_ = false;
  std::uint64_t timer_generation_ = 0;
  std::unordered_map<ares_socket_t, std::shared_ptr<watcher>> sockets_;
  std::unordered_map<std::string, std::shared_ptr<pending>> inflight_;
  std::size_t outstanding_ = 0;  // c-ares lookups not yet called back, orphans included
  std::unordered_map<std::string, cache_entry> cache_;
  std::multimap<time_point, std::string> by_expiry_;  // eviction order: first to expire first
};

dns_resolver::impl::impl(asio::any_io_executor ex, dns_options opt)
    : ex_(std::move(ex)), opt_(std::move(opt)), timer_(ex_) {
  std::vector<server_address> servers;
  for (const auto& s : opt_.servers) {
    auto parsed = parse_server(s);
    if (!parsed) {
      throw std::invalid_argument("dns server '" + s +
                                  "': expected IP, IP:PORT or [IPv6]:PORT with a literal address");
    }
    servers.push_back(*parsed);
  }
  if (opt_.timeout.count() <= 0) throw std::invalid_argument("dns timeout must be > 0");
  init_library();

  ares_options o{};
  int mask = ARES_OPT_SOCK_STATE_CB | ARES_OPT_FLAGS | ARES_OPT_NDOTS | ARES_OPT_DOMAINS |
             ARES_OPT_TIMEOUTMS | ARES_OPT_TRIES;
  o.sock_state_cb = &impl::on_sock_state;
  o.sock_state_cb_data = this;
  // A proxy's names are absolute: no search list. A search list would send
  // "example.com.corp.internal" upstream and could answer for another name. ares_getaddrinfo
  // (1.18) ignores ARES_FLAG_NOSEARCH and ndots and walks resolv.conf's search list anyway;
  // only an empty domain list, which overrides resolv.conf's search and domain lines, stops it.
  // NOSEARCH and ndots 1 say the same to the other c-ares entry points.
  o.flags = ARES_FLAG_NOSEARCH;
  o.ndots = 1;
  o.domains = nullptr;
  o.ndomains = 0;
  // Retransmission schedule: c-ares waits T for the first try of each server, then doubles
  // it for each later round, so two tries of timeout/3 on one server span the whole timeout.
  // Our own timer bounds the lookup either way; c-ares's ETIMEOUT, when it comes first, is a
  // dns_timeout too.
  o.timeout = static_cast<int>(std::clamp<std::int64_t>(opt_.timeout.count() / 3, 10, INT_MAX));
  o.tries = 2;
  const int status = ares_init_options(&channel_, &o, mask);
  if (status != ARES_SUCCESS) {
    channel_ = nullptr;
    throw std::runtime_error(std::string("c-ares: cannot create a channel: ") +
                             ares_strerror(status));
  }
  if (!servers.empty()) {
    std::vector<ares_addr_port_node> nodes(servers.size());
    for (std::size_t i = 0; i < servers.size(); ++i) {
      auto& n = nodes[i];
      n.next = i + 1 < nodes.size() ? &nodes[i + 1] : nullptr;
      if (servers[i].address.is_v4()) {
        n.family = AF_INET;
        const auto b = servers[i].address.to_v4().to_bytes();
        std::memcpy(&n.addr.addr4, b.data(), b.size());
      } else {
        n.family = AF_INET6;
        const auto b = servers[i].address.to_v6().to_bytes();
        std::memcpy(&n.addr.addr6, b.data(), b.size());
      }
      n.udp_port = servers[i].port;
      n.tcp_port = servers[i].port;
    }
    if (const int s = ares_set_servers_ports(channel_, nodes.data()); s != ARES_SUCCESS) {
      ares_destroy(channel_);
      channel_ = nullptr;
      throw std::runtime_error(std::string("c-ares: cannot set servers: ") + ares_strerror(s));
    }
  }
}

dns_resolver::impl::~impl() {
  shutdown();
}

// Every waiter is woken with "cancelled" before the channel goes, so the callbacks that
// ares_destroy makes (EDESTRUCTION) find their lookups done and touch nothing else; the sockets
// are released in sock_state (0, 0) before c-ares closes them.
void dns_resolver::impl::shutdown() {
  if (!channel_) return;
  auto inflight = std::move(inflight_);
  inflight_.clear();
  for (auto& [key, q] : inflight) complete(q, failure(ARES_EDESTRUCTION));
  ares_destroy(channel_);
  channel_ = nullptr;
  for (auto& [fd, w] : sockets_) {
    w->closed = true;
    w->sd.release();
  }
  sockets_.clear();
  timer_.cancel();
}

std::optional<resolve_outcome> dns_resolver::impl::cached(const std::string& key) {
  auto it = cache_.find(key);
  if (it == cache_.end()) return std::nullopt;
  if (now() >= it->second.expires) {
    by_expiry_.erase(it->second.by_expiry);
    cache_.erase(it);
    return std::nullopt;
  }
  return it->second.outcome;
}

std::shared_ptr<dns_resolver::impl::pending> dns_resolver::impl::join_or_start(std::string key) {
  if (auto it = inflight_.find(key); it != inflight_.end()) {
    ++stats.coalesced;
    return it->second;
  }
  ++stats.cache_misses;
  auto q = std::make_shared<pending>(ex_);
  q->key = key;
  q->owner = this;
  q->signal.expires_after(opt_.timeout);
  inflight_.emplace(std::move(key), q);

  ares_addrinfo_hints hints{};
  hints.ai_family = AF_UNSPEC;  // A and AAAA, in parallel
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_protocol = IPPROTO_TCP;
  // NOSORT: RFC 6724 sorting would connect() a probe socket per address; the order is ours
  // (IPv4 first) and the destination policy checks every address anyway.
  hints.ai_flags = ARES_AI_NOSORT;
  ++outstanding_;
  // May call back before it returns (hosts file, bad name, no memory): q is then already done.
  ares_getaddrinfo(channel_, q->key.c_str(), nullptr, &hints, &impl::on_addrinfo, new request{q});
  arm_timer();
  return q;
}

void dns_resolver::impl::on_addrinfo(void* arg, int status, int, ares_addrinfo* res) {
  std::unique_ptr<request> req(static_cast<request*>(arg));
  std::unique_ptr<ares_addrinfo, void (*)(ares_addrinfo*)> ai(res, &ares_freeaddrinfo);
  auto& q = req->query;
  // c-ares calls back only from inside a call on the channel, so the resolver is alive here
  // even when q is done (timed out or cancelled on our side: the waiters have their answer).
  impl* self = q->owner;
  --self->outstanding_;
  if (!q->done) self->finish(q, status, ai.get());
}

void dns_resolver::impl::finish(const std::shared_ptr<pending>& q, int status,
                                const ares_addrinfo* res) {
  resolve_outcome out;
  int ttl = INT_MAX;  // seconds, the smallest in the answer
  if (status == ARES_SUCCESS && res) {
    std::vector<asio::ip::address> v4;
    std::vector<asio::ip::address> mapped;
    std::vector<asio::ip::address> v6;
    for (auto* n = res->nodes; n; n = n->ai_next) {
      if (n->ai_family == AF_INET && n->ai_addr && n->ai_addrlen >= sizeof(sockaddr_in)) {
        const auto* sin = reinterpret_cast<const sockaddr_in*>(n->ai_addr);
        asio::ip::address_v4::bytes_type b;
        std::memcpy(b.data(), &sin->sin_addr, b.size());
        v4.emplace_back(asio::ip::address_v4(b));
      } else if (n->ai_family == AF_INET6 && n->ai_addr && n->ai_addrlen >= sizeof(sockaddr_in6)) {
        const auto* sin6 = reinterpret_cast<const sockaddr_in6*>(n->ai_addr);
        asio::ip::address_v6::bytes_type b;
        std::memcpy(b.data(), &sin6->sin6_addr, b.size());
        const auto a = acl::unmap(asio::ip::address_v6(b));
        (a.is_v4() ? mapped : v6).push_back(a);
      } else {
        continue;
      }
      ttl = std::min(ttl, std::max(n->ai_ttl, 0));
    }
    // A CNAME on the way bounds the answer as much as the address records do.
    for (auto* c = res->cnames; c; c = c->next) ttl = std::min(ttl, std::max(c->ttl, 0));
    // A records first (then addresses an AAAA record carried IPv4-mapped), then IPv6: the
    // order does not depend on which of the two queries was answered first.
    for (const auto* list : {&v4, &mapped, &v6}) {
      for (const auto& a : *list) {
        if (std::find(out.addresses.begin(), out.addresses.end(), a) == out.addresses.end()) {
          out.addresses.push_back(a);
        }
      }
    }
  }
  if (out.addresses.empty()) {
    out = failure(status);
    if (negative(status)) store(q->key, out, opt_.negative_ttl);
    if (out.err == proxy_error::dns_timeout) {
      ++stats.timeouts;
    } else if (status != ARES_ECANCELLED && status != ARES_EDESTRUCTION) {
      ++stats.failures;
    }
  } else {
    const milliseconds answer = std::chrono::seconds(ttl);
    store(q->key, out, std::min(std::max(answer, opt_.min_ttl), opt_.max_ttl));
  }
  inflight_.erase(q->key);
  complete(q, std::move(out));
}

void dns_resolver::impl::complete(const std::shared_ptr<pending>& q, resolve_outcome out) {
  q->result = std::move(out);
  q->done = true;
  // Wakes every waiter through the executor, never inline: no caller code runs inside a c-ares
  // callback, where it could re-enter the channel.
  q->signal.cancel();
}

void dns_resolver::impl::store(const std::string& key, const resolve_outcome& out,
                               milliseconds ttl) {
  if (opt_.cache_size == 0 || ttl.count() <= 0) return;
  if (auto it = cache_.find(key); it != cache_.end()) {
    by_expiry_.erase(it->second.by_expiry);
    cache_.erase(it);
  }
  // Full: drop whatever expires first, which is any expired entry before a live one.
  while (cache_.size() >= opt_.cache_size && !by_expiry_.empty()) {
    cache_.erase(by_expiry_.begin()->second);
    by_expiry_.erase(by_expiry_.begin());
  }
  const auto expires = now() + ttl;
  const auto pos = by_expiry_.emplace(expires, key);
  cache_.emplace(key, cache_entry{out, expires, pos});
}

// Our deadline passed before c-ares answered (q is in flight, so this resolver is alive).
void dns_resolver::impl::expire(const std::shared_ptr<pending>& q) {
  ++stats.timeouts;
  inflight_.erase(q->key);
  resolve_outcome out;
  out.err = proxy_error::dns_timeout;
  out.detail = "no answer within " + ms_text(opt_.timeout);
  complete(q, std::move(out));
  drop_orphans();
}

void dns_resolver::impl::cancel_all() {
  auto inflight = std::move(inflight_);
  inflight_.clear();
  for (auto& [key, q] : inflight) complete(q, failure(ARES_ECANCELLED));
  drop_orphans();
}

// When nobody waits for any lookup any more, the ones c-ares still runs (timed out or cancelled
// on our side) are stopped, so they neither retransmit nor hold sockets. c-ares has no
// per-query cancel; with a lookup still wanted they run to c-ares's own timeout instead.
void dns_resolver::impl::drop_orphans() {
  if (!inflight_.empty() || outstanding_ == 0) return;
  ares_cancel(channel_);  // calls back at once (ECANCELLED); every lookup is already done
  arm_timer();
}

void dns_resolver::impl::on_sock_state(void* data, ares_socket_t fd, int readable, int writable) {
  static_cast<impl*>(data)->sock_state(fd, readable != 0, writable != 0);
}

void dns_resolver::impl::sock_state(ares_socket_t fd, bool readable, bool writable) {
  if (!readable && !writable) {
    // c-ares closes fd right after this returns: take it out of epoll now, or a reused fd
    // number would meet a stale registration. Waits already queued see closed and stop.
    if (auto it = sockets_.find(fd); it != sockets_.end()) {
      it->second->closed = true;
      it->second->sd.release();
      sockets_.erase(it);
    }
    return;
  }
  auto& w = sockets_[fd];
  if (!w) {
    w = std::make_shared<watcher>(ex_);
    boost::system::error_code ec;
    w->sd.assign(fd, ec);
    if (ec) {
      // Not watchable (cannot happen short of running out of epoll memory): the lookups on
      // it end at their deadline.
      w->closed = true;
      return;
    }
  }
  w->want_read = readable;
  w->want_write = writable;
  start_waits(fd, w);
}

void dns_resolver::impl::start_waits(ares_socket_t fd, const std::shared_ptr<watcher>& w) {
  if (w->closed) return;
  // Readiness waits, not reads: c-ares does the I/O in ares_process_fd. Asio's reactor re-arms
  // its edge-triggered registration when a wait starts, so readiness that arrived while no
  // wait was pending is not lost.
  if (w->want_read && !w->reading) {
    w->reading = true;
    w->sd.async_wait(asio::posix::descriptor_base::wait_read,
                     [weak = weak_from_this(), w, fd](boost::system::error_code ec) {
                       w->reading = false;
                       auto self = weak.lock();
                       if (!self || w->closed || ec == asio::error::operation_aborted) return;
                       if (w->want_read) ares_process_fd(self->channel_, fd, ARES_SOCKET_BAD);
                       self->after_wait(fd, w, ec);
                     });
  }
  if (w->want_write && !w->writing) {
    w->writing = true;
    w->sd.async_wait(asio::posix::descriptor_base::wait_write,
                     [weak = weak_from_this(), w, fd](boost::system::error_code ec) {
                       w->writing = false;
                       auto self = weak.lock();
                       if (!self || w->closed || ec == asio::error::operation_aborted) return;
                       if (w->want_write) ares_process_fd(self->channel_, ARES_SOCKET_BAD, fd);
                       self->after_wait(fd, w, ec);
                     });
  }
}

void dns_resolver::impl::after_wait(ares_socket_t fd, const std::shared_ptr<watcher>& w,
                                    boost::system::error_code ec) {
  if (ec && !w->closed) {
    // The reactor refused the wait (it never reports socket errors this way: those come as
    // readiness, and c-ares meets them in its read). Waiting again would fail at once, in a
    // loop; the socket is left to c-ares's timeouts instead, which close it.
    w->closed = true;
    w->sd.release();
  }
  start_waits(fd, w);
  arm_timer();
}

// Follows ares_timeout: the next retransmission or per-try timeout of any query. A wake that is
// already set no later than needed is kept (an early wake costs one ares_process_fd that finds
// nothing due), so the timer is not re-armed on every socket event. No wake is needed when
// nothing is in flight; one left set is harmless.
void dns_resolver::impl::arm_timer() {
  if (!channel_) return;
  timeval tv{};
  if (!ares_timeout(channel_, nullptr, &tv)) return;
  const auto when = std::chrono::steady_clock::now() + std::chrono::seconds(tv.tv_sec) +
                    std::chrono::microseconds(tv.tv_usec);
  if (timer_armed_ && timer_.expiry() <= when) return;
  timer_armed_ = true;
  const auto generation = ++timer_generation_;
  timer_.expires_at(when);  // aborts the later wait, which then sees a newer generation
  timer_.async_wait([weak = weak_from_this(), generation](boost::system::error_code) {
    auto self = weak.lock();
    if (!self || generation != self->timer_generation_) return;
    self->timer_armed_ = false;
    if (!self->channel_) return;
    ares_process_fd(self->channel_, ARES_SOCKET_BAD, ARES_SOCKET_BAD);
    self->arm_timer();
  });
}

dns_resolver::dns_resolver(asio::any_io_executor ex, dns_options opt)
    : impl_(std::make_shared<impl>(std::move(ex), std::move(opt))) {}

dns_resolver::~dns_resolver() {
  impl_->shutdown();
}

const dns_stats& dns_resolver::stats() const noexcept {
  return impl_->stats;
}

void dns_resolver::cancel_all() {
  impl_->cancel_all();
}

asio::awaitable<resolve_outcome> dns_resolver::resolve(std::string host) {
  std::shared_ptr<impl::pending> q;
  {
    auto& im = *impl_;
    ++im.stats.queries;
    std::string key = normalise(host);
    if (auto hit = im.cached(key)) {
      ++im.stats.cache_hits;
      co_return std::move(*hit);
    }
    q = im.join_or_start(std::move(key));
  }
  // From here on only q is used: the resolver may be destroyed while we wait (then q is done).
  boost::system::error_code ec;
  if (!q->done) {
    auto [wait_ec] = co_await q->signal.async_wait(asio::as_tuple(asio::use_awaitable));
    ec = wait_ec;
  }
  if (!q->done) {
    if (ec == asio::error::operation_aborted) {
      // Our caller gave up (its own timeout or cancellation); the lookup goes on for the others
      // and for the cache.
      resolve_outcome out;
      out.err = proxy_error::dns_timeout;
      out.detail = "lookup cancelled";
      co_return out;
    }
    q->owner->expire(q);
  }
  co_return q->result;
}

}  // namespace egressd::net
