//! Herald: a thread-per-core WebSocket fan-out server.
//!
//! Each worker thread owns a core, a `mio` poll, an `SO_REUSEPORT` listener and a slab of
//! connections; workers exchange messages over bounded channels. See `docs/architecture.md`.
//!
//! The folders are the layers, and imports point one way (down this list; `tests/layers.rs`
//! fails on any other import, and the protocol layer is a crate of its own):
//!
//! - `proto` (the `herald-proto` crate): frames, deflate, the HTTP head, `herald.v1`, topic
//!   names. Sans-IO; imports nothing from Herald.
//! - `feed`: topic state: local subscribers and batches, the delivery planner, owners'
//!   numbering and history, the inter-worker message bus. Imports `proto` only.
//! - `ops`: flags and config files, logging, counters and `/metrics`, OS set-up. Imports
//!   `proto` only.
//! - `policy` (who may do what: auth, limits) and `site` (the pages Herald serves): import the
//!   layers above them.
//! - `cluster` (the Redis bridge threads) and `worker` (the event loops, the only code that
//!   touches client sockets): import everything above, never each other's insides
//!   (`worker` uses `cluster`'s link).
//! - `server`: start-up and the control thread; imports everything.

pub use herald_proto as proto;

pub mod cluster;
pub mod feed;
pub mod fuzz;
pub mod hooks;
pub mod ops;
pub mod policy;
pub mod server;
pub mod site;
pub mod worker;
