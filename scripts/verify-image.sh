#!/usr/bin/env bash
# Runs `kms-broker verify` inside an image built by scripts/build-image.sh, against a fresh
# SoftHSM token made on this host and mounted into it, under the static Pod's confinement
# (uid 65532, read-only root, the Pod's mounts; with podman also no capabilities and no network).
#
# Usage: scripts/verify-image.sh [--engine auto|podman|chroot] ARCHIVE
#   podman   `podman load` the archive, `podman run` the broker from the image's own entrypoint,
#            `podman exec` verify in it. With runc: crun refuses hosts whose cgroups are in
#            hybrid (v1 + v2) mode.
#   chroot   the fallback where podman is missing or cannot run containers: the archive's layer
#            unpacked, then in new mount and PID namespaces (unshare) the root bind-mounted
#            read-only, the Pod's folders bound onto it, and the broker and verify started with
#            `chroot --userspec=65532:65532` (a non-root uid keeps no capabilities) and
#            no_new_privs, in a network namespace of its own with only loopback. No seccomp.
#   auto     podman if a container starts, else chroot; says why it fell back.
# Prints `verify: ok engine=<engine>` last and exits 0 only when verify passed. Needs root,
# softhsm2 (Debian) for the token, and the SoftHSM library, mounted as a vendor's would be.
set -euo pipefail
cd "$(dirname "$0")/.."
engine=auto
if [ "${1:-}" = --engine ]; then engine=${2:?--engine needs a value}; shift 2; fi
archive=$(realpath "${1:?usage: verify-image.sh [--engine auto|podman|chroot] ARCHIVE}")
uid=65532
module=/usr/lib/softhsm/libsofthsm2.so
socket=/var/run/kmsplugin/kms.sock
ready_timeout_s=60
say() { echo "verify-image: $*"; }
fail() { echo "verify-image: $*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || fail "needs root (the token and state folders are handed to uid $uid; chroot and rootful podman need root)"
[ -f "$module" ] || fail "$module is missing: install the Debian package softhsm2"
for tool in python3 unshare setpriv ip; do
  command -v "$tool" >/dev/null || fail "$tool is not installed (scripts/install.sh installs it)"
done
case $engine in auto | podman | chroot) ;; *) fail "--engine must be auto, podman or chroot, not '$engine'" ;; esac

work=$(mktemp -d /tmp/kmsb-verify-image.XXXXXX)
chmod 755 "$work" # uid 65532 must reach the folders mounted from here
cleanup=()
trap 'for step in "${cleanup[@]}"; do eval "$step" || true; done; rm -rf "$work"' EXIT

# --- the host side, as docs/deploy.md prepares it, under $work --------------------------------
bash softhsm/create-token.sh "$work/softhsm" kms >/dev/null
mkdir -p "$work/run" "$work/state" "$work/secrets" "$work/etc"
cp "$work/softhsm/pin" "$work/secrets/hsm-pin"
od -An -N24 -tx1 /dev/urandom | tr -d ' \n' >"$work/secrets/admin-token"
# deploy/config.yaml as shipped, plus a key generated on this empty token.
sed 's/^\(    keyLabel: kek\)$/\1\n    generateIfMissing: true/' deploy/config.yaml >"$work/etc/config.yaml"
grep -q 'generateIfMissing: true' "$work/etc/config.yaml" || fail "deploy/config.yaml no longer has the line 'keyLabel: kek' this script extends"
# SoftHSM's config as the container sees it: the token folder where it is mounted.
printf '%s\n' 'directories.tokendir = /var/lib/softhsm/tokens' 'objectstore.backend = file' \
  'log.level = ERROR' 'slots.removable = false' >"$work/etc/softhsm2.conf"
chown -R "$uid:$uid" "$work/run" "$work/state" "$work/secrets" "$work/softhsm/tokens"
chmod 0400 "$work/secrets/hsm-pin" "$work/secrets/admin-token"
chmod 0644 "$work/etc/config.yaml" "$work/etc/softhsm2.conf"
# host path : path in the image : mode, the Pod's volumes plus the SoftHSM token and library.
mounts=(
  "$work/run:/run/kmsplugin:rw"
  "$work/state:/var/lib/kms-broker:rw"
  "$work/etc/config.yaml:/etc/kms-broker/config.yaml:ro"
  "$work/secrets:/etc/kms-broker/secrets:ro"
  "$work/etc/softhsm2.conf:/etc/kms-broker/softhsm2.conf:ro"
  "$work/softhsm/tokens:/var/lib/softhsm/tokens:rw"
  "$module:$module:ro"
)
env_vars=(SOFTHSM2_CONF=/etc/kms-broker/softhsm2.conf)

wait_for_socket() { # $1: a function that succeeds while the broker runs
  local deadline=$(($(date +%s) + ready_timeout_s))
  until [ -S "$work/run/kms.sock" ]; do
    "$1" || fail "the broker stopped before its socket appeared"
    [ "$(date +%s)" -lt "$deadline" ] || fail "no socket after ${ready_timeout_s} s"
    sleep 0.2
  done
}

# --- podman -----------------------------------------------------------------------------------
podman_reason() { # loads the image; prints why podman cannot run it here, empty when it can
  command -v podman >/dev/null || { echo "podman is not installed"; return; }
  command -v runc >/dev/null || { echo "runc is not installed"; return; }
  local out
  out=$(podman load --quiet --input "$archive" 2>&1) || { echo "podman cannot load the archive: $(tail -1 <<<"$out")"; return; }
  out=$(podman --runtime runc run --rm --network none --ulimit nofile=1024:1024 --ulimit nproc=1024:1024 \
    --entrypoint /bin/true "$ref" 2>&1) || echo "podman cannot start a container here: $(tail -1 <<<"$out")"
}

verify_podman() {
  local name=kmsb-verify-$$ args=(--read-only --cap-drop ALL --security-opt no-new-privileges --network none
    --ulimit nofile=4096:4096 --ulimit nproc=4096:4096 --user "$uid:$uid" --tmpfs /tmp:size=16m)
  local mount host path mode
  for mount in "${mounts[@]}"; do
    IFS=: read -r host path mode <<<"$mount"
    args+=(--volume "$host:$path:$mode")
  done
  for var in "${env_vars[@]}"; do args+=(--env "$var"); done
  cleanup+=("podman --runtime runc rm --force --time 0 $name >/dev/null 2>&1")
  podman --runtime runc run --detach --name "$name" "${args[@]}" "$ref" >/dev/null
  container_running() {
    [ "$(podman --runtime runc inspect --format '{{.State.Status}}' "$name")" = running ] ||
      { podman --runtime runc logs "$name" >&2; false; }
  }
  wait_for_socket container_running
  podman --runtime runc exec "$name" /opt/kms-broker/bin/kms-broker verify --socket "$socket"
  podman --runtime runc stop --time 30 "$name" >/dev/null
}

# --- chroot in new namespaces ---------------------------------------------------------------
verify_chroot() {
  local rootfs=$work/rootfs manifest layer whiteout
  # index.json -> manifest -> layers, applied in order with their whiteouts (.wh.NAME deletes
  # NAME of the layers below), so an image from `podman save --format oci-archive` works too.
  member() { tar -xOf "$archive" --wildcards --no-anchored "$1"; } # with or without ./
  blob() { member "blobs/sha256/${1#sha256:}"; }
  json() { python3 -c "import json, sys; print(json.load(sys.stdin)$1)"; }
  manifest=$(member index.json | json "['manifests'][0]['digest']")
  mkdir "$rootfs"
  for layer in $(blob "$manifest" | json "['layers']" | tr -d "[]{}'," | grep -o 'sha256:[0-9a-f]*'); do
    blob "$layer" | gzip -dcf | tar -x --numeric-owner -C "$rootfs"
    find "$rootfs" -name '.wh.*' | while read -r whiteout; do
      rm -rf "$(dirname "$whiteout")/$(basename "$whiteout" | sed 's/^\.wh\.//')" "$whiteout"
    done
  done
  local binds=() mount host path mode
  for mount in "${mounts[@]}"; do
    IFS=: read -r host path mode <<<"$mount"
    [ -e "$rootfs$path" ] || { [ -d "$host" ] && mkdir -p "$rootfs$path" || { mkdir -p "$(dirname "$rootfs$path")" && touch "$rootfs$path"; }; }
    binds+=("mount --bind '$host' '$rootfs$path'")
    [ "$mode" = ro ] && binds+=("mount -o remount,bind,ro '$rootfs$path'")
  done
  local as_broker="setpriv --no-new-privs chroot --userspec=$uid:$uid $rootfs /usr/bin/env -i PATH=/usr/bin:/bin ${env_vars[*]}"
  # Everything below runs in its own mount and PID namespaces: its mounts vanish with it, and
  # the broker dies with it. Mount points for files must exist before the root turns read-only.
  unshare --mount --pid --net --fork --kill-child --propagation private bash -euo pipefail -c "
    ip link set lo up
    mount --bind '$rootfs' '$rootfs'
    $(printf '%s\n' "${binds[@]}")
    mount -t proc proc '$rootfs/proc'
    mount -t tmpfs -o size=16m,mode=1777 tmpfs '$rootfs/tmp'
    mount -t tmpfs -o size=1m,mode=755 tmpfs '$rootfs/dev'
    for dev in null zero random urandom; do touch '$rootfs/dev/'\$dev; mount --bind /dev/\$dev '$rootfs/dev/'\$dev; done
    mount -o remount,bind,ro '$rootfs'
    $as_broker /opt/kms-broker/bin/kms-broker serve --config /etc/kms-broker/config.yaml &
    broker=\$!
    deadline=\$((\$(date +%s) + $ready_timeout_s))
    until [ -S '$work/run/kms.sock' ]; do
      kill -0 \$broker 2>/dev/null || { echo 'verify-image: the broker stopped before its socket appeared' >&2; exit 1; }
      [ \$(date +%s) -lt \$deadline ] || { echo 'verify-image: no socket after $ready_timeout_s s' >&2; exit 1; }
      sleep 0.2
    done
    $as_broker /opt/kms-broker/bin/kms-broker verify --socket '$socket'
    kill -TERM \$broker && wait \$broker"
}

if [ "$engine" != chroot ]; then
  ref=$(tar -xOf "$archive" --wildcards --no-anchored index.json | python3 -c "import json, sys; print(json.load(sys.stdin)['manifests'][0]['annotations']['org.opencontainers.image.ref.name'])")
  [ -n "$ref" ] || fail "$archive names no image (index.json has no ref.name)"
  reason=$(podman_reason)
  if [ -z "$reason" ]; then
    engine=podman
  elif [ "$engine" = podman ]; then
    fail "$reason"
  else
    say "falling back to chroot: $reason"
    engine=chroot
  fi
fi
say "kms-broker verify inside the image with $engine, SoftHSM token mounted from the host"
"verify_$engine"
echo "verify: ok engine=$engine"
