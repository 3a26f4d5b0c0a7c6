#pragma once
#include <chrono>
// Workers, listeners, drain and reload. Each worker is a thread with its own io_context and its
// own SO_REUSEPORT acceptor per listener, so the kernel spreads connections and a connection
// lives on one thread for life.
#include <atomic>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "egressd/config/config.hpp"
#include "egressd/proxy/access_log.hpp"
#include "egressd/proxy/runtime.hpp"
#include "egressd/proxy/status.hpp"

namespace egressd::server {

class server {
 public:
  // stats: the metric set sessions count into (may be null).
  server(std::shared_ptr<const proxy::runtime> rt, proxy::access_log& log,
         metrics::stats* stats = nullptr);
  ~server();
  server(const server&) = delete;
  server& operator=(const server&) = delete;

  // Binds every listener on every worker. Returns an error message, empty on success.
  std::string bind();
  // Another of our own endpoints (the admin listener) that must never be a destination. Call
  // before start().
  void add_self(const boost::asio::ip::tcp::endpoint& ep);
  // Starts the worker threads.
  void start();
  // Replaces the runtime snapshot on every worker (listener changes need a restart).
  void update(std::shared_ptr<const proxy::runtime> rt);
  // Drain step 1: new requests get Connection: close, idle keep-alive connections close.
  void begin_drain();
  // Drain step 2: closes the listeners.
  void close_listeners();
  std::size_t active_connections() const noexcept;
  // Every open connection, asked of each worker on its own thread; waits at most timeout (a
  // busy worker's connections are then missing). Oldest first.
  std::vector<proxy::connection_status> snapshot(std::chrono::milliseconds timeout);
  // True from begin_drain() on; /readyz reads it.
  std::atomic<bool>& draining_flag() noexcept { return shared_.draining; }
  // Stops the workers and joins them (connections still open are dropped).
  void stop();

  // The bound proxy endpoints (with real ports when the config said port 0).
  const std::vector<boost::asio::ip::tcp::endpoint>& endpoints() const noexcept { return bound_; }

 private:
  struct worker;
  void schedule_sweep(worker& w);
  std::shared_ptr<const proxy::runtime> rt_;
  proxy::shared_state shared_;
  std::vector<std::unique_ptr<worker>> workers_;
  std::vector<boost::asio::ip::tcp::endpoint> bound_;
  bool stopped_ = false;
};

}  // namespace egressd::server
