//! Runs compiled statements on DuckDB over the lake's Parquet files and turns rows into model
//! types. DuckDB connections are not `Sync`: each call clones a connection from the engine's
//! base one; async callers run these functions inside `spawn_blocking`.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use duckdb::types::{TimeUnit, Value};
use duckdb::{Config, Connection, params_from_iter};

use crate::catalog::{self, Generation};
use crate::error::{Error, Result};
use crate::layout;
use crate::model::{EmbedType, Post, PostColumn};
use crate::plan::{Plan, PostFilter, PostsPlan};
use crate::sql::{Param, Sql, compile};

/// How the engine runs DuckDB.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// DuckDB worker threads per query.
    pub threads: usize,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig { threads: std::thread::available_parallelism().map_or(2, |n| n.get()) }
    }
}

/// A DuckDB database (in memory) whose views read the lake's Parquet files:
/// `post_files` and `deletes` (one per table), and `posts`, the live posts: every post in the
/// files that was not deleted. Compiled statements read `posts`.
pub struct Engine {
    lake: PathBuf,
    base: Mutex<Connection>,
    tables: [TableView; 2],
}

/// One table's view. DuckDB fails on a glob that matches nothing, so a table with no files yet
/// gets an empty typed view until its first file appears.
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

/// Live posts: a deleted post disappears from every answer.
const LIVE_POSTS_VIEW: &str = "CREATE OR REPLACE VIEW posts AS
SELECT p.* FROM post_files AS p WHERE NOT EXISTS (SELECT 1 FROM deletes AS d WHERE d.uri = p.uri)";

impl TableView {
    fn new(table: &'static str, view: &'static str, empty_columns: &'static str) -> TableView {
        TableView { table, view, empty_columns, reads_files: AtomicBool::new(false) }
    }

    fn empty_sql(&self) -> String {
        format!("CREATE OR REPLACE VIEW {} AS SELECT {} WHERE false", self.view, self.empty_columns)
    }

    fn files_sql(&self, lake: &Path) -> String {
        let glob = layout::table_glob(lake, self.table).replace('\'', "''");
        format!(
            "CREATE OR REPLACE VIEW {} AS SELECT * FROM read_parquet('{glob}', \
             hive_partitioning = true, hive_types = {{'date': DATE}}, union_by_name = true)",
            self.view
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
        let tables = [
            TableView::new(layout::POSTS_TABLE, "post_files", POST_COLUMNS_EMPTY),
            TableView::new(layout::DELETES_TABLE, "deletes", DELETE_COLUMNS_EMPTY),
        ];
        for table in &tables {
            connection.execute_batch(&table.empty_sql())?;
        }
        connection.execute_batch(LIVE_POSTS_VIEW)?;
        let engine = Engine { lake: lake.to_path_buf(), base: Mutex::new(connection), tables };
        engine.refresh_views()?;
        Ok(engine)
    }

    /// Points each table's view at its Parquet files once the first one exists.
    fn refresh_views(&self) -> Result<()> {
        for table in &self.tables {
            if table.reads_files.load(Ordering::Acquire) {
                continue;
            }
            if catalog::table_files(&self.lake, table.table)?.files == 0 {
                continue;
            }
            let base = self.base.lock().unwrap_or_else(|p| p.into_inner());
            base.execute_batch(&table.files_sql(&self.lake))?;
            table.reads_files.store(true, Ordering::Release);
        }
        Ok(())
    }

    fn connection(&self) -> Result<Connection> {
        self.refresh_views()?;
        Ok(self.base.lock().unwrap_or_else(|p| p.into_inner()).try_clone()?)
    }

    /// Runs a posts plan; each returned post has the plan's columns filled, the others default.
    pub fn posts(&self, plan: &PostsPlan) -> Result<Vec<Post>> {
        let sql = compile(&Plan::Posts(plan.clone()));
        let connection = self.connection()?;
        let mut statement = connection.prepare(&sql.text)?;
        let columns: Vec<PostColumn> = plan.columns.iter().copied().collect();
        let mut rows = statement.query(params_from_iter(bind(&sql)))?;
        let mut posts = Vec::new();
        while let Some(row) = rows.next()? {
            let mut post = Post::default();
            for (index, column) in columns.iter().enumerate() {
                set_column(&mut post, *column, row.get::<_, Value>(index)?)?;
            }
            posts.push(post);
        }
        Ok(posts)
    }

    /// Counts distinct posts matching `filter`, with their oldest and newest `created_at`.
    pub fn summary(&self, filter: &PostFilter) -> Result<Summary> {
        let sql = compile(&Plan::Summary(filter.clone()));
        let connection = self.connection()?;
        let mut statement = connection.prepare(&sql.text)?;
        let summary = statement.query_row(params_from_iter(bind(&sql)), |row| {
            Ok((row.get::<_, i64>(0)?, row.get::<_, Value>(1)?, row.get::<_, Value>(2)?))
        })?;
        Ok(Summary {
            n_posts: u64::try_from(summary.0).unwrap_or(0),
            oldest_us: timestamp_micros(&summary.1),
            newest_us: timestamp_micros(&summary.2),
        })
    }

    /// The lake's size and state: files from a directory walk, posts from DuckDB.
    pub fn stats(&self) -> Result<LakeStats> {
        let files = catalog::table_files(&self.lake, layout::POSTS_TABLE)?;
        let state = catalog::read_state(&self.lake)?;
        let summary = self.summary(&PostFilter::default())?;
        Ok(LakeStats {
            posts: summary.n_posts,
            files: files.files,
            partitions: files.partitions.len() as u64,
            bytes: files.bytes,
            oldest_post_us: summary.oldest_us,
            newest_post_us: summary.newest_us,
            generation: state.generation,
            last_flush_at_us: state.last_flush_at_us,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    pub n_posts: u64,
    pub oldest_us: Option<i64>,
    pub newest_us: Option<i64>,
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

fn set_column(post: &mut Post, column: PostColumn, value: Value) -> Result<()> {
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
mod tests;
