#include "egressd/net/resolver.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/error.hpp>
#include <boost/asio/use_awaitable.hpp>

#include "egressd/acl/cidr.hpp"

namespace egressd::net {

namespace asio = boost::asio;

asio::awaitable<resolve_outcome> resolve(asio::ip::tcp::resolver& r, const std::string& host) {
  resolve_outcome out;
  // No AI_ADDRCONFIG: glibc ignores loopback when deciding whether a family is configured, which
  // breaks names that resolve to loopback on hosts (or namespaces) with only lo. The destination
  // policy, not the resolver, decides what is reachable.
  auto [ec, results] = co_await r.async_resolve(host, "", asio::ip::resolver_base::flags(0),
                                                asio::as_tuple(asio::use_awaitable));
  if (ec == asio::error::operation_aborted) {
    out.err = proxy_error::dns_timeout;
    out.detail = "lookup cancelled";
    co_return out;
  }
  if (ec) {
    out.err = proxy_error::dns_error;
    out.detail = ec.message();
    co_return out;
  }
  for (const auto& entry : results) {
    auto a = acl::unmap(entry.endpoint().address());
    bool seen = false;
    for (const auto& b : out.addresses) seen = seen || b == a;
    if (!seen) out.addresses.push_back(a);
  }
  if (out.addresses.empty()) {
    out.err = proxy_error::dns_error;
    out.detail = "no address";
  }
  co_return out;
}

}  // namespace egressd::net
