//! Compaction of the lake's partitions: now (`skyglass lake compact`) or on a schedule in the
//! writer roles of `serve` (`--compact-every`). The work is `lake::compact` (posts) and
//! `lake::compact::interactions` (likes and reposts, and their deletes); this adds the order of
//! the steps, the choice of partitions, logs and metrics.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::NaiveDate;
use lake::compact::{Compacted, compact_partition, interactions};
use lake::layout;
use metrics::{counter, histogram};
use tokio::sync::watch;
use tracing::{info, warn};

use crate::metrics as m;

/// Compacts every partition from `since` to `until` (inclusive; open ends take every one) that
/// needs it, oldest first, calling `done` after each: the `posts`, then the `interactions`
/// (applying the deletes of likes and reposts stored when they begin), then, when the run took
/// every day and went through, the `interaction_deletes` and the `deletes` of posts (retiring
/// the deletes it applied).
/// Blocking. Once `cancel` is set it stops soon (the partition under way is left as it was)
/// and returns what it did.
pub fn compact_lake(
    lake: &Path,
    since: Option<NaiveDate>,
    until: Option<NaiveDate>,
    target_bytes: u64,
    cancel: &AtomicBool,
    mut done: impl FnMut(&Compacted),
) -> anyhow::Result<Vec<Compacted>> {
    let started = Instant::now();
    let every_day = since.is_none() && until.is_none();
    // The deletes of posts stored now: once every posts partition is compacted, none of
    // theirs is in the files any more.
    let post_tombstones =
        interactions::Tombstones::list(lake, layout::DELETES_TABLE, chrono::Utc::now().timestamp_micros())
            .context("failed to list the deletes of posts")?;
    let mut run = Run { lake, since, until, cancel, reports: Vec::new(), done: &mut done };
    let mut finished = run.each_partition(layout::POSTS_TABLE, |date, now_us| {
        compact_partition(lake, date, target_bytes, now_us, cancel)
    })?;
    if finished {
        let now_us = chrono::Utc::now().timestamp_micros();
        let undone = interactions::Undone::load(lake, now_us).context("failed to read the deletes of likes")?;
        finished = run.each_partition(layout::INTERACTIONS_TABLE, |date, now_us| {
            interactions::compact_partition(lake, date, target_bytes, now_us, &undone, cancel)
        })?;
        if finished && every_day {
            for tombstones in [undone.tombstones(), &post_tombstones] {
                run.each_partition(tombstones.table(), |date, now_us| {
                    interactions::retire_deletes(lake, date, now_us, tombstones, cancel)
                })?;
            }
        }
    }
    histogram!(m::COMPACTION_DURATION).record(started.elapsed().as_secs_f64());
    Ok(run.reports)
}

/// One compaction run, a table at a time.
struct Run<'a, F: FnMut(&Compacted)> {
    lake: &'a Path,
    since: Option<NaiveDate>,
    until: Option<NaiveDate>,
    cancel: &'a AtomicBool,
    reports: Vec<Compacted>,
    done: &'a mut F,
}

impl<F: FnMut(&Compacted)> Run<'_, F> {
    /// Runs `compact(date, now_us)` on each of `table`'s partitions in the run's days; says
    /// whether it went through them all (false once called off).
    fn each_partition(
        &mut self,
        table: &'static str,
        mut compact: impl FnMut(NaiveDate, i64) -> lake::Result<Compacted>,
    ) -> anyhow::Result<bool> {
        let partitions = lake::compact::partitions(self.lake, table)
            .with_context(|| format!("failed to list the partitions of {table}"))?;
        let (since, until) = (self.since, self.until);
        for date in partitions.into_iter().filter(|d| since.is_none_or(|s| *d >= s) && until.is_none_or(|u| *d <= u)) {
            if self.cancel.load(Ordering::Relaxed) {
                info!(table, %date, "compaction called off");
                return Ok(false);
            }
            let now_us = chrono::Utc::now().timestamp_micros();
            let result = compact(date, now_us).with_context(|| format!("failed to compact {table} partition {date}"));
            let report = match result {
                Ok(report) => report,
                Err(_) if self.cancel.load(Ordering::Relaxed) => {
                    info!(table, %date, "compaction called off; the partition is as it was");
                    return Ok(false);
                }
                Err(e) => {
                    counter!(m::COMPACTIONS, "table" => table, "outcome" => m::OUTCOME_ERROR).increment(1);
                    return Err(e);
                }
            };
            if report.changed() {
                counter!(m::COMPACTIONS, "table" => table, "outcome" => m::OUTCOME_OK).increment(1);
                counter!(m::COMPACTION_FILES_MERGED, "table" => table).increment(report.files_merged as u64);
                let deletes = matches!(table, layout::DELETES_TABLE | layout::INTERACTION_DELETES_TABLE);
                let deleted = if deletes { "applied" } else { "deleted" };
                counter!(m::COMPACTION_ROWS_LEFT_OUT, "table" => table, "reason" => deleted)
                    .increment(report.deleted_removed);
                if report.copies_removed > 0 {
                    counter!(m::COMPACTION_ROWS_LEFT_OUT, "table" => table, "reason" => "copy")
                        .increment(report.copies_removed);
                }
                info!(
                    table,
                    %date,
                    files_before = report.files_before,
                    files_after = report.files_after,
                    deleted = report.deleted_removed,
                    copies = report.copies_removed,
                    "compacted a partition"
                );
            }
            (self.done)(&report);
            self.reports.push(report);
        }
        Ok(true)
    }
}

/// Builds the rollups that files of the lake lack (a kind newer than the files, or one whose
/// build was cut short), as `skyglass lake rollup` does: until then their days are answered
/// from the posts. Cheap when none is missing: a look at each file's sidecars.
fn build_missing_rollups(lake: &Path) {
    match lake::rollup::rollup(lake, None, None, false, |_| {}) {
        Ok(reports) => {
            let built: usize = reports.iter().map(|r| r.built).sum();
            if built > 0 {
                info!(files = built, "built the rollups some files lacked");
            }
        }
        Err(e) => warn!(error = %e, "building missing rollups failed; trying again next time"),
    }
}

/// Compacts the whole lake every `every` until `stop`; a failed run is logged and retried at
/// the next one. A run still going at shutdown is called off: it stops within a batch of rows
/// (or one file's text index), leaving its partition as it was, so that the last flush, which
/// needs the flush lock the run holds, does not wait for a whole partition.
pub async fn run_schedule(lake: PathBuf, every: Duration, target_bytes: u64, mut stop: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.wait_for(|stopping| *stopping) => return,
        }
        let lake = lake.clone();
        let cancel = Arc::new(AtomicBool::new(false));
        let flag = cancel.clone();
        let run = tokio::task::spawn_blocking(move || {
            build_missing_rollups(&lake);
            compact_lake(&lake, None, None, target_bytes, &flag, |_| {})
        });
        tokio::select! {
            result = run => match result {
                Ok(Ok(reports)) => {
                    let changed = reports.iter().filter(|r| r.changed()).count();
                    info!(partitions = reports.len(), changed, "scheduled compaction done");
                }
                Ok(Err(e)) => warn!(error = format!("{e:#}"), "scheduled compaction failed; trying again next time"),
                Err(e) => warn!(error = %e, "scheduled compaction panicked"),
            },
            _ = stop.wait_for(|stopping| *stopping) => {
                cancel.store(true, Ordering::Relaxed);
                return;
            }
        }
    }
}
