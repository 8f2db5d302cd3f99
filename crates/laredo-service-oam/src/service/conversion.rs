//! Engine values as protobuf messages: pipeline and source states, ordering
//! guarantees, times and durations, and JSON objects as `google.protobuf.Struct`.
//!
//! The state enums are mapped by hand, variant by variant, so that a new engine state
//! fails to compile here rather than reaching a client as an unknown number.

use std::time::SystemTime;

use laredo_core::{OrderingGuarantee, PipelineState, SourceState};
use laredo_proto::laredo::v1 as pb;

/// A JSON object as a protobuf `Struct`.
pub(super) fn json_struct(map: serde_json::Map<String, serde_json::Value>) -> prost_types::Struct {
    prost_types::Struct {
        fields: map.into_iter().map(|(k, v)| (k, json_value(v))).collect(),
    }
}

fn json_value(value: serde_json::Value) -> prost_types::Value {
    use prost_types::value::Kind;
    use serde_json::Value as J;
    let kind = match value {
        J::Null => Kind::NullValue(0),
        J::Bool(b) => Kind::BoolValue(b),
        J::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or(f64::NAN)),
        J::String(s) => Kind::StringValue(s),
        J::Array(items) => Kind::ListValue(prost_types::ListValue {
            values: items.into_iter().map(json_value).collect(),
        }),
        J::Object(map) => Kind::StructValue(json_struct(map)),
    };
    prost_types::Value { kind: Some(kind) }
}

pub(super) fn pipeline_state(state: PipelineState) -> pb::PipelineState {
    match state {
        PipelineState::Initializing => pb::PipelineState::Initializing,
        PipelineState::Baselining => pb::PipelineState::Baselining,
        PipelineState::Streaming => pb::PipelineState::Streaming,
        PipelineState::Paused => pb::PipelineState::Paused,
        PipelineState::Error => pb::PipelineState::Error,
        PipelineState::Stopped => pb::PipelineState::Stopped,
    }
}

pub(super) fn source_state(state: SourceState) -> pb::SourceState {
    match state {
        SourceState::Connecting => pb::SourceState::Connecting,
        SourceState::Connected => pb::SourceState::Connected,
        SourceState::Streaming => pb::SourceState::Streaming,
        SourceState::Reconnecting => pb::SourceState::Reconnecting,
        SourceState::Paused => pb::SourceState::Paused,
        SourceState::Error => pb::SourceState::Error,
        SourceState::Closed => pb::SourceState::Closed,
    }
}

pub(super) fn ordering(ordering: OrderingGuarantee) -> pb::OrderingGuarantee {
    match ordering {
        OrderingGuarantee::TotalOrder => pb::OrderingGuarantee::TotalOrder,
        OrderingGuarantee::PerTableOrder => pb::OrderingGuarantee::PerTableOrder,
        OrderingGuarantee::PerPartitionOrder => pb::OrderingGuarantee::PerPartitionOrder,
        OrderingGuarantee::BestEffort => pb::OrderingGuarantee::BestEffort,
    }
}

pub(super) fn timestamp(at: SystemTime) -> prost_types::Timestamp {
    prost_types::Timestamp::from(at)
}

pub(super) fn micros_timestamp(micros: i64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: micros.div_euclid(1_000_000),
        nanos: i32::try_from(micros.rem_euclid(1_000_000) * 1000).unwrap_or(0),
    }
}

pub(super) fn duration(d: std::time::Duration) -> Option<prost_types::Duration> {
    prost_types::Duration::try_from(d).ok()
}
