//! Keeps the lake free of copies: a uri is in at most one row of the `posts` files, and a like
//! or repost in at most one row of the `interactions` files. A replay (ingest restarted from the
//! durable cursor, a file ingested twice) brings back rows the lake already has; before a flush
//! writes a partition's file, [`known_keys`] finds which of its rows are already in that
//! partition's other files, and the flusher leaves them out. Queries can then count rows
//! instead of distinct keys, several times faster.
//!
//! Writers must hold the [`FlushLock`] from this check until their files are published, so two
//! flushers never both decide a post is new.

use std::borrow::Cow;
use std::collections::HashSet;
use std::fs::File;
use std::path::Path;

use chrono::NaiveDate;
use duckdb::Connection;

use crate::error::Result;
use crate::layout;
use crate::model::{Interaction, Post, TableRow};

/// A row kept free of copies: what identifies it, in Rust and as SQL over its table's columns.
/// Copies of a row share its partition timestamp (`created_at`, from the record).
pub trait Keyed: TableRow {
    /// An SQL expression over the table's columns that equals [`Keyed::key`].
    const KEY_SQL: &'static str;
    fn key(&self) -> Cow<'_, str>;
}

impl Keyed for Post {
    const KEY_SQL: &'static str = "'at://' || did || '/app.bsky.feed.post/' || rkey";
    fn key(&self) -> Cow<'_, str> {
        Cow::Borrowed(&self.uri)
    }
}

impl Keyed for Interaction {
    const KEY_SQL: &'static str = "did || ' ' || kind || ' ' || rkey";
    fn key(&self) -> Cow<'_, str> {
        Cow::Owned(format!("{} {} {}", self.did, self.kind.as_str(), self.rkey))
    }
}

/// An exclusive lock over the lake's writers (an OS file lock, released on drop or death).
pub struct FlushLock {
    _file: File,
}

impl FlushLock {
    /// Waits for the lock.
    pub fn acquire(lake: &Path) -> Result<FlushLock> {
        Ok(FlushLock { _file: crate::catalog::lock_exclusively(lake, "flush.lock")? })
    }
}

/// Which of `candidates` (key, created_at) already are in `R`'s partition of `date`, in files
/// other than `rewriting` (the file a repeated flush replaces with the same rows).
pub fn known_keys<R: Keyed>(
    lake: &Path,
    date: NaiveDate,
    rewriting: &str,
    candidates: &[(&str, i64)],
) -> Result<HashSet<String>> {
    let dir = layout::partition_dir(lake, R::TABLE, date);
    let files: Vec<String> = crate::catalog::data_file_names(&dir)?
        .into_iter()
        .filter(|name| name != rewriting)
        .map(|name| dir.join(name).to_string_lossy().replace('\'', "''"))
        .collect();
    if files.is_empty() || candidates.is_empty() {
        return Ok(HashSet::new());
    }
    let oldest = candidates.iter().map(|c| c.1).min().unwrap_or_default();
    let newest = candidates.iter().map(|c| c.1).max().unwrap_or_default();
    let connection = Connection::open_in_memory()?;
    connection.execute_batch("CREATE TEMP TABLE batch (k VARCHAR)")?;
    {
        let mut appender = connection.appender("batch")?;
        for (key, _) in candidates {
            appender.append_row([*key])?;
        }
    }
    let list: Vec<String> = files.iter().map(|f| format!("'{f}'")).collect();
    // Copies share created_at, so row groups outside the batch's time range are skipped (in
    // posts files, sorted by it; interactions files are sorted by subject and read whole).
    let sql = format!(
        "SELECT b.k FROM batch AS b SEMI JOIN (SELECT {} AS k FROM read_parquet([{}]) \
         WHERE created_at BETWEEN make_timestamp(?) AND make_timestamp(?)) AS f ON f.k = b.k",
        R::KEY_SQL,
        list.join(", ")
    );
    let mut statement = connection.prepare(&sql)?;
    let keys = statement.query_map([oldest, newest], |row| row.get::<_, String>(0))?;
    Ok(keys.collect::<duckdb::Result<_>>()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn post(n: i64) -> Post {
        Post {
            uri: format!("at://did:plc:a/app.bsky.feed.post/{n}"),
            did: "did:plc:a".into(),
            rkey: n.to_string(),
            created_at_us: 1_700_000_000_000_000 + n,
            ..Post::default()
        }
    }

    #[test]
    fn posts_in_other_files_of_the_partition_are_known_and_the_rewritten_file_is_not_counted() {
        let dir = tempfile::tempdir().unwrap();
        crate::writer::write_posts(dir.path(), "a.parquet", (0..10).map(post).collect()).unwrap();
        crate::writer::write_posts(dir.path(), "b.parquet", (10..20).map(post).collect()).unwrap();
        let date = crate::layout::date_of_micros(post(0).created_at_us);
        let batch: Vec<Post> = (5..15).chain(30..32).map(post).collect();
        let candidates: Vec<(&str, i64)> = batch.iter().map(|p| (p.uri.as_str(), p.created_at_us)).collect();

        let known = known_keys::<Post>(dir.path(), date, "c.parquet", &candidates).unwrap();
        let expected: HashSet<String> = (5..15).map(|n| post(n).uri).collect();
        assert_eq!(known, expected);
        // Rewriting b.parquet: its own rows do not count as already there.
        let known = known_keys::<Post>(dir.path(), date, "b.parquet", &candidates).unwrap();
        assert_eq!(known, (5..10).map(|n| post(n).uri).collect::<HashSet<_>>());
        // Another day has nothing.
        let other = date.succ_opt().unwrap();
        assert!(known_keys::<Post>(dir.path(), other, "c.parquet", &candidates).unwrap().is_empty());
        // The lock can be taken twice in a row (released on drop).
        drop(FlushLock::acquire(dir.path()).unwrap());
        drop(FlushLock::acquire(dir.path()).unwrap());
    }
}
