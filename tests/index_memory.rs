//! The index's memory: `index_bytes` reports what Redis' allocator really holds for
//! the module (checked against `used_memory` next to a plain Redis holding the same
//! keys), and an (entry, tag) pair costs little (figures printed with `--nocapture`).

mod common;
use common::*;

const N: usize = 40_000;
const BATCH: usize = 1000;

fn used_memory(c: &mut Connection) -> i64 {
    q::<String>(c, &["INFO", "memory"])
        .lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("used_memory")
}

fn index_bytes(c: &mut Connection) -> i64 {
    info_u64(c, "index_bytes") as i64
}

/// SETs N entries `/m/<i>` (values of 100 bytes), each with `tags` tags out of a pool of 1000.
fn load(c: &mut Connection, tags: usize, path: &str) {
    for start in (0..N).step_by(BATCH) {
        let mut p = redis::pipe();
        for i in start..start + BATCH {
            let mut command = cmd("RCACHE.SET");
            command.arg(format!("{path}/{i}")).arg(format!("{i:0>100}"));
            if tags > 0 {
                command.arg("TAGS").arg(tags);
                for t in 0..tags {
                    command.arg(format!("tag:{}", (i * 7 + t * 13) % 1000));
                }
            }
            p.add_command(command).ignore();
        }
        p.query::<()>(c).expect("RCACHE.SET");
    }
}

/// The module's share of `used_memory` is what `index_bytes` says it is: the growth
/// of `used_memory` beyond a plain server that stores the same keys and values.
#[test]
fn index_bytes_match_used_memory() {
    let with = Server::start();
    let plain = Server::start_plain();
    let (mut a, mut b) = (with.conn(), plain.conn());
    let (a0, b0, i0) = (used_memory(&mut a), used_memory(&mut b), index_bytes(&mut a));
    load(&mut a, 8, "/m");
    // The same keys and stored bytes, written by plain SETs.
    for start in (0..N).step_by(BATCH) {
        let keys: Vec<String> = (start..start + BATCH).map(|i| format!("rcache:{{/m/{i}}}:-:-")).collect();
        let values: Vec<Vec<u8>> = cmd("MGET").arg(&keys).query(&mut a).expect("MGET");
        let mut p = redis::pipe();
        for (k, v) in keys.iter().zip(values) {
            p.cmd("SET").arg(k).arg(v).ignore();
        }
        p.query::<()>(&mut b).expect("SET");
    }
    assert_eq!(q::<usize>(&mut b, &["DBSIZE"]), N);
    let (a1, b1, i1) = (used_memory(&mut a), used_memory(&mut b), index_bytes(&mut a));
    let module = (a1 - a0) - (b1 - b0);
    let index = i1 - i0;
    println!("used_memory growth beyond plain Redis: {module} B; index_bytes growth: {index} B");
    let off = (module - index).abs() as f64 / module as f64;
    assert!(off < 0.05, "index_bytes grew by {index} B, the module's used_memory by {module} B ({:.1} % off)", off * 100.0);
}

/// Bytes per (entry, tag) pair for 1, 8 and 64 tags per entry, from `index_bytes`
/// over the same entries untagged; the marginal cost of one more pair (64 against 8
/// tags per entry) is at most 24 bytes.
#[test]
fn bytes_per_entry_tag_pair() {
    let s = Server::start_with(&[], &["max-tags", "64"]);
    let mut c = s.conn();
    let mut bytes = Vec::new();
    for (round, tags) in [0usize, 1, 8, 64].into_iter().enumerate() {
        let before = index_bytes(&mut c);
        load(&mut c, tags, &format!("/r{round}"));
        bytes.push((tags, index_bytes(&mut c) - before));
        assert_eq!(q::<usize>(&mut c, &["RCACHE.PURGE", &format!("/r{round}")]), N);
        // The purge finishes in the background: the next round must not net out its frees.
        assert!(eventually(30, || info_u64(&mut c, "purge_pending") == 0));
    }
    let untagged = bytes[0].1;
    println!("{N} entries, tags drawn from 1000: tags/entry, index bytes/entry, bytes/pair over untagged");
    for &(tags, b) in &bytes {
        let per_pair = if tags == 0 { 0.0 } else { (b - untagged) as f64 / (N * tags) as f64 };
        println!("{tags:>3} {:>8.1} {per_pair:>8.1}", b as f64 / N as f64);
    }
    let marginal = (bytes[3].1 - bytes[2].1) as f64 / (N * (64 - 8)) as f64;
    println!("marginal bytes per pair (64 vs 8 tags/entry): {marginal:.1}");
    assert!(marginal <= 24.0, "one more (entry, tag) pair costs {marginal:.1} bytes");
    // An entry's only tag carries the record that names its key (path and variant).
    let lone = (bytes[1].1 - untagged) as f64 / N as f64;
    assert!(lone <= 72.0, "an entry's only tag costs {lone:.1} bytes");
}
