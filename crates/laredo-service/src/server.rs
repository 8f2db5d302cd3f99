//! [`GrpcServerBuilder`] collects the services and settings; [`GrpcServer`] is the bound
//! server, and [`GrpcServer::serve`] runs it until shutdown.
//!
//! Request path, outermost first: CORS and gRPC-Web translation (when enabled), the
//! admin-token check, then tonic's router to the service. Shutdown, in order: health
//! NOT_SERVING, the listener closes and HTTP/2 connections get GOAWAY (tonic's graceful
//! shutdown), in-flight calls run until the drain deadline, then the remaining
//! connections are closed.

use std::convert::Infallible;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
#[cfg(feature = "tls")]
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use laredo_core::{ConfigError, ConfigErrors, Engine};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic::body::Body;
use tonic::server::NamedService;
use tonic::service::Routes;
use tonic::transport::Server;
use tonic::transport::server::TcpConnectInfo;
use tower::{Layer, Service};

use crate::auth::{AdminAuthLayer, AdminPolicy, OAM_ADMIN_METHODS};
use crate::connection;
use crate::error::Error;
use crate::health::{self, Health};
use crate::http2;
#[cfg(feature = "tls")]
use crate::tls::{self, TlsFiles};
use crate::web;

/// Where the server listens unless told otherwise: every interface, port 4001.
pub const DEFAULT_ADDR: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 4001);

/// How long in-flight calls may run after shutdown begins, unless told otherwise.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// How often a ready engine is checked for having become not ready, unless told
/// otherwise. Becoming ready is noticed at once.
pub const DEFAULT_READINESS_POLL_INTERVAL: Duration = Duration::from_secs(1);

/// After the drain deadline, how long closing the remaining connections may take before
/// `serve` returns regardless.
const FORCE_CLOSE_GRACE: Duration = Duration::from_secs(5);

const HEALTH_SERVICE: &str = "grpc.health.v1.Health";
const REFLECTION_V1_SERVICE: &str = "grpc.reflection.v1.ServerReflection";
const REFLECTION_V1ALPHA_SERVICE: &str = "grpc.reflection.v1alpha.ServerReflection";

/// The HTTP/2 implementation that serves a [`GrpcServer`]'s connections.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Transport {
    /// tonic's transport (hyper and h2): HTTP/2, HTTP/1.1 for gRPC-Web, TLS. Its
    /// buffers take about 40 KiB per connection, idle or not.
    #[default]
    Standard,
    /// laredo's own lean HTTP/2 server: cleartext HTTP/2 with prior knowledge (what
    /// gRPC clients speak without TLS), a few KiB per idle connection and less CPU per
    /// message. For ports that hold thousands of long-lived streams, such as the
    /// replication fan-out. Neither TLS nor gRPC-Web: [`bind`](GrpcServerBuilder::bind)
    /// reports either with it as a configuration error. Server-side `grpc-timeout`
    /// deadlines are not enforced on it.
    Lean,
}

/// Builds a [`GrpcServer`]; start with [`GrpcServer::builder`].
pub struct GrpcServerBuilder {
    engine: Engine,
    routes: Routes,
    service_names: Vec<&'static str>,
    duplicate_services: Vec<&'static str>,
    addr: SocketAddr,
    #[cfg(feature = "tls")]
    tls: Option<TlsFiles>,
    admin_token: Option<String>,
    admin_methods: Option<Vec<String>>,
    grpc_web: bool,
    cors_origins: Vec<String>,
    drain_timeout: Duration,
    readiness_poll_interval: Duration,
    descriptor_sets: Vec<&'static [u8]>,
    transport: Transport,
}

impl fmt::Debug for GrpcServerBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut debug = f.debug_struct("GrpcServerBuilder");
        debug
            .field("services", &self.service_names)
            .field("addr", &self.addr);
        #[cfg(feature = "tls")]
        debug.field("tls", &self.tls);
        debug
            .field("admin_token", &self.admin_token.as_ref().map(|_| "***"))
            .field("admin_methods", &self.admin_methods)
            .field("grpc_web", &self.grpc_web)
            .field("cors_origins", &self.cors_origins)
            .field("drain_timeout", &self.drain_timeout)
            .field("readiness_poll_interval", &self.readiness_poll_interval)
            .field("transport", &self.transport)
            .finish_non_exhaustive()
    }
}

impl GrpcServerBuilder {
    fn new(engine: Engine) -> Self {
        Self {
            engine,
            routes: Routes::default(),
            service_names: Vec::new(),
            duplicate_services: Vec::new(),
            addr: DEFAULT_ADDR,
            #[cfg(feature = "tls")]
            tls: None,
            admin_token: None,
            admin_methods: None,
            grpc_web: false,
            cors_origins: Vec::new(),
            drain_timeout: DEFAULT_DRAIN_TIMEOUT,
            readiness_poll_interval: DEFAULT_READINESS_POLL_INTERVAL,
            descriptor_sets: vec![
                laredo_proto::FILE_DESCRIPTOR_SET,
                tonic_health::pb::FILE_DESCRIPTOR_SET,
            ],
            transport: Transport::Standard,
        }
    }

    /// Hosts a tonic service (a generated `...Server<T>`, possibly wrapped by an
    /// interceptor), routed by its name (`/package.Service/Method`). Its health status
    /// follows the engine's readiness, and reflection lists it.
    ///
    /// A second service with the same name, or one named like the health or reflection
    /// services, is a configuration error reported by [`bind`](Self::bind).
    pub fn add_service<S>(mut self, service: S) -> Self
    where
        S: Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>
            + NamedService
            + Clone
            + Send
            + Sync
            + 'static,
        S::Future: Send + 'static,
    {
        let name = S::NAME;
        if self.service_names.contains(&name) || is_builtin_service(name) {
            self.duplicate_services.push(name);
            return self;
        }
        self.service_names.push(name);
        self.routes = self.routes.add_service(service);
        self
    }

    /// The address to listen on ([`DEFAULT_ADDR`] by default); port 0 picks a free port,
    /// reported by [`GrpcServer::local_addr`].
    pub fn listen(mut self, addr: SocketAddr) -> Self {
        self.addr = addr;
        self
    }

    /// Serves TLS (1.2 or 1.3) with the PEM certificate chain at `cert_path` and the
    /// PEM private key (PKCS#8, PKCS#1 or SEC1) at `key_path`. Both are read and
    /// checked by [`bind`](Self::bind); a problem is an error naming the file, never a
    /// plaintext fallback.
    #[cfg(feature = "tls")]
    pub fn tls(mut self, cert_path: impl Into<PathBuf>, key_path: impl Into<PathBuf>) -> Self {
        self.tls = Some(TlsFiles {
            cert_path: cert_path.into(),
            key_path: key_path.into(),
        });
        self
    }

    /// Protects the [admin methods](Self::admin_methods) with this bearer token: a call
    /// needs `authorization: Bearer <token>` or fails with `UNAUTHENTICATED`. Without a
    /// token every method is open.
    pub fn admin_token(mut self, token: impl Into<String>) -> Self {
        self.admin_token = Some(token.into());
        self
    }

    /// The method paths that need the [admin token](Self::admin_token), replacing the
    /// default [`OAM_ADMIN_METHODS`]. An entry is a method path
    /// (`/laredo.v1.LaredoOAMService/ReloadTable`) or a service path ending in `/`
    /// (`/laredo.v1.LaredoOAMService/`: all its methods). Setting this without a token
    /// is a configuration error, as the methods would stay open.
    pub fn admin_methods<I>(mut self, methods: I) -> Self
    where
        I: IntoIterator,
        I::Item: Into<String>,
    {
        self.admin_methods = Some(methods.into_iter().map(Into::into).collect());
        self
    }

    /// Also accepts gRPC-Web (HTTP/1.1, `application/grpc-web` and
    /// `application/grpc-web-text`) so browsers can call the services, with CORS
    /// answers for them. Off by default.
    pub fn grpc_web(mut self, enabled: bool) -> Self {
        self.grpc_web = enabled;
        self
    }

    /// Restricts gRPC-Web CORS to these origins (`https://console.example.com`); by
    /// default any origin may call. Credentials are never implied: the admin token is
    /// sent explicitly by the caller.
    pub fn cors_allowed_origins<I>(mut self, origins: I) -> Self
    where
        I: IntoIterator,
        I::Item: Into<String>,
    {
        self.cors_origins = origins.into_iter().map(Into::into).collect();
        self
    }

    /// How long in-flight calls may run once shutdown begins before their connections
    /// are closed ([`DEFAULT_DRAIN_TIMEOUT`] by default). Long streams (watches,
    /// subscriptions) only end this way.
    pub fn drain_timeout(mut self, timeout: Duration) -> Self {
        self.drain_timeout = timeout;
        self
    }

    /// How often a ready engine is checked for having become not ready
    /// ([`DEFAULT_READINESS_POLL_INTERVAL`] by default).
    pub fn readiness_poll_interval(mut self, interval: Duration) -> Self {
        self.readiness_poll_interval = interval;
        self
    }

    /// The HTTP/2 implementation to serve with ([`Transport::Standard`] by default).
    pub fn transport(mut self, transport: Transport) -> Self {
        self.transport = transport;
        self
    }

    /// Adds an encoded `FileDescriptorSet` to reflection, for hosted services that are
    /// not in [`laredo_proto::FILE_DESCRIPTOR_SET`] (which, with the health service's,
    /// is always there).
    pub fn file_descriptor_set(mut self, encoded: &'static [u8]) -> Self {
        self.descriptor_sets.push(encoded);
        self
    }

    /// Checks the configuration (reporting every problem at once), loads TLS, builds
    /// health and reflection, and binds the listen address. Health reads NOT_SERVING
    /// until [`GrpcServer::serve`] sees the engine ready.
    ///
    /// # Errors
    /// [`Error::Config`] with every configuration problem (duplicate services, an empty
    /// admin token, a malformed admin method path or CORS origin, unreadable or
    /// invalid TLS files, ...), [`Error::Reflection`] for an invalid descriptor set,
    /// [`Error::Bind`] when the address cannot be bound.
    pub async fn bind(self) -> Result<GrpcServer, Error> {
        let mut errors = Vec::new();
        for name in &self.duplicate_services {
            errors.push(ConfigError::at(
                "services",
                format!("{name} is added more than once or is a built-in service"),
            ));
        }
        let admin = self.admin_policy(&mut errors);
        let cors_origins = self.cors_origins(&mut errors);
        if self.transport == Transport::Lean {
            if self.grpc_web {
                errors.push(ConfigError::at(
                    "transport",
                    "the lean transport serves HTTP/2 only: gRPC-Web needs the standard transport",
                ));
            }
            #[cfg(feature = "tls")]
            if self.tls.is_some() {
                errors.push(ConfigError::at(
                    "transport",
                    "the lean transport serves cleartext only: TLS needs the standard transport",
                ));
            }
        }
        let server = Server::builder().accept_http1(self.grpc_web);
        #[cfg(feature = "tls")]
        let server = match &self.tls {
            Some(files) => tls::configure(server, files, &mut errors).await,
            None => Some(server),
        };
        #[cfg(not(feature = "tls"))]
        let server = Some(server);
        let server = match server {
            Some(server) if errors.is_empty() => server,
            _ => return Err(ConfigErrors(errors).into()),
        };

        let reflection_v1 = self.reflection_v1()?;
        let reflection_v1alpha = self.reflection_v1alpha()?;
        let (reporter, health_service) = tonic_health::server::health_reporter();
        let health = Health::new(reporter, self.service_names.clone()).await;
        let routes = self
            .routes
            .add_service(health_service)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha);

        let listener = TcpListener::bind(self.addr)
            .await
            .map_err(|source| Error::Bind {
                addr: self.addr,
                source,
            })?;
        let local_addr = listener.local_addr().map_err(|source| Error::Bind {
            addr: self.addr,
            source,
        })?;
        Ok(GrpcServer {
            engine: self.engine,
            server,
            routes,
            listener,
            local_addr,
            health,
            service_names: self.service_names,
            admin,
            grpc_web: self.grpc_web,
            cors_origins,
            #[cfg(feature = "tls")]
            tls: self.tls.is_some(),
            drain_timeout: self.drain_timeout,
            readiness_poll_interval: self.readiness_poll_interval,
            transport: self.transport,
        })
    }

    fn admin_policy(&self, errors: &mut Vec<ConfigError>) -> Option<Arc<AdminPolicy>> {
        match (&self.admin_token, &self.admin_methods) {
            (Some(token), Some(methods)) => AdminPolicy::new(token, methods, errors),
            (Some(token), None) => {
                let defaults: Vec<String> =
                    OAM_ADMIN_METHODS.iter().map(|m| (*m).to_string()).collect();
                AdminPolicy::new(token, &defaults, errors)
            }
            (None, Some(_)) => {
                errors.push(ConfigError::at(
                    "admin_methods",
                    "set without admin_token: the admin methods would be open",
                ));
                None
            }
            (None, None) => None,
        }
        .map(Arc::new)
    }

    fn cors_origins(&self, errors: &mut Vec<ConfigError>) -> Vec<http::HeaderValue> {
        let mut origins = Vec::new();
        for (idx, origin) in self.cors_origins.iter().enumerate() {
            match http::HeaderValue::from_str(origin) {
                Ok(value) if origin.contains("://") => origins.push(value),
                _ => errors.push(ConfigError::at(
                    format!("cors_allowed_origins[{idx}]"),
                    format!("{origin:?} is not an origin (\"https://host[:port]\")"),
                )),
            }
        }
        origins
    }

    /// Reflection advertises what this server hosts, not every service in the
    /// descriptor sets (the replication service, for one, has a listener of its own).
    fn reflection_builder(
        &self,
        reflection_service: &str,
    ) -> tonic_reflection::server::Builder<'static> {
        let mut builder = tonic_reflection::server::Builder::configure();
        for set in self.descriptor_sets.iter().copied() {
            builder = builder.register_encoded_file_descriptor_set(set);
        }
        for name in self
            .service_names
            .iter()
            .copied()
            .chain([HEALTH_SERVICE, reflection_service])
        {
            builder = builder.with_service_name(name);
        }
        builder
    }

    fn reflection_v1(
        &self,
    ) -> Result<
        tonic_reflection::pb::v1::server_reflection_server::ServerReflectionServer<
            impl tonic_reflection::pb::v1::server_reflection_server::ServerReflection,
        >,
        Error,
    > {
        self.reflection_builder(REFLECTION_V1_SERVICE)
            .build_v1()
            .map_err(|source| Error::Reflection { source })
    }

    fn reflection_v1alpha(
        &self,
    ) -> Result<
        tonic_reflection::pb::v1alpha::server_reflection_server::ServerReflectionServer<
            impl tonic_reflection::pb::v1alpha::server_reflection_server::ServerReflection,
        >,
        Error,
    > {
        self.reflection_builder(REFLECTION_V1ALPHA_SERVICE)
            .build_v1alpha()
            .map_err(|source| Error::Reflection { source })
    }
}

fn is_builtin_service(name: &str) -> bool {
    [
        HEALTH_SERVICE,
        REFLECTION_V1_SERVICE,
        REFLECTION_V1ALPHA_SERVICE,
    ]
    .contains(&name)
}

/// A bound gRPC server; see the crate docs. Serve it with [`GrpcServer::serve`].
pub struct GrpcServer {
    engine: Engine,
    server: Server,
    routes: Routes,
    listener: TcpListener,
    local_addr: SocketAddr,
    health: Health,
    service_names: Vec<&'static str>,
    admin: Option<Arc<AdminPolicy>>,
    grpc_web: bool,
    cors_origins: Vec<http::HeaderValue>,
    #[cfg(feature = "tls")]
    tls: bool,
    drain_timeout: Duration,
    readiness_poll_interval: Duration,
    transport: Transport,
}

impl fmt::Debug for GrpcServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GrpcServer")
            .field("local_addr", &self.local_addr)
            .field("services", &self.service_names)
            .field("admin", &self.admin)
            .field("grpc_web", &self.grpc_web)
            .field("drain_timeout", &self.drain_timeout)
            .field("transport", &self.transport)
            .finish_non_exhaustive()
    }
}

impl GrpcServer {
    /// Starts building a server whose health follows `engine`'s readiness.
    pub fn builder(engine: Engine) -> GrpcServerBuilder {
        GrpcServerBuilder::new(engine)
    }

    /// The bound address (the real port when the builder was given port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Serves until `shutdown` completes (for a `CancellationToken`, pass
    /// `token.cancelled_owned()`), then shuts down gracefully: health goes NOT_SERVING,
    /// the listener closes, in-flight calls may finish until the drain timeout, and the
    /// connections left are closed. Returns once every connection is closed.
    ///
    /// # Errors
    /// [`Error::Serve`] when the server fails.
    ///
    /// # Cancel safety
    /// Complete `shutdown` instead of dropping this future: dropping it closes the
    /// listener and stops the health updates, but connections already accepted keep
    /// running in their own tasks, undrained.
    #[tracing::instrument(skip_all, fields(addr = %self.local_addr))]
    pub async fn serve<F>(self, shutdown: F) -> Result<(), Error>
    where
        F: Future<Output = ()>,
    {
        let Self {
            engine,
            server,
            routes,
            listener,
            local_addr,
            health,
            service_names,
            admin,
            grpc_web,
            cors_origins,
            #[cfg(feature = "tls")]
            tls,
            drain_timeout,
            readiness_poll_interval,
            transport,
        } = self;
        #[cfg(not(feature = "tls"))]
        let tls = false;
        tracing::info!(
            services = ?service_names,
            tls,
            grpc_web,
            ?transport,
            admin_methods = admin.as_ref().map_or(0, |a| a.method_count()),
            "grpc server listening"
        );
        if admin.is_none() {
            tracing::info!("no admin token configured: admin methods are open");
        }

        let follower_stop = CancellationToken::new();
        // Should this future be dropped, the follower stops with it.
        let _follower_guard = follower_stop.clone().drop_guard();
        let follower = tokio::spawn(health::follow_readiness(
            engine,
            health.clone(),
            readiness_poll_interval,
            follower_stop.clone(),
        ));
        let draining = CancellationToken::new();
        let force_close = CancellationToken::new();
        let signal = {
            let health = health.clone();
            let draining = draining.clone();
            async move {
                shutdown.await;
                health.drain().await;
                tracing::info!(?drain_timeout, "grpc server draining");
                draining.cancel();
            }
        };

        let auth = AdminAuthLayer::new(admin);
        let served = if transport == Transport::Lean {
            let service = auth.layer(routes.prepare());
            let serving = serve_lean(listener, service, signal, &draining, &force_close);
            drain(serving, &draining, &force_close, drain_timeout)
                .await
                .map_err(|never: Infallible| match never {})
        } else if grpc_web {
            let incoming = connection::incoming(listener, force_close.clone());
            let serving = server
                .layer(web::cors_layer(cors_origins))
                .layer(tonic_web::GrpcWebLayer::new())
                .layer(auth)
                .add_routes(routes)
                .serve_with_incoming_shutdown(incoming, signal);
            drain(serving, &draining, &force_close, drain_timeout).await
        } else {
            let incoming = connection::incoming(listener, force_close.clone());
            let serving = server
                .layer(auth)
                .add_routes(routes)
                .serve_with_incoming_shutdown(incoming, signal);
            drain(serving, &draining, &force_close, drain_timeout).await
        };

        follower_stop.cancel();
        if let Err(e) = follower.await {
            tracing::error!(error = %e, "health follower task panicked");
        }
        // Also when serving failed rather than shut down.
        health.drain().await;
        match served {
            Ok(()) => {
                tracing::info!("grpc server stopped");
                Ok(())
            }
            Err(source) => Err(Error::Serve {
                addr: local_addr,
                source,
            }),
        }
    }
}

/// Accepts connections and serves each with the lean HTTP/2 server in a task of its own
/// until `signal` completes (it cancels `draining`, which sends every connection GOAWAY);
/// then waits for the connections to finish. [`drain`] bounds that wait.
async fn serve_lean<S, F>(
    listener: TcpListener,
    service: S,
    signal: F,
    draining: &CancellationToken,
    force_close: &CancellationToken,
) -> Result<(), Infallible>
where
    S: Service<http::Request<http2::RecvBody>, Response = http::Response<Body>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    F: Future<Output = ()>,
{
    let connections = TaskTracker::new();
    let config = http2::Config::default();
    let mut signal = std::pin::pin!(signal);
    loop {
        let (stream, remote_addr) = tokio::select! {
            () = &mut signal => break,
            accepted = connection::accept(&listener) => match accepted {
                Ok(accepted) => accepted,
                Err(_) => continue,
            },
        };
        let info = TcpConnectInfo {
            local_addr: stream.local_addr().ok(),
            remote_addr: Some(remote_addr),
        };
        let serving = http2::serve(
            stream,
            service.clone(),
            config,
            Some(info),
            draining.child_token(),
            force_close.child_token(),
        );
        connections.spawn(async move {
            if let Err(e) = serving.await {
                tracing::debug!(error = %e, %remote_addr, "connection ended with an error");
            }
        });
    }
    drop(listener);
    connections.close();
    // `signal` has cancelled `draining`: every connection has been sent GOAWAY.
    connections.wait().await;
    Ok(())
}

/// Runs `serving` to its end; once `draining` is cancelled and `drain_timeout` has
/// passed, closes the connections left and gives them [`FORCE_CLOSE_GRACE`] to go.
async fn drain<F, E>(
    serving: F,
    draining: &CancellationToken,
    force_close: &CancellationToken,
    drain_timeout: Duration,
) -> Result<(), E>
where
    F: Future<Output = Result<(), E>>,
{
    let mut serving = std::pin::pin!(serving);
    let deadline = async {
        draining.cancelled().await;
        tokio::time::sleep(drain_timeout).await;
    };
    tokio::select! {
        served = &mut serving => return served,
        () = deadline => {}
    }
    tracing::warn!(
        ?drain_timeout,
        "drain deadline passed: closing the remaining connections"
    );
    force_close.cancel();
    match tokio::time::timeout(FORCE_CLOSE_GRACE, serving).await {
        Ok(served) => served,
        Err(_) => {
            tracing::warn!("connections still open after closing them: returning anyway");
            Ok(())
        }
    }
}
