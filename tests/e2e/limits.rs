//! Query limits on a lake big enough for a slow query: the timeout really interrupts DuckDB
//! (the one query slot frees up at once for the next request), and says so to the client.

use lake::model::Post;
use serde_json::json;
use skyglass_tests::{App, RedisServer, skyglass};

const DAY: i64 = 86_400_000_000;

/// A million posts over ten days in the year 2024, written straight through the lake writer.
fn big_lake(dir: &std::path::Path) {
    let start = 19_800 * DAY;
    let posts: Vec<Post> = (0..1_000_000_i64)
        .map(|i| {
            let did = format!("did:plc:author{}", i % 5_000);
            Post {
                uri: format!("at://{did}/app.bsky.feed.post/{i:08}"),
                cid: format!("c{i}"),
                rkey: format!("{i:08}"),
                created_at_us: start + i * 864_000,
                indexed_at_us: start + i * 864_000,
                text: format!("the quick brown fox number {i} jumps over the lazy dog"),
                langs: vec!["en".into()],
                did,
                ..Post::default()
            }
        })
        .collect();
    for (n, chunk) in posts.chunks(250_000).enumerate() {
        lake::writer::write_posts(dir, &format!("big-{n}.parquet"), chunk.to_vec()).unwrap();
    }
}

#[test]
fn a_query_past_its_timeout_is_interrupted_and_frees_its_slot() {
    let redis = RedisServer::start().unwrap();
    let lake = tempfile::tempdir().unwrap();
    big_lake(lake.path());
    let app = App::serve(skyglass(lake.path(), &redis.url()).args([
        "serve",
        "--role",
        "api",
        "--listen",
        "127.0.0.1:0",
        "--query-timeout",
        "100ms",
        "--max-concurrent-queries",
        "1",
    ]))
    .unwrap();

    // Every row passes the ILIKE prefilter, so the phrase regex runs on a million texts.
    let slow = "{ posts(filter: {text: {query: \"lazy dog\", mode: PHRASE}}, first: 0) { totalCount } }";
    let response = app.request(slow, json!({}));
    let error = &response["errors"][0];
    assert_eq!(error["extensions"]["code"], json!("TIMEOUT"), "{response}");
    assert_eq!(error["path"], json!(["posts", "totalCount"]), "{response}");
    assert!(error["message"].as_str().unwrap().contains("narrow"), "{response}");

    // The only slot is free again: a pruned query answers.
    let fast = "{ posts(filter: {since: \"2030-01-01T00:00:00Z\"}) { nodes { uri } } }";
    let data = app.query(fast, json!({}));
    assert_eq!(data["posts"]["nodes"], json!([]));

    let metrics = app.get("/metrics").text().unwrap();
    let timeouts = metrics
        .lines()
        .find_map(|l| l.strip_prefix("skyglass_query_timeouts_total "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .unwrap_or(0.0);
    assert!(timeouts >= 1.0, "{metrics}");
}
