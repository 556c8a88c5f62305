//! Request logs: with `--log-format json`, one JSON line per HTTP request as its response goes
//! out, with the method, path, status, latency and the request id the response carries.

use std::time::Duration;

use serde_json::{Value, json};
use skyglass_tests::{App, RedisServer, poll, skyglass};

#[test]
fn each_request_logs_one_json_line_with_the_request_id_of_its_response() {
    let redis = RedisServer::start().unwrap();
    let lake = tempfile::tempdir().unwrap();
    let app = App::serve(
        skyglass(lake.path(), &redis.url())
            .args(["serve", "--role", "api", "--listen", "127.0.0.1:0", "--log-format", "json"])
            .env("RUST_LOG", "info"),
    )
    .unwrap();
    let graphql = format!("{}/graphql", app.base_url);
    // An answer, a key turned away, and an id the client chose (kept, not replaced).
    let answered = app.client.post(&graphql).json(&json!({"query": "{ lake { posts } }"})).send().unwrap();
    let refused = app.client.post(&graphql).bearer_auth("no-such-key").json(&json!({"query": "{ lake { posts } }"}));
    let refused = refused.send().unwrap();
    let chosen = app.client.get(format!("{}/healthz", app.base_url)).header("x-request-id", "client-chosen-1");
    let chosen = chosen.send().unwrap();
    let statuses = [&answered, &refused, &chosen].map(|r| r.status().as_u16());
    assert_eq!(statuses, [200, 401, 200]);
    assert_eq!(chosen.headers()["x-request-id"], "client-chosen-1");

    for (response, method, path) in
        [(answered, "POST", "/graphql"), (refused, "POST", "/graphql"), (chosen, "GET", "/healthz")]
    {
        let id = response.headers()["x-request-id"].to_str().unwrap().to_owned();
        let of_this_request = |app: &App| -> Vec<Value> {
            app.log_lines()
                .iter()
                .filter_map(|line| serde_json::from_str::<Value>(line).ok())
                .filter(|line| {
                    line["span"]["request_id"] == json!(id) && line["fields"]["message"] == json!("response")
                })
                .collect()
        };
        let lines = poll(Duration::from_secs(10), || Some(of_this_request(&app)).filter(|lines| !lines.is_empty()))
            .unwrap_or_else(|| panic!("no log line for request {id}; the log:\n{}", app.log_lines().join("\n")));
        assert_eq!(lines.len(), 1, "one line per request: {lines:#?}");
        let line = &lines[0];
        assert_eq!(line["level"], json!("INFO"), "{line}");
        assert_eq!(line["fields"]["status"], json!(response.status().as_u16()), "{line}");
        assert_eq!((&line["span"]["method"], &line["span"]["path"]), (&json!(method), &json!(path)), "{line}");
        assert!(line["fields"]["latency_ms"].as_f64().is_some_and(|ms| ms >= 0.0), "{line}");
    }
    assert!(app.stop().success());
}
