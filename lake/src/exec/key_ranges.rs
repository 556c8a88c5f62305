//! `post_key_ranges`: for each row group of the snapshot's `posts` data files, the range of
//! its `created_at`, `indexed_at` and `rkey`, from the files' statistics. A window of time
//! gives the range of its posts' record keys from it (`sql::Builder::window_keys`) without
//! reading the posts: the likes of a window's posts are looked for in that range.
//!
//! Kept with the views, a file's row groups read once: a refresh adds those of new files and
//! takes out those of files gone (or replaced under their name).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use duckdb::Connection;

use crate::error::Result;

/// Created with the engine. Times are microseconds since the epoch; `NULL` where a row group
/// has no statistics.
pub(super) const CREATE_TABLE: &str = "
CREATE TABLE post_key_ranges (file VARCHAR, created_at_lo BIGINT, created_at_hi BIGINT,
  indexed_at_lo BIGINT, indexed_at_hi BIGINT, rkey_lo VARCHAR, rkey_hi VARCHAR);";

/// The files (with their inodes) whose row groups `post_key_ranges` holds.
#[derive(Debug, Default)]
pub(super) struct KeyRanges {
    loaded: HashMap<PathBuf, u64>,
}

/// A SQL list of the paths' string literals.
fn literals<'a>(paths: impl Iterator<Item = &'a Path>) -> String {
    paths.map(|path| format!("'{}'", path.to_string_lossy().replace('\'', "''"))).collect::<Vec<_>>().join(", ")
}

impl KeyRanges {
    /// Brings the table to `files`, the snapshot's `posts` data files.
    pub fn sync(&mut self, connection: &Connection, files: &[PathBuf]) -> Result<()> {
        let now: HashMap<PathBuf, u64> =
            files.iter().map(|path| (path.clone(), super::rollups::inode(path).unwrap_or_default())).collect();
        let mut gone = self.loaded.iter().filter(|(path, inode)| now.get(*path) != Some(inode)).peekable();
        if gone.peek().is_some() {
            let list = literals(gone.map(|(path, _)| path.as_path()));
            connection.execute_batch(&format!("DELETE FROM post_key_ranges WHERE file IN ({list})"))?;
        }
        let mut new = now.iter().filter(|(path, inode)| self.loaded.get(*path) != Some(inode)).peekable();
        if new.peek().is_some() {
            let list = literals(new.map(|(path, _)| path.as_path()));
            let bound = |column: &str, end: &str| {
                // Evaluated on every row (a filter of the aggregate comes after): a statistic
                // that is no time is none.
                format!(
                    "max(CASE WHEN path_in_schema = '{column}' \
                     THEN epoch_us(TRY_CAST(stats_{end}_value AS TIMESTAMP)) END)"
                )
            };
            connection.execute_batch(&format!(
                "INSERT INTO post_key_ranges SELECT file_name, {}, {}, {}, {}, \
                 max(stats_min_value) FILTER (WHERE path_in_schema = 'rkey'), \
                 max(stats_max_value) FILTER (WHERE path_in_schema = 'rkey') \
                 FROM parquet_metadata([{list}]) \
                 WHERE path_in_schema IN ('created_at', 'indexed_at', 'rkey') GROUP BY file_name, row_group_id",
                bound("created_at", "min"),
                bound("created_at", "max"),
                bound("indexed_at", "min"),
                bound("indexed_at", "max"),
            ))?;
        }
        self.loaded = now;
        Ok(())
    }
}
