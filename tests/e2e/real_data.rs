//! Real Bluesky events from `../shared/data/real/` (when present), ingested and checked the same
//! way as the fixture: the lake holds exactly the posts the files contain.

use serde_json::json;
use skyglass_tests::{App, RedisServer, ingest_once, real_data_dir};

use crate::expected;

#[test]
fn real_jetstream_events_land_in_the_lake_with_every_post_queryable() {
    let Some(dir) = real_data_dir() else {
        eprintln!("skipped: ../shared/data/real is absent, so the real-data test has nothing to read");
        return;
    };
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "{} has no .jsonl files", dir.display());

    let redis = RedisServer::start().unwrap();
    let lake = tempfile::tempdir().unwrap();
    let mut posts = Vec::new();
    for file in &files {
        ingest_once(lake.path(), &redis.url(), file);
        posts.extend(expected::posts_in(file));
    }
    posts.sort_by(|a, b| a.uri.cmp(&b.uri));
    posts.dedup_by(|a, b| a.uri == b.uri);
    assert!(!posts.is_empty());

    let app = App::serve_api(lake.path(), &redis.url()).unwrap();
    let data = app.query("{ lake { posts partitions } }", json!({}));
    assert_eq!(data["lake"]["posts"], json!(posts.len()));
    assert_eq!(data["lake"]["partitions"], json!(expected::days(&posts).len()));

    let listed = app.query("{ posts(first: 1000) { nodes { uri text langs hashtags } } }", json!({}));
    let nodes = listed["posts"]["nodes"].as_array().unwrap();
    let listed_uris: Vec<String> = nodes.iter().map(|n| n["uri"].as_str().unwrap().to_owned()).collect();
    assert_eq!(listed_uris, expected::newest_first(&posts));
    for node in nodes {
        let want = posts.iter().find(|p| p.uri == node["uri"].as_str().unwrap()).unwrap();
        assert_eq!(node["text"], json!(want.text), "{}", want.uri);
        assert_eq!(node["langs"], json!(want.langs), "{}", want.uri);
        for tag in &want.tag_features {
            assert!(node["hashtags"].as_array().unwrap().contains(&json!(tag)), "{} lacks #{tag}", want.uri);
        }
    }
    let english = expected::count(&posts, |p| expected::has_lang(p, "en"));
    let data = app.query("{ posts(filter: {langs: [\"en\"]}, first: 0) { totalCount } }", json!({}));
    assert_eq!(data["posts"]["totalCount"], json!(english));
}
