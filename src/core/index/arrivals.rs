//! Entries read by a load, queued to be indexed elsewhere (on another thread): one
//! byte buffer holds every path and tag, so queuing an entry allocates nothing.

use std::collections::HashMap;

use crate::core::index::DbIndex;
use crate::core::key::Variant;

#[derive(Debug, Default)]
pub struct Arrivals {
    /// Per entry: its database, variant, where its bytes start in `bytes`, the
    /// path's length and the number of tags after it (each a u32 length, then bytes).
    entries: Vec<Arrival>,
    bytes: Vec<u8>,
}

#[derive(Debug)]
struct Arrival {
    db: i32,
    variant: Variant,
    start: usize,
    path_len: u32,
    tags: u32,
}

impl Arrivals {
    /// Room for `entries` entries of about `bytes_each` bytes of path and tags.
    pub fn with_capacity(entries: usize, bytes_each: usize) -> Self {
        Arrivals { entries: Vec::with_capacity(entries), bytes: Vec::with_capacity(entries * bytes_each) }
    }

    /// Empties the queue, keeping its memory for the next entries.
    pub fn clear(&mut self) {
        self.entries.clear();
        self.bytes.clear();
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn push(&mut self, db: i32, path: &[u8], variant: Variant, tags: &[&[u8]]) {
        // Paths are at most 64 KiB and tags fewer than 2^32: the lengths fit.
        let path_len = u32::try_from(path.len()).unwrap_or(u32::MAX);
        let count = u32::try_from(tags.len()).unwrap_or(u32::MAX);
        self.entries.push(Arrival { db, variant, start: self.bytes.len(), path_len, tags: count });
        self.bytes.extend_from_slice(path);
        for tag in tags {
            self.bytes.extend_from_slice(&u32::try_from(tag.len()).unwrap_or(u32::MAX).to_le_bytes());
            self.bytes.extend_from_slice(tag);
        }
    }

    /// Indexes every queued entry, in the order queued, into the index of its database.
    pub fn index_into(&self, dbs: &mut HashMap<i32, DbIndex>) {
        let mut tags: Vec<&[u8]> = Vec::new();
        for a in &self.entries {
            let Some((path, mut rest)) = self.bytes.get(a.start..).and_then(|b| b.split_at_checked(a.path_len as usize)) else {
                continue;
            };
            tags.clear();
            for _ in 0..a.tags {
                let Some((len, after)) = rest.split_first_chunk::<4>() else { break };
                let Some((tag, after)) = after.split_at_checked(u32::from_le_bytes(*len) as usize) else { break };
                tags.push(tag);
                rest = after;
            }
            dbs.entry(a.db).or_default().insert(path, a.variant, &tags);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::path::Coverage;
    use proptest::prelude::*;

    fn same(got: &HashMap<i32, DbIndex>, want: &HashMap<i32, DbIndex>, tags: &[Vec<u8>]) -> Result<(), TestCaseError> {
        prop_assert_eq!(got.len(), want.len());
        for (db, want) in want {
            let got = &got[db];
            prop_assert_eq!(got.paths.entries(), want.paths.entries());
            prop_assert_eq!(got.tags.len(), want.tags.len());
            prop_assert_eq!(got.paths.list(&Coverage::all(), None, usize::MAX), want.paths.list(&Coverage::all(), None, usize::MAX));
            for tag in tags {
                let (mut g, mut w) = (got.tagged(&[tag]), want.tagged(&[tag]));
                g.sort();
                w.sort();
                prop_assert_eq!(g, w);
            }
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]

        /// Whatever bytes paths and tags hold, queuing entries and indexing the queue
        /// builds what indexing each entry at once builds.
        #[test]
        fn queued_then_indexed_equals_indexed_at_once(
            entries in proptest::collection::vec(
                (0i32..3, proptest::collection::vec(any::<u8>(), 0..12), 0u8..3,
                 proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..5), 0..4)),
                0..60)
        ) {
            let mut queued = Arrivals::default();
            let mut want: HashMap<i32, DbIndex> = HashMap::new();
            let mut all_tags = Vec::new();
            for (db, path, q, tags) in &entries {
                let variant = Variant::new(q.to_string().as_bytes(), &[]);
                let refs: Vec<&[u8]> = tags.iter().map(Vec::as_slice).collect();
                queued.push(*db, path, variant, &refs);
                want.entry(*db).or_default().insert(path, variant, &refs);
                all_tags.extend(tags.iter().cloned());
            }
            prop_assert_eq!(queued.len(), entries.len());
            let mut got = HashMap::new();
            queued.index_into(&mut got);
            same(&got, &want, &all_tags)?;
        }
    }

    #[test]
    fn indexes_what_was_queued_in_order() {
        let mut queued = Arrivals::default();
        let v = |q: &[u8]| Variant::new(q, &[]);
        queued.push(0, b"/a", v(b""), &[b"t1", b"t2"]);
        queued.push(3, b"/b/c", v(b"?x=1"), &[]);
        queued.push(0, b"/a", v(b""), &[b"t3", b""]); // replaces the first
        queued.push(0, b"", v(b""), &[]);
        assert_eq!(queued.len(), 4);

        let mut dbs = HashMap::new();
        queued.index_into(&mut dbs);
        let mut expected: HashMap<i32, DbIndex> = HashMap::new();
        expected.entry(0).or_default().insert(b"/a", v(b""), &[b"t3", b""]);
        expected.entry(0).or_default().insert(b"", v(b""), &[]);
        expected.entry(3).or_default().insert(b"/b/c", v(b"?x=1"), &[]);
        for db in [0, 3] {
            let (got, want) = (&dbs[&db], &expected[&db]);
            assert_eq!(got.paths.entries(), want.paths.entries());
            assert_eq!(got.paths.list(&Coverage::all(), None, 10), want.paths.list(&Coverage::all(), None, 10));
            for tag in [&b"t1"[..], b"t2", b"t3", b""] {
                assert_eq!(got.tagged(&[tag]), want.tagged(&[tag]), "tag {tag:?} in db {db}");
            }
        }
        assert_eq!(dbs.len(), 2);
    }
}
