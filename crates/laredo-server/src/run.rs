//! Running the server: startup in order, then a graceful shutdown on SIGTERM/SIGINT.
//!
//! Startup: init hooks, configuration and safety checks (every error printed, exit 1,
//! before anything connects), logging, with `--validate strict` a check that every
//! source answers and serves its tables (errors printed, exit 1), the observers
//! (metrics + OAM status events, combined), the engine, then every listener is bound (so a busy port fails before the engine
//! touches a database), the engine starts, and the HTTP and gRPC servers serve.
//! One `server started` log line carries every bound address.
//!
//! Shutdown: readiness turns 503; fan-out targets drain for the grace period (a second
//! signal skips the wait); then, within `shutdown.timeout`, the OAM/Query server stops,
//! then the replication server, then the HTTP servers, then the engine (which takes the
//! shutdown snapshot when configured). Exit 0, or 1 on a failure or timeout.

use std::net::{IpAddr, SocketAddr};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use laredo_config::{GrpcLimitsConfig, LaredoConfig};
use laredo_core::{CompositeObserver, Engine, EngineObserver};
use laredo_service::{GrpcServer, Limits};
use laredo_service_oam::{OamService, StatusEvents};
use laredo_service_query::QueryService;
use laredo_target_fanout::{DrainReason, ReplicationService};
use tokio::net::TcpListener;
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::auth::Tokens;
use crate::cli::{Checked, Cli, LogFormat, print_errors};
use crate::http::Health;
use crate::metrics::Metrics;
use crate::preflight::ValidateMode;

/// Why the server did not run to a clean exit.
enum Failure {
    /// Configuration problems, one line each.
    Config(Vec<String>),
    /// Anything else.
    Fatal(anyhow::Error),
}

impl From<anyhow::Error> for Failure {
    fn from(error: anyhow::Error) -> Self {
        Self::Fatal(error)
    }
}

/// Runs the server until a signal stops it.
pub(crate) fn main(cli: &Cli) -> ExitCode {
    if let Err(error) = crate::init::run_hooks(&cli.init_dir) {
        print_errors(&[error]);
        return ExitCode::FAILURE;
    }
    let Checked {
        config,
        tokens,
        warnings,
    } = match cli.load_config() {
        Ok(checked) => checked,
        Err(errors) => {
            print_errors(&errors);
            return ExitCode::FAILURE;
        }
    };
    let format = cli
        .log_format
        .unwrap_or(match config.observability.logging.format {
            laredo_config::LogFormat::Text => LogFormat::Text,
            _ => LogFormat::Json,
        });
    crate::logging::init(config.observability.logging.level, format);
    for warning in &warnings {
        tracing::warn!(problem = %warning, "configuration warning");
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            print_errors(&[format!("cannot start the runtime: {error}")]);
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve(cli, config, tokens)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Config(errors)) => {
            print_errors(&errors);
            ExitCode::FAILURE
        }
        Err(Failure::Fatal(error)) => {
            tracing::error!(error = format!("{error:#}"), "server failed");
            ExitCode::FAILURE
        }
    }
}

/// A task serving until its token is cancelled; a failure cancels `fatal`.
fn spawn_server<F, E>(name: &'static str, serving: F, fatal: &CancellationToken) -> JoinHandle<()>
where
    F: Future<Output = Result<(), E>> + Send + 'static,
    E: std::fmt::Display,
{
    let fatal = fatal.clone();
    tokio::spawn(async move {
        if let Err(error) = serving.await {
            tracing::error!(server = name, error = %error, "server failed");
            fatal.cancel();
        }
    })
}

/// The listen address of a port: its `bind` (checked by the configuration) and `port`.
fn listen_addr(bind: &str, port: u16) -> SocketAddr {
    let ip = bind
        .parse::<IpAddr>()
        .unwrap_or(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED));
    SocketAddr::new(ip, port)
}

async fn bind_http(bind: &str, port: u16, key: &str) -> anyhow::Result<TcpListener> {
    let addr = listen_addr(bind, port);
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("{key}: cannot listen on {addr}"))
}

/// Default limits of the OAM + Query port.
fn grpc_defaults() -> Limits {
    Limits::default()
}

/// Default limits of the fan-out port: one long-lived connection per replica, each
/// with a stream or two.
fn fanout_defaults() -> Limits {
    let mut limits = Limits::default();
    limits.max_connections = 10_000;
    limits.max_concurrent_streams = 16;
    limits
}

/// Largest request message unless `limits.max_message_size` says otherwise.
const DEFAULT_MAX_MESSAGE_SIZE: usize = 4 * 1024 * 1024;

/// The configured limits over a port's defaults.
fn limits(config: &GrpcLimitsConfig, defaults: Limits) -> Limits {
    let mut limits = defaults;
    if let Some(v) = config.max_connections {
        limits.max_connections = v;
    }
    if let Some(v) = config.max_concurrent_streams {
        limits.max_concurrent_streams = v;
    }
    if let Some(v) = config.max_header_list_size {
        limits.max_header_list_size = v;
    }
    if let Some(v) = config.keepalive_interval {
        limits.keepalive_interval = Some(v);
    }
    if let Some(v) = config.keepalive_timeout {
        limits.keepalive_timeout = v;
    }
    if let Some(v) = config.max_pending_accept_reset_streams {
        limits.max_pending_accept_reset_streams = v;
    }
    if let Some(v) = config.max_local_error_reset_streams {
        limits.max_local_error_reset_streams = v;
    }
    if let Some(v) = config.max_cancelled_calls {
        limits.max_cancelled_calls = v;
    }
    if let Some(v) = config.request_timeout {
        limits.request_timeout = v;
    }
    if let Some(v) = config.idle_timeout {
        limits.idle_timeout = v;
    }
    if let Some(v) = config.tcp_keepalive {
        limits.tcp_keepalive = Some(v);
    }
    limits
}

fn grpc_builder(
    config: &LaredoConfig,
    tokens: &Tokens,
    engine: &Engine,
    addr: SocketAddr,
    limits: Limits,
) -> laredo_service::GrpcServerBuilder {
    let grpc = &config.grpc;
    let mut builder = GrpcServer::builder(engine.clone())
        .listen(addr)
        .limits(limits)
        .insecure(config.insecure)
        .admin_methods(grpc.auth.admin_methods.clone())
        .drain_timeout(config.shutdown.drain_timeout)
        .grpc_web(grpc.web.enabled)
        .cors_allowed_origins(grpc.web.cors_allowed_origins.clone());
    if grpc.tls.enabled {
        builder = builder.tls(grpc.tls.cert_path.clone(), grpc.tls.key_path.clone());
    }
    for token in &tokens.admin {
        builder = builder.admin_token(token.clone());
    }
    for token in &tokens.read {
        builder = builder.read_token(token.clone());
    }
    builder
}

async fn serve(cli: &Cli, config: LaredoConfig, tokens: Tokens) -> Result<(), Failure> {
    // Before anything else, so an early SIGTERM is a clean shutdown, not a kill.
    let mut signals = Signals::new().context("installing signal handlers")?;
    let metrics = Metrics::new();
    let events = StatusEvents::new();
    let observer: Arc<dyn EngineObserver> = Arc::new(CompositeObserver::new([
        Some(Arc::clone(&metrics) as Arc<dyn EngineObserver>),
        Some(Arc::clone(&events) as Arc<dyn EngineObserver>),
    ]));
    if cli.validate == ValidateMode::Strict {
        let problems = crate::preflight::reach_sources(&config).await;
        if !problems.is_empty() {
            return Err(Failure::Config(problems));
        }
    }
    let engine = crate::build::build_engine(&config, observer).map_err(Failure::Config)?;
    let has_fanout = config.has_fanout_target();

    // Bind everything before the engine starts.
    let health_listener = bind_http(
        &config.health.bind,
        config.health.http_port,
        "health.http_port",
    )
    .await?;
    let metrics_listener = bind_http(
        &config.observability.metrics.bind,
        config.observability.metrics.port,
        "observability.metrics.port",
    )
    .await?;
    let grpc_limits = &config.grpc.limits;
    let max_message = grpc_limits
        .max_message_size
        .unwrap_or(DEFAULT_MAX_MESSAGE_SIZE);
    let grpc_server = grpc_builder(
        &config,
        &tokens,
        &engine,
        listen_addr(&config.grpc.bind, config.grpc.port),
        limits(grpc_limits, grpc_defaults()),
    )
    .add_service(
        OamService::new(engine.clone(), Arc::clone(&events))
            .into_server()
            .max_decoding_message_size(max_message),
    )
    .add_service(
        QueryService::new(engine.clone())
            .into_server()
            .max_decoding_message_size(max_message),
    )
    .bind()
    .await
    .context("grpc")?;
    let fanout_server = if has_fanout {
        let fanout = &config.fanout.grpc;
        let max_message = fanout
            .limits
            .max_message_size
            .unwrap_or(DEFAULT_MAX_MESSAGE_SIZE);
        Some(
            grpc_builder(
                &config,
                &tokens,
                &engine,
                listen_addr(&fanout.bind, fanout.port),
                limits(&fanout.limits, fanout_defaults()),
            )
            .add_service(
                ReplicationService::new(engine.clone())
                    .into_server()
                    .max_decoding_message_size(max_message),
            )
            .bind()
            .await
            .context("fanout.grpc")?,
        )
    } else {
        None
    };
    let health_addr = health_listener.local_addr().context("health listener")?;
    let metrics_addr = metrics_listener.local_addr().context("metrics listener")?;
    let grpc_addr = grpc_server.local_addr();
    let fanout_addr = fanout_server.as_ref().map(GrpcServer::local_addr);

    engine.start().await.context("starting the engine")?;
    let health = Arc::new(Health {
        engine: engine.clone(),
        metrics,
        events,
        draining: AtomicBool::new(false),
        started: AtomicBool::new(true),
    });

    let fatal = CancellationToken::new();
    let http_stop = CancellationToken::new();
    let grpc_stop = CancellationToken::new();
    let fanout_stop = CancellationToken::new();
    let health_task = spawn_server(
        "health",
        crate::http::serve(
            health_listener,
            crate::http::health_router(&config, Arc::clone(&health)),
            http_stop.clone(),
        ),
        &fatal,
    );
    let metrics_task = spawn_server(
        "metrics",
        crate::http::serve(
            metrics_listener,
            crate::http::metrics_router(&config, Arc::clone(&health)),
            http_stop.clone(),
        ),
        &fatal,
    );
    let grpc_task = spawn_server(
        "grpc",
        grpc_server.serve(grpc_stop.clone().cancelled_owned()),
        &fatal,
    );
    let fanout_task = fanout_server.map(|server| {
        spawn_server(
            "fanout.grpc",
            server.serve(fanout_stop.clone().cancelled_owned()),
            &fatal,
        )
    });
    tracing::info!(
        health_addr = %health_addr,
        metrics_addr = %metrics_addr,
        grpc_addr = %grpc_addr,
        fanout_addr = fanout_addr.map(|a| a.to_string()),
        version = env!("CARGO_PKG_VERSION"),
        "server started"
    );

    let failed = tokio::select! {
        name = signals.next() => {
            tracing::info!(signal = name, "shutting down");
            false
        }
        () = fatal.cancelled() => true,
    };

    // Drain: readiness 503, fan-out clients told to go away, the grace period.
    health.draining.store(true, Ordering::SeqCst);
    let grace = cli.drain_grace.unwrap_or(if has_fanout {
        config.shutdown.drain_timeout
    } else {
        Duration::ZERO
    });
    if has_fanout {
        let draining = laredo_target_fanout::drain_all(&engine, DrainReason::Shutdown, Some(grace));
        tracing::info!(targets = draining, grace = ?grace, "draining fan-out clients");
    }
    if !grace.is_zero() && !failed {
        tokio::select! {
            () = tokio::time::sleep(grace) => {}
            name = signals.next() => {
                tracing::info!(signal = name, "second signal: skipping the drain grace");
            }
        }
    }

    // The grace is over: close the streams still open rather than wait for the
    // replication server's own drain timeout.
    for (_, target) in laredo_target_fanout::fanout_targets(&engine) {
        target.disconnect_all();
    }

    let stopping = async {
        grpc_stop.cancel();
        let _ = grpc_task.await;
        fanout_stop.cancel();
        if let Some(task) = fanout_task {
            let _ = task.await;
        }
        http_stop.cancel();
        let _ = health_task.await;
        let _ = metrics_task.await;
        engine.stop().await
    };
    match tokio::time::timeout(config.shutdown.timeout, stopping).await {
        Err(_) => Err(anyhow::anyhow!(
            "shutdown did not finish within shutdown.timeout ({:?})",
            config.shutdown.timeout
        )
        .into()),
        Ok(Err(error)) => Err(anyhow::Error::new(error)
            .context("stopping the engine")
            .into()),
        Ok(Ok(())) if failed => Err(anyhow::anyhow!("a server failed").into()),
        Ok(Ok(())) => {
            tracing::info!("stopped");
            Ok(())
        }
    }
}

/// SIGTERM and SIGINT as one stream.
struct Signals {
    term: Signal,
    int: Signal,
}

impl Signals {
    fn new() -> std::io::Result<Self> {
        Ok(Self {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
        })
    }

    /// The next signal's name.
    async fn next(&mut self) -> &'static str {
        tokio::select! {
            _ = self.term.recv() => "SIGTERM",
            _ = self.int.recv() => "SIGINT",
        }
    }
}
