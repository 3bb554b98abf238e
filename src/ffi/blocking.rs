//! Blocked clients and timers: the raw API behind `LOOKUP … WAIT` and lease expiry.
//!
//! A blocked client's private data is a `Box<T>` handed over at unblock time and
//! freed by Redis through [`free_box`], also when the client is gone by then.

use std::ffi::{c_int, c_void};
use std::marker::PhantomData;

use redis_module::raw;

use super::{string_bytes, Ctx};

/// A handle to a client blocked by us, whose private data (if any) is a `T`.
/// Kept as an address so the state that tracks it stays `Send`; valid from
/// [`Ctx::block_client`] until [`Blocked::unblock`] is called on it, once.
pub struct Blocked<T> {
    addr: usize,
    data: PhantomData<fn(T)>,
}

impl<T> Clone for Blocked<T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for Blocked<T> {}

impl<T> std::fmt::Debug for Blocked<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Blocked({:#x})", self.addr)
    }
}

impl<T> Blocked<T> {
    fn from_raw(bc: *mut raw::RedisModuleBlockedClient) -> Option<Self> {
        (!bc.is_null()).then_some(Blocked { addr: bc as usize, data: PhantomData })
    }

    fn raw(self) -> *mut raw::RedisModuleBlockedClient {
        self.addr as *mut raw::RedisModuleBlockedClient
    }

    /// Identifies the handle (the disconnect callback only gets the handle).
    pub fn id(self) -> usize {
        self.addr
    }

    /// Calls `callback` if the client disconnects while blocked.
    pub fn on_disconnect(self, callback: raw::RedisModuleDisconnectFunc) {
        unsafe { rm!(RedisModule_SetDisconnectCallback(self.raw(), callback)) }
    }

    /// Releases the client: Redis calls the reply callback with `data` (when the
    /// client is still connected) and then frees it. Must be called exactly once per
    /// handle, also after a timeout or a disconnect, or Redis leaks the handle.
    pub fn unblock(self, data: Option<Box<T>>) {
        let data = data.map_or(std::ptr::null_mut(), |d| Box::into_raw(d).cast::<c_void>());
        unsafe { rm!(RedisModule_UnblockClient(self.raw(), data)) };
    }

    /// The handle passed to a disconnect callback.
    pub fn from_callback(bc: *mut raw::RedisModuleBlockedClient) -> Option<Self> {
        Self::from_raw(bc)
    }
}

unsafe extern "C" fn free_box<T>(_ctx: *mut raw::RedisModuleCtx, data: *mut c_void) {
    if !data.is_null() {
        drop(unsafe { Box::from_raw(data.cast::<T>()) });
    }
}

/// Arguments a blocked-client callback receives (the blocked command's own).
pub fn callback_args<'a>(argv: *mut *mut raw::RedisModuleString, argc: c_int) -> Vec<&'a [u8]> {
    let argc = usize::try_from(argc).unwrap_or(0);
    if argv.is_null() {
        return Vec::new();
    }
    (0..argc).map(|i| string_bytes(unsafe { *argv.add(i) })).collect()
}

pub type TimerId = u64;

impl Ctx {
    /// Whether the command may block its client: not inside MULTI/EXEC, a script, or
    /// anything else that denies blocking.
    pub fn may_block(&self) -> bool {
        let deny = raw::REDISMODULE_CTX_FLAGS_MULTI | raw::REDISMODULE_CTX_FLAGS_LUA | raw::REDISMODULE_CTX_FLAGS_DENY_BLOCKING;
        self.flags() & deny == 0
    }

    /// Whether this server is a replica.
    pub fn is_replica(&self) -> bool {
        self.flags() & raw::REDISMODULE_CTX_FLAGS_SLAVE != 0
    }

    /// Blocks the calling client for up to `timeout_ms` (0: no timeout). Check
    /// [`Ctx::may_block`] first: inside MULTI or a script Redis refuses with an error.
    pub fn block_client<T>(&self, reply: raw::RedisModuleCmdFunc, timeout: raw::RedisModuleCmdFunc, timeout_ms: i64) -> Option<Blocked<T>> {
        let bc = unsafe { rm!(RedisModule_BlockClient(self.0, reply, timeout, Some(free_box::<T>), timeout_ms)) };
        Blocked::from_raw(bc)
    }

    /// In a reply callback: the data given to [`Blocked::unblock`].
    pub fn blocked_data<T>(&self) -> Option<&T> {
        let data = unsafe { rm!(RedisModule_GetBlockedClientPrivateData(self.0)) };
        (!data.is_null()).then(|| unsafe { &*data.cast::<T>() })
    }

    /// In a timeout callback: the handle of the client that timed out.
    pub fn blocked_handle<T>(&self) -> Option<Blocked<T>> {
        Blocked::from_raw(unsafe { rm!(RedisModule_GetBlockedClientHandle(self.0)) })
    }

    /// Calls `callback` once in `after_ms` milliseconds, in the main thread.
    pub fn create_timer(&self, after_ms: i64, callback: raw::RedisModuleTimerProc) -> TimerId {
        unsafe { rm!(RedisModule_CreateTimer(self.0, after_ms, callback, std::ptr::null_mut())) }
    }

    /// Replies with an error (`msg` starts with its code, e.g. `ERR`).
    pub fn reply_error(&self, msg: &str) {
        let msg = std::ffi::CString::new(msg.replace('\0', "\\0")).unwrap_or_default();
        unsafe { rm!(RedisModule_ReplyWithError(self.0, msg.as_ptr())) };
    }

    /// Cancels a timer that has not fired; false if it already fired (or never existed).
    pub fn stop_timer(&self, id: TimerId) -> bool {
        unsafe { rm!(RedisModule_StopTimer(self.0, id, std::ptr::null_mut())) == raw::REDISMODULE_OK as c_int }
    }
}
