//! Building the merged tree: files, fragments, environment, `--set`.
//!
//! Every file is parsed without resolving substitutions, the layers are merged with
//! HOCON object merge (later wins, objects deep-merge), and substitutions are resolved
//! once over the merged tree, so a fragment may refer to a key of the main file. The
//! environment is the last fallback for `${VAR}`: it is given to the resolver as a
//! lowest-priority layer instead of letting the parser read the process environment,
//! so tests can inject it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use hocon::{Config, HoconError, HoconValue, ParseOptions, ResolveOptions, ScalarType};
use serde_json::{Map, Value};

use crate::env::{Segment, set_value};
use crate::error::ConfigError;

/// Environment variable naming the main file when no path is given.
pub const CONFIG_ENV_VAR: &str = "LAREDO_CONFIG";
/// The documented location of the main file.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/laredo/laredo.conf";
/// The documented conf dir (`--conf-dir`).
pub const DEFAULT_CONF_DIR: &str = "/etc/laredo/conf.d";
/// The documented init dir (`--init-dir`).
pub const DEFAULT_INIT_DIR: &str = "/docker-entrypoint-init.d";

/// Where the configuration comes from, lowest priority first: the main file (or text),
/// the init dir's `*.conf`, the conf dir's `*.conf`, environment variables, `--set`.
///
/// The environment is never read from the process unless asked for with
/// [`process_env`](Self::process_env): tests pass their own variables.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct LoadOptions {
    /// Main file. `None` falls back to `LAREDO_CONFIG` in [`env`](Self::env), and
    /// without that the configuration comes from the other layers alone.
    pub file: Option<PathBuf>,
    /// Main configuration as text, used instead of a file.
    pub text: Option<String>,
    /// Init dir whose `*.conf` files are merged after the main file; missing is fine.
    pub init_dir: Option<PathBuf>,
    /// Conf dir whose `*.conf` files are merged after the init dir; missing is fine.
    /// `None` means `conf.d` next to the main file.
    pub conf_dir: Option<PathBuf>,
    /// Environment variables: `LAREDO_*` overrides and `${VAR}` substitutions.
    pub env: BTreeMap<String, String>,
    /// `key=value` overrides (`--set`), applied last, in order.
    pub overrides: Vec<String>,
}

impl LoadOptions {
    /// No layers: built-in defaults only.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the main file.
    pub fn file(mut self, path: impl Into<PathBuf>) -> Self {
        self.file = Some(path.into());
        self
    }

    /// Sets the main configuration text (instead of a file).
    pub fn text(mut self, hocon: impl Into<String>) -> Self {
        self.text = Some(hocon.into());
        self
    }

    /// Sets the init dir.
    pub fn init_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.init_dir = Some(dir.into());
        self
    }

    /// Sets the conf dir.
    pub fn conf_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.conf_dir = Some(dir.into());
        self
    }

    /// Adds environment variables.
    pub fn env<I, K, V>(mut self, vars: I) -> Self
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        self.env
            .extend(vars.into_iter().map(|(k, v)| (k.into(), v.into())));
        self
    }

    /// Adds the process environment (variables that are not UTF-8 are skipped).
    pub fn process_env(self) -> Self {
        self.env(
            std::env::vars_os()
                .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?))),
        )
    }

    /// Adds one `key=value` override.
    pub fn set(mut self, assignment: impl Into<String>) -> Self {
        self.overrides.push(assignment.into());
        self
    }

    /// Adds `key=value` overrides.
    pub fn overrides<I, S>(mut self, assignments: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.overrides
            .extend(assignments.into_iter().map(Into::into));
        self
    }

    /// The main file after the `LAREDO_CONFIG` fallback.
    pub fn main_file(&self) -> Option<PathBuf> {
        self.file.clone().or_else(|| {
            self.env
                .get(CONFIG_ENV_VAR)
                .filter(|p| !p.is_empty())
                .map(PathBuf::from)
        })
    }

    /// The conf dir after the "next to the main file" default.
    pub fn effective_conf_dir(&self) -> Option<PathBuf> {
        self.conf_dir.clone().or_else(|| {
            let file = self.main_file()?;
            Some(file.parent().unwrap_or(Path::new("")).join("conf.d"))
        })
    }
}

/// Reads, merges and resolves every layer, returning the tree before validation.
pub(crate) fn merged_tree(options: &LoadOptions) -> Result<Value, Vec<ConfigError>> {
    let mut errors = Vec::new();
    let mut layers: Vec<Config> = Vec::new();
    let unresolved = || ParseOptions::defaults().with_resolve_substitutions(false);

    if let Some(text) = &options.text {
        match hocon::parse_string_with_options(
            text,
            unresolved().with_origin_description("<text>".to_owned()),
        ) {
            Ok(config) => layers.push(config),
            Err(error) => errors.push(hocon_error("<text>", &error)),
        }
    } else if let Some(file) = options.main_file() {
        parse_file(&file, &mut layers, &mut errors);
    }
    for dir in [options.init_dir.clone(), options.effective_conf_dir()]
        .into_iter()
        .flatten()
    {
        for file in conf_files(&dir, &mut errors) {
            parse_file(&file, &mut layers, &mut errors);
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }

    let env_layer = env_layer(&options.env);
    let merged = layers
        .iter()
        .rev()
        .fold(hocon::empty(None), |acc, layer| acc.with_fallback(layer))
        .with_fallback(&env_layer);
    let resolved = merged
        .resolve(ResolveOptions::defaults().with_use_system_environment(false))
        .map_err(|error| vec![hocon_error("", &error)])?;

    let mut root = Map::new();
    for key in resolved.keys() {
        // Drop what only came from the environment layer.
        if options.env.contains_key(key) && !layers.iter().any(|l| l.has(&quote_key(key))) {
            continue;
        }
        if let Some(value) = resolved.get(&quote_key(key)) {
            root.insert(key.to_owned(), to_json(value));
        }
    }
    let mut root = Value::Object(root);
    crate::env::apply(&mut root, &options.env);
    for assignment in &options.overrides {
        if let Err(error) = apply_override(&mut root, assignment, &options.env) {
            errors.push(error);
        }
    }
    if errors.is_empty() {
        Ok(root)
    } else {
        Err(errors)
    }
}

fn quote_key(key: &str) -> String {
    format!("{}", serde_json::Value::String(key.to_owned()))
}

fn parse_file(path: &Path, layers: &mut Vec<Config>, errors: &mut Vec<ConfigError>) {
    let name = path.display().to_string();
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let options = ParseOptions::defaults()
                .with_resolve_substitutions(false)
                .with_origin_description(name.clone())
                .with_base_dir(path.parent().unwrap_or(Path::new(".")).to_path_buf());
            match hocon::parse_string_with_options(&text, options) {
                Ok(config) => layers.push(config),
                Err(error) => errors.push(hocon_error(&name, &error)),
            }
        }
        Err(error) => errors.push(ConfigError::at("", format!("cannot read {name}: {error}"))),
    }
}

/// The `*.conf` files of `dir`, sorted by name; a missing directory has none.
fn conf_files(dir: &Path, errors: &mut Vec<ConfigError>) -> Vec<PathBuf> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Vec::new(),
        Err(error) => {
            errors.push(ConfigError::at(
                "",
                format!("cannot read {}: {error}", dir.display()),
            ));
            return Vec::new();
        }
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "conf") && p.is_file())
        .collect();
    files.sort();
    files
}

fn env_layer(env: &BTreeMap<String, String>) -> Config {
    let map: Map<String, Value> = env
        .iter()
        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
        .collect();
    hocon::from_map(map, Some("environment")).unwrap_or_else(|_| hocon::empty(None))
}

fn hocon_error(origin: &str, error: &HoconError) -> ConfigError {
    let message = match error {
        HoconError::Parse(e) => format!("line {}, column {}: {}", e.line, e.col, e.message),
        HoconError::Resolve(e) => format!("line {}, column {}: {}", e.line, e.col, e.message),
        other => other.to_string(),
    };
    if origin.is_empty() {
        ConfigError::at("", message)
    } else {
        ConfigError::at("", format!("{origin}: {message}"))
    }
}

/// Converts a resolved HOCON value; numbers keep their integer-ness.
pub(crate) fn to_json(value: &HoconValue) -> Value {
    match value {
        HoconValue::Object(map) => {
            Value::Object(map.iter().map(|(k, v)| (k.clone(), to_json(v))).collect())
        }
        HoconValue::Array(items) => Value::Array(items.iter().map(to_json).collect()),
        HoconValue::Scalar(scalar) => match scalar.value_type {
            ScalarType::Number => {
                let raw = scalar.raw.trim();
                raw.parse::<i64>()
                    .map(Value::from)
                    .or_else(|_| raw.parse::<u64>().map(Value::from))
                    .ok()
                    .or_else(|| {
                        raw.parse::<f64>()
                            .ok()
                            .and_then(|f| serde_json::Number::from_f64(f).map(Value::Number))
                    })
                    .unwrap_or_else(|| Value::String(scalar.raw.clone()))
            }
            ScalarType::Boolean => Value::Bool(scalar.raw == "true"),
            ScalarType::Null => Value::Null,
            _ => Value::String(scalar.raw.clone()),
        },
        _ => Value::Null,
    }
}

/// Characters that make an override value a literal string rather than HOCON.
const LITERAL_CHARS: &[char] = &[' ', '{', '}', ',', '[', ']', '=', '#'];

/// Applies `a.b.c=value` (also `tables[0].schema=x`).
fn apply_override(
    root: &mut Value,
    assignment: &str,
    env: &BTreeMap<String, String>,
) -> Result<(), ConfigError> {
    let invalid = || {
        ConfigError::at(
            "",
            format!("invalid override {assignment:?}: expected key=value"),
        )
    };
    let (key, raw) = assignment.split_once('=').ok_or_else(invalid)?;
    let key = key.trim();
    if key.is_empty() {
        return Err(invalid());
    }
    let mut path = Vec::new();
    for part in key.replace('[', ".").replace(']', "").split('.') {
        if part.is_empty() {
            return Err(invalid());
        }
        match part.parse::<usize>() {
            Ok(idx) => path.push(Segment::Index(idx)),
            Err(_) => path.push(Segment::Key(part.to_owned())),
        }
    }
    let value = if raw.contains(LITERAL_CHARS) || raw.is_empty() {
        Value::String(raw.to_owned())
    } else {
        let env: std::collections::HashMap<String, String> = env.clone().into_iter().collect();
        hocon::parse_with_env(&format!("v = {raw}"), &env)
            .ok()
            .and_then(|c| c.get("v").map(to_json))
            .unwrap_or_else(|| Value::String(raw.to_owned()))
    };
    set_value(root, &path, value);
    Ok(())
}
