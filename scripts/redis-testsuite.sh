#!/usr/bin/env bash
# Runs Redis' own Tcl test suite twice against the installed redis-server: once plain,
# once with rcache loaded into every server the suite starts (`--config loadmodule`, as
# an operator's redis.conf would), and lists the tests whose outcome differs.
# Not part of `make test`: the whole suite takes about an hour on 2 cores.
#
#   scripts/redis-testsuite.sh                       # every unit (runtest's default list)
#   scripts/redis-testsuite.sh --single integration/replication --single integration/replication-4
#
# Any arguments are passed to both runs of Redis' `runtest`.
# Environment:
#   RCACHE_MODULE  the module (default: target/release/librcache.so of this checkout)
#   REDIS_SRC      a Redis source tree of the installed redis-server's version (its
#                  tests/ and runtest are used; its binaries are not). Default: Debian's
#                  source package, fetched once with `apt-get source redis` into
#                  ${XDG_CACHE_HOME:-~/.cache}/rcache/ — this needs a `deb-src` line in
#                  the APT sources (e.g. `deb-src http://deb.debian.org/debian bookworm main`,
#                  then `apt-get update`); nothing else is downloaded. Or point REDIS_SRC at a
#                  checkout of the matching tag of https://github.com/redis/redis.
#   CLIENTS        parallel test clients (default 4)
#   OUT            where logs and results go (default target/redis-testsuite)
# Exit status: 0 when no test fails with rcache that did not fail plain; 1 when some do
# (they are listed; rerun them with --single to tell a timing flake from a real
# difference); 2 on a setup error.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
module="$(realpath "${RCACHE_MODULE:-$repo/target/release/librcache.so}")"
out="${OUT:-$repo/target/redis-testsuite}"
clients="${CLIENTS:-4}"
die() { echo "redis-testsuite: $*" >&2; exit 2; }

[ -f "$module" ] || die "module not built: $module (run \`make build\`)"
for tool in redis-server redis-cli redis-benchmark redis-check-aof redis-check-rdb tclsh; do
  command -v "$tool" >/dev/null 2>&1 || die "$tool not found in PATH"
done
version="$(redis-server --version | sed -n 's/.* v=\([0-9][0-9.]*\) .*/\1/p')"
[ -n "$version" ] || die "cannot tell redis-server's version"

if [ -z "${REDIS_SRC:-}" ]; then
  cache="${XDG_CACHE_HOME:-$HOME/.cache}/rcache"
  REDIS_SRC="$(find "$cache" -maxdepth 1 -type d -name "redis-$version*" 2>/dev/null | head -1)"
  if [ -z "$REDIS_SRC" ]; then
    mkdir -p "$cache"
    echo "redis-testsuite: fetching Debian's source package of redis $version into $cache" >&2
    (cd "$cache" && apt-get source --only-source "redis=$(dpkg-query -W -f '${Version}' redis-server)" >&2) \
      || die "apt-get source failed: enable a deb-src line and apt-get update, or set REDIS_SRC"
    REDIS_SRC="$(find "$cache" -maxdepth 1 -type d -name "redis-$version*" | head -1)"
  fi
fi
[ -f "$REDIS_SRC/tests/test_helper.tcl" ] || die "no Redis test suite in REDIS_SRC=$REDIS_SRC"
src_version="$(sed -n 's/^#define REDIS_VERSION "\(.*\)"/\1/p' "$REDIS_SRC/src/version.h" 2>/dev/null || true)"
[ -z "$src_version" ] || [ "$src_version" = "$version" ] \
  || die "REDIS_SRC is Redis $src_version but redis-server is $version"

# A private tree: the suite's tests with this machine's binaries where it expects its own.
tree="$out/tree"
rm -rf "$tree"
mkdir -p "$tree/src"
cp -r "$REDIS_SRC/tests" "$tree/"
cp "$REDIS_SRC/runtest" "$tree/"
for b in redis-server redis-cli redis-benchmark redis-check-aof redis-check-rdb; do
  ln -s "$(command -v "$b")" "$tree/src/$b"
done

run() { # name, runtest args...
  local name="$1"; shift
  echo "redis-testsuite: running the suite $name (log: $out/$name.log)" >&2
  rm -rf "$tree/tests/tmp"; mkdir -p "$tree/tests/tmp"
  (cd "$tree" && ./runtest --clients "$clients" "$@") >"$out/$name.log" 2>&1 || true
  # "[ok]: name (12 ms)" / "[err]: name in file" / "[exception]: ..." (colours removed)
  # -> "status<TAB>name"
  sed -E 's/\x1b\[[0-9;]*m//g' "$out/$name.log" \
    | sed -n -E 's/^\[(ok|err|exception|skip|ignore)\]: (.*)$/\1\t\2/p' \
    | sed -E 's/ \([0-9]+ ms\)$//; s/ in tests\/[^ ]*$//' | sort -u >"$out/$name.results"
}

mkdir -p "$out"
run plain "$@"
run rcache --config loadmodule "$module" "$@"

count() { grep -c "^$1	" "$out/$2.results" || true; }
failed() { grep -E '^(err|exception)	' "$out/$1.results" | cut -f2- | sort -u; }
# Compared by failures, not by passes: some test names carry random values (PSYNC2's).
worse="$(comm -23 <(failed rcache) <(failed plain) || true)"
better="$(comm -13 <(failed rcache) <(failed plain) || true)"
{
  echo "Redis $version test suite, runtest args: ${*:-(all units)}"
  for name in plain rcache; do
    echo "$name: $(count ok "$name") ok, $(count err "$name") err, $(count exception "$name") exception, $(count skip "$name") skipped"
    grep -q "All tests passed without errors" "$out/$name.log" && echo "$name: All tests passed without errors"
  done
  echo "failed with rcache, not plain: $(printf '%s' "$worse" | grep -c . || true)"
  [ -z "$worse" ] || printf '%s\n' "$worse" | sed 's/^/  /'
  echo "failed plain, not with rcache: $(printf '%s' "$better" | grep -c . || true)"
  [ -z "$better" ] || printf '%s\n' "$better" | sed 's/^/  /'
} | tee "$out/summary.txt"
[ -z "$worse" ]
