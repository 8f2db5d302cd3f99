//! The local-file dead-letter store: one JSONL file per pipeline.
//!
//! `<base>/<file name>.jsonl` holds one serialised [`DeadLetterEntry`] per line, oldest
//! first. Appends add a line; `remove` rewrites the file through a temporary file and a
//! rename, so a crash leaves either the old or the new file, never a mix. A line that
//! does not parse (a torn write, a hand edit) is skipped with a warning and kept as it
//! is by rewrites.
//!
//! The store assumes it owns its directory: one store per directory, no other writers.
//! Every operation runs on Tokio's blocking pool under one lock, which serialises the
//! writes and lets the store keep each pipeline's next id and entry count in memory
//! after the first scan of its file.

use std::collections::{HashMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use laredo_core::{DeadLetterEntry, DeadLetterError, DeadLetterStore};
use parking_lot::Mutex;

/// The file extension of pipeline files.
const FILE_EXTENSION: &str = "jsonl";
/// The longest sanitised pipeline id kept in a file name; the hash suffix keeps longer
/// ids apart, and the whole name stays far below the usual 255-byte limit.
const MAX_STEM_LEN: usize = 120;
/// Permissions of the files the store creates: entries hold row data.
#[cfg(unix)]
const FILE_MODE: u32 = 0o600;

/// Keeps dead letters in local files, `<base_dir>/<pipeline>.jsonl`, one JSON entry per
/// line. The directory is created on the first write; files are created with mode
/// `0600` on Unix.
///
/// A pipeline id such as `main:public.users:indexed-memory` becomes the file name
/// `main_public.users_indexed-memory-<hash>.jsonl`: every character outside
/// `[A-Za-z0-9._-]` is replaced by `_`, and a stable hash of the original id is appended
/// so that two ids never share a file ([`LocalDeadLetterStore::path_for`]).
///
/// Ids increase per pipeline. After a restart they continue from the largest id in the
/// file, so an id whose entry was removed or purged may be given again.
///
/// The methods need a Tokio runtime: file I/O runs on its blocking pool. A dropped
/// future does not cancel an operation that has started.
///
/// Clones share one lock and one set of counters; open one store per directory.
#[derive(Debug, Clone)]
pub struct LocalDeadLetterStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    base_dir: PathBuf,
    /// Per pipeline id, once its file has been scanned. The lock is also held across
    /// every file operation, which serialises them.
    pipelines: Mutex<HashMap<String, PipelineState>>,
}

#[derive(Debug, Clone, Copy)]
struct PipelineState {
    /// The last id handed out (0 = none).
    last_id: u64,
    /// Readable entries in the file.
    count: u64,
}

impl LocalDeadLetterStore {
    /// A store under `base_dir`. Nothing is touched until the first operation.
    pub fn new(base_dir: impl Into<PathBuf>) -> Self {
        Self {
            inner: Arc::new(Inner {
                base_dir: base_dir.into(),
                pipelines: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// The directory holding the files.
    pub fn base_dir(&self) -> &Path {
        &self.inner.base_dir
    }

    /// The file holding the entries of `pipeline_id`.
    pub fn path_for(&self, pipeline_id: &str) -> PathBuf {
        self.inner.path_for(pipeline_id)
    }

    /// Runs `op` on the blocking pool with the store's state locked.
    async fn run<T: Send + 'static>(
        &self,
        op: impl FnOnce(&Inner, &mut HashMap<String, PipelineState>) -> Result<T, DeadLetterError>
        + Send
        + 'static,
    ) -> Result<T, DeadLetterError> {
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || {
            let mut pipelines = inner.pipelines.lock();
            op(&inner, &mut pipelines)
        })
        .await
        .map_err(|e| DeadLetterError::with_source("dead letter file task failed", e))?
    }
}

impl Inner {
    fn path_for(&self, pipeline_id: &str) -> PathBuf {
        self.base_dir.join(file_name(pipeline_id))
    }

    /// The state of `pipeline_id`, scanning its file the first time.
    fn state<'a>(
        &self,
        pipelines: &'a mut HashMap<String, PipelineState>,
        pipeline_id: &str,
    ) -> Result<&'a mut PipelineState, DeadLetterError> {
        if !pipelines.contains_key(pipeline_id) {
            let path = self.path_for(pipeline_id);
            let mut state = PipelineState {
                last_id: 0,
                count: 0,
            };
            scan(&path, |line_no, line| {
                if let Some(entry) = parse(&path, line_no, line) {
                    state.last_id = state.last_id.max(entry.id);
                    state.count += 1;
                }
                ControlFlow::Continue(())
            })
            .map_err(|e| io_error("read", &path, e))?;
            pipelines.insert(pipeline_id.to_string(), state);
        }
        pipelines
            .get_mut(pipeline_id)
            .ok_or_else(|| DeadLetterError::new(format!("no state for pipeline {pipeline_id:?}")))
    }
}

#[async_trait]
impl DeadLetterStore for LocalDeadLetterStore {
    async fn write(&self, mut entry: DeadLetterEntry) -> Result<u64, DeadLetterError> {
        self.run(move |inner, pipelines| {
            let path = inner.path_for(&entry.pipeline_id);
            let state = inner.state(pipelines, &entry.pipeline_id)?;
            entry.id = state.last_id + 1;
            let line = serde_json::to_vec(&entry).map_err(|e| {
                DeadLetterError::with_source(
                    format!("failed to serialise dead letter for {}", path.display()),
                    e,
                )
            })?;
            append(&inner.base_dir, &path, &line).map_err(|e| io_error("append to", &path, e))?;
            state.last_id = entry.id;
            state.count += 1;
            Ok(entry.id)
        })
        .await
    }

    async fn read(
        &self,
        pipeline_id: &str,
        limit: usize,
    ) -> Result<Vec<DeadLetterEntry>, DeadLetterError> {
        let pipeline_id = pipeline_id.to_string();
        self.run(move |inner, _| {
            let path = inner.path_for(&pipeline_id);
            let mut entries = Vec::new();
            scan(&path, |line_no, line| {
                if let Some(entry) = parse(&path, line_no, line) {
                    entries.push(entry);
                }
                if limit != 0 && entries.len() >= limit {
                    ControlFlow::Break(())
                } else {
                    ControlFlow::Continue(())
                }
            })
            .map_err(|e| io_error("read", &path, e))?;
            Ok(entries)
        })
        .await
    }

    async fn remove(&self, pipeline_id: &str, ids: &[u64]) -> Result<(), DeadLetterError> {
        if ids.is_empty() {
            return Ok(());
        }
        let pipeline_id = pipeline_id.to_string();
        let ids: HashSet<u64> = ids.iter().copied().collect();
        self.run(move |inner, pipelines| {
            let path = inner.path_for(&pipeline_id);
            let mut kept: Vec<Vec<u8>> = Vec::new();
            let mut removed = 0u64;
            scan(&path, |line_no, line| {
                match parse(&path, line_no, line) {
                    Some(entry) if ids.contains(&entry.id) => removed += 1,
                    // Unreadable lines are kept as they are, for an operator to inspect.
                    _ => kept.push(line.to_vec()),
                }
                ControlFlow::Continue(())
            })
            .map_err(|e| io_error("read", &path, e))?;
            if removed == 0 {
                return Ok(());
            }
            if kept.is_empty() {
                remove_file(&path).map_err(|e| io_error("delete", &path, e))?;
            } else {
                rewrite(&inner.base_dir, &path, &kept)
                    .map_err(|e| io_error("rewrite", &path, e))?;
            }
            if let Some(state) = pipelines.get_mut(&pipeline_id) {
                state.count = state.count.saturating_sub(removed);
            }
            Ok(())
        })
        .await
    }

    async fn purge(&self, pipeline_id: &str) -> Result<(), DeadLetterError> {
        let pipeline_id = pipeline_id.to_string();
        self.run(move |inner, pipelines| {
            let path = inner.path_for(&pipeline_id);
            remove_file(&path).map_err(|e| io_error("delete", &path, e))?;
            // Ids keep increasing while the store lives.
            if let Some(state) = pipelines.get_mut(&pipeline_id) {
                state.count = 0;
            }
            Ok(())
        })
        .await
    }

    async fn count(&self, pipeline_id: &str) -> Result<u64, DeadLetterError> {
        let pipeline_id = pipeline_id.to_string();
        self.run(move |inner, pipelines| Ok(inner.state(pipelines, &pipeline_id)?.count))
            .await
    }
}

/// The file name of a pipeline: the id with every character outside `[A-Za-z0-9._-]`
/// replaced by `_` (cut to [`MAX_STEM_LEN`]), then `-` and the id's FNV-1a hash, so that
/// ids that sanitise alike still get their own file.
fn file_name(pipeline_id: &str) -> String {
    let stem: String = pipeline_id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .take(MAX_STEM_LEN)
        .collect();
    format!(
        "{stem}-{:016x}.{FILE_EXTENSION}",
        fnv1a_64(pipeline_id.as_bytes())
    )
}

/// 64-bit FNV-1a: tiny and, unlike `std`'s hasher, fixed by its specification, so file
/// names stay the same across Rust versions.
fn fnv1a_64(bytes: &[u8]) -> u64 {
    const OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    bytes.iter().fold(OFFSET_BASIS, |hash, &b| {
        (hash ^ u64::from(b)).wrapping_mul(PRIME)
    })
}

fn io_error(action: &str, path: &Path, error: io::Error) -> DeadLetterError {
    DeadLetterError::with_source(format!("failed to {action} {}", path.display()), error)
}

/// Calls `visit` with each non-blank line of `path` (without its newline) and its
/// 1-based number; a missing file has no lines.
fn scan(path: &Path, mut visit: impl FnMut(usize, &[u8]) -> ControlFlow<()>) -> io::Result<()> {
    let file = match File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    let mut reader = BufReader::new(file);
    let mut buf = Vec::new();
    let mut line_no = 0;
    loop {
        buf.clear();
        if reader.read_until(b'\n', &mut buf)? == 0 {
            return Ok(());
        }
        line_no += 1;
        let line = buf.strip_suffix(b"\n").unwrap_or(&buf);
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        if visit(line_no, line).is_break() {
            return Ok(());
        }
    }
}

/// The entry on `line`, or `None` (with a warning) when it does not parse.
fn parse(path: &Path, line_no: usize, line: &[u8]) -> Option<DeadLetterEntry> {
    match serde_json::from_slice(line) {
        Ok(entry) => Some(entry),
        Err(error) => {
            tracing::warn!(path = %path.display(), line = line_no, %error, "skipping corrupt dead letter line");
            None
        }
    }
}

fn new_file_options() -> OpenOptions {
    let mut options = OpenOptions::new();
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, FILE_MODE);
    options
}

/// Appends `line` and a newline to `path`, creating the directory and the file as
/// needed, and syncs the data: the engine moves past a change once it is parked.
fn append(dir: &Path, path: &Path, line: &[u8]) -> io::Result<()> {
    let mut options = new_file_options();
    options.read(true).append(true).create(true);
    let mut file = match options.open(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            fs::create_dir_all(dir)?;
            options.open(path)?
        }
        other => other?,
    };
    let mut out = Vec::with_capacity(line.len() + 2);
    // A torn last line (a crash mid-append) must not swallow this entry.
    if !ends_with_newline(&mut file)? {
        out.push(b'\n');
    }
    out.extend_from_slice(line);
    out.push(b'\n');
    file.write_all(&out)?;
    file.sync_data()
}

/// True when `file` is empty or its last byte is a newline.
fn ends_with_newline(file: &mut File) -> io::Result<bool> {
    if file.metadata()?.len() == 0 {
        return Ok(true);
    }
    file.seek(SeekFrom::End(-1))?;
    let mut last = [0u8; 1];
    file.read_exact(&mut last)?;
    Ok(last[0] == b'\n')
}

/// Replaces `path` with `lines` atomically: a temporary file in the same directory
/// (mode 0600), synced, then renamed over it.
fn rewrite(dir: &Path, path: &Path, lines: &[Vec<u8>]) -> io::Result<()> {
    let mut tmp = tempfile::Builder::new()
        .prefix(".dead-letter-")
        .suffix(".tmp")
        .tempfile_in(dir)?;
    {
        let mut writer = io::BufWriter::new(tmp.as_file_mut());
        for line in lines {
            writer.write_all(line)?;
            writer.write_all(b"\n")?;
        }
        writer.flush()?;
    }
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    sync_dir(dir);
    Ok(())
}

fn remove_file(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Makes a rename in `dir` durable where the platform allows it; best effort, as the
/// rename itself has already succeeded.
fn sync_dir(dir: &Path) {
    #[cfg(unix)]
    if let Err(error) = File::open(dir).and_then(|d| d.sync_all()) {
        tracing::debug!(dir = %dir.display(), %error, "failed to sync dead letter directory");
    }
    #[cfg(not(unix))]
    let _ = dir;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_keep_safe_characters_and_add_a_hash() {
        let name = file_name("main:public.users:indexed-memory");
        assert_eq!(
            name,
            format!(
                "main_public.users_indexed-memory-{:016x}.jsonl",
                fnv1a_64(b"main:public.users:indexed-memory")
            )
        );
        assert!(
            name.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        );
    }

    #[test]
    fn file_names_are_stable() {
        // FNV-1a of the empty input is its offset basis; of "a", a published test vector.
        assert_eq!(fnv1a_64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a_64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(file_name("a"), "a-af63dc4c8601ec8c.jsonl");
    }

    #[test]
    fn ids_that_sanitise_alike_get_different_files() {
        assert_ne!(file_name("a:b"), file_name("a/b"));
        assert_ne!(file_name("a:b"), file_name("a_b"));
        assert!(file_name("a:b").starts_with("a_b-"));
    }

    #[test]
    fn path_separators_and_dots_cannot_escape_the_directory() {
        for id in ["../../etc/passwd", "..", "/abs", "a\\b", "x\0y"] {
            let name = file_name(id);
            assert!(
                !name.contains('/') && !name.contains('\\') && !name.contains('\0'),
                "{name}"
            );
            assert_ne!(name, "..");
        }
    }

    #[test]
    fn long_ids_are_cut_but_stay_distinct() {
        let a = "x".repeat(500);
        let b = format!("{}y", "x".repeat(499));
        let (name_a, name_b) = (file_name(&a), file_name(&b));
        assert!(name_a.len() <= MAX_STEM_LEN + 30, "{}", name_a.len());
        assert_ne!(name_a, name_b);
    }

    #[test]
    fn non_ascii_characters_become_one_underscore_each() {
        assert!(file_name("é:ü").starts_with("___-"));
    }
}
