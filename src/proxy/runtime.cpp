#include "egressd/proxy/runtime.hpp"

#include "egressd/acl/cidr.hpp"

#include <stdexcept>
#include <string>
#include <utility>

namespace egressd::proxy {

std::shared_ptr<const runtime> runtime::build(
    config::config cfg, std::vector<std::shared_ptr<const net::tls_context>> listener_tls) {
  if (listener_tls.size() != cfg.listeners.size()) {
    throw std::invalid_argument(std::to_string(listener_tls.size()) + " TLS context(s) for " +
                                std::to_string(cfg.listeners.size()) + " listener(s)");
  }
  for (std::size_t i = 0; i < cfg.listeners.size(); ++i) {
    if (cfg.listeners[i].tls.has_value() != static_cast<bool>(listener_tls[i])) {
      throw std::invalid_argument(
          "listeners[" + std::to_string(i) + "].tls: " +
          (listener_tls[i] ? "a TLS context for a plain listener" : "no TLS context loaded"));
    }
  }
  auto rt = std::make_shared<runtime>();
  rt->rules = acl::rule_set(cfg.rules);
  rt->destinations = acl::destination_policy(cfg.dest.deny_special, cfg.dest.allow, cfg.dest.deny);
  rt->limits.request_line = cfg.limit.request_line;
  rt->limits.header_block = cfg.limit.header_block;
  rt->limits.header_fields = cfg.limit.header_fields;
  switch (cfg.hdr.x_forwarded_for) {
    case config::xff_mode::append:
      rt->xff = http::xff_policy::append;
      break;
    case config::xff_mode::replace:
      rt->xff = http::xff_policy::replace;
      break;
    case config::xff_mode::remove:
      rt->xff = http::xff_policy::remove;
      break;
    case config::xff_mode::off:
      rt->xff = http::xff_policy::off;
      break;
  }
  rt->listener_tls = std::move(listener_tls);
  rt->cfg = std::move(cfg);
  return rt;
}

bool shared_state::is_self(const boost::asio::ip::address& a, std::uint16_t port) const noexcept {
  auto u = acl::unmap(a);
  for (const auto& ep : self)
    if (ep.port() == port && acl::unmap(ep.address()) == u) return true;
  return false;
}

}  // namespace egressd::proxy
