//! Abuse limits: how many WebSockets may be open (in total and per client address), and how
//! fast one connection may send. The counts are shared by all workers but touched only when a
//! WebSocket opens or ends (never per message); the rate bucket lives on its connection.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::policy::auth::Grants;
use crate::proto::http::HttpError;

/// Open-WebSocket counts against `--max-conns` and `--max-conns-per-ip`.
#[derive(Debug, Default)]
pub struct Gate {
    max_total: usize,
    max_per_ip: usize,
    total: AtomicUsize,
    per_ip: Mutex<HashMap<IpAddr, usize>>,
}

impl Gate {
    pub fn new(max_total: usize, max_per_ip: usize) -> Arc<Gate> {
        Arc::new(Gate {
            max_total,
            max_per_ip,
            ..Gate::default()
        })
    }

    /// Whether any limit is on (without one, nothing is counted at all).
    pub fn is_on(&self) -> bool {
        self.max_total > 0 || self.max_per_ip > 0
    }

    /// Take a place for a new WebSocket from `ip`, or say which limit is full. A place taken
    /// must be given back with [`Gate::release`] when the WebSocket ends.
    pub fn acquire(&self, ip: IpAddr) -> Result<(), HttpError> {
        let total = self.total.fetch_add(1, Ordering::Relaxed);
        if self.max_total > 0 && total >= self.max_total {
            self.total.fetch_sub(1, Ordering::Relaxed);
            return Err(HttpError::TooManyConns);
        }
        if self.max_per_ip > 0 {
            let mut per_ip = self.per_ip.lock().unwrap_or_else(|e| e.into_inner());
            let n = per_ip.entry(ip).or_insert(0);
            if *n >= self.max_per_ip {
                self.total.fetch_sub(1, Ordering::Relaxed);
                return Err(HttpError::TooManyConnsPerIp);
            }
            *n += 1;
        }
        Ok(())
    }

    /// Give back the place of a WebSocket from `ip` that ended.
    pub fn release(&self, ip: IpAddr) {
        self.total.fetch_sub(1, Ordering::Relaxed);
        if self.max_per_ip > 0 {
            let mut per_ip = self.per_ip.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(n) = per_ip.get_mut(&ip) {
                *n -= 1;
                if *n == 0 {
                    per_ip.remove(&ip);
                }
            }
        }
    }
}

/// A token bucket per connection: `rate` per second, bursts of one second's worth.
#[derive(Debug, Clone, Copy)]
pub struct Bucket {
    rate: f64,
    tokens: f64,
}

impl Bucket {
    pub fn new(rate: f64) -> Self {
        Bucket { rate, tokens: rate }
    }

    /// Refill for `elapsed` seconds, then take `cost`. False: over the rate.
    fn take(&mut self, elapsed: f64, cost: f64) -> bool {
        self.tokens = (self.tokens + elapsed * self.rate).min(self.rate);
        if self.tokens < cost {
            return false;
        }
        self.tokens -= cost;
        true
    }
}

/// A connection's policy state: what its token grants, its place at the gate, its rate
/// buckets. Boxed on the connection only when some of it is in use, so a server without
/// auth or limits pays one null pointer per connection.
#[derive(Debug)]
pub struct Guard {
    /// `None`: anonymous mode, everything allowed.
    pub grants: Option<Arc<Grants>>,
    /// The client address counted at the gate (given back when the WebSocket ends).
    pub counted: Option<IpAddr>,
    pub messages: Option<Bucket>,
    pub bytes: Option<Bucket>,
    pub last_refill: Instant,
}

impl Guard {
    /// Account one client message of `len` payload bytes. False: over a rate limit.
    pub fn allow_message(&mut self, len: usize, now: Instant) -> bool {
        let elapsed = now
            .saturating_duration_since(self.last_refill)
            .as_secs_f64();
        self.last_refill = now;
        let messages_ok = self.messages.as_mut().is_none_or(|b| b.take(elapsed, 1.0));
        let bytes_ok = self
            .bytes
            .as_mut()
            .is_none_or(|b| b.take(elapsed, len as f64));
        messages_ok && bytes_ok
    }

    pub fn may_publish(&self, topic: &str) -> bool {
        self.grants.as_ref().is_none_or(|g| g.may_publish(topic))
    }

    pub fn may_subscribe(&self, topic: &str) -> bool {
        self.grants.as_ref().is_none_or(|g| g.may_subscribe(topic))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    #[test]
    fn the_gate_counts_totals_and_addresses() {
        let gate = Gate::new(3, 2);
        let (a, b) = (
            IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)),
        );
        assert!(gate.acquire(a).is_ok());
        assert!(gate.acquire(a).is_ok());
        assert_eq!(gate.acquire(a), Err(HttpError::TooManyConnsPerIp));
        assert!(gate.acquire(b).is_ok());
        assert_eq!(gate.acquire(b), Err(HttpError::TooManyConns));
        gate.release(a);
        assert!(gate.acquire(b).is_ok());
        gate.release(b);
        gate.release(b);
        gate.release(a);
        assert_eq!(gate.total.load(Ordering::Relaxed), 0);
        assert!(gate.per_ip.lock().unwrap().is_empty());
    }

    #[test]
    fn buckets_allow_a_burst_then_the_rate() {
        let mut b = Bucket::new(10.0);
        assert!((0..10).all(|_| b.take(0.0, 1.0)));
        assert!(!b.take(0.0, 1.0));
        assert!(b.take(0.1, 1.0)); // 0.1 s refills one
        assert!(!b.take(0.0, 1.0));
        assert!(b.take(100.0, 10.0)); // never more than one second's worth
        assert!(!b.take(0.0, 1.0));
    }
}
