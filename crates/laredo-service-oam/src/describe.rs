//! The configuration descriptions of `ListTables` (`source_config`, `target_config`)
//! and the masking of secrets in them.
//!
//! A source is described by its id, type, resume support, ordering and
//! [`SyncSource::details`](laredo_core::SyncSource::details); a target by its
//! [`TargetStatus::describe`](laredo_core::TargetStatus::describe). Sources and targets
//! should leave secrets out; masking is the second line: a value under a key that
//! names a secret (`password`, `token`, ...) becomes `****`, and so does the password
//! of a URL (`postgres://user:****@host/db`) or of a `password=` connection-string
//! pair.

use laredo_core::{Engine, SyncTarget};
use serde_json::{Map, Value as J};

/// What replaces a secret.
pub(crate) const MASK: &str = "****";

/// Key fragments that name a secret (compared lowercase).
const SECRET_KEYS: &[&str] = &[
    "password",
    "passwd",
    "secret",
    "token",
    "credential",
    "private_key",
    "api_key",
    "access_key",
];

/// The masked description of source `source_id`; `None` for an unknown id.
pub(crate) async fn source_config(engine: &Engine, source_id: &str) -> Option<Map<String, J>> {
    let source = engine.source(source_id)?;
    let mut config = Map::new();
    config.insert("id".into(), J::from(source_id));
    config.insert("type".into(), J::from(source.source_type()));
    config.insert("supports_resume".into(), J::from(source.supports_resume()));
    config.insert(
        "ordering_guarantee".into(),
        J::from(source.ordering_guarantee().as_str()),
    );
    config.insert("details".into(), J::Object(source.details().await));
    Some(masked(config))
}

/// The masked description of a target.
pub(crate) fn target_config(target: &dyn SyncTarget) -> Map<String, J> {
    let mut config = Map::new();
    config.insert("type".into(), J::from(target.type_name()));
    if let Some(status) = target.status() {
        config.extend(status.describe());
    }
    masked(config)
}

/// `map` with its secrets masked (see the module docs).
pub(crate) fn masked(map: Map<String, J>) -> Map<String, J> {
    map.into_iter()
        .map(|(key, value)| {
            let value = if is_secret_key(&key) && !value.is_null() {
                J::from(MASK)
            } else {
                mask_value(value)
            };
            (key, value)
        })
        .collect()
}

fn mask_value(value: J) -> J {
    match value {
        J::Object(map) => J::Object(masked(map)),
        J::Array(items) => J::Array(items.into_iter().map(mask_value).collect()),
        J::String(text) => J::String(mask_text(&text)),
        other => other,
    }
}

fn is_secret_key(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    SECRET_KEYS.iter().any(|secret| key.contains(secret))
}

/// Masks the password of a URL's user info and of `password=` connection-string pairs.
fn mask_text(text: &str) -> String {
    let text = mask_url_password(text);
    if !text.contains("password=") {
        return text;
    }
    text.split(' ')
        .map(|word| match word.split_once('=') {
            Some((key, _)) if key.eq_ignore_ascii_case("password") => format!("{key}={MASK}"),
            _ => word.to_string(),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn mask_url_password(text: &str) -> String {
    let Some(scheme_end) = text.find("://") else {
        return text.to_string();
    };
    let authority_start = scheme_end + 3;
    let rest = &text[authority_start..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let Some(at) = rest[..authority_end].rfind('@') else {
        return text.to_string();
    };
    let Some(colon) = rest[..at].find(':') else {
        return text.to_string();
    };
    format!(
        "{}{MASK}{}",
        &text[..authority_start + colon + 1],
        &text[authority_start + at..]
    )
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn secrets_are_masked_at_any_depth() {
        let J::Object(config) = json!({
            "connection": "postgres://laredo:hunter2@db:5432/app?sslmode=require",
            "conninfo": "host=db user=laredo password=hunter2 dbname=app",
            "auth": {"password": "hunter2", "api_token": "t0k3n", "user": "laredo"},
            "hosts": ["https://a:b@x/y", "https://plain/y"],
            "password_file": null,
            "slot": {"name": "laredo_slot"},
        }) else {
            unreachable!()
        };
        assert_eq!(
            J::Object(masked(config)),
            json!({
                "connection": "postgres://laredo:****@db:5432/app?sslmode=require",
                "conninfo": "host=db user=laredo password=**** dbname=app",
                "auth": {"password": "****", "api_token": "****", "user": "laredo"},
                "hosts": ["https://a:****@x/y", "https://plain/y"],
                "password_file": null,
                "slot": {"name": "laredo_slot"},
            })
        );
    }
}
