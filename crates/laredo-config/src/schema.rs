//! The configuration reference as data, and the walk that checks a merged tree
//! against it.
//!
//! Serde stops at the first error, so the tree is checked here first: every unknown
//! key, wrong type, bad enum value, missing key and cross-key rule is collected with
//! its key path. Values are also coerced in place the way HOCON allows (`"8080"` for a
//! number, `yes` for a boolean), so that the serde pass that follows only converts.
//! The typed structs in this crate and this schema describe the same keys; a test
//! round-trips a complete configuration through both.

use serde_json::{Map, Value};

use crate::duration::{parse_duration, parse_schedule};
use crate::error::{ConfigError, KeyPath};

/// Checks an object after its keys were checked and coerced.
pub(crate) type Check = fn(&Map<String, Value>, &KeyPath, &mut Vec<ConfigError>);

/// A node of the schema.
pub(crate) enum Node {
    /// Fixed keys.
    Object(&'static Obj),
    /// Keys chosen by the user (source ids, header names); every value is `value`.
    Map(&'static Node),
    /// A list of `item`.
    List(&'static Node),
    /// An object whose keys depend on its `type`.
    Tagged(&'static Tagged),
    /// A leaf.
    Scalar(Kind),
    /// Anything (`user_meta`).
    Any,
}

pub(crate) struct Obj {
    pub(crate) fields: &'static [Field],
    pub(crate) check: Option<Check>,
}

pub(crate) struct Field {
    pub(crate) name: &'static str,
    /// Other accepted spellings (`config` for `store_config`).
    pub(crate) aliases: &'static [&'static str],
    pub(crate) node: Node,
    pub(crate) required: bool,
}

pub(crate) struct Tagged {
    /// `source`, `target`, `filter`, `transform`: used in "unknown target type".
    pub(crate) what: &'static str,
    pub(crate) common: &'static [Field],
    pub(crate) variants: &'static [Variant],
}

pub(crate) struct Variant {
    /// The canonical name first, then aliases.
    pub(crate) names: &'static [&'static str],
    pub(crate) fields: &'static [Field],
    pub(crate) check: Option<Check>,
}

/// Leaf kinds.
#[derive(Clone, Copy)]
pub(crate) enum Kind {
    Str,
    /// A string that must not be empty.
    NonEmptyStr,
    Bool,
    Int {
        min: i64,
        max: i64,
    },
    Float {
        min: f64,
    },
    /// A duration; `nonzero` rejects `0s`.
    Duration {
        nonzero: bool,
    },
    /// A duration or `every <duration>`.
    Schedule,
    Enum(&'static [&'static str]),
    /// A list of strings; `non_empty` rejects `[]`.
    StrList {
        non_empty: bool,
    },
    /// A string or a non-empty list of strings.
    StrOrList,
    /// Any scalar (string, number, boolean).
    AnyScalar,
    /// A regular expression.
    Regex,
}

const fn opt(name: &'static str, node: Node) -> Field {
    Field {
        name,
        aliases: &[],
        node,
        required: false,
    }
}

const fn req(name: &'static str, node: Node) -> Field {
    Field {
        name,
        aliases: &[],
        node,
        required: true,
    }
}

const fn aliased(name: &'static str, aliases: &'static [&'static str], node: Node) -> Field {
    Field {
        name,
        aliases,
        node,
        required: false,
    }
}

const STR: Node = Node::Scalar(Kind::Str);
const NON_EMPTY_STR: Node = Node::Scalar(Kind::NonEmptyStr);
const BOOL: Node = Node::Scalar(Kind::Bool);
const PORT: Node = Node::Scalar(Kind::Int {
    min: 0,
    max: 65_535,
});
const COUNT: Node = Node::Scalar(Kind::Int {
    min: 0,
    max: u32::MAX as i64,
});
const POSITIVE: Node = Node::Scalar(Kind::Int {
    min: 1,
    max: u32::MAX as i64,
});
const DURATION: Node = Node::Scalar(Kind::Duration { nonzero: false });
const POSITIVE_DURATION: Node = Node::Scalar(Kind::Duration { nonzero: true });
const FIELDS: Node = Node::Scalar(Kind::StrList { non_empty: true });
const STORE_KIND: Node = Node::Scalar(Kind::Enum(&["local", "s3"]));
const FORMATS: Node = Node::Scalar(Kind::StrOrList);

const STORE_LOCATION: Node = Node::Object(&Obj {
    fields: &[
        aliased("path", &["directory"], STR),
        opt("bucket", STR),
        opt("prefix", STR),
        opt("region", STR),
    ],
    check: None,
});

// ---- sources -------------------------------------------------------------------

const PUBLICATION: Node = Node::Object(&Obj {
    fields: &[
        opt("name", NON_EMPTY_STR),
        opt("create", BOOL),
        opt("adopt_existing", BOOL),
        opt("publish", NON_EMPTY_STR),
        opt(
            "tables",
            Node::Map(&Node::Object(&Obj {
                fields: &[opt("where", NON_EMPTY_STR), opt("columns", FIELDS)],
                check: None,
            })),
        ),
    ],
    check: None,
});

const RECONNECT: Node = Node::Object(&Obj {
    fields: &[
        opt("max_attempts", COUNT),
        opt("initial_backoff", POSITIVE_DURATION),
        opt("max_backoff", POSITIVE_DURATION),
        opt("backoff_multiplier", Node::Scalar(Kind::Float { min: 1.0 })),
    ],
    check: Some(crate::checks::reconnect),
});

const SOURCE: Node = Node::Tagged(&Tagged {
    what: "source",
    common: &[],
    variants: &[
        Variant {
            names: &["postgresql", "pg"],
            fields: &[
                req("connection", NON_EMPTY_STR),
                opt(
                    "slot_mode",
                    Node::Scalar(Kind::Enum(&["ephemeral", "stateful"])),
                ),
                opt("slot_name", NON_EMPTY_STR),
                opt("always_baseline", BOOL),
                opt("max_protocol_failures", POSITIVE),
                opt("publication", PUBLICATION),
                opt("reconnect", RECONNECT),
            ],
            check: None,
        },
        Variant {
            names: &["s3-kinesis"],
            fields: &[
                req("baseline_bucket", NON_EMPTY_STR),
                opt("baseline_format", Node::Scalar(Kind::Enum(&["jsonl"]))),
                req("stream_arn", NON_EMPTY_STR),
                opt("consumer_group", NON_EMPTY_STR),
                opt("checkpoint_table", NON_EMPTY_STR),
                opt("region", NON_EMPTY_STR),
            ],
            check: Some(crate::checks::kinesis_source),
        },
        Variant {
            names: &["archive", "file"],
            fields: &[
                opt("store", STORE_KIND),
                opt("store_config", STORE_LOCATION),
                opt("format", FORMATS),
                opt("key_prefix", STR),
                opt("key_fields", FORMATS),
                opt("follow", BOOL),
                opt("poll_interval", POSITIVE_DURATION),
                opt("state_path", NON_EMPTY_STR),
                opt("group", BOOL),
            ],
            check: Some(crate::checks::archive_source),
        },
    ],
});

// ---- tables and targets ---------------------------------------------------------

const TTL: Node = Node::Object(&Obj {
    fields: &[
        opt("mode", Node::Scalar(Kind::Enum(&["field", "computed"]))),
        opt("field", NON_EMPTY_STR),
        opt("check_interval", POSITIVE_DURATION),
    ],
    check: Some(crate::checks::ttl),
});

const VALIDATION: Node = Node::Object(&Obj {
    fields: &[
        opt("post_baseline_row_count", BOOL),
        opt(
            "periodic_row_count",
            Node::Object(&Obj {
                fields: &[opt("enabled", BOOL), opt("interval", POSITIVE_DURATION)],
                check: None,
            }),
        ),
        opt(
            "on_mismatch",
            Node::Scalar(Kind::Enum(&["warn", "re_baseline", "error"])),
        ),
    ],
    check: None,
});

const BUFFER: Node = Node::Object(&Obj {
    fields: &[
        opt("max_size", POSITIVE),
        opt(
            "policy",
            Node::Scalar(Kind::Enum(&["block", "drop_oldest", "error"])),
        ),
    ],
    check: None,
});

const DEAD_LETTER: Node = Node::Object(&Obj {
    fields: &[
        opt("enabled", BOOL),
        opt(
            "store",
            Node::Scalar(Kind::Enum(&["memory", "local", "s3"])),
        ),
        opt("config", STORE_LOCATION),
    ],
    check: Some(crate::checks::dead_letter),
});

const ERROR_HANDLING: Node = Node::Object(&Obj {
    fields: &[
        opt("max_retries", COUNT),
        opt("retry_backoff_ms", POSITIVE),
        opt("retry_backoff_max_ms", POSITIVE),
        opt(
            "on_persistent_failure",
            Node::Scalar(Kind::Enum(&["isolate", "stop_source", "stop_all"])),
        ),
        opt("dead_letter", DEAD_LETTER),
    ],
    check: Some(crate::checks::error_handling),
});

const FILTER: Node = Node::Tagged(&Tagged {
    what: "filter",
    common: &[],
    variants: &[
        Variant {
            names: &["field-equals"],
            fields: &[
                req("field", NON_EMPTY_STR),
                req("value", Node::Scalar(Kind::AnyScalar)),
            ],
            check: None,
        },
        Variant {
            names: &["field-prefix"],
            fields: &[req("field", NON_EMPTY_STR), req("prefix", STR)],
            check: None,
        },
        Variant {
            names: &["field-regex"],
            fields: &[
                req("field", NON_EMPTY_STR),
                req("pattern", Node::Scalar(Kind::Regex)),
            ],
            check: None,
        },
    ],
});

const TRANSFORM: Node = Node::Tagged(&Tagged {
    what: "transform",
    common: &[],
    variants: &[
        Variant {
            names: &["drop-fields"],
            fields: &[req("fields", FIELDS)],
            check: None,
        },
        Variant {
            names: &["rename-fields"],
            fields: &[req("mapping", Node::Map(&NON_EMPTY_STR))],
            check: Some(crate::checks::rename_mapping),
        },
        Variant {
            names: &["add-timestamp"],
            fields: &[req("field", NON_EMPTY_STR)],
            check: None,
        },
    ],
});

const FANOUT_ARCHIVE: Node = Node::Object(&Obj {
    fields: &[
        req("store", STORE_KIND),
        opt("store_config", STORE_LOCATION),
        opt("format", FORMATS),
        opt("key_prefix", STR),
    ],
    check: Some(crate::checks::fanout_archive),
});

const TARGET: Node = Node::Tagged(&Tagged {
    what: "target",
    common: &[
        opt("buffer", BUFFER),
        opt("error_handling", ERROR_HANDLING),
        opt("filters", Node::List(&FILTER)),
        opt("transforms", Node::List(&TRANSFORM)),
    ],
    variants: &[
        Variant {
            names: &["indexed-memory"],
            fields: &[
                req("lookup_fields", FIELDS),
                opt(
                    "additional_indexes",
                    Node::List(&Node::Object(&Obj {
                        fields: &[
                            req("name", NON_EMPTY_STR),
                            req("fields", FIELDS),
                            opt("unique", BOOL),
                        ],
                        check: None,
                    })),
                ),
            ],
            check: Some(crate::checks::index_names),
        },
        Variant {
            names: &["compiled-memory"],
            fields: &[
                req("compiler", NON_EMPTY_STR),
                req("key_fields", FIELDS),
                opt(
                    "filter",
                    Node::Object(&Obj {
                        fields: &[req("field", NON_EMPTY_STR), req("prefix", STR)],
                        check: None,
                    }),
                ),
            ],
            check: None,
        },
        Variant {
            names: &["replication-fanout"],
            fields: &[
                opt(
                    "journal",
                    Node::Object(&Obj {
                        fields: &[
                            opt(
                                "max_entries",
                                Node::Scalar(Kind::Int {
                                    min: 1,
                                    max: i64::MAX,
                                }),
                            ),
                            opt("max_age", POSITIVE_DURATION),
                        ],
                        check: None,
                    }),
                ),
                opt(
                    "snapshot",
                    Node::Object(&Obj {
                        fields: &[
                            opt("interval", DURATION),
                            opt(
                                "retention",
                                Node::Object(&Obj {
                                    fields: &[opt("keep_count", COUNT), opt("max_age", DURATION)],
                                    check: None,
                                }),
                            ),
                        ],
                        check: None,
                    }),
                ),
                opt("max_clients", COUNT),
                opt(
                    "client_buffer",
                    Node::Object(&Obj {
                        fields: &[
                            opt("max_size", POSITIVE),
                            opt(
                                "policy",
                                Node::Scalar(Kind::Enum(&["drop_disconnect", "slow_down"])),
                            ),
                        ],
                        check: None,
                    }),
                ),
                opt("heartbeat_interval", POSITIVE_DURATION),
                opt("archive", FANOUT_ARCHIVE),
            ],
            check: None,
        },
        Variant {
            names: &["http-sync"],
            fields: &[
                req("base_url", NON_EMPTY_STR),
                opt("batch_size", POSITIVE),
                opt("flush_interval", POSITIVE_DURATION),
                opt("timeout_ms", POSITIVE),
                opt("retry_count", COUNT),
                opt("retry_backoff_ms", POSITIVE),
                opt("auth_header", STR),
                opt("headers", Node::Map(&STR)),
            ],
            check: Some(crate::checks::http_sync),
        },
    ],
});

const TABLE: Node = Node::Object(&Obj {
    fields: &[
        req("source", NON_EMPTY_STR),
        req("schema", NON_EMPTY_STR),
        req("table", NON_EMPTY_STR),
        opt("targets", Node::List(&TARGET)),
        opt("ttl", TTL),
        opt("validation", VALIDATION),
    ],
    check: Some(crate::checks::table),
});

// ---- engine and server ----------------------------------------------------------

const SNAPSHOT: Node = Node::Object(&Obj {
    fields: &[
        opt("enabled", BOOL),
        opt("store", STORE_KIND),
        aliased("store_config", &["config"], STORE_LOCATION),
        opt("serializer", Node::Scalar(Kind::Enum(&["jsonl"]))),
        opt("schedule", Node::Scalar(Kind::Schedule)),
        opt("on_shutdown", BOOL),
        opt(
            "retention",
            Node::Object(&Obj {
                fields: &[opt("keep_count", COUNT), opt("max_age", POSITIVE_DURATION)],
                check: None,
            }),
        ),
        opt("user_meta", Node::Map(&Node::Any)),
        opt(
            "on_restore_mismatch",
            Node::Scalar(Kind::Enum(&["warn", "reject"])),
        ),
    ],
    check: Some(crate::checks::snapshot),
});

/// `grpc.limits` and `fanout.grpc.limits`.
const LIMITS: Node = Node::Object(&Obj {
    fields: &[
        opt("max_connections", POSITIVE),
        opt("max_concurrent_streams", POSITIVE),
        opt("max_header_list_size", POSITIVE),
        opt("max_message_size", POSITIVE),
        opt("keepalive_interval", POSITIVE_DURATION),
        opt("keepalive_timeout", POSITIVE_DURATION),
        opt("max_pending_accept_reset_streams", POSITIVE),
        opt("max_local_error_reset_streams", POSITIVE),
        opt("max_cancelled_calls", POSITIVE),
        opt("request_timeout", POSITIVE_DURATION),
        opt("idle_timeout", POSITIVE_DURATION),
        opt("tcp_keepalive", POSITIVE_DURATION),
    ],
    check: None,
});

const GRPC: Node = Node::Object(&Obj {
    fields: &[
        opt("port", PORT),
        opt("bind", NON_EMPTY_STR),
        opt("limits", LIMITS),
        opt(
            "tls",
            Node::Object(&Obj {
                fields: &[
                    opt("enabled", BOOL),
                    opt("cert_path", STR),
                    opt("key_path", STR),
                ],
                check: Some(crate::checks::tls),
            }),
        ),
        opt(
            "auth",
            Node::Object(&Obj {
                fields: &[
                    opt("admin_token", NON_EMPTY_STR),
                    opt(
                        "admin_tokens",
                        Node::Scalar(Kind::StrList { non_empty: false }),
                    ),
                    opt(
                        "admin_token_files",
                        Node::Scalar(Kind::StrList { non_empty: false }),
                    ),
                    opt("read_token", NON_EMPTY_STR),
                    opt(
                        "read_tokens",
                        Node::Scalar(Kind::StrList { non_empty: false }),
                    ),
                    opt(
                        "read_token_files",
                        Node::Scalar(Kind::StrList { non_empty: false }),
                    ),
                    opt(
                        "admin_methods",
                        Node::Scalar(Kind::StrList { non_empty: false }),
                    ),
                ],
                check: None,
            }),
        ),
        opt(
            "web",
            Node::Object(&Obj {
                fields: &[
                    opt("enabled", BOOL),
                    opt(
                        "cors_allowed_origins",
                        Node::Scalar(Kind::StrList { non_empty: false }),
                    ),
                ],
                check: None,
            }),
        ),
    ],
    check: None,
});

const FANOUT: Node = Node::Object(&Obj {
    fields: &[opt(
        "grpc",
        Node::Object(&Obj {
            fields: &[
                opt("port", PORT),
                opt("bind", NON_EMPTY_STR),
                opt("limits", LIMITS),
            ],
            check: None,
        }),
    )],
    check: None,
});

const HEALTH: Node = Node::Object(&Obj {
    fields: &[
        opt("http_port", PORT),
        opt("bind", NON_EMPTY_STR),
        opt("readiness_path", NON_EMPTY_STR),
        opt("liveness_path", NON_EMPTY_STR),
        opt("startup_path", NON_EMPTY_STR),
    ],
    check: Some(crate::checks::health_paths),
});

const OBSERVABILITY: Node = Node::Object(&Obj {
    fields: &[
        opt(
            "metrics",
            Node::Object(&Obj {
                fields: &[
                    opt("type", Node::Scalar(Kind::Enum(&["prometheus", "otel"]))),
                    opt("port", PORT),
                    opt("bind", NON_EMPTY_STR),
                    opt("path", NON_EMPTY_STR),
                    opt(
                        "otel",
                        Node::Object(&Obj {
                            fields: &[
                                opt("exporter", Node::Scalar(Kind::Enum(&["stdout", "otlp"]))),
                                opt("endpoint", NON_EMPTY_STR),
                                opt("interval", POSITIVE_DURATION),
                            ],
                            check: Some(crate::checks::otel),
                        }),
                    ),
                ],
                check: None,
            }),
        ),
        opt(
            "logging",
            Node::Object(&Obj {
                fields: &[
                    opt("type", Node::Scalar(Kind::Enum(&["structured", "text"]))),
                    opt(
                        "level",
                        Node::Scalar(Kind::Enum(&["debug", "info", "warn", "error"])),
                    ),
                ],
                check: None,
            }),
        ),
    ],
    check: None,
});

const SHUTDOWN: Node = Node::Object(&Obj {
    fields: &[
        opt("timeout", POSITIVE_DURATION),
        opt("drain_timeout", DURATION),
    ],
    check: None,
});

/// The whole configuration.
pub(crate) const ROOT: Node = Node::Object(&Obj {
    fields: &[
        opt("insecure", BOOL),
        opt("sources", Node::Map(&SOURCE)),
        opt("tables", Node::List(&TABLE)),
        opt("snapshot", SNAPSHOT),
        opt("grpc", GRPC),
        opt("fanout", FANOUT),
        opt("health", HEALTH),
        opt("observability", OBSERVABILITY),
        opt("shutdown", SHUTDOWN),
    ],
    check: Some(crate::checks::root),
});

// ---- the walk -------------------------------------------------------------------

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
