//! The server layer: what Redis calls (commands, events, INFO, load) and the state
//! those calls share. Every entry point runs inside `guard::guarded`; every call into
//! Redis goes through `crate::ffi`.

mod alloc;
mod audit;
mod cluster;
mod commands;
mod events;
mod guard;
mod leases;
mod loading;
mod migration;
mod module;
mod purges;
mod store;
