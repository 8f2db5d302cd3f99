//! The walk that checks a merged tree against the [schema](crate::schema).
//!
//! Serde stops at the first error, so the tree is checked here first: every unknown
//! key, wrong type, bad enum value, missing key and cross-key rule is collected with
//! its key path. Values are also coerced in place the way HOCON allows (`"8080"` for a
//! number, `yes` for a boolean), so that the serde pass that follows only converts.

use serde_json::{Map, Value};

use crate::duration::{parse_duration, parse_schedule};
use crate::error::{ConfigError, KeyPath};
use crate::schema::{Field, Kind, Node, Tagged};

/// Checks `value` against `node`, coercing HOCON-style scalars in place and pushing
/// every problem to `errors`.
pub(crate) fn check(node: &Node, value: &mut Value, path: &KeyPath, errors: &mut Vec<ConfigError>) {
    match node {
        Node::Object(obj) => {
            let Some(map) = as_object(value, path, errors) else {
                return;
            };
            check_fields(map, &[obj.fields], path, errors, None);
            if let Some(hook) = obj.check {
                hook(map, path, errors);
            }
        }
        Node::Tagged(tagged) => check_tagged(tagged, value, path, errors),
        Node::Map(item) => {
            let Some(map) = as_object(value, path, errors) else {
                return;
            };
            map.retain(|_, v| !v.is_null());
            for (key, entry) in map.iter_mut() {
                check(item, entry, &path.key(key), errors);
            }
        }
        Node::List(item) => match value {
            Value::Array(items) => {
                for (idx, entry) in items.iter_mut().enumerate() {
                    check(item, entry, &path.index(idx), errors);
                }
            }
            other => errors.push(ConfigError::at(
                path.as_str(),
                format!("expected a list, found {}", describe(other)),
            )),
        },
        Node::Scalar(kind) => check_scalar(*kind, value, path, errors),
        Node::Any => {}
    }
}

fn as_object<'v>(
    value: &'v mut Value,
    path: &KeyPath,
    errors: &mut Vec<ConfigError>,
) -> Option<&'v mut Map<String, Value>> {
    match value {
        Value::Object(map) => Some(map),
        other => {
            errors.push(ConfigError::at(
                path.as_str(),
                format!("expected an object, found {}", describe(other)),
            ));
            None
        }
    }
}

/// Checks the keys of `map` against the union of `groups`. `type_name` names the
/// chosen variant, for messages about keys that belong to another type.
fn check_fields(
    map: &mut Map<String, Value>,
    groups: &[&'static [Field]],
    path: &KeyPath,
    errors: &mut Vec<ConfigError>,
    variant: Option<(&str, &[&'static [Field]])>,
) {
    // HOCON `key = null` means "not set".
    map.retain(|_, v| !v.is_null());
    let fields = || groups.iter().flat_map(|g| g.iter());
    let keys: Vec<String> = map.keys().cloned().collect();
    for key in &keys {
        if variant.is_some() && key == "type" {
            continue;
        }
        let known = fields().any(|f| f.name == key || f.aliases.contains(&key.as_str()));
        if known {
            continue;
        }
        let key_path = path.key(key);
        if let Some((type_name, others)) = variant
            && others.iter().flat_map(|g| g.iter()).any(|f| f.name == key)
        {
            errors.push(ConfigError::at(
                key_path.as_str(),
                format!("not a key of type {type_name}"),
            ));
            continue;
        }
        let names: Vec<&str> = fields().map(|f| f.name).collect();
        errors.push(ConfigError::at(
            key_path.as_str(),
            unknown_message("unknown key", key, &names),
        ));
    }
    for field in fields() {
        let present: Vec<&str> = std::iter::once(field.name)
            .chain(field.aliases.iter().copied())
            .filter(|name| map.contains_key(*name))
            .collect();
        if present.len() > 1 {
            errors.push(ConfigError::at(
                path.as_str(),
                format!("set only one of {}", present.join(", ")),
            ));
            continue;
        }
        match present.first() {
            Some(name) => {
                if let Some(value) = map.get_mut(*name) {
                    check(&field.node, value, &path.key(name), errors);
                }
            }
            None if field.required => {
                let message = match variant {
                    Some((type_name, _)) if !groups[0].iter().any(|f| f.name == field.name) => {
                        format!("{} is required for type {type_name}", field.name)
                    }
                    _ => format!("{} is required", field.name),
                };
                errors.push(ConfigError::at(path.as_str(), message));
            }
            None => {}
        }
    }
}

fn check_tagged(tagged: &Tagged, value: &mut Value, path: &KeyPath, errors: &mut Vec<ConfigError>) {
    let Some(map) = as_object(value, path, errors) else {
        return;
    };
    let all_types: Vec<&str> = tagged.variants.iter().map(|v| v.names[0]).collect();
    let variant = match map.get("type") {
        None | Some(Value::Null) => {
            errors.push(ConfigError::at(path.as_str(), "type is required"));
            None
        }
        Some(Value::String(name)) => {
            let found = tagged
                .variants
                .iter()
                .find(|v| v.names.contains(&name.as_str()));
            if found.is_none() {
                let mut message = format!(
                    "unknown {} type {name:?} (expected one of {})",
                    tagged.what,
                    all_types.join(", ")
                );
                if let Some(close) = did_you_mean(name, &all_types) {
                    message = format!(
                        "unknown {} type {name:?} (did you mean {close:?}?)",
                        tagged.what
                    );
                }
                errors.push(ConfigError::at(path.key("type").as_str(), message));
            }
            found
        }
        Some(other) => {
            errors.push(ConfigError::at(
                path.key("type").as_str(),
                format!("expected a string, found {}", describe(other)),
            ));
            None
        }
    };
    match variant {
        Some(variant) => {
            let others: Vec<&'static [Field]> = tagged
                .variants
                .iter()
                .filter(|v| !std::ptr::eq(*v, variant))
                .map(|v| v.fields)
                .collect();
            check_fields(
                map,
                &[tagged.common, variant.fields],
                path,
                errors,
                Some((variant.names[0], &others)),
            );
            if let Some(hook) = variant.check {
                hook(map, path, errors);
            }
        }
        None => {
            // Unknown type: still report keys that no type knows, but nothing else.
            let mut groups = vec![tagged.common];
            groups.extend(tagged.variants.iter().map(|v| v.fields));
            let keys: Vec<String> = map.keys().filter(|k| *k != "type").cloned().collect();
            let names: Vec<&str> = groups
                .iter()
                .flat_map(|g| g.iter())
                .map(|f| f.name)
                .collect();
            for key in keys {
                if !names.contains(&key.as_str()) {
                    errors.push(ConfigError::at(
                        path.key(&key).as_str(),
                        unknown_message("unknown key", &key, &names),
                    ));
                }
            }
        }
    }
}

fn check_scalar(kind: Kind, value: &mut Value, path: &KeyPath, errors: &mut Vec<ConfigError>) {
    let mut fail = |message: String| errors.push(ConfigError::at(path.as_str(), message));
    match kind {
        Kind::Str | Kind::NonEmptyStr => {
            let Some(text) = scalar_text(value) else {
                return fail(format!("expected a string, found {}", describe(value)));
            };
            if matches!(kind, Kind::NonEmptyStr) && text.trim().is_empty() {
                return fail("must not be empty".to_owned());
            }
            *value = Value::String(text);
        }
        Kind::Bool => match value {
            Value::Bool(_) => {}
            Value::String(text) => match text.to_ascii_lowercase().as_str() {
                "true" | "yes" | "on" => *value = Value::Bool(true),
                "false" | "no" | "off" => *value = Value::Bool(false),
                _ => fail(format!(
                    "expected a boolean (true or false), found {}",
                    describe(value)
                )),
            },
            other => fail(format!(
                "expected a boolean (true or false), found {}",
                describe(other)
            )),
        },
        Kind::Int { min, max } => {
            let number = match value {
                Value::Number(n) => n.as_i64(),
                Value::String(text) => text.trim().parse::<i64>().ok(),
                _ => None,
            };
            let Some(number) = number else {
                return fail(format!("expected an integer, found {}", describe(value)));
            };
            if number < min || number > max {
                let range = if max == i64::MAX || max == i64::from(u32::MAX) {
                    format!("at least {min}")
                } else {
                    format!("between {min} and {max}")
                };
                return fail(format!("must be {range}, found {number}"));
            }
            *value = Value::from(number);
        }
        Kind::Float { min } => {
            let number = match value {
                Value::Number(n) => n.as_f64(),
                Value::String(text) => text.trim().parse::<f64>().ok(),
                _ => None,
            };
            let Some(number) = number.filter(|n| n.is_finite()) else {
                return fail(format!("expected a number, found {}", describe(value)));
            };
            if number < min {
                return fail(format!("must be at least {min:?}, found {number:?}"));
            }
            *value = Value::from(number);
        }
        Kind::Duration { nonzero } => match duration_of(value, parse_duration) {
            Ok(d) if nonzero && d.is_zero() => fail("must be greater than zero".to_owned()),
            Ok(_) => {}
            Err(message) => fail(message),
        },
        Kind::Schedule => match duration_of(value, parse_schedule) {
            Ok(d) if d.is_zero() => fail("must be greater than zero".to_owned()),
            Ok(_) => {}
            Err(message) => fail(message),
        },
        Kind::Enum(allowed) => {
            let Some(text) = value.as_str() else {
                return fail(format!(
                    "expected one of {}, found {}",
                    quoted_list(allowed),
                    describe(value)
                ));
            };
            if !allowed.contains(&text) {
                let mut message =
                    format!("expected one of {}, found {text:?}", quoted_list(allowed));
                if let Some(close) = did_you_mean(text, allowed) {
                    message.push_str(&format!(" (did you mean {close:?}?)"));
                }
                fail(message);
            }
        }
        Kind::StrList { non_empty } => {
            let Value::Array(items) = value else {
                return fail(format!(
                    "expected a list of strings, found {}",
                    describe(value)
                ));
            };
            if non_empty && items.is_empty() {
                return fail("must not be empty".to_owned());
            }
            for (idx, item) in items.iter_mut().enumerate() {
                match scalar_text(item) {
                    Some(text) if !text.trim().is_empty() => *item = Value::String(text),
                    Some(_) => errors.push(ConfigError::at(
                        path.index(idx).as_str(),
                        "must not be empty",
                    )),
                    None => errors.push(ConfigError::at(
                        path.index(idx).as_str(),
                        format!("expected a string, found {}", describe(item)),
                    )),
                }
            }
        }
        Kind::StrOrList => match value {
            Value::Array(_) => check_scalar(Kind::StrList { non_empty: true }, value, path, errors),
            _ => check_scalar(Kind::NonEmptyStr, value, path, errors),
        },
        Kind::AnyScalar => {
            if value.is_object() || value.is_array() {
                fail(format!(
                    "expected a string, number or boolean, found {}",
                    describe(value)
                ));
            }
        }
        Kind::Regex => {
            let Some(text) = scalar_text(value) else {
                return fail(format!("expected a string, found {}", describe(value)));
            };
            if let Err(error) = regex::Regex::new(&text) {
                // The regex error is multi-line; keep the one-problem-per-line rule.
                let detail = error
                    .to_string()
                    .lines()
                    .last()
                    .unwrap_or_default()
                    .trim()
                    .to_owned();
                return fail(format!("invalid regular expression: {detail}"));
            }
            *value = Value::String(text);
        }
    }
}

fn duration_of(
    value: &Value,
    parse: fn(&str) -> Result<std::time::Duration, String>,
) -> Result<std::time::Duration, String> {
    match value {
        Value::Number(n) => n
            .as_u64()
            .map(std::time::Duration::from_millis)
            .ok_or_else(|| {
                format!(
                    "expected a duration such as \"5s\", found {}",
                    describe(value)
                )
            }),
        Value::String(text) => parse(text),
        other => Err(format!(
            "expected a duration such as \"5s\", found {}",
            describe(other)
        )),
    }
}

/// The text of a string, number or boolean (HOCON converts these to strings).
fn scalar_text(value: &Value) -> Option<String> {
    match value {
        Value::String(text) => Some(text.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// How a value looks in a message: `string "abc"`, `number 5`, `an object`.
pub(crate) fn describe(value: &Value) -> String {
    match value {
        Value::Null => "null".to_owned(),
        Value::Bool(b) => format!("boolean {b}"),
        Value::Number(n) => format!("number {n}"),
        Value::String(s) => format!("string {s:?}"),
        Value::Array(_) => "a list".to_owned(),
        Value::Object(_) => "an object".to_owned(),
    }
}

fn quoted_list(items: &[&str]) -> String {
    items
        .iter()
        .map(|i| format!("{i:?}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn unknown_message(prefix: &str, key: &str, candidates: &[&str]) -> String {
    match did_you_mean(key, candidates) {
        Some(close) => format!("{prefix} (did you mean {close:?}?)"),
        None => prefix.to_owned(),
    }
}

/// The candidate closest to `input`, if it is close enough to be a typo.
pub(crate) fn did_you_mean<'a>(input: &str, candidates: &[&'a str]) -> Option<&'a str> {
    let budget = (input.chars().count() / 3).clamp(1, 3);
    candidates
        .iter()
        .map(|c| (edit_distance(input, c), *c))
        .filter(|(d, _)| *d <= budget)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = if ca == *cb {
                prev
            } else {
                1 + prev.min(cur).min(row[j])
            };
            prev = cur;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_close_names_only() {
        assert_eq!(
            did_you_mean("lookup_feilds", &["lookup_fields", "additional_indexes"]),
            Some("lookup_fields")
        );
        assert_eq!(did_you_mean("zzz", &["lookup_fields"]), None);
    }
}
