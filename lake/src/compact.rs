//! `skyglass lake compact`: merges a day's small `posts` files into sorted files of a target
//! size, leaving out the posts deleted on Bluesky and any second copy of a post.
//!
//! Each flush adds a file per day it touched, so a day collects hundreds of small files, and a
//! query opens every one. Compaction rewrites a partition's small files (and any file holding a
//! deleted post) into files of about the target size, sorted like every data file (by
//! `created_at`, then `uri`), under fresh names; files already big and clean are kept as they
//! are. The new partition is assembled beside the live one and swapped in with one atomic
//! directory exchange ([`crate::rewrite::swap_partition`]), so a query counts every post once
//! throughout, and a run cut short (even by kill -9) leaves the live partition whole; the next
//! run removes its leftovers.
//!
//! Answers do not change: deleted posts are already hidden from every query (their tombstones
//! in `deletes` stay), and the flusher never stores a post twice, so copies only come from
//! files written by hand or by an older version.
//!
//! A run can be called off (`cancel`, set by a shutting-down server): staging stops at its
//! next batch or file, before the exchange, with [`Error::Interrupted`], and the
//! [`crate::unique::FlushLock`] it held (which keeps flushes out of the partition) is free at
//! once for the last flush.
//!
//! A query whose snapshot listed the old files and opens one after the exchange finds it gone
//! (the names are fresh), and fails rather than miscount; the engine lists the files again
//! (waiting for the publish) and retries such a query once ([`crate::exec`]).

use std::fs;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use arrow::array::RecordBatch;
use arrow::compute::cast;
use chrono::NaiveDate;
use duckdb::Connection;

use crate::error::{Error, Result};
use crate::layout;
use crate::model::posts_schema;
use crate::rewrite::swap_partition;
use crate::writer::{BATCH_ROWS, PendingFile};

/// The size compaction aims for, per file.
pub const DEFAULT_TARGET_BYTES: u64 = 256 * 1024 * 1024;

/// The memory a compaction's DuckDB may hold; its sorts spill the rest to
/// [`layout::spill_dir`]. Unbounded, sorting a day of 30 M likes took 12 GB, inside `serve`.
pub const MEMORY_LIMIT: &str = "1GB";

/// A DuckDB connection for compaction's work: in memory, within [`MEMORY_LIMIT`].
fn work_connection(lake: &Path) -> Result<Connection> {
    let connection = Connection::open_in_memory()?;
    let spill = layout::spill_dir(lake);
    connection
        .execute_batch(&format!("SET memory_limit = '{MEMORY_LIMIT}'; SET temp_directory = {};", sql_string(&spill)))?;
    Ok(connection)
}

pub mod interactions;

/// What compacting one partition did (or found nothing to do).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Compacted {
    /// The table (`posts`, `interactions` or `interaction_deletes`).
    pub table: &'static str,
    pub date: Option<NaiveDate>,
    pub files_before: usize,
    pub files_after: usize,
    /// Files merged into new ones (the others were kept as they were).
    pub files_merged: usize,
    pub rows_before: u64,
    pub rows_after: u64,
    /// Rows left out because they were deleted on Bluesky (posts, likes and reposts), or, of
    /// `interaction_deletes`, deletes retired once applied ([`interactions`]).
    pub deleted_removed: u64,
    /// Second copies of a post left out.
    pub copies_removed: u64,
    pub bytes_before: u64,
    pub bytes_after: u64,
}

impl Compacted {
    pub fn changed(&self) -> bool {
        self.files_merged > 0
    }
}

/// One data file of the partition, as found.
struct Found {
    name: String,
    rows: u64,
    deleted: u64,
    bytes: u64,
}

/// Compacts the `posts` partition of `date` if it has more than one small file, a deleted post
/// or a copy of a post; otherwise leaves it alone. Stops with [`Error::Interrupted`], the live
/// partition untouched, once `cancel` is set.
pub fn compact_partition(
    lake: &Path,
    date: NaiveDate,
    target_bytes: u64,
    now_us: i64,
    cancel: &AtomicBool,
) -> Result<Compacted> {
    swap_partition(lake, layout::POSTS_TABLE, date, now_us, |live, staging| {
        let report = stage(lake, live, staging, date, target_bytes, now_us, cancel)?;
        let changed = report.changed();
        Ok((report, changed))
    })
}

/// The day partitions of `table`, oldest first.
pub fn partitions(lake: &Path, table: &str) -> Result<Vec<NaiveDate>> {
    Ok(crate::catalog::table_files(lake, table)?.partitions.into_iter().map(|(day, _)| day).collect())
}

fn stage(
    lake: &Path,
    live: &Path,
    staging: &Path,
    date: NaiveDate,
    target_bytes: u64,
    now_us: i64,
    cancel: &AtomicBool,
) -> Result<Compacted> {
    let called_off = || if cancel.load(Ordering::Relaxed) { Err(Error::Interrupted) } else { Ok(()) };
    let mut report = Compacted { table: layout::POSTS_TABLE, date: Some(date), ..Compacted::default() };
    let names = crate::catalog::data_file_names(live)?;
    if names.is_empty() {
        return Ok(report);
    }
    let connection = work_connection(lake)?;
    let deletes = deletes_source(lake)?;
    let join = deletes.as_ref().map(|d| format!("LEFT JOIN {d} AS d ON d.did = p.did AND d.rkey = p.rkey"));
    let found = survey(&connection, live, &names, join.as_deref().map(|join| (join, "count(d.rkey)")))?;
    let copies = copies(&connection, live, &names)?;
    // With copies anywhere, every file is merged (a copy may sit in any two of them).
    let Some(merge) = Merge::choose(&mut report, found, target_bytes, copies > 0) else {
        return Ok(report);
    };
    merge.stage_kept(live, staging, &mut report, |from, to| {
        crate::textindex::link_for(from, to)?;
        crate::rollup::link_for(from, to)
    })?;

    let anti_join = deletes
        .as_ref()
        .map(|d| format!("ANTI JOIN {d} AS d ON d.did = p.did AND d.rkey = p.rkey"))
        .unwrap_or_default();
    // The schema's columns: a `uri` that older files store is left behind (it is made of
    // `did` and `rkey`).
    let sql = format!(
        "SELECT {columns} FROM read_parquet([{sources}], union_by_name = true) AS p {anti_join} \
         QUALIFY row_number() OVER (PARTITION BY p.did, p.rkey ORDER BY p.indexed_at, p.cid) = 1 \
         ORDER BY p.created_at, p.did, p.rkey",
        columns = columns_of(&posts_schema()),
        sources = merge.sources(live),
    );
    let (written, new_files) =
        write_sorted(&connection, &sql, &posts_schema(), staging, merge.target_rows, now_us, &mut report, cancel)?;
    // Each new file's text index and rollups go into the staging directory with it, so the
    // exchange publishes them together.
    for path in &new_files {
        called_off()?;
        crate::textindex::build_for_file(path)?;
        crate::rollup::build_for_file(path, path)?;
    }
    called_off()?;
    merge.report_merged(&mut report, written);
    Ok(report)
}

/// The files of a partition a compaction merges, and how many rows its new files hold.
struct Merge {
    found: Vec<Found>,
    /// Indexes into `found`.
    merged: Vec<usize>,
    target_rows: u64,
}

impl Merge {
    /// Files of at least half the target stay as they are unless they hold something to leave
    /// out, or `all` says every file must be merged. None, with the report filled in, when there
    /// is nothing worth doing: one small file and nothing to leave out.
    fn choose(report: &mut Compacted, found: Vec<Found>, target_bytes: u64, all: bool) -> Option<Merge> {
        report.files_before = found.len();
        report.rows_before = found.iter().map(|f| f.rows).sum();
        report.bytes_before = found.iter().map(|f| f.bytes).sum();
        let bytes_per_row = (report.bytes_before / report.rows_before.max(1)).max(1);
        let target_rows = (target_bytes / bytes_per_row).max(BATCH_ROWS as u64);
        let merged: Vec<usize> =
            (0..found.len()).filter(|&i| all || found[i].deleted > 0 || found[i].rows < target_rows / 2).collect();
        if merged.len() < 2 && merged.iter().all(|&i| found[i].deleted == 0) && !all {
            report.files_after = report.files_before;
            report.rows_after = report.rows_before;
            report.bytes_after = report.bytes_before;
            return None;
        }
        Some(Merge { found, merged, target_rows })
    }

    fn is_merged(&self, index: usize) -> bool {
        self.merged.contains(&index)
    }

    /// Creates the staging directory and hard-links the kept files into it, each with its
    /// companions (`link_companions(live file, staged file)`).
    fn stage_kept(
        &self,
        live: &Path,
        staging: &Path,
        report: &mut Compacted,
        link_companions: impl Fn(&Path, &Path) -> Result<()>,
    ) -> Result<()> {
        fs::create_dir(staging).map_err(Error::io("create staging directory", staging))?;
        for (_, kept) in self.found.iter().enumerate().filter(|(i, _)| !self.is_merged(*i)) {
            let target = staging.join(&kept.name);
            fs::hard_link(live.join(&kept.name), &target).map_err(Error::io("link into staging", &target))?;
            link_companions(&live.join(&kept.name), &target)?;
            report.files_after += 1;
            report.rows_after += kept.rows;
            report.bytes_after += kept.bytes;
        }
        Ok(())
    }

    /// The merged files as a `read_parquet` list.
    fn sources(&self, live: &Path) -> String {
        let sources: Vec<String> = self.merged.iter().map(|&i| sql_string(&live.join(&self.found[i].name))).collect();
        sources.join(", ")
    }

    /// Completes `report` once the merged files' `written` rows are staged.
    fn report_merged(&self, report: &mut Compacted, written: u64) {
        let merged_rows: u64 = self.merged.iter().map(|&i| self.found[i].rows).sum();
        report.files_merged = self.merged.len();
        report.rows_after += written;
        report.deleted_removed = self.merged.iter().map(|&i| self.found[i].deleted).sum();
        report.copies_removed = merged_rows.saturating_sub(report.deleted_removed).saturating_sub(written);
    }
}

/// The columns of `schema` of the relation `p`, in its order (which [`conform`] relies on).
fn columns_of(schema: &arrow::datatypes::SchemaRef) -> String {
    let columns: Vec<String> = schema.fields().iter().map(|f| format!("p.\"{}\"", f.name())).collect();
    columns.join(", ")
}

/// Writes the rows of `sql` (already in the files' order, in `schema`'s columns) into new
/// files of `target_rows` each in `staging`, named after `now_us` and counted in `report`.
/// Returns the rows written and the new files.
#[allow(clippy::too_many_arguments)]
fn write_sorted(
    connection: &Connection,
    sql: &str,
    schema: &arrow::datatypes::SchemaRef,
    staging: &Path,
    target_rows: u64,
    now_us: i64,
    report: &mut Compacted,
    cancel: &AtomicBool,
) -> Result<(u64, Vec<std::path::PathBuf>)> {
    let mut statement = connection.prepare(sql)?;
    let mut output: Option<PendingFile> = None;
    let mut written = 0_u64;
    let mut new_files = Vec::new();
    // Streamed: `query_arrow` would hold the whole result (5 GB for a day of 30 M likes).
    for batch in statement.stream_arrow([])? {
        if cancel.load(Ordering::Relaxed) {
            return Err(Error::Interrupted);
        }
        let batch = conform(&batch?, schema)?;
        if output.as_ref().is_some_and(|file| file.rows() as u64 >= target_rows) {
            report.bytes_after += output.take().map(PendingFile::finish).transpose()?.unwrap_or(0);
        }
        if output.is_none() {
            let path = staging.join(format!("compacted-{now_us}-{}.parquet", report.files_after));
            output = Some(PendingFile::create(&path, schema.clone())?);
            new_files.push(path);
            report.files_after += 1;
        }
        if let Some(file) = output.as_mut() {
            file.write(&batch)?;
        }
        written += batch.num_rows() as u64;
    }
    if let Some(file) = output {
        report.bytes_after += file.finish()?;
    }
    Ok((written, new_files))
}

/// Each file's rows, rows to leave out and bytes, in one statement over the partition (`p`);
/// `hits` is a join and the aggregate that counts the rows it finds to leave out.
fn survey(connection: &Connection, live: &Path, names: &[String], hits: Option<(&str, &str)>) -> Result<Vec<Found>> {
    let sources: Vec<String> = names.iter().map(|name| sql_string(&live.join(name))).collect();
    let (join, deleted) = hits.unwrap_or(("", "0"));
    let sql = format!(
        "SELECT p.filename, count(*), {deleted} FROM read_parquet([{}], filename = true) AS p {join} GROUP BY p.filename",
        sources.join(", ")
    );
    let mut counts = std::collections::HashMap::new();
    let mut statement = connection.prepare(&sql)?;
    let mut rows = statement.query([])?;
    while let Some(row) = rows.next()? {
        let (file, rows, deleted): (String, i64, i64) = (row.get(0)?, row.get(1)?, row.get(2)?);
        counts.insert(file, (u64::try_from(rows).unwrap_or(0), u64::try_from(deleted).unwrap_or(0)));
    }
    names
        .iter()
        .map(|name| {
            let path = live.join(name);
            let bytes = fs::metadata(&path).map_err(Error::io("stat", &path))?.len();
            let (rows, deleted) = counts.get(path.to_string_lossy().as_ref()).copied().unwrap_or((0, 0));
            Ok(Found { name: name.clone(), rows, deleted, bytes })
        })
        .collect()
}

/// Rows of the partition beyond the first of each post (DID and record key).
fn copies(connection: &Connection, live: &Path, names: &[String]) -> Result<u64> {
    let sources: Vec<String> = names.iter().map(|name| sql_string(&live.join(name))).collect();
    let sql = format!("SELECT count(*) - count(DISTINCT (did, rkey)) FROM read_parquet([{}])", sources.join(", "));
    let copies: i64 = connection.query_row(&sql, [], |row| row.get(0))?;
    Ok(u64::try_from(copies).unwrap_or(0))
}

/// The `deletes` table as a SQL source, if it has files.
fn deletes_source(lake: &Path) -> Result<Option<String>> {
    if crate::catalog::table_files(lake, layout::DELETES_TABLE)?.files == 0 {
        return Ok(None);
    }
    let glob = layout::table_glob(lake, layout::DELETES_TABLE).replace('\'', "''");
    Ok(Some(format!("(SELECT DISTINCT did, {} AS rkey FROM read_parquet('{glob}'))", crate::model::DELETE_RKEY_SQL)))
}

fn sql_string(path: &Path) -> String {
    format!("'{}'", path.to_string_lossy().replace('\'', "''"))
}

/// A batch as DuckDB returns it (plain strings, its own list field names, every column
/// nullable) in its table's schema, so every data file has the same one.
fn conform(batch: &RecordBatch, schema: &arrow::datatypes::SchemaRef) -> Result<RecordBatch> {
    let columns = schema
        .fields()
        .iter()
        .zip(batch.columns())
        .map(|(field, column)| cast(column, field.data_type()))
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| Error::Corrupt(format!("a compacted batch does not fit its table's schema: {e}")))?;
    RecordBatch::try_new(schema.clone(), columns)
        .map_err(|e| Error::Corrupt(format!("a compacted batch does not fit its table's schema: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog;
    use crate::model::{Delete, Post};
    use crate::writer;

    const DAY: i64 = 86_400_000_000;

    fn post(n: i64) -> Post {
        Post {
            uri: format!("at://did:plc:a{}/app.bsky.feed.post/{n:06}", n % 7),
            cid: format!("bafy{n}"),
            did: format!("did:plc:a{}", n % 7),
            rkey: format!("{n:06}"),
            // Out of order across files, so the merge has something to sort.
            created_at_us: 20_000 * DAY + (n * 7_919) % 100_000,
            indexed_at_us: 20_000 * DAY + n,
            text: format!("post number {n} #tag{}", n % 3),
            langs: vec!["en".into()],
            hashtags: vec![format!("tag{}", n % 3)],
            embed_type: if n % 2 == 0 { crate::model::EmbedType::Images } else { crate::model::EmbedType::None },
            image_count: (n % 2) as i32,
            reply_parent: (n % 5 == 0).then(|| format!("at://did:plc:b/app.bsky.feed.post/{n}")),
            text_len: 10,
            enrich_version: 4,
            ..Post::default()
        }
    }

    fn date() -> NaiveDate {
        layout::date_of_micros(20_000 * DAY)
    }

    /// Every post of the partition, in file order, and the file names.
    fn read_partition(lake: &Path) -> (Vec<Post>, Vec<String>) {
        let dir = layout::partition_dir(lake, layout::POSTS_TABLE, date());
        let names = catalog::data_file_names(&dir).unwrap();
        let connection = Connection::open_in_memory().unwrap();
        let mut posts = Vec::new();
        for name in &names {
            posts.extend(crate::rewrite::read_posts(&connection, &dir.join(name)).unwrap());
        }
        (posts, names)
    }

    #[test]
    fn small_files_merge_into_one_sorted_file_without_deleted_posts_or_copies() {
        let lake = tempfile::tempdir().unwrap();
        for file in 0..5_i64 {
            let posts = (file * 40..file * 40 + 40).map(post).collect();
            writer::write_posts(lake.path(), &format!("{file}-0_{file}-9.parquet"), posts).unwrap();
        }
        // A copy of three posts in a sixth file (as an old version could have written), and
        // four deletes, one of them for a post that is not in this partition.
        writer::write_posts(lake.path(), "9-0_9-9.parquet", vec![post(3), post(77), post(150)]).unwrap();
        let deleted = [5_i64, 77, 123, 9_999];
        let deletes = deleted
            .iter()
            .map(|n| Delete { uri: post(*n).uri, did: post(*n).did, deleted_at_us: 20_001 * DAY })
            .collect();
        writer::write_rows(lake.path(), "d.parquet", deletes).unwrap();

        let report = compact_partition(lake.path(), date(), DEFAULT_TARGET_BYTES, 42, &AtomicBool::new(false)).unwrap();
        assert_eq!((report.files_before, report.files_merged, report.files_after), (6, 6, 1), "{report:?}");
        assert_eq!((report.rows_before, report.rows_after), (203, 197), "{report:?}");
        assert_eq!((report.deleted_removed, report.copies_removed), (4, 2), "{report:?}");

        let (posts, names) = read_partition(lake.path());
        assert_eq!(names, ["compacted-42-0.parquet"]);
        let mut expected: Vec<Post> = (0..200).filter(|n| ![5, 77, 123].contains(n)).map(post).collect();
        expected.sort_by(|a, b| (a.created_at_us, &a.uri).cmp(&(b.created_at_us, &b.uri)));
        assert_eq!(posts, expected);
        assert!(!layout::staging_partition_dir(lake.path(), layout::POSTS_TABLE, date()).exists());
        assert_eq!(catalog::read_state(lake.path()).unwrap().generation, 1);

        // Compact already: a second run changes nothing and publishes nothing.
        let again = compact_partition(lake.path(), date(), DEFAULT_TARGET_BYTES, 43, &AtomicBool::new(false)).unwrap();
        assert!(!again.changed(), "{again:?}");
        assert_eq!(read_partition(lake.path()).1, ["compacted-42-0.parquet"]);
        assert_eq!(catalog::read_state(lake.path()).unwrap().generation, 1);
    }

    /// `path` written again as posts files were before uris were made of `did` and `rkey`: with
    /// a `uri` column first.
    fn store_uri_in(path: &Path) {
        use arrow::array::{ArrayRef, StringArray};
        use arrow::datatypes::{DataType, Field, Schema};
        let posts = crate::rewrite::read_posts(&Connection::open_in_memory().unwrap(), path).unwrap();
        let batch = crate::model::posts_to_batch(&posts).unwrap();
        let uri: ArrayRef = std::sync::Arc::new(StringArray::from_iter_values(posts.iter().map(|p| p.uri.as_str())));
        let mut fields = vec![Field::new("uri", DataType::Utf8, false)];
        fields.extend(batch.schema().fields().iter().map(|f| f.as_ref().clone()));
        let columns = std::iter::once(uri).chain(batch.columns().iter().cloned()).collect();
        let batch = RecordBatch::try_new(std::sync::Arc::new(Schema::new(fields)), columns).unwrap();
        let legacy = path.with_extension("legacy");
        let mut writer =
            parquet::arrow::ArrowWriter::try_new(fs::File::create(&legacy).unwrap(), batch.schema(), None).unwrap();
        writer.write(&batch).unwrap();
        writer.close().unwrap();
        fs::rename(&legacy, path).unwrap();
    }

    #[test]
    fn files_that_still_store_their_uri_are_read_verified_and_compacted_as_the_others() {
        use crate::model::PostColumn;
        use crate::plan::{PostFilter, PostOrder, PostsPlan};
        let lake = tempfile::tempdir().unwrap();
        writer::write_posts(lake.path(), "old.parquet", (0..40).map(post).collect()).unwrap();
        writer::write_posts(lake.path(), "new.parquet", (40..80).map(post).collect()).unwrap();
        let dir = layout::partition_dir(lake.path(), layout::POSTS_TABLE, date());
        store_uri_in(&dir.join("old.parquet"));
        assert!(crate::model::stores_uri(&dir.join("old.parquet")));
        assert!(!crate::model::stores_uri(&dir.join("new.parquet")));
        let deleted = [7_i64, 47];
        let deletes =
            deleted.iter().map(|n| Delete { uri: post(*n).uri, did: post(*n).did, deleted_at_us: 20_001 * DAY });
        writer::write_rows(lake.path(), "d.parquet", deletes.collect()).unwrap();
        catalog::publish(lake.path(), 1).unwrap();
        let verified = crate::verify::verify(lake.path()).unwrap();
        assert_eq!(verified.errors(), 0, "{:?}", verified.findings);

        let mut expected: Vec<Post> = (0..80).filter(|n| !deleted.contains(n)).map(post).collect();
        expected.sort_by(|a, b| (b.created_at_us, &b.did, &b.rkey).cmp(&(a.created_at_us, &a.did, &a.rkey)));
        let newest = |filter: PostFilter| {
            let engine = crate::exec::Engine::open(lake.path(), &crate::exec::EngineConfig::with_threads(1)).unwrap();
            engine.posts(&PostsPlan::new(filter, PostOrder::Newest, 100, PostColumn::ALL)).unwrap()
        };
        assert_eq!(newest(PostFilter::default()), expected);
        for n in [3_i64, 45] {
            let found = newest(PostFilter { uris: vec![post(n).uri], ..PostFilter::default() });
            assert_eq!(found, [post(n)], "post {n}");
        }
        // A text search reads the new file's candidates from their pages, and the old file's,
        // whose columns are not today's, through DuckDB.
        for name in ["old.parquet", "new.parquet"] {
            crate::textindex::build_for_file(&dir.join(name)).unwrap();
        }
        let tag1 = crate::search::TextQuery { query: "tag1".into(), mode: crate::search::TextMode::Words };
        crate::exec::explain_on_this_thread(true);
        let found = newest(PostFilter { text: vec![tag1], ..PostFilter::default() });
        let statements: Vec<String> =
            crate::exec::take_answered().into_iter().flat_map(|a| a.statements).map(|s| s.sql).collect();
        crate::exec::explain_on_this_thread(false);
        let tagged: Vec<Post> = expected.iter().filter(|p| p.text.ends_with("#tag1")).cloned().collect();
        assert_eq!(found, tagged);
        assert!(found.iter().any(|p| p.rkey.as_str() < "000040") && found.iter().any(|p| p.rkey.as_str() >= "000040"));
        let read = statements.last().expect("a statement");
        assert!(read.contains("FROM candidate_rows") && read.contains("old.parquet"), "{read}");
        assert!(!read.contains("new.parquet"), "{read}");

        let report = compact_partition(lake.path(), date(), DEFAULT_TARGET_BYTES, 42, &AtomicBool::new(false)).unwrap();
        assert_eq!((report.files_merged, report.deleted_removed), (2, 2), "{report:?}");
        let (_, names) = read_partition(lake.path());
        assert!(names.iter().all(|name| !crate::model::stores_uri(&dir.join(name))), "{names:?}");
        assert_eq!(newest(PostFilter::default()), expected);
    }

    #[test]
    fn big_clean_files_are_kept_and_output_files_stop_at_the_target() {
        let lake = tempfile::tempdir().unwrap();
        // A tiny target: files reach it at one row group (131,072 rows), and files of half
        // that are big enough to keep.
        let rows = |start: i64, n: i64| (start..start + n).map(post).collect::<Vec<_>>();
        writer::write_posts(lake.path(), "big.parquet", rows(0, 70_000)).unwrap();
        writer::write_posts(lake.path(), "s1.parquet", rows(100_000, 65_000)).unwrap();
        writer::write_posts(lake.path(), "s2.parquet", rows(200_000, 65_000)).unwrap();
        writer::write_posts(lake.path(), "s3.parquet", rows(300_000, 10_000)).unwrap();
        let dir = layout::partition_dir(lake.path(), layout::POSTS_TABLE, date());
        use std::os::unix::fs::MetadataExt;
        let big_inode = fs::metadata(dir.join("big.parquet")).unwrap().ino();

        let report = compact_partition(lake.path(), date(), 1, 7, &AtomicBool::new(false)).unwrap();
        assert_eq!((report.files_merged, report.files_after, report.rows_after), (3, 3, 210_000), "{report:?}");
        assert_eq!(fs::metadata(dir.join("big.parquet")).unwrap().ino(), big_inode, "the big file was linked");
        let (posts, names) = read_partition(lake.path());
        assert_eq!(names, ["big.parquet", "compacted-7-1.parquet", "compacted-7-2.parquet"]);
        assert_eq!(posts.len(), 210_000);
        let reader = |name: &str| {
            let file = fs::File::open(dir.join(name)).unwrap();
            parquet::file::reader::FileReader::metadata(
                &parquet::file::reader::SerializedFileReader::new(file).unwrap(),
            )
            .file_metadata()
            .num_rows()
        };
        assert_eq!(reader("compacted-7-1.parquet"), BATCH_ROWS as i64);
        assert_eq!(reader("compacted-7-2.parquet"), 140_000 - BATCH_ROWS as i64);
        let merged = &posts[70_000..];
        assert!(merged.windows(2).all(|w| (w[0].created_at_us, &w[0].uri) <= (w[1].created_at_us, &w[1].uri)));
    }

    /// A lake of three small files of five posts each, in one partition.
    fn three_small_files() -> tempfile::TempDir {
        let lake = tempfile::tempdir().unwrap();
        for file in 0..3_i64 {
            writer::write_posts(lake.path(), &format!("{file}.parquet"), (file * 5..file * 5 + 5).map(post).collect())
                .unwrap();
        }
        lake
    }

    #[test]
    fn a_run_cut_short_leaves_the_live_partition_whole_and_is_cleaned_up_by_the_next() {
        let lake = three_small_files();
        // What a kill -9 during staging leaves: a staging directory with a half-written file.
        let staging = layout::staging_partition_dir(lake.path(), layout::POSTS_TABLE, date());
        fs::create_dir(&staging).unwrap();
        fs::write(staging.join(".compacted-1-0.parquet.tmp"), b"half").unwrap();
        assert_eq!(read_partition(lake.path()).0.len(), 15);

        let report = compact_partition(lake.path(), date(), DEFAULT_TARGET_BYTES, 9, &AtomicBool::new(false)).unwrap();
        assert_eq!((report.files_after, report.rows_after), (1, 15));
        assert!(!staging.exists());
        assert_eq!(read_partition(lake.path()).0.len(), 15);
    }

    #[test]
    fn a_run_called_off_leaves_the_partition_as_it_was_and_the_flush_lock_free() {
        let lake = three_small_files();
        let before = read_partition(lake.path());
        let result = compact_partition(lake.path(), date(), DEFAULT_TARGET_BYTES, 9, &AtomicBool::new(true));
        assert!(matches!(result, Err(Error::Interrupted)), "{result:?}");
        assert_eq!(read_partition(lake.path()), before);
        assert!(!layout::staging_partition_dir(lake.path(), layout::POSTS_TABLE, date()).exists());
        assert_eq!(catalog::read_state(lake.path()).unwrap().generation, 0, "nothing published");
        // The lock went with the run: a flush takes it at once.
        let (sent, taken) = std::sync::mpsc::channel();
        let path = lake.path().to_path_buf();
        std::thread::spawn(move || sent.send(crate::unique::FlushLock::acquire(&path).is_ok()));
        assert_eq!(taken.recv_timeout(std::time::Duration::from_secs(10)), Ok(true), "the flush lock is free");
    }

    #[test]
    fn readers_during_compactions_count_every_post_once() {
        let lake = tempfile::tempdir().unwrap();
        let glob = layout::table_glob(lake.path(), layout::POSTS_TABLE);
        // Posts surely in the lake, and posts perhaps in it (a write in progress).
        let (surely, perhaps) = (std::sync::atomic::AtomicI64::new(0), std::sync::atomic::AtomicI64::new(0));
        let done = std::sync::atomic::AtomicBool::new(false);
        let write = |n: i64| {
            perhaps.store((n + 1) * 10, std::sync::atomic::Ordering::Release);
            let posts = (n * 10..n * 10 + 10).map(post).collect();
            writer::write_posts(lake.path(), &format!("{n}.parquet"), posts).unwrap();
            surely.store((n + 1) * 10, std::sync::atomic::Ordering::Release);
        };
        write(0);
        std::thread::scope(|scope| {
            let reader = scope.spawn(|| {
                let connection = Connection::open_in_memory().unwrap();
                let sql = format!("SELECT count(*), count(DISTINCT (did, rkey)) FROM read_parquet('{glob}')");
                let (mut reads, mut lost) = (0, 0);
                while !done.load(std::sync::atomic::Ordering::Acquire) || reads == 0 {
                    let before = surely.load(std::sync::atomic::Ordering::Acquire);
                    match connection.query_row(&sql, [], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?))) {
                        Ok((rows, uris)) => {
                            assert_eq!(rows, uris, "a post counted twice after {reads} reads");
                            let after = perhaps.load(std::sync::atomic::Ordering::Acquire);
                            assert!((before..=after).contains(&rows), "{rows} not in {before}..={after}");
                            reads += 1;
                        }
                        // A file listed just before a swap and gone at the read: an error,
                        // never a wrong count (the engine runs such a query again).
                        Err(e) if crate::exec::lost_a_file(&e) => lost += 1,
                        Err(e) => panic!("{e}"),
                    }
                }
                (reads, lost)
            });
            for n in 1..30 {
                write(n);
                compact_partition(lake.path(), date(), DEFAULT_TARGET_BYTES, n, &AtomicBool::new(false)).unwrap();
            }
            done.store(true, std::sync::atomic::Ordering::Release);
            let (reads, lost) = reader.join().unwrap();
            assert!(reads > 0 && lost <= reads, "{reads} reads, {lost} lost");
        });
        assert_eq!(read_partition(lake.path()).0.len(), 300);
    }
}
