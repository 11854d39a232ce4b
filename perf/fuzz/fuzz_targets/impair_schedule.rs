//! The impairment relay's schedule comes from a command line or a file somebody wrote: any
//! bytes must parse to a schedule or an error, never a panic; an accepted schedule is sorted and
//! disjoint, and its written form reads back equal.
#![no_main]

use libfuzzer_sys::fuzz_target;
use popmesh_perf::impair::Schedule;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(schedule) = Schedule::parse(text) {
        assert!(schedule
            .windows
            .windows(2)
            .all(|w| w[0].to_s <= w[1].from_s));
        let written: Vec<String> = schedule.windows.iter().map(ToString::to_string).collect();
        let again = Schedule::parse(&written.join("\n")).expect("a written schedule parses");
        assert_eq!(again, schedule, "round trip changed the schedule");
    }
});
