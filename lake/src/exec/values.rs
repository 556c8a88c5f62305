//! DuckDB values to and from the engine's: parameters bound, rows read into posts and counts.

use duckdb::types::{TimeUnit, Value};

use super::*;

pub(super) fn bind(sql: &Sql) -> Vec<Value> {
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

/// A statement whose rows are `(did, n_posts)` of `counts`, in order: an answer computed outside
/// DuckDB read as the statement that computes it there would be.
pub(super) fn rows_of(counts: &[(String, u64)]) -> Sql {
    if counts.is_empty() {
        return Sql {
            text: "SELECT NULL::VARCHAR AS did, 0::BIGINT AS n_posts WHERE false".into(),
            params: Vec::new(),
        };
    }
    let rows = vec!["(?, ?::BIGINT, ?)"; counts.len()].join(", ");
    let mut params = Vec::with_capacity(counts.len() * 3);
    for (position, (did, n)) in counts.iter().enumerate() {
        params.push(Param::Text(did.clone()));
        params.push(Param::Int(i64::try_from(*n).unwrap_or(i64::MAX)));
        params.push(Param::Int(position as i64));
    }
    Sql { text: format!("SELECT did, n_posts FROM (VALUES {rows}) AS t(did, n_posts, i) ORDER BY i"), params }
}

/// A statement whose rows are `(tag, n_posts, n_authors)` of `counts`, in order, as
/// [`rows_of`] makes for authors.
pub(super) fn tag_rows_of(counts: &[(String, u64, u64)]) -> Sql {
    if counts.is_empty() {
        return Sql {
            text: "SELECT NULL::VARCHAR AS tag, 0::BIGINT AS n_posts, 0::BIGINT AS n_authors WHERE false".into(),
            params: Vec::new(),
        };
    }
    let rows = vec!["(?, ?::BIGINT, ?::BIGINT, ?)"; counts.len()].join(", ");
    let mut params = Vec::with_capacity(counts.len() * 4);
    let int = |n: u64| Param::Int(i64::try_from(n).unwrap_or(i64::MAX));
    for (position, (tag, posts, authors)) in counts.iter().enumerate() {
        params.extend([Param::Text(tag.clone()), int(*posts), int(*authors), Param::Int(position as i64)]);
    }
    Sql {
        text: format!(
            "SELECT tag, n_posts, n_authors FROM (VALUES {rows}) AS t(tag, n_posts, n_authors, i) ORDER BY i"
        ),
        params,
    }
}

pub(super) fn count(row: &duckdb::Row<'_>, index: usize) -> Result<u64> {
    Ok(u64::try_from(int(&row.get::<_, Value>(index)?)).unwrap_or(0))
}

pub(super) fn timestamp_micros(value: &Value) -> Option<i64> {
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

pub(super) fn text(value: Value) -> Option<String> {
    match value {
        Value::Text(s) | Value::Enum(s) => Some(s),
        _ => None,
    }
}

pub(super) fn int(value: &Value) -> i64 {
    match value {
        Value::TinyInt(v) => i64::from(*v),
        Value::SmallInt(v) => i64::from(*v),
        Value::Int(v) => i64::from(*v),
        Value::BigInt(v) => *v,
        Value::HugeInt(v) => i64::try_from(*v).unwrap_or(i64::MAX),
        Value::UBigInt(v) => i64::try_from(*v).unwrap_or(i64::MAX),
        Value::UTinyInt(v) => i64::from(*v),
        Value::USmallInt(v) => i64::from(*v),
        Value::UInt(v) => i64::from(*v),
        _ => 0,
    }
}

pub(super) fn text_list(value: Value) -> Vec<String> {
    match value {
        Value::List(items) | Value::Array(items) => items.into_iter().filter_map(text).collect(),
        _ => Vec::new(),
    }
}

pub(crate) fn set_column(post: &mut Post, column: PostColumn, value: Value) -> Result<()> {
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
