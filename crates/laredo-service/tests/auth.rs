//! Bearer-token roles: admin and read tokens, the open health service, insecure mode.

use std::collections::BTreeSet;

use laredo_proto::laredo::v1 as pb;
use laredo_proto::laredo::v1::laredo_oam_service_client::LaredoOamServiceClient;
use laredo_proto::laredo::v1::laredo_query_service_client::LaredoQueryServiceClient;
use laredo_service::{GrpcServer, OAM_ADMIN_METHODS};
use prost::Message;
use tonic::metadata::MetadataValue;
use tonic::{Code, Request};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

use crate::support::{OAM, QUERY, STUB_COUNT, StubQuery, channel, fixture, query_server, start};

const TOKEN: &str = "correct-horse-battery-staple";
const READ_TOKEN: &str = "read-only-reader";

fn bearer<T>(mut request: Request<T>, token: &str) -> Request<T> {
    request.metadata_mut().insert(
        "authorization",
        MetadataValue::try_from(format!("Bearer {token}")).unwrap(),
    );
    request
}

/// A ReloadTable request the OAM service itself refuses (no table), so that reaching
/// the service is visible as INVALID_ARGUMENT.
fn reload(authorization: Option<&str>) -> Request<pb::ReloadTableRequest> {
    let mut request = Request::new(pb::ReloadTableRequest::default());
    if let Some(value) = authorization {
        request
            .metadata_mut()
            .insert("authorization", MetadataValue::try_from(value).unwrap());
    }
    request
}

async fn oam_server(
    configure: impl FnOnce(laredo_service::GrpcServerBuilder) -> laredo_service::GrpcServerBuilder,
) -> (
    crate::support::Running,
    LaredoOamServiceClient<tonic::transport::Channel>,
) {
    let fixture = fixture();
    let builder = GrpcServer::builder(fixture.engine.clone())
        .add_service(fixture.oam())
        .add_service(query_server(&StubQuery::new()));
    let running = start(configure(builder)).await;
    let client = LaredoOamServiceClient::new(channel(running.addr).await);
    (running, client)
}

#[tokio::test]
async fn an_admin_method_without_a_token_is_unauthenticated() {
    let (running, mut client) = oam_server(|b| b.admin_token(TOKEN)).await;
    let status = client.reload_table(reload(None)).await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    assert_eq!(
        status.message(),
        "/laredo.v1.LaredoOAMService/ReloadTable is an admin method: send the admin token as \"authorization: Bearer <token>\""
    );
    running.stop().await.unwrap();
}

#[tokio::test]
async fn an_admin_method_with_a_wrong_token_is_unauthenticated() {
    let (running, mut client) = oam_server(|b| b.admin_token(TOKEN)).await;
    for header in [
        "Bearer wrong",
        "Bearer correct-horse-battery-stapl",
        "Basic Zm9vOmJhcg==",
    ] {
        let status = client.reload_table(reload(Some(header))).await.unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated, "{header}: {status:?}");
    }
    running.stop().await.unwrap();
}

#[tokio::test]
async fn an_admin_method_with_the_token_reaches_the_service() {
    let (running, mut client) = oam_server(|b| b.admin_token(TOKEN)).await;
    let status = client
        .reload_table(reload(Some(&format!("Bearer {TOKEN}"))))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert_eq!(status.message(), "table is required");
    running.stop().await.unwrap();
}

#[tokio::test]
async fn read_methods_need_a_read_or_admin_token_and_health_is_open() {
    let (running, mut client) = oam_server(|b| b.admin_token(TOKEN).read_token(READ_TOKEN)).await;
    let status = client
        .get_status(pb::GetStatusRequest::default())
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    assert!(
        status.message().contains("send a read or admin token"),
        "{status:?}"
    );
    for token in [READ_TOKEN, TOKEN] {
        let status = client
            .get_status(bearer(Request::new(pb::GetStatusRequest::default()), token))
            .await
            .unwrap()
            .into_inner();
        assert!(status.pipelines.len() == 1, "{status:?}");
    }
    let mut query = LaredoQueryServiceClient::new(channel(running.addr).await);
    let status = query
        .count_rows(pb::CountRowsRequest::default())
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    let count = query
        .count_rows(bearer(
            Request::new(pb::CountRowsRequest::default()),
            READ_TOKEN,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(count.count, STUB_COUNT);
    // Probes need no token.
    let mut health = HealthClient::new(channel(running.addr).await);
    health.check(HealthCheckRequest::default()).await.unwrap();
    running.stop().await.unwrap();
}

#[tokio::test]
async fn a_read_token_cannot_call_reset_source() {
    let (running, mut client) = oam_server(|b| b.admin_token(TOKEN).read_token(READ_TOKEN)).await;
    let status = client
        .reset_source(bearer(
            Request::new(pb::ResetSourceRequest::default()),
            READ_TOKEN,
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert_eq!(
        status.message(),
        "/laredo.v1.LaredoOAMService/ResetSource is an admin method: the token has the read role only"
    );
    // The admin token reaches the service (which then refuses the empty request).
    let status = client
        .reset_source(bearer(
            Request::new(pb::ResetSourceRequest::default()),
            TOKEN,
        ))
        .await
        .unwrap_err();
    assert_ne!(status.code(), Code::PermissionDenied, "{status:?}");
    assert_ne!(status.code(), Code::Unauthenticated, "{status:?}");
    running.stop().await.unwrap();
}

#[tokio::test]
async fn several_admin_tokens_work_side_by_side_for_rotation() {
    let (running, mut client) =
        oam_server(|b| b.admin_token(TOKEN).admin_token("the-next-token")).await;
    for token in [TOKEN, "the-next-token"] {
        let status = client
            .reload_table(reload(Some(&format!("Bearer {token}"))))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{token}: {status:?}");
    }
    running.stop().await.unwrap();
}

#[tokio::test]
async fn in_insecure_mode_without_tokens_every_method_is_open() {
    let (running, mut client) = oam_server(|b| b.insecure(true)).await;
    let status = client.reload_table(reload(None)).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    running.stop().await.unwrap();
}

#[tokio::test]
async fn admin_methods_add_to_the_defaults() {
    let (running, mut oam) = oam_server(|b| {
        b.admin_token(TOKEN)
            .read_token(READ_TOKEN)
            .admin_methods([format!("/{QUERY}/")])
    })
    .await;
    // The whole Query service is admin now...
    let mut query = LaredoQueryServiceClient::new(channel(running.addr).await);
    let status = query
        .count_rows(bearer(
            Request::new(pb::CountRowsRequest::default()),
            READ_TOKEN,
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert_eq!(
        query
            .count_rows(bearer(Request::new(pb::CountRowsRequest::default()), TOKEN))
            .await
            .unwrap()
            .into_inner()
            .count,
        STUB_COUNT
    );
    // ...and the OAM defaults still need the admin token.
    let status = oam.reload_table(reload(None)).await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    let status = oam
        .reload_table(reload(Some(&format!("Bearer {READ_TOKEN}"))))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    running.stop().await.unwrap();
}

/// Every OAM admin method exists, and every OAM method that is not plainly read-only
/// (Get, List, Watch, Check, Inspect) is an admin method: a new mutating RPC in
/// `oam.proto` fails here until it is listed.
#[test]
fn the_oam_admin_methods_cover_every_mutating_method() {
    let set = prost_types::FileDescriptorSet::decode(laredo_proto::FILE_DESCRIPTOR_SET).unwrap();
    let service = set
        .file
        .iter()
        .filter(|f| f.package() == "laredo.v1")
        .flat_map(|f| &f.service)
        .find(|s| s.name() == "LaredoOAMService")
        .unwrap();
    let methods: BTreeSet<String> = service
        .method
        .iter()
        .map(|m| format!("/{OAM}/{}", m.name()))
        .collect();
    for admin in OAM_ADMIN_METHODS {
        assert!(methods.contains(*admin), "{admin} is not an OAM method");
    }
    let read_only = ["Get", "List", "Watch", "Check", "Inspect"];
    for method in &methods {
        let name = method.rsplit('/').next().unwrap();
        if !read_only.iter().any(|prefix| name.starts_with(prefix)) {
            assert!(
                OAM_ADMIN_METHODS.contains(&method.as_str()),
                "{method} changes something but is not in OAM_ADMIN_METHODS"
            );
        }
    }
}
