//! `sources.<id>`: the keys of each source type.

use super::{
    BOOL, COUNT, FIELDS, FORMATS, Kind, NON_EMPTY_STR, Node, Obj, POSITIVE, POSITIVE_DURATION,
    STORE_KIND, STORE_LOCATION, STR, Tagged, Variant, defaults_of, opt, req,
};
use crate::source::{
    ArchiveSourceConfig, KinesisSourceConfig, PgSourceConfig, PublicationTableConfig,
};

const PUBLICATION: Node = Node::Object(&Obj::new(&[
    opt("name", NON_EMPTY_STR)
        .default_is("`{slot_name}_pub`")
        .doc("Publication streamed."),
    opt("create", BOOL).doc(
        "Create the publication when missing (marked as laredo's with a comment) and keep \
         the tables, operations, row filters and column lists of a publication laredo \
         created in step with the configuration. When false the publication must exist and \
         is never altered: a missing table or operation is a startup error naming it.",
    ),
    opt("adopt_existing", BOOL).doc(
        "With `create`, also take over an existing publication laredo did not create \
         (altered to match, then marked as laredo's). Without it such a publication is \
         only checked, never altered.",
    ),
    opt("publish", NON_EMPTY_STR).doc("Operations published."),
    opt(
        "tables",
        Node::Map(&Node::Object(
            &Obj::new(&[
                opt("where", NON_EMPTY_STR)
                    .doc("Row filter (PostgreSQL 15+), passed through as written."),
                opt("columns", FIELDS)
                    .default_is("all")
                    .doc("Column list (PostgreSQL 15+)."),
            ])
            .defaults(defaults_of::<PublicationTableConfig>),
        )),
    )
    .keyed_by("\"schema.table\""),
]));

const RECONNECT: Node = Node::Object(
    &Obj::new(&[
        opt("max_attempts", COUNT)
            .doc("Attempts before the source goes to ERROR (0 means the default)."),
        opt("initial_backoff", POSITIVE_DURATION).doc("First delay."),
        opt("max_backoff", POSITIVE_DURATION).doc("Delay cap; at least `initial_backoff`."),
        opt("backoff_multiplier", Node::Scalar(Kind::Float { min: 1.0 }))
            .doc("Growth per attempt."),
    ])
    .checked(crate::checks::reconnect),
);

pub(super) const SOURCE: Node = Node::Tagged(&Tagged {
    what: "source",
    doc: "The source's kind; it chooses the other keys.",
    common: &[],
    variants: &[
        Variant {
            names: &["postgresql", "pg"],
            doc: "Logical replication from PostgreSQL with `pgoutput`: a consistent baseline \
                  of each table, then its changes.",
            fields: &[
                req("connection", NON_EMPTY_STR).doc(
                    "libpq URI or `key=value` string. TLS goes here with libpq's keys: \
                     `sslmode` (`disable`, `allow`, `prefer` (default), `require`, \
                     `verify-ca`, `verify-full`), `sslrootcert`, `sslcert`, `sslkey`, \
                     `sslsni`, `sslnegotiation`, e.g. \
                     `\"postgresql://laredo@db:5432/app?sslmode=verify-full&sslrootcert=/etc/laredo/pg-ca.pem\"`; \
                     see docs/pg-source.md, \"TLS\". The whole string (passwords, \
                     `sslpassword`) is redacted in dumps.",
                ),
                opt(
                    "slot_mode",
                    Node::Scalar(Kind::Enum(&["ephemeral", "stateful"])),
                )
                .doc(
                    "Temporary slot and a full baseline on every start, or a persistent \
                     slot that resumes.",
                ),
                opt("slot_name", NON_EMPTY_STR).doc("Replication slot name."),
                opt("always_baseline", BOOL)
                    .doc("Stateful only: full baseline on every start, keeping the slot."),
                opt("max_protocol_failures", POSITIVE).doc(
                    "A replication message that does not decode makes the source reconnect \
                     (with the reconnect backoff) and read it again; after this many \
                     failures in a row at the same position the source stops with an error \
                     naming the position and the cause (see docs/operations.md, \"A poison \
                     message\").",
                ),
                opt("publication", PUBLICATION),
                opt("reconnect", RECONNECT),
            ],
            check: None,
            defaults: Some(defaults_of::<PgSourceConfig>),
        },
        Variant {
            names: &["s3-kinesis"],
            doc: "A JSONL baseline from S3, then changes from a Kinesis stream.",
            fields: &[
                req("baseline_bucket", NON_EMPTY_STR)
                    .doc("`s3://bucket/prefix/` holding the JSONL baseline."),
                opt("baseline_format", Node::Scalar(Kind::Enum(&["jsonl"])))
                    .doc("Baseline format."),
                req("stream_arn", NON_EMPTY_STR).doc("Kinesis stream ARN."),
                opt("consumer_group", NON_EMPTY_STR).doc("Consumer group."),
                opt("checkpoint_table", NON_EMPTY_STR).doc("`dynamodb://table`; enables resume."),
                opt("region", NON_EMPTY_STR).doc("AWS region."),
            ],
            check: Some(crate::checks::kinesis_source),
            defaults: Some(defaults_of::<KinesisSourceConfig>),
        },
        Variant {
            names: &["archive", "file"],
            doc: "Replays a snapshotter archive.",
            fields: &[
                opt("store", STORE_KIND)
                    .default_is("required")
                    .doc("Where the archive lives."),
                opt("store_config", STORE_LOCATION),
                opt("format", FORMATS).doc("`jsonl`/`protobuf`, tried in order."),
                opt("key_prefix", STR)
                    .default_is("required unless `group`")
                    .doc("Must match the writer's prefix (derived per table when `group`)."),
                opt("key_fields", FORMATS).doc("Primary key of the archived rows."),
                opt("follow", BOOL).doc("Keep polling the manifest after reaching its head."),
                opt("poll_interval", POSITIVE_DURATION).doc("Polling cadence when following."),
                opt("state_path", NON_EMPTY_STR).doc(
                    "Resume file (a directory when `group`); unset means re-baseline on \
                     every start.",
                ),
                opt("group", BOOL)
                    .doc("One source per referencing table, id `<id>/<schema>.<table>`."),
            ],
            check: Some(crate::checks::archive_source),
            defaults: Some(defaults_of::<ArchiveSourceConfig>),
        },
    ],
    defaults: None,
});
