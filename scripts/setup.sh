#!/usr/bin/env bash
# Installs what vhost-user needs on a fresh Debian machine: qemu-storage-daemon (the reference
# backend the tests and the demo talk to) and the npm dependencies (which also build the native
# addon and the TypeScript). Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
missing=()
command -v qemu-storage-daemon >/dev/null 2>&1 || missing+=(qemu-system-common)
# node-gyp builds the addon: a C++ compiler, make and python3.
command -v g++ >/dev/null 2>&1 || missing+=(g++)
command -v make >/dev/null 2>&1 || missing+=(make)
command -v python3 >/dev/null 2>&1 || missing+=(python3)
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]} with apt-get"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi
prefix=$(dirname "$(dirname "$(command -v node)")")
if [ ! -f "$prefix/include/node/node_api.h" ]; then
  echo "setup: note: no Node.js headers under $prefix/include/node; node-gyp will download them" >&2
fi

# npm builds the addon against the installed Node's own headers when it can (no download).
if [ -z "${npm_config_nodedir:-}" ] && [ -f /usr/include/node/node_api.h ]; then
  export npm_config_nodedir=/usr
fi
npm ci
