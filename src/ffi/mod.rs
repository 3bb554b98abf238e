//! The one place that touches Redis' raw module API. Everything above it works with
//! byte slices and the small safe wrappers here.
//!
//! Every API function used here exists in Redis 7.0; `lib.rs` checks at load time
//! that the server exports them, so the `None` arm of [`rm!`] cannot be reached once
//! the module has loaded.

// `rm!` carries its own `unsafe`, and some callers need an outer block for raw pointers.
#![allow(unused_unsafe)]

use std::ffi::{c_char, c_int, c_longlong, c_void, CStr, CString};
use std::ptr;

use redis_module::raw;

/// Calls a Redis API function through its (always set after load) pointer.
macro_rules! rm {
    ($f:ident($($arg:expr),* $(,)?)) => {
        match unsafe { raw::$f } {
            Some(f) => unsafe { f($($arg),*) },
            None => $crate::ffi::missing_api(stringify!($f)),
        }
    };
}

mod blocking;
pub use blocking::{callback_args, Blocked, TimerId};
pub mod cluster;
mod filter;
pub use filter::FilteredCommand;

#[cold]
fn missing_api(name: &str) -> ! {
    // Unreachable after a successful load (see `missing_apis`); the command guard
    // turns it into an error reply rather than a crash.
    panic!("Redis does not export {name}")
}

/// The API functions the module calls; checked once at load.
pub fn missing_apis() -> Vec<&'static str> {
    let mut missing = Vec::new();
    macro_rules! check {
        ($($f:ident),*) => { $( if unsafe { raw::$f }.is_none() { missing.push(stringify!($f)); } )* };
    }
    check!(
        RedisModule_OpenKey, RedisModule_CloseKey, RedisModule_KeyType, RedisModule_StringDMA,
        RedisModule_DeleteKey, RedisModule_SetAbsExpire, RedisModule_CreateString,
        RedisModule_FreeString, RedisModule_Replicate, RedisModule_NotifyKeyspaceEvent,
        RedisModule_GetSelectedDb, RedisModule_GetContextFlags, RedisModule_Milliseconds,
        RedisModule_ReplyWithStringBuffer, RedisModule_ReplyWithNull, RedisModule_Log,
        RedisModule_SubscribeToServerEvent, RedisModule_SubscribeToKeyspaceEvents,
        RedisModule_SetCommandInfo, RedisModule_GetCommand, RedisModule_RegisterNumericConfig,
        RedisModule_LoadConfigs, RedisModule_RegisterInfoFunc, RedisModule_InfoAddSection,
        RedisModule_InfoAddFieldULongLong, RedisModule_InfoAddFieldCString, RedisModule_StringPtrLen,
        RedisModule_GetCurrentUserName, RedisModule_GetModuleUserFromUserName,
        RedisModule_FreeModuleUser, RedisModule_ACLCheckKeyPermissions, RedisModule_SelectDb,
        RedisModule_ScanCursorCreate, RedisModule_ScanCursorDestroy, RedisModule_Scan,
        RedisModule_BlockClient, RedisModule_UnblockClient, RedisModule_GetBlockedClientPrivateData,
        RedisModule_GetBlockedClientHandle, RedisModule_SetDisconnectCallback, RedisModule_CreateTimer,
        RedisModule_StopTimer, RedisModule_ReplyWithError,
        RedisModule_GetExpire, RedisModule_ReplyWithArray, RedisModule_ReplyWithSimpleString,
        RedisModule_ReplyWithLongLong, RedisModule_CreateCommand,
        RedisModule_StringTruncate, RedisModule_SetExpire, RedisModule_MallocSize,
        RedisModule_Call, RedisModule_CallReplyArrayElement, RedisModule_CallReplyLength,
        RedisModule_CallReplyStringPtr, RedisModule_FreeCallReply,
        RedisModule_ValueLength, RedisModule_SignalModifiedKey, RedisModule_SetModuleOptions,
        // Cluster mode (all in Redis 7.0, so required everywhere rather than only in a cluster).
        RedisModule_RegisterClusterMessageReceiver, RedisModule_SendClusterMessage,
        RedisModule_GetClusterNodesList, RedisModule_FreeClusterNodesList, RedisModule_GetClusterNodeInfo,
        RedisModule_RegisterCommandFilter, RedisModule_CommandFilterArgsCount, RedisModule_CommandFilterArgGet,
        RedisModule_CommandFilterArgDelete, RedisModule_CommandFilterArgReplace, RedisModule_CommandFilterArgInsert
    );
    missing
}

/// A command's handler. Redis calls [`entry_point`] of it; the handler reads the
/// arguments through [`Argv`], runs behind the panic guard and replies itself.
pub trait Command {
    fn call(ctx: Ctx, argv: Argv<'_>);
}

/// What Redis calls for a command.
pub type CommandFn = unsafe extern "C" fn(*mut raw::RedisModuleCtx, *mut *mut raw::RedisModuleString, c_int) -> c_int;

/// The raw entry point of command `C`, registered with `RedisModule_CreateCommand`.
/// Unlike redis-module's wrapper it neither retains a `RedisString` per argument nor
/// collects them in a `Vec`: the arguments are read in place (see [`Argv`]).
pub unsafe extern "C" fn entry_point<C: Command>(ctx: *mut raw::RedisModuleCtx, argv: *mut *mut raw::RedisModuleString, argc: c_int) -> c_int {
    let argv = match usize::try_from(argc) {
        Ok(n) if !argv.is_null() => unsafe { std::slice::from_raw_parts(argv.cast_const(), n) },
        _ => &[],
    };
    C::call(Ctx(ctx), Argv(argv));
    raw::REDISMODULE_OK as c_int
}

/// A command's argument vector, valid for the duration of the call.
#[derive(Clone, Copy)]
pub struct Argv<'a>(&'a [*mut raw::RedisModuleString]);

impl Argv<'_> {
    /// Calls `f` with the arguments after the command name as byte slices borrowed from
    /// Redis' strings (`StringPtrLen`: no copy); up to 16 of them without allocating.
    pub fn with_bytes<R>(self, f: impl FnOnce(&[&[u8]]) -> R) -> R {
        let args = self.0.get(1..).unwrap_or_default();
        let mut few: [&[u8]; 16] = [&[]; 16];
        if args.len() <= few.len() {
            for (slot, &a) in few.iter_mut().zip(args) {
                *slot = string_bytes(a);
            }
            f(few.get(..args.len()).unwrap_or_default())
        } else {
            f(&args.iter().map(|&a| string_bytes(a)).collect::<Vec<_>>())
        }
    }
}

/// A module context handed to us by Redis for the duration of one callback.
#[derive(Clone, Copy)]
pub struct Ctx(*mut raw::RedisModuleCtx);

/// A Redis string we created; freed on drop.
pub struct RString {
    ctx: *mut raw::RedisModuleCtx,
    ptr: *mut raw::RedisModuleString,
}

impl Drop for RString {
    fn drop(&mut self) {
        unsafe { rm!(RedisModule_FreeString(self.ctx, self.ptr)) }
    }
}

/// Strings up to this many bytes may be stored `int`- or `embstr`-encoded, and
/// `RedisModule_StringDMA` "unshares" those: it replaces the key's value (a keyspace
/// write, which also resets its LRU clock). Longer strings are always `raw` and are
/// read in place. Every entry layout is longer than this (v1: a 50-byte fixed header),
/// and purge records are padded to the same length.
const SHARED_ENCODING_MAX: usize = 44;

/// The bytes of a string value that can be read in place, from an open key handle:
/// `None` for an empty key, another type, or a string too short to be an entry.
fn readable_string<'a>(key: *mut raw::RedisModuleKey) -> Option<&'a [u8]> {
    if key.is_null() || unsafe { rm!(RedisModule_KeyType(key)) } as isize != raw::REDISMODULE_KEYTYPE_STRING {
        return None;
    }
    if unsafe { rm!(RedisModule_ValueLength(key)) } <= SHARED_ENCODING_MAX {
        return None;
    }
    let mut len = 0usize;
    let p = unsafe { rm!(RedisModule_StringDMA(key, &mut len, raw::REDISMODULE_READ as c_int)) };
    (!p.is_null()).then(|| unsafe { std::slice::from_raw_parts(p.cast::<u8>(), len) })
}

/// Borrows the bytes of a Redis string (argument, key name).
pub fn string_bytes<'a>(s: *const raw::RedisModuleString) -> &'a [u8] {
    if s.is_null() {
        return &[];
    }
    let mut len = 0usize;
    let p = unsafe { rm!(RedisModule_StringPtrLen(s, &mut len)) };
    if p.is_null() {
        return &[];
    }
    unsafe { std::slice::from_raw_parts(p.cast::<u8>(), len) }
}

#[derive(Debug, PartialEq, Eq)]
pub enum KeyKind {
    Empty,
    String,
    Other,
}

/// An open key; closed on drop.
pub struct Key(*mut raw::RedisModuleKey);

impl Drop for Key {
    fn drop(&mut self) {
        if !self.0.is_null() {
            unsafe { rm!(RedisModule_CloseKey(self.0)) }
        }
    }
}

impl Key {
    pub fn kind(&self) -> KeyKind {
        if self.0.is_null() {
            return KeyKind::Empty;
        }
        match unsafe { rm!(RedisModule_KeyType(self.0)) } as isize {
            raw::REDISMODULE_KEYTYPE_EMPTY => KeyKind::Empty,
            raw::REDISMODULE_KEYTYPE_STRING => KeyKind::String,
            _ => KeyKind::Other,
        }
    }

    /// The stored bytes of a string key, without copying them: `None` for no string or
    /// one too short to be an entry (or a purge record), which is not read in place.
    pub fn string(&self) -> Option<&[u8]> {
        readable_string(self.0)
    }

    /// Replaces whatever the key holds with a string of `len` bytes that `fill` writes
    /// in place (one copy, no intermediate buffer), keeping any TTL. A string of that
    /// size already there is overwritten where it is; anything else is deleted first,
    /// so the new string is allocated at its exact size (growing one would over-allocate).
    pub fn write_string(&mut self, len: usize, fill: impl FnOnce(&mut [u8])) -> bool {
        if self.string().is_none_or(|s| s.len() != len) {
            if self.kind() != KeyKind::Empty && !self.delete() {
                return false;
            }
            if unsafe { rm!(RedisModule_StringTruncate(self.0, len)) } != raw::REDISMODULE_OK as c_int {
                return false;
            }
        }
        let mut n = 0usize;
        let mode = (raw::REDISMODULE_READ | raw::REDISMODULE_WRITE) as c_int;
        let p = unsafe { rm!(RedisModule_StringDMA(self.0, &mut n, mode)) };
        if p.is_null() || n != len {
            return false;
        }
        fill(unsafe { std::slice::from_raw_parts_mut(p.cast::<u8>(), n) });
        true
    }

    /// Overwrites `bytes.len()` bytes at `offset` of a string key in place (Redis
    /// unshares the string first); false if the key is no string that long.
    pub fn patch_string(&mut self, offset: usize, bytes: &[u8]) -> bool {
        if self.kind() != KeyKind::String {
            return false;
        }
        let mut len = 0usize;
        let mode = (raw::REDISMODULE_READ | raw::REDISMODULE_WRITE) as c_int;
        let p = unsafe { rm!(RedisModule_StringDMA(self.0, &mut len, mode)) };
        if p.is_null() || offset.checked_add(bytes.len()).is_none_or(|end| end > len) {
            return false;
        }
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), p.cast::<u8>().add(offset), bytes.len()) };
        true
    }

    /// The absolute expiry in ms since the epoch, if the key has one.
    pub fn abs_expire(&self) -> Option<i64> {
        if self.0.is_null() {
            return None;
        }
        let ttl = unsafe { rm!(RedisModule_GetExpire(self.0)) };
        (ttl >= 0).then(|| milliseconds().saturating_add(ttl))
    }

    pub fn remove_expire(&mut self) -> bool {
        unsafe { rm!(RedisModule_SetExpire(self.0, raw::REDISMODULE_NO_EXPIRE as c_longlong)) == raw::REDISMODULE_OK as c_int }
    }

    pub fn set_abs_expire(&mut self, at_ms: i64) -> bool {
        unsafe { rm!(RedisModule_SetAbsExpire(self.0, at_ms)) == raw::REDISMODULE_OK as c_int }
    }

    pub fn delete(&mut self) -> bool {
        unsafe { rm!(RedisModule_DeleteKey(self.0)) == raw::REDISMODULE_OK as c_int }
    }
}

/// The bytes Redis' allocator really holds for `ptr` (its usable size: the size
/// class, not the size asked for), as `used_memory` counts them. Called from the
/// global allocator, so it must not panic or allocate: 0 before the module API is
/// set up (then the allocator itself is not usable either).
pub fn malloc_size(ptr: *mut u8) -> usize {
    match unsafe { raw::RedisModule_MallocSize } {
        Some(f) => unsafe { f(ptr.cast()) },
        None => 0,
    }
}

pub fn milliseconds() -> i64 {
    unsafe { rm!(RedisModule_Milliseconds()) }
}

/// Event classes for [`Ctx::notify`].
pub const NOTIFY_GENERIC: c_int = raw::REDISMODULE_NOTIFY_GENERIC;
pub const NOTIFY_STRING: c_int = raw::REDISMODULE_NOTIFY_STRING;

impl Ctx {
    pub fn from_raw(ctx: *mut raw::RedisModuleCtx) -> Self {
        Ctx(ctx)
    }

    /// No context, for callbacks Redis gives none (command filters): only [`log`](Self::log)
    /// works on it.
    pub fn detached() -> Self {
        Ctx(ptr::null_mut())
    }

    pub fn string(&self, bytes: &[u8]) -> RString {
        let ptr = unsafe { rm!(RedisModule_CreateString(self.0, bytes.as_ptr().cast::<c_char>(), bytes.len())) };
        RString { ctx: self.0, ptr }
    }

    pub fn open_key(&self, name: &RString, write: bool) -> Key {
        let mode = if write { raw::REDISMODULE_READ | raw::REDISMODULE_WRITE } else { raw::REDISMODULE_READ };
        Key(unsafe { rm!(RedisModule_OpenKey(self.0, name.ptr, mode as c_int)) }.cast())
    }

    pub fn selected_db(&self) -> i32 {
        unsafe { rm!(RedisModule_GetSelectedDb(self.0)) }
    }

    pub fn select_db(&self, db: i32) -> bool {
        unsafe { rm!(RedisModule_SelectDb(self.0, db)) == raw::REDISMODULE_OK as c_int }
    }

    fn flags(&self) -> u32 {
        unsafe { rm!(RedisModule_GetContextFlags(self.0)) as u32 }
    }

    pub fn is_loading(&self) -> bool {
        self.flags() & raw::REDISMODULE_CTX_FLAGS_LOADING != 0
    }

    /// Reading a key cannot make Redis delete it (lazy expiry) here: the server is
    /// loading data, or is a replica (replicas never expire keys themselves).
    pub fn reads_are_side_effect_free(&self) -> bool {
        self.flags() & (raw::REDISMODULE_CTX_FLAGS_LOADING | raw::REDISMODULE_CTX_FLAGS_SLAVE) != 0
    }

    /// Propagates `SET key value [PXAT at]` to replicas and the AOF.
    pub fn replicate_set(&self, key: &RString, value: &[u8], pxat: Option<i64>) {
        let v = value.as_ptr().cast::<c_char>();
        unsafe {
            match pxat {
                Some(at) => rm!(RedisModule_Replicate(self.0, c"SET".as_ptr(), c"sbcl".as_ptr(), key.ptr, v, value.len(), c"PXAT".as_ptr(), at as c_longlong)),
                None => rm!(RedisModule_Replicate(self.0, c"SET".as_ptr(), c"sb".as_ptr(), key.ptr, v, value.len())),
            };
        }
    }

    /// Propagates an in-place rewrite and a new absolute expiry:
    /// `SETRANGE key offset bytes` then `PEXPIREAT key at`.
    pub fn replicate_patch(&self, key: &RString, offset: usize, bytes: &[u8], pexpireat: i64) {
        unsafe {
            rm!(RedisModule_Replicate(self.0, c"SETRANGE".as_ptr(), c"slb".as_ptr(), key.ptr, offset as c_longlong, bytes.as_ptr().cast::<c_char>(), bytes.len()));
            rm!(RedisModule_Replicate(self.0, c"PEXPIREAT".as_ptr(), c"sl".as_ptr(), key.ptr, pexpireat as c_longlong));
        }
    }

    /// Propagates `UNLINK key…` in batches.
    pub fn replicate_unlink(&self, keys: &[RString]) {
        for batch in keys.chunks(1024) {
            let mut argv: Vec<*mut raw::RedisModuleString> = batch.iter().map(|k| k.ptr).collect();
            unsafe {
                rm!(RedisModule_Replicate(self.0, c"UNLINK".as_ptr(), c"v".as_ptr(), argv.as_mut_ptr(), argv.len()));
            }
        }
    }

    pub fn notify(&self, class: c_int, event: &CStr, key: &RString) {
        unsafe {
            rm!(RedisModule_NotifyKeyspaceEvent(self.0, class, event.as_ptr(), key.ptr));
        }
    }

    /// Registers a command; `entry` is the [`entry_point`] of its handler. A command
    /// whose `first_key` is 0 declares no key.
    pub fn create_command(&self, name: &CStr, entry: CommandFn, flags: &CStr, first_key: c_int) -> bool {
        let step = c_int::from(first_key != 0);
        unsafe {
            rm!(RedisModule_CreateCommand(self.0, name.as_ptr(), Some(entry), flags.as_ptr(), first_key, first_key, step))
                == raw::REDISMODULE_OK as c_int
        }
    }

    /// Replies with a bulk string copied straight from `bytes`.
    pub fn reply_bulk(&self, bytes: &[u8]) {
        unsafe {
            rm!(RedisModule_ReplyWithStringBuffer(self.0, bytes.as_ptr().cast::<c_char>(), bytes.len()));
        }
    }

    pub fn reply_array(&self, len: usize) {
        unsafe {
            rm!(RedisModule_ReplyWithArray(self.0, len as std::ffi::c_long));
        }
    }

    pub fn reply_simple(&self, status: &CStr) {
        unsafe {
            rm!(RedisModule_ReplyWithSimpleString(self.0, status.as_ptr()));
        }
    }

    pub fn reply_i64(&self, n: i64) {
        unsafe {
            rm!(RedisModule_ReplyWithLongLong(self.0, n as c_longlong));
        }
    }

    pub fn reply_null(&self) {
        unsafe {
            rm!(RedisModule_ReplyWithNull(self.0));
        }
    }

    /// The calling client's ACL user, looked up once per command.
    pub fn acl_user(&self) -> AclUser {
        unsafe {
            let name = rm!(RedisModule_GetCurrentUserName(self.0));
            if name.is_null() {
                return AclUser::Internal; // no client: AOF loading, the replication stream
            }
            let user = rm!(RedisModule_GetModuleUserFromUserName(name));
            let named = string_bytes(name).to_vec();
            rm!(RedisModule_FreeString(self.0, name));
            if user.is_null() {
                AclUser::Unknown
            } else {
                AclUser::User(*self, user, named)
            }
        }
    }

    pub fn log(&self, level: &CStr, msg: &str) {
        let msg = CString::new(msg.replace('\0', "\\0")).unwrap_or_default();
        unsafe {
            rm!(RedisModule_Log(self.0, level.as_ptr(), c"%s".as_ptr(), msg.as_ptr()));
        }
    }

    pub fn subscribe_server_event(&self, event_id: u64, callback: raw::RedisModuleEventCallback) -> bool {
        let event = raw::RedisModuleEvent { id: event_id, dataver: 1 };
        unsafe { rm!(RedisModule_SubscribeToServerEvent(self.0, event, callback)) == raw::REDISMODULE_OK as c_int }
    }

    pub fn subscribe_keyspace_events(&self, classes: c_int, callback: raw::RedisModuleNotificationFunc) -> bool {
        unsafe { rm!(RedisModule_SubscribeToKeyspaceEvents(self.0, classes, callback)) == raw::REDISMODULE_OK as c_int }
    }

    pub fn register_info(&self, callback: raw::RedisModuleInfoFunc) -> bool {
        unsafe { rm!(RedisModule_RegisterInfoFunc(self.0, callback)) == raw::REDISMODULE_OK as c_int }
    }

    /// Registers a numeric module config whose value lives behind `privdata`.
    pub fn register_numeric_config(
        &self,
        name: &CStr,
        default: i64,
        min: i64,
        max: i64,
        get: raw::RedisModuleConfigGetNumericFunc,
        set: raw::RedisModuleConfigSetNumericFunc,
        privdata: *mut c_void,
    ) -> bool {
        unsafe {
            rm!(RedisModule_RegisterNumericConfig(
                self.0, name.as_ptr(), default, raw::REDISMODULE_CONFIG_DEFAULT, min, max, get, set, None, privdata
            )) == raw::REDISMODULE_OK as c_int
        }
    }

    pub fn load_configs(&self) -> bool {
        unsafe { rm!(RedisModule_LoadConfigs(self.0)) == raw::REDISMODULE_OK as c_int }
    }

    /// Attaches arity, documentation and (optionally) a one-key spec at argument 1.
    pub fn set_command_info(&self, name: &CStr, doc: &CommandDoc) -> bool {
        unsafe {
            let command = rm!(RedisModule_GetCommand(self.0, name.as_ptr()));
            if command.is_null() {
                return false;
            }
            let version = raw::RedisModuleCommandInfoVersion {
                version: 1,
                sizeof_historyentry: std::mem::size_of::<raw::RedisModuleCommandHistoryEntry>(),
                sizeof_keyspec: std::mem::size_of::<raw::RedisModuleCommandKeySpec>(),
                sizeof_arg: std::mem::size_of::<raw::RedisModuleCommandArg>(),
            };
            // A zeroed spec terminates the array.
            let mut specs: [raw::RedisModuleCommandKeySpec; 2] = std::mem::zeroed();
            specs[0].flags = doc.key_flags as u64;
            specs[0].begin_search_type = raw::RedisModuleKeySpecBeginSearchType_REDISMODULE_KSPEC_BS_INDEX;
            specs[0].bs.index.pos = 1;
            specs[0].find_keys_type = raw::RedisModuleKeySpecFindKeysType_REDISMODULE_KSPEC_FK_RANGE;
            specs[0].fk.range.lastkey = 0;
            specs[0].fk.range.keystep = 1;
            specs[0].fk.range.limit = 0;
            let info = raw::RedisModuleCommandInfo {
                version: &version,
                summary: doc.summary.as_ptr(),
                complexity: doc.complexity.as_ptr(),
                since: c"0.1.0".as_ptr(),
                history: ptr::null_mut(),
                tips: ptr::null(),
                arity: doc.arity,
                key_specs: if doc.key_flags == 0 { ptr::null_mut() } else { specs.as_mut_ptr() },
                args: ptr::null_mut(),
            };
            rm!(RedisModule_SetCommandInfo(command, &info)) == raw::REDISMODULE_OK as c_int
        }
    }
}

/// An ACL user for key permission checks; released on drop.
pub enum AclUser {
    Internal,
    Unknown,
    /// The user, and its name.
    User(Ctx, *mut raw::RedisModuleUser, Vec<u8>),
}

impl AclUser {
    /// Whether this user may write every key: its root key permissions include `~*`
    /// (or `%W~*`, `%RW~*`), read with `ACL GETUSER`. A purge then needs no check per
    /// covered path. False whenever that cannot be told.
    pub fn writes_every_key(&self) -> bool {
        let (ctx, name) = match self {
            AclUser::Internal => return true,
            AclUser::Unknown => return false,
            AclUser::User(ctx, _, name) => (ctx, name),
        };
        unsafe {
            let name = ctx.string(name);
            let reply = rm!(RedisModule_Call(ctx.0, c"ACL".as_ptr(), c"cs".as_ptr(), c"GETUSER".as_ptr(), name.ptr));
            if reply.is_null() {
                return false;
            }
            let field = |i: usize| call_reply_bytes(rm!(RedisModule_CallReplyArrayElement(reply, i)));
            let len = rm!(RedisModule_CallReplyLength(reply));
            let keys = (0..len).step_by(2).find(|&i| field(i) == b"keys").map(|i| field(i + 1));
            let every = keys.is_some_and(|k| k.split(|&b| b == b' ').any(|p| matches!(p, b"~*" | b"%W~*" | b"%RW~*" | b"%WR~*")));
            rm!(RedisModule_FreeCallReply(reply));
            every
        }
    }

    /// Whether this user may write (delete) the key named `name`.
    pub fn may_write(&self, name: &[u8]) -> bool {
        match self {
            AclUser::Internal => true,
            AclUser::Unknown => false,
            AclUser::User(ctx, user, _) => {
                let key = ctx.string(name);
                let flags = raw::REDISMODULE_CMD_KEY_DELETE as c_int;
                unsafe { rm!(RedisModule_ACLCheckKeyPermissions(*user, key.ptr, flags)) == raw::REDISMODULE_OK as c_int }
            }
        }
    }
}

impl Drop for AclUser {
    fn drop(&mut self) {
        if let AclUser::User(_, user, _) = self {
            unsafe { rm!(RedisModule_FreeModuleUser(*user)) };
        }
    }
}

/// A command: what Redis runs and what `COMMAND DOCS` / `COMMAND INFO` say about it.
pub struct CommandDoc {
    pub entry: CommandFn,
    /// Redis' command flags (`write deny-oom`, `readonly fast`, ...).
    pub flags: &'static CStr,
    pub summary: &'static CStr,
    pub complexity: &'static CStr,
    pub arity: c_int,
    /// Key-spec flags for the path at argument 1; 0 for a command with no key.
    pub key_flags: u32,
}

pub const KEY_RO: u32 = raw::REDISMODULE_CMD_KEY_RO | raw::REDISMODULE_CMD_KEY_ACCESS;
pub const KEY_RW_INSERT: u32 = raw::REDISMODULE_CMD_KEY_RW | raw::REDISMODULE_CMD_KEY_UPDATE;
/// A soft purge rewrites part of each entry (Redis allows one of INSERT, DELETE, UPDATE).
pub const KEY_RW_UPDATE: u32 = raw::REDISMODULE_CMD_KEY_RW | raw::REDISMODULE_CMD_KEY_UPDATE;
pub const KEY_RW_DELETE: u32 = raw::REDISMODULE_CMD_KEY_RW | raw::REDISMODULE_CMD_KEY_DELETE;
pub const KEY_RO_NO_ACCESS: u32 = raw::REDISMODULE_CMD_KEY_RO;

/// An INFO callback's context.
pub struct InfoCtx(*mut raw::RedisModuleInfoCtx);

impl InfoCtx {
    pub fn from_raw(ctx: *mut raw::RedisModuleInfoCtx) -> Self {
        InfoCtx(ctx)
    }

    pub fn section(&self) {
        unsafe {
            rm!(RedisModule_InfoAddSection(self.0, c"".as_ptr()));
        }
    }

    pub fn field_u64(&self, name: &str, value: u64) {
        let name = CString::new(name).unwrap_or_default();
        unsafe {
            rm!(RedisModule_InfoAddFieldULongLong(self.0, name.as_ptr(), value));
        }
    }

    pub fn field_str(&self, name: &str, value: &str) {
        let (name, value) = (CString::new(name).unwrap_or_default(), CString::new(value).unwrap_or_default());
        unsafe {
            rm!(RedisModule_InfoAddFieldCString(self.0, name.as_ptr(), value.as_ptr()));
        }
    }
}

/// The bytes of a string or bulk call reply (empty for any other type).
fn call_reply_bytes<'a>(reply: *mut raw::RedisModuleCallReply) -> &'a [u8] {
    if reply.is_null() {
        return &[];
    }
    let mut len = 0usize;
    let p = unsafe { rm!(RedisModule_CallReplyStringPtr(reply, &mut len)) };
    if p.is_null() {
        return &[];
    }
    unsafe { std::slice::from_raw_parts(p.cast::<u8>(), len) }
}

/// Redis hands event data as a `void *`; these read the two payloads we use.
pub fn flush_db_number(data: *mut c_void) -> Option<i32> {
    (!data.is_null()).then(|| unsafe { (*data.cast::<raw::RedisModuleFlushInfo>()).dbnum })
}

pub fn swapped_dbs(data: *mut c_void) -> Option<(i32, i32)> {
    (!data.is_null()).then(|| unsafe {
        let info = &*data.cast::<raw::RedisModuleSwapDbInfo>();
        (info.dbnum_first, info.dbnum_second)
    })
}

mod keyspace;
pub use keyspace::init_module;
