//! `laredo query`: lookups, gets by primary key, listing, counting and subscribing
//! through the Query service.
//!
//! Key values arrive as text. They are typed by the column types the server reports
//! (`GetTableSchema`, and `GetTableStatus` for the index fields), so `42` finds an
//! `int8` key and `"42"` a `text` one; when the server cannot tell, a value that
//! parses as an integer is sent as one.

use std::process::ExitCode;

use laredo_proto::laredo::v1 as pb;
use serde_json::{Value as Json, json};
use tokio_stream::StreamExt;

use crate::cli::{OutputFormat, QueryArgs, QueryCommand};
use crate::commands::{print_json, print_json_line};
use crate::connection::Connection;
use crate::format::{self, table_name};
use crate::table::Table;

/// `laredo query ...`.
pub(crate) async fn run(
    conn: &Connection,
    output: OutputFormat,
    args: QueryArgs,
) -> anyhow::Result<ExitCode> {
    let command = match args.command {
        Some(command) => command,
        None => short_form(args)?,
    };
    match command {
        QueryCommand::Lookup {
            index,
            all_matches,
            table,
            values,
        } => lookup(conn, output, &table, index.as_deref(), all_matches, &values).await,
        QueryCommand::Get { pk, table } => get(conn, output, &table, &pk).await,
        QueryCommand::List {
            limit,
            page_token,
            table,
        } => list(conn, output, &table, limit, page_token.unwrap_or_default()).await,
        QueryCommand::Count { table } => count(conn, output, &table).await,
        QueryCommand::Subscribe {
            replay_existing,
            table,
        } => subscribe(conn, output, &table, replay_existing).await,
    }
}

/// Maps `query <s.t> ...` onto a subcommand.
fn short_form(args: QueryArgs) -> anyhow::Result<QueryCommand> {
    let Some(table) = args.table else {
        anyhow::bail!("a table is required: laredo query <schema.table> ...");
    };
    if args.all {
        return Ok(QueryCommand::List {
            limit: args.limit,
            page_token: args.page_token,
            table,
        });
    }
    if let Some(mut pk) = args.pk {
        pk.extend(args.values);
        if pk.is_empty() {
            anyhow::bail!("--pk needs the primary key values");
        }
        return Ok(QueryCommand::Get { pk, table });
    }
    if args.values.is_empty() {
        anyhow::bail!(
            "give key values to look up, --pk <values> to get by primary key, or --all to list"
        );
    }
    Ok(QueryCommand::Lookup {
        index: args.index,
        all_matches: false,
        table,
        values: args.values,
    })
}

/// Column types of a table by name, and its primary key columns in key order; empty
/// when the server does not say.
async fn columns(conn: &Connection, schema: &str, table: &str) -> Vec<pb::ColumnDefinition> {
    conn.call(
        conn.oam()
            .get_table_schema(conn.request(pb::GetTableSchemaRequest {
                schema: schema.to_string(),
                table: table.to_string(),
            })),
    )
    .await
    .map(|r| r.columns)
    .unwrap_or_default()
}

/// The fields of index `name`, or of the lookup index when `None`, when the server
/// says.
async fn index_fields(
    conn: &Connection,
    schema: &str,
    table: &str,
    name: Option<&str>,
) -> Vec<String> {
    let indexes = conn
        .call(
            conn.oam()
                .get_table_status(conn.request(pb::GetTableStatusRequest {
                    schema: schema.to_string(),
                    table: table.to_string(),
                })),
        )
        .await
        .map(|r| r.indexes)
        .unwrap_or_default();
    let found = match name {
        Some(name) => indexes.iter().find(|i| i.name == name),
        // The proto calls the lookup index `lookup`; IndexedTarget reports it as
        // `(primary)`, listed first.
        None => indexes
            .iter()
            .find(|i| LOOKUP_INDEX_NAMES.contains(&i.name.as_str()))
            .or(indexes.first()),
    };
    found.map(|i| i.fields.clone()).unwrap_or_default()
}

/// Names a server may give the lookup-fields index.
const LOOKUP_INDEX_NAMES: [&str; 2] = ["lookup", "(primary)"];

/// Types each value by the column at its position in `fields`.
fn typed_values(
    values: &[String],
    fields: &[String],
    columns: &[pb::ColumnDefinition],
) -> Vec<pb::Value> {
    values
        .iter()
        .enumerate()
        .map(|(idx, text)| {
            let data_type = fields
                .get(idx)
                .and_then(|f| columns.iter().find(|c| &c.column_name == f))
                .map(|c| c.data_type.as_str());
            pb::Value::from(&parse_value(text, data_type))
        })
        .collect()
}

/// A text argument as a laredo value of the column type `data_type`.
pub(crate) fn parse_value(text: &str, data_type: Option<&str>) -> laredo_core::Value {
    use laredo_core::Value;
    let Some(data_type) = data_type else {
        return text
            .parse::<i64>()
            .map_or_else(|_| Value::text(text), Value::Int64);
    };
    let data_type = data_type.to_ascii_lowercase();
    let parsed = match data_type.as_str() {
        "int2" | "int4" | "int8" | "smallint" | "integer" | "int" | "bigint" | "serial"
        | "bigserial" | "smallserial" | "oid" => text.parse::<i64>().ok().map(Value::Int64),
        "float4" | "float8" | "real" | "double precision" => {
            text.parse::<f64>().ok().map(Value::Float64)
        }
        "numeric" | "decimal" => Some(Value::numeric(text)),
        "bool" | "boolean" => match text.to_ascii_lowercase().as_str() {
            "true" | "t" | "yes" | "1" => Some(Value::Bool(true)),
            "false" | "f" | "no" | "0" => Some(Value::Bool(false)),
            _ => None,
        },
        "uuid" => parse_uuid(text).map(Value::Uuid),
        "json" | "jsonb" => Some(Value::json(text)),
        _ => None,
    };
    parsed.unwrap_or_else(|| Value::text(text))
}

/// A hyphenated (or plain) hex UUID as its 16 bytes.
fn parse_uuid(text: &str) -> Option<[u8; 16]> {
    let hex: Vec<u8> = text.bytes().filter(|b| *b != b'-').collect();
    if hex.len() != 32 {
        return None;
    }
    let mut out = [0u8; 16];
    for (idx, pair) in hex.chunks(2).enumerate() {
        let pair = std::str::from_utf8(pair).ok()?;
        out[idx] = u8::from_str_radix(pair, 16).ok()?;
    }
    Some(out)
}

async fn lookup(
    conn: &Connection,
    output: OutputFormat,
    name: &str,
    index: Option<&str>,
    all_matches: bool,
    values: &[String],
) -> anyhow::Result<ExitCode> {
    let (schema, table) = format::split_table(name);
    let fields = index_fields(conn, &schema, &table, index).await;
    let columns = columns(conn, &schema, &table).await;
    let key_values = typed_values(values, &fields, &columns);
    let mut query = conn.query();
    if all_matches {
        let response = conn
            .call(query.lookup_all(conn.request(pb::LookupAllRequest {
                schema,
                table,
                index_name: index.unwrap_or_default().to_string(),
                key_values,
            })))
            .await?;
        print_rows(output, &response.rows, None);
        return Ok(ExitCode::SUCCESS);
    }
    let response = conn
        .call(query.lookup(conn.request(pb::LookupRequest {
            schema: schema.clone(),
            table: table.clone(),
            index_name: index.unwrap_or_default().to_string(),
            key_values,
        })))
        .await?;
    let what = format!("{} = {}", key_label(&fields, index), values.join(", "));
    Ok(print_found(
        output,
        &table_name(&schema, &table),
        &what,
        response.found,
        response.row.as_ref(),
    ))
}

fn key_label(fields: &[String], index: Option<&str>) -> String {
    match (fields.is_empty(), index) {
        (false, _) => fields.join(","),
        (true, Some(index)) => format!("index {index}"),
        (true, None) => "lookup key".to_string(),
    }
}

async fn get(
    conn: &Connection,
    output: OutputFormat,
    name: &str,
    pk: &[String],
) -> anyhow::Result<ExitCode> {
    let (schema, table) = format::split_table(name);
    let columns = columns(conn, &schema, &table).await;
    let mut key: Vec<&pb::ColumnDefinition> = columns.iter().filter(|c| c.is_primary_key).collect();
    key.sort_by_key(|c| c.primary_key_ordinal);
    let fields: Vec<String> = key.iter().map(|c| c.column_name.clone()).collect();
    let primary_key = typed_values(pk, &fields, &columns);
    let response = conn
        .call(conn.query().get_row(conn.request(pb::GetRowRequest {
            schema: schema.clone(),
            table: table.clone(),
            primary_key,
        })))
        .await?;
    let label = if fields.is_empty() {
        "primary key".to_string()
    } else {
        fields.join(",")
    };
    let what = format!("{label} = {}", pk.join(", "));
    Ok(print_found(
        output,
        &table_name(&schema, &table),
        &what,
        response.found,
        response.row.as_ref(),
    ))
}

/// Prints one looked-up row; not found is exit status 1.
fn print_found(
    output: OutputFormat,
    table: &str,
    what: &str,
    found: bool,
    row: Option<&pb::Row>,
) -> ExitCode {
    match output {
        OutputFormat::Json => print_json(&json!({
            "found": found,
            "row": format::opt_row_json(row),
        })),
        OutputFormat::Table => match row {
            Some(row) if found => print!("{}", render_row(row)),
            _ => eprintln!("no row of {table} has {what}"),
        },
    }
    if found {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// One row as `column: value` lines.
pub(crate) fn render_row(row: &pb::Row) -> String {
    format::key_values(&format::row_cells(row))
}

/// Rows as a table; the columns of the first row lead, later ones are appended.
pub(crate) fn render_rows(rows: &[pb::Row]) -> String {
    let mut columns: Vec<String> = Vec::new();
    for row in rows {
        for column in &row.columns {
            if !columns.contains(column) {
                columns.push(column.clone());
            }
        }
    }
    let headers: Vec<String> = columns.iter().map(|c| c.to_uppercase()).collect();
    let mut table = Table::new(headers);
    for row in rows {
        let cells = format::row_cells(row);
        table.row(columns.iter().map(|c| {
            cells
                .iter()
                .find(|(name, _)| name == c)
                .map(|(_, v)| v.clone())
                .unwrap_or_default()
        }));
    }
    table.render()
}

/// Prints rows: one as `key: value` lines, several as a table.
fn print_rows(output: OutputFormat, rows: &[pb::Row], footer: Option<String>) {
    match output {
        OutputFormat::Json => print_json(&Json::Array(rows.iter().map(format::row_json).collect())),
        OutputFormat::Table => {
            match rows {
                [] => println!("(no rows)"),
                [row] => print!("{}", render_row(row)),
                rows => print!("{}", render_rows(rows)),
            }
            if let Some(footer) = footer {
                println!("{footer}");
            }
        }
    }
}

async fn list(
    conn: &Connection,
    output: OutputFormat,
    name: &str,
    limit: u32,
    page_token: String,
) -> anyhow::Result<ExitCode> {
    let (schema, table) = format::split_table(name);
    let response = conn
        .call(conn.query().list_rows(conn.request(pb::ListRowsRequest {
            schema,
            table,
            page_size: limit,
            page_token: page_token.clone(),
        })))
        .await?;
    match output {
        OutputFormat::Json => print_json(&json!({
            "rows": response.rows.iter().map(format::row_json).collect::<Vec<_>>(),
            "total_count": response.total_count,
            "next_page_token": response.next_page_token,
        })),
        OutputFormat::Table => {
            let mut footer = showing(&page_token, response.rows.len(), response.total_count);
            if !response.next_page_token.is_empty() {
                footer.push_str(&format!(
                    "\nNext page: laredo query list --limit {limit} --page-token {} {name}",
                    response.next_page_token
                ));
            }
            let rows = response.rows;
            match rows.as_slice() {
                [] => println!("(no rows)"),
                rows => print!("{}", render_rows(rows)),
            }
            println!("{footer}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// "Showing rows a–b of N" (the page token tells where the page starts only to the
/// server, so later pages say how many rows they hold).
fn showing(page_token: &str, count: usize, total: u64) -> String {
    if count == 0 {
        return format!("Showing 0 rows of {total}");
    }
    if page_token.is_empty() {
        format!("Showing rows 1–{count} of {total}")
    } else {
        format!("Showing {count} more rows of {total}")
    }
}

async fn count(conn: &Connection, output: OutputFormat, name: &str) -> anyhow::Result<ExitCode> {
    let (schema, table) = format::split_table(name);
    let response = conn
        .call(
            conn.query()
                .count_rows(conn.request(pb::CountRowsRequest { schema, table })),
        )
        .await?;
    match output {
        OutputFormat::Json => print_json(&json!({ "count": response.count })),
        OutputFormat::Table => println!("{}", response.count),
    }
    Ok(ExitCode::SUCCESS)
}

async fn subscribe(
    conn: &Connection,
    output: OutputFormat,
    name: &str,
    replay_existing: bool,
) -> anyhow::Result<ExitCode> {
    let (schema, table) = format::split_table(name);
    let mut stream = conn
        .query()
        .subscribe(conn.stream_request(pb::SubscribeRequest {
            schema,
            table,
            replay_existing,
        }))
        .await
        .map_err(|s| conn.status_error(&s))?
        .into_inner();
    eprintln!(
        "subscribed to {name} at {} (Ctrl-C to stop)",
        conn.address()
    );
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    loop {
        let message = tokio::select! {
            _ = &mut ctrl_c => return Ok(ExitCode::SUCCESS),
            message = stream.next() => message,
        };
        let Some(message) = message else {
            anyhow::bail!("the server closed the subscription");
        };
        let message = message.map_err(|s| conn.status_error(&s))?;
        match output {
            OutputFormat::Json => print_json_line(&subscribe_json(&message)),
            OutputFormat::Table => {
                if let Some(line) = subscribe_line(&message) {
                    println!("{line}");
                }
            }
        }
    }
}

fn subscribe_json(message: &pb::SubscribeResponse) -> Json {
    use pb::subscribe_response::Event;
    match &message.event {
        Some(Event::Change(c)) => json!({
            "type": "change",
            "action": format::action(c.action),
            "position": c.position,
            "timestamp": format::timestamp_json(c.timestamp.as_ref()),
            "existing": c.existing,
            "old": format::opt_row_json(c.old_values.as_ref()),
            "new": format::opt_row_json(c.new_values.as_ref()),
        }),
        Some(Event::ReplayComplete(r)) => {
            json!({"type": "replay_complete", "rows_sent": r.rows_sent})
        }
        Some(Event::EventsDropped(d)) => json!({"type": "events_dropped", "count": d.count}),
        None => json!({"type": "unknown"}),
    }
}

/// One line per subscription message.
pub(crate) fn subscribe_line(message: &pb::SubscribeResponse) -> Option<String> {
    use pb::subscribe_response::Event;
    Some(match message.event.as_ref()? {
        Event::Change(c) => {
            let row = c.new_values.as_ref().or(c.old_values.as_ref());
            let existing = if c.existing { " (existing)" } else { "" };
            format!(
                "[{}] {}{existing} {}",
                format::clock(c.timestamp.as_ref()),
                format::action(c.action),
                row.map(format::row_inline).unwrap_or_default()
            )
            .trim_end()
            .to_string()
        }
        Event::ReplayComplete(r) => {
            format!("-- {} existing rows sent; live changes follow", r.rows_sent)
        }
        Event::EventsDropped(d) => {
            format!("-- {} changes dropped (this client was too slow)", d.count)
        }
    })
}

#[cfg(test)]
mod tests {
    use laredo_core::Value;

    use super::*;

    fn row(id: i64, name: &str) -> pb::Row {
        pb::Row {
            columns: vec!["id".into(), "name".into()],
            values: vec![
                pb::Value::from(&Value::Int64(id)),
                pb::Value::from(&Value::text(name)),
            ],
        }
    }

    #[test]
    fn values_are_typed_by_their_column() {
        assert_eq!(parse_value("42", Some("int8")), Value::Int64(42));
        assert_eq!(parse_value("42", Some("text")), Value::text("42"));
        assert_eq!(parse_value("42", None), Value::Int64(42));
        assert_eq!(parse_value("ann", None), Value::text("ann"));
        assert_eq!(parse_value("t", Some("bool")), Value::Bool(true));
        assert_eq!(parse_value("1.50", Some("numeric")), Value::numeric("1.50"));
        assert_eq!(
            parse_value("00112233-4455-6677-8899-aabbccddeeff", Some("uuid")),
            Value::Uuid([
                0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd,
                0xee, 0xff
            ])
        );
        assert_eq!(
            parse_value("not-a-uuid", Some("uuid")),
            Value::text("not-a-uuid")
        );
    }

    #[test]
    fn one_row_prints_as_lines_and_several_as_a_table() {
        assert_eq!(render_row(&row(1, "ann")), "id:   1\nname: ann\n");
        assert_eq!(
            render_rows(&[row(1, "ann"), row(20, "bob")]),
            "ID  NAME\n1   ann\n20  bob\n"
        );
    }

    #[test]
    fn the_listing_footer_counts_rows() {
        assert_eq!(showing("", 3, 10), "Showing rows 1–3 of 10");
        assert_eq!(showing("tok", 3, 10), "Showing 3 more rows of 10");
        assert_eq!(showing("", 0, 0), "Showing 0 rows of 0");
    }

    #[test]
    fn subscription_messages_print_one_line_each() {
        let change = pb::SubscribeResponse {
            event: Some(pb::subscribe_response::Event::Change(pb::RowChange {
                action: pb::ChangeAction::Insert as i32,
                timestamp: Some(prost_types::Timestamp {
                    seconds: 3600 + 120 + 3,
                    nanos: 0,
                }),
                new_values: Some(row(5, "eve")),
                ..Default::default()
            })),
        };
        assert_eq!(
            subscribe_line(&change).unwrap(),
            "[01:02:03] INSERT id=5 name=eve"
        );
    }
}
