//! Likes, reposts, replies and quotes: counts per post, totals per author, and pages ranked by
//! them.

use std::sync::atomic::Ordering;

use super::*;

/// Whether `plan` counts likes or reposts (from `interaction_counts`).
pub(super) fn counts_interactions(plan: &Plan) -> bool {
    let engagement = match plan {
        Plan::Engagement(plan) => plan.engagement,
        Plan::Received(engagements, _) => return engagements.iter().any(|e| e.interaction_kind().is_some()),
        Plan::RankedPosts(plan) => plan.engagement,
        _ => return false,
    };
    engagement.interaction_kind().is_some()
}

impl Engine {
    /// Runs `sql` on `connection`; it reads `interaction_counts` or `interaction_received`, under `undone`'s
    /// read lock once it holds the snapshot's undone likes and reposts; with rollups off, over
    /// the likes and reposts themselves, one row each. On the views as they are: the caller
    /// refreshes them.
    pub(super) fn run_counting<T>(
        &self,
        connection: &Connection,
        sql: &Sql,
        read: impl FnMut(&duckdb::Row<'_>) -> Result<T>,
    ) -> Result<Vec<T>> {
        if !self.use_rollups {
            let rows = "interaction_counts AS (SELECT kind, subject_did, subject_rkey, \"date\", 1 AS n FROM interactions), \
                        interaction_received AS (FROM interaction_counts)";
            let text = match sql.text.strip_prefix("WITH ") {
                Some(rest) => format!("WITH {rows}, {rest}"),
                None => format!("WITH {rows}\n{}", sql.text),
            };
            return self.run_sql_on(connection, &Sql { text, params: sql.params.clone() }, read);
        }
        let _undone =
            self.read_synced(&self.undone, undone::UndoneInteractions::synced, undone::UndoneInteractions::sync)?;
        self.run_sql_on(connection, sql, read)
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
    pub(super) fn ranked_among_candidates(&self, plan: &RankedPostsPlan) -> Result<Option<Vec<(Post, u64)>>> {
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
    pub(super) fn ranked_among_heads(&self, plan: &RankedPostsPlan) -> Result<Option<Vec<(Post, u64)>>> {
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
        let key = crate::model::post_order_key;
        candidates.sort_unstable_by(|a, b| b.1.cmp(&a.1).then_with(|| key(&a.0).cmp(&key(&b.0))));
        if let Some(after) = &plan.after {
            let after_key = key(&after.uri);
            candidates.retain(|(uri, n)| *n < after.count || (*n == after.count && key(uri) > after_key));
        }
        self.page_among(plan, &candidates, Some(picked.beyond), "posts ranked among the largest rows")
    }

    /// The first page of `plan` among `candidates` (in the ranking's order, with their exact
    /// counts), if it is exact: full, and its last count above `beyond`, the most any post that
    /// is not a candidate can have. Their posts are read a few dozen at a time, with the filter.
    pub(super) fn page_among(
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
}
