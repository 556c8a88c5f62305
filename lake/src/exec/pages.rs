//! Pages of posts: the text indexes narrowing what a statement with searches reads, and the
//! looks for a page in the nearest candidates, row groups or day before the whole range.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::*;

/// The most candidate rows the text indexes may give one statement; with more, a scan is
/// cheaper than reading them scattered through the files.
pub(super) const MAX_INDEX_CANDIDATES: usize = 10_000;
/// The most days of partitions whose files a statement reads by name, less their deleted posts
/// from the rollup tables ([`Engine::days_posts_sql`]), rather than through the `posts` view.
pub(super) const MAX_NARROWED_DAYS: i64 = 7;

/// The posts of the data files `paths`, with their uris, less their deleted posts as `dead_rows`
/// holds them (none for no files).
fn files_less_deleted_sql(paths: &[&Path]) -> String {
    if paths.is_empty() {
        return format!("SELECT {POST_COLUMNS_EMPTY} WHERE false");
    }
    let list = rollups::quoted(paths.iter().copied());
    let read = format!(
        "read_parquet([{list}], hive_partitioning = true, hive_types = {{'date': DATE}}, union_by_name = true)"
    );
    format!(
        "SELECT f.* FROM ({}) AS f \
         ANTI JOIN (SELECT did, rkey FROM dead_rows WHERE deleted AND file IN ({list})) AS d \
         ON d.did = f.did AND d.rkey = f.rkey",
        crate::model::posts_with_uri_sql(&read)
    )
}

/// The rows `rows` of the posts file `quoted` (a SQL string), read by DuckDB.
fn rows_by_number_sql(quoted: &str, rows: &[u64]) -> String {
    let rows: Vec<String> = rows.iter().map(u64::to_string).collect();
    let read = format!(
        "read_parquet({quoted}, hive_partitioning = true, hive_types = {{'date': DATE}}, file_row_number = true) \
         WHERE file_row_number IN ({})",
        rows.join(", ")
    );
    format!("SELECT * EXCLUDE (file_row_number) FROM ({})", crate::model::posts_with_uri_sql(&read))
}

/// What the text index of one data file narrows a statement's searches to.
pub(super) enum Narrowed {
    /// No index narrows them: the file is read whole.
    Whole,
    /// More candidates than the statement may take.
    TooMany,
    Rows(Vec<u64>),
}

/// `each` of every one of `items`, in order, the items shared among up to `threads` threads
/// (text index lookups and page reads, a fraction of a millisecond to a few each).
pub(super) fn on_threads<T: Sync, R: Send>(threads: usize, items: &[T], each: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let workers = threads.min(items.len()).max(1);
    if workers == 1 {
        return items.iter().map(each).collect();
    }
    let each = &each;
    let done: Vec<Vec<(usize, R)>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..workers)
            .map(|worker| {
                scope.spawn(move || {
                    items.iter().enumerate().skip(worker).step_by(workers).map(|(i, item)| (i, each(item))).collect()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|handle| handle.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic)))
            .collect()
    });
    let mut out: Vec<Option<R>> = (0..items.len()).map(|_| None).collect();
    for (i, result) in done.into_iter().flatten() {
        out[i] = Some(result);
    }
    out.into_iter().map(|result| result.expect("every item was done")).collect()
}

/// Where a page of a text search is looked for first ([`Engine::text_page_window`]).
pub(super) enum TextWindow {
    /// Among the posts created since its `depth`-th newest candidate (until the oldest): the
    /// plan so cut.
    Cut(Box<PostsPlan>),
    /// Every file in its range has an index, and they hold fewer candidates, here: the
    /// statement that reads them all gives the page.
    Fewer(Arc<KnownCandidates>),
    /// The indexes cannot tell: no search they narrow, a range on `indexed_at`, or a file
    /// without an index.
    Unknown,
}

/// Every candidate of a search in some files, as [`Engine::text_page_window`] found them, with
/// the index of each: the statement of that page reads them rather than ask the indexes again.
pub(super) struct KnownCandidates {
    texts: Vec<crate::search::TextQuery>,
    window: Window,
    rows: HashMap<PathBuf, (Arc<crate::textindex::TextIndex>, Vec<u64>)>,
}

thread_local! {
    /// The candidates known for the page being read on this thread ([`Engine::posts`]).
    static KNOWN_CANDIDATES: std::cell::RefCell<Option<Arc<KnownCandidates>>> = const { std::cell::RefCell::new(None) };
}

/// The `posts` of a statement narrowed by the text indexes ([`Engine::narrowed_posts`]).
pub(super) struct NarrowedPosts {
    pub(super) sql: String,
    /// The rows of the candidate table ([`rows::CANDIDATE_ROWS`]) it reads, to put in it.
    pub(super) rows: Vec<arrow::array::RecordBatch>,
}

/// The candidates a page of a text search looks for first, at least; eight times as many
/// each time after, up to [`MAX_INDEX_CANDIDATES`].
pub(super) const TEXT_PAGE_DEPTH: usize = 1_000;

/// The fewest rows the row groups of a first look for a page of the newest or oldest posts
/// hold (`Engine::stats_page_window`), and the most of a last look before the whole range:
/// each look reads about its row groups, each 16 times the last's.
pub(super) const STATS_PAGE_DEPTH: usize = 1_000;

pub(super) const MAX_STATS_PAGE_DEPTH: usize = 1 << 20;

/// The cursor of a page, with its order, to prune day partitions by.
pub(super) fn page_keyset(plan: &Plan) -> Option<(&Keyset, PostOrder)> {
    match plan {
        Plan::Posts(page) => page.after.as_ref().map(|after| (after, page.order)),
        _ => None,
    }
}

/// The `created_at` range of the posts a statement of `plan` can return, as far as its filter
/// and cursor tell: what the text indexes are asked for.
pub(super) fn created_window(plan: &Plan) -> Window {
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

/// `plan` narrowed to the one day partition of `partitions` its page starts in, when there
/// are others (see [`Engine::posts`]).
pub(super) fn first_day_of(plan: &PostsPlan, partitions: &[chrono::NaiveDate]) -> Option<PostsPlan> {
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

impl Engine {
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
    ///
    /// A file's few candidates (up to [`rows::MAX_ROWS_FROM_PAGES`]) are read here from the
    /// pages that hold them, into the candidate table the statement reads
    /// ([`NarrowedPosts::rows`]); DuckDB would decode their whole row groups.
    ///
    /// It names the snapshot's files: the caller holds [`Engine::moves`] until it has run.
    pub(super) fn narrowed_posts(&self, plan: &Plan) -> Result<Option<NarrowedPosts>> {
        let Some(filter) = plan.filter() else { return Ok(None) };
        // A ranking counts replies and quotes from every post, not only the matching ones.
        if filter.text.is_empty() || matches!(plan, Plan::RankedPosts(_)) {
            return Ok(None);
        }
        // Both are of the snapshot, which the caller keeps from moving. While the rollup tables
        // are being brought up to date (which takes seconds at a month of posts), the statement
        // anti-joins the deletes rather than wait.
        let paths = || self.post_paths.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let (paths, deleted) = match self.rollups.try_read() {
            Ok(tables) => (paths(), tables.deleted_rows()),
            Err(std::sync::TryLockError::Poisoned(tables)) => (paths(), tables.into_inner().deleted_rows()),
            Err(std::sync::TryLockError::WouldBlock) => (paths(), None),
        };
        let window = created_window(plan);
        let (first, last) = crate::sql::partition_days(filter, page_keyset(plan));
        let in_days: Vec<&PathBuf> = paths
            .iter()
            .filter(|path| {
                rollups::partition_day(path)
                    .is_none_or(|day| first.is_none_or(|f| day >= f) && last.is_none_or(|l| day <= l))
            })
            .collect();
        let quoted = |path: &Path| format!("'{}'", path.to_string_lossy().replace('\'', "''"));
        let (mut narrowed, mut whole, mut candidates) = (Vec::new(), Vec::new(), 0_usize);
        let (mut indexed, mut few) = (false, Vec::new());
        // The candidates the page's look through the indexes found (`Engine::posts`), if it found
        // every one, of the same indexes.
        let known = KNOWN_CANDIDATES
            .with(|known| known.borrow().clone())
            .filter(|known| known.texts == filter.text && known.window == window);
        let known_rows = |path: &Path| {
            let (index, rows) = known.as_ref()?.rows.get(path)?;
            self.text_index(path).is_some_and(|current| Arc::ptr_eq(&current, index)).then_some(rows)
        };
        // The indexes are asked on the engine's threads, a few files for each at a time, so that
        // a search with too many candidates stops soon.
        for files in in_days.chunks(self.threads.max(1) * 4) {
            let budget = MAX_INDEX_CANDIDATES - candidates;
            let found = on_threads(self.threads, files, |path| match known_rows(path) {
                Some(rows) if rows.len() <= budget => Narrowed::Rows(rows.clone()),
                Some(_) => Narrowed::TooMany,
                None => self.candidates_in(path, &filter.text, window, budget),
            });
            for (path, found) in files.iter().zip(found) {
                let mut rows = match found {
                    Narrowed::TooMany => return Ok(None),
                    Narrowed::Whole => {
                        whole.push(quoted(path));
                        continue;
                    }
                    Narrowed::Rows(rows) => rows,
                };
                indexed = true;
                candidates += rows.len();
                if candidates > MAX_INDEX_CANDIDATES {
                    return Ok(None);
                }
                if let Some(dead) = deleted.as_ref().and_then(|deleted| deleted.get(*path)) {
                    rows.retain(|row| dead.binary_search(row).is_err());
                }
                if rows.len() > self.max_rows_from_pages.load(Ordering::Relaxed) {
                    narrowed.push(rows_by_number_sql(&quoted(path), &rows));
                } else if !rows.is_empty() {
                    few.push((*path, rows));
                }
            }
        }
        if !indexed {
            return Ok(None);
        }
        let read = on_threads(self.threads, &few, |(path, rows)| self.rows_from_pages(path, rows));
        let mut from_pages = Vec::new();
        for ((path, rows), read) in few.iter().zip(read) {
            match read? {
                Some(batch) => from_pages.push(batch),
                // A file whose columns are not today's.
                None => narrowed.push(rows_by_number_sql(&quoted(path), rows)),
            }
        }
        if !from_pages.is_empty() {
            narrowed.push(crate::model::posts_with_uri_sql(rows::CANDIDATE_ROWS));
        }
        if !whole.is_empty() {
            let scanned = crate::model::posts_with_uri_sql(&format!(
                "read_parquet([{}], hive_partitioning = true, hive_types = {{'date': DATE}}, union_by_name = true)",
                whole.join(", ")
            ));
            narrowed.push(if deleted.is_some() { self.less_file_deletes(&scanned) } else { scanned });
        }
        if narrowed.is_empty() {
            narrowed.push(format!("SELECT {POST_COLUMNS_EMPTY} WHERE false"));
        }
        self.text_index_uses.fetch_add(1, Ordering::Relaxed);
        let files = narrowed.join(" UNION ALL BY NAME ");
        let files = if deleted.is_some() { files } else { self.less_file_deletes(&files) };
        Ok(Some(NarrowedPosts { sql: self.live_posts_sql(&files, true), rows: from_pages }))
    }

    /// The `posts` a statement over a few days reads: the files of those day partitions alone,
    /// less their deleted posts as `dead_rows` holds them, then the hot tier, less hidden
    /// accounts' posts, as in the `posts` view. The view takes the deletes out by an anti-join
    /// with every delete of the lake (1.8 million at a month of Bluesky, hashed from the
    /// `deleted_keys` table in each statement); the rollup tables know which of them fall in
    /// each file. A range open at an end runs to the lake's first or last day of files. `None`
    /// for a plan that may read posts outside its filter's days (trending's baseline, a
    /// ranking's replies), a range of more than [`MAX_NARROWED_DAYS`] days of files, or while
    /// the rollup tables are behind the snapshot.
    ///
    /// It names the snapshot's files: the caller holds [`Engine::moves`] until it has run.
    pub(super) fn days_posts_sql(&self, plan: &Plan) -> Option<String> {
        if !matches!(
            plan,
            Plan::Posts(_)
                | Plan::PostsPerAuthor(_)
                | Plan::Count(_)
                | Plan::AuthorSummaries(_)
                | Plan::TopAuthors(_)
                | Plan::TopHashtags(_)
                | Plan::TopHashtagsPerAuthor(_)
                | Plan::Buckets(_)
        ) || !self.use_rollups
            || !self.tables[DELETES].reads_files.load(Ordering::Acquire)
        {
            return None;
        }
        let filter = plan.filter()?;
        let (first, last) = crate::sql::partition_days(filter, page_keyset(plan));
        if let (Some(first), Some(last)) = (first, last)
            && (last - first).num_days() >= MAX_NARROWED_DAYS
        {
            return None;
        }
        // The tables hold the dead rows of the snapshot's files once synced (it cannot move).
        let paths = match self.rollups.try_read() {
            Ok(tables) if tables.synced() => self.post_paths.lock().unwrap_or_else(|p| p.into_inner()).clone(),
            _ => return None,
        };
        // A range open at an end ends with the lake's files (a newest page's, say).
        let days = || paths.iter().filter_map(|path| rollups::partition_day(path));
        let (Some(first), Some(last)) = (first.or_else(|| days().min()), last.or_else(|| days().max())) else {
            return None;
        };
        if (last - first).num_days() >= MAX_NARROWED_DAYS {
            return None;
        }
        let in_days: Vec<&Path> = paths
            .iter()
            .filter(|path| rollups::partition_day(path).is_some_and(|day| day >= first && day <= last))
            .map(PathBuf::as_path)
            .collect();
        Some(self.live_posts_sql(&files_less_deleted_sql(&in_days), true))
    }

    /// A count of posts matching text searches that the text indexes answer exactly
    /// ([`crate::textindex::is_exact`]), as a statement: each indexed file's matches in the
    /// range counted from its index less its dead rows as the rollup tables know them, added
    /// to `count` (the plan's statement) over the rest, the files without an index less their
    /// deleted posts and the hot tier, as in the `posts` view. `None` for a filter with more
    /// than such searches and a `created_at` range, while the rollup tables are behind the
    /// snapshot or the buffer holds deletes or account changes (which a count shows at once),
    /// or when an index fails.
    ///
    /// It names the snapshot's files: the caller holds [`Engine::moves`] until it has run.
    pub(super) fn indexed_count_sql(&self, plan: &Plan, count: &str) -> Option<String> {
        let Plan::Count(filter) = plan else { return None };
        let PostFilter {
            since_us,
            until_us,
            clock,
            uris,
            authors,
            langs,
            detected_langs,
            text,
            hashtags,
            mentions,
            is_reply,
            embed_types,
        } = filter;
        let ranged = since_us.is_some() || until_us.is_some();
        let only_text = (*clock == Clock::CreatedAt || !ranged)
            && [uris, authors, langs, detected_langs, hashtags, mentions].iter().all(|list| list.is_empty())
            && is_reply.is_none()
            && embed_types.is_empty()
            && !text.is_empty()
            && text.iter().all(crate::textindex::is_exact);
        if !only_text
            || !self.use_text_indexes
            || !self.use_rollups
            || *self.hot_overlay.lock().unwrap_or_else(|p| p.into_inner()) != (false, false)
        {
            return None;
        }
        // Of the snapshot, which the caller keeps from moving.
        let dead = self.rollups.try_read().ok()?.dead_row_numbers()?;
        let paths = self.post_paths.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let window = created_window(plan);
        let (first, last) = crate::sql::partition_days(filter, None);
        let (mut with_index, mut rest) = (Vec::new(), Vec::new());
        for path in paths.iter() {
            let day = rollups::partition_day(path);
            if day.is_some_and(|day| first.is_some_and(|f| day < f) || last.is_some_and(|l| day > l)) {
                continue;
            }
            match self.text_index(path) {
                Some(index) => with_index.push((path, index)),
                None => rest.push(path.as_path()),
            }
        }
        // Each index's count looks for the substring in its list of terms (a `memmem`, made
        // at the index's first such search) and counts the postings of the terms that hold
        // it: 100 ms for a month's 180 files. The files are shared among the threads.
        let counts = on_threads(self.threads, &with_index, |(path, index)| {
            let dead = dead.get(*path).map_or(&[][..], Vec::as_slice);
            index.exact_count(text, window, dead).unwrap_or_else(|error| {
                tracing::warn!(%error, path = %path.display(), "a text index could not count; counting from the posts");
                None
            })
        });
        let indexed: u64 = counts.into_iter().sum::<Option<u64>>()?;
        self.text_index_uses.fetch_add(1, Ordering::Relaxed);
        let posts = self.live_posts_sql(&files_less_deleted_sql(&rest), true);
        Some(format!("WITH posts AS ({posts})\nSELECT n_posts + {indexed} AS n_posts FROM ({count})"))
    }

    /// The rows of the data file `path` created in `window` that may match every search of
    /// `texts`, sorted, from its index, if there are at most `limit`: `Whole` if it has no index
    /// (or one that does not open) or no search narrows.
    pub(super) fn candidates_in(
        &self,
        path: &Path,
        texts: &[crate::search::TextQuery],
        window: Window,
        limit: usize,
    ) -> Narrowed {
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
    pub(super) fn text_index(&self, path: &Path) -> Option<Arc<crate::textindex::TextIndex>> {
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

    /// Runs a posts plan; each returned post has the plan's columns filled, the others default.
    ///
    /// Copies of a post (the same uri ingested twice by a replay) share `(created_at, did, rkey)`, so
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
            match self.text_page_window(plan, depth)? {
                TextWindow::Cut(nearer) => {
                    let rows = self.posts_within(&nearer)?;
                    if rows.len() == plan.limit as usize {
                        self.text_page_cuts.fetch_add(1, Ordering::Relaxed);
                        return Ok(rows);
                    }
                }
                // One statement reads every candidate: no day is worth trying alone first.
                TextWindow::Fewer(known) => {
                    KNOWN_CANDIDATES.with(|candidates| candidates.replace(Some(known)));
                    let page = self.page(plan);
                    KNOWN_CANDIDATES.with(|candidates| candidates.take());
                    return page;
                }
                TextWindow::Unknown => break,
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
    pub(super) fn stats_page_window(&self, plan: &PostsPlan, depth: usize) -> Result<Option<PostsPlan>> {
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
    /// OLDEST), or whether there are fewer ([`TextWindow`]). A range on `indexed_at` is not cut:
    /// `created_at` cannot cut it. A day's indexes are asked on the engine's threads.
    pub(super) fn text_page_window(&self, plan: &PostsPlan, depth: usize) -> Result<TextWindow> {
        let filter = &plan.filter;
        if filter.text.is_empty() || filter.clock != Clock::CreatedAt {
            return Ok(TextWindow::Unknown);
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
        let (mut times, mut every_file_indexed) = (Vec::new(), true);
        let mut known = KnownCandidates { texts: filter.text.clone(), window, rows: HashMap::new() };
        for files in days {
            let found = on_threads(self.threads, files, |path| match self.text_index(path) {
                Some(index) => {
                    index.first_candidates(&filter.text, window, depth, newest).map(|found| Some((index, found)))
                }
                None => Ok(None),
            });
            for (path, found) in files.iter().zip(found) {
                match found? {
                    Some((index, Some(found))) => {
                        times.extend(found.iter().map(|(time, _)| *time));
                        if found.len() < depth {
                            let mut rows: Vec<u64> = found.into_iter().map(|(_, row)| row).collect();
                            rows.sort_unstable();
                            known.rows.insert(path.to_path_buf(), (index, rows));
                        }
                    }
                    // The search gives the index nothing to look for: no file's narrows it.
                    Some((_, None)) => return Ok(TextWindow::Unknown),
                    None => every_file_indexed = false,
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
                return Ok(TextWindow::Cut(Box::new(nearer)));
            }
        }
        Ok(if every_file_indexed { TextWindow::Fewer(Arc::new(known)) } else { TextWindow::Unknown })
    }

    /// A page of `plan` as its statements give it.
    pub(super) fn posts_within(&self, plan: &PostsPlan) -> Result<Vec<Post>> {
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
    pub(super) fn first_day_only(&self, plan: &PostsPlan) -> Result<Option<PostsPlan>> {
        Ok(first_day_of(plan, &self.post_partitions()?))
    }

    /// A page of `plan`, skipping neighbouring copies (see [`Engine::posts`]).
    pub(super) fn page(&self, plan: &PostsPlan) -> Result<Vec<Post>> {
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

    pub(super) fn read_posts(&self, plan: &Plan, columns: Vec<PostColumn>) -> Result<Vec<Post>> {
        self.run(plan, |row| {
            let mut post = Post::default();
            for (index, column) in columns.iter().enumerate() {
                set_column(&mut post, *column, row.get::<_, Value>(index)?)?;
            }
            Ok(post)
        })
    }
}
