//! TLS to a server with laredo-service's certificate fixtures: the CA (`--cert`), the
//! server name (`--tls-server-name`, `LAREDO_TLS_SERVER_NAME`) and what is refused.

use crate::support::{READ_TOKEN, Run, Server, fixture, run, server, server_tls};

fn ca() -> String {
    fixture("server.crt").display().to_string()
}

/// Runs `laredo` against `server` with the read token and `flags`, `env` set.
async fn run_with(server: &Server, flags: &[&str], env: &[(&str, &str)], args: &[&str]) -> Run {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_laredo"));
    command
        .args(args)
        .args(["-a", &server.addr.to_string(), "--token", READ_TOKEN])
        .args(flags)
        .env_remove("LAREDO_ADDRESS")
        .env_remove("LAREDO_TOKEN")
        .env_remove("LAREDO_TLS_SERVER_NAME")
        .envs(env.iter().copied());
    let output = command.output().await.unwrap();
    Run {
        code: output.status.code(),
        stdout: String::from_utf8(output.stdout).unwrap(),
        stderr: String::from_utf8(output.stderr).unwrap(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_ca_and_the_server_name_commands_work_over_tls() {
    let server = server_tls(3).await;
    let ca = ca();
    let out = run_with(
        &server,
        &["--tls", "--cert", &ca, "--tls-server-name", "localhost"],
        &[],
        &["status", "-o", "json"],
    )
    .await;
    let status: serde_json::Value = serde_json::from_str(out.ok()).unwrap();
    assert_eq!(status["pipelines"][0]["row_count"], 3, "{status}");

    // An https:// address turns TLS on; the certificate names 127.0.0.1 too.
    let https = run(
        &[
            "-a".to_string(),
            format!("https://{}", server.addr),
            "--cert".to_string(),
            ca.clone(),
            "--token".to_string(),
            READ_TOKEN.to_string(),
        ],
        &["query", "count", "public.users", "-o", "json"],
    )
    .await;
    assert!(https.ok().contains('3'), "{https:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_server_name_fails_naming_it() {
    let server = server_tls(1).await;
    let ca = ca();
    let out = run_with(
        &server,
        &[
            "--tls",
            "--cert",
            &ca,
            "--tls-server-name",
            "laredo.example.com",
        ],
        &[],
        &["status"],
    )
    .await;
    assert_eq!(
        out.failed(),
        format!(
            "error: cannot reach laredo at https://{}: invalid peer certificate: certificate not valid for name \"laredo.example.com\"; certificate is only valid for DnsName(\"localhost\") or IpAddress(127.0.0.1)\n",
            server.addr
        )
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_name_can_come_from_the_environment() {
    let server = server_tls(1).await;
    let ca = ca();
    let out = run_with(
        &server,
        &["--tls", "--cert", &ca],
        &[("LAREDO_TLS_SERVER_NAME", "from-env.example.com")],
        &["status"],
    )
    .await;
    assert!(
        out.failed()
            .contains("certificate not valid for name \"from-env.example.com\""),
        "{out:#?}"
    );
    let ok = run_with(
        &server,
        &["--tls", "--cert", &ca],
        &[("LAREDO_TLS_SERVER_NAME", "localhost")],
        &["tables"],
    )
    .await;
    assert!(ok.ok().contains("public.users"), "{ok:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_flags_without_tls_and_tls_without_a_ca_are_refused() {
    let server = server(1).await;
    let ca = ca();
    let name_only = run_with(
        &server,
        &["--tls-server-name", "localhost"],
        &[],
        &["status"],
    )
    .await;
    assert_eq!(
        name_only.failed(),
        "error: --cert and --tls-server-name (LAREDO_TLS_SERVER_NAME) apply to TLS: add --tls or use an https:// address\n"
    );
    let cert_only = run_with(&server, &["--cert", &ca], &[], &["status"]).await;
    assert_eq!(cert_only.stderr, name_only.stderr);
    let no_ca = run_with(&server, &["--tls"], &[], &["status"]).await;
    assert_eq!(
        no_ca.failed(),
        "error: TLS needs --cert <ca.pem>: the CA certificate that signed the server's\n"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plaintext_client_does_not_reach_a_tls_server() {
    let server = server_tls(1).await;
    let out = run_with(&server, &[], &[], &["status"]).await;
    let stderr = out.failed();
    assert!(
        stderr.starts_with(&format!(
            "error: the connection to http://{} failed: ",
            server.addr
        )),
        "{out:#?}"
    );
    assert!(
        stderr.ends_with(
            "\nhint: if the server serves TLS, add --tls and --cert <ca.pem> (or use an https:// address)\n"
        ),
        "{out:#?}"
    );
}
