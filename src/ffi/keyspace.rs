//! Raw API for the module's own bookkeeping: reading keys without disturbing
//! eviction, scanning with the key handles Redis already holds, signalling paths as
//! modified keys, and module start-up.

use std::any::Any;
use std::ffi::{c_int, c_void, CStr};
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};

use redis_module::raw;

use super::{readable_string, string_bytes, Ctx};

impl Ctx {
    /// Calls `f` with the stored bytes of the key `name` in the selected database, or
    /// `None` when it holds no string that can be an entry. The key is opened with
    /// `REDISMODULE_OPEN_KEY_NOTOUCH`, so its LRU/LFU data (eviction order, `OBJECT
    /// IDLETIME`/`FREQ`) stays as it was; nothing is written.
    pub fn peek_string<R>(&self, name: &[u8], f: impl FnOnce(Option<&[u8]>) -> R) -> R {
        let name = self.string(name);
        let mode = raw::REDISMODULE_READ | raw::REDISMODULE_OPEN_KEY_NOTOUCH;
        let key: *mut raw::RedisModuleKey = unsafe { rm!(RedisModule_OpenKey(self.0, name.ptr, mode as c_int)) }.cast();
        let out = f(readable_string(key));
        if !key.is_null() {
            unsafe { rm!(RedisModule_CloseKey(key)) };
        }
        out
    }

    /// Calls `f(name, bytes)` for every key in the selected database, with the bytes
    /// as [`Ctx::peek_string`] gives them, from the key handle the scan already holds
    /// (no second lookup, no LRU/LFU update). A panic in `f` stops calling it and is
    /// resumed once the scan has returned, outside Redis' frames, for the caller's guard.
    pub fn scan_strings<F: FnMut(&[u8], Option<&[u8]>)>(&self, f: F) {
        struct Scan<G> {
            f: G,
            panic: Option<Box<dyn Any + Send>>,
        }
        unsafe extern "C" fn each<G: FnMut(&[u8], Option<&[u8]>)>(
            _ctx: *mut raw::RedisModuleCtx,
            name: *mut raw::RedisModuleString,
            key: *mut raw::RedisModuleKey,
            privdata: *mut c_void,
        ) {
            let scan = unsafe { &mut *privdata.cast::<Scan<G>>() };
            if scan.panic.is_none() {
                let f = &mut scan.f;
                if let Err(payload) = catch_unwind(AssertUnwindSafe(|| f(string_bytes(name), readable_string(key)))) {
                    scan.panic = Some(payload);
                }
            }
        }
        let mut scan = Scan { f, panic: None };
        let privdata = (&mut scan as *mut Scan<F>).cast::<c_void>();
        let cursor = unsafe { rm!(RedisModule_ScanCursorCreate()) };
        while unsafe { rm!(RedisModule_Scan(self.0, cursor, Some(each::<F>), privdata)) } != 0 {}
        unsafe { rm!(RedisModule_ScanCursorDestroy(cursor)) };
        if let Some(payload) = scan.panic {
            resume_unwind(payload);
        }
    }

    /// Tells Redis the key `name` (a path: the key RCACHE commands declare) changed in
    /// the selected database: `WATCH`ers' transactions fail and tracking clients get an
    /// invalidation. Touches no data, so it is allowed inside keyspace notifications.
    pub fn signal_modified(&self, name: &[u8]) {
        let name = self.string(name);
        unsafe { rm!(RedisModule_SignalModifiedKey(self.0, name.ptr)) };
    }

    /// Opts in to async replica loading: the module follows the `ReplAsyncLoad` events.
    pub fn handle_repl_async_load(&self) {
        unsafe { rm!(RedisModule_SetModuleOptions(self.0, raw::REDISMODULE_OPTIONS_HANDLE_REPL_ASYNC_LOAD as c_int)) };
    }
}

/// `RedisModule_Init` for the module `name`; fills in the API function pointers.
pub fn init_module(ctx: *mut raw::RedisModuleCtx, name: &CStr, version: c_int) -> bool {
    let status = unsafe { raw::Export_RedisModule_Init(ctx, name.as_ptr(), version, raw::REDISMODULE_APIVER_1 as c_int) };
    status != raw::REDISMODULE_ERR as c_int
}
