//! Cache paths: what a valid path is, and which entry paths a purge prefix covers.
//! Pure logic; knows nothing of Redis.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathError {
    Empty,
    TooLong { max: usize },
    ControlChar,
    QuestionMark,
    Brace,
}

impl fmt::Display for PathError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PathError::Empty => write!(f, "path is empty"),
            PathError::TooLong { max } => write!(f, "path is longer than rcache.max-path-len ({max} bytes)"),
            PathError::ControlChar => write!(f, "path contains a control character"),
            PathError::QuestionMark => write!(f, "path contains '?': pass the query string with QUERY"),
            PathError::Brace => {
                write!(f, "path may contain braces only as one non-empty hash tag {{...}}")
            }
        }
    }
}

/// The longest path any command accepts: the maximum of `rcache.max-path-len`.
pub const MAX_PATH_LEN: usize = 65_536;

/// Bytes that need a closer look in a path: control characters, `?`, `{` and `}`.
const SPECIAL: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 256 {
        t[b] = b < 0x20 || b == 0x7f || b == b'?' as usize || b == b'{' as usize || b == b'}' as usize;
        b += 1;
    }
    t
};

/// Checks every path rule but the length limit (which is a setting, see [`validate`]).
pub fn validate_shape(path: &[u8]) -> Result<(), PathError> {
    if path.is_empty() {
        return Err(PathError::Empty);
    }
    // Most paths have no special byte at all: one table lookup per byte decides it.
    if !path.iter().any(|&b| SPECIAL[b as usize]) {
        return Ok(());
    }
    let mut open = None;
    let mut close = None;
    for (i, &b) in path.iter().enumerate() {
        match b {
            0x00..=0x1f | 0x7f => return Err(PathError::ControlChar),
            b'?' => return Err(PathError::QuestionMark),
            b'{' if open.is_none() => open = Some(i),
            b'}' if close.is_none() => close = Some(i),
            b'{' | b'}' => return Err(PathError::Brace),
            _ => {}
        }
    }
    match (open, close) {
        (None, None) => Ok(()),
        (Some(o), Some(c)) if c > o + 1 => Ok(()),
        _ => Err(PathError::Brace),
    }
}

pub fn validate(path: &[u8], max_len: usize) -> Result<(), PathError> {
    validate_shape(path)?;
    if path.len() > max_len {
        return Err(PathError::TooLong { max: max_len });
    }
    Ok(())
}

/// Whether a (valid) path carries its own Redis hash tag.
pub fn has_hash_tag(path: &[u8]) -> bool {
    path.contains(&b'{')
}

/// The set of entry paths a purge prefix covers, in the shape the index can search:
/// the path `exact` itself (if any) plus every path starting with `subtree`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Coverage<'a> {
    pub exact: Option<&'a [u8]>,
    pub subtree: Option<Vec<u8>>,
}

impl<'a> Coverage<'a> {
    /// `PURGE prefix`: one trailing `/` is removed (unless the prefix is `/`); the prefix
    /// then covers itself and every path that continues it with `/`.
    pub fn prefix(prefix: &'a [u8]) -> Self {
        if prefix == b"/" {
            return Coverage { exact: None, subtree: Some(b"/".to_vec()) };
        }
        let base = prefix.strip_suffix(b"/").unwrap_or(prefix);
        let mut subtree = Vec::with_capacity(base.len() + 1);
        subtree.extend_from_slice(base);
        subtree.push(b'/');
        Coverage { exact: Some(base), subtree: Some(subtree) }
    }

    /// Every path (`LIST ""`).
    pub fn all() -> Self {
        Coverage { exact: None, subtree: Some(Vec::new()) }
    }

    /// `PURGE prefix EXACT`: the path itself, byte for byte.
    pub fn exact(path: &'a [u8]) -> Self {
        Coverage { exact: Some(path), subtree: None }
    }

    pub fn covers(&self, path: &[u8]) -> bool {
        self.exact == Some(path) || self.subtree.as_deref().is_some_and(|s| path.starts_with(s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_byte_is_classified() {
        for b in 0..=255u8 {
            let expected = match b {
                0x00..=0x1f | 0x7f => Err(PathError::ControlChar),
                b'?' => Err(PathError::QuestionMark),
                b'{' | b'}' => Err(PathError::Brace),
                _ => Ok(()),
            };
            assert_eq!(validate_shape(&[b'/', b, b'x']), expected, "byte {b:#04x}");
        }
    }

    #[test]
    fn valid_paths() {
        for p in [&b"/"[..], b"/tournament/5/bracket", b"shop.example.com/products/7", b"{shop1}/products/7", b"/a{b}c", b"\x80\xff"] {
            assert_eq!(validate(p, 4096), Ok(()), "{:?}", p);
        }
    }

    #[test]
    fn invalid_paths() {
        let cases: [(&[u8], PathError); 10] = [
            (b"", PathError::Empty),
            (b"/a\nb", PathError::ControlChar),
            (b"/a\x00", PathError::ControlChar),
            (b"/a\x7f", PathError::ControlChar),
            (b"/a?b=1", PathError::QuestionMark),
            (b"/{}", PathError::Brace),
            (b"/{a", PathError::Brace),
            (b"/a}", PathError::Brace),
            (b"/}a{", PathError::Brace),
            (b"/{a}{b}", PathError::Brace),
        ];
        for (p, e) in cases {
            assert_eq!(validate(p, 4096), Err(e), "{:?}", String::from_utf8_lossy(p));
        }
        assert_eq!(validate(b"/abcd", 4), Err(PathError::TooLong { max: 4 }));
        assert_eq!(validate(b"/abc", 4), Ok(()));
    }

    /// The contract's coverage table, row by row.
    #[test]
    fn coverage_table() {
        let rows: [(&[u8], &[&[u8]], &[&[u8]]); 5] = [
            (
                b"/tournament/5",
                &[b"/tournament/5", b"/tournament/5/", b"/tournament/5/bracket", b"/tournament/5/a/b"],
                &[b"/tournament/50", b"/tournament/5x", b"/tournament"],
            ),
            (
                b"/tournament/5/",
                &[b"/tournament/5", b"/tournament/5/", b"/tournament/5/bracket", b"/tournament/5/a/b"],
                &[b"/tournament/50", b"/tournament/5x", b"/tournament"],
            ),
            (b"/", &[b"/", b"/a", b"//", b"/a/b/c"], &[b"shop.example.com/x", b"a/"]),
            (
                b"shop.example.com",
                &[b"shop.example.com", b"shop.example.com/products/7"],
                &[b"shop.example.community/x"],
            ),
            (b"/a//", &[b"/a/", b"/a//x"], &[b"/a/b", b"/a"]),
        ];
        for (prefix, covered, not_covered) in rows {
            let c = Coverage::prefix(prefix);
            for p in covered {
                assert!(c.covers(p), "{:?} should cover {:?}", prefix, p);
            }
            for p in not_covered {
                assert!(!c.covers(p), "{:?} should not cover {:?}", prefix, p);
            }
        }
    }

    #[test]
    fn exact_coverage_is_byte_for_byte() {
        let c = Coverage::exact(b"/a/");
        assert!(c.covers(b"/a/"));
        assert!(!c.covers(b"/a"));
        assert!(!c.covers(b"/a/b"));
    }
}
