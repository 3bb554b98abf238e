#!/usr/bin/env bash
# rcache benchmark suite entry point.
#   bench/run.sh full    N=1,000,000 entries, writes bench/RESULTS.md (takes ~15-25 min)
#   bench/run.sh quick   N=100,000 entries, writes bench/RESULTS.md (< 2 min)
#   bench/run.sh hotpath N=1,000,000, native and rcache only: the hot-path cases of
#                        bench/hotpath.py (issue 12); writes to a temp dir
#   bench/run.sh smoke   N=3,000 entries, < 60 s, checks every scheme did its work;
#                        writes to a temp dir, never touches bench/RESULTS.md
# Extra arguments are passed to bench/bench.py (see --help), e.g. --n 200000;
# bench/housekeeping.py runs after it (see its --help).
# Exit status: 0 = ran and every check passed (a missed performance target is
# reported in RESULTS.md, not an error); non-zero = something failed.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
mode="${1:-}"
case "$mode" in
  full|quick|smoke|hotpath) shift ;;
  *) echo "usage: $0 {full|quick|smoke|hotpath} [bench.py options]" >&2; exit 2 ;;
esac
py="${PYTHON:-python3}"
for tool in redis-server redis-benchmark "$py"; do
  command -v "$tool" >/dev/null 2>&1 || { echo "run.sh: $tool not found in PATH" >&2; exit 2; }
done
if ! "$py" -c 'import redis' >/dev/null 2>&1; then
  echo "run.sh: installing Python dependencies (bench/requirements.txt)" >&2
  "$py" -m pip install --quiet --disable-pip-version-check -r "$here/requirements.txt" >&2 \
    || "$py" -m pip install --quiet --disable-pip-version-check --user -r "$here/requirements.txt" >&2 \
    || { echo "run.sh: could not pip install $(cat "$here/requirements.txt")" >&2; exit 2; }
  "$py" -c 'import redis' || { echo "run.sh: redis-py still not importable" >&2; exit 2; }
fi
limit=7200
[ "$mode" = quick ] && limit=900
[ "$mode" = hotpath ] && limit=3600
[ "$mode" = smoke ] && limit=150
timeout --kill-after=20 "$limit" "$py" "$here/bench.py" "$mode" "$@"
# Housekeeping stalls (MODULE LOAD, DEBUG RELOAD, FLUSHALL [ASYNC]) next to plain Redis,
# with the same N: bench/HOUSEKEEPING.md (smoke: a temp file). RCACHE_MODULE selects the module.
exec timeout --kill-after=20 "$limit" "$py" "$here/housekeeping.py" "$mode"
