//! Argument parsing for every RCACHE command: arguments in, a request or an `ERR …`
//! message out. Every count a client sends is checked against what it actually sent
//! and against the configured limits before anything is allocated for it.
//! Pure logic; knows nothing of Redis.

use crate::core::key::Variant;
use crate::core::path;

pub const MAX_QUERY_LEN: usize = 64 * 1024;
pub const MAX_NAME_LEN: usize = 1024;
pub const DEFAULT_LIST_COUNT: usize = 100;
pub const MAX_LIST_COUNT: usize = 10_000;

/// The configurable limits, read once per command.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_path_len: usize,
    pub max_vary: usize,
    pub max_tags: usize,
}

pub type ArgResult<T> = Result<T, String>;

fn err<T>(msg: impl std::fmt::Display) -> ArgResult<T> {
    Err(format!("ERR {msg}"))
}

pub fn wrong_arity<T>(command: &str) -> ArgResult<T> {
    err(format!("wrong number of arguments for '{command}' command"))
}

/// A path to store under: `rcache.max-path-len` applies.
fn check_path(path: &[u8], what: &str, limits: &Limits) -> ArgResult<()> {
    path::validate(path, limits.max_path_len).or_else(|e| err(format!("invalid {what}: {e}")))
}

/// A path to read, remove, list or page from: the setting protects what is stored,
/// and paths stored before it was lowered must stay reachable, so only the setting's
/// own maximum applies here.
fn check_stored_path(path: &[u8], what: &str) -> ArgResult<()> {
    path::validate(path, path::MAX_PATH_LEN).or_else(|e| err(format!("invalid {what}: {e}")))
}

/// A label (vary name or tag): 1-1024 bytes, no ASCII control characters.
fn check_label(label: &[u8], what: &str) -> ArgResult<()> {
    if label.is_empty() || label.len() > MAX_NAME_LEN {
        return err(format!("{what} must be 1 to {MAX_NAME_LEN} bytes"));
    }
    if label.iter().any(|&b| b < 0x20 || b == 0x7f) {
        return err(format!("{what} contains a control character"));
    }
    Ok(())
}

/// A positive decimal integer without sign, spaces or leading zeros, as Redis parses.
fn parse_positive(arg: &[u8]) -> Option<i64> {
    if arg.first().is_none_or(|&b| b == b'0') {
        return None;
    }
    arg.iter().try_fold(0i64, |n, &b| match b {
        b'0'..=b'9' => n.checked_mul(10)?.checked_add(i64::from(b - b'0')),
        _ => None,
    })
}

/// Bytes as error replies show them: any byte outside printable ASCII is written `\xNN`,
/// so a reply is safe to log and shows the bytes that were sent.
pub fn printable(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for &b in bytes {
        if (0x20..0x7f).contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out
}

/// A client's argument quoted in an error reply: at most 64 bytes of it (it may be
/// hundreds of megabytes), then `...`, as [`printable`] writes them.
pub fn quote(arg: &[u8]) -> String {
    const SHOWN: usize = 64;
    let mut out = printable(&arg[..arg.len().min(SHOWN)]);
    if arg.len() > SHOWN {
        out.push_str("...");
    }
    out
}

/// An integer option in `min..=max` (a plain decimal, `0` allowed when `min` is 0).
fn parse_in_range(option: &str, arg: &[u8], min: i64, max: i64) -> ArgResult<i64> {
    let n = if arg == b"0" { Some(0) } else { parse_positive(arg) };
    n.filter(|n| (min..=max).contains(n)).ok_or_else(|| format!("ERR {option} must be an integer from {min} to {max}"))
}

pub const MAX_GRACE_S: i64 = 315_360_000;
pub const MAX_JITTER_PERCENT: i64 = 100;
pub const MAX_LEASE_MS: i64 = 3_600_000;

/// The query string and vary set that select a variant.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct VariantArgs<'a> {
    pub query: &'a [u8],
    pub vary: Vec<(&'a [u8], &'a [u8])>,
}

impl VariantArgs<'_> {
    pub fn variant(&self) -> Variant {
        Variant::new(self.query, &self.vary)
    }
}

#[derive(Debug, PartialEq, Eq)]
pub struct SetArgs<'a> {
    pub path: &'a [u8],
    pub value: &'a [u8],
    /// Milliseconds; `None` means the configured default.
    pub ttl_ms: Option<i64>,
    pub variant: VariantArgs<'a>,
    /// Distinct, in first-seen order.
    pub tags: Vec<&'a [u8]>,
    /// Seconds; `None` means the configured default.
    pub grace_s: Option<i64>,
    /// Percent; `None` means the configured default.
    pub jitter_percent: Option<i64>,
    /// The client's ETag; `None`: the module computes one.
    pub etag: Option<&'a [u8]>,
    /// The lease token (any bytes) that allows this refill.
    pub lease: Option<&'a [u8]>,
}

#[derive(Debug, PartialEq, Eq)]
pub struct LookupArgs<'a> {
    pub path: &'a [u8],
    pub variant: VariantArgs<'a>,
    pub if_none_match: Option<&'a [u8]>,
    pub lease_ms: Option<i64>,
    pub wait_ms: Option<i64>,
}

#[derive(Debug, PartialEq, Eq)]
pub struct PathArgs<'a> {
    pub path: &'a [u8],
    pub variant: VariantArgs<'a>,
}

#[derive(Debug, PartialEq, Eq)]
pub struct PurgeArgs<'a> {
    pub prefix: &'a [u8],
    pub exact: bool,
}

#[derive(Debug, PartialEq, Eq)]
pub struct ListArgs<'a> {
    /// Empty: every path.
    pub prefix: &'a [u8],
    pub count: usize,
    pub after: Option<&'a [u8]>,
}

/// Walks `KEYWORD value…` options, rejecting repeats.
struct Options<'a, 'b> {
    args: &'b [&'a [u8]],
    at: usize,
    /// Bit i: `known[i]` was seen (a set without allocating: the hot paths parse here).
    seen: u64,
}

impl<'a, 'b> Options<'a, 'b> {
    fn new(args: &'b [&'a [u8]]) -> Self {
        Options { args, at: 0, seen: 0 }
    }

    /// The next option keyword, upper-cased and matched against `known` (at most 64).
    fn next_keyword(&mut self, known: &[&'static str]) -> ArgResult<Option<&'static str>> {
        let Some(arg) = self.args.get(self.at) else { return Ok(None) };
        self.at += 1;
        let Some((i, &name)) = known.iter().enumerate().find(|(_, k)| k.as_bytes().eq_ignore_ascii_case(arg)) else {
            return err(format!("unknown option '{}'", quote(arg)));
        };
        let bit = 1u64 << (i % 64);
        if self.seen & bit != 0 {
            return err(format!("option {name} given more than once"));
        }
        self.seen |= bit;
        Ok(Some(name))
    }

    fn value(&mut self, option: &str) -> ArgResult<&'a [u8]> {
        let Some(v) = self.args.get(self.at) else { return err(format!("option {option} needs a value")) };
        self.at += 1;
        Ok(v)
    }

    /// `count item…`: the count must be 1 or more, at most `max`, and match the
    /// arguments actually sent (`per_item` arguments each).
    fn counted(&mut self, option: &str, per_item: usize, max: usize) -> ArgResult<&'b [&'a [u8]]> {
        let raw = self.value(option)?;
        let Some(count) = parse_positive(raw) else {
            return err(format!("{option} count must be a positive integer"));
        };
        let count = usize::try_from(count).unwrap_or(usize::MAX);
        let available = (self.args.len() - self.at) / per_item;
        if count > available {
            return err(format!("{option} count is {count} but only {available} follow"));
        }
        if count > max {
            return err(format!("{option} count {count} is over the limit of {max}"));
        }
        let items = &self.args[self.at..self.at + count * per_item];
        self.at += count * per_item;
        Ok(items)
    }

    /// The option that follows a counted list must be a known keyword: this catches a
    /// count smaller than what was sent.
    fn variant_option(&mut self, name: &str, variant: &mut VariantArgs<'a>, limits: &Limits) -> ArgResult<()> {
        match name {
            "QUERY" => {
                let q = self.value("QUERY")?;
                if q.len() > MAX_QUERY_LEN {
                    return err(format!("query string is longer than {MAX_QUERY_LEN} bytes"));
                }
                variant.query = q;
            }
            _ => {
                let items = self.counted("VARY", 2, limits.max_vary)?;
                let mut pairs = Vec::with_capacity(items.len() / 2);
                for pair in items.chunks_exact(2) {
                    check_label(pair[0], "vary name")?;
                    pairs.push((pair[0], pair[1]));
                }
                variant.vary = pairs;
            }
        }
        Ok(())
    }
}

fn parse_path_variant<'a>(command: &str, args: &[&'a [u8]], limits: &Limits) -> ArgResult<PathArgs<'a>> {
    let Some((&path, rest)) = args.split_first() else { return wrong_arity(command) };
    check_stored_path(path, "path")?;
    let mut variant = VariantArgs::default();
    let mut opts = Options::new(rest);
    while let Some(name) = opts.next_keyword(&["QUERY", "VARY"])? {
        opts.variant_option(name, &mut variant, limits)?;
    }
    Ok(PathArgs { path, variant })
}

/// `RCACHE.GET|DEL|KEY path [QUERY q] [VARY count name value …]`, arguments after the command name.
pub fn parse_get<'a>(command: &str, args: &[&'a [u8]], limits: &Limits) -> ArgResult<PathArgs<'a>> {
    parse_path_variant(command, args, limits)
}

/// `RCACHE.SET path value [EX s | PX ms] [QUERY q] [VARY …] [TAGS count tag …]`.
pub fn parse_set<'a>(args: &[&'a [u8]], limits: &Limits) -> ArgResult<SetArgs<'a>> {
    let [path, value, rest @ ..] = args else { return wrong_arity("rcache.set") };
    check_path(path, "path", limits)?;
    let mut set = SetArgs {
        path,
        value,
        ttl_ms: None,
        variant: VariantArgs::default(),
        tags: Vec::new(),
        grace_s: None,
        jitter_percent: None,
        etag: None,
        lease: None,
    };
    let mut opts = Options::new(rest);
    while let Some(name) = opts.next_keyword(&["EX", "PX", "QUERY", "VARY", "TAGS", "GRACE", "JITTER", "ETAG", "LEASE"])? {
        match name {
            "EX" | "PX" => {
                if set.ttl_ms.is_some() {
                    return err("EX and PX cannot be used together");
                }
                let n = parse_positive(opts.value(name)?);
                let ms = if name == "EX" { n.and_then(|s| s.checked_mul(1000)) } else { n };
                set.ttl_ms = Some(ms.ok_or("ERR invalid expire time in 'rcache.set' command".to_string())?);
            }
            "TAGS" => {
                // Counted against what was sent first; the distinct tags against max-tags.
                let items = opts.counted("TAGS", 1, usize::MAX)?;
                // A set, not `Vec::contains`: 1M arguments repeating 1024 tags must not
                // cost 10^9 comparisons. At most max-tags + 1 distinct tags enter it.
                let mut seen = std::collections::HashSet::with_capacity(items.len().min(limits.max_tags + 1));
                for &tag in items {
                    check_label(tag, "tag")?;
                    if seen.insert(tag) {
                        if set.tags.len() == limits.max_tags {
                            return err(format!("more than rcache.max-tags ({}) distinct tags", limits.max_tags));
                        }
                        set.tags.push(tag);
                    }
                }
            }
            "GRACE" => set.grace_s = Some(parse_in_range("GRACE", opts.value(name)?, 0, MAX_GRACE_S)?),
            "JITTER" => set.jitter_percent = Some(parse_in_range("JITTER", opts.value(name)?, 0, MAX_JITTER_PERCENT)?),
            "ETAG" => {
                let etag = opts.value(name)?;
                check_label(etag, "ETAG")?;
                set.etag = Some(etag);
            }
            "LEASE" => set.lease = Some(opts.value(name)?),
            _ => opts.variant_option(name, &mut set.variant, limits)?,
        }
    }
    Ok(set)
}

/// `RCACHE.LOOKUP path [QUERY q] [VARY …] [IFNONEMATCH etag] [LEASE ms] [WAIT ms]`.
pub fn parse_lookup<'a>(args: &[&'a [u8]], limits: &Limits) -> ArgResult<LookupArgs<'a>> {
    let Some((&path, rest)) = args.split_first() else { return wrong_arity("rcache.lookup") };
    check_stored_path(path, "path")?;
    let mut lookup = LookupArgs { path, variant: VariantArgs::default(), if_none_match: None, lease_ms: None, wait_ms: None };
    let mut opts = Options::new(rest);
    while let Some(name) = opts.next_keyword(&["QUERY", "VARY", "IFNONEMATCH", "LEASE", "WAIT"])? {
        match name {
            // Compared byte for byte with the stored ETag: any bytes are a valid question.
            "IFNONEMATCH" => lookup.if_none_match = Some(opts.value(name)?),
            "LEASE" => lookup.lease_ms = Some(parse_in_range("LEASE", opts.value(name)?, 1, MAX_LEASE_MS)?),
            "WAIT" => lookup.wait_ms = Some(parse_in_range("WAIT", opts.value(name)?, 1, MAX_LEASE_MS)?),
            _ => opts.variant_option(name, &mut lookup.variant, limits)?,
        }
    }
    Ok(lookup)
}

/// `RCACHE.PURGE|SOFTPURGE prefix [EXACT]`.
pub fn parse_purge<'a>(command: &str, args: &[&'a [u8]]) -> ArgResult<PurgeArgs<'a>> {
    let Some((&prefix, rest)) = args.split_first() else { return wrong_arity(command) };
    check_stored_path(prefix, "prefix")?;
    let mut opts = Options::new(rest);
    let mut exact = false;
    while opts.next_keyword(&["EXACT"])?.is_some() {
        exact = true;
    }
    Ok(PurgeArgs { prefix, exact })
}

/// `RCACHE.PURGETAG|SOFTPURGETAG tag [tag …]`.
pub fn parse_purgetag<'a>(command: &str, args: &[&'a [u8]]) -> ArgResult<Vec<&'a [u8]>> {
    if args.is_empty() {
        return wrong_arity(command);
    }
    // A set, not `Vec::contains`: a request of 100k distinct tags must not cost 10^10
    // comparisons (and block the server for seconds).
    let mut seen = std::collections::HashSet::with_capacity(args.len());
    let mut tags = Vec::with_capacity(args.len());
    for &tag in args {
        check_label(tag, "tag")?;
        if seen.insert(tag) {
            tags.push(tag);
        }
    }
    Ok(tags)
}

/// `RCACHE.LIST prefix [COUNT n] [AFTER path]`; the empty prefix lists every path.
pub fn parse_list<'a>(args: &[&'a [u8]]) -> ArgResult<ListArgs<'a>> {
    let Some((&prefix, rest)) = args.split_first() else { return wrong_arity("rcache.list") };
    if !prefix.is_empty() {
        check_stored_path(prefix, "prefix")?;
    }
    let mut list = ListArgs { prefix, count: DEFAULT_LIST_COUNT, after: None };
    let mut opts = Options::new(rest);
    while let Some(name) = opts.next_keyword(&["COUNT", "AFTER"])? {
        let value = opts.value(name)?;
        if name == "COUNT" {
            list.count = parse_positive(value)
                .and_then(|n| usize::try_from(n).ok())
                .filter(|&n| n <= MAX_LIST_COUNT)
                .ok_or(format!("ERR COUNT must be an integer from 1 to {MAX_LIST_COUNT}"))?;
        } else {
            check_stored_path(value, "AFTER path")?;
            list.after = Some(value);
        }
    }
    Ok(list)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const LIMITS: Limits = Limits { max_path_len: 64, max_vary: 4, max_tags: 3 };

    fn a(s: &[&str]) -> Vec<Vec<u8>> {
        s.iter().map(|x| x.as_bytes().to_vec()).collect()
    }

    fn set(s: &[&str]) -> ArgResult<(Option<i64>, Vec<Vec<u8>>, usize, Vec<u8>)> {
        let owned = a(s);
        let refs: Vec<&[u8]> = owned.iter().map(|v| v.as_slice()).collect();
        parse_set(&refs, &LIMITS).map(|r| (r.ttl_ms, r.tags.iter().map(|t| t.to_vec()).collect(), r.variant.vary.len(), r.variant.query.to_vec()))
    }

    #[test]
    fn quoted_arguments_show_the_bytes_sent_and_at_most_64() {
        assert_eq!(quote(b"NX"), "NX");
        assert_eq!(quote(b"a\xffb\x00\r\n"), "a\\xffb\\x00\\x0d\\x0a");
        assert_eq!(quote("\u{100}".as_bytes()), "\\xc4\\x80");
        assert_eq!(quote(&[b'x'; 64]), "x".repeat(64));
        assert_eq!(quote(&[b'x'; 65]), format!("{}...", "x".repeat(64)));
        assert_eq!(quote(&[0xff; 100]), format!("{}...", "\\xff".repeat(64)));
    }

    #[test]
    fn positive_integers_as_redis_parses_them() {
        for (arg, expected) in [
            (&b"1"[..], Some(1)),
            (b"3600000", Some(3_600_000)),
            (b"9223372036854775807", Some(i64::MAX)),
            (b"9223372036854775808", None),
            (b"0", None),
            (b"007", None),
            (b"+5", None),
            (b"-5", None),
            (b"5 ", None),
            (b"", None),
            (b"1e3", None),
        ] {
            assert_eq!(parse_positive(arg), expected, "{}", String::from_utf8_lossy(arg));
        }
    }

    #[test]
    fn set_options_in_any_order_and_any_case() {
        let (ttl, tags, vary, q) = set(&["/p", "v", "tags", "2", "a", "b", "vary", "1", "Accept", "x", "ex", "5", "Query", "?a=1"]).unwrap();
        assert_eq!(ttl, Some(5000));
        assert_eq!(tags, a(&["a", "b"]));
        assert_eq!(vary, 1);
        assert_eq!(q, b"?a=1");
        assert_eq!(set(&["/p", "v", "PX", "1"]).unwrap().0, Some(1));
        assert_eq!(set(&["/p", "v", "TAGS", "4", "a", "a", "b", "c"]).unwrap().1, a(&["a", "b", "c"]), "repeats count once");
    }

    /// The length limit protects what is stored; what is already stored stays reachable.
    #[test]
    fn only_set_applies_max_path_len() {
        let long = vec![b'/'; 65];
        let longest = vec![b'/'; path::MAX_PATH_LEN];
        assert_eq!(parse_set(&[&long, b"v"], &LIMITS).unwrap_err(), "ERR invalid path: path is longer than rcache.max-path-len (64 bytes)");
        for p in [&long, &longest] {
            assert!(parse_get("rcache.get", &[p], &LIMITS).is_ok());
            assert!(parse_get("rcache.del", &[p], &LIMITS).is_ok());
            assert!(parse_purge("rcache.purge", &[p]).is_ok());
            assert!(parse_list(&[p, b"AFTER", p]).is_ok());
        }
        let over = vec![b'/'; path::MAX_PATH_LEN + 1];
        assert_eq!(parse_get("rcache.del", &[&over], &LIMITS).unwrap_err(), "ERR invalid path: path is longer than rcache.max-path-len (65536 bytes)");
        assert!(parse_list(&[b"/", b"AFTER", &over]).is_err());
    }

    /// 1M TAGS arguments repeating 1024 tags: linear (a scan per argument took 1.8 s).
    /// Timed against the same number of arguments repeating one tag, in the same run.
    #[test]
    fn tag_dedup_is_linear() {
        let limits = Limits { max_tags: 1024, ..LIMITS };
        let timed = |distinct: usize| {
            let mut owned: Vec<Vec<u8>> = vec![b"/p".to_vec(), b"v".to_vec(), b"TAGS".to_vec(), b"1000000".to_vec()];
            owned.extend((0..1_000_000).map(|i| format!("tag:{}", i % distinct).into_bytes()));
            let refs: Vec<&[u8]> = owned.iter().map(|v| v.as_slice()).collect();
            let started = std::time::Instant::now();
            assert_eq!(parse_set(&refs, &limits).unwrap().tags.len(), distinct);
            started.elapsed().as_secs_f64()
        };
        // Best of three each (tests run in parallel on a shared machine); a scan per
        // argument was ~100x slower, so 20x still tells linear from quadratic.
        let best = |distinct: usize| (0..3).map(|_| timed(distinct)).fold(f64::MAX, f64::min);
        let (one, many) = (best(1), best(1024));
        assert!(many < 20.0 * one.max(0.01), "1024 distinct tags took {many:.3}s, 1 took {one:.3}s");
    }

    #[test]
    fn set_errors() {
        let cases: &[(&[&str], &str)] = &[
            (&["/p"], "ERR wrong number of arguments for 'rcache.set' command"),
            (&["/p", "v", "EX", "0"], "ERR invalid expire time in 'rcache.set' command"),
            (&["/p", "v", "EX", "-1"], "ERR invalid expire time in 'rcache.set' command"),
            (&["/p", "v", "EX", "1.5"], "ERR invalid expire time in 'rcache.set' command"),
            (&["/p", "v", "EX", "9223372036854775807"], "ERR invalid expire time in 'rcache.set' command"),
            (&["/p", "v", "PX", "99999999999999999999"], "ERR invalid expire time in 'rcache.set' command"),
            (&["/p", "v", "EX", "1", "PX", "1"], "ERR EX and PX cannot be used together"),
            (&["/p", "v", "EX", "1", "ex", "1"], "ERR option EX given more than once"),
            (&["/p", "v", "EX"], "ERR option EX needs a value"),
            (&["/p", "v", "NX"], "ERR unknown option 'NX'"),
            (&["/p", "v", "VARY", "2", "a", "1"], "ERR VARY count is 2 but only 1 follow"),
            (&["/p", "v", "VARY", "0"], "ERR VARY count must be a positive integer"),
            (&["/p", "v", "VARY", "5", "a", "1", "b", "1", "c", "1", "d", "1", "e", "1"], "ERR VARY count 5 is over the limit of 4"),
            (&["/p", "v", "VARY", "1", "a", "1", "b"], "ERR unknown option 'b'"),
            (&["/p", "v", "VARY", "1", "", "1"], "ERR vary name must be 1 to 1024 bytes"),
            (&["/p", "v", "TAGS", "1", "a\nb"], "ERR tag contains a control character"),
            (&["/p", "v", "TAGS", "4", "a", "b", "c", "d"], "ERR more than rcache.max-tags (3) distinct tags"),
            (&["/p", "v", "TAGS", "99999999999", "a"], "ERR TAGS count is 99999999999 but only 1 follow"),
            (&["/p?x", "v"], "ERR invalid path: path contains '?': pass the query string with QUERY"),
        ];
        for (args, want) in cases {
            assert_eq!(set(args).unwrap_err(), *want, "{:?}", args);
        }
    }

    #[test]
    fn v3_set_and_lookup_options() {
        let owned = a(&["/p", "v", "grace", "0", "JITTER", "100", "ETAG", "\"x\"", "LEASE", "\x00tok"]);
        let refs: Vec<&[u8]> = owned.iter().map(|v| v.as_slice()).collect();
        let r = parse_set(&refs, &LIMITS).unwrap();
        assert_eq!((r.grace_s, r.jitter_percent, r.etag, r.lease), (Some(0), Some(100), Some(&b"\"x\""[..]), Some(&b"\x00tok"[..])));
        let errors: &[(&[&str], &str)] = &[
            (&["/p", "v", "GRACE", "-1"], "ERR GRACE must be an integer from 0 to 315360000"),
            (&["/p", "v", "GRACE", "315360001"], "ERR GRACE must be an integer from 0 to 315360000"),
            (&["/p", "v", "GRACE", "01"], "ERR GRACE must be an integer from 0 to 315360000"),
            (&["/p", "v", "JITTER", "101"], "ERR JITTER must be an integer from 0 to 100"),
            (&["/p", "v", "ETAG", ""], "ERR ETAG must be 1 to 1024 bytes"),
            (&["/p", "v", "ETAG", "a\tb"], "ERR ETAG contains a control character"),
            (&["/p", "v", "LEASE"], "ERR option LEASE needs a value"),
            (&["/p", "v", "GRACE", "1", "GRACE", "1"], "ERR option GRACE given more than once"),
        ];
        for (args, want) in errors {
            assert_eq!(set(args).unwrap_err(), *want, "{:?}", args);
        }
        let lookup = |s: &[&str]| {
            let owned = a(s);
            let refs: Vec<&[u8]> = owned.iter().map(|v| v.as_slice()).collect();
            parse_lookup(&refs, &LIMITS).map(|r| (r.if_none_match.map(<[u8]>::to_vec), r.lease_ms, r.wait_ms, r.variant.query.to_vec()))
        };
        assert_eq!(lookup(&["/p", "wait", "1", "lease", "3600000", "IfNoneMatch", "*", "QUERY", "a=1"]), Ok((Some(b"*".to_vec()), Some(3_600_000), Some(1), b"a=1".to_vec())));
        assert_eq!(lookup(&["/p", "LEASE", "0"]).unwrap_err(), "ERR LEASE must be an integer from 1 to 3600000");
        assert_eq!(lookup(&["/p", "WAIT", "3600001"]).unwrap_err(), "ERR WAIT must be an integer from 1 to 3600000");
        assert_eq!(lookup(&["/p", "TAGS", "1", "a"]).unwrap_err(), "ERR unknown option 'TAGS'");
        assert_eq!(lookup(&[]).unwrap_err(), "ERR wrong number of arguments for 'rcache.lookup' command");
    }

    #[test]
    fn purge_list_and_purgetag() {
        assert_eq!(parse_purge("rcache.purge", &[b"/a", b"exact"]), Ok(PurgeArgs { prefix: b"/a", exact: true }));
        assert_eq!(parse_purge("rcache.purge", &[b"/a", b"EXACT", b"EXACT"]).unwrap_err(), "ERR option EXACT given more than once");
        assert_eq!(parse_purge("rcache.purge", &[b"/a", b"ALL"]).unwrap_err(), "ERR unknown option 'ALL'");
        assert_eq!(parse_purge("rcache.purge", &[b""]).unwrap_err(), "ERR invalid prefix: path is empty", "only LIST takes the empty prefix");
        assert_eq!(parse_list(&[b"/a", b"count", b"5", b"AFTER", b"/a/b"]), Ok(ListArgs { prefix: b"/a", count: 5, after: Some(b"/a/b") }));
        assert_eq!(parse_list(&[b"", b"AFTER", b"x"]), Ok(ListArgs { prefix: b"", count: 100, after: Some(b"x") }));
        assert_eq!(parse_list(&[b"/a", b"AFTER", b""]).unwrap_err(), "ERR invalid AFTER path: path is empty");
        assert_eq!(parse_list(&[b"/a", b"COUNT", b"10001"]).unwrap_err(), "ERR COUNT must be an integer from 1 to 10000");
        assert_eq!(parse_list(&[b"/a", b"COUNT", b"0"]).unwrap_err(), "ERR COUNT must be an integer from 1 to 10000");
        assert_eq!(parse_purgetag("rcache.purgetag", &[b"a", b"a", b"b"]), Ok(vec![&b"a"[..], b"b"]));
        assert_eq!(parse_purgetag("rcache.purgetag", &[b""]).unwrap_err(), "ERR tag must be 1 to 1024 bytes");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(5000))]

        /// The parsers never panic, whatever they are sent.
        #[test]
        fn parsers_never_panic(args in proptest::collection::vec(prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..6),
            Just(b"VARY".to_vec()), Just(b"TAGS".to_vec()), Just(b"EX".to_vec()), Just(b"PX".to_vec()),
            Just(b"QUERY".to_vec()), Just(b"COUNT".to_vec()), Just(b"AFTER".to_vec()), Just(b"EXACT".to_vec()),
            Just(b"GRACE".to_vec()), Just(b"JITTER".to_vec()), Just(b"ETAG".to_vec()), Just(b"LEASE".to_vec()), Just(b"WAIT".to_vec()),
            Just(b"IFNONEMATCH".to_vec()), Just(b"0".to_vec()), Just(b"3600001".to_vec()),
            Just(b"1".to_vec()), Just(b"2".to_vec()), Just(b"-1".to_vec()), Just(b"18446744073709551616".to_vec()), Just(b"/a".to_vec()),
        ], 0..12)) {
            let refs: Vec<&[u8]> = args.iter().map(|v| v.as_slice()).collect();
            let _ = parse_set(&refs, &LIMITS);
            let _ = parse_get("rcache.get", &refs, &LIMITS);
            let _ = parse_purge("rcache.purge", &refs);
            let _ = parse_purgetag("rcache.purgetag", &refs);
            let _ = parse_lookup(&refs, &LIMITS);
            let _ = parse_list(&refs);
        }
    }
}
