//! Compiles a [`Plan`] into one parameterised DuckDB statement.
//!
//! `compile` is pure and deterministic: the same plan gives the same text and parameters, so
//! its output can be snapshot-tested and used as a cache key. Identifiers come only from enums
//! ([`crate::model::PostColumn`], orders); every value a user gave is a parameter. Queries read the `posts`
//! view that [`crate::exec`] defines over the Parquet files (hive column `date`).

use std::fmt::Write as _;

use chrono::NaiveDate;
use serde::Serialize;

use crate::layout::date_of_micros;
use crate::plan::{Plan, PostFilter, PostOrder, PostsPlan};

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

/// Keeps each duplicate of a post (the same `uri`, ingested twice by a replay) only once.
const DEDUP_BY_URI: &str = "QUALIFY row_number() OVER (PARTITION BY uri ORDER BY indexed_at, cid) = 1";

pub fn compile(plan: &Plan) -> Sql {
    let mut builder = Builder::default();
    match plan {
        Plan::Posts(posts) => builder.posts(posts),
        Plan::Summary(filter) => {
            builder.text.push_str(
                "SELECT count(DISTINCT uri) AS n_posts, min(created_at) AS oldest, max(created_at) AS newest FROM posts",
            );
            builder.filter_clause(filter, None);
        }
    }
    Sql { text: builder.text, params: builder.params }
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

    fn posts(&mut self, plan: &PostsPlan) {
        let columns: Vec<&str> = plan.columns.iter().map(|c| c.name()).collect();
        write!(self.text, "SELECT {} FROM posts", columns.join(", ")).unwrap();
        let keyset = plan.after.as_ref().map(|k| (k, plan.order));
        self.filter_clause(&plan.filter, keyset);
        self.text.push('\n');
        self.text.push_str(DEDUP_BY_URI);
        let direction = match plan.order {
            PostOrder::Newest => "DESC",
            PostOrder::Oldest => "ASC",
        };
        write!(self.text, "\nORDER BY created_at {direction}, uri {direction}").unwrap();
        let limit = self.bind(Param::Int(i64::from(plan.limit)));
        write!(self.text, "\nLIMIT {limit}").unwrap();
    }

    fn filter_clause(&mut self, filter: &PostFilter, keyset: Option<(&crate::plan::Keyset, PostOrder)>) {
        let mut conditions: Vec<String> = Vec::new();

        // Partition pruning first: the hive `date` column is the UTC day of created_at.
        let mut first_day = filter.since_us.map(date_of_micros);
        let mut last_day = filter.until_us.map(|until| date_of_micros(until.saturating_sub(1)));
        if let Some((keyset, order)) = keyset {
            let day = date_of_micros(keyset.created_at_us);
            match order {
                PostOrder::Newest => last_day = Some(last_day.map_or(day, |d| d.min(day))),
                PostOrder::Oldest => first_day = Some(first_day.map_or(day, |d| d.max(day))),
            }
        }
        if let Some(day) = first_day {
            conditions.push(format!("\"date\" >= {}", self.bind(Param::Date(day))));
        }
        if let Some(day) = last_day {
            conditions.push(format!("\"date\" <= {}", self.bind(Param::Date(day))));
        }
        if let Some(since) = filter.since_us {
            conditions.push(format!("created_at >= {}", self.bind(Param::Timestamp(since))));
        }
        if let Some(until) = filter.until_us {
            conditions.push(format!("created_at < {}", self.bind(Param::Timestamp(until))));
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
        if let Some(needle) = filter.text_contains.as_deref().filter(|n| !n.is_empty()) {
            let pattern = self.bind(Param::Text(format!("%{}%", escape_like(needle))));
            conditions.push(format!("text ILIKE {pattern} ESCAPE '\\'"));
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

        if !conditions.is_empty() {
            write!(self.text, "\nWHERE {}", conditions.join("\n  AND ")).unwrap();
        }
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
    use crate::plan::Keyset;

    fn check(plan: Plan) -> String {
        let sql = compile(&plan);
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
            text_contains: Some("50%_off\\".into()),
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
        let filter = PostFilter { text_contains: Some("猫".into()), ..PostFilter::default() };
        insta::assert_snapshot!(check(Plan::Summary(filter)));
    }

    #[test]
    fn user_text_never_reaches_the_sql_text() {
        let hostile = "x'); DROP TABLE posts; --";
        let filter = PostFilter {
            authors: vec![hostile.into()],
            langs: vec![hostile.into()],
            text_contains: Some(hostile.into()),
            hashtags: vec![hostile.into()],
            mentions: vec![hostile.into()],
            uris: vec![hostile.into()],
            ..PostFilter::default()
        };
        let mut plan = PostsPlan::new(filter, PostOrder::Newest, 5, PostColumn::ALL);
        plan.after = Some(Keyset { created_at_us: 0, uri: hostile.into() });
        let sql = compile(&Plan::Posts(plan));
        assert!(!sql.text.contains("DROP"), "{}", sql.text);
    }

    #[test]
    fn like_escaping_makes_wildcards_literal() {
        assert_eq!(escape_like("100%_a\\b"), "100\\%\\_a\\\\b");
    }
}
