//! Indexing a whole dataset off the main thread: an RDB load, and the keyspace scan of
//! `MODULE LOAD`. Redis raises `loaded` for every key it reads; indexing the entry
//! there cost about 1 µs, nearly all of it cache misses walking the path tree in the
//! RDB's random key order, and made `DEBUG RELOAD` of 1M entries 68 % slower than
//! plain Redis. So while a load fills an empty index, the main thread only queues
//! each entry (path, variant, tags: a copy into a buffer) and a thread builds the
//! indexes from the queue as the load goes on.
//!
//! The built indexes are installed as soon as anything else needs the state (see
//! `store::with`): when loading ends, or earlier, at the first write of an AOF's tail or
//! a purge record read from the file. So nothing ever sees the index without what was
//! queued before, and what follows applies in order on top of it. INFO only reads the
//! state (`store::peek`) and leaves the thread alone.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::mpsc::{channel, sync_channel, Receiver, SyncSender};
use std::sync::Mutex;
use std::thread::JoinHandle;

use crate::core::index::{Arrivals, DbIndex};
use crate::core::key::Variant;
use crate::ffi::Ctx;
use crate::server::store::{self, State};

/// Entries queued per hand-over to the thread.
const BATCH: usize = 4096;
/// Batches handed over and not yet indexed, at most: if the thread falls behind, the
/// load waits for it rather than buffering the whole dataset a second time.
const IN_FLIGHT: usize = 32;

struct Builder {
    queued: Arrivals,
    to_thread: SyncSender<Arrivals>,
    /// Batches the thread has indexed, emptied, to fill again: no allocation per batch
    /// on the main thread, and no block freed by one thread that the other allocated.
    emptied: Receiver<Arrivals>,
    thread: JoinHandle<HashMap<i32, DbIndex>>,
}

/// Path and tag bytes per entry a new batch makes room for.
const BYTES_EACH: usize = 64;

static BUILDER: Mutex<Option<Builder>> = Mutex::new(None);
/// Whether a builder runs: checked by every `store::with`, so one relaxed load.
static ACTIVE: AtomicBool = AtomicBool::new(false);
/// The thread died (a bug): what it was given must be re-read from the keyspace.
static LOST: AtomicBool = AtomicBool::new(false);

fn builder() -> std::sync::MutexGuard<'static, Option<Builder>> {
    BUILDER.lock().unwrap_or_else(|p| p.into_inner())
}

pub fn active() -> bool {
    ACTIVE.load(Relaxed)
}

/// A load starts. When the state is empty (a restart, or a load after the flush
/// that precedes `DEBUG RELOAD` and a full sync) the load's entries are built on a
/// thread; otherwise (`DEBUG RELOAD NOFLUSH MERGE`) they are indexed as they come.
pub fn start(state: &State) {
    if !state.is_empty() {
        return;
    }
    let (to_thread, from_loader) = sync_channel::<Arrivals>(IN_FLIGHT);
    let (back, emptied) = channel::<Arrivals>();
    let spawned = std::thread::Builder::new().name("rcache-load".into()).spawn(move || {
        let mut dbs = HashMap::new();
        for mut batch in from_loader {
            batch.index_into(&mut dbs);
            batch.clear();
            // The loader may be gone already (it dropped the rest): then so is this.
            let _ = back.send(batch);
        }
        dbs
    });
    // Without a thread, entries are indexed on the main thread as before.
    if let Ok(thread) = spawned {
        let queued = Arrivals::with_capacity(BATCH, BYTES_EACH);
        *builder() = Some(Builder { queued, to_thread, emptied, thread });
        ACTIVE.store(true, Relaxed);
    }
}

/// Queues an entry the load read; false if no builder runs (index it now instead).
pub fn queue(db: i32, path: &[u8], variant: Variant, tags: &[&[u8]]) -> bool {
    if !active() {
        return false;
    }
    let mut guard = builder();
    let Some(b) = guard.as_mut() else { return false };
    b.queued.push(db, path, variant, tags);
    if b.queued.len() >= BATCH {
        let next = b.emptied.try_recv().unwrap_or_else(|_| Arrivals::with_capacity(BATCH, BYTES_EACH));
        let batch = std::mem::replace(&mut b.queued, next);
        if b.to_thread.send(batch).is_err() {
            // The thread is gone: `finish` finds out and has the keyspace re-read.
            LOST.store(true, Relaxed);
        }
    }
    true
}

/// Waits for the thread and installs what it built into `state`, which nothing has
/// touched since `start`. Called by `store::with` while a builder is active.
pub fn finish(state: &mut State) {
    let Some(Builder { queued, to_thread, thread, .. }) = builder().take() else { return };
    ACTIVE.store(false, Relaxed);
    if !queued.is_empty() && to_thread.send(queued).is_err() {
        LOST.store(true, Relaxed);
    }
    drop(to_thread);
    match thread.join() {
        Ok(dbs) => state.install(dbs),
        Err(_) => LOST.store(true, Relaxed),
    }
}

/// Loading ended (or failed): what the thread built goes in. If the thread died, some
/// entries of the load never reached the index, and the whole keyspace is re-read
/// (what `MODULE LOAD` does).
pub fn end(ctx: Ctx) {
    store::with(finish);
    if LOST.swap(false, Relaxed) {
        ctx.log(c"warning", "rcache: the thread indexing the load failed; indexing the keyspace again");
        crate::server::events::index_keyspace(ctx);
    }
}
