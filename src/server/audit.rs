//! Checking the index against the keys of cluster slots this node lost.
//!
//! When a node learns that a slot it still holds keys in now belongs to another node
//! (a migration abandoned halfway, then the slot assigned elsewhere), Redis 7.0 deletes
//! those keys with `delKeysInSlot`, which raises no keyspace event. So once a second
//! (`cluster::watch_slots`) the node compares its slots with the previous look, and for
//! slots it lost walks the index in background slices of at most
//! `rcache.purge-slice-us`, dropping the entries of those slots whose key is gone. It
//! only changes the index, never the keyspace, so it runs on replicas too.

use std::ffi::c_void;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use redis_module::raw;

use crate::core::cluster::{key_hash_slot, SlotSet};
use crate::core::config;
use crate::core::key::{entry_key, Variant};
use crate::core::path::Coverage;
use crate::core::stats::{Removal, STATS};
use crate::ffi::Ctx;
use crate::server::guard::guarded;
use crate::server::store;

/// The only database in cluster mode.
const DB: i32 = 0;
/// Paths looked at between two looks at the clock.
const BATCH: usize = 64;
const NEXT_SLICE_MS: i64 = 1;

struct Audit {
    lost: SlotSet,
    /// The last path checked; the walk goes on after it.
    after: Option<Vec<u8>>,
}

static AUDIT: Mutex<Option<Audit>> = Mutex::new(None);
static TIMER_ARMED: AtomicBool = AtomicBool::new(false);

fn audit() -> std::sync::MutexGuard<'static, Option<Audit>> {
    AUDIT.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Checks the index for the slots in `lost` (again from the start, with those of a
/// walk still under way).
pub fn start(ctx: Ctx, lost: SlotSet) {
    {
        let mut audit = audit();
        let lost = match audit.take() {
            Some(running) => running.lost.union(&lost),
            None => lost,
        };
        *audit = Some(Audit { lost, after: None });
    }
    if !TIMER_ARMED.swap(true, Relaxed) {
        ctx.create_timer(NEXT_SLICE_MS, Some(on_timer));
    }
}

extern "C" fn on_timer(ctx: *mut raw::RedisModuleCtx, _data: *mut c_void) {
    let ctx = Ctx::from_raw(ctx);
    TIMER_ARMED.store(false, Relaxed);
    guarded(ctx, "slot audit", || (), || {
        if run_slice(ctx) && !TIMER_ARMED.swap(true, Relaxed) {
            ctx.create_timer(NEXT_SLICE_MS, Some(on_timer));
        }
    });
}

/// One slice of the walk; returns whether there is more to do.
fn run_slice(ctx: Ctx) -> bool {
    let started = Instant::now();
    let budget = Duration::from_micros(u64::try_from(config::PURGE_SLICE_US.get()).unwrap_or(500));
    let selected = ctx.selected_db();
    if !ctx.select_db(DB) {
        return false;
    }
    let more = loop {
        let Some((lost, after)) = audit().as_ref().map(|a| (a.lost.clone(), a.after.clone())) else { break false };
        let paths = store::with(|s| s.existing_db(DB).map(|d| d.paths.list(&Coverage::all(), after.as_deref(), BATCH)).unwrap_or_default());
        let Some(last) = paths.last().cloned() else {
            *audit() = None;
            break false;
        };
        for path in paths.iter().filter(|p| lost.contains(key_hash_slot(p))) {
            drop_missing(ctx, path);
        }
        if let Some(a) = audit().as_mut() {
            a.after = Some(last);
        }
        if started.elapsed() >= budget {
            break true;
        }
    };
    ctx.select_db(selected);
    more
}

/// Drops from the index the variants of `path` whose key no longer exists.
fn drop_missing(ctx: Ctx, path: &[u8]) {
    let variants: Vec<Variant> = store::with(|s| {
        let mut out = Vec::new();
        if let Some(d) = s.existing_db(DB) {
            d.paths.for_each_covered(&Coverage::exact(path), |_, stored| out.push(stored.variant));
        }
        out
    });
    for variant in variants {
        let exists = ctx.peek_string(&entry_key(path, &variant), |bytes| bytes.is_some());
        if !exists && store::with(|s| s.remove(DB, path, &variant)) {
            STATS.removed(Removal::Other, 1);
        }
    }
}
