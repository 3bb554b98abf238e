#!/usr/bin/env bash
# Builds a floor module (floor.c, or the file named by $2, e.g. loadfloor.c) into $1,
# against the redismodule.h that the redis-module crate ships (a dependency of rcache,
# so cargo has already fetched it).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
out="${1:?usage: build.sh OUT.so [SOURCE.c]}"
source="${2:-floor.c}"
manifest=$(cd "$here" && cargo metadata --format-version 1 2>/dev/null | python3 -c '
import json, sys
for p in json.load(sys.stdin)["packages"]:
    if p["name"] == "redis-module":
        print(p["manifest_path"])
        break')
[ -n "$manifest" ] || { echo "floor/build.sh: redis-module not found by cargo metadata" >&2; exit 2; }
cc -O2 -fPIC -shared -Wall -Wextra -I "$(dirname "$manifest")/src/include" -o "$out" "$here/$source"
