#!/usr/bin/env bash
# Builds the Go reference plugin (bench/reference-plugin) once, from the Go module proxy,
# into a cache outside the clone, so repeated runs and other clones reuse it. Rebuilds only
# when its sources are newer than the binary. A failure is reported, never fatal: the
# benchmark then runs without the reference.
set -uo pipefail
cd "$(dirname "$0")/reference-plugin"
cache=${KMS_BROKER_CACHE_DIR:-$HOME/.cache/kms-broker}/reference-plugin
binary=$cache/kms-reference-plugin
if [ -x "$binary" ] && [ "$binary" -nt main.go ] && [ "$binary" -nt go.mod ] && [ "$binary" -nt go.sum ]; then
  exit 0
fi
mkdir -p "$cache"
started=$(date +%s)
echo "bench: building the Go reference plugin (k8s.io/kms + crypto11, cgo) into $cache"
if GOTOOLCHAIN=${GOTOOLCHAIN:-auto} CGO_ENABLED=1 go build -o "$binary.tmp" . ; then
  mv "$binary.tmp" "$binary"
  echo "bench: reference plugin built in $(( $(date +%s) - started )) s"
else
  rm -f "$binary.tmp"
  echo "bench: the Go reference plugin could not be built (needs go and a C compiler for cgo); running without it" >&2
fi
