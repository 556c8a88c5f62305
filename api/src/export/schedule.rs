//! When exports run: each on its cron schedule in its time zone, with a catch-up run of the
//! last scheduled period on start, and failed runs tried again with a doubling backoff until
//! the next period is due (each retry counted, and its time shown as `nextRetryAt`).

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tokio::sync::watch;
use tracing::{info, warn};

use super::{ExportSpec, Exports, MAX_BACKOFF_FACTOR, RunError, Trigger, Window, spec};
use crate::metrics as m;

impl Exports {
    /// Runs every export on its schedule until `stop`. On start, each exports the period of
    /// its last scheduled time if no instance did (a restart does not skip a period).
    pub fn spawn_schedules(self: &Arc<Self>, stop: watch::Receiver<bool>) {
        for spec in &self.specs {
            tokio::spawn(self.clone().schedule(spec.clone(), stop.clone()));
        }
    }

    async fn schedule(self: Arc<Self>, spec: Arc<ExportSpec>, mut stop: watch::Receiver<bool>) {
        let zone = spec.time_zone;
        let mut fire = spec.schedule.last_at_or_before(Utc::now(), zone);
        loop {
            if let Some(at) = fire {
                let window = spec.window_at(at);
                if !self.run_until_done(&spec, &window, &mut stop).await {
                    return;
                }
            }
            let Some(next) = spec.schedule.next_after(Utc::now(), zone) else { return };
            let wait = (next - Utc::now()).to_std().unwrap_or_default();
            tokio::select! {
                () = tokio::time::sleep(wait) => fire = Some(next),
                _ = stop.wait_for(|stopping| *stopping) => return,
            }
        }
    }

    /// Runs a scheduled period until it is done, retrying with backoff until the next period
    /// is due. False when stopping.
    async fn run_until_done(&self, spec: &ExportSpec, window: &Window, stop: &mut watch::Receiver<bool>) -> bool {
        let give_up_at = spec.schedule.next_after(Utc::now(), spec.time_zone);
        let first = self.settings.retry_backoff.max(Duration::from_millis(1));
        let mut backoff = first;
        for attempt in 1.. {
            if self.done(spec, window).await.is_some() {
                return true;
            }
            let mut record = match self.run(spec, window, Trigger::Schedule, attempt, false).await {
                Ok(_) | Err(RunError::Busy | RunError::AlreadyDone(_)) => return true,
                Err(RunError::Failed(record)) => record,
            };
            let retry_at = Utc::now() + chrono::Duration::from_std(backoff).unwrap_or_default();
            if give_up_at.is_some_and(|next| retry_at >= next) {
                warn!(export = %spec.name, period = %window.label, attempt, "export still failing when its next period is due; leaving this period");
                return true;
            }
            record.next_retry_at = Some(retry_at);
            self.record(&spec.name, &record).await;
            metrics::counter!(m::EXPORT_RETRIES, "export" => spec.name.clone()).increment(1);
            info!(export = %spec.name, period = %window.label, attempt, retry_at = %spec::rfc3339(retry_at), "export will be tried again");
            tokio::select! {
                () = tokio::time::sleep(backoff) => {}
                _ = stop.wait_for(|stopping| *stopping) => return false,
            }
            backoff = (backoff * 2).min(first * MAX_BACKOFF_FACTOR);
        }
        true
    }
}
