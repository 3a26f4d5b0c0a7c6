#!/usr/bin/env bash
# Builds the egressd container image without a Docker engine (none runs on these machines):
# a local debian:bookworm base made with mmdebstrap, then `buildah bud` on the Dockerfile in the
# docker format (which keeps HEALTHCHECK). Needs root. Usage: scripts/build-image.sh [TAG]
set -euo pipefail
cd "$(dirname "$0")/.."
tag="${1:-localhost/egressd:latest}"
base="docker.io/library/debian:bookworm"

missing=()
for p in buildah mmdebstrap; do command -v "$p" >/dev/null || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    buildah mmdebstrap uidmap
fi

if ! buildah inspect --type image "$base" >/dev/null 2>&1; then
  echo "build-image: making $base with mmdebstrap (minbase)"
  tmp="$(mktemp -d)"
  trap 'rm -rf "$tmp"' EXIT
  mmdebstrap --quiet --variant=minbase bookworm "$tmp/base.tar"
  ctr="$(buildah from scratch)"
  buildah add --quiet "$ctr" "$tmp/base.tar" / >/dev/null
  buildah config --cmd '["/bin/bash"]' "$ctr"
  buildah commit --quiet "$ctr" "$base" >/dev/null
  buildah rm "$ctr" >/dev/null
fi

echo "build-image: building $tag"
BUILDAH_ISOLATION=chroot buildah bud --pull=never --format docker --layers -t "$tag" .
