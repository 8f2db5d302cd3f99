//! The operator CLI of laredo, `laredo`: status, queries, a live watch and
//! administration of a running laredo server over gRPC.
//!
//! It sits outside the data path, as a client of the server's OAM and Query services
//! (the OAM/Query port, 4001 by default) and of the fan-out replication service (4002).
//! The binary is a thin `main` over this library: [`Cli`] is the clap command line,
//! [`run`] executes it, and [`Table`] is the aligned text table every human output
//! uses. `docs/cli.md` is the user guide.
//!
//! - Output: aligned tables by default, `--output json` for scripts (pretty JSON for a
//!   one-shot answer, one compact object per line for streams).
//! - Errors: `error: …` on stderr and exit status 1; gRPC failures read
//!   `message (CODE)`, an unreachable server `cannot reach laredo at URL: reason`.
//! - Addresses: `--address`/`LAREDO_ADDRESS` (default `localhost:4001`),
//!   `--fanout-address`/`LAREDO_FANOUT_ADDRESS` (default `localhost:4002`); every call
//!   sends `--token`/`LAREDO_TOKEN` as a bearer token (a read token for reads, an admin
//!   token for the commands that change something).
//! - TLS: `--tls` or an `https://` address, trusting the CA of `--cert`, verifying the
//!   server name of `--tls-server-name`/`LAREDO_TLS_SERVER_NAME` (by default the
//!   address's host).
//!
//! ```no_run
//! use clap::Parser;
//!
//! # async fn f() -> anyhow::Result<()> {
//! let cli = laredo_cli::Cli::parse_from(["laredo", "-a", "127.0.0.1:4001", "pipelines"]);
//! let code = laredo_cli::run(cli).await?;
//! # let _ = code;
//! # Ok(())
//! # }
//! ```

mod cli;
mod commands;
mod connection;
mod format;
mod table;

pub use crate::cli::{
    Cli, Command, DeadLetterArgs, DeadLetterCommand, FanoutCommand, GlobalArgs, OutputFormat,
    QueryArgs, QueryCommand, ReplaySpeedArg, SnapshotCommand, Token, WatchArgs,
};
pub use crate::commands::run;
pub use crate::table::Table;
