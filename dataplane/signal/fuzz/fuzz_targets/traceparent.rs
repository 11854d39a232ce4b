//! `traceparent` headers from callers: parse never panics, and what parses prints back the
//! same (for version 00).
#![no_main]

use libfuzzer_sys::fuzz_target;
use popmesh_signal::trace::TraceParent;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(t) = TraceParent::parse(s) {
        assert!(t.trace_id != 0 && t.parent_id != 0);
        if s.starts_with("00-") {
            assert_eq!(t.to_string(), s);
        }
        assert_eq!(TraceParent::parse(&t.to_string()), Ok(t));
    }
});
