//! Canary placement of media sessions: 1% of 100,000 new sessions, within 0.2 points, sticky
//! by user; promote and rollback.

use std::collections::HashMap;

use popmesh_ctrl_api::pb::{
    BatchSessionsRequest, Canary, EndpointGroup, GetCanaryRequest, Labels, ListSessionsRequest,
    PlaceRequest, PromoteRequest, PutServiceRequest, RollbackRequest, Service, SetCanaryRequest,
    UpdateSessionRequest, VersionWeight,
};

use crate::harness::{session, Daemon};

const N: u32 = 100_000;

#[tokio::test]
async fn one_percent_canary_over_100k_sessions_is_sticky() {
    let d = Daemon::start();
    let svc = Service {
        name: "encoder".into(),
        groups: ["v1", "v2"]
            .iter()
            .map(|v| EndpointGroup {
                version: (*v).into(),
                endpoints: vec!["10.2.0.1:9000".into()],
            })
            .collect(),
        default_version: "v1".into(),
        ..Default::default()
    };
    d.mesh()
        .await
        .put_service(PutServiceRequest { service: Some(svc) })
        .await
        .unwrap();
    let mut canary = d.canary().await;
    canary
        .set_canary(SetCanaryRequest {
            canary: Some(Canary {
                service: "encoder".into(),
                weights: vec![
                    VersionWeight {
                        version: "v1".into(),
                        weight: 99,
                    },
                    VersionWeight {
                        version: "v2".into(),
                        weight: 1,
                    },
                ],
                sticky_header: "x-user-id".into(),
                override_header: "x-canary-version".into(),
                ..Default::default()
            }),
        })
        .await
        .unwrap();

    let mut c = d.sessions().await;
    // Each user publishes two sessions (they must land on the same version).
    let mk = |i: u32| {
        let mut s = session(&format!("s{i:06}"), 1024 + (i % 60000), 1);
        s.appliance = format!("pop-{}", i / 60000);
        s.labels = Some(Labels {
            user: format!("user-{}", i / 2),
            service: "encoder".into(),
            ..Default::default()
        });
        s
    };
    c.batch_sessions(BatchSessionsRequest {
        upserts: (0..N).map(mk).collect(),
        removes: vec![],
    })
    .await
    .unwrap();

    let mut versions: HashMap<String, String> = HashMap::new();
    let mut token = String::new();
    loop {
        let page = c
            .list_sessions(ListSessionsRequest {
                page_size: 10_000,
                page_token: token,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        for s in page.sessions {
            let l = s.labels.unwrap();
            if let Some(prev) = versions.insert(l.user.clone(), l.version.clone()) {
                assert_eq!(prev, l.version, "user {} on two versions", l.user);
            }
        }
        token = page.next_page_token;
        if token.is_empty() {
            break;
        }
    }
    assert_eq!(versions.len(), (N / 2) as usize);
    // Share over sessions (two per user).
    let on_v2 = 2 * versions.values().filter(|v| *v == "v2").count();
    let share = on_v2 as f64 * 100.0 / f64::from(N);
    eprintln!("canary share over {N} sessions: {share:.3}%");
    assert!(
        (share - 1.0).abs() <= 0.2,
        "canary share {share}% is not within 0.2 points of 1%"
    );

    // The Place RPC agrees with the placement, and testers can override it.
    let mut checked = 0;
    for (user, version) in versions.iter().take(200) {
        let p = canary
            .place(PlaceRequest {
                service: "encoder".into(),
                key: user.clone(),
                override_version: String::new(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(&p.version, version, "{user}");
        checked += 1;
    }
    assert_eq!(checked, 200);
    let p = canary
        .place(PlaceRequest {
            service: "encoder".into(),
            key: "anyone".into(),
            override_version: "v2".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(p.version, "v2");

    // An update of a session keeps its placement even after the split changes.
    let mut first = mk(0);
    let placed = versions[&format!("user-{}", 0)].clone();
    canary
        .rollback(RollbackRequest {
            service: "encoder".into(),
        })
        .await
        .unwrap();
    let c0 = canary
        .get_canary(GetCanaryRequest {
            service: "encoder".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        c0.weights,
        vec![VersionWeight {
            version: "v1".into(),
            weight: 100
        }]
    );
    first.subscribers.truncate(1);
    c.update_session(UpdateSessionRequest {
        session: Some(first),
    })
    .await
    .unwrap();
    let got = c
        .get_session(popmesh_ctrl_api::pb::GetSessionRequest {
            name: "s000000".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.labels.unwrap().version, placed);

    // Promote: v2 becomes the default with 100%.
    canary
        .promote(PromoteRequest {
            service: "encoder".into(),
            version: "v2".into(),
        })
        .await
        .unwrap();
    let p = canary
        .place(PlaceRequest {
            service: "encoder".into(),
            key: "user-x".into(),
            override_version: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(p.version, "v2");
}
