//! Command filters: Redis hands every command to a filter before it looks the command
//! up, and the filter may change its arguments (the server layer uses this to keep
//! hidden entries out of MIGRATE).

use std::ffi::c_char;

use redis_module::raw;

use super::{string_bytes, Ctx};
use crate::core::migrate::Edit;

pub type FilterFn = unsafe extern "C" fn(*mut raw::RedisModuleCommandFilterCtx);

/// The command a filter is looking at.
pub struct FilteredCommand(*mut raw::RedisModuleCommandFilterCtx);

impl FilteredCommand {
    pub fn from_raw(fctx: *mut raw::RedisModuleCommandFilterCtx) -> Self {
        FilteredCommand(fctx)
    }

    pub fn len(&self) -> usize {
        usize::try_from(rm!(RedisModule_CommandFilterArgsCount(self.0))).unwrap_or(0)
    }

    /// Argument `i` (0 is the command's name); empty past the end.
    pub fn arg(&self, i: usize) -> &[u8] {
        let Ok(i) = i32::try_from(i) else { return &[] };
        string_bytes(rm!(RedisModule_CommandFilterArgGet(self.0, i)))
    }

    pub fn args(&self) -> Vec<&[u8]> {
        (0..self.len()).map(|i| self.arg(i)).collect()
    }

    /// Applies `edits` in order; stops at the first Redis refuses (none it plans do).
    pub fn apply(&self, edits: &[Edit]) {
        for edit in edits {
            let done = match *edit {
                Edit::Delete(i) => i32::try_from(i).map(|i| rm!(RedisModule_CommandFilterArgDelete(self.0, i))),
                Edit::Replace(i, with) => i32::try_from(i).map(|i| rm!(RedisModule_CommandFilterArgReplace(self.0, i, detached_string(with)))),
                Edit::Append(with) => i32::try_from(self.len()).map(|at| rm!(RedisModule_CommandFilterArgInsert(self.0, at, detached_string(with)))),
            };
            if done != Ok(raw::REDISMODULE_OK as i32) {
                return;
            }
        }
    }
}

/// A string no context owns: Redis takes it over with the command's arguments.
fn detached_string(bytes: &[u8]) -> *mut raw::RedisModuleString {
    rm!(RedisModule_CreateString(std::ptr::null_mut(), bytes.as_ptr().cast::<c_char>(), bytes.len()))
}

impl Ctx {
    /// Registers `filter` for every command, except those the module itself runs
    /// through `RedisModule_Call`.
    pub fn register_command_filter(&self, filter: FilterFn) -> bool {
        let flags = raw::REDISMODULE_CMDFILTER_NOSELF as i32;
        !rm!(RedisModule_RegisterCommandFilter(self.0, Some(filter), flags)).is_null()
    }
}
