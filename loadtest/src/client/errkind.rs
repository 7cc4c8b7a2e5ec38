//! Names for I/O failures in reports ("errors by kind").
//!
//! Kinds are short snake_case names prefixed by the stage that failed, e.g.
//! `connect_refused`, `upgrade_reset`, `io_broken_pipe`, so a report says both what went wrong
//! and when. TLS failures are `tls_*`: `tls_cert` (certificate rejected), `tls_handshake` (any
//! other handshake failure), `tls_handshake_eof` / `_reset` / `_timeout` (the server went away
//! or stalled mid-handshake) and `tls_protocol` (after the handshake).

use std::io;

use nix::errno::Errno;

/// Short name of an I/O error, independent of the stage.
pub fn io_name(e: &io::Error) -> String {
    if let Some(code) = e.raw_os_error() {
        let name = match Errno::from_raw(code) {
            Errno::ECONNREFUSED => "refused",
            Errno::ECONNRESET => "reset",
            Errno::ECONNABORTED => "aborted",
            Errno::ETIMEDOUT => "timeout",
            Errno::EADDRNOTAVAIL => "no_source_port",
            Errno::EADDRINUSE => "addr_in_use",
            Errno::EMFILE | Errno::ENFILE => "fd_limit",
            Errno::EPIPE => "broken_pipe",
            Errno::ENETUNREACH | Errno::EHOSTUNREACH => "unreachable",
            Errno::ENOBUFS | Errno::ENOMEM => "no_memory",
            _ => return format!("errno_{code}"),
        };
        return name.to_string();
    }
    match e.kind() {
        io::ErrorKind::UnexpectedEof => "eof".into(),
        io::ErrorKind::WriteZero => "write_zero".into(),
        _ => "other".into(),
    }
}

/// `stage_name` for an I/O error in `stage` (`connect`, `tls_handshake`, `upgrade` or `io`);
/// a TLS failure has its own name whatever the stage (`tls_cert`, `tls_handshake`, ...).
pub fn io_kind(stage: &str, e: &io::Error) -> String {
    if let Some(kind) = super::tls::failure_kind(e) {
        return kind.to_string();
    }
    format!("{stage}_{}", io_name(e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        let e = io::Error::from_raw_os_error(Errno::ECONNREFUSED as i32);
        assert_eq!(io_kind("connect", &e), "connect_refused");
        let e = io::Error::from_raw_os_error(Errno::EMFILE as i32);
        assert_eq!(io_kind("connect", &e), "connect_fd_limit");
        let e = io::Error::from(io::ErrorKind::WriteZero);
        assert_eq!(io_kind("io", &e), "io_write_zero");
    }
}
