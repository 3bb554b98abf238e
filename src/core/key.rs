//! Entry keys: which Redis key holds the entry for (path, query, vary set).
//!
//! Layout: `rcache:{<path>}:<q>:<v>` for a path without braces (the whole path is the
//! hash tag, so the key lives in the path's cluster slot) and `rcache:~<path>:<q>:<v>`
//! for a path that carries its own `{tag}` (the key's first braces are the path's).
//! `<q>` and `<v>` are `-` (none) or 32 lowercase hex digits of MD5; they contain no
//! `:`, so a key parses unambiguously from the right and the mapping is injective.
//! Pure logic; knows nothing of Redis.

use std::sync::Mutex;

use md5::{Digest as _, Md5};
use xxhash_rust::xxh3::xxh3_64;

use crate::core::path;

pub const KEY_PREFIX: &[u8] = b"rcache:";

pub type Digest = [u8; 16];

/// Which of the entries stored at one path: the query string and vary set, hashed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Variant {
    pub query: Option<Digest>,
    pub vary: Option<Digest>,
}

impl Variant {
    pub fn new(query: &[u8], vary: &[(&[u8], &[u8])]) -> Self {
        Variant { query: query_digest(query), vary: vary_digest(vary) }
    }
}

/// MD5 of the query string after one leading `?`; an empty query is no query.
pub fn query_digest(query: &[u8]) -> Option<Digest> {
    let query = query.strip_prefix(b"?").unwrap_or(query);
    (!query.is_empty()).then(|| QUERY_MEMO.digest(query))
}

/// Query strings up to this length are remembered with their MD5.
const MEMO_QUERY_LEN: usize = 48;
const MEMO_SLOTS: usize = 64;

#[derive(Clone, Copy)]
struct MemoSlot {
    len: usize,
    query: [u8; MEMO_QUERY_LEN],
    digest: Digest,
}

/// The MD5 of recently seen short query strings. A cache's hot requests repeat the
/// same few query strings (`page=2`, `lang=en`), and MD5 (about 700 instructions for
/// one block) was the largest single cost of GET after Redis' own key lookup. Direct
/// mapped by a fast hash; a slot answers only for the exact same bytes, so a hit
/// returns exactly what MD5 would, and a miss costs one MD5 as before.
struct QueryMemo(Mutex<[Option<MemoSlot>; MEMO_SLOTS]>);

static QUERY_MEMO: QueryMemo = QueryMemo(Mutex::new([None; MEMO_SLOTS]));

impl QueryMemo {
    fn digest(&self, query: &[u8]) -> Digest {
        let md5 = || Md5::digest(query).into();
        if query.len() > MEMO_QUERY_LEN {
            return md5();
        }
        // Contention (only possible in unit tests: Redis runs commands on one thread)
        // or a poisoned lock: just hash.
        let Ok(mut slots) = self.0.try_lock() else { return md5() };
        let Some(slot) = slots.get_mut(xxh3_64(query) as usize % MEMO_SLOTS) else { return md5() };
        if let Some(hit) = slot.as_ref().filter(|s| s.query.get(..s.len) == Some(query)) {
            return hit.digest;
        }
        let digest: Digest = md5();
        let mut remembered = MemoSlot { len: query.len(), query: [0; MEMO_QUERY_LEN], digest };
        if let Some(dst) = remembered.query.get_mut(..query.len()) {
            dst.copy_from_slice(query);
            *slot = Some(remembered);
        }
        digest
    }
}

/// MD5 of the vary set in canonical form: names lower-cased (ASCII), pairs sorted by
/// (name, value), each pair length-prefixed so that no two sets share an encoding.
pub fn vary_digest(pairs: &[(&[u8], &[u8])]) -> Option<Digest> {
    if pairs.is_empty() {
        return None;
    }
    // Sorted by lower-cased name without copying names, up to 8 pairs without
    // allocating (GET's hot path).
    let mut few: [(&[u8], &[u8]); 8] = [(&[], &[]); 8];
    let mut many = Vec::new();
    let canonical: &mut [(&[u8], &[u8])] = match few.get_mut(..pairs.len()) {
        Some(slots) => {
            slots.copy_from_slice(pairs);
            slots
        }
        None => {
            many.extend_from_slice(pairs);
            &mut many
        }
    };
    canonical.sort_unstable_by(|(n1, v1), (n2, v2)| {
        let (l1, l2) = (n1.iter().map(u8::to_ascii_lowercase), n2.iter().map(u8::to_ascii_lowercase));
        l1.cmp(l2).then_with(|| v1.cmp(v2))
    });
    let mut md5 = Md5::new();
    md5.update((canonical.len() as u64).to_be_bytes());
    for (name, value) in canonical.iter() {
        md5.update((name.len() as u64).to_be_bytes());
        if name.iter().any(u8::is_ascii_uppercase) {
            for chunk in name.chunks(64) {
                let mut lower = [0u8; 64];
                if let Some(lower) = lower.get_mut(..chunk.len()) {
                    lower.copy_from_slice(chunk);
                    lower.make_ascii_lowercase();
                    md5.update(lower);
                }
            }
        } else {
            md5.update(name);
        }
        md5.update((value.len() as u64).to_be_bytes());
        md5.update(value);
    }
    Some(md5.finalize().into())
}

/// The length of the entry key of `path` (`tagged`: it has its own hash tag) and `variant`.
fn entry_key_len(path: &[u8], tagged: bool, variant: &Variant) -> usize {
    let digest_len = |d: &Option<Digest>| if d.is_some() { 32 } else { 1 };
    let braces = if tagged { 1 } else { 2 };
    KEY_PREFIX.len() + braces + path.len() + 2 + digest_len(&variant.query) + digest_len(&variant.vary)
}

/// Writes the entry key into `out`, which is exactly [`entry_key_len`] bytes long.
fn write_entry_key(out: &mut [u8], path: &[u8], tagged: bool, variant: &Variant) {
    let mut at = 0;
    let mut put = |bytes: &[u8]| {
        if let Some(dst) = out.get_mut(at..at + bytes.len()) {
            dst.copy_from_slice(bytes);
        }
        at += bytes.len();
    };
    put(KEY_PREFIX);
    if tagged {
        put(b"~");
        put(path);
    } else {
        put(b"{");
        put(path);
        put(b"}");
    }
    for digest in [&variant.query, &variant.vary] {
        put(b":");
        match digest {
            Some(d) => {
                let mut hex = [0u8; 32];
                // Cannot fail: the buffer is exactly twice the digest's length.
                let _ = hex::encode_to_slice(d, &mut hex);
                put(&hex);
            }
            None => put(b"-"),
        }
    }
}

/// The Redis key of the entry for `path` (already validated) and `variant`.
pub fn entry_key(path: &[u8], variant: &Variant) -> Vec<u8> {
    let tagged = path::has_hash_tag(path);
    let mut key = vec![0; entry_key_len(path, tagged, variant)];
    write_entry_key(&mut key, path, tagged, variant);
    key
}

/// Keys up to this length are built on the stack by [`entry_key_name`].
const INLINE_KEY_LEN: usize = 256;

/// An entry key for one command's use: on the stack unless the path is long.
pub enum KeyName {
    Inline([u8; INLINE_KEY_LEN], usize),
    Heap(Vec<u8>),
}

impl std::ops::Deref for KeyName {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            KeyName::Inline(buf, len) => buf.get(..*len).unwrap_or_default(),
            KeyName::Heap(key) => key,
        }
    }
}

/// [`entry_key`] without a heap allocation for the usual key lengths (GET's hot path).
pub fn entry_key_name(path: &[u8], variant: &Variant) -> KeyName {
    let tagged = path::has_hash_tag(path);
    let len = entry_key_len(path, tagged, variant);
    let mut buf = [0u8; INLINE_KEY_LEN];
    match buf.get_mut(..len) {
        Some(out) => {
            write_entry_key(out, path, tagged, variant);
            KeyName::Inline(buf, len)
        }
        None => KeyName::Heap(entry_key(path, variant)),
    }
}

fn parse_digest(part: &[u8]) -> Option<Option<Digest>> {
    if part == b"-" {
        return Some(None);
    }
    if part.len() != 32 || !part.iter().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b)) {
        return None;
    }
    let mut digest = [0u8; 16];
    hex::decode_to_slice(part, &mut digest).ok()?;
    Some(Some(digest))
}

/// The inverse of [`entry_key`]: `None` for any key `entry_key` cannot produce
/// (ignoring the configurable length limit).
pub fn parse_entry_key(key: &[u8]) -> Option<(&[u8], Variant)> {
    let rest = key.strip_prefix(KEY_PREFIX)?;
    let (rest, vary) = rest.split_at(rest.iter().rposition(|&b| b == b':')?);
    let (rest, query) = rest.split_at(rest.iter().rposition(|&b| b == b':')?);
    let variant = Variant { query: parse_digest(&query[1..])?, vary: parse_digest(&vary[1..])? };
    let path = match rest.first()? {
        b'{' => {
            let path = rest[1..].strip_suffix(b"}")?;
            (!path::has_hash_tag(path)).then_some(path)?
        }
        b'~' => {
            let path = &rest[1..];
            path::has_hash_tag(path).then_some(path)?
        }
        _ => return None,
    };
    path::validate_shape(path).ok()?;
    Some((path, variant))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn readable_and_slot_preserving() {
        assert_eq!(entry_key(b"/tournament/5", &Variant::default()), b"rcache:{/tournament/5}:-:-");
        assert_eq!(entry_key(b"{shop1}/p/7", &Variant::default()), b"rcache:~{shop1}/p/7:-:-");
        let k = entry_key(b"/search", &Variant::new(b"?q=1", &[]));
        assert_eq!(k, format!("rcache:{{/search}}:{}:-", hex::encode(Md5::digest(b"q=1"))).as_bytes());
    }

    #[test]
    fn key_names_on_the_stack_and_on_the_heap() {
        let variant = Variant::new(b"a=1", &[(b"x", b"y")]);
        for path in [&b"/a"[..], b"{t}/b", &[b'/'; 300]] {
            let name = entry_key_name(path, &variant);
            assert_eq!(&*name, entry_key(path, &variant).as_slice());
            assert_eq!(matches!(name, KeyName::Inline(..)), path.len() < 100);
        }
    }

    /// Remembered digests are MD5's, also when many queries share few slots.
    #[test]
    fn query_memo_answers_as_md5() {
        let queries: Vec<Vec<u8>> = (0..500).map(|i| format!("page={}&lang=en", i % 150).into_bytes()).collect();
        for q in queries.iter().chain(queries.iter().rev()) {
            assert_eq!(query_digest(q), Some(Md5::digest(q).into()), "{}", String::from_utf8_lossy(q));
        }
        let long = vec![b'a'; MEMO_QUERY_LEN + 1];
        assert_eq!(query_digest(&long), Some(Md5::digest(&long).into()));
    }

    #[test]
    fn empty_query_is_no_query() {
        assert_eq!(query_digest(b""), None);
        assert_eq!(query_digest(b"?"), None);
        assert_eq!(query_digest(b"?a=1"), query_digest(b"a=1"));
        assert_ne!(query_digest(b"??a=1"), query_digest(b"?a=1"));
    }

    #[test]
    fn vary_canonical_form() {
        let a = vary_digest(&[(b"Accept", b"x"), (b"cookie-lang", b"en")]);
        let b = vary_digest(&[(b"COOKIE-LANG", b"en"), (b"accept", b"x")]);
        assert_eq!(a, b);
        assert_ne!(vary_digest(&[(b"a", b"bc")]), vary_digest(&[(b"ab", b"c")]));
        assert_ne!(vary_digest(&[(b"a", b"1"), (b"a", b"1")]), vary_digest(&[(b"a", b"1")]));
        assert_ne!(vary_digest(&[(b"a", b"X")]), vary_digest(&[(b"a", b"x")]));
        assert_ne!(vary_digest(&[(b"a", b"")]), None);
    }

    /// The digest is the documented encoding's MD5, also past 8 pairs (no longer on the
    /// stack) and for upper-case names longer than the 64-byte lowering buffer: key names
    /// must never change.
    #[test]
    fn vary_digest_is_the_documented_encoding() {
        let reference = |pairs: &[(&[u8], &[u8])]| {
            let mut c: Vec<(Vec<u8>, &[u8])> = pairs.iter().map(|(n, v)| (n.to_ascii_lowercase(), *v)).collect();
            c.sort();
            let mut bytes = (c.len() as u64).to_be_bytes().to_vec();
            for (n, v) in &c {
                bytes.extend_from_slice(&(n.len() as u64).to_be_bytes());
                bytes.extend_from_slice(n);
                bytes.extend_from_slice(&(v.len() as u64).to_be_bytes());
                bytes.extend_from_slice(v);
            }
            Some(<[u8; 16]>::from(Md5::digest(&bytes)))
        };
        let long_name = [b'X'; 150];
        let names: Vec<Vec<u8>> = (0..12).map(|i| format!("Header-{}", 11 - i).into_bytes()).collect();
        let twelve: Vec<(&[u8], &[u8])> = names.iter().map(|n| (n.as_slice(), &b"v"[..])).collect();
        for pairs in [&[(&b"accept-encoding"[..], &b"gzip"[..])][..], &[(&long_name[..], b"v"), (b"a", b"")], &twelve[..8], &twelve] {
            assert_eq!(vary_digest(pairs), reference(pairs));
        }
    }

    /// `{/t/5}` (a path that is one hash tag) and `/t/5` must not share a key.
    #[test]
    fn tagged_and_untagged_paths_do_not_collide() {
        assert_ne!(entry_key(b"{/t/5}", &Variant::default()), entry_key(b"/t/5", &Variant::default()));
    }

    #[test]
    fn parse_rejects_foreign_keys() {
        for k in [&b"rcache:"[..], b"rcache:{/a}", b"rcache:{/a}:-", b"rcache:/a:-:-", b"rcache:{/a}:x:-", b"rcache:~/a:-:-", b"rcache:{{a}}:-:-", b"rcache:{/a?}:-:-", b"other:{/a}:-:-", b"rcache:{/a}:-:-:-"] {
            assert_eq!(parse_entry_key(k), None, "{}", String::from_utf8_lossy(k));
        }
    }

    fn arb_path() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            proptest::collection::vec(prop_oneof![Just(b'/'), Just(b':'), Just(b'a'), Just(b'-'), 0x80u8..=0xff], 1..12),
            (proptest::collection::vec(b'a'..=b'c', 1..4), proptest::collection::vec(b'/'..=b':', 0..6))
                .prop_map(|(tag, rest)| [b"{".as_slice(), &tag, b"}", &rest].concat()),
        ]
    }

    fn arb_pairs() -> impl Strategy<Value = Vec<(Vec<u8>, Vec<u8>)>> {
        proptest::collection::vec(
            (proptest::collection::vec(prop_oneof![Just(b'a'), Just(b'A'), Just(b'b')], 1..3), proptest::collection::vec(any::<u8>(), 0..3)),
            0..4,
        )
    }

    fn refs(pairs: &[(Vec<u8>, Vec<u8>)]) -> Vec<(&[u8], &[u8])> {
        pairs.iter().map(|(n, v)| (n.as_slice(), v.as_slice())).collect()
    }

    fn canonical(pairs: &[(Vec<u8>, Vec<u8>)]) -> Vec<(Vec<u8>, Vec<u8>)> {
        let mut c: Vec<_> = pairs.iter().map(|(n, v)| (n.to_ascii_lowercase(), v.clone())).collect();
        c.sort();
        c
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn key_round_trips(path in arb_path(), q in proptest::collection::vec(any::<u8>(), 0..4), pairs in arb_pairs()) {
            prop_assume!(path::validate_shape(&path).is_ok());
            let variant = Variant::new(&q, &refs(&pairs));
            let key = entry_key(&path, &variant);
            prop_assert_eq!(parse_entry_key(&key), Some((path.as_slice(), variant)));
        }

        #[test]
        fn vary_order_does_not_matter(pairs in arb_pairs(), seed in any::<u64>()) {
            let mut shuffled = pairs.clone();
            let n = shuffled.len();
            for i in 0..n { shuffled.swap(i, (seed as usize).wrapping_add(i * 7) % n); }
            prop_assert_eq!(vary_digest(&refs(&pairs)), vary_digest(&refs(&shuffled)));
        }

        /// Different canonical vary sets give different digests (for these small inputs
        /// a collision would mean the encoding is ambiguous, not bad luck with MD5).
        #[test]
        fn vary_digest_is_injective(a in arb_pairs(), b in arb_pairs()) {
            prop_assert_eq!(canonical(&a) == canonical(&b), vary_digest(&refs(&a)) == vary_digest(&refs(&b)));
        }

        #[test]
        fn keys_are_injective(p1 in arb_path(), p2 in arb_path(), q1 in proptest::collection::vec(b'a'..=b'b', 0..2), q2 in proptest::collection::vec(b'a'..=b'b', 0..2)) {
            prop_assume!(path::validate_shape(&p1).is_ok() && path::validate_shape(&p2).is_ok());
            let (v1, v2) = (Variant::new(&q1, &[]), Variant::new(&q2, &[]));
            prop_assert_eq!(p1 == p2 && v1 == v2, entry_key(&p1, &v1) == entry_key(&p2, &v2));
        }
    }
}
