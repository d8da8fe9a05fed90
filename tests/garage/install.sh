#!/usr/bin/env bash
# Installs Garage, the S3-compatible distributed object store the private-origin and fleet tests
# run against (a real server, not a mock; never a dependency of our crates). Built once with
# `cargo install` into a cache directory that later runs, and .ci/run, reuse; prints the path of
# the binary.
#
#   tests/garage/install.sh            # -> $EDGEMIRROR_TOOLS/garage-<version>/bin/garage
#
# EDGEMIRROR_TOOLS (default ~/.cache/edgemirror-tools) is the cache; GARAGE_VERSION pins the
# release. The build takes a while on a small machine (it is a large program), so it runs at low
# priority and only when the cached binary is missing.
set -euo pipefail
VERSION=${GARAGE_VERSION:-2.5.0}
TOOLS=${EDGEMIRROR_TOOLS:-$HOME/.cache/edgemirror-tools}
ROOT="$TOOLS/garage-$VERSION"
BIN="$ROOT/bin/garage"
if [[ -x $BIN ]]; then
  echo "$BIN"
  exit 0
fi
mkdir -p "$TOOLS"
# LMDB metadata with its C library bundled; no metrics exporter or K2V API (not used by the tests).
nice -n 19 cargo install garage --version "=$VERSION" --locked --root "$ROOT" \
  --no-default-features --features bundled-libs,lmdb >&2
"$BIN" --version >&2
echo "$BIN"
