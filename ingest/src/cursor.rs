//! The durable cursor: the Jetstream `time_us` of the newest event whose row is already in a
//! Parquet file that was fsynced and renamed into place. The flusher writes it only after that,
//! and only forward; a live source resumes from it (Jetstream replays, duplicates are removed
//! by uri). One cursor per kind of source (`_ingest/cursor-jetstream.json`, …), so a replay
//! file or the synthetic firehose never moves the live source's position; written atomically.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cursor {
    pub time_us: i64,
}

fn path(lake: &Path, source_kind: &str) -> PathBuf {
    lake::layout::ingest_dir(lake).join(format!("cursor-{source_kind}.json"))
}

/// The saved cursor, or `None` when nothing was ever flushed.
pub fn load(lake: &Path, source_kind: &str) -> anyhow::Result<Option<Cursor>> {
    let path = path(lake, source_kind);
    match fs::read(&path) {
        Ok(bytes) => {
            Ok(Some(serde_json::from_slice(&bytes).with_context(|| format!("corrupt cursor file {}", path.display()))?))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("failed to read cursor file {}", path.display())),
    }
}

/// How far past the wall clock an event time may be and still move the cursor.
const MAX_FUTURE_US: i64 = 60 * 1_000_000;

/// Moves the cursor forward to `time_us` (never back, never past the wall clock by more than a
/// minute: one wild `time_us` must not make a resume skip real events) and makes it durable.
pub fn advance(lake: &Path, source_kind: &str, time_us: i64) -> anyhow::Result<Cursor> {
    let time_us = time_us.min(chrono::Utc::now().timestamp_micros().saturating_add(MAX_FUTURE_US));
    if let Some(current) = load(lake, source_kind)?
        && current.time_us >= time_us
    {
        return Ok(current);
    }
    let cursor = Cursor { time_us };
    let path = path(lake, source_kind);
    let dir = path.parent().expect("cursor path has a parent");
    fs::create_dir_all(dir).with_context(|| format!("failed to create {}", dir.display()))?;
    let tmp = lake::layout::temp_path_for(&path);
    let mut file = File::create(&tmp).with_context(|| format!("failed to create {}", tmp.display()))?;
    file.write_all(&serde_json::to_vec(&cursor)?).with_context(|| format!("failed to write {}", tmp.display()))?;
    file.sync_all().with_context(|| format!("failed to fsync {}", tmp.display()))?;
    fs::rename(&tmp, &path).with_context(|| format!("failed to rename cursor into {}", path.display()))?;
    lake::writer::sync_dir(dir)?;
    Ok(cursor)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cursor_starts_empty_and_only_moves_forward() {
        let lake = tempfile::tempdir().unwrap();
        assert_eq!(load(lake.path(), "jetstream").unwrap(), None);
        assert_eq!(advance(lake.path(), "jetstream", 10).unwrap().time_us, 10);
        assert_eq!(advance(lake.path(), "jetstream", 5).unwrap().time_us, 10);
        assert_eq!(load(lake.path(), "jetstream").unwrap(), Some(Cursor { time_us: 10 }));
        assert_eq!(advance(lake.path(), "jetstream", 11).unwrap().time_us, 11);
        assert_eq!(load(lake.path(), "file").unwrap(), None, "each kind of source has its own cursor");
    }

    #[test]
    fn a_wild_event_time_never_pushes_the_cursor_into_the_future() {
        let lake = tempfile::tempdir().unwrap();
        let now = chrono::Utc::now().timestamp_micros();
        let cursor = advance(lake.path(), "file", i64::MAX).unwrap();
        assert!(cursor.time_us <= now + MAX_FUTURE_US + 1_000_000, "{cursor:?}");
    }
}
