//! Slot migration meets background purges: an entry a pending purge hides never
//! leaves with MIGRATE, or the importing node would serve it as a live entry.
//!
//! A command filter (cluster mode only) takes such keys out of every MIGRATE before
//! Redis runs it (`core::migrate`). They stay here until the purge deletes them, within
//! milliseconds; the migration's next `CLUSTER GETKEYSINSLOT` round then no longer lists
//! them, so a reshard waits for the purge instead of carrying purged entries along.

use redis_module::raw;

use crate::core::key::parse_entry_key;
use crate::core::migrate;
use crate::ffi::{Ctx, FilteredCommand};
use crate::server::guard::guarded;
use crate::server::{purges, store};

/// Cluster mode has one database.
const CLUSTER_DB: i32 = 0;

pub fn register(ctx: Ctx) {
    if !ctx.register_command_filter(on_command) {
        ctx.log(c"warning", "rcache: could not register the MIGRATE filter");
    }
}

unsafe extern "C" fn on_command(fctx: *mut raw::RedisModuleCommandFilterCtx) {
    // Every command passes here: one atomic load while no purge is pending.
    if !purges::any_pending() {
        return;
    }
    guarded(Ctx::detached(), "MIGRATE filter", || (), || {
        let command = FilteredCommand::from_raw(fctx);
        if migrate::is_migrate(command.arg(0)) {
            // The edits are worked out before applying them frees the arguments they read.
            let edits = migrate::keep_keys(&command.args(), hidden_here);
            command.apply(&edits);
        }
    });
}

/// Whether `key` is an entry a pending purge hides.
fn hidden_here(key: &[u8]) -> bool {
    let Some((path, variant)) = parse_entry_key(key) else { return false };
    store::with(|s| s.existing_db(CLUSTER_DB).is_some_and(|d| d.is_hidden(path, &variant)))
}
