//! Issue 3, item 3: nothing leaks. 200,000 entries (with tags and variants) expire,
//! then the same entries are evicted; each time INFO `index_bytes` returns to within
//! 5% (or 64 KiB) of its value on the empty server. A test, not a benchmark.

mod common;
mod index_common;
use common::*;
use index_common::*;

const N: usize = 200_000;

/// The 200k entries: paths in a two-level tree, every 7th with a query variant, every
/// entry with a shared tag and every 10th with a tag of its own.
fn insert_all(c: &mut Connection, ttl: &[&str]) {
    let indices: Vec<usize> = (0..N).collect();
    for chunk in indices.chunks(2000) {
        let mut p = redis::pipe();
        for &i in chunk {
            let cmd = p.cmd("RCACHE.SET").arg(format!("/leak/{}/{}", i / 1000, i % 1000)).arg("v");
            cmd.arg(ttl);
            if i % 7 == 0 {
                cmd.arg("QUERY").arg(format!("page={i}"));
            }
            if i % 10 == 0 {
                cmd.arg("TAGS").arg(2).arg(format!("shared{}", i % 100)).arg(format!("own{i}"));
            } else {
                cmd.arg("TAGS").arg(1).arg(format!("shared{}", i % 100));
            }
            cmd.ignore();
        }
        p.query::<()>(c).expect("pipelined RCACHE.SET");
    }
}

fn index_bytes(c: &mut Connection) -> u64 {
    info_u64(c, "index_bytes")
}

fn assert_back_to(c: &mut Connection, empty: u64, peak: u64, what: &str) -> u64 {
    let now = index_bytes(c);
    let tolerance = (empty / 20).max(64 * 1024);
    assert!(
        now.abs_diff(empty) <= tolerance,
        "{what}: index_bytes {now} is not within {tolerance} of the empty server's {empty} (peak {peak})"
    );
    now
}

#[test]
fn index_memory_returns_after_expiry_and_after_eviction() {
    let s = Server::start_with(&["--hz", "100"], &[]);
    let mut c = s.conn();
    let empty = index_bytes(&mut c);

    insert_all(&mut c, &["PX", "1000"]);
    let peak_expiry = index_bytes(&mut c);
    // Not all 200k need to be alive at once (the first may expire during the insert),
    // but the index must have grown by far more than the tolerance.
    assert!(peak_expiry > empty + 4 * 1024 * 1024, "the index did not grow: {empty} -> {peak_expiry}");
    assert!(
        eventually(60, || q::<i64>(&mut s.conn(), &["DBSIZE"]) == 0 && info_u64(&mut s.conn(), "entries") == 0),
        "entries did not all expire: DBSIZE {} {:?}",
        q::<i64>(&mut c, &["DBSIZE"]),
        info(&mut c)
    );
    let i = info(&mut c);
    assert_eq!((i["paths"].as_str(), i["tags"].as_str()), ("0", "0"));
    assert_eq!(removals(&mut c), (N as u64, 0, 0));
    let after_expiry = assert_back_to(&mut c, empty, peak_expiry, "after expiry");

    insert_all(&mut c, &[]);
    assert_eq!(info_u64(&mut c, "entries"), N as u64);
    let peak_eviction = index_bytes(&mut c);
    q::<()>(&mut c, &["CONFIG", "SET", "maxmemory-policy", "allkeys-lru"]);
    q::<()>(&mut c, &["CONFIG", "SET", "maxmemory", "1"]);
    assert!(
        eventually(60, || q::<i64>(&mut s.conn(), &["DBSIZE"]) == 0),
        "entries were not all evicted: DBSIZE {}",
        q::<i64>(&mut c, &["DBSIZE"])
    );
    q::<()>(&mut c, &["CONFIG", "SET", "maxmemory", "0"]);
    let i = info(&mut c);
    assert_eq!((i["entries"].as_str(), i["paths"].as_str(), i["tags"].as_str()), ("0", "0", "0"));
    assert_eq!(removals(&mut c), (N as u64, N as u64, 0));
    let after_eviction = assert_back_to(&mut c, empty, peak_eviction, "after eviction");
    println!(
        "index_bytes: empty {empty}, peak {peak_expiry} (TTL run) / {peak_eviction} (eviction run), \
         after expiry {after_expiry}, after eviction {after_eviction}"
    );
}
