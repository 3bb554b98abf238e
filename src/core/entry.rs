//! The stored form of one cache entry: a versioned header followed by the value,
//! in one plain Redis string (so the data files load without the module).
//!
//! ```text
//! offset size
//!  0      3   magic "RCE"
//!  3      1   layout version (1)
//!  4      4   header length H, u32 little-endian: the value starts at offset H
//!  8      8   stored-at, ms since the Unix epoch, u64 little-endian
//! 16     32   ETag: MD5 of the value, lowercase hex
//! 48      2   tag count, u16 little-endian
//! 50      …   tags, each a u16 little-endian length and its bytes
//!  H      …   the value
//! ```
//! Pure logic; knows nothing of Redis.

use md5::{Digest as _, Md5};
use std::fmt;

const MAGIC: &[u8; 3] = b"RCE";
const VERSION: u8 = 1;
const FIXED_HEADER: usize = 50;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotAnEntry;

impl fmt::Display for NotAnEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "key holds a string that is not an rcache entry")
    }
}

/// A decoded entry, borrowing from the stored bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry<'a> {
    pub stored_at_ms: u64,
    pub etag: &'a [u8],
    pub tags: Vec<&'a [u8]>,
    pub value: &'a [u8],
}

/// Tags must be de-duplicated and each at most `u16::MAX` bytes (argument parsing
/// enforces far smaller limits).
pub fn encode(value: &[u8], stored_at_ms: u64, tags: &[&[u8]]) -> Vec<u8> {
    let header_len = FIXED_HEADER + tags.iter().map(|t| 2 + t.len()).sum::<usize>();
    let mut out = Vec::with_capacity(header_len + value.len());
    out.extend_from_slice(MAGIC);
    out.push(VERSION);
    out.extend_from_slice(&(header_len as u32).to_le_bytes());
    out.extend_from_slice(&stored_at_ms.to_le_bytes());
    out.extend_from_slice(hex::encode(Md5::digest(value)).as_bytes());
    out.extend_from_slice(&(tags.len() as u16).to_le_bytes());
    for tag in tags {
        out.extend_from_slice(&(tag.len() as u16).to_le_bytes());
        out.extend_from_slice(tag);
    }
    out.extend_from_slice(value);
    out
}

fn u16_at(bytes: &[u8], at: usize) -> Option<usize> {
    Some(u16::from_le_bytes(bytes.get(at..at + 2)?.try_into().ok()?) as usize)
}

/// Where the value starts, after checking only the fixed part of the header: the fast
/// path for GET, which replies the value straight from the stored bytes.
pub fn value_offset(bytes: &[u8]) -> Result<usize, NotAnEntry> {
    if bytes.len() < FIXED_HEADER || &bytes[..3] != MAGIC || bytes[3] != VERSION {
        return Err(NotAnEntry);
    }
    let header_len = u32::from_le_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]) as usize;
    if header_len < FIXED_HEADER || header_len > bytes.len() {
        return Err(NotAnEntry);
    }
    Ok(header_len)
}

/// Full decode, checking that the header is exactly consistent.
pub fn decode(bytes: &[u8]) -> Result<Entry<'_>, NotAnEntry> {
    let header_len = value_offset(bytes)?;
    let stored_at_ms = u64::from_le_bytes(bytes[8..16].try_into().map_err(|_| NotAnEntry)?);
    let etag = &bytes[16..48];
    if !etag.iter().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b)) {
        return Err(NotAnEntry);
    }
    let count = u16_at(bytes, 48).ok_or(NotAnEntry)?;
    let mut tags = Vec::with_capacity(count.min(header_len / 2));
    let mut at = FIXED_HEADER;
    for _ in 0..count {
        let len = u16_at(bytes, at).ok_or(NotAnEntry)?;
        let end = at + 2 + len;
        if end > header_len {
            return Err(NotAnEntry);
        }
        tags.push(&bytes[at + 2..end]);
        at = end;
    }
    if at != header_len {
        return Err(NotAnEntry);
    }
    Ok(Entry { stored_at_ms, etag, tags, value: &bytes[header_len..] })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn round_trip() {
        let bytes = encode(b"hello", 1_700_000_000_123, &[b"article:42", b"x"]);
        let e = decode(&bytes).unwrap();
        assert_eq!(e.value, b"hello");
        assert_eq!(e.stored_at_ms, 1_700_000_000_123);
        assert_eq!(e.etag, b"5d41402abc4b2a76b9719d911017c592");
        assert_eq!(e.tags, vec![&b"article:42"[..], b"x"]);
        assert_eq!(value_offset(&bytes), Ok(bytes.len() - 5));
    }

    #[test]
    fn empty_value_and_no_tags() {
        let bytes = encode(b"", 0, &[]);
        assert_eq!(bytes.len(), FIXED_HEADER);
        assert_eq!(decode(&bytes).unwrap().value, b"");
    }

    #[test]
    fn rejects_foreign_strings() {
        assert_eq!(decode(b"hello"), Err(NotAnEntry));
        assert_eq!(decode(b""), Err(NotAnEntry));
        let mut bytes = encode(b"v", 0, &[b"t"]);
        bytes[3] = 2;
        assert_eq!(decode(&bytes), Err(NotAnEntry), "unknown version");
        let mut bytes = encode(b"v", 0, &[b"t"]);
        bytes[48] = 5;
        assert_eq!(decode(&bytes), Err(NotAnEntry), "tag count beyond the header");
        let mut bytes = encode(b"v", 0, &[]);
        bytes[4] = 200;
        assert_eq!(value_offset(&bytes), Err(NotAnEntry), "header longer than the string");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(3000))]

        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..120)) {
            let _ = decode(&bytes);
            let _ = value_offset(&bytes);
        }

        #[test]
        fn mutated_entries_never_panic(value in proptest::collection::vec(any::<u8>(), 0..20), at in 0usize..80, b in any::<u8>()) {
            let mut bytes = encode(&value, 7, &[b"a", b"bb"]);
            let at = at % bytes.len();
            bytes[at] = b;
            let _ = decode(&bytes);
        }

        #[test]
        fn encode_decode(value in proptest::collection::vec(any::<u8>(), 0..64), ts in any::<u64>(), tags in proptest::collection::btree_set(proptest::collection::vec(any::<u8>(), 1..8), 0..5)) {
            let tags: Vec<&[u8]> = tags.iter().map(|t| t.as_slice()).collect();
            let bytes = encode(&value, ts, &tags);
            let e = decode(&bytes).unwrap();
            prop_assert_eq!(e.value, &value[..]);
            prop_assert_eq!(e.stored_at_ms, ts);
            prop_assert_eq!(e.tags, tags);
        }
    }
}
