// EGRESSD_* environment overrides (SPEC section 2), applied over the file for containers and
// tests. Each malformed variable is one error named "env:EGRESSD_NAME"; the cross-field checks
// then run on the result and are blamed on the variable that set the field involved.
#include <unistd.h>

#include <algorithm>
#include <array>
#include <climits>
#include <functional>

#include "egressd/config/config.hpp"
#include "validate.hpp"
#include "values.hpp"

extern char** environ;

namespace egressd::config {
namespace {

// Kubernetes injects docker-link style variables for every Service in the namespace, named after
// it: a Service called "egressd" yields EGRESSD_SERVICE_HOST, EGRESSD_SERVICE_PORT[_NAME],
// EGRESSD_PORT and EGRESSD_PORT_<port>_<TCP|UDP|SCTP>[_PROTO|_PORT|_ADDR]. They are not ours and
// must not stop the start.
bool is_service_link(std::string_view name) {
  constexpr std::string_view prefix = "EGRESSD_";
  if (!name.starts_with(prefix)) return false;
  name.remove_prefix(prefix.size());
  if (name == "SERVICE_HOST" || name == "SERVICE_PORT" || name == "PORT") return true;
  if (name.starts_with("SERVICE_PORT_")) return true;
  if (!name.starts_with("PORT_")) return false;
  name.remove_prefix(5);
  std::size_t digits = 0;
  while (digits < name.size() && name[digits] >= '0' && name[digits] <= '9') ++digits;
  if (digits == 0 || digits > 5) return false;
  name.remove_prefix(digits);
  for (std::string_view proto : {"_TCP", "_UDP", "_SCTP"}) {
    if (name.starts_with(proto)) {
      name.remove_prefix(proto.size());
      return name.empty() || name == "_PROTO" || name == "_PORT" || name == "_ADDR";
    }
  }
  return false;
}

constexpr std::string_view prefix = "EGRESSD_";

// Read by main (or by the test harness) rather than here, but still legitimate names.
constexpr std::array<std::string_view, 2> passthrough = {"EGRESSD_CONFIG", "EGRESSD_BIN"};

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

// Comma list with spaces allowed around items; an empty item is reported, not skipped, because
// "a,,b" is usually a variable that expanded to nothing.
std::vector<std::string_view> split(std::string_view text) {
  std::vector<std::string_view> out;
  while (true) {
    const auto comma = text.find(',');
    out.push_back(trim(text.substr(0, comma)));
    if (comma == std::string_view::npos) break;
    text.remove_prefix(comma + 1);
  }
  return out;
}

std::string at(std::string_view base, std::size_t i, std::string_view field) {
  return std::string(base) + "[" + std::to_string(i) + "]." + std::string(field);
}

class applier {
 public:
  explicit applier(config& cfg) : cfg_(cfg) {}

  void fail(std::string_view var, std::string path, std::string message) {
    errors_.push_back({"env:" + std::string(var), 0, std::move(path), std::move(message)});
  }

  void touched(std::string path, std::string_view var) {
    touched_.emplace_back(std::move(path), std::string(var));
  }

  // Every listener's copy of a field, so a later cross-field error on listeners[1] names the
  // variable that set it.
  void touched_listeners(std::string_view field, std::string_view var) {
    for (std::size_t i = 0; i < cfg_.listeners.size(); ++i) touched(at("listeners", i, field), var);
  }

  std::optional<acl::cidr_set> cidrs(std::string_view var, const std::string& path,
                                     std::string_view value) {
    acl::cidr_set out;
    bool ok = true;
    for (auto item : split(value)) {
      std::string error;
      if (item.empty()) {
        fail(var, path, "empty item in the comma list");
        ok = false;
      } else if (auto c = detail::parse_cidr(item, &error)) {
        out.add(*c);
      } else {
        fail(var, path, std::move(error));
        ok = false;
      }
    }
    if (!ok) return std::nullopt;
    return out;
  }

  std::optional<acl::port_set> ports(std::string_view var, const std::string& path,
                                     std::string_view value) {
    std::string error;
    auto set = acl::port_set::parse_list(value, &error);
    if (!set) fail(var, path, "invalid port list '" + std::string(value) + "': " + error);
    return set;
  }

  void apply(const std::map<std::string, std::string>& env);
  void apply_tls(const std::map<std::string, std::string>& env);
  std::vector<config_error> finish();

 private:
  config& cfg_;
  std::vector<config_error> errors_;
  std::vector<std::pair<std::string, std::string>> touched_;  // config path, variable
};

struct variable {
  std::string_view name;
  std::string_view path;  // the config path it overrides, for error messages
  std::function<void(applier&, config&, std::string_view name, const std::string& path,
                     std::string_view value)>
      apply;  // nullptr: handled by applier::apply_tls
};

// In application order: the listener list is replaced before the per-listener settings apply.
const std::vector<variable>& variables() {
  static const std::vector<variable> vars = {
      {"EGRESSD_LISTEN", "listeners",
       [](applier& a, config& cfg, std::string_view name, const std::string& path,
          std::string_view value) {
         // Only the addresses change: every listener keeps the other settings (PROXY
         // protocol, trusted proxies, TLS) of the config's first listener, so moving a
         // container's port cannot silently turn PROXY protocol off.
         const listener model = cfg.listeners.empty() ? listener{} : cfg.listeners.front();
         std::vector<listener> out;
         bool ok = true;
         for (auto item : split(value)) {
           std::string error;
           if (item.empty()) {
             a.fail(name, path, "empty item in the comma list");
             ok = false;
           } else if (auto e = detail::parse_endpoint(item, &error)) {
             listener l = model;
             l.address = *e;
             out.push_back(std::move(l));
           } else {
             a.fail(name, path, std::move(error));
             ok = false;
           }
         }
         if (!ok) return;
         cfg.listeners = std::move(out);
         a.touched(path, name);
       }},
      {"EGRESSD_PROXY_PROTOCOL", "listeners[*].proxy_protocol",
       [](applier& a, config& cfg, std::string_view name, const std::string& path,
          std::string_view value) {
         std::string error;
         auto mode = detail::parse_proxy_protocol(value, &error);
         if (!mode) return a.fail(name, path, std::move(error));
         for (auto& l : cfg.listeners) l.proxy_protocol = *mode;
         a.touched_listeners("proxy_protocol", name);
       }},
      {"EGRESSD_TRUSTED_PROXIES", "listeners[*].trusted_proxies",
       [](applier& a, config& cfg, std::string_view name, const std::string& path,
          std::string_view value) {
         auto set = a.cidrs(name, path, value);
         if (!set) return;
         for (auto& l : cfg.listeners) l.trusted_proxies = *set;
         a.touched_listeners("trusted_proxies", name);
       }},
      {"EGRESSD_TLS_CERT", "listeners[*].tls.cert", nullptr},
      {"EGRESSD_TLS_KEY", "listeners[*].tls.key", nullptr},
      {"EGRESSD_TLS_CLIENT_CA", "listeners[*].tls.client_ca", nullptr},
      {"EGRESSD_TLS_CLIENT_CRL", "listeners[*].tls.client_crl", nullptr},
      {"EGRESSD_ADMIN_LISTEN", "admin.address",
       [](applier& a, config& cfg, std::string_view name, const std::string& path,
          std::string_view value) {
         std::string error;
         auto e = detail::parse_endpoint(value, &error);
         if (!e) return a.fail(name, path, std::move(error));
         cfg.admin.address = *e;
         a.touched(path, name);
       }},
      {"EGRESSD_WORKERS", "workers",
       [](applier& a, config& cfg, std::string_view name, const std::string& path,
          std::string_view value) {
         std::string error;
         auto n = detail::parse_uint(value, &error);
         if (!n) return a.fail(name, path, std::move(error));
         cfg.workers = static_cast<unsigned>(std::min<std::uint64_t>(*n, UINT_MAX));
         a.touched(path, name);
       }},
      {"EGRESSD_ALLOW_SOURCES", "gates.sources",
       [](applier& a, config& cfg, std::string_view name, const std::string& path,
          std::string_view value) {
         if (auto set = a.cidrs(name, path, value)) {
           cfg.gate.sources = std::move(*set);
           a.touched(path, name);
         }
       }},
      {"EGRESSD_CONNECT_PORTS", "gates.connect_ports",
       [](applier& a, config& cfg, std::string_view name, const std::string& path,
          std::string_view value) {
         if (auto set = a.ports(name, path, value)) {
           cfg.gate.connect_ports = std::move(*set);
           a.touched(path, name);
         }
       }},
      {"EGRESSD_HTTP_PORTS", "gates.http_ports",
       [](applier& a, config& cfg, std::string_view name, const std::string& path,
          std::string_view value) {
         if (auto set = a.ports(name, path, value)) {
           cfg.gate.http_ports = std::move(*set);
           a.touched(path, name);
         }
       }},
      {"EGRESSD_ALLOW_DESTINATIONS", "destinations.allow",
       [](applier& a, config& cfg, std::string_view name, const std::string& path,
          std::string_view value) {
         if (auto set = a.cidrs(name, path, value)) {
           cfg.dest.allow = std::move(*set);
           a.touched(path, name);
         }
       }},
      {"EGRESSD_EGRESS_BIND", "egress.bind",
       [](applier& a, config& cfg, std::string_view name, const std::string& path,
          std::string_view value) {
         if (value.empty()) {
           cfg.egress_bind.reset();
           return;
         }
         std::string error;
         auto addr = detail::parse_bind_address(value, &error);
         if (!addr) return a.fail(name, path, error + " (empty for the kernel's choice)");
         cfg.egress_bind = addr;
         a.touched(path, name);
       }},
      {"EGRESSD_LOG_LEVEL", "log.level",
       [](applier& a, config& cfg, std::string_view name, const std::string& path,
          std::string_view value) {
         std::string error;
         if (!detail::parse_log_level(value, &error)) return a.fail(name, path, std::move(error));
         cfg.log.level = std::string(value);
       }},
      {"EGRESSD_LOG_FORMAT", "log.format",
       [](applier& a, config& cfg, std::string_view name, const std::string& path,
          std::string_view value) {
         std::string error;
         auto f = detail::parse_log_format(value, &error);
         if (!f) return a.fail(name, path, std::move(error));
         cfg.log.format = *f;
       }},
      {"EGRESSD_ACCESS_LOG", "log.access",
       [](applier& a, config& cfg, std::string_view name, const std::string& path,
          std::string_view value) {
         std::string error;
         if (!detail::parse_access_log(value, &error)) return a.fail(name, path, std::move(error));
         cfg.log.access = std::string(value);
       }},
  };
  return vars;
}

void applier::apply(const std::map<std::string, std::string>& env) {
  for (const auto& v : variables()) {
    const std::string path(v.path);
    if (!v.apply) {
      // The TLS variables only make sense together; they apply once, at the first of them.
      if (v.name == "EGRESSD_TLS_CERT") apply_tls(env);
      continue;
    }
    auto it = env.find(std::string(v.name));
    if (it == env.end()) continue;
    // The one variable where empty has a meaning ("kernel's choice"). Everywhere else an empty
    // value is far more likely an unset shell variable than an intent.
    if (it->second.empty() && v.name != "EGRESSD_EGRESS_BIND") {
      fail(v.name, path, "empty value");
      continue;
    }
    v.apply(*this, cfg_, v.name, path, it->second);
  }

  // Not a structured binding: clang before 16 cannot capture one in the lambda below (P1091R3).
  for (const auto& entry : env) {
    const std::string& name = entry.first;
    if (!name.starts_with(prefix)) continue;
    if (std::find(passthrough.begin(), passthrough.end(), name) != passthrough.end()) continue;
    if (is_service_link(name)) continue;
    const auto& vars = variables();
    if (std::any_of(vars.begin(), vars.end(), [&](const variable& v) { return v.name == name; }))
      continue;
    std::string_view best;
    std::size_t best_distance = 4;  // further than three edits is not a typo worth naming
    std::string known;
    for (const auto& v : vars) {
      known += (known.empty() ? "" : ", ") + std::string(v.name);
      const auto d = detail::edit_distance(name, v.name);
      if (d < best_distance) {
        best = v.name;
        best_distance = d;
      }
    }
    fail(name, "",
         best.empty() ? "unknown variable; known: " + known
                      : "unknown variable; did you mean " + std::string(best) + "?");
  }
}

void applier::apply_tls(const std::map<std::string, std::string>& env) {
  auto get = [&](std::string_view name) -> const std::string* {
    auto it = env.find(std::string(name));
    return it == env.end() ? nullptr : &it->second;
  };
  const std::string* cert = get("EGRESSD_TLS_CERT");
  const std::string* key = get("EGRESSD_TLS_KEY");
  const std::string* ca = get("EGRESSD_TLS_CLIENT_CA");
  const std::string* crl = get("EGRESSD_TLS_CLIENT_CRL");
  auto readable = [&](std::string_view name, const std::string& path, const std::string* file) {
    if (file == nullptr) return true;
    std::string why = file->empty() ? "empty value" : detail::check_readable_file(*file);
    if (why.empty()) return true;
    fail(name, path, std::move(why));
    return false;
  };
  const bool cert_ok = readable("EGRESSD_TLS_CERT", "listeners[*].tls.cert", cert);
  const bool key_ok = readable("EGRESSD_TLS_KEY", "listeners[*].tls.key", key);
  const bool ca_ok = readable("EGRESSD_TLS_CLIENT_CA", "listeners[*].tls.client_ca", ca);
  const bool crl_ok = readable("EGRESSD_TLS_CLIENT_CRL", "listeners[*].tls.client_crl", crl);

  if ((cert == nullptr) != (key == nullptr)) {
    if (cert != nullptr) {
      fail("EGRESSD_TLS_CERT", "listeners[*].tls.cert",
           "set without EGRESSD_TLS_KEY; set both or neither");
    } else {
      fail("EGRESSD_TLS_KEY", "listeners[*].tls.key",
           "set without EGRESSD_TLS_CERT; set both or neither");
    }
  } else if (cert != nullptr && cert_ok && key_ok) {
    for (auto& l : cfg_.listeners) {
      if (!l.tls) l.tls = tls_settings{};
      l.tls->cert_file = *cert;
      l.tls->key_file = *key;
    }
    touched_listeners("tls.cert", "EGRESSD_TLS_CERT");
    touched_listeners("tls.key", "EGRESSD_TLS_KEY");
  }

  // A client CA (or CRL) on a plain-TCP listener would do nothing; refusing it keeps an operator
  // from believing client certificates are enforced when they are not.
  auto every_listener_tls = [&](std::string_view name, const std::string& path) {
    for (std::size_t i = 0; i < cfg_.listeners.size(); ++i) {
      if (!cfg_.listeners[i].tls) {
        fail(name, path,
             "needs EGRESSD_TLS_CERT and EGRESSD_TLS_KEY (listeners[" + std::to_string(i) +
                 "] has no tls)");
        return false;
      }
    }
    return true;
  };
  if (ca != nullptr && ca_ok &&
      every_listener_tls("EGRESSD_TLS_CLIENT_CA", "listeners[*].tls.client_ca")) {
    for (auto& l : cfg_.listeners) l.tls->client_ca_file = *ca;
    touched_listeners("tls.client_ca", "EGRESSD_TLS_CLIENT_CA");
  }
  if (crl != nullptr && crl_ok &&
      every_listener_tls("EGRESSD_TLS_CLIENT_CRL", "listeners[*].tls.client_crl")) {
    for (auto& l : cfg_.listeners) l.tls->client_crl_file = *crl;
    touched_listeners("tls.client_crl", "EGRESSD_TLS_CLIENT_CRL");
    // Watched like one from the file (a CRL the file named and no listener uses any more stays
    // watched: a change to it reloads for nothing, harmlessly).
    auto& w = cfg_.watched_files;
    if (std::find(w.begin(), w.end(), *crl) == w.end()) w.push_back(*crl);
  }
}

std::vector<config_error> applier::finish() {
  for (const auto& is : detail::validate(cfg_)) {
    // Blame the variable that set the most specific of the fields involved: with
    // EGRESSD_LISTEN and EGRESSD_PROXY_PROTOCOL both set, a missing trusted_proxies is about the
    // second, not the first.
    const std::string* var = nullptr;
    std::size_t best = 0;
    std::vector<std::string> involved = is.related;
    involved.insert(involved.begin(), is.path);
    for (const auto& p : involved) {
      for (const auto& [path, name] : touched_) {
        if (detail::path_within(p, path) && (var == nullptr || path.size() > best)) {
          var = &name;
          best = path.size();
        }
      }
    }
    if (var != nullptr) {
      errors_.push_back({"env:" + *var, 0, is.path, is.message});
    } else {
      errors_.push_back({cfg_.source, 0, is.path, is.message});
    }
  }
  return std::move(errors_);
}

}  // namespace

std::vector<config_error> apply_env(config& cfg, const std::map<std::string, std::string>& env) {
  try {
    applier a(cfg);
    a.apply(env);
    return a.finish();
  } catch (const std::exception& e) {
    return {{"env", 0, "", std::string("cannot apply the environment: ") + e.what()}};
  }
}

std::map<std::string, std::string> environment() {
  std::map<std::string, std::string> out;
  for (char** e = environ; e != nullptr && *e != nullptr; ++e) {
    std::string_view entry(*e);
    if (!entry.starts_with(prefix)) continue;
    const auto eq = entry.find('=');
    if (eq == std::string_view::npos) continue;
    out.emplace(entry.substr(0, eq), entry.substr(eq + 1));
  }
  return out;
}

}  // namespace egressd::config
