//! `topHashtags` with authors: each top tag's distinct live authors, counted here from the
//! rollups of tag authors of the whole days in range (`.NAME.tagauthors`: a file's rows per
//! hashtag and author, sorted by tag and author) and the rows the statements add to them (the
//! dead rows', negative, and the posts outside those days, one each).
//!
//! DuckDB took 1.2 s over a month (180 files, 4.4 M rows of the top ten tags among 17 M),
//! grouping by 32-byte DIDs: here a `did:plc:` DID is its 120 bits, the files are read and
//! each tag's rows sorted and summed by author on the engine's threads. A tag's rows lie among
//! those of the tail of tags between them in byte order; the rollups' row groups of 2,048 rows
//! leave most of the tail's unread (40 of 95 thousand rows read per file for the top ten tags).
//! Each file's rows of a tag come sorted by author, and a [`PlcId`] sorts as its DID: a
//! tag's rows are a run per file, which a stable sort merges (a month: 180 runs).

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use arrow::array::{Array, AsArray};
use arrow::datatypes::Int64Type;
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::file::statistics::Statistics;

use super::pages::on_threads;
use crate::error::{Error, Result};

/// A `did:plc:` DID's 24 base-32 characters as two numbers of 60 bits (12 characters each),
/// each character's digit in the characters' byte order, so that ids sort as their DIDs.
type PlcId = (u64, u64);

/// The rows of one tag: `(author, n)`, a `did:plc:` DID by its [`PlcId`], any other by its text.
#[derive(Debug, Default)]
struct TagRows {
    plc: Vec<(PlcId, i64)>,
    other: Vec<(Box<str>, i64)>,
}

impl TagRows {
    fn push(&mut self, did: &str, n: i64) {
        match plc_id(did) {
            Some(id) => self.plc.push((id, n)),
            None => self.other.push((did.into(), n)),
        }
    }

    fn len(&self) -> usize {
        self.plc.len() + self.other.len()
    }

    /// The rows of `parts`, in their order.
    fn concat(parts: Vec<Arc<TagRows>>) -> TagRows {
        let mut all = TagRows {
            plc: Vec::with_capacity(parts.iter().map(|part| part.plc.len()).sum()),
            other: Vec::with_capacity(parts.iter().map(|part| part.other.len()).sum()),
        };
        for part in &parts {
            all.plc.extend_from_slice(&part.plc);
            all.other.extend_from_slice(&part.other);
        }
        all
    }

    /// How many authors have a positive sum of `n`.
    fn live_authors(mut self) -> u64 {
        live(&mut self.plc) + live(&mut self.other)
    }
}

fn live<K: Ord>(rows: &mut [(K, i64)]) -> u64 {
    // Stable: it finds the files' sorted runs and merges them.
    rows.sort_by(|a, b| a.0.cmp(&b.0));
    rows.chunk_by(|a, b| a.0 == b.0).filter(|author| author.iter().map(|(_, n)| n).sum::<i64>() > 0).count() as u64
}

/// The [`PlcId`] of a `did:plc:` DID (24 characters of `a-z2-7`), or `None` for another.
fn plc_id(did: &str) -> Option<PlcId> {
    let id = did.strip_prefix("did:plc:")?.as_bytes();
    if id.len() != 24 {
        return None;
    }
    // Without a branch a character: this runs for millions of rows.
    let half = |chars: &[u8]| {
        let (mut bits, mut invalid) = (0_u64, 0_u8);
        for &c in chars {
            let digit = BASE32[usize::from(c)];
            invalid |= digit;
            bits = bits << 5 | u64::from(digit & 31);
        }
        (invalid & !31 == 0).then_some(bits)
    };
    Some((half(&id[..12])?, half(&id[12..])?))
}

/// Each byte's value as a base-32 digit of a `did:plc:` (`2-7a-z`, in byte order), or 255.
const BASE32: [u8; 256] = {
    let mut table = [255_u8; 256];
    let mut digit = 0;
    while digit < 32 {
        let c = if digit < 6 { b'2' + digit } else { b'a' + digit - 6 };
        table[c as usize] = digit;
        digit += 1;
    }
    table
};

/// Rows of tags kept between requests ([`Kept`]), at most: about 300 MB. A month's top ten
/// tags hold 4.4 M.
const KEPT_ROWS: usize = 12_000_000;

/// The rows of tags read from the rollups of tag authors, kept between requests by data file
/// and tag: the top tags are asked again and again, over ranges of mostly the same days, and
/// reading them is most of the time (a month: 0.55 to 0.7 s of 1 s). A rollup is replaced,
/// never changed, so one is known by its inode, size and time of change; past [`KEPT_ROWS`]
/// all are forgotten, and a file's when a snapshot no longer lists it.
#[derive(Default)]
pub(super) struct Kept(Mutex<KeptRows>);

/// A rollup's inode, size and time of change (seconds and nanoseconds).
type Stamp = (u64, u64, i64, i64);

#[derive(Default)]
struct KeptRows {
    /// By data file: its rollup's [`Stamp`], and the rows of each tag read from it.
    by_file: HashMap<PathBuf, (Stamp, HashMap<String, Arc<TagRows>>)>,
    rows: usize,
}

impl Kept {
    /// Forgets the files `listed` does not hold.
    pub(super) fn keep(&self, listed: &std::collections::HashSet<&PathBuf>) {
        let mut kept = self.0.lock().unwrap_or_else(|p| p.into_inner());
        kept.by_file.retain(|path, _| listed.contains(path));
        kept.rows = kept.by_file.values().flat_map(|(_, by_tag)| by_tag.values()).map(|rows| rows.len()).sum();
    }

    /// The rows of `tags` in the rollup of tag authors of the data file `path`, in `tags`'
    /// order: kept ones, the others read (and kept).
    fn rows_of(&self, path: &Path, tags: &[String]) -> Result<Vec<Arc<TagRows>>> {
        use std::os::unix::fs::MetadataExt;
        let rollup = crate::rollup::path_for(path, crate::rollup::Kind::TagAuthors);
        let stat = std::fs::metadata(&rollup).map_err(Error::io("stat", &rollup))?;
        let stamp: Stamp = (stat.ino(), stat.size(), stat.ctime(), stat.ctime_nsec());
        let mut found: Vec<Option<Arc<TagRows>>> = {
            let kept = self.0.lock().unwrap_or_else(|p| p.into_inner());
            match kept.by_file.get(path) {
                Some((known, by_tag)) if *known == stamp => tags.iter().map(|tag| by_tag.get(tag).cloned()).collect(),
                _ => vec![None; tags.len()],
            }
        };
        let missing: Vec<String> =
            tags.iter().zip(&found).filter(|(_, rows)| rows.is_none()).map(|(tag, _)| tag.clone()).collect();
        if missing.is_empty() {
            return Ok(found.into_iter().flatten().collect());
        }
        let mut sorted: Vec<&str> = missing.iter().map(String::as_str).collect();
        sorted.sort_unstable();
        let read: Vec<Arc<TagRows>> = read_file(&rollup, &missing, &sorted)?.into_iter().map(Arc::new).collect();
        let mut kept = self.0.lock().unwrap_or_else(|p| p.into_inner());
        // A replaced rollup's rows go, and leave the count.
        let stale = match kept.by_file.get(path) {
            Some((known, by_tag)) if *known != stamp => Some(by_tag.values().map(|rows| rows.len()).sum::<usize>()),
            _ => None,
        };
        if let Some(stale) = stale {
            kept.rows = kept.rows.saturating_sub(stale);
            kept.by_file.remove(path);
        }
        let adding: usize = read.iter().map(|rows| rows.len()).sum();
        if kept.rows + adding > KEPT_ROWS {
            *kept = KeptRows::default();
        }
        kept.rows += adding;
        let entry = kept.by_file.entry(path.to_path_buf()).or_insert_with(|| (stamp, HashMap::new()));
        let mut read = missing.into_iter().zip(read);
        for slot in found.iter_mut().filter(|rows| rows.is_none()) {
            if let Some((tag, rows)) = read.next() {
                entry.1.insert(tag, rows.clone());
                *slot = Some(rows);
            }
        }
        Ok(found.into_iter().flatten().collect())
    }
}

/// How many of each of `tags`' authors have a positive sum of `n` over the rollups of tag
/// authors beside `files` and `rest` (`(tag, did, n)`), in `tags`' order. Files are read (or
/// their rows taken from `kept`), and tags counted, on `threads` threads.
pub(super) fn count(
    threads: usize,
    kept: &Kept,
    files: &[PathBuf],
    tags: &[String],
    rest: Vec<(String, String, i64)>,
) -> Result<Vec<u64>> {
    let read = on_threads(threads, files, |path| kept.rows_of(path, tags));
    // Each tag's rows: a part per file and one of `rest`, put together on the threads.
    let mut by_tag: Vec<Vec<Arc<TagRows>>> = tags.iter().map(|_| Vec::with_capacity(files.len() + 1)).collect();
    for found in read {
        for (parts, rows) in by_tag.iter_mut().zip(found?) {
            parts.push(rows);
        }
    }
    let mut added: Vec<TagRows> = tags.iter().map(|_| TagRows::default()).collect();
    for (tag, did, n) in rest {
        if let Some(index) = tags.iter().position(|t| *t == tag) {
            added[index].push(&did, n);
        }
    }
    for (parts, rows) in by_tag.iter_mut().zip(added) {
        parts.push(Arc::new(rows));
    }
    let by_tag: Vec<Mutex<Vec<Arc<TagRows>>>> = by_tag.into_iter().map(Mutex::new).collect();
    Ok(on_threads(threads, &by_tag, |parts| {
        TagRows::concat(std::mem::take(&mut *parts.lock().unwrap_or_else(|p| p.into_inner()))).live_authors()
    }))
}

/// The rows of `tags` in the rollup at `path`, by tag (in `tags`' order); `sorted` is `tags` in
/// byte order, to keep the row groups whose range of tags holds one of them.
fn read_file(path: &Path, tags: &[String], sorted: &[&str]) -> Result<Vec<TagRows>> {
    let error = |source| Error::ParquetRead { path: path.to_path_buf(), source };
    let file = File::open(path).map_err(Error::io("open", path))?;
    let builder = ParquetRecordBatchReaderBuilder::try_new(file).map_err(error)?;
    let metadata = builder.metadata().clone();
    let schema = metadata.file_metadata().schema_descr();
    let column = |name: &str| (0..schema.num_columns()).find(|&i| schema.column(i).name() == name);
    let (Some(tag), Some(did), Some(n)) = (column("tag"), column("did"), column("n")) else {
        return Err(error(parquet::errors::ParquetError::General(
            "a rollup of tag authors lacks tag, did or n".into(),
        )));
    };
    let groups: Vec<usize> = (0..metadata.num_row_groups())
        .filter(|&group| match metadata.row_group(group).column(tag).statistics() {
            Some(Statistics::ByteArray(range)) => match (range.min_opt(), range.max_opt()) {
                (Some(min), Some(max)) => {
                    let first = sorted.partition_point(|t| t.as_bytes() < min.data());
                    sorted.get(first).is_some_and(|t| t.as_bytes() <= max.data())
                }
                _ => true,
            },
            _ => true,
        })
        .collect();
    let mut by_tag: Vec<TagRows> = tags.iter().map(|_| TagRows::default()).collect();
    if groups.is_empty() {
        return Ok(by_tag);
    }
    let projection = ProjectionMask::leaves(schema, [tag, did, n]);
    let reader = builder.with_row_groups(groups).with_projection(projection).build().map_err(error)?;
    let position: HashMap<&str, usize> = tags.iter().enumerate().map(|(i, t)| (t.as_str(), i)).collect();
    for batch in reader {
        let batch = batch.map_err(|e| error(e.into()))?;
        let (Some(tag), Some(did), Some(n)) = (
            batch.column_by_name("tag").and_then(|c| c.as_string_opt::<i32>()),
            batch.column_by_name("did").and_then(|c| c.as_string_opt::<i32>()),
            batch.column_by_name("n").and_then(|c| c.as_primitive_opt::<Int64Type>()),
        ) else {
            return Err(error(parquet::errors::ParquetError::General("a rollup of tag authors of other types".into())));
        };
        let mut last: Option<(&str, Option<usize>)> = None;
        for row in 0..batch.num_rows() {
            if tag.is_null(row) || did.is_null(row) {
                continue;
            }
            let this = tag.value(row);
            let index = match last {
                Some((previous, index)) if previous == this => index,
                _ => position.get(this).copied(),
            };
            last = Some((this, index));
            if let Some(index) = index {
                by_tag[index].push(did.value(row), if n.is_null(row) { 1 } else { n.value(row) });
            }
        }
    }
    Ok(by_tag)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plc_did_is_its_120_bits_and_others_their_text() {
        assert_eq!(plc_id("did:plc:222222222222222222222223"), Some((0, 1)));
        assert_eq!(plc_id("did:plc:zzzzzzzzzzzzzzzzzzzzzzzz"), Some(((1 << 60) - 1, (1 << 60) - 1)));
        for other in [
            "did:web:example.com",
            "did:plc:short",
            "did:plc:AAAAAAAAAAAAAAAAAAAAAAAA",
            "did:plc:aaaaaaaaaaaaaaaaaaaaaaaa1",
            "did:plc:aaaaaaaaaaaaaaaaaaaaaaa1",
        ] {
            assert_eq!(plc_id(other), None, "{other}");
        }
        let dids = [
            "did:plc:abcdefghijklmnopqrstuvwx",
            "did:plc:abcdefghijklmnopqrstuvwy",
            "did:plc:7bcdefghijklmnopqrstuvwx",
        ];
        let ids: std::collections::HashSet<PlcId> = dids.iter().filter_map(|d| plc_id(d)).collect();
        assert_eq!(ids.len(), 3);
    }

    #[test]
    fn plc_ids_sort_as_their_dids() {
        let mut dids: Vec<String> = (0..2_000_u64)
            .map(|n| {
                let digits = b"234567abcdefghijklmnopqrstuvwxyz";
                let mut x = n.wrapping_mul(0x9E37_79B9_7F4A_7C15);
                let id: String = (0..24)
                    .map(|_| {
                        x = x.rotate_left(5) ^ n;
                        digits[(x % 32) as usize] as char
                    })
                    .collect();
                format!("did:plc:{id}")
            })
            .collect();
        dids.sort();
        dids.dedup();
        assert!(dids.len() > 1_900);
        let ids: Vec<PlcId> = dids.iter().map(|d| plc_id(d).unwrap()).collect();
        assert!(ids.windows(2).all(|pair| pair[0] < pair[1]), "ids in the DIDs' order, none the same");
    }

    #[test]
    fn an_author_counts_while_their_rows_sum_above_nothing() {
        let (a, b, web) =
            ("did:plc:abcdefghijklmnopqrstuvwx", "did:plc:bbcdefghijklmnopqrstuvwx", "did:web:example.com");
        // `a` posted in two files, one post deleted; `b`'s only post deleted; the web DID live.
        let mut rows = TagRows::default();
        for (did, n) in [(a, 2), (b, 1), (web, 1), (a, 1), (b, -1), (a, -1), (web, 1)] {
            rows.push(did, n);
        }
        assert_eq!(rows.live_authors(), 2);
        let mut gone = TagRows::default();
        gone.push(web, 1);
        gone.push(web, -1);
        assert_eq!(gone.live_authors(), 0);
    }

    /// Writes a rollup of tag authors of `rows` beside the data file `data` (replacing any).
    fn write_rollup(data: &Path, rows: &[(&str, &str, i64)]) {
        use arrow::array::{Int64Array, StringArray};
        use arrow::datatypes::{DataType, Field, Schema};
        let schema = Arc::new(Schema::new(vec![
            Field::new("tag", DataType::Utf8, true),
            Field::new("did", DataType::Utf8, true),
            Field::new("n", DataType::Int64, true),
        ]));
        let batch = arrow::record_batch::RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.0))),
                Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.1))),
                Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.2))),
            ],
        )
        .unwrap();
        let rollup = crate::rollup::path_for(data, crate::rollup::Kind::TagAuthors);
        let fresh = rollup.with_extension("new");
        let mut writer = parquet::arrow::ArrowWriter::try_new(File::create(&fresh).unwrap(), schema, None).unwrap();
        writer.write(&batch).unwrap();
        writer.close().unwrap();
        std::fs::rename(&fresh, &rollup).unwrap();
    }

    #[test]
    fn kept_rows_are_read_once_and_again_when_their_rollup_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("a.parquet");
        let (a, b) = ("did:plc:abcdefghijklmnopqrstuvwx", "did:plc:bbcdefghijklmnopqrstuvwx");
        write_rollup(&data, &[("art", a, 2), ("art", b, 1), ("rust", a, 1)]);
        let kept = Kept::default();
        let tags = ["art".to_owned(), "nba".to_owned()];
        let first = kept.rows_of(&data, &tags).unwrap();
        assert_eq!(first.iter().map(|rows| rows.len()).collect::<Vec<_>>(), [2, 0]);
        let again = kept.rows_of(&data, &tags).unwrap();
        assert!(Arc::ptr_eq(&first[0], &again[0]), "the kept rows, not read again");
        let files = [data.clone()];
        assert_eq!(count(2, &kept, &files, &["rust".to_owned(), "art".to_owned()], Vec::new()).unwrap(), [1, 2]);
        // `b`'s post taken back by a dead row of `rest`.
        let rest = vec![("art".to_owned(), b.to_owned(), -1)];
        assert_eq!(count(2, &kept, &files, &tags, rest).unwrap(), [1, 0]);
        write_rollup(&data, &[("art", a, 1), ("art", "did:web:example.com", 1), ("art", b, 1)]);
        assert_eq!(kept.rows_of(&data, &tags).unwrap()[0].len(), 3, "the new rollup is read");
        kept.keep(&std::collections::HashSet::new());
        assert_eq!(kept.0.lock().unwrap().rows, 0, "a file no snapshot lists is forgotten");
    }
}
