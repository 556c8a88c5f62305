//! Export runs across processes and time: two `skyglass export` commands racing for a period
//! (one writes it), a holder killed with SIGKILL (its lock frees when its lease runs out), a run
//! that lost its lock (it publishes nothing), a failing scheduled run retried with backoff until
//! it succeeds, and a cron schedule with seconds firing while `serve` runs.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use skyglass_tests::{App, RedisServer, fixtures_dir, ingest_once, metric_in as metric, poll, skyglass};

use crate::exports::{config, exported, instant, lake_of_long_posts, post_graphql, sha256};

/// Every post of the long-posts lake (one UTC day, 2025-11-08, early in Berlin's day too).
const LONG_POSTS: &str = "query ($since: DateTime!, $until: DateTime!) {
  posts(first: 10000, filter: { since: $since, until: $until }) { nodes { uri text } } }";
const AS_OF: &str = "2025-11-09";
const LABEL: &str = "2025-11-08";
const LOCK: &str = "skyglass:export:posts:2025-11-08:lock";

fn export_command(lake: &Path, redis: &RedisServer, config: &Path, extra: &[&str]) -> Command {
    let mut command = skyglass(lake, &redis.url());
    command.args(["export", "posts", "--as-of", AS_OF]).args(extra).arg("--config").arg(config);
    command.stdout(Stdio::piped()).stderr(Stdio::piped());
    command
}

fn said(output: &Output) -> String {
    format!(
        "status {:?}, stdout {:?}, stderr {:?}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// The names in a directory (none when it does not exist).
fn names_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|entries| entries.map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    names.sort();
    names
}

fn signal(child: &Child, name: &str) {
    let status = Command::new("kill").args([name, &child.id().to_string()]).status().unwrap();
    assert!(status.success(), "kill {name}");
}

fn pttl(redis: &RedisServer, key: &str) -> i64 {
    redis::cmd("PTTL").arg(key).query(&mut redis.connection()).unwrap()
}

/// A lake of 10,000 long posts and an export of them all (a 20 MB file: long enough to write
/// that two runs overlap, or that a signal lands while one writes).
fn long_export(work: &Path, lake: &Path) -> (PathBuf, PathBuf) {
    lake_of_long_posts(lake);
    let out = work.join("out");
    (config(work, &out, &[("posts", LONG_POSTS, "yesterday", "jsonl")]), out)
}

#[test]
fn two_export_commands_racing_for_one_period_write_it_once() {
    let redis = RedisServer::start().unwrap();
    let (lake, work) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (config, out) = long_export(work.path(), lake.path());
    let racers: Vec<Child> =
        (0..2).map(|_| export_command(lake.path(), &redis, &config, &[]).spawn().unwrap()).collect();
    let outputs: Vec<Output> = racers.into_iter().map(|child| child.wait_with_output().unwrap()).collect();
    let wrote: Vec<&Output> = outputs
        .iter()
        .filter(|o| o.status.success() && String::from_utf8_lossy(&o.stdout).starts_with("exported 10000 rows"))
        .collect();
    assert_eq!(wrote.len(), 1, "exactly one writes: {:?}", outputs.iter().map(said).collect::<Vec<_>>());
    let other = outputs.iter().find(|o| !std::ptr::eq(*o, wrote[0])).unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&other.stdout), String::from_utf8_lossy(&other.stderr));
    let already_done =
        other.status.code() == Some(0) && stdout.contains("already done") && stdout.contains("nothing written");
    let busy = other.status.code() == Some(75) && stderr.contains("busy") && stderr.contains("nothing written");
    assert!(already_done || busy, "the other says it was busy (75) or already done (0): {}", said(other));

    // One data file and one manifest, consistent, and nothing temporary.
    let (data, manifest) = exported(&out, "posts");
    assert_eq!(
        names_in(&out.join("posts")),
        [format!("posts_{LABEL}.jsonl"), format!("posts_{LABEL}.jsonl.manifest.json")]
    );
    assert_eq!(manifest["sha256"], json!(sha256(&data)));
    assert_eq!(manifest["rows"], json!(10_000));
    assert_eq!(std::fs::read_to_string(&data).unwrap().lines().count(), 10_000);
    let done: String =
        redis::cmd("GET").arg("skyglass:export:posts:2025-11-08:done").query(&mut redis.connection()).unwrap();
    assert_eq!(serde_json::from_str::<Value>(&done).unwrap()["sha256"], manifest["sha256"]);
}

#[test]
fn a_holder_killed_with_sigkill_keeps_its_period_until_its_lease_runs_out() {
    let redis = RedisServer::start().unwrap();
    let (lake, work) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (config, out) = long_export(work.path(), lake.path());
    let lease = Duration::from_secs(4);
    let lease_flag = ["--export-lease", "4s"];
    // What a run killed earlier left: a temporary file of the period (its process is gone).
    let dir = out.join("posts");
    std::fs::create_dir_all(&dir).unwrap();
    let stale = dir.join(format!(".posts_{LABEL}.jsonl.4194999.00ff.tmp"));
    std::fs::write(&stale, "half a file").unwrap();

    let mut holder = export_command(lake.path(), &redis, &config, &lease_flag).spawn().unwrap();
    poll(Duration::from_secs(60), || (pttl(&redis, LOCK) > 0).then_some(())).expect("the holder took the lock");
    holder.kill().unwrap();
    let killed_at = Instant::now();
    assert!(!holder.wait().unwrap().success());
    assert!(pttl(&redis, LOCK) > 0, "a killed holder does not release its lock");

    // Meanwhile the period is busy: another run writes nothing and says so.
    let busy = export_command(lake.path(), &redis, &config, &lease_flag).output().unwrap();
    if killed_at.elapsed() < lease * 2 / 3 {
        assert_eq!(busy.status.code(), Some(75), "{}", said(&busy));
        assert!(String::from_utf8_lossy(&busy.stderr).contains("busy"), "{}", said(&busy));
        assert!(!dir.join(format!("posts_{LABEL}.jsonl")).exists());
    }
    // The lease runs out: the lock frees by itself, no sooner than two thirds of a lease after
    // the holder's last renewal.
    poll(lease * 2, || (pttl(&redis, LOCK) == -2).then_some(())).expect("the lock freed within its lease");
    let freed_after = killed_at.elapsed();
    assert!(freed_after <= lease + Duration::from_secs(1), "{freed_after:?}");

    let next = export_command(lake.path(), &redis, &config, &lease_flag).output().unwrap();
    assert!(String::from_utf8_lossy(&next.stdout).starts_with("exported 10000 rows"), "{}", said(&next));
    let (data, manifest) = exported(&out, "posts");
    assert_eq!(manifest["sha256"], json!(sha256(&data)));
    assert!(!stale.exists(), "the run holding the lock removed what the dead one left");
    assert_eq!(names_in(&dir).iter().filter(|n| n.starts_with('.')).count(), 0, "{:?}", names_in(&dir));
}

#[test]
fn a_run_that_lost_its_lock_publishes_nothing() {
    let redis = RedisServer::start().unwrap();
    let (lake, work) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (config, out) = long_export(work.path(), lake.path());
    let dir = out.join("posts");
    let data = dir.join(format!("posts_{LABEL}.jsonl"));
    let mut run = export_command(lake.path(), &redis, &config, &["--export-lease", "1s"]).spawn().unwrap();
    // Paused while it writes its data file (a long GC pause, a frozen VM)…
    let started = Instant::now();
    loop {
        if names_in(&dir).iter().any(|n| n.starts_with(&format!(".posts_{LABEL}.jsonl.")) && !n.contains("manifest")) {
            break;
        }
        assert!(run.try_wait().unwrap().is_none(), "the run ended before it wrote");
        assert!(started.elapsed() < Duration::from_secs(60), "the run wrote nothing within 60 s");
        std::thread::sleep(Duration::from_micros(50));
    }
    signal(&run, "-STOP");
    assert!(!data.exists(), "the run was paused before it published");
    // …for longer than its lease, and another run took the period meanwhile.
    poll(Duration::from_secs(10), || (pttl(&redis, LOCK) == -2).then_some(())).expect("the paused run's lease ran out");
    let _: () =
        redis::cmd("SET").arg(LOCK).arg("another-run").arg("PX").arg(60_000).query(&mut redis.connection()).unwrap();
    signal(&run, "-CONT");
    let output = run.wait_with_output().unwrap();
    assert_eq!(output.status.code(), Some(1), "{}", said(&output));
    assert!(String::from_utf8_lossy(&output.stderr).contains("lock was lost"), "{}", said(&output));
    assert_eq!(names_in(&dir), Vec::<String>::new(), "no data file, no manifest, no temporary file");
    let holder: String = redis::cmd("GET").arg(LOCK).query(&mut redis.connection()).unwrap();
    assert_eq!(holder, "another-run", "the loser leaves the new holder's lock alone");
}

/// `exports`, with the admin token.
fn exports_now(app: &App) -> Value {
    let list = "{ exports { name nextRetryAt lastRun { status attempt trigger error nextRetryAt } } }";
    let answer = post_graphql(app, Some("s3cret"), list);
    assert!(answer.get("errors").is_none(), "{answer}");
    answer["data"]["exports"][0].clone()
}

#[test]
fn a_failing_scheduled_export_is_retried_with_backoff_and_succeeds_once_fixed() {
    let redis = RedisServer::start().unwrap();
    let lake = tempfile::tempdir().unwrap();
    ingest_once(lake.path(), &redis.url(), &fixtures_dir().join("jetstream_sample.jsonl"));
    let work = tempfile::tempdir().unwrap();
    // The destination is a regular file: the first attempt cannot write.
    let out = work.path().join("out");
    std::fs::write(&out, "in the way").unwrap();
    let config = config(work.path(), &out, &[("tags", "{ topHashtags(first: 50) { tag posts } }", "yesterday", "csv")]);
    let app = App::serve(
        skyglass(lake.path(), &redis.url())
            .args(["serve", "--role", "api", "--listen", "127.0.0.1:0", "--admin-token", "s3cret"])
            .args(["--export-retry-backoff", "3s", "--config"])
            .arg(&config),
    )
    .unwrap();

    let failed = poll(Duration::from_secs(30), || {
        let export = exports_now(&app);
        export["nextRetryAt"].is_string().then_some(export)
    })
    .expect("the first attempt failed and a retry is due");
    let failed_at = chrono::Utc::now();
    assert_eq!(failed["lastRun"]["status"], json!("FAILED"), "{failed}");
    assert_eq!(failed["lastRun"]["attempt"], json!(1), "{failed}");
    assert_eq!(failed["lastRun"]["nextRetryAt"], failed["nextRetryAt"]);
    assert!(failed["lastRun"]["error"].as_str().unwrap().contains("cannot write"), "{failed}");
    let retry_at = instant(&failed["nextRetryAt"]);
    assert!(
        retry_at > failed_at - chrono::Duration::seconds(3) && retry_at <= failed_at + chrono::Duration::seconds(3)
    );
    let metrics = app.get("/metrics").text().unwrap();
    assert_eq!(metric(&metrics, "skyglass_export_retries_total{export=\"tags\"}"), Some(1.0), "{metrics}");

    // Fixed before the retry: it succeeds on its own.
    std::fs::remove_file(&out).unwrap();
    let succeeded = poll(Duration::from_secs(30), || {
        let export = exports_now(&app);
        (export["lastRun"]["status"] == json!("SUCCEEDED")).then_some(export)
    })
    .expect("the retry succeeded");
    assert_eq!(
        succeeded,
        json!({"name": "tags", "nextRetryAt": null,
               "lastRun": {"status": "SUCCEEDED", "attempt": 2, "trigger": "SCHEDULE", "error": null, "nextRetryAt": null}})
    );
    assert!(chrono::Utc::now() >= retry_at, "not before its time");
    let metrics = app.get("/metrics").text().unwrap();
    assert_eq!(
        metric(&metrics, "skyglass_export_runs_total{export=\"tags\",outcome=\"error\"}"),
        Some(1.0),
        "{metrics}"
    );
    assert_eq!(metric(&metrics, "skyglass_export_runs_total{export=\"tags\",outcome=\"ok\"}"), Some(1.0), "{metrics}");
    assert_eq!(metric(&metrics, "skyglass_export_retries_total{export=\"tags\"}"), Some(1.0), "{metrics}");
    let (data, manifest) = exported(&out, "tags");
    assert_eq!(manifest["sha256"], json!(sha256(&data)));
    assert!(app.stop().success());
}

/// Slow (up to a minute and a half): the shortest period is a minute, so the run of a later
/// period waits for the next minute to begin; the schedule fires every two seconds meanwhile.
#[test]
fn a_cron_schedule_with_seconds_fires_while_serve_runs() {
    let redis = RedisServer::start().unwrap();
    let lake = tempfile::tempdir().unwrap();
    ingest_once(lake.path(), &redis.url(), &fixtures_dir().join("jetstream_sample.jsonl"));
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("out");
    let config = work.path().join("skyglass.toml");
    std::fs::write(
        &config,
        format!(
            "[[export]]\nname = \"minutely\"\nquery = \"{{ lake {{ posts }} }}\"\nperiod = \"last minute\"\n\
             schedule = \"*/2 * * * * *\"\ntime_zone = \"UTC\"\nformat = \"jsonl\"\ndestination = \"{}\"\n",
            out.display()
        ),
    )
    .unwrap();
    let app = App::serve(
        skyglass(lake.path(), &redis.url())
            .args(["serve", "--role", "api", "--listen", "127.0.0.1:0", "--config"])
            .arg(&config),
    )
    .unwrap();
    let manifests = poll(Duration::from_secs(90), || {
        let dir = out.join("minutely");
        let mut manifests: Vec<Value> = names_in(&dir)
            .iter()
            .filter(|n| n.ends_with(".manifest.json"))
            .map(|n| serde_json::from_slice(&std::fs::read(dir.join(n)).unwrap()).unwrap())
            .collect();
        manifests.sort_by_key(|m| instant(&m["period"]["start"]));
        (manifests.len() >= 2).then_some(manifests)
    })
    .expect("a second minute was exported within 90 s");
    let (first, second) = (&manifests[0], &manifests[1]);
    for manifest in [first, second] {
        assert_eq!(manifest["trigger"], json!("schedule"));
        assert_eq!(manifest["rows"], json!(1));
    }
    assert_eq!(instant(&second["period"]["start"]), instant(&first["period"]["end"]), "the next minute");
    // The second ran after its minute ended and after the first (the catch-up run at start).
    assert!(instant(&second["startedAt"]) >= instant(&second["period"]["end"]));
    assert!(instant(&second["startedAt"]) > instant(&first["finishedAt"]));
    assert!(app.stop().success());
}
