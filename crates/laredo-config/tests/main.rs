//! Integration tests of laredo-config: one binary, one module per concern.

mod complete;
mod defaults;
mod dump;
mod durations;
mod errors;
mod layers;
mod reference;

use laredo_config::{LaredoConfig, LoadOptions};

/// The smallest valid configuration.
pub(crate) const MINIMAL: &str = r#"
sources.pg { type = pg, connection = "postgres://localhost/app" }
tables = [{ source = pg, schema = public, table = users, targets = [{ type = indexed-memory, lookup_fields = [id] }] }]
"#;

pub(crate) fn parse(text: &str) -> LaredoConfig {
    match text.parse::<LaredoConfig>() {
        Ok(config) => config,
        Err(errors) => panic!("config should be valid, got:\n{errors}"),
    }
}

pub(crate) fn error_lines(options: LoadOptions) -> Vec<String> {
    match LaredoConfig::load(options) {
        Ok(config) => panic!("config should be invalid, got {config:#?}"),
        Err(errors) => errors.iter().map(ToString::to_string).collect(),
    }
}

pub(crate) fn complete_path() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/complete.conf")
}
