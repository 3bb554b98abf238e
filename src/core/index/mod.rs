//! The path index and the tag index of one database. Pure logic; knows nothing of Redis.
//!
//! The path index is a compressed prefix tree (radix tree) over the path bytes. Each
//! node holds the entries stored at exactly its path (one per variant). Every path a
//! prefix covers lies in one subtree (`prefix/…`) plus one node (`prefix` itself), so a
//! purge visits only what it removes, and walking children in byte order lists paths
//! in ascending byte order. Non-root nodes always hold entries or at least two
//! children, so the tree never has more than twice as many nodes as paths.

use std::collections::{HashMap, HashSet};

use crate::core::key::{entry_key, Variant};
use crate::core::path::Coverage;

type Bytes = Box<[u8]>;

/// One indexed entry: its variant at the node's path, and whether it has tags (they
/// live in the tag index, so the common untagged entry costs 35 bytes here).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stored {
    pub variant: Variant,
    pub tagged: bool,
}

#[derive(Debug, Default)]
struct Node {
    edge: Bytes,
    /// `edge[0]`, kept inline: searching children then touches only the children
    /// array, not one edge allocation per probe (which dominated SET's profile).
    first: u8,
    /// Sorted by the first byte of their edge, which is unique among siblings. Sized
    /// exactly: fan-out is at most 256, so exact growth costs little, saves the slack.
    children: Box<[Node]>,
    entries: Vec<Stored>,
}

fn common_prefix(a: &[u8], b: &[u8]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

/// Pushes without the default minimum capacity of 4: most nodes hold one or two
/// entries or children, and the index must stay small per entry.
fn push_compact<T>(v: &mut Vec<T>, item: T) {
    if v.len() == v.capacity() && v.len() < 8 {
        v.reserve_exact(1);
    }
    v.push(item);
}

fn insert_child(children: &mut Box<[Node]>, at: usize, child: Node) {
    let mut v = std::mem::take(children).into_vec();
    v.reserve_exact(1);
    v.insert(at, child);
    *children = v.into_boxed_slice();
}

fn remove_child(children: &mut Box<[Node]>, at: usize) -> Node {
    let mut v = std::mem::take(children).into_vec();
    let child = v.remove(at);
    *children = v.into_boxed_slice();
    child
}

fn shrink<T>(v: &mut Vec<T>) {
    if v.capacity() > 8 && v.len() <= v.capacity() / 4 {
        v.shrink_to(v.len() * 2);
    }
}

/// A HashMap never gives memory back by itself: without this, the tag index of a
/// server whose entries all expired keeps its peak size (amortized O(1), like `shrink`).
fn shrink_map<K: Eq + std::hash::Hash, V>(m: &mut HashMap<K, V>) {
    if m.capacity() > 64 && m.len() < m.capacity() / 4 {
        m.shrink_to(m.len() * 2);
    }
}

impl Node {
    fn child_pos(&self, byte: u8) -> Result<usize, usize> {
        self.children.binary_search_by_key(&byte, |c| c.first)
    }

    /// Splits this node's edge after `at` bytes; the lower part becomes the only child.
    fn split(&mut self, at: usize) {
        let lower = Node {
            first: self.edge[at],
            edge: self.edge[at..].into(),
            children: std::mem::take(&mut self.children),
            entries: std::mem::take(&mut self.entries),
        };
        self.edge = self.edge[..at].into();
        self.children = Box::new([lower]);
    }

    /// Restores the invariant for a non-root node that may have lost its entries or
    /// children: an entry-less node with one child absorbs it.
    fn merge_if_single(&mut self) {
        if self.entries.is_empty() && self.children.len() == 1 {
            let child = remove_child(&mut self.children, 0);
            self.edge = [&self.edge[..], &child.edge[..]].concat().into();
            self.children = child.children;
            self.entries = child.entries;
        }
        shrink(&mut self.entries);
    }

    /// Calls `f` with the path and entries of every node in this subtree that holds
    /// entries; `path` holds the path of this node's parent.
    fn for_each(&self, path: &mut Vec<u8>, f: &mut impl FnMut(&[u8], &[Stored])) {
        let mut stack: Vec<(&Node, usize)> = vec![(self, path.len())];
        while let Some((node, len)) = stack.pop() {
            path.truncate(len);
            path.extend_from_slice(&node.edge);
            if !node.entries.is_empty() {
                f(path, &node.entries);
            }
            stack.extend(node.children.iter().map(|c| (c, path.len())));
        }
    }
}

/// The result of walking towards a node: the parent, the child's position in it, and
/// whether the parent is the root (which never merges).
struct ParentOf<'a> {
    parent: &'a mut Node,
    pos: usize,
    parent_is_root: bool,
    /// Length of the parent's path.
    parent_len: usize,
}

#[derive(Debug, Default)]
pub struct PathIndex {
    root: Node,
    entries: usize,
    paths: usize,
}

impl PathIndex {
    pub fn entries(&self) -> usize {
        self.entries
    }

    pub fn paths(&self) -> usize {
        self.paths
    }

    /// Stores `stored` at `path`, replacing the entry of the same variant; returns it.
    pub fn insert(&mut self, path: &[u8], stored: Stored) -> Option<Stored> {
        let node = self.node_for_insert(path);
        if let Some(old) = node.entries.iter_mut().find(|s| s.variant == stored.variant) {
            return Some(std::mem::replace(old, stored));
        }
        let new_path = node.entries.is_empty();
        push_compact(&mut node.entries, stored);
        self.paths += usize::from(new_path);
        self.entries += 1;
        None
    }

    fn node_for_insert(&mut self, path: &[u8]) -> &mut Node {
        let mut node = &mut self.root;
        let mut rest = path;
        while !rest.is_empty() {
            match node.child_pos(rest[0]) {
                Err(pos) => {
                    insert_child(&mut node.children, pos, Node { edge: rest.into(), first: rest[0], ..Node::default() });
                    return &mut node.children[pos];
                }
                Ok(pos) => {
                    let child = &mut node.children[pos];
                    let common = common_prefix(&child.edge, rest);
                    if common < child.edge.len() {
                        child.split(common);
                    }
                    rest = &rest[common..];
                    node = child;
                }
            }
        }
        node
    }

    /// Walks to the parent of the node whose edge ends where `path` ends.
    /// With `partial`, the child's edge may also run past the end of `path`.
    fn parent_of(&mut self, path: &[u8], partial: bool) -> Option<ParentOf<'_>> {
        let mut node = &mut self.root;
        let mut rest = path;
        let mut parent_is_root = true;
        loop {
            let pos = node.child_pos(*rest.first()?).ok()?;
            let edge = &node.children[pos].edge;
            let common = common_prefix(edge, rest);
            if common == rest.len() && (common == edge.len() || partial) {
                return Some(ParentOf { parent: node, pos, parent_is_root, parent_len: path.len() - rest.len() });
            }
            if common < edge.len() {
                return None;
            }
            rest = &rest[common..];
            node = &mut node.children[pos];
            parent_is_root = false;
        }
    }

    /// Removes `parent.children[pos]`'s entries matching `pick` and compacts the tree.
    fn take_entries(at: ParentOf<'_>, mut pick: impl FnMut(&Stored) -> bool) -> Vec<Stored> {
        let ParentOf { parent, pos, parent_is_root, .. } = at;
        let node = &mut parent.children[pos];
        let mut taken = Vec::new();
        let mut i = 0;
        while i < node.entries.len() {
            if pick(&node.entries[i]) {
                taken.push(node.entries.swap_remove(i));
            } else {
                i += 1;
            }
        }
        if node.entries.is_empty() && node.children.is_empty() {
            remove_child(&mut parent.children, pos);
            if !parent_is_root {
                parent.merge_if_single();
            }
        } else {
            node.merge_if_single();
        }
        taken
    }

    fn account_removed(&mut self, removed: usize, had_entries: bool, has_entries: bool) {
        self.entries -= removed;
        if had_entries && !has_entries {
            self.paths -= 1;
        }
    }

    /// Removes the entry of `variant` at `path`.
    pub fn remove(&mut self, path: &[u8], variant: &Variant) -> Option<Stored> {
        let at = self.parent_of(path, false)?;
        let node = &at.parent.children[at.pos];
        let before = node.entries.len();
        if !node.entries.iter().any(|s| s.variant == *variant) {
            return None;
        }
        let mut taken = Self::take_entries(at, |s| s.variant == *variant);
        self.account_removed(taken.len(), before > 0, before > taken.len());
        taken.pop()
    }

    /// The entries at exactly `path`.
    pub fn get(&self, path: &[u8]) -> &[Stored] {
        let mut node = &self.root;
        let mut rest = path;
        while !rest.is_empty() {
            let Ok(pos) = node.child_pos(rest[0]) else { return &[] };
            let child = &node.children[pos];
            let Some(after) = rest.strip_prefix(&child.edge[..]) else { return &[] };
            rest = after;
            node = child;
        }
        &node.entries
    }

    /// The node whose subtree holds exactly the paths starting with `prefix`, and its path.
    fn locate(&self, prefix: &[u8]) -> Option<(&Node, Vec<u8>)> {
        let mut node = &self.root;
        let mut consumed = 0;
        while consumed < prefix.len() {
            let rest = &prefix[consumed..];
            let child = &node.children[node.child_pos(rest[0]).ok()?];
            let common = common_prefix(&child.edge, rest);
            if common == rest.len() {
                return Some((child, [&prefix[..consumed], &child.edge[..]].concat()));
            }
            if common < child.edge.len() {
                return None;
            }
            consumed += common;
            node = child;
        }
        Some((node, prefix.to_vec()))
    }

    /// Calls `f` for every entry the coverage includes.
    pub fn for_each_covered(&self, coverage: &Coverage<'_>, mut f: impl FnMut(&[u8], &Stored)) {
        if let Some(exact) = coverage.exact {
            for s in self.get(exact) {
                f(exact, s);
            }
        }
        if let Some((node, mut path)) = coverage.subtree.as_deref().and_then(|s| self.locate(s)) {
            path.truncate(path.len() - node.edge.len());
            node.for_each(&mut path, &mut |p, entries| entries.iter().for_each(|s| f(p, s)));
        }
    }

    /// Removes every entry the coverage includes, calling `on_tagged` for those with
    /// tags (the tag index must forget them); returns how many were removed.
    pub fn remove_covered(&mut self, coverage: &Coverage<'_>, mut on_tagged: impl FnMut(&[u8], &Stored)) -> usize {
        let (mut entries, mut paths) = (0, 0);
        let mut count = |path: &[u8], removed: &[Stored]| {
            entries += removed.len();
            paths += usize::from(!removed.is_empty());
            removed.iter().filter(|s| s.tagged).for_each(|s| on_tagged(path, s));
        };
        if let Some(subtree) = coverage.subtree.as_deref() {
            if let Some(at) = self.parent_of(subtree, true) {
                let ParentOf { parent, pos, parent_is_root, parent_len } = at;
                let detached = remove_child(&mut parent.children, pos);
                if !parent_is_root {
                    parent.merge_if_single();
                }
                detached.for_each(&mut subtree[..parent_len].to_vec(), &mut count);
            }
        }
        if let Some(exact) = coverage.exact {
            if let Some(at) = self.parent_of(exact, false) {
                count(exact, &Self::take_entries(at, |_| true));
            }
        }
        self.entries -= entries;
        self.paths -= paths;
        entries
    }

    /// Up to `limit` distinct paths covered by `coverage` that sort strictly after
    /// `after`, in ascending byte order. Work is bounded by what it returns plus the
    /// depth of the cursor.
    pub fn list(&self, coverage: &Coverage<'_>, after: Option<&[u8]>, limit: usize) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        if let Some(exact) = coverage.exact {
            if limit > 0 && after.map_or(true, |a| exact > a) && !self.get(exact).is_empty() {
                out.push(exact.to_vec());
            }
        }
        if let Some((node, path)) = coverage.subtree.as_deref().and_then(|s| self.locate(s)) {
            list_subtree(node, path, after, limit, &mut out);
        }
        out
    }
}

struct Frame<'a> {
    node: &'a Node,
    len: usize,
    next_child: usize,
    emit_self: bool,
}

fn list_subtree<'a>(top: &'a Node, mut path: Vec<u8>, after: Option<&[u8]>, limit: usize, out: &mut Vec<Vec<u8>>) {
    let mut stack: Vec<Frame<'a>> = Vec::new();
    match after {
        None => stack.push(Frame { node: top, len: path.len(), next_child: 0, emit_self: true }),
        Some(after) => {
            // Seek: descend along `after`, keeping for each node only what sorts after it.
            let mut node = top;
            loop {
                if !after.starts_with(&path) {
                    if path.as_slice() > after {
                        stack.push(Frame { node, len: path.len(), next_child: 0, emit_self: true });
                    }
                    break;
                }
                let Some(&next) = after.get(path.len()) else {
                    stack.push(Frame { node, len: path.len(), next_child: 0, emit_self: false });
                    break;
                };
                let later = node.children.partition_point(|c| c.first <= next);
                stack.push(Frame { node, len: path.len(), next_child: later, emit_self: false });
                let Ok(pos) = node.child_pos(next) else { break };
                node = &node.children[pos];
                path.extend_from_slice(&node.edge);
            }
        }
    }
    while let Some(frame) = stack.last_mut() {
        if out.len() >= limit {
            break;
        }
        path.truncate(frame.len);
        let node = frame.node;
        if frame.emit_self {
            frame.emit_self = false;
            if !node.entries.is_empty() {
                out.push(path.clone());
            }
        } else if let Some(child) = node.children.get(frame.next_child) {
            frame.next_child += 1;
            path.extend_from_slice(&child.edge);
            stack.push(Frame { node: child, len: path.len(), next_child: 0, emit_self: true });
        } else {
            stack.pop();
        }
    }
}

/// Tag → the keys of the entries carrying it, and entry key → its tags.
#[derive(Debug, Default)]
pub struct TagIndex {
    members: HashMap<Bytes, HashSet<Bytes>>,
    of_entry: HashMap<Bytes, Box<[Bytes]>>,
}

impl TagIndex {
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Makes `tags` the tags of the entry `key` (none: forgets it).
    fn set(&mut self, key: &[u8], tags: &[&[u8]]) {
        self.clear(key);
        if tags.is_empty() {
            return;
        }
        for tag in tags {
            self.members.entry(Bytes::from(*tag)).or_default().insert(key.into());
        }
        self.of_entry.insert(key.into(), tags.iter().map(|t| Bytes::from(*t)).collect());
    }

    fn clear(&mut self, key: &[u8]) {
        let Some(tags) = self.of_entry.remove(key) else { return };
        for tag in tags.iter() {
            if let Some(keys) = self.members.get_mut(tag) {
                keys.remove(key);
                if keys.is_empty() {
                    self.members.remove(tag);
                } else if keys.capacity() > 64 && keys.len() < keys.capacity() / 4 {
                    keys.shrink_to_fit();
                }
            }
        }
        shrink_map(&mut self.members);
        shrink_map(&mut self.of_entry);
    }

    /// The keys of entries carrying any of `tags`, each once.
    pub fn keys(&self, tags: &[&[u8]]) -> Vec<Vec<u8>> {
        let mut seen: HashSet<&[u8]> = HashSet::new();
        tags.iter()
            .filter_map(|t| self.members.get(*t))
            .flatten()
            .filter(|k| seen.insert(k))
            .map(|k| k.to_vec())
            .collect()
    }
}

/// Everything the module indexes for one Redis database.
#[derive(Debug, Default)]
pub struct DbIndex {
    pub paths: PathIndex,
    pub tags: TagIndex,
}

impl DbIndex {
    /// Indexes the entry at (path, variant) with `tags`, replacing what was there.
    pub fn insert(&mut self, path: &[u8], variant: Variant, tags: &[&[u8]]) {
        let old = self.paths.insert(path, Stored { variant, tagged: !tags.is_empty() });
        if !tags.is_empty() || old.is_some_and(|o| o.tagged) {
            self.tags.set(&entry_key(path, &variant), tags);
        }
    }

    /// Drops the entry at (path, variant) from the index; returns whether it was there.
    pub fn remove(&mut self, path: &[u8], variant: &Variant) -> bool {
        match self.paths.remove(path, variant) {
            Some(stored) => {
                if stored.tagged {
                    self.tags.clear(&entry_key(path, variant));
                }
                true
            }
            None => false,
        }
    }

    /// The distinct paths and the entry keys the coverage includes.
    pub fn covered(&self, coverage: &Coverage<'_>) -> (Vec<Vec<u8>>, Vec<Vec<u8>>) {
        let (mut paths, mut keys) = (Vec::<Vec<u8>>::new(), Vec::new());
        self.paths.for_each_covered(coverage, |path, s| {
            if paths.last().map(Vec::as_slice) != Some(path) {
                paths.push(path.to_vec());
            }
            keys.push(entry_key(path, &s.variant));
        });
        (paths, keys)
    }

    /// Drops every covered entry from the index; returns how many there were.
    pub fn remove_covered(&mut self, coverage: &Coverage<'_>) -> usize {
        let tags = &mut self.tags;
        self.paths.remove_covered(coverage, |path, stored| tags.clear(&entry_key(path, &stored.variant)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::key::Variant;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    fn v(q: &str) -> Variant {
        Variant::new(q.as_bytes(), &[])
    }

    fn st(q: &str) -> Stored {
        Stored { variant: v(q), tagged: false }
    }

    fn paths_of(index: &PathIndex, coverage: &Coverage<'_>) -> Vec<String> {
        let mut out = Vec::new();
        index.for_each_covered(coverage, |p, _| out.push(String::from_utf8_lossy(p).into_owned()));
        out.sort();
        out
    }

    /// Checks the structural invariants and that the counters match the tree.
    fn check(index: &PathIndex) {
        fn walk(node: &Node, is_root: bool, entries: &mut usize, paths: &mut usize) {
            if !is_root {
                assert!(!node.edge.is_empty());
                assert!(!node.entries.is_empty() || node.children.len() >= 2, "uncompacted node {:?}", node.edge);
            }
            for w in node.children.windows(2) {
                assert!(w[0].edge[0] < w[1].edge[0]);
            }
            for c in node.children.iter() {
                assert_eq!(c.first, c.edge[0]);
            }
            *entries += node.entries.len();
            *paths += usize::from(!node.entries.is_empty());
            for c in &node.children {
                walk(c, false, entries, paths);
            }
        }
        let (mut entries, mut paths) = (0, 0);
        walk(&index.root, true, &mut entries, &mut paths);
        assert_eq!((entries, paths), (index.entries, index.paths));
    }

    #[test]
    fn purge_removes_the_covered_subtree_only() {
        let mut index = PathIndex::default();
        for p in ["/tournament/5", "/tournament/5/", "/tournament/5/bracket", "/tournament/5/a/b", "/tournament/50", "/tournament/5x", "/tournament"] {
            index.insert(p.as_bytes(), st(""));
            index.insert(p.as_bytes(), st("page=2"));
        }
        check(&index);
        let cov = Coverage::prefix(b"/tournament/5/");
        assert_eq!(
            paths_of(&index, &cov),
            ["/tournament/5", "/tournament/5", "/tournament/5/", "/tournament/5/", "/tournament/5/a/b", "/tournament/5/a/b", "/tournament/5/bracket", "/tournament/5/bracket"]
        );
        assert_eq!(index.remove_covered(&cov, |_, _| {}), 8);
        check(&index);
        assert_eq!(index.entries(), 6);
        assert_eq!(index.paths(), 3);
        assert_eq!(paths_of(&index, &Coverage::prefix(b"/")), ["/tournament", "/tournament", "/tournament/50", "/tournament/50", "/tournament/5x", "/tournament/5x"]);
    }

    #[test]
    fn exact_purge_leaves_children() {
        let mut index = PathIndex::default();
        for p in ["/a", "/a/b", "/ab"] {
            index.insert(p.as_bytes(), st(""));
        }
        assert_eq!(index.remove_covered(&Coverage::exact(b"/a"), |_, _| {}), 1);
        check(&index);
        assert_eq!(paths_of(&index, &Coverage::prefix(b"/")), ["/a/b", "/ab"]);
    }

    #[test]
    fn list_is_in_byte_order_and_pages() {
        let mut index = PathIndex::default();
        // '-' and '.' sort before '/', so segment order and byte order differ here.
        let paths = ["/a", "/a-b", "/a-b/c", "/a.x", "/a/b", "/a/b/c", "/b", "/a/"];
        for p in paths {
            index.insert(p.as_bytes(), st(""));
        }
        let mut want: Vec<&str> = paths.to_vec();
        want.sort();
        let all = index.list(&Coverage::prefix(b"/"), None, 100);
        assert_eq!(all, want.iter().map(|p| p.as_bytes().to_vec()).collect::<Vec<_>>());
        let mut paged = Vec::new();
        let mut after: Option<Vec<u8>> = None;
        loop {
            let page = index.list(&Coverage::prefix(b"/"), after.as_deref(), 3);
            if page.is_empty() {
                break;
            }
            after = page.last().cloned();
            paged.extend(page);
        }
        assert_eq!(paged, all);
        assert_eq!(index.list(&Coverage::prefix(b"/a"), None, 100), [b"/a".to_vec(), b"/a/".to_vec(), b"/a/b".to_vec(), b"/a/b/c".to_vec()]);
    }

    #[test]
    fn tags_follow_entries() {
        let mut db = DbIndex::default();
        db.insert(b"/a", v(""), &[b"t1", b"t2"]);
        db.insert(b"/b", v(""), &[b"t2"]);
        assert_eq!(db.tags.len(), 2);
        assert_eq!(db.tags.keys(&[b"t2"]).len(), 2);
        db.insert(b"/a", v(""), &[b"t3"]);
        assert_eq!(db.tags.keys(&[b"t1"]).len(), 0);
        assert_eq!(db.tags.keys(&[b"t3", b"t2"]).len(), 2);
        assert!(db.remove(b"/b", &v("")));
        assert_eq!(db.tags.len(), 1);
        assert_eq!(db.remove_covered(&Coverage::prefix(b"/")), 1);
        assert_eq!(db.tags.len(), 0);
    }

    #[derive(Debug, Clone)]
    enum Op {
        Insert(String, u8),
        Remove(String, u8),
        Purge(String, bool),
    }

    fn arb_path() -> impl Strategy<Value = String> {
        proptest::collection::vec(prop_oneof![Just("/"), Just("a"), Just("b"), Just("-"), Just("ab")], 1..7).prop_map(|v| v.concat())
    }

    fn arb_op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (arb_path(), 0u8..3).prop_map(|(p, q)| Op::Insert(p, q)),
            2 => (arb_path(), 0u8..3).prop_map(|(p, q)| Op::Remove(p, q)),
            1 => (arb_path(), any::<bool>()).prop_map(|(p, e)| Op::Purge(p, e)),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(600))]

        /// The radix tree against a plain ordered map of (path, variant).
        #[test]
        fn matches_a_model(ops in proptest::collection::vec(arb_op(), 1..80), after in arb_path(), limit in 1usize..6) {
            let mut index = PathIndex::default();
            let mut model: BTreeMap<(String, u8), ()> = BTreeMap::new();
            for op in ops {
                match op {
                    Op::Insert(p, q) => {
                        let old = index.insert(p.as_bytes(), st(&q.to_string()));
                        prop_assert_eq!(old.is_some(), model.insert((p, q), ()).is_some());
                    }
                    Op::Remove(p, q) => {
                        let old = index.remove(p.as_bytes(), &v(&q.to_string()));
                        prop_assert_eq!(old.is_some(), model.remove(&(p, q)).is_some());
                    }
                    Op::Purge(p, exact) => {
                        let cov = if exact { Coverage::exact(p.as_bytes()) } else { Coverage::prefix(p.as_bytes()) };
                        let removed = index.remove_covered(&cov, |_, _| {});
                        let before = model.len();
                        model.retain(|(path, _), _| !cov.covers(path.as_bytes()));
                        prop_assert_eq!(removed, before - model.len());
                    }
                }
                check(&index);
            }
            let cov = Coverage::prefix(b"/");
            let mut want: Vec<Vec<u8>> = model.keys().map(|(p, _)| p.as_bytes().to_vec()).filter(|p| cov.covers(p) && p.as_slice() > after.as_bytes()).collect();
            want.dedup();
            want.truncate(limit);
            prop_assert_eq!(index.list(&cov, Some(after.as_bytes()), limit), want);
        }
    }
}
