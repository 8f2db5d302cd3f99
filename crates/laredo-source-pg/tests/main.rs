//! The pgoutput decoder against what a real PostgreSQL server emits.
#![allow(clippy::unwrap_used, reason = "tests")]

use laredo_core::{Value, time};
use laredo_source_pg::internals::pgoutput::{self, Message, OldTuple, TupleValue};
use laredo_source_pg::internals::types::parse_text;
use laredo_test_support::PgCluster;

fn unhex(hex: &str) -> Vec<u8> {
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect()
}

/// Every message the slot has for publication `publication`, decoded.
fn changes(pg: &PgCluster, db: &str, slot: &str, publication: &str) -> Vec<Message> {
    let settings: String = laredo_source_pg::internals::types::SESSION_SETTINGS
        .iter()
        .map(|(name, value)| format!("SET {name} = '{value}'; "))
        .collect();
    let out = pg
        .psql(
            db,
            &format!(
                "{settings}SELECT encode(data, 'hex') FROM pg_logical_slot_get_binary_changes('{slot}', NULL, NULL, \
                 'proto_version', '1', 'publication_names', '{publication}', 'messages', 'true')"
            ),
        )
        .unwrap();
    out.lines()
        .map(|line| pgoutput::decode(&unhex(line.trim())).unwrap())
        .collect()
}

/// Creates a pgoutput slot for `db` (slots are cluster-wide: the name carries the db).
fn create_slot(pg: &PgCluster, db: &str) -> String {
    let slot = format!("s_{db}");
    pg.psql(
        db,
        &format!("SELECT pg_create_logical_replication_slot('{slot}', 'pgoutput')"),
    )
    .unwrap();
    slot
}

/// A client on `url`, its connection driven by a task.
/// `url` (as the test clusters write it) for another role.
fn with_user(url: &str, user: &str) -> String {
    url.replacen("postgres@", &format!("{user}@"), 1)
}

async fn connect(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    client
}

/// The first message `pick` accepts.
fn first<'a, T>(messages: &'a [Message], pick: impl Fn(&'a Message) -> Option<&'a T>) -> &'a T {
    messages
        .iter()
        .find_map(pick)
        .expect("the message is in the stream")
}

fn text(value: &TupleValue) -> Option<&str> {
    match value {
        TupleValue::Text(bytes) => std::str::from_utf8(bytes).ok(),
        _ => None,
    }
}

#[test]
fn decodes_a_real_servers_stream() {
    let pg = PgCluster::shared();
    let db = pg.create_database("decode").unwrap();
    pg.psql(
        &db,
        "CREATE TABLE t (id int8 PRIMARY KEY, name text, big text); \
         ALTER TABLE t ALTER COLUMN big SET STORAGE EXTERNAL; \
         CREATE PUBLICATION p FOR TABLE t;",
    )
    .unwrap();
    let slot = create_slot(pg, &db);
    pg.psql(
        &db,
        "INSERT INTO t VALUES (1, 'a', repeat('x', 100000)); \
         UPDATE t SET name = 'b' WHERE id = 1; \
         UPDATE t SET id = 2 WHERE id = 1; \
         DELETE FROM t WHERE id = 2; \
         TRUNCATE t; \
         SELECT pg_logical_emit_message(true, 'laredo', 'hello');",
    )
    .unwrap();
    let messages = changes(pg, &db, &slot, "p");
    let kinds: Vec<&str> = messages
        .iter()
        .map(|m| match m {
            Message::Begin(_) => "B",
            Message::Commit(_) => "C",
            Message::Relation(_) => "R",
            Message::Insert(_) => "I",
            Message::Update(_) => "U",
            Message::Delete(_) => "D",
            Message::Truncate(_) => "T",
            Message::Message(_) => "M",
            _ => "?",
        })
        .collect();
    // psql runs the statements as one implicit transaction. The server sends the
    // relation again before the truncate (TRUNCATE invalidates its relation cache).
    assert_eq!(
        kinds,
        vec!["B", "R", "I", "U", "U", "D", "R", "T", "M", "C"]
    );

    let Message::Relation(relation) = &messages[1] else {
        unreachable!()
    };
    assert_eq!(
        (relation.namespace.as_str(), relation.name.as_str()),
        ("public", "t")
    );
    let names: Vec<(&str, bool, u32)> = relation
        .columns
        .iter()
        .map(|c| (c.name.as_str(), c.key, c.type_oid))
        .collect();
    assert_eq!(
        names,
        vec![("id", true, 20), ("name", false, 25), ("big", false, 25)]
    );
    assert_eq!(relation.replica_identity, b'd');

    let Message::Insert(insert) = &messages[2] else {
        unreachable!()
    };
    assert_eq!(text(&insert.new[0]), Some("1"));
    assert_eq!(text(&insert.new[2]).map(str::len), Some(100_000));

    // The TOASTed column the first update did not touch arrives as "unchanged".
    let Message::Update(update) = &messages[3] else {
        unreachable!()
    };
    assert!(
        update.old.is_none(),
        "key unchanged, default identity: no old image"
    );
    assert_eq!(text(&update.new[1]), Some("b"));
    assert!(
        matches!(update.new[2], TupleValue::UnchangedToast),
        "the untouched TOAST column is marked unchanged"
    );

    // A key change sends the old key.
    let Message::Update(rekey) = &messages[4] else {
        unreachable!()
    };
    let Some(OldTuple::Key(old)) = &rekey.old else {
        panic!("old key expected: {rekey:?}")
    };
    assert_eq!(text(&old[0]), Some("1"));
    assert_eq!(text(&rekey.new[0]), Some("2"));

    let Message::Delete(delete) = &messages[5] else {
        unreachable!()
    };
    assert_eq!(text(&delete.old.tuple()[0]), Some("2"));

    let Message::Truncate(truncate) = &messages[7] else {
        unreachable!()
    };
    assert_eq!(truncate.relations, vec![relation.oid]);

    let Message::Message(logical) = &messages[8] else {
        unreachable!()
    };
    assert!(logical.transactional);
    assert_eq!(
        (logical.prefix.as_str(), logical.content.as_slice()),
        ("laredo", b"hello".as_slice())
    );

    let (Message::Begin(begin), Message::Commit(commit)) = (&messages[0], &messages[9]) else {
        unreachable!()
    };
    assert_eq!(begin.final_lsn, commit.commit_lsn);
}

#[test]
fn replica_identity_full_sends_the_whole_old_row() {
    let pg = PgCluster::shared();
    let db = pg.create_database("full").unwrap();
    pg.psql(
        &db,
        "CREATE TABLE f (id int8 PRIMARY KEY, v text); ALTER TABLE f REPLICA IDENTITY FULL; \
         INSERT INTO f VALUES (1, 'a'); \
         CREATE PUBLICATION p FOR TABLE f;",
    )
    .unwrap();
    let slot = create_slot(pg, &db);
    pg.psql(&db, "UPDATE f SET v = 'b' WHERE id = 1").unwrap();
    let messages = changes(pg, &db, &slot, "p");
    let update = first(&messages, |m| match m {
        Message::Update(u) => Some(u),
        _ => None,
    });
    let Some(OldTuple::Full(old)) = &update.old else {
        panic!("full old row expected: {update:?}")
    };
    assert_eq!((text(&old[0]), text(&old[1])), (Some("1"), Some("a")));
    let Message::Relation(relation) = &messages[1] else {
        panic!("relation expected")
    };
    assert_eq!(relation.replica_identity, b'f');
}

#[test]
fn built_in_types_map_to_values() {
    let pg = PgCluster::shared();
    let db = pg.create_database("types").unwrap();
    pg.psql(
        &db,
        "CREATE TYPE mood AS ENUM ('sad', 'happy'); \
         CREATE TABLE k (id int8 PRIMARY KEY, b bool, i2 int2, i4 int4, f4 real, f8 float8, n numeric, \
           t text, vc varchar(5), bp char(3), by bytea, j json, jb jsonb, u uuid, d date, tm time, \
           ttz timetz, ts timestamp, tstz timestamptz, iv interval, ai int4[], at text[], m mood, nul text); \
         CREATE PUBLICATION p FOR TABLE k;",
    )
    .unwrap();
    let slot = create_slot(pg, &db);
    pg.psql(
        &db,
        "INSERT INTO k VALUES (9000000000, true, -5, 7, 1.5, 0.1, 12.500, 'héllo', 'ab', 'x', '\\xdead', \
           '{\"a\": 1}', '{\"a\": 1}', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '2024-02-29', '13:14:15.5', \
           '01:02:03+05:30', '2024-05-01 10:00:00.25', '2024-05-01 10:00:00+02', \
           '1 year 2 months 3 days 04:05:06.5', '{1,NULL,3}', '{\"a b\",c}', 'happy', NULL)",
    )
    .unwrap();
    let messages = changes(pg, &db, &slot, "p");
    let relation = first(&messages, |m| match m {
        Message::Relation(r) => Some(r),
        _ => None,
    });
    let insert = first(&messages, |m| match m {
        Message::Insert(i) => Some(i),
        _ => None,
    });
    let value = |name: &str| -> Value {
        let idx = relation
            .columns
            .iter()
            .position(|c| c.name == name)
            .unwrap();
        match &insert.new[idx] {
            TupleValue::Null => Value::Null,
            TupleValue::Text(bytes) => parse_text(
                relation.columns[idx].type_oid,
                std::str::from_utf8(bytes).unwrap(),
            )
            .unwrap(),
            other => panic!("unexpected {other:?} for {name}"),
        }
    };
    let micros = |s: &str| time::parse_rfc3339_micros(s).unwrap();
    let expected = [
        ("id", Value::Int64(9_000_000_000)),
        ("b", Value::Bool(true)),
        ("i2", Value::Int64(-5)),
        ("i4", Value::Int64(7)),
        ("f4", Value::Float64(1.5)),
        ("f8", Value::Float64(0.1)),
        ("n", Value::numeric("12.500")),
        ("t", Value::text("héllo")),
        ("vc", Value::text("ab")),
        ("bp", Value::text("x  ")),
        ("by", Value::bytes([0xde, 0xad])),
        ("j", Value::json("{\"a\": 1}")),
        ("jb", Value::json("{\"a\": 1}")),
        (
            "u",
            Value::Uuid([
                0xa0, 0xee, 0xbc, 0x99, 0x9c, 0x0b, 0x4e, 0xf8, 0xbb, 0x6d, 0x6b, 0xb9, 0xbd, 0x38,
                0x0a, 0x11,
            ]),
        ),
        (
            "d",
            Value::Date(i32::try_from(time::days_from_civil(2024, 2, 29)).unwrap()),
        ),
        (
            "tm",
            Value::Time((13 * 3600 + 14 * 60 + 15) * 1_000_000 + 500_000),
        ),
        (
            "ttz",
            Value::TimeTz {
                micros: 3_723_000_000,
                offset_seconds: 19_800,
            },
        ),
        ("ts", Value::Timestamp(micros("2024-05-01T10:00:00.25Z"))),
        ("tstz", Value::TimestampTz(micros("2024-05-01T08:00:00Z"))),
        (
            "iv",
            Value::Interval {
                months: 14,
                days: 3,
                micros: (4 * 3600 + 5 * 60 + 6) * 1_000_000 + 500_000,
            },
        ),
        (
            "ai",
            Value::array([Value::Int64(1), Value::Null, Value::Int64(3)]),
        ),
        ("at", Value::array([Value::text("a b"), Value::text("c")])),
        ("m", Value::text("happy")),
        ("nul", Value::Null),
    ];
    for (name, want) in expected {
        assert_eq!(value(name), want, "column {name}");
    }
}

mod catalog {
    use super::{connect, with_user};
    use laredo_core::{ValidationError, table};
    use laredo_source_pg::internals::catalog::{self, CatalogError, PublicationConfig};
    use laredo_test_support::PgCluster;

    #[tokio::test]
    async fn discovers_columns_keys_and_types() {
        let pg = PgCluster::shared();
        let db = pg.create_database("columns").unwrap();
        pg.psql(
            &db,
            "CREATE TABLE t (z text, b int4 NOT NULL, a int8 DEFAULT 7, name varchar(10), PRIMARY KEY (a, b)); \
             ALTER TABLE t DROP COLUMN z;",
        )
        .unwrap();
        let client = connect(&pg.connection_string(&db)).await;
        let columns = catalog::discover_columns(&client, &table("public", "t"))
            .await
            .unwrap();
        let summary: Vec<(&str, &str, bool, u32, u32, u32, u32)> = columns
            .iter()
            .map(|c| {
                (
                    c.name.as_str(),
                    c.type_name.as_str(),
                    c.nullable,
                    c.ordinal_position,
                    c.primary_key_ordinal,
                    c.max_length,
                    c.type_oid,
                )
            })
            .collect();
        assert_eq!(
            summary,
            vec![
                ("b", "int4", false, 1, 2, 0, 23),
                ("a", "int8", false, 2, 1, 0, 20),
                ("name", "varchar", true, 3, 0, 10, 1043),
            ]
        );
        assert_eq!(columns[1].default_value.as_deref(), Some("7"));
        assert_eq!(laredo_core::primary_key_columns(&columns), vec!["a", "b"]);
        let err = catalog::discover_columns(&client, &table("public", "nope"))
            .await
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "table public.nope not found or has no columns"
        );
    }

    #[tokio::test]
    async fn validation_reports_missing_tables_and_missing_privileges() {
        let pg = PgCluster::shared();
        let db = pg.create_database("validate").unwrap();
        let role = format!("reader_{db}");
        pg.psql(&db, &format!("CREATE TABLE open (id int8 PRIMARY KEY); CREATE TABLE closed (id int8); CREATE ROLE {role} LOGIN; GRANT SELECT ON open TO {role}"))
            .unwrap();
        let client = connect(&format!("postgresql://{role}@127.0.0.1:{}/{db}", pg.port())).await;
        let problems = catalog::validate_tables(
            &client,
            &[
                table("public", "open"),
                table("public", "closed"),
                table("public", "gone"),
            ],
        )
        .await;
        let codes: Vec<(String, &str)> = problems
            .iter()
            .map(|p| (p.table.as_ref().unwrap().to_string(), p.code.as_str()))
            .collect();
        assert_eq!(
            codes,
            vec![
                (
                    "public.closed".to_string(),
                    ValidationError::PERMISSION_DENIED
                ),
                ("public.gone".to_string(), ValidationError::TABLE_NOT_FOUND),
            ]
        );
    }

    /// What `pub_ops` publishes: its tables and flags, as psql prints them.
    fn publication_state(pg: &PgCluster, db: &str, name: &str) -> (String, String) {
        let tables = pg
            .psql(
                db,
                &format!("SELECT string_agg(tablename, ',' ORDER BY tablename) FROM pg_publication_tables WHERE pubname = '{name}'"),
            )
            .unwrap();
        let flags = pg
            .psql(
                db,
                &format!("SELECT pubinsert, pubupdate, pubdelete, pubtruncate, coalesce(obj_description(oid, 'pg_publication'), '') FROM pg_publication WHERE pubname = '{name}'"),
            )
            .unwrap();
        (tables, flags)
    }

    #[tokio::test]
    async fn validate_server_names_what_replication_lacks_without_changing_anything() {
        use laredo_source_pg::internals::catalog::server_problem;

        let pg = PgCluster::shared();
        let db = pg.create_database("preflight").unwrap();
        pg.psql(
            &db,
            "CREATE TABLE a (id int8 PRIMARY KEY); CREATE TABLE b (id int8 PRIMARY KEY); \
             CREATE PUBLICATION pre_pub FOR TABLE a; \
             DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'no_repl') \
             THEN CREATE ROLE no_repl LOGIN; END IF; END $$; \
             GRANT SELECT ON a, b TO no_repl",
        )
        .unwrap();
        let (a, b) = (table("public", "a"), table("public", "b"));
        let superuser = connect(&pg.connection_string(&db)).await;
        let codes = |problems: &[laredo_core::ValidationError]| {
            problems.iter().map(|p| p.code.clone()).collect::<Vec<_>>()
        };

        // All is well: the superuser, the slot it would create, a publication covering a.
        let publication = PublicationConfig::new("pre_pub");
        let fine = catalog::validate_server(
            &superuser,
            "pre_slot",
            &publication,
            std::slice::from_ref(&a),
        )
        .await;
        assert!(fine.is_empty(), "{fine:?}");

        // A table the operator's publication lacks, and a publication that is missing.
        let problems = catalog::validate_server(
            &superuser,
            "pre_slot",
            &publication,
            &[a.clone(), b.clone()],
        )
        .await;
        assert_eq!(codes(&problems), [server_problem::PUBLICATION]);
        assert!(problems[0].message.contains("public.b"), "{problems:?}");
        let missing = PublicationConfig::new("no_such_pub");
        let problems =
            catalog::validate_server(&superuser, "pre_slot", &missing, std::slice::from_ref(&a))
                .await;
        assert_eq!(codes(&problems), [server_problem::PUBLICATION]);
        assert!(
            problems[0].message.contains("does not exist"),
            "{problems:?}"
        );

        // A role without REPLICATION, which may not create the publication either.
        let url = pg.connection_string(&db);
        let as_plain = connect(&with_user(&url, "no_repl")).await;
        let creating = PublicationConfig::new("no_such_pub").create_missing(true);
        let problems =
            catalog::validate_server(&as_plain, "pre_slot", &creating, std::slice::from_ref(&a))
                .await;
        assert_eq!(
            codes(&problems),
            [
                server_problem::REPLICATION_PRIVILEGE,
                server_problem::PUBLICATION
            ]
        );
        assert!(
            problems[0]
                .message
                .contains("ALTER ROLE \"no_repl\" REPLICATION"),
            "{problems:?}"
        );
        assert!(
            problems[1].message.contains("no CREATE privilege"),
            "{problems:?}"
        );

        // Every slot taken: a new slot cannot be had, the existing one still can.
        let free: i64 = superuser
            .query_one(
                "SELECT current_setting('max_replication_slots')::int8 - count(*) FROM pg_replication_slots",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        for n in 0..free {
            superuser
                .execute(
                    "SELECT pg_create_physical_replication_slot($1)",
                    &[&format!("pre_fill_{n}")],
                )
                .await
                .unwrap();
        }
        let problems = catalog::validate_server(
            &superuser,
            "pre_slot",
            &publication,
            std::slice::from_ref(&a),
        )
        .await;
        let taken = catalog::validate_server(
            &superuser,
            "pre_fill_0",
            &publication,
            std::slice::from_ref(&a),
        )
        .await;
        for n in 0..free {
            superuser
                .execute(
                    "SELECT pg_drop_replication_slot($1)",
                    &[&format!("pre_fill_{n}")],
                )
                .await
                .unwrap();
        }
        assert_eq!(
            codes(&problems),
            [server_problem::NO_FREE_SLOT],
            "{problems:?}"
        );
        assert!(taken.is_empty(), "{taken:?}");
        // Nothing was changed on the way.
        assert_eq!(
            catalog::publication_tables(&superuser, "pre_pub")
                .await
                .unwrap(),
            vec![a]
        );
    }

    #[tokio::test]
    async fn an_operator_owned_publication_is_never_altered_only_checked() {
        let pg = PgCluster::shared();
        let db = pg.create_database("operator_pub").unwrap();
        pg.psql(
            &db,
            "CREATE TABLE a (id int8 PRIMARY KEY); CREATE TABLE b (id int8 PRIMARY KEY); \
             CREATE TABLE other (id int8 PRIMARY KEY); \
             CREATE PUBLICATION ops_pub FOR TABLE a, other WITH (publish = 'insert, update, delete')",
        )
        .unwrap();
        let client = connect(&pg.connection_string(&db)).await;
        let (a, b) = (table("public", "a"), table("public", "b"));
        let before = publication_state(pg, &db, "ops_pub");
        assert_eq!(before.0, "a,other");

        // create = false, and even create = true: neither may alter it.
        for create in [false, true] {
            let config = PublicationConfig::new("ops_pub").create_missing(create);
            // It covers a, but not b, and not truncate.
            let err = catalog::sync_publication(&client, &config, &[a.clone(), b.clone()])
                .await
                .unwrap_err();
            assert!(
                matches!(
                    &err,
                    CatalogError::PublicationIncomplete { missing_tables, missing_operations, .. }
                        if missing_tables == &vec![b.clone()] && missing_operations == &vec!["truncate".to_string()]
                ),
                "{err}"
            );
            let message = err.to_string();
            assert!(
                message
                    .contains("does not publish the tables public.b nor the operations truncate")
                    && message.contains("adopt_existing"),
                "{message}"
            );
            assert_eq!(
                publication_state(pg, &db, "ops_pub"),
                before,
                "left exactly as it was"
            );
        }

        // What it covers is enough: the table it has and the operations it publishes.
        let mut config = PublicationConfig::new("ops_pub");
        config.publish = vec![
            "insert".to_string(),
            "update".to_string(),
            "delete".to_string(),
        ];
        catalog::sync_publication(&client, &config, std::slice::from_ref(&a))
            .await
            .unwrap();
        assert_eq!(publication_state(pg, &db, "ops_pub"), before);

        // Row filters would need altering it: refused, naming the way out.
        config.row_filters.insert(a.clone(), "id > 0".to_string());
        let err = catalog::sync_publication(&client, &config, std::slice::from_ref(&a))
            .await
            .unwrap_err();
        assert!(
            matches!(err, CatalogError::FiltersNeedManagedPublication(_)),
            "{err}"
        );
        assert_eq!(publication_state(pg, &db, "ops_pub"), before);

        // Adopting it is explicit: then it follows the configuration, marked as laredo's.
        let mut config = PublicationConfig::new("ops_pub").create_missing(true);
        config.adopt_existing = true;
        catalog::sync_publication(&client, &config, &[a.clone(), b.clone()])
            .await
            .unwrap();
        let (tables, flags) = publication_state(pg, &db, "ops_pub");
        assert_eq!(tables, "a,b");
        assert_eq!(flags, format!("t|t|t|t|{}", catalog::MANAGED_COMMENT));
    }

    #[tokio::test]
    async fn publications_follow_the_configured_tables() {
        let pg = PgCluster::shared();
        let db = pg.create_database("publication").unwrap();
        pg.psql(&db, "CREATE TABLE a (id int8 PRIMARY KEY, v text, secret text); CREATE TABLE b (id int8 PRIMARY KEY); CREATE TABLE c (id int8 PRIMARY KEY)")
            .unwrap();
        let client = connect(&pg.connection_string(&db)).await;
        let (a, b, c) = (
            table("public", "a"),
            table("public", "b"),
            table("public", "c"),
        );

        let mut missing = PublicationConfig::new("pub_x");
        missing.create = false;
        let err = catalog::sync_publication(&client, &missing, std::slice::from_ref(&a))
            .await
            .unwrap_err();
        assert!(matches!(err, CatalogError::PublicationMissing(_)), "{err}");

        let config = PublicationConfig::new("pub_x").create_missing(true);
        catalog::sync_publication(&client, &config, &[a.clone(), b.clone()])
            .await
            .unwrap();
        assert_eq!(
            catalog::publication_tables(&client, "pub_x").await.unwrap(),
            vec![a.clone(), b.clone()]
        );

        // Restart with another table set, fewer operations, a row filter and a column list:
        // laredo created pub_x, so it follows the configuration.
        let mut config = PublicationConfig::new("pub_x").create_missing(true);
        config.publish = vec!["insert".to_string(), "update".to_string()];
        config.row_filters.insert(a.clone(), "id > 10".to_string());
        config
            .column_lists
            .insert(a.clone(), vec!["id".to_string(), "v".to_string()]);
        catalog::sync_publication(&client, &config, &[a.clone(), c.clone()])
            .await
            .unwrap();
        assert_eq!(
            catalog::publication_tables(&client, "pub_x").await.unwrap(),
            vec![a.clone(), c.clone()]
        );
        assert_eq!(
            pg.psql(&db, "SELECT pubinsert, pubupdate, pubdelete, pubtruncate FROM pg_publication WHERE pubname = 'pub_x'")
                .unwrap(),
            "t|t|f|f"
        );
        assert_eq!(
            pg.psql(&db, "SELECT array_to_string(attnames, ','), rowfilter FROM pg_publication_tables WHERE pubname = 'pub_x' AND tablename = 'a'")
                .unwrap(),
            "id,v|(id > 10)"
        );

        catalog::drop_publication(&client, "pub_x").await.unwrap();
        assert!(
            catalog::publication_tables(&client, "pub_x")
                .await
                .unwrap()
                .is_empty()
        );
        catalog::drop_publication(&client, "pub_x").await.unwrap();
    }
}

mod baseline {
    use laredo_core::{Value, row, table};
    use laredo_source_pg::internals::baseline::TableCopy;
    use laredo_source_pg::internals::catalog;
    use laredo_test_support::PgCluster;

    #[tokio::test]
    async fn copies_a_table_in_batches_with_every_escape() {
        let pg = PgCluster::shared();
        let db = pg.create_database("copy").unwrap();
        pg.psql(
            &db,
            "CREATE TABLE t (id int8 PRIMARY KEY, v text, b bytea, a text[]); \
             INSERT INTO t SELECT g, CASE WHEN g % 10 = 0 THEN NULL ELSE 'row ' || g || E'\\t\\n\\\\' || 'é' END, \
               decode(lpad(to_hex(g), 8, '0'), 'hex'), ARRAY['x' || g, 'q\"uote'] FROM generate_series(1, 10000) g",
        )
        .unwrap();
        let client = super::connect(&pg.connection_string(&db)).await;
        let t = table("public", "t");
        let columns = catalog::discover_columns(&client, &t).await.unwrap();
        let mut copy = TableCopy::start(&client, &t, &columns).await.unwrap();
        let mut rows = Vec::new();
        let mut batches = 0;
        while let Some(batch) = copy.next_batch(1000).await.unwrap() {
            assert!(batch.len() <= 1000);
            batches += 1;
            rows.extend(batch);
        }
        assert_eq!(rows.len(), 10_000);
        assert!(batches >= 10);
        rows.sort_by_key(|r| r.get_i64("id"));
        let expected = |g: i64| {
            let v = if g % 10 == 0 {
                Value::Null
            } else {
                Value::text(format!("row {g}\t\n\\é"))
            };
            let bytes = u32::try_from(g).unwrap().to_be_bytes();
            row! {"id" => g, "v" => v, "b" => Value::bytes(bytes), "a" => Value::array([Value::text(format!("x{g}")), Value::text("q\"uote")])}
        };
        for g in [1, 9, 10, 4321, 10_000] {
            assert_eq!(
                rows[usize::try_from(g - 1).unwrap()],
                expected(g),
                "row {g}"
            );
        }
    }
}

mod handoff {
    use std::collections::BTreeMap;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::time::Duration;

    use laredo_core::table;
    use laredo_source_pg::internals::baseline::TableCopy;
    use laredo_source_pg::internals::catalog;
    use laredo_source_pg::internals::pgoutput::{self, Message};
    use laredo_source_pg::internals::replication::{ConnectionParams, create_slot_with_snapshot};
    use laredo_test_support::{PgCluster, wait_until};
    use pgwire_replication::ReplicationEvent;

    use super::{connect, text};

    fn int(values: &[laredo_source_pg::internals::pgoutput::TupleValue], idx: usize) -> i64 {
        text(&values[idx]).unwrap().parse().unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn baseline_plus_stream_is_every_change_exactly_once_while_writers_run() {
        let pg = PgCluster::shared();
        let db = pg.create_database("handoff").unwrap();
        pg.psql(
            &db,
            "CREATE TABLE t (id int8 PRIMARY KEY, v int8); \
             INSERT INTO t SELECT g, 0 FROM generate_series(1, 1000) g; \
             CREATE PUBLICATION p FOR TABLE t;",
        )
        .unwrap();
        let url = pg.connection_string(&db);
        let written = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let writer = tokio::spawn({
            let (url, written, stop) = (url.clone(), Arc::clone(&written), Arc::clone(&stop));
            async move {
                let client = connect(&url).await;
                let mut id = 1000i64;
                while !stop.load(Ordering::SeqCst) {
                    id += 1;
                    client
                        .execute("INSERT INTO t VALUES ($1, 0)", &[&id])
                        .await
                        .unwrap();
                    client
                        .execute("UPDATE t SET v = v + 1 WHERE id = $1", &[&(id % 1000 + 1)])
                        .await
                        .unwrap();
                    written.fetch_add(1, Ordering::SeqCst);
                }
            }
        });
        wait_until("writers started", Duration::from_secs(30), || {
            written.load(Ordering::SeqCst) >= 20
        })
        .await;

        // Slot + exported snapshot, then the baseline under that snapshot, all while
        // the writer keeps committing.
        let params = ConnectionParams::parse(&url).unwrap();
        let slot = format!("handoff_{db}");
        let (mut replication, created) = create_slot_with_snapshot(&params, &slot, "p", true)
            .await
            .unwrap();
        assert!(created.consistent_point > 0);
        let query = connect(&url).await;
        query
            .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            .await
            .unwrap();
        query
            .batch_execute(&format!(
                "SET TRANSACTION SNAPSHOT '{}'",
                created.snapshot_name
            ))
            .await
            .unwrap();
        let t = table("public", "t");
        let columns = catalog::discover_columns(&query, &t).await.unwrap();
        let mut copy = TableCopy::start(&query, &t, &columns).await.unwrap();
        let mut state = BTreeMap::new();
        while let Some(batch) = copy.next_batch(500).await.unwrap() {
            for row in batch {
                state.insert(row.get_i64("id").unwrap(), row.get_i64("v").unwrap());
            }
        }
        query.batch_execute("COMMIT").await.unwrap();
        let after_baseline = written.load(Ordering::SeqCst);
        wait_until(
            "writers go on after the baseline",
            Duration::from_secs(30),
            || written.load(Ordering::SeqCst) >= after_baseline + 20,
        )
        .await;
        stop.store(true, Ordering::SeqCst);
        writer.await.unwrap();
        query
            .execute("INSERT INTO t VALUES (-1, 0)", &[])
            .await
            .unwrap();

        // The stream from the consistent point completes the baseline.
        replication.start().await.unwrap();
        let mut streamed_inserts = 0;
        loop {
            let event = tokio::time::timeout(Duration::from_secs(30), replication.recv())
                .await
                .expect("the marker arrives")
                .unwrap()
                .expect("the stream stays open");
            let ReplicationEvent::XLogData { data, .. } = event else {
                continue;
            };
            match pgoutput::decode(&data).unwrap() {
                Message::Insert(insert) => {
                    let id = int(&insert.new, 0);
                    if id == -1 {
                        break;
                    }
                    streamed_inserts += 1;
                    assert!(
                        state.insert(id, int(&insert.new, 1)).is_none(),
                        "insert of {id} delivered by both the baseline and the stream"
                    );
                }
                Message::Update(update) => {
                    state.insert(int(&update.new, 0), int(&update.new, 1));
                }
                _ => {}
            }
        }
        assert!(
            streamed_inserts >= 20,
            "the stream carried the writes after the snapshot"
        );
        let table_now: BTreeMap<i64, i64> = query
            .query("SELECT id, v FROM t WHERE id > 0", &[])
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        assert_eq!(state, table_now, "baseline + stream equals the table");
        replication.shutdown().await.unwrap();
    }
}
mod binary;
mod errors;
mod source;
mod tls;
