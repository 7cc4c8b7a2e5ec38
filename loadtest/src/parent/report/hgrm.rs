//! `--hgrm FILE`: the full latency distribution in HdrHistogram's `.hgrm` text format, for
//! plotting tools.

use std::fmt::Write as _;

use hdrhistogram::Histogram;

/// The full percentile distribution in HdrHistogram's `.hgrm` text format (values in µs).
pub fn hgrm(h: &Histogram<u64>) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{:>12} {:>14} {:>10} {:>14}\n",
        "Value", "Percentile", "TotalCount", "1/(1-Percentile)"
    );
    let scale = 1000.0;
    let mut total = 0u64;
    if !h.is_empty() {
        for v in h.iter_quantiles(5) {
            total += v.count_since_last_iteration();
            let value = v.value_iterated_to() as f64 / scale;
            let q = v.quantile_iterated_to();
            if q < 1.0 {
                let _ = writeln!(
                    s,
                    "{value:12.3} {q:2.12} {total:10} {:14.2}",
                    1.0 / (1.0 - q)
                );
            } else {
                let _ = writeln!(s, "{value:12.3} {q:2.12} {total:10}");
            }
        }
    }
    let _ = writeln!(
        s,
        "#[Mean    = {:12.3}, StdDeviation   = {:12.3}]",
        h.mean() / scale,
        h.stdev() / scale
    );
    let _ = writeln!(
        s,
        "#[Max     = {:12.3}, Total count    = {:12}]",
        h.max() as f64 / scale,
        h.len()
    );
    let _ = writeln!(
        s,
        "#[Buckets = {:12}, SubBuckets     = {:12}]",
        h.buckets(),
        sub_buckets(h.sigfig())
    );
    s
}

/// Sub-buckets per bucket for a precision, as HdrHistogram computes it.
fn sub_buckets(sigfig: u8) -> u64 {
    let largest = 2 * 10u64.pow(sigfig as u32);
    largest.next_power_of_two()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hgrm_format() {
        let mut h = crate::stats::new_histogram();
        for v in 1..=1000u64 {
            h.saturating_record(v * 1000);
        }
        let out = hgrm(&h);
        let mut lines = out.lines();
        assert!(lines
            .next()
            .is_some_and(|l| l.contains("Value") && l.contains("1/(1-Percentile)")));
        let first = out.lines().nth(2).expect("data line");
        let cols: Vec<&str> = first.split_whitespace().collect();
        assert_eq!(cols.len(), 4);
        assert_eq!(cols[0], "1.000");
        assert!(out.contains("SubBuckets     =         2048"));
        assert!(out.contains("Total count    =         1000"));
        let last_data = out
            .lines()
            .rfind(|l| !l.starts_with('#') && !l.is_empty())
            .expect("last");
        assert!(last_data.contains("1.000000000000"));
    }
}
