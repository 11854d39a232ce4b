//! The appliance watch stream: snapshot on connect, ACK, deltas for its own sessions only, NACK
//! recorded with its reason in the appliance status, a snapshot after a NACK, disconnects.

use std::time::Duration;

use popmesh_ctrl_api::pb::{
    appliance_service_client::ApplianceServiceClient, config_update::Body, watch_request, Ack,
    ApplianceStatus, ConfigUpdate, CreateSessionRequest, GetApplianceStatusRequest,
    GetSessionStatsRequest, IdentityKind, ListAppliancesRequest, Nack, RegisterRequest,
    RemoveSessionRequest, ResourceError, SessionStats, StatsReport, SyncState, WatchRequest,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;

use crate::harness::{session, Daemon};

async fn next(inbound: &mut Streaming<ConfigUpdate>) -> ConfigUpdate {
    tokio::time::timeout(Duration::from_secs(10), inbound.message())
        .await
        .expect("no config update within 10 s")
        .unwrap()
        .expect("stream ended")
}

async fn status_until(
    d: &Daemon,
    what: &str,
    pred: impl Fn(&ApplianceStatus) -> bool,
) -> ApplianceStatus {
    let mut c = d.appliances().await;
    for _ in 0..100 {
        let s = c
            .get_appliance_status(GetApplianceStatusRequest {
                name: "pop-1".into(),
                resources: true,
            })
            .await
            .unwrap()
            .into_inner();
        if pred(&s) {
            return s;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("appliance status never became {what}");
}

fn ack(u: &ConfigUpdate) -> WatchRequest {
    WatchRequest {
        body: Some(watch_request::Body::Ack(Ack {
            version: u.version,
            nonce: u.nonce.clone(),
        })),
    }
}

#[tokio::test]
async fn watch_snapshot_ack_delta_nack_and_disconnect() {
    let d = Daemon::start();
    let mut ops = d.sessions().await;
    ops.create_session(CreateSessionRequest {
        session: Some(session("s1", 40000, 2)),
    })
    .await
    .unwrap();
    let mut other = session("elsewhere", 40000, 1);
    other.appliance = "pop-2".into();
    ops.create_session(CreateSessionRequest {
        session: Some(other.clone()),
    })
    .await
    .unwrap();

    let creds = d.issue(IdentityKind::Appliance, "", "pop-1").await;
    let mut agent = ApplianceServiceClient::new(d.channel(Some(&creds)).await.unwrap());
    // Watching before registering is refused with a hint.
    let (tx0, rx0) = mpsc::channel::<WatchRequest>(1);
    let e = agent.watch(ReceiverStream::new(rx0)).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::FailedPrecondition, "{e:?}");
    drop(tx0);
    agent
        .register(RegisterRequest {
            name: "pop-1".into(),
            software_version: "test".into(),
            media_ports: vec!["lab".into()],
        })
        .await
        .unwrap();

    let (tx, rx) = mpsc::channel::<WatchRequest>(16);
    let mut inbound = agent
        .watch(ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();

    // 1. Snapshot of its own sessions at the current version.
    let u = next(&mut inbound).await;
    assert_eq!(u.version, 2);
    let Some(Body::Snapshot(snap)) = &u.body else {
        panic!("first update is not a snapshot: {u:?}")
    };
    let names: Vec<_> = snap.sessions.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["s1"]);
    assert_eq!(snap.trust_bundle.as_ref().unwrap().roots_pem, d.ca);
    tx.send(ack(&u)).await.unwrap();
    let s = status_until(&d, "synced", |s| s.state == SyncState::Synced as i32).await;
    assert!(s.connected);
    assert_eq!(s.acked_version, 2);
    assert!(s.resources.is_empty(), "{:?}", s.resources);

    // 2. A new session of this appliance arrives as a delta.
    ops.create_session(CreateSessionRequest {
        session: Some(session("s2", 40001, 1)),
    })
    .await
    .unwrap();
    let u = next(&mut inbound).await;
    assert_eq!(u.version, 3);
    let Some(Body::Delta(delta)) = &u.body else {
        panic!("not a delta: {u:?}")
    };
    assert_eq!(delta.base_version, 2);
    assert_eq!(delta.upserts.len(), 1);
    assert_eq!(delta.upserts[0].name, "s2");
    assert!(delta.removes.is_empty());
    let s = status_until(&d, "pending", |s| s.state == SyncState::Pending as i32).await;
    assert_eq!(s.resources.len(), 1);
    assert_eq!(s.resources[0].name, "s2");

    // 3. A change for another appliance is not sent (the next update is version 5, not 4).
    other.name = "elsewhere-2".into();
    other.ingress.as_mut().unwrap().port = 40002;
    ops.create_session(CreateSessionRequest {
        session: Some(other),
    })
    .await
    .unwrap();

    // 4. NACK: recorded with the reason, per resource.
    let reason = "s2: ingress 10.0.0.1:40001 is not on a media port of this appliance";
    tx.send(WatchRequest {
        body: Some(watch_request::Body::Nack(Nack {
            version: 3,
            nonce: u.nonce.clone(),
            reason: reason.into(),
            errors: vec![ResourceError {
                kind: "session".into(),
                name: "s2".into(),
                reason: "ingress 10.0.0.1:40001 is not on a media port".into(),
            }],
        })),
    })
    .await
    .unwrap();
    let s = status_until(&d, "rejected", |s| s.state == SyncState::Rejected as i32).await;
    let nack = s.last_nack.as_ref().unwrap();
    assert_eq!((nack.version, nack.reason.as_str()), (3, reason));
    assert_eq!(s.acked_version, 2);
    let r = s
        .resources
        .iter()
        .find(|r| r.name == "s2")
        .expect("s2 in resources");
    assert_eq!(r.state, SyncState::Rejected as i32);
    assert_eq!(r.reason, "ingress 10.0.0.1:40001 is not on a media port");
    let m = d.scrape();
    assert!(m.contains("popmesh_ctrld_nacks_total 1"), "{m}");
    assert!(m.contains("popmesh_ctrld_connected_appliances 1"), "{m}");

    // 5. The fix (removing s2) comes as a snapshot, because the last update was refused.
    ops.remove_session(RemoveSessionRequest { name: "s2".into() })
        .await
        .unwrap();
    let u = next(&mut inbound).await;
    assert_eq!(u.version, 5);
    let Some(Body::Snapshot(snap)) = &u.body else {
        panic!("not a snapshot after a NACK: {u:?}")
    };
    assert_eq!(snap.sessions.len(), 1);
    tx.send(ack(&u)).await.unwrap();
    let s = status_until(&d, "synced again", |s| s.state == SyncState::Synced as i32).await;
    assert!(s.last_nack.is_none());
    assert_eq!(s.acked_version, 5);
    let m = d.scrape();
    assert!(m.contains("popmesh_ctrld_config_version 5"), "{m}");
    assert!(
        m.contains("popmesh_ctrld_push_latency_seconds_count 2"),
        "{m}"
    );

    // 6. Stats reported on the stream are read back by operators.
    tx.send(WatchRequest {
        body: Some(watch_request::Body::Stats(StatsReport {
            sessions: vec![SessionStats {
                name: "s1".into(),
                packets: 1000,
                bytes: 1_200_000,
                drops: 3,
                lost: 2,
                jitter_us: 850,
            }],
        })),
    })
    .await
    .unwrap();
    let mut got = None;
    for _ in 0..100 {
        let r = ops
            .get_session_stats(GetSessionStatsRequest { name: "s1".into() })
            .await
            .unwrap()
            .into_inner();
        if r.reported_at_unix_ms > 0 {
            got = Some(r);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let got = got.expect("stats never arrived");
    assert_eq!(got.appliance, "pop-1");
    assert_eq!(got.stats.unwrap().packets, 1000);

    // 7. Disconnect.
    drop(tx);
    drop(inbound);
    let s = status_until(&d, "disconnected", |s| {
        s.state == SyncState::Disconnected as i32
    })
    .await;
    assert!(!s.connected);
    assert!(s.disconnected_since_unix_ms > 0);
    let all = d
        .appliances()
        .await
        .list_appliances(ListAppliancesRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(all.appliances.len(), 1);
    assert_eq!(all.appliances[0].name, "pop-1");
    assert_eq!(all.appliances[0].software_version, "test");
    assert_eq!(all.appliances[0].acked_version, 5);
    assert_eq!(all.appliances[0].state, SyncState::Disconnected as i32);
    let m = d.scrape();
    assert!(m.contains("popmesh_ctrld_connected_appliances 0"), "{m}");
}

#[tokio::test]
async fn sigterm_ends_watch_streams_and_exits() {
    let mut d = Daemon::start();
    let creds = d.issue(IdentityKind::Appliance, "", "pop-1").await;
    let mut agent = ApplianceServiceClient::new(d.channel(Some(&creds)).await.unwrap());
    agent
        .register(RegisterRequest {
            name: "pop-1".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let (tx, rx) = mpsc::channel::<WatchRequest>(4);
    let mut inbound = agent
        .watch(ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    let u = next(&mut inbound).await;
    tx.send(ack(&u)).await.unwrap();
    let status = tokio::task::spawn_blocking(move || d.sigterm(Duration::from_secs(10)))
        .await
        .unwrap();
    let status =
        status.expect("popmesh-ctrld did not exit within 10 s of SIGTERM with a watch stream open");
    assert!(status.success(), "{status:?}");
    // The stream ended rather than hanging.
    let end = tokio::time::timeout(Duration::from_secs(5), inbound.message())
        .await
        .unwrap();
    assert!(!matches!(end, Ok(Some(_))), "{end:?}");
}
