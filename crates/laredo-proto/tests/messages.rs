//! Whole messages through encode and decode, as a server and a client exchange them.

use laredo_core::{ChangeAction, Row, Value, row};
use laredo_proto::RowDecoder;
use laredo_proto::laredo::replication::v1::{
    JournalEntries, JournalEntry, SyncResponse, sync_response,
};
use laredo_proto::laredo::v1 as wire;
use prost::Message;

#[test]
fn a_journal_batch_round_trips_into_laredo_rows() {
    let new = row! {"id" => 1, "name" => "ann", "tags" => Value::array([Value::text("a")])};
    let old = row! {"id" => 1};
    let sent = SyncResponse {
        message: Some(sync_response::Message::JournalEntries(JournalEntries {
            entries: vec![JournalEntry {
                sequence: 42,
                source_position: "0/16B3748".into(),
                action: wire::ChangeAction::from(ChangeAction::Update).into(),
                new_values: Some(wire::Row::from(&new)),
                old_values: Some(wire::Row::from(&old)),
                ..JournalEntry::default()
            }],
        })),
    };
    let received = SyncResponse::decode(sent.encode_to_vec().as_slice()).expect("decodes");
    assert_eq!(received, sent);

    let Some(sync_response::Message::JournalEntries(batch)) = received.message else {
        panic!("not a journal batch: {received:?}");
    };
    let entry = &batch.entries[0];
    let mut decoder = RowDecoder::new();
    let decode = |row: &Option<wire::Row>, decoder: &mut RowDecoder| -> Row {
        decoder.decode(row.as_ref().expect("set")).expect("valid")
    };
    assert_eq!(entry.sequence, 42);
    assert_eq!(
        ChangeAction::try_from(entry.action()),
        Ok(ChangeAction::Update)
    );
    assert_eq!(decode(&entry.new_values, &mut decoder), new);
    assert_eq!(decode(&entry.old_values, &mut decoder), old);
}

#[test]
fn an_unknown_action_number_reads_as_unspecified() {
    let entry = JournalEntry {
        action: 99,
        ..JournalEntry::default()
    };
    assert_eq!(entry.action(), wire::ChangeAction::Unspecified);
    assert!(ChangeAction::try_from(entry.action()).is_err());
}
