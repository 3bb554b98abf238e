"""The four caching schemes compared by the benchmark.

Every scheme stores the same logical entries (path, variant) with the same
value and TTL; they differ in key naming, write command and purge strategy.
"""
import hashlib
import time

from resp import Raw, RespError, encode

TTL_MS = 3_600_000  # entries never expire during a run

QUERY = "lang=en&page=2"
VARY = (("accept-encoding", "gzip"),)
# variant index -> (query, vary pairs)
VARIANTS = {0: (None, ()), 1: (QUERY, ()), 2: (QUERY, VARY)}


def _md5(b):
    return hashlib.md5(b).hexdigest()


def _vary_encoding(pairs):
    # length-prefixed canonical encoding; only the digest *length* matters for
    # the non-rcache schemes (rcache computes its own digest).
    canon = sorted((n.lower(), v) for n, v in pairs)
    out = b"".join(b"%d:%s%d:%s" % (len(n), n.encode(), len(v), v.encode()) for n, v in canon)
    return out


QH = {None: "-", QUERY: _md5(QUERY.encode())}
VH = {(): "-", VARY: _md5(_vary_encoding(VARY))}


def suffix(v):
    q, vary = VARIANTS[v]
    return "%s:%s" % (QH[q], VH[vary])


def rcache_opts(v):
    q, vary = VARIANTS[v]
    out = []
    if q is not None:
        out += ["QUERY", q]
    if vary:
        out += ["VARY", str(len(vary))]
        for n, val in vary:
            out += [n, val]
    return out


class Scheme:
    name = "?"
    label = "?"
    purge_cmds = ()        # commandstats names summed for server busy time
    get_cmd_stat = None    # commandstats name of a read
    set_cmd_stat = None    # commandstats name of a write
    has_purge = True

    def __init__(self, server):
        self.server = server
        self.raw = None

    def connect(self):
        self.raw = Raw(self.server.port)
        self.setup()

    def close(self):
        if self.raw:
            self.raw.close()
            self.raw = None

    def setup(self):
        pass

    # --- commands (args lists; path may contain __rand_int__) ---
    def key(self, path, v):
        raise NotImplementedError

    def set_args(self, path, v, value):
        return ["SET", self.key(path, v), value, "PX", str(TTL_MS)]

    def get_args(self, path, v):
        return ["GET", self.key(path, v)]

    def load_cmd(self, path, v, value):
        return encode(*self.set_args(path, v, value))

    def get_cmd(self, path, v):
        return encode(*self.get_args(path, v))

    def is_live(self, path, v):
        r = self.raw.call_raw(self.get_cmd(path, v))
        if isinstance(r, RespError):
            raise r
        return r is not None

    def purge(self, prefix):
        raise NotImplementedError

    def purge_tagged(self, tag, prefix):
        """Purges the entries carrying `tag` (which are exactly those under `prefix`)."""
        raise NotImplementedError


class Native(Scheme):
    """Plain GET / SET PX on keys of the same length as rcache's: the ceiling."""
    name = "native"
    label = "native GET/SET"
    get_cmd_stat = "get"
    set_cmd_stat = "set"
    has_purge = False

    def key(self, path, v):
        # "native:" has the same length as "rcache:"
        return "native:{%s}:%s" % (path, suffix(v))


class Rcache(Scheme):
    name = "rcache"
    label = "rcache"
    purge_cmds = ("rcache.purge", "rcache.purgetag")
    get_cmd_stat = "rcache.get"
    set_cmd_stat = "rcache.set"

    def key(self, path, v):
        return "rcache:{%s}:%s" % (path, suffix(v))  # expected layout, checked against RCACHE.KEY

    def set_args(self, path, v, value):
        return ["RCACHE.SET", path, value, "PX", str(TTL_MS)] + rcache_opts(v)

    def get_args(self, path, v):
        return ["RCACHE.GET", path] + rcache_opts(v)

    def real_key(self, path, v):
        r = self.raw.call("RCACHE.KEY", path, *rcache_opts(v))
        return r.decode() if isinstance(r, bytes) else r

    def purge(self, prefix):
        return self.raw.call("RCACHE.PURGE", prefix)

    def purge_tagged(self, tag, prefix):
        return self.raw.call("RCACHE.PURGETAG", tag)


class ScanPurge(Scheme):
    """django-redis style: readable keys, purge = SCAN MATCH + UNLINK batches."""
    name = "scan"
    label = "SCAN purge"
    purge_cmds = ("scan", "unlink")
    get_cmd_stat = "get"
    set_cmd_stat = "set"
    prefix = "c"

    def key(self, path, v):
        return "%s:1:%s:%s" % (self.prefix, path, suffix(v))

    def purge(self, prefix):
        p = prefix.rstrip("/") if prefix != "/" else ""
        # covers "<p>:" (the path itself, any variant) and "<p>/..." (descendants)
        esc = "".join("\\" + c if c in "*?[]\\" else c for c in p)
        pattern = "%s:1:%s[:/]*" % (self.prefix, esc)
        cursor = b"0"
        pending = []
        removed = 0
        while True:
            cursor, keys = self.raw.call("SCAN", cursor, "MATCH", pattern, "COUNT", "1000")
            pending.extend(keys)
            while len(pending) >= 1000:
                removed += self.raw.call("UNLINK", *pending[:1000])
                del pending[:1000]
            if cursor == b"0":
                break
        if pending:
            removed += self.raw.call("UNLINK", *pending)
        return removed


LUA_WRITE = r"""
local key = KEYS[1]
redis.call('SET', key, ARGV[1], 'PX', ARGV[2])
local path = string.match(key, '^[^{]*{(.*)}:')
local n = 0
local i = 1
while true do
  local j = string.find(path, '/', i + 1, true)
  local p
  if j then p = string.sub(path, 1, j - 1) else p = path end
  if #p > 0 then
    redis.call('SADD', 'lt:' .. p, key)
    n = n + 1
  end
  if not j then break end
  i = j
end
return n
"""

LUA_PURGE = r"""
local members = redis.call('SMEMBERS', KEYS[1])
local removed = 0
local batch = {}
for i = 1, #members do
  batch[#batch + 1] = members[i]
  if #batch == 1000 then
    removed = removed + redis.call('UNLINK', unpack(batch))
    batch = {}
  end
end
if #batch > 0 then
  removed = removed + redis.call('UNLINK', unpack(batch))
end
redis.call('UNLINK', KEYS[1])
return removed
"""


class LuaTags(Scheme):
    """cacheops / Symfony RedisTagAwareAdapter / Laravel tagged cache style.

    write: one EVALSHA that SETs the entry and SADDs its key into a set per
    ancestor prefix (every '/'-boundary prefix of the path, the path itself
    included, the root '/' excluded); purge: one EVALSHA that reads the
    prefix's set and UNLINKs its members (and the set).
    """
    name = "lua"
    label = "Lua tag sets"
    purge_cmds = ("evalsha",)
    get_cmd_stat = "get"
    set_cmd_stat = "evalsha"

    def setup(self):
        self.wsha = self.raw.call("SCRIPT", "LOAD", LUA_WRITE).decode()
        self.psha = self.raw.call("SCRIPT", "LOAD", LUA_PURGE).decode()

    def key(self, path, v):
        # "luatag:" has the same length as "rcache:"
        return "luatag:{%s}:%s" % (path, suffix(v))

    def set_args(self, path, v, value):
        return ["EVALSHA", self.wsha, "1", self.key(path, v), value, str(TTL_MS)]

    def purge(self, prefix):
        p = prefix.rstrip("/") if prefix != "/" else prefix
        return self.raw.call("EVALSHA", self.psha, "1", "lt:" + p)

    def purge_tagged(self, tag, prefix):
        # This scheme's tags are its sets of keys, one per prefix.
        return self.purge(prefix)


ALL = {"native": Native, "rcache": Rcache, "scan": ScanPurge, "lua": LuaTags}
