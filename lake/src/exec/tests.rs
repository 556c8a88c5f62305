//! Plans run on real DuckDB over real Parquet files written by the lake writer; every answer
//! is checked against the same question asked of the rows in plain Rust.

use super::*;
use crate::model::EmbedType;
use crate::plan::{Keyset, PostOrder};
use crate::search::{TextMode, TextQuery};
use crate::writer::write_posts;

const DAY: i64 = 86_400_000_000;
const LANGS: [&[&str]; 5] = [&["en"], &["en-GB"], &["ja"], &["pt-BR", "en"], &[]];
const WORDS: [&str; 5] = ["Water is wet", "the lake", "水の音", "café ☕ 100%", "WATERfall"];

/// A deterministic pseudo-random source: each call gives a number below its argument.
fn random(seed: u64) -> impl FnMut(u64) -> u64 {
    let mut state = seed;
    move |n: u64| {
        state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (state >> 33) % n
    }
}

/// Deterministic rows spread over three days.
fn rows() -> Vec<Post> {
    let mut next = random(42_u64);
    (0..600)
        .map(|i| {
            let created_at_us = 20_000 * DAY + (next(3 * DAY as u64 / 1000) as i64) * 1000;
            let lang = LANGS[next(5) as usize];
            Post {
                uri: format!("at://did:plc:a{}/app.bsky.feed.post/{i:05}", i % 7),
                cid: format!("c{i}"),
                did: format!("did:plc:a{}", i % 7),
                rkey: format!("{i:05}"),
                created_at_us,
                indexed_at_us: created_at_us + 1,
                text: WORDS[next(5) as usize].to_owned(),
                langs: lang.iter().map(|l| l.to_string()).collect(),
                hashtags: if i % 4 == 0 { vec!["rust".into()] } else { vec![] },
                reply_parent: (i % 3 == 0).then(|| "at://p".to_owned()),
                embed_type: if i % 5 == 0 { EmbedType::Images } else { EmbedType::None },
                ..Post::default()
            }
        })
        .collect()
}

fn lake_with(rows: &[Post]) -> (tempfile::TempDir, Engine) {
    let dir = tempfile::tempdir().unwrap();
    write_posts(dir.path(), "a.parquet", rows[..400].to_vec()).unwrap();
    write_posts(dir.path(), "b.parquet", rows[400..].to_vec()).unwrap();
    let engine = Engine::open(dir.path(), &EngineConfig::with_threads(2)).unwrap();
    (dir, engine)
}

/// The `n`-th like of a test, of `post` by `actor`, on day 20,000 + `day`.
fn like_of(post: &Post, actor: String, n: usize, day: i64) -> crate::model::Interaction {
    let created_at_us = (20_000 + day) * DAY + n as i64;
    crate::model::Interaction {
        did: actor,
        kind: crate::model::InteractionKind::Like,
        rkey: format!("l{n:06}"),
        subject_did: post.did.clone(),
        subject_rkey: post.rkey.clone(),
        created_at_us,
        indexed_at_us: created_at_us,
    }
}

fn newest_first(rows: &[Post], keep: impl Fn(&Post) -> bool) -> Vec<String> {
    let mut kept: Vec<&Post> = rows.iter().filter(|p| keep(p)).collect();
    kept.sort_by(|a, b| (b.created_at_us, &b.uri).cmp(&(a.created_at_us, &a.uri)));
    kept.into_iter().map(|p| p.uri.clone()).collect()
}

fn all_pages(engine: &Engine, filter: &PostFilter, order: PostOrder, page: u32) -> Vec<String> {
    let mut plan = PostsPlan::new(filter.clone(), order, page, []);
    let mut seen = Vec::new();
    loop {
        let rows = engine.posts(&plan).unwrap();
        let Some(last) = rows.last() else { return seen };
        plan.after = Some(Keyset { created_at_us: last.created_at_us, uri: last.uri.clone() });
        seen.extend(rows.into_iter().map(|p| p.uri));
    }
}

#[test]
fn an_empty_lake_answers_with_zero_rows() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path(), &EngineConfig::default()).unwrap();
    assert_eq!(engine.count(&PostFilter::default()).unwrap(), 0);
    let plan = PostsPlan::new(PostFilter::default(), PostOrder::Newest, 10, PostColumn::ALL);
    assert!(engine.posts(&plan).unwrap().is_empty());
    // The first file appears later: the engine reads it once it is published.
    write_posts(dir.path(), "x.parquet", rows()[..5].to_vec()).unwrap();
    assert_eq!(engine.count(&PostFilter::default()).unwrap(), 0);
    crate::catalog::publish(dir.path(), 1).unwrap();
    assert_eq!(engine.count(&PostFilter::default()).unwrap(), 5);
}

#[test]
fn pages_in_both_orders_list_every_post_once_across_files() {
    let rows = rows();
    let (_dir, engine) = lake_with(&rows);
    let everything = PostFilter::default();
    let expected = newest_first(&rows, |_| true);
    assert_eq!(engine.count(&everything).unwrap(), 600);
    assert_eq!(all_pages(&engine, &everything, PostOrder::Newest, 37), expected);
    let mut oldest = expected.clone();
    oldest.reverse();
    assert_eq!(all_pages(&engine, &everything, PostOrder::Oldest, 50), oldest);
}

#[test]
fn filters_select_what_the_same_predicate_in_rust_selects() {
    let rows = rows();
    let (_dir, engine) = lake_with(&rows);
    let since = 20_001 * DAY;
    let until = 20_002 * DAY + DAY / 2;
    type Case = (PostFilter, Box<dyn Fn(&Post) -> bool>);
    let cases: Vec<Case> = vec![
        (PostFilter { since_us: Some(since), ..Default::default() }, Box::new(move |p| p.created_at_us >= since)),
        (
            PostFilter { since_us: Some(since), until_us: Some(until), ..Default::default() },
            Box::new(move |p| p.created_at_us >= since && p.created_at_us < until),
        ),
        (PostFilter { authors: vec!["did:plc:a3".into()], ..Default::default() }, Box::new(|p| p.did == "did:plc:a3")),
        (
            PostFilter { langs: vec!["en".into()], ..Default::default() },
            Box::new(|p| p.langs.iter().any(|l| l == "en" || l.starts_with("en-"))),
        ),
        (
            PostFilter { langs: vec!["en-gb".into()], ..Default::default() },
            Box::new(|p| p.langs.iter().any(|l| l == "en-GB")),
        ),
        (
            PostFilter {
                text: vec![TextQuery { query: "water".into(), mode: TextMode::Substring }],
                ..Default::default()
            },
            Box::new(|p| p.text.to_lowercase().contains("water")),
        ),
        (
            PostFilter {
                text: vec![TextQuery { query: "水".into(), mode: TextMode::Substring }],
                ..Default::default()
            },
            Box::new(|p| p.text.contains('水')),
        ),
        (
            PostFilter {
                text: vec![TextQuery { query: "0%".into(), mode: TextMode::Substring }],
                ..Default::default()
            },
            Box::new(|p| p.text.contains("0%")),
        ),
        (PostFilter { hashtags: vec!["#RUST".into()], ..Default::default() }, Box::new(|p| !p.hashtags.is_empty())),
        (PostFilter { is_reply: Some(false), ..Default::default() }, Box::new(|p| p.reply_parent.is_none())),
        (
            PostFilter { embed_types: vec![EmbedType::Images], ..Default::default() },
            Box::new(|p| p.embed_type == EmbedType::Images),
        ),
    ];
    for (filter, keep) in cases {
        let expected = newest_first(&rows, &keep);
        assert!(!expected.is_empty(), "{filter:?} selects nothing");
        assert_eq!(engine.count(&filter).unwrap() as usize, expected.len(), "{filter:?}");
        assert_eq!(all_pages(&engine, &filter, PostOrder::Newest, 64), expected, "{filter:?}");
    }
}

#[test]
fn only_the_selected_columns_are_filled() {
    let rows = rows();
    let (_dir, engine) = lake_with(&rows);
    let plan = PostsPlan::new(PostFilter::default(), PostOrder::Newest, 1, [PostColumn::Langs]);
    let post = engine.posts(&plan).unwrap().remove(0);
    let original = rows.iter().find(|p| p.uri == post.uri).unwrap();
    assert_eq!(post.langs, original.langs);
    assert_eq!(post.created_at_us, original.created_at_us);
    assert!(post.text.is_empty() && post.did.is_empty(), "unselected columns stay empty");
}

#[test]
fn stats_count_files_partitions_and_distinct_posts() {
    let rows = rows();
    let (dir, engine) = lake_with(&rows);
    crate::catalog::publish(dir.path(), 77).unwrap();
    let stats = engine.stats().unwrap();
    assert_eq!(stats.posts, 600);
    assert_eq!(stats.partitions, 3);
    assert_eq!(stats.files, 6);
    assert_eq!(stats.generation, 1);
    assert_eq!(stats.last_flush_at_us, Some(77));
    assert_eq!(stats.oldest_post_us, rows.iter().map(|p| p.created_at_us).min());
}

/// Pages of the newest and oldest posts are looked for first in the newest (oldest) row groups
/// by their statistics, then deeper: pages that fill there, pages a filter or deletes leave
/// short there, and pages after a cursor are all the pages of the whole range.
#[test]
fn pages_looked_for_in_the_nearest_row_groups_first_are_the_pages() {
    // One day: each file of 35,000 rows is three row groups.
    let mut next = random(7);
    let rows: Vec<Post> = (0..70_000)
        .map(|i| {
            let created_at_us = 20_000 * DAY + (next(DAY as u64 / 1000) as i64) * 1000;
            Post {
                uri: format!("at://did:plc:a{}/app.bsky.feed.post/{i:06}", i % 7),
                did: format!("did:plc:a{}", i % 7),
                rkey: format!("{i:06}"),
                created_at_us,
                indexed_at_us: created_at_us + 1,
                langs: vec![if next(5) == 0 { "ja" } else { "en" }.to_owned()],
                ..Post::default()
            }
        })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    write_posts(dir.path(), "a.parquet", rows[..35_000].to_vec()).unwrap();
    write_posts(dir.path(), "b.parquet", rows[35_000..].to_vec()).unwrap();
    // The newest 6,000 posts but six are deleted: a first look there finds too few.
    let newest = newest_first(&rows, |_| true);
    let deleted: Vec<String> =
        newest[..6_000].iter().enumerate().filter(|(i, _)| i % 1_000 != 0).map(|(_, uri)| uri.clone()).collect();
    let deletes: Vec<crate::model::Delete> = deleted
        .iter()
        .map(|uri| crate::model::Delete {
            uri: uri.clone(),
            did: crate::model::post_uri_parts(uri).unwrap().0.to_owned(),
            deleted_at_us: 20_010 * DAY,
        })
        .collect();
    crate::writer::write_rows(dir.path(), "d.parquet", deletes).unwrap();
    crate::catalog::publish(dir.path(), 1).unwrap();
    let engine = Engine::open(dir.path(), &EngineConfig::with_threads(2)).unwrap();

    let deleted: std::collections::HashSet<String> = deleted.into_iter().collect();
    let first_pages = |filter: &PostFilter, order: PostOrder, page: u32, pages: usize| {
        let mut plan = PostsPlan::new(filter.clone(), order, page, []);
        let mut seen = Vec::new();
        for _ in 0..pages {
            let rows = engine.posts(&plan).unwrap();
            let Some(last) = rows.last() else { break };
            plan.after = Some(Keyset { created_at_us: last.created_at_us, uri: last.uri.clone() });
            seen.extend(rows.into_iter().map(|p| p.uri));
        }
        seen
    };
    let everything = PostFilter::default();
    let plan = PostsPlan::new(everything.clone(), PostOrder::Newest, 20, []);
    let cut = engine.stats_page_window(&plan, 1_000).unwrap().expect("the row groups narrow the page");
    assert!(cut.filter.since_us.is_some(), "{cut:?}");
    let live = newest_first(&rows, |p| !deleted.contains(&p.uri));
    assert_eq!(first_pages(&everything, PostOrder::Newest, 20, 30), live[..600]);
    let mut oldest = live.clone();
    oldest.reverse();
    assert_eq!(first_pages(&everything, PostOrder::Oldest, 50, 12), oldest[..600]);
    // A filter few posts pass: one author's posts in Japanese.
    let few = PostFilter { authors: vec!["did:plc:a3".into()], langs: vec!["ja".into()], ..Default::default() };
    let expected = newest_first(&rows, |p| !deleted.contains(&p.uri) && p.did == "did:plc:a3" && p.langs == ["ja"]);
    assert!(expected.len() > 1_500, "{}", expected.len());
    assert_eq!(first_pages(&few, PostOrder::Newest, 100, 100), expected);
}

#[test]
fn deleted_posts_disappear_from_every_answer() {
    let rows = rows();
    let (dir, engine) = lake_with(&rows);
    let deleted: Vec<&Post> = rows.iter().filter(|p| p.rkey.ends_with('7')).collect();
    let deletes: Vec<crate::model::Delete> = deleted
        .iter()
        .map(|p| crate::model::Delete { uri: p.uri.clone(), did: p.did.clone(), deleted_at_us: 20_010 * DAY })
        .collect();
    crate::writer::write_rows(dir.path(), "d.parquet", deletes).unwrap();
    crate::catalog::publish(dir.path(), 1).unwrap();

    let gone = |p: &Post| deleted.iter().any(|d| d.uri == p.uri);
    let expected = newest_first(&rows, |p| !gone(p));
    assert_eq!(engine.count(&PostFilter::default()).unwrap() as usize, expected.len());
    assert_eq!(all_pages(&engine, &PostFilter::default(), PostOrder::Newest, 100), expected);
    let one = PostFilter { uris: vec![deleted[0].uri.clone()], ..Default::default() };
    assert!(engine.posts(&PostsPlan::new(one, PostOrder::Newest, 1, [])).unwrap().is_empty());
    assert_eq!(engine.stats().unwrap().posts as usize, expected.len());
}

#[test]
fn an_interrupt_stops_the_running_statement_and_every_later_one() {
    let rows = rows();
    let (_dir, engine) = lake_with(&rows);
    let engine = std::sync::Arc::new(engine);
    let interrupt = Interrupt::new();
    let filter =
        PostFilter { text: vec![TextQuery { query: "water".into(), mode: TextMode::Words }], ..Default::default() };
    let worker = {
        let (engine, interrupt) = (engine.clone(), interrupt.clone());
        std::thread::spawn(move || {
            with_interrupt(&interrupt, || {
                for _ in 0..100_000 {
                    if let Err(error) = engine.count(&filter) {
                        return Some(error);
                    }
                }
                None
            })
        })
    };
    std::thread::sleep(std::time::Duration::from_millis(50));
    interrupt.interrupt();
    let error = worker.join().unwrap().expect("the loop was stopped");
    assert!(matches!(error, Error::Interrupted), "{error:?}");
    // Other work on the engine is unaffected.
    assert_eq!(engine.count(&PostFilter::default()).unwrap(), 600);
}

#[test]
fn accounts_carry_the_latest_handle_and_hide_posts_while_inactive() {
    use crate::model::AccountEvent;
    let rows = rows();
    let (dir, engine) = lake_with(&rows);
    let count_of = |did: &str| rows.iter().filter(|p| p.did == did).count() as u64;
    let event = |did: &str, seen_at_us: i64| AccountEvent { did: did.into(), seen_at_us, ..AccountEvent::default() };
    let events = vec![
        AccountEvent { handle: Some("old.test".into()), ..event("did:plc:a1", DAY) },
        AccountEvent { handle: Some("new.test".into()), ..event("did:plc:a1", 2 * DAY) },
        // An identity event without a handle keeps the last one known.
        event("did:plc:a1", 3 * DAY),
        AccountEvent { active: Some(false), status: Some("takendown".into()), ..event("did:plc:a2", DAY) },
        AccountEvent { active: Some(false), status: Some("deactivated".into()), ..event("did:plc:a3", DAY) },
        AccountEvent { active: Some(true), ..event("did:plc:a3", 2 * DAY) },
        AccountEvent { active: Some(false), status: Some("throttled".into()), ..event("did:plc:a4", DAY) },
    ];
    crate::writer::write_rows(dir.path(), "accounts.parquet", events).unwrap();
    crate::catalog::publish(dir.path(), 1).unwrap();

    let states = engine.accounts(&["did:plc:a1".into(), "did:plc:a2".into(), "did:plc:none".into()]).unwrap();
    let a1 = states.iter().find(|s| s.did == "did:plc:a1").unwrap();
    assert_eq!((a1.handle.as_deref(), a1.active), (Some("new.test"), None));
    let a2 = states.iter().find(|s| s.did == "did:plc:a2").unwrap();
    assert_eq!((a2.active, a2.status.as_deref()), (Some(false), Some("takendown")));
    assert_eq!(states.len(), 2);

    let authors = |did: &str| PostFilter { authors: vec![did.into()], ..Default::default() };
    assert_eq!(engine.count(&authors("did:plc:a2")).unwrap(), 0, "taken down: hidden");
    assert_eq!(engine.count(&authors("did:plc:a3")).unwrap(), count_of("did:plc:a3"), "reactivated");
    assert_eq!(engine.count(&authors("did:plc:a4")).unwrap(), count_of("did:plc:a4"), "throttled");
    let expected = 600 - count_of("did:plc:a2");
    assert_eq!(engine.count(&PostFilter::default()).unwrap(), expected);
    assert_eq!(all_pages(&engine, &PostFilter::default(), PostOrder::Newest, 97).len() as u64, expected);
}

/// The buffer's deletes and account states apply to the files' posts and the hot tier's at
/// once: a post deleted since the last flush leaves every answer, a takedown in the buffer hides
/// an account, a reactivation there shows one the lake hides; the files alone stay as they are.
#[test]
fn the_hot_tiers_deletes_and_account_states_apply_to_every_post() {
    use crate::model::AccountEvent;
    let rows = rows();
    let (dir, engine) = lake_with(&rows[..500]);
    let hidden = AccountEvent {
        did: "did:plc:a2".into(),
        seen_at_us: DAY,
        active: Some(false),
        status: Some("takendown".into()),
        ..AccountEvent::default()
    };
    crate::writer::write_rows(dir.path(), "accounts.parquet", vec![hidden]).unwrap();
    crate::catalog::publish(dir.path(), 1).unwrap();
    let all = PostFilter::default();
    let count = |filter: &PostFilter| engine.count(filter).unwrap();
    let lake_count = || engine.stats().unwrap().posts;
    let of = |posts: &[Post], did: &str| posts.iter().filter(|p| p.did == did).count() as u64;
    let files = &rows[..500];
    assert!(of(files, "did:plc:a1") > 0 && of(files, "did:plc:a2") > 0, "the fixture has posts of both");
    let base = 500 - of(files, "did:plc:a2");
    assert_eq!(count(&all), base);
    // As of the snapshot the last statement read.
    assert!(engine.hides_author("did:plc:a2") && !engine.hides_author("did:plc:a1"));

    let hot = &rows[500..];
    let deleted = vec![files[3].uri.clone(), files[4].uri.clone(), hot[0].uri.clone()];
    let live = |p: &Post| !deleted.contains(&p.uri);
    // a1 taken down, a2 back: the buffer's word over the lake's.
    let accounts = vec![("did:plc:a1".to_owned(), true), ("did:plc:a2".to_owned(), false)];
    engine.set_hot(HotTier { posts: hot, deleted: &deleted, accounts: &accounts }).unwrap();
    let everything: Vec<Post> = rows.iter().filter(|p| live(p) && p.did != "did:plc:a1").cloned().collect();
    assert_eq!(count(&all), everything.len() as u64);
    assert_eq!(all_pages(&engine, &all, PostOrder::Newest, 83), newest_first(&everything, |_| true));
    let one = PostFilter { uris: vec![files[3].uri.clone()], ..PostFilter::default() };
    assert_eq!(count(&one), 0, "deleted since the flush");
    let a2 = PostFilter { authors: vec!["did:plc:a2".into()], ..PostFilter::default() };
    assert_eq!(count(&a2), of(&everything, "did:plc:a2"), "reactivated in the buffer");
    assert_eq!(lake_count(), base, "the files alone are as the lake says");

    // Only deletes: the lake's hidden account is hidden again.
    engine.set_hot(HotTier { posts: hot, deleted: &deleted, accounts: &[] }).unwrap();
    let expected = rows.iter().filter(|p| live(p) && p.did != "did:plc:a2").count() as u64;
    assert_eq!(count(&all), expected);
    // Emptied: as before.
    engine.set_hot(HotTier::default()).unwrap();
    assert_eq!(count(&all), base);
}

#[test]
fn a_copy_that_slipped_into_the_lake_is_not_listed_twice_in_pages() {
    // The flusher keeps copies out (lake::unique); pages skip one anyway, across page ends.
    let rows = rows();
    let dir = tempfile::tempdir().unwrap();
    write_posts(dir.path(), "a.parquet", rows.clone()).unwrap();
    write_posts(dir.path(), "b.parquet", rows[100..200].to_vec()).unwrap();
    let engine = Engine::open(dir.path(), &EngineConfig::with_threads(2)).unwrap();
    let expected = newest_first(&rows, |_| true);
    for page in [7, 100, 1000] {
        assert_eq!(all_pages(&engine, &PostFilter::default(), PostOrder::Newest, page), expected, "page {page}");
    }
}

/// Posts still in the buffer answer with the files', deletes and hidden accounts applied, and
/// only statements over a range that holds one note it.
#[test]
fn the_hot_tier_answers_with_the_files_until_it_is_emptied() {
    let rows = rows();
    let (dir, engine) = lake_with(&rows[..500]);
    let everything = PostFilter::default();
    let count = |filter: &PostFilter| engine.count(filter).unwrap();
    assert_eq!(count(&everything), 500);

    // The last hundred are still buffered, later than every file's post.
    let mut hot: Vec<Post> = rows[500..].to_vec();
    for (n, post) in hot.iter_mut().enumerate() {
        post.created_at_us = 20_005 * DAY + n as i64;
        post.embed_type = EmbedType::Images;
    }
    engine.set_hot(HotTier::posts(&hot)).unwrap();
    assert!(!take_touched().hot);
    assert_eq!(count(&everything), 600);
    assert_eq!(take_touched(), Touched { hot: true, today: true }, "an open range reads the hot tier and today");
    let past = PostFilter { until_us: Some(20_004 * DAY), ..PostFilter::default() };
    assert_eq!(count(&past), 500);
    assert_eq!(take_touched(), Touched { hot: false, today: false }, "a range before every hot post does not");

    // Pages run across the files and the hot tier, newest (the hot posts) first.
    let mut all = rows[..500].to_vec();
    all.extend(hot.iter().cloned());
    assert_eq!(all_pages(&engine, &everything, PostOrder::Newest, 70), newest_first(&all, |_| true));
    let images = PostFilter { embed_types: vec![EmbedType::Images], ..PostFilter::default() };
    assert_eq!(count(&images), newest_first(&all, |p| p.embed_type == EmbedType::Images).len() as u64);
    let tops = engine.top_hashtags(&TopPlan::new(everything.clone(), 5)).unwrap();
    let rust = all.iter().filter(|p| p.hashtags.contains(&"rust".to_owned())).count() as u64;
    assert_eq!(tops[0].posts, rust);

    // Replaced, then emptied.
    engine.set_hot(HotTier::posts(&hot[..10])).unwrap();
    assert_eq!(count(&everything), 510);
    engine.set_hot(HotTier::default()).unwrap();
    assert_eq!(count(&everything), 500);
    assert_eq!(engine.hot_range(), HotRange::default());

    // A flush writes the hot posts into a file: until its publish the engine reads the files
    // it listed before (the posts count once, from the hot tier); from the publish on, they
    // count once, from the file, before the hot tier is told, and a stale hot set cannot bring
    // them back.
    engine.set_hot(HotTier::posts(&hot)).unwrap();
    write_posts(dir.path(), "c.parquet", hot.clone()).unwrap();
    assert_eq!(count(&everything), 600);
    let through = hot.iter().map(|p| p.indexed_at_us).max();
    crate::catalog::publish_flush(dir.path(), 1, through).unwrap();
    assert_eq!(count(&everything), 600);
    engine.set_hot(HotTier::posts(&hot)).unwrap();
    assert_eq!(count(&everything), 600);
    assert_eq!(engine.hot_range(), HotRange::default());
}

/// The deletes' keys are read once per deletes file: a new file's are added, a file gone or
/// replaced under its name makes them again. Every answer leaves out exactly the posts the
/// listed deletes name, through the `posts` view (rollups off) as through the rollup tables.
#[test]
fn deleted_keys_follow_the_deletes_files_as_they_come_and_go() {
    let rows = rows();
    let (dir, engine) = lake_with(&rows);
    let plain = Engine::open(dir.path(), &EngineConfig { rollups: false, ..EngineConfig::with_threads(2) }).unwrap();
    let ending = |digit: char| -> Vec<crate::model::Delete> {
        rows.iter()
            .filter(|p| p.rkey.ends_with(digit))
            .map(|p| crate::model::Delete { uri: p.uri.clone(), did: p.did.clone(), deleted_at_us: 20_010 * DAY })
            .collect()
    };
    let write = |name: &str, digit: char| -> Vec<PathBuf> {
        let written = crate::writer::write_rows(dir.path(), name, ending(digit)).unwrap();
        crate::catalog::publish(dir.path(), 1).unwrap();
        written.into_iter().map(|file| file.path).collect()
    };
    let live = |digits: &[char]| rows.iter().filter(|p| !digits.iter().any(|d| p.rkey.ends_with(*d))).count() as u64;
    let check = |digits: &[char], when: &str| {
        let everything = PostFilter::default();
        assert_eq!(plain.count(&everything).unwrap(), live(digits), "{when}, the posts view");
        assert_eq!(engine.count(&everything).unwrap(), live(digits), "{when}, with rollups");
        let page = plain.posts(&PostsPlan::new(everything, PostOrder::Newest, 1000, [])).unwrap();
        assert_eq!(page.len() as u64, live(digits), "{when}, a page");
    };
    let first = write("d1.parquet", '7');
    check(&['7'], "one deletes file");
    write("d2.parquet", '3');
    check(&['7', '3'], "a second one");
    write("d3.parquet", '3');
    check(&['7', '3'], "the same deletes again, as a replay writes them");
    for path in first {
        std::fs::remove_file(path).unwrap();
    }
    crate::catalog::publish(dir.path(), 1).unwrap();
    check(&['3'], "the first file gone");
    write("d2.parquet", '5');
    check(&['3', '5'], "the second replaced under its name");
}

/// A statement that names the snapshot's files (a few days' files less their dead rows, the
/// text indexes' candidates, read from their pages, a count from the indexes) reads the hot
/// tier of the same snapshot: a flush published since
/// the engine last looked brings its file into the statement as its posts leave the hot tier.
/// (Built before the engine looked, the statement read the old files and the emptied hot tier,
/// and missed the flush's posts: seen under `serve` after Redis restarted empty.)
#[test]
fn statements_that_name_their_files_count_a_flush_published_meanwhile_once() {
    let rows = rows();
    let day = PostFilter { since_us: Some(20_001 * DAY), until_us: Some(20_002 * DAY), ..PostFilter::default() };
    let in_day = |p: &Post| (20_001 * DAY..20_002 * DAY).contains(&p.created_at_us);
    let tagged = PostFilter { hashtags: vec!["rust".into()], ..day.clone() };
    let substring = |query: &str| TextQuery { query: query.into(), mode: TextMode::Substring };
    let water_is = PostFilter { text: vec![substring("water is")], ..day.clone() };
    let water = PostFilter { text: vec![substring("water")], ..day };
    // As fn pointers: the cases below are of one type.
    let is_tagged: fn(&Post) -> bool = |p| p.hashtags.iter().any(|t| t == "rust");
    let has_water: fn(&Post) -> bool = |p| p.text.to_lowercase().contains("water");
    let has_water_is: fn(&Post) -> bool = |p| p.text.to_lowercase().contains("water is");
    let statement = |engine: &Engine, filter: &PostFilter| {
        crate::exec::explain_on_this_thread(true);
        take_answered();
        let n = engine.count(filter).unwrap();
        let answered = take_answered();
        crate::exec::explain_on_this_thread(false);
        (n, answered[0].statements.last().expect("a statement").sql.clone())
    };
    // Read from the days' files, from the index's candidates, counted from the index.
    let cases = [
        (&tagged, is_tagged, "FROM dead_rows WHERE deleted"),
        (&water_is, has_water_is, "FROM candidate_rows"),
        (&water, has_water, "n_posts +"),
    ];
    // Some stored posts are deleted: a few days' files are read less their dead rows only then.
    let deleted = |p: &Post| p.rkey.ends_with('7') && p.rkey.as_str() < "00500";
    for (filter, matches, narrowed) in cases {
        let expected = rows.iter().filter(|p| in_day(p) && matches(p) && !deleted(p)).count() as u64;
        assert!(expected > 5, "{filter:?}");
        let (dir, engine) = lake_with(&rows[..500]);
        for path in crate::catalog::table_files(dir.path(), crate::layout::POSTS_TABLE).unwrap().paths {
            crate::textindex::build_for_file(&path).unwrap();
        }
        let deletes = rows.iter().filter(|p| deleted(p)).map(|p| crate::model::Delete {
            uri: p.uri.clone(),
            did: p.did.clone(),
            deleted_at_us: 20_010 * DAY,
        });
        crate::writer::write_rows(dir.path(), "d.parquet", deletes.collect()).unwrap();
        crate::catalog::publish(dir.path(), 1).unwrap();
        engine.prepare_rollups().unwrap();
        let hot = &rows[500..];
        assert!(hot.iter().any(|p| in_day(p) && matches(p)), "{filter:?}: the hot tier holds some");
        engine.set_hot(HotTier::posts(hot)).unwrap();
        let (n, sql) = statement(&engine, filter);
        assert_eq!(n, expected, "{filter:?}, from the files and the hot tier");
        assert!(sql.contains(narrowed), "{filter:?}: {sql}");

        // A flush writes the hot posts and publishes them; the engine has not looked since.
        for file in write_posts(dir.path(), "c.parquet", hot.to_vec()).unwrap() {
            crate::textindex::build_for_file(&file.path).unwrap();
        }
        crate::catalog::publish_flush(dir.path(), 1, hot.iter().map(|p| p.indexed_at_us).max()).unwrap();
        assert_eq!(engine.count(filter).unwrap(), expected, "{filter:?}, flushed");
        engine.prepare_rollups().unwrap();
        let (n, sql) = statement(&engine, filter);
        assert_eq!(n, expected, "{filter:?}, from the files");
        assert!(sql.contains(narrowed), "{filter:?}: {sql}");
    }
}

/// A filter checked in Rust, one post at a time (live feeds), keeps exactly the posts the
/// compiled SQL keeps.
#[test]
fn a_live_matcher_agrees_with_the_statement_on_every_filter() {
    let mut rows = rows();
    for (n, post) in rows.iter_mut().enumerate() {
        post.detected_lang = [Some("en"), Some("ja"), None][n % 3].map(str::to_owned);
        post.mentions = if n % 4 == 1 { vec![format!("did:plc:m{}", n % 3)] } else { vec![] };
    }
    let (_dir, engine) = lake_with(&rows);
    let text = |query: &str, mode| vec![TextQuery { query: query.into(), mode }];
    let filters = [
        PostFilter::default(),
        PostFilter { langs: vec!["EN".into()], ..PostFilter::default() },
        PostFilter { langs: vec!["en-gb".into(), "pt".into()], ..PostFilter::default() },
        PostFilter { text: text("water", TextMode::Words), ..PostFilter::default() },
        PostFilter { text: text("the LAKE", TextMode::Phrase), ..PostFilter::default() },
        PostFilter { text: text("wat", TextMode::Prefix), ..PostFilter::default() },
        PostFilter { text: text("☕ 1", TextMode::Substring), ..PostFilter::default() },
        PostFilter { text: text("水", TextMode::Words), ..PostFilter::default() },
        // Case folds beyond ASCII, and two searches must both match.
        PostFilter { text: text("CAFÉ", TextMode::Substring), ..PostFilter::default() },
        PostFilter { text: text("Café", TextMode::Words), ..PostFilter::default() },
        PostFilter {
            text: vec![
                TextQuery { query: "water".into(), mode: TextMode::Prefix },
                TextQuery { query: "FALL".into(), mode: TextMode::Substring },
            ],
            ..PostFilter::default()
        },
        PostFilter { detected_langs: vec!["JA".into()], ..PostFilter::default() },
        PostFilter { mentions: vec!["did:plc:m1".into(), "did:plc:m2".into()], ..PostFilter::default() },
        PostFilter { hashtags: vec!["#RUST".into()], is_reply: Some(false), ..PostFilter::default() },
        PostFilter { embed_types: vec![EmbedType::Images], is_reply: Some(true), ..PostFilter::default() },
        PostFilter { since_us: Some(20_001 * DAY), until_us: Some(20_002 * DAY), ..PostFilter::default() },
        PostFilter {
            since_us: Some(20_001 * DAY + 1),
            clock: crate::plan::Clock::IndexedAt,
            authors: vec!["did:plc:a3".into()],
            ..PostFilter::default()
        },
    ];
    for filter in filters {
        let matcher = crate::live::PostMatcher::new(filter.clone()).unwrap();
        let live = newest_first(&rows, |p| matcher.matches(p));
        assert!(!live.is_empty(), "{filter:?} keeps nothing: a weak case");
        assert_eq!(all_pages(&engine, &filter, PostOrder::Newest, 100), live, "{filter:?}");
    }
}

#[test]
fn an_estimate_weighs_the_partitions_a_statement_reads() {
    let rows = rows();
    let (dir, engine) = lake_with(&rows);
    let files = catalog::table_files(dir.path(), layout::POSTS_TABLE).unwrap();
    let bytes: std::collections::HashMap<chrono::NaiveDate, u64> = files.partitions.iter().copied().collect();
    let day = |n: i64| layout::date_of_micros(n * DAY);
    assert_eq!(bytes.len(), 3);
    // Every day, for a filter without a time range.
    let all = engine.estimate(Reads::Scan { filter: &PostFilter::default(), rows: 5 });
    assert_eq!(all, Estimate { bytes: files.bytes, partitions: 3, rows: 5 });
    // The days the range touches, not more.
    let second = PostFilter { since_us: Some(20_001 * DAY), until_us: Some(20_002 * DAY), ..PostFilter::default() };
    let estimate = engine.estimate(Reads::Scan { filter: &second, rows: 0 });
    assert_eq!((estimate.bytes, estimate.partitions), (bytes[&day(20_001)], 1));
    let last_two = PostFilter { since_us: Some(20_001 * DAY + 7), ..PostFilter::default() };
    let estimate = engine.estimate(Reads::Scan { filter: &last_two, rows: 0 });
    assert_eq!(estimate.bytes, bytes[&day(20_001)] + bytes[&day(20_002)]);
    // A page of the newest posts reads the newest day alone; past a cursor, the day it points into.
    let mut page = PostsPlan::new(PostFilter::default(), PostOrder::Newest, 20, []);
    let estimate = engine.estimate(Reads::Page(&page));
    assert_eq!((estimate.bytes, estimate.partitions, estimate.rows), (bytes[&day(20_002)], 1, 20));
    page.after = Some(Keyset { created_at_us: 20_000 * DAY + 5, uri: "at://x".into() });
    assert_eq!(engine.estimate(Reads::Page(&page)).bytes, bytes[&day(20_000)]);
    // An indexed_at range prunes only from above.
    let indexed = PostFilter {
        since_us: Some(20_002 * DAY),
        until_us: Some(20_001 * DAY),
        clock: crate::plan::Clock::IndexedAt,
        ..PostFilter::default()
    };
    assert_eq!(engine.estimate(Reads::Scan { filter: &indexed, rows: 0 }).partitions, 2);
    assert_eq!(engine.estimate(Reads::Accounts(3)), Estimate { bytes: 0, partitions: 0, rows: 3 });
}

/// Likes, reposts, replies and quotes per post, against the same counts made in Rust: unlikes,
/// deleted replies and hidden accounts take theirs back, and a like whose clock runs behind the
/// post's still counts.
#[test]
fn engagement_counts_what_is_live_and_nothing_else() {
    use crate::model::{AccountEvent, Delete, Interaction, InteractionDelete, InteractionKind};
    use crate::plan::{Engagement, EngagementPlan};
    let rows = rows();
    let (dir, engine) = lake_with(&rows);
    let mut next = random(7_u64);
    let uri_parts = |uri: &str| {
        let (did, rkey) = crate::model::post_uri_parts(uri).unwrap();
        (did.to_owned(), rkey.to_owned())
    };
    let mut interactions = Vec::new();
    for j in 0..3_000 {
        let subject = &rows[next(200) as usize * 3 % 600];
        let (subject_did, subject_rkey) = uri_parts(&subject.uri);
        // Some clocks run behind: up to an hour before the post.
        let created_at_us = subject.created_at_us - 3_600_000_000 + next(2 * DAY as u64) as i64;
        interactions.push(Interaction {
            did: format!("did:plc:u{}", j % 50),
            kind: if j % 4 == 0 { InteractionKind::Repost } else { InteractionKind::Like },
            rkey: format!("l{j:06}"),
            subject_did,
            subject_rkey,
            created_at_us,
            indexed_at_us: created_at_us + 1,
        });
    }
    let undone: Vec<InteractionDelete> = interactions
        .iter()
        .filter(|i| i.rkey.ends_with('7'))
        .map(|i| InteractionDelete {
            did: i.did.clone(),
            kind: i.kind,
            rkey: i.rkey.clone(),
            deleted_at_us: 20_010 * DAY,
        })
        .collect();
    // Replies and quotes of the first posts, a day later; every fifth deleted.
    let reactions: Vec<Post> = (0..400)
        .map(|i| {
            let subject = &rows[next(100) as usize];
            let created_at_us = subject.created_at_us + DAY;
            Post {
                uri: format!("at://did:plc:r{}/app.bsky.feed.post/r{i:05}", i % 9),
                did: format!("did:plc:r{}", i % 9),
                rkey: format!("r{i:05}"),
                created_at_us,
                indexed_at_us: created_at_us,
                reply_parent: (i % 2 == 0).then(|| subject.uri.clone()),
                quote_uri: (i % 3 == 0).then(|| subject.uri.clone()),
                ..Post::default()
            }
        })
        .collect();
    let deleted_reactions: Vec<Delete> = reactions
        .iter()
        .filter(|p| p.rkey.ends_with('5'))
        .map(|p| Delete { uri: p.uri.clone(), did: p.did.clone(), deleted_at_us: 20_010 * DAY })
        .collect();
    let hidden = "did:plc:u3";
    let takedown = AccountEvent {
        did: hidden.into(),
        seen_at_us: 20_010 * DAY,
        active: Some(false),
        status: Some("takendown".into()),
        ..AccountEvent::default()
    };
    write_posts(dir.path(), "c.parquet", reactions.clone()).unwrap();
    crate::writer::write_rows(dir.path(), "d.parquet", deleted_reactions.clone()).unwrap();
    crate::writer::write_rows(dir.path(), "e.parquet", interactions.clone()).unwrap();
    crate::writer::write_rows(dir.path(), "f.parquet", undone.clone()).unwrap();
    crate::writer::write_rows(dir.path(), "g.parquet", vec![takedown]).unwrap();
    crate::catalog::publish(dir.path(), 1).unwrap();

    let posts: Vec<(String, i64)> = rows.iter().map(|p| (p.uri.clone(), p.created_at_us)).collect();
    let live_reaction = |p: &&Post| !deleted_reactions.iter().any(|d| d.uri == p.uri);
    let mut dids: Vec<String> = (0..7).map(|k| format!("did:plc:a{k}")).collect();
    dids.extend(["did:plc:r1".to_owned(), "did:plc:nobody".to_owned()]);
    let mut every_received = HashMap::new();
    for engagement in Engagement::ALL {
        let mut expected: HashMap<String, u64> = HashMap::new();
        let mut add = |uri: &str| *expected.entry(uri.to_owned()).or_default() += 1;
        match engagement {
            Engagement::Likes | Engagement::Reposts => {
                let kind =
                    if engagement == Engagement::Likes { InteractionKind::Like } else { InteractionKind::Repost };
                for i in &interactions {
                    let gone = undone.iter().any(|u| u.did == i.did && u.rkey == i.rkey) || i.did == hidden;
                    if i.kind == kind && !gone {
                        add(&format!("at://{}/app.bsky.feed.post/{}", i.subject_did, i.subject_rkey));
                    }
                }
            }
            Engagement::Replies => {
                reactions.iter().filter(live_reaction).filter_map(|p| p.reply_parent.as_deref()).for_each(&mut add)
            }
            Engagement::Quotes => {
                reactions.iter().filter(live_reaction).filter_map(|p| p.quote_uri.as_deref()).for_each(&mut add)
            }
        }
        assert!(expected.len() > 20, "{engagement:?}: {}", expected.len());
        let mut counted = HashMap::new();
        for chunk in posts.chunks(97) {
            counted.extend(engine.engagement(&EngagementPlan::new(engagement, chunk)).unwrap());
        }
        assert_eq!(counted, expected, "{engagement:?}");
        // An author's total is the sum over their live posts.
        let mut received: HashMap<(String, Engagement), u64> = HashMap::new();
        for post in rows.iter().chain(reactions.iter().filter(live_reaction)) {
            if let Some(n) = expected.get(&post.uri).filter(|_| dids.contains(&post.did)) {
                *received.entry((post.did.clone(), engagement)).or_default() += n;
            }
        }
        assert_eq!(engine.received(&[engagement], &dids).unwrap(), received, "{engagement:?}");
        every_received.extend(received);
    }
    // Every engagement at once, in one statement, gives the same.
    assert_eq!(engine.received(&Engagement::ALL, &dids).unwrap(), every_received);
    let dids = ["did:plc:a1".to_owned()];
    let likes_and_quotes = engine.received(&[Engagement::Quotes, Engagement::Likes], &dids).unwrap();
    let expected: HashMap<_, _> = every_received
        .into_iter()
        .filter(|((did, e), _)| *did == dids[0] && matches!(e, Engagement::Quotes | Engagement::Likes))
        .collect();
    assert!(expected.len() == 2, "a1 got likes and quotes: {expected:?}");
    assert_eq!(likes_and_quotes, expected);
    // Pages ranked by each kind, from every live post's count.
    let live: Vec<&Post> = rows.iter().chain(reactions.iter().filter(live_reaction)).collect();
    for engagement in Engagement::ALL {
        let counts: HashMap<String, u64> = posts
            .chunks(97)
            .flat_map(|chunk| engine.engagement(&EngagementPlan::new(engagement, chunk)).unwrap())
            .collect();
        for filter in [
            PostFilter { since_us: Some(20_000 * DAY), ..PostFilter::default() },
            PostFilter { since_us: Some(20_001 * DAY), hashtags: vec!["rust".into()], ..PostFilter::default() },
        ] {
            let mut expected: Vec<(u64, String)> = live
                .iter()
                .filter(|p| p.created_at_us >= filter.since_us.unwrap())
                .filter(|p| filter.hashtags.is_empty() || p.hashtags.contains(&"rust".to_owned()))
                .map(|p| (counts.get(&p.uri).copied().unwrap_or(0), p.uri.clone()))
                .collect();
            expected.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
            let mut plan =
                crate::plan::RankedPostsPlan::new(engagement, filter.clone(), 7, [PostColumn::Text]).unwrap();
            let mut seen = Vec::new();
            loop {
                let page = engine.ranked_posts(&plan).unwrap();
                let Some((last, n)) = page.last() else { break };
                plan.after = Some(crate::plan::RankKeyset { count: *n, uri: last.uri.clone() });
                seen.extend(page.into_iter().map(|(p, n)| (n, p.uri)));
                assert!(seen.len() <= expected.len(), "{engagement:?} {filter:?}: pages past the end");
            }
            assert_eq!(seen, expected, "{engagement:?} {filter:?}");
        }
    }
    let no_window = crate::plan::RankedPostsPlan::new(Engagement::Likes, PostFilter::default(), 7, []);
    assert_eq!(no_window.unwrap_err().kind(), crate::ErrorKind::BadInput);

    // A post nobody engaged with, and an empty question.
    let quiet = vec![(rows[1].uri.clone(), rows[1].created_at_us)];
    assert!(engine.engagement(&EngagementPlan::new(Engagement::Likes, &quiet)).unwrap().is_empty());
    assert!(engine.engagement(&EngagementPlan::new(Engagement::Likes, &[])).unwrap().is_empty());
}

/// A ranking of likes is first tried among the posts with a large count in some file's rollup;
/// a post left out with more in all (a like on each of several days) still takes its place,
/// and a page that the candidates alone answer is the same page.
#[test]
fn ranking_among_the_most_counted_leaves_no_post_out() {
    use crate::plan::{Engagement, RankKeyset, RankedPostsPlan};
    let rows = rows();
    let (dir, engine) = lake_with(&rows);
    let mut likes = Vec::new();
    let mut like =
        |post: &Post, day: i64| likes.push(like_of(post, format!("did:plc:f{}", likes.len()), likes.len(), day));
    // 120 posts liked 7 times on the third day (more than a page of one's 104 candidates), one
    // of them 12 times: candidates are the posts liked at least 7 / 3 files = 2 times in a
    // file, and a post left out has at most 3 × 1. One liked once on each day (3, left out),
    // one twice on the first day (2, a candidate).
    for (i, post) in rows[..120].iter().enumerate() {
        (0..if i == 50 { 12 } else { 7 }).for_each(|_| like(post, 2));
    }
    let (steady, twice) = (&rows[300], &rows[301]);
    (0..3).for_each(|day| like(steady, day));
    (0..2).for_each(|_| like(twice, 0));
    // A post the hot tier will hold, past every stored post's key, liked the most.
    let hot = Post {
        uri: "at://did:plc:a0/app.bsky.feed.post/99999".into(),
        did: "did:plc:a0".into(),
        rkey: "99999".into(),
        created_at_us: 20_001 * DAY,
        indexed_at_us: 20_010 * DAY,
        ..Post::default()
    };
    (0..20).for_each(|_| like(&hot, 1));
    crate::writer::write_rows(dir.path(), "h.parquet", likes.clone()).unwrap();
    crate::catalog::publish(dir.path(), 1).unwrap();

    let mut expected: Vec<(u64, String)> =
        rows[..120].iter().enumerate().map(|(i, p)| (if i == 50 { 12 } else { 7 }, p.uri.clone())).collect();
    expected.extend([(3, steady.uri.clone()), (2, twice.uri.clone())]);
    expected.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    let filter = PostFilter { since_us: Some(20_000 * DAY), ..PostFilter::default() };
    let mut plan = RankedPostsPlan::new(Engagement::Likes, filter, 1, []).unwrap();
    let mut page_after = |after: Option<RankKeyset>| {
        plan.after = after;
        let page = engine.ranked_posts(&plan).unwrap();
        let [(post, n)] = &page[..] else { panic!("a page of one: {page:?}") };
        (*n, post.uri.clone())
    };
    // The first pages; then those after the last post liked 7 times.
    let mut seen = vec![page_after(None)];
    for _ in 0..2 {
        let (count, uri) = seen.last().cloned().unwrap();
        seen.push(page_after(Some(RankKeyset { count, uri })));
    }
    assert_eq!(seen, expected[..3]);
    let (count, uri) = expected[119].clone();
    let after_sevens = page_after(Some(RankKeyset { count, uri }));
    let (count, uri) = after_sevens.clone();
    assert_eq!([after_sevens, page_after(Some(RankKeyset { count, uri }))], expected[120..122]);

    // Once the hot tier holds it, the window's keys reach it.
    engine.set_hot(HotTier { posts: std::slice::from_ref(&hot), ..HotTier::default() }).unwrap();
    assert_eq!(page_after(None), (20, hot.uri.clone()));
}

/// With six rows kept per rollup, rankings among the rollups' largest rows give the pages that
/// counting every like gives: a post kept in no file but liked on every day takes its place,
/// undone likes are not counted, and a page the largest rows cannot answer for certain is
/// ranked another way. Over several draws of skewed likes on three days.
#[test]
fn ranking_among_the_largest_rows_agrees_with_counting_every_like() {
    use crate::model::InteractionDelete;
    use crate::plan::{Engagement, RankKeyset, RankedPostsPlan};
    let rows = rows();
    for seed in 0..4_u64 {
        let (dir, engine) = lake_with(&rows);
        engine.undone.write().unwrap().keep_largest_rows(6);
        let mut next = random(seed);
        let mut likes = Vec::new();
        for day in 0..3 {
            // Post i of the first 40 gets up to 40 / (i + 1) likes a day; post 40 four a day.
            for (i, post) in rows[..41].iter().enumerate() {
                let times = if i == 40 { 4 } else { next(40 / (i as u64 + 1) + 1) };
                for _ in 0..times {
                    likes.push(like_of(post, format!("did:plc:f{}", likes.len() % 97), likes.len(), day));
                }
            }
        }
        let undone: Vec<InteractionDelete> = likes
            .iter()
            .filter(|_| next(5) == 0)
            .map(|like| InteractionDelete {
                did: like.did.clone(),
                kind: like.kind,
                rkey: like.rkey.clone(),
                deleted_at_us: 20_010 * DAY,
            })
            .collect();
        crate::writer::write_rows(dir.path(), "h.parquet", likes.clone()).unwrap();
        crate::writer::write_rows(dir.path(), "i.parquet", undone.clone()).unwrap();
        crate::catalog::publish(dir.path(), 1).unwrap();

        let mut counts: HashMap<String, u64> = HashMap::new();
        for like in &likes {
            if !undone.iter().any(|u| u.did == like.did && u.rkey == like.rkey) {
                *counts.entry(crate::model::post_uri(&like.subject_did, &like.subject_rkey)).or_default() += 1;
            }
        }
        let mut expected: Vec<(u64, String)> = counts.into_iter().map(|(uri, n)| (n, uri)).collect();
        expected.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));

        let filter = PostFilter { since_us: Some(20_000 * DAY), ..PostFilter::default() };
        let mut plan = RankedPostsPlan::new(Engagement::Likes, filter, 2, []).unwrap();
        let mut seen = Vec::new();
        for _ in 0..8 {
            let page = engine.ranked_posts(&plan).unwrap();
            seen.extend(page.iter().map(|(post, n)| (*n, post.uri.clone())));
            let (count, uri) = seen.last().cloned().unwrap();
            plan.after = Some(RankKeyset { count, uri });
        }
        assert_eq!(seen, expected[..16], "seed {seed}");
        assert!(engine.rankings(Ranked::LargestRows) > 0, "seed {seed}: no page from the largest rows");
    }
}

/// `trending` ranks each kind of item as the same arithmetic over the rows in Rust does, with
/// its support threshold, and a filter narrows the posts counted.
#[test]
fn trending_ranks_items_by_their_window_rate_against_the_baseline() {
    use crate::plan::{TrendKind, TrendPlan, TrendRank};
    const HOUR: i64 = 3_600_000_000;
    let start = 20_000 * DAY;
    let mut next = random(3_u64);
    // Two days of baseline, then a six-hour window in which `surge` and `example.org` rise.
    let posts: Vec<Post> = (0..3_000)
        .map(|i| {
            let in_window = i >= 2_400;
            let created_at_us = if in_window {
                start + 48 * HOUR + next(6 * HOUR as u64) as i64
            } else {
                start + next(48 * HOUR as u64) as i64
            };
            let mut tags = vec![["rust", "duckdb", "bluesky", "art"][next(4) as usize].to_owned()];
            if in_window && next(3) == 0 {
                tags.push("surge".into());
            }
            if !in_window && next(200) == 0 {
                tags.push("surge".into());
            }
            let host = if in_window && next(4) == 0 { "https://www.Example.org/a" } else { "https://news.test:8080/x" };
            Post {
                uri: format!("at://did:plc:t{}/app.bsky.feed.post/{i:05}", i % 11),
                did: format!("did:plc:t{}", i % 11),
                rkey: format!("{i:05}"),
                created_at_us,
                indexed_at_us: created_at_us,
                langs: vec![["en-US", "ja", "pt-BR"][next(3) as usize].to_owned()],
                hashtags: tags,
                links: if next(2) == 0 { vec![host.to_owned()] } else { vec![] },
                external_uri: (next(5) == 0).then(|| "http://user@blog.example.net/p".to_owned()),
                ..Post::default()
            }
        })
        .collect();
    let (_dir, engine) = lake_with(&posts);
    let window = (start + 48 * HOUR, start + 54 * HOUR);
    let baseline = (start, start + 48 * HOUR);
    let items = |kind: TrendKind, p: &Post| -> Vec<String> {
        let mut items: Vec<String> = match kind {
            TrendKind::Hashtag => p.hashtags.clone(),
            TrendKind::Lang => p.langs.iter().map(|l| l.split('-').next().unwrap().to_lowercase()).collect(),
            TrendKind::LinkDomain => p
                .links
                .iter()
                .chain(&p.external_uri)
                .map(|u| {
                    let authority = u.split("://").nth(1).unwrap().split('/').next().unwrap().to_lowercase();
                    let host = authority.rsplit('@').next().unwrap().split(':').next().unwrap().to_owned();
                    host.strip_prefix("www.").map(str::to_owned).unwrap_or(host)
                })
                .collect(),
        };
        items.sort();
        items.dedup();
        items
    };
    for (kind, rank, min_posts, filter) in [
        (TrendKind::Hashtag, TrendRank::Ratio, 5, PostFilter::default()),
        (TrendKind::Hashtag, TrendRank::ZScore, 5, PostFilter::default()),
        (TrendKind::Hashtag, TrendRank::Ratio, 1000, PostFilter::default()),
        (TrendKind::Lang, TrendRank::Ratio, 1, PostFilter::default()),
        (TrendKind::LinkDomain, TrendRank::ZScore, 2, PostFilter::default()),
        (TrendKind::Hashtag, TrendRank::Ratio, 1, PostFilter { langs: vec!["ja".into()], ..PostFilter::default() }),
    ] {
        let plan = TrendPlan::new(kind, filter.clone(), window, baseline, rank, min_posts, 3).unwrap();
        let got = engine.trending(&plan).unwrap();
        let mut counts: std::collections::BTreeMap<String, (u64, u64)> = Default::default();
        for p in posts.iter().filter(|p| filter.langs.is_empty() || p.langs.iter().any(|l| l.starts_with("ja"))) {
            for item in items(kind, p) {
                let entry = counts.entry(item).or_default();
                if (window.0..window.1).contains(&p.created_at_us) {
                    entry.0 += 1;
                }
                if (baseline.0..baseline.1).contains(&p.created_at_us) {
                    entry.1 += 1;
                }
            }
        }
        let mut expected: Vec<(String, u64, u64, f64, f64)> = counts
            .into_iter()
            .filter(|(_, (w, _))| *w >= u64::from(min_posts))
            .map(|(item, (w, b))| {
                let e = b as f64 * 6.0 / 48.0;
                let score = match rank {
                    TrendRank::Ratio => (w as f64 + 1.0) / (e + 1.0),
                    TrendRank::ZScore => (w as f64 - e) / (e + 1.0).sqrt(),
                };
                (item, w, b, e, score)
            })
            .collect();
        expected.sort_by(|a, b| b.4.total_cmp(&a.4).then(b.1.cmp(&a.1)).then(a.0.cmp(&b.0)));
        expected.truncate(3);
        let got_items: Vec<(String, u64, u64)> =
            got.iter().map(|t| (t.item.clone(), t.posts, t.baseline_posts)).collect();
        let want: Vec<(String, u64, u64)> = expected.iter().map(|e| (e.0.clone(), e.1, e.2)).collect();
        assert_eq!(got_items, want, "{kind:?} {rank:?} {min_posts}");
        for (t, e) in got.iter().zip(&expected) {
            assert!((t.expected - e.3).abs() < 1e-9, "{t:?}");
        }
    }
    let surge = TrendPlan::new(TrendKind::Hashtag, PostFilter::default(), window, baseline, TrendRank::Ratio, 5, 1);
    assert_eq!(engine.trending(&surge.unwrap()).unwrap()[0].item, "surge");
    assert!(TrendPlan::new(TrendKind::Lang, PostFilter::default(), (5, 5), baseline, TrendRank::Ratio, 1, 1).is_err());
}

#[test]
fn work_shared_among_threads_comes_back_in_order() {
    let items: Vec<usize> = (0..37).collect();
    let squares: Vec<usize> = items.iter().map(|n| n * n).collect();
    for threads in [1, 2, 5, 64] {
        assert_eq!(on_threads(threads, &items, |n| n * n), squares, "{threads} threads");
    }
    assert!(on_threads(4, &[] as &[usize], |n| *n).is_empty());
}
