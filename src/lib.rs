//! rcache: a Redis module that caches responses by path and purges them by path
//! prefix or by tag, keeping its index inside the server.
//!
//! Pure core (no Redis; unit-tested without a server): `path`, `key`, `entry`,
//! `index`, `args`, `config`, `stats`.
//! Glue: `commands` (handlers), `events` (keyspace and server events), `store`
//! (the state behind its lock), `guard` (the panic wrapper), `alloc`.
//! Raw FFI: `ffi` only.

pub mod args;
pub mod config;
pub mod entry;
pub mod index;
pub mod key;
pub mod path;
pub mod stats;

#[cfg(not(test))]
mod alloc;
#[cfg(not(test))]
mod commands;
#[cfg(not(test))]
mod events;
#[cfg(not(test))]
mod ffi;
#[cfg(not(test))]
mod guard;
#[cfg(not(test))]
mod module;
#[cfg(not(test))]
mod store;

/// Fuzz targets over everything that reads client bytes (unit tests only).
#[cfg(test)]
mod fuzz;
