//! rcache: a Redis module that caches responses by path and purges them by path
//! prefix or by tag, keeping its index inside the server.
//!
//! Three layers, one folder each:
//! - `core`: pure logic (paths, keys, entry layout, index, argument parsing,
//!   settings, counters). Knows nothing of Redis; unit-tested without a server.
//! - `server`: the glue (command handlers, keyspace and server events, the state
//!   behind its lock, the panic guard, the allocator, registration).
//! - `ffi`: the one place that calls Redis' raw module API.

pub mod core;

#[cfg(not(test))]
mod ffi;
#[cfg(not(test))]
mod server;
