//! Feeds arbitrary bytes (lossy UTF-8) to the SPIFFE ID and policy-source parsers: they read
//! URI SANs of peer certificates and operator input, so they must never panic, and whatever
//! they accept must print back to the same string and parse again to the same value.
//!
//! Run with `cargo fuzz run spiffe_id` in `ctrl/api/fuzz` (or `tools/fuzz.sh ctrl/api/fuzz`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use popmesh_ctrl_api::spiffe::{SourcePattern, SpiffeId};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Ok(id) = SpiffeId::parse(&text) {
        let printed = id.to_string();
        assert_eq!(printed, text, "accepted ID does not print back");
        assert_eq!(SpiffeId::parse(&printed).as_ref(), Ok(&id));
        assert!(SourcePattern::parse(&printed).is_ok_and(|p| p.matches(&id)));
    }
    let _ = SourcePattern::parse(&text);
});
