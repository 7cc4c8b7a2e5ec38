//! One pub/sub connection to one Redis node, spoken directly (RESP2 over a blocking socket,
//! parsed by the `redis` crate's resumable parser).
//!
//! Why not the crate's `PubSub`: its blocking API knows neither `SSUBSCRIBE` nor the
//! `smessage` pushes of sharded pub/sub, and it cannot report a `MOVED` answer to a
//! subscription. Here a subscription returns only once Redis confirmed it (messages heard
//! meanwhile are kept, in order), a refusal comes back as the error Redis gave, and an
//! unsubscription Redis made on its own (the slot moved to another shard, the node became
//! a replica) is a fault: the caller resubscribes where the topic lives now.

use std::collections::VecDeque;
use std::io::{BufReader, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use redis::{ConnectionInfo, IntoConnectionInfo, Parser, RedisError, Value};

/// Plain or sharded pub/sub.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `SUBSCRIBE` / `PUBLISH`: one Redis, every node hears every channel it asks for.
    Plain,
    /// `SSUBSCRIBE` / `SPUBLISH`: Redis Cluster keeps a channel on the shard owning its slot.
    Sharded,
}

/// One message heard: channel and payload.
pub type Heard = (String, Vec<u8>);

/// A pub/sub connection.
pub struct Feed {
    writer: TcpStream,
    reader: BufReader<TcpStream>,
    parser: Parser,
    kind: Kind,
    /// Messages read while waiting for a confirmation.
    queued: VecDeque<Heard>,
    /// Read timeout now set on the socket, and whether it is non-blocking (each changed only
    /// when it must: a busy feed reads from its buffer without a system call).
    timeout: Option<Duration>,
    nonblocking: bool,
    /// Registered with the listener's [`crate::cluster::alarm::Alarm`].
    pub watched: bool,
}

fn fault(what: impl Into<String>) -> RedisError {
    RedisError::from(std::io::Error::other(what.into()))
}

fn text(v: &Value) -> Option<&[u8]> {
    match v {
        Value::BulkString(b) => Some(b),
        Value::SimpleString(s) => Some(s.as_bytes()),
        _ => None,
    }
}

impl Feed {
    /// Connect to `url` (`redis://[USER:PASSWORD@]HOST:PORT`), authenticating if it says so.
    pub fn connect(url: &str, kind: Kind, timeout: Duration) -> Result<Feed, RedisError> {
        let info: ConnectionInfo = url.into_connection_info()?;
        let redis::ConnectionAddr::Tcp(host, port) = info.addr() else {
            return Err(fault("pub/sub needs a TCP address"));
        };
        let addr = (host.as_str(), *port)
            .to_socket_addrs()?
            .next()
            .ok_or_else(|| fault(format!("{host}: no address")))?;
        let stream = TcpStream::connect_timeout(&addr, timeout)?;
        stream.set_nodelay(true)?;
        stream.set_write_timeout(Some(timeout))?;
        let mut feed = Feed {
            writer: stream.try_clone()?,
            reader: BufReader::with_capacity(64 * 1024, stream),
            parser: Parser::new(),
            kind,
            queued: VecDeque::new(),
            timeout: None,
            nonblocking: false,
            watched: false,
        };
        let settings = info.redis_settings();
        if let Some(password) = settings.password() {
            let mut auth = redis::cmd("AUTH");
            if let Some(user) = settings.username() {
                auth.arg(user);
            }
            auth.arg(password);
            feed.send(&auth)?;
            feed.read(Some(timeout))?
                .ok_or_else(|| fault("no answer to AUTH"))?
                .extract_error()?;
        }
        Ok(feed)
    }

    /// The socket's descriptor, for the listener's alarm to wait on.
    pub fn fd(&self) -> std::os::fd::RawFd {
        std::os::fd::AsRawFd::as_raw_fd(self.reader.get_ref())
    }

    /// Blocking (both clones share the socket's mode) or not.
    fn set_nonblocking(&mut self, nonblocking: bool) -> Result<(), RedisError> {
        if self.nonblocking != nonblocking {
            self.reader.get_ref().set_nonblocking(nonblocking)?;
            self.nonblocking = nonblocking;
        }
        Ok(())
    }

    fn send(&mut self, cmd: &redis::Cmd) -> Result<(), RedisError> {
        self.set_nonblocking(false)?;
        self.writer.write_all(&cmd.get_packed_command())?;
        Ok(())
    }

    /// The next value from Redis, or `None` if none came within `wait` (`None`: only what
    /// has already arrived).
    fn read(&mut self, wait: Option<Duration>) -> Result<Option<Value>, RedisError> {
        self.set_nonblocking(wait.is_none())?;
        if let Some(wait) = wait {
            if self.timeout != Some(wait) {
                self.reader.get_ref().set_read_timeout(Some(wait))?;
                self.timeout = Some(wait);
            }
        }
        match self.parser.parse_value(&mut self.reader) {
            Ok(v) => Ok(Some(v)),
            Err(e) if e.is_timeout() => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn verbs(&self) -> (&'static str, &'static str) {
        match self.kind {
            Kind::Plain => ("SUBSCRIBE", "UNSUBSCRIBE"),
            Kind::Sharded => ("SSUBSCRIBE", "SUNSUBSCRIBE"),
        }
    }

    /// Subscribe to `channel`; returns once Redis confirmed it. An error answer (`MOVED`: the
    /// channel's slot lives elsewhere) is returned as it came.
    pub fn subscribe(&mut self, channel: &str, timeout: Duration) -> Result<(), RedisError> {
        let verb = self.verbs().0;
        self.request(verb, channel, timeout)
    }

    /// Subscribe to every one of `channels`, the requests sent together (one round trip
    /// for all); returns once Redis answered each. A refusal (`MOVED`: that channel's slot
    /// lives elsewhere) is returned with the channel's index; the others are in place.
    pub fn subscribe_many(
        &mut self,
        channels: &[String],
        timeout: Duration,
    ) -> Result<Vec<(usize, RedisError)>, RedisError> {
        let verb = self.verbs().0;
        self.request_many(verb, channels, timeout)
    }

    /// Unsubscribe from every one of `channels` in one round trip; returns once Redis
    /// answered each (refusals as for [`Feed::subscribe_many`]).
    pub fn unsubscribe_many(
        &mut self,
        channels: &[String],
        timeout: Duration,
    ) -> Result<Vec<(usize, RedisError)>, RedisError> {
        let verb = self.verbs().1;
        self.request_many(verb, channels, timeout)
    }

    fn request_many(
        &mut self,
        verb: &str,
        channels: &[String],
        timeout: Duration,
    ) -> Result<Vec<(usize, RedisError)>, RedisError> {
        let mut packed = Vec::new();
        for channel in channels {
            packed.extend_from_slice(&redis::cmd(verb).arg(channel).get_packed_command());
        }
        self.set_nonblocking(false)?;
        self.writer.write_all(&packed)?;
        let mut refused = Vec::new();
        let mut next = 0;
        while next < channels.len() {
            let value = self
                .read(Some(timeout))?
                .ok_or_else(|| fault(format!("no answer to {verb} {}", channels[next])))?;
            // An error answers the oldest request still open.
            let value = match value.extract_error() {
                Ok(value) => value,
                Err(e) => {
                    refused.push((next, e));
                    next += 1;
                    continue;
                }
            };
            match self.classify(value)? {
                Event::Message(heard) => self.queued.push_back(heard),
                Event::Confirmed(kind, ch)
                    if kind.eq_ignore_ascii_case(verb) && ch == channels[next] =>
                {
                    next += 1
                }
                Event::Confirmed(kind, ch) => {
                    return Err(fault(format!(
                        "unexpected {kind} {ch} while waiting for {verb} {}",
                        channels[next]
                    )))
                }
            }
        }
        Ok(refused)
    }

    /// Subscribe to `channel` with plain `SUBSCRIBE`, on a Redis Cluster node too (where a
    /// plain channel is heard on every node: the topic notices, `script::NOTICES`); returns
    /// once confirmed.
    pub fn subscribe_plain(&mut self, channel: &str, timeout: Duration) -> Result<(), RedisError> {
        self.request("SUBSCRIBE", channel, timeout)
    }

    /// Undo a [`Feed::subscribe_plain`]; returns once confirmed.
    pub fn unsubscribe_plain(
        &mut self,
        channel: &str,
        timeout: Duration,
    ) -> Result<(), RedisError> {
        self.request("UNSUBSCRIBE", channel, timeout)
    }

    /// Unsubscribe from `channel`; returns once Redis confirmed it.
    pub fn unsubscribe(&mut self, channel: &str, timeout: Duration) -> Result<(), RedisError> {
        let verb = self.verbs().1;
        self.request(verb, channel, timeout)
    }

    fn request(&mut self, verb: &str, channel: &str, timeout: Duration) -> Result<(), RedisError> {
        self.send(redis::cmd(verb).arg(channel))?;
        loop {
            let value = self
                .read(Some(timeout))?
                .ok_or_else(|| fault(format!("no answer to {verb} {channel}")))?;
            match self.classify(value)? {
                Event::Message(heard) => self.queued.push_back(heard),
                Event::Confirmed(kind, ch) if kind.eq_ignore_ascii_case(verb) && ch == channel => {
                    return Ok(())
                }
                Event::Confirmed(kind, ch) => {
                    return Err(fault(format!(
                        "unexpected {kind} {ch} while waiting for {verb} {channel}"
                    )))
                }
            }
        }
    }

    /// The next message, waiting at most `wait` (`None`: only one that already arrived);
    /// `None` if none came.
    pub fn next(&mut self, wait: Option<Duration>) -> Result<Option<Heard>, RedisError> {
        if let Some(heard) = self.queued.pop_front() {
            return Ok(Some(heard));
        }
        match self.read(wait)? {
            None => Ok(None),
            Some(value) => match self.classify(value)? {
                Event::Message(heard) => Ok(Some(heard)),
                // Nothing is being asked for: Redis dropped a subscription on its own.
                Event::Confirmed(kind, ch) => {
                    Err(fault(format!("Redis ended the subscription ({kind} {ch})")))
                }
            },
        }
    }

    fn classify(&self, value: Value) -> Result<Event, RedisError> {
        let value = value.extract_error()?;
        let (Value::Array(parts) | Value::Push { data: parts, .. }) = &value else {
            return Err(fault(format!("unexpected pub/sub value {value:?}")));
        };
        let kind = match &value {
            Value::Push { kind, .. } => kind.to_string().into_bytes(),
            _ => parts
                .first()
                .and_then(text)
                .map(<[u8]>::to_vec)
                .unwrap_or_default(),
        };
        let skip = usize::from(!matches!(value, Value::Push { .. }));
        let channel = parts
            .get(skip)
            .and_then(text)
            .map(|c| String::from_utf8_lossy(c).into_owned())
            .unwrap_or_default();
        match kind.as_slice() {
            b"message" | b"smessage" => {
                let payload = parts.get(skip + 1).and_then(text).unwrap_or_default();
                Ok(Event::Message((channel, payload.to_vec())))
            }
            b"subscribe" | b"ssubscribe" | b"unsubscribe" | b"sunsubscribe" => Ok(
                Event::Confirmed(String::from_utf8_lossy(&kind).into_owned(), channel),
            ),
            _ => Err(fault(format!("unexpected pub/sub value {value:?}"))),
        }
    }
}

enum Event {
    Message(Heard),
    Confirmed(String, String),
}
