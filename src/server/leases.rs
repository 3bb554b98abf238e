//! Leases and request coalescing in the server: the glue between the pure lease
//! table (`core::lease`, kept in the module state) and Redis' blocked clients.
//!
//! `LOOKUP … WAIT` on a miss whose lease another caller holds blocks the client with
//! `RedisModule_BlockClient` (the server keeps serving everyone else). The table
//! tells us which waiters to release: a store serves them all at once; a lease that
//! ends without a store is handed to the first waiter that asked for `LEASE`. The
//! reply callback then answers each released waiter as a fresh LOOKUP would, plus the
//! handed token. A waiter's own WAIT time is Redis' block timeout; a disconnect drops
//! it from the table. One module timer, armed for the earliest lease expiry, ends
//! expired leases and hands them over. The state lock is never held while Redis is
//! called: table operations return actions, carried out after the lock is released.

use std::collections::HashMap;
use std::ffi::c_int;

use redis_module::raw;

use crate::core::key::Variant;
use crate::core::lease::{Action, Found, LeaseTable, Lookup, Token, WaiterId};
use crate::core::path::Coverage;
use crate::core::stats::{bump, STATS};
use crate::ffi::{self, Blocked, Ctx, TimerId};
use crate::server::guard::guarded;
use crate::server::store;

/// What a released waiter is answered with (its blocked-client private data).
#[derive(Debug)]
pub enum Outcome {
    Served,
    Handed(Token),
}

/// The lease table and the clients blocked on it, in the module state.
#[derive(Default)]
pub struct Leases {
    pub table: LeaseTable,
    blocked: HashMap<WaiterId, Blocked<Outcome>>,
    waiter_of: HashMap<usize, WaiterId>,
    /// The armed expiry timer and the time it was armed for.
    timer: Option<(TimerId, i64)>,
}

impl Leases {
    /// Forgets a blocked client (disconnect, timeout); whether it was still waiting.
    fn forget(&mut self, handle: usize) -> bool {
        let Some(id) = self.waiter_of.remove(&handle) else { return false };
        self.blocked.remove(&id);
        self.table.remove_waiter(id);
        true
    }
}

const READONLY: &str = "READONLY LEASE and WAIT are not served by a read only replica";

/// LEASE and WAIT are a master's business: leases live where entries are written.
pub fn check_not_replica(ctx: Ctx, lease_ms: Option<i64>, wait_ms: Option<i64>) -> Result<(), String> {
    if (lease_ms.is_some() || wait_ms.is_some()) && ctx.is_replica() {
        return Err(READONLY.into());
    }
    Ok(())
}

/// What a LOOKUP that found `found` gets: a lease, a blocked client, or nothing.
pub enum Answer {
    Granted(Token),
    /// The client is blocked; the reply callback answers it later.
    Blocked,
    Nothing,
}

/// The lease part of a LOOKUP. WAIT is ignored where the client may not block
/// (MULTI/EXEC, scripts).
pub fn lookup(ctx: Ctx, db: i32, path: &[u8], variant: &Variant, found: Found, lease_ms: Option<i64>, wait_ms: Option<i64>) -> Answer {
    let wait = wait_ms.filter(|_| ctx.may_block());
    let now = ffi::milliseconds();
    let (outcome, actions) = store::with(|s| s.leases.table.lookup(db, path, variant, found, lease_ms, wait.is_some(), now));
    let answer = match outcome {
        Lookup::Granted(token) => {
            bump(&STATS.leases_granted, 1);
            arm_timer(ctx);
            Answer::Granted(token)
        }
        Lookup::Wait(id) => block(ctx, id, wait.unwrap_or(0)),
        Lookup::Nothing => Answer::Nothing,
    };
    carry_out(ctx, actions);
    answer
}

fn block(ctx: Ctx, id: WaiterId, wait_ms: i64) -> Answer {
    match ctx.block_client::<Outcome>(Some(on_reply), Some(on_timeout), wait_ms) {
        Some(bc) => {
            bc.on_disconnect(Some(on_disconnect));
            store::with(|s| {
                s.leases.blocked.insert(id, bc);
                s.leases.waiter_of.insert(bc.id(), id);
            });
            bump(&STATS.lease_waits, 1);
            Answer::Blocked
        }
        None => {
            store::with(|s| s.leases.table.remove_waiter(id));
            Answer::Nothing
        }
    }
}

/// Whether `token` is the live lease of the entry.
pub fn holds(db: i32, path: &[u8], variant: &Variant, token: &Token) -> bool {
    let now = ffi::milliseconds();
    store::with(|s| s.leases.table.holds(db, path, variant, token.as_bytes(), now))
}

/// `SET … LEASE token` carrying `tags`: whether it may store.
pub fn may_set(ctx: Ctx, db: i32, path: &[u8], variant: &Variant, token: &[u8], tags: &[&[u8]]) -> bool {
    let now = ffi::milliseconds();
    let (ok, actions) = store::with(|s| s.leases.table.may_set(db, path, variant, token, tags, now));
    carry_out(ctx, actions);
    ok
}

/// Any SET stored the entry: its lease ends and every waiter is served.
pub fn stored(ctx: Ctx, db: i32, path: &[u8], variant: &Variant) {
    let now = ffi::milliseconds();
    let actions = store::with(|s| s.leases.table.stored(db, path, variant, now));
    carry_out(ctx, actions);
}

/// RCACHE.DEL of the entry (whether or not it existed).
pub fn deleted(ctx: Ctx, db: i32, path: &[u8], variant: &Variant) {
    let now = ffi::milliseconds();
    let actions = store::with(|s| s.leases.table.invalidate(db, path, variant, now));
    carry_out(ctx, actions);
}

/// PURGE or SOFTPURGE: the leases of every covered entry, existing or not, end.
pub fn purged(ctx: Ctx, db: i32, coverage: &Coverage<'_>) {
    let now = ffi::milliseconds();
    let actions = store::with(|s| s.leases.table.invalidate_covered(db, coverage, now));
    carry_out(ctx, actions);
}

/// PURGETAG or SOFTPURGETAG of `tags`, which `entries` (path, variant) carried.
pub fn tags_purged(ctx: Ctx, db: i32, tags: &[&[u8]], entries: &[(Vec<u8>, Variant)]) {
    let now = ffi::milliseconds();
    let actions = store::with(|s| {
        let mut actions = s.leases.table.tag_purged(db, tags, now);
        for (path, variant) in entries {
            actions.extend(s.leases.table.invalidate(db, path, variant, now));
        }
        actions
    });
    carry_out(ctx, actions);
}

/// FLUSHDB of `db`, FLUSHALL (-1), or a dataset replaced (loading, SWAPDB).
pub fn flushed(ctx: Ctx, db: i32) {
    let now = ffi::milliseconds();
    let actions = store::with(|s| s.leases.table.flush(db, now));
    carry_out(ctx, actions);
}

/// Releases the clients the actions name. A lease handed over may expire before any
/// other, so the timer is re-armed then (a command without actions, the common SET,
/// costs nothing more).
fn carry_out(ctx: Ctx, actions: Vec<Action>) {
    if actions.is_empty() {
        return;
    }
    let handed = actions.iter().any(|a| matches!(a, Action::Hand(..)));
    let released: Vec<(Blocked<Outcome>, Outcome)> = store::with(|s| {
        actions
            .into_iter()
            .filter_map(|action| {
                let (id, outcome) = match action {
                    Action::Serve(id) => (id, Outcome::Served),
                    Action::Hand(id, token) => (id, Outcome::Handed(token)),
                };
                let bc = s.leases.blocked.remove(&id)?;
                s.leases.waiter_of.remove(&bc.id());
                Some((bc, outcome))
            })
            .collect()
    });
    for (bc, outcome) in released {
        if matches!(outcome, Outcome::Handed(_)) {
            bump(&STATS.leases_granted, 1);
        }
        bc.unblock(Some(Box::new(outcome)));
    }
    if handed {
        arm_timer(ctx);
    }
}

/// Makes sure the expiry timer is armed for the earliest live lease.
fn arm_timer(ctx: Ctx) {
    let (next, armed) = store::with(|s| (s.leases.table.next_expiry(), s.leases.timer));
    let Some(at) = next else { return };
    if armed.is_some_and(|(_, armed_at)| armed_at <= at) {
        return;
    }
    if let Some((id, _)) = armed {
        ctx.stop_timer(id);
    }
    let after = at.saturating_sub(ffi::milliseconds()).max(1);
    let id = ctx.create_timer(after, Some(on_timer));
    store::with(|s| s.leases.timer = Some((id, at)));
}

extern "C" fn on_timer(ctx: *mut raw::RedisModuleCtx, _data: *mut std::ffi::c_void) {
    let ctx = Ctx::from_raw(ctx);
    guarded(ctx, "lease timer", || (), || {
        let now = ffi::milliseconds();
        let actions = store::with(|s| {
            s.leases.timer = None;
            s.leases.table.expire(now)
        });
        carry_out(ctx, actions);
        arm_timer(ctx);
    });
}

/// A waiter must get a reply from these callbacks, or its connection waits forever.
fn reply_internal_error(ctx: Ctx) {
    ctx.reply_error("ERR internal error answering LOOKUP WAIT; see the server log");
}

/// A released waiter: answered as a fresh LOOKUP would be, plus the lease it was
/// handed if that lease is still live.
extern "C" fn on_reply(ctx: *mut raw::RedisModuleCtx, argv: *mut *mut raw::RedisModuleString, argc: c_int) -> c_int {
    let ctx = Ctx::from_raw(ctx);
    guarded(ctx, "lease waiter reply", || reply_internal_error(ctx), || {
        let args = ffi::callback_args(argv, argc);
        let token = match ctx.blocked_data::<Outcome>() {
            Some(Outcome::Handed(token)) => Some(*token),
            _ => None,
        };
        // Counted by the answer: a handed lease that a store ended meanwhile is not sent.
        match crate::server::commands::answer_waiter(ctx, args.get(1..).unwrap_or_default(), token) {
            Some(true) => bump(&STATS.lease_waits_handed, 1),
            Some(false) => bump(&STATS.lease_waits_served, 1),
            None => {}
        }
    });
    raw::REDISMODULE_OK as c_int
}

/// A waiter's WAIT ran out: `MISS` with no lease.
extern "C" fn on_timeout(ctx: *mut raw::RedisModuleCtx, _argv: *mut *mut raw::RedisModuleString, _argc: c_int) -> c_int {
    let ctx = Ctx::from_raw(ctx);
    guarded(ctx, "lease wait timeout", || reply_internal_error(ctx), || {
        if let Some(bc) = ctx.blocked_handle::<Outcome>() {
            // Redis skips this callback for a client we already released, and the
            // map makes sure a handle is released once whatever the order.
            if store::with(|s| s.leases.forget(bc.id())) {
                bc.unblock(None);
            }
        }
        bump(&STATS.lease_waits_timeout, 1);
        crate::server::commands::answer_timed_out_waiter(ctx);
    });
    raw::REDISMODULE_OK as c_int
}

/// A waiter disconnected: it leaves the table (memory and INFO with it).
extern "C" fn on_disconnect(ctx: *mut raw::RedisModuleCtx, bc: *mut raw::RedisModuleBlockedClient) {
    let ctx = Ctx::from_raw(ctx);
    guarded(ctx, "lease waiter disconnect", || (), || {
        if let Some(bc) = Blocked::<Outcome>::from_callback(bc) {
            if store::with(|s| s.leases.forget(bc.id())) {
                bc.unblock(None);
            }
        }
    });
}
