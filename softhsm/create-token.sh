#!/usr/bin/env bash
# Creates a SoftHSM2 token in its own folder, for the demo and the tests:
#   softhsm/create-token.sh DIR [LABEL]
# writes DIR/softhsm2.conf, DIR/tokens/, and a random user PIN in DIR/pin (mode 0600).
# Use it with SOFTHSM2_CONF=DIR/softhsm2.conf in the broker's environment.
set -euo pipefail
dir=${1:?usage: create-token.sh DIR [LABEL]}
label=${2:-kms}
command -v softhsm2-util >/dev/null || { echo "softhsm2-util not found: install the Debian package softhsm2" >&2; exit 1; }
mkdir -p "$dir/tokens"
dir=$(cd "$dir" && pwd)
umask 077
cat > "$dir/softhsm2.conf" <<CONF
directories.tokendir = $dir/tokens
objectstore.backend = file
log.level = ERROR
slots.removable = false
slots.mechanisms = ALL
library.reset_on_fork = false
CONF
pin=$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')
so_pin=$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')
printf '%s\n' "$pin" > "$dir/pin"
SOFTHSM2_CONF="$dir/softhsm2.conf" softhsm2-util --init-token --free --label "$label" --so-pin "$so_pin" --pin "$pin" >/dev/null
echo "token '$label' created in $dir (SOFTHSM2_CONF=$dir/softhsm2.conf, PIN in $dir/pin)"
