//! Model-based test of freshness (issue 10): random SETs with short and long fresh
//! lifetimes and with or without GRACE, SOFTPURGE, SOFTPURGETAG, PURGE, and reads, on
//! a real server (with `purge-slice-us 100`, so big hard purges go to the background),
//! against a model of each entry's state. Every LOOKUP's state (FRESH / STALE / MISS)
//! and every GET must agree with the model; soft purge replies must count exactly the
//! entries that were fresh. Time makes some answers uncertain: an entry whose fresh
//! lifetime ends around a command may be either side of it, and both are accepted.
//!
//! `RCACHE_MODEL_SEED` replays a run (the seed is printed); `RCACHE_MODEL_OPS` sets the
//! number of operations (default 2000).

mod common;
use common::*;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};

const PATHS: [&str; 8] = ["/a", "/a/b", "/a/b/c", "/a/c", "/b", "/b/a", "/ab", "/b/a/b"];
const PREFIXES: [&str; 6] = ["/", "/a", "/a/b", "/b", "/ab", "/a/c"];
const QUERIES: [&str; 3] = ["", "p=1", "p=2"];
/// Slack for clock reads on either side of a command.
const MARGIN_MS: i64 = 5;

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("clock").as_millis() as i64
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Seen {
    Fresh,
    Stale,
    Miss,
}

#[derive(Debug, Clone, Copy)]
struct Slot {
    /// Window in which the fresh lifetime ends (None: fresh until purged).
    fresh_until: Option<(i64, i64)>,
    grace: bool,
    tagged: bool,
    /// A soft purge made it stale (it had grace).
    softened: bool,
}

impl Slot {
    /// What a command sent at `sent` and answered at `recv` may see.
    fn possible(&self, sent: i64, recv: i64) -> Vec<Seen> {
        if self.softened {
            return vec![Seen::Stale];
        }
        let after = if self.grace { Seen::Stale } else { Seen::Miss };
        match self.fresh_until {
            None => vec![Seen::Fresh],
            Some((lo, _)) if recv + MARGIN_MS < lo => vec![Seen::Fresh],
            Some((_, hi)) if sent > hi + MARGIN_MS => vec![after],
            Some(_) => vec![Seen::Fresh, after],
        }
    }
}

fn key_words<'a>(k: (usize, usize)) -> Vec<&'a str> {
    let mut w = vec![PATHS[k.0]];
    if !QUERIES[k.1].is_empty() {
        w.extend(["QUERY", QUERIES[k.1]]);
    }
    w
}

fn covers(prefix: &str, path: &str) -> bool {
    if prefix == "/" {
        return path.starts_with('/');
    }
    path == prefix || (path.starts_with(prefix) && path[prefix.len()..].starts_with('/'))
}

fn lookup_state(c: &mut Connection, k: (usize, usize)) -> Seen {
    let mut words = vec!["RCACHE.LOOKUP"];
    words.extend(key_words(k));
    let reply: Vec<Value> = q(c, &words);
    match &reply[0] {
        Value::SimpleString(s) if s == "FRESH" => Seen::Fresh,
        Value::SimpleString(s) if s == "STALE" => Seen::Stale,
        Value::SimpleString(s) if s == "MISS" => Seen::Miss,
        other => panic!("LOOKUP state {other:?}"),
    }
}

fn run(seed: u64, ops: usize) -> Result<(), String> {
    let s = Server::start_with(&[], &["purge-slice-us", "100"]);
    let mut c = s.conn();
    let mut rng = StdRng::seed_from_u64(seed);
    let mut model: HashMap<(usize, usize), Slot> = HashMap::new();
    let all: Vec<(usize, usize)> = (0..PATHS.len()).flat_map(|p| (0..QUERIES.len()).map(move |v| (p, v))).collect();
    for i in 0..ops {
        let k = all[rng.gen_range(0..all.len())];
        match rng.gen_range(0..100) {
            0..=39 => {
                let ttl: Option<i64> = match rng.gen_range(0..3) {
                    0 => None,
                    1 => Some(rng.gen_range(20..150)),
                    _ => Some(600_000),
                };
                let grace = rng.gen_bool(0.5);
                let tagged = rng.gen_bool(0.5);
                let mut words = vec!["RCACHE.SET"];
                words.extend(key_words(k));
                words.insert(2, "v");
                let ttl_s = ttl.map(|t| t.to_string());
                if let Some(t) = &ttl_s {
                    words.extend(["PX", t.as_str()]);
                }
                if grace {
                    words.extend(["GRACE", "600"]);
                }
                if tagged {
                    words.extend(["TAGS", "1", "t"]);
                }
                let sent = now_ms();
                let r: String = q(&mut c, &words);
                let recv = now_ms();
                if r != "OK" {
                    return Err(format!("op {i}: {words:?} replied {r}"));
                }
                let fresh_until = ttl.map(|t| (sent + t, recv + t));
                model.insert(k, Slot { fresh_until, grace, tagged, softened: false });
            }
            40..=64 => {
                let sent = now_ms();
                let got = lookup_state(&mut c, k);
                let recv = now_ms();
                let want = model.get(&k).map_or(vec![Seen::Miss], |s| s.possible(sent, recv));
                if !want.contains(&got) {
                    return Err(format!("op {i}: LOOKUP {:?} was {got:?}, the model allows {want:?} ({:?})", key_words(k), model.get(&k)));
                }
                let mut words = vec!["RCACHE.GET"];
                words.extend(key_words(k));
                let sent2 = now_ms();
                let hit = get(&mut c, &words[1..]).is_some();
                let recv2 = now_ms();
                let want = model.get(&k).map_or(vec![Seen::Miss], |s| s.possible(sent2, recv2));
                if !(want.contains(&Seen::Fresh) && hit || want.iter().any(|w| *w != Seen::Fresh) && !hit) {
                    return Err(format!("op {i}: GET {:?} hit={hit}, the model allows {want:?}", key_words(k)));
                }
            }
            65..=87 => {
                let tags = rng.gen_range(0..100) < 30;
                let prefix = PREFIXES[rng.gen_range(0..PREFIXES.len())];
                let covered: Vec<(usize, usize)> = model
                    .iter()
                    .filter(|(k, s)| if tags { s.tagged } else { covers(prefix, PATHS[k.0]) })
                    .map(|(k, _)| *k)
                    .collect();
                let words = if tags { vec!["RCACHE.SOFTPURGETAG", "t"] } else { vec!["RCACHE.SOFTPURGE", prefix] };
                let sent = now_ms();
                let n: i64 = q(&mut c, &words);
                let recv = now_ms();
                // Fresh entries count; each becomes stale (grace) or is removed.
                let (mut lo, mut hi) = (0, 0);
                for k in covered {
                    let Some(slot) = model.get(&k).copied() else { continue };
                    let possible = slot.possible(sent, recv);
                    if possible.contains(&Seen::Fresh) {
                        hi += 1;
                        lo += i64::from(possible == [Seen::Fresh]);
                    }
                    if slot.grace {
                        model.insert(k, Slot { softened: true, ..slot });
                    } else {
                        model.remove(&k);
                    }
                }
                if !(lo..=hi).contains(&n) {
                    return Err(format!("op {i}: {words:?} replied {n}, the model expects {lo}..={hi}"));
                }
            }
            88..=93 => {
                let prefix = PREFIXES[rng.gen_range(0..PREFIXES.len())];
                let _: i64 = q(&mut c, &["RCACHE.PURGE", prefix]);
                model.retain(|k, _| !covers(prefix, PATHS[k.0]));
            }
            _ => std::thread::sleep(std::time::Duration::from_millis(rng.gen_range(5..60))),
        }
    }
    if !s.log().contains("internal error") {
        Ok(())
    } else {
        Err("the server logged an internal error".into())
    }
}

#[test]
fn freshness_states_follow_the_model() {
    let seed: u64 = std::env::var("RCACHE_MODEL_SEED").ok().map(|s| s.parse().expect("a u64")).unwrap_or_else(|| rand::thread_rng().gen());
    let ops: usize = std::env::var("RCACHE_MODEL_OPS").ok().map(|s| s.parse().expect("a number")).unwrap_or(2000);
    println!("RCACHE_MODEL_SEED={seed} RCACHE_MODEL_OPS={ops}");
    if let Err(e) = run(seed, ops) {
        panic!("seed {seed}: {e}\nRerun with RCACHE_MODEL_SEED={seed}");
    }
}
