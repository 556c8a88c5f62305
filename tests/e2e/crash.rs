//! Crash safety: `skyglass ingest` is killed with SIGKILL at many moments (during reads, appends
//! and flushes), restarted each time, and in the end the lake answers with every valid post of
//! the file exactly once, and no deleted one.

use std::io::Write;
use std::process::Stdio;
use std::time::Duration;

use serde_json::{Value, json};
use skyglass_tests::{App, RedisServer, ingest_once, skyglass};

use crate::expected;

/// A replay file of `n` synthetic events (posts, likes, deletes), the same every run.
fn synthetic_file(dir: &std::path::Path, n: i64) -> std::path::PathBuf {
    let path = dir.join("synthetic.jsonl");
    let mut file = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
    let mut generator = ingest::source::synthetic::Generator::new(2026);
    for i in 0..n {
        writeln!(file, "{}", generator.event(1_795_000_000_000_000 + i * 20_000)).unwrap();
    }
    file.flush().unwrap();
    path
}

#[test]
fn ingest_killed_at_random_moments_and_restarted_loses_nothing_and_counts_nothing_twice() {
    // Slow by design: nine ingest processes over 30k events, eight of them killed mid-way.
    let redis = RedisServer::start().unwrap();
    let scratch = tempfile::tempdir().unwrap();
    let lake = tempfile::tempdir().unwrap();
    let file = synthetic_file(scratch.path(), 30_000);

    let mut state = 7_u64;
    for round in 0..8 {
        state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let kill_after = Duration::from_millis(100 + (state >> 33) % 900);
        let mut child = skyglass(lake.path(), &redis.url())
            .args(["ingest", "--once", "--flush-max-rows", "700", "--source"])
            .arg(format!("file:{}", file.display()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(kill_after);
        let _ = child.kill(); // SIGKILL; it may already have finished, which is fine too
        let status = child.wait().unwrap();
        eprintln!("round {round}: killed after {kill_after:?} ({status})");
    }
    ingest_once(lake.path(), &redis.url(), &file);

    let posts = expected::posts_in(&file);
    assert!(posts.len() > 20_000, "{} posts", posts.len());
    let app = App::serve_api(lake.path(), &redis.url()).unwrap();
    let data = app.query("{ lake { posts generation } posts(first: 0) { totalCount } }", json!({}));
    assert_eq!(data["lake"]["posts"], json!(posts.len()), "distinct live posts in the lake");
    assert_eq!(data["posts"]["totalCount"], json!(posts.len()));
    // Under load (the suite runs tests in parallel) fewer flushes fit before the kills.
    assert!(data["lake"]["generation"].as_u64().unwrap() > 3, "several flushes happened: {data}");

    // Walk every page: each expected post exactly once, in order.
    let mut listed = Vec::new();
    let mut after = Value::Null;
    loop {
        let page = app.query(
            "query($after: String) { posts(first: 1000, after: $after) { nodes { uri } pageInfo { hasNextPage endCursor } } }",
            json!({"after": after}),
        );
        let page = &page["posts"];
        listed.extend(page["nodes"].as_array().unwrap().iter().map(|n| n["uri"].as_str().unwrap().to_owned()));
        if !page["pageInfo"]["hasNextPage"].as_bool().unwrap() {
            break;
        }
        after = page["pageInfo"]["endCursor"].clone();
    }
    assert_eq!(listed, expected::newest_first(&posts));
}

#[test]
fn redis_killed_and_restarted_empty_during_ingest_loses_nothing() {
    // Slow by design: the ingest waits out a Redis outage, then replays from the durable cursor.
    let mut redis = RedisServer::start().unwrap();
    let scratch = tempfile::tempdir().unwrap();
    let lake = tempfile::tempdir().unwrap();
    let file = synthetic_file(scratch.path(), 40_000);
    let child = skyglass(lake.path(), &redis.url())
        .args(["ingest", "--once", "--flush-max-rows", "500", "--source"])
        .arg(format!("file:{}", file.display()))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Kill Redis once the first flush is durable, keep it down a while, bring it back empty.
    let first_flush = skyglass_tests::poll(Duration::from_secs(30), || {
        lake.path().join("_catalog/state.json").exists().then_some(())
    });
    assert!(first_flush.is_some(), "no flush within 30 s");
    redis.kill();
    std::thread::sleep(Duration::from_millis(700));
    redis.restart_empty().unwrap();

    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "ingest failed: {stderr}");
    assert!(stderr.contains("replaying the source from the durable cursor"), "the outage was not noticed:\n{stderr}");

    let posts = expected::posts_in(&file);
    let app = App::serve_api(lake.path(), &redis.url()).unwrap();
    let data = app.query("{ lake { posts } posts(first: 0) { totalCount } }", json!({}));
    assert_eq!(data["lake"]["posts"], json!(posts.len()), "distinct live posts in the lake");
    assert_eq!(data["posts"]["totalCount"], json!(posts.len()));
}

#[test]
fn entries_a_dead_flusher_left_pending_are_claimed_and_flushed_by_another() {
    let redis = RedisServer::start().unwrap();
    let lake = tempfile::tempdir().unwrap();
    let scratch = tempfile::tempdir().unwrap();
    let file = synthetic_file(scratch.path(), 300);
    let posts = expected::posts_in(&file);

    // Another flusher read every post from the buffer, then died without acknowledging.
    let mut conn = redis.connection();
    let key = "skyglass:buffer:posts";
    let _: () =
        redis::cmd("XGROUP").arg("CREATE").arg(key).arg("flushers").arg("0").arg("MKSTREAM").query(&mut conn).unwrap();
    // Its entries are of the current version (rows under a batch key) and of version 2 (rows
    // inline), as an upgrade finds them; one names a batch whose key is gone.
    let body = std::fs::read_to_string(&file).unwrap();
    for (n, line) in body.lines().enumerate() {
        let entry = match ingest::decode::decode(line.as_bytes()) {
            ingest::decode::Decoded::Post(post) => ingest::buffer::Entry::Post(post),
            ingest::decode::Decoded::PostDelete(delete) => ingest::buffer::Entry::Delete(delete),
            _ => continue,
        };
        let batch = ingest::buffer::encode_batch(&[entry]);
        let mut add = redis::cmd("XADD");
        add.arg(key).arg("*").arg("n").arg(1);
        if n % 2 == 0 {
            add.arg("b2").arg(batch);
        } else {
            let name = format!("dead-{n}");
            let _: () =
                redis::cmd("SET").arg(format!("skyglass:buffer:batch:{name}")).arg(batch).query(&mut conn).unwrap();
            add.arg("k3").arg(name);
        }
        let _: String = add.query(&mut conn).unwrap();
        let _: i64 = redis::cmd("INCRBY").arg("skyglass:buffer:rows").arg(1).query(&mut conn).unwrap();
    }
    let _: String =
        redis::cmd("XADD").arg(key).arg("*").arg("n").arg(0).arg("k3").arg("gone").query(&mut conn).unwrap();
    let _: redis::Value = redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg("flushers")
        .arg("dead-flusher")
        .arg("COUNT")
        .arg(100_000)
        .arg("STREAMS")
        .arg(key)
        .arg(">")
        .query(&mut conn)
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));

    // A live flusher with nothing new to read takes the abandoned entries over.
    let empty = scratch.path().join("empty.jsonl");
    std::fs::write(&empty, "").unwrap();
    let output = skyglass(lake.path(), &redis.url())
        .args(["ingest", "--once", "--flush-consumer", "alive", "--flush-claim-after", "200ms", "--source"])
        .arg(format!("file:{}", empty.display()))
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let pending: redis::Value = redis::cmd("XPENDING").arg(key).arg("flushers").query(&mut conn).unwrap();
    assert!(
        matches!(&pending, redis::Value::Array(parts) if parts.first() == Some(&redis::Value::Int(0))),
        "{pending:?}"
    );
    // Every batch key went with its entry, the row count is back to zero, and the entry whose
    // batch was gone is a dead letter that says so.
    let left: Vec<String> = redis::cmd("KEYS").arg("skyglass:buffer:batch:*").query(&mut conn).unwrap();
    assert!(left.is_empty(), "{left:?}");
    let rows: i64 = redis::cmd("GET").arg("skyglass:buffer:rows").query(&mut conn).unwrap();
    assert_eq!(rows, 0);
    let letters: redis::streams::StreamRangeReply =
        redis::cmd("XRANGE").arg("skyglass:dlq").arg("-").arg("+").query(&mut conn).unwrap();
    let details: Vec<String> = letters.ids.iter().map(|e| e.get::<String>("detail").unwrap()).collect();
    assert_eq!(details.len(), 1, "{details:?}");
    assert!(details[0].contains("batch gone: its rows are missing from redis"), "{details:?}");

    let app = App::serve_api(lake.path(), &redis.url()).unwrap();
    let data = app.query("{ lake { posts } }", json!({}));
    assert_eq!(data["lake"]["posts"], json!(posts.len()));
}
