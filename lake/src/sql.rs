//! Compiles a [`Plan`] into one parameterised DuckDB statement.
//!
//! `compile` is pure and deterministic: the same plan gives the same text and parameters, so
//! its output can be snapshot-tested and used as a cache key. Identifiers come only from enums
//! ([`crate::model::PostColumn`], orders); every value a user gave is a parameter. Queries read the `posts`
//! view that [`crate::exec`] defines over the Parquet files (hive column `date`; `uri` made of
//! `did` and `rkey`, so no statement over many rows reads it). A post is in at most one row
//! (see [`crate::unique`]), so posts are counted with `count(*)`.

use std::fmt::Write as _;

use chrono::NaiveDate;
use serde::Serialize;

use crate::error::Result;
use crate::layout::date_of_micros;
use crate::model::{InteractionKind, MAX_FUTURE_SKEW_US, PostColumn};
#[cfg(test)]
use crate::plan::Measures;
use crate::plan::{
    BucketsPlan, Clock, Dimension, Engagement, EngagementPlan, Keyset, Plan, PostFilter, PostOrder, PostsPlan,
    RankKeyset, RankedPostsPlan, TopPlan, TrendKind, TrendPlan, TrendRank,
};
use crate::search;
use crate::zone::Offsets;

/// A bound value of a statement.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub enum Param {
    Text(String),
    Int(i64),
    /// UTC microseconds, bound as a zone-less `TIMESTAMP`.
    Timestamp(i64),
    Date(NaiveDate),
}

/// One SQL statement and its parameters, in placeholder order.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct Sql {
    pub text: String,
    pub params: Vec<Param>,
}

/// The first and last day partitions (inclusive; `None`: unbounded) that can hold posts of
/// `filter` past `keyset`. The hive `date` column is the UTC day of created_at. An indexed_at
/// bound prunes only from above: created_at is at most MAX_FUTURE_SKEW_US past indexed_at, but
/// may be long before it.
pub fn partition_days(
    filter: &PostFilter,
    keyset: Option<(&Keyset, PostOrder)>,
) -> (Option<NaiveDate>, Option<NaiveDate>) {
    let (mut first_day, mut last_day) = match filter.clock {
        Clock::CreatedAt => {
            (filter.since_us.map(date_of_micros), filter.until_us.map(|until| date_of_micros(until.saturating_sub(1))))
        }
        Clock::IndexedAt => (
            None,
            filter.until_us.map(|until| date_of_micros(until.saturating_sub(1).saturating_add(MAX_FUTURE_SKEW_US))),
        ),
    };
    if let Some((keyset, order)) = keyset {
        let day = date_of_micros(keyset.created_at_us);
        match order {
            PostOrder::Newest => last_day = Some(last_day.map_or(day, |d| d.min(day))),
            PostOrder::Oldest => first_day = Some(first_day.map_or(day, |d| d.max(day))),
        }
    }
    (first_day, last_day)
}

/// Compiles a plan; an error only for a filter no statement can express (a text query without
/// words, say), which is the caller's to fix.
pub fn compile(plan: &Plan) -> Result<Sql> {
    let mut builder = Builder::default();
    match plan {
        Plan::Posts(posts) => builder.posts(posts)?,
        Plan::PostsPerAuthor(posts) => builder.posts_per_author(posts)?,
        Plan::Count(filter) => {
            builder.text.push_str("SELECT count(*) AS n_posts FROM posts");
            builder.where_clause(filter, None)?;
        }
        Plan::AuthorSummaries(filter) => {
            builder.text.push_str(
                "SELECT did, count(*) AS n_posts, min(created_at) AS oldest, max(created_at) AS newest \
                 FROM posts",
            );
            builder.where_clause(filter, None)?;
            builder.text.push_str("\nGROUP BY did");
        }
        Plan::AuthorPosts(dids) => {
            builder.text.push_str("SELECT did, count(*) AS n_posts FROM posts");
            builder.where_clause(&PostFilter { authors: dids.clone(), ..PostFilter::default() }, None)?;
            builder.text.push_str("\nGROUP BY did");
        }
        Plan::TopAuthors(top) => {
            builder.text.push_str("SELECT did, count(*) AS n_posts FROM posts");
            builder.where_clause(&top.filter, None)?;
            builder.text.push_str("\nGROUP BY did\nORDER BY n_posts DESC, did");
            builder.limit(top.limit);
        }
        Plan::TopHashtags(top) => {
            let authors = if top.count_authors { "count(DISTINCT did)" } else { "0::BIGINT" };
            write!(builder.text, "SELECT tag, count(*) AS n_posts, {authors} AS n_authors\nFROM (").unwrap();
            builder.text.push_str("SELECT unnest(list_distinct(hashtags)) AS tag, did FROM posts");
            builder.where_clause(&top.filter, None)?;
            builder.text.push_str(")\nGROUP BY tag\nORDER BY n_posts DESC, tag");
            builder.limit(top.limit);
        }
        Plan::TopHashtagsPerAuthor(top) => {
            builder.text.push_str(
                "SELECT did, tag, count(*) AS n_posts\nFROM (SELECT did, unnest(list_distinct(hashtags)) AS tag FROM posts",
            );
            builder.where_clause(&top.filter, None)?;
            let limit = builder.bind(Param::Int(i64::from(top.limit)));
            write!(
                builder.text,
                ")\nGROUP BY did, tag\nQUALIFY row_number() OVER (PARTITION BY did ORDER BY n_posts DESC, tag) <= {limit}\n\
                 ORDER BY did, n_posts DESC, tag"
            )
            .unwrap();
        }
        Plan::Buckets(buckets) => builder.buckets(buckets)?,
        Plan::Accounts(dids) => {
            let list = builder.bind_list(dids.iter().cloned().map(Param::Text));
            write!(builder.text, "SELECT did, handle, active, status FROM account_state WHERE did IN ({list})")
                .unwrap();
        }
        Plan::Engagement(plan) => builder.engagement(plan),
        Plan::Trending(plan) => builder.trending(plan)?,
        Plan::RankedPosts(plan) => builder.ranked_posts(plan)?,
        Plan::Received(engagements, dids) => builder.received(engagements, dids),
    }
    Ok(Sql { text: builder.text, params: builder.params })
}

/// `(lo, hi)`: a range that holds the record key of every post in `filter`'s time window
/// (`Builder::window_keys`); both `NULL` when the window has no posts.
pub fn compile_window_keys(filter: &PostFilter) -> Result<Sql> {
    let mut builder = Builder::default();
    let range = builder.window_keys(filter)?;
    write!(builder.text, "SELECT w.lo, w.hi FROM {range} AS w").unwrap();
    Ok(Sql { text: builder.text, params: builder.params })
}

/// What the rollups of the engine's snapshot cover: every day but `unrolled` (partitions with a
/// data file that has no rollups yet), and whether the hot tier holds posts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct RollupScope {
    pub unrolled: Vec<NaiveDate>,
    pub hot: bool,
}

const HOUR_US: i64 = 3_600_000_000;
const DAY_US: i64 = 24 * HOUR_US;
/// The distinct languages of a post, as `trending(kind: LANG)` counts them: the primary
/// subtag of each of its `langs`, lower-cased.
const LANG_ITEMS: &str = "list_distinct(list_transform(langs, lambda l: lower(split_part(l, '-', 1))))";

/// Why `plan` cannot be answered from rollups, or `None` when it can (see [`crate::rollup`]):
/// time buckets of an hour or more, in a zone whose offsets are whole hours, counting posts and
/// replies, filtered and grouped by what cells hold; counts of posts filtered by what cells hold;
/// top hashtags and top authors by posts over a time range.
pub fn rollup_refusal(plan: &Plan) -> Option<&'static str> {
    let time_only = |filter: &PostFilter| {
        filter.langs.is_empty() && filter.is_reply.is_none() && filter.embed_types.is_empty() && cells_hold(filter)
    };
    let (filter, refusal) = match plan {
        Plan::Buckets(buckets) if !buckets.filter.authors.is_empty() => {
            (&buckets.filter, author_buckets_refusal(buckets))
        }
        Plan::Buckets(buckets) => (
            &buckets.filter,
            if buckets.measures.authors {
                Some("distinct authors are counted from the posts")
            } else if buckets.interval == crate::zone::Interval::Minute {
                Some("rollups are hourly")
            } else if !buckets.offsets.whole_hours() {
                Some("the time zone's offset is not a whole number of hours")
            } else if matches!(buckets.group_by, Some(Dimension::Hashtag | Dimension::Author)) {
                Some("rollups do not group by hashtag or author")
            } else if !cells_hold(&buckets.filter) {
                Some("the filter reads a column rollups do not hold")
            } else {
                None
            },
        ),
        Plan::TopHashtags(top) => {
            (&top.filter, (!time_only(&top.filter)).then_some("hashtag rollups are filtered by time alone"))
        }
        Plan::TopAuthors(top) => {
            (&top.filter, (!time_only(&top.filter)).then_some("author rollups are filtered by time alone"))
        }
        Plan::Count(filter) => {
            (filter, (!cells_hold(filter)).then_some("the filter reads a column rollups do not hold"))
        }
        Plan::Trending(trend) => (
            &trend.filter,
            match trend.kind {
                TrendKind::Lang if !cells_hold(&trend.filter) => Some("the filter reads a column rollups do not hold"),
                TrendKind::Lang => None,
                _ if !time_only(&trend.filter) => Some("hashtag and domain rollups are filtered by time alone"),
                _ => None,
            },
        ),
        // Every day's posts per author, in memory.
        Plan::AuthorPosts(_) => return None,
        _ => return Some("no rollup holds this question"),
    };
    match filter.clock {
        Clock::IndexedAt => Some("rollups are by createdAt"),
        Clock::CreatedAt => refusal,
    }
}

/// Why time buckets of `plan.filter.authors` cannot be answered from the posts per author and
/// UTC day held in memory (and the posts they leave out), or `None` when they can: buckets of
/// whole UTC days, weeks or months, filtered by time and author alone, counting posts and
/// authors, grouped by author or not at all.
fn author_buckets_refusal(plan: &BucketsPlan) -> Option<&'static str> {
    let filter = &plan.filter;
    let authors_alone = filter.uris.is_empty()
        && filter.langs.is_empty()
        && filter.detected_langs.is_empty()
        && filter.text.is_empty()
        && filter.hashtags.is_empty()
        && filter.mentions.is_empty()
        && filter.is_reply.is_none()
        && filter.embed_types.is_empty();
    let utc = plan.offsets.initial_s == 0 && plan.offsets.changes.iter().all(|&(_, offset_s)| offset_s == 0);
    if !authors_alone {
        Some("the filter reads a column rollups do not hold")
    } else if !plan.interval.is_calendar() || !utc {
        Some("posts per author are counted by UTC day")
    } else if plan.measures.replies {
        Some("replies per author are counted from the posts")
    } else if !matches!(plan.group_by, None | Some(Dimension::Author)) {
        Some("posts per author and day are not grouped further")
    } else {
        None
    }
}

/// The columns of the cells that a statement filtering by `filter`, grouping by `group_by` and
/// counting replies or not reads: the time, and what the filter and the grouping name.
fn cell_columns(filter: &PostFilter, group_by: Option<Dimension>, replies: bool) -> Vec<&'static str> {
    let mut columns = vec!["created_at", "\"date\""];
    if !filter.langs.is_empty() || group_by == Some(Dimension::Lang) {
        columns.push("langs");
    }
    if !filter.embed_types.is_empty() || group_by == Some(Dimension::EmbedType) {
        columns.push("embed_type");
    }
    if filter.is_reply.is_some() || group_by == Some(Dimension::IsReply) || replies {
        columns.push("reply_parent");
    }
    columns
}

/// Whether the cells hold every column `filter` reads besides time.
fn cells_hold(filter: &PostFilter) -> bool {
    filter.uris.is_empty()
        && filter.authors.is_empty()
        && filter.detected_langs.is_empty()
        && filter.text.is_empty()
        && filter.hashtags.is_empty()
        && filter.mentions.is_empty()
}

/// Compiles `plan` to read rollups for the whole UTC hours of its range in the days `scope`
/// covers, and posts for the rest; `None` when the plan cannot be answered from rollups
/// ([`rollup_refusal`]) or its range holds no whole hour.
pub fn compile_rollup(plan: &Plan, scope: &RollupScope) -> Result<Option<Sql>> {
    if rollup_refusal(plan).is_some() {
        return Ok(None);
    }
    let filter = plan.filter().expect("rollup plans read posts");
    let Some(region) = Region::of(filter, HOUR_US, scope) else { return Ok(None) };
    let mut builder = Builder::default();
    match plan {
        // Of some authors: from the author counts (`compile_rollup_author_buckets`).
        Plan::Buckets(buckets) if !buckets.filter.authors.is_empty() => return Ok(None),
        Plan::Buckets(buckets) => builder.rollup_buckets(buckets, &region)?,
        // Their authors too: `compile_rollup_tag_authors` over these.
        Plan::TopHashtags(top) if top.count_authors => return Ok(None),
        Plan::Count(filter) => {
            builder.text.push_str("SELECT coalesce(sum(n), 0)::BIGINT AS n_posts FROM (\n");
            let columns = cell_columns(filter, None, false);
            builder.units(crate::rollup::Kind::Cells, &columns.join(", "), &region);
            builder.text.push_str("\n) AS posts");
            builder.where_clause(filter, None)?;
        }
        Plan::Trending(trend) => builder.rollup_trending(trend, scope)?,
        Plan::TopHashtags(top) => {
            builder.text.push_str("SELECT tag, sum(n)::BIGINT AS n_posts, 0::BIGINT AS n_authors FROM (\n");
            builder.tag_units_by_day(&region);
            builder.text.push_str("\n) AS posts");
            builder.where_clause(&top.filter, None)?;
            builder.text.push_str("\nGROUP BY tag\nHAVING sum(n) > 0\nORDER BY n_posts DESC, tag");
            builder.limit(top.limit);
        }
        _ => return Ok(None),
    }
    Ok(Some(Sql { text: builder.text, params: builder.params }))
}

/// How `topAuthors` is answered from rollups: the author counts of the whole UTC days from
/// `first_day` to `end_day` (exclusive; unbounded where `None`) that `scope` covers, plus the
/// posts per author that `rest` counts (the hot tier's there, every post of the other days and
/// of the range's uneven ends; `None` when there are none).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthorsFromRollups {
    pub first_day: Option<NaiveDate>,
    pub end_day: Option<NaiveDate>,
    pub rest: Option<Sql>,
}

/// [`AuthorsFromRollups`] for `plan`; `None` when it cannot be answered from rollups
/// ([`rollup_refusal`]) or its range holds no whole UTC day.
pub fn compile_rollup_authors(plan: &TopPlan, scope: &RollupScope) -> Result<Option<AuthorsFromRollups>> {
    if rollup_refusal(&Plan::TopAuthors(plan.clone())).is_some() {
        return Ok(None);
    }
    let Some(region) = Region::of(&plan.filter, DAY_US, scope) else { return Ok(None) };
    let mut builder = Builder::default();
    let units = builder.rows_outside("did, created_at, \"date\"", &region);
    let rest = if units.is_empty() {
        None
    } else {
        write!(builder.text, "SELECT did, count(*) AS n_posts FROM (\n{}\n) AS posts", units.join("\nUNION ALL "))
            .unwrap();
        builder.where_clause(&plan.filter, None)?;
        builder.text.push_str("\nGROUP BY did");
        Some(Sql { text: builder.text, params: builder.params })
    };
    Ok(Some(AuthorsFromRollups {
        first_day: region.start.map(date_of_micros),
        end_day: region.end.map(date_of_micros),
        rest,
    }))
}

/// Compiles `timeBuckets` of `plan.filter.authors` to count their posts per UTC day from
/// `days` (called with the whole UTC days of the range that `scope` covers, from the first to
/// the end, exclusive, unbounded where `None`; it returns the posts of each author and day
/// there, from the author counts) and the posts those days leave out row by row; `None` when
/// the plan cannot be answered so ([`rollup_refusal`]) or its range holds no whole UTC day.
pub fn compile_rollup_author_buckets(
    plan: &BucketsPlan,
    scope: &RollupScope,
    days: impl FnOnce(Option<NaiveDate>, Option<NaiveDate>) -> Vec<(String, NaiveDate, u64)>,
) -> Result<Option<Sql>> {
    if plan.filter.authors.is_empty() || rollup_refusal(&Plan::Buckets(plan.clone())).is_some() {
        return Ok(None);
    }
    let Some(region) = Region::of(&plan.filter, DAY_US, scope) else { return Ok(None) };
    let days = days(region.start.map(date_of_micros), region.end.map(date_of_micros));
    let mut builder = Builder::default();
    builder.author_buckets(plan, &region, &days)?;
    Ok(Some(Sql { text: builder.text, params: builder.params }))
}

/// What `topHashtags` with authors reads besides the rollups of tag authors, which the engine
/// counts itself: the whole UTC days of `filter`'s range those answer, from `first_day` to
/// `end_day` (exclusive, unbounded where `None`), in the days `scope` covers; and `rest`, rows
/// `(tag, did, n)` of `tags`: the dead rows of those days (`dead_tag_authors`, `n` negative)
/// and the live posts matching `filter` (time alone) outside them (`n` their number).
#[derive(Debug, Clone, PartialEq)]
pub struct TagAuthorsRest {
    pub first_day: Option<NaiveDate>,
    pub end_day: Option<NaiveDate>,
    pub rest: Sql,
}

/// [`TagAuthorsRest`] of `tags` over `filter`'s range; `None` when the range holds no whole UTC
/// day.
pub fn compile_rollup_tag_authors(
    filter: &PostFilter,
    tags: &[String],
    scope: &RollupScope,
) -> Result<Option<TagAuthorsRest>> {
    let Some(region) = Region::of(filter, DAY_US, scope) else { return Ok(None) };
    let mut builder = Builder::default();
    let listed = |builder: &mut Builder| builder.bind_list(tags.iter().map(|tag| Param::Text(tag.clone())));
    let days = builder.days_in_region(&region);
    let dead = listed(&mut builder);
    let mut units = vec![format!(
        "SELECT tag, did, CAST(\"date\" AS TIMESTAMP) AS created_at, \"date\", -n AS n FROM dead_tag_authors \
         WHERE {days} AND tag IN ({dead})"
    )];
    units.extend(
        builder.rows_outside("unnest(list_distinct(hashtags)) AS tag, did, created_at, \"date\", 1 AS n", &region),
    );
    write!(builder.text, "SELECT tag, did, sum(n)::BIGINT AS n FROM (\n{}\n) AS posts", units.join("\nUNION ALL "))
        .unwrap();
    let mut conditions = builder.conditions(filter, None)?;
    conditions.push(format!("tag IN ({})", listed(&mut builder)));
    write!(builder.text, "\nWHERE {}\nGROUP BY tag, did", conditions.join("\n  AND ")).unwrap();
    Ok(Some(TagAuthorsRest {
        first_day: region.start.map(date_of_micros),
        end_day: region.end.map(date_of_micros),
        rest: Sql { text: builder.text, params: builder.params },
    }))
}

/// Whether `filter`'s range holds a whole UTC day.
pub fn holds_a_whole_day(filter: &PostFilter) -> bool {
    Region::of(filter, DAY_US, &RollupScope::default()).is_some()
}

/// `(did, n_posts)`: the live posts of each of `dids` that the author counts of whole days leave
/// out (the hot tier's, those of the days `scope` leaves out); `None` when there are none.
pub fn compile_rollup_author_posts(dids: &[String], scope: &RollupScope) -> Result<Option<Sql>> {
    let everything = PostFilter::default();
    let Some(region) = Region::of(&everything, DAY_US, scope) else { return Ok(None) };
    let mut builder = Builder::default();
    let units = builder.rows_outside("did, created_at, \"date\"", &region);
    if units.is_empty() {
        return Ok(None);
    }
    write!(builder.text, "SELECT did, count(*) AS n_posts FROM (\n{}\n) AS posts", units.join("\nUNION ALL ")).unwrap();
    builder.where_clause(&PostFilter { authors: dids.to_vec(), ..everything }, None)?;
    builder.text.push_str("\nGROUP BY did");
    Ok(Some(Sql { text: builder.text, params: builder.params }))
}

/// The part of a plan's range that rollups answer: the whole UTC hours (or days) from `start`
/// to `end` (unbounded where the range is) in the days `scope` covers.
struct Region<'a> {
    since: Option<i64>,
    start: Option<i64>,
    end: Option<i64>,
    until: Option<i64>,
    scope: &'a RollupScope,
}

impl Region<'_> {
    /// The whole `grain_us` (an hour, a day) of `filter`'s range; `None` when it holds none.
    fn of<'a>(filter: &PostFilter, grain_us: i64, scope: &'a RollupScope) -> Option<Region<'a>> {
        let start = filter.since_us.map(|since| {
            let floor = since.div_euclid(grain_us) * grain_us;
            if floor < since { floor.saturating_add(grain_us) } else { floor }
        });
        let end = filter.until_us.map(|until| until.div_euclid(grain_us) * grain_us);
        if let (Some(start), Some(end)) = (start, end)
            && start >= end
        {
            return None;
        }
        Some(Region { since: filter.since_us, start, end, until: filter.until_us, scope })
    }
}

/// The posts whose engagement a statement counts.
#[derive(Clone, Copy)]
enum Subjects<'a> {
    /// These, by uri.
    Uris(&'a [String]),
    /// Those whose record key is within a range, a relation `(lo, hi)` ([`Builder::window_keys`]:
    /// SQL whose parameters are already bound, and come first): likes and reposts only.
    KeysOf(&'a str),
    /// Every post.
    All,
}

#[derive(Default)]
struct Builder {
    text: String,
    params: Vec<Param>,
}

impl Builder {
    fn bind(&mut self, param: Param) -> &'static str {
        self.params.push(param);
        "?"
    }

    /// `(?, ?, ?)` with one parameter per value.
    fn bind_list(&mut self, values: impl IntoIterator<Item = Param>) -> String {
        let placeholders: Vec<&str> = values.into_iter().map(|v| self.bind(v)).collect();
        placeholders.join(", ")
    }

    /// `(uri, n)` for the posts of `plan` that got any. The caller keeps the uris it asked for.
    fn engagement(&mut self, plan: &EngagementPlan) {
        let counts = self.engagement_counts(plan.engagement, plan.since_us, Subjects::Uris(&plan.uris));
        self.text.push_str(&counts);
    }

    /// `SELECT subject, n`: how much of `engagement` each of `subjects` got (`subject_did,
    /// subject_rkey, n` for likes and reposts of [`Subjects::KeysOf`]), from rows since
    /// `since_us`: likes and reposts of its day on, replies and quotes created since.
    ///
    /// Likes and reposts are counted from `interaction_counts` (the files' rollups of subjects,
    /// less the rows undone since: `exec`'s `undone`), looked for by their subject's record key
    /// (a post's is unique to its author, nearly always unique overall), by which the rollups
    /// are sorted: by a list of them, or by the range of a window's posts' keys, which reads
    /// only the row groups that can hold them (record keys grow with time, so a day's posts
    /// span a day's). Both were measured at the week tier: a semi-join with the window's posts,
    /// which DuckDB also turns into a key range, built a hash of a week's 21 M posts and was
    /// slower than no narrowing at all.
    fn engagement_counts(&mut self, engagement: Engagement, since_us: i64, subjects: Subjects) -> String {
        if let Some(kind) = engagement.interaction_kind() {
            let first_day = self.bind(Param::Date(date_of_micros(since_us)));
            let kind = self.bind(Param::Text(kind.as_str().to_owned()));
            let Subjects::Uris(uris) = subjects else {
                let window = match subjects {
                    Subjects::KeysOf(range) => {
                        format!(" CROSS JOIN {range} AS w\nWHERE r.subject_rkey BETWEEN w.lo AND w.hi AND")
                    }
                    _ => "\nWHERE".to_owned(),
                };
                return format!(
                    "SELECT r.subject_did, r.subject_rkey, sum(r.n)::BIGINT AS n\nFROM interaction_counts AS r{window} \
                     r.\"date\" >= {first_day} AND r.kind = {kind}\n\
                     GROUP BY r.subject_did, r.subject_rkey HAVING sum(r.n) > 0"
                );
            };
            let rkeys = uris.iter().filter_map(|uri| crate::model::post_uri_parts(uri)).map(|(_, rkey)| rkey);
            let rkeys = self.bind_list_or_null(rkeys.map(|rkey| Param::Text(rkey.to_owned())));
            format!(
                "SELECT 'at://' || subject_did || '/app.bsky.feed.post/' || subject_rkey AS subject, sum(n)::BIGINT AS n\n\
                 FROM interaction_counts\nWHERE \"date\" >= {first_day} AND kind = {kind} \
                 AND subject_rkey IN ({rkeys})\nGROUP BY subject_did, subject_rkey HAVING sum(n) > 0"
            )
        } else {
            let since = self.bind(Param::Timestamp(since_us));
            let first_day = self.bind(Param::Date(date_of_micros(since_us)));
            let column = engagement.post_column();
            let narrowed = match subjects {
                Subjects::Uris(uris) => format!(
                    " AND {column} IN ({})",
                    self.bind_list_or_null(uris.iter().map(|uri| Param::Text(uri.clone())))
                ),
                _ => format!(" AND {column} IS NOT NULL"),
            };
            format!(
                "SELECT {column} AS subject, count(*) AS n\nFROM posts\nWHERE created_at >= {since} \
                 AND \"date\" >= {first_day}{narrowed}\nGROUP BY {column}"
            )
        }
    }

    /// `(did, engagement, n)`: how much of each of `engagements` ([`Engagement::as_str`]) the
    /// live posts of each of `dids` got, in all (the sums of their counts). The authors' posts'
    /// keys (`post_keys`: the live posts' `did, rkey, uri`) are read once, for every engagement.
    fn received(&mut self, engagements: &[Engagement], dids: &[String]) {
        let dids = || dids.iter().map(|did| Param::Text(did.clone()));
        let theirs = self.bind_list_or_null(dids());
        let mut parts = Vec::new();
        // Likes and reposts in one read of the counts by author, semi-joined with the posts.
        // The counts are first narrowed to the accounts' by a list, which the rollups' row
        // groups narrow before any join: a busy author's posts span every key range.
        let kinds: Vec<Param> = engagements
            .iter()
            .filter_map(|e| e.interaction_kind())
            .map(|k| Param::Text(k.as_str().to_owned()))
            .collect();
        if !kinds.is_empty() {
            let kinds = self.bind_list(kinds);
            let listed = self.bind_list_or_null(dids());
            parts.push(format!(
                "SELECT i.subject_did AS did, i.kind AS what, sum(i.n)::BIGINT AS n\n\
                 FROM interaction_received AS i SEMI JOIN theirs AS p ON p.did = i.subject_did AND p.rkey = i.subject_rkey\n\
                 WHERE i.kind IN ({kinds}) AND i.subject_did IN ({listed})\n\
                 GROUP BY i.subject_did, i.kind HAVING sum(i.n) > 0"
            ));
        }
        for engagement in engagements.iter().filter(|e| e.interaction_kind().is_none()) {
            let column = engagement.post_column();
            let what = self.bind(Param::Text(engagement.as_str().to_owned()));
            parts.push(format!(
                "SELECT p.did, {what} AS what, count(*) AS n\nFROM theirs AS p\n\
                 JOIN (SELECT {column} AS subject FROM posts WHERE {column} IS NOT NULL) AS r ON r.subject = p.uri\n\
                 GROUP BY p.did"
            ));
        }
        // Their uris only for replies and quotes, which name posts by it: without rollups, a
        // column of every row group read (a busy author's posts are in all of them).
        let uri = if engagements.iter().any(|e| e.interaction_kind().is_none()) { ", uri" } else { "" };
        write!(
            self.text,
            "WITH theirs AS MATERIALIZED (SELECT did, rkey{uri} FROM post_keys WHERE did IN ({theirs}))\n{}",
            parts.join("\nUNION ALL\n")
        )
        .unwrap();
    }

    /// A page of posts ranked by engagement: the plan's columns, then the count. Likes and
    /// reposts are counted for the posts in the key range of the window's (those of the filter).
    fn ranked_posts(&mut self, plan: &RankedPostsPlan) -> Result<()> {
        let since_us = plan.filter.since_us.unwrap_or_default().saturating_sub(EngagementPlan::SKEW_MARGIN_US);
        if let (Some(candidates), Some(kind)) = (plan.candidates, plan.engagement.interaction_kind()) {
            return self.ranked_candidates(plan, since_us, candidates, kind);
        }
        let counts = if plan.engagement.interaction_kind().is_some() {
            let range = self.window_keys(&plan.filter)?;
            self.engagement_counts(plan.engagement, since_us, Subjects::KeysOf(&range))
        } else {
            // Replies and quotes name their subject by uri: cut into the DID and key the posts
            // store, where it is a post's uri, rather than making every post's.
            let counts = self.engagement_counts(plan.engagement, since_us, Subjects::All);
            let (did, rkey) = ("split_part(subject, '/', 3)", "split_part(subject, '/', 5)");
            format!(
                "SELECT {did} AS subject_did, {rkey} AS subject_rkey, n FROM ({counts})\n\
                 WHERE subject = 'at://' || {did} || '/app.bsky.feed.post/' || {rkey}"
            )
        };
        let on = "c.subject_did = p.did AND c.subject_rkey = p.rkey";
        let columns: Vec<String> = plan.columns.iter().map(|c| format!("p.{}", c.name())).collect();
        write!(
            self.text,
            "SELECT {}, coalesce(c.n, 0) AS rank_n\nFROM posts AS p LEFT JOIN ({counts}) AS c ON {on}",
            columns.join(", ")
        )
        .unwrap();
        // The filter's columns are the posts': the counts are named apart.
        let mut conditions = self.conditions(&plan.filter, None)?;
        if let Some(after) = &plan.after {
            conditions.push(self.after_rank(after, "coalesce(c.n, 0)", ("p.did", "p.rkey")));
        }
        if !conditions.is_empty() {
            write!(self.text, "\nWHERE {}", conditions.join("\n  AND ")).unwrap();
        }
        self.text.push_str("\nORDER BY rank_n DESC, p.did, p.rkey");
        self.limit(plan.limit);
        Ok(())
    }

    /// The rows of a ranking (by `count` then the post's DID and key, the columns `key`) after
    /// the cursor's.
    fn after_rank(&mut self, after: &RankKeyset, count: &str, key: (&str, &str)) -> String {
        let after_count = i64::try_from(after.count).unwrap_or(i64::MAX);
        let [below, equal] = [after_count, after_count].map(|n| self.bind(Param::Int(n)));
        let after_key = self.after_key(&after.uri, ">", key.0, key.1);
        format!("({count} < {below} OR ({count} = {equal} AND {after_key}))")
    }

    /// The posts whose DID and key (the columns `did` and `rkey`) come after (`op` `>`) or
    /// before (`<`) those of the post `uri`, in the order of [`crate::model::post_order_key`].
    fn after_key(&mut self, uri: &str, op: &str, did: &str, rkey: &str) -> String {
        let (after_did, after_rkey) = crate::model::post_order_key(uri);
        let [after_did, after_did_again] = [after_did, after_did].map(|d| self.bind(Param::Text(d.to_owned())));
        let after_rkey = self.bind(Param::Text(after_rkey.to_owned()));
        format!("({did} {op} {after_did} OR ({did} = {after_did_again} AND {rkey} {op} {after_rkey}))")
    }

    /// `(lo, hi)`: a range that holds the record key of every post in `filter`'s time window
    /// (keys grow with time, so a day's posts span about a day's), from the statistics of the
    /// stored files' row groups (`post_key_ranges`, kept by the engine) whose times meet the
    /// window, and the hot tier's posts; every key when a row group has no statistics. Reading
    /// the keys of a week's posts for their range took 1.1 s; this reads a row per row group.
    fn window_keys(&mut self, filter: &PostFilter) -> Result<String> {
        let hot = |builder: &mut Self| -> Result<String> {
            Ok(format!("FROM hot_live WHERE {}", builder.conditions(filter, None)?.join(" AND ")))
        };
        let (lowest, highest) = (hot(self)?, hot(self)?);
        let clock = filter.clock.column();
        // A microsecond wider each way: statistics of a coarser unit may be rounded.
        let mut meets = Vec::new();
        if let Some(since) = filter.since_us {
            let since = self.bind(Param::Int(since.saturating_sub(1)));
            meets.push(format!("(k.{clock}_hi IS NULL OR k.{clock}_hi >= {since})"));
        }
        if let Some(until) = filter.until_us {
            let until = self.bind(Param::Int(until.saturating_add(1)));
            meets.push(format!("(k.{clock}_lo IS NULL OR k.{clock}_lo < {until})"));
        }
        let meets = if meets.is_empty() { String::new() } else { format!(" WHERE {}", meets.join(" AND ")) };
        Ok(format!(
            "(SELECT CASE WHEN bool_or(k.rkey_lo IS NULL) THEN '' \
             ELSE least(min(k.rkey_lo), (SELECT min(rkey) {lowest})) END AS lo, \
             CASE WHEN bool_or(k.rkey_hi IS NULL) THEN chr(1114111) \
             ELSE greatest(max(k.rkey_hi), (SELECT max(rkey) {highest})) END AS hi\n\
             FROM post_key_ranges AS k{meets})"
        ))
    }

    /// The first `candidates` of the posts counted the most, after the cursor and in the
    /// ranking's order ([`RankedPostsPlan::candidates`]): `(subject_did, subject_rkey, n,
    /// beyond)`, without reading the posts (21 M in a week) or summing every count by post.
    ///
    /// A post is a candidate when one of its rows (in `interaction_counts`, one per source of
    /// `interaction_sources`: a file's rollup, a day of rows) reaches `t`: the `candidates`-th
    /// largest row over the number of sources `s`. Any other post has at most `beyond`, that
    /// is `s × (t − 1)`, less than that row, so a page whose last count is above it is exact.
    /// The window's posts narrow the rows by the range of their record keys only: the engine
    /// fetches the candidates' posts, with the filter, and checks the rest.
    fn ranked_candidates(
        &mut self,
        plan: &RankedPostsPlan,
        since_us: i64,
        candidates: u32,
        kind: InteractionKind,
    ) -> Result<()> {
        let range = self.window_keys(&plan.filter)?;
        // Bound in the order the statement names them.
        let first_day = self.bind(Param::Date(date_of_micros(since_us)));
        let kind = self.bind(Param::Text(kind.as_str().to_owned()));
        let sources_day = self.bind(Param::Date(date_of_micros(since_us)));
        let most = self.bind(Param::Int(i64::from(candidates)));
        write!(
            self.text,
            "WITH rows AS MATERIALIZED (SELECT r.subject_did, r.subject_rkey, r.n FROM interaction_counts AS r \
             CROSS JOIN {range} AS w\n\
             WHERE r.subject_rkey BETWEEN w.lo AND w.hi AND r.\"date\" >= {first_day} AND r.kind = {kind}),\n\
             sources AS (SELECT greatest(count(*), 1) AS s FROM interaction_sources WHERE \"date\" >= {sources_day}),\n\
             floor AS (SELECT greatest(coalesce(min(n), 1) // (SELECT s FROM sources), 1) AS t \
             FROM (SELECT n FROM rows ORDER BY n DESC LIMIT {most})),\n\
             counts AS (SELECT subject_did, subject_rkey, sum(n)::BIGINT AS n FROM rows \
             WHERE (subject_did, subject_rkey) IN (SELECT subject_did, subject_rkey FROM rows, floor WHERE n >= t)\n\
             GROUP BY subject_did, subject_rkey HAVING sum(n) > 0)\n\
             SELECT subject_did, subject_rkey, n, (SELECT s * (t - 1) FROM sources, floor) AS beyond\nFROM counts"
        )
        .unwrap();
        if let Some(after) = &plan.after {
            let after = self.after_rank(after, "n", ("subject_did", "subject_rkey"));
            write!(self.text, "\nWHERE {after}").unwrap();
        }
        self.text.push_str("\nORDER BY n DESC, subject_did, subject_rkey");
        self.limit(candidates);
        Ok(())
    }

    /// `(item, posts in the window, in the baseline, expected, ratio, z)`, best first.
    fn trending(&mut self, plan: &TrendPlan) -> Result<()> {
        let clock = plan.filter.clock.column();
        let item = match plan.kind {
            TrendKind::Hashtag => "unnest(list_distinct(hashtags))".to_owned(),
            TrendKind::Lang => format!("unnest({LANG_ITEMS})"),
            TrendKind::LinkDomain => format!("unnest({})", crate::rollup::link_domains("")),
        };
        self.trend_scores(plan);
        let (window, baseline) = (plan.window, plan.baseline);
        let [ws, wu, bs, bu] = [window.0, window.1, baseline.0, baseline.1].map(|t| self.bind(Param::Timestamp(t)));
        write!(
            self.text,
            "SELECT item, count(*) FILTER (WHERE t >= {ws} AND t < {wu}) AS n_window, \
             count(*) FILTER (WHERE t >= {bs} AND t < {bu}) AS n_baseline\nFROM (\
             SELECT {clock} AS t, {item} AS item FROM posts"
        )
        .unwrap();
        self.where_clause(&plan.filter, None)?;
        self.text.push_str(")\nWHERE item IS NOT NULL AND item <> ''\nGROUP BY item");
        self.trend_ranking(plan);
        Ok(())
    }

    /// [`Builder::trending`] from the rollups: each range's items counted from the units of
    /// their rollup (hashtags from the tag rollups, link domains from the domain rollups,
    /// languages from the cells' `langs`), its whole hours from the rollups and the rest from
    /// the posts, or from the posts alone when it holds no whole hour.
    fn rollup_trending(&mut self, plan: &TrendPlan, scope: &RollupScope) -> Result<()> {
        use crate::rollup::Kind;
        let (kind, columns, item) = match plan.kind {
            TrendKind::Hashtag => (Kind::Tags, String::new(), "tag".to_owned()),
            TrendKind::LinkDomain => (Kind::Domains, String::new(), "domain".to_owned()),
            TrendKind::Lang => {
                // The cells' columns that the item and the filter read.
                let mut columns = vec!["created_at", "\"date\"", "langs"];
                if !plan.filter.embed_types.is_empty() {
                    columns.push("embed_type");
                }
                if plan.filter.is_reply.is_some() {
                    columns.push("reply_parent");
                }
                (Kind::Cells, columns.join(", "), format!("unnest({LANG_ITEMS})"))
            }
        };
        self.trend_scores(plan);
        self.text.push_str(
            "SELECT item, coalesce(sum(n) FILTER (WHERE part = 0), 0)::BIGINT AS n_window, \
             coalesce(sum(n) FILTER (WHERE part = 1), 0)::BIGINT AS n_baseline\nFROM (",
        );
        for (part, (since_us, until_us)) in [plan.window, plan.baseline].into_iter().enumerate() {
            if part > 0 {
                self.text.push_str("\nUNION ALL ");
            }
            let filter = PostFilter { since_us: Some(since_us), until_us: Some(until_us), ..plan.filter.clone() };
            writeln!(self.text, "SELECT {part} AS part, {item} AS item, n FROM (").unwrap();
            match Region::of(&filter, HOUR_US, scope) {
                Some(region) => self.units(kind, &columns, &region),
                None => {
                    let rows = Self::unit_columns(kind, &columns).1;
                    write!(self.text, "SELECT {rows}, 1 AS n FROM posts").unwrap();
                }
            }
            self.text.push_str("\n) AS posts");
            self.where_clause(&filter, None)?;
        }
        self.text.push_str(")\nWHERE item IS NOT NULL AND item <> ''\nGROUP BY item");
        self.trend_ranking(plan);
        Ok(())
    }

    /// The head of a trending statement, to the relation of `(item, n_window, n_baseline)`.
    fn trend_scores(&mut self, plan: &TrendPlan) {
        let (window, baseline) = (plan.window, plan.baseline);
        let [window_len, baseline_len] =
            [window.1 - window.0, baseline.1 - baseline.0].map(|len| self.bind(Param::Int(len)));
        write!(
            self.text,
            "SELECT item, n_window, n_baseline, expected, (n_window + 1) / (expected + 1) AS ratio, \
             (n_window - expected) / sqrt(expected + 1) AS z\nFROM (\
             SELECT item, n_window, n_baseline, \
             n_baseline * CAST({window_len} AS DOUBLE) / CAST({baseline_len} AS DOUBLE) AS expected\nFROM ("
        )
        .unwrap();
    }

    /// The tail of a trending statement: the support threshold, the order and the limit.
    fn trend_ranking(&mut self, plan: &TrendPlan) {
        let min_posts = self.bind(Param::Int(i64::from(plan.min_posts.max(1))));
        let order = match plan.rank {
            TrendRank::Ratio => "ratio DESC, n_window DESC",
            TrendRank::ZScore => "z DESC, n_window DESC",
        };
        write!(self.text, ")\nWHERE n_window >= {min_posts})\nORDER BY {order}, item").unwrap();
        self.limit(plan.limit);
    }

    /// [`Builder::bind_list`], or `NULL` for no values (`x IN (NULL)` holds for no row).
    fn bind_list_or_null(&mut self, values: impl IntoIterator<Item = Param>) -> String {
        let list = self.bind_list(values);
        if list.is_empty() { "NULL".to_owned() } else { list }
    }

    fn limit(&mut self, limit: u32) {
        let limit = self.bind(Param::Int(i64::from(limit)));
        write!(self.text, "\nLIMIT {limit}").unwrap();
    }

    fn direction(order: PostOrder) -> &'static str {
        match order {
            PostOrder::Newest => "DESC",
            PostOrder::Oldest => "ASC",
        }
    }

    fn posts(&mut self, plan: &PostsPlan) -> Result<()> {
        let columns: Vec<&str> = plan.columns.iter().map(|c| c.name()).collect();
        write!(self.text, "SELECT {} FROM posts", columns.join(", ")).unwrap();
        let keyset = plan.after.as_ref().map(|k| (k, plan.order));
        self.where_clause(&plan.filter, keyset)?;
        // Copies of a post are neighbours in this order; `exec` skips them.
        // A post's uri is made of its DID and record key (see `crate::model::post_order_key`).
        let direction = Self::direction(plan.order);
        write!(self.text, "\nORDER BY created_at {direction}, did {direction}, rkey {direction}").unwrap();
        self.limit(plan.limit);
        Ok(())
    }

    /// Each author's first `limit` rows.
    fn posts_per_author(&mut self, plan: &PostsPlan) -> Result<()> {
        let mut columns: Vec<&str> = plan.columns.iter().map(|c| c.name()).collect();
        if !plan.columns.contains(&PostColumn::Did) {
            columns.push(PostColumn::Did.name());
        }
        let columns = columns.join(", ");
        write!(self.text, "SELECT {columns} FROM posts").unwrap();
        self.where_clause(&plan.filter, None)?;
        let direction = Self::direction(plan.order);
        let limit = self.bind(Param::Int(i64::from(plan.limit)));
        write!(
            self.text,
            "\nQUALIFY row_number() OVER (PARTITION BY did ORDER BY created_at {direction}, rkey {direction}) <= {limit}\n\
             ORDER BY did, created_at {direction}, rkey {direction}"
        )
        .unwrap();
        Ok(())
    }

    /// Counts per (bucket, group). The bucket is computed from the clock shifted by the zone's
    /// offset at that instant (see [`crate::zone`]): a local calendar start (zone-less) for
    /// DAY, WEEK and MONTH, the UTC start for MINUTE and HOUR.
    fn buckets(&mut self, plan: &BucketsPlan) -> Result<()> {
        let clock = plan.filter.clock.column();
        let unit = plan.interval.unit();
        let offset = self.offset_expression(clock, &plan.offsets);
        let group = group_expression(plan.group_by);
        let bucket = bucket_expression(plan.interval.is_calendar(), unit);
        let authors = if plan.measures.authors { "count(DISTINCT did)" } else { "0::BIGINT" };
        let replies = if plan.measures.replies { "count(*) FILTER (WHERE is_reply)" } else { "0::BIGINT" };
        write!(
            self.text,
            "SELECT bucket, grp, count(*) AS n_posts, {authors} AS n_authors,\n  \
             {replies} AS n_replies\n\
             FROM (\nSELECT {bucket} AS bucket, grp, did, is_reply FROM (\n\
             SELECT {clock} AS t, {offset} AS off, {group} AS grp, did, reply_parent IS NOT NULL AS is_reply \
             FROM posts"
        )
        .unwrap();
        self.where_clause(&plan.filter, None)?;
        self.text.push_str("))\nGROUP BY bucket, grp\nORDER BY bucket, grp NULLS LAST");
        Ok(())
    }

    /// [`Self::buckets`] over rollup units weighted by `n` (see [`Self::units`]).
    fn rollup_buckets(&mut self, plan: &BucketsPlan, region: &Region<'_>) -> Result<()> {
        let unit = plan.interval.unit();
        let offset = self.offset_expression("created_at", &plan.offsets);
        let group = group_expression(plan.group_by);
        let bucket = bucket_expression(plan.interval.is_calendar(), unit);
        let columns = cell_columns(&plan.filter, plan.group_by, plan.measures.replies);
        let reads_replies = columns.contains(&"reply_parent");
        let is_reply = if reads_replies { "reply_parent IS NOT NULL" } else { "false" };
        let replies =
            if plan.measures.replies { "coalesce(sum(n) FILTER (WHERE is_reply), 0)::BIGINT" } else { "0::BIGINT" };
        write!(
            self.text,
            "SELECT bucket, grp, sum(n)::BIGINT AS n_posts, 0::BIGINT AS n_authors,\n  {replies} AS n_replies\n\
             FROM (\nSELECT {bucket} AS bucket, grp, n, is_reply FROM (\n\
             SELECT created_at AS t, {offset} AS off, {group} AS grp, n, {is_reply} AS is_reply FROM (\n"
        )
        .unwrap();
        self.units(crate::rollup::Kind::Cells, &columns.join(", "), region);
        self.text.push_str("\n) AS posts");
        self.where_clause(&plan.filter, None)?;
        self.text.push_str("))\nGROUP BY bucket, grp\nHAVING sum(n) > 0\nORDER BY bucket, grp NULLS LAST");
        Ok(())
    }

    /// [`Self::buckets`] of some authors over their posts per day `days` (`(did, day, posts)`)
    /// and the posts outside them, each weighted by `n`.
    fn author_buckets(
        &mut self,
        plan: &BucketsPlan,
        region: &Region<'_>,
        days: &[(String, NaiveDate, u64)],
    ) -> Result<()> {
        let offset = self.offset_expression("created_at", &plan.offsets);
        let group = group_expression(plan.group_by);
        let bucket = bucket_expression(plan.interval.is_calendar(), plan.interval.unit());
        let authors = if plan.measures.authors { "count(DISTINCT did)" } else { "0::BIGINT" };
        write!(
            self.text,
            "SELECT bucket, grp, sum(n)::BIGINT AS n_posts, {authors} AS n_authors, 0::BIGINT AS n_replies\n\
             FROM (\nSELECT {bucket} AS bucket, grp, did, n FROM (\n\
             SELECT created_at AS t, {offset} AS off, {group} AS grp, did, n FROM (\n"
        )
        .unwrap();
        let mut units = Vec::new();
        if !days.is_empty() {
            let rows = vec!["(?, ?::DATE, ?::BIGINT)"; days.len()].join(", ");
            for (did, day, n) in days {
                self.params.push(Param::Text(did.clone()));
                self.params.push(Param::Date(*day));
                self.params.push(Param::Int(i64::try_from(*n).unwrap_or(i64::MAX)));
            }
            units.push(format!(
                "SELECT did, CAST(\"date\" AS TIMESTAMP) AS created_at, \"date\", n FROM (VALUES {rows}) AS days(did, \"date\", n)"
            ));
        }
        units.extend(self.rows_outside("did, created_at, \"date\", 1 AS n", region));
        if units.is_empty() {
            units.push(
                "SELECT NULL::VARCHAR AS did, NULL::TIMESTAMP AS created_at, NULL::DATE AS \"date\", 0::BIGINT AS n WHERE false"
                    .to_owned(),
            );
        }
        self.text.push_str(&units.join("\nUNION ALL "));
        self.text.push_str("\n) AS posts");
        self.where_clause(&plan.filter, None)?;
        self.text.push_str("))\nGROUP BY bucket, grp\nHAVING sum(n) > 0\nORDER BY bucket, grp NULLS LAST");
        Ok(())
    }

    /// The units a rollup statement counts, each with its weight `n`: the live cells (or tag
    /// counts) of the region's hours (`rollup_*_live`: the files' less the dead rows'), plus the
    /// hot tier's posts there, plus every live post outside the region, one by one.
    ///
    /// Cells carry `columns` (what the statement reads besides `n`), summed over the others
    /// first: fewer rows for the groupings to work through. Tag and domain counts are read as
    /// they are: their tables hold one row an hour and value already, and summing them again
    /// found nothing to merge (a month of a long tail of hashtags, 4.2 M rows: 700 ms).
    fn units(&mut self, kind: crate::rollup::Kind, columns: &str, region: &Region<'_>) {
        let (stored, rows, table) = Self::unit_columns(kind, columns);
        let inside = self.in_region(region);
        let stored = match kind {
            crate::rollup::Kind::Cells => {
                format!("SELECT {stored}, sum(n)::BIGINT AS n FROM {table} WHERE {inside} GROUP BY ALL")
            }
            _ => format!("SELECT {stored}, n FROM {table} WHERE {inside}"),
        };
        let mut units = vec![stored];
        units.extend(self.rows_outside(&format!("{rows}, 1 AS n"), region));
        self.text.push_str(&units.join("\nUNION ALL "));
    }

    /// [`Self::units`] of tag counts, for `topHashtags`: the region's whole UTC days read from
    /// the counts per day (`rollup_tags_daily_live`), its hours outside them from those per
    /// hour. A month of a long tail of hashtags holds 4.2 M rows by hour and 0.6 M by day:
    /// summed by tag, 57 to 70 ms against 12 (DuckDB, 2026-12-03).
    fn tag_units_by_day(&mut self, region: &Region<'_>) {
        let whole = PostFilter { since_us: region.start, until_us: region.end, ..PostFilter::default() };
        let Some(days) = Region::of(&whole, DAY_US, region.scope) else {
            self.units(crate::rollup::Kind::Tags, "", region);
            return;
        };
        let in_days = self.days_in_region(&days);
        let mut units = vec![format!(
            "SELECT CAST(\"date\" AS TIMESTAMP) AS created_at, \"date\", tag, n FROM rollup_tags_daily_live \
             WHERE {in_days}"
        )];
        for (from, to) in [(region.start, days.start), (days.end, region.end)] {
            let (Some(from), Some(to)) = (from, to) else { continue };
            if from >= to {
                continue;
            }
            let (from, to) = (self.bind(Param::Timestamp(from)), self.bind(Param::Timestamp(to)));
            let rolled = self.not_unrolled(region);
            units.push(format!(
                "SELECT created_at, \"date\", tag, n FROM rollup_tags_live \
                 WHERE created_at >= {from} AND created_at < {to}{rolled}"
            ));
        }
        units.extend(self.rows_outside("created_at, \"date\", unnest(list_distinct(hashtags)) AS tag, 1 AS n", region));
        self.text.push_str(&units.join("\nUNION ALL "));
    }

    /// What the units of rollup `kind` hold besides `n`: (the columns of its live table, the
    /// same from a post, the table). Cells hold `columns`.
    fn unit_columns(kind: crate::rollup::Kind, columns: &str) -> (String, String, &'static str) {
        use crate::rollup::Kind;
        match kind {
            Kind::Cells => (columns.to_owned(), columns.to_owned(), "rollup_cells_live"),
            Kind::Tags => (
                "created_at, \"date\", tag".to_owned(),
                "created_at, \"date\", unnest(list_distinct(hashtags)) AS tag".to_owned(),
                "rollup_tags_live",
            ),
            Kind::Domains => (
                "created_at, \"date\", domain".to_owned(),
                format!("created_at, \"date\", unnest({}) AS domain", crate::rollup::link_domains("")),
                "rollup_domains_live",
            ),
            Kind::Authors => unreachable!("author counts are held in memory, not in a table"),
            Kind::Keys => unreachable!("keys are read through `post_keys`, not counted by hour"),
            Kind::TagAuthors => unreachable!("a tag's authors are counted by the engine from their rollups"),
            Kind::Subjects | Kind::Received => unreachable!("a rollup of likes, not of posts"),
        }
    }

    /// The statements that select `rows` of every live post a rollup does not count: the hot
    /// tier's in the region, every one of the days `scope` leaves out, and those of the
    /// range's uneven ends in the days it covers.
    fn rows_outside(&mut self, rows: &str, region: &Region<'_>) -> Vec<String> {
        let mut units = Vec::new();
        if region.scope.hot {
            let inside = self.in_region(region);
            units.push(format!("SELECT {rows} FROM hot_live WHERE {inside}"));
        }
        if !region.scope.unrolled.is_empty() {
            let list = self.bind_list(region.scope.unrolled.iter().map(|d| Param::Date(*d)));
            units.push(format!("SELECT {rows} FROM posts WHERE \"date\" IN ({list})"));
        }
        let ends = [(region.since, region.start), (region.end, region.until)];
        for (from, to) in ends {
            let (Some(from), Some(to)) = (from, to) else { continue };
            if from >= to {
                continue;
            }
            let first_day = self.bind(Param::Date(date_of_micros(from)));
            let last_day = self.bind(Param::Date(date_of_micros(to - 1)));
            let since = self.bind(Param::Timestamp(from));
            let until = self.bind(Param::Timestamp(to));
            let rolled = self.not_unrolled(region);
            units.push(format!(
                "SELECT {rows} FROM posts WHERE \"date\" >= {first_day} AND \"date\" <= {last_day} \
                 AND created_at >= {since} AND created_at < {until}{rolled}"
            ));
        }
        units
    }

    /// The condition that a unit lies in the region.
    fn in_region(&mut self, region: &Region<'_>) -> String {
        let mut conditions = Vec::new();
        if let Some(start) = region.start {
            conditions.push(format!("created_at >= {}", self.bind(Param::Timestamp(start))));
        }
        if let Some(end) = region.end {
            conditions.push(format!("created_at < {}", self.bind(Param::Timestamp(end))));
        }
        if conditions.is_empty() {
            conditions.push("true".to_owned());
        }
        format!("{}{}", conditions.join(" AND "), self.not_unrolled(region))
    }

    /// The condition that a unit of a whole day (by its `"date"`) lies in the region.
    fn days_in_region(&mut self, region: &Region<'_>) -> String {
        let mut conditions = Vec::new();
        if let Some(start) = region.start {
            conditions.push(format!("\"date\" >= {}", self.bind(Param::Date(date_of_micros(start)))));
        }
        if let Some(end) = region.end {
            conditions.push(format!("\"date\" < {}", self.bind(Param::Date(date_of_micros(end)))));
        }
        if conditions.is_empty() {
            conditions.push("true".to_owned());
        }
        format!("{}{}", conditions.join(" AND "), self.not_unrolled(region))
    }

    /// ` AND "date" NOT IN (…)` for the days `scope` leaves out, if any.
    fn not_unrolled(&mut self, region: &Region<'_>) -> String {
        if region.scope.unrolled.is_empty() {
            return String::new();
        }
        let list = self.bind_list(region.scope.unrolled.iter().map(|d| Param::Date(*d)));
        format!(" AND \"date\" NOT IN ({list})")
    }

    /// The zone's offset in seconds at `clock`, as a `CASE` over its changes.
    fn offset_expression(&mut self, clock: &str, offsets: &Offsets) -> String {
        if offsets.changes.is_empty() {
            return format!("{}::BIGINT", self.bind(Param::Int(i64::from(offsets.initial_s))));
        }
        let mut expression = String::from("CASE");
        let mut before = offsets.initial_s;
        for (at_us, offset_s) in &offsets.changes {
            let at = self.bind(Param::Timestamp(*at_us));
            let value = self.bind(Param::Int(i64::from(before)));
            write!(expression, " WHEN {clock} < {at} THEN {value}::BIGINT").unwrap();
            before = *offset_s;
        }
        let last = self.bind(Param::Int(i64::from(before)));
        write!(expression, " ELSE {last}::BIGINT END").unwrap();
        expression
    }

    fn where_clause(&mut self, filter: &PostFilter, keyset: Option<(&Keyset, PostOrder)>) -> Result<()> {
        let conditions = self.conditions(filter, keyset)?;
        if !conditions.is_empty() {
            write!(self.text, "\nWHERE {}", conditions.join("\n  AND ")).unwrap();
        }
        Ok(())
    }

    fn conditions(&mut self, filter: &PostFilter, keyset: Option<(&Keyset, PostOrder)>) -> Result<Vec<String>> {
        let mut conditions: Vec<String> = Vec::new();

        // Partition pruning first.
        let (first_day, last_day) = partition_days(filter, keyset);
        if let Some(day) = first_day {
            conditions.push(format!("\"date\" >= {}", self.bind(Param::Date(day))));
        }
        if let Some(day) = last_day {
            conditions.push(format!("\"date\" <= {}", self.bind(Param::Date(day))));
        }
        let clock = filter.clock.column();
        if let Some(since) = filter.since_us {
            conditions.push(format!("{clock} >= {}", self.bind(Param::Timestamp(since))));
        }
        if let Some(until) = filter.until_us {
            conditions.push(format!("{clock} < {}", self.bind(Param::Timestamp(until))));
        }
        if let Some((keyset, order)) = keyset {
            let op = match order {
                PostOrder::Newest => "<",
                PostOrder::Oldest => ">",
            };
            let at = self.bind(Param::Timestamp(keyset.created_at_us));
            let at_again = self.bind(Param::Timestamp(keyset.created_at_us));
            let after = self.after_key(&keyset.uri, op, "did", "rkey");
            conditions.push(format!("(created_at {op} {at} OR (created_at = {at_again} AND {after}))"));
        }
        if !filter.uris.is_empty() {
            let list = self.bind_list(filter.uris.iter().cloned().map(Param::Text));
            conditions.push(format!("uri IN ({list})"));
            // The same posts by their record keys, which grow with time: the row groups'
            // statistics rule out most of a day's for a few keys, which those of `uri` cannot.
            let rkeys = filter.uris.iter().filter_map(|uri| crate::model::post_uri_parts(uri)).map(|(_, rkey)| rkey);
            conditions.push(format!("rkey IN ({})", self.bind_list_or_null(rkeys.map(|k| Param::Text(k.to_owned())))));
        }
        if !filter.authors.is_empty() {
            let list = self.bind_list(filter.authors.iter().cloned().map(Param::Text));
            conditions.push(format!("did IN ({list})"));
        }
        if !filter.langs.is_empty() {
            conditions.push(self.langs_condition(&filter.langs));
        }
        if !filter.detected_langs.is_empty() {
            let list = self.bind_list(filter.detected_langs.iter().map(|l| Param::Text(l.trim().to_lowercase())));
            conditions.push(format!("detected_lang IN ({list})"));
        }
        for query in &filter.text {
            let Some(compiled) = search::compile(query)? else { continue };
            for literal in &compiled.literals {
                let pattern = self.bind(Param::Text(format!("%{}%", escape_like(literal))));
                conditions.push(format!("text ILIKE {pattern} ESCAPE '\\'"));
            }
            for pattern in &compiled.patterns {
                let pattern = self.bind(Param::Text(pattern.clone()));
                conditions.push(format!("regexp_matches(text, {pattern}, 'i')"));
            }
        }
        if !filter.hashtags.is_empty() {
            let tags = filter.hashtags.iter().map(|t| Param::Text(crate::model::normalise_tag(t)));
            let list = self.bind_list(tags);
            conditions.push(format!("list_has_any(hashtags, [{list}])"));
        }
        if !filter.mentions.is_empty() {
            let list = self.bind_list(filter.mentions.iter().cloned().map(Param::Text));
            conditions.push(format!("list_has_any(mentions, [{list}])"));
        }
        match filter.is_reply {
            Some(true) => conditions.push("reply_parent IS NOT NULL".to_owned()),
            Some(false) => conditions.push("reply_parent IS NULL".to_owned()),
            None => {}
        }
        if !filter.embed_types.is_empty() {
            let names = filter.embed_types.iter().map(|e| Param::Text(e.as_str().to_owned()));
            let list = self.bind_list(names);
            conditions.push(format!("embed_type IN ({list})"));
        }
        Ok(conditions)
    }

    /// A tag with a region or script (`en-US`) matches exactly; a bare language (`en`) matches
    /// itself and every regional form. Case-insensitive, as BCP 47 tags are.
    fn langs_condition(&mut self, langs: &[String]) -> String {
        let (full, bare): (Vec<String>, Vec<String>) =
            langs.iter().map(|l| l.trim().to_lowercase()).partition(|l| l.contains('-'));
        let mut alternatives = Vec::new();
        if !full.is_empty() {
            let list = self.bind_list(full.into_iter().map(Param::Text));
            alternatives.push(format!("list_has_any(list_transform(langs, lambda l: lower(l)), [{list}])"));
        }
        if !bare.is_empty() {
            let list = self.bind_list(bare.into_iter().map(Param::Text));
            alternatives
                .push(format!("list_has_any(list_transform(langs, lambda l: lower(split_part(l, '-', 1))), [{list}])"));
        }
        format!("({})", alternatives.join(" OR "))
    }
}

/// The group of a post (`unnest`ed: a post may be in several) for `timeBuckets`' `groupBy`.
fn group_expression(group_by: Option<Dimension>) -> &'static str {
    match group_by {
        None => "NULL::VARCHAR",
        Some(Dimension::Lang) => {
            "unnest(CASE WHEN len(langs) = 0 THEN [NULL::VARCHAR] \
             ELSE list_distinct(list_transform(langs, lambda l: lower(split_part(l, '-', 1)))) END)"
        }
        Some(Dimension::Hashtag) => {
            "unnest(CASE WHEN len(hashtags) = 0 THEN [NULL::VARCHAR] ELSE list_distinct(hashtags) END)"
        }
        Some(Dimension::EmbedType) => "embed_type",
        Some(Dimension::Author) => "did",
        Some(Dimension::IsReply) => "CASE WHEN reply_parent IS NULL THEN 'false' ELSE 'true' END",
    }
}

/// The start of the bucket of `t` (with the zone's offset `off` in force): a local calendar
/// start (zone-less) for calendar intervals, the UTC start for the others.
fn bucket_expression(calendar: bool, unit: &str) -> String {
    if calendar {
        format!("date_trunc('{unit}', t + to_seconds(off))")
    } else {
        format!("date_trunc('{unit}', t + to_seconds(off)) - to_seconds(off)")
    }
}

/// Escapes `%`, `_` and the escape character itself so a needle matches literally in LIKE.
pub fn escape_like(needle: &str) -> String {
    let mut out = String::with_capacity(needle.len());
    for c in needle.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{EmbedType, PostColumn};
    use crate::plan::{Keyset, TopPlan};
    use crate::search::{TextMode, TextQuery};
    use crate::zone::{Interval, parse_zone};

    fn check(plan: Plan) -> String {
        let sql = compile(&plan).unwrap();
        assert_eq!(sql.text.matches('?').count(), sql.params.len(), "placeholders and params differ");
        format!("{}\n-- params: {:?}", sql.text, sql.params)
    }

    const DAY: i64 = 86_400_000_000;

    #[test]
    fn newest_posts_without_a_filter() {
        let plan = PostsPlan::new(PostFilter::default(), PostOrder::Newest, 21, [PostColumn::Text]);
        insta::assert_snapshot!(check(Plan::Posts(plan)));
    }

    #[test]
    fn every_filter_field_becomes_a_parameterised_condition() {
        let filter = PostFilter {
            since_us: Some(20_000 * DAY),
            until_us: Some(20_002 * DAY),
            uris: vec![],
            authors: vec!["did:plc:a".into(), "did:plc:b".into()],
            langs: vec!["EN".into(), "pt-BR".into()],
            detected_langs: vec!["JA".into()],
            text: vec![TextQuery { query: "50%_off\\".into(), mode: TextMode::Substring }],
            clock: Clock::CreatedAt,
            hashtags: vec!["#Rust".into()],
            mentions: vec!["did:plc:m".into()],
            is_reply: Some(false),
            embed_types: vec![EmbedType::Images, EmbedType::Video],
        };
        let plan = PostsPlan::new(filter, PostOrder::Oldest, 11, [PostColumn::Did, PostColumn::Langs]);
        insta::assert_snapshot!(check(Plan::Posts(plan)));
    }

    #[test]
    fn a_cursor_continues_after_its_row_and_prunes_later_days() {
        let mut plan = PostsPlan::new(PostFilter::default(), PostOrder::Newest, 3, []);
        plan.after = Some(Keyset { created_at_us: 20_000 * DAY + 5, uri: "at://x/app.bsky.feed.post/1".into() });
        insta::assert_snapshot!(check(Plan::Posts(plan)));
    }

    #[test]
    fn a_count_reads_the_posts_view() {
        let filter = PostFilter {
            text: vec![TextQuery { query: "猫".into(), mode: TextMode::Substring }],
            ..PostFilter::default()
        };
        insta::assert_snapshot!(check(Plan::Count(filter)));
    }

    #[test]
    fn top_authors_and_hashtags_count_each_uri_once() {
        let filter = PostFilter { langs: vec!["ja".into()], ..PostFilter::default() };
        let top = TopPlan::new(filter, 10);
        insta::assert_snapshot!(check(Plan::TopAuthors(top.clone())));
        insta::assert_snapshot!(check(Plan::TopHashtags(top)));
    }

    #[test]
    fn nested_author_fields_take_one_statement_for_many_authors() {
        let filter = PostFilter { authors: vec!["did:plc:a".into(), "did:plc:b".into()], ..PostFilter::default() };
        insta::assert_snapshot!(check(Plan::AuthorSummaries(filter.clone())));
        insta::assert_snapshot!(check(Plan::TopHashtagsPerAuthor(TopPlan::new(filter.clone(), 3))));
        let plan = PostsPlan::new(filter, PostOrder::Newest, 5, [PostColumn::Text]);
        insta::assert_snapshot!(check(Plan::PostsPerAuthor(plan)));
    }

    #[test]
    fn totals_received_read_the_authors_keys_once() {
        let dids = vec!["did:plc:a".to_owned(), "did:plc:b".to_owned()];
        insta::assert_snapshot!(check(Plan::Received(vec![Engagement::Likes, Engagement::Reposts], dids.clone())));
        insta::assert_snapshot!(check(Plan::Received(Engagement::ALL.to_vec(), dids)));
    }

    #[test]
    fn local_days_by_indexed_at_shift_by_the_offset_in_force() {
        let zone = parse_zone("America/New_York").unwrap();
        let (since, until) = (19_783 * DAY, 19_785 * DAY); // 2024-03-01 .. 2024-03-03 UTC
        let filter = PostFilter {
            since_us: Some(since),
            until_us: Some(until),
            clock: Clock::IndexedAt,
            ..PostFilter::default()
        };
        let plan = BucketsPlan {
            filter,
            interval: Interval::Day,
            zone,
            offsets: crate::zone::Offsets { initial_s: -18_000, changes: vec![(19_784 * DAY, -14_400)] },
            group_by: Some(Dimension::Lang),
            measures: Measures::ALL,
        };
        insta::assert_snapshot!(check(Plan::Buckets(plan)));
    }

    #[test]
    fn utc_hours_need_no_offset_changes() {
        let zone = parse_zone("UTC").unwrap();
        let plan = BucketsPlan {
            filter: PostFilter::default(),
            interval: Interval::Hour,
            zone,
            offsets: crate::zone::Offsets::fixed(0),
            group_by: Some(Dimension::Hashtag),
            measures: Measures { authors: false, replies: true },
        };
        insta::assert_snapshot!(check(Plan::Buckets(plan)));
    }

    #[test]
    fn word_and_phrase_searches_prefilter_with_ilike() {
        let filter = PostFilter {
            text: vec![
                TextQuery { query: "Rust lang".into(), mode: TextMode::Words },
                TextQuery { query: "東京 tower".into(), mode: TextMode::Phrase },
            ],
            ..PostFilter::default()
        };
        insta::assert_snapshot!(check(Plan::Count(filter)));
    }

    #[test]
    fn account_states_are_looked_up_by_did() {
        insta::assert_snapshot!(check(Plan::Accounts(vec!["did:plc:a".into(), "did:web:b.example".into()])));
    }

    #[test]
    fn user_text_never_reaches_the_sql_text() {
        let hostile = "x'); DROP TABLE posts; --";
        let filter = PostFilter {
            authors: vec![hostile.into()],
            langs: vec![hostile.into()],
            text: vec![
                TextQuery { query: hostile.into(), mode: TextMode::Substring },
                TextQuery { query: hostile.into(), mode: TextMode::Phrase },
            ],
            hashtags: vec![hostile.into()],
            mentions: vec![hostile.into()],
            uris: vec![hostile.into()],
            ..PostFilter::default()
        };
        let mut plan = PostsPlan::new(filter, PostOrder::Newest, 5, PostColumn::ALL);
        plan.after = Some(Keyset { created_at_us: 0, uri: hostile.into() });
        let sql = compile(&Plan::Posts(plan)).unwrap();
        assert!(!sql.text.contains("DROP"), "{}", sql.text);
    }

    #[test]
    fn top_authors_read_the_posts_of_what_whole_days_leave_out() {
        let day = |n: i64| 20_000 * DAY + n * DAY;
        let date = |n: i64| Some(date_of_micros(day(n)));
        let plan = |since: i64, until: i64| {
            TopPlan::new(PostFilter { since_us: Some(since), until_us: Some(until), ..PostFilter::default() }, 10)
        };
        let settled = RollupScope::default();
        let whole = compile_rollup_authors(&plan(day(0), day(3)), &settled).unwrap().unwrap();
        assert_eq!((whole.first_day, whole.end_day, whole.rest), (date(0), date(3), None));

        let ragged = plan(day(0) + 5, day(3) + 7);
        let scope = RollupScope { unrolled: vec![date_of_micros(day(1))], hot: true };
        let answer = compile_rollup_authors(&ragged, &scope).unwrap().unwrap();
        assert_eq!((answer.first_day, answer.end_day), (date(1), date(3)));
        let rest = answer.rest.unwrap();
        assert_eq!(rest.text.matches('?').count(), rest.params.len());
        // The hot tier, the unrolled day, and the two uneven ends, counted per author.
        assert_eq!(rest.text.matches("FROM hot_live").count(), 1, "{}", rest.text);
        assert_eq!(rest.text.matches("FROM posts WHERE").count(), 3, "{}", rest.text);
        assert!(rest.text.contains("GROUP BY did"), "{}", rest.text);
        assert!(
            rest.params.contains(&Param::Timestamp(day(0) + 5)) && rest.params.contains(&Param::Timestamp(day(3) + 7))
        );

        assert_eq!(compile_rollup_authors(&plan(day(0) + 5, day(1) + 5), &settled).unwrap(), None, "no whole day");
        let english = TopPlan::new(PostFilter { langs: vec!["en".into()], ..plan(day(0), day(3)).filter }, 10);
        assert_eq!(compile_rollup_authors(&english, &settled).unwrap(), None, "filtered by more than time");
    }

    #[test]
    fn like_escaping_makes_wildcards_literal() {
        assert_eq!(escape_like("100%_a\\b"), "100\\%\\_a\\\\b");
    }
}
