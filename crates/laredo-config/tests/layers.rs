//! Each loading layer overrides the one before it.

use std::fs;
use std::time::Duration;

use laredo_config::{LaredoConfig, LoadOptions, SourceConfig, TargetKind};

use crate::{MINIMAL, error_lines};

fn load(options: LoadOptions) -> LaredoConfig {
    match LaredoConfig::load(options) {
        Ok(config) => config,
        Err(errors) => panic!("config should be valid:\n{errors}"),
    }
}

/// A main file setting `grpc.port = 5000` and `health.http_port = 7000`, with a conf.d
/// next to it.
fn layered_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    fs::write(
        dir.path().join("laredo.conf"),
        format!("{MINIMAL}\ngrpc.port = 5000\nhealth.http_port = 7000\nshutdown.timeout = 1m"),
    )
    .expect("write");
    dir
}

#[test]
fn file_overrides_defaults() {
    let dir = layered_dir();
    let config = load(LoadOptions::new().file(dir.path().join("laredo.conf")));
    assert_eq!(config.grpc.port, 5000);
    assert_eq!(
        config.fanout.grpc.port, 4002,
        "untouched keys keep their default"
    );
}

#[test]
fn laredo_config_env_var_names_the_file() {
    let dir = layered_dir();
    let path = dir.path().join("laredo.conf");
    let config = load(LoadOptions::new().env([("LAREDO_CONFIG", path.to_str().expect("utf-8"))]));
    assert_eq!(config.grpc.port, 5000);
}

#[test]
fn conf_d_next_to_the_file_overrides_it_in_name_order() {
    let dir = layered_dir();
    let conf_d = dir.path().join("conf.d");
    fs::create_dir(&conf_d).expect("mkdir");
    fs::write(conf_d.join("20-late.conf"), "grpc.port = 5020").expect("write");
    fs::write(
        conf_d.join("10-early.conf"),
        "grpc.port = 5010\nhealth.http_port = 7010",
    )
    .expect("write");
    fs::write(conf_d.join("ignored.txt"), "grpc.port = 1").expect("write");
    let config = load(LoadOptions::new().file(dir.path().join("laredo.conf")));
    assert_eq!(config.grpc.port, 5020);
    assert_eq!(config.health.http_port, 7010);
    assert_eq!(
        config.shutdown.timeout,
        Duration::from_secs(60),
        "objects deep-merge"
    );
}

#[test]
fn init_dir_comes_before_conf_dir() {
    let dir = layered_dir();
    let init = dir.path().join("init");
    let conf = dir.path().join("conf");
    fs::create_dir(&init).expect("mkdir");
    fs::create_dir(&conf).expect("mkdir");
    fs::write(
        init.join("a.conf"),
        "grpc.port = 5100\nhealth.http_port = 7100",
    )
    .expect("write");
    fs::write(conf.join("a.conf"), "grpc.port = 5200").expect("write");
    let config = load(
        LoadOptions::new()
            .file(dir.path().join("laredo.conf"))
            .init_dir(&init)
            .conf_dir(&conf),
    );
    assert_eq!(config.grpc.port, 5200);
    assert_eq!(config.health.http_port, 7100);
}

#[test]
fn fragments_may_refer_to_the_main_file() {
    let dir = layered_dir();
    let conf_d = dir.path().join("conf.d");
    fs::create_dir(&conf_d).expect("mkdir");
    fs::write(
        conf_d.join("a.conf"),
        "fanout.grpc.port = ${grpc.port}\nfanout.grpc.port = 5001",
    )
    .expect("write");
    let config = load(LoadOptions::new().file(dir.path().join("laredo.conf")));
    assert_eq!(config.fanout.grpc.port, 5001);
}

#[test]
fn env_overrides_files_and_set_overrides_env() {
    let dir = layered_dir();
    let conf_d = dir.path().join("conf.d");
    fs::create_dir(&conf_d).expect("mkdir");
    fs::write(conf_d.join("a.conf"), "grpc.port = 5010").expect("write");
    let base = || {
        LoadOptions::new()
            .file(dir.path().join("laredo.conf"))
            .env([
                ("LAREDO_GRPC_PORT", "6000"),
                ("LAREDO_HEALTH_HTTP_PORT", "6100"),
            ])
    };
    let config = load(base());
    assert_eq!((config.grpc.port, config.health.http_port), (6000, 6100));
    let config = load(base().set("grpc.port=6500"));
    assert_eq!((config.grpc.port, config.health.http_port), (6500, 6100));
}

#[test]
fn env_maps_nested_and_indexed_keys() {
    let config = load(
        LoadOptions::new()
            .text(
                r#"
                sources.pg_main { type = postgresql, connection = "postgres://file/db" }
                tables = [{ source = pg_main, schema = s, table = t, targets = [{ type = http-sync, base_url = "http://a" }] }]
                "#,
            )
            .env([
                ("LAREDO_SOURCES_PG_MAIN_CONNECTION", "postgres://env/db"),
                ("LAREDO_SOURCES_PG_MAIN_SLOT_MODE", "stateful"),
                ("LAREDO_SOURCES_PG_MAIN_ALWAYS_BASELINE", "1"),
                ("LAREDO_SOURCES_PG_MAIN_PUBLICATION_CREATE", "true"),
                ("LAREDO_TABLES_0_TARGETS_0_AUTH_HEADER", "Bearer env"),
                ("LAREDO_TABLES_0_TARGETS_0_BATCH_SIZE", "42"),
                // Unknown names and bad booleans are ignored.
                ("LAREDO_LOG_FORMAT", "x"),
                ("LAREDO_SOURCES_PG_MAIN_FOLLOW", "maybe"),
            ]),
    );
    let SourceConfig::Postgres(pg) = &config.sources["pg_main"] else {
        panic!("{:?}", config.sources["pg_main"]);
    };
    assert_eq!(pg.connection, "postgres://env/db");
    assert_eq!(pg.slot_mode, laredo_config::SlotMode::Stateful);
    assert!(pg.always_baseline);
    assert!(pg.publication.create);
    let TargetKind::HttpSync(http) = &config.tables[0].targets[0].kind else {
        panic!("{:?}", config.tables[0].targets[0].kind);
    };
    assert_eq!(http.auth_header.as_deref(), Some("Bearer env"));
    assert_eq!(http.batch_size, 42);
}

#[test]
fn prefixed_env_wins_over_bare_and_bare_works_alone() {
    let config = load(LoadOptions::new().text(MINIMAL).env([
        ("GRPC_PORT", "5001"),
        ("LAREDO_GRPC_PORT", "5002"),
        ("HEALTH_HTTP_PORT", "5003"),
    ]));
    assert_eq!(config.grpc.port, 5002);
    assert_eq!(config.health.http_port, 5003);
}

#[test]
fn configuration_from_the_environment_alone() {
    let config = load(LoadOptions::new().env([
        ("LAREDO_SOURCES_PG_MAIN_TYPE", "postgresql"),
        ("LAREDO_SOURCES_PG_MAIN_CONNECTION", "postgres://env/db"),
        ("LAREDO_SOURCES_PG_MAIN_SLOT_NAME", "env_slot"),
        ("LAREDO_TABLES_0_SOURCE", "pg_main"),
        ("LAREDO_TABLES_0_SCHEMA", "public"),
        ("LAREDO_TABLES_0_TABLE", "users"),
        ("LAREDO_TABLES_0_TARGETS_0_TYPE", "indexed-memory"),
        ("LAREDO_TABLES_0_TARGETS_0_LOOKUP_FIELDS", "id,email"),
    ]));
    let SourceConfig::Postgres(pg) = &config.sources["pg_main"] else {
        panic!("{:?}", config.sources["pg_main"]);
    };
    assert_eq!(pg.slot_name, "env_slot");
    let TargetKind::IndexedMemory(indexed) = &config.tables[0].targets[0].kind else {
        panic!("{:?}", config.tables[0].targets[0].kind);
    };
    assert_eq!(indexed.lookup_fields, ["id", "email"]);
}

#[test]
fn substitutions_fall_back_to_the_given_environment() {
    let text = format!(
        "{MINIMAL}\nsources.pg.connection = ${{PG_URL}}\nsources.pg.slot_name = ${{?UNSET_SLOT}}"
    );
    let config = load(
        LoadOptions::new()
            .text(text.clone())
            .env([("PG_URL", "postgres://sub/db")]),
    );
    let SourceConfig::Postgres(pg) = &config.sources["pg"] else {
        panic!("{:?}", config.sources["pg"]);
    };
    assert_eq!(pg.connection, "postgres://sub/db");
    assert_eq!(pg.slot_name, "laredo_slot");
    let errors = error_lines(LoadOptions::new().text(text));
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].contains("PG_URL"), "{errors:?}");
}

#[test]
fn set_overrides_nest_index_and_quote() {
    let config = load(LoadOptions::new().text(MINIMAL).overrides([
        "tables[0].targets[0].buffer.max_size=7",
        "tables.0.targets.0.buffer.policy=drop_oldest",
        "snapshot.user_meta.note=hello world, again",
        "observability.logging.level=warn",
    ]));
    assert_eq!(config.tables[0].targets[0].buffer.max_size, 7);
    assert_eq!(
        config.tables[0].targets[0].buffer.policy,
        laredo_config::BufferPolicy::DropOldest
    );
    assert_eq!(config.snapshot.user_meta["note"], "hello world, again");
    assert_eq!(
        config.observability.logging.level,
        laredo_config::LogLevel::Warn
    );
}

#[test]
fn malformed_override() {
    let errors = error_lines(LoadOptions::new().text(MINIMAL).set("grpc.port"));
    assert_eq!(
        errors,
        [r#"invalid override "grpc.port": expected key=value"#]
    );
}

#[test]
fn missing_file_and_syntax_errors_name_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("nope.conf");
    let errors = error_lines(LoadOptions::new().file(&missing));
    assert_eq!(errors.len(), 1);
    assert!(
        errors[0].starts_with(&format!("cannot read {}", missing.display())),
        "{errors:?}"
    );

    let broken = dir.path().join("broken.conf");
    fs::write(&broken, "grpc {\n  port = \n").expect("write");
    let errors = error_lines(LoadOptions::new().file(&broken));
    assert_eq!(errors.len(), 1);
    assert!(
        errors[0].starts_with(&format!("{}: line ", broken.display())),
        "{errors:?}"
    );
}
