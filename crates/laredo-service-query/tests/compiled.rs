//! A CompiledTarget served through a registered serializer (its `serialized` rows), and
//! as its own rows without one.

use laredo_core::{Engine, PipelineOptions, Row, TableIdentifier, row, table};
use laredo_proto::laredo::v1 as pb;
use laredo_proto::laredo::v1::subscribe_response::Event;
use laredo_service_query::{Error, QueryService};
use laredo_source_test::TestSource;
use laredo_target_memory::{CompiledRows, CompiledTarget};
use tonic::Code;

use crate::fixture::{
    Client, WAIT, applied, count_rows, get_row, int, list_rows, lookup, lookup_all, row_of,
    started, subscribe, text,
};

/// The application's type: the service cannot know it.
#[derive(Debug)]
struct Account {
    id: i64,
    owner: String,
    cents: i64,
}

fn accounts() -> TableIdentifier {
    table("public", "accounts")
}

/// A row of the source table; only active accounts become objects.
fn account_row(id: i64, owner: &str, cents: i64, active: bool) -> Row {
    row! {"id" => id, "owner" => owner, "cents" => cents, "active" => active}
}

/// What the serializer sends for an account.
fn sent(id: i64, owner: &str, cents: i64) -> Row {
    row! {"id" => id, "owner" => owner, "balance" => format!("{}.{:02}", cents / 100, cents % 100)}
}

fn serialize(account: &Account) -> Row {
    sent(account.id, &account.owner, account.cents)
}

/// The engine's compiled target of `accounts`, read as serialized rows.
fn serialized(engine: &Engine) -> std::sync::Arc<CompiledRows<Account>> {
    engine
        .get_target::<CompiledTarget<Account>>("main", &accounts())
        .unwrap()
        .serialized(serialize)
}

async fn setup() -> (Engine, std::sync::Arc<TestSource>, QueryService) {
    let source = TestSource::new();
    source.set_schema(
        accounts(),
        TestSource::columns(&[
            ("id", "int8", true),
            ("owner", "text", false),
            ("cents", "int8", false),
            ("active", "bool", false),
        ]),
    );
    source.add_row(accounts(), account_row(1, "ann", 1050, true));
    source.add_row(accounts(), account_row(2, "bob", 99, false));
    source.add_row(accounts(), account_row(3, "cy", 700, true));
    let target = CompiledTarget::builder(|row: &Row| -> Result<Account, String> {
        Ok(Account {
            id: row.get_i64("id").ok_or("no id")?,
            owner: row.get_string("owner").ok_or("no owner")?,
            cents: row.get_i64("cents").ok_or("no cents")?,
        })
    })
    .filter(|row| row.get_bool("active") == Some(true))
    .build();
    let engine = Engine::builder()
        .source("main", source.clone())
        .pipeline("main", accounts(), target, PipelineOptions::default())
        .build()
        .unwrap();
    started(&engine).await;
    let service = QueryService::new(engine.clone())
        .with_rows("main", &accounts(), serialized(&engine))
        .unwrap();
    (engine, source, service)
}

async fn client() -> (std::sync::Arc<TestSource>, Client) {
    let (_engine, source, service) = setup().await;
    (source, crate::fixture::serve(service).await)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compiled_objects_are_read_as_serialized_rows() {
    let (_source, mut client) = client().await;
    let found = client
        .get_row(get_row(&accounts(), vec![int(1)]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(row_of(&found.row.unwrap()), sent(1, "ann", 1050));

    let filtered_out = client
        .lookup(lookup(&accounts(), "", vec![int(2)]))
        .await
        .unwrap()
        .into_inner();
    assert!(!filtered_out.found, "inactive accounts are not objects");

    let by_key = client
        .lookup_all(lookup_all(&accounts(), "(primary)", vec![int(3)]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        by_key.rows.iter().map(row_of).collect::<Vec<_>>(),
        vec![sent(3, "cy", 700)]
    );

    let count = client
        .count_rows(count_rows(&accounts()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(count.count, 2);

    let first = client
        .list_rows(list_rows(&accounts(), 1, ""))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        first.rows.iter().map(row_of).collect::<Vec<_>>(),
        vec![sent(1, "ann", 1050)]
    );
    let second = client
        .list_rows(list_rows(&accounts(), 1, &first.next_page_token))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        second.rows.iter().map(row_of).collect::<Vec<_>>(),
        vec![sent(3, "cy", 700)]
    );
    assert_eq!(second.next_page_token, "");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compiled_target_has_only_its_key_index() {
    let (_source, mut client) = client().await;
    let status = client
        .lookup_all(lookup_all(&accounts(), "by_owner", vec![text("ann")]))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    assert_eq!(
        status.message(),
        r#"index "by_owner" not found on public.accounts; known indexes: (primary)"#
    );
    let status = client
        .get_row(get_row(&accounts(), vec![int(1), int(2)]))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(
        status.message(),
        "primary key of public.accounts: expected 1 value (id), got 2"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compiled_changes_stream_as_serialized_rows() {
    let (source, mut client) = client().await;
    let mut stream = client
        .subscribe(subscribe(&accounts(), true))
        .await
        .unwrap()
        .into_inner();
    let mut next = async || {
        tokio::time::timeout(WAIT, stream.message())
            .await
            .unwrap()
            .unwrap()
            .unwrap()
            .event
            .unwrap()
    };
    let mut existing = Vec::new();
    for _ in 0..2 {
        let Event::Change(change) = next().await else {
            panic!("expected a current row")
        };
        assert!(change.existing);
        existing.push(row_of(change.new_values.as_ref().unwrap()));
    }
    existing.sort_by_key(|r| r.get_i64("id"));
    assert_eq!(existing, vec![sent(1, "ann", 1050), sent(3, "cy", 700)]);
    assert_eq!(
        next().await,
        Event::ReplayComplete(pb::ReplayComplete { rows_sent: 2 })
    );

    // An update, and an account leaving the filter (a delete of its object).
    source
        .emit_update(
            accounts(),
            account_row(1, "ann", 2000, true),
            Some(row! {"id" => 1}),
        )
        .await;
    let last = source
        .emit_update(
            accounts(),
            account_row(3, "cy", 700, false),
            Some(row! {"id" => 3}),
        )
        .await;
    applied(&source, last).await;

    let Event::Change(update) = next().await else {
        panic!("expected a change")
    };
    assert_eq!(update.action(), pb::ChangeAction::Update);
    assert_eq!(
        row_of(update.old_values.as_ref().unwrap()),
        sent(1, "ann", 1050)
    );
    assert_eq!(
        row_of(update.new_values.as_ref().unwrap()),
        sent(1, "ann", 2000)
    );
    let Event::Change(removed) = next().await else {
        panic!("expected a change")
    };
    assert_eq!(removed.action(), pb::ChangeAction::Delete);
    assert_eq!(
        row_of(removed.old_values.as_ref().unwrap()),
        sent(3, "cy", 700)
    );
    assert_eq!(removed.new_values, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registering_rows_for_a_table_the_engine_does_not_serve_there_fails() {
    let (engine, _source, _service) = setup().await;
    // The object type is the application's to name: the engine finds no compiled target
    // of another type, so there is nothing to serialize.
    assert!(
        engine
            .get_target::<CompiledTarget<String>>("main", &accounts())
            .is_none()
    );
    let wrong_source = QueryService::new(engine.clone())
        .with_rows("other", &accounts(), serialized(&engine))
        .unwrap_err();
    assert_eq!(
        wrong_source,
        Error::UnknownTable {
            source_id: "other".into(),
            table: accounts(),
        }
    );
    assert_eq!(
        wrong_source.to_string(),
        "no pipeline of public.accounts on source \"other\""
    );
    let wrong_table = QueryService::new(engine.clone())
        .with_rows("main", &table("public", "nope"), serialized(&engine))
        .unwrap_err();
    assert_eq!(
        wrong_table.to_string(),
        "no pipeline of public.nope on source \"main\""
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unregistered_compiled_target_serves_the_rows_its_objects_came_from() {
    let (engine, _source, _service) = setup().await;
    let mut client = crate::fixture::serve(QueryService::new(engine)).await;
    let found = client
        .get_row(get_row(&accounts(), vec![int(1)]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        row_of(&found.row.unwrap()),
        account_row(1, "ann", 1050, true)
    );
    let page = client
        .list_rows(list_rows(&accounts(), 10, ""))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        page.rows.iter().map(row_of).collect::<Vec<_>>(),
        vec![
            account_row(1, "ann", 1050, true),
            account_row(3, "cy", 700, true)
        ],
        "inactive accounts are not objects"
    );
    let status = client
        .subscribe(subscribe(&accounts(), false))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unimplemented);
    assert_eq!(
        status.message(),
        "the target of public.accounts does not report its changes"
    );
}
