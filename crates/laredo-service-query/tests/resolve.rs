//! Which target serves a request: unknown and missing tables, tables on several sources.

use laredo_core::{Engine, PipelineOptions, table};
use laredo_proto::laredo::v1 as pb;
use laredo_service_query::{QueryService, SOURCE_METADATA_KEY};
use laredo_target_memory::IndexedTarget;
use tonic::{Code, Request, Status};

use crate::fixture::{
    Client, count_rows, fixture, get_row, int, list_rows, lookup, lookup_all, row_of, serve,
    source, started, subscribe, text, user, users, users_target,
};

/// The status of every RPC for `table`.
async fn every_rpc(client: &mut Client, table: &laredo_core::TableIdentifier) -> Vec<Status> {
    vec![
        client
            .lookup(lookup(table, "", vec![text("a")]))
            .await
            .unwrap_err(),
        client
            .lookup_all(lookup_all(table, "by_team", vec![text("a")]))
            .await
            .unwrap_err(),
        client
            .get_row(get_row(table, vec![int(1)]))
            .await
            .unwrap_err(),
        client
            .list_rows(list_rows(table, 10, ""))
            .await
            .unwrap_err(),
        client.count_rows(count_rows(table)).await.unwrap_err(),
        client.subscribe(subscribe(table, true)).await.unwrap_err(),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_table_is_not_found_in_every_rpc() {
    let mut f = fixture(1..=3).await;
    let statuses = every_rpc(&mut f.client, &table("public", "nope")).await;
    assert_eq!(statuses.len(), 6);
    for status in statuses {
        assert_eq!(status.code(), Code::NotFound, "{status:?}");
        assert_eq!(
            status.message(),
            "no target with row access found for public.nope"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schema_and_table_are_required_in_every_rpc() {
    let mut f = fixture(1..=3).await;
    for missing in [table("", "users"), table("public", "")] {
        for status in every_rpc(&mut f.client, &missing).await {
            assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
            assert_eq!(status.message(), "schema and table are required");
        }
    }
}

/// Two sources, `a` and `b`, each with `public.users` (a has id 1, b has id 2).
async fn two_sources() -> (Engine, Client) {
    let a = source([1]);
    let b = source([2]);
    let engine = Engine::builder()
        .source("a", a)
        .source("b", b)
        .pipeline("a", users(), users_target(), PipelineOptions::default())
        .pipeline("b", users(), users_target(), PipelineOptions::default())
        .build()
        .unwrap();
    started(&engine).await;
    let client = serve(QueryService::new(engine.clone())).await;
    (engine, client)
}

fn from_source(source: &str, message: pb::GetRowRequest) -> Request<pb::GetRowRequest> {
    let mut request = Request::new(message);
    request
        .metadata_mut()
        .insert(SOURCE_METADATA_KEY, source.parse().unwrap());
    request
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_on_several_sources_is_ambiguous_without_a_source() {
    let (_engine, mut client) = two_sources().await;
    let status = client
        .get_row(get_row(&users(), vec![int(1)]))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(
        status.message(),
        "public.users is served by several sources (a, b): pick one with the laredo-source request metadata"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_metadata_picks_the_source() {
    let (_engine, mut client) = two_sources().await;
    let on_b = client
        .get_row(from_source("b", get_row(&users(), vec![int(2)])))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(row_of(&on_b.row.unwrap()), user(2));
    let not_on_b = client
        .get_row(from_source("b", get_row(&users(), vec![int(1)])))
        .await
        .unwrap()
        .into_inner();
    assert!(!not_on_b.found, "id 1 lives on source a only");

    let status = client
        .get_row(from_source("c", get_row(&users(), vec![int(1)])))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    assert_eq!(status.message(), "source c not found");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_on_one_source_needs_no_source() {
    let a = source([1]);
    let b = source([2]);
    // `b` serves only orders, so `a` is the one candidate for users.
    let engine = Engine::builder()
        .source("a", a)
        .source("b", b)
        .pipeline("a", users(), users_target(), PipelineOptions::default())
        .pipeline(
            "b",
            crate::fixture::orders(),
            IndexedTarget::builder().build(),
            PipelineOptions::default(),
        )
        .build()
        .unwrap();
    started(&engine).await;
    let mut client = serve(QueryService::new(engine.clone())).await;
    let found = client
        .get_row(get_row(&users(), vec![int(1)]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(row_of(&found.row.unwrap()), user(1));
    let status = client
        .get_row(from_source("b", get_row(&users(), vec![int(1)])))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    assert_eq!(
        status.message(),
        "no target with row access found for public.users on source b"
    );
}
