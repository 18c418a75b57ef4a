#!/usr/bin/env bash
# npm run bench [-- --quick] [-- --cpu-prof DIR]: installs what the benchmark needs, builds
# the broker as it ships (dist/) and the Go reference plugin once, then runs the suite on the
# project's Node.js 24.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
bash scripts/build.sh
bash scripts/build-pkcs11-shim.sh
bash bench/build-reference-plugin.sh
exec node_modules/node/bin/node bench/run.ts "$@"
