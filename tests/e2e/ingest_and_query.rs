//! The spine, end to end: a fixture file is ingested with `ingest --once` through a private
//! Redis into Parquet, then `serve --role api` answers GraphQL over it, and every number is
//! checked against the fixture's own JSON.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::Path;

use serde_json::{Value, json};
use skyglass_tests::{App, RedisServer, fixtures_dir, ingest_once};

use crate::expected::{self, ExpectedPost};

fn sample() -> std::path::PathBuf {
    fixtures_dir().join("jetstream_sample.jsonl")
}

fn uris(connection: &Value) -> Vec<String> {
    connection["nodes"].as_array().unwrap().iter().map(|n| n["uri"].as_str().unwrap().to_owned()).collect()
}

const PAGE: &str = "query($filter: PostFilter, $order: PostOrder, $first: Int, $after: String) {
  posts(filter: $filter, order: $order, first: $first, after: $after) {
    nodes { uri } pageInfo { hasNextPage endCursor } totalCount } }";

/// Follows `endCursor` page by page and returns every uri seen.
fn all_pages(app: &App, filter: Value, order: &str, page_size: i64) -> Vec<String> {
    let mut seen = Vec::new();
    let mut after = Value::Null;
    for _ in 0..1_000 {
        let data = app.query(PAGE, json!({"filter": filter, "order": order, "first": page_size, "after": after}));
        let page = &data["posts"];
        seen.extend(uris(page));
        if !page["pageInfo"]["hasNextPage"].as_bool().unwrap() {
            return seen;
        }
        after = page["pageInfo"]["endCursor"].clone();
    }
    panic!("pagination did not end");
}

fn total(app: &App, filter: Value) -> usize {
    let data = app.query(PAGE, json!({"filter": filter, "first": 0}));
    data["posts"]["totalCount"].as_u64().unwrap() as usize
}

#[test]
fn a_fixture_file_ingested_once_answers_graphql_with_the_fixture_numbers() {
    let redis = RedisServer::start().unwrap();
    let lake = tempfile::tempdir().unwrap();
    let output = ingest_once(lake.path(), &redis.url(), &sample());
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("2 dropped"), "{stdout}");

    // The malformed line and the unknown embed are in the dead-letter stream, with reasons.
    let mut conn = redis.connection();
    let letters: redis::streams::StreamRangeReply =
        redis::cmd("XRANGE").arg("skyglass:dlq").arg("-").arg("+").query(&mut conn).unwrap();
    let mut reasons: Vec<String> = letters.ids.iter().map(|e| e.get::<String>("reason").unwrap()).collect();
    reasons.sort();
    assert_eq!(reasons, vec!["invalid_json", "unknown_embed"]);
    // Everything buffered was flushed and acknowledged.
    let pending: usize = redis::cmd("XLEN").arg("skyglass:buffer:posts").query(&mut conn).unwrap();
    assert_eq!(pending, 0);

    let posts = expected::posts_in(&sample());
    let app = App::serve_api(lake.path(), &redis.url()).unwrap();

    let stats =
        app.query("{ lake { posts files partitions bytes generation oldestPost newestPost lastFlushAt } }", json!({}));
    let days = expected::days(&posts);
    assert_eq!(stats["lake"]["posts"], json!(posts.len()), "{stats}");
    assert_eq!(stats["lake"]["partitions"], json!(days.len()));
    assert_eq!(stats["lake"]["files"], json!(days.len()), "one flush writes one file per day");
    assert!(stats["lake"]["bytes"].as_u64().unwrap() > 0);
    assert_eq!(stats["lake"]["generation"], json!(1));
    let oldest = posts.iter().map(|p| p.created_at_us).min().unwrap();
    let newest = posts.iter().map(|p| p.created_at_us).max().unwrap();
    assert_eq!(stats["lake"]["oldestPost"], json!(expected::rfc3339(oldest)));
    assert_eq!(stats["lake"]["newestPost"], json!(expected::rfc3339(newest)));
    // The fixture deletes one of its posts: it is in no answer.
    let deleted = "at://did:plc:carolz6ppl2dxq7wrt5ku/app.bsky.feed.post/3kaa015";
    assert!(!posts.iter().any(|p| p.uri == deleted));
    let gone = app.query("query($uri: ID!) { post(uri: $uri) { uri } }", json!({"uri": deleted}));
    assert_eq!(gone["post"], Value::Null);

    // Every post, newest first, across pages of 4: no duplicate (the replayed one), no gap.
    let newest = expected::newest_first(&posts);
    assert_eq!(all_pages(&app, Value::Null, "NEWEST", 4), newest);
    let mut oldest = newest.clone();
    oldest.reverse();
    assert_eq!(all_pages(&app, Value::Null, "OLDEST", 3), oldest);
    assert_eq!(total(&app, Value::Null), posts.len());

    check_filters(&app, &posts);
    check_one_post(&app, &posts);
    check_bad_input(&app);
    assert!(app.stop().success(), "serve exits 0 on SIGTERM");
}

fn check_filters(app: &App, posts: &[ExpectedPost]) {
    let alice = "did:plc:alice4mx2bsky7zq3f5t6vw";
    let bob = "did:plc:bob7r2qkx5nwuvy3hjm4ta";
    let since = chrono::DateTime::parse_from_rfc3339("2026-11-27T00:00:00Z").unwrap().timestamp_micros();
    let until = chrono::DateTime::parse_from_rfc3339("2026-11-28T06:30:00Z").unwrap().timestamp_micros();
    let cases: Vec<(Value, usize)> = vec![
        (json!({"authors": [alice]}), expected::count(posts, |p| p.did == alice)),
        (json!({"authors": [alice, bob]}), expected::count(posts, |p| p.did == alice || p.did == bob)),
        (json!({"langs": ["en"]}), expected::count(posts, |p| expected::has_lang(p, "en"))),
        (
            json!({"langs": ["EN-us"]}),
            expected::count(posts, |p| p.langs.iter().any(|l| l.eq_ignore_ascii_case("en-US"))),
        ),
        (
            json!({"langs": ["pt", "ko"]}),
            expected::count(posts, |p| expected::has_lang(p, "pt") || expected::has_lang(p, "ko")),
        ),
        (json!({"textContains": "water"}), expected::count(posts, |p| p.text.to_lowercase().contains("water"))),
        (json!({"textContains": "水"}), expected::count(posts, |p| p.text.contains('水'))),
        (json!({"textContains": "%"}), expected::count(posts, |p| p.text.contains('%'))),
        (json!({"textContains": "e_w"}), expected::count(posts, |p| p.text.to_lowercase().contains("e_w"))),
        (json!({"since": "2026-11-27T00:00:00Z"}), expected::count(posts, |p| p.created_at_us >= since)),
        (
            json!({"since": "2026-11-27T00:00:00Z", "until": "2026-11-28T06:30:00Z"}),
            expected::count(posts, |p| p.created_at_us >= since && p.created_at_us < until),
        ),
        (
            json!({"authors": [alice], "textContains": "WATER", "until": "2026-11-27T00:00:00Z"}),
            expected::count(posts, |p| {
                p.did == alice && p.text.to_lowercase().contains("water") && p.created_at_us < since
            }),
        ),
        (json!({"hashtags": ["#PARQUET"]}), expected::count(posts, |p| p.text.to_lowercase().contains("#parquet"))),
        (json!({"isReply": true}), 1),
        (json!({"embedTypes": ["IMAGES", "RECORD_WITH_MEDIA"]}), 2),
    ];
    for (filter, want) in cases {
        assert!(want > 0, "a filter case that expects nothing proves little: {filter}");
        assert_eq!(total(app, filter.clone()), want, "totalCount for {filter}");
        let listed = all_pages(app, filter.clone(), "NEWEST", 2);
        assert_eq!(listed.len(), want, "listed posts for {filter}");
        assert_eq!(listed.iter().collect::<BTreeSet<_>>().len(), want, "duplicates for {filter}");
    }
}

fn check_one_post(app: &App, posts: &[ExpectedPost]) {
    let japanese = posts.iter().find(|p| p.text.contains('水')).unwrap();
    let data = app.query(
        "query($uri: ID!) { post(uri: $uri) { uri authorDid text langs hashtags mentions createdAt embedType imageCount } }",
        json!({"uri": japanese.uri}),
    );
    let post = &data["post"];
    assert_eq!(post["text"], json!(japanese.text));
    assert_eq!(post["authorDid"], json!(japanese.did));
    assert_eq!(post["langs"], json!(japanese.langs));
    assert_eq!(post["hashtags"], json!(japanese.tag_features));
    assert_eq!(post["mentions"], json!([japanese.did]));
    assert_eq!(post["createdAt"], json!("2026-11-26T09:30:12.345Z"));
    assert_eq!(post["embedType"], json!("NONE"));

    // The detected language: a clear English sentence is `en`; five Japanese characters, once
    // the hashtag and mention are set aside, are enough: kana is written in Japanese only.
    let data = app.query(
        "query($a: ID!, $b: ID!) { a: post(uri: $a) { detectedLang } b: post(uri: $b) { detectedLang } }",
        json!({"a": "at://did:plc:alice4mx2bsky7zq3f5t6vw/app.bsky.feed.post/3kaa001", "b": japanese.uri}),
    );
    assert_eq!(data, json!({"a": {"detectedLang": "en"}, "b": {"detectedLang": "ja"}}));

    let missing = app.query("{ post(uri: \"at://did:plc:none/app.bsky.feed.post/x\") { uri } }", json!({}));
    assert_eq!(missing["post"], Value::Null);
}

fn check_bad_input(app: &App) {
    let bad_cursor = app.request(PAGE, json!({"after": "not-a-cursor", "first": 2}));
    let error = &bad_cursor["errors"][0];
    assert_eq!(error["path"], json!(["posts"]), "{bad_cursor}");
    assert_eq!(error["extensions"]["code"], json!("BAD_USER_INPUT"));
    assert!(error["message"].as_str().unwrap().contains("cursor"));

    let too_many = app.request(PAGE, json!({"first": 100_000}));
    assert!(too_many["errors"][0]["message"].as_str().unwrap().contains("first must be between"), "{too_many}");

    let inverted =
        app.request(PAGE, json!({"filter": {"since": "2026-11-28T00:00:00Z", "until": "2026-11-27T00:00:00Z"}}));
    assert!(inverted["errors"][0]["message"].as_str().unwrap().contains("after"), "{inverted}");

    let unknown_field = app.request("{ posts { nodes { nope } } }", json!({}));
    assert!(unknown_field["errors"][0]["message"].as_str().unwrap().contains("nope"), "{unknown_field}");
}

fn compress(source: &Path, into: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let raw = std::fs::read(source).unwrap();
    let gz = into.join("sample.jsonl.gz");
    let mut encoder =
        flate2::write::GzEncoder::new(std::fs::File::create(&gz).unwrap(), flate2::Compression::default());
    encoder.write_all(&raw).unwrap();
    encoder.finish().unwrap();
    let zst = into.join("sample.jsonl.zst");
    std::fs::write(&zst, zstd::encode_all(raw.as_slice(), 3).unwrap()).unwrap();
    (gz, zst)
}

#[test]
fn gzip_and_zstd_replay_files_ingest_the_same_posts_as_the_plain_file() {
    let redis = RedisServer::start().unwrap();
    let scratch = tempfile::tempdir().unwrap();
    let (gz, zst) = compress(&sample(), scratch.path());
    let lake = tempfile::tempdir().unwrap();
    ingest_once(lake.path(), &redis.url(), &gz);
    ingest_once(lake.path(), &redis.url(), &zst);
    let app = App::serve_api(lake.path(), &redis.url()).unwrap();
    let data = app.query("{ lake { posts generation } }", json!({}));
    // Two ingests of the same posts: two flushes, and still each post counted once.
    assert_eq!(data["lake"]["posts"], json!(expected::posts_in(&sample()).len()));
    assert_eq!(data["lake"]["generation"], json!(2));
    assert_eq!(all_pages(&app, Value::Null, "NEWEST", 100), expected::newest_first(&expected::posts_in(&sample())));
}

#[test]
fn a_bad_flag_or_variable_is_refused_with_one_line_that_says_what_to_fix() {
    let lake = tempfile::tempdir().unwrap();
    let typo = skyglass_tests::skyglass(lake.path(), "redis://127.0.0.1:1")
        .env("SKYGLASS_LAKES", "x")
        .arg("schema")
        .output()
        .unwrap();
    assert_eq!(typo.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&typo.stderr);
    assert!(stderr.contains("unknown environment variable SKYGLASS_LAKES"), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");

    let once_forever = skyglass_tests::skyglass(lake.path(), "redis://127.0.0.1:1")
        .args(["ingest", "--once", "--source", "synthetic:10"])
        .output()
        .unwrap();
    assert!(!once_forever.status.success());
    assert!(String::from_utf8_lossy(&once_forever.stderr).contains("--once needs a source that ends"));
}
