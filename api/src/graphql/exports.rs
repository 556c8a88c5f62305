//! `exports` and `runExport`: the declared exports with their last and next runs, and running
//! one now (admin only).

use std::sync::Arc;

use async_graphql::{Context, Enum, Object, SimpleObject};

use super::query::services;
use super::scalars::DateTime;
use crate::auth::Caller;
use crate::error;
use crate::export::{ExportSpec, RunError, RunRecord, RunStatus};

#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
#[graphql(remote = "crate::export::Format")]
pub enum ExportFormat {
    Parquet,
    Csv,
    /// JSON lines: one object per row.
    Jsonl,
}

#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
#[graphql(remote = "crate::export::RunStatus")]
pub enum ExportStatus {
    Running,
    Succeeded,
    Failed,
}

/// What started a run.
#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
#[graphql(remote = "crate::export::Trigger")]
pub enum ExportTrigger {
    Schedule,
    /// `skyglass export NAME`.
    Command,
    /// The `runExport` mutation.
    Api,
}

/// An export declared in the server's config file.
pub struct Export(pub Arc<ExportSpec>);

#[Object]
impl Export {
    async fn name(&self) -> &str {
        &self.0.name
    }
    /// The period each run covers, as declared (`yesterday`, `last 7 days`), in `timeZone`.
    async fn period(&self) -> String {
        self.0.period.to_string()
    }
    /// Cron: minute, hour, day of month, month, day of week (or six fields, the second first),
    /// in `timeZone`.
    async fn schedule(&self) -> &str {
        &self.0.schedule.text
    }
    async fn time_zone(&self) -> &str {
        self.0.time_zone.name()
    }
    async fn format(&self) -> ExportFormat {
        self.0.format.into()
    }
    /// When the schedule fires next.
    async fn next_run_at(&self) -> Option<DateTime> {
        self.0.schedule.next_after(chrono::Utc::now(), self.0.time_zone).map(DateTime)
    }
    /// The latest run by any instance; null before the first.
    async fn last_run(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<ExportRun>> {
        let Some(exports) = &services(ctx)?.exports else { return Ok(None) };
        Ok(exports.last_run(&self.0.name).await.map(ExportRun::from))
    }
    /// When the latest run, a failed scheduled one, is tried again; null when none is due
    /// (it succeeded, or the next period comes first).
    async fn next_retry_at(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<DateTime>> {
        let Some(exports) = &services(ctx)?.exports else { return Ok(None) };
        let last = exports.last_run(&self.0.name).await;
        Ok(last.filter(|r| r.status == RunStatus::Failed).and_then(|r| r.next_retry_at).map(DateTime))
    }
}

/// One run of an export.
#[derive(SimpleObject)]
pub struct ExportRun {
    /// The period's label, as in the file name (`2026-01-31`, `2026-01-31T13Z`, `2026-01-24_7d`).
    pub period: String,
    pub period_start: DateTime,
    pub period_end: DateTime,
    pub status: ExportStatus,
    pub trigger: ExportTrigger,
    /// 1 for the first try of a scheduled period, then each retry.
    pub attempt: u32,
    pub started_at: DateTime,
    pub finished_at: Option<DateTime>,
    pub rows: Option<u64>,
    pub bytes: Option<u64>,
    /// The data file, relative to the export's destination directory.
    pub file: Option<String>,
    /// Why it failed.
    pub error: Option<String>,
    /// The lake generation the rows were computed at.
    pub generation: Option<u64>,
    /// When this failed scheduled run is tried again; null when it is not.
    pub next_retry_at: Option<DateTime>,
}

impl From<RunRecord> for ExportRun {
    fn from(r: RunRecord) -> ExportRun {
        ExportRun {
            period: r.period,
            period_start: DateTime(r.period_start),
            period_end: DateTime(r.period_end),
            status: r.status.into(),
            trigger: r.trigger.into(),
            attempt: r.attempt,
            started_at: DateTime(r.started_at),
            finished_at: r.finished_at.map(DateTime),
            rows: r.rows,
            bytes: r.bytes,
            file: r.file,
            error: r.error,
            generation: r.generation,
            next_retry_at: r.next_retry_at.map(DateTime),
        }
    }
}

/// Whether the request was sent with an admin key.
fn is_admin(ctx: &Context<'_>) -> bool {
    ctx.data_opt::<Caller>().is_some_and(|caller| caller.is_admin())
}

/// The declared exports (admin only: they show the server's paths and errors).
pub(super) async fn list(ctx: &Context<'_>) -> async_graphql::Result<Vec<Export>> {
    mark_volatile(ctx);
    if !is_admin(ctx) {
        return Err(error::forbidden(
            "exports needs an admin key: send `Authorization: Bearer KEY` (--admin-token or an admin key of --api-keys)",
        ));
    }
    let exports = services(ctx)?.exports.as_ref();
    Ok(exports.map(|e| e.specs().iter().cloned().map(Export).collect()).unwrap_or_default())
}

/// Answers that show runs change without a new lake generation: never cached.
fn mark_volatile(ctx: &Context<'_>) {
    if let Ok(volatile) = ctx.data::<crate::cache::Volatile>() {
        volatile.mark();
    }
}

pub struct Mutation;

#[Object]
impl Mutation {
    /// Runs a declared export now, for the period that ended last before `asOf` (default: now),
    /// and answers when it is written. A period a run exported already is left alone
    /// (`ALREADY_DONE`) unless `force`; one another run holds now is `CONFLICT`. Needs the admin
    /// token (`Authorization: Bearer TOKEN`).
    async fn run_export(
        &self,
        ctx: &Context<'_>,
        name: String,
        as_of: Option<DateTime>,
        #[graphql(default = false)] force: bool,
    ) -> async_graphql::Result<ExportRun> {
        mark_volatile(ctx);
        if !is_admin(ctx) {
            return Err(error::forbidden(
                "runExport needs an admin key: send `Authorization: Bearer KEY` (--admin-token or an admin key of --api-keys)",
            ));
        }
        let Some(exports) = &services(ctx)?.exports else {
            return Err(error::bad_input(
                "this server runs no exports (declare them as [[export]] in its config file)",
            ));
        };
        let Some(spec) = exports.find(&name) else {
            let names: Vec<&str> = exports.specs().iter().map(|s| s.name.as_str()).collect();
            return Err(error::bad_input(format!(
                "no export is named {name:?}; the exports are: {}",
                names.join(", ")
            )));
        };
        let window = spec.window_at(as_of.map_or_else(chrono::Utc::now, |t| t.0));
        match exports.run(spec, &window, crate::export::Trigger::Api, 1, force).await {
            Ok(record) => Ok(record.into()),
            Err(busy @ RunError::Busy) => Err(error::conflict(busy.to_string())),
            Err(done @ RunError::AlreadyDone(_)) => {
                Err(error::already_done(format!("{done}; pass force: true to run it again")))
            }
            Err(failed @ RunError::Failed(_)) => Err(error::export_failed(failed.to_string())),
        }
    }
}
