//! Policy: who may connect, subscribe and publish (`auth`: JWT grants, publish key, origins)
//! and how much (`guard`: connection limits and rate buckets). Decisions only; the worker
//! applies them to connections (`worker/access.rs`).

pub mod auth;
pub mod guard;
