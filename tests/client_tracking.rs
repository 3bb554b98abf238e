//! Issue 14, item 3: client-side caching and WATCH see every change to an entry.
//! RCACHE.GET declares the path as its key, so Redis' client tracking remembers the
//! path; every change to one of the path's entries (SET, DEL, PURGE, PURGETAG, a user
//! write to the entry key, expiry, eviction) must signal the path as modified: a RESP3
//! tracking client (default and OPTIN) and a REDIRECT target get an invalidation for
//! it, and a WATCH on it fails the transaction. RESP3 push messages are read from a raw
//! TcpStream (the `redis` crate does not surface them).

mod common;
use common::*;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::time::Duration;

/// A RESP3 value, as far as these tests need it.
#[derive(Debug, Clone, PartialEq)]
enum V {
    Str(Vec<u8>),
    Err(String),
    Int(i64),
    Nil,
    Arr(Vec<V>),
    Push(Vec<V>),
}

impl V {
    fn text(&self) -> String {
        match self {
            V::Str(b) => String::from_utf8_lossy(b).into_owned(),
            other => format!("{other:?}"),
        }
    }
}

/// One raw connection speaking RESP3 (or RESP2 until HELLO 3).
struct Raw {
    r: BufReader<TcpStream>,
    w: TcpStream,
}

impl Raw {
    fn open(s: &Server) -> Raw {
        let w = TcpStream::connect(("127.0.0.1", s.port)).expect("connect");
        w.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
        Raw { r: BufReader::new(w.try_clone().expect("clone")), w }
    }

    fn resp3(s: &Server) -> Raw {
        let mut c = Raw::open(s);
        match c.call(&["HELLO", "3"]) {
            V::Arr(_) => {}
            other => panic!("HELLO 3: {other:?}"),
        }
        c
    }

    fn send(&mut self, words: &[&str]) {
        let mut out = format!("*{}\r\n", words.len()).into_bytes();
        for w in words {
            out.extend_from_slice(format!("${}\r\n{w}\r\n", w.len()).as_bytes());
        }
        self.w.write_all(&out).expect("write");
    }

    fn line(&mut self) -> Vec<u8> {
        let mut line = Vec::new();
        self.r.read_until(b'\n', &mut line).expect("read");
        assert!(line.ends_with(b"\r\n"), "connection closed or bad line: {line:?}");
        line.truncate(line.len() - 2);
        line
    }

    fn read(&mut self) -> V {
        let line = self.line();
        let (kind, rest) = (line[0], String::from_utf8_lossy(&line[1..]).into_owned());
        let n = || rest.parse::<i64>().expect("length");
        match kind {
            b'+' => V::Str(rest.into_bytes()),
            b'-' => V::Err(rest),
            b':' => V::Int(n()),
            b'_' => V::Nil,
            b'#' | b',' | b'(' => V::Str(rest.into_bytes()),
            b'$' | b'=' if n() < 0 => V::Nil,
            b'!' => {
                let mut buf = vec![0u8; n() as usize + 2];
                std::io::Read::read_exact(&mut self.r, &mut buf).expect("blob error");
                V::Err(String::from_utf8_lossy(&buf[..buf.len() - 2]).into_owned())
            }
            b'$' | b'=' => {
                let mut buf = vec![0u8; n() as usize + 2];
                std::io::Read::read_exact(&mut self.r, &mut buf).expect("bulk");
                buf.truncate(buf.len() - 2);
                V::Str(buf)
            }
            b'*' | b'~' if n() < 0 => V::Nil,
            b'*' | b'~' => V::Arr((0..n()).map(|_| self.read()).collect()),
            b'%' => V::Arr((0..2 * n()).map(|_| self.read()).collect()),
            b'>' => V::Push((0..n()).map(|_| self.read()).collect()),
            other => panic!("unexpected RESP type {:?}", other as char),
        }
    }

    /// Sends a command and returns its reply; push messages read on the way are kept.
    fn call_collecting(&mut self, words: &[&str], pushes: &mut Vec<V>) -> V {
        self.send(words);
        loop {
            match self.read() {
                V::Push(p) => pushes.push(V::Push(p)),
                reply => return reply,
            }
        }
    }

    fn call(&mut self, words: &[&str]) -> V {
        let mut pushes = Vec::new();
        let reply = self.call_collecting(words, &mut pushes);
        assert!(pushes.is_empty(), "unexpected push messages before the reply to {words:?}: {pushes:?}");
        reply
    }

    /// The keys of the next invalidation: a RESP3 push `invalidate [keys]`, or for a
    /// RESP2 REDIRECT target subscribed to `__redis__:invalidate`, a `message` whose
    /// payload is the key list. Waits up to the read timeout.
    fn next_invalidation(&mut self) -> Vec<String> {
        let (kind, keys) = match self.read() {
            V::Push(p) | V::Arr(p) => {
                let kind = p.first().map(V::text).unwrap_or_default();
                let at = if kind == "message" { 2 } else { 1 };
                (kind, p.get(at).cloned())
            }
            other => panic!("expected an invalidation, got {other:?}"),
        };
        assert!(kind == "invalidate" || kind == "message", "expected an invalidation, got {kind}");
        match keys {
            Some(V::Arr(keys)) => keys.iter().map(V::text).collect(),
            other => panic!("invalidation without a key list: {other:?}"),
        }
    }

    /// Asserts that nothing arrives for a while (the connection stays quiet).
    fn assert_quiet(&mut self, what: &str) {
        self.w.set_read_timeout(Some(Duration::from_millis(300))).expect("timeout");
        let mut buf = [0u8; 1];
        let got = std::io::Read::read(&mut self.r, &mut buf);
        self.w.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
        assert!(got.is_err(), "{what}: expected no message, got data");
    }
}

/// An RCACHE.GET, which makes a tracking client remember the path.
fn track_get(t: &mut Raw, path: &str) {
    let reply = t.call(&["RCACHE.GET", path]);
    assert!(matches!(reply, V::Str(_) | V::Nil), "RCACHE.GET {path}: {reply:?}");
}

type Change = (&'static str, Box<dyn Fn(&mut Connection)>);

/// Each way an entry of `/news/1` can change, done from another connection.
fn changes() -> Vec<Change> {
    vec![
        ("RCACHE.SET", Box::new(|c: &mut Connection| set(c, &["/news/1", "v2", "QUERY", "page=2"]))),
        ("RCACHE.DEL", Box::new(|c: &mut Connection| assert_eq!(q::<i64>(c, &["RCACHE.DEL", "/news/1"]), 1))),
        ("RCACHE.PURGE", Box::new(|c: &mut Connection| assert!(q::<i64>(c, &["RCACHE.PURGE", "/news"]) >= 1))),
        ("RCACHE.PURGETAG", Box::new(|c: &mut Connection| assert!(q::<i64>(c, &["RCACHE.PURGETAG", "t"]) >= 1))),
        ("DEL of the entry key", Box::new(|c: &mut Connection| {
            let key: String = q(c, &["RCACHE.KEY", "/news/1"]);
            assert_eq!(q::<i64>(c, &["DEL", &key]), 1);
        })),
        ("SET of the entry key", Box::new(|c: &mut Connection| {
            let key: String = q(c, &["RCACHE.KEY", "/news/1"]);
            q::<()>(c, &["SET", &key, "not an entry"]);
        })),
        ("expiry", Box::new(|c: &mut Connection| {
            let key: String = q(c, &["RCACHE.KEY", "/news/1"]);
            assert_eq!(q::<i64>(c, &["PEXPIRE", &key, "30"]), 1);
            assert!(eventually(10, || q::<i64>(c, &["EXISTS", &key]) == 0), "active expiry");
        })),
    ]
}

fn reset(c: &mut Connection) {
    q::<()>(c, &["FLUSHALL"]);
    set(c, &["/news/1", "v1", "TAGS", "1", "t"]);
    set(c, &["/other", "v1"]);
}

#[test]
fn resp3_tracking_default_mode_is_invalidated_by_every_change() {
    let s = Server::start_with(&["--hz", "100"], &[]);
    let mut c = s.conn();
    let mut t = Raw::resp3(&s);
    assert_eq!(t.call(&["CLIENT", "TRACKING", "ON"]).text(), "OK");
    for (what, change) in changes() {
        reset(&mut c);
        // FLUSHALL invalidates everything (a null key list): read it before tracking again.
        t.send(&["PING"]);
        loop {
            match t.read() {
                V::Push(_) => continue,
                V::Str(s) if s == b"PONG" => break,
                other => panic!("{other:?}"),
            }
        }
        track_get(&mut t, "/news/1");
        track_get(&mut t, "/other");
        change(&mut c);
        assert_eq!(t.next_invalidation(), vec!["/news/1"], "{what}");
        t.assert_quiet(what); // in particular, no invalidation of /other
    }
}

#[test]
fn resp3_tracking_optin_tracks_only_what_was_asked() {
    let s = Server::start();
    let mut c = s.conn();
    set(&mut c, &["/a", "v"]);
    set(&mut c, &["/b", "v"]);
    let mut t = Raw::resp3(&s);
    assert_eq!(t.call(&["CLIENT", "TRACKING", "ON", "OPTIN"]).text(), "OK");
    assert_eq!(t.call(&["CLIENT", "CACHING", "YES"]).text(), "OK");
    track_get(&mut t, "/a");
    track_get(&mut t, "/b"); // not opted in: not tracked
    assert!(q::<i64>(&mut c, &["RCACHE.PURGE", "/"]) == 2);
    assert_eq!(t.next_invalidation(), vec!["/a"]);
    t.assert_quiet("only /a was tracked");
}

#[test]
fn redirect_to_a_resp2_subscriber() {
    let s = Server::start();
    let mut c = s.conn();
    set(&mut c, &["/r/1", "v", "TAGS", "1", "t"]);
    let mut sub = Raw::open(&s);
    let id = match sub.call(&["CLIENT", "ID"]) {
        V::Int(id) => id.to_string(),
        other => panic!("{other:?}"),
    };
    assert!(matches!(sub.call(&["SUBSCRIBE", "__redis__:invalidate"]), V::Arr(_)));
    let mut t = Raw::open(&s);
    assert_eq!(t.call(&["CLIENT", "TRACKING", "ON", "REDIRECT", &id]).text(), "OK");
    track_get(&mut t, "/r/1");
    assert_eq!(q::<i64>(&mut c, &["RCACHE.PURGETAG", "t"]), 1);
    assert_eq!(sub.next_invalidation(), vec!["/r/1"]);
}

#[test]
fn watch_fails_the_transaction_after_every_change() {
    let s = Server::start_with(&["--hz", "100"], &[]);
    let mut c = s.conn();
    let mut w = s.conn();
    for (what, change) in changes() {
        reset(&mut c);
        q::<()>(&mut w, &["WATCH", "/news/1"]);
        q::<()>(&mut w, &["MULTI"]);
        q::<()>(&mut w, &["RCACHE.GET", "/news/1"]);
        change(&mut c);
        let exec: Value = q(&mut w, &["EXEC"]);
        assert_eq!(exec, Value::Nil, "{what}: WATCH /news/1 did not fail the transaction");
        // An unrelated change leaves the transaction alone.
        reset(&mut c);
        q::<()>(&mut w, &["WATCH", "/news/1"]);
        q::<()>(&mut w, &["MULTI"]);
        q::<()>(&mut w, &["RCACHE.GET", "/news/1"]);
        set(&mut c, &["/other", "v2"]);
        let exec: Value = q(&mut w, &["EXEC"]);
        assert_ne!(exec, Value::Nil, "{what}: a change to /other failed a WATCH of /news/1");
    }
}

#[test]
fn eviction_invalidates_the_path() {
    let s = Server::start_with(&["--maxmemory-policy", "allkeys-random"], &[]);
    let mut c = s.conn();
    set(&mut c, &["/ev/1", "v"]);
    let mut t = Raw::resp3(&s);
    assert_eq!(t.call(&["CLIENT", "TRACKING", "ON"]).text(), "OK");
    track_get(&mut t, "/ev/1");
    // Squeeze memory until the entry is evicted.
    let used: u64 = used_memory(&mut c);
    q::<()>(&mut c, &["CONFIG", "SET", "maxmemory", &(used + 200_000).to_string()]);
    let big = "x".repeat(10_000);
    let key: String = q(&mut c, &["RCACHE.KEY", "/ev/1"]);
    let mut i = 0;
    while q::<i64>(&mut c, &["EXISTS", &key]) == 1 {
        let _: redis::RedisResult<()> = cmd("SET").arg(format!("filler:{i}")).arg(&big).query(&mut c);
        i += 1;
        assert!(i < 100_000, "the entry was never evicted");
    }
    assert_eq!(t.next_invalidation(), vec!["/ev/1"]);
}

fn used_memory(c: &mut Connection) -> u64 {
    let text: String = q(c, &["INFO", "memory"]);
    text.lines().find_map(|l| l.strip_prefix("used_memory:")).expect("used_memory").trim().parse().expect("number")
}

#[test]
fn a_replica_invalidates_when_a_purge_reaches_it() {
    let master = Server::start();
    let mut m = master.conn();
    set(&mut m, &["/rep/1", "v", "TAGS", "1", "t"]);
    let port = master.port.to_string();
    let replica = Server::start_with(&["--replicaof", "127.0.0.1", &port], &[]);
    let mut r = replica.conn();
    assert!(eventually(20, || get(&mut r, &["/rep/1"]).is_some()), "the replica never synced");
    let mut t = Raw::resp3(&replica);
    assert_eq!(t.call(&["CLIENT", "TRACKING", "ON"]).text(), "OK");
    track_get(&mut t, "/rep/1");
    // The replica applies the master's UNLINK; its keyspace event signals the path.
    assert_eq!(q::<i64>(&mut m, &["RCACHE.PURGE", "/rep"]), 1);
    assert_eq!(t.next_invalidation(), vec!["/rep/1"]);
}
