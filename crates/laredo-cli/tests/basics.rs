//! What needs no server, and what happens without one: version, usage, completions,
//! an unreachable address.

use crate::support::run;

#[tokio::test]
async fn an_unreachable_server_is_named_and_exits_one() {
    // A port that was just free: bind, note it, release it.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let out = run(&["-a".to_string(), addr.to_string()], &["status"]).await;
    assert_eq!(
        out.failed(),
        format!("error: cannot reach laredo at http://{addr}: connection refused\n")
    );
    assert_eq!(out.stdout, "");
}

#[tokio::test]
async fn the_address_can_come_from_the_environment() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_laredo"))
        .arg("pipelines")
        .env("LAREDO_ADDRESS", addr.to_string())
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8(out.stderr).unwrap(),
        format!("error: cannot reach laredo at http://{addr}: connection refused\n")
    );
}

#[tokio::test]
async fn version_prints_the_crate_version() {
    let out = run(&[], &["version"]).await;
    assert_eq!(out.ok(), format!("laredo {}\n", env!("CARGO_PKG_VERSION")));
}

#[tokio::test]
async fn help_exits_zero_and_an_unknown_command_exits_one() {
    let help = run(&[], &["--help"]).await;
    assert!(
        help.ok().contains("Usage: laredo [OPTIONS] <COMMAND>"),
        "{help:#?}"
    );
    let unknown = run(&[], &["frobnicate"]).await;
    assert!(
        unknown
            .failed()
            .contains("unrecognized subcommand 'frobnicate'"),
        "{unknown:#?}"
    );
    assert!(unknown.stderr.contains("Usage: laredo"), "{unknown:#?}");
}

#[tokio::test]
async fn bash_completions_cover_the_commands() {
    let out = run(&[], &["completions", "bash"]).await;
    let script = out.ok();
    assert!(script.contains("_laredo()"), "{script}");
    assert!(script.contains("complete -F _laredo"), "{script}");
    for command in [
        "status",
        "pipelines",
        "query",
        "watch",
        "dead-letters",
        "fanout",
    ] {
        assert!(script.contains(command), "{command} missing");
    }
}
