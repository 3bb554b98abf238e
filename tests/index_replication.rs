//! Issue 3, item 1 (replication): a replica's full sync and partial sync, expiry seen
//! through a replica, a replica promoted with REPLICAOF NO ONE that then serves PURGE,
//! and a master demoted to replica that stops writing. After each, the index of every
//! server equals the entry keys it really holds, and a PURGE on the master reaches
//! the replica once it has applied it.

mod common;
mod index_common;
use common::*;
use index_common::*;

/// No 5-second wait before a full sync (Redis 7.0's default delay for diskless sync).
const NO_SYNC_DELAY: [&str; 2] = ["--repl-diskless-sync-delay", "0"];

fn start_master(extra: &[&str]) -> Server {
    let mut args = NO_SYNC_DELAY.to_vec();
    args.extend_from_slice(extra);
    Server::start_with(&args, &[])
}

fn start_replica_of(master: &Server, extra: &[&str]) -> Server {
    let port = master.port.to_string();
    let mut args = vec!["--replicaof", "127.0.0.1", &port];
    args.extend_from_slice(&NO_SYNC_DELAY);
    args.extend_from_slice(extra);
    let replica = Server::start_with(&args, &[]);
    wait_link_up(&replica);
    replica
}

fn wait_link_up(replica: &Server) {
    assert!(
        eventually(20, || server_info_str(&mut replica.conn(), "replication", "master_link_status") == "up"),
        "replica link never came up; log:\n{}",
        replica.log()
    );
}

/// WAIT until `n` replicas have acknowledged everything written so far.
fn wait_replicas(c: &mut Connection, n: i64) {
    let acked: i64 = q(c, &["WAIT", &n.to_string(), "5000"]);
    assert_eq!(acked, n, "replicas did not acknowledge in time");
}

/// Entries in dbs 0 and 3, some with tags, variants and TTLs.
fn populate(c: &mut Connection, tag: &str) {
    for db in [0, 3] {
        select(c, db);
        fill(c, &format!("/{tag}/db{db}/plain"), 40, 30, &[]);
        fill(c, &format!("/{tag}/db{db}/tagged"), 20, 30, &["EX", "3600", "TAGS", "1", tag]);
        fill(c, &format!("/{tag}/db{db}/query"), 10, 30, &["QUERY", "page=2"]);
    }
    select(c, 0);
}

/// Detaches the replica, lets both sides diverge (a replica-only entry; the master
/// flushed and refilled under `/two`), re-attaches it and waits for the full sync.
fn diverge_and_resync(master: &Server, m: &mut Connection, replica: &Server, r: &mut Connection) {
    q::<()>(r, &["REPLICAOF", "NO", "ONE"]);
    set(r, &["/one/replica-only", "v"]);
    q::<()>(m, &["FLUSHALL"]);
    populate(m, "two");
    q::<()>(r, &["REPLICAOF", "127.0.0.1", &master.port.to_string()]);
    wait_link_up(replica);
    wait_replicas(m, 1);
}

#[test]
fn full_sync_then_stream_then_purge_reaches_the_replica() {
    let master = start_master(&[]);
    let mut m = master.conn();
    populate(&mut m, "before");
    let replica = start_replica_of(&master, &[]);
    let mut r = replica.conn();
    wait_replicas(&mut m, 1);
    assert_eq!(assert_index_exact(&mut r, &[0, 3], "replica after full sync"), 140);
    assert_eq!(removals(&mut r), (0, 0, 0));
    // The stream: entries set after the sync, user writes, deletes, a tag purge.
    populate(&mut m, "after");
    q::<i64>(&mut m, &["DEL", &key_of("/after/db0/plain/0")]);
    q::<()>(&mut m, &["SET", &key_of("/after/db0/plain/1"), "foreign"]);
    q::<()>(&mut m, &["RENAME", &key_of("/after/db0/plain/2"), &key_of("/elsewhere")]);
    wait_replicas(&mut m, 1);
    assert_eq!(assert_index_exact(&mut r, &[0, 3], "replica after the stream"), 278);
    assert_eq!(assert_index_exact(&mut m, &[0, 3], "master after the stream"), 278);

    // The invariant: once the replica has applied the purge, nothing under it is served.
    let values_before: Vec<Option<Vec<u8>>> = (0..40).map(|i| get(&mut r, &[&format!("/before/db0/plain/{i}")])).collect();
    assert!(values_before.iter().all(Option::is_some));
    assert_eq!(q::<i64>(&mut m, &["RCACHE.PURGE", "/before"]), 70);
    select(&mut m, 3);
    assert_eq!(q::<i64>(&mut m, &["RCACHE.PURGETAG", "after"]), 20);
    select(&mut m, 0);
    wait_replicas(&mut m, 1);
    for i in 0..40 {
        assert_eq!(get(&mut r, &[&format!("/before/db0/plain/{i}")]), None, "replica serves a purged entry");
    }
    for i in 0..10 {
        assert_eq!(get(&mut r, &[&format!("/before/db0/query/{i}"), "QUERY", "page=2"]), None);
    }
    assert_eq!(assert_index_exact(&mut r, &[0, 3], "replica after purge"), 188);
    select(&mut r, 3);
    assert_eq!(listed(&mut r, "/after/db3/tagged"), Vec::<String>::new());
    select(&mut r, 0);
}

#[test]
fn full_sync_over_a_diskless_transfer() {
    let master = start_master(&["--repl-diskless-sync", "yes"]);
    let mut m = master.conn();
    populate(&mut m, "d");
    let replica = start_replica_of(&master, &["--repl-diskless-load", "on-empty-db"]);
    let mut r = replica.conn();
    wait_replicas(&mut m, 1);
    assert!(replica.log().contains("to parser"), "the replica did not load from the socket:\n{}", replica.log());
    assert_eq!(assert_index_exact(&mut r, &[0, 3], "replica after diskless sync"), 140);
}

#[test]
fn a_second_full_sync_replaces_the_replica_index() {
    let master = start_master(&[]);
    let mut m = master.conn();
    populate(&mut m, "one");
    let replica = start_replica_of(&master, &[]);
    let mut r = replica.conn();
    wait_replicas(&mut m, 1);
    // Detach, diverge on both sides, re-attach: the replica's data (and index) is
    // replaced wholesale by the master's.
    diverge_and_resync(&master, &mut m, &replica, &mut r);
    assert_eq!(assert_index_exact(&mut r, &[0, 3], "replica after the second full sync"), 140);
    assert_eq!(listed(&mut r, "/one"), Vec::<String>::new());
    assert_eq!(get(&mut r, &["/one/replica-only"]), None);
}

#[test]
fn partial_sync_after_a_broken_link() {
    let master = start_master(&[]);
    let mut m = master.conn();
    populate(&mut m, "a");
    let replica = start_replica_of(&master, &[]);
    let mut r = replica.conn();
    wait_replicas(&mut m, 1);
    let partial_before = server_info_u64(&mut m, "stats", "sync_partial_ok");
    let full_before = server_info_u64(&mut m, "stats", "sync_full");
    // Break the link; write and purge on the master while it is down.
    q::<i64>(&mut r, &["CLIENT", "KILL", "TYPE", "master"]);
    populate(&mut m, "b");
    assert_eq!(q::<i64>(&mut m, &["RCACHE.PURGE", "/a/db0"]), 70);
    q::<i64>(&mut m, &["DEL", &key_of("/b/db0/plain/0")]);
    wait_link_up(&replica);
    wait_replicas(&mut m, 1);
    assert_eq!(server_info_u64(&mut m, "stats", "sync_partial_ok"), partial_before + 1, "not a partial sync");
    assert_eq!(server_info_u64(&mut m, "stats", "sync_full"), full_before, "a full sync happened");
    assert_eq!(assert_index_exact(&mut r, &[0, 3], "replica after partial sync"), 209);
    for i in 0..40 {
        assert_eq!(get(&mut r, &[&format!("/a/db0/plain/{i}")]), None);
    }
    assert_eq!(get(&mut r, &["/b/db0/plain/0"]), None);
    assert!(get(&mut r, &["/b/db0/plain/1"]).is_some());
}

#[test]
fn expiry_and_eviction_reach_the_replica_as_deletions() {
    let master = start_master(&["--maxmemory-policy", "allkeys-lru"]);
    let mut m = master.conn();
    let replica = start_replica_of(&master, &[]);
    let mut r = replica.conn();
    fill(&mut m, "/short", 200, 10, &["PX", "50"]);
    fill(&mut m, "/long", 20, 10, &[]);
    assert!(eventually(10, || info_u64(&mut master.conn(), "entries") == 20));
    wait_replicas(&mut m, 1);
    assert_eq!(assert_index_exact(&mut r, &[0], "replica after expiry"), 20);
    // The master counts expiries; the replica receives them as DEL (counted as other).
    assert_eq!(removals(&mut m), (200, 0, 0));
    assert_eq!(removals(&mut r), (0, 0, 200));
    q::<()>(&mut m, &["CONFIG", "SET", "maxmemory", "1"]);
    assert!(eventually(10, || q::<i64>(&mut master.conn(), &["DBSIZE"]) == 0));
    q::<()>(&mut m, &["CONFIG", "SET", "maxmemory", "0"]);
    wait_replicas(&mut m, 1);
    assert_eq!(assert_index_exact(&mut r, &[0], "replica after eviction"), 0);
    assert_eq!(removals(&mut m), (200, 20, 0));
    assert_eq!(removals(&mut r), (0, 0, 220));
}

#[test]
fn promoted_replica_serves_purge_and_demoted_master_stops_writing() {
    let master = start_master(&[]);
    let mut m = master.conn();
    populate(&mut m, "p");
    let replica = start_replica_of(&master, &[]);
    let mut r = replica.conn();
    populate(&mut m, "q");
    // A user write to an entry key that the master re-reads lazily (before sleep).
    set(&mut m, &["/src", "payload", "TAGS", "1", "p"]);
    let raw: Vec<u8> = q(&mut m, &["GET", &key_of("/src")]);
    cmd("SET").arg(key_of("/p/db0/user")).arg(&raw).query::<()>(&mut m).unwrap();
    wait_replicas(&mut m, 1);

    // Failover: promote the replica, demote the old master under it.
    q::<()>(&mut r, &["REPLICAOF", "NO", "ONE"]);
    assert_eq!(server_info_str(&mut r, "replication", "role"), "master");
    q::<()>(&mut m, &["REPLICAOF", "127.0.0.1", &replica.port.to_string()]);
    wait_link_up(&master);
    assert_eq!(assert_index_exact(&mut r, &[0, 3], "promoted replica"), 282);

    // The promoted replica serves PURGE: everything under the prefix, and nothing else.
    assert_eq!(q::<i64>(&mut r, &["RCACHE.PURGE", "/p"]), 71);
    assert_eq!(get(&mut r, &["/p/db0/user"]), None);
    assert_eq!(q::<i64>(&mut r, &["RCACHE.PURGETAG", "p"]), 1, "/src carries the tag");
    select(&mut r, 3);
    assert_eq!(q::<i64>(&mut r, &["RCACHE.PURGE", "/"]), 140);
    select(&mut r, 0);
    for i in 0..40 {
        assert_eq!(get(&mut r, &[&format!("/p/db0/plain/{i}")]), None);
    }
    set(&mut r, &["/new/on-promoted", "v", "TAGS", "1", "t"]);
    wait_replicas(&mut r, 1);
    assert_eq!(assert_index_exact(&mut r, &[0, 3], "promoted replica after purges"), 71);

    // The demoted master stops writing: RCACHE writes are refused, data follows the new master.
    for words in [&["RCACHE.SET", "/x", "v"][..], &["RCACHE.DEL", "/q/db0/plain/0"], &["RCACHE.PURGE", "/q"], &["RCACHE.PURGETAG", "t"]] {
        assert!(q_err(&mut m, words).starts_with("READONLY"), "{words:?}");
    }
    assert_eq!(assert_index_exact(&mut m, &[0, 3], "demoted master"), 71);
    assert_eq!(get(&mut m, &["/p/db0/plain/0"]), None, "the purge on the new master reached the old one");
    assert_eq!(get(&mut m, &["/new/on-promoted"]).unwrap(), b"v");
}

/// `repl-diskless-load swapdb`: Redis loads into a temporary database (whose `loaded`
/// events name keys the module cannot open) and swaps it in at the end; rcache opts in
/// (REDISMODULE_OPTIONS_HANDLE_REPL_ASYNC_LOAD) and re-indexes at the swap. The index
/// must end exact. (Async loading mid-transfer and its abort: `tests/async_load.rs`.)
#[test]
fn full_sync_with_swapdb_diskless_load() {
    let master = start_master(&["--repl-diskless-sync", "yes"]);
    let mut m = master.conn();
    populate(&mut m, "one");
    let replica = start_replica_of(&master, &["--repl-diskless-load", "swapdb"]);
    let mut r = replica.conn();
    wait_replicas(&mut m, 1);
    assert_eq!(assert_index_exact(&mut r, &[0, 3], "replica after the first swapdb sync"), 140);
    // A second full sync over a replica that holds data (and diverged).
    diverge_and_resync(&master, &mut m, &replica, &mut r);
    assert_eq!(assert_index_exact(&mut r, &[0, 3], "replica after the second swapdb sync"), 140);
    assert_eq!(listed(&mut r, "/one"), Vec::<String>::new());
    // And it serves PURGE correctly once promoted.
    q::<()>(&mut r, &["REPLICAOF", "NO", "ONE"]);
    assert_eq!(q::<i64>(&mut r, &["RCACHE.PURGE", "/two"]), 70);
    assert_index_exact(&mut r, &[0, 3], "promoted after swapdb sync");
}
