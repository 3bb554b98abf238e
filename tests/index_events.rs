//! Issue 3, item 1 (standalone server) and item 4: every way a key can change outside
//! the module, against a real redis-server. After each, the index (RCACHE.LIST per
//! database, INFO `entries` / `paths`) equals the entry keys that really exist, PURGE
//! removes what it must, and the index_removals_* counters say what happened.

mod common;
mod index_common;
use common::*;
use index_common::*;

use std::time::Duration;

#[test]
fn active_and_lazy_expiry() {
    let s = Server::start_with(&["--hz", "50", "--enable-debug-command", "yes"], &[]);
    let mut c = s.conn();
    // Stop active expiry while the lazy part runs, so that only a read can expire.
    q::<()>(&mut c, &["DEBUG", "SET-ACTIVE-EXPIRE", "0"]);
    set(&mut c, &["/lazy/a", "v", "PX", "40"]);
    set(&mut c, &["/lazy/b", "v", "PX", "40", "QUERY", "x=1"]);
    set(&mut c, &["/keep", "v"]);
    std::thread::sleep(Duration::from_millis(80));
    assert_eq!(info_u64(&mut c, "entries"), 3, "nothing expired yet with active expiry off");
    // Lazy: the GET misses and Redis deletes the key; the index follows at once.
    assert_eq!(get(&mut c, &["/lazy/a"]), None);
    assert_eq!(info_u64(&mut c, "entries"), 2);
    // Lazy through a user command on the key.
    let key_b: String = q(&mut c, &["RCACHE.KEY", "/lazy/b", "QUERY", "x=1"]);
    assert_eq!(q::<Option<String>>(&mut c, &["GET", &key_b]), None);
    assert_eq!(info_u64(&mut c, "entries"), 1);
    assert_eq!(removals(&mut c), (2, 0, 0));
    q::<()>(&mut c, &["DEBUG", "SET-ACTIVE-EXPIRE", "1"]);

    // Active: nobody touches the keys.
    fill(&mut c, "/active", 300, 10, &["PX", "30"]);
    assert!(eventually(10, || info_u64(&mut s.conn(), "entries") == 1), "{:?}", info(&mut c));
    assert_index_exact(&mut c, &[0], "after active expiry");
    assert_eq!(removals(&mut c), (302, 0, 0));
    assert_eq!(server_info_u64(&mut c, "stats", "expired_keys"), 302, "Redis' own count agrees");
    assert_eq!(listed(&mut c, "/"), vec!["/keep"]);
}

/// Fills a server under `policy` until Redis has evicted entries; returns the connection.
fn eviction_under(policy: &str, extra: &[&str]) -> (Server, Connection) {
    let s = Server::start_with(&["--maxmemory-policy", policy, "--maxmemory-eviction-tenacity", "100"], &[]);
    let mut c = s.conn();
    let used = server_info_u64(&mut c, "memory", "used_memory");
    q::<()>(&mut c, &["CONFIG", "SET", "maxmemory", &(used + 2 * 1024 * 1024).to_string()]);
    fill(&mut c, "/keep", 50, 10, &[]);
    fill(&mut c, "/big", 4000, 2000, extra);
    assert!(server_info_u64(&mut c, "stats", "evicted_keys") > 0, "{policy}: no eviction happened");
    // Stop evicting, so that the checks compare a keyspace that holds still.
    q::<()>(&mut c, &["CONFIG", "SET", "maxmemory", "0"]);
    (s, c)
}

#[test]
fn eviction_allkeys_lru() {
    let (_s, mut c) = eviction_under("allkeys-lru", &[]);
    let n = assert_index_exact(&mut c, &[0], "allkeys-lru");
    let evicted = server_info_u64(&mut c, "stats", "evicted_keys");
    assert_eq!(n as u64 + evicted, 4050, "every entry is either indexed or evicted");
    assert_eq!(removals(&mut c), (0, evicted, 0));
    let purged: i64 = q(&mut c, &["RCACHE.PURGE", "/big"]);
    purges_done(&mut c);
    assert_eq!(entry_keys(&mut c).iter().filter(|k| k.starts_with("rcache:{/big/")).count(), 0);
    assert!(purged > 0);
    assert_index_exact(&mut c, &[0], "allkeys-lru after purge");
}

#[test]
fn eviction_volatile_lru_takes_only_entries_with_a_ttl() {
    let (_s, mut c) = eviction_under("volatile-lru", &["EX", "3600"]);
    let n = assert_index_exact(&mut c, &[0], "volatile-lru");
    let evicted = server_info_u64(&mut c, "stats", "evicted_keys");
    assert_eq!(n as u64 + evicted, 4050);
    assert_eq!(removals(&mut c), (0, evicted, 0));
    assert_eq!(q::<i64>(&mut c, &["RCACHE.PURGE", "/keep"]), 50, "entries without a TTL are never evicted");
}

#[test]
fn eviction_allkeys_random() {
    let (_s, mut c) = eviction_under("allkeys-random", &[]);
    let n = assert_index_exact(&mut c, &[0], "allkeys-random");
    let evicted = server_info_u64(&mut c, "stats", "evicted_keys");
    assert_eq!(n as u64 + evicted, 4050);
    assert_eq!(removals(&mut c), (0, evicted, 0));
    assert_eq!(q::<i64>(&mut c, &["RCACHE.PURGE", "/"]) as usize, n);
    purges_done(&mut c);
    assert_eq!(entry_keys(&mut c).len(), 0);
}

#[test]
fn del_unlink_getdel() {
    let s = Server::start();
    let mut c = s.conn();
    for p in ["/d/1", "/d/2", "/d/3", "/d/4"] {
        set(&mut c, &[p, "v", "TAGS", "1", "t"]);
    }
    assert_eq!(q::<i64>(&mut c, &["DEL", &key_of("/d/1")]), 1);
    assert_eq!(q::<i64>(&mut c, &["UNLINK", &key_of("/d/2")]), 1);
    let raw: Vec<u8> = q(&mut c, &["GETDEL", &key_of("/d/3")]);
    assert!(raw.starts_with(b"RCE"));
    assert_index_exact(&mut c, &[0], "after DEL/UNLINK/GETDEL");
    assert_eq!(listed(&mut c, "/"), vec!["/d/4"]);
    assert_eq!(removals(&mut c), (0, 0, 3));
    assert_eq!(info_u64(&mut c, "tags"), 1);
    assert_eq!(q::<i64>(&mut c, &["RCACHE.PURGETAG", "t"]), 1);
    assert_eq!(info_u64(&mut c, "tags"), 0);
}

#[test]
fn user_set_of_a_foreign_value_and_of_an_entry_value() {
    let s = Server::start();
    let mut c = s.conn();
    set(&mut c, &["/f/a", "v", "TAGS", "1", "t"]);
    set(&mut c, &["/f/b", "v"]);
    q::<()>(&mut c, &["SET", &key_of("/f/a"), "foreign"]);
    assert_index_exact(&mut c, &[0], "after SET of a foreign value");
    assert_eq!(listed(&mut c, "/"), vec!["/f/b"]);
    assert_eq!(removals(&mut c), (0, 0, 1));
    assert_eq!(q::<i64>(&mut c, &["RCACHE.PURGETAG", "t"]), 0, "the tag left with the entry");
    assert!(q_err(&mut c, &["RCACHE.GET", "/f/a"]).starts_with("ERR"));
    // PURGE removes only entries: the foreign key stays.
    assert_eq!(q::<i64>(&mut c, &["RCACHE.PURGE", "/f"]), 1);
    assert_eq!(q::<String>(&mut c, &["GET", &key_of("/f/a")]), "foreign");

    // A user SET that writes a valid entry under an entry key is an entry: PURGE takes it.
    set(&mut c, &["/src", "payload", "TAGS", "1", "copied"]);
    let raw: Vec<u8> = q(&mut c, &["GET", &key_of("/src")]);
    assert_eq!(cmd("SET").arg(key_of("/f/c")).arg(&raw).query::<String>(&mut c).unwrap(), "OK");
    assert_index_exact(&mut c, &[0], "after SET of an entry value");
    assert_eq!(get(&mut c, &["/f/c"]).unwrap(), b"payload");
    assert_eq!(q::<i64>(&mut c, &["RCACHE.PURGETAG", "copied"]), 2, "its tags are indexed too");
    // Overwriting the foreign key with RCACHE.SET makes it an entry again.
    set(&mut c, &["/f/a", "v2"]);
    assert_eq!(q::<i64>(&mut c, &["RCACHE.PURGE", "/f"]), 1);
    assert_eq!(get(&mut c, &["/f/a"]), None);
    assert_index_exact(&mut c, &[0], "end");
}

#[test]
fn other_writes_to_entry_keys_are_followed() {
    let s = Server::start();
    let mut c = s.conn();
    set(&mut c, &["/w/append", "v"]);
    set(&mut c, &["/w/list", "v"]);
    set(&mut c, &["/w/setrange", "v"]);
    // APPEND keeps the layout (the value grows); a list replacing the key is no entry.
    q::<i64>(&mut c, &["APPEND", &key_of("/w/append"), "++"]);
    q::<i64>(&mut c, &["DEL", &key_of("/w/list")]);
    q::<i64>(&mut c, &["RPUSH", &key_of("/w/list"), "x"]);
    q::<i64>(&mut c, &["SETRANGE", &key_of("/w/setrange"), "0", "XXXX"]);
    assert_eq!(get(&mut c, &["/w/append"]).unwrap(), b"v++");
    assert_index_exact(&mut c, &[0], "after APPEND/RPUSH/SETRANGE");
    assert_eq!(listed(&mut c, "/"), vec!["/w/append"]);
    // The list and the broken string are not entries: PURGE leaves them.
    assert_eq!(q::<i64>(&mut c, &["RCACHE.PURGE", "/w"]), 1);
    assert_eq!(q::<i64>(&mut c, &["EXISTS", &key_of("/w/list"), &key_of("/w/setrange")]), 2);
    assert_eq!(removals(&mut c), (0, 0, 2), "DEL of /w/list and SETRANGE breaking /w/setrange");
}

#[test]
fn more_user_writes_to_entry_keys() {
    let s = Server::start();
    let mut c = s.conn();
    for p in ["/u/expire0", "/u/persist", "/u/mset", "/u/store", "/u/setex"] {
        set(&mut c, &[p, "v", "EX", "100"]);
    }
    let raw: Vec<u8> = q(&mut c, &["GET", &key_of("/u/persist")]);
    // EXPIRE in the past deletes; PERSIST keeps the entry; MSET / SETEX write values;
    // a set-store command replaces the string with a set.
    assert_eq!(q::<i64>(&mut c, &["EXPIRE", &key_of("/u/expire0"), "0"]), 1);
    assert_eq!(q::<i64>(&mut c, &["PERSIST", &key_of("/u/persist")]), 1);
    cmd("MSET").arg(key_of("/u/mset")).arg("foreign").arg(key_of("/u/mset-new")).arg(&raw).query::<()>(&mut c).unwrap();
    q::<i64>(&mut c, &["SADD", "someset", "m"]);
    q::<i64>(&mut c, &["SUNIONSTORE", &key_of("/u/store"), "someset"]);
    cmd("SETEX").arg(key_of("/u/setex")).arg(100).arg(&raw).query::<()>(&mut c).unwrap();
    assert_index_exact(&mut c, &[0], "after EXPIRE 0 / PERSIST / MSET / SUNIONSTORE / SETEX");
    assert_eq!(listed(&mut c, "/"), vec!["/u/mset-new", "/u/persist", "/u/setex"]);
    assert_eq!(removals(&mut c), (0, 0, 3), "EXPIRE 0, MSET of a foreign value, SUNIONSTORE");
    assert_eq!(q::<i64>(&mut c, &["RCACHE.PURGE", "/u"]), 3);
    assert_eq!(q::<i64>(&mut c, &["EXISTS", &key_of("/u/mset"), &key_of("/u/store")]), 2, "PURGE leaves non-entries");
}

#[test]
fn rename_in_and_out_of_the_rcache_space() {
    let s = Server::start();
    let mut c = s.conn();
    set(&mut c, &["/r/a", "va", "TAGS", "1", "ta"]);
    set(&mut c, &["/r/b", "vb"]);
    set(&mut c, &["/r/c", "vc"]);
    // Out: the entry leaves the index.
    q::<()>(&mut c, &["RENAME", &key_of("/r/a"), "parked"]);
    assert_index_exact(&mut c, &[0], "after RENAME out");
    assert_eq!(removals(&mut c), (0, 0, 1));
    assert_eq!(q::<i64>(&mut c, &["RCACHE.PURGETAG", "ta"]), 0);
    // In, under another path: indexed at the new path, with its tags.
    q::<()>(&mut c, &["RENAME", "parked", &key_of("/r/moved")]);
    assert_index_exact(&mut c, &[0], "after RENAME in");
    assert_eq!(get(&mut c, &["/r/moved"]).unwrap(), b"va");
    assert_eq!(q::<i64>(&mut c, &["RCACHE.PURGETAG", "ta"]), 1);
    // Entry to entry, onto an existing entry (replacing it).
    q::<()>(&mut c, &["RENAME", &key_of("/r/b"), &key_of("/r/c")]);
    assert_index_exact(&mut c, &[0], "after RENAME onto an entry");
    assert_eq!(get(&mut c, &["/r/c"]).unwrap(), b"vb");
    // A foreign key renamed onto an entry key replaces the entry.
    q::<()>(&mut c, &["SET", "junk", "not an entry"]);
    q::<()>(&mut c, &["RENAME", "junk", &key_of("/r/c")]);
    assert_index_exact(&mut c, &[0], "after RENAME of a foreign key onto an entry");
    assert_eq!(listed(&mut c, "/"), Vec::<String>::new());
    // RENAMENX into the space.
    set(&mut c, &["/r/d", "vd"]);
    q::<()>(&mut c, &["RENAME", &key_of("/r/d"), "parked2"]);
    assert_eq!(q::<i64>(&mut c, &["RENAMENX", "parked2", &key_of("/r/e")]), 1);
    assert_eq!(q::<i64>(&mut c, &["RCACHE.PURGE", "/r"]), 1);
    assert_index_exact(&mut c, &[0], "end");
}

#[test]
fn move_and_copy_between_databases() {
    let s = Server::start();
    let mut c = s.conn();
    set(&mut c, &["/m/a", "va", "TAGS", "1", "t"]);
    set(&mut c, &["/m/b", "vb"]);
    assert_eq!(q::<i64>(&mut c, &["MOVE", &key_of("/m/a"), "1"]), 1);
    assert_index_exact(&mut c, &[0, 1], "after MOVE");
    assert_eq!(listed(&mut c, "/"), vec!["/m/b"]);
    assert_eq!(q::<i64>(&mut c, &["RCACHE.PURGETAG", "t"]), 0, "the tag moved with the entry");
    select(&mut c, 1);
    assert_eq!(listed(&mut c, "/"), vec!["/m/a"]);
    assert_eq!(get(&mut c, &["/m/a"]).unwrap(), b"va");
    assert_eq!(q::<i64>(&mut c, &["RCACHE.PURGETAG", "t"]), 1);
    select(&mut c, 0);

    // COPY within the database, to another database, and REPLACE with a foreign value.
    assert_eq!(q::<i64>(&mut c, &["COPY", &key_of("/m/b"), &key_of("/m/copy")]), 1);
    assert_eq!(q::<i64>(&mut c, &["COPY", &key_of("/m/b"), &key_of("/m/b"), "DB", "2"]), 1);
    assert_index_exact(&mut c, &[0, 1, 2], "after COPY");
    assert_eq!(get(&mut c, &["/m/copy"]).unwrap(), b"vb");
    q::<()>(&mut c, &["SET", "junk", "x"]);
    assert_eq!(q::<i64>(&mut c, &["COPY", "junk", &key_of("/m/copy"), "REPLACE"]), 1);
    assert_index_exact(&mut c, &[0, 1, 2], "after COPY REPLACE of a foreign value");
    assert_eq!(q::<i64>(&mut c, &["RCACHE.PURGE", "/m"]), 1);
    select(&mut c, 2);
    assert_eq!(q::<i64>(&mut c, &["RCACHE.PURGE", "/m"]), 1);
    assert_index_exact(&mut c, &[0, 1, 2], "end");
    // MOVE (-1 db index), COPY REPLACE (+1), DEL of nothing else.
    assert_eq!(removals(&mut c), (0, 0, 2));
}

#[test]
fn restore_of_an_entry_and_of_a_foreign_value() {
    let s = Server::start();
    let mut c = s.conn();
    set(&mut c, &["/rs/a", "va", "EX", "100", "TAGS", "1", "t"]);
    let dump: Vec<u8> = q(&mut c, &["DUMP", &key_of("/rs/a")]);
    assert_eq!(q::<i64>(&mut c, &["DEL", &key_of("/rs/a")]), 1);
    assert_eq!(cmd("RESTORE").arg(key_of("/rs/a")).arg(0).arg(&dump).query::<String>(&mut c).unwrap(), "OK");
    assert_eq!(cmd("RESTORE").arg(key_of("/rs/b")).arg(5000).arg(&dump).query::<String>(&mut c).unwrap(), "OK");
    assert_index_exact(&mut c, &[0], "after RESTORE");
    assert_eq!(q::<i64>(&mut c, &["RCACHE.PURGETAG", "t"]), 2);
    // RESTORE REPLACE of a foreign value onto an entry.
    set(&mut c, &["/rs/c", "vc"]);
    q::<()>(&mut c, &["SET", "junk", "x"]);
    let junk: Vec<u8> = q(&mut c, &["DUMP", "junk"]);
    assert_eq!(cmd("RESTORE").arg(key_of("/rs/c")).arg(0).arg(&junk).arg("REPLACE").query::<String>(&mut c).unwrap(), "OK");
    assert_index_exact(&mut c, &[0], "after RESTORE REPLACE");
    assert_eq!(listed(&mut c, "/"), Vec::<String>::new());
    assert_eq!(removals(&mut c), (0, 0, 2));
}

#[test]
fn flushdb_and_flushall_sync_and_async() {
    let s = Server::start();
    let mut c = s.conn();
    let fill_dbs = |c: &mut Connection| {
        for db in 0..3 {
            select(c, db);
            fill(c, &format!("/db{db}"), 10 * (db as usize + 1), 5, &["TAGS", "1", "t"]);
        }
        select(c, 0);
    };
    fill_dbs(&mut c);
    assert_eq!(info_u64(&mut c, "entries"), 60);
    select(&mut c, 1);
    q::<()>(&mut c, &["FLUSHDB"]);
    assert_index_exact(&mut c, &[0, 1, 2], "after FLUSHDB of db 1");
    assert_eq!(removals(&mut c), (0, 0, 20));
    select(&mut c, 2);
    q::<()>(&mut c, &["FLUSHDB", "ASYNC"]);
    assert_index_exact(&mut c, &[0, 1, 2], "after FLUSHDB ASYNC of db 2");
    assert_eq!(removals(&mut c), (0, 0, 50));
    select(&mut c, 0);
    assert_eq!(q::<i64>(&mut c, &["RCACHE.PURGETAG", "t"]), 10, "db 0 untouched");

    fill_dbs(&mut c);
    q::<()>(&mut c, &["FLUSHALL"]);
    assert_eq!(assert_index_exact(&mut c, &[0, 1, 2], "after FLUSHALL"), 0);
    assert_eq!(info_u64(&mut c, "tags"), 0);
    assert_eq!(removals(&mut c), (0, 0, 110));
    fill_dbs(&mut c);
    q::<()>(&mut c, &["FLUSHALL", "ASYNC"]);
    assert_eq!(assert_index_exact(&mut c, &[0, 1, 2], "after FLUSHALL ASYNC"), 0);
    assert_eq!(removals(&mut c), (0, 0, 170));
    // The index is usable afterwards.
    fill_dbs(&mut c);
    assert_index_exact(&mut c, &[0, 1, 2], "refilled");
}

#[test]
fn swapdb_swaps_the_indexes() {
    let s = Server::start();
    let mut c = s.conn();
    set(&mut c, &["/s/zero", "v0", "TAGS", "1", "t0"]);
    select(&mut c, 1);
    set(&mut c, &["/s/one", "v1", "TAGS", "1", "t1"]);
    set(&mut c, &["/s/one/b", "v1"]);
    q::<()>(&mut c, &["SWAPDB", "0", "1"]);
    assert_index_exact(&mut c, &[0, 1], "after SWAPDB");
    assert_eq!(listed(&mut c, "/"), vec!["/s/one", "/s/one/b"]);
    assert_eq!(q::<i64>(&mut c, &["RCACHE.PURGETAG", "t0"]), 0);
    assert_eq!(q::<i64>(&mut c, &["RCACHE.PURGE", "/s"]), 2);
    select(&mut c, 1);
    assert_eq!(q::<i64>(&mut c, &["RCACHE.PURGETAG", "t0"]), 1);
    // With a database that has no index yet.
    select(&mut c, 0);
    set(&mut c, &["/s/again", "v"]);
    q::<()>(&mut c, &["SWAPDB", "0", "5"]);
    assert_index_exact(&mut c, &[0, 1, 5], "after SWAPDB with an empty db");
    select(&mut c, 5);
    assert_eq!(q::<i64>(&mut c, &["RCACHE.PURGE", "/s"]), 1);
    assert_eq!(removals(&mut c), (0, 0, 0));
}

#[test]
fn swapdb_while_a_reread_is_pending() {
    // A user write to an entry key and SWAPDB in one transaction: the key to re-read
    // moves with its database.
    let s = Server::start();
    let mut c = s.conn();
    set(&mut c, &["/src", "payload"]);
    let raw: Vec<u8> = q(&mut c, &["GET", &key_of("/src")]);
    let replies: Vec<String> =
        redis::pipe().atomic().cmd("SET").arg(key_of("/p/new")).arg(&raw).cmd("SWAPDB").arg(0).arg(3).query(&mut c).unwrap();
    assert_eq!(replies, vec!["OK", "OK"]);
    assert_index_exact(&mut c, &[0, 3], "after SET + SWAPDB in MULTI");
    select(&mut c, 3);
    assert_eq!(q::<i64>(&mut c, &["RCACHE.PURGE", "/"]), 2);
}

#[test]
fn databases_are_indexed_separately() {
    let s = Server::start();
    let mut c = s.conn();
    for db in [0, 2, 15] {
        select(&mut c, db);
        set(&mut c, &["/same", &format!("v{db}")]);
        set(&mut c, &[&format!("/only/{db}"), "v"]);
    }
    assert_index_exact(&mut c, &[0, 2, 15], "three dbs");
    select(&mut c, 2);
    assert_eq!(q::<i64>(&mut c, &["RCACHE.PURGE", "/"]), 2);
    assert_eq!(get(&mut c, &["/same"]), None);
    for db in [0, 15] {
        select(&mut c, db);
        assert_eq!(get(&mut c, &["/same"]).unwrap(), format!("v{db}").as_bytes());
        assert_eq!(listed(&mut c, "/"), vec!["/only/".to_string() + &db.to_string(), "/same".into()]);
    }
    assert_index_exact(&mut c, &[0, 2, 15], "after PURGE in db 2");
}

/// Entries (some with tags, queries and a long TTL) in three databases.
fn populate(c: &mut Connection) {
    for db in [0, 1, 7] {
        select(c, db);
        fill(c, &format!("/p{db}/plain"), 30, 20, &[]);
        fill(c, &format!("/p{db}/tagged"), 20, 20, &["EX", "3600", "TAGS", "2", "all", &format!("db{db}")]);
        fill(c, &format!("/p{db}/query"), 10, 20, &["QUERY", "a=1", "VARY", "1", "accept", "x"]);
    }
    select(c, 0);
}

/// After a reload: the index is exact and PURGE / PURGETAG find everything.
fn check_reloaded(c: &mut Connection, what: &str) {
    assert_eq!(assert_index_exact(c, &[0, 1, 7], what), 180, "{what}");
    assert_eq!(info_u64(c, "tags"), 6, "{what}");
    select(c, 1);
    assert_eq!(q::<i64>(c, &["RCACHE.PURGETAG", "db1"]), 20, "{what}");
    assert_eq!(q::<i64>(c, &["RCACHE.PURGE", "/p1"]), 40, "{what}");
    select(c, 7);
    assert_eq!(q::<i64>(c, &["RCACHE.PURGE", "/p7/query", "EXACT"]), 0, "{what}");
    assert_eq!(q::<i64>(c, &["RCACHE.PURGE", "/p7/query"]), 10, "{what}");
    select(c, 0);
    assert_eq!(q::<i64>(c, &["RCACHE.PURGETAG", "all"]), 20, "{what}");
    assert_index_exact(c, &[0, 1, 7], what);
}

#[test]
fn debug_reload() {
    let s = Server::start_with(&["--enable-debug-command", "yes"], &[]);
    let mut c = s.conn();
    populate(&mut c);
    q::<()>(&mut c, &["DEBUG", "RELOAD"]);
    // DEBUG RELOAD empties the dataset (counted like FLUSHALL) and loads it again.
    assert_eq!(removals(&mut c), (0, 0, 180));
    check_reloaded(&mut c, "after DEBUG RELOAD");
}

#[test]
fn restart_from_rdb() {
    let mut s = Server::start();
    let mut c = s.conn();
    populate(&mut c);
    s.restart(true, &[]);
    let mut c = s.conn();
    assert_eq!(removals(&mut c), (0, 0, 0));
    check_reloaded(&mut c, "after restart from RDB");
}

fn restart_from_aof(preamble: &str) {
    let mut s = Server::start_with(&["--appendonly", "yes", "--aof-use-rdb-preamble", preamble], &[]);
    let mut c = s.conn();
    // Half the data goes into the rewritten base file, half into the incremental one.
    for db in [0, 1, 7] {
        select(&mut c, db);
        fill(&mut c, &format!("/p{db}/plain"), 30, 20, &[]);
        fill(&mut c, &format!("/p{db}/tagged"), 20, 20, &["EX", "3600", "TAGS", "2", "all", &format!("db{db}")]);
        // Purged by the incremental file, after the base has been read.
        fill(&mut c, &format!("/p{db}/purged-later"), 5, 20, &["TAGS", "1", "stale"]);
    }
    select(&mut c, 0);
    q::<String>(&mut c, &["BGREWRITEAOF"]);
    assert!(eventually(20, || server_info_u64(&mut s.conn(), "persistence", "aof_rewrite_in_progress") == 0
        && server_info_u64(&mut s.conn(), "persistence", "aof_rewrite_scheduled") == 0));
    for db in [0, 1, 7] {
        select(&mut c, db);
        fill(&mut c, &format!("/p{db}/query"), 10, 20, &["QUERY", "a=1", "VARY", "1", "accept", "x"]);
        // Removed before the restart: must not come back.
        fill(&mut c, &format!("/p{db}/gone"), 5, 20, &[]);
        assert_eq!(q::<i64>(&mut c, &["RCACHE.PURGE", &format!("/p{db}/gone")]), 5);
        set(&mut c, &[&format!("/p{db}/deleted"), "v"]);
        q::<i64>(&mut c, &["DEL", &key_of(&format!("/p{db}/deleted"))]);
        assert_eq!(q::<i64>(&mut c, &["RCACHE.PURGE", &format!("/p{db}/purged-later")]), 5);
    }
    select(&mut c, 0);
    let manifest = std::fs::read_to_string(s.dir.join("appendonlydir/appendonly.aof.manifest")).unwrap();
    let base_name = manifest
        .lines()
        .find(|l| l.ends_with(" type b"))
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap_or_else(|| panic!("no base file in the manifest:\n{manifest}"));
    let base = s.dir.join("appendonlydir").join(base_name);
    let head = std::fs::read(&base).unwrap();
    assert_eq!(head.starts_with(b"REDIS"), preamble == "yes", "base file {} has the wrong format", base.display());
    assert!(head.len() > 1000, "the base file holds the first half of the data");
    s.restart(false, &[]);
    let mut c = s.conn();
    assert_eq!(server_info_u64(&mut c, "persistence", "aof_enabled"), 1);
    check_reloaded(&mut c, &format!("after restart from AOF (preamble {preamble})"));
}

#[test]
fn restart_from_aof_with_rdb_preamble() {
    restart_from_aof("yes");
}

#[test]
fn restart_from_aof_without_rdb_preamble() {
    restart_from_aof("no");
}

/// Item 4: the counters agree with a sequence whose effects are known exactly.
#[test]
fn counters_agree_with_what_happened() {
    let s = Server::start_with(&["--maxmemory-policy", "allkeys-lru"], &[]);
    let mut c = s.conn();
    let i = info(&mut c);
    for field in ["entries", "paths", "index_bytes", "index_removals_expired", "index_removals_evicted", "index_removals_other"] {
        assert!(i.contains_key(field), "INFO rcache lacks {field}: {i:?}");
    }
    assert_eq!(removals(&mut c), (0, 0, 0));
    set(&mut c, &["/c/a", "v"]);
    set(&mut c, &["/c/a", "v", "QUERY", "1"]);
    set(&mut c, &["/c/b", "v"]);
    set(&mut c, &["/c/exp", "v", "PX", "300"]);
    let i = info(&mut c);
    assert_eq!((i["entries"].as_str(), i["paths"].as_str()), ("4", "3"));
    assert!(eventually(10, || info_u64(&mut s.conn(), "entries") == 3));
    q::<i64>(&mut c, &["DEL", &key_of("/c/b")]);
    assert_eq!(removals(&mut c), (1, 0, 1));
    let i = info(&mut c);
    assert_eq!((i["entries"].as_str(), i["paths"].as_str()), ("2", "1"));
    // Module removals are not index_removals: RCACHE.DEL / PURGE count elsewhere.
    set(&mut c, &["/c/d", "v"]);
    assert_eq!(q::<i64>(&mut c, &["RCACHE.DEL", "/c/d"]), 1);
    assert_eq!(q::<i64>(&mut c, &["RCACHE.PURGE", "/c"]), 2);
    assert_eq!(removals(&mut c), (1, 0, 1));
    // Eviction, by hand: every key is evicted once maxmemory is tiny.
    fill(&mut c, "/c/e", 100, 100, &[]);
    q::<()>(&mut c, &["CONFIG", "SET", "maxmemory", "1"]);
    let _ = cmd("PING").query::<String>(&mut c);
    assert!(eventually(10, || q::<i64>(&mut s.conn(), &["DBSIZE"]) == 0));
    q::<()>(&mut c, &["CONFIG", "SET", "maxmemory", "0"]);
    assert_eq!(removals(&mut c), (1, 100, 1));
    let i = info(&mut c);
    assert_eq!((i["entries"].as_str(), i["paths"].as_str()), ("0", "0"));
}
