//! Writes rows into the lake as zstd Parquet files, durably: each file is written under a
//! temporary name, fsynced, renamed into place and its directory fsynced. A file that exists
//! under its final name is therefore complete.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::path::{Path, PathBuf};

use arrow::array::{AsArray, RecordBatch};
use arrow::datatypes::SchemaRef;
use chrono::NaiveDate;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, Encoding, ZstdLevel};
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;

use crate::error::{Error, Result};
use crate::layout;
use crate::model::{Post, TableRow};

/// Rows per row group. Reading a few rows of a file (a text search's candidates, a post by
/// uri) decodes, for each column read, the whole row group that holds each: measured with
/// DuckDB on a file of 500,000 synthetic posts, a row's `uri`, `text`, `created_at` and `did`
/// took 6 ms at 16 Ki rows a group against 14 ms at 128 Ki (every column: 13 against 39 ms),
/// and a scan of the file's texts was as fast, for about 3% more bytes (see the dictionaries
/// below). The `created_at` min/max pruning inside a day gets finer too.
pub const ROW_GROUP_ROWS: usize = 16 * 1024;

/// The most rows of a column one data page holds. A reader that wants a few rows of a file (a
/// selective text search's candidates, read by the engine from their pages) decompresses and
/// decodes, for each column, the pages that hold them: measured on a month-tier file of 500,000
/// synthetic posts, a row of every column took 1.3 ms from pages of 2,048 rows against 3.0 ms
/// from pages of up to 20,000 (the writer's default, so a page a row group), 20 rows of it
/// 18 against 53 ms; 13 ms and 171 ms through DuckDB, which decodes whole row groups. The file
/// was 2.4% bigger (pages of 1,024 rows: 4.9%, 14.8 ms). DuckDB's scans of a narrow column
/// slow down as pages shrink: `max(created_at), count(reply_root)` 17 → 19 ms at 2,048 rows,
/// 29 ms at 1,024.
pub const PAGE_ROWS: usize = 2048;

/// Rows turned into one Arrow batch and handed to the Parquet writer at a time (which cuts it
/// into row groups), and the fewest rows a compacted file holds.
pub const BATCH_ROWS: usize = 128 * 1024;

/// One file that is now durably in the lake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WrittenFile {
    pub path: PathBuf,
    pub date: NaiveDate,
    pub rows: usize,
    pub bytes: u64,
}

/// Whether the values of `column` in `first` (a file's first rows, up to a row group) repeat
/// enough for a dictionary: at most two in three of them distinct. A dictionary is per row
/// group, so this looks at one.
fn repeats(first: &[RecordBatch], column: &str) -> bool {
    let (mut seen, mut rows) = (std::collections::HashSet::new(), 0_usize);
    for batch in first {
        let Some(values) = batch.column_by_name(column).and_then(|c| c.as_string_opt::<i32>()) else { return false };
        for value in values.iter().flatten().take(ROW_GROUP_ROWS - rows) {
            seen.insert(value);
            rows += 1;
        }
    }
    rows > 0 && seen.len() * 3 <= rows * 2
}

fn writer_properties(schema: &SchemaRef, first: &[RecordBatch]) -> WriterProperties {
    // High-cardinality columns gain nothing from a dictionary; low-cardinality ones do. A
    // dictionary is per row group, and groups of 16 Ki rows hold a dictionary small enough to
    // be kept even for near-unique columns: a flushed file of 200,000 synthetic posts was 6.6%
    // bigger than with 128 Ki-row groups while `did`, the reply, quote and link uris and the
    // times kept theirs, 3.0% without them.
    //
    // A posts file's `did` gets one only where its values repeat ([`repeats`]). Reading one
    // row's `did` from its page decodes the row group's whole dictionary (0.9 ms of a
    // month-tier file's 1.3 ms a row), and there, where 84% of a row group's authors are
    // distinct, it saved nothing (14.7 against 14.6 bytes a post). In the ingest bench's files,
    // 52% distinct, it takes `did` from 13.1 to 9.7 bytes a post and is half as big to decode.
    // Likes are sorted by actor, where zstd does better without one (2.2 against 2.8 bytes).
    //
    // zstd level 2: on 300k synthetic posts the same bytes as level 3 (within 0.01%) for 3% less
    // of ingest's instructions; level 1 was 6% bigger. But `text` at level 9: on the ingest
    // bench's 267,050 posts 12.2 → 10.3 bytes a post, for 0.7 µs more a post to write (level 6:
    // 10.7; 12: 10.0 for 1 µs). Other columns gained nothing from higher levels (`cid`, random,
    // grew). The times are near-sorted (posts by time, likes by actor and then time): their
    // deltas take 0.8 bytes a post less, 0.4 a like. Nothing prunes on the page statistics of
    // the columns in `chunk_statistics` (no reader asks for their column index); they took 0.4
    // bytes a post and keep their row groups' only.
    let plain = [
        "cid",
        "did",
        "rkey",
        "text",
        "reply_root",
        "reply_parent",
        "quote_uri",
        "external_uri",
        "created_at",
        "indexed_at",
    ];
    let chunk_statistics = ["text", "cid", "reply_root", "reply_parent", "quote_uri", "external_uri"];
    let mut builder = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(2).expect("2 is a valid zstd level")))
        .set_column_compression(
            ColumnPath::from("text"),
            Compression::ZSTD(ZstdLevel::try_new(9).expect("9 is a valid zstd level")),
        )
        .set_column_encoding(ColumnPath::from("created_at"), Encoding::DELTA_BINARY_PACKED)
        .set_column_encoding(ColumnPath::from("indexed_at"), Encoding::DELTA_BINARY_PACKED)
        .set_dictionary_enabled(true)
        .set_statistics_enabled(EnabledStatistics::Page)
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
        // The writer closes a page when it reaches the limit at the end of a write batch.
        .set_data_page_row_count_limit(PAGE_ROWS)
        .set_write_batch_size(PAGE_ROWS);
    for column in plain {
        builder = builder.set_column_dictionary_enabled(ColumnPath::from(column), false);
    }
    for column in chunk_statistics {
        builder = builder.set_column_statistics_enabled(ColumnPath::from(column), EnabledStatistics::Chunk);
    }
    // In posts files, a bloom filter on `rkey` lets a lookup by uri (by its record key) skip the
    // row groups that lack it. Measured on 1 M posts, when it was on `uri`: `uri = ?` 77 → 20 ms
    // in DuckDB, for about 1.5% more bytes at this rate.
    if **schema != *crate::model::posts_schema() {
        return builder.build();
    }
    let rkey = || ColumnPath::from("rkey");
    builder = builder
        .set_column_dictionary_enabled(ColumnPath::from("did"), repeats(first, "did"))
        .set_column_bloom_filter_enabled(rkey(), true)
        .set_column_bloom_filter_fpp(rkey(), 0.05)
        .set_column_bloom_filter_max_ndv(rkey(), ROW_GROUP_ROWS as u64);
    builder.build()
}

/// Writes `rows` into their UTC-day partitions of their table, one file per day named
/// `file_name` (see [`layout::data_file_name`]), each sorted by its rows' `TableRow::sort_key`.
/// Rewriting the same name replaces the file atomically.
pub fn write_rows<R: TableRow>(lake: &Path, file_name: &str, rows: Vec<R>) -> Result<Vec<WrittenFile>> {
    place(stage_rows(lake, file_name, rows)?)
}

/// [`write_rows`] up to the renames: each file is complete and durable under its temporary
/// name, which no reader lists, until [`place`] renames it into place. A writer that must make
/// several files show at once (with a catalog publish, under the
/// [`crate::catalog::PublishLock`]) stages them first.
pub fn stage_rows<R: TableRow>(lake: &Path, file_name: &str, rows: Vec<R>) -> Result<Vec<StagedFile>> {
    let mut by_day: BTreeMap<NaiveDate, Vec<R>> = BTreeMap::new();
    for row in rows {
        by_day.entry(layout::date_of_micros(row.partition_micros())).or_default().push(row);
    }
    let mut staged = Vec::with_capacity(by_day.len());
    for (date, rows) in by_day {
        let rows = sorted(rows);
        let dir = layout::partition_dir(lake, R::TABLE, date);
        fs::create_dir_all(&dir).map_err(Error::io("create partition directory", &dir))?;
        let mut file = PendingFile::create(&dir.join(file_name), R::schema())?;
        for chunk in rows.chunks(BATCH_ROWS) {
            file.write(&R::to_batch(chunk)?)?;
        }
        let sealed = file.seal(date)?;
        if !crate::rollup::Kind::of_table(R::TABLE).is_empty() {
            // In place before the data file: a placed file has its rollups, unless a crash came
            // between the two (then it is read row by row until `lake rollup` builds them).
            crate::rollup::build_for_file(sealed.tmp.path(), &sealed.file.path)?;
        }
        staged.push(sealed);
    }
    Ok(staged)
}

/// Renames staged files into place, then fsyncs their directories: from here on they are in
/// the lake.
pub fn place(staged: Vec<StagedFile>) -> Result<Vec<WrittenFile>> {
    let mut written = Vec::with_capacity(staged.len());
    for file in staged {
        let StagedFile { file, tmp } = file;
        fs::rename(tmp.path(), &file.path).map_err(Error::io("rename into place", &file.path))?;
        tmp.keep();
        written.push(file);
    }
    let dirs: std::collections::BTreeSet<&Path> = written.iter().filter_map(|w| w.path.parent()).collect();
    for dir in dirs {
        sync_dir(dir)?;
    }
    Ok(written)
}

/// Writes `rows` (sorted already) to `path`: temp, fsync, rename, fsync the directory.
pub(crate) fn write_file_atomically<R: TableRow>(path: &Path, rows: &[R]) -> Result<u64> {
    let mut file = PendingFile::create(path, R::schema())?;
    for chunk in rows.chunks(BATCH_ROWS) {
        file.write(&R::to_batch(chunk)?)?;
    }
    file.finish()
}

/// A data file complete and fsynced under its temporary name; removed if dropped unplaced.
pub struct StagedFile {
    file: WrittenFile,
    tmp: TempFile,
}

/// `rows` by their [`TableRow::sort_key`]. The rows move once: sorting them in place
/// moved each (a post is some 400 bytes) about log₂ n times, a quarter of a flush's copying
/// (counted with callgrind).
pub(crate) fn sorted<R: TableRow>(rows: Vec<R>) -> Vec<R> {
    let mut order: Vec<usize> = (0..rows.len()).collect();
    order.sort_by(|&a, &b| {
        let (a, b) = (&rows[a], &rows[b]);
        a.sort_key().cmp(&b.sort_key())
    });
    let mut slots: Vec<Option<R>> = rows.into_iter().map(Some).collect();
    order.into_iter().filter_map(|i| slots[i].take()).collect()
}

/// [`write_rows`] for posts.
pub fn write_posts(lake: &Path, file_name: &str, posts: Vec<Post>) -> Result<Vec<WrittenFile>> {
    write_rows(lake, file_name, posts)
}

/// A Parquet data file being written under its temporary name, batch by batch; nothing reads it
/// until [`PendingFile::finish`] makes it durable and renames it into place. One that fails or is
/// dropped unfinished removes its temporary file: a full disk is not made fuller by the
/// attempts to write to it.
pub(crate) struct PendingFile {
    path: PathBuf,
    tmp: TempFile,
    output: Output,
    rows: usize,
}

/// Where a pending file's batches go: held until a row group's worth has come (or the file is
/// sealed), for [`writer_properties`] to look at, then to the Parquet writer.
enum Output {
    Holding {
        file: File,
        schema: SchemaRef,
        held: Vec<RecordBatch>,
        rows: usize,
    },
    Writing(Box<ArrowWriter<File>>),
    /// Making the writer failed; the file is good for nothing but to be dropped.
    Failed,
}

impl Output {
    /// The Parquet writer, made first (with properties for the held rows) when it is not yet.
    fn into_writer(self, path: &Path) -> Result<ArrowWriter<File>> {
        let error = |source| Error::Parquet { path: path.to_path_buf(), source };
        match self {
            Output::Writing(writer) => Ok(*writer),
            Output::Holding { file, schema, held, .. } => {
                let properties = writer_properties(&schema, &held);
                let mut writer = ArrowWriter::try_new(file, schema, Some(properties)).map_err(error)?;
                for batch in &held {
                    writer.write(batch).map_err(error)?;
                }
                Ok(writer)
            }
            Output::Failed => Err(error(parquet::errors::ParquetError::General("an earlier write failed".into()))),
        }
    }
}

/// A temporary file, removed when dropped unless [`TempFile::keep`] was called.
struct TempFile(Option<PathBuf>);

impl TempFile {
    fn path(&self) -> &Path {
        self.0.as_deref().unwrap_or(Path::new(""))
    }

    fn keep(mut self) {
        self.0 = None;
    }
}

impl std::ops::Drop for TempFile {
    fn drop(&mut self) {
        if let Some(path) = self.0.take() {
            let _ = fs::remove_file(path);
        }
    }
}

impl PendingFile {
    pub(crate) fn create(path: &Path, schema: SchemaRef) -> Result<PendingFile> {
        let tmp = layout::temp_path_for(path);
        let file = File::create(&tmp).map_err(Error::io("create", &tmp))?;
        let tmp = TempFile(Some(tmp));
        let output = Output::Holding { file, schema, held: Vec::new(), rows: 0 };
        Ok(PendingFile { path: path.to_path_buf(), tmp, output, rows: 0 })
    }

    pub(crate) fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        self.rows += batch.num_rows();
        match &mut self.output {
            Output::Holding { held, rows, .. } => {
                held.push(batch.clone());
                *rows += batch.num_rows();
                if *rows >= ROW_GROUP_ROWS {
                    let output = std::mem::replace(&mut self.output, Output::Failed);
                    self.output = Output::Writing(Box::new(output.into_writer(self.tmp.path())?));
                }
                Ok(())
            }
            Output::Writing(writer) => {
                writer.write(batch).map_err(|source| Error::Parquet { path: self.tmp.path().to_path_buf(), source })
            }
            Output::Failed => Output::Failed.into_writer(self.tmp.path()).map(drop),
        }
    }

    pub(crate) fn rows(&self) -> usize {
        self.rows
    }

    /// Closes, fsyncs and renames the file into place, and fsyncs its directory; its bytes.
    pub(crate) fn finish(self) -> Result<u64> {
        // The date is only carried along.
        let written = place(vec![self.seal(NaiveDate::MIN)?])?;
        Ok(written.iter().map(|w| w.bytes).sum())
    }

    /// Closes and fsyncs the file under its temporary name.
    fn seal(self, date: NaiveDate) -> Result<StagedFile> {
        let PendingFile { path, tmp, output, rows } = self;
        let file = output
            .into_writer(tmp.path())?
            .into_inner()
            .map_err(|source| Error::Parquet { path: tmp.path().to_path_buf(), source })?;
        file.sync_all().map_err(Error::io("fsync", tmp.path()))?;
        let bytes = file.metadata().map_err(Error::io("stat", tmp.path()))?.len();
        Ok(StagedFile { file: WrittenFile { path, date, rows, bytes }, tmp })
    }
}

/// Writes `bytes` to `path` so that `path` is never partial: under its temporary name, fsynced,
/// renamed into place, its directory fsynced. A temporary file a crash left is overwritten by
/// the next write of the same path; one that failed is removed.
pub fn write_bytes_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let tmp = layout::temp_path_for(path);
    let mut file = File::create(&tmp).map_err(Error::io("create", &tmp))?;
    let tmp = TempFile(Some(tmp));
    file.write_all(bytes).map_err(Error::io("write", tmp.path()))?;
    file.sync_all().map_err(Error::io("fsync", tmp.path()))?;
    drop(file);
    fs::rename(tmp.path(), path).map_err(Error::io("rename into place", path))?;
    tmp.keep();
    sync_dir(path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new(".")))
}

/// Removes the temporary files that writers killed mid-write left in the tables' day partitions,
/// and says how many. None of a live writer's can be among them: every write into a partition
/// happens under the [`crate::unique::FlushLock`], which the caller holds.
pub fn remove_orphan_temporaries(lake: &Path, _held: &crate::unique::FlushLock) -> Result<usize> {
    let mut removed = 0;
    for table in layout::TABLES {
        let dir = layout::table_dir(lake, table);
        let Ok(partitions) = fs::read_dir(&dir) else { continue };
        for partition in partitions {
            let partition = partition.map_err(Error::io("list", &dir))?;
            if partition.file_name().to_str().and_then(layout::parse_partition_name).is_none() {
                continue;
            }
            let path = partition.path();
            for file in fs::read_dir(&path).map_err(Error::io("list", &path))? {
                let file = file.map_err(Error::io("list", &path))?;
                let name = file.file_name();
                let name = name.to_string_lossy();
                if name.starts_with('.') && name.ends_with(".tmp") {
                    // A text index being built is a directory.
                    let path = file.path();
                    let removal = if path.is_dir() { fs::remove_dir_all(&path) } else { fs::remove_file(&path) };
                    removal.map_err(Error::io("remove", &path))?;
                    removed += 1;
                }
            }
        }
    }
    Ok(removed)
}

/// Fsyncs a directory so that a rename inside it survives a crash.
pub fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(Error::io("fsync directory", dir))
}

#[cfg(test)]
mod tests {
    use super::*;
    use parquet::file::reader::{FileReader, SerializedFileReader};

    #[test]
    fn an_unfinished_file_takes_its_temporary_file_with_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.parquet");
        let mut file = PendingFile::create(&path, Post::schema()).unwrap();
        file.write(&Post::to_batch(&[post("a", 1)]).unwrap()).unwrap();
        assert!(layout::temp_path_for(&path).exists());
        drop(file);
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn orphan_temporaries_go_from_the_partitions_only() {
        let lake = tempfile::tempdir().unwrap();
        let written = write_posts(lake.path(), "kept.parquet", vec![post("a", 1)]).unwrap();
        let partition = written[0].path.parent().unwrap().to_path_buf();
        fs::write(partition.join(".dead-writer.parquet.tmp"), b"half").unwrap();
        let staging = layout::staging_partition_dir(lake.path(), layout::POSTS_TABLE, written[0].date);
        fs::create_dir_all(&staging).unwrap();
        fs::write(staging.join(".compaction.parquet.tmp"), b"its own business").unwrap();
        let lock = crate::unique::FlushLock::acquire(lake.path()).unwrap();
        assert_eq!(remove_orphan_temporaries(lake.path(), &lock).unwrap(), 1);
        assert!(written[0].path.exists() && staging.join(".compaction.parquet.tmp").exists());
        assert_eq!(
            fs::read_dir(&partition).unwrap().count(),
            1 + crate::rollup::Kind::POSTS.len(),
            "the file, its rollups"
        );
        assert_eq!(remove_orphan_temporaries(lake.path(), &lock).unwrap(), 0);
    }

    /// The post `rkey` of one author.
    fn post(rkey: &str, created_at_us: i64) -> Post {
        let did = "did:plc:w";
        let uri = crate::model::post_uri(did, rkey);
        Post { uri, did: did.into(), rkey: rkey.into(), created_at_us, indexed_at_us: created_at_us, ..Post::default() }
    }

    #[test]
    fn posts_land_in_their_utc_day_sorted_and_nothing_temporary_remains() {
        let lake = tempfile::tempdir().unwrap();
        let day = 86_400_000_000_i64;
        let posts = vec![post("c", 20_000 * day + 5), post("a", 20_000 * day + 9), post("b", 20_001 * day)];
        let files = write_posts(lake.path(), "1-0_3-0.parquet", posts).unwrap();
        assert_eq!(files.len(), 2);
        assert_eq!(files.iter().map(|f| f.rows).sum::<usize>(), 3);
        assert!(files[0].path.ends_with("posts/date=2024-10-04/1-0_3-0.parquet"), "{:?}", files[0].path);

        let reader = SerializedFileReader::new(File::open(&files[0].path).unwrap()).unwrap();
        assert_eq!(reader.metadata().file_metadata().num_rows(), 2);
        let leftovers: Vec<_> = fs::read_dir(files[0].path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.starts_with('.') && crate::rollup::data_file_of(n).is_none())
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
        assert!(crate::rollup::has_rollups(&files[0].path) && crate::rollup::has_rollups(&files[1].path));
    }

    #[test]
    fn authors_get_a_dictionary_only_where_they_repeat() {
        let lake = tempfile::tempdir().unwrap();
        let file = |name: &str, authors: usize| {
            // Batches as small as a compaction's, so that the look spans several.
            let mut pending = PendingFile::create(&lake.path().join(name), Post::schema()).unwrap();
            let posts: Vec<Post> = (0..20_000)
                .map(|n| {
                    let (did, rkey) = (format!("did:plc:{:024}", n % authors), format!("{n:07}"));
                    let uri = crate::model::post_uri(&did, &rkey);
                    Post { did, uri, ..post(&rkey, n as i64) }
                })
                .collect();
            for chunk in posts.chunks(2_048) {
                pending.write(&Post::to_batch(chunk).unwrap()).unwrap();
            }
            pending.finish().unwrap();
            let reader = SerializedFileReader::new(File::open(lake.path().join(name)).unwrap()).unwrap();
            let did = Post::schema().index_of("did").unwrap();
            let groups = reader.metadata().row_groups();
            assert_eq!(groups.iter().map(|g| g.num_rows()).sum::<i64>(), 20_000);
            let dictionaries: Vec<bool> =
                groups.iter().map(|g| g.column(did).dictionary_page_offset().is_some()).collect();
            dictionaries
        };
        // Two in three distinct: the most that still gets one.
        assert_eq!(file("repeating.parquet", 10_922), [true, true]);
        assert_eq!(file("near-unique.parquet", 10_923), [false, false]);
        assert_eq!(file("one-each.parquet", 20_000), [false, false]);
    }

    #[test]
    fn a_batch_is_cut_into_row_groups_of_row_group_rows() {
        let lake = tempfile::tempdir().unwrap();
        let rows = BATCH_ROWS + 1_000;
        let posts = (0..rows).map(|n| post(&format!("{n:07}"), n as i64)).collect();
        let files = write_posts(lake.path(), "x.parquet", posts).unwrap();
        let reader = SerializedFileReader::new(File::open(&files[0].path).unwrap()).unwrap();
        let groups: Vec<i64> = reader.metadata().row_groups().iter().map(|g| g.num_rows()).collect();
        let full = BATCH_ROWS / ROW_GROUP_ROWS;
        assert_eq!(groups.len(), full + 1, "{groups:?}");
        assert!(groups[..full].iter().all(|n| *n == ROW_GROUP_ROWS as i64), "{groups:?}");
        assert_eq!(groups[full], 1_000);
    }

    /// Interactions are sorted by actor, not their time, so the likes a batch of undos names
    /// sit in a few row groups; their rollup of subjects is sorted by subject, and counts them,
    /// and their rollup by author holds the same counts sorted by the subject's author.
    #[test]
    fn interactions_files_are_sorted_by_actor_and_their_subjects_by_subject_and_author() {
        use crate::model::{Interaction, InteractionKind};
        let lake = tempfile::tempdir().unwrap();
        let day = 1_700_000_000_000_000_i64;
        let rows: Vec<Interaction> = (0..500_i64)
            .map(|n| Interaction {
                did: format!("did:plc:u{}", n % 7),
                kind: InteractionKind::Like,
                rkey: format!("l{n:04}"),
                subject_did: format!("did:plc:a{}", n % 3),
                subject_rkey: format!("s{:03}", (n * 7919) % 101),
                created_at_us: day + n,
                indexed_at_us: day + n,
            })
            .collect();
        let files = write_rows(lake.path(), "x.parquet", rows).unwrap();
        let connection = duckdb::Connection::open_in_memory().unwrap();
        let read = |sql: &str| -> Vec<(String, String, i64)> {
            let mut statement = connection.prepare(sql).unwrap();
            statement
                .query_map([], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))
                .unwrap()
                .map(Result::unwrap)
                .collect()
        };
        let rows = read(&format!("SELECT did, rkey, 1 FROM '{}'", files[0].path.display()));
        let mut sorted = rows.clone();
        sorted.sort();
        assert_eq!(rows.len(), 500);
        assert_eq!(rows, sorted);
        let subjects = crate::rollup::path_for(&files[0].path, crate::rollup::Kind::Subjects);
        let counted = read(&format!(
            "SELECT kind, subject_rkey || ' ' || subject_did, n FROM read_parquet('{}')",
            subjects.display()
        ));
        // Per (author, key) of the subject, counted apart.
        let mut expected = std::collections::BTreeMap::new();
        for n in 0..500_i64 {
            *expected.entry((format!("did:plc:a{}", n % 3), format!("s{:03}", (n * 7919) % 101))).or_insert(0_i64) += 1;
        }
        let by_key: std::collections::BTreeMap<String, i64> =
            expected.iter().map(|((did, rkey), n)| (format!("{rkey} {did}"), *n)).collect();
        let by_key: Vec<(String, String, i64)> =
            by_key.into_iter().map(|(subject, n)| ("like".to_owned(), subject, n)).collect();
        assert_eq!(counted, by_key, "one row per subject, by key, counting its likes");
        let received = crate::rollup::path_for(&files[0].path, crate::rollup::Kind::Received);
        let counted = read(&format!(
            "SELECT kind, subject_did || ' ' || subject_rkey, n FROM read_parquet('{}')",
            received.display()
        ));
        let by_author: Vec<(String, String, i64)> =
            expected.into_iter().map(|((did, rkey), n)| ("like".to_owned(), format!("{did} {rkey}"), n)).collect();
        assert!(by_author.len() > 101, "a key liked on two authors' posts is two subjects");
        assert_eq!(counted, by_author, "the same rows, by author");
    }

    #[test]
    fn rewriting_the_same_name_replaces_the_file() {
        let lake = tempfile::tempdir().unwrap();
        let first = write_posts(lake.path(), "x.parquet", vec![post("a", 1), post("b", 2)]).unwrap();
        let second = write_posts(lake.path(), "x.parquet", vec![post("a", 1), post("b", 2)]).unwrap();
        assert_eq!(first[0].path, second[0].path);
        let names = fs::read_dir(first[0].path.parent().unwrap()).unwrap().count();
        assert_eq!(names, 1 + crate::rollup::Kind::POSTS.len(), "the file and its rollups");
    }
}
