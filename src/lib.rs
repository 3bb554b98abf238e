//! rcache: a Redis module that caches responses by path and purges them by prefix or tag.
//!
//! Pure core (no Redis): `path`, `key`, `entry`, `index`, `args`.

pub mod args;
pub mod entry;
pub mod index;
pub mod key;
pub mod path;
