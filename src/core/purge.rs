//! Purge records: what a purge that is still being carried out in the background
//! promised, in a form that survives in the data.
//!
//! A purge replies once the covered entries are hidden; removing (or softening) their
//! keys one by one happens later, in slices. Until then one bookkeeping key per purge,
//! `rcache:#purge:<id>`, holds its record: which entries it covers (a prefix, or tags),
//! whether it is soft, and when it happened. An entry is covered when its path (or one
//! of its tags) matches and it was stored no later than the purge: every SET after the
//! purge stores a later stored-at, so a new entry is never hidden. Replicas, an AOF
//! replay and an RDB load see the record key like any other key, so what a purge hid
//! can always be derived again from the data. The key is deleted when the work is done.
//!
//! Pure logic; knows nothing of Redis.

use crate::core::entry::{self, Header, Soften};
use crate::core::path::Coverage;

const MAGIC: &[u8; 3] = b"RCP";
const VERSION: u8 = 1;
/// Zero-padded to this length, as entries are (`entry::MIN_STORED_LEN`): the module
/// reads records in place, which Redis' shared encoding of short strings forbids.
const MIN_LEN: usize = crate::core::entry::MIN_STORED_LEN;
pub const RECORD_KEY_PREFIX: &[u8] = b"rcache:#purge:";

/// What a purge covers: the paths a prefix covers (or the one path, `exact`), or the
/// entries carrying any of some tags. Also what a cluster's primaries are asked to purge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Prefix { prefix: Vec<u8>, exact: bool },
    Tags(Vec<Vec<u8>>),
}

impl Target {
    /// The paths a prefix target covers, in the shape the index searches.
    pub fn coverage(&self) -> Option<Coverage<'_>> {
        match self {
            Target::Prefix { prefix, exact: true } => Some(Coverage::exact(prefix)),
            Target::Prefix { prefix, exact: false } => Some(Coverage::prefix(prefix)),
            Target::Tags(_) => None,
        }
    }

    /// Whether it covers an entry at `path` carrying `tags`.
    pub fn covers(&self, path: &[u8], tags: &[&[u8]]) -> bool {
        match (self, self.coverage()) {
            (_, Some(coverage)) => coverage.covers(path),
            (Target::Tags(purged), None) => tags.iter().any(|t| purged.iter().any(|p| p == t)),
            _ => false,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PurgeRecord {
    /// When the purge happened (ms since the epoch): it covers entries stored no later.
    pub at_ms: i64,
    pub soft: bool,
    pub target: Target,
}

/// The bookkeeping key of the purge with `id` (unique per server; see the server layer).
/// In a cluster it carries a hash tag of a slot the writing node serves.
pub fn record_key(id: u64, hash_tag: Option<&[u8]>) -> Vec<u8> {
    let mut key = RECORD_KEY_PREFIX.to_vec();
    if let Some(tag) = hash_tag {
        key.push(b'{');
        key.extend_from_slice(tag);
        key.extend_from_slice(b"}:");
    }
    key.extend_from_slice(id.to_string().as_bytes());
    key
}

pub fn is_record_key(key: &[u8]) -> bool {
    key.starts_with(RECORD_KEY_PREFIX)
}

/// What a pending purge makes of one entry for every RCACHE command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// Not covered: as stored.
    AsStored,
    /// Removed (a hard purge, or a soft purge of an entry without grace, or past the
    /// grace a soft purge left it).
    Gone,
    /// Stale since the soft purge (it was fresh then).
    Stale,
}

impl PurgeRecord {
    pub fn coverage(&self) -> Option<Coverage<'_>> {
        self.target.coverage()
    }

    /// Whether the entry at `path` with `tags`, stored at `stored_at_ms`, is covered.
    pub fn covers(&self, path: &[u8], tags: &[&[u8]], stored_at_ms: u64) -> bool {
        self.predates(stored_at_ms) && self.target.covers(path, tags)
    }

    /// Whether an entry stored at `stored_at_ms` was stored no later than the purge
    /// (what it may cover: a later SET made a new entry).
    pub fn predates(&self, stored_at_ms: u64) -> bool {
        self.at_ms >= 0 && stored_at_ms <= self.at_ms as u64
    }

    /// What this purge makes, at `now_ms`, of a covered entry whose key expires at
    /// `expire_at_ms`: exactly what doing the purge at once would have made of it.
    pub fn seen(&self, h: &Header, now_ms: i64, expire_at_ms: Option<i64>) -> Seen {
        if !self.soft {
            return Seen::Gone;
        }
        match entry::soften(h, self.at_ms, expire_at_ms) {
            // Already stale then: the purge changed nothing.
            Soften::AlreadyStale => Seen::AsStored,
            Soften::Remove => Seen::Gone,
            Soften::Stale { expire_at_ms } if now_ms > expire_at_ms => Seen::Gone,
            Soften::Stale { .. } => Seen::Stale,
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = MAGIC.to_vec();
        out.push(VERSION);
        out.push(u8::from(self.soft));
        out.extend_from_slice(&self.at_ms.to_le_bytes());
        match &self.target {
            Target::Prefix { prefix, exact } => {
                out.push(if *exact { b'E' } else { b'P' });
                out.extend_from_slice(&(prefix.len() as u32).to_le_bytes());
                out.extend_from_slice(prefix);
            }
            Target::Tags(tags) => {
                out.push(b'T');
                out.extend_from_slice(&(tags.len() as u32).to_le_bytes());
                for tag in tags {
                    out.extend_from_slice(&(tag.len() as u32).to_le_bytes());
                    out.extend_from_slice(tag);
                }
            }
        }
        if out.len() < MIN_LEN {
            out.resize(MIN_LEN, 0);
        }
        out
    }

    /// The inverse of [`encode`](Self::encode); `None` for anything else.
    pub fn decode(bytes: &[u8]) -> Option<PurgeRecord> {
        let mut r = Reader(bytes);
        if r.take(3)? != MAGIC || r.take(1)? != [VERSION] {
            return None;
        }
        let soft = match r.take(1)? {
            [0] => false,
            [1] => true,
            _ => return None,
        };
        let at_ms = i64::from_le_bytes(r.take(8)?.try_into().ok()?);
        let target = match r.take(1)? {
            [kind @ (b'P' | b'E')] => {
                let len = r.u32()?;
                Target::Prefix { prefix: r.take(len)?.to_vec(), exact: *kind == b'E' }
            }
            [b'T'] => {
                let count = r.u32()?;
                // Every tag costs at least its 4-byte length: a count beyond that is a lie.
                if count > r.0.len() / 4 {
                    return None;
                }
                let mut tags = Vec::with_capacity(count);
                for _ in 0..count {
                    let len = r.u32()?;
                    tags.push(r.take(len)?.to_vec());
                }
                Target::Tags(tags)
            }
            _ => return None,
        };
        let padded = r.0.iter().all(|&b| b == 0) && bytes.len() == MIN_LEN;
        (r.0.is_empty() || padded).then_some(PurgeRecord { at_ms, soft, target })
    }
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if n > self.0.len() {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }

    fn u32(&mut self) -> Option<usize> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?) as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::entry::{encode, header, Lifetime};
    use proptest::prelude::*;

    fn prefix(p: &str, exact: bool, soft: bool) -> PurgeRecord {
        PurgeRecord { at_ms: 1_000, soft, target: Target::Prefix { prefix: p.as_bytes().to_vec(), exact } }
    }

    #[test]
    fn covers_what_was_stored_no_later_than_the_purge() {
        let r = prefix("/t/5", false, false);
        assert!(r.covers(b"/t/5/bracket", &[], 1_000));
        assert!(r.covers(b"/t/5", &[], 0));
        assert!(!r.covers(b"/t/5/bracket", &[], 1_001), "stored after the purge");
        assert!(!r.covers(b"/t/50", &[], 10), "the contract's segment rule");
        assert!(prefix("/t/5", true, false).covers(b"/t/5", &[], 10));
        assert!(!prefix("/t/5", true, false).covers(b"/t/5/x", &[], 10));
        let tags = PurgeRecord { at_ms: 1_000, soft: false, target: Target::Tags(vec![b"a".to_vec(), b"b".to_vec()]) };
        assert!(tags.covers(b"/x", &[b"z", b"b"], 999));
        assert!(!tags.covers(b"/x", &[b"z"], 999));
        assert!(!tags.covers(b"/x", &[b"a"], 1_001));
    }

    #[test]
    fn a_pending_soft_purge_is_seen_as_if_done_at_its_time() {
        let life = |until: u64, grace: u32| Lifetime { stored_at_ms: 500, fresh_until_ms: until, grace_s: grace };
        let h = |l: Lifetime| header(&encode(b"v", l, b"e", &[])).unwrap();
        let soft = prefix("/", false, true);
        // Fresh at the purge, with 10 s of grace: stale until 11 s, then gone.
        assert_eq!(soft.seen(&h(life(5_000, 10)), 2_000, Some(15_000)), Seen::Stale);
        assert_eq!(soft.seen(&h(life(5_000, 10)), 11_001, Some(15_000)), Seen::Gone);
        // Without grace: gone. Already stale at the purge: as stored.
        assert_eq!(soft.seen(&h(life(5_000, 0)), 2_000, Some(5_000)), Seen::Gone);
        assert_eq!(soft.seen(&h(life(900, 10)), 2_000, Some(10_900)), Seen::AsStored);
        assert_eq!(prefix("/", false, false).seen(&h(life(5_000, 10)), 2_000, None), Seen::Gone);
    }

    #[test]
    fn record_keys_are_not_entry_keys() {
        let key = record_key(42, None);
        assert_eq!(key, b"rcache:#purge:42");
        assert!(is_record_key(&key));
        assert_eq!(crate::core::key::parse_entry_key(&key), None);
        let tagged = record_key(42, Some(b"t3"));
        assert_eq!(tagged, b"rcache:#purge:{t3}:42");
        assert!(is_record_key(&tagged));
        assert_eq!(crate::core::key::parse_entry_key(&tagged), None);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(3000))]

        #[test]
        fn encode_decode(at in any::<i64>(), soft in any::<bool>(), exact in any::<bool>(), p in proptest::collection::vec(any::<u8>(), 0..20),
                         tags in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..6), 0..5), use_tags in any::<bool>()) {
            let target = if use_tags { Target::Tags(tags) } else { Target::Prefix { prefix: p, exact } };
            let r = PurgeRecord { at_ms: at, soft, target };
            prop_assert_eq!(PurgeRecord::decode(&r.encode()), Some(r));
        }

        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64), flip in 0usize..64, b in any::<u8>()) {
            let _ = PurgeRecord::decode(&bytes);
            let mut good = PurgeRecord { at_ms: 7, soft: true, target: Target::Tags(vec![b"ab".to_vec()]) }.encode();
            let at = flip % good.len();
            good[at] = b;
            let _ = PurgeRecord::decode(&good);
        }
    }
}
