//! The reflection descriptor set holds the three services, their methods and the
//! well-known types they import.

use laredo_proto::FILE_DESCRIPTOR_SET;
use prost::Message;
use prost_types::FileDescriptorSet;

fn descriptor_set() -> FileDescriptorSet {
    FileDescriptorSet::decode(FILE_DESCRIPTOR_SET).expect("valid descriptor set")
}

/// `(fully qualified service name, method names)` of every service in the set.
fn services() -> Vec<(String, Vec<String>)> {
    descriptor_set()
        .file
        .iter()
        .flat_map(|file| {
            file.service.iter().map(move |service| {
                (
                    format!("{}.{}", file.package(), service.name()),
                    service
                        .method
                        .iter()
                        .map(|m| m.name().to_string())
                        .collect(),
                )
            })
        })
        .collect()
}

fn methods_of(name: &str) -> Vec<String> {
    services()
        .into_iter()
        .find(|(service, _)| service == name)
        .unwrap_or_else(|| panic!("service {name} missing"))
        .1
}

#[test]
fn holds_exactly_the_three_services() {
    let mut names: Vec<String> = services().into_iter().map(|(name, _)| name).collect();
    names.sort();
    assert_eq!(
        names,
        [
            "laredo.replication.v1.LaredoReplicationService",
            "laredo.v1.LaredoOAMService",
            "laredo.v1.LaredoQueryService",
        ]
    );
}

#[test]
fn service_names_match_the_generated_servers() {
    use laredo_proto::laredo::{replication, v1};
    let in_set: Vec<String> = services().into_iter().map(|(name, _)| name).collect();
    for name in [
        v1::laredo_oam_service_server::SERVICE_NAME,
        v1::laredo_query_service_server::SERVICE_NAME,
        replication::v1::laredo_replication_service_server::SERVICE_NAME,
    ] {
        assert!(in_set.iter().any(|s| s == name), "{name}");
    }
}

#[test]
fn oam_service_has_every_rpc() {
    assert_eq!(
        methods_of("laredo.v1.LaredoOAMService"),
        [
            "GetStatus",
            "GetTableStatus",
            "GetPipelineStatus",
            "ListPipelines",
            "WatchStatus",
            "CheckReady",
            "GetSourceInfo",
            "ListTables",
            "GetTableSchema",
            "ReloadTable",
            "ReloadAll",
            "PauseSync",
            "ResumeSync",
            "ResetSource",
            "DrainReplication",
            "CreateSnapshot",
            "ListSnapshots",
            "InspectSnapshot",
            "RestoreSnapshot",
            "DeleteSnapshot",
            "PruneSnapshots",
            "ListDeadLetters",
            "ReplayDeadLetters",
            "PurgeDeadLetters",
            "StartReplay",
            "GetReplayStatus",
            "StopReplay",
        ]
    );
}

#[test]
fn query_service_has_every_rpc() {
    assert_eq!(
        methods_of("laredo.v1.LaredoQueryService"),
        [
            "Lookup",
            "LookupAll",
            "GetRow",
            "ListRows",
            "CountRows",
            "Subscribe"
        ]
    );
}

#[test]
fn replication_service_has_every_rpc() {
    assert_eq!(
        methods_of("laredo.replication.v1.LaredoReplicationService"),
        [
            "Sync",
            "ListSnapshots",
            "FetchSnapshot",
            "GetReplicationStatus",
            "ListJournalEntries",
        ]
    );
}

#[test]
fn streaming_rpcs_are_server_streams() {
    let set = descriptor_set();
    let mut streaming: Vec<String> = set
        .file
        .iter()
        .flat_map(|file| &file.service)
        .flat_map(|service| &service.method)
        .filter(|method| method.server_streaming() || method.client_streaming())
        .map(|method| {
            assert!(!method.client_streaming(), "{}", method.name());
            method.name().to_string()
        })
        .collect();
    streaming.sort();
    assert_eq!(
        streaming,
        ["FetchSnapshot", "Subscribe", "Sync", "WatchStatus"]
    );
}

#[test]
fn imports_are_included_for_reflection() {
    let files: Vec<String> = descriptor_set()
        .file
        .iter()
        .map(|f| f.name().to_string())
        .collect();
    for name in [
        "google/protobuf/duration.proto",
        "google/protobuf/struct.proto",
        "google/protobuf/timestamp.proto",
        "laredo/v1/types.proto",
        "laredo/v1/oam.proto",
        "laredo/v1/query.proto",
        "laredo/replication/v1/replication.proto",
    ] {
        assert!(files.iter().any(|f| f == name), "{name} missing: {files:?}");
    }
}
