//! Access control, sans-IO: who may open a WebSocket, subscribe to or publish on a topic.
//! `--jwt-secret` (HS256) or `--jwt-public-key` (RS256 / ES256) turn it on; without either,
//! Herald is anonymous (anyone may do anything) and says so at start-up. The JWT signature and
//! claim checks are `jsonwebtoken`'s; this module only decides what the claims allow.
//! docs/security.md describes the threat model and each defence.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

use crate::ops::config::Config;
use crate::proto::http::Denied;

/// The claims Herald reads. `exp` is required; `subscribe` and `publish` list the topics
/// the holder may use: exact names, or a prefix ending in `*` (`prices/*`; `*` is any topic).
#[derive(Debug, Deserialize)]
struct Claims {
    sub: Option<String>,
    exp: u64,
    #[serde(default)]
    subscribe: Vec<String>,
    #[serde(default)]
    publish: Vec<String>,
}

/// What a verified token allows, kept on the connection for its lifetime.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grants {
    pub sub: Option<String>,
    subscribe: Vec<String>,
    publish: Vec<String>,
    /// When the token expires (Unix seconds, leeway included): the connection is closed then.
    pub expires: u64,
}

impl Grants {
    /// Grants a connect hook attached (replacing the token's); they expire with the token
    /// (`expires`), or never for an anonymous connection.
    pub fn from_hook(
        sub: Option<String>,
        subscribe: Vec<String>,
        publish: Vec<String>,
        expires: u64,
    ) -> Self {
        Grants {
            sub,
            subscribe,
            publish,
            expires,
        }
    }

    /// The same grants under another identity (a connect hook's).
    pub fn with_sub(&self, sub: Option<String>) -> Self {
        Grants {
            sub,
            ..self.clone()
        }
    }

    pub fn may_subscribe(&self, topic: &str) -> bool {
        self.subscribe.iter().any(|p| pattern_matches(p, topic))
    }

    pub fn may_publish(&self, topic: &str) -> bool {
        self.publish.iter().any(|p| pattern_matches(p, topic))
    }
}

/// `prices/*` matches every topic starting with `prices/`; `*` matches all; anything else
/// matches only itself.
fn pattern_matches(pattern: &str, topic: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => topic.starts_with(prefix),
        None => pattern == topic,
    }
}

/// The server's access policy, built once from the flags and shared by every worker.
pub struct Auth {
    jwt: Option<(DecodingKey, Validation)>,
    publish_key: Option<String>,
    allowed_origins: Option<Vec<String>>,
    leeway: Duration,
}

/// A bad key file or secret: a start-up error.
#[derive(Debug, thiserror::Error)]
pub enum AuthSetupError {
    #[error("--jwt-public-key {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("--jwt-public-key {path}: not an RSA or EC (P-256) public key in PEM")]
    Key { path: String },
}

impl Auth {
    /// The policy the flags describe.
    pub fn from_config(config: &Config) -> Result<Arc<Auth>, AuthSetupError> {
        let leeway = config.jwt_leeway;
        let jwt = match (&config.jwt_secret, &config.jwt_public_key) {
            (Some(secret), _) => Some((
                DecodingKey::from_secret(secret.as_bytes()),
                validation(Algorithm::HS256, leeway),
            )),
            (None, Some(path)) => Some(public_key(path, leeway)?),
            (None, None) => None,
        };
        let allowed_origins = config
            .allowed_origins
            .as_ref()
            .map(|list| list.iter().map(|o| normalize_origin(o)).collect());
        Ok(Arc::new(Auth {
            jwt,
            publish_key: config.publish_key.clone(),
            allowed_origins,
            leeway,
        }))
    }

    /// No token checks at all: everything is allowed to everyone.
    pub fn is_anonymous(&self) -> bool {
        self.jwt.is_none()
    }

    /// The start-up line that says which policy is in force.
    pub fn describe(&self) -> String {
        let mut line = match &self.jwt {
            None => "auth: anonymous (no --jwt-secret or --jwt-public-key: anyone may subscribe and publish)".to_string(),
            Some((_, v)) => format!("auth: JWT required ({:?}, leeway {}s)", v.algorithms[0], self.leeway.as_secs()),
        };
        if self.publish_key.is_some() {
            line.push_str("; HTTP publish needs the publish key");
        }
        if let Some(origins) = &self.allowed_origins {
            line.push_str(&format!("; origins allowed: {}", origins.join(", ")));
        }
        line
    }

    /// A browser's `Origin` must be on the list (when there is one). Non-browser clients
    /// send no `Origin` and are not affected: the attack this stops needs a victim's browser.
    pub fn check_origin(&self, origin: Option<&str>) -> Result<(), Denied> {
        match (&self.allowed_origins, origin) {
            (Some(allowed), Some(origin)) if !allowed.contains(&normalize_origin(origin)) => {
                Err(Denied::Origin)
            }
            _ => Ok(()),
        }
    }

    /// Verify a token. `Ok(None)`: anonymous mode, no token needed.
    pub fn verify(&self, token: Option<&str>) -> Result<Option<Arc<Grants>>, Denied> {
        let Some((key, validation)) = &self.jwt else {
            return Ok(None);
        };
        let token = token.ok_or(Denied::MissingToken)?;
        let data =
            jsonwebtoken::decode::<Claims>(token, key, validation).map_err(|e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => Denied::Expired,
                _ => Denied::BadToken(e.to_string()),
            })?;
        let c = data.claims;
        Ok(Some(Arc::new(Grants {
            sub: c.sub,
            subscribe: c.subscribe,
            publish: c.publish,
            expires: c.exp.saturating_add(self.leeway.as_secs()),
        })))
    }

    /// An HTTP publish to `topic` with `bearer` (the `Authorization: Bearer` value): the
    /// publish key if one is set, else a token granting the topic (with JWT on).
    pub fn check_http_publish(&self, bearer: Option<&str>, topic: &str) -> Result<(), Denied> {
        if let (Some(key), Some(presented)) = (&self.publish_key, bearer) {
            if constant_time_eq(key.as_bytes(), presented.as_bytes()) {
                return Ok(());
            }
        }
        if self.jwt.is_none() {
            return match self.publish_key {
                Some(_) => Err(Denied::BadPublishKey),
                None => Ok(()),
            };
        }
        match self.verify(bearer)? {
            Some(grants) if !grants.may_publish(topic) => Err(Denied::Forbidden),
            _ => Ok(()),
        }
    }
}

impl Auth {
    /// Opening the dashboard's stream with `key` (its `?key=`): with `--publish-key` set, only
    /// that key opens it (it shows what every topic does, so it is a backend's view); without
    /// one the server is open (config validation refuses `--dashboard` with JWT and no key),
    /// and the stream is as open as `/metrics`.
    pub fn check_dashboard(&self, key: Option<&str>) -> Result<(), Denied> {
        match (&self.publish_key, key) {
            (None, _) => Ok(()),
            (Some(want), Some(got)) if constant_time_eq(want.as_bytes(), got.as_bytes()) => Ok(()),
            (Some(_), _) => Err(Denied::BadPublishKey),
        }
    }
}

/// Unix time now, in seconds (token expiry is in those units).
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn validation(algorithm: Algorithm, leeway: Duration) -> Validation {
    let mut v = Validation::new(algorithm);
    v.leeway = leeway.as_secs();
    v.validate_nbf = true;
    v.set_required_spec_claims(&["exp"]);
    v
}

fn public_key(path: &Path, leeway: Duration) -> Result<(DecodingKey, Validation), AuthSetupError> {
    let shown = path.display().to_string();
    let pem = std::fs::read(path).map_err(|source| AuthSetupError::Read {
        path: shown.clone(),
        source,
    })?;
    if let Ok(key) = DecodingKey::from_rsa_pem(&pem) {
        return Ok((key, validation(Algorithm::RS256, leeway)));
    }
    if let Ok(key) = DecodingKey::from_ec_pem(&pem) {
        return Ok((key, validation(Algorithm::ES256, leeway)));
    }
    Err(AuthSetupError::Key { path: shown })
}

/// Origins compare case-insensitively and without a trailing slash.
fn normalize_origin(origin: &str) -> String {
    origin.trim().trim_end_matches('/').to_ascii_lowercase()
}

/// Compare secrets without leaking, through timing, how much of a guess was right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use jsonwebtoken::{encode, EncodingKey, Header};
    use serde_json::json;

    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    fn auth(args: &[&str]) -> Arc<Auth> {
        let mut all = vec!["herald"];
        all.extend_from_slice(args);
        Auth::from_config(&Config::parse_from(all)).unwrap()
    }

    fn token(claims: serde_json::Value) -> String {
        encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(SECRET.as_bytes()),
        )
        .unwrap()
    }

    #[test]
    fn patterns_match_exact_names_and_prefixes() {
        assert!(pattern_matches("prices/*", "prices/BTC"));
        assert!(pattern_matches("prices/*", "prices/a/b"));
        assert!(!pattern_matches("prices/*", "prices"));
        assert!(pattern_matches("*", "anything"));
        assert!(pattern_matches("chat", "chat"));
        assert!(!pattern_matches("chat", "chat2"));
    }

    #[test]
    fn tokens_are_verified_and_grants_read() {
        let a = auth(&["--jwt-secret", SECRET, "--jwt-leeway", "0s"]);
        let exp = unix_now() + 60;
        let t =
            token(json!({"sub": "u1", "exp": exp, "subscribe": ["prices/*"], "publish": ["chat"]}));
        let g = a.verify(Some(&t)).unwrap().unwrap();
        assert_eq!(g.sub.as_deref(), Some("u1"));
        assert_eq!(g.expires, exp);
        assert!(g.may_subscribe("prices/ETH") && !g.may_subscribe("chat"));
        assert!(g.may_publish("chat") && !g.may_publish("prices/ETH"));
        assert_eq!(a.verify(None), Err(Denied::MissingToken));
        let old = token(json!({"exp": unix_now() - 10}));
        assert_eq!(a.verify(Some(&old)), Err(Denied::Expired));
        assert!(matches!(a.verify(Some("a.b.c")), Err(Denied::BadToken(_))));
        let other = encode(
            &Header::new(Algorithm::HS256),
            &json!({"exp": exp}),
            &EncodingKey::from_secret(b"another secret, 32 bytes or more!!"),
        )
        .unwrap();
        assert!(matches!(a.verify(Some(&other)), Err(Denied::BadToken(_))));
        let no_exp = token(json!({"sub": "x"}));
        assert!(matches!(a.verify(Some(&no_exp)), Err(Denied::BadToken(_))));
    }

    #[test]
    fn anonymous_mode_allows_everything_but_a_set_publish_key() {
        let a = auth(&[]);
        assert!(a.is_anonymous());
        assert_eq!(a.verify(None), Ok(None));
        assert_eq!(a.check_http_publish(None, "t"), Ok(()));
        let k = auth(&["--publish-key", "s3cret"]);
        assert_eq!(k.check_http_publish(Some("s3cret"), "t"), Ok(()));
        assert_eq!(
            k.check_http_publish(Some("wrong"), "t"),
            Err(Denied::BadPublishKey)
        );
        assert_eq!(k.check_http_publish(None, "t"), Err(Denied::BadPublishKey));
    }

    #[test]
    fn the_dashboard_opens_with_the_publish_key_when_one_is_set() {
        let open = auth(&[]);
        assert_eq!(open.check_dashboard(None), Ok(()));
        let k = auth(&["--publish-key", "s3cret"]);
        assert_eq!(k.check_dashboard(Some("s3cret")), Ok(()));
        assert_eq!(k.check_dashboard(Some("s3cre")), Err(Denied::BadPublishKey));
        assert_eq!(k.check_dashboard(None), Err(Denied::BadPublishKey));
    }

    #[test]
    fn origins_are_checked_only_when_listed_and_sent() {
        let a = auth(&[
            "--allowed-origins",
            "https://app.example.com,http://localhost:8080/",
        ]);
        assert_eq!(a.check_origin(Some("https://APP.example.com")), Ok(()));
        assert_eq!(a.check_origin(Some("http://localhost:8080")), Ok(()));
        assert_eq!(
            a.check_origin(Some("https://evil.example")),
            Err(Denied::Origin)
        );
        assert_eq!(a.check_origin(None), Ok(()));
        assert_eq!(auth(&[]).check_origin(Some("https://evil.example")), Ok(()));
    }
}
