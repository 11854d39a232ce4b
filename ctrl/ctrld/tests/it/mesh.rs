//! Services, routes and policies through the API: stored, listed, referenced, and protected
//! from removal while in use.

use popmesh_ctrl_api::pb::{
    policy_service_client::PolicyServiceClient, CircuitBreaker, EndpointGroup, HeaderMatch,
    HealthCheck, ListPoliciesRequest, ListRoutesRequest, ListServicesRequest, OutlierDetection,
    Policy, PolicyAction, PutPolicyRequest, PutRouteRequest, PutServiceRequest,
    RemovePolicyRequest, RemoveRouteRequest, RemoveServiceRequest, RetryPolicy, Route, Service,
};
use tonic::Code;

use crate::harness::Daemon;

fn payment() -> Service {
    Service {
        name: "payment".into(),
        groups: vec![
            EndpointGroup {
                version: "v1".into(),
                endpoints: vec!["10.3.0.1:8080".into(), "10.3.0.2:8080".into()],
            },
            EndpointGroup {
                version: "v2".into(),
                endpoints: vec!["payment-v2.pop.internal:8080".into()],
            },
        ],
        default_version: "v1".into(),
        timeout_ms: 2000,
        retry: Some(RetryPolicy {
            attempts: 2,
            per_try_timeout_ms: 500,
            retry_on: vec!["5xx".into(), "reset".into()],
        }),
        circuit_breaker: Some(CircuitBreaker {
            max_connections: 1000,
            max_pending_requests: 100,
            max_requests: 5000,
            max_retries: 3,
        }),
        outlier: Some(OutlierDetection {
            consecutive_errors: 5,
            interval_ms: 10_000,
            base_ejection_ms: 30_000,
            max_ejection_percent: 50,
        }),
        version: 0,
        plaintext: false,
        health_check: Some(HealthCheck {
            interval_ms: 5000,
            path: "/healthz".into(),
            timeout_ms: 1000,
            unhealthy_threshold: 3,
            healthy_threshold: 2,
        }),
    }
}

#[tokio::test]
async fn services_routes_and_policies() {
    let d = Daemon::start();
    let mut mesh = d.mesh().await;
    let mut pol = PolicyServiceClient::new(d.op_channel().await);
    mesh.put_service(PutServiceRequest {
        service: Some(payment()),
    })
    .await
    .unwrap();
    let route = Route {
        name: "pay-api".into(),
        host: "api.live.example.com".into(),
        path_prefix: "/pay/".into(),
        headers: vec![HeaderMatch {
            name: "x-client".into(),
            value: "app".into(),
        }],
        service: "payment".into(),
        pin_version: "v2".into(),
        timeout_ms: 1500,
        version: 0,
    };
    let v = mesh
        .put_route(PutRouteRequest { route: Some(route) })
        .await
        .unwrap()
        .into_inner()
        .version;
    assert_eq!(v, 2);
    let deny = Policy {
        name: "danmaku-no-payment".into(),
        sources: vec!["spiffe://pop.test/ns/danmaku/sa/*".into()],
        destination: "payment".into(),
        methods: vec![],
        paths: vec![],
        action: PolicyAction::Deny as i32,
        version: 0,
    };
    let allow = Policy {
        name: "user-to-payment".into(),
        sources: vec!["spiffe://pop.test/ns/user/sa/api".into()],
        destination: "payment".into(),
        methods: vec!["POST".into()],
        paths: vec!["/pay/".into()],
        action: PolicyAction::Allow as i32,
        version: 0,
    };
    pol.put_policy(PutPolicyRequest { policy: Some(deny) })
        .await
        .unwrap();
    pol.put_policy(PutPolicyRequest {
        policy: Some(allow.clone()),
    })
    .await
    .unwrap();

    let services = mesh
        .list_services(ListServicesRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(services.services.len(), 1);
    assert_eq!(services.services[0].outlier, payment().outlier);
    assert_eq!(services.services[0].health_check, payment().health_check);
    assert_eq!(services.version, 4);
    let routes = mesh
        .list_routes(ListRoutesRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(routes.routes[0].pin_version, "v2");
    let policies = pol
        .list_policies(ListPoliciesRequest {})
        .await
        .unwrap()
        .into_inner();
    let names: Vec<_> = policies.policies.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["danmaku-no-payment", "user-to-payment"]);

    // A policy without an action, and a route to a version the service does not have.
    let mut bad = allow;
    bad.action = PolicyAction::Unspecified as i32;
    let e = pol
        .put_policy(PutPolicyRequest { policy: Some(bad) })
        .await
        .unwrap_err();
    assert_eq!(
        (e.code(), e.message()),
        (
            Code::InvalidArgument,
            "policy.action: must be ALLOW or DENY"
        )
    );

    // Dropping v2 while the route pins it, or the service while used, is refused.
    let mut v1_only = payment();
    v1_only.groups.truncate(1);
    let e = mesh
        .put_service(PutServiceRequest {
            service: Some(v1_only),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    assert_eq!(
        e.message(),
        "service.groups: version \"v2\" of \"payment\" is still used by route \"pay-api\""
    );
    let e = mesh
        .remove_service(RemoveServiceRequest {
            name: "payment".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    assert_eq!(
        e.message(),
        "service \"payment\" is still used by route \"pay-api\""
    );

    mesh.remove_route(RemoveRouteRequest {
        name: "pay-api".into(),
    })
    .await
    .unwrap();
    for p in ["danmaku-no-payment", "user-to-payment"] {
        pol.remove_policy(RemovePolicyRequest { name: p.into() })
            .await
            .unwrap();
    }
    let v = mesh
        .remove_service(RemoveServiceRequest {
            name: "payment".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .version;
    assert_eq!(v, 8);
}
