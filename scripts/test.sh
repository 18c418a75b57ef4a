#!/usr/bin/env bash
# The whole suite, from a fresh machine: install, type check, lint, format check, then
# unit, integration and conformance tests on the project's Node.js 24.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
export PATH="$PWD/node_modules/.bin:$PATH"
started=$(date +%s)
echo "== typecheck"; tsc --noEmit
echo "== lint"; eslint .
echo "== format"; prettier --check . >/dev/null
echo "== tests"
node --test --test-concurrency=1 --test-timeout=600000 --test-reporter=spec \
  'test/unit/**/*.test.ts' 'test/integration/**/*.test.ts' 'test/conformance/*.test.ts'
echo "== suite took $(( $(date +%s) - started )) s"
