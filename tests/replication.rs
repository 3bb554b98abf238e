//! Writes reach replicas and the AOF as effects with absolute expiry: after WAIT a
//! replica answers exactly as the master, and restarts keep entries, TTLs and the index.

mod common;
use common::*;
use std::time::Duration;

fn start_replica(master: &Server) -> Server {
    let replica = Server::start_with(&["--replicaof", "127.0.0.1", &master.port.to_string()], &[]);
    let mut c = replica.conn();
    assert!(
        eventually(20, || q::<String>(&mut c, &["INFO", "replication"]).contains("master_link_status:up")),
        "replica never synced"
    );
    replica
}

/// Every write command, with every option that changes what is stored.
fn run_every_write(c: &mut Connection) {
    let writes: &[&[&str]] = &[
        &["RCACHE.SET", "/t/5", "plain"],
        &["RCACHE.SET", "/t/5", "q", "QUERY", "?page=2", "EX", "1000"],
        &["RCACHE.SET", "/t/5", "v", "VARY", "2", "Accept", "a", "Cookie-lang", "en", "PX", "900000"],
        &["RCACHE.SET", "/t/5/bracket", "b", "TAGS", "2", "match:1", "team:3"],
        &["RCACHE.SET", "/t/6", "six", "TAGS", "1", "team:3"],
        &["RCACHE.SET", "/t/7", "seven"],
        &["RCACHE.SET", "{shop}/p/1", "p1"],
        &["RCACHE.SET", "/gone", "x"],
        &["RCACHE.DEL", "/gone"],
        &["RCACHE.SET", "/t/8", "eight"],
        &["RCACHE.PURGE", "/t/8", "EXACT"],
    ];
    for w in writes {
        let _: Value = q(c, w);
    }
}

/// (key, DUMP, PTTL rounded to seconds) of every key: what a replica must mirror.
fn snapshot(c: &mut Connection) -> Vec<(String, Vec<u8>, i64)> {
    let mut keys: Vec<String> = q(c, &["KEYS", "*"]);
    keys.sort();
    keys.into_iter()
        .map(|k| {
            let dump: Vec<u8> = q(c, &["DUMP", &k]);
            let pttl: i64 = q(c, &["PTTL", &k]);
            (k, dump, if pttl < 0 { pttl } else { (pttl + 500) / 1000 })
        })
        .collect()
}

fn reads(c: &mut Connection) -> Vec<Option<Vec<u8>>> {
    let gets: &[&[&str]] = &[
        &["RCACHE.GET", "/t/5"],
        &["RCACHE.GET", "/t/5", "QUERY", "page=2"],
        &["RCACHE.GET", "/t/5", "VARY", "2", "cookie-LANG", "en", "accept", "a"],
        &["RCACHE.GET", "/t/5/bracket"],
        &["RCACHE.GET", "{shop}/p/1"],
        &["RCACHE.GET", "/gone"],
        &["RCACHE.GET", "/t/8"],
    ];
    gets.iter().map(|g| q(c, g)).collect()
}

#[test]
fn replica_mirrors_every_write_and_purge() {
    let master = Server::start();
    let replica = start_replica(&master);
    let (mut m, mut r) = (master.conn(), replica.conn());
    run_every_write(&mut m);
    assert_eq!(q::<i64>(&mut m, &["WAIT", "1", "5000"]), 1);
    assert_eq!(snapshot(&mut m), snapshot(&mut r));
    assert_eq!(reads(&mut m), reads(&mut r));
    let list = |c: &mut Connection| q::<Vec<String>>(c, &["RCACHE.LIST", "/", "COUNT", "1000"]);
    assert_eq!(list(&mut m), list(&mut r));
    assert_eq!(info_u64(&mut r, "entries"), info_u64(&mut m, "entries"));

    assert_eq!(q::<i64>(&mut m, &["RCACHE.PURGE", "/t"]), 6);
    assert_eq!(q::<i64>(&mut m, &["WAIT", "1", "5000"]), 1);
    assert_eq!(reads(&mut r), reads(&mut m));
    assert_eq!(q::<Option<Vec<u8>>>(&mut r, &["RCACHE.GET", "/t/5"]), None);
    assert_eq!(entry_keys(&mut r), vec!["rcache:~{shop}/p/1:-:-".to_string()]);
    assert_eq!(info_u64(&mut r, "entries"), 1, "the replica's index follows the purge");
    // Writes are refused on a read-only replica, as for any write command.
    assert!(q_err(&mut r, &["RCACHE.SET", "/x", "v"]).starts_with("READONLY"));
}

#[test]
fn replicated_ttl_is_absolute() {
    let master = Server::start_with(&["--appendonly", "yes", "--appendfsync", "always"], &[]);
    let mut m = master.conn();
    q::<()>(&mut m, &["RCACHE.SET", "/ttl", "v", "EX", "100"]);
    let aof_dir = master.dir.join("appendonlydir");
    let aof: String = std::fs::read_dir(&aof_dir)
        .expect("appendonlydir")
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".incr.aof"))
        .map(|e| String::from_utf8_lossy(&std::fs::read(e.path()).unwrap()).into_owned())
        .collect();
    assert!(aof.contains("PXAT"), "AOF should carry an absolute expiry:\n{aof}");
    assert!(!aof.contains("RCACHE.SET"), "effects, not the command, are replicated");
}

#[test]
fn restarts_keep_entries_ttls_and_the_index() {
    for (name, extra) in [("RDB", &["--save", "3600 1"][..]), ("AOF", &["--appendonly", "yes"][..]), ("AOF without preamble", &["--appendonly", "yes", "--aof-use-rdb-preamble", "no"][..])] {
        let mut s = Server::start_with(extra, &[]);
        let mut c = s.conn();
        run_every_write(&mut c);
        let before = snapshot(&mut c);
        let before_reads = reads(&mut c);
        let ttl_key: String = q(&mut c, &["RCACHE.KEY", "/t/5", "QUERY", "?page=2"]);
        let pttl_before: i64 = q(&mut c, &["PTTL", &ttl_key]);
        std::thread::sleep(Duration::from_millis(1100));
        s.restart(name == "RDB", &[]);
        let mut c = s.conn();
        assert_eq!(reads(&mut c), before_reads, "{name}");
        let after = snapshot(&mut c);
        assert_eq!(after.len(), before.len(), "{name}");
        let pttl_after: i64 = q(&mut c, &["PTTL", &ttl_key]);
        assert!(pttl_before > 0 && pttl_after > 0 && pttl_after <= pttl_before - 1000, "{name}: remaining TTL kept ({pttl_before} -> {pttl_after})");
        assert_eq!(info_u64(&mut c, "entries"), before.iter().filter(|(k, _, _)| k.starts_with("rcache:")).count() as u64, "{name}: index rebuilt");
        assert_eq!(q::<i64>(&mut c, &["RCACHE.PURGE", "/t"]), 6, "{name}: PURGE after restart removes and counts");
        assert_eq!(info_u64(&mut c, "entries"), 1, "{name}");
    }
}

/// MODULE LOAD into a server that already holds entries (written by another server
/// and restored here) indexes them; MODULE UNLOAD is refused.
#[test]
fn module_loaded_at_runtime_indexes_existing_entries() {
    let with_module = Server::start();
    let mut w = with_module.conn();
    run_every_write(&mut w);
    let entries = snapshot(&mut w);
    let plain = Server::start_plain();
    let mut p = plain.conn();
    q::<()>(&mut p, &["SELECT", "3"]);
    for (key, dump, _) in &entries {
        cmd("RESTORE").arg(key).arg(0).arg(dump).query::<()>(&mut p).unwrap();
    }
    q::<()>(&mut p, &["MODULE", "LOAD", &module_path().display().to_string()]);
    assert_eq!(info_u64(&mut p, "entries"), entries.len() as u64);
    assert_eq!(reads(&mut p), reads(&mut w));
    assert_eq!(q::<i64>(&mut p, &["RCACHE.PURGE", "/t"]), q::<i64>(&mut w, &["RCACHE.PURGE", "/t"]));
    assert!(q_err(&mut p, &["MODULE", "UNLOAD", "rcache"]).starts_with("ERR"));
    assert_eq!(q::<Option<Vec<u8>>>(&mut p, &["RCACHE.GET", "{shop}/p/1"]), Some(b"p1".to_vec()));
}
