//! Decodes arbitrary bytes as the messages an appliance agent receives (`ConfigUpdate`) and the
//! daemon receives (`BatchSessionsRequest`, `WatchRequest`), then validates every session in
//! them the way the daemon and agent do. Nothing may panic; an accepted session must have
//! between 1 and MAX_SUBSCRIBERS subscribers and parse to the same addresses twice.
//!
//! Run with `cargo fuzz run decode_update` in `ctrl/api/fuzz`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use popmesh_ctrl_api::pb::{
    config_update, BatchSessionsRequest, ConfigUpdate, Session, WatchRequest,
};
use popmesh_ctrl_api::validate::{self, MAX_SUBSCRIBERS};
use prost::Message;

fn check(s: &Session) {
    if let Ok(spec) = validate::session_spec("session", s) {
        assert!((1..=MAX_SUBSCRIBERS).contains(&spec.subscribers.len()));
        assert_eq!(validate::session_spec("session", s).as_ref(), Ok(&spec));
    }
}

fuzz_target!(|data: &[u8]| {
    if let Ok(u) = ConfigUpdate::decode(data) {
        match &u.body {
            Some(config_update::Body::Snapshot(snap)) => snap.sessions.iter().for_each(check),
            Some(config_update::Body::Delta(d)) => d.upserts.iter().for_each(check),
            None => {}
        }
    }
    if let Ok(b) = BatchSessionsRequest::decode(data) {
        b.upserts.iter().for_each(check);
    }
    let _ = WatchRequest::decode(data);
});
