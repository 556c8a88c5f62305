//! The catalog: which data files exist and the lake generation.
//!
//! The generation is a counter bumped after every change to the set of data files (a flush,
//! later a compaction). Caches key on it, so an answer is never older than the files it was
//! computed from. It lives in `_catalog/state.json`, written atomically (temp, fsync, rename).

use std::fs;
use std::path::Path;

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::layout;

/// A lake generation: bumped by every published change to the data files.
pub type Generation = u64;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CatalogState {
    pub generation: Generation,
    /// When the last flush was published, UTC microseconds.
    pub last_flush_at_us: Option<i64>,
    /// The newest event time (firehose `time_us`) any flush has written: buffered rows up to it
    /// are in the files, so the hot tier (rows still in the buffer) shows only later ones.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flushed_through_us: Option<i64>,
}

/// Reads the catalog state; a lake that was never written to is at generation 0.
pub fn read_state(lake: &Path) -> Result<CatalogState> {
    let path = layout::catalog_dir(lake).join("state.json");
    match fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| Error::Catalog { path, detail: e.to_string() }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(CatalogState::default()),
        Err(e) => Err(Error::Io { action: "read", path, source: e }),
    }
}

/// The catalog state, read again only when its file changed (a publish renames a new file into
/// place, so its inode, size or time differ): a `stat` per call instead of a read and a parse,
/// for the API's per-request cache keys.
#[derive(Debug)]
pub struct StateCache {
    path: std::path::PathBuf,
    last: std::sync::Mutex<Option<(FileStamp, CatalogState)>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileStamp {
    inode: u64,
    len: u64,
    modified: Option<std::time::SystemTime>,
}

impl StateCache {
    pub fn new(lake: &Path) -> StateCache {
        StateCache { path: layout::catalog_dir(lake).join("state.json"), last: std::sync::Mutex::new(None) }
    }

    pub fn read(&self) -> Result<CatalogState> {
        use std::os::unix::fs::MetadataExt;
        let stamp = match fs::metadata(&self.path) {
            Ok(meta) => FileStamp { inode: meta.ino(), len: meta.len(), modified: meta.modified().ok() },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(CatalogState::default()),
            Err(e) => return Err(Error::Io { action: "stat", path: self.path.clone(), source: e }),
        };
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((seen, state)) = *last
            && seen == stamp
        {
            return Ok(state);
        }
        let lake = self.path.parent().and_then(Path::parent).unwrap_or(Path::new("."));
        let state = read_state(lake)?;
        *last = Some((stamp, state));
        Ok(state)
    }
}

/// The lock between a lake's readers and its publishes (`_catalog/publish.lock`, an OS file
/// lock, released on drop or death). A writer holds it exclusively from the moment its first
/// file shows under a final name until its generation is published, so a reader that lists the
/// files and reads the catalog state under it shared sees files and state that belong together:
/// never a flush's files without the `flushed_through_us` that keeps the hot tier off them.
/// Writers hold it for renames and one small write; readers for a directory walk.
pub struct PublishLock {
    _file: Option<fs::File>,
}

impl PublishLock {
    /// Waits until no publish is under way, and keeps publishes out until dropped.
    pub fn exclusive(lake: &Path) -> Result<PublishLock> {
        Ok(PublishLock { _file: Some(lock_exclusively(lake, "publish.lock")?) })
    }

    /// Waits until no publish is under way, and keeps new ones out until dropped. A lake this
    /// process cannot write to holds no lock: nobody with the same rights publishes there.
    pub fn shared(lake: &Path) -> Result<PublishLock> {
        let path = match Self::path(lake) {
            Ok(path) => path,
            Err(Error::Io { source, .. }) if read_only(&source) => return Ok(PublishLock { _file: None }),
            Err(e) => return Err(e),
        };
        let file = match fs::File::options().create(true).truncate(false).write(true).open(&path) {
            Ok(file) => file,
            Err(e) if read_only(&e) => match fs::File::open(&path) {
                Ok(file) => file,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(PublishLock { _file: None }),
                Err(e) => return Err(Error::Io { action: "open lock file", path, source: e }),
            },
            Err(e) => return Err(Error::Io { action: "open lock file", path, source: e }),
        };
        file.lock_shared().map_err(Error::io("lock", &path))?;
        Ok(PublishLock { _file: Some(file) })
    }

    fn path(lake: &Path) -> Result<std::path::PathBuf> {
        let dir = layout::catalog_dir(lake);
        fs::create_dir_all(&dir).map_err(Error::io("create catalog directory", &dir))?;
        Ok(dir.join("publish.lock"))
    }
}

/// Opens (creating it) the lock file `name` in the lake's catalog directory and waits for an
/// exclusive lock on it, held until the file is closed.
pub(crate) fn lock_exclusively(lake: &Path, name: &str) -> Result<fs::File> {
    let dir = layout::catalog_dir(lake);
    fs::create_dir_all(&dir).map_err(Error::io("create catalog directory", &dir))?;
    let path = dir.join(name);
    let file = fs::File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(Error::io("open lock file", &path))?;
    file.lock().map_err(Error::io("lock", &path))?;
    Ok(file)
}

fn read_only(error: &std::io::Error) -> bool {
    matches!(error.kind(), std::io::ErrorKind::PermissionDenied | std::io::ErrorKind::ReadOnlyFilesystem)
}

/// Publishes a change to the data files: bumps the generation durably and returns the new one.
/// Callers serialise publishes (one flusher per lake) and hold the [`PublishLock`] from the
/// moment their files show.
pub fn publish(lake: &Path, now_us: i64) -> Result<Generation> {
    publish_flush(lake, now_us, None)
}

/// [`publish`] for a flush that wrote the buffered events up to `flushed_through_us`.
pub fn publish_flush(lake: &Path, now_us: i64, flushed_through_us: Option<i64>) -> Result<Generation> {
    let mut state = read_state(lake)?;
    state.generation += 1;
    state.last_flush_at_us = Some(now_us);
    state.flushed_through_us = state.flushed_through_us.max(flushed_through_us);
    let dir = layout::catalog_dir(lake);
    fs::create_dir_all(&dir).map_err(Error::io("create catalog directory", &dir))?;
    let path = dir.join("state.json");
    let body = serde_json::to_vec_pretty(&state).expect("catalog state serialises");
    crate::writer::write_bytes_atomically(&path, &body)?;
    Ok(state.generation)
}

/// The complete data files of a partition directory, by name, sorted; none if it is absent.
pub fn data_file_names(dir: &Path) -> Result<Vec<String>> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::Io { action: "list", path: dir.to_path_buf(), source: e }),
    };
    let mut names = Vec::new();
    for entry in entries {
        let name = entry.map_err(Error::io("list", dir))?.file_name().to_string_lossy().into_owned();
        if layout::is_data_file(&name) {
            names.push(name);
        }
    }
    names.sort();
    Ok(names)
}

/// Runs `work` on each day partition of `table` from `since` to `until` (its day, directory and
/// data file names), a partition at a time under the flush lock, so that no flush or compaction
/// changes a partition being worked on, and publishes a generation after each partition `work`
/// says it changed. `each` hears of every partition's result when it is done. The frame of the
/// commands that keep the files' companions (text indexes, rollups) up to date.
pub fn each_partition<R>(
    lake: &Path,
    table: &str,
    since: Option<NaiveDate>,
    until: Option<NaiveDate>,
    mut work: impl FnMut(NaiveDate, &Path, &[String]) -> Result<(R, bool)>,
    mut each: impl FnMut(&R),
) -> Result<Vec<R>> {
    let days = table_files(lake, table)?.partitions;
    let mut reports = Vec::new();
    for (date, _) in days {
        if since.is_some_and(|s| date < s) || until.is_some_and(|u| date > u) {
            continue;
        }
        let _lock = crate::unique::FlushLock::acquire(lake)?;
        let dir = layout::partition_dir(lake, table, date);
        let names = data_file_names(&dir)?;
        let (report, changed) = work(date, &dir, &names)?;
        if changed {
            let _publishing = PublishLock::exclusive(lake)?;
            publish(lake, chrono::Utc::now().timestamp_micros())?;
        }
        each(&report);
        reports.push(report);
    }
    Ok(reports)
}

/// Removes the entries of `dir` (files or directories) that `companion_of` names the
/// companion of a data file not among `names`; says how many.
pub fn remove_orphans(dir: &Path, names: &[String], companion_of: impl Fn(&str) -> Option<&str>) -> Result<usize> {
    let mut removed = 0;
    for entry in fs::read_dir(dir).map_err(Error::io("list", dir))? {
        let entry = entry.map_err(Error::io("list", dir))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if companion_of(&name).is_some_and(|data| !names.iter().any(|n| n == data)) {
            let path = entry.path();
            let removal = if path.is_dir() { fs::remove_dir_all(&path) } else { fs::remove_file(&path) };
            removal.map_err(Error::io("remove", &path))?;
            removed += 1;
        }
    }
    Ok(removed)
}

/// What the data files of one table add up to, from a directory walk (no file is opened).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TableFiles {
    pub files: u64,
    pub bytes: u64,
    /// Each day partition with data files, with their bytes, oldest first.
    pub partitions: Vec<(NaiveDate, u64)>,
    /// Every data file, by partition then name.
    pub paths: Vec<std::path::PathBuf>,
}

/// Lists the data files of `table`: complete `*.parquet` files in `date=` partitions.
pub fn table_files(lake: &Path, table: &str) -> Result<TableFiles> {
    let dir = layout::table_dir(lake, table);
    let mut out = TableFiles::default();
    let entries = match fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(Error::Io { action: "list", path: dir, source: e }),
    };
    for entry in entries {
        let entry = entry.map_err(Error::io("list", &dir))?;
        let Some(date) = entry.file_name().to_str().and_then(layout::parse_partition_name) else {
            continue;
        };
        let partition = entry.path();
        let (mut n_files, mut bytes) = (0, 0);
        for file in fs::read_dir(&partition).map_err(Error::io("list", &partition))? {
            let file = file.map_err(Error::io("list", &partition))?;
            let name = file.file_name();
            if !layout::is_data_file(&name.to_string_lossy()) {
                continue;
            }
            n_files += 1;
            bytes += file.metadata().map_err(Error::io("stat", file.path()))?.len();
            out.paths.push(file.path());
        }
        if n_files > 0 {
            out.files += n_files;
            out.bytes += bytes;
            out.partitions.push((date, bytes));
        }
    }
    out.partitions.sort();
    out.paths.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Post, post_uri};

    #[test]
    fn a_new_lake_is_at_generation_zero_and_each_publish_bumps_it() {
        let lake = tempfile::tempdir().unwrap();
        assert_eq!(read_state(lake.path()).unwrap(), CatalogState::default());
        assert_eq!(publish(lake.path(), 10).unwrap(), 1);
        assert_eq!(publish(lake.path(), 20).unwrap(), 2);
        assert_eq!(
            read_state(lake.path()).unwrap(),
            CatalogState { generation: 2, last_flush_at_us: Some(20), flushed_through_us: None }
        );
    }

    #[test]
    fn the_state_cache_sees_every_publish() {
        let lake = tempfile::tempdir().unwrap();
        let cache = StateCache::new(lake.path());
        assert_eq!(cache.read().unwrap().generation, 0);
        for generation in 1..=5 {
            publish_flush(lake.path(), generation as i64, Some(generation as i64 * 100)).unwrap();
            let state = cache.read().unwrap();
            assert_eq!((state.generation, state.flushed_through_us), (generation, Some(generation as i64 * 100)));
            assert_eq!(cache.read().unwrap(), state, "unchanged until the next publish");
        }
    }

    #[test]
    fn table_files_counts_complete_files_per_partition() {
        let lake = tempfile::tempdir().unwrap();
        let day = 86_400_000_000_i64;
        let posts = vec![
            Post { uri: post_uri("d", "a"), did: "d".into(), rkey: "a".into(), created_at_us: day, ..Post::default() },
            Post {
                uri: post_uri("d", "b"),
                did: "d".into(),
                rkey: "b".into(),
                created_at_us: 3 * day,
                ..Post::default()
            },
        ];
        let written = crate::writer::write_posts(lake.path(), "f.parquet", posts).unwrap();
        fs::write(written[0].path.with_file_name(".half.parquet.tmp"), b"x").unwrap();
        let files = table_files(lake.path(), layout::POSTS_TABLE).unwrap();
        assert_eq!(files.files, 2);
        assert_eq!(files.partitions.len(), 2);
        assert_eq!(files.bytes, written.iter().map(|w| w.bytes).sum::<u64>());
        assert_eq!(files.partitions.iter().map(|(_, bytes)| bytes).sum::<u64>(), files.bytes);
        assert_eq!(table_files(lake.path(), "nothing").unwrap(), TableFiles::default());
    }
}
