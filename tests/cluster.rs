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
