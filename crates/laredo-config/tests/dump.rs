//! `--dump-config`: secrets redacted, and the dump parses back.

use laredo_config::{LaredoConfig, LoadOptions};

use crate::{MINIMAL, complete_path, parse};

#[test]
fn secrets_are_redacted() {
    let config = LaredoConfig::load(LoadOptions::new().file(complete_path())).expect("valid");
    let json = config.to_json();
    assert_eq!(json["sources"]["pg_main"]["connection"], "***");
    assert_eq!(json["tables"][0]["targets"][3]["auth_header"], "***");
    assert_eq!(json["grpc"]["auth"]["admin_token"], "***");
    assert_eq!(json["grpc"]["auth"]["admin_tokens"][0], "***");
    assert_eq!(json["grpc"]["auth"]["read_tokens"][1], "***");
    // Where a token is read from is no secret.
    assert_eq!(
        json["grpc"]["auth"]["admin_token_files"][0],
        "/run/secrets/laredo-admin"
    );
    // Not secrets: left alone.
    assert_eq!(json["sources"]["pg_main"]["slot_name"], "laredo_orders");
    assert_eq!(
        json["tables"][0]["targets"][3]["base_url"],
        "https://sink.internal/laredo"
    );
    for text in [config.to_json_string(), config.to_hocon_string()] {
        for secret in [
            "hunter2",
            "sink-secret",
            "s3cret-token",
            "next-admin-token",
            "reader-token-2",
        ] {
            assert!(!text.contains(secret), "{secret} leaked into:\n{text}");
        }
    }
}

#[test]
fn any_password_secret_or_token_key_is_redacted_and_empty_stays_empty() {
    let config = parse(&format!(
        "{MINIMAL}\nsnapshot.user_meta {{ db_password = pw, api_secret = x, refresh_token = \"\", note = hi }}"
    ));
    let meta = &config.to_json()["snapshot"]["user_meta"];
    assert_eq!(meta["db_password"], "***");
    assert_eq!(meta["api_secret"], "***");
    assert_eq!(meta["refresh_token"], "");
    assert_eq!(meta["note"], "hi");
}

#[test]
fn hocon_dump_parses_back_to_the_same_config() {
    let original = parse(MINIMAL);
    let dumped = original.to_hocon_string();
    let reparsed = match LaredoConfig::load(LoadOptions::new().text(dumped.clone())) {
        Ok(config) => config,
        Err(errors) => panic!("dump does not parse back:\n{errors}\n---\n{dumped}"),
    };
    // The connection was redacted; everything else is identical.
    let mut expected = original.clone();
    if let laredo_config::SourceConfig::Postgres(pg) = expected.sources.get_mut("pg").expect("pg") {
        pg.connection = "***".to_owned();
    }
    assert_eq!(reparsed, expected);
}

#[test]
fn complete_dump_round_trips_apart_from_secrets() {
    let original = LaredoConfig::load(LoadOptions::new().file(complete_path())).expect("valid");
    let dumped = original.to_hocon_string();
    let reparsed = match dumped.parse::<LaredoConfig>() {
        Ok(config) => config,
        Err(errors) => panic!("dump does not parse back:\n{errors}\n---\n{dumped}"),
    };
    assert_eq!(reparsed.to_json(), original.to_json());
    assert_ne!(reparsed, original, "secrets must not survive the dump");
}

#[test]
fn a_tls_connection_string_is_accepted_and_its_key_password_redacted() {
    let config = parse(
        r#"
sources.pg { type = pg, connection = "postgresql://laredo@db:5432/app?sslmode=verify-full&sslrootcert=/etc/laredo/ca.pem&sslcert=/etc/laredo/client.crt&sslkey=/etc/laredo/client.key&sslpassword=keypass" }
tables = [{ source = pg, schema = public, table = users, targets = [{ type = indexed-memory, lookup_fields = [id] }] }]
"#,
    );
    assert_eq!(config.to_json()["sources"]["pg"]["connection"], "***");
    for text in [config.to_json_string(), config.to_hocon_string()] {
        assert!(
            !text.contains("keypass"),
            "sslpassword leaked into:\n{text}"
        );
    }
}
