#!/usr/bin/env bash
# Instructions per command of the whole redis-server process (user space, callgrind),
# native GET / SET PX against RCACHE.GET / LOOKUP / SET with QUERY, 1 KB values, and
# the reads through the module-API floor (bench/floor/floor.c: what any module pays).
# Deterministic, unlike throughput on a shared machine: the figures bench/ANALYSIS.md
# uses to decide and to say what each change removed. The kernel's share (socket
# reads and writes, about the same for both) is not counted.
#   bench/callgrind.sh [requests per case, default 20000]
# Needs valgrind, redis-server, redis-benchmark, redis-cli and callgrind_annotate;
# the module is $RCACHE_MODULE or target/release/librcache.so.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
module="${RCACHE_MODULE:-$here/../target/release/librcache.so}"
n="${1:-20000}"
for tool in valgrind callgrind_annotate callgrind_control redis-server redis-benchmark redis-cli python3; do
  command -v "$tool" >/dev/null 2>&1 || { echo "callgrind.sh: $tool not found in PATH" >&2; exit 2; }
done
[ -f "$module" ] || { echo "callgrind.sh: module $module not found (cargo build --release)" >&2; exit 2; }
work="$(mktemp -d)"
"$here/floor/build.sh" "$work/floor.so"
pid=""
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null; wait 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT

value="$(head -c 1024 /dev/zero | tr '\0' 'x')"
path="/s/hot/t/0/phase/0/match/__rand_int__"
query="lang=en&page=2"
# Same length as rcache's key for this path and query (rcache:{path}:<md5 hex>:-).
native_key="native:{$path}:$(printf %s "$query" | md5sum | cut -c1-32):-"

# measure SCHEME OP: prints instructions per command
measure() {
  local scheme=$1 op=$2 port dir out
  port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  dir="$work/$scheme-$op"
  mkdir -p "$dir"
  local load=() set_cmd get_cmd cmd
  [ "$scheme" != native ] && load=(--loadmodule "$module")
  [ "$scheme" = floor ] && load+=(--loadmodule "$work/floor.so" "${native_key#native:\{$path\}}" 1024)
  if [ "$scheme" != native ]; then
    set_cmd=(RCACHE.SET "$path" "$value" PX 3600000 QUERY "$query")
    get_cmd=("${scheme^^}.$op" "$path" QUERY "$query")
  else
    set_cmd=(SET "$native_key" "$value" PX 3600000)
    get_cmd=(GET "$native_key")
  fi
  if [ "$op" = SET ]; then cmd=("${set_cmd[@]}"); else cmd=("${get_cmd[@]}"); fi
  valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$dir/cg.out" \
    redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no --dir "$dir" \
    --logfile redis.log "${load[@]}" >"$dir/valgrind.log" 2>&1 &
  pid=$!
  for _ in $(seq 150); do redis-cli -p "$port" ping >/dev/null 2>&1 && break; sleep 0.2; done
  # 1,000 entries, then the measured requests on them (SET refreshes existing entries).
  redis-benchmark -p "$port" -c 10 -n 30000 -r 1000 -P 16 "${set_cmd[@]}" >/dev/null 2>&1
  callgrind_control -i on "$pid" >/dev/null 2>&1
  redis-benchmark -p "$port" -c 10 -n "$n" -r 1000 -P 16 "${cmd[@]}" >/dev/null 2>&1
  callgrind_control -d "$pid" >/dev/null 2>&1
  redis-cli -p "$port" shutdown nosave >/dev/null 2>&1 || true
  wait "$pid" 2>/dev/null || true
  pid=""
  out=$(ls "$dir"/cg.out.* | head -1)
  callgrind_annotate "$out" 2>/dev/null | awk -v n="$n" '/PROGRAM TOTALS/ { gsub(",", "", $1); printf "%.0f", $1 / n }'
}

printf "%-8s %14s %14s %14s %8s %8s\n" op "native Ir/cmd" "rcache Ir/cmd" "floor Ir/cmd" rcache/n floor/n
for op in GET LOOKUP SET; do
  nat=$(measure native "$op")
  rc=$(measure rcache "$op")
  fl=-
  [ "$op" != SET ] && fl=$(measure floor "$op")
  printf "%-8s %14s %14s %14s %8.2f %8s\n" "$op" "$nat" "$rc" "$fl" "$(python3 -c "print($rc / $nat)")" \
    "$([ "$fl" = - ] && echo - || python3 -c "print('%.2f' % ($fl / $nat))")"
done
echo "(whole server, user space, per pipelined request of 1 KB with QUERY; LOOKUP's native is GET)"
