//! Compiles a [`Plan`] into one parameterised DuckDB statement.
//!
//! `compile` is pure and deterministic: the same plan gives the same text and parameters, so
//! its output can be snapshot-tested and used as a cache key. Identifiers come only from enums
//! ([`crate::model::PostColumn`], orders); every value a user gave is a parameter. Queries read the `posts`
//! view that [`crate::exec`] defines over the Parquet files (hive column `date`). A uri is in
//! at most one row (see [`crate::unique`]), so posts are counted with `count(*)`.

use std::fmt::Write as _;

use chrono::NaiveDate;
use serde::Serialize;

use crate::error::Result;
use crate::layout::date_of_micros;
use crate::model::{MAX_FUTURE_SKEW_US, PostColumn};
#[cfg(test)]
use crate::plan::Measures;
use crate::plan::{BucketsPlan, Clock, Dimension, Keyset, Plan, PostFilter, PostOrder, PostsPlan};
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
        Plan::Summary(filter) => {
            builder.text.push_str(
                "SELECT count(*) AS n_posts, min(created_at) AS oldest, max(created_at) AS newest FROM posts",
            );
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
        Plan::TopAuthors(top) => {
            builder.text.push_str("SELECT did, count(*) AS n_posts FROM posts");
            builder.where_clause(&top.filter, None)?;
            builder.text.push_str("\nGROUP BY did\nORDER BY n_posts DESC, did");
            builder.limit(top.limit);
        }
        Plan::TopHashtags(top) => {
            let authors = if top.count_authors { "count(DISTINCT did)" } else { "0::BIGINT" };
            write!(builder.text, "SELECT tag, count(*) AS n_posts, {authors} AS n_authors\nFROM (").unwrap();
            builder.text.push_str("SELECT unnest(list_distinct(hashtags)) AS tag, uri, did FROM posts");
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
    }
    Ok(Sql { text: builder.text, params: builder.params })
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
        let direction = Self::direction(plan.order);
        write!(self.text, "\nORDER BY created_at {direction}, uri {direction}").unwrap();
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
            "\nQUALIFY row_number() OVER (PARTITION BY did ORDER BY created_at {direction}, uri {direction}) <= {limit}\n\
             ORDER BY did, created_at {direction}, uri {direction}"
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
        let group = match plan.group_by {
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
        };
        let bucket = if plan.interval.is_calendar() {
            format!("date_trunc('{unit}', t + to_seconds(off))")
        } else {
            format!("date_trunc('{unit}', t + to_seconds(off)) - to_seconds(off)")
        };
        let authors = if plan.measures.authors { "count(DISTINCT did)" } else { "0::BIGINT" };
        let replies = if plan.measures.replies { "count(*) FILTER (WHERE is_reply)" } else { "0::BIGINT" };
        write!(
            self.text,
            "SELECT bucket, grp, count(*) AS n_posts, {authors} AS n_authors,\n  \
             {replies} AS n_replies\n\
             FROM (\nSELECT {bucket} AS bucket, grp, uri, did, is_reply FROM (\n\
             SELECT {clock} AS t, {offset} AS off, {group} AS grp, uri, did, reply_parent IS NOT NULL AS is_reply \
             FROM posts"
        )
        .unwrap();
        self.where_clause(&plan.filter, None)?;
        self.text.push_str("))\nGROUP BY bucket, grp\nORDER BY bucket, grp NULLS LAST");
        Ok(())
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
            let uri = self.bind(Param::Text(keyset.uri.clone()));
            conditions.push(format!("(created_at {op} {at} OR (created_at = {at_again} AND uri {op} {uri}))"));
        }
        if !filter.uris.is_empty() {
            let list = self.bind_list(filter.uris.iter().cloned().map(Param::Text));
            conditions.push(format!("uri IN ({list})"));
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

/// Escapes `%`, `_` and the escape character itself so a needle matches literally in LIKE.
fn escape_like(needle: &str) -> String {
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
    fn a_summary_counts_each_uri_once() {
        let filter = PostFilter {
            text: vec![TextQuery { query: "猫".into(), mode: TextMode::Substring }],
            ..PostFilter::default()
        };
        insta::assert_snapshot!(check(Plan::Summary(filter)));
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
        insta::assert_snapshot!(check(Plan::Summary(filter)));
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
    fn like_escaping_makes_wildcards_literal() {
        assert_eq!(escape_like("100%_a\\b"), "100\\%\\_a\\\\b");
    }
}
