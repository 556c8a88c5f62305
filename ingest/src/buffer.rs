//! The Redis stream buffer between ingest and the flusher, and the dead-letter stream.
//!
//! This is the one versioned codec of buffered rows. A stream entry holds a batch of rows:
//! field `b2` is the batch (postcard, a compact positional binary encoding of `Vec<Entry>`)
//! and field `n` its number of rows. One entry per batch keeps Redis's per-entry costs (on
//! both sides of the socket) off the per-post path. Entries of version 1 (one row each, as
//! JSON, in `p1`, `d1` or `a1`) are still read, so an upgrade never strands buffered rows.
//! A reader that meets an unknown field name knows the entry came from a newer writer.
//!
//! Beside the stream, `{namespace}:buffer:rows` counts the rows of version-2 entries not yet
//! flushed: appended and acknowledged in the same transactions as the entries themselves.
//!
//! Redis is volatile: nothing here is durable; the durable cursor is.

use std::time::Duration;

use anyhow::Context;
use lake::model::{AccountEvent, Delete, Post};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use serde::{Deserialize, Serialize};

use crate::decode::Drop;

/// The field holding a batch of rows (version 2).
pub const BATCH_FIELD_V2: &str = "b2";
/// The field holding a batch's number of rows.
pub const ROWS_FIELD: &str = "n";
/// The field holding a v1-encoded post in a buffer entry.
pub const POST_FIELD_V1: &str = "p1";
/// The field holding a v1-encoded post deletion in a buffer entry.
pub const DELETE_FIELD_V1: &str = "d1";
/// The field holding a v1-encoded identity or account event in a buffer entry.
pub const ACCOUNT_FIELD_V1: &str = "a1";
/// Every field holding rows that this version reads; an entry with another is from a newer
/// writer.
pub const KNOWN_FIELDS: [&str; 4] = [BATCH_FIELD_V2, POST_FIELD_V1, DELETE_FIELD_V1, ACCOUNT_FIELD_V1];
/// Raw event bytes kept with a dead letter, at most.
pub const DEAD_LETTER_RAW_BYTES: usize = 16 * 1024;
/// Dead letters kept, approximately (oldest trimmed first).
pub const DEAD_LETTER_MAX_LEN: usize = 100_000;

/// The Redis keys of one Skyglass deployment, under a namespace prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keys {
    /// The stream of buffered batches.
    pub posts: String,
    /// The number of rows in the stream's version-2 batches.
    pub rows: String,
    pub dead_letters: String,
    pub flusher_group: String,
}

impl Keys {
    pub fn new(namespace: &str) -> Keys {
        Keys {
            posts: format!("{namespace}:buffer:posts"),
            rows: format!("{namespace}:buffer:rows"),
            dead_letters: format!("{namespace}:dlq"),
            flusher_group: "flushers".to_owned(),
        }
    }
}

impl Default for Keys {
    fn default() -> Self {
        Keys::new("skyglass")
    }
}

/// One buffered row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Entry {
    Post(Box<Post>),
    Delete(Delete),
    Account(AccountEvent),
}

/// Encodes a batch of rows as the value of [`BATCH_FIELD_V2`].
pub fn encode_batch(entries: &[Entry]) -> Vec<u8> {
    postcard::to_allocvec(entries).expect("rows always serialise")
}

/// Decodes the rows of one stream entry from its field name and value.
pub fn decode_entry(field: &str, bytes: &[u8]) -> anyhow::Result<Vec<Entry>> {
    let one = |entry| Ok(vec![entry]);
    match field {
        BATCH_FIELD_V2 => postcard::from_bytes(bytes).context("failed to decode a buffered batch"),
        POST_FIELD_V1 => one(Entry::Post(serde_json::from_slice(bytes).context("failed to decode buffered post")?)),
        DELETE_FIELD_V1 => {
            one(Entry::Delete(serde_json::from_slice(bytes).context("failed to decode buffered delete")?))
        }
        ACCOUNT_FIELD_V1 => {
            one(Entry::Account(serde_json::from_slice(bytes).context("failed to decode buffered account event")?))
        }
        other => anyhow::bail!("unknown buffer field `{other}` (written by a newer version?)"),
    }
}

/// Whether a Redis error is an outage (connection refused, dropped, timed out) that a retry
/// may outlive, rather than a bad command.
pub fn is_outage(error: &redis::RedisError) -> bool {
    // LOADING: restarting with a dataset; READONLY: a replica after a failover; OOM: full
    // (the flusher fell behind): all pass, so wait and retry (backpressure on the source).
    // A reply cut short by a dying connection surfaces as a parse or type error with no server
    // code: an outage too (a retry shows whether it lasts; warnings say so meanwhile).
    let busy = matches!(error.code(), Some("LOADING" | "READONLY" | "OOM" | "BUSY" | "TRYAGAIN"));
    let cut_short = error.code().is_none();
    busy || cut_short
        || error.is_io_error()
        || error.is_connection_refusal()
        || error.is_connection_dropped()
        || error.is_timeout()
}

/// The delay before retry `attempt` (0-based) after an outage: 100 ms doubling to 5 s.
pub fn outage_backoff(attempt: u32) -> Duration {
    Duration::from_millis(100u64.saturating_mul(1 << attempt.min(6))).min(Duration::from_secs(5))
}

/// Opens a reconnecting connection to Redis. Operations time out after `response_timeout`.
pub async fn connect(url: &str, response_timeout: Duration) -> anyhow::Result<ConnectionManager> {
    let client = redis::Client::open(url).with_context(|| format!("invalid redis url {url}"))?;
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(2)))
        .set_response_timeout(Some(response_timeout));
    ConnectionManager::new_with_config(client, config)
        .await
        .with_context(|| format!("failed to connect to redis at {url}"))
}

/// Appends entries to the buffer stream as one batch (and counts its rows), and dropped events
/// to the dead-letter stream with their reason, detail and (capped) raw bytes, in one
/// transaction: one round trip, one outcome.
pub async fn append(
    conn: &mut ConnectionManager,
    keys: &Keys,
    entries: &[Entry],
    drops: &[(Drop, Vec<u8>)],
) -> Result<(), redis::RedisError> {
    if entries.is_empty() && drops.is_empty() {
        return Ok(());
    }
    let mut pipe = redis::pipe();
    pipe.atomic();
    if !entries.is_empty() {
        pipe.cmd("XADD")
            .arg(&keys.posts)
            .arg("*")
            .arg(ROWS_FIELD)
            .arg(entries.len())
            .arg(BATCH_FIELD_V2)
            .arg(encode_batch(entries))
            .ignore();
        pipe.cmd("INCRBY").arg(&keys.rows).arg(entries.len()).ignore();
    }
    for (drop, raw) in drops {
        let raw = &raw[..raw.len().min(DEAD_LETTER_RAW_BYTES)];
        pipe.cmd("XADD")
            .arg(&keys.dead_letters)
            .arg("MAXLEN")
            .arg("~")
            .arg(DEAD_LETTER_MAX_LEN)
            .arg("*")
            .arg("reason")
            .arg(drop.reason.as_str())
            .arg("detail")
            .arg(&drop.detail)
            .arg("raw")
            .arg(raw)
            .ignore();
    }
    let () = pipe.query_async(conn).await?;
    metrics::counter!(crate::metrics::BUFFER_APPENDED).increment(entries.len() as u64);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use lake::model::EmbedType;

    #[test]
    fn batches_round_trip_and_version_1_entries_still_decode() {
        let post = Post {
            uri: "at://did:plc:a/app.bsky.feed.post/1".into(),
            text: "日本 🎉".into(),
            langs: vec!["ja".into()],
            reply_parent: Some("at://p".into()),
            embed_type: EmbedType::RecordWithMedia,
            image_count: 3,
            hashtags: vec!["猫".into()],
            created_at_us: -5,
            ..Post::default()
        };
        let delete =
            Delete { uri: "at://did:plc:a/app.bsky.feed.post/1".into(), did: "did:plc:a".into(), deleted_at_us: 9 };
        let account = AccountEvent {
            did: "did:plc:a".into(),
            seen_at_us: 3,
            handle: Some("a.test".into()),
            active: Some(false),
            status: Some("takendown".into()),
        };
        let entries = vec![Entry::Post(Box::new(post.clone())), Entry::Delete(delete.clone()), Entry::Account(account)];
        assert_eq!(decode_entry(BATCH_FIELD_V2, &encode_batch(&entries)).unwrap(), entries);
        assert_eq!(decode_entry(BATCH_FIELD_V2, &encode_batch(&[])).unwrap(), vec![]);
        // Version 1, one row per entry, as JSON: still read.
        let v1 = decode_entry(POST_FIELD_V1, &serde_json::to_vec(&post).unwrap()).unwrap();
        assert_eq!(v1, vec![Entry::Post(Box::new(post))]);
        let v1 = decode_entry(DELETE_FIELD_V1, &serde_json::to_vec(&delete).unwrap()).unwrap();
        assert_eq!(v1, vec![Entry::Delete(delete)]);

        assert!(decode_entry(POST_FIELD_V1, b"{not json").is_err());
        assert!(decode_entry(BATCH_FIELD_V2, b"\x05\xff").is_err());
        assert!(decode_entry("p9", b"{}").unwrap_err().to_string().contains("newer"));
    }
}
