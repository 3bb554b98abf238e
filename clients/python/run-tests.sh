#!/usr/bin/env bash
# Type-check the package (mypy --strict), then run the Python suites:
# clients/python/tests (client, Django through its test client and under gunicorn
# and uvicorn over HTTP) and tests/python (the language-neutral "any client"
# proof), against throw-away redis-servers with the rcache module loaded.
#
#   RCACHE_MODULE  the module to load (default: <repo>/target/release/librcache.so)
#   REDIS_SERVER   the redis-server binary (default: redis-server)
#   PYTHON         the interpreter (default: python3)
# Extra arguments are passed to pytest (e.g. -k purge, -x, or test files to run only those).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
py="${PYTHON:-python3}"
export RCACHE_MODULE="${RCACHE_MODULE:-$repo/target/release/librcache.so}"

pip_install() {
    "$py" -m pip install --quiet --disable-pip-version-check --root-user-action=ignore "$@" 2>/dev/null \
        || "$py" -m pip install --quiet --disable-pip-version-check "$@"
}

# Python dependencies (pinned), only when missing.
missing=()
need() {  # need <distribution> <pinned requirement>
    "$py" -c "import importlib.metadata as m, sys; m.version(sys.argv[1])" "$1" 2>/dev/null || missing+=("$2")
}
need redis "redis==5.3.1"
need pytest "pytest==9.2.0"
need pytest-django "pytest-django==4.14.0"
need Django "Django==5.2.19"
need django-redis "django-redis==7.0.0"
need mypy "mypy==1.15.0"
need django-stubs "django-stubs==5.2.0"
need gunicorn "gunicorn==23.0.0"
need uvicorn "uvicorn==0.34.0"
if ((${#missing[@]})); then
    echo "run-tests.sh: installing ${missing[*]}"
    pip_install "${missing[@]}"
fi

# The package is imported from this checkout (tests/conftest.py puts it first on
# sys.path; PYTHONPATH for mypy and the test servers), never installed: several
# checkouts may run their tests at once on one machine.
export PYTHONPATH="$here${PYTHONPATH:+:$PYTHONPATH}"

if [[ ! -f "$RCACHE_MODULE" ]]; then
    echo "run-tests.sh: warning: $RCACHE_MODULE does not exist; the server tests will fail" >&2
fi

cd "$repo"
# The package is typed: mypy --strict (settings in pyproject.toml) before the tests.
"$py" -m mypy --config-file clients/python/pyproject.toml clients/python/rcache
# Settings come from clients/python/pyproject.toml ([tool.pytest.ini_options]).
# Test paths among the arguments replace the default ones.
paths=(clients/python/tests tests/python)
for arg in "$@"; do
    if [[ -e "${arg%%::*}" ]]; then paths=(); break; fi
done
exec "$py" -m pytest -c clients/python/pyproject.toml --rootdir "$repo" -q -ra "$@" "${paths[@]}"
