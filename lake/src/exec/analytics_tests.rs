//! Aggregates, time buckets, clocks and search modes on real DuckDB over real Parquet files,
//! each answer checked against the same question computed over the rows in plain Rust (with
//! chrono-tz for local time, not the engine's zone code).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use chrono::{DateTime, NaiveDate, TimeZone, Timelike};
use chrono_tz::Tz;

use super::*;
use crate::plan::{Clock, Dimension, Measures, PostOrder, TopPlan};
use crate::search::{TextMode, TextQuery};
use crate::writer::write_posts;
use crate::zone::Interval;

const HOUR: i64 = 3_600_000_000;
const TEXTS: [&str; 8] = [
    "Rust is fast",
    "I love rustaceans and Rust-lang",
    "trust the process",
    "東京タワーに行きました",
    "京都 is not 東京",
    "Привет, мир! rust",
    "the lake is quiet 🦀",
    "RUST RUST rust_lang",
];
const LANGS: [&[&str]; 5] = [&["en"], &["en-US", "ja"], &["ja"], &["ru"], &[]];
const TAGS: [&[&str]; 4] = [&["rust"], &["rust", "tokyo"], &[], &["lake"]];

/// Posts from 2024-10-26 to 2024-11-05 UTC (Europe leaves DST on Oct 27, New York on Nov 3),
/// some seen by the firehose days after their `createdAt`.
fn rows() -> Vec<Post> {
    let start = DateTime::parse_from_rfc3339("2024-10-26T00:00:00Z").unwrap().timestamp_micros();
    let mut state = 7_u64;
    let mut next = move |n: u64| {
        state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (state >> 33) % n
    };
    (0..1500)
        .map(|i| {
            let created_at_us = start + next(10 * 24 * 60) as i64 * 60_000_000 + next(60) as i64 * 1_000_000;
            let late = if i % 10 == 0 { next(5 * 24) as i64 * HOUR } else { next(30) as i64 * 1_000_000 };
            let author = next(11);
            Post {
                uri: format!("at://did:plc:u{author}/app.bsky.feed.post/{i:05}"),
                cid: format!("c{i}"),
                did: format!("did:plc:u{author}"),
                rkey: format!("{i:05}"),
                created_at_us,
                indexed_at_us: created_at_us + late,
                text: TEXTS[next(8) as usize].to_owned(),
                langs: LANGS[next(5) as usize].iter().map(|l| l.to_string()).collect(),
                hashtags: TAGS[next(4) as usize].iter().map(|t| t.to_string()).collect(),
                reply_parent: (next(3) == 0).then(|| "at://p".to_owned()),
                ..Post::default()
            }
        })
        .collect()
}

/// The rows in two files.
fn lake() -> (tempfile::TempDir, Engine, Vec<Post>) {
    let rows = rows();
    let dir = tempfile::tempdir().unwrap();
    write_posts(dir.path(), "a.parquet", rows[..1200].to_vec()).unwrap();
    write_posts(dir.path(), "b.parquet", rows[1200..].to_vec()).unwrap();
    let engine = Engine::open(dir.path(), &EngineConfig::with_threads(2)).unwrap();
    (dir, engine, rows)
}

fn at(text: &str) -> i64 {
    DateTime::parse_from_rfc3339(text).unwrap().timestamp_micros()
}

#[test]
fn top_authors_and_hashtags_match_counts_in_rust() {
    let (_dir, engine, rows) = lake();
    let filter = PostFilter { langs: vec!["ja".into()], ..PostFilter::default() };
    let keep = |p: &&Post| p.langs.iter().any(|l| l == "ja");

    let mut per_author: HashMap<&str, u64> = HashMap::new();
    for post in rows.iter().filter(keep) {
        *per_author.entry(&post.did).or_default() += 1;
    }
    let mut expected: Vec<(String, u64)> = per_author.into_iter().map(|(d, n)| (d.to_owned(), n)).collect();
    expected.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    expected.truncate(5);
    assert_eq!(engine.top_authors(&TopPlan::new(filter.clone(), 5)).unwrap(), expected);

    let mut per_tag: BTreeMap<&str, (u64, BTreeSet<&str>)> = BTreeMap::new();
    for post in rows.iter().filter(keep) {
        for tag in &post.hashtags {
            let entry = per_tag.entry(tag).or_default();
            entry.0 += 1;
            entry.1.insert(&post.did);
        }
    }
    let mut expected: Vec<HashtagCount> = per_tag
        .into_iter()
        .map(|(tag, (posts, authors))| HashtagCount { tag: tag.to_owned(), posts, authors: authors.len() as u64 })
        .collect();
    expected.sort_by(|a, b| b.posts.cmp(&a.posts).then(a.tag.cmp(&b.tag)));
    assert_eq!(engine.top_hashtags(&TopPlan::new(filter, 10)).unwrap(), expected);
}

#[test]
fn author_summaries_and_first_pages_for_many_authors_at_once() {
    let (_dir, engine, rows) = lake();
    let authors: Vec<String> = ["did:plc:u1", "did:plc:u4", "did:plc:nobody"].map(String::from).to_vec();
    let filter = PostFilter { authors: authors.clone(), is_reply: Some(false), ..PostFilter::default() };
    let summaries: HashMap<String, Summary> = engine.author_summaries(&filter).unwrap().into_iter().collect();
    assert_eq!(summaries.len(), 2, "an author without posts is absent");
    for did in &authors[..2] {
        let theirs: Vec<&Post> = rows.iter().filter(|p| &p.did == did && p.reply_parent.is_none()).collect();
        let summary = summaries[did];
        assert_eq!(summary.n_posts, theirs.len() as u64);
        assert_eq!(summary.oldest_us, theirs.iter().map(|p| p.created_at_us).min());
        assert_eq!(summary.newest_us, theirs.iter().map(|p| p.created_at_us).max());
    }

    let plan = PostsPlan::new(filter, PostOrder::Newest, 4, [PostColumn::Text]);
    let pages = engine.posts_per_author(&plan).unwrap();
    for did in &authors[..2] {
        let mut theirs: Vec<&Post> = rows.iter().filter(|p| &p.did == did && p.reply_parent.is_none()).collect();
        theirs.sort_by(|a, b| (b.created_at_us, &b.uri).cmp(&(a.created_at_us, &a.uri)));
        let expected: Vec<&str> = theirs.iter().take(4).map(|p| p.uri.as_str()).collect();
        let got: Vec<&str> = pages.iter().filter(|p| &p.did == did).map(|p| p.uri.as_str()).collect();
        assert_eq!(got, expected, "{did}");
    }
}

/// The expected bucket start of `at_us` computed with chrono-tz: for hours, the instant minus
/// its local minutes and seconds; for days, the first instant of its local date.
fn expected_start(zone: Tz, interval: Interval, at_us: i64) -> i64 {
    let local = zone.timestamp_micros(at_us).unwrap();
    match interval {
        Interval::Hour => {
            let into_hour = i64::from(local.minute()) * 60_000_000
                + i64::from(local.second()) * 1_000_000
                + i64::from(local.nanosecond() / 1000);
            at_us - into_hour
        }
        Interval::Day => {
            let midnight = local.date_naive().and_hms_opt(0, 0, 0).unwrap();
            zone.from_local_datetime(&midnight).earliest().unwrap().timestamp_micros()
        }
        other => panic!("not checked here: {other:?}"),
    }
}

fn check_buckets(engine: &Engine, rows: &[Post], zone_name: &str, interval: Interval, clock: Clock, group: bool) {
    let zone: Tz = zone_name.parse().unwrap();
    let (since, until) = (at("2024-10-26T12:00:00Z"), at("2024-11-04T12:00:00Z"));
    let filter = PostFilter { since_us: Some(since), until_us: Some(until), clock, ..PostFilter::default() };
    let clock_of = |p: &Post| match clock {
        Clock::CreatedAt => p.created_at_us,
        Clock::IndexedAt => p.indexed_at_us,
    };
    let group_of = |p: &Post| -> Vec<Option<String>> {
        if !group {
            return vec![None];
        }
        let bare: BTreeSet<String> = p.langs.iter().map(|l| l.split('-').next().unwrap().to_lowercase()).collect();
        if bare.is_empty() { vec![None] } else { bare.into_iter().map(Some).collect() }
    };
    // (bucket start, group) -> (posts, authors, replies)
    type Counts<'a> = BTreeMap<(i64, Option<String>), (u64, BTreeSet<&'a str>, u64)>;
    let mut expected: Counts = BTreeMap::new();
    for post in rows.iter().filter(|p| (since..until).contains(&clock_of(p))) {
        let start = expected_start(zone, interval, clock_of(post));
        for g in group_of(post) {
            let entry = expected.entry((start, g)).or_default();
            entry.0 += 1;
            entry.1.insert(&post.did);
            entry.2 += u64::from(post.reply_parent.is_some());
        }
    }
    let dimension = group.then_some(Dimension::Lang);
    let buckets = engine.time_buckets(&filter, interval, zone, dimension, Measures::ALL).unwrap();
    let context = format!("{zone_name} {interval:?} {clock:?} grouped={group}");

    let non_empty: BTreeMap<(i64, Option<String>), (u64, u64, u64)> = buckets
        .iter()
        .filter(|b| b.posts > 0)
        .map(|b| ((b.start_us, b.group.clone()), (b.posts, b.authors, b.replies)))
        .collect();
    let expected: BTreeMap<(i64, Option<String>), (u64, u64, u64)> = expected
        .into_iter()
        .map(|(k, (posts, authors, replies))| (k, (posts, authors.len() as u64, replies)))
        .collect();
    assert_eq!(non_empty, expected, "{context}");

    // Every bucket of the range, each group in each, ordered, empty ones with zeros.
    let starts: BTreeSet<i64> = buckets.iter().map(|b| b.start_us).collect();
    let groups: BTreeSet<Option<String>> = buckets.iter().map(|b| b.group.clone()).collect();
    assert_eq!(buckets.len(), starts.len() * groups.len(), "{context}");
    assert!(buckets.windows(2).all(|w| w[0].start_us <= w[1].start_us), "{context}");
    let first = expected_start(zone, interval, since);
    assert_eq!(starts.first(), Some(&first), "{context}");
    let mut instant = first;
    for start in &starts {
        assert_eq!(*start, instant, "{context}: buckets are contiguous");
        // The next bucket starts where one hour (or one local day) after this one begins.
        instant = match interval {
            Interval::Hour => start + HOUR,
            _ => {
                let date = zone.timestamp_micros(*start).unwrap().date_naive().succ_opt().unwrap();
                zone.from_local_datetime(&date.and_hms_opt(0, 0, 0).unwrap()).earliest().unwrap().timestamp_micros()
            }
        };
    }
    assert!(instant >= until && *starts.last().unwrap() < until, "{context}: the range is covered");
}

#[test]
fn time_buckets_match_local_time_computed_with_chrono_tz() {
    let (_dir, engine, rows) = lake();
    for zone in ["UTC", "Europe/Berlin", "America/New_York", "Asia/Kolkata"] {
        for interval in [Interval::Hour, Interval::Day] {
            check_buckets(&engine, &rows, zone, interval, Clock::CreatedAt, false);
        }
    }
    check_buckets(&engine, &rows, "America/New_York", Interval::Day, Clock::CreatedAt, true);
    check_buckets(&engine, &rows, "Europe/Berlin", Interval::Hour, Clock::IndexedAt, true);
}

#[test]
fn local_days_across_dst_last_23_and_25_hours() {
    let (_dir, engine, _rows) = lake();
    let zone: Tz = "Europe/Berlin".parse().unwrap();
    let filter = PostFilter {
        since_us: Some(at("2024-10-26T00:00:00+02:00")),
        until_us: Some(at("2024-10-29T00:00:00+01:00")),
        ..PostFilter::default()
    };
    let buckets = engine.time_buckets(&filter, Interval::Day, zone, None, Measures::ALL).unwrap();
    let lengths: Vec<i64> = buckets.windows(2).map(|w| (w[1].start_us - w[0].start_us) / HOUR).collect();
    assert_eq!(lengths, [24, 25], "Oct 26, Oct 27 (25 h), Oct 28");
    assert_eq!(buckets.len(), 3);
}

#[test]
fn a_range_without_bounds_runs_from_the_first_to_the_last_post() {
    let (_dir, engine, rows) = lake();
    let zone: Tz = "UTC".parse().unwrap();
    let buckets = engine.time_buckets(&PostFilter::default(), Interval::Day, zone, None, Measures::ALL).unwrap();
    let first_day = |us: i64| DateTime::from_timestamp_micros(us).unwrap().date_naive();
    let days: Vec<NaiveDate> = buckets.iter().map(|b| first_day(b.start_us)).collect();
    let oldest = rows.iter().map(|p| first_day(p.created_at_us)).min().unwrap();
    let newest = rows.iter().map(|p| first_day(p.created_at_us)).max().unwrap();
    assert_eq!(days.first(), Some(&oldest));
    assert_eq!(days.last(), Some(&newest));
    assert_eq!(buckets.iter().map(|b| b.posts).sum::<u64>(), 1500);
}

#[test]
fn an_indexed_at_range_finds_backdated_posts_in_earlier_partitions() {
    let (_dir, engine, rows) = lake();
    let (since, until) = (at("2024-11-03T00:00:00Z"), at("2024-11-06T00:00:00Z"));
    let filter =
        PostFilter { since_us: Some(since), until_us: Some(until), clock: Clock::IndexedAt, ..PostFilter::default() };
    let expected: Vec<&Post> = rows.iter().filter(|p| (since..until).contains(&p.indexed_at_us)).collect();
    assert!(expected.iter().any(|p| p.created_at_us < since - 24 * HOUR), "the fixture has backdated posts");
    assert_eq!(engine.count(&filter).unwrap(), expected.len() as u64);
}

/// Words as a reader sees them: letter and digit runs, each CJK character alone.
fn reference_words(text: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut current = String::new();
    for c in text.chars() {
        let cjk = matches!(c as u32, 0x3040..=0x30FF | 0x4E00..=0x9FFF);
        if cjk || !(c.is_alphanumeric() || c == '_') {
            if !current.is_empty() {
                words.push(std::mem::take(&mut current).to_lowercase());
            }
            if cjk {
                words.push(c.to_string());
            }
        } else {
            current.push(c);
        }
    }
    if !current.is_empty() {
        words.push(current.to_lowercase());
    }
    words
}

#[test]
fn search_modes_match_a_reference_tokenizer() {
    let (_dir, engine, rows) = lake();
    type Matcher = Box<dyn Fn(&[String]) -> bool>;
    let cases: Vec<(TextMode, &str, Matcher)> = vec![
        (TextMode::Words, "rust", Box::new(|w| w.iter().any(|x| x == "rust"))),
        (TextMode::Words, "LANG rust", Box::new(|w| w.iter().any(|x| x == "rust") && w.iter().any(|x| x == "lang"))),
        (TextMode::Words, "東京", Box::new(|w| w.iter().any(|x| x == "東") && w.iter().any(|x| x == "京"))),
        (TextMode::Words, "мир", Box::new(|w| w.iter().any(|x| x == "мир"))),
        (TextMode::Phrase, "rust lang", Box::new(|w| w.windows(2).any(|p| p[0] == "rust" && p[1] == "lang"))),
        (TextMode::Phrase, "東京", Box::new(|w| w.windows(2).any(|p| p[0] == "東" && p[1] == "京"))),
        (TextMode::Phrase, "rust rust", Box::new(|w| w.windows(2).any(|p| p[0] == "rust" && p[1] == "rust"))),
        (TextMode::Prefix, "rust", Box::new(|w| w.iter().any(|x| x.starts_with("rust")))),
        (
            TextMode::Prefix,
            "tru pro",
            Box::new(|w| w.iter().any(|x| x.starts_with("tru")) && w.iter().any(|x| x.starts_with("pro"))),
        ),
    ];
    for (mode, query, matches) in cases {
        let expected = rows.iter().filter(|p| matches(&reference_words(&p.text))).count() as u64;
        assert!(expected > 0, "{mode:?} {query} selects nothing");
        let filter = PostFilter { text: vec![TextQuery { query: query.into(), mode }], ..PostFilter::default() };
        assert_eq!(engine.count(&filter).unwrap(), expected, "{mode:?} `{query}`");
    }
    // Substring still finds "trust" for "rust"; words do not.
    let substring = PostFilter {
        text: vec![TextQuery { query: "rust".into(), mode: TextMode::Substring }],
        ..PostFilter::default()
    };
    let expected = rows.iter().filter(|p| p.text.to_lowercase().contains("rust")).count() as u64;
    assert_eq!(engine.count(&substring).unwrap(), expected);
}
