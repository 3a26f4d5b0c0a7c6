// The c-ares resolver against a stub DNS server on 127.0.0.1 (a UDP socket on port 0 in the same
// io_context, answering hand-built responses). No query ever leaves loopback: every resolver
// here is pointed at the stub. Cache expiry runs on an injected clock, so no test waits for a
// TTL and none asserts on elapsed time.
#include "egressd/net/dns.hpp"

#include <gtest/gtest.h>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ip/udp.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace egressd::net {
namespace {

namespace asio = boost::asio;
using namespace std::chrono_literals;
using asio::ip::tcp;
using asio::ip::udp;

constexpr std::uint16_t type_a = 1;
constexpr std::uint16_t type_cname = 5;
constexpr std::uint16_t type_aaaa = 28;

constexpr std::uint8_t rcode_servfail = 2;
constexpr std::uint8_t rcode_nxdomain = 3;
constexpr std::uint8_t rcode_refused = 5;

struct record {
  std::string owner;
  std::uint16_t type;
  std::uint32_t ttl;
  std::string data;  // address literal, or the target name of a CNAME
};

// What the stub does for one queried name.
struct zone_entry {
  std::uint8_t rcode = 0;
  bool silent = false;          // never answer
  bool tcp_only = false;        // over UDP: truncated (TC), no records
  std::vector<record> records;  // CNAMEs always, addresses of the queried type
};

zone_entry failing(std::uint8_t rcode) {
  zone_entry e;
  e.rcode = rcode;
  return e;
}

zone_entry silent() {
  zone_entry e;
  e.silent = true;
  return e;
}

// A DNS server on 127.0.0.1:0 speaking just enough of RFC 1035 over UDP, and over TCP on the
// same port number: it parses the one question, and answers from its zone with the question
// echoed and uncompressed names.
class stub_dns {
 public:
  explicit stub_dns(asio::io_context& io) : socket_(io), acceptor_(io) {
    // One port number for both protocols: the TCP listener takes a free port, the UDP socket
    // the same number, retried when that number is taken for UDP.
    const auto loopback = asio::ip::make_address("127.0.0.1");
    for (int attempt = 0;; ++attempt) {
      tcp::acceptor a(io, tcp::v4());
      udp::socket u(io, udp::v4());
      boost::system::error_code ec;
      a.set_option(tcp::acceptor::reuse_address(true), ec);
      if (!ec) a.bind(tcp::endpoint(loopback, 0), ec);
      if (!ec) a.listen(asio::socket_base::max_listen_connections, ec);
      if (!ec) u.bind(udp::endpoint(loopback, a.local_endpoint().port()), ec);
      if (!ec) {
        acceptor_ = std::move(a);
        socket_ = std::move(u);
        break;
      }
      if (attempt == 100) throw boost::system::system_error(ec, "stub_dns bind");
    }
    asio::co_spawn(io, serve(), [](std::exception_ptr) {});
    asio::co_spawn(io, accept(), [](std::exception_ptr) {});
  }

  std::string address() const {
    return "127.0.0.1:" + std::to_string(socket_.local_endpoint().port());
  }

  void set(const std::string& name, zone_entry e) { zone_[name] = std::move(e); }

  // Address records for name, one TTL for all.
  void addresses(const std::string& name, std::vector<std::string> v4, std::vector<std::string> v6,
                 std::uint32_t ttl = 60) {
    zone_entry e;
    for (auto& a : v4) e.records.push_back({name, type_a, ttl, a});
    for (auto& a : v6) e.records.push_back({name, type_aaaa, ttl, a});
    set(name, std::move(e));
  }

  int count(const std::string& name, std::uint16_t type) const {
    auto it = seen_.find({name, type});
    return it == seen_.end() ? 0 : it->second;
  }
  int total(const std::string& name) const { return count(name, type_a) + count(name, type_aaaa); }

  std::function<void(const std::string&, std::uint16_t)> on_query;
  bool hold = false;  // keep answers back until release()

  void release() {
    for (const auto& [reply, peer] : held_) {
      boost::system::error_code ec;
      socket_.send_to(asio::buffer(reply), peer, 0, ec);
    }
    held_.clear();
  }

  void stop() {
    boost::system::error_code ec;
    socket_.close(ec);
    acceptor_.close(ec);
  }

 private:
  asio::awaitable<void> serve() {
    std::vector<std::uint8_t> buf(4096);
    while (true) {
      udp::endpoint peer;
      auto [ec, n] = co_await socket_.async_receive_from(asio::buffer(buf), peer,
                                                         asio::as_tuple(asio::use_awaitable));
      if (ec == asio::error::operation_aborted || !socket_.is_open()) co_return;
      if (ec) continue;
      auto reply = answer(std::vector<std::uint8_t>(buf.begin(), buf.begin() + n), false);
      if (reply.empty()) continue;
      if (hold) {
        held_.emplace_back(std::move(reply), peer);
        continue;
      }
      auto [sec, sent] = co_await socket_.async_send_to(asio::buffer(reply), peer,
                                                        asio::as_tuple(asio::use_awaitable));
      (void)sec;
      (void)sent;
    }
  }

  asio::awaitable<void> accept() {
    while (true) {
      auto [ec, peer] = co_await acceptor_.async_accept(asio::as_tuple(asio::use_awaitable));
      if (ec) co_return;
      asio::co_spawn(acceptor_.get_executor(), session(std::move(peer)), [](std::exception_ptr) {});
    }
  }

  // RFC 1035 4.2.2: each message preceded by its length in two bytes.
  asio::awaitable<void> session(tcp::socket peer) {
    while (true) {
      std::uint8_t len[2];
      auto [ec, n] =
          co_await asio::async_read(peer, asio::buffer(len), asio::as_tuple(asio::use_awaitable));
      if (ec) co_return;
      std::vector<std::uint8_t> q(static_cast<std::size_t>(len[0] << 8 | len[1]));
      auto [qec, qn] =
          co_await asio::async_read(peer, asio::buffer(q), asio::as_tuple(asio::use_awaitable));
      if (qec) co_return;
      auto reply = answer(q, true);
      if (reply.empty()) continue;
      std::vector<std::uint8_t> framed;
      put16(framed, static_cast<std::uint16_t>(reply.size()));
      framed.insert(framed.end(), reply.begin(), reply.end());
      auto [wec, wn] = co_await asio::async_write(peer, asio::buffer(framed),
                                                  asio::as_tuple(asio::use_awaitable));
      if (wec) co_return;
    }
  }

  static void put16(std::vector<std::uint8_t>& out, std::uint16_t v) {
    out.push_back(static_cast<std::uint8_t>(v >> 8));
    out.push_back(static_cast<std::uint8_t>(v));
  }

  static void put_name(std::vector<std::uint8_t>& out, const std::string& name) {
    std::size_t start = 0;
    while (start < name.size()) {
      auto dot = name.find('.', start);
      if (dot == std::string::npos) dot = name.size();
      out.push_back(static_cast<std::uint8_t>(dot - start));
      out.insert(out.end(), name.begin() + static_cast<std::ptrdiff_t>(start),
                 name.begin() + static_cast<std::ptrdiff_t>(dot));
      start = dot + 1;
    }
    out.push_back(0);
  }

  // Returns the reply, or nothing when the query is malformed or the name is silent.
  std::vector<std::uint8_t> answer(const std::vector<std::uint8_t>& q, bool over_tcp) {
    if (q.size() < 12) return {};
    std::size_t pos = 12;
    std::string name;
    while (pos < q.size() && q[pos] != 0) {
      const std::size_t len = q[pos++];
      if (len > 63 || pos + len > q.size()) return {};
      if (!name.empty()) name += '.';
      for (std::size_t i = 0; i < len; ++i) {
        const char c = static_cast<char>(q[pos + i]);
        name += (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c;
      }
      pos += len;
    }
    if (pos + 5 > q.size()) return {};
    ++pos;  // the root label
    const std::uint16_t qtype = static_cast<std::uint16_t>(q[pos] << 8 | q[pos + 1]);
    pos += 4;
    ++seen_[{name, qtype}];
    if (on_query) on_query(name, qtype);

    zone_entry e;
    if (auto it = zone_.find(name); it != zone_.end()) {
      e = it->second;
    } else {
      e.rcode = rcode_nxdomain;
    }
    if (e.silent) return {};

    std::vector<std::uint8_t> out(q.begin(), q.begin() + 2);  // id
    const bool truncated = e.tcp_only && !over_tcp;
    put16(out, static_cast<std::uint16_t>(0x8000 | (truncated ? 0x0200 : 0) | (q[2] & 0x01) << 8 |
                                          0x0080 | e.rcode));
    std::vector<const record*> answers;
    if (e.rcode == 0 && !truncated) {
      for (const auto& r : e.records) {
        if (r.type == type_cname || r.type == qtype) answers.push_back(&r);
      }
    }
    put16(out, 1);
    put16(out, static_cast<std::uint16_t>(answers.size()));
    put16(out, 0);
    put16(out, 0);
    out.insert(out.end(), q.begin() + 12, q.begin() + static_cast<std::ptrdiff_t>(pos));
    for (const auto* r : answers) {
      put_name(out, r->owner);
      put16(out, r->type);
      put16(out, 1);  // IN
      put16(out, static_cast<std::uint16_t>(r->ttl >> 16));
      put16(out, static_cast<std::uint16_t>(r->ttl));
      std::vector<std::uint8_t> rdata;
      if (r->type == type_cname) {
        put_name(rdata, r->data);
      } else if (r->type == type_a) {
        const auto b = asio::ip::make_address_v4(r->data).to_bytes();
        rdata.assign(b.begin(), b.end());
      } else {
        const auto b = asio::ip::make_address_v6(r->data).to_bytes();
        rdata.assign(b.begin(), b.end());
      }
      put16(out, static_cast<std::uint16_t>(rdata.size()));
      out.insert(out.end(), rdata.begin(), rdata.end());
    }
    return out;
  }

  udp::socket socket_;
  tcp::acceptor acceptor_;
  std::map<std::string, zone_entry> zone_;
  std::map<std::pair<std::string, std::uint16_t>, int> seen_;
  std::vector<std::pair<std::vector<std::uint8_t>, udp::endpoint>> held_;
};

std::vector<std::string> text(const resolve_outcome& r) {
  std::vector<std::string> out;
  for (const auto& a : r.addresses) out.push_back(a.to_string());
  return out;
}

class DnsResolver : public ::testing::Test {
 protected:
  // The stub as the only server, and the cache on the fake clock.
  dns_options options() {
    dns_options o;
    o.servers = {stub.address()};
    o.clock = [this] { return now; };
    return o;
  }

  dns_resolver& make(dns_options o) {
    resolver = std::make_unique<dns_resolver>(io.get_executor(), std::move(o));
    return *resolver;
  }
  dns_resolver& make() { return make(options()); }

  // Runs body on the io_context until it finishes. The guard fails a hung test instead of
  // blocking the suite; it measures nothing.
  void run(std::function<asio::awaitable<void>()> body) {
    bool finished = false;
    std::exception_ptr error;
    asio::co_spawn(io, body(), [&](std::exception_ptr e) {
      error = e;
      finished = true;
    });
    while (!finished) {
      if (io.run_one_for(30s) == 0) {
        FAIL() << "test body hung";
      }
    }
    if (error) std::rethrow_exception(error);
  }

  // One lookup, run to completion.
  resolve_outcome lookup(const std::string& host) {
    resolve_outcome out;
    run([&]() -> asio::awaitable<void> { out = co_await resolver->resolve(host); });
    return out;
  }

  void TearDown() override {
    resolver.reset();
    stub.stop();
    io.restart();
    io.poll();
  }

  asio::io_context io;
  stub_dns stub{io};
  std::chrono::steady_clock::time_point now{std::chrono::hours(1000)};
  std::unique_ptr<dns_resolver> resolver;
};

TEST_F(DnsResolver, MergesAandAaaaIpv4First) {
  stub.addresses("two.test", {"192.0.2.1", "192.0.2.2"}, {"2001:db8::1", "2001:db8::2"});
  make();
  const auto r = lookup("two.test");
  EXPECT_EQ(r.err, proxy_error::none) << r.detail;
  EXPECT_EQ(text(r),
            (std::vector<std::string>{"192.0.2.1", "192.0.2.2", "2001:db8::1", "2001:db8::2"}));
  EXPECT_EQ(stub.count("two.test", type_a), 1);
  EXPECT_EQ(stub.count("two.test", type_aaaa), 1);
  const auto& s = resolver->stats();
  EXPECT_EQ(s.queries, 1u);
  EXPECT_EQ(s.cache_misses, 1u);
  EXPECT_EQ(s.failures, 0u);
}

TEST_F(DnsResolver, OnlyOneFamily) {
  stub.addresses("v4.test", {"198.51.100.1"}, {});
  stub.addresses("v6.test", {}, {"2001:db8::9"});
  make();
  EXPECT_EQ(text(lookup("v4.test")), (std::vector<std::string>{"198.51.100.1"}));
  EXPECT_EQ(text(lookup("v6.test")), (std::vector<std::string>{"2001:db8::9"}));
}

// Filtering is the destination policy's job: loopback, private and link-local answers all come
// back, IPv4-mapped ones un-mapped, duplicates once.
TEST_F(DnsResolver, MixedAnswersReturnedComplete) {
  stub.addresses(
      "mixed.test", {"10.0.0.1", "127.0.0.1", "192.0.2.1", "10.0.0.1", "169.254.169.254"},
      {"::1", "::ffff:192.0.2.1", "::ffff:198.51.100.7", "fe80::1", "2001:db8::1", "::1"});
  make();
  const auto r = lookup("mixed.test");
  EXPECT_EQ(r.err, proxy_error::none) << r.detail;
  EXPECT_EQ(text(r),
            (std::vector<std::string>{"10.0.0.1", "127.0.0.1", "192.0.2.1", "169.254.169.254",
                                      "198.51.100.7", "::1", "fe80::1", "2001:db8::1"}));
  for (const auto& a : r.addresses) {
    EXPECT_FALSE(a.is_v6() && a.to_v6().is_v4_mapped()) << a.to_string();
  }
}

TEST_F(DnsResolver, CnameChain) {
  zone_entry e;
  e.records = {{"alias.test", type_cname, 60, "middle.test"},
               {"middle.test", type_cname, 60, "target.test"},
               {"target.test", type_a, 60, "203.0.113.5"},
               {"target.test", type_aaaa, 60, "2001:db8::5"}};
  stub.set("alias.test", e);
  make();
  const auto r = lookup("alias.test");
  EXPECT_EQ(r.err, proxy_error::none) << r.detail;
  EXPECT_EQ(text(r), (std::vector<std::string>{"203.0.113.5", "2001:db8::5"}));
}

TEST_F(DnsResolver, CachesForTheTtl) {
  stub.addresses("cached.test", {"192.0.2.10"}, {"2001:db8::10"}, 60);
  make();
  const auto first = lookup("cached.test");
  now += 59s;
  const auto second = lookup("cached.test");
  EXPECT_EQ(text(second), text(first));
  EXPECT_EQ(second.err, proxy_error::none);
  // Names are case-insensitive, and the absolute form is the same name.
  EXPECT_EQ(text(lookup("CACHED.Test")), text(first));
  EXPECT_EQ(text(lookup("cached.test.")), text(first));
  EXPECT_EQ(stub.count("cached.test", type_a), 1);
  EXPECT_EQ(stub.count("cached.test", type_aaaa), 1);
  const auto& s = resolver->stats();
  EXPECT_EQ(s.queries, 4u);
  EXPECT_EQ(s.cache_hits, 3u);
  EXPECT_EQ(s.cache_misses, 1u);
}

TEST_F(DnsResolver, ExpiresAfterTheTtl) {
  stub.addresses("short.test", {"192.0.2.20"}, {"2001:db8::20"}, 1);
  auto o = options();
  o.min_ttl = 0ms;
  make(o);
  lookup("short.test");
  now += 999ms;
  lookup("short.test");
  EXPECT_EQ(stub.count("short.test", type_a), 1);
  now += 1ms;
  const auto r = lookup("short.test");
  EXPECT_EQ(r.err, proxy_error::none);
  EXPECT_EQ(stub.count("short.test", type_a), 2);
  EXPECT_EQ(stub.count("short.test", type_aaaa), 2);
  EXPECT_EQ(resolver->stats().cache_misses, 2u);
}

// The smallest TTL in the answer wins: here the AAAA record's.
TEST_F(DnsResolver, TtlIsTheMinimumOverTheAnswer) {
  zone_entry e;
  e.records = {{"ttls.test", type_a, 60, "192.0.2.30"},
               {"ttls.test", type_aaaa, 10, "2001:db8::30"}};
  stub.set("ttls.test", e);
  make();
  lookup("ttls.test");
  now += 9s;
  lookup("ttls.test");
  EXPECT_EQ(stub.count("ttls.test", type_a), 1);
  now += 1s;
  lookup("ttls.test");
  EXPECT_EQ(stub.count("ttls.test", type_a), 2);
}

TEST_F(DnsResolver, CnameTtlBoundsTheAnswer) {
  zone_entry e;
  e.records = {{"alias.test", type_cname, 5, "target.test"},
               {"target.test", type_a, 300, "203.0.113.6"}};
  stub.set("alias.test", e);
  make();
  lookup("alias.test");
  now += 4s;
  lookup("alias.test");
  EXPECT_EQ(stub.count("alias.test", type_a), 1);
  now += 1s;
  lookup("alias.test");
  EXPECT_EQ(stub.count("alias.test", type_a), 2);
}

TEST_F(DnsResolver, TtlClampedToMinAndMax) {
  stub.addresses("zero.test", {"192.0.2.40"}, {}, 0);
  stub.addresses("long.test", {"192.0.2.41"}, {}, 86400);
  auto o = options();
  o.min_ttl = 2s;
  o.max_ttl = 300s;
  make(o);
  lookup("zero.test");
  lookup("long.test");
  now += 1999ms;
  lookup("zero.test");
  EXPECT_EQ(stub.count("zero.test", type_a), 1);
  now += 1ms;
  lookup("zero.test");
  EXPECT_EQ(stub.count("zero.test", type_a), 2);
  now += 297999ms;  // 299.999 s after the first lookup
  lookup("long.test");
  EXPECT_EQ(stub.count("long.test", type_a), 1);
  now += 1ms;
  lookup("long.test");
  EXPECT_EQ(stub.count("long.test", type_a), 2);
}

TEST_F(DnsResolver, ZeroTtlWithoutMinimumIsNotCached) {
  stub.addresses("zero.test", {"192.0.2.40"}, {}, 0);
  auto o = options();
  o.min_ttl = 0ms;
  make(o);
  EXPECT_EQ(text(lookup("zero.test")), (std::vector<std::string>{"192.0.2.40"}));
  EXPECT_EQ(text(lookup("zero.test")), (std::vector<std::string>{"192.0.2.40"}));
  EXPECT_EQ(stub.count("zero.test", type_a), 2);
}

TEST_F(DnsResolver, CacheSizeZeroDisablesTheCache) {
  stub.addresses("nocache.test", {"192.0.2.50"}, {});
  stub.set("nx.test", failing(rcode_nxdomain));
  auto o = options();
  o.cache_size = 0;
  make(o);
  lookup("nocache.test");
  lookup("nocache.test");
  lookup("nx.test");
  lookup("nx.test");
  EXPECT_EQ(stub.count("nocache.test", type_a), 2);
  EXPECT_EQ(stub.count("nx.test", type_a), 2);
  EXPECT_EQ(resolver->stats().cache_hits, 0u);
}

// Full: the entry that expires first goes, live or not.
TEST_F(DnsResolver, FullCacheEvictsWhatExpiresFirst) {
  stub.addresses("a.test", {"192.0.2.61"}, {}, 100);
  stub.addresses("b.test", {"192.0.2.62"}, {}, 10);
  stub.addresses("c.test", {"192.0.2.63"}, {}, 200);
  auto o = options();
  o.cache_size = 2;
  make(o);
  lookup("a.test");
  lookup("b.test");
  lookup("c.test");  // evicts b
  lookup("a.test");
  lookup("c.test");
  EXPECT_EQ(stub.count("a.test", type_a), 1);
  EXPECT_EQ(stub.count("c.test", type_a), 1);
  lookup("b.test");  // back in, evicting a (expires before c)
  EXPECT_EQ(stub.count("b.test", type_a), 2);
  lookup("c.test");
  EXPECT_EQ(stub.count("c.test", type_a), 1);
  lookup("a.test");
  EXPECT_EQ(stub.count("a.test", type_a), 2);
}

TEST_F(DnsResolver, NxdomainIsNegativelyCached) {
  stub.set("gone.test", failing(rcode_nxdomain));
  auto o = options();
  o.negative_ttl = 5s;
  make(o);
  const auto r = lookup("gone.test");
  EXPECT_EQ(r.err, proxy_error::dns_error);
  EXPECT_TRUE(r.addresses.empty());
  EXPECT_NE(r.detail.find("NXDOMAIN"), std::string::npos) << r.detail;
  now += 4999ms;
  const auto again = lookup("gone.test");
  EXPECT_EQ(again.err, proxy_error::dns_error);
  EXPECT_EQ(again.detail, r.detail);
  EXPECT_EQ(stub.total("gone.test"), 2);  // one A, one AAAA
  now += 1ms;
  lookup("gone.test");
  EXPECT_EQ(stub.total("gone.test"), 4);
  EXPECT_EQ(resolver->stats().cache_hits, 1u);
  EXPECT_EQ(resolver->stats().failures, 2u);
}

TEST_F(DnsResolver, NoAddressIsNegativelyCached) {
  zone_entry e;  // NOERROR, empty answer: the name exists but has no A or AAAA
  stub.set("empty.test", e);
  make();
  const auto r = lookup("empty.test");
  EXPECT_EQ(r.err, proxy_error::dns_error);
  EXPECT_NE(r.detail.find("no address"), std::string::npos) << r.detail;
  lookup("empty.test");
  EXPECT_EQ(stub.total("empty.test"), 2);
}

TEST_F(DnsResolver, NegativeTtlZeroDisablesNegativeCaching) {
  stub.set("gone.test", failing(rcode_nxdomain));
  stub.addresses("here.test", {"192.0.2.70"}, {});
  auto o = options();
  o.negative_ttl = 0ms;
  make(o);
  lookup("gone.test");
  lookup("gone.test");
  EXPECT_EQ(stub.total("gone.test"), 4);
  lookup("here.test");
  lookup("here.test");
  EXPECT_EQ(stub.count("here.test", type_a), 1);  // positive caching unaffected
}

// c-ares 1.18 tries the next server on SERVFAIL and REFUSED and, with none left, reports them
// like an unreachable server.
const std::string servers_failed = "every DNS server failed (SERVFAIL, REFUSED or unreachable)";

// SERVFAIL and REFUSED say nothing about the name: errors, never cached.
TEST_F(DnsResolver, ServfailIsAnErrorAndNotCached) {
  stub.set("broken.test", failing(rcode_servfail));
  make();
  const auto r = lookup("broken.test");
  EXPECT_EQ(r.err, proxy_error::dns_error);
  EXPECT_EQ(r.detail, servers_failed);
  const int before = stub.total("broken.test");
  EXPECT_GE(before, 2);
  EXPECT_EQ(lookup("broken.test").err, proxy_error::dns_error);
  EXPECT_GT(stub.total("broken.test"), before);
  EXPECT_EQ(resolver->stats().cache_hits, 0u);
  EXPECT_EQ(resolver->stats().failures, 2u);
}

TEST_F(DnsResolver, RefusedIsAnError) {
  stub.set("refused.test", failing(rcode_refused));
  make();
  const auto r = lookup("refused.test");
  EXPECT_EQ(r.err, proxy_error::dns_error);
  EXPECT_EQ(r.detail, servers_failed);
}

// A server that refuses (or fails) does not end the lookup while another one is left.
TEST_F(DnsResolver, MovesOnToTheNextServer) {
  stub_dns refusing(io);
  refusing.set("next.test", failing(rcode_refused));
  stub.addresses("next.test", {"192.0.2.130"}, {});
  auto o = options();
  o.servers = {refusing.address(), stub.address()};
  make(o);
  const auto r = lookup("next.test");
  EXPECT_EQ(r.err, proxy_error::none) << r.detail;
  EXPECT_EQ(text(r), (std::vector<std::string>{"192.0.2.130"}));
  EXPECT_GE(refusing.total("next.test"), 1);
  resolver.reset();
  refusing.stop();
}

// An answer too big for UDP comes truncated; c-ares asks again over TCP (connect, write
// readiness, then reads) and gets it whole.
TEST_F(DnsResolver, TruncatedAnswerIsFetchedOverTcp) {
  zone_entry e;
  e.tcp_only = true;
  std::vector<std::string> want;
  for (int i = 1; i <= 40; ++i) {
    want.push_back("10.1.0." + std::to_string(i));
    e.records.push_back({"big.test", type_a, 60, want.back()});
  }
  e.records.push_back({"big.test", type_aaaa, 60, "2001:db8::40"});
  want.push_back("2001:db8::40");
  stub.set("big.test", e);
  make();
  const auto r = lookup("big.test");
  EXPECT_EQ(r.err, proxy_error::none) << r.detail;
  EXPECT_EQ(text(r), want);
  EXPECT_EQ(stub.count("big.test", type_a), 2);  // UDP, then TCP
  EXPECT_EQ(stub.count("big.test", type_aaaa), 2);
}

// Names c-ares refuses to send end like any failed lookup, without a query.
TEST_F(DnsResolver, UnsendableNamesAreErrors) {
  make();
  for (const std::string& name : {std::string(), std::string("."), std::string(300, 'a') + ".test",
                                  std::string(70, 'b') + ".test"}) {
    const auto r = lookup(name);
    EXPECT_EQ(r.err, proxy_error::dns_error) << name;
    EXPECT_TRUE(r.addresses.empty()) << name;
  }
}

// One family failing does not hide the other's addresses.
TEST_F(DnsResolver, PartialAnswerIsAnAnswer) {
  zone_entry e;
  e.records = {{"half.test", type_a, 60, "192.0.2.80"}};
  stub.set("half.test", e);
  make();
  const auto r = lookup("half.test");
  EXPECT_EQ(r.err, proxy_error::none) << r.detail;
  EXPECT_EQ(text(r), (std::vector<std::string>{"192.0.2.80"}));
}

TEST_F(DnsResolver, TimeoutWhenTheServerNeverAnswers) {
  stub.set("silent.test", silent());
  stub.addresses("fine.test", {"192.0.2.90"}, {});
  auto o = options();
  o.timeout = 300ms;
  make(o);
  const auto r = lookup("silent.test");
  EXPECT_EQ(r.err, proxy_error::dns_timeout);
  EXPECT_TRUE(r.addresses.empty());
  EXPECT_EQ(resolver->stats().timeouts, 1u);
  EXPECT_EQ(resolver->stats().failures, 0u);
  // A timeout is not cached, and the resolver goes on working.
  EXPECT_EQ(lookup("silent.test").err, proxy_error::dns_timeout);
  EXPECT_EQ(resolver->stats().timeouts, 2u);
  EXPECT_EQ(text(lookup("fine.test")), (std::vector<std::string>{"192.0.2.90"}));
}

TEST_F(DnsResolver, ConcurrentLookupsOfOneNameShareOneQuery) {
  stub.addresses("popular.test", {"192.0.2.100"}, {"2001:db8::100"});
  make();
  constexpr int n = 8;
  std::vector<resolve_outcome> results(n);
  run([&]() -> asio::awaitable<void> {
    int done = 0;
    asio::steady_timer all_done(io, asio::steady_timer::time_point::max());
    for (int i = 0; i < n; ++i) {
      asio::co_spawn(
          io,
          [&, i]() -> asio::awaitable<void> {
            results[static_cast<std::size_t>(i)] = co_await resolver->resolve("Popular.test");
            if (++done == n) all_done.cancel();
          },
          [](std::exception_ptr e) {
            if (e) std::rethrow_exception(e);
          });
    }
    auto [ec] = co_await all_done.async_wait(asio::as_tuple(asio::use_awaitable));
    (void)ec;
  });
  for (const auto& r : results) {
    EXPECT_EQ(r.err, proxy_error::none) << r.detail;
    EXPECT_EQ(text(r), (std::vector<std::string>{"192.0.2.100", "2001:db8::100"}));
  }
  EXPECT_EQ(stub.count("popular.test", type_a), 1);
  EXPECT_EQ(stub.count("popular.test", type_aaaa), 1);
  const auto& s = resolver->stats();
  EXPECT_EQ(s.queries, static_cast<std::uint64_t>(n));
  EXPECT_EQ(s.cache_misses, 1u);
  EXPECT_EQ(s.coalesced, static_cast<std::uint64_t>(n - 1));
}

// Concurrent lookups that fail share the failure too.
TEST_F(DnsResolver, CoalescedWaitersShareATimeout) {
  stub.set("silent.test", silent());
  auto o = options();
  o.timeout = 300ms;
  make(o);
  std::vector<resolve_outcome> results(3);
  run([&]() -> asio::awaitable<void> {
    using namespace asio::experimental::awaitable_operators;
    auto [a, b] = co_await (resolver->resolve("silent.test") && resolver->resolve("silent.test"));
    results[0] = a;
    results[1] = b;
  });
  EXPECT_EQ(results[0].err, proxy_error::dns_timeout);
  EXPECT_EQ(results[1].err, proxy_error::dns_timeout);
  EXPECT_EQ(resolver->stats().coalesced, 1u);
  EXPECT_EQ(resolver->stats().timeouts, 1u);
}

TEST_F(DnsResolver, CancelAllCompletesEveryWaiter) {
  stub.set("slow.test", silent());
  stub.addresses("after.test", {"192.0.2.110"}, {});
  make();  // 5 s timeout: cancel_all, not the deadline, ends these lookups
  int seen = 0;
  stub.on_query = [&](const std::string& name, std::uint16_t) {
    if (name == "slow.test" && ++seen == 2) resolver->cancel_all();  // both A and AAAA are out
  };
  resolve_outcome a;
  resolve_outcome b;
  run([&]() -> asio::awaitable<void> {
    using namespace asio::experimental::awaitable_operators;
    std::tie(a, b) = co_await (resolver->resolve("slow.test") && resolver->resolve("slow.test"));
  });
  for (const auto* r : {&a, &b}) {
    EXPECT_EQ(r->err, proxy_error::dns_error);
    EXPECT_EQ(r->detail, "cancelled");
  }
  stub.on_query = nullptr;
  EXPECT_EQ(text(lookup("after.test")), (std::vector<std::string>{"192.0.2.110"}));
  EXPECT_EQ(resolver->stats().timeouts, 0u);
}

TEST_F(DnsResolver, DestroyingTheResolverCompletesEveryWaiter) {
  stub.set("slow.test", silent());
  make();
  int seen = 0;
  stub.on_query = [&](const std::string& name, std::uint16_t) {
    if (name == "slow.test" && ++seen == 2) resolver.reset();
  };
  resolve_outcome a;
  resolve_outcome b;
  run([&]() -> asio::awaitable<void> {
    using namespace asio::experimental::awaitable_operators;
    std::tie(a, b) = co_await (resolver->resolve("slow.test") && resolver->resolve("slow.test"));
  });
  EXPECT_FALSE(resolver);
  for (const auto* r : {&a, &b}) {
    EXPECT_EQ(r->err, proxy_error::dns_error);
    EXPECT_EQ(r->detail, "cancelled");
  }
}

// A caller that stops waiting (its own watchdog won) does not end the lookup: the answer still
// arrives and serves the next caller without a second query.
TEST_F(DnsResolver, CallerCancellationLeavesTheLookupRunning) {
  stub.addresses("late.test", {"192.0.2.120"}, {"2001:db8::120"});
  stub.hold = true;  // answers wait until release()
  make();
  asio::steady_timer watchdog(io, asio::steady_timer::time_point::max());
  stub.on_query = [&](const std::string&, std::uint16_t) {
    if (stub.total("late.test") == 2) watchdog.cancel();  // the caller gives up
  };
  std::size_t winner = 0;
  run([&]() -> asio::awaitable<void> {
    using namespace asio::experimental::awaitable_operators;
    auto v = co_await (resolver->resolve("late.test") ||
                       watchdog.async_wait(asio::as_tuple(asio::use_awaitable)));
    winner = v.index();
  });
  EXPECT_EQ(winner, 1u);
  stub.hold = false;
  stub.release();
  const auto r = lookup("late.test");  // joins the lookup, or hits the cache it filled
  EXPECT_EQ(r.err, proxy_error::none) << r.detail;
  EXPECT_EQ(text(r), (std::vector<std::string>{"192.0.2.120", "2001:db8::120"}));
  EXPECT_EQ(stub.total("late.test"), 2);
  const auto& s = resolver->stats();
  EXPECT_EQ(s.cache_misses, 1u);
  EXPECT_EQ(s.coalesced + s.cache_hits, 1u);
}

TEST(DnsServers, LiteralAddressesOnly) {
  asio::io_context io;
  for (const char* good : {"127.0.0.1", "127.0.0.1:5353", "::1", "[::1]:53", "[2001:db8::1]:5353",
                           "192.0.2.1:65535"}) {
    dns_options o;
    o.servers = {good};
    EXPECT_NO_THROW(dns_resolver(io.get_executor(), o)) << good;
  }
  for (const char* bad : {"", "dns.example", "dns.example:53", "127.0.0.1:0", "127.0.0.1:65536",
                          "127.0.0.1:", "127.0.0.1:x", "[127.0.0.1]:53", "[::1]",
                          "[::1]:", "::1:53x", "1.2.3", "127.0.0.1:+53", "[::1]53"}) {
    dns_options o;
    o.servers = {"127.0.0.1", bad};
    EXPECT_THROW(dns_resolver(io.get_executor(), o), std::invalid_argument) << bad;
  }
}

// Empty servers: c-ares reads /etc/resolv.conf. Constructing sends nothing.
TEST(DnsServers, SystemConfigurationWhenEmpty) {
  asio::io_context io;
  EXPECT_NO_THROW(dns_resolver(io.get_executor(), dns_options{}));
}

}  // namespace
}  // namespace egressd::net
