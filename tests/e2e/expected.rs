//! Independent answers: what a fixture file should produce, computed straight from its JSON
//! with serde_json and plain Rust, never through Skyglass's decoder.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde_json::Value;

/// A post as the fixture states it.
#[derive(Debug, Clone)]
pub struct ExpectedPost {
    pub uri: String,
    pub did: String,
    pub created_at_us: i64,
    pub text: String,
    pub langs: Vec<String>,
    pub tag_features: Vec<String>,
    pub is_reply: bool,
}

fn micros(rfc3339: &str) -> i64 {
    chrono::DateTime::parse_from_rfc3339(rfc3339).expect("fixture times are RFC 3339").timestamp_micros()
}

/// Every DID's latest (time_us, handle) from identity events that name one, lower-cased.
pub fn handles_in(file: &Path) -> BTreeMap<String, String> {
    let mut latest: BTreeMap<String, (i64, String)> = BTreeMap::new();
    for event in events(file).filter(|e| e["kind"] == "identity") {
        let Some(handle) = event["identity"]["handle"].as_str() else { continue };
        let did = event["did"].as_str().unwrap().to_owned();
        let time = event["time_us"].as_i64().unwrap();
        if latest.get(&did).is_none_or(|(t, _)| *t < time) {
            latest.insert(did, (time, handle.to_lowercase()));
        }
    }
    latest.into_iter().map(|(did, (_, handle))| (did, handle)).collect()
}

/// DIDs whose latest account event says inactive for a reason that hides their posts.
pub fn hidden_in(file: &Path) -> BTreeSet<String> {
    let mut latest: BTreeMap<String, (i64, bool, String)> = BTreeMap::new();
    for event in events(file).filter(|e| e["kind"] == "account") {
        let did = event["did"].as_str().unwrap().to_owned();
        let time = event["time_us"].as_i64().unwrap();
        let active = event["account"]["active"].as_bool().unwrap();
        let status = event["account"]["status"].as_str().unwrap_or_default().to_owned();
        if latest.get(&did).is_none_or(|(t, _, _)| *t < time) {
            latest.insert(did, (time, active, status));
        }
    }
    latest
        .into_iter()
        .filter(|(_, (_, active, status))| !active && status != "desynchronized" && status != "throttled")
        .map(|(did, _)| did)
        .collect()
}

fn events(file: &Path) -> impl Iterator<Item = Value> {
    let body = std::fs::read_to_string(file).expect("fixture reads");
    body.lines().filter_map(|line| serde_json::from_str::<Value>(line).ok()).collect::<Vec<_>>().into_iter()
}

/// Every distinct post created in the file (replays counted once), not deleted in it and not
/// by an account hidden at its end.
pub fn posts_in(file: &Path) -> Vec<ExpectedPost> {
    let hidden = hidden_in(file);
    let (created, deleted) = created_and_deleted_in(file);
    created.into_iter().filter(|p| !deleted.contains(&p.uri) && !hidden.contains(&p.did)).collect()
}

/// Every distinct post created in the file (replays counted once), in uri order, deleted or
/// not, and the uris deleted in it.
pub fn created_and_deleted_in(file: &Path) -> (Vec<ExpectedPost>, BTreeSet<String>) {
    let mut seen = BTreeMap::new();
    let mut deleted = BTreeSet::new();
    for event in events(file) {
        let commit = &event["commit"];
        if event["kind"] == "commit" && commit["collection"] == "app.bsky.feed.post" && commit["operation"] == "delete"
        {
            deleted.insert(format!(
                "at://{}/app.bsky.feed.post/{}",
                event["did"].as_str().unwrap(),
                commit["rkey"].as_str().unwrap()
            ));
        }
        if event["kind"] != "commit" || commit["collection"] != "app.bsky.feed.post" || commit["operation"] != "create"
        {
            continue;
        }
        let record = &commit["record"];
        let known_embeds = [
            "app.bsky.embed.images",
            "app.bsky.embed.external",
            "app.bsky.embed.record",
            "app.bsky.embed.recordWithMedia",
            "app.bsky.embed.video",
        ];
        if let Some(kind) = record["embed"]["$type"].as_str()
            && !known_embeds.contains(&kind)
        {
            continue;
        }
        let did = event["did"].as_str().unwrap().to_owned();
        let uri = format!("at://{did}/app.bsky.feed.post/{}", commit["rkey"].as_str().unwrap());
        let tag_features = record["facets"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|f| f["features"].as_array().cloned().unwrap_or_default())
            .filter(|f| f["$type"] == "app.bsky.richtext.facet#tag")
            .map(|f| f["tag"].as_str().unwrap().to_lowercase())
            .collect();
        let post = ExpectedPost {
            uri: uri.clone(),
            did,
            created_at_us: micros(record["createdAt"].as_str().unwrap()),
            text: record["text"].as_str().unwrap().to_owned(),
            langs: record["langs"].as_array().into_iter().flatten().map(|l| l.as_str().unwrap().to_owned()).collect(),
            tag_features,
            is_reply: record.get("reply").is_some(),
        };
        seen.entry(uri).or_insert(post);
    }
    (seen.into_values().collect(), deleted)
}

/// The newest event time (`time_us`) in a fixture file, UTC microseconds.
pub fn newest_event_in(file: &Path) -> i64 {
    let text = std::fs::read_to_string(file).expect("the fixture reads");
    text.lines().filter_map(|line| serde_json::from_str::<Value>(line).ok()?["time_us"].as_i64()).max().expect("events")
}

/// An instant as the API writes it: RFC 3339 in UTC with `Z`.
pub fn rfc3339(micros: i64) -> String {
    chrono::DateTime::from_timestamp_micros(micros).unwrap().to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
}

/// Posts sorted newest first by (createdAt, uri), as the API pages them.
pub fn newest_first(posts: &[ExpectedPost]) -> Vec<String> {
    let mut sorted: Vec<&ExpectedPost> = posts.iter().collect();
    sorted.sort_by(|a, b| (b.created_at_us, &b.uri).cmp(&(a.created_at_us, &a.uri)));
    sorted.into_iter().map(|p| p.uri.clone()).collect()
}

pub fn days(posts: &[ExpectedPost]) -> BTreeSet<chrono::NaiveDate> {
    posts.iter().map(|p| chrono::DateTime::from_timestamp_micros(p.created_at_us).unwrap().date_naive()).collect()
}

/// `lang` (a bare language) matches `en`, `EN`, `en-US`...
pub fn has_lang(post: &ExpectedPost, lang: &str) -> bool {
    post.langs.iter().any(|l| {
        let l = l.to_lowercase();
        l == lang || l.starts_with(&format!("{lang}-"))
    })
}

pub fn count(posts: &[ExpectedPost], keep: impl Fn(&ExpectedPost) -> bool) -> usize {
    posts.iter().filter(|p| keep(p)).count()
}
