//! Project automation for laredo: `cargo xtask <command>`.
//!
//! - `test`: installs what the suite needs, then runs fmt, clippy, every test and the
//!   doc tests of the workspace.
//! - `deps`: installs what the suite needs (idempotent).
//! - `bench <name>`: runs a benchmark in release mode; each prints a table and one JSON
//!   line per figure.
//! - `codegen [--check]`: writes the checked-in generated files (docs/configuration.md,
//!   from laredo-config's schema); `--check` only reports the stale ones. Each has a
//!   test that regenerates it in memory and fails when the file is stale.
//! - `example`: runs the quick-start example (README's main-job command until the
//!   server lands).

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use anyhow::{Context, Result, bail};

mod codegen;
mod demo;

const BENCHES: &[(&str, &str, &str)] = &[
    (
        "engine",
        "laredo-core",
        "changes/s through one pipeline into an IndexedTarget, lookups/s, bytes per row",
    ),
    (
        "baseline",
        "laredo-source-pg",
        "PostgreSQL baseline rows/s into an IndexedTarget vs psql \\copy",
    ),
    (
        "stream",
        "laredo-source-pg",
        "PostgreSQL changes/s from WAL into an IndexedTarget vs pg_recvlogical; lag p50/p99",
    ),
    (
        "fanout",
        "laredo-target-fanout",
        "fan-out delivered changes/s and p50/p99 latency with 100 / 1,000 / 5,000 clients",
    ),
];

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &[String]) -> Result<()> {
    let root = workspace_root()?;
    match args.first().map(String::as_str) {
        Some("test") => test(&root, &args[1..]),
        Some("deps") => deps(),
        Some("bench") => bench(&root, &args[1..]),
        Some("codegen") => codegen::codegen(&root, &args[1..]),
        Some("example") => example(&root),
        Some("demo") => demo::demo(&root, &args[1..]),
        Some("help" | "--help" | "-h") | None => {
            print_help();
            Ok(())
        }
        Some(other) => {
            print_help();
            bail!("unknown command {other:?}")
        }
    }
}

fn print_help() {
    println!("usage: cargo xtask <command>");
    println!();
    println!("commands:");
    println!(
        "  test [--no-lint]   install what is missing, then fmt, clippy, all tests and doc tests"
    );
    println!(
        "  deps               install what the test suite needs: PostgreSQL server (idempotent)"
    );
    println!("  bench <name>       run a benchmark in release mode");
    println!(
        "  codegen [--check]  write the generated files (docs/configuration.md); --check only compares"
    );
    println!(
        "  demo [--seconds N] a throwaway PostgreSQL, laredo-server, a write load and live changes"
    );
    println!("  example            run the quick-start example");
    println!();
    println!("benchmarks:");
    for (name, _, what) in BENCHES {
        println!("  {name:<8} {what}");
    }
}

fn workspace_root() -> Result<PathBuf> {
    // `cargo run` sets CARGO_MANIFEST_DIR at run time. Prefer it over the compile-time value:
    // a target dir shared between checkouts (as `.ci/run` does) reuses one xtask binary, and
    // the path baked into it may be another checkout's.
    let manifest_dir = std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")));
    manifest_dir
        .parent()
        .map(Path::to_path_buf)
        .context("xtask lives one level below the workspace root")
}

fn cargo() -> Command {
    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string()))
}

fn run_step(what: &str, command: &mut Command) -> Result<()> {
    eprintln!("==> {what}");
    let status = command
        .status()
        .with_context(|| format!("failed to run {what}"))?;
    if !status.success() {
        bail!("{what} failed ({status})");
    }
    Ok(())
}

fn has_nextest() -> bool {
    cargo()
        .args(["nextest", "--version"])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Installs what the suite needs, idempotently: cargo-nextest (optional) and the
/// PostgreSQL server from the distribution's packages (the tests start throwaway
/// clusters from its binaries; no server needs to be running).
fn deps() -> Result<()> {
    ensure_postgres()?;
    if !has_nextest() {
        eprintln!("==> cargo-nextest not found; installing it (tests also run without it)");
        let installed = cargo()
            .args(["install", "--locked", "cargo-nextest"])
            .status()
            .is_ok_and(|s| s.success());
        if !installed {
            eprintln!("    cargo-nextest could not be installed; falling back to cargo test");
        }
    }
    Ok(())
}

/// The package the tests start their clusters from (the one this Debian release ships).
const POSTGRES_PACKAGE: &str = "postgresql-15";

fn postgres_installed() -> bool {
    if let Some(dir) = std::env::var_os("LAREDO_PG_BIN") {
        return Path::new(&dir).join("initdb").exists();
    }
    std::fs::read_dir("/usr/lib/postgresql").is_ok_and(|versions| {
        versions
            .filter_map(Result::ok)
            .any(|v| v.path().join("bin/initdb").exists())
    })
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

fn ensure_postgres() -> Result<()> {
    if postgres_installed() {
        return Ok(());
    }
    eprintln!(
        "==> PostgreSQL server not found; installing {POSTGRES_PACKAGE} from the distribution's packages"
    );
    let apt = |args: &[&str]| -> Result<()> {
        let mut command = if is_root() {
            Command::new("apt-get")
        } else {
            let mut sudo = Command::new("sudo");
            sudo.arg("apt-get");
            sudo
        };
        command.args(args).env("DEBIAN_FRONTEND", "noninteractive");
        run_step(&format!("apt-get {}", args.join(" ")), &mut command)
    };
    apt(&["update", "-q"])?;
    apt(&[
        "install",
        "-y",
        "-q",
        "--no-install-recommends",
        POSTGRES_PACKAGE,
    ])?;
    if !postgres_installed() {
        bail!(
            "{POSTGRES_PACKAGE} was installed but no /usr/lib/postgresql/*/bin/initdb exists; set LAREDO_PG_BIN"
        );
    }
    Ok(())
}

fn test(root: &Path, args: &[String]) -> Result<()> {
    deps()?;
    let lint = !args.iter().any(|a| a == "--no-lint");
    if lint {
        run_step(
            "cargo fmt --check",
            cargo().current_dir(root).args(["fmt", "--all", "--check"]),
        )?;
        run_step(
            "cargo clippy",
            cargo().current_dir(root).args([
                "clippy",
                "--workspace",
                "--all-targets",
                "--locked",
                "--",
                "-D",
                "warnings",
            ]),
        )?;
    }
    if has_nextest() {
        run_step(
            "cargo nextest run",
            cargo().current_dir(root).args([
                "nextest",
                "run",
                "--workspace",
                "--locked",
                "--no-fail-fast",
            ]),
        )?;
    } else {
        run_step(
            "cargo test",
            cargo().current_dir(root).args([
                "test",
                "--workspace",
                "--locked",
                "--lib",
                "--bins",
                "--tests",
                "--examples",
            ]),
        )?;
    }
    run_step(
        "cargo test --doc",
        cargo()
            .current_dir(root)
            .args(["test", "--workspace", "--locked", "--doc"]),
    )?;
    Ok(())
}

fn bench(root: &Path, args: &[String]) -> Result<()> {
    let Some(name) = args.first() else {
        print_help();
        bail!("bench needs a name");
    };
    let Some((_, package, _)) = BENCHES.iter().find(|(n, _, _)| n == name) else {
        print_help();
        bail!("unknown benchmark {name:?}");
    };
    run_step(
        &format!("bench {name}"),
        cargo()
            .current_dir(root)
            .args(["bench", "--locked", "-p", package, "--bench", name, "--"])
            .args(&args[1..]),
    )
}

fn example(root: &Path) -> Result<()> {
    ensure_postgres()?;
    run_step(
        "quick-start example (a throwaway PostgreSQL, an engine, a lookup, live changes)",
        cargo().current_dir(root).args([
            "run",
            "--locked",
            "-p",
            "laredo-source-pg",
            "--example",
            "pg_users",
        ]),
    )
}
