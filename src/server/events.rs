//! Keeping the index a derived view of the keyspace: keyspace notifications for
//! entry keys, and server events (flush, swapdb, async replica loading, the event
//! loop).
//!
//! Nothing here writes to the keyspace. A removal event (`del`, `expired`,
//! `evicted`, `rename_from`, `move_from`) drops the entry from the index. Any other
//! event that may change an entry key's contents (`set`, `rename_to`, `restore`,
//! `loaded`, `append`, …) means the key must be re-read. Re-reading is done at once
//! where a read cannot make Redis expire the key (loading, replicas); on a master it
//! is deferred to just before the event loop sleeps, or to the start of the next
//! RCACHE command that reads the index, whichever comes first. Keys are read with
//! `REDISMODULE_OPEN_KEY_NOTOUCH`, so bookkeeping never changes eviction order.
//!
//! Every change to an entry also signals its path (the key RCACHE commands declare)
//! as modified, so `WATCH` and client-side caching see it. Signalling only marks
//! watchers dirty and queues invalidation messages; it is what Redis itself does
//! for the entry key right after raising `expired` / `evicted`, so it is allowed here.

use std::cell::Cell;
use std::ffi::{c_char, c_int, c_void, CStr};
use std::sync::atomic::{AtomicI32, Ordering::Relaxed};
use std::sync::mpsc::{channel, SendError, Sender};
use std::sync::Mutex;

use redis_module::raw;

use crate::core::entry;
use crate::core::index::DbIndex;
use crate::core::key::{parse_entry_key, Variant, KEY_PREFIX};
use crate::core::purge;
use crate::core::stats::{Removal, STATS};
use crate::ffi::{self, Ctx};
use crate::server::guard::guarded;
use crate::server::purges::RecordChange;
use crate::server::{cluster, commands, leases, loading, purges, store};

thread_local! {
    static NOTIFYING_OURSELVES: Cell<bool> = const { Cell::new(false) };
    /// Between the `ReplAsyncLoad` started and completed/aborted events: `loaded`
    /// events then name keys of the temporary database being loaded, which the
    /// module cannot open (keys open in the live database).
    static ASYNC_LOADING: Cell<bool> = const { Cell::new(false) };
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
    let db = ctx.selected_db();
    if purge::is_record_key(key) {
        return record_event(ctx, db, event, key);
    }
    let Some((path, variant)) = parse_entry_key(key) else { return };
    let removal = match event {
        b"expired" => Removal::Expired,
        b"evicted" => Removal::Evicted,
        b"del" | b"rename_from" | b"move_from" => Removal::Other,
        // A TTL change leaves the contents alone.
        b"expire" | b"persist" => return,
        // Indexed from a scan when the async load completes (see `server_event`).
        b"loaded" if ASYNC_LOADING.with(Cell::get) => return,
        // Nothing can watch or track a key while it is being loaded.
        b"loaded" => return reindex(ctx, key, path, variant),
        _ if ctx.reads_are_side_effect_free() => {
            reindex(ctx, key, path, variant);
            return ctx.signal_modified(path);
        }
        _ => {
            store::with(|s| s.pending.push((db, key.to_vec())));
            return ctx.signal_modified(path);
        }
    };
    if store::with(|s| s.remove(db, path, &variant)) {
        STATS.removed(removal, 1);
    }
    ctx.signal_modified(path);
}

/// A purge record written or removed by the data itself: the master's purge reaching a
/// replica, a record read while loading, or one moved here with its slot (RESTORE). On
/// a master a record changes otherwise only through the module's own (muted) writes.
fn record_event(ctx: Ctx, db: i32, event: &[u8], key: &[u8]) {
    let change = match event {
        b"expire" | b"persist" => return,
        b"loaded" if ASYNC_LOADING.with(Cell::get) => return,
        b"del" | b"expired" | b"evicted" | b"rename_from" | b"move_from" => RecordChange::Removed,
        // Read once reading is safe, in order with the entries that follow it.
        b"restore" if !ctx.reads_are_side_effect_free() => return store::with(|s| s.pending.push((db, key.to_vec()))),
        b"restore" => RecordChange::Restored,
        _ if ctx.reads_are_side_effect_free() => RecordChange::Written,
        _ => return,
    };
    purges::record_event(ctx, db, key, change);
}

/// Signals each path as a modified key (consecutive repeats once), for the RCACHE
/// commands that change entries: WATCH and client-side caching then see the change.
pub fn signal_paths<'a>(ctx: Ctx, paths: impl IntoIterator<Item = &'a [u8]>) {
    let mut last: Option<&[u8]> = None;
    for path in paths {
        if last != Some(path) {
            ctx.signal_modified(path);
        }
        last = Some(path);
    }
}

/// Re-reads the entry key `key` (of `path`, `variant`) in the selected database and
/// makes the index agree with it.
fn reindex(ctx: Ctx, key: &[u8], path: &[u8], variant: Variant) {
    let db = ctx.selected_db();
    let purged_while_moving = ctx.peek_string(key, |bytes| match bytes.and_then(|b| entry::decode(b).ok()) {
        Some(e) => {
            // Queued while a load is indexed apart: no purge is pending and nothing
            // migrates then (and the context flags cost more than the queueing).
            if loading::queue(db, path, variant, &e.tags) {
                return false;
            }
            let stored_at = e.lifetime.stored_at_ms;
            let left_to_a_pending_purge = store::with(|s| s.index_arrival(db, path, variant, &e.tags, stored_at));
            // Moved here (MIGRATE) after this node ran its part of a purge covering it.
            !left_to_a_pending_purge && !ctx.reads_are_side_effect_free() && cluster::purged_while_moving(db, path, &e.tags, stored_at)
        }
        None => {
            if store::with(|s| s.remove(db, path, &variant)) {
                STATS.removed(Removal::Other, 1);
            }
            false
        }
    });
    if purged_while_moving {
        let removed = commands::delete_keys(ctx, vec![key.to_vec()]).len() as u64;
        store::with(|s| s.remove(db, path, &variant));
        STATS.removed(Removal::Other, removed);
    }
}

/// Replaces every index with one built from a scan of the keyspace, for a module
/// loaded into a running server and for a replica's completed async load. O(keyspace)
/// once, reading each value from the handle the scan holds.
pub fn index_keyspace(ctx: Ctx) {
    drop_indexes(-1);
    // Built on a thread while the scan goes on, as for a load.
    store::with(|s| loading::start(s));
    let selected = ctx.selected_db();
    let mut db = 0;
    let mut records = Vec::new();
    while ctx.select_db(db) {
        ctx.scan_strings(|name, bytes| {
            if !name.starts_with(KEY_PREFIX) {
                return;
            }
            if purge::is_record_key(name) {
                records.push((db, name.to_vec()));
            } else if let (Some((path, variant)), Some(e)) = (parse_entry_key(name), bytes.and_then(|b| entry::decode(b).ok())) {
                if !loading::queue(db, path, variant, &e.tags) {
                    store::with(|s| s.db(db).insert(path, variant, &e.tags));
                }
            }
        });
        db += 1;
    }
    // Installs what the thread built.
    store::with(loading::finish);
    DATABASES.store(db, Relaxed);
    // Pending purges in the data: matched against what was just indexed.
    for (db, key) in records {
        if ctx.select_db(db) {
            purges::record_found(ctx, db, &key);
        }
    }
    ctx.select_db(selected);
    purges::resolve_loaded(ctx);
}

/// Re-reads the keys whose contents changed outside the module (and purge records moved
/// here). The caller's selected database is restored afterwards.
pub fn process_pending(ctx: Ctx) {
    let pending = store::with(|s| std::mem::take(&mut s.pending));
    if pending.is_empty() {
        return;
    }
    let selected = ctx.selected_db();
    for (db, key) in pending {
        if !ctx.select_db(db) {
            continue;
        }
        if purge::is_record_key(&key) {
            purges::record_event(ctx, db, &key, RecordChange::Restored);
        } else if let Some((path, variant)) = parse_entry_key(&key) {
            reindex(ctx, &key, path, variant);
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
                drop_indexes(db);
                leases::flushed(ctx, db);
            }
        }
        (raw::REDISMODULE_EVENT_SWAPDB, _) => {
            if let Some((a, b)) = ffi::swapped_dbs(data) {
                store::with(|s| s.swap(a, b));
                // Whatever a lease there was granted on is now in another database.
                leases::flushed(ctx, a);
                leases::flushed(ctx, b);
            }
        }
        (raw::REDISMODULE_EVENT_REPL_ASYNC_LOAD, raw::REDISMODULE_SUBEVENT_REPL_ASYNC_LOAD_STARTED) => {
            ASYNC_LOADING.with(|a| a.set(true));
        }
        // The temporary database is discarded; the live one and its index stay.
        (raw::REDISMODULE_EVENT_REPL_ASYNC_LOAD, raw::REDISMODULE_SUBEVENT_REPL_ASYNC_LOAD_ABORTED) => {
            ASYNC_LOADING.with(|a| a.set(false));
        }
        // The loaded databases are now the live ones (the old ones are freed without
        // events): index them.
        (raw::REDISMODULE_EVENT_REPL_ASYNC_LOAD, raw::REDISMODULE_SUBEVENT_REPL_ASYNC_LOAD_COMPLETED) => {
            ASYNC_LOADING.with(|a| a.set(false));
            leases::flushed(ctx, -1);
            index_keyspace(ctx);
        }
        // Every load into a non-empty dataset starts with a flush (which raises FlushDB)
        // except `DEBUG RELOAD NOFLUSH` (MERGE: live keys stay, and each loaded key is
        // re-read) and a swapdb replica's async load. A load into an empty state is
        // indexed on a thread (see `loading`).
        (raw::REDISMODULE_EVENT_LOADING, raw::REDISMODULE_SUBEVENT_LOADING_RDB_START | raw::REDISMODULE_SUBEVENT_LOADING_AOF_START | raw::REDISMODULE_SUBEVENT_LOADING_REPL_START)
            if !ASYNC_LOADING.with(Cell::get) =>
        {
            store::with(|s| loading::start(s));
        }
        // The indexes built while loading go in; then purge records read while loading
        // are matched against the loaded entries.
        (raw::REDISMODULE_EVENT_LOADING, raw::REDISMODULE_SUBEVENT_LOADING_ENDED | raw::REDISMODULE_SUBEVENT_LOADING_FAILED) => {
            loading::end(ctx);
            if subevent == raw::REDISMODULE_SUBEVENT_LOADING_ENDED {
                purges::resolve_loaded(ctx);
            }
        }
        (raw::REDISMODULE_EVENT_EVENTLOOP, raw::REDISMODULE_SUBEVENT_EVENTLOOP_BEFORE_SLEEP) => process_pending(ctx),
        _ => {}
    }
}

pub const SERVER_EVENTS: [u64; 5] = [
    raw::REDISMODULE_EVENT_FLUSHDB,
    raw::REDISMODULE_EVENT_SWAPDB,
    raw::REDISMODULE_EVENT_REPL_ASYNC_LOAD,
    raw::REDISMODULE_EVENT_LOADING,
    raw::REDISMODULE_EVENT_EVENTLOOP,
];

/// The number of databases, learnt when the module indexes the keyspace at load.
static DATABASES: AtomicI32 = AtomicI32::new(16);

/// Indexes with at least this many entries are freed on a background thread.
const DROP_IN_BACKGROUND: usize = 10_000;

/// Drops the index of `db` (-1: every database) and its pending re-reads, counting its
/// entries as removed. Freeing a big index takes long (FLUSHALL ASYNC returns at once
/// in Redis): those are freed off the main thread.
fn drop_indexes(db: i32) {
    let dbs = if db == -1 { 0..DATABASES.load(Relaxed) } else { db..db + 1 };
    let dropped: Vec<DbIndex> = store::with(|s| {
        let present: Vec<i32> = dbs.filter(|&d| s.existing_db(d).is_some()).collect();
        let taken = present.into_iter().map(|d| std::mem::take(s.db(d))).collect();
        s.flush(db);
        taken
    });
    let entries: usize = dropped.iter().map(|d| d.paths.entries()).sum();
    STATS.removed(Removal::Other, entries as u64);
    if entries >= DROP_IN_BACKGROUND {
        free_in_background(dropped);
    }
}

/// Hands indexes to one long-lived thread that frees them (through Redis' allocator,
/// which is thread-safe). If that thread cannot be started they are freed here.
fn free_in_background(dropped: Vec<DbIndex>) {
    static FREER: Mutex<Option<Sender<Vec<DbIndex>>>> = Mutex::new(None);
    let mut freer = FREER.lock().unwrap_or_else(|p| p.into_inner());
    if freer.is_none() {
        let (tx, rx) = channel::<Vec<DbIndex>>();
        let started = std::thread::Builder::new().name("rcache-free".into()).spawn(move || rx.into_iter().for_each(drop));
        *freer = started.ok().map(|_| tx);
    }
    if let Some(Err(SendError(back))) = freer.as_ref().map(|tx| tx.send(dropped)) {
        *freer = None;
        drop(back);
    }
}
