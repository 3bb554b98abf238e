//! The module's global allocator: Redis' allocator (so the index counts towards
//! `used_memory` and `maxmemory`), counting the bytes the module holds live. Between
//! commands that is the indexes and little else, which INFO reports as `index_bytes`.

use std::alloc::{GlobalAlloc, Layout};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

use redis_module::alloc::RedisAlloc;

pub struct CountingRedisAlloc;

static LIVE_BYTES: AtomicUsize = AtomicUsize::new(0);

pub fn live_bytes() -> usize {
    LIVE_BYTES.load(Relaxed)
}

unsafe impl GlobalAlloc for CountingRedisAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = RedisAlloc.alloc(layout);
        if !p.is_null() {
            LIVE_BYTES.fetch_add(layout.size(), Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        RedisAlloc.dealloc(ptr, layout);
        LIVE_BYTES.fetch_sub(layout.size(), Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = RedisAlloc.realloc(ptr, layout, new_size);
        if !p.is_null() {
            LIVE_BYTES.fetch_sub(layout.size(), Relaxed);
            LIVE_BYTES.fetch_add(new_size, Relaxed);
        }
        p
    }
}
