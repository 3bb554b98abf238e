//! The RCACHE.* command handlers: parse (pure), touch keys through the key API,
//! replicate effects, then update the index. The index lock is taken only for the
//! in-memory steps, never while Redis is being called.

use std::ffi::CStr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Instant;

use redis_module::{Context, RedisError, RedisResult, RedisString, RedisValue};

use crate::core::args::{self, ArgResult};
use crate::core::config;
use crate::core::entry::{self, Header, Soften, State};
use crate::server::events;
use crate::core::cluster::Target;
use crate::ffi::{self, AclUser, Ctx, Key, KeyKind, RString, NOTIFY_GENERIC, NOTIFY_STRING};
use crate::server::cluster;
use crate::server::guard::guarded;
use crate::core::key::{entry_key, parse_entry_key, Variant};
use crate::core::path::Coverage;
use crate::core::stats::{bump, STATS};
use crate::server::store;

const WRONGTYPE: &str = "WRONGTYPE Operation against a key holding the wrong kind of value";

enum Reply {
    Ok,
    Int(i64),
    Bulk(Vec<u8>),
    Paths(Vec<Vec<u8>>),
    /// The handler replied itself (to reply straight from the stored bytes).
    Sent,
}

/// Every command enters here: arguments as byte slices, the handler behind the
/// panic guard, its outcome turned into a reply.
fn run(ctx: &Context, args: &[RedisString], name: &str, handler: fn(Ctx, &[&[u8]]) -> ArgResult<Reply>) -> RedisResult {
    let ctx = Ctx::from_raw(ctx.ctx);
    // Most requests have a handful of arguments: keep them on the stack.
    let mut few: [&[u8]; 16] = [&[]; 16];
    let many: Vec<&[u8]>;
    let argv: &[&[u8]] = if args.len() <= few.len() {
        for (slot, a) in few.iter_mut().zip(args.iter().skip(1)) {
            *slot = a.as_slice();
        }
        &few[..args.len().saturating_sub(1)]
    } else {
        many = args.iter().skip(1).map(|a| a.as_slice()).collect();
        &many
    };
    let internal = || Err(format!("ERR internal error in {name}; see the server log"));
    match guarded(ctx, name, internal, || handler(ctx, argv)) {
        Ok(Reply::Ok) => Ok(RedisValue::SimpleStringStatic("OK")),
        Ok(Reply::Int(n)) => Ok(RedisValue::Integer(n)),
        Ok(Reply::Bulk(b)) => Ok(RedisValue::StringBuffer(b)),
        Ok(Reply::Paths(p)) => Ok(RedisValue::Array(p.into_iter().map(RedisValue::StringBuffer).collect())),
        Ok(Reply::Sent) => Ok(RedisValue::NoReply),
        Err(msg) => Err(RedisError::String(printable(&msg))),
    }
}

/// Error replies quote client bytes. redis-module turns a reply's chars into bytes with
/// `as u8` and aborts the server when that yields a NUL (a quoted 'Ā', U+0100, did), so
/// replies are kept to printable ASCII: any other byte is written `\xNN`.
pub fn printable(msg: &str) -> String {
    let mut out = String::with_capacity(msg.len());
    for &b in msg.as_bytes() {
        if (0x20..0x7f).contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out
}

pub fn set(ctx: &Context, args: Vec<RedisString>) -> RedisResult {
    run(ctx, &args, "rcache.set", set_impl)
}
pub fn get(ctx: &Context, args: Vec<RedisString>) -> RedisResult {
    run(ctx, &args, "rcache.get", get_impl)
}
pub fn lookup(ctx: &Context, args: Vec<RedisString>) -> RedisResult {
    run(ctx, &args, "rcache.lookup", lookup_impl)
}
pub fn del(ctx: &Context, args: Vec<RedisString>) -> RedisResult {
    run(ctx, &args, "rcache.del", del_impl)
}
pub fn purge(ctx: &Context, args: Vec<RedisString>) -> RedisResult {
    run(ctx, &args, "rcache.purge", purge_impl)
}
pub fn softpurge(ctx: &Context, args: Vec<RedisString>) -> RedisResult {
    run(ctx, &args, "rcache.softpurge", softpurge_impl)
}
pub fn purgetag(ctx: &Context, args: Vec<RedisString>) -> RedisResult {
    run(ctx, &args, "rcache.purgetag", purgetag_impl)
}
pub fn softpurgetag(ctx: &Context, args: Vec<RedisString>) -> RedisResult {
    run(ctx, &args, "rcache.softpurgetag", softpurgetag_impl)
}
pub fn list(ctx: &Context, args: Vec<RedisString>) -> RedisResult {
    run(ctx, &args, "rcache.list", list_impl)
}
pub fn key(ctx: &Context, args: Vec<RedisString>) -> RedisResult {
    run(ctx, &args, "rcache.key", key_impl)
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
        stored_at_ms: u64::try_from(now).unwrap_or(0),
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
    let key_name = entry_key(req.path, &variant);
    let stored = entry::encode(req.value, lifetime, etag, &req.tags);
    let key = ctx.string(&key_name);
    let replaced_untagged_entry = {
        let open = open_entry(ctx, req.path, &variant, true)?;
        // An entry already here is already indexed (the index follows the keyspace, and
        // a pending re-read covers one written by a plain SET): refreshing an untagged
        // entry without tags needs no index work, the common case for a cache.
        let untagged = open.string().is_some_and(|old| entry::decode(old).is_ok_and(|e| e.tags.is_empty()));
        if !open.set_string(&ctx.string(&stored)) || expire_at.is_some_and(|at| !open.set_abs_expire(at)) {
            return Err("ERR could not write the entry".into());
        }
        untagged
    };
    ctx.replicate_set(&key_name, &stored, expire_at);
    notify(ctx, NOTIFY_STRING, c"set", &key);
    if expire_at.is_some() {
        notify(ctx, NOTIFY_GENERIC, c"expire", &key);
    }
    if !(replaced_untagged_entry && req.tags.is_empty()) {
        let db = ctx.selected_db();
        store::with(|s| s.db(db).insert(req.path, variant, &req.tags));
    }
    bump(&STATS.sets, 1);
    Ok(Reply::Ok)
}

/// Opens the key of an entry for GET, LOOKUP, SET or DEL. In a cluster, an entry that
/// is not here, in a slot this node is importing, is a TRYAGAIN (see `cluster`); and
/// while a cluster-wide purge may be running, entries that just arrived are re-read
/// first, so one it covers is removed rather than served.
fn open_entry(ctx: Ctx, path: &[u8], variant: &Variant, write: bool) -> ArgResult<Key> {
    if cluster::purges_in_flight() {
        events::process_pending(ctx);
    }
    let key = ctx.open_key(&ctx.string(&entry_key(path, variant)), write);
    if key.kind() == KeyKind::Empty {
        cluster::check_absent_entry_is_ours(ctx, path)?;
    }
    Ok(key)
}

/// The header of the entry an open key holds; `None` when there is none (MISS).
fn entry_header(key: &Key) -> ArgResult<Option<Header>> {
    match key.kind() {
        KeyKind::Empty => Ok(None),
        KeyKind::String => entry::header(key.string().unwrap_or_default()).map(Some).map_err(|e| format!("ERR {e}")),
        KeyKind::Other => Err(WRONGTYPE.into()),
    }
}

fn get_impl(ctx: Ctx, argv: &[&[u8]]) -> ArgResult<Reply> {
    let req = args::parse_get("rcache.get", argv, &config::limits())?;
    let key = open_entry(ctx, req.path, &req.variant.variant(), false)?;
    match entry_header(&key)? {
        Some(h) if h.state(ffi::milliseconds()) == State::Fresh => {
            ctx.reply_bulk(&key.string().unwrap_or_default()[h.value_at..]);
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
    let key = open_entry(ctx, req.path, &req.variant.variant(), false)?;
    let found = entry_header(&key)?;
    reply_lookup(ctx, &key, found.as_ref(), req.if_none_match, None);
    Ok(Reply::Sent)
}

/// LOOKUP's 6-element reply for what `key` holds (`found`, from [`entry_header`]), with
/// the lease token granted to this caller, if any. Counts the answer in INFO.
fn reply_lookup(ctx: Ctx, key: &Key, found: Option<&Header>, if_none_match: Option<&[u8]>, lease: Option<&[u8]>) {
    ctx.reply_array(6);
    let Some(h) = found else {
        bump(&STATS.misses, 1);
        ctx.reply_simple(c"MISS");
        (0..4).for_each(|_| ctx.reply_null());
        return reply_lease(ctx, lease);
    };
    let now = ffi::milliseconds();
    let bytes = key.string().unwrap_or_default();
    let etag = bytes.get(h.etag.clone()).unwrap_or_default();
    let state = h.state(now);
    let ttl = match state {
        State::Stale => 0,
        State::Fresh if h.lifetime.fresh_until_ms > 0 => (h.lifetime.fresh_until_ms as i64 - now).max(1),
        // No fresh lifetime of its own: a v1 entry is fresh until its key expires.
        State::Fresh => key.abs_expire().filter(|_| h.version == 1).map_or(-1, |at| (at - now).max(1)),
    };
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
    ctx.reply_i64((now - h.lifetime.stored_at_ms as i64).max(0));
    ctx.reply_i64(ttl);
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
    drop(open_entry(ctx, req.path, &variant, false)?);
    let deleted = delete_keys(ctx, vec![entry_key(req.path, &variant)]);
    if deleted.is_empty() {
        return Ok(Reply::Int(0));
    }
    let db = ctx.selected_db();
    store::with(|s| s.remove(db, req.path, &variant));
    bump(&STATS.dels, 1);
    Ok(Reply::Int(1))
}

/// The entry keys a prefix purge covers, after the caller's permission to remove them
/// all was checked.
fn covered_keys(ctx: Ctx, db: i32, user: &AclUser, coverage: &Coverage<'_>) -> ArgResult<Vec<Vec<u8>>> {
    events::process_pending(ctx);
    let (paths, keys) = store::with(|s| s.existing_db(db).map(|d| d.covered(coverage)).unwrap_or_default());
    check_write_permission(user, paths.iter().map(Vec::as_slice))?;
    Ok(keys)
}

/// The entry keys carrying any of `tags`, after the caller's permission check.
fn tagged_keys(ctx: Ctx, db: i32, user: &AclUser, tags: &[&[u8]]) -> ArgResult<Vec<Vec<u8>>> {
    events::process_pending(ctx);
    let keys = store::with(|s| s.existing_db(db).map(|d| d.tags.keys(tags)).unwrap_or_default());
    check_write_permission(user, keys.iter().filter_map(|k| parse_entry_key(k).map(|(p, _)| p)))?;
    Ok(keys)
}

/// The entry keys a purge of `target` in `db` would touch, once `user` may touch them all.
fn target_keys(ctx: Ctx, db: i32, user: &AclUser, target: &Target) -> ArgResult<Vec<Vec<u8>>> {
    match target {
        Target::Prefix { prefix, exact: true } => covered_keys(ctx, db, user, &Coverage::exact(prefix)),
        Target::Prefix { prefix, exact: false } => covered_keys(ctx, db, user, &Coverage::prefix(prefix)),
        Target::Tags(tags) => tagged_keys(ctx, db, user, &tags.iter().map(Vec::as_slice).collect::<Vec<_>>()),
    }
}

/// The NOPERM decision of a purge, touching nothing (a cluster-wide purge's first phase).
pub fn check_locally(ctx: Ctx, db: i32, user: &AclUser, target: &Target) -> ArgResult<()> {
    target_keys(ctx, db, user, target).map(drop)
}

/// One purge command's work on this server: removes (or soft-purges) what `target`
/// covers in `db`, if `user` may touch all of it; returns the entries it counted.
/// Every purge goes through here, on every primary of a cluster.
pub fn purge_locally(ctx: Ctx, db: i32, user: &AclUser, soft: bool, target: &Target) -> ArgResult<u64> {
    let started = Instant::now();
    let keys = target_keys(ctx, db, user, target)?;
    let counted = if soft {
        soften_keys(ctx, db, keys)
    } else {
        let deleted = delete_keys(ctx, keys);
        match target {
            Target::Prefix { prefix, exact } => {
                let coverage = if *exact { Coverage::exact(prefix) } else { Coverage::prefix(prefix) };
                store::with(|s| s.db(db).remove_covered(&coverage));
            }
            Target::Tags(_) => forget_keys(db, &deleted),
        }
        deleted.len() as u64
    };
    let entries = match (soft, target) {
        (false, Target::Prefix { .. }) => &STATS.purged_entries,
        (true, Target::Prefix { .. }) => &STATS.soft_purged_entries,
        (false, Target::Tags(_)) => &STATS.tag_purged_entries,
        (true, Target::Tags(_)) => &STATS.soft_tag_purged_entries,
    };
    bump(entries, counted);
    STATS.purge_took(started.elapsed().as_micros() as u64);
    Ok(counted)
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
    let req = args::parse_purge("rcache.purge", argv, &config::limits())?;
    purge_command(ctx, false, Target::Prefix { prefix: req.prefix.to_vec(), exact: req.exact })
}

fn softpurge_impl(ctx: Ctx, argv: &[&[u8]]) -> ArgResult<Reply> {
    let req = args::parse_purge("rcache.softpurge", argv, &config::limits())?;
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
        let open = ctx.open_key(&key, true);
        let Some(Ok(header)) = open.string().map(entry::header) else { continue };
        match entry::soften(&header, now, open.abs_expire()) {
            Soften::AlreadyStale => {}
            Soften::Remove => removed.push(name),
            Soften::Stale { expire_at_ms } => {
                if open.patch_string(entry::FRESH_UNTIL_AT, &stale_from) && open.set_abs_expire(expire_at_ms) {
                    drop(open);
                    ctx.replicate_patch(&key, entry::FRESH_UNTIL_AT, &stale_from, expire_at_ms);
                    notify(ctx, NOTIFY_STRING, c"setrange", &key);
                    notify(ctx, NOTIFY_GENERIC, c"expire", &key);
                    softened += 1;
                }
            }
        }
    }
    let deleted = delete_keys(ctx, removed);
    forget_keys(db, &deleted);
    softened + deleted.len() as u64
}

/// LIST's page from this server's index.
pub fn list_locally(ctx: Ctx, db: i32, prefix: &[u8], after: Option<&[u8]>, count: usize) -> Vec<Vec<u8>> {
    events::process_pending(ctx);
    let coverage = Coverage::prefix(prefix);
    store::with(|s| s.existing_db(db).map(|d| d.paths.list(&coverage, after, count)).unwrap_or_default())
}

fn list_impl(ctx: Ctx, argv: &[&[u8]]) -> ArgResult<Reply> {
    let req = args::parse_list(argv, &config::limits())?;
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
            return Err(format!(
                "NOPERM this user has no permission to remove entries under '{}'",
                String::from_utf8_lossy(path)
            ));
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
    for name in keys {
        let key = ctx.string(&name);
        let open = ctx.open_key(&key, true);
        if open.kind() != KeyKind::Empty && open.delete() {
            drop(open);
            deleted.push(key);
            deleted_names.push(name);
        }
    }
    ctx.replicate_unlink(&deleted);
    for key in &deleted {
        notify(ctx, NOTIFY_GENERIC, c"del", key);
    }
    deleted_names
}
