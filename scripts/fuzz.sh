#!/usr/bin/env bash
# Builds the libFuzzer targets in fuzz/ with clang (libFuzzer + ASan + UBSan) into build-fuzz/
# and runs each for FUZZ_SECONDS on a throw-away copy of its seed corpus, so the repository is
# never modified. Fails when any target crashes, breaks one of its invariants, leaks, runs out of
# memory or hangs on an input; the input is saved under build-fuzz/artifacts/<target>/.
#
# The targets are built from the pure sources they need (http, PROXY parser, config, acl, core),
# not from egressd_lib: the rest of the library is Boost.Asio coroutine code built with GCC.
#
# Usage:  scripts/fuzz.sh [target...]        targets: request proxy_protocol config target chunked
# Env:    FUZZ_SECONDS   seconds of fuzzing per target (default 30; 0 = only run the seed corpus)
#         FUZZ_TIMEOUT   seconds one input may take before it counts as a hang (default 10)
#         FUZZ_ARGS      extra libFuzzer flags, e.g. "-jobs=2 -workers=2" or "-seed=1"
#         FUZZ_CXX       the clang++ to use (default: clang++-14, then clang++)
#         FUZZ_OUT       build and artifact directory (default build-fuzz/)
# Exit:   0 all clean; 1 a finding, a build error or a clang that cannot link libFuzzer;
#         77 no clang++ at all (Debian: apt-get install clang-14 libclang-rt-14-dev).
# Reproduce a finding:  build-fuzz/fuzz_<target> build-fuzz/artifacts/<target>/crash-...
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
out=${FUZZ_OUT:-$root/build-fuzz}
seconds=${FUZZ_SECONDS:-30}
per_input=${FUZZ_TIMEOUT:-10}
all_targets=(request proxy_protocol config target chunked)
targets=("$@")
[[ ${#targets[@]} -eq 0 ]] && targets=("${all_targets[@]}")
for t in "${targets[@]}"; do
  [[ " ${all_targets[*]} " == *" $t "* ]] || { echo "fuzz: unknown target '$t'" >&2; exit 1; }
done

# --- toolchain -------------------------------------------------------------------------------
cxx=${FUZZ_CXX:-}
if [[ -z $cxx ]]; then
  for c in clang++-14 clang++; do
    if command -v "$c" > /dev/null; then cxx=$c; break; fi
  done
fi
if [[ -z $cxx ]] || ! command -v "$cxx" > /dev/null; then
  echo "fuzz: SKIP: no clang++ (Debian: apt-get install clang-14 libclang-rt-14-dev)" >&2
  exit 77
fi
mkdir -p "$out/obj" "$out/artifacts"
probe_src='extern "C" int LLVMFuzzerTestOneInput(const unsigned char*, unsigned long) { return 0; }'
if ! echo "$probe_src" | "$cxx" -x c++ - -fsanitize=fuzzer,address,undefined \
     -o "$out/probe" 2> "$out/probe.log"; then
  # clang is there but cannot build a fuzzer: a broken install, not a reason to skip.
  echo "fuzz: $cxx cannot link -fsanitize=fuzzer,address,undefined (libFuzzer runtime missing?" \
       "Debian: apt-get install libclang-rt-14-dev):" >&2
  sed 's/^/  /' "$out/probe.log" >&2
  exit 1
fi
if ! pkg-config --exists yaml-cpp; then
  echo "fuzz: yaml-cpp not found by pkg-config (apt-get install libyaml-cpp-dev pkg-config)" >&2
  exit 1
fi

# --- build -----------------------------------------------------------------------------------
# -O1 -g as libFuzzer recommends; UBSan stops at the first report so it fails the run.
read -ra yaml_cflags <<< "$(pkg-config --cflags yaml-cpp)"
read -ra libs <<< "$(pkg-config --libs yaml-cpp)"
# shellcheck disable=SC2054  # the commas are the sanitizer list, not array separators
flags=(-std=c++20 -g -O1 -fno-omit-frame-pointer -fsanitize=address,undefined
       -fno-sanitize-recover=all -I"$root/include" -I"$root/fuzz" -I"$root/tests"
       -DBOOST_ASIO_NO_DEPRECATED -DBOOST_ASIO_DISABLE_BOOST_COROUTINE -DEGRESSD_VERSION=\"fuzz\"
       "${yaml_cflags[@]}")

# The library sources each target links, in addition to fuzz/fuzz_<target>.cpp.
declare -A sources=(
  [request]="src/http/message.cpp src/http/target.cpp src/http/forward.cpp src/core/error.cpp"
  [proxy_protocol]="src/net/proxy_protocol.cpp src/acl/cidr.cpp"
  [config]="src/config/config.cpp src/config/env.cpp src/config/to_yaml.cpp
            src/config/validate.cpp src/config/values.cpp src/acl/cidr.cpp src/acl/port_set.cpp
            src/acl/rules.cpp"
  [target]="src/http/target.cpp src/acl/cidr.cpp src/acl/rules.cpp src/acl/port_set.cpp"
  [chunked]="src/http/chunked.cpp"
)

# Rebuild an object when its source, any header, or the flags changed.
stamp="$out/flags"
echo "$cxx ${flags[*]}" > "$stamp.new"
if ! cmp -s "$stamp.new" "$stamp"; then rm -rf "$out/obj"; mkdir -p "$out/obj"; fi
mv "$stamp.new" "$stamp"
newest_header=$(find include src fuzz tests/support -name '*.hpp' -printf '%T@\n' | sort -n | tail -1)

compile() {  # source object (library code: coverage instrumentation, no libFuzzer main)
  local src=$1 obj=$2
  if [[ -f $obj && $obj -nt $src ]] &&
     awk -v h="$newest_header" -v o="$(stat -c %Y "$obj")" 'BEGIN { exit !(o >= h) }'; then
    return 0
  fi
  mkdir -p "$(dirname "$obj")"
  "$cxx" "${flags[@]}" -fsanitize=fuzzer-no-link -iquote "$root/$(dirname "$1")" -c "$src" \
    -o "$obj"
}

echo "== fuzz: building ${targets[*]} with $("$cxx" --version | head -1)"
declare -A objs_of=()
pending=()
for t in "${targets[@]}"; do
  list=""
  for s in fuzz/fuzz_$t.cpp ${sources[$t]}; do
    o="$out/obj/${s%.cpp}.o"
    list+="$o "
    [[ " ${pending[*]-} " == *" $s:$o "* ]] || pending+=("$s:$o")
  done
  objs_of[$t]=$list
done
# Compile in parallel, one job per core.
build_failed=0
jobs=$(nproc)
running=0
for p in "${pending[@]}"; do
  ( compile "${p%%:*}" "${p#*:}" ) &
  running=$((running + 1))
  if (( running >= jobs )); then
    wait -n || build_failed=1
    running=$((running - 1))
  fi
done
while (( running > 0 )); do
  wait -n || build_failed=1
  running=$((running - 1))
done
[[ $build_failed -eq 0 ]] || { echo "fuzz: build failed" >&2; exit 1; }
for t in "${targets[@]}"; do
  # shellcheck disable=SC2086
  "$cxx" "${flags[@]}" -fsanitize=fuzzer ${objs_of[$t]} "${libs[@]}" -o "$out/fuzz_$t"
done

# --- run -------------------------------------------------------------------------------------
export ASAN_OPTIONS="detect_leaks=1:strict_string_checks=1:detect_stack_use_after_return=1:${ASAN_OPTIONS:-}"
export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1:${UBSAN_OPTIONS:-}"
work=$(mktemp -d "${TMPDIR:-/tmp}/egressd-fuzz.XXXXXX")
trap 'rm -rf "$work"' EXIT

summary=()
failed=()
for t in "${targets[@]}"; do
  corpus="$work/$t"
  mkdir -p "$corpus" "$out/artifacts/$t"
  cp -R "fuzz/corpus/$t/." "$corpus/"
  seeds=$(find "$corpus" -type f | wc -l)
  args=(-timeout="$per_input" -rss_limit_mb=2048 -print_final_stats=1
        -artifact_prefix="$out/artifacts/$t/")
  [[ -f fuzz/dict/$t.dict ]] && args+=(-dict="fuzz/dict/$t.dict")
  if [[ $seconds -gt 0 ]]; then args+=(-max_total_time="$seconds"); else args+=(-runs=0); fi
  # shellcheck disable=SC2206
  args+=(${FUZZ_ARGS:-})
  log="$out/fuzz_$t.log"
  echo "== fuzz: $t for ${seconds}s from $seeds seeds"
  rc=0
  # The outer timeout only guards against a run libFuzzer itself cannot stop.
  timeout -k 10 $((seconds + per_input + 300)) "$out/fuzz_$t" "${args[@]}" "$corpus" \
    > "$log" 2>&1 || rc=$?
  final_stat() { sed -n "s/^stat::$1: *//p" "$log" | tail -1; }
  runs=$(final_stat number_of_executed_units)
  rate=$(final_stat average_exec_per_sec)
  last=$(grep -E '^#[0-9]+' "$log" | tail -1 || true)
  init=$(grep -E '^#[0-9]+.*(INITED|DONE)' "$log" | head -1 || true)
  cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<< "$last")
  ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<< "$last")
  cov0=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<< "$init")
  corp=$(sed -n 's/.* corp: \([0-9]*\/[0-9a-zA-Z]*\).*/\1/p' <<< "$last")
  line=$(printf '%-15s %9s runs %8s exec/s  cov %5s (seeds %5s)  ft %6s  corpus %s' \
    "$t" "${runs:-?}" "${rate:-?}" "${cov:-?}" "${cov0:-?}" "${ft:-?}" "${corp:-?}")
  echo "   ${last:-(no final libFuzzer line)}"
  echo "   stat::number_of_executed_units: ${runs:-?}"
  if [[ $rc -ne 0 ]]; then
    failed+=("$t")
    summary+=("$line  FAILED (exit $rc)")
    echo "!! fuzz: $t failed (exit $rc); from its log ($log):"
    # The report itself (sanitizer, broken invariant, hang, leak), then libFuzzer's last words.
    grep -v -E '^#[0-9]+ ' "$log" |
      awk '/ERROR: |invariant violated|runtime error|deadly signal|ALARM|out-of-memory/ { on = 1 }
           /^MS: / { on = 0 } on && n++ < 45' | sed 's/^/   /'
    grep -E '^(MS:|artifact_prefix|Base64:)' "$log" | tail -n 3 | cut -c1-300 | sed 's/^/   /'
    find "$out/artifacts/$t" -type f -newer "$stamp" -printf '   input saved: %p\n' 2>/dev/null
    echo "   reproduce: $out/fuzz_$t <input>; add the input to fuzz/corpus/$t/ once fixed"
  else
    summary+=("$line  ok")
  fi
done

echo "== fuzz summary (${seconds}s per target; cov = edges covered, ft = features)"
printf '%s\n' "${summary[@]}"
if [[ ${#failed[@]} -gt 0 ]]; then
  echo "== fuzz: FAILED: ${failed[*]}"
  exit 1
fi
echo "== fuzz: all targets clean"
