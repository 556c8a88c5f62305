//! Scale-out: an ingest worker and two API replicas as separate processes on one Redis and one
//! lake. The replicas answer the worker's buffered posts before any flush, share cached answers
//! (the hot tier's version is the same on both), and answer the lake alike after the worker's
//! last flush.

use std::time::Duration;

use serde_json::json;
use skyglass_tests::{App, RedisServer, poll, skyglass};

#[test]
fn an_ingest_worker_and_two_api_replicas_share_one_redis_and_lake() {
    let redis = RedisServer::start().unwrap();
    let lake = tempfile::tempdir().unwrap();
    let sample = skyglass_tests::fixtures_dir().join("jetstream_sample.jsonl");
    let expected = crate::expected::posts_in(&sample);
    let lines: Vec<String> = std::fs::read_to_string(&sample).unwrap().lines().map(str::to_owned).collect();
    let stand_in = skyglass_tests::jetstream::JetstreamStandIn::start(lines, tokio::sync::watch::channel(true).1);
    let worker = App::serve(
        skyglass(lake.path(), &redis.url())
            .args(["serve", "--role", "ingest", "--listen", "127.0.0.1:0", "--flush-interval", "1h", "--source"])
            .arg(format!("jetstream:{}", stand_in.url)),
    )
    .unwrap();
    let replicas =
        [App::serve_api(lake.path(), &redis.url()).unwrap(), App::serve_api(lake.path(), &redis.url()).unwrap()];

    // Both answer the buffered posts, each from its own tail of the buffer.
    const QUERY: &str = "{ posts(first: 100) { totalCount nodes { uri } } lake { posts } }";
    let newest = crate::expected::rfc3339(crate::expected::newest_event_in(&sample));
    for replica in &replicas {
        poll(Duration::from_secs(30), || {
            let answer = replica.request(QUERY, json!({}));
            let caught_up = answer["extensions"]["freshness"]["ingestedThrough"].as_str() == Some(newest.as_str());
            (caught_up && answer["data"]["posts"]["totalCount"] == json!(expected.len())).then_some(())
        })
        .unwrap_or_else(|| {
            panic!("a replica never answered the buffered posts: {}", replica.request(QUERY, json!({})))
        });
    }

    // One computes, the other is served the same answer from the shared cache.
    let question = "{ posts(first: 7) { totalCount nodes { uri text } } }";
    let first = replicas[0].request(question, json!({}));
    let second = replicas[1].request(question, json!({}));
    assert_eq!(first["extensions"]["cache"], json!("MISS"), "{first}");
    assert_eq!(second["extensions"]["cache"], json!("HIT"), "the replicas agree on the hot tier's version: {second}");
    assert_eq!(second["data"], first["data"]);
    assert_eq!(first["data"]["posts"]["totalCount"], json!(expected.len()));
    let lake_now = replicas[1].query("{ lake { posts } }", json!({}));
    assert_eq!(lake_now["lake"]["posts"], json!(0), "nothing flushed yet");

    // The worker's last flush: both replicas answer from the files alike.
    assert!(worker.stop().success());
    for replica in &replicas {
        let after = poll(Duration::from_secs(20), || {
            let data = replica.query(QUERY, json!({}));
            (data["lake"]["posts"] == json!(expected.len())).then_some(data)
        })
        .expect("the replica sees the flush");
        assert_eq!(after["posts"]["totalCount"], json!(expected.len()), "every post once: {after}");
    }
    let [a, b] = replicas;
    assert!(a.stop().success() && b.stop().success());
}
