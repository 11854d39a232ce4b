//! The stall detector and its windows: properties over arbitrary arrival times.

use popmesh_capacity::stall::{close_window, timeline, StallDetector, Window};
use proptest::prelude::*;

const MS: u64 = 1_000_000;

/// Arrival times from gaps (ms), starting at `start`.
fn arrivals(start_ms: u64, gaps_ms: &[u64]) -> Vec<u64> {
    let mut t = start_ms * MS;
    let mut out = vec![t];
    for g in gaps_ms {
        t += g * MS;
        out.push(t);
    }
    out
}

fn detect(times: &[u64], threshold_ms: u64) -> StallDetector {
    let mut d = StallDetector::new(threshold_ms * MS);
    for &t in times {
        d.observe(t);
    }
    d
}

proptest! {
    #[test]
    fn no_stall_when_every_gap_is_at_most_the_threshold(gaps in proptest::collection::vec(0u64..=200, 0..500)) {
        let times = arrivals(1_000, &gaps);
        let d = detect(&times, 200);
        prop_assert_eq!(d.count(), 0);
        let last = *times.last().unwrap_or(&0);
        // A window that starts at the first and ends within the threshold of the last packet.
        let v = close_window(&d.record(), Window { start_ns: times[0], end_ns: last + 200 * MS });
        prop_assert_eq!(v.count, 0);
        prop_assert_eq!(v.stalled_ns, 0);
    }

    #[test]
    fn stalls_are_exactly_the_gaps_above_the_threshold(gaps in proptest::collection::vec(1u64..2_000, 1..300), threshold in 50u64..1_000) {
        let times = arrivals(0, &gaps);
        let d = detect(&times, threshold);
        let above: Vec<u64> = gaps.iter().copied().filter(|&g| g > threshold).collect();
        prop_assert_eq!(d.count(), above.len() as u64);
        prop_assert_eq!(d.stalled_ns(), above.iter().sum::<u64>() * MS);
        // Each event starts at an arrival and lasts its gap.
        for (e, g) in d.events().iter().zip(&above) {
            prop_assert_eq!(e.duration_ns, g * MS);
            prop_assert!(times.contains(&e.start_ns));
        }
        // Closing over exactly the sending window adds nothing.
        let v = close_window(&d.record(), Window { start_ns: 0, end_ns: *times.last().unwrap_or(&0) });
        prop_assert_eq!(v.count, above.len() as u64);
        // The stalled time never exceeds the window.
        prop_assert!(v.stalled_ns <= v.window_ns);
    }

    #[test]
    fn silence_at_the_edges_counts_once_each(lead in 0u64..3_000, tail in 0u64..3_000, n in 2usize..50) {
        let times = arrivals(10_000, &vec![20; n]);
        let d = detect(&times, 200);
        let window = Window { start_ns: (10_000 - lead) * MS, end_ns: *times.last().unwrap_or(&0) + tail * MS };
        let v = close_window(&d.record(), window);
        let want = u64::from(lead > 200) + u64::from(tail > 200);
        prop_assert_eq!(v.count, want);
        let t = timeline("lane", &[(d.record(), window)], 200.0, 0, 100);
        prop_assert_eq!(t.stalls, want);
        let minutes = (window.end_ns - window.start_ns) as f64 / 60e9;
        prop_assert!((t.rate_per_viewer_min() - want as f64 / minutes).abs() < 1e-9);
    }
}

#[test]
fn timeline_adds_viewers_and_caps_events() {
    let stalled = detect(&arrivals(0, &[500, 500, 500]), 200);
    let smooth = detect(&arrivals(0, &[20; 75]), 200);
    let w = Window {
        start_ns: 0,
        end_ns: 1_500 * MS,
    };
    let t = timeline(
        "lane",
        &[(stalled.record(), w), (smooth.record(), w)],
        200.0,
        0,
        2,
    );
    assert_eq!(t.viewers, 2);
    assert_eq!(t.stalls, 3);
    assert_eq!(t.events.len(), 2);
    assert_eq!(t.events_dropped, 1);
    assert!((t.stalled_s - 1.5).abs() < 1e-9);
    assert!((t.viewer_minutes - 3.0 / 60.0).abs() < 1e-9);
    assert!(t.events.iter().all(|e| e.viewer == 0));
}
