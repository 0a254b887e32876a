#!/usr/bin/env bash
# Installs what vhost-user needs on a fresh Debian machine: qemu-storage-daemon (the reference
# backend the tests and the demo talk to) and the npm dependencies (which also build the native
# addon and the TypeScript). Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v qemu-storage-daemon >/dev/null 2>&1; then
  echo "setup: installing qemu-storage-daemon (Debian package qemu-system-common)"
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq qemu-system-common >/dev/null
fi

# npm builds the addon against the installed Node's own headers when it can (no download).
if [ -z "${npm_config_nodedir:-}" ] && [ -f /usr/include/node/node_api.h ]; then
  export npm_config_nodedir=/usr
fi
npm ci
