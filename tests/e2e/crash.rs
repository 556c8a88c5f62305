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

/// Starts `skyglass ingest --once` of `file`, flushing every `max_rows` rows, its standard error
/// to `stderr` (the standard output is not read).
fn ingest_file(
    lake: &std::path::Path,
    redis: &RedisServer,
    file: &std::path::Path,
    max_rows: u32,
    stderr: Stdio,
) -> std::process::Child {
    skyglass(lake, &redis.url())
        .args(["ingest", "--once", "--flush-max-rows", &max_rows.to_string(), "--source"])
        .arg(format!("file:{}", file.display()))
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .unwrap()
}

#[test]
fn ingest_killed_at_random_moments_and_restarted_loses_nothing_and_counts_nothing_twice() {
    // Slow by design: nine ingest processes over 30k events, eight of them killed mid-way.
    let redis = RedisServer::start().unwrap();
    let scratch = tempfile::tempdir().unwrap();
    let lake = tempfile::tempdir().unwrap();
    let file = synthetic_file(scratch.path(), 30_000);

    // Each round waits for a flush of its own to land, then kills at a random moment after it:
    // while reading, appending or flushing again. Waiting for progress rather than for a fixed
    // time keeps the rounds meaningful however loaded the machine is.
    let state_file = lake.path().join("_catalog/state.json");
    let mut state = 7_u64;
    let mut flushed_rounds = 0;
    for round in 0..8 {
        state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let kill_after = Duration::from_millis((state >> 33) % 400);
        let before = std::fs::read(&state_file).ok();
        let mut child = ingest_file(lake.path(), &redis, &file, 700, Stdio::null());
        let flushed = skyglass_tests::poll(Duration::from_secs(60), || {
            if std::fs::read(&state_file).ok() != before {
                return Some(true);
            }
            child.try_wait().unwrap().map(|_| false)
        });
        flushed_rounds += usize::from(flushed == Some(true));
        std::thread::sleep(kill_after);
        let _ = child.kill(); // SIGKILL; it may already have finished, which is fine too
        let status = child.wait().unwrap();
        eprintln!("round {round}: killed {kill_after:?} after a flush ({flushed:?}, {status})");
    }
    // Rounds after the whole file went in have nothing left to flush; most come before that.
    assert!(flushed_rounds >= 3, "only {flushed_rounds} rounds flushed before they were killed");
    ingest_once(lake.path(), &redis.url(), &file);

    let posts = expected::posts_in(&file);
    assert!(posts.len() > 20_000, "{} posts", posts.len());
    let app = App::serve_api(lake.path(), &redis.url()).unwrap();
    let data = app.query("{ lake { posts generation } posts(first: 0) { totalCount } }", json!({}));
    assert_eq!(data["lake"]["posts"], json!(posts.len()), "distinct live posts in the lake");
    assert_eq!(data["posts"]["totalCount"], json!(posts.len()));
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
    let child = ingest_file(lake.path(), &redis, &file, 500, Stdio::piped());
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

/// A small tmpfs mounted for one test, unmounted when dropped.
struct SmallDisk(tempfile::TempDir);

impl SmallDisk {
    /// `None` when this process may not mount (not root): the test says so and skips.
    fn mount(mebibytes: u32) -> Option<SmallDisk> {
        let dir = tempfile::tempdir().unwrap();
        let mounted = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mebibytes}m"), "skyglass-test"])
            .arg(dir.path())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|status| status.success());
        mounted.then_some(SmallDisk(dir))
    }

    fn path(&self) -> &std::path::Path {
        self.0.path()
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg("-l").arg(self.0.path()).status();
    }
}

/// Fills the disk under `path` with a file, all but `leave` bytes; returns the file.
fn fill_disk(path: &std::path::Path, leave: u64) -> std::path::PathBuf {
    let ballast = path.join("ballast");
    let mut file = std::fs::File::create(&ballast).unwrap();
    let chunk = vec![7u8; 64 * 1024];
    while file.write_all(&chunk).is_ok() {}
    let _ = file.flush();
    let written = file.metadata().unwrap().len();
    file.set_len(written.saturating_sub(leave)).unwrap();
    file.sync_all().unwrap();
    ballast
}

#[test]
fn a_lake_disk_that_fills_up_mid_flush_loses_nothing_once_space_frees() {
    let Some(disk) = SmallDisk::mount(16) else {
        eprintln!("skipped: this process may not mount a tmpfs (it needs root) to fill a disk");
        return;
    };
    let redis = RedisServer::start().unwrap();
    let scratch = tempfile::tempdir().unwrap();
    let file = synthetic_file(scratch.path(), 30_000);
    let lake = disk.path().join("lake");
    std::fs::create_dir_all(&lake).unwrap();
    // Room for the first few flushes, not for all of them.
    let ballast = fill_disk(disk.path(), 600 * 1024);

    let mut child = ingest_file(&lake, &redis, &file, 1500, Stdio::piped());
    let (failed_tx, failed_rx) = std::sync::mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    let log = std::thread::spawn(move || {
        let mut log = String::new();
        for line in std::io::BufRead::lines(std::io::BufReader::new(stderr)).map_while(Result::ok) {
            if line.contains("flush failed") {
                let _ = failed_tx.send(());
            }
            log.push_str(&line);
            log.push('\n');
        }
        log
    });
    let failed = failed_rx.recv_timeout(Duration::from_secs(60));
    // A flush failed for want of space; partial files went with it. Free the space.
    let leftovers = walk(&lake).into_iter().filter(|p| p.to_string_lossy().ends_with(".tmp")).count();
    std::fs::remove_file(&ballast).unwrap();
    let status = skyglass_tests::poll(Duration::from_secs(120), || child.try_wait().unwrap()).unwrap_or_else(|| {
        let _ = child.kill();
        child.wait().unwrap()
    });
    let log = log.join().unwrap();
    assert!(failed.is_ok(), "no flush failed on the full disk:\n{log}");
    assert!(log.contains("No space left on device"), "{log}");
    assert!(status.success(), "ingest did not recover once space was freed ({status}):\n{log}");
    assert_eq!(leftovers, 0, "a failed flush left temporary files behind");
    assert!(walk(&lake).iter().all(|p| !p.to_string_lossy().ends_with(".tmp")));

    let posts = expected::posts_in(&file);
    let app = App::serve_api(&lake, &redis.url()).unwrap();
    let data = app.query("{ lake { posts generation } posts(first: 0) { totalCount } }", json!({}));
    assert_eq!(data["lake"]["posts"], json!(posts.len()), "distinct live posts in the lake");
    assert_eq!(data["posts"]["totalCount"], json!(posts.len()), "no post counted twice");
    drop(app);
    let verify = skyglass(&lake, &redis.url()).args(["lake", "verify"]).output().unwrap();
    assert!(verify.status.success(), "{}", String::from_utf8_lossy(&verify.stdout));
}

/// Every file under `dir`.
fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(entry.path());
            } else {
                out.push(entry.path());
            }
        }
    }
    out
}

#[test]
fn ingest_killed_while_a_flush_writes_its_files_loses_nothing_and_counts_nothing_twice() {
    let redis = RedisServer::start().unwrap();
    let scratch = tempfile::tempdir().unwrap();
    let lake = tempfile::tempdir().unwrap();
    let file = synthetic_file(scratch.path(), 30_000);
    let mut caught = 0;
    for round in 0..6 {
        let mut child = ingest_file(lake.path(), &redis, &file, 3000, Stdio::null());
        // SIGKILL while the round's first, second or third file is half written.
        let kill_at = round % 3 + 1;
        let mut seen = std::collections::HashSet::new();
        let started = std::time::Instant::now();
        let during_a_write = loop {
            if child.try_wait().unwrap().is_some() || started.elapsed() > Duration::from_secs(60) {
                break false;
            }
            seen.extend(walk(lake.path()).into_iter().filter(|p| p.to_string_lossy().ends_with(".tmp")));
            if seen.len() >= kill_at {
                let _ = child.kill();
                break true;
            }
            std::thread::sleep(Duration::from_micros(500));
        };
        let _ = child.kill();
        child.wait().unwrap();
        caught += usize::from(during_a_write);
    }
    assert!(caught >= 4, "only {caught} of 6 kills came while a file was being written");
    ingest_once(lake.path(), &redis.url(), &file);

    let posts = expected::posts_in(&file);
    let app = App::serve_api(lake.path(), &redis.url()).unwrap();
    let data = app.query("{ lake { posts } posts(first: 0) { totalCount } }", json!({}));
    assert_eq!(data["lake"]["posts"], json!(posts.len()), "distinct live posts in the lake");
    assert_eq!(data["posts"]["totalCount"], json!(posts.len()), "no post counted twice");
    drop(app);
    assert!(walk(lake.path()).iter().all(|p| !p.to_string_lossy().ends_with(".tmp")), "temporary files left");
}

#[test]
fn redis_killed_and_restarted_empty_under_serve_recovers_by_itself_and_loses_nothing() {
    let mut redis = RedisServer::start().unwrap();
    let scratch = tempfile::tempdir().unwrap();
    let lake = tempfile::tempdir().unwrap();
    let file = synthetic_file(scratch.path(), 20_000);
    let posts = expected::posts_in(&file);
    let lines: Vec<String> = std::fs::read_to_string(&file).unwrap().lines().map(str::to_owned).collect();
    let jetstream = skyglass_tests::jetstream::JetstreamStandIn::start(lines, tokio::sync::watch::channel(true).1);
    let app = App::serve(
        skyglass(lake.path(), &redis.url())
            .args(["serve", "--listen", "127.0.0.1:0", "--ready-max-lag", "0s", "--flush-max-rows", "1000"])
            .args(["--flush-interval", "500ms", "--source"])
            .arg(format!("jetstream:{}", jetstream.url)),
    )
    .unwrap();
    let count = "{ lake { posts } posts(first: 0) { totalCount } }";
    let flushed = skyglass_tests::poll(Duration::from_secs(30), || {
        let data = app.query(count, json!({}));
        (data["lake"]["posts"].as_u64()? > 0).then_some(())
    });
    assert!(flushed.is_some(), "nothing flushed within 30 s");

    redis.kill();
    // Without Redis the API still answers (from the lake, uncached) and says at once that it is
    // not ready.
    let during = app.request(count, json!({}));
    assert!(during.get("errors").is_none(), "{during}");
    assert_eq!(during["extensions"]["cache"], json!("BYPASS"), "{during}");
    let asked = std::time::Instant::now();
    let ready = app.get("/readyz");
    assert!(asked.elapsed() < Duration::from_secs(5), "readiness took {:?}", asked.elapsed());
    assert_eq!(ready.status(), 503);
    assert_eq!(ready.json::<Value>().unwrap()["redis"], json!(false));
    std::thread::sleep(Duration::from_millis(1500));
    redis.restart_empty().unwrap();

    // Nobody restarts anything: ingest replays from the durable cursor, the lake ends with every
    // post once. Throughout, no answer counts a post twice: the posts the replay brings back into
    // the buffer are in the hot tier only until the flush that writes them is published. (Posts
    // deleted later in the stream still show until their delete arrives, hence the bound of
    // every post created rather than every live one.)
    let created = expected::created_and_deleted_in(&file).0.len();
    let uncached = || -> Value {
        let response = app
            .client
            .post(format!("{}/graphql", app.base_url))
            .header("cache-control", "no-cache")
            .json(&json!({ "query": count }))
            .send()
            .expect("the server answers")
            .json::<Value>()
            .expect("the answer is JSON");
        assert!(response.get("errors").is_none(), "{response}");
        response["data"].clone()
    };
    let mut answers = 0;
    let recovered = skyglass_tests::poll(Duration::from_secs(90), || {
        let data = uncached();
        answers += 1;
        let total = data["posts"]["totalCount"].as_u64().unwrap() as usize;
        assert!(total <= created, "posts counted twice after {answers} answers: {data}, of {created} created");
        (data["lake"]["posts"] == json!(posts.len())).then_some(data)
    });
    let data = recovered.unwrap_or_else(|| panic!("not all posts reached the lake: {}", uncached()));
    assert_eq!(data["posts"]["totalCount"], json!(posts.len()), "{data}");
    let ready = skyglass_tests::poll(Duration::from_secs(10), || (app.get("/readyz").status() == 200).then_some(()));
    assert!(ready.is_some(), "not ready again: {}", app.get("/readyz").text().unwrap());
    // The cache tries Redis again a little after its last failure.
    let total = "{ posts(first: 0) { totalCount } }";
    let hit = skyglass_tests::poll(Duration::from_secs(10), || {
        let answer = app.request(total, json!({}));
        (answer["extensions"]["cache"] == json!("HIT")).then_some(answer)
    });
    let hit = hit.unwrap_or_else(|| panic!("the cache is not back: {}", app.request(total, json!({}))));
    assert_eq!(hit["data"]["posts"]["totalCount"], json!(posts.len()));
    assert!(app.stop().success());
    let api = App::serve_api(lake.path(), &redis.url()).unwrap();
    assert_eq!(api.query(count, json!({}))["posts"]["totalCount"], json!(posts.len()));
}
