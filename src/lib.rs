//! Herald: a thread-per-core WebSocket fan-out server.
//!
//! Each worker thread owns a core, a `mio` poll, an `SO_REUSEPORT` listener and a slab of
//! connections; workers exchange messages over bounded channels. See `docs/architecture.md`.
#![forbid(unsafe_code)]

pub mod auth;
pub mod bus;
pub mod cluster;
pub mod config;
pub mod config_file;
pub mod conn;
pub mod deflate;
pub mod fanout;
pub mod frame;
pub mod fuzz;
pub mod guard;
pub mod history;
pub mod http;
pub mod log;
pub mod metrics;
pub mod os;
pub mod owned;
pub mod server;
pub mod stats;
pub mod tls;
pub mod topic;
pub mod v1;
pub mod web;
mod worker;
