//! A [`SnapshotStore`] on the local file system.
//!
//! Layout under the base directory:
//!
//! ```text
//! <base>/<snapshot_id>/metadata.json          SnapshotMetadata (ids, positions, tables, user_meta)
//! <base>/<snapshot_id>/<schema>.<table>.jsonl one file per table, through the serializer
//! ```
//!
//! A second target of the same table in one snapshot gets `<schema>.<table>.<n>.jsonl`
//! (`n` from 1, in metadata order), so two targets never share a file.
//!
//! Saves are atomic: everything is written and synced into `<base>/.tmp-<id>/`, which is
//! then renamed to `<base>/<id>/`; a failed save removes the temporary directory, and
//! listings skip every name starting with a dot. Deletes rename the directory to
//! `.del-<id>` before removing it, so a crash mid-delete never leaves a half snapshot
//! listed. What a crash leaves behind (`.tmp-*`, `.del-*`) is removed by the store's
//! first operation in a process: a store directory belongs to one process at a time. Snapshot ids must be plain file names (no `/`, no leading `.`), which keeps an
//! id received over the network inside the base directory.
//!
//! ```
//! use std::collections::BTreeMap;
//! use laredo_core::{row, table, SnapshotEntry, SnapshotFilter, SnapshotMetadata, SnapshotStore, TableSnapshotInfo};
//! use laredo_snapshot_local::LocalSnapshotStore;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let dir = tempfile::tempdir().expect("temp dir");
//! let store = LocalSnapshotStore::new(dir.path());
//! let info = TableSnapshotInfo {
//!     table: table("public", "users"),
//!     row_count: 1,
//!     columns: Vec::new(),
//!     target_type: "indexed-memory".to_string(),
//!     indexes: Vec::new(),
//! };
//! let metadata = SnapshotMetadata {
//!     snapshot_id: "snap-1".to_string(),
//!     created_at_micros: 1,
//!     source_positions: BTreeMap::from([("main".to_string(), "0/16B3748".to_string())]),
//!     tables: vec![info.clone()],
//!     format: "jsonl".to_string(),
//!     user_meta: BTreeMap::new(),
//! };
//! let rows = vec![SnapshotEntry { row: row! {"id" => 1i64} }];
//! let saved = store.save(&metadata, &vec![(info, rows)]).await.expect("saved");
//! assert!(saved.size_bytes > 0);
//! assert_eq!(store.list(&SnapshotFilter::default()).await.expect("listed").len(), 1);
//! let (back, tables) = store.load("snap-1").await.expect("loaded");
//! assert_eq!(back.source_positions["main"], "0/16B3748");
//! assert_eq!(tables[0].1.len(), 1);
//! # }
//! ```

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use laredo_core::{
    ErrorChain, SnapshotDescriptor, SnapshotError, SnapshotFilter, SnapshotMetadata,
    SnapshotSerializer, SnapshotStore, TableEntries, TableIdentifier, TableSnapshotInfo,
};
use laredo_snapshot_jsonl::JsonlSerializer;

/// The metadata file inside a snapshot directory.
pub const METADATA_FILE: &str = "metadata.json";

const TMP_PREFIX: &str = ".tmp-";
const DELETE_PREFIX: &str = ".del-";

/// Snapshots as directories under a base directory (see the crate docs).
#[derive(Clone)]
pub struct LocalSnapshotStore {
    inner: Arc<Inner>,
}

struct Inner {
    base: PathBuf,
    serializer: Arc<dyn SnapshotSerializer>,
    /// Set once the leftovers of an earlier process were removed.
    cleaned: std::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for LocalSnapshotStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalSnapshotStore")
            .field("base", &self.inner.base)
            .field("format", &self.inner.serializer.format_id())
            .finish()
    }
}

impl LocalSnapshotStore {
    /// A store under `base` (created on the first save) writing `jsonl` files.
    pub fn new(base: impl Into<PathBuf>) -> Self {
        Self::with_serializer(base, Arc::new(JsonlSerializer))
    }

    /// A store under `base` writing table files with `serializer`.
    pub fn with_serializer(
        base: impl Into<PathBuf>,
        serializer: Arc<dyn SnapshotSerializer>,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                base: base.into(),
                serializer,
                cleaned: std::sync::atomic::AtomicBool::new(false),
            }),
        }
    }

    /// The base directory.
    pub fn base_dir(&self) -> &Path {
        &self.inner.base
    }

    /// Where a snapshot lives (whether or not it exists).
    ///
    /// # Errors
    /// When `snapshot_id` is not a plain file name.
    pub fn snapshot_dir(&self, snapshot_id: &str) -> Result<PathBuf, SnapshotError> {
        check_id(snapshot_id)?;
        Ok(self.inner.base.join(snapshot_id))
    }

    async fn run<T: Send + 'static>(
        &self,
        op: impl FnOnce(&Inner) -> Result<T, SnapshotError> + Send + 'static,
    ) -> Result<T, SnapshotError> {
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || {
            if !inner
                .cleaned
                .swap(true, std::sync::atomic::Ordering::SeqCst)
            {
                inner.remove_leftovers();
            }
            op(&inner)
        })
        .await
        .map_err(|e| SnapshotError::with_source("snapshot file task failed", e))?
    }
}

#[async_trait]
impl SnapshotStore for LocalSnapshotStore {
    async fn save(
        &self,
        metadata: &SnapshotMetadata,
        tables: &TableEntries,
    ) -> Result<SnapshotDescriptor, SnapshotError> {
        check_id(&metadata.snapshot_id)?;
        let metadata = metadata.clone();
        // The rows are shared with the caller; a copy keeps the blocking task 'static.
        let tables = tables.clone();
        self.run(move |inner| inner.save(&metadata, &tables)).await
    }

    async fn load(
        &self,
        snapshot_id: &str,
    ) -> Result<(SnapshotMetadata, TableEntries), SnapshotError> {
        check_id(snapshot_id)?;
        let id = snapshot_id.to_string();
        self.run(move |inner| inner.load(&id)).await
    }

    async fn read_metadata(&self, snapshot_id: &str) -> Result<SnapshotMetadata, SnapshotError> {
        check_id(snapshot_id)?;
        let id = snapshot_id.to_string();
        self.run(move |inner| inner.describe(&id).map(|(m, _)| m))
            .await
    }

    async fn describe(&self, snapshot_id: &str) -> Result<SnapshotDescriptor, SnapshotError> {
        check_id(snapshot_id)?;
        let id = snapshot_id.to_string();
        self.run(move |inner| inner.describe(&id).map(|(_, d)| d))
            .await
    }

    async fn list(
        &self,
        filter: &SnapshotFilter,
    ) -> Result<Vec<SnapshotDescriptor>, SnapshotError> {
        let filter = filter.clone();
        self.run(move |inner| inner.list(filter.table.as_ref()))
            .await
    }

    async fn delete(&self, snapshot_id: &str) -> Result<(), SnapshotError> {
        check_id(snapshot_id)?;
        let id = snapshot_id.to_string();
        self.run(move |inner| inner.delete(&id)).await
    }

    async fn prune(
        &self,
        keep: usize,
        table: Option<&TableIdentifier>,
    ) -> Result<usize, SnapshotError> {
        let table = table.cloned();
        self.run(move |inner| {
            let listed = inner.list(table.as_ref())?;
            let mut deleted = 0;
            for descriptor in listed.iter().skip(keep) {
                inner.delete(&descriptor.snapshot_id)?;
                deleted += 1;
            }
            Ok(deleted)
        })
        .await
    }
}

impl Inner {
    fn save(
        &self,
        metadata: &SnapshotMetadata,
        tables: &TableEntries,
    ) -> Result<SnapshotDescriptor, SnapshotError> {
        let id = &metadata.snapshot_id;
        let target = self.base.join(id);
        if target.exists() {
            return Err(SnapshotError::new(format!("snapshot {id} already exists")));
        }
        fs::create_dir_all(&self.base).map_err(|e| io_error("creating", &self.base, e))?;
        let tmp = self.base.join(format!("{TMP_PREFIX}{id}"));
        if tmp.exists() {
            fs::remove_dir_all(&tmp).map_err(|e| io_error("clearing", &tmp, e))?;
        }
        let written = self.write_into(&tmp, metadata, tables).and_then(|size| {
            fs::rename(&tmp, &target).map_err(|e| io_error("publishing", &target, e))?;
            sync_dir(&self.base);
            Ok(size)
        });
        match written {
            Ok(size_bytes) => Ok(SnapshotDescriptor {
                snapshot_id: id.clone(),
                created_at_micros: metadata.created_at_micros,
                format: metadata.format.clone(),
                tables: metadata.tables.clone(),
                size_bytes,
                source_positions: metadata.source_positions.clone(),
            }),
            Err(error) => {
                if let Err(e) = fs::remove_dir_all(&tmp)
                    && e.kind() != io::ErrorKind::NotFound
                {
                    tracing::warn!(path = %tmp.display(), error = %e, "cannot remove a failed snapshot");
                }
                Err(error)
            }
        }
    }

    /// Writes the snapshot's files into `dir`; returns their total size.
    fn write_into(
        &self,
        dir: &Path,
        metadata: &SnapshotMetadata,
        tables: &TableEntries,
    ) -> Result<u64, SnapshotError> {
        fs::create_dir(dir).map_err(|e| io_error("creating", dir, e))?;
        let mut metadata = metadata.clone();
        metadata.format = self.serializer.format_id().to_string();
        metadata.tables = tables.iter().map(|(info, _)| info.clone()).collect();
        let names = file_names(&metadata.tables);
        let mut size = 0;
        for ((info, entries), name) in tables.iter().zip(&names) {
            let path = dir.join(name);
            size += write_file(&path, |w| self.serializer.write(info, entries, w))?;
        }
        let path = dir.join(METADATA_FILE);
        size += write_file(&path, |w| {
            serde_json::to_writer_pretty(&mut *w, &metadata)
                .map_err(|e| SnapshotError::with_source("encoding the metadata", e))
        })?;
        sync_dir(dir);
        Ok(size)
    }

    fn load(&self, id: &str) -> Result<(SnapshotMetadata, TableEntries), SnapshotError> {
        let (metadata, _) = self.describe(id)?;
        if metadata.format != self.serializer.format_id() {
            return Err(SnapshotError::new(format!(
                "snapshot {id} is in format {:?}, this store reads {:?}",
                metadata.format,
                self.serializer.format_id()
            )));
        }
        let dir = self.base.join(id);
        let mut tables = Vec::with_capacity(metadata.tables.len());
        for (info, name) in metadata.tables.iter().zip(file_names(&metadata.tables)) {
            let path = dir.join(&name);
            let mut file = File::open(&path).map_err(|e| io_error("opening", &path, e))?;
            let (_, entries) = self
                .serializer
                .read(&mut io::BufReader::new(&mut file))
                .map_err(|e| {
                    SnapshotError::with_source(format!("reading {}", path.display()), e)
                })?;
            tables.push((info.clone(), entries));
        }
        Ok((metadata, tables))
    }

    fn describe(&self, id: &str) -> Result<(SnapshotMetadata, SnapshotDescriptor), SnapshotError> {
        let dir = self.base.join(id);
        let path = dir.join(METADATA_FILE);
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(SnapshotError::not_found(format_args!("snapshot {id}")));
            }
            Err(e) => return Err(io_error("reading", &path, e)),
        };
        let metadata: SnapshotMetadata = serde_json::from_slice(&bytes).map_err(|e| {
            SnapshotError::with_source(format!("{} is not snapshot metadata", path.display()), e)
        })?;
        let mut size_bytes = 0;
        for entry in fs::read_dir(&dir).map_err(|e| io_error("listing", &dir, e))? {
            let entry = entry.map_err(|e| io_error("listing", &dir, e))?;
            size_bytes += entry.metadata().map(|m| m.len()).unwrap_or(0);
        }
        let descriptor = SnapshotDescriptor {
            snapshot_id: metadata.snapshot_id.clone(),
            created_at_micros: metadata.created_at_micros,
            format: metadata.format.clone(),
            tables: metadata.tables.clone(),
            size_bytes,
            source_positions: metadata.source_positions.clone(),
        };
        Ok((metadata, descriptor))
    }

    /// Removes the temporary and half-deleted directories a crashed process left
    /// (`.tmp-*`, `.del-*`); returns how many. Failures are logged, not returned: they
    /// never hide a snapshot, since listings skip those names anyway.
    fn remove_leftovers(&self) -> usize {
        let Ok(entries) = fs::read_dir(&self.base) else {
            return 0;
        };
        let mut removed = 0;
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if !(name.starts_with(TMP_PREFIX) || name.starts_with(DELETE_PREFIX)) {
                continue;
            }
            let path = entry.path();
            match fs::remove_dir_all(&path) {
                Ok(()) => {
                    removed += 1;
                    tracing::info!(path = %path.display(), "removed a snapshot left over by an interrupted save or delete");
                }
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "cannot remove a snapshot leftover");
                }
            }
        }
        removed
    }

    fn list(
        &self,
        table: Option<&TableIdentifier>,
    ) -> Result<Vec<SnapshotDescriptor>, SnapshotError> {
        let entries = match fs::read_dir(&self.base) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_error("listing", &self.base, e)),
        };
        let mut listed = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| io_error("listing", &self.base, e))?;
            let Some(name) = entry.file_name().to_str().map(str::to_string) else {
                continue;
            };
            if name.starts_with('.') || !entry.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            match self.describe(&name) {
                Ok((_, descriptor)) => {
                    if table.is_none_or(|t| descriptor.tables.iter().any(|i| i.table == *t)) {
                        listed.push(descriptor);
                    }
                }
                Err(error) => {
                    tracing::warn!(snapshot = %name, error = %ErrorChain(&error), "skipping an unreadable snapshot");
                }
            }
        }
        listed.sort_by(|a, b| {
            b.created_at_micros
                .cmp(&a.created_at_micros)
                .then_with(|| b.snapshot_id.cmp(&a.snapshot_id))
        });
        Ok(listed)
    }

    fn delete(&self, id: &str) -> Result<(), SnapshotError> {
        let dir = self.base.join(id);
        if !dir.join(METADATA_FILE).exists() {
            return Err(SnapshotError::not_found(format_args!("snapshot {id}")));
        }
        let doomed = self.base.join(format!("{DELETE_PREFIX}{id}"));
        if doomed.exists() {
            fs::remove_dir_all(&doomed).map_err(|e| io_error("removing", &doomed, e))?;
        }
        fs::rename(&dir, &doomed).map_err(|e| io_error("removing", &dir, e))?;
        sync_dir(&self.base);
        fs::remove_dir_all(&doomed).map_err(|e| io_error("removing", &doomed, e))
    }
}

/// The table files of a snapshot, in metadata order (see the crate docs).
fn file_names(tables: &[TableSnapshotInfo]) -> Vec<String> {
    let mut seen: HashMap<&TableIdentifier, usize> = HashMap::new();
    tables
        .iter()
        .map(|info| {
            let n = seen.entry(&info.table).or_default();
            let stem = format!(
                "{}.{}",
                file_safe(info.table.schema()),
                file_safe(info.table.table())
            );
            let name = if *n == 0 {
                format!("{stem}.jsonl")
            } else {
                format!("{stem}.{n}.jsonl")
            };
            *n += 1;
            name
        })
        .collect()
}

/// A name part with every character outside `[A-Za-z0-9_-]` percent-encoded, so that
/// the dots between parts stay unambiguous and nothing escapes the directory.
fn file_safe(part: &str) -> String {
    let mut out = String::with_capacity(part.len());
    for byte in part.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'_' | b'-') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

fn check_id(id: &str) -> Result<(), SnapshotError> {
    let plain = !id.is_empty()
        && !id.starts_with('.')
        && !id.contains(['/', '\\', '\0'])
        && id.len() <= 200;
    if plain {
        Ok(())
    } else {
        Err(SnapshotError::new(format!(
            "{id:?} is not a valid snapshot id (a plain file name is required)"
        )))
    }
}

/// Writes a file through `write`, syncs it, and returns its size.
fn write_file(
    path: &Path,
    write: impl FnOnce(&mut dyn Write) -> Result<(), SnapshotError>,
) -> Result<u64, SnapshotError> {
    let file = File::create(path).map_err(|e| io_error("creating", path, e))?;
    let mut writer = BufWriter::with_capacity(256 * 1024, file);
    write(&mut writer)?;
    let file = writer
        .into_inner()
        .map_err(|e| io_error("writing", path, e.into_error()))?;
    file.sync_all().map_err(|e| io_error("syncing", path, e))?;
    Ok(file.metadata().map(|m| m.len()).unwrap_or(0))
}

fn io_error(action: &str, path: &Path, error: io::Error) -> SnapshotError {
    SnapshotError::with_source(format!("{action} {}", path.display()), error)
}

/// Makes renames in `dir` durable where the platform allows; best effort.
fn sync_dir(dir: &Path) {
    if let Err(error) = File::open(dir).and_then(|d| d.sync_all()) {
        tracing::debug!(path = %dir.display(), %error, "directory sync failed");
    }
}
