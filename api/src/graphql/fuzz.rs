//! Fuzzing of the GraphQL → plan → SQL path with arbitrary filter values (a proptest run for a
//! bounded number of cases in the suite; `PROPTEST_CASES=100000 cargo test --release --workspace
//! arbitrary_arguments` runs longer). Every generated request runs through the real schema on
//! real DuckDB over a small real lake, and:
//! - nothing panics, and no error is ours (`INTERNAL_SERVER_ERROR`): every refusal of user input
//!   is a `BAD_USER_INPUT` (or a GraphQL validation error) with a path;
//! - no user text reaches a statement's text: every user string carries a marker, `§`, which
//!   the compiled SQL of the same filter, order and cursor never contains (values are bound as
//!   parameters).

use std::sync::Arc;
use std::time::Duration;

use async_graphql::InputType as _;
use lake::exec::{Engine, EngineConfig};
use lake::model::{EmbedType, Post};
use lake::plan::{Keyset, Plan, PostOrder, PostsPlan, TopPlan};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde_json::{Value, json};

use super::types::PostFilter;
use super::{Limits, QueryRunner, Services};

const DAY: i64 = 86_400_000_000;
const MARKER: char = '§';

/// Pieces hostile to SQL, LIKE patterns, regular expressions, JSON and Unicode handling.
const PIECES: &[&str] = &[
    "'",
    "''",
    "\"",
    "\\",
    "%",
    "_",
    ";",
    "--",
    "/*",
    "*/",
    "\0",
    "\n",
    "\r\n",
    "\t",
    "$1",
    "?",
    "DROP TABLE posts",
    "' OR '1'='1",
    ".*",
    "[",
    "(?",
    "\\E",
    "^",
    "$",
    "|",
    "{1000}",
    "🦋",
    "水の音",
    "Ѐ",
    "\u{202e}",
    "e\u{301}",
    "\u{feff}",
    "#",
    "@",
    "at://",
    "did:plc:",
    " ",
    "  ",
    "en",
    "EN-us",
    "rust",
];

/// A user string: pieces and arbitrary characters around the marker.
fn user_text() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        3 => prop::sample::select(PIECES).prop_map(str::to_owned),
        1 => any::<char>().prop_map(String::from),
    ];
    (prop::collection::vec(piece.clone(), 0..5), prop::collection::vec(piece, 0..5))
        .prop_map(|(before, after)| format!("{}{MARKER}{}", before.concat(), after.concat()))
}

fn user_texts() -> impl Strategy<Value = Option<Vec<String>>> {
    prop::option::of(prop::collection::vec(user_text(), 0..3))
}

/// A time: mostly valid RFC 3339 from year 1 to 9999 (with offsets), sometimes anything.
fn time() -> impl Strategy<Value = Option<String>> {
    let valid = (1i32..=9999, 1u32..=12, 1u32..=28, 0u32..24, -14i32..=14)
        .prop_map(|(y, mo, d, h, off)| format!("{y:04}-{mo:02}-{d:02}T{h:02}:00:00{off:+03}:00"));
    let near =
        (0i64..5 * DAY).prop_map(|us| chrono::DateTime::from_timestamp_micros(20_000 * DAY + us).unwrap().to_rfc3339());
    prop::option::weighted(0.6, prop_oneof![6 => near, 2 => valid, 1 => user_text()])
}

/// DIDs: mostly well formed, sometimes anything.
fn dids() -> impl Strategy<Value = Option<Vec<String>>> {
    let did = prop_oneof![4 => "did:plc:[a-z2-7]{1,24}", 1 => "did:web:[a-z.]{1,12}", 1 => user_text()];
    prop::option::of(prop::collection::vec(did, 0..3))
}

fn filter() -> impl Strategy<Value = Value> {
    let texts = (dids(), user_texts(), user_texts(), user_texts(), dids());
    let text = prop::option::of((user_text(), prop::sample::select(&["SUBSTRING", "WORDS", "PHRASE", "PREFIX"][..])));
    let embeds = prop::option::of(prop::collection::vec(
        prop::sample::select(&["NONE", "IMAGES", "VIDEO", "EXTERNAL", "RECORD", "RECORD_WITH_MEDIA"][..]),
        0..3,
    ));
    let clock = prop::option::of(prop::sample::select(&["CREATED_AT", "INDEXED_AT"][..]));
    (time(), time(), clock, texts, prop::option::of(user_text()), text, prop::option::of(any::<bool>()), embeds)
        .prop_map(
            |(since, until, clock, (authors, langs, detected, hashtags, mentions), contains, text, reply, embeds)| {
                json!({
                    "since": since, "until": until, "clock": clock, "authors": authors, "langs": langs,
                    "detectedLangs": detected, "hashtags": hashtags, "mentions": mentions,
                    "textContains": contains, "text": text.map(|(query, mode)| json!({ "query": query, "mode": mode })),
                    "isReply": reply, "embedTypes": embeds,
                })
            },
        )
}

/// A cursor: a real one (any time, a hostile uri), or any string.
fn cursor() -> impl Strategy<Value = Option<String>> {
    let real = (any::<i64>(), user_text()).prop_map(|(created_at_us, uri)| Keyset { created_at_us, uri }.encode());
    prop::option::of(prop_oneof![real, user_text(), "[A-Za-z0-9_-]{0,40}"])
}

#[derive(Debug, Clone)]
struct Arguments {
    filter: Value,
    first: Option<i32>,
    after: Option<String>,
    order: &'static str,
    time_zone: String,
    interval: &'static str,
    group_by: Option<&'static str>,
    did: String,
}

fn arguments() -> impl Strategy<Value = Arguments> {
    let zone = prop_oneof![
        prop::sample::select(&["UTC", "Europe/Berlin", "Asia/Kolkata", "America/St_Johns", "Pacific/Chatham"][..])
            .prop_map(str::to_owned),
        user_text(),
    ];
    let first = prop::option::of(prop_oneof![8 => 0i32..=100, 1 => any::<i32>()]);
    let group = prop::option::of(prop::sample::select(&["LANG", "EMBED_TYPE", "IS_REPLY", "HASHTAG", "AUTHOR"][..]));
    (
        filter(),
        first,
        cursor(),
        prop::sample::select(&["NEWEST", "OLDEST"][..]),
        zone,
        prop::sample::select(&["MINUTE", "HOUR", "DAY", "WEEK", "MONTH"][..]),
        group,
        prop_oneof![3 => Just("did:plc:a1".to_owned()), 1 => user_text()],
    )
        .prop_map(|(filter, first, after, order, time_zone, interval, group_by, did)| Arguments {
            filter,
            first,
            after,
            order,
            time_zone,
            interval,
            group_by,
            did,
        })
}

const DOCUMENT: &str = r#"
query Fuzz($f: PostFilter, $first: Int, $after: String, $order: PostOrder, $tz: String,
           $interval: Interval!, $group: Dimension, $did: ID!) {
  posts(filter: $f, first: $first, after: $after, order: $order) {
    nodes { uri text langs hashtags author { handle postCount(filter: $f) } }
    pageInfo { endCursor hasNextPage }
    totalCount
  }
  timeBuckets(interval: $interval, filter: $f, timeZone: $tz, groupBy: $group) { start group posts authors replies }
  topHashtags(filter: $f, first: $first) { tag posts authors }
  topAuthors(filter: $f, first: $first) { posts author { did activity(interval: $interval, timeZone: $tz) { posts } } }
  author(did: $did) { postCount(filter: $f) posts(filter: $f, first: $first, after: $after) { nodes { uri } } }
}"#;

/// A few days of posts in every shape the filters look at.
fn small_lake(dir: &std::path::Path) {
    let posts: Vec<Post> = (0..300_i64)
        .map(|i| {
            let did = format!("did:plc:a{}", i % 7);
            let created_at_us = 20_000 * DAY + i * (3 * DAY / 300);
            Post {
                uri: format!("at://{did}/app.bsky.feed.post/{i:05}"),
                cid: format!("c{i}"),
                rkey: format!("{i:05}"),
                created_at_us,
                indexed_at_us: created_at_us + 1_000,
                text: ["Rust is fun #rust", "水の音 🦋", "it's 100% _done_", "O'Reilly; DROP TABLE"][i as usize % 4]
                    .to_owned(),
                langs: vec![["en", "ja", "en-US", "pt-BR"][i as usize % 4].to_owned()],
                hashtags: if i % 3 == 0 { vec!["rust".into()] } else { vec![] },
                mentions: if i % 5 == 0 { vec!["did:plc:a2".into()] } else { vec![] },
                reply_parent: (i % 4 == 1).then(|| "at://p".to_owned()),
                embed_type: if i % 6 == 0 { EmbedType::Images } else { EmbedType::None },
                did,
                ..Post::default()
            }
        })
        .collect();
    lake::writer::write_posts(dir, "fuzz.parquet", posts).unwrap();
}

/// Every error a request got that is ours rather than the caller's.
fn our_errors(response: &async_graphql::Response) -> Vec<String> {
    response
        .errors
        .iter()
        .filter_map(|error| {
            let code = error.extensions.as_ref().and_then(|e| e.get("code")).map(|c| c.to_string());
            let ours = code.as_deref().is_some_and(|c| c.contains(crate::error::INTERNAL))
                || (code.is_none() && error.path.is_empty() && error.locations.is_empty());
            ours.then(|| format!("{error:?}"))
        })
        .collect()
}

/// The statements the arguments' filter, order and cursor compile to, or the user's mistake.
fn statements(arguments: &Arguments) -> Option<Vec<lake::sql::Sql>> {
    let filter = PostFilter::parse(Some(async_graphql::Value::from_json(arguments.filter.clone()).ok()?)).ok()?;
    let filter = filter.into_plan().ok()?;
    let order = if arguments.order == "NEWEST" { PostOrder::Newest } else { PostOrder::Oldest };
    let mut page = PostsPlan::new(filter.clone(), order, 21, lake::model::PostColumn::ALL);
    page.after = arguments.after.as_deref().and_then(|cursor| Keyset::decode(cursor).ok());
    let plans = [
        Plan::Posts(page),
        Plan::Count(filter.clone()),
        Plan::TopHashtags(TopPlan::new(filter.clone(), 10)),
        Plan::TopAuthors(TopPlan::new(filter, 10)),
    ];
    let compiled: Result<Vec<_>, _> = plans.iter().map(lake::sql::compile).collect();
    match compiled {
        Ok(statements) => Some(statements),
        Err(error) => {
            assert_eq!(error.kind(), lake::ErrorKind::BadInput, "{error}");
            None
        }
    }
}

#[test]
fn arbitrary_arguments_are_answered_or_refused_as_the_callers_mistake_and_never_reach_sql_text() {
    let dir = tempfile::tempdir().unwrap();
    small_lake(dir.path());
    let engine = Arc::new(Engine::open(dir.path(), &EngineConfig::with_threads(1)).unwrap());
    let runner = QueryRunner::new(engine, 2, Duration::from_secs(60));
    let services =
        Services { runner: runner.clone(), limits: Limits::default(), redis: None, exports: None, live: None };
    let schema = super::build(Some(services), None);
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let cases = std::env::var("PROPTEST_CASES").ok().and_then(|n| n.parse().ok()).unwrap_or(200);
    let mut fuzz = TestRunner::new(Config { cases, failure_persistence: None, ..Config::default() });
    let answered = std::cell::Cell::new(0);
    fuzz.run(&arguments(), |arguments| {
        let variables = json!({
            "f": arguments.filter, "first": arguments.first, "after": arguments.after, "order": arguments.order,
            "tz": arguments.time_zone, "interval": arguments.interval, "group": arguments.group_by,
            "did": arguments.did,
        });
        let request = async_graphql::Request::new(DOCUMENT).variables(async_graphql::Variables::from_json(variables));
        let response = runtime.block_on(schema.execute(super::with_loaders(request, &runner)));
        let ours = our_errors(&response);
        prop_assert!(ours.is_empty(), "errors of ours for {arguments:?}: {ours:#?}");
        if response.errors.is_empty() {
            answered.set(answered.get() + 1);
        }
        if let Some(statements) = statements(&arguments) {
            for sql in statements {
                prop_assert!(!sql.text.contains(MARKER), "user text in the SQL for {arguments:?}:\n{}", sql.text);
            }
        }
        Ok(())
    })
    .unwrap();
    // The generator is not so hostile that nothing gets through.
    assert!(answered.get() > 0, "no request of {cases} was answered whole");
}
