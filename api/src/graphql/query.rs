//! The query root. Each resolver turns its arguments and selection set into one `lake` plan,
//! runs it through the [`QueryRunner`] (a blocking thread, a concurrency cap and a timeout),
//! and wraps the rows in GraphQL types.

use std::sync::Arc;

use async_graphql::{Context, ID, Object, SelectionField};
use lake::exec::Reads;
use lake::model::{Post, PostColumn};
use lake::plan::{Keyset, PostsPlan, TopPlan};

use super::author::{Author, AuthorCount, validate_did};
use super::types::{
    Clock, Dimension, HashtagCount, Interval, LakeStats, PageInfo, PostConnection, PostEdge, PostFilter, PostNode,
    PostOrder, TimeBucket, TimeRange, Trend, TrendKind, TrendRank, post_field_columns,
};
use super::{COMPLEXITY_PAGE_CAP, DEFAULT_PAGE_SIZE, QueryRunner, Services};
use crate::error;

pub struct Query;

pub(super) fn services<'a>(ctx: &Context<'a>) -> async_graphql::Result<&'a Services> {
    ctx.data::<Services>()
}

pub(super) fn runner<'a>(ctx: &Context<'a>) -> async_graphql::Result<&'a QueryRunner> {
    match ctx.data_opt::<super::RequestRunner>() {
        Some(runner) => Ok(&runner.0),
        None => Ok(&services(ctx)?.runner),
    }
}

/// `first` checked against the configured page-size cap.
pub(super) fn page_size(ctx: &Context<'_>, argument: &str, first: Option<i32>) -> async_graphql::Result<u32> {
    let max = services(ctx)?.limits.max_page_size;
    let first = first.unwrap_or(DEFAULT_PAGE_SIZE);
    if !(0..=max).contains(&first) {
        return Err(error::bad_input(format!("{argument} must be between 0 and {max}, got {first}")));
    }
    Ok(first as u32)
}

/// The lake columns that a selection of `Post` fields reads.
fn post_columns<'a>(fields: impl Iterator<Item = SelectionField<'a>>) -> Vec<PostColumn> {
    fields.flat_map(|f| post_field_columns(f.name()).iter().copied()).collect()
}

/// The `Post` fields selected under a connection's `nodes` and `edges { node }`.
pub(super) fn connection_post_columns(connection: SelectionField<'_>) -> Vec<PostColumn> {
    let mut columns = Vec::new();
    for field in connection.selection_set() {
        match field.name() {
            "nodes" => columns.extend(post_columns(field.selection_set())),
            "edges" => {
                for edge_field in field.selection_set().filter(|f| f.name() == "node") {
                    columns.extend(post_columns(edge_field.selection_set()));
                }
            }
            _ => {}
        }
    }
    columns
}

/// A page from rows fetched with one extra row (which only tells that a next page exists).
pub(super) fn connection(rows: Vec<Post>, page_size: u32, filter: Arc<lake::plan::PostFilter>) -> PostConnection {
    page_of(rows, page_size, filter, |post| {
        let cursor = Keyset { created_at_us: post.created_at_us, uri: post.uri.clone() }.encode();
        PostEdge { cursor, node: PostNode(post) }
    })
}

/// [`connection`] of any rows, each made an edge (with the cursor of its order) by `edge`.
fn page_of<T>(
    mut rows: Vec<T>,
    page_size: u32,
    filter: Arc<lake::plan::PostFilter>,
    edge: impl FnMut(T) -> PostEdge,
) -> PostConnection {
    let page_size = page_size as usize;
    let has_next_page = rows.len() > page_size;
    rows.truncate(page_size);
    let edges: Vec<PostEdge> = rows.into_iter().map(edge).collect();
    let end_cursor = edges.last().map(|e| e.cursor.clone());
    PostConnection { edges, page_info: PageInfo { has_next_page, end_cursor }, filter }
}

/// A page of the posts matching `filter` ranked by `engagement`, with cursors of that order.
pub(super) async fn ranked_page(
    ctx: &Context<'_>,
    engagement: lake::plan::Engagement,
    filter: Arc<lake::plan::PostFilter>,
    page_size: u32,
    after: Option<String>,
) -> async_graphql::Result<PostConnection> {
    let columns = connection_post_columns(ctx.field());
    let mut plan = lake::plan::RankedPostsPlan::new(engagement, (*filter).clone(), page_size + 1, columns)
        .map_err(error::from_lake)?;
    plan.after = after.map(|cursor| lake::plan::RankKeyset::decode(&cursor)).transpose().map_err(error::from_lake)?;
    let rows = if page_size == 0 {
        Vec::new()
    } else {
        let runner = runner(ctx)?;
        let estimate = runner.estimate(Reads::Scan { filter: &plan.filter, rows: u64::from(plan.limit) });
        runner.run(estimate, move |engine| engine.ranked_posts(&plan)).await?
    };
    Ok(page_of(rows, page_size, filter, |(post, count)| {
        let cursor = lake::plan::RankKeyset { count, uri: post.uri.clone() }.encode();
        PostEdge { cursor, node: PostNode(post) }
    }))
}

/// Decodes an `after` cursor.
pub(super) fn keyset(after: Option<String>) -> async_graphql::Result<Option<Keyset>> {
    after.map(|cursor| Keyset::decode(&cursor)).transpose().map_err(error::from_lake)
}

/// Whether the current field's selection set asks for `name`.
pub(super) fn selects(ctx: &Context<'_>, name: &str) -> bool {
    ctx.field().selection_set().any(|f| f.name() == name)
}

/// Counts per time bucket, shared by `timeBuckets` and `Author.activity`.
pub(super) async fn time_buckets(
    ctx: &Context<'_>,
    interval: Interval,
    filter: lake::plan::PostFilter,
    time_zone: Option<String>,
    group_by: Option<Dimension>,
) -> async_graphql::Result<Vec<TimeBucket>> {
    let zone_name = time_zone.unwrap_or_else(|| "UTC".to_owned());
    let zone = lake::zone::parse_zone(&zone_name).map_err(error::from_lake)?;
    // Distinct authors cost more than the rest of the query: only when asked for.
    let measures = lake::plan::Measures { authors: selects(ctx, "authors"), replies: selects(ctx, "replies") };
    let runner = runner(ctx)?;
    let estimate = runner.estimate(Reads::Scan { filter: &filter, rows: 0 });
    let buckets = runner
        .run(estimate, move |engine| {
            engine.time_buckets(&filter, interval.into(), zone, group_by.map(Into::into), measures)
        })
        .await?;
    Ok(buckets.into_iter().map(TimeBucket).collect())
}

#[Object]
impl Query {
    /// One post by its AT-URI, or null when the lake does not have it (or it was deleted).
    async fn post(&self, ctx: &Context<'_>, uri: ID) -> async_graphql::Result<Option<PostNode>> {
        let filter = lake::plan::PostFilter { uris: vec![uri.0], ..Default::default() };
        let plan = PostsPlan::new(filter, lake::plan::PostOrder::Newest, 1, post_columns(ctx.field().selection_set()));
        let runner = runner(ctx)?;
        let rows = runner.run(runner.estimate(Reads::Page(&plan)), move |engine| engine.posts(&plan)).await?;
        Ok(rows.into_iter().next().map(PostNode))
    }

    /// Posts matching `filter`, a page at a time: pass `pageInfo.endCursor` as `after`.
    #[graphql(
        complexity = "first.unwrap_or(DEFAULT_PAGE_SIZE).clamp(1, COMPLEXITY_PAGE_CAP) as usize * child_complexity"
    )]
    async fn posts(
        &self,
        ctx: &Context<'_>,
        filter: Option<PostFilter>,
        #[graphql(default_with = "Some(PostOrder::Newest)")] order: Option<PostOrder>,
        #[graphql(default_with = "Some(20)")] first: Option<i32>,
        after: Option<String>,
    ) -> async_graphql::Result<PostConnection> {
        // An explicit null means the default, as an absent argument does.
        let page_size = page_size(ctx, "first", first)?;
        let filter = Arc::new(filter.unwrap_or_default().into_plan()?);
        let order = match order.unwrap_or_default().by_time() {
            Ok(order) => order,
            Err(engagement) => return ranked_page(ctx, engagement, filter, page_size, after).await,
        };
        let mut plan = PostsPlan::new((*filter).clone(), order, page_size + 1, connection_post_columns(ctx.field()));
        plan.after = keyset(after)?;
        let rows = if page_size == 0 {
            Vec::new()
        } else {
            let runner = runner(ctx)?;
            runner.run(runner.estimate(Reads::Page(&plan)), move |engine| engine.posts(&plan)).await?
        };
        Ok(connection(rows, page_size, filter))
    }

    /// An author by DID, or null when the lake has neither a post nor an identity or account
    /// event of theirs.
    async fn author(&self, ctx: &Context<'_>, did: ID) -> async_graphql::Result<Option<Author>> {
        validate_did(&did)?;
        let author = Author { did: did.0, alone: true };
        Ok(author.is_known(ctx).await?.then_some(author))
    }

    /// Authors with the most posts matching `filter`, most first.
    #[graphql(complexity = "first.unwrap_or(10).clamp(1, COMPLEXITY_PAGE_CAP) as usize * child_complexity")]
    async fn top_authors(
        &self,
        ctx: &Context<'_>,
        filter: Option<PostFilter>,
        #[graphql(default_with = "Some(10)")] first: Option<i32>,
    ) -> async_graphql::Result<Vec<AuthorCount>> {
        let limit = page_size(ctx, "first", first.or(Some(10)))?;
        let plan = TopPlan::new(filter.unwrap_or_default().into_plan()?, limit);
        let runner = runner(ctx)?;
        let estimate = runner.estimate(Reads::Scan { filter: &plan.filter, rows: u64::from(limit) });
        let rows = runner.run(estimate, move |engine| engine.top_authors(&plan)).await?;
        Ok(rows.into_iter().map(|(did, posts)| AuthorCount { author: Author::new(did), posts }).collect())
    }

    /// Every bucket of `interval` in `timeZone` over the filter's range (from the first to the
    /// last matching post when `since` or `until` is absent), empty ones with zeros, ordered by
    /// start; with `groupBy`, one row per bucket and group. `clock` picks the time bucketed
    /// (and the one `since`/`until` compare with).
    async fn time_buckets(
        &self,
        ctx: &Context<'_>,
        interval: Interval,
        filter: Option<PostFilter>,
        #[graphql(default_with = "Some(\"UTC\".to_owned())")] time_zone: Option<String>,
        group_by: Option<Dimension>,
        clock: Option<Clock>,
    ) -> async_graphql::Result<Vec<TimeBucket>> {
        let filter = filter.unwrap_or_default();
        if let (Some(a), Some(b)) = (clock, filter.clock)
            && a != b
        {
            return Err(error::bad_input("clock and filter.clock differ; give one of them"));
        }
        let explicit = clock.or(filter.clock);
        let mut plan_filter = filter.into_plan()?;
        plan_filter.clock = explicit.unwrap_or_default().into();
        time_buckets(ctx, interval, plan_filter, time_zone, group_by).await
    }

    /// Hashtags on the most posts matching `filter`, most first.
    #[graphql(complexity = "first.unwrap_or(10).clamp(1, COMPLEXITY_PAGE_CAP) as usize * child_complexity")]
    async fn top_hashtags(
        &self,
        ctx: &Context<'_>,
        filter: Option<PostFilter>,
        #[graphql(default_with = "Some(10)")] first: Option<i32>,
    ) -> async_graphql::Result<Vec<HashtagCount>> {
        let limit = page_size(ctx, "first", first.or(Some(10)))?;
        let mut plan = TopPlan::new(filter.unwrap_or_default().into_plan()?, limit);
        plan.count_authors = selects(ctx, "authors");
        let runner = runner(ctx)?;
        let estimate = runner.estimate(Reads::Scan { filter: &plan.filter, rows: u64::from(limit) });
        Ok(runner
            .run(estimate, move |engine| engine.top_hashtags(&plan))
            .await?
            .into_iter()
            .map(HashtagCount)
            .collect())
    }

    /// What is rising: the hashtags, link domains or languages of the posts matching `filter`
    /// whose rate in `window` (default: the last hour) is highest against their own rate in
    /// `baseline` (default: the seven days before the window), ranked by `rank`. Only items on
    /// at least `minPosts` posts of the window are ranked, so one lucky post does not trend.
    /// The ranges replace `filter.since` and `filter.until`, which must be absent.
    #[graphql(complexity = "first.unwrap_or(10).clamp(1, COMPLEXITY_PAGE_CAP) as usize * child_complexity")]
    #[allow(clippy::too_many_arguments)]
    async fn trending(
        &self,
        ctx: &Context<'_>,
        kind: TrendKind,
        window: Option<TimeRange>,
        baseline: Option<TimeRange>,
        filter: Option<PostFilter>,
        #[graphql(default)] rank: TrendRank,
        #[graphql(default = 5)] min_posts: i32,
        #[graphql(default_with = "Some(10)")] first: Option<i32>,
    ) -> async_graphql::Result<Vec<Trend>> {
        let filter = filter.unwrap_or_default();
        if filter.since.is_some() || filter.until.is_some() {
            return Err(error::bad_input(
                "trending counts over window and baseline: leave filter.since and filter.until out",
            ));
        }
        let Ok(min_posts) = u32::try_from(min_posts) else {
            return Err(error::bad_input(format!("minPosts must be 0 or more, got {min_posts}")));
        };
        let limit = page_size(ctx, "first", first.or(Some(10)))?;
        const HOUR_US: i64 = 3_600_000_000;
        let now = chrono::Utc::now().timestamp_micros();
        let window = window.map_or((now - HOUR_US, now), |w| (w.since.micros(), w.until.micros()));
        let baseline =
            baseline.map_or((window.0 - 7 * 24 * HOUR_US, window.0), |b| (b.since.micros(), b.until.micros()));
        let plan = lake::plan::TrendPlan::new(
            kind.into(),
            filter.into_plan()?,
            window,
            baseline,
            rank.into(),
            min_posts,
            limit,
        )
        .map_err(|e| error::bad_input(e.to_string()))?;
        let runner = runner(ctx)?;
        let estimate = runner.estimate(Reads::Scan { filter: &plan.filter, rows: u64::from(limit) });
        Ok(runner.run(estimate, move |engine| engine.trending(&plan)).await?.into_iter().map(Trend).collect())
    }

    /// The exports declared in the server's config file, with their last and next runs.
    async fn exports(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<super::exports::Export>> {
        super::exports::list(ctx).await
    }

    /// The lake's size and state.
    async fn lake(&self, ctx: &Context<'_>) -> async_graphql::Result<LakeStats> {
        // The buffer changes between generations: an answer that shows it is not cached.
        if ctx.look_ahead().field("bufferedPosts").exists()
            && let Ok(volatile) = ctx.data::<crate::cache::Volatile>()
        {
            volatile.mark();
        }
        let redis = services(ctx)?.redis.clone();
        let buffered = async move {
            match redis {
                Some(redis) => redis.buffered_rows().await,
                None => None,
            }
        };
        // The post count reads every file.
        let runner = runner(ctx)?;
        let estimate = runner.estimate(Reads::Scan { filter: &lake::plan::PostFilter::default(), rows: 1 });
        let (stats, buffered) = futures_util::join!(runner.run(estimate, |engine| engine.stats()), buffered);
        Ok(LakeStats(stats?, buffered))
    }
}
