//! Environment overrides: `LAREDO_<PATH>`, where `<PATH>` is the key path with dots
//! (and array brackets) replaced by `_`, upper-cased, and array indexes written as
//! zero-based numbers: `LAREDO_GRPC_PORT` → `grpc.port`,
//! `LAREDO_SOURCES_PG_MAIN_CONNECTION` → `sources.pg_main.connection`,
//! `LAREDO_TABLES_0_TARGETS_0_AUTH_HEADER` → `tables[0].targets[0].auth_header`.
//!
//! Names are matched against the schema, so underscores inside keys and ids are not
//! ambiguous: an id that already exists is matched first, and a new source id is the
//! shortest prefix after which the rest names a source key. That is how a
//! configuration can come from the environment alone. The bare `<PATH>` is honoured
//! too for keys that exist or have a default, and `LAREDO_<PATH>` wins over it.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use crate::schema::{Field, Kind, Node, ROOT};

/// The prefix of every laredo environment variable.
pub const ENV_PREFIX: &str = "LAREDO_";

#[derive(Debug, Clone)]
pub(crate) enum Segment {
    Key(String),
    Index(usize),
}

/// Applies every environment variable that names a configuration key to `root`.
pub(crate) fn apply(root: &mut Value, env: &BTreeMap<String, String>) {
    for (name, raw) in env {
        let Some(rest) = name.strip_prefix(ENV_PREFIX) else {
            continue;
        };
        let tokens: Vec<&str> = rest.split('_').collect();
        if let Some((path, kind)) = plan(&ROOT, Some(root), &tokens) {
            set(root, &path, kind, raw);
        }
    }
    // Bare names, for keys that exist now (after the prefixed pass).
    let mut known = Vec::new();
    collect_known(&ROOT, Some(root), &mut Vec::new(), &mut known);
    for (path, kind) in known {
        let bare = env_name(&path);
        if env.contains_key(&format!("{ENV_PREFIX}{bare}")) {
            continue;
        }
        if let Some(raw) = env.get(&bare) {
            set(root, &path, kind, raw);
        }
    }
}

/// The environment form of a key: `pg-main` → `PG_MAIN`.
fn env_token(key: &str) -> String {
    key.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect()
}

fn env_name(path: &[Segment]) -> String {
    path.iter()
        .map(|s| match s {
            Segment::Key(k) => env_token(k),
            Segment::Index(i) => i.to_string(),
        })
        .collect::<Vec<_>>()
        .join("_")
}

/// Splits `tokens` after the tokens of `key`, if they start with them.
fn strip_key<'t>(tokens: &'t [&'t str], key: &str) -> Option<&'t [&'t str]> {
    let key_tokens: Vec<String> = env_token(key).split('_').map(str::to_owned).collect();
    if tokens.len() < key_tokens.len() {
        return None;
    }
    key_tokens
        .iter()
        .zip(tokens)
        .all(|(k, t)| k == t)
        .then(|| &tokens[key_tokens.len()..])
}

fn fields_of(node: &Node, value: Option<&Value>) -> Vec<&'static Field> {
    match node {
        Node::Object(obj) => obj.fields.iter().collect(),
        Node::Tagged(tagged) => {
            let current = value.and_then(|v| v.get("type")).and_then(Value::as_str);
            let mut fields: Vec<&'static Field> = tagged.common.iter().collect();
            let chosen = tagged
                .variants
                .iter()
                .find(|v| current.is_some_and(|c| v.names.contains(&c)));
            match chosen {
                Some(variant) => fields.extend(variant.fields.iter()),
                None => {
                    for variant in tagged.variants {
                        for field in variant.fields {
                            if !fields.iter().any(|f| f.name == field.name) {
                                fields.push(field);
                            }
                        }
                    }
                }
            }
            fields
        }
        _ => Vec::new(),
    }
}

/// Finds the key path an environment name (split at `_`) refers to.
fn plan(node: &Node, value: Option<&Value>, tokens: &[&str]) -> Option<(Vec<Segment>, Kind)> {
    match node {
        Node::Scalar(kind) => tokens.is_empty().then(|| (Vec::new(), *kind)),
        Node::Object(_) | Node::Tagged(_) => {
            if tokens.is_empty() {
                return None;
            }
            if matches!(node, Node::Tagged(_)) && tokens == ["TYPE"] {
                return Some((vec![Segment::Key("type".to_owned())], Kind::Str));
            }
            let mut fields = fields_of(node, value);
            // Longest key first: `slot_name` before a hypothetical `slot`.
            fields.sort_by_key(|f| std::cmp::Reverse(f.name.len()));
            fields.into_iter().find_map(|field| {
                let rest = strip_key(tokens, field.name)?;
                let child = value.and_then(|v| v.get(field.name));
                let (mut path, kind) = plan(&field.node, child, rest)?;
                path.insert(0, Segment::Key(field.name.to_owned()));
                Some((path, kind))
            })
        }
        Node::Map(item) => {
            let existing = value.and_then(Value::as_object);
            if let Some(map) = existing {
                for (key, child) in map {
                    if let Some(rest) = strip_key(tokens, key)
                        && let Some((mut path, kind)) = plan(item, Some(child), rest)
                    {
                        path.insert(0, Segment::Key(key.clone()));
                        return Some((path, kind));
                    }
                }
            }
            // New entries only where the id cannot be confused with a value: maps of
            // objects (sources), not maps of strings (headers, where case matters).
            if !matches!(item, Node::Object(_) | Node::Tagged(_)) {
                return None;
            }
            (1..tokens.len()).find_map(|split| {
                let id = tokens[..split].join("_").to_ascii_lowercase();
                if id.is_empty() || existing.is_some_and(|m| m.contains_key(&id)) {
                    return None;
                }
                let (mut path, kind) = plan(item, None, &tokens[split..])?;
                path.insert(0, Segment::Key(id));
                Some((path, kind))
            })
        }
        Node::List(item) => {
            let (first, rest) = tokens.split_first()?;
            if first.is_empty() || !first.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            let idx: usize = first.parse().ok()?;
            let child = value.and_then(|v| v.get(idx));
            let (mut path, kind) = plan(item, child, rest)?;
            path.insert(0, Segment::Index(idx));
            Some((path, kind))
        }
        Node::Any => None,
    }
}

/// Every scalar key path that exists in `value` or is a key of an object that does.
fn collect_known(
    node: &Node,
    value: Option<&Value>,
    prefix: &mut Vec<Segment>,
    out: &mut Vec<(Vec<Segment>, Kind)>,
) {
    match node {
        Node::Scalar(kind) => out.push((prefix.clone(), *kind)),
        Node::Object(_) | Node::Tagged(_) => {
            if matches!(node, Node::Tagged(_)) {
                prefix.push(Segment::Key("type".to_owned()));
                out.push((prefix.clone(), Kind::Str));
                prefix.pop();
            }
            for field in fields_of(node, value) {
                prefix.push(Segment::Key(field.name.to_owned()));
                collect_known(
                    &field.node,
                    value.and_then(|v| v.get(field.name)),
                    prefix,
                    out,
                );
                prefix.pop();
            }
        }
        Node::Map(item) => {
            for (key, child) in value.and_then(Value::as_object).into_iter().flatten() {
                prefix.push(Segment::Key(key.clone()));
                collect_known(item, Some(child), prefix, out);
                prefix.pop();
            }
        }
        Node::List(item) => {
            for (idx, child) in value
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .enumerate()
            {
                prefix.push(Segment::Index(idx));
                collect_known(item, Some(child), prefix, out);
                prefix.pop();
            }
        }
        Node::Any => {}
    }
}

/// Converts an environment string for a key of `kind`; `None` means "ignore it".
fn convert(kind: Kind, raw: &str) -> Option<Value> {
    let text = raw.trim();
    Some(match kind {
        Kind::Bool => match text.to_ascii_lowercase().as_str() {
            "true" | "1" => Value::Bool(true),
            "false" | "0" => Value::Bool(false),
            // The documented contract: anything else is ignored.
            _ => return None,
        },
        Kind::Int { .. } => text
            .parse::<i64>()
            .map(Value::from)
            .unwrap_or_else(|_| Value::String(raw.to_owned())),
        Kind::Float { .. } => text
            .parse::<f64>()
            .ok()
            .filter(|f| f.is_finite())
            .map(Value::from)
            .unwrap_or_else(|| Value::String(raw.to_owned())),
        Kind::StrList { .. } => list(text),
        Kind::StrOrList if text.contains(',') => list(text),
        _ => Value::String(raw.to_owned()),
    })
}

fn list(text: &str) -> Value {
    Value::Array(
        text.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| Value::String(s.to_owned()))
            .collect(),
    )
}

fn set(root: &mut Value, path: &[Segment], kind: Kind, raw: &str) {
    if let Some(value) = convert(kind, raw) {
        set_value(root, path, value);
    }
}

/// Sets `value` at `path`, creating objects and lists on the way. A list shorter than
/// the index is padded with empty objects, which validation then reports as
/// incomplete entries.
pub(crate) fn set_value(root: &mut Value, path: &[Segment], value: Value) {
    let Some((first, rest)) = path.split_first() else {
        *root = value;
        return;
    };
    match first {
        Segment::Key(key) => {
            if !root.is_object() {
                *root = Value::Object(Map::new());
            }
            if let Value::Object(map) = root {
                let child = map.entry(key.clone()).or_insert(Value::Null);
                set_value(child, rest, value);
            }
        }
        Segment::Index(idx) => {
            if !root.is_array() {
                *root = Value::Array(Vec::new());
            }
            if let Value::Array(items) = root {
                while items.len() <= *idx {
                    items.push(Value::Object(Map::new()));
                }
                set_value(&mut items[*idx], rest, value);
            }
        }
    }
}
