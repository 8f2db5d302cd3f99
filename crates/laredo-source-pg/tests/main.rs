//! The pgoutput decoder against what a real PostgreSQL server emits.
#![allow(clippy::unwrap_used, reason = "tests")]

use laredo_source_pg::pgoutput::{self, Message, OldTuple, TupleValue};
use laredo_test_support::PgCluster;

fn unhex(hex: &str) -> Vec<u8> {
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect()
}

/// Every message the slot has for publication `publication`, decoded.
fn changes(pg: &PgCluster, db: &str, slot: &str, publication: &str) -> Vec<Message> {
    let out = pg
        .psql(
            db,
            &format!(
                "SELECT encode(data, 'hex') FROM pg_logical_slot_get_binary_changes('{slot}', NULL, NULL, \
                 'proto_version', '1', 'publication_names', '{publication}', 'messages', 'true')"
            ),
        )
        .unwrap();
    out.lines()
        .map(|line| pgoutput::decode(&unhex(line.trim())).unwrap())
        .collect()
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
    let slot = format!("s_{db}");
    pg.psql(
        &db,
        &format!("SELECT pg_create_logical_replication_slot('{slot}', 'pgoutput')"),
    )
    .unwrap();
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
    let slot = format!("s_{db}");
    pg.psql(
        &db,
        &format!("SELECT pg_create_logical_replication_slot('{slot}', 'pgoutput')"),
    )
    .unwrap();
    pg.psql(&db, "UPDATE f SET v = 'b' WHERE id = 1").unwrap();
    let messages = changes(pg, &db, &slot, "p");
    let update = messages
        .iter()
        .find_map(|m| match m {
            Message::Update(u) => Some(u),
            _ => None,
        })
        .unwrap();
    let Some(OldTuple::Full(old)) = &update.old else {
        panic!("full old row expected: {update:?}")
    };
    assert_eq!((text(&old[0]), text(&old[1])), (Some("1"), Some("a")));
    let Message::Relation(relation) = &messages[1] else {
        panic!("relation expected")
    };
    assert_eq!(relation.replica_identity, b'f');
}
