//! The bytes on a path-tree edge: up to 22 kept inline (most edges are a path's last
//! segment or the few bytes between two branchings), longer ones in an allocation.
//! Inline, a child's edge sits in the child itself, in the parent's children array:
//! a walk down the tree takes one cache miss per level instead of two, and a node
//! needs no allocation of its own for its edge.

use std::ops::Deref;

const INLINE: usize = 22;

/// 24 bytes; the first byte is readable without leaving them.
#[derive(Clone)]
pub enum Edge {
    Inline { len: u8, bytes: [u8; INLINE] },
    Heap { first: u8, bytes: Box<[u8]> },
}

impl Edge {
    pub fn new(bytes: &[u8]) -> Edge {
        if bytes.len() > INLINE {
            return Edge::Heap { first: bytes[0], bytes: bytes.into() };
        }
        let mut inline = [0; INLINE];
        inline[..bytes.len()].copy_from_slice(bytes);
        // At most INLINE (22) bytes: the length fits.
        Edge::Inline { len: bytes.len() as u8, bytes: inline }
    }

    /// The two slices joined.
    pub fn joined(a: &[u8], b: &[u8]) -> Edge {
        Edge::new(&[a, b].concat())
    }

    /// The first byte (0 for the root's empty edge), without touching an allocation.
    pub fn first(&self) -> u8 {
        match self {
            Edge::Inline { bytes, .. } => bytes[0],
            Edge::Heap { first, .. } => *first,
        }
    }
}

impl Default for Edge {
    fn default() -> Self {
        Edge::Inline { len: 0, bytes: [0; INLINE] }
    }
}

impl Deref for Edge {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match self {
            Edge::Inline { len, bytes } => bytes.get(..usize::from(*len)).unwrap_or_default(),
            Edge::Heap { bytes, .. } => bytes,
        }
    }
}

impl std::fmt::Debug for Edge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", String::from_utf8_lossy(self))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_any_length_and_its_first_byte() {
        assert_eq!(std::mem::size_of::<Edge>(), 24);
        for len in [0, 1, 21, 22, 23, 100, 70_000] {
            let bytes: Vec<u8> = (0..len).map(|i| (i % 251) as u8 + 1).collect();
            let e = Edge::new(&bytes);
            assert_eq!(&e[..], &bytes[..]);
            assert_eq!(e.first(), bytes.first().copied().unwrap_or(0));
            assert_eq!(matches!(e, Edge::Inline { .. }), len <= INLINE);
            assert_eq!(&Edge::joined(&bytes[..len / 2], &bytes[len / 2..])[..], &bytes[..]);
        }
    }
}
