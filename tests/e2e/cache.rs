//! The result cache through the real server and a real Redis: a repeated query is a HIT with
//! the same answer, a flush makes it a MISS that shows the new posts, concurrent identical
//! misses compute once, a client may bypass, and with Redis gone the API answers uncached.

use std::io::Write;

use serde_json::{Value, json};
use skyglass_tests::{App, RedisServer, fixtures_dir, ingest_once, poll};

const QUERY: &str = "{ posts(first: 100) { totalCount nodes { uri text } } }";

fn post(app: &App, query: &str, cache_control: Option<&str>) -> Value {
    let client = reqwest::blocking::Client::new();
    let mut request = client.post(format!("{}/graphql", app.base_url)).json(&json!({"query": query}));
    if let Some(directives) = cache_control {
        request = request.header("cache-control", directives);
    }
    request.send().unwrap().json().unwrap()
}

fn cache_status(answer: &Value) -> &str {
    answer["extensions"]["cache"].as_str().unwrap_or_else(|| panic!("no extensions.cache in {answer}"))
}

fn metric(app: &App, name_and_labels: &str) -> f64 {
    skyglass_tests::metric_in(&app.get("/metrics").text().unwrap(), name_and_labels).unwrap_or(0.0)
}

#[test]
fn answers_are_cached_per_lake_generation_and_survive_redis_going_away() {
    let mut redis = RedisServer::start().unwrap();
    let lake = tempfile::tempdir().unwrap();
    let sample = fixtures_dir().join("jetstream_sample.jsonl");
    let text = std::fs::read_to_string(&sample).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let (first_half, second_half) = lines.split_at(8);
    let write = |name: &str, lines: &[&str]| {
        let path = lake.path().join(name);
        let mut file = std::fs::File::create(&path).unwrap();
        lines.iter().for_each(|line| writeln!(file, "{line}").unwrap());
        path
    };
    let first = write("a.jsonl", first_half);
    ingest_once(lake.path(), &redis.url(), &first);
    let app = App::serve_api(lake.path(), &redis.url()).unwrap();

    let miss = post(&app, QUERY, None);
    assert_eq!(cache_status(&miss), "MISS");
    assert_eq!(miss["data"]["posts"]["totalCount"], json!(crate::expected::posts_in(&first).len()));
    let hit = post(&app, QUERY, None);
    assert_eq!(cache_status(&hit), "HIT");
    assert_eq!(hit["data"], miss["data"], "a hit answers exactly what the miss did");
    // What the Redis buffer holds changes between generations: never cached.
    for _ in 0..2 {
        let live = post(&app, "{ lake { posts bufferedPosts } }", None);
        assert_eq!(cache_status(&live), "BYPASS", "{live}");
    }
    // Kept as long as their data stays: 24 h for an answer over sealed past days, 5 s for one
    // whose range reaches today (new posts may come).
    let mut connection = redis.connection();
    let mut ttl_of = |query: &str| -> i64 {
        let keys = |c: &mut redis::Connection| -> std::collections::BTreeSet<String> {
            redis::cmd("KEYS").arg("skyglass:cache:*").query(c).unwrap()
        };
        let before = keys(&mut connection);
        assert_eq!(cache_status(&post(&app, query, None)), "MISS");
        let new: Vec<String> = keys(&mut connection).difference(&before).cloned().collect();
        assert_eq!(new.len(), 1, "{new:?}");
        redis::cmd("PTTL").arg(&new[0]).query(&mut connection).unwrap()
    };
    let sealed = ttl_of("{ posts(first: 3, filter: {until: \"2026-11-29T00:00:00Z\"}) { totalCount } }");
    assert!(sealed > 23 * 3_600_000, "a sealed range lives {sealed} ms");
    let recent = ttl_of("{ posts(first: 3, filter: {since: \"2026-11-20T00:00:00Z\"}) { totalCount } }");
    assert!((1..=5_000).contains(&recent), "a range reaching today lives {recent} ms");
    let fresh = post(&app, QUERY, Some("no-cache"));
    assert_eq!((cache_status(&fresh), &fresh["data"]), ("BYPASS", &miss["data"]));

    // A flush publishes a new generation: the same query misses and sees the new posts.
    ingest_once(lake.path(), &redis.url(), &write("b.jsonl", second_half));
    let after = post(&app, QUERY, None);
    assert_eq!(cache_status(&after), "MISS");
    assert_eq!(after["data"]["posts"]["totalCount"], json!(crate::expected::posts_in(&sample).len()), "{after}");
    assert_ne!(after["data"], miss["data"]);

    // Concurrent identical misses compute once: one MISS, the others served its answer.
    let query = "{ topHashtags(first: 5) { tag posts } }";
    let misses_before = metric(&app, "skyglass_cache_requests_total{status=\"MISS\"}");
    let answers: Vec<Value> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..8).map(|_| scope.spawn(|| post(&app, query, None))).collect();
        handles.into_iter().map(|handle| handle.join().unwrap()).collect()
    });
    assert!(answers.iter().all(|a| a["data"] == answers[0]["data"]));
    assert_eq!(metric(&app, "skyglass_cache_requests_total{status=\"MISS\"}") - misses_before, 1.0);

    // Redis gone: answers keep coming, uncached, and say so; errors are counted.
    redis.kill();
    let uncached = post(&app, QUERY, None);
    assert_eq!((cache_status(&uncached), &uncached["data"]), ("BYPASS", &after["data"]));
    assert!(metric(&app, "skyglass_cache_errors_total") >= 1.0);
    let ready = app.get("/readyz");
    assert_eq!(ready.status(), 200, "an API replica stays ready without its cache");
    assert_eq!(ready.json::<Value>().unwrap()["redis"], json!(false));
    // Back (empty): the cache recovers by itself.
    redis.restart_empty().unwrap();
    let recovered = poll(std::time::Duration::from_secs(15), || {
        let answer = post(&app, QUERY, None);
        (cache_status(&answer) == "HIT").then_some(answer)
    });
    assert_eq!(recovered.expect("the cache did not recover within 15 s")["data"], after["data"]);
    assert!(app.stop().success());
}

/// Automatic persisted queries: a hash alone is refused until the document was sent once with
/// it, then answers like the document; a document that does not match its hash is refused.
#[test]
fn persisted_queries_answer_by_hash_once_the_document_was_sent() {
    use sha2::Digest;
    let redis = RedisServer::start().unwrap();
    let lake = tempfile::tempdir().unwrap();
    ingest_once(lake.path(), &redis.url(), &fixtures_dir().join("jetstream_sample.jsonl"));
    let app = App::serve_api(lake.path(), &redis.url()).unwrap();
    let hash: String = sha2::Sha256::digest(QUERY.as_bytes()).iter().map(|b| format!("{b:02x}")).collect();
    let persisted = json!({"persistedQuery": {"version": 1, "sha256Hash": hash}});
    let client = reqwest::blocking::Client::new();
    let send = |body: Value| -> Value {
        client.post(format!("{}/graphql", app.base_url)).json(&body).send().unwrap().json().unwrap()
    };

    let unknown = send(json!({"extensions": persisted}));
    assert_eq!(unknown["errors"][0]["message"], json!("PersistedQueryNotFound"), "{unknown}");
    assert_eq!(unknown["errors"][0]["extensions"]["code"], json!("PERSISTED_QUERY_NOT_FOUND"));
    let whole = send(json!({"query": QUERY, "extensions": persisted}));
    assert!(whole["data"]["posts"]["totalCount"].as_u64().unwrap() > 0, "{whole}");
    let by_hash = send(json!({"extensions": persisted}));
    assert_eq!(by_hash["data"], whole["data"]);
    assert_eq!(cache_status(&by_hash), "HIT", "the same document at the same generation");

    let wrong = send(json!({"query": "{ lake { posts } }", "extensions": persisted}));
    assert_eq!(wrong["errors"][0]["extensions"]["code"], json!("BAD_USER_INPUT"), "{wrong}");
    assert!(app.stop().success());
}

/// Two API replicas sharing one Redis: identical requests that miss on both at once are computed
/// by one replica; the other serves its answer.
#[test]
fn replicas_sharing_redis_compute_a_missed_answer_once() {
    let redis = RedisServer::start().unwrap();
    let lake = tempfile::tempdir().unwrap();
    crate::compaction::many_small_files(lake.path());
    let replicas =
        [App::serve_api(lake.path(), &redis.url()).unwrap(), App::serve_api(lake.path(), &redis.url()).unwrap()];
    // Slow enough (a regular expression over 400,000 posts) that the requests overlap.
    let query = "{ posts(first: 1, filter: { text: { query: \"about topic7\", mode: PHRASE } }) { totalCount } }";
    let misses = |app: &App| metric(app, "skyglass_cache_requests_total{status=\"MISS\"}");
    let before: f64 = replicas.iter().map(misses).sum();
    let answers: Vec<Value> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..8)
            .map(|n| {
                let app = &replicas[n % 2];
                scope.spawn(move || post(app, query, None))
            })
            .collect();
        handles.into_iter().map(|handle| handle.join().unwrap()).collect()
    });
    assert!(
        answers.iter().all(|a| a["data"] == answers[0]["data"] && a["data"]["posts"]["totalCount"].as_u64() > Some(0)),
        "{answers:?}"
    );
    let after: f64 = replicas.iter().map(misses).sum();
    assert_eq!(after - before, 1.0, "one replica computed, the other waited for its answer");
    for app in replicas {
        assert!(app.stop().success());
    }
}
