#!/usr/bin/env bash
# The quick start: installs what is needed, creates a SoftHSM token under .demo/ (git-
# ignored), starts the broker on a socket there, and shows `kms-broker verify` passing,
# before and after a key rotation. Then it stops the broker (SIGTERM, as an init system
# would), unless run with --keep, which leaves it serving.
set -euo pipefail
cd "$(dirname "$0")/.."
keep=false
[ "${1:-}" = "--keep" ] && keep=true

bash scripts/install.sh
bash scripts/build.sh  # bin/kms-broker runs the compiled dist/
demo="$PWD/.demo"
if [ -f "$demo/broker.pid" ] && kill -0 "$(cat "$demo/broker.pid")" 2>/dev/null; then
  kill -TERM "$(cat "$demo/broker.pid")"
  for _ in $(seq 1 100); do kill -0 "$(cat "$demo/broker.pid")" 2>/dev/null || break; sleep 0.1; done
fi
rm -rf "$demo"
mkdir -p "$demo"
bash softhsm/create-token.sh "$demo/hsm" kms
# An admin token for the CLI, in a 0600 file like the HSM PIN.
(umask 077; od -An -N24 -tx1 /dev/urandom | tr -d ' \n' > "$demo/admin-token")
cat > "$demo/config.yaml" <<YAML
socket: $demo/kms.sock
state: { path: $demo/state.json }
admin:
  listen: unix://$demo/admin.sock
  tokens: [{ name: demo, role: admin, file: $demo/admin-token }]
backends:
  - name: hsm
    type: pkcs11
    module: /usr/lib/softhsm/libsofthsm2.so
    tokenLabel: kms
    pinFile: $demo/hsm/pin
    keyLabel: kek
    generateIfMissing: true
failover: { order: [hsm] }
YAML
export SOFTHSM2_CONF="$demo/hsm/softhsm2.conf"

bin/kms-broker serve --config "$demo/config.yaml" 2> "$demo/broker.log" &
pid=$!
echo "$pid" > "$demo/broker.pid"
# Wait (at most 30 s) for the broker to log that it serves the socket and the admin API.
for _ in $(seq 1 300); do
  grep -q '"broker ready"' "$demo/broker.log" && break
  kill -0 "$pid" 2>/dev/null || { cat "$demo/broker.log" >&2; exit 1; }
  sleep 0.1
done
grep -q '"broker ready"' "$demo/broker.log" || { echo "demo: broker did not start" >&2; cat "$demo/broker.log" >&2; exit 1; }

echo; echo "== kms-broker verify --socket $demo/kms.sock"
bin/kms-broker verify --socket "$demo/kms.sock"
echo; echo "== kms-broker status --config $demo/config.yaml   (the admin API)"
bin/kms-broker status --config "$demo/config.yaml"
echo; echo "== kms-broker rotate --config $demo/config.yaml"
bin/kms-broker rotate --config "$demo/config.yaml"
echo; echo "== kms-broker keys --config $demo/config.yaml"
bin/kms-broker keys --config "$demo/config.yaml"
echo; echo "== kms-broker verify (after rotation: a new key_id, no restart)"
bin/kms-broker verify --socket "$demo/kms.sock"

if $keep; then
  echo; echo "The broker keeps serving $demo/kms.sock (pid $pid, logs in $demo/broker.log). Stop it with: kill $pid"
  exit 0
fi
echo; echo "== stopping the broker (SIGTERM)"
kill -TERM "$pid"
wait "$pid"
rm -f "$demo/broker.pid"
echo "stopped; the socket is gone: $([ -e "$demo/kms.sock" ] && echo no || echo yes). Run 'npm run demo -- --keep' to leave it serving."
