//! The engine (being written).
#![allow(missing_docs, unreachable_pub, dead_code)]
pub struct ConfigError;
pub struct ConfigErrors;
pub struct Engine;
pub struct EngineBuilder;
pub struct EngineError;
pub struct PipelineInfo;
#[derive(Default)]
pub struct PipelineOptions;
pub struct SourceRunInfo;
pub type TtlFn = ();
