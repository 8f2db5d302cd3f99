//! The gRPC server host of laredo: one port that serves the services other crates
//! provide (OAM, Query, ...) together with the standard gRPC health and reflection
//! services, optional TLS, bearer-token protection for admin methods, gRPC-Web for
//! browsers, and a graceful shutdown with a drain deadline.
//!
//! It sits at the edge of the data path, beside the engine: the services read the
//! [`Engine`](laredo_core::Engine) and its targets; this crate only hosts them. It does
//! not start or stop the engine, it follows its readiness:
//!
//! - **Health** (`grpc.health.v1.Health`): the overall status (service `""`) and one
//!   status per hosted service are `NOT_SERVING` until the engine is ready, `SERVING`
//!   while it is, `NOT_SERVING` again when it stops being ready (a pipeline in ERROR,
//!   the engine stopped) and from the moment shutdown begins.
//! - **Reflection** (`grpc.reflection.v1` and `v1alpha`), from
//!   [`laredo_proto::FILE_DESCRIPTOR_SET`] and the health service's descriptor, so
//!   `grpcurl` needs no proto files. It lists the hosted services, health and
//!   reflection.
//! - **Roles** (secure by default): [admin tokens](GrpcServerBuilder::admin_token) may
//!   call every method; [read tokens](GrpcServerBuilder::read_token) every method but
//!   the [admin methods](GrpcServerBuilder::admin_methods) ([`OAM_ADMIN_METHODS`], the
//!   OAM methods that change something, plus any configured). Calls send
//!   `authorization: Bearer <token>`, compared in constant time; a missing or unknown
//!   token answers `UNAUTHENTICATED`, a read token on an admin method
//!   `PERMISSION_DENIED`. The health service stays open for probes. Without any token
//!   [`bind`](GrpcServerBuilder::bind) refuses to start unless
//!   [`insecure`](GrpcServerBuilder::insecure) is set explicitly, which opens every
//!   method and logs a warning at every start.
//! - **gRPC-Web** ([`grpc_web`](GrpcServerBuilder::grpc_web)): HTTP/1.1 and
//!   `application/grpc-web(-text)` requests are translated by `tonic-web`, with CORS for
//!   browsers (only the [listed origins](GrpcServerBuilder::cors_allowed_origins); none by
//!   default).
//! - **TLS** ([`tls`](GrpcServerBuilder::tls), feature `tls`): certificate chain and
//!   key from PEM files, TLS 1.2 or 1.3. A file that cannot be read or parsed, or a key
//!   that does not match the certificate, fails [`bind`](GrpcServerBuilder::bind) with
//!   an error naming the file; the server never falls back to plaintext.
//! - **Limits** ([`limits`](GrpcServerBuilder::limits)): connections per port, streams
//!   per connection, header size, HTTP/2 keepalive, the rapid-reset guards (resets
//!   before accept, protocol-error resets, cancelled calls per connection), a timeout on
//!   unary calls, an idle timeout and TCP keepalive, each with a sound default (see
//!   [`Limits`]). Hitting one answers a gRPC status naming it, or ends the offending
//!   connection, while other clients keep being served.
//! - **Shutdown**: when the future given to [`serve`](GrpcServer::serve) completes, the
//!   health statuses go to `NOT_SERVING`, the listener closes, and in-flight calls get
//!   the [drain timeout](GrpcServerBuilder::drain_timeout) to finish before their
//!   connections are closed.
//!
//! | Feature | Default | Effect |
//! |---|---|---|
//! | `tls` | on | [`GrpcServerBuilder::tls`]: rustls with the aws-lc-rs provider (tonic's `tls-aws-lc`) |
//!
//! ```
//! use std::time::Duration;
//!
//! use laredo_core::{Engine, PipelineOptions, table};
//! use laredo_service::{GrpcServer, Limits};
//! use laredo_service_oam::{OamService, StatusEvents};
//! use laredo_source_test::TestSource;
//! use laredo_target_memory::IndexedTarget;
//! use tokio_util::sync::CancellationToken;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let events = StatusEvents::new();
//! let engine = Engine::builder()
//!     .source("main", TestSource::new())
//!     .pipeline("main", table("public", "users"), IndexedTarget::builder().build(),
//!               PipelineOptions::default())
//!     .observer(events.clone())
//!     .build()?;
//!
//! let server = GrpcServer::builder(engine.clone())
//!     .listen("127.0.0.1:0".parse()?)
//!     .add_service(OamService::new(engine.clone(), events).into_server())
//!     .admin_token("s3cret")
//!     .read_token("r3ad")
//!     .limits(Limits::default())
//!     .grpc_web(true)
//!     .drain_timeout(Duration::from_secs(10))
//!     .bind()
//!     .await?;
//! println!("serving on {}", server.local_addr());
//!
//! let shutdown = CancellationToken::new();
//! let serving = tokio::spawn(server.serve(shutdown.clone().cancelled_owned()));
//! engine.start().await?;
//! // ... until SIGTERM:
//! shutdown.cancel();
//! serving.await??;
//! engine.stop().await?;
//! # Ok(())
//! # }
//! ```

mod auth;
mod calls;
mod connection;
mod error;
mod health;
mod limits;
mod server;
#[cfg(feature = "tls")]
mod tls;
mod web;

pub use crate::auth::OAM_ADMIN_METHODS;
pub use crate::error::Error;
pub use crate::limits::Limits;
pub use crate::server::{
    DEFAULT_ADDR, DEFAULT_DRAIN_TIMEOUT, DEFAULT_READINESS_POLL_INTERVAL, GrpcServer,
    GrpcServerBuilder,
};
