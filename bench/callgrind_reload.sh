#!/usr/bin/env bash
# Instructions per loaded key of DEBUG RELOAD NOSAVE, per thread (callgrind runs the
# threads one at a time, so no thread slows another here): plain Redis, the module-API
# floor of indexing a load (floor/loadfloor.c) and rcache, on one RDB of N entries shaped
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

# measure NAME [MODULE]: prints "main other" instructions per key of one DEBUG RELOAD NOSAVE
measure() {
  local name=$1 dir="$work/$1" load=() port main=0 other=0 f ir
  [ $# -gt 1 ] && load=(--loadmodule "$2")
  mkdir "$dir"
  cp "$work/make/dump.rdb" "$dir/"
  port=$(free_port)
  valgrind --tool=callgrind --instr-atstart=no --separate-threads=yes --callgrind-out-file="$dir/cg.out" \
    redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no --dir "$dir" \
    --logfile redis.log --enable-debug-command yes "${load[@]}" >"$dir/valgrind.log" 2>&1 &
  pid=$!
  wait_up "$port"
  callgrind_control -i on "$pid" >/dev/null 2>&1
  redis-cli -p "$port" debug reload nosave >/dev/null
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

read -r plain_main plain_other <<<"$(measure plain)"
read -r floor_main floor_other <<<"$(measure floor "$work/loadfloor.so")"
read -r rc_main rc_other <<<"$(measure rcache "$module")"
pct() { python3 -c "print('%+.0f %%' % (100.0 * ($1 - $2) / $2))"; }
printf "%-28s %18s %16s %22s\n" "DEBUG RELOAD NOSAVE, N=$n" "main thread Ir/key" "vs plain Redis" "other threads Ir/key"
printf "%-28s %18s %16s %22s\n" "plain Redis" "$plain_main" "" "$plain_other"
printf "%-28s %18s %16s %22s\n" "module-API floor" "$floor_main" "$(pct "$floor_main" "$plain_main")" "$floor_other"
printf "%-28s %18s %16s %22s\n" "rcache" "$rc_main" "$(pct "$rc_main" "$plain_main")" "$rc_other"
