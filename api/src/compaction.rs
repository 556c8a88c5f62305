//! Compaction of the lake's `posts` partitions: now (`skyglass lake compact`) or on a schedule
//! in the writer roles of `serve` (`--compact-every`). The work is `lake::compact`; this adds
//! the choice of partitions, logs and metrics.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::NaiveDate;
use lake::compact::{Compacted, compact_partition};
use metrics::{counter, histogram};
use tokio::sync::watch;
use tracing::{info, warn};

use crate::metrics as m;

/// Compacts every `posts` partition from `since` to `until` (inclusive; open ends take every
/// one) that needs it, oldest first, calling `done` after each. Blocking. Once `cancel` is set
/// it stops soon (the partition under way is left as it was) and returns what it did.
pub fn compact_lake(
    lake: &Path,
    since: Option<NaiveDate>,
    until: Option<NaiveDate>,
    target_bytes: u64,
    cancel: &AtomicBool,
    mut done: impl FnMut(&Compacted),
) -> anyhow::Result<Vec<Compacted>> {
    let started = Instant::now();
    let mut reports = Vec::new();
    let partitions = lake::compact::partitions(lake).context("failed to list the lake's partitions")?;
    for date in partitions.into_iter().filter(|d| since.is_none_or(|s| *d >= s) && until.is_none_or(|u| *d <= u)) {
        if cancel.load(Ordering::Relaxed) {
            info!(%date, "compaction called off");
            break;
        }
        let now_us = chrono::Utc::now().timestamp_micros();
        let result = compact_partition(lake, date, target_bytes, now_us, cancel)
            .with_context(|| format!("failed to compact partition {date}"));
        let report = match result {
            Ok(report) => report,
            Err(_) if cancel.load(Ordering::Relaxed) => {
                info!(%date, "compaction called off; the partition is as it was");
                break;
            }
            Err(e) => {
                counter!(m::COMPACTIONS, "outcome" => m::OUTCOME_ERROR).increment(1);
                return Err(e);
            }
        };
        if report.changed() {
            counter!(m::COMPACTIONS, "outcome" => m::OUTCOME_OK).increment(1);
            counter!(m::COMPACTION_FILES_MERGED).increment(report.files_merged as u64);
            counter!(m::COMPACTION_ROWS_LEFT_OUT, "reason" => "deleted").increment(report.deleted_removed);
            counter!(m::COMPACTION_ROWS_LEFT_OUT, "reason" => "copy").increment(report.copies_removed);
            info!(
                %date,
                files_before = report.files_before,
                files_after = report.files_after,
                deleted = report.deleted_removed,
                copies = report.copies_removed,
                "compacted a partition"
            );
        }
        done(&report);
        reports.push(report);
    }
    histogram!(m::COMPACTION_DURATION).record(started.elapsed().as_secs_f64());
    Ok(reports)
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
        let run = tokio::task::spawn_blocking(move || compact_lake(&lake, None, None, target_bytes, &flag, |_| {}));
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
