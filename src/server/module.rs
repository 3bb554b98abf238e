//! Module registration: commands, their documentation and key-specs, settings,
//! event subscriptions and the INFO section.

use std::ffi::{c_char, c_int, c_longlong, c_void, CStr};

use redis_module::{raw, Context, RedisString, Status};

use crate::server::alloc::{live_bytes, CountingRedisAlloc};
use crate::server::{cluster, commands};
use crate::core::config::{self, Setting};
use crate::server::events;
use crate::ffi::{self, entry_point, CommandDoc, Ctx, InfoCtx, KEY_RO, KEY_RO_NO_ACCESS, KEY_RW_DELETE, KEY_RW_INSERT, KEY_RW_UPDATE};
use crate::server::guard::guarded;
use crate::core::stats::STATS;
use crate::server::store;

pub const MODULE_VERSION: i32 = 100; // 0.1.0, as Redis encodes module versions

const DOCS: [(&CStr, CommandDoc); 10] = [
    (c"rcache.set", CommandDoc {
        entry: entry_point::<commands::Set>,
        flags: c"write deny-oom",
        summary: c"Stores a cached response for a path, query string and vary set.",
        complexity: c"O(P + V + T) where P is the path length, V the vary pairs and T the number of tags.",
        arity: -3,
        key_flags: KEY_RW_INSERT,
    }),
    (c"rcache.get", CommandDoc {
        entry: entry_point::<commands::Get>,
        flags: c"readonly fast",
        summary: c"Returns the cached response for a path, query string and vary set.",
        complexity: c"O(1) beyond hashing the arguments.",
        arity: -2,
        key_flags: KEY_RO,
    }),
    (c"rcache.lookup", CommandDoc {
        entry: entry_point::<commands::Lookup>,
        flags: c"readonly",
        summary: c"Returns a cached response with its state (FRESH, STALE, MISS), ETag, age and freshness left.",
        complexity: c"O(1) beyond hashing the arguments.",
        arity: -2,
        key_flags: KEY_RO,
    }),
    (c"rcache.del", CommandDoc {
        entry: entry_point::<commands::Del>,
        flags: c"write",
        summary: c"Removes one cached response.",
        complexity: c"O(P + V + T) where P is the path length, V the vary pairs and T the entry's tags.",
        arity: -2,
        key_flags: KEY_RW_DELETE,
    }),
    (c"rcache.purge", CommandDoc {
        entry: entry_point::<commands::Purge>,
        flags: c"write",
        summary: c"Removes every cached response whose path is covered by a prefix.",
        complexity: c"O(P + N) where P is the prefix length and N the entries and index nodes removed; a purge of more than rcache.purge-slice-us / 4 entries costs O(P + depth) in the command and O(1) per entry in the background.",
        arity: -2,
        key_flags: KEY_RW_DELETE,
    }),
    (c"rcache.softpurge", CommandDoc {
        entry: entry_point::<commands::SoftPurge>,
        flags: c"write",
        summary: c"Marks every fresh cached response under a prefix stale for its grace (removes those without grace).",
        complexity: c"O(P + N) where P is the prefix length and N the entries and index nodes covered.",
        arity: -2,
        key_flags: KEY_RW_UPDATE,
    }),
    (c"rcache.purgetag", CommandDoc {
        entry: entry_point::<commands::PurgeTag>,
        flags: c"write",
        summary: c"Removes every cached response carrying any of the tags.",
        complexity: c"O(N) where N is the number of entries removed.",
        arity: -2,
        key_flags: 0,
    }),
    (c"rcache.softpurgetag", CommandDoc {
        entry: entry_point::<commands::SoftPurgeTag>,
        flags: c"write",
        summary: c"Marks every fresh cached response carrying any of the tags stale for its grace (removes those without grace).",
        complexity: c"O(N) where N is the number of entries carrying the tags.",
        arity: -2,
        key_flags: 0,
    }),
    (c"rcache.list", CommandDoc {
        entry: entry_point::<commands::List>,
        flags: c"readonly",
        summary: c"Lists the paths holding cached responses under a prefix, in byte order.",
        complexity: c"O(P + C) where P is the prefix (and AFTER) length and C the paths returned.",
        arity: -2,
        key_flags: KEY_RO_NO_ACCESS,
    }),
    (c"rcache.key", CommandDoc {
        entry: entry_point::<commands::KeyName>,
        flags: c"readonly fast",
        summary: c"Returns the Redis key that holds (or would hold) a cached response.",
        complexity: c"O(P) where P is the length of the arguments.",
        arity: -2,
        key_flags: KEY_RO_NO_ACCESS,
    }),
];

extern "C" fn get_setting(_name: *const c_char, privdata: *mut c_void) -> c_longlong {
    guarded(Ctx::detached(), "reading a setting", || 0, || unsafe { &*privdata.cast::<Setting>() }.get())
}

extern "C" fn set_setting(_name: *const c_char, value: c_longlong, privdata: *mut c_void, _err: *mut *mut raw::RedisModuleString) -> c_int {
    // Redis has already checked the range it was registered with.
    let set = guarded(Ctx::detached(), "changing a setting", || Err(()), || unsafe { &*privdata.cast::<Setting>() }.set(value).map_err(drop));
    match set {
        Ok(()) => raw::REDISMODULE_OK as c_int,
        Err(()) => raw::REDISMODULE_ERR as c_int,
    }
}

extern "C" fn info(ctx: *mut raw::RedisModuleInfoCtx, _for_crash_report: c_int) {
    guarded(Ctx::detached(), "INFO", || (), || add_info(InfoCtx::from_raw(ctx)));
}

fn add_info(info: InfoCtx) {
    // A crash report may be written while the state is locked: report no index figures then.
    let totals = std::panic::catch_unwind(|| store::peek(|s| (s.totals(), s.leases.table.live() as u64))).ok();
    info.section();
    info.field_str("module_version", env!("CARGO_PKG_VERSION"));
    if let Some((t, leases)) = totals {
        info.field_u64("entries", t.entries);
        info.field_u64("paths", t.paths);
        info.field_u64("tags", t.tags);
        info.field_u64("leases", leases);
        info.field_u64("purge_pending", t.purge_pending);
    }
    info.field_u64("index_bytes", live_bytes() as u64);
    for (name, value) in STATS.fields() {
        info.field_u64(name, value);
    }
}

fn init(ctx: &Context, args: &[RedisString]) -> Result<(), Status> {
    let c = Ctx::from_raw(ctx.ctx);
    setup(c, args).map_err(|msg| {
        c.log(c"warning", &format!("rcache: not loaded: {msg}"));
        Status::Err
    })
}

fn setup(ctx: Ctx, args: &[RedisString]) -> Result<(), String> {
    let missing = ffi::missing_apis();
    if !missing.is_empty() {
        return Err(format!("this Redis lacks module API functions {} (rcache needs Redis 7.0 or later)", missing.join(", ")));
    }
    let args: Vec<&[u8]> = args.iter().map(|a| a.as_slice()).collect();
    config::apply_module_args(&args)?;
    for setting in config::SETTINGS {
        let name = std::ffi::CString::new(setting.name).map_err(|e| e.to_string())?;
        let privdata = (setting as *const Setting).cast_mut().cast::<c_void>();
        if !ctx.register_numeric_config(&name, setting.get(), setting.min, setting.max, Some(get_setting), Some(set_setting), privdata) {
            return Err(format!("could not register setting rcache.{}", setting.name));
        }
    }
    if !ctx.load_configs() {
        return Err("could not load the rcache.* settings from the configuration".into());
    }
    for (name, doc) in &DOCS {
        // Keyed commands declare the path (argument 1) as their one key.
        let first_key = if doc.key_flags == 0 { 0 } else { 1 };
        if !ctx.create_command(name, doc.entry, doc.flags, first_key) {
            return Err(format!("could not create the command {}", name.to_string_lossy()));
        }
        if !ctx.set_command_info(name, doc) {
            return Err(format!("could not set the command info of {}", name.to_string_lossy()));
        }
    }
    if !ctx.subscribe_keyspace_events(events::SUBSCRIBED_CLASSES, Some(events::on_keyspace_event)) {
        return Err("could not subscribe to keyspace events".into());
    }
    for event in events::SERVER_EVENTS {
        if !ctx.subscribe_server_event(event, Some(events::on_server_event)) {
            return Err(format!("could not subscribe to server event {event}"));
        }
    }
    // A `repl-diskless-load swapdb` replica loads into a temporary database while
    // serving the live one; `events` follows that through the ReplAsyncLoad events.
    ctx.handle_repl_async_load();
    if !ctx.register_info(Some(info)) {
        return Err("could not register the INFO section".into());
    }
    cluster::register(ctx);
    // Loaded into a running server (MODULE LOAD): index the entries already there.
    // At startup the keyspace is still empty, and loaded data raises `loaded` events.
    events::index_keyspace(ctx);
    Ok(())
}

#[global_allocator]
static ALLOCATOR: CountingRedisAlloc = CountingRedisAlloc;

/// The module's entry point. redis-module's `redis_module!` macro is not used: on
/// Redis 7.0 it logs a WARNING on every start ("Skip register defrag callbacks…",
/// for an API that only later Redis versions have and rcache does not need).
///
/// # Safety
/// Called by Redis with a valid context and `argc` arguments.
#[no_mangle]
pub unsafe extern "C" fn RedisModule_OnLoad(ctx: *mut raw::RedisModuleCtx, argv: *mut *mut raw::RedisModuleString, argc: c_int) -> c_int {
    if !ffi::init_module(ctx, c"rcache", MODULE_VERSION) {
        return raw::REDISMODULE_ERR as c_int;
    }
    let args = redis_module::decode_args(ctx, argv, argc);
    let context = Context::new(ctx);
    let loaded = guarded(Ctx::from_raw(ctx), "module load", || Err(Status::Err), || init(&context, &args));
    match loaded {
        Ok(()) => raw::REDISMODULE_OK as c_int,
        Err(_) => raw::REDISMODULE_ERR as c_int,
    }
}

/// MODULE UNLOAD is refused: Redis would unmap the code while the index, the
/// registered settings and subscriptions still point into it.
#[no_mangle]
pub extern "C" fn RedisModule_OnUnload(ctx: *mut raw::RedisModuleCtx) -> c_int {
    Ctx::from_raw(ctx).log(c"warning", "rcache cannot be unloaded; restart the server without it");
    raw::REDISMODULE_ERR as c_int
}
