#pragma once
// What one direction of a relay did: bytes moved and how it ended.
#include <boost/system/error_code.hpp>
#include <cstdint>

namespace egressd::relay {

struct pump_state {
  std::uint64_t bytes = 0;       // bytes written to `to`
  bool eof = false;              // `from` ended cleanly and `to` was shut down for sending
  bool failed = false;           // a read or write error ended the pump (both sockets closed)
  boost::system::error_code ec;  // the error, when failed
  bool fell_back = false;        // (splice) continued with a copy: no pipe or no splice
  bool write_failed = false;     // (splice) the error was on the `to` side
};

}  // namespace egressd::relay
