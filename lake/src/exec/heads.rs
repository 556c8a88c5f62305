//! The largest rows of each rollup of subjects, in memory, from which a ranking of likes or
//! reposts picks its candidates without reading the rollups.
//!
//! For each `interactions` data file with a rollup of subjects (`.NAME.subjects`, one row per
//! kind, post and file), and each kind: the [`KEPT`] rows with the largest counts, the largest
//! count among the rows not kept (the floor), and each of the rollup's row groups' range of
//! record keys and largest count, from its statistics. Within a window's record keys, a post's
//! row in a file where it is not kept has at most the floor, and at most the largest count of
//! the row groups that meet the range: nothing, if none does.
//!
//! A post's count is the sum of its rows over the sources (`interaction_counts`, less what was
//! undone since, which only lowers it). Its kept rows, with its other sources at their bounds,
//! sum to the most it can have; a post kept nowhere has at most the bounds' sum. The posts with
//! the largest such sums are the candidates, whose exact counts are then read (a lookup by key,
//! which the rollups' row groups narrow); no other post can have more than the largest sum left
//! out. On Bluesky's skew the few posts liked most are kept in every file they were liked in,
//! and the floors are a small share of their counts.
//!
//! Each file's heads are read once (two top-N reads of its rollup and its footer), when the
//! snapshot first lists it; a file gone or replaced under its name leaves. A file whose heads
//! cannot be read is left out, and a window with it is ranked without them.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use chrono::NaiveDate;
use duckdb::Connection;

use super::rollups::{inode, partition_day};
use crate::error::Result;
use crate::model::InteractionKind;
use crate::rollup::{self, Kind};

/// Rows kept per file and kind: a month of daily files holds about 60 × 4,096 rows (some 20 MB).
pub(super) const KEPT: usize = 4096;

/// The heads of the files of a snapshot (see the module's documentation).
#[derive(Debug)]
pub(super) struct SubjectHeads {
    files: HashMap<PathBuf, FileHeads>,
    /// Rows kept per file and kind: [`KEPT`], fewer in tests.
    kept: usize,
}

impl Default for SubjectHeads {
    fn default() -> SubjectHeads {
        SubjectHeads { files: HashMap::new(), kept: KEPT }
    }
}

#[derive(Debug)]
struct FileHeads {
    inode: u64,
    day: NaiveDate,
    /// By kind, in [`InteractionKind::ALL`]'s order.
    kinds: [KindHeads; 2],
}

#[derive(Debug, Default, PartialEq)]
struct KindHeads {
    /// `(subject_did, subject_rkey, n)`, most first.
    rows: Vec<(String, String, u64)>,
    /// The largest count of the rows not kept; 0 when every row is.
    floor: u64,
    /// `(lowest key, highest key, largest count)` of each row group that may hold the kind.
    groups: Vec<(String, String, u64)>,
}

impl KindHeads {
    /// The most a post with a key in `lo..=hi` has in the rows not kept.
    fn bound(&self, lo: &str, hi: &str) -> u64 {
        if self.floor == 0 {
            return 0;
        }
        let meets = self.groups.iter().filter(|(low, high, _)| high.as_str() >= lo && low.as_str() <= hi);
        meets.map(|(_, _, most)| (*most).min(self.floor)).max().unwrap_or(0)
    }
}

/// What [`SubjectHeads::pick`] found.
#[derive(Debug, PartialEq)]
pub(super) struct Picked {
    /// The candidates' post URIs, the most they can have first.
    pub uris: Vec<String>,
    /// The most any other post in the range can have.
    pub beyond: u64,
}

fn kind_index(kind: InteractionKind) -> usize {
    InteractionKind::ALL.iter().position(|k| *k == kind).unwrap_or_default()
}

impl SubjectHeads {
    /// Brings the heads to `files`, the snapshot's `interactions` data files: those of new files
    /// (with a rollup of subjects) are read, those of files gone leave.
    pub fn sync(&mut self, connection: &Connection, files: &HashMap<PathBuf, u64>) {
        self.files.retain(|path, heads| files.get(path) == Some(&heads.inode));
        for (path, ino) in files {
            if self.files.contains_key(path) || !rollup::has_rollups(path) {
                continue;
            }
            let Some(day) = partition_day(path) else { continue };
            match read_heads(connection, path, self.kept) {
                // A file replaced while it was read is read again at the next snapshot.
                Ok(kinds) if inode(path) == Some(*ino) => {
                    self.files.insert(path.clone(), FileHeads { inode: *ino, day, kinds });
                }
                Ok(_) => {}
                Err(error) => tracing::debug!(%error, file = %path.display(), "a rollup's largest rows were not read"),
            }
        }
    }

    /// Keeps `kept` rows per file and kind from now on, and reads every file's again.
    #[cfg(test)]
    pub fn keep(&mut self, kept: usize) {
        self.kept = kept;
        self.files.clear();
    }

    /// The `most` posts of `kind` with keys in `lo..=hi` that can have the most in the rows of
    /// `sources` (the snapshot's files from `first_day` on), with the most any other can have;
    /// `None` if a source has no heads (no rollup, or one not read).
    pub fn pick<'a>(
        &self,
        sources: impl IntoIterator<Item = &'a Path>,
        first_day: NaiveDate,
        kind: InteractionKind,
        (lo, hi): (&str, &str),
        most: usize,
    ) -> Option<Picked> {
        let index = kind_index(kind);
        // Per post: its kept rows' sum, less the bounds of the sources it is kept in.
        let mut sums: HashMap<(&str, &str), (u64, u64)> = HashMap::new();
        let mut bounds = 0_u64;
        for path in sources {
            if partition_day(path).is_some_and(|day| day < first_day) {
                continue;
            }
            let heads = self.files.get(path)?;
            debug_assert!(heads.day >= first_day);
            let heads = &heads.kinds[index];
            let bound = heads.bound(lo, hi);
            bounds = bounds.saturating_add(bound);
            for (did, rkey, n) in &heads.rows {
                if rkey.as_str() >= lo && rkey.as_str() <= hi {
                    let sum = sums.entry((did.as_str(), rkey.as_str())).or_default();
                    sum.0 = sum.0.saturating_add(*n);
                    sum.1 = sum.1.saturating_add(bound);
                }
            }
        }
        let mut ranked: Vec<(u64, String)> = sums
            .into_iter()
            .map(|((did, rkey), (kept, kept_bounds))| {
                (kept.saturating_add(bounds - kept_bounds), crate::model::post_uri(did, rkey))
            })
            .collect();
        let key = crate::model::post_order_key;
        ranked.sort_unstable_by(|a, b| b.0.cmp(&a.0).then_with(|| key(&a.1).cmp(&key(&b.1))));
        let beyond = ranked.get(most).map_or(bounds, |(most_left, _)| (*most_left).max(bounds));
        ranked.truncate(most);
        Some(Picked { uris: ranked.into_iter().map(|(_, uri)| uri).collect(), beyond })
    }
}

/// Each kind's heads of the data file `path`'s rollup of subjects.
fn read_heads(connection: &Connection, path: &Path, kept: usize) -> Result<[KindHeads; 2]> {
    let sidecar = rollup::path_for(path, Kind::Subjects);
    let quoted = format!("'{}'", sidecar.to_string_lossy().replace('\'', "''"));
    let mut kinds: [KindHeads; 2] = Default::default();
    for (kind, heads) in InteractionKind::ALL.into_iter().zip(kinds.iter_mut()) {
        let mut statement = connection.prepare(&format!(
            "SELECT subject_did, subject_rkey, n FROM read_parquet({quoted}) WHERE kind = ? \
             ORDER BY n DESC, subject_rkey, subject_did LIMIT {}",
            kept + 1
        ))?;
        let rows = statement.query_map([kind.as_str()], |row| {
            Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?, u64::try_from(row.get::<_, i64>(2)?).unwrap_or(0)))
        })?;
        heads.rows = rows.collect::<duckdb::Result<_>>()?;
        if heads.rows.len() > kept {
            heads.floor = heads.rows.pop().map_or(0, |(_, _, n)| n);
        }
    }
    // Row groups by their statistics; one without a statistic may hold any kind, key or count.
    let mut statement = connection.prepare(&format!(
        "SELECT row_group_id, \
         min(stats_min_value) FILTER (WHERE path_in_schema = 'kind'), \
         max(stats_max_value) FILTER (WHERE path_in_schema = 'kind'), \
         min(stats_min_value) FILTER (WHERE path_in_schema = 'subject_rkey'), \
         max(stats_max_value) FILTER (WHERE path_in_schema = 'subject_rkey'), \
         max(TRY_CAST(stats_max_value AS BIGINT)) FILTER (WHERE path_in_schema = 'n') \
         FROM parquet_metadata({quoted}) GROUP BY row_group_id ORDER BY row_group_id"
    ))?;
    let groups = statement.query_map([], |row| {
        Ok((
            row.get::<_, Option<String>>(1)?,
            row.get::<_, Option<String>>(2)?,
            row.get::<_, Option<String>>(3)?,
            row.get::<_, Option<String>>(4)?,
            row.get::<_, Option<i64>>(5)?,
        ))
    })?;
    for group in groups {
        let (kind_lo, kind_hi, lo, hi, most) = group?;
        let most = most.map_or(u64::MAX, |n| u64::try_from(n).unwrap_or(0));
        let (lo, hi) = (lo.unwrap_or_default(), hi.unwrap_or_else(|| char::MAX.to_string()));
        for (kind, heads) in InteractionKind::ALL.into_iter().zip(kinds.iter_mut()) {
            let above = kind_lo.as_deref().is_some_and(|low| low > kind.as_str());
            let below = kind_hi.as_deref().is_some_and(|high| high < kind.as_str());
            if !above && !below {
                heads.groups.push((lo.clone(), hi.clone(), most));
            }
        }
    }
    Ok(kinds)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn heads(rows: &[(&str, u64)], floor: u64, groups: &[(&str, &str, u64)]) -> KindHeads {
        KindHeads {
            rows: rows.iter().map(|(rkey, n)| ("did:plc:a".to_owned(), (*rkey).to_owned(), *n)).collect(),
            floor,
            groups: groups.iter().map(|(lo, hi, n)| ((*lo).to_owned(), (*hi).to_owned(), *n)).collect(),
        }
    }

    fn file(day: u32, likes: KindHeads) -> FileHeads {
        FileHeads {
            inode: 1,
            day: NaiveDate::from_ymd_opt(2026, 1, day).unwrap(),
            kinds: [likes, KindHeads::default()],
        }
    }

    #[test]
    fn a_file_bounds_the_rows_it_did_not_keep_by_the_row_groups_of_the_range() {
        let likes = heads(&[("k5", 90)], 40, &[("k0", "k3", 12), ("k4", "k6", 90), ("k7", "k9", 55)]);
        assert_eq!(likes.bound("k0", "k2"), 12, "only the first group meets the range");
        assert_eq!(likes.bound("k5", "k8"), 40, "the floor caps the groups' largest counts");
        assert_eq!(likes.bound("l0", "l9"), 0, "no group meets the range");
        assert_eq!(heads(&[("k5", 90)], 0, &[("k0", "k9", 90)]).bound("k0", "k9"), 0, "every row kept");
    }

    #[test]
    fn candidates_are_the_posts_that_can_have_the_most_and_the_rest_are_bounded() {
        let mut all = SubjectHeads::default();
        let path = |day: u32| PathBuf::from(format!("/lake/interactions/date=2026-01-{day:02}/f.parquet"));
        // Day 1 kept k1 (50) and k2 (30), its other rows at most 10 in the range; day 2 kept k2
        // (25) and k3 (24), its other rows at most 20.
        all.files.insert(path(1), file(1, heads(&[("k1", 50), ("k2", 30)], 10, &[("k0", "k9", 30)])));
        all.files.insert(path(2), file(2, heads(&[("k2", 25), ("k3", 24)], 20, &[("k0", "k9", 25)])));
        let sources = [path(1), path(2)];
        let day = NaiveDate::from_ymd_opt(2026, 1, 1).unwrap();
        let picked = all.pick(sources.iter().map(PathBuf::as_path), day, InteractionKind::Like, ("k0", "k9"), 2);
        // k2 can have 55, k1 50 + 20, k3 24 + 10: the third, 34, bounds the others with the
        // floors' sum (30).
        let uri = |rkey: &str| crate::model::post_uri("did:plc:a", rkey);
        assert_eq!(picked, Some(Picked { uris: vec![uri("k1"), uri("k2")], beyond: 34 }));
        // Out of the range, the rows kept do not count and neither do the bounds.
        let picked = all.pick(sources.iter().map(PathBuf::as_path), day, InteractionKind::Like, ("m0", "m9"), 2);
        assert_eq!(picked, Some(Picked { uris: Vec::new(), beyond: 0 }));
        // A source without heads: no pick.
        let missing = [path(1), path(3)];
        assert_eq!(all.pick(missing.iter().map(PathBuf::as_path), day, InteractionKind::Like, ("k0", "k9"), 2), None);
    }
}
