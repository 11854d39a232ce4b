//! The traffic sink parses whatever arrives on its sockets: feed it arbitrary datagrams split
//! from the input, with arbitrary arrival times, and summarise; nothing may panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use popmesh_perf::stats::ListenerStats;

fuzz_target!(|data: &[u8]| {
    let mut stats = ListenerStats::new();
    let mut now: u64 = 0;
    // Each record: 1 length byte, 2 bytes of time step, then that many datagram bytes.
    let mut rest = data;
    while let [len, t0, t1, tail @ ..] = rest {
        let len = usize::from(*len).min(tail.len());
        now = now.wrapping_add(u64::from(u16::from_le_bytes([*t0, *t1])) * 1000);
        let _ = stats.handle_datagram(now, &tail[..len]);
        rest = &tail[len..];
    }
    let _ = stats.summary();
});
