#pragma once
// Shared by the fuzz targets: an invariant check that names what broke. libFuzzer treats the
// abort as a crash, saves the input as crash-<sha1> and exits non-zero, which fails
// scripts/fuzz.sh.
#include <cstdio>
#include <cstdlib>
#include <string_view>

#define FUZZ_CHECK(cond)                                                                  \
  do {                                                                                    \
    if (!(cond)) {                                                                        \
      std::fprintf(stderr, "\n== invariant violated: %s\n   at %s:%d\n", #cond, __FILE__, \
                   __LINE__);                                                             \
      std::abort();                                                                       \
    }                                                                                     \
  } while (false)

namespace egressd::fuzz {

// True when the view lies inside [base, base + size): parsed fields must point into the buffer
// they were parsed from, never into a temporary or past its end. An empty view may sit anywhere.
inline bool within(std::string_view part, const char* base, std::size_t size) {
  if (part.empty()) return true;
  return part.data() >= base && part.data() + part.size() <= base + size;
}

// FNV-1a over the input: a deterministic "random" split point, so a crash reproduces from the
// saved input alone and the seeds can stay plain protocol bytes without a parameter prefix.
inline std::size_t input_hash(std::string_view data) {
  std::size_t h = 1469598103934665603ull;
  for (char c : data) {
    h ^= static_cast<unsigned char>(c);
    h *= 1099511628211ull;
  }
  return h;
}

}  // namespace egressd::fuzz
