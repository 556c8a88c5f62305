//! Aggregate exports: a GraphQL query, run for a period on a schedule, written as a file.
//!
//! Each run covers one [`Window`] of its export's period. It takes a Redis lock with a lease
//! for that export and period (so one replica runs it), checks again that no run finished the
//! period meanwhile, removes what dead runs of the period left, answers the query through the
//! schema (at one lake generation: if a flush lands midway, it answers again), writes the data
//! file and its manifest under temporary names of its own, confirms it still holds the lock,
//! renames both into place and marks the period done in Redis. A re-run of a period over an
//! unchanged lake writes the same bytes. Failed scheduled runs retry with backoff until the
//! next period is due. The last run of each export is kept in Redis for the `exports` query
//! and in metrics.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use tracing::{info, warn};

use crate::graphql::{self, QueryRunner, SkyglassSchema};
use crate::metrics as m;
use crate::redis_link::RedisLink;

mod answer;
pub mod file;
pub mod lock;
pub mod manifest;
pub mod relative;
mod schedule;
pub mod spec;
pub mod table;

pub use manifest::{Manifest, ManifestLake, ManifestPeriod};
pub use spec::{ExportSpec, Format, Window};

/// How long Redis remembers that a period was exported.
const DONE_SECONDS: u64 = 40 * 86_400;
/// Retries wait at most this many times the first backoff.
const MAX_BACKOFF_FACTOR: u32 = 60;
/// How often a run answers again when the lake changed while it answered.
const GENERATION_TRIES: usize = 3;
/// The page size exports may ask for (they are the operator's queries, not clients').
pub const EXPORT_MAX_PAGE_SIZE: i32 = 10_000;

/// How runs are locked and retried (`--export-lease`, `--export-retry-backoff`).
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// How long a run's lock lasts without renewal: a killed runner frees it this fast.
    pub lease: Duration,
    /// The first wait before a failed scheduled run is tried again; it doubles up to
    /// [`MAX_BACKOFF_FACTOR`] times itself.
    pub retry_backoff: Duration,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings { lease: Duration::from_secs(60), retry_backoff: Duration::from_secs(30) }
    }
}

/// What started a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Trigger {
    Schedule,
    /// `skyglass export NAME`.
    Command,
    /// The `runExport` mutation.
    Api,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum RunStatus {
    Running,
    Succeeded,
    Failed,
}

/// One run, as the `exports` query shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunRecord {
    pub period: String,
    pub period_start: DateTime<Utc>,
    pub period_end: DateTime<Utc>,
    pub status: RunStatus,
    pub trigger: Trigger,
    pub attempt: u32,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub rows: Option<u64>,
    pub bytes: Option<u64>,
    /// The data file, relative to the export's destination.
    pub file: Option<String>,
    pub error: Option<String>,
    pub generation: Option<u64>,
    /// When a failed scheduled run is tried again; none when it is not.
    #[serde(default)]
    pub next_retry_at: Option<DateTime<Utc>>,
}

/// Why a run wrote nothing.
#[derive(Debug)]
pub enum RunError {
    /// Another run holds this period's lock (it runs it now).
    Busy,
    /// A run exported this period already (its manifest); `force` runs it again.
    AlreadyDone(Box<Manifest>),
    /// The run failed, as recorded.
    Failed(Box<RunRecord>),
}

impl std::fmt::Display for RunError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RunError::Busy => f.write_str("another run holds this export period's lock now"),
            RunError::AlreadyDone(manifest) => write!(
                f,
                "this period was exported already, at {} ({} rows in {})",
                spec::rfc3339(manifest.finished_at),
                manifest.rows,
                manifest.file
            ),
            RunError::Failed(record) => f.write_str(record.error.as_deref().unwrap_or("failed")),
        }
    }
}

/// The declared exports and what runs them.
pub struct Exports {
    specs: Vec<Arc<ExportSpec>>,
    schema: SkyglassSchema,
    runner: QueryRunner,
    lake: PathBuf,
    redis: Arc<RedisLink>,
    prefix: String,
    settings: Settings,
    /// The last run of each export seen by this process (when Redis cannot tell).
    last: Mutex<HashMap<String, RunRecord>>,
}

impl Exports {
    pub fn new(
        specs: Vec<ExportSpec>,
        runner: QueryRunner,
        lake: PathBuf,
        redis: Arc<RedisLink>,
        namespace: &str,
        settings: Settings,
    ) -> Exports {
        let schema = graphql::build(
            Some(graphql::Services {
                runner: runner.clone(),
                limits: graphql::Limits { max_page_size: EXPORT_MAX_PAGE_SIZE },
                redis: None,
                exports: None,
                live: None,
            }),
            None,
        );
        // Every export's series exist from the start, so alerts on increases see the first one.
        for spec in &specs {
            for outcome in [m::OUTCOME_OK, m::OUTCOME_ERROR] {
                metrics::counter!(m::EXPORT_RUNS, "export" => spec.name.clone(), "outcome" => outcome).increment(0);
            }
            metrics::counter!(m::EXPORT_RETRIES, "export" => spec.name.clone()).increment(0);
        }
        Exports {
            specs: specs.into_iter().map(Arc::new).collect(),
            schema,
            runner,
            lake,
            redis,
            prefix: format!("{namespace}:export:"),
            settings,
            last: Mutex::new(HashMap::new()),
        }
    }

    pub fn specs(&self) -> &[Arc<ExportSpec>] {
        &self.specs
    }

    pub fn find(&self, name: &str) -> Option<&Arc<ExportSpec>> {
        self.specs.iter().find(|spec| spec.name == name)
    }

    fn key(&self, spec: &ExportSpec, window: &Window, what: &str) -> String {
        format!("{}{}:{}:{what}", self.prefix, spec.name, window.label)
    }

    /// Runs one export for one period now: locked, written atomically, recorded. A period some
    /// run exported already is left alone unless `force`.
    pub async fn run(
        &self,
        spec: &ExportSpec,
        window: &Window,
        trigger: Trigger,
        attempt: u32,
        force: bool,
    ) -> Result<RunRecord, RunError> {
        let mut record = RunRecord {
            period: window.label.clone(),
            period_start: window.start,
            period_end: window.end,
            status: RunStatus::Running,
            trigger,
            attempt,
            started_at: Utc::now(),
            finished_at: None,
            rows: None,
            bytes: None,
            file: None,
            error: None,
            generation: None,
            next_retry_at: None,
        };
        let Some(connection) = self.redis.connection().await else {
            let reason = "Redis cannot be reached, so the export lock cannot be taken".to_owned();
            return Err(self.failed(spec, window, record, reason).await);
        };
        let mut lease = match lock::take(connection.clone(), self.key(spec, window, "lock"), self.settings.lease).await
        {
            Ok(Some(lease)) => lease,
            Ok(None) => return Err(RunError::Busy),
            Err(reason) => return Err(self.failed(spec, window, record, reason).await),
        };
        // Another replica may have finished the period between our look and our lock.
        if !force && let Some(manifest) = self.done(spec, window).await {
            lease.release().await;
            return Err(RunError::AlreadyDone(Box::new(manifest)));
        }
        self.record(&spec.name, &record).await;
        let span = tracing::info_span!("export", export = %spec.name, period = %window.label, ?trigger, attempt);
        let began = Instant::now();
        let outcome = tracing::Instrument::instrument(self.write(spec, window, trigger, &mut lease), span).await;
        let seconds = began.elapsed().as_secs_f64();
        metrics::histogram!(m::EXPORT_DURATION, "export" => spec.name.clone()).record(seconds);
        let manifest = match outcome {
            Ok(manifest) => manifest,
            Err(reason) => {
                lease.release().await;
                return Err(self.failed(spec, window, record, reason).await);
            }
        };
        let body = serde_json::to_string(&manifest).unwrap_or_default();
        let mut connection = connection;
        let _: Result<(), _> = redis::cmd("SET")
            .arg(self.key(spec, window, "done"))
            .arg(body)
            .arg("EX")
            .arg(DONE_SECONDS)
            .query_async(&mut connection)
            .await;
        lease.release().await;
        record.finished_at = Some(Utc::now());
        record.status = RunStatus::Succeeded;
        record.rows = Some(manifest.rows);
        record.bytes = Some(manifest.bytes);
        record.file = Some(manifest.file.clone());
        record.generation = Some(manifest.lake.generation);
        let labels = [("export", spec.name.clone())];
        metrics::counter!(m::EXPORT_RUNS, "export" => spec.name.clone(), "outcome" => m::OUTCOME_OK).increment(1);
        metrics::gauge!(m::EXPORT_ROWS, &labels).set(manifest.rows as f64);
        metrics::gauge!(m::EXPORT_BYTES, &labels).set(manifest.bytes as f64);
        metrics::gauge!(m::EXPORT_LAST_SUCCESS, &labels).set(Utc::now().timestamp() as f64);
        info!(export = %spec.name, period = %window.label, rows = manifest.rows, bytes = manifest.bytes, seconds, file = %manifest.file, "export written");
        self.record(&spec.name, &record).await;
        Ok(record)
    }

    /// Records a failed run and counts it.
    async fn failed(&self, spec: &ExportSpec, window: &Window, mut record: RunRecord, reason: String) -> RunError {
        record.finished_at = Some(Utc::now());
        record.status = RunStatus::Failed;
        record.error = Some(reason.clone());
        metrics::counter!(m::EXPORT_RUNS, "export" => spec.name.clone(), "outcome" => m::OUTCOME_ERROR).increment(1);
        warn!(export = %spec.name, period = %window.label, attempt = record.attempt, error = %reason, "export failed");
        self.record(&spec.name, &record).await;
        RunError::Failed(Box::new(record))
    }

    /// Removes what dead runs of the period left, answers the query, writes the data file and
    /// its manifest, and renames both into place while the lock is still ours.
    async fn write(
        &self,
        spec: &ExportSpec,
        window: &Window,
        trigger: Trigger,
        lease: &mut lock::Lease,
    ) -> Result<Manifest, String> {
        let file = spec.file_name(window);
        let path = spec.destination.join(&file);
        remove_stale_temporaries(&path, file::Stale::All).await;
        let (manifest, staged) = self
            .produce(Job {
                export: Some(spec.name.clone()),
                period: Some(ManifestPeriod {
                    label: window.label.clone(),
                    description: spec.period.to_string(),
                    start: window.start,
                    end: window.end,
                    time_zone: spec.time_zone.name().to_owned(),
                }),
                query: &spec.query,
                operation_name: spec.operation_name.as_deref(),
                variables: spec.variables_for(window),
                relative_variables: spec.relative.iter().map(|(k, v)| (k.clone(), v.text.clone())).collect(),
                table: spec.table.clone(),
                format: spec.format,
                path,
                file,
                trigger,
            })
            .await?;
        if !lease.confirm().await {
            return Err("the export lock was lost before the files were renamed into place (its lease ran out, or \
                        another run took it); nothing was published"
                .to_owned());
        }
        publish(staged).await?;
        Ok(manifest)
    }

    /// Runs an ad-hoc query (`skyglass export --query`) into `path`, with a manifest beside it.
    pub async fn run_query(
        &self,
        query: &str,
        variables: serde_json::Map<String, Value>,
        format: Format,
        path: &Path,
    ) -> Result<Manifest, String> {
        remove_stale_temporaries(path, file::Stale::OfDeadProcesses).await;
        let (manifest, staged) = self
            .produce(Job {
                export: None,
                period: None,
                query,
                operation_name: None,
                variables,
                relative_variables: Default::default(),
                table: table::TablePlan::new(&table::SchemaTypes::skyglass(), query, None)?,
                format,
                path: path.to_path_buf(),
                file: path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
                trigger: Trigger::Command,
            })
            .await?;
        publish(staged).await?;
        Ok(manifest)
    }

    /// Answers a job's query and writes its rows and its manifest (`<path>.manifest.json`)
    /// under temporary names, ready to publish.
    async fn produce(&self, job: Job<'_>) -> Result<(Manifest, Vec<file::Staged>), String> {
        let started_at = Utc::now();
        let answer = self.answer(job.query, job.operation_name, &job.variables).await?;
        let (table, format, path) = (job.table.clone(), job.format, job.path.clone());
        let (rows, bytes, sha256, data) =
            tokio::task::spawn_blocking(move || -> Result<(u64, u64, String, file::Staged), String> {
                let rows = table.rows(&answer.data);
                let bytes = table.encode(&rows, format)?;
                let checksum = hex(&Sha256::digest(&bytes));
                let staged =
                    file::Staged::write(&path, &bytes).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
                Ok((rows.len() as u64, bytes.len() as u64, checksum, staged))
            })
            .await
            .map_err(|e| format!("the export task failed: {e}"))??;
        let finished_at = Utc::now();
        let micros = |us: Option<i64>| us.and_then(DateTime::from_timestamp_micros);
        let manifest = Manifest {
            export: job.export,
            period: job.period,
            query: job.query.to_owned(),
            operation_name: job.operation_name.map(str::to_owned),
            variables: Value::Object(job.variables),
            relative_variables: job.relative_variables,
            format: job.format.extension().to_owned(),
            file: job.file,
            rows,
            bytes,
            sha256,
            columns: manifest::columns_of(&job.table),
            lake: ManifestLake {
                generation: answer.lake.generation,
                flushed_through: micros(answer.lake.flushed_through_us),
                last_flush_at: micros(answer.lake.last_flush_at_us),
            },
            trigger: job.trigger,
            started_at,
            finished_at,
            duration_seconds: (finished_at - started_at).num_milliseconds() as f64 / 1000.0,
            skyglass_version: env!("CARGO_PKG_VERSION").to_owned(),
        };
        let manifest_path = manifest_path(&job.path);
        let body = serde_json::to_vec_pretty(&manifest).map_err(|e| e.to_string())?;
        let staged = tokio::task::spawn_blocking(move || {
            file::Staged::write(&manifest_path, &body)
                .map_err(|e| format!("cannot write {}: {e}", manifest_path.display()))
        })
        .await
        .map_err(|e| format!("the export task failed: {e}"))??;
        Ok((manifest, vec![data, staged]))
    }

    /// The manifest of a period some instance exported already: as Redis remembers it, else
    /// beside the data file.
    async fn done(&self, spec: &ExportSpec, window: &Window) -> Option<Manifest> {
        if let Some(mut connection) = self.redis.connection().await
            && let Ok(Some(body)) = redis::cmd("GET")
                .arg(self.key(spec, window, "done"))
                .query_async::<Option<String>>(&mut connection)
                .await
            && let Ok(manifest) = serde_json::from_str(&body)
        {
            return Some(manifest);
        }
        let path = manifest_path(&spec.destination.join(spec.file_name(window)));
        let body = tokio::fs::read(path).await.ok()?;
        serde_json::from_slice(&body).ok()
    }

    async fn record(&self, name: &str, record: &RunRecord) {
        self.last.lock().unwrap_or_else(|p| p.into_inner()).insert(name.to_owned(), record.clone());
        if let Some(mut connection) = self.redis.connection().await {
            let body = serde_json::to_string(record).unwrap_or_default();
            let _: Result<(), _> = redis::cmd("SET")
                .arg(format!("{}{name}:last", self.prefix))
                .arg(body)
                .query_async(&mut connection)
                .await;
        }
    }

    /// The last run of an export, by any instance (this one's when Redis cannot tell).
    pub async fn last_run(&self, name: &str) -> Option<RunRecord> {
        if let Some(mut connection) = self.redis.connection().await
            && let Ok(Some(body)) = redis::cmd("GET")
                .arg(format!("{}{name}:last", self.prefix))
                .query_async::<Option<String>>(&mut connection)
                .await
            && let Ok(record) = serde_json::from_str(&body)
        {
            return Some(record);
        }
        self.last.lock().unwrap_or_else(|p| p.into_inner()).get(name).cloned()
    }
}

/// One file to produce: a query's answer as rows in a format, and what its manifest says.
struct Job<'a> {
    export: Option<String>,
    period: Option<ManifestPeriod>,
    query: &'a str,
    operation_name: Option<&'a str>,
    variables: serde_json::Map<String, Value>,
    relative_variables: std::collections::BTreeMap<String, String>,
    table: table::TablePlan,
    format: Format,
    path: PathBuf,
    file: String,
    trigger: Trigger,
}

/// `<path>.manifest.json`.
fn manifest_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".manifest.json");
    PathBuf::from(name)
}

/// Removes the temporary files dead runs left of a data file and its manifest (a failure to
/// look is logged: the write that follows reports what is wrong with the directory).
async fn remove_stale_temporaries(path: &Path, which: file::Stale) {
    let paths = [path.to_path_buf(), manifest_path(path)];
    let removed = tokio::task::spawn_blocking(move || {
        paths.iter().map(|p| file::remove_stale(p, which)).sum::<std::io::Result<usize>>()
    })
    .await;
    match removed {
        Ok(Ok(0)) => {}
        Ok(Ok(n)) => info!(path = %path.display(), removed = n, "removed temporary files that dead export runs left"),
        Ok(Err(error)) => warn!(path = %path.display(), %error, "cannot look for temporary files of dead export runs"),
        Err(error) => warn!(%error, "the export task failed"),
    }
}

/// Renames staged files into place, in order (the data file, then its manifest).
async fn publish(staged: Vec<file::Staged>) -> Result<(), String> {
    tokio::task::spawn_blocking(move || {
        for file in staged {
            let path = file.path().to_path_buf();
            file.publish().map_err(|e| format!("cannot rename {} into place: {e}", path.display()))?;
        }
        Ok(())
    })
    .await
    .map_err(|e| format!("the export task failed: {e}"))?
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
