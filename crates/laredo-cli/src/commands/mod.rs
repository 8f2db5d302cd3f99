//! Running a parsed command line: one module per command group, with the pure
//! rendering functions beside the calls that feed them.

mod admin;
mod fanout;
mod query;
mod status;
mod watch;

use std::future::Future;
use std::io::{BufRead, IsTerminal, Write};
use std::process::ExitCode;
use std::time::Duration;

use clap::CommandFactory;
use serde_json::Value as Json;

use crate::cli::{Cli, Command};
use crate::connection::Connection;

/// Runs `cli` and returns the process exit code.
///
/// # Errors
///
/// Any failure, already in plain words for `error: …` on stderr: the server cannot
/// be reached, a gRPC status (`message (CODE)`), a refused admin action.
pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let global = cli.global;
    let output = global.output;
    let command = match cli.command {
        Command::Version => {
            println!("laredo {}", env!("CARGO_PKG_VERSION"));
            return Ok(ExitCode::SUCCESS);
        }
        Command::Completions { shell } => {
            let mut command = Cli::command();
            clap_complete::generate(shell, &mut command, "laredo", &mut std::io::stdout());
            return Ok(ExitCode::SUCCESS);
        }
        Command::Fanout { command } => {
            fanout::run(&global, command).await?;
            return Ok(ExitCode::SUCCESS);
        }
        command => command,
    };
    let conn = Connection::open(&global.address, &global).await?;
    match command {
        Command::Status { table } => status::status(&conn, output, table.as_deref()).await?,
        Command::Source { source_id } => {
            status::source(&conn, output, source_id.as_deref()).await?
        }
        Command::Pipelines { source, table } => {
            status::pipelines(&conn, output, source.as_deref(), table.as_deref()).await?;
        }
        Command::Tables => status::tables(&conn, output).await?,
        Command::Schema { table } => status::schema(&conn, output, &table).await?,
        Command::Ready {
            source,
            table,
            pipeline,
        } => {
            return status::ready(
                &conn,
                output,
                source.as_deref(),
                table.as_deref(),
                pipeline.as_deref(),
            )
            .await;
        }
        Command::Query(args) => return query::run(&conn, output, args).await,
        Command::Watch(args) => watch::run(&conn, output, args).await?,
        Command::Reload {
            table,
            all,
            source,
            no_wait,
        } => match table {
            Some(table) if !all => {
                admin::reload_table(&conn, output, &table, source.as_deref(), !no_wait).await?;
            }
            _ => admin::reload_all(&conn, output, source.as_deref(), !no_wait).await?,
        },
        Command::Pause { source } => admin::pause(&conn, output, source.as_deref()).await?,
        Command::Resume { source } => admin::resume(&conn, output, source.as_deref()).await?,
        Command::ResetSource {
            source_id,
            drop_publication,
            confirm,
        } => admin::reset_source(&conn, output, &source_id, drop_publication, confirm).await?,
        Command::Snapshot { command } => admin::snapshot(&conn, output, command).await?,
        Command::DeadLetters(args) => admin::dead_letters(&conn, output, args).await?,
        Command::Replay {
            snapshot_id,
            pipeline,
            speed,
            tables,
        } => return admin::replay(&conn, output, snapshot_id, pipeline, speed, tables).await,
        Command::Version | Command::Completions { .. } | Command::Fanout { .. } => {
            unreachable!("handled before connecting")
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Prints pretty JSON and a newline.
pub(crate) fn print_json(value: &Json) {
    println!(
        "{}",
        serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string())
    );
}

/// Prints compact JSON on one line and flushes (for streams).
pub(crate) fn print_json_line(value: &Json) {
    let mut stdout = std::io::stdout().lock();
    // A closed stdout (a pipe to `head`) ends the stream at the next write; ignore here.
    let _ = writeln!(stdout, "{value}");
    let _ = stdout.flush();
}

/// Awaits `work` while a spinner with `message` turns on stderr (only on a terminal).
pub(crate) async fn spinner<T>(message: String, work: impl Future<Output = T>) -> T {
    let bar = indicatif::ProgressBar::new_spinner();
    bar.set_message(message);
    bar.enable_steady_tick(Duration::from_millis(120));
    let result = work.await;
    bar.finish_and_clear();
    result
}

/// Asks `question` on stderr and reads `y`/`yes` from stdin.
///
/// # Errors
///
/// When stdin is not a terminal: scripts must pass `--confirm`.
pub(crate) fn confirm(question: &str) -> anyhow::Result<bool> {
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        anyhow::bail!(
            "{question} Not confirmed: stdin is not a terminal; pass --confirm to proceed"
        );
    }
    eprint!("{question} Type yes to continue: ");
    let _ = std::io::stderr().flush();
    let mut answer = String::new();
    stdin.lock().read_line(&mut answer)?;
    Ok(matches!(
        answer.trim().to_ascii_lowercase().as_str(),
        "y" | "yes"
    ))
}
