//! `topHashtags` with authors: each top tag's distinct live authors, counted here from the
//! rollups of tag authors of the whole days in range (`.NAME.tagauthors`: a file's rows per
//! hashtag and author, sorted by tag and author) and the rows the statements add to them (the
//! dead rows', negative, and the posts outside those days, one each).
//!
//! DuckDB took 1.2 s over a month (180 files, 4.4 M rows of the top ten tags among 17 M),
//! grouping by 32-byte DIDs: here a `did:plc:` DID is its 120 bits, the files are read and
//! each tag's rows sorted and summed by author on the engine's threads, 0.65 to 0.85 s in all.
//! Most of that is decompressing the rollups' `did` pages: a tag's rows lie among those of
//! the tail of tags between them in byte order, and the rollups have no page index to skip by.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use arrow::array::{Array, AsArray};
use arrow::datatypes::Int64Type;
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::file::statistics::Statistics;

use super::pages::on_threads;
use crate::error::{Error, Result};

/// A `did:plc:` DID's 24 base-32 characters as two numbers of 60 bits (12 characters each).
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

    fn append(&mut self, more: TagRows) {
        self.plc.extend(more.plc);
        self.other.extend(more.other);
    }

    /// How many authors have a positive sum of `n`.
    fn live_authors(mut self) -> u64 {
        live(&mut self.plc) + live(&mut self.other)
    }
}

fn live<K: Ord>(rows: &mut [(K, i64)]) -> u64 {
    rows.sort_unstable_by(|a, b| a.0.cmp(&b.0));
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

/// Each byte's value as a base-32 digit of a `did:plc:` (`a-z2-7`), or 255.
const BASE32: [u8; 256] = {
    let mut table = [255_u8; 256];
    let mut digit = 0;
    while digit < 32 {
        let c = if digit < 26 { b'a' + digit } else { b'2' + digit - 26 };
        table[c as usize] = digit;
        digit += 1;
    }
    table
};

/// How many of each of `tags`' authors have a positive sum of `n` over the rollups of tag
/// authors beside `files` and `rest` (`(tag, did, n)`), in `tags`' order. Files are read, and
/// tags counted, on `threads` threads.
pub(super) fn count(
    threads: usize,
    files: &[PathBuf],
    tags: &[String],
    rest: Vec<(String, String, i64)>,
) -> Result<Vec<u64>> {
    let mut sorted: Vec<&str> = tags.iter().map(String::as_str).collect();
    sorted.sort_unstable();
    let read = on_threads(threads, files, |path| {
        read_file(&crate::rollup::path_for(path, crate::rollup::Kind::TagAuthors), tags, &sorted)
    });
    let mut by_tag: Vec<TagRows> = tags.iter().map(|_| TagRows::default()).collect();
    for found in read {
        for (rows, more) in by_tag.iter_mut().zip(found?) {
            rows.append(more);
        }
    }
    for (tag, did, n) in rest {
        if let Some(index) = tags.iter().position(|t| *t == tag) {
            by_tag[index].push(&did, n);
        }
    }
    let by_tag: Vec<Mutex<TagRows>> = by_tag.into_iter().map(Mutex::new).collect();
    Ok(on_threads(threads, &by_tag, |rows| {
        std::mem::take(&mut *rows.lock().unwrap_or_else(|p| p.into_inner())).live_authors()
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
        assert_eq!(plc_id("did:plc:aaaaaaaaaaaaaaaaaaaaaaab"), Some((0, 1)));
        assert_eq!(plc_id("did:plc:777777777777777777777777"), Some(((1 << 60) - 1, (1 << 60) - 1)));
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
}
