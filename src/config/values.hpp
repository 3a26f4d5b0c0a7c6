#pragma once
// Scalar value syntax shared by the YAML reader, the environment overrides and the emitter, so a
// value means the same thing wherever it is written. Each parser returns nullopt and sets *error
// to a message meant to follow "path: ". Range limits that depend on the field are not checked
// here but in validate.cpp, once for every source of values.
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "egressd/config/config.hpp"

namespace egressd::config::detail {

// Field limits, in the units of the config struct.
inline constexpr unsigned max_workers = 256;
inline constexpr duration max_duration{std::chrono::hours(24)};
inline constexpr std::size_t kib = 1024;
inline constexpr std::size_t mib = 1024 * 1024;

// Decimal digits only; values beyond max saturate to max + 1 so the caller's range check reports
// them instead of a wrapped-around number slipping into range.
std::optional<std::uint64_t> parse_uint(std::string_view text, std::string* error);

// "10s", "500ms", "5m", "1h": decimal digits and one unit. Saturates like parse_uint.
std::optional<duration> parse_duration(std::string_view text, std::string* error);
std::string format_duration(duration d);  // "10s", or "1500ms" when not whole seconds

// 65536, "65536B", "64KiB", "1MiB". Saturates like parse_uint.
std::optional<std::size_t> parse_size(std::string_view text, std::string* error);
std::string format_size(std::size_t bytes);  // YAML form: "1MiB", "64KiB", or "300"
std::string human_size(std::size_t bytes);   // for messages: "1 MiB", "64 KiB", "300 B"

// "0.0.0.0:3128", "[::]:3128". The host must be an address literal: a listener bound to a name
// would depend on DNS at startup. Port 0 is allowed (ephemeral, for tests).
std::optional<endpoint> parse_endpoint(std::string_view text, std::string* error);

std::optional<proxy_protocol_mode> parse_proxy_protocol(std::string_view text, std::string* error);
std::optional<xff_mode> parse_xff(std::string_view text, std::string* error);
std::optional<log_format> parse_log_format(std::string_view text, std::string* error);
bool parse_log_level(std::string_view text, std::string* error);
bool parse_access_log(std::string_view text, std::string* error);
bool parse_via_name(std::string_view text, std::string* error);
std::optional<acl::address> parse_bind_address(std::string_view text, std::string* error);
std::optional<acl::cidr> parse_cidr(std::string_view text, std::string* error);
std::optional<acl::port_range> parse_port_item(std::string_view text, std::string* error);

// An AWS VPC endpoint id as the NLB sends it in PROXY v2 TLV 0xEA: "vpce-" and 1-32 letters or
// digits, lower-cased.
std::optional<std::string> parse_vpce_id(std::string_view text, std::string* error);

// Lower-cases and drops one trailing dot, then checks "name" or "*.name" with LDH labels.
std::optional<std::string> parse_domain(std::string_view text, std::string* error);

// Empty string when path names a readable regular file; otherwise the reason.
std::string check_readable_file(const std::string& path);

std::string_view to_name(proxy_protocol_mode m);
std::string_view to_name(xff_mode m);
std::string_view to_name(log_format f);

// Levenshtein distance, for "did you mean" hints on unknown keys and variables.
std::size_t edit_distance(std::string_view a, std::string_view b);

}  // namespace egressd::config::detail
