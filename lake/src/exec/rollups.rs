//! The engine's side of rollups ([`crate::rollup`]): in-memory tables of the cells and tag
//! counts of the snapshot's rolled-up files, and of the rows of its files that are not live,
//! kept up to date file by file as the snapshot moves, when a rollup statement first needs them
//! (or [`super::Engine::prepare_rollups`] asks).
//!
//! - `rollup_cells`, `rollup_tags` and `rollup_domains` hold the rollups of every data file of
//!   the partitions whose files all have them, keyed by the rollup's path: a file new to the
//!   snapshot is loaded, one gone (or replaced under its name, as re-enrichment does) is
//!   dropped.
//! - `dead_rows` holds the rows of the files that a delete or a hidden account takes out, keyed
//!   by data file: a new file is checked against every delete and hidden account, a new
//!   deletes file and a newly hidden account against the files already checked, and an account
//!   shown again leaves.
//! - `rollup_cells_live`, `rollup_tags_live` and `rollup_domains_live`, what rollup statements
//!   read: the cells, tag and domain counts of all files summed, less those of the dead rows
//!   (each counted once), made again after each change (a table of at most a few cells per hour
//!   and value, not per file); and `rollup_tags_daily_live`, the tag counts per day, which top
//!   hashtags read for whole days.
//! - `dead_tag_authors`: the dead rows per day, hashtag and author, which the count of a tag's
//!   distinct authors takes from the rollups of tag authors (read where they lie by
//!   `tag_authors`), made again with the others.
//! - Posts per author and day ([`AuthorCounts`]), in memory: a day's change, by differences,
//!   when one of its files or their dead rows did (`stale_days`).
//!
//! Statements read the tables under the engine's read lock; a refresh of the snapshot takes it
//! for writing, so no statement ever sees the tables of one snapshot with the views of another.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::NaiveDate;
use duckdb::Connection;
use duckdb::types::Value;

use super::author_counts::AuthorCounts;
use crate::error::Result;
use crate::rollup::{self, Kind};

/// The day partition a data file is in.
pub(super) fn partition_day(path: &Path) -> Option<NaiveDate> {
    path.parent().and_then(|d| d.file_name()).and_then(|n| n.to_str()).and_then(crate::layout::parse_partition_name)
}

/// A file's inode (a file replaced under its name is another), if it exists.
pub(super) fn inode(path: &Path) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).map(|m| m.ino()).ok()
}

/// Each of `paths` with its inode (0 for one gone): a file replaced under its name is another.
pub(super) fn with_inodes(paths: &[PathBuf]) -> HashMap<PathBuf, u64> {
    paths.iter().map(|path| (path.clone(), inode(path).unwrap_or_default())).collect()
}

/// What a snapshot lists, as the rollup tables need it: taken whole at each refresh.
#[derive(Debug, Default)]
pub(super) struct Listing {
    /// Every `posts` data file, with its inode (a file replaced under its name is another).
    pub posts: HashMap<PathBuf, u64>,
    /// The data files of the partitions whose files all have rollups, with the inode of their
    /// cells rollup.
    pub rolled: HashMap<PathBuf, u64>,
    /// The days of the other partitions.
    pub unrolled: Vec<NaiveDate>,
    /// Every `deletes` file, with its inode.
    pub deletes: HashMap<PathBuf, u64>,
    /// The accounts whose posts are hidden.
    pub hidden: Arc<HashSet<String>>,
}

impl Listing {
    /// The listing of `posts` data files (by partition, then name), `deletes` files and
    /// hidden accounts.
    pub fn new(posts: &[PathBuf], deletes: &[PathBuf], hidden: Arc<HashSet<String>>) -> Listing {
        let day_of = |path: &PathBuf| partition_day(path);
        let mut listing = Listing { deletes: with_inodes(deletes), hidden, ..Listing::default() };
        for day in posts.chunk_by(|a, b| day_of(a) == day_of(b)) {
            let cells: Vec<Option<u64>> = day
                .iter()
                .map(|path| inode(&rollup::path_for(path, Kind::Cells)).filter(|_| rollup::has_rollups(path)))
                .collect();
            if cells.iter().all(Option::is_some) {
                listing.rolled.extend(day.iter().cloned().zip(cells.into_iter().flatten()));
            } else if let Some(date) = day_of(&day[0]) {
                listing.unrolled.push(date);
            }
            for path in day {
                listing.posts.insert(path.clone(), inode(path).unwrap_or_default());
            }
        }
        listing
    }
}

/// The tables rollup statements read, and what they hold.
#[derive(Debug, Default)]
pub(super) struct RollupTables {
    listing: Arc<Listing>,
    /// Whether the tables hold what `listing` lists.
    synced: bool,
    /// The rolled-up files (and cells inodes) whose rollups the tables hold.
    loaded: HashMap<PathBuf, u64>,
    /// The data files (and inodes) whose dead rows `dead_rows` holds, against `applied` and
    /// `hidden`.
    probed: HashMap<PathBuf, u64>,
    applied: HashMap<PathBuf, u64>,
    hidden: Arc<HashSet<String>>,
    authors: AuthorCounts,
    /// Days whose files or dead rows changed since their author counts were made.
    stale_days: BTreeSet<NaiveDate>,
    /// The row numbers of the deleted posts (not those of hidden accounts) of each data file,
    /// sorted: `dead_rows` as statements that narrow the files to some of their rows read it.
    deleted_rows: Arc<HashMap<PathBuf, Vec<u64>>>,
    /// The row numbers of every dead row (deleted, or a hidden account's) of each data file,
    /// sorted: what counts from the text indexes leave out.
    dead_row_numbers: Arc<HashMap<PathBuf, Vec<u64>>>,
}

/// Created with the engine.
pub(super) const CREATE_TABLES: &str = "
CREATE TABLE rollup_cells (file VARCHAR, created_at TIMESTAMP, \"date\" DATE, langs VARCHAR[], embed_type VARCHAR,
  reply_parent VARCHAR, n BIGINT);
CREATE TABLE rollup_tags (file VARCHAR, created_at TIMESTAMP, \"date\" DATE, tag VARCHAR, n BIGINT);
CREATE TABLE rollup_domains (file VARCHAR, created_at TIMESTAMP, \"date\" DATE, domain VARCHAR, n BIGINT);
CREATE TABLE dead_rows (file VARCHAR, rkey VARCHAR, did VARCHAR, deleted BOOLEAN, created_at TIMESTAMP,
  langs VARCHAR[], embed_type VARCHAR, reply_parent VARCHAR, hashtags VARCHAR[], file_row BIGINT,
  domains VARCHAR[]);
CREATE TABLE dead_tag_authors (\"date\" DATE, tag VARCHAR, did VARCHAR, n BIGINT);
CREATE TABLE rollup_cells_live AS SELECT * EXCLUDE (file) FROM rollup_cells WHERE false;
CREATE TABLE rollup_tags_live AS SELECT * EXCLUDE (file) FROM rollup_tags WHERE false;
CREATE TABLE rollup_tags_daily_live (\"date\" DATE, tag VARCHAR, n BIGINT);
CREATE TABLE rollup_domains_live AS SELECT * EXCLUDE (file) FROM rollup_domains WHERE false;";

/// `'a', 'b'` for a SQL list of paths (paths come from the lake's listing, never from a user).
pub(super) fn quoted<'a>(paths: impl IntoIterator<Item = &'a Path>) -> String {
    let list: Vec<String> =
        paths.into_iter().map(|p| format!("'{}'", p.to_string_lossy().replace('\'', "''"))).collect();
    list.join(", ")
}

/// The SQL list of the rollups `kind` of data files `files`.
fn sidecars(files: &[PathBuf], kind: Kind) -> String {
    let paths: Vec<PathBuf> = files.iter().map(|p| rollup::path_for(p, kind)).collect();
    quoted(paths.iter().map(PathBuf::as_path))
}

/// The columns of `dead_rows`, from data files read as `p` by [`files_source`].
fn dead_columns(deleted: bool) -> String {
    format!(
        "p.filename, p.rkey, p.did, {deleted}, p.created_at, p.langs, p.embed_type, p.reply_parent, p.hashtags, \
         p.file_row_number, {}",
        rollup::link_domains("p")
    )
}

fn files_source(files: &[&PathBuf]) -> String {
    format!(
        "read_parquet([{}], filename = true, file_row_number = true, union_by_name = true)",
        quoted(files.iter().map(|p| p.as_path()))
    )
}

fn did_list(dids: &[String]) -> Value {
    Value::List(dids.iter().map(|d| Value::Text(d.clone())).collect())
}

/// Characters of a record key that a run of deletes shares: a TID's first five name a span of
/// about 18 minutes.
const RKEY_SPAN: usize = 5;

/// Adds to `dead_rows` the rows of `files` that the deletes in `deletes` (new deletes files)
/// take out. A post's record key is a TID, a time close to its `created_at`, by which the files
/// are sorted: the deletes' keys, cut into runs that share a prefix, are ranges that the row
/// groups' statistics of `rkey` rule most of the files' row groups out of, so only the uris
/// of the rest are made. A key outside any range is never missed: statistics only skip row
/// groups that hold no key in range.
fn probe_deletes(connection: &Connection, files: &[&PathBuf], deletes: &[&Path]) -> Result<HashSet<String>> {
    let mut statement = connection.prepare(&format!(
        "SELECT DISTINCT uri, regexp_extract(uri, '[^/]*$') AS rkey FROM read_parquet([{}]) ORDER BY rkey",
        quoted(deletes.iter().copied())
    ))?;
    let deleted: Vec<(String, String)> =
        statement.query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?.collect::<duckdb::Result<_>>()?;
    if deleted.is_empty() {
        return Ok(HashSet::new());
    }
    let prefix = |rkey: &str| rkey.chars().take(RKEY_SPAN).collect::<String>();
    let mut ranges: Vec<(String, String)> = Vec::new();
    for (_, rkey) in &deleted {
        match ranges.last_mut() {
            Some((_, last)) if prefix(last) == prefix(rkey) => *last = rkey.clone(),
            _ => ranges.push((rkey.clone(), rkey.clone())),
        }
    }
    let mut params: Vec<Value> = Vec::new();
    let mut conditions = Vec::new();
    for (first, last) in ranges {
        conditions.push("p.rkey BETWEEN ? AND ?");
        params.push(Value::Text(first));
        params.push(Value::Text(last));
    }
    params.push(Value::List(deleted.into_iter().map(|(uri, _)| Value::Text(uri)).collect()));
    returned_files(
        connection,
        &format!(
            "INSERT INTO dead_rows SELECT {} FROM {} AS p WHERE ({}) AND {} IN (SELECT unnest(?::VARCHAR[])) \
             RETURNING file",
            dead_columns(true),
            files_source(files),
            conditions.join(" OR "),
            crate::model::post_uri_sql("p")
        ),
        duckdb::params_from_iter(params),
    )
}

/// Row numbers by data file.
type RowNumbers = HashMap<PathBuf, Vec<u64>>;

/// The row numbers of the rows in `dead_rows`, by file, sorted: of the deleted posts, and of
/// all (deleted or of hidden accounts).
fn dead_row_numbers(connection: &Connection) -> Result<(RowNumbers, RowNumbers)> {
    let mut statement = connection.prepare("SELECT file, file_row, deleted FROM dead_rows")?;
    let mut rows = statement.query([])?;
    let mut by_file = RowNumbers::new();
    let mut deleted_by_file = RowNumbers::new();
    while let Some(row) = rows.next()? {
        let file = row
            .get_ref(0)?
            .as_str()
            .map_err(|e| duckdb::Error::FromSqlConversionFailure(0, duckdb::types::Type::Text, Box::new(e)))?;
        let n = row.get::<_, i64>(1)?;
        let n = u64::try_from(n).map_err(|_| crate::error::Error::Corrupt(format!("{file}: row number {n}")))?;
        let push = |map: &mut RowNumbers| match map.get_mut(Path::new(file)) {
            Some(numbers) => numbers.push(n),
            None => {
                map.insert(PathBuf::from(file), vec![n]);
            }
        };
        push(&mut by_file);
        if row.get::<_, bool>(2)? {
            push(&mut deleted_by_file);
        }
    }
    for numbers in by_file.values_mut().chain(deleted_by_file.values_mut()) {
        numbers.sort_unstable();
        numbers.dedup();
    }
    Ok((deleted_by_file, by_file))
}

/// Runs `sql`, a statement `RETURNING file`, and gives the distinct files it returned.
fn returned_files(connection: &Connection, sql: &str, params: impl duckdb::Params) -> Result<HashSet<String>> {
    let mut statement = connection.prepare(sql)?;
    let files = statement.query_map(params, |row| row.get::<_, String>(0))?.collect::<duckdb::Result<_>>()?;
    Ok(files)
}

impl RollupTables {
    /// The snapshot moved to `listing`: the tables must catch up before the next statement.
    pub fn moved(&mut self, listing: Listing) {
        self.listing = Arc::new(listing);
        self.synced = false;
    }

    pub fn listing(&self) -> &Listing {
        &self.listing
    }

    pub fn synced(&self) -> bool {
        self.synced
    }

    pub fn authors(&self) -> &AuthorCounts {
        &self.authors
    }

    /// The row numbers of each listed data file's deleted posts, sorted; `None` until the
    /// tables hold what the listing lists.
    pub fn deleted_rows(&self) -> Option<Arc<HashMap<PathBuf, Vec<u64>>>> {
        self.synced.then(|| self.deleted_rows.clone())
    }

    /// The row numbers of every dead row (deleted, or a hidden account's) of each listed data
    /// file, sorted; `None` until the tables hold what the listing lists.
    pub fn dead_row_numbers(&self) -> Option<Arc<HashMap<PathBuf, Vec<u64>>>> {
        self.synced.then(|| self.dead_row_numbers.clone())
    }

    fn stale(&mut self, files: impl IntoIterator<Item = impl AsRef<Path>>) {
        self.stale_days.extend(files.into_iter().filter_map(|f| partition_day(f.as_ref())));
    }

    /// Brings the tables to the listing.
    pub fn sync(&mut self, connection: &Connection) -> Result<()> {
        if self.synced {
            return Ok(());
        }
        let started = std::time::Instant::now();
        let ms = |since: std::time::Instant| since.elapsed().as_millis() as u64;
        let listing = self.listing.clone();
        self.sync_rollups(connection, &listing)?;
        let rollups_ms = ms(started);
        let at = std::time::Instant::now();
        self.sync_dead(connection, &listing)?;
        let dead_ms = ms(at);
        let at = std::time::Instant::now();
        let (deleted, dead) = dead_row_numbers(connection)?;
        (self.deleted_rows, self.dead_row_numbers) = (Arc::new(deleted), Arc::new(dead));
        let deleted_rows_ms = ms(at);
        let at = std::time::Instant::now();
        Self::sum_live(connection)?;
        let live_ms = ms(at);
        let at = std::time::Instant::now();
        let days = self.stale_days.len();
        self.count_authors(connection, &listing)?;
        let authors_ms = ms(at);
        self.synced = true;
        tracing::debug!(
            elapsed_ms = ms(started),
            rollups_ms,
            dead_ms,
            deleted_rows_ms,
            live_ms,
            authors_ms,
            author_days = days,
            "rollup tables brought up to date"
        );
        Ok(())
    }

    fn sync_rollups(&mut self, connection: &Connection, listing: &Listing) -> Result<()> {
        let gone: Vec<PathBuf> = self
            .loaded
            .iter()
            .filter(|(path, ino)| listing.rolled.get(*path) != Some(ino))
            .map(|(p, _)| p.clone())
            .collect();
        self.stale(&gone);
        if !gone.is_empty() {
            connection.execute_batch(&format!(
                "DELETE FROM rollup_cells WHERE file IN ({}); DELETE FROM rollup_tags WHERE file IN ({});
                 DELETE FROM rollup_domains WHERE file IN ({});",
                sidecars(&gone, Kind::Cells),
                sidecars(&gone, Kind::Tags),
                sidecars(&gone, Kind::Domains)
            ))?;
        }
        let new: Vec<PathBuf> = listing
            .rolled
            .iter()
            .filter(|(path, ino)| self.loaded.get(*path) != Some(ino))
            .map(|(p, _)| p.clone())
            .collect();
        self.stale(&new);
        for chunk in new.chunks(256) {
            let [cells, tags, domains] = [Kind::Cells, Kind::Tags, Kind::Domains].map(|kind| sidecars(chunk, kind));
            // Whatever a sync cut short loaded of them goes first: a file is never counted twice.
            connection.execute_batch(&format!(
                "DELETE FROM rollup_cells WHERE file IN ({cells}); DELETE FROM rollup_tags WHERE file IN ({tags});
                 DELETE FROM rollup_domains WHERE file IN ({domains});
                 INSERT INTO rollup_cells SELECT filename, created_at, CAST(created_at AS DATE), langs, embed_type,
                   CASE WHEN is_reply THEN '' END, n FROM read_parquet([{cells}], filename = true);
                 INSERT INTO rollup_tags SELECT filename, created_at, CAST(created_at AS DATE), tag, n
                   FROM read_parquet([{tags}], filename = true);
                 INSERT INTO rollup_domains SELECT filename, created_at, CAST(created_at AS DATE), domain, n
                   FROM read_parquet([{domains}], filename = true);"
            ))?;
        }
        self.loaded = listing.rolled.clone();
        Ok(())
    }

    fn sync_dead(&mut self, connection: &Connection, listing: &Listing) -> Result<()> {
        if !self.applied.iter().all(|(path, ino)| listing.deletes.get(path) == Some(ino)) {
            // A deletes file went away (compaction retires old deletes) or was replaced under
            // its name: start over.
            connection.execute_batch("DELETE FROM dead_rows")?;
            self.stale(self.probed.keys().cloned().collect::<Vec<_>>());
            self.probed.clear();
            self.applied.clear();
            self.hidden = Arc::default();
        }
        let gone: Vec<PathBuf> = self
            .probed
            .iter()
            .filter(|(path, ino)| listing.posts.get(*path) != Some(ino))
            .map(|(p, _)| p.clone())
            .collect();
        if !gone.is_empty() {
            connection.execute_batch(&format!(
                "DELETE FROM dead_rows WHERE file IN ({})",
                quoted(gone.iter().map(|p| p.as_path()))
            ))?;
        }
        self.stale(&gone);
        let old: Vec<&PathBuf> =
            listing.posts.iter().filter(|(path, ino)| self.probed.get(*path) == Some(ino)).map(|(p, _)| p).collect();
        let added: Vec<&PathBuf> =
            listing.posts.iter().filter(|(path, ino)| self.probed.get(*path) != Some(ino)).map(|(p, _)| p).collect();
        let new_deletes: Vec<&Path> = listing
            .deletes
            .iter()
            .filter(|(d, ino)| self.applied.get(*d) != Some(ino))
            .map(|(d, _)| d.as_path())
            .collect();
        // Rows a statement below adds to or takes from `dead_rows` make their file's day stale:
        // those of new files by being new, those of old files as the statement returns them.
        // Marked at once: a sync cut short after a statement must not lose what it changed.
        let added_days: Vec<PathBuf> = added.iter().map(|p| (*p).clone()).collect();
        self.stale(&added_days);

        // Deletes: new ones against the files already checked, every one against new files.
        if !old.is_empty() && !new_deletes.is_empty() {
            let touched = probe_deletes(connection, &old, &new_deletes)?;
            self.stale(touched);
        }
        if !added.is_empty() && !listing.deletes.is_empty() {
            connection.execute_batch(&format!(
                "INSERT INTO dead_rows SELECT {} FROM {} AS p \
                 SEMI JOIN (SELECT did, {} AS rkey FROM read_parquet([{}])) AS d ON d.did = p.did AND d.rkey = p.rkey",
                dead_columns(true),
                files_source(&added),
                crate::model::DELETE_RKEY_SQL,
                quoted(listing.deletes.keys().map(PathBuf::as_path))
            ))?;
        }

        // Hidden accounts: those shown again leave, new ones are looked for in the files
        // already checked, every one in new files.
        let shown: Vec<String> = self.hidden.difference(&listing.hidden).cloned().collect();
        if !shown.is_empty() {
            let touched = returned_files(
                connection,
                "DELETE FROM dead_rows WHERE NOT deleted AND did IN (SELECT unnest(?::VARCHAR[])) RETURNING file",
                [did_list(&shown)],
            )?;
            self.stale(touched);
        }
        let newly: Vec<String> = listing.hidden.difference(&self.hidden).cloned().collect();
        let all_hidden: Vec<String> = listing.hidden.iter().cloned().collect();
        for (files, dids) in [(&old, &newly), (&added, &all_hidden)] {
            if files.is_empty() || dids.is_empty() {
                continue;
            }
            let touched = returned_files(
                connection,
                &format!(
                    "INSERT INTO dead_rows SELECT {} FROM {} AS p WHERE p.did IN (SELECT unnest(?::VARCHAR[])) \
                     RETURNING file",
                    dead_columns(false),
                    files_source(files)
                ),
                [did_list(dids)],
            )?;
            self.stale(touched);
        }
        self.probed = listing.posts.clone();
        self.applied = listing.deletes.clone();
        self.hidden = listing.hidden.clone();

        Ok(())
    }

    /// Brings the author counts of every stale day to its rolled-up files less their dead rows
    /// (each once); a day without a rolled-up partition has none.
    fn count_authors(&mut self, connection: &Connection, listing: &Listing) -> Result<()> {
        if self.stale_days.is_empty() {
            return Ok(());
        }
        let mut files_of: HashMap<NaiveDate, HashMap<PathBuf, u64>> = HashMap::new();
        for (path, ino) in &listing.rolled {
            if let Some(day) = partition_day(path) {
                files_of.entry(day).or_default().insert(path.clone(), *ino);
            }
        }
        // The stale days' dead rows per author, in one statement.
        let stale_files: Vec<&Path> = self
            .stale_days
            .iter()
            .filter_map(|day| files_of.get(day))
            .flat_map(|files| files.keys().map(PathBuf::as_path))
            .collect();
        let mut dead_of: HashMap<NaiveDate, Vec<(String, u64)>> = HashMap::new();
        if !stale_files.is_empty() {
            let mut statement = connection.prepare(&format!(
                "SELECT file, did, count(*) FROM (SELECT DISTINCT ON (file, did, rkey) file, did FROM dead_rows
                   WHERE file IN ({})) GROUP BY ALL",
                quoted(stale_files)
            ))?;
            let rows = statement
                .query_map([], |row| Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?, row.get::<_, i64>(2)?)))?;
            for row in rows {
                let (file, did, n) = row?;
                if let Some(day) = partition_day(Path::new(&file)) {
                    dead_of.entry(day).or_default().push((did, u64::try_from(n).unwrap_or(0)));
                }
            }
        }
        while let Some(day) = self.stale_days.pop_first() {
            let files = files_of.remove(&day).unwrap_or_default();
            let dead = dead_of.remove(&day).unwrap_or_default();
            if let Err(error) = self.authors.update_day(day, files, &dead) {
                self.stale_days.insert(day);
                return Err(error);
            }
        }
        Ok(())
    }

    /// Makes the `rollup_*_live` tables again: every file's counts summed, less
    /// each dead row once (one deleted and hidden both, or deleted twice, counts once).
    fn sum_live(connection: &Connection) -> Result<()> {
        connection.execute_batch(
            "CREATE OR REPLACE TEMP TABLE dead_once AS SELECT DISTINCT ON (file, did, rkey) * FROM dead_rows;
             CREATE OR REPLACE TABLE rollup_cells_live AS
               SELECT created_at, \"date\", langs, embed_type, reply_parent, sum(n)::BIGINT AS n FROM (
                 SELECT created_at, \"date\", langs, embed_type, reply_parent, n FROM rollup_cells
                 UNION ALL
                 SELECT date_trunc('hour', created_at), CAST(created_at AS DATE), langs, embed_type,
                   CASE WHEN reply_parent IS NOT NULL THEN '' END, -1 FROM dead_once)
               GROUP BY ALL HAVING sum(n) <> 0;
             CREATE OR REPLACE TABLE rollup_tags_live AS
               SELECT created_at, \"date\", tag, sum(n)::BIGINT AS n FROM (
                 SELECT created_at, \"date\", tag, n FROM rollup_tags
                 UNION ALL
                 SELECT date_trunc('hour', created_at), CAST(created_at AS DATE), unnest(list_distinct(hashtags)), -1
                 FROM dead_once)
               GROUP BY ALL HAVING sum(n) <> 0;
             CREATE OR REPLACE TABLE rollup_tags_daily_live AS
               SELECT \"date\", tag, sum(n)::BIGINT AS n FROM rollup_tags_live GROUP BY ALL HAVING sum(n) <> 0;
             CREATE OR REPLACE TABLE rollup_domains_live AS
               SELECT created_at, \"date\", domain, sum(n)::BIGINT AS n FROM (
                 SELECT created_at, \"date\", domain, n FROM rollup_domains
                 UNION ALL
                 SELECT date_trunc('hour', created_at), CAST(created_at AS DATE), unnest(domains), -1 FROM dead_once)
               GROUP BY ALL HAVING sum(n) <> 0;
             CREATE OR REPLACE TABLE dead_tag_authors AS
               SELECT CAST(created_at AS DATE) AS \"date\", tag, did, count(*)::BIGINT AS n
               FROM (SELECT created_at, did, unnest(list_distinct(hashtags)) AS tag FROM dead_once)
               GROUP BY ALL;
             DROP TABLE dead_once;",
        )?;
        Ok(())
    }
}
