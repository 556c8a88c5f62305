//! `post_key_ranges`: for each row group of the snapshot's `posts` data files, the range of
//! its `created_at`, `indexed_at` and `rkey`, and its rows, from the files' statistics. A
//! window of time gives the range of its posts' record keys from it
//! (`sql::Builder::window_keys`) without reading the posts: the likes of a window's posts are
//! looked for in that range. A page of the newest (oldest) posts is looked for first among
//! the newest (oldest) row groups that hold enough rows (`Engine::stats_page_window`).
//!
//! Kept with the views, a file's row groups read once: a refresh adds those of new files and
//! takes out those of files gone (or replaced under their name).

use std::collections::HashMap;
use std::path::PathBuf;

use duckdb::Connection;

use super::undone::paths;
use crate::error::Result;

/// Created with the engine. Times are microseconds since the epoch; `NULL` where a row group
/// has no statistics.
pub(super) const CREATE_TABLE: &str = "
CREATE TABLE post_key_ranges (file VARCHAR, created_at_lo BIGINT, created_at_hi BIGINT,
  indexed_at_lo BIGINT, indexed_at_hi BIGINT, rkey_lo VARCHAR, rkey_hi VARCHAR, n_rows BIGINT);";

/// The files (with their inodes) whose row groups `post_key_ranges` holds.
#[derive(Debug, Default)]
pub(super) struct KeyRanges {
    loaded: HashMap<PathBuf, u64>,
}

impl KeyRanges {
    /// Brings the table to `files`, the snapshot's `posts` data files.
    pub fn sync(&mut self, connection: &Connection, files: &[PathBuf]) -> Result<()> {
        let mut now = super::rollups::with_inodes(files);
        let mut gone = self.loaded.iter().filter(|(path, inode)| now.get(*path) != Some(inode)).peekable();
        if gone.peek().is_some() {
            let list = paths(gone.map(|(path, _)| path));
            connection.execute_batch(&format!("DELETE FROM post_key_ranges WHERE file IN ({list})"))?;
        }
        let new: Vec<PathBuf> = now
            .iter()
            .filter(|(path, inode)| self.loaded.get(*path) != Some(inode))
            .map(|(path, _)| path.clone())
            .collect();
        if !new.is_empty() {
            let list = paths(&new);
            let bound = |column: &str, end: &str| {
                // Evaluated on every row (a filter of the aggregate comes after): a statistic
                // that is no time is none.
                format!(
                    "max(CASE WHEN path_in_schema = '{column}' \
                     THEN epoch_us(TRY_CAST(stats_{end}_value AS TIMESTAMP)) END)"
                )
            };
            let read = connection.execute_batch(&format!(
                "INSERT INTO post_key_ranges SELECT file_name, {}, {}, {}, {}, \
                 max(stats_min_value) FILTER (WHERE path_in_schema = 'rkey'), \
                 max(stats_max_value) FILTER (WHERE path_in_schema = 'rkey'), \
                 max(row_group_num_rows) \
                 FROM parquet_metadata([{list}]) \
                 WHERE path_in_schema IN ('created_at', 'indexed_at', 'rkey') GROUP BY file_name, row_group_id",
                bound("created_at", "min"),
                bound("created_at", "max"),
                bound("indexed_at", "min"),
                bound("indexed_at", "max"),
            ));
            if let Err(error) = read {
                // A file gone since the listing (a compaction swapped its partition): the
                // statements of this snapshot retry on the next (`once_more_if_a_file_went`).
                // Until then these files' posts may have any key and any time.
                tracing::warn!(error = %error, "the statistics of new posts files could not be read; they narrow nothing");
                let unknown =
                    new.iter().map(|path| format!("({}, NULL, NULL, NULL, NULL, NULL, NULL, NULL)", paths([path])));
                connection.execute_batch(&format!(
                    "INSERT INTO post_key_ranges VALUES {}",
                    unknown.collect::<Vec<_>>().join(", ")
                ))?;
                // Read again at the next refresh.
                for path in new {
                    now.insert(path, u64::MAX);
                }
            }
        }
        self.loaded = now;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A listed file whose statistics cannot be read (gone since the listing) widens every
    /// window to every key instead of failing the refresh, and is read again at the next.
    #[test]
    fn a_file_gone_since_the_listing_narrows_nothing_and_is_read_again() {
        let connection = Connection::open_in_memory().unwrap();
        connection.execute_batch(CREATE_TABLE).unwrap();
        let mut ranges = KeyRanges::default();
        let gone = PathBuf::from("/nonexistent/posts/date=2026-01-01/a.parquet");
        ranges.sync(&connection, std::slice::from_ref(&gone)).unwrap();
        let rows: Vec<(String, Option<String>, Option<i64>)> = connection
            .prepare("SELECT file, rkey_lo, created_at_hi FROM post_key_ranges")
            .unwrap()
            .query_map([], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))
            .unwrap()
            .collect::<duckdb::Result<_>>()
            .unwrap();
        assert_eq!(rows, [(gone.to_string_lossy().into_owned(), None, None)]);
        assert_eq!(ranges.loaded.get(&gone), Some(&u64::MAX));
        // Listed no more: its row goes.
        ranges.sync(&connection, &[]).unwrap();
        let left: i64 = connection.query_row("SELECT count(*) FROM post_key_ranges", [], |row| row.get(0)).unwrap();
        assert_eq!(left, 0);
    }

    /// A written file's row group gives its times, keys and rows, exactly.
    #[test]
    fn a_row_group_gives_the_range_of_its_times_and_keys() {
        let dir = tempfile::tempdir().unwrap();
        let day = 20_000 * 86_400_000_000_i64;
        let posts: Vec<crate::model::Post> = [(3, "3b"), (1, "3c"), (2, "3a")]
            .into_iter()
            .map(|(second, rkey)| crate::model::Post {
                uri: format!("at://did:plc:a/app.bsky.feed.post/{rkey}"),
                did: "did:plc:a".into(),
                rkey: rkey.into(),
                created_at_us: day + second * 1_000_000,
                indexed_at_us: day + second * 1_000_000 + 7,
                ..crate::model::Post::default()
            })
            .collect();
        let written = crate::writer::write_posts(dir.path(), "a.parquet", posts).unwrap();
        let connection = Connection::open_in_memory().unwrap();
        connection.execute_batch(CREATE_TABLE).unwrap();
        let files: Vec<PathBuf> = written.into_iter().map(|file| file.path).collect();
        KeyRanges::default().sync(&connection, &files).unwrap();
        let row: (i64, i64, i64, i64, String, String, i64) = connection
            .query_row("SELECT * EXCLUDE (file) FROM post_key_ranges", [], |row| {
                Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?, row.get(4)?, row.get(5)?, row.get(6)?))
            })
            .unwrap();
        let expected =
            (day + 1_000_000, day + 3_000_000, day + 1_000_007, day + 3_000_007, "3a".into(), "3c".into(), 3);
        assert_eq!(row, expected);
    }
}
