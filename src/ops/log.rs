//! A tiny backend for the `log` facade: one line per record on stderr, as text or JSON
//! (`--log-format`), filtered by `--log-level`. Herald logs through `log::warn!` and
//! `log::debug!` with key-value fields (`worker = 0, conn = 7; "connect"`); the macros check
//! the level before formatting anything, so a debug line on the hot path costs one load and
//! one compare when debug is off.
//!
//! Text: `2026-11-25T12:00:00.123Z WARN herald::worker: accept failed worker=0 error="…"`.
//! JSON: `{"ts":"…","level":"WARN","target":"herald::worker","msg":"accept failed","fields":{"worker":0,…}}`.
//!
//! Records from other crates (rustls) are shown only at `warn` and above, whatever the
//! level: their debug output is about their internals, not about Herald's clients.

use std::fmt::Write as _;
use std::io::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

use ::log::kv::{Error as KvError, Key, Value, VisitSource};
use ::log::{Level, LevelFilter, Log, Metadata, Record};

/// `--log-format`: human-readable lines, or one JSON object per line for log shippers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// `TIMESTAMP LEVEL target: message key=value …`
    Text,
    /// `{"ts","level","target","msg","fields":{…}}`
    Json,
}

/// `--log-level`: the least severe level written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum)]
pub enum LogLevel {
    /// Only failures that lose work (a worker panicked).
    Error,
    /// Also operational problems: accept, poll and TLS set-up failures.
    Warn,
    /// Also notable events (the default).
    Info,
    /// Also every connect and disconnect, with peer, worker, connection id and reason.
    Debug,
}

impl LogLevel {
    /// The `log` crate's filter for this level.
    pub fn filter(self) -> LevelFilter {
        match self {
            LogLevel::Error => LevelFilter::Error,
            LogLevel::Warn => LevelFilter::Warn,
            LogLevel::Info => LevelFilter::Info,
            LogLevel::Debug => LevelFilter::Debug,
        }
    }
}

/// Install the stderr logger for the process. Called once by `main`; a second call (or a
/// logger installed by an embedding program) keeps the first logger.
pub fn init(format: LogFormat, level: LogLevel) {
    static TEXT: StderrLogger = StderrLogger {
        format: LogFormat::Text,
    };
    static JSON: StderrLogger = StderrLogger {
        format: LogFormat::Json,
    };
    let logger = match format {
        LogFormat::Text => &TEXT,
        LogFormat::Json => &JSON,
    };
    if ::log::set_logger(logger).is_ok() {
        ::log::set_max_level(level.filter());
    }
}

struct StderrLogger {
    format: LogFormat,
}

impl Log for StderrLogger {
    fn enabled(&self, metadata: &Metadata) -> bool {
        metadata.level() <= ::log::max_level()
            && (metadata.level() <= Level::Warn || is_herald(metadata.target()))
    }

    fn log(&self, record: &Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let mut line = format_record(self.format, SystemTime::now(), record);
        line.push('\n');
        // One write per line, so lines from different workers never interleave.
        let _ = std::io::stderr().lock().write_all(line.as_bytes());
    }

    fn flush(&self) {}
}

fn is_herald(target: &str) -> bool {
    target == "herald" || target.starts_with("herald::")
}

/// One record as a line (without the newline).
pub fn format_record(format: LogFormat, now: SystemTime, record: &Record) -> String {
    let ts = timestamp(now);
    let level = record.level().as_str();
    let target = record.target();
    let mut line = String::with_capacity(128);
    match format {
        LogFormat::Text => {
            let _ = write!(line, "{ts} {level} {target}: {}", record.args());
            let _ = record.key_values().visit(&mut TextFields(&mut line));
        }
        LogFormat::Json => {
            line.push_str("{\"ts\":");
            json_str(&mut line, &ts);
            line.push_str(",\"level\":");
            json_str(&mut line, level);
            line.push_str(",\"target\":");
            json_str(&mut line, target);
            line.push_str(",\"msg\":");
            json_str(&mut line, &record.args().to_string());
            line.push_str(",\"fields\":{");
            let _ = record.key_values().visit(&mut JsonFields {
                out: &mut line,
                first: true,
            });
            line.push_str("}}");
        }
    }
    line
}

/// ` key=value` per field; values with spaces, quotes or `=` are quoted.
struct TextFields<'a>(&'a mut String);

impl<'kvs> VisitSource<'kvs> for TextFields<'_> {
    fn visit_pair(&mut self, key: Key<'kvs>, value: Value<'kvs>) -> Result<(), KvError> {
        let text = value.to_string();
        let plain = !text.is_empty()
            && !text
                .chars()
                .any(|c| c.is_whitespace() || c.is_control() || c == '"' || c == '=');
        if plain {
            let _ = write!(self.0, " {key}={text}");
        } else {
            let _ = write!(self.0, " {key}={text:?}");
        }
        Ok(())
    }
}

/// `"key":value` per field: integers and booleans as JSON numbers and booleans, the rest as
/// strings.
struct JsonFields<'a> {
    out: &'a mut String,
    first: bool,
}

impl<'kvs> VisitSource<'kvs> for JsonFields<'_> {
    fn visit_pair(&mut self, key: Key<'kvs>, value: Value<'kvs>) -> Result<(), KvError> {
        if !std::mem::take(&mut self.first) {
            self.out.push(',');
        }
        json_str(self.out, key.as_str());
        self.out.push(':');
        if let Some(n) = value.to_u64() {
            let _ = write!(self.out, "{n}");
        } else if let Some(n) = value.to_i64() {
            let _ = write!(self.out, "{n}");
        } else if let Some(b) = value.to_bool() {
            let _ = write!(self.out, "{b}");
        } else {
            json_str(self.out, &value.to_string());
        }
        Ok(())
    }
}

/// Append `s` as a JSON string literal.
fn json_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// RFC 3339 UTC with milliseconds: `2026-11-25T12:00:00.123Z` (no time-zone database needed).
pub fn timestamp(now: SystemTime) -> String {
    let since = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        since.subsec_millis()
    )
}

/// Days since 1970-01-01 to (year, month, day) in the proleptic Gregorian calendar
/// (Howard Hinnant's `civil_from_days`).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn timestamps_are_rfc3339_utc_with_millis() {
        assert_eq!(timestamp(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        // 2026-11-25T12:00:00.123Z
        let t = UNIX_EPOCH + Duration::from_millis(1_795_608_000_123);
        assert_eq!(timestamp(t), "2026-11-25T12:00:00.123Z");
        // A leap day.
        let t = UNIX_EPOCH + Duration::from_secs(951_782_400);
        assert_eq!(timestamp(t), "2000-02-29T00:00:00.000Z");
    }

    fn render(format: LogFormat) -> String {
        let peer = "127.0.0.1:5000";
        let kvs: [(&str, Value); 4] = [
            ("worker", Value::from(1u64)),
            ("peer", Value::from(peer)),
            ("reason", Value::from("say \"hi\"")),
            ("tls", Value::from(false)),
        ];
        let record = Record::builder()
            .level(Level::Debug)
            .target("herald::worker")
            .args(format_args!("disconnect"))
            .key_values(&kvs)
            .build();
        format_record(format, UNIX_EPOCH, &record)
    }

    #[test]
    fn text_lines_carry_fields_quoted_when_needed() {
        assert_eq!(
            render(LogFormat::Text),
            "1970-01-01T00:00:00.000Z DEBUG herald::worker: disconnect worker=1 peer=127.0.0.1:5000 reason=\"say \\\"hi\\\"\" tls=false"
        );
    }

    #[test]
    fn json_lines_are_valid_json_with_typed_fields() {
        let line = render(LogFormat::Json);
        let v: serde_json::Value = serde_json::from_str(&line).expect(&line);
        assert_eq!(v["ts"], "1970-01-01T00:00:00.000Z");
        assert_eq!(v["level"], "DEBUG");
        assert_eq!(v["target"], "herald::worker");
        assert_eq!(v["msg"], "disconnect");
        assert_eq!(v["fields"]["worker"], 1);
        assert_eq!(v["fields"]["peer"], "127.0.0.1:5000");
        assert_eq!(v["fields"]["reason"], "say \"hi\"");
        assert_eq!(v["fields"]["tls"], false);
    }

    #[test]
    fn other_crates_are_shown_from_warn_only() {
        assert!(is_herald("herald::worker::input"));
        assert!(!is_herald("rustls::server"));
        assert!(!is_herald("heraldry"));
    }
}
