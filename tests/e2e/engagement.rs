//! Likes, reposts, replies and quotes through the whole path: Jetstream lines in a file,
//! `skyglass ingest` into a private Redis and the lake, twice (a replay), then `Post`'s counts
//! over GraphQL against the same counts made from the lines in plain Rust; and again after
//! `skyglass lake compact` (which takes the undone likes out of the files and retires their
//! deletes) and a third replay.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Value, json};
use skyglass_tests::{App, RedisServer, ingest_once, skyglass};

const DAY_US: i64 = 86_400_000_000;
const START_US: i64 = 1_795_737_600_000_000; // 2026-11-27T00:00:00Z

fn rfc3339(us: i64) -> String {
    chrono::DateTime::from_timestamp_micros(us).unwrap().to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

fn commit(did: &str, time_us: i64, operation: &str, collection: &str, rkey: &str, record: Option<Value>) -> String {
    let mut line = json!({"did": did, "time_us": time_us, "kind": "commit",
        "commit": {"rev": "3m", "operation": operation, "collection": collection, "rkey": rkey, "cid": "bafyreic"}});
    if let Some(record) = record {
        line["commit"]["record"] = record;
    }
    line.to_string()
}

/// Posts, some replying to or quoting others; likes and reposts of them, some undone; a
/// like of a feed and one of no record; a takedown of one liker.
fn events() -> Vec<String> {
    let mut state = 11_u64;
    let mut next = move |n: u64| {
        state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (state >> 33) % n
    };
    let mut lines = Vec::new();
    let mut posts: Vec<String> = Vec::new();
    for i in 0..40_i64 {
        let did = format!("did:plc:author{}", i % 5);
        let rkey = format!("3kp{i:04}");
        let at = START_US + i * 600_000_000;
        let tags = if i >= 30 { format!("post {i} #tag{} #surge", i % 3) } else { format!("post {i} #tag{}", i % 3) };
        let mut record = json!({"$type": "app.bsky.feed.post", "text": tags, "createdAt": rfc3339(at)});
        if i >= 10 && i % 3 == 0 {
            let parent = &posts[next(posts.len() as u64) as usize];
            record["reply"] = json!({"root": {"uri": parent, "cid": "c"}, "parent": {"uri": parent, "cid": "c"}});
        }
        if i >= 10 && i % 4 == 1 {
            let quoted = &posts[next(posts.len() as u64) as usize];
            record["embed"] = json!({"$type": "app.bsky.embed.record", "record": {"uri": quoted, "cid": "c"}});
        }
        lines.push(commit(&did, at + 1_000, "create", "app.bsky.feed.post", &rkey, Some(record)));
        posts.push(format!("at://{did}/app.bsky.feed.post/{rkey}"));
    }
    // A reply deleted later takes its count back.
    lines.push(commit("did:plc:author3", START_US + DAY_US / 2, "delete", "app.bsky.feed.post", "3kp0018", None));
    for j in 0..600_i64 {
        let subject = &posts[next(posts.len() as u64) as usize];
        let collection = if j % 5 == 0 { "app.bsky.feed.repost" } else { "app.bsky.feed.like" };
        let at = START_US + DAY_US / 2 + j * 180_000_000;
        let record = json!({"$type": collection, "createdAt": rfc3339(at), "subject": {"uri": subject, "cid": "c"}});
        let did = format!("did:plc:fan{}", j % 60);
        lines.push(commit(&did, at + 1_000, "create", collection, &format!("3kl{j:05}"), Some(record)));
        if j % 9 == 4 {
            lines.push(commit(&did, at + 7_000_000, "delete", collection, &format!("3kl{j:05}"), None));
        }
    }
    let feed = json!({"createdAt": rfc3339(START_US), "subject": {"uri": "at://did:plc:author1/app.bsky.feed.generator/hot", "cid": "c"}});
    lines.push(commit("did:plc:fan1", START_US + DAY_US, "create", "app.bsky.feed.like", "3kx0001", Some(feed)));
    let nothing = json!({"createdAt": rfc3339(START_US), "subject": {"uri": "at://nowhere", "cid": "c"}});
    lines.push(commit("did:plc:fan1", START_US + DAY_US, "create", "app.bsky.feed.like", "3kx0002", Some(nothing)));
    lines.push(
        json!({"did": "did:plc:fan7", "time_us": START_US + DAY_US, "kind": "account",
               "account": {"active": false, "status": "takendown"}})
        .to_string(),
    );
    lines
}

/// Each post's (likes, reposts, replies, quotes), from the lines in plain Rust.
fn expected(lines: &[String]) -> BTreeMap<String, [u64; 4]> {
    let events: Vec<Value> = lines.iter().map(|l| serde_json::from_str(l).unwrap()).collect();
    let deleted: BTreeSet<(String, String, String)> = events
        .iter()
        .filter(|e| e["commit"]["operation"] == "delete")
        .map(|e| {
            (
                e["did"].as_str().unwrap().into(),
                e["commit"]["collection"].as_str().unwrap().into(),
                e["commit"]["rkey"].as_str().unwrap().into(),
            )
        })
        .collect();
    let hidden: BTreeSet<&str> =
        events.iter().filter(|e| e["kind"] == "account").map(|e| e["did"].as_str().unwrap()).collect();
    let mut counts: BTreeMap<String, [u64; 4]> = BTreeMap::new();
    let mut live = BTreeSet::new();
    for e in events.iter().filter(|e| e["commit"]["operation"] == "create") {
        let (did, collection, rkey) = (
            e["did"].as_str().unwrap(),
            e["commit"]["collection"].as_str().unwrap(),
            e["commit"]["rkey"].as_str().unwrap(),
        );
        if deleted.contains(&(did.into(), collection.into(), rkey.into())) || hidden.contains(did) {
            continue;
        }
        let record = &e["commit"]["record"];
        if collection == "app.bsky.feed.post" {
            live.insert(format!("at://{did}/{collection}/{rkey}"));
        }
        let mut add = |uri: &Value, slot: usize| {
            if let Some(uri) = uri.as_str().filter(|u| u.contains("/app.bsky.feed.post/")) {
                counts.entry(uri.to_owned()).or_default()[slot] += 1;
            }
        };
        match collection {
            "app.bsky.feed.like" => add(&record["subject"]["uri"], 0),
            "app.bsky.feed.repost" => add(&record["subject"]["uri"], 1),
            _ => {
                add(&record["reply"]["parent"]["uri"], 2);
                add(&record["embed"]["record"]["uri"], 3);
            }
        }
    }
    live.into_iter().map(|uri| (counts.get(&uri).copied().unwrap_or_default(), uri)).map(|(c, uri)| (uri, c)).collect()
}

#[test]
fn posts_count_their_live_likes_reposts_replies_and_quotes_once_however_often_replayed() {
    let redis = RedisServer::start().unwrap();
    let lake = tempfile::tempdir().unwrap();
    let lines = events();
    let file = lake.path().join("events.jsonl");
    std::fs::write(&file, lines.join("\n") + "\n").unwrap();
    let output = ingest_once(lake.path(), &redis.url(), &file);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let of_posts = lines
        .iter()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|e| {
            e["commit"]["operation"] == "create"
                && e["commit"]["record"]["subject"]["uri"].as_str().is_some_and(|u| u.contains("/app.bsky.feed.post/"))
        })
        .count();
    assert!(stdout.contains(&format!(" {of_posts} likes and reposts")), "{stdout}");
    assert!(stdout.contains("1 dropped"), "the like of no record: {stdout}");
    // The whole file again: every row a copy.
    ingest_once(lake.path(), &redis.url(), &file);

    let expected = expected(&lines);
    let app = App::serve_api(lake.path(), &redis.url()).unwrap();
    assert_counts(&app, &expected);
    assert_trends_and_refusals(&app);
    assert!(app.stop().success());

    // Compaction takes the undone likes and the deleted reply out of the files and retires
    // their deletes (all but the last hour's); a replay then brings them back, and their
    // deletes after them.
    let output = skyglass(lake.path(), &redis.url()).args(["lake", "compact"]).output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    let retired: u64 =
        stdout.lines().filter_map(|line| line.split("retired ").nth(1)?.split(' ').next()?.parse::<u64>().ok()).sum();
    // Those stored over an hour before the newest event (of likes, reposts and the reply),
    // once per ingest (a delete is stored again by a replay; it takes out nothing more).
    let events: Vec<Value> = lines.iter().map(|l| serde_json::from_str(l).unwrap()).collect();
    let newest = events.iter().filter_map(|e| e["time_us"].as_i64()).max().unwrap();
    let retirable = events
        .iter()
        .filter(|e| e["commit"]["operation"] == "delete")
        .filter(|e| e["time_us"].as_i64().unwrap() < newest - 3_600_000_000)
        .count() as u64;
    assert!(retirable > 10, "{retirable}");
    assert_eq!(retired, 2 * retirable, "{stdout}");
    let app = App::serve_api(lake.path(), &redis.url()).unwrap();
    assert_counts(&app, &expected);
    assert!(app.stop().success());
    ingest_once(lake.path(), &redis.url(), &file);
    let app = App::serve_api(lake.path(), &redis.url()).unwrap();
    assert_counts(&app, &expected);
    assert!(app.stop().success());
}

/// Every post's four counts, every ranking over pages of 4, two authors' totals and one post by
/// uri, against `expected`.
fn assert_counts(app: &App, expected: &BTreeMap<String, [u64; 4]>) {
    let data =
        app.query("{ posts(first: 100) { nodes { uri likeCount repostCount replyCount quoteCount } } }", json!({}));
    let counted: BTreeMap<String, [u64; 4]> = data["posts"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            let count = |field: &str| n[field].as_u64().unwrap();
            let counts = [count("likeCount"), count("repostCount"), count("replyCount"), count("quoteCount")];
            (n["uri"].as_str().unwrap().to_owned(), counts)
        })
        .collect();
    assert_eq!(&counted, expected);
    let totals = expected.values().fold([0; 4], |mut sum, c| {
        (0..4).for_each(|k| sum[k] += c[k]);
        sum
    });
    assert!(totals.iter().all(|n| *n > 5), "every kind is exercised: {totals:?}");
    // The posts of the window ranked by each count, most first, ties by DID then record key,
    // over pages of 4.
    for (slot, order) in ["MOST_LIKED", "MOST_REPOSTED", "MOST_REPLIED", "MOST_QUOTED"].into_iter().enumerate() {
        let mut ranked: Vec<(u64, &String)> = expected.iter().map(|(uri, c)| (c[slot], uri)).collect();
        let key = lake::model::post_order_key;
        ranked.sort_by(|a, b| b.0.cmp(&a.0).then(key(a.1).cmp(&key(b.1))));
        let (mut seen, mut after) = (Vec::new(), Value::Null);
        loop {
            let page = app.query(
                "query($order: PostOrder, $after: String, $since: DateTime) { posts(first: 4, order: $order, after: $after, \
                 filter: {since: $since}) { nodes { uri likeCount repostCount replyCount quoteCount } pageInfo { hasNextPage endCursor } } }",
                json!({"order": order, "after": after, "since": rfc3339(START_US)}),
            );
            for node in page["posts"]["nodes"].as_array().unwrap() {
                let field = ["likeCount", "repostCount", "replyCount", "quoteCount"][slot];
                seen.push((node[field].as_u64().unwrap(), node["uri"].as_str().unwrap().to_owned()));
            }
            if page["posts"]["pageInfo"]["hasNextPage"] != json!(true) {
                break;
            }
            after = page["posts"]["pageInfo"]["endCursor"].clone();
        }
        let ranked: Vec<(u64, String)> = ranked.into_iter().map(|(n, uri)| (n, uri.clone())).collect();
        assert_eq!(seen, ranked, "{order}");
    }
    let unbounded = app.request("{ posts(order: MOST_LIKED) { nodes { uri } } }", json!({}));
    assert_eq!(unbounded["errors"][0]["extensions"]["code"], json!("BAD_USER_INPUT"), "{unbounded}");
    let newest = app.query("{ posts(first: 1) { pageInfo { endCursor } } }", json!({}));
    let crossed = app.request(
        "query($after: String) { posts(order: MOST_LIKED, after: $after, filter: {since: \"2026-11-27T00:00:00Z\"}) { nodes { uri } } }",
        json!({"after": newest["posts"]["pageInfo"]["endCursor"]}),
    );
    assert_eq!(
        crossed["errors"][0]["extensions"]["code"],
        json!("BAD_USER_INPUT"),
        "another order's cursor: {crossed}"
    );

    // An author's totals are the sums over their posts.
    let authors = app.query(
        "{ a: author(did: \"did:plc:author2\") { likesReceived repostsReceived repliesReceived quotesReceived } \
           b: author(did: \"did:plc:author3\") { likesReceived repostsReceived repliesReceived quotesReceived } }",
        json!({}),
    );
    for (alias, did) in [("a", "did:plc:author2"), ("b", "did:plc:author3")] {
        let sum =
            expected.iter().filter(|(uri, _)| uri.contains(&format!("//{did}/"))).fold([0; 4], |mut sum, (_, c)| {
                (0..4).for_each(|k| sum[k] += c[k]);
                sum
            });
        let totals = json!({"likesReceived": sum[0], "repostsReceived": sum[1], "repliesReceived": sum[2], "quotesReceived": sum[3]});
        assert_eq!(authors[alias], totals, "{did}");
    }

    // One post alone, by uri, asks the same.
    let (uri, counts) = expected.iter().max_by_key(|(_, c)| c[0]).unwrap();
    let one = app.query("query($uri: ID!) { post(uri: $uri) { likeCount repostCount } }", json!({"uri": uri}));
    assert_eq!(one["post"], json!({"likeCount": counts[0], "repostCount": counts[1]}));
}

fn assert_trends_and_refusals(app: &App) {
    // What rose in the last 100 minutes of posts (#surge, on the last ten) against the 300
    // before; the deleted post (18) is not counted.
    let trending = app.query(
        "query($w: TimeRange, $b: TimeRange) { trending(kind: HASHTAG, window: $w, baseline: $b, minPosts: 2, first: 2) \
         { item posts baselinePosts expected ratio } }",
        json!({"w": {"since": rfc3339(START_US + 30 * 600_000_000), "until": rfc3339(START_US + 40 * 600_000_000)},
               "b": {"since": rfc3339(START_US), "until": rfc3339(START_US + 30 * 600_000_000)}}),
    );
    let tag0_window = (30..40).filter(|i| i % 3 == 0).count();
    let tag0_baseline = (0..30).filter(|i| i % 3 == 0 && *i != 18).count();
    let tag0_expected = tag0_baseline as f64 / 3.0;
    assert_eq!(
        trending["trending"],
        json!([
            {"item": "surge", "posts": 10, "baselinePosts": 0, "expected": 0.0, "ratio": 11.0},
            {"item": "tag0", "posts": tag0_window, "baselinePosts": tag0_baseline, "expected": tag0_expected,
             "ratio": (tag0_window as f64 + 1.0) / (tag0_expected + 1.0)},
        ])
    );
    let refused =
        app.request("{ trending(kind: LANG, filter: {since: \"2026-01-01T00:00:00Z\"}) { item } }", json!({}));
    assert_eq!(refused["errors"][0]["extensions"]["code"], json!("BAD_USER_INPUT"), "{refused}");
    assert_eq!(refused["errors"][0]["path"], json!(["trending"]), "{refused}");
}
