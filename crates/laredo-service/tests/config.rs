//! Configuration errors, all at once, and bind errors.

use laredo_service::{Error, GrpcServer, Limits};

use crate::support::{StubQuery, fixture, query_server};

#[tokio::test]
async fn every_configuration_problem_is_reported_at_once() {
    let fixture = fixture();
    let stub = StubQuery::new();
    let mut limits = Limits::default();
    limits.max_connections = 0;
    let error = GrpcServer::builder(fixture.engine.clone())
        .listen("127.0.0.1:0".parse().unwrap())
        .add_service(query_server(&stub))
        .add_service(query_server(&stub))
        .insecure(true)
        .admin_methods(["/laredo.v1.LaredoOAMService/ReloadTable"])
        .cors_allowed_origins(["console.example.com"])
        .limits(limits)
        .bind()
        .await
        .unwrap_err();
    let Error::Config(errors) = error else {
        panic!("not a configuration error: {error:?}");
    };
    let messages: Vec<String> = errors.errors().iter().map(ToString::to_string).collect();
    assert_eq!(
        messages,
        [
            "services: laredo.v1.LaredoQueryService is added more than once or is a built-in service",
            "admin_methods: set without any token: the admin methods would be open",
            "cors_allowed_origins[0]: \"console.example.com\" is not an origin (\"https://host[:port]\")",
            "limits.max_connections: must be greater than 0",
        ]
    );
}

#[tokio::test]
async fn the_health_service_cannot_be_added_twice() {
    let fixture = fixture();
    let (_reporter, health) = tonic_health::server::health_reporter();
    let error = GrpcServer::builder(fixture.engine.clone())
        .listen("127.0.0.1:0".parse().unwrap())
        .insecure(true)
        .add_service(health)
        .bind()
        .await
        .unwrap_err();
    assert_eq!(
        error.to_string(),
        "1 configuration error(s):\n  - services: grpc.health.v1.Health is added more than once or is a built-in service"
    );
}

#[tokio::test]
async fn an_address_in_use_is_a_bind_error_naming_it() {
    let taken = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = taken.local_addr().unwrap();
    let fixture = fixture();
    let error = GrpcServer::builder(fixture.engine.clone())
        .listen(addr)
        .insecure(true)
        .bind()
        .await
        .unwrap_err();
    assert!(
        matches!(error, Error::Bind { addr: a, .. } if a == addr),
        "{error:?}"
    );
    assert_eq!(
        error.to_string(),
        format!("failed to bind the gRPC server to {addr}")
    );
}

#[tokio::test]
async fn without_any_token_or_insecure_the_server_refuses_to_start_naming_the_key() {
    let fixture = fixture();
    let error = GrpcServer::builder(fixture.engine.clone())
        .listen("127.0.0.1:0".parse().unwrap())
        .add_service(query_server(&StubQuery::new()))
        .bind()
        .await
        .unwrap_err();
    assert_eq!(
        error.to_string(),
        "1 configuration error(s):\n  - admin_token: no token is configured: set an admin \
         token (and read tokens), or set insecure to serve every method, ResetSource \
         included, to anyone"
    );
    // A read token alone is enough to start (admin methods then need a token nobody has).
    GrpcServer::builder(fixture.engine.clone())
        .listen("127.0.0.1:0".parse().unwrap())
        .read_token("r3ad")
        .bind()
        .await
        .unwrap();
}
