#!/usr/bin/env bash
# Builds egressd and runs every test: unit (GoogleTest), integration (real binary on loopback
# against origins started by the tests) and the curl smoke test. The README's test command.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo -DEGRESSD_BUILD_TESTS=ON
cmake --build build -j"$(nproc)"
cd build
ctest --output-on-failure --timeout 600 -j"$(nproc)" "$@"
