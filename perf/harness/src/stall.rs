//! Stalls per viewer and per phase, from the sinks' records.
//!
//! The sink runs a [`StallDetector`] per viewer (one listen socket each), which counts every gap
//! between two arrivals longer than the threshold. Only the harness knows when a viewer's
//! publisher was sending, so it closes each viewer's measurement window here: silence from the
//! window's start to the first packet, and from the last packet to the window's end, counts like
//! a gap between packets, and a viewer that got nothing stalled for the whole window. The
//! phase's stall rate is stalls per viewer-minute of window.

pub use popmesh_perf::stall::{Stall, StallDetector, StallRecord};

use crate::report::{StallEvent, StallTimeline};

/// The measurement window of one viewer, in the sink's CLOCK_MONOTONIC ns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// When its publisher started sending (plus nothing: the path is part of the experience).
    pub start_ns: u64,
    /// When its publisher stopped sending.
    pub end_ns: u64,
}

/// A viewer's stalls within its window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ViewerStalls {
    /// Stalls, window edges included.
    pub count: u64,
    /// Their total ns.
    pub stalled_ns: u64,
    /// Events not kept by the sink.
    pub events_dropped: u64,
    /// The kept events, in time order.
    pub events: Vec<Stall>,
    /// Window length in ns.
    pub window_ns: u64,
}

/// Closes a viewer's record over its window. Gaps the sink recorded outside the window (before
/// the publisher started, after it stopped) are dropped; a gap that straddles an edge is cut to it.
pub fn close_window(record: &StallRecord, window: Window) -> ViewerStalls {
    let threshold = record.threshold_ns;
    let window_ns = window.end_ns.saturating_sub(window.start_ns);
    let mut events = Vec::new();
    let mut count = 0u64;
    let mut stalled_ns = 0u64;
    let mut push = |events: &mut Vec<Stall>, start_ns: u64, end_ns: u64| {
        let start_ns = start_ns.max(window.start_ns);
        let end_ns = end_ns.min(window.end_ns);
        let duration_ns = end_ns.saturating_sub(start_ns);
        if duration_ns > threshold {
            count += 1;
            stalled_ns += duration_ns;
            events.push(Stall {
                start_ns,
                duration_ns,
            });
        }
    };
    // Packets inside the window only decide the edges.
    match (record.first_arrival_ns, record.last_arrival_ns) {
        (Some(first), Some(last)) if first <= window.end_ns && last >= window.start_ns => {
            // Leading silence: from the window start to the first packet in it. When the first
            // arrival predates the window, a recorded gap covering the start handles it.
            if first > window.start_ns {
                push(&mut events, window.start_ns, first);
            }
            for gap in &record.events {
                if gap.end_ns() > window.start_ns && gap.start_ns < window.end_ns {
                    push(&mut events, gap.start_ns, gap.end_ns());
                }
            }
            if last < window.end_ns {
                push(&mut events, last, window.end_ns);
            }
        }
        _ => push(&mut events, window.start_ns, window.end_ns),
    }
    // Gaps the sink counted but could not list (past its cap of 10,000 per viewer) are added as
    // counts without events; they are taken to lie inside the window.
    let dropped = record.events_dropped;
    if dropped > 0 {
        count += dropped;
        let listed: u64 = record.events.iter().map(|s| s.duration_ns).sum();
        stalled_ns += record.stalled_ns.saturating_sub(listed);
    }
    ViewerStalls {
        count,
        stalled_ns,
        events_dropped: dropped,
        events,
        window_ns,
    }
}

/// Stalls of every viewer of a phase: `(record, window)` per viewer, in viewer order.
/// Event times in the timeline are seconds since `run_start_ns`.
pub fn timeline(
    phase: &str,
    viewers: &[(StallRecord, Window)],
    threshold_ms: f64,
    run_start_ns: u64,
    max_events: usize,
) -> StallTimeline {
    let mut t = StallTimeline {
        phase: phase.to_string(),
        viewers: u32::try_from(viewers.len()).unwrap_or(u32::MAX),
        threshold_ms,
        viewer_minutes: 0.0,
        stalls: 0,
        stalled_s: 0.0,
        events_dropped: 0,
        events: Vec::new(),
    };
    for (i, (record, window)) in viewers.iter().enumerate() {
        let v = close_window(record, *window);
        t.viewer_minutes += v.window_ns as f64 / 60e9;
        t.stalls += v.count;
        t.stalled_s += v.stalled_ns as f64 / 1e9;
        t.events_dropped += v.events_dropped;
        for e in v.events {
            if t.events.len() >= max_events {
                t.events_dropped += 1;
                continue;
            }
            t.events.push(StallEvent {
                viewer: u32::try_from(i).unwrap_or(u32::MAX),
                start_s: e.start_ns.saturating_sub(run_start_ns) as f64 / 1e9,
                duration_s: e.duration_ns as f64 / 1e9,
            });
        }
    }
    t
}

impl StallTimeline {
    /// Stalls per viewer-minute; 0 when no time was observed.
    pub fn rate_per_viewer_min(&self) -> f64 {
        if self.viewer_minutes > 0.0 {
            self.stalls as f64 / self.viewer_minutes
        } else {
            0.0
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    fn detect(arrivals_ms: &[u64], threshold_ms: u64) -> StallRecord {
        let mut d = StallDetector::new(threshold_ms * MS);
        for a in arrivals_ms {
            d.observe(a * MS);
        }
        d.record()
    }

    #[test]
    fn edges_count_and_gaps_outside_the_window_do_not() {
        // Publisher sends 1000..2000 ms; the viewer hears 1300..1700 plus stray packets at 100
        // and 2500 (another phase's traffic on a reused port, say).
        let mut arrivals = vec![100];
        arrivals.extend((1300..=1700).step_by(20));
        arrivals.push(2500);
        let record = detect(&arrivals, 200);
        let v = close_window(
            &record,
            Window {
                start_ns: 1000 * MS,
                end_ns: 2000 * MS,
            },
        );
        // 100 -> 1300 is cut to 1000 -> 1300, 1700 -> 2500 to 1700 -> 2000.
        assert_eq!(v.count, 2);
        assert_eq!(v.stalled_ns, 600 * MS);
        assert_eq!(v.events[0].start_ns, 1000 * MS);
        assert_eq!(v.events[1].duration_ns, 300 * MS);
    }

    #[test]
    fn a_silent_viewer_stalls_for_the_whole_window() {
        let record = detect(&[], 200);
        let v = close_window(
            &record,
            Window {
                start_ns: 0,
                end_ns: 60_000 * MS,
            },
        );
        assert_eq!((v.count, v.stalled_ns), (1, 60_000 * MS));
        let t = timeline(
            "lane",
            &[(
                record,
                Window {
                    start_ns: 0,
                    end_ns: 60_000 * MS,
                },
            )],
            200.0,
            0,
            100,
        );
        assert!((t.rate_per_viewer_min() - 1.0).abs() < 1e-9);
        assert!((t.stalled_s - 60.0).abs() < 1e-9);
    }
}
