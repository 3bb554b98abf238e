//! The entries stored at one path, one per variant: a small array while there are
//! few (the common case: a handful of query strings or vary sets), a hash map past
//! that, so a path with 100,000 variants (a cache-busting `?x=random` is enough)
//! costs O(1) per SET, DEL, expiry, eviction and purge like a path with one.

use std::collections::hash_map::{self, HashMap};

use crate::core::index::tags::EntryId;
use crate::core::key::Variant;

/// One indexed entry: its variant at the node's path, and where its tags are in the
/// tag index (`None`: untagged, the common case, which costs nothing there).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stored {
    pub variant: Variant,
    pub tags: Option<EntryId>,
}

/// Past this many variants a path switches to a hash map; a linear scan of this
/// many 34-byte variants is cheaper than hashing one.
const FEW: usize = 8;

#[derive(Debug)]
pub enum Entries {
    /// Sized exactly: most paths hold one or two entries and the index must stay
    /// small per entry; a reallocation per change is bounded by `FEW`.
    Few(Box<[Stored]>),
    /// Keyed by the variant digest; SipHash with a random key, as the digests are
    /// MD5s of client bytes a client can choose to collide in a weak hash. Boxed so
    /// that every node pays 8 bytes for it, not a 48-byte map.
    #[allow(clippy::box_collection)]
    Many(Box<HashMap<Variant, Option<EntryId>>>),
}

impl Default for Entries {
    fn default() -> Self {
        Entries::Few(Box::new([]))
    }
}

impl Entries {
    pub fn len(&self) -> usize {
        match self {
            Entries::Few(few) => few.len(),
            Entries::Many(many) => many.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Stores `stored`, replacing the entry of the same variant; returns it.
    pub fn insert(&mut self, stored: Stored) -> Option<Stored> {
        match self {
            Entries::Few(few) => {
                if let Some(old) = few.iter_mut().find(|s| s.variant == stored.variant) {
                    return Some(std::mem::replace(old, stored));
                }
                if few.len() < FEW {
                    let mut v = std::mem::take(few).into_vec();
                    v.reserve_exact(1);
                    v.push(stored);
                    *few = v.into_boxed_slice();
                } else {
                    let mut many: HashMap<Variant, Option<EntryId>> = HashMap::with_capacity(2 * FEW);
                    many.extend(few.iter().map(|s| (s.variant, s.tags)));
                    many.insert(stored.variant, stored.tags);
                    *self = Entries::Many(Box::new(many));
                }
                None
            }
            Entries::Many(many) => {
                many.insert(stored.variant, stored.tags).map(|tags| Stored { variant: stored.variant, tags })
            }
        }
    }

    /// Points the entry of `variant` at its tag record `id` (which moved).
    pub fn retag(&mut self, variant: &Variant, id: EntryId) -> bool {
        match self {
            Entries::Few(few) => few.iter_mut().find(|s| s.variant == *variant).map(|s| s.tags = Some(id)).is_some(),
            Entries::Many(many) => many.get_mut(variant).map(|tags| *tags = Some(id)).is_some(),
        }
    }

    /// Removes the entry of `variant`; returns it.
    pub fn remove(&mut self, variant: &Variant) -> Option<Stored> {
        match self {
            Entries::Few(few) => {
                let at = few.iter().position(|s| s.variant == *variant)?;
                let mut v = std::mem::take(few).into_vec();
                let old = v.swap_remove(at);
                *few = v.into_boxed_slice();
                Some(old)
            }
            Entries::Many(many) => {
                let tags = many.remove(variant)?;
                // Back to an array well below the switch point (no flapping around
                // it), and a map that lost most of its entries gives memory back.
                if many.len() <= FEW / 2 {
                    let few: Box<[Stored]> = many.iter().map(|(&variant, &tags)| Stored { variant, tags }).collect();
                    *self = Entries::Few(few);
                } else if many.capacity() > 64 && many.len() < many.capacity() / 4 {
                    many.shrink_to(many.len() * 2);
                }
                Some(Stored { variant: *variant, tags })
            }
        }
    }

    pub fn iter(&self) -> Iter<'_> {
        match self {
            Entries::Few(few) => Iter::Few(few.iter()),
            Entries::Many(many) => Iter::Many(many.iter()),
        }
    }
}

pub enum Iter<'a> {
    Few(std::slice::Iter<'a, Stored>),
    Many(hash_map::Iter<'a, Variant, Option<EntryId>>),
}

impl Iterator for Iter<'_> {
    type Item = Stored;

    fn next(&mut self) -> Option<Stored> {
        match self {
            Iter::Few(it) => it.next().copied(),
            Iter::Many(it) => it.next().map(|(&variant, &tags)| Stored { variant, tags }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn st(i: u32) -> Stored {
        Stored { variant: Variant::new(i.to_string().as_bytes(), &[]), tags: EntryId::new(i + 1) }
    }

    #[test]
    fn switches_to_a_map_and_back() {
        let mut e = Entries::default();
        for i in 0..100 {
            assert_eq!(e.insert(st(i)), None);
            assert_eq!(e.len(), i as usize + 1);
        }
        assert!(matches!(e, Entries::Many(_)));
        assert_eq!(e.insert(st(7)), Some(st(7)), "a variant is stored once");
        for i in 0..96 {
            assert_eq!(e.remove(&st(i).variant), Some(st(i)));
            assert_eq!(e.remove(&st(i).variant), None);
        }
        assert!(matches!(e, Entries::Few(_)));
        let mut left: Vec<u32> = e.iter().map(|s| s.tags.map_or(0, |t| t.get() - 1)).collect();
        left.sort();
        assert_eq!(left, [96, 97, 98, 99]);
    }
}
