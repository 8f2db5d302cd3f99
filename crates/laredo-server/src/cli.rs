//! Command line: flags, subcommands, and the subcommands that do not run the engine.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use laredo_config::{DEFAULT_INIT_DIR, LaredoConfig, LoadOptions};

use crate::preflight::ValidateMode;

/// How long `healthcheck` waits for the server.
const HEALTHCHECK_TIMEOUT: Duration = Duration::from_secs(3);
/// The probe `healthcheck` asks.
const HEALTHCHECK_PATH: &str = "/health/ready";

/// Runs a laredo engine, its gRPC services and health endpoints from a HOCON config.
#[derive(Debug, Parser)]
#[command(name = "laredo-server", version, about)]
pub(crate) struct Cli {
    /// Main config file (default: the LAREDO_CONFIG environment variable).
    #[arg(long, global = true)]
    pub(crate) config: Option<PathBuf>,
    /// Directory of config fragments (`*.conf`, merged in name order); default
    /// `conf.d` next to the main file.
    #[arg(long, global = true)]
    pub(crate) conf_dir: Option<PathBuf>,
    /// Init directory: its executable files run in name order before startup, then
    /// its `*.conf` files are merged as fragments.
    #[arg(long, global = true, default_value = DEFAULT_INIT_DIR)]
    pub(crate) init_dir: PathBuf,
    /// Health HTTP port (overrides `health.http_port`).
    #[arg(long, global = true)]
    pub(crate) health_port: Option<u16>,
    /// Log level (overrides `observability.logging.level`).
    #[arg(long, global = true, value_enum)]
    pub(crate) log_level: Option<LogLevelArg>,
    /// Fan-out drain grace at shutdown, e.g. `30s` (default: `shutdown.drain_timeout`
    /// when a fan-out target exists, otherwise 0); 0 disables.
    #[arg(long, global = true, value_parser = parse_duration)]
    pub(crate) drain_grace: Option<Duration>,
    /// Checks before starting (and for `validate`): `strict` also connects to every
    /// source and checks its tables; `structural` connects to nothing; `none` turns the
    /// safety checks into warnings.
    #[arg(long, global = true, value_enum, env = "LAREDO_VALIDATE", default_value_t = ValidateMode::Strict)]
    pub(crate) validate: ValidateMode,
    /// Log format on stderr: `json` (one object per line) or `text`; overrides
    /// `observability.logging.type` (`structured` or `text`).
    #[arg(long, global = true, value_enum, env = "LAREDO_LOG_FORMAT")]
    pub(crate) log_format: Option<LogFormat>,
    /// `key=value` override, applied after every other layer; repeatable.
    #[arg(long = "set", global = true, value_name = "KEY=VALUE")]
    pub(crate) overrides: Vec<String>,
    /// What to do; without a subcommand the server runs.
    #[command(subcommand)]
    pub(crate) command: Option<Command>,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Checks the configuration (and, with `--validate strict`, the sources): prints
    /// "config is valid" or every error.
    Validate,
    /// Prints the merged configuration.
    Config {
        /// Print it as JSON with secrets masked (the only format).
        #[arg(long)]
        dump: bool,
    },
    /// Prints the version.
    Version,
    /// Asks a running server's readiness probe; exit 0 when ready.
    Healthcheck {
        /// The server's health port.
        #[arg(long, default_value_t = laredo_config::DEFAULT_HEALTH_PORT)]
        port: u16,
    },
}

/// `--log-format` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum LogFormat {
    /// One JSON object per line.
    Json,
    /// Human-readable lines.
    Text,
}

/// `--log-level` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum LogLevelArg {
    /// Debug.
    Debug,
    /// Info.
    Info,
    /// Warn.
    Warn,
    /// Error.
    Error,
}

impl LogLevelArg {
    fn as_str(self) -> &'static str {
        match self {
            Self::Debug => "debug",
            Self::Info => "info",
            Self::Warn => "warn",
            Self::Error => "error",
        }
    }
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    laredo_config::parse_duration(text)
}

impl Cli {
    /// The layers to load: main file, init dir, conf dir, the process environment,
    /// `--set`, then the flags that stand for keys.
    pub(crate) fn load_options(&self) -> LoadOptions {
        let mut options = LoadOptions::new()
            .process_env()
            .init_dir(&self.init_dir)
            .overrides(self.overrides.iter().cloned());
        if let Some(file) = &self.config {
            options = options.file(file);
        }
        if let Some(dir) = &self.conf_dir {
            options = options.conf_dir(dir);
        }
        if let Some(port) = self.health_port {
            options = options.set(format!("health.http_port={port}"));
        }
        if let Some(level) = self.log_level {
            options = options.set(format!("observability.logging.level={}", level.as_str()));
        }
        options
    }

    /// Loads and checks the configuration: every problem, one line each. The safety
    /// checks are errors unless `--validate none`, which returns them as warnings
    /// (with the advice, which never stops anything).
    pub(crate) fn load_config(&self) -> Result<Checked, Vec<String>> {
        let config = LaredoConfig::load(self.load_options())
            .map_err(|errors| errors.iter().map(ToString::to_string).collect::<Vec<_>>())?;
        let mut errors = crate::build::unsupported(&config);
        let tokens = match crate::auth::tokens(&config) {
            Ok(tokens) => tokens,
            Err(problems) => {
                errors.extend(problems);
                crate::auth::Tokens::default()
            }
        };
        let mut warnings = crate::preflight::advice(&config);
        let safety = crate::preflight::safety(&config);
        if self.validate == ValidateMode::None {
            warnings.extend(safety);
        } else {
            errors.extend(safety);
        }
        if errors.is_empty() {
            Ok(Checked {
                config,
                tokens,
                warnings,
            })
        } else {
            Err(errors)
        }
    }
}

/// A configuration that passed the checks, and what they found worth saying.
pub(crate) struct Checked {
    pub(crate) config: LaredoConfig,
    /// The tokens of the gRPC ports, files read.
    pub(crate) tokens: crate::auth::Tokens,
    pub(crate) warnings: Vec<String>,
}

/// Prints each error on its own line on stderr.
pub(crate) fn print_errors(errors: &[String]) {
    let mut stderr = std::io::stderr().lock();
    for error in errors {
        let _ = writeln!(stderr, "{error}");
    }
}

/// `validate`: the configuration checks, then (`--validate strict`) the sources.
/// Warnings go to stderr as `warning: ...` and do not fail the check.
pub(crate) fn validate(cli: &Cli) -> ExitCode {
    let checked = match cli.load_config() {
        Ok(checked) => checked,
        Err(errors) => {
            print_errors(&errors);
            return ExitCode::FAILURE;
        }
    };
    let warnings: Vec<String> = checked
        .warnings
        .iter()
        .map(|warning| format!("warning: {warning}"))
        .collect();
    print_errors(&warnings);
    if cli.validate == ValidateMode::Strict {
        let problems = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(runtime) => runtime.block_on(crate::preflight::reach_sources(&checked.config)),
            Err(error) => vec![format!("cannot start the runtime: {error}")],
        };
        if !problems.is_empty() {
            print_errors(&problems);
            return ExitCode::FAILURE;
        }
    }
    println!("config is valid");
    ExitCode::SUCCESS
}

/// `config [--dump]`: the merged configuration as JSON, secrets masked. Features this
/// build cannot run do not stop the dump.
pub(crate) fn dump_config(cli: &Cli) -> ExitCode {
    match LaredoConfig::load(cli.load_options()) {
        Ok(config) => {
            println!("{}", config.to_json_string());
            ExitCode::SUCCESS
        }
        Err(errors) => {
            print_errors(&errors.iter().map(ToString::to_string).collect::<Vec<_>>());
            ExitCode::FAILURE
        }
    }
}

/// `healthcheck`: GET the readiness probe on the loopback interface.
pub(crate) fn healthcheck(port: u16) -> ExitCode {
    match probe(port) {
        Ok(200) => {
            println!("ready");
            ExitCode::SUCCESS
        }
        Ok(status) => {
            println!("not ready (status {status})");
            ExitCode::FAILURE
        }
        Err(error) => {
            println!("not ready ({error})");
            ExitCode::FAILURE
        }
    }
}

/// The HTTP status of `GET /health/ready` on `127.0.0.1:port`. A plain HTTP/1.1 request
/// over a socket is all a probe needs, so the binary carries no HTTP client.
fn probe(port: u16) -> std::io::Result<u16> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let mut stream = TcpStream::connect_timeout(&addr, HEALTHCHECK_TIMEOUT)?;
    stream.set_read_timeout(Some(HEALTHCHECK_TIMEOUT))?;
    stream.set_write_timeout(Some(HEALTHCHECK_TIMEOUT))?;
    write!(
        stream,
        "GET {HEALTHCHECK_PATH} HTTP/1.1\r\nHost: localhost:{port}\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = Vec::new();
    let mut buf = [0_u8; 512];
    // The status line is all we need; stop reading once it is complete.
    while !response.contains(&b'\n') {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            break;
        }
        response.extend_from_slice(&buf[..n]);
    }
    let line = String::from_utf8_lossy(&response);
    line.split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| std::io::Error::other("malformed HTTP response"))
}
