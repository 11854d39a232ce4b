use popmesh_ctrl_api::pb::{
    BatchSessionsRequest, CreateSessionRequest, GetSessionRequest, GetSessionStatsRequest,
    ListSessionsRequest, RemoveSessionRequest, UpdateSessionRequest,
};
use tonic::Code;

use crate::harness::{ep, session, Daemon};

#[tokio::test]
async fn operator_creates_reads_updates_and_removes_a_session() {
    let d = Daemon::start();
    let mut c = d.sessions().await;
    let mut s = session("room-1-cam", 40000, 3);
    s.source = ep("192.0.2.7", 5004);
    let r = c
        .create_session(CreateSessionRequest {
            session: Some(s.clone()),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.version, 1);
    let got = c
        .get_session(GetSessionRequest {
            name: "room-1-cam".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.subscribers, s.subscribers);
    assert_eq!(got.source, s.source);
    assert_eq!(got.ingress, s.ingress);
    assert_eq!(got.version, 1);

    // Creating it again is refused; updating replaces it with a new version.
    let e = c
        .create_session(CreateSessionRequest {
            session: Some(s.clone()),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::AlreadyExists, "{e:?}");
    s.subscribers.truncate(1);
    let v = c
        .update_session(UpdateSessionRequest { session: Some(s) })
        .await
        .unwrap()
        .into_inner()
        .version;
    assert_eq!(v, 2);
    let list = c
        .list_sessions(ListSessionsRequest {
            appliance: "pop-1".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(list.sessions.len(), 1);
    assert_eq!(list.sessions[0].subscribers.len(), 1);
    assert_eq!(list.version, 2);

    // No stats reported yet: an empty answer, not an error.
    let st = c
        .get_session_stats(GetSessionStatsRequest {
            name: "room-1-cam".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(st.reported_at_unix_ms, 0);

    let v = c
        .remove_session(RemoveSessionRequest {
            name: "room-1-cam".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .version;
    assert_eq!(v, 3);
    let e = c
        .get_session(GetSessionRequest {
            name: "room-1-cam".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
}

#[tokio::test]
async fn batch_is_one_version_and_pages_list() {
    let d = Daemon::start();
    let mut c = d.sessions().await;
    let upserts: Vec<_> = (0..2500)
        .map(|i| session(&format!("s{i:05}"), 20000 + i, 2))
        .collect();
    let r = c
        .batch_sessions(BatchSessionsRequest {
            upserts,
            removes: vec![],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((r.version, r.upserted), (1, 2500));
    let mut names = Vec::new();
    let mut token = String::new();
    loop {
        let page = c
            .list_sessions(ListSessionsRequest {
                page_size: 1000,
                page_token: token.clone(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        names.extend(page.sessions.into_iter().map(|s| s.name));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(names.len(), 2500);
    assert_eq!(names[0], "s00000");
    assert_eq!(names[2499], "s02499");

    // Removing two and adding one is again one version.
    let r = c
        .batch_sessions(BatchSessionsRequest {
            upserts: vec![session("new", 30000, 1)],
            removes: vec!["s00000".into(), "s00001".into()],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((r.version, r.upserted, r.removed), (2, 1, 2));
}

#[tokio::test]
async fn health_is_served_over_mtls() {
    use tonic_health::pb::{
        health_check_response::ServingStatus, health_client::HealthClient, HealthCheckRequest,
    };
    let d = Daemon::start();
    let mut h = HealthClient::new(d.op_channel().await);
    for service in [
        "",
        "popmesh.ctrl.v1.SessionService",
        "popmesh.ctrl.v1.ApplianceService",
    ] {
        let r = h
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(r.status, ServingStatus::Serving as i32, "{service:?}");
    }
    let e = h
        .check(HealthCheckRequest {
            service: "popmesh.ctrl.v1.Nope".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
}
