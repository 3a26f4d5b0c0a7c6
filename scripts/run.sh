#!/usr/bin/env bash
# Builds egressd and runs it on its embedded defaults (or with the arguments given).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh --build-only
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo -DEGRESSD_BUILD_TESTS=OFF >/dev/null
cmake --build build -j"$(nproc)" --target egressd
exec ./build/egressd "$@"
