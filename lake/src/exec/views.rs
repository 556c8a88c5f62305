//! The views statements read, over a snapshot of the lake's files: moving them to a new
//! generation (listing the files under the publish lock), the `posts` view and its relatives
//! (the files less deletes and hidden accounts, with the hot tier), and the hot tier itself.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use duckdb::Connection;

use super::*;

/// When [`Engine::refresh_views`] lists the files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Refresh {
    /// When the catalog's generation moved.
    IfMoved,
    /// Always.
    Relist,
}

/// The lake as the views read it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Snapshot {
    /// The catalog state listed with the files. Its `flushed_through_us`: hot posts up to it
    /// are in the listed files.
    pub(super) state: catalog::CatalogState,
    /// The `posts` files listed.
    pub(super) post_files: u64,
    pub(super) post_bytes: u64,
}

/// Replaces the hot tier's table `name` (of `columns`) by `rows` rows that `fill` appends, in
/// one step for the statements reading it; emptied (not dropped, a statement may have listed
/// it) when there are none and it `existed`.
pub(super) fn replace_hot_table(
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
pub(super) struct TableView {
    pub(super) table: &'static str,
    pub(super) view: &'static str,
    pub(super) empty_columns: &'static str,
    pub(super) reads_files: AtomicBool,
}

pub(super) const POST_COLUMNS_EMPTY: &str =
    "NULL::VARCHAR AS uri, NULL::VARCHAR AS cid, NULL::VARCHAR AS did, NULL::VARCHAR AS rkey,
  NULL::TIMESTAMP AS created_at, NULL::TIMESTAMP AS indexed_at, NULL::BOOLEAN AS created_at_clamped,
  NULL::VARCHAR AS text, NULL::VARCHAR[] AS langs, NULL::VARCHAR AS detected_lang,
  NULL::VARCHAR AS reply_root, NULL::VARCHAR AS reply_parent, NULL::VARCHAR AS quote_uri,
  NULL::VARCHAR AS embed_type, NULL::INTEGER AS image_count, NULL::VARCHAR AS external_uri,
  NULL::VARCHAR[] AS hashtags, NULL::VARCHAR[] AS mentions, NULL::VARCHAR[] AS links,
  NULL::VARCHAR[] AS labels, NULL::INTEGER AS text_len, NULL::INTEGER AS enrich_version,
  NULL::DATE AS \"date\"";

pub(super) const DELETE_COLUMNS_EMPTY: &str =
    "NULL::VARCHAR AS uri, NULL::VARCHAR AS did, NULL::TIMESTAMP AS deleted_at, NULL::DATE AS \"date\",
  NULL::VARCHAR AS rkey";

pub(super) const INTERACTION_COLUMNS_EMPTY: &str = "NULL::VARCHAR AS did, NULL::VARCHAR AS kind, NULL::VARCHAR AS rkey,
  NULL::VARCHAR AS subject_did, NULL::VARCHAR AS subject_rkey, NULL::TIMESTAMP AS created_at,
  NULL::TIMESTAMP AS indexed_at, NULL::DATE AS \"date\"";

pub(super) const INTERACTION_DELETE_COLUMNS_EMPTY: &str =
    "NULL::VARCHAR AS did, NULL::VARCHAR AS kind, NULL::VARCHAR AS rkey,
  NULL::TIMESTAMP AS deleted_at, NULL::DATE AS \"date\"";

pub(super) const ACCOUNT_COLUMNS_EMPTY: &str =
    "NULL::VARCHAR AS did, NULL::TIMESTAMP AS seen_at, NULL::VARCHAR AS handle,
  NULL::BOOLEAN AS active, NULL::VARCHAR AS status, NULL::DATE AS \"date\"";

/// Each DID's latest handle (from identity events) and activity (from account events), and the
/// accounts whose posts are hidden (deactivated, taken down, suspended or deleted; see
/// `lake::model::AccountEvent`). Small tables, rebuilt once per lake generation.
pub(super) const ACCOUNT_TABLES: &str = "CREATE OR REPLACE TABLE account_state AS
SELECT did,
  arg_max(handle, seen_at) FILTER (WHERE handle IS NOT NULL) AS handle,
  arg_max(active, seen_at) FILTER (WHERE active IS NOT NULL) AS active,
  arg_max(status, seen_at) FILTER (WHERE active IS NOT NULL) AS status
FROM account_files GROUP BY did;
CREATE OR REPLACE TABLE hidden_authors AS
SELECT did FROM account_state
WHERE active = false AND coalesce(status, '') NOT IN ('desynchronized', 'throttled');";

impl TableView {
    pub(super) fn new(table: &'static str, view: &'static str, empty_columns: &'static str) -> TableView {
        TableView { table, view, empty_columns, reads_files: AtomicBool::new(false) }
    }

    pub(super) fn empty_sql(&self) -> String {
        format!("CREATE OR REPLACE VIEW {} AS SELECT {} WHERE false", self.view, self.empty_columns)
    }

    pub(super) fn files_sql(&self, files: &[PathBuf]) -> String {
        if files.is_empty() {
            return self.empty_sql();
        }
        let list: Vec<String> =
            files.iter().map(|path| format!("'{}'", path.to_string_lossy().replace('\'', "''"))).collect();
        let read = format!(
            "read_parquet([{}], hive_partitioning = true, hive_types = {{'date': DATE}}, union_by_name = true)",
            list.join(", ")
        );
        // Posts get their uri made (it is not stored), deletes the record key of theirs (by
        // which, with the DID, they match posts).
        let select = match self.table {
            layout::POSTS_TABLE => crate::model::posts_with_uri_sql(&read),
            layout::DELETES_TABLE => format!("SELECT *, {} AS rkey FROM {read}", crate::model::DELETE_RKEY_SQL),
            _ => format!("SELECT * FROM {read}"),
        };
        format!("CREATE OR REPLACE VIEW {} AS {select}", self.view)
    }
}

impl Engine {
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
    pub(super) fn refresh_views(&self, refresh: Refresh) -> Result<()> {
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
    pub(super) fn move_views(&self, refresh: Refresh) -> Result<()> {
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
        // Before the connection, as rollup, counting and file-naming statements take them: none
        // runs while the views move.
        let _moving = self.moves.write().unwrap_or_else(|p| p.into_inner());
        let mut rollup_tables = self.rollups.write().unwrap_or_else(|p| p.into_inner());
        let mut undone = self.undone.write().unwrap_or_else(|p| p.into_inner());
        let base = self.base.lock().unwrap_or_else(|p| p.into_inner());
        for (table, files) in self.tables.iter().zip(&listed) {
            base.execute_batch(&table.files_sql(&files.paths))?;
            table.reads_files.store(!files.paths.is_empty(), Ordering::Release);
        }
        self.key_deletes(&base, &listed[DELETES].paths)?;
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
        let posts = &listed[POSTS];
        base.execute_batch(&keys::key_files_view_sql(&posts.paths))?;
        self.create_posts_view(&base)?;
        base.execute_batch(&undone::counts_view_sql(&listed[INTERACTIONS].paths))?;
        undone.moved(state.generation, &listed[INTERACTIONS].paths, &listed[INTERACTION_DELETES].paths, hidden.clone());
        let listing = rollups::Listing::new(&posts.paths, &listed[DELETES].paths, hidden);
        rollup_tables.moved(listing);
        *self.partitions.lock().unwrap_or_else(|p| p.into_inner()) = posts.partitions.clone();
        let listed_paths: std::collections::HashSet<&PathBuf> = posts.paths.iter().collect();
        self.text_indexes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|path, index| index.is_some() && listed_paths.contains(path));
        self.footers.keep(&listed_paths);
        self.tag_authors.keep(&listed_paths);
        *self.post_paths.lock().unwrap_or_else(|p| p.into_inner()) = Arc::new(posts.paths.clone());
        self.too_common.lock().unwrap_or_else(|p| p.into_inner()).clear();
        *snapshot = Some(Snapshot { state, post_files: posts.files, post_bytes: posts.bytes });
        Ok(())
    }

    /// Brings the `deleted_keys` table to the `deletes` files `deletes` (none: left as it is,
    /// unread): adds the keys of new files (a flush's deletes, a few thousand), or makes it
    /// again when a file went (1.8 million keys at a month of Bluesky, a few hundred ms). The
    /// same key may be in it twice (a replay writes a delete again): the anti-joins that read it
    /// do not mind.
    fn key_deletes(&self, base: &Connection, deletes: &[PathBuf]) -> Result<()> {
        if deletes.is_empty() {
            return Ok(());
        }
        let mut keyed = self.deleted_keys_of.lock().unwrap_or_else(|p| p.into_inner());
        let now = rollups::with_inodes(deletes);
        if *keyed == now {
            return Ok(());
        }
        let added: Vec<&Path> =
            now.iter().filter(|(path, ino)| keyed.get(*path) != Some(ino)).map(|(p, _)| p.as_path()).collect();
        let kept = keyed.iter().all(|(path, ino)| now.get(path) == Some(ino));
        if kept && !keyed.is_empty() {
            base.execute_batch(&format!(
                "INSERT INTO deleted_keys SELECT DISTINCT did, {} FROM read_parquet([{}])",
                crate::model::DELETE_RKEY_SQL,
                rollups::quoted(added)
            ))?;
        } else {
            base.execute_batch("CREATE OR REPLACE TABLE deleted_keys AS SELECT DISTINCT did, rkey FROM deletes")?;
        }
        *keyed = now;
        Ok(())
    }

    /// (Re)creates the `posts` view from what exists: the files, with the hot tier when it holds
    /// posts, less deletes and hidden accounts when there are any.
    /// `file_posts` is the same without the hot tier: what the files hold; `post_keys` the
    /// `did, rkey, uri` of `posts`, from the rollups of keys (see [`keys`]) when rollups are used.
    pub(super) fn create_posts_view(&self, base: &Connection) -> Result<()> {
        let files = self.less_file_deletes("SELECT * FROM post_files");
        let keys = match self.use_rollups {
            true => self.live_posts_sql(&self.less_file_deletes("SELECT * FROM post_key_files"), true),
            false => "SELECT * FROM posts".to_owned(),
        };
        base.execute_batch(&format!(
            "CREATE OR REPLACE VIEW posts AS {};
             CREATE OR REPLACE VIEW file_posts AS {};
             CREATE OR REPLACE VIEW hot_live AS {};
             CREATE OR REPLACE VIEW interactions AS {};
             CREATE OR REPLACE VIEW post_keys AS SELECT did, rkey, uri FROM ({keys});",
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
    pub(super) fn live_interactions_sql(&self) -> String {
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
    pub(super) fn less_file_deletes(&self, files: &str) -> String {
        if self.tables[DELETES].reads_files.load(Ordering::Acquire) {
            format!("SELECT f.* FROM ({files}) AS f ANTI JOIN deleted_keys AS d ON d.did = f.did AND d.rkey = f.rkey")
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
    pub(super) fn live_posts_sql(&self, files: &str, with_hot: bool) -> String {
        let hot = with_hot && !self.hot.lock().unwrap_or_else(|p| p.into_inner()).is_empty();
        let (hot_deletes, hot_accounts) =
            if with_hot { *self.hot_overlay.lock().unwrap_or_else(|p| p.into_inner()) } else { (false, false) };
        let mut hidden = String::new();
        if hot_deletes {
            hidden.push_str(" ANTI JOIN hot_deletes AS hd ON hd.did = p.did AND hd.rkey = p.rkey");
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
            // Typed like the files: the same columns in the same order (the uri made, first),
            // then the partition date.
            base.execute_batch(&format!(
                "CREATE OR REPLACE TABLE hot_posts_rows AS SELECT * EXCLUDE (uri, \"date\") FROM (SELECT {POST_COLUMNS_EMPTY}) WHERE false"
            ))?;
            let batch = rows::plain_strings(&<Post as crate::model::TableRow>::to_batch(posts)?)?;
            base.appender("hot_posts_rows")?.append_record_batch(batch)?;
            base.execute_batch(&format!(
                "CREATE OR REPLACE TABLE hot_posts AS SELECT {} AS uri, *, CAST(created_at AS DATE) AS \"date\" FROM hot_posts_rows;
                 DROP TABLE hot_posts_rows;",
                crate::model::post_uri_sql("")
            ))?;
        }
        let overlay_was = *self.hot_overlay.lock().unwrap_or_else(|p| p.into_inner());
        // By DID and record key, as the lake's deletes match posts. A uri that is not a post's
        // names no post (every stored post's is made of its DID and key).
        replace_hot_table(
            &base,
            "hot_deletes",
            "did VARCHAR, rkey VARCHAR",
            overlay_was.0,
            hot.deleted.len(),
            |appender| {
                hot.deleted
                    .iter()
                    .filter_map(|uri| crate::model::post_uri_parts(uri))
                    .try_for_each(|(did, rkey)| appender.append_row([did, rkey]))
            },
        )?;
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
}
