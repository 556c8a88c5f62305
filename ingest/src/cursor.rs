//! The durable cursor: the Jetstream `time_us` of the newest event whose row is already in a
//! Parquet file that was fsynced and renamed into place. The flusher writes it only after that,
//! and only forward; a live source resumes from it (Jetstream replays, duplicates are removed
//! by uri). Stored as `_ingest/cursor.json` in the lake, written atomically.

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

fn path(lake: &Path) -> PathBuf {
    lake::layout::ingest_dir(lake).join("cursor.json")
}

/// The saved cursor, or `None` when nothing was ever flushed.
pub fn load(lake: &Path) -> anyhow::Result<Option<Cursor>> {
    let path = path(lake);
    match fs::read(&path) {
        Ok(bytes) => {
            Ok(Some(serde_json::from_slice(&bytes).with_context(|| format!("corrupt cursor file {}", path.display()))?))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("failed to read cursor file {}", path.display())),
    }
}

/// Moves the cursor forward to `time_us` (never back) and makes it durable.
pub fn advance(lake: &Path, time_us: i64) -> anyhow::Result<Cursor> {
    if let Some(current) = load(lake)?
        && current.time_us >= time_us
    {
        return Ok(current);
    }
    let cursor = Cursor { time_us };
    let path = path(lake);
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
        assert_eq!(load(lake.path()).unwrap(), None);
        assert_eq!(advance(lake.path(), 10).unwrap().time_us, 10);
        assert_eq!(advance(lake.path(), 5).unwrap().time_us, 10);
        assert_eq!(load(lake.path()).unwrap(), Some(Cursor { time_us: 10 }));
        assert_eq!(advance(lake.path(), 11).unwrap().time_us, 11);
    }
}
