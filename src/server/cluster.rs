//! Redis Cluster glue: the primary that takes a PURGE / SOFTPURGE of a prefix without
//! a hash tag, a PURGETAG / SOFTPURGETAG or a LIST has every other primary do its part
//! over the cluster bus, and answers once all have (see docs/cluster.md).
//!
//! A purge runs in two phases: every primary first decides NOPERM (the check), and
//! only when all allowed it does each remove its part (the act). The taking client
//! waits blocked (the server does not) for at most `rcache.cluster-timeout`; then it
//! gets `TRYAGAIN`. The local part of every purge goes through
//! `commands::purge_locally`, the one place a purge touches entries.

use std::ffi::{c_char, c_int, c_uchar, c_void};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{LazyLock, Mutex, MutexGuard, PoisonError};

use redis_module::raw;

use crate::core::cluster::{
    self, Answer, Message, NodeId, Op, Outcome, Pending, Phase, Progress, RecentPurge, RecentPurges, Request, Scope, Served, SlotSet, Table, Target,
};
use crate::core::config;
use crate::ffi::cluster::{payload, sender_id};
use crate::ffi::Blocked;
use crate::ffi::{self, Ctx};
use crate::server::{audit, commands, migration};
use crate::server::guard::guarded;

/// What a fanned-out command does once every primary answered.
#[derive(Debug, Clone)]
enum Job {
    Purge { db: i32, user: Vec<u8>, soft: bool, target: Target, issued_ms: u64 },
    List,
}

#[derive(Debug)]
struct Waiter {
    client: Blocked<Finished>,
    job: Job,
}

/// Handed from the bus receiver to the blocked client's reply callback.
struct Finished {
    job: Job,
    outcome: Outcome,
}

#[derive(Default)]
struct State {
    table: Table<Waiter>,
    served: Served,
    next_id: u64,
    recent: RecentPurges,
    /// The slots this node serves, and when that was read.
    my_slots: Option<(MySlots, u64)>,
    /// The slots this node served at the last look of `watch_slots`.
    watched: Option<SlotSet>,
}

/// Until when (ms) a recent purge may still be running elsewhere; lets entry reads
/// skip the state's lock in the common case.
static RECENT_PURGES_UNTIL: AtomicU64 = AtomicU64::new(0);

/// How long a read of this node's slots is trusted. A slot changes hands only at the
/// end of a migration or a failover; until a re-read notices, this node answers
/// TRYAGAIN for entries it does not have, which clients retry.
const MY_SLOTS_FOR_MS: u64 = 1000;

static STATE: LazyLock<Mutex<State>> = LazyLock::new(Default::default);

/// The cluster state; like the index's lock, never held across a call into Redis.
fn state() -> MutexGuard<'static, State> {
    STATE.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Past its deadline, a request still in the table belongs to a client that went away
/// (a connected one got its timeout callback): this long after, a timer frees it.
const SWEEP_AFTER_DEADLINE_MS: i64 = 1000;

/// Whether the server runs in cluster mode (fixed at startup), so that standalone
/// servers pay nothing on the hot paths for the checks below.
static CLUSTER_MODE: AtomicBool = AtomicBool::new(false);

pub fn register(ctx: Ctx) {
    CLUSTER_MODE.store(ctx.in_cluster(), Relaxed);
    ctx.register_cluster_receiver(cluster::MESSAGE_TYPE, on_message);
    if enabled() {
        ctx.create_timer(WATCH_SLOTS_MS, Some(watch_slots));
        migration::register(ctx);
    }
}

/// How often a node looks whether it lost slots.
const WATCH_SLOTS_MS: i64 = 1000;

/// Compares this node's slots with the previous look: the index is checked against the
/// keys of slots it lost (see `audit`).
unsafe extern "C" fn watch_slots(ctx: *mut raw::RedisModuleCtx, _data: *mut c_void) {
    let ctx = Ctx::from_raw(ctx);
    guarded(ctx, "cluster slot watch", || (), || {
        if let Some(lost) = lost_slots(ctx) {
            audit::start(ctx, lost);
        }
    });
    ctx.create_timer(WATCH_SLOTS_MS, Some(watch_slots));
}

pub fn enabled() -> bool {
    CLUSTER_MODE.load(Relaxed)
}

fn now_ms() -> u64 {
    u64::try_from(ffi::milliseconds()).unwrap_or(0)
}

/// Whether a purge of `target` taken here must reach the other primaries: in cluster
/// mode, on a primary, unless the prefix's hash tag keeps it in one slot.
pub fn fans_out(ctx: Ctx, target: &Target) -> bool {
    enabled()
        && ctx.is_primary()
        && match target {
            Target::Prefix { prefix, .. } => match cluster::prefix_scope(prefix) {
                Scope::AllSlots => true,
                // Asked here for a slot this node is importing: part of it may still be
                // on the node it comes from.
                Scope::OneSlot(slot) => !owns_slot(ctx, slot),
            },
            Target::Tags(_) => true,
        }
}

/// This node's slots, as its line of `CLUSTER NODES` gives them.
#[derive(Debug, Clone, Default)]
struct MySlots {
    owned: SlotSet,
    /// Owned, and being moved to another node.
    migrating: SlotSet,
    /// Being moved here from another node.
    importing: SlotSet,
}

/// This node's slots, read from CLUSTER NODES at most once a second (`fresh` forces a
/// read).
fn my_slots(ctx: Ctx, fresh: bool) -> MySlots {
    let now = now_ms();
    if !fresh {
        if let Some((slots, _)) = state().my_slots.as_ref().filter(|(_, at)| now.saturating_sub(*at) < MY_SLOTS_FOR_MS) {
            return slots.clone();
        }
    }
    let text = ctx.cluster_text(c"NODES").unwrap_or_default();
    let slots = MySlots {
        owned: SlotSet::from_cluster_nodes(&text),
        migrating: SlotSet::migrating_from_cluster_nodes(&text),
        importing: SlotSet::importing_from_cluster_nodes(&text),
    };
    state().my_slots = Some((slots.clone(), now));
    slots
}

/// Whether this node serves `slot`.
fn owns_slot(ctx: Ctx, slot: u16) -> bool {
    my_slots(ctx, false).owned.contains(slot)
}

/// In cluster mode, the hash tag the record key of a background purge of `target`
/// carries, so that it lives in a slot this node serves:
/// - a prefix in one slot: that slot's (the prefix's own hash tag), so the record moves
///   with the slot when it is resharded, and the importing node matches it against the
///   entries there (the ones it hides stay behind until removed, see `migration`);
/// - otherwise: one of this node's slots that is not moving away ([`stable_hash_tag`]).
///
/// `None` outside a cluster.
pub fn record_hash_tag(ctx: Ctx, target: &Target) -> Option<Vec<u8>> {
    match target {
        Target::Prefix { prefix, .. } if enabled() && one_slot(prefix) => cluster::hash_tag(prefix).map(<[u8]>::to_vec),
        _ => stable_hash_tag(ctx),
    }
}

/// In cluster mode, a hash tag (`t<n>`, the first such) of a slot this node serves and
/// is not migrating; `None` outside a cluster.
pub fn stable_hash_tag(ctx: Ctx) -> Option<Vec<u8>> {
    if !enabled() {
        return None;
    }
    // Read now: a migration may have started within the last second.
    let slots = my_slots(ctx, true);
    let stable = |slot: u16| slots.owned.contains(slot) && !slots.migrating.contains(slot);
    (0..65_536u32).map(|n| format!("t{n}").into_bytes()).find(|tag| stable(cluster::crc16(tag) % cluster::SLOTS))
}

/// The slots this node is importing now (read now); empty outside a cluster.
pub fn importing_slots(ctx: Ctx) -> SlotSet {
    if enabled() {
        my_slots(ctx, true).importing
    } else {
        SlotSet::default()
    }
}

/// Whether a purge record moved here by a slot migration (RESTORE) may cover entries
/// already here: that of a prefix in one slot (newer entries of the slot may have
/// arrived first), or a RESTORE outside a cluster. A record of several slots is a
/// primary's part of a cluster-wide purge, which this node ran its own part of.
pub fn moved_record_may_cover_entries_here(target: &Target) -> bool {
    !enabled() || matches!(target, Target::Prefix { prefix, .. } if one_slot(prefix))
}

fn one_slot(prefix: &[u8]) -> bool {
    matches!(cluster::prefix_scope(prefix), Scope::OneSlot(_))
}

/// Slots this node served at the previous look and no longer does. Redis deletes the
/// keys left in such a slot without a keyspace event (`delKeysInSlot`), so the index
/// must be checked against the keys there. Re-reads CLUSTER NODES.
fn lost_slots(ctx: Ctx) -> Option<SlotSet> {
    let now = my_slots(ctx, true).owned;
    let before = state().watched.replace(now.clone());
    before.map(|before| before.minus(&now)).filter(|lost| !lost.is_empty())
}

/// For SET, GET, LOOKUP and DEL of an entry that is not on this node: an error when
/// the node is a primary that does not serve the path's slot. Redis sent the command
/// here because the slot is being imported (the client was redirected with ASK): the
/// entry may still be on the node it comes from, and creating it here would make
/// MIGRATE fail with BUSYKEY, so the client must retry.
pub fn check_absent_entry_is_ours(ctx: Ctx, path: &[u8]) -> Result<(), String> {
    if enabled() && ctx.is_primary() && !owns_slot(ctx, cluster::key_hash_slot(path)) {
        return Err("TRYAGAIN the entry's slot is moving to this node and the entry is not here yet".into());
    }
    Ok(())
}

fn remember_purge(db: i32, target: &Target, issued_ms: u64, deadline_ms: u64) {
    let keep_until_ms = deadline_ms.saturating_add(SWEEP_AFTER_DEADLINE_MS as u64);
    let record = RecentPurge { db, target: target.clone(), issued_ms, keep_until_ms };
    state().recent.add(record, now_ms());
    RECENT_PURGES_UNTIL.fetch_max(keep_until_ms, Relaxed);
}

/// Whether a cluster-wide purge may still be running: entry reads then first re-read
/// the keys that arrived (MIGRATE), so one a purge covers is removed, not served.
pub fn purges_in_flight() -> bool {
    let until = RECENT_PURGES_UNTIL.load(Relaxed);
    until != 0 && until >= now_ms()
}

/// Whether an entry found here (re-read after it arrived) was stored before a recent
/// cluster-wide purge that covers it: it moved here after this node ran its part.
pub fn purged_while_moving(db: i32, path: &[u8], tags: &[&[u8]], stored_at_ms: u64) -> bool {
    purges_in_flight() && state().recent.covers(db, path, tags, stored_at_ms, now_ms())
}

/// The other primaries to ask. A primary the cluster agreed has failed is left out:
/// its slots now belong to its promoted replica, or the cluster is down and nothing
/// fans out (`CLUSTERDOWN`).
fn other_primaries(ctx: Ctx) -> Result<Vec<NodeId>, String> {
    let info = ctx.cluster_text(c"INFO").unwrap_or_default();
    if !info.split(|&b| b == b'\n').any(|l| l.trim_ascii() == b"cluster_state:ok") {
        return Err("CLUSTERDOWN The cluster is down".into());
    }
    Ok(ctx.cluster_nodes().into_iter().filter(|n| n.primary && !n.myself && !n.failed).map(|n| n.id).collect())
}

/// Starts a cluster-wide purge (its check phase) for the calling client, whose own
/// NOPERM check already passed. `Ok(false)`: there is no other primary, purge locally.
pub fn start_purge(ctx: Ctx, db: i32, soft: bool, target: Target) -> Result<bool, String> {
    let user = ctx.acl_user_name();
    let check = Op::Check { user: user.clone(), target: target.clone() };
    start(ctx, db, Job::Purge { db, user, soft, target, issued_ms: now_ms() }, check, Phase::Check, Vec::new(), 0)
}

/// Starts a cluster-wide LIST; `local` is this primary's page. `Ok(false)`: no other primary.
pub fn start_list(ctx: Ctx, db: i32, prefix: &[u8], after: Option<&[u8]>, count: usize, local: Vec<Vec<u8>>) -> Result<bool, String> {
    let op = Op::List { prefix: prefix.to_vec(), after: after.map(<[u8]>::to_vec), count: u32::try_from(count).unwrap_or(u32::MAX) };
    start(ctx, db, Job::List, op, Phase::List, local, count)
}

fn start(ctx: Ctx, db: i32, job: Job, op: Op, phase: Phase, paths: Vec<Vec<u8>>, list_count: usize) -> Result<bool, String> {
    let targets = other_primaries(ctx)?;
    if targets.is_empty() {
        return Ok(false);
    }
    if !ctx.may_block() {
        return Err("ERR a cluster-wide rcache command cannot run inside MULTI/EXEC or a script".into());
    }
    let timeout_ms = config::CLUSTER_TIMEOUT.get();
    let deadline_ms = now_ms().saturating_add(timeout_ms as u64);
    let Some(client) = ctx.block_client::<Finished>(Some(on_reply), Some(on_timeout), timeout_ms) else {
        return Err("ERR could not block the client for a cluster-wide command".into());
    };
    let issued_ms = match &job {
        Job::Purge { issued_ms, .. } => *issued_ms,
        Job::List => now_ms(),
    };
    let id = {
        let mut s = state();
        // Ids start from the clock so a restarted node does not reuse recent ones.
        if s.next_id == 0 {
            s.next_id = now_ms() << 16;
        }
        s.next_id += 1;
        let id = s.next_id;
        let mut pending = Pending::new(Waiter { client, job }, phase, deadline_ms, targets.clone());
        pending.paths = paths;
        pending.list_count = list_count;
        s.table.insert(id, pending);
        id
    };
    send_all(ctx, &targets, &Message::Request(Request { id, issued_ms, deadline_ms, db, op }));
    ctx.create_timer(timeout_ms + 2 * SWEEP_AFTER_DEADLINE_MS, Some(sweep));
    Ok(true)
}

/// Sends to each node; one that cannot be reached now simply does not answer, and
/// the request ends at its deadline.
fn send_all(ctx: Ctx, to: &[NodeId], message: &Message) {
    let bytes = cluster::encode(message);
    for node in to {
        ctx.send_cluster_message(node, cluster::MESSAGE_TYPE, &bytes);
    }
}

unsafe extern "C" fn on_message(ctx: *mut raw::RedisModuleCtx, sender: *const c_char, _type: u8, data: *const c_uchar, len: u32) {
    let ctx = Ctx::from_raw(ctx);
    guarded(ctx, "cluster message", || (), || {
        let Some(from) = sender_id(sender) else { return };
        match cluster::decode(payload(data, len)) {
            Ok(Message::Request(request)) => serve(ctx, &from, request),
            Ok(Message::Reply { id, answer }) => answered(ctx, &from, id, answer),
            Err(e) => ctx.log(c"warning", &format!("rcache: ignored a cluster message from {}: {}", ffi::cluster::node_name(&from), e.0)),
        }
    });
}

/// Runs this primary's part of another primary's request and answers it.
fn serve(ctx: Ctx, from: &NodeId, request: Request) {
    let now = now_ms();
    // The sender thinks this node a primary, but a failover made it a replica: its
    // slots' primary may not have been asked, so the command must be retried.
    if !ctx.is_primary() {
        let answer = Answer::Error("TRYAGAIN a node asked as a primary is a replica now (failover in progress)".into());
        if request.deadline_ms >= now {
            send_all(ctx, &[*from], &Message::Reply { id: request.id, answer });
        }
        return;
    }
    // Late (the sender no longer waits) or a second delivery: doing it now could
    // remove entries stored after the command replied.
    if request.deadline_ms < now || !state().served.first_time(from, &request, now) {
        return;
    }
    let answer = if !ctx.select_db(request.db) {
        Answer::Error(format!("ERR DB index {} is out of range on a cluster node", request.db))
    } else {
        match request.op {
            Op::Check { user, target } => match commands::check_locally(ctx, request.db, &ctx.acl_user_named(&user), &target) {
                Ok(()) => Answer::Allowed,
                Err(e) => Answer::Error(e),
            },
            Op::Purge { user, soft, target } => {
                remember_purge(request.db, &target, request.issued_ms, request.deadline_ms);
                match commands::purge_locally(ctx, request.db, &ctx.acl_user_named(&user), soft, &target) {
                    Ok(n) => Answer::Count(n),
                    Err(e) => Answer::Error(e),
                }
            }
            Op::List { prefix, after, count } => {
                let count = (count as usize).min(crate::core::args::MAX_LIST_COUNT);
                Answer::Paths(commands::list_locally(ctx, request.db, &prefix, after.as_deref(), count))
            }
        }
    };
    send_all(ctx, &[*from], &Message::Reply { id: request.id, answer });
}

/// Files an answer to one of our requests; moves it on when it was the last one.
fn answered(ctx: Ctx, from: &NodeId, id: u64, answer: Answer) {
    let progress = state().table.answer(id, from, answer);
    match progress {
        Progress::Ignored | Progress::Waiting => {}
        Progress::Allowed => act(ctx, id),
        Progress::Done(waiter, outcome) => waiter.client.unblock(Some(Box::new(Finished { job: waiter.job, outcome }))),
    }
}

/// Every primary allowed the purge: this primary removes its part, then asks the others.
fn act(ctx: Ctx, id: u64) {
    let found = state().table.get_mut(id).map(|p| (p.waiter.job.clone(), p.asked.clone(), p.deadline_ms));
    let Some((Job::Purge { db, user, soft, target, issued_ms }, asked, deadline_ms)) = found else { return };
    remember_purge(db, &target, issued_ms, deadline_ms);
    let local = if ctx.select_db(db) {
        commands::purge_locally(ctx, db, &ctx.acl_user_named(&user), soft, &target)
    } else {
        Err(format!("ERR DB index {db} is out of range"))
    };
    match local {
        Ok(n) => {
            state().table.start_act(id, n);
            let op = Op::Purge { user, soft, target };
            send_all(ctx, &asked, &Message::Request(Request { id, issued_ms, deadline_ms, db, op }));
        }
        Err(e) => {
            // Unblocked with the table's lock released: nothing is held across a call into Redis.
            let pending = state().table.remove(id);
            if let Some(p) = pending {
                p.waiter.client.unblock(Some(Box::new(Finished { job: p.waiter.job, outcome: Outcome::Error(e) })));
            }
        }
    }
}

unsafe extern "C" fn on_reply(ctx: *mut raw::RedisModuleCtx, _argv: *mut *mut raw::RedisModuleString, _argc: c_int) -> c_int {
    let ctx = Ctx::from_raw(ctx);
    guarded(ctx, "cluster reply", || ctx.reply_error("ERR internal error in a cluster-wide command; see the server log"), || {
        match ctx.blocked_data::<Finished>() {
            Some(Finished { job, outcome: Outcome::Count(n) }) => {
                if let Job::Purge { soft, target, .. } = job {
                    commands::count_purge_command(*soft, target);
                }
                ctx.reply_i64(i64::try_from(*n).unwrap_or(i64::MAX));
            }
            Some(Finished { outcome: Outcome::Paths(paths), .. }) => {
                ctx.reply_array(paths.len());
                paths.iter().for_each(|p| ctx.reply_bulk(p));
            }
            Some(Finished { outcome: Outcome::Error(e), .. }) => ctx.reply_error(&commands::printable(e)),
            None => ctx.reply_error("ERR a cluster-wide command ended without an outcome"),
        }
    });
    raw::REDISMODULE_OK as c_int
}

unsafe extern "C" fn on_timeout(ctx: *mut raw::RedisModuleCtx, _argv: *mut *mut raw::RedisModuleString, _argc: c_int) -> c_int {
    let ctx = Ctx::from_raw(ctx);
    guarded(ctx, "cluster timeout", || ctx.reply_error("ERR internal error in a cluster-wide command; see the server log"), || {
        let handle = ctx.blocked_handle::<Finished>().map(Blocked::id);
        let found = state().table.take_where(|w| Some(w.client.id()) == handle);
        let timeout_ms = config::CLUSTER_TIMEOUT.get();
        match found {
            Some((_, p)) => {
                ctx.reply_error(&cluster::timeout_error(p.phase, p.answered(), p.asked.len() + 1, timeout_ms));
                // Redis frees a timed-out blocked client only once it is unblocked.
                p.waiter.client.unblock(None);
            }
            None => ctx.reply_error(&format!("TRYAGAIN the cluster did not answer within rcache.cluster-timeout ({timeout_ms} ms)")),
        }
    });
    raw::REDISMODULE_OK as c_int
}

/// Requests still waiting well after their deadline: their clients disconnected (no
/// timeout callback then); unblocking frees what Redis keeps for them.
unsafe extern "C" fn sweep(ctx: *mut raw::RedisModuleCtx, _data: *mut c_void) {
    let ctx = Ctx::from_raw(ctx);
    guarded(ctx, "cluster sweep", || (), || {
        let stale = state().table.expired(now_ms().saturating_sub(SWEEP_AFTER_DEADLINE_MS as u64));
        for (_, p) in stale {
            let error = cluster::timeout_error(p.phase, p.answered(), p.asked.len() + 1, config::CLUSTER_TIMEOUT.get());
            p.waiter.client.unblock(Some(Box::new(Finished { job: p.waiter.job, outcome: Outcome::Error(error) })));
        }
    });
}
