//! `--config FILE`: settings from a TOML file, under the command line.
//!
//! The file's keys are the flags' long names (`max-message = 1048576`, `no-echo = true`), so
//! the README's flag table is also the key reference, and nothing here lists the flags: the
//! keys come from clap's own description of the command ([`clap::Command::get_arguments`]).
//! A flag added to [`crate::ops::config::Config`] is a key the moment it exists.
//!
//! How: every key becomes the command-line token its flag would be (`--max-message=10`;
//! `--no-echo` for `true`, nothing for `false`), and clap parses
//! `[binary, file tokens…, real arguments…]`, so every value goes through the very same
//! parser, default and cross-flag rule as on the command line. A flag the command line gives
//! is left out of the file's tokens, and the command also overrides itself
//! ([`clap::Command::args_override_self`]), so the command line always wins.
//!
//! Each key's value is first checked on its own, so that a bad value is reported with the key
//! and the file (`herald.toml: key `max-message`: invalid value 'abc': invalid digit found in
//! string`) rather than as a flag the user never typed. Unknown keys, `config` itself, tables
//! and dates are refused the same way: every mistake in the file stops the start.

use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};

use clap::error::{ContextKind, ContextValue, ErrorKind};
use clap::{ArgAction, ArgMatches, Command, CommandFactory, FromArgMatches};

/// The id of the flag that names the file (the `config` field of [`crate::ops::config::Config`]).
pub const CONFIG_ID: &str = "config";

/// One key of the file turned into command-line tokens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setting {
    /// The key as written, which is the flag's long name.
    pub key: String,
    /// The clap id of the flag (what [`ArgMatches`] knows it by).
    pub id: String,
    /// The tokens standing for it (`--key=value`, `--flag`, or none for a `false` flag).
    pub tokens: Vec<OsString>,
}

/// A mistake in the file, tied to the key it is about when there is one. Displayed as
/// `FILE: key `KEY`: MESSAGE`, the form every start-up error about the file takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileError {
    /// The file, as it was named on the command line.
    pub file: PathBuf,
    /// The key the mistake is about (`None`: the file as a whole, e.g. unreadable).
    pub key: Option<String>,
    /// What is wrong.
    pub message: String,
    /// The clap error kind it is reported as (decides nothing but the wording category).
    pub kind: ErrorKind,
}

impl fmt::Display for FileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.key {
            Some(key) => write!(f, "{}: key `{key}`: {}", self.file.display(), self.message),
            None => write!(f, "{}: {}", self.file.display(), self.message),
        }
    }
}

impl std::error::Error for FileError {}

/// A key-level mistake before the file name is attached (what [`settings`] returns).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyError {
    /// The key (`None` for a TOML syntax error, which belongs to no key).
    pub key: Option<String>,
    /// What is wrong.
    pub message: String,
    /// How clap should classify it.
    pub kind: ErrorKind,
}

impl KeyError {
    fn new(key: &str, kind: ErrorKind, message: impl Into<String>) -> KeyError {
        KeyError {
            key: Some(key.to_owned()),
            message: message.into(),
            kind,
        }
    }

    /// Attach the file the key was read from.
    pub fn in_file(self, file: &Path) -> FileError {
        FileError {
            file: file.to_owned(),
            key: self.key,
            message: self.message,
            kind: self.kind,
        }
    }
}

/// Where the settings came from, to explain a later error (from cross-flag validation, say)
/// in terms of the key the user actually wrote.
#[derive(Debug, Clone, Default)]
pub struct Origin {
    /// The file, when `--config` was given.
    pub file: Option<PathBuf>,
    /// Long names of the flags whose value came from the file (not overridden).
    pub from_file: Vec<String>,
}

impl Origin {
    /// `message` unchanged, unless it names a flag (`--max-message`) whose value came from
    /// the file: then it is prefixed with `FILE: key `max-message`: ` so the user knows which
    /// line to fix.
    pub fn explain(&self, message: &str) -> String {
        let Some(file) = &self.file else {
            return message.to_owned();
        };
        let named = self
            .from_file
            .iter()
            .find(|long| mentions_flag(message, long));
        match named {
            Some(long) => format!("{}: key `{long}`: {message}", file.display()),
            None => message.to_owned(),
        }
    }
}

/// Whether `text` contains `--long` as a whole flag (not as the start of a longer one).
fn mentions_flag(text: &str, long: &str) -> bool {
    let flag = format!("--{long}");
    text.match_indices(&flag).any(|(at, _)| {
        let next = text[at + flag.len()..].chars().next();
        !next.is_some_and(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    })
}

/// Parse `args` (binary name first, as from [`std::env::args_os`]) into `T`, reading the file
/// that `--config` names, if any, underneath the command line. Every error, in the file or on
/// the command line, is a [`clap::Error`]; the caller prints it and exits (`e.exit()`).
pub fn try_parse<T: CommandFactory + FromArgMatches>(
    args: impl IntoIterator<Item = impl Into<OsString>>,
) -> Result<(T, Origin), clap::Error> {
    let args: Vec<OsString> = args.into_iter().map(Into::into).collect();
    let mut command = T::command().args_override_self(true);
    command.build();
    let cli = command
        .clone()
        .ignore_errors(true)
        .try_get_matches_from(&args);
    let (file, on_cli) = match &cli {
        Ok(m) => (
            m.get_raw(CONFIG_ID)
                .and_then(|mut v| v.next_back())
                .map(PathBuf::from),
            set_on_command_line(&command, m),
        ),
        // --help, --version and friends: nothing to read, let the real parse answer.
        Err(_) => (None, Vec::new()),
    };
    let Some(file) = file else {
        let matches = command.try_get_matches_from_mut(&args)?;
        return Ok((from_matches(&mut command, &matches)?, Origin::default()));
    };

    let text = std::fs::read_to_string(&file).map_err(|e| {
        let err = FileError {
            file: file.clone(),
            key: None,
            message: format!("cannot read the config file: {e}"),
            kind: ErrorKind::Io,
        };
        to_clap(&command, &err)
    })?;
    let settings = settings(&text, &command).map_err(|e| to_clap(&command, &e.in_file(&file)))?;
    let settings: Vec<Setting> = settings
        .into_iter()
        .filter(|s| !on_cli.contains(&s.id))
        .collect();

    let mut combined = Vec::with_capacity(args.len() + settings.len());
    combined.extend(args.first().cloned());
    combined.extend(settings.iter().flat_map(|s| s.tokens.iter().cloned()));
    combined.extend(args.iter().skip(1).cloned());
    let matches = match command.try_get_matches_from_mut(&combined) {
        Ok(m) => m,
        Err(e) if is_not_an_error(&e) => return Err(e),
        Err(e) => {
            // Blame the command line when it fails on its own; otherwise the file took part
            // (e.g. it sets --tls-cert but not --tls-key), so say so.
            command.clone().try_get_matches_from(&args)?;
            let err = FileError {
                file,
                key: None,
                message: clap_message(&e),
                kind: e.kind(),
            };
            return Err(to_clap(&command, &err));
        }
    };
    let origin = Origin {
        file: Some(file),
        from_file: settings.into_iter().map(|s| s.key).collect(),
    };
    Ok((from_matches(&mut command, &matches)?, origin))
}

/// [`try_parse`] from the process's arguments, printing the error and exiting on failure,
/// as [`clap::Parser::parse`] does.
pub fn parse<T: CommandFactory + FromArgMatches>() -> (T, Origin) {
    try_parse(std::env::args_os()).unwrap_or_else(|e| e.exit())
}

/// Turn a file's text into settings, one per key, each already checked against its flag's
/// own value parser. `command` must be built ([`Command::build`]).
pub fn settings(text: &str, command: &Command) -> Result<Vec<Setting>, KeyError> {
    let table: toml::Table = text.parse().map_err(|e: toml::de::Error| KeyError {
        key: None,
        message: format!("not valid TOML: {}", e.to_string().trim_end()),
        kind: ErrorKind::InvalidValue,
    })?;
    let mut out = Vec::with_capacity(table.len());
    for (key, value) in &table {
        let setting = setting(command, key, value)?;
        check_alone(command, &setting)?;
        out.push(setting);
    }
    Ok(out)
}

/// The flags a file may set: long, not positional, not `--help`/`--version`, not `--config`.
pub fn keys(command: &Command) -> impl Iterator<Item = &clap::Arg> {
    command.get_arguments().filter(|a| {
        a.get_long().is_some()
            && a.get_id() != CONFIG_ID
            && !matches!(
                a.get_action(),
                ArgAction::Help | ArgAction::HelpShort | ArgAction::HelpLong | ArgAction::Version
            )
    })
}

/// One key to its tokens.
fn setting(command: &Command, key: &str, value: &toml::Value) -> Result<Setting, KeyError> {
    if key == CONFIG_ID {
        return Err(KeyError::new(
            key,
            ErrorKind::UnknownArgument,
            "a config file cannot name another config file",
        ));
    }
    let Some(arg) = keys(command).find(|a| a.get_long() == Some(key)) else {
        let hint = suggestion(command, key)
            .map(|k| format!("; did you mean `{k}`?"))
            .unwrap_or_default();
        return Err(KeyError::new(
            key,
            ErrorKind::UnknownArgument,
            format!("unknown key (keys are the long flag names, see --help){hint}"),
        ));
    };
    let flag = format!("--{key}");
    let bad = |message: &str| KeyError::new(key, ErrorKind::InvalidValue, message);
    let tokens = match arg.get_action() {
        ArgAction::SetTrue | ArgAction::SetFalse => match value {
            toml::Value::Boolean(true) => vec![OsString::from(flag)],
            toml::Value::Boolean(false) => Vec::new(),
            _ => return Err(bad("expected true or false")),
        },
        ArgAction::Count => match value {
            toml::Value::Integer(n) if (0..=255).contains(n) => {
                vec![OsString::from(&flag); *n as usize]
            }
            _ => return Err(bad("expected a count from 0 to 255")),
        },
        ArgAction::Append => {
            let values = match value {
                toml::Value::Array(items) => items.iter().collect(),
                one => vec![one],
            };
            values
                .into_iter()
                .map(|v| scalar(v).map(|s| OsString::from(format!("{flag}={s}"))))
                .collect::<Result<_, _>>()
                .map_err(|m| bad(&m))?
        }
        _ => {
            let text = match value {
                toml::Value::Array(_) => return Err(bad("expected one value, not a list")),
                v => scalar(v).map_err(|m| bad(&m))?,
            };
            vec![OsString::from(format!("{flag}={text}"))]
        }
    };
    Ok(Setting {
        key: key.to_owned(),
        id: arg.get_id().to_string(),
        tokens,
    })
}

/// A TOML scalar as the text a flag would be given: strings as they are, numbers and
/// booleans written out (`30` for a duration is 30 seconds, as on the command line).
fn scalar(value: &toml::Value) -> Result<String, String> {
    match value {
        toml::Value::String(s) => Ok(s.clone()),
        toml::Value::Integer(n) => Ok(n.to_string()),
        toml::Value::Float(x) => Ok(x.to_string()),
        toml::Value::Boolean(b) => Ok(b.to_string()),
        toml::Value::Datetime(_) => Err("dates are not supported; write a string".into()),
        toml::Value::Array(_) => Err("nested lists are not supported".into()),
        toml::Value::Table(_) => Err(
            "tables are not supported; every key goes at the top level, as `key = value`".into(),
        ),
    }
}

/// Parse the setting's tokens with nothing else, so that a bad value is reported against
/// its key. Missing companions (`--tls-cert` without `--tls-key`) are not this key's fault:
/// the full parse, with the command line, decides those.
fn check_alone(command: &Command, setting: &Setting) -> Result<(), KeyError> {
    let bin = OsString::from(command.get_name());
    let argv = std::iter::once(bin).chain(setting.tokens.iter().cloned());
    match command.clone().try_get_matches_from(argv) {
        Ok(_) => Ok(()),
        Err(e)
            if matches!(
                e.kind(),
                ErrorKind::MissingRequiredArgument | ErrorKind::ArgumentConflict
            ) =>
        {
            Ok(())
        }
        Err(e) => Err(KeyError::new(&setting.key, e.kind(), value_message(&e))),
    }
}

/// A clap value error without clap's framing and flag name: `invalid value 'abc': invalid
/// digit found in string`, or `invalid value 'x'; possible values: on, off`.
fn value_message(e: &clap::Error) -> String {
    let Some(ContextValue::String(value)) = e.get(ContextKind::InvalidValue) else {
        return clap_message(e);
    };
    let mut message = format!("invalid value '{value}'");
    if let Some(source) = std::error::Error::source(e) {
        message.push_str(&format!(": {source}"));
    }
    if let Some(ContextValue::Strings(valid)) = e.get(ContextKind::ValidValue) {
        message.push_str(&format!("; possible values: {}", valid.join(", ")));
    }
    message
}

/// The first paragraph of clap's rendered error, without its `error: ` prefix.
fn clap_message(e: &clap::Error) -> String {
    let text = e.render().to_string();
    let first = text.split("\n\n").next().unwrap_or_default().trim();
    first.strip_prefix("error: ").unwrap_or(first).to_owned()
}

/// `--help` and `--version` come back as errors but are answers, not failures.
fn is_not_an_error(e: &clap::Error) -> bool {
    !e.use_stderr()
}

/// A file error as a clap error: printed like clap's own (`error: …`, usage hint), exit 2.
fn to_clap(command: &Command, err: &FileError) -> clap::Error {
    clap::Error::raw(err.kind, format!("{err}\n")).with_cmd(command)
}

/// Ids of the flags the command line itself gives (so the file's value is left out).
fn set_on_command_line(command: &Command, matches: &ArgMatches) -> Vec<String> {
    command
        .get_arguments()
        .map(|a| a.get_id().as_str())
        .filter(|id| matches.value_source(id) == Some(clap::parser::ValueSource::CommandLine))
        .map(str::to_owned)
        .collect()
}

fn from_matches<T: FromArgMatches>(
    command: &mut Command,
    matches: &ArgMatches,
) -> Result<T, clap::Error> {
    T::from_arg_matches(matches).map_err(|e| e.format(command))
}

/// The key meant by a misspelt one: the same with `_` for `-`, or at most two edits away.
fn suggestion<'c>(command: &'c Command, key: &str) -> Option<&'c str> {
    let normalized = key.replace('_', "-").to_ascii_lowercase();
    keys(command)
        .filter_map(|a| a.get_long())
        .map(|long| (edit_distance(&normalized, long), long))
        .filter(|&(d, _)| d <= 2)
        .min_by_key(|&(d, _)| d)
        .map(|(_, long)| long)
}

/// Levenshtein distance (keys are short; quadratic is fine).
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::ops::config::{Config, Switch};

    fn command() -> Command {
        let mut c = Config::command().args_override_self(true);
        c.build();
        c
    }

    /// The tokens of a file's text, flattened.
    fn tokens(text: &str) -> Result<Vec<String>, KeyError> {
        Ok(settings(text, &command())?
            .into_iter()
            .flat_map(|s| s.tokens)
            .map(|t| t.into_string().unwrap())
            .collect())
    }

    fn error(text: &str) -> KeyError {
        tokens(text).expect_err(text)
    }

    /// A file in the temp directory, removed on drop.
    struct TempFile(PathBuf);

    impl TempFile {
        fn new(name: &str, text: &str) -> TempFile {
            let path = std::env::temp_dir()
                .join(format!("herald-config-{}-{name}.toml", std::process::id()));
            std::fs::write(&path, text).unwrap();
            TempFile(path)
        }

        fn arg(&self) -> &str {
            self.0.to_str().unwrap()
        }
    }

    impl Drop for TempFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    fn parse(args: &[&str]) -> Result<(Config, Origin), clap::Error> {
        try_parse(std::iter::once("herald").chain(args.iter().copied()))
    }

    #[test]
    fn each_toml_type_becomes_the_flag_token() {
        let text = r#"
            listen = "127.0.0.1:0"
            max-message = 10
            no-echo = true
            history-ttl = 30
            drain-timeout = 1.5
            cores = "0,1"
            compression = "off"
        "#;
        assert_eq!(
            tokens(text).unwrap(),
            [
                "--listen=127.0.0.1:0",
                "--max-message=10",
                "--no-echo",
                "--history-ttl=30",
                "--drain-timeout=1.5",
                "--cores=0,1",
                "--compression=off",
            ]
        );
        assert_eq!(tokens("no-echo = false").unwrap(), Vec::<String>::new());
        // A value that looks like a flag stays a value: `--key=value` is never split.
        assert_eq!(
            error("max-message = -5").message,
            "invalid value '-5': invalid digit found in string"
        );
    }

    #[test]
    fn settings_carry_the_key_and_the_clap_id() {
        let s = settings("static = \"www\"", &command()).unwrap();
        assert_eq!(s[0].key, "static");
        assert_eq!(s[0].id, "static_dir");
    }

    #[test]
    fn bad_values_name_the_key_and_why() {
        let e = error("max-message = \"abc\"");
        assert_eq!(e.key.as_deref(), Some("max-message"));
        assert_eq!(
            e.message,
            "invalid value 'abc': invalid digit found in string"
        );
        let e = error("history-ttl = \"5h\"");
        assert_eq!(e.key.as_deref(), Some("history-ttl"));
        assert!(e.message.contains("bad duration unit `h`"), "{e:?}");
        let e = error("compression = \"maybe\"");
        assert_eq!(e.message, "invalid value 'maybe'; possible values: off, on");
        assert_eq!(error("no-echo = 1").message, "expected true or false");
        assert_eq!(error("no-echo = \"yes\"").message, "expected true or false");
        assert_eq!(
            error("listen = [\"a\"]").message,
            "expected one value, not a list"
        );
        assert!(error("listen = 1979-05-27").message.contains("dates"));
        assert!(error("[listen]\nport = 1").message.contains("tables"));
        assert!(error("listen = { port = 1 }").message.contains("tables"));
    }

    #[test]
    fn unknown_keys_are_refused_with_a_hint() {
        let e = error("max_message = 10");
        assert_eq!(e.key.as_deref(), Some("max_message"));
        assert_eq!(e.kind, ErrorKind::UnknownArgument);
        assert!(e.message.ends_with("did you mean `max-message`?"), "{e:?}");
        let e = error("listn = \"x\"");
        assert!(e.message.ends_with("did you mean `listen`?"), "{e:?}");
        let e = error("colour = \"red\"");
        assert!(!e.message.contains("did you mean"), "{e:?}");
        for key in ["help", "version", "config"] {
            let e = error(&format!("{key} = true"));
            assert_eq!(e.key.as_deref(), Some(key));
        }
        assert!(error("config = \"other.toml\"")
            .message
            .contains("cannot name another config file"));
    }

    #[test]
    fn toml_syntax_errors_say_where() {
        let e = error("listen = \"unterminated\nthreads = 1");
        assert_eq!(e.key, None);
        assert!(e.message.starts_with("not valid TOML"), "{e:?}");
        assert!(e.message.contains("line 1"), "{e:?}");
        let e = error("threads = 1\nthreads = 2");
        assert!(e.message.contains("duplicate key"), "{e:?}");
    }

    #[test]
    fn the_first_bad_key_in_file_order_is_reported() {
        let e = error("zzz = 1\naaa = 2");
        assert_eq!(e.key.as_deref(), Some("zzz"));
    }

    #[test]
    fn the_command_line_overrides_the_file() {
        let f = TempFile::new(
            "override",
            "max-message = 10\nno-echo = true\nhistory-ttl = 30\nlisten = \"127.0.0.1:7\"",
        );
        let (c, origin) = parse(&["--config", f.arg()]).unwrap();
        assert_eq!(c.max_message, 10);
        assert!(c.no_echo);
        assert_eq!(c.history_ttl, Duration::from_secs(30));
        assert_eq!(c.listen.port(), 7);
        assert_eq!(c.config.as_deref(), Some(f.0.as_path()));
        assert_eq!(origin.from_file.len(), 4);
        for args in [
            &["--config", f.arg(), "--max-message", "20"][..],
            &["--max-message", "20", "--config", f.arg()],
            &["--max-message=20", "--config", f.arg()],
        ] {
            let (c, origin) = parse(args).unwrap();
            assert_eq!(c.max_message, 20, "{args:?}");
            assert!(c.no_echo);
            assert!(!origin.from_file.contains(&"max-message".to_string()));
        }
        // Without the file, everything is the default.
        let (c, origin) = parse(&[]).unwrap();
        assert_eq!(c.max_message, 1 << 20);
        assert_eq!(c.compression, Switch::On);
        assert!(origin.file.is_none());
    }

    #[test]
    fn file_errors_name_the_file_and_key() {
        let f = TempFile::new("bad", "threads = 1\nmax-message = \"abc\"");
        let e = parse(&["--config", f.arg()]).unwrap_err();
        assert_eq!(e.exit_code(), 2);
        let text = e.render().to_string();
        assert!(
            text.contains(&format!(
                "{}: key `max-message`: invalid value 'abc': invalid digit found in string",
                f.arg()
            )),
            "{text}"
        );
        let missing = std::env::temp_dir().join("herald-no-such-config.toml");
        let e = parse(&["--config", missing.to_str().unwrap()]).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Io);
        assert!(e.render().to_string().contains(&format!(
            "{}: cannot read the config file",
            missing.display()
        )));
    }

    #[test]
    fn cross_flag_rules_see_file_and_command_line_together() {
        let f = TempFile::new("tls", "tls-cert = \"cert.pem\"");
        let e = parse(&["--config", f.arg()]).unwrap_err();
        let text = e.render().to_string();
        assert!(text.contains(&format!("{}: ", f.arg())), "{text}");
        assert!(text.contains("--tls-key"), "{text}");
        let (c, _) = parse(&["--config", f.arg(), "--tls-key", "key.pem"]).unwrap();
        assert_eq!(c.tls_cert.as_deref(), Some(Path::new("cert.pem")));
        // A mistake on the command line alone is reported as clap reports it.
        let e = parse(&["--config", f.arg(), "--threads", "x"]).unwrap_err();
        assert!(!e.render().to_string().contains(f.arg()));
    }

    #[test]
    fn help_still_answers_with_a_file() {
        let f = TempFile::new("help", "threads = 1");
        let e = parse(&["--config", f.arg(), "--help"]).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::DisplayHelp);
        assert_eq!(e.exit_code(), 0);
    }

    #[test]
    fn validation_messages_point_at_the_key_that_set_the_flag() {
        let f = TempFile::new("validate", "threads = 0");
        let (c, origin) = parse(&["--config", f.arg()]).unwrap();
        let msg = origin.explain(&c.validate().unwrap_err());
        assert_eq!(
            msg,
            format!("{}: key `threads`: --threads must be at least 1", f.arg())
        );
        // The same mistake on the command line is not blamed on the file.
        let (c, origin) = parse(&["--config", f.arg(), "--threads", "0"]).unwrap();
        assert_eq!(
            origin.explain(&c.validate().unwrap_err()),
            "--threads must be at least 1"
        );
        assert!(!mentions_flag("--history-ttl bad", "history"));
        assert!(mentions_flag("--history must", "history"));
    }

    /// Flags of the kinds Config does not have yet, as another engineer might add them.
    #[derive(Debug, clap::Parser)]
    struct Repeats {
        #[arg(long)]
        config: Option<PathBuf>,
        /// Repeatable: `--origin a --origin b`.
        #[arg(long)]
        origin: Vec<String>,
        #[arg(long, action = ArgAction::Count)]
        verbose: u8,
    }

    #[test]
    fn repeatable_and_counted_flags_take_lists_and_counts() {
        let f = TempFile::new("repeats", "origin = [\"a\", \"b\"]\nverbose = 2");
        let parse = |args: &[&str]| {
            try_parse::<Repeats>(["x", "--config", f.arg()].iter().chain(args))
                .unwrap()
                .0
        };
        let r = parse(&[]);
        assert_eq!((r.origin, r.verbose), (vec!["a".into(), "b".into()], 2));
        // The command line replaces the file's list rather than adding to it, and may still
        // repeat the flag.
        let r = parse(&["--origin", "c", "--origin", "d", "--verbose"]);
        assert_eq!((r.origin, r.verbose), (vec!["c".into(), "d".into()], 1));
        let one = TempFile::new("repeats-one", "origin = \"x\"");
        let r = try_parse::<Repeats>(["x", "--config", one.arg()])
            .unwrap()
            .0;
        assert_eq!(r.origin, ["x"]);
        let bad = TempFile::new("repeats-bad", "verbose = true");
        assert!(try_parse::<Repeats>(["x", "--config", bad.arg()]).is_err());
    }

    const EXAMPLE: &str = include_str!("../../herald.example.toml");

    /// The example's `# key = value` lines, uncommented.
    fn example_entries() -> Vec<(String, String)> {
        EXAMPLE
            .lines()
            .filter_map(|l| l.trim_start_matches('#').trim().split_once(" = "))
            .filter(|(k, _)| {
                !k.is_empty()
                    && k.bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            })
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect()
    }

    #[test]
    fn the_example_file_lists_every_flag() {
        let entries = example_entries();
        let command = command();
        let missing: Vec<_> = keys(&command)
            .filter_map(|a| a.get_long())
            .filter(|long| !entries.iter().any(|(k, _)| k == long))
            .collect();
        assert!(
            missing.is_empty(),
            "herald.example.toml has no `# key = default` line for: {missing:?}"
        );
    }

    #[test]
    fn the_example_file_shows_the_real_defaults_and_valid_values() {
        let entries = example_entries();
        let text: String = entries
            .iter()
            .map(|(k, v)| format!("{k} = {v}\n"))
            .collect();
        let table: toml::Table = text.parse().unwrap();
        let command = command();
        let mut wrong = Vec::new();
        for arg in keys(&command) {
            let long = arg.get_long().unwrap();
            let defaults = arg.get_default_values();
            let (Some(default), Some(shown)) = (defaults.first(), table.get(long)) else {
                continue;
            };
            let shown = scalar(shown).unwrap();
            if shown != default.to_string_lossy() {
                wrong.push(format!("{long}: example {shown}, default {default:?}"));
            }
        }
        assert!(wrong.is_empty(), "herald.example.toml: {wrong:?}");
        // Every value shown, uncommented, is accepted by its flag.
        settings(&text, &command).unwrap();
    }
}
