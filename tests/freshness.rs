//! Freshness (v3): entry layout v2, GRACE / JITTER / ETAG, GET fresh-only, LOOKUP's
//! 6-element reply and IFNONEMATCH, SOFTPURGE / SOFTPURGETAG (never lengthening a life),
//! on a replica and across restarts, and entries written by layout v1.

mod common;

use common::*;
use std::time::Duration;

/// LOOKUP's reply, decoded: (state, value, etag, age, ttl, lease).
type Lookup = (String, Option<Vec<u8>>, Option<String>, Option<i64>, Option<i64>, Option<Vec<u8>>);

fn lookup(c: &mut Connection, words: &[&str]) -> Lookup {
    let mut all = vec!["RCACHE.LOOKUP"];
    all.extend_from_slice(words);
    let reply: Value = q(c, &all);
    let Value::Array(items) = reply else { panic!("LOOKUP {words:?} replied {reply:?}") };
    assert_eq!(items.len(), 6, "LOOKUP replies exactly 6 elements");
    let state = match &items[0] {
        Value::SimpleString(s) => s.clone(),
        other => panic!("state is a simple string, got {other:?}"),
    };
    let bulk = |v: &Value| match v {
        Value::Nil => None,
        Value::BulkString(d) => Some(d.clone()),
        other => panic!("expected a bulk string or nil, got {other:?}"),
    };
    let int = |v: &Value| match v {
        Value::Nil => None,
        Value::Int(n) => Some(*n),
        other => panic!("expected an integer or nil, got {other:?}"),
    };
    let etag = bulk(&items[2]).map(|e| String::from_utf8(e).expect("etag"));
    (state, bulk(&items[1]), etag, int(&items[3]), int(&items[4]), bulk(&items[5]))
}

fn pexpiretime(c: &mut Connection, path: &str) -> i64 {
    let key: String = q(c, &["RCACHE.KEY", path]);
    q(c, &["PEXPIRETIME", &key])
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_millis() as i64
}

#[test]
fn lookup_replies_state_value_etag_age_ttl_and_lease() {
    let s = Server::start();
    let mut c = s.conn();
    assert_eq!(lookup(&mut c, &["/none"]), ("MISS".into(), None, None, None, None, None));

    set(&mut c, &["/forever", "body"]);
    let (state, value, etag, age, ttl, lease) = lookup(&mut c, &["/forever"]);
    assert_eq!((state.as_str(), value.as_deref(), ttl, lease), ("FRESH", Some(&b"body"[..]), Some(-1), None));
    assert_eq!(etag.as_deref(), Some("177aefccffa6f74acbf1c497eac76e10"), "XXH3-128 of the value, hex (as python-xxhash computes it)");
    assert!((0..5_000).contains(&age.expect("age")));

    set(&mut c, &["/timed", "v", "EX", "100", "ETAG", "\"v1\"", "QUERY", "a=1"]);
    let (state, _, etag, _, ttl, _) = lookup(&mut c, &["/timed", "QUERY", "a=1"]);
    assert_eq!((state.as_str(), etag.as_deref()), ("FRESH", Some("\"v1\"")), "the client's ETag is stored as given");
    assert!((90_000..=100_000).contains(&ttl.expect("ttl")), "{ttl:?}");

    // IFNONEMATCH: byte-exact; a match sends no value.
    let (state, value, etag, ..) = lookup(&mut c, &["/timed", "QUERY", "a=1", "IFNONEMATCH", "\"v1\""]);
    assert_eq!((state.as_str(), value, etag.as_deref()), ("FRESH", None, Some("\"v1\"")));
    for other in ["v1", "W/\"v1\"", "*", "\"V1\""] {
        assert_eq!(lookup(&mut c, &["/timed", "QUERY", "a=1", "IFNONEMATCH", other]).1.as_deref(), Some(&b"v"[..]), "{other}");
    }
    // Same value, same computed ETag; another value, another.
    set(&mut c, &["/same", "body"]);
    assert_eq!(lookup(&mut c, &["/same"]).2, lookup(&mut c, &["/forever"]).2);
    set(&mut c, &["/same", "body2"]);
    assert_ne!(lookup(&mut c, &["/same"]).2, lookup(&mut c, &["/forever"]).2);

    let i = info(&mut c);
    let n = |f: &str| i[f].parse::<u64>().expect(f);
    assert_eq!((n("hits"), n("misses"), n("stale_hits"), n("not_modified")), (11, 1, 0, 1));
}

#[test]
fn grace_keeps_a_stale_copy_for_lookup_only() {
    let s = Server::start();
    let mut c = s.conn();
    set(&mut c, &["/g", "old", "PX", "150", "GRACE", "30", "TAGS", "1", "t"]);
    let stored = now_ms();
    let expire = pexpiretime(&mut c, "/g");
    assert!((stored + 150 + 30_000 - 2_000..=stored + 150 + 30_000).contains(&expire), "the key lives until the grace ends");
    assert!(get(&mut c, &["/g"]).is_some());
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(get(&mut c, &["/g"]), None, "GET returns fresh entries only");
    let (state, value, _, age, ttl, _) = lookup(&mut c, &["/g"]);
    assert_eq!((state.as_str(), value.as_deref(), ttl), ("STALE", Some(&b"old"[..]), Some(0)));
    assert!(age.expect("age") >= 300);
    assert_eq!(q::<Vec<String>>(&mut c, &["RCACHE.LIST", "/"]), ["/g"], "a stale entry is still indexed");
    assert_eq!(info_u64(&mut c, "stale_hits"), 1);
    assert_eq!(info_u64(&mut c, "misses"), 1, "a GET of a stale entry is a miss");
    // GRACE without a TTL is accepted and changes nothing until a soft purge.
    set(&mut c, &["/nottl", "v", "GRACE", "60"]);
    let key: String = q(&mut c, &["RCACHE.KEY", "/nottl"]);
    assert_eq!(q::<i64>(&mut c, &["PTTL", &key]), -1);
    assert_eq!(lookup(&mut c, &["/nottl"]).4, Some(-1));
}

#[test]
fn jitter_and_the_new_settings() {
    let s = Server::start_with(&[], &["default-grace", "7", "ttl-jitter", "50"]);
    let mut c = s.conn();
    assert_eq!(q::<Vec<String>>(&mut c, &["CONFIG", "GET", "rcache.default-grace"]), ["rcache.default-grace", "7"]);
    let mut ttls = Vec::new();
    for i in 0..200 {
        let p = format!("/j/{i}");
        set(&mut c, &[&p, "v", "EX", "100"]);
        let ttl = lookup(&mut c, &[&p]).4.expect("ttl");
        assert!((50_000 - 1_000..=100_000).contains(&ttl), "jitter 50% of 100 s: {ttl}");
        // The key outlives the fresh lifetime by the default grace.
        let left = pexpiretime(&mut c, &p) - now_ms();
        assert!((ttl + 7_000 - 1_000..=ttl + 7_000 + 1_000).contains(&left), "ttl {ttl}, key {left}");
        ttls.push(ttl);
    }
    let spread = ttls.iter().max().unwrap() - ttls.iter().min().unwrap();
    assert!(spread > 25_000, "200 jittered lifetimes spread over {spread} ms");
    // JITTER 0 on the request overrides the setting.
    set(&mut c, &["/exact", "v", "EX", "100", "JITTER", "0", "GRACE", "0"]);
    assert!(lookup(&mut c, &["/exact"]).4.expect("ttl") > 98_000);
    q::<()>(&mut c, &["CONFIG", "SET", "rcache.ttl-jitter", "0"]);
    assert!(q_err(&mut c, &["CONFIG", "SET", "rcache.ttl-jitter", "101"]).contains("ERR"));
    assert!(q_err(&mut c, &["CONFIG", "SET", "rcache.default-grace", "315360001"]).contains("ERR"));
}

#[test]
fn softpurge_makes_fresh_entries_stale_and_never_lengthens_a_life() {
    let s = Server::start();
    let mut c = s.conn();
    set(&mut c, &["/sp/a", "a", "EX", "1000", "GRACE", "60"]);
    set(&mut c, &["/sp/a", "a2", "EX", "1000", "GRACE", "60", "QUERY", "x=1"]);
    set(&mut c, &["/sp/b", "b", "EX", "1000"]); // no grace: removed
    set(&mut c, &["/sp/c", "c", "GRACE", "60"]); // no TTL, with grace: stale for 60 s
    set(&mut c, &["/sp/d", "d", "PX", "100", "GRACE", "5"]); // stale already: keeps its end
    set(&mut c, &["/sp/e", "e", "EX", "1", "GRACE", "100"]); // fresh, key expires in 101 s
    set(&mut c, &["/other", "o", "EX", "1000", "GRACE", "60"]);
    std::thread::sleep(Duration::from_millis(200));
    let d_expire = pexpiretime(&mut c, "/sp/d");
    let e_expire = pexpiretime(&mut c, "/sp/e");

    let before = now_ms();
    assert_eq!(q::<i64>(&mut c, &["RCACHE.SOFTPURGE", "/sp"]), 5, "a, a?x=1, b, c, e were fresh");
    let after = now_ms();
    for (path, query) in [("/sp/a", ""), ("/sp/a", "x=1"), ("/sp/c", ""), ("/sp/e", "")] {
        let words: Vec<&str> = if query.is_empty() { vec![path] } else { vec![path, "QUERY", query] };
        assert_eq!(get(&mut c, &words), None, "{path}?{query} is stale for GET");
        assert_eq!(lookup(&mut c, &words).0, "STALE", "{path}?{query}");
    }
    assert_eq!(lookup(&mut c, &["/sp/b"]).0, "MISS", "no grace: removed");
    assert_eq!(get(&mut c, &["/other"]).as_deref(), Some(&b"o"[..]));
    let a_expire = pexpiretime(&mut c, "/sp/a");
    assert!((before + 60_000..=after + 60_000).contains(&a_expire), "stale for its grace from now");
    assert!((before + 60_000..=after + 60_000).contains(&pexpiretime(&mut c, "/sp/c")));
    assert_eq!(pexpiretime(&mut c, "/sp/d"), d_expire, "an entry already stale keeps its end of grace");
    assert!(pexpiretime(&mut c, "/sp/e") <= e_expire, "never lengthens (Varnish's bug)");
    // A second soft purge finds nothing fresh and changes no expiry.
    assert_eq!(q::<i64>(&mut c, &["RCACHE.SOFTPURGE", "/sp"]), 0);
    assert_eq!(pexpiretime(&mut c, "/sp/a"), a_expire);
    // EXACT, and SOFTPURGETAG.
    set(&mut c, &["/x", "x", "GRACE", "10", "TAGS", "2", "t1", "t2"]);
    set(&mut c, &["/x/y", "y", "GRACE", "10", "TAGS", "1", "t2"]);
    set(&mut c, &["/z", "z", "TAGS", "1", "t3"]);
    assert_eq!(q::<i64>(&mut c, &["RCACHE.SOFTPURGE", "/x", "EXACT"]), 1);
    assert_eq!(lookup(&mut c, &["/x/y"]).0, "FRESH");
    assert_eq!(q::<i64>(&mut c, &["RCACHE.SOFTPURGETAG", "t2", "t3", "t2"]), 2, "/x/y stale, /z removed; /x was stale already");
    assert_eq!(lookup(&mut c, &["/x/y"]).0, "STALE");
    assert_eq!(lookup(&mut c, &["/z"]).0, "MISS");
    let i = info(&mut c);
    let n = |f: &str| i[f].parse::<u64>().expect(f);
    assert_eq!((n("soft_purges"), n("soft_purged_entries"), n("soft_tag_purges"), n("soft_tag_purged_entries")), (3, 6, 1, 2));
    assert_eq!((n("purges"), n("tag_purges")), (0, 0));
    // A hard PURGE removes stale entries too.
    assert_eq!(q::<i64>(&mut c, &["RCACHE.PURGE", "/sp"]), 5, "a, a?x=1, c, d, e");
    assert_eq!(q::<Vec<String>>(&mut c, &["RCACHE.LIST", "/"]), ["/other", "/x", "/x/y"]);
}

#[test]
fn bad_v3_options_are_errors_that_change_nothing() {
    let s = Server::start();
    let mut c = s.conn();
    set(&mut c, &["/p", "v", "GRACE", "10"]);
    let cases: &[&[&str]] = &[
        &["RCACHE.SET", "/p", "w", "GRACE", "-1"],
        &["RCACHE.SET", "/p", "w", "GRACE", "315360001"],
        &["RCACHE.SET", "/p", "w", "JITTER", "101"],
        &["RCACHE.SET", "/p", "w", "ETAG", ""],
        &["RCACHE.SET", "/p", "w", "ETAG", "a\rb"],
        &["RCACHE.SET", "/p", "w", "LEASE"],
        &["RCACHE.LOOKUP", "/p", "LEASE", "0"],
        &["RCACHE.LOOKUP", "/p", "WAIT", "3600001"],
        &["RCACHE.LOOKUP", "/p", "IFNONEMATCH"],
        &["RCACHE.LOOKUP", "/p?x"],
        &["RCACHE.SOFTPURGE", "/p", "ALL"],
        &["RCACHE.SOFTPURGE"],
        &["RCACHE.SOFTPURGETAG"],
        &["RCACHE.SOFTPURGETAG", "a\nb"],
    ];
    for words in cases {
        assert!(q_err(&mut c, words).starts_with("ERR"), "{words:?}");
    }
    assert_eq!(lookup(&mut c, &["/p"]).0, "FRESH");
    assert_eq!(get(&mut c, &["/p"]).as_deref(), Some(&b"v"[..]));
    assert_eq!(q::<i64>(&mut c, &["RCACHE.SOFTPURGE", "/p"]), 1);
    let key: String = q(&mut c, &["RCACHE.KEY", "/p"]);
    q::<()>(&mut c, &["RPUSH", "rcache:{/q}:-:-", "x"]);
    assert!(q_err(&mut c, &["RCACHE.LOOKUP", "/q"]).starts_with("WRONGTYPE"));
    q::<()>(&mut c, &["SET", "rcache:{/r}:-:-", "not an entry"]);
    assert!(q_err(&mut c, &["RCACHE.LOOKUP", "/r"]).starts_with("ERR key holds a string that is not an rcache entry"));
    assert_eq!(q::<i64>(&mut c, &["EXISTS", &key]), 1);
}

/// Soft purges replicate as SETRANGE + PEXPIREAT: the replica reports STALE, with the
/// master's end of grace, and so does a restart from RDB and from AOF.
#[test]
fn soft_purge_reaches_replicas_and_survives_restarts() {
    let mut m = Server::start_with(&["--appendonly", "yes"], &[]);
    let r = Server::start();
    let mut mc = m.conn();
    let mut rc = r.conn();
    q::<()>(&mut rc, &["REPLICAOF", "127.0.0.1", &m.port.to_string()]);
    assert!(eventually(20, || q::<String>(&mut rc, &["INFO", "replication"]).contains("master_link_status:up")));
    set(&mut mc, &["/r/1", "one", "EX", "1000", "GRACE", "600", "TAGS", "1", "t"]);
    set(&mut mc, &["/r/2", "two", "EX", "1000", "GRACE", "600"]);
    set(&mut mc, &["/r/3", "three", "EX", "1000"]);
    assert_eq!(q::<i64>(&mut mc, &["RCACHE.SOFTPURGE", "/r/1"]), 1);
    assert_eq!(q::<i64>(&mut mc, &["RCACHE.SOFTPURGE", "/r/3"]), 1);
    assert_eq!(q::<i64>(&mut mc, &["WAIT", "1", "5000"]), 1);
    let expire = pexpiretime(&mut mc, "/r/1");
    for (name, conn) in [("master", &mut mc), ("replica", &mut rc)] {
        assert_eq!(lookup(conn, &["/r/1"]).0, "STALE", "{name}");
        assert_eq!(lookup(conn, &["/r/2"]).0, "FRESH", "{name}");
        assert_eq!(lookup(conn, &["/r/3"]).0, "MISS", "{name}");
        assert_eq!(pexpiretime(conn, "/r/1"), expire, "{name}: absolute end of grace");
        assert_eq!(info_u64(conn, "entries"), 2, "{name}");
    }
    // The replica's bytes are the master's.
    let key: String = q(&mut mc, &["RCACHE.KEY", "/r/1"]);
    assert_eq!(q::<Vec<u8>>(&mut mc, &["GET", &key]), q::<Vec<u8>>(&mut rc, &["GET", &key]));
    drop(rc);
    drop(r);
    // From the AOF (SETRANGE and PEXPIREAT replayed)...
    m.restart(false, &[]);
    let mut mc = m.conn();
    assert_eq!(lookup(&mut mc, &["/r/1"]).0, "STALE", "after an AOF restart");
    assert_eq!(pexpiretime(&mut mc, "/r/1"), expire);
    assert_eq!(q::<i64>(&mut mc, &["RCACHE.PURGETAG", "t"]), 1, "the tag index is rebuilt");
    // ...and from an RDB.
    set(&mut mc, &["/r/4", "four", "EX", "1000", "GRACE", "600"]);
    assert_eq!(q::<i64>(&mut mc, &["RCACHE.SOFTPURGE", "/r/4"]), 1);
    m.restart(true, &["--appendonly", "no"]);
    let mut mc = m.conn();
    assert_eq!(lookup(&mut mc, &["/r/4"]).0, "STALE", "after an RDB restart");
    assert_eq!(lookup(&mut mc, &["/r/2"]).0, "FRESH");
}

/// Entries written in layout v1 (by rcache 0.1) stay readable: bytes written by a plain
/// SET, and an RDB saved by the v1 module (tests/fixtures/v1.rdb).
#[test]
fn layout_v1_entries_are_served() {
    let s = Server::start();
    let mut c = s.conn();
    let mut v1 = b"RCE\x01".to_vec();
    v1.extend_from_slice(&(50u32 + 2 + 3).to_le_bytes());
    v1.extend_from_slice(&1_700_000_000_000u64.to_le_bytes());
    v1.extend_from_slice(b"5d41402abc4b2a76b9719d911017c592");
    v1.extend_from_slice(&1u16.to_le_bytes());
    v1.extend_from_slice(&3u16.to_le_bytes());
    v1.extend_from_slice(b"old");
    v1.extend_from_slice(b"hello");
    let key: String = q(&mut c, &["RCACHE.KEY", "/v1"]);
    redis::cmd("SET").arg(&key).arg(&v1).arg("EX").arg(100).query::<()>(&mut c).expect("SET v1 bytes");
    assert_eq!(get(&mut c, &["/v1"]).as_deref(), Some(&b"hello"[..]));
    let (state, value, etag, age, ttl, _) = lookup(&mut c, &["/v1"]);
    assert_eq!((state.as_str(), value.as_deref(), etag.as_deref()), ("FRESH", Some(&b"hello"[..]), Some("5d41402abc4b2a76b9719d911017c592")));
    assert!(age.expect("age") > 0);
    assert!((90_000..=100_000).contains(&ttl.expect("ttl")), "a v1 entry is fresh until its key expires: {ttl:?}");
    assert_eq!(lookup(&mut c, &["/v1", "IFNONEMATCH", "5d41402abc4b2a76b9719d911017c592"]).1, None);
    assert_eq!(q::<Vec<String>>(&mut c, &["RCACHE.LIST", "/"]), ["/v1"]);
    // A soft purge removes a v1 entry (v1 has no grace).
    assert_eq!(q::<i64>(&mut c, &["RCACHE.SOFTPURGETAG", "old"]), 1);
    assert_eq!(lookup(&mut c, &["/v1"]).0, "MISS");

    let fixture = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/v1.rdb");
    let dir = temp_dir();
    std::fs::copy(&fixture, dir.join("dump.rdb")).expect("copy the v1 RDB");
    let s = Server::start_with(&["--dir", dir.to_str().expect("dir")], &[]);
    let mut c = s.conn();
    assert_eq!(get(&mut c, &["/v1rdb/plain"]).as_deref(), Some(&b"plain body"[..]));
    assert_eq!(get(&mut c, &["/v1rdb/page", "QUERY", "p=2", "VARY", "1", "Accept-Language", "fr"]).as_deref(), Some(&b"page two"[..]));
    let (state, _, etag, ..) = lookup(&mut c, &["/v1rdb/tagged"]);
    assert_eq!(state, "FRESH");
    assert_eq!(etag.as_ref().map(String::len), Some(32), "v1's MD5 ETag");
    assert_eq!(q::<Vec<String>>(&mut c, &["RCACHE.LIST", "/"]), ["/v1rdb/page", "/v1rdb/plain", "/v1rdb/tagged"]);
    assert_eq!(q::<i64>(&mut c, &["RCACHE.PURGETAG", "article:1"]), 1, "v1 tags are indexed");
    assert_eq!(q::<i64>(&mut c, &["RCACHE.PURGE", "/v1rdb"]), 2);
}
