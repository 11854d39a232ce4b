//! CPU use per core (`/proc/stat`) and per thread (`/proc/<pid>/task/*/schedstat`).
//!
//! The parsers take the files' text and are tested on fixtures; [`CpuSampler`] is the thin
//! driver that reads the files once per interval on its own thread and keeps the series.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Jiffies of one CPU line of `/proc/stat`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CoreTimes {
    /// user + nice + system + irq + softirq + steal.
    pub busy: u64,
    /// idle + iowait.
    pub idle: u64,
}

/// Parses the `cpuN` lines of `/proc/stat` (the aggregate `cpu` line is skipped).
/// Malformed lines are skipped, never a panic.
pub fn parse_proc_stat(text: &str) -> BTreeMap<usize, CoreTimes> {
    let mut cores = BTreeMap::new();
    for line in text.lines() {
        let mut fields = line.split_ascii_whitespace();
        let Some(label) = fields.next() else { continue };
        let Some(id) = label
            .strip_prefix("cpu")
            .and_then(|n| n.parse::<usize>().ok())
        else {
            continue;
        };
        let v: Vec<u64> = fields.map_while(|f| f.parse().ok()).collect();
        if v.len() < 4 {
            continue;
        }
        let at = |i: usize| v.get(i).copied().unwrap_or(0);
        // user nice system idle iowait irq softirq steal (guest is already in user).
        let busy = at(0) + at(1) + at(2) + at(5) + at(6) + at(7);
        let idle = at(3) + at(4);
        cores.insert(id, CoreTimes { busy, idle });
    }
    cores
}

/// Busy percent of each core between two samples (cores present in both).
pub fn core_busy_percent(
    before: &BTreeMap<usize, CoreTimes>,
    after: &BTreeMap<usize, CoreTimes>,
) -> BTreeMap<usize, f64> {
    after
        .iter()
        .filter_map(|(id, a)| {
            let b = before.get(id)?;
            let busy = a.busy.saturating_sub(b.busy) as f64;
            let idle = a.idle.saturating_sub(b.idle) as f64;
            let total = busy + idle;
            (total > 0.0).then(|| (*id, 100.0 * busy / total))
        })
        .collect()
}

/// On-CPU ns of a thread: the first field of its `schedstat`.
pub fn parse_schedstat(text: &str) -> Option<u64> {
    text.split_ascii_whitespace().next()?.parse().ok()
}

/// On-CPU ns of every thread of `pid`, by thread name (`comm`); threads of the same name add up.
/// Threads that exit while being read are skipped.
pub fn thread_cpu_ns(pid: u32) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return out;
    };
    for entry in dir.flatten() {
        let path = entry.path();
        let (Ok(stat), Ok(comm)) = (
            std::fs::read_to_string(path.join("schedstat")),
            std::fs::read_to_string(path.join("comm")),
        ) else {
            continue;
        };
        if let Some(ns) = parse_schedstat(&stat) {
            *out.entry(comm.trim().to_string()).or_insert(0) += ns;
        }
    }
    out
}

/// Resident memory of a process in MiB (`VmRSS` of `/proc/<pid>/status`).
pub fn rss_mib(pid: u32) -> Option<f64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    parse_vm_rss_kib(&text).map(|kib| kib as f64 / 1024.0)
}

/// `VmRSS` in KiB from the text of `/proc/<pid>/status`.
pub fn parse_vm_rss_kib(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_ascii_whitespace().next())
        .and_then(|n| n.parse().ok())
}

fn read_proc_stat() -> BTreeMap<usize, CoreTimes> {
    std::fs::read_to_string(Path::new("/proc/stat"))
        .map(|t| parse_proc_stat(&t))
        .unwrap_or_default()
}

/// What the sampler collected: `(t_s, percent)` per core and per watched thread name.
#[derive(Debug, Clone, Default)]
pub struct CpuSeries {
    /// Busy percent of each core.
    pub cores: BTreeMap<usize, Vec<[f64; 2]>>,
    /// CPU percent of each watched thread (100 = one core).
    pub threads: BTreeMap<String, Vec<[f64; 2]>>,
}

#[derive(Debug, Default)]
struct Shared {
    series: CpuSeries,
    /// Latest busy percent per core, for the progress line.
    latest: BTreeMap<usize, f64>,
    watched: Option<u32>,
}

/// Samples every core (and the threads of one watched process) once per interval, on a
/// thread of its own, until dropped or [`CpuSampler::stop`]ped.
#[derive(Debug)]
pub struct CpuSampler {
    shared: Arc<Mutex<Shared>>,
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

impl CpuSampler {
    /// Starts sampling; `t` in the series is seconds since `origin`.
    pub fn start(origin: Instant, interval: Duration) -> Self {
        let shared = Arc::new(Mutex::new(Shared::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let (s, st) = (Arc::clone(&shared), Arc::clone(&stop));
        let handle = std::thread::Builder::new()
            .name("cpu-sampler".into())
            .spawn(move || {
                let mut prev = read_proc_stat();
                let mut prev_threads: Option<(u32, BTreeMap<String, u64>, Instant)> = None;
                let mut next = Instant::now() + interval;
                while !st.load(Ordering::Relaxed) {
                    let now = Instant::now();
                    if now < next {
                        std::thread::sleep((next - now).min(Duration::from_millis(50)));
                        continue;
                    }
                    next += interval;
                    let t = origin.elapsed().as_secs_f64();
                    let cur = read_proc_stat();
                    let busy = core_busy_percent(&prev, &cur);
                    prev = cur;
                    let watched = s.lock().map(|g| g.watched).unwrap_or(None);
                    let threads = watched.map(|pid| (pid, thread_cpu_ns(pid), Instant::now()));
                    let mut thread_points = Vec::new();
                    if let (Some((pid, now_t, at)), Some((ppid, before, bat))) =
                        (&threads, &prev_threads)
                    {
                        if pid == ppid {
                            let wall_ns = at.duration_since(*bat).as_nanos() as f64;
                            for (name, ns) in now_t {
                                let before_ns = before.get(name).copied().unwrap_or(0);
                                if wall_ns > 0.0 {
                                    let pct = 100.0 * ns.saturating_sub(before_ns) as f64 / wall_ns;
                                    thread_points.push((name.clone(), pct));
                                }
                            }
                        }
                    }
                    prev_threads = threads;
                    if let Ok(mut g) = s.lock() {
                        for (core, pct) in &busy {
                            g.series.cores.entry(*core).or_default().push([t, *pct]);
                        }
                        for (name, pct) in thread_points {
                            g.series.threads.entry(name).or_default().push([t, pct]);
                        }
                        g.latest = busy;
                    }
                }
            })
            .ok();
        Self {
            shared,
            stop,
            handle,
        }
    }

    /// Watches the threads of `pid` from the next sample on (`None` stops watching).
    pub fn watch(&self, pid: Option<u32>) {
        if let Ok(mut g) = self.shared.lock() {
            g.watched = pid;
        }
    }

    /// Latest busy percent per core.
    pub fn latest(&self) -> BTreeMap<usize, f64> {
        self.shared
            .lock()
            .map(|g| g.latest.clone())
            .unwrap_or_default()
    }

    /// Stops the thread and returns the series.
    pub fn stop(mut self) -> CpuSeries {
        self.halt();
        self.shared
            .lock()
            .map(|g| g.series.clone())
            .unwrap_or_default()
    }

    fn halt(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            // A panicked sampler only loses samples.
            let _ = h.join();
        }
    }
}

impl Drop for CpuSampler {
    fn drop(&mut self) {
        self.halt();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STAT_A: &str = "cpu  10 0 10 80 0 0 0 0 0 0\n\
        cpu0 5 0 5 40 0 0 0 0 0 0\n\
        cpu1 5 0 5 40 0 0 0 0 0 0\n\
        intr 12345\nctxt 1\n";
    const STAT_B: &str = "cpu  100 0 10 170 0 0 0 0 0 0\n\
        cpu0 95 0 5 40 0 0 0 0 0 0\n\
        cpu1 5 0 5 130 0 0 0 0 0 0\n";

    #[test]
    fn per_core_busy_between_samples() {
        let a = parse_proc_stat(STAT_A);
        let b = parse_proc_stat(STAT_B);
        assert_eq!(a.len(), 2);
        let busy = core_busy_percent(&a, &b);
        assert_eq!(busy.get(&0).copied(), Some(100.0));
        assert_eq!(busy.get(&1).copied(), Some(0.0));
    }

    #[test]
    fn garbage_is_skipped() {
        assert!(parse_proc_stat("cpuX 1 2 3 4\ncpu0 1 2\n\u{0}").is_empty());
        assert_eq!(parse_schedstat("123456 789 10\n"), Some(123_456));
        assert_eq!(parse_schedstat(""), None);
        assert_eq!(
            parse_vm_rss_kib("Name:\tx\nVmRSS:\t  2048 kB\n"),
            Some(2048)
        );
        assert_eq!(parse_vm_rss_kib("VmRSS: lots"), None);
    }
}
