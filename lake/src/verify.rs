//! `skyglass lake verify`: checks every data file of every table from its footer alone, and
//! reports what is wrong without changing anything.
//!
//! For each file: the footer reads, the row groups add up to the file's row count, the schema
//! is the table's (every column, by name and type), and the row-group statistics of the
//! partition timestamp put every row in the file's day; a `posts` file's text index and
//! rollups hold as many posts as it does. Around the files: partition
//! directories that are not a day, files that are not data files (a temporary file a crash
//! left, a stray), staging directories of a rewrite cut short, and the catalog.

use std::fs::{self, File};
use std::path::{Path, PathBuf};

use arrow::datatypes::SchemaRef;
use chrono::NaiveDate;
use parquet::arrow::arrow_reader::{ArrowReaderMetadata, ArrowReaderOptions};
use parquet::file::statistics::Statistics;

use crate::error::{Error, Result};
use crate::model::{AccountEvent, Delete, Interaction, InteractionDelete, Post, TableRow};
use crate::{catalog, layout};

/// How bad a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    /// Harmless but worth knowing (left by a crash; the next write or rewrite cleans it).
    Warning,
    /// Wrong data: queries may fail or answer wrongly until it is repaired.
    Error,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub severity: Severity,
    pub path: PathBuf,
    pub what: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Verified {
    pub tables: usize,
    pub partitions: usize,
    pub files: usize,
    pub rows: u64,
    pub bytes: u64,
    pub findings: Vec<Finding>,
}

impl Verified {
    pub fn errors(&self) -> usize {
        self.findings.iter().filter(|f| f.severity == Severity::Error).count()
    }
}

/// A table: its directory, schema and the column whose UTC day is a row's partition.
struct Table {
    name: &'static str,
    schema: SchemaRef,
    time_column: &'static str,
}

fn tables() -> [Table; 5] {
    fn table<R: TableRow>(time_column: &'static str) -> Table {
        Table { name: R::TABLE, schema: R::schema(), time_column }
    }
    [
        table::<Post>("created_at"),
        table::<Delete>("deleted_at"),
        table::<AccountEvent>("seen_at"),
        table::<Interaction>("created_at"),
        table::<InteractionDelete>("deleted_at"),
    ]
}

/// Verifies the whole lake. Only a lake that cannot be listed at all is an `Err`; everything
/// else wrong is a finding.
pub fn verify(lake: &Path) -> Result<Verified> {
    let mut report = Verified::default();
    if let Err(e) = catalog::read_state(lake) {
        report.findings.push(Finding {
            severity: Severity::Error,
            path: layout::catalog_dir(lake),
            what: format!("the catalog does not read: {e}"),
        });
    }
    for table in tables() {
        let dir = layout::table_dir(lake, table.name);
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(Error::Io { action: "list", path: dir, source: e }),
        };
        report.tables += 1;
        let mut entries: Vec<_> = entries.collect::<std::io::Result<_>>().map_err(Error::io("list", &dir))?;
        entries.sort_by_key(|e| e.file_name());
        for entry in entries {
            let (name, path) = (entry.file_name().to_string_lossy().into_owned(), entry.path());
            match layout::parse_partition_name(&name) {
                Some(date) if path.is_dir() => {
                    report.partitions += 1;
                    verify_partition(&table, &path, date, &mut report)?;
                }
                _ if name.starts_with('.') && name.ends_with(".staging") => report.findings.push(Finding {
                    severity: Severity::Warning,
                    path,
                    what: "the staging directory of a rewrite or compaction cut short (the next one removes it)"
                        .to_owned(),
                }),
                _ => report.findings.push(Finding {
                    severity: Severity::Warning,
                    path,
                    what: "not a day partition (date=YYYY-MM-DD): no query reads it".to_owned(),
                }),
            }
        }
    }
    Ok(report)
}

fn verify_partition(table: &Table, dir: &Path, date: NaiveDate, report: &mut Verified) -> Result<()> {
    let mut entries: Vec<_> = fs::read_dir(dir)
        .map_err(Error::io("list", dir))?
        .collect::<std::io::Result<_>>()
        .map_err(Error::io("list", dir))?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let (name, path) = (entry.file_name().to_string_lossy().into_owned(), entry.path());
        if let Some(data) = name.strip_prefix('.').and_then(|n| n.strip_suffix(".textindex")) {
            if let Some(what) = index_problem(&path, &dir.join(data)) {
                report.findings.push(Finding { severity: Severity::Warning, path, what });
            }
            continue;
        }
        if let Some(data) = crate::rollup::data_file_of(&name) {
            if let Some((severity, what)) = rollup_problem(&path, &dir.join(data)) {
                report.findings.push(Finding { severity, path, what });
            }
            continue;
        }
        if !layout::is_data_file(&name) {
            let what = if name.starts_with('.') && name.ends_with(".tmp") {
                "a temporary file a crash left (no query reads it)"
            } else {
                "not a data file: no query reads it"
            };
            report.findings.push(Finding { severity: Severity::Warning, path, what: what.to_owned() });
            continue;
        }
        report.files += 1;
        report.bytes += entry.metadata().map_err(Error::io("stat", &path))?.len();
        match verify_file(table, &path, date) {
            Ok(rows) => {
                report.rows += rows;
                if !crate::rollup::has_rollups(&path) {
                    let what = "no rollups: queries read its rows one by one (`skyglass lake rollup` builds them)";
                    report.findings.push(Finding { severity: Severity::Warning, path, what: what.to_owned() });
                }
            }
            Err(what) => report.findings.push(Finding { severity: Severity::Error, path, what }),
        }
    }
    Ok(())
}

/// What is wrong with the text index `index` of the data file `data`, if anything: queries
/// would not use it, so it is a warning that `skyglass lake reindex` mends.
fn index_problem(index: &Path, data: &Path) -> Option<String> {
    if !data.exists() {
        return Some("a text index whose data file is gone (`skyglass lake reindex` removes it)".into());
    }
    let opened = crate::textindex::TextIndex::open(index);
    let (posts, current) = match opened.and_then(|i| Ok((i.posts()?, i.is_current()))) {
        Ok(counted) => counted,
        Err(e) => {
            return Some(format!(
                "the text index does not open ({e}); `skyglass lake reindex --rebuild` builds it again"
            ));
        }
    };
    let rows = File::open(data)
        .ok()
        .and_then(|file| ArrowReaderMetadata::load(&file, ArrowReaderOptions::new()).ok())
        .map(|m| m.metadata().file_metadata().num_rows() as u64)?;
    if posts != rows {
        return Some(format!(
            "the text index holds {posts} posts, its data file {rows}; `skyglass lake reindex --rebuild` builds it again"
        ));
    }
    (!current).then(|| {
        "the text index is in an older format, in which word searches look inside its terms (slower); \
         `skyglass lake reindex` builds it again"
            .into()
    })
}

/// What is wrong with the rollup `rollup` of the data file `data`, if anything: an orphan is
/// harmless, a rollup that counts other than its file's posts gives wrong answers.
fn rollup_problem(rollup: &Path, data: &Path) -> Option<(Severity, String)> {
    use arrow::array::AsArray;
    use arrow::datatypes::Int64Type;
    use parquet::arrow::ProjectionMask;
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

    if !data.exists() {
        return Some((
            Severity::Warning,
            "a rollup whose data file is gone (`skyglass lake rollup` removes it)".into(),
        ));
    }
    let rebuild = "`skyglass lake rollup --rebuild` builds it again";
    let kind = rollup.file_name().and_then(|n| crate::rollup::Kind::of_sidecar(&n.to_string_lossy()));
    let counted = (|| -> std::result::Result<i64, String> {
        let file = File::open(rollup).map_err(|e| e.to_string())?;
        let builder = ParquetRecordBatchReaderBuilder::try_new(file).map_err(|e| e.to_string())?;
        if kind.is_some_and(|kind| !kind.has_counts()) {
            // One row per post.
            return Ok(builder.metadata().file_metadata().num_rows());
        }
        let mask = ProjectionMask::columns(builder.parquet_schema(), ["n"]);
        let mut total = 0;
        for batch in builder.with_projection(mask).build().map_err(|e| e.to_string())? {
            let batch = batch.map_err(|e| e.to_string())?;
            let n = batch.column(0).as_primitive_opt::<Int64Type>().ok_or("column `n` is not BIGINT")?;
            total += n.iter().flatten().sum::<i64>();
        }
        Ok(total)
    })();
    let counted = match counted {
        Ok(counted) => counted,
        Err(e) => return Some((Severity::Error, format!("the rollup does not read ({e}); {rebuild}"))),
    };
    // The rows its row groups hold (a footer that counts otherwise is the data file's error).
    let rows: i64 = File::open(data)
        .ok()
        .and_then(|file| ArrowReaderMetadata::load(&file, ArrowReaderOptions::new()).ok())
        .map(|m| m.metadata().row_groups().iter().map(|g| g.num_rows()).sum())?;
    // Cells and author counts count each post once, and keys hold it once; a tag rollup counts
    // it once per tag, so only that it reads.
    let once = kind.is_some_and(crate::rollup::Kind::counts_each_post_once);
    (once && counted != rows)
        .then(|| (Severity::Error, format!("the rollup counts {counted} posts, its data file holds {rows}; {rebuild}")))
}

/// Checks one data file from its footer; its row count, or what is wrong.
fn verify_file(table: &Table, path: &Path, date: NaiveDate) -> std::result::Result<u64, String> {
    let file = File::open(path).map_err(|e| format!("does not open: {e}"))?;
    let metadata = ArrowReaderMetadata::load(&file, ArrowReaderOptions::new())
        .map_err(|e| format!("the Parquet footer does not read: {e}"))?;
    let parquet = metadata.metadata();
    let rows = parquet.file_metadata().num_rows();
    let group_rows: i64 = parquet.row_groups().iter().map(|g| g.num_rows()).sum();
    if rows != group_rows {
        return Err(format!("the footer counts {rows} rows but its row groups hold {group_rows}"));
    }

    let schema = metadata.schema();
    for expected in table.schema.fields() {
        match schema.field_with_name(expected.name()) {
            Err(_) => return Err(format!("column `{}` is missing", expected.name())),
            Ok(found) if found.data_type() != expected.data_type() => {
                return Err(format!(
                    "column `{}` is {} where the {} table has {}",
                    expected.name(),
                    found.data_type(),
                    table.name,
                    expected.data_type()
                ));
            }
            Ok(_) => {}
        }
    }
    // A posts file written before uris were made from `did` and `rkey` still has its `uri`,
    // which readers leave unread (a compaction drops it).
    let legacy = |name: &str| table.name == layout::POSTS_TABLE && name == "uri";
    let extra: Vec<&str> = schema
        .fields()
        .iter()
        .map(|f| f.name().as_str())
        .filter(|name| table.schema.field_with_name(name).is_err() && !legacy(name))
        .collect();
    if !extra.is_empty() {
        return Err(format!("columns the {} table does not have: {}", table.name, extra.join(", ")));
    }

    for (index, group) in parquet.row_groups().iter().enumerate() {
        let column = group.columns().iter().find(|c| c.column_path().string() == table.time_column);
        let Some(Statistics::Int64(stats)) = column.and_then(|c| c.statistics()) else {
            return Err(format!("row group {index} has no statistics for `{}`", table.time_column));
        };
        let (Some(min), Some(max)) = (stats.min_opt(), stats.max_opt()) else {
            if group.num_rows() == 0 {
                continue;
            }
            return Err(format!("row group {index} has no min and max for `{}`", table.time_column));
        };
        let (first, last) = (layout::date_of_micros(*min), layout::date_of_micros(*max));
        if first != date || last != date {
            return Err(format!(
                "row group {index} holds `{}` from {first} to {last}, outside its partition's day {date}",
                table.time_column
            ));
        }
    }
    Ok(u64::try_from(rows).unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::writer;

    const DAY: i64 = 86_400_000_000;

    fn post(n: i64) -> Post {
        Post {
            uri: format!("at://did:plc:a/app.bsky.feed.post/{n}"),
            did: "did:plc:a".into(),
            rkey: n.to_string(),
            created_at_us: 20_000 * DAY + n,
            ..Post::default()
        }
    }

    #[test]
    fn a_healthy_lake_verifies_clean_with_its_counts() {
        let lake = tempfile::tempdir().unwrap();
        writer::write_posts(lake.path(), "a.parquet", (0..10).map(post).collect()).unwrap();
        writer::write_posts(lake.path(), "b.parquet", (0..5).map(|n| post(n + DAY)).collect()).unwrap();
        let delete = Delete { uri: post(1).uri, did: "did:plc:a".into(), deleted_at_us: 20_001 * DAY };
        writer::write_rows(lake.path(), "d.parquet", vec![delete]).unwrap();
        let day = layout::partition_dir(lake.path(), layout::POSTS_TABLE, layout::date_of_micros(20_000 * DAY));
        crate::textindex::build_for_file(&day.join("a.parquet")).unwrap();
        let report = verify(lake.path()).unwrap();
        assert_eq!(report.findings, vec![]);
        assert_eq!((report.tables, report.partitions, report.files, report.rows), (2, 3, 3, 16));
        assert!(report.bytes > 0);
    }

    #[test]
    fn every_kind_of_damage_is_found_and_nothing_is_changed() {
        let lake = tempfile::tempdir().unwrap();
        writer::write_posts(lake.path(), "good.parquet", (0..10).map(post).collect()).unwrap();
        let day = layout::partition_dir(lake.path(), layout::POSTS_TABLE, layout::date_of_micros(20_000 * DAY));
        // A file moved into the wrong day.
        writer::write_posts(lake.path(), "moved.parquet", (0..3).map(|n| post(n + 3 * DAY)).collect()).unwrap();
        let moved_from = layout::partition_dir(lake.path(), layout::POSTS_TABLE, layout::date_of_micros(20_003 * DAY));
        // A text index of 3 posts beside a file of 10, and one whose file is gone.
        crate::textindex::build_for_file(&moved_from.join("moved.parquet")).unwrap();
        fs::rename(moved_from.join(".moved.parquet.textindex"), day.join(".good.parquet.textindex")).unwrap();
        fs::create_dir(day.join(".gone.parquet.textindex")).unwrap();
        fs::rename(moved_from.join("moved.parquet"), day.join("moved.parquet")).unwrap();
        // Its rollups move with it: the cells and keys of 3 posts over those of the file of 10,
        // the tag and domain counts beside it, and a tag rollup whose file is gone.
        let rollup = |dir: &Path, name: &str, kind| crate::rollup::path_for(&dir.join(name), kind);
        use crate::rollup::Kind;
        fs::rename(rollup(&moved_from, "moved.parquet", Kind::Cells), rollup(&day, "good.parquet", Kind::Cells))
            .unwrap();
        fs::rename(rollup(&moved_from, "moved.parquet", Kind::Keys), rollup(&day, "good.parquet", Kind::Keys)).unwrap();
        fs::rename(rollup(&moved_from, "moved.parquet", Kind::Tags), rollup(&day, "moved.parquet", Kind::Tags))
            .unwrap();
        fs::rename(rollup(&moved_from, "moved.parquet", Kind::Domains), rollup(&day, "moved.parquet", Kind::Domains))
            .unwrap();
        fs::rename(
            rollup(&moved_from, "moved.parquet", Kind::TagAuthors),
            rollup(&day, "moved.parquet", Kind::TagAuthors),
        )
        .unwrap();
        fs::copy(rollup(&day, "moved.parquet", Kind::Tags), rollup(&day, "gone.parquet", Kind::Tags)).unwrap();
        fs::remove_file(rollup(&moved_from, "moved.parquet", Kind::Authors)).unwrap();
        fs::remove_dir(&moved_from).unwrap();
        // A truncated file, a deletes file among the posts, a temporary file and a stray.
        let good = fs::read(day.join("good.parquet")).unwrap();
        fs::write(day.join("cut.parquet"), &good[..good.len() / 2]).unwrap();
        let delete = Delete { uri: "at://x".into(), did: "did:plc:a".into(), deleted_at_us: 20_000 * DAY };
        writer::write_rows(lake.path(), "d.parquet", vec![delete]).unwrap();
        let deletes_day =
            layout::partition_dir(lake.path(), layout::DELETES_TABLE, layout::date_of_micros(20_000 * DAY));
        fs::copy(deletes_day.join("d.parquet"), day.join("wrong-table.parquet")).unwrap();
        fs::write(day.join(".half.parquet.tmp"), b"half").unwrap();
        fs::create_dir(lake.path().join("posts/.date=2024-10-04.staging")).unwrap();
        fs::create_dir(lake.path().join("posts/backup")).unwrap();

        let listing = |dir: &Path| {
            let mut names: Vec<String> =
                fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
            names.sort();
            names
        };
        let before = listing(&day);
        let report = verify(lake.path()).unwrap();
        assert_eq!(listing(&day), before, "verify changed the partition");

        let found = |name: &str| {
            report
                .findings
                .iter()
                .find(|f| f.path.file_name().is_some_and(|n| n == name))
                .unwrap_or_else(|| panic!("nothing found for {name}: {:#?}", report.findings))
        };
        assert!(found("moved.parquet").what.contains("outside its partition's day"), "{:?}", found("moved.parquet"));
        assert!(found("cut.parquet").what.contains("footer"), "{:?}", found("cut.parquet"));
        assert!(found("wrong-table.parquet").what.contains("missing"), "{:?}", found("wrong-table.parquet"));
        assert_eq!(found(".half.parquet.tmp").severity, Severity::Warning);
        assert_eq!(found(".date=2024-10-04.staging").severity, Severity::Warning);
        assert_eq!(found("backup").severity, Severity::Warning);
        let mismatched = found(".good.parquet.textindex");
        assert!(mismatched.what.contains("holds 3 posts, its data file 10"), "{mismatched:?}");
        assert_eq!(mismatched.severity, Severity::Warning);
        assert!(found(".gone.parquet.textindex").what.contains("data file is gone"));
        let miscounted = found(".good.parquet.cells");
        assert!(miscounted.what.contains("counts 3 posts, its data file holds 10"), "{miscounted:?}");
        assert_eq!(miscounted.severity, Severity::Error);
        let short = found(".good.parquet.keys");
        assert!(short.what.contains("counts 3 posts, its data file holds 10"), "{short:?}");
        assert_eq!(short.severity, Severity::Error);
        assert_eq!(found(".gone.parquet.tags").severity, Severity::Warning);
        assert_eq!(report.errors(), 5, "{:#?}", report.findings);
        assert!(report.findings.iter().all(|f| f.path.file_name() != Some("good.parquet".as_ref())));
    }

    /// Every file under `dir` with its bytes, to show that verify changed nothing.
    fn contents(dir: &Path) -> std::collections::BTreeMap<PathBuf, Vec<u8>> {
        let mut files = std::collections::BTreeMap::new();
        for entry in fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                files.extend(contents(&path));
            } else {
                files.insert(path.clone(), fs::read(&path).unwrap());
            }
        }
        files
    }

    /// The one finding of a lake whose only damage is `path`, which must be an error.
    fn only_error_about(lake: &Path, path: &Path) -> String {
        let before = contents(lake);
        let report = verify(lake).unwrap();
        assert_eq!(contents(lake), before, "verify changed the lake");
        assert_eq!(report.errors(), 1, "{:#?}", report.findings);
        let finding = &report.findings[0];
        assert_eq!((finding.severity, finding.path.as_path()), (Severity::Error, path), "{finding:?}");
        finding.what.clone()
    }

    /// The parquet crate's writer always counts a footer's rows from its row groups, so the
    /// footer is edited by hand: its `num_rows` (field 3 of the Thrift `FileMetaData`, the first
    /// field of type i64 after the schema, before the row groups repeat the count) is raised.
    #[test]
    fn a_footer_whose_row_groups_do_not_add_up_is_reported() {
        let lake = tempfile::tempdir().unwrap();
        let written = writer::write_posts(lake.path(), "counted.parquet", (0..10).map(post).collect()).unwrap();
        let path = written[0].path.clone();
        let mut bytes = fs::read(&path).unwrap();
        let footer_len = u32::from_le_bytes(bytes[bytes.len() - 8..bytes.len() - 4].try_into().unwrap()) as usize;
        let footer_start = bytes.len() - 8 - footer_len;
        // Compact protocol: field header 0x16 (id + 1, i64), then the zigzag varint of 10 (20).
        let at = bytes[footer_start..].windows(2).position(|w| w == [0x16, 20]).expect("the footer's row count")
            + footer_start;
        bytes[at + 1] = 30; // 15 rows
        fs::write(&path, &bytes).unwrap();
        let reread = ArrowReaderMetadata::load(&File::open(&path).unwrap(), ArrowReaderOptions::new()).unwrap();
        assert_eq!(reread.metadata().file_metadata().num_rows(), 15, "the edit hit the file's count");

        let what = only_error_about(lake.path(), &path);
        assert_eq!(what, "the footer counts 15 rows but its row groups hold 10");
    }

    #[test]
    fn a_column_of_the_wrong_type_is_reported() {
        use arrow::array::{ArrayRef, Int64Array, RecordBatch};
        use arrow::datatypes::{DataType, Field, Schema};
        use parquet::arrow::ArrowWriter;
        use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

        let lake = tempfile::tempdir().unwrap();
        let written = writer::write_posts(lake.path(), "typed.parquet", (0..10).map(post).collect()).unwrap();
        let path = written[0].path.clone();
        // The same rows with `text` as INT64.
        let reader = ParquetRecordBatchReaderBuilder::try_new(File::open(&path).unwrap()).unwrap().build().unwrap();
        let batches: Vec<RecordBatch> = reader.map(|b| b.unwrap()).collect();
        let schema = batches[0].schema();
        let text = schema.index_of("text").unwrap();
        let mut fields: Vec<Field> = schema.fields().iter().map(|f| f.as_ref().clone()).collect();
        fields[text] = Field::new("text", DataType::Int64, false);
        let wrong = std::sync::Arc::new(Schema::new(fields));
        let mut file = ArrowWriter::try_new(File::create(&path).unwrap(), wrong.clone(), None).unwrap();
        for batch in batches {
            let mut columns: Vec<ArrayRef> = batch.columns().to_vec();
            columns[text] = std::sync::Arc::new(Int64Array::from(vec![7; batch.num_rows()]));
            file.write(&RecordBatch::try_new(wrong.clone(), columns).unwrap()).unwrap();
        }
        file.close().unwrap();

        let what = only_error_about(lake.path(), &path);
        assert_eq!(what, "column `text` is Int64 where the posts table has Utf8");
    }
}
