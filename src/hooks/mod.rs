//! Backend hooks (`--connect-hook`, `--subscribe-hook`, `--publish-hook`): the application's
//! own backend decides who may connect, subscribe and publish.
//!
//! Workers never block on a backend. A worker hands a [`HookJob`] to a bounded queue
//! (`try_send`: when `--hook-max-inflight` jobs wait already, the job is refused at once as
//! `unavailable` and counted); a pool of `--hook-threads` threads POSTs each job's JSON to its
//! URL with a blocking HTTP client (`ureq`, keep-alive connections, `--hook-timeout` per
//! request) and sends the [`HookAnswer`] back to the worker's own answer channel, waking its
//! poll with the worker's `mio::Waker`. The connection waits in a phase of its own meanwhile
//! (`worker/hooks.rs`).
//!
//! The backend answers `200` with `{"allow": true|false, "reason": "…"}` and, for connect,
//! optionally `"identity"` and `"grants"` (docs/protocol.md, "Backend hooks"). Anything else
//! (no answer in time, a refused connection, another status, a body that is not that JSON) is
//! a failure: the request is refused as unavailable, never allowed by default.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, Receiver, Sender, TrySendError};
use mio::Waker;
use serde::Deserialize;

/// Which decision a hook makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HookKind {
    Connect,
    Subscribe,
    Publish,
}

impl HookKind {
    pub const ALL: [HookKind; 3] = [HookKind::Connect, HookKind::Subscribe, HookKind::Publish];

    pub fn label(self) -> &'static str {
        match self {
            HookKind::Connect => "connect",
            HookKind::Subscribe => "subscribe",
            HookKind::Publish => "publish",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// The hooks' settings, from the command line.
#[derive(Debug, Clone, Default)]
pub struct HookConfig {
    /// The URL of each hook that is on, by [`HookKind`] index.
    pub urls: [Option<String>; 3],
    pub threads: usize,
    pub timeout: Duration,
    pub max_inflight: usize,
    /// How long an allow of a connect or subscribe hook is reused for the same question
    /// (zero: never).
    pub cache: Duration,
}

impl HookConfig {
    pub fn is_on(&self) -> bool {
        self.urls.iter().any(Option::is_some)
    }
}

/// Who a job is for: the worker, the connection (slab key and id, so a late answer cannot
/// reach the next tenant of the slot), and the worker's own number for the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HookTo {
    pub worker: usize,
    pub key: usize,
    pub conn: u64,
    pub ticket: u64,
}

/// One question for the backend.
#[derive(Debug)]
pub struct HookJob {
    pub kind: HookKind,
    pub to: HookTo,
    /// The JSON body to POST.
    pub body: Vec<u8>,
    /// The question without what varies per connection (the address): the key of the allow
    /// cache. `None`: never cached (publish).
    pub cache_key: Option<String>,
}

/// The backend's decision.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Allowed; for connect, the identity and grants the backend attached, if any.
    Allow(Attached),
    /// Refused by the backend, with its reason.
    Deny(String),
    /// No decision: the backend failed (down, slow, an error status, garbage) or too many
    /// questions were in flight. Refused as `unavailable` / 503.
    Unavailable(String),
}

/// What a connect hook's answer may attach to the connection.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct Attached {
    pub identity: Option<String>,
    pub grants: Option<HookGrants>,
}

/// Grants a connect hook gives, replacing the token's (same patterns as JWT grants).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct HookGrants {
    #[serde(default)]
    pub subscribe: Vec<String>,
    #[serde(default)]
    pub publish: Vec<String>,
}

/// The answer that comes back to the worker.
#[derive(Debug)]
pub struct HookAnswer {
    pub kind: HookKind,
    pub to: HookTo,
    pub verdict: Verdict,
}

/// The answer's JSON.
#[derive(Deserialize)]
struct Reply {
    allow: bool,
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    identity: Option<String>,
    #[serde(default)]
    grants: Option<HookGrants>,
}

/// Counters of every hook, by kind and result; shared by the pool threads and the workers
/// (only touched when hooks are on, never on the message path of a server without them).
#[derive(Debug, Default)]
pub struct HookStats {
    allowed: [AtomicU64; 3],
    denied: [AtomicU64; 3],
    failed: [AtomicU64; 3],
    overloaded: [AtomicU64; 3],
    cached: [AtomicU64; 3],
}

impl HookStats {
    fn count(&self, kind: HookKind, verdict: &Verdict) {
        let counter = match verdict {
            Verdict::Allow(_) => &self.allowed,
            Verdict::Deny(_) => &self.denied,
            Verdict::Unavailable(_) => &self.failed,
        };
        counter[kind.index()].fetch_add(1, Relaxed);
    }

    /// The Prometheus text of the hook counters (appended to `GET /metrics`).
    pub fn prometheus(&self) -> String {
        let mut out = String::from(
            "# HELP herald_hook_requests_total Backend hook decisions, by hook and result (allow, deny, error: the backend failed, overloaded: refused over --hook-max-inflight, cached: an allow reused under --hook-cache).\n# TYPE herald_hook_requests_total counter\n",
        );
        for kind in HookKind::ALL {
            let i = kind.index();
            for (result, counter) in [
                ("allow", &self.allowed[i]),
                ("deny", &self.denied[i]),
                ("error", &self.failed[i]),
                ("overloaded", &self.overloaded[i]),
                ("cached", &self.cached[i]),
            ] {
                out.push_str(&format!(
                    "herald_hook_requests_total{{hook=\"{}\",result=\"{result}\"}} {}\n",
                    kind.label(),
                    counter.load(Relaxed)
                ));
            }
        }
        out
    }
}

/// A worker's end of the hooks: where its jobs go, where its answers come from.
pub struct HookLink {
    jobs: Sender<HookJob>,
    pub answers: Receiver<HookAnswer>,
    pub stats: Arc<HookStats>,
    urls: [bool; 3],
}

impl HookLink {
    /// Whether this hook is on.
    pub fn has(&self, kind: HookKind) -> bool {
        self.urls[kind.index()]
    }

    /// Hand a job to the pool without blocking. `Err`: too many in flight (counted); the
    /// caller refuses the request as unavailable.
    pub fn submit(&self, job: HookJob) -> Result<(), HookKind> {
        let kind = job.kind;
        match self.jobs.try_send(job) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.stats.overloaded[kind.index()].fetch_add(1, Relaxed);
                Err(kind)
            }
        }
    }
}

/// Allows remembered for `--hook-cache`, shared by the pool threads (never by workers).
/// Bounded: when full it is emptied, which costs backend calls, never memory.
struct AllowCache {
    ttl: Duration,
    entries: Mutex<HashMap<String, (Instant, Attached)>>,
}

const CACHE_MAX: usize = 100_000;

impl AllowCache {
    fn get(&self, key: &str, now: Instant) -> Option<Attached> {
        let entries = self.entries.lock().ok()?;
        let (at, attached) = entries.get(key)?;
        (now.duration_since(*at) < self.ttl).then(|| attached.clone())
    }

    fn put(&self, key: String, attached: Attached, now: Instant) {
        if let Ok(mut entries) = self.entries.lock() {
            if entries.len() >= CACHE_MAX {
                entries.clear();
            }
            entries.insert(key, (now, attached));
        }
    }
}

/// Start the pool; returns one [`HookLink`] per worker (`wakers`, in worker order).
pub fn start(config: &HookConfig, wakers: Vec<Arc<Waker>>) -> Vec<HookLink> {
    let (jobs, queue) = bounded::<HookJob>(config.max_inflight.max(1));
    let stats = Arc::new(HookStats::default());
    let mut replies = Vec::new();
    let mut links = Vec::new();
    for _ in &wakers {
        // Never full: at most max_inflight jobs plus one per thread exist at once.
        let (tx, rx) = bounded(config.max_inflight.max(1) + config.threads.max(1));
        replies.push(tx);
        links.push(HookLink {
            jobs: jobs.clone(),
            answers: rx,
            stats: stats.clone(),
            urls: [0, 1, 2].map(|i| config.urls[i].is_some()),
        });
    }
    let agent = ureq::Agent::new_with_config(
        ureq::Agent::config_builder()
            .timeout_global(Some(config.timeout))
            .http_status_as_error(false)
            .max_idle_connections(config.threads.max(1) * 2)
            .max_idle_connections_per_host(config.threads.max(1) * 2)
            .build(),
    );
    let cache = Arc::new(AllowCache {
        ttl: config.cache,
        entries: Mutex::new(HashMap::new()),
    });
    let wakers = Arc::new(wakers);
    let replies = Arc::new(replies);
    for i in 0..config.threads.max(1) {
        let queue = queue.clone();
        let agent = agent.clone();
        let urls = config.urls.clone();
        let stats = stats.clone();
        let cache = cache.clone();
        let wakers = wakers.clone();
        let replies = replies.clone();
        let caching = !config.cache.is_zero();
        let spawned = std::thread::Builder::new()
            .name(format!("herald-hook-{i}"))
            .spawn(move || {
                // Ends when every worker has dropped its sender (shutdown).
                for job in queue.iter() {
                    let now = Instant::now();
                    let cached = job
                        .cache_key
                        .as_deref()
                        .filter(|_| caching)
                        .and_then(|k| cache.get(k, now));
                    let verdict = match cached {
                        Some(attached) => {
                            stats.cached[job.kind.index()].fetch_add(1, Relaxed);
                            Verdict::Allow(attached)
                        }
                        None => {
                            let url = urls[job.kind.index()].as_deref().unwrap_or_default();
                            let verdict = ask(&agent, url, &job.body);
                            stats.count(job.kind, &verdict);
                            if let (Verdict::Allow(attached), Some(key), true) =
                                (&verdict, &job.cache_key, caching)
                            {
                                cache.put(key.clone(), attached.clone(), now);
                            }
                            verdict
                        }
                    };
                    let answer = HookAnswer {
                        kind: job.kind,
                        to: job.to,
                        verdict,
                    };
                    if let Some(tx) = replies.get(job.to.worker) {
                        if tx.send(answer).is_ok() {
                            if let Some(waker) = wakers.get(job.to.worker) {
                                let _ = waker.wake();
                            }
                        }
                    }
                }
            });
        if let Err(e) = spawned {
            log::error!(target: "herald::hooks", error:% = e; "cannot start a hook thread");
        }
    }
    links
}

/// Largest answer body read from a backend.
const MAX_REPLY: u64 = 64 * 1024;

/// POST `body` to `url` and read the decision.
fn ask(agent: &ureq::Agent, url: &str, body: &[u8]) -> Verdict {
    let response = agent
        .post(url)
        .header("Content-Type", "application/json")
        .send(body);
    let mut response = match response {
        Ok(r) => r,
        Err(e) => return Verdict::Unavailable(format!("hook backend failed: {e}")),
    };
    let status = response.status().as_u16();
    let bytes = response
        .body_mut()
        .with_config()
        .limit(MAX_REPLY)
        .read_to_vec();
    if status != 200 {
        return Verdict::Unavailable(format!("hook backend answered {status}"));
    }
    let bytes = match bytes {
        Ok(b) => b,
        Err(e) => return Verdict::Unavailable(format!("hook backend failed: {e}")),
    };
    decide(&bytes)
}

/// The decision in a backend's `200` body.
pub fn decide(body: &[u8]) -> Verdict {
    match serde_json::from_slice::<Reply>(body) {
        Ok(reply) if reply.allow => Verdict::Allow(Attached {
            identity: reply.identity,
            grants: reply.grants,
        }),
        Ok(reply) => Verdict::Deny(
            reply
                .reason
                .unwrap_or_else(|| "denied by the application".into()),
        ),
        Err(_) => {
            Verdict::Unavailable("hook backend answered something that is not a decision".into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_become_verdicts() {
        assert_eq!(
            decide(br#"{"allow":true}"#),
            Verdict::Allow(Attached::default())
        );
        assert_eq!(
            decide(br#"{"allow":false,"reason":"banned"}"#),
            Verdict::Deny("banned".into())
        );
        assert_eq!(
            decide(br#"{"allow":true,"identity":"u1","grants":{"subscribe":["a/*"]}}"#),
            Verdict::Allow(Attached {
                identity: Some("u1".into()),
                grants: Some(HookGrants {
                    subscribe: vec!["a/*".into()],
                    publish: vec![]
                })
            })
        );
        for garbage in [&b"nope"[..], b"{}", br#"{"allow":"yes"}"#, b""] {
            assert!(matches!(decide(garbage), Verdict::Unavailable(_)));
        }
    }
}
