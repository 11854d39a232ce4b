//! HdrHistogram V2 interval logs (`.hlog`) of latencies in ns, one interval per second, written
//! as each second closes. `popmesh-rtp sink --hlog` and `popmesh-rooms users --hlog` write them;
//! the capacity harness reads them back (`popmesh_capacity::hlog`).

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use hdrhistogram::serialization::interval_log::IntervalLogWriterBuilder;
use hdrhistogram::serialization::V2Serializer;
use hdrhistogram::Histogram;

use crate::stats::new_latency_histogram;

/// A latency interval log (HdrHistogram V2, values in ns): one histogram per second of the run, appended to the file
/// as each second closes so memory stays at one histogram whatever the duration.
pub struct IntervalLog {
    file: std::io::BufWriter<std::fs::File>,
    path: PathBuf,
    serializer: V2Serializer,
    interval: Histogram<u64>,
    /// Start of the open interval, ns since the sink started.
    interval_start_ns: u64,
}

impl IntervalLog {
    /// Creates the file and writes the log's header with `comment`.
    ///
    /// # Errors
    /// When the file cannot be created or written.
    pub fn create(path: &Path, comment: &str) -> anyhow::Result<Self> {
        let file =
            std::fs::File::create(path).with_context(|| format!("create {}", path.display()))?;
        let mut log = Self {
            file: std::io::BufWriter::new(file),
            path: path.to_path_buf(),
            serializer: V2Serializer::new(),
            interval: new_latency_histogram(),
            interval_start_ns: 0,
        };
        let now = std::time::SystemTime::now();
        IntervalLogWriterBuilder::new()
            .add_comment(comment)
            .with_start_time(now)
            .with_base_time(now)
            .with_max_value_divisor(1e6)
            .begin_log_with(&mut log.file, &mut log.serializer)
            .with_context(|| format!("write {}", log.path.display()))?;
        Ok(log)
    }

    /// Records one latency (ns) in the open interval.
    pub fn record(&mut self, latency_ns: u64) {
        self.interval.saturating_record(latency_ns.max(1));
    }

    fn write_interval(&mut self, end_ns: u64) -> anyhow::Result<()> {
        let start = Duration::from_nanos(self.interval_start_ns);
        let length = Duration::from_nanos(end_ns.saturating_sub(self.interval_start_ns));
        // No headers: they were written once by `create`.
        let mut writer = IntervalLogWriterBuilder::new()
            .begin_log_with(&mut self.file, &mut self.serializer)
            .with_context(|| format!("write {}", self.path.display()))?;
        writer
            .write_histogram(&self.interval, start, length, None)
            .map_err(|e| anyhow::anyhow!("write {}: {e}", self.path.display()))?;
        self.interval.reset();
        self.interval_start_ns = end_ns;
        Ok(())
    }

    /// Closes the open interval once it is a second old (`elapsed_ns` since the log started).
    ///
    /// # Errors
    /// When the file cannot be written.
    pub fn roll(&mut self, elapsed_ns: u64) -> anyhow::Result<()> {
        if elapsed_ns.saturating_sub(self.interval_start_ns) >= 1_000_000_000 {
            self.write_interval(elapsed_ns)?;
        }
        Ok(())
    }

    /// Writes the open interval and flushes the file.
    ///
    /// # Errors
    /// When the file cannot be written.
    pub fn close(&mut self, elapsed_ns: u64) -> anyhow::Result<()> {
        if !self.interval.is_empty() || elapsed_ns > self.interval_start_ns {
            self.write_interval(elapsed_ns)?;
        }
        self.file
            .flush()
            .with_context(|| format!("write {}", self.path.display()))
    }
}

impl std::fmt::Debug for IntervalLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IntervalLog")
            .field("path", &self.path)
            .field("interval_start_ns", &self.interval_start_ns)
            .finish_non_exhaustive()
    }
}
