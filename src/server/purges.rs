//! Purges of any size: a PURGE that covers more than one slice of work replies at
//! once and removes what it covers in the background (contract: "Purges of any size").
//!
//! - At the purge (on a master): the covered subtree is detached from the live index
//!   into a [`Job`] — so LIST, INFO and the next purges stop seeing it at once — and a
//!   record key `rcache:#purge:<id>` (`core::purge`) is written and replicated. The
//!   reply counts the detached entries.
//! - Until the job is done, every read of a covered entry (stored no later than the
//!   purge) treats it as gone: [`visible`] is the one check GET, LOOKUP, DEL and the
//!   other purges go through. A SET after the purge stores a later stored-at
//!   ([`stored_at_floor`]), so a new entry is never hidden.
//! - A timer runs slices of at most `rcache.purge-slice-us`, on masters only: each
//!   deletes covered keys, replicates UNLINK, and when a job is empty deletes its record.
//! - Replicas, AOF replays and RDB loads see the record key like any key: a replica
//!   applying the stream detaches the same subtree (everything covered then is older
//!   than the purge); a load matches the record against the loaded entries' stored-at
//!   once loading ends ([`resolve_loaded`]). A replica promoted while work is pending
//!   carries on with it.
//! - In a cluster a record that arrives with a migrated slot is adopted by the
//!   importing node ([`adopt`]), and a record that moves away is written again. The
//!   entries a job hides never leave with MIGRATE (`migration`). See docs/cluster.md,
//!   "Resharding".

use std::ffi::c_void;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::time::{Duration, Instant};

use redis_module::raw;

use crate::core::cluster::key_hash_slot;
use crate::core::config;
use crate::core::entry::{self, Header};
use crate::core::index::DbIndex;
use crate::core::key::{entry_key, entry_key_name, parse_entry_key, Variant};
use crate::core::purge::{self, PurgeRecord, Seen, Target};
use crate::core::stats::STATS;
use crate::ffi::{self, Ctx, KeyKind, NOTIFY_GENERIC};
use crate::server::guard::guarded;
use crate::server::{cluster, events, store};

/// One purge still being carried out. The entries it hides and has not removed yet
/// are kept by the database's index under `id` (`DbIndex::hidden`).
pub struct Job {
    pub id: u64,
    pub db: i32,
    /// The record's key, `rcache:#purge:<n>`.
    pub key: Vec<u8>,
    pub record: PurgeRecord,
    /// False for a record read while loading: which loaded entries it covers is only
    /// known once every key is loaded.
    pub resolved: bool,
    /// Paths' variants taken out of the index and not yet removed, the next at the end
    /// (a path may have more variants than a slice can remove).
    pub backlog: Vec<(Vec<u8>, Vec<Variant>)>,
    /// Its record key was removed (evicted, say) while work was left: a master writes
    /// it again, so the data keeps saying what is hidden.
    pub record_lost: bool,
}

impl Job {
    fn new(id: u64, db: i32, key: Vec<u8>, record: PurgeRecord, resolved: bool) -> Job {
        Job { id, db, key, record, resolved, backlog: Default::default(), record_lost: false }
    }
}

/// Pending jobs, readable without the lock: the hot paths skip every check at 0.
static JOBS: AtomicUsize = AtomicUsize::new(0);
static TIMER_ARMED: AtomicBool = AtomicBool::new(false);
static LAST_ID: AtomicU64 = AtomicU64::new(0);

/// Between two slices on a master; how often a replica looks whether it was promoted.
const NEXT_SLICE_MS: i64 = 1;
const REPLICA_POLL_MS: i64 = 100;
/// Entries handled between two looks at the clock.
const BATCH: usize = 32;

pub fn set_job_count(n: usize) {
    JOBS.store(n, Relaxed);
}

pub fn any_pending() -> bool {
    JOBS.load(Relaxed) > 0
}

/// What the pending purges of `db` make of the entry at (`path`, `variant`) whose
/// header is `h` (its key expiring at `expire_at_ms`): the entry as the command must
/// see it, or `None` when it is gone.
pub fn visible(db: i32, path: &[u8], variant: &Variant, h: Header, now_ms: i64, expire_at_ms: Option<i64>) -> Option<Header> {
    if !any_pending() {
        return Some(h);
    }
    let seen = store::with(|s| {
        s.jobs
            .iter()
            .filter(|j| j.db == db && s.job_covers(j, path, variant, h.lifetime.stored_at_ms))
            .map(|j| j.record.seen(&h, now_ms, expire_at_ms))
            .max_by_key(|seen| match seen {
                Seen::AsStored => 0,
                Seen::Stale => 1,
                Seen::Gone => 2,
            })
    });
    match seen {
        None | Some(Seen::AsStored) => Some(h),
        Some(Seen::Gone) => None,
        Some(Seen::Stale) => {
            let mut stale = h;
            stale.lifetime.fresh_until_ms = entry::stale_since(now_ms);
            Some(stale)
        }
    }
}

/// The earliest stored-at a SET may write: after every pending purge, so that no
/// pending purge covers what is stored after it replied.
pub fn stored_at_floor() -> u64 {
    if !any_pending() {
        return 0;
    }
    store::with(|s| s.jobs.iter().map(|j| j.record.at_ms.saturating_add(1).max(0) as u64).max().unwrap_or(0))
}

/// How many entries a purge may remove in the command itself: what fits in one slice
/// of `rcache.purge-slice-us` at a conservative 4 µs per entry (about 1.5 µs measured,
/// see bench/ANALYSIS.md), so the command stays within its slice too.
pub fn sync_limit() -> usize {
    usize::try_from(config::PURGE_SLICE_US.get() / 4).unwrap_or(125)
}

fn next_id(now_ms: i64) -> u64 {
    let floor = u64::try_from(now_ms).unwrap_or(0).saturating_mul(1000);
    let mut last = LAST_ID.load(Relaxed);
    loop {
        let id = floor.max(last + 1);
        match LAST_ID.compare_exchange(last, id, Relaxed, Relaxed) {
            Ok(_) => return id,
            Err(seen) => last = seen,
        }
    }
}

/// Starts the background removal of what `target` covers in `db` (a master's PURGE or
/// PURGETAG): `hide` takes it out of the live index for the new job's id (and says
/// how many entries it hid); the record is written and replicated first. Returns
/// how many entries were hidden.
pub fn start(ctx: Ctx, db: i32, target: &Target, hide: impl FnOnce(&mut DbIndex, u64) -> usize) -> u64 {
    let now = ffi::milliseconds();
    let record = PurgeRecord { at_ms: now, soft: false, target: target.clone() };
    let id = next_id(now);
    let key = purge::record_key(id, cluster::record_hash_tag(ctx, target).as_deref());
    if !write_record(ctx, &key, &record) {
        return 0;
    }
    let hidden = store::with(|s| {
        let hid = hide(s.db(db), id) as u64;
        s.add_job(Job::new(id, db, key, record, true));
        hid
    });
    wake(ctx);
    hidden
}

/// Hides for `job` every live entry `target` covers in `d`; returns how many.
pub fn hide_covered(d: &mut DbIndex, job: u64, target: &Target) -> usize {
    match (target, target.coverage()) {
        (_, Some(coverage)) => d.hide_covered(job, &coverage),
        (Target::Tags(tags), None) => {
            let tags: Vec<&[u8]> = tags.iter().map(Vec::as_slice).collect();
            let tagged = d.tagged(&tags);
            d.hide_all(job, &tagged)
        }
        _ => 0,
    }
}

/// Writes (and replicates) a purge record at `key`.
fn write_record(ctx: Ctx, key: &[u8], record: &PurgeRecord) -> bool {
    let bytes = record.encode();
    let name = ctx.string(key);
    let mut open = ctx.open_key(&name, true);
    // Replaces whatever is there, TTL included, as SET does.
    let written = open.write_string(bytes.len(), |out| out.copy_from_slice(&bytes)) && open.remove_expire();
    drop(open);
    if written {
        ctx.replicate_set(&name, &bytes, None);
    }
    written
}

/// Writes again the records of pending purges that were removed (master only): in a
/// slot of this node that is not moving away, since the old one may have moved (a
/// record written back into a slot being migrated would be migrated again, onto the
/// copy already there).
fn restore_lost_records(ctx: Ctx) {
    let lost: Vec<(u64, i32, PurgeRecord)> =
        store::with(|s| s.jobs.iter().filter(|j| j.record_lost).map(|j| (j.id, j.db, j.record.clone())).collect());
    let selected = ctx.selected_db();
    for (id, db, record) in lost {
        let key = purge::record_key(id, cluster::stable_hash_tag(ctx).as_deref());
        if ctx.select_db(db) && write_record(ctx, &key, &record) {
            store::with(|s| {
                if let Some(job) = s.jobs.iter_mut().find(|j| j.id == id) {
                    (job.key, job.record_lost) = (key, false);
                }
            });
        }
    }
    ctx.select_db(selected);
}

/// How a purge record key changed outside the module's own commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordChange {
    Removed,
    /// Written by a SET: on a replica, the master's purge; or read while loading.
    Written,
    /// Restored (RESTORE, from a slot migration's MIGRATE): another node's purge.
    Restored,
}

/// A record key was written or removed outside the module's own commands: on a
/// replica (the master's purge), while loading, by a slot migration, or by a user.
pub fn record_event(ctx: Ctx, db: i32, key: &[u8], change: RecordChange) {
    match change {
        RecordChange::Removed => {
            store::with(|s| s.record_removed(db, key));
            wake(ctx);
        }
        _ if ctx.is_loading() => register(ctx, db, key, Coverage::AfterLoad),
        RecordChange::Written => register(ctx, db, key, Coverage::Now),
        RecordChange::Restored => adopt(ctx, db, key),
    }
}

/// A record another node wrote, moved here with its slot. The entries it hides stay
/// behind (the node that hides them keeps them out of MIGRATE, see `migration`); a
/// covered entry that arrives anyway (a RESTORE by hand) is indexed as this job's
/// (`State::index_arrival`). What is here already: for a prefix in one slot, matched
/// against the entries' stored-at, as after a load; for a purge of several slots
/// nothing, as this node ran its own part of that purge.
fn adopt(ctx: Ctx, db: i32, key: &[u8]) {
    let Some(record) = ctx.peek_string(key, |bytes| bytes.and_then(PurgeRecord::decode)) else { return };
    if cluster::moved_record_may_cover_entries_here(&record.target) {
        register(ctx, db, key, Coverage::AfterLoad);
        resolve_loaded(ctx);
    } else {
        register(ctx, db, key, Coverage::ArrivalsOnly);
    }
}

/// A record found in data indexed all at once (MODULE LOAD, a completed async load):
/// matched against the entries by [`resolve_loaded`].
pub fn record_found(ctx: Ctx, db: i32, key: &[u8]) {
    register(ctx, db, key, Coverage::AfterLoad);
}

/// What a registered record hides of the entries already indexed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Coverage {
    /// Everything its prefix covers: applying a master's stream, every covered entry
    /// there now is older than the purge.
    Now,
    /// What [`resolve_loaded`] matches by stored-at once every key is there.
    AfterLoad,
    /// Nothing: only covered entries that arrive from now on.
    ArrivalsOnly,
}

/// Registers the job of the record at `key`.
fn register(ctx: Ctx, db: i32, key: &[u8], coverage: Coverage) {
    let Some(record) = ctx.peek_string(key, |bytes| bytes.and_then(PurgeRecord::decode)) else { return };
    // The record of a job already known (written again after it was lost): same job.
    let known = store::with(|s| s.jobs.iter_mut().find(|j| j.db == db && j.key == key).map(|j| j.record_lost = false).is_some());
    if known {
        return;
    }
    let id = next_id(ffi::milliseconds());
    store::with(|s| {
        if coverage == Coverage::Now {
            hide_covered(s.db(db), id, &record.target);
        }
        s.add_job(Job::new(id, db, key.to_vec(), record, coverage != Coverage::AfterLoad));
    });
    wake(ctx);
}

/// After a load: matches each record read from the data against the loaded entries,
/// moving those stored no later than its purge out of the live index. O(covered).
pub fn resolve_loaded(ctx: Ctx) {
    let unresolved: Vec<(u64, i32, PurgeRecord)> =
        store::with(|s| s.jobs.iter().filter(|j| !j.resolved).map(|j| (j.id, j.db, j.record.clone())).collect());
    let selected = ctx.selected_db();
    for (id, db, record) in unresolved {
        let candidates: Vec<(Vec<u8>, Variant)> = store::with(|s| {
            let Some(d) = s.existing_db(db) else { return Vec::new() };
            match (&record.target, record.coverage()) {
                (_, Some(coverage)) => {
                    let mut out = Vec::new();
                    d.paths.for_each_covered(&coverage, |path, stored| out.push((path.to_vec(), stored.variant)));
                    out
                }
                (Target::Tags(tags), None) => d.tagged(&tags.iter().map(Vec::as_slice).collect::<Vec<_>>()),
                _ => Vec::new(),
            }
        });
        if !ctx.select_db(db) {
            continue;
        }
        let covered: Vec<(Vec<u8>, Variant)> = candidates
            .into_iter()
            .filter(|(path, variant)| {
                let stored_at = ctx.peek_string(&entry_key(path, variant), |bytes| {
                    bytes.and_then(|b| entry::header(b).ok()).map(|h| h.lifetime.stored_at_ms)
                });
                stored_at.is_some_and(|at| record.predates(at))
            })
            .collect();
        store::with(|s| {
            for (path, variant) in &covered {
                s.db(db).hide(id, path, variant);
            }
            if let Some(job) = s.jobs.iter_mut().find(|j| j.id == id) {
                job.resolved = true;
            }
        });
    }
    ctx.select_db(selected);
    wake(ctx);
}

/// Arms the slice timer unless it is armed.
pub fn wake(ctx: Ctx) {
    if any_pending() && !TIMER_ARMED.swap(true, Relaxed) {
        let after = if ctx.is_replica() { REPLICA_POLL_MS } else { NEXT_SLICE_MS };
        ctx.create_timer(after, Some(on_timer));
    }
}

extern "C" fn on_timer(ctx: *mut raw::RedisModuleCtx, _data: *mut c_void) {
    let ctx = Ctx::from_raw(ctx);
    TIMER_ARMED.store(false, Relaxed);
    guarded(ctx, "background purge", || (), || {
        if !ctx.is_replica() && !ctx.is_loading() {
            restore_lost_records(ctx);
            run_slice(ctx);
        }
        wake(ctx);
    });
}

/// One slice of background work: deletes covered keys for at most
/// `rcache.purge-slice-us`, replicating what it does.
fn run_slice(ctx: Ctx) {
    let started = Instant::now();
    let budget = Duration::from_micros(u64::try_from(config::PURGE_SLICE_US.get()).unwrap_or(500));
    let selected = ctx.selected_db();
    // A batch starts only if one more as long as the longest so far still fits (the
    // first always runs: work must progress whatever the setting).
    let mut longest = Duration::ZERO;
    // Jobs whose entries all went some other way (expired, deleted, migrated).
    finish_done_jobs(ctx);
    while longest.is_zero() || started.elapsed() + longest <= budget {
        let batch_started = Instant::now();
        let Some((db, record, batch)) = store::with(|s| s.take_batch(BATCH)) else { break };
        if !ctx.select_db(db) {
            break;
        }
        let mut deleted = Vec::with_capacity(batch.len());
        let mut paths = Vec::with_capacity(batch.len());
        for (path, variant) in &batch {
            let key = ctx.string(&entry_key_name(path, variant));
            let mut open = ctx.open_key(&key, true);
            // Only what the purge covers (it hid this entry): a SET since then stored a
            // newer entry here.
            let covered = open.kind() == KeyKind::String
                && open.string().and_then(|b| entry::header(b).ok()).is_some_and(|h| record.predates(h.lifetime.stored_at_ms));
            if covered && open.delete() {
                drop(open);
                deleted.push(key);
                paths.push(path.as_slice());
            }
        }
        ctx.replicate_unlink(&deleted);
        for key in &deleted {
            events::while_notifying_ourselves(|| ctx.notify(NOTIFY_GENERIC, c"del", key));
        }
        events::signal_paths(ctx, paths);
        finish_done_jobs(ctx);
        longest = longest.max(batch_started.elapsed());
    }
    ctx.select_db(selected);
    STATS.purge_took(started.elapsed().as_micros() as u64);
}

/// Deletes the record of every job with nothing left to remove, and forgets the job.
/// A job whose record is in a slot this node is importing is not done: more of the
/// entries it hides may still arrive.
fn finish_done_jobs(ctx: Ctx) {
    if !store::with(|s| s.any_done_job()) {
        return;
    }
    let importing = cluster::importing_slots(ctx);
    let done: Vec<Job> = store::with(|s| s.take_done_jobs(|job| !importing.contains(key_hash_slot(&job.key))));
    for job in done {
        if ctx.select_db(job.db) {
            delete_record(ctx, &job.key);
        }
    }
}

/// Deletes (and replicates the deletion of) the record key `key` of the selected
/// database.
fn delete_record(ctx: Ctx, key: &[u8]) {
    let name = ctx.string(key);
    if ctx.open_key(&name, true).delete() {
        ctx.replicate_unlink(std::slice::from_ref(&name));
        events::while_notifying_ourselves(|| ctx.notify(NOTIFY_GENERIC, c"del", &name));
    }
}

/// Whether `key` (an entry key) holds an entry a pending purge hides: the commands
/// that remove entries leave it to the purge, neither removing nor counting it.
pub fn hides_key(db: i32, key: &[u8], bytes: &[u8]) -> bool {
    if !any_pending() {
        return false;
    }
    let (Some((path, variant)), Ok(h)) = (parse_entry_key(key), entry::header(bytes)) else { return false };
    visible(db, path, &variant, h, ffi::milliseconds(), None).is_none()
}
