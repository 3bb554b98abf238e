//! Every RCACHE command against a real redis-server: replies, variants, the
//! contract's coverage table, errors (which must change nothing), layout, metadata.

mod common;
use common::*;

/// Redis cluster's key slot: CRC16 (XMODEM) of the hash tag or the whole key.
fn slot(key: &[u8]) -> u16 {
    let tagged = key.iter().position(|&b| b == b'{').and_then(|o| {
        key[o + 1..].iter().position(|&b| b == b'}').filter(|&len| len > 0).map(|len| &key[o + 1..o + 1 + len])
    });
    let mut crc: u16 = 0;
    for &b in tagged.unwrap_or(key) {
        crc ^= (b as u16) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 { (crc << 1) ^ 0x1021 } else { crc << 1 };
        }
    }
    crc % 16384
}

#[test]
fn set_get_del_round_trip_with_binary_values() {
    let s = Server::start();
    let mut c = s.conn();
    let all_bytes: Vec<u8> = (0..=255u8).collect();
    assert_eq!(cmd("RCACHE.SET").arg("/bin").arg(&all_bytes).query::<String>(&mut c).unwrap(), "OK");
    assert_eq!(get(&mut c, &["/bin"]), Some(all_bytes));
    set(&mut c, &["/empty", ""]);
    assert_eq!(get(&mut c, &["/empty"]), Some(vec![]));
    assert_eq!(get(&mut c, &["/missing"]), None);
    assert_eq!(q::<i64>(&mut c, &["RCACHE.DEL", "/bin"]), 1);
    assert_eq!(q::<i64>(&mut c, &["RCACHE.DEL", "/bin"]), 0);
    assert_eq!(get(&mut c, &["/bin"]), None);
    let i = info(&mut c);
    assert_eq!((i["hits"].as_str(), i["misses"].as_str(), i["sets"].as_str(), i["dels"].as_str()), ("2", "2", "2", "1"));
    assert_eq!(info_u64(&mut c, "entries"), 1);
}

#[test]
fn variants_by_query_and_vary() {
    let s = Server::start();
    let mut c = s.conn();
    set(&mut c, &["/p", "plain"]);
    set(&mut c, &["/p", "q1", "QUERY", "?a=1"]);
    set(&mut c, &["/p", "q2", "QUERY", "a=2"]);
    set(&mut c, &["/p", "v-en", "VARY", "2", "Accept-Language", "en", "Accept", "text/html"]);
    set(&mut c, &["/p", "v-fr", "VARY", "1", "accept-language", "fr"]);
    assert_eq!(get(&mut c, &["/p"]).unwrap(), b"plain");
    assert_eq!(get(&mut c, &["/p", "QUERY", ""]).unwrap(), b"plain", "empty query is no query");
    assert_eq!(get(&mut c, &["/p", "QUERY", "?"]).unwrap(), b"plain", "a lone ? is no query");
    assert_eq!(get(&mut c, &["/p", "QUERY", "a=1"]).unwrap(), b"q1", "one leading ? is dropped");
    assert_eq!(get(&mut c, &["/p", "query", "?a=2"]).unwrap(), b"q2");
    assert_eq!(get(&mut c, &["/p", "QUERY", "??a=1"]), None);
    // Order and name case do not matter; values are exact.
    assert_eq!(get(&mut c, &["/p", "VARY", "2", "ACCEPT", "text/html", "accept-language", "en"]).unwrap(), b"v-en");
    assert_eq!(get(&mut c, &["/p", "VARY", "1", "Accept-Language", "FR"]), None);
    assert_eq!(get(&mut c, &["/p", "VARY", "2", "accept-language", "fr", "accept-language", "fr"]), None);
    assert_eq!(q::<i64>(&mut c, &["RCACHE.PURGE", "/p"]), 5);
}

#[test]
fn keys_are_readable_and_in_the_paths_slot() {
    let s = Server::start();
    let mut c = s.conn();
    let k: String = q(&mut c, &["RCACHE.KEY", "/tournament/5/bracket"]);
    assert_eq!(k, "rcache:{/tournament/5/bracket}:-:-");
    let k: String = q(&mut c, &["RCACHE.KEY", "/search", "QUERY", "?q=x", "VARY", "1", "Accept", "a"]);
    assert!(k.starts_with("rcache:{/search}:") && k.len() == "rcache:{/search}:".len() + 65, "{k}");
    let tagged: String = q(&mut c, &["RCACHE.KEY", "{shop1}/products/7"]);
    assert_eq!(tagged, "rcache:~{shop1}/products/7:-:-");
    for path in ["/tournament/5/bracket", "{shop1}/products/7", "shop.example.com/a", "/x{y}z"] {
        let key: String = q(&mut c, &["RCACHE.KEY", path]);
        assert_eq!(slot(key.as_bytes()), slot(path.as_bytes()), "{path} -> {key}");
    }
    // KEY names the key SET writes.
    set(&mut c, &["/search", "v", "QUERY", "?q=x", "VARY", "1", "Accept", "a"]);
    let k: String = q(&mut c, &["RCACHE.KEY", "/search", "QUERY", "?q=x", "VARY", "1", "Accept", "a"]);
    assert_eq!(entry_keys(&mut c), vec![k]);
}

#[test]
fn entry_layout_is_a_versioned_header_and_the_value() {
    let s = Server::start();
    let mut c = s.conn();
    set(&mut c, &["/layout", "hello", "EX", "60", "GRACE", "30", "TAGS", "2", "article:42", "x"]);
    let raw: Vec<u8> = q(&mut c, &["GET", "rcache:{/layout}:-:-"]);
    assert_eq!(&raw[..4], b"RCE\x02");
    let header_len = u32::from_le_bytes(raw[4..8].try_into().unwrap()) as usize;
    assert_eq!(&raw[header_len..], b"hello");
    let u64_at = |at: usize| u64::from_le_bytes(raw[at..at + 8].try_into().unwrap());
    let stored_at = u64_at(8);
    let now_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
    assert!(stored_at <= now_ms && now_ms - stored_at < 60_000);
    assert_eq!(u64_at(16), stored_at + 60_000, "fresh until: stored-at + EX");
    assert_eq!(u32::from_le_bytes(raw[24..28].try_into().unwrap()), 30, "grace in seconds");
    assert_eq!(u16::from_le_bytes([raw[28], raw[29]]), 32, "ETag length");
    assert_eq!(u16::from_le_bytes([raw[30], raw[31]]), 2, "tag count");
    assert_eq!(&raw[32..64], b"b5e9c1ad071b3e7fc779cfaa5e523818", "ETag = XXH3-128(value), hex (as python-xxhash computes it)");
    assert_eq!(&raw[64..66], &10u16.to_le_bytes());
    assert_eq!(&raw[66..76], b"article:42");
    let pexpiretime: i64 = q(&mut c, &["PEXPIRETIME", "rcache:{/layout}:-:-"]);
    assert_eq!(pexpiretime as u64, stored_at + 90_000, "the key expires when the grace ends");
}

/// The contract's coverage table, through PURGE on a real server.
#[test]
fn purge_follows_the_coverage_table() {
    let s = Server::start();
    let mut c = s.conn();
    let all = ["/tournament/5", "/tournament/5/", "/tournament/5/bracket", "/tournament/5/a/b", "/tournament/50", "/tournament/5x", "/tournament", "shop.example.com", "shop.example.com/products/7", "shop.example.community/x", "/a/", "/a//x", "/a/b"];
    let rows: [(&str, &[&str]); 6] = [
        ("/tournament/5", &["/tournament/5", "/tournament/5/", "/tournament/5/bracket", "/tournament/5/a/b"]),
        ("/tournament/5/", &["/tournament/5", "/tournament/5/", "/tournament/5/bracket", "/tournament/5/a/b"]),
        ("shop.example.com", &["shop.example.com", "shop.example.com/products/7"]),
        ("/a//", &["/a/", "/a//x"]),
        ("/", &["/tournament/5", "/tournament/5/", "/tournament/5/bracket", "/tournament/5/a/b", "/tournament/50", "/tournament/5x", "/tournament", "/a/", "/a//x", "/a/b"]),
        ("/tournament/5/bracket", &["/tournament/5/bracket"]),
    ];
    for (prefix, covered) in rows {
        q::<()>(&mut c, &["FLUSHALL"]);
        for p in all {
            set(&mut c, &[p, "v"]);
            set(&mut c, &[p, "v", "QUERY", "page=2"]);
        }
        assert_eq!(q::<i64>(&mut c, &["RCACHE.PURGE", prefix]), 2 * covered.len() as i64, "PURGE {prefix}");
        for p in all {
            assert_eq!(get(&mut c, &[p]).is_none(), covered.contains(&p), "after PURGE {prefix}: {p}");
            assert_eq!(get(&mut c, &[p, "QUERY", "page=2"]).is_none(), covered.contains(&p));
        }
        assert_eq!(info_u64(&mut c, "entries") as usize, 2 * (all.len() - covered.len()));
        assert_eq!(entry_keys(&mut c).len(), 2 * (all.len() - covered.len()), "keyspace matches the index");
    }
}

#[test]
fn purge_exact_is_byte_for_byte() {
    let s = Server::start();
    let mut c = s.conn();
    for p in ["/a", "/a/", "/a/b"] {
        set(&mut c, &[p, "v"]);
    }
    assert_eq!(q::<i64>(&mut c, &["RCACHE.PURGE", "/a/", "exact"]), 1);
    assert_eq!(get(&mut c, &["/a/"]), None);
    assert!(get(&mut c, &["/a"]).is_some() && get(&mut c, &["/a/b"]).is_some());
    assert_eq!(q::<i64>(&mut c, &["RCACHE.PURGE", "/nothing"]), 0);
    let i = info(&mut c);
    assert_eq!((i["purges"].as_str(), i["purged_entries"].as_str()), ("2", "1"));
}

#[test]
fn ttl_options_and_default_ttl() {
    let s = Server::start_with(&[], &["default-ttl", "300"]);
    let mut c = s.conn();
    set(&mut c, &["/ex", "v", "EX", "100"]);
    set(&mut c, &["/px", "v", "PX", "5000"]);
    set(&mut c, &["/default", "v"]);
    let ttl = |c: &mut Connection, p: &str| -> i64 { q(c, &["PTTL", &format!("rcache:{{{p}}}:-:-")]) };
    assert!((99_000..=100_000).contains(&ttl(&mut c, "/ex")));
    assert!((4_000..=5_000).contains(&ttl(&mut c, "/px")));
    assert!((299_000..=300_000).contains(&ttl(&mut c, "/default")));
    q::<()>(&mut c, &["CONFIG", "SET", "rcache.default-ttl", "0"]);
    set(&mut c, &["/forever", "v"]);
    assert_eq!(ttl(&mut c, "/forever"), -1);
    // Re-SET without a TTL drops the old one, as SET does.
    set(&mut c, &["/ex", "v2"]);
    assert_eq!(ttl(&mut c, "/ex"), -1);
}

#[test]
fn expiry_and_user_del_leave_the_index() {
    let s = Server::start();
    let mut c = s.conn();
    for i in 0..20 {
        set(&mut c, &[&format!("/short/{i}"), "v", "PX", "50"]);
    }
    set(&mut c, &["/short/lazy", "v", "PX", "30"]);
    set(&mut c, &["/kept", "v"]);
    set(&mut c, &["/deleted", "v"]);
    assert_eq!(info_u64(&mut c, "entries"), 23);
    std::thread::sleep(std::time::Duration::from_millis(60));
    // Lazy expiry: a GET of an expired entry misses, and the index drops it at once.
    assert_eq!(get(&mut c, &["/short/lazy"]), None);
    assert_eq!(q::<i64>(&mut c, &["DEL", "rcache:{/deleted}:-:-"]), 1);
    // Active expiry takes the rest within a few cycles.
    assert!(eventually(10, || info_u64(&mut s.conn(), "entries") == 1), "entries: {:?}", info(&mut c));
    let i = info(&mut c);
    assert_eq!(i["index_removals_expired"], "21");
    assert_eq!(i["index_removals_other"], "1");
    assert_eq!(q::<Vec<String>>(&mut c, &["RCACHE.LIST", "/"]), vec!["/kept".to_string()]);
}

#[test]
fn get_on_foreign_keys_is_an_error_not_a_crash() {
    let mut s = Server::start();
    let mut c = s.conn();
    q::<()>(&mut c, &["SET", "rcache:{/plain}:-:-", "not an entry"]);
    q::<()>(&mut c, &["RPUSH", "rcache:{/list}:-:-", "x"]);
    assert_eq!(q_err(&mut c, &["RCACHE.GET", "/plain"]), "ERR key holds a string that is not an rcache entry");
    assert!(q_err(&mut c, &["RCACHE.LOOKUP", "/plain"]).starts_with("ERR key holds a string"));
    // Reading it did not rewrite it: a short string read in place would be unshared.
    assert_eq!(q::<String>(&mut c, &["OBJECT", "ENCODING", "rcache:{/plain}:-:-"]), "embstr");
    assert!(q_err(&mut c, &["RCACHE.GET", "/list"]).starts_with("WRONGTYPE"));
    let i = info(&mut c);
    assert_eq!((i["hits"].as_str(), i["misses"].as_str()), ("0", "0"), "rejected commands move no counter");
    // SET replaces whatever is there, as SET does; DEL removes it.
    set(&mut c, &["/list", "v"]);
    assert_eq!(get(&mut c, &["/list"]).unwrap(), b"v");
    assert_eq!(q::<i64>(&mut c, &["RCACHE.DEL", "/plain"]), 1);
    assert!(s.alive());
}

#[test]
fn malformed_requests_are_errors_that_change_nothing() {
    let mut s = Server::start_with(&[], &["max-path-len", "32", "max-vary", "2", "max-tags", "2"]);
    let mut c = s.conn();
    set(&mut c, &["/keep", "v"]);
    let before: Vec<u8> = q(&mut c, &["DUMP", "rcache:{/keep}:-:-"]);
    let long_path = format!("/{}", "a".repeat(40));
    let bad: &[(&[&str], &str)] = &[
        (&["RCACHE.SET", "/p"], "ERR wrong number of arguments for 'rcache.set' command"),
        (&["RCACHE.GET"], "ERR wrong number of arguments for 'rcache.get' command"),
        (&["RCACHE.SET", "", "v"], "ERR invalid path: path is empty"),
        (&["RCACHE.SET", &long_path, "v"], "ERR invalid path: path is longer than rcache.max-path-len (32 bytes)"),
        (&["RCACHE.SET", "/a\x01", "v"], "ERR invalid path: path contains a control character"),
        (&["RCACHE.SET", "/a?x=1", "v"], "ERR invalid path: path contains '?': pass the query string with QUERY"),
        (&["RCACHE.SET", "/{}", "v"], "ERR invalid path: path may contain braces only as one non-empty hash tag {...}"),
        (&["RCACHE.SET", "/{a}{b}", "v"], "ERR invalid path: path may contain braces only as one non-empty hash tag {...}"),
        (&["RCACHE.SET", "/keep", "v", "EX", "0"], "ERR invalid expire time in 'rcache.set' command"),
        (&["RCACHE.SET", "/keep", "v", "PX", "-5"], "ERR invalid expire time in 'rcache.set' command"),
        (&["RCACHE.SET", "/keep", "v", "EX", "abc"], "ERR invalid expire time in 'rcache.set' command"),
        (&["RCACHE.SET", "/keep", "v", "EX", "9223372036854775807"], "ERR invalid expire time in 'rcache.set' command"),
        (&["RCACHE.SET", "/keep", "v", "EX", "1", "PX", "1"], "ERR EX and PX cannot be used together"),
        (&["RCACHE.SET", "/keep", "v", "QUERY", "a", "query", "b"], "ERR option QUERY given more than once"),
        (&["RCACHE.SET", "/keep", "v", "NX"], "ERR unknown option 'NX'"),
        (&["RCACHE.SET", "/keep", "v", "VARY", "3", "a", "1", "b", "2", "c", "3"], "ERR VARY count 3 is over the limit of 2"),
        (&["RCACHE.SET", "/keep", "v", "VARY", "2", "a", "1"], "ERR VARY count is 2 but only 1 follow"),
        (&["RCACHE.SET", "/keep", "v", "VARY", "0"], "ERR VARY count must be a positive integer"),
        (&["RCACHE.SET", "/keep", "v", "VARY", "1", "a\n", "1"], "ERR vary name contains a control character"),
        (&["RCACHE.SET", "/keep", "v", "TAGS", "3", "a", "b", "c"], "ERR more than rcache.max-tags (2) distinct tags"),
        (&["RCACHE.SET", "/keep", "v", "TAGS", "1", ""], "ERR tag must be 1 to 1024 bytes"),
        (&["RCACHE.GET", "/keep", "QUERY"], "ERR option QUERY needs a value"),
        (&["RCACHE.DEL", "/keep", "EXACT"], "ERR unknown option 'EXACT'"),
        (&["RCACHE.PURGE", "/keep", "EXACT", "EXACT"], "ERR option EXACT given more than once"),
        (&["RCACHE.PURGE", "/k?"], "ERR invalid prefix: path contains '?': pass the query string with QUERY"),
        (&["RCACHE.KEY", "/k", "VARY", "x"], "ERR VARY count must be a positive integer"),
    ];
    for (words, want) in bad {
        assert_eq!(&q_err(&mut c, words), want, "{words:?}");
    }
    let after: Vec<u8> = q(&mut c, &["DUMP", "rcache:{/keep}:-:-"]);
    assert_eq!(before, after);
    assert_eq!(q::<i64>(&mut c, &["DBSIZE"]), 1);
    assert_eq!(info_u64(&mut c, "sets"), 1);
    assert!(s.alive());
}

#[test]
fn command_metadata_declares_the_path_key() {
    let s = Server::start();
    let mut c = s.conn();
    let info: Value = q(&mut c, &["COMMAND", "INFO", "rcache.get", "rcache.set", "rcache.purgetag"]);
    let text = format!("{info:?}");
    let get_part = &text[..text.find("rcache.set").unwrap()];
    assert!(get_part.contains("\"RO\"") && get_part.contains("\"fast\""), "{get_part}");
    let set_part = &text[text.find("rcache.set").unwrap()..text.find("rcache.purgetag").unwrap()];
    assert!(set_part.contains("\"RW\"") && set_part.contains("\"denyoom\""), "{set_part}");
    // COMMAND GETKEYS shows the path is the key (ACL patterns and cluster routing use it).
    let keys: Vec<String> = q(&mut c, &["COMMAND", "GETKEYS", "RCACHE.GET", "/public/x", "QUERY", "a"]);
    assert_eq!(keys, vec!["/public/x"]);
    let docs: Value = q(&mut c, &["COMMAND", "DOCS", "rcache.purge"]);
    let docs = format!("{docs:?}");
    assert!(docs.contains("summary") && docs.contains("complexity") && docs.contains("prefix"), "{docs}");
    // v3: LOOKUP reads (RO, not fast: it may block with WAIT), SOFTPURGE declares its
    // prefix as a key it updates, SOFTPURGETAG declares none.
    let info: Value = q(&mut c, &["COMMAND", "INFO", "rcache.lookup", "rcache.softpurge", "rcache.softpurgetag"]);
    let text = format!("{info:?}");
    let lookup_part = &text[..text.find("rcache.softpurge").unwrap()];
    assert!(lookup_part.contains("\"RO\"") && lookup_part.contains("\"readonly\"") && !lookup_part.contains("\"fast\""), "{lookup_part}");
    let soft_part = &text[text.find("rcache.softpurge").unwrap()..text.find("rcache.softpurgetag").unwrap()];
    assert!(soft_part.contains("\"RW\"") && soft_part.contains("\"update\""), "{soft_part}");
    let keys: Vec<String> = q(&mut c, &["COMMAND", "GETKEYS", "RCACHE.SOFTPURGE", "/a/b", "EXACT"]);
    assert_eq!(keys, vec!["/a/b"]);
    for command in ["rcache.lookup", "rcache.softpurge", "rcache.softpurgetag"] {
        let docs = format!("{:?}", q::<Value>(&mut c, &["COMMAND", "DOCS", command]));
        assert!(docs.contains("summary") && docs.contains("complexity"), "{docs}");
    }
}

/// Every setting's default is the contract's (section "Configuration").
#[test]
fn settings_default_to_the_contracts_values() {
    let s = Server::start();
    let mut c = s.conn();
    let got: Vec<String> = q(&mut c, &["CONFIG", "GET", "rcache.*"]);
    let mut pairs: Vec<(String, String)> = got.chunks(2).map(|p| (p[0].clone(), p[1].clone())).collect();
    pairs.sort();
    let expected = [
        ("rcache.cluster-timeout", "5000"),
        ("rcache.default-grace", "0"),
        ("rcache.default-ttl", "0"),
        ("rcache.max-path-len", "4096"),
        ("rcache.max-tags", "64"),
        ("rcache.max-vary", "32"),
        ("rcache.purge-slice-us", "1000"),
        ("rcache.ttl-jitter", "0"),
    ];
    let expected: Vec<(String, String)> = expected.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    assert_eq!(pairs, expected);
}

#[test]
fn settings_via_config_and_loadmodule() {
    let s = Server::start_with(&[], &["max-tags", "5"]);
    let mut c = s.conn();
    let got: Vec<String> = q(&mut c, &["CONFIG", "GET", "rcache.max-tags"]);
    assert_eq!(got, vec!["rcache.max-tags", "5"]);
    q::<()>(&mut c, &["CONFIG", "SET", "rcache.max-path-len", "8"]);
    assert!(q_err(&mut c, &["RCACHE.SET", "/123456789", "v"]).contains("longer than rcache.max-path-len (8 bytes)"));
    for (name, bad) in [("rcache.max-tags", "0"), ("rcache.max-vary", "257"), ("rcache.default-ttl", "-1"), ("rcache.max-path-len", "x")] {
        assert!(q_err(&mut c, &["CONFIG", "SET", name, bad]).starts_with("ERR"), "{name} {bad}");
    }
    let got: Vec<String> = q(&mut c, &["CONFIG", "GET", "rcache.max-tags"]);
    assert_eq!(got[1], "5");
}

#[test]
fn bad_loadmodule_arguments_stop_the_load_with_a_log_line() {
    for (args, needle) in [
        (&["bogus", "1"][..], "unknown rcache setting 'bogus'"),
        (&["max-tags", "0"][..], "rcache.max-tags must be between 1 and 1024, got 0"),
        (&["default-ttl", "abc"][..], "rcache.default-ttl must be an integer, got 'abc'"),
    ] {
        let dir = temp_dir();
        let out = std::process::Command::new("redis-server")
            .args(["--port", &free_port().to_string(), "--bind", "127.0.0.1", "--save", "", "--dir"])
            .arg(&dir)
            .arg("--loadmodule")
            .arg(module_path())
            .args(args)
            .output()
            .expect("run redis-server");
        let log = String::from_utf8_lossy(&out.stdout);
        assert!(!out.status.success(), "server must refuse to start: {args:?}");
        assert!(log.contains(needle), "log should name the problem ({needle}):\n{log}");
    }
}
