//! Exports: the files hold the same rows as the same GraphQL query answers (CSV read back by
//! DuckDB's CSV reader, Parquet by DuckDB, JSON lines by serde), re-runs write the same bytes,
//! `serve` runs them on schedule, `runExport` needs the admin token and respects the lock, and
//! a killed export never leaves a partial file under its name.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use skyglass_tests::{App, RedisServer, fixtures_dir, ingest_once, poll, skyglass};

use crate::expected;

const BUCKETS: &str = "query ($since: DateTime!, $until: DateTime!, $timeZone: String!) {
  timeBuckets(interval: DAY, groupBy: LANG, timeZone: $timeZone, filter: { since: $since, until: $until }) {
    start group posts authors replies } }";
const TAGS: &str = "query ($since: DateTime!, $until: DateTime!) {
  topHashtags(first: 50, filter: { since: $since, until: $until }) { tag posts authors } }";
const POSTS: &str = "query ($since: DateTime!, $until: DateTime!) {
  posts(first: 1000, filter: { since: $since, until: $until }) { nodes { uri text createdAt langs author { did } } } }";

pub(crate) fn config(dir: &Path, out: &Path, exports: &[(&str, &str, &str, &str)]) -> PathBuf {
    let mut text = String::new();
    for (name, query, period, format) in exports {
        text.push_str(&format!(
            "[[export]]\nname = \"{name}\"\nquery = '''{query}'''\nperiod = \"{period}\"\nformat = \"{format}\"\n\
             time_zone = \"Europe/Berlin\"\ndestination = \"{}\"\n\n",
            out.display()
        ));
    }
    let path = dir.join("skyglass.toml");
    std::fs::write(&path, text).unwrap();
    path
}

pub(crate) fn sha256(path: &Path) -> String {
    Sha256::digest(std::fs::read(path).unwrap()).iter().map(|b| format!("{b:02x}")).collect()
}

/// The one data file of an export and its manifest.
pub(crate) fn exported(out: &Path, name: &str) -> (PathBuf, Value) {
    let dir = out.join(name);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| !p.to_string_lossy().ends_with(".manifest.json"))
        .collect();
    assert_eq!(files.len(), 1, "one data file, no temporary one: {files:?}");
    let data = files.remove(0);
    let manifest_path = PathBuf::from(format!("{}.manifest.json", data.display()));
    let manifest = serde_json::from_slice(&std::fs::read(manifest_path).unwrap()).unwrap();
    (data, manifest)
}

/// The rows of a DuckDB query of `width` columns, as JSON values.
fn duckdb_rows(sql: &str, width: usize) -> Vec<Vec<Value>> {
    let connection = lake::duckdb::Connection::open_in_memory().unwrap();
    let mut statement = connection.prepare(sql).unwrap();
    let mut rows = statement.query([]).unwrap();
    let mut out = Vec::new();
    while let Some(row) = rows.next().unwrap() {
        let values = (0..width)
            .map(|i| match row.get_ref(i).unwrap() {
                lake::duckdb::types::ValueRef::Null => Value::Null,
                lake::duckdb::types::ValueRef::BigInt(n) => json!(n),
                lake::duckdb::types::ValueRef::Text(t) => json!(String::from_utf8_lossy(t)),
                other => panic!("unexpected DuckDB value {other:?}"),
            })
            .collect();
        out.push(values);
    }
    out
}

/// Runs `skyglass export NAME --as-of AS_OF` (with `extra` flags), which must exit 0; its stdout.
pub(crate) fn run_export(
    lake: &Path,
    redis: &RedisServer,
    config: &Path,
    name: &str,
    as_of: &str,
    extra: &[&str],
) -> String {
    let output = skyglass(lake, &redis.url())
        .args(["export", name, "--as-of", as_of])
        .args(extra)
        .arg("--config")
        .arg(config)
        .output()
        .unwrap();
    assert!(output.status.success(), "export {name}: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn exports_hold_the_graphql_answer_in_every_format_and_reruns_write_the_same_bytes() {
    let redis = RedisServer::start().unwrap();
    let lake = tempfile::tempdir().unwrap();
    let sample = fixtures_dir().join("jetstream_sample.jsonl");
    ingest_once(lake.path(), &redis.url(), &sample);
    let posts = expected::posts_in(&sample);
    // Thirty Berlin days that end two days after the newest post hold every post.
    let newest = posts.iter().map(|p| p.created_at_us).max().unwrap();
    let as_of = (chrono::DateTime::from_timestamp_micros(newest).unwrap() + chrono::Duration::days(2))
        .format("%Y-%m-%d")
        .to_string();
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("out");
    let exports = [
        ("buckets", BUCKETS, "last 30 days", "parquet"),
        ("tags", TAGS, "last 30 days", "csv"),
        ("posts", POSTS, "last 30 days", "jsonl"),
    ];
    let config = config(work.path(), &out, &exports);
    for (name, ..) in &exports {
        let said = run_export(lake.path(), &redis, &config, name, &as_of, &[]);
        assert!(said.starts_with("exported "), "{said}");
    }
    let app = App::serve_api(lake.path(), &redis.url()).unwrap();
    let generation = app.query("{ lake { generation } }", json!({}))["lake"]["generation"].clone();
    let mut first_bytes = Vec::new();
    for (name, query, _, format) in &exports {
        let (data, manifest) = exported(&out, name);
        let label = manifest["period"]["label"].as_str().unwrap();
        assert!(label.ends_with("_30d"), "{label}");
        assert!(data.ends_with(format!("{name}/{name}_{label}.{format}")), "{}", data.display());
        assert_eq!(manifest["format"], json!(format));
        assert_eq!(manifest["bytes"], json!(std::fs::metadata(&data).unwrap().len()), "{name}");
        assert_eq!(manifest["sha256"], json!(sha256(&data)), "{name}");
        assert_eq!(manifest["lake"]["generation"], generation, "{name}");
        assert_eq!(manifest["variables"]["until"], json!(format!("{}", berlin_midnight_utc(&as_of))), "{name}");
        assert_eq!(manifest["query"], json!(query), "{name}");
        // The lake's event-time watermark, as the API states it; and when its last flush landed.
        let response = app.request(query, manifest["variables"].clone());
        let flushed_through = &response["extensions"]["freshness"]["flushedThrough"];
        assert!(flushed_through.is_string(), "{response}");
        assert_eq!(instant(&manifest["lake"]["flushedThrough"]), instant(flushed_through), "{name}");
        // The publish time of the flush is the wall clock of the ingest a moment ago, not the
        // fixture's event times.
        let since_flush = chrono::Utc::now() - instant(&manifest["lake"]["lastFlushAt"]);
        assert!(since_flush < chrono::Duration::minutes(10), "{name}: {manifest}");
        assert_ne!(manifest["lake"]["lastFlushAt"], manifest["lake"]["flushedThrough"]);
        let took = instant(&manifest["finishedAt"]) - instant(&manifest["startedAt"]);
        let seconds = manifest["durationSeconds"].as_f64().unwrap();
        assert!(seconds >= 0.0 && (seconds - took.num_milliseconds() as f64 / 1000.0).abs() < 0.002, "{manifest}");
        let answer = response["data"].clone();
        let rows = match *name {
            "buckets" => {
                let expected: Vec<Vec<Value>> = answer["timeBuckets"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|b| {
                        let start = chrono::DateTime::parse_from_rfc3339(b["start"].as_str().unwrap()).unwrap();
                        vec![
                            json!(start.timestamp_micros()),
                            b["group"].clone(),
                            b["posts"].clone(),
                            b["authors"].clone(),
                            b["replies"].clone(),
                        ]
                    })
                    .collect();
                let got = duckdb_rows(
                    &format!(
                        "SELECT epoch_us(start), \"group\", posts, authors, replies FROM read_parquet('{}')",
                        data.display()
                    ),
                    5,
                );
                assert_eq!(got, expected, "the Parquet file holds the answer's rows, in order");
                // 30 days, each with every language group.
                assert!(got.len() >= 30, "{}", got.len());
                got.len()
            }
            "tags" => {
                let expected: Vec<Vec<Value>> = answer["topHashtags"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|t| vec![t["tag"].clone(), json!(t["posts"].to_string()), json!(t["authors"].to_string())])
                    .collect();
                let got = duckdb_rows(
                    &format!(
                        "SELECT tag, posts, authors FROM read_csv('{}', header = true, all_varchar = true)",
                        data.display()
                    ),
                    3,
                );
                assert_eq!(got, expected, "DuckDB's CSV reader reads back the answer's rows");
                assert!(!got.is_empty());
                got.len()
            }
            _ => {
                let expected: Vec<Value> = answer["posts"]["nodes"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|p| {
                        json!({"uri": p["uri"], "text": p["text"], "createdAt": p["createdAt"], "langs": p["langs"],
                               "author_did": p["author"]["did"]})
                    })
                    .collect();
                let text = std::fs::read_to_string(&data).unwrap();
                let got: Vec<Value> = text.lines().map(|line| serde_json::from_str(line).unwrap()).collect();
                assert_eq!(got, expected, "each line is a row of the answer");
                let mut uris: Vec<&str> = got.iter().map(|row| row["uri"].as_str().unwrap()).collect();
                let mut independent: Vec<&str> = posts.iter().map(|p| p.uri.as_str()).collect();
                uris.sort_unstable();
                independent.sort_unstable();
                assert_eq!(uris, independent, "every post of the fixture, once");
                got.len()
            }
        };
        assert_eq!(manifest["rows"], json!(rows), "{name}");
        first_bytes.push(std::fs::read(&data).unwrap());
    }

    // The same periods again: done, so left alone; and forced, over the same lake: the same bytes.
    for (name, ..) in &exports {
        let said = run_export(lake.path(), &redis, &config, name, &as_of, &[]);
        assert!(said.contains("already done") && said.contains("--force"), "{said}");
        let said = run_export(lake.path(), &redis, &config, name, &as_of, &["--force"]);
        assert!(said.starts_with("exported "), "{said}");
    }
    for ((name, ..), before) in exports.iter().zip(&first_bytes) {
        let (data, _) = exported(&out, name);
        assert!(std::fs::read(&data).unwrap() == *before, "{name} changed on a re-run");
    }
    assert!(app.stop().success());
}

pub(crate) fn instant(value: &Value) -> chrono::DateTime<chrono::Utc> {
    let text = value.as_str().unwrap_or_else(|| panic!("{value} is not a time"));
    chrono::DateTime::parse_from_rfc3339(text).unwrap().to_utc()
}

/// The instant a Berlin calendar day begins, as the API writes it.
fn berlin_midnight_utc(date: &str) -> String {
    use chrono::TimeZone;
    let day = chrono::NaiveDate::parse_from_str(date, "%Y-%m-%d").unwrap().and_hms_opt(0, 0, 0).unwrap();
    let local = chrono_tz::Europe::Berlin.from_local_datetime(&day).earliest().unwrap();
    local.with_timezone(&chrono::Utc).to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
}

pub(crate) fn post_graphql(app: &App, token: Option<&str>, query: &str) -> Value {
    let client = reqwest::blocking::Client::new();
    let mut request = client.post(format!("{}/graphql", app.base_url)).json(&json!({ "query": query }));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request.send().unwrap().json().unwrap()
}

#[test]
fn serve_runs_exports_on_schedule_and_run_export_needs_the_admin_token_and_the_lock() {
    let redis = RedisServer::start().unwrap();
    let lake = tempfile::tempdir().unwrap();
    ingest_once(lake.path(), &redis.url(), &fixtures_dir().join("jetstream_sample.jsonl"));
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("out");
    // Every hashtag ever: the same rows whatever the period. And one that cannot be written (its
    // destination is a file).
    let config = config(work.path(), &out, &[("tags", "{ topHashtags(first: 50) { tag posts } }", "yesterday", "csv")]);
    let blocker = work.path().join("not-a-directory");
    std::fs::write(&blocker, "").unwrap();
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str(&format!(
        "[[export]]\nname = \"broken\"\nquery = \"{{ lake {{ posts }} }}\"\nperiod = \"yesterday\"\nformat = \"jsonl\"\ndestination = \"{}\"\n",
        blocker.display()
    ));
    std::fs::write(&config, text).unwrap();
    let app = App::serve(
        skyglass(lake.path(), &redis.url())
            .args(["serve", "--role", "api", "--listen", "127.0.0.1:0"])
            .arg("--config")
            .arg(&config)
            .args(["--admin-token", "s3cret"]),
    )
    .unwrap();

    // On start, the period of the last scheduled time is exported (nobody had).
    let dir = out.join("tags");
    let manifest = poll(Duration::from_secs(30), || {
        std::fs::read_dir(&dir)
            .ok()?
            .map(|e| e.unwrap().path())
            .find(|p| p.to_string_lossy().ends_with(".manifest.json"))
    })
    .expect("serve exported yesterday on start");
    let manifest: Value = serde_json::from_slice(&std::fs::read(manifest).unwrap()).unwrap();
    let tags = app.query("{ topHashtags(first: 50) { tag } }", json!({}))["topHashtags"].as_array().unwrap().len();
    assert_eq!(manifest["rows"], json!(tags));
    assert_eq!(manifest["trigger"], json!("schedule"));

    let list =
        "{ exports { name period schedule timeZone format nextRunAt lastRun { status trigger rows period error } } }";
    // The list shows the server's paths and errors: admin only.
    let denied = post_graphql(&app, None, list);
    assert_eq!(denied["errors"][0]["extensions"]["code"], json!("FORBIDDEN"), "{denied}");
    let listed = poll(Duration::from_secs(30), || {
        let listed = post_graphql(&app, Some("s3cret"), list)["data"].clone();
        (listed["exports"][1]["lastRun"]["status"] == json!("FAILED")).then_some(listed)
    })
    .expect("the broken export failed on start");
    let broken = &listed["exports"][1]["lastRun"];
    assert!(broken["error"].as_str().unwrap().contains("cannot write"), "{broken}");
    let export = &listed["exports"][0];
    assert_eq!(export["name"], json!("tags"));
    assert_eq!(export["period"], json!("yesterday"));
    assert_eq!(export["schedule"], json!("10 0 * * *"));
    assert_eq!(export["format"], json!("CSV"));
    assert_eq!(
        export["lastRun"],
        json!({"status": "SUCCEEDED", "trigger": "SCHEDULE", "rows": tags, "period": manifest["period"]["label"], "error": null})
    );
    let next = chrono::DateTime::parse_from_rfc3339(export["nextRunAt"].as_str().unwrap()).unwrap();
    assert!(next > chrono::Utc::now() && next < chrono::Utc::now() + chrono::Duration::days(1), "{next}");

    let run =
        "mutation { runExport(name: \"tags\", asOf: \"2026-01-02T00:10:00Z\") { status trigger period rows file } }";
    let denied = post_graphql(&app, None, run);
    assert_eq!(denied["errors"][0]["extensions"]["code"], json!("FORBIDDEN"), "{denied}");
    assert_eq!(denied["errors"][0]["path"], json!(["runExport"]), "{denied}");
    // A key the server does not know is turned away before anything runs.
    let unknown = post_graphql(&app, Some("wrong"), run);
    assert_eq!(unknown["errors"][0]["extensions"]["code"], json!("UNAUTHENTICATED"), "{unknown}");
    // Another instance holds the period's lock: this one does not run it.
    let mut connection = redis.connection();
    let lock = "skyglass:export:tags:2026-01-01:lock";
    let _: () = redis::cmd("SET").arg(lock).arg("someone-else").query(&mut connection).unwrap();
    let busy = post_graphql(&app, Some("s3cret"), run);
    assert_eq!(busy["errors"][0]["extensions"]["code"], json!("CONFLICT"), "{busy}");
    let _: () = redis::cmd("DEL").arg(lock).query(&mut connection).unwrap();

    let done = post_graphql(&app, Some("s3cret"), run);
    assert!(done.get("errors").is_none(), "{done}");
    assert_eq!(done["extensions"]["cache"], json!("BYPASS"), "a mutation is never cached");
    let file = done["data"]["runExport"]["file"].as_str().unwrap().to_owned();
    assert_eq!(
        done["data"]["runExport"],
        json!({"status": "SUCCEEDED", "trigger": "API", "period": "2026-01-01", "rows": tags, "file": file})
    );
    let csv = std::fs::read_to_string(out.join(&file)).unwrap();
    assert_eq!(csv.lines().count(), tags + 1, "a header and a line per hashtag");
    let metrics = app.get("/metrics").text().unwrap();
    assert!(metrics.contains("skyglass_export_runs_total{export=\"tags\",outcome=\"ok\"} 2"), "{metrics}");
    assert!(metrics.contains("skyglass_export_last_success_timestamp_seconds{export=\"tags\"}"));
    assert!(metrics.contains("skyglass_export_runs_total{export=\"broken\",outcome=\"error\"} 1"), "{metrics}");
    assert!(app.stop().success());
}

/// A day of 10,000 posts with 2 KB texts that do not compress: an export of them is 20 MB,
/// long enough to write that a kill lands midway.
pub(crate) fn lake_of_long_posts(lake: &Path) {
    const DAY: i64 = 86_400_000_000;
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    let posts = (0..10_000_i64)
        .map(|i| {
            let text: String = (0..2_000)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    char::from(b'a' + (state % 26) as u8)
                })
                .collect();
            let did = format!("did:plc:author{}", i % 97);
            lake::model::Post {
                uri: format!("at://{did}/app.bsky.feed.post/{i:08}"),
                cid: format!("bafy{i}"),
                rkey: format!("{i:08}"),
                created_at_us: 20_400 * DAY + i * 1_000_000,
                indexed_at_us: 20_400 * DAY + i * 1_000_000,
                text,
                did,
                ..lake::model::Post::default()
            }
        })
        .collect();
    lake::writer::write_posts(lake, "long.parquet", posts).unwrap();
}

#[test]
fn a_killed_export_never_leaves_a_partial_file_under_its_name() {
    let redis = RedisServer::start().unwrap();
    let lake = tempfile::tempdir().unwrap();
    lake_of_long_posts(lake.path());
    let work = tempfile::tempdir().unwrap();
    let query = work.path().join("query.graphql");
    std::fs::write(&query, "{ posts(first: 10000) { nodes { uri text } } }").unwrap();
    let dir = work.path().join("out");
    let out = dir.join("posts.jsonl");
    let export = || {
        skyglass(lake.path(), &redis.url())
            .args(["export", "--format", "jsonl", "--query"])
            .arg(&query)
            .arg("--out")
            .arg(&out)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap()
    };
    // Whatever is under the final names is whole: every row of the data file, and a manifest
    // beside it that names its checksum.
    let check = || {
        if out.exists() {
            let text = std::fs::read_to_string(&out).unwrap();
            assert_eq!(text.lines().filter(|l| serde_json::from_str::<Value>(l).is_ok()).count(), 10_000);
            assert!(text.ends_with('\n'));
        }
        let manifest = PathBuf::from(format!("{}.manifest.json", out.display()));
        if manifest.exists() {
            let manifest: Value = serde_json::from_slice(&std::fs::read(&manifest).unwrap()).unwrap();
            assert_eq!(manifest["sha256"], json!(sha256(&out)));
        }
    };
    // Killed as soon as it starts writing, and later each time: while the data file is written,
    // renamed, and while the manifest is.
    let mut killed_while_writing = 0;
    for delay_us in [0, 200, 1_000, 2_000, 4_000, 8_000, 16_000, 32_000, 64_000] {
        let _ = std::fs::remove_dir_all(&dir);
        let mut child = export();
        let started = Instant::now();
        let writing = loop {
            if std::fs::read_dir(&dir).is_ok_and(|mut entries| entries.next().is_some()) {
                break true;
            }
            if child.try_wait().unwrap().is_some() || started.elapsed() > Duration::from_secs(60) {
                break false;
            }
            std::thread::sleep(Duration::from_micros(20));
        };
        std::thread::sleep(Duration::from_micros(delay_us));
        let _ = child.kill();
        let finished = child.wait().unwrap().success();
        killed_while_writing += usize::from(writing && !finished);
        check();
    }
    assert!(killed_while_writing >= 3, "only {killed_while_writing} runs were killed while writing");
    // A run after the crashes finishes and leaves no temporary file.
    assert!(export().wait().unwrap().success());
    check();
    assert!(out.exists());
    let leftovers: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with('.'))
        .collect();
    assert!(leftovers.is_empty(), "a finished run leaves no temporary file: {leftovers:?}");
}
