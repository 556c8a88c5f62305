//! The `skyglass` command line: subcommands, flags, their `SKYGLASS_*` environment variables
//! and their config file keys (precedence: flag > environment > file > default; see
//! [`crate::config`]). A bad flag, value, variable or key is refused with one line that says
//! what to fix.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand, ValueEnum};
use ingest::source::SourceSpec;

use crate::config::{self, ConfigError};
use crate::serve;

#[derive(Parser, Debug)]
#[command(name = "skyglass", version, about = "A lakehouse of Bluesky posts with a GraphQL analytics API")]
pub struct Cli {
    /// A TOML file of settings: each key is a `SKYGLASS_*` variable in lower case without the
    /// prefix (`flush_interval = "1m"`); flags and variables override it. See
    /// `deploy/skyglass.example.toml`.
    #[arg(long, global = true, env = "SKYGLASS_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Log lines for people (`pretty`) or JSON lines for machines (`json`).
    #[arg(long, global = true, env = "SKYGLASS_LOG_FORMAT", value_enum, default_value_t = LogFormat::Pretty)]
    pub log_format: LogFormat,
    /// Print the settings this command would run with, each with where it came from (flag,
    /// environment, config file, default), and exit.
    #[arg(long, global = true)]
    pub print_config: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Pretty,
    Json,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Serve the GraphQL API, with background ingest and flushing (by --role).
    Serve(Box<ServeArgs>),
    /// Ingest events from a source into the lake, without serving queries.
    Ingest(IngestArgs),
    /// Print the GraphQL schema (SDL).
    Schema,
    /// Run an export now: one declared in the config file's [[export]] tables (for the period
    /// that ended last), or an ad-hoc query into a file. Exit status of a declared export: 0
    /// when written, and when a run exported the period already (it says so; --force runs it
    /// again); 75 when another run holds the period's lock now (try again later); 1 when it
    /// failed.
    Export(ExportArgs),
    /// Write a synthetic lake straight through the lake writer (scale tiers, benchmarks).
    Generate(GenerateArgs),
    /// Measure ingest, storage and queries against same-run baselines; write BENCHMARKS.md.
    Bench(BenchArgs),
    /// Inspect the lake.
    Lake {
        #[command(subcommand)]
        command: LakeCommand,
    },
    /// Manage API keys: only their SHA-256 is kept, in the keys file that `serve --api-keys`
    /// reads (restart `serve` to apply a change).
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
}

#[derive(Subcommand, Debug)]
pub enum KeysCommand {
    /// Make a new key with a role; prints it once (it is kept nowhere).
    Add {
        /// A name for the key (who or what uses it).
        name: String,
        /// What the key may do.
        #[arg(long, value_parser = ["reader", "admin"], default_value = "reader")]
        role: String,
        #[command(flatten)]
        file: KeysFileArgs,
    },
    /// List the keys: names and roles.
    List {
        #[command(flatten)]
        file: KeysFileArgs,
    },
    /// Remove a key by name.
    Remove {
        name: String,
        #[command(flatten)]
        file: KeysFileArgs,
    },
}

#[derive(Args, Debug, Clone)]
pub struct KeysFileArgs {
    /// The API keys file.
    #[arg(long = "api-keys", env = "SKYGLASS_API_KEYS", default_value = "./data/api-keys.toml")]
    pub api_keys: PathBuf,
}

#[derive(Subcommand, Debug)]
pub enum LakeCommand {
    /// Print the lake's size and state as JSON.
    Stats(LakeArgs),
    /// Bring stored posts up to the current enrichment version (detected language, text
    /// hashtags, text length), one day partition at a time, each swapped in atomically. Safe
    /// while `serve` runs: flushes wait for the partition being rewritten.
    Reenrich(ReenrichArgs),
    /// Merge each day's small posts files into sorted files of about the target size, leaving
    /// out deleted posts and copies; each partition swapped in atomically. Safe while `serve`
    /// runs (flushes wait for the partition being compacted) and safe to kill at any moment.
    Compact(CompactArgs),
    /// Build the text index of every `posts` data file that lacks one (compaction builds them
    /// for the files it writes), and remove indexes whose data file is gone. Safe while `serve`
    /// runs: flushes and compactions wait for the partition being indexed.
    Reindex(CompanionArgs),

    /// Build the rollups (posts per hour and language, embed type, reply; posts per hour and
    /// hashtag, and per hashtag and author; posts per day and author; link domains; keys by
    /// author; likes per post) of every data file that lacks them (flushes and compactions
    /// write them for their files), and remove rollups whose data file is gone.
    /// Safe while `serve` runs.
    Rollup(CompanionArgs),
    /// Check every data file from its footer (row counts, schema, partition placement) and
    /// report what is wrong, changing nothing. Exits 1 if it finds an error.
    Verify(VerifyArgs),
}

#[derive(Args, Debug, Clone)]
pub struct ExportArgs {
    /// The export to run, by its name in the config file's [[export]] tables.
    #[arg(required_unless_present_any = ["query", "list"], conflicts_with_all = ["query", "list"])]
    pub name: Option<String>,
    /// Run as if the schedule fired at this time: the period that ended last before it. RFC 3339,
    /// or a date (its midnight in the export's time zone). Default: now.
    #[arg(long, requires = "name")]
    pub as_of: Option<String>,
    /// List the declared exports, with their periods, schedules and files, and exit.
    #[arg(long)]
    pub list: bool,
    /// An ad-hoc export: a file holding a GraphQL query that selects one root field.
    #[arg(long, requires_all = ["format", "out"])]
    pub query: Option<PathBuf>,
    /// The ad-hoc query's variables, as a JSON object.
    #[arg(long, requires = "query")]
    pub variables: Option<String>,
    /// The ad-hoc export's format.
    #[arg(long, value_enum, requires = "query")]
    pub format: Option<crate::export::Format>,
    /// The ad-hoc export's file (its manifest goes beside it, as FILE.manifest.json).
    #[arg(long, requires = "query")]
    pub out: Option<PathBuf>,
    /// Run the period even when a run exported it already (it writes the same bytes over an
    /// unchanged lake).
    #[arg(long, requires = "name")]
    pub force: bool,
    #[command(flatten)]
    pub lake: LakeArgs,
    #[command(flatten)]
    pub redis: RedisArgs,
    #[command(flatten)]
    pub export_runs: ExportRunArgs,
}

/// How declared exports are locked and retried (`serve` and `skyglass export NAME`).
#[derive(Args, Debug, Clone)]
pub struct ExportRunArgs {
    /// How long an export run's lock lasts without renewal (it is renewed every third of it):
    /// a killed run holds its period this long.
    #[arg(long, env = "SKYGLASS_EXPORT_LEASE", default_value = "60s", value_parser = parse_positive_duration)]
    pub export_lease: Duration,
    /// The first wait before a failed scheduled export run is tried again; it doubles up to 60
    /// times itself, until the next period is due.
    #[arg(long, env = "SKYGLASS_EXPORT_RETRY_BACKOFF", default_value = "30s", value_parser = parse_positive_duration)]
    pub export_retry_backoff: Duration,
}

impl ExportRunArgs {
    pub fn settings(&self) -> crate::export::Settings {
        crate::export::Settings { lease: self.export_lease, retry_backoff: self.export_retry_backoff }
    }
}

/// A process end with an exit status of its own (not 1), and the line that says why.
#[derive(Debug)]
pub struct Exit {
    pub code: u8,
    pub message: String,
}

impl std::fmt::Display for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Exit {}

/// `skyglass export NAME`'s status when another run holds the period's lock: EX_TEMPFAIL of
/// sysexits.h, "try again later".
pub const EXIT_BUSY: u8 = 75;

#[derive(Args, Debug, Clone)]
pub struct VerifyArgs {
    #[command(flatten)]
    pub lake: LakeArgs,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug, Clone)]
pub struct CompactArgs {
    #[command(flatten)]
    pub lake: LakeArgs,
    #[command(flatten)]
    pub days: DayRangeArgs,
    #[command(flatten)]
    pub target: CompactTargetArgs,
}

/// Which day partitions a lake command works on.
#[derive(Args, Debug, Clone)]
pub struct DayRangeArgs {
    /// The first UTC day partition (YYYY-MM-DD); default: the oldest.
    #[arg(long)]
    pub since: Option<chrono::NaiveDate>,
    /// The last UTC day partition (YYYY-MM-DD); default: the newest.
    #[arg(long)]
    pub until: Option<chrono::NaiveDate>,
}

#[derive(Args, Debug, Clone)]
pub struct CompactTargetArgs {
    /// The size compaction aims for per file, in MiB; files of half of it or more are kept.
    #[arg(long, env = "SKYGLASS_COMPACT_TARGET_MB", default_value_t = 256, value_parser = clap::value_parser!(u64).range(1..=65_536))]
    pub compact_target_mb: u64,
}

impl CompactTargetArgs {
    pub fn bytes(&self) -> u64 {
        self.compact_target_mb * 1024 * 1024
    }
}

/// `lake reindex` and `lake rollup`: what they build beside the posts files of some days.
#[derive(Args, Debug, Clone)]
pub struct CompanionArgs {
    #[command(flatten)]
    pub lake: LakeArgs,
    #[command(flatten)]
    pub days: DayRangeArgs,
    /// Build every one again, not only the missing ones.
    #[arg(long)]
    pub rebuild: bool,
}

#[derive(Args, Debug, Clone)]
pub struct ReenrichArgs {
    #[command(flatten)]
    pub lake: LakeArgs,
    /// The first UTC day partition to redo (YYYY-MM-DD).
    #[arg(long)]
    pub since: chrono::NaiveDate,
    /// The last UTC day partition to redo (YYYY-MM-DD); every later one without it.
    #[arg(long)]
    pub until: Option<chrono::NaiveDate>,
}

#[derive(Args, Debug, Clone)]
pub struct LakeArgs {
    /// The lake directory.
    #[arg(long, env = "SKYGLASS_LAKE", default_value = "./data/lake")]
    pub lake: PathBuf,
}

#[derive(Args, Debug, Clone)]
pub struct GenerateArgs {
    /// Days of posts, from --first-day.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=3660))]
    pub days: u32,
    /// Posts per day (Bluesky has about 3 million).
    #[arg(long, default_value_t = 3_000_000, value_parser = clap::value_parser!(u64).range(1..=1_000_000_000))]
    pub posts_per_day: u64,
    /// The first day, UTC (YYYY-MM-DD).
    #[arg(long, default_value = "2026-01-01")]
    pub first_day: chrono::NaiveDate,
    /// The same seed writes the same lake.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// The share of posts deleted later (0 to 1).
    #[arg(long, default_value_t = 0.02, value_parser = parse_share)]
    pub deleted_share: f64,
    /// Accounts taken down per day.
    #[arg(long, default_value_t = 3)]
    pub takedowns_per_day: u32,
    /// Build each file's text index, as compaction does for the files it writes (`false`
    /// leaves them to `skyglass lake reindex`).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub text_indexes: bool,
    /// Likes and reposts per post, on average (Bluesky has about ten): the `interactions`
    /// table, a few posts getting most, some undone later. None by default.
    #[arg(long, default_value_t = 0.0, value_parser = parse_likes_per_post)]
    pub likes_per_post: f64,
    /// The lake directory to write; it must be empty or absent.
    #[arg(long)]
    pub out: PathBuf,
}

#[derive(Args, Debug, Clone)]
pub struct BenchArgs {
    /// A lake to query (make one with `skyglass generate`).
    #[arg(long)]
    pub lake: PathBuf,
    /// Where the report goes.
    #[arg(long, default_value = "BENCHMARKS.md")]
    pub out: PathBuf,
    /// A scratch directory (the ingest benchmark's file, lake and Redis socket).
    #[arg(long)]
    pub work: PathBuf,
    /// Warm runs per query class (after one cold run).
    #[arg(long, default_value_t = 7, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub runs: u32,
    /// Synthetic Jetstream events for the ingest benchmark.
    #[arg(long, default_value_t = 300_000)]
    pub ingest_events: usize,
    /// Measure one part only (for working on it); the report then holds that part alone.
    #[arg(long, value_enum)]
    pub only: Option<BenchPart>,
    /// A Python with the `chdb` package (`pip install chdb`): the query classes are also asked
    /// of chDB over the same files, side by side. Without it, chDB is not measured.
    #[arg(long)]
    pub chdb_python: Option<PathBuf>,
}

#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum BenchPart {
    Ingest,
    Queries,
    /// Cached answers under `wrk`.
    Cache,
    /// A minute of `wrk` (cached and uncached queries) against `serve` while it ingests.
    Load,
    /// Aggregates over the lake's last 30 days from rollups against the same from the posts.
    Rollups,
    /// Text searches narrowed by the text indexes against the same scanning the posts.
    Search,
    /// Likes, reposts, replies, quotes and trends against the same plans run on DuckDB (over a
    /// lake made with `generate --likes-per-post`; only with `--only`).
    Engagement,
}

#[derive(Args, Debug, Clone)]
pub struct RedisArgs {
    /// The Redis server that buffers events (and later caches answers).
    #[arg(long, env = "SKYGLASS_REDIS_URL", default_value = "redis://127.0.0.1:6379")]
    pub redis_url: String,
    /// Prefix of every Redis key, so several deployments can share one Redis.
    #[arg(long, env = "SKYGLASS_REDIS_NAMESPACE", default_value = "skyglass")]
    pub redis_namespace: String,
}

#[derive(Args, Debug, Clone)]
pub struct FlushArgs {
    /// Flush the buffer into the lake when its oldest row is this old (e.g. 30s, 5m, 1h).
    #[arg(long, env = "SKYGLASS_FLUSH_INTERVAL", default_value = "5m", value_parser = parse_duration)]
    pub flush_interval: Duration,
    /// Flush when this many rows are waiting.
    #[arg(long, env = "SKYGLASS_FLUSH_MAX_ROWS", default_value_t = 200_000, value_parser = clap::value_parser!(u32).range(1..))]
    pub flush_max_rows: u32,
    /// This worker's name in the flusher consumer group; keep it stable across restarts.
    #[arg(long, env = "SKYGLASS_FLUSH_CONSUMER", default_value = "flusher-1")]
    pub flush_consumer: String,
    /// Take over buffer entries that another flusher read and left unacknowledged this long
    /// (it died). Default: twice the flush interval plus a minute.
    #[arg(long, env = "SKYGLASS_FLUSH_CLAIM_AFTER", value_parser = parse_duration)]
    pub flush_claim_after: Option<Duration>,
}

#[derive(Args, Debug, Clone)]
pub struct JetstreamArgs {
    /// Jetstream's zstd dictionary file: with it, Jetstream sends compressed events (about a
    /// third of the bytes). Get it from the Jetstream repository (`pkg/models/zstd_dictionary`).
    #[arg(long, env = "SKYGLASS_JETSTREAM_ZSTD_DICTIONARY")]
    pub jetstream_zstd_dictionary: Option<PathBuf>,
}

#[derive(Args, Debug, Clone)]
pub struct IngestArgs {
    /// Where events come from: `jetstream` (Bluesky's public instances), `jetstream:WSS_URL[,URL…]`,
    /// `file:PATH` (Jetstream JSON lines, plain, .gz or .zst) or `synthetic[:EVENTS_PER_SEC]`.
    #[arg(long, env = "SKYGLASS_SOURCE", default_value = "jetstream")]
    pub source: SourceSpec,
    /// Read a finite source to its end, flush everything into the lake and exit.
    #[arg(long)]
    pub once: bool,
    #[command(flatten)]
    pub jetstream: JetstreamArgs,
    #[command(flatten)]
    pub lake: LakeArgs,
    #[command(flatten)]
    pub redis: RedisArgs,
    #[command(flatten)]
    pub flush: FlushArgs,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum Role {
    /// API, ingest and flusher in one process.
    All,
    /// Answer queries only.
    Api,
    /// Ingest and flush only.
    Ingest,
}

#[derive(Args, Debug, Clone)]
pub struct ServeArgs {
    /// What this process does.
    #[arg(long, env = "SKYGLASS_ROLE", value_enum, default_value_t = Role::All)]
    pub role: Role,
    /// Where events come from (roles `all` and `ingest`): `jetstream`, `jetstream:WSS_URL[,URL…]`,
    /// `file:PATH` or `synthetic[:EVENTS_PER_SEC]`.
    #[arg(long, env = "SKYGLASS_SOURCE", default_value = "jetstream")]
    pub source: SourceSpec,
    /// The address the HTTP server listens on.
    #[arg(long, env = "SKYGLASS_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// DuckDB threads per query (default: the machine's cores).
    #[arg(long, env = "SKYGLASS_QUERY_THREADS")]
    pub query_threads: Option<usize>,
    /// Answer what rollups can from them; `false` reads the posts for everything (to compare
    /// the two: the answers are the same).
    #[arg(long, env = "SKYGLASS_ROLLUPS", default_value_t = true, action = clap::ArgAction::Set)]
    pub rollups: bool,
    /// Narrow text searches with the files' text indexes; `false` scans the posts for every
    /// search (to compare the two: the answers are the same).
    #[arg(long, env = "SKYGLASS_TEXT_INDEXES", default_value_t = true, action = clap::ArgAction::Set)]
    pub text_indexes: bool,
    /// Longest a query may run (queueing included) before DuckDB is interrupted.
    #[arg(long, env = "SKYGLASS_QUERY_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub query_timeout: Duration,
    /// Most lake statements running at once; the others wait in a queue.
    #[arg(long, env = "SKYGLASS_MAX_CONCURRENT_QUERIES", default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub max_concurrent_queries: u32,
    #[command(flatten)]
    pub jetstream: JetstreamArgs,
    /// Roles `all` and `ingest`: /readyz fails while the lake is more than this far behind the
    /// source (now minus the durable cursor); 0s leaves ingest lag out of readiness.
    #[arg(long, env = "SKYGLASS_READY_MAX_LAG", default_value = "15m", value_parser = parse_duration)]
    pub ready_max_lag: Duration,
    /// Compact the lake this often (roles `all` and `ingest`); 0s turns it off.
    #[arg(long, env = "SKYGLASS_COMPACT_EVERY", default_value = "1h", value_parser = parse_duration)]
    pub compact_every: Duration,
    #[command(flatten)]
    pub compact_target: CompactTargetArgs,
    /// Longest an unused answer stays in the result cache (answers are keyed by the lake
    /// generation, so none is ever older than its data); 0s turns the cache off.
    #[arg(long, env = "SKYGLASS_CACHE_TTL", default_value = "24h", value_parser = parse_duration)]
    pub cache_ttl: Duration,
    /// Longest an answer over recent posts (today's partition, or the hot tier: posts still in
    /// the buffer) stays in the result cache. Answers that read the hot tier are keyed by its
    /// version too, so none is older than it.
    #[arg(long, env = "SKYGLASS_CACHE_RECENT_TTL", default_value = "5s", value_parser = parse_duration)]
    pub cache_recent_ttl: Duration,
    /// One more admin key (`Authorization: Bearer TOKEN`), beside those of --api-keys. Kept
    /// only as its SHA-256 hash.
    #[arg(long, env = "SKYGLASS_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// The API keys file (`skyglass keys add` writes it): each key's name, role (reader or
    /// admin) and SHA-256. Keys are sent as `Authorization: Bearer KEY` or `X-Api-Key: KEY`.
    #[arg(long, env = "SKYGLASS_API_KEYS")]
    pub api_keys: Option<PathBuf>,
    /// Whether requests without a key may read; `false` answers them 401.
    #[arg(long, env = "SKYGLASS_ANONYMOUS_READ", default_value_t = true, action = clap::ArgAction::Set)]
    pub anonymous_read: bool,
    /// Whether callers below admin may introspect the schema (the playground's docs and
    /// completion need it).
    #[arg(long, env = "SKYGLASS_INTROSPECTION", default_value_t = true, action = clap::ArgAction::Set)]
    pub introspection: bool,
    /// Whether to serve the playground (`/`) and the explorer (`/explore`).
    #[arg(long, env = "SKYGLASS_PLAYGROUND", default_value_t = true, action = clap::ArgAction::Set)]
    pub playground: bool,
    /// Most aliased fields one document may have (callers below admin; 0: no cap).
    #[arg(long, env = "SKYGLASS_MAX_ALIASES", default_value_t = 30)]
    pub max_aliases: usize,
    /// Most root fields one operation may ask (callers below admin; 0: no cap).
    #[arg(long, env = "SKYGLASS_MAX_ROOT_FIELDS", default_value_t = 10)]
    pub max_root_fields: usize,
    /// Each client's query budget, in cost units a minute (a lake statement costs one, plus one
    /// per MiB of the days it reads, plus one per hundred rows); 0: no rate limit. Admins are
    /// not limited.
    #[arg(long, env = "SKYGLASS_RATE_LIMIT", default_value_t = 60_000)]
    pub rate_limit: u64,
    /// The most a client's budget holds (what it may spend at once). Default: a minute's worth.
    #[arg(long, env = "SKYGLASS_RATE_LIMIT_BURST")]
    pub rate_limit_burst: Option<u64>,
    /// Reverse proxies in front of the API (addresses or blocks like 10.0.0.0/8): for a request
    /// from one of them, the client (whose budget pays) is the nearest address in
    /// `X-Forwarded-For` that is not a trusted proxy. Default: none, every peer is the client.
    #[arg(long, env = "SKYGLASS_TRUSTED_PROXIES", value_delimiter = ',')]
    pub trusted_proxies: Vec<crate::throttle::AddressBlock>,
    /// Allow-list mode: callers below admin may run only the documents of these persisted-query
    /// manifests (JSON objects of SHA-256 → document), comma separated, plus the explorer's own
    /// (`persisted-queries.json` of the pages' build); ad-hoc documents are refused.
    #[arg(long, env = "SKYGLASS_ALLOW_LIST", value_delimiter = ',')]
    pub allow_list: Option<Vec<PathBuf>>,
    /// The built playground and explorer pages (`scripts/web`); default: the checkout's
    /// `api/web/dist`, else `/usr/share/skyglass/web`.
    #[arg(long, env = "SKYGLASS_WEB_DIR")]
    pub web_dir: Option<PathBuf>,
    /// Origins of frontends on other sites that may call the API from a browser (CORS), comma
    /// separated, like `https://app.example.org`; `*` allows any. Default: none (the server's
    /// own pages need no CORS).
    #[arg(long, env = "SKYGLASS_CORS_ORIGINS", value_delimiter = ',', value_parser = parse_origin)]
    pub cors_origins: Vec<String>,
    /// Most rows one page (`first`) may ask for.
    #[arg(long, env = "SKYGLASS_MAX_PAGE_SIZE", default_value_t = 100, value_parser = clap::value_parser!(i32).range(1..=10_000))]
    pub max_page_size: i32,
    #[command(flatten)]
    pub lake: LakeArgs,
    #[command(flatten)]
    pub redis: RedisArgs,
    #[command(flatten)]
    pub flush: FlushArgs,
    #[command(flatten)]
    pub export_runs: ExportRunArgs,
}

/// An origin for CORS: `*`, or a scheme and host (and port) with nothing after.
fn parse_origin(text: &str) -> Result<String, String> {
    let text = text.trim();
    let valid = text == "*"
        || ["http://", "https://"].iter().any(|scheme| {
            text.strip_prefix(scheme).is_some_and(|host| !host.is_empty() && !host.contains(['/', '?', '#', ' ', '*']))
        });
    if valid {
        Ok(text.to_owned())
    } else {
        Err(format!("`{text}` is not an origin like https://app.example.org (scheme and host, no path), or *"))
    }
}

/// A duration above zero.
/// A share from 0 to 1.
fn parse_share(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(share) if (0.0..=1.0).contains(&share) => Ok(share),
        _ => Err(format!("`{text}` is not a share from 0 to 1 (0.02 is 2%)")),
    }
}

fn parse_likes_per_post(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(n) if (0.0..=1_000.0).contains(&n) => Ok(n),
        _ => Err(format!("`{text}` is not a number of likes per post from 0 to 1000 (Bluesky has about 10)")),
    }
}

fn parse_positive_duration(text: &str) -> Result<Duration, String> {
    parse_duration(text).and_then(|d| if d.is_zero() { Err(format!("`{text}` must be above zero")) } else { Ok(d) })
}

/// Parses durations like `500ms`, `30s`, `5m`, `1h`, `1d`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number.parse().map_err(|_| format!("`{text}` is not a duration like 30s, 5m or 1h"))?;
    let seconds = match unit {
        "ms" => return Ok(Duration::from_millis(number)),
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("`{text}` has no known unit: use ms, s, m, h or d")),
    };
    number.checked_mul(seconds).map(Duration::from_secs).ok_or_else(|| format!("`{text}` is too long a duration"))
}

pub fn main() -> ExitCode {
    if let Err(message) = config::check_environment(std::env::vars_os().map(|(name, _)| name)) {
        eprintln!("skyglass: {message}");
        return ExitCode::from(2);
    }
    let resolved = match config::resolve(std::env::args_os().collect()) {
        Ok(resolved) => resolved,
        Err(ConfigError::Cli(error)) => error.exit(),
        Err(ConfigError::Message(message)) => {
            eprintln!("skyglass: {message}");
            return ExitCode::from(2);
        }
    };
    let exports = match &resolved.exports {
        None => Vec::new(),
        Some(tables) => match crate::export::spec::load(tables, &crate::export::table::SchemaTypes::skyglass()) {
            Ok(specs) => specs,
            Err(message) => {
                let file = resolved.cli.config.as_ref().map(|p| p.display().to_string()).unwrap_or_default();
                eprintln!("skyglass: config file {file}: {message}");
                return ExitCode::from(2);
            }
        },
    };
    if resolved.cli.print_config {
        print!("{}", config::render(&resolved.settings));
        for spec in &exports {
            println!(
                "# [[export]] {}: {} ({}), at \"{}\" {}",
                spec.name,
                spec.period,
                spec.format.extension(),
                spec.schedule.text,
                spec.time_zone.name()
            );
        }
        return ExitCode::SUCCESS;
    }
    let cli = resolved.cli;
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("skyglass: failed to start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(run(cli, exports));
    // Work still running on a blocking thread (a scheduled compaction, safe to cut off) does
    // not hold the exit up for long.
    runtime.shutdown_timeout(std::time::Duration::from_secs(2));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            if let Some(exit) = error.downcast_ref::<Exit>() {
                eprintln!("skyglass: {exit}");
                return ExitCode::from(exit.code);
            }
            tracing::error!(error = format!("{error:#}"), "skyglass failed");
            eprintln!("skyglass: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli, exports: Vec<crate::export::ExportSpec>) -> anyhow::Result<()> {
    match cli.command {
        Command::Schema => {
            print!("{}", crate::graphql::sdl());
            Ok(())
        }
        Command::Serve(args) => {
            crate::telemetry::init(cli.log_format);
            serve::serve(*args, exports).await
        }
        Command::Export(args) => {
            crate::telemetry::init(cli.log_format);
            serve::export(args, exports).await
        }
        Command::Ingest(args) => {
            crate::telemetry::init(cli.log_format);
            serve::ingest(args).await
        }
        Command::Bench(args) => crate::bench::bench(args).await,
        Command::Generate(args) => {
            let out = args.out.clone();
            if std::fs::read_dir(&out).is_ok_and(|mut entries| entries.next().is_some()) {
                anyhow::bail!("{} is not empty; generate writes a new lake", out.display());
            }
            let config = ingest::generate::GenerateConfig {
                first_day: args.first_day,
                days: args.days,
                posts_per_day: args.posts_per_day,
                seed: args.seed,
                threads: std::thread::available_parallelism().map_or(2, |n| n.get()),
                deleted_share: args.deleted_share,
                takedowns_per_day: args.takedowns_per_day,
                text_indexes: args.text_indexes,
                likes_per_post: args.likes_per_post,
            };
            let report = tokio::task::spawn_blocking(move || ingest::generate::generate(&out, &config))
                .await
                .context("generate task panicked")??;
            println!(
                "generated {} posts ({} deleted later) and {} likes and reposts in {} files ({} bytes) in {:.1} s: {:.0} posts/s",
                report.posts,
                report.deleted,
                report.interactions,
                report.files,
                report.bytes,
                report.seconds,
                report.posts as f64 / report.seconds.max(1e-9)
            );
            Ok(())
        }
        Command::Lake { command: LakeCommand::Reenrich(args) } => {
            check_day_range(Some(args.since), args.until)?;
            let lake = args.lake.lake.clone();
            let reports = tokio::task::spawn_blocking(move || {
                ingest::reenrich::reenrich(&lake, args.since, args.until, |r| {
                    println!(
                        "{}: {} of {} posts redone in {} of {} files",
                        r.date.map(|d| d.to_string()).unwrap_or_default(),
                        r.rewritten_rows,
                        r.rows,
                        r.rewritten_files,
                        r.files
                    );
                })
            })
            .await
            .context("reenrich task panicked")?
            .with_context(|| format!("failed to re-enrich lake {}", args.lake.lake.display()))?;
            let redone: u64 = reports.iter().map(|r| r.rewritten_rows).sum();
            println!(
                "re-enriched {redone} posts in {} partitions (enrichment version {})",
                reports.len(),
                lake::model::ENRICH_VERSION
            );
            Ok(())
        }
        Command::Keys { command: KeysCommand::Add { name, role, file } } => {
            let role = if role == "admin" { crate::auth::Role::Admin } else { crate::auth::Role::Reader };
            let key = crate::auth::add_key(&file.api_keys, &name, role)?;
            eprintln!("added {} key `{name}` to {}; it is shown this once:", role.as_str(), file.api_keys.display());
            println!("{key}");
            Ok(())
        }
        Command::Keys { command: KeysCommand::List { file } } => {
            for key in crate::auth::read_keys(&file.api_keys)? {
                println!("{}\t{}", key.name, key.role.as_str());
            }
            Ok(())
        }
        Command::Keys { command: KeysCommand::Remove { name, file } } => {
            anyhow::ensure!(
                crate::auth::remove_key(&file.api_keys, &name)?,
                "{} has no key named `{name}`",
                file.api_keys.display()
            );
            println!("removed key `{name}`; restart serve to apply");
            Ok(())
        }
        Command::Lake { command: LakeCommand::Compact(args) } => {
            check_day_range(args.days.since, args.days.until)?;
            let lake = args.lake.lake.clone();
            let reports = tokio::task::spawn_blocking(move || {
                let (since, until, target) = (args.days.since, args.days.until, args.target.bytes());
                crate::compaction::compact_lake(&lake, since, until, target, &Default::default(), |r| {
                    let (table, date) = (r.table, r.date.map(|d| d.to_string()).unwrap_or_default());
                    let left_out =
                        if matches!(table, lake::layout::INTERACTION_DELETES_TABLE | lake::layout::DELETES_TABLE) {
                            format!("retired {} applied deletes", r.deleted_removed)
                        } else {
                            format!("left out {} deleted and {} copies", r.deleted_removed, r.copies_removed)
                        };
                    if r.changed() {
                        println!(
                            "{table} {date}: {} files ({} rows, {} bytes) → {} files ({} rows, {} bytes); {left_out}",
                            r.files_before, r.rows_before, r.bytes_before, r.files_after, r.rows_after, r.bytes_after,
                        );
                    } else {
                        println!("{table} {date}: {} files, nothing to compact", r.files_before);
                    }
                })
            })
            .await
            .context("compact task panicked")??;
            let tables: Vec<String> = lake::layout::COMPACTED_TABLES
                .iter()
                .map(|table| {
                    let of_table = || reports.iter().filter(|r| r.table == *table);
                    format!(
                        "{} of {} {table} partitions",
                        of_table().filter(|r| r.changed()).count(),
                        of_table().count()
                    )
                })
                .collect();
            println!("compacted {}", tables.join(", "));
            Ok(())
        }
        Command::Lake { command: LakeCommand::Reindex(args) } => {
            check_day_range(args.days.since, args.days.until)?;
            let lake = args.lake.lake.clone();
            let reports = tokio::task::spawn_blocking(move || {
                lake::textindex::reindex(&lake, args.days.since, args.days.until, args.rebuild, |r| {
                    let date = r.date.map(|d| d.to_string()).unwrap_or_default();
                    println!(
                        "{date}: {} files, built {} indexes ({} posts), removed {} orphaned",
                        r.files, r.built, r.posts, r.orphans
                    );
                })
            })
            .await
            .context("reindex task panicked")??;
            let built: usize = reports.iter().map(|r| r.built).sum();
            println!("built {built} text indexes in {} partitions", reports.len());
            Ok(())
        }
        Command::Lake { command: LakeCommand::Rollup(args) } => {
            check_day_range(args.days.since, args.days.until)?;
            let lake = args.lake.lake.clone();
            let reports = tokio::task::spawn_blocking(move || {
                lake::rollup::rollup(&lake, args.days.since, args.days.until, args.rebuild, |r| {
                    let date = r.date.map(|d| d.to_string()).unwrap_or_default();
                    println!(
                        "{} {date}: {} files, rolled up {}, removed {} orphaned",
                        r.table, r.files, r.built, r.orphans
                    );
                })
            })
            .await
            .context("rollup task panicked")??;
            let built: usize = reports.iter().map(|r| r.built).sum();
            println!("rolled up {built} files in {} partitions", reports.len());
            Ok(())
        }
        Command::Lake { command: LakeCommand::Verify(args) } => {
            let lake = args.lake.lake.clone();
            let report = tokio::task::spawn_blocking(move || lake::verify::verify(&lake))
                .await
                .context("verify task panicked")?
                .with_context(|| format!("failed to verify lake {}", args.lake.lake.display()))?;
            let severity = |s: lake::verify::Severity| match s {
                lake::verify::Severity::Error => "error",
                lake::verify::Severity::Warning => "warning",
            };
            if args.json {
                let findings: Vec<_> = report
                    .findings
                    .iter()
                    .map(|f| serde_json::json!({"severity": severity(f.severity), "path": f.path, "what": f.what}))
                    .collect();
                let json = serde_json::json!({
                    "tables": report.tables, "partitions": report.partitions, "files": report.files,
                    "rows": report.rows, "bytes": report.bytes, "errors": report.errors(), "findings": findings,
                });
                println!("{}", serde_json::to_string_pretty(&json)?);
            } else {
                for finding in &report.findings {
                    println!("{}: {}: {}", severity(finding.severity), finding.path.display(), finding.what);
                }
                println!(
                    "verified {} files ({} rows, {} bytes) in {} partitions of {} tables: {} errors, {} warnings",
                    report.files,
                    report.rows,
                    report.bytes,
                    report.partitions,
                    report.tables,
                    report.errors(),
                    report.findings.len() - report.errors()
                );
            }
            if report.errors() > 0 {
                anyhow::bail!("lake {} has {} damaged files (listed above)", args.lake.lake.display(), report.errors());
            }
            Ok(())
        }
        Command::Lake { command: LakeCommand::Stats(args) } => {
            let lake = args.lake.clone();
            let stats = tokio::task::spawn_blocking(move || {
                let engine = lake::exec::Engine::open(&lake, &lake::exec::EngineConfig::default())?;
                engine.stats()
            })
            .await
            .context("stats task panicked")?
            .with_context(|| format!("failed to read lake {}", args.lake.display()))?;
            let json = serde_json::json!({
                "posts": stats.posts, "files": stats.files, "partitions": stats.partitions, "bytes": stats.bytes,
                "generation": stats.generation, "oldest_post_us": stats.oldest_post_us,
                "newest_post_us": stats.newest_post_us, "last_flush_at_us": stats.last_flush_at_us,
            });
            println!("{}", serde_json::to_string_pretty(&json)?);
            Ok(())
        }
    }
}

/// `--since` and `--until` of a command over day partitions must run forward.
fn check_day_range(since: Option<chrono::NaiveDate>, until: Option<chrono::NaiveDate>) -> anyhow::Result<()> {
    if let (Some(since), Some(until)) = (since, until)
        && until < since
    {
        anyhow::bail!("--until {until} is before --since {since}: give a range that runs forward");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_like_people_write_them() {
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert!(parse_duration("5").unwrap_err().contains("unit"));
        assert!(parse_duration("fast").unwrap_err().contains("duration"));
        assert!(parse_duration("99999999999999999d").unwrap_err().contains("too long"));
    }

    #[test]
    fn the_command_line_is_well_formed() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
