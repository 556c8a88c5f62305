//! Where things live inside a lake directory. Pure functions over paths and names; nothing here
//! touches the disk.
//!
//! ```text
//! <lake>/posts/date=YYYY-MM-DD/<first-id>_<last-id>.parquet   posts created that UTC day
//! <lake>/deletes/date=YYYY-MM-DD/<first-id>_<last-id>.parquet deletions seen that UTC day
//! <lake>/accounts/date=YYYY-MM-DD/<first-id>_<last-id>.parquet identity and account events seen that day
//! <lake>/interactions/date=YYYY-MM-DD/<first-id>_<last-id>.parquet likes and reposts created that UTC day
//! <lake>/interaction_deletes/date=YYYY-MM-DD/<first-id>_<last-id>.parquet their deletions seen that day
//! <lake>/posts/.date=YYYY-MM-DD.staging/                     a partition being rewritten (hidden)
//! <lake>/_catalog/state.json                                   generation, last flush
//! <lake>/_ingest/                                              owned by ingest (durable cursor)
//! <lake>/_spill/                                               compaction's sorts, spilled
//! ```
//! Temporary files start with '.', so no glob over `*.parquet` ever sees a half-written file.

use std::path::{Path, PathBuf};

use chrono::{DateTime, NaiveDate};

pub const POSTS_TABLE: &str = "posts";
pub const DELETES_TABLE: &str = "deletes";
pub const ACCOUNTS_TABLE: &str = "accounts";
pub const INTERACTIONS_TABLE: &str = "interactions";
pub const INTERACTION_DELETES_TABLE: &str = "interaction_deletes";
/// Every table of day partitions a flush writes into.
pub const TABLES: [&str; 5] =
    [POSTS_TABLE, DELETES_TABLE, ACCOUNTS_TABLE, INTERACTIONS_TABLE, INTERACTION_DELETES_TABLE];
/// The tables compaction rewrites (the others keep a file per flush and day).
pub const COMPACTED_TABLES: [&str; 4] = [POSTS_TABLE, INTERACTIONS_TABLE, INTERACTION_DELETES_TABLE, DELETES_TABLE];
const PARTITION_PREFIX: &str = "date=";

/// The UTC calendar day of a timestamp in microseconds.
/// Instants beyond what a calendar date can hold clamp to the first or last date, never to an
/// unrelated one.
pub fn date_of_micros(micros: i64) -> NaiveDate {
    match DateTime::from_timestamp_micros(micros) {
        Some(instant) => instant.date_naive(),
        None if micros < 0 => NaiveDate::MIN,
        None => NaiveDate::MAX,
    }
}

pub fn table_dir(lake: &Path, table: &str) -> PathBuf {
    lake.join(table)
}

pub fn partition_dir(lake: &Path, table: &str, date: NaiveDate) -> PathBuf {
    table_dir(lake, table).join(format!("{PARTITION_PREFIX}{}", date.format("%Y-%m-%d")))
}

/// Where a partition's replacement is assembled before it is swapped in whole
/// ([`crate::rewrite`]): a hidden sibling (`.date=2026-11-29.staging`), which no glob reads.
pub fn staging_partition_dir(lake: &Path, table: &str, date: NaiveDate) -> PathBuf {
    table_dir(lake, table).join(format!(".{PARTITION_PREFIX}{}.staging", date.format("%Y-%m-%d")))
}

/// Parses a partition directory name (`date=2026-11-29`) back into its day.
pub fn parse_partition_name(name: &str) -> Option<NaiveDate> {
    let day = name.strip_prefix(PARTITION_PREFIX)?;
    NaiveDate::parse_from_str(day, "%Y-%m-%d").ok()
}

/// The glob DuckDB reads a table through.
pub fn table_glob(lake: &Path, table: &str) -> String {
    format!("{}/{PARTITION_PREFIX}*/*.parquet", table_dir(lake, table).display())
}

/// A data file's name, made from the stream-id range of the buffer entries it holds, so a
/// re-flush of the same entries after a crash writes the same name (idempotent). Stream ids look
/// like `1732867200000-0`; any character outside `[0-9A-Za-z-]` is replaced, to stay a safe name.
pub fn data_file_name(first_id: &str, last_id: &str) -> String {
    let clean = |id: &str| -> String {
        id.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '_' }).collect()
    };
    format!("{}_{}.parquet", clean(first_id), clean(last_id))
}

/// Whether a file name in a partition is a complete data file (temporary files start with '.').
pub fn is_data_file(name: &str) -> bool {
    name.ends_with(".parquet") && !name.starts_with('.')
}

/// The temporary name a data file is written under before its rename into place.
pub fn temp_path_for(final_path: &Path) -> PathBuf {
    let name = final_path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    final_path.with_file_name(format!(".{name}.tmp"))
}

pub fn catalog_dir(lake: &Path) -> PathBuf {
    lake.join("_catalog")
}

pub fn ingest_dir(lake: &Path) -> PathBuf {
    lake.join("_ingest")
}

/// Where compaction's sorts spill what does not fit in their memory (DuckDB's temporary files,
/// removed as it goes).
pub fn spill_dir(lake: &Path) -> PathBuf {
    lake.join("_spill")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_names_round_trip() {
        let day = NaiveDate::from_ymd_opt(2026, 11, 29).unwrap();
        let dir = partition_dir(Path::new("/l"), POSTS_TABLE, day);
        assert_eq!(dir, Path::new("/l/posts/date=2026-11-29"));
        let name = dir.file_name().unwrap().to_str().unwrap();
        assert_eq!(parse_partition_name(name), Some(day));
        assert_eq!(parse_partition_name("date=2026-13-01"), None);
        assert_eq!(parse_partition_name("day=2026-11-01"), None);
    }

    #[test]
    fn the_day_of_a_timestamp_is_its_utc_day() {
        // 2026-11-29T23:59:59.999999Z and one microsecond later
        let last = 1_796_000_000_000_000 - (1_796_000_000_000_000 % 86_400_000_000) + 86_399_999_999;
        assert_eq!(date_of_micros(last).succ_opt(), Some(date_of_micros(last + 1)));
        assert_eq!(date_of_micros(0), NaiveDate::from_ymd_opt(1970, 1, 1).unwrap());
    }

    #[test]
    fn data_file_names_come_from_the_stream_id_range_and_are_safe() {
        assert_eq!(data_file_name("1-0", "5-3"), "1-0_5-3.parquet");
        assert_eq!(data_file_name("../x", "y/z"), "___x_y_z.parquet");
    }

    #[test]
    fn temporary_files_are_hidden_from_the_parquet_glob() {
        let tmp = temp_path_for(Path::new("/l/posts/date=2026-11-29/a_b.parquet"));
        assert_eq!(tmp, Path::new("/l/posts/date=2026-11-29/.a_b.parquet.tmp"));
    }
}
