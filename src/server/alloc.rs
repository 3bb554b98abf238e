//! The module's global allocator: Redis' allocator (so the index counts towards
//! `used_memory` and `maxmemory`), counting the bytes the module holds live. Between
//! commands that is the indexes and little else, which INFO reports as `index_bytes`.
//!
//! It counts what the allocator really holds for each block (its size class), as
//! `used_memory` does: counting the sizes asked for under-reported by 17-23 %.

use std::alloc::{GlobalAlloc, Layout};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

use redis_module::alloc::RedisAlloc;

use crate::ffi::malloc_size;

pub struct CountingRedisAlloc;

static LIVE_BYTES: AtomicUsize = AtomicUsize::new(0);

pub fn live_bytes() -> usize {
    LIVE_BYTES.load(Relaxed)
}

unsafe impl GlobalAlloc for CountingRedisAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = RedisAlloc.alloc(layout);
        if !p.is_null() {
            LIVE_BYTES.fetch_add(malloc_size(p), Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE_BYTES.fetch_sub(malloc_size(ptr), Relaxed);
        RedisAlloc.dealloc(ptr, layout);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let before = malloc_size(ptr);
        let p = RedisAlloc.realloc(ptr, layout, new_size);
        if !p.is_null() {
            LIVE_BYTES.fetch_sub(before, Relaxed);
            LIVE_BYTES.fetch_add(malloc_size(p), Relaxed);
        }
        p
    }
}
