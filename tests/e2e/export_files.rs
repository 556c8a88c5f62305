//! Export files read back by other readers: every example export of
//! `deploy/skyglass.example.toml` against a fixture lake, and a CSV of awkward texts (commas,
//! quotes, newlines, list columns) read by DuckDB's CSV reader, each equal to the GraphQL
//! answer; re-runs through `runExport` write the same bytes.

use std::path::Path;

use serde_json::{Value, json};
use skyglass_tests::{App, RedisServer, fixtures_dir, ingest_once, skyglass};

use crate::exports::{config, exported, instant, post_graphql, sha256};

/// A column as the manifest names it.
struct Column {
    name: String,
    kind: String,
    list: bool,
}

fn columns(manifest: &Value) -> Vec<Column> {
    manifest["columns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| Column {
            name: c["name"].as_str().unwrap().to_owned(),
            kind: c["type"].as_str().unwrap().to_owned(),
            list: c["list"].as_bool().unwrap(),
        })
        .collect()
}

/// One cell in a form every reader agrees on: times as UTC microseconds, and an empty text as
/// null (CSV writes both as an empty field).
fn canonical(column: &Column, value: Value) -> Value {
    match value {
        Value::String(text) if column.kind == "datetime" && !column.list => {
            json!(chrono::DateTime::parse_from_rfc3339(&text).unwrap().timestamp_micros())
        }
        Value::String(text) if text.is_empty() => Value::Null,
        Value::Number(n) if column.kind == "float" => json!(n.as_f64().unwrap()),
        other => other,
    }
}

/// The rows of an answer's one root field (a list's items or a connection's nodes), as cells of
/// the export's columns (`author_did` is `author.did`).
fn answer_rows(data: &Value, columns: &[Column]) -> Vec<Vec<Value>> {
    let root = data.as_object().unwrap().values().next().unwrap();
    let rows = root.as_array().or_else(|| root["nodes"].as_array()).unwrap();
    rows.iter()
        .map(|row| {
            columns
                .iter()
                .map(|c| canonical(c, c.name.split('_').fold(row, |value, key| &value[key]).clone()))
                .collect()
        })
        .collect()
}

/// The rows of an export file: Parquet and CSV read by DuckDB (CSV as text, each cell read by
/// its column's type; lists are JSON text), JSON lines by serde.
fn file_rows(path: &Path, format: &str, columns: &[Column]) -> Vec<Vec<Value>> {
    if format == "jsonl" {
        return std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(|line| {
                let row: Value = serde_json::from_str(line).unwrap();
                columns.iter().map(|c| canonical(c, row[c.name.as_str()].clone())).collect()
            })
            .collect();
    }
    let quoted = |c: &Column| format!("\"{}\"", c.name);
    let (select, from): (Vec<String>, String) = if format == "parquet" {
        let select = columns
            .iter()
            .map(|c| match (c.list, c.kind.as_str()) {
                (true, _) => format!("to_json({})::VARCHAR", quoted(c)),
                (false, "datetime") => format!("epoch_us({})", quoted(c)),
                _ => quoted(c),
            })
            .collect();
        (select, format!("read_parquet('{}')", path.display()))
    } else {
        let from = format!(
            "read_csv('{}', header = true, all_varchar = true, delim = ',', quote = '\"', escape = '\"')",
            path.display()
        );
        (columns.iter().map(quoted).collect(), from)
    };
    let connection = lake::duckdb::Connection::open_in_memory().unwrap();
    let mut statement = connection.prepare(&format!("SELECT {} FROM {from}", select.join(", "))).unwrap();
    let mut rows = statement.query([]).unwrap();
    let mut out = Vec::new();
    while let Some(row) = rows.next().unwrap() {
        let cells = columns
            .iter()
            .enumerate()
            .map(|(i, column)| {
                use lake::duckdb::types::ValueRef;
                let value = match row.get_ref(i).unwrap() {
                    ValueRef::Null => Value::Null,
                    ValueRef::Boolean(b) => json!(b),
                    ValueRef::BigInt(n) => json!(n),
                    ValueRef::Int(n) => json!(n),
                    ValueRef::Double(x) => json!(x),
                    ValueRef::Text(bytes) => {
                        let text = String::from_utf8(bytes.to_vec()).unwrap();
                        match (column.list || format == "csv", column.kind.as_str()) {
                            (false, _) => json!(text),
                            (true, _) if column.list => serde_json::from_str(&text).unwrap(),
                            (true, "int") => json!(text.parse::<i64>().unwrap()),
                            (true, "float") => json!(text.parse::<f64>().unwrap()),
                            (true, "boolean") => json!(text == "true"),
                            (true, _) => json!(text),
                        }
                    }
                    other => panic!("unexpected DuckDB value {other:?} in {}", column.name),
                };
                canonical(column, value)
            })
            .collect();
        out.push(cells);
    }
    out
}

/// Whether an export's file holds its manifest's rows and the GraphQL answer to its query with
/// its variables as run; returns the number of rows.
fn check_against_the_answer(app: &App, name: &str, data: &Path, manifest: &Value) -> usize {
    assert_eq!(manifest["sha256"], json!(sha256(data)), "{name}");
    let columns = columns(manifest);
    let answer = app.query(manifest["query"].as_str().unwrap(), manifest["variables"].clone());
    let expected = answer_rows(&answer, &columns);
    let got = file_rows(data, manifest["format"].as_str().unwrap(), &columns);
    assert_eq!(got, expected, "{name}: the file holds the answer's rows, in order");
    assert_eq!(manifest["rows"], json!(got.len()), "{name}");
    got.len()
}

#[test]
fn every_example_export_holds_the_graphql_answer_for_its_period() {
    let redis = RedisServer::start().unwrap();
    let lake = tempfile::tempdir().unwrap();
    ingest_once(lake.path(), &redis.url(), &fixtures_dir().join("jetstream_sample.jsonl"));
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/skyglass.example.toml");
    let text = std::fs::read_to_string(&example).unwrap();
    let tables = text.parse::<toml::Table>().unwrap()["export"].as_array().unwrap().clone();
    let names: Vec<&str> = tables.iter().map(|t| t["name"].as_str().unwrap()).collect();
    assert_eq!(names.len(), 5, "{names:?}");
    // The example's destination, ./data/exports, under a scratch directory; the fixture's
    // posts fall on 2026-11-26 to 2026-11-28 (UTC): this time's yesterday, last hour (06:00 to
    // 07:00 UTC) and last seven days hold some in every example's time zone.
    let work = tempfile::tempdir().unwrap();
    let as_of = "2026-11-28T07:10:00Z";
    for name in &names {
        let output = skyglass(lake.path(), &redis.url())
            .current_dir(work.path())
            .args(["export", name, "--as-of", as_of, "--config"])
            .arg(&example)
            .output()
            .unwrap();
        assert!(output.status.success(), "{name}: {}", String::from_utf8_lossy(&output.stderr));
    }
    let app = App::serve_api(lake.path(), &redis.url()).unwrap();
    for (name, table) in names.iter().zip(&tables) {
        let (data, manifest) = exported(&work.path().join("data/exports"), name);
        assert_eq!(manifest["period"]["timeZone"], table["time_zone"].as_str().unwrap(), "{name}");
        let rows = check_against_the_answer(&app, name, &data, &manifest);
        assert!(rows > 0, "{name} exported no row");
    }
    // The rolling week's relative times, resolved in Kolkata against its period's end.
    let (_, week) = exported(&work.path().join("data/exports"), "top-hashtags-rolling-week");
    assert_eq!(week["relativeVariables"], json!({"from": "start of 7 days ago", "to": "now"}));
    assert_eq!(week["period"]["end"], json!("2026-11-27T18:30:00Z"), "Kolkata's midnight of the 28th");
    assert_eq!(week["variables"]["to"], week["period"]["end"]);
    assert_eq!(week["variables"]["from"], json!("2026-11-20T18:30:00Z"));
    assert!(app.stop().success());
}

fn manifest_of(data: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(format!("{}.manifest.json", data.display())).unwrap()).unwrap()
}

/// Posts whose texts and lists a CSV writer could get wrong.
fn lake_of_awkward_texts(lake: &Path) -> usize {
    const DAY: i64 = 86_400_000_000;
    let texts = [
        "plain",
        "a, b, and c",
        "she said \"hi\"",
        "two\nlines",
        "windows\r\nline end",
        "\"quoted at the start\", then more",
        "all of it: , \" \n ,\"\"",
        "  padded  ",
        "",
        "emoji 🌊, \"wave\"\n🌊",
        "trailing quote\"",
        "a\ttab",
    ];
    let posts: Vec<lake::model::Post> = texts
        .iter()
        .enumerate()
        .map(|(i, text)| {
            let did = format!("did:plc:awkward{i}");
            let at = 20_463 * DAY + 12 * 3_600_000_000 + i as i64 * 60_000_000;
            lake::model::Post {
                uri: format!("at://{did}/app.bsky.feed.post/{i:04}"),
                cid: format!("bafy{i}"),
                rkey: format!("{i:04}"),
                created_at_us: at,
                indexed_at_us: at,
                text: (*text).to_owned(),
                text_len: text.len() as i32,
                langs: match i % 3 {
                    0 => vec![],
                    1 => vec!["en".to_owned()],
                    _ => vec!["en".to_owned(), "de".to_owned()],
                },
                hashtags: if i % 2 == 0 { vec!["a,b".to_owned(), "say\"what".to_owned()] } else { vec![] },
                did,
                ..lake::model::Post::default()
            }
        })
        .collect();
    let n_posts = posts.len();
    lake::writer::write_posts(lake, "awkward.parquet", posts).unwrap();
    n_posts
}

#[test]
fn csv_exports_of_awkward_texts_read_back_equal_and_run_export_reruns_write_the_same_bytes() {
    let redis = RedisServer::start().unwrap();
    let lake = tempfile::tempdir().unwrap();
    // Day 20463 is 2026-01-10.
    let n_posts = lake_of_awkward_texts(lake.path());
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("out");
    let query = "query ($since: DateTime!, $until: DateTime!) {
      posts(first: 100, filter: { since: $since, until: $until }) { nodes { uri text createdAt langs hashtags author { did } } } }";
    let config = config(work.path(), &out, &[("texts", query, "yesterday", "csv")]);
    let app = App::serve(
        skyglass(lake.path(), &redis.url())
            .args(["serve", "--role", "api", "--listen", "127.0.0.1:0", "--admin-token", "s3cret"])
            .args(["--max-page-size", "1000", "--config"])
            .arg(&config),
    )
    .unwrap();
    let run = |force: bool| {
        post_graphql(
            &app,
            Some("s3cret"),
            &format!(
                "mutation {{ runExport(name: \"texts\", asOf: \"2026-01-11T00:10:00Z\", force: {force}) {{ status period rows file }} }}"
            ),
        )
    };
    let first = run(false);
    assert_eq!(first["data"]["runExport"]["status"], json!("SUCCEEDED"), "{first}");
    assert_eq!(first["data"]["runExport"]["period"], json!("2026-01-10"), "{first}");
    assert_eq!(first["data"]["runExport"]["rows"], json!(n_posts), "{first}");
    // (Serve also exported the last scheduled period, yesterday, on start: another file.)
    let data = out.join(first["data"]["runExport"]["file"].as_str().unwrap());
    let manifest = manifest_of(&data);
    let bytes = std::fs::read(&data).unwrap();
    assert!(String::from_utf8_lossy(&bytes).contains("\"two\nlines\""), "a newline stays inside its quoted field");
    assert_eq!(
        check_against_the_answer(&app, "texts", &data, &manifest),
        n_posts,
        "one row per post, newlines and all"
    );

    // Done: left alone unless forced; forced over the same lake, the same bytes.
    let again = run(false);
    assert_eq!(again["errors"][0]["extensions"]["code"], json!("ALREADY_DONE"), "{again}");
    assert!(again["errors"][0]["message"].as_str().unwrap().contains("force: true"), "{again}");
    let forced = run(true);
    assert_eq!(forced["data"]["runExport"]["status"], json!("SUCCEEDED"), "{forced}");
    assert_eq!(forced["data"]["runExport"]["file"], first["data"]["runExport"]["file"]);
    let manifest_again = manifest_of(&data);
    assert!(std::fs::read(&data).unwrap() == bytes, "a forced re-run wrote other bytes");
    let leftovers: Vec<_> = std::fs::read_dir(data.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    assert_eq!(manifest_again["sha256"], manifest["sha256"]);
    assert!(instant(&manifest_again["startedAt"]) > instant(&manifest["startedAt"]), "it did run again");
    assert!(app.stop().success());
}
