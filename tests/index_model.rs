//! Issue 3, item 2: a randomized, seeded, model-based test. Thousands of mixed
//! operations (RCACHE.SET with and without short TTLs, GET, DEL, PURGE, PURGE EXACT,
//! PURGETAG, user DEL of entry keys, FLUSHDB, pauses) run against a real server, and
//! every reply is checked against an in-test model of the contract. After each PURGE /
//! PURGETAG every entry stored before it under the prefix / with the tag is read back
//! and must be gone. A second variant runs with a small `maxmemory` and `allkeys-lru`
//! (any entry may be evicted at any time, but never come back stale) and restarts the
//! server from its AOF in the middle.
//!
//! Leases (issue 10) join in: `LOOKUP … LEASE` takes a lease, `SET … LEASE token`
//! refills with it, and the model tracks every invalidation since each grant. No SET
//! whose lease was granted before an invalidation of its entry (RCACHE.DEL, a covering
//! PURGE, a PURGETAG of a tag the entry carried or the SET carries, FLUSHDB) may store;
//! one whose lease surely survived must.
//!
//! Expiry is checked robustly: the client notes the wall-clock interval in which each
//! SET ran, so an entry's deadline is known to lie in [sent + ttl, received + ttl]. A
//! command that surely ran before the deadline must see the entry; one that surely ran
//! after must not; within the window (plus a few ms of margin) either is accepted, and
//! a miss settles it.
//!
//! Environment: `RCACHE_MODEL_SEED` (default: random, printed), `RCACHE_MODEL_OPS`
//! (default 3000 for the plain variant, 1500 for the eviction one). A failure prints the
//! seed and the shortest operation log found (by delta debugging on fresh servers) that
//! still fails.

mod common;
mod index_common;
use common::*;
use index_common::select;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fmt;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Paths: every /x, /x/y, /x/y/z over {a, b, ab}, plus some that test slash folding.
fn universe() -> Vec<String> {
    let segs = ["a", "b", "ab"];
    let mut paths = Vec::new();
    for x in segs {
        paths.push(format!("/{x}"));
        for y in segs {
            paths.push(format!("/{x}/{y}"));
            for z in segs {
                paths.push(format!("/{x}/{y}/{z}"));
            }
        }
    }
    paths.extend(["/a/", "/a//x", "/b/a/", "/abc"].map(String::from));
    paths
}

/// Purge prefixes: every path, "/", and some with a trailing slash or that are not paths.
fn prefixes(paths: &[String]) -> Vec<String> {
    let mut p: Vec<String> = paths.to_vec();
    p.extend(["/", "/a/", "/a//", "/b/a/", "/a/b/", "/ab/", "/c"].map(String::from));
    p
}

/// The contract's coverage rule.
fn covers(prefix: &str, exact: bool, path: &str) -> bool {
    if exact {
        return prefix == path;
    }
    if prefix == "/" {
        return path.starts_with('/');
    }
    let p = prefix.strip_suffix('/').unwrap_or(prefix);
    path == p || (path.starts_with(p) && path[p.len()..].starts_with('/'))
}

const VARIANTS: [&[&str]; 3] = [&[], &["QUERY", "p=1"], &["VARY", "1", "Accept", "json"]];
const TAGS: [&str; 2] = ["t0", "t1"];

#[derive(Debug, Clone, Copy, PartialEq)]
enum Op {
    Set { path: usize, var: usize, ttl_ms: Option<u64>, tag: Option<usize>, size: usize },
    Get { path: usize, var: usize },
    Del { path: usize, var: usize },
    UserDel { path: usize, var: usize },
    /// A user SET of a value that is not an entry onto an entry key.
    UserSetForeign { path: usize, var: usize },
    /// A user COPY … REPLACE of one entry key onto another (value, tags and TTL go along).
    UserCopy { from: (usize, usize), to: (usize, usize) },
    Purge { prefix: usize, exact: bool },
    PurgeTag { tag: usize },
    FlushDb,
    /// `RCACHE.LOOKUP … LEASE`: a lease when the entry misses and none is live.
    Lease { path: usize, var: usize },
    /// `RCACHE.SET … LEASE token` with the entry's last token (or a bogus one).
    LeaseSet { path: usize, var: usize, tag: Option<usize> },
    Sleep { ms: u64 },
    Check,
    Restart,
}

struct Universe {
    paths: Vec<String>,
    prefixes: Vec<String>,
}

struct Shown<'a>(&'a Op, &'a Universe);

impl fmt::Display for Shown<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let u = self.1;
        let var = |v: usize| VARIANTS[v].join(" ");
        match *self.0 {
            Op::Set { path, var: v, ttl_ms, tag, size } => {
                write!(f, "RCACHE.SET {} <value {size}B> {}", u.paths[path], var(v))?;
                if let Some(ms) = ttl_ms {
                    write!(f, " PX {ms}")?;
                }
                if let Some(t) = tag {
                    write!(f, " TAGS 1 {}", TAGS[t])?;
                }
                Ok(())
            }
            Op::Get { path, var: v } => write!(f, "RCACHE.GET {} {}", u.paths[path], var(v)),
            Op::Del { path, var: v } => write!(f, "RCACHE.DEL {} {}", u.paths[path], var(v)),
            Op::UserDel { path, var: v } => write!(f, "DEL <key of {} {}>", u.paths[path], var(v)),
            Op::UserSetForeign { path, var: v } => write!(f, "SET <key of {} {}> foreign", u.paths[path], var(v)),
            Op::UserCopy { from, to } => write!(
                f,
                "COPY <key of {} {}> <key of {} {}> REPLACE",
                u.paths[from.0],
                var(from.1),
                u.paths[to.0],
                var(to.1)
            ),
            Op::Purge { prefix, exact } => write!(f, "RCACHE.PURGE {}{}", u.prefixes[prefix], if exact { " EXACT" } else { "" }),
            Op::PurgeTag { tag } => write!(f, "RCACHE.PURGETAG {}", TAGS[tag]),
            Op::FlushDb => write!(f, "FLUSHDB"),
            Op::Lease { path, var: v } => write!(f, "RCACHE.LOOKUP {} {} LEASE {LEASE_MS}", u.paths[path], var(v)),
            Op::LeaseSet { path, var: v, tag } => {
                write!(f, "RCACHE.SET {} <value> {}", u.paths[path], var(v))?;
                if let Some(t) = tag {
                    write!(f, " TAGS 1 {}", TAGS[t])?;
                }
                write!(f, " LEASE <its last token>")
            }
            Op::Sleep { ms } => write!(f, "(sleep {ms} ms)"),
            Op::Check => write!(f, "(check every entry, INFO and LIST against the model)"),
            Op::Restart => write!(f, "(restart the server from its AOF)"),
        }
    }
}

#[derive(Clone, Copy)]
struct Variant {
    name: &'static str,
    evicting: bool,
    /// `rcache.purge-slice-us` at its minimum: any purge over 25 entries goes to the
    /// background (issue 11), and the checks run while its work is pending.
    tiny_slices: bool,
    default_ops: usize,
}

fn generate(rng: &mut StdRng, u: &Universe, v: Variant, n: usize) -> Vec<Op> {
    let mut ops = Vec::with_capacity(n + 1);
    let (np, npre) = (u.paths.len(), u.prefixes.len());
    for i in 0..n {
        if v.evicting && i == n / 2 {
            ops.push(Op::Restart);
        }
        // With tiny slices, every 250 ops: 60 SETs, then a purge of "/" that covers more
        // than one slice's worth and goes to the background (among the random ops).
        if v.tiny_slices && i % 250 == 0 {
            for _ in 0..60 {
                let (path, var) = (rng.gen_range(0..np), rng.gen_range(0..VARIANTS.len()));
                ops.push(Op::Set { path, var, ttl_ms: None, tag: Some(rng.gen_range(0..2)), size: 32 });
            }
            ops.push(Op::Purge { prefix: u.prefixes.iter().position(|p| p == "/").unwrap_or(0), exact: false });
        }
        let (path, var) = (rng.gen_range(0..np), rng.gen_range(0..VARIANTS.len()));
        let roll = rng.gen_range(0..1000);
        let op = match roll {
            0..=349 => {
                let ttl_ms = match rng.gen_range(0..10) {
                    0..=4 => None,
                    5..=7 => Some(rng.gen_range(5..250)),
                    _ => Some(60_000),
                };
                let tag = match rng.gen_range(0..4) {
                    0 => Some(0),
                    1 => Some(1),
                    _ => None,
                };
                let size = if v.evicting { rng.gen_range(16_000..64_000) } else { rng.gen_range(1..64) };
                Op::Set { path, var, ttl_ms, tag, size }
            }
            350..=609 => Op::Get { path, var },
            610..=679 => Op::Del { path, var },
            680..=719 => Op::UserDel { path, var },
            720..=734 => Op::UserSetForeign { path, var },
            // COPY of a raw key whose removal a purge left pending may resurrect it at
            // another key: plain commands are outside the contract until the work is done.
            735..=749 if v.tiny_slices => Op::Get { path, var },
            735..=749 => {
                // COPY onto itself is an error; pick another path.
                let to = (path + rng.gen_range(1..np)) % np;
                Op::UserCopy { from: (path, var), to: (to, rng.gen_range(0..VARIANTS.len())) }
            }
            750..=829 => Op::Purge { prefix: rng.gen_range(0..npre), exact: false },
            830..=879 => Op::Purge { prefix: rng.gen_range(0..npre), exact: true },
            880..=914 => Op::PurgeTag { tag: rng.gen_range(0..TAGS.len()) },
            915..=919 => Op::FlushDb,
            920..=934 => Op::Sleep { ms: rng.gen_range(5..60) },
            // Leases on a few hot entries, so grants, invalidations and refills meet.
            935..=959 => Op::Lease { path: path % HOT_PATHS, var },
            960..=984 => Op::LeaseSet { path: path % HOT_PATHS, var, tag: [None, Some(0), Some(1)][rng.gen_range(0..3)] },
            _ => Op::Check,
        };
        ops.push(op);
    }
    ops.push(Op::Check);
    ops
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as i64
}

/// Slack for clock granularity between the test's clock and the server's.
const MARGIN_MS: i64 = 5;

#[derive(Debug, Clone)]
struct Slot {
    value: Vec<u8>,
    tag: Option<usize>,
    /// The deadline lies in [lo, hi] (ms since the epoch).
    deadline: Option<(i64, i64)>,
    /// The key holds a string that is not an entry (a user wrote it).
    foreign: bool,
}

/// Lease ops use the first paths only (`/a`, `/a/a`, `/a/a/a`, `/a/a/b`).
const HOT_PATHS: usize = 4;

/// Long enough never to run out during a run.
const LEASE_MS: u64 = 3_600_000;

/// What the model knows of the last lease granted on an entry.
#[derive(Debug, Clone)]
struct ModelLease {
    token: Vec<u8>,
    /// Not ended by a store, a refused SET or a restart.
    live: bool,
    /// An invalidation of the entry happened since the grant: a SET must be refused.
    invalidated: bool,
    /// Something that may have invalidated it happened (a PURGETAG of the tag of an
    /// entry that may have expired by then): a SET may go either way.
    maybe_invalidated: bool,
    /// Tags purged since the grant: a SET carrying one must be refused.
    tags_purged: BTreeSet<usize>,
}

#[derive(Debug, PartialEq, Clone, Copy)]
enum Life {
    Alive,
    Unsure,
    Gone,
}

struct Run<'a> {
    u: &'a Universe,
    v: Variant,
    server: Server,
    c: Connection,
    keys: HashMap<(usize, usize), String>,
    model: HashMap<(usize, usize), Slot>,
    leases: HashMap<(usize, usize), ModelLease>,
    seq: u64,
    evicted_total: u64,
    /// PURGEs that left work pending (replied before removing everything).
    background_purges: u64,
    /// Entries purged while removal work was pending: their raw keys may still exist
    /// for plain Redis commands (DEL may find them) until the background is done.
    maybe_physical: HashSet<(usize, usize)>,
}

type Check = Result<(), String>;

macro_rules! ensure {
    ($cond:expr, $($msg:tt)+) => { if !$cond { return Err(format!($($msg)+)); } };
}

impl<'a> Run<'a> {
    fn start(u: &'a Universe, v: Variant) -> Run<'a> {
        let module_args: &[&str] = if v.tiny_slices { &["purge-slice-us", "100"] } else { &[] };
        let server = if v.evicting {
            Server::start_with(&["--maxmemory", "2mb", "--maxmemory-policy", "allkeys-lru", "--appendonly", "yes"], module_args)
        } else {
            Server::start_with(&[], module_args)
        };
        let mut c = server.conn();
        let mut keys = HashMap::new();
        for path in 0..u.paths.len() {
            for var in 0..VARIANTS.len() {
                let mut words = vec!["RCACHE.KEY", u.paths[path].as_str()];
                words.extend_from_slice(VARIANTS[var]);
                keys.insert((path, var), q::<String>(&mut c, &words));
            }
        }
        // Not database 0: the index is per database.
        select(&mut c, 2);
        Run { u, v, server, c, keys, model: HashMap::new(), leases: HashMap::new(), seq: 0, evicted_total: 0, background_purges: 0, maybe_physical: HashSet::new() }
    }

    /// What the model knows about an entry for a command sent at `sent` and answered at `recv`.
    fn life(&self, k: (usize, usize), sent: i64, recv: i64) -> Life {
        let Some(slot) = self.model.get(&k) else { return Life::Gone };
        let by_ttl = match slot.deadline {
            None => Life::Alive,
            Some((lo, hi)) => {
                if recv + MARGIN_MS < lo {
                    Life::Alive
                } else if sent > hi + MARGIN_MS {
                    Life::Gone
                } else {
                    Life::Unsure
                }
            }
        };
        match by_ttl {
            Life::Alive if self.v.evicting => Life::Unsure,
            other => other,
        }
    }

    fn words(&self, verb: &'a str, path: usize, var: usize) -> Vec<&'a str> {
        let mut w = vec![verb, self.u.paths[path].as_str()];
        w.extend_from_slice(VARIANTS[var]);
        w
    }

    fn query(&mut self, words: &[&str]) -> (redis::RedisResult<Value>, i64, i64) {
        let mut command = cmd(words[0]);
        for w in &words[1..] {
            command.arg(*w);
        }
        let sent = now_ms();
        let r = command.query::<Value>(&mut self.c);
        (r, sent, now_ms())
    }

    /// Checks one GET reply against the model; a miss settles an unsure entry.
    fn check_get(&mut self, k: (usize, usize), reply: &Value, sent: i64, recv: i64, what: &str) -> Check {
        let life = self.life(k, sent, recv);
        let path = &self.u.paths[k.0];
        match reply {
            Value::Nil => {
                let model = self.model.get(&k).map(|s| (short(&s.value), s.deadline));
                ensure!(life != Life::Alive, "{what}: GET {path} variant {} missed a live entry (model: value, deadline window {model:?})", k.1);
                self.model.remove(&k);
            }
            Value::BulkString(got) => {
                let want = self.model.get(&k).map(|s| &s.value);
                ensure!(life != Life::Gone, "{what}: GET {path} variant {} returned {:?}, but the entry is gone (expired, deleted or purged)", k.1, short(got));
                ensure!(want == Some(got), "{what}: GET {path} variant {} returned {:?}, the model holds {:?}", k.1, short(got), want.map(|w| short(w)));
            }
            other => return Err(format!("{what}: GET {path}: unexpected reply {other:?}")),
        }
        Ok(())
    }

    /// Reads back the entries `which` (one pipeline); a foreign key must be an error.
    fn read_all(&mut self, which: &[(usize, usize)], what: &str) -> Check {
        let (foreign, which): (Vec<(usize, usize)>, Vec<(usize, usize)>) =
            which.iter().partition(|k| self.model.get(k).is_some_and(|s| s.foreign));
        for k in foreign {
            let words = self.words("RCACHE.GET", k.0, k.1);
            let (r, sent, recv) = self.query(&words);
            match r {
                Err(e) if e.code() == Some("ERR") => {}
                Ok(Value::Nil) if self.life(k, sent, recv) != Life::Alive => {
                    self.model.remove(&k);
                }
                other => return Err(format!("{what}: GET of {} (a foreign key) replied {other:?}", self.u.paths[k.0])),
            }
        }
        let mut p = redis::pipe();
        for &(path, var) in &which {
            let mut c = cmd("RCACHE.GET");
            c.arg(&self.u.paths[path]);
            for w in VARIANTS[var] {
                c.arg(*w);
            }
            p.add_command(c);
        }
        let sent = now_ms();
        let replies: Vec<Value> = p.query(&mut self.c).map_err(|e| format!("{what}: pipelined GET failed: {e}"))?;
        let recv = now_ms();
        for (k, reply) in which.iter().zip(&replies) {
            self.check_get(*k, reply, sent, recv, what)?;
        }
        Ok(())
    }

    fn all_keys(&self) -> Vec<(usize, usize)> {
        (0..self.u.paths.len()).flat_map(|p| (0..VARIANTS.len()).map(move |v| (p, v))).collect()
    }

    /// Bounds for a count of removed entries among `ks`, and drops them from the model.
    /// With `entries_only` (PURGE, PURGETAG) a foreign key is neither counted nor removed.
    fn take(&mut self, ks: &[(usize, usize)], sent: i64, recv: i64, entries_only: bool) -> (i64, i64) {
        let (mut lo, mut hi) = (0, 0);
        for k in ks {
            if entries_only && self.model.get(k).is_some_and(|s| s.foreign) {
                continue;
            }
            match self.life(*k, sent, recv) {
                Life::Alive => (lo, hi) = (lo + 1, hi + 1),
                Life::Unsure => hi += 1,
                Life::Gone => {}
            }
            self.model.remove(k);
        }
        (lo, hi)
    }

    fn int(r: redis::RedisResult<Value>, what: &str) -> Result<i64, String> {
        match r {
            Ok(Value::Int(n)) => Ok(n),
            other => Err(format!("{what}: expected an integer, got {other:?}")),
        }
    }

    fn step(&mut self, op: Op) -> Check {
        let what = format!("{}", Shown(&op, self.u));
        match op {
            Op::Set { path, var, ttl_ms, tag, size } => {
                self.seq += 1;
                let mut value = format!("v{}:", self.seq).into_bytes();
                value.resize(size.max(value.len()), b'.');
                let mut c = cmd("RCACHE.SET");
                c.arg(&self.u.paths[path]).arg(&value);
                for w in VARIANTS[var] {
                    c.arg(*w);
                }
                if let Some(ms) = ttl_ms {
                    c.arg("PX").arg(ms);
                }
                if let Some(t) = tag {
                    c.arg("TAGS").arg(1).arg(TAGS[t]);
                }
                let sent = now_ms();
                let r = c.query::<Value>(&mut self.c);
                let recv = now_ms();
                ensure!(matches!(r, Ok(Value::Okay)), "{what}: {r:?}");
                let deadline = ttl_ms.map(|ms| (sent + ms as i64, recv + ms as i64));
                self.model.insert((path, var), Slot { value, tag, deadline, foreign: false });
                // Any store ends the entry's lease.
                if let Some(l) = self.leases.get_mut(&(path, var)) {
                    l.live = false;
                }
                self.maybe_physical.remove(&(path, var));
            }
            Op::Get { path, var } => self.read_all(&[(path, var)], &what)?,
            Op::Del { path, var } | Op::UserDel { path, var } => {
                let key = self.keys[&(path, var)].clone();
                let words = if matches!(op, Op::Del { .. }) { self.words("RCACHE.DEL", path, var) } else { vec!["DEL", key.as_str()] };
                let (r, sent, recv) = self.query(&words);
                let n = Self::int(r, &what)?;
                let (lo, mut hi) = self.take(&[(path, var)], sent, recv, false);
                if matches!(op, Op::UserDel { .. }) && self.maybe_physical.remove(&(path, var)) {
                    hi = hi.max(1);
                }
                ensure!((lo..=hi).contains(&n), "{what}: replied {n}, the model expects {lo}..={hi}");
                if matches!(op, Op::Del { .. }) {
                    self.invalidate(&[(path, var)]);
                }
            }
            Op::UserSetForeign { path, var } => {
                let key = self.keys[&(path, var)].clone();
                let (r, _, _) = self.query(&["SET", &key, "foreign"]);
                ensure!(matches!(r, Ok(Value::Okay)), "{what}: {r:?}");
                self.model.insert((path, var), Slot { value: b"foreign".to_vec(), tag: None, deadline: None, foreign: true });
                self.maybe_physical.remove(&(path, var));
            }
            Op::UserCopy { from, to } => {
                let (src, dst) = (self.keys[&from].clone(), self.keys[&to].clone());
                let (r, sent, recv) = self.query(&["COPY", &src, &dst, "REPLACE"]);
                let n = Self::int(r, &what)?;
                let life = self.life(from, sent, recv);
                match n {
                    1 => {
                        ensure!(life != Life::Gone, "{what}: copied a key that is gone");
                        let slot = self.model[&from].clone();
                        self.model.insert(to, slot);
                    }
                    0 => {
                        ensure!(life != Life::Alive, "{what}: did not copy a live key");
                        self.model.remove(&from);
                    }
                    _ => return Err(format!("{what}: replied {n}")),
                }
            }
            Op::Purge { prefix, exact } => {
                let p = self.u.prefixes[prefix].clone();
                let mut words = vec!["RCACHE.PURGE", p.as_str()];
                if exact {
                    words.push("EXACT");
                }
                let (r, sent, recv) = self.query(&words);
                let n = Self::int(r, &what)?;
                let covered: Vec<(usize, usize)> =
                    self.all_keys().into_iter().filter(|(path, _)| covers(&p, exact, &self.u.paths[*path])).collect();
                self.invalidate(&covered);
                // Past their TTL in the model but maybe not yet deleted by Redis: a purge
                // that goes to the background counts what it detached from the index,
                // such entries included (docs/design.md, "Purges of any size").
                let expired =
                    covered.iter().filter(|k| self.model.get(k).is_some_and(|s| !s.foreign) && self.life(**k, sent, recv) == Life::Gone).count() as i64;
                let (lo, mut hi) = self.take(&covered, sent, recv, true);
                let background = info_u64(&mut self.c, "purge_pending") > 0;
                if background {
                    hi += expired;
                    self.background_purges += 1;
                    self.maybe_physical.extend(covered.iter().copied());
                }
                ensure!((lo..=hi).contains(&n), "{what}: replied {n}, the model expects {lo}..={hi}");
                // The invariant: nothing stored before the purge under the prefix is served.
                self.read_all(&covered, &format!("{what}, then reading back what it covers"))?;
            }
            Op::PurgeTag { tag } => {
                let words = vec!["RCACHE.PURGETAG", TAGS[tag]];
                let tagged: Vec<(usize, usize)> =
                    self.model.iter().filter(|(_, s)| s.tag == Some(tag)).map(|(k, _)| *k).collect();
                let (r, sent, recv) = self.query(&words);
                let n = Self::int(r, &what)?;
                // The leases of entries carrying the tag end: surely for a live entry, maybe
                // for one that may have expired (its key may be gone from the tag index).
                for k in &tagged {
                    let foreign = self.model.get(k).is_some_and(|s| s.foreign);
                    match self.life(*k, sent, recv) {
                        Life::Alive if !foreign => self.invalidate(&[*k]),
                        Life::Unsure if !foreign => {
                            if let Some(l) = self.leases.get_mut(k) {
                                l.maybe_invalidated = true;
                            }
                        }
                        _ => {}
                    }
                }
                for l in self.leases.values_mut() {
                    l.tags_purged.insert(tag);
                }
                let (lo, hi) = self.take(&tagged, sent, recv, true);
                ensure!((lo..=hi).contains(&n), "{what}: replied {n}, the model expects {lo}..={hi}");
                self.read_all(&tagged, &format!("{what}, then reading back what carried the tag"))?;
            }
            Op::FlushDb => {
                let (r, _, _) = self.query(&["FLUSHDB"]);
                ensure!(matches!(r, Ok(Value::Okay)), "{what}: {r:?}");
                self.model.clear();
                let all = self.all_keys();
                self.invalidate(&all);
                self.maybe_physical.clear();
            }
            Op::Lease { path, var } => self.lease(path, var, &what)?,
            Op::LeaseSet { path, var, tag } => self.lease_set(path, var, tag, &what)?,
            Op::Sleep { ms } => std::thread::sleep(Duration::from_millis(ms)),
            Op::Check => self.check_all(&what)?,
            Op::Restart => {
                self.evicted_total += info_u64(&mut self.c, "index_removals_evicted");
                self.server.restart(true, &[]);
                // Leases live in memory only: a restart loses them.
                for l in self.leases.values_mut() {
                    l.live = false;
                }
                self.c = self.server.conn();
                select(&mut self.c, 2);
                self.check_all(&what)?;
            }
        }
        Ok(())
    }

    /// An invalidation of these entries: their leases end, and a SET with one is refused.
    fn invalidate(&mut self, ks: &[(usize, usize)]) {
        for k in ks {
            if let Some(l) = self.leases.get_mut(k) {
                l.invalidated = true;
            }
        }
    }

    fn lease(&mut self, path: usize, var: usize, what: &str) -> Check {
        let k = (path, var);
        let lease_ms = LEASE_MS.to_string();
        let mut words = self.words("RCACHE.LOOKUP", path, var);
        words.extend(["LEASE", lease_ms.as_str()]);
        let (r, sent, recv) = self.query(&words);
        if self.model.get(&k).is_some_and(|s| s.foreign) {
            match r {
                Err(e) if e.code() == Some("ERR") => return Ok(()),
                Ok(Value::Array(ref items)) if items.first() == Some(&Value::SimpleString("MISS".into())) && self.life(k, sent, recv) != Life::Alive => {}
                other => return Err(format!("{what}: LOOKUP of a foreign key replied {other:?}")),
            }
        }
        let Ok(Value::Array(items)) = r else { return Err(format!("{what}: {r:?}")) };
        ensure!(items.len() == 6, "{what}: {items:?}");
        let live_lease = self.leases.get(&k).is_some_and(|l| l.live && !l.invalidated && !l.maybe_invalidated);
        let surely_ended = self.leases.get(&k).is_none_or(|l| !l.live || l.invalidated);
        let token = match &items[5] {
            Value::BulkString(t) => Some(t.clone()),
            Value::Nil => None,
            other => return Err(format!("{what}: lease {other:?}")),
        };
        match &items[0] {
            Value::SimpleString(state) if state == "FRESH" => {
                ensure!(self.life(k, sent, recv) != Life::Gone, "{what}: FRESH, but the entry is gone");
                ensure!(token.is_none(), "{what}: a fresh entry granted a lease");
                ensure!(matches!(&items[1], Value::BulkString(v) if self.model.get(&k).map(|s| &s.value) == Some(v)), "{what}: FRESH with {:?}", items[1]);
            }
            Value::SimpleString(state) if state == "MISS" => {
                ensure!(self.life(k, sent, recv) != Life::Alive, "{what}: MISS, but the model holds a live entry");
                self.model.remove(&k);
                match token {
                    Some(token) => {
                        ensure!(!live_lease, "{what}: a second live lease was granted");
                        self.leases.insert(k, ModelLease { token, live: true, invalidated: false, maybe_invalidated: false, tags_purged: BTreeSet::new() });
                    }
                    None => ensure!(!surely_ended, "{what}: no lease granted, but none is live"),
                }
            }
            other => return Err(format!("{what}: state {other:?}")),
        }
        Ok(())
    }

    fn lease_set(&mut self, path: usize, var: usize, tag: Option<usize>, what: &str) -> Check {
        let k = (path, var);
        self.seq += 1;
        let value = format!("leased{}", self.seq).into_bytes();
        let lease = self.leases.get(&k).cloned();
        let token = lease.as_ref().map_or(b"no-such-lease".to_vec(), |l| l.token.clone());
        let mut c = cmd("RCACHE.SET");
        c.arg(&self.u.paths[path]).arg(&value);
        for w in VARIANTS[var] {
            c.arg(*w);
        }
        if let Some(t) = tag {
            c.arg("TAGS").arg(1).arg(TAGS[t]);
        }
        c.arg("LEASE").arg(&token);
        let r = c.query::<Value>(&mut self.c);
        let must_refuse = lease.as_ref().is_none_or(|l| !l.live || l.invalidated || tag.is_some_and(|t| l.tags_purged.contains(&t)));
        let must_store = lease.as_ref().is_some_and(|l| l.live && !l.maybe_invalidated) && !must_refuse;
        match r {
            Ok(Value::Okay) => {
                // The property: content computed before an invalidation never stores.
                ensure!(!must_refuse, "{what}: stored, but its lease was invalidated or had ended: {lease:?}");
                self.model.insert(k, Slot { value, tag, deadline: None, foreign: false });
            }
            Ok(Value::Nil) => ensure!(!must_store, "{what}: refused, but its lease is live and untouched: {lease:?}"),
            other => return Err(format!("{what}: {other:?}")),
        }
        // A store or a refusal ends the lease either way.
        if let Some(l) = self.leases.get_mut(&k) {
            l.live = false;
        }
        // A refused SET changed nothing: the entry reads back as the model holds it.
        self.read_all(&[k], &format!("{what}, then reading the entry back"))
    }

    /// Every entry against the model, and INFO / LIST within the model's bounds.
    fn check_all(&mut self, what: &str) -> Check {
        let all = self.all_keys();
        self.read_all(&all, what)?;
        let sent = now_ms();
        let entries = info_u64(&mut self.c, "entries") as usize;
        let listed: BTreeSet<String> = index_common::listed(&mut self.c, "/").into_iter().collect();
        let recv = now_ms();
        let entries_in_model: Vec<(usize, usize)> = self.model.iter().filter(|(_, s)| !s.foreign).map(|(k, _)| *k).collect();
        let alive: Vec<(usize, usize)> = entries_in_model.iter().copied().filter(|k| self.life(*k, sent, recv) == Life::Alive).collect();
        // INFO / LIST may still show an expired entry until Redis deletes its key.
        ensure!(
            entries >= alive.len() && entries <= entries_in_model.len(),
            "{what}: INFO entries {entries}, the model expects {}..={}",
            alive.len(),
            entries_in_model.len()
        );
        let possible: BTreeSet<String> = entries_in_model.iter().map(|k| self.u.paths[k.0].clone()).collect();
        let sure: BTreeSet<String> = alive.iter().map(|k| self.u.paths[k.0].clone()).collect();
        ensure!(listed.is_subset(&possible), "{what}: LIST shows paths with no entry: {:?}", listed.difference(&possible).collect::<Vec<_>>());
        ensure!(sure.is_subset(&listed), "{what}: LIST misses live paths: {:?}", sure.difference(&listed).collect::<Vec<_>>());
        Ok(())
    }
}

fn short(v: &[u8]) -> String {
    let s = String::from_utf8_lossy(&v[..v.len().min(16)]).into_owned();
    if v.len() > 16 { format!("{s}… ({} bytes)", v.len()) } else { s }
}

/// Runs `ops` on a fresh server; on failure, the index of the failing op and why.
fn execute(u: &Universe, v: Variant, ops: &[Op]) -> Result<u64, (usize, String)> {
    let mut run = Run::start(u, v);
    for (i, op) in ops.iter().enumerate() {
        run.step(*op).map_err(|e| (i, e))?;
    }
    if !run.server.alive() {
        return Err((ops.len(), "the server died".into()));
    }
    if v.tiny_slices && ops.len() >= 300 && run.background_purges == 0 {
        return Err((ops.len(), "no purge went to the background: the variant tests nothing".into()));
    }
    if v.tiny_slices {
        println!("{}: {} purges left work pending", v.name, run.background_purges);
    }
    Ok(run.evicted_total + info_u64(&mut run.c, "index_removals_evicted"))
}

/// Delta debugging: the shortest subsequence of `ops` found that still fails.
fn shrink(u: &Universe, v: Variant, mut ops: Vec<Op>, budget: Duration) -> Vec<Op> {
    let started = Instant::now();
    let mut chunk = ops.len() / 2;
    while chunk >= 1 && started.elapsed() < budget {
        let mut at = 0;
        let mut removed_any = false;
        while at < ops.len() && started.elapsed() < budget {
            let mut candidate = ops.clone();
            candidate.drain(at..(at + chunk).min(ops.len()));
            match execute(u, v, &candidate) {
                Err((i, _)) => {
                    candidate.truncate(i + 1);
                    ops = candidate;
                    removed_any = true;
                }
                Ok(_) => at += chunk,
            }
        }
        if !removed_any {
            chunk /= 2;
        }
    }
    ops
}

fn model_test(v: Variant) {
    let seed: u64 = std::env::var("RCACHE_MODEL_SEED").ok().map(|s| s.parse().expect("RCACHE_MODEL_SEED: a u64")).unwrap_or_else(|| rand::thread_rng().gen());
    let n: usize = std::env::var("RCACHE_MODEL_OPS").ok().map(|s| s.parse().expect("RCACHE_MODEL_OPS: a number")).unwrap_or(v.default_ops);
    println!("{}: RCACHE_MODEL_SEED={seed} RCACHE_MODEL_OPS={n}", v.name);
    let u = Universe { paths: universe(), prefixes: prefixes(&universe()) };
    let ops = generate(&mut StdRng::seed_from_u64(seed), &u, v, n);
    match execute(&u, v, &ops) {
        Ok(evicted) => {
            if v.evicting {
                assert!(evicted > 0, "{}: seed {seed}: nothing was evicted; the variant did not test eviction", v.name);
            }
            println!("{}: {} ops passed, {evicted} entries evicted", v.name, ops.len());
        }
        Err((at, msg)) => {
            let failing = ops[..=at.min(ops.len() - 1)].to_vec();
            let shortest = shrink(&u, v, failing, Duration::from_secs(90));
            let log: Vec<String> = shortest.iter().enumerate().map(|(i, op)| format!("{i:5}  {}", Shown(op, &u))).collect();
            panic!(
                "{}: seed {seed} ({n} ops) failed at op {at}: {msg}\n\
                 Rerun with RCACHE_MODEL_SEED={seed} RCACHE_MODEL_OPS={n}. Shortest failing log found ({} ops; \
                 TTL timing may vary between runs):\n{}",
                v.name,
                shortest.len(),
                log.join("\n")
            );
        }
    }
}

#[test]
fn model_plain() {
    model_test(Variant { name: "plain", evicting: false, tiny_slices: false, default_ops: 3000 });
}

#[test]
fn model_with_background_purges() {
    model_test(Variant { name: "background purges", evicting: false, tiny_slices: true, default_ops: 3000 });
}

#[test]
fn model_with_eviction_and_a_restart() {
    model_test(Variant { name: "allkeys-lru + restart, background purges", evicting: true, tiny_slices: true, default_ops: 1500 });
}

#[test]
fn coverage_rule_matches_the_contract_table() {
    for (p, yes, no) in [
        ("/tournament/5", &["/tournament/5", "/tournament/5/", "/tournament/5/bracket"][..], &["/tournament/50", "/tournament"][..]),
        ("/tournament/5/", &["/tournament/5", "/tournament/5/a/b"], &["/tournament/5x"]),
        ("/", &["/x"], &["shop.example.com/x"]),
        ("/a//", &["/a/", "/a//x"], &["/a/b"]),
    ] {
        for e in yes {
            assert!(covers(p, false, e), "{p} should cover {e}");
        }
        for e in no {
            assert!(!covers(p, false, e), "{p} should not cover {e}");
        }
    }
    assert!(covers("/a/", true, "/a/") && !covers("/a/", true, "/a"));
}
