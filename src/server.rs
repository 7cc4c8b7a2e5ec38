//! Start-up and the control thread: raise limits, bind one listener per worker, start the
//! pinned workers, print stats while they run, and on SIGINT/SIGTERM drain them and print
//! the final report.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

use crossbeam_channel::Sender;
use mio::{Events, Interest, Poll, Token, Waker};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook_mio::v1_0::Signals;

use crate::cluster;
use crate::feed::bus::{Bus, BusMsg, PeerLink, INBOX_CAPACITY};
use crate::hooks;
use crate::ops::config::Config;
use crate::ops::os;
use crate::ops::stats::{self, Counters, SharedCounters};
use crate::ops::topic_stats::{self, TopicBoard, TopicSelector};
use crate::policy::auth::{Auth, AuthSetupError};
use crate::policy::guard::Gate;
use crate::proto::pattern::PatternList;
use crate::site::{Site, SiteError};
use crate::worker::tls;
use crate::worker::{Listener, Worker, WorkerParts, WorkerReport, WAKER};

/// A started server: its address and the handles the control loop needs.
pub struct Server {
    pub addr: SocketAddr,
    workers: Vec<JoinHandle<WorkerReport>>,
    wakers: Vec<Arc<Waker>>,
    shared: Vec<Arc<SharedCounters>>,
    shutdown: Arc<AtomicBool>,
    config: Arc<Config>,
    /// Registered before the first line is printed, so a signal sent as soon as a script
    /// sees `listening on` is never the default "terminate now".
    signals: Signals,
    /// Cluster mode: broker health and counters, appended to the stats line.
    broker: Option<Arc<cluster::BrokerStats>>,
    /// Per-topic counts and every worker's busiest topics (stats line, final report).
    topic_board: Arc<TopicBoard>,
}

/// Why the server could not start; each is a clear message for the operator.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: io::Error },
    #[error("cannot set up worker {index}: {source}")]
    Worker { index: usize, source: io::Error },
    #[error("cannot install signal handlers: {0}")]
    Signals(io::Error),
    #[error(transparent)]
    Tls(#[from] tls::TlsSetupError),
    #[error(transparent)]
    Auth(#[from] AuthSetupError),
    #[error("cannot start the cluster broker bridge: {0}")]
    Broker(io::Error),
    #[error(transparent)]
    Site(#[from] SiteError),
}

impl Server {
    /// Bind, print the start-up lines, and start the workers.
    pub fn start(config: Config) -> Result<Server, StartError> {
        let signals = Signals::new([SIGINT, SIGTERM]).map_err(StartError::Signals)?;
        let limit = os::raise_file_limit();
        let cores = os::plan_cores(
            config.cores.as_ref().map(|c| c.0.as_slice()),
            config.threads,
        );
        let count = cores.len();
        let auth = Auth::from_config(&config)?;
        let gate = Gate::new(config.max_conns, config.max_conns_per_ip);
        let site = Arc::new(Site::load(config.static_dir.as_deref())?);
        let tls_config = match (&config.tls_cert, &config.tls_key) {
            (Some(cert), Some(key)) => Some(tls::load_config(cert, key)?),
            _ => None,
        };
        // Per worker, its listeners: one per endpoint, all bound before anything is printed.
        let mut listeners: Vec<Vec<Listener>> = (0..count).map(|_| Vec::new()).collect();
        let mut bound = Vec::new();
        for (want, is_tls) in config.endpoints() {
            let (addr, sockets) = os::bind_listeners(want, count)
                .map_err(|source| StartError::Bind { addr: want, source })?;
            let tls = if is_tls { tls_config.clone() } else { None };
            for (mine, socket) in listeners.iter_mut().zip(sockets) {
                mine.push(Listener {
                    socket,
                    tls: tls.clone(),
                });
            }
            bound.push((addr, is_tls));
        }
        for (addr, is_tls) in &bound {
            println!(
                "listening on {}://{addr}",
                if *is_tls { "wss" } else { "ws" }
            );
        }
        let addr = bound[0].0;
        let core_names: Vec<String> = cores
            .iter()
            .map(|c| c.map_or_else(|| "-".to_string(), |c| c.id.to_string()))
            .collect();
        println!("workers: {count} (cores {})", core_names.join(","));
        match limit {
            Ok(limit) => println!(
                "capacity: {} connections (open-file limit {}, raised from {})",
                limit.connection_capacity(count),
                limit.now,
                limit.before
            ),
            Err(e) => println!("capacity: unknown (cannot read the open-file limit: {e})"),
        }
        println!("{}", auth.describe());

        let config = Arc::new(config);
        let shutdown = Arc::new(AtomicBool::new(false));
        let mut polls = Vec::with_capacity(count);
        let mut links = Vec::with_capacity(count);
        let mut inboxes = Vec::with_capacity(count);
        for index in 0..count {
            let poll = Poll::new().map_err(|source| StartError::Worker { index, source })?;
            let waker = Waker::new(poll.registry(), WAKER)
                .map_err(|source| StartError::Worker { index, source })?;
            let (tx, rx) = crossbeam_channel::bounded(INBOX_CAPACITY);
            links.push((tx, Arc::new(waker)));
            inboxes.push(rx);
            polls.push(poll);
        }
        let wakers: Vec<Arc<Waker>> = links.iter().map(|(_, w)| w.clone()).collect();
        let shared: Vec<Arc<SharedCounters>> = (0..count).map(|_| Arc::default()).collect();
        let everyone: Arc<[Arc<SharedCounters>]> = shared.clone().into();
        let topic_board = Arc::new(TopicBoard::new(
            TopicSelector::new(
                PatternList::new(config.metrics_topics.clone()),
                config.metrics_topics_max,
            ),
            count,
        ));

        let boot = boot_id();
        let cluster = match &config.broker {
            Some(url) => {
                let broker = cluster::BrokerConfig {
                    url: url.clone(),
                    history: config.broker_history,
                    node: boot,
                    presence_cap: config.presence_max_members,
                };
                let peers = peer_links(&links);
                println!(
                    "cluster: node {boot:08x}, broker {}, history {} messages per topic in Redis",
                    cluster::redacted(url),
                    config.broker_history
                );
                let link = cluster::start(broker, peers).map_err(StartError::Broker)?;
                if config.dashboard {
                    // Every node's figures on every node's dashboard (src/cluster/roster.rs).
                    cluster::roster::start(
                        url,
                        boot,
                        everyone.clone(),
                        link.stats.clone(),
                        link.roster.clone(),
                    )
                    .map_err(StartError::Broker)?;
                }
                Some(link)
            }
            None => None,
        };
        let broker_stats = cluster.as_ref().map(|c| c.stats.clone());
        let mut hook_links = start_hooks(&config, &wakers).into_iter();
        let mut workers = Vec::with_capacity(count);
        for (index, ((poll, listeners), inbox)) in
            polls.into_iter().zip(listeners).zip(inboxes).enumerate()
        {
            let peers = peer_links(&links);
            let parts = WorkerParts {
                index,
                poll,
                listeners,
                bus: Bus::new(index, peers, inbox),
                config: config.clone(),
                shared: shared[index].clone(),
                everyone: everyone.clone(),
                topic_board: topic_board.clone(),
                shutdown: shutdown.clone(),
                boot,
                auth: auth.clone(),
                gate: gate.clone(),
                site: site.clone(),
                cluster: cluster.clone(),
                hooks: hook_links.next(),
            };
            let worker =
                Worker::new(parts).map_err(|source| StartError::Worker { index, source })?;
            let core = cores[index];
            let handle = std::thread::Builder::new()
                .name(format!("herald-w{index}"))
                .spawn(move || {
                    if let Some(core) = core {
                        if !core_affinity::set_for_current(core) {
                            log::warn!(worker = index, core = core.id; "could not pin to core");
                        }
                    }
                    worker.run()
                })
                .map_err(|source| StartError::Worker { index, source })?;
            workers.push(handle);
        }
        Ok(Server {
            addr,
            workers,
            wakers,
            shared,
            shutdown,
            config,
            signals,
            broker: broker_stats,
            topic_board,
        })
    }

    /// Print stats until SIGINT/SIGTERM, then drain the workers and print the final report.
    /// A second signal during the drain exits at once.
    pub fn run_until_signal(mut self) -> io::Result<()> {
        const SIGNALS: Token = Token(0);
        let mut poll = Poll::new()?;
        poll.registry()
            .register(&mut self.signals, SIGNALS, Interest::READABLE)?;
        let mut events = Events::with_capacity(8);
        let interval = self.config.stats_interval;
        let mut last = (Instant::now(), self.snapshot());
        loop {
            let timeout = (!interval.is_zero()).then(|| interval.saturating_sub(last.0.elapsed()));
            match poll.poll(&mut events, timeout) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
                Ok(()) => {}
            }
            if self.signals.pending().next().is_some() {
                break;
            }
            if !interval.is_zero() && last.0.elapsed() >= interval {
                let now = (Instant::now(), self.snapshot());
                let mut line = stats::stats_line(&last.1, &now.1, now.0 - last.0);
                line.push_str(&topic_stats::busiest_field(&self.topic_board.busiest()));
                if let Some(broker) = &self.broker {
                    line.push(' ');
                    line.push_str(&broker.fields());
                }
                println!("{line}");
                last = now;
            }
        }
        println!(
            "shutting down: closing connections (drain timeout {:?})",
            self.config.drain_timeout
        );
        std::thread::spawn(move || {
            // A second signal means "now": skip the rest of the drain.
            let mut again = signal_hook::iterator::Signals::new([SIGINT, SIGTERM]).ok();
            if again.as_mut().is_some_and(|s| s.forever().next().is_some()) {
                log::warn!("second signal, exiting without draining");
                std::process::exit(1);
            }
        });
        self.stop();
        Ok(())
    }

    /// Ask the workers to drain, wait for them, and print the totals and latency percentiles.
    pub fn stop(self) {
        let started = Instant::now();
        self.shutdown.store(true, Relaxed);
        for waker in &self.wakers {
            let _ = waker.wake();
        }
        let mut totals = Vec::new();
        let mut latency = stats::new_latency_histogram();
        for (index, handle) in self.workers.into_iter().enumerate() {
            match handle.join() {
                Ok(report) => {
                    totals.push(report.counters);
                    let _ = latency.add(&report.latency);
                }
                Err(_) => log::error!(worker = index; "worker panicked"),
            }
        }
        let total = Counters::sum(&totals);
        println!(
            "drained in {} ms; {} connections left open",
            started.elapsed().as_millis(),
            total.open
        );
        println!("{}", stats::totals_line(&total));
        println!("{}", stats::latency_line(&latency));
        // Each worker's last pick (over its last interval, or since start if shorter).
        println!(
            "busiest topics:{}",
            topic_stats::busiest_field(&self.topic_board.busiest())
        );
    }

    fn snapshot(&self) -> Vec<Counters> {
        self.shared.iter().map(|s| s.read()).collect()
    }
}

/// A number that differs between server starts (clock and process id), so topic epochs from
/// an earlier run never match this one's.
fn boot_id() -> u32 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let mixed = (nanos as u64) ^ (u64::from(std::process::id()) << 32);
    ((mixed ^ (mixed >> 29)).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 32) as u32
}

/// Backend hooks: the pool of hook threads, and one link per worker (none without a hook).
fn start_hooks(config: &Config, wakers: &[Arc<Waker>]) -> Vec<hooks::HookLink> {
    let hooks = hooks::HookConfig {
        urls: [
            config.connect_hook.clone(),
            config.subscribe_hook.clone(),
            config.publish_hook.clone(),
        ],
        threads: config.hook_threads,
        timeout: config.hook_timeout,
        max_inflight: config.hook_max_inflight,
        cache: config.hook_cache,
    };
    if !hooks.is_on() {
        return Vec::new();
    }
    for (kind, url) in hooks::HookKind::ALL.iter().zip(&hooks.urls) {
        if let Some(url) = url {
            println!("hooks: {} → {url}", kind.label());
        }
    }
    println!(
        "hooks: {} threads, timeout {:?}, at most {} in flight, allow cache {:?}",
        hooks.threads, hooks.timeout, hooks.max_inflight, hooks.cache
    );
    hooks::start(&hooks, wakers.to_vec())
}

/// The sending side of every worker's inbox (for a worker, or for the cluster bridge).
fn peer_links(links: &[(Sender<BusMsg>, Arc<Waker>)]) -> Vec<PeerLink> {
    links
        .iter()
        .map(|(tx, waker)| PeerLink {
            inbox: tx.clone(),
            waker: waker.clone(),
        })
        .collect()
}
