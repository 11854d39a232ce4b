//! mTLS and roles: no certificate or a foreign CA is refused at the handshake; an appliance
//! identity cannot change config; a service identity can only read the trust bundle.

use popmesh_ctrl_api::pb::{
    appliance_service_client::ApplianceServiceClient,
    identity_service_client::IdentityServiceClient, session_service_client::SessionServiceClient,
    CreateSessionRequest, GetTrustBundleRequest, IdentityKind, IssueSvidRequest,
    ListSessionsRequest, RegisterRequest,
};
use tonic::Code;

use crate::harness::{session, Creds, Daemon};

#[tokio::test]
async fn client_without_certificate_is_refused() {
    let d = Daemon::start();
    // The handshake fails (the server requires a client certificate), so either the connect or
    // the first call fails; never does a call succeed.
    let result = match d.channel(None).await {
        Err(e) => Err(format!("connect: {e:?}")),
        Ok(ch) => SessionServiceClient::new(ch)
            .list_sessions(ListSessionsRequest::default())
            .await
            .map_err(|e| format!("call: {e:?}")),
    };
    let err = result.expect_err("a client without a certificate was served");
    eprintln!("no-certificate client refused: {err}");
    assert!(
        !err.contains("PermissionDenied"),
        "refused too late (after the handshake): {err}"
    );

    // A certificate from another CA (a second, independent daemon's operator).
    let other = Daemon::start();
    let foreign = other.operator.clone();
    let result = match d.channel(Some(&foreign)).await {
        Err(e) => Err(format!("connect: {e:?}")),
        Ok(ch) => SessionServiceClient::new(ch)
            .list_sessions(ListSessionsRequest::default())
            .await
            .map(|_| ())
            .map_err(|e| format!("call: {e:?}")),
    };
    result.expect_err("a client with a foreign certificate was served");

    // The daemon is still fine for a good client.
    d.sessions()
        .await
        .list_sessions(ListSessionsRequest::default())
        .await
        .unwrap();
}

#[tokio::test]
async fn appliance_identity_cannot_change_config() {
    let d = Daemon::start();
    let creds = d.issue(IdentityKind::Appliance, "", "pop-1").await;
    let ch = d.channel(Some(&creds)).await.unwrap();
    let e = SessionServiceClient::new(ch.clone())
        .create_session(CreateSessionRequest {
            session: Some(session("x", 40000, 1)),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    assert!(
        e.message().contains("not an operator identity"),
        "{}",
        e.message()
    );
    let e = SessionServiceClient::new(ch.clone())
        .list_sessions(ListSessionsRequest::default())
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    let e = IdentityServiceClient::new(ch.clone())
        .issue_svid(IssueSvidRequest {
            kind: IdentityKind::Operator as i32,
            name: "mallory".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    // It may rotate its own identity with a CSR (its key stays with it), and nothing else.
    let key = rcgen::KeyPair::generate().unwrap();
    let csr = rcgen::CertificateParams::new(Vec::<String>::new())
        .unwrap()
        .serialize_request(&key)
        .unwrap()
        .pem()
        .unwrap();
    let renew = |name: &str, csr: &str| IssueSvidRequest {
        kind: IdentityKind::Appliance as i32,
        name: name.into(),
        ttl_seconds: 600,
        csr_pem: csr.into(),
        ..Default::default()
    };
    let mut ids = IdentityServiceClient::new(ch.clone());
    let e = ids.issue_svid(renew("pop-2", &csr)).await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    let e = ids.issue_svid(renew("pop-1", "")).await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    let r = ids
        .issue_svid(renew("pop-1", &csr))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.spiffe_id, "spiffe://pop.test/ns/appliances/sa/pop-1");
    assert!(r.key_pem.is_empty());
    let rotated = Creds {
        cert: r.cert_pem,
        key: key.serialize_pem(),
    };
    let ch = d.channel(Some(&rotated)).await.unwrap();
    // It may register, but only as itself.
    let mut a = ApplianceServiceClient::new(ch.clone());
    let e = a
        .register(RegisterRequest {
            name: "pop-2".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    a.register(RegisterRequest {
        name: "pop-1".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    // And read the trust bundle.
    let tb = IdentityServiceClient::new(ch)
        .get_trust_bundle(GetTrustBundleRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(tb.roots_pem, d.ca);

    // An operator cannot pose as an appliance either.
    let e = d
        .appliances()
        .await
        .register(RegisterRequest {
            name: "alice".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);

    // A service identity can do nothing but read the bundle.
    let svc: Creds = d.issue(IdentityKind::Service, "danmaku", "api").await;
    let ch = d.channel(Some(&svc)).await.unwrap();
    let e = SessionServiceClient::new(ch)
        .list_sessions(ListSessionsRequest::default())
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
}
