#!/usr/bin/env bash
# Builds egressd and its tests with AddressSanitizer + UndefinedBehaviorSanitizer (build-asan/)
# and runs the unit and integration tests against that binary. Any sanitizer report fails the
# run: UBSan halts on the first error, ASan aborts, and LeakSanitizer turns a leak at exit into
# a non-zero status, which the integration harness treats as a failure.
# Usage: scripts/test-sanitizers.sh [ctest args]
set -euo pipefail
cd "$(dirname "$0")/.."
cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=RelWithDebInfo -DEGRESSD_SANITIZE=ON \
  -DEGRESSD_BUILD_TESTS=ON > /dev/null
cmake --build build-asan -j"$(nproc)"
export ASAN_OPTIONS="abort_on_error=1:detect_leaks=1:strict_string_checks=1:detect_stack_use_after_return=0"
export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1"
cd build-asan
# The image, deployment-file and e2e checks do not depend on how egressd is compiled (the image
# builds its own binary); the suite that exercises the code runs here.
ctest --output-on-failure --timeout 900 -j"$(nproc)" \
  -E '^(container_image|dockerfile_lint|terraform_offline|kubernetes_manifests|monitoring_rules)$' "$@"
