//! The HTTP/1.1 side of a connection, sans-IO: bytes of a request head in, a decision out
//! (upgrade to a topic, answer a plain request, or refuse with a status), and the response bytes.

use tungstenite::handshake::derive_accept_key;

use crate::deflate;
use crate::topic::{self, TopicError};
use crate::v1;

/// Largest request head accepted. Browsers send well under 2 KiB; more is abuse (431).
pub const MAX_HEAD: usize = 8 * 1024;

/// Most headers a request may carry; more is treated like an oversized head.
const MAX_HEADERS: usize = 64;

/// What a complete request head asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum Request {
    /// A valid WebSocket upgrade; `accept` goes into the 101 response. `deflate`: the
    /// permessage-deflate offer Herald can accept, if any (`--compression` decides).
    Upgrade {
        mode: Mode,
        accept: String,
        deflate: deflate::Agreement,
        credentials: Credentials,
    },
    /// `GET /health`: liveness probe (200 while the process runs, draining or not).
    Health,
    /// `GET /ready`: readiness probe (503 while draining, so load balancers stop sending).
    Ready,
    /// `GET /metrics`: the Prometheus scrape.
    Metrics,
    /// Any other plain `GET`: the demo page, a static file, or a refusal (the server's pages
    /// decide).
    Page { target: String },
    /// Server-Sent Events: `GET /<topic>` with `Accept: text/event-stream`, or
    /// `GET /sse?topic=a&topic=b` for several topics (`sse` module). `last_event_id`: the
    /// `Last-Event-ID` header of a reconnecting client, unparsed (its meaning depends on the
    /// number of topics, checked by `sse::parse_last_event_id`).
    Events {
        topics: Vec<String>,
        last_event_id: Option<String>,
        credentials: Credentials,
    },
    /// `POST /<topic>`: publish the `body_len`-byte body that follows the head, as text
    /// (`text/*`, `application/json`) or binary. `keep_alive`: answer and read the next request.
    Publish {
        topic: String,
        text: bool,
        body_len: usize,
        keep_alive: bool,
        /// The `Authorization: Bearer` value: the publish key or a JWT.
        bearer: Option<String>,
    },
    /// `GET /topics/<topic>` (not as an event stream): how many subscribe to the topic, for
    /// backends and dashboards; allowed to whoever may publish to it (`bearer` as for
    /// `Publish`).
    TopicCount {
        topic: String,
        bearer: Option<String>,
    },
}

/// The path prefix of `GET /topics/<topic>` (subscriber counts).
pub const TOPICS_PATH: &str = "/topics/";

/// What a request presents to prove who it is (checked by `auth`, not here).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Credentials {
    /// A JWT (or, for HTTP publish, possibly the publish key): `Authorization: Bearer X`,
    /// else `?token=X`, else (upgrades) a `Sec-WebSocket-Protocol` entry `bearer.X`.
    pub token: Option<String>,
    /// The `Origin` header a browser sends.
    pub origin: Option<String>,
}

/// What an upgraded connection speaks.
#[derive(Debug, PartialEq, Eq)]
pub enum Mode {
    /// Raw path mode: subscribed to the path's topic, bare payloads.
    Path(String),
    /// The client offered the `herald.v1` subprotocol: topics come from its control
    /// messages, and the path is not a topic.
    V1,
}

/// A complete head: what it asks for and how many bytes it took (frames may follow it).
#[derive(Debug, PartialEq, Eq)]
pub struct Head {
    pub request: Request,
    pub len: usize,
}

/// Why a request's credentials were not accepted (decided by the server's access policy).
/// Each maps to one HTTP status (or `herald.v1` error code).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    #[error("a token is required")]
    MissingToken,
    #[error("invalid token: {0}")]
    BadToken(String),
    #[error("the token has expired")]
    Expired,
    #[error("the token does not grant this topic")]
    Forbidden,
    #[error("origin not allowed")]
    Origin,
    #[error("a valid publish key is required")]
    BadPublishKey,
    /// The application's backend (a hook) said no, with this reason.
    #[error("denied: {0}")]
    ByHook(String),
}

/// Every way a request is refused, each with its HTTP status. This is the one table that
/// turns a client's HTTP mistake into an answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HttpError {
    #[error("bad request: {0}")]
    BadRequest(&'static str),
    #[error("invalid topic: {0}")]
    BadTopic(TopicError),
    #[error("not found")]
    NotFound,
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("this is a WebSocket endpoint: upgrade required")]
    UpgradeRequired,
    #[error("unsupported Sec-WebSocket-Version (only 13)")]
    UnsupportedVersion,
    #[error("request head larger than {MAX_HEAD} bytes")]
    HeadTooLarge,
    #[error("a publish needs a Content-Length body (chunked bodies are not supported)")]
    LengthRequired,
    #[error("body larger than --max-message ({0} bytes)")]
    BodyTooLarge(usize),
    #[error("publish not acknowledged in time")]
    Unavailable,
    /// A backend hook gave no decision (down, slow, an error, garbage, or too many asked).
    #[error("the application backend is unavailable: {0}")]
    HookUnavailable(String),
    #[error("{0}")]
    Denied(Denied),
    #[error("too many connections (--max-conns)")]
    TooManyConns,
    #[error("too many connections from this address (--max-conns-per-ip)")]
    TooManyConnsPerIp,
    #[error("server shutting down")]
    ShuttingDown,
}

impl HttpError {
    /// Status code and reason phrase.
    pub fn status(&self) -> (u16, &'static str) {
        match self {
            HttpError::BadRequest(_) | HttpError::BadTopic(_) => (400, "Bad Request"),
            HttpError::NotFound => (404, "Not Found"),
            HttpError::MethodNotAllowed => (405, "Method Not Allowed"),
            HttpError::UpgradeRequired | HttpError::UnsupportedVersion => (426, "Upgrade Required"),
            HttpError::HeadTooLarge => (431, "Request Header Fields Too Large"),
            HttpError::LengthRequired => (411, "Length Required"),
            HttpError::BodyTooLarge(_) => (413, "Content Too Large"),
            HttpError::Unavailable
            | HttpError::HookUnavailable(_)
            | HttpError::TooManyConns
            | HttpError::ShuttingDown => (503, "Service Unavailable"),
            HttpError::Denied(Denied::Forbidden | Denied::Origin | Denied::ByHook(_)) => {
                (403, "Forbidden")
            }
            HttpError::Denied(_) => (401, "Unauthorized"),
            HttpError::TooManyConnsPerIp => (429, "Too Many Requests"),
        }
    }

    /// Extra headers the RFCs ask for with this status.
    fn extra_headers(&self) -> &'static str {
        match self {
            HttpError::MethodNotAllowed => "Allow: GET, POST\r\n",
            HttpError::UpgradeRequired => "Upgrade: websocket\r\n",
            HttpError::UnsupportedVersion => "Sec-WebSocket-Version: 13\r\n",
            HttpError::Denied(Denied::Forbidden | Denied::Origin | Denied::ByHook(_)) => "",
            HttpError::Denied(_) => "WWW-Authenticate: Bearer\r\n",
            HttpError::TooManyConns
            | HttpError::TooManyConnsPerIp
            | HttpError::ShuttingDown
            | HttpError::HookUnavailable(_) => "Retry-After: 1\r\n",
            _ => "",
        }
    }

    /// The full response; the connection is closed after it.
    pub fn response(&self) -> Vec<u8> {
        let (code, reason) = self.status();
        plain_response(code, reason, self.extra_headers(), &format!("{self}\n"))
    }
}

/// A small `text/plain` response that ends the connection.
pub fn plain_response(code: u16, reason: &str, extra_headers: &str, body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 {code} {reason}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n{extra_headers}\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// The `200 ok` answer to `GET /health`.
pub fn health_response() -> Vec<u8> {
    plain_response(200, "OK", "Cache-Control: no-store\r\n", "ok")
}

/// The answer to `GET /ready`: `200 ready` while serving, `503 draining` once shutting down.
pub fn ready_response(ready: bool) -> Vec<u8> {
    if ready {
        plain_response(200, "OK", "Cache-Control: no-store\r\n", "ready")
    } else {
        plain_response(
            503,
            "Service Unavailable",
            "Cache-Control: no-store\r\nRetry-After: 1\r\n",
            "draining",
        )
    }
}

/// The `101 Switching Protocols` answer that opens the WebSocket.
pub fn upgrade_response(accept: &str, mode: &Mode, extra_headers: &str) -> Vec<u8> {
    let protocol = match mode {
        Mode::V1 => "Sec-WebSocket-Protocol: herald.v1\r\n",
        Mode::Path(_) => "",
    };
    format!("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n{protocol}{extra_headers}\r\n")
        .into_bytes()
}

/// Parse what has arrived of a request head. `Ok(None)`: incomplete, read more. A publish
/// body may be at most `max_body` bytes.
pub fn parse_head(buf: &[u8], max_body: usize) -> Result<Option<Head>, HttpError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let len = match req.parse(buf) {
        Ok(httparse::Status::Complete(len)) if len <= MAX_HEAD => len,
        Ok(httparse::Status::Complete(_)) => return Err(HttpError::HeadTooLarge),
        Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD => {
            return Err(HttpError::HeadTooLarge)
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(HttpError::HeadTooLarge),
        Err(_) => return Err(HttpError::BadRequest("malformed HTTP request")),
    };
    let request = route(&req, max_body)?;
    Ok(Some(Head { request, len }))
}

/// Decide what a parsed request gets.
fn route(req: &httparse::Request, max_body: usize) -> Result<Request, HttpError> {
    let method = req.method.unwrap_or_default();
    let target = req.path.unwrap_or_default();
    if req.version != Some(1) {
        return Err(HttpError::BadRequest("HTTP/1.1 required"));
    }
    let header = |name: &str| {
        req.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| std::str::from_utf8(h.value).unwrap_or(""))
    };
    match method {
        "GET" => {}
        "POST" => return route_publish(target, &header, max_body),
        _ => return Err(HttpError::MethodNotAllowed),
    }
    let path = target.split_once('?').map_or(target, |(p, _)| p);
    let Some(upgrade) = header("upgrade") else {
        let wants_events = header("accept").is_some_and(|accept| {
            accept.split(',').any(|t| {
                let media = t.split(';').next().unwrap_or_default();
                media.trim().eq_ignore_ascii_case("text/event-stream")
            })
        });
        if path == SSE_PATH || (wants_events && !is_reserved_get(path)) {
            return route_events(target, path, &header);
        }
        if let Some(name) = path.strip_prefix(TOPICS_PATH) {
            topic::validate(name).map_err(HttpError::BadTopic)?;
            return Ok(Request::TopicCount {
                topic: name.to_owned(),
                bearer: header("authorization").and_then(bearer_token),
            });
        }
        return match path {
            "/health" => Ok(Request::Health),
            "/ready" => Ok(Request::Ready),
            "/metrics" => Ok(Request::Metrics),
            _ => Ok(Request::Page {
                target: target.to_owned(),
            }),
        };
    };
    if !has_token(upgrade, "websocket") {
        return Err(HttpError::BadRequest("Upgrade header must be websocket"));
    }
    if !header("connection").is_some_and(|c| has_token(c, "upgrade")) {
        return Err(HttpError::BadRequest(
            "Connection header must include Upgrade",
        ));
    }
    if header("host").is_none() {
        return Err(HttpError::BadRequest("missing Host header"));
    }
    if header("sec-websocket-version").map(str::trim) != Some("13") {
        return Err(HttpError::UnsupportedVersion);
    }
    let key = header("sec-websocket-key").map(str::trim).unwrap_or("");
    if !is_valid_key(key) {
        return Err(HttpError::BadRequest(
            "Sec-WebSocket-Key must be 16 bytes in base64",
        ));
    }
    let offers_v1 = req
        .headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("sec-websocket-protocol"))
        .any(|h| has_token(std::str::from_utf8(h.value).unwrap_or(""), v1::PROTOCOL));
    let mode = if offers_v1 {
        Mode::V1
    } else {
        let topic = topic::topic_from_target(target).map_err(HttpError::BadTopic)?;
        Mode::Path(topic.to_owned())
    };
    let extensions = req
        .headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("sec-websocket-extensions"))
        .filter_map(|h| std::str::from_utf8(h.value).ok());
    let protocols = || {
        req.headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case("sec-websocket-protocol"))
            .flat_map(|h| std::str::from_utf8(h.value).unwrap_or("").split(','))
            .map(str::trim)
    };
    let token = header("authorization")
        .and_then(bearer_token)
        .or_else(|| query_param(target, "token"))
        .or_else(|| protocols().find_map(|p| p.strip_prefix(BEARER_PROTOCOL).map(str::to_owned)));
    Ok(Request::Upgrade {
        mode,
        accept: derive_accept_key(key.as_bytes()),
        deflate: deflate::negotiate(extensions),
        credentials: Credentials {
            token,
            origin: header("origin").map(str::to_owned),
        },
    })
}

/// Paths whose plain `GET` is Herald's own, never a topic's event stream, whatever the
/// `Accept` header says: the probes, and the dashboard's page and its own event stream (an
/// `EventSource` on `/dashboard/feed` sends `Accept: text/event-stream` too). Those topics are
/// still streamed through `/sse?topic=…`.
fn is_reserved_get(path: &str) -> bool {
    matches!(
        path,
        "/health" | "/ready" | "/metrics" | "/dashboard" | "/dashboard/feed"
    )
}

/// The path of a Server-Sent Events stream of several topics (`?topic=a&topic=b`).
pub const SSE_PATH: &str = "/sse";

/// Most topics one `GET /sse` stream may name (its `Last-Event-ID` carries one position each).
pub const MAX_SSE_TOPICS: usize = 64;

/// A Server-Sent Events request: the topics (the path's, or `/sse`'s `topic` parameters),
/// the reconnecting client's `Last-Event-ID`, and its credentials (as for an upgrade).
fn route_events<'h>(
    target: &str,
    path: &str,
    header: &impl Fn(&str) -> Option<&'h str>,
) -> Result<Request, HttpError> {
    let topics = if path == SSE_PATH {
        let (_, query) = target.split_once('?').unwrap_or_default();
        let mut topics: Vec<String> = Vec::new();
        for value in query
            .split('&')
            .filter_map(|pair| pair.strip_prefix("topic="))
        {
            topic::validate(value).map_err(HttpError::BadTopic)?;
            if topics.iter().any(|t| t == value) {
                return Err(HttpError::BadRequest("a topic is named twice"));
            }
            topics.push(value.to_owned());
        }
        if topics.is_empty() {
            return Err(HttpError::BadRequest("/sse needs at least one ?topic="));
        }
        if topics.len() > MAX_SSE_TOPICS {
            return Err(HttpError::BadRequest(
                "too many topics for one stream (64 at most)",
            ));
        }
        topics
    } else {
        vec![topic::topic_from_target(target)
            .map_err(HttpError::BadTopic)?
            .to_owned()]
    };
    let token = header("authorization")
        .and_then(bearer_token)
        .or_else(|| query_param(target, "token"));
    Ok(Request::Events {
        topics,
        last_event_id: header("last-event-id").map(str::to_owned),
        credentials: Credentials {
            token,
            origin: header("origin").map(str::to_owned),
        },
    })
}

/// `POST /<topic>` from a backend: validate the topic and the body's framing.
fn route_publish<'h>(
    target: &str,
    header: &impl Fn(&str) -> Option<&'h str>,
    max_body: usize,
) -> Result<Request, HttpError> {
    let topic = topic::topic_from_target(target).map_err(HttpError::BadTopic)?;
    if header("transfer-encoding").is_some() {
        return Err(HttpError::LengthRequired);
    }
    let body_len: usize = match header("content-length") {
        None => return Err(HttpError::LengthRequired),
        Some(v) => v
            .trim()
            .parse()
            .map_err(|_| HttpError::BadRequest("bad Content-Length"))?,
    };
    if body_len > max_body {
        return Err(HttpError::BodyTooLarge(max_body));
    }
    let content_type = header("content-type")
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let text = content_type.starts_with("text/") || content_type.starts_with("application/json");
    let keep_alive = !header("connection").is_some_and(|c| has_token(c, "close"));
    Ok(Request::Publish {
        topic: topic.to_owned(),
        text,
        body_len,
        keep_alive,
        bearer: header("authorization").and_then(bearer_token),
    })
}

/// `202 Accepted` for a publish, with the sequence number the topic's owner gave it
/// (`null` when nobody subscribes: the message is not numbered or kept).
pub fn publish_response(seq: Option<u64>, keep_alive: bool) -> Vec<u8> {
    let body = match seq {
        Some(seq) => format!("{{\"seq\":{seq}}}\n"),
        None => "{\"seq\":null}\n".to_string(),
    };
    let connection = if keep_alive {
        ""
    } else {
        "Connection: close\r\n"
    };
    format!(
        "HTTP/1.1 202 Accepted\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{connection}\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// A browser cannot set `Authorization` on a WebSocket, but it can offer subprotocols: a
/// `herald.v1` client may offer `bearer.<JWT>` beside `herald.v1` (only `herald.v1` is
/// answered).
pub const BEARER_PROTOCOL: &str = "bearer.";

/// The credentials of `Authorization: Bearer X`.
fn bearer_token(value: &str) -> Option<String> {
    let (scheme, token) = value.trim().split_once(' ')?;
    (scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty())
        .then(|| token.trim().to_owned())
}

/// The value of `name` in the target's query string (not percent-decoded: tokens and keys
/// are URL-safe).
fn query_param(target: &str, name: &str) -> Option<String> {
    let (_, query) = target.split_once('?')?;
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        (k == name && !v.is_empty()).then(|| v.to_owned())
    })
}

/// Comma-separated header tokens, compared case-insensitively (`Connection: keep-alive, Upgrade`).
fn has_token(value: &str, token: &str) -> bool {
    value
        .split(',')
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// A nonce of 16 bytes in base64 is 22 significant characters and `==`.
fn is_valid_key(key: &str) -> bool {
    let b = key.as_bytes();
    b.len() == 24
        && b[22..] == *b"=="
        && b[..22]
            .iter()
            .all(|&c| c.is_ascii_alphanumeric() || c == b'+' || c == b'/')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upgrade(path: &str, extra: &str) -> String {
        format!(
            "GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: keep-alive, Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n{extra}\r\n"
        )
    }

    #[test]
    fn topic_count_requests() {
        let get = |target: &str, extra: &str| {
            let req = format!("GET {target} HTTP/1.1\r\nHost: x\r\n{extra}\r\n");
            parse_head(req.as_bytes(), 1024).map(|h| h.map(|h| h.request))
        };
        assert_eq!(
            get("/topics/prices/BTC?x=1", "Authorization: Bearer k\r\n"),
            Ok(Some(Request::TopicCount {
                topic: "prices/BTC".into(),
                bearer: Some("k".into())
            }))
        );
        assert!(matches!(get("/topics/", ""), Err(HttpError::BadTopic(_))));
        assert!(matches!(
            get("/topics/a%20b", ""),
            Err(HttpError::BadTopic(_))
        ));
    }

    #[test]
    fn event_stream_requests() {
        let get = |target: &str, extra: &str| {
            let req = format!("GET {target} HTTP/1.1\r\nHost: x\r\n{extra}\r\n");
            parse_head(req.as_bytes(), 1024).map(|h| h.map(|h| h.request))
        };
        let accept = "Accept: text/event-stream; charset=utf-8\r\n";
        assert_eq!(
            get("/chat?token=t", &format!("{accept}Last-Event-ID: e:4\r\n")),
            Ok(Some(Request::Events {
                topics: vec!["chat".into()],
                last_event_id: Some("e:4".into()),
                credentials: Credentials {
                    token: Some("t".into()),
                    origin: None
                },
            }))
        );
        // Without the Accept header a topic path is a page; /sse is always a stream.
        assert!(matches!(get("/chat", ""), Ok(Some(Request::Page { .. }))));
        assert!(matches!(get("/health", accept), Ok(Some(Request::Health))));
        // The dashboard's own event stream is a page the worker serves, not the topic
        // `dashboard/feed` (an EventSource sends the event-stream Accept header there too).
        for path in ["/dashboard", "/dashboard/feed"] {
            assert!(
                matches!(get(path, accept), Ok(Some(Request::Page { .. }))),
                "{path}"
            );
        }
        match get("/sse?topic=a&x=1&topic=b/c", "Authorization: Bearer k\r\n") {
            Ok(Some(Request::Events {
                topics,
                credentials,
                ..
            })) => {
                assert_eq!(topics, vec!["a", "b/c"]);
                assert_eq!(credentials.token.as_deref(), Some("k"));
            }
            other => panic!("{other:?}"),
        }
        for bad in ["/sse", "/sse?topic=a&topic=a", "/sse?topic=a%20b"] {
            assert_eq!(get(bad, "").unwrap_err().status().0, 400, "{bad}");
        }
        assert_eq!(get("/a b", accept).unwrap_err().status().0, 400);
    }

    #[test]
    fn accepts_a_valid_upgrade() {
        let req = upgrade("/prices/BTC-USD", "Sec-WebSocket-Version: 13\r\n");
        let head = parse_head(req.as_bytes(), 1024).unwrap().unwrap();
        assert_eq!(head.len, req.len());
        assert_eq!(
            head.request,
            Request::Upgrade {
                mode: Mode::Path("prices/BTC-USD".into()),
                accept: "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=".into(),
                deflate: deflate::Agreement::OFF,
                credentials: Credentials::default(),
            }
        );
    }

    #[test]
    fn upgrade_carries_the_deflate_offer_and_the_answer_header() {
        let req = upgrade(
            "/chat",
            "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Extensions: foo\r\n\
             Sec-WebSocket-Extensions: permessage-deflate; server_max_window_bits=9\r\n",
        );
        let Request::Upgrade { deflate, .. } =
            parse_head(req.as_bytes(), 1024).unwrap().unwrap().request
        else {
            panic!("not an upgrade");
        };
        assert!(deflate.is_on());
        let response = upgrade_response("k", &Mode::V1, "Sec-WebSocket-Extensions: x\r\n");
        assert!(response.ends_with(
            b"Sec-WebSocket-Accept: k\r\nSec-WebSocket-Protocol: herald.v1\r\nSec-WebSocket-Extensions: x\r\n\r\n"
        ));
    }

    #[test]
    fn partial_heads_ask_for_more() {
        let req = upgrade("/chat", "Sec-WebSocket-Version: 13\r\n");
        assert_eq!(parse_head(&req.as_bytes()[..20], 1024), Ok(None));
    }

    #[test]
    fn refusals_carry_their_status() {
        let status = |r: &str| parse_head(r.as_bytes(), 1024).unwrap_err().status().0;
        assert_eq!(
            status(&upgrade("/chat", "Sec-WebSocket-Version: 8\r\n")),
            426
        );
        assert_eq!(status(&upgrade("/chat", "")), 426);
        assert_eq!(
            status(&upgrade("/bad%20topic", "Sec-WebSocket-Version: 13\r\n")),
            400
        );
        assert_eq!(status("PUT /chat HTTP/1.1\r\nHost: x\r\n\r\n"), 405);
        assert_eq!(status("POST /chat HTTP/1.1\r\nHost: x\r\n\r\n"), 411);
        assert_eq!(
            status("POST /chat HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"),
            411
        );
        assert_eq!(
            status("POST /chat HTTP/1.1\r\nContent-Length: 1025\r\n\r\n"),
            413
        );
        assert_eq!(
            status("POST /a%20b HTTP/1.1\r\nContent-Length: 1\r\n\r\n"),
            400
        );
        assert_eq!(status("GARBAGE\r\n\r\n"), 400);
        let huge = format!("GET /chat HTTP/1.1\r\nX: {}\r\n", "a".repeat(MAX_HEAD));
        assert_eq!(status(&huge), 431);
    }

    #[test]
    fn publish_requests() {
        let head = |r: &str| parse_head(r.as_bytes(), 1024).unwrap().unwrap().request;
        assert_eq!(
            head("POST /prices/BTC HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: 5\r\n\r\n"),
            Request::Publish { topic: "prices/BTC".into(), text: true, body_len: 5, keep_alive: true, bearer: None }
        );
        assert_eq!(
            head("POST /t HTTP/1.1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"),
            Request::Publish {
                topic: "t".into(),
                text: false,
                body_len: 0,
                keep_alive: false,
                bearer: None
            }
        );
        assert_eq!(
            publish_response(Some(7), true),
            b"HTTP/1.1 202 Accepted\r\nContent-Type: application/json\r\nContent-Length: 10\r\n\r\n{\"seq\":7}\n".to_vec()
        );
    }

    #[test]
    fn health() {
        let head = parse_head(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n", 1024)
            .unwrap()
            .unwrap();
        assert_eq!(head.request, Request::Health);
        let head = |r: &str| parse_head(r.as_bytes(), 1024).unwrap().unwrap().request;
        assert_eq!(
            head("GET /ready HTTP/1.1\r\nHost: x\r\n\r\n"),
            Request::Ready
        );
        assert_eq!(
            head("GET /metrics?x=1 HTTP/1.1\r\nHost: x\r\n\r\n"),
            Request::Metrics
        );
        assert!(ready_response(true).starts_with(b"HTTP/1.1 200 OK\r\n"));
        let draining = String::from_utf8(ready_response(false)).unwrap();
        assert!(draining.starts_with("HTTP/1.1 503 "), "{draining}");
        assert!(draining.contains("\r\nRetry-After: 1\r\n"), "{draining}");
        assert!(draining.ends_with("\r\n\r\ndraining"), "{draining}");
    }
}
