//! The configuration reference as data: every key, its type and whether it is
//! required. [`crate::validate`] walks a merged tree against it.
//!
//! The typed structs in this crate and this schema describe the same keys; a test
//! round-trips a complete configuration through both.

use serde_json::{Map, Value};

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
