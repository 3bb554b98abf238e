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

pub mod cluster;

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
        RedisModule_StringSet, RedisModule_DeleteKey, RedisModule_SetAbsExpire, RedisModule_CreateString,
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
        RedisModule_GetExpire, RedisModule_ReplyWithArray, RedisModule_ReplyWithSimpleString,
        RedisModule_ReplyWithLongLong, RedisModule_ReplyWithError, RedisModule_Call,
        RedisModule_CallReplyStringPtr, RedisModule_FreeCallReply,
        // Cluster mode (all in Redis 7.0, so required everywhere rather than only in a cluster).
        RedisModule_RegisterClusterMessageReceiver, RedisModule_SendClusterMessage,
        RedisModule_GetClusterNodesList, RedisModule_FreeClusterNodesList, RedisModule_GetClusterNodeInfo,
        RedisModule_BlockClient, RedisModule_UnblockClient,
        RedisModule_GetBlockedClientHandle, RedisModule_GetBlockedClientPrivateData, RedisModule_CreateTimer
    );
    missing
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

    /// The stored bytes of a string key, without copying them.
    pub fn string(&self) -> Option<&[u8]> {
        if self.kind() != KeyKind::String {
            return None;
        }
        let mut len = 0usize;
        let p = unsafe { rm!(RedisModule_StringDMA(self.0, &mut len, raw::REDISMODULE_READ as c_int)) };
        if p.is_null() {
            return Some(&[]);
        }
        Some(unsafe { std::slice::from_raw_parts(p.cast::<u8>(), len) })
    }

    /// Replaces whatever the key holds with `value` and no TTL, as SET does.
    pub fn set_string(&self, value: &RString) -> bool {
        unsafe { rm!(RedisModule_StringSet(self.0, value.ptr)) == raw::REDISMODULE_OK as c_int }
    }

    /// Overwrites `bytes.len()` bytes at `offset` of a string key in place (Redis
    /// unshares the string first); false if the key is no string that long.
    pub fn patch_string(&self, offset: usize, bytes: &[u8]) -> bool {
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

    pub fn set_abs_expire(&self, at_ms: i64) -> bool {
        unsafe { rm!(RedisModule_SetAbsExpire(self.0, at_ms)) == raw::REDISMODULE_OK as c_int }
    }

    pub fn delete(&self) -> bool {
        unsafe { rm!(RedisModule_DeleteKey(self.0)) == raw::REDISMODULE_OK as c_int }
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

    /// Calls `f` with the name of every key in the selected database.
    pub fn scan_keys(&self, mut f: impl FnMut(&[u8])) {
        unsafe extern "C" fn each(
            _ctx: *mut raw::RedisModuleCtx,
            name: *mut raw::RedisModuleString,
            _key: *mut raw::RedisModuleKey,
            privdata: *mut c_void,
        ) {
            let f = unsafe { &mut *privdata.cast::<&mut dyn FnMut(&[u8])>() };
            f(string_bytes(name));
        }
        let mut f: &mut dyn FnMut(&[u8]) = &mut f;
        let privdata = (&mut f as *mut &mut dyn FnMut(&[u8])).cast::<c_void>();
        let cursor = unsafe { rm!(RedisModule_ScanCursorCreate()) };
        while unsafe { rm!(RedisModule_Scan(self.0, cursor, Some(each), privdata)) } != 0 {}
        unsafe { rm!(RedisModule_ScanCursorDestroy(cursor)) };
    }

    fn flags(&self) -> u32 {
        unsafe { rm!(RedisModule_GetContextFlags(self.0)) as u32 }
    }

    /// Reading a key cannot make Redis delete it (lazy expiry) here: the server is
    /// loading data, or is a replica (replicas never expire keys themselves).
    pub fn reads_are_side_effect_free(&self) -> bool {
        self.flags() & (raw::REDISMODULE_CTX_FLAGS_LOADING | raw::REDISMODULE_CTX_FLAGS_SLAVE) != 0
    }

    /// Propagates `SET key value [PXAT at]` to replicas and the AOF.
    pub fn replicate_set(&self, key: &[u8], value: &[u8], pxat: Option<i64>) {
        let (k, v) = (key.as_ptr().cast::<c_char>(), value.as_ptr().cast::<c_char>());
        unsafe {
            match pxat {
                Some(at) => rm!(RedisModule_Replicate(self.0, c"SET".as_ptr(), c"bbcl".as_ptr(), k, key.len(), v, value.len(), c"PXAT".as_ptr(), at as c_longlong)),
                None => rm!(RedisModule_Replicate(self.0, c"SET".as_ptr(), c"bb".as_ptr(), k, key.len(), v, value.len())),
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
            rm!(RedisModule_FreeString(self.0, name));
            if user.is_null() {
                AclUser::Unknown
            } else {
                AclUser::User(*self, user)
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
    User(Ctx, *mut raw::RedisModuleUser),
}

impl AclUser {
    /// Whether this user may write (delete) the key named `name`.
    pub fn may_write(&self, name: &[u8]) -> bool {
        match self {
            AclUser::Internal => true,
            AclUser::Unknown => false,
            AclUser::User(ctx, user) => {
                let key = ctx.string(name);
                let flags = raw::REDISMODULE_CMD_KEY_DELETE as c_int;
                unsafe { rm!(RedisModule_ACLCheckKeyPermissions(*user, key.ptr, flags)) == raw::REDISMODULE_OK as c_int }
            }
        }
    }
}

impl Drop for AclUser {
    fn drop(&mut self) {
        if let AclUser::User(_, user) = self {
            unsafe { rm!(RedisModule_FreeModuleUser(*user)) };
        }
    }
}

/// What `COMMAND DOCS` / `COMMAND INFO` say about a command.
pub struct CommandDoc {
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
