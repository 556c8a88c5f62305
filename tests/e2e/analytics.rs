//! The analytics fields over HTTP: top authors and hashtags, time buckets in a time zone,
//! authors and their posts nested under posts, and the user errors of each, checked against
//! the fixture's own JSON.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{TimeZone, Timelike};
use serde_json::{Value, json};
use skyglass_tests::{App, RedisServer, fixtures_dir, ingest_once};

use crate::expected::{self, ExpectedPost};

fn serve_sample() -> (RedisServer, tempfile::TempDir, App, Vec<ExpectedPost>) {
    let sample = fixtures_dir().join("jetstream_sample.jsonl");
    let redis = RedisServer::start().unwrap();
    let lake = tempfile::tempdir().unwrap();
    ingest_once(lake.path(), &redis.url(), &sample);
    let app = App::serve_api(lake.path(), &redis.url()).unwrap();
    (redis, lake, app, expected::posts_in(&sample))
}

fn error_of(response: &Value) -> (&Value, &Value, &str) {
    let error = &response["errors"][0];
    (&error["path"], &error["extensions"]["code"], error["message"].as_str().unwrap_or_default())
}

#[test]
fn aggregates_buckets_and_authors_match_the_fixture() {
    let (_redis, _lake, app, posts) = serve_sample();

    // topAuthors: posts per DID, most first, ties by DID.
    let mut per_author: BTreeMap<&str, u64> = BTreeMap::new();
    for post in &posts {
        *per_author.entry(&post.did).or_default() += 1;
    }
    let mut ranked: Vec<(&str, u64)> = per_author.iter().map(|(d, n)| (*d, *n)).collect();
    ranked.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    let data = app.query("{ topAuthors(first: 10) { author { did } posts } }", json!({}));
    let got: Vec<(String, u64)> = data["topAuthors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| (row["author"]["did"].as_str().unwrap().to_owned(), row["posts"].as_u64().unwrap()))
        .collect();
    let want: Vec<(String, u64)> = ranked.iter().map(|(d, n)| ((*d).to_owned(), *n)).collect();
    assert_eq!(got, want);

    // topHashtags: posts and authors per lower-cased tag.
    let mut per_tag: BTreeMap<String, (BTreeSet<&str>, BTreeSet<&str>)> = BTreeMap::new();
    for post in &posts {
        for tag in &post.tag_features {
            let entry = per_tag.entry(tag.clone()).or_default();
            entry.0.insert(&post.uri);
            entry.1.insert(&post.did);
        }
    }
    let data = app.query("{ topHashtags { tag posts authors } }", json!({}));
    let got: BTreeMap<String, (u64, u64)> = data["topHashtags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (t["tag"].as_str().unwrap().to_owned(), (t["posts"].as_u64().unwrap(), t["authors"].as_u64().unwrap()))
        })
        .collect();
    let want: BTreeMap<String, (u64, u64)> =
        per_tag.into_iter().map(|(tag, (p, a))| (tag, (p.len() as u64, a.len() as u64))).collect();
    assert!(!want.is_empty());
    assert_eq!(got, want);

    // timeBuckets by hour in Tokyo (UTC+9) over two local days: every hour listed, counts by
    // the local hour chrono-tz gives each post.
    let zone: chrono_tz::Tz = "Asia/Tokyo".parse().unwrap();
    let (since, until) = ("2026-11-27T00:00:00+09:00", "2026-11-29T00:00:00+09:00");
    let (since_us, until_us) = (micros(since), micros(until));
    let mut per_hour: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    for post in posts.iter().filter(|p| (since_us..until_us).contains(&p.created_at_us)) {
        let local = zone.timestamp_micros(post.created_at_us).unwrap();
        let start = local.with_minute(0).unwrap().with_second(0).unwrap().with_nanosecond(0).unwrap();
        let entry = per_hour.entry(expected::rfc3339(start.timestamp_micros())).or_default();
        entry.0 += 1;
        entry.1 += u64::from(post.is_reply);
    }
    let data = app.query(
        "query($f: PostFilter) { timeBuckets(interval: HOUR, filter: $f, timeZone: \"Asia/Tokyo\") { start group posts authors replies } }",
        json!({"f": {"since": since, "until": until}}),
    );
    let buckets = data["timeBuckets"].as_array().unwrap();
    assert_eq!(buckets.len(), 48, "every hour of two days, empty ones included");
    assert_eq!(buckets[0]["start"], json!("2026-11-26T15:00:00Z"));
    let non_empty: BTreeMap<String, (u64, u64)> = buckets
        .iter()
        .filter(|b| b["posts"].as_u64().unwrap() > 0)
        .map(|b| {
            (b["start"].as_str().unwrap().to_owned(), (b["posts"].as_u64().unwrap(), b["replies"].as_u64().unwrap()))
        })
        .collect();
    assert!(!per_hour.is_empty());
    assert_eq!(non_empty, per_hour);

    // Grouped by language: each post in each of its bare languages, none in the null group.
    let data = app.query("{ timeBuckets(interval: MONTH, groupBy: LANG) { group posts } }", json!({}));
    let mut per_lang: BTreeMap<Option<String>, u64> = BTreeMap::new();
    for post in &posts {
        let bare: BTreeSet<String> = post.langs.iter().map(|l| l.split('-').next().unwrap().to_lowercase()).collect();
        if bare.is_empty() {
            *per_lang.entry(None).or_default() += 1;
        }
        for lang in bare {
            *per_lang.entry(Some(lang)).or_default() += 1;
        }
    }
    let got: BTreeMap<Option<String>, u64> = data["timeBuckets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| (b["group"].as_str().map(str::to_owned), b["posts"].as_u64().unwrap()))
        .collect();
    assert_eq!(got, per_lang);

    // That came from the rollups, and a computed answer says so; distinct authors come from
    // the posts, with the reason.
    let answer = app.request("{ timeBuckets(interval: MONTH, groupBy: LANG) { group posts replies } }", json!({}));
    assert_eq!(answer["extensions"]["plans"], json!([{"question": "timeBuckets", "from": "rollups"}]));
    let answer = app.request("{ timeBuckets(interval: MONTH) { posts authors } }", json!({}));
    assert_eq!(
        answer["extensions"]["plans"],
        json!([{"question": "timeBuckets", "from": "posts", "why": "distinct authors are counted from the posts"}])
    );
    let total: u64 =
        answer["data"]["timeBuckets"].as_array().unwrap().iter().map(|b| b["posts"].as_u64().unwrap()).sum();
    assert_eq!(total, posts.len() as u64);

    // Explained: every question, each with the statements that answered it (their SQL and
    // time), computed afresh; the data is the same.
    let query = "{ topAuthors(first: 3) { posts } timeBuckets(interval: MONTH) { posts authors } \
                 posts(first: 2) { nodes { uri } } }";
    let explained = app.request_with(query, json!({}), json!({"explain": true}));
    assert_eq!(explained["data"], app.query(query, json!({})));
    assert_eq!(explained["extensions"]["cache"], json!("BYPASS"));
    let plans = explained["extensions"]["plans"].as_array().unwrap();
    let plan_of = |question: &str| plans.iter().find(|p| p["question"] == json!(question)).unwrap();
    let top = plan_of("topAuthors");
    assert_eq!(top["from"], json!("rollups"));
    let buckets = plan_of("timeBuckets");
    assert_eq!(buckets["why"], json!("distinct authors are counted from the posts"));
    assert!(buckets["statements"][0]["sql"].as_str().unwrap().contains("count(DISTINCT did)"), "{buckets:#}");
    let page = plan_of("posts");
    assert_eq!((&page["from"], &page["why"]), (&json!("posts"), &Value::Null));
    for plan in [top, buckets, page] {
        assert!(plan["ms"].as_f64().unwrap() >= 0.0, "{plan:#}");
        for statement in plan["statements"].as_array().unwrap() {
            assert!(
                statement["sql"].as_str().unwrap().starts_with("SELECT")
                    || statement["sql"].as_str().unwrap().starts_with("WITH"),
                "{statement:#}"
            );
            assert!(statement["ms"].as_f64().unwrap() >= 0.0 && statement["params"].is_array(), "{statement:#}");
        }
    }

    // author(did) and the same author under every post of a page (batched, one query per level).
    let (did, n) = ranked[0];
    let theirs: Vec<&ExpectedPost> = posts.iter().filter(|p| p.did == did).collect();
    let data = app.query(
        "query($did: ID!) { author(did: $did) { did handle postCount firstPostAt lastPostAt posts(first: 2) { nodes { uri } pageInfo { hasNextPage } } } }",
        json!({"did": did}),
    );
    let author = &data["author"];
    assert_eq!(author["postCount"], json!(n));
    assert_eq!(author["firstPostAt"], json!(expected::rfc3339(theirs.iter().map(|p| p.created_at_us).min().unwrap())));
    assert_eq!(author["lastPostAt"], json!(expected::rfc3339(theirs.iter().map(|p| p.created_at_us).max().unwrap())));
    let newest: Vec<String> = expected::newest_first(&theirs.iter().map(|p| (*p).clone()).collect::<Vec<_>>());
    let got: Vec<&str> =
        author["posts"]["nodes"].as_array().unwrap().iter().map(|n| n["uri"].as_str().unwrap()).collect();
    assert_eq!(got, newest.iter().take(2).map(String::as_str).collect::<Vec<_>>());
    assert_eq!(author["posts"]["pageInfo"]["hasNextPage"], json!(n > 2));

    let data = app.query(
        "{ posts(first: 50) { nodes { authorDid author { postCount posts(first: 1) { nodes { authorDid } } } } } }",
        json!({}),
    );
    for node in data["posts"]["nodes"].as_array().unwrap() {
        let did = node["authorDid"].as_str().unwrap();
        assert_eq!(node["author"]["postCount"], json!(per_author[did]), "{did}");
        assert_eq!(node["author"]["posts"]["nodes"][0]["authorDid"], json!(did));
    }

    // Activity and hashtags under many authors (batched) equal each author asked alone, and
    // an author's daily posts add up to their count.
    let fields = "did postCount activity(interval: DAY, timeZone: \"Asia/Tokyo\") { start posts } topHashtags(first: 2) { tag posts }";
    let many = app.query(&format!("{{ topAuthors(first: 10) {{ author {{ {fields} }} }} }}"), json!({}));
    for row in many["topAuthors"].as_array().unwrap() {
        let did = row["author"]["did"].as_str().unwrap();
        let alone = app.query(&format!("query($did: ID!) {{ author(did: $did) {{ {fields} }} }}"), json!({"did": did}));
        assert_eq!(row["author"], alone["author"], "{did}");
        let days: u64 =
            alone["author"]["activity"].as_array().unwrap().iter().map(|b| b["posts"].as_u64().unwrap()).sum();
        assert_eq!(days, per_author[did], "{did}");
    }

    let nobody = app.query("{ author(did: \"did:plc:nobodyhere\") { did } }", json!({}));
    assert_eq!(nobody["author"], Value::Null);
}

#[test]
fn handles_come_from_identity_events_and_hidden_accounts_leave_every_answer() {
    let (mut redis, _lake, app, posts) = serve_sample();
    let sample = fixtures_dir().join("jetstream_sample.jsonl");
    let handles = expected::handles_in(&sample);
    let hidden = expected::hidden_in(&sample);
    assert!(!handles.is_empty() && !hidden.is_empty(), "the fixture has identity and takedown events");

    // Each author on a page of posts carries its latest handle (or null).
    let data = app.query("{ posts(first: 100) { nodes { authorDid author { handle active status } } } }", json!({}));
    for node in data["posts"]["nodes"].as_array().unwrap() {
        let did = node["authorDid"].as_str().unwrap();
        assert_eq!(node["author"]["handle"], json!(handles.get(did)), "{did}");
        assert_eq!(node["author"]["active"], json!(true), "{did}");
        assert!(!hidden.contains(did), "a hidden author's post is listed: {did}");
    }

    // A taken-down account: known, inactive with its status, and none of its posts counted.
    for did in &hidden {
        let data = app.query("query($did: ID!) { author(did: $did) { active status postCount } }", json!({"did": did}));
        assert_eq!(data["author"], json!({"active": false, "status": "takendown", "postCount": 0}), "{did}");
    }
    let data = app.query(
        "{ posts(first: 0) { totalCount } topHashtags(first: 100) { tag posts } topAuthors(first: 100) { author { did } } }",
        json!({}),
    );
    assert_eq!(data["posts"]["totalCount"], json!(posts.len()));
    let hidden_tags = data["topHashtags"].as_array().unwrap().iter().filter(|t| t["tag"] == "water").count();
    assert_eq!(hidden_tags, 0, "the taken-down account's hashtag is not counted");
    for row in data["topAuthors"].as_array().unwrap() {
        assert!(!hidden.contains(row["author"]["did"].as_str().unwrap()));
    }

    // Everything was flushed: nothing waits in the buffer. Without Redis the lake still
    // answers, and says it cannot tell what is buffered.
    let data = app.query("{ lake { posts bufferedPosts } }", json!({}));
    assert_eq!(data["lake"], json!({"posts": posts.len(), "bufferedPosts": 0}));
    redis.kill();
    let data = app.query("{ lake { posts bufferedPosts } }", json!({}));
    assert_eq!(data["lake"], json!({"posts": posts.len(), "bufferedPosts": null}));
}

#[test]
fn bad_arguments_are_user_errors_with_a_path() {
    let (_redis, _lake, app, _posts) = serve_sample();
    let cases = [
        ("{ timeBuckets(interval: DAY, timeZone: \"Mars/Olympus\") { start } }", "timeBuckets", "IANA"),
        ("{ author(did: \"not-a-did\") { did } }", "author", "not a DID"),
        ("{ topAuthors(first: 5000) { posts } }", "topAuthors", "first must be between"),
        ("{ posts(filter: {text: {query: \"!!!\", mode: WORDS}}) { nodes { uri } } }", "posts", "no words"),
        (
            "{ timeBuckets(interval: MINUTE, filter: {since: \"2020-01-01T00:00:00Z\", until: \"2026-01-01T00:00:00Z\"}) { start } }",
            "timeBuckets",
            "buckets",
        ),
        (
            "{ timeBuckets(interval: DAY, clock: INDEXED_AT, filter: {clock: CREATED_AT}) { start } }",
            "timeBuckets",
            "clock",
        ),
    ];
    for (query, field, message) in cases {
        let response = app.request(query, json!({}));
        let (path, code, text) = error_of(&response);
        assert_eq!(path, &json!([field]), "{query}: {response}");
        assert_eq!(code, &json!("BAD_USER_INPUT"), "{query}: {response}");
        assert!(text.contains(message), "{query}: {response}");
    }
}

fn micros(rfc3339: &str) -> i64 {
    chrono::DateTime::parse_from_rfc3339(rfc3339).unwrap().timestamp_micros()
}
