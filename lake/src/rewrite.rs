//! Rewrites a `posts` partition and swaps it in whole: `skyglass lake reenrich` here, and
//! compaction ([`crate::compact`]).
//!
//! The partition's replacement is assembled in a hidden sibling directory
//! ([`layout::staging_partition_dir`]), which no glob reads. Files that need no change are
//! hard-linked into it, the others rewritten under the same name. Then one
//! `renameat2(RENAME_EXCHANGE)` trades the two directories: a reader lists either every old file
//! or every new one, never a mix and never neither, and since each name keeps its rows, a
//! query that listed the old directory and opens a file after the exchange reads the same posts.
//! The generation is then published (the exchange and the publish under the
//! [`catalog::PublishLock`], so a reader's snapshot pairs the files with their generation) and
//! the old files, now in the staging directory, removed.
//!
//! Writers hold the [`FlushLock`] throughout, so no flush adds a file to a partition while it is
//! being rewritten. A run cut short leaves at most a staging directory, which the next run
//! removes (publishing a generation, in case the exchange had happened).

use std::fs;
use std::path::Path;

use chrono::NaiveDate;
use duckdb::Connection;
use duckdb::types::Value;

use crate::catalog;
use crate::error::{Error, Result};
use crate::exec::set_column;
use crate::layout;
use crate::model::{Post, PostColumn};
use crate::unique::FlushLock;
use crate::writer::{self, sync_dir};

/// What a partition rewrite did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rewritten {
    pub date: Option<NaiveDate>,
    pub files: usize,
    pub rewritten_files: usize,
    pub rows: u64,
    pub rewritten_rows: u64,
}

/// Redoes, with `redo`, every post of the `posts` partition of `date` whose `enrich_version` is
/// below `version` (`redo` must raise it), and swaps the partition in atomically if anything
/// changed. `redo` may change derived columns only: a post keeps its uri and its day.
pub fn redo_stale_posts(
    lake: &Path,
    date: NaiveDate,
    version: i32,
    now_us: i64,
    mut redo: impl FnMut(&mut Post),
) -> Result<Rewritten> {
    swap_partition(lake, layout::POSTS_TABLE, date, now_us, |live, staging| {
        let report = stage(live, staging, date, version, &mut redo)?;
        let changed = report.rewritten_files > 0;
        Ok((report, changed))
    })
}

/// The frame of every partition rewrite (of `table`'s partition of `date`): under the
/// [`FlushLock`], removes what a run cut short left, lets `stage` fill the staging directory
/// from the live one (saying whether anything changed), and if so exchanges the two, publishes
/// a generation and removes the old files.
pub(crate) fn swap_partition<T>(
    lake: &Path,
    table: &str,
    date: NaiveDate,
    now_us: i64,
    stage: impl FnOnce(&Path, &Path) -> Result<(T, bool)>,
) -> Result<T> {
    let _lock = FlushLock::acquire(lake)?;
    let live = layout::partition_dir(lake, table, date);
    let staging = layout::staging_partition_dir(lake, table, date);
    let cut_short = remove_leftover(&staging)?;
    let (report, changed) = match stage(&live, &staging) {
        Ok(staged) => staged,
        Err(e) => {
            // Best effort: what is left is removed by the next run anyway.
            let _ = fs::remove_dir_all(&staging);
            return Err(e);
        }
    };
    if !changed {
        remove_leftover_quietly(&staging)?;
        if cut_short {
            let _publishing = catalog::PublishLock::exclusive(lake)?;
            catalog::publish(lake, now_us)?;
        }
        return Ok(report);
    }
    sync_dir(&staging)?;
    let publishing = catalog::PublishLock::exclusive(lake)?;
    exchange(&staging, &live)?;
    sync_dir(&layout::table_dir(lake, table))?;
    catalog::publish(lake, now_us)?;
    drop(publishing);
    fs::remove_dir_all(&staging).map_err(Error::io("remove the replaced files", &staging))?;
    Ok(report)
}

fn remove_leftover_quietly(staging: &Path) -> Result<()> {
    match fs::remove_dir_all(staging) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(Error::Io { action: "remove staging directory", path: staging.to_path_buf(), source: e })
        }
        _ => Ok(()),
    }
}

/// Fills `staging` with the partition's files, the stale ones redone.
fn stage(
    live: &Path,
    staging: &Path,
    date: NaiveDate,
    version: i32,
    redo: &mut impl FnMut(&mut Post),
) -> Result<Rewritten> {
    let mut report = Rewritten { date: Some(date), ..Rewritten::default() };
    let names = catalog::data_file_names(live)?;
    if !names.is_empty() {
        fs::create_dir(staging).map_err(Error::io("create staging directory", staging))?;
    }
    let connection = Connection::open_in_memory()?;
    for name in &names {
        let (path, target) = (live.join(name), staging.join(name));
        let (rows, stale) = count_stale(&connection, &path, version)?;
        report.files += 1;
        report.rows += rows;
        if stale == 0 {
            fs::hard_link(&path, &target).map_err(Error::io("link into staging", &target))?;
            crate::textindex::link_for(&path, &target)?;
            crate::rollup::link_for(&path, &target)?;
            continue;
        }
        let mut posts = read_posts(&connection, &path)?;
        for post in posts.iter_mut().filter(|p| p.enrich_version < version) {
            let (uri, created_at_us) = (post.uri.clone(), post.created_at_us);
            redo(post);
            if post.uri != uri || layout::date_of_micros(post.created_at_us) != layout::date_of_micros(created_at_us) {
                return Err(Error::Corrupt(format!("a rewrite moved post {uri}; only derived columns may change")));
            }
        }
        writer::write_file_atomically(&target, &writer::sorted(posts))?;
        // The same texts in the same order: the index still holds. The rollups count derived
        // columns (hashtags, embed types), which may have changed.
        crate::textindex::link_for(&path, &target)?;
        crate::rollup::build_for_file(&target, &target)?;
        newer_than(&target, &path)?;
        report.rewritten_files += 1;
        report.rewritten_rows += stale;
    }
    Ok(report)
}

/// Gives `file` a modification time at least a second past `old`'s: a cache that checks a
/// file's mtime (DuckDB's external file cache does, to the second) must not take the new
/// content under the old name for the old one.
fn newer_than(file: &Path, old: &Path) -> Result<()> {
    let second = std::time::Duration::from_secs(1);
    let old_time = fs::metadata(old).and_then(|m| m.modified()).map_err(Error::io("stat", old))?;
    let time = std::time::SystemTime::now().max(old_time + second);
    let handle = fs::File::options().write(true).open(file).map_err(Error::io("open", file))?;
    handle.set_modified(time).map_err(Error::io("set the modification time of", file))
}

/// Removes what a run cut short left behind; true if there was something.
fn remove_leftover(staging: &Path) -> Result<bool> {
    match fs::remove_dir_all(staging) {
        Ok(()) => {
            tracing::warn!(dir = %staging.display(), "removed the staging directory of a rewrite cut short");
            Ok(true)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => {
            Err(Error::Io { action: "remove leftover staging directory", path: staging.to_path_buf(), source: e })
        }
    }
}

fn parquet_source(path: &Path) -> String {
    format!("read_parquet('{}')", path.to_string_lossy().replace('\'', "''"))
}

/// A file's rows, and how many are below `version`.
fn count_stale(connection: &Connection, path: &Path, version: i32) -> Result<(u64, u64)> {
    let sql = format!("SELECT count(*), count(*) FILTER (WHERE enrich_version < ?) FROM {}", parquet_source(path));
    let (rows, stale): (i64, i64) = connection.query_row(&sql, [version], |row| Ok((row.get(0)?, row.get(1)?)))?;
    Ok((u64::try_from(rows).unwrap_or(0), u64::try_from(stale).unwrap_or(0)))
}

/// Every column of every row of one `posts` file.
pub(crate) fn read_posts(connection: &Connection, path: &Path) -> Result<Vec<Post>> {
    let names: Vec<&str> = PostColumn::ALL.iter().map(|c| c.name()).collect();
    let sql = format!("SELECT {} FROM ({})", names.join(", "), crate::model::posts_with_uri_sql(&parquet_source(path)));
    let mut statement = connection.prepare(&sql)?;
    let mut rows = statement.query([])?;
    let mut posts = Vec::new();
    while let Some(row) = rows.next()? {
        let mut post = Post::default();
        for (index, column) in PostColumn::ALL.iter().enumerate() {
            set_column(&mut post, *column, row.get::<_, Value>(index)?)?;
        }
        posts.push(post);
    }
    Ok(posts)
}

/// Trades two directories' names in one atomic step.
fn exchange(a: &Path, b: &Path) -> Result<()> {
    use rustix::fs::{CWD, RenameFlags, renameat_with};
    renameat_with(CWD, a, CWD, b, RenameFlags::EXCHANGE).map_err(|errno| Error::Io {
        action: "exchange (renameat2 RENAME_EXCHANGE; the lake's filesystem must support it) with",
        path: a.to_path_buf(),
        source: errno.into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ENRICH_VERSION;

    const DAY: i64 = 86_400_000_000;

    fn post(n: i64, version: i32) -> Post {
        Post {
            uri: format!("at://did:plc:a/app.bsky.feed.post/{n}"),
            did: "did:plc:a".into(),
            rkey: n.to_string(),
            created_at_us: 20_000 * DAY + n,
            indexed_at_us: 20_000 * DAY + n,
            text: format!("post {n}"),
            hashtags: vec!["x".into()],
            enrich_version: version,
            ..Post::default()
        }
    }

    fn partition_listing(lake: &Path, date: NaiveDate) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(layout::table_dir(lake, layout::POSTS_TABLE))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.extend(catalog::data_file_names(&layout::partition_dir(lake, layout::POSTS_TABLE, date)).unwrap());
        names.sort();
        names
    }

    #[test]
    fn stale_rows_are_redone_fresh_files_are_kept_and_the_generation_moves() {
        let lake = tempfile::tempdir().unwrap();
        let old = ENRICH_VERSION - 1;
        writer::write_posts(lake.path(), "a.parquet", (0..10).map(|n| post(n, old)).collect()).unwrap();
        writer::write_posts(lake.path(), "b.parquet", (10..20).map(|n| post(n, ENRICH_VERSION)).collect()).unwrap();
        let mixed = (20..30).map(|n| post(n, if n % 2 == 0 { old } else { ENRICH_VERSION })).collect();
        writer::write_posts(lake.path(), "c.parquet", mixed).unwrap();
        let date = layout::date_of_micros(20_000 * DAY);
        let partition = layout::partition_dir(lake.path(), layout::POSTS_TABLE, date);
        let kept_inode = fs::metadata(partition.join("b.parquet")).unwrap();
        let before = partition_listing(lake.path(), date);

        let report = redo_stale_posts(lake.path(), date, ENRICH_VERSION, 5, |p| {
            p.detected_lang = Some("redone".into());
            p.enrich_version = ENRICH_VERSION;
        })
        .unwrap();
        assert_eq!(report, Rewritten { date: Some(date), files: 3, rewritten_files: 2, rows: 30, rewritten_rows: 15 });
        assert_eq!(partition_listing(lake.path(), date), before, "same names, no staging left");
        assert_eq!(catalog::read_state(lake.path()).unwrap().generation, 1);
        use std::os::unix::fs::MetadataExt;
        assert_eq!(fs::metadata(partition.join("b.parquet")).unwrap().ino(), kept_inode.ino(), "b was linked");

        let connection = Connection::open_in_memory().unwrap();
        let mut posts = Vec::new();
        for name in ["a.parquet", "b.parquet", "c.parquet"] {
            posts.extend(read_posts(&connection, &partition.join(name)).unwrap());
        }
        assert_eq!(posts.len(), 30);
        for (n, got) in posts.iter().enumerate() {
            let mut want = post(n as i64, ENRICH_VERSION);
            let was_old = n < 10 || (n >= 20 && n % 2 == 0);
            if was_old {
                want.detected_lang = Some("redone".into());
            }
            assert_eq!(got, &want, "post {n}");
        }

        // Nothing is stale any more: a second run rewrites nothing and publishes nothing.
        let again = redo_stale_posts(lake.path(), date, ENRICH_VERSION, 6, |_| panic!("nothing is stale")).unwrap();
        assert_eq!(again.rewritten_files, 0);
        assert_eq!(catalog::read_state(lake.path()).unwrap().generation, 1);
        assert_eq!(partition_listing(lake.path(), date), before);
    }

    #[test]
    fn a_run_cut_short_is_cleaned_up_and_published() {
        let lake = tempfile::tempdir().unwrap();
        writer::write_posts(lake.path(), "a.parquet", (0..3).map(|n| post(n, ENRICH_VERSION)).collect()).unwrap();
        let date = layout::date_of_micros(20_000 * DAY);
        let staging = layout::staging_partition_dir(lake.path(), layout::POSTS_TABLE, date);
        fs::create_dir(&staging).unwrap();
        fs::write(staging.join("a.parquet"), b"half").unwrap();
        let report = redo_stale_posts(lake.path(), date, ENRICH_VERSION, 5, |_| {}).unwrap();
        assert_eq!((report.files, report.rewritten_files), (1, 0));
        assert!(!staging.exists());
        assert_eq!(catalog::read_state(lake.path()).unwrap().generation, 1);
    }

    #[test]
    fn a_redo_that_moves_a_post_is_refused_and_the_partition_is_untouched() {
        let lake = tempfile::tempdir().unwrap();
        writer::write_posts(lake.path(), "a.parquet", (0..3).map(|n| post(n, 1)).collect()).unwrap();
        let date = layout::date_of_micros(20_000 * DAY);
        let partition = layout::partition_dir(lake.path(), layout::POSTS_TABLE, date);
        let before = fs::read(partition.join("a.parquet")).unwrap();
        let err = redo_stale_posts(lake.path(), date, ENRICH_VERSION, 5, |p| p.created_at_us += 2 * DAY).unwrap_err();
        assert!(err.to_string().contains("moved post"), "{err}");
        assert_eq!(fs::read(partition.join("a.parquet")).unwrap(), before);
        assert_eq!(catalog::read_state(lake.path()).unwrap().generation, 0);
        assert!(!layout::staging_partition_dir(lake.path(), layout::POSTS_TABLE, date).exists());
    }

    #[test]
    fn readers_during_swaps_always_see_the_whole_partition_once() {
        let lake = tempfile::tempdir().unwrap();
        for file in 0..4 {
            let posts = (file * 50..file * 50 + 50).map(|n| post(n, 1)).collect();
            writer::write_posts(lake.path(), &format!("{file}.parquet"), posts).unwrap();
        }
        let date = layout::date_of_micros(20_000 * DAY);
        let glob = layout::table_glob(lake.path(), layout::POSTS_TABLE);
        let done = std::sync::atomic::AtomicBool::new(false);
        std::thread::scope(|scope| {
            let reader = scope.spawn(|| {
                let connection = Connection::open_in_memory().unwrap();
                let sql = format!(
                    "SELECT count(*), count(DISTINCT (did, rkey)), max(enrich_version) FROM read_parquet('{glob}')"
                );
                let mut reads = 0;
                while !done.load(std::sync::atomic::Ordering::Acquire) || reads == 0 {
                    let (rows, uris, _version): (i64, i64, i32) =
                        connection.query_row(&sql, [], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?))).unwrap();
                    assert_eq!((rows, uris), (200, 200), "after {reads} reads");
                    reads += 1;
                }
                reads
            });
            for version in 2..40 {
                let report = redo_stale_posts(lake.path(), date, version, 5, |p| p.enrich_version = version).unwrap();
                assert_eq!(report.rewritten_rows, 200);
            }
            done.store(true, std::sync::atomic::Ordering::Release);
            assert!(reader.join().unwrap() > 0);
        });
    }

    #[test]
    fn an_empty_or_missing_partition_is_nothing_to_do() {
        let lake = tempfile::tempdir().unwrap();
        let date = layout::date_of_micros(20_000 * DAY);
        let report = redo_stale_posts(lake.path(), date, ENRICH_VERSION, 5, |_| {}).unwrap();
        assert_eq!(report, Rewritten { date: Some(date), ..Rewritten::default() });
    }
}
