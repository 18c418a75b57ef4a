#!/usr/bin/env bash
# `npm run build`: compiles src/ to dist/ (JavaScript with source maps) and copies the files the
# code reads beside itself at run time, so that production runs plain JavaScript: no type
# stripping at start (about 20 MB of RSS and seconds of start-up on a busy machine; see
# docs/performance.md#memory). proto/ and package.json are read from the project root, which
# dist/ sits in as src/ does, so they need no copy.
#
# dist/.built is written last: bin/kms-broker runs dist/ only when that stamp is newer than
# every file of src/ and this build's config, so an interrupted or stale build is never run.
set -euo pipefail
cd "$(dirname "$0")/.."
# The stamp takes the time the compile started: a file saved during it counts as newer.
started=$(mktemp)
trap 'rm -f "$started"' EXIT
rm -rf dist
# On the project's Node.js 24 where it is installed (not the machine's node).
node=node_modules/node/bin/node
[ -x "$node" ] || node=node
"$node" node_modules/typescript/bin/tsc -p tsconfig.build.json
# The web console's static files (src/admin/console/routes.ts reads them from its folder).
# Its tsconfig only type-checks the browser script; it is not an asset.
(cd src && find . -type f ! -name '*.ts' ! -name tsconfig.json -exec cp --parents {} ../dist/ \;)
touch -r "$started" dist/.built
echo "build: dist/ from src/ ($(find dist -name '*.js' | wc -l) files)"
