#!/usr/bin/env bash
# Builds egressd and its unit tests with ThreadSanitizer (GCC, build-tsan/) and runs the unit
# tests, every integration test (the harness runs egressd with 2 workers: reload, drain,
# overload, status and metrics, keep-alive, tunnels, faults, the hostile corpus) and the short
# soak (bench/soak: mixed load with client aborts and SIGHUP reloads across both workers) against
# that binary. Any TSan report fails the run:
#   - the runtime options are linked into every binary (__tsan_default_options), because the
#     integration harness starts egressd with a clean environment (no TSAN_OPTIONS);
#   - halt_on_error=1: the first report ends the process with status 66, which fails the test;
#   - log_path: every report is also written to build-tsan/tsan-reports/, and the run fails when
#     that directory is not empty at the end (so a report from a process whose exit status a test
#     does not check still counts). The reports are printed.
# tests/support/tsan.supp (if present) holds suppressions, each for a proven false positive in a
# third-party library, documented there.
# Usage: scripts/test-tsan.sh [extra ctest args for the integration run]
# Env:   EGRESSD_TSAN_TESTS  a ctest regex to run instead of every integration test + soak_short
#                            (e.g. 'integration\.test_(reload|drain)')
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
out=$root/build-tsan
reports=$out/tsan-reports
start=$(date +%s)

tests_regex=${EGRESSD_TSAN_TESTS:-'^(integration\..*|soak_short)$'}

mkdir -p "$out"
rm -rf "$reports"
mkdir -p "$reports"

# --- runtime options, linked into every executable ------------------------------------------
opts="halt_on_error=1:second_deadlock_stack=1:history_size=4:log_path=$reports/tsan"
if [[ -f tests/support/tsan.supp ]]; then opts+=":suppressions=$root/tests/support/tsan.supp"; fi
printf 'extern "C" const char* __tsan_default_options() { return "%s"; }\n' "$opts" \
  > "$out/tsan_options.cpp.new"
if ! cmp -s "$out/tsan_options.cpp.new" "$out/tsan_options.cpp"; then
  mv "$out/tsan_options.cpp.new" "$out/tsan_options.cpp"
  g++ -c -O1 "$out/tsan_options.cpp" -o "$out/tsan_options.o"
  rm -f "$out/egressd" "$out/tests/egressd_unit_tests"  # relink with the new options
else
  rm "$out/tsan_options.cpp.new"
fi

# Kernels with more ASLR entropy than GCC 12's TSan supports abort at start ("unexpected memory
# mapping"); then run everything with address randomization off (inherited by children).
runner=()
echo 'int main() { return 0; }' | g++ -x c++ - -fsanitize=thread -o "$out/probe"
if ! "$out/probe" > "$out/probe.log" 2>&1; then
  if setarch "$(uname -m)" -R "$out/probe" > /dev/null 2>&1; then
    runner=(setarch "$(uname -m)" -R)
    echo "== tsan: running with ASLR off (this kernel's mmap randomization is too wide for TSan)"
  else
    echo "test-tsan: a trivial -fsanitize=thread program does not run:" >&2
    cat "$out/probe.log" >&2
    exit 1
  fi
fi

# --- build -----------------------------------------------------------------------------------
# -O1 -g1: what TSan needs for useful stacks (line tables), at about half the compile time of
# -O2 -g, which matters for CI on 2 cores. -Wno-tsan: GCC warns that TSan does not model the
# std::atomic_thread_fence in Asio's std_fenced_block (around each handler call); the handoff of
# a handler between threads goes through the scheduler's mutex, which TSan does model.
echo "== tsan: building egressd and egressd_unit_tests into build-tsan/"
cmake -S . -B "$out" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DEGRESSD_BUILD_TESTS=ON \
  -DEGRESSD_SANITIZE=OFF \
  -DCMAKE_CXX_FLAGS="-fsanitize=thread -fno-omit-frame-pointer -Wno-tsan" \
  -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O1 -g1 -DNDEBUG" \
  -DCMAKE_EXE_LINKER_FLAGS="-fsanitize=thread $out/tsan_options.o" > /dev/null
cmake --build "$out" -j"$(nproc)" --target egressd egressd_unit_tests
built=$(date +%s)

# --- run -------------------------------------------------------------------------------------
status=0
echo "== tsan: unit tests"
# One process for the whole suite (ctest would start one per test case).
(cd "$out/tests" && "${runner[@]}" ./egressd_unit_tests --gtest_brief=1) || status=1
units=$(date +%s)

echo "== tsan: integration tests and soak_short (ctest -R '$tests_regex')"
(cd "$out" && "${runner[@]}" ctest --output-on-failure --timeout 900 -j"$(nproc)" \
  -R "$tests_regex" "$@") || status=1
done_at=$(date +%s)

shopt -s nullglob
found=("$reports"/tsan*)
if [[ ${#found[@]} -gt 0 ]]; then
  echo "!! tsan: ${#found[@]} report file(s) in $reports:"
  for f in "${found[@]}"; do
    echo "---- $f"
    head -n 120 "$f"
  done
  status=1
fi
echo "== tsan: build $((built - start)) s, unit tests $((units - built)) s," \
  "integration + soak $((done_at - units)) s, total $((done_at - start)) s"
if [[ $status -ne 0 ]]; then
  echo "== tsan: FAILED"
  exit 1
fi
echo "== tsan: clean (no reports)"
