#!/usr/bin/env bash
# Builds egressd and runs every test: unit (GoogleTest), integration (real binary on loopback
# against origins started by the tests), the curl smoke test, the container image, the
# deployment-file checks, the e2e rehearsal, the fuzzers (fuzz_smoke, 20 s per target) and a
# 30 s soak (soak_short), then unit and integration tests again under ASan+UBSan
# (EGRESSD_SKIP_SANITIZERS=1 skips that pass) and under TSan (scripts/test-tsan.sh;
# EGRESSD_SKIP_TSAN=1 skips it). The README's test command.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo -DEGRESSD_BUILD_TESTS=ON
cmake --build build -j"$(nproc)"
(cd build && ctest --output-on-failure --timeout 600 -j"$(nproc)" "$@")
# The same unit and integration tests again on an ASan+UBSan build: any report fails.
if [ "${EGRESSD_SKIP_SANITIZERS:-0}" != "1" ]; then
  bash scripts/test-sanitizers.sh
fi
# The same unit and integration tests and the short soak on a TSan build: any report fails.
if [ "${EGRESSD_SKIP_TSAN:-0}" != "1" ]; then
  bash scripts/test-tsan.sh
fi
