//! The one wrapper every entry point from Redis goes through: a panic inside the
//! module must become an error reply and a log line, never a crashed server.

use std::any::Any;
use std::panic::{catch_unwind, AssertUnwindSafe};

use crate::ffi::Ctx;

fn panic_message(payload: &(dyn Any + Send)) -> &str {
    payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("unknown panic")
}

/// Runs `f`; on a panic logs it (naming `what`) and returns `fallback()`.
pub fn guarded<T>(ctx: Ctx, what: &str, fallback: impl FnOnce() -> T, f: impl FnOnce() -> T) -> T {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(v) => v,
        Err(payload) => {
            ctx.log(c"warning", &format!("rcache: internal error in {what}: {}", panic_message(payload.as_ref())));
            fallback()
        }
    }
}
