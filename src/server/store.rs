//! The module's in-memory state: one index per database, plus entry keys whose
//! contents changed outside the module and still need a look. Behind a mutex that is
//! only ever held for pure in-memory work, never across a call into Redis: Redis may
//! call our notification callback synchronously from inside our own commands.

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex, MutexGuard, TryLockError};

use crate::core::index::DbIndex;
use crate::core::key::Variant;
use crate::server::leases::Leases;
use crate::core::purge::{PurgeRecord, Target};
use crate::server::loading;
use crate::server::purges::{self, Job};

#[derive(Default)]
pub struct State {
    dbs: HashMap<i32, DbIndex>,
    /// (db, key) of entry keys to re-read, and of purge records that arrived by
    /// RESTORE, handled in order when reading is safe (see `events`).
    pub pending: Vec<(i32, Vec<u8>)>,
    pub leases: Leases,
    /// Purges still being carried out in the background, oldest first.
    pub jobs: Vec<Job>,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Totals {
    pub entries: u64,
    pub paths: u64,
    pub tags: u64,
    /// Entries purged but not yet physically removed.
    pub purge_pending: u64,
}

impl State {
    pub fn db(&mut self, db: i32) -> &mut DbIndex {
        self.dbs.entry(db).or_default()
    }

    /// Nothing indexed, hidden, pending or being purged: a load can be indexed apart.
    pub fn is_empty(&self) -> bool {
        self.dbs.values().all(DbIndex::is_empty) && self.pending.is_empty() && self.jobs.is_empty()
    }

    /// Installs indexes built apart from an empty state (see `loading`).
    pub fn install(&mut self, built: HashMap<i32, DbIndex>) {
        for (db, index) in built {
            *self.db(db) = index;
        }
    }

    pub fn existing_db(&self, db: i32) -> Option<&DbIndex> {
        self.dbs.get(&db)
    }

    /// Drops the entry from the index, also if a pending purge hid it; returns whether
    /// the live index held it.
    pub fn remove(&mut self, db: i32, path: &[u8], variant: &Variant) -> bool {
        let Some(d) = self.dbs.get_mut(&db) else { return false };
        d.remove(path, variant) || {
            d.remove_hidden(path, variant);
            false
        }
    }

    /// Indexes an entry that changed outside the module's own commands (a replica's
    /// stream, RESTORE from a slot migration, a user's write). One a pending purge
    /// covers (stored no later than it) arrived after that purge hid what was here: it
    /// is that purge's to remove, and stays hidden: returns whether one did.
    pub fn index_arrival(&mut self, db: i32, path: &[u8], variant: Variant, tags: &[&[u8]], stored_at_ms: u64) -> bool {
        let covering = self.jobs.iter().find(|j| j.db == db && j.resolved && j.record.covers(path, tags, stored_at_ms)).map(|j| j.id);
        let index = self.db(db);
        index.insert(path, variant, tags);
        if let Some(job) = covering {
            index.hide(job, path, &variant);
        }
        covering.is_some()
    }

    pub fn add_job(&mut self, job: Job) {
        self.jobs.push(job);
        purges::set_job_count(self.jobs.len());
    }

    /// The record of the job at `key` in `db` was removed (evicted, deleted, or the
    /// master finished). A job with work left carries on — its purge replied, so what it
    /// hid stays hidden — and a master writes its record again (`record_lost`); a job
    /// with nothing left is done.
    pub fn record_removed(&mut self, db: i32, key: &[u8]) {
        let Some(at) = self.jobs.iter().position(|j| j.db == db && j.key == key) else { return };
        if self.pending_of(&self.jobs[at]) > 0 || !self.jobs[at].resolved {
            self.jobs[at].record_lost = true;
        } else {
            self.jobs.remove(at);
            purges::set_job_count(self.jobs.len());
        }
    }

    /// Up to `n` entries, as (path, variant), the oldest resolved job with work left
    /// still has to remove, with the job's database and record. Out of the index from
    /// then on. A path with more variants than fit stays in the job's backlog.
    pub fn take_batch(&mut self, n: usize) -> Option<(i32, PurgeRecord, Vec<(Vec<u8>, Variant)>)> {
        let dbs = &mut self.dbs;
        let job = self.jobs.iter_mut().find(|j| j.resolved && (!j.backlog.is_empty() || dbs.get(&j.db).is_some_and(|d| d.hidden(j.id) > 0)))?;
        let mut batch = Vec::with_capacity(n);
        while batch.len() < n {
            if job.backlog.is_empty() {
                let taken = dbs.get_mut(&job.db).map(|d| d.take_hidden(job.id, n - batch.len())).unwrap_or_default();
                if taken.is_empty() {
                    break;
                }
                // Reversed: the backlog is taken from its end.
                job.backlog = taken.into_iter().rev().collect();
            }
            let room = n - batch.len();
            let Some((path, variants)) = job.backlog.last_mut() else { break };
            if variants.len() > room {
                let rest = variants.len() - room;
                batch.extend(variants.split_off(rest).into_iter().map(|v| (path.clone(), v)));
                continue;
            }
            // The whole path fits: its last variant takes the path itself (most paths
            // have one variant), and nothing is copied or allocated for the rest.
            let (path, mut variants) = job.backlog.pop().unwrap_or_default();
            let last = variants.pop();
            batch.extend(variants.into_iter().map(|v| (path.clone(), v)));
            batch.extend(last.map(|v| (path, v)));
        }
        Some((job.db, job.record.clone(), batch))
    }

    /// Whether `job` covers the entry at (path, variant) stored at `stored_at_ms`. A
    /// prefix says so by itself; which entries a tag purge covers is what it hid (its
    /// hidden set and its backlog), as their tags were when it ran.
    pub fn job_covers(&self, job: &Job, path: &[u8], variant: &Variant, stored_at_ms: u64) -> bool {
        match job.record.target {
            Target::Prefix { .. } => job.record.covers(path, &[], stored_at_ms),
            Target::Tags(_) => {
                job.record.predates(stored_at_ms)
                    && (job.backlog.iter().any(|(p, vs)| p == path && vs.contains(variant))
                        || self.dbs.get(&job.db).is_some_and(|d| d.is_hidden_by(job.id, path, variant)))
            }
        }
    }

    /// Entries a job still has to remove (INFO `purge_pending`).
    pub fn pending_of(&self, job: &Job) -> u64 {
        (job.backlog.iter().map(|(_, vs)| vs.len()).sum::<usize>() + self.dbs.get(&job.db).map_or(0, |d| d.hidden(job.id))) as u64
    }

    fn is_done(&self, job: &Job) -> bool {
        job.resolved && self.pending_of(job) == 0
    }

    pub fn any_done_job(&self) -> bool {
        self.jobs.iter().any(|j| self.is_done(j))
    }

    /// Every resolved job with nothing left that `may_end` allows, which are forgotten.
    pub fn take_done_jobs(&mut self, may_end: impl Fn(&Job) -> bool) -> Vec<Job> {
        let done_ids: Vec<u64> = self.jobs.iter().filter(|j| self.is_done(j) && may_end(j)).map(|j| j.id).collect();
        let (done, kept): (Vec<Job>, Vec<Job>) = std::mem::take(&mut self.jobs).into_iter().partition(|j| done_ids.contains(&j.id));
        self.jobs = kept;
        purges::set_job_count(self.jobs.len());
        done
    }

    /// Drops the index of `db` (-1: all databases); returns how many entries it held.
    pub fn flush(&mut self, db: i32) -> u64 {
        let dropped: Vec<DbIndex> = if db == -1 {
            self.dbs.drain().map(|(_, d)| d).collect()
        } else {
            self.dbs.remove(&db).into_iter().collect()
        };
        self.pending.retain(|(d, _)| db != -1 && *d != db);
        // Their records went with the data.
        self.jobs.retain(|j| db != -1 && j.db != db);
        purges::set_job_count(self.jobs.len());
        dropped.iter().map(|d| d.paths.entries() as u64).sum()
    }

    pub fn swap(&mut self, a: i32, b: i32) {
        let (ia, ib) = (self.dbs.remove(&a), self.dbs.remove(&b));
        if let Some(i) = ia {
            self.dbs.insert(b, i);
        }
        if let Some(i) = ib {
            self.dbs.insert(a, i);
        }
        let swapped = |db: &mut i32| {
            if *db == a {
                *db = b;
            } else if *db == b {
                *db = a;
            }
        };
        self.pending.iter_mut().for_each(|(db, _)| swapped(db));
        self.jobs.iter_mut().for_each(|j| swapped(&mut j.db));
    }

    pub fn totals(&self) -> Totals {
        let purge_pending = self.jobs.iter().map(|j| self.pending_of(j)).sum();
        self.dbs.values().fold(Totals { purge_pending, ..Totals::default() }, |t, d| Totals {
            entries: t.entries + d.paths.entries() as u64,
            paths: t.paths + d.paths.paths() as u64,
            tags: t.tags + d.tags.len() as u64,
            ..t
        })
    }
}

static STATE: LazyLock<Mutex<State>> = LazyLock::new(Default::default);

/// Runs `f` on the state. Re-entering (calling this from inside `f`) is a bug; it
/// panics, and the entry-point guard turns that into an error reply and a log line.
pub fn with<R>(f: impl FnOnce(&mut State) -> R) -> R {
    let mut guard = lock();
    // What a load queued so far comes first (see `loading`).
    if loading::active() {
        loading::finish(&mut guard);
    }
    f(&mut guard)
}

/// Reads the state as it is, leaving a load's indexing thread running: for INFO, which
/// monitoring may poll all through a long load (and a crash report may call). Its
/// figures then leave out the entries still being indexed.
pub fn peek<R>(f: impl FnOnce(&State) -> R) -> R {
    f(&lock())
}

fn lock() -> MutexGuard<'static, State> {
    match STATE.try_lock() {
        Ok(g) => g,
        Err(TryLockError::Poisoned(p)) => p.into_inner(),
        Err(TryLockError::WouldBlock) => panic!("rcache state re-entered while in use"),
    }
}
