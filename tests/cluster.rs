//! On a cluster node, entries of one prefix live in several slots (each key is in
//! its path's slot); PURGE and PURGETAG still remove them all, and a hash-tagged site
//! keeps a whole prefix in one slot.

mod common;
use common::*;

#[test]
fn purges_across_slots_on_a_cluster_node() {
    let s = Server::start_with(&["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"], &[]);
    let mut c = s.conn();
    q::<()>(&mut c, &["CLUSTER", "ADDSLOTSRANGE", "0", "16383"]);
    assert!(
        eventually(20, || q::<String>(&mut s.conn(), &["CLUSTER", "INFO"]).contains("cluster_state:ok")),
        "the one-node cluster never came up"
    );
    for (path, tag) in [("/a/1", "t1"), ("/a/2", "t1"), ("/a/3", "t2"), ("/b/1", "t1"), ("{shop}/x", "t2"), ("{shop}/y", "t2")] {
        q::<()>(&mut c, &["RCACHE.SET", path, "v", "TAGS", "1", tag]);
    }
    let slots: std::collections::HashSet<i64> =
        ["/a/1", "/a/2", "/a/3"].iter().map(|p| q::<i64>(&mut c, &["CLUSTER", "KEYSLOT", p])).collect();
    assert_eq!(slots.len(), 3, "the prefix's entries sit in several slots");
    assert_eq!(q::<i64>(&mut c, &["RCACHE.PURGE", "/a"]), 3);
    assert_eq!(q::<i64>(&mut c, &["RCACHE.PURGETAG", "t1"]), 1);
    let tagged: Vec<String> = entry_keys(&mut c);
    let tagged_slots: std::collections::HashSet<i64> = tagged.iter().map(|k| q::<i64>(&mut c, &["CLUSTER", "KEYSLOT", k])).collect();
    assert_eq!(tagged_slots.len(), 1, "a hash-tagged site is one slot: {tagged:?}");
    assert_eq!(q::<i64>(&mut c, &["RCACHE.PURGE", "{shop}/"]), 2);
    assert_eq!(q::<i64>(&mut c, &["DBSIZE"]), 0);
    assert_eq!(info_u64(&mut c, "entries"), 0);
    let i = info(&mut c);
    assert_eq!((i["purged_entries"].as_str(), i["tag_purged_entries"].as_str()), ("5", "1"));
}

// ---- A real cluster: 3 primaries, each command through the node a client routes it to ----

use common::cluster::{q_retrying, Cluster, Router};

/// 6 sections /t/1../t/6, 5 paths each, 2 variants each; section i's entries carry
/// tag `s<i>`, and every entry the tag `all`. 60 entries spread over the primaries.
fn fill(cl: &Cluster) -> Vec<String> {
    let mut paths = Vec::new();
    for i in 1..=6 {
        for j in 1..=5 {
            let path = format!("/t/{i}/p{j}");
            let mut c = cl.conn_for(&path);
            for query in ["", "?v=2"] {
                set(&mut c, &[&path, "v", "GRACE", "100", "QUERY", query, "TAGS", "2", &format!("s{i}"), "all"]);
            }
            paths.push(path);
        }
    }
    paths.sort();
    paths
}

fn total_entries(cl: &Cluster) -> usize {
    cl.assert_indexes_exact()
}

#[test]
fn purges_and_lists_reach_every_primary() {
    let cl = Cluster::start(3, 15000, &[]);
    let paths = fill(&cl);
    let holders: std::collections::HashSet<usize> = paths.iter().map(|p| cl.owner(p)).collect();
    assert_eq!(holders.len(), 3, "the entries sit on every primary");
    assert_eq!(total_entries(&cl), 60);

    // LIST through the prefix's owner: every shard's paths, merged in byte order.
    let root = cl.owner("/");
    let all: Vec<String> = q(&mut cl.nodes[root].conn(), &["RCACHE.LIST", "/", "COUNT", "1000"]);
    assert_eq!(all, paths);
    // Paging with AFTER across shards gives the same list, page by page.
    let mut paged: Vec<String> = Vec::new();
    loop {
        let mut words = vec!["RCACHE.LIST", "/", "COUNT", "7"];
        let after = paged.last().cloned();
        if let Some(a) = after.as_deref() {
            words.extend(["AFTER", a]);
        }
        let page: Vec<String> = q(&mut cl.nodes[root].conn(), &words);
        assert!(page.len() <= 7);
        if page.is_empty() {
            break;
        }
        paged.extend(page);
    }
    assert_eq!(paged, paths);
    // Another node answers MOVED, as for any keyed command.
    let other = (root + 1) % 3;
    assert!(q_err(&mut cl.nodes[other].conn(), &["RCACHE.LIST", "/"]).starts_with("MOVED"));

    // PURGE through the prefix's owner removes the section on every primary.
    let owner = cl.owner("/t/5");
    assert_eq!(q::<i64>(&mut cl.nodes[owner].conn(), &["RCACHE.PURGE", "/t/5"]), 10);
    assert!(q_err(&mut cl.nodes[(owner + 1) % 3].conn(), &["RCACHE.PURGE", "/t/5"]).starts_with("MOVED"));
    for p in paths.iter().filter(|p| p.starts_with("/t/5/")) {
        assert_eq!(get(&mut cl.conn_for(p), &[p]), None, "{p} was purged");
    }
    assert_eq!(total_entries(&cl), 50);
    assert_eq!(info_u64(&mut cl.nodes[owner].conn(), "purges"), 1, "the command counts once, where it was taken");
    let removed: u64 = (0..3).map(|i| info_u64(&mut cl.nodes[i].conn(), "purged_entries")).sum();
    assert_eq!(removed, 10, "each primary counts the entries it removed");

    // SOFTPURGE: the section's entries turn stale everywhere (they have grace).
    let owner = cl.owner("/t/4");
    assert_eq!(q::<i64>(&mut cl.nodes[owner].conn(), &["RCACHE.SOFTPURGE", "/t/4"]), 10);
    for p in paths.iter().filter(|p| p.starts_with("/t/4/")) {
        let mut c = cl.conn_for(p);
        assert_eq!(get(&mut c, &[p]), None, "a soft-purged entry is not served by GET");
        let state: Vec<Value> = q(&mut c, &["RCACHE.LOOKUP", p]);
        assert_eq!(state.first(), Some(&Value::SimpleString("STALE".into())), "{p}");
    }
    assert_eq!(q::<i64>(&mut cl.nodes[owner].conn(), &["RCACHE.SOFTPURGE", "/t/4"]), 0, "already stale");
    assert_eq!(total_entries(&cl), 50);

    // Tag purges (keyless) from every primary: each removes the tag everywhere.
    for (node, section) in [(0, 1), (1, 2), (2, 3)] {
        assert_eq!(q::<i64>(&mut cl.nodes[node].conn(), &["RCACHE.PURGETAG", &format!("s{section}")]), 10, "from node {node}");
    }
    assert_eq!(total_entries(&cl), 20);
    assert_eq!(q::<i64>(&mut cl.nodes[1].conn(), &["RCACHE.SOFTPURGETAG", "s6"]), 10);
    assert_eq!(q::<i64>(&mut cl.nodes[2].conn(), &["RCACHE.PURGETAG", "all"]), 20);
    assert_eq!(total_entries(&cl), 0);
    let left: Vec<String> = q(&mut cl.nodes[root].conn(), &["RCACHE.LIST", "/"]);
    assert!(left.is_empty(), "{left:?}");
    for i in 0..3 {
        let mut c = cl.nodes[i].conn();
        assert_eq!(q::<i64>(&mut c, &["DBSIZE"]), 0, "node {i}");
    }
}

#[test]
fn a_hash_tagged_site_is_purged_in_its_one_slot_and_noperm_is_decided_everywhere_first() {
    let cl = Cluster::start(3, 15000, &[]);
    // A hash-tagged site: its paths, entries and prefixes all live on one node.
    let site = cl.owner("{shop}/");
    for j in 0..5 {
        set(&mut cl.nodes[site].conn(), &[&format!("{{shop}}/p/{j}"), "v"]);
    }
    assert_eq!(q::<i64>(&mut cl.nodes[site].conn(), &["DBSIZE"]), 5);
    let listed: Vec<String> = q(&mut cl.nodes[site].conn(), &["RCACHE.LIST", "{shop}/p"]);
    assert_eq!(listed.len(), 5);
    assert_eq!(q::<i64>(&mut cl.nodes[site].conn(), &["RCACHE.PURGE", "{shop}/p/1"]), 1);
    assert_eq!(q::<i64>(&mut cl.nodes[site].conn(), &["RCACHE.PURGE", "{shop}/"]), 4);

    // A user who may write only /public/*, defined on every node (ACLs are per node).
    for node in &cl.nodes {
        q::<()>(&mut node.conn(), &["ACL", "SETUSER", "web", "on", ">pw", "~/public/*", "+@all"]);
    }
    let mut paths = Vec::new();
    for j in 0..12 {
        let path = format!("/public/{j}");
        set(&mut cl.conn_for(&path), &[&path, "v", "TAGS", "1", "page"]);
        paths.push(path);
    }
    let private = "/private/x";
    set(&mut cl.conn_for(private), &[private, "v", "TAGS", "1", "page"]);
    // Take the tag purge on a node that does not hold the private entry: the NOPERM
    // comes from another shard, and no shard removes anything.
    let taker = (cl.owner(private) + 1) % 3;
    let mut web = cl.nodes[taker].conn();
    q::<()>(&mut web, &["AUTH", "web", "pw"]);
    assert!(q_err(&mut web, &["RCACHE.PURGETAG", "page"]).starts_with("NOPERM"));
    assert_eq!(total_entries(&cl), 13, "nothing was touched anywhere");
    // Allowed everywhere: removed everywhere.
    let owner = cl.owner("/public/");
    let mut web = cl.nodes[owner].conn();
    q::<()>(&mut web, &["AUTH", "web", "pw"]);
    assert_eq!(q::<i64>(&mut web, &["RCACHE.PURGE", "/public/"]), 12);
    assert_eq!(total_entries(&cl), 1);
}

#[test]
fn a_stopped_primary_means_tryagain_within_the_timeout_and_a_retry_succeeds() {
    // A long node timeout: the stopped node stays a member (PFAIL at most) meanwhile.
    let cl = Cluster::start(3, 30000, &["cluster-timeout", "1000"]);
    let paths = fill(&cl);
    let stopped = cl.owner(&paths[0]);
    let taker = (stopped + 1) % 3;
    let lister = cl.owner("/");
    // (No routing questions while it is stopped: they would wait for it.)
    cl.nodes[stopped].signal("STOP");
    let started = std::time::Instant::now();
    let err = q_err(&mut cl.nodes[taker].conn(), &["RCACHE.PURGETAG", "all"]);
    let took = started.elapsed();
    assert!(err.starts_with("TRYAGAIN only 2 of 3 cluster primaries answered"), "{err}");
    assert!(err.contains("nothing was purged"), "{err}");
    assert!(took >= std::time::Duration::from_millis(900) && took < std::time::Duration::from_secs(10), "{took:?}");
    if lister != stopped {
        let listed = q_err(&mut cl.nodes[lister].conn(), &["RCACHE.LIST", "/"]);
        assert!(listed.starts_with("TRYAGAIN only 2 of 3"), "{listed}");
    }
    cl.nodes[stopped].signal("CONT");
    cl.wait_stable();
    // The request the stopped node got late is past its deadline: it did nothing.
    assert_eq!(total_entries(&cl), 60);
    assert_eq!(q::<i64>(&mut cl.nodes[taker].conn(), &["RCACHE.PURGETAG", "all"]), 60);
    assert_eq!(total_entries(&cl), 0);
}

/// A slot full of entries moves by hand (SETSLOT IMPORTING / MIGRATING, MIGRATE in
/// batches, SETSLOT NODE) while a writer keeps storing entries in it and a purger
/// keeps purging them and reading them back, both through a cluster client that
/// follows ASK and retries TRYAGAIN.
#[test]
fn a_slot_moves_under_a_writer_and_a_purger() {
    use std::collections::HashMap;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, Instant};

    let cl = Cluster::start(3, 15000, &[]);
    let slot: i64 = q(&mut cl.nodes[0].conn(), &["CLUSTER", "KEYSLOT", "{site}"]);
    let from = cl.owner_of_slot(slot);
    let to = (from + 1) % 3;
    let (from_id, to_id) = (cl.id(from), cl.id(to));
    const PATHS: usize = 400;
    // When each value's SET returned (None while it is in flight): a value stored
    // before a purge was taken must never be read after that purge returned.
    let stored: Arc<Mutex<HashMap<String, Option<Instant>>>> = Default::default();
    {
        let mut c = cl.nodes[from].conn();
        for i in 0..PATHS {
            for v in 0..3 {
                let value = format!("init-{i}-{v}");
                set(&mut c, &[&format!("{{site}}/p/{i}"), &value, "QUERY", &format!("v={v}")]);
                stored.lock().unwrap().insert(value, Some(Instant::now()));
            }
        }
        // Entries elsewhere, which the move must leave alone.
        for i in 0..50 {
            set(&mut cl.conn_for(&format!("/other/{i}")), &[&format!("/other/{i}"), "v"]);
        }
    }
    let stop = Arc::new(AtomicBool::new(false));
    let start_port = cl.nodes[0].port;

    let writer = {
        let (stop, stored) = (stop.clone(), stored.clone());
        std::thread::spawn(move || {
            let mut r = Router::new(start_port);
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let value = format!("w{n}");
                let path = format!("{{site}}/p/{}", n as usize % PATHS);
                stored.lock().unwrap().insert(value.clone(), None);
                let reply: String = r.run(&["RCACHE.SET", &path, &value, "QUERY", &format!("v={}", n % 3)]).expect("SET");
                assert_eq!(reply, "OK");
                stored.lock().unwrap().insert(value, Some(Instant::now()));
            }
            (n, r.tryagains)
        })
    };
    let purger = {
        let (stop, stored) = (stop.clone(), stored.clone());
        std::thread::spawn(move || {
            let mut r = Router::new(start_port);
            let (mut purges, mut reads, mut violations) = (0u64, 0u64, Vec::new());
            while !stop.load(Ordering::Relaxed) {
                // One path at a time, so the rest of the slot stays to be moved.
                let path = format!("{{site}}/p/{}", (purges as usize * 37) % PATHS);
                let taken = Instant::now();
                let _: i64 = r.run(&["RCACHE.PURGE", &path]).expect("PURGE");
                purges += 1;
                for v in 0..3 {
                    let got: Option<String> = r.run(&["RCACHE.GET", &path, "QUERY", &format!("v={v}")]).expect("GET");
                    reads += 1;
                    if let Some(value) = got {
                        let at = stored.lock().unwrap().get(&value).copied();
                        let Some(at) = at else { panic!("{path}: {value} was never stored") };
                        if at.is_some_and(|at| at < taken) {
                            violations.push(format!("{path}: {value} was stored before purge {purges}"));
                        }
                    }
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            (purges, reads, violations, r.tryagains)
        })
    };

    // Move the slot by hand, in small batches, slowly enough for both to race it.
    let mut to_conn = cl.nodes[to].conn();
    let mut from_conn = cl.nodes[from].conn();
    q::<()>(&mut to_conn, &["CLUSTER", "SETSLOT", &slot.to_string(), "IMPORTING", &from_id]);
    q::<()>(&mut from_conn, &["CLUSTER", "SETSLOT", &slot.to_string(), "MIGRATING", &to_id]);
    let mut moved = 0;
    loop {
        let keys: Vec<String> = q(&mut from_conn, &["CLUSTER", "GETKEYSINSLOT", &slot.to_string(), "5"]);
        if keys.is_empty() {
            break;
        }
        let port = cl.nodes[to].port.to_string();
        let mut words = vec!["MIGRATE", "127.0.0.1", &port, "", "0", "5000", "KEYS"];
        words.extend(keys.iter().map(String::as_str));
        let reply: String = q(&mut from_conn, &words); // a BUSYKEY here fails the test
        assert!(reply == "OK" || reply == "NOKEY", "{reply}");
        moved += keys.len();
        std::thread::sleep(Duration::from_millis(10));
    }
    for node in &cl.nodes {
        q::<()>(&mut node.conn(), &["CLUSTER", "SETSLOT", &slot.to_string(), "NODE", &to_id]);
    }
    std::thread::sleep(Duration::from_millis(1500));
    stop.store(true, Ordering::Relaxed);
    let (writes, writer_tryagains) = writer.join().expect("writer");
    let (purges, reads, violations, purger_tryagains) = purger.join().expect("purger");
    assert!(writer_tryagains > 0, "the writer met the move");
    eprintln!("moved {moved} keys; {writes} SETs ({writer_tryagains} TRYAGAIN), {purges} purges, {reads} GETs ({purger_tryagains} TRYAGAIN)");
    assert!(violations.is_empty(), "purged entries were served: {violations:?}");
    assert!(moved > 300 && purges > 20, "the move and the purges raced: {moved} keys, {purges} purges");

    // Afterwards every node's index matches its keys; the slot lives on `to` only.
    cl.wait_stable();
    cl.assert_indexes_exact();
    assert_eq!(q::<i64>(&mut cl.nodes[from].conn(), &["CLUSTER", "COUNTKEYSINSLOT", &slot.to_string()]), 0);
    let keys_there: i64 = q(&mut cl.nodes[to].conn(), &["CLUSTER", "COUNTKEYSINSLOT", &slot.to_string()]);
    let removed: i64 = q(&mut cl.nodes[to].conn(), &["RCACHE.PURGE", "{site}/"]);
    assert_eq!(removed, keys_there);
    let others: Vec<String> = q(&mut cl.nodes[cl.owner("/other")].conn(), &["RCACHE.LIST", "/other", "COUNT", "1000"]);
    assert_eq!(others.len(), 50);
    assert_eq!(cl.assert_indexes_exact(), 50);
}

/// The race a purge must win: the primary that takes a tag purge runs its own part
/// (a long one: many entries), and meanwhile another primary MIGRATEs covered entries
/// to it one by one. Those arrive after its part ran and before the other primary
/// runs its own; they must still be removed.
#[test]
fn entries_migrated_while_a_purge_runs_are_still_purged() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    let cl = Cluster::start(3, 15000, &["cluster-timeout", "30000"]);
    let slot: i64 = q(&mut cl.nodes[0].conn(), &["CLUSTER", "KEYSLOT", "{x}"]);
    let from = cl.owner_of_slot(slot);
    let to = (from + 1) % 3;
    // The taker's long part: many entries in a slot it owns.
    let bulk_tag = (0..).map(|i| format!("b{i}")).find(|t| cl.owner(t) == to).expect("a tag on `to`");
    let mut c = cl.nodes[to].conn();
    let mut pipe = redis::pipe();
    for i in 0..60_000 {
        pipe.cmd("RCACHE.SET").arg(format!("{{{bulk_tag}}}/bulk/{i}")).arg("v").arg("TAGS").arg(1).arg("t").ignore();
    }
    pipe.query::<()>(&mut c).expect("bulk SETs");
    // The moving entries, on `from`.
    let mut f = cl.nodes[from].conn();
    for i in 0..300 {
        set(&mut f, &[&format!("{{x}}/m/{i}"), "v", "TAGS", "1", "t"]);
    }
    let (from_id, to_id, to_port) = (cl.id(from), cl.id(to), cl.nodes[to].port.to_string());
    q::<()>(&mut c, &["CLUSTER", "SETSLOT", &slot.to_string(), "IMPORTING", &from_id]);
    q::<()>(&mut f, &["CLUSTER", "SETSLOT", &slot.to_string(), "MIGRATING", &to_id]);
    let done = Arc::new(AtomicBool::new(false));
    let mover = {
        let (done, mut f, slot) = (done.clone(), cl.nodes[from].conn(), slot.to_string());
        std::thread::spawn(move || {
            let mut moved = 0;
            while !done.load(Ordering::Relaxed) {
                let keys: Vec<String> = q(&mut f, &["CLUSTER", "GETKEYSINSLOT", &slot, "1"]);
                let Some(key) = keys.first() else { break };
                let reply: String = q(&mut f, &["MIGRATE", "127.0.0.1", &to_port, key, "0", "5000"]);
                assert!(reply == "OK" || reply == "NOKEY", "{reply}");
                moved += 1;
                std::thread::sleep(Duration::from_millis(1));
            }
            moved
        })
    };
    std::thread::sleep(Duration::from_millis(20));
    let removed: i64 = q(&mut c, &["RCACHE.PURGETAG", "t"]);
    done.store(true, Ordering::Relaxed);
    let moved = mover.join().expect("mover");
    assert!(moved > 0 && moved < 300, "the purge ran while entries moved ({moved} moved)");
    assert!(removed >= 60_000, "{removed}");
    // Whatever landed on `to` after its part ran is hidden on its re-read, before any
    // command can see it (with ASKING, as `to` does not own the slot yet), and removed
    // by the background work of the purge's parts.
    for i in 0..300 {
        for node in [&mut c, &mut f] {
            q::<()>(node, &["ASKING"]);
            let got: redis::RedisResult<Option<String>> = redis::cmd("RCACHE.GET").arg(format!("{{x}}/m/{i}")).query(node);
            assert!(!matches!(got, Ok(Some(_))), "{{x}}/m/{i} served after the purge");
        }
    }
    assert!(eventually(30, || (0..3).all(|n| info_u64(&mut cl.nodes[n].conn(), "purge_pending") == 0)), "background work left");
    let left_to: Vec<String> = q(&mut c, &["KEYS", "rcache:~{x}*"]);
    let left_from: Vec<String> = q(&mut f, &["KEYS", "rcache:~{x}*"]);
    assert!(left_to.is_empty() && left_from.is_empty(), "purged entries survived: {} on `to`, {} on `from`", left_to.len(), left_from.len());
    cl.assert_indexes_exact();
}

/// A replica taken over with CLUSTER FAILOVER, then that new primary killed so its
/// replica (the old primary) takes over: purges from any node are complete again, and
/// every node's index matches its keys.
#[test]
fn failover_by_command_and_by_a_killed_primary() {
    let mut cl = Cluster::start(3, 3000, &["cluster-timeout", "2000"]);
    let paths = fill(&cl);
    let first = cl.owner(&paths[0]);
    let replica = cl.add_replica(first, 3000, &["cluster-timeout", "2000"]);
    let replicated = |cl: &Cluster, node: usize| {
        let mut c = cl.nodes[node].conn();
        entry_keys(&mut c).len() == info_u64(&mut c, "entries") as usize
    };
    assert!(eventually(30, || replicated(&cl, replica)), "the replica's index follows its keys");

    // 1. A manual failover: the replica becomes the primary of those slots.
    q::<()>(&mut cl.nodes[replica].conn(), &["CLUSTER", "FAILOVER"]);
    assert!(eventually(60, || cl.primaries().contains(&replica)), "the replica never took over");
    cl.wait_stable();
    assert!(eventually(30, || cl.owner(&paths[0]) == replica), "every node learns the new owner");
    let owner = cl.owner("/t/5");
    // Until every node has heard of the failover, a purge may answer TRYAGAIN.
    assert_eq!(q_retrying::<i64>(&cl, owner, &["RCACHE.PURGE", "/t/5"]), 10);
    assert_eq!(cl.assert_indexes_exact(), 50);
    assert!(eventually(30, || replicated(&cl, first)), "the demoted primary's index follows its keys");
    // The purge parts run from bus messages reach the replica too (and its index).
    let keys = |node: usize| entry_keys(&mut cl.nodes[node].conn());
    assert!(eventually(30, || keys(first) == keys(replica)), "the replica applied the purge");

    // 2. The new primary dies; its replica (the old primary) is promoted by the cluster.
    cl.nodes.remove(replica); // killed on drop
    assert!(eventually(60, || cl.primaries().contains(&first)), "the old primary was not promoted back");
    cl.wait_stable();
    assert!(eventually(30, || cl.owner(&paths[0]) == first), "every node learns the new owner");
    for (node, tag) in [(0, "s1"), (1, "s2"), (2, "s3")] {
        assert_eq!(q_retrying::<i64>(&cl, node, &["RCACHE.PURGETAG", tag]), 10, "from node {node}");
    }
    assert_eq!(cl.assert_indexes_exact(), 20);
    let root = cl.owner("/");
    let listed: Vec<String> = q(&mut cl.nodes[root].conn(), &["RCACHE.LIST", "/", "COUNT", "100"]);
    assert_eq!(listed.len(), 10, "5 paths of /t/4 and 5 of /t/6 remain");
}

/// Moves `slot` from node `from` to node `to` by hand, `batch` keys per MIGRATE, as
/// `redis-cli --cluster reshard` does, and assigns it to `to` everywhere; `between`
/// runs after each MIGRATE (with the keys it was given: those a pending purge hides stay
/// behind until removed). Returns how many keys it gave MIGRATE. A BUSYKEY (or any
/// error) fails the test.
fn move_slot(cl: &Cluster, slot: i64, from: usize, to: usize, batch: usize, mut between: impl FnMut(&[String])) -> usize {
    let (from_id, to_id, slot, port) = (cl.id(from), cl.id(to), slot.to_string(), cl.nodes[to].port.to_string());
    let (mut f, mut t) = (cl.nodes[from].conn(), cl.nodes[to].conn());
    q::<()>(&mut t, &["CLUSTER", "SETSLOT", &slot, "IMPORTING", &from_id]);
    q::<()>(&mut f, &["CLUSTER", "SETSLOT", &slot, "MIGRATING", &to_id]);
    let mut moved = 0;
    loop {
        let keys: Vec<String> = q(&mut f, &["CLUSTER", "GETKEYSINSLOT", &slot, &batch.to_string()]);
        if keys.is_empty() {
            break;
        }
        let mut words = vec!["MIGRATE", "127.0.0.1", &port, "", "0", "5000", "KEYS"];
        words.extend(keys.iter().map(String::as_str));
        let reply: String = q(&mut f, &words);
        assert!(reply == "OK" || reply == "NOKEY", "{reply}");
        moved += keys.len();
        between(&keys);
    }
    for node in &cl.nodes {
        q::<()>(&mut node.conn(), &["CLUSTER", "SETSLOT", &slot, "NODE", &to_id]);
    }
    moved
}

fn record_keys(cl: &Cluster) -> Vec<String> {
    let on = |n: usize| q::<Vec<String>>(&mut cl.nodes[n].conn(), &["KEYS", "rcache:#purge:*"]).into_iter().map(move |k| format!("node {n}: {k}"));
    (0..cl.nodes.len()).flat_map(on).collect()
}

/// A background purge whose slot, or whose record's slot, is resharded while it runs:
/// - a purge of a hash-tagged prefix: the entries it hides stay behind until removed
///   (MIGRATE leaves them out), so nothing purged is served on the importing node,
///   during or after, and the move completes once the purge is done;
/// - the record of a purge of several slots whose slot moves away is written again in a
///   slot that stays (no BUSYKEY when the move meets it twice), and the copy that moved
///   is dropped.
///
/// Afterwards no record key is left anywhere and every index matches its keys.
#[test]
fn background_purges_carry_on_while_slots_move() {
    // A short cluster-timeout ends the cluster-wide purge records early (phase 3).
    let cl = Cluster::start(3, 15000, &["purge-slice-us", "100", "cluster-timeout", "100"]);
    let slot: i64 = q(&mut cl.nodes[0].conn(), &["CLUSTER", "KEYSLOT", "{bg}"]);
    let from = cl.owner_of_slot(slot);
    let to = (from + 1) % 3;
    let mut f = cl.nodes[from].conn();
    let mut pipe = redis::pipe();
    for i in 0..20_000 {
        pipe.cmd("RCACHE.SET").arg(format!("{{bg}}/p/{i}")).arg("v").ignore();
    }
    for i in 0..300 {
        pipe.cmd("RCACHE.SET").arg(format!("{{bg}}/keep/{i}")).arg("v").ignore();
    }
    pipe.query::<()>(&mut f).expect("SETs");
    assert_eq!(q::<i64>(&mut f, &["RCACHE.PURGE", "{bg}/p/"]), 20_000);
    assert!(info_u64(&mut f, "purge_pending") > 0, "the purge went to the background");
    let records = record_keys(&cl);
    assert_eq!(records.len(), 1, "{records:?}");
    let record: Vec<String> = q(&mut f, &["KEYS", "rcache:#purge:*"]);
    assert_eq!(q::<i64>(&mut f, &["CLUSTER", "KEYSLOT", &record[0]]), slot, "the record lives in the prefix's slot");

    // Purged entries that moved while the purge ran, and reads of them on `to`.
    let (mut moved_purged, mut served, mut read) = (0, Vec::new(), 0);
    let mut t = cl.nodes[to].conn();
    let moved = move_slot(&cl, slot, from, to, 100, |keys| {
        moved_purged += keys.iter().filter(|k| k.contains("{bg}/p/")).count();
        for k in keys.iter().filter(|k| k.contains("{bg}/p/")).take(3) {
            // `rcache:~<path>:-:-` (no query, no vary).
            let path = k.strip_prefix("rcache:~").and_then(|rest| rest.strip_suffix(":-:-")).expect("an entry key");
            q::<()>(&mut t, &["ASKING"]);
            let got: redis::RedisResult<Option<String>> = redis::cmd("RCACHE.GET").arg(path).query(&mut t);
            read += 1;
            if let Ok(Some(v)) = got {
                served.push(format!("{path} = {v}"));
            }
        }
    });
    eprintln!("gave MIGRATE {moved} keys (node {from} to node {to}), {moved_purged} of them hidden by the purge; {read} reads of them there");
    assert!(moved_purged > 0 && read > 0, "the move raced the purge: no purged entry was still there to move");
    assert!(served.is_empty(), "purged entries served on the importing node: {served:?}");
    cl.wait_stable();
    assert!(eventually(30, || record_keys(&cl).is_empty()), "records left: {:?}", record_keys(&cl));
    let listed: Vec<String> = q(&mut t, &["RCACHE.LIST", "{bg}/", "COUNT", "1000"]);
    assert_eq!(listed.len(), 300, "only the entries the purge did not cover are left");
    assert!(listed.iter().all(|p| p.starts_with("{bg}/keep/")));
    assert!(q::<Vec<String>>(&mut t, &["KEYS", "rcache:~{bg}/p/*"]).is_empty());
    cl.assert_indexes_exact();

    // A purge of several slots: each primary's record is in a slot of its own.
    let mut by_node: Vec<redis::Pipeline> = (0..3).map(|_| redis::pipe()).collect();
    for i in 0..30_000 {
        let path = format!("/m/{i}");
        by_node[cl.owner(&path)].cmd("RCACHE.SET").arg(&path).arg("v").ignore();
    }
    for (n, p) in by_node.iter().enumerate() {
        p.query::<()>(&mut cl.nodes[n].conn()).expect("SETs");
    }
    let (x, mut c) = (cl.owner("/m/"), cl.conn_for("/m/"));
    assert_eq!(q::<i64>(&mut c, &["RCACHE.PURGE", "/m/"]), 30_000);
    let record: Vec<String> = q(&mut c, &["KEYS", "rcache:#purge:*"]);
    assert_eq!(record.len(), 1, "{record:?}");
    let record_slot: i64 = q(&mut c, &["CLUSTER", "KEYSLOT", &record[0]]);
    assert!(info_u64(&mut c, "purge_pending") > 0, "still running when its record's slot moves");
    move_slot(&cl, record_slot, x, (x + 1) % 3, 10, |_| {});
    cl.wait_stable();
    assert!(eventually(30, || record_keys(&cl).is_empty()), "records left: {:?}", record_keys(&cl));
    for n in 0..3 {
        assert!(q::<Vec<String>>(&mut cl.nodes[n].conn(), &["KEYS", "rcache:{/m/*"]).is_empty(), "node {n} kept purged entries");
    }
    cl.assert_indexes_exact();

    // A primary's part of a cluster-wide purge still running after the purge's deadline
    // (when the other primaries forget it), with entries it hides in a slot that moves
    // away: they stay behind until removed.
    let x = cl.owner("/n/");
    let (y, mut c) = ((x + 1) % 3, cl.nodes[x].conn());
    let tags_on_x: Vec<String> = (0..).map(|i| format!("s{i}")).filter(|t| cl.owner(t) == x).take(2).collect();
    let (bulk, moving) = (&tags_on_x[0], &tags_on_x[1]);
    let mut pipe = redis::pipe();
    for i in 0..150_000 {
        pipe.cmd("RCACHE.SET").arg(format!("/n/a/{{{bulk}}}/{i}")).arg("v").ignore();
    }
    for i in 0..200 {
        // After the bulk in the index's order, so removed last.
        pipe.cmd("RCACHE.SET").arg(format!("/n/z/{{{moving}}}/{i}")).arg("v").ignore();
    }
    pipe.query::<()>(&mut c).expect("SETs");
    assert_eq!(q::<i64>(&mut c, &["RCACHE.PURGE", "/n/"]), 150_200);
    std::thread::sleep(std::time::Duration::from_millis(1300));
    let moving_slot: i64 = q(&mut c, &["CLUSTER", "KEYSLOT", moving]);
    let still_there = q::<i64>(&mut c, &["CLUSTER", "COUNTKEYSINSLOT", &moving_slot.to_string()]);
    assert!(still_there >= 200 && info_u64(&mut c, "purge_pending") > 0, "the part outlived the purge's deadline ({still_there} keys left)");
    let mut yc = cl.nodes[y].conn();
    let mut served = Vec::new();
    move_slot(&cl, moving_slot, x, y, 20, |keys| {
        for k in keys.iter().filter(|k| k.starts_with("rcache:~/n/z/")).take(2) {
            let path = k.strip_prefix("rcache:~").and_then(|rest| rest.strip_suffix(":-:-")).expect("an entry key");
            q::<()>(&mut yc, &["ASKING"]);
            if let Ok(Some(v)) = redis::cmd("RCACHE.GET").arg(path).query::<Option<String>>(&mut yc) {
                served.push(format!("{path} = {v}"));
            }
        }
    });
    assert!(served.is_empty(), "purged entries served on the importing node: {served:?}");
    cl.wait_stable();
    assert!(eventually(30, || record_keys(&cl).is_empty()), "records left: {:?}", record_keys(&cl));
    for n in 0..3 {
        assert!(q::<Vec<String>>(&mut cl.nodes[n].conn(), &["KEYS", "rcache:~/n/*"]).is_empty(), "node {n} kept purged entries");
    }
    cl.assert_indexes_exact();
}

/// Entries a background purge hides never leave with MIGRATE, even one that runs in the
/// same instant as `SETSLOT MIGRATING`, before the purge's next slice: the node keeps
/// them until the purge deletes them, and the keys it did not hide move as usual.
#[test]
fn migrate_leaves_the_entries_a_pending_purge_hides_behind() {
    let cl = Cluster::start(3, 15000, &["purge-slice-us", "100"]);
    let slot: i64 = q(&mut cl.nodes[0].conn(), &["CLUSTER", "KEYSLOT", "{mv}"]);
    let from = cl.owner_of_slot(slot);
    let to = (from + 1) % 3;
    let mut f = cl.nodes[from].conn();
    let mut pipe = redis::pipe();
    let purged: Vec<String> = (0..20_000).map(|i| format!("{{mv}}/p/{i}")).collect();
    let kept: Vec<String> = (0..5).map(|i| format!("{{mv}}/keep/{i}")).collect();
    for path in purged.iter().chain(&kept) {
        pipe.cmd("RCACHE.SET").arg(path).arg("v").ignore();
    }
    pipe.query::<()>(&mut f).expect("SETs");
    assert_eq!(q::<i64>(&mut f, &["RCACHE.PURGE", "{mv}/p/"]), 20_000);
    assert!(info_u64(&mut f, "purge_pending") > 0, "the purge went to the background");
    // The purge removes in byte order: the last paths are still there for a while.
    let mut last = purged.clone();
    last.sort();
    let hidden: Vec<String> = last[last.len() - 20..].iter().map(|p| q(&mut f, &["RCACHE.KEY", p])).collect();
    let live: Vec<String> = kept.iter().map(|p| q(&mut f, &["RCACHE.KEY", p])).collect();

    let (slot_arg, port) = (slot.to_string(), cl.nodes[to].port.to_string());
    let mut t = cl.nodes[to].conn();
    q::<()>(&mut t, &["CLUSTER", "SETSLOT", &slot_arg, "IMPORTING", &cl.id(from)]);
    let mut tx = redis::pipe();
    tx.atomic().cmd("CLUSTER").arg("SETSLOT").arg(&slot_arg).arg("MIGRATING").arg(cl.id(to));
    tx.cmd("MIGRATE").arg("127.0.0.1").arg(&port).arg("").arg(0).arg(5000).arg("KEYS").arg(&hidden).arg(&live);
    let (_, migrated): (String, String) = tx.query(&mut f).expect("MULTI SETSLOT MIGRATING + MIGRATE");
    assert_eq!(migrated, "OK");
    let there = |c: &mut redis::Connection, key: &str| {
        q::<()>(c, &["ASKING"]);
        q::<i64>(c, &["EXISTS", key]) == 1
    };
    let arrived: Vec<&String> = hidden.iter().filter(|k| there(&mut t, k)).collect();
    assert!(arrived.is_empty(), "entries the purge hides reached the importing node: {arrived:?}");
    assert!(live.iter().all(|k| there(&mut t, k)), "the entries the purge did not cover moved");
    for path in last[last.len() - 20..].iter() {
        q::<()>(&mut t, &["ASKING"]);
        // A miss, or TRYAGAIN while the slot moves: never the entry.
        let got: redis::RedisResult<Option<String>> = redis::cmd("RCACHE.GET").arg(path).query(&mut t);
        assert!(!matches!(got, Ok(Some(_))), "{path} served on the importing node");
    }
    for path in &kept {
        q::<()>(&mut t, &["ASKING"]);
        assert!(get(&mut t, &[path]).is_some(), "{path} moved and is served");
    }

    // The rest of the move waits for the purge, then completes.
    move_slot(&cl, slot, from, to, 100, |_| {});
    cl.wait_stable();
    assert!(eventually(30, || record_keys(&cl).is_empty()), "records left: {:?}", record_keys(&cl));
    let listed: Vec<String> = q(&mut t, &["RCACHE.LIST", "{mv}/"]);
    assert_eq!(listed, kept);
    cl.assert_indexes_exact();
}

/// A node that finds the cluster gave a slot it still holds keys in to another node
/// deletes those keys without a keyspace event (`delKeysInSlot`): the index follows
/// within a few seconds.
#[test]
fn keys_redis_drops_from_a_lost_slot_leave_the_index() {
    let cl = Cluster::start(3, 15000, &[]);
    let slot: i64 = q(&mut cl.nodes[0].conn(), &["CLUSTER", "KEYSLOT", "{lost}"]);
    let a = cl.owner_of_slot(slot);
    let b = (a + 1) % 3;
    let mut c = cl.nodes[a].conn();
    for i in 0..50 {
        set(&mut c, &[&format!("{{lost}}/{i}"), "v", "QUERY", "x=1"]);
    }
    let kept_tag = (0..).map(|i| format!("k{i}")).find(|t| cl.owner(t) == a).expect("a tag on `a`");
    for i in 0..10 {
        set(&mut c, &[&format!("{{{kept_tag}}}/{i}"), "v"]);
    }
    assert_eq!(info_u64(&mut c, "entries"), 60);
    // `b` claims the slot without its keys: importing, then assigning it to itself
    // bumps its epoch, and `a` gives the slot up and drops the keys.
    let mut bc = cl.nodes[b].conn();
    q::<()>(&mut bc, &["CLUSTER", "SETSLOT", &slot.to_string(), "IMPORTING", &cl.id(a)]);
    q::<()>(&mut bc, &["CLUSTER", "SETSLOT", &slot.to_string(), "NODE", &cl.id(b)]);
    assert!(eventually(20, || q::<i64>(&mut c, &["CLUSTER", "COUNTKEYSINSLOT", &slot.to_string()]) == 0), "`a` kept the slot's keys");
    assert_eq!(entry_keys(&mut c).len(), 10);
    assert!(eventually(10, || info_u64(&mut c, "entries") == 10), "the index kept {} entries", info_u64(&mut c, "entries"));
    assert_eq!(q::<Vec<String>>(&mut c, &["RCACHE.LIST", &format!("{{{kept_tag}}}/")]).len(), 10);
    cl.wait_stable();
    cl.assert_indexes_exact();
}
