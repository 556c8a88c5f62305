//! Live posts per author and UTC day, in memory, from which `topAuthors` over whole days is
//! answered exactly without reading the posts.
//!
//! A day's counts are its partition's author rollups (`.NAME.authors`, see [`crate::rollup`])
//! summed, less its dead rows (each once). They change by differences: a new file's rollup is
//! added, the dead rows taken out before are given back and the current ones taken out; only a
//! day that lost a file (a compaction) is summed again from all its files. Authors are
//! numbered (`u32`) once for all days, and each day holds its counts twice over: by author, for
//! looking one up, and by count, for reading the most active first. About twelve bytes per
//! author and day: a month of Bluesky (about 750,000 authors a day) takes about 270 MB.
//!
//! [`AuthorCounts::top`] merges the days with the threshold algorithm (Fagin, Lotem and Naor):
//! it reads the days' lists most-first, side by side, totals every author it meets over all
//! days, and stops once the last of the best `limit` totals more than any author not yet met
//! could (the sum of the counts at the current depth). On skewed activity, as Bluesky's is,
//! that takes a few rows of each list, not all of them; on any data the answer is exact.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::File;
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{Array, AsArray};
use arrow::datatypes::Int64Type;
use chrono::NaiveDate;
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use crate::error::{Error, Result};

/// One day's posts per author.
#[derive(Debug, Default)]
struct DayCounts {
    /// `(author, posts)`, by author.
    by_author: Vec<(u32, u32)>,
    /// The authors, most posts first (ties by number).
    by_count: Vec<u32>,
    /// The data files whose rollups are counted (with their cells rollup's inode).
    files: HashMap<PathBuf, u64>,
    /// The dead rows taken out, per author.
    dead: Vec<(u32, u32)>,
}

/// Changes to at most this share of a day's authors are made in place; more, and the day's
/// lists are made again (a sort of the whole day).
const IN_PLACE_SHARE: usize = 64;

impl DayCounts {
    /// Adds `changes` (per author, any sign; an author may come more than once) to the counts.
    fn change(&mut self, changes: Vec<(u32, i64)>) {
        let net: Vec<(u32, i64)> = summed(changes).filter(|&(_, n)| n != 0).collect();
        if net.len() <= self.by_author.len() / IN_PLACE_SHARE {
            for (author, n) in net {
                self.change_one(author, n);
            }
            return;
        }
        let all = self.by_author.iter().map(|&(author, n)| (author, i64::from(n))).chain(net).collect();
        let by_author: Vec<(u32, u32)> = summed(all).filter(|&(_, n)| n > 0).map(|(a, n)| (a, clamp(n))).collect();
        let mut by_count: Vec<(u32, u32)> = by_author.iter().map(|&(author, n)| (n, author)).collect();
        by_count.sort_unstable_by_key(|&(n, author)| (std::cmp::Reverse(n), author));
        self.by_author = by_author;
        self.by_count = by_count.into_iter().map(|(_, author)| author).collect();
    }

    /// Adds `change` to `author`'s posts, moving it in `by_count`.
    fn change_one(&mut self, author: u32, change: i64) {
        let found = self.by_author.binary_search_by_key(&author, |&(a, _)| a);
        let before = found.map_or(0, |i| self.by_author[i].1);
        if before > 0 {
            let at = self.count_position(before, author);
            self.by_count.remove(at);
        }
        let after = i64::from(before) + change;
        match found {
            Ok(i) if after > 0 => self.by_author[i].1 = clamp(after),
            Ok(i) => {
                self.by_author.remove(i);
            }
            Err(i) if after > 0 => self.by_author.insert(i, (author, clamp(after))),
            Err(_) => {}
        }
        if after > 0 {
            let at = self.count_position(clamp(after), author);
            self.by_count.insert(at, author);
        }
    }

    /// Where `author` with `n` posts is (or goes) in `by_count`.
    fn count_position(&self, n: u32, author: u32) -> usize {
        let key = (std::cmp::Reverse(n), author);
        self.by_count.partition_point(|&other| (std::cmp::Reverse(self.posts_of(other)), other) < key)
    }

    fn posts_of(&self, author: u32) -> u32 {
        self.by_author.binary_search_by_key(&author, |&(a, _)| a).map_or(0, |i| self.by_author[i].1)
    }

    /// The `depth`-th most active author and its posts.
    fn at(&self, depth: usize) -> Option<(u32, u32)> {
        self.by_count.get(depth).map(|&author| (author, self.posts_of(author)))
    }
}

/// `changes` summed per author, by author.
fn summed(mut changes: Vec<(u32, i64)>) -> impl Iterator<Item = (u32, i64)> {
    changes.sort_unstable_by_key(|&(author, _)| author);
    let mut sums: Vec<(u32, i64)> = Vec::with_capacity(changes.len());
    for (author, n) in changes {
        match sums.last_mut() {
            Some(last) if last.0 == author => last.1 += n,
            _ => sums.push((author, n)),
        }
    }
    sums.into_iter()
}

fn clamp(n: i64) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// Posts per author and day, for the days of the rolled-up partitions.
#[derive(Debug, Default)]
pub(super) struct AuthorCounts {
    names: Vec<Arc<str>>,
    numbers: HashMap<Arc<str>, u32, foldhash::fast::RandomState>,
    days: BTreeMap<NaiveDate, DayCounts>,
}

impl AuthorCounts {
    fn number(&mut self, did: &str) -> u32 {
        if let Some(&number) = self.numbers.get(did) {
            return number;
        }
        let number = u32::try_from(self.names.len()).expect("fewer than 4 billion authors");
        let name: Arc<str> = Arc::from(did);
        self.names.push(name.clone());
        self.numbers.insert(name, number);
        number
    }

    /// Brings `day` to the author rollups of `files` (data file to cells inode; none: the day
    /// has no rolled-up partition) less `dead` (dead rows per author): reads the rollups of the
    /// files it does not count yet, or of all of them if it counts one no longer listed.
    pub fn update_day(&mut self, day: NaiveDate, files: HashMap<PathBuf, u64>, dead: &[(String, u64)]) -> Result<()> {
        if files.is_empty() {
            self.days.remove(&day);
            return Ok(());
        }
        let mut counts = self.days.remove(&day).unwrap_or_default();
        if counts.files.iter().any(|(path, ino)| files.get(path) != Some(ino)) {
            counts = DayCounts::default();
        }
        let mut changes: Vec<(u32, i64)> = Vec::new();
        for path in files.keys().filter(|path| !counts.files.contains_key(*path)) {
            self.read_rollup(&crate::rollup::path_for(path, crate::rollup::Kind::Authors), &mut changes)?;
        }
        changes.extend(counts.dead.iter().map(|&(author, n)| (author, i64::from(n))));
        let dead: Vec<(u32, u32)> =
            dead.iter().map(|(did, n)| (self.number(did), u32::try_from(*n).unwrap_or(u32::MAX))).collect();
        changes.extend(dead.iter().map(|&(author, n)| (author, -i64::from(n))));
        counts.change(changes);
        counts.files = files;
        counts.dead = dead;
        self.days.insert(day, counts);
        Ok(())
    }

    /// Appends the posts per author of an author rollup to `changes`.
    fn read_rollup(&mut self, path: &Path, changes: &mut Vec<(u32, i64)>) -> Result<()> {
        let unreadable = |e: &dyn std::fmt::Display| Error::Corrupt(format!("{}: {e}", path.display()));
        let file = File::open(path).map_err(Error::io("open a rollup", path))?;
        let builder = ParquetRecordBatchReaderBuilder::try_new(file).map_err(|e| unreadable(&e))?;
        let mask = ProjectionMask::columns(builder.parquet_schema(), ["did", "n"]);
        for batch in builder.with_projection(mask).build().map_err(|e| unreadable(&e))? {
            let batch = batch.map_err(|e| unreadable(&e))?;
            let (Some(dids), Some(ns)) =
                (batch.column(0).as_string_opt::<i32>(), batch.column(1).as_primitive_opt::<Int64Type>())
            else {
                return Err(unreadable(&"columns `did` and `n` are not VARCHAR and BIGINT"));
            };
            for row in 0..batch.num_rows() {
                if dids.is_valid(row) {
                    changes.push((self.number(dids.value(row)), ns.value(row)));
                }
            }
        }
        Ok(())
    }

    /// The days held.
    #[cfg(test)]
    fn days(&self) -> impl Iterator<Item = NaiveDate> + '_ {
        self.days.keys().copied()
    }

    /// Sets `day`'s counts outright.
    #[cfg(test)]
    fn set_counts(&mut self, day: NaiveDate, counts: &[(String, u64)]) {
        let changes = counts.iter().map(|(did, n)| (self.number(did), *n as i64)).collect();
        let mut held = DayCounts::default();
        held.change(changes);
        self.days.insert(day, held);
    }

    /// The posts of each of `dids` over every day held plus `rest` (posts per author counted
    /// elsewhere), by DID; an author without any is absent.
    pub fn posts_of(&self, dids: &[String], rest: &[(String, u64)]) -> Vec<(String, u64)> {
        let rest: HashMap<&str, u64> = rest.iter().map(|(did, n)| (did.as_str(), *n)).collect();
        let mut dids: Vec<&String> = dids.iter().collect();
        dids.sort_unstable();
        dids.dedup();
        let total = |did: &str| {
            let in_days = self
                .numbers
                .get(did)
                .map_or(0, |&number| self.days.values().map(|day| u64::from(day.posts_of(number))).sum::<u64>());
            in_days + rest.get(did).copied().unwrap_or(0)
        };
        dids.into_iter().map(|did| (did.clone(), total(did))).filter(|(_, n)| *n > 0).collect()
    }

    /// The posts of each of `dids` on each day held from `first` to `end` (exclusive; unbounded
    /// where `None`), as `(did, day, posts)` by day and DID; days without posts are absent.
    pub fn days_of(
        &self,
        dids: &[String],
        first: Option<NaiveDate>,
        end: Option<NaiveDate>,
    ) -> Vec<(String, NaiveDate, u64)> {
        if matches!((first, end), (Some(first), Some(end)) if first >= end) {
            return Vec::new();
        }
        let lower = first.map_or(Bound::Unbounded, Bound::Included);
        let upper = end.map_or(Bound::Unbounded, Bound::Excluded);
        let mut numbered: Vec<(&String, u32)> =
            dids.iter().filter_map(|did| self.numbers.get(did.as_str()).map(|&number| (did, number))).collect();
        numbered.sort_unstable();
        numbered.dedup();
        let mut out = Vec::new();
        for (day, counts) in self.days.range((lower, upper)) {
            for &(did, number) in &numbered {
                let posts = counts.posts_of(number);
                if posts > 0 {
                    out.push((did.clone(), *day, u64::from(posts)));
                }
            }
        }
        out
    }

    /// The `limit` authors with the most posts over the days from `first` to `end` (exclusive;
    /// unbounded where `None`) plus `rest` (posts per author counted elsewhere; an author at
    /// most once), most first, ties by DID: what `GROUP BY did ORDER BY count(*) DESC, did`
    /// over the same posts gives.
    pub fn top(
        &self,
        first: Option<NaiveDate>,
        end: Option<NaiveDate>,
        rest: &[(String, u64)],
        limit: usize,
    ) -> Vec<(String, u64)> {
        if limit == 0 {
            return Vec::new();
        }
        let lower = first.map_or(Bound::Unbounded, Bound::Included);
        let upper = end.map_or(Bound::Unbounded, Bound::Excluded);
        let empty = matches!((first, end), (Some(first), Some(end)) if first >= end);
        let days: Vec<&DayCounts> =
            if empty { Vec::new() } else { self.days.range((lower, upper)).map(|(_, counts)| counts).collect() };
        let mut rest_by_count: Vec<(&str, u64)> = rest.iter().map(|(did, n)| (did.as_str(), *n)).collect();
        rest_by_count.sort_unstable_by_key(|&(_, n)| std::cmp::Reverse(n));
        let rest_of: HashMap<&str, u64> = rest_by_count.iter().copied().collect();

        let total = |did: &str| -> u64 {
            let in_days = self
                .numbers
                .get(did)
                .map_or(0, |&number| days.iter().map(|day| u64::from(day.posts_of(number))).sum::<u64>());
            in_days + rest_of.get(did).copied().unwrap_or(0)
        };
        // The best so far, most first (ties by DID), at most `limit`.
        let mut best: Vec<(u64, &str)> = Vec::with_capacity(limit + 1);
        let mut met: HashSet<&str> = HashSet::new();
        for depth in 0.. {
            // No author not met yet has more posts than the counts at this depth summed.
            let mut threshold = 0_u64;
            let mut read_any = false;
            let mut at_depth: Vec<&str> = Vec::with_capacity(days.len() + 1);
            for day in &days {
                if let Some((author, n)) = day.at(depth) {
                    read_any = true;
                    threshold += u64::from(n);
                    at_depth.push(&self.names[author as usize]);
                }
            }
            if let Some(&(did, n)) = rest_by_count.get(depth) {
                read_any = true;
                threshold += n;
                at_depth.push(did);
            }
            for did in at_depth {
                if met.insert(did) {
                    offer(&mut best, (total(did), did), limit);
                }
            }
            let settled = best.len() == limit && best.last().is_some_and(|&(n, _)| n > threshold);
            if !read_any || settled {
                break;
            }
        }
        best.into_iter().map(|(n, did)| (did.to_owned(), n)).collect()
    }
}

/// Puts `entry` in its place among `best` (most first, ties by DID), which keeps `limit`.
fn offer<'a>(best: &mut Vec<(u64, &'a str)>, entry: (u64, &'a str), limit: usize) {
    let rank = |e: &(u64, &'a str)| (std::cmp::Reverse(e.0), e.1);
    let at = best.partition_point(|other| rank(other) < rank(&entry));
    if at < limit {
        best.insert(at, entry);
        best.truncate(limit);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn day(n: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, 1, 1).unwrap() + chrono::Days::new(u64::from(n))
    }

    /// The same answer by summing everything: what the threshold algorithm must agree with.
    fn by_summing(
        days: &BTreeMap<u32, Vec<(String, u64)>>,
        first: Option<u32>,
        end: Option<u32>,
        rest: &[(String, u64)],
        limit: usize,
    ) -> Vec<(String, u64)> {
        let mut totals: HashMap<String, u64> = HashMap::new();
        for (d, counts) in days {
            if first.is_some_and(|f| *d < f) || end.is_some_and(|e| *d >= e) {
                continue;
            }
            for (did, n) in counts {
                *totals.entry(did.clone()).or_default() += n;
            }
        }
        for (did, n) in rest {
            *totals.entry(did.clone()).or_default() += n;
        }
        let mut all: Vec<(String, u64)> = totals.into_iter().filter(|(_, n)| *n > 0).collect();
        all.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        all.truncate(limit);
        all
    }

    fn counts() -> impl Strategy<Value = Vec<(String, u64)>> {
        // Few authors, so that they meet across days and tie often.
        proptest::collection::hash_map(0_u8..24, prop_oneof![1_u64..4, 1_u64..200], 0..20)
            .prop_map(|m| m.into_iter().map(|(a, n)| (format!("did:plc:{a:02}"), n)).collect())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]
        #[test]
        fn the_threshold_merge_agrees_with_summing_everything(
            days in proptest::collection::btree_map(0_u32..12, counts(), 0..8),
            rest in counts(),
            first in proptest::option::of(0_u32..12),
            end in proptest::option::of(0_u32..13),
            limit in 0_usize..30,
        ) {
            let mut held = AuthorCounts::default();
            for (d, c) in &days {
                held.set_counts(day(*d), c);
            }
            let top = held.top(first.map(day), end.map(day), &rest, limit);
            prop_assert_eq!(top, by_summing(&days, first, end, &rest, limit));
        }
    }

    proptest! {
        #[test]
        fn changes_in_place_and_wholesale_keep_both_orders(
            initial in proptest::collection::hash_map(0_u32..400, 1_u32..50, 0..300),
            steps in proptest::collection::vec(proptest::collection::vec((0_u32..400, 0_u32..50), 1..40), 1..12),
        ) {
            let mut day = DayCounts::default();
            let mut model: BTreeMap<u32, u32> = BTreeMap::new();
            day.change(initial.iter().map(|(&a, &n)| (a, i64::from(n))).collect());
            model.extend(initial);
            for step in steps {
                // Each step sets some authors' posts (0: gone), as differences.
                let mut changes = Vec::new();
                for (author, n) in step {
                    let before = model.get(&author).copied().unwrap_or(0);
                    changes.push((author, i64::from(n) - i64::from(before)));
                    model.insert(author, n);
                }
                model.retain(|_, n| *n > 0);
                day.change(changes);
                let by_author: Vec<(u32, u32)> = model.iter().map(|(&a, &n)| (a, n)).collect();
                prop_assert_eq!(&day.by_author, &by_author);
                let mut by_count: Vec<(u32, u32)> = by_author.clone();
                by_count.sort_by_key(|&(a, n)| (std::cmp::Reverse(n), a));
                prop_assert_eq!(&day.by_count, &by_count.iter().map(|&(a, _)| a).collect::<Vec<_>>());
            }
        }
    }

    #[test]
    fn a_day_set_again_replaces_its_counts_and_one_without_files_goes() {
        let mut held = AuthorCounts::default();
        held.set_counts(day(0), &[("did:plc:a".into(), 5), ("did:plc:b".into(), 3)]);
        held.set_counts(day(1), &[("did:plc:b".into(), 4)]);
        assert_eq!(held.top(None, None, &[], 5), vec![("did:plc:b".to_owned(), 7), ("did:plc:a".to_owned(), 5)]);
        held.set_counts(day(0), &[("did:plc:a".into(), 1)]);
        assert_eq!(held.top(None, None, &[], 5), vec![("did:plc:b".to_owned(), 4), ("did:plc:a".to_owned(), 1)]);
        held.update_day(day(1), HashMap::new(), &[]).unwrap();
        assert_eq!(held.days().collect::<Vec<_>>(), vec![day(0)]);
        assert_eq!(held.top(Some(day(1)), None, &[("did:plc:c".into(), 2)], 5), vec![("did:plc:c".to_owned(), 2)]);
    }
}
