//! Tags and PURGETAG, LIST paging, and the exactness of the INFO counters.

mod common;
use common::*;

fn exists(c: &mut Connection, path: &str) -> bool {
    q::<Option<Vec<u8>>>(c, &["RCACHE.GET", path]).is_some()
}

#[test]
fn purgetag_removes_every_entry_carrying_any_tag() {
    let s = Server::start();
    let mut c = s.conn();
    set(&mut c, &["/news/1", "v", "TAGS", "2", "article:42", "section:news"]);
    set(&mut c, &["/home", "v", "TAGS", "1", "article:42"]);
    set(&mut c, &["/home", "v", "QUERY", "p=2", "TAGS", "1", "article:42"]);
    set(&mut c, &["/other", "v", "TAGS", "1", "article:7"]);
    set(&mut c, &["/untagged", "v"]);
    assert_eq!(info_u64(&mut c, "tags"), 3);
    assert_eq!(q::<i64>(&mut c, &["RCACHE.PURGETAG", "article:42", "nope"]), 3);
    assert!(!exists(&mut c, "/news/1") && !exists(&mut c, "/home"));
    assert!(exists(&mut c, "/other") && exists(&mut c, "/untagged"));
    assert_eq!(info_u64(&mut c, "tags"), 1, "section:news went with its only entry");
    assert_eq!(q::<i64>(&mut c, &["RCACHE.PURGETAG", "article:42"]), 0);
    assert!(q_err(&mut c, &["RCACHE.PURGETAG", "bad\ttag"]).starts_with("ERR tag contains a control character"));
    assert!(q_err(&mut c, &["RCACHE.PURGETAG"]).starts_with("ERR wrong number of arguments"));
    let i = info(&mut c);
    assert_eq!((i["tag_purges"].as_str(), i["tag_purged_entries"].as_str()), ("2", "3"));
}

#[test]
fn reset_replaces_tags_and_index_follows_deletes() {
    let s = Server::start();
    let mut c = s.conn();
    set(&mut c, &["/a", "v", "TAGS", "2", "old", "keep"]);
    set(&mut c, &["/a", "v", "TAGS", "1", "keep"]);
    assert_eq!(q::<i64>(&mut c, &["RCACHE.PURGETAG", "old"]), 0, "re-SET replaced the tags");
    set(&mut c, &["/b", "v", "TAGS", "1", "keep"]);
    q::<i64>(&mut c, &["DEL", "rcache:{/b}:-:-"]);
    set(&mut c, &["/c", "v", "PX", "30", "TAGS", "1", "keep"]);
    std::thread::sleep(std::time::Duration::from_millis(50));
    assert_eq!(q::<i64>(&mut c, &["RCACHE.PURGETAG", "keep"]), 1, "deleted and expired entries are not counted");
    assert_eq!(info_u64(&mut c, "tags"), 0);
}

#[test]
fn tag_index_rebuilt_after_restart() {
    let mut s = Server::start_with(&["--save", "3600 1"], &[]);
    let mut c = s.conn();
    set(&mut c, &["/x", "v", "TAGS", "1", "t"]);
    set(&mut c, &["/y", "v", "TAGS", "1", "t"]);
    s.restart(true, &[]);
    let mut c = s.conn();
    assert_eq!(q::<i64>(&mut c, &["RCACHE.PURGETAG", "t"]), 2);
}

#[test]
fn list_pages_through_every_path_once_in_byte_order() {
    let s = Server::start();
    let mut c = s.conn();
    let mut paths: Vec<String> = Vec::new();
    for i in 0..250 {
        paths.push(format!("/s/{}/m/{}", i % 7, i));
    }
    paths.extend(["/s", "/s-x", "/s.y", "/s/", "/t"].map(String::from));
    for p in &paths {
        set(&mut c, &[p, "v"]);
        set(&mut c, &[p, "v2", "QUERY", "a=1"]);
    }
    let mut want: Vec<String> = paths.iter().filter(|p| *p == "/s" || p.starts_with("/s/")).cloned().collect();
    want.sort();
    let mut got: Vec<String> = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let mut words = vec!["RCACHE.LIST", "/s", "COUNT", "17"];
        if let Some(a) = &after {
            words.extend(["AFTER", a.as_str()]);
        }
        let page: Vec<String> = q(&mut c, &words);
        assert!(page.len() <= 17);
        if page.is_empty() {
            break;
        }
        after = page.last().cloned();
        got.extend(page);
    }
    assert_eq!(got, want);
    let all: Vec<String> = q(&mut c, &["RCACHE.LIST", "/", "COUNT", "10000"]);
    let mut sorted = paths.clone();
    sorted.sort();
    assert_eq!(all, sorted, "ascending byte order ('-' and '.' sort before '/')");
    assert_eq!(q::<Vec<String>>(&mut c, &["RCACHE.LIST", "/"]).len(), 100, "default COUNT");
    assert!(q_err(&mut c, &["RCACHE.LIST", "/", "COUNT", "0"]).starts_with("ERR COUNT must be"));
    assert!(q_err(&mut c, &["RCACHE.LIST", "/", "AFTER", "/a?b"]).starts_with("ERR invalid AFTER path"));
    assert_eq!(info_u64(&mut c, "paths"), paths.len() as u64);
    assert_eq!(info_u64(&mut c, "entries"), 2 * paths.len() as u64);
}

#[test]
fn info_counters_are_exact() {
    let s = Server::start();
    let mut c = s.conn();
    set(&mut c, &["/a", "1"]);
    set(&mut c, &["/a", "2"]);
    set(&mut c, &["/a/b", "3"]);
    q::<Option<Vec<u8>>>(&mut c, &["RCACHE.GET", "/a"]);
    q::<Option<Vec<u8>>>(&mut c, &["RCACHE.GET", "/zzz"]);
    q::<i64>(&mut c, &["RCACHE.DEL", "/zzz"]);
    q::<i64>(&mut c, &["RCACHE.DEL", "/a/b"]);
    let _ = q_err(&mut c, &["RCACHE.SET", "/bad?", "v"]);
    let _ = q_err(&mut c, &["RCACHE.GET", "/a", "VARY", "1"]);
    q::<i64>(&mut c, &["RCACHE.PURGE", "/"]);
    let i = info(&mut c);
    let want = [
        ("sets", "3"), ("hits", "1"), ("misses", "1"), ("dels", "1"), ("purges", "1"), ("purged_entries", "1"),
        ("entries", "0"), ("paths", "0"), ("tags", "0"), ("tag_purges", "0"), ("index_removals_other", "0"),
        ("index_removals_expired", "0"), ("index_removals_evicted", "0"),
    ];
    for (k, v) in want {
        assert_eq!(i[k], v, "{k}");
    }
    assert_eq!(i["module_version"], env!("CARGO_PKG_VERSION"));
    assert!(i["purge_max_us"].parse::<u64>().unwrap() > 0);
    assert!(i["index_bytes"].parse::<u64>().unwrap() > 0);
    // FLUSHALL counts each dropped entry as removed by something else.
    set(&mut c, &["/f1", "v"]);
    set(&mut c, &["/f2", "v"]);
    q::<()>(&mut c, &["FLUSHALL"]);
    assert_eq!(info_u64(&mut c, "index_removals_other"), 2);
    assert_eq!(info_u64(&mut c, "entries"), 0);
}

#[test]
fn shipped_redis_conf_loads_with_its_settings() {
    let conf = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("redis.conf");
    let text = std::fs::read_to_string(&conf).expect("redis.conf");
    for setting in ["default-ttl", "max-path-len", "max-tags", "max-vary"] {
        assert!(text.contains(setting), "redis.conf shows {setting}");
    }
    // Start it for real (module path overridden to this build, port to a free one).
    let port = free_port();
    // No --dir: `dir` changes the working directory before modules load, and the
    // conf's module path is relative to the repository root. `save ""` and
    // `appendonly no` write nothing there.
    let mut child = std::process::Command::new("redis-server")
        .arg(&conf)
        .args(["--port", &port.to_string(), "--save", "", "--appendonly", "no"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("redis-server");
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}/")).unwrap();
    let ok = eventually(10, || client.get_connection().is_ok());
    let got: Option<Vec<String>> = client.get_connection().ok().and_then(|mut c| cmd("CONFIG").arg("GET").arg("rcache.max-tags").query(&mut c).ok());
    let _ = child.kill();
    let _ = child.wait();
    assert!(ok, "redis-server did not start from redis.conf");
    assert_eq!(got, Some(vec!["rcache.max-tags".to_string(), "64".to_string()]));
}
