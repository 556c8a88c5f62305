//! Compaction of likes and reposts: merges a day's small `interactions` files into one file
//! (sorted by actor, as every interactions file, with its rollup of subjects), leaves out the
//! likes and reposts that were undone, and then retires the undone ones' deletes.
//!
//! One file, not several of the target size: files sorted by actor each hold some likes of
//! most posts, and the rollup of subjects of each (one row per post and file) would grow with
//! their number. A day of Bluesky's likes makes one file of about 1.2 GB.
//!
//! Every statement that counts likes takes the `interaction_deletes` out of them with an
//! anti-join (`exec`'s `interactions` view), and at a week of Bluesky that join alone (6 M
//! unlikes) cost most of each statement. Compaction applies the deletes to the files once, like
//! an LSM tree's, so that the view's join holds only the deletes stored since:
//!
//! 1. [`Undone::load`] reads the deletes stored now (the run's snapshot of `interaction_deletes`
//!    files) into memory.
//! 2. [`compact_partition`], for each `interactions` partition, rewrites the files holding any of
//!    those likes, or too small, without them, and swaps the partition in
//!    ([`crate::rewrite::swap_partition`]).
//! 3. [`retire_deletes`], once every partition is done, rewrites each `interaction_deletes`
//!    partition without the snapshot's deletes older than the cutoff ([`RETIRE_MARGIN_US`]),
//!    merging its files on the way. The deletes of posts are retired the same way once every
//!    `posts` partition is compacted (`crate::compact` leaves deleted posts out), so that the
//!    `posts` view's anti-join, in every statement over posts, holds only the recent ones too.
//!
//! Why a delete may go once applied: its like is in no file any more, and it comes back only if
//! the source replays the like, which a replay does in the stream's order, so the delete comes
//! again after it. A delete whose like was never stored (liked before ingest began) goes the
//! same way, for the same reason. Deletes are kept for [`RETIRE_MARGIN_US`] behind the newest
//! flushed event: a like may still be on its way to the lake in another flusher's batch (one is
//! claimed by another flusher after `claim_after`, minutes) when its delete is already stored.
//! Between steps 2 and 3 (or when a run stops there) the deletes still apply, to likes no longer
//! there: answers never change.
//!
//! Step 3 runs only after a run that compacted every `interactions` partition; a run over some
//! days only merges their files.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use chrono::NaiveDate;
use duckdb::Connection;

use super::{Compacted, Found, Merge, columns_of, sql_string, survey, write_sorted};
use crate::error::{Error, Result};
use crate::layout;
use crate::model::{Interaction, InteractionDelete, TableRow};
use crate::rewrite::swap_partition;

/// How long a delete is kept behind the newest event any flush stored (the catalog's
/// `flushed_through_us`) before compaction may retire it.
pub const RETIRE_MARGIN_US: i64 = 3_600 * 1_000_000;

/// The files of a table of deletes (`deletes` of posts, `interaction_deletes`) when a
/// compaction run began: the deletes it applies, and may retire at its end.
#[derive(Debug, Clone)]
pub struct Tombstones {
    table: &'static str,
    files: Vec<PathBuf>,
    /// The deletes older than this may be retired.
    retire_before_us: i64,
}

impl Tombstones {
    pub fn list(lake: &Path, table: &'static str, now_us: i64) -> Result<Tombstones> {
        let state = crate::catalog::read_state(lake)?;
        // A lake no buffer ever fed (a generated one) has nothing on its way.
        let retire_before_us = state.flushed_through_us.unwrap_or(now_us).min(now_us) - RETIRE_MARGIN_US;
        let files = crate::catalog::table_files(lake, table)?.paths;
        Ok(Tombstones { table, files, retire_before_us })
    }

    pub fn table(&self) -> &'static str {
        self.table
    }
}

/// The deletes of likes and reposts one compaction run applies: those stored when it began.
pub struct Undone {
    /// Holds the table `undone (did, kind, rkey)`.
    connection: Connection,
    tombstones: Tombstones,
}

impl Undone {
    /// Reads the stored deletes of likes and reposts into memory.
    pub fn load(lake: &Path, now_us: i64) -> Result<Undone> {
        let tombstones = Tombstones::list(lake, layout::INTERACTION_DELETES_TABLE, now_us)?;
        let connection = super::work_connection(lake)?;
        let source = if tombstones.files.is_empty() {
            "(SELECT NULL::VARCHAR AS did, NULL::VARCHAR AS kind, NULL::VARCHAR AS rkey WHERE false)".to_owned()
        } else {
            let list: Vec<String> = tombstones.files.iter().map(|f| sql_string(f)).collect();
            format!("read_parquet([{}])", list.join(", "))
        };
        connection.execute_batch(&format!("CREATE TABLE undone AS SELECT DISTINCT did, kind, rkey FROM {source}"))?;
        Ok(Undone { connection, tombstones })
    }

    pub fn tombstones(&self) -> &Tombstones {
        &self.tombstones
    }
}

/// The condition that an interaction `p` is undone (`undone` as `u`).
const UNDONE_ON: &str = "u.did = p.did AND u.kind = p.kind AND u.rkey = p.rkey";

/// Compacts the `interactions` partition of `date`: merges its small files, and every file
/// holding a like or repost `undone` takes out, into sorted files of about `target_bytes`,
/// without those. Leaves it alone when there is nothing to do; stops with
/// [`Error::Interrupted`], the live partition untouched, once `cancel` is set.
///
/// Copies need no work here: the flusher never stores a like twice (`crate::unique`).
pub fn compact_partition(
    lake: &Path,
    date: NaiveDate,
    target_bytes: u64,
    now_us: i64,
    undone: &Undone,
    cancel: &AtomicBool,
) -> Result<Compacted> {
    swap_partition(lake, layout::INTERACTIONS_TABLE, date, now_us, |live, staging| {
        let mut report = Compacted { table: layout::INTERACTIONS_TABLE, date: Some(date), ..Compacted::default() };
        let names = crate::catalog::data_file_names(live)?;
        if names.is_empty() {
            return Ok((report, false));
        }
        let join = format!("LEFT JOIN undone AS u ON {UNDONE_ON}");
        let found = survey(&undone.connection, live, &names, Some((&join, "count(u.rkey)")))?;
        let Some(merge) = Merge::choose(&mut report, found, target_bytes, false) else {
            return Ok((report, false));
        };
        merge.stage_kept(live, staging, &mut report, crate::rollup::link_for)?;
        let sql = format!(
            "SELECT {columns} FROM read_parquet([{sources}]) AS p ANTI JOIN undone AS u ON {UNDONE_ON} \
             ORDER BY p.did, p.rkey, p.kind",
            columns = columns_of(&Interaction::schema()),
            sources = merge.sources(live),
        );
        let (written, new_files) = write_sorted(
            &undone.connection,
            &sql,
            &Interaction::schema(),
            staging,
            u64::MAX,
            now_us,
            &mut report,
            cancel,
        )?;
        for path in &new_files {
            if cancel.load(Ordering::Relaxed) {
                return Err(Error::Interrupted);
            }
            crate::rollup::build_for_file(path, path)?;
        }
        merge.report_merged(&mut report, written);
        Ok((report, true))
    })
}

/// Rewrites the partition of `date` of the table of deletes `tombstones` lists without its
/// deletes older than its cutoff ([`RETIRE_MARGIN_US`] behind the newest flushed event), which
/// the run applied to every partition of the table they delete from, and with the other deletes
/// of those files in one file. Files stored since are kept as they are. Call it only after a run that compacted every
/// partition of that table (`interactions`, or `posts`) with at least these deletes.
pub fn retire_deletes(
    lake: &Path,
    date: NaiveDate,
    now_us: i64,
    tombstones: &Tombstones,
    cancel: &AtomicBool,
) -> Result<Compacted> {
    let table = tombstones.table;
    let connection = super::work_connection(lake)?;
    swap_partition(lake, table, date, now_us, |live, staging| {
        let mut report = Compacted { table, date: Some(date), ..Compacted::default() };
        let names = crate::catalog::data_file_names(live)?;
        if names.is_empty() {
            return Ok((report, false));
        }
        let before = format!("make_timestamp({})", tombstones.retire_before_us);
        let old = format!("count(*) FILTER (WHERE p.deleted_at < {before})");
        let found = survey(&connection, live, &names, Some(("", &old)))?;
        let (applied, later): (Vec<&Found>, Vec<&Found>) =
            found.iter().partition(|file| tombstones.files.contains(&live.join(&file.name)));
        let retired: u64 = applied.iter().map(|file| file.deleted).sum();
        report.files_before = found.len();
        report.rows_before = found.iter().map(|file| file.rows).sum();
        report.bytes_before = found.iter().map(|file| file.bytes).sum();
        if retired == 0 && applied.len() < 2 {
            report.files_after = report.files_before;
            report.rows_after = report.rows_before;
            report.bytes_after = report.bytes_before;
            return Ok((report, false));
        }
        fs::create_dir(staging).map_err(Error::io("create staging directory", staging))?;
        for file in &later {
            let target = staging.join(&file.name);
            fs::hard_link(live.join(&file.name), &target).map_err(Error::io("link into staging", &target))?;
            report.files_after += 1;
            report.rows_after += file.rows;
            report.bytes_after += file.bytes;
        }
        let applied_sources: Vec<String> = applied.iter().map(|file| sql_string(&live.join(&file.name))).collect();
        let (schema, tie_break) = if table == layout::DELETES_TABLE {
            (crate::model::deletes_schema(), "uri")
        } else {
            (InteractionDelete::schema(), "rkey")
        };
        let sql = format!(
            "SELECT {columns} FROM read_parquet([{sources}]) AS p WHERE p.deleted_at >= {before} \
             ORDER BY p.deleted_at, p.{tie_break}",
            columns = columns_of(&schema),
            sources = applied_sources.join(", "),
        );
        let (written, _) = write_sorted(&connection, &sql, &schema, staging, u64::MAX, now_us, &mut report, cancel)?;
        if cancel.load(Ordering::Relaxed) {
            return Err(Error::Interrupted);
        }
        report.files_merged = applied.len();
        report.rows_after += written;
        report.deleted_removed = retired;
        Ok((report, true))
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::catalog;
    use crate::model::InteractionKind;
    use crate::writer;

    const DAY: i64 = 86_400_000_000;
    const HOUR: i64 = 3_600_000_000;
    /// The newest event flushed, and so the clock deletes are retired by.
    const FLUSHED_THROUGH: i64 = 20_003 * DAY;

    fn like(n: i64) -> Interaction {
        Interaction {
            did: format!("did:plc:fan{}", n % 13),
            kind: if n % 4 == 0 { InteractionKind::Repost } else { InteractionKind::Like },
            rkey: format!("like{n:05}"),
            subject_did: format!("did:plc:author{}", n % 5),
            subject_rkey: format!("post{:03}", (n * 7_919) % 97),
            // Two days, by n.
            created_at_us: 20_000 * DAY + (n % 2) * DAY + n,
            indexed_at_us: 20_000 * DAY + (n % 2) * DAY + n + 1,
        }
    }

    fn undo(n: i64, deleted_at_us: i64) -> InteractionDelete {
        let like = like(n);
        InteractionDelete { did: like.did, kind: like.kind, rkey: like.rkey, deleted_at_us }
    }

    type Key = (String, String, String);

    fn key_of(did: &str, kind: &str, rkey: &str) -> Key {
        (did.to_owned(), kind.to_owned(), rkey.to_owned())
    }

    /// The keys of every stored row of `table`'s files.
    fn keys(lake: &Path, table: &str) -> BTreeSet<Key> {
        let files = catalog::table_files(lake, table).unwrap().paths;
        if files.is_empty() {
            return BTreeSet::new();
        }
        let list: Vec<String> = files.iter().map(|f| sql_string(f)).collect();
        let connection = Connection::open_in_memory().unwrap();
        let sql = format!("SELECT did, kind, rkey FROM read_parquet([{}])", list.join(", "));
        let mut statement = connection.prepare(&sql).unwrap();
        statement
            .query_map([], |row| {
                Ok(key_of(&row.get::<_, String>(0)?, &row.get::<_, String>(1)?, &row.get::<_, String>(2)?))
            })
            .unwrap()
            .map(Result::unwrap)
            .collect()
    }

    /// What counts: the stored likes and reposts less those any stored delete takes out (as the
    /// engine's `interactions` view has it).
    fn live(lake: &Path) -> BTreeSet<Key> {
        let undone = keys(lake, layout::INTERACTION_DELETES_TABLE);
        keys(lake, layout::INTERACTIONS_TABLE).into_iter().filter(|k| !undone.contains(k)).collect()
    }

    /// Each `interactions` partition's files, and whether each file is sorted by subject.
    fn partition_files(lake: &Path, table: &str) -> Vec<(NaiveDate, Vec<String>)> {
        crate::compact::partitions(lake, table)
            .unwrap()
            .into_iter()
            .map(|date| (date, catalog::data_file_names(&layout::partition_dir(lake, table, date)).unwrap()))
            .collect()
    }

    /// Whether the file is sorted by actor, and has its rollup of subjects, which counts its rows.
    fn sorted_by_actor_with_subjects(path: &Path) -> bool {
        let connection = Connection::open_in_memory().unwrap();
        let subjects = crate::rollup::path_for(path, crate::rollup::Kind::Subjects);
        let sums = format!(
            "SELECT (SELECT sum(n) FROM read_parquet({})) = (SELECT count(*) FROM read_parquet({}))",
            sql_string(&subjects),
            sql_string(path)
        );
        if !connection.query_row(&sums, [], |row| row.get::<_, bool>(0)).unwrap() {
            return false;
        }
        let sql = format!("SELECT did, rkey FROM read_parquet({})", sql_string(path));
        let mut statement = connection.prepare(&sql).unwrap();
        let rows: Vec<(String, String)> =
            statement.query_map([], |row| Ok((row.get(0)?, row.get(1)?))).unwrap().map(Result::unwrap).collect();
        !rows.is_empty() && rows.windows(2).all(|pair| pair[0] <= pair[1])
    }

    /// Compacts every partition as `compact_lake` does: interactions, then retirement.
    fn run(lake: &Path, now_us: i64) -> (Vec<Compacted>, Vec<Compacted>) {
        let cancel = AtomicBool::new(false);
        let undone = Undone::load(lake, now_us).unwrap();
        let compacted = crate::compact::partitions(lake, layout::INTERACTIONS_TABLE)
            .unwrap()
            .into_iter()
            .map(|date| compact_partition(lake, date, 1 << 30, now_us, &undone, &cancel).unwrap())
            .collect();
        let retired = crate::compact::partitions(lake, layout::INTERACTION_DELETES_TABLE)
            .unwrap()
            .into_iter()
            .map(|date| retire_deletes(lake, date, now_us, undone.tombstones(), &cancel).unwrap())
            .collect();
        (compacted, retired)
    }

    #[test]
    fn undone_likes_leave_the_files_and_their_old_deletes_retire_while_the_live_ones_stay_the_same() {
        let lake = tempfile::tempdir().unwrap();
        let lake = lake.path();
        // 600 likes and reposts in four flushes over two days.
        for flush in 0..4_i64 {
            writer::write_rows(
                lake,
                &format!("{flush}-0_{flush}-9.parquet"),
                (flush * 150..flush * 150 + 150).map(like).collect(),
            )
            .unwrap();
        }
        // Undone: every ninth long ago, every eleventh within the hour before the newest flushed
        // event (kept), and three likes never stored (from before ingest began). Two flushes.
        let old: Vec<InteractionDelete> = (0..600).step_by(9).map(|n| undo(n, 20_001 * DAY + n)).collect();
        let recent: Vec<InteractionDelete> =
            (0..600).step_by(11).map(|n| undo(n, FLUSHED_THROUGH - HOUR / 2 + n)).collect();
        let never_stored: Vec<InteractionDelete> = (1_000..1_003).map(|n| undo(n, 20_002 * DAY + n)).collect();
        writer::write_rows(lake, "d1.parquet", [old.clone(), never_stored].concat()).unwrap();
        writer::write_rows(lake, "d2.parquet", recent.clone()).unwrap();
        catalog::publish_flush(lake, FLUSHED_THROUGH, Some(FLUSHED_THROUGH)).unwrap();

        let expected: BTreeSet<Key> = (0..600)
            .filter(|n| n % 9 != 0 && n % 11 != 0)
            .map(|n| {
                let like = like(n);
                key_of(&like.did, like.kind.as_str(), &like.rkey)
            })
            .collect();
        assert_eq!(live(lake), expected, "before");
        let generation = catalog::read_state(lake).unwrap().generation;

        let (compacted, retired) = run(lake, FLUSHED_THROUGH + 5);
        assert_eq!(live(lake), expected, "after");
        // Each day's four files merged into one sorted file (with its rollup), without the undone rows.
        assert_eq!(compacted.len(), 2);
        for report in &compacted {
            assert_eq!((report.files_before, report.files_merged, report.files_after), (4, 4, 1), "{report:?}");
            assert_eq!(report.rows_before - report.rows_after, report.deleted_removed, "{report:?}");
        }
        let undone_rows = (0..600).filter(|n| n % 9 == 0 || n % 11 == 0).count() as u64;
        assert_eq!(compacted.iter().map(|r| r.deleted_removed).sum::<u64>(), undone_rows);
        assert_eq!(keys(lake, layout::INTERACTIONS_TABLE), expected, "the undone rows are gone from the files");
        for (date, names) in partition_files(lake, layout::INTERACTIONS_TABLE) {
            let dir = layout::partition_dir(lake, layout::INTERACTIONS_TABLE, date);
            assert!(names.iter().all(|name| sorted_by_actor_with_subjects(&dir.join(name))), "{date}: {names:?}");
        }
        // The old deletes, and those of likes never stored, retired; the recent ones kept.
        let kept: BTreeSet<Key> = recent.iter().map(|d| key_of(&d.did, d.kind.as_str(), &d.rkey)).collect();
        assert_eq!(keys(lake, layout::INTERACTION_DELETES_TABLE), kept);
        assert_eq!(retired.iter().map(|r| r.deleted_removed).sum::<u64>(), old.len() as u64 + 3, "{retired:?}");
        assert!(catalog::read_state(lake).unwrap().generation > generation, "published");

        // A replay brings a retired delete's like back, then the delete: it counts out again.
        let replayed = key_of(&like(9).did, like(9).kind.as_str(), &like(9).rkey);
        writer::write_rows(lake, "replay.parquet", vec![like(9)]).unwrap();
        assert!(live(lake).contains(&replayed), "the like is back until its delete is");
        writer::write_rows(lake, "replay-undo.parquet", vec![undo(9, FLUSHED_THROUGH + 1)]).unwrap();
        assert_eq!(live(lake), expected, "after the replay");

        // The next run takes the replayed like out again, and keeps the deletes of the last
        // hour, the replayed one with them.
        let (compacted, retired) = run(lake, FLUSHED_THROUGH + 10);
        assert_eq!(live(lake), expected, "after a second run");
        assert_eq!(keys(lake, layout::INTERACTIONS_TABLE), expected);
        assert_eq!(compacted.iter().map(|r| r.deleted_removed).sum::<u64>(), 1, "{compacted:?}");
        assert_eq!(retired.iter().map(|r| r.deleted_removed).sum::<u64>(), 0, "{retired:?}");
        let mut still = kept.clone();
        still.insert(replayed);
        assert_eq!(keys(lake, layout::INTERACTION_DELETES_TABLE), still);
    }
}
