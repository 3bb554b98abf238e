//! Helpers shared by the index tests (index_events, index_replication, index_leak,
//! index_model): checking that the index equals the entry keys that really exist.
#![allow(dead_code)]

use std::collections::BTreeSet;

use crate::common::*;

/// The key of the plain variant (no query, no vary) of a path without braces.
pub fn key_of(path: &str) -> String {
    format!("rcache:{{{path}}}:-:-")
}

pub fn select(c: &mut Connection, db: i64) {
    q::<()>(c, &["SELECT", &db.to_string()]);
}

/// The path an entry key names (the client-side inverse of RCACHE.KEY), if it is one.
pub fn path_of_key(key: &str) -> Option<String> {
    let rest = key.strip_prefix("rcache:")?;
    let mut parts = rest.rsplitn(3, ':');
    let (_vary, _query, path) = (parts.next()?, parts.next()?, parts.next()?);
    if let Some(p) = path.strip_prefix('{') {
        return p.strip_suffix('}').map(str::to_string);
    }
    path.strip_prefix('~').map(str::to_string)
}

/// Entry keys that really exist in the selected database and hold an entry (a string
/// in the entry layout), as (key, path).
pub fn live_entry_keys(c: &mut Connection) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for key in entry_keys(c) {
        let kind: String = q(c, &["TYPE", &key]);
        if kind != "string" {
            continue;
        }
        let head: Vec<u8> = q(c, &["GETRANGE", &key, "0", "3"]);
        // Layout v1 (written by older versions) and v2 are both entries.
        if head != b"RCE\x01" && head != b"RCE\x02" {
            continue;
        }
        if let Some(path) = path_of_key(&key) {
            out.push((key, path));
        }
    }
    out
}

/// Every path RCACHE.LIST reports in the selected database (all pages).
pub fn listed(c: &mut Connection, prefix: &str) -> Vec<String> {
    let mut all: Vec<String> = Vec::new();
    loop {
        let mut command = cmd("RCACHE.LIST");
        command.arg(prefix).arg("COUNT").arg(10000);
        if let Some(last) = all.last() {
            command.arg("AFTER").arg(last);
        }
        let page: Vec<String> = command.query(c).expect("RCACHE.LIST");
        if page.is_empty() {
            return all;
        }
        all.extend(page);
    }
}

/// Checks that the index equals the keyspace: in each of `dbs`, RCACHE.LIST equals the
/// distinct paths of the entry keys that exist, and INFO `entries` / `paths` equal the
/// totals over `dbs` (which must be every database holding entries). Returns the total
/// number of entries. Leaves database 0 selected.
pub fn assert_index_exact(c: &mut Connection, dbs: &[i64], what: &str) -> usize {
    let (mut entries, mut paths) = (0usize, 0usize);
    for &db in dbs {
        select(c, db);
        let live = live_entry_keys(c);
        let want: BTreeSet<String> = live.iter().map(|(_, p)| p.clone()).collect();
        let got: Vec<String> = listed(c, "/");
        let got_set: BTreeSet<String> = got.iter().cloned().collect();
        assert_eq!(got.len(), got_set.len(), "{what}: db {db}: LIST repeats a path: {got:?}");
        assert_eq!(got_set, want, "{what}: db {db}: LIST (left) differs from the entry keys that exist (right)");
        entries += live.len();
        paths += want.len();
    }
    select(c, 0);
    let i = info(c);
    assert_eq!(i["entries"].parse::<usize>().unwrap(), entries, "{what}: INFO entries vs entry keys in dbs {dbs:?}: {i:?}");
    assert_eq!(i["paths"].parse::<usize>().unwrap(), paths, "{what}: INFO paths vs distinct entry paths in dbs {dbs:?}");
    entries
}

/// Waits until the background removal of earlier purges is done (issue 11: a purge
/// larger than one slice replies first), so the keyspace itself can be checked.
pub fn purges_done(c: &mut Connection) {
    assert!(eventually(60, || info_u64(c, "purge_pending") == 0), "background purges did not finish");
}

/// INFO stats / replication field of the server (not the rcache section).
pub fn server_info_u64(c: &mut Connection, section: &str, field: &str) -> u64 {
    server_info_str(c, section, field).parse().unwrap_or_else(|_| panic!("INFO {section} {field} is not a number"))
}

pub fn server_info_str(c: &mut Connection, section: &str, field: &str) -> String {
    let text: String = q(c, &["INFO", section]);
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")).map(|v| v.trim().to_string()))
        .unwrap_or_else(|| panic!("INFO {section} has no {field}:\n{text}"))
}

/// The three index_removals_* counters: (expired, evicted, other).
pub fn removals(c: &mut Connection) -> (u64, u64, u64) {
    let i = info(c);
    let n = |k: &str| i[k].parse::<u64>().unwrap();
    (n("index_removals_expired"), n("index_removals_evicted"), n("index_removals_other"))
}

/// Stores `n` entries `{prefix}/{i}` (value `v{i}`) with extra SET words, pipelined.
pub fn fill(c: &mut Connection, prefix: &str, n: usize, value_len: usize, extra: &[&str]) {
    let value = "x".repeat(value_len);
    for chunk in (0..n).collect::<Vec<_>>().chunks(1000) {
        let mut p = redis::pipe();
        for i in chunk {
            let cmd = p.cmd("RCACHE.SET").arg(format!("{prefix}/{i}")).arg(&value);
            for w in extra {
                cmd.arg(*w);
            }
            cmd.ignore();
        }
        p.query::<()>(c).expect("pipelined RCACHE.SET");
    }
}
