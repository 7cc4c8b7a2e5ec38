//! Feed state: what Herald knows about topics, apart from any socket. Each worker's local
//! subscribers and the turn's batches (`fanout`), what each subscriber gets of a batch
//! (`plan`), when a topic's batch is written (`pace`), the owner's numbering, interest and history (`owned`, `history`), and the
//! messages workers exchange (`bus`).

pub mod bus;
pub mod fanout;
pub mod history;
pub mod owned;
pub mod pace;
pub mod patterns;
pub mod plan;
