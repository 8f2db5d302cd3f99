//! Engine-level snapshots and the blocks `laredo-server` reads: listeners, health,
//! observability and shutdown.

use super::{
    BOOL, COUNT, DURATION, Kind, NON_EMPTY_STR, Node, Obj, PORT, POSITIVE, POSITIVE_DURATION,
    STORE_KIND, STORE_LOCATION, STR, STRINGS, aliased, opt,
};

pub(super) const SNAPSHOT: Node = Node::Object(
    &Obj::new(&[
        opt("enabled", BOOL).doc("Snapshots on (then `store` is required)."),
        opt("store", STORE_KIND).doc("Store kind."),
        aliased("store_config", &["config"], STORE_LOCATION).doc("Where snapshots are kept."),
        opt("serializer", Node::Scalar(Kind::Enum(&["jsonl"]))).doc("Snapshot format."),
        opt("schedule", Node::Scalar(Kind::Schedule)).doc("Periodic snapshots."),
        opt("on_shutdown", BOOL).doc("Snapshot during shutdown."),
        opt(
            "retention",
            Node::Object(&Obj::new(&[
                opt("keep_count", COUNT).doc("Keep the newest N; `0` keeps all."),
                opt("max_age", POSITIVE_DURATION).doc("Prune older snapshots."),
            ])),
        ),
        opt("user_meta", Node::Map(&Node::Any))
            .shown_as("object")
            .doc("Stored with every snapshot."),
        opt(
            "on_restore_mismatch",
            Node::Scalar(Kind::Enum(&["warn", "reject"])),
        )
        .doc("When `user_meta` differs on restore."),
    ])
    .checked(crate::checks::snapshot),
);

/// `grpc.limits` and `fanout.grpc.limits`. Their defaults are applied by laredo-server
/// (per port), so they are written here as text: `grpc` / `fanout.grpc` where they
/// differ.
const LIMITS: Node = Node::Object(&Obj::new(&[
    opt("max_connections", POSITIVE)
        .default_is("1024 / 10000")
        .doc(
            "Connections open at once. Calls on a connection over it: `RESOURCE_EXHAUSTED` \
             naming `max_connections`; the connection closes after 2 s.",
        ),
    opt("max_concurrent_streams", POSITIVE)
        .default_is("128 / 16")
        .doc(
            "Calls (HTTP/2 streams) open at once per connection \
             (`SETTINGS_MAX_CONCURRENT_STREAMS`); a stream beyond it is refused \
             (`REFUSED_STREAM`).",
        ),
    opt("max_header_list_size", POSITIVE)
        .default_is("16384")
        .doc("Largest request header block in bytes."),
    opt("max_message_size", POSITIVE)
        .default_is("4194304")
        .doc("Largest request message in bytes: `RESOURCE_EXHAUSTED` naming `max_message_size`."),
    opt("keepalive_interval", POSITIVE_DURATION)
        .default_is("30s")
        .doc("HTTP/2 PING interval."),
    opt("keepalive_timeout", POSITIVE_DURATION)
        .default_is("20s")
        .doc("An unanswered PING closes the connection after this long."),
    opt("max_pending_accept_reset_streams", POSITIVE)
        .default_is("20")
        .doc(
            "Streams a client may reset before the server took them (rapid reset): beyond \
             it, `GOAWAY(ENHANCE_YOUR_CALM)`.",
        ),
    opt("max_local_error_reset_streams", POSITIVE)
        .default_is("256")
        .doc(
            "Streams the server may reset for a client's protocol errors before it ends the \
             connection.",
        ),
    opt("max_cancelled_calls", POSITIVE).default_is("200").doc(
        "Calls a client may cancel (reset after the server took them, or let its \
             deadline pass) per connection within 10 s; beyond it the connection is closed.",
    ),
    opt("request_timeout", POSITIVE_DURATION)
        .default_is("30s")
        .doc(
            "How long a unary call may take: `DEADLINE_EXCEEDED` naming `request_timeout`. \
             Streams (`Sync`, `WatchStatus`, `Subscribe`) are bounded only until their first \
             answer.",
        ),
    opt("idle_timeout", POSITIVE_DURATION).default_is("5m").doc(
        "A connection with no call in flight for this long is closed (also a connection \
             that never starts a call).",
    ),
    opt("tcp_keepalive", POSITIVE_DURATION)
        .default_is("60s")
        .doc("TCP keepalive idle time and probe interval on accepted sockets."),
]));

/// A listener's `bind`.
const BIND: Node = NON_EMPTY_STR;

pub(super) const GRPC: Node = Node::Object(&Obj::new(&[
    opt("port", PORT).doc("OAM + Query gRPC listener."),
    opt("bind", BIND)
        .shown_as("IP address")
        .doc("Address the port listens on (`127.0.0.1` for loopback only, `::` for IPv6)."),
    opt("limits", LIMITS)
        .own_table()
        .default_is("see below")
        .doc("Limits of the OAM + Query port (see below)."),
    opt(
        "tls",
        Node::Object(
            &Obj::new(&[
                opt("enabled", BOOL).doc(
                    "TLS from PEM files (a load failure is an error). Also serves the \
                     fan-out port.",
                ),
                opt("cert_path", STR).doc("PEM certificate chain; required when TLS is enabled."),
                opt("key_path", STR).doc("PEM private key; required when TLS is enabled."),
            ])
            .checked(crate::checks::tls),
        ),
    ),
    opt(
        "auth",
        Node::Object(&Obj::new(&[
            opt("admin_token", NON_EMPTY_STR).doc(
                "A token of the **admin** role (every method). Also \
                 `LAREDO_GRPC_AUTH_ADMIN_TOKEN`. Redacted in dumps.",
            ),
            opt("admin_tokens", STRINGS).doc(
                "More admin tokens, for rotation (old and new side by side). Redacted in \
                 dumps.",
            ),
            opt("admin_token_files", STRINGS).shown_as("[path]").doc(
                "Files holding one admin token each (mounted secrets), read at startup, \
                 whitespace trimmed; an unreadable or empty file is a startup error naming \
                 the key.",
            ),
            opt("read_token", NON_EMPTY_STR).doc(
                "A token of the **read** role: every method but the admin ones (Query, \
                 fan-out `Sync`, OAM reads incl. dead letters, reflection). Also \
                 `LAREDO_GRPC_AUTH_READ_TOKEN`. Redacted in dumps.",
            ),
            opt("read_tokens", STRINGS).doc("More read tokens. Redacted in dumps."),
            opt("read_token_files", STRINGS)
                .shown_as("[path]")
                .doc("Files holding one read token each."),
            opt("admin_methods", STRINGS).doc(
                "Method paths (`/pkg.Service/Method`, or `/pkg.Service/` for a service) that \
                 need the admin role **in addition to** the OAM methods that change state.",
            ),
        ])),
    ),
    opt(
        "web",
        Node::Object(&Obj::new(&[
            opt("enabled", BOOL).doc("Accept gRPC-Web."),
            opt("cors_allowed_origins", STRINGS)
                .doc("Origins whose browsers may call; empty allows none."),
        ])),
    ),
]));

pub(super) const FANOUT: Node = Node::Object(&Obj::new(&[opt(
    "grpc",
    Node::Object(&Obj::new(&[
        opt("port", PORT).doc(
            "Replication listener; started only when a `replication-fanout` target exists. \
             Uses the `grpc.tls`, `grpc.auth` and `grpc.web` settings.",
        ),
        opt("bind", BIND)
            .shown_as("IP address")
            .doc("Address of the replication listener."),
        opt("limits", LIMITS)
            .own_table()
            .default_is("see below")
            .doc("Limits of the replication port (see below)."),
    ])),
)]));

pub(super) const HEALTH: Node = Node::Object(
    &Obj::new(&[
        opt("http_port", PORT)
            .doc("Health HTTP server (also serves `/metrics`). Open (no token), no row data."),
        opt("bind", BIND)
            .shown_as("IP address")
            .doc("Address of the health port."),
        opt("readiness_path", NON_EMPTY_STR).doc("Readiness probe."),
        opt("liveness_path", NON_EMPTY_STR).doc("Liveness probe."),
        opt("startup_path", NON_EMPTY_STR).doc("Startup probe."),
    ])
    .checked(crate::checks::health_paths),
);

pub(super) const OBSERVABILITY: Node = Node::Object(&Obj::new(&[
    opt(
        "metrics",
        Node::Object(&Obj::new(&[
            opt("type", Node::Scalar(Kind::Enum(&["prometheus", "otel"]))).doc("Metrics backend."),
            opt("port", PORT).doc("Dedicated metrics port."),
            opt("bind", BIND)
                .shown_as("IP address")
                .doc("Address of the metrics port."),
            opt("path", NON_EMPTY_STR).doc("Metrics path."),
            opt(
                "otel",
                Node::Object(
                    &Obj::new(&[
                        opt("exporter", Node::Scalar(Kind::Enum(&["stdout", "otlp"])))
                            .doc("OpenTelemetry exporter (`type = otel`)."),
                        opt("endpoint", NON_EMPTY_STR)
                            .default_is("required for `otlp`")
                            .doc("OTLP endpoint."),
                        opt("interval", POSITIVE_DURATION).doc("Export cadence."),
                    ])
                    .checked(crate::checks::otel),
                ),
            ),
        ])),
    ),
    opt(
        "logging",
        Node::Object(&Obj::new(&[
            opt("type", Node::Scalar(Kind::Enum(&["structured", "text"]))).doc(
                "Logs on stderr: `structured` writes JSON lines, `text` lines for people. \
                 `laredo-server --log-format json|text` (or `LAREDO_LOG_FORMAT`) overrides \
                 it.",
            ),
            opt(
                "level",
                Node::Scalar(Kind::Enum(&["debug", "info", "warn", "error"])),
            )
            .doc("Log level."),
        ])),
    ),
]));

pub(super) const SHUTDOWN: Node = Node::Object(&Obj::new(&[
    opt("timeout", POSITIVE_DURATION).doc("Cap on the whole shutdown."),
    opt("drain_timeout", DURATION).doc("Fan-out drain time."),
]));
