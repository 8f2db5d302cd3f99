//! `--dump-config`: redaction and HOCON rendering.

use std::fmt::Write as _;

use serde_json::Value;

/// What a secret is replaced with.
pub const REDACTED: &str = "***";

fn is_secret_key(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    // Where a secret is read from is not itself secret.
    if key.ends_with("_file") || key.ends_with("_files") || key.ends_with("_path") {
        return false;
    }
    key == "connection"
        || key == "auth_header"
        || key == "authorization"
        || ["password", "secret", "token"]
            .iter()
            .any(|s| key.contains(s))
}

/// Replaces non-empty secret values with `***`, at any depth.
pub(crate) fn redact(value: &mut Value) {
    match value {
        Value::Object(map) => {
            for (key, child) in map.iter_mut() {
                if is_secret_key(key) && !child.is_object() {
                    redact_secret(child);
                } else {
                    redact(child);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(redact),
        _ => {}
    }
}

/// A secret value, or each item of a list of secrets (several tokens).
fn redact_secret(value: &mut Value) {
    match value {
        Value::Array(items) => items.iter_mut().for_each(redact_secret),
        Value::Null => {}
        Value::String(s) if s.is_empty() => {}
        other => *other = Value::String(REDACTED.to_owned()),
    }
}

/// Renders a JSON object as HOCON: unquoted simple keys, `=`, nested blocks.
pub(crate) fn to_hocon(value: &Value) -> String {
    let mut out = String::new();
    if let Value::Object(map) = value {
        for (key, child) in map {
            write_member(&mut out, key, child, 0);
        }
    }
    out
}

fn write_key(out: &mut String, key: &str) {
    let plain = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        && !key.starts_with(|c: char| c.is_ascii_digit() || c == '-')
        && !["true", "false", "null"].contains(&key);
    if plain {
        out.push_str(key);
    } else {
        out.push_str(&Value::String(key.to_owned()).to_string());
    }
}

fn write_member(out: &mut String, key: &str, value: &Value, depth: usize) {
    indent(out, depth);
    write_key(out, key);
    if value.is_object() {
        out.push(' ');
    } else {
        out.push_str(" = ");
    }
    write_value(out, value, depth);
    out.push('\n');
}

fn write_value(out: &mut String, value: &Value, depth: usize) {
    match value {
        Value::Object(map) if map.is_empty() => out.push_str("{}"),
        Value::Object(map) => {
            out.push_str("{\n");
            for (key, child) in map {
                write_member(out, key, child, depth + 1);
            }
            indent(out, depth);
            out.push('}');
        }
        Value::Array(items) if items.iter().all(|i| !i.is_object() && !i.is_array()) => {
            out.push('[');
            for (idx, item) in items.iter().enumerate() {
                if idx > 0 {
                    out.push_str(", ");
                }
                let _ = write!(out, "{item}");
            }
            out.push(']');
        }
        Value::Array(items) => {
            out.push_str("[\n");
            for item in items {
                indent(out, depth + 1);
                write_value(out, item, depth + 1);
                out.push('\n');
            }
            indent(out, depth);
            out.push(']');
        }
        scalar => {
            let _ = write!(out, "{scalar}");
        }
    }
}

fn indent(out: &mut String, depth: usize) {
    for _ in 0..depth {
        out.push_str("  ");
    }
}
