//! Keeping the index a derived view of the keyspace: keyspace notifications for
//! entry keys, and server events (flush, swapdb, loading, the event loop).
//!
//! Nothing here writes to the keyspace. A removal event (`del`, `expired`,
//! `evicted`, `rename_from`, `move_from`) drops the entry from the index. Any other
//! event that may change an entry key's contents (`set`, `rename_to`, `restore`,
//! `loaded`, `append`, …) means the key must be re-read. Re-reading is done at once
//! where a read cannot make Redis expire the key (loading, replicas); on a master it
//! is deferred to just before the event loop sleeps, or to the start of the next
//! RCACHE command that reads the index, whichever comes first.

use std::cell::Cell;
use std::ffi::{c_char, c_int, c_void, CStr};

use redis_module::raw;

use crate::core::entry;
use crate::ffi::{self, Ctx};
use crate::server::guard::guarded;
use crate::core::key::{parse_entry_key, KEY_PREFIX};
use crate::core::stats::{Removal, STATS};
use crate::server::{cluster, commands, store};

thread_local! {
    static NOTIFYING_OURSELVES: Cell<bool> = const { Cell::new(false) };
}

/// Runs `f` (which raises a keyspace event for a write the module already indexed)
/// with our own callback muted.
pub fn while_notifying_ourselves(f: impl FnOnce()) {
    struct Unmute;
    impl Drop for Unmute {
        fn drop(&mut self) {
            NOTIFYING_OURSELVES.with(|n| n.set(false));
        }
    }
    NOTIFYING_OURSELVES.with(|n| n.set(true));
    let _unmute = Unmute;
    f();
}

pub const SUBSCRIBED_CLASSES: c_int = raw::REDISMODULE_NOTIFY_ALL | raw::REDISMODULE_NOTIFY_LOADED;

pub extern "C" fn on_keyspace_event(
    ctx: *mut raw::RedisModuleCtx,
    _class: c_int,
    event: *const c_char,
    key: *mut raw::RedisModuleString,
) -> c_int {
    let ctx = Ctx::from_raw(ctx);
    guarded(ctx, "keyspace notification", || (), || {
        if NOTIFYING_OURSELVES.with(Cell::get) || event.is_null() {
            return;
        }
        let event = unsafe { CStr::from_ptr(event) }.to_bytes();
        keyspace_event(ctx, event, ffi::string_bytes(key));
    });
    raw::REDISMODULE_OK as c_int
}

fn keyspace_event(ctx: Ctx, event: &[u8], key: &[u8]) {
    if !key.starts_with(KEY_PREFIX) {
        return;
    }
    let Some((path, variant)) = parse_entry_key(key) else { return };
    let db = ctx.selected_db();
    let removal = match event {
        b"expired" => Removal::Expired,
        b"evicted" => Removal::Evicted,
        b"del" | b"rename_from" | b"move_from" => Removal::Other,
        // A TTL change leaves the contents alone.
        b"expire" | b"persist" => return,
        _ if ctx.reads_are_side_effect_free() => return reindex(ctx, key),
        _ => return store::with(|s| s.pending.push((db, key.to_vec()))),
    };
    if store::with(|s| s.remove(db, path, &variant)) {
        STATS.removed(removal, 1);
    }
}

/// Re-reads an entry key in the selected database and makes the index agree with it.
fn reindex(ctx: Ctx, key: &[u8]) {
    let Some((path, variant)) = parse_entry_key(key) else { return };
    let open = ctx.open_key(&ctx.string(key), false);
    let found: Option<(Vec<Vec<u8>>, u64)> = open
        .string()
        .and_then(|bytes| entry::decode(bytes).ok())
        .map(|e| (e.tags.iter().map(|t| t.to_vec()).collect(), e.lifetime.stored_at_ms));
    drop(open);
    let db = ctx.selected_db();
    match found {
        Some((tags, stored_at_ms)) => {
            let tags: Vec<&[u8]> = tags.iter().map(Vec::as_slice).collect();
            // Moved here (MIGRATE) after this node ran its part of a purge covering it.
            if !ctx.reads_are_side_effect_free() && cluster::purged_while_moving(db, path, &tags, stored_at_ms) {
                let removed = commands::delete_keys(ctx, vec![key.to_vec()]).len() as u64;
                store::with(|s| s.remove(db, path, &variant));
                STATS.removed(Removal::Other, removed);
                return;
            }
            store::with(|s| s.db(db).insert(path, variant, &tags));
        }
        None => {
            if store::with(|s| s.remove(db, path, &variant)) {
                STATS.removed(Removal::Other, 1);
            }
        }
    }
}

/// Indexes every entry key in every database from a scan of the keyspace, for a
/// module loaded into a running server. O(keyspace), once.
pub fn index_keyspace(ctx: Ctx) {
    let dropped = store::with(|s| s.flush(-1));
    STATS.removed(Removal::Other, dropped);
    let selected = ctx.selected_db();
    let mut db = 0;
    while ctx.select_db(db) {
        let mut keys = Vec::new();
        ctx.scan_keys(|k| {
            if k.starts_with(KEY_PREFIX) {
                keys.push(k.to_vec());
            }
        });
        for key in keys {
            reindex(ctx, &key);
        }
        db += 1;
    }
    ctx.select_db(selected);
}

/// Re-reads the keys whose contents changed outside the module. The caller's
/// selected database is restored afterwards.
pub fn process_pending(ctx: Ctx) {
    let pending = store::with(|s| std::mem::take(&mut s.pending));
    if pending.is_empty() {
        return;
    }
    let selected = ctx.selected_db();
    for (db, key) in pending {
        if ctx.select_db(db) {
            reindex(ctx, &key);
        }
    }
    ctx.select_db(selected);
}

pub extern "C" fn on_server_event(ctx: *mut raw::RedisModuleCtx, event: raw::RedisModuleEvent, subevent: u64, data: *mut c_void) {
    let ctx = Ctx::from_raw(ctx);
    guarded(ctx, "server event", || (), || server_event(ctx, event.id, subevent, data));
}

fn server_event(ctx: Ctx, id: u64, subevent: u64, data: *mut c_void) {
    match (id, subevent) {
        (raw::REDISMODULE_EVENT_FLUSHDB, raw::REDISMODULE_SUBEVENT_FLUSHDB_END) => {
            if let Some(db) = ffi::flush_db_number(data) {
                let dropped = store::with(|s| s.flush(db));
                STATS.removed(Removal::Other, dropped);
            }
        }
        (raw::REDISMODULE_EVENT_SWAPDB, _) => {
            if let Some((a, b)) = ffi::swapped_dbs(data) {
                store::with(|s| s.swap(a, b));
            }
        }
        // Whatever is loaded next is indexed from its `loaded` / replayed events.
        (
            raw::REDISMODULE_EVENT_LOADING,
            raw::REDISMODULE_SUBEVENT_LOADING_RDB_START
            | raw::REDISMODULE_SUBEVENT_LOADING_AOF_START
            | raw::REDISMODULE_SUBEVENT_LOADING_REPL_START,
        ) => {
            let dropped = store::with(|s| s.flush(-1));
            STATS.removed(Removal::Other, dropped);
        }
        (raw::REDISMODULE_EVENT_EVENTLOOP, raw::REDISMODULE_SUBEVENT_EVENTLOOP_BEFORE_SLEEP) => process_pending(ctx),
        _ => {}
    }
}

/// rcache does not opt in to async replica loading (`repl-diskless-load swapdb`),
/// so Redis loads such a replica's data synchronously, raising `loaded` events.
pub const SERVER_EVENTS: [u64; 4] = [
    raw::REDISMODULE_EVENT_FLUSHDB,
    raw::REDISMODULE_EVENT_SWAPDB,
    raw::REDISMODULE_EVENT_LOADING,
    raw::REDISMODULE_EVENT_EVENTLOOP,
];
