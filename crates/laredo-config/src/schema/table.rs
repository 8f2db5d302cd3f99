//! `tables[]`: a table of a source, its targets and what runs between them.

use super::{
    BOOL, COUNT, DURATION, FIELDS, FORMATS, Kind, NON_EMPTY_STR, Node, Obj, POSITIVE,
    POSITIVE_DURATION, STORE_KIND, STORE_LOCATION, STR, Tagged, Variant, defaults_of, opt, req,
};
use crate::table::{
    CompiledFilterConfig, CompiledMemoryConfig, FanoutArchiveConfig, FanoutTargetConfig,
    HttpSyncConfig, IndexConfig, IndexedMemoryConfig, TableConfig, TargetConfig, TtlConfig,
};

const TTL: Node = Node::Object(
    &Obj::new(&[
        opt("mode", Node::Scalar(Kind::Enum(&["field", "computed"]))).doc(
            "Where a row's expiry comes from (`computed`: a function registered by the \
             embedding application).",
        ),
        opt("field", NON_EMPTY_STR)
            .default_is("required for `field`")
            .doc("Column holding the expiry timestamp."),
        opt("check_interval", POSITIVE_DURATION)
            .default_is("engine default")
            .doc("Expiry scanner cadence."),
    ])
    .checked(crate::checks::ttl)
    .defaults(defaults_of::<TtlConfig>),
);

const VALIDATION: Node = Node::Object(&Obj::new(&[
    opt("post_baseline_row_count", BOOL).doc(
        "After each baseline, compare the target's row count with the rows the baseline \
         delivered and, once streaming, with the source's own count (`SELECT count(*)` for \
         PostgreSQL; only for a target without filters, transforms or TTL). `false` skips \
         both.",
    ),
    opt(
        "periodic_row_count",
        Node::Object(&Obj::new(&[
            opt("enabled", BOOL).doc(
                "Drift validation: every `interval` while streaming, compare the target's \
                 count with the engine's expected count and with the source's count.",
            ),
            opt("interval", POSITIVE_DURATION).doc("Cadence."),
        ])),
    ),
    opt(
        "on_mismatch",
        Node::Scalar(Kind::Enum(&["warn", "re_baseline", "error"])),
    )
    .doc(
        "Reaction to a mismatch (`re_baseline` right after a baseline only warns, so a \
         table that keeps differing cannot loop).",
    ),
]));

const BUFFER: Node = Node::Object(&Obj::new(&[
    opt("max_size", POSITIVE).doc("Pipeline buffer capacity."),
    opt(
        "policy",
        Node::Scalar(Kind::Enum(&["block", "drop_oldest", "error"])),
    )
    .doc(
        "Full buffer: wait (no loss), evict the oldest, or fail the change through the \
         error policy.",
    ),
]));

const DEAD_LETTER: Node = Node::Object(
    &Obj::new(&[
        opt("enabled", BOOL).doc("Write failed changes to a dead-letter store."),
        opt(
            "store",
            Node::Scalar(Kind::Enum(&["memory", "local", "s3"])),
        )
        .doc("Store kind."),
        opt("config", STORE_LOCATION).doc(
            "Where the store keeps its changes: for `local`, `path` is a directory of \
             `<pipeline>.jsonl` files; for `s3`, `prefix` defaults to `dead-letters/`.",
        ),
    ])
    .checked(crate::checks::dead_letter),
);

const ERROR_HANDLING: Node = Node::Object(
    &Obj::new(&[
        opt("max_retries", COUNT).doc("Retries after the first failure."),
        opt("retry_backoff_ms", POSITIVE).doc("First retry delay, in milliseconds (doubles)."),
        opt("retry_backoff_max_ms", POSITIVE)
            .doc("Retry delay cap, in milliseconds; at least `retry_backoff_ms`."),
        opt(
            "on_persistent_failure",
            Node::Scalar(Kind::Enum(&["isolate", "stop_source", "stop_all"])),
        )
        .doc(
            "After retries (and the dead letter): stop this pipeline, every pipeline of the \
             source, or the engine.",
        ),
        opt("dead_letter", DEAD_LETTER),
    ])
    .checked(crate::checks::error_handling),
);

const FILTER: Node = Node::Tagged(&Tagged {
    what: "filter",
    doc: "The filter's kind.",
    common: &[],
    variants: &[
        Variant {
            names: &["field-equals"],
            doc: "The field is present and equal to `value` (numbers compare numerically).",
            fields: &[
                req("field", NON_EMPTY_STR),
                req("value", Node::Scalar(Kind::AnyScalar)),
            ],
            check: None,
            defaults: None,
        },
        Variant {
            names: &["field-prefix"],
            doc: "The string field starts with `prefix`.",
            fields: &[req("field", NON_EMPTY_STR), req("prefix", STR)],
            check: None,
            defaults: None,
        },
        Variant {
            names: &["field-regex"],
            doc: "The string field matches `pattern`; the pattern is checked at load time.",
            fields: &[
                req("field", NON_EMPTY_STR),
                req("pattern", Node::Scalar(Kind::Regex)),
            ],
            check: None,
            defaults: None,
        },
    ],
    defaults: None,
});

const TRANSFORM: Node = Node::Tagged(&Tagged {
    what: "transform",
    doc: "The transform's kind.",
    common: &[],
    variants: &[
        Variant {
            names: &["drop-fields"],
            doc: "Remove these fields.",
            fields: &[req("fields", FIELDS)],
            check: None,
            defaults: None,
        },
        Variant {
            names: &["rename-fields"],
            doc: "Rename fields.",
            fields: &[req("mapping", Node::Map(&NON_EMPTY_STR)).shown_as("{old = new}, non-empty")],
            check: Some(crate::checks::rename_mapping),
            defaults: None,
        },
        Variant {
            names: &["add-timestamp"],
            doc: "Set `field` to the current UTC time.",
            fields: &[req("field", NON_EMPTY_STR)],
            check: None,
            defaults: None,
        },
    ],
    defaults: None,
});

const FANOUT_ARCHIVE: Node = Node::Object(
    &Obj::new(&[
        req("store", STORE_KIND).doc("Store kind."),
        opt("store_config", STORE_LOCATION),
        opt("format", FORMATS).doc("`jsonl`/`protobuf`, tried in order."),
        opt("key_prefix", STR).doc("Must match the writer's prefix."),
    ])
    .checked(crate::checks::fanout_archive)
    .defaults(defaults_of::<FanoutArchiveConfig>),
);

const INDEXED_MEMORY: &[super::Field] = &[
    req("lookup_fields", FIELDS).doc("Fields of the unique primary lookup index."),
    opt(
        "additional_indexes",
        Node::List(&Node::Object(
            &Obj::new(&[
                req("name", NON_EMPTY_STR).doc("Index name, unique within the target."),
                req("fields", FIELDS).doc("Indexed fields."),
                opt("unique", BOOL).doc("Key → row, or key → rows."),
            ])
            .defaults(defaults_of::<IndexConfig>),
        )),
    ),
];

const COMPILED_MEMORY: &[super::Field] = &[
    req("compiler", NON_EMPTY_STR)
        .doc("Name of a compiler registered by the embedding application."),
    req("key_fields", FIELDS).doc("Fields of the composite key."),
    opt(
        "filter",
        Node::Object(
            &Obj::new(&[
                req("field", NON_EMPTY_STR).doc("The string field tested."),
                req("prefix", STR).doc("The prefix it must start with."),
            ])
            .defaults(defaults_of::<CompiledFilterConfig>),
        ),
    )
    .doc("Only rows whose `field` starts with `prefix` are compiled."),
];

const REPLICATION_FANOUT: &[super::Field] = &[
    opt(
        "journal",
        Node::Object(&Obj::new(&[
            opt(
                "max_entries",
                Node::Scalar(Kind::Int {
                    min: 1,
                    max: i64::MAX,
                }),
            )
            .doc(
                "Journal size limit. A full journal is pruned in steps of 1/64 of it (at \
                 most 4,096 entries) or once a second, so it may run over by one step; \
                 clients' pins may keep more.",
            ),
            opt("max_age", POSITIVE_DURATION).doc("Journal age limit."),
        ])),
    ),
    opt(
        "snapshot",
        Node::Object(&Obj::new(&[
            opt("interval", DURATION)
                .doc("In-memory snapshot cadence; `0s` takes no periodic snapshots."),
            opt(
                "retention",
                Node::Object(&Obj::new(&[
                    opt("keep_count", COUNT).doc(
                        "Snapshots kept, newest first. Each holds a reference to every row \
                         of its time, so this bounds the generations of rows kept alive: \
                         the newest serves new clients, two older ones serve clients \
                         resuming by snapshot id. `0` keeps every snapshot (unbounded \
                         memory; set it only if something else bounds the count).",
                    ),
                    opt("max_age", DURATION).doc(
                        "Snapshots older than this are dropped (checked as snapshots are \
                         taken, as clients connect and every 1,024 changes), except the \
                         newest. The default matches `journal.max_age`: an older snapshot \
                         can seldom be resumed from. `0` means no age limit.",
                    ),
                ])),
            ),
        ])),
    ),
    opt("max_clients", COUNT).doc(
        "Concurrent `Sync` streams of this target. One more is refused with \
         `RESOURCE_EXHAUSTED` (\"… serves max_clients = N clients already\") while the \
         others keep streaming. Each client holds a task, an HTTP/2 stream and a send queue \
         of up to `client_buffer.max_size` entries. `0` means unlimited.",
    ),
    opt(
        "client_buffer",
        Node::Object(&Obj::new(&[
            opt("max_size", POSITIVE).doc("Per-client queue."),
            opt(
                "policy",
                Node::Scalar(Kind::Enum(&["drop_disconnect", "slow_down"])),
            )
            .doc(
                "Full client queue: disconnect it once it is a queue behind the head (live) \
                 a queue further behind than when its catch-up began, or, while it takes a \
                 snapshot, more than `journal.max_entries` plus a queue behind, or block \
                 its stream (its journal pin then holds the journal).",
            ),
        ])),
    ),
    opt("heartbeat_interval", POSITIVE_DURATION).doc("Heartbeat after this long without data."),
    opt("archive", FANOUT_ARCHIVE).doc(
        "Cold-tier archive for clients older than the journal; S3 uses ambient credentials \
         only.",
    ),
];

const HTTP_SYNC: &[super::Field] = &[
    req("base_url", NON_EMPTY_STR).doc("`http://` or `https://` endpoint root."),
    opt("batch_size", POSITIVE).doc("Flush threshold."),
    opt("flush_interval", POSITIVE_DURATION).doc("Time-based flush."),
    opt("timeout_ms", POSITIVE).doc("Per-request timeout in milliseconds."),
    opt("retry_count", COUNT).doc("Retries per request."),
    opt("retry_backoff_ms", POSITIVE).doc("Initial retry backoff in milliseconds."),
    opt("auth_header", STR).doc("Sent as `Authorization`. Redacted in dumps."),
    opt("headers", Node::Map(&STR))
        .shown_as("{name = value}")
        .doc("Extra headers on every request."),
];

const TARGET: Node = Node::Tagged(&Tagged {
    what: "target",
    doc: "The target's kind; it chooses the other keys.",
    common: &[
        opt("buffer", BUFFER),
        opt("error_handling", ERROR_HANDLING),
        opt("filters", Node::List(&FILTER))
            .doc("Run in order before any transform; the first false drops the row."),
        opt("transforms", Node::List(&TRANSFORM))
            .doc("Run in order after the filters; not applied to delete identities."),
    ],
    variants: &[
        Variant {
            names: &["indexed-memory"],
            doc: "The table's rows in memory, with a unique lookup index and optional \
                  secondary indexes (unique or not).",
            fields: INDEXED_MEMORY,
            check: Some(crate::checks::index_names),
            defaults: Some(defaults_of::<IndexedMemoryConfig>),
        },
        Variant {
            names: &["compiled-memory"],
            doc: "Typed objects built from each row by a compiler function the embedding \
                  application registers, keyed by key fields.",
            fields: COMPILED_MEMORY,
            check: None,
            defaults: Some(defaults_of::<CompiledMemoryConfig>),
        },
        Variant {
            names: &["replication-fanout"],
            doc: "Serves the table to remote replicas over the replication listener: a \
                  journal of recent changes, snapshots for new clients, and an optional \
                  cold-tier archive.",
            fields: REPLICATION_FANOUT,
            check: None,
            defaults: Some(defaults_of::<FanoutTargetConfig>),
        },
        Variant {
            names: &["http-sync"],
            doc: "Sends the changes to an HTTP endpoint in batches.",
            fields: HTTP_SYNC,
            check: Some(crate::checks::http_sync),
            defaults: Some(defaults_of::<HttpSyncConfig>),
        },
    ],
    defaults: Some(defaults_of::<TargetConfig>),
});

pub(super) const TABLE: Node = Node::Object(
    &Obj::new(&[
        req("source", NON_EMPTY_STR).doc("Id of a configured source."),
        req("schema", NON_EMPTY_STR).doc("Schema name."),
        req("table", NON_EMPTY_STR).doc("Table name."),
        opt("targets", Node::List(&TARGET))
            .default_is("at least one")
            .doc("One pipeline per target; see below."),
        opt("ttl", TTL).doc("Row expiry. Without a `ttl` block rows never expire."),
        opt("validation", VALIDATION),
    ])
    .checked(crate::checks::table)
    .defaults(defaults_of::<TableConfig>),
);
