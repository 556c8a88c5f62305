//! `skyglass lake reenrich` against a lake that `serve` is answering from: posts stored by an
//! older enrichment come back exactly as a fresh ingest stores them, and the running server
//! sees each swap without a restart.

use serde_json::Value;
use skyglass_tests::{App, RedisServer, fixtures_dir, ingest_once, skyglass};

const ALL: &str = "{ posts(first: 1000, order: OLDEST) { nodes { uri detectedLang hashtags } } }";

#[test]
fn reenrich_restores_what_an_older_version_left_out_while_serve_answers() {
    let redis = RedisServer::start().unwrap();
    let lake = tempfile::tempdir().unwrap();
    ingest_once(lake.path(), &redis.url(), &fixtures_dir().join("jetstream_sample.jsonl"));
    let app = App::serve_api(lake.path(), &redis.url()).unwrap();
    let fresh = app.query(ALL, Value::Null);
    let posts = fresh["posts"]["nodes"].as_array().unwrap().len();
    let detected = |answer: &Value| {
        answer["posts"]["nodes"].as_array().unwrap().iter().filter(|n| !n["detectedLang"].is_null()).count()
    };
    assert!(detected(&fresh) > 0, "the fixture has posts with a detectable language");

    // Store every post as an older version would have: no detected language, no length.
    let partitions = lake::catalog::table_files(lake.path(), lake::layout::POSTS_TABLE).unwrap().partitions;
    for (date, _) in &partitions {
        lake::rewrite::redo_stale_posts(lake.path(), *date, i32::MAX, 1, |post| {
            post.detected_lang = None;
            post.text_len = 0;
            post.enrich_version = lake::model::ENRICH_VERSION - 1;
        })
        .unwrap();
    }
    assert_eq!(detected(&app.query(ALL, Value::Null)), 0, "serve sees the aged lake");

    let output =
        skyglass(lake.path(), &redis.url()).args(["lake", "reenrich", "--since", "2000-01-01"]).output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    // Every stored post was stale (deleted ones too, which queries do not show).
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), partitions.len() + 1, "{stdout}");
    let mut redone = 0;
    for line in &lines[..partitions.len()] {
        let words: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(words[1], words[3], "all of a partition's posts were stale: {line}");
        redone += words[1].parse::<usize>().unwrap();
    }
    assert!(redone >= posts, "{stdout}");
    assert!(
        lines[partitions.len()].starts_with(&format!("re-enriched {redone} posts in {} partitions", partitions.len()))
    );
    assert_eq!(app.query(ALL, Value::Null), fresh);

    // Nothing is stale now; a backwards range is refused with one line that says what to fix.
    let again =
        skyglass(lake.path(), &redis.url()).args(["lake", "reenrich", "--since", "2000-01-01"]).output().unwrap();
    assert!(String::from_utf8_lossy(&again.stdout).contains("re-enriched 0 posts"));
    let backwards = skyglass(lake.path(), &redis.url())
        .args(["lake", "reenrich", "--since", "2024-02-01", "--until", "2024-01-01"])
        .output()
        .unwrap();
    assert!(!backwards.status.success());
    let stderr = String::from_utf8_lossy(&backwards.stderr);
    assert!(stderr.contains("--until 2024-01-01 is before --since 2024-02-01"), "{stderr}");
    assert!(app.stop().success());
}
