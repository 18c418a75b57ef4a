#!/usr/bin/env bash
# Builds the PKCS#11 test shim (test/pkcs11-shim/shim.c: SoftHSM with the rules of real HSMs)
# into .cache/pkcs11-shim/libkms-broker-shim.so, again only when the source is newer.
# Needs gcc and the PKCS#11 header of Debian's libp11-kit-dev (scripts/install.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
source=test/pkcs11-shim/shim.c
out=.cache/pkcs11-shim/libkms-broker-shim.so
header_dir=/usr/include/p11-kit-1
if [ -f "$out" ] && [ "$out" -nt "$source" ] && [ "$out" -nt "$0" ]; then
  echo "pkcs11-shim: $out is up to date"
  exit 0
fi
[ -f "$header_dir/p11-kit/pkcs11.h" ] || { echo "pkcs11-shim: $header_dir/p11-kit/pkcs11.h is missing; run scripts/install.sh (Debian libp11-kit-dev)" >&2; exit 1; }
mkdir -p "$(dirname "$out")"
# Built beside the target and renamed, so a process loading the old library never sees half a file.
gcc -shared -fPIC -O2 -Wall -Wextra -Werror -I"$header_dir" -o "$out.tmp" "$source" -ldl -lpthread
mv -f "$out.tmp" "$out"
echo "pkcs11-shim: built $out"
