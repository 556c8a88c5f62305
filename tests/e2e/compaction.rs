//! `skyglass lake compact` on a lake that several ingest runs left in many small files: a
//! running server answers exactly as before, from one file per day.

use std::io::Write;

use serde_json::{Value, json};
use skyglass_tests::{App, RedisServer, fixtures_dir, ingest_once, skyglass};

use crate::expected;

const EVERYTHING: &str = "{ posts(first: 1000) { nodes { uri text hashtags } totalCount }
  timeBuckets(interval: DAY, filter: {}) { start posts }
  topHashtags(first: 50) { tag posts } }";

#[test]
fn compaction_merges_small_files_and_a_running_server_answers_the_same() {
    let redis = RedisServer::start().unwrap();
    let lake = tempfile::tempdir().unwrap();
    let sample = fixtures_dir().join("jetstream_sample.jsonl");
    // Ingest the fixture four lines at a time: many flushes, many small files per day.
    let text = std::fs::read_to_string(&sample).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    for (n, chunk) in lines.chunks(4).enumerate() {
        let path = lake.path().join(format!("part-{n}.jsonl"));
        let mut file = std::fs::File::create(&path).unwrap();
        for line in chunk {
            writeln!(file, "{line}").unwrap();
        }
        ingest_once(lake.path(), &redis.url(), &path);
    }
    let posts = expected::posts_in(&sample);
    let days = expected::days(&posts).len();

    let app = App::serve_api(lake.path(), &redis.url()).unwrap();
    let stats = |app: &App| app.query("{ lake { files generation } }", json!({}))["lake"].clone();
    let before_stats = stats(&app);
    assert!(before_stats["files"].as_u64().unwrap() > days as u64, "{before_stats}");
    let before: Value = app.query(EVERYTHING, json!({}));
    assert_eq!(before["posts"]["totalCount"], json!(posts.len()));

    let output = skyglass(lake.path(), &redis.url()).args(["lake", "compact"]).output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    assert!(stdout.contains(&format!(" of {days} posts partitions")), "{stdout}");

    let after_stats = stats(&app);
    assert_eq!(after_stats["files"], json!(days), "one file per day: {after_stats}");
    assert!(after_stats["generation"].as_u64() > before_stats["generation"].as_u64());
    assert_eq!(app.query(EVERYTHING, json!({})), before, "the same answers from the compacted lake");

    // Nothing left to do: a second run changes nothing.
    let output = skyglass(lake.path(), &redis.url()).args(["lake", "compact"]).output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains(&format!("compacted 0 of {days} posts partitions, 0 of ")), "{stdout}");
    assert!(app.stop().success());
}

/// `serve` compacts on its schedule while it answers: every answer during the compaction counts
/// every post once (uncached, from the engine, which lists the files anew when a swap takes
/// one away), and the day ends in one file.
#[test]
fn serve_compacts_on_schedule_and_every_answer_meanwhile_counts_each_post_once() {
    let redis = RedisServer::start().unwrap();
    let lake = tempfile::tempdir().unwrap();
    many_small_files(lake.path());
    let (app, _idle) = serve_compacting(lake.path(), &redis, "2s");
    const QUERY: &str = "{ posts(first: 3, filter: {hashtags: [\"topic5\"]}) { totalCount } \
      all: posts(first: 1) { totalCount } lake { files } }";
    let topic5 = (0..400_000).filter(|i| i % 13 == 5).count();
    let search = |app: &App| -> Value {
        let query = "{ posts(first: 5, filter: {text: {query: \"12345\", mode: WORDS}}) { nodes { uri } } }";
        let request = app.client.post(format!("{}/graphql", app.base_url)).header("Cache-Control", "no-store");
        let answer: Value = request.json(&json!({ "query": query })).send().unwrap().json().unwrap();
        answer["data"]["posts"]["nodes"].clone()
    };
    let searches = |app: &App, path: &str| -> f64 {
        let series = format!("skyglass_text_search_statements_total{{path=\"{path}\"}}");
        skyglass_tests::metric_in(&app.get("/metrics").text().unwrap(), &series).unwrap_or(0.0)
    };
    // The small files have no text index: a search scans them.
    let found = search(&app);
    assert_eq!(found, json!([{"uri": "at://did:plc:author381/app.bsky.feed.post/00012345"}]));
    assert!(searches(&app, "scan") >= 1.0 && searches(&app, "index") == 0.0);
    let (mut answers, mut files_seen) = (0, std::collections::BTreeSet::new());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    loop {
        let answer: Value = app
            .client
            .post(format!("{}/graphql", app.base_url))
            .header("Cache-Control", "no-store")
            .json(&json!({ "query": QUERY }))
            .send()
            .unwrap()
            .json()
            .unwrap();
        assert!(answer.get("errors").is_none(), "{answer}");
        assert_eq!(answer["data"]["all"]["totalCount"], json!(400_000), "answer {answers}: {answer}");
        assert_eq!(answer["data"]["posts"]["totalCount"], json!(topic5), "answer {answers}: {answer}");
        answers += 1;
        let files = answer["data"]["lake"]["files"].as_u64().unwrap();
        files_seen.insert(files);
        if files == 1 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "not compacted within 120 s ({answers} answers)");
    }
    assert!(files_seen.contains(&20), "the first answers came before the compaction: {files_seen:?}");
    // The run counts itself once its partition is published: the answer above may come first.
    let ok = "skyglass_compactions_total{table=\"posts\",outcome=\"ok\"}";
    let counted = skyglass_tests::poll(std::time::Duration::from_secs(10), || {
        skyglass_tests::metric_in(&app.get("/metrics").text().unwrap(), ok).filter(|n| *n == 1.0)
    });
    assert!(counted.is_some(), "{}", app.get("/metrics").text().unwrap());
    assert!(answers >= 3, "answers ran while it compacted: {answers}");
    // The compacted file has its index: the same search reads only its candidates.
    assert_eq!(search(&app), found);
    assert!(searches(&app, "index") >= 1.0, "the search used the new file's index");
    assert!(app.stop().success());
}

/// A lake whose file lacks a kind of rollup (as one written before link domains had theirs)
/// gets it from `serve`'s scheduled compaction, and answers the same before and after.
#[test]
fn serve_builds_the_rollups_a_lake_lacks_and_answers_the_same() {
    const DAY: i64 = 86_400_000_000;
    const HOUR: i64 = 3_600_000_000;
    let redis = RedisServer::start().unwrap();
    let lake = tempfile::tempdir().unwrap();
    // A post every 28.8 s over a day, each with a link; from 18:00 a third link to a new site.
    let day = 20_400 * DAY;
    let posts: Vec<lake::model::Post> = (0..3_000_i64)
        .map(|i| {
            let did = format!("did:plc:author{}", i % 31);
            let at = day + i * 28_800_000;
            let site = if at >= day + 18 * HOUR && i % 3 == 0 { "rising".to_owned() } else { format!("site{}", i % 4) };
            lake::model::Post {
                uri: format!("at://{did}/app.bsky.feed.post/{i:08}"),
                cid: format!("bafy{i}"),
                rkey: format!("{i:08}"),
                created_at_us: at,
                indexed_at_us: at,
                text: format!("post {i}"),
                links: vec![format!("https://www.{site}.example/p/{i}")],
                did,
                ..lake::model::Post::default()
            }
        })
        .collect();
    let rising = posts.iter().filter(|p| p.links[0].contains("rising")).count();
    let written = lake::writer::write_posts(lake.path(), "old.parquet", posts).unwrap();
    let domains = lake::rollup::path_for(&written[0].path, lake::rollup::Kind::Domains);
    std::fs::remove_file(&domains).unwrap();

    let (app, _idle) = serve_compacting(lake.path(), &redis, "1s");
    let iso = |us: i64| chrono::DateTime::from_timestamp_micros(us).unwrap().to_rfc3339();
    let query = format!(
        "{{ trending(kind: LINK_DOMAIN, window: {{since: \"{}\", until: \"{}\"}}, \
         baseline: {{since: \"{}\", until: \"{}\"}}) {{ item posts baselinePosts }} }}",
        iso(day + 18 * HOUR),
        iso(day + DAY),
        iso(day),
        iso(day + 18 * HOUR)
    );
    let ask = || {
        let answer = app.request_with(&query, json!({}), json!({"explain": true}));
        assert!(answer.get("errors").is_none(), "{answer:#}");
        answer["data"]["trending"].clone()
    };
    let generation = || app.query("{ lake { generation } }", json!({}))["lake"]["generation"].as_u64().unwrap();
    let first = generation();
    let before = ask();
    assert_eq!(before[0], json!({"item": "rising.example", "posts": rising, "baselinePosts": 0}), "{before:#}");
    assert_eq!(before.as_array().unwrap().len(), 5, "{before:#}");

    let built = skyglass_tests::poll(std::time::Duration::from_secs(60), || domains.is_file().then_some(()));
    assert!(built.is_some(), "the scheduled compaction did not build the missing domain rollup");
    // The rollup is published with a new generation; the answers from it are the same.
    let same = skyglass_tests::poll(std::time::Duration::from_secs(30), || (generation() > first).then(ask));
    assert_eq!(same, Some(before));
    assert!(app.stop().success());
}

/// `skyglass serve` on `lake`, flushing hourly and compacting every `every`, its source a
/// Jetstream stand-in that sends nothing (kept alive by the caller).
fn serve_compacting(
    lake: &std::path::Path,
    redis: &RedisServer,
    every: &str,
) -> (App, skyglass_tests::jetstream::JetstreamStandIn) {
    let idle = skyglass_tests::jetstream::JetstreamStandIn::start(Vec::new(), tokio::sync::watch::channel(true).1);
    let app = App::serve(
        skyglass(lake, &redis.url())
            .args(["serve", "--listen", "127.0.0.1:0", "--flush-interval", "1h", "--compact-every", every, "--source"])
            .arg(format!("jetstream:{}", idle.url)),
    )
    .unwrap();
    (app, idle)
}

/// Twenty small files of 20,000 posts in one day partition, written straight through the
/// lake writer.
pub(crate) fn many_small_files(lake: &std::path::Path) {
    const DAY: i64 = 86_400_000_000;
    for file in 0..20_i64 {
        let posts = (file * 20_000..(file + 1) * 20_000)
            .map(|i| {
                let did = format!("did:plc:author{}", i % 997);
                lake::model::Post {
                    uri: format!("at://{did}/app.bsky.feed.post/{i:08}"),
                    cid: format!("bafy{i}"),
                    rkey: format!("{i:08}"),
                    created_at_us: 20_400 * DAY + (i * 7_919) % DAY,
                    indexed_at_us: 20_400 * DAY + i,
                    text: format!("post {i} about #topic{}", i % 13),
                    langs: vec!["en".into()],
                    hashtags: vec![format!("topic{}", i % 13)],
                    did,
                    ..lake::model::Post::default()
                }
            })
            .collect();
        lake::writer::write_posts(lake, &format!("small-{file:02}.parquet"), posts).unwrap();
    }
}

/// (rows, distinct posts (DID and record key), data files) of the lake's posts, read straight
/// from the files.
fn census(lake: &std::path::Path) -> (i64, i64, usize) {
    let glob = lake::layout::table_glob(lake, lake::layout::POSTS_TABLE);
    let connection = lake::duckdb::Connection::open_in_memory().unwrap();
    let sql = format!(
        "SELECT count(*), count(DISTINCT (did, rkey)), count(DISTINCT filename) FROM read_parquet('{glob}', filename = true)"
    );
    connection.query_row(&sql, [], |row| Ok((row.get(0)?, row.get(1)?, row.get::<_, i64>(2)? as usize))).unwrap()
}

#[test]
fn compaction_killed_at_any_moment_leaves_every_post_once_and_finishes_next_time() {
    let lake = tempfile::tempdir().unwrap();
    many_small_files(lake.path());
    assert_eq!(census(lake.path()), (400_000, 400_000, 20));
    let staging = lake::layout::table_dir(lake.path(), lake::layout::POSTS_TABLE);
    let leftover =
        || std::fs::read_dir(&staging).unwrap().any(|e| e.unwrap().file_name().to_string_lossy().starts_with('.'));
    let mut cut_mid_run = 0;
    for delay_ms in [0_u64, 40, 120, 250, 400, 700] {
        let mut child = skyglass(lake.path(), "redis://127.0.0.1:1")
            .args(["lake", "compact"])
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(delay_ms));
        let _ = child.kill(); // SIGKILL
        let _ = child.wait();
        cut_mid_run += usize::from(leftover());
        let (rows, uris, files) = census(lake.path());
        assert_eq!((rows, uris), (400_000, 400_000), "after a kill at {delay_ms} ms ({files} files)");
        assert!(files == 20 || files == 1, "a half state of {files} files after a kill at {delay_ms} ms");
        if files == 1 {
            break;
        }
    }
    assert!(cut_mid_run > 0, "no kill landed while a compaction was staging");
    let output = skyglass(lake.path(), "redis://127.0.0.1:1").args(["lake", "compact"]).output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert_eq!(census(lake.path()), (400_000, 400_000, 1));
    assert!(!leftover(), "the last run left its staging directory");
}
