//! TLS from PEM files, and startup errors that name the file at fault.

use std::path::PathBuf;

use laredo_service::{Error, GrpcServer};
use tonic::transport::{Certificate, Channel, ClientTlsConfig};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

use crate::support::{StubQuery, fixture, query_server, start};

fn fixture_file(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

async fn bind_error(cert: PathBuf, key: PathBuf) -> Vec<String> {
    let fixture = fixture();
    let error = GrpcServer::builder(fixture.engine.clone())
        .listen("127.0.0.1:0".parse().unwrap())
        .insecure(true)
        .tls(cert, key)
        .bind()
        .await
        .unwrap_err();
    let Error::Config(errors) = error else {
        panic!("not a configuration error: {error:?}");
    };
    errors.errors().iter().map(ToString::to_string).collect()
}

#[tokio::test]
async fn serves_tls_with_the_configured_certificate() {
    let fixture = fixture();
    let running = start(
        GrpcServer::builder(fixture.engine.clone())
            .add_service(query_server(&StubQuery::new()))
            .tls(fixture_file("server.crt"), fixture_file("server.key")),
    )
    .await;
    let ca = std::fs::read(fixture_file("server.crt")).unwrap();
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca))
        .domain_name("localhost");
    let channel = Channel::from_shared(format!("https://{}", running.addr))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect()
        .await
        .unwrap();
    let response = HealthClient::new(channel)
        .check(HealthCheckRequest::default())
        .await
        .unwrap();
    assert_eq!(
        response.into_inner().status(),
        tonic_health::pb::health_check_response::ServingStatus::NotServing
    );

    // No plaintext beside it.
    let plaintext = Channel::from_shared(format!("http://{}", running.addr))
        .unwrap()
        .connect()
        .await;
    if let Ok(plaintext) = plaintext {
        let status = HealthClient::new(plaintext)
            .check(HealthCheckRequest::default())
            .await
            .unwrap_err();
        assert_ne!(status.code(), tonic::Code::Ok);
    }
    running.stop().await.unwrap();
}

#[tokio::test]
async fn missing_files_are_startup_errors_naming_them() {
    let dir = tempfile::tempdir().unwrap();
    let cert = dir.path().join("missing.crt");
    let key = dir.path().join("missing.key");
    let errors = bind_error(cert.clone(), key.clone()).await;
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert!(
        errors[0].starts_with(&format!(
            "tls.cert_path: cannot read \"{}\": ",
            cert.display()
        )),
        "{errors:?}"
    );
    assert!(
        errors[1].starts_with(&format!(
            "tls.key_path: cannot read \"{}\": ",
            key.display()
        )),
        "{errors:?}"
    );
}

#[tokio::test]
async fn a_file_without_a_certificate_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let cert = dir.path().join("not-a.crt");
    std::fs::write(&cert, "this is not PEM\n").unwrap();
    let errors = bind_error(cert.clone(), fixture_file("server.key")).await;
    assert_eq!(
        errors,
        [format!(
            "tls.cert_path: \"{}\" holds no PEM certificate",
            cert.display()
        )]
    );
}

#[tokio::test]
async fn a_file_without_a_key_is_named() {
    // A certificate where the key should be.
    let key = fixture_file("server.crt");
    let errors = bind_error(fixture_file("server.crt"), key.clone()).await;
    assert_eq!(
        errors,
        [format!(
            "tls.key_path: \"{}\" holds no PEM private key (PKCS#8, PKCS#1 or SEC1)",
            key.display()
        )]
    );
}

#[tokio::test]
async fn a_key_of_another_certificate_is_an_error() {
    let cert = fixture_file("server.crt");
    let key = fixture_file("other.key");
    let errors = bind_error(cert.clone(), key.clone()).await;
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0].starts_with(&format!(
            "tls: certificate \"{}\" and key \"{}\" are not a usable pair: ",
            cert.display(),
            key.display()
        )),
        "{errors:?}"
    );
}
