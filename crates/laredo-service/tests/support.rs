//! Fixtures: an engine over the test source, a Query service stub whose `Lookup` waits
//! for the test, and a server started on a free loopback port.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use laredo_core::{Engine, PipelineOptions, TableIdentifier, row, table};
use laredo_proto::laredo::v1 as pb;
use laredo_proto::laredo::v1::laredo_oam_service_server::LaredoOamServiceServer;
use laredo_proto::laredo::v1::laredo_query_service_server::{
    LaredoQueryService, LaredoQueryServiceServer,
};
use laredo_service::{Error, GrpcServerBuilder};
use laredo_service_oam::{OamService, StatusEvents};
use laredo_source_test::TestSource;
use laredo_target_memory::IndexedTarget;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinHandle;
use tokio_stream::Stream;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

/// Upper bound for every wait; generous, as the machine may be busy.
pub(crate) const WAIT: Duration = Duration::from_secs(10);

pub(crate) const QUERY: &str = "laredo.v1.LaredoQueryService";
pub(crate) const OAM: &str = "laredo.v1.LaredoOAMService";

/// The count `CountRows` answers.
pub(crate) const STUB_COUNT: u64 = 42;

pub(crate) fn users() -> TableIdentifier {
    table("public", "users")
}

/// An engine (not started) streaming one table of the test source into an
/// IndexedTarget, and the status events its OAM service needs.
pub(crate) struct Fixture {
    pub(crate) engine: Engine,
    pub(crate) events: Arc<StatusEvents>,
}

pub(crate) fn fixture() -> Fixture {
    let source = TestSource::new();
    source.set_schema(
        users(),
        TestSource::columns(&[("id", "int8", true), ("name", "text", false)]),
    );
    source.add_row(users(), row! {"id" => 1, "name" => "ann"});
    let events = StatusEvents::new();
    let engine = Engine::builder()
        .source("main", source)
        .pipeline(
            "main",
            users(),
            IndexedTarget::builder().lookup_fields(["id"]).build(),
            PipelineOptions::default(),
        )
        .observer(events.clone())
        .build()
        .unwrap();
    Fixture { engine, events }
}

impl Fixture {
    pub(crate) fn oam(&self) -> LaredoOamServiceServer<OamService> {
        OamService::new(self.engine.clone(), self.events.clone()).into_server()
    }
}

/// `laredo.v1.LaredoQueryService` answering from fixed data: `Lookup` waits for a
/// permit from `release` (and counts its callers in `entered`), `CountRows` answers
/// [`STUB_COUNT`], `Subscribe` never sends anything; the rest is UNIMPLEMENTED.
#[derive(Debug)]
pub(crate) struct StubQuery {
    pub(crate) entered: watch::Sender<usize>,
    pub(crate) release: Semaphore,
}

impl StubQuery {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Self {
            entered: watch::Sender::new(0),
            release: Semaphore::new(0),
        })
    }

    /// Waits until `count` `Lookup` calls are in the service.
    pub(crate) async fn wait_entered(&self, count: usize) {
        let mut rx = self.entered.subscribe();
        tokio::time::timeout(WAIT, rx.wait_for(|n| *n >= count))
            .await
            .expect("lookup calls arrived")
            .unwrap();
    }
}

/// Lets the stub be served through an `Arc` the test keeps.
#[derive(Debug, Clone)]
pub(crate) struct SharedStub(pub(crate) Arc<StubQuery>);

pub(crate) fn query_server(stub: &Arc<StubQuery>) -> LaredoQueryServiceServer<SharedStub> {
    LaredoQueryServiceServer::new(SharedStub(stub.clone()))
}

type EventStream = Pin<Box<dyn Stream<Item = Result<pb::SubscribeResponse, Status>> + Send>>;

#[tonic::async_trait]
impl LaredoQueryService for SharedStub {
    async fn lookup(
        &self,
        _: Request<pb::LookupRequest>,
    ) -> Result<Response<pb::LookupResponse>, Status> {
        self.0.entered.send_modify(|n| *n += 1);
        self.0.release.acquire().await.unwrap().forget();
        Ok(Response::new(pb::LookupResponse {
            found: true,
            row: None,
        }))
    }

    async fn lookup_all(
        &self,
        _: Request<pb::LookupAllRequest>,
    ) -> Result<Response<pb::LookupAllResponse>, Status> {
        Err(Status::unimplemented("stub"))
    }

    async fn get_row(
        &self,
        _: Request<pb::GetRowRequest>,
    ) -> Result<Response<pb::GetRowResponse>, Status> {
        Err(Status::unimplemented("stub"))
    }

    async fn list_rows(
        &self,
        _: Request<pb::ListRowsRequest>,
    ) -> Result<Response<pb::ListRowsResponse>, Status> {
        Err(Status::unimplemented("stub"))
    }

    async fn count_rows(
        &self,
        _: Request<pb::CountRowsRequest>,
    ) -> Result<Response<pb::CountRowsResponse>, Status> {
        Ok(Response::new(pb::CountRowsResponse { count: STUB_COUNT }))
    }

    type SubscribeStream = EventStream;

    async fn subscribe(
        &self,
        _: Request<pb::SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        Ok(Response::new(Box::pin(tokio_stream::pending())))
    }
}

/// A server serving in a task of its own.
pub(crate) struct Running {
    pub(crate) addr: SocketAddr,
    pub(crate) shutdown: CancellationToken,
    pub(crate) handle: JoinHandle<Result<(), Error>>,
}

impl Running {
    /// Begins shutdown and waits for `serve` to return.
    pub(crate) async fn stop(self) -> Result<(), Error> {
        self.shutdown.cancel();
        self.finished().await
    }

    /// Waits for `serve` to return.
    pub(crate) async fn finished(self) -> Result<(), Error> {
        tokio::time::timeout(WAIT, self.handle)
            .await
            .expect("serve returned")
            .expect("serve did not panic")
    }
}

/// Binds `builder` to a free loopback port and serves it, in insecure mode unless the
/// builder has tokens (then they are enforced).
pub(crate) async fn start(builder: GrpcServerBuilder) -> Running {
    let server = builder
        .insecure(true)
        .listen("127.0.0.1:0".parse().unwrap())
        .bind()
        .await
        .unwrap();
    let addr = server.local_addr();
    assert_ne!(addr.port(), 0);
    let shutdown = CancellationToken::new();
    let handle = tokio::spawn(server.serve(shutdown.clone().cancelled_owned()));
    Running {
        addr,
        shutdown,
        handle,
    }
}

/// A plaintext HTTP/2 channel to `addr`.
pub(crate) async fn channel(addr: SocketAddr) -> Channel {
    Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap()
}
