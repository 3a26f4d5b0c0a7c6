// Command line, signals and wiring; nothing else (STYLE.md).
#include <openssl/opensslv.h>
#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/version.hpp>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <functional>
#include <iostream>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "egressd/admin/admin_server.hpp"
#include "egressd/admin/probe.hpp"
#include "egressd/admin/status_page.hpp"
#include "egressd/config/config.hpp"
#include "egressd/config/file_watch.hpp"
#include "egressd/metrics/stats.hpp"
#include "egressd/net/socket_util.hpp"
#include "egressd/net/tls.hpp"
#include "egressd/proxy/access_log.hpp"
#include "egressd/proxy/runtime.hpp"
#include "egressd/server/server.hpp"

namespace {

namespace asio = boost::asio;
using namespace egressd;

constexpr const char* usage =
    "usage: egressd [--config FILE] [--check-config] [--version]\n"
    "       egressd probe [URL]   exit 0 when URL answers 200 (default: /readyz on\n"
    "                             admin.health_address, else on the admin listener, read from\n"
    "                             $EGRESSD_CONFIG and the environment)\n"
    "  --config FILE    YAML config (default: $EGRESSD_CONFIG, else the embedded defaults)\n"
    "  --check-config   validate, print the effective config, exit 0 (2 on errors)\n"
    "  --version        print version and build information\n"
    "Environment overrides: see README.md (EGRESSD_LISTEN, EGRESSD_ALLOW_SOURCES, ...)\n";

void print_version() {
  std::printf("egressd %s\n", EGRESSD_VERSION);
  std::printf("built %s %s with g++ %d.%d.%d, Boost %d.%d, %s\n", __DATE__, __TIME__, __GNUC__,
              __GNUC_MINOR__, __GNUC_PATCHLEVEL__, BOOST_VERSION / 100000,
              BOOST_VERSION / 100 % 1000, OPENSSL_VERSION_TEXT);
}

// One load of the config: the config and the TLS contexts of its listeners and admin, each
// certificate, key and CA file read once (the contexts are what start and reload serve).
struct loaded_config {
  config::config cfg;
  net::tls_contexts tls;
  // The watched files (source lists, client CRLs) as they were when this load read them.
  std::vector<config::file_watch::state> stamps;
};

// Defaults (or the file), then the environment. Errors are printed, one per line.
// The file (or the embedded defaults when path is empty) with the environment's overrides;
// every error is printed. Nullopt when there was any.
std::optional<config::config> read_config(const std::string& path) {
  config::load_result res;
  if (path.empty()) {
    res.cfg = config::defaults();
  } else {
    res = config::load_file(path);
  }
  std::vector<config::config_error> errors = res.errors;
  if (res.cfg) {
    auto env_errors = config::apply_env(*res.cfg, config::environment());
    errors.insert(errors.end(), env_errors.begin(), env_errors.end());
  }
  for (const auto& e : errors) std::fprintf(stderr, "%s\n", e.to_string().c_str());
  if (!errors.empty() || !res.cfg) return std::nullopt;
  return std::move(res.cfg);
}

std::string config_path_from_env() {
  const char* env = std::getenv("EGRESSD_CONFIG");
  return env != nullptr ? env : "";
}

std::optional<loaded_config> load(const std::string& path) {
  auto cfg = read_config(path);
  if (!cfg) return std::nullopt;
  // Stamped before the CRLs are read below: a CRL replaced while this load (or the start or
  // reload that follows) runs differs from its stamp, so the watch reloads again.
  auto stamps = config::file_watch::stamp(cfg->watched_files);
  // Certificates and keys are loaded here, once, and these contexts are the ones served: a key
  // that does not match its certificate, or a file that is not PEM, fails here (--check-config,
  // start and reload).
  std::vector<std::string> tls_errors;
  std::vector<std::string> tls_warnings;
  auto tls = net::load_tls_contexts(*cfg, &tls_errors, &tls_warnings);
  for (const auto& e : tls_errors) {
    std::fprintf(stderr, "%s: %s\n", path.empty() ? "env" : path.c_str(), e.c_str());
  }
  for (const auto& w : tls_warnings) {
    std::fprintf(stderr, "%s: warning: %s\n", path.empty() ? "env" : path.c_str(), w.c_str());
  }
  if (!tls_errors.empty()) return std::nullopt;
  return loaded_config{std::move(*cfg), std::move(tls), std::move(stamps)};
}

std::string utc_now() {
  const std::time_t t = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

void setup_logging(const std::string& level) {
  auto logger = spdlog::stderr_logger_mt("egressd");
  // Containers add their own timestamps, but a file on disk needs one; UTC, millisecond.
  logger->set_pattern("%Y-%m-%dT%H:%M:%S.%eZ %l %v", spdlog::pattern_time_type::utc);
  logger->set_level(spdlog::level::from_str(level));
  logger->flush_on(spdlog::level::trace);
  spdlog::set_default_logger(logger);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc >= 2 && std::string_view(argv[1]) == "probe") {
    // The container health check: no curl in the image, no logging set up. Without a URL, the
    // admin settings of $EGRESSD_CONFIG and the environment say where readiness is served.
    std::string url;
    if (argc >= 3) {
      url = argv[2];
    } else {
      auto cfg = read_config(config_path_from_env());
      if (!cfg) return 1;
      std::string why;
      url = admin::probe_url(cfg->admin, &why);
      if (url.empty()) {
        std::fprintf(stderr, "egressd probe: %s\n", why.c_str());
        return 1;
      }
    }
    auto r = admin::probe(url, std::chrono::seconds(3));
    std::fprintf(r.healthy ? stdout : stderr, "%s: %s\n", url.c_str(), r.message.c_str());
    return r.healthy ? 0 : 1;
  }
  std::string path;
  bool check = false;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--config" && i + 1 < argc) {
      path = argv[++i];
    } else if (a.rfind("--config=", 0) == 0) {
      path = a.substr(9);
    } else if (a == "--check-config") {
      check = true;
    } else if (a == "--version") {
      print_version();
      return 0;
    } else if (a == "--help" || a == "-h") {
      std::fputs(usage, stdout);
      return 0;
    } else {
      std::fprintf(stderr, "egressd: unknown argument '%s'\n%s", a.c_str(), usage);
      return 2;
    }
  }
  if (path.empty()) path = config_path_from_env();

  auto start = load(path);
  if (!start) return 2;
  const config::config& cfg = start->cfg;
  if (check) {
    std::fputs(config::to_yaml(cfg).c_str(), stdout);
    return 0;
  }

  setup_logging(cfg.log.level);
  std::signal(SIGPIPE, SIG_IGN);
  auto nofile = net::raise_nofile_limit();

  proxy::access_log access;
  if (auto err = access.open(cfg.log.access, cfg.log.format == config::log_format::squid
                                                 ? proxy::access_format::squid
                                                 : proxy::access_format::json);
      !err.empty()) {
    spdlog::critical("cannot open access log {}", err);
    return 1;
  }

  // Signal handlers go in before any listener exists: a SIGTERM that arrives as soon as the
  // first client is served must start a drain, not kill the process.
  asio::io_context io(1);
  asio::signal_set signals(io, SIGTERM, SIGINT, SIGHUP);
  // Watched files (source lists, client CRLs) start from their state when load() read them: a
  // file replaced since (while the listeners start) is a change.
  config::file_watch watch;
  watch.reset(cfg.watched_files, std::move(start->stamps));

  std::shared_ptr<const proxy::runtime> rt;
  try {
    rt = proxy::runtime::build(cfg, std::move(start->tls.listeners));
  } catch (const std::exception& e) {
    spdlog::critical("cannot start: {}", e.what());
    return 1;
  }
  auto report_only_names = [](const config::config& c) {
    std::vector<std::string> names;
    for (const auto& r : c.rules)
      if (r.report_only) names.push_back(r.name);
    return names;
  };
  auto identity_rule_names = [](const config::config& c) {
    std::vector<std::string> names;
    for (const auto& r : c.rules)
      if (!r.client_identities.empty()) names.push_back(r.name);
    return names;
  };
  std::vector<std::string> listener_names;
  for (const auto& l : cfg.listeners) listener_names.push_back(l.address.to_string());
  metrics::stats stats(listener_names);
  stats.config_loaded(true);
  stats.report_only_rules(report_only_names(cfg));
  stats.identity_rules(identity_rule_names(cfg));
  std::unique_ptr<server::server> server_ptr;
  try {
    server_ptr = std::make_unique<server::server>(rt, access, &stats);
  } catch (const std::exception& e) {
    // Start-up only (e.g. the DNS resolver cannot be initialised): fatal and clear.
    spdlog::critical("cannot start: {}", e.what());
    return 1;
  }
  auto& srv = *server_ptr;
  // The admin listener (metrics, health, readiness) runs on this thread's io_context. It binds
  // first, so its address is logged before the proxy's "listening" line that tools wait for.
  admin::admin_server admin(io, cfg.admin.address.host, cfg.admin.address.port, stats,
                            srv.draining_flag());
  if (start->tls.admin) admin.set_tls(std::move(start->tls.admin));
  // Certificate expiry and client CRL freshness by running listener (a reload cannot add or
  // move listeners), and admin.
  auto export_one = [&](const std::string& name, const net::tls_context* t) {
    if (t != nullptr) stats.tls_certificate_expiry(name, static_cast<double>(t->not_after()));
    stats.tls_client_crl_next_update(
        name, t != nullptr ? static_cast<double>(t->crl_next_update()) : 0.0);
  };
  auto export_cert_expiry = [&](const proxy::runtime& r) {
    for (std::size_t i = 0; i < listener_names.size() && i < r.listener_tls.size(); ++i) {
      export_one(listener_names[i], r.listener_tls[i].get());
    }
    export_one("admin", admin.tls().get());
  };
  export_cert_expiry(*rt);
  if (auto err = admin.bind(); !err.empty()) {
    spdlog::critical("admin listener: {}", err);
    return 1;
  }
  if (auto ctx = admin.tls()) {
    spdlog::info("admin listener is TLS only ({}), certificate {}",
                 ctx->verifies_clients() ? "client certificate required" : "no client certificate",
                 ctx->subject());
  }
  // The plain health port beside a TLS admin listener: /healthz and /readyz only.
  std::optional<admin::admin_server> health;
  if (cfg.admin.health_address) {
    health.emplace(io, cfg.admin.health_address->host, cfg.admin.health_address->port, stats,
                   srv.draining_flag());
    health->set_role(admin::admin_server::role::health);
    if (auto err = health->bind(); !err.empty()) {
      spdlog::critical("admin health listener: {}", err);
      return 1;
    }
  }
  if (auto err = srv.bind(); !err.empty()) {
    spdlog::critical("{}", err);
    return 1;
  }
  srv.add_self(admin.endpoint());  // metrics and health are no destination either
  if (health) srv.add_self(health->endpoint());
  // The status page: facts gathered on the admin thread (this one), connections asked of
  // each worker.
  const auto started = std::chrono::system_clock::now();
  const auto started_steady = std::chrono::steady_clock::now();
  std::string config_sha = admin::sha256_hex(config::to_yaml(cfg));
  std::string last_reload = "never";
  admin.set_status_page([&] {
    admin::status_facts f;
    f.version = EGRESSD_VERSION;
    f.started = started;
    f.uptime = std::chrono::steady_clock::now() - started_steady;
    f.config_source = path.empty() ? "<defaults>" : path;
    f.config_sha256 = config_sha;
    f.last_reload = last_reload;
    for (const auto& ep : srv.endpoints()) f.listeners.push_back(net::to_string(ep));
    f.admin = admin.url();
    if (health) f.admin += " (health checks: " + health->url() + ")";
    f.draining = srv.draining_flag().load(std::memory_order_relaxed);
    return admin::render_status(f, srv.snapshot(std::chrono::milliseconds(500)), stats.collect());
  });
  admin.start();
  if (health) health->start();
  srv.start();
  spdlog::info("egressd {} started: config {}, {} listener(s), open-file limit {}", EGRESSD_VERSION,
               path.empty() ? "<defaults>" : path, cfg.listeners.size(), nofile);

  asio::steady_timer drain_timer(io);
  bool draining = false;
  int exit_code = 0;
  auto drain_deadline = std::chrono::steady_clock::time_point::max();
  auto drain_config = cfg.drain_;

  std::function<void()> poll_drained = [&] {
    if (srv.active_connections() == 0 || std::chrono::steady_clock::now() >= drain_deadline) {
      if (srv.active_connections() > 0)
        spdlog::warn("drain timeout: dropping {} connection(s)", srv.active_connections());
      io.stop();
      return;
    }
    drain_timer.expires_after(std::chrono::milliseconds(100));
    drain_timer.async_wait([&](boost::system::error_code ec) {
      if (!ec) poll_drained();
    });
  };

  // Reload: the whole config is read again and swapped in at once (new connections see the new
  // rules, open ones keep theirs); a config with errors changes nothing. Listener, admin and
  // worker changes need a restart.
  auto reload = [&](const std::string& why) {
    spdlog::info("reloading config ({})", why);
    // load() reads every certificate, key and client CA again (a renewed certificate), the
    // admin listener's too, before anything changes: a file that went bad rejects the whole
    // reload. The new contexts take effect for new connections; open ones keep theirs.
    std::shared_ptr<const proxy::runtime> next_rt;
    std::shared_ptr<const net::tls_context> next_admin_tls;
    auto loaded = load(path);
    std::optional<config::config> next;
    if (loaded) {
      try {
        next_rt = proxy::runtime::build(loaded->cfg, std::move(loaded->tls.listeners));
        next_admin_tls = std::move(loaded->tls.admin);
        next = std::move(loaded->cfg);
      } catch (const std::exception& e) {
        spdlog::error("config reload: {}", e.what());
      }
    }
    if (next) {
      srv.update(next_rt);
      // The admin listener runs on this thread (io), like this handler; set_tls locks anyway.
      if (admin.tls() && next_admin_tls) {
        admin.set_tls(next_admin_tls);
      } else if (static_cast<bool>(admin.tls()) != static_cast<bool>(next_admin_tls)) {
        spdlog::warn("admin.tls {} in the config: turning admin TLS on or off needs a restart",
                     next_admin_tls ? "added" : "removed");
      }
      stats.identity_rules(identity_rule_names(*next));
      stats.report_only_rules(report_only_names(*next));
      export_cert_expiry(*next_rt);
      spdlog::set_level(spdlog::level::from_str(next->log.level));
      drain_config = next->drain_;
      watch.reset(next->watched_files, std::move(loaded->stamps));
      config_sha = admin::sha256_hex(config::to_yaml(*next));
      last_reload = "success at " + utc_now() + " (" + why + ")";
      stats.config_reload(metrics::reload_result::success);
      spdlog::info("config reloaded: {} rule(s), {} watched file(s)", next->rules.size(),
                   next->watched_files.size());
    } else {
      last_reload = "failure at " + utc_now() + " (" + why + "): the previous config stays";
      stats.config_reload(metrics::reload_result::failure);
      spdlog::error("config reload rejected; the previous config stays in force");
    }
  };

  // Source lists and client CRLs are polled once a second (see file_watch for why not inotify).
  asio::steady_timer watch_timer(io);
  std::function<void()> poll_files = [&] {
    watch_timer.expires_after(std::chrono::seconds(1));
    watch_timer.async_wait([&](boost::system::error_code ec) {
      if (ec) return;
      if (!draining && !watch.files().empty() && watch.poll()) {
        std::string what;
        for (const auto& f : watch.changed()) what += (what.empty() ? "" : ", ") + f;
        reload(what + " changed");
      }
      poll_files();
    });
  };
  poll_files();

  std::function<void()> wait_signal = [&] {
    signals.async_wait([&](boost::system::error_code ec, int sig) {
      if (ec) return;
      if (sig == SIGHUP) {
        // Log rotation sends SIGHUP after moving the file away: the access log is opened again
        // by its path whatever the config reload decides.
        if (auto err = access.reopen(); !err.empty()) {
          spdlog::error("cannot reopen the access log {}; still writing to the old file", err);
        }
        reload(path.empty() ? "SIGHUP; no config file, environment re-read" : "SIGHUP");
      } else if (draining) {
        spdlog::warn("second signal: exiting now");
        exit_code = 1;
        io.stop();
        return;
      } else {
        draining = true;
        spdlog::info("draining: closing listeners in {} ms, waiting at most {} ms",
                     drain_config.delay.count(), drain_config.timeout.count());
        srv.begin_drain();
        stats.set_draining(true);
        drain_timer.expires_after(drain_config.delay);
        drain_timer.async_wait([&](boost::system::error_code tec) {
          if (tec) return;
          srv.close_listeners();
          // In-flight work gets drain.timeout from here, after the listeners closed.
          drain_deadline = std::chrono::steady_clock::now() + drain_config.timeout;
          poll_drained();
        });
      }
      wait_signal();
    });
  };
  wait_signal();
  io.run();
  srv.stop();
  // Let the admin connections see their sockets close before the io_context goes away.
  admin.stop();
  if (health) health->stop();
  signals.cancel();
  drain_timer.cancel();
  watch_timer.cancel();
  io.restart();
  io.run_for(std::chrono::seconds(1));
  spdlog::info("egressd stopped");
  return exit_code;
}
