//! chDB (ClickHouse in-process, from PyPI) as the query benchmark's peer: each class asked in
//! ClickHouse's SQL over the same Parquet files, through one long-lived Python session, and its
//! answer compared with the API's.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

use anyhow::{Context, bail};
use lake::layout;
use serde_json::Value;

const SESSION_SCRIPT: &str = include_str!("chdb_session.py");

/// The fields of an answer that say what it is (which posts, which counts): an answer's other
/// fields (texts, times) are formatted differently by each side and carried along unchecked.
const ANSWER_FIELDS: [&str; 10] =
    ["uri", "totalCount", "postCount", "start", "group", "tag", "did", "posts", "authors", "replies"];

/// A Python process holding one chDB session.
pub(super) struct Chdb {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

/// What one request to chDB gave.
pub(super) struct PeerRun {
    pub seconds: f64,
    /// The answer's rows, as [`canonical`] makes them.
    pub rows: Vec<String>,
}

impl Chdb {
    /// Starts `python` on the session script (written into `work`) and waits until chDB loaded.
    pub(super) fn start(python: &Path, work: &Path) -> anyhow::Result<Chdb> {
        let script = work.join("chdb_session.py");
        std::fs::write(&script, SESSION_SCRIPT).with_context(|| format!("failed to write {}", script.display()))?;
        let mut child = Command::new(python)
            .arg(&script)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .with_context(|| format!("failed to start {} (--chdb-python)", python.display()))?;
        let stdin = child.stdin.take().context("chDB's stdin")?;
        let stdout = BufReader::new(child.stdout.take().context("chDB's stdout")?);
        let mut chdb = Chdb { child, stdin, stdout };
        let hello = chdb.read()?;
        if let Some(error) = hello.get("error") {
            bail!("chDB did not start: {}", error.as_str().unwrap_or_default());
        }
        Ok(chdb)
    }

    /// Runs `statements` in order; the time is theirs together, inside the Python process.
    pub(super) fn run(&mut self, statements: &[String]) -> anyhow::Result<PeerRun> {
        writeln!(self.stdin, "{}", serde_json::to_string(statements)?)?;
        self.stdin.flush()?;
        let answer = self.read()?;
        if let Some(error) = answer.get("error") {
            bail!("{}", error.as_str().unwrap_or_default());
        }
        let seconds = answer["seconds"].as_f64().context("chDB's answer has no seconds")?;
        let mut rows = Vec::new();
        for statement in answer["rows"].as_array().into_iter().flatten() {
            for row in statement.as_array().into_iter().flatten() {
                rows.extend(canonical(row));
            }
        }
        Ok(PeerRun { seconds, rows })
    }

    fn read(&mut self) -> anyhow::Result<Value> {
        let mut line = String::new();
        if self.stdout.read_line(&mut line)? == 0 {
            bail!("the chDB process ended (its error is above)");
        }
        serde_json::from_str(&line).with_context(|| format!("chDB answered something else: {line}"))
    }
}

impl Drop for Chdb {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The rows of an answer (a GraphQL `data`, or a row of chDB's), comparable across the two: each
/// object with any [`ANSWER_FIELDS`] is a row of them in the order of their keys (a nested
/// object's fields, `author { did }`, in its parent's row, at its key), then the rows of its lists. Bucket starts,
/// which GraphQL gives as RFC 3339 and chDB as epoch seconds, become epoch seconds.
pub(super) fn canonical(value: &Value) -> Vec<String> {
    let mut rows = Vec::new();
    walk(value, &mut rows);
    rows
}

fn walk(value: &Value, rows: &mut Vec<String>) {
    match value {
        Value::Array(items) => items.iter().for_each(|item| walk(item, rows)),
        Value::Object(_) => {
            let mut row = Vec::new();
            fields(value, &mut row);
            if !row.is_empty() {
                rows.push(row.join(" "));
            }
            lists(value, rows);
        }
        _ => {}
    }
}

fn fields(object: &Value, row: &mut Vec<String>) {
    let Value::Object(map) = object else { return };
    for (key, value) in map {
        match value {
            Value::Object(_) => fields(value, row),
            Value::Array(_) => {}
            _ if ANSWER_FIELDS.contains(&key.as_str()) => row.push(format!("{key}={}", scalar(key, value))),
            _ => {}
        }
    }
}

fn lists(object: &Value, rows: &mut Vec<String>) {
    let Value::Object(map) = object else { return };
    for value in map.values() {
        match value {
            Value::Array(_) => walk(value, rows),
            Value::Object(_) => lists(value, rows),
            _ => {}
        }
    }
}

fn scalar(key: &str, value: &Value) -> String {
    match value {
        Value::String(text) if key == "start" => chrono::DateTime::parse_from_rfc3339(text)
            .map(|t| t.timestamp().to_string())
            .unwrap_or_else(|_| text.clone()),
        Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

/// A ClickHouse string literal.
pub(super) fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// A ClickHouse timestamp of `us` microseconds since the epoch, UTC.
pub(super) fn timestamp(us: i64) -> String {
    format!("fromUnixTimestamp64Micro(toInt64({us}), 'UTC')")
}

/// The live posts, as the engine's `posts` view has them: the `posts` files less the posts the
/// `deletes` files name and less hidden accounts' (deactivated, taken down, suspended or
/// deleted: their latest account event says so), as a ClickHouse subquery.
pub(super) fn live_posts(lake: &Path) -> String {
    let table = |name: &str| format!("file({}, Parquet)", literal(&layout::table_glob(lake, name)));
    // The uri is made of `did` and `rkey`, as the engine makes it; a lake written before may
    // still store one (ClickHouse takes the schema of the first file).
    let first = lake::catalog::table_files(lake, layout::POSTS_TABLE).ok().and_then(|f| f.paths.first().cloned());
    let except = if first.is_some_and(|path| lake::model::stores_uri(&path)) { " EXCEPT (uri)" } else { "" };
    let mut sql = format!(
        "(SELECT concat('at://', did, '/app.bsky.feed.post/', rkey) AS uri, *{except} FROM {}",
        table(layout::POSTS_TABLE)
    );
    let mut conditions = Vec::new();
    if has_files(lake, layout::DELETES_TABLE) {
        conditions.push(format!(
            "(did, rkey) NOT IN (SELECT did, splitByChar('/', uri)[5] FROM {})",
            table(layout::DELETES_TABLE)
        ));
    }
    if has_files(lake, layout::ACCOUNTS_TABLE) {
        conditions.push(format!(
            "did NOT IN (SELECT did FROM {} WHERE active IS NOT NULL GROUP BY did \
             HAVING argMax(active, seen_at) = false \
             AND coalesce(argMax(status, seen_at), '') NOT IN ('desynchronized', 'throttled'))",
            table(layout::ACCOUNTS_TABLE)
        ));
    }
    if !conditions.is_empty() {
        sql.push_str(" WHERE ");
        sql.push_str(&conditions.join(" AND "));
    }
    sql.push(')');
    sql
}

/// Whether a table has a data file (ClickHouse fails on a glob that matches none).
fn has_files(lake: &Path, table: &str) -> bool {
    lake::catalog::table_files(lake, table).is_ok_and(|files| files.files > 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn answers_flatten_to_the_same_rows_on_both_sides() {
        let graphql = json!({
            "posts": {"totalCount": 2, "nodes": [
                {"uri": "at://a/app.bsky.feed.post/1", "text": "hi", "createdAt": "2026-01-01T00:00:00Z"},
                {"uri": "at://b/app.bsky.feed.post/2", "text": "yo", "createdAt": "2026-01-01T00:00:01Z"}
            ]},
        });
        let chdb = [
            json!({"totalCount": 2}),
            json!({"uri": "at://a/app.bsky.feed.post/1", "text": "hi", "created_at": "2026-01-01 00:00:00"}),
            json!({"uri": "at://b/app.bsky.feed.post/2", "text": "yo", "created_at": "2026-01-01 00:00:01"}),
        ];
        let rows: Vec<String> = chdb.iter().flat_map(canonical).collect();
        assert_eq!(canonical(&graphql), rows);
        assert_eq!(rows[0], "totalCount=2");

        let authors = json!({"topAuthors": [{"posts": 9, "author": {"did": "did:plc:x"}}]});
        assert_eq!(canonical(&authors), ["did=did:plc:x posts=9"]);
        let buckets = json!({"timeBuckets": [{"start": "2026-01-01T00:00:00-05:00", "group": null, "posts": 3}]});
        assert_eq!(canonical(&buckets), ["group=null posts=3 start=1767243600"]);
        assert_eq!(canonical(&json!({"start": 1767243600, "group": null, "posts": 3})), canonical(&buckets));
        assert_ne!(canonical(&json!({"start": 1767243600, "group": null, "posts": 4})), canonical(&buckets));
        assert_ne!(canonical(&json!({"start": 1767240000, "group": null, "posts": 3})), canonical(&buckets));
    }

    #[test]
    fn literals_escape_quotes_and_backslashes() {
        assert_eq!(literal(r"it's \b"), r"'it\'s \\b'");
    }
}
