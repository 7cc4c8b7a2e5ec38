//! Parsing of `--url` values into connectable loopback targets.
//!
//! The tool generates heavy load, so it refuses anything that is not a loopback address: a
//! mistyped URL must never turn it against someone else's machine.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

/// One WebSocket endpoint the connections are spread over.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// The URL as the user wrote it, for messages and reports.
    pub url: String,
    /// Where to connect (always a loopback address).
    pub addr: SocketAddr,
    /// Value of the `Host` header, as the server expects to see it.
    pub host_header: String,
    /// Request target (path plus query) sent in the upgrade request; the topic on path-topic
    /// servers.
    pub path: String,
    /// `wss://`: the connection runs TLS under the WebSocket.
    pub tls: bool,
    /// The host as written, without brackets or port: the TLS server name (SNI and the name
    /// the certificate is checked against).
    pub host: String,
}

impl Target {
    /// Request path for one echo-mode connection: a topic of its own, so a broadcast server
    /// echoes each message only to its sender.
    pub fn echo_path(&self, conn: u64) -> String {
        let base = self
            .path
            .split('?')
            .next()
            .unwrap_or("/")
            .trim_end_matches('/');
        format!("{base}/echo-{conn}")
    }
}

/// Parses `ws://host[:port][/path]` or `wss://…` (TLS), accepting only loopback hosts.
pub fn parse(url: &str) -> Result<Target, String> {
    let lower = url.to_ascii_lowercase();
    let (rest, tls) = if lower.starts_with("ws://") {
        (&url[5..], false)
    } else if lower.starts_with("wss://") {
        (&url[6..], true)
    } else {
        return Err(format!("{url}: the URL must start with ws:// or wss://"));
    };
    let split = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(split);
    let tail = tail.split('#').next().unwrap_or("");
    let path = if tail.is_empty() {
        "/".to_string()
    } else if tail.starts_with('?') {
        format!("/{tail}")
    } else {
        tail.to_string()
    };
    if path.bytes().any(|b| b <= b' ' || b == 0x7f) {
        return Err(format!(
            "{url}: the path contains spaces or control characters"
        ));
    }
    if authority.contains('@') {
        return Err(format!("{url}: user info in the URL is not supported"));
    }
    let default_port = if tls { 443 } else { 80 };
    let (host, port) =
        split_host_port(authority, default_port).map_err(|e| format!("{url}: {e}"))?;
    let ip: IpAddr = if host.eq_ignore_ascii_case("localhost") {
        IpAddr::V4(Ipv4Addr::LOCALHOST)
    } else {
        host.parse().map_err(|_| {
            format!(
                "{url}: host {host:?} is not a loopback IP; only 127.0.0.0/8, ::1 and localhost \
                 are allowed"
            )
        })?
    };
    if !ip.is_loopback() {
        return Err(format!(
            "{url}: {ip} is not a loopback address; this load generator only targets \
             127.0.0.0/8, ::1 or localhost"
        ));
    }
    Ok(Target {
        url: url.to_string(),
        addr: SocketAddr::new(ip, port),
        host_header: authority.to_string(),
        path,
        tls,
        host: host.to_string(),
    })
}

/// Splits `host`, `host:port`, `[v6]` or `[v6]:port`; the port defaults to `default_port`.
fn split_host_port(authority: &str, default_port: u16) -> Result<(&str, u16), String> {
    if authority.is_empty() {
        return Err("missing host".into());
    }
    let (host, port) = if let Some(inner) = authority.strip_prefix('[') {
        let end = inner.find(']').ok_or("unclosed '[' in host")?;
        let after = &inner[end + 1..];
        let port = match after.strip_prefix(':') {
            Some(p) => Some(p),
            None if after.is_empty() => None,
            None => return Err("junk after ']' in host".into()),
        };
        (&inner[..end], port)
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    let port = match port {
        None => default_port,
        Some(p) => match p.parse::<u16>() {
            Ok(0) | Err(_) => return Err(format!("bad port {p:?}")),
            Ok(n) => n,
        },
    };
    Ok((host, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_loopback_urls() {
        let t = parse("ws://127.0.0.1:9000/bench").expect("valid");
        assert_eq!(t.addr, "127.0.0.1:9000".parse().expect("addr"));
        assert_eq!(t.path, "/bench");
        assert_eq!(t.host_header, "127.0.0.1:9000");
        let t = parse("ws://localhost").expect("valid");
        assert_eq!(t.addr.port(), 80);
        assert_eq!(t.path, "/");
        let t = parse("ws://[::1]:81?x=1").expect("valid");
        assert_eq!(t.addr, "[::1]:81".parse().expect("addr"));
        assert_eq!(t.path, "/?x=1");
        assert!(parse("WS://127.0.0.2:1/a/b").is_ok());
        assert!(!parse("ws://[::1]:81").expect("valid").tls);
    }

    #[test]
    fn parses_wss_urls() {
        let t = parse("wss://127.0.0.1:9443/t").expect("valid");
        assert!(t.tls);
        assert_eq!(t.addr, "127.0.0.1:9443".parse().expect("addr"));
        assert_eq!((t.host.as_str(), t.path.as_str()), ("127.0.0.1", "/t"));
        let t = parse("WSS://localhost").expect("valid");
        assert_eq!((t.addr.port(), t.host.as_str()), (443, "localhost"));
        let t = parse("wss://[::1]/").expect("valid");
        assert_eq!((t.addr.port(), t.host.as_str()), (443, "::1"));
        assert!(parse("wss://10.0.0.1/").unwrap_err().contains("loopback"));
        assert!(parse("https://127.0.0.1/").is_err());
    }

    #[test]
    fn refuses_non_loopback_and_bad_urls() {
        assert!(parse("ws://10.0.0.1:9000/")
            .unwrap_err()
            .contains("not a loopback"));
        assert!(parse("ws://example.com/").unwrap_err().contains("loopback"));
        assert!(parse("http://127.0.0.1/").is_err());
        assert!(parse("ws://127.0.0.1:0/").is_err());
        assert!(parse("ws://127.0.0.1:99999/").is_err());
        assert!(parse("ws:///x").is_err());
        assert!(parse("ws://127.0.0.1/a b").is_err());
    }

    #[test]
    fn echo_paths_are_distinct_topics() {
        let t = parse("ws://127.0.0.1:9/bench/?q").expect("valid");
        assert_eq!(t.echo_path(7), "/bench/echo-7");
        let t = parse("ws://127.0.0.1:9").expect("valid");
        assert_eq!(t.echo_path(0), "/echo-0");
    }
}
