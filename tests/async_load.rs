//! Issue 14, item 10: a `repl-diskless-load swapdb` replica loads a full sync into a
//! temporary database while still serving the old one (async loading), and swaps
//! them when the load completes or discards the new one when it aborts. rcache opts in
//! (REDISMODULE_OPTIONS_HANDLE_REPL_ASYNC_LOAD), so Redis takes that path instead of
//! falling back to a disk load, and the index stays exact before, during and after.

mod common;
mod index_common;
use common::*;
use index_common::*;

use std::time::Duration;

fn start_master() -> Server {
    Server::start_with(&["--repl-diskless-sync", "yes", "--repl-diskless-sync-delay", "0", "--repl-backlog-size", "16384"], &[])
}

/// A swapdb replica that has done its first full sync from `master`, so that the
/// next full sync (same replication id) is loaded asynchronously.
fn start_swapdb_replica(master: &Server, m: &mut Connection) -> Server {
    let port = master.port.to_string();
    let replica = Server::start_with(
        &[
            "--replicaof", "127.0.0.1", &port,
            "--repl-diskless-load", "swapdb",
            "--enable-debug-command", "yes",
            // Serve clients every 1 KiB of the transfer, not every 2 MB.
            "--loading-process-events-interval-bytes", "1024",
        ],
        &[],
    );
    wait_link(&replica, "up");
    let acked: i64 = q(m, &["WAIT", "1", "10000"]);
    assert_eq!(acked, 1);
    replica
}

fn wait_link(replica: &Server, status: &str) {
    assert!(
        eventually(30, || server_info_str(&mut replica.conn(), "replication", "master_link_status") == status),
        "replica link never became {status}; log:\n{}",
        replica.log()
    );
}

/// Entries in dbs 0 and 3, some tagged.
fn populate(c: &mut Connection, tag: &str, n: usize) {
    for db in [0, 3] {
        select(c, db);
        fill(c, &format!("/{tag}/db{db}/plain"), n, 30, &[]);
        fill(c, &format!("/{tag}/db{db}/tagged"), n / 2, 30, &["TAGS", "1", tag]);
    }
    select(c, 0);
}

/// Breaks the replica's link and, while the replica sleeps, writes more than the
/// backlog holds, so that its reconnection needs a full sync with the same
/// replication id.
fn force_full_resync(replica: &Server, m: &mut Connection, tag: &str, n: usize) {
    let full_before = server_info_u64(m, "stats", "sync_full");
    let mut r = replica.conn();
    let sleeper = std::thread::spawn(move || q::<()>(&mut r, &["DEBUG", "SLEEP", "2"]));
    std::thread::sleep(Duration::from_millis(200));
    q::<i64>(m, &["CLIENT", "KILL", "TYPE", "replica"]);
    let filler = "f".repeat(1 << 20);
    let _: () = cmd("SET").arg("filler").arg(&filler).query(m).expect("SET filler");
    q::<()>(m, &["FLUSHALL"]);
    populate(m, tag, n);
    sleeper.join().expect("DEBUG SLEEP");
    assert!(eventually(30, || server_info_u64(m, "stats", "sync_full") > full_before), "no full sync started: {}", q::<String>(m, &["INFO", "all"]));
}

fn async_loading(replica: &Server) -> bool {
    server_info_str(&mut replica.conn(), "persistence", "async_loading") == "1"
}

#[test]
fn completed_async_load_swaps_in_an_exact_index() {
    let master = start_master();
    let mut m = master.conn();
    populate(&mut m, "one", 40);
    let replica = start_swapdb_replica(&master, &mut m);
    let mut r = replica.conn();
    assert_eq!(assert_index_exact(&mut r, &[0, 3], "replica after the first sync"), 120);

    // Slow the next load down (each key takes 10 ms) to look at the replica mid-load.
    q::<()>(&mut r, &["CONFIG", "SET", "key-load-delay", "10000"]);
    force_full_resync(&replica, &mut m, "two", 150);
    assert!(eventually(30, || async_loading(&replica)), "the replica did not load asynchronously; log:\n{}", replica.log());
    // Mid-load it serves the old data, and its index is still exactly the old data.
    // (Mid-load the replica answers only between chunks of the transfer: few checks.)
    assert_eq!(info_u64(&mut r, "entries"), 120);
    assert_eq!(listed(&mut r, "/two"), Vec::<String>::new());
    assert_eq!(listed(&mut r, "/one").len(), 60);
    assert!(get(&mut r, &["/one/db0/plain/0"]).is_some());
    assert!(async_loading(&replica), "the load ended before the checks: slow it down further");

    assert!(eventually(60, || !async_loading(&replica)), "the async load never finished");
    q::<()>(&mut r, &["CONFIG", "SET", "key-load-delay", "0"]);
    wait_link(&replica, "up");
    let acked: i64 = q(&mut m, &["WAIT", "1", "10000"]);
    assert_eq!(acked, 1);
    assert_eq!(assert_index_exact(&mut r, &[0, 3], "replica after the async load"), 450);
    assert_eq!(listed(&mut r, "/one"), Vec::<String>::new());
    let log = replica.log();
    assert!(log.contains("Swapping active DB with loaded DB"), "not a swapdb load:\n{log}");
    assert!(!log.contains("Skipping diskless-load"), "Redis fell back to a disk load:\n{log}");

    // The stream after the swap, and a purge on the master, reach the replica's index.
    set(&mut m, &["/two/after", "v", "TAGS", "1", "two"]);
    assert_eq!(q::<i64>(&mut m, &["RCACHE.PURGETAG", "two"]), 76, "db 0's tagged entries");
    let acked: i64 = q(&mut m, &["WAIT", "1", "10000"]);
    assert_eq!(acked, 1);
    assert_eq!(assert_index_exact(&mut r, &[0, 3], "replica after the purge"), 375);
    q::<()>(&mut r, &["REPLICAOF", "NO", "ONE"]);
    assert_eq!(q::<i64>(&mut r, &["RCACHE.PURGE", "/two"]), 150);
    // More than one slice's worth: the keys go in the background.
    assert!(eventually(10, || info_u64(&mut r, "purge_pending") == 0));
    assert_index_exact(&mut r, &[0, 3], "promoted replica after PURGE");
}

#[test]
fn aborted_async_load_keeps_the_old_index() {
    let mut master = start_master();
    let mut m = master.conn();
    populate(&mut m, "one", 40);
    let replica = start_swapdb_replica(&master, &mut m);
    let mut r = replica.conn();
    assert_eq!(assert_index_exact(&mut r, &[0, 3], "replica after the first sync"), 120);

    // The master's snapshot child now takes 10 ms per key: kill the master mid-transfer.
    q::<()>(&mut m, &["CONFIG", "SET", "rdb-key-save-delay", "10000"]);
    force_full_resync(&replica, &mut m, "two", 300);
    assert!(eventually(30, || async_loading(&replica)), "the replica did not load asynchronously; log:\n{}", replica.log());
    std::thread::sleep(Duration::from_millis(300));
    drop(m);
    master.kill();
    assert!(
        eventually(30, || replica.log().contains("Discarding temporary DB")),
        "the async load was not discarded; log:\n{}",
        replica.log()
    );
    assert!(!async_loading(&replica));
    assert_eq!(assert_index_exact(&mut r, &[0, 3], "replica after the aborted load"), 120);
    assert_eq!(listed(&mut r, "/two"), Vec::<String>::new());
    q::<()>(&mut r, &["REPLICAOF", "NO", "ONE"]);
    assert_eq!(q::<i64>(&mut r, &["RCACHE.PURGETAG", "one"]), 20);
    assert_eq!(q::<i64>(&mut r, &["RCACHE.PURGE", "/one"]), 40);
    assert_index_exact(&mut r, &[0, 3], "promoted replica after the purges");
}

#[test]
fn no_warning_at_startup() {
    let s = Server::start();
    let log = s.log();
    assert!(log.contains("Module 'rcache' loaded"), "{log}");
    let warnings: Vec<&str> = log.lines().filter(|l| l.contains(" # <rcache>")).collect();
    assert!(warnings.is_empty(), "module warnings at startup: {warnings:#?}");
}
