//! The local snapshot file: JSON `{version, last_seq, snapshot_id, last_source_position,
//! server_id, columns, rows}`, written to a temporary file and renamed over the old one.

use std::path::Path;

use laredo_core::{ColumnDefinition, Row};
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct SnapshotFile {
    pub(crate) version: u32,
    pub(crate) last_seq: u64,
    pub(crate) snapshot_id: String,
    pub(crate) last_source_position: String,
    pub(crate) server_id: String,
    pub(crate) columns: Vec<ColumnDefinition>,
    pub(crate) rows: Vec<Row>,
}

/// The saved replica; `Ok(None)` when there is no file.
pub(crate) fn load(path: &Path) -> Result<Option<SnapshotFile>, String> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.to_string()),
    };
    let file: SnapshotFile = serde_json::from_slice(&bytes).map_err(|e| e.to_string())?;
    if file.version != 1 {
        return Err(format!("unknown version {}", file.version));
    }
    Ok(Some(file))
}

pub(crate) fn save(path: &Path, file: &SnapshotFile) -> Result<(), String> {
    let fail = |e: std::io::Error| format!("{}: {e}", path.display());
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(fail)?;
    }
    let tmp = path.with_extension("tmp");
    let bytes = serde_json::to_vec(file).map_err(|e| e.to_string())?;
    {
        use std::io::Write;
        let mut out = std::fs::File::create(&tmp).map_err(fail)?;
        out.write_all(&bytes).map_err(fail)?;
        out.sync_all().map_err(fail)?;
    }
    std::fs::rename(&tmp, path).map_err(fail)
}
