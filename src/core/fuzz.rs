#![cfg(test)]
//! Fuzzing of everything that reads bytes a client controls: the argument parsers,
//! path validation and coverage, entry-key parsing and entry decoding. Arbitrary and
//! mutated inputs; besides "never panics", each target is checked against an
//! independent oracle, and the parsers against an allocation bound (issue 6, item 2:
//! nothing is allocated on a client's word).
//!
//! Cases per property: `PROPTEST_CASES` (default 10000), e.g.
//! `PROPTEST_CASES=1000000 cargo test --lib fuzz`.
//! The live counterpart, against a real server, is `tests/fuzz_live.rs`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use proptest::prelude::*;

use crate::core::cluster;
use crate::core::migrate;
use crate::core::args::{self, Limits, MAX_LIST_COUNT, MAX_NAME_LEN, MAX_QUERY_LEN};
use crate::core::entry;
use crate::core::key::{entry_key, parse_entry_key, Variant};
use crate::core::path::{self, Coverage};

// ---- The largest single allocation a closure makes, on this thread. ----

struct Tracking;

thread_local! {
    static TRACKING: Cell<bool> = const { Cell::new(false) };
    static LARGEST: Cell<usize> = const { Cell::new(0) };
}

fn note(size: usize) {
    if TRACKING.try_with(Cell::get).unwrap_or(false) {
        let _ = LARGEST.try_with(|l| l.set(l.get().max(size)));
    }
}

unsafe impl GlobalAlloc for Tracking {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        System.alloc(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        System.alloc_zeroed(layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        System.realloc(ptr, layout, new_size)
    }
}

#[global_allocator]
static ALLOC: Tracking = Tracking;

/// Runs `f`; returns its result and the largest single allocation it made.
fn largest_allocation<R>(f: impl FnOnce() -> R) -> (R, usize) {
    LARGEST.with(|l| l.set(0));
    TRACKING.with(|t| t.set(true));
    let r = f();
    TRACKING.with(|t| t.set(false));
    (r, LARGEST.with(Cell::get))
}

/// What parsing a request may allocate at most in one block: proportional to what was
/// sent (an error message quotes an argument, lossily: 3 bytes per invalid byte; a list
/// of argument slices is 16 bytes per argument), never to a count the client wrote.
fn allocation_bound(args: &[Vec<u8>]) -> usize {
    let sent: usize = args.iter().map(Vec::len).sum();
    4 * sent + 32 * args.len() + 4096
}

fn config() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES").ok().and_then(|s| s.parse().ok()).unwrap_or(10_000);
    ProptestConfig { cases, max_shrink_iters: 4096, ..ProptestConfig::default() }
}

const LIMITS: Limits = Limits { max_path_len: 48, max_vary: 4, max_tags: 5 };

// ---- Generators ----

fn random_case(word: &'static str) -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(any::<bool>(), word.len()).prop_map(move |upper| {
        word.bytes().zip(upper).map(|(b, u)| if u { b.to_ascii_uppercase() } else { b.to_ascii_lowercase() }).collect()
    })
}

fn keyword() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        random_case("VARY"), random_case("TAGS"), random_case("EX"), random_case("PX"), random_case("QUERY"),
        random_case("COUNT"), random_case("AFTER"), random_case("EXACT"), random_case("GRACE"), random_case("JITTER"),
        random_case("ETAG"), random_case("LEASE"), random_case("WAIT"), random_case("IFNONEMATCH"),
    ]
}

/// Numbers as a hostile client writes them: valid, zero, negative, signed, padded,
/// fractional, and far beyond any limit or machine word.
fn number() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        (1u64..8).prop_map(|n| n.to_string().into_bytes()),
        any::<u64>().prop_map(|n| n.to_string().into_bytes()),
        any::<i64>().prop_map(|n| n.to_string().into_bytes()),
        prop::sample::select(vec![
            "0", "-1", "+1", "01", " 1", "1 ", "1.5", "1e3", "0x10", "", "4", "5", "6", "255", "256", "257", "1024", "1025",
            "10000", "10001", "65535", "65536", "100000", "1000000", "4294967295", "4294967296", "9223372036854775807",
            "9223372036854775808", "18446744073709551615", "18446744073709551616", "99999999999999999999999999999",
            "-9223372036854775808",
        ])
        .prop_map(|s| s.as_bytes().to_vec()),
    ]
}

fn valid_path() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(prop_oneof![Just(b'/'), Just(b'a'), Just(b'b'), Just(b':'), Just(b'.'), 0x80u8..=0xff], 1..10)
            .prop_map(|p| p.into_iter().collect()),
        Just(b"/".to_vec()),
        Just(b"{t}/x".to_vec()),
        Just(b"/a/{b}/c".to_vec()),
    ]
}

fn invalid_path() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        Just(Vec::new()),
        Just(b"/a?b".to_vec()),
        Just(b"/{}".to_vec()),
        Just(b"/{a}{b}".to_vec()),
        Just(b"/}{".to_vec()),
        (0u8..0x20).prop_map(|c| vec![b'/', c]),
        Just(b"/\x7f".to_vec()),
        Just(vec![b'a'; 49]),
    ]
}

fn label() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => proptest::collection::vec(prop_oneof![Just(b'a'), Just(b'B'), Just(b':'), any::<u8>()], 1..6),
        1 => Just(Vec::new()),
        1 => Just(vec![b'x'; MAX_NAME_LEN]),
        1 => Just(vec![b'x'; MAX_NAME_LEN + 1]),
    ]
}

/// One argument: mostly things that mean something to the parsers, some noise.
fn argument() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        12 => keyword(),
        12 => number(),
        9 => valid_path(),
        3 => invalid_path(),
        9 => label(),
        6 => proptest::collection::vec(any::<u8>(), 0..12),
        1 => Just(vec![b'q'; MAX_QUERY_LEN]),
        1 => Just(vec![b'q'; MAX_QUERY_LEN + 1]),
    ]
}

/// A request: either free-form arguments, or a well-formed SET with one argument
/// replaced, inserted or deleted (to reach deep into the option grammar).
fn request() -> impl Strategy<Value = Vec<Vec<u8>>> {
    let free = proptest::collection::vec(argument(), 0..14);
    let well_formed = (valid_path(), proptest::collection::vec(any::<u8>(), 0..8), proptest::collection::vec(label(), 1..4), 1u64..3)
        .prop_map(|(path, value, tags, n)| {
            let mut r = vec![path, value, b"EX".to_vec(), n.to_string().into_bytes(), b"QUERY".to_vec(), b"?a=1".to_vec()];
            r.extend([b"GRACE".to_vec(), b"30".to_vec(), b"JITTER".to_vec(), b"10".to_vec(), b"ETAG".to_vec(), b"\"e\"".to_vec()]);
            r.extend([b"VARY".to_vec(), b"2".to_vec(), b"Accept".to_vec(), b"x".to_vec(), b"accept".to_vec(), b"".to_vec()]);
            r.push(b"TAGS".to_vec());
            r.push(tags.len().to_string().into_bytes());
            r.extend(tags);
            r
        });
    let mutated = (well_formed, 0usize..32, 0u8..3, argument()).prop_map(|(mut r, at, how, arg)| {
        let at = at % (r.len() + 1);
        match how {
            0 if at < r.len() => r[at] = arg,
            1 if at < r.len() => {
                r.remove(at);
            }
            _ => r.insert(at, arg),
        }
        r
    });
    prop_oneof![free, mutated]
}

// ---- Oracles, written from the contract independently of `path.rs` ----

fn path_ok(p: &[u8], max: usize) -> bool {
    let opens: Vec<usize> = p.iter().enumerate().filter(|(_, &b)| b == b'{').map(|(i, _)| i).collect();
    let closes: Vec<usize> = p.iter().enumerate().filter(|(_, &b)| b == b'}').map(|(i, _)| i).collect();
    let braces_ok = match (opens.as_slice(), closes.as_slice()) {
        ([], []) => true,
        ([o], [c]) => c > o && c - o >= 2,
        _ => false,
    };
    !p.is_empty() && p.len() <= max && !p.iter().any(|&b| b < 0x20 || b == 0x7f || b == b'?') && braces_ok
}

fn covers(prefix: &[u8], entry: &[u8]) -> bool {
    if prefix == b"/" {
        return entry.starts_with(b"/");
    }
    let p = prefix.strip_suffix(b"/").unwrap_or(prefix);
    entry == p || (entry.starts_with(p) && entry.get(p.len()) == Some(&b'/'))
}

fn refs(args: &[Vec<u8>]) -> Vec<&[u8]> {
    args.iter().map(Vec::as_slice).collect()
}

proptest! {
    #![proptest_config(config())]

    /// Every parser on every request: no panic, a bounded allocation, and what it
    /// accepts obeys the rules and limits.
    #[test]
    fn parsers(req in request()) {
        let argv = refs(&req);
        let bound = allocation_bound(&req);

        let (set, big) = largest_allocation(|| args::parse_set(&argv, &LIMITS));
        prop_assert!(big <= bound, "parse_set allocated {big} bytes for {} sent", bound);
        if let Ok(s) = set {
            prop_assert!(path_ok(s.path, LIMITS.max_path_len));
            prop_assert!(s.tags.len() <= LIMITS.max_tags);
            prop_assert!(s.variant.vary.len() <= LIMITS.max_vary);
            prop_assert!(s.variant.query.len() <= MAX_QUERY_LEN);
            prop_assert!(s.ttl_ms.is_none_or(|ms| ms > 0));
            prop_assert!(s.grace_s.is_none_or(|g| (0..=315_360_000).contains(&g)));
            prop_assert!(s.jitter_percent.is_none_or(|j| (0..=100).contains(&j)));
            prop_assert!(s.etag.is_none_or(|e| !e.is_empty() && e.len() <= MAX_NAME_LEN && !e.iter().any(|&b| b < 0x20 || b == 0x7f)));
            for (i, t) in s.tags.iter().enumerate() {
                prop_assert!(!t.is_empty() && t.len() <= MAX_NAME_LEN && !s.tags[..i].contains(t));
            }
            for (name, _) in &s.variant.vary {
                prop_assert!(!name.is_empty() && name.len() <= MAX_NAME_LEN);
            }
            let key = entry_key(s.path, &s.variant.variant());
            prop_assert_eq!(parse_entry_key(&key), Some((s.path, s.variant.variant())));
            let stored = entry::encode(s.value, entry::Lifetime::default(), s.etag.unwrap_or(b"e"), &s.tags);
            let e = entry::decode(&stored).unwrap();
            prop_assert_eq!((e.value, e.tags), (s.value, s.tags.clone()));
        }

        let (lookup, big) = largest_allocation(|| args::parse_lookup(&argv, &LIMITS));
        prop_assert!(big <= bound, "parse_lookup allocated {big}");
        if let Ok(l) = lookup {
            prop_assert!(path_ok(l.path, path::MAX_PATH_LEN));
            prop_assert!(l.variant.vary.len() <= LIMITS.max_vary);
            for ms in [l.lease_ms, l.wait_ms].into_iter().flatten() {
                prop_assert!((1..=3_600_000).contains(&ms));
            }
        }

        for command in ["rcache.get", "rcache.del", "rcache.key"] {
            let (got, big) = largest_allocation(|| args::parse_get(command, &argv, &LIMITS));
            prop_assert!(big <= bound, "{command} allocated {big}");
            if let Ok(g) = got {
                prop_assert!(path_ok(g.path, path::MAX_PATH_LEN));
                prop_assert!(g.variant.vary.len() <= LIMITS.max_vary);
                let _ = g.variant.variant();
            }
        }

        let (purge, big) = largest_allocation(|| args::parse_purge("rcache.purge", &argv));
        prop_assert!(big <= bound, "parse_purge allocated {big}");
        if let Ok(p) = purge {
            prop_assert!(path_ok(p.prefix, path::MAX_PATH_LEN));
            prop_assert_eq!(p.exact, argv.len() == 2);
        }

        let (tags, big) = largest_allocation(|| args::parse_purgetag("rcache.purgetag", &argv));
        prop_assert!(big <= bound, "parse_purgetag allocated {big}");
        if let Ok(tags) = tags {
            prop_assert!(!tags.is_empty() && tags.len() <= argv.len());
            prop_assert!(argv.iter().all(|a| tags.contains(a)), "every tag sent is kept");
        }

        let (list, big) = largest_allocation(|| args::parse_list(&argv));
        prop_assert!(big <= bound, "parse_list allocated {big}");
        if let Ok(l) = list {
            prop_assert!(l.prefix.is_empty() || path_ok(l.prefix, path::MAX_PATH_LEN));
            prop_assert!((1..=MAX_LIST_COUNT).contains(&l.count));
            prop_assert!(l.after.is_none_or(|a| path_ok(a, path::MAX_PATH_LEN)));
        }
    }

    /// Path validation agrees with the contract's rules on arbitrary bytes.
    #[test]
    fn path_validation(p in prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..24),
        proptest::collection::vec(prop_oneof![Just(b'{'), Just(b'}'), Just(b'/'), Just(b'?'), Just(b'a'), Just(0u8), Just(0x7fu8)], 0..10),
    ], max in 1usize..30) {
        prop_assert_eq!(path::validate(&p, max).is_ok(), path_ok(&p, max), "{:?}", String::from_utf8_lossy(&p));
        prop_assert_eq!(path::validate_shape(&p).is_ok(), path_ok(&p, usize::MAX));
    }

    /// Prefix and EXACT coverage agree with the contract's definition.
    #[test]
    fn coverage(prefix in proptest::collection::vec(prop_oneof![Just(b'/'), Just(b'a'), Just(b'b')], 1..6),
                entry in proptest::collection::vec(prop_oneof![Just(b'/'), Just(b'a'), Just(b'b')], 1..8)) {
        prop_assert_eq!(Coverage::prefix(&prefix).covers(&entry), covers(&prefix, &entry),
            "{:?} covers {:?}", String::from_utf8_lossy(&prefix), String::from_utf8_lossy(&entry));
        prop_assert_eq!(Coverage::exact(&prefix).covers(&entry), prefix == entry);
    }

    /// Key names from anywhere (user keys, RESTOREd keys): parsing never panics, and
    /// accepts exactly the names `entry_key` produces.
    #[test]
    fn entry_key_parsing(key in prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..48),
        (proptest::collection::vec(prop_oneof![Just(b'{'), Just(b'}'), Just(b'~'), Just(b':'), Just(b'-'), Just(b'/'), Just(b'a'), Just(b'0'), Just(b'?')], 0..24))
            .prop_map(|rest| [b"rcache:".as_slice(), &rest].concat()),
        (valid_path(), proptest::collection::vec(any::<u8>(), 0..3), any::<bool>(), 0usize..120, any::<u8>(), 0u8..3)
            .prop_map(|(path, q, vary, at, b, how)| {
                let pairs: &[(&[u8], &[u8])] = if vary { &[(b"a", b"1")] } else { &[] };
                let mut key = entry_key(&path, &Variant::new(&q, pairs));
                let at = at % (key.len() + 1);
                match how {
                    0 if at < key.len() => key[at] = b,
                    1 if at < key.len() => { key.remove(at); }
                    _ => key.insert(at, b),
                }
                key
            }),
    ]) {
        if let Some((path, variant)) = parse_entry_key(&key) {
            prop_assert!(path::validate_shape(path).is_ok());
            prop_assert_eq!(entry_key(path, &variant), key.clone(), "accepted a name entry_key never makes");
        }
    }

    /// Stored strings from anywhere (a user's SET, RESTORE, a corrupted value):
    /// decoding never panics, allocates in proportion to the bytes, and accepts only
    /// a self-consistent layout.
    #[test]
    fn entry_decoding(bytes in prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..160),
        (proptest::collection::vec(any::<u8>(), 0..16), proptest::collection::vec(label(), 0..4), proptest::collection::vec((0usize..200, any::<u8>()), 1..4), 0usize..300)
            .prop_map(|(value, tags, flips, cut)| {
                let mut tags: Vec<Vec<u8>> = tags.into_iter().filter(|t| t.len() < 64).collect();
                tags.dedup();
                let t: Vec<&[u8]> = tags.iter().map(Vec::as_slice).collect();
                let life = entry::Lifetime { stored_at_ms: 42, fresh_until_ms: 43, grace_s: 7 };
                let mut b = entry::encode(&value, life, b"etag", &t);
                for (at, x) in flips {
                    let at = at % b.len();
                    b[at] = x;
                }
                b.truncate(cut.max(1));
                b
            }),
    ]) {
        let (decoded, big) = largest_allocation(|| entry::decode(&bytes));
        prop_assert!(big <= 16 * bytes.len() + 1024, "decode allocated {big} for {} bytes", bytes.len());
        let header = entry::header(&bytes);
        if let Ok(e) = decoded {
            let at = header.unwrap().value_at;
            prop_assert_eq!(e.value, &bytes[at..]);
            let fixed = if bytes[3] == 1 { 50 } else { 32 + e.etag.len() };
            let used: usize = fixed + e.tags.iter().map(|t| 2 + t.len()).sum::<usize>();
            prop_assert!(used <= at && bytes[used..at].iter().all(|&b| b == 0), "tags fill the header, then zero padding");
            prop_assert!(bytes[3] == 2 || used == at, "v1 has no padding");
        }
    }
}

proptest! {
    #![proptest_config(config())]

    /// `CLUSTER NODES` text (of any Redis version): the slot parsers never panic, and
    /// a slot is migrating or importing only when its own `[` field says so.
    #[test]
    fn cluster_nodes_parsing(lines in proptest::collection::vec(prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..64),
        proptest::collection::vec(prop_oneof![Just(b' '), Just(b'-'), Just(b'['), Just(b']'), Just(b'>'), Just(b'<'), Just(b'1'), Just(b'9')], 0..40)
            .prop_map(|tail| [b"a b myself,master - 0 0 1 connected ".to_vec(), tail].concat()),
    ], 0..4)) {
        let text = lines.join(&b'\n');
        let owned = cluster::SlotSet::from_cluster_nodes(&text);
        let migrating = cluster::SlotSet::migrating_from_cluster_nodes(&text);
        let importing = cluster::SlotSet::importing_from_cluster_nodes(&text);
        if !text.windows(3).any(|w| w == b"->-") {
            prop_assert!(migrating.is_empty());
        }
        if !text.windows(3).any(|w| w == b"-<-") {
            prop_assert!(importing.is_empty());
        }
        prop_assert!(owned.iter().chain(migrating.iter()).chain(importing.iter()).all(|s| s < cluster::SLOTS));
    }

    /// MIGRATE as any client may write it: the filter's edits always apply, and what
    /// Redis then runs moves none of the keys kept here (its keys parse the same way).
    #[test]
    fn migrate_filtering(argv in proptest::collection::vec(prop_oneof![
        4 => prop_oneof![Just(b"hid".to_vec()), Just(b"key".to_vec()), Just(Vec::new())],
        3 => prop_oneof![random_case("KEYS"), random_case("COPY"), random_case("REPLACE"), random_case("AUTH"), random_case("AUTH2")],
        1 => proptest::collection::vec(any::<u8>(), 0..6),
    ], 0..12), name in prop_oneof![random_case("MIGRATE"), Just(b"GET".to_vec())]) {
        let argv: Vec<Vec<u8>> = std::iter::once(name).chain(argv).collect();
        let argv_refs = refs(&argv);
        let kept = |k: &[u8]| k == b"hid";
        let edits = migrate::keep_keys(&argv_refs, kept);
        let out = migrate::apply(&argv_refs, &edits);
        prop_assert!(out.is_some(), "{edits:?} do not apply to {argv:?}");
        let out = out.unwrap_or_default();
        let out_refs = refs(&out);
        prop_assert!(migrate::keep_keys(&out_refs, kept).is_empty(), "a kept key is still moved: {out:?}");
        prop_assert_eq!(out.len() + edits.iter().filter(|e| matches!(e, migrate::Edit::Delete(_))).count(), argv.len() + edits.iter().filter(|e| matches!(e, migrate::Edit::Append(_))).count());
    }

    /// Cluster bus messages come from other nodes (of any version, or damaged):
    /// decoding never panics, allocates in proportion to the bytes, and whatever
    /// decodes encodes back to exactly the same bytes (one encoding per message).
    #[test]
    fn cluster_message_decoding(bytes in prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..96),
        (proptest::collection::vec(label(), 0..4), any::<u64>(), 0u8..8, proptest::collection::vec((0usize..200, any::<u8>()), 0..3), 0usize..200)
            .prop_map(|(words, id, shape, flips, cut)| {
                let target = if shape % 2 == 0 {
                    cluster::Target::Prefix { prefix: words.first().cloned().unwrap_or_default(), exact: shape % 4 == 0 }
                } else {
                    cluster::Target::Tags(words.clone())
                };
                let op = match shape {
                    0 | 1 => cluster::Op::Check { user: b"u".to_vec(), target },
                    2..=5 => cluster::Op::Purge { user: b"u".to_vec(), soft: shape > 3, target },
                    _ => cluster::Op::List { prefix: b"/".to_vec(), after: words.first().cloned(), count: id as u32 },
                };
                let message = if shape == 7 {
                    cluster::Message::Reply { id, answer: cluster::Answer::Paths(words) }
                } else {
                    cluster::Message::Request(cluster::Request { id, issued_ms: id / 5, deadline_ms: id / 3, db: 0, op })
                };
                let mut b = cluster::encode(&message);
                for (at, x) in flips {
                    let at = at % b.len();
                    b[at] = x;
                }
                b.truncate(cut.max(1));
                b
            }),
    ]) {
        let (decoded, big) = largest_allocation(|| cluster::decode(&bytes));
        prop_assert!(big <= 8 * bytes.len() + 1024, "decode allocated {big} for {} bytes", bytes.len());
        if let Ok(m) = decoded {
            prop_assert_eq!(cluster::encode(&m), bytes);
        }
    }
}

/// Counts far beyond what was sent (or what fits a machine word) are refused before
/// anything is allocated for them.
#[test]
fn huge_counts_are_refused_before_allocating() {
    let huge = ["1000000", "4294967295", "4294967296", "9223372036854775807", "18446744073709551615", "99999999999999999999999"];
    for count in huge {
        for option in ["VARY", "TAGS"] {
            let req: Vec<Vec<u8>> = ["/p", "v", option, count, "a", "b"].iter().map(|s| s.as_bytes().to_vec()).collect();
            let argv = refs(&req);
            let (r, big) = largest_allocation(|| args::parse_set(&argv, &LIMITS));
            assert!(r.is_err(), "{option} {count} accepted");
            assert!(big < 1024, "{option} {count}: allocated {big} bytes");
            let (r, big) = largest_allocation(|| args::parse_get("rcache.get", &argv[..1].iter().chain(&argv[2..]).copied().collect::<Vec<_>>(), &LIMITS));
            assert!(r.is_err() && big < 1024, "GET {option} {count}: {r:?}, allocated {big}");
        }
    }
    // Within what was sent but over the configured limit: refused before the pairs
    // (or tags) are collected.
    let mut req: Vec<Vec<u8>> = ["/p", "v", "VARY", "1000"].iter().map(|s| s.as_bytes().to_vec()).collect();
    req.extend((0..2000).map(|i| format!("n{i}").into_bytes()));
    let argv = refs(&req);
    let (r, big) = largest_allocation(|| args::parse_set(&argv, &LIMITS));
    assert_eq!(r.unwrap_err(), "ERR VARY count 1000 is over the limit of 4");
    assert!(big < 1024, "allocated {big}");
}

/// The tracker itself: a test that could not fail would prove nothing.
#[test]
fn allocation_tracker_sees_allocations() {
    let (_, big) = largest_allocation(|| Vec::<u8>::with_capacity(1 << 20));
    assert!(big >= 1 << 20);
    let (_, big) = largest_allocation(|| 1 + 1);
    assert_eq!(big, 0);
}

/// 100k distinct tags: linear work, not quadratic (this took about 18 s in a server).
#[test]
fn purgetag_parsing_is_linear() {
    let req: Vec<Vec<u8>> = (0..200_000).map(|i| format!("tag:{i}").into_bytes()).collect();
    let argv = refs(&req);
    let started = std::time::Instant::now();
    assert_eq!(args::parse_purgetag("rcache.purgetag", &argv).unwrap().len(), 200_000);
    assert!(started.elapsed() < std::time::Duration::from_secs(2), "{:?}", started.elapsed());
}
