//! Herald's protocol layer, sans-IO: bytes in, decisions and bytes out. It owns no socket,
//! reads no clock and knows nothing of the server around it (workers, topic state, policy);
//! being a crate of its own is what guarantees that.
//!
//! - `frame`: WebSocket frame decoding, validation and encoding (RFC 6455);
//! - `deflate`: permessage-deflate (RFC 7692): negotiation, the per-worker codec;
//! - `http`: the HTTP/1.1 request head, refusals and responses;
//! - `sse`: Server-Sent Events: event encoding and `Last-Event-ID`;
//! - `v1`: the `herald.v1` subprotocol (requests, replies, envelopes, error codes);
//! - `topic`: topic names and where a subscription starts;
//! - `presence`: who subscribes (the `presence` reply, `join`/`leave`, `GET /topics/`);
//! - `pattern`: topic patterns (`prices/*`, `prices/**`) for wildcard subscriptions and flags.

pub mod deflate;
pub mod frame;
pub mod http;
pub mod pattern;
pub mod presence;
pub mod sse;
pub mod topic;
pub mod v1;
