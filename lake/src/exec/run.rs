//! Running statements: a plan compiled to SQL (or answered from rollups), on a connection to
//! the current snapshot's views, once more if a compaction took a listed file away, and
//! interruptible from another thread.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use super::*;

/// Whether DuckDB failed because a file it listed was gone when it came to read it.
pub(crate) fn lost_a_file(error: &duckdb::Error) -> bool {
    let message = error.to_string();
    message.contains("No such file or directory") || message.contains("No files found")
}

pub(super) fn run_statement<T>(
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
pub(super) struct InterruptState {
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

    pub(super) fn register(&self, handle: Arc<duckdb::InterruptHandle>) -> Result<()> {
        let mut state = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if state.interrupted {
            return Err(Error::Interrupted);
        }
        state.running = Some(handle);
        Ok(())
    }

    /// Forgets the finished statement; whether the work was interrupted.
    pub(super) fn unregister(&self) -> bool {
        let mut state = self.0.lock().unwrap_or_else(|p| p.into_inner());
        state.running = None;
        state.interrupted
    }
}

impl Engine {
    pub(super) fn connection(&self) -> Result<Connection> {
        self.refresh_views(Refresh::IfMoved)?;
        self.unmoved_connection()
    }

    /// A connection to the views as they are, for a statement that holds a lock a refresh
    /// would wait for ([`Engine::moves`], the rollup tables', the undone interactions').
    pub(super) fn unmoved_connection(&self) -> Result<Connection> {
        Ok(self.base.lock().unwrap_or_else(|p| p.into_inner()).try_clone()?)
    }

    /// Prepares and runs `plan`, handing each row to `read`. Interruptible through the
    /// thread's [`Interrupt`], if [`with_interrupt`] set one.
    ///
    /// A statement that lost a file its snapshot listed (a compaction swapped the partition:
    /// `crate::compact`) runs once more, on a snapshot listed anew.
    pub(super) fn run<T>(&self, plan: &Plan, mut read: impl FnMut(&duckdb::Row<'_>) -> Result<T>) -> Result<Vec<T>> {
        let compiled = compile(plan)?;
        self.note_touched(plan);
        self.once_more_if_a_file_went(|| {
            let started = Instant::now();
            let answered =
                |from, why| Answered { question: plan.question(), from, why, ms: None, statements: Vec::new() };
            let mut from_posts = match self.run_rollup(plan, &mut read)? {
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
            self.refresh_views(Refresh::IfMoved)?;
            // Built for the snapshot of this try, a statement that names its files runs before
            // the views move on: a flush's files and the hot tier it empties move together.
            let mut unmoved = None;
            let connection = self.unmoved_connection()?;
            if let Some(filter) = plan.filter() {
                let moves = self.moves.read().unwrap_or_else(|p| p.into_inner());
                // A count the text indexes answer, plus the rest's from the posts.
                if let Some(counted) = self.indexed_count_sql(plan, &sql.text) {
                    sql.text = counted;
                    unmoved = Some(moves);
                    if let Some(answered) = from_posts.as_mut() {
                        answered.from = "text indexes";
                    }
                } else if let Some(narrowed) = self.narrowed_posts(plan)? {
                    // The statement reads `posts` narrowed by the text indexes instead of the view.
                    sql.text = format!("WITH posts AS ({})\n{}", narrowed.sql, sql.text);
                    if !narrowed.rows.is_empty() {
                        rows::load_candidate_rows(&connection, narrowed.rows)?;
                    }
                    unmoved = Some(moves);
                } else {
                    if !filter.text.is_empty() {
                        self.text_scans.fetch_add(1, Ordering::Relaxed);
                    }
                    // Or by its days, less their deleted posts as the rollup tables know them.
                    if let Some(days) = self.days_posts_sql(plan) {
                        sql.text = format!("WITH posts AS ({days})\n{}", sql.text);
                        unmoved = Some(moves);
                    }
                }
            }
            let rows = if counts_interactions(plan) {
                self.run_counting(&connection, &sql, &mut read)?
            } else {
                self.run_sql_on(&connection, &sql, &mut read)?
            };
            drop(unmoved);
            if let Some(answered) = from_posts {
                note_answered(answered, started);
            }
            Ok(rows)
        })
    }

    /// Runs `plan` from rollups ([`crate::sql::compile_rollup`]) if it can; why not, for a
    /// question rollups answer in other cases; `None` for one they never answer.
    pub(super) fn run_rollup<T>(
        &self,
        plan: &Plan,
        read: &mut impl FnMut(&duckdb::Row<'_>) -> Result<T>,
    ) -> Result<Option<std::result::Result<Vec<T>, &'static str>>> {
        if !matches!(
            plan,
            Plan::Buckets(_)
                | Plan::Count(_)
                | Plan::TopHashtags(_)
                | Plan::TopAuthors(_)
                | Plan::AuthorPosts(_)
                | Plan::Trending(_)
        ) {
            return Ok(None);
        }
        if !self.use_rollups {
            return Ok(Some(Err("rollups are off (--rollups false)")));
        }
        if let Some(why) = crate::sql::rollup_refusal(plan) {
            return Ok(Some(Err(why)));
        }
        // A count hides what the buffer deletes or hides at once, as a page does; the cells
        // would show it at the next flush (as time buckets do).
        if matches!(plan, Plan::Count(_))
            && *self.hot_overlay.lock().unwrap_or_else(|p| p.into_inner()) != (false, false)
        {
            return Ok(Some(Err("the buffer holds deletes or account changes, which a count shows at once")));
        }
        self.refresh_views(Refresh::IfMoved)?;
        let tables = self.read_synced(&self.rollups, rollups::RollupTables::synced, rollups::RollupTables::sync)?;
        let listing = tables.listing();
        if listing.rolled.is_empty() {
            return Ok(Some(Err("no partition has rollups")));
        }
        let scope = crate::sql::RollupScope { unrolled: listing.unrolled.clone(), hot: !self.hot_range().is_empty() };
        let connection = self.unmoved_connection()?;
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
        if let Plan::TopHashtags(top) = plan
            && top.count_authors
        {
            if !crate::sql::holds_a_whole_day(&top.filter) {
                return Ok(Some(Err("the range holds no whole UTC day")));
            }
            let posts_only = Plan::TopHashtags(TopPlan { count_authors: false, ..top.clone() });
            let Some(sql) = crate::sql::compile_rollup(&posts_only, &scope)? else {
                return Ok(Some(Err("the range holds no whole hour")));
            };
            let tags: Vec<(String, u64)> =
                self.run_sql_on(&connection, &sql, |row| Ok((row.get(0)?, count(row, 1)?)))?;
            let names: Vec<String> = tags.iter().map(|(tag, _)| tag.clone()).collect();
            if names.is_empty() {
                return Ok(Some(Ok(self.run_sql_on(&connection, &tag_rows_of(&[]), read)?)));
            }
            let Some(rest) = crate::sql::compile_rollup_tag_authors(&top.filter, &names, &scope)? else {
                return Ok(Some(Err("the range holds no whole UTC day")));
            };
            let rows = self.run_sql_on(&connection, &rest.rest, |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))?;
            let in_days = |day: chrono::NaiveDate| {
                rest.first_day.is_none_or(|first| day >= first) && rest.end_day.is_none_or(|end| day < end)
            };
            let files: Vec<std::path::PathBuf> = listing
                .rolled
                .keys()
                .filter(|path| rollups::partition_day(path).is_some_and(in_days))
                .cloned()
                .collect();
            let authors = super::tag_authors::count(self.threads, &self.tag_authors, &files, &names, rows)?;
            let counted: Vec<(String, u64, u64)> =
                tags.into_iter().zip(authors).map(|((tag, posts), authors)| (tag, posts, authors)).collect();
            return Ok(Some(Ok(self.run_sql_on(&connection, &tag_rows_of(&counted), read)?)));
        }
        if let Plan::Buckets(buckets) = plan
            && !buckets.filter.authors.is_empty()
        {
            let authors = tables.authors();
            let days = |first, end| authors.days_of(&buckets.filter.authors, first, end);
            let Some(sql) = crate::sql::compile_rollup_author_buckets(buckets, &scope, days)? else {
                return Ok(Some(Err("the range holds no whole UTC day")));
            };
            return Ok(Some(Ok(self.run_sql_on(&connection, &sql, read)?)));
        }
        let Some(sql) = crate::sql::compile_rollup(plan, &scope)? else {
            return Ok(Some(Err("the range holds no whole hour")));
        };
        Ok(Some(Ok(self.run_sql_on(&connection, &sql, read)?)))
    }

    /// The tables under `lock`, read-locked once they hold the current snapshot (brought up to
    /// it by [`Self::sync_once`] when behind).
    pub(super) fn read_synced<'a, T>(
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
    pub(super) fn prepare_undone(&self) -> Result<()> {
        self.sync_once(&self.undone, undone::UndoneInteractions::synced, undone::UndoneInteractions::sync)
    }

    /// Brings the tables under `lock` up to the current snapshot, unless `synced` says they
    /// are: under the write lock, checked again, by whoever gets there first.
    pub(super) fn sync_once<T>(
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
        self.prepare_rollup_tables()?;
        self.rollups_prepared.store(true, Ordering::Relaxed);
        Ok(())
    }

    pub(super) fn prepare_rollup_tables(&self) -> Result<()> {
        self.sync_once(&self.rollups, rollups::RollupTables::synced, rollups::RollupTables::sync)
    }

    /// Runs `statement`, and once more on a snapshot listed anew if it lost a file its snapshot
    /// listed (a compaction swapped the partition: `crate::compact`).
    pub(super) fn once_more_if_a_file_went<T>(&self, mut statement: impl FnMut() -> Result<T>) -> Result<T> {
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

    pub(super) fn run_sql<T>(&self, sql: &Sql, read: impl FnMut(&duckdb::Row<'_>) -> Result<T>) -> Result<Vec<T>> {
        self.run_sql_on(&self.connection()?, sql, read)
    }

    /// Runs `sql` on `connection`, interruptible as [`Self::run`] says.
    pub(super) fn run_sql_on<T>(
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
}
