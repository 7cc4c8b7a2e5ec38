//! Operations: how Herald is configured (`config`, `config_file`), what it reports (`log`,
//! `stats`, `metrics`) and how it sets up the OS (`os`). Foundations every other layer may use.

pub mod config;
pub mod config_file;
pub mod dashboard;
pub mod log;
pub mod metrics;
pub mod os;
pub mod stats;
pub mod topic_stats;
