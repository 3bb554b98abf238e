//! Tenants: Redis ACL key patterns apply to paths, and the purges (soft ones too) touch only
//! what the calling user may write (issue 6, item 3; docs/security.md).

mod common;
use common::*;
use redis::ConnectionLike as _;

/// A connection authenticated as `user` (password `pw`).
fn conn_as(s: &Server, user: &str) -> Connection {
    let mut c = s.conn();
    q::<()>(&mut c, &["AUTH", user, "pw"]);
    c
}

fn setuser(admin: &mut Connection, user: &str, rules: &[&str]) {
    let mut words = vec!["ACL", "SETUSER", user, "reset", "on", ">pw"];
    words.extend_from_slice(rules);
    q::<()>(admin, &words);
}

fn set(c: &mut Connection, path: &str, tags: &[&str]) {
    let count = tags.len().to_string();
    let mut words = vec!["RCACHE.SET", path, "v"];
    if !tags.is_empty() {
        words.extend(["TAGS", &count]);
        words.extend_from_slice(tags);
    }
    assert_eq!(q::<String>(c, &words), "OK", "{words:?}");
}

fn noperm(c: &mut Connection, words: &[&str]) {
    let e = q_err(c, words);
    assert!(e.starts_with("NOPERM"), "{words:?} should be refused with NOPERM, got: {e}");
}

fn entries(admin: &mut Connection) -> Vec<String> {
    entry_keys(admin)
}

/// `~/public/*`: every command that takes a path is checked against the pattern by
/// Redis itself, because each declares its path as the key.
#[test]
fn key_patterns_apply_to_paths_for_every_command() {
    let s = Server::start();
    let mut admin = s.conn();
    setuser(&mut admin, "web", &["~/public/*", "+@all"]);
    set(&mut admin, "/private/secret", &["t"]);
    let mut c = conn_as(&s, "web");

    // Inside the pattern: every command works.
    set(&mut c, "/public/a", &["t"]);
    set(&mut c, "/public/b/c", &[]);
    assert_eq!(q::<Option<String>>(&mut c, &["RCACHE.GET", "/public/a"]).as_deref(), Some("v"));
    assert_eq!(q::<String>(&mut c, &["RCACHE.KEY", "/public/a"]), "rcache:{/public/a}:-:-");
    assert_eq!(q::<Vec<String>>(&mut c, &["RCACHE.LIST", "/public/"]), vec!["/public/a", "/public/b/c"]);
    assert_eq!(q::<i64>(&mut c, &["RCACHE.DEL", "/public/b/c"]), 1);
    assert_eq!(q::<i64>(&mut c, &["RCACHE.PURGE", "/public/a"]), 1);

    // Outside it: refused by Redis before the module runs, for each command.
    for words in [
        &["RCACHE.SET", "/private/secret", "x"][..],
        &["RCACHE.SET", "/private/new", "x", "TAGS", "1", "t"],
        &["RCACHE.GET", "/private/secret"],
        &["RCACHE.DEL", "/private/secret"],
        &["RCACHE.PURGE", "/private"],
        &["RCACHE.PURGE", "/"],
        &["RCACHE.PURGE", "/private/secret", "EXACT"],
        &["RCACHE.LIST", "/"],
        &["RCACHE.LIST", "/private"],
        &["RCACHE.KEY", "/private/secret"],
    ] {
        noperm(&mut c, words);
    }
    // The entry keys themselves are not the user's to touch either.
    noperm(&mut c, &["GET", "rcache:{/private/secret}:-:-"]);
    // PURGETAG declares no key: the module checks each entry it would remove.
    noperm(&mut c, &["RCACHE.PURGETAG", "t"]);
    assert_eq!(entries(&mut admin), vec!["rcache:{/private/secret}:-:-"], "nothing outside the pattern was touched");
    let i = info(&mut admin);
    assert_eq!((i["purges"].as_str(), i["tag_purges"].as_str(), i["dels"].as_str()), ("1", "0", "1"), "refused commands move no counter");
}

/// A prefix the user may write can cover entries it may not: PURGE then refuses as a
/// whole (NOPERM) and removes nothing; PURGETAG likewise for a tag shared across tenants.
#[test]
fn purge_and_purgetag_refuse_when_any_covered_entry_is_forbidden() {
    let s = Server::start();
    let mut admin = s.conn();
    // The site's landing page and its public subtree, but not /site/private/*.
    setuser(&mut admin, "site", &["~/site", "~/site/public/*", "+@all"]);
    set(&mut admin, "/site", &["shared"]);
    set(&mut admin, "/site/public/a", &["shared", "pub"]);
    set(&mut admin, "/site/public/b", &["pub"]);
    set(&mut admin, "/site/private/x", &["shared"]);
    set(&mut admin, "/other", &["shared"]);
    let before = entries(&mut admin);
    assert_eq!(before.len(), 5);
    let mut c = conn_as(&s, "site");

    // Redis lets the prefix "/site" through (the user may write that path) ...
    noperm(&mut c, &["RCACHE.PURGE", "/site"]);
    noperm(&mut c, &["RCACHE.PURGE", "/site/"]);
    // ... but the module sees /site/private/x among the covered entries.
    noperm(&mut c, &["RCACHE.PURGETAG", "shared"]);
    noperm(&mut c, &["RCACHE.PURGETAG", "pub", "shared"]);
    // Soft purges likewise: the same check, before anything is touched.
    noperm(&mut c, &["RCACHE.SOFTPURGE", "/site"]);
    noperm(&mut c, &["RCACHE.SOFTPURGETAG", "shared"]);
    assert_eq!(entries(&mut admin), before, "a refused purge removes nothing");
    let stale: Vec<Value> = q(&mut admin, &["RCACHE.LOOKUP", "/site/private/x"]);
    assert_eq!(stale[0], Value::SimpleString("FRESH".into()), "a refused soft purge softens nothing");
    let i = info(&mut admin);
    assert_eq!((i["purges"].as_str(), i["purged_entries"].as_str(), i["tag_purges"].as_str()), ("0", "0", "0"));
    assert_eq!((i["soft_purges"].as_str(), i["soft_tag_purges"].as_str()), ("0", "0"));

    // Whatever lies entirely inside the user's patterns is purged.
    assert_eq!(q::<i64>(&mut c, &["RCACHE.PURGE", "/site", "EXACT"]), 1);
    assert_eq!(q::<i64>(&mut c, &["RCACHE.PURGETAG", "pub"]), 2);
    assert_eq!(q::<i64>(&mut c, &["RCACHE.PURGETAG", "no-such-tag"]), 0, "nothing to remove, nothing to refuse");
    assert_eq!(entries(&mut admin), vec!["rcache:{/other}:-:-", "rcache:{/site/private/x}:-:-"]);

    // The default user may write everything.
    assert_eq!(q::<i64>(&mut admin, &["RCACHE.PURGETAG", "shared"]), 2);
    assert!(entries(&mut admin).is_empty());
}

/// `%R~` selectors: read, never write. GET/LIST/KEY work; SET/DEL/PURGE are refused
/// by Redis; a PURGE allowed on its prefix but covering read-only entries is refused
/// by the module.
#[test]
fn read_only_selectors_allow_reads_and_refuse_every_write() {
    let s = Server::start();
    let mut admin = s.conn();
    setuser(&mut admin, "reader", &["%R~/ro/*", "~/rw/*", "~/mixed", "%R~/mixed/*", "+@all"]);
    for p in ["/ro/a", "/rw/a", "/mixed", "/mixed/child"] {
        set(&mut admin, p, &["t"]);
    }
    let mut c = conn_as(&s, "reader");

    assert_eq!(q::<Option<String>>(&mut c, &["RCACHE.GET", "/ro/a"]).as_deref(), Some("v"));
    assert_eq!(q::<Vec<String>>(&mut c, &["RCACHE.LIST", "/ro/"]), vec!["/ro/a"]);
    assert_eq!(q::<String>(&mut c, &["RCACHE.KEY", "/ro/a"]), "rcache:{/ro/a}:-:-");
    noperm(&mut c, &["RCACHE.SET", "/ro/a", "x"]);
    noperm(&mut c, &["RCACHE.SET", "/ro/new", "x"]);
    noperm(&mut c, &["RCACHE.DEL", "/ro/a"]);
    noperm(&mut c, &["RCACHE.PURGE", "/ro/a"]);
    noperm(&mut c, &["RCACHE.PURGE", "/ro/a", "EXACT"]);
    // Read-write on "/mixed" itself, read-only below it.
    noperm(&mut c, &["RCACHE.PURGE", "/mixed"]);
    // PURGETAG t covers entries in all three areas.
    noperm(&mut c, &["RCACHE.PURGETAG", "t"]);
    assert_eq!(entries(&mut admin).len(), 4, "nothing removed");

    set(&mut c, "/rw/b", &[]);
    assert_eq!(q::<i64>(&mut c, &["RCACHE.PURGE", "/mixed", "EXACT"]), 1);
    assert_eq!(q::<i64>(&mut c, &["RCACHE.PURGE", "/rw/a"]), 1);
    assert_eq!(q::<Option<String>>(&mut admin, &["RCACHE.GET", "/ro/a"]).as_deref(), Some("v"));
    assert_eq!(entries(&mut admin), vec!["rcache:{/mixed/child}:-:-", "rcache:{/ro/a}:-:-", "rcache:{/rw/b}:-:-"]);
}

/// Inside MULTI and from a script the caller's permissions still apply: the module
/// checks the user running the command, not the connection's context.
#[test]
fn permissions_hold_inside_transactions_and_scripts() {
    let s = Server::start();
    let mut admin = s.conn();
    setuser(&mut admin, "site", &["~/site", "~/site/public/*", "+@all"]);
    set(&mut admin, "/site/public/a", &["shared"]);
    set(&mut admin, "/site/private/x", &["shared"]);
    let mut c = conn_as(&s, "site");

    // A script may only use keys it declares, which Redis checks against the user.
    let e = q_err(&mut c, &["EVAL", "return redis.call('RCACHE.PURGETAG', 'shared')", "0"]);
    assert!(e.contains("NOPERM") || e.contains("no permission"), "{e}");
    let e = q_err(&mut c, &["EVAL", "return redis.call('RCACHE.PURGE', KEYS[1])", "1", "/site"]);
    assert!(e.contains("NOPERM") || e.contains("no permission"), "{e}");

    q::<()>(&mut c, &["MULTI"]);
    q::<()>(&mut c, &["RCACHE.PURGE", "/site"]);
    q::<()>(&mut c, &["RCACHE.PURGETAG", "shared"]);
    let replies = match c.req_command(&cmd("EXEC")).expect("EXEC") {
        Value::Array(replies) => replies,
        other => panic!("EXEC: {other:?}"),
    };
    assert_eq!(replies.len(), 2);
    for r in &replies {
        assert!(matches!(r, redis::Value::ServerError(e) if e.code() == "NOPERM"), "{replies:?}");
    }
    assert_eq!(entries(&mut admin).len(), 2, "nothing removed");

    // The same script from the default user purges.
    assert_eq!(q::<i64>(&mut admin, &["EVAL", "return redis.call('RCACHE.PURGETAG', 'shared')", "0"]), 2);
}

/// The worked example of docs/security.md, as written there.
#[test]
fn the_multi_tenant_example_of_the_security_doc() {
    let s = Server::start();
    let mut admin = s.conn();
    // Two shops share one Redis; each may cache and purge only under its own host name.
    q::<()>(&mut admin, &["ACL", "SETUSER", "shop1", "on", ">pw", "resetkeys", "~shop1.example.com", "~shop1.example.com/*", "resetchannels", "-@all", "+rcache.set", "+rcache.get", "+rcache.del", "+rcache.purge", "+rcache.purgetag", "+rcache.list", "+rcache.key"]);
    q::<()>(&mut admin, &["ACL", "SETUSER", "shop2", "on", ">pw", "resetkeys", "~shop2.example.com", "~shop2.example.com/*", "resetchannels", "-@all", "+rcache.set", "+rcache.get", "+rcache.del", "+rcache.purge", "+rcache.purgetag", "+rcache.list", "+rcache.key"]);
    // A CDN edge that only reads.
    q::<()>(&mut admin, &["ACL", "SETUSER", "edge", "on", ">pw", "resetkeys", "%R~*", "resetchannels", "-@all", "+rcache.get", "+rcache.list", "+rcache.key"]);
    let (mut shop1, mut shop2, mut edge) = (conn_as(&s, "shop1"), conn_as(&s, "shop2"), conn_as(&s, "edge"));

    set(&mut shop1, "shop1.example.com/products/7", &["product:7"]);
    set(&mut shop2, "shop2.example.com/products/7", &["product:7"]);
    noperm(&mut shop1, &["RCACHE.SET", "shop2.example.com/products/7", "defaced"]);
    noperm(&mut shop1, &["RCACHE.GET", "shop2.example.com/products/7"]);
    // Tags are free-form and shared: shop1 cannot purge shop2's entries through one.
    noperm(&mut shop1, &["RCACHE.PURGETAG", "product:7"]);
    assert_eq!(q::<i64>(&mut shop1, &["RCACHE.PURGE", "shop1.example.com"]), 1);
    noperm(&mut shop1, &["FLUSHALL"]);
    noperm(&mut shop1, &["KEYS", "*"]);

    assert_eq!(q::<Option<String>>(&mut edge, &["RCACHE.GET", "shop2.example.com/products/7"]).as_deref(), Some("v"));
    noperm(&mut edge, &["RCACHE.SET", "shop2.example.com/x", "v"]);
    noperm(&mut edge, &["RCACHE.PURGE", "shop2.example.com"]);
    assert_eq!(entries(&mut admin), vec!["rcache:{shop2.example.com/products/7}:-:-"]);
}
