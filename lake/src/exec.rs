//! Runs compiled statements on DuckDB over the lake's Parquet files and turns rows into model
//! types. DuckDB connections are not `Sync`: each call clones a connection from the engine's
//! base one; async callers run these functions inside `spawn_blocking`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use duckdb::types::{TimeUnit, Value};
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
    /// The snapshot's `posts` data files.
    post_paths: Mutex<Arc<Vec<PathBuf>>>,
    /// The text indexes opened so far, by data file, and the files found without one (both
    /// forgotten when a new snapshot no longer lists the file; the latter at every snapshot,
    /// since `lake reindex` publishes what it builds).
    text_indexes: Mutex<HashMap<PathBuf, Option<Arc<crate::textindex::TextIndex>>>>,
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
    /// Statements with a rollup path that took it, and that read the posts instead.
    rollup_uses: std::sync::atomic::AtomicU64,
    rollup_refusals: std::sync::atomic::AtomicU64,
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

/// The most candidate rows the text indexes may give one statement; with more, a scan is
/// cheaper than reading them scattered through the files.
const MAX_INDEX_CANDIDATES: usize = 10_000;

/// What the text index of one data file narrows a statement's searches to.
enum Narrowed {
    /// No index narrows them: the file is read whole.
    Whole,
    /// More candidates than the statement may take.
    TooMany,
    Rows(Vec<u64>),
}

/// The candidates a page of a text search looks for first, at least; eight times as many
/// each time after, up to [`MAX_INDEX_CANDIDATES`].
const TEXT_PAGE_DEPTH: usize = 1_000;

/// The fewest rows the row groups of a first look for a page of the newest or oldest posts
/// hold (`Engine::stats_page_window`), and the most of a last look before the whole range:
/// each look reads about its row groups, each 16 times the last's.
const STATS_PAGE_DEPTH: usize = 1_000;
const MAX_STATS_PAGE_DEPTH: usize = 1 << 20;

/// The cursor of a page, with its order, to prune day partitions by.
fn page_keyset(plan: &Plan) -> Option<(&Keyset, PostOrder)> {
    match plan {
        Plan::Posts(page) => page.after.as_ref().map(|after| (after, page.order)),
        _ => None,
    }
}

/// The `created_at` range of the posts a statement of `plan` can return, as far as its filter
/// and cursor tell: what the text indexes are asked for.
fn created_window(plan: &Plan) -> Window {
    let Some(filter) = plan.filter() else { return Window::default() };
    let mut window = match filter.clock {
        Clock::CreatedAt => Window { since_us: filter.since_us, until_us: filter.until_us },
        Clock::IndexedAt => Window::default(),
    };
    if let Plan::Posts(PostsPlan { after: Some(after), order, .. }) = plan {
        // A page starts after its cursor: at or before its time (newest first), else at or after.
        let at = after.created_at_us;
        match order {
            PostOrder::Newest => window.until_us = Some(window.until_us.map_or(at + 1, |until| until.min(at + 1))),
            PostOrder::Oldest => window.since_us = Some(window.since_us.map_or(at, |since| since.max(at))),
        }
    }
    window
}

/// When [`Engine::refresh_views`] lists the files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refresh {
    /// When the catalog's generation moved.
    IfMoved,
    /// Always.
    Relist,
}

/// The lake as the views read it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Snapshot {
    /// The catalog state listed with the files. Its `flushed_through_us`: hot posts up to it
    /// are in the listed files.
    state: catalog::CatalogState,
    /// The `posts` files listed.
    post_files: u64,
    post_bytes: u64,
}

/// Replaces the hot tier's table `name` (of `columns`) by `rows` rows that `fill` appends, in
/// one step for the statements reading it; emptied (not dropped, a statement may have listed
/// it) when there are none and it `existed`.
fn replace_hot_table(
    base: &Connection,
    name: &str,
    columns: &str,
    existed: bool,
    rows: usize,
    fill: impl FnOnce(&mut duckdb::Appender<'_>) -> duckdb::Result<()>,
) -> Result<()> {
    if rows == 0 {
        if existed {
            base.execute_batch(&format!("DELETE FROM {name}"))?;
        }
        return Ok(());
    }
    base.execute_batch(&format!("CREATE OR REPLACE TABLE {name}_rows ({columns})"))?;
    let mut appender = base.appender(&format!("{name}_rows"))?;
    fill(&mut appender)?;
    appender.flush()?;
    drop(appender);
    base.execute_batch(&format!(
        "CREATE OR REPLACE TABLE {name} AS SELECT DISTINCT * FROM {name}_rows; DROP TABLE {name}_rows;"
    ))?;
    Ok(())
}

/// One table's view, over the files of a snapshot. A table with no files yet gets an empty
/// typed view.
struct TableView {
    table: &'static str,
    view: &'static str,
    empty_columns: &'static str,
    reads_files: AtomicBool,
}

const POST_COLUMNS_EMPTY: &str =
    "NULL::VARCHAR AS uri, NULL::VARCHAR AS cid, NULL::VARCHAR AS did, NULL::VARCHAR AS rkey,
  NULL::TIMESTAMP AS created_at, NULL::TIMESTAMP AS indexed_at, NULL::BOOLEAN AS created_at_clamped,
  NULL::VARCHAR AS text, NULL::VARCHAR[] AS langs, NULL::VARCHAR AS detected_lang,
  NULL::VARCHAR AS reply_root, NULL::VARCHAR AS reply_parent, NULL::VARCHAR AS quote_uri,
  NULL::VARCHAR AS embed_type, NULL::INTEGER AS image_count, NULL::VARCHAR AS external_uri,
  NULL::VARCHAR[] AS hashtags, NULL::VARCHAR[] AS mentions, NULL::VARCHAR[] AS links,
  NULL::VARCHAR[] AS labels, NULL::INTEGER AS text_len, NULL::INTEGER AS enrich_version,
  NULL::DATE AS \"date\"";

const DELETE_COLUMNS_EMPTY: &str =
    "NULL::VARCHAR AS uri, NULL::VARCHAR AS did, NULL::TIMESTAMP AS deleted_at, NULL::DATE AS \"date\"";

const INTERACTION_COLUMNS_EMPTY: &str = "NULL::VARCHAR AS did, NULL::VARCHAR AS kind, NULL::VARCHAR AS rkey,
  NULL::VARCHAR AS subject_did, NULL::VARCHAR AS subject_rkey, NULL::TIMESTAMP AS created_at,
  NULL::TIMESTAMP AS indexed_at, NULL::DATE AS \"date\"";

const INTERACTION_DELETE_COLUMNS_EMPTY: &str = "NULL::VARCHAR AS did, NULL::VARCHAR AS kind, NULL::VARCHAR AS rkey,
  NULL::TIMESTAMP AS deleted_at, NULL::DATE AS \"date\"";

/// Where each table's view is in [`Engine::tables`] (and its listing in a refresh).
const POSTS: usize = 0;
const DELETES: usize = 1;
const INTERACTIONS: usize = 3;
const INTERACTION_DELETES: usize = 4;

const ACCOUNT_COLUMNS_EMPTY: &str = "NULL::VARCHAR AS did, NULL::TIMESTAMP AS seen_at, NULL::VARCHAR AS handle,
  NULL::BOOLEAN AS active, NULL::VARCHAR AS status, NULL::DATE AS \"date\"";

/// Each DID's latest handle (from identity events) and activity (from account events), and the
/// accounts whose posts are hidden (deactivated, taken down, suspended or deleted; see
/// `lake::model::AccountEvent`). Small tables, rebuilt once per lake generation.
const ACCOUNT_TABLES: &str = "CREATE OR REPLACE TABLE account_state AS
SELECT did,
  arg_max(handle, seen_at) FILTER (WHERE handle IS NOT NULL) AS handle,
  arg_max(active, seen_at) FILTER (WHERE active IS NOT NULL) AS active,
  arg_max(status, seen_at) FILTER (WHERE active IS NOT NULL) AS status
FROM account_files GROUP BY did;
CREATE OR REPLACE TABLE hidden_authors AS
SELECT did FROM account_state
WHERE active = false AND coalesce(status, '') NOT IN ('desynchronized', 'throttled');";

impl TableView {
    fn new(table: &'static str, view: &'static str, empty_columns: &'static str) -> TableView {
        TableView { table, view, empty_columns, reads_files: AtomicBool::new(false) }
    }

    fn empty_sql(&self) -> String {
        format!("CREATE OR REPLACE VIEW {} AS SELECT {} WHERE false", self.view, self.empty_columns)
    }

    fn files_sql(&self, files: &[PathBuf]) -> String {
        if files.is_empty() {
            return self.empty_sql();
        }
        let list: Vec<String> =
            files.iter().map(|path| format!("'{}'", path.to_string_lossy().replace('\'', "''"))).collect();
        format!(
            "CREATE OR REPLACE VIEW {} AS SELECT * FROM read_parquet([{}], \
             hive_partitioning = true, hive_types = {{'date': DATE}}, union_by_name = true)",
            self.view,
            list.join(", ")
        )
    }
}

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
            text_indexes: Mutex::new(HashMap::new()),
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
            rollup_uses: std::sync::atomic::AtomicU64::new(0),
            rollup_refusals: std::sync::atomic::AtomicU64::new(0),
            rankings: Default::default(),
        };
        {
            let base = engine.base.lock().unwrap_or_else(|p| p.into_inner());
            base.execute_batch(rollups::CREATE_TABLES)?;
            base.execute_batch(undone::CREATE_TABLE)?;
            base.execute_batch(key_ranges::CREATE_TABLE)?;
            base.execute_batch(&undone::counts_view_sql(&[]))?;
        }
        engine.refresh_views(Refresh::IfMoved)?;
        Ok(engine)
    }

    /// Moves the views to the catalog's generation when it changed since the last snapshot:
    /// lists the tables' files and reads the catalog state under the [`catalog::PublishLock`],
    /// points the views at those files, takes the posts the new files hold out of the hot tier,
    /// and rebuilds the account tables and the `posts` view. `posts` anti-joins only what
    /// exists: a lake without deletes or hidden accounts pays nothing for them.
    ///
    /// `Refresh::Relist` lists again even when the generation looks the same: a statement lost a
    /// listed file, because a partition swap is under way (it publishes under the lock).
    ///
    /// The views read their files' footers when they are made, after the listing and outside
    /// the lock: a partition swapped in between takes a listed file away (seen with compaction
    /// every second under a firehose). Then the files are listed again, a few times.
    fn refresh_views(&self, refresh: Refresh) -> Result<()> {
        let mut refresh = refresh;
        for _ in 0..4 {
            match self.move_views(refresh) {
                Err(Error::Query(error)) if lost_a_file(&error) => {
                    tracing::debug!(%error, "a listed file went away before the views were made; listing again");
                    refresh = Refresh::Relist;
                }
                other => return other,
            }
        }
        self.move_views(Refresh::Relist)
    }

    /// One try of [`Engine::refresh_views`].
    fn move_views(&self, refresh: Refresh) -> Result<()> {
        let mut snapshot = self.snapshot.lock().unwrap_or_else(|p| p.into_inner());
        if refresh == Refresh::IfMoved
            && let Some(current) = *snapshot
            && catalog::read_state(&self.lake)?.generation == current.state.generation
        {
            return Ok(());
        }
        let (state, listed) = {
            let _lock = catalog::PublishLock::shared(&self.lake)?;
            let state = catalog::read_state(&self.lake)?;
            if refresh == Refresh::IfMoved && snapshot.is_some_and(|s| s.state.generation == state.generation) {
                return Ok(());
            }
            let mut listed = Vec::with_capacity(self.tables.len());
            for table in &self.tables {
                listed.push(catalog::table_files(&self.lake, table.table)?);
            }
            (state, listed)
        };
        // Before the connection, as rollup and counting statements take them: none runs while
        // the views move.
        let mut rollup_tables = self.rollups.write().unwrap_or_else(|p| p.into_inner());
        let mut undone = self.undone.write().unwrap_or_else(|p| p.into_inner());
        let base = self.base.lock().unwrap_or_else(|p| p.into_inner());
        for (table, files) in self.tables.iter().zip(&listed) {
            base.execute_batch(&table.files_sql(&files.paths))?;
            table.reads_files.store(!files.paths.is_empty(), Ordering::Release);
        }
        self.key_ranges.lock().unwrap_or_else(|p| p.into_inner()).sync(&base, &listed[POSTS].paths)?;
        // The new files hold the hot posts up to `flushed_through_us`: they leave the hot tier
        // in the same step, before any statement could count them twice.
        if let Some(through) = state.flushed_through_us
            && !self.hot.lock().unwrap_or_else(|p| p.into_inner()).is_empty()
        {
            base.execute("DELETE FROM hot_posts WHERE indexed_at <= make_timestamp(?)", [through])?;
        }
        base.execute_batch(ACCOUNT_TABLES)?;
        let hidden: std::collections::HashSet<String> = base
            .prepare("SELECT did FROM hidden_authors")?
            .query_map([], |row| row.get(0))?
            .collect::<duckdb::Result<_>>()?;
        self.hidden_present.store(!hidden.is_empty(), Ordering::Release);
        let hidden = Arc::new(hidden);
        *self.hidden_dids.lock().unwrap_or_else(|p| p.into_inner()) = hidden.clone();
        self.create_posts_view(&base)?;
        let posts = &listed[POSTS];
        base.execute_batch(&undone::counts_view_sql(&listed[INTERACTIONS].paths))?;
        undone.moved(state.generation, &listed[INTERACTIONS].paths, &listed[INTERACTION_DELETES].paths, hidden.clone());
        rollup_tables.moved(rollups::Listing::new(&posts.paths, &listed[DELETES].paths, hidden));
        *self.partitions.lock().unwrap_or_else(|p| p.into_inner()) = posts.partitions.clone();
        let listed_paths: std::collections::HashSet<&PathBuf> = posts.paths.iter().collect();
        self.text_indexes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|path, index| index.is_some() && listed_paths.contains(path));
        *self.post_paths.lock().unwrap_or_else(|p| p.into_inner()) = Arc::new(posts.paths.clone());
        self.too_common.lock().unwrap_or_else(|p| p.into_inner()).clear();
        *snapshot = Some(Snapshot { state, post_files: posts.files, post_bytes: posts.bytes });
        Ok(())
    }

    /// (Re)creates the `posts` view from what exists: the files, with the hot tier when it holds
    /// posts, less deletes and hidden accounts when there are any.
    /// `file_posts` is the same without the hot tier: what the files hold.
    fn create_posts_view(&self, base: &Connection) -> Result<()> {
        let files = self.less_file_deletes("SELECT * FROM post_files");
        base.execute_batch(&format!(
            "CREATE OR REPLACE VIEW posts AS {};
             CREATE OR REPLACE VIEW file_posts AS {};
             CREATE OR REPLACE VIEW hot_live AS {};
             CREATE OR REPLACE VIEW interactions AS {};",
            self.live_posts_sql(&files, true),
            self.live_posts_sql(&files, false),
            self.live_posts_sql("SELECT * FROM post_files WHERE false", true),
            self.live_interactions_sql(),
        ))?;
        Ok(())
    }

    /// The live likes and reposts: the stored ones, less those deleted since and those of
    /// hidden accounts (as Bluesky stops counting them). The buffer's are not counted until
    /// they are flushed.
    fn live_interactions_sql(&self) -> String {
        let mut sql = String::from("SELECT i.* FROM interaction_files AS i");
        if self.tables[INTERACTION_DELETES].reads_files.load(Ordering::Acquire) {
            sql.push_str(
                " ANTI JOIN interaction_deletes AS d ON d.did = i.did AND d.kind = i.kind AND d.rkey = i.rkey",
            );
        }
        if self.hidden_present.load(Ordering::Acquire) && self.tables[INTERACTIONS].reads_files.load(Ordering::Acquire)
        {
            sql.push_str(" ANTI JOIN hidden_authors AS h ON h.did = i.did");
        }
        sql
    }

    /// `files` (a relation of stored posts) less the posts the lake's deletes take out.
    fn less_file_deletes(&self, files: &str) -> String {
        if self.tables[DELETES].reads_files.load(Ordering::Acquire) {
            format!("SELECT f.* FROM ({files}) AS f ANTI JOIN deletes AS d ON d.uri = f.uri")
        } else {
            files.to_owned()
        }
    }

    /// The live posts of `files` (stored posts, less the lake's deletes: [`Self::less_file_deletes`]),
    /// with the hot tier's when it holds posts and `with_hot`: less hidden accounts' posts when
    /// there are any, and the hot tier's deletes and account states when `with_hot`.
    ///
    /// The lake's deletes do not apply to the hot tier: its posts came after everything the
    /// files hold, so a delete there took out an earlier record under the same uri, not them.
    fn live_posts_sql(&self, files: &str, with_hot: bool) -> String {
        let hot = with_hot && !self.hot.lock().unwrap_or_else(|p| p.into_inner()).is_empty();
        let (hot_deletes, hot_accounts) =
            if with_hot { *self.hot_overlay.lock().unwrap_or_else(|p| p.into_inner()) } else { (false, false) };
        let mut hidden = String::new();
        if hot_deletes {
            hidden.push_str(" ANTI JOIN hot_deletes AS hd ON hd.uri = p.uri");
        }
        if hot_accounts {
            // The buffer's account state is newer than the lake's: it decides for its DIDs.
            hidden.push_str(
                " ANTI JOIN (SELECT did FROM hidden_authors ANTI JOIN hot_accounts USING (did) \
                 UNION ALL SELECT did FROM hot_accounts WHERE hides) AS h ON h.did = p.did",
            );
        } else if self.hidden_present.load(Ordering::Acquire) {
            hidden.push_str(" ANTI JOIN hidden_authors AS h ON h.did = p.did");
        }
        let hot = if hot { " UNION ALL BY NAME SELECT * FROM hot_posts" } else { "" };
        format!("SELECT p.* FROM ({files}{hot}) AS p{hidden}")
    }

    /// The `posts` a statement with text searches in `filter` reads, narrowed by the text
    /// indexes: of each indexed file in the filter's days, only the rows its index gives as
    /// candidates for every search (`TextIndex::candidates` never misses a match; the statement
    /// still checks each with the search's exact semantics), and every row of the files without
    /// an index, then the hot tier, less deleted and hidden posts, as in the `posts` view. None
    /// when no index narrows the search, or the candidates are so many that a scan is cheaper.
    ///
    /// The deleted rows of the indexed files are left out of their candidates when the rollup
    /// tables know them (`RollupTables::deleted_rows`, of the same snapshot as the files): an
    /// anti-join with the lake's deletes would read every one of them (1.8 million at a month
    /// of Bluesky, most of a second) to take out a few rows.
    fn narrowed_posts_sql(&self, plan: &Plan) -> Option<String> {
        let filter = plan.filter()?;
        // A ranking counts replies and quotes from every post, not only the matching ones.
        if filter.text.is_empty() || matches!(plan, Plan::RankedPosts(_)) {
            return None;
        }
        // Both move with the snapshot under the rollup tables' lock. While the tables are being
        // brought up to date (which takes seconds at a month of posts), the statement anti-joins
        // the deletes rather than wait.
        let paths = || self.post_paths.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let (paths, deleted) = match self.rollups.try_read() {
            Ok(tables) => (paths(), tables.deleted_rows()),
            Err(std::sync::TryLockError::Poisoned(tables)) => (paths(), tables.into_inner().deleted_rows()),
            Err(std::sync::TryLockError::WouldBlock) => (paths(), None),
        };
        let window = created_window(plan);
        let (first, last) = crate::sql::partition_days(filter, page_keyset(plan));
        let (mut narrowed, mut whole, mut candidates) = (Vec::new(), Vec::new(), 0_usize);
        let mut indexed = false;
        for path in paths.iter() {
            let day = rollups::partition_day(path);
            if day.is_some_and(|day| first.is_some_and(|f| day < f) || last.is_some_and(|l| day > l)) {
                continue;
            }
            let quoted = format!("'{}'", path.to_string_lossy().replace('\'', "''"));
            match self.candidates_in(path, &filter.text, window, MAX_INDEX_CANDIDATES - candidates) {
                Narrowed::TooMany => return None,
                Narrowed::Whole => whole.push(quoted),
                Narrowed::Rows(mut rows) => {
                    indexed = true;
                    candidates += rows.len();
                    if let Some(dead) = deleted.as_ref().and_then(|deleted| deleted.get(path)) {
                        rows.retain(|row| dead.binary_search(row).is_err());
                    }
                    if !rows.is_empty() {
                        let rows: Vec<String> = rows.iter().map(u64::to_string).collect();
                        narrowed.push(format!(
                            "SELECT * EXCLUDE (file_row_number) FROM read_parquet({quoted}, hive_partitioning = true, \
                             hive_types = {{'date': DATE}}, file_row_number = true) WHERE file_row_number IN ({})",
                            rows.join(", ")
                        ));
                    }
                }
            }
        }
        if !indexed {
            return None;
        }
        if !whole.is_empty() {
            let scanned = format!(
                "SELECT * FROM read_parquet([{}], hive_partitioning = true, hive_types = {{'date': DATE}}, union_by_name = true)",
                whole.join(", ")
            );
            narrowed.push(if deleted.is_some() { self.less_file_deletes(&scanned) } else { scanned });
        }
        if narrowed.is_empty() {
            narrowed.push(format!("SELECT {POST_COLUMNS_EMPTY} WHERE false"));
        }
        self.text_index_uses.fetch_add(1, Ordering::Relaxed);
        let files = narrowed.join(" UNION ALL BY NAME ");
        let files = if deleted.is_some() { files } else { self.less_file_deletes(&files) };
        Some(self.live_posts_sql(&files, true))
    }

    /// The rows of the data file `path` created in `window` that may match every search of
    /// `texts`, sorted, from its index, if there are at most `limit`: `Whole` if it has no index
    /// (or one that does not open) or no search narrows.
    fn candidates_in(&self, path: &Path, texts: &[crate::search::TextQuery], window: Window, limit: usize) -> Narrowed {
        let Some(index) = self.text_index(path) else { return Narrowed::Whole };
        let key = (path.to_path_buf(), texts.to_vec(), window);
        if self.too_common.lock().unwrap_or_else(|p| p.into_inner()).contains(&key) {
            return Narrowed::TooMany;
        }
        // A search the index cannot narrow (or that the statement will refuse) narrows nothing.
        match index.candidates_up_to(texts, window, limit) {
            Ok(crate::textindex::Candidates::Rows(rows)) => Narrowed::Rows(rows),
            Ok(crate::textindex::Candidates::TooMany) => {
                // Too many for the whole budget, not just what other files left of it.
                if limit == MAX_INDEX_CANDIDATES {
                    let mut known = self.too_common.lock().unwrap_or_else(|p| p.into_inner());
                    if known.len() < 100_000 {
                        known.insert(key);
                    }
                }
                Narrowed::TooMany
            }
            Ok(crate::textindex::Candidates::All) | Err(_) => Narrowed::Whole,
        }
    }

    /// The text index of the data file `path`, opened once; `None` if it has none, or one that
    /// does not open (its file is then scanned).
    fn text_index(&self, path: &Path) -> Option<Arc<crate::textindex::TextIndex>> {
        if !self.use_text_indexes {
            return None;
        }
        let mut open = self.text_indexes.lock().unwrap_or_else(|p| p.into_inner());
        open.entry(path.to_path_buf())
            .or_insert_with(|| {
                let dir = crate::textindex::dir_for(path);
                if !dir.is_dir() {
                    return None;
                }
                crate::textindex::TextIndex::open(&dir)
                    .inspect_err(|error| {
                        tracing::warn!(%error, path = %dir.display(), "a text index does not open; scanning its file");
                    })
                    .ok()
                    .map(Arc::new)
            })
            .clone()
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

    /// Sets the hot tier: posts still in the buffer (not in any file yet), answered with the
    /// files' from now on, and the buffer's deletes and account states, applied to both.
    /// The caller leaves out posts the files have, copies and deleted posts.
    pub fn set_hot(&self, hot: HotTier<'_>) -> Result<()> {
        let posts = hot.posts;
        self.refresh_views(Refresh::IfMoved)?;
        // Held throughout (before `base`, as in `refresh_views`): the snapshot cannot move
        // between the filter below and the new table.
        let snapshot = self.snapshot.lock().unwrap_or_else(|p| p.into_inner());
        let base = self.base.lock().unwrap_or_else(|p| p.into_inner());
        // Posts the snapshot's files hold (a flush wrote them since the caller looked) are not
        // hot any more; the next snapshot takes out the rest.
        let through = snapshot.and_then(|s| s.state.flushed_through_us).unwrap_or(i64::MIN);
        let fresh: Vec<Post>;
        let posts = if posts.iter().any(|p| p.indexed_at_us <= through) {
            fresh = posts.iter().filter(|p| p.indexed_at_us > through).cloned().collect();
            &fresh[..]
        } else {
            posts
        };
        let range = HotRange {
            created_at: posts.iter().map(|p| p.created_at_us).min().zip(posts.iter().map(|p| p.created_at_us).max()),
            indexed_at: posts.iter().map(|p| p.indexed_at_us).min().zip(posts.iter().map(|p| p.indexed_at_us).max()),
        };
        let was_empty = self.hot.lock().unwrap_or_else(|p| p.into_inner()).is_empty();
        if !posts.is_empty() {
            // Typed like the files: the same columns in the same order, then the partition date.
            base.execute_batch(&format!(
                "CREATE OR REPLACE TABLE hot_posts_rows AS SELECT * EXCLUDE (\"date\") FROM (SELECT {POST_COLUMNS_EMPTY}) WHERE false"
            ))?;
            let batch = <Post as crate::model::TableRow>::to_batch(posts)?;
            let schema = batch.schema();
            let columns = schema
                .fields()
                .iter()
                .zip(batch.columns())
                .map(|(field, column)| match field.data_type() {
                    arrow::datatypes::DataType::Dictionary(..) => {
                        arrow::compute::cast(column, &arrow::datatypes::DataType::Utf8)
                    }
                    _ => Ok::<_, arrow::error::ArrowError>(column.clone()),
                })
                .collect::<std::result::Result<Vec<_>, _>>()?;
            let fields: Vec<arrow::datatypes::Field> = schema
                .fields()
                .iter()
                .zip(&columns)
                .map(|(field, column)| field.as_ref().clone().with_data_type(column.data_type().clone()))
                .collect();
            let batch =
                arrow::record_batch::RecordBatch::try_new(Arc::new(arrow::datatypes::Schema::new(fields)), columns)?;
            base.appender("hot_posts_rows")?.append_record_batch(batch)?;
            base.execute_batch(
                "CREATE OR REPLACE TABLE hot_posts AS SELECT *, CAST(created_at AS DATE) AS \"date\" FROM hot_posts_rows;
                 DROP TABLE hot_posts_rows;",
            )?;
        }
        let overlay_was = *self.hot_overlay.lock().unwrap_or_else(|p| p.into_inner());
        replace_hot_table(&base, "hot_deletes", "uri VARCHAR", overlay_was.0, hot.deleted.len(), |appender| {
            hot.deleted.iter().try_for_each(|uri| appender.append_row([uri]))
        })?;
        replace_hot_table(
            &base,
            "hot_accounts",
            "did VARCHAR, hides BOOLEAN",
            overlay_was.1,
            hot.accounts.len(),
            |a| hot.accounts.iter().try_for_each(|(did, hides)| a.append_row(duckdb::params![did, hides])),
        )?;
        let overlay = (!hot.deleted.is_empty(), !hot.accounts.is_empty());
        *self.hot.lock().unwrap_or_else(|p| p.into_inner()) = range;
        *self.hot_overlay.lock().unwrap_or_else(|p| p.into_inner()) = overlay;
        if was_empty != posts.is_empty() || overlay != overlay_was {
            self.create_posts_view(&base)?;
        }
        if posts.is_empty() && !was_empty {
            // Emptied, not dropped: a statement that listed it a moment ago still finds it.
            base.execute_batch("DELETE FROM hot_posts")?;
        }
        Ok(())
    }

    /// Whether the lake's account states hide `did`'s posts (the buffer's are the caller's).
    pub fn hides_author(&self, did: &str) -> bool {
        self.hidden_dids.lock().unwrap_or_else(|p| p.into_inner()).contains(did)
    }

    /// What the hot tier holds now.
    pub fn hot_range(&self) -> HotRange {
        *self.hot.lock().unwrap_or_else(|p| p.into_inner())
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

    fn connection(&self) -> Result<Connection> {
        self.refresh_views(Refresh::IfMoved)?;
        Ok(self.base.lock().unwrap_or_else(|p| p.into_inner()).try_clone()?)
    }

    /// Prepares and runs `plan`, handing each row to `read`. Interruptible through the
    /// thread's [`Interrupt`], if [`with_interrupt`] set one.
    ///
    /// A statement that lost a file its snapshot listed (a compaction swapped the partition:
    /// `crate::compact`) runs once more, on a snapshot listed anew.
    fn run<T>(&self, plan: &Plan, mut read: impl FnMut(&duckdb::Row<'_>) -> Result<T>) -> Result<Vec<T>> {
        let compiled = compile(plan)?;
        self.note_touched(plan);
        self.once_more_if_a_file_went(|| {
            let started = Instant::now();
            let answered =
                |from, why| Answered { question: plan.question(), from, why, ms: None, statements: Vec::new() };
            let from_posts = match self.run_rollup(plan, &mut read)? {
                Some(Ok(rows)) => {
                    self.rollup_uses.fetch_add(1, Ordering::Relaxed);
                    note_answered(answered("rollups", None), started);
                    return Ok(rows);
                }
                Some(Err(why)) => {
                    self.rollup_refusals.fetch_add(1, Ordering::Relaxed);
                    Some(answered("posts", Some(why)))
                }
                None => explaining().then(|| answered("posts", None)),
            };
            let mut sql = compiled.clone();
            // Built for the snapshot of this try: it names its files.
            if let Some(filter) = plan.filter() {
                match self.narrowed_posts_sql(plan) {
                    // The statement reads `posts` narrowed by the text indexes instead of the view.
                    Some(narrowed) => sql.text = format!("WITH posts AS ({narrowed})\n{}", sql.text),
                    None if !filter.text.is_empty() => {
                        self.text_scans.fetch_add(1, Ordering::Relaxed);
                    }
                    None => {}
                }
            }
            let rows = if counts_interactions(plan) {
                self.run_counting(&sql, &mut read)?
            } else {
                self.run_sql(&sql, &mut read)?
            };
            if let Some(answered) = from_posts {
                note_answered(answered, started);
            }
            Ok(rows)
        })
    }

    /// Runs `plan` from rollups ([`crate::sql::compile_rollup`]) if it can; why not, for a
    /// question rollups answer in other cases; `None` for one they never answer.
    fn run_rollup<T>(
        &self,
        plan: &Plan,
        read: &mut impl FnMut(&duckdb::Row<'_>) -> Result<T>,
    ) -> Result<Option<std::result::Result<Vec<T>, &'static str>>> {
        if !matches!(
            plan,
            Plan::Buckets(_) | Plan::TopHashtags(_) | Plan::TopAuthors(_) | Plan::AuthorPosts(_) | Plan::Trending(_)
        ) {
            return Ok(None);
        }
        if !self.use_rollups {
            return Ok(Some(Err("rollups are off (--rollups false)")));
        }
        if let Some(why) = crate::sql::rollup_refusal(plan) {
            return Ok(Some(Err(why)));
        }
        self.refresh_views(Refresh::IfMoved)?;
        let tables = self.read_synced(&self.rollups, rollups::RollupTables::synced, rollups::RollupTables::sync)?;
        let listing = tables.listing();
        if listing.rolled.is_empty() {
            return Ok(Some(Err("no partition has rollups")));
        }
        let scope = crate::sql::RollupScope { unrolled: listing.unrolled.clone(), hot: !self.hot_range().is_empty() };
        // Not `self.connection()`: a refresh would wait for the lock this statement holds.
        let connection = self.base.lock().unwrap_or_else(|p| p.into_inner()).try_clone()?;
        if let Plan::TopAuthors(top) = plan {
            let Some(days) = crate::sql::compile_rollup_authors(top, &scope)? else {
                return Ok(Some(Err("the range holds no whole UTC day")));
            };
            let rest = match &days.rest {
                Some(sql) => self.run_sql_on(&connection, sql, |row| Ok((row.get(0)?, count(row, 1)?)))?,
                None => Vec::new(),
            };
            let best = tables.authors().top(days.first_day, days.end_day, &rest, top.limit as usize);
            return Ok(Some(Ok(self.run_sql_on(&connection, &rows_of(&best), read)?)));
        }
        if let Plan::AuthorPosts(dids) = plan {
            let rest = match crate::sql::compile_rollup_author_posts(dids, &scope)? {
                Some(sql) => self.run_sql_on(&connection, &sql, |row| Ok((row.get(0)?, count(row, 1)?)))?,
                None => Vec::new(),
            };
            let counts = tables.authors().posts_of(dids, &rest);
            return Ok(Some(Ok(self.run_sql_on(&connection, &rows_of(&counts), read)?)));
        }
        let Some(sql) = crate::sql::compile_rollup(plan, &scope)? else {
            return Ok(Some(Err("the range holds no whole hour")));
        };
        Ok(Some(Ok(self.run_sql_on(&connection, &sql, read)?)))
    }

    /// Runs `sql`, which reads `interaction_counts` or `interaction_received`, under `undone`'s
    /// read lock once it holds the snapshot's undone likes and reposts; with rollups off, over
    /// the likes and reposts themselves, one row each.
    fn run_counting<T>(&self, sql: &Sql, read: impl FnMut(&duckdb::Row<'_>) -> Result<T>) -> Result<Vec<T>> {
        if !self.use_rollups {
            let rows = "interaction_counts AS (SELECT kind, subject_did, subject_rkey, \"date\", 1 AS n FROM interactions), \
                        interaction_received AS (FROM interaction_counts)";
            let text = match sql.text.strip_prefix("WITH ") {
                Some(rest) => format!("WITH {rows}, {rest}"),
                None => format!("WITH {rows}\n{}", sql.text),
            };
            return self.run_sql(&Sql { text, params: sql.params.clone() }, read);
        }
        self.refresh_views(Refresh::IfMoved)?;
        let _undone =
            self.read_synced(&self.undone, undone::UndoneInteractions::synced, undone::UndoneInteractions::sync)?;
        // Not `self.connection()`: a refresh would wait for the lock this statement holds.
        let connection = self.base.lock().unwrap_or_else(|p| p.into_inner()).try_clone()?;
        self.run_sql_on(&connection, sql, read)
    }

    /// The tables under `lock`, read-locked once they hold the current snapshot (brought up to
    /// it by [`Self::sync_once`] when behind).
    fn read_synced<'a, T>(
        &self,
        lock: &'a std::sync::RwLock<T>,
        synced: fn(&T) -> bool,
        sync: fn(&mut T, &Connection) -> Result<()>,
    ) -> Result<std::sync::RwLockReadGuard<'a, T>> {
        loop {
            let tables = lock.read().unwrap_or_else(|p| p.into_inner());
            if synced(&tables) {
                return Ok(tables);
            }
            drop(tables);
            self.sync_once(lock, synced, sync)?;
        }
    }

    /// Brings `dead_interactions` up to the current snapshot (once, by whoever gets there first).
    fn prepare_undone(&self) -> Result<()> {
        self.sync_once(&self.undone, undone::UndoneInteractions::synced, undone::UndoneInteractions::sync)
    }

    /// Brings the tables under `lock` up to the current snapshot, unless `synced` says they
    /// are: under the write lock, checked again, by whoever gets there first.
    fn sync_once<T>(
        &self,
        lock: &std::sync::RwLock<T>,
        synced: fn(&T) -> bool,
        sync: fn(&mut T, &Connection) -> Result<()>,
    ) -> Result<()> {
        if synced(&lock.read().unwrap_or_else(|p| p.into_inner())) {
            return Ok(());
        }
        let mut tables = lock.write().unwrap_or_else(|p| p.into_inner());
        if !synced(&tables) {
            let connection = self.base.lock().unwrap_or_else(|p| p.into_inner()).try_clone()?;
            sync(&mut tables, &connection)?;
        }
        Ok(())
    }

    /// Brings the tables rollup statements read up to the current snapshot; rollup statements
    /// do it when they find them behind, a server after each new generation, so that no query
    /// waits for it.
    pub fn prepare_rollups(&self) -> Result<()> {
        if !self.use_rollups {
            return Ok(());
        }
        self.refresh_views(Refresh::IfMoved)?;
        self.prepare_undone()?;
        self.prepare_rollup_tables()
    }

    fn prepare_rollup_tables(&self) -> Result<()> {
        self.sync_once(&self.rollups, rollups::RollupTables::synced, rollups::RollupTables::sync)
    }

    /// Statements with a rollup path that took it ([`crate::rollup`]).
    pub fn rollup_uses(&self) -> u64 {
        self.rollup_uses.load(Ordering::Relaxed)
    }

    /// Statements with a rollup path that read the posts instead.
    pub fn rollup_refusals(&self) -> u64 {
        self.rollup_refusals.load(Ordering::Relaxed)
    }

    /// Rankings of likes and reposts answered the way `ranked` says.
    pub fn rankings(&self, ranked: Ranked) -> u64 {
        self.rankings[ranked as usize].load(Ordering::Relaxed)
    }

    /// Runs `statement`, and once more on a snapshot listed anew if it lost a file its snapshot
    /// listed (a compaction swapped the partition: `crate::compact`).
    fn once_more_if_a_file_went<T>(&self, mut statement: impl FnMut() -> Result<T>) -> Result<T> {
        match statement() {
            Err(Error::Query(error)) if lost_a_file(&error) => {
                tracing::debug!(%error, "a data file went away under a query (compaction); running it again");
                self.refresh_views(Refresh::Relist)?;
                statement()
            }
            // A rollup the author counts read went the same way.
            Err(Error::Io { source, path, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                tracing::debug!(path = %path.display(), "a rollup went away under a query (compaction); running it again");
                self.refresh_views(Refresh::Relist)?;
                statement()
            }
            other => other,
        }
    }

    fn run_sql<T>(&self, sql: &Sql, read: impl FnMut(&duckdb::Row<'_>) -> Result<T>) -> Result<Vec<T>> {
        self.run_sql_on(&self.connection()?, sql, read)
    }

    /// Runs `sql` on `connection`, interruptible as [`Self::run`] says.
    fn run_sql_on<T>(
        &self,
        connection: &Connection,
        sql: &Sql,
        read: impl FnMut(&duckdb::Row<'_>) -> Result<T>,
    ) -> Result<Vec<T>> {
        let started = Instant::now();
        let interrupt = CURRENT_INTERRUPT.with(|current| current.borrow().clone());
        let result = match interrupt {
            None => run_statement(connection, sql, read),
            Some(interrupt) => {
                interrupt.register(connection.interrupt_handle())?;
                let result = run_statement(connection, sql, read);
                let interrupted = interrupt.unregister();
                match result {
                    Err(Error::Query(_)) if interrupted => Err(Error::Interrupted),
                    other => other,
                }
            }
        };
        if explaining() && result.is_ok() {
            let statement = Statement {
                sql: sql.text.clone(),
                params: sql.params.clone(),
                ms: started.elapsed().as_secs_f64() * 1e3,
            };
            STATEMENTS.with(|statements| statements.borrow_mut().push(statement));
        }
        result
    }

    /// Runs `plan` and counts its rows without converting them: the raw DuckDB baseline that
    /// benchmarks compare the API with.
    pub fn count_rows(&self, plan: &Plan) -> Result<usize> {
        Ok(self.run(plan, |_| Ok(()))?.len())
    }

    /// Runs a posts plan; each returned post has the plan's columns filled, the others default.
    ///
    /// Copies of a post (the same uri ingested twice by a replay) share `(created_at, uri)`, so
    /// they are neighbours in the page order: they are skipped here, and a page short of rows
    /// for it continues after its last row. Cheaper by far than deduplicating every matching
    /// row in SQL before the top-N.
    pub fn posts(&self, plan: &PostsPlan) -> Result<Vec<Post>> {
        // A text search with more candidates than a statement may read: the page is looked for
        // first among the posts created since the newest few of them (until the oldest few, for
        // OLDEST). A full page there is the page: every match left out is older (newer) than
        // every one of its rows.
        let mut depth = TEXT_PAGE_DEPTH.max(plan.limit as usize * 8);
        while depth <= MAX_INDEX_CANDIDATES {
            let Some(nearer) = self.text_page_window(plan, depth)? else { break };
            let rows = self.posts_within(&nearer)?;
            if rows.len() == plan.limit as usize {
                self.text_page_cuts.fetch_add(1, Ordering::Relaxed);
                return Ok(rows);
            }
            depth *= 8;
        }
        // A page of the newest (oldest) posts: looked for first among the newest (oldest) row
        // groups that hold `depth` rows by their statistics, then deeper.
        let mut depth = STATS_PAGE_DEPTH.max(plan.limit as usize * 64);
        while depth <= MAX_STATS_PAGE_DEPTH {
            let Some(nearer) = self.stats_page_window(plan, depth)? else { break };
            let rows = self.posts_within(&nearer)?;
            if rows.len() == plan.limit as usize {
                return Ok(rows);
            }
            depth *= 16;
        }
        self.posts_within(plan)
    }

    /// `plan` with its time range cut to the newest (oldest, for OLDEST) row groups of the
    /// stored posts, by their statistics (`post_key_ranges`), that lie whole in its range and
    /// hold at least `depth` rows: the cut is the oldest time of those (the newest, for
    /// OLDEST). Every post left out is older (newer) than every one of theirs, so a full page
    /// within the cut is the page. `None` when the stored row groups in range hold fewer, or
    /// when its range is on `indexed_at` (then `created_at` orders nothing it cuts), or when it
    /// searches text (the text indexes narrow that: [`Self::text_page_window`]).
    fn stats_page_window(&self, plan: &PostsPlan, depth: usize) -> Result<Option<PostsPlan>> {
        if plan.filter.clock != Clock::CreatedAt || !plan.filter.text.is_empty() {
            return Ok(None);
        }
        let window = created_window(&Plan::Posts(plan.clone()));
        let (since, until) = (window.since_us.unwrap_or(i64::MIN), window.until_us.unwrap_or(i64::MAX));
        let (cut_column, direction) = match plan.order {
            PostOrder::Newest => ("created_at_lo", "DESC"),
            PostOrder::Oldest => ("created_at_hi", "ASC"),
        };
        let sql = Sql {
            text: format!(
                "SELECT cut FROM (SELECT {cut_column} AS cut, \
                 sum(n_rows) OVER (ORDER BY {cut_column} {direction} ROWS UNBOUNDED PRECEDING) AS seen \
                 FROM post_key_ranges WHERE created_at_lo >= ? AND created_at_hi < ? AND n_rows IS NOT NULL) \
                 WHERE seen >= ? ORDER BY cut {direction} LIMIT 1"
            ),
            params: vec![Param::Int(since), Param::Int(until), Param::Int(i64::try_from(depth).unwrap_or(i64::MAX))],
        };
        let Some(cut) = self.run_sql(&sql, |row| Ok(row.get::<_, i64>(0)?))?.pop() else { return Ok(None) };
        let mut nearer = plan.clone();
        match plan.order {
            PostOrder::Newest => nearer.filter.since_us = Some(plan.filter.since_us.map_or(cut, |s| s.max(cut))),
            PostOrder::Oldest => {
                nearer.filter.until_us = Some(plan.filter.until_us.map_or(cut + 1, |u| u.min(cut + 1)));
            }
        }
        Ok(Some(nearer))
    }

    /// `plan` with its time range cut to the posts created since the `depth`-th newest
    /// candidate of its text searches in the indexed files (until the `depth`-th oldest, for
    /// OLDEST); `None` when there are fewer, when its filter has no text search the indexes can
    /// narrow, or when its range is on `indexed_at` (then `created_at` cannot cut it).
    fn text_page_window(&self, plan: &PostsPlan, depth: usize) -> Result<Option<PostsPlan>> {
        let filter = &plan.filter;
        if filter.text.is_empty() || filter.clock != Clock::CreatedAt {
            return Ok(None);
        }
        self.refresh_views(Refresh::IfMoved)?;
        let newest = plan.order == PostOrder::Newest;
        let page = Plan::Posts(plan.clone());
        let window = created_window(&page);
        let (first, last) = crate::sql::partition_days(filter, page_keyset(&page));
        let paths = self.post_paths.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let mut by_day: std::collections::BTreeMap<chrono::NaiveDate, Vec<&PathBuf>> = Default::default();
        for path in paths.iter() {
            if let Some(day) = rollups::partition_day(path)
                && first.is_none_or(|f| day >= f)
                && last.is_none_or(|l| day <= l)
            {
                by_day.entry(day).or_default().push(path);
            }
        }
        let days: Box<dyn Iterator<Item = &Vec<&PathBuf>>> =
            if newest { Box::new(by_day.values().rev()) } else { Box::new(by_day.values()) };
        let mut times: Vec<i64> = Vec::new();
        for files in days {
            for path in files {
                let Some(index) = self.text_index(path) else { continue };
                match index.first_times(&filter.text, window, depth, newest)? {
                    Some(found) => times.extend(found),
                    None => return Ok(None),
                }
            }
            // Every later day's posts are older (newer): the cut is known.
            if times.len() >= depth {
                if newest {
                    times.sort_unstable_by(|a, b| b.cmp(a));
                } else {
                    times.sort_unstable();
                }
                let cut = times[depth - 1];
                let mut nearer = plan.clone();
                if newest {
                    nearer.filter.since_us = Some(filter.since_us.map_or(cut + 1, |since| since.max(cut + 1)));
                } else {
                    nearer.filter.until_us = Some(filter.until_us.map_or(cut, |until| until.min(cut)));
                }
                return Ok(Some(nearer));
            }
        }
        Ok(None)
    }

    /// A page of `plan` as its statements give it.
    fn posts_within(&self, plan: &PostsPlan) -> Result<Vec<Post>> {
        // The page's first day (the newest for NEWEST) holds its first rows: when that one
        // partition fills the page, the page is read from it alone.
        if let Some(first_day) = self.first_day_only(plan)? {
            let rows = self.page(&first_day)?;
            if rows.len() == plan.limit as usize {
                return Ok(rows);
            }
        }
        self.page(plan)
    }

    /// `plan` narrowed to the one day partition its page starts in, when there are others. The
    /// partition list is the one of the current generation: writers publish a new generation
    /// after every file they add (`catalog::publish`), so it is never missing a day.
    fn first_day_only(&self, plan: &PostsPlan) -> Result<Option<PostsPlan>> {
        Ok(first_day_of(plan, &self.post_partitions()?))
    }

    /// A page of `plan`, skipping neighbouring copies (see [`Engine::posts`]).
    fn page(&self, plan: &PostsPlan) -> Result<Vec<Post>> {
        let wanted = plan.limit as usize;
        let mut out: Vec<Post> = Vec::with_capacity(wanted);
        let mut page = plan.clone();
        let columns: Vec<PostColumn> = plan.columns.iter().copied().collect();
        loop {
            let rows = self.read_posts(&Plan::Posts(page.clone()), columns.clone())?;
            let full = rows.len() == page.limit as usize;
            let last = rows.last().map(|p| Keyset { created_at_us: p.created_at_us, uri: p.uri.clone() });
            for post in rows {
                if out.last().is_none_or(|previous| previous.uri != post.uri) {
                    out.push(post);
                }
            }
            if out.len() >= wanted || !full {
                out.truncate(wanted);
                return Ok(out);
            }
            page.after = last;
            page.limit = u32::try_from(wanted - out.len()).unwrap_or(u32::MAX).max(16);
        }
    }

    /// The first `plan.limit` posts of each author in `plan.filter.authors`, grouped by author
    /// (each post's `did` is filled).
    pub fn posts_per_author(&self, plan: &PostsPlan) -> Result<Vec<Post>> {
        let mut columns: Vec<PostColumn> = plan.columns.iter().copied().collect();
        if !columns.contains(&PostColumn::Did) {
            columns.push(PostColumn::Did);
        }
        let mut plan = plan.clone();
        plan.after = None;
        self.read_posts(&Plan::PostsPerAuthor(plan), columns)
    }

    fn read_posts(&self, plan: &Plan, columns: Vec<PostColumn>) -> Result<Vec<Post>> {
        self.run(plan, |row| {
            let mut post = Post::default();
            for (index, column) in columns.iter().enumerate() {
                set_column(&mut post, *column, row.get::<_, Value>(index)?)?;
            }
            Ok(post)
        })
    }

    /// Counts distinct posts matching `filter`, with their oldest and newest `created_at`.
    pub fn summary(&self, filter: &PostFilter) -> Result<Summary> {
        let rows = self.run(&Plan::Summary(filter.clone()), |row| {
            Ok(Summary {
                n_posts: count(row, 0)?,
                oldest_us: timestamp_micros(&row.get::<_, Value>(1)?),
                newest_us: timestamp_micros(&row.get::<_, Value>(2)?),
            })
        })?;
        Ok(rows.into_iter().next().unwrap_or(Summary { n_posts: 0, oldest_us: None, newest_us: None }))
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

    /// How much of `plan.engagement` each of `plan.uris` got; a post that got none is absent.
    pub fn engagement(&self, plan: &EngagementPlan) -> Result<HashMap<String, u64>> {
        if plan.uris.is_empty() {
            return Ok(HashMap::new());
        }
        let asked: std::collections::HashSet<&str> = plan.uris.iter().map(String::as_str).collect();
        let rows = self.run(&Plan::Engagement(plan.clone()), |row| Ok((row.get::<_, String>(0)?, count(row, 1)?)))?;
        Ok(rows.into_iter().filter(|(uri, _)| asked.contains(uri.as_str())).collect())
    }

    /// How much of each of `engagements` the live posts of each of `dids` got, in all, in one
    /// statement; an author whose posts got none of one is absent for it.
    pub fn received(&self, engagements: &[Engagement], dids: &[String]) -> Result<HashMap<(String, Engagement), u64>> {
        if dids.is_empty() || engagements.is_empty() {
            return Ok(HashMap::new());
        }
        let plan = Plan::Received(engagements.to_vec(), dids.to_vec());
        let rows = self.run(&plan, |row| {
            let what: String = row.get(1)?;
            let engagement = Engagement::of_str(&what)
                .ok_or_else(|| Error::Corrupt(format!("a statement counted `{what}`, no engagement")))?;
            Ok(((row.get(0)?, engagement), count(row, 2)?))
        })?;
        Ok(rows.into_iter().collect())
    }

    /// A page of posts ranked by engagement, each with its count, most first.
    ///
    /// Likes and reposts (with rollups) are ranked first among the posts the rollups' largest
    /// rows can give the most ([`Self::ranked_among_heads`]), then among those with a large
    /// row in some rollup ([`Self::ranked_among_candidates`]); a page neither answers for
    /// certain is ranked again over the whole window.
    pub fn ranked_posts(&self, plan: &RankedPostsPlan) -> Result<Vec<(Post, u64)>> {
        let counted = plan.engagement.interaction_kind().is_some() && plan.candidates.is_none();
        if counted && self.use_rollups && plan.filter.uris.is_empty() {
            for (ranked, among) in [
                (Ranked::LargestRows, Self::ranked_among_heads as fn(&Self, &RankedPostsPlan) -> _),
                (Ranked::Candidates, Self::ranked_among_candidates),
            ] {
                if let Some(page) = among(self, plan)? {
                    self.rankings[ranked as usize].fetch_add(1, Ordering::Relaxed);
                    return Ok(page);
                }
            }
        }
        if counted {
            self.rankings[Ranked::Window as usize].fetch_add(1, Ordering::Relaxed);
        }
        let columns: Vec<PostColumn> = plan.columns.iter().copied().collect();
        let n = columns.len();
        self.run(&Plan::RankedPosts(plan.clone()), |row| {
            let mut post = Post::default();
            for (index, column) in columns.iter().enumerate() {
                set_column(&mut post, *column, row.get::<_, Value>(index)?)?;
            }
            Ok((post, count(row, n)?))
        })
    }

    /// The page of `plan` among its candidates ([`RankedPostsPlan::candidates`]: four times the
    /// page, and a hundred), if they answer it for certain. Their posts are read a few at a
    /// time, in the ranking's order, with the filter: the page is the first of them that pass
    /// it, exact when it is full and its last count is above what any post left out can have.
    /// `None` for a filter few of them pass, a window with fewer posts liked than the page, or
    /// counts too even for a bound (a page deep in the ranking).
    fn ranked_among_candidates(&self, plan: &RankedPostsPlan) -> Result<Option<Vec<(Post, u64)>>> {
        let most = plan.limit.saturating_mul(4).saturating_add(100);
        let first = Plan::RankedPosts(RankedPostsPlan { candidates: Some(most), ..plan.clone() });
        let mut beyond = None;
        let candidates: Vec<(String, u64)> = self.run(&first, |row| {
            let (did, rkey): (String, String) = (row.get(0)?, row.get(1)?);
            beyond = Some(u64::try_from(int(&row.get::<_, Value>(3)?)).unwrap_or_default());
            Ok((crate::model::post_uri(&did, &rkey), count(row, 2)?))
        })?;
        self.page_among(plan, &candidates, beyond, "posts ranked among the most counted")
    }

    /// The page of `plan` among the posts the largest rows of the rollups of subjects can give
    /// the most (see [`heads`]), if they answer it for certain: their exact counts are read,
    /// then their posts as [`Self::page_among`] does. `None` for a window with a file whose
    /// rollup's largest rows are not known, a snapshot that moved between the two, or a page
    /// they do not answer.
    fn ranked_among_heads(&self, plan: &RankedPostsPlan) -> Result<Option<Vec<(Post, u64)>>> {
        let Some(kind) = plan.engagement.interaction_kind() else { return Ok(None) };
        let since_us = plan.filter.since_us.unwrap_or_default().saturating_sub(EngagementPlan::SKEW_MARGIN_US);
        let keys = crate::sql::compile_window_keys(&plan.filter)?;
        let range =
            self.run_sql(&keys, |row| Ok((row.get::<_, Option<String>>(0)?, row.get::<_, Option<String>>(1)?)))?;
        let Some((Some(lo), Some(hi))) = range.into_iter().next() else { return Ok(None) };
        let most = plan.limit as usize * 2 + 10;
        self.refresh_views(Refresh::IfMoved)?;
        let picked = self
            .read_synced(&self.undone, undone::UndoneInteractions::synced, undone::UndoneInteractions::sync)?
            .pick(crate::layout::date_of_micros(since_us), kind, (&lo, &hi), most);
        let Some((picked, generation)) = picked else { return Ok(None) };
        let counts = self.engagement(&EngagementPlan { engagement: plan.engagement, uris: picked.uris, since_us })?;
        if self.generation() != Some(generation) {
            return Ok(None);
        }
        let mut candidates: Vec<(String, u64)> = counts.into_iter().collect();
        candidates.sort_unstable_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        if let Some(after) = &plan.after {
            candidates.retain(|(uri, n)| *n < after.count || (*n == after.count && *uri > after.uri));
        }
        self.page_among(plan, &candidates, Some(picked.beyond), "posts ranked among the largest rows")
    }

    /// The first page of `plan` among `candidates` (in the ranking's order, with their exact
    /// counts), if it is exact: full, and its last count above `beyond`, the most any post that
    /// is not a candidate can have. Their posts are read a few dozen at a time, with the filter.
    fn page_among(
        &self,
        plan: &RankedPostsPlan,
        candidates: &[(String, u64)],
        beyond: Option<u64>,
        what: &'static str,
    ) -> Result<Option<Vec<(Post, u64)>>> {
        let Some(beyond) = beyond else { return Ok(None) };
        let limit = plan.limit as usize;
        let mut page = Vec::with_capacity(limit);
        for chunk in candidates.chunks(limit * 2 + 10) {
            let filter = PostFilter { uris: chunk.iter().map(|(uri, _)| uri.clone()).collect(), ..plan.filter.clone() };
            let found =
                self.posts(&PostsPlan::new(filter, PostOrder::Newest, chunk.len() as u32, plan.columns.clone()))?;
            let mut found: HashMap<String, Post> = found.into_iter().map(|post| (post.uri.clone(), post)).collect();
            page.extend(
                chunk.iter().filter_map(|(uri, n)| found.remove(uri).map(|post| (post, *n))).take(limit - page.len()),
            );
            if page.len() == limit {
                break;
            }
        }
        let exact = page.len() == limit && page.last().is_some_and(|(_, n)| *n > beyond);
        tracing::debug!(candidates = candidates.len(), beyond, exact, "{what}");
        Ok(exact.then_some(page))
    }

    /// The catalog generation of the snapshot the views read, if they read one.
    fn generation(&self) -> Option<catalog::Generation> {
        self.snapshot.lock().unwrap_or_else(|p| p.into_inner()).as_ref().map(|s| s.state.generation)
    }

    /// The items rising most in `plan.window` against `plan.baseline`, best first.
    pub fn trending(&self, plan: &TrendPlan) -> Result<Vec<Trend>> {
        self.run(&Plan::Trending(plan.clone()), |row| {
            Ok(Trend {
                item: row.get(0)?,
                posts: count(row, 1)?,
                baseline_posts: count(row, 2)?,
                expected: row.get(3)?,
                ratio: row.get(4)?,
                z_score: row.get(5)?,
            })
        })
    }

    /// Authors with the most matching posts, most first (ties by DID).
    pub fn top_authors(&self, plan: &TopPlan) -> Result<Vec<(String, u64)>> {
        self.run(&Plan::TopAuthors(plan.clone()), |row| Ok((row.get(0)?, count(row, 1)?)))
    }

    /// Hashtags on the most matching posts, most first (ties by tag).
    pub fn top_hashtags(&self, plan: &TopPlan) -> Result<Vec<HashtagCount>> {
        self.run(&Plan::TopHashtags(plan.clone()), |row| {
            Ok(HashtagCount { tag: row.get(0)?, posts: count(row, 1)?, authors: count(row, 2)? })
        })
    }

    /// Each author's (of `plan.filter.authors`) most used hashtags, by author; `authors` is 1.
    pub fn top_hashtags_per_author(&self, plan: &TopPlan) -> Result<Vec<(String, HashtagCount)>> {
        if plan.filter.authors.is_empty() {
            return Ok(Vec::new());
        }
        self.run(&Plan::TopHashtagsPerAuthor(plan.clone()), |row| {
            Ok((row.get(0)?, HashtagCount { tag: row.get(1)?, posts: count(row, 2)?, authors: 1 }))
        })
    }

    /// Posts, authors and replies per bucket of `interval` in `zone`: every bucket from
    /// `filter.since` (or the first post) to `filter.until` (or the last post), empty ones
    /// with zeros, ordered by start; with a dimension, one row per bucket and group (every
    /// group seen anywhere in the range), groups ordered by name with the null group last.
    pub fn time_buckets(
        &self,
        filter: &PostFilter,
        interval: Interval,
        zone: chrono_tz::Tz,
        group_by: Option<Dimension>,
        measures: Measures,
    ) -> Result<Vec<Bucket>> {
        let Some((rows, offsets)) = self.counted_buckets(filter, interval, zone, group_by, measures)? else {
            return Ok(Vec::new());
        };
        zero_filled(rows, filter, interval, zone, &offsets)
    }

    /// [`Engine::time_buckets`] for each author of `filter.authors` (as if asked one by one),
    /// in one statement. Authors without matching posts get no buckets.
    pub fn time_buckets_per_author(
        &self,
        filter: &PostFilter,
        interval: Interval,
        zone: chrono_tz::Tz,
        measures: Measures,
    ) -> Result<HashMap<String, Vec<Bucket>>> {
        let Some((rows, offsets)) = self.counted_buckets(filter, interval, zone, Some(Dimension::Author), measures)?
        else {
            return Ok(HashMap::new());
        };
        let mut by_author: HashMap<String, Vec<Bucket>> = HashMap::new();
        for mut bucket in rows {
            let Some(did) = bucket.group.take() else { continue };
            by_author.entry(did).or_default().push(bucket);
        }
        by_author
            .into_iter()
            .map(|(did, rows)| Ok((did, zero_filled(rows, filter, interval, zone, &offsets)?)))
            .collect()
    }

    /// The non-empty buckets (ordered by start), and the zone offsets they were computed with;
    /// `None` for an empty range.
    fn counted_buckets(
        &self,
        filter: &PostFilter,
        interval: Interval,
        zone: chrono_tz::Tz,
        group_by: Option<Dimension>,
        measures: Measures,
    ) -> Result<Option<(Vec<Bucket>, zone::Offsets)>> {
        if let (Some(since), Some(until)) = (filter.since_us, filter.until_us)
            && since >= until
        {
            return Ok(None);
        }
        // Offsets must cover every clock value bucketed: the filter's range, else every day
        // that holds posts (with margin for indexed_at, which is near created_at).
        let partitions = self.post_partitions()?;
        let day_us = |day: chrono::NaiveDate| day.and_time(chrono::NaiveTime::MIN).and_utc().timestamp_micros();
        let lake_from = partitions.iter().min().map_or(0, |d| day_us(*d)) - 2 * MICROS_PER_DAY;
        let lake_to = partitions.iter().max().map_or(0, |d| day_us(*d)).max(chrono::Utc::now().timestamp_micros())
            + 2 * MICROS_PER_DAY;
        // The first bucket starts before `since` (up to a month): its offset is needed too.
        let offsets_from = filter.since_us.map_or(lake_from, |since| since.saturating_sub(32 * MICROS_PER_DAY));
        let offsets_to = filter.until_us.unwrap_or(lake_to).max(offsets_from);
        let offsets = zone::offsets(zone, offsets_from, offsets_to);
        let plan = BucketsPlan { filter: filter.clone(), interval, zone, offsets: offsets.clone(), group_by, measures };
        let calendar = interval.is_calendar();
        let rows = self.run(&Plan::Buckets(plan), |row| {
            let start = timestamp_micros(&row.get::<_, Value>(0)?)
                .ok_or_else(|| Error::Corrupt("a bucket without a start".into()))?;
            let start_us = if calendar {
                let local = chrono::DateTime::from_timestamp_micros(start).unwrap_or_default().naive_utc();
                zone::local_to_utc(zone, local)
            } else {
                start
            };
            Ok(Bucket {
                start_us,
                group: text(row.get::<_, Value>(1)?),
                posts: count(row, 2)?,
                authors: count(row, 3)?,
                replies: count(row, 4)?,
            })
        })?;
        Ok(Some((rows, offsets)))
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

/// `plan` narrowed to the one day partition of `partitions` its page starts in, when there
/// are others (see [`Engine::posts`]).
fn first_day_of(plan: &PostsPlan, partitions: &[chrono::NaiveDate]) -> Option<PostsPlan> {
    if plan.filter.clock != Clock::CreatedAt || plan.limit == 0 || partitions.len() < 2 {
        return None;
    }
    let day_start = |day: chrono::NaiveDate| day.and_time(chrono::NaiveTime::MIN).and_utc().timestamp_micros();
    let filter = &plan.filter;
    let mut narrowed = plan.clone();
    match plan.order {
        PostOrder::Newest => {
            let mut latest = filter.until_us.map(|until| layout::date_of_micros(until.saturating_sub(1)));
            if let Some(after) = &plan.after {
                let day = layout::date_of_micros(after.created_at_us);
                latest = Some(latest.map_or(day, |d| d.min(day)));
            }
            let day = partitions.iter().copied().filter(|d| latest.is_none_or(|l| *d <= l)).max()?;
            if filter.since_us.is_some_and(|since| since >= day_start(day)) {
                return None;
            }
            narrowed.filter.since_us = Some(day_start(day));
        }
        PostOrder::Oldest => {
            let mut earliest = filter.since_us.map(layout::date_of_micros);
            if let Some(after) = &plan.after {
                let day = layout::date_of_micros(after.created_at_us);
                earliest = Some(earliest.map_or(day, |d| d.max(day)));
            }
            let day = partitions.iter().copied().filter(|d| earliest.is_none_or(|e| *d >= e)).min()?;
            let end = day_start(day) + MICROS_PER_DAY;
            if filter.until_us.is_some_and(|until| until <= end) {
                return None;
            }
            narrowed.filter.until_us = Some(end);
        }
    }
    Some(narrowed)
}

/// Every bucket of the range (the filter's, else from the first to the last counted bucket),
/// times every group seen, with zeros where nothing was counted.
fn zero_filled(
    rows: Vec<Bucket>,
    filter: &PostFilter,
    interval: Interval,
    zone: chrono_tz::Tz,
    offsets: &zone::Offsets,
) -> Result<Vec<Bucket>> {
    let from = filter.since_us.or_else(|| rows.first().map(|b| b.start_us));
    let to = filter.until_us.or_else(|| rows.last().map(|b| b.start_us + 1));
    let (Some(from), Some(to)) = (from, to) else { return Ok(Vec::new()) };
    // The last bucket may start before `since` (a month holding it): it still ends the range.
    let to = to.max(from.saturating_add(1));
    let starts = zone::bucket_starts(interval, zone, offsets, from, to, MAX_BUCKET_ROWS)?;
    let mut groups: Vec<Option<String>> = rows.iter().map(|b| b.group.clone()).collect();
    // Named groups first, by name; the null group last.
    groups.sort_by(|a, b| match (a, b) {
        (None, None) => std::cmp::Ordering::Equal,
        (None, Some(_)) => std::cmp::Ordering::Greater,
        (Some(_), None) => std::cmp::Ordering::Less,
        (Some(a), Some(b)) => a.cmp(b),
    });
    groups.dedup();
    if groups.is_empty() {
        groups.push(None);
    }
    if starts.len().saturating_mul(groups.len()) > MAX_BUCKET_ROWS {
        return Err(Error::InvalidArgument(format!(
            "{} buckets times {} groups is more than {MAX_BUCKET_ROWS} rows; narrow the filter or the range",
            starts.len(),
            groups.len()
        )));
    }
    let mut counted: HashMap<(i64, Option<String>), Bucket> =
        rows.into_iter().map(|b| ((b.start_us, b.group.clone()), b)).collect();
    let mut out = Vec::with_capacity(starts.len() * groups.len());
    for start_us in starts {
        for group in &groups {
            let bucket = counted.remove(&(start_us, group.clone())).unwrap_or(Bucket {
                start_us,
                group: group.clone(),
                posts: 0,
                authors: 0,
                replies: 0,
            });
            out.push(bucket);
        }
    }
    if !counted.is_empty() {
        // A counted bucket outside the listed range would be a bug; never drop its posts.
        tracing::error!(buckets = counted.len(), "time buckets outside the computed range");
        out.extend(counted.into_values());
        out.sort_by_key(|b| b.start_us);
    }
    Ok(out)
}

/// Whether DuckDB failed because a file it listed was gone when it came to read it.
/// Whether `plan` counts likes or reposts (from `interaction_counts`).
fn counts_interactions(plan: &Plan) -> bool {
    let engagement = match plan {
        Plan::Engagement(plan) => plan.engagement,
        Plan::Received(engagements, _) => return engagements.iter().any(|e| e.interaction_kind().is_some()),
        Plan::RankedPosts(plan) => plan.engagement,
        _ => return false,
    };
    engagement.interaction_kind().is_some()
}

pub(crate) fn lost_a_file(error: &duckdb::Error) -> bool {
    let message = error.to_string();
    message.contains("No such file or directory") || message.contains("No files found")
}

fn run_statement<T>(
    connection: &Connection,
    sql: &Sql,
    mut read: impl FnMut(&duckdb::Row<'_>) -> Result<T>,
) -> Result<Vec<T>> {
    let mut statement = connection.prepare(&sql.text)?;
    let mut rows = statement.query(params_from_iter(bind(sql)))?;
    let mut out = Vec::new();
    while let Some(row) = rows.next()? {
        out.push(read(row)?);
    }
    Ok(out)
}

thread_local! {
    static CURRENT_INTERRUPT: std::cell::RefCell<Option<Interrupt>> = const { std::cell::RefCell::new(None) };
}

/// Runs `work` (engine calls on this thread) so that `interrupt` can stop its DuckDB
/// statements from another thread: a running statement fails at once with
/// [`Error::Interrupted`], and so does every later one.
pub fn with_interrupt<T>(interrupt: &Interrupt, work: impl FnOnce() -> T) -> T {
    let previous = CURRENT_INTERRUPT.with(|current| current.replace(Some(interrupt.clone())));
    let result = work();
    CURRENT_INTERRUPT.with(|current| current.replace(previous));
    result
}

/// Stops the DuckDB statements of one unit of work (see [`with_interrupt`]).
#[derive(Clone, Default)]
pub struct Interrupt(Arc<Mutex<InterruptState>>);

#[derive(Default)]
struct InterruptState {
    interrupted: bool,
    running: Option<Arc<duckdb::InterruptHandle>>,
}

impl Interrupt {
    pub fn new() -> Interrupt {
        Interrupt::default()
    }

    /// Stops the running statement, if any, and every later one.
    pub fn interrupt(&self) {
        let mut state = self.0.lock().unwrap_or_else(|p| p.into_inner());
        state.interrupted = true;
        if let Some(handle) = &state.running {
            handle.interrupt();
        }
    }

    fn register(&self, handle: Arc<duckdb::InterruptHandle>) -> Result<()> {
        let mut state = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if state.interrupted {
            return Err(Error::Interrupted);
        }
        state.running = Some(handle);
        Ok(())
    }

    /// Forgets the finished statement; whether the work was interrupted.
    fn unregister(&self) -> bool {
        let mut state = self.0.lock().unwrap_or_else(|p| p.into_inner());
        state.running = None;
        state.interrupted
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

fn bind(sql: &Sql) -> Vec<Value> {
    sql.params
        .iter()
        .map(|param| match param {
            Param::Text(text) => Value::Text(text.clone()),
            Param::Int(n) => Value::BigInt(*n),
            Param::Timestamp(micros) => Value::Timestamp(TimeUnit::Microsecond, *micros),
            Param::Date(day) => {
                let epoch = chrono::NaiveDate::from_ymd_opt(1970, 1, 1).expect("valid date");
                Value::Date32(i32::try_from((*day - epoch).num_days()).unwrap_or(i32::MAX))
            }
        })
        .collect()
}

/// A statement whose rows are `(did, n_posts)` of `counts`, in order: an answer computed outside
/// DuckDB read as the statement that computes it there would be.
fn rows_of(counts: &[(String, u64)]) -> Sql {
    if counts.is_empty() {
        return Sql {
            text: "SELECT NULL::VARCHAR AS did, 0::BIGINT AS n_posts WHERE false".into(),
            params: Vec::new(),
        };
    }
    let rows = vec!["(?, ?::BIGINT, ?)"; counts.len()].join(", ");
    let mut params = Vec::with_capacity(counts.len() * 3);
    for (position, (did, n)) in counts.iter().enumerate() {
        params.push(Param::Text(did.clone()));
        params.push(Param::Int(i64::try_from(*n).unwrap_or(i64::MAX)));
        params.push(Param::Int(position as i64));
    }
    Sql { text: format!("SELECT did, n_posts FROM (VALUES {rows}) AS t(did, n_posts, i) ORDER BY i"), params }
}

fn count(row: &duckdb::Row<'_>, index: usize) -> Result<u64> {
    Ok(u64::try_from(int(&row.get::<_, Value>(index)?)).unwrap_or(0))
}

fn timestamp_micros(value: &Value) -> Option<i64> {
    match value {
        Value::Timestamp(unit, v) => Some(match unit {
            TimeUnit::Second => v.saturating_mul(1_000_000),
            TimeUnit::Millisecond => v.saturating_mul(1_000),
            TimeUnit::Microsecond => *v,
            TimeUnit::Nanosecond => v / 1_000,
        }),
        _ => None,
    }
}

fn text(value: Value) -> Option<String> {
    match value {
        Value::Text(s) | Value::Enum(s) => Some(s),
        _ => None,
    }
}

fn int(value: &Value) -> i64 {
    match value {
        Value::TinyInt(v) => i64::from(*v),
        Value::SmallInt(v) => i64::from(*v),
        Value::Int(v) => i64::from(*v),
        Value::BigInt(v) => *v,
        Value::HugeInt(v) => i64::try_from(*v).unwrap_or(i64::MAX),
        Value::UBigInt(v) => i64::try_from(*v).unwrap_or(i64::MAX),
        Value::UTinyInt(v) => i64::from(*v),
        Value::USmallInt(v) => i64::from(*v),
        Value::UInt(v) => i64::from(*v),
        _ => 0,
    }
}

fn text_list(value: Value) -> Vec<String> {
    match value {
        Value::List(items) | Value::Array(items) => items.into_iter().filter_map(text).collect(),
        _ => Vec::new(),
    }
}

pub(crate) fn set_column(post: &mut Post, column: PostColumn, value: Value) -> Result<()> {
    let to_i32 = |v: &Value| i32::try_from(int(v)).unwrap_or(i32::MAX);
    match column {
        PostColumn::Uri => post.uri = text(value).unwrap_or_default(),
        PostColumn::Cid => post.cid = text(value).unwrap_or_default(),
        PostColumn::Did => post.did = text(value).unwrap_or_default(),
        PostColumn::Rkey => post.rkey = text(value).unwrap_or_default(),
        PostColumn::CreatedAt => post.created_at_us = timestamp_micros(&value).unwrap_or_default(),
        PostColumn::IndexedAt => post.indexed_at_us = timestamp_micros(&value).unwrap_or_default(),
        PostColumn::CreatedAtClamped => post.created_at_clamped = matches!(value, Value::Boolean(true)),
        PostColumn::Text => post.text = text(value).unwrap_or_default(),
        PostColumn::Langs => post.langs = text_list(value),
        PostColumn::DetectedLang => post.detected_lang = text(value),
        PostColumn::ReplyRoot => post.reply_root = text(value),
        PostColumn::ReplyParent => post.reply_parent = text(value),
        PostColumn::QuoteUri => post.quote_uri = text(value),
        PostColumn::EmbedType => {
            let name = text(value).unwrap_or_default();
            post.embed_type =
                EmbedType::parse(&name).ok_or_else(|| Error::Corrupt(format!("unknown embed type `{name}`")))?;
        }
        PostColumn::ImageCount => post.image_count = to_i32(&value),
        PostColumn::ExternalUri => post.external_uri = text(value),
        PostColumn::Hashtags => post.hashtags = text_list(value),
        PostColumn::Mentions => post.mentions = text_list(value),
        PostColumn::Links => post.links = text_list(value),
        PostColumn::Labels => post.labels = text_list(value),
        PostColumn::TextLen => post.text_len = to_i32(&value),
        PostColumn::EnrichVersion => post.enrich_version = to_i32(&value),
    }
    Ok(())
}

#[cfg(test)]
mod analytics_tests;
mod author_counts;
mod heads;
mod key_ranges;
#[cfg(test)]
mod rollup_tests;
mod rollups;
#[cfg(test)]
mod tests;
mod undone;
