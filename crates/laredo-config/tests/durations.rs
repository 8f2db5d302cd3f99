//! Durations in HOCON forms, and unparseable ones as errors.

use std::time::Duration;

use laredo_config::{LoadOptions, parse_duration};

use crate::{MINIMAL, error_lines, parse};

#[test]
fn hocon_forms() {
    let cases = [
        ("5s", Duration::from_secs(5)),
        ("24h", Duration::from_secs(86_400)),
        ("10 seconds", Duration::from_secs(10)),
        ("500ms", Duration::from_millis(500)),
        ("200 milliseconds", Duration::from_millis(200)),
        ("7d", Duration::from_secs(7 * 86_400)),
        ("3 minutes", Duration::from_secs(180)),
        ("1m", Duration::from_secs(60)),
        ("250", Duration::from_millis(250)),
        ("1.5h", Duration::from_secs(5_400)),
        ("0s", Duration::ZERO),
    ];
    for (text, expected) in cases {
        assert_eq!(parse_duration(text), Ok(expected), "{text}");
    }
}

#[test]
fn rejects_garbage() {
    for text in ["", "s", "5 parsecs", "1.2.3s", "-5s", "five seconds", "5ss"] {
        assert!(parse_duration(text).is_err(), "{text:?} should be rejected");
    }
}

#[test]
fn bare_quoted_and_numeric_values_in_a_file() {
    let config = parse(&format!(
        "{MINIMAL}\nshutdown {{ timeout = 45 seconds, drain_timeout = \"1500ms\" }}\nsources.pg.reconnect.max_backoff = 90000"
    ));
    assert_eq!(config.shutdown.timeout, Duration::from_secs(45));
    assert_eq!(config.shutdown.drain_timeout, Duration::from_millis(1_500));
    let laredo_config::SourceConfig::Postgres(pg) = &config.sources["pg"] else {
        panic!("pg");
    };
    assert_eq!(pg.reconnect.max_backoff, Duration::from_secs(90));
}

#[test]
fn unparseable_duration_is_an_error_not_zero() {
    let errors =
        error_lines(LoadOptions::new().text(format!("{MINIMAL}\nshutdown.timeout = soon")));
    assert_eq!(
        errors,
        [
            r#"shutdown.timeout: expected a duration such as "500ms", "5s", "10 seconds", "24h" or "7d", found "soon""#
        ]
    );
}

#[test]
fn schedule_accepts_every() {
    let config = parse(&format!(
        "{MINIMAL}\nsnapshot {{ schedule = \"every 30m\" }}"
    ));
    assert_eq!(config.snapshot.schedule, Some(Duration::from_secs(1_800)));
    let config = parse(&format!("{MINIMAL}\nsnapshot {{ schedule = 2h }}"));
    assert_eq!(config.snapshot.schedule, Some(Duration::from_secs(7_200)));
}
