#!/usr/bin/env bash
# Run the Python suites: clients/python/tests (client + Django) and tests/python
# (the language-neutral "any client" proof), against a throw-away redis-server
# with the rcache module loaded.
#
#   RCACHE_MODULE  the module to load (default: <repo>/target/release/librcache.so)
#   REDIS_SERVER   the redis-server binary (default: redis-server)
#   PYTHON         the interpreter (default: python3)
# Extra arguments are passed to pytest (e.g. -k purge, -x).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
py="${PYTHON:-python3}"
export RCACHE_MODULE="${RCACHE_MODULE:-$repo/target/release/librcache.so}"

pip_install() {
    "$py" -m pip install --quiet --disable-pip-version-check --root-user-action=ignore "$@" 2>/dev/null \
        || "$py" -m pip install --quiet --disable-pip-version-check "$@"
}

# Python dependencies, only when missing.
missing=()
"$py" -c 'import redis' 2>/dev/null || missing+=("redis>=4.5")
"$py" -c 'import pytest' 2>/dev/null || missing+=("pytest>=7")
"$py" -c 'import pytest_django' 2>/dev/null || missing+=("pytest-django>=4.5")
"$py" -c 'import django' 2>/dev/null || missing+=("Django>=4.2")
"$py" -c 'import django_redis' 2>/dev/null || missing+=("django-redis>=5")
if ((${#missing[@]})); then
    echo "run-tests.sh: installing ${missing[*]}"
    pip_install "${missing[@]}"
fi

# The package itself, editable, unless this checkout's copy is already what imports.
if [[ "$("$py" -c 'import rcache, os; print(os.path.dirname(os.path.dirname(os.path.realpath(rcache.__file__))))' 2>/dev/null || true)" != "$(realpath "$here")" ]]; then
    pip_install --no-deps -e "$here"
fi

if [[ ! -f "$RCACHE_MODULE" ]]; then
    echo "run-tests.sh: warning: $RCACHE_MODULE does not exist; the server tests will fail" >&2
fi

cd "$repo"
# Settings come from clients/python/pyproject.toml ([tool.pytest.ini_options]).
exec "$py" -m pytest -c clients/python/pyproject.toml --rootdir "$repo" -q -ra "$@" clients/python/tests tests/python
