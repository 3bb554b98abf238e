#!/usr/bin/env bash
# Instructions per loaded key of DEBUG RELOAD NOSAVE, per thread (callgrind runs the
# threads one at a time, so no thread slows another here): plain Redis, the module-API
# floor of indexing a load (floor/loadfloor.c) and rcache; and of MODULE LOAD into the
# populated server, the floor's scan and rcache's, on one RDB of N entries shaped
# like bench/housekeeping.py's (100 B values, every 10th tagged). Deterministic, unlike
# the CPU times of housekeeping.py: what issue 14, item 4 is decided on.
#   bench/callgrind_reload.sh [N, default 100000]
# Needs valgrind, callgrind_annotate, callgrind_control, redis-server, redis-cli, cc and
# python3 with the redis package; the module is $RCACHE_MODULE or target/release/librcache.so.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
module="${RCACHE_MODULE:-$here/../target/release/librcache.so}"
n="${1:-100000}"
for tool in valgrind callgrind_annotate callgrind_control redis-server redis-cli python3; do
  command -v "$tool" >/dev/null 2>&1 || { echo "callgrind_reload.sh: $tool not found in PATH" >&2; exit 2; }
done
[ -f "$module" ] || { echo "callgrind_reload.sh: module $module not found (cargo build --release)" >&2; exit 2; }
work="$(mktemp -d)"
pid=""
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null; wait 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
"$here/floor/build.sh" "$work/loadfloor.so" loadfloor.c

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
wait_up() { for _ in $(seq 3000); do [ "$(redis-cli -p "$1" ping 2>/dev/null)" = PONG ] && return; sleep 0.2; done; exit 1; }

# The dataset, written through the module and saved once.
port=$(free_port)
mkdir "$work/make"
redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no --dir "$work/make" \
  --logfile redis.log --loadmodule "$module" >/dev/null 2>&1 &
pid=$!
wait_up "$port"
python3 - "$here" "$port" "$n" <<'PY'
import sys
sys.path.insert(0, sys.argv[1]); sys.dont_write_bytecode = True
from housekeeping import populate
populate(int(sys.argv[2]), int(sys.argv[3]))
PY
redis-cli -p "$port" save >/dev/null
redis-cli -p "$port" shutdown nosave >/dev/null 2>&1 || true
wait "$pid" 2>/dev/null || true
pid=""

# measure NAME reload|modload [MODULE [ARG]]: prints "main other" instructions per key of one
# DEBUG RELOAD NOSAVE (MODULE loaded at start), or of MODULE LOAD MODULE [ARG] into the
# populated server
measure() {
  local name=$1 what=$2 dir="$work/$1" load=() port main=0 other=0 f ir
  [ "$what" = reload ] && [ $# -gt 2 ] && load=(--loadmodule "$3")
  mkdir "$dir"
  cp "$work/make/dump.rdb" "$dir/"
  port=$(free_port)
  valgrind --tool=callgrind --instr-atstart=no --separate-threads=yes --callgrind-out-file="$dir/cg.out" \
    redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no --dir "$dir" \
    --logfile redis.log --enable-debug-command yes --enable-module-command yes "${load[@]}" >"$dir/valgrind.log" 2>&1 &
  pid=$!
  wait_up "$port"
  callgrind_control -i on "$pid" >/dev/null 2>&1
  if [ "$what" = reload ]; then
    redis-cli -p "$port" debug reload nosave >/dev/null
  else
    [ "$(redis-cli -p "$port" module load "${@:3}")" = OK ] || { echo "callgrind_reload.sh: MODULE LOAD $3 failed" >&2; exit 1; }
  fi
  callgrind_control -d "$pid" >/dev/null 2>&1
  [ "$(redis-cli -p "$port" dbsize)" = "$n" ] || { echo "callgrind_reload.sh: $name lost keys" >&2; exit 1; }
  redis-cli -p "$port" shutdown nosave >/dev/null 2>&1 || true
  wait "$pid" 2>/dev/null || true
  pid=""
  # The dump's files are cg.out.1-<thread>; thread 1 is Redis' main thread.
  for f in "$dir"/cg.out.1-*; do
    ir=$(awk '/^summary:/ { print $2 }' "$f")
    case "$f" in *-01) main=$ir ;; *) other=$((other + ${ir:-0})) ;; esac
  done
  echo "$((main / n)) $((other / n))"
}

read -r plain_main plain_other <<<"$(measure plain reload)"
read -r floor_main floor_other <<<"$(measure floor reload "$work/loadfloor.so")"
read -r rc_main rc_other <<<"$(measure rcache reload "$module")"
read -r floor_scan floor_scan_other <<<"$(measure floor-scan modload "$work/loadfloor.so" scan)"
read -r rc_scan rc_scan_other <<<"$(measure rcache-scan modload "$module")"
pct() { python3 -c "print('%+.0f %%' % (100.0 * ($1 - $2) / $2))"; }
share() { python3 -c "print('%.0f %% of it' % (100.0 * $1 / $2))"; }
row() { printf "%-44s %18s %18s %22s\n" "$@"; }
row "N=$n" "main thread Ir/key" "vs plain reload" "other threads Ir/key"
row "DEBUG RELOAD NOSAVE, plain Redis" "$plain_main" "" "$plain_other"
row "DEBUG RELOAD NOSAVE, module-API floor" "$floor_main" "$(pct "$floor_main" "$plain_main")" "$floor_other"
row "DEBUG RELOAD NOSAVE, rcache" "$rc_main" "$(pct "$rc_main" "$plain_main")" "$rc_other"
row "MODULE LOAD, module-API floor (a scan)" "$floor_scan" "$(share "$floor_scan" "$plain_main")" "$floor_scan_other"
row "MODULE LOAD, rcache" "$rc_scan" "$(share "$rc_scan" "$plain_main")" "$rc_scan_other"
