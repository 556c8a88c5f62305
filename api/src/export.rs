//! Aggregate exports: a GraphQL query, run for a period on a schedule, written as a file.
//!
//! Each run covers one [`Window`] of its export's period. It takes a Redis lock with a lease
//! for that export and period (so one replica runs it), answers the query through the schema
//! (at one lake generation: if a flush lands midway, it answers again), writes the rows in the
//! export's format atomically (temp, fsync, rename), then a manifest beside them, and marks the
//! period done in Redis. A re-run of a period over an unchanged lake writes the same bytes.
//! Failed scheduled runs retry with backoff until the next period is due. The last run of each
//! export is kept in Redis for the `exports` query and in metrics.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use tokio::sync::watch;
use tracing::{info, warn};

use crate::graphql::{self, QueryRunner, SkyglassSchema};
use crate::metrics as m;
use crate::redis_link::RedisLink;

pub mod spec;
pub mod table;

pub use spec::{ExportSpec, Format, Window};

/// How long a run's lock lasts without renewal (a crashed runner frees it this fast).
const LEASE: Duration = Duration::from_secs(60);
/// How long Redis remembers that a period was exported.
const DONE_SECONDS: u64 = 40 * 86_400;
/// Retries of a failed scheduled run wait this long, doubling up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_secs(30);
const MAX_BACKOFF: Duration = Duration::from_secs(30 * 60);
/// How often a run answers again when the lake changed while it answered.
const GENERATION_TRIES: usize = 3;
/// The page size exports may ask for (they are the operator's queries, not clients').
pub const EXPORT_MAX_PAGE_SIZE: i32 = 10_000;

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
}

/// Why a run did not happen.
#[derive(Debug)]
pub enum RunError {
    /// Another instance holds this period's lock (it runs it).
    Busy,
    Failed(String),
}

impl std::fmt::Display for RunError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RunError::Busy => f.write_str("another instance is running this export period now"),
            RunError::Failed(reason) => f.write_str(reason),
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
    /// The last run of each export seen by this process (when Redis cannot tell).
    last: Mutex<HashMap<String, RunRecord>>,
}

/// An answer to an export's query and the lake state it was computed at.
struct Answer {
    data: Value,
    generation: u64,
    last_flush_at_us: Option<i64>,
}

impl Exports {
    pub fn new(
        specs: Vec<ExportSpec>,
        runner: QueryRunner,
        lake: PathBuf,
        redis: Arc<RedisLink>,
        namespace: &str,
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
        }
        Exports {
            specs: specs.into_iter().map(Arc::new).collect(),
            schema,
            runner,
            lake,
            redis,
            prefix: format!("{namespace}:export:"),
            last: Mutex::new(HashMap::new()),
        }
    }

    pub fn specs(&self) -> &[Arc<ExportSpec>] {
        &self.specs
    }

    pub fn find(&self, name: &str) -> Option<&Arc<ExportSpec>> {
        self.specs.iter().find(|spec| spec.name == name)
    }

    /// Runs one export for one period now: locked, written atomically, recorded.
    pub async fn run(
        &self,
        spec: &ExportSpec,
        window: &Window,
        trigger: Trigger,
        attempt: u32,
    ) -> Result<RunRecord, RunError> {
        let lock_key = format!("{}{}:{}:lock", self.prefix, spec.name, window.label);
        let token = lock_token();
        let mut connection = self.redis.connection().await.ok_or_else(|| {
            RunError::Failed("Redis cannot be reached, so the export lock cannot be taken".to_owned())
        })?;
        let taken: Option<String> = redis::cmd("SET")
            .arg(&lock_key)
            .arg(&token)
            .arg("NX")
            .arg("PX")
            .arg(LEASE.as_millis() as u64)
            .query_async(&mut connection)
            .await
            .map_err(|e| RunError::Failed(format!("cannot take the export lock: {e}")))?;
        if taken.is_none() {
            return Err(RunError::Busy);
        }
        let renewal = tokio::spawn(renew(connection.clone(), lock_key.clone(), token.clone()));

        let started_at = Utc::now();
        let mut record = RunRecord {
            period: window.label.clone(),
            period_start: window.start,
            period_end: window.end,
            status: RunStatus::Running,
            trigger,
            attempt,
            started_at,
            finished_at: None,
            rows: None,
            bytes: None,
            file: None,
            error: None,
            generation: None,
        };
        self.record(&spec.name, &record).await;
        let span = tracing::info_span!("export", export = %spec.name, period = %window.label, ?trigger, attempt);
        let began = Instant::now();
        let outcome = tracing::Instrument::instrument(self.write(spec, window, trigger), span).await;
        let seconds = began.elapsed().as_secs_f64();
        renewal.abort();
        let _: Result<i64, _> =
            redis::Script::new(RELEASE).key(&lock_key).arg(&token).invoke_async(&mut connection).await;

        record.finished_at = Some(Utc::now());
        let labels = [("export", spec.name.clone())];
        metrics::histogram!(m::EXPORT_DURATION, &labels).record(seconds);
        match outcome {
            Ok(manifest) => {
                record.status = RunStatus::Succeeded;
                record.rows = Some(manifest.rows);
                record.bytes = Some(manifest.bytes);
                record.file = Some(manifest.file.clone());
                record.generation = Some(manifest.lake.generation);
                let done_key = format!("{}{}:{}:done", self.prefix, spec.name, window.label);
                let body = serde_json::to_string(&manifest).unwrap_or_default();
                let _: Result<(), _> = redis::cmd("SET")
                    .arg(&done_key)
                    .arg(body)
                    .arg("EX")
                    .arg(DONE_SECONDS)
                    .query_async(&mut connection)
                    .await;
                metrics::counter!(m::EXPORT_RUNS, "export" => spec.name.clone(), "outcome" => m::OUTCOME_OK)
                    .increment(1);
                metrics::gauge!(m::EXPORT_ROWS, &labels).set(manifest.rows as f64);
                metrics::gauge!(m::EXPORT_BYTES, &labels).set(manifest.bytes as f64);
                metrics::gauge!(m::EXPORT_LAST_SUCCESS, &labels).set(Utc::now().timestamp() as f64);
                info!(export = %spec.name, period = %window.label, rows = manifest.rows, bytes = manifest.bytes, seconds, file = %manifest.file, "export written");
                self.record(&spec.name, &record).await;
                Ok(record)
            }
            Err(reason) => {
                record.status = RunStatus::Failed;
                record.error = Some(reason.clone());
                metrics::counter!(m::EXPORT_RUNS, "export" => spec.name.clone(), "outcome" => m::OUTCOME_ERROR)
                    .increment(1);
                warn!(export = %spec.name, period = %window.label, attempt, error = %reason, "export failed");
                self.record(&spec.name, &record).await;
                Err(RunError::Failed(reason))
            }
        }
    }

    /// Answers the query and writes the data file and its manifest.
    async fn write(&self, spec: &ExportSpec, window: &Window, trigger: Trigger) -> Result<Manifest, String> {
        let file = spec.file_name(window);
        self.produce(Job {
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
            table: spec.table.clone(),
            format: spec.format,
            path: spec.destination.join(&file),
            file,
            trigger,
        })
        .await
    }

    /// Runs an ad-hoc query (`skyglass export --query`) into `path`, with a manifest beside it.
    pub async fn run_query(
        &self,
        query: &str,
        variables: serde_json::Map<String, Value>,
        format: Format,
        path: &Path,
    ) -> Result<Manifest, String> {
        self.produce(Job {
            export: None,
            period: None,
            query,
            operation_name: None,
            variables,
            table: table::TablePlan::new(&table::SchemaTypes::skyglass(), query, None)?,
            format,
            path: path.to_path_buf(),
            file: path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
            trigger: Trigger::Command,
        })
        .await
    }

    /// Answers a job's query, writes its rows, then its manifest (`<path>.manifest.json`).
    async fn produce(&self, job: Job<'_>) -> Result<Manifest, String> {
        let started_at = Utc::now();
        let answer = self.answer(job.query, job.operation_name, &job.variables).await?;
        let (table, format, path) = (job.table.clone(), job.format, job.path.clone());
        let (rows, bytes, sha256) = tokio::task::spawn_blocking(move || -> Result<(u64, u64, String), String> {
            let rows = table.rows(&answer.data);
            let bytes = table.encode(&rows, format)?;
            let checksum = hex(&Sha256::digest(&bytes));
            write_atomically(&path, &bytes).map_err(|e| format!("cannot write {}: {e:#}", path.display()))?;
            Ok((rows.len() as u64, bytes.len() as u64, checksum))
        })
        .await
        .map_err(|e| format!("the export task failed: {e}"))??;
        let finished_at = Utc::now();
        let manifest = Manifest {
            export: job.export,
            period: job.period,
            query: job.query.to_owned(),
            operation_name: job.operation_name.map(str::to_owned),
            variables: Value::Object(job.variables),
            format: job.format.extension().to_owned(),
            file: job.file,
            rows,
            bytes,
            sha256,
            columns: columns_of(&job.table),
            lake: ManifestLake {
                generation: answer.generation,
                flushed_through: answer.last_flush_at_us.and_then(DateTime::from_timestamp_micros),
            },
            trigger: job.trigger,
            started_at,
            finished_at,
            duration_seconds: (finished_at - started_at).num_milliseconds() as f64 / 1000.0,
            skyglass_version: env!("CARGO_PKG_VERSION").to_owned(),
        };
        let mut manifest_path = job.path.into_os_string();
        manifest_path.push(".manifest.json");
        let manifest_path = PathBuf::from(manifest_path);
        let body = serde_json::to_vec_pretty(&manifest).map_err(|e| e.to_string())?;
        tokio::task::spawn_blocking(move || {
            write_atomically(&manifest_path, &body)
                .map_err(|e| format!("cannot write {}: {e:#}", manifest_path.display()))
        })
        .await
        .map_err(|e| format!("the export task failed: {e}"))??;
        Ok(manifest)
    }

    /// Answers a query at one lake generation.
    async fn answer(
        &self,
        query: &str,
        operation_name: Option<&str>,
        variables: &serde_json::Map<String, Value>,
    ) -> Result<Answer, String> {
        for _ in 0..GENERATION_TRIES {
            let before = self.lake_state().await?;
            let mut request = async_graphql::Request::new(query)
                .variables(async_graphql::Variables::from_json(Value::Object(variables.clone())));
            if let Some(name) = operation_name {
                request = request.operation_name(name);
            }
            let request = graphql::with_loaders(request, &self.runner).data(crate::cache::Volatile::default());
            let response = self.schema.execute(request).await;
            if !response.errors.is_empty() {
                let messages: Vec<String> = response
                    .errors
                    .iter()
                    .map(|e| {
                        let path: Vec<String> = e
                            .path
                            .iter()
                            .map(|p| match p {
                                async_graphql::PathSegment::Field(name) => name.clone(),
                                async_graphql::PathSegment::Index(index) => index.to_string(),
                            })
                            .collect();
                        if path.is_empty() { e.message.clone() } else { format!("{}: {}", path.join("."), e.message) }
                    })
                    .collect();
                return Err(format!("the query failed: {}", messages.join("; ")));
            }
            let after = self.lake_state().await?;
            if after.generation == before.generation {
                let data = serde_json::to_value(&response.data).map_err(|e| e.to_string())?;
                return Ok(Answer { data, generation: before.generation, last_flush_at_us: before.last_flush_at_us });
            }
        }
        Err(format!("the lake changed while the query ran, {GENERATION_TRIES} times in a row; try again"))
    }

    async fn lake_state(&self) -> Result<lake::catalog::CatalogState, String> {
        let lake = self.lake.clone();
        tokio::task::spawn_blocking(move || lake::catalog::read_state(&lake))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("cannot read the lake catalog: {e}"))
    }

    /// Whether a period was exported already (by any instance).
    async fn is_done(&self, spec: &ExportSpec, window: &Window) -> bool {
        let key = format!("{}{}:{}:done", self.prefix, spec.name, window.label);
        if let Some(mut connection) = self.redis.connection().await
            && let Ok(true) = redis::cmd("EXISTS").arg(&key).query_async::<bool>(&mut connection).await
        {
            return true;
        }
        spec.destination.join(format!("{}.manifest.json", spec.file_name(window))).exists()
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
        let mut backoff = FIRST_BACKOFF;
        for attempt in 1.. {
            if self.is_done(spec, window).await {
                return true;
            }
            match self.run(spec, window, Trigger::Schedule, attempt).await {
                Ok(_) | Err(RunError::Busy) => return true,
                Err(RunError::Failed(_)) => {}
            }
            let retry_at = Utc::now() + chrono::Duration::from_std(backoff).unwrap_or_default();
            if give_up_at.is_some_and(|next| retry_at >= next) {
                warn!(export = %spec.name, period = %window.label, attempt, "export still failing when its next period is due; leaving this period");
                return true;
            }
            tokio::select! {
                () = tokio::time::sleep(backoff) => {}
                _ = stop.wait_for(|stopping| *stopping) => return false,
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
        true
    }
}

/// One file to produce: a query's answer as rows in a format, and what its manifest says.
struct Job<'a> {
    export: Option<String>,
    period: Option<ManifestPeriod>,
    query: &'a str,
    operation_name: Option<&'a str>,
    variables: serde_json::Map<String, Value>,
    table: table::TablePlan,
    format: Format,
    path: PathBuf,
    file: String,
    trigger: Trigger,
}

/// What a run wrote, beside its data file as `<file>.manifest.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    /// The export's name and period; none for an ad-hoc query.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub export: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub period: Option<ManifestPeriod>,
    pub query: String,
    pub operation_name: Option<String>,
    /// The variables as run, the period's included.
    pub variables: Value,
    pub format: String,
    /// The data file, relative to the destination.
    pub file: String,
    pub rows: u64,
    pub bytes: u64,
    /// SHA-256 of the data file, hex.
    pub sha256: String,
    pub columns: Vec<ManifestColumn>,
    pub lake: ManifestLake,
    pub trigger: Trigger,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    pub duration_seconds: f64,
    pub skyglass_version: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ManifestPeriod {
    pub label: String,
    /// As declared (`yesterday`, `last 7 days`).
    pub description: String,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    pub time_zone: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ManifestColumn {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub list: bool,
}

/// The lake the answer was computed from: its generation, and the time of its last flush (what
/// the buffer had reached the lake by).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ManifestLake {
    pub generation: u64,
    pub flushed_through: Option<DateTime<Utc>>,
}

fn columns_of(table: &table::TablePlan) -> Vec<ManifestColumn> {
    table
        .columns
        .iter()
        .map(|c| ManifestColumn { name: c.name.clone(), kind: c.kind.name().to_owned(), list: c.list })
        .collect()
}

/// Deletes the lock only while it is still ours.
const RELEASE: &str =
    "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) else return 0 end";
/// Extends the lease only while the lock is still ours.
const RENEW: &str =
    "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) else return 0 end";

/// Keeps a run's lease alive while it runs.
async fn renew(mut connection: redis::aio::ConnectionManager, key: String, token: String) {
    let script = redis::Script::new(RENEW);
    loop {
        tokio::time::sleep(LEASE / 3).await;
        let renewed: Result<i64, _> =
            script.key(&key).arg(&token).arg(LEASE.as_millis() as u64).invoke_async(&mut connection).await;
        if !matches!(renewed, Ok(1)) {
            warn!(key, "the export lock's lease could not be renewed");
        }
    }
}

fn lock_token() -> String {
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("{}-{}-{n}", std::process::id(), Utc::now().timestamp_nanos_opt().unwrap_or_default())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Writes `bytes` to `path` so that `path` is never partial: a temporary name beside it, fsync,
/// rename, fsync of the directory. A temporary file left by a crash is overwritten by the next
/// run of the same period.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    Ok(lake::writer::write_bytes_atomically(path, bytes)?)
}
