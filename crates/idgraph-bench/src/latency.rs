//! Latency recording: an HDR histogram in microseconds, and the summary printed from it.

use std::time::Duration;

use anyhow::Context;
use hdrhistogram::Histogram;
use serde::Serialize;

/// Anything slower than this is recorded as this; a request that slow has failed anyway.
const HIGHEST_MICROS: u64 = 10 * 60 * 1_000_000;

#[derive(Debug, Clone)]
pub(crate) struct Latencies(Histogram<u64>);

impl Latencies {
    pub(crate) fn new() -> anyhow::Result<Self> {
        Histogram::new_with_bounds(1, HIGHEST_MICROS, 3)
            .map(Self)
            .context("cannot create a latency histogram")
    }

    pub(crate) fn record(&mut self, elapsed: Duration) {
        let micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        self.0.saturating_record(micros.max(1));
    }

    pub(crate) fn add(&mut self, other: &Latencies) -> anyhow::Result<()> {
        self.0
            .add(&other.0)
            .context("cannot merge latency histograms")
    }

    pub(crate) fn summary(&self) -> LatencySummary {
        let ms = |micros: u64| micros as f64 / 1000.0;
        LatencySummary {
            count: self.0.len(),
            mean_ms: self.0.mean() / 1000.0,
            p50_ms: ms(self.0.value_at_quantile(0.50)),
            p90_ms: ms(self.0.value_at_quantile(0.90)),
            p99_ms: ms(self.0.value_at_quantile(0.99)),
            max_ms: ms(self.0.max()),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub(crate) struct LatencySummary {
    pub(crate) count: u64,
    pub(crate) mean_ms: f64,
    pub(crate) p50_ms: f64,
    pub(crate) p90_ms: f64,
    pub(crate) p99_ms: f64,
    pub(crate) max_ms: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_come_out_in_milliseconds() {
        let mut a = Latencies::new().unwrap();
        let mut b = Latencies::new().unwrap();
        for micros in 1..=500 {
            a.record(Duration::from_micros(micros * 100));
        }
        for micros in 501..=1000 {
            b.record(Duration::from_micros(micros * 100));
        }
        a.add(&b).unwrap();
        let summary = a.summary();
        assert_eq!(summary.count, 1000);
        assert!((summary.p50_ms - 50.0).abs() < 0.1, "{summary:?}");
        assert!((summary.p99_ms - 99.0).abs() < 0.1, "{summary:?}");
        assert!((summary.max_ms - 100.0).abs() < 0.1, "{summary:?}");
    }

    #[test]
    fn absurd_values_saturate() {
        let mut latencies = Latencies::new().unwrap();
        latencies.record(Duration::from_secs(3600));
        latencies.record(Duration::ZERO);
        assert_eq!(latencies.summary().count, 2);
    }
}
