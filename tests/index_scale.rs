//! The index's cost per entry does not depend on how the entries share paths: 100k
//! variants of one path against 100k distinct paths, in the same run, for every way an
//! entry comes and goes (SET, load, PURGETAG, PURGE, DEL, expiry, eviction). Times are
//! compared as ratios; the figures are printed (`--nocapture`).

mod common;
use common::*;
use std::time::{Duration, Instant};

const N: usize = 100_000;
const BATCH: usize = 1000;
/// Generous: the quadratic index made these 10x-40x.
const MAX_RATIO: f64 = 5.0;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Shape {
    /// `/search?x=<i>`: one path, N query-string variants.
    Variants,
    /// `/search/<i>`: N paths, one entry each.
    Paths,
}

fn path_and_query(shape: Shape, i: usize) -> (String, String) {
    match shape {
        Shape::Variants => ("/search".into(), format!("x={i}")),
        Shape::Paths => (format!("/search/{i}"), String::new()),
    }
}

/// Runs `words(i)` for i in `range`, pipelined; returns the seconds taken.
fn pipelined(c: &mut Connection, range: std::ops::Range<usize>, words: impl Fn(usize) -> Vec<String>) -> f64 {
    let started = Instant::now();
    let items: Vec<usize> = range.collect();
    for chunk in items.chunks(BATCH) {
        let mut p = redis::pipe();
        for &i in chunk {
            let w = words(i);
            let mut command = cmd(&w[0]);
            for a in &w[1..] {
                command.arg(a.as_str());
            }
            p.add_command(command).ignore();
        }
        p.query::<()>(c).expect("pipeline");
    }
    started.elapsed().as_secs_f64()
}

fn set_words(shape: Shape, i: usize, extra: &[&str]) -> Vec<String> {
    let (path, query) = path_and_query(shape, i);
    let mut w: Vec<String> = vec!["RCACHE.SET".into(), path, format!("value-{i:0>64}")];
    if !query.is_empty() {
        w.extend(["QUERY".into(), query]);
    }
    w.extend(extra.iter().map(|s| s.to_string()));
    w.extend(["TAGS".into(), "1".into(), "search".into()]);
    w
}

fn timed(f: impl FnOnce()) -> f64 {
    let started = Instant::now();
    f();
    started.elapsed().as_secs_f64()
}

/// Seconds for each phase, in the order of `PHASES`.
const PHASES: [&str; 7] = ["set", "reload", "purgetag", "purge", "del", "expiry", "eviction"];

fn measure(shape: Shape) -> Vec<f64> {
    let s = Server::start_with(&["--enable-debug-command", "yes", "--hz", "100"], &[]);
    let mut c = s.conn();
    let mut figures = Vec::new();
    let entries = |c: &mut Connection| info_u64(c, "entries") as usize;

    figures.push(pipelined(&mut c, 0..N, |i| set_words(shape, i, &[])));
    assert_eq!(entries(&mut c), N);

    figures.push(timed(|| q::<()>(&mut c, &["DEBUG", "RELOAD"])));
    assert_eq!(entries(&mut c), N, "{shape:?}: reload indexed every entry");

    figures.push(timed(|| assert_eq!(q::<usize>(&mut c, &["RCACHE.PURGETAG", "search"]), N)));
    assert_eq!(entries(&mut c), 0);

    // `/search` covers the one path of every variant, or the subtree of every path.
    pipelined(&mut c, 0..N, |i| set_words(shape, i, &[]));
    // Until the background removal is done (the reply comes after hiding them).
    figures.push(timed(|| {
        assert_eq!(q::<usize>(&mut c, &["RCACHE.PURGE", "/search"]), N);
        assert!(eventually(300, || info_u64(&mut c, "purge_pending") == 0), "{shape:?}: the purge did not finish");
    }));
    assert_eq!(entries(&mut c), 0);
    assert_eq!(q::<usize>(&mut c, &["DBSIZE"]), 0);

    pipelined(&mut c, 0..N, |i| set_words(shape, i, &[]));
    figures.push(pipelined(&mut c, 0..N, |i| {
        let (path, query) = path_and_query(shape, i);
        let mut w = vec!["RCACHE.DEL".into(), path];
        if !query.is_empty() {
            w.extend(["QUERY".into(), query]);
        }
        w
    }));
    assert_eq!(entries(&mut c), 0);

    // Expiry: every entry expires at once; active expiry drops them all.
    q::<()>(&mut c, &["DEBUG", "SET-ACTIVE-EXPIRE", "0"]);
    pipelined(&mut c, 0..N, |i| set_words(shape, i, &["PX", "1"]));
    std::thread::sleep(Duration::from_millis(20));
    let started = Instant::now();
    q::<()>(&mut c, &["DEBUG", "SET-ACTIVE-EXPIRE", "1"]);
    assert!(eventually(300, || entries(&mut c) == 0), "{shape:?}: entries did not expire");
    figures.push(started.elapsed().as_secs_f64());

    // Eviction: with memory for about half of them, SET N entries; about N/2 are evicted.
    pipelined(&mut c, 0..N / 2, |i| set_words(shape, i, &[]));
    let used: u64 = q::<String>(&mut c, &["INFO", "memory"])
        .lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("used_memory");
    q::<usize>(&mut c, &["RCACHE.PURGETAG", "search"]);
    q::<()>(&mut c, &["CONFIG", "SET", "maxmemory-policy", "allkeys-random"]);
    q::<()>(&mut c, &["CONFIG", "SET", "maxmemory", &used.to_string()]);
    figures.push(pipelined(&mut c, 0..N, |i| set_words(shape, i, &[])));
    let evicted = info_u64(&mut c, "index_removals_evicted");
    assert!(evicted as usize >= N / 4, "{shape:?}: only {evicted} entries were evicted");
    let left = entries(&mut c);
    let keys: usize = q(&mut c, &["DBSIZE"]);
    assert_eq!(left, keys, "{shape:?}: the index matches the keyspace after eviction");
    figures
}

#[test]
fn variants_of_one_path_cost_what_distinct_paths_cost() {
    let paths = measure(Shape::Paths);
    let variants = measure(Shape::Variants);
    let mut failed = Vec::new();
    println!("{N} entries: phase, distinct paths (s), variants of one path (s), ratio");
    for ((phase, p), v) in PHASES.iter().zip(&paths).zip(&variants) {
        // A floor of 50 ms keeps noise on a loaded machine out of tiny phases.
        let ratio = v.max(0.05) / p.max(0.05);
        println!("{phase:>9}: {p:8.3} {v:8.3} {ratio:6.2}x");
        if ratio > MAX_RATIO {
            failed.push(format!("{phase} {ratio:.1}x"));
        }
    }
    assert!(failed.is_empty(), "variants of one path cost more than {MAX_RATIO}x: {failed:?}");
}
