#!/usr/bin/env bash
# Memory-safety check of the module (issue 6, item 4).
#
# Runs a master and a replica redis-server, both under valgrind memcheck, with the
# module loaded; drives a scenario that touches every RCACHE command (successes and
# errors, ACL refusals included), expiry (lazy and active), eviction, purges, the
# keyspace operations the index follows (DEL, UNLINK, RENAME, MOVE, SWAPDB, RESTORE,
# FLUSHDB, SET over an entry, DEBUG RELOAD), leases with blocked clients (served,
# timed out, disconnected, handed over) and replication (full sync, then the
# stream); shuts both down cleanly so valgrind writes its reports, and reads them.
#
# Fails (exit 1) on any invalid read/write/free, use of uninitialised memory, or
# definite leak whose stack mentions the module (librcache / rcache::), or if the
# scenario, a server or valgrind fails. Findings in Redis' own code are counted and
# shown, not failed on. Prints a short summary; the full reports stay in the work dir.
#
# Usage: scripts/memcheck.sh            (builds target/release/librcache.so if missing)
# Env:   RCACHE_MODULE=path.so  REDIS_SERVER=redis-server  KEEP=1 (keep the work dir)
set -uo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
MODULE=${RCACHE_MODULE:-$ROOT/target/release/librcache.so}
REDIS_SERVER=${REDIS_SERVER:-redis-server}
command -v valgrind >/dev/null || { echo "memcheck: valgrind is not installed (apt-get install -y valgrind)"; exit 2; }
command -v redis-cli >/dev/null || { echo "memcheck: redis-cli is not installed"; exit 2; }
if [ ! -f "$MODULE" ]; then
    (cd "$ROOT" && cargo build --release) || exit 2
fi

WORK=$(mktemp -d /tmp/rcache-memcheck.XXXXXX)
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
MPORT=$(free_port); RPORT=$(free_port)
while [ "$RPORT" = "$MPORT" ]; do RPORT=$(free_port); done

# Debian's redis-server allocates with jemalloc: have valgrind replace its malloc
# family (libjemalloc.so.2), so every block the module gets through RedisModule_Alloc
# is tracked.
VALGRIND=(valgrind --tool=memcheck '--soname-synonyms=somalloc=libjemalloc.so*'
    --leak-check=full --show-leak-kinds=definite --errors-for-leak-kinds=definite
    --error-exitcode=97 --num-callers=40 --track-origins=yes
    --child-silent-after-fork=yes "--suppressions=$WORK/redis.supp")

# liblzf reads its (deliberately uninitialised) hash table: a known false positive in
# Redis' own RDB/DUMP code, unrelated to the module.
cat > "$WORK/redis.supp" <<'SUPP'
{
   redis-lzf-compress-cond
   Memcheck:Cond
   fun:lzf_compress
}
{
   redis-lzf-compress-value
   Memcheck:Value8
   fun:lzf_compress
}
SUPP

start() { # name port extra-args...; the process id is left in $!
    local name=$1 port=$2; shift 2
    mkdir -p "$WORK/$name"
    "${VALGRIND[@]}" --log-file="$WORK/$name.valgrind.log" \
        "$REDIS_SERVER" --port "$port" --bind 127.0.0.1 --dir "$WORK/$name" --logfile "$WORK/$name/redis.log" \
        --save "" --appendonly no --enable-debug-command local "$@" \
        --loadmodule "$MODULE" max-tags 8 max-vary 4 > "$WORK/$name.out" 2>&1 &
}

wait_up() { # port
    for _ in $(seq 1 600); do
        [ "$(redis-cli -p "$1" PING 2>/dev/null)" = "PONG" ] && return 0
        sleep 0.2
    done
    return 1
}

FAILED=0
fail() { echo "memcheck: scenario: $*"; FAILED=1; }
m() { redis-cli --no-auth-warning -p "$MPORT" "$@"; }
r() { redis-cli -p "$RPORT" "$@"; }
# expect WANT command...: the reply (redis-cli's raw form) must be WANT.
expect() { local want=$1; shift; local got; got=$(m "$@" 2>&1); [ "$got" = "$want" ] || fail "$* -> '$got', wanted '$want'"; }
# expect_err PREFIX command...
expect_err() { local want=$1; shift; local got; got=$(m "$@" 2>&1); [[ "$got" == "$want"* ]] || fail "$* -> '$got', wanted an error starting '$want'"; }

echo "memcheck: work dir $WORK; master :$MPORT, replica :$RPORT (both under valgrind; this takes a few minutes)"
start master "$MPORT"; MPID=$!
wait_up "$MPORT" || fail "master did not start"
start replica "$RPORT" --replicaof 127.0.0.1 "$MPORT"; RPID=$!
wait_up "$RPORT" || fail "replica did not start"

scenario() {
    # Every command, with every option, and their errors.
    expect OK RCACHE.SET /t/5/bracket v1 TAGS 2 t:5 bracket
    expect OK RCACHE.SET /t/5/bracket v2 QUERY '?page=2' VARY 2 Accept text/html Accept-Language en EX 3600
    expect OK RCACHE.SET /t/5 v3 PX 3600000 TAGS 1 t:5
    expect OK RCACHE.SET '{shop1}/p/7' v4 TAGS 3 p:7 shop1 p:7
    expect OK RCACHE.SET /t/50 v5
    expect v1 RCACHE.GET /t/5/bracket
    expect v2 RCACHE.GET /t/5/bracket QUERY page=2 VARY 2 accept-language en ACCEPT text/html
    expect "" RCACHE.GET /t/5/missing
    expect 'rcache:{/t/5}:-:-' RCACHE.KEY /t/5
    expect "$(printf '/t/5\n/t/5/bracket')" RCACHE.LIST /t/5
    expect /t/5/bracket RCACHE.LIST / COUNT 1 AFTER /t/5
    expect 1 RCACHE.DEL /t/50
    expect 0 RCACHE.DEL /t/50
    expect_err ERR RCACHE.SET /p
    expect_err ERR RCACHE.SET /p v EX 0
    expect_err ERR RCACHE.SET /p v PX 9223372036854775807
    expect_err ERR RCACHE.SET /p v VARY 18446744073709551615 a b
    expect_err ERR RCACHE.SET /p v TAGS 4294967296 a
    expect_err ERR RCACHE.SET /p v TAGS 9 a b c d e f g h i
    expect_err ERR RCACHE.SET '/p?x' v
    expect_err ERR RCACHE.SET '/{a}{b}' v
    expect_err ERR RCACHE.GET /p $'\xc4\x80'
    expect_err ERR RCACHE.GET /p VARY 1 '' x
    expect_err ERR RCACHE.LIST / COUNT 10001
    expect_err ERR RCACHE.PURGE / EXACT EXACT
    expect_err ERR RCACHE.PURGETAG ''
    expect_err ERR RCACHE.PURGE "/$(head -c 5000 /dev/zero | tr '\0' a)"
    m SET 'rcache:{/foreign}:-:-' 'not an entry' >/dev/null
    m RPUSH 'rcache:{/list}:-:-' x >/dev/null
    expect_err ERR RCACHE.GET /foreign
    expect_err WRONGTYPE RCACHE.GET /list
    expect OK RCACHE.SET /list v
    expect 1 RCACHE.DEL /foreign

    # Tenants: a refused PURGE / PURGETAG, then allowed ones.
    m ACL SETUSER site on '>pw' '~/site' '~/site/public/*' +@all >/dev/null
    expect OK RCACHE.SET /site v TAGS 1 shared
    expect OK RCACHE.SET /site/private/x v TAGS 1 shared
    expect_err NOPERM --user site --pass pw RCACHE.PURGE /site
    expect_err NOPERM --user site --pass pw RCACHE.PURGETAG shared
    expect_err NOPERM --user site --pass pw RCACHE.GET /site/private/x
    expect 1 --user site --pass pw RCACHE.PURGE /site EXACT

    # Purges.
    expect 3 RCACHE.PURGE /t/5
    expect 2 RCACHE.PURGETAG shared p:7 nothing
    expect 0 RCACHE.PURGE /nothing

    # The keyspace operations the index follows.
    for i in 1 2 3 4 5 6; do expect OK RCACHE.SET /k/$i v$i TAGS 1 k; done
    expect 1 DEL 'rcache:{/k/1}:-:-'
    expect 1 UNLINK 'rcache:{/k/2}:-:-'
    expect OK RENAME 'rcache:{/k/3}:-:-' 'rcache:{/k/30}:-:-'
    expect 1 MOVE 'rcache:{/k/4}:-:-' 1
    expect OK SET 'rcache:{/k/5}:-:-' plain
    expect 3 APPEND 'rcache:{/k/9}:-:-' abc
    expect OK EVAL "return redis.call('RESTORE', KEYS[2], 0, redis.call('DUMP', KEYS[1]))" 2 'rcache:{/k/6}:-:-' 'rcache:{/k/7}:-:-'
    expect 1 COPY 'rcache:{/k/6}:-:-' 'rcache:{/k/8}:-:-'
    expect 1 EXPIRE 'rcache:{/k/30}:-:-' 3600
    expect 1 PERSIST 'rcache:{/k/30}:-:-'
    expect "$(printf '/k/30\n/k/6\n/k/7\n/k/8')" RCACHE.LIST /k
    expect OK SWAPDB 0 1
    expect /k/4 RCACHE.LIST /k
    expect OK SWAPDB 0 1
    expect OK FLUSHDB
    expect 0 RCACHE.PURGETAG k

    # Expiry: active and lazy.
    for i in $(seq 1 20); do expect OK RCACHE.SET /exp/$i v PX 50; done
    expect OK RCACHE.SET /exp/lazy v PX 50
    sleep 2
    expect "" RCACHE.GET /exp/lazy

    # Eviction.
    expect OK CONFIG SET maxmemory-policy allkeys-random
    local used; used=$(m INFO memory | tr -d '\r' | sed -n 's/^used_memory://p')
    expect OK CONFIG SET maxmemory $((used + 300000))
    local value; value=$(head -c 20000 /dev/zero | tr '\0' x)
    for i in $(seq 1 60); do m RCACHE.SET /ev/$i "$value" TAGS 1 ev > /dev/null; done
    local evicted; evicted=$(m INFO stats | tr -d '\r' | sed -n 's/^evicted_keys://p')
    [ "${evicted:-0}" -gt 0 ] || fail "nothing was evicted"
    expect OK CONFIG SET maxmemory 0
    m RCACHE.PURGETAG ev > /dev/null
    expect OK RCACHE.SET /kept v TAGS 1 kept

    # Leases and blocked clients: a waiter served by a store, one timing out, one that
    # disconnects, one handed the lease when it expires; refused SET … LEASE.
    local tok; tok=$(m RCACHE.LOOKUP /l/1 LEASE 60000 | sed -n 6p)
    [ -n "$tok" ] || fail "no lease granted on /l/1"
    m RCACHE.LOOKUP /l/1 WAIT 60000 > "$WORK/lease-served.out" &
    local served=$!
    sleep 1
    expect "$(printf 'MISS\n\n\n\n\n')" RCACHE.LOOKUP /l/1 LEASE 1000 WAIT 300
    timeout 2 redis-cli -p "$MPORT" RCACHE.LOOKUP /l/1 LEASE 1000 WAIT 60000 > /dev/null
    expect OK RCACHE.SET /l/1 v LEASE "$tok"
    wait "$served"
    grep -q FRESH "$WORK/lease-served.out" || fail "the waiter on /l/1 was not served by the SET"
    expect "" RCACHE.SET /l/1 v LEASE "$tok"
    m RCACHE.LOOKUP /l/2 LEASE 500 > /dev/null
    local handed; handed=$(m RCACHE.LOOKUP /l/2 LEASE 60000 WAIT 60000 | sed -n 6p)
    [ -n "$handed" ] || fail "no lease handed over on /l/2 when the first one expired"
    expect 1 RCACHE.PURGE /l
    expect "" RCACHE.SET /l/2 v LEASE "$handed"
    [ "$(m INFO clients | tr -d '\r' | sed -n 's/^blocked_clients://p')" = 0 ] || fail "clients still blocked"

    # Settings, INFO, metadata.
    expect OK CONFIG SET rcache.max-path-len 16
    expect_err ERR RCACHE.SET /12345678901234567 v
    expect OK CONFIG SET rcache.max-path-len 4096
    m INFO rcache | grep -q rcache_entries || fail "INFO rcache has no entries field"
    m COMMAND DOCS rcache.purge > /dev/null
    m COMMAND GETKEYS RCACHE.GET /public/x > /dev/null

    # A reload: the index is rebuilt from the loaded data.
    expect OK RCACHE.SET /reload v TAGS 1 r
    expect OK DEBUG RELOAD
    expect /reload RCACHE.LIST /reload

    # The replica has applied it all.
    m WAIT 1 10000 > /dev/null
    local ok=0
    for _ in $(seq 1 100); do
        [ "$(r RCACHE.GET /kept)" = "v" ] && [ "$(r RCACHE.GET /reload)" = "v" ] && { ok=1; break; }
        sleep 0.2
    done
    [ $ok = 1 ] || fail "the replica did not receive the entries"
    expect 1 RCACHE.PURGE /reload
    m WAIT 1 10000 > /dev/null
    r INFO rcache > /dev/null
    r RCACHE.LIST / > /dev/null
    expect 1 RCACHE.PURGETAG kept
    m WAIT 1 10000 > /dev/null
    # Under valgrind the replica can take longer than WAIT's timeout to apply it.
    ok=0
    for _ in $(seq 1 100); do
        [ "$(r RCACHE.GET /kept)" = "" ] && { ok=1; break; }
        sleep 0.2
    done
    [ $ok = 1 ] || fail "the replica still serves a purged entry"
}

if [ $FAILED = 0 ]; then scenario; fi

# Clean shutdowns, so valgrind writes full reports (and runs leak checks).
r SHUTDOWN NOSAVE > /dev/null 2>&1
wait "$RPID"; RSTATUS=$?
m SHUTDOWN NOSAVE > /dev/null 2>&1
wait "$MPID"; MSTATUS=$?

# ---- Reading the reports ----
# Valgrind prints one record per error, blocks separated by "==PID== " lines.
analyse() { # log -> prints "errors module_invalid module_leaks other_invalid definite_bytes definite_blocks"
    awk '
        function flush() {
            if (rec == "") return
            invalid = (rec ~ /Invalid (read|write|free)|uninitialised|Mismatched free|Source and destination overlap|Syscall param|Jump to the invalid address|Argument .* of function .* has a fishy/)
            leak = (rec ~ /definitely lost in loss record/)
            mod = (rec ~ /librcache|rcache::/)
            if (invalid && mod) mi++
            if (invalid && !mod) oi++
            if (leak && mod) ml++
            if ((invalid || leak) && mod) { print rec > "/dev/stderr" }
            rec = ""
        }
        { line = $0; sub(/^==[0-9]+== ?/, "", line) }
        line == "" { flush(); next }
        { rec = rec line "\n" }
        /ERROR SUMMARY:/ { errs = $4 }
        /definitely lost:/ { dbytes = $4; dblocks = $7; gsub(/,/, "", dbytes); gsub(/,/, "", dblocks) }
        END { flush(); printf "%s %d %d %d %s %s\n", (errs == "" ? "missing" : errs), mi, ml, oi, (dbytes == "" ? 0 : dbytes), (dblocks == "" ? 0 : dblocks) }
    ' "$1"
}

echo
echo "memcheck summary (valgrind memcheck; full reports in $WORK):"
for name in master replica; do
    log="$WORK/$name.valgrind.log"
    read -r errs mi ml oi dbytes dblocks < <(analyse "$log" 2> "$WORK/$name.module-findings.txt")
    status=$([ $name = master ] && echo $MSTATUS || echo $RSTATUS)
    printf '  %-8s valgrind errors: %s; invalid accesses in librcache: %d; definite leaks in librcache: %d; definitely lost (all): %s bytes in %s blocks; invalid accesses elsewhere: %d; exit status %s\n' \
        "$name" "$errs" "$mi" "$ml" "$dbytes" "$dblocks" "$oi" "$status"
    if [ "$errs" = missing ]; then echo "  $name: no valgrind summary (did the server crash?)"; FAILED=1; fi
    if [ "$mi" -gt 0 ] || [ "$ml" -gt 0 ]; then
        echo "  $name: findings attributed to librcache:"; sed 's/^/    /' "$WORK/$name.module-findings.txt" | head -80
        FAILED=1
    fi
    if grep -q "internal error" "$WORK/$name/redis.log" 2>/dev/null; then echo "  $name: the module logged an internal error"; FAILED=1; fi
done

if [ $FAILED = 0 ]; then
    echo "memcheck: PASS (no invalid access and no definite leak attributed to librcache)"
    [ "${KEEP:-0}" = 1 ] || rm -rf "$WORK"
    exit 0
fi
echo "memcheck: FAIL (reports kept in $WORK)"
exit 1
