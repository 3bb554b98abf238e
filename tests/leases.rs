//! Issue 10, leases (the contract's "Leases"), against real servers: request
//! coalescing with blocked clients, the stale-set guard for every invalidation, the
//! hand-over of a lease that ends without a store, waiters that leave, WAIT where a
//! client may not block, replicas, and the INFO lease counters.

mod common;
use common::*;

use std::io::Write;
use std::net::TcpStream;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

/// A LOOKUP reply: (state, value, lease token).
#[derive(Debug, Clone, PartialEq)]
struct Looked {
    state: String,
    value: Option<Vec<u8>>,
    lease: Option<Vec<u8>>,
}

fn parse_lookup(v: Value) -> Looked {
    let Value::Array(items) = v else { panic!("LOOKUP replied {v:?}") };
    assert_eq!(items.len(), 6, "LOOKUP replies 6 elements: {items:?}");
    let state = match &items[0] {
        Value::SimpleString(s) => s.clone(),
        Value::Okay => "OK".into(),
        other => panic!("state {other:?}"),
    };
    let bulk = |v: &Value| match v {
        Value::Nil => None,
        Value::BulkString(b) => Some(b.clone()),
        other => panic!("expected a bulk string or nil, got {other:?}"),
    };
    Looked { state, value: bulk(&items[1]), lease: bulk(&items[5]) }
}

fn lookup(c: &mut Connection, words: &[&str]) -> Looked {
    let mut all = vec!["RCACHE.LOOKUP"];
    all.extend_from_slice(words);
    parse_lookup(q(c, &all))
}

/// `LOOKUP path LEASE ms` on an entry with no live lease: the token.
fn take_lease(c: &mut Connection, path: &str, ms: u64) -> Vec<u8> {
    let got = lookup(c, &[path, "LEASE", &ms.to_string()]);
    got.lease.clone().unwrap_or_else(|| panic!("no lease granted on {path}: {got:?}"))
}

/// `RCACHE.SET path value LEASE token extra…`: true for OK, false for nil.
fn lease_set(c: &mut Connection, path: &str, value: &str, token: &[u8], extra: &[&str]) -> bool {
    let mut command = cmd("RCACHE.SET");
    command.arg(path).arg(value).arg("LEASE").arg(token);
    for w in extra {
        command.arg(*w);
    }
    match command.query::<Value>(c).expect("SET … LEASE") {
        Value::Okay => true,
        Value::Nil => false,
        other => panic!("SET … LEASE replied {other:?}"),
    }
}

fn blocked_clients(c: &mut Connection) -> u64 {
    let text: String = q(c, &["INFO", "clients"]);
    text.lines()
        .find_map(|l| l.strip_prefix("blocked_clients:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("INFO clients has blocked_clients")
}

fn wait_blocked(c: &mut Connection, n: u64) {
    assert!(eventually(20, || blocked_clients(c) == n), "expected {n} blocked clients, INFO says {}", blocked_clients(c));
}

/// The lease fields of INFO rcache, for one comparison.
fn lease_info(c: &mut Connection) -> Vec<(String, u64)> {
    let info = info(c);
    [
        "leases",
        "leases_granted",
        "lease_sets",
        "lease_sets_rejected",
        "lease_waits",
        "lease_waits_served",
        "lease_waits_handed",
        "lease_waits_timeout",
    ]
    .iter()
    .map(|f| (f.to_string(), info.get(*f).unwrap_or_else(|| panic!("INFO rcache has no {f}")).parse().expect("number")))
    .collect()
}

fn expect_info(c: &mut Connection, want: &[(&str, u64)]) {
    let got = lease_info(c);
    for (field, value) in want {
        let have = got.iter().find(|(f, _)| f == field).map(|(_, v)| *v);
        assert_eq!(have, Some(*value), "INFO {field}; all lease fields: {got:?}");
    }
}

/// Issue 10, item 7: 50 connections LOOKUP … LEASE WAIT on one MISS. Exactly one
/// lease is granted; one SET answers the other 49 at once, each within 50 ms of the
/// SET; a PING client sees no stall meanwhile.
///
/// On a loaded 2-core machine a client thread can be scheduled late, so the 50 ms
/// bound must hold in one of up to 3 rounds; everything else is checked in every round.
/// A PING is a stall if it takes 1 s: a server blocked by the waiters would hold it for
/// their whole 5 s WAIT.
#[test]
fn coalescing_fifty_misses_one_render() {
    let server = Server::start();
    let mut c = server.conn();
    let mut timings = Vec::new();
    for round in 0..3 {
        let before = lease_info(&mut c);
        let (slowest, worst_ping) = coalesce_round(&server, &mut c, &format!("/hot/{round}"));
        println!("coalescing round {round}: 49 waiters answered at most {slowest:?} after the SET was sent; slowest PING while they waited {worst_ping:?}");
        let after = lease_info(&mut c);
        let moved: Vec<(String, u64)> = after.iter().zip(&before).map(|((f, a), (_, b))| (f.clone(), a - b)).collect();
        let want = [("leases", 0), ("leases_granted", 1), ("lease_sets", 1), ("lease_sets_rejected", 0), ("lease_waits", 49), ("lease_waits_served", 49), ("lease_waits_handed", 0), ("lease_waits_timeout", 0)];
        assert_eq!(moved, want.map(|(f, n)| (f.to_string(), n)).to_vec(), "INFO lease fields moved by round {round}");
        assert_eq!(blocked_clients(&mut c), 0);
        timings.push(slowest);
        if slowest < Duration::from_millis(50) {
            return;
        }
    }
    panic!("in no round were all 49 waiters answered within 50 ms of the SET: {timings:?}");
}

/// One coalescing round on `path`; returns when the slowest waiter was answered after
/// the SET was sent, and the slowest PING while the waiters waited.
fn coalesce_round(server: &Server, c: &mut Connection, path: &str) -> (Duration, Duration) {
    let port = server.port;
    let (lease_tx, lease_rx) = mpsc::channel::<(usize, Vec<u8>)>();
    let (done_tx, done_rx) = mpsc::channel::<(usize, Looked, Instant)>();
    let mut handles = Vec::new();
    for i in 0..50 {
        let (lease_tx, done_tx, path) = (lease_tx.clone(), done_tx.clone(), path.to_string());
        handles.push(thread::spawn(move || {
            let client = redis::Client::open(format!("redis://127.0.0.1:{port}/")).expect("client");
            let mut c = client.get_connection().expect("connect");
            c.set_read_timeout(Some(Duration::from_secs(30))).expect("timeout");
            let got = lookup(&mut c, &[&path, "LEASE", "5000", "WAIT", "5000"]);
            let at = Instant::now();
            match &got.lease {
                Some(token) if got.state == "MISS" && got.value.is_none() => lease_tx.send((i, token.clone())).expect("send"),
                _ => done_tx.send((i, got, at)).expect("send"),
            }
        }));
    }
    drop((lease_tx, done_tx));
    let (holder, token) = lease_rx.recv_timeout(Duration::from_secs(30)).expect("one caller is granted the lease");
    wait_blocked(c, 49);
    expect_info(c, &[("leases", 1)]);
    assert!(done_rx.try_recv().is_err(), "nobody is answered before the SET");

    // The server keeps serving others while 49 clients wait.
    let mut ping = server.conn();
    let mut worst = Duration::ZERO;
    let started = Instant::now();
    while started.elapsed() < Duration::from_millis(300) {
        let t = Instant::now();
        assert_eq!(q::<String>(&mut ping, &["PING"]), "PONG");
        worst = worst.max(t.elapsed());
    }
    assert!(worst < Duration::from_secs(1), "a PING took {worst:?} while clients waited: the server stalled");

    let set_at = Instant::now();
    assert!(lease_set(c, path, "rendered once", &token, &["EX", "60"]));
    let mut answered = Vec::new();
    for _ in 0..49 {
        answered.push(done_rx.recv_timeout(Duration::from_secs(10)).expect("every waiter is answered"));
    }
    for h in handles {
        h.join().expect("client thread");
    }
    for (i, got, _) in &answered {
        assert_ne!(*i, holder);
        assert_eq!(got.state, "FRESH", "waiter {i}: {got:?}");
        assert_eq!(got.value.as_deref(), Some(&b"rendered once"[..]));
        assert_eq!(got.lease, None);
    }
    let slowest = answered.iter().map(|(_, _, at)| at.duration_since(set_at)).max().unwrap_or_default();
    (slowest, worst)
}

/// Prepares an entry to lease and returns (connection, token). `stale` makes it a
/// stale entry carrying tag `old` (leased as STALE); otherwise it is a MISS.
fn leased(server: &Server, path: &str, stale: bool) -> (Connection, Vec<u8>) {
    let mut c = server.conn();
    if stale {
        set(&mut c, &[path, "old", "PX", "1", "GRACE", "600", "TAGS", "1", "old"]);
        assert!(eventually(5, || lookup(&mut c, &[path]).state == "STALE"));
    }
    let got = lookup(&mut c, &[path, "LEASE", "60000"]);
    assert_eq!(got.state, if stale { "STALE" } else { "MISS" });
    let token = got.lease.expect("a lease");
    (c, token)
}

/// Issue 10, item 7: lease → invalidate → `SET … LEASE` replies nil and stores
/// nothing, for every invalidation the contract lists.
#[test]
fn stale_set_guard_every_invalidation() {
    let server = Server::start();
    // (what, stale entry?, invalidation, tags the SET carries)
    let cases: &[(&str, bool, &[&str], &[&str])] = &[
        ("DEL of the missing entry", false, &["RCACHE.DEL", "/p/a"], &[]),
        ("DEL of the stale entry", true, &["RCACHE.DEL", "/p/a"], &[]),
        ("PURGE of a parent", false, &["RCACHE.PURGE", "/p"], &[]),
        ("PURGE of the path", true, &["RCACHE.PURGE", "/p/a/"], &[]),
        ("PURGE / ", false, &["RCACHE.PURGE", "/"], &[]),
        ("PURGE EXACT", false, &["RCACHE.PURGE", "/p/a", "EXACT"], &[]),
        ("SOFTPURGE of a parent", false, &["RCACHE.SOFTPURGE", "/p"], &[]),
        ("SOFTPURGE of the stale entry", true, &["RCACHE.SOFTPURGE", "/p/a"], &[]),
        ("PURGETAG of a tag the entry carried", true, &["RCACHE.PURGETAG", "old"], &[]),
        ("SOFTPURGETAG of a tag the entry carried", true, &["RCACHE.SOFTPURGETAG", "old"], &[]),
        ("PURGETAG of a tag the SET carries", false, &["RCACHE.PURGETAG", "x", "new"], &["TAGS", "1", "new"]),
        ("SOFTPURGETAG of a tag the SET carries", false, &["RCACHE.SOFTPURGETAG", "new"], &["TAGS", "2", "a", "new"]),
        ("FLUSHDB", false, &["FLUSHDB"], &[]),
        ("FLUSHALL", true, &["FLUSHALL"], &[]),
    ];
    for (what, stale, invalidation, tags) in cases {
        let (mut c, token) = leased(&server, "/p/a", *stale);
        let before = lease_info(&mut c);
        let _: Value = q(&mut c, invalidation);
        assert!(!lease_set(&mut c, "/p/a", "computed before", &token, tags), "{what}: the SET must be refused");
        assert_eq!(get(&mut c, &["/p/a"]), None, "{what}: GET still misses");
        let got = lookup(&mut c, &["/p/a"]);
        assert_ne!(got.value.as_deref(), Some(&b"computed before"[..]), "{what}: {got:?}");
        let after = lease_info(&mut c);
        let field = |i: &[(String, u64)], f: &str| i.iter().find(|(n, _)| n == f).map(|(_, v)| *v);
        assert_eq!(field(&after, "lease_sets_rejected"), field(&before, "lease_sets_rejected").map(|n| n + 1), "{what}");
        assert_eq!(field(&after, "lease_sets"), field(&before, "lease_sets"), "{what}");
        assert_eq!(field(&after, "leases"), Some(0), "{what}: the lease ended");
        // A new lease after the invalidation stores.
        let fresh = take_lease(&mut c, "/p/a", 60000);
        assert!(lease_set(&mut c, "/p/a", "computed after", &fresh, tags), "{what}");
        assert_eq!(get(&mut c, &["/p/a"]).as_deref(), Some(&b"computed after"[..]));
        q::<()>(&mut c, &["FLUSHALL"]);
    }
}

/// Issue 10, item 7 (negative cases): what does not touch the entry does not refuse
/// its SET.
#[test]
fn stale_set_guard_ignores_unrelated_invalidations() {
    let server = Server::start();
    let cases: &[(&str, &[&str])] = &[
        ("DEL of another variant", &["RCACHE.DEL", "/p/a", "QUERY", "x=1"]),
        ("DEL of a sibling", &["RCACHE.DEL", "/p/ab"]),
        ("PURGE of a sibling prefix", &["RCACHE.PURGE", "/p/ab"]),
        ("PURGE of a child", &["RCACHE.PURGE", "/p/a/b"]),
        ("PURGE EXACT of the parent", &["RCACHE.PURGE", "/p", "EXACT"]),
        ("SOFTPURGE elsewhere", &["RCACHE.SOFTPURGE", "/q"]),
        ("PURGETAG of another tag", &["RCACHE.PURGETAG", "other"]),
        ("SOFTPURGETAG of another tag", &["RCACHE.SOFTPURGETAG", "other"]),
        ("FLUSHDB of another database", &["FLUSHDB"]),
        ("a plain SET elsewhere", &["RCACHE.SET", "/p/b", "x"]),
    ];
    for (what, invalidation) in cases {
        let mut c = server.conn();
        set(&mut c, &["/q", "q", "TAGS", "1", "other"]);
        let token = take_lease(&mut c, "/p/a", 60000);
        // Every invalidation runs in another connection; FLUSHDB in another database.
        let mut other = server.conn();
        if invalidation == &["FLUSHDB"] {
            q::<()>(&mut other, &["SELECT", "3"]);
        }
        let _: Value = q(&mut other, invalidation);
        assert!(lease_set(&mut c, "/p/a", "ok", &token, &["TAGS", "1", "mine"]), "{what}: the SET must store");
        assert_eq!(get(&mut c, &["/p/a"]).as_deref(), Some(&b"ok"[..]), "{what}");
        q::<()>(&mut c, &["FLUSHALL"]);
    }
}

/// A token is any bytes: a wrong one replies nil and changes nothing, and does not
/// end the live lease of whoever holds it.
#[test]
fn wrong_tokens_are_refused_and_change_nothing() {
    let server = Server::start();
    let mut c = server.conn();
    let token = take_lease(&mut c, "/t", 60000);
    let mut other = token.clone();
    let last = other.len() - 1;
    other[last] = if other[last] == b'0' { b'1' } else { b'0' };
    // A real token of another entry does not work here either.
    let elsewhere = take_lease(&mut c, "/u", 60000);
    let bad = [other, b"".to_vec(), b"\x00\xff\r\n".to_vec(), vec![b'a'; 100_000], token.to_ascii_uppercase(), elsewhere.clone()];
    let bad: Vec<Vec<u8>> = bad.into_iter().filter(|b| *b != token).collect();
    for b in &bad {
        assert!(!lease_set(&mut c, "/t", "forged", b, &[]));
    }
    assert_eq!(get(&mut c, &["/t"]), None);
    expect_info(&mut c, &[("leases", 2), ("lease_sets_rejected", bad.len() as u64), ("lease_sets", 0)]);
    assert!(lease_set(&mut c, "/t", "real", &token, &[]));
    // Used once: the store ended the lease.
    assert!(!lease_set(&mut c, "/t", "again", &token, &[]));
    assert_eq!(get(&mut c, &["/t"]).as_deref(), Some(&b"real"[..]));
    // A plain SET also ends a lease.
    set(&mut c, &["/u", "plain"]);
    assert!(!lease_set(&mut c, "/u", "late", &elsewhere, &[]));
    assert_eq!(get(&mut c, &["/u"]).as_deref(), Some(&b"plain"[..]));
    expect_info(&mut c, &[("leases", 0)]);
}

/// A blocked LOOKUP on its own connection; the reply arrives on the channel.
fn spawn_waiter(port: u16, words: Vec<String>, tx: mpsc::Sender<(String, Looked, Instant)>) -> thread::JoinHandle<()> {
    thread::spawn(move || {
        let client = redis::Client::open(format!("redis://127.0.0.1:{port}/")).expect("client");
        let mut c = client.get_connection().expect("connect");
        c.set_read_timeout(Some(Duration::from_secs(30))).expect("timeout");
        let refs: Vec<&str> = words.iter().map(String::as_str).collect();
        let got = lookup(&mut c, &refs);
        let _ = tx.send((words.join(" "), got, Instant::now()));
    })
}

/// When a lease ends without a store (expiry, a refused SET), the next waiter that
/// asked for LEASE gets it, in the order they started waiting; the others keep waiting
/// until the store serves them.
#[test]
fn hand_over_on_expiry_and_on_refused_set_in_waiting_order() {
    let server = Server::start();
    let mut c = server.conn();
    // Long enough for the three waiters to line up behind it on a loaded machine.
    let _first = take_lease(&mut c, "/h", 2000);
    let (tx, rx) = mpsc::channel();
    let words = |w: &[&str]| w.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let mut threads = Vec::new();
    // The two LEASE waiters ask for different lengths, which tells them apart.
    for (i, w) in [&["/h", "WAIT", "20000"][..], &["/h", "LEASE", "60000", "WAIT", "20000"], &["/h", "LEASE", "59000", "WAIT", "20000"]]
        .iter()
        .enumerate()
    {
        threads.push(spawn_waiter(server.port, words(w), tx.clone()));
        wait_blocked(&mut c, i as u64 + 1);
    }
    // The first lease expires: the first LEASE waiter (the second to arrive) gets it.
    let (who, got, _) = rx.recv_timeout(Duration::from_secs(10)).expect("a hand-over on expiry");
    assert!(who.contains("LEASE 60000"), "the first LEASE waiter in line gets it: {who}");
    assert_eq!((got.state.as_str(), got.value.as_deref()), ("MISS", None));
    let second = got.lease.expect("handed a lease");
    assert_eq!(blocked_clients(&mut c), 2);
    expect_info(&mut c, &[("leases", 1), ("leases_granted", 2), ("lease_waits", 3), ("lease_waits_handed", 1)]);
    // Its SET is refused (a tag it carries was purged): the next LEASE waiter gets it.
    let _: Value = q(&mut c, &["RCACHE.PURGETAG", "t"]);
    assert!(!lease_set(&mut c, "/h", "stale", &second, &["TAGS", "1", "t"]));
    let (who, got, _) = rx.recv_timeout(Duration::from_secs(10)).expect("a hand-over on a refused SET");
    assert!(who.contains("LEASE 59000"), "then the next one: {who}");
    let third = got.lease.expect("handed a lease");
    assert_ne!(third, second);
    // Nobody else asked for a lease: the plain waiter keeps waiting for the store.
    assert!(rx.recv_timeout(Duration::from_millis(300)).is_err());
    assert!(lease_set(&mut c, "/h", "fresh", &third, &["TAGS", "1", "t"]));
    let (who, got, _) = rx.recv_timeout(Duration::from_secs(10)).expect("the store serves the plain waiter");
    assert!(!who.contains("LEASE"), "{who}");
    assert_eq!((got.state.as_str(), got.value.as_deref(), got.lease), ("FRESH", Some(&b"fresh"[..]), None));
    for t in threads {
        t.join().expect("waiter thread");
    }
    expect_info(
        &mut c,
        &[("leases", 0), ("leases_granted", 3), ("lease_sets", 1), ("lease_sets_rejected", 1), ("lease_waits", 3), ("lease_waits_served", 1), ("lease_waits_handed", 2), ("lease_waits_timeout", 0)],
    );
}

/// A waiter's own WAIT runs out: `MISS`, no lease, counted as a timeout and a miss.
#[test]
fn wait_times_out_with_a_miss() {
    let server = Server::start();
    let mut c = server.conn();
    let _held = take_lease(&mut c, "/w", 60000);
    let misses = info_u64(&mut c, "misses");
    let mut w = server.conn();
    let started = Instant::now();
    let got = lookup(&mut w, &["/w", "LEASE", "1000", "WAIT", "200"]);
    let took = started.elapsed();
    assert_eq!(got, Looked { state: "MISS".into(), value: None, lease: None });
    assert!(took >= Duration::from_millis(190) && took < Duration::from_secs(5), "{took:?}");
    expect_info(&mut c, &[("leases", 1), ("lease_waits", 1), ("lease_waits_timeout", 1), ("lease_waits_served", 0)]);
    assert_eq!(info_u64(&mut c, "misses"), misses + 1);
    assert_eq!(blocked_clients(&mut c), 0);
}

/// A waiter that disconnects leaves the table: nothing is handed to it, the server
/// does not crash when the lease ends or the entry is stored, and the next waiter is
/// the one served.
#[test]
fn waiter_disconnect_is_cleaned_up() {
    let server = Server::start();
    let mut c = server.conn();
    let token = take_lease(&mut c, "/d", 60000);
    // A raw connection that sends LOOKUP … LEASE WAIT and goes away.
    let mut raw = TcpStream::connect(("127.0.0.1", server.port)).expect("connect");
    raw.write_all(b"*6\r\n$13\r\nRCACHE.LOOKUP\r\n$2\r\n/d\r\n$5\r\nLEASE\r\n$4\r\n1000\r\n$4\r\nWAIT\r\n$5\r\n60000\r\n").expect("send");
    wait_blocked(&mut c, 1);
    drop(raw);
    wait_blocked(&mut c, 0);
    // The lease ends without a store: nobody is left to hand it to.
    let _: Value = q(&mut c, &["RCACHE.DEL", "/d"]);
    assert!(!lease_set(&mut c, "/d", "x", &token, &[]));
    expect_info(&mut c, &[("leases", 0), ("lease_waits", 1), ("lease_waits_handed", 0), ("lease_waits_served", 0), ("lease_waits_timeout", 0)]);
    // Again with a store ending it while the waiter is gone.
    let token = take_lease(&mut c, "/d", 60000);
    let mut raw = TcpStream::connect(("127.0.0.1", server.port)).expect("connect");
    raw.write_all(b"*4\r\n$13\r\nRCACHE.LOOKUP\r\n$2\r\n/d\r\n$4\r\nWAIT\r\n$5\r\n60000\r\n").expect("send");
    wait_blocked(&mut c, 1);
    drop(raw);
    wait_blocked(&mut c, 0);
    assert!(lease_set(&mut c, "/d", "stored", &token, &[]));
    expect_info(&mut c, &[("leases", 0), ("lease_waits", 2), ("lease_waits_served", 0)]);
    let mut server = server;
    assert!(server.alive());
    assert_eq!(q::<String>(&mut c, &["PING"]), "PONG");
}

/// Expired leases are reclaimed by the module's timer, without any command.
#[test]
fn expired_leases_are_reclaimed() {
    let server = Server::start();
    let mut c = server.conn();
    for i in 0..100 {
        take_lease(&mut c, &format!("/e/{i}"), 2000);
    }
    expect_info(&mut c, &[("leases", 100), ("leases_granted", 100)]);
    assert!(eventually(10, || info_u64(&mut c, "leases") == 0), "expired leases stay live");
}

/// WAIT inside MULTI/EXEC or a script is ignored (no blocking), LEASE still works.
#[test]
fn wait_in_multi_and_scripts_does_not_block() {
    let server = Server::start();
    let mut c = server.conn();
    let _held = take_lease(&mut c, "/m", 60000);
    let started = Instant::now();
    let replies: Vec<Value> = redis::pipe().atomic().cmd("RCACHE.LOOKUP").arg("/m").arg("WAIT").arg(5000).query(&mut c).expect("MULTI/EXEC");
    let got = parse_lookup(replies.into_iter().next().expect("one reply"));
    assert_eq!(got, Looked { state: "MISS".into(), value: None, lease: None });
    let script: Value = q(&mut c, &["EVAL", "return redis.call('RCACHE.LOOKUP', KEYS[1], 'LEASE', '100', 'WAIT', '5000')", "1", "/m"]);
    assert_eq!(parse_lookup(script), Looked { state: "MISS".into(), value: None, lease: None });
    assert!(started.elapsed() < Duration::from_secs(2), "blocked for {:?}", started.elapsed());
    // With no lease held, LEASE inside MULTI is granted as anywhere.
    let replies: Vec<Value> = redis::pipe().atomic().cmd("RCACHE.LOOKUP").arg("/n").arg("LEASE").arg(1000).arg("WAIT").arg(5000).query(&mut c).expect("MULTI/EXEC");
    assert!(parse_lookup(replies.into_iter().next().expect("one reply")).lease.is_some());
    expect_info(&mut c, &[("lease_waits", 0), ("leases", 2)]);
    assert_eq!(blocked_clients(&mut c), 0);
}

/// WAIT on a STALE entry does not block: the stale value is the answer.
#[test]
fn wait_on_a_stale_entry_does_not_block() {
    let server = Server::start();
    let mut c = server.conn();
    let (_, _held) = leased(&server, "/s", true);
    let started = Instant::now();
    let got = lookup(&mut c, &["/s", "LEASE", "1000", "WAIT", "5000"]);
    assert_eq!((got.state.as_str(), got.value.as_deref(), got.lease), ("STALE", Some(&b"old"[..]), None));
    assert!(started.elapsed() < Duration::from_secs(2));
    expect_info(&mut c, &[("lease_waits", 0), ("leases", 1)]);
}

/// Leases live on the master: LEASE and WAIT on a replica reply READONLY.
#[test]
fn lease_and_wait_on_a_replica_are_readonly() {
    let master = Server::start();
    let replica = Server::start_with(&["--replicaof", "127.0.0.1", &master.port.to_string()], &[]);
    let mut r = replica.conn();
    assert!(eventually(20, || q::<String>(&mut r, &["INFO", "replication"]).contains("master_link_status:up")));
    for words in [&["RCACHE.LOOKUP", "/r", "LEASE", "1000"][..], &["RCACHE.LOOKUP", "/r", "WAIT", "1000"]] {
        let err = q_err(&mut r, words);
        assert!(err.starts_with("READONLY"), "{words:?}: {err}");
    }
    // A plain LOOKUP is served.
    assert_eq!(lookup(&mut r, &["/r"]).state, "MISS");
    expect_info(&mut r, &[("leases", 0), ("leases_granted", 0)]);
}

/// A lease ends on FLUSHALL (and its waiters are handed the next one).
#[test]
fn a_lease_ends_on_flushall() {
    let server = Server::start();
    let mut c = server.conn();
    let token = take_lease(&mut c, "/f", 60000);
    let (tx, rx) = mpsc::channel();
    let waiter = spawn_waiter(server.port, ["/f", "LEASE", "60000", "WAIT", "20000"].map(String::from).to_vec(), tx);
    wait_blocked(&mut c, 1);
    expect_info(&mut c, &[("leases", 1)]);
    q::<()>(&mut c, &["FLUSHALL"]);
    let (_, got, _) = rx.recv_timeout(Duration::from_secs(10)).expect("the waiter is handed the next lease");
    let next = got.lease.expect("a new lease");
    waiter.join().expect("waiter");
    assert!(!lease_set(&mut c, "/f", "old", &token, &[]));
    assert!(lease_set(&mut c, "/f", "new", &next, &[]));
    expect_info(&mut c, &[("leases", 0), ("leases_granted", 2), ("lease_sets", 1), ("lease_sets_rejected", 1)]);
}
