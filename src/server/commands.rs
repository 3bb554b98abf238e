//! The RCACHE.* command handlers: parse (pure), touch keys through the key API,
//! replicate effects, then update the index. The index lock is taken only for the
//! in-memory steps, never while Redis is being called.

use std::ffi::CStr;
use std::time::Instant;

use redis_module::{Context, RedisError, RedisResult, RedisString, RedisValue};

use crate::core::args::{self, ArgResult};
use crate::core::config;
use crate::core::entry;
use crate::server::events;
use crate::ffi::{self, Ctx, KeyKind, RString, NOTIFY_GENERIC, NOTIFY_STRING};
use crate::server::guard::guarded;
use crate::core::key::{entry_key, parse_entry_key};
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
fn printable(msg: &str) -> String {
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
pub fn del(ctx: &Context, args: Vec<RedisString>) -> RedisResult {
    run(ctx, &args, "rcache.del", del_impl)
}
pub fn purge(ctx: &Context, args: Vec<RedisString>) -> RedisResult {
    run(ctx, &args, "rcache.purge", purge_impl)
}
pub fn purgetag(ctx: &Context, args: Vec<RedisString>) -> RedisResult {
    run(ctx, &args, "rcache.purgetag", purgetag_impl)
}
pub fn list(ctx: &Context, args: Vec<RedisString>) -> RedisResult {
    run(ctx, &args, "rcache.list", list_impl)
}
pub fn key(ctx: &Context, args: Vec<RedisString>) -> RedisResult {
    run(ctx, &args, "rcache.key", key_impl)
}

fn set_impl(ctx: Ctx, argv: &[&[u8]]) -> ArgResult<Reply> {
    let req = args::parse_set(argv, &config::limits())?;
    let ttl_ms = req.ttl_ms.or(match config::DEFAULT_TTL.get() {
        0 => None,
        seconds => Some(seconds * 1000),
    });
    let now = ffi::milliseconds();
    let expire_at = match ttl_ms {
        Some(ms) => Some(now.checked_add(ms).ok_or("ERR invalid expire time in 'rcache.set' command")?),
        None => None,
    };
    let variant = req.variant.variant();
    let key_name = entry_key(req.path, &variant);
    let stored = entry::encode(req.value, u64::try_from(now).unwrap_or(0), &req.tags);
    let key = ctx.string(&key_name);
    let replaced_untagged_entry = {
        let open = ctx.open_key(&key, true);
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
    events::signal_paths(ctx, [req.path]); // WATCH / client tracking (issue 14 item 3)
    if !(replaced_untagged_entry && req.tags.is_empty()) {
        let db = ctx.selected_db();
        store::with(|s| s.db(db).insert(req.path, variant, &req.tags));
    }
    bump(&STATS.sets, 1);
    Ok(Reply::Ok)
}

fn get_impl(ctx: Ctx, argv: &[&[u8]]) -> ArgResult<Reply> {
    let req = args::parse_get("rcache.get", argv, &config::limits())?;
    let key = ctx.open_key(&ctx.string(&entry_key(req.path, &req.variant.variant())), false);
    match key.kind() {
        KeyKind::Empty => {
            bump(&STATS.misses, 1);
            ctx.reply_null();
        }
        KeyKind::String => {
            let stored = key.string().unwrap_or_default();
            let at = entry::value_offset(stored).map_err(|e| format!("ERR {e}"))?;
            ctx.reply_bulk(&stored[at..]);
            bump(&STATS.hits, 1);
        }
        KeyKind::Other => return Err(WRONGTYPE.into()),
    }
    Ok(Reply::Sent)
}

fn del_impl(ctx: Ctx, argv: &[&[u8]]) -> ArgResult<Reply> {
    let req = args::parse_get("rcache.del", argv, &config::limits())?;
    let variant = req.variant.variant();
    let deleted = delete_keys(ctx, vec![entry_key(req.path, &variant)]);
    if deleted.is_empty() {
        return Ok(Reply::Int(0));
    }
    let db = ctx.selected_db();
    store::with(|s| s.remove(db, req.path, &variant));
    events::signal_paths(ctx, [req.path]); // WATCH / client tracking (issue 14 item 3)
    bump(&STATS.dels, 1);
    Ok(Reply::Int(1))
}

fn purge_impl(ctx: Ctx, argv: &[&[u8]]) -> ArgResult<Reply> {
    let req = args::parse_purge(argv, &config::limits())?;
    let started = Instant::now();
    let coverage = if req.exact { Coverage::exact(req.prefix) } else { Coverage::prefix(req.prefix) };
    events::process_pending(ctx);
    let db = ctx.selected_db();
    let (paths, keys) = store::with(|s| s.existing_db(db).map(|d| d.covered(&coverage)).unwrap_or_default());
    check_write_permission(ctx, paths.iter().map(Vec::as_slice))?;
    let deleted = delete_keys(ctx, keys);
    events::signal_paths(ctx, paths.iter().map(Vec::as_slice)); // WATCH / client tracking (issue 14 item 3)
    store::with(|s| s.db(db).remove_covered(&coverage));
    bump(&STATS.purges, 1);
    bump(&STATS.purged_entries, deleted.len() as u64);
    STATS.purge_took(started.elapsed().as_micros() as u64);
    Ok(Reply::Int(deleted.len() as i64))
}

fn purgetag_impl(ctx: Ctx, argv: &[&[u8]]) -> ArgResult<Reply> {
    let tags = args::parse_purgetag(argv)?;
    let started = Instant::now();
    events::process_pending(ctx);
    let db = ctx.selected_db();
    let keys = store::with(|s| s.existing_db(db).map(|d| d.tags.keys(&tags)).unwrap_or_default());
    check_write_permission(ctx, keys.iter().filter_map(|k| parse_entry_key(k).map(|(p, _)| p)))?;
    let deleted = delete_keys(ctx, keys);
    events::signal_paths(ctx, deleted.iter().filter_map(|k| parse_entry_key(k).map(|(p, _)| p))); // WATCH / client tracking (issue 14 item 3)
    store::with(|s| {
        for key in &deleted {
            if let Some((path, variant)) = parse_entry_key(key) {
                s.remove(db, path, &variant);
            }
        }
    });
    bump(&STATS.tag_purges, 1);
    bump(&STATS.tag_purged_entries, deleted.len() as u64);
    STATS.purge_took(started.elapsed().as_micros() as u64);
    Ok(Reply::Int(deleted.len() as i64))
}

fn list_impl(ctx: Ctx, argv: &[&[u8]]) -> ArgResult<Reply> {
    let req = args::parse_list(argv, &config::limits())?;
    events::process_pending(ctx);
    let db = ctx.selected_db();
    let coverage = Coverage::prefix(req.prefix);
    let paths = store::with(|s| s.existing_db(db).map(|d| d.paths.list(&coverage, req.after, req.count)).unwrap_or_default());
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
fn check_write_permission<'a>(ctx: Ctx, paths: impl Iterator<Item = &'a [u8]>) -> ArgResult<()> {
    let user = ctx.acl_user();
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
fn delete_keys(ctx: Ctx, keys: Vec<Vec<u8>>) -> Vec<Vec<u8>> {
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
