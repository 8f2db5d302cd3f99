//! The command line: clap derive definitions of every command and flag.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Default address of the OAM and Query services.
pub(crate) const DEFAULT_ADDRESS: &str = "localhost:4001";
/// Default address of the replication (fan-out) service.
pub(crate) const DEFAULT_FANOUT_ADDRESS: &str = "localhost:4002";

/// `laredo`: the operator CLI of a laredo server.
#[derive(Debug, Parser)]
#[command(
    name = "laredo",
    version,
    about = "Operate a laredo server: status, queries, watch and administration over gRPC",
    after_help = "Environment: LAREDO_ADDRESS, LAREDO_FANOUT_ADDRESS, LAREDO_TOKEN, LAREDO_TLS_SERVER_NAME.\n\
                  Exit status: 0 on success, 1 on any error (and `ready` when not ready)."
)]
pub struct Cli {
    /// Flags every command accepts (before or after the command name).
    #[command(flatten)]
    pub global: GlobalArgs,
    /// The command to run.
    #[command(subcommand)]
    pub command: Command,
}

/// Flags shared by every command.
#[derive(Debug, Clone, Args)]
pub struct GlobalArgs {
    /// Address of the laredo OAM/Query port (`host:port` or a URL).
    #[arg(
        short,
        long,
        global = true,
        env = "LAREDO_ADDRESS",
        default_value = DEFAULT_ADDRESS,
        value_name = "ADDR"
    )]
    pub address: String,
    /// Address of the replication (fan-out) port, used by `laredo fanout`.
    #[arg(
        long,
        global = true,
        env = "LAREDO_FANOUT_ADDRESS",
        default_value = DEFAULT_FANOUT_ADDRESS,
        value_name = "ADDR"
    )]
    pub fanout_address: String,
    /// Connect with TLS (needs `--cert`); an `https://` address turns it on too.
    #[arg(long, global = true)]
    pub tls: bool,
    /// PEM file of the CA certificate that signed the server's certificate (with TLS).
    #[arg(long, global = true, value_name = "PATH")]
    pub cert: Option<PathBuf>,
    /// The name the server's certificate must carry, when the address is not in it (an
    /// IP address, a load balancer); by default the address's host. With TLS.
    #[arg(
        long,
        global = true,
        env = "LAREDO_TLS_SERVER_NAME",
        value_name = "NAME"
    )]
    pub tls_server_name: Option<String>,
    /// Token sent as `authorization: Bearer <token>` on every call. A server with
    /// tokens needs one for every command: a read token for reads (status, queries,
    /// watch, fanout status), an admin token for the commands that change something.
    #[arg(
        long,
        global = true,
        env = "LAREDO_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    pub token: Option<Token>,
    /// Deadline of each request (`10s`, `500ms`, `2m`); streams (`watch`, `query
    /// subscribe`) are not cut off by it.
    #[arg(long, global = true, default_value = "10s", value_parser = parse_duration, value_name = "DURATION")]
    pub timeout: Duration,
    /// Output format.
    #[arg(short, long, global = true, value_enum, default_value_t = OutputFormat::Table)]
    pub output: OutputFormat,
}

/// A bearer token: `Debug` prints `***`, so the parsed command line can be logged.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(String);

impl Token {
    /// The token itself, to send.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(***)")
    }
}

impl std::str::FromStr for Token {
    type Err = std::convert::Infallible;

    fn from_str(token: &str) -> Result<Self, Self::Err> {
        Ok(Self(token.to_string()))
    }
}

/// How results are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
#[non_exhaustive]
pub enum OutputFormat {
    /// Aligned tables and `key: value` lines for people.
    Table,
    /// JSON for scripts (one object per line for streams).
    Json,
}

/// Every command.
#[derive(Debug, Subcommand)]
#[non_exhaustive]
pub enum Command {
    /// Print the CLI version.
    Version,
    /// Service state, sources, pipelines and snapshots; `--table` for one table's detail.
    Status {
        /// Show the pipelines and indexes of this table (`schema.table`).
        #[arg(long, value_name = "SCHEMA.TABLE")]
        table: Option<String>,
    },
    /// Details of one source, or of every source.
    Source {
        /// Source id; all sources when omitted.
        source_id: Option<String>,
    },
    /// Every pipeline: source, table, target, state, buffer, errors, dead letters.
    Pipelines {
        /// Only pipelines of this source.
        #[arg(long)]
        source: Option<String>,
        /// Only pipelines of this table (`schema.table`).
        #[arg(long, value_name = "SCHEMA.TABLE")]
        table: Option<String>,
    },
    /// Every configured table and its targets.
    Tables,
    /// The columns of a table.
    Schema {
        /// The table (`schema.table`; `public` when no schema).
        table: String,
    },
    /// Read rows of an in-memory table (lookup, get by key, list, count, subscribe).
    Query(QueryArgs),
    /// Stream status events until Ctrl-C.
    Watch(WatchArgs),
    /// Re-baseline one table, or every table with `--all`, and follow it until done.
    Reload {
        /// The table (`schema.table`).
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        table: Option<String>,
        /// Reload every table (of `--source`, or of every source).
        #[arg(long)]
        all: bool,
        /// Only this source.
        #[arg(long)]
        source: Option<String>,
        /// Return once the server accepted the reload instead of following it to the
        /// end.
        #[arg(long)]
        no_wait: bool,
    },
    /// Pause delivery (changes accumulate at the source).
    Pause {
        /// Only this source; every source when omitted.
        #[arg(long)]
        source: Option<String>,
    },
    /// Resume delivery.
    Resume {
        /// Only this source; every source when omitted.
        #[arg(long)]
        source: Option<String>,
    },
    /// Destructive: reset a source's replication state and re-baseline its tables.
    ResetSource {
        /// Source id.
        source_id: String,
        /// Also drop the source's publication (PostgreSQL).
        #[arg(long)]
        drop_publication: bool,
        /// Skip the confirmation prompt.
        #[arg(long, short = 'y', visible_alias = "yes")]
        confirm: bool,
    },
    /// Engine snapshots: create, list, inspect, restore, delete, prune.
    Snapshot {
        /// The snapshot command.
        #[command(subcommand)]
        command: SnapshotCommand,
    },
    /// A pipeline's dead letters: list, replay, purge.
    DeadLetters(DeadLetterArgs),
    /// Replay a stored snapshot into a pipeline's target and follow its progress.
    Replay {
        /// Snapshot id.
        snapshot_id: String,
        /// Pipeline whose target receives the rows.
        #[arg(long)]
        pipeline: String,
        /// Pacing.
        #[arg(long, value_enum, default_value_t = ReplaySpeedArg::Full)]
        speed: ReplaySpeedArg,
        /// Only these tables (`schema.table`).
        tables: Vec<String>,
    },
    /// Exit 0 when ready, 1 when not (for scripts and probes).
    Ready {
        /// Only this source.
        #[arg(long)]
        source: Option<String>,
        /// Only this table (`schema.table`).
        #[arg(long, value_name = "SCHEMA.TABLE")]
        table: Option<String>,
        /// Only this pipeline.
        #[arg(long)]
        pipeline: Option<String>,
    },
    /// Replication fan-out targets (on `--fanout-address`).
    Fanout {
        /// The fan-out command.
        #[command(subcommand)]
        command: FanoutCommand,
    },
    /// Print a shell completion script.
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

/// `laredo query`: the short forms, or one of the subcommands.
#[derive(Debug, Args)]
#[command(
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true,
    after_help = "Short forms:\n  laredo query <s.t> <key values…>            lookup by the lookup fields\n  laredo query <s.t> --index <name> <values…>  lookup by a named index\n  laredo query <s.t> --pk <values…>            get by primary key\n  laredo query <s.t> --all [--limit N]         list rows"
)]
pub struct QueryArgs {
    /// A subcommand (`lookup`, `get`, `list`, `count`, `subscribe`).
    #[command(subcommand)]
    pub command: Option<QueryCommand>,
    /// The table (`schema.table`).
    #[arg(required = true, value_name = "SCHEMA.TABLE")]
    pub table: Option<String>,
    /// Key values: of the lookup fields, of `--index`, or of the primary key with
    /// `--pk`.
    #[arg(value_name = "VALUE")]
    pub values: Vec<String>,
    /// Look up by this index.
    #[arg(long, conflicts_with_all = ["pk", "all"])]
    pub index: Option<String>,
    /// Get by primary key (its values, in key order, follow).
    #[arg(long, num_args = 0.., value_name = "VALUE", conflicts_with = "all")]
    pub pk: Option<Vec<String>>,
    /// List rows.
    #[arg(long)]
    pub all: bool,
    /// Rows per page with `--all`.
    #[arg(long, default_value_t = 100)]
    pub limit: u32,
    /// Continue a listing from a previous page's token.
    #[arg(long, value_name = "TOKEN")]
    pub page_token: Option<String>,
}

/// `laredo query <subcommand>`.
#[derive(Debug, Subcommand)]
#[non_exhaustive]
pub enum QueryCommand {
    /// Find rows by an index key (the lookup fields unless `--index`).
    Lookup {
        /// Index name.
        #[arg(long)]
        index: Option<String>,
        /// Return every match of a non-unique index.
        #[arg(long, requires = "index")]
        all_matches: bool,
        /// The table.
        #[arg(value_name = "SCHEMA.TABLE")]
        table: String,
        /// Key values, in the index's field order.
        #[arg(required = true)]
        values: Vec<String>,
    },
    /// Find a row by its primary key.
    Get {
        /// A primary key value; repeat for a composite key, in key order
        /// (`--pk eu --pk 1`).
        #[arg(long, required = true)]
        pk: Vec<String>,
        /// The table.
        #[arg(value_name = "SCHEMA.TABLE")]
        table: String,
    },
    /// List rows by primary key, one page at a time.
    List {
        /// Rows per page.
        #[arg(long, default_value_t = 100)]
        limit: u32,
        /// Continue from a previous page's token.
        #[arg(long, value_name = "TOKEN")]
        page_token: Option<String>,
        /// The table.
        #[arg(value_name = "SCHEMA.TABLE")]
        table: String,
    },
    /// Count the rows of a table.
    Count {
        /// The table.
        #[arg(value_name = "SCHEMA.TABLE")]
        table: String,
    },
    /// Stream a table's changes until Ctrl-C.
    Subscribe {
        /// Send the current rows first.
        #[arg(long)]
        replay_existing: bool,
        /// The table.
        #[arg(value_name = "SCHEMA.TABLE")]
        table: String,
    },
}

/// `laredo watch`.
#[derive(Debug, Args)]
pub struct WatchArgs {
    /// Only events of this table (`schema.table`).
    #[arg(value_name = "SCHEMA.TABLE")]
    pub table: Option<String>,
    /// Only events of these tables (repeatable).
    #[arg(long = "table", value_name = "SCHEMA.TABLE")]
    pub tables: Vec<String>,
    /// Only events of these pipelines (repeatable).
    #[arg(long = "pipeline", value_name = "ID")]
    pub pipelines: Vec<String>,
    /// Show the key of every applied row change.
    #[arg(short, long)]
    pub verbose: bool,
}

/// `laredo snapshot <subcommand>`.
#[derive(Debug, Subcommand)]
#[non_exhaustive]
pub enum SnapshotCommand {
    /// Take a snapshot now.
    Create {
        /// User metadata `key=value` stored with the snapshot (repeatable).
        #[arg(long = "meta", value_name = "KEY=VALUE", value_parser = parse_meta)]
        meta: Vec<(String, String)>,
        /// Only these tables (repeatable).
        #[arg(long = "table", value_name = "SCHEMA.TABLE")]
        tables: Vec<String>,
    },
    /// List stored snapshots, newest first.
    List {
        /// Only snapshots holding this table.
        #[arg(long, value_name = "SCHEMA.TABLE")]
        table: Option<String>,
        /// At most this many.
        #[arg(long, default_value_t = 0)]
        limit: u32,
    },
    /// Describe one snapshot.
    Inspect {
        /// Snapshot id.
        snapshot_id: String,
    },
    /// Destructive: restore every target from a snapshot.
    Restore {
        /// Snapshot id.
        snapshot_id: String,
        /// Skip the confirmation prompt.
        #[arg(long, short = 'y', visible_alias = "yes")]
        confirm: bool,
        /// Do not compare the snapshot's user metadata with the configured one.
        #[arg(long)]
        skip_meta_check: bool,
    },
    /// Delete one snapshot.
    Delete {
        /// Snapshot id.
        snapshot_id: String,
    },
    /// Delete all but the newest `--keep` snapshots.
    Prune {
        /// Snapshots to keep (at least 1).
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
        keep: u32,
        /// Only snapshots holding this table.
        #[arg(long, value_name = "SCHEMA.TABLE")]
        table: Option<String>,
    },
}

/// `laredo dead-letters`: list, or a subcommand.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct DeadLetterArgs {
    /// `replay` or `purge`.
    #[command(subcommand)]
    pub command: Option<DeadLetterCommand>,
    /// Pipeline id whose dead letters to list.
    #[arg(required = true)]
    pub pipeline_id: Option<String>,
    /// At most this many entries.
    #[arg(long, default_value_t = 100)]
    pub limit: u32,
}

/// `laredo dead-letters <subcommand>`.
#[derive(Debug, Subcommand)]
#[non_exhaustive]
pub enum DeadLetterCommand {
    /// Re-deliver a pipeline's dead letters to its target.
    Replay {
        /// Pipeline id.
        pipeline_id: String,
    },
    /// Delete a pipeline's dead letters.
    Purge {
        /// Pipeline id.
        pipeline_id: String,
    },
}

/// `laredo fanout <subcommand>`.
#[derive(Debug, Subcommand)]
#[non_exhaustive]
pub enum FanoutCommand {
    /// Journal, snapshot and client summary of a table's fan-out target.
    Status {
        /// The table.
        #[arg(value_name = "SCHEMA.TABLE")]
        table: String,
    },
    /// Connected replication clients.
    Clients {
        /// The table.
        #[arg(value_name = "SCHEMA.TABLE")]
        table: String,
    },
    /// In-memory snapshots held for a table.
    Snapshots {
        /// The table.
        #[arg(value_name = "SCHEMA.TABLE")]
        table: String,
        /// At most this many.
        #[arg(long, default_value_t = 0)]
        limit: u32,
    },
    /// The newest journal entries.
    Journal {
        /// The table.
        #[arg(value_name = "SCHEMA.TABLE")]
        table: String,
        /// How many of the newest entries.
        #[arg(long, default_value_t = 20)]
        tail: u32,
    },
    /// Drain fan-out targets (clients get GoAway and reconnect elsewhere); an admin
    /// call on the OAM address.
    Drain {
        /// Only this table's target; every fan-out target when omitted.
        #[arg(value_name = "SCHEMA.TABLE")]
        table: Option<String>,
        /// How long clients may keep their streams.
        #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
        deadline: Option<Duration>,
    },
}

/// `--speed` of `laredo replay`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
#[non_exhaustive]
pub enum ReplaySpeedArg {
    /// As fast as possible.
    Full,
    /// At the pace the rows were written.
    Realtime,
}

/// Parses `10s`, `500ms`, `2m`, `1h` or a bare number of seconds.
pub(crate) fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: f64 = number
        .parse()
        .map_err(|_| format!("invalid duration {text:?} (try 10s, 500ms, 2m)"))?;
    let seconds = match unit {
        "" | "s" => number,
        "ms" => number / 1000.0,
        "m" => number * 60.0,
        "h" => number * 3600.0,
        _ => {
            return Err(format!(
                "invalid duration unit {unit:?} (use ms, s, m or h)"
            ));
        }
    };
    Duration::try_from_secs_f64(seconds).map_err(|e| format!("invalid duration {text:?}: {e}"))
}

/// Parses a `key=value` pair of `--meta`.
fn parse_meta(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_string(), value.to_string())),
        _ => Err(format!("expected KEY=VALUE, got {text:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        assert!(parse_duration("ten").is_err());
        assert!(parse_duration("5d").is_err());
    }

    #[test]
    fn global_flags_are_accepted_after_the_command() {
        let cli = Cli::try_parse_from(["laredo", "pipelines", "-o", "json", "-a", "h:1"]).unwrap();
        assert_eq!(cli.global.output, OutputFormat::Json);
        assert_eq!(cli.global.address, "h:1");
    }

    #[test]
    fn query_short_forms_and_subcommands_both_parse() {
        let cli = Cli::try_parse_from(["laredo", "query", "public.users", "u1@x"]).unwrap();
        let Command::Query(args) = cli.command else {
            panic!("not a query")
        };
        assert!(args.command.is_none());
        assert_eq!(args.table.as_deref(), Some("public.users"));
        assert_eq!(args.values, ["u1@x"]);

        let cli = Cli::try_parse_from(["laredo", "query", "count", "public.users"]).unwrap();
        let Command::Query(args) = cli.command else {
            panic!("not a query")
        };
        assert!(matches!(args.command, Some(QueryCommand::Count { .. })));
    }

    #[test]
    fn prune_needs_a_positive_keep() {
        assert!(Cli::try_parse_from(["laredo", "snapshot", "prune", "--keep", "0"]).is_err());
        assert!(Cli::try_parse_from(["laredo", "snapshot", "prune", "--keep", "2"]).is_ok());
    }

    #[test]
    fn meta_needs_key_and_value() {
        assert_eq!(parse_meta("a=b=c"), Ok(("a".into(), "b=c".into())));
        assert!(parse_meta("novalue").is_err());
        assert!(parse_meta("=x").is_err());
    }
}
