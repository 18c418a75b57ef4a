#!/usr/bin/env bash
# Builds the PKCS#11 test shim (test/pkcs11-shim/: SoftHSM with the rules of real HSMs) into
# .cache/pkcs11-shim/libkms-broker-shim.so, again only when a source (or this script) is newer.
# Needs gcc and the PKCS#11 header of Debian's libp11-kit-dev (scripts/install.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
sources=(test/pkcs11-shim/shim.c test/pkcs11-shim/sessions.c test/pkcs11-shim/gcm-iv.c)
inputs=("${sources[@]}" test/pkcs11-shim/shim.h scripts/build-pkcs11-shim.sh)
out=.cache/pkcs11-shim/libkms-broker-shim.so
header_dir=/usr/include/p11-kit-1
stale=no
for input in "${inputs[@]}"; do
  [ -f "$out" ] && [ "$out" -nt "$input" ] || stale=yes
done
if [ "$stale" = no ]; then
  echo "pkcs11-shim: $out is up to date"
  exit 0
fi
[ -f "$header_dir/p11-kit/pkcs11.h" ] || {
  echo "pkcs11-shim: $header_dir/p11-kit/pkcs11.h is missing; run scripts/install.sh (Debian libp11-kit-dev)" >&2
  exit 1
}
mkdir -p "$(dirname "$out")"
# Built beside the target and renamed, so a process loading the library never sees half a file
# and two builds at once do not write the same file.
gcc -shared -fPIC -fvisibility=hidden -O2 -Wall -Wextra -Werror -I"$header_dir" -o "$out.$$" "${sources[@]}" -ldl -lpthread
mv -f "$out.$$" "$out"
echo "pkcs11-shim: built $out"
