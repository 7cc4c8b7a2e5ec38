//! The run second by second: what the progress line saw each second, kept for the JSON
//! report's `series` and the HTML report's plots over time.

/// One second of the run as the progress line saw it: an element of the JSON report's
/// `series` (and what the HTML report plots over time).
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Seconds since the loadtest began (the measured window starts at `window_start_s`).
    pub t_s: f64,
    /// `connecting`, `warmup`, `measuring`, `draining` (or `closing` in connect mode).
    pub phase: &'static str,
    /// Open connections.
    pub open: u64,
    /// Messages sent this second.
    pub sent: u64,
    /// Messages received this second (deliveries, or echoes).
    pub received: u64,
    /// Measured messages received again, this second.
    pub duplicates: u64,
    /// Measured messages received after a later one, this second.
    pub out_of_order: u64,
    /// Errors this second.
    pub errors: u64,
    /// Percentiles of this second's latencies, µs (delivery, or connect in connect mode);
    /// `None` when nothing was timed.
    pub p50_us: Option<f64>,
    pub p99_us: Option<f64>,
    pub max_us: Option<f64>,
    /// CPU the server used this second, ns (`--server-pid`).
    pub server_cpu_ns: Option<u64>,
}

/// Every second of the run and where the measured window began on the same clock.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Series {
    pub samples: Vec<Sample>,
    /// Seconds from the start of the loadtest to the start of the measured window (`None`:
    /// traffic never started).
    pub window_start_s: Option<f64>,
}
