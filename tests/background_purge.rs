//! Purges of any size (issue 11): a PURGE or PURGETAG larger than one slice replies
//! at once, hides what it covers for every RCACHE command, and removes it in the
//! background — and that stays true for readers racing the reply, on a replica,
//! through a SIGKILL with AOF or after a SAVE, and through a promotion while work is
//! pending. Every scenario runs once per kind of purge.

mod common;
mod index_common;

use common::*;
use index_common::{assert_index_exact, fill};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Entries under `/big` (more than one slice's worth at any setting used here).
const N: usize = 20_000;

fn purge_pending(c: &mut Connection) -> u64 {
    info_u64(c, "purge_pending")
}

fn record_keys(c: &mut Connection) -> Vec<String> {
    q(c, &["KEYS", "rcache:#purge:*"])
}

/// Waits for the background work to finish; fails the test if it does not.
fn wait_done(c: &mut Connection, what: &str) {
    assert!(eventually(60, || purge_pending(c) == 0 && record_keys(c).is_empty()), "{what}: background purge did not finish");
}

/// The covered entries a GET still serves, checked on a sample of `/big`.
fn served_sample(c: &mut Connection) -> usize {
    (0..N).step_by(97).filter(|i| get(c, &[&format!("/big/{i}")]).is_some()).count()
}

fn load(c: &mut Connection) {
    fill(c, "/big", N, 64, &["TAGS", "1", "bigtag"]);
    set(c, &["/keep", "k", "TAGS", "1", "other"]);
}

/// The purges that go to the background: by prefix, and by tag (every `/big` entry
/// carries `bigtag`, nothing else does).
#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Prefix,
    Tag,
}

const KINDS: [Kind; 2] = [Kind::Prefix, Kind::Tag];

/// Purges every `/big` entry the `kind` way; returns the reply.
fn purge(c: &mut Connection, kind: Kind) -> i64 {
    match kind {
        Kind::Prefix => q(c, &["RCACHE.PURGE", "/big"]),
        Kind::Tag => q(c, &["RCACHE.PURGETAG", "bigtag"]),
    }
}

/// `/big/<i>` stored again (with the purged tag) after the purge replied.
fn store_again(c: &mut Connection, i: usize, value: &str) {
    set(c, &[&format!("/big/{i}"), value, "TAGS", "1", "bigtag"]);
}

/// From the reply on no reader sees a covered entry, while the removal runs in the
/// background in slices; an entry stored after the reply survives it.
#[test]
fn readers_never_see_covered_entries_after_the_reply() {
    KINDS.into_iter().for_each(readers_never_see_covered_entries_after_the_reply_of);
}

fn readers_never_see_covered_entries_after_the_reply_of(kind: Kind) {
    let s = Server::start_with(&[], &["purge-slice-us", "200"]);
    let mut c = s.conn();
    load(&mut c);
    let replied = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let seen_after = Arc::new(AtomicUsize::new(0));
    let reads_after = Arc::new(AtomicUsize::new(0));
    let reader = {
        let (replied, stop, seen_after, reads_after) = (replied.clone(), stop.clone(), seen_after.clone(), reads_after.clone());
        let mut rc = s.conn();
        std::thread::spawn(move || {
            let mut i = 0usize;
            while !stop.load(Ordering::Relaxed) {
                // Whether the PURGE had replied before this read was sent.
                let after = replied.load(Ordering::SeqCst);
                // Not /big/5: it is stored again after the reply.
                let path = format!("/big/{}", 6 + (i * 7919) % (N - 6));
                let hit = get(&mut rc, &[&path]).is_some();
                let looked: Vec<Value> = q(&mut rc, &["RCACHE.LOOKUP", &path]);
                if after {
                    reads_after.fetch_add(1, Ordering::Relaxed);
                    if hit || looked[0] != Value::SimpleString("MISS".into()) {
                        seen_after.fetch_add(1, Ordering::Relaxed);
                    }
                }
                i += 1;
            }
        })
    };
    std::thread::sleep(Duration::from_millis(100));
    let started = Instant::now();
    let removed = purge(&mut c, kind);
    let reply_ms = started.elapsed().as_secs_f64() * 1000.0;
    replied.store(true, Ordering::SeqCst);
    assert_eq!(removed, N as i64, "the reply counts every covered entry");
    eprintln!("{kind:?} purge of {N}: replied in {reply_ms:.2} ms, {} still pending", purge_pending(&mut c));
    // Hidden at once for LIST, INFO, DEL and the next purges; the keys still exist.
    assert!(purge_pending(&mut c) > 0, "the removal went to the background");
    assert_eq!(q::<Vec<String>>(&mut c, &["RCACHE.LIST", "/"]), ["/keep"]);
    assert_eq!(info_u64(&mut c, "entries"), 1);
    assert_eq!(q::<i64>(&mut c, &["RCACHE.DEL", "/big/3"]), 0);
    assert_eq!(q::<i64>(&mut c, &["RCACHE.PURGE", "/big"]), 0);
    assert_eq!(q::<i64>(&mut c, &["RCACHE.PURGETAG", "bigtag"]), 0);
    assert_eq!(record_keys(&mut c).len(), 1, "one bookkeeping key while work is pending");
    // Stored after the reply: never hidden, never removed.
    store_again(&mut c, 5, "new");
    wait_done(&mut c, "single server");
    stop.store(true, Ordering::Relaxed);
    reader.join().expect("reader");
    assert!(reads_after.load(Ordering::Relaxed) > 0, "the reader raced the background work");
    assert_eq!(seen_after.load(Ordering::Relaxed), 0, "a covered entry was served after the reply");
    assert_eq!(get(&mut c, &["/big/5"]).as_deref(), Some(&b"new"[..]));
    assert_eq!(q::<i64>(&mut c, &["DBSIZE"]), 2, "every covered key removed, nothing else");
    assert_index_exact(&mut c, &[0], "after the background purge");
    // How long slices take is measured by `make bench`, not asserted on a shared machine.
    assert!(info_u64(&mut c, "purge_max_us") > 0);
    let (commands, entries) = if kind == Kind::Prefix { ("purges", "purged_entries") } else { ("tag_purges", "tag_purged_entries") };
    assert_eq!((info_u64(&mut c, commands), info_u64(&mut c, entries)), (2, N as u64));
}

/// The replica hides what the master's purge hid as soon as it applies the record,
/// removes nothing itself, and follows the master's UNLINKs to an exact index.
#[test]
fn replicas_apply_the_purge_at_once_and_the_removal_as_it_comes() {
    KINDS.into_iter().for_each(replicas_apply_the_purge_at_once_and_the_removal_as_it_comes_of);
}

fn replicas_apply_the_purge_at_once_and_the_removal_as_it_comes_of(kind: Kind) {
    let m = Server::start_with(&[], &["purge-slice-us", "100"]);
    let r = Server::start();
    let mut mc = m.conn();
    let mut rc = r.conn();
    q::<()>(&mut rc, &["REPLICAOF", "127.0.0.1", &m.port.to_string()]);
    assert!(eventually(20, || q::<String>(&mut rc, &["INFO", "replication"]).contains("master_link_status:up")));
    load(&mut mc);
    assert_eq!(purge(&mut mc, kind), N as i64);
    store_again(&mut mc, 7, "after");
    assert_eq!(q::<i64>(&mut mc, &["WAIT", "1", "5000"]), 1);
    assert!(purge_pending(&mut rc) > 0, "the replica holds the master's pending work");
    assert_eq!(served_sample(&mut rc), 0, "the replica serves no covered entry once it applied the purge");
    assert_eq!(get(&mut rc, &["/big/7"]).as_deref(), Some(&b"after"[..]));
    assert_eq!(q::<Vec<String>>(&mut rc, &["RCACHE.LIST", "/"]), ["/big/7", "/keep"]);
    wait_done(&mut mc, "master");
    assert_eq!(q::<i64>(&mut mc, &["WAIT", "1", "5000"]), 1);
    wait_done(&mut rc, "replica");
    assert_eq!(q::<i64>(&mut rc, &["DBSIZE"]), 2);
    assert_index_exact(&mut rc, &[0], "replica after the background purge");
}

/// SIGKILL while work is pending, with `appendfsync always`: the AOF replays the
/// record, the restart hides the same entries, and the work finishes.
#[test]
fn a_crash_while_work_is_pending_loses_nothing_with_aof() {
    KINDS.into_iter().for_each(a_crash_while_work_is_pending_loses_nothing_with_aof_of);
}

fn a_crash_while_work_is_pending_loses_nothing_with_aof_of(kind: Kind) {
    let mut s = Server::start_with(&["--appendonly", "yes", "--appendfsync", "always"], &["purge-slice-us", "100"]);
    let mut c = s.conn();
    load(&mut c);
    assert_eq!(purge(&mut c, kind), N as i64);
    store_again(&mut c, 9, "after");
    assert!(purge_pending(&mut c) > 0);
    s.crash_and_restart();
    let mut c = s.conn();
    assert_eq!(served_sample(&mut c), 0, "after the crash, covered entries stay hidden");
    assert_eq!(get(&mut c, &["/big/9"]).as_deref(), Some(&b"after"[..]), "a SET after the purge survives");
    assert_eq!(q::<Vec<String>>(&mut c, &["RCACHE.LIST", "/"]), ["/big/9", "/keep"]);
    wait_done(&mut c, "after an AOF restart");
    assert_eq!(q::<i64>(&mut c, &["DBSIZE"]), 2);
    assert_index_exact(&mut c, &[0], "after an AOF restart");
}

/// RDB only: a SAVE taken while work was pending holds the record, so the restart
/// hides what the purge hid, and finishes the work.
#[test]
fn a_save_while_work_is_pending_keeps_the_purge() {
    KINDS.into_iter().for_each(a_save_while_work_is_pending_keeps_the_purge_of);
}

fn a_save_while_work_is_pending_keeps_the_purge_of(kind: Kind) {
    let mut s = Server::start_with(&[], &["purge-slice-us", "100"]);
    let mut c = s.conn();
    load(&mut c);
    assert_eq!(purge(&mut c, kind), N as i64);
    store_again(&mut c, 11, "after");
    q::<()>(&mut c, &["SAVE"]);
    assert!(purge_pending(&mut c) > 0, "the SAVE was taken while work was pending");
    s.crash_and_restart();
    let mut c = s.conn();
    assert_eq!(served_sample(&mut c), 0, "after the restart from RDB, covered entries stay hidden");
    assert_eq!(get(&mut c, &["/big/11"]).as_deref(), Some(&b"after"[..]));
    assert_eq!(info_u64(&mut c, "entries"), 2);
    wait_done(&mut c, "after an RDB restart");
    assert_index_exact(&mut c, &[0], "after an RDB restart");
}

/// The master dies while work is pending; its promoted replica finishes the work.
#[test]
fn a_promoted_replica_finishes_the_work() {
    KINDS.into_iter().for_each(a_promoted_replica_finishes_the_work_of);
}

fn a_promoted_replica_finishes_the_work_of(kind: Kind) {
    let mut m = Server::start_with(&[], &["purge-slice-us", "100"]);
    let r = Server::start_with(&[], &["purge-slice-us", "100"]);
    let mut mc = m.conn();
    let mut rc = r.conn();
    q::<()>(&mut rc, &["REPLICAOF", "127.0.0.1", &m.port.to_string()]);
    assert!(eventually(20, || q::<String>(&mut rc, &["INFO", "replication"]).contains("master_link_status:up")));
    load(&mut mc);
    assert_eq!(q::<i64>(&mut mc, &["WAIT", "1", "5000"]), 1);
    assert_eq!(purge(&mut mc, kind), N as i64);
    assert_eq!(q::<i64>(&mut mc, &["WAIT", "1", "5000"]), 1);
    m.kill();
    assert!(purge_pending(&mut rc) > 0, "the master died with work pending");
    q::<()>(&mut rc, &["REPLICAOF", "NO", "ONE"]);
    assert_eq!(served_sample(&mut rc), 0);
    wait_done(&mut rc, "promoted replica");
    assert_eq!(q::<i64>(&mut rc, &["DBSIZE"]), 1);
    assert_index_exact(&mut rc, &[0], "promoted replica");
}

/// A purge that fits in a slice is done in the command itself: no record, no
/// background work, the reply counts exactly what it removed.
#[test]
fn small_purges_finish_in_the_command() {
    let s = Server::start();
    let mut c = s.conn();
    fill(&mut c, "/small", 100, 8, &[]);
    assert_eq!(q::<i64>(&mut c, &["RCACHE.PURGE", "/small"]), 100);
    assert_eq!(purge_pending(&mut c), 0);
    assert!(record_keys(&mut c).is_empty());
    assert_eq!(q::<i64>(&mut c, &["DBSIZE"]), 0);
    assert!(q_err(&mut c, &["CONFIG", "SET", "rcache.purge-slice-us", "99"]).starts_with("ERR"));
    assert!(q_err(&mut c, &["CONFIG", "SET", "rcache.purge-slice-us", "1000001"]).starts_with("ERR"));
}

/// A record removed while its work is pending (evicted under `allkeys-*`, or deleted
/// by hand) changes nothing: what the purge hid stays hidden, the master writes the
/// record again, and the work finishes.
#[test]
fn a_lost_record_is_written_again() {
    KINDS.into_iter().for_each(a_lost_record_is_written_again_of);
}

fn a_lost_record_is_written_again_of(kind: Kind) {
    let s = Server::start_with(&[], &["purge-slice-us", "100"]);
    let mut c = s.conn();
    load(&mut c);
    assert_eq!(purge(&mut c, kind), N as i64);
    let records = record_keys(&mut c);
    assert_eq!(records.len(), 1);
    assert_eq!(q::<i64>(&mut c, &["DEL", &records[0]]), 1);
    assert_eq!(served_sample(&mut c), 0, "still hidden without its record");
    assert!(purge_pending(&mut c) > 0);
    assert!(eventually(10, || record_keys(&mut c) == records || purge_pending(&mut c) == 0), "the record was not written again");
    wait_done(&mut c, "after the record was lost");
    assert_eq!(q::<i64>(&mut c, &["DBSIZE"]), 1);
    assert_index_exact(&mut c, &[0], "after the record was lost");
}
