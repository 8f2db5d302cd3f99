//! Engines over the test source, the service on a loopback port, and a tonic client.

use std::sync::Arc;
use std::time::Duration;

use laredo_core::{
    Engine, IndexDefinition, PipelineOptions, Position, Row, TableIdentifier, row, table,
};
use laredo_proto::laredo::v1 as pb;
use laredo_proto::laredo::v1::laredo_query_service_client::LaredoQueryServiceClient;
use laredo_service_query::QueryService;
use laredo_source_test::TestSource;
use laredo_target_memory::IndexedTarget;
use laredo_test_support::wait_until;
use tonic::transport::{Channel, Endpoint};

pub(crate) const WAIT: Duration = Duration::from_secs(10);

pub(crate) type Client = LaredoQueryServiceClient<Channel>;

/// `public.users(id int8 pk, name, team, email)`: lookup fields `email`, a non-unique
/// index `by_team` and a unique index `by_name`.
pub(crate) fn users() -> TableIdentifier {
    table("public", "users")
}

/// `public.orders(region text, id int8, total int8)` with the key `(region, id)`.
pub(crate) fn orders() -> TableIdentifier {
    table("public", "orders")
}

pub(crate) fn team_of(id: i64) -> &'static str {
    ["red", "green", "blue"][usize::try_from(id.rem_euclid(3)).unwrap()]
}

pub(crate) fn user(id: i64) -> Row {
    user_named(id, &format!("user-{id}"))
}

pub(crate) fn user_named(id: i64, name: &str) -> Row {
    row! {"id" => id, "name" => name, "team" => team_of(id), "email" => format!("u{id}@x")}
}

pub(crate) fn order(region: &str, id: i64, total: i64) -> Row {
    row! {"region" => region, "id" => id, "total" => total}
}

/// A test source with `users` (the given ids in its baseline) and `orders` (two rows).
pub(crate) fn source(user_ids: impl IntoIterator<Item = i64>) -> Arc<TestSource> {
    let source = TestSource::new();
    source.set_schema(
        users(),
        TestSource::columns(&[
            ("id", "int8", true),
            ("name", "text", false),
            ("team", "text", false),
            ("email", "text", false),
        ]),
    );
    source.set_schema(
        orders(),
        TestSource::columns(&[
            ("region", "text", true),
            ("id", "int8", true),
            ("total", "int8", false),
        ]),
    );
    for id in user_ids {
        source.add_row(users(), user(id));
    }
    source.add_row(orders(), order("eu", 1, 10));
    source.add_row(orders(), order("us", 1, 20));
    source
}

pub(crate) fn users_target() -> Arc<IndexedTarget> {
    IndexedTarget::builder()
        .lookup_fields(["email"])
        .index(IndexDefinition::new("by_team", ["team"], false))
        .index(IndexDefinition::new("by_name", ["name"], true))
        .build()
}

pub(crate) struct Fixture {
    pub(crate) engine: Engine,
    pub(crate) source: Arc<TestSource>,
    pub(crate) service: QueryService,
    pub(crate) client: Client,
}

impl Fixture {
    /// Waits until the engine has applied (and acknowledged) `position`.
    pub(crate) async fn applied(&self, position: Position) {
        applied(&self.source, position).await;
    }
}

pub(crate) async fn applied(source: &TestSource, position: Position) {
    let want = position.as_u64();
    wait_until("change applied", WAIT, || source.acked_position() >= want).await;
}

/// An engine with `users` and `orders` on source `main`, started and ready.
pub(crate) async fn engine(source: &Arc<TestSource>) -> Engine {
    let engine = Engine::builder()
        .source("main", source.clone())
        .pipeline("main", users(), users_target(), PipelineOptions::default())
        .pipeline(
            "main",
            orders(),
            IndexedTarget::builder().build(),
            PipelineOptions::default(),
        )
        .build()
        .unwrap();
    started(&engine).await;
    engine
}

pub(crate) async fn started(engine: &Engine) {
    engine.start().await.unwrap();
    assert!(
        engine.await_ready(WAIT).await,
        "engine not ready: {:?}",
        engine.pipelines()
    );
}

/// The standard fixture: users with the given ids, the default service.
pub(crate) async fn fixture(user_ids: impl IntoIterator<Item = i64>) -> Fixture {
    fixture_with(user_ids, |service| service, |endpoint| endpoint).await
}

/// The fixture with the service and the client's endpoint configured.
pub(crate) async fn fixture_with(
    user_ids: impl IntoIterator<Item = i64>,
    configure: impl FnOnce(QueryService) -> QueryService,
    endpoint: impl FnOnce(Endpoint) -> Endpoint,
) -> Fixture {
    let source = source(user_ids);
    let engine = engine(&source).await;
    let service = configure(QueryService::new(engine.clone()));
    let client = serve_with(service.clone(), endpoint).await;
    Fixture {
        engine,
        source,
        service,
        client,
    }
}

/// Serves `service` on a loopback port and connects a client.
pub(crate) async fn serve(service: QueryService) -> Client {
    serve_with(service, |endpoint| endpoint).await
}

async fn serve_with(service: QueryService, endpoint: impl FnOnce(Endpoint) -> Endpoint) -> Client {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(service.into_server())
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
            .await
            .unwrap();
    });
    let channel = endpoint(Endpoint::from_shared(format!("http://{addr}")).unwrap())
        .connect()
        .await
        .unwrap();
    LaredoQueryServiceClient::new(channel)
}

pub(crate) fn int(v: i64) -> pb::Value {
    pb::Value::from(&laredo_core::Value::Int64(v))
}

pub(crate) fn text(s: &str) -> pb::Value {
    pb::Value::from(&laredo_core::Value::text(s))
}

/// A wire row as a laredo row.
pub(crate) fn row_of(row: &pb::Row) -> Row {
    Row::try_from(row).unwrap()
}

/// Wire rows as laredo rows sorted by `id`.
pub(crate) fn sorted(rows: &[pb::Row]) -> Vec<Row> {
    let mut rows: Vec<Row> = rows.iter().map(row_of).collect();
    rows.sort_by_key(|r| r.get_i64("id"));
    rows
}

pub(crate) fn lookup(
    table: &TableIdentifier,
    index: &str,
    key: Vec<pb::Value>,
) -> pb::LookupRequest {
    pb::LookupRequest {
        schema: table.schema().into(),
        table: table.table().into(),
        index_name: index.into(),
        key_values: key,
    }
}

pub(crate) fn lookup_all(
    table: &TableIdentifier,
    index: &str,
    key: Vec<pb::Value>,
) -> pb::LookupAllRequest {
    pb::LookupAllRequest {
        schema: table.schema().into(),
        table: table.table().into(),
        index_name: index.into(),
        key_values: key,
    }
}

pub(crate) fn get_row(table: &TableIdentifier, key: Vec<pb::Value>) -> pb::GetRowRequest {
    pb::GetRowRequest {
        schema: table.schema().into(),
        table: table.table().into(),
        primary_key: key,
    }
}

pub(crate) fn list_rows(
    table: &TableIdentifier,
    page_size: u32,
    token: &str,
) -> pb::ListRowsRequest {
    pb::ListRowsRequest {
        schema: table.schema().into(),
        table: table.table().into(),
        page_size,
        page_token: token.into(),
    }
}

pub(crate) fn count_rows(table: &TableIdentifier) -> pb::CountRowsRequest {
    pb::CountRowsRequest {
        schema: table.schema().into(),
        table: table.table().into(),
    }
}

pub(crate) fn subscribe(table: &TableIdentifier, replay_existing: bool) -> pb::SubscribeRequest {
    pb::SubscribeRequest {
        schema: table.schema().into(),
        table: table.table().into(),
        replay_existing,
    }
}
