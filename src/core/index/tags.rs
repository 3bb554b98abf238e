//! The tag index: tag → the entries carrying it, and entry → its tags.
//!
//! Tags are interned (each distinct tag's bytes are kept once per index, plus once
//! as its name-lookup key), and each tagged entry gets a small id: a tag's members
//! are a set of 4-byte entry ids and an entry's tags an array of 4-byte tag ids, so
//! one (entry, tag) pair costs 4 bytes in the entry's array plus one slot (4 bytes
//! and a control byte, at a load factor of 7/16 to 7/8) in the tag's set. A tagged
//! entry also keeps its path and variant once, to name its key for PURGETAG: 16 bytes,
//! plus one allocation of the path, 3 bytes and the variant's digests when it has any.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};
use std::num::NonZeroU32;

use crate::core::key::{entry_key, Variant};

/// A tagged entry's place in its database's tag index.
pub type EntryId = NonZeroU32;

type TagId = u32;

/// Hashes the ids this module hands out itself (never client bytes, so no
/// flooding concern): one multiply, instead of SipHash on every set operation.
#[derive(Default)]
pub struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
    }

    fn write_u32(&mut self, n: u32) {
        let h = u64::from(n).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        self.0 = h ^ (h >> 29);
    }
}

type IdSet = HashSet<u32, BuildHasherDefault<IdHasher>>;

/// 16 bytes plus one allocation, whatever the number of tags: a tagged entry with one
/// tag is the path plus about 10 bytes in that allocation (plus the 16 here and the
/// slot in the tag's set), where separate fields cost 56 bytes before the path.
#[derive(Debug)]
struct TaggedEntry {
    /// A byte saying which digests of the variant follow, those digests (16 bytes
    /// each), the number of tags (u16, little-endian), the tag ids (4 bytes each,
    /// little-endian), then the path.
    data: Box<[u8]>,
}

const HAS_QUERY: u8 = 1;
const HAS_VARY: u8 = 2;

impl TaggedEntry {
    fn new(path: &[u8], variant: Variant, tags: &[TagId]) -> Self {
        let digests = [variant.query, variant.vary];
        let present = digests.iter().flatten().count();
        let mut data = Vec::with_capacity(1 + 16 * present + 2 + 4 * tags.len() + path.len());
        data.push((u8::from(variant.query.is_some()) * HAS_QUERY) | (u8::from(variant.vary.is_some()) * HAS_VARY));
        digests.iter().flatten().for_each(|d| data.extend_from_slice(d));
        // At most max-tags (1024) ids: the count fits.
        data.extend_from_slice(&u16::try_from(tags.len()).unwrap_or(u16::MAX).to_le_bytes());
        tags.iter().for_each(|t| data.extend_from_slice(&t.to_le_bytes()));
        data.extend_from_slice(path);
        TaggedEntry { data: data.into_boxed_slice() }
    }

    fn flags(&self) -> u8 {
        self.data.first().copied().unwrap_or(0)
    }

    /// Where the tag count starts.
    fn tags_at(&self) -> usize {
        let flags = self.flags();
        1 + 16 * (usize::from(flags & HAS_QUERY != 0) + usize::from(flags & HAS_VARY != 0))
    }

    fn variant(&self) -> Variant {
        let digest = |at: usize| self.data.get(at..at + 16).and_then(|d| <[u8; 16]>::try_from(d).ok());
        let flags = self.flags();
        let query = (flags & HAS_QUERY != 0).then(|| digest(1)).flatten();
        let vary_at = if flags & HAS_QUERY != 0 { 17 } else { 1 };
        let vary = (flags & HAS_VARY != 0).then(|| digest(vary_at)).flatten();
        Variant { query, vary }
    }

    /// The tag ids and the path.
    fn split(&self) -> (&[u8], &[u8]) {
        let at = self.tags_at();
        let count = self.data.get(at..at + 2).and_then(|c| <[u8; 2]>::try_from(c).ok()).map_or(0, |c| usize::from(u16::from_le_bytes(c)));
        let ids = self.data.get(at + 2..).unwrap_or_default();
        ids.split_at((4 * count).min(ids.len()))
    }

    fn tags(&self) -> impl Iterator<Item = TagId> + '_ {
        self.split().0.chunks_exact(4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn path(&self) -> &[u8] {
        self.split().1
    }
}

#[derive(Debug)]
struct Tag {
    name: Box<[u8]>,
    /// Entry ids (`EntryId::get`).
    members: IdSet,
}

/// Tag records addressed by id, reusing freed ones (a tag's id is in every record of
/// its entries, so tags never move); emptied completely when the last one is freed.
#[derive(Debug)]
struct Slab<T> {
    slots: Vec<Option<T>>,
    free: Vec<u32>,
}

impl<T> Default for Slab<T> {
    fn default() -> Self {
        Slab { slots: Vec::new(), free: Vec::new() }
    }
}

impl<T> Slab<T> {
    fn live(&self) -> usize {
        self.slots.len() - self.free.len()
    }

    /// `None` only past 2^32 - 1 slots (hundreds of GB of index): unreachable.
    fn add(&mut self, item: T) -> Option<u32> {
        if let Some(i) = self.free.pop() {
            if let Some(slot) = self.slots.get_mut(i as usize) {
                *slot = Some(item);
                return Some(i);
            }
        }
        let i = u32::try_from(self.slots.len()).ok().filter(|&i| i < u32::MAX)?;
        self.slots.push(Some(item));
        Some(i)
    }

    fn get(&self, i: u32) -> Option<&T> {
        self.slots.get(i as usize)?.as_ref()
    }

    fn get_mut(&mut self, i: u32) -> Option<&mut T> {
        self.slots.get_mut(i as usize)?.as_mut()
    }

    fn take(&mut self, i: u32) -> Option<T> {
        let item = self.slots.get_mut(i as usize)?.take()?;
        self.free.push(i);
        if self.live() == 0 {
            *self = Slab::default();
        }
        Some(item)
    }
}

/// Where a tagged entry's record moved to when another one was forgotten: the path
/// index must give the entry at (`path`, `variant`) its new id.
pub struct Moved<'a> {
    pub path: &'a [u8],
    pub variant: Variant,
    pub id: EntryId,
}

#[derive(Debug, Default)]
pub struct TagIndex {
    /// Dense: the record at index i is the entry whose `EntryId` is i + 1. Forgetting
    /// one moves the last record into its place, so the array never holds more than
    /// the tagged entries plus a bounded slack, even after most of them went.
    entries: Vec<TaggedEntry>,
    tags: Slab<Tag>,
    by_name: HashMap<Box<[u8]>, TagId>,
}

impl TagIndex {
    /// The number of distinct tags in use.
    pub fn len(&self) -> usize {
        self.tags.live()
    }

    /// The number of tagged entries.
    pub fn entries(&self) -> usize {
        self.entries.len()
    }

    /// Records the entry at (path, variant) as carrying `tags` (repeats count once);
    /// returns its id, or `None` when `tags` is empty.
    pub(super) fn add(&mut self, path: &[u8], variant: Variant, tags: &[&[u8]]) -> Option<EntryId> {
        if tags.is_empty() {
            return None;
        }
        // `None` only past 2^32 - 1 tagged entries (hundreds of GB of index): unreachable.
        let slot = u32::try_from(self.entries.len()).ok()?;
        let id = EntryId::new(slot.checked_add(1)?)?;
        if self.entries.len() == self.entries.capacity() {
            // Grows by a quarter, not double: still amortized O(1), at most 25 % slack
            // on the largest per-entry record.
            self.entries.reserve_exact((self.entries.len() / 4).max(16));
        }
        let mut ids = Vec::with_capacity(tags.len());
        for &name in tags {
            let Some(tag) = self.intern(name) else { continue };
            if self.tags.get_mut(tag).is_some_and(|t| t.members.insert(id.get())) {
                ids.push(tag);
            }
        }
        self.entries.push(TaggedEntry::new(path, variant, &ids));
        Some(id)
    }

    fn intern(&mut self, name: &[u8]) -> Option<TagId> {
        if let Some(&tag) = self.by_name.get(name) {
            return Some(tag);
        }
        let tag = self.tags.add(Tag { name: name.into(), members: IdSet::default() })?;
        self.by_name.insert(name.into(), tag);
        Some(tag)
    }

    /// Forgets the tagged entry `id`, and every tag no other entry carries. The last
    /// record takes its place: `moved` is told, to re-point the path index. Several
    /// ids held at once must be forgotten highest first (see `forget_all`).
    pub(super) fn forget(&mut self, id: EntryId, moved: impl FnOnce(Moved<'_>)) {
        let at = id.get() as usize - 1;
        if at >= self.entries.len() {
            return;
        }
        let entry = self.entries.swap_remove(at);
        self.untag(&entry, id);
        if let Some(m) = self.entries.get(at) {
            let from = u32::try_from(self.entries.len() + 1).unwrap_or(u32::MAX);
            for tag in m.tags() {
                if let Some(t) = self.tags.get_mut(tag) {
                    t.members.remove(&from);
                    t.members.insert(id.get());
                }
            }
            moved(Moved { path: m.path(), variant: m.variant(), id });
        }
        if self.entries.is_empty() {
            self.entries = Vec::new();
        } else if self.entries.capacity() > 64 && self.entries.len() < self.entries.capacity() / 2 {
            self.entries.shrink_to(self.entries.len() + self.entries.len() / 4);
        }
    }

    /// Removes `id` from the sets of `entry`'s tags, dropping tags left without entries.
    fn untag(&mut self, entry: &TaggedEntry, id: EntryId) {
        for tag in entry.tags() {
            let Some(t) = self.tags.get_mut(tag) else { continue };
            t.members.remove(&id.get());
            if t.members.is_empty() {
                if let Some(t) = self.tags.take(tag) {
                    self.by_name.remove(&t.name);
                }
            } else if t.members.capacity() > 64 && t.members.len() < t.members.capacity() / 4 {
                // A set never gives memory back by itself (amortized O(1), like growth).
                let len = t.members.len();
                t.members.shrink_to(len * 2);
            }
        }
        if self.by_name.capacity() > 64 && self.by_name.len() < self.by_name.capacity() / 4 {
            self.by_name.shrink_to(self.by_name.len() * 2);
        }
    }

    /// Calls `f` with the path and variant of every entry carrying any of `tags`, each
    /// once, in id order: the records are then read in the order they sit in memory
    /// rather than in the tag set's hash order.
    pub fn for_each_tagged(&self, tags: &[&[u8]], mut f: impl FnMut(&[u8], &Variant)) {
        let mut ids: Vec<u32> = Vec::new();
        for name in tags {
            if let Some(tag) = self.by_name.get(*name).and_then(|&t| self.tags.get(t)) {
                ids.extend(tag.members.iter().copied());
            }
        }
        ids.sort_unstable();
        ids.dedup();
        for id in ids {
            if let Some(e) = id.checked_sub(1).and_then(|slot| self.entries.get(slot as usize)) {
                f(e.path(), &e.variant());
            }
        }
    }

    /// The keys of entries carrying any of `tags`, each once.
    pub fn keys(&self, tags: &[&[u8]]) -> Vec<Vec<u8>> {
        let mut keys = Vec::new();
        self.for_each_tagged(tags, |path, variant| keys.push(entry_key(path, variant)));
        keys
    }

    /// The tags of the entry `id` (for tests and consistency checks).
    #[cfg(test)]
    pub(super) fn tags_of(&self, id: EntryId) -> Vec<Vec<u8>> {
        let Some(e) = self.entries.get(id.get() as usize - 1) else { return Vec::new() };
        e.tags().filter_map(|t| self.tags.get(t)).map(|t| t.name.to_vec()).collect()
    }

    /// The path and variant the record `id` names (for consistency checks).
    #[cfg(test)]
    pub(super) fn entry_of(&self, id: EntryId) -> Option<(Vec<u8>, Variant)> {
        self.entries.get(id.get() as usize - 1).map(|e| (e.path().to_vec(), e.variant()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interned_tags_and_dense_ids() {
        let mut t = TagIndex::default();
        let v = Variant::default();
        let a = t.add(b"/a", v, &[b"x", b"y", b"x"]).unwrap();
        let b = t.add(b"/b", v, &[b"y"]).unwrap();
        assert_eq!(t.add(b"/c", v, &[]), None);
        assert_eq!((t.len(), t.entries()), (2, 2));
        assert_eq!(t.tags_of(a), [b"x".to_vec(), b"y".to_vec()], "a repeated tag counts once");
        let mut keys = t.keys(&[b"y", b"x", b"nope"]);
        keys.sort();
        assert_eq!(keys, [entry_key(b"/a", &v), entry_key(b"/b", &v)], "each entry once");
        let mut moves = Vec::new();
        t.forget(a, |m| moves.push((m.path.to_vec(), m.id)));
        assert_eq!(moves, [(b"/b".to_vec(), a)], "the last record takes the freed place");
        assert_eq!((t.len(), t.entries()), (1, 1), "x went with its only entry");
        assert_eq!(t.keys(&[b"x"]), Vec::<Vec<u8>>::new());
        assert_eq!(t.keys(&[b"y"]), [entry_key(b"/b", &v)], "y's set follows the move");
        assert_eq!(t.tags_of(a), [b"y".to_vec()]);
        t.forget(b, |_| panic!("no record at {b}"));
        t.forget(a, |_| panic!("the last record does not move"));
        assert_eq!((t.len(), t.entries()), (0, 0));
        assert!(t.entries.capacity() == 0 && t.tags.slots.is_empty() && t.by_name.is_empty());
    }

    #[test]
    fn a_record_gives_back_its_path_variant_and_tags() {
        let digest = |b: u8| Some([b; 16]);
        for (query, vary) in [(None, None), (digest(1), None), (None, digest(2)), (digest(3), digest(4))] {
            for path in [&b""[..], b"/", b"/a/b?c"] {
                for tags in [&[][..], &[7], &[0, u32::MAX, 5]] {
                    let variant = Variant { query, vary };
                    let e = TaggedEntry::new(path, variant, tags);
                    assert_eq!((e.path(), e.variant(), e.tags().collect::<Vec<_>>()), (path, variant, tags.to_vec()));
                }
            }
        }
        let one = TaggedEntry::new(b"/tagmem/1/12345", Variant::default(), &[3]);
        assert_eq!(one.data.len(), 1 + 2 + 4 + 15, "no digest bytes for a plain variant");
    }

    /// After most entries go, the records' array shrinks with them.
    #[test]
    fn records_shrink_after_a_mass_removal() {
        let mut t = TagIndex::default();
        let ids: Vec<EntryId> = (0..10_000).map(|i| t.add(format!("/p/{i}").as_bytes(), Variant::default(), &[b"t"]).unwrap()).collect();
        let peak = t.entries.capacity();
        for &id in ids[100..].iter().rev() {
            t.forget(id, |_| {});
        }
        assert_eq!(t.entries(), 100);
        assert!(t.entries.capacity() < peak / 20, "capacity {} of peak {peak}", t.entries.capacity());
    }
}
