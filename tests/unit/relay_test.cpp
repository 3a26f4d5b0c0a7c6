// The tunnel relay over real loopback TCP connections: both the splice and the copy path must move
// bytes exactly, pass half-closes on, end both directions on an error, and the pipe pool must
// honour its cap and never reuse a pipe that still holds bytes.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <array>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/use_future.hpp>
#include <boost/asio/write.hpp>
#include <chrono>
#include <random>
#include <thread>

#include "egressd/metrics/stats.hpp"
#include "egressd/proxy/upstream_pool.hpp"
#include "egressd/relay/pipe_pool.hpp"
#include "egressd/relay/splice_pump.hpp"
#include "egressd/relay/tunnel_relay.hpp"

namespace {

namespace asio = boost::asio;
using asio::ip::tcp;
using namespace egressd::relay;

// A connected pair of loopback TCP sockets.
std::pair<tcp::socket, tcp::socket> socket_pair(asio::io_context& io) {
  tcp::acceptor acc(io, tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0));
  tcp::socket a(io), b(io);
  a.connect(acc.local_endpoint());
  acc.accept(b);
  return {std::move(a), std::move(b)};
}

std::string random_bytes(std::size_t n, unsigned seed) {
  std::mt19937 rng(seed);
  std::string s(n, '\0');
  for (auto& c : s) c = static_cast<char>(rng());
  return s;
}

enum class mode { splice, copy };

class RelayTest : public ::testing::TestWithParam<mode> {};

// client <-> [relay: c_side, u_side] <-> origin
TEST_P(RelayTest, MovesBothDirectionsExactlyAndPassesHalfClose) {
  asio::io_context io;
  auto [client, c_side] = socket_pair(io);
  auto [u_side, origin] = socket_pair(io);
  pipe_budget budget(16);
  pipe_pool pool(budget, 64 * 1024);
  auto last = std::chrono::steady_clock::now();
  tunnel_relay relay(c_side, u_side, GetParam() == mode::splice ? &pool : nullptr, 16 * 1024, last);
  int ended = 0;
  relay.start(nullptr, [&] { ++ended; });
  std::thread t([&] { io.run(); });

  const std::string to_origin = random_bytes(3 * 1024 * 1024 + 17, 1);
  const std::string to_client = random_bytes(2 * 1024 * 1024 + 5, 2);
  // Blocking I/O from two helper threads on the outer sockets (their own threads, not io's).
  std::string got_at_origin, got_at_client;
  std::thread origin_thread([&] {
    boost::system::error_code ec;
    asio::write(origin, asio::buffer(to_client), ec);
    origin.shutdown(tcp::socket::shutdown_send, ec);              // origin finishes first
    asio::read(origin, asio::dynamic_buffer(got_at_origin), ec);  // until the client's FIN
  });
  // The client writes from its own thread while this one reads, so neither side can block the
  // other on full socket buffers.
  std::thread client_writer([&] {
    boost::system::error_code wec;
    asio::write(client, asio::buffer(to_origin), wec);
  });
  boost::system::error_code ec;
  asio::read(client, asio::dynamic_buffer(got_at_client), ec);  // until the origin's FIN
  EXPECT_EQ(ec, asio::error::eof);
  client_writer.join();
  client.shutdown(tcp::socket::shutdown_send, ec);
  origin_thread.join();
  t.join();

  const auto& up = relay.up();
  const auto& down = relay.down();
  EXPECT_EQ(ended, 1);
  EXPECT_EQ(got_at_origin.size(), to_origin.size());
  EXPECT_TRUE(got_at_origin == to_origin);
  EXPECT_TRUE(got_at_client == to_client);
  EXPECT_EQ(up.bytes, to_origin.size());
  EXPECT_EQ(down.bytes, to_client.size());
  EXPECT_TRUE(up.eof);
  EXPECT_TRUE(down.eof);
  EXPECT_FALSE(up.failed || down.failed);
  EXPECT_FALSE(up.fell_back || down.fell_back);
  if (GetParam() == mode::splice) {
    // Pipes go back to the pool empty: all of them are idle again, none was destroyed.
    EXPECT_EQ(budget.open.load(), pool.idle());
    EXPECT_GE(pool.idle(), 1u);
  }
}

INSTANTIATE_TEST_SUITE_P(BothPaths, RelayTest, ::testing::Values(mode::splice, mode::copy),
                         [](const auto& info) {
                           return info.param == mode::splice ? "splice" : "copy";
                         });

TEST(TunnelRelay, FallsBackToCopyWhenNoPipeCanBeHad) {
  asio::io_context io;
  auto [client, c_side] = socket_pair(io);
  auto [u_side, origin] = socket_pair(io);
  pipe_budget budget(0);  // the cap allows no pipe at all
  pipe_pool pool(budget, 0);
  auto last = std::chrono::steady_clock::now();
  tunnel_relay relay(c_side, u_side, &pool, 4096, last);
  int ended = 0;
  relay.start(nullptr, [&] { ++ended; });
  std::thread t([&] { io.run(); });
  const std::string data = random_bytes(100000, 3);
  boost::system::error_code ec;
  asio::write(client, asio::buffer(data), ec);
  client.shutdown(tcp::socket::shutdown_send, ec);
  std::string got;
  asio::read(origin, asio::dynamic_buffer(got), ec);
  origin.shutdown(tcp::socket::shutdown_send, ec);  // ends the other direction too
  std::string rest;
  asio::read(client, asio::dynamic_buffer(rest), ec);
  EXPECT_EQ(ec, asio::error::eof);
  t.join();
  EXPECT_TRUE(got == data);
  EXPECT_EQ(ended, 1);
  EXPECT_TRUE(relay.up().fell_back);
  EXPECT_TRUE(relay.up().eof);
  EXPECT_EQ(relay.up().bytes, data.size());
  EXPECT_GE(budget.failures.load(), 1u);
  EXPECT_EQ(budget.open.load(), 0u);
}

// A reset on one side ends the direction reading it with an error, and closes both sockets so the
// other direction ends too (its peer sees the connection close).
TEST_P(RelayTest, ResetClosesBothSides) {
  asio::io_context io;
  auto [client, c_side] = socket_pair(io);
  auto [u_side, origin] = socket_pair(io);
  pipe_budget budget(4);
  pipe_pool pool(budget, 0);
  auto last = std::chrono::steady_clock::now();
  tunnel_relay relay(c_side, u_side, GetParam() == mode::splice ? &pool : nullptr, 4096, last);
  int ended = 0;
  relay.start(nullptr, [&] { ++ended; });
  std::thread t([&] { io.run(); });
  boost::system::error_code ec;
  asio::write(client, asio::buffer("ping", 4), ec);
  std::array<char, 4> got{};
  asio::read(origin, asio::buffer(got), ec);
  EXPECT_FALSE(ec);
  origin.set_option(asio::socket_base::linger(true, 0), ec);
  origin.close(ec);  // RST
  std::string rest;
  asio::read(client, asio::dynamic_buffer(rest), ec);
  EXPECT_TRUE(ec == asio::error::eof || ec == asio::error::connection_reset) << ec.message();
  t.join();
  EXPECT_EQ(ended, 1);
  EXPECT_TRUE(relay.down().failed);
  EXPECT_EQ(relay.up().bytes, 4u);
  EXPECT_FALSE(c_side.is_open());
  EXPECT_FALSE(u_side.is_open());
  EXPECT_EQ(budget.open.load(), pool.idle());
}

TEST(SpliceExact, MovesExactlyNAndLeavesTheRest) {
  asio::io_context io;
  auto [client, c_side] = socket_pair(io);
  auto [u_side, origin] = socket_pair(io);
  pipe_budget budget(4);
  pipe_pool pool(budget, 0);
  const std::string body = random_bytes(300000, 4);
  const std::string next = "NEXT MESSAGE";
  boost::system::error_code ec;
  asio::write(client, asio::buffer(body + next), ec);
  pump_state st;
  auto last = std::chrono::steady_clock::now();
  auto fut = asio::co_spawn(io, splice_exact(c_side, u_side, pool, body.size(), st, last),
                            asio::use_future);
  std::thread t([&] { io.run(); });
  std::string got(body.size(), '\0');
  asio::read(origin, asio::buffer(got), ec);
  t.join();
  EXPECT_EQ(fut.get(), body.size());
  EXPECT_TRUE(got == body);
  // The bytes after the body stay in the socket for the next parser.
  std::string rest(next.size(), '\0');
  c_side.non_blocking(false);
  asio::read(c_side, asio::buffer(rest), ec);
  EXPECT_EQ(rest, next);
  EXPECT_FALSE(st.failed);
  EXPECT_EQ(pool.idle(), 1u);
}

TEST(PipePool, CapsPipesAndNeverReusesAPipeHoldingBytes) {
  pipe_budget budget(2);
  pipe_pool pool(budget, 128 * 1024);
  auto a = pool.acquire();
  auto b = pool.acquire();
  auto c = pool.acquire();
  ASSERT_TRUE(a);
  ASSERT_TRUE(b);
  EXPECT_FALSE(c) << "third pipe beyond the cap of 2";
  EXPECT_EQ(budget.failures.load(), 1u);
  // The size the kernel granted is kept (root may raise it; it is at least the default page).
  EXPECT_GE(pool.pipe_size(), 4096u);
  EXPECT_EQ(::fcntl(a.write_fd, F_GETPIPE_SZ), static_cast<int>(pool.pipe_size()));

  // A pipe returned with bytes inside is closed, not pooled.
  ASSERT_EQ(::write(a.write_fd, "x", 1), 1);
  pool.release(a, 1);
  EXPECT_EQ(pool.idle(), 0u);
  EXPECT_EQ(budget.open.load(), 1u);
  EXPECT_EQ(::fcntl(a.read_fd, F_GETFD), -1) << "closed pipe fd still open";

  // An empty one is pooled and handed out again.
  pool.release(b, 0);
  EXPECT_EQ(pool.idle(), 1u);
  auto d = pool.acquire();
  EXPECT_EQ(d.read_fd, b.read_fd);
  pool.release(d, 0);
}

}  // namespace

namespace egressd::proxy {
namespace {

namespace asio = boost::asio;
using asio::ip::tcp;
using metrics::pool_close_reason;

// Connected loopback socket pairs (client side to pool, server side to play the origin).
struct loopback_pairs {
  asio::io_context io;
  tcp::acceptor acc{io, tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0)};
  std::pair<tcp::socket, tcp::socket> make() {
    tcp::socket client(io);
    client.connect(acc.local_endpoint());
    tcp::socket server = acc.accept();
    return {std::move(client), std::move(server)};
  }
};

double closes(metrics::stats& m, pool_close_reason why) {
  return m.upstream_pool_closes(why).Value();
}

// The pool's sweep closes idle connections the origin closed, and those past the idle timeout,
// without waiting for the next request to meet them; each is counted by reason.
TEST(UpstreamPool, SweepDropsClosedAndExpiredConnections) {
  loopback_pairs lp;
  auto connect_pair = [&] { return lp.make(); };
  metrics::stats m({"127.0.0.1:3128"});
  upstream_pool pool(16, 16, std::chrono::hours(1));
  pool.set_stats(&m);
  const upstream_key key{asio::ip::make_address("127.0.0.1"), 80, "a.example", std::nullopt};
  auto [c1, s1] = connect_pair();
  auto [c2, s2] = connect_pair();
  pool.put(key, std::move(c1), "127.0.0.1");
  pool.put(key, std::move(c2), "127.0.0.1");
  pool.sweep();
  EXPECT_EQ(pool.size(), 2u) << "live idle connections stay";
  s1.close();  // the origin closes one: its FIN makes it readable
  for (int i = 0; i < 100 && pool.size() == 2; ++i) {
    pool.sweep();
    if (pool.size() == 2) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_EQ(pool.size(), 1u) << "the closed one is swept";
  EXPECT_EQ(closes(m, pool_close_reason::stale), 1);
  EXPECT_EQ(closes(m, pool_close_reason::expired), 0);
  pool.configure(16, 16, std::chrono::milliseconds(0));
  pool.sweep();
  EXPECT_EQ(pool.size(), 0u) << "past the idle timeout";
  EXPECT_EQ(closes(m, pool_close_reason::expired), 1);
  EXPECT_EQ(closes(m, pool_close_reason::stale), 1);
}

// Over max_idle_per_host the oldest connection to that destination is closed (not another
// destination's); over max_idle the oldest of all. Both are counted, and what stays is reused
// newest first.
TEST(UpstreamPool, LimitsCloseTheOldestAndAreCounted) {
  loopback_pairs lp;
  metrics::stats m({"127.0.0.1:3128"});
  upstream_pool pool(4, 2, std::chrono::hours(1));
  pool.set_stats(&m);
  const upstream_key a{asio::ip::make_address("127.0.0.1"), 80, "a.example", std::nullopt};
  const upstream_key b{asio::ip::make_address("127.0.0.1"), 80, "b.example", std::nullopt};
  std::vector<tcp::socket> origins;
  auto put = [&](const upstream_key& k, const std::string& tag) {
    auto [c, s] = lp.make();
    origins.push_back(std::move(s));
    pool.put(k, std::move(c), tag);
  };
  put(b, "b1");
  put(a, "a1");
  put(a, "a2");
  EXPECT_EQ(closes(m, pool_close_reason::host_limit), 0);
  put(a, "a3");  // a.example has 2 already: a1 goes
  EXPECT_EQ(pool.size(), 3u);
  EXPECT_EQ(closes(m, pool_close_reason::host_limit), 1);
  put(b, "b2");
  put(b, "b3");  // b.example's limit: b1 goes
  EXPECT_EQ(closes(m, pool_close_reason::host_limit), 2);
  EXPECT_EQ(closes(m, pool_close_reason::pool_limit), 0);
  pool.configure(3, 2, std::chrono::hours(1));  // shrinking closes the oldest of all (a2)
  EXPECT_EQ(pool.size(), 3u);
  EXPECT_EQ(closes(m, pool_close_reason::pool_limit), 1);
  const upstream_key c{asio::ip::make_address("127.0.0.1"), 80, "c.example", std::nullopt};
  put(c, "c1");  // the pool is full: the oldest of all (a3) goes
  EXPECT_EQ(closes(m, pool_close_reason::pool_limit), 2);
  EXPECT_FALSE(pool.take(a, true).has_value()) << "both a.example connections were closed";
  auto got = pool.take(b, true);
  ASSERT_TRUE(got.has_value());
  EXPECT_EQ(got->egress_addr, "b3") << "newest first";
  EXPECT_EQ(closes(m, pool_close_reason::stale), 0);
}

}  // namespace
}  // namespace egressd::proxy
