//! Reading the sinks' latency interval logs (`.hlog`, HdrHistogram V2, one interval per second).
//!
//! The sink writes them (`popmesh-rtp sink --hlog`); the harness keeps them in the output
//! directory for HdrHistogram tooling and reads them back for the report's CDFs and percentiles.

use std::path::Path;

use anyhow::{anyhow, Context};
use base64::Engine as _;
use hdrhistogram::serialization::interval_log::{IntervalLogIterator, LogEntry};
use hdrhistogram::serialization::Deserializer;
use hdrhistogram::Histogram;

/// An interval log read back: every interval, and all of them merged.
#[derive(Debug, Clone)]
pub struct LatencyLog {
    /// `(start_s since the log's start, histogram)` per interval.
    pub intervals: Vec<(f64, Histogram<u64>)>,
    /// All intervals added up (values in ns).
    pub total: Histogram<u64>,
}

/// Percentiles in µs of a histogram of ns values.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Percentiles {
    /// Samples.
    pub samples: u64,
    /// P50.
    pub p50_us: f64,
    /// P99.
    pub p99_us: f64,
    /// P99.9.
    pub p999_us: f64,
    /// Largest.
    pub max_us: f64,
}

/// Percentiles of `h` (ns values), `None` when it is empty.
pub fn percentiles(h: &Histogram<u64>) -> Option<Percentiles> {
    if h.is_empty() {
        return None;
    }
    let us = |ns: u64| ns as f64 / 1e3;
    Some(Percentiles {
        samples: h.len(),
        p50_us: us(h.value_at_quantile(0.5)),
        p99_us: us(h.value_at_quantile(0.99)),
        p999_us: us(h.value_at_quantile(0.999)),
        max_us: us(h.max()),
    })
}

/// CDF points `(latency_us, fraction at or below)` of `h` (ns values): one per distinct
/// recorded bucket, thinned to at most `max_points`, the last point always kept.
pub fn cdf_points(h: &Histogram<u64>, max_points: usize) -> Vec<[f64; 2]> {
    let total = h.len();
    if total == 0 {
        return Vec::new();
    }
    let mut points = Vec::new();
    let mut seen = 0u64;
    for v in h.iter_recorded() {
        seen += v.count_since_last_iteration();
        points.push([
            h.highest_equivalent(v.value_iterated_to()) as f64 / 1e3,
            seen as f64 / total as f64,
        ]);
    }
    if points.len() > max_points && max_points >= 2 {
        let step = points.len() as f64 / (max_points - 1) as f64;
        let last = points.last().copied();
        let mut thin: Vec<[f64; 2]> = (0..max_points - 1)
            .filter_map(|i| points.get((i as f64 * step) as usize).copied())
            .collect();
        thin.extend(last);
        points = thin;
    }
    points
}

impl LatencyLog {
    /// Reads an interval log written by `popmesh-rtp sink --hlog`.
    ///
    /// # Errors
    /// When the file cannot be read, does not parse as an interval log, or holds a histogram
    /// that does not decode.
    pub fn read(path: &Path) -> anyhow::Result<Self> {
        let bytes = std::fs::read(path).with_context(|| format!("read {}", path.display()))?;
        Self::parse(&bytes)
            .with_context(|| format!("{} is not a latency interval log", path.display()))
    }

    /// Parses the bytes of an interval log.
    ///
    /// # Errors
    /// As [`LatencyLog::read`].
    pub fn parse(bytes: &[u8]) -> anyhow::Result<Self> {
        let mut total = popmesh_perf::stats::new_latency_histogram();
        let mut intervals = Vec::new();
        let mut deserializer = Deserializer::new();
        for entry in IntervalLogIterator::new(bytes) {
            let entry = entry.map_err(|e| anyhow!("parse error: {e:?}"))?;
            let LogEntry::Interval(interval) = entry else {
                continue;
            };
            let raw = base64::engine::general_purpose::STANDARD
                .decode(interval.encoded_histogram())
                .context("histogram is not base64")?;
            let h: Histogram<u64> = deserializer
                .deserialize(&mut raw.as_slice())
                .map_err(|e| anyhow!("histogram does not decode: {e:?}"))?;
            total
                .add(&h)
                .map_err(|e| anyhow!("histogram out of range: {e:?}"))?;
            intervals.push((interval.start_timestamp().as_secs_f64(), h));
        }
        Ok(Self { intervals, total })
    }

    /// Per-interval P99 in µs as `(start_s + offset_s, p99)` points, skipping empty intervals.
    pub fn p99_series(&self, offset_s: f64) -> Vec<[f64; 2]> {
        self.intervals
            .iter()
            .filter(|(_, h)| !h.is_empty())
            .map(|(t, h)| [t + offset_s, h.value_at_quantile(0.99) as f64 / 1e3])
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hdrhistogram::serialization::interval_log::IntervalLogWriterBuilder;
    use hdrhistogram::serialization::V2Serializer;
    use std::time::Duration;

    #[test]
    fn a_written_log_reads_back_with_its_distribution() {
        let mut buf = Vec::new();
        let mut ser = V2Serializer::new();
        {
            let mut w = IntervalLogWriterBuilder::new()
                .add_comment("test")
                .begin_log_with(&mut buf, &mut ser)
                .expect("in-memory writer");
            for second in 0..3u64 {
                let mut h = popmesh_perf::stats::new_latency_histogram();
                for i in 1..=1000u64 {
                    h.record(i * 1_000 * (second + 1)).expect("in range");
                }
                w.write_histogram(
                    &h,
                    Duration::from_secs(second),
                    Duration::from_secs(1),
                    None,
                )
                .expect("serialize");
            }
        }
        let log = LatencyLog::parse(&buf).expect("parses");
        assert_eq!(log.intervals.len(), 3);
        assert_eq!(log.total.len(), 3000);
        let p = percentiles(&log.total).expect("samples");
        assert!((p.max_us - 3000.0).abs() / 3000.0 < 0.002, "{p:?}");
        let series = log.p99_series(10.0);
        assert_eq!(series.len(), 3);
        assert!((series[2][0] - 12.0).abs() < 1e-9);
        let cdf = cdf_points(&log.total, 50);
        assert!(cdf.len() <= 50);
        assert_eq!(cdf.last().map(|p| p[1]), Some(1.0));
        assert!(cdf
            .windows(2)
            .all(|w| w[0][0] <= w[1][0] && w[0][1] <= w[1][1]));
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(LatencyLog::parse(b"0.0,1.0,1.0,notbase64!!\n").is_err());
        let empty = LatencyLog::parse(b"#[comment]\n").expect("no intervals is fine");
        assert!(empty.intervals.is_empty());
        assert!(percentiles(&empty.total).is_none());
    }
}
