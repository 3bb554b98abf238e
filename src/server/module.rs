//! Module registration: commands, their documentation and key-specs, settings,
//! event subscriptions and the INFO section.

use std::ffi::{c_char, c_int, c_longlong, c_void, CStr};

use redis_module::{raw, redis_module, Context, RedisString, Status};

use crate::server::alloc::{live_bytes, CountingRedisAlloc};
use crate::server::{cluster, commands};
use crate::core::config::{self, Setting};
use crate::server::events;
use crate::ffi::{self, CommandDoc, Ctx, InfoCtx, KEY_RO, KEY_RO_NO_ACCESS, KEY_RW_DELETE, KEY_RW_INSERT, KEY_RW_UPDATE};
use crate::server::guard::guarded;
use crate::core::stats::STATS;
use crate::server::store;

pub const MODULE_VERSION: i32 = 100; // 0.1.0, as Redis encodes module versions

const DOCS: [(&CStr, CommandDoc); 10] = [
    (c"rcache.set", CommandDoc {
        summary: c"Stores a cached response for a path, query string and vary set.",
        complexity: c"O(P + T) where P is the path length and T the number of tags.",
        arity: -3,
        key_flags: KEY_RW_INSERT,
    }),
    (c"rcache.get", CommandDoc {
        summary: c"Returns the cached response for a path, query string and vary set.",
        complexity: c"O(1) beyond hashing the arguments.",
        arity: -2,
        key_flags: KEY_RO,
    }),
    (c"rcache.lookup", CommandDoc {
        summary: c"Returns a cached response with its state (FRESH, STALE, MISS), ETag, age and freshness left.",
        complexity: c"O(1) beyond hashing the arguments.",
        arity: -2,
        key_flags: KEY_RO,
    }),
    (c"rcache.del", CommandDoc {
        summary: c"Removes one cached response.",
        complexity: c"O(P) where P is the path length.",
        arity: -2,
        key_flags: KEY_RW_DELETE,
    }),
    (c"rcache.purge", CommandDoc {
        summary: c"Removes every cached response whose path is covered by a prefix.",
        complexity: c"O(P + N) where P is the prefix length and N the entries and index nodes removed.",
        arity: -2,
        key_flags: KEY_RW_DELETE,
    }),
    (c"rcache.softpurge", CommandDoc {
        summary: c"Marks every fresh cached response under a prefix stale for its grace (removes those without grace).",
        complexity: c"O(P + N) where P is the prefix length and N the entries and index nodes covered.",
        arity: -2,
        key_flags: KEY_RW_UPDATE,
    }),
    (c"rcache.purgetag", CommandDoc {
        summary: c"Removes every cached response carrying any of the tags.",
        complexity: c"O(N) where N is the number of entries removed.",
        arity: -2,
        key_flags: 0,
    }),
    (c"rcache.softpurgetag", CommandDoc {
        summary: c"Marks every fresh cached response carrying any of the tags stale for its grace (removes those without grace).",
        complexity: c"O(N) where N is the number of entries carrying the tags.",
        arity: -2,
        key_flags: 0,
    }),
    (c"rcache.list", CommandDoc {
        summary: c"Lists the paths holding cached responses under a prefix, in byte order.",
        complexity: c"O(P + C) where P is the prefix (and AFTER) length and C the paths returned.",
        arity: -2,
        key_flags: KEY_RO_NO_ACCESS,
    }),
    (c"rcache.key", CommandDoc {
        summary: c"Returns the Redis key that holds (or would hold) a cached response.",
        complexity: c"O(P) where P is the length of the arguments.",
        arity: -2,
        key_flags: KEY_RO_NO_ACCESS,
    }),
];

extern "C" fn get_setting(_name: *const c_char, privdata: *mut c_void) -> c_longlong {
    unsafe { &*privdata.cast::<Setting>() }.get()
}

extern "C" fn set_setting(_name: *const c_char, value: c_longlong, privdata: *mut c_void, _err: *mut *mut raw::RedisModuleString) -> c_int {
    // Redis has already checked the range it was registered with.
    match unsafe { &*privdata.cast::<Setting>() }.set(value) {
        Ok(()) => raw::REDISMODULE_OK as c_int,
        Err(_) => raw::REDISMODULE_ERR as c_int,
    }
}

extern "C" fn info(ctx: *mut raw::RedisModuleInfoCtx, _for_crash_report: c_int) {
    let info = InfoCtx::from_raw(ctx);
    // A crash report may be written while the state is locked: report no index figures then.
    let totals = std::panic::catch_unwind(|| store::with(|s| s.totals())).ok();
    info.section();
    info.field_str("module_version", env!("CARGO_PKG_VERSION"));
    if let Some(t) = totals {
        info.field_u64("entries", t.entries);
        info.field_u64("paths", t.paths);
        info.field_u64("tags", t.tags);
    }
    info.field_u64("index_bytes", live_bytes() as u64);
    for (name, value) in STATS.fields() {
        info.field_u64(name, value);
    }
}

fn init(ctx: &Context, args: &[RedisString]) -> Status {
    let c = Ctx::from_raw(ctx.ctx);
    guarded(c, "module load", || Status::Err, || match setup(c, args) {
        Ok(()) => Status::Ok,
        Err(msg) => {
            c.log(c"warning", &format!("rcache: not loaded: {msg}"));
            Status::Err
        }
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
    if !ctx.register_info(Some(info)) {
        return Err("could not register the INFO section".into());
    }
    cluster::register(ctx);
    // Loaded into a running server (MODULE LOAD): index the entries already there.
    // At startup the keyspace is still empty, and loaded data raises `loaded` events.
    events::index_keyspace(ctx);
    Ok(())
}

/// MODULE UNLOAD is refused: Redis would unmap the code while the index, the
/// registered settings and subscriptions still point into it.
fn refuse_unload(ctx: &Context) -> Status {
    Ctx::from_raw(ctx.ctx).log(c"warning", "rcache cannot be unloaded; restart the server without it");
    Status::Err
}

redis_module! {
    name: "rcache",
    version: MODULE_VERSION,
    allocator: (CountingRedisAlloc, CountingRedisAlloc),
    data_types: [],
    init: init,
    deinit: refuse_unload,
    commands: [
        ["rcache.set", commands::set, "write deny-oom", 1, 1, 1, ""],
        ["rcache.get", commands::get, "readonly fast", 1, 1, 1, ""],
        ["rcache.lookup", commands::lookup, "readonly", 1, 1, 1, ""],
        ["rcache.del", commands::del, "write", 1, 1, 1, ""],
        ["rcache.purge", commands::purge, "write", 1, 1, 1, ""],
        ["rcache.softpurge", commands::softpurge, "write", 1, 1, 1, ""],
        ["rcache.purgetag", commands::purgetag, "write", 0, 0, 0, ""],
        ["rcache.softpurgetag", commands::softpurgetag, "write", 0, 0, 0, ""],
        ["rcache.list", commands::list, "readonly", 1, 1, 1, ""],
        ["rcache.key", commands::key, "readonly fast", 1, 1, 1, ""],
    ],
}
