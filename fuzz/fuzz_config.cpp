// libFuzzer target: the config loader (src/config/: load_yaml, apply_env, to_yaml, validation)
// over the ACL value types it builds (src/acl/). Input format: YAML text, optionally followed by
// a line "#@env" and then EGRESSD_NAME=value lines (the YAML part stays valid YAML, since "#@env"
// is a comment; a value may contain '=' but not a newline). Checked on every input:
//  - load_yaml never throws, and returns a config exactly when it returns no error; every error
//    names the file (or the source-list file it came from) and says something;
//  - a loaded config is valid: apply_env with no variables finds nothing to refuse and changes
//    nothing (the file's validation and the environment's are the same validation);
//  - round trip: to_yaml of a valid config loads back without an error to a config equal in
//    every field (compared field by field, not through to_yaml), and printing that again gives
//    the same text -- a config that --check-config prints is the config that runs;
//  - apply_env over it: never throws, every error names a variable or the config's source, and
//    when it accepts the variables the result is valid, round-trips, and applying the same
//    variables again changes nothing.
//
// Hermetic: the loader checks and reads files named in the config (tls.cert, sources_file, ...).
// This binary replaces access(2) while a config is loaded so that only files under
// /tmp/egressd-fuzz-config/ (created at start-up, see kFixtures) are readable; anything else is
// ENOENT. The fuzzer cannot wander into /proc or /dev, and a result never depends on the machine.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <map>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "egressd/config/config.hpp"
#include "fuzz_check.hpp"
#include "support/config_fields.hpp"

namespace cfgns = egressd::config;

namespace {

constexpr std::string_view kFixtureDir = "/tmp/egressd-fuzz-config/";

// The files seeds may name: source lists (good, empty, with an error) and TLS placeholders.
const std::vector<std::pair<std::string_view, std::string_view>> kFixtures = {
    {"sources.txt",
     "# office and VPN\n203.0.113.0/24\n198.51.100.7  # one host\n\n2001:db8::/32\n"},
    {"more-sources.txt", "10.0.0.0/8\r\n192.168.0.0/16\n10.0.0.0/8\n"},
    {"empty.txt", ""},
    {"bad-sources.txt", "10.0.0.0/8\n10.0.0.1/8\nnot-an-address\n"},
    {"cert.pem", "-----BEGIN CERTIFICATE-----\nplaceholder\n-----END CERTIFICATE-----\n"},
    {"key.pem", "-----BEGIN PRIVATE KEY-----\nplaceholder\n-----END PRIVATE KEY-----\n"},
    {"ca.pem", "-----BEGIN CERTIFICATE-----\nplaceholder\n-----END CERTIFICATE-----\n"},
};

bool sandbox = false;

void write_fixtures() {
  ::mkdir(std::string(kFixtureDir).c_str(), 0755);
  for (const auto& [name, text] : kFixtures) {
    // Written to a private name and renamed: parallel fuzzer processes never see half a file.
    const std::string path = std::string(kFixtureDir) + std::string(name);
    const std::string tmp = path + ".tmp." + std::to_string(::getpid());
    if (std::FILE* f = std::fopen(tmp.c_str(), "wb")) {
      std::fwrite(text.data(), 1, text.size(), f);
      std::fclose(f);
      std::rename(tmp.c_str(), path.c_str());
    }
  }
}

// Every field, one "name=value" line each: the fields tests/unit/config_test.cpp compares
// (tests/support/config_fields.hpp), plus watched_files, which the unit tests leave out because
// a hand-built config has none; here every config compared came from load_yaml (and apply_env,
// which does not touch it), so the files read must be the same too.
std::string describe(const cfgns::config& c) {
  std::string out;
  for (const auto& [name, value] : egressd::test_support::config_fields(c)) {
    out += name;
    out += '=';
    out += value;
    out += '\n';
  }
  out += "watched_files=" + egressd::test_support::list(c.watched_files) + "\n";
  return out;
}

std::string without_first_line(const std::string& s) {
  const auto nl = s.find('\n');
  return nl == std::string::npos ? std::string() : s.substr(nl);
}

// A valid config printed and read back is the same config, and prints the same.
void check_round_trip(const cfgns::config& c) {
  const std::string text = cfgns::to_yaml(c);
  const cfgns::load_result back = cfgns::load_yaml(text, "roundtrip.yaml");
  if (!back.errors.empty()) {
    std::fprintf(stderr, "printed config:\n%s\nreloading it failed:\n", text.c_str());
    for (const auto& e : back.errors) std::fprintf(stderr, "  %s\n", e.to_string().c_str());
  }
  FUZZ_CHECK(back.errors.empty() && back.cfg.has_value());
  FUZZ_CHECK(back.cfg->source == "roundtrip.yaml");
  const std::string want = describe(c);
  const std::string got = describe(*back.cfg);
  if (want != got)
    std::fprintf(stderr, "printed config:\n%s\nwant:\n%s\ngot:\n%s\n", text.c_str(), want.c_str(),
                 got.c_str());
  FUZZ_CHECK(want == got);
  FUZZ_CHECK(without_first_line(cfgns::to_yaml(*back.cfg)) == without_first_line(text));
}

void check_errors(const std::vector<cfgns::config_error>& errors, std::string_view file) {
  for (const auto& e : errors) {
    FUZZ_CHECK(!e.message.empty());
    FUZZ_CHECK(e.line >= 0);
    // The config file, or a source-list file it named (only fixtures are readable here).
    FUZZ_CHECK(e.file == file || std::string_view(e.file).starts_with(kFixtureDir));
    FUZZ_CHECK(!e.to_string().empty());
  }
}

}  // namespace

// Only fixture files exist while the sandbox is on (see the file comment).
extern "C" int access(const char* path, int mode) {
  if (sandbox) {
    const std::string_view p(path);
    if (!p.starts_with(kFixtureDir) || p.find("/..") != std::string_view::npos) {
      errno = ENOENT;
      return -1;
    }
  }
  return ::faccessat(AT_FDCWD, path, mode, 0);
}

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  write_fixtures();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view in(reinterpret_cast<const char*>(data), size);
  std::string_view yaml = in;
  std::map<std::string, std::string> env;
  bool has_env = false;
  constexpr std::string_view marker = "#@env\n";
  std::size_t at = in.starts_with(marker) ? 0 : in.find("\n#@env\n");
  if (at != std::string_view::npos) {
    has_env = true;
    yaml = in.substr(0, at);
    std::string_view rest = in.substr(at + (at == 0 ? marker.size() : marker.size() + 1));
    while (!rest.empty()) {
      const auto nl = rest.find('\n');
      const std::string_view line = rest.substr(0, nl);
      const auto eq = line.find('=');
      if (eq != std::string_view::npos)
        env.insert_or_assign(std::string(line.substr(0, eq)), std::string(line.substr(eq + 1)));
      if (nl == std::string_view::npos) break;
      rest.remove_prefix(nl + 1);
    }
  }

  sandbox = true;
  const cfgns::load_result res = cfgns::load_yaml(std::string(yaml), "fuzz.yaml");
  FUZZ_CHECK(res.cfg.has_value() == res.errors.empty());
  check_errors(res.errors, "fuzz.yaml");

  if (res.cfg) {
    FUZZ_CHECK(res.cfg->source == "fuzz.yaml");
    // Valid by the environment's validation too, and untouched by an empty environment.
    cfgns::config same = *res.cfg;
    FUZZ_CHECK(cfgns::apply_env(same, {}).empty());
    FUZZ_CHECK(describe(same) == describe(*res.cfg));
    check_round_trip(*res.cfg);
  }

  if (has_env) {
    cfgns::config c = res.cfg ? *res.cfg : cfgns::defaults();
    const auto errors = cfgns::apply_env(c, env);
    for (const auto& e : errors) {
      FUZZ_CHECK(!e.message.empty());
      FUZZ_CHECK(e.file.starts_with("env") || e.file == c.source);
    }
    if (errors.empty()) {
      check_round_trip(c);
      cfgns::config twice = c;
      FUZZ_CHECK(cfgns::apply_env(twice, env).empty());
      FUZZ_CHECK(describe(twice) == describe(c));
    }
  }
  sandbox = false;
  return 0;
}
