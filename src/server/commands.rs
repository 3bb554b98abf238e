//! The RCACHE.* command handlers: parse (pure), touch keys through the key API,
//! replicate effects, then update the index. The index lock is taken only for the
//! in-memory steps, never while Redis is being called.

use std::ffi::CStr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Instant;

use crate::core::args::{self, ArgResult};
use crate::core::config;
use crate::core::entry::{self, Header, Soften, State};
use crate::server::events;
use crate::core::cluster::Target;
use crate::ffi::{self, AclUser, Argv, Command, Ctx, Key, KeyKind, RString, NOTIFY_GENERIC, NOTIFY_STRING};
use crate::server::cluster;
use crate::server::guard::guarded;
use crate::server::purges;
use crate::core::key::{entry_key, entry_key_name, parse_entry_key, Variant};
use crate::core::lease::{Found, Token};
use crate::core::path::Coverage;
use crate::core::stats::{bump, STATS};
use crate::server::leases;
use crate::server::store;

const WRONGTYPE: &str = "WRONGTYPE Operation against a key holding the wrong kind of value";

enum Reply {
    Ok,
    Null,
    Int(i64),
    Bulk(Vec<u8>),
    Paths(Vec<Vec<u8>>),
    /// The handler replied itself (to reply straight from the stored bytes).
    Sent,
}

/// Every command enters here: arguments as byte slices borrowed from argv, the
/// handler behind the panic guard, its outcome sent as the reply.
fn run(ctx: Ctx, argv: Argv<'_>, name: &str, handler: fn(Ctx, &[&[u8]]) -> ArgResult<Reply>) {
    let internal = || Err(format!("ERR internal error in {name}; see the server log"));
    match guarded(ctx, name, internal, || argv.with_bytes(|args| handler(ctx, args))) {
        Ok(Reply::Ok) => ctx.reply_simple(c"OK"),
        Ok(Reply::Null) => ctx.reply_null(),
        Ok(Reply::Int(n)) => ctx.reply_i64(n),
        Ok(Reply::Bulk(b)) => ctx.reply_bulk(&b),
        Ok(Reply::Paths(paths)) => {
            ctx.reply_array(paths.len());
            paths.iter().for_each(|p| ctx.reply_bulk(p));
        }
        Ok(Reply::Sent) => {}
        Err(msg) => ctx.reply_error(&printable(&msg)),
    }
}

/// Error replies quote client bytes. redis-module turns a reply's chars into bytes with
/// `as u8` and aborts the server when that yields a NUL (a quoted 'Ā', U+0100, did), so
/// replies are kept to printable ASCII: any other byte is written `\xNN`.
pub fn printable(msg: &str) -> String {
    args::printable(msg.as_bytes())
}

/// One type per command, for its raw entry point (`ffi::entry_point`).
macro_rules! commands {
    ($($ty:ident: $name:literal => $handler:ident,)*) => {$(
        pub struct $ty;
        impl Command for $ty {
            fn call(ctx: Ctx, argv: Argv<'_>) {
                run(ctx, argv, $name, $handler)
            }
        }
    )*};
}

commands! {
    Set: "rcache.set" => set_impl,
    Get: "rcache.get" => get_impl,
    Lookup: "rcache.lookup" => lookup_impl,
    Del: "rcache.del" => del_impl,
    Purge: "rcache.purge" => purge_impl,
    SoftPurge: "rcache.softpurge" => softpurge_impl,
    PurgeTag: "rcache.purgetag" => purgetag_impl,
    SoftPurgeTag: "rcache.softpurgetag" => softpurgetag_impl,
    List: "rcache.list" => list_impl,
    KeyName: "rcache.key" => key_impl,
}

/// A cheap random number for JITTER (xorshift64*, seeded from the clock at first use):
/// spreading expiries needs uniformity, not unpredictability.
fn random_u64() -> u64 {
    static STATE: AtomicU64 = AtomicU64::new(0);
    let mut x = STATE.load(Relaxed);
    if x == 0 {
        x = (ffi::milliseconds() as u64) | 1;
    }
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    STATE.store(x, Relaxed);
    x.wrapping_mul(0x2545_f491_4f6c_dd1d)
}

fn set_impl(ctx: Ctx, argv: &[&[u8]]) -> ArgResult<Reply> {
    let req = args::parse_set(argv, &config::limits())?;
    let ttl_ms = req.ttl_ms.or(match config::DEFAULT_TTL.get() {
        0 => None,
        seconds => Some(seconds * 1000),
    });
    let grace_s = req.grace_s.unwrap_or_else(|| config::DEFAULT_GRACE.get());
    let now = ffi::milliseconds();
    let invalid_expire = || "ERR invalid expire time in 'rcache.set' command".to_string();
    // The fresh lifetime ends at `fresh_until`; the key expires when its grace ends too.
    let (fresh_until, expire_at) = match ttl_ms {
        Some(ms) => {
            let jitter = req.jitter_percent.unwrap_or_else(|| config::TTL_JITTER.get());
            let fresh_until = now.checked_add(entry::jittered_ttl(ms, jitter, random_u64())).ok_or_else(invalid_expire)?;
            (fresh_until, Some(fresh_until.checked_add(grace_s * 1000).ok_or_else(invalid_expire)?))
        }
        None => (0, None),
    };
    let lifetime = entry::Lifetime {
        // Later than every pending purge, which must never cover what is stored after it.
        stored_at_ms: u64::try_from(now).unwrap_or(0).max(purges::stored_at_floor()),
        fresh_until_ms: u64::try_from(fresh_until).unwrap_or(0),
        grace_s: u32::try_from(grace_s).unwrap_or(u32::MAX),
    };
    let computed;
    let etag = match req.etag {
        Some(etag) => etag,
        None => {
            computed = entry::computed_etag(req.value);
            &computed[..]
        }
    };
    let variant = req.variant.variant();
    let key_name = entry_key_name(req.path, &variant);
    let key = ctx.string(&key_name);
    let db = ctx.selected_db();
    // The stale-set guard: a refill whose lease no longer allows it changes nothing.
    if let Some(token) = req.lease {
        if !leases::may_set(ctx, db, req.path, &variant, token, &req.tags) {
            bump(&STATS.lease_sets_rejected, 1);
            return Ok(Reply::Null);
        }
    }
    let replaced_untagged_entry = {
        let mut open = open_entry(ctx, req.path, &key, true)?;
        // An entry already here is already indexed (the index follows the keyspace, and
        // a pending re-read covers one written by a plain SET): refreshing an untagged
        // entry without tags needs no index work, the common case for a cache.
        // (Not while a purge is pending: the old entry may be one it hid, out of the index.)
        let untagged = !purges::any_pending() && open.string().is_some_and(|old| entry::decode(old).is_ok_and(|e| e.tags.is_empty()));
        let len = entry::encoded_len(req.value.len(), etag, &req.tags);
        let written = open.write_string(len, |out| entry::encode_into(out, req.value, lifetime, etag, &req.tags));
        let expiry_set = match expire_at {
            Some(at) => open.set_abs_expire(at),
            None => open.remove_expire(),
        };
        if !written || !expiry_set {
            return Err("ERR could not write the entry".into());
        }
        ctx.replicate_set(&key, open.string().unwrap_or_default(), expire_at);
        untagged
    };
    notify(ctx, NOTIFY_STRING, c"set", &key);
    if expire_at.is_some() {
        notify(ctx, NOTIFY_GENERIC, c"expire", &key);
    }
    events::signal_paths(ctx, [req.path]); // WATCH and client tracking see the path change
    if !(replaced_untagged_entry && req.tags.is_empty()) {
        store::with(|s| s.db(db).insert(req.path, variant, &req.tags));
    }
    // Any store ends the entry's lease and answers everyone waiting for it.
    leases::stored(ctx, db, req.path, &variant);
    bump(&STATS.sets, 1);
    if req.lease.is_some() {
        bump(&STATS.lease_sets, 1);
    }
    Ok(Reply::Ok)
}

/// The header of the entry an open key (of `path`) holds, as the commands must see
/// it: `None` when there is none or a pending purge hid it (MISS); stale when a pending
/// soft purge made it so.
fn entry_header(ctx: Ctx, key: &Key, path: &[u8], variant: &Variant) -> ArgResult<Option<Header>> {
    let header = match key.kind() {
        KeyKind::Empty => return Ok(None),
        KeyKind::String => entry::header(key.string().unwrap_or_default()).map_err(|e| format!("ERR {e}"))?,
        KeyKind::Other => return Err(WRONGTYPE.into()),
    };
    if !purges::any_pending() {
        return Ok(Some(header));
    }
    Ok(purges::visible(ctx.selected_db(), path, variant, header, ffi::milliseconds(), key.abs_expire()))
}

/// Opens the key of an entry for GET, LOOKUP, SET or DEL. In a cluster, an entry that
/// is not here, in a slot this node is importing, is a TRYAGAIN (see `cluster`); and
/// while a cluster-wide purge may be running, entries that just arrived are re-read
/// first, so one it covers is removed rather than served.
fn open_entry(ctx: Ctx, path: &[u8], key: &RString, write: bool) -> ArgResult<Key> {
    if cluster::purges_in_flight() {
        events::process_pending(ctx);
    }
    let open = ctx.open_key(key, write);
    if open.kind() == KeyKind::Empty {
        cluster::check_absent_entry_is_ours(ctx, path)?;
    }
    Ok(open)
}

fn get_impl(ctx: Ctx, argv: &[&[u8]]) -> ArgResult<Reply> {
    let req = args::parse_get("rcache.get", argv, &config::limits())?;
    let variant = req.variant.variant();
    let key = open_entry(ctx, req.path, &ctx.string(&entry_key_name(req.path, &variant)), false)?;
    match entry_header(ctx, &key, req.path, &variant)? {
        Some(h) if h.state(ffi::milliseconds()) == State::Fresh => {
            ctx.reply_bulk(key.string().and_then(|b| b.get(h.value_at..)).unwrap_or_default());
            bump(&STATS.hits, 1);
        }
        // A stale entry is a miss for GET.
        _ => {
            bump(&STATS.misses, 1);
            ctx.reply_null();
        }
    }
    Ok(Reply::Sent)
}

fn lookup_impl(ctx: Ctx, argv: &[&[u8]]) -> ArgResult<Reply> {
    let req = args::parse_lookup(argv, &config::limits())?;
    leases::check_not_replica(ctx, req.lease_ms, req.wait_ms)?;
    let variant = req.variant.variant();
    let key = open_entry(ctx, req.path, &ctx.string(&entry_key_name(req.path, &variant)), false)?;
    let found = entry_header(ctx, &key, req.path, &variant)?;
    let mut token = None;
    if req.lease_ms.is_some() || req.wait_ms.is_some() {
        let state = match &found {
            None => Found::Miss,
            Some(h) if h.state(ffi::milliseconds()) == State::Fresh => Found::Fresh,
            Some(_) => Found::Stale,
        };
        match leases::lookup(ctx, ctx.selected_db(), req.path, &variant, state, req.lease_ms, req.wait_ms) {
            // Answered by the reply callback once released (or at its WAIT deadline).
            leases::Answer::Blocked => return Ok(Reply::Sent),
            leases::Answer::Granted(t) => token = Some(t),
            leases::Answer::Nothing => {}
        }
    }
    reply_lookup(ctx, &key, found.as_ref(), req.if_none_match, token.as_ref().map(Token::as_bytes));
    Ok(Reply::Sent)
}

/// A released LOOKUP waiter (`argv`: its own arguments) is answered as a fresh LOOKUP
/// would be, plus the lease it was handed while that lease is still live. Returns
/// whether the reply carried a lease (`None` for an error reply).
pub fn answer_waiter(ctx: Ctx, argv: &[&[u8]], handed: Option<Token>) -> Option<bool> {
    let answer = || -> ArgResult<bool> {
        let req = args::parse_lookup(argv, &config::limits())?;
        let variant = req.variant.variant();
        let key = ctx.open_key(&ctx.string(&entry_key(req.path, &variant)), false);
        let found = entry_header(ctx, &key, req.path, &variant)?;
        let token = handed.filter(|t| leases::holds(ctx.selected_db(), req.path, &variant, t));
        reply_lookup(ctx, &key, found.as_ref(), req.if_none_match, token.as_ref().map(Token::as_bytes));
        Ok(token.is_some())
    };
    answer().map_err(|msg| ctx.reply_error(&printable(&msg))).ok()
}

/// A LOOKUP waiter whose WAIT ran out: `MISS`, no lease.
pub fn answer_timed_out_waiter(ctx: Ctx) {
    reply_miss(ctx, None);
}

/// LOOKUP's 6-element reply for what `key` holds (`found`, from [`entry_header`]), with
/// the lease token granted to this caller, if any. Counts the answer in INFO.
fn reply_lookup(ctx: Ctx, key: &Key, found: Option<&Header>, if_none_match: Option<&[u8]>, lease: Option<&[u8]>) {
    let Some(h) = found else { return reply_miss(ctx, lease) };
    // Everything is worked out before the first part of the reply goes out.
    let now = ffi::milliseconds();
    let bytes = key.string().unwrap_or_default();
    let etag = bytes.get(h.etag.clone()).unwrap_or_default();
    let state = h.state(now);
    let ttl = match state {
        State::Stale => 0,
        State::Fresh => match h.lifetime.fresh_left_ms(now) {
            Some(left) => left,
            // No fresh lifetime of its own: a v1 entry is fresh until its key expires.
            None => key.abs_expire().filter(|_| h.version == 1).map_or(-1, |at| at.saturating_sub(now).max(1)),
        },
    };
    let age = h.lifetime.age_ms(now);
    ctx.reply_array(6);
    match state {
        State::Fresh => {
            bump(&STATS.hits, 1);
            ctx.reply_simple(c"FRESH");
        }
        State::Stale => {
            bump(&STATS.stale_hits, 1);
            ctx.reply_simple(c"STALE");
        }
    }
    if if_none_match == Some(etag) {
        bump(&STATS.not_modified, 1);
        ctx.reply_null();
    } else {
        ctx.reply_bulk(bytes.get(h.value_at..).unwrap_or_default());
    }
    ctx.reply_bulk(etag);
    ctx.reply_i64(age);
    ctx.reply_i64(ttl);
    reply_lease(ctx, lease);
}

fn reply_miss(ctx: Ctx, lease: Option<&[u8]>) {
    bump(&STATS.misses, 1);
    ctx.reply_array(6);
    ctx.reply_simple(c"MISS");
    (0..4).for_each(|_| ctx.reply_null());
    reply_lease(ctx, lease);
}

fn reply_lease(ctx: Ctx, lease: Option<&[u8]>) {
    match lease {
        Some(token) => ctx.reply_bulk(token),
        None => ctx.reply_null(),
    }
}

fn del_impl(ctx: Ctx, argv: &[&[u8]]) -> ArgResult<Reply> {
    let req = args::parse_get("rcache.del", argv, &config::limits())?;
    let variant = req.variant.variant();
    let key_name = entry_key(req.path, &variant);
    drop(open_entry(ctx, req.path, &ctx.string(&key_name), false)?);
    let deleted = delete_keys(ctx, vec![key_name]);
    let db = ctx.selected_db();
    // Ends the lease whether or not the entry existed (the contract's stale-set guard).
    leases::deleted(ctx, db, req.path, &variant);
    if deleted.is_empty() {
        return Ok(Reply::Int(0));
    }
    store::with(|s| s.remove(db, req.path, &variant));
    bump(&STATS.dels, 1);
    Ok(Reply::Int(1))
}

/// The entry keys a prefix purge covers, after `user`'s permission to remove them
/// all was checked.
fn covered_keys(ctx: Ctx, db: i32, user: &AclUser, coverage: &Coverage<'_>) -> ArgResult<Vec<Vec<u8>>> {
    events::process_pending(ctx);
    let (paths, keys) = store::with(|s| s.existing_db(db).map(|d| d.covered(coverage)).unwrap_or_default());
    check_write_permission(user, paths.iter().map(Vec::as_slice))?;
    Ok(keys)
}

/// The live entries carrying any of `tags`, as (path, variant), after `user`'s
/// permission check. (Entries a pending purge hid still carry their tags until
/// removed: not these purges' to count, nor their leases to end.)
fn tagged_entries(ctx: Ctx, db: i32, user: &AclUser, tags: &[&[u8]]) -> ArgResult<Vec<(Vec<u8>, Variant)>> {
    events::process_pending(ctx);
    let entries = store::with(|s| s.existing_db(db).map(|d| d.tagged(tags)).unwrap_or_default());
    if !user.writes_every_key() {
        check_write_permission(user, entries.iter().map(|(path, _)| path.as_slice()))?;
    }
    Ok(entries)
}

/// The NOPERM decision of a purge, touching nothing (a cluster-wide purge's first phase).
pub fn check_locally(ctx: Ctx, db: i32, user: &AclUser, target: &Target) -> ArgResult<()> {
    match target {
        Target::Prefix { .. } => match target.coverage() {
            Some(coverage) => check_prefix_permission(ctx, db, user, &coverage),
            None => Ok(()),
        },
        Target::Tags(tags) => tagged_entries(ctx, db, user, &tags.iter().map(Vec::as_slice).collect::<Vec<_>>()).map(drop),
    }
}

/// `user` may remove every entry the coverage includes (NOPERM otherwise). A user whose
/// key patterns allow every key needs no look at the paths.
fn check_prefix_permission(ctx: Ctx, db: i32, user: &AclUser, coverage: &Coverage<'_>) -> ArgResult<()> {
    events::process_pending(ctx);
    if user.writes_every_key() {
        return Ok(());
    }
    let paths = store::with(|s| s.existing_db(db).map(|d| d.paths.list(coverage, None, usize::MAX)).unwrap_or_default());
    check_write_permission(user, paths.iter().map(Vec::as_slice))
}

/// One purge command's work on this server: removes (or soft-purges) what `target`
/// covers in `db`, if `user` may touch all of it; returns the entries it counted.
/// Every purge goes through here, on every primary of a cluster. A hard purge larger
/// than one slice of work is hidden at once and removed in the background (`purges`):
/// for a prefix in bounded time whatever it covers, for tags in one in-memory step
/// per entry instead of a key deletion.
pub fn purge_locally(ctx: Ctx, db: i32, user: &AclUser, soft: bool, target: &Target) -> ArgResult<u64> {
    let started = Instant::now();
    let counted = match target {
        Target::Prefix { .. } => {
            let Some(coverage) = target.coverage() else { return Ok(0) };
            events::process_pending(ctx);
            let covered = store::with(|s| s.existing_db(db).map_or(0, |d| d.paths.count_covered(&coverage)));
            let counted = if !soft && covered > purges::sync_limit() {
                check_prefix_permission(ctx, db, user, &coverage)?;
                purges::start(ctx, db, target, |d, job| d.hide_covered(job, &coverage))
            } else {
                let keys = covered_keys(ctx, db, user, &coverage)?;
                if soft {
                    soften_keys(ctx, db, keys)
                } else {
                    let deleted = delete_keys(ctx, keys);
                    store::with(|s| s.db(db).remove_covered(&coverage));
                    deleted.len() as u64
                }
            };
            leases::purged(ctx, db, &coverage);
            counted
        }
        Target::Tags(tags) => {
            let tags: Vec<&[u8]> = tags.iter().map(Vec::as_slice).collect();
            let entries = tagged_entries(ctx, db, user, &tags)?;
            leases::tags_purged(ctx, db, &tags, &entries);
            if !soft && entries.len() > purges::sync_limit() {
                let hidden = purges::start(ctx, db, target, |d, job| d.hide_all(job, &entries));
                return Ok(count_purged(soft, target, started, hidden));
            }
            let keys: Vec<Vec<u8>> = entries.iter().map(|(path, variant)| entry_key(path, variant)).collect();
            if soft {
                soften_keys(ctx, db, keys)
            } else {
                let deleted = delete_keys(ctx, keys);
                forget_keys(db, &deleted);
                deleted.len() as u64
            }
        }
    };
    Ok(count_purged(soft, target, started, counted))
}

/// Counts a purge's entries in INFO, and the time it took; returns the count.
fn count_purged(soft: bool, target: &Target, started: Instant, counted: u64) -> u64 {
    let entries = match (soft, target) {
        (false, Target::Prefix { .. }) => &STATS.purged_entries,
        (true, Target::Prefix { .. }) => &STATS.soft_purged_entries,
        (false, Target::Tags(_)) => &STATS.tag_purged_entries,
        (true, Target::Tags(_)) => &STATS.soft_tag_purged_entries,
    };
    bump(entries, counted);
    STATS.purge_took(started.elapsed().as_micros() as u64);
    counted
}

/// Counts a purge command that succeeded (once, on the server that took it).
pub fn count_purge_command(soft: bool, target: &Target) {
    let commands = match (soft, target) {
        (false, Target::Prefix { .. }) => &STATS.purges,
        (true, Target::Prefix { .. }) => &STATS.soft_purges,
        (false, Target::Tags(_)) => &STATS.tag_purges,
        (true, Target::Tags(_)) => &STATS.soft_tag_purges,
    };
    bump(commands, 1);
}

/// PURGE, SOFTPURGE, PURGETAG, SOFTPURGETAG: here, or on every primary of a cluster.
fn purge_command(ctx: Ctx, soft: bool, target: Target) -> ArgResult<Reply> {
    let db = ctx.selected_db();
    let user = ctx.acl_user();
    if cluster::fans_out(ctx, &target) {
        // Refused here, the request never reaches the other primaries.
        check_locally(ctx, db, &user, &target)?;
        drop(user);
        if cluster::start_purge(ctx, db, soft, target.clone())? {
            return Ok(Reply::Sent);
        }
        let n = purge_locally(ctx, db, &ctx.acl_user(), soft, &target)?;
        count_purge_command(soft, &target);
        return Ok(Reply::Int(n as i64));
    }
    let n = purge_locally(ctx, db, &user, soft, &target)?;
    count_purge_command(soft, &target);
    Ok(Reply::Int(n as i64))
}

fn purge_impl(ctx: Ctx, argv: &[&[u8]]) -> ArgResult<Reply> {
    let req = args::parse_purge("rcache.purge", argv)?;
    purge_command(ctx, false, Target::Prefix { prefix: req.prefix.to_vec(), exact: req.exact })
}

fn softpurge_impl(ctx: Ctx, argv: &[&[u8]]) -> ArgResult<Reply> {
    let req = args::parse_purge("rcache.softpurge", argv)?;
    purge_command(ctx, true, Target::Prefix { prefix: req.prefix.to_vec(), exact: req.exact })
}

fn purgetag_impl(ctx: Ctx, argv: &[&[u8]]) -> ArgResult<Reply> {
    let tags = args::parse_purgetag("rcache.purgetag", argv)?;
    purge_command(ctx, false, Target::Tags(tags.iter().map(|t| t.to_vec()).collect()))
}

fn softpurgetag_impl(ctx: Ctx, argv: &[&[u8]]) -> ArgResult<Reply> {
    let tags = args::parse_purgetag("rcache.softpurgetag", argv)?;
    purge_command(ctx, true, Target::Tags(tags.iter().map(|t| t.to_vec()).collect()))
}

/// Drops deleted entry keys from the index of `db`.
fn forget_keys(db: i32, deleted: &[Vec<u8>]) {
    store::with(|s| {
        for key in deleted {
            if let Some((path, variant)) = parse_entry_key(key) {
                s.remove(db, path, &variant);
            }
        }
    });
}

/// Soft-purges the entries at `keys`: each fresh one becomes stale for its grace from
/// now (fresh-until rewritten in place, replicated as SETRANGE + PEXPIREAT), or is
/// removed when it has no grace. Returns how many were fresh.
fn soften_keys(ctx: Ctx, db: i32, keys: Vec<Vec<u8>>) -> u64 {
    let now = ffi::milliseconds();
    let stale_from = entry::stale_since(now).to_le_bytes();
    let (mut softened, mut removed) = (0, Vec::new());
    for name in keys {
        let key = ctx.string(&name);
        let mut open = ctx.open_key(&key, true);
        let Some(Ok(header)) = open.string().map(entry::header) else { continue };
        if open.string().is_some_and(|bytes| purges::hides_key(db, &name, bytes)) {
            continue;
        }
        match entry::soften(&header, now, open.abs_expire()) {
            Soften::AlreadyStale => {}
            Soften::Remove => removed.push(name),
            Soften::Stale { expire_at_ms } => {
                if open.patch_string(entry::FRESH_UNTIL_AT, &stale_from) && open.set_abs_expire(expire_at_ms) {
                    drop(open);
                    ctx.replicate_patch(&key, entry::FRESH_UNTIL_AT, &stale_from, expire_at_ms);
                    notify(ctx, NOTIFY_STRING, c"setrange", &key);
                    notify(ctx, NOTIFY_GENERIC, c"expire", &key);
                    events::signal_paths(ctx, parse_entry_key(&name).map(|(path, _)| path));
                    softened += 1;
                }
            }
        }
    }
    let deleted = delete_keys(ctx, removed);
    forget_keys(db, &deleted);
    softened + deleted.len() as u64
}

/// LIST's page from this server's index (the empty prefix: every path).
pub fn list_locally(ctx: Ctx, db: i32, prefix: &[u8], after: Option<&[u8]>, count: usize) -> Vec<Vec<u8>> {
    events::process_pending(ctx);
    let coverage = if prefix.is_empty() { Coverage::all() } else { Coverage::prefix(prefix) };
    store::with(|s| s.existing_db(db).map(|d| d.paths.list(&coverage, after, count)).unwrap_or_default())
}

fn list_impl(ctx: Ctx, argv: &[&[u8]]) -> ArgResult<Reply> {
    let req = args::parse_list(argv)?;
    let db = ctx.selected_db();
    let paths = list_locally(ctx, db, req.prefix, req.after, req.count);
    let target = Target::Prefix { prefix: req.prefix.to_vec(), exact: false };
    if cluster::fans_out(ctx, &target) && cluster::start_list(ctx, db, req.prefix, req.after, req.count, paths.clone())? {
        return Ok(Reply::Sent);
    }
    Ok(Reply::Paths(paths))
}

fn key_impl(_ctx: Ctx, argv: &[&[u8]]) -> ArgResult<Reply> {
    let req = args::parse_get("rcache.key", argv, &config::limits())?;
    Ok(Reply::Bulk(entry_key(req.path, &req.variant.variant())))
}

/// Raises our own keyspace event (key-API writes raise none) for other subscribers;
/// our own callback ignores it, as the index is updated by the command itself.
fn notify(ctx: Ctx, class: std::ffi::c_int, event: &CStr, key: &RString) {
    events::while_notifying_ourselves(|| ctx.notify(class, event, key));
}

/// PURGE and PURGETAG remove only what the caller may write: one path outside its ACL
/// key permissions refuses the whole request.
fn check_write_permission<'a>(user: &AclUser, paths: impl Iterator<Item = &'a [u8]>) -> ArgResult<()> {
    let mut last: Option<&[u8]> = None;
    for path in paths {
        if last != Some(path) && !user.may_write(path) {
            return Err(format!("NOPERM this user has no permission to remove entries under '{}'", args::quote(path)));
        }
        last = Some(path);
    }
    Ok(())
}

/// Deletes the keys that still exist (an expired one is gone for us too: opening it
/// lets Redis expire it, and our callback drops it from the index), replicates the
/// deletions as UNLINK and raises `del` events. Returns the deleted key names.
pub fn delete_keys(ctx: Ctx, keys: Vec<Vec<u8>>) -> Vec<Vec<u8>> {
    let mut deleted = Vec::with_capacity(keys.len());
    let mut deleted_names = Vec::with_capacity(keys.len());
    let db = ctx.selected_db();
    for name in keys {
        let key = ctx.string(&name);
        let mut open = ctx.open_key(&key, true);
        // An entry a pending purge hid is that purge's to remove (and count).
        let hidden = || open.string().is_some_and(|bytes| purges::hides_key(db, &name, bytes));
        if open.kind() != KeyKind::Empty && !hidden() && open.delete() {
            drop(open);
            deleted.push(key);
            deleted_names.push(name);
        }
    }
    ctx.replicate_unlink(&deleted);
    for key in &deleted {
        notify(ctx, NOTIFY_GENERIC, c"del", key);
    }
    // WATCH and client tracking see every path that lost an entry.
    events::signal_paths(ctx, deleted_names.iter().filter_map(|k| parse_entry_key(k).map(|(path, _)| path)));
    deleted_names
}
