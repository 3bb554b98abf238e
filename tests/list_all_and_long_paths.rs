//! Two edges of paths: `rcache.max-path-len` protects SET only, so paths stored before
//! it was lowered stay reachable (GET, DEL, PURGE, LIST and its AFTER cursor); and
//! `RCACHE.LIST ""` lists every path, whatever it starts with.

mod common;
use common::*;

/// Every path LIST gives under `prefix`, `count` a page, each page starting AFTER the
/// last path of the one before.
fn paged(c: &mut Connection, prefix: &str, count: &str) -> Vec<String> {
    let mut all: Vec<String> = Vec::new();
    loop {
        let mut words = vec!["RCACHE.LIST", prefix, "COUNT", count];
        let last = all.last().cloned();
        if let Some(a) = &last {
            words.extend(["AFTER", a.as_str()]);
        }
        let page: Vec<String> = q(c, &words);
        if page.is_empty() {
            return all;
        }
        all.extend(page);
    }
}

#[test]
fn paths_stored_before_max_path_len_was_lowered_stay_reachable() {
    let s = Server::start();
    let mut c = s.conn();
    let base = format!("/long/{}", "x".repeat(100));
    let long: Vec<String> = (0..5).map(|i| format!("{base}/{i}")).collect();
    for p in &long {
        set(&mut c, &[p, "v"]);
        set(&mut c, &[p, "v", "QUERY", "page=2"]);
    }
    set(&mut c, &["/short", "v"]);
    q::<()>(&mut c, &["CONFIG", "SET", "rcache.max-path-len", "50"]);

    let e = q_err(&mut c, &["RCACHE.SET", &long[0], "v"]);
    assert_eq!(e, "ERR invalid path: path is longer than rcache.max-path-len (50 bytes)");
    assert_eq!(get(&mut c, &[&long[0]]), Some(b"v".to_vec()), "GET of a stored long path");
    assert!(q::<String>(&mut c, &["RCACHE.KEY", &long[0]]).contains(&long[0]));

    // LIST pages through the long paths: AFTER of an existing (long) path is accepted.
    assert_eq!(paged(&mut c, "/long", "2"), long);
    assert_eq!(q::<Vec<String>>(&mut c, &["RCACHE.LIST", &base, "AFTER", &long[3]]), [long[4].clone()], "a long prefix too");

    assert_eq!(q::<i64>(&mut c, &["RCACHE.DEL", &long[0]]), 1);
    assert_eq!(q::<i64>(&mut c, &["RCACHE.DEL", &long[0], "QUERY", "page=2"]), 1);
    assert_eq!(q::<i64>(&mut c, &["RCACHE.PURGE", &long[1], "EXACT"]), 2);
    assert_eq!(q::<i64>(&mut c, &["RCACHE.PURGE", &base]), 6);
    assert_eq!(q::<i64>(&mut c, &["RCACHE.PURGE", "/long"]), 0);
    assert_eq!(entry_keys(&mut c).len(), 1, "only /short is left");
    assert_eq!(info_u64(&mut c, "entries"), 1);

    // The setting's own maximum (65536) still bounds every path a command takes.
    let over = format!("/{}", "y".repeat(65536));
    for command in ["RCACHE.GET", "RCACHE.DEL", "RCACHE.PURGE", "RCACHE.LIST"] {
        let e = q_err(&mut c, &[command, &over]);
        assert_eq!(e, "ERR invalid path: path is longer than rcache.max-path-len (65536 bytes)".replace("invalid path", if command == "RCACHE.PURGE" || command == "RCACHE.LIST" { "invalid prefix" } else { "invalid path" }), "{command}");
    }
    assert!(q_err(&mut c, &["RCACHE.LIST", "/", "AFTER", &over]).starts_with("ERR invalid AFTER path: path is longer"));
}

#[test]
fn list_with_the_empty_prefix_lists_every_path() {
    let s = Server::start();
    let mut c = s.conn();
    let paths = ["/a", "/a/b", "shop.example.com/x", "shop.example.com", "{t1}/x", "a", "/", "~x"];
    for p in paths {
        set(&mut c, &[p, "v"]);
        set(&mut c, &[p, "v", "QUERY", "x=1"]);
    }
    let mut want: Vec<String> = paths.iter().map(|p| p.to_string()).collect();
    want.sort();
    assert_eq!(q::<Vec<String>>(&mut c, &["RCACHE.LIST", ""]), want, "every path once, in byte order");
    assert_eq!(paged(&mut c, "", "3"), want);
    assert_eq!(q::<Vec<String>>(&mut c, &["RCACHE.LIST", "/"]), ["/", "/a", "/a/b"], "`/` still covers only paths under it");
    let e = q_err(&mut c, &["RCACHE.PURGE", ""]);
    assert_eq!(e, "ERR invalid prefix: path is empty", "no purge-everything by an empty argument");
    assert!(q_err(&mut c, &["RCACHE.LIST", "", "AFTER", ""]).starts_with("ERR invalid AFTER path: path is empty"));
    assert_eq!(q::<Vec<String>>(&mut c, &["COMMAND", "GETKEYS", "RCACHE.LIST", ""]), [""], "LIST \"\" declares the empty key");

    // ACL: the empty prefix is the declared key, and Redis' key patterns never match
    // the empty name: only a user with every key (`~*`, `allkeys`) lists everything.
    // A tenant (`~/public/*`) and even a read-all selector (`%R~*`) list under
    // their own prefixes instead.
    q::<()>(&mut c, &["ACL", "SETUSER", "tenant", "on", ">pw", "resetkeys", "~/public/*", "+@all"]);
    q::<()>(&mut c, &["ACL", "SETUSER", "reader", "on", ">pw", "resetkeys", "%R~*", "+@all"]);
    q::<()>(&mut c, &["ACL", "SETUSER", "admin", "on", ">pw", "resetkeys", "~*", "+@all"]);
    for (user, allowed) in [("tenant", false), ("reader", false), ("admin", true)] {
        let mut u = s.conn();
        q::<()>(&mut u, &["AUTH", user, "pw"]);
        if allowed {
            assert_eq!(q::<Vec<String>>(&mut u, &["RCACHE.LIST", ""]), want, "{user}");
        } else {
            assert!(q_err(&mut u, &["RCACHE.LIST", ""]).starts_with("NOPERM"), "{user}");
        }
    }
}
