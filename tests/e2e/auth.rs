//! API keys and roles, anonymous reading, introspection and the persisted-query allow-list,
//! over real HTTP and the real websocket.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use sha2::Digest;
use skyglass_tests::{App, RedisServer, fixtures_dir, ingest_once, skyglass};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

/// `skyglass keys add`: the key it prints, once.
pub(crate) fn add_key(file: &std::path::Path, name: &str, role: &str) -> String {
    let output = skyglass(file, "redis://unused")
        .args(["keys", "add", name, "--role", role, "--api-keys"])
        .arg(file)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).unwrap().trim().to_owned()
}

/// POSTs `query` with a header (`None`: none); the status and the body.
fn post(app: &App, header: Option<(&str, &str)>, query: &str) -> (u16, Value) {
    let client = reqwest::blocking::Client::new();
    let mut request = client.post(format!("{}/graphql", app.base_url)).json(&json!({ "query": query }));
    if let Some((name, value)) = header {
        request = request.header(name, value);
    }
    let response = request.send().unwrap();
    (response.status().as_u16(), response.json().unwrap())
}

fn code(answer: &Value) -> &str {
    answer["errors"][0]["extensions"]["code"].as_str().unwrap_or("")
}

/// Opens `/graphql/ws` and sends `connection_init` with `payload`; the reply's type.
fn ws_init(app: &App, payload: Value) -> String {
    let url = format!("{}/graphql/ws", app.base_url.replace("http://", "ws://"));
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let mut request = url.into_client_request().unwrap();
        request.headers_mut().insert("Sec-WebSocket-Protocol", "graphql-transport-ws".parse().unwrap());
        let (mut socket, _) = tokio_tungstenite::connect_async(request).await.unwrap();
        socket.send(Message::text(json!({"type": "connection_init", "payload": payload}).to_string())).await.unwrap();
        match tokio::time::timeout(Duration::from_secs(10), socket.next()).await {
            Ok(Some(Ok(Message::Text(text)))) => {
                serde_json::from_str::<Value>(&text).unwrap()["type"].as_str().unwrap_or("").to_owned()
            }
            Ok(Some(Ok(Message::Close(frame)))) => {
                format!("closed: {}", frame.map(|f| f.reason.to_string()).unwrap_or_default())
            }
            other => format!("{other:?}"),
        }
    })
}

#[test]
fn keys_and_roles_decide_who_reads_introspects_and_lists_exports() {
    let redis = RedisServer::start().unwrap();
    let lake = tempfile::tempdir().unwrap();
    ingest_once(lake.path(), &redis.url(), &fixtures_dir().join("jetstream_sample.jsonl"));
    let keys = lake.path().join("keys.toml");
    let reader = add_key(&keys, "dashboard", "reader");
    let admin = add_key(&keys, "ops", "admin");
    // Only hashes are kept.
    let stored = std::fs::read_to_string(&keys).unwrap();
    assert!(!stored.contains(&reader) && !stored.contains(&admin));
    assert!(stored.contains(&format!("{:x}", sha2::Sha256::digest(reader.as_bytes()))));

    let app = App::serve(
        skyglass(lake.path(), &redis.url())
            .args(["serve", "--role", "api", "--listen", "127.0.0.1:0", "--anonymous-read", "false"])
            .args(["--introspection", "false", "--api-keys"])
            .arg(&keys),
    )
    .unwrap();
    let count = "{ posts { totalCount } }";
    let reader_bearer = format!("Bearer {reader}");
    let admin_bearer = format!("Bearer {admin}");

    // No key, or a key the server does not know: 401 before anything runs.
    for header in [None, Some(("authorization", "Bearer sgk_not_a_key")), Some(("x-api-key", "nope"))] {
        let (status, answer) = post(&app, header, count);
        assert_eq!((status, code(&answer)), (401, "UNAUTHENTICATED"), "{header:?}: {answer}");
        // Like every answer, it says how it was served and how fresh the lake is.
        assert_eq!(answer["extensions"]["cache"], json!("BYPASS"), "{answer}");
        assert!(answer["extensions"]["freshness"].get("flushedThrough").is_some(), "{answer}");
    }
    // A reader key reads, sent either way; a GET answer to a key is the asking browser's alone.
    for header in [("authorization", reader_bearer.as_str()), ("x-api-key", reader.as_str())] {
        let (status, answer) = post(&app, Some(header), count);
        assert_eq!(status, 200, "{answer}");
        assert!(answer["data"]["posts"]["totalCount"].as_u64().unwrap() > 0, "{answer}");
        let get = reqwest::blocking::Client::new()
            .get(format!("{}/graphql", app.base_url))
            .query(&[("query", count)])
            .header(header.0, header.1)
            .send()
            .unwrap();
        assert_eq!(get.headers()["cache-control"], "private, max-age=5", "{header:?}");
    }

    // Introspection is off below admin, also when an admin's answer is in the cache.
    let introspect = "{ __schema { queryType { name } } }";
    let (_, answer) = post(&app, Some(("authorization", &admin_bearer)), introspect);
    assert_eq!(answer["data"]["__schema"]["queryType"]["name"], json!("Query"), "{answer}");
    let (_, answer) = post(&app, Some(("authorization", &reader_bearer)), introspect);
    assert_eq!(code(&answer), "INTROSPECTION_DISABLED", "{answer}");

    // The exports list is the admin's.
    let list = "{ exports { name } }";
    let (_, answer) = post(&app, Some(("authorization", &reader_bearer)), list);
    assert_eq!(code(&answer), "FORBIDDEN", "{answer}");
    let (_, answer) = post(&app, Some(("authorization", &admin_bearer)), list);
    assert_eq!(answer["data"]["exports"], json!([]), "{answer}");

    // Over the websocket the key rides in connection_init.
    assert_eq!(
        ws_init(&app, json!({})),
        "closed: this server needs an API key: send `Authorization: Bearer KEY` or `X-Api-Key: KEY`"
    );
    assert_eq!(ws_init(&app, json!({"authorization": reader_bearer})), "connection_ack");
    assert_eq!(ws_init(&app, json!({"apiKey": "nope"})), "closed: the API key is not known");
    assert!(app.stop().success());

    // A keys file that is missing is refused in one line.
    let output = skyglass(lake.path(), &redis.url())
        .args(["serve", "--role", "api", "--listen", "127.0.0.1:0", "--api-keys", "/nonexistent/keys.toml"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("--api-keys /nonexistent/keys.toml: no such file"));
}

#[test]
fn allow_list_mode_runs_listed_documents_only_and_the_playground_can_be_off() {
    let redis = RedisServer::start().unwrap();
    let lake = tempfile::tempdir().unwrap();
    ingest_once(lake.path(), &redis.url(), &fixtures_dir().join("jetstream_sample.jsonl"));
    let listed = "query Count { posts { totalCount } }";
    let hash = format!("{:x}", sha2::Sha256::digest(listed.as_bytes()));
    let manifest = lake.path().join("allowed.json");
    std::fs::write(&manifest, json!({ hash.clone(): listed }).to_string()).unwrap();
    let app = App::serve(
        skyglass(lake.path(), &redis.url())
            .args(["serve", "--role", "api", "--listen", "127.0.0.1:0", "--playground", "false"])
            .args(["--admin-token", "s3cret", "--allow-list"])
            .arg(&manifest),
    )
    .unwrap();

    // The listed document, by its text or by its hash alone (no Redis needed to know it).
    let (_, by_text) = post(&app, None, listed);
    assert!(by_text["data"]["posts"]["totalCount"].as_u64().unwrap() > 0, "{by_text}");
    let extensions = json!({"persistedQuery": {"version": 1, "sha256Hash": hash}}).to_string();
    let by_hash: Value = reqwest::blocking::Client::new()
        .get(format!("{}/graphql", app.base_url))
        .query(&[("extensions", extensions.as_str())])
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(by_hash["data"], by_text["data"], "{by_hash}");

    // Anything else is refused below admin, and runs for the admin.
    let unlisted = "{ posts { totalCount } }";
    let (_, refused) = post(&app, None, unlisted);
    assert_eq!(code(&refused), "PERSISTED_QUERY_NOT_ALLOWED", "{refused}");
    let (_, admin) = post(&app, Some(("authorization", "Bearer s3cret")), unlisted);
    assert_eq!(admin["data"], by_text["data"], "{admin}");
    // The admin's answer, now cached, does not leak to the others.
    let (_, again) = post(&app, None, unlisted);
    assert_eq!(code(&again), "PERSISTED_QUERY_NOT_ALLOWED", "{again}");

    // Caps on one document: aliases, root fields, batches.
    let aliased: String = (0..31).map(|i| format!("a{i}: lake {{ posts }} ")).collect();
    let (_, answer) = post(
        &app,
        None,
        &format!("{{ posts {{ {} }} }}", (0..31).map(|i| format!("t{i}: totalCount")).collect::<Vec<_>>().join(" ")),
    );
    assert_eq!(code(&answer), "TOO_COMPLEX", "{answer}");
    let (_, answer) = post(&app, None, &format!("{{ {aliased} }}"));
    assert!(answer["errors"][0]["message"].as_str().unwrap().contains("31 aliased fields"), "{answer}");
    let roots: String = (0..11).map(|_| "lake { posts } ").collect();
    let (_, answer) = post(&app, None, &format!("{{ {roots} }}"));
    assert_eq!(code(&answer), "TOO_COMPLEX", "{answer}");
    assert!(answer["errors"][0]["message"].as_str().unwrap().contains("11 root fields"), "{answer}");
    let batch = reqwest::blocking::Client::new()
        .post(format!("{}/graphql", app.base_url))
        .json(&json!([{ "query": listed }, { "query": listed }]))
        .send()
        .unwrap();
    assert_eq!(batch.status(), 400);

    // The pages are off.
    assert_eq!(app.get("/").status(), 404);
    assert_eq!(app.get("/explore").status(), 404);
    assert!(app.stop().success());

    // A manifest whose document does not match its hash is refused at start.
    std::fs::write(&manifest, json!({ hash: "{ lake { posts } }" }).to_string()).unwrap();
    let output = skyglass(lake.path(), &redis.url())
        .args(["serve", "--role", "api", "--listen", "127.0.0.1:0", "--allow-list"])
        .arg(&manifest)
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("does not hash to it"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn a_request_body_over_64_kib_is_refused_and_the_server_answers_the_next() {
    let redis = RedisServer::start().unwrap();
    let lake = tempfile::tempdir().unwrap();
    ingest_once(lake.path(), &redis.url(), &fixtures_dir().join("jetstream_sample.jsonl"));
    let app = App::serve_api(lake.path(), &redis.url()).unwrap();
    // The same document, padded with white space to just over and just under the limit.
    let padded = |bytes: usize| json!({ "query": format!("{{ lake {{ posts }} }}{}", " ".repeat(bytes)) });
    // A new connection for each request: the server may close the one it refused a body on
    // (unread), and a pooled client would send the next request down it.
    let client = reqwest::blocking::Client::builder().pool_max_idle_per_host(0).build().unwrap();
    let send = |body: &Value| client.post(format!("{}/graphql", app.base_url)).json(body).send().unwrap();
    let refused = send(&padded(64 * 1024));
    assert_eq!(refused.status().as_u16(), 413);
    let answered = send(&padded(60 * 1024));
    assert_eq!(answered.status().as_u16(), 200);
    let answer: Value = answered.json().unwrap();
    let expected = app.query("{ lake { posts } }", json!({}));
    assert_eq!(answer["data"], expected, "{answer}");
    assert!(expected["lake"]["posts"].as_u64().unwrap() > 0);
}
