//! Command-line configuration: every knob the server has, with its default and why.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

use crate::ops::log::{LogFormat, LogLevel};
use crate::proto::pattern::Pattern;

/// Ceiling of `--presence-max-members`: one answer stays a few megabytes at most.
pub const MAX_PRESENCE_MEMBERS: usize = 100_000;

/// Herald's settings. Defaults are chosen for a feed server on the open internet:
/// bounded memory per connection, short handshake deadlines, and keep-alive that notices dead peers.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "herald",
    version,
    about = "Thread-per-core WebSocket fan-out server"
)]
pub struct Config {
    /// Read settings from this TOML file first: its keys are these flags' long names
    /// (`max-message = 1048576`), and flags given on the command line override it. Lets a
    /// deployment keep its settings in one reviewed file (see herald.example.toml).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Address to listen on for ws:// (port 0 picks a free port; the real one is printed).
    #[arg(long, default_value = "127.0.0.1:9000")]
    pub listen: SocketAddr,

    /// Address for wss:// beside the ws:// one (needs --tls-cert and --tls-key).
    #[arg(long)]
    pub listen_tls: Option<SocketAddr>,

    /// PEM certificate chain for wss://. Without --listen-tls, --listen serves wss:// instead.
    #[arg(long, requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key (PKCS#8, PKCS#1 or SEC1) for the certificate.
    #[arg(long, requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// Serve this directory's files to plain GET requests instead of the embedded demo page
    /// (read once at start, at most 64 MiB: workers never wait for a disk).
    #[arg(long = "static", value_name = "DIR")]
    pub static_dir: Option<PathBuf>,

    /// Number of worker threads (default: one per core in --cores, or per available core).
    #[arg(long)]
    pub threads: Option<usize>,

    /// Cores to pin workers to, e.g. `0,1` or `2-3` (default: all available cores).
    #[arg(long, value_parser = parse_core_list)]
    pub cores: Option<CoreList>,

    /// Do not deliver a message back to the connection that sent it.
    #[arg(long)]
    pub no_echo: bool,

    /// HS256 secret: every WebSocket upgrade and HTTP publish must carry a JWT signed with it
    /// (see docs/security.md for where the token goes and which claims grant what).
    #[arg(long, value_name = "SECRET", conflicts_with = "jwt_public_key")]
    pub jwt_secret: Option<String>,

    /// PEM public key (RSA for RS256, EC P-256 for ES256) that verifies the JWTs instead of a
    /// shared secret: the server can check tokens but never mint them.
    #[arg(long, value_name = "FILE")]
    pub jwt_public_key: Option<PathBuf>,

    /// Clock skew allowed when checking a token's `exp` (and `nbf`).
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub jwt_leeway: Duration,

    /// A key backends present as `Authorization: Bearer KEY` to publish over HTTP; with it set,
    /// an HTTP publish needs this key (or, with JWT on, a token granting the topic).
    #[arg(long, value_name = "KEY")]
    pub publish_key: Option<String>,

    /// Comma-separated origins (`https://app.example.com`) whose pages may open WebSockets;
    /// an upgrade from any other `Origin` gets 403 (cross-site WebSocket hijacking).
    /// Requests without an `Origin` header (non-browser clients) are not affected.
    #[arg(long, value_name = "LIST", value_delimiter = ',')]
    pub allowed_origins: Option<Vec<String>>,

    /// Most open WebSocket connections in total (0: only the open-file limit); beyond it an
    /// upgrade gets 503 and the listener keeps working.
    #[arg(long, default_value_t = 0)]
    pub max_conns: usize,

    /// Most open WebSocket connections from one client IP address (0: no limit); beyond it an
    /// upgrade gets 429.
    #[arg(long, default_value_t = 0)]
    pub max_conns_per_ip: usize,

    /// Messages per second one connection may send (token bucket, bursts of one second's
    /// worth; 0: no limit). Over it the connection is closed with 1008.
    #[arg(long, default_value_t = 0)]
    pub rate_limit_msgs: u32,

    /// Bytes per second of message payload one connection may send (0: no limit). Over it
    /// the connection is closed with 1008.
    #[arg(long, default_value_t = 0)]
    pub rate_limit_bytes: u64,

    /// Longest topic name accepted, in bytes (at most 256).
    #[arg(long, default_value_t = 256)]
    pub max_topic_len: usize,

    /// Largest message (after reassembling fragments) a client may send; larger closes with 1009.
    #[arg(long, default_value_t = 1 << 20)]
    pub max_message: usize,

    /// Cap on a connection's unsent output bytes; a subscriber over it is closed (1008, slow
    /// consumer). Never less than one whole --max-message frame.
    #[arg(long, default_value_t = 1 << 20)]
    pub max_backlog: usize,

    /// Time a client has to complete its HTTP upgrade before it is dropped (slow-loris defence).
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub handshake_timeout: Duration,

    /// Silence after which the server pings a client; two intervals of silence drop it.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub ping_interval: Duration,

    /// On SIGINT/SIGTERM, how long to keep flushing close frames before exiting anyway.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub drain_timeout: Duration,

    /// How long a closing connection may take to deliver its last bytes (close frame, HTTP
    /// response) and see the peer's close. Past it, a connection whose bytes are still
    /// unsent, or a slow consumer, is aborted with a reset so the kernel frees its buffers.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub close_grace: Duration,

    /// Latency budget for batching under load (`0` or `off`: write every turn). A topic whose
    /// messages come less than half a write pass apart is written a quarter of its subscribers
    /// at a time, the quarters spread over one more pass length, but never more than this,
    /// so that each write to a subscriber carries more messages. A topic at low load is
    /// written at once (docs/architecture.md, "Batching under load").
    #[arg(long, default_value = "5ms", value_parser = parse_batch_window, value_name = "DUR")]
    pub batch_window: Duration,

    /// SO_SNDBUF for accepted sockets, bytes (0: the kernel's autotuning, up to
    /// `net.ipv4.tcp_wmem`'s max). Caps the kernel memory a stalled client can pin, at the
    /// cost of throughput to distant clients (docs/benchmarks.md).
    #[arg(long, default_value_t = 0, value_name = "BYTES")]
    pub socket_send_buffer: usize,

    /// Most topics one `herald.v1` connection may subscribe to at once.
    #[arg(long, default_value_t = 1000)]
    pub max_topics_per_conn: usize,

    /// Topics (patterns such as `rooms/*`; repeatable) whose `herald.v1` presence answers
    /// list the members and whose subscribers may ask for `join` / `leave` events. Counts are
    /// answered for every topic; member lists cost a walk of the topic's subscribers per
    /// query, so only topics that need them pay.
    #[arg(long = "presence", value_name = "PATTERN")]
    pub presence: Vec<crate::proto::pattern::Pattern>,

    /// Most members one presence answer lists. Past it the count stays exact, the list is
    /// cut and the answer says `"truncated":true`.
    #[arg(long, default_value_t = 1000, value_name = "N")]
    pub presence_max_members: usize,

    /// Messages kept per topic for recovery (`since`) and `rewind` (0: no history). Kept by
    /// the topic's owner worker, so a topic with history is numbered even with no subscriber.
    #[arg(long, default_value_t = 0)]
    pub history: usize,

    /// Age after which a kept message is forgotten (0: kept until pushed out by newer ones).
    #[arg(long, default_value = "0s", value_parser = parse_duration)]
    pub history_ttl: Duration,

    /// Memory cap for all kept messages, in bytes, shared evenly by the workers; past it the
    /// oldest messages (of any topic) are forgotten first.
    #[arg(long, default_value_t = 256 << 20)]
    pub history_max_bytes: usize,

    /// permessage-deflate (RFC 7692) for clients that offer it (browsers do). Each message is
    /// compressed once per worker and shared by every subscriber there that negotiated it.
    #[arg(long, value_enum, default_value_t = Switch::On)]
    pub compression: Switch,

    /// Messages with a payload under this many bytes are sent uncompressed even to clients
    /// that negotiated compression: tiny payloads barely shrink and still cost a deflate.
    #[arg(long, default_value_t = 128, value_name = "BYTES")]
    pub compress_min: usize,

    /// Cluster mode: share topics with other Herald nodes through this Redis
    /// (`redis://HOST:PORT[/DB]`). Redis numbers every message, keeps each topic's history
    /// and broadcasts to the nodes with subscribers (docs/operations.md). Off: one node, no
    /// Redis needed. Several independent Redis: `redis://A:6379,redis://B:6379` (topics
    /// spread by consistent hashing); a Redis Cluster: `redis+cluster://HOST:PORT,HOST:PORT`
    /// (seed nodes; sharded pub/sub).
    #[arg(long, value_name = "URL")]
    pub broker: Option<String>,

    /// Cluster mode: messages kept per topic in Redis for `since` recovery and `rewind` on
    /// any node (replaces --history, which is per node).
    #[arg(long, default_value_t = 1000, value_name = "N")]
    pub broker_history: usize,

    /// Backend hook: POST a JSON description of every new connection (WebSocket or SSE) to
    /// this `http://` URL; its answer allows or denies it, and may attach an identity and
    /// grants (docs/protocol.md, "Backend hooks").
    #[arg(long, value_name = "URL")]
    pub connect_hook: Option<String>,

    /// Backend hook: POST every subscription (herald.v1 subscribe, and the topics of raw
    /// path and SSE connections) to this `http://` URL for an allow or deny.
    #[arg(long, value_name = "URL")]
    pub subscribe_hook: Option<String>,

    /// Backend hook: POST every published message (WebSocket, herald.v1, HTTP) with its
    /// payload to this `http://` URL; denied messages are not published. A publisher's
    /// messages keep their order whatever order the answers come back in.
    #[arg(long, value_name = "URL")]
    pub publish_hook: Option<String>,

    /// Threads that call the hook backends (each holds its keep-alive connections).
    #[arg(long, default_value_t = 8, value_name = "N")]
    pub hook_threads: usize,

    /// Longest wait for a hook backend's answer; past it the request is refused as
    /// unavailable (503 / `unavailable`).
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub hook_timeout: Duration,

    /// Most hook requests waiting for a thread, all hooks together; past it requests are
    /// refused as unavailable at once (and counted), never queued without bound.
    #[arg(long, default_value_t = 1024, value_name = "N")]
    pub hook_max_inflight: usize,

    /// Reuse a connect or subscribe hook's allow for the same token and topics for this long
    /// (0: ask every time). Denies are never cached.
    #[arg(long, default_value = "0s", value_parser = parse_duration)]
    pub hook_cache: Duration,

    /// Topics that get per-topic series on `GET /metrics` (`herald_topic_*{topic=...}`):
    /// a topic pattern (`prices/*` one segment, `prices/**` any depth); repeatable.
    #[arg(long, value_name = "PATTERN", value_parser = parse_pattern)]
    pub metrics_topics: Vec<Pattern>,

    /// Most topics with a label of their own under `--metrics-topics`; later matching topics
    /// are counted together under `topic="other"` (the label set stays bounded).
    #[arg(long, default_value_t = 100)]
    pub metrics_topics_max: usize,

    /// How often to print a stats line on stdout (0 turns it off).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub stats_interval: Duration,

    /// Serve the live dashboard: the page at `GET /dashboard` and its event stream at
    /// `GET /dashboard/feed`. Off by default (docs/security.md); with `--publish-key` set, the
    /// stream needs that key (`?key=`).
    #[arg(long)]
    pub dashboard: bool,

    /// Log line format on stderr: `text` for people, `json` (one object per line) for shippers.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Least severe log level written to stderr; `debug` adds every connect and disconnect.
    #[arg(long, value_enum, default_value_t = LogLevel::Info)]
    pub log_level: LogLevel,
}

impl Config {
    /// Parse from `std::env::args` and the `--config` file (if any), exiting with clap's
    /// message on bad flags or keys; a message about a flag the file set names its key.
    pub fn from_args() -> Self {
        let (config, origin) = crate::ops::config_file::parse::<Config>();
        if let Err(msg) = config.validate() {
            let msg = origin.explain(&msg);
            clap::Error::raw(clap::error::ErrorKind::ValueValidation, format!("{msg}\n")).exit();
        }
        config
    }

    /// The effective per-connection output cap: `--max-backlog`, but always room for one
    /// whole largest message (plus its frame header), so a big message alone never counts
    /// as a slow consumer.
    pub fn backlog_limit(&self) -> usize {
        self.max_backlog
            .max(self.max_message.saturating_add(MAX_FRAME_HEADER))
    }

    /// The listening endpoints: each address and whether it speaks TLS.
    pub fn endpoints(&self) -> Vec<(SocketAddr, bool)> {
        match (self.listen_tls, self.tls_cert.is_some()) {
            (None, true) => vec![(self.listen, true)],
            (Some(tls), _) => vec![(self.listen, false), (tls, true)],
            (None, false) => vec![(self.listen, false)],
        }
    }

    /// The backend hooks' flags: `http://` URLs, a pool and a bound of at least one.
    fn validate_hooks(&self) -> Result<(), String> {
        let hooks = [
            ("--connect-hook", &self.connect_hook),
            ("--subscribe-hook", &self.subscribe_hook),
            ("--publish-hook", &self.publish_hook),
        ];
        for (flag, url) in hooks {
            if let Some(url) = url {
                if !url.starts_with("http://") || url.len() <= "http://".len() {
                    return Err(format!("{flag} must be an http:// URL, got {url:?}"));
                }
            }
        }
        if self.hook_threads == 0 || self.hook_threads > 1024 {
            return Err("--hook-threads must be between 1 and 1024".into());
        }
        if self.hook_max_inflight == 0 {
            return Err("--hook-max-inflight must be at least 1".into());
        }
        if self.hook_timeout.is_zero() {
            return Err("--hook-timeout must be more than 0".into());
        }
        Ok(())
    }

    /// Cross-field checks clap cannot express.
    pub fn validate(&self) -> Result<(), String> {
        if let Some(dir) = &self.static_dir {
            if !dir.is_dir() {
                return Err(format!(
                    "--static {}: not a readable directory",
                    dir.display()
                ));
            }
        }
        if self.listen_tls.is_some() && self.tls_cert.is_none() {
            return Err("--listen-tls needs --tls-cert FILE and --tls-key FILE".into());
        }
        if self.threads == Some(0) {
            return Err("--threads must be at least 1".into());
        }
        if self.threads.is_some_and(|n| n > MAX_WORKERS) {
            return Err(format!("--threads must be at most {MAX_WORKERS}"));
        }
        if self.max_message == 0 {
            return Err("--max-message must be at least 1 byte".into());
        }
        if self.max_backlog == 0 {
            return Err("--max-backlog must be at least 1 byte".into());
        }
        if self.max_topic_len == 0 || self.max_topic_len > crate::proto::topic::MAX_TOPIC_LEN {
            return Err(format!(
                "--max-topic-len must be between 1 and {}",
                crate::proto::topic::MAX_TOPIC_LEN
            ));
        }
        if self.jwt_secret.as_ref().is_some_and(|s| s.len() < 32) {
            return Err("--jwt-secret must be at least 32 bytes (HS256 keys shorter than the hash are weak)".into());
        }
        if self.presence_max_members > MAX_PRESENCE_MEMBERS {
            return Err(format!(
                "--presence-max-members must be at most {MAX_PRESENCE_MEMBERS}"
            ));
        }
        if self.max_topics_per_conn == 0 {
            return Err("--max-topics-per-conn must be at least 1".into());
        }
        if self.history > 0 && self.history_max_bytes == 0 {
            return Err("--history-max-bytes must be at least 1 byte when --history is on".into());
        }
        self.validate_hooks()?;
        if let Some(url) = &self.broker {
            // The full check is cluster::shard::Broker::parse, at start.
            let known = url.starts_with("redis+cluster://")
                || url.split(',').all(|u| u.trim().starts_with("redis://"));
            if !known {
                return Err(format!(
                    "--broker {url}: only redis://HOST:PORT URLs are supported (a comma-separated list of them for independent instances, or redis+cluster://HOST:PORT,HOST:PORT for a Redis Cluster)"
                ));
            }
            if self.history > 0 {
                return Err("--history keeps history per node; with --broker it lives in Redis: use --broker-history".into());
            }
            if self.broker_history == 0 {
                return Err("--broker-history must be at least 1".into());
            }
        }
        if self.dashboard
            && self.publish_key.is_none()
            && (self.jwt_secret.is_some() || self.jwt_public_key.is_some())
        {
            return Err("--dashboard on a server with JWT auth needs --publish-key: the dashboard's stream is opened with that key".into());
        }
        for (name, d) in [
            ("--handshake-timeout", self.handshake_timeout),
            ("--ping-interval", self.ping_interval),
        ] {
            if d.is_zero() {
                return Err(format!("{name} must be greater than 0"));
            }
        }
        Ok(())
    }
}

/// An on/off flag value (`--compression on|off`), spelled out so the default shows in `--help`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Switch {
    /// Disabled.
    Off,
    /// Enabled.
    On,
}

/// Upper bound on workers: worker ids travel as `u16` on the bus, and more threads than
/// cores only adds context switches.
pub const MAX_WORKERS: usize = 1024;

/// Longest server frame header (64-bit length, no mask).
const MAX_FRAME_HEADER: usize = 10;

/// A list of core ids given on the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CoreList(pub Vec<usize>);

/// Parses `0,1`, `2-5`, or a mix like `0,2-3`.
pub fn parse_core_list(s: &str) -> Result<CoreList, String> {
    let mut cores = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let bad = || format!("bad core list entry `{part}` (expected e.g. 0,1 or 2-3)");
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b): (usize, usize) =
                    (a.parse().map_err(|_| bad())?, b.parse().map_err(|_| bad())?);
                if a > b {
                    return Err(bad());
                }
                cores.extend(a..=b);
            }
            None => cores.push(part.parse().map_err(|_| bad())?),
        }
    }
    if cores.is_empty() {
        return Err("the core list is empty".into());
    }
    Ok(CoreList(cores))
}

/// Longest `--batch-window`: it is added latency, so more than this is a mistake.
pub const MAX_BATCH_WINDOW: Duration = Duration::from_secs(10);

/// Parses `--batch-window`: a duration up to [`MAX_BATCH_WINDOW`], or `off` (zero).
pub fn parse_batch_window(s: &str) -> Result<Duration, String> {
    if s.trim().eq_ignore_ascii_case("off") {
        return Ok(Duration::ZERO);
    }
    let d = parse_duration(s)?;
    if d > MAX_BATCH_WINDOW {
        return Err(format!(
            "`{s}` is too long: the window is latency added under load; at most 10s (e.g. 5ms)"
        ));
    }
    Ok(d)
}

/// Parses `5`, `5s`, `1.5s`, `500ms` or `2m` into a duration (a bare number is seconds).
/// A `--metrics-topics` pattern (`proto::pattern` grammar).
pub fn parse_pattern(s: &str) -> Result<Pattern, String> {
    Pattern::parse(s).map_err(|e| e.to_string())
}

pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let value: f64 = num
        .parse()
        .map_err(|_| format!("bad duration `{s}` (expected e.g. 5s, 500ms, 2m)"))?;
    let secs = match unit.trim() {
        "" | "s" => value,
        "ms" => value / 1000.0,
        "m" => value * 60.0,
        other => {
            return Err(format!(
                "bad duration unit `{other}` in `{s}` (use ms, s or m)"
            ))
        }
    };
    if !secs.is_finite() || !(0.0..=86_400.0).contains(&secs) {
        return Err(format!("duration `{s}` is out of range (0 to 24h)"));
    }
    Ok(Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("5").unwrap(), Duration::from_secs(5));
        assert_eq!(parse_duration("5s").unwrap(), Duration::from_secs(5));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert!(parse_duration("5h").is_err());
        assert!(parse_duration("x").is_err());
        assert!(parse_duration("-1s").is_err());
        assert_eq!(parse_batch_window("off").unwrap(), Duration::ZERO);
        assert_eq!(parse_batch_window("0").unwrap(), Duration::ZERO);
        assert_eq!(parse_batch_window("2ms").unwrap(), Duration::from_millis(2));
        assert!(parse_batch_window("11s").is_err());
        assert!(parse_batch_window("fast").is_err());
    }

    #[test]
    fn core_lists() {
        assert_eq!(parse_core_list("0,1").unwrap(), CoreList(vec![0, 1]));
        assert_eq!(
            parse_core_list("0,2-4").unwrap(),
            CoreList(vec![0, 2, 3, 4])
        );
        assert!(parse_core_list("3-1").is_err());
        assert!(parse_core_list("a").is_err());
        assert!(parse_core_list("").is_err());
    }
}
