//! The lease table: who may refill an entry, who waits for it, and the stale-set
//! guard (the contract's "Leases"). Pure logic; knows nothing of Redis. Every
//! operation takes the current time and returns the [`Action`]s the glue must carry
//! out on blocked clients (serve a waiter, hand a waiter a lease).
//!
//! An entry is (db, path, variant). Per entry there is at most one live lease and a
//! queue of waiters in arrival order. Slots are kept per database in a map ordered by
//! path, so a prefix purge finds the leases it covers — also of entries that do not
//! exist — by one range walk. Expiries sit in a second ordered map, so expired leases
//! are reclaimed from its front without scanning all leases. Memory is bounded by the
//! live leases and the waiters (plus a capped log of tag purges, see `tag_purged`).

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

use crate::core::key::Variant;
use crate::core::path::Coverage;

pub type WaiterId = u64;

pub const TOKEN_LEN: usize = 32;

/// At most this many tag purges are remembered for the stale-set guard; when more
/// happen while leases are live, the leases granted before the forgotten ones are
/// refused (one extra render, never a stale refill).
pub const MAX_TAG_LOG: usize = 65_536;

/// A lease token: the table's random nonce and the grant's sequence number, in hex.
/// The nonce differs per process, so a token from before a restart never matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Token([u8; TOKEN_LEN]);

impl Token {
    fn new(nonce: u64, seq: u64) -> Token {
        let mut bytes = [0u8; TOKEN_LEN];
        let mut raw = [0u8; 16];
        raw[..8].copy_from_slice(&nonce.to_be_bytes());
        raw[8..].copy_from_slice(&seq.to_be_bytes());
        // Cannot fail: the buffer is exactly twice the input's length.
        let _ = hex::encode_to_slice(raw, &mut bytes);
        Token(bytes)
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The grant sequence number of a token this table issued; None for any other
    /// bytes (tokens compare byte for byte: upper-case hex is another token).
    fn seq(bytes: &[u8], nonce: u64) -> Option<u64> {
        let mut raw = [0u8; 16];
        hex::decode_to_slice(bytes, &mut raw).ok()?;
        let seq = u64::from_be_bytes(raw[8..].try_into().ok()?);
        (Token::new(nonce, seq).as_bytes() == bytes).then_some(seq)
    }
}

/// What the glue must do for a blocked client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// The entry was stored: answer the waiter with it.
    Serve(WaiterId),
    /// The lease ended without a store: the waiter now holds this lease.
    Hand(WaiterId, Token),
}

/// What a LOOKUP gets from the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    Granted(Token),
    /// Block the client as this waiter.
    Wait(WaiterId),
    Nothing,
}

/// What the LOOKUP found in the keyspace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Found {
    Fresh,
    Stale,
    Miss,
}

#[derive(Debug)]
struct Lease {
    seq: u64,
    expires_at: i64,
}

#[derive(Debug)]
struct Waiter {
    id: WaiterId,
    /// The lease length asked for with LEASE, if any.
    lease_ms: Option<i64>,
}

#[derive(Debug)]
struct Slot {
    variant: Variant,
    lease: Option<Lease>,
    waiters: VecDeque<Waiter>,
}

type EntryId = (i32, Vec<u8>, Variant);

/// Everything but the slots, so a slot can be borrowed while these change.
#[derive(Debug)]
struct Books {
    nonce: u64,
    clock: u64,
    next_waiter: WaiterId,
    /// (expires_at, seq) of every live lease.
    expiries: BTreeMap<(i64, u64), EntryId>,
    /// Grant sequence numbers of the live leases (the oldest bounds the tag log).
    live_seqs: BTreeSet<u64>,
    /// (seq, db, tag) of tag purges while leases were live, oldest first.
    tag_log: VecDeque<(u64, i32, Vec<u8>)>,
    /// db -> tag -> seq of its latest purge in `tag_log`.
    tag_last: HashMap<i32, HashMap<Vec<u8>, u64>>,
    /// Leases granted before this seq are refused: the log forgot purges after them.
    log_floor: u64,
    waiters: HashMap<WaiterId, EntryId>,
}

#[derive(Debug)]
pub struct LeaseTable {
    slots: HashMap<i32, BTreeMap<Vec<u8>, Vec<Slot>>>,
    books: Books,
}

impl Books {
    fn grant(&mut self, db: i32, path: &[u8], slot: &mut Slot, now: i64, ms: i64) -> Token {
        self.clock += 1;
        let seq = self.clock;
        let expires_at = now.saturating_add(ms);
        self.expiries.insert((expires_at, seq), (db, path.to_vec(), slot.variant));
        self.live_seqs.insert(seq);
        slot.lease = Some(Lease { seq, expires_at });
        Token::new(self.nonce, seq)
    }

    /// Ends the slot's lease (if any). A store serves every waiter; otherwise the
    /// first waiter that asked for a lease is handed a new one.
    fn end(&mut self, db: i32, path: &[u8], slot: &mut Slot, now: i64, stored: bool, actions: &mut Vec<Action>) {
        if let Some(lease) = slot.lease.take() {
            self.expiries.remove(&(lease.expires_at, lease.seq));
            self.live_seqs.remove(&lease.seq);
        }
        if stored {
            for w in slot.waiters.drain(..) {
                self.waiters.remove(&w.id);
                actions.push(Action::Serve(w.id));
            }
        } else if let Some(pos) = slot.waiters.iter().position(|w| w.lease_ms.is_some()) {
            if let Some(Waiter { id, lease_ms: Some(ms) }) = slot.waiters.remove(pos) {
                self.waiters.remove(&id);
                let token = self.grant(db, path, slot, now, ms);
                actions.push(Action::Hand(id, token));
            }
        }
        self.prune_tag_log();
    }

    fn prune_tag_log(&mut self) {
        let oldest = self.live_seqs.first().copied().unwrap_or(u64::MAX);
        while self.tag_log.front().is_some_and(|(seq, _, _)| *seq < oldest) {
            if let Some((seq, db, tag)) = self.tag_log.pop_front() {
                self.forget_tag(seq, db, &tag);
            }
        }
    }

    fn forget_tag(&mut self, seq: u64, db: i32, tag: &[u8]) {
        if let Some(tags) = self.tag_last.get_mut(&db) {
            if tags.get(tag) == Some(&seq) {
                tags.remove(tag);
                if tags.is_empty() {
                    self.tag_last.remove(&db);
                }
            }
        }
    }

    /// Whether a purge of one of `tags` in `db` happened after grant `seq`.
    fn tag_purged_since(&self, db: i32, seq: u64, tags: &[&[u8]]) -> bool {
        seq < self.log_floor
            || self.tag_last.get(&db).is_some_and(|last| tags.iter().any(|t| last.get(*t).is_some_and(|s| *s > seq)))
    }
}

impl Default for LeaseTable {
    /// A table with a random nonce (std's per-process random hash keys).
    fn default() -> Self {
        use std::hash::{BuildHasher, Hasher};
        Self::new(std::collections::hash_map::RandomState::new().build_hasher().finish())
    }
}

impl LeaseTable {
    /// `nonce` should be random per process (see [`Token`]).
    pub fn new(nonce: u64) -> Self {
        LeaseTable {
            slots: HashMap::new(),
            books: Books {
                nonce,
                clock: 0,
                next_waiter: 0,
                expiries: BTreeMap::new(),
                live_seqs: BTreeSet::new(),
                tag_log: VecDeque::new(),
                tag_last: HashMap::new(),
                log_floor: 0,
                waiters: HashMap::new(),
            },
        }
    }

    /// Live leases.
    pub fn live(&self) -> usize {
        self.books.expiries.len()
    }

    /// Clients waiting.
    pub fn waiting(&self) -> usize {
        self.books.waiters.len()
    }

    /// When the next lease runs out (for the glue's timer).
    pub fn next_expiry(&self) -> Option<i64> {
        self.books.expiries.keys().next().map(|(at, _)| *at)
    }

    /// Runs `f` on the slot of an entry (creating it when `create`); drops the slot
    /// afterwards if it holds neither a lease nor waiters.
    fn with_slot<R>(
        &mut self,
        db: i32,
        path: &[u8],
        variant: &Variant,
        create: bool,
        f: impl FnOnce(&mut Books, &mut Slot) -> R,
    ) -> Option<R> {
        let paths = match self.slots.get_mut(&db) {
            Some(p) => p,
            None if create => self.slots.entry(db).or_default(),
            None => return None,
        };
        let slots = match paths.get_mut(path) {
            Some(s) => s,
            None if create => paths.entry(path.to_vec()).or_default(),
            None => return None,
        };
        let at = match slots.iter().position(|s| s.variant == *variant) {
            Some(at) => at,
            None if create => {
                slots.push(Slot { variant: *variant, lease: None, waiters: VecDeque::new() });
                slots.len() - 1
            }
            None => return None,
        };
        let slot = slots.get_mut(at)?;
        let result = f(&mut self.books, slot);
        if slot.lease.is_none() && slot.waiters.is_empty() {
            slots.swap_remove(at);
            if slots.is_empty() {
                paths.remove(path);
                if paths.is_empty() {
                    self.slots.remove(&db);
                }
            }
        }
        Some(result)
    }

    /// Ends every lease whose time ran out by `now`, handing each to its next waiter.
    pub fn expire(&mut self, now: i64) -> Vec<Action> {
        let mut actions = Vec::new();
        self.expire_into(now, &mut actions);
        actions
    }

    fn expire_into(&mut self, now: i64, actions: &mut Vec<Action>) {
        // A handed lease runs out at least 1 ms after `now`, so this ends.
        while let Some(entry) = self.books.expiries.first_key_value().filter(|((at, _), _)| *at <= now).map(|(_, e)| e.clone())
        {
            let (db, path, variant) = entry;
            let ended = self.with_slot(db, &path, &variant, false, |books, slot| books.end(db, &path, slot, now, false, actions));
            if ended.is_none() {
                // Unreachable: a live lease always has its slot. Drop the record anyway.
                self.books.expiries.pop_first();
            }
        }
    }

    /// A LOOKUP that found `found` asks for a lease of `lease_ms` and/or to wait.
    /// A fresh entry grants none; a miss whose lease another caller holds waits.
    pub fn lookup(
        &mut self,
        db: i32,
        path: &[u8],
        variant: &Variant,
        found: Found,
        lease_ms: Option<i64>,
        wait: bool,
        now: i64,
    ) -> (Lookup, Vec<Action>) {
        let mut actions = Vec::new();
        self.expire_into(now, &mut actions);
        if found == Found::Fresh || (lease_ms.is_none() && !wait) {
            return (Lookup::Nothing, actions);
        }
        let leased = self.with_slot(db, path, variant, false, |_, slot| slot.lease.is_some()).unwrap_or(false);
        let outcome = match lease_ms {
            Some(ms) if !leased => self
                .with_slot(db, path, variant, true, |books, slot| Lookup::Granted(books.grant(db, path, slot, now, ms)))
                .unwrap_or(Lookup::Nothing),
            _ if wait && leased && found == Found::Miss => self
                .with_slot(db, path, variant, true, |books, slot| {
                    books.next_waiter += 1;
                    let id = books.next_waiter;
                    slot.waiters.push_back(Waiter { id, lease_ms });
                    books.waiters.insert(id, (db, path.to_vec(), *variant));
                    Lookup::Wait(id)
                })
                .unwrap_or(Lookup::Nothing),
            _ => Lookup::Nothing,
        };
        (outcome, actions)
    }

    /// `SET … LEASE token` with `tags`: whether it may store. A refusal with the live
    /// lease's token ends that lease; any other token changes nothing.
    pub fn may_set(&mut self, db: i32, path: &[u8], variant: &Variant, token: &[u8], tags: &[&[u8]], now: i64) -> (bool, Vec<Action>) {
        let mut actions = Vec::new();
        self.expire_into(now, &mut actions);
        let Some(seq) = Token::seq(token, self.books.nonce) else { return (false, actions) };
        let allowed = self.with_slot(db, path, variant, false, |books, slot| {
            if slot.lease.as_ref().is_none_or(|l| l.seq != seq) {
                return false;
            }
            if books.tag_purged_since(db, seq, tags) {
                books.end(db, path, slot, now, false, &mut actions);
                return false;
            }
            true
        });
        (allowed.unwrap_or(false), actions)
    }

    /// Whether `token` is the entry's live lease at `now`.
    pub fn holds(&self, db: i32, path: &[u8], variant: &Variant, token: &[u8], now: i64) -> bool {
        let Some(seq) = Token::seq(token, self.books.nonce) else { return false };
        self.slots
            .get(&db)
            .and_then(|paths| paths.get(path))
            .and_then(|slots| slots.iter().find(|s| s.variant == *variant))
            .and_then(|s| s.lease.as_ref())
            .is_some_and(|l| l.seq == seq && l.expires_at > now)
    }

    /// The entry was stored (by any SET): its lease ends and every waiter is served.
    pub fn stored(&mut self, db: i32, path: &[u8], variant: &Variant, now: i64) -> Vec<Action> {
        let mut actions = Vec::new();
        self.expire_into(now, &mut actions);
        self.with_slot(db, path, variant, false, |books, slot| books.end(db, path, slot, now, true, &mut actions));
        actions
    }

    /// The entry was deleted or purged (DEL, or a tag it carried): its lease ends.
    pub fn invalidate(&mut self, db: i32, path: &[u8], variant: &Variant, now: i64) -> Vec<Action> {
        let mut actions = Vec::new();
        self.expire_into(now, &mut actions);
        self.invalidate_into(db, path, variant, now, &mut actions);
        actions
    }

    fn invalidate_into(&mut self, db: i32, path: &[u8], variant: &Variant, now: i64, actions: &mut Vec<Action>) {
        self.with_slot(db, path, variant, false, |books, slot| {
            if slot.lease.is_some() {
                books.end(db, path, slot, now, false, actions);
            }
        });
    }

    /// A PURGE or SOFTPURGE: ends the leases of every covered entry, existing or not.
    pub fn invalidate_covered(&mut self, db: i32, coverage: &Coverage<'_>, now: i64) -> Vec<Action> {
        let mut actions = Vec::new();
        self.expire_into(now, &mut actions);
        let mut hit: Vec<(Vec<u8>, Variant)> = Vec::new();
        if let Some(paths) = self.slots.get(&db) {
            let mut note = |path: &[u8], slots: &[Slot]| {
                hit.extend(slots.iter().filter(|s| s.lease.is_some()).map(|s| (path.to_vec(), s.variant)));
            };
            if let Some(exact) = coverage.exact {
                if let Some(slots) = paths.get(exact) {
                    note(exact, slots);
                }
            }
            if let Some(sub) = coverage.subtree.as_deref() {
                for (path, slots) in paths.range::<[u8], _>((std::ops::Bound::Included(sub), std::ops::Bound::Unbounded)) {
                    if !path.starts_with(sub) {
                        break;
                    }
                    // The exact path never starts with its own subtree prefix (one byte longer).
                    note(path, slots);
                }
            }
        }
        for (path, variant) in hit {
            self.invalidate_into(db, &path, &variant, now, &mut actions);
        }
        actions
    }

    /// A PURGETAG or SOFTPURGETAG of `tags` in `db`. Leases of entries carrying them
    /// are ended by the caller (it knows those entries, see [`Self::invalidate`]); this
    /// remembers the purge so that a later `SET … LEASE` carrying one of the tags,
    /// whose lease is older, is refused.
    pub fn tag_purged(&mut self, db: i32, tags: &[&[u8]], now: i64) -> Vec<Action> {
        let actions = self.expire(now);
        if self.books.live_seqs.is_empty() {
            return actions;
        }
        let books = &mut self.books;
        books.clock += 1;
        let seq = books.clock;
        for tag in tags {
            books.tag_log.push_back((seq, db, tag.to_vec()));
            books.tag_last.entry(db).or_default().insert(tag.to_vec(), seq);
        }
        while books.tag_log.len() > MAX_TAG_LOG {
            if let Some((old, d, tag)) = books.tag_log.pop_front() {
                books.log_floor = books.log_floor.max(old);
                books.forget_tag(old, d, &tag);
            }
        }
        actions
    }

    /// FLUSHDB of `db`, or FLUSHALL (`db` = -1): ends every lease there.
    pub fn flush(&mut self, db: i32, now: i64) -> Vec<Action> {
        let mut actions = Vec::new();
        self.expire_into(now, &mut actions);
        let hit: Vec<EntryId> = self
            .slots
            .iter()
            .filter(|(d, _)| db == -1 || **d == db)
            .flat_map(|(d, paths)| {
                paths.iter().flat_map(move |(path, slots)| {
                    slots.iter().filter(|s| s.lease.is_some()).map(move |s| (*d, path.clone(), s.variant))
                })
            })
            .collect();
        for (d, path, variant) in hit {
            self.invalidate_into(d, &path, &variant, now, &mut actions);
        }
        actions
    }

    /// A waiter that went away (disconnect) or whose time ran out. Returns whether it
    /// was still waiting.
    pub fn remove_waiter(&mut self, id: WaiterId) -> bool {
        let Some((db, path, variant)) = self.books.waiters.remove(&id) else { return false };
        self.with_slot(db, &path, &variant, false, |_, slot| slot.waiters.retain(|w| w.id != id));
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const DB: i32 = 0;

    fn v(q: &str) -> Variant {
        Variant::new(q.as_bytes(), &[])
    }

    fn table() -> LeaseTable {
        LeaseTable::new(0x1234_5678_9abc_def0)
    }

    fn grant(t: &mut LeaseTable, path: &str, now: i64, ms: i64) -> Token {
        match t.lookup(DB, path.as_bytes(), &v(""), Found::Miss, Some(ms), false, now).0 {
            Lookup::Granted(tok) => tok,
            other => panic!("expected a grant on {path}, got {other:?}"),
        }
    }

    fn wait(t: &mut LeaseTable, path: &str, lease: Option<i64>, now: i64) -> WaiterId {
        match t.lookup(DB, path.as_bytes(), &v(""), Found::Miss, lease, true, now).0 {
            Lookup::Wait(id) => id,
            other => panic!("expected to wait on {path}, got {other:?}"),
        }
    }

    fn may_set(t: &mut LeaseTable, path: &str, tok: &Token, tags: &[&str], now: i64) -> bool {
        let tags: Vec<&[u8]> = tags.iter().map(|t| t.as_bytes()).collect();
        t.may_set(DB, path.as_bytes(), &v(""), tok.as_bytes(), &tags, now).0
    }

    fn assert_empty(t: &LeaseTable) {
        assert_eq!(t.live(), 0);
        assert_eq!(t.waiting(), 0);
        assert!(t.slots.is_empty(), "{:?}", t.slots);
        assert!(t.books.expiries.is_empty() && t.books.live_seqs.is_empty());
        assert!(t.books.tag_log.is_empty() && t.books.tag_last.is_empty());
    }

    #[test]
    fn one_live_lease_per_entry_and_none_on_fresh() {
        let mut t = table();
        let tok = grant(&mut t, "/a", 0, 100);
        assert_eq!(tok.as_bytes().len(), TOKEN_LEN);
        assert_eq!(t.lookup(DB, b"/a", &v(""), Found::Miss, Some(100), false, 1).0, Lookup::Nothing);
        assert_eq!(t.lookup(DB, b"/a", &v(""), Found::Stale, Some(100), false, 1).0, Lookup::Nothing);
        // Another variant, path or database is another entry.
        let other = grant(&mut t, "/a/b", 1, 100);
        assert_ne!(other, tok);
        assert!(matches!(t.lookup(DB, b"/a", &v("q"), Found::Stale, Some(100), false, 1).0, Lookup::Granted(_)));
        assert!(matches!(t.lookup(1, b"/a", &v(""), Found::Miss, Some(100), false, 1).0, Lookup::Granted(_)));
        assert_eq!(t.lookup(DB, b"/x", &v(""), Found::Fresh, Some(100), true, 1).0, Lookup::Nothing);
        assert_eq!(t.live(), 4);
    }

    #[test]
    fn set_needs_the_live_token() {
        let mut t = table();
        let tok = grant(&mut t, "/a", 0, 100);
        let other = grant(&mut t, "/b", 0, 100);
        assert!(!may_set(&mut t, "/a", &other, &[], 1));
        let upper = tok.as_bytes().to_ascii_uppercase();
        for junk in [&b""[..], b"x", b"\x00\xff", &[b'0'; 32], &[b'z'; 64], &upper, &tok.as_bytes()[..31]] {
            assert!(!t.holds(DB, b"/a", &v(""), junk, 1));
            assert!(!t.may_set(DB, b"/a", &v(""), junk, &[], 1).0);
        }
        assert!(t.holds(DB, b"/a", &v(""), tok.as_bytes(), 1));
        assert!(!t.holds(DB, b"/a", &v(""), other.as_bytes(), 1));
        assert!(!t.holds(DB, b"/a", &v(""), tok.as_bytes(), 100), "expired");
        // A refusal with a foreign token leaves the live lease alone.
        assert!(may_set(&mut t, "/a", &tok, &[], 1));
        assert!(t.stored(DB, b"/a", &v(""), 1).is_empty());
        // The lease ended with the store: the token no longer works.
        assert!(!may_set(&mut t, "/a", &tok, &[], 2));
        // A token from another process (nonce) never matches.
        let mut t2 = LeaseTable::new(1);
        grant(&mut t2, "/a", 0, 100);
        let tok2 = grant(&mut t2, "/b", 0, 100);
        assert_eq!(&tok2.as_bytes()[16..], &other.as_bytes()[16..]);
        assert!(!may_set(&mut t, "/b", &tok2, &[], 1));
        assert!(may_set(&mut t, "/b", &other, &[], 1));
    }

    #[test]
    fn expiry_ends_the_lease_and_reclaims_it() {
        let mut t = table();
        let tok = grant(&mut t, "/a", 0, 100);
        assert_eq!(t.next_expiry(), Some(100));
        assert!(t.expire(99).is_empty());
        assert_eq!(t.live(), 1);
        assert!(t.expire(100).is_empty());
        assert_empty(&t);
        assert!(!may_set(&mut t, "/a", &tok, &[], 100));
        // Any operation sees expired leases as gone.
        grant(&mut t, "/a", 200, 10);
        assert!(matches!(t.lookup(DB, b"/a", &v(""), Found::Miss, Some(10), false, 210).0, Lookup::Granted(_)));
    }

    #[test]
    fn a_store_serves_every_waiter_at_once() {
        let mut t = table();
        grant(&mut t, "/a", 0, 1000);
        let ids: Vec<_> = (0..5).map(|i| wait(&mut t, "/a", (i % 2 == 0).then_some(1000), 1)).collect();
        assert_eq!(t.waiting(), 5);
        // Stale entries and entries without a live lease do not make a client wait.
        assert_eq!(t.lookup(DB, b"/a", &v(""), Found::Stale, None, true, 1).0, Lookup::Nothing);
        assert_eq!(t.lookup(DB, b"/b", &v(""), Found::Miss, None, true, 1).0, Lookup::Nothing);
        let actions = t.stored(DB, b"/a", &v(""), 2);
        assert_eq!(actions, ids.iter().map(|id| Action::Serve(*id)).collect::<Vec<_>>());
        assert_empty(&t);
    }

    #[test]
    fn a_lease_that_ends_without_a_store_goes_to_the_next_waiter_asking_for_one() {
        let mut t = table();
        grant(&mut t, "/a", 0, 100);
        let plain = wait(&mut t, "/a", None, 1);
        let first = wait(&mut t, "/a", Some(50), 2);
        let second = wait(&mut t, "/a", Some(70), 3);
        // Expiry: the first LEASE waiter gets it, for its own length from now.
        let a = t.expire(100);
        let Some(Action::Hand(id, tok1)) = a.first().cloned() else { panic!("{a:?}") };
        assert_eq!((a.len(), id), (1, first));
        assert_eq!(t.next_expiry(), Some(150));
        // A refused SET with that token ends it: the next one gets it.
        assert!(t.tag_purged(DB, &[b"t"], 120).is_empty());
        let (ok, a) = t.may_set(DB, b"/a", &v(""), tok1.as_bytes(), &[b"t"], 121);
        assert!(!ok);
        let Some(Action::Hand(id, tok2)) = a.first().cloned() else { panic!("{a:?}") };
        assert_eq!((a.len(), id), (1, second));
        assert_ne!(tok1, tok2);
        // No waiter asks for a lease any more: the plain one keeps waiting.
        assert!(t.expire(191).is_empty());
        assert_eq!((t.live(), t.waiting()), (0, 1));
        // ... until a store, or its own removal.
        assert!(t.remove_waiter(plain));
        assert!(!t.remove_waiter(plain));
        assert_empty(&t);
    }

    #[test]
    fn removed_waiters_are_skipped() {
        let mut t = table();
        grant(&mut t, "/a", 0, 100);
        let gone = wait(&mut t, "/a", Some(10), 1);
        let next = wait(&mut t, "/a", Some(10), 2);
        assert!(t.remove_waiter(gone));
        let handed = t.invalidate(DB, b"/a", &v(""), 3);
        assert!(matches!(handed.as_slice(), [Action::Hand(id, _)] if *id == next), "{handed:?}");
        assert!(t.stored(DB, b"/a", &v(""), 4).is_empty());
        assert_empty(&t);
    }

    #[test]
    fn every_invalidation_refuses_the_set() {
        type Inval = fn(&mut LeaseTable, i64) -> Vec<Action>;
        let cases: [(&str, Inval); 8] = [
            ("del", |t, now| t.invalidate(DB, b"/a/b", &v(""), now)),
            ("purge parent", |t, now| t.invalidate_covered(DB, &Coverage::prefix(b"/a"), now)),
            ("purge /", |t, now| t.invalidate_covered(DB, &Coverage::prefix(b"/"), now)),
            ("purge exact", |t, now| t.invalidate_covered(DB, &Coverage::exact(b"/a/b"), now)),
            ("purge itself", |t, now| t.invalidate_covered(DB, &Coverage::prefix(b"/a/b/"), now)),
            ("tag of this set", |t, now| t.tag_purged(DB, &[b"x", b"t"], now)),
            ("flushdb", |t, now| t.flush(DB, now)),
            ("flushall", |t, now| t.flush(-1, now)),
        ];
        for (name, inval) in cases {
            let mut t = table();
            let tok = grant(&mut t, "/a/b", 0, 1000);
            inval(&mut t, 1);
            assert!(!may_set(&mut t, "/a/b", &tok, &["t"], 2), "{name}");
            // The entry is free for a new lease, and that one may store.
            let fresh = grant(&mut t, "/a/b", 3, 1000);
            assert!(may_set(&mut t, "/a/b", &fresh, &["t"], 4), "{name}");
            t.stored(DB, b"/a/b", &v(""), 4);
            assert_empty(&t);
        }
    }

    #[test]
    fn unrelated_invalidations_do_not_refuse_the_set() {
        type Inval = fn(&mut LeaseTable, i64) -> Vec<Action>;
        let cases: [(&str, Inval); 9] = [
            ("del of another variant", |t, now| t.invalidate(DB, b"/a/b", &v("q"), now)),
            ("del of a sibling", |t, now| t.invalidate(DB, b"/a/bc", &v(""), now)),
            ("purge of a sibling", |t, now| t.invalidate_covered(DB, &Coverage::prefix(b"/a/bc"), now)),
            ("purge of a child", |t, now| t.invalidate_covered(DB, &Coverage::prefix(b"/a/b/c"), now)),
            ("exact purge of the parent", |t, now| t.invalidate_covered(DB, &Coverage::exact(b"/a"), now)),
            ("another tag", |t, now| t.tag_purged(DB, &[b"u"], now)),
            ("the tag in another db", |t, now| t.tag_purged(1, &[b"t"], now)),
            ("another db's flush", |t, now| t.flush(1, now)),
            ("a purge in another db", |t, now| t.invalidate_covered(1, &Coverage::prefix(b"/"), now)),
        ];
        for (name, inval) in cases {
            let mut t = table();
            let tok = grant(&mut t, "/a/b", 0, 1000);
            inval(&mut t, 1);
            assert!(may_set(&mut t, "/a/b", &tok, &["t"], 2), "{name}");
        }
    }

    #[test]
    fn a_tag_purge_before_the_grant_does_not_count() {
        let mut t = table();
        let _other = grant(&mut t, "/z", 0, 1000); // keeps the log alive
        t.tag_purged(DB, &[b"t"], 1);
        let tok = grant(&mut t, "/a", 2, 1000);
        assert!(may_set(&mut t, "/a", &tok, &["t"], 3));
    }

    #[test]
    fn the_tag_log_is_pruned_and_capped() {
        let mut t = table();
        let old = grant(&mut t, "/old", 0, 1_000_000);
        for i in 0..(MAX_TAG_LOG + 10) {
            t.tag_purged(DB, &[format!("t{i}").as_bytes()], 1);
        }
        assert_eq!(t.books.tag_log.len(), MAX_TAG_LOG);
        // The old lease may have missed a forgotten purge: refused, whatever its tags.
        assert!(!may_set(&mut t, "/old", &old, &["unrelated"], 2));
        let newer = grant(&mut t, "/new", 3, 1_000_000);
        assert!(may_set(&mut t, "/new", &newer, &["t5"], 4));
        t.stored(DB, b"/new", &v(""), 4);
        assert_empty(&t);
    }

    #[test]
    fn waiting_on_an_entry_without_a_live_lease_does_not_block() {
        let mut t = table();
        assert_eq!(t.lookup(DB, b"/a", &v(""), Found::Miss, None, true, 0).0, Lookup::Nothing);
        // With LEASE and WAIT on a free entry the caller gets the lease.
        assert!(matches!(t.lookup(DB, b"/a", &v(""), Found::Miss, Some(5), true, 0).0, Lookup::Granted(_)));
    }

    // ---- Model-based: the table against a brute-force reference. ----

    #[derive(Debug, Clone)]
    enum Op {
        Lookup { entry: usize, found: Found, lease: Option<i64>, wait: bool },
        Set { entry: usize, token_of: Option<usize>, tag: usize },
        Store { entry: usize },
        Del { entry: usize },
        Purge { prefix: usize, exact: bool },
        TagPurge { tag: usize, db: i32 },
        Flush { db: i32 },
        Leave { nth: usize },
        Tick { ms: i64 },
    }

    const PATHS: [&str; 5] = ["/a", "/a/b", "/a/bc", "/b", "/a/b/c"];
    const TAGS: [&str; 3] = ["t", "u", "w"];

    fn entry_of(i: usize) -> (i32, &'static str, Variant) {
        ((i / 10) as i32 % 2, PATHS[i % PATHS.len()], v(if i % 3 == 0 { "q" } else { "" }))
    }

    fn op() -> impl Strategy<Value = Op> {
        let found = prop_oneof![Just(Found::Miss), Just(Found::Stale), Just(Found::Fresh)];
        prop_oneof![
            4 => (0..20usize, found, proptest::option::of(1..50i64), any::<bool>())
                .prop_map(|(entry, found, lease, wait)| Op::Lookup { entry, found, lease, wait }),
            3 => (0..20usize, proptest::option::of(0..40usize), 0..3usize)
                .prop_map(|(entry, token_of, tag)| Op::Set { entry, token_of, tag }),
            1 => (0..20usize).prop_map(|entry| Op::Store { entry }),
            1 => (0..20usize).prop_map(|entry| Op::Del { entry }),
            1 => (0..PATHS.len(), any::<bool>()).prop_map(|(prefix, exact)| Op::Purge { prefix, exact }),
            1 => (0..3usize, 0..2i32).prop_map(|(tag, db)| Op::TagPurge { tag, db }),
            1 => prop_oneof![Just(-1), 0..2i32].prop_map(|db| Op::Flush { db }),
            1 => (0..40usize).prop_map(|nth| Op::Leave { nth }),
            2 => (0..30i64).prop_map(|ms| Op::Tick { ms }),
        ]
    }

    /// The reference: every lease ever granted, with whether an invalidation of its
    /// entry happened since; live means not ended and not expired.
    #[derive(Debug)]
    struct RefLease {
        entry: (i32, &'static str, Variant),
        token: Token,
        expires_at: i64,
        ended: bool,
        invalidated_tags: Vec<&'static str>,
        invalidated: bool,
    }

    proptest! {
        #[test]
        fn model(ops in proptest::collection::vec(op(), 1..120)) {
            let mut t = table();
            let mut now = 0i64;
            let mut leases: Vec<RefLease> = Vec::new();
            // Waiters in arrival order: (id, entry, wants lease ms).
            let mut waiters: Vec<(WaiterId, (i32, &'static str, Variant), Option<i64>)> = Vec::new();
            let apply = |actions: Vec<Action>, leases: &mut Vec<RefLease>, waiters: &mut Vec<(WaiterId, (i32, &'static str, Variant), Option<i64>)>, now: i64| {
                for a in actions {
                    let id = match &a { Action::Serve(id) | Action::Hand(id, _) => *id };
                    let pos = waiters.iter().position(|w| w.0 == id).expect("an action for a known waiter");
                    let (_, entry, ms) = waiters.remove(pos);
                    if let Action::Hand(_, token) = a {
                        let ms = ms.expect("only LEASE waiters are handed leases");
                        // It was the first LEASE waiter of its entry.
                        assert!(!waiters[..pos].iter().any(|w| w.1 == entry && w.2.is_some()));
                        assert!(!leases.iter().any(|l| l.entry == entry && !l.ended && l.expires_at > now), "two live leases");
                        leases.push(RefLease { entry, token, expires_at: now + ms, ended: false, invalidated_tags: vec![], invalidated: false });
                    }
                }
            };
            for op in ops {
                // Leases the reference considers over by now.
                for l in leases.iter_mut() {
                    if l.expires_at <= now { l.ended = true; }
                }
                match op {
                    Op::Lookup { entry, found, lease, wait } => {
                        let e = entry_of(entry);
                        let live = leases.iter().any(|l| l.entry == e && !l.ended);
                        let (out, actions) = t.lookup(e.0, e.1.as_bytes(), &e.2, found, lease, wait, now);
                        apply(actions, &mut leases, &mut waiters, now);
                        let expect = if found == Found::Fresh { "nothing" }
                            else if lease.is_some() && !live { "granted" }
                            else if wait && live && found == Found::Miss { "wait" }
                            else { "nothing" };
                        match out {
                            Lookup::Granted(token) => {
                                prop_assert_eq!(expect, "granted");
                                leases.push(RefLease { entry: e, token, expires_at: now + lease.unwrap_or(0), ended: false, invalidated_tags: vec![], invalidated: false });
                            }
                            Lookup::Wait(id) => {
                                prop_assert_eq!(expect, "wait");
                                waiters.push((id, e, lease));
                            }
                            Lookup::Nothing => prop_assert_eq!(expect, "nothing"),
                        }
                    }
                    Op::Set { entry, token_of, tag } => {
                        // Mostly a SET by a lease holder (the newest leases), on its own entry.
                        let holder = token_of.and_then(|i| leases.len().checked_sub(1 + i % 8)).and_then(|i| leases.get(i));
                        let e = match holder {
                            Some(l) if entry % 4 != 0 => l.entry,
                            _ => entry_of(entry),
                        };
                        let token = holder.map(|l| l.token).unwrap_or(Token([b'f'; TOKEN_LEN]));
                        let (ok, actions) = t.may_set(e.0, e.1.as_bytes(), &e.2, token.as_bytes(), &[TAGS[tag].as_bytes()], now);
                        let held = leases.iter().position(|l| l.token == token && l.entry == e && !l.ended);
                        let expect = held.is_some_and(|i| !leases[i].invalidated && !leases[i].invalidated_tags.contains(&TAGS[tag]));
                        prop_assert_eq!(ok, expect, "set of {:?} with {:?}", e, held.map(|i| &leases[i]));
                        if let Some(i) = held {
                            if !ok { leases[i].ended = true; }
                        }
                        apply(actions, &mut leases, &mut waiters, now);
                        if ok {
                            let actions = t.stored(e.0, e.1.as_bytes(), &e.2, now);
                            for l in leases.iter_mut().filter(|l| l.entry == e) { l.ended = true; }
                            let expected: Vec<Action> = waiters.iter().filter(|w| w.1 == e).map(|w| Action::Serve(w.0)).collect();
                            prop_assert_eq!(&actions, &expected);
                            apply(actions, &mut leases, &mut waiters, now);
                        }
                    }
                    Op::Store { entry } => {
                        let e = entry_of(entry);
                        let actions = t.stored(e.0, e.1.as_bytes(), &e.2, now);
                        for l in leases.iter_mut().filter(|l| l.entry == e) { l.ended = true; }
                        apply(actions, &mut leases, &mut waiters, now);
                        prop_assert!(!waiters.iter().any(|w| w.1 == e), "a store leaves no waiter");
                    }
                    Op::Del { entry } => {
                        let e = entry_of(entry);
                        for l in leases.iter_mut().filter(|l| l.entry == e) { l.invalidated = true; l.ended = true; }
                        let actions = t.invalidate(e.0, e.1.as_bytes(), &e.2, now);
                        apply(actions, &mut leases, &mut waiters, now);
                    }
                    Op::Purge { prefix, exact } => {
                        let p = PATHS[prefix].as_bytes();
                        let cov = if exact { Coverage::exact(p) } else { Coverage::prefix(p) };
                        for l in leases.iter_mut().filter(|l| l.entry.0 == 0 && cov.covers(l.entry.1.as_bytes())) { l.invalidated = true; l.ended = true; }
                        let actions = t.invalidate_covered(0, &cov, now);
                        apply(actions, &mut leases, &mut waiters, now);
                    }
                    Op::TagPurge { tag, db } => {
                        for l in leases.iter_mut().filter(|l| l.entry.0 == db) { l.invalidated_tags.push(TAGS[tag]); }
                        let actions = t.tag_purged(db, &[TAGS[tag].as_bytes()], now);
                        apply(actions, &mut leases, &mut waiters, now);
                    }
                    Op::Flush { db } => {
                        for l in leases.iter_mut().filter(|l| db == -1 || l.entry.0 == db) { l.invalidated = true; l.ended = true; }
                        let actions = t.flush(db, now);
                        apply(actions, &mut leases, &mut waiters, now);
                    }
                    Op::Leave { nth } => {
                        if let Some(w) = waiters.get(nth).map(|w| w.0) {
                            prop_assert!(t.remove_waiter(w));
                            waiters.retain(|x| x.0 != w);
                        }
                    }
                    Op::Tick { ms } => {
                        now += ms;
                        for l in leases.iter_mut() {
                            if l.expires_at <= now { l.ended = true; }
                        }
                        let actions = t.expire(now);
                        apply(actions, &mut leases, &mut waiters, now);
                    }
                }
                // Invariants: live leases agree; at most one per entry; memory bounded
                // by live leases and waiters; the next expiry is the earliest one.
                let live: Vec<&RefLease> = leases.iter().filter(|l| !l.ended && l.expires_at > now).collect();
                prop_assert_eq!(t.live(), live.len());
                for (i, a) in live.iter().enumerate() {
                    prop_assert!(!live[i + 1..].iter().any(|b| b.entry == a.entry), "two live leases on {:?}", a.entry);
                }
                prop_assert_eq!(t.waiting(), waiters.len());
                // A lease that ends without a store goes to a LEASE waiter if there is one.
                for w in waiters.iter().filter(|w| w.2.is_some()) {
                    prop_assert!(live.iter().any(|l| l.entry == w.1), "LEASE waiter {:?} with no live lease", w);
                }
                let slots: usize = t.slots.values().flat_map(|p| p.values()).map(Vec::len).sum();
                prop_assert!(slots <= t.live() + t.waiting());
                prop_assert_eq!(t.next_expiry(), live.iter().map(|l| l.expires_at).min());
                if t.live() == 0 {
                    prop_assert!(t.books.tag_log.is_empty() && t.books.tag_last.is_empty());
                }
            }
        }
    }
}
