#!/usr/bin/env bash
# Installs what building and testing need on a fresh Debian machine, only if missing:
# redis-server (with redis-cli and redis-benchmark) and libclang (bindgen needs it).
set -euo pipefail
need=()
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
command -v redis-benchmark >/dev/null 2>&1 || need+=(redis-tools)
dpkg -s libclang-dev >/dev/null 2>&1 || need+=(libclang-dev)
[ "${#need[@]}" -eq 0 ] && exit 0
sudo=""
[ "$(id -u)" -eq 0 ] || sudo=sudo
echo "installing: ${need[*]}"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}" >/dev/null
