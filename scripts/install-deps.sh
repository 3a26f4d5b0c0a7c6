#!/usr/bin/env bash
# Installs everything egressd needs to build and test on Debian 12, from Debian packages only.
# Used by the README Quick start, by CI (.ci/run) and by the Dockerfile's build stage.
set -euo pipefail

build_packages=(
  g++ cmake make pkg-config
  libboost1.81-dev libssl-dev libspdlog-dev libfmt-dev libyaml-cpp-dev
  prometheus-cpp-dev libc-ares-dev
  libgtest-dev libgmock-dev
)
# Test tools: curl and openssl as operators use them, python3 for the scripted origins,
# iproute2 + util-linux for the network-namespace test.
# promtool from prometheus lints the /metrics exposition.
# buildah + mmdebstrap build and run the container image without a Docker engine; yamllint and
# Node (npm packages pinned in tests/*/package-lock.json) validate the deployment files.
# clang-14 + libclang-rt-14-dev (libFuzzer, ASan/UBSan runtimes) build the fuzz targets
# (scripts/fuzz.sh, ctest fuzz_smoke).
test_packages=(curl openssl python3 iproute2 util-linux ca-certificates prometheus haproxy
  buildah mmdebstrap uidmap yamllint chromium clang-14 libclang-rt-14-dev)
# Node: Debian's nodejs + npm, unless a Node with npm is already installed (another nodejs
# package, e.g. NodeSource's, conflicts with Debian's npm).
if ! command -v npm >/dev/null 2>&1; then test_packages+=(nodejs npm); fi

want=("${build_packages[@]}")
if [ "${1:-}" != "--build-only" ]; then want+=("${test_packages[@]}"); fi

missing=()
for p in "${want[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all ${#want[@]} packages present"
  exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
echo "install-deps: installing ${missing[*]}"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
