//! Issue 14, items 2, 5 and 6: what crashes and reloads keep.
//! - item 2: with the shipped `redis.conf`, a purge survives a crash (SIGKILL);
//! - item 5: reloads and MODULE LOAD keep eviction data (LRU idle time, LFU counter):
//!   the module's own reads never touch keys;
//! - item 6: `DEBUG RELOAD NOSAVE NOFLUSH MERGE` keeps live entries in the index.

mod common;
mod index_common;
use common::*;
use index_common::*;

use std::time::Duration;

/// The repository's `redis.conf`, with the module path it names (relative to the
/// repository root) replaced by the module under test.
fn shipped_conf() -> String {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/redis.conf")).expect("read redis.conf");
    let module = module_path().display().to_string();
    let conf: String = text
        .lines()
        .map(|l| l.replacen("./target/release/librcache.so", &module, 1) + "\n")
        .collect();
    assert!(conf.contains(&format!("loadmodule {module}")), "redis.conf loads no module");
    conf
}

#[test]
fn a_purge_survives_a_crash_with_the_shipped_configuration() {
    let mut s = Server::start_with_conf(&shipped_conf(), &[]);
    let mut c = s.conn();
    set(&mut c, &["/news/1", "old", "TAGS", "1", "news"]);
    set(&mut c, &["/news/2", "old"]);
    set(&mut c, &["/sport/1", "kept"]);
    // A snapshot that still holds the entries…
    q::<String>(&mut c, &["BGSAVE"]);
    assert!(
        eventually(30, || server_info_u64(&mut c, "persistence", "rdb_bgsave_in_progress") == 0),
        "BGSAVE did not finish"
    );
    assert_eq!(server_info_str(&mut c, "persistence", "rdb_last_bgsave_status"), "ok");
    // …then purges, acknowledged to the client, then a crash.
    assert_eq!(q::<i64>(&mut c, &["RCACHE.PURGE", "/news/1"]), 1);
    assert_eq!(q::<i64>(&mut c, &["RCACHE.DEL", "/news/2"]), 1);
    set(&mut c, &["/sport/2", "new"]);
    s.crash_and_restart();
    let mut c = s.conn();
    assert_eq!(get(&mut c, &["/news/1"]), None, "a purged entry is served again after a crash");
    assert_eq!(get(&mut c, &["/news/2"]), None, "a deleted entry is served again after a crash");
    assert_eq!(get(&mut c, &["/sport/1"]).as_deref(), Some(&b"kept"[..]));
    assert_eq!(get(&mut c, &["/sport/2"]).as_deref(), Some(&b"new"[..]), "an acknowledged SET was lost");
    assert_eq!(q::<i64>(&mut c, &["RCACHE.PURGETAG", "news"]), 0);
    assert_index_exact(&mut c, &[0], "after the crash");
}

fn idle(c: &mut Connection, key: &str) -> u64 {
    q(c, &["OBJECT", "IDLETIME", key])
}

fn freq(c: &mut Connection, key: &str) -> u64 {
    q(c, &["OBJECT", "FREQ", key])
}

/// Entry keys `/e/0..n`, left idle for 3.6 s (OBJECT IDLETIME counts whole seconds of a
/// clock that serverCron updates: the margin keeps "at least 3" certain).
fn idle_entries(c: &mut Connection, n: usize) -> Vec<String> {
    fill(c, "/e", n, 100, &["TAGS", "1", "t"]);
    let keys = entry_keys(c);
    std::thread::sleep(Duration::from_millis(3600));
    for k in &keys {
        assert!(idle(c, k) >= 3, "{k} not idle before the reload");
    }
    keys
}

#[test]
fn debug_reload_keeps_lru_idle_time() {
    let s = Server::start_with(&["--enable-debug-command", "yes", "--maxmemory-policy", "allkeys-lru"], &[]);
    let mut c = s.conn();
    let keys = idle_entries(&mut c, 20);
    q::<()>(&mut c, &["DEBUG", "RELOAD"]);
    for k in &keys {
        assert!(idle(&mut c, k) >= 3, "DEBUG RELOAD reset the idle time of {k}");
    }
    assert_eq!(assert_index_exact(&mut c, &[0], "after DEBUG RELOAD"), 20);
}

/// Entry bytes made by a server with the module, for a server without it.
fn entry_bytes(n: usize) -> Vec<(String, Vec<u8>)> {
    let s = Server::start();
    let mut c = s.conn();
    fill(&mut c, "/e", n, 100, &["TAGS", "1", "t"]);
    entry_keys(&mut c).into_iter().map(|k| (k.clone(), q(&mut c, &["GET", &k]))).collect()
}

fn plain_server_with_entries(policy: &str, entries: &[(String, Vec<u8>)]) -> (Server, Connection) {
    let s = Server::start_plain();
    let mut c = s.conn();
    q::<()>(&mut c, &["CONFIG", "SET", "maxmemory-policy", policy, "lfu-decay-time", "0"]);
    for (k, v) in entries {
        let _: () = cmd("SET").arg(k).arg(v).query(&mut c).expect("SET");
    }
    (s, c)
}

#[test]
fn module_load_keeps_lru_idle_time_and_lfu_counters() {
    let entries = entry_bytes(20);
    let module = module_path().display().to_string();

    let (_lru, mut c) = plain_server_with_entries("allkeys-lru", &entries);
    std::thread::sleep(Duration::from_millis(3600));
    q::<()>(&mut c, &["MODULE", "LOAD", &module]);
    for (k, _) in &entries {
        assert!(idle(&mut c, k) >= 3, "MODULE LOAD reset the idle time of {k}");
    }
    assert_eq!(q::<i64>(&mut c, &["RCACHE.PURGETAG", "t"]), 20, "MODULE LOAD indexed the entries");

    // A new key's LFU counter is 5, and every access below 6 increments it: one touch shows.
    let (_lfu, mut c) = plain_server_with_entries("allkeys-lfu", &entries);
    let before: Vec<u64> = entries.iter().map(|(k, _)| freq(&mut c, k)).collect();
    q::<()>(&mut c, &["MODULE", "LOAD", &module]);
    let after: Vec<u64> = entries.iter().map(|(k, _)| freq(&mut c, k)).collect();
    assert_eq!(after, before, "MODULE LOAD changed LFU counters");
    assert_eq!(q::<i64>(&mut c, &["RCACHE.PURGETAG", "t"]), 20);
}

#[test]
fn debug_reload_keeps_lfu_counters() {
    let s = Server::start_with(&["--enable-debug-command", "yes", "--maxmemory-policy", "allkeys-lfu", "--lfu-decay-time", "0"], &[]);
    let mut c = s.conn();
    fill(&mut c, "/e", 20, 100, &[]);
    let keys = entry_keys(&mut c);
    let before: Vec<u64> = keys.iter().map(|k| freq(&mut c, k)).collect();
    q::<()>(&mut c, &["DEBUG", "RELOAD"]);
    let after: Vec<u64> = keys.iter().map(|k| freq(&mut c, k)).collect();
    assert_eq!(after, before, "DEBUG RELOAD changed LFU counters");
}

#[test]
fn debug_reload_merge_keeps_live_entries_indexed() {
    let s = Server::start_with(&["--enable-debug-command", "yes"], &[]);
    let mut c = s.conn();
    set(&mut c, &["/m/saved", "v", "TAGS", "1", "old"]);
    set(&mut c, &["/m/replaced", "saved", "TAGS", "1", "old"]);
    q::<()>(&mut c, &["SAVE"]);
    // After the snapshot: a live-only entry, and a live version of a saved one.
    set(&mut c, &["/m/live", "v", "TAGS", "1", "live"]);
    set(&mut c, &["/m/replaced", "live", "TAGS", "1", "live"]);
    q::<()>(&mut c, &["DEBUG", "RELOAD", "NOSAVE", "NOFLUSH", "MERGE"]);
    assert_eq!(assert_index_exact(&mut c, &[0], "after DEBUG RELOAD MERGE"), 3);
    // The snapshot's version of /m/replaced won, with its tags.
    assert_eq!(get(&mut c, &["/m/replaced"]).as_deref(), Some(&b"saved"[..]));
    assert_eq!(q::<i64>(&mut c, &["RCACHE.PURGETAG", "live"]), 1, "only /m/live carries `live` now");
    assert_eq!(q::<i64>(&mut c, &["RCACHE.PURGE", "/m"]), 2);
    assert_eq!(entry_keys(&mut c), Vec::<String>::new(), "PURGE /m missed a live entry");
}

/// A load into an empty index is indexed on a thread (issue 14, item 4). INFO, which
/// monitoring polls during long loads, reads the index as it is and leaves that thread
/// alone: its figures leave out the entries being loaded until loading ends.
#[test]
fn info_during_a_load_leaves_the_indexing_thread_alone() {
    let s = Server::start_with(&["--enable-debug-command", "yes"], &[]);
    let mut c = s.conn();
    fill(&mut c, "/l", 2000, 20, &["TAGS", "1", "l"]);
    q::<()>(&mut c, &["SAVE"]);
    // About a second of loading, answering clients between keys.
    q::<()>(&mut c, &["CONFIG", "SET", "key-load-delay", "500"]);
    q::<()>(&mut c, &["CONFIG", "SET", "loading-process-events-interval-bytes", "1024"]);
    let mut reloader = s.conn();
    let reload = std::thread::spawn(move || q::<()>(&mut reloader, &["DEBUG", "RELOAD", "NOSAVE"]));
    let mut mid_load = Vec::new();
    while !reload.is_finished() {
        let text: String = q(&mut c, &["INFO", "persistence", "rcache"]);
        let field = |name: &str| text.lines().find_map(|l| l.strip_prefix(name)).map(|v| v.trim().to_string());
        if field("loading:").as_deref() == Some("1") {
            mid_load.push(field("rcache_entries:").unwrap_or_default());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    reload.join().expect("DEBUG RELOAD");
    assert!(mid_load.len() >= 3, "INFO answered only {} times during the load", mid_load.len());
    assert!(mid_load.iter().all(|e| e == "0"), "INFO installed the load's index early: entries {mid_load:?}");
    q::<()>(&mut c, &["CONFIG", "SET", "key-load-delay", "0"]);
    assert_eq!(assert_index_exact(&mut c, &[0], "after the load"), 2000);
    assert_eq!(q::<i64>(&mut c, &["RCACHE.PURGETAG", "l"]), 2000);
}
