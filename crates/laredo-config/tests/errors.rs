//! Validation reports every problem at once, one per mistake, with its key path.

use laredo_config::{LaredoConfig, LoadOptions};

use crate::{MINIMAL, error_lines};

#[test]
fn one_error_per_mistake_with_its_key_path() {
    let text = r#"
        sources {
          pg_main { type = postgresql, connection = "postgres://h/db", slot_mode = statefull }
          kin { type = s3-kinesis, baseline_bucket = "s3://b/", stream_arn = arn, region = 5 }
        }
        grpc { port = "abc", tls.enabled = true }
        fanout.grpc.port = 4001
        tables = [
          { source = pg_main, schema = public, table = a, targets = [{ type = indexed-memory, lookup_feilds = [id] }] }
          { source = pg_mian, schema = public, table = b, targets = [{ type = memroy }] }
          { source = pg_main, table = c, targets = [{ type = indexed-memory }] }
          { source = pg_main, schema = public, table = d, targets = [{
              type = http-sync, base_url = "http://sink"
              buffer.policy = blok
              filters = [{ type = field-regex, field = email, pattern = "(" }]
              error_handling.max_retries = -1
          }] }
        ]
        shutdown.timeout = forever
    "#;
    let errors = error_lines(LoadOptions::new().text(text));
    assert_eq!(
        errors,
        [
            r#"sources.pg_main.slot_mode: expected one of "ephemeral", "stateful", found "statefull" (did you mean "stateful"?)"#,
            r#"tables[0].targets[0].lookup_feilds: unknown key (did you mean "lookup_fields"?)"#,
            "tables[0].targets[0]: lookup_fields is required for type indexed-memory",
            r#"tables[1].targets[0].type: unknown target type "memroy" (expected one of indexed-memory, compiled-memory, replication-fanout, http-sync)"#,
            "tables[2]: schema is required",
            "tables[2].targets[0]: lookup_fields is required for type indexed-memory",
            r#"tables[3].targets[0].buffer.policy: expected one of "block", "drop_oldest", "error", found "blok" (did you mean "block"?)"#,
            "tables[3].targets[0].error_handling.max_retries: must be at least 0, found -1",
            "tables[3].targets[0].filters[0].pattern: invalid regular expression: error: unclosed group",
            r#"grpc.port: expected an integer, found string "abc""#,
            "grpc.tls: cert_path is required when enabled is true",
            "grpc.tls: key_path is required when enabled is true",
            r#"shutdown.timeout: expected a duration such as "500ms", "5s", "10 seconds", "24h" or "7d", found "forever""#,
            r#"tables[1]: references unknown source "pg_mian""#,
        ]
    );
}

#[test]
fn display_prints_one_problem_per_line() {
    let errors = "tables = []".parse::<LaredoConfig>().expect_err("invalid");
    assert_eq!(errors.len(), 2);
    assert_eq!(
        errors.to_string(),
        "at least one source is required\nat least one table is required"
    );
    assert_eq!(errors.errors()[0].path(), "");
}

#[test]
fn exact_structural_messages() {
    let text = r#"
        sources.arc { type = archive }
        tables = [
          { schema = s, table = t, targets = [{ lookup_fields = [id] }] }
          { source = arc, schema = s, table = t }
        ]
    "#;
    let errors = error_lines(LoadOptions::new().text(text));
    assert_eq!(
        errors,
        [
            "sources.arc: archive source requires a store (store, store_config, key_prefix)",
            "tables[0]: source is required",
            "tables[0].targets[0]: type is required",
            "tables[1]: at least one target is required",
        ]
    );
}

#[test]
fn a_bind_address_that_is_no_ip_address_is_named() {
    let errors = error_lines(LoadOptions::new().text(format!(
        "{MINIMAL}\ngrpc.bind = localhost\nhealth.bind = \"10.0.0.300\""
    )));
    assert_eq!(
        errors,
        [
            r#"grpc.bind: "localhost" is not an IP address ("0.0.0.0" for every interface, "127.0.0.1" for loopback, "::")"#,
            r#"health.bind: "10.0.0.300" is not an IP address ("0.0.0.0" for every interface, "127.0.0.1" for loopback, "::")"#,
        ]
    );
}

#[test]
fn a_zero_limit_is_refused_with_its_key() {
    let errors = error_lines(LoadOptions::new().text(format!(
        "{MINIMAL}\nfanout.grpc.limits.max_connections = 0\ngrpc.limits.idle_timeout = 0s"
    )));
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert!(
        errors[0].starts_with("grpc.limits.idle_timeout:"),
        "{errors:?}"
    );
    assert!(
        errors[1].starts_with("fanout.grpc.limits.max_connections:"),
        "{errors:?}"
    );
}

#[test]
fn port_collisions() {
    let errors = error_lines(LoadOptions::new().text(format!(
        "{MINIMAL}\nfanout.grpc.port = 4001\nobservability.metrics.port = 8080"
    )));
    assert_eq!(
        errors,
        [
            "fanout.grpc.port (4001) must differ from grpc.port",
            "observability.metrics.port (8080) must differ from health.http_port",
        ]
    );
}

#[test]
fn keys_of_another_type_and_wrong_shapes() {
    let text = format!(
        "{MINIMAL}\ntables += {{ source = pg, schema = s, table = u, targets = {{ type = http-sync }} }}\n\
         tables += {{ source = pg, schema = s, table = v, targets = [{{ type = http-sync, base_url = \"ftp://x\", lookup_fields = [id] }}] }}\n\
         snapshot {{ enabled = yes }}\nsources.pg.reconnect {{ initial_backoff = 10s, max_backoff = 5s }}"
    );
    let errors = error_lines(LoadOptions::new().text(text));
    assert_eq!(
        errors,
        [
            "sources.pg.reconnect.max_backoff: must be at least initial_backoff (10s)",
            "tables[1].targets: expected a list, found an object",
            "tables[2].targets[0].lookup_fields: not a key of type http-sync",
            r#"tables[2].targets[0].base_url: expected an http:// or https:// URL, found "ftp://x""#,
            "snapshot: store is required when enabled is true",
        ]
    );
}

#[test]
fn conditional_requirements() {
    let options = LoadOptions::new()
        .text(format!(
            "{MINIMAL}\nsnapshot {{ enabled = true, store = s3, store_config.prefix = snaps/ }}"
        ))
        .overrides([
            "tables[0].ttl.check_interval=1m",
            "tables[0].targets[0].error_handling.dead_letter.enabled=true",
            "tables[0].targets[0].error_handling.dead_letter.store=local",
        ]);
    assert_eq!(
        error_lines(options),
        [
            "tables[0].targets[0].error_handling.dead_letter.config: path is required for store local",
            "tables[0].ttl: field is required when mode is field",
            "snapshot.store_config: bucket is required for store s3",
        ]
    );
}
