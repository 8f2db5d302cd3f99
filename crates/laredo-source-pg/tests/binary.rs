//! The binary baseline COPY against the text one, on a real server: every mapped type,
//! special values, and random values the server encoded.

use laredo_core::{Row, Value, table};
use laredo_source_pg::internals::baseline::{BaselineError, TableCopy};
use laredo_source_pg::internals::catalog;
use laredo_source_pg::internals::types::SESSION_SETTINGS;
use laredo_test_support::PgCluster;
use proptest::prelude::*;

use super::connect;

/// A client on `url` with laredo's session settings, which the text format needs.
async fn session(url: &str) -> tokio_postgres::Client {
    let client = connect(url).await;
    let settings: String = SESSION_SETTINGS
        .iter()
        .map(|(name, value)| format!("SET {name} = '{value}'; "))
        .collect();
    client.batch_execute(&settings).await.unwrap();
    client
}

async fn read_all(mut copy: TableCopy) -> Vec<Row> {
    let mut rows = Vec::new();
    while let Some(batch) = copy.next_batch(7).await.unwrap() {
        rows.extend(batch);
    }
    rows.sort_by_key(|r| r.get_i64("id"));
    rows
}

/// Table `name` of `db` read in text and in binary.
async fn both_formats(client: &tokio_postgres::Client, name: &str) -> (Vec<Row>, Vec<Row>) {
    let t = table("public", name);
    let columns = catalog::discover_columns(client, &t).await.unwrap();
    let text = read_all(TableCopy::start_text(client, &t, &columns).await.unwrap()).await;
    let binary = read_all(TableCopy::start(client, &t, &columns).await.unwrap()).await;
    (text, binary)
}

/// Compares column by column, so a failure names the column.
fn assert_same_rows(text: &[Row], binary: &[Row]) {
    assert_eq!(text.len(), binary.len());
    for (t, b) in text.iter().zip(binary) {
        for ((name, tv), (_, bv)) in t.iter().zip(b.iter()) {
            assert_eq!(tv, bv, "column {name} of row {:?}", t.get("id"));
        }
        assert_eq!(t, b);
    }
}

const EVERY_TYPE: &str = r#"
CREATE TYPE mood AS ENUM ('sad', 'happy', 'ünï code');
CREATE DOMAIN posint AS int4 CHECK (VALUE > 0);
CREATE DOMAIN address AS inet;
CREATE TABLE every (
  id int8 PRIMARY KEY, b bool, i2 int2, i4 int4, i8 int8, o oid, x xid, f4 real, f8 float8,
  n numeric, n2 numeric(30, 10), t text, vc varchar(5), bp char(3), nm name, ch "char",
  by bytea, j json, jb jsonb, u uuid, d date, tm time, ttz timetz, ts timestamp,
  tstz timestamptz, iv interval,
  ab bool[], ai2 int2[], ai4 int4[], ai8 int8[], aoid oid[], af4 real[], af8 float8[],
  an numeric[], at text[], abp char(2)[], avc varchar[], anm name[], aby bytea[], aj json[],
  ajb jsonb[], au uuid[], ad date[], atm time[], attz timetz[], ats timestamp[],
  atstz timestamptz[], aiv interval[],
  m mood, am mood[], dp posint, da address, ip inet, cd cidr, mo money, bits bit(4),
  r int4range, ach "char"[]
);
INSERT INTO every (id) VALUES (1);
INSERT INTO every VALUES (2, true, -5, 7, 9000000000, 4294967295, '12345', 0.1, 0.1,
  12.500, 3.14, 'héllo', 'ab', 'x', 'nâme', 'é', '\xdeadbeef', '{"a":  [1, 2]}',
  '{"b": "ü", "a": 1}', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '2024-02-29',
  '13:14:15.5', '01:02:03+05:30', '2024-05-01 10:00:00.25', '2024-05-01 10:00:00+02',
  '1 year 2 months 3 days 04:05:06.5',
  '{t,f,NULL}', '{1,-2}', '{1,NULL,3}', '{9000000000}', '{1,4294967295}', '{0.1,NaN}',
  '{1e300,-0}', '{1.50,-0.001,NaN}', '{"a b",NULL,"NULL","","c\"d\\e",é}', '{a,bc}',
  '{x,"y z"}', '{n1}', '{"\\x00ff",NULL}', '{"{\"a\": 1}","[]"}', '{"{\"a\": 1}",null}',
  '{a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11}', '{2024-01-01,infinity}', '{00:00:00,24:00:00}',
  '{12:00:00-03}', '{"2024-01-01 00:00:00",-infinity}', '{"2024-01-01 00:00:00+00"}',
  '{"1 day","-1 mon"}',
  'happy', '{sad,"ünï code"}', 5, '10.0.0.1', '192.168.1.5', '10.1.0.0/16', 12.34, '1010',
  '[1,5)', '{a,b}');
-- Special values and edges.
INSERT INTO every (id, i2, i4, i8, f4, f8, n, n2, t, bp, ch, by, j, jb, d, tm, ttz, ts,
    tstz, iv, ai4, at, af8, an, aiv)
  VALUES (3, -32768, -2147483648, -9223372036854775808, 'NaN', 'NaN', 'NaN', -0.0000000001,
    E'tab\there\nnew line \\ back ✓ 😀', '', E'\\001', '', '"just a string"', '[]',
    'infinity', '24:00:00', '23:59:59.999999-11:30', 'infinity', '-infinity',
    '-1 year -2 months +3 days -04:05:06.789', '{{1,2},{3,NULL}}', '{{{a}},{{"b c"}}}',
    '{}', '{}', '{}');
INSERT INTO every (id, i2, i4, i8, f4, f8, n, d, ts, tstz, tm, ttz, iv, ai4, at, an)
  VALUES (4, 32767, 2147483647, 9223372036854775807, 'Infinity', '-Infinity', 'Infinity',
    '-infinity', '-infinity', 'infinity', '00:00:00', '00:00:00+14', '-0.000001 seconds',
    '[0:1]={5,6}', '[2:3][1:1]={{x},{y}}', '{{1.5,-2},{NaN,3}}');
INSERT INTO every (id, f4, f8, n, d, ts, tstz, ttz, iv)
  VALUES (5, '-Infinity', '4.9e-324', '-Infinity', '4713-01-01 BC', '4713-11-24 00:00:00 BC',
    '294247-01-10 04:00:54.775806+00', '12:00:00+00:00:30', '178956970 years 7 months');
INSERT INTO every (id, f4, f8, n, d, ts)
  VALUES (6, '1e-45', '-0', '-123456789012345678901234567890.123456789012345678901234567890',
    '5874897-12-31', '0001-01-01 00:00:00 BC');
INSERT INTO every (id, f4, n) VALUES (7, '3.4028235e38', '0.000001');
INSERT INTO every (id, f4, n) VALUES (8, '-0', '100000000000000000000.00');
INSERT INTO every (id, f4, n) VALUES (9, '1.17549435e-38', '0.000000000000000000000000000010000');
"#;

#[tokio::test]
async fn every_type_reads_the_same_in_text_and_binary() {
    let pg = PgCluster::shared();
    let db = pg.create_database("binary_types").unwrap();
    pg.psql(&db, EVERY_TYPE).unwrap();
    let client = session(&pg.connection_string(&db)).await;
    let (text, binary) = both_formats(&client, "every").await;
    assert_eq!(binary.len(), 9);
    assert_same_rows(&text, &binary);

    // Spot checks that both are not wrong alike: the binary decoder rebuilt these.
    let row = |id: usize| &binary[id - 1];
    assert_eq!(row(2).get("f4"), Some(&Value::Float64(0.1)));
    assert_eq!(row(2).get("n"), Some(&Value::numeric("12.500")));
    assert_eq!(row(2).get("n2"), Some(&Value::numeric("3.1400000000")));
    assert_eq!(row(2).get("ch"), Some(&Value::text("\\303")));
    assert_eq!(row(3).get("ch"), Some(&Value::text("\u{1}")));
    assert_eq!(
        row(2).get("ip"),
        Some(&Value::text("192.168.1.5")),
        "the output function, not the inet-to-text cast (which adds /32)"
    );
    assert_eq!(
        row(2).get("dp"),
        Some(&Value::text("5")),
        "domains stay text"
    );
    assert_eq!(row(2).get("m"), Some(&Value::text("happy")));
    assert_eq!(
        row(6).get("n"),
        Some(&Value::numeric(
            "-123456789012345678901234567890.123456789012345678901234567890"
        ))
    );
    assert_eq!(row(3).get("n2"), Some(&Value::numeric("-0.0000000001")));
    assert_eq!(
        row(3).get("ai4"),
        Some(&Value::array([
            Value::array([Value::Int64(1), Value::Int64(2)]),
            Value::array([Value::Int64(3), Value::Null]),
        ]))
    );
    assert_eq!(
        row(3).get("ttz"),
        Some(&Value::TimeTz {
            micros: 86_399_999_999,
            offset_seconds: -41_400
        })
    );
    assert_eq!(row(4).get("tstz"), Some(&Value::TimestampTz(i64::MAX)));
    assert_eq!(row(1).get("b"), Some(&Value::Null));
}

#[tokio::test]
async fn timestamps_beyond_the_value_range_fail_in_both_formats() {
    let pg = PgCluster::shared();
    let db = pg.create_database("binary_far").unwrap();
    pg.psql(
        &db,
        "CREATE TABLE far (id int8, ts timestamptz); \
         INSERT INTO far VALUES (1, '294276-12-31 23:59:59.999999+00')",
    )
    .unwrap();
    let client = session(&pg.connection_string(&db)).await;
    let t = table("public", "far");
    let columns = catalog::discover_columns(&client, &t).await.unwrap();
    for copy in [
        TableCopy::start_text(&client, &t, &columns).await.unwrap(),
        TableCopy::start(&client, &t, &columns).await.unwrap(),
    ] {
        let mut copy = copy;
        let err = copy.next_batch(10).await.unwrap_err();
        assert!(
            matches!(&err, BaselineError::BadValue { column, .. } if column == "ts"),
            "{err:?}"
        );
    }
}

/// One random row: values the server encodes from parameters and SQL arithmetic.
#[derive(Debug, Clone)]
struct RandomRow {
    f4: f32,
    f8: f64,
    numeric: String,
    timestamp_micros: i64,
    date_days: i32,
    time_micros: i64,
    timetz: String,
    interval: (i32, i32, i64),
    text: String,
    bytes: Vec<u8>,
    ints: Vec<Option<i64>>,
    numerics: Vec<String>,
}

fn numeric_text() -> impl Strategy<Value = String> {
    prop_oneof![
        1 => prop::sample::select(vec!["NaN", "Infinity", "-Infinity", "0", "-0.00"])
            .prop_map(str::to_string),
        8 => ("-?", "[0-9]{1,40}", proptest::option::of("[0-9]{1,30}")).prop_map(
            |(sign, whole, fraction)| match fraction {
                Some(fraction) => format!("{sign}{whole}.{fraction}"),
                None => format!("{sign}{whole}"),
            }
        ),
    ]
}

fn timetz_text() -> impl Strategy<Value = String> {
    (0i64..86_400_000_000, -50_399i32..=50_399).prop_map(|(micros, offset)| {
        let (seconds, fraction) = (micros / 1_000_000, micros % 1_000_000);
        let sign = if offset < 0 { '-' } else { '+' };
        let offset = offset.abs();
        format!(
            "{:02}:{:02}:{:02}.{fraction:06}{sign}{:02}:{:02}:{:02}",
            seconds / 3600,
            seconds / 60 % 60,
            seconds % 60,
            offset / 3600,
            offset / 60 % 60,
            offset % 60
        )
    })
}

fn random_row() -> impl Strategy<Value = RandomRow> {
    (
        (any::<u32>(), any::<u64>(), numeric_text()),
        // PostgreSQL's timestamp and date ranges, counted from 2000-01-01.
        (
            // (The last 30 years of timestamps overflow microseconds since 1970.)
            -211_813_488_000_000_000i64..i64::MAX - 946_684_800_000_000,
            -2_451_545i32..2_145_031_949,
            0i64..86_400_000_000,
            timetz_text(),
        ),
        (any::<i32>(), any::<i32>(), -(1i64 << 52)..(1i64 << 52)),
        (
            proptest::collection::vec(any::<char>().prop_filter("no NUL", |c| *c != '\0'), 0..24)
                .prop_map(|chars| chars.into_iter().collect::<String>()),
            proptest::collection::vec(any::<u8>(), 0..24),
            proptest::collection::vec(proptest::option::of(any::<i64>()), 0..5),
            proptest::collection::vec(numeric_text(), 0..4),
        ),
    )
        .prop_map(
            |(
                (f4, f8, numeric),
                (timestamp_micros, date_days, time_micros, timetz),
                interval,
                (text, bytes, ints, numerics),
            )| RandomRow {
                f4: f32::from_bits(f4),
                f8: f64::from_bits(f8),
                numeric,
                timestamp_micros,
                date_days,
                time_micros,
                timetz,
                interval,
                text,
                bytes,
                ints,
                numerics,
            },
        )
}

/// A database with an empty table `r` for the random rows.
fn random_db() -> String {
    let pg = PgCluster::shared();
    let db = pg.create_database("binary_random").unwrap();
    pg.psql(
        &db,
        "CREATE TABLE r (id int8 PRIMARY KEY, f4 real, f8 float8, n numeric, ts timestamp, \
           tstz timestamptz, d date, tm time, ttz timetz, iv interval, t text, by bytea, \
           ai int8[], an numeric[], af4 real[])",
    )
    .unwrap();
    db
}

async fn insert_and_compare(url: &str, rows: &[RandomRow]) {
    let client = session(url).await;
    client.batch_execute("TRUNCATE r").await.unwrap();
    let insert = client
        .prepare(
            "INSERT INTO r VALUES ($1, $2, $3, $4::text::numeric, \
               timestamp '2000-01-01' + ($5::int8 / 86400000000) * interval '1 day' \
                 + ($5::int8 % 86400000000) * interval '1 microsecond', \
               timestamptz '2000-01-01 00:00:00+00' + ($5::int8 / 86400000000) * interval '1 day' \
                 + ($5::int8 % 86400000000) * interval '1 microsecond', \
               date '2000-01-01' + $6::int4, \
               time '00:00' + $7::int8 * interval '1 microsecond', $8::text::timetz, \
               make_interval(months => $9::int4, days => $10::int4) \
                 + $11::int8 * interval '1 microsecond', \
               $12, $13, $14, $15::text[]::numeric[], ARRAY[$2::real, -$2::real])",
        )
        .await
        .unwrap();
    for (id, row) in (1i64..).zip(rows) {
        let (months, days, micros) = row.interval;
        client
            .execute(
                &insert,
                &[
                    &id,
                    &row.f4,
                    &row.f8,
                    &row.numeric,
                    &row.timestamp_micros,
                    &row.date_days,
                    &row.time_micros,
                    &row.timetz,
                    &months,
                    &days,
                    &micros,
                    &row.text,
                    &row.bytes,
                    &row.ints,
                    &row.numerics,
                ],
            )
            .await
            .unwrap();
    }
    let (text, binary) = both_formats(&client, "r").await;
    assert_eq!(binary.len(), rows.len());
    assert_same_rows(&text, &binary);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(12))]

    #[test]
    fn random_values_read_the_same_in_text_and_binary(
        rows in proptest::collection::vec(random_row(), 1..40),
    ) {
        static DB: std::sync::OnceLock<String> = std::sync::OnceLock::new();
        let url = PgCluster::shared().connection_string(DB.get_or_init(random_db));
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(insert_and_compare(&url, &rows));
    }
}
