//! The pure core: everything here works on bytes and numbers and knows nothing of
//! Redis, so it is unit- and property-tested without a server.

pub mod args;
pub mod cluster;
pub mod config;
pub mod entry;
pub mod index;
pub mod key;
pub mod lease;
pub mod migrate;
pub mod path;
pub mod purge;
pub mod stats;

/// Fuzz targets over everything that reads client bytes (unit tests only).
#[cfg(test)]
mod fuzz;
