//! The client side of the WebSocket protocol: opening sockets, the TLS layer, the upgrade
//! handshake, the frame codec, the payload format, `herald.v1` requests, and names for failures.
//!
//! Separate from `child` and `parent` because it is plain protocol code with no knowledge of how
//! a run is scheduled or reported: it imports nothing from either, so it can be read (and tested)
//! on its own against RFC 6455 and docs/protocol.md.

pub mod dial;
pub mod errkind;
pub mod frame;
pub mod handshake;
pub mod payload;
pub mod tls;
pub mod transport;
pub mod v1;
