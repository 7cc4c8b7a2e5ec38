//! Command-line flags (clap derive) and their validation into a [`Config`].
//!
//! Everything the user can get wrong is rejected here with a message naming the flag, before a
//! single socket is opened.

use std::path::PathBuf;

use clap::{Parser, ValueEnum};

use crate::clock::secs_to_ns;
use crate::target::{self, Target};

/// What the run measures.
#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    /// Publishers broadcast timestamped messages; subscribers time and count deliveries.
    Fanout,
    /// Every connection times round trips of its own messages (one topic per connection).
    Echo,
    /// A connection storm: handshakes per second and connect latency only.
    Connect,
}

impl Mode {
    /// Lower-case name used in reports.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Fanout => "fanout",
            Mode::Echo => "echo",
            Mode::Connect => "connect",
        }
    }
}

/// What fills a payload after its sequence number and timestamp.
#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum Filler {
    /// A byte pattern derived from the sequence number.
    Bytes,
    /// A JSON ticker update, repeated to the payload size.
    Json,
}

/// Load generator for WebSocket servers speaking the path-topic protocol (the URL path is the
/// topic; every message is delivered to every connection on that path).
#[derive(Parser, Debug, Clone)]
#[command(name = "loadtest", version, about, long_about = None, args_override_self = true)]
pub struct Args {
    /// Target URL (ws:// or wss://, loopback only); repeat to spread connections over several.
    #[arg(long = "url", value_name = "URL", required = true)]
    pub urls: Vec<String>,
    /// fanout (default), echo or connect.
    #[arg(long, value_enum, default_value_t = Mode::Fanout)]
    pub mode: Mode,
    /// Subscriber connections (fanout) or connections (echo, connect).
    #[arg(long, default_value_t = 1000)]
    pub connections: u64,
    /// Publisher connections (fanout), in addition to --connections.
    #[arg(long, default_value_t = 1)]
    pub publishers: u64,
    /// Messages per second in total, sent on a fixed open-loop schedule.
    #[arg(long, default_value_t = 1000)]
    pub rate: u64,
    /// Closed loop instead of the --rate schedule: each publisher keeps N messages in flight,
    /// its own echo (it is on the topic too) being the acknowledgement that frees a slot.
    /// Measures saturation throughput; latency is timed from the actual send.
    #[arg(long, value_name = "N")]
    pub inflight: Option<u64>,
    /// Payload size in bytes (at least 16: sequence number and scheduled send time).
    #[arg(long, default_value_t = 64)]
    pub size: usize,
    /// Measured seconds (after the warmup); the run stops by itself.
    #[arg(long, default_value_t = 30.0)]
    pub duration: f64,
    /// Seconds of traffic before measuring starts.
    #[arg(long, default_value_t = 1.0)]
    pub warmup: f64,
    /// Longest wait in seconds for in-flight messages after the last send.
    #[arg(long, default_value_t = 3.0)]
    pub drain: f64,
    /// New connections per second, in total (0: as fast as --max-inflight allows).
    #[arg(long, default_value_t = 5000)]
    pub connect_rate: u64,
    /// Most handshakes in flight at once, in total.
    #[arg(long, default_value_t = 1000)]
    pub max_inflight: u64,
    /// Seconds before a connect plus upgrade attempt counts as timed out.
    #[arg(long, default_value_t = 5.0)]
    pub connect_timeout: f64,
    /// Busy-poll this many µs before each scheduled send instead of sleeping, so wakeup
    /// latency (tens of µs on a VM) does not delay sends; 0 always sleeps.
    #[arg(long, default_value_t = 50)]
    pub spin_us: u64,
    /// Child processes (default: enough to stay under the open-file limit).
    #[arg(long)]
    pub procs: Option<u32>,
    /// Event-loop threads per process (default: the cores divided among the processes).
    #[arg(long)]
    pub threads: Option<u32>,
    /// Loopback source addresses 127.0.0.1..127.0.0.N (default: enough ephemeral ports).
    #[arg(long)]
    pub source_ips: Option<u32>,
    /// Cores to pin event-loop threads to, e.g. "1" or "0,2-3".
    #[arg(long, value_name = "LIST")]
    pub cores: Option<String>,
    /// Fanout across URLs: every subscriber receives every publisher's messages (a clustered
    /// server) instead of only those published on its own URL.
    #[arg(long)]
    pub cluster: bool,
    /// With wss:// URLs, accept any server certificate (self-signed, expired, another name);
    /// handshake signatures are still checked. Without it the system's trusted roots decide.
    #[arg(long)]
    pub insecure: bool,
    /// Subscribers speak Herald's herald.v1 subprotocol: they upgrade on `/`, subscribe to the
    /// URL's path as the topic and read JSON envelopes. Publishers stay in raw path mode.
    #[arg(long)]
    pub v1: bool,
    /// Offer permessage-deflate (RFC 7692) and inflate compressed messages, to measure a
    /// server's compression. The server must answer with server_no_context_takeover (each
    /// message is inflated on its own by one inflater per thread).
    #[arg(long)]
    pub deflate: bool,
    /// Payload filler after the 16-byte header: `bytes` (a cheap pattern) or `json` (a JSON
    /// ticker update, which compresses like a real feed).
    #[arg(long, value_enum, default_value_t = Filler::Bytes)]
    pub payload: Filler,
    /// Print one JSON object instead of the text report.
    #[arg(long)]
    pub json: bool,
    /// Write the full latency distribution to FILE in HdrHistogram's .hgrm format (`-`:
    /// print it on stdout after the text report).
    #[arg(long, value_name = "FILE")]
    pub hgrm: Option<PathBuf>,
    /// Write a self-contained HTML report to FILE: the latency percentile plot, delivery rate
    /// and p99 per second, connect latency, duplicates and out-of-order per second, and the
    /// server's CPU per delivery with --server-pid.
    #[arg(long, value_name = "FILE")]
    pub html: Option<PathBuf>,
    /// Server process to charge CPU time to over the measured window.
    #[arg(long, value_name = "PID")]
    pub server_pid: Option<u32>,
    /// No progress lines on stderr.
    #[arg(long)]
    pub quiet: bool,
    /// Internal: run as child process N of a parent loadtest.
    #[arg(long, hide = true, value_name = "N")]
    pub child: Option<u32>,
}

/// Validated run parameters shared (read-only) by every process and thread.
#[derive(Clone, Debug)]
pub struct Config {
    /// Endpoints; connection `g` uses `targets[g % targets.len()]`.
    pub targets: Vec<Target>,
    /// What is measured.
    pub mode: Mode,
    /// Connections that receive and count deliveries (fanout), else 0.
    pub subscribers: u64,
    /// Connections that send on the schedule: fanout publishers, or every echo connection.
    pub publishers: u64,
    /// All connections of the run.
    pub total: u64,
    /// Messages per second in total.
    pub rate: u64,
    /// Closed loop (`--inflight N`): messages each publisher keeps in flight; 0: open loop.
    pub inflight: u64,
    /// Payload bytes per message.
    pub size: usize,
    /// Warmup length.
    pub warmup_ns: u64,
    /// Measured window length.
    pub duration_ns: u64,
    /// Longest drain after the last send.
    pub drain_ns: u64,
    /// Connections per second in total; 0 means unlimited.
    pub connect_rate: u64,
    /// Handshakes in flight, in total.
    pub max_inflight: u64,
    /// Per-attempt connect plus upgrade timeout.
    pub connect_timeout_ns: u64,
    /// Busy-poll window before a scheduled send.
    pub spin_ns: u64,
    /// Forced process count, if given.
    pub procs: Option<u32>,
    /// Forced threads per process, if given.
    pub threads: Option<u32>,
    /// Forced source address count, if given.
    pub source_ips: Option<u32>,
    /// Cores to pin to (empty: no pinning).
    pub cores: Vec<usize>,
    /// All URLs are one topic (clustered servers).
    pub cluster: bool,
    /// Accept any TLS server certificate (`--insecure`).
    pub insecure: bool,
    /// Subscribers use the `herald.v1` subprotocol (`--v1`).
    pub v1: bool,
    /// Offer permessage-deflate and inflate what comes compressed.
    pub deflate: bool,
    /// Payload filler.
    pub payload: Filler,
    /// JSON report instead of text.
    pub json: bool,
    /// Where to write the .hgrm distribution.
    pub hgrm: Option<PathBuf>,
    /// Where to write the HTML report.
    pub html: Option<PathBuf>,
    /// Server process whose CPU is measured.
    pub server_pid: Option<u32>,
    /// Suppress progress lines.
    pub quiet: bool,
    /// Index of this child process, when running as one (`--child N`).
    pub child: Option<u32>,
}

/// Largest connection count accepted (far above what one machine can hold).
const MAX_CONNECTIONS: u64 = 10_000_000;
/// Largest publisher count: every subscriber keeps 16 bytes of order tracking per publisher.
const MAX_PUBLISHERS: u64 = 4096;
/// Largest payload accepted.
const MAX_SIZE: usize = 16 << 20;
/// Most messages a publisher may keep in flight with `--inflight`.
const MAX_INFLIGHT: u64 = 100_000;
/// Longest run accepted, in seconds.
const MAX_SECS: f64 = 86_400.0;

impl Config {
    /// Validates parsed flags; the error names the offending flag.
    pub fn from_args(a: &Args) -> Result<Config, String> {
        let targets = a
            .urls
            .iter()
            .map(|u| target::parse(u).map_err(|e| format!("--url {e}")))
            .collect::<Result<Vec<_>, _>>()?;
        if targets.is_empty() {
            return Err("--url is required".into());
        }
        if a.connections == 0 || a.connections > MAX_CONNECTIONS {
            return Err(format!("--connections must be 1..={MAX_CONNECTIONS}"));
        }
        if a.json && a.hgrm.as_deref() == Some(std::path::Path::new("-")) {
            return Err("--json and --hgrm - both print on stdout: give --hgrm a file".into());
        }
        let (subscribers, publishers, total) = match a.mode {
            Mode::Fanout => {
                if a.publishers == 0 || a.publishers > MAX_PUBLISHERS {
                    return Err(format!("--publishers must be 1..={MAX_PUBLISHERS}"));
                }
                (a.connections, a.publishers, a.connections + a.publishers)
            }
            Mode::Echo => (0, a.connections, a.connections),
            Mode::Connect => (0, 0, a.connections),
        };
        let timed = a.mode != Mode::Connect;
        if timed && (a.rate == 0 || a.rate > 100_000_000) {
            return Err("--rate must be 1..=100000000 messages per second".into());
        }
        if a.size < 16 || a.size > MAX_SIZE {
            return Err(format!(
                "--size must be 16..={MAX_SIZE} bytes (the payload carries a sequence number and \
                 a timestamp)"
            ));
        }
        let secs = |name: &str, v: f64, min: f64| -> Result<u64, String> {
            if !v.is_finite() || v < min || v > MAX_SECS {
                Err(format!(
                    "--{name} must be between {min} and {MAX_SECS} seconds"
                ))
            } else {
                Ok(secs_to_ns(v))
            }
        };
        let duration_ns = if timed {
            secs("duration", a.duration, 0.001)?
        } else {
            secs("duration", a.duration, 0.0)?
        };
        let warmup_ns = secs("warmup", a.warmup, 0.0)?;
        let drain_ns = secs("drain", a.drain, 0.0)?;
        let connect_timeout_ns = secs("connect-timeout", a.connect_timeout, 0.001)?;
        if timed {
            let messages = (warmup_ns + duration_ns) as u128 * a.rate as u128 / 1_000_000_000;
            if messages > 1_000_000_000_000 {
                return Err("--rate × (--warmup + --duration) exceeds 10^12 messages".into());
            }
        }
        if a.spin_us > 10_000 {
            return Err("--spin-us must be at most 10000".into());
        }
        if a.max_inflight == 0 {
            return Err("--max-inflight must be at least 1".into());
        }
        if let Some(p) = a.procs {
            if p == 0 || p > 1024 {
                return Err("--procs must be 1..=1024".into());
            }
        }
        if let Some(t) = a.threads {
            if t == 0 || t > 256 {
                return Err("--threads must be 1..=256".into());
            }
        }
        if let Some(s) = a.source_ips {
            if s == 0 || s > 254 {
                return Err("--source-ips must be 1..=254 (127.0.0.1..127.0.0.254)".into());
            }
            if s > 1 && targets.iter().any(|t| t.addr.is_ipv6()) {
                return Err("--source-ips above 1 needs IPv4 (127.x) targets".into());
            }
        }
        if a.v1 {
            if a.mode != Mode::Fanout {
                return Err("--v1 works only with --mode fanout".into());
            }
            for t in &targets {
                crate::client::v1::check_topic(&t.path)
                    .map_err(|e| format!("--v1: {}: {e}", t.url))?;
            }
        }
        let inflight = match a.inflight {
            None => 0,
            Some(n) if a.mode != Mode::Fanout => {
                return Err(format!("--inflight {n} works only with --mode fanout"))
            }
            Some(n) if n == 0 || n > MAX_INFLIGHT => {
                return Err(format!("--inflight must be 1..={MAX_INFLIGHT} messages"))
            }
            Some(n) => n,
        };
        let cores = match &a.cores {
            Some(list) => parse_cores(list).map_err(|e| format!("--cores {list:?}: {e}"))?,
            None => Vec::new(),
        };
        Ok(Config {
            targets,
            mode: a.mode,
            subscribers,
            publishers,
            total,
            rate: a.rate,
            inflight,
            size: a.size,
            warmup_ns: if timed { warmup_ns } else { 0 },
            duration_ns: if timed { duration_ns } else { 0 },
            drain_ns,
            connect_rate: a.connect_rate,
            max_inflight: a.max_inflight,
            connect_timeout_ns,
            spin_ns: a.spin_us * 1000,
            procs: a.procs,
            threads: a.threads,
            source_ips: a.source_ips,
            cores,
            cluster: a.cluster,
            insecure: a.insecure,
            v1: a.v1,
            deflate: a.deflate,
            payload: a.payload,
            json: a.json,
            hgrm: a.hgrm.clone(),
            html: a.html.clone(),
            server_pid: a.server_pid,
            quiet: a.quiet,
            child: a.child,
        })
    }

    /// Index of the URL connection `g` uses.
    pub fn target_of(&self, g: u64) -> usize {
        (g % self.targets.len() as u64) as usize
    }

    /// Whether any target is `wss://`, so a TLS client configuration is needed.
    pub fn uses_tls(&self) -> bool {
        self.targets.iter().any(|t| t.tls)
    }

    /// Whether connection `g` counts deliveries.
    pub fn is_receiver(&self, g: u64) -> bool {
        match self.mode {
            Mode::Fanout => g >= self.publishers,
            Mode::Echo => true,
            Mode::Connect => false,
        }
    }
}

/// Parses a core list such as `0,2-3` into core ids.
pub fn parse_cores(list: &str) -> Result<Vec<usize>, String> {
    let mut cores = Vec::new();
    for part in list.split(',').map(str::trim) {
        let (lo, hi) = match part.split_once('-') {
            Some((a, b)) => (a.trim(), b.trim()),
            None => (part, part),
        };
        let lo: usize = lo.parse().map_err(|_| format!("bad core {lo:?}"))?;
        let hi: usize = hi.parse().map_err(|_| format!("bad core {hi:?}"))?;
        if lo > hi || hi >= 4096 {
            return Err(format!("bad core range {part:?}"));
        }
        cores.extend(lo..=hi);
    }
    if cores.is_empty() {
        return Err("empty core list".into());
    }
    Ok(cores)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(args: &[&str]) -> Result<Config, String> {
        let mut v = vec!["loadtest"];
        v.extend_from_slice(args);
        let a = Args::try_parse_from(v).map_err(|e| e.to_string())?;
        Config::from_args(&a)
    }

    #[test]
    fn defaults_and_roles() {
        let c = cfg(&["--url", "ws://127.0.0.1:9000/bench"]).expect("valid");
        assert_eq!(c.mode, Mode::Fanout);
        assert_eq!((c.subscribers, c.publishers, c.total), (1000, 1, 1001));
        assert!(!c.is_receiver(0), "connection 0 is the publisher");
        assert!(c.is_receiver(1));
        let c = cfg(&[
            "--url",
            "ws://127.0.0.1:1/",
            "--mode",
            "echo",
            "--connections",
            "5",
        ])
        .expect("valid");
        assert_eq!((c.publishers, c.total), (5, 5));
        assert!(c.is_receiver(4));
    }

    #[test]
    fn rejects_bad_flags() {
        let u = ["--url", "ws://127.0.0.1:9000/"];
        let bad: &[&[&str]] = &[
            &["--size", "15"],
            &["--connections", "0"],
            &["--rate", "0"],
            &["--duration", "0"],
            &["--duration", "nan"],
            &["--warmup", "-1"],
            &["--publishers", "0"],
            &["--procs", "0"],
            &["--threads", "0"],
            &["--source-ips", "255"],
            &["--cores", "3-1"],
            &["--cores", "x"],
            &["--max-inflight", "0"],
            &["--spin-us", "20000"],
            &["--mode", "bogus"],
            &["--inflight", "0"],
            &["--inflight", "100001"],
            &["--inflight", "8", "--mode", "echo"],
        ];
        for extra in bad {
            let mut v = u.to_vec();
            v.extend_from_slice(extra);
            assert!(cfg(&v).is_err(), "accepted {extra:?}");
        }
        assert!(cfg(&["--url", "ws://192.168.1.1/"]).is_err());
        assert!(cfg(&["--connections", "5"]).is_err(), "--url is required");
        assert!(cfg(&["--url", "ws://[::1]:9/", "--source-ips", "2"]).is_err());
    }

    #[test]
    fn inflight_is_closed_loop() {
        let c = cfg(&["--url", "ws://127.0.0.1:9000/b", "--inflight", "8"]).expect("valid");
        assert_eq!(c.inflight, 8);
        let c = cfg(&["--url", "ws://127.0.0.1:9000/b"]).expect("valid");
        assert_eq!(c.inflight, 0, "open loop by default");
    }

    #[test]
    fn wss_and_insecure() {
        let c = cfg(&["--url", "wss://127.0.0.1:9443/t", "--insecure"]).expect("valid");
        assert!(c.uses_tls() && c.insecure);
        let c = cfg(&["--url", "ws://127.0.0.1:9000/t"]).expect("valid");
        assert!(!c.uses_tls() && !c.insecure);
    }

    #[test]
    fn v1_needs_fanout_and_a_topic() {
        let c = cfg(&["--url", "ws://127.0.0.1:9000/bench", "--v1"]).expect("valid");
        assert!(c.v1);
        assert!(
            !cfg(&["--url", "ws://127.0.0.1:9000/bench"])
                .expect("valid")
                .v1
        );
        assert!(cfg(&["--url", "ws://127.0.0.1:9000/", "--v1"]).is_err());
        assert!(cfg(&["--url", "ws://127.0.0.1:9000/a%20b", "--v1"]).is_err());
        let echo = ["--url", "ws://127.0.0.1:9000/t", "--v1", "--mode", "echo"];
        assert!(cfg(&echo).is_err());
    }

    #[test]
    fn connect_mode_ignores_message_flags() {
        let c = cfg(&[
            "--url",
            "ws://127.0.0.1:1/",
            "--mode",
            "connect",
            "--rate",
            "0",
        ])
        .expect("rate is irrelevant in connect mode");
        assert_eq!((c.publishers, c.subscribers, c.duration_ns), (0, 0, 0));
    }

    #[test]
    fn repeated_scalar_flags_take_the_last_value() {
        // The parent re-executes itself with its own arguments plus overrides.
        let c =
            cfg(&["--url", "ws://127.0.0.1:1/", "--procs", "2", "--procs", "3"]).expect("override");
        assert_eq!(c.procs, Some(3));
    }

    #[test]
    fn core_lists() {
        assert_eq!(parse_cores("1").expect("ok"), vec![1]);
        assert_eq!(parse_cores("0, 2-4").expect("ok"), vec![0, 2, 3, 4]);
        assert!(parse_cores("").is_err());
    }
}
