#!/usr/bin/env bash
# Builds the real Kubernetes control-plane binaries the end-to-end tests need, from the Go
# module proxy (no prebuilt downloads): kube-apiserver, kube-controller-manager (its
# storage-version-migrator controller runs the StorageVersionMigrations `kms-broker migrate`
# creates) and kubectl from k8s.io/kubernetes, and etcd from go.etcd.io/etcd/server/v3, and
# etcdutl (which `kms-broker drill` and `recover` use to restore a snapshot) from
# go.etcd.io/etcd/etcdutl/v3, at the versions pinned in test/e2e/kube/go.mod.
#
# Output: $KUBE_CACHE_DIR/<kubernetes version>/bin/{kube-apiserver,kube-controller-manager,kubectl,etcd,etcdutl}
#         (default KUBE_CACHE_DIR: ~/.cache/kms-broker/kube, outside the clone so that every
#         clone on the machine, CI's fresh one included, shares it). Only the first run pays:
#         when all five binaries exist and report the pinned versions, it only prints them.
# Cost of a first run on 2 cores (test/e2e/README.md): ~87 MiB of module downloads
# (~590 MB unpacked in GOMODCACHE), ~3 GB of build cache (a private GOCACHE under the
# cache dir, removed after a successful build), 2.4 GB peak memory, and about 17 min with
# KUBE_BUILD_JOBS=1 or an estimated 10 min with 2 jobs for kube-apiserver, plus about 6 min for
# kube-controller-manager (measured with 2 jobs on a busy machine: 14 min and 6 min).
#
# Environment:
#   KUBE_CACHE_DIR     where to keep the binaries (default: ${XDG_CACHE_HOME:-~/.cache}/kms-broker/kube)
#   KUBE_BUILD_JOBS    go build -p and GOMAXPROCS (default: number of CPUs)
#   KUBE_BUILD_NICE    nice level of the build (default: 19)
#   KUBE_KEEP_GOCACHE  set to 1 to keep the ~3 GB build cache after a successful build
#   KUBE_FORCE         set to 1 to rebuild even if the binaries are present
# Prints "kube: bin=<dir>" as its last line on success; exits non-zero with a
# "build-kube-apiserver: ..." message on failure.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
module="$root/test/e2e/kube"
die() { echo "build-kube-apiserver: $*" >&2; exit 1; }
# shellcheck source=lib/find-go.sh
. "$root/scripts/lib/find-go.sh"

[ -f "$module/go.mod" ] || die "missing $module/go.mod"
kube_version=$(awk '$1 == "k8s.io/kubernetes" { print $2 }' "$module/go.mod")
etcd_version=$(awk '$1 == "go.etcd.io/etcd/server/v3" { print $2 }' "$module/go.mod")
etcdutl_version=$(awk '$1 == "go.etcd.io/etcd/etcdutl/v3" { print $2 }' "$module/go.mod")
[[ $kube_version == v1.* ]] || die "cannot read the k8s.io/kubernetes version from $module/go.mod"
[[ $etcd_version == v3.* ]] || die "cannot read the go.etcd.io/etcd/server/v3 version from $module/go.mod"
[[ $etcdutl_version == v3.* ]] || die "cannot read the go.etcd.io/etcd/etcdutl/v3 version from $module/go.mod"

cache="${KUBE_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/kms-broker/kube}/$kube_version"
bin="$cache/bin"

# Version strings the binaries print; empty if the binary is missing or broken.
apiserver_version() { "$bin/kube-apiserver" --version 2>/dev/null | awk '{ print $2 }' || true; }
controller_manager_version() { "$bin/kube-controller-manager" --version 2>/dev/null | awk '{ print $2 }' || true; }
kubectl_version() { "$bin/kubectl" version --client 2>/dev/null | awk '/^Client Version:/ { print $3 }' || true; }
etcd_bin_version() { "$bin/etcd" --version 2>/dev/null | awk '/^etcd Version:/ { print "v" $3 }' || true; }
etcdutl_bin_version() { "$bin/etcdutl" version 2>/dev/null | awk '/^etcdutl version:/ { print "v" $3 }' || true; }
report() {
  echo "kube: kube-apiserver $(apiserver_version), kube-controller-manager $(controller_manager_version), kubectl $(kubectl_version), etcd $(etcd_bin_version), etcdutl $(etcdutl_bin_version)"
  echo "kube: bin=$bin"
}

if [ "${KUBE_FORCE:-0}" != 1 ] &&
  [ "$(apiserver_version)" = "$kube_version" ] &&
  [ "$(controller_manager_version)" = "$kube_version" ] &&
  [ "$(kubectl_version)" = "$kube_version" ] &&
  [ "$(etcd_bin_version)" = "$etcd_version" ] &&
  [ "$(etcdutl_bin_version)" = "$etcdutl_version" ]; then
  echo "kube: cached, nothing to build"
  report
  exit 0
fi

go=$(find_go)
[ -n "$go" ] || die "no Go >= 1.21 on PATH or in /usr/local/go/bin (go.mod asks for go $(awk '$1 == "go" { print $2 }' "$module/go.mod"))"

mkdir -p "$cache" || die "cannot create $cache"
free_kb=$(df -Pk "$cache" | awk 'NR == 2 { print $4 }')
if [ "${free_kb:-0}" -lt $((5 * 1024 * 1024)) ]; then
  die "only $((free_kb / 1024)) MiB free under $cache; the build needs about 4 GiB (3 GB build cache, 0.6 GB modules, 0.2 GB binaries)"
fi

jobs="${KUBE_BUILD_JOBS:-$(nproc 2>/dev/null || echo 1)}"
nice_level="${KUBE_BUILD_NICE:-19}"
export GOCACHE="$cache/gocache" # private: 3 GB that only this build uses, dropped afterwards
export GOMAXPROCS="$jobs"
export CGO_ENABLED=0
export GOFLAGS="-mod=readonly -buildvcs=false"
tmp="$cache/tmp"
rm -rf "$tmp"
mkdir -p "$tmp" "$bin"

# What Kubernetes' own build (hack/lib/version.sh) stamps into its binaries; the module
# proxy carries no commit id, so gitCommit keeps its placeholder.
major=${kube_version#v}; major=${major%%.*}
minor=${kube_version#v*.}; minor=${minor%%.*}
build_date=$(date -u +%Y-%m-%dT%H:%M:%SZ)
ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  ldflags+=" -X $pkg.gitVersion=$kube_version -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor"
  ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=$build_date"
done

echo "kube: building kube-apiserver, kube-controller-manager and kubectl $kube_version, etcd $etcd_version, etcdutl $etcdutl_version into $bin"
echo "kube: $("$go" version), go build -p $jobs, GOMAXPROCS=$jobs, nice -n $nice_level; first run: about 15-25 min"
started=$(date +%s)
build() { # name package ldflags
  local name=$1 pkg=$2 flags=$3 t0 rc=0
  t0=$(date +%s)
  echo "kube: go build $pkg"
  (cd "$module" && nice -n "$nice_level" "$go" build -p "$jobs" -trimpath -ldflags "$flags" -o "$tmp/$name" "$pkg") || rc=$?
  if [ $rc -ne 0 ]; then
    die "go build $pkg failed (exit $rc) after $(($(date +%s) - t0)) s; see the go output above. Partial build cache kept in $GOCACHE, so a rerun resumes"
  fi
  mv -f "$tmp/$name" "$bin/$name"
  echo "kube: built $name in $(($(date +%s) - t0)) s ($(du -m "$bin/$name" | cut -f1) MiB)"
}
# Each binary is built only when it is missing or reports another version (or KUBE_FORCE=1):
# a binary added to this list later (etcdutl was) costs its own build, not all of them again.
stale() { [ "${KUBE_FORCE:-0}" = 1 ] || [ "$("$1")" != "$2" ]; }
stale apiserver_version "$kube_version" && build kube-apiserver k8s.io/kubernetes/cmd/kube-apiserver "$ldflags"
stale controller_manager_version "$kube_version" && build kube-controller-manager k8s.io/kubernetes/cmd/kube-controller-manager "$ldflags"
stale kubectl_version "$kube_version" && build kubectl k8s.io/kubernetes/cmd/kubectl "$ldflags"
stale etcd_bin_version "$etcd_version" && build etcd go.etcd.io/etcd/server/v3 "-s -w"
stale etcdutl_bin_version "$etcdutl_version" && build etcdutl go.etcd.io/etcd/etcdutl/v3 "-s -w"

[ "$(apiserver_version)" = "$kube_version" ] || die "$bin/kube-apiserver --version says '$(apiserver_version)', expected $kube_version"
[ "$(controller_manager_version)" = "$kube_version" ] || die "$bin/kube-controller-manager --version says '$(controller_manager_version)', expected $kube_version"
[ "$(kubectl_version)" = "$kube_version" ] || die "$bin/kubectl version --client says '$(kubectl_version)', expected $kube_version"
[ "$(etcd_bin_version)" = "$etcd_version" ] || die "$bin/etcd --version says '$(etcd_bin_version)', expected $etcd_version"
[ "$(etcdutl_bin_version)" = "$etcdutl_version" ] || die "$bin/etcdutl version says '$(etcdutl_bin_version)', expected $etcdutl_version"

rm -rf "$tmp"
if [ "${KUBE_KEEP_GOCACHE:-0}" != 1 ]; then
  echo "kube: removing the build cache $GOCACHE ($(du -sh "$GOCACHE" | cut -f1))"
  chmod -R u+w "$GOCACHE" 2>/dev/null || true
  rm -rf "$GOCACHE"
fi
echo "kube: all built in $(($(date +%s) - started)) s"
report
