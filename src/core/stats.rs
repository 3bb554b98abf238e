//! The INFO counters. Plain atomics: commands and callbacks bump them without
//! touching the index state.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

pub struct Stats {
    pub hits: AtomicU64,
    pub stale_hits: AtomicU64,
    pub misses: AtomicU64,
    pub not_modified: AtomicU64,
    pub sets: AtomicU64,
    pub dels: AtomicU64,
    pub purges: AtomicU64,
    pub purged_entries: AtomicU64,
    pub tag_purges: AtomicU64,
    pub tag_purged_entries: AtomicU64,
    pub soft_purges: AtomicU64,
    pub soft_purged_entries: AtomicU64,
    pub soft_tag_purges: AtomicU64,
    pub soft_tag_purged_entries: AtomicU64,
    pub index_removals_expired: AtomicU64,
    pub index_removals_evicted: AtomicU64,
    pub index_removals_other: AtomicU64,
    pub purge_max_us: AtomicU64,
    pub leases_granted: AtomicU64,
    pub lease_sets: AtomicU64,
    pub lease_sets_rejected: AtomicU64,
    pub lease_waits: AtomicU64,
    pub lease_waits_served: AtomicU64,
    pub lease_waits_handed: AtomicU64,
    pub lease_waits_timeout: AtomicU64,
}

pub static STATS: Stats = Stats {
    hits: AtomicU64::new(0),
    stale_hits: AtomicU64::new(0),
    misses: AtomicU64::new(0),
    not_modified: AtomicU64::new(0),
    sets: AtomicU64::new(0),
    dels: AtomicU64::new(0),
    purges: AtomicU64::new(0),
    purged_entries: AtomicU64::new(0),
    tag_purges: AtomicU64::new(0),
    tag_purged_entries: AtomicU64::new(0),
    soft_purges: AtomicU64::new(0),
    soft_purged_entries: AtomicU64::new(0),
    soft_tag_purges: AtomicU64::new(0),
    soft_tag_purged_entries: AtomicU64::new(0),
    index_removals_expired: AtomicU64::new(0),
    index_removals_evicted: AtomicU64::new(0),
    index_removals_other: AtomicU64::new(0),
    purge_max_us: AtomicU64::new(0),
    leases_granted: AtomicU64::new(0),
    lease_sets: AtomicU64::new(0),
    lease_sets_rejected: AtomicU64::new(0),
    lease_waits: AtomicU64::new(0),
    lease_waits_served: AtomicU64::new(0),
    lease_waits_handed: AtomicU64::new(0),
    lease_waits_timeout: AtomicU64::new(0),
};

pub fn bump(counter: &AtomicU64, by: u64) {
    counter.fetch_add(by, Relaxed);
}

/// Why the index dropped an entry it did not remove itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Removal {
    Expired,
    Evicted,
    Other,
}

impl Stats {
    pub fn removed(&self, why: Removal, n: u64) {
        let counter = match why {
            Removal::Expired => &self.index_removals_expired,
            Removal::Evicted => &self.index_removals_evicted,
            Removal::Other => &self.index_removals_other,
        };
        bump(counter, n);
    }

    pub fn purge_took(&self, micros: u64) {
        self.purge_max_us.fetch_max(micros, Relaxed);
    }

    /// The counter fields of INFO, in order.
    pub fn fields(&self) -> [(&'static str, u64); 25] {
        let get = |c: &AtomicU64| c.load(Relaxed);
        [
            ("hits", get(&self.hits)),
            ("stale_hits", get(&self.stale_hits)),
            ("misses", get(&self.misses)),
            ("not_modified", get(&self.not_modified)),
            ("sets", get(&self.sets)),
            ("dels", get(&self.dels)),
            ("purges", get(&self.purges)),
            ("purged_entries", get(&self.purged_entries)),
            ("tag_purges", get(&self.tag_purges)),
            ("tag_purged_entries", get(&self.tag_purged_entries)),
            ("soft_purges", get(&self.soft_purges)),
            ("soft_purged_entries", get(&self.soft_purged_entries)),
            ("soft_tag_purges", get(&self.soft_tag_purges)),
            ("soft_tag_purged_entries", get(&self.soft_tag_purged_entries)),
            ("index_removals_expired", get(&self.index_removals_expired)),
            ("index_removals_evicted", get(&self.index_removals_evicted)),
            ("index_removals_other", get(&self.index_removals_other)),
            ("purge_max_us", get(&self.purge_max_us)),
            ("leases_granted", get(&self.leases_granted)),
            ("lease_sets", get(&self.lease_sets)),
            ("lease_sets_rejected", get(&self.lease_sets_rejected)),
            ("lease_waits", get(&self.lease_waits)),
            ("lease_waits_served", get(&self.lease_waits_served)),
            ("lease_waits_handed", get(&self.lease_waits_handed)),
            ("lease_waits_timeout", get(&self.lease_waits_timeout)),
        ]
    }
}
