//! Invalid changes are refused with InvalidArgument naming the field, and change nothing.

use popmesh_ctrl_api::pb::{
    BatchSessionsRequest, Canary, CreateSessionRequest, EndpointGroup, Labels, ListSessionsRequest,
    PutServiceRequest, Service, SetCanaryRequest, Subscriber, VersionWeight,
};
use tonic::Code;

use crate::harness::{ep, session, Daemon};

fn encoder() -> Service {
    Service {
        name: "encoder".into(),
        groups: ["v1", "v2"]
            .iter()
            .map(|v| EndpointGroup {
                version: (*v).into(),
                endpoints: vec![format!("encoder-{v}.pop.internal:8443")],
            })
            .collect(),
        default_version: "v1".into(),
        ..Default::default()
    }
}

async fn version(d: &Daemon) -> (u64, usize) {
    let l = d
        .sessions()
        .await
        .list_sessions(ListSessionsRequest::default())
        .await
        .unwrap()
        .into_inner();
    (l.version, l.sessions.len())
}

#[tokio::test]
async fn invalid_changes_are_refused_by_field_and_change_nothing() {
    let d = Daemon::start();
    let v = d
        .mesh()
        .await
        .put_service(PutServiceRequest {
            service: Some(encoder()),
        })
        .await
        .unwrap()
        .into_inner()
        .version;
    assert_eq!(v, 1);
    let before = version(&d).await;
    assert_eq!(before, (1, 0));

    let refused = |r: Result<_, tonic::Status>, want: &str| {
        let e = r.expect_err("accepted an invalid change");
        assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
        assert_eq!(e.message(), want);
    };

    // Weights summing to 101.
    let r = d
        .canary()
        .await
        .set_canary(SetCanaryRequest {
            canary: Some(Canary {
                service: "encoder".into(),
                weights: vec![
                    VersionWeight {
                        version: "v1".into(),
                        weight: 100,
                    },
                    VersionWeight {
                        version: "v2".into(),
                        weight: 1,
                    },
                ],
                sticky_header: "x-user-id".into(),
                ..Default::default()
            }),
        })
        .await;
    refused(
        r.map(|_| ()),
        "canary.weights: weights sum to 101, must be 100",
    );

    let mut c = d.sessions().await;
    // An unparsable subscriber address.
    let mut s = session("bad-addr", 40000, 5);
    s.subscribers[3].endpoint = ep("1.2.3", 41000);
    let r = c
        .create_session(CreateSessionRequest { session: Some(s) })
        .await;
    refused(
        r.map(|_| ()),
        "session.subscribers[3].address: \"1.2.3\" is not an IP address",
    );

    // Over the subscriber limit.
    let s = session("too-many", 40000, 4097);
    let r = c
        .create_session(CreateSessionRequest { session: Some(s) })
        .await;
    refused(
        r.map(|_| ()),
        "session.subscribers: 4097 subscribers, at most 4096 per session",
    );

    // An unknown service.
    let mut s = session("unknown-svc", 40000, 1);
    s.labels = Some(Labels {
        service: "transcoder".into(),
        ..Default::default()
    });
    let r = c
        .create_session(CreateSessionRequest { session: Some(s) })
        .await;
    refused(
        r.map(|_| ()),
        "session.labels.service: unknown service \"transcoder\"",
    );

    // Canary on an unknown service.
    let r = d
        .canary()
        .await
        .set_canary(SetCanaryRequest {
            canary: Some(Canary {
                service: "transcoder".into(),
                weights: vec![VersionWeight {
                    version: "v1".into(),
                    weight: 100,
                }],
                ..Default::default()
            }),
        })
        .await;
    refused(
        r.map(|_| ()),
        "canary.service: unknown service \"transcoder\"",
    );

    // A batch with one bad entry applies none of them.
    let mut upserts: Vec<_> = (0..100)
        .map(|i| session(&format!("b{i}"), 30000 + i, 1))
        .collect();
    upserts[57].subscribers.push(Subscriber {
        endpoint: ep("10.9.9.9", 0),
        egress_port: String::new(),
    });
    let r = c
        .batch_sessions(BatchSessionsRequest {
            upserts,
            removes: vec![],
        })
        .await;
    refused(
        r.map(|_| ()),
        "batch.upserts[57].subscribers[1].port: 0 is not a UDP port (1..=65535)",
    );

    // Two sessions on one ingress of one appliance.
    let upserts = vec![session("a", 30000, 1), session("b", 30000, 1)];
    let r = c
        .batch_sessions(BatchSessionsRequest {
            upserts,
            removes: vec![],
        })
        .await;
    refused(
        r.map(|_| ()),
        "batch.upserts[1].ingress: 10.0.0.1:30000 is also the ingress of batch.upserts[0] on appliance \"pop-1\"",
    );

    assert_eq!(
        version(&d).await,
        before,
        "a refused change changed something"
    );
}
