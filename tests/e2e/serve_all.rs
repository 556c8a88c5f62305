//! `serve` in its default role: the synthetic firehose feeds ingest, the flusher writes the lake,
//! the API answers over it, the operational endpoints report it, and SIGTERM flushes the
//! buffer before a clean exit.

use std::time::Duration;

use serde_json::json;
use skyglass_tests::{App, RedisServer, metric_in as metric_if_any, poll, skyglass};

fn metric(body: &str, name_and_labels: &str) -> f64 {
    metric_if_any(body, name_and_labels).unwrap_or_else(|| panic!("metric {name_and_labels} is missing from:\n{body}"))
}

/// `serve` on a free port fed by a fast synthetic firehose, flushing every 300 ms, with `args`.
fn serve_synthetic(lake: &std::path::Path, redis: &RedisServer, args: &[&str]) -> App {
    App::serve(
        skyglass(lake, &redis.url())
            .args(["serve", "--listen", "127.0.0.1:0", "--source", "synthetic:400"])
            .args(args)
            .env("SKYGLASS_FLUSH_INTERVAL", "300ms"),
    )
    .unwrap()
}

#[test]
fn serve_with_a_synthetic_firehose_flushes_answers_and_drains_on_sigterm() {
    let redis = RedisServer::start().unwrap();
    let lake = tempfile::tempdir().unwrap();
    let app = serve_synthetic(lake.path(), &redis, &[]);

    // Posts reach the lake through Redis and the flusher, and the API sees them.
    let flushed = poll(Duration::from_secs(30), || {
        let data = app.query("{ lake { posts generation } }", json!({}));
        (data["lake"]["generation"].as_u64()? >= 2 && data["lake"]["posts"].as_u64()? > 0).then_some(data)
    });
    assert!(flushed.is_some(), "nothing was flushed within 30 s");
    let page = app.query("{ posts(first: 5) { nodes { uri text langs } } }", json!({}));
    assert_eq!(page["posts"]["nodes"].as_array().unwrap().len(), 5);

    assert_eq!(app.get("/healthz").status(), 200);
    let ready = app.get("/readyz");
    assert_eq!(ready.status(), 200);
    assert!(ready.headers().get("x-request-id").is_some_and(|id| id.len() >= 32), "every response has a request id");
    let ready = ready.json::<serde_json::Value>().unwrap();
    assert_eq!((&ready["redis"], &ready["lake"]), (&json!(true), &json!(true)), "{ready}");
    let lag = ready["ingestLagSeconds"].as_f64().expect("a flushed cursor gives a lag");
    assert!((0.0..60.0).contains(&lag), "{ready}");
    let get = app.get("/graphql?query=%7Blake%7Bposts%7D%7D");
    assert_eq!(get.status(), 200);
    assert!(get.json::<serde_json::Value>().unwrap()["data"]["lake"]["posts"].as_u64().unwrap() > 0);

    let metrics = app.get("/metrics").text().unwrap();
    assert!(metric(&metrics, "skyglass_ingest_events_total{kind=\"post\"}") > 0.0);
    assert!(metric(&metrics, "skyglass_flush_rows_total") > 0.0);
    assert_eq!(metric(&metrics, "skyglass_ingest_dropped_total{reason=\"invalid_json\"}"), 0.0);
    assert!(metric(&metrics, "skyglass_graphql_requests_total{operation=\"anonymous\",outcome=\"ok\"}") >= 2.0);
    assert!(metric(&metrics, "skyglass_lake_files") >= 0.0);
    let named = app.request("query Latest { posts(first: 1) { nodes { uri } } }", json!({}));
    assert!(named.get("errors").is_none(), "{named}");
    let metrics = app.get("/metrics").text().unwrap();
    assert_eq!(metric(&metrics, "skyglass_graphql_requests_total{operation=\"Latest\",outcome=\"ok\"}"), 1.0);

    // SIGTERM: the source stops, the buffer is flushed, the process exits 0.
    assert!(app.stop().success());
    let mut conn = redis.connection();
    let left: usize = redis::cmd("XLEN").arg("skyglass:buffer:posts").query(&mut conn).unwrap();
    assert_eq!(left, 0, "posts were left in the buffer after shutdown");
    let cursor = std::fs::read_to_string(lake.path().join("_ingest/cursor-synthetic.json")).unwrap();
    assert!(cursor.contains("time_us"), "{cursor}");
}

/// SIGTERM: a request already under way is answered, new connections are refused, a client
/// that never finishes its request holds the exit up for the drain bound only, the buffer is
/// flushed and the cursor saved, and the exit status is 0.
#[test]
fn sigterm_answers_requests_under_way_refuses_new_ones_and_flushes_within_the_drain_bound() {
    use std::io::{Read, Write};
    let redis = RedisServer::start().unwrap();
    let lake = tempfile::tempdir().unwrap();
    let mut app = serve_synthetic(lake.path(), &redis, &[]);
    poll(Duration::from_secs(30), || {
        (app.query("{ lake { generation } }", json!({}))["lake"]["generation"].as_u64()? >= 2).then_some(())
    })
    .expect("a flush within 30 s");
    let cursor = || -> i64 {
        let text = std::fs::read_to_string(lake.path().join("_ingest/cursor-synthetic.json")).unwrap();
        serde_json::from_str::<serde_json::Value>(&text).unwrap()["time_us"].as_i64().unwrap()
    };
    let cursor_before = cursor();

    // Two requests under way: their headers and half their bodies are sent.
    let address = app.base_url.trim_start_matches("http://").to_owned();
    let body = json!({"query": "{ lake { posts } }"}).to_string();
    let (head, tail) = body.split_at(body.len() / 2);
    let start_request = || {
        let mut socket = std::net::TcpStream::connect(&address).unwrap();
        let headers = format!(
            "POST /graphql HTTP/1.1\r\nHost: {address}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        socket.write_all(headers.as_bytes()).unwrap();
        socket.write_all(head.as_bytes()).unwrap();
        socket
    };
    let mut finishing = start_request();
    let _stalled = start_request();
    std::thread::sleep(Duration::from_millis(200));
    app.terminate();
    let terminated = std::time::Instant::now();

    // New connections are refused once the server heard the signal.
    let refused = poll(Duration::from_secs(5), || std::net::TcpStream::connect(&address).is_err().then_some(()));
    assert!(refused.is_some(), "new connections are still accepted after SIGTERM");
    // The request under way is answered in full.
    finishing.write_all(tail.as_bytes()).unwrap();
    let mut response = String::new();
    finishing.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    finishing.read_to_string(&mut response).unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.contains("\"lake\":{\"posts\":"), "{response}");

    // The client that never finishes holds the exit up for the drain bound (10 s), no longer.
    let status = app.exit_within(Duration::from_secs(40)).expect("the process exits after the drain bound");
    assert!(status.success(), "{status:?}");
    let took = terminated.elapsed();
    assert!(took >= Duration::from_secs(9), "it waited for the request under way: {took:?}");
    let mut connection = redis.connection();
    let left: usize = redis::cmd("XLEN").arg("skyglass:buffer:posts").query(&mut connection).unwrap();
    assert_eq!(left, 0, "posts were left in the buffer after shutdown");
    let state = lake::catalog::read_state(lake.path()).unwrap();
    let cursor_after = cursor();
    assert!(cursor_after > cursor_before, "the last flush saved the cursor: {cursor_before} → {cursor_after}");
    assert!(cursor_after >= state.flushed_through_us.unwrap(), "the cursor covers every flushed post");
}

/// An ingest worker whose source has nothing new reports its cursor's lag growing, not the
/// lag of its last flush.
#[test]
fn the_cursor_lag_grows_while_nothing_is_flushed() {
    let redis = RedisServer::start().unwrap();
    let lake = tempfile::tempdir().unwrap();
    let sample = skyglass_tests::fixtures_dir().join("jetstream_sample.jsonl");
    assert!(skyglass_tests::ingest_once(lake.path(), &redis.url(), &sample).status.success());
    // The same file again: the cursor is past its end, so nothing is flushed.
    let worker = App::serve(
        skyglass(lake.path(), &redis.url())
            .args(["serve", "--role", "ingest", "--listen", "127.0.0.1:0", "--source"])
            .arg(format!("file:{}", sample.display())),
    )
    .unwrap();
    let newest_us = crate::expected::newest_event_in(&sample);
    let lag = poll(Duration::from_secs(20), || {
        metric_if_any(&worker.get("/metrics").text().ok()?, "skyglass_ingest_cursor_lag_seconds")
    })
    .expect("the cursor lag is reported");
    let expected = (chrono::Utc::now().timestamp_micros() - newest_us) as f64 / 1e6;
    assert!((lag - expected).abs() < 60.0, "lag {lag} s, the cursor is {expected} s old");
    assert!(worker.stop().success());
}

#[test]
fn an_ingest_worker_serves_only_its_metrics_and_probes() {
    let redis = RedisServer::start().unwrap();
    let lake = tempfile::tempdir().unwrap();
    let worker = serve_synthetic(lake.path(), &redis, &["--role", "ingest"]);
    let flushed = poll(Duration::from_secs(30), || {
        let metrics = worker.get("/metrics").text().ok()?;
        (metric_if_any(&metrics, "skyglass_flush_rows_total")? > 0.0).then_some(metrics)
    });
    let metrics = flushed.expect("the worker flushed nothing within 30 s");
    assert!(metric(&metrics, "skyglass_ingest_events_total{kind=\"post\"}") > 0.0);
    assert_eq!(worker.get("/healthz").status(), 200);
    assert_eq!(worker.get("/readyz").status(), 200);
    assert_eq!(worker.get("/graphql?query=%7Blake%7Bposts%7D%7D").status(), 404, "a worker answers no queries");
    assert!(worker.stop().success());
}

/// Every `skyglass_*` metric that the deployment's alert rules and dashboard name is one a
/// running server really exposes (once it has flushed, answered and compacted), and every label
/// value they select on (`kind="dropped"`, `status=~"HIT|MISS"`) is one it reports; those that
/// this test's traffic causes (a cache hit, a failed query) are counted.
#[test]
fn deploy_names_only_exposed_metrics() {
    let redis = RedisServer::start().unwrap();
    let lake = tempfile::tempdir().unwrap();
    // An export, so that its metrics show too (it runs yesterday's period on start).
    let work = tempfile::tempdir().unwrap();
    let config = work.path().join("skyglass.toml");
    std::fs::write(
        &config,
        format!(
            "[[export]]\nname = \"tags\"\nquery = \"{{ topHashtags {{ tag posts }} }}\"\nperiod = \"yesterday\"\n\
             format = \"csv\"\ndestination = \"{}\"\n",
            work.path().display()
        ),
    )
    .unwrap();
    let config = config.to_str().unwrap();
    let app = serve_synthetic(lake.path(), &redis, &["--compact-every", "1s", "--config", config]);
    let histograms = [
        "skyglass_export_duration_seconds_bucket",
        "skyglass_flush_duration_seconds_bucket",
        "skyglass_compaction_duration_seconds_bucket",
        "skyglass_graphql_request_duration_seconds_bucket",
        "skyglass_query_duckdb_seconds_bucket",
        "skyglass_query_queue_wait_seconds_bucket",
    ];
    let exposed = poll(Duration::from_secs(30), || {
        app.query("{ posts(first: 1) { nodes { uri } } }", json!({}));
        let body = app.get("/metrics").text().ok()?;
        histograms.iter().all(|h| body.contains(h)).then_some(body)
    })
    .expect("the server did not flush, answer and compact within 30 s");
    let names: std::collections::BTreeSet<&str> = exposed
        .lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| line.split(['{', ' ']).next())
        .collect();

    let deploy = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy");
    let mut checked = 0;
    for file in ["prometheus/alerts.yml", "grafana/dashboards/skyglass.json"] {
        let text = std::fs::read_to_string(deploy.join(file)).unwrap();
        let mut rest = text.as_str();
        while let Some(at) = rest.find("skyglass_") {
            let name: String =
                rest[at..].chars().take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_').collect();
            assert!(names.contains(name.as_str()), "{file} names {name}, which /metrics does not expose");
            checked += 1;
            rest = &rest[at + name.len()..];
        }
    }
    assert!(checked > 20, "only {checked} metric names found in deploy/");

    // A cache hit (the same question twice between two flushes) and a failed query.
    let hit = poll(Duration::from_secs(30), || {
        app.request("{ lake { files } }", json!({}));
        let second = app.request("{ lake { files } }", json!({}));
        (second["extensions"]["cache"] == json!("HIT")).then_some(())
    });
    assert!(hit.is_some(), "no answer came from the cache within 30 s");
    assert!(app.request("{ noSuchField }", json!({})).get("errors").is_some());
    let exposed = app.get("/metrics").text().unwrap();
    // Each series: its name, its labels, its value.
    type Series<'a> = (&'a str, Vec<(&'a str, &'a str)>, f64);
    let series: Vec<Series> = exposed
        .lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (name, labels) = series.split_once('{').unwrap_or((series, "}"));
            let labels = labels.strip_suffix('}')?.split(',').filter_map(|pair| pair.split_once('='));
            Some((name, labels.map(|(k, v)| (k, v.trim_matches('"'))).collect(), value.parse().ok()?))
        })
        .collect();
    let total = |name: &str, label: &str, value: &str| -> Option<f64> {
        let matching = series.iter().filter(|(n, labels, _)| *n == name && labels.contains(&(label, value)));
        matching.map(|(_, _, v)| *v).reduce(|a, b| a + b)
    };
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(deploy.join("grafana/dashboards/skyglass.json")).unwrap())
            .unwrap();
    let mut queries: Vec<String> = dashboard["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|panel| panel["targets"].as_array().unwrap())
        .map(|target| target["expr"].as_str().unwrap().to_owned())
        .collect();
    queries.push(std::fs::read_to_string(deploy.join("prometheus/alerts.yml")).unwrap());
    let mut selected = Vec::new();
    for query in &queries {
        let mut rest = query.as_str();
        while let Some(at) = rest.find("skyglass_") {
            rest = &rest[at..];
            let end =
                rest.find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')).unwrap_or(rest.len());
            let name = &rest[..end];
            rest = &rest[end..];
            let Some(matchers) = rest.strip_prefix('{').and_then(|r| r.split_once('}')).map(|(m, _)| m) else {
                continue;
            };
            for matcher in matchers.split(',').map(str::trim) {
                // Positive matchers only, on labels of Skyglass's own (Prometheus adds `role`,
                // `instance` and `job`).
                let (label, values) = match matcher.split_once("=~").or_else(|| matcher.split_once('=')) {
                    Some((label, _)) if label.ends_with('!') => continue,
                    Some((label, values)) => (label.trim(), values.trim().trim_matches('"')),
                    None => continue,
                };
                if ["role", "instance", "job"].contains(&label) {
                    continue;
                }
                for value in values.split('|') {
                    selected.push((name.to_owned(), label.to_owned(), value.to_owned()));
                }
            }
        }
    }
    for (name, label, value) in &selected {
        assert!(
            total(name, label, value).is_some(),
            "deploy/ selects {name}{{{label}=\"{value}\"}}, a label value /metrics does not report"
        );
    }
    for (name, label, value) in
        [("skyglass_cache_requests_total", "status", "HIT"), ("skyglass_graphql_requests_total", "outcome", "error")]
    {
        let wanted = (name.to_owned(), label.to_owned(), value.to_owned());
        assert!(selected.contains(&wanted), "deploy/ no longer selects {name}{{{label}=\"{value}\"}}: {selected:?}");
        assert!(total(name, label, value).unwrap() >= 1.0, "{name}{{{label}=\"{value}\"}} counted nothing");
    }
    assert!(selected.len() >= 6, "only {selected:?} label values found in deploy/");
    assert!(app.stop().success());
}

/// A node whose lake is an hour behind its source is not ready (unless told to leave lag out),
/// while it goes on answering queries.
#[test]
fn readiness_fails_while_the_lake_lags_far_behind_the_source() {
    let redis = RedisServer::start().unwrap();
    let lake = tempfile::tempdir().unwrap();
    let ingest_dir = lake.path().join("_ingest");
    std::fs::create_dir_all(&ingest_dir).unwrap();
    for (max_lag, ready) in [("15m", false), ("0s", true)] {
        // The shutdown flush of a run moves the cursor to now: set it back each time.
        let hour_ago = chrono::Utc::now().timestamp_micros() - 3_600_000_000;
        std::fs::write(ingest_dir.join("cursor-synthetic.json"), format!("{{\"time_us\": {hour_ago}}}")).unwrap();
        let app = App::serve(
            skyglass(lake.path(), &redis.url())
                .args(["serve", "--listen", "127.0.0.1:0", "--source", "synthetic:10", "--ready-max-lag", max_lag])
                .env("SKYGLASS_FLUSH_INTERVAL", "1h"),
        )
        .unwrap();
        let response = app.get("/readyz");
        assert_eq!(response.status() == 200, ready, "--ready-max-lag {max_lag}");
        let body = response.json::<serde_json::Value>().unwrap();
        assert!(body["ingestLagSeconds"].as_f64().unwrap() >= 3_600.0, "{body}");
        assert!(app.request("{ lake { posts } }", json!({})).get("errors").is_none());
        assert!(app.stop().success());
    }
}

/// Posts show in answers while they are still in the Redis buffer (the hot tier), long before
/// the flush, with deletes and account events of the buffer applied; every answer says how
/// fresh it is; and after the flush the lake answers the same.
#[test]
fn buffered_posts_answer_before_the_flush_and_the_lake_the_same_after() {
    let redis = RedisServer::start().unwrap();
    let lake = tempfile::tempdir().unwrap();
    let sample = skyglass_tests::fixtures_dir().join("jetstream_sample.jsonl");
    let expected = crate::expected::posts_in(&sample);
    let newest_event = crate::expected::newest_event_in(&sample);
    let lines: Vec<String> = std::fs::read_to_string(&sample).unwrap().lines().map(str::to_owned).collect();
    let jetstream = skyglass_tests::jetstream::JetstreamStandIn::start(lines, tokio::sync::watch::channel(true).1).url;
    let app = App::serve(
        skyglass(lake.path(), &redis.url())
            .args(["serve", "--listen", "127.0.0.1:0", "--flush-interval", "1h", "--source"])
            .arg(format!("jetstream:{jetstream}")),
    )
    .unwrap();
    const QUERY: &str = "{ posts(first: 100) { totalCount nodes { uri } } lake { posts } }";
    let started = std::time::Instant::now();
    let answer = poll(Duration::from_secs(20), || {
        let answer = app.request(QUERY, json!({}));
        // Both parts of the answer: the page and the count are two statements, and the hot tier
        // may change between them while it fills.
        let nodes = answer["data"]["posts"]["nodes"].as_array().map_or(0, Vec::len);
        // And the freshness, read as the request arrives: a lower bound, which may trail the
        // rows by the tier's refresh.
        let fresh = answer["extensions"]["freshness"]["ingestedThrough"].is_string();
        (answer["data"]["posts"]["totalCount"] == json!(expected.len()) && nodes == expected.len() && fresh)
            .then_some(answer)
    })
    .unwrap_or_else(|| panic!("the buffered posts never showed: {}", app.request(QUERY, json!({}))));
    assert!(started.elapsed() < Duration::from_secs(10), "{:?}", started.elapsed());
    assert_eq!(answer["data"]["lake"]["posts"], json!(0), "nothing was flushed: the hot tier answered");
    let mut uris: Vec<&str> =
        answer["data"]["posts"]["nodes"].as_array().unwrap().iter().map(|n| n["uri"].as_str().unwrap()).collect();
    let mut independent: Vec<&str> = expected.iter().map(|p| p.uri.as_str()).collect();
    uris.sort_unstable();
    independent.sort_unstable();
    assert_eq!(uris, independent, "every post once, deleted ones and hidden accounts' left out");
    let freshness = answer["extensions"]["freshness"].clone();
    let ingested = chrono::DateTime::parse_from_rfc3339(freshness["ingestedThrough"].as_str().unwrap()).unwrap();
    assert!(ingested.timestamp_micros() <= newest_event, "{freshness}");
    assert_eq!(freshness["flushedThrough"], json!(null), "{freshness}");
    assert!(freshness["lagMs"].as_i64().unwrap() > 0);
    let metrics = app.get("/metrics").text().unwrap();
    assert!(metrics.contains(&format!("skyglass_hot_posts {}", expected.len())), "{metrics}");

    // The same question again: cached, keyed by the hot tier's version.
    let posts_only = "{ posts(first: 100) { totalCount } }";
    let first = app.request(posts_only, json!({}));
    let second = app.request(posts_only, json!({}));
    assert_eq!(second["extensions"]["cache"], json!("HIT"), "{first} {second}");
    assert_eq!(second["data"], first["data"]);
    // Answers over recent posts are kept for --cache-recent-ttl (5 s) only.
    let mut connection = redis.connection();
    let keys: Vec<String> = redis::cmd("KEYS").arg("skyglass:cache:*").query(&mut connection).unwrap();
    assert!(!keys.is_empty());
    for key in keys {
        let ttl: i64 = redis::cmd("PTTL").arg(&key).query(&mut connection).unwrap();
        let value: String = redis::cmd("GET").arg(&key).query(&mut connection).unwrap_or_default();
        // The plain key of an answer that read the hot tier holds a marker (the answer is under
        // the hot tier's version); every answer itself is short-lived.
        let marker = value == "\u{1}hot";
        assert!(marker || (1..=5_000).contains(&ttl), "{key} ({value:.40}) lives {ttl} ms");
    }

    // Stopped, the buffer is flushed; the lake alone answers the same.
    assert!(app.stop().success());
    let api = App::serve_api(lake.path(), &redis.url()).unwrap();
    let after = api.request(QUERY, json!({}));
    assert_eq!(after["data"]["posts"], answer["data"]["posts"]);
    assert_eq!(after["data"]["lake"]["posts"], json!(expected.len()));
    assert_eq!(after["extensions"]["freshness"]["flushedThrough"], freshness["ingestedThrough"]);
    assert!(api.stop().success());
}

/// `livePosts` over graphql-ws streams each matching post as it reaches the buffer, before any
/// flush, with the filter semantics of `posts`.
#[test]
fn live_posts_stream_matching_posts_as_they_arrive() {
    let redis = RedisServer::start().unwrap();
    let lake = tempfile::tempdir().unwrap();
    let sample = skyglass_tests::fixtures_dir().join("jetstream_sample.jsonl");
    let (created, _) = crate::expected::created_and_deleted_in(&sample);
    let mut expected: Vec<String> = created
        .iter()
        .filter(|p| p.langs.iter().any(|l| l.to_lowercase().split('-').next() == Some("en")))
        .map(|p| p.uri.clone())
        .collect();
    expected.sort_unstable();
    assert!(expected.len() >= 3 && expected.len() < created.len(), "a filter that keeps some: {expected:?}");

    let lines: Vec<String> = std::fs::read_to_string(&sample).unwrap().lines().map(str::to_owned).collect();
    let (open, gate) = tokio::sync::watch::channel(false);
    let jetstream = skyglass_tests::jetstream::JetstreamStandIn::start(lines, gate).url;
    let app = App::serve(
        skyglass(lake.path(), &redis.url())
            .args(["serve", "--listen", "127.0.0.1:0", "--flush-interval", "1h", "--source"])
            .arg(format!("jetstream:{jetstream}")),
    )
    .unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (received, mut socket) = runtime.block_on(async {
        let query = "subscription { livePosts(filter: {langs: [\"EN\"]}) { uri langs author { did } } }";
        let mut socket = subscribe(&app, query).await;
        // The subscription is registered before the firehose opens.
        tokio::time::sleep(Duration::from_millis(500)).await;
        open.send(true).unwrap();
        let mut received = Vec::new();
        while received.len() < expected.len() {
            let message = read_json(&mut socket).await;
            assert_eq!(message["type"], json!("next"), "{message}");
            let post = &message["payload"]["data"]["livePosts"];
            assert_eq!(post["author"]["did"].as_str(), post["uri"].as_str().unwrap().split('/').nth(2), "{post}");
            received.push(post["uri"].as_str().unwrap().to_owned());
        }
        (received, socket)
    });
    let mut sorted = received.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, expected, "each English post once, as it arrived");
    // Exactly those: once the hot tier holds the whole fixture, nothing more comes.
    let newest = crate::expected::newest_event_in(&sample);
    wait_until_ingested_through(&app, newest);
    let (extra, mut socket) = runtime.block_on(async move {
        (tokio::time::timeout(Duration::from_millis(1500), read_json(&mut socket)).await.ok(), socket)
    });
    assert_eq!(extra, None, "no post beyond the matching ones");
    let data = app.query("{ lake { posts } }", json!({}));
    assert_eq!(data["lake"]["posts"], json!(0), "before any flush");
    let metrics = app.get("/metrics").text().unwrap();
    assert!(metrics.contains("skyglass_live_subscribers 1"), "{metrics}");
    runtime.block_on(async { socket.close(None).await.ok() });
    drop(runtime);
    assert!(app.stop().success());
}

/// Waits until `app`'s answers include every event up to `time_us` (`extensions.freshness`).
fn wait_until_ingested_through(app: &App, time_us: i64) {
    poll(Duration::from_secs(20), || {
        let answer = app.request("{ lake { posts } }", json!({}));
        let ingested = answer["extensions"]["freshness"]["ingestedThrough"].as_str().map(str::to_owned)?;
        let ingested = chrono::DateTime::parse_from_rfc3339(&ingested).unwrap().timestamp_micros();
        (ingested >= time_us).then_some(())
    })
    .unwrap_or_else(|| panic!("the hot tier never reached {time_us}"));
}

/// A delete or a takedown that reaches the buffer hides the posts the lake already holds before
/// the next flush, from `posts` and from live feeds alike; a post of an account taken down
/// streams to no one.
#[test]
fn deletes_and_takedowns_in_the_buffer_hide_flushed_posts_before_the_next_flush() {
    let redis = RedisServer::start().unwrap();
    let lake = tempfile::tempdir().unwrap();
    let sample = skyglass_tests::fixtures_dir().join("jetstream_sample.jsonl");
    assert!(skyglass_tests::ingest_once(lake.path(), &redis.url(), &sample).status.success());
    let in_lake = crate::expected::posts_in(&sample);
    // The author with the most posts is taken down; a post of another is deleted.
    let mut authors: Vec<&str> = in_lake.iter().map(|p| p.did.as_str()).collect();
    authors.sort_unstable();
    let victim = *authors.iter().max_by_key(|did| authors.iter().filter(|d| d == did).count()).unwrap();
    let deleted = in_lake.iter().find(|p| p.did != victim).unwrap();
    let other = in_lake.iter().find(|p| p.did != victim && p.uri != deleted.uri).unwrap().did.clone();
    let victims_posts = in_lake.iter().filter(|p| p.did == victim).count();
    assert!(victims_posts >= 2, "{victim} has {victims_posts}");

    let start = crate::expected::newest_event_in(&sample) + 1_000_000;
    let at = |n: i64| start + n * 1_000_000;
    let post = |did: &str, rkey: &str, time_us: i64| {
        json!({"did": did, "time_us": time_us, "kind": "commit", "commit": {
            "rev": "3lzz", "operation": "create", "collection": "app.bsky.feed.post", "rkey": rkey, "cid": "bafyreilate",
            "record": {"$type": "app.bsky.feed.post", "text": "late news", "langs": ["en"],
                       "createdAt": crate::expected::rfc3339(time_us)}}})
        .to_string()
    };
    let rkey_of_deleted = deleted.uri.rsplit('/').next().unwrap();
    let events = [
        json!({"did": victim, "time_us": at(0), "kind": "account",
               "account": {"active": false, "did": victim, "seq": 900, "status": "takendown",
                           "time": crate::expected::rfc3339(at(0))}})
        .to_string(),
        json!({"did": deleted.did, "time_us": at(1), "kind": "commit",
               "commit": {"rev": "3lzz", "operation": "delete", "collection": "app.bsky.feed.post", "rkey": rkey_of_deleted}})
        .to_string(),
        post(victim, "3kzz801", at(2)),
        post(&other, "3kzz802", at(3)),
    ];
    // Played to every connection once the gate opens (a reconnect replays them: ingest drops
    // the copies).
    let (open, gate) = tokio::sync::watch::channel(false);
    let stand_in = skyglass_tests::jetstream::JetstreamStandIn::start(events.to_vec(), gate);
    let app = App::serve(
        skyglass(lake.path(), &redis.url())
            .args(["serve", "--listen", "127.0.0.1:0", "--flush-interval", "1h", "--source"])
            .arg(format!("jetstream:{}", stand_in.url)),
    )
    .unwrap();
    const COUNT: &str = "{ posts(first: 1) { totalCount } lake { posts } }";
    let before = app.query(COUNT, json!({}));
    assert_eq!(before["posts"]["totalCount"], json!(in_lake.len()), "{before}");

    // Subscribed before the events come.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let mut socket = runtime.block_on(async {
        let socket = subscribe(&app, "subscription { livePosts { uri } }").await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        socket
    });

    open.send(true).unwrap();
    wait_until_ingested_through(&app, at(3));
    let expected = in_lake.len() - 1 - victims_posts + 1;
    let after = poll(Duration::from_secs(10), || {
        let data = app.query(COUNT, json!({}));
        (data["posts"]["totalCount"] == json!(expected)).then_some(data)
    })
    .unwrap_or_else(|| {
        let metrics = app.get("/metrics").text().unwrap();
        let events: Vec<&str> = metrics.lines().filter(|l| l.contains("events") || l.contains("hot")).collect();
        panic!("expected {expected} posts: {} {events:#?}", app.query(COUNT, json!({})))
    });
    assert_eq!(after["lake"]["posts"], json!(in_lake.len()), "nothing was flushed: {after}");
    let one = app.query("query($uri: ID!) { post(uri: $uri) { uri } }", json!({"uri": deleted.uri}));
    assert_eq!(one["post"], json!(null), "deleted since the flush: {one}");
    let theirs =
        app.query("query($did: ID!) { posts(filter: {authors: [$did]}) { totalCount } }", json!({"did": victim}));
    assert_eq!(theirs["posts"]["totalCount"], json!(0), "taken down since the flush: {theirs}");

    // The live feed got the other author's post alone.
    let (first, extra) = runtime.block_on(async {
        let first = read_json(&mut socket).await;
        (first, tokio::time::timeout(Duration::from_millis(1500), read_json(&mut socket)).await.ok())
    });
    let other_uri = format!("at://{other}/app.bsky.feed.post/3kzz802");
    assert_eq!(first["payload"]["data"]["livePosts"]["uri"], json!(other_uri), "{first}");
    assert_eq!(extra, None, "the taken-down author's post streams to no one");
    runtime.block_on(async { socket.close(None).await.ok() });
    assert!(app.stop().success());
}

type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A graphql-transport-ws connection to `app`, acknowledged, with `query` subscribed as id 1.
async fn subscribe(app: &App, query: &str) -> Socket {
    use futures_util::SinkExt;
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let url = format!("{}/graphql/ws", app.base_url.replace("http://", "ws://"));
    let mut request = url.into_client_request().unwrap();
    request.headers_mut().insert("Sec-WebSocket-Protocol", "graphql-transport-ws".parse().unwrap());
    let (mut socket, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    socket.send(Message::text(json!({"type": "connection_init"}).to_string())).await.unwrap();
    let ack = read_json(&mut socket).await;
    assert_eq!(ack["type"], json!("connection_ack"), "{ack}");
    let subscribe = json!({"id": "1", "type": "subscribe", "payload": {"query": query}});
    socket.send(Message::text(subscribe.to_string())).await.unwrap();
    socket
}

async fn read_json(socket: &mut Socket) -> serde_json::Value {
    use futures_util::StreamExt;
    loop {
        let message = tokio::time::timeout(Duration::from_secs(15), socket.next())
            .await
            .expect("a message within 15 s")
            .expect("the socket stays open")
            .expect("a readable message");
        if let tokio_tungstenite::tungstenite::Message::Text(text) = message {
            return serde_json::from_str(&text).unwrap();
        }
    }
}

/// A subscriber that stops reading falls behind and is ended with `TOO_SLOW`; ingest goes on.
#[test]
fn a_live_subscriber_that_falls_behind_is_dropped_with_a_reason() {
    let redis = RedisServer::start().unwrap();
    let lake = tempfile::tempdir().unwrap();
    let app = App::serve(skyglass(lake.path(), &redis.url()).args([
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--flush-interval",
        "1h",
        "--source",
        "synthetic:8000",
    ]))
    .unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let error = runtime.block_on(async {
        let mut socket = subscribe(&app, "subscription { livePosts { uri text } }").await;
        // Not reading: the socket's buffers fill, then the feed falls behind.
        tokio::time::sleep(Duration::from_secs(6)).await;
        loop {
            let message = read_json(&mut socket).await;
            if let Some(errors) = message["payload"]["errors"].as_array().filter(|e| !e.is_empty()) {
                return errors[0].clone();
            }
            assert_eq!(message["type"], json!("next"), "{message}");
        }
    });
    assert_eq!(error["extensions"]["code"], json!("TOO_SLOW"), "{error}");
    assert!(error["message"].as_str().unwrap().contains("subscribe again"), "{error}");
    let metrics = app.get("/metrics").text().unwrap();
    assert!(metric(&metrics, "skyglass_live_dropped_total") >= 1.0);
    // Ingest never waited: the hot tier keeps growing.
    let before = app.query("{ posts(first: 1) { totalCount } }", json!({}))["posts"]["totalCount"].as_u64().unwrap();
    let grew = poll(Duration::from_secs(10), || {
        let now = app.query("{ posts(first: 1) { totalCount } }", json!({}))["posts"]["totalCount"].as_u64()?;
        (now > before).then_some(now)
    });
    assert!(grew.is_some(), "ingest stalled");
    drop(runtime);
    assert!(app.stop().success());
}
