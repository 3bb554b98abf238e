//! Redis Cluster, the pure part: which slot a path lives in, the messages primaries
//! exchange over the cluster bus, and the table of fanned-out requests waiting for
//! their answers. Knows nothing of Redis; the glue is `server::cluster`.
//!
//! The bus reaches replicas too, never the sender, and silently drops messages on a
//! broken link. So every request carries an id and a deadline, every answer names
//! the request it answers, a duplicate or late message changes nothing, and a
//! missing answer ends at the deadline.

use std::collections::HashMap;

use crate::core::path;

// ---- Slots ----

/// CRC16-CCITT (XMODEM), the checksum Redis Cluster hashes keys with (`crc16.c`).
pub fn crc16(bytes: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &b in bytes {
        crc ^= u16::from(b) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 { (crc << 1) ^ 0x1021 } else { crc << 1 };
        }
    }
    crc
}

pub const SLOTS: u16 = 16384;

/// The cluster slot of a key, as Redis' `keyHashSlot`: the bytes between the first
/// `{` and the first `}` after it when there are any, else the whole key.
pub fn key_hash_slot(key: &[u8]) -> u16 {
    crc16(hash_tag(key).unwrap_or(key)) & (SLOTS - 1)
}

/// The hash tag of a key: the bytes between its first `{` and the first `}` after it,
/// when there are any.
pub fn hash_tag(key: &[u8]) -> Option<&[u8]> {
    key.iter().position(|&b| b == b'{').and_then(|open| {
        let rest = &key[open + 1..];
        rest.iter().position(|&b| b == b'}').filter(|&close| close > 0).map(|close| &rest[..close])
    })
}

/// Where the entries a prefix covers can live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// All in this one slot: the prefix carries a hash tag, and every path it covers
    /// starts with the prefix, so it carries the same tag (and its key, that slot).
    OneSlot(u16),
    /// Anywhere: each covered path is its own hash tag.
    AllSlots,
}

pub fn prefix_scope(prefix: &[u8]) -> Scope {
    if path::has_hash_tag(prefix) {
        Scope::OneSlot(key_hash_slot(prefix))
    } else {
        Scope::AllSlots
    }
}

/// The slots this node serves as a primary, from its line in `CLUSTER NODES`.
#[derive(Clone, PartialEq, Eq)]
pub struct SlotSet([u64; SLOTS as usize / 64]);

impl Default for SlotSet {
    fn default() -> Self {
        SlotSet([0; SLOTS as usize / 64])
    }
}

impl std::fmt::Debug for SlotSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SlotSet({} slots)", self.0.iter().map(|w| w.count_ones()).sum::<u32>())
    }
}

impl SlotSet {
    pub fn contains(&self, slot: u16) -> bool {
        let slot = usize::from(slot % SLOTS);
        self.0[slot / 64] & (1 << (slot % 64)) != 0
    }

    pub fn iter(&self) -> impl Iterator<Item = u16> + '_ {
        (0..SLOTS).filter(|&s| self.contains(s))
    }

    pub fn is_empty(&self) -> bool {
        self.0.iter().all(|&w| w == 0)
    }

    pub fn union(&self, other: &SlotSet) -> SlotSet {
        let mut out = self.clone();
        out.0.iter_mut().zip(other.0.iter()).for_each(|(a, b)| *a |= b);
        out
    }

    /// The slots in `self` and not in `other`.
    pub fn minus(&self, other: &SlotSet) -> SlotSet {
        let mut out = self.clone();
        out.0.iter_mut().zip(other.0.iter()).for_each(|(a, b)| *a &= !b);
        out
    }

    fn insert(&mut self, slot: u16) {
        let slot = usize::from(slot % SLOTS);
        self.0[slot / 64] |= 1 << (slot % 64);
    }

    /// Parses `CLUSTER NODES`: the `myself` line's slot ranges (`0-5460`, `5461`).
    /// A slot this node is importing (`[93-<-id]`) is not its own yet; one it is
    /// migrating (`[93->-id]`) still is, and is listed in a range too.
    pub fn from_cluster_nodes(text: &[u8]) -> SlotSet {
        let mut set = SlotSet::default();
        for field in myself_slot_fields(text).filter(|f| !f.starts_with(b"[")) {
            let mut ends = field.splitn(2, |&b| b == b'-');
            let (Some(lo), hi) = (ends.next().and_then(parse_slot), ends.next()) else { continue };
            let hi = match hi {
                Some(h) => match parse_slot(h) {
                    Some(h) => h,
                    None => continue,
                },
                None => lo,
            };
            for s in lo..=hi {
                set.insert(s);
            }
        }
        set
    }

    /// The slots this node is migrating to another (`[93->-id]` on its `myself` line):
    /// still its own, but their keys are on their way out.
    pub fn migrating_from_cluster_nodes(text: &[u8]) -> SlotSet {
        Self::marked(text, b"->-")
    }

    /// The slots this node is importing from another (`[93-<-id]`): keys are arriving.
    pub fn importing_from_cluster_nodes(text: &[u8]) -> SlotSet {
        Self::marked(text, b"-<-")
    }

    fn marked(text: &[u8], arrow: &[u8]) -> SlotSet {
        let mut set = SlotSet::default();
        for field in myself_slot_fields(text) {
            let Some(inner) = field.strip_prefix(b"[") else { continue };
            let Some(at) = inner.windows(arrow.len()).position(|w| w == arrow) else { continue };
            if let Some(slot) = parse_slot(&inner[..at]) {
                set.insert(slot);
            }
        }
        set
    }
}

fn parse_slot(b: &[u8]) -> Option<u16> {
    std::str::from_utf8(b).ok().and_then(|s| s.trim().parse::<u16>().ok()).filter(|&n| n < SLOTS)
}

/// The slot fields (from the 9th on) of the `myself` line of `CLUSTER NODES`.
fn myself_slot_fields(text: &[u8]) -> impl Iterator<Item = &[u8]> {
    let line = text
        .split(|&b| b == b'\n')
        .find(|l| l.split(|&b| b == b' ').nth(2).is_some_and(|flags| flags.split(|&b| b == b',').any(|f| f == b"myself")));
    line.into_iter().flat_map(|l| l.split(|&b| b == b' ').skip(8))
}

// ---- Messages ----

/// A cluster node's id, as Redis names it (40 hex characters, not NUL-terminated).
pub type NodeId = [u8; 40];

/// What a primary is asked to purge among its own entries.
pub use crate::core::purge::Target;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Would `user` be allowed to remove every entry `target` covers here? Touches nothing.
    Check { user: Vec<u8>, target: Target },
    /// Remove (or, `soft`, soft-purge) what `target` covers here, as `user`.
    Purge { user: Vec<u8>, soft: bool, target: Target },
    /// The first `count` covered paths here, strictly after `after`.
    List { prefix: Vec<u8>, after: Option<Vec<u8>>, count: u32 },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub id: u64,
    /// When the command was taken, ms since the epoch (the sender's clock): entries
    /// stored before it are the ones a purge covers.
    pub issued_ms: u64,
    /// Ms since the epoch (the sender's clock) after which the sender no longer waits.
    pub deadline_ms: u64,
    pub db: i32,
    pub op: Op,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    Allowed,
    Count(u64),
    Paths(Vec<Vec<u8>>),
    /// An error reply to pass on (NOPERM ...).
    Error(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    Request(Request),
    Reply { id: u64, answer: Answer },
}

/// The bus message type rcache registers (one type; the kind byte says the rest).
pub const MESSAGE_TYPE: u8 = 0xC5;
const VERSION: u8 = 1;

// Kind bytes: the contract's operations, so a log or a capture reads plainly.
const PURGE: u8 = 1;
const SOFTPURGE: u8 = 2;
const PURGETAG: u8 = 3;
const SOFTPURGETAG: u8 = 4;
const LIST: u8 = 5;
const CHECK: u8 = 6;
const ANSWER: u8 = 7;

const ALLOWED: u8 = 0;
const COUNT: u8 = 1;
const PATHS: u8 = 2;
const ERROR: u8 = 3;

struct Writer(Vec<u8>);

impl Writer {
    fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn bytes(&mut self, b: &[u8]) {
        // Arguments are bounded far below 4 GiB by Redis' proto-max-bulk-len.
        self.u32(u32::try_from(b.len()).unwrap_or(u32::MAX));
        self.0.extend_from_slice(b);
    }
    fn list(&mut self, items: &[Vec<u8>]) {
        self.u32(u32::try_from(items.len()).unwrap_or(u32::MAX));
        items.iter().for_each(|i| self.bytes(i));
    }
}

fn purge_kind(soft: bool, target: &Target) -> u8 {
    match (soft, target) {
        (false, Target::Prefix { .. }) => PURGE,
        (true, Target::Prefix { .. }) => SOFTPURGE,
        (false, Target::Tags(_)) => PURGETAG,
        (true, Target::Tags(_)) => SOFTPURGETAG,
    }
}

fn write_target(w: &mut Writer, target: &Target) {
    match target {
        Target::Prefix { prefix, exact } => {
            w.bytes(prefix);
            w.u8(u8::from(*exact));
        }
        Target::Tags(tags) => w.list(tags),
    }
}

pub fn encode(message: &Message) -> Vec<u8> {
    let mut w = Writer(Vec::with_capacity(64));
    w.u8(VERSION);
    match message {
        Message::Request(r) => {
            match &r.op {
                Op::Check { .. } => w.u8(CHECK),
                Op::Purge { soft, target, .. } => w.u8(purge_kind(*soft, target)),
                Op::List { .. } => w.u8(LIST),
            }
            w.u64(r.id);
            w.u64(r.issued_ms);
            w.u64(r.deadline_ms);
            w.u32(r.db as u32);
            match &r.op {
                Op::Check { user, target } => {
                    // What a check is for: the purge kind it precedes.
                    w.u8(purge_kind(false, target));
                    w.bytes(user);
                    write_target(&mut w, target);
                }
                Op::Purge { user, target, .. } => {
                    w.bytes(user);
                    write_target(&mut w, target);
                }
                Op::List { prefix, after, count } => {
                    w.bytes(prefix);
                    match after {
                        Some(a) => {
                            w.u8(1);
                            w.bytes(a);
                        }
                        None => w.u8(0),
                    }
                    w.u32(*count);
                }
            }
        }
        Message::Reply { id, answer } => {
            w.u8(ANSWER);
            w.u64(*id);
            match answer {
                Answer::Allowed => w.u8(ALLOWED),
                Answer::Count(n) => {
                    w.u8(COUNT);
                    w.u64(*n);
                }
                Answer::Paths(paths) => {
                    w.u8(PATHS);
                    w.list(paths);
                }
                Answer::Error(msg) => {
                    w.u8(ERROR);
                    w.bytes(msg.as_bytes());
                }
            }
        }
    }
    w.0
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError(pub &'static str);

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if n > self.0.len() {
            return Err(DecodeError("truncated message"));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }
    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }
    fn u32(&mut self) -> Result<u32, DecodeError> {
        let mut b = [0u8; 4];
        b.copy_from_slice(self.take(4)?);
        Ok(u32::from_le_bytes(b))
    }
    fn u64(&mut self) -> Result<u64, DecodeError> {
        let mut b = [0u8; 8];
        b.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(b))
    }
    fn bytes(&mut self) -> Result<Vec<u8>, DecodeError> {
        let n = self.u32()? as usize;
        Ok(self.take(n)?.to_vec())
    }
    /// A length-prefixed list; the count is checked against the bytes left (each
    /// item takes at least 4) before anything is allocated for it.
    fn list(&mut self) -> Result<Vec<Vec<u8>>, DecodeError> {
        let n = self.u32()? as usize;
        if n > self.0.len() / 4 {
            return Err(DecodeError("list count exceeds the message"));
        }
        (0..n).map(|_| self.bytes()).collect()
    }
    fn flag(&mut self) -> Result<bool, DecodeError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(DecodeError("bad flag byte")),
        }
    }
}

fn read_target(r: &mut Reader<'_>, kind: u8) -> Result<Target, DecodeError> {
    match kind {
        PURGE | SOFTPURGE => Ok(Target::Prefix { prefix: r.bytes()?, exact: r.flag()? }),
        PURGETAG | SOFTPURGETAG => Ok(Target::Tags(r.list()?)),
        _ => Err(DecodeError("unknown purge kind")),
    }
}

/// Decodes a bus message; any byte string that [`encode`] cannot produce is an error.
pub fn decode(bytes: &[u8]) -> Result<Message, DecodeError> {
    let mut r = Reader(bytes);
    if r.u8()? != VERSION {
        return Err(DecodeError("unknown message version"));
    }
    let kind = r.u8()?;
    let message = if kind == ANSWER {
        let id = r.u64()?;
        let answer = match r.u8()? {
            ALLOWED => Answer::Allowed,
            COUNT => Answer::Count(r.u64()?),
            PATHS => Answer::Paths(r.list()?),
            ERROR => Answer::Error(String::from_utf8(r.bytes()?).map_err(|_| DecodeError("error text is not UTF-8"))?),
            _ => return Err(DecodeError("unknown answer kind")),
        };
        Message::Reply { id, answer }
    } else {
        if !(PURGE..=CHECK).contains(&kind) {
            return Err(DecodeError("unknown message kind"));
        }
        let (id, issued_ms, deadline_ms, db) = (r.u64()?, r.u64()?, r.u64()?, r.u32()? as i32);
        let op = match kind {
            CHECK => {
                let of = r.u8()?;
                if !matches!(of, PURGE | PURGETAG) {
                    return Err(DecodeError("a check names a hard purge kind"));
                }
                let user = r.bytes()?;
                Op::Check { user, target: read_target(&mut r, of)? }
            }
            LIST => {
                let prefix = r.bytes()?;
                let after = if r.flag()? { Some(r.bytes()?) } else { None };
                Op::List { prefix, after, count: r.u32()? }
            }
            // PURGE, SOFTPURGE, PURGETAG or SOFTPURGETAG (the range is checked above).
            _ => {
                let user = r.bytes()?;
                Op::Purge { user, soft: matches!(kind, SOFTPURGE | SOFTPURGETAG), target: read_target(&mut r, kind)? }
            }
        };
        Message::Request(Request { id, issued_ms, deadline_ms, db, op })
    };
    if !r.0.is_empty() {
        return Err(DecodeError("trailing bytes"));
    }
    Ok(message)
}

// ---- Merging LIST pages ----

/// Merges two ascending, duplicate-free pages into the first `count` paths of their
/// union (a path sits on two shards only while its slot moves).
pub fn merge_pages(a: Vec<Vec<u8>>, b: Vec<Vec<u8>>, count: usize) -> Vec<Vec<u8>> {
    let mut out = Vec::with_capacity(count.min(a.len() + b.len()));
    let (mut a, mut b) = (a.into_iter().peekable(), b.into_iter().peekable());
    while out.len() < count {
        let next = match (a.peek(), b.peek()) {
            (Some(x), Some(y)) if x == y => {
                b.next();
                a.next()
            }
            (Some(x), Some(y)) if x < y => a.next(),
            (Some(_), Some(_)) => b.next(),
            (Some(_), None) => a.next(),
            (None, _) => b.next(),
        };
        match next {
            Some(p) => out.push(p),
            None => break,
        }
    }
    out
}

// ---- Requests waiting for answers ----

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Purges: every primary decides NOPERM before any touches anything.
    Check,
    /// Purges: every primary removes its part.
    Act,
    List,
}

/// A fanned-out request on the primary that took the command.
#[derive(Debug)]
pub struct Pending<W> {
    /// Who waits for the outcome (the blocked client).
    pub waiter: W,
    pub phase: Phase,
    pub deadline_ms: u64,
    /// The other primaries asked; `answered` the ones that answered in this phase.
    pub asked: Vec<NodeId>,
    answered: Vec<NodeId>,
    /// Entries counted so far (this primary's part included once it ran).
    pub count: u64,
    /// LIST: the merged page so far, at most `list_count` paths.
    pub paths: Vec<Vec<u8>>,
    pub list_count: usize,
}

impl<W> Pending<W> {
    pub fn new(waiter: W, phase: Phase, deadline_ms: u64, asked: Vec<NodeId>) -> Self {
        Pending { waiter, phase, deadline_ms, asked, answered: Vec::new(), count: 0, paths: Vec::new(), list_count: 0 }
    }

    /// Primaries that answered in the current phase, this one included.
    pub fn answered(&self) -> usize {
        1 + self.answered.len()
    }
}

#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    Count(u64),
    Paths(Vec<Vec<u8>>),
    Error(String),
}

#[derive(Debug, PartialEq, Eq)]
pub enum Progress<W> {
    /// Unknown id (already finished or timed out), a node not asked, or a duplicate.
    Ignored,
    Waiting,
    /// Every primary allowed the purge: run this primary's part and start [`Phase::Act`]
    /// (with [`Table::start_act`]).
    Allowed,
    Done(W, Outcome),
}

/// The fanned-out requests this primary is waiting on, by request id.
#[derive(Debug)]
pub struct Table<W> {
    pending: HashMap<u64, Pending<W>>,
}

impl<W> Default for Table<W> {
    fn default() -> Self {
        Table { pending: HashMap::new() }
    }
}

impl<W> Table<W> {
    pub fn insert(&mut self, id: u64, pending: Pending<W>) {
        self.pending.insert(id, pending);
    }

    pub fn get_mut(&mut self, id: u64) -> Option<&mut Pending<W>> {
        self.pending.get_mut(&id)
    }

    pub fn remove(&mut self, id: u64) -> Option<Pending<W>> {
        self.pending.remove(&id)
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.pending.len()
    }

    /// Starts the removal phase of a purge whose check passed; `local` is what this
    /// primary's part counted.
    pub fn start_act(&mut self, id: u64, local: u64) {
        if let Some(p) = self.pending.get_mut(&id) {
            p.phase = Phase::Act;
            p.answered.clear();
            p.count = local;
        }
    }

    /// Files `from`'s answer to request `id`.
    pub fn answer(&mut self, id: u64, from: &NodeId, answer: Answer) -> Progress<W> {
        let Some(p) = self.pending.get_mut(&id) else { return Progress::Ignored };
        if !p.asked.contains(from) || p.answered.contains(from) {
            return Progress::Ignored;
        }
        p.answered.push(*from);
        match (p.phase, answer) {
            (_, Answer::Error(msg)) => return self.finish(id, Outcome::Error(msg)),
            (Phase::Check, Answer::Allowed) => {}
            (Phase::Act, Answer::Count(n)) => p.count = p.count.saturating_add(n),
            (Phase::List, Answer::Paths(paths)) => {
                let mine = std::mem::take(&mut p.paths);
                p.paths = merge_pages(mine, paths, p.list_count);
            }
            _ => return self.finish(id, Outcome::Error("ERR a cluster node sent an answer of the wrong kind".into())),
        }
        if p.answered.len() < p.asked.len() {
            return Progress::Waiting;
        }
        match p.phase {
            Phase::Check => Progress::Allowed,
            Phase::Act => {
                let n = p.count;
                self.finish(id, Outcome::Count(n))
            }
            Phase::List => {
                let paths = std::mem::take(&mut p.paths);
                self.finish(id, Outcome::Paths(paths))
            }
        }
    }

    fn finish(&mut self, id: u64, outcome: Outcome) -> Progress<W> {
        match self.pending.remove(&id) {
            Some(p) => Progress::Done(p.waiter, outcome),
            None => Progress::Ignored,
        }
    }

    /// Removes and returns the request whose waiter matches.
    pub fn take_where(&mut self, mut matches: impl FnMut(&W) -> bool) -> Option<(u64, Pending<W>)> {
        let id = self.pending.iter().find(|(_, p)| matches(&p.waiter)).map(|(&id, _)| id)?;
        self.pending.remove(&id).map(|p| (id, p))
    }

    /// Removes and returns the requests whose deadline passed before `now_ms`.
    pub fn expired(&mut self, now_ms: u64) -> Vec<(u64, Pending<W>)> {
        let ids: Vec<u64> = self.pending.iter().filter(|(_, p)| p.deadline_ms < now_ms).map(|(&id, _)| id).collect();
        ids.into_iter().filter_map(|id| self.pending.remove(&id).map(|p| (id, p))).collect()
    }
}

/// The error a fanned-out command answers when not every primary answered in time.
pub fn timeout_error(phase: Phase, answered: usize, primaries: usize, timeout_ms: i64) -> String {
    let effect = match phase {
        Phase::Check => "; nothing was purged",
        Phase::Act => "; the primaries that answered purged their part",
        Phase::List => "",
    };
    format!("TRYAGAIN only {answered} of {primaries} cluster primaries answered within rcache.cluster-timeout ({timeout_ms} ms){effect}")
}

// ---- Purges that may race a slot migration ----

/// A purge part this primary ran for a cluster-wide purge, kept while the purge may
/// still be running elsewhere: an entry it covers can arrive here afterwards from a
/// primary that had not run its part yet (MIGRATE), and must then be removed too.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecentPurge {
    pub db: i32,
    pub target: Target,
    pub issued_ms: u64,
    pub keep_until_ms: u64,
}

impl RecentPurge {
    fn covers(&self, db: i32, path: &[u8], tags: &[&[u8]], stored_at_ms: u64) -> bool {
        db == self.db
            && stored_at_ms < self.issued_ms
            && self.target.covers(path, tags)
    }
}

#[derive(Debug, Default)]
pub struct RecentPurges(Vec<RecentPurge>);

impl RecentPurges {
    pub fn add(&mut self, record: RecentPurge, now_ms: u64) {
        self.0.retain(|r| r.keep_until_ms >= now_ms);
        self.0.push(record);
    }

    /// Whether an entry (its db, path, tags and when it was stored) found now is one
    /// that a recent purge covers.
    pub fn covers(&self, db: i32, path: &[u8], tags: &[&[u8]], stored_at_ms: u64, now_ms: u64) -> bool {
        self.0.iter().any(|r| r.keep_until_ms >= now_ms && r.covers(db, path, tags, stored_at_ms))
    }
}

// ---- Requests already served, on the receiving side ----

/// (sender, request id, phase kind) of requests served, kept until their deadline so a
/// duplicate delivery is not served twice.
#[derive(Debug, Default)]
pub struct Served {
    seen: HashMap<(NodeId, u64, bool), u64>,
}

impl Served {
    /// Whether the request is new (and now recorded). `acting` tells a purge's check
    /// from its removal: both carry the same id.
    pub fn first_time(&mut self, from: &NodeId, request: &Request, now_ms: u64) -> bool {
        if self.seen.len() > 64 {
            self.seen.retain(|_, deadline| *deadline >= now_ms);
        }
        let acting = matches!(request.op, Op::Purge { .. });
        self.seen.insert((*from, request.id, acting), request.deadline_ms).is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc16_and_slots_match_redis() {
        // Reference values from Redis' own tests and `CLUSTER KEYSLOT`.
        assert_eq!(crc16(b"123456789"), 0x31C3);
        assert_eq!(key_hash_slot(b"foo"), 12182);
        assert_eq!(key_hash_slot(b"bar"), 5061);
        assert_eq!(key_hash_slot(b"{user1000}.following"), key_hash_slot(b"user1000"));
        assert_eq!(key_hash_slot(b"foo{}{bar}"), key_hash_slot(b"foo{}{bar}"), "an empty tag hashes the whole key");
        assert_ne!(key_hash_slot(b"foo{}{bar}"), key_hash_slot(b"bar"));
        assert_eq!(key_hash_slot(b"foo{{bar}}zap"), key_hash_slot(b"{bar"));
        assert_eq!(key_hash_slot(b"foo{bar}{zap}"), key_hash_slot(b"bar"));
        assert_eq!(key_hash_slot(b"{"), key_hash_slot(b"{"));
        assert!(key_hash_slot(&[0xff; 100]) < SLOTS);
    }

    #[test]
    fn entry_keys_live_in_their_paths_slot() {
        use crate::core::key::{entry_key, Variant};
        for p in [&b"/a/b"[..], b"{shop}/x", b"/x/{t}/y", b"/", b"shop.example.com/p"] {
            let v = Variant::new(b"?q", &[(b"a", b"b")]);
            assert_eq!(key_hash_slot(&entry_key(p, &v)), key_hash_slot(p), "{}", String::from_utf8_lossy(p));
        }
    }

    #[test]
    fn scopes() {
        assert_eq!(prefix_scope(b"{shop}/"), Scope::OneSlot(key_hash_slot(b"shop")));
        assert_eq!(prefix_scope(b"/a/{t}"), Scope::OneSlot(key_hash_slot(b"t")));
        assert_eq!(prefix_scope(b"/a"), Scope::AllSlots);
        assert_eq!(prefix_scope(b"/"), Scope::AllSlots);
    }

    #[test]
    fn my_slots_from_cluster_nodes() {
        let text = b"07c3 127.0.0.1:30004@31004 master - 0 1 4 connected 10923-16383\n\
e7d1 127.0.0.1:30001@31001 myself,master - 0 0 1 connected 0-5460 7000 [5461-<-292f] [93->-292f]\n\
292f 127.0.0.1:30002@31002 master - 0 1 2 connected 5461-6999 7001-10922\n";
        let set = SlotSet::from_cluster_nodes(text);
        assert!(set.contains(0) && set.contains(5460) && set.contains(7000) && set.contains(93));
        assert!(!set.contains(5461), "importing is not owning");
        assert!(!set.contains(6999) && !set.contains(16383));
        assert_eq!(format!("{set:?}"), "SlotSet(5462 slots)");
        assert_eq!(SlotSet::from_cluster_nodes(b"garbage"), SlotSet::default());
        let odd = SlotSet::from_cluster_nodes(b"a b myself,master - 0 0 1 connected 5-3 x-1 99999 16383-99999 12\n");
        assert_eq!(format!("{odd:?}"), "SlotSet(1 slots)", "only `12` is a valid range");
        let migrating = SlotSet::migrating_from_cluster_nodes(text);
        assert_eq!(format!("{migrating:?}"), "SlotSet(1 slots)");
        assert!(migrating.contains(93) && !migrating.contains(5461), "importing is not migrating");
        let importing = SlotSet::importing_from_cluster_nodes(text);
        assert!(importing.contains(5461) && !importing.contains(93) && format!("{importing:?}") == "SlotSet(1 slots)");
        let lost = set.minus(&SlotSet::from_cluster_nodes(b"x y myself - 0 0 1 connected 0-92 94-5460 7000\n"));
        assert_eq!(format!("{lost:?}"), "SlotSet(1 slots)");
        assert!(lost.contains(93) && !lost.is_empty() && set.minus(&set).is_empty());
        assert_eq!(lost.union(&migrating), lost);
        assert_eq!(format!("{:?}", lost.union(&odd)), "SlotSet(2 slots)");
        assert_eq!(SlotSet::migrating_from_cluster_nodes(b"a b myself - 0 0 1 connected [x->-y] [->-] [1-<-2]\n"), SlotSet::default());
    }

    fn samples() -> Vec<Message> {
        let prefix = Target::Prefix { prefix: b"/t/5".to_vec(), exact: false };
        let tags = Target::Tags(vec![b"a".to_vec(), b"\xffb".to_vec()]);
        let req = |op| Message::Request(Request { id: 7, issued_ms: 1_699_999_999_000, deadline_ms: 1_700_000_000_000, db: 3, op });
        vec![
            req(Op::Check { user: b"alice".to_vec(), target: prefix.clone() }),
            req(Op::Check { user: b"".to_vec(), target: tags.clone() }),
            req(Op::Purge { user: b"default".to_vec(), soft: false, target: prefix.clone() }),
            req(Op::Purge { user: b"default".to_vec(), soft: true, target: Target::Prefix { prefix: b"/x".to_vec(), exact: true } }),
            req(Op::Purge { user: b"u".to_vec(), soft: false, target: tags.clone() }),
            req(Op::Purge { user: b"u".to_vec(), soft: true, target: Target::Tags(vec![]) }),
            req(Op::List { prefix: b"/".to_vec(), after: None, count: 100 }),
            req(Op::List { prefix: b"/".to_vec(), after: Some(b"/m".to_vec()), count: 10000 }),
            Message::Reply { id: u64::MAX, answer: Answer::Allowed },
            Message::Reply { id: 1, answer: Answer::Count(12345) },
            Message::Reply { id: 1, answer: Answer::Paths(vec![b"/a".to_vec(), b"/b".to_vec()]) },
            Message::Reply { id: 1, answer: Answer::Error("NOPERM no".into()) },
        ]
    }

    #[test]
    fn messages_round_trip_and_reject_damage() {
        for m in samples() {
            let bytes = encode(&m);
            assert_eq!(decode(&bytes), Ok(m.clone()));
            for cut in 0..bytes.len() {
                assert!(decode(&bytes[..cut]).is_err(), "a truncated {m:?} must not decode");
            }
            let mut longer = bytes.clone();
            longer.push(0);
            assert_eq!(decode(&longer), Err(DecodeError("trailing bytes")));
        }
        assert_eq!(decode(&[2, ANSWER]), Err(DecodeError("unknown message version")));
        assert_eq!(decode(&[VERSION, 99]), Err(DecodeError("unknown message kind")));
        // A huge list count in a short message is refused before allocating.
        let mut m = vec![VERSION, ANSWER];
        m.extend_from_slice(&1u64.to_le_bytes());
        m.push(PATHS);
        m.extend_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(decode(&m), Err(DecodeError("list count exceeds the message")));
    }

    fn page(paths: &[&str]) -> Vec<Vec<u8>> {
        paths.iter().map(|p| p.as_bytes().to_vec()).collect()
    }

    #[test]
    fn pages_merge_in_byte_order() {
        assert_eq!(merge_pages(page(&["/a", "/c", "/e"]), page(&["/b", "/c", "/d"]), 4), page(&["/a", "/b", "/c", "/d"]));
        assert_eq!(merge_pages(page(&[]), page(&["/b"]), 4), page(&["/b"]));
        assert_eq!(merge_pages(page(&["/a"]), page(&[]), 0), page(&[]));
        assert_eq!(merge_pages(page(&["/a-", "/a/"]), page(&["/a.", "/a0"]), 10), page(&["/a-", "/a.", "/a/", "/a0"]));
    }

    const A: NodeId = [b'a'; 40];
    const B: NodeId = [b'b'; 40];
    const C: NodeId = [b'c'; 40];

    #[test]
    fn a_purge_checks_everywhere_then_acts_and_totals() {
        let mut t = Table::default();
        t.insert(1, Pending::new("client", Phase::Check, 100, vec![A, B]));
        assert_eq!(t.answer(1, &A, Answer::Allowed), Progress::Waiting);
        assert_eq!(t.answer(1, &A, Answer::Allowed), Progress::Ignored, "a duplicate");
        assert_eq!(t.answer(1, &C, Answer::Allowed), Progress::Ignored, "a node not asked");
        assert_eq!(t.answer(2, &B, Answer::Allowed), Progress::Ignored, "another request");
        assert_eq!(t.get_mut(1).map(|p| p.answered()), Some(2));
        assert_eq!(t.answer(1, &B, Answer::Allowed), Progress::Allowed);
        t.start_act(1, 5);
        assert_eq!(t.get_mut(1).map(|p| p.answered()), Some(1), "answers count per phase");
        assert_eq!(t.answer(1, &B, Answer::Count(3)), Progress::Waiting);
        assert_eq!(t.answer(1, &A, Answer::Count(4)), Progress::Done("client", Outcome::Count(12)));
        assert_eq!(t.len(), 0);
        assert_eq!(t.answer(1, &A, Answer::Count(4)), Progress::Ignored, "a late answer");
    }

    #[test]
    fn one_noperm_ends_the_request() {
        let mut t = Table::default();
        t.insert(1, Pending::new(9, Phase::Check, 100, vec![A, B]));
        let noperm = "NOPERM this user has no permission to remove entries under '/x'".to_string();
        assert_eq!(t.answer(1, &B, Answer::Error(noperm.clone())), Progress::Done(9, Outcome::Error(noperm)));
        assert_eq!(t.answer(1, &A, Answer::Allowed), Progress::Ignored);
    }

    #[test]
    fn a_wrong_kind_of_answer_is_an_error() {
        let mut t = Table::default();
        t.insert(1, Pending::new(9, Phase::Check, 100, vec![A]));
        assert!(matches!(t.answer(1, &A, Answer::Count(1)), Progress::Done(9, Outcome::Error(_))));
    }

    #[test]
    fn list_pages_merge_across_shards() {
        let mut t = Table::default();
        let mut p = Pending::new((), Phase::List, 100, vec![A, B]);
        p.list_count = 3;
        p.paths = page(&["/b", "/e"]);
        t.insert(4, p);
        assert_eq!(t.answer(4, &A, Answer::Paths(page(&["/a", "/f"]))), Progress::Waiting);
        assert_eq!(t.answer(4, &B, Answer::Paths(page(&["/c", "/d"]))), Progress::Done((), Outcome::Paths(page(&["/a", "/b", "/c"]))));
    }

    #[test]
    fn deadlines_expire_requests() {
        let mut t = Table::default();
        t.insert(1, Pending::new(1, Phase::Check, 100, vec![A]));
        t.insert(2, Pending::new(2, Phase::List, 200, vec![A]));
        assert!(t.expired(100).is_empty(), "the deadline itself is still in time");
        let gone: Vec<u64> = t.expired(150).into_iter().map(|(id, _)| id).collect();
        assert_eq!(gone, vec![1]);
        assert_eq!(t.len(), 1);
        assert_eq!(t.take_where(|&w| w == 1).map(|(id, _)| id), None);
        assert_eq!(t.take_where(|&w| w == 2).map(|(id, _)| id), Some(2));
        assert_eq!(t.len(), 0);
    }

    #[test]
    fn timeout_errors_say_who_answered_and_what_happened() {
        assert_eq!(
            timeout_error(Phase::Check, 2, 3, 5000),
            "TRYAGAIN only 2 of 3 cluster primaries answered within rcache.cluster-timeout (5000 ms); nothing was purged"
        );
        assert!(timeout_error(Phase::Act, 1, 3, 100).ends_with("purged their part"));
        assert!(timeout_error(Phase::List, 1, 3, 100).ends_with("(100 ms)"));
    }

    #[test]
    fn recent_purges_catch_old_entries_arriving_late() {
        let mut r = RecentPurges::default();
        let prefix = |p: &[u8], exact| Target::Prefix { prefix: p.to_vec(), exact };
        r.add(RecentPurge { db: 0, target: prefix(b"/t/5", false), issued_ms: 1000, keep_until_ms: 5000 }, 0);
        r.add(RecentPurge { db: 0, target: Target::Tags(vec![b"x".to_vec()]), issued_ms: 1000, keep_until_ms: 5000 }, 0);
        r.add(RecentPurge { db: 0, target: prefix(b"/e", true), issued_ms: 1000, keep_until_ms: 5000 }, 0);
        assert!(r.covers(0, b"/t/5/a", &[], 999, 2000));
        assert!(!r.covers(0, b"/t/5/a", &[], 1000, 2000), "stored once the purge was taken");
        assert!(!r.covers(0, b"/t/50", &[], 0, 2000));
        assert!(!r.covers(1, b"/t/5", &[], 0, 2000), "another database");
        assert!(r.covers(0, b"/other", &[b"y", b"x"], 0, 2000));
        assert!(r.covers(0, b"/e", &[], 0, 2000) && !r.covers(0, b"/e/f", &[], 0, 2000));
        assert!(!r.covers(0, b"/t/5/a", &[], 0, 5001), "kept only while the purge may still run");
        r.add(RecentPurge { db: 0, target: prefix(b"/z", false), issued_ms: 1, keep_until_ms: 9000 }, 6000);
        assert_eq!(r.0.len(), 1, "expired records are dropped");
    }

    #[test]
    fn served_requests_are_not_served_twice() {
        let mut s = Served::default();
        let check = Request { id: 1, issued_ms: 0, deadline_ms: 50, db: 0, op: Op::Check { user: vec![], target: Target::Tags(vec![]) } };
        let act = Request { op: Op::Purge { user: vec![], soft: false, target: Target::Tags(vec![]) }, ..check.clone() };
        assert!(s.first_time(&A, &check, 10));
        assert!(!s.first_time(&A, &check, 10));
        assert!(s.first_time(&B, &check, 10), "ids are per sender");
        assert!(s.first_time(&A, &act, 10), "the removal phase of the same request");
        for id in 2..100 {
            s.first_time(&A, &Request { id, deadline_ms: 1000, ..check.clone() }, 100);
        }
        assert!(s.seen.len() < 100, "records past their deadline are dropped");
    }
}
