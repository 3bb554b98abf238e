//! The module's in-memory state: one index per database, plus entry keys whose
//! contents changed outside the module and still need a look. Behind a mutex that is
//! only ever held for pure in-memory work, never across a call into Redis: Redis may
//! call our notification callback synchronously from inside our own commands.

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex, TryLockError};

use crate::core::index::DbIndex;
use crate::core::key::Variant;
use crate::server::leases::Leases;

#[derive(Default)]
pub struct State {
    dbs: HashMap<i32, DbIndex>,
    /// (db, key) of entry keys to re-read when reading is safe (see `events`).
    pub pending: Vec<(i32, Vec<u8>)>,
    pub leases: Leases,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Totals {
    pub entries: u64,
    pub paths: u64,
    pub tags: u64,
}

impl State {
    pub fn db(&mut self, db: i32) -> &mut DbIndex {
        self.dbs.entry(db).or_default()
    }

    pub fn existing_db(&self, db: i32) -> Option<&DbIndex> {
        self.dbs.get(&db)
    }

    pub fn remove(&mut self, db: i32, path: &[u8], variant: &Variant) -> bool {
        self.dbs.get_mut(&db).is_some_and(|d| d.remove(path, variant))
    }

    /// Drops the index of `db` (-1: all databases); returns how many entries it held.
    pub fn flush(&mut self, db: i32) -> u64 {
        let dropped: Vec<DbIndex> = if db == -1 {
            self.dbs.drain().map(|(_, d)| d).collect()
        } else {
            self.dbs.remove(&db).into_iter().collect()
        };
        self.pending.retain(|(d, _)| db != -1 && *d != db);
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
        for (db, _) in &mut self.pending {
            if *db == a {
                *db = b;
            } else if *db == b {
                *db = a;
            }
        }
    }

    pub fn totals(&self) -> Totals {
        self.dbs.values().fold(Totals::default(), |t, d| Totals {
            entries: t.entries + d.paths.entries() as u64,
            paths: t.paths + d.paths.paths() as u64,
            tags: t.tags + d.tags.len() as u64,
        })
    }
}

static STATE: LazyLock<Mutex<State>> = LazyLock::new(Default::default);

/// Runs `f` on the state. Re-entering (calling this from inside `f`) is a bug; it
/// panics, and the entry-point guard turns that into an error reply and a log line.
pub fn with<R>(f: impl FnOnce(&mut State) -> R) -> R {
    let mut guard = match STATE.try_lock() {
        Ok(g) => g,
        Err(TryLockError::Poisoned(p)) => p.into_inner(),
        Err(TryLockError::WouldBlock) => panic!("rcache state re-entered while in use"),
    };
    f(&mut guard)
}
