//! The stored form of one cache entry: a versioned header followed by the value,
//! in one plain Redis string (so the data files load without the module).
//!
//! Layout version 2 (written since v3 of the contract):
//! ```text
//! offset size
//!  0      3   magic "RCE"
//!  3      1   layout version (2)
//!  4      4   header length H, u32 little-endian: the value starts at offset H
//!  8      8   stored-at, ms since the Unix epoch, u64 LE
//! 16      8   fresh-until, ms since the Unix epoch, u64 LE; 0 = no fresh lifetime
//! 24      4   grace, seconds, u32 LE
//! 28      2   ETag length E, u16 LE
//! 30      2   tag count, u16 LE
//! 32      E   ETag bytes
//!  …      …   tags, each a u16 LE length and its bytes
//!  …      …   zero bytes, only to make the whole entry at least 45 bytes long
//!  H      …   the value
//! ```
//! Layout version 1 (still read): magic, version 1, H, stored-at, a 32-byte MD5 hex
//! ETag at 16, the tag count at 48, tags from 50. A v1 entry is fresh until its key
//! expires and has no grace.
//!
//! Pure logic; knows nothing of Redis.

use std::fmt;
use std::ops::Range;

const MAGIC: &[u8; 3] = b"RCE";
const VERSION: u8 = 2;
const FIXED_HEADER: usize = 32;
const V1_FIXED_HEADER: usize = 50;
/// Where fresh-until sits in a v2 entry: a soft purge rewrites just these 8 bytes.
pub const FRESH_UNTIL_AT: usize = 16;
/// Redis keeps strings of up to 44 bytes in a shared encoding that reading in place
/// would rewrite (and touch): every stored entry is longer, its header zero-padded.
pub const MIN_STORED_LEN: usize = 45;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotAnEntry;

impl fmt::Display for NotAnEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "key holds a string that is not an rcache entry")
    }
}

/// When an entry was stored and how long it stays fresh and then stale.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Lifetime {
    pub stored_at_ms: u64,
    /// End of the fresh phase; 0: fresh until purged (or, for v1, until the key expires).
    pub fresh_until_ms: u64,
    pub grace_s: u32,
}

impl Lifetime {
    /// Milliseconds of freshness left at `now_ms` (at least 1 while fresh), when the
    /// entry has a fresh lifetime of its own. Saturating: the times are read from bytes
    /// anyone with plain SET or RESTORE can write.
    pub fn fresh_left_ms(&self, now_ms: i64) -> Option<i64> {
        (self.fresh_until_ms > 0).then(|| i64::try_from(self.fresh_until_ms).unwrap_or(i64::MAX).saturating_sub(now_ms).max(1))
    }

    /// Milliseconds since the entry was stored (0 for a time in the future).
    pub fn age_ms(&self, now_ms: i64) -> i64 {
        now_ms.saturating_sub(i64::try_from(self.stored_at_ms).unwrap_or(i64::MAX)).max(0)
    }
}

/// The fixed part of an entry's header: enough for GET and LOOKUP, without the tags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub version: u8,
    pub lifetime: Lifetime,
    pub etag: Range<usize>,
    /// Where the value starts.
    pub value_at: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Fresh,
    Stale,
}

impl Header {
    /// Fresh up to and including `fresh_until`, as Redis keeps a key up to and
    /// including its expiry time: with no grace, the entry is stale exactly when its
    /// key is expired.
    pub fn state(&self, now_ms: i64) -> State {
        let until = self.lifetime.fresh_until_ms;
        if until == 0 || (now_ms >= 0 && (now_ms as u64) <= until) {
            State::Fresh
        } else {
            State::Stale
        }
    }
}

/// A decoded entry, borrowing from the stored bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry<'a> {
    pub lifetime: Lifetime,
    pub etag: &'a [u8],
    pub tags: Vec<&'a [u8]>,
    pub value: &'a [u8],
}

/// The ETag the module computes when SET gives none: XXH3-128 of the value, 32
/// lowercase hex digits. Strong (128 bits) and about 20x cheaper than MD5 per KB.
pub fn computed_etag(value: &[u8]) -> [u8; 32] {
    let mut hex = [0u8; 32];
    // Cannot fail: the buffer is exactly twice the digest's length.
    let _ = hex::encode_to_slice(xxhash_rust::xxh3::xxh3_128(value).to_be_bytes(), &mut hex);
    hex
}

/// The length of an entry in the current layout.
pub fn encoded_len(value_len: usize, etag: &[u8], tags: &[&[u8]]) -> usize {
    header_len(value_len, etag, tags) + value_len
}

/// The header's length, zero padding included (see [`MIN_STORED_LEN`]).
fn header_len(value_len: usize, etag: &[u8], tags: &[&[u8]]) -> usize {
    let used = FIXED_HEADER + etag.len() + tags.iter().map(|t| 2 + t.len()).sum::<usize>();
    used + MIN_STORED_LEN.saturating_sub(used + value_len)
}

/// Writes an entry in the current layout into `out`, which is exactly
/// [`encoded_len`] bytes long (SET writes straight into the Redis string this way).
/// Tags must be de-duplicated, the ETag and each tag at most `u16::MAX` bytes
/// (argument parsing enforces far smaller limits).
pub fn encode_into(out: &mut [u8], value: &[u8], lifetime: Lifetime, etag: &[u8], tags: &[&[u8]]) {
    let mut at = 0;
    let mut put = |bytes: &[u8]| {
        if let Some(dst) = out.get_mut(at..at + bytes.len()) {
            dst.copy_from_slice(bytes);
        }
        at += bytes.len();
    };
    put(MAGIC);
    put(&[VERSION]);
    let header = header_len(value.len(), etag, tags);
    put(&(header as u32).to_le_bytes());
    put(&lifetime.stored_at_ms.to_le_bytes());
    put(&lifetime.fresh_until_ms.to_le_bytes());
    put(&lifetime.grace_s.to_le_bytes());
    put(&(etag.len() as u16).to_le_bytes());
    put(&(tags.len() as u16).to_le_bytes());
    put(etag);
    for tag in tags {
        put(&(tag.len() as u16).to_le_bytes());
        put(tag);
    }
    // Written out: `out` may hold an older entry's bytes (SET rewrites in place).
    let used = FIXED_HEADER + etag.len() + tags.iter().map(|t| 2 + t.len()).sum::<usize>();
    put(&[0; MIN_STORED_LEN][..header.saturating_sub(used).min(MIN_STORED_LEN)]);
    put(value);
}

/// [`encode_into`] a new buffer (tests: the module writes into Redis' string).
#[cfg(test)]
pub fn encode(value: &[u8], lifetime: Lifetime, etag: &[u8], tags: &[&[u8]]) -> Vec<u8> {
    let mut out = vec![0; encoded_len(value.len(), etag, tags)];
    encode_into(&mut out, value, lifetime, etag, tags);
    out
}

fn u16_at(bytes: &[u8], at: usize) -> Option<usize> {
    Some(u16::from_le_bytes(bytes.get(at..at + 2)?.try_into().ok()?) as usize)
}

fn u32_at(bytes: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(bytes.get(at..at + 4)?.try_into().ok()?))
}

fn u64_at(bytes: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(bytes.get(at..at + 8)?.try_into().ok()?))
}

/// Checks and reads the fixed part of the header (not the tags): GET's and LOOKUP's
/// fast path, which then reply the value straight from the stored bytes.
pub fn header(bytes: &[u8]) -> Result<Header, NotAnEntry> {
    if bytes.get(..3) != Some(MAGIC) {
        return Err(NotAnEntry);
    }
    let version = *bytes.get(3).ok_or(NotAnEntry)?;
    let fixed = match version {
        1 => V1_FIXED_HEADER,
        VERSION => FIXED_HEADER,
        _ => return Err(NotAnEntry),
    };
    let value_at = u32_at(bytes, 4).ok_or(NotAnEntry)? as usize;
    if bytes.len() < fixed || value_at < fixed || value_at > bytes.len() {
        return Err(NotAnEntry);
    }
    let stored_at_ms = u64_at(bytes, 8).ok_or(NotAnEntry)?;
    if version == 1 {
        let lifetime = Lifetime { stored_at_ms, fresh_until_ms: 0, grace_s: 0 };
        return Ok(Header { version, lifetime, etag: 16..48, value_at });
    }
    let fresh_until_ms = u64_at(bytes, FRESH_UNTIL_AT).ok_or(NotAnEntry)?;
    let grace_s = u32_at(bytes, 24).ok_or(NotAnEntry)?;
    let etag_len = u16_at(bytes, 28).ok_or(NotAnEntry)?;
    if FIXED_HEADER + etag_len > value_at {
        return Err(NotAnEntry);
    }
    let lifetime = Lifetime { stored_at_ms, fresh_until_ms, grace_s };
    Ok(Header { version, lifetime, etag: FIXED_HEADER..FIXED_HEADER + etag_len, value_at })
}

/// Full decode, checking that the header is exactly consistent.
pub fn decode(bytes: &[u8]) -> Result<Entry<'_>, NotAnEntry> {
    let h = header(bytes)?;
    let (count_at, mut at) = if h.version == 1 { (48, V1_FIXED_HEADER) } else { (30, h.etag.end) };
    let etag = &bytes[h.etag.clone()];
    if h.version == 1 && !etag.iter().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b)) {
        return Err(NotAnEntry);
    }
    let count = u16_at(bytes, count_at).ok_or(NotAnEntry)?;
    let mut tags = Vec::with_capacity(count.min(h.value_at / 2));
    for _ in 0..count {
        // A tag is never empty: zeros here are padding, not tags.
        let len = u16_at(bytes, at).filter(|&n| n > 0).ok_or(NotAnEntry)?;
        let end = at + 2 + len;
        if end > h.value_at {
            return Err(NotAnEntry);
        }
        tags.push(&bytes[at + 2..end]);
        at = end;
    }
    // v2 may pad its header with zeros (see MIN_STORED_LEN); v1 never does.
    let padding = &bytes[at.min(h.value_at)..h.value_at];
    if at > h.value_at || (h.version == 1 && !padding.is_empty()) || padding.iter().any(|&b| b != 0) {
        return Err(NotAnEntry);
    }
    Ok(Entry { lifetime: h.lifetime, etag, tags, value: &bytes[h.value_at..] })
}

/// The fresh lifetime after JITTER: shortened by `random % (percent of ttl + 1)`,
/// so uniformly by up to `percent` percent, and never below 1 ms.
pub fn jittered_ttl(ttl_ms: i64, percent: i64, random: u64) -> i64 {
    let max_cut = (i128::from(ttl_ms) * i128::from(percent.clamp(0, 100)) / 100) as u64;
    let cut = if max_cut == 0 { 0 } else { random % (max_cut + 1) };
    (ttl_ms - cut as i64).max(1)
}

/// The fresh-until a soft purge at `now_ms` writes: the entry is stale from `now_ms` on.
pub fn stale_since(now_ms: i64) -> u64 {
    // 0 means "no fresh lifetime"; 1 ms after the epoch is stale just the same.
    u64::try_from(now_ms - 1).unwrap_or(0).max(1)
}

/// What a soft purge does to one entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Soften {
    /// Already stale: it keeps its end of grace and is not counted.
    AlreadyStale,
    /// Fresh without grace: removed.
    Remove,
    /// Fresh with grace: stale from now, its key expiring at `expire_at_ms`.
    Stale { expire_at_ms: i64 },
}

/// A soft purge at `now_ms` of an entry whose key expires at `expire_at_ms` (if set).
/// Never lengthens the entry's life.
pub fn soften(h: &Header, now_ms: i64, expire_at_ms: Option<i64>) -> Soften {
    if h.state(now_ms) == State::Stale {
        return Soften::AlreadyStale;
    }
    let grace_ms = i64::from(h.lifetime.grace_s) * 1000;
    // A v1 entry has no room for fresh-until: it is removed, as with grace 0.
    if grace_ms == 0 || h.version == 1 {
        return Soften::Remove;
    }
    let end = now_ms.saturating_add(grace_ms);
    Soften::Stale { expire_at_ms: expire_at_ms.map_or(end, |e| e.min(end)) }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    const LIFE: Lifetime = Lifetime { stored_at_ms: 1_700_000_000_123, fresh_until_ms: 1_700_000_060_123, grace_s: 30 };

    /// An entry in layout v1, byte for byte as the v1 module wrote it.
    pub fn encode_v1(value: &[u8], stored_at_ms: u64, md5_hex: &[u8; 32], tags: &[&[u8]]) -> Vec<u8> {
        let header_len = V1_FIXED_HEADER + tags.iter().map(|t| 2 + t.len()).sum::<usize>();
        let mut out = b"RCE\x01".to_vec();
        out.extend_from_slice(&(header_len as u32).to_le_bytes());
        out.extend_from_slice(&stored_at_ms.to_le_bytes());
        out.extend_from_slice(md5_hex);
        out.extend_from_slice(&(tags.len() as u16).to_le_bytes());
        for tag in tags {
            out.extend_from_slice(&(tag.len() as u16).to_le_bytes());
            out.extend_from_slice(tag);
        }
        out.extend_from_slice(value);
        out
    }

    #[test]
    fn times_from_any_bytes_saturate() {
        let life = |stored_at_ms, fresh_until_ms| Lifetime { stored_at_ms, fresh_until_ms, grace_s: 0 };
        assert_eq!(life(1_000, 5_000).fresh_left_ms(2_000), Some(3_000));
        assert_eq!(life(1_000, 5_000).fresh_left_ms(5_000), Some(1));
        assert_eq!(life(1_000, 0).fresh_left_ms(2_000), None);
        assert_eq!(life(1_000, 5_000).age_ms(2_000), 1_000);
        assert_eq!(life(3_000, 5_000).age_ms(2_000), 0);
        // Written by hand: past i64::MAX, which a plain subtraction would overflow.
        assert_eq!(life(u64::MAX, 1 << 63).fresh_left_ms(2_000), Some(i64::MAX - 2_000));
        assert_eq!(life(u64::MAX, u64::MAX).age_ms(2_000), 0);
        assert_eq!(life(1 << 63, 0).age_ms(i64::MAX), 0);
    }

    #[test]
    fn round_trip() {
        let etag = computed_etag(b"hello");
        let bytes = encode(b"hello", LIFE, &etag, &[b"article:42", b"x"]);
        let e = decode(&bytes).unwrap();
        assert_eq!(e.value, b"hello");
        assert_eq!(e.lifetime, LIFE);
        assert_eq!(e.etag, etag);
        assert_eq!(e.tags, vec![&b"article:42"[..], b"x"]);
        let h = header(&bytes).unwrap();
        assert_eq!(h.value_at, bytes.len() - 5);
        assert_eq!(&bytes[h.etag], etag);
    }

    #[test]
    fn short_entries_are_padded_past_redis_shared_encoding() {
        let bytes = encode(b"", Lifetime::default(), b"e", &[]);
        assert_eq!(bytes.len(), MIN_STORED_LEN);
        assert_eq!(decode(&bytes).unwrap().value, b"");
        assert_eq!(encode(b"0123456789ab", LIFE, b"e", &[]).len(), MIN_STORED_LEN, "no padding needed");
        assert_eq!(decode(&encode(b"0", LIFE, b"e", &[b"t"])).unwrap().tags, vec![&b"t"[..]]);
        let mut bytes = encode(b"v", LIFE, b"e", &[]);
        bytes[40] = 1;
        assert_eq!(decode(&bytes), Err(NotAnEntry), "padding is zeros");
        assert_eq!(encode(b"", LIFE, b"", &[]).len(), encoded_len(0, b"", &[]));
    }

    #[test]
    fn encoded_len_is_exact() {
        let bytes = encode(b"hello", LIFE, b"etag", &[b"a", b"bc"]);
        assert_eq!(bytes.len(), encoded_len(5, b"etag", &[b"a", b"bc"]));
        assert_eq!(&bytes[bytes.len() - 5..], b"hello");
    }

    #[test]
    fn computed_etag_is_xxh3_128_hex() {
        assert_eq!(&computed_etag(b""), b"99aa06d3014798d86001c324468d497f");
        assert_ne!(computed_etag(b"a"), computed_etag(b"b"));
    }

    #[test]
    fn reads_layout_v1() {
        let bytes = encode_v1(b"old", 42, b"5d41402abc4b2a76b9719d911017c592", &[b"t"]);
        let e = decode(&bytes).unwrap();
        assert_eq!((e.value, e.etag, e.tags.clone()), (&b"old"[..], &b"5d41402abc4b2a76b9719d911017c592"[..], vec![&b"t"[..]]));
        assert_eq!(e.lifetime, Lifetime { stored_at_ms: 42, fresh_until_ms: 0, grace_s: 0 });
        assert_eq!(header(&bytes).unwrap().state(i64::MAX), State::Fresh);
    }

    #[test]
    fn freshness_and_soft_purge() {
        let bytes = encode(b"v", LIFE, b"e", &[]);
        let h = header(&bytes).unwrap();
        let until = LIFE.fresh_until_ms as i64;
        assert_eq!(h.state(until), State::Fresh);
        assert_eq!(h.state(until + 1), State::Stale);
        let mut patched = bytes.clone();
        patched[FRESH_UNTIL_AT..FRESH_UNTIL_AT + 8].copy_from_slice(&stale_since(until - 10).to_le_bytes());
        assert_eq!(header(&patched).unwrap().state(until - 10), State::Stale, "stale from the moment of the soft purge");
        let expire = until + 30_000;
        assert_eq!(soften(&h, until - 10_000, Some(expire)), Soften::Stale { expire_at_ms: until + 20_000 });
        assert_eq!(soften(&h, until + 1, Some(expire)), Soften::AlreadyStale, "a stale entry keeps its end of grace");
        let no_grace = encode(b"v", Lifetime { grace_s: 0, ..LIFE }, b"e", &[]);
        assert_eq!(soften(&header(&no_grace).unwrap(), until - 1, None), Soften::Remove);
        let forever = encode(b"v", Lifetime { fresh_until_ms: 0, ..LIFE }, b"e", &[]);
        assert_eq!(soften(&header(&forever).unwrap(), 5, None), Soften::Stale { expire_at_ms: 30_005 });
    }

    #[test]
    fn jitter_stays_within_its_percent() {
        assert_eq!(jittered_ttl(1000, 0, 12345), 1000);
        assert_eq!(jittered_ttl(1000, 10, 0), 1000);
        assert_eq!(jittered_ttl(1000, 10, 100), 900);
        assert_eq!(jittered_ttl(1000, 10, 101), 1000);
        assert_eq!(jittered_ttl(1000, 100, 1000), 1, "never below 1 ms");
        for r in 0..5000u64 {
            let t = jittered_ttl(60_000, 25, r.wrapping_mul(0x9e37_79b9_7f4a_7c15));
            assert!((45_000..=60_000).contains(&t));
        }
    }

    #[test]
    fn rejects_foreign_strings() {
        assert_eq!(decode(b"hello"), Err(NotAnEntry));
        assert_eq!(decode(b""), Err(NotAnEntry));
        let mut bytes = encode(b"v", LIFE, b"e", &[b"t"]);
        bytes[3] = 3;
        assert_eq!(decode(&bytes), Err(NotAnEntry), "unknown version");
        let mut bytes = encode(b"v", LIFE, b"e", &[b"t"]);
        bytes[30] = 5;
        assert_eq!(decode(&bytes), Err(NotAnEntry), "tag count beyond the header");
        let mut bytes = encode(b"v", LIFE, b"e", &[]);
        bytes[28] = 200;
        assert_eq!(header(&bytes), Err(NotAnEntry), "ETag beyond the header");
        let mut bytes = encode(b"v", LIFE, b"e", &[]);
        bytes[4] = 200;
        assert_eq!(header(&bytes), Err(NotAnEntry), "header longer than the string");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(3000))]

        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..120)) {
            let _ = decode(&bytes);
            let _ = header(&bytes);
        }

        #[test]
        fn mutated_entries_never_panic(value in proptest::collection::vec(any::<u8>(), 0..20), at in 0usize..80, b in any::<u8>()) {
            let mut bytes = encode(&value, LIFE, b"etag", &[b"a", b"bb"]);
            let at = at % bytes.len();
            bytes[at] = b;
            let _ = decode(&bytes);
        }

        #[test]
        fn encode_decode(value in proptest::collection::vec(any::<u8>(), 0..64), ts in any::<u64>(), until in any::<u64>(), grace in any::<u32>(),
                         etag in proptest::collection::vec(any::<u8>(), 0..40),
                         tags in proptest::collection::btree_set(proptest::collection::vec(any::<u8>(), 1..8), 0..5)) {
            let tags: Vec<&[u8]> = tags.iter().map(|t| t.as_slice()).collect();
            let life = Lifetime { stored_at_ms: ts, fresh_until_ms: until, grace_s: grace };
            let bytes = encode(&value, life, &etag, &tags);
            let e = decode(&bytes).unwrap();
            prop_assert_eq!(e.value, &value[..]);
            prop_assert_eq!(e.lifetime, life);
            prop_assert_eq!(e.etag, &etag[..]);
            prop_assert_eq!(e.tags, tags);
        }
    }
}
