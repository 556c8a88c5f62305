//! Runs compiled statements on DuckDB over the lake's Parquet files and turns rows into model
//! types. DuckDB connections are not `Sync`: each call clones a connection from the engine's
//! base one; async callers run these functions inside `spawn_blocking`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use duckdb::types::Value;
use duckdb::{Config, Connection, params_from_iter};

use crate::catalog::{self, Generation};
use crate::error::{Error, Result};
use crate::layout;
use crate::model::{EmbedType, Post, PostColumn};
use crate::plan::{
    BucketsPlan, Clock, Dimension, Engagement, EngagementPlan, Keyset, Measures, Plan, PostFilter, PostOrder,
    PostsPlan, RankedPostsPlan, TopPlan, TrendPlan,
};
use crate::sql::{Param, Sql, compile};
use crate::textindex::Window;
use crate::zone::{self, Interval};

/// Most buckets one `time_buckets` answer may hold (buckets times groups).
pub const MAX_BUCKET_ROWS: usize = 100_000;

const MICROS_PER_DAY: i64 = 86_400_000_000;

use engagement::*;
use pages::*;
pub(crate) use run::lost_a_file;
pub use run::{Interrupt, with_interrupt};
pub(crate) use values::set_column;
use values::*;
use views::*;

/// How the engine runs DuckDB.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// DuckDB worker threads per query.
    pub threads: usize,
    /// Whether statements may read rollups ([`crate::rollup`]); without, every one reads the
    /// posts (to compare the two).
    pub rollups: bool,
    /// Whether text searches may be narrowed by the files' text indexes ([`crate::textindex`]);
    /// without, every one scans the posts (to compare the two).
    pub text_indexes: bool,
}

impl EngineConfig {
    pub fn with_threads(threads: usize) -> EngineConfig {
        EngineConfig { threads, rollups: true, text_indexes: true }
    }
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig::with_threads(std::thread::available_parallelism().map_or(2, |n| n.get()))
    }
}

/// A DuckDB database (in memory) whose views read the lake's Parquet files:
/// `post_files`, `deletes` and `account_files` (one per table); `account_state`, each DID's
/// latest handle and activity; and `posts`, the live posts: every post in the files that was
/// neither deleted nor written by a hidden account. Compiled statements read `posts`.
///
/// The views read a snapshot: the files listed, with the catalog state, under the
/// [`catalog::PublishLock`] at one generation. A flush's files therefore show together with the
/// `flushed_through_us` that takes their posts out of the hot tier, never before it (a view over
/// a glob read them the moment they were renamed into place, and counted them twice until the
/// publish). Each statement first moves the snapshot to the catalog's generation.
pub struct Engine {
    lake: PathBuf,
    base: Mutex<Connection>,
    tables: [TableView; 5],
    /// What the views read now; none before the first listing.
    snapshot: Mutex<Option<Snapshot>>,
    /// The `posts` day partitions of the snapshot, with their bytes.
    partitions: Mutex<Vec<(chrono::NaiveDate, u64)>>,
    /// The `deletes` files (and inodes) whose posts' keys the `deleted_keys` table holds: `did`
    /// and the record key cut from each uri, read once per file rather than by every statement.
    /// New files' keys are added; when one goes (compaction retires deletes), the table is
    /// made again.
    deleted_keys_of: Mutex<HashMap<PathBuf, u64>>,
    /// The snapshot's `posts` data files.
    post_paths: Mutex<Arc<Vec<PathBuf>>>,
    /// Write-held while the views move to a new snapshot; read-held by a statement that names
    /// the snapshot's files (a few days' files, the text indexes' candidates) from when it is
    /// made until it has run, so that it reads them with the hot tier of the same snapshot: a
    /// move takes the posts of a flush's files out of the hot tier.
    moves: std::sync::RwLock<()>,
    /// The text indexes opened so far, by data file, and the files found without one (both
    /// forgotten when a new snapshot no longer lists the file; the latter at every snapshot,
    /// since `lake reindex` publishes what it builds).
    text_indexes: Mutex<HashMap<PathBuf, Option<Arc<crate::textindex::TextIndex>>>>,
    /// The footers of the data files whose rows were read from their pages (`rows`), forgotten
    /// when a snapshot no longer lists the file.
    footers: rows::Footers,
    /// The rows of top tags read from the rollups of tag authors, kept between requests.
    tag_authors: tag_authors::Kept,
    /// The most candidates of a file read from their pages ([`rows::MAX_ROWS_FROM_PAGES`]; 0
    /// in tests of DuckDB's reading of them).
    max_rows_from_pages: std::sync::atomic::AtomicUsize,
    text_index_uses: std::sync::atomic::AtomicU64,
    /// Statements with text searches that scanned instead (no index narrowed them).
    text_scans: std::sync::atomic::AtomicU64,
    /// Pages of text searches answered from the posts since their newest (oldest) candidates.
    text_page_cuts: std::sync::atomic::AtomicU64,
    /// Searches found too common to list in a file's index, so that a repeated one is not
    /// counted again (counting a common term's posts costs about as much as scanning for it);
    /// forgotten at every snapshot.
    too_common: Mutex<std::collections::HashSet<(PathBuf, Vec<crate::search::TextQuery>, Window)>>,
    /// Whether `hidden_authors` has rows (the `posts` view anti-joins it only then).
    hidden_present: AtomicBool,
    /// The DIDs of `hidden_authors`, for callers that check posts one by one (live feeds).
    hidden_dids: Mutex<Arc<std::collections::HashSet<String>>>,
    /// The hot tier: posts still in the buffer, in the table `hot_posts` (see [`Engine::set_hot`]).
    hot: Mutex<HotRange>,
    /// Whether the hot tier's deletes (`hot_deletes`) and account states (`hot_accounts`) have
    /// rows: the `posts` view applies them only then.
    hot_overlay: Mutex<(bool, bool)>,
    /// The tables rollup statements read, and what they hold (see [`rollups`]): read-locked by
    /// rollup statements, write-locked to bring them up to date and by a refresh.
    rollups: std::sync::RwLock<rollups::RollupTables>,
    /// The likes and reposts counts leave out (see [`undone`]): read-locked by the statements
    /// that count them, write-locked to bring it up to date and by a refresh.
    undone: std::sync::RwLock<undone::UndoneInteractions>,
    /// What `post_key_ranges` holds (see [`key_ranges`]), kept with the views.
    key_ranges: Mutex<key_ranges::KeyRanges>,
    /// Whether statements may read them ([`EngineConfig::rollups`]).
    use_rollups: bool,
    use_text_indexes: bool,
    /// Threads a statement may use ([`EngineConfig::threads`]): DuckDB's, and counts from the
    /// text indexes'.
    threads: usize,
    /// Statements with a rollup path that took it, and that read the posts instead.
    rollup_uses: std::sync::atomic::AtomicU64,
    rollup_refusals: std::sync::atomic::AtomicU64,
    /// Whether [`Engine::prepare_rollups`] has brought the rollup tables up to a snapshot once.
    rollups_prepared: std::sync::atomic::AtomicBool,
    /// Rankings of likes and reposts, by how they were answered ([`Ranked`]).
    rankings: [std::sync::atomic::AtomicU64; 3],
}

/// How a ranking of likes or reposts was answered: among the posts the rollups' largest rows
/// can give the most, among those with a large row in some rollup, or over the whole window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ranked {
    LargestRows,
    Candidates,
    Window,
}

impl Ranked {
    pub const ALL: [Ranked; 3] = [Ranked::LargestRows, Ranked::Candidates, Ranked::Window];

    pub fn as_str(self) -> &'static str {
        match self {
            Ranked::LargestRows => "largest_rows",
            Ranked::Candidates => "candidates",
            Ranked::Window => "window",
        }
    }
}

/// How one question was answered: from rollups or from the posts (and why not from rollups);
/// when explained ([`explain_on_this_thread`]), with the statements that answered it and how
/// long it took.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Answered {
    pub question: &'static str,
    pub from: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub why: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ms: Option<f64>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub statements: Vec<Statement>,
}

/// One statement as it ran, for an explained question.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Statement {
    pub sql: String,
    pub params: Vec<Param>,
    pub ms: f64,
}

/// What the Redis buffer holds that the lake's files do not yet: posts, deletes and account
/// states. [`Engine::set_hot`] answers them with the files.
#[derive(Debug, Clone, Copy, Default)]
pub struct HotTier<'a> {
    pub posts: &'a [Post],
    /// Deleted posts' uris: they leave every answer, files' posts included.
    pub deleted: &'a [String],
    /// Each DID's latest account state in the buffer, and whether it hides the DID's posts:
    /// it overrides the lake's (a takedown hides, a reactivation shows again).
    pub accounts: &'a [(String, bool)],
}

impl<'a> HotTier<'a> {
    /// A hot tier of posts alone.
    pub fn posts(posts: &'a [Post]) -> HotTier<'a> {
        HotTier { posts, ..HotTier::default() }
    }
}

/// What the hot tier holds: the ranges of its two clocks, UTC microseconds (none when empty).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HotRange {
    pub created_at: Option<(i64, i64)>,
    pub indexed_at: Option<(i64, i64)>,
}

impl HotRange {
    fn is_empty(&self) -> bool {
        self.created_at.is_none()
    }

    /// Whether a filter's time range can hold a hot post.
    fn overlaps(&self, filter: &PostFilter) -> bool {
        let range = match filter.clock {
            crate::plan::Clock::CreatedAt => self.created_at,
            crate::plan::Clock::IndexedAt => self.indexed_at,
        };
        range.is_some_and(|(first, last)| {
            filter.since_us.is_none_or(|since| last >= since) && filter.until_us.is_none_or(|until| first < until)
        })
    }
}

/// What a statement reads, for [`Engine::estimate`].
#[derive(Debug, Clone, Copy)]
pub enum Reads<'a> {
    /// A page of posts.
    Page(&'a PostsPlan),
    /// Every post of a filter, returning about `rows` rows (aggregates, per-author lists).
    Scan { filter: &'a PostFilter, rows: u64 },
    /// The states of this many accounts (a small table, no posts).
    Accounts(usize),
}

/// What a statement is expected to read: see [`Engine::estimate`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Estimate {
    /// Parquet bytes of the day partitions left after pruning.
    pub bytes: u64,
    pub partitions: u32,
    /// Rows returned, at most.
    pub rows: u64,
}

/// What the statements of some lake work read besides sealed past days.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Touched {
    /// A range the hot tier has posts in: the answer depends on the buffer as well as on the
    /// lake generation.
    pub hot: bool,
    /// A range reaching into today (UTC): the partition flushes still write to.
    pub today: bool,
}

thread_local! {
    static ANSWERED: std::cell::RefCell<Vec<Answered>> = const { std::cell::RefCell::new(Vec::new()) };
    static EXPLAINING: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    static STATEMENTS: std::cell::RefCell<Vec<Statement>> = const { std::cell::RefCell::new(Vec::new()) };
    static TOUCHED: std::cell::Cell<Touched> = const { std::cell::Cell::new(Touched { hot: false, today: false }) };
}

/// What lake work on this thread read since the last call (and clears it).
pub fn take_touched() -> Touched {
    TOUCHED.with(|touched| touched.replace(Touched::default()))
}

/// How the questions of lake work on this thread were answered since the last call (and
/// clears it): one entry per question with a rollup path, or per question when explaining.
pub fn take_answered() -> Vec<Answered> {
    ANSWERED.with(|answered| answered.take())
}

/// Whether lake work on this thread from now on notes every question it answers, with its
/// statements (their SQL, parameters and time) and how long it took: an explained request.
pub fn explain_on_this_thread(on: bool) {
    EXPLAINING.with(|explaining| explaining.set(on));
    STATEMENTS.with(|statements| statements.take());
}

fn explaining() -> bool {
    EXPLAINING.with(std::cell::Cell::get)
}

/// Notes how a question was answered, with the statements it ran when explaining.
fn note_answered(mut answered: Answered, started: Instant) {
    if explaining() {
        answered.ms = Some(started.elapsed().as_secs_f64() * 1e3);
        answered.statements = STATEMENTS.with(|statements| statements.take());
    }
    ANSWERED.with(|all| all.borrow_mut().push(answered));
}

/// Where each table's view is in [`Engine::tables`] (and its listing in a refresh).
const POSTS: usize = 0;
const DELETES: usize = 1;
const INTERACTIONS: usize = 3;
const INTERACTION_DELETES: usize = 4;

impl Engine {
    pub fn open(lake: &Path, config: &EngineConfig) -> Result<Engine> {
        let threads = i64::try_from(config.threads.max(1)).unwrap_or(2);
        // No extension may be fetched at run time: a missing one fails at once.
        let duck_config = Config::default()
            .enable_autoload_extension(false)?
            .with("autoinstall_known_extensions", "false")?
            .threads(threads)?;
        let connection = Connection::open_in_memory_with_flags(duck_config)?;
        // Parquet footers are kept between statements (checked against the file's mtime, which
        // a rewrite under the same name moves: `rewrite`): a page of likes over a week's
        // compacted files took 150 ms without, 60 ms with, the footers of 1 GB files being most
        // of the work. (The parquet extension's option: not known to `Config` before it loads.)
        connection.execute_batch("SET GLOBAL parquet_metadata_cache = true")?;
        let tables = [
            TableView::new(layout::POSTS_TABLE, "post_files", POST_COLUMNS_EMPTY),
            TableView::new(layout::DELETES_TABLE, "deletes", DELETE_COLUMNS_EMPTY),
            TableView::new(layout::ACCOUNTS_TABLE, "account_files", ACCOUNT_COLUMNS_EMPTY),
            TableView::new(layout::INTERACTIONS_TABLE, "interaction_files", INTERACTION_COLUMNS_EMPTY),
            TableView::new(layout::INTERACTION_DELETES_TABLE, "interaction_deletes", INTERACTION_DELETE_COLUMNS_EMPTY),
        ];
        for table in &tables {
            connection.execute_batch(&table.empty_sql())?;
        }
        let engine = Engine {
            lake: lake.to_path_buf(),
            base: Mutex::new(connection),
            tables,
            snapshot: Mutex::new(None),
            partitions: Mutex::new(Vec::new()),
            post_paths: Mutex::new(Arc::new(Vec::new())),
            deleted_keys_of: Mutex::new(HashMap::new()),
            moves: std::sync::RwLock::new(()),
            text_indexes: Mutex::new(HashMap::new()),
            footers: rows::Footers::default(),
            tag_authors: tag_authors::Kept::default(),
            max_rows_from_pages: std::sync::atomic::AtomicUsize::new(rows::MAX_ROWS_FROM_PAGES),
            text_index_uses: std::sync::atomic::AtomicU64::new(0),
            text_scans: std::sync::atomic::AtomicU64::new(0),
            text_page_cuts: std::sync::atomic::AtomicU64::new(0),
            too_common: Mutex::new(std::collections::HashSet::new()),
            hidden_present: AtomicBool::new(false),
            hidden_dids: Mutex::new(Arc::new(std::collections::HashSet::new())),
            hot: Mutex::new(HotRange::default()),
            hot_overlay: Mutex::new((false, false)),
            rollups: std::sync::RwLock::new(rollups::RollupTables::default()),
            undone: std::sync::RwLock::new(undone::UndoneInteractions::default()),
            key_ranges: Mutex::new(key_ranges::KeyRanges::default()),
            use_rollups: config.rollups,
            use_text_indexes: config.text_indexes,
            threads: config.threads.max(1),
            rollup_uses: std::sync::atomic::AtomicU64::new(0),
            rollup_refusals: std::sync::atomic::AtomicU64::new(0),
            rollups_prepared: std::sync::atomic::AtomicBool::new(!config.rollups),
            rankings: Default::default(),
        };
        {
            let base = engine.base.lock().unwrap_or_else(|p| p.into_inner());
            base.execute_batch(rollups::CREATE_TABLES)?;
            base.execute_batch(undone::CREATE_TABLE)?;
            base.execute_batch(key_ranges::CREATE_TABLE)?;
            base.execute_batch(&undone::counts_view_sql(&[]))?;
            base.execute_batch(&keys::key_files_view_sql(&[]))?;
        }
        engine.refresh_views(Refresh::IfMoved)?;
        Ok(engine)
    }

    /// How many statements read posts narrowed by the text indexes, since the engine opened.
    pub fn text_index_uses(&self) -> u64 {
        self.text_index_uses.load(Ordering::Relaxed)
    }

    /// How many statements with text searches scanned the files instead (no index, or too many
    /// candidates), since the engine opened.
    pub fn text_scans(&self) -> u64 {
        self.text_scans.load(Ordering::Relaxed)
    }

    /// How many pages of text searches were answered from the posts since their newest (oldest)
    /// candidates ([`Engine::posts`]), since the engine opened.
    pub fn text_page_cuts(&self) -> u64 {
        self.text_page_cuts.load(Ordering::Relaxed)
    }

    /// Notes on this thread when a plan reads a range the hot tier has posts in, or today.
    fn note_touched(&self, plan: &Plan) {
        let Some(filter) = plan.filter() else { return };
        const DAY_US: i64 = 86_400_000_000;
        let today_us = chrono::Utc::now().timestamp_micros().div_euclid(DAY_US) * DAY_US;
        let hot = self.hot_range();
        let now = Touched {
            hot: !hot.is_empty() && hot.overlaps(filter),
            today: filter.until_us.is_none_or(|until| until > today_us),
        };
        TOUCHED.with(|touched| {
            let before = touched.get();
            touched.set(Touched { hot: before.hot || now.hot, today: before.today || now.today });
        });
    }

    /// The `posts` day partitions, as of the lake's current generation.
    fn post_partitions(&self) -> Result<Vec<chrono::NaiveDate>> {
        self.refresh_views(Refresh::IfMoved)?;
        Ok(self.partitions.lock().unwrap_or_else(|p| p.into_inner()).iter().map(|(day, _)| *day).collect())
    }

    /// What a statement is expected to read, before it runs: the Parquet bytes of the day
    /// partitions its time range (and cursor) leaves after pruning, and the rows it returns. A
    /// page that the newest (or oldest) day can fill reads that day alone ([`Engine::posts`]), and
    /// is estimated so. Reads the partition list as of the last statement, without touching the
    /// disk or DuckDB: fit for an async caller deciding whether to run the statement at all.
    pub fn estimate(&self, reads: Reads<'_>) -> Estimate {
        let partitions = self.partitions.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let narrowed;
        let (filter, keyset, rows) = match reads {
            Reads::Page(plan) => {
                let days: Vec<chrono::NaiveDate> = partitions.iter().map(|(day, _)| *day).collect();
                narrowed = first_day_of(plan, &days);
                let plan = narrowed.as_ref().unwrap_or(plan);
                (&plan.filter, plan.after.as_ref().map(|after| (after, plan.order)), u64::from(plan.limit))
            }
            Reads::Scan { filter, rows } => (filter, None, rows),
            Reads::Accounts(n) => return Estimate { bytes: 0, partitions: 0, rows: n as u64 },
        };
        let (first, last) = crate::sql::partition_days(filter, keyset);
        let mut estimate = Estimate { bytes: 0, partitions: 0, rows };
        for (day, bytes) in partitions {
            if first.is_none_or(|first| day >= first) && last.is_none_or(|last| day <= last) {
                estimate.bytes += bytes;
                estimate.partitions += 1;
            }
        }
        estimate
    }

    /// Statements with a rollup path that took it ([`crate::rollup`]).
    pub fn rollup_uses(&self) -> u64 {
        self.rollup_uses.load(Ordering::Relaxed)
    }

    /// Whether the rollup tables have been prepared once (or rollups are off): until then a
    /// statement that reads them waits for them, a minute for a month of posts.
    pub fn rollups_prepared(&self) -> bool {
        self.rollups_prepared.load(Ordering::Relaxed)
    }

    /// Statements with a rollup path that read the posts instead.
    pub fn rollup_refusals(&self) -> u64 {
        self.rollup_refusals.load(Ordering::Relaxed)
    }

    /// Rankings of likes and reposts answered the way `ranked` says.
    pub fn rankings(&self, ranked: Ranked) -> u64 {
        self.rankings[ranked as usize].load(Ordering::Relaxed)
    }

    /// Runs `plan` and counts its rows without converting them: the raw DuckDB baseline that
    /// benchmarks compare the API with.
    pub fn count_rows(&self, plan: &Plan) -> Result<usize> {
        Ok(self.run(plan, |_| Ok(()))?.len())
    }

    /// How many live posts match `filter`: from rollups when the cells hold what it reads.
    pub fn count(&self, filter: &PostFilter) -> Result<u64> {
        let rows = self.run(&Plan::Count(filter.clone()), |row| count(row, 0))?;
        Ok(rows.into_iter().next().unwrap_or(0))
    }

    /// How many live posts each of `dids` has, in all; an author without any is absent. From the
    /// author counts of whole days (in memory) and the posts they leave out, with rollups.
    pub fn author_posts(&self, dids: &[String]) -> Result<HashMap<String, u64>> {
        if dids.is_empty() {
            return Ok(HashMap::new());
        }
        let rows = self.run(&Plan::AuthorPosts(dids.to_vec()), |row| Ok((row.get(0)?, count(row, 1)?)))?;
        Ok(rows.into_iter().collect())
    }

    /// A summary per author of `filter.authors`; authors without matching posts are absent.
    pub fn author_summaries(&self, filter: &PostFilter) -> Result<Vec<(String, Summary)>> {
        if filter.authors.is_empty() {
            return Ok(Vec::new());
        }
        self.run(&Plan::AuthorSummaries(filter.clone()), |row| {
            let did: String = row.get(0)?;
            let summary = Summary {
                n_posts: count(row, 1)?,
                oldest_us: timestamp_micros(&row.get::<_, Value>(2)?),
                newest_us: timestamp_micros(&row.get::<_, Value>(3)?),
            };
            Ok((did, summary))
        })
    }

    /// The latest handle and activity of each of `dids` the lake has identity or account
    /// events for; the others are absent.
    pub fn accounts(&self, dids: &[String]) -> Result<Vec<AccountState>> {
        if dids.is_empty() {
            return Ok(Vec::new());
        }
        self.run(&Plan::Accounts(dids.to_vec()), |row| {
            Ok(AccountState {
                did: row.get(0)?,
                handle: text(row.get::<_, Value>(1)?),
                active: match row.get::<_, Value>(2)? {
                    Value::Boolean(active) => Some(active),
                    _ => None,
                },
                status: text(row.get::<_, Value>(3)?),
            })
        })
    }

    /// The catalog generation of the snapshot the views read, if they read one.
    fn generation(&self) -> Option<catalog::Generation> {
        self.snapshot.lock().unwrap_or_else(|p| p.into_inner()).as_ref().map(|s| s.state.generation)
    }

    /// The lake's size and state: files from a directory walk, posts from DuckDB.
    pub fn stats(&self) -> Result<LakeStats> {
        // The files' posts only, not the hot tier's.
        let (posts, oldest_post_us, newest_post_us) = self.once_more_if_a_file_went(|| {
            Ok(self.connection()?.query_row(
                "SELECT count(DISTINCT uri), epoch_us(min(created_at)), epoch_us(max(created_at)) FROM file_posts",
                [],
                |row| Ok((row.get::<_, i64>(0)?, row.get::<_, Option<i64>>(1)?, row.get::<_, Option<i64>>(2)?)),
            )?)
        })?;
        let snapshot = self.snapshot.lock().unwrap_or_else(|p| p.into_inner()).unwrap_or_default();
        let partitions = self.partitions.lock().unwrap_or_else(|p| p.into_inner()).len() as u64;
        Ok(LakeStats {
            posts: posts.max(0) as u64,
            files: snapshot.post_files,
            partitions,
            bytes: snapshot.post_bytes,
            oldest_post_us,
            newest_post_us,
            generation: snapshot.state.generation,
            last_flush_at_us: snapshot.state.last_flush_at_us,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    pub n_posts: u64,
    pub oldest_us: Option<i64>,
    pub newest_us: Option<i64>,
}

/// What the lake knows of an account from identity and account events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountState {
    pub did: String,
    pub handle: Option<String>,
    /// `None` until an account event was seen.
    pub active: Option<bool>,
    pub status: Option<String>,
}

/// One item of [`Engine::trending`].
#[derive(Debug, Clone, PartialEq)]
pub struct Trend {
    pub item: String,
    /// Posts with it in the window.
    pub posts: u64,
    /// Posts with it in the baseline.
    pub baseline_posts: u64,
    /// The baseline's count scaled to the window's length.
    pub expected: f64,
    pub ratio: f64,
    pub z_score: f64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HashtagCount {
    pub tag: String,
    pub posts: u64,
    pub authors: u64,
}

/// One time bucket (and group) of [`Engine::time_buckets`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bucket {
    /// UTC microseconds.
    pub start_us: i64,
    pub group: Option<String>,
    pub posts: u64,
    pub authors: u64,
    pub replies: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LakeStats {
    pub posts: u64,
    pub files: u64,
    pub partitions: u64,
    pub bytes: u64,
    pub oldest_post_us: Option<i64>,
    pub newest_post_us: Option<i64>,
    pub generation: Generation,
    pub last_flush_at_us: Option<i64>,
}

mod analytics;
#[cfg(test)]
mod analytics_tests;
mod author_counts;
mod engagement;
mod heads;
mod key_ranges;
mod keys;
mod pages;
#[cfg(test)]
mod rollup_tests;
mod rollups;
mod rows;
mod run;
mod tag_authors;
#[cfg(test)]
mod tests;
mod undone;
mod values;
mod views;
