//! The path index: a compressed prefix tree (radix tree) over the path bytes. Each
//! node holds the entries stored at exactly its path (one per variant). Every path a
//! prefix covers lies in one subtree (`prefix/…`) plus one node (`prefix` itself), so a
//! purge visits only what it removes, and walking children in byte order lists paths
//! in ascending byte order. Non-root nodes always hold entries or at least two
//! children, so the tree never has more than twice as many nodes as paths.
//!
//! A path can be 65536 bytes long, so the tree can be that deep: every walk here is
//! a loop or uses an explicit stack, dropping included, never recursion.

use crate::core::index::edge::Edge;
use crate::core::index::tags::EntryId;
use crate::core::index::variants::{Entries, Stored};
use crate::core::key::Variant;
use crate::core::path::Coverage;

#[derive(Default)]
struct Node {
    /// Its first byte is inline even when the edge is long: searching children then
    /// touches only the children array (edge allocations per probe dominated SET's
    /// profile once).
    edge: Edge,
    /// Sorted by the first byte of their edge, which is unique among siblings. Sized
    /// exactly: fan-out is at most 256, so exact growth costs little, saves the slack.
    children: Box<[Node]>,
    entries: Entries,
    /// Entries and paths in this node's subtree (itself included): a purge of any size
    /// counts what it detaches in O(depth).
    sub: Counts,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Counts {
    entries: u32,
    paths: u32,
}

impl Counts {
    fn of(entries: &Entries) -> Counts {
        Counts { entries: entries.len() as u32, paths: u32::from(!entries.is_empty()) }
    }
}

/// Frees a subtree with an explicit stack: the derived drop would recurse once per
/// level (a 65536-byte path can make 65536 levels).
impl Drop for Node {
    fn drop(&mut self) {
        if self.children.is_empty() {
            return;
        }
        let mut stack = vec![std::mem::take(&mut self.children)];
        while let Some(mut children) = stack.pop() {
            for child in children.iter_mut() {
                if !child.children.is_empty() {
                    stack.push(std::mem::take(&mut child.children));
                }
            }
            // Each child's own drop now finds no children.
            drop(children);
        }
    }
}

fn common_prefix(a: &[u8], b: &[u8]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
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

impl Node {
    fn leaf(edge: &[u8]) -> Node {
        Node {
            edge: Edge::new(edge),
            children: Box::new([]),
            entries: Entries::default(),
            sub: Counts::default(),
        }
    }

    fn child_pos(&self, byte: u8) -> Result<usize, usize> {
        self.children.binary_search_by_key(&byte, |c| c.edge.first())
    }

    /// Splits this node's edge after `at` bytes; the lower part becomes the only child.
    fn split(&mut self, at: usize) {
        let mut lower = Node::leaf(&self.edge[at..]);
        lower.children = std::mem::take(&mut self.children);
        lower.entries = std::mem::take(&mut self.entries);
        lower.sub = self.sub;
        self.edge = Edge::new(&self.edge[..at]);
        self.children = Box::new([lower]);
    }

    /// Restores the invariant for a non-root node that may have lost its entries or
    /// children: an entry-less node with one child absorbs it.
    fn merge_if_single(&mut self) {
        if self.entries.is_empty() && self.children.len() == 1 {
            let mut child = remove_child(&mut self.children, 0);
            self.edge = Edge::joined(&self.edge, &child.edge);
            self.children = std::mem::take(&mut child.children);
            self.entries = std::mem::take(&mut child.entries);
            self.sub = child.sub;
        }
    }

    /// Calls `f` with the path and entries of every node in this subtree that holds
    /// entries; `path` holds the path of this node's parent.
    fn for_each(&self, path: &mut Vec<u8>, f: &mut impl FnMut(&[u8], &Entries)) {
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

impl ParentOf<'_> {
    /// Restores the tree's shape after the child's entries changed: a child left with
    /// neither entries nor children goes, and whichever node lost something merges.
    fn compact(self) {
        let ParentOf { parent, pos, parent_is_root, .. } = self;
        let Some(node) = parent.children.get_mut(pos) else { return };
        if node.entries.is_empty() && node.children.is_empty() {
            remove_child(&mut parent.children, pos);
            if !parent_is_root {
                parent.merge_if_single();
            }
        } else {
            node.merge_if_single();
        }
    }
}

#[derive(Default)]
pub struct PathIndex {
    root: Node,
}

impl std::fmt::Debug for PathIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Not the tree: printing it would recurse as deep as the longest path.
        f.debug_struct("PathIndex").field("entries", &self.entries()).field("paths", &self.paths()).finish()
    }
}

impl PathIndex {
    pub fn entries(&self) -> usize {
        self.root.sub.entries as usize
    }

    pub fn paths(&self) -> usize {
        self.root.sub.paths as usize
    }

    /// Adds to the counts of every node from the root to the one at `path` (or as far
    /// towards it as the tree goes).
    fn count_along(&mut self, path: &[u8], entries: i64, paths: i64) {
        let add = |n: &mut Node| {
            n.sub.entries = (i64::from(n.sub.entries) + entries) as u32;
            n.sub.paths = (i64::from(n.sub.paths) + paths) as u32;
        };
        let mut node = &mut self.root;
        add(node);
        let mut rest = path;
        while let Some(&next) = rest.first() {
            let Ok(pos) = node.child_pos(next) else { return };
            let child = &mut node.children[pos];
            let Some(after) = rest.strip_prefix(&child.edge[..]) else { return };
            add(child);
            rest = after;
            node = child;
        }
    }

    /// Stores `stored` at `path`, replacing the entry of the same variant; returns it.
    pub fn insert(&mut self, path: &[u8], stored: Stored) -> Option<Stored> {
        let node = self.node_for_insert(path);
        let new_path = node.entries.is_empty();
        let old = node.entries.insert(stored);
        if old.is_none() {
            self.count_along(path, 1, i64::from(new_path));
        }
        old
    }

    fn node_for_insert(&mut self, path: &[u8]) -> &mut Node {
        let mut node = &mut self.root;
        let mut rest = path;
        while let Some(&next) = rest.first() {
            match node.child_pos(next) {
                Err(pos) => {
                    insert_child(&mut node.children, pos, Node::leaf(rest));
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

    /// Removes the entry of `variant` at `path`.
    pub fn remove(&mut self, path: &[u8], variant: &Variant) -> Option<Stored> {
        let held = self.get(path).filter(|e| e.contains(variant))?.len();
        // Counts first, while every node on the way is still there.
        self.count_along(path, -1, -i64::from(held == 1));
        let at = self.parent_of(path, false)?;
        let removed = at.parent.children.get_mut(at.pos)?.entries.remove(variant);
        at.compact();
        removed
    }

    pub fn contains(&self, path: &[u8], variant: &Variant) -> bool {
        self.get(path).is_some_and(|e| e.contains(variant))
    }

    /// Takes every entry at exactly `path` out of the tree.
    fn take_entries(&mut self, path: &[u8]) -> Entries {
        let Some(held) = self.get(path).map(Entries::len).filter(|&n| n > 0) else { return Entries::default() };
        self.count_along(path, -(held as i64), -1);
        let Some(at) = self.parent_of(path, false) else { return Entries::default() };
        let taken = at.parent.children.get_mut(at.pos).map(|n| std::mem::take(&mut n.entries)).unwrap_or_default();
        at.compact();
        taken
    }

    /// Detaches the subtree of the paths starting with `prefix` (non-empty), re-rooted
    /// so that its top node's edge is its whole path.
    fn detach_subtree(&mut self, prefix: &[u8]) -> Option<Node> {
        let (parent_len, sub) = {
            let at = self.parent_of(prefix, true)?;
            let sub = at.parent.children.get(at.pos)?.sub;
            (at.parent_len, sub)
        };
        self.count_along(&prefix[..parent_len], -i64::from(sub.entries), -i64::from(sub.paths));
        let ParentOf { parent, pos, parent_is_root, .. } = self.parent_of(prefix, true)?;
        let mut detached = remove_child(&mut parent.children, pos);
        if !parent_is_root {
            parent.merge_if_single();
        }
        detached.edge = Edge::joined(&prefix[..parent_len], &detached.edge);
        Some(detached)
    }

    /// Points the entry at (`path`, `variant`) at its tag record `id` (which moved).
    pub fn retag(&mut self, path: &[u8], variant: &Variant, id: EntryId) -> bool {
        let mut node = &mut self.root;
        let mut rest = path;
        while let Some(&next) = rest.first() {
            let Ok(pos) = node.child_pos(next) else { return false };
            let child = &mut node.children[pos];
            let Some(after) = rest.strip_prefix(&child.edge[..]) else { return false };
            rest = after;
            node = child;
        }
        node.entries.retag(variant, id)
    }

    /// The entries at exactly `path`.
    fn get(&self, path: &[u8]) -> Option<&Entries> {
        let mut node = &self.root;
        let mut rest = path;
        while let Some(&next) = rest.first() {
            let child = &node.children[node.child_pos(next).ok()?];
            rest = rest.strip_prefix(&child.edge[..])?;
            node = child;
        }
        Some(&node.entries)
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
    pub fn for_each_covered(&self, coverage: &Coverage<'_>, mut f: impl FnMut(&[u8], Stored)) {
        if let Some(exact) = coverage.exact {
            for s in self.get(exact).into_iter().flat_map(Entries::iter) {
                f(exact, s);
            }
        }
        if let Some((node, mut path)) = coverage.subtree.as_deref().and_then(|s| self.locate(s)) {
            path.truncate(path.len() - node.edge.len());
            node.for_each(&mut path, &mut |p, entries| entries.iter().for_each(|s| f(p, s)));
        }
    }

    /// Removes every entry the coverage includes, calling `on_removed` for each;
    /// returns how many were removed.
    pub fn remove_covered(&mut self, coverage: &Coverage<'_>, mut on_removed: impl FnMut(Stored)) -> usize {
        let removed = self.detach(coverage);
        removed.root.for_each(&mut Vec::new(), &mut |_, entries| entries.iter().for_each(&mut on_removed));
        removed.entries()
    }

    /// How many entries the coverage includes: O(depth), from the subtree counts.
    pub fn count_covered(&self, coverage: &Coverage<'_>) -> usize {
        let exact = coverage.exact.and_then(|e| self.get(e)).map_or(0, Entries::len);
        let subtree = coverage.subtree.as_deref().and_then(|s| self.locate(s)).map_or(0, |(n, _)| n.sub.entries as usize);
        exact + subtree
    }

    /// Moves every entry the coverage includes into a new index, which it returns (a
    /// purge that finishes in the background keeps them there): the subtree in one
    /// step, plus the exact path's entries. O(depth); nothing is copied or walked.
    pub fn detach(&mut self, coverage: &Coverage<'_>) -> PathIndex {
        let mut out = PathIndex::default();
        match coverage.subtree.as_deref() {
            Some([]) => out.root = std::mem::take(&mut self.root),
            Some(subtree) => {
                if let Some(detached) = self.detach_subtree(subtree) {
                    out.root.sub = detached.sub;
                    out.root.children = Box::new([detached]);
                }
            }
            None => {}
        }
        if let Some(exact) = coverage.exact {
            let taken = self.take_entries(exact);
            if !taken.is_empty() {
                let counts = Counts::of(&taken);
                out.node_for_insert(exact).entries = taken;
                out.count_along(exact, i64::from(counts.entries), i64::from(counts.paths));
            }
        }
        out
    }

    /// Removes the entries of the first paths in byte order and returns them with their
    /// paths: the background purge's unit of work. Always the first path, whatever its
    /// number of variants (taking them a few at a time from a hash map would rescan its
    /// emptied buckets each time); then, while their entries fit in `budget`, the leaves
    /// that follow it under the same parent, which leave its child array in one step
    /// instead of one reallocation each. O(depth + what it returns).
    pub fn take_first_paths(&mut self, budget: usize) -> Vec<(Vec<u8>, Entries)> {
        let mut out = Vec::new();
        // Down the leftmost branch to the first node with entries (a node's own path
        // sorts before its children's, and every node without entries below the root
        // has children), measuring only.
        let (mut depth, mut parent_len) = (0, 0);
        let mut parent = &self.root;
        let mut node = &self.root;
        while node.entries.is_empty() {
            let Some(first) = node.children.first() else { return out };
            parent_len += node.edge.len();
            (parent, node) = (node, first);
            depth += 1;
        }
        if depth == 0 {
            // Only the root's own entries (the empty path).
            let taken = std::mem::take(&mut self.root.entries);
            self.root.sub.entries -= taken.len() as u32;
            self.root.sub.paths -= 1;
            out.push((Vec::new(), taken));
            return out;
        }
        let run = leading_leaves(parent, budget);
        let taken = parent.children.iter().take(run.max(1)).fold(Counts::default(), |sum, child| {
            let own = Counts::of(&child.entries);
            Counts { entries: sum.entries + own.entries, paths: sum.paths + own.paths }
        });
        // Down the same branch again (every position is 0, the nodes are in cache),
        // uncounting and building the parent's path, then out of the parent.
        let uncount = |n: &mut Node| {
            n.sub.entries -= taken.entries;
            n.sub.paths -= taken.paths;
        };
        let mut path = Vec::with_capacity(parent_len);
        uncount(&mut self.root);
        if depth == 1 {
            take_from(&mut self.root, run, &path, &uncount, &mut out);
            return out;
        }
        let mut grandparent = &mut self.root;
        let mut grandparent_is_root = true;
        for _ in 2..depth {
            let Some(next) = grandparent.children.first_mut() else { return out };
            grandparent = next;
            path.extend_from_slice(&grandparent.edge);
            uncount(grandparent);
            grandparent_is_root = false;
        }
        let grandparent_len = path.len();
        let Some(parent) = grandparent.children.first_mut() else { return out };
        path.extend_from_slice(&parent.edge);
        uncount(parent);
        take_from(parent, run, &path, &uncount, &mut out);
        ParentOf { parent: grandparent, pos: 0, parent_is_root: grandparent_is_root, parent_len: grandparent_len }.compact();
        out
    }

    /// Up to `limit` distinct paths covered by `coverage` that sort strictly after
    /// `after`, in ascending byte order. Work is bounded by what it returns plus the
    /// depth of the cursor.
    pub fn list(&self, coverage: &Coverage<'_>, after: Option<&[u8]>, limit: usize) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        if let Some(exact) = coverage.exact {
            if limit > 0 && after.is_none_or(|a| exact > a) && self.get(exact).is_some_and(|e| !e.is_empty()) {
                out.push(exact.to_vec());
            }
        }
        if let Some((node, path)) = coverage.subtree.as_deref().and_then(|s| self.locate(s)) {
            list_subtree(node, path, after, limit, &mut out);
        }
        out
    }
}

/// How many of `parent`'s first children are leaves whose entries fit in `budget`
/// together (0 when the first child has children of its own: its entries go alone).
fn leading_leaves(parent: &Node, budget: usize) -> usize {
    let mut entries = 0;
    parent
        .children
        .iter()
        .take_while(|child| {
            entries += child.entries.len();
            child.children.is_empty() && (entries <= budget || entries == child.entries.len())
        })
        .count()
}

/// Moves into `out` the entries of `parent`'s first child (`run` 0: it keeps its
/// children), or its first `run` children, which are leaves and go; `path` is the
/// parent's. The parent's own shape is its caller's to restore.
fn take_from(parent: &mut Node, run: usize, path: &[u8], uncount: &impl Fn(&mut Node), out: &mut Vec<(Vec<u8>, Entries)>) {
    let joined = |edge: &[u8]| [path, edge].concat();
    if run == 0 {
        let Some(child) = parent.children.first_mut() else { return };
        uncount(child);
        out.push((joined(&child.edge), std::mem::take(&mut child.entries)));
        // Left with children only: one of them may have to merge up.
        child.merge_if_single();
        return;
    }
    let mut leaves = std::mem::take(&mut parent.children).into_vec();
    // The rest is allocated at its exact size: no shrinking afterwards.
    parent.children = leaves.split_off(run.min(leaves.len())).into_boxed_slice();
    out.extend(leaves.iter_mut().map(|leaf| (joined(&leaf.edge), std::mem::take(&mut leaf.entries))));
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
                let later = node.children.partition_point(|c| c.edge.first() <= next);
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

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    #[test]
    fn a_node_fills_one_cache_line() {
        assert_eq!(std::mem::size_of::<Node>(), 64);
    }

    /// Checks the structural invariants and that the counters match the tree
    /// (iteratively: the deep-tree test runs it on a small stack).
    pub fn check(index: &PathIndex) {
        let mut stack = vec![(&index.root, true)];
        while let Some((node, is_root)) = stack.pop() {
            if !is_root {
                assert!(!node.edge.is_empty());
                assert!(!node.entries.is_empty() || node.children.len() >= 2, "uncompacted node {:?}", node.edge);
            }
            for w in node.children.windows(2) {
                assert!(w[0].edge[0] < w[1].edge[0]);
            }
            let mut sub = Counts::of(&node.entries);
            for c in node.children.iter() {
                assert_eq!(c.edge.first(), c.edge[0]);
                sub.entries += c.sub.entries;
                sub.paths += c.sub.paths;
                stack.push((c, false));
            }
            assert_eq!(node.sub, sub, "subtree counts of {:?}", node.edge);
        }
    }

    fn st(i: u32) -> Stored {
        Stored { variant: Variant::new(i.to_string().as_bytes(), &[]), tags: None }
    }

    /// A chain of `depth` one-byte levels, `a`, `aa`, `aaa`, …, each holding an entry,
    /// built bottom-up in O(depth) (inserting would cost O(depth²)).
    fn chain(depth: usize) -> PathIndex {
        let mut node = Node::leaf(b"a");
        node.entries.insert(st(0));
        node.sub = Counts { entries: 1, paths: 1 };
        for level in 1..depth {
            let mut parent = Node::leaf(b"a");
            parent.entries.insert(st(0));
            parent.children = Box::new([node]);
            parent.sub = Counts { entries: level as u32 + 1, paths: level as u32 + 1 };
            node = parent;
        }
        let mut index = PathIndex::default();
        index.root.sub = node.sub;
        index.root.children = Box::new([node]);
        index
    }

    /// A node is paid once per path (twice at most): 64 bytes, the entries' two
    /// shapes sharing 16 (the map's box sits where a null array pointer marks it), and
    /// 8 for the subtree counts that let a purge of any size reply in O(depth).
    #[test]
    fn node_and_record_sizes() {
        assert_eq!(std::mem::size_of::<Node>(), 64);
        assert_eq!(std::mem::size_of::<Stored>(), 40);
    }

    /// Every walk and the drop stay within a 256 KiB stack on a tree 200,000 levels
    /// deep (recursion costs at least 64 bytes per level: 12 MiB here).
    #[test]
    fn deep_trees_are_walked_and_freed_without_recursion() {
        const DEPTH: usize = 200_000;
        let run = std::thread::Builder::new().stack_size(256 * 1024).spawn(|| {
            let mut index = chain(DEPTH);
            check(&index);
            let deep = vec![b'a'; DEPTH];
            let deeper = vec![b'a'; DEPTH + 1];
            assert_eq!(index.insert(&deeper, st(1)), None);
            assert_eq!(index.remove(&deep, &st(0).variant), Some(st(0)));
            // These paths hold no `/`: cover every path starting with the bytes.
            let under = |p: &[u8]| Coverage { exact: None, subtree: Some(p.to_vec()) };
            assert_eq!(index.list(&under(&deep[..10]), None, 3), [&deep[..10], &deep[..11], &deep[..12]]);
            assert_eq!(index.list(&under(&deep[..DEPTH - 2]), Some(&deep[..DEPTH - 1]), 5), [&deeper[..]]);
            let mut seen = 0;
            index.for_each_covered(&Coverage::all(), |_, _| seen += 1);
            assert_eq!(seen, DEPTH);
            check(&index);
            // Purges a long tail (dropping what it detaches), then drops the rest.
            assert_eq!(index.remove_covered(&Coverage::exact(&deep[..DEPTH / 2]), |_| {}), 1);
            assert_eq!(index.remove_covered(&under(&deep[..DEPTH / 2]), |_| {}), DEPTH / 2);
            check(&index);
            drop(index);
            drop(chain(DEPTH));
        });
        run.expect("spawn").join().expect("no stack overflow");
    }

    /// The drain takes a parent's leading leaves together, within its budget, and a
    /// path that has children of its own alone.
    #[test]
    fn runs_of_leaves_leave_together() {
        let mut index = PathIndex::default();
        for i in 0..9 {
            index.insert(format!("/a/{i}").as_bytes(), st(0));
        }
        index.insert(b"/a/5", st(1));
        index.insert(b"/b", st(0));
        index.insert(b"/b/x", st(0));
        index.insert(b"/b/y", st(0));
        let mut moved = index.detach(&Coverage::all());
        let mut take = |budget| {
            let step = moved.take_first_paths(budget);
            check(&moved);
            step.into_iter().map(|(p, e)| (String::from_utf8(p).unwrap_or_default(), e.len())).collect::<Vec<_>>()
        };
        let owned = |v: &[(&str, usize)]| v.iter().map(|(p, n)| (p.to_string(), *n)).collect::<Vec<_>>();
        assert_eq!(take(4), owned(&[("/a/0", 1), ("/a/1", 1), ("/a/2", 1), ("/a/3", 1)]));
        assert_eq!(take(4), owned(&[("/a/4", 1), ("/a/5", 2), ("/a/6", 1)]));
        assert_eq!(take(1), owned(&[("/a/7", 1)]));
        assert_eq!(take(1), owned(&[("/a/8", 1)]));
        assert_eq!(take(9), owned(&[("/b", 1)]));
        assert_eq!(take(9), owned(&[("/b/x", 1), ("/b/y", 1)]));
        assert_eq!(take(9), owned(&[]));
        assert_eq!(moved.entries(), 0);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(500))]

        /// `detach` moves exactly what the coverage covers into a well-formed index of
        /// its own, and `take_first_paths` hands every moved entry back exactly once, in
        /// path order, within its budget whenever it takes more than one path.
        #[test]
        fn detach_then_take_everything(paths in proptest::collection::vec(proptest::sample::select(vec!["/", "/a", "/a/", "/a/b", "/ab", "/a/b/c", "/b", "x/a", "/a//", "/a/c", "/a/d", "/a/e"]), 1..30),
                                       prefix in proptest::sample::select(vec!["/", "/a", "/a/", "/a/b", "x", "/c"]), exact: bool, budget in 1usize..6) {
            let mut index = PathIndex::default();
            let mut model = std::collections::BTreeSet::new();
            for (i, p) in paths.iter().enumerate() {
                let v = (i % 3) as u32;
                index.insert(p.as_bytes(), st(v));
                model.insert((p.to_string(), v));
            }
            let coverage = if exact { Coverage::exact(prefix.as_bytes()) } else { Coverage::prefix(prefix.as_bytes()) };
            let counted = index.count_covered(&coverage);
            let mut moved = index.detach(&coverage);
            proptest::prop_assert_eq!(moved.entries(), counted);
            check(&index);
            check(&moved);
            let covered: std::collections::BTreeSet<(String, u32)> = model.iter().filter(|(p, _)| coverage.covers(p.as_bytes())).cloned().collect();
            proptest::prop_assert_eq!(moved.entries(), covered.len());
            proptest::prop_assert_eq!(index.entries(), model.len() - covered.len());
            let mut taken = std::collections::BTreeSet::new();
            let mut last: Option<Vec<u8>> = None;
            loop {
                let step = moved.take_first_paths(budget);
                if step.is_empty() {
                    break;
                }
                check(&moved);
                let entries: usize = step.iter().map(|(_, e)| e.len()).sum();
                proptest::prop_assert!(step.len() == 1 || entries <= budget, "a run of leaves stays within the budget");
                for (path, batch) in step {
                    proptest::prop_assert!(!batch.is_empty());
                    proptest::prop_assert!(last.as_ref().is_none_or(|l| *l < path), "paths come in byte order");
                    last = Some(path.clone());
                    for stored in batch.iter() {
                        let v: u32 = (0..3).find(|v| st(*v).variant == stored.variant).unwrap_or(99);
                        proptest::prop_assert!(taken.insert((String::from_utf8(path.clone()).unwrap_or_default(), v)), "taken twice");
                    }
                }
            }
            proptest::prop_assert_eq!(taken, covered);
            proptest::prop_assert_eq!(moved.entries(), 0);
        }
    }
}
