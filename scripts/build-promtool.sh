#!/usr/bin/env bash
# Builds promtool, Prometheus' rule checker and rule unit-test runner, from the Go module proxy
# (no prebuilt downloads), at the version pinned below. The test suite runs `promtool check
# rules` and `promtool test rules` on deploy/prometheus/ with it
# (test/integration/prometheus-rules.test.ts, test/integration/prometheus-queries.test.ts).
#
# `go install <package>@<version>` builds it outside any module: the dependency versions are
# the ones Prometheus released with (its own go.mod), and the Go checksum database (reached
# through the module proxy) verifies every module, so the repository needs no go.mod or go.sum
# of its own for it. Prometheus tags 3.x as Go module versions v0.3xx.y (v0.316.0 is 3.16.0).
#
# Output: $PROMTOOL_CACHE_DIR/<version>/promtool (default PROMTOOL_CACHE_DIR:
#         ~/.cache/kms-broker/promtool, outside the clone so that every clone on the machine
#         shares it). Only the first run pays: when the binary exists and reports the pinned
#         version, it only prints it. A first run from empty Go caches downloads ~1 GB of
#         modules and took 504 s with PROMTOOL_BUILD_JOBS=1 on a busy 2-core machine.
#         Built with `remove_all_sd`: promtool's service discovery (Kubernetes, clouds) is
#         of no use for rules and would only lengthen the build.
#
# Environment:
#   PROMTOOL_CACHE_DIR  where to keep the binary (default: ${XDG_CACHE_HOME:-~/.cache}/kms-broker/promtool)
#   PROMTOOL_BUILD_JOBS go install -p and GOMAXPROCS (default: number of CPUs)
#   PROMTOOL_FORCE      set to 1 to rebuild even if the binary is present
# Prints "promtool: bin=<path>" as its last line on success; exits non-zero with a
# "build-promtool: ..." message on failure.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
version=v0.316.0
die() { echo "build-promtool: $*" >&2; exit 1; }
# shellcheck source=lib/find-go.sh
. "$root/scripts/lib/find-go.sh"

cache="${PROMTOOL_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/kms-broker/promtool}/$version"
bin="$cache/promtool"

# "promtool, version v0.316.0 (branch: ..." -> v0.316.0; empty if missing or broken.
built_version() { "$bin" --version 2>/dev/null | awk 'NR == 1 { print $3 }' || true; }
report() {
  echo "promtool: $version"
  echo "promtool: bin=$bin"
}

if [ "${PROMTOOL_FORCE:-0}" != 1 ] && [ "$(built_version)" = "$version" ]; then
  echo "promtool: cached, nothing to build"
  report
  exit 0
fi

go=$(find_go)
[ -n "$go" ] || die "no Go >= 1.21 on PATH or in /usr/local/go/bin (scripts/install.sh installs Debian's golang-go)"

mkdir -p "$cache" || die "cannot create $cache"
jobs="${PROMTOOL_BUILD_JOBS:-$(nproc 2>/dev/null || echo 1)}"
export GOMAXPROCS="$jobs"
export CGO_ENABLED=0
export GOFLAGS="-buildvcs=false"
export GOBIN="$cache/gobin.tmp"
ldflags="-s -w -X github.com/prometheus/common/version.Version=$version"
echo "promtool: building github.com/prometheus/prometheus/cmd/promtool@$version into $cache"
echo "promtool: $("$go" version), go install -p $jobs; first run: a few minutes"
started=$(date +%s)
rc=0
rm -rf "$GOBIN"
# From the cache folder, so that no go.mod around the clone (or in it) takes part.
(cd "$cache" && nice -n 10 "$go" install -p "$jobs" -trimpath -tags remove_all_sd -ldflags "$ldflags" \
  "github.com/prometheus/prometheus/cmd/promtool@$version") || rc=$?
[ $rc -eq 0 ] || die "go install failed (exit $rc) after $(($(date +%s) - started)) s; see the go output above"
mv -f "$GOBIN/promtool" "$bin"
rmdir "$GOBIN"
[ "$(built_version)" = "$version" ] || die "$bin --version says '$(built_version)', expected $version"
echo "promtool: built in $(($(date +%s) - started)) s ($(du -m "$bin" | cut -f1) MiB)"
report
