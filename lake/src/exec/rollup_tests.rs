//! The rollup path against the posts path. One fixture lake (three files per day, deleted posts,
//! a taken-down account, a partition one file of which has no rollups, a hot tier) is read by
//! two engines, one with rollups and one without; for many random plans (intervals, time zones
//! across DST changes, groupings, filters, ranges cut anywhere) both give the same answers, and
//! the answers are checked against counts in plain Rust.

use std::collections::BTreeMap;
use std::fs;
use std::sync::OnceLock;

use chrono::{DateTime, TimeZone};
use proptest::prelude::*;

use super::*;
use crate::model::{AccountEvent, Delete};
use crate::plan::{Dimension, Measures, TopPlan, TrendKind, TrendPlan, TrendRank};
use crate::zone::Interval;

const HOUR: i64 = 3_600_000_000;
const LANGS: [&[&str]; 6] = [&["en"], &["en-US", "ja"], &["ja"], &["pt-BR"], &[], &["EN"]];
const TAGS: [&[&str]; 5] = [&["rust"], &["rust", "tokyo"], &[], &["lake"], &["tokyo", "lake", "rust"]];
/// Links to two domains in several spellings, and a text that is no link.
const LINKS: [&[&str]; 5] = [
    &[],
    &["https://www.Example.com/a"],
    &["https://example.com/b", "http://me@news.example.org:8080/c"],
    &["https://news.example.org/d"],
    &["not a link"],
];
const EMBEDS: [EmbedType; 4] = [EmbedType::None, EmbedType::Images, EmbedType::External, EmbedType::Record];
const ZONES: [&str; 6] =
    ["UTC", "America/New_York", "Europe/Berlin", "Asia/Tokyo", "Asia/Kolkata", "Australia/Adelaide"];

/// 2024-10-25T00:00Z: the fixture spans twelve days, over Europe's (Oct 27) and New York's
/// (Nov 3) changes back from DST.
fn start() -> i64 {
    DateTime::parse_from_rfc3339("2024-10-25T00:00:00Z").unwrap().timestamp_micros()
}

const DAYS: i64 = 12;

struct Fixture {
    _dir: tempfile::TempDir,
    rolled: Engine,
    plain: Engine,
    /// The live posts (files and hot tier), for the independent counts.
    live: Vec<Post>,
}

/// The DID of author `n` (of 30): every third has the shape of Bluesky's (24 characters of
/// base 32), which some counts treat apart.
fn author_did(n: u64) -> String {
    match n % 3 {
        0 => format!("did:plc:abcdefghijklmnopqrstuvw{}", char::from(b'a' + n as u8)),
        _ => format!("did:plc:u{n}"),
    }
}

fn post(i: u64, next: &mut impl FnMut(u64) -> u64) -> Post {
    let created_at_us = start() + next(DAYS as u64 * 24 * 60) as i64 * 60_000_000 + next(60_000_000) as i64;
    // Skewed: low-numbered authors post most, as on Bluesky.
    let spread = next(30) + 1;
    let did = author_did(next(spread));
    Post {
        uri: crate::model::post_uri(&did, &format!("{i:05}")),
        cid: format!("c{i}"),
        did,
        rkey: format!("{i:05}"),
        created_at_us,
        indexed_at_us: created_at_us + next(90_000_000) as i64,
        text: "x".into(),
        langs: LANGS[next(6) as usize].iter().map(|l| l.to_string()).collect(),
        hashtags: TAGS[next(5) as usize].iter().map(|t| t.to_string()).collect(),
        reply_parent: (next(3) == 0).then(|| "at://p".to_owned()),
        embed_type: EMBEDS[next(4) as usize],
        links: LINKS[next(5) as usize].iter().map(|l| l.to_string()).collect(),
        external_uri: (next(4) == 0).then(|| "https://video.example.io/v".to_owned()),
        ..Post::default()
    }
}

/// A link's domain as trending counts it, in plain Rust: the authority, lower-cased, less
/// user, `www.` and port.
fn domain_of(link: &str) -> Option<String> {
    let link = link.to_lowercase();
    let (scheme, rest) = link.split_once("://")?;
    let scheme_ok = scheme.starts_with(|c: char| c.is_ascii_lowercase())
        && scheme.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "+.-".contains(c));
    let authority = rest.split(['/', '?', '#']).next()?;
    let host = authority.rsplit_once('@').map_or(authority, |(_, host)| host);
    let host = host.strip_prefix("www.").unwrap_or(host).split(':').next()?;
    (scheme_ok && !host.is_empty()).then(|| host.to_owned())
}

/// The distinct items of `kind` in a post, as trending counts them, in plain Rust.
fn trend_items(kind: TrendKind, post: &Post) -> std::collections::BTreeSet<String> {
    match kind {
        TrendKind::Hashtag => post.hashtags.iter().cloned().collect(),
        TrendKind::Lang => post.langs.iter().map(|l| l.split('-').next().unwrap_or_default().to_lowercase()).collect(),
        TrendKind::LinkDomain => {
            post.links.iter().chain(post.external_uri.as_ref()).filter_map(|link| domain_of(link)).collect()
        }
    }
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let mut state = 11_u64;
        let mut next = move |n: u64| {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (state >> 33) % n
        };
        let posts: Vec<Post> = (0..2400).map(|i| post(i, &mut next)).collect();
        let dir = tempfile::tempdir().unwrap();
        for (n, name) in ["a.parquet", "b.parquet", "c.parquet"].iter().enumerate() {
            let part: Vec<Post> = posts.iter().skip(n).step_by(3).cloned().collect();
            crate::writer::write_posts(dir.path(), name, part).unwrap();
        }
        // Every 13th post deleted; every post of u4 hidden by a takedown.
        let deleted: Vec<Delete> = posts
            .iter()
            .step_by(13)
            .map(|p| Delete { uri: p.uri.clone(), did: p.did.clone(), deleted_at_us: start() + DAYS * 24 * HOUR })
            .collect();
        crate::writer::write_rows(dir.path(), "d.parquet", deleted).unwrap();
        let takedown = AccountEvent {
            did: "did:plc:u4".into(),
            seen_at_us: start(),
            active: Some(false),
            status: Some("takendown".into()),
            ..AccountEvent::default()
        };
        crate::writer::write_rows(dir.path(), "e.parquet", vec![takedown]).unwrap();
        // One file of 2024-10-30 without rollups: that day is read row by row.
        let unrolled = dir.path().join("posts/date=2024-10-30/b.parquet");
        for kind in crate::rollup::Kind::POSTS {
            fs::remove_file(crate::rollup::path_for(&unrolled, kind)).unwrap();
        }
        let hot: Vec<Post> = (5000..5120).map(|i| post(i, &mut next)).collect();
        let open = |rollups: bool| {
            let engine = Engine::open(dir.path(), &EngineConfig { threads: 2, rollups, text_indexes: true }).unwrap();
            engine.set_hot(HotTier::posts(&hot)).unwrap();
            engine
        };
        let (rolled, plain) = (open(true), open(false));
        let gone: std::collections::HashSet<String> = posts.iter().step_by(13).map(|p| p.uri.clone()).collect();
        let live = posts
            .into_iter()
            .chain(hot.iter().cloned())
            .filter(|p| !gone.contains(&p.uri) && p.did != "did:plc:u4")
            .collect();
        Fixture { _dir: dir, rolled, plain, live }
    })
}

fn zone(name: &str) -> chrono_tz::Tz {
    crate::zone::parse_zone(name).unwrap()
}

/// A time in the fixture's span (and a little beyond): on a whole hour, or anywhere.
fn instant() -> impl Strategy<Value = i64> {
    (-30..(DAYS * 24 + 30), prop::bool::ANY, 0..HOUR)
        .prop_map(|(hour, whole, within)| start() + hour * HOUR + if whole { 0 } else { within })
}

fn range() -> impl Strategy<Value = (Option<i64>, Option<i64>)> {
    (prop::option::weighted(0.8, instant()), prop::option::weighted(0.8, instant())).prop_map(|(a, b)| match (a, b) {
        (Some(a), Some(b)) => (Some(a.min(b)), Some(a.max(b) + 1)),
        other => other,
    })
}

fn filter() -> impl Strategy<Value = PostFilter> {
    (
        range(),
        prop::sample::subsequence(vec!["en", "ja", "en-us", "pt", "fr"], 0..3),
        prop::option::of(prop::bool::ANY),
        prop::sample::subsequence(EMBEDS.to_vec(), 0..3),
    )
        .prop_map(|((since_us, until_us), langs, is_reply, embed_types)| PostFilter {
            since_us,
            until_us,
            langs: langs.into_iter().map(str::to_owned).collect(),
            is_reply,
            embed_types,
            ..PostFilter::default()
        })
}

/// Whether `post` matches `filter` (of what [`filter`] sets), in plain Rust.
fn matches(filter: &PostFilter, post: &Post) -> bool {
    let time = filter.since_us.is_none_or(|since| post.created_at_us >= since)
        && filter.until_us.is_none_or(|until| post.created_at_us < until);
    let lang = filter.langs.is_empty()
        || post.langs.iter().any(|tag| {
            let tag = tag.to_lowercase();
            let bare = tag.split('-').next().unwrap_or_default();
            filter.langs.iter().any(|wanted| if wanted.contains('-') { *wanted == tag } else { wanted == bare })
        });
    let reply = filter.is_reply.is_none_or(|is_reply| post.reply_parent.is_some() == is_reply);
    let embed = filter.embed_types.is_empty() || filter.embed_types.contains(&post.embed_type);
    time && lang && reply && embed
}

fn buckets_of(engine: &Engine, plan: &(PostFilter, Interval, &str, Option<Dimension>, bool)) -> Vec<Bucket> {
    let (filter, interval, zone_name, group_by, replies) = plan;
    let measures = Measures { authors: false, replies: *replies };
    engine.time_buckets(filter, *interval, zone(zone_name), *group_by, measures).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn time_buckets_from_rollups_are_the_posts_own(
        filter in filter(),
        interval in prop::sample::select(vec![Interval::Hour, Interval::Day, Interval::Week, Interval::Month]),
        zone_name in prop::sample::select(ZONES.to_vec()),
        group_by in prop::sample::select(vec![None, Some(Dimension::Lang), Some(Dimension::EmbedType), Some(Dimension::IsReply)]),
        replies in prop::bool::ANY,
    ) {
        let lakes = fixture();
        let plan = (filter, interval, zone_name, group_by, replies);
        prop_assert_eq!(buckets_of(&lakes.rolled, &plan), buckets_of(&lakes.plain, &plan));
    }

    #[test]
    fn counts_from_rollups_are_the_posts_own_and_the_live_posts_counted_in_rust(filter in filter()) {
        let lakes = fixture();
        let expected = lakes.live.iter().filter(|post| matches(&filter, post)).count() as u64;
        prop_assert_eq!(lakes.rolled.count(&filter).unwrap(), expected);
        prop_assert_eq!(lakes.plain.count(&filter).unwrap(), expected);
    }

    /// A count the rollups cannot answer (by hashtag) reads the posts: over a week or less, the
    /// day partitions' files by name less their deleted posts as the rollup tables know them
    /// (`Engine::days_posts_sql`), else the `posts` view. Either way, the live posts.
    #[test]
    fn counts_from_the_posts_of_a_few_days_leave_out_what_is_not_live(
        filter in filter(),
        tag in prop::sample::select(vec!["rust", "tokyo", "lake"]),
    ) {
        let lakes = fixture();
        let filter = PostFilter { hashtags: vec![tag.to_owned()], ..filter };
        let tagged = |post: &Post| post.hashtags.iter().any(|t| t.eq_ignore_ascii_case(tag));
        let expected = lakes.live.iter().filter(|post| matches(&filter, post) && tagged(post)).count() as u64;
        prop_assert_eq!(lakes.rolled.count(&filter).unwrap(), expected);
        prop_assert_eq!(lakes.plain.count(&filter).unwrap(), expected);
    }

    /// An author's activity: from the posts per author and UTC day in memory where the plan
    /// allows (UTC, by day, week or month), from the posts otherwise; the same either way, and
    /// as many posts in all as the author has in the range.
    #[test]
    fn author_buckets_from_rollups_are_the_posts_own(
        (since_us, until_us) in range(),
        authors in prop::sample::subsequence((0..12).map(|a| format!("did:plc:u{a}")).collect::<Vec<_>>(), 1..4),
        interval in prop::sample::select(vec![Interval::Hour, Interval::Day, Interval::Week, Interval::Month]),
        zone_name in prop::sample::select(vec!["UTC", "UTC", "Asia/Tokyo"]),
        group_by in prop::sample::select(vec![None, Some(Dimension::Author)]),
        measures in prop::sample::select(vec![Measures { authors: false, replies: false }, Measures { authors: true, replies: false }, Measures::ALL]),
    ) {
        let lakes = fixture();
        let filter = PostFilter { since_us, until_us, authors, ..PostFilter::default() };
        let of = |engine: &Engine| engine.time_buckets(&filter, interval, zone(zone_name), group_by, measures).unwrap();
        let rolled = of(&lakes.rolled);
        prop_assert_eq!(&rolled, &of(&lakes.plain));
        let expected = lakes.live.iter().filter(|post| matches(&filter, post) && filter.authors.contains(&post.did)).count();
        prop_assert_eq!(rolled.iter().map(|b| b.posts).sum::<u64>(), expected as u64);
    }

    #[test]
    fn top_hashtags_from_rollups_are_the_posts_own(
        (since_us, until_us) in range(),
        limit in 1_u32..6,
        count_authors in prop::bool::ANY,
    ) {
        let lakes = fixture();
        let filter = PostFilter { since_us, until_us, ..PostFilter::default() };
        let plan = TopPlan { filter, limit, count_authors };
        prop_assert_eq!(lakes.rolled.top_hashtags(&plan).unwrap(), lakes.plain.top_hashtags(&plan).unwrap());
    }

    #[test]
    fn top_authors_from_rollups_are_the_posts_own((since_us, until_us) in range(), limit in 1_u32..12) {
        let lakes = fixture();
        let filter = PostFilter { since_us, until_us, ..PostFilter::default() };
        let plan = TopPlan::new(filter, limit);
        prop_assert_eq!(lakes.rolled.top_authors(&plan).unwrap(), lakes.plain.top_authors(&plan).unwrap());
    }
}

/// Whole days without a post: no tags from the rollups, and no count of authors over none.
#[test]
fn top_hashtags_with_authors_of_days_without_posts_are_none() {
    let lakes = fixture();
    let later = start() + 40 * 24 * HOUR;
    let filter = PostFilter { since_us: Some(later), until_us: Some(later + 2 * 24 * HOUR), ..PostFilter::default() };
    take_answered();
    assert_eq!(lakes.rolled.top_hashtags(&TopPlan::new(filter, 5)).unwrap(), Vec::new());
    assert_eq!(take_answered().iter().map(|a| a.from).collect::<Vec<_>>(), ["rollups"]);
}

#[test]
fn rollups_answer_what_they_can_and_say_which_path_answered() {
    let lakes = fixture();
    take_answered();
    let whole_days =
        PostFilter { since_us: Some(start()), until_us: Some(start() + 10 * 24 * HOUR), ..PostFilter::default() };
    let counts = Measures { authors: false, replies: true };
    lakes.rolled.time_buckets(&whole_days, Interval::Day, zone("UTC"), Some(Dimension::Lang), counts).unwrap();
    lakes.rolled.time_buckets(&whole_days, Interval::Day, zone("UTC"), None, Measures::ALL).unwrap();
    lakes.rolled.time_buckets(&whole_days, Interval::Hour, zone("Asia/Kolkata"), None, counts).unwrap();
    lakes.rolled.top_hashtags(&TopPlan { filter: whole_days.clone(), limit: 3, count_authors: false }).unwrap();
    lakes.rolled.top_hashtags(&TopPlan::new(whole_days.clone(), 3)).unwrap();
    let within_a_day = PostFilter { until_us: Some(start() + 20 * HOUR), ..whole_days.clone() };
    lakes.rolled.top_hashtags(&TopPlan::new(within_a_day.clone(), 3)).unwrap();
    lakes.rolled.count(&PostFilter { is_reply: Some(true), ..whole_days.clone() }).unwrap();
    lakes.rolled.count(&PostFilter { hashtags: vec!["rust".into()], ..whole_days.clone() }).unwrap();
    let some = PostFilter { authors: vec!["did:plc:u1".into(), "did:plc:u2".into()], ..whole_days.clone() };
    let posts_and_authors = Measures { authors: true, replies: false };
    lakes.rolled.time_buckets(&some, Interval::Week, zone("UTC"), Some(Dimension::Author), posts_and_authors).unwrap();
    lakes.rolled.time_buckets(&some, Interval::Day, zone("UTC"), None, Measures::ALL).unwrap();
    lakes.rolled.top_authors(&TopPlan::new(whole_days.clone(), 3)).unwrap();
    let english = PostFilter { langs: vec!["en".into()], ..whole_days.clone() };
    lakes.rolled.top_authors(&TopPlan::new(english, 3)).unwrap();
    lakes.rolled.top_authors(&TopPlan::new(within_a_day, 3)).unwrap();
    let from = |a: &Answered| (a.question, a.from, a.why);
    assert_eq!(
        take_answered().iter().map(from).collect::<Vec<_>>(),
        vec![
            ("timeBuckets", "rollups", None),
            ("timeBuckets", "posts", Some("distinct authors are counted from the posts")),
            ("timeBuckets", "posts", Some("the time zone's offset is not a whole number of hours")),
            ("topHashtags", "rollups", None),
            ("topHashtags", "rollups", None),
            ("topHashtags", "posts", Some("the range holds no whole UTC day")),
            ("totalCount", "rollups", None),
            ("totalCount", "posts", Some("the filter reads a column rollups do not hold")),
            ("timeBuckets", "rollups", None),
            ("timeBuckets", "posts", Some("replies per author are counted from the posts")),
            ("topAuthors", "rollups", None),
            ("topAuthors", "posts", Some("author rollups are filtered by time alone")),
            ("topAuthors", "posts", Some("the range holds no whole UTC day")),
        ]
    );
    lakes.plain.time_buckets(&whole_days, Interval::Day, zone("UTC"), None, counts).unwrap();
    assert_eq!(take_answered()[0].why, Some("rollups are off (--rollups false)"));
}

/// A statement over a few days (of the lake's files, for a range open at an end) reads those
/// days' files by name, less their deleted posts from the rollup tables; over more days, or
/// with rollups off, the `posts` view and its anti-join with every delete.
#[test]
fn statements_over_a_few_days_read_their_files_less_the_dead_rows() {
    let lakes = fixture();
    let day = |n: i64| start() + n * 24 * HOUR;
    let tagged = |since_us, until_us| PostFilter {
        since_us: Some(since_us),
        until_us: Some(until_us),
        hashtags: vec!["rust".into()],
        ..PostFilter::default()
    };
    let statement = |engine: &Engine, filter: &PostFilter| {
        crate::exec::explain_on_this_thread(true);
        take_answered();
        engine.count(filter).unwrap();
        let answered = take_answered();
        crate::exec::explain_on_this_thread(false);
        answered[0].statements.last().expect("a statement").sql.clone()
    };
    // As a server does before it is ready (the test alone would otherwise find them behind).
    lakes.rolled.prepare_rollups().unwrap();
    assert!(statement(&lakes.rolled, &tagged(day(2), day(3))).contains("FROM dead_rows WHERE deleted"));
    assert!(statement(&lakes.rolled, &tagged(day(1) + 5, day(8))).contains("FROM dead_rows WHERE deleted"));
    assert!(!statement(&lakes.rolled, &tagged(day(0), day(9))).contains("dead_rows"), "more than a week");
    // Open at the end: up to the lake's last day of files (its 12th).
    let since = |since_us| PostFilter { until_us: None, ..tagged(since_us, 0) };
    assert!(statement(&lakes.rolled, &since(day(DAYS - 4))).contains("FROM dead_rows WHERE deleted"));
    assert!(!statement(&lakes.rolled, &since(day(DAYS - 9))).contains("dead_rows"), "more than a week of files");
    assert!(!statement(&lakes.plain, &tagged(day(2), day(3))).contains("dead_rows"), "rollups off");
}

/// The rollup path's answers against counts over the live posts in plain Rust: per local day in
/// New York (across its DST change) and language, and the top hashtags of a range with ragged
/// ends.
#[test]
fn rollup_answers_match_counts_in_rust() {
    let lakes = fixture();
    let ny = zone("America/New_York");
    let (since, until) = (start() + 7 * HOUR + 12_345, start() + 11 * 24 * HOUR - 999);
    let filter = PostFilter { since_us: Some(since), until_us: Some(until), ..PostFilter::default() };
    let in_range: Vec<&Post> =
        lakes.live.iter().filter(|p| p.created_at_us >= since && p.created_at_us < until).collect();

    take_answered();
    let counts = Measures { authors: false, replies: true };
    let buckets = lakes.rolled.time_buckets(&filter, Interval::Day, ny, Some(Dimension::Lang), counts).unwrap();
    let mut expected: BTreeMap<(i64, Option<String>), (u64, u64)> = BTreeMap::new();
    for post in &in_range {
        let local = ny.from_utc_datetime(&DateTime::from_timestamp_micros(post.created_at_us).unwrap().naive_utc());
        let day = ny.from_local_datetime(&local.date_naive().and_hms_opt(0, 0, 0).unwrap()).unwrap().timestamp_micros();
        let mut langs: Vec<Option<String>> =
            post.langs.iter().map(|l| Some(l.split('-').next().unwrap().to_lowercase())).collect();
        langs.sort();
        langs.dedup();
        if langs.is_empty() {
            langs.push(None);
        }
        for lang in langs {
            let entry = expected.entry((day, lang)).or_default();
            entry.0 += 1;
            entry.1 += u64::from(post.reply_parent.is_some());
        }
    }
    let got: BTreeMap<(i64, Option<String>), (u64, u64)> =
        buckets.into_iter().filter(|b| b.posts > 0).map(|b| ((b.start_us, b.group), (b.posts, b.replies))).collect();
    assert_eq!(got, expected);

    let top = lakes.rolled.top_hashtags(&TopPlan::new(filter.clone(), 10)).unwrap();
    let mut tags: BTreeMap<String, (u64, std::collections::BTreeSet<&str>)> = BTreeMap::new();
    for post in &in_range {
        let mut distinct = post.hashtags.clone();
        distinct.sort();
        distinct.dedup();
        for tag in distinct {
            let entry = tags.entry(tag).or_default();
            entry.0 += 1;
            entry.1.insert(&post.did);
        }
    }
    let mut expected: Vec<(String, u64, u64)> =
        tags.into_iter().map(|(tag, (posts, authors))| (tag, posts, authors.len() as u64)).collect();
    expected.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    assert_eq!(top.into_iter().map(|t| (t.tag, t.posts, t.authors)).collect::<Vec<_>>(), expected);

    let top = lakes.rolled.top_authors(&TopPlan::new(filter, 8)).unwrap();
    let mut authors: BTreeMap<String, u64> = BTreeMap::new();
    for post in &in_range {
        *authors.entry(post.did.clone()).or_default() += 1;
    }
    let mut expected: Vec<(String, u64)> = authors.into_iter().collect();
    expected.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    expected.truncate(8);
    assert_eq!(top, expected);
    let from: Vec<&str> = take_answered().iter().map(|a| a.from).collect();
    assert_eq!(from, ["rollups", "rollups", "rollups"]);
}

/// An author's posts in all, from the author counts of whole days and the posts they leave out
/// (the hot tier, the partition with a file without rollups), against counts in plain Rust and
/// the posts path; an author without posts (or an unknown DID) is absent.
#[test]
fn author_post_counts_from_rollups_match_counts_in_rust() {
    let lakes = fixture();
    let mut expected: BTreeMap<String, u64> = BTreeMap::new();
    for post in &lakes.live {
        *expected.entry(post.did.clone()).or_default() += 1;
    }
    let mut dids: Vec<String> = (0..30).map(author_did).collect();
    dids.push("did:plc:nobody".into());
    take_answered();
    let got = lakes.rolled.author_posts(&dids).unwrap();
    assert_eq!(got.into_iter().collect::<BTreeMap<_, _>>(), expected);
    let from: Vec<&str> = take_answered().iter().map(|a| a.from).collect();
    assert_eq!(from, ["rollups"]);
    assert_eq!(lakes.plain.author_posts(&dids).unwrap(), lakes.rolled.author_posts(&dids).unwrap());
}

/// The rollup tables follow the lake file by file: after each change (a new file, new deletes,
/// a takedown and a reactivation, a compaction, a re-enrichment that changes hashtags and
/// embed types under the same file names), the rollup path answers as the posts path does.
#[test]
fn rollup_tables_follow_the_lake_as_it_changes() {
    let mut state = 5_u64;
    let mut next = move |n: u64| {
        state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (state >> 33) % n
    };
    let posts: Vec<Post> = (0..1800).map(|i| post(i, &mut next)).collect();
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path();
    let write = |name: &str, part: &[Post]| crate::writer::write_posts(lake, name, part.to_vec()).unwrap();
    let publish = || crate::catalog::publish(lake, chrono::Utc::now().timestamp_micros()).unwrap();
    let account = |did: &str, seen_at_us: i64, active: bool| AccountEvent {
        did: did.into(),
        seen_at_us,
        active: Some(active),
        status: (!active).then(|| "takendown".to_owned()),
        ..AccountEvent::default()
    };
    write("a.parquet", &posts[..900]);
    let rolled = Engine::open(lake, &EngineConfig { threads: 2, rollups: true, text_indexes: true }).unwrap();
    let plain = Engine::open(lake, &EngineConfig { threads: 2, rollups: false, text_indexes: true }).unwrap();
    let ragged = PostFilter {
        since_us: Some(start() + 5 * HOUR + 777),
        until_us: Some(start() + 9 * 24 * HOUR + 31),
        ..PostFilter::default()
    };
    let check = |step: &str| {
        let counts = Measures { authors: false, replies: true };
        for (filter, interval, zone_name, group_by) in [
            (PostFilter::default(), Interval::Hour, "UTC", None),
            (ragged.clone(), Interval::Day, "America/New_York", Some(Dimension::Lang)),
            (ragged.clone(), Interval::Week, "Europe/Berlin", Some(Dimension::EmbedType)),
        ] {
            let z = zone(zone_name);
            take_answered();
            let got = rolled.time_buckets(&filter, interval, z, group_by, counts).unwrap();
            assert_eq!(take_answered()[0].from, "rollups", "{step}");
            assert_eq!(got, plain.time_buckets(&filter, interval, z, group_by, counts).unwrap(), "{step}");
        }
        for filter in [PostFilter::default(), ragged.clone()] {
            let top = TopPlan::new(filter, 10);
            take_answered();
            assert_eq!(rolled.top_hashtags(&top).unwrap(), plain.top_hashtags(&top).unwrap(), "{step}");
            assert_eq!(take_answered()[0].from, "rollups", "{step}");
            assert_eq!(rolled.top_authors(&top).unwrap(), plain.top_authors(&top).unwrap(), "{step}");
            assert_eq!(take_answered()[0].from, "rollups", "{step}");
        }
    };
    check("one file");

    write("b.parquet", &posts[900..]);
    publish();
    check("a second file");

    let deleted: Vec<Delete> = posts
        .iter()
        .step_by(7)
        .map(|p| Delete { uri: p.uri.clone(), did: p.did.clone(), deleted_at_us: start() + DAYS * 24 * HOUR })
        .collect();
    crate::writer::write_rows(lake, "d1.parquet", deleted[..100].to_vec()).unwrap();
    publish();
    check("deletes");
    // The same posts deleted again, with others.
    crate::writer::write_rows(lake, "d2.parquet", deleted[50..].to_vec()).unwrap();
    publish();
    check("more deletes");

    crate::writer::write_rows(lake, "t.parquet", vec![account("did:plc:u2", start(), false)]).unwrap();
    publish();
    check("a takedown");
    crate::writer::write_rows(lake, "r.parquet", vec![account("did:plc:u2", start() + HOUR, true)]).unwrap();
    crate::writer::write_rows(lake, "t2.parquet", vec![account("did:plc:u5", start() + HOUR, false)]).unwrap();
    publish();
    check("a reactivation and another takedown");

    let cancel = std::sync::atomic::AtomicBool::new(false);
    let day = crate::layout::date_of_micros(start() + 3 * 24 * HOUR);
    let compacted = crate::compact::compact_partition(lake, day, 1 << 30, 1, &cancel).unwrap();
    assert!(compacted.changed(), "{compacted:?}");
    check("a compaction");

    let retag = |post: &mut Post| {
        post.hashtags = vec!["renamed".into()];
        post.embed_type = EmbedType::Video;
        post.enrich_version = 99;
    };
    let day = crate::layout::date_of_micros(start() + 5 * 24 * HOUR);
    let rewritten = crate::rewrite::redo_stale_posts(lake, day, 99, 2, retag).unwrap();
    assert!(rewritten.rewritten_files > 0, "{rewritten:?}");
    check("a re-enrichment");
}

/// Trending hashtags from the rollups against the posts path, and against counts in plain Rust:
/// windows and baselines with ragged ends, a window of no whole hour, overlapping ranges, over
/// the day without rollups, deleted and hidden posts and the hot tier.
#[test]
fn trending_from_rollups_matches_the_posts_path_and_counts_in_rust_for_every_kind() {
    let lakes = fixture();
    let day = 24 * HOUR;
    let cases = [
        ((start() + 10 * day + 1_234, start() + 11 * day - 77), (start() + 7 * HOUR + 5, start() + 10 * day + 1_234)),
        ((start() + 5 * day + 60_000_000, start() + 5 * day + 1_800_000_000), (start(), start() + 5 * day)),
        ((start() + 3 * day, start() + 4 * day), (start() + 2 * day + 17, start() + 6 * day)),
    ];
    let replies = PostFilter { is_reply: Some(true), ..PostFilter::default() };
    let kinds = [
        (TrendKind::Hashtag, PostFilter::default()),
        (TrendKind::LinkDomain, PostFilter::default()),
        (TrendKind::Lang, PostFilter::default()),
        (TrendKind::Lang, replies),
    ];
    take_answered();
    for (kind, filter) in &kinds {
        for (window, baseline) in cases {
            for rank in [TrendRank::Ratio, TrendRank::ZScore] {
                let plan = TrendPlan::new(*kind, filter.clone(), window, baseline, rank, 1, 100).unwrap();
                let rolled = lakes.rolled.trending(&plan).unwrap();
                let context = format!("{kind:?} {filter:?}, {window:?} against {baseline:?}");
                assert_eq!(rolled, lakes.plain.trending(&plan).unwrap(), "{context}");
                // Each item's posts in the window and in the baseline, counted in Rust.
                let mut counts: BTreeMap<String, (u64, u64)> = BTreeMap::new();
                let posts = lakes.live.iter().filter(|p| filter.is_reply.is_none_or(|r| p.reply_parent.is_some() == r));
                for post in posts {
                    let at = post.created_at_us;
                    let [in_window, in_baseline] =
                        [window, baseline].map(|(since, until)| u64::from(at >= since && at < until));
                    for item in trend_items(*kind, post) {
                        let count = counts.entry(item).or_default();
                        (count.0, count.1) = (count.0 + in_window, count.1 + in_baseline);
                    }
                }
                let expected: Vec<(String, u64, u64)> =
                    counts.into_iter().filter(|(_, (w, _))| *w > 0).map(|(item, (w, b))| (item, w, b)).collect();
                let mut got: Vec<(String, u64, u64)> =
                    rolled.iter().map(|t| (t.item.clone(), t.posts, t.baseline_posts)).collect();
                got.sort();
                assert!(!got.is_empty(), "{context}");
                assert_eq!(got, expected, "{context}");
            }
        }
    }
    let answered = take_answered();
    let rolled: Vec<_> = answered.iter().filter(|a| a.from == "rollups").map(|a| a.question).collect();
    assert_eq!(rolled, ["trending"; 24], "{answered:?}");
}
