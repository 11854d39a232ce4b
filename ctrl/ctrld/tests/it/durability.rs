//! `kill -9` right after an acknowledged write loses nothing.

use std::time::Instant;

use popmesh_ctrl_api::pb::{
    BatchSessionsRequest, CreateSessionRequest, GetSessionRequest, ListSessionsRequest,
};

use crate::harness::{session, Daemon};

#[tokio::test]
async fn acknowledged_writes_survive_kill_9() {
    let mut d = Daemon::start();
    let mut c = d.sessions().await;
    let upserts: Vec<_> = (0..50_000u32)
        .map(|i| session(&format!("s{i:06}"), 10000 + i, 1))
        .collect();
    let t = Instant::now();
    let r = c
        .batch_sessions(BatchSessionsRequest {
            upserts,
            removes: vec![],
        })
        .await
        .unwrap()
        .into_inner();
    let dt = t.elapsed();
    eprintln!(
        "batch of 50000 sessions acknowledged in {dt:?} ({:.0} sessions/s, {} build, incl. encoding, TLS, validation and commit)",
        50_000.0 / dt.as_secs_f64(),
        if cfg!(debug_assertions) { "debug" } else { "release" },
    );
    assert_eq!(r.version, 1);
    let r = c
        .create_session(CreateSessionRequest {
            session: Some(session("last", 9999, 2)),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.version, 2);
    // No pause: the reply means it is on disk.
    d.kill9();
    d.restart();
    let mut c = d.sessions().await;
    let got = c
        .get_session(GetSessionRequest {
            name: "last".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.subscribers.len(), 2);
    assert_eq!(got.version, 2);
    let l = c
        .list_sessions(ListSessionsRequest {
            page_size: 10_000,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(l.version, 2, "the config version went back after a restart");
    let mut n = l.sessions.len();
    let mut token = l.next_page_token;
    while !token.is_empty() {
        let l = c
            .list_sessions(ListSessionsRequest {
                page_size: 10_000,
                page_token: token,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        n += l.sessions.len();
        token = l.next_page_token;
    }
    assert_eq!(n, 50_001);
    eprintln!(
        "daemon RSS with 50,001 sessions loaded: {} MiB",
        d.rss_kib() / 1024
    );
}
