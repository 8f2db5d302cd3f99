//! [`GrpcServerBuilder`] collects the services and settings; [`GrpcServer`] is the bound
//! server, and [`GrpcServer::serve`] runs it until shutdown.
//!
//! Request path, outermost first: call tracking (the connection's idle timer and
//! cancelled calls, the connection limit's answer, the request timeout), CORS and
//! gRPC-Web translation (when enabled), the token check, then tonic's router to the service. Shutdown, in order: health
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
use tonic::body::Body;
use tonic::server::NamedService;
use tonic::service::Routes;
use tonic::transport::Server;
use tower::Service;

use crate::auth::{AuthLayer, AuthPolicy};
use crate::calls::CallTrackingLayer;
use crate::connection;
use crate::error::Error;
use crate::health::{self, Health};
use crate::limits::Limits;
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

/// Builds a [`GrpcServer`]; start with [`GrpcServer::builder`].
pub struct GrpcServerBuilder {
    engine: Engine,
    routes: Routes,
    service_names: Vec<&'static str>,
    duplicate_services: Vec<&'static str>,
    addr: SocketAddr,
    #[cfg(feature = "tls")]
    tls: Option<TlsFiles>,
    admin_tokens: Vec<String>,
    read_tokens: Vec<String>,
    admin_methods: Vec<String>,
    insecure: bool,
    grpc_web: bool,
    cors_origins: Vec<String>,
    drain_timeout: Duration,
    readiness_poll_interval: Duration,
    descriptor_sets: Vec<&'static [u8]>,
    limits: Limits,
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
            .field("admin_tokens", &self.admin_tokens.len())
            .field("read_tokens", &self.read_tokens.len())
            .field("admin_methods", &self.admin_methods)
            .field("insecure", &self.insecure)
            .field("grpc_web", &self.grpc_web)
            .field("cors_origins", &self.cors_origins)
            .field("drain_timeout", &self.drain_timeout)
            .field("readiness_poll_interval", &self.readiness_poll_interval)
            .field("limits", &self.limits)
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
            admin_tokens: Vec::new(),
            read_tokens: Vec::new(),
            admin_methods: Vec::new(),
            insecure: false,
            grpc_web: false,
            cors_origins: Vec::new(),
            drain_timeout: DEFAULT_DRAIN_TIMEOUT,
            readiness_poll_interval: DEFAULT_READINESS_POLL_INTERVAL,
            descriptor_sets: vec![
                laredo_proto::FILE_DESCRIPTOR_SET,
                tonic_health::pb::FILE_DESCRIPTOR_SET,
            ],
            limits: Limits::default(),
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

    /// Adds a token of the **admin** role: a call with `authorization: Bearer <token>`
    /// may call every method. Call it again for more tokens (rotation: the old and the
    /// new one both work until the old one is removed).
    pub fn admin_token(mut self, token: impl Into<String>) -> Self {
        self.admin_tokens.push(token.into());
        self
    }

    /// Adds a token of the **read** role: every method but the
    /// [admin methods](Self::admin_methods) (Query, fan-out `Sync`, the OAM reads,
    /// reflection). Call it again for more tokens.
    pub fn read_token(mut self, token: impl Into<String>) -> Self {
        self.read_tokens.push(token.into());
        self
    }

    /// Method paths that need the admin role **in addition to** [`OAM_ADMIN_METHODS`]
    /// (the OAM methods that change something). An entry is a method path
    /// (`/laredo.v1.LaredoQueryService/ListRows`) or a service path ending in `/`
    /// (`/laredo.v1.LaredoQueryService/`: all its methods).
    ///
    /// [`OAM_ADMIN_METHODS`]: crate::OAM_ADMIN_METHODS
    pub fn admin_methods<I>(mut self, methods: I) -> Self
    where
        I: IntoIterator,
        I::Item: Into<String>,
    {
        self.admin_methods
            .extend(methods.into_iter().map(Into::into));
        self
    }

    /// Serves every method without authentication when no token is configured. Off by
    /// default: [`bind`](Self::bind) then refuses a server without any token. Meant for
    /// a laptop or a demo; every start logs a warning. Tokens that are configured are
    /// still enforced.
    pub fn insecure(mut self, insecure: bool) -> Self {
        self.insecure = insecure;
        self
    }

    /// Also accepts gRPC-Web (HTTP/1.1, `application/grpc-web` and
    /// `application/grpc-web-text`) so browsers can call the services, with CORS
    /// answers for them. Off by default.
    pub fn grpc_web(mut self, enabled: bool) -> Self {
        self.grpc_web = enabled;
        self
    }

    /// The origins (`https://console.example.com`) whose browsers may call over gRPC-Web
    /// (CORS). None by default: an empty list allows no origin. Credentials are never
    /// implied: the token is sent explicitly by the caller.
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

    /// The port's [`Limits`] ([`Limits::default`] unless told otherwise).
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
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
        let auth = self.auth_policy(&mut errors);
        let cors_origins = self.cors_origins(&mut errors);
        self.limits.check(&mut errors);
        let limits = &self.limits;
        let server = Server::builder()
            .accept_http1(self.grpc_web)
            .max_concurrent_streams(limits.max_concurrent_streams)
            .http2_max_header_list_size(limits.max_header_list_size)
            .http2_keepalive_interval(limits.keepalive_interval)
            .http2_keepalive_timeout(Some(limits.keepalive_timeout))
            .http2_max_pending_accept_reset_streams(Some(limits.max_pending_accept_reset_streams))
            .http2_max_local_error_reset_streams(Some(limits.max_local_error_reset_streams));
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
            auth,
            grpc_web: self.grpc_web,
            cors_origins,
            #[cfg(feature = "tls")]
            tls: self.tls.is_some(),
            drain_timeout: self.drain_timeout,
            readiness_poll_interval: self.readiness_poll_interval,
            limits: self.limits,
        })
    }

    fn auth_policy(&self, errors: &mut Vec<ConfigError>) -> Option<Arc<AuthPolicy>> {
        if self.admin_tokens.is_empty() && self.read_tokens.is_empty() {
            if !self.insecure {
                errors.push(ConfigError::at(
                    "admin_token",
                    "no token is configured: set an admin token (and read tokens), or set \
                     insecure to serve every method, ResetSource included, to anyone",
                ));
            } else if !self.admin_methods.is_empty() {
                errors.push(ConfigError::at(
                    "admin_methods",
                    "set without any token: the admin methods would be open",
                ));
            }
            return None;
        }
        AuthPolicy::new(
            &self.admin_tokens,
            &self.read_tokens,
            &self.admin_methods,
            errors,
        )
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
    auth: Option<Arc<AuthPolicy>>,
    grpc_web: bool,
    cors_origins: Vec<http::HeaderValue>,
    #[cfg(feature = "tls")]
    tls: bool,
    drain_timeout: Duration,
    readiness_poll_interval: Duration,
    limits: Limits,
}

impl fmt::Debug for GrpcServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GrpcServer")
            .field("local_addr", &self.local_addr)
            .field("services", &self.service_names)
            .field("auth", &self.auth)
            .field("grpc_web", &self.grpc_web)
            .field("drain_timeout", &self.drain_timeout)
            .field("limits", &self.limits)
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
            auth,
            grpc_web,
            cors_origins,
            #[cfg(feature = "tls")]
            tls,
            drain_timeout,
            readiness_poll_interval,
            limits,
        } = self;
        #[cfg(not(feature = "tls"))]
        let tls = false;
        tracing::info!(
            services = ?service_names,
            tls,
            grpc_web,
            max_connections = limits.max_connections,
            admin_methods = auth.as_ref().map_or(0, |a| a.method_count()),
            admin_tokens = auth.as_ref().map_or(0, |a| a.token_counts().0),
            read_tokens = auth.as_ref().map_or(0, |a| a.token_counts().1),
            "grpc server listening"
        );
        if auth.is_none() {
            tracing::warn!(
                addr = %local_addr,
                "INSECURE: no token configured and insecure mode on: every method, \
                 ResetSource and PauseSync included, is open to anyone who can reach this port"
            );
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

        let auth = AuthLayer::new(auth);
        let calls = CallTrackingLayer::new(limits.request_timeout);
        let incoming = connection::incoming(listener, &limits, force_close.clone());
        let served = if grpc_web {
            let serving = server
                .layer(calls)
                .layer(web::cors_layer(cors_origins))
                .layer(tonic_web::GrpcWebLayer::new())
                .layer(auth)
                .add_routes(routes)
                .serve_with_incoming_shutdown(incoming, signal);
            drain(serving, &draining, &force_close, drain_timeout).await
        } else {
            let serving = server
                .layer(calls)
                .layer(auth)
                .add_routes(routes)
                .serve_with_incoming_shutdown(incoming, signal);
            drain(serving, &draining, &force_close, drain_timeout).await
        };

        // Also ends the task that waits to close connections at the drain deadline.
        force_close.cancel();
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
