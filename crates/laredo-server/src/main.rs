//! `laredo-server`: runs a laredo engine from a HOCON configuration file.
//!
//! The binary sits at the top of the crate map: it loads the configuration with
//! `laredo-config`, maps it to sources, targets and pipelines (`build`), starts the
//! engine, then serves
//!
//! - health probes and Prometheus metrics over HTTP on `health.http_port` (`/metrics`
//!   also on `observability.metrics.port`), see `http`;
//! - the OAM and Query gRPC services on `grpc.port`;
//! - the replication (fan-out) service on `fanout.grpc.port`, only when a
//!   `replication-fanout` target is configured.
//!
//! SIGTERM or SIGINT starts a graceful shutdown (`run`): readiness turns 503, fan-out
//! clients are drained for the grace period (a second signal skips the wait), the gRPC
//! servers and the HTTP server stop, and the engine stops last (taking the shutdown
//! snapshot when configured).
//!
//! ```text
//! laredo-server --config /etc/laredo/laredo.conf          # run
//! laredo-server validate --config laredo.conf             # "config is valid" or the errors
//! laredo-server validate --validate structural ...        # the same without connecting
//! laredo-server config --dump --config laredo.conf        # merged config, secrets masked
//! laredo-server version
//! laredo-server healthcheck --port 8080                   # container HEALTHCHECK
//! ```
//!
//! A configuration error, a configured feature this build does not implement, or an
//! unsafe combination (`preflight`) is printed one per line on stderr before anything
//! connects to a database, and the process exits 1. With `--validate strict` (the
//! default) the server then connects to each source and checks its tables before the
//! engine starts. Logs go to stderr as JSON lines, or text with `--log-format text`.

mod auth;
mod build;
mod cli;
mod http;
mod init;
mod logging;
mod metrics;
mod preflight;
mod run;

use std::process::ExitCode;

use clap::Parser;

use crate::cli::{Cli, Command};

fn main() -> ExitCode {
    let cli = Cli::parse();
    match &cli.command {
        Some(Command::Version) => {
            println!("laredo-server {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        Some(Command::Healthcheck { port }) => cli::healthcheck(*port),
        Some(Command::Validate) => cli::validate(&cli),
        Some(Command::Config { dump: _ }) => cli::dump_config(&cli),
        None => run::main(&cli),
    }
}
