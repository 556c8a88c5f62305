//! The Redis stream buffer between ingest and the flusher, and the dead-letter stream.
//!
//! This is the one versioned codec of buffered rows. A stream entry stands for a batch of
//! rows: field `k3` names the batch, whose rows (postcard, a compact positional binary
//! encoding of `Vec<Entry>`) are the value of the key `{namespace}:buffer:batch:{name}`, and
//! field `n` counts them. The key, the entry and the count are written in one transaction and
//! removed in one. One entry per batch keeps Redis's per-entry costs off the per-post path;
//! keeping the rows beside the stream lets the process that appended a batch hand it to its
//! own flusher in memory ([`Handoff`]) without reading it back, while any other reader (another
//! flusher, a restart, the claim of a dead flusher's entries) fetches it from Redis.
//!
//! Older entries are still read, so an upgrade never strands buffered rows: version 2 (the
//! batch inline, in field `b2`) and version 1 (one row each, as JSON, in `p1`, `d1` or `a1`).
//! A reader that meets an unknown field name knows the entry came from a newer writer.
//!
//! Beside the stream, `{namespace}:buffer:rows` counts the rows of version-2 and -3 entries
//! not yet flushed.
//!
//! Redis is volatile: nothing here is durable; the durable cursor is.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use lake::model::{AccountEvent, Delete, Interaction, InteractionDelete, Post};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use serde::{Deserialize, Serialize};

use crate::decode::Drop;

/// The field naming a batch whose rows are under [`Keys::batch`] (version 3).
pub const BATCH_NAME_FIELD_V3: &str = "k3";
/// The field holding a batch of rows inline (version 2).
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
pub const KNOWN_FIELDS: [&str; 5] =
    [BATCH_NAME_FIELD_V3, BATCH_FIELD_V2, POST_FIELD_V1, DELETE_FIELD_V1, ACCOUNT_FIELD_V1];
/// Raw event bytes kept with a dead letter, at most.
pub const DEAD_LETTER_RAW_BYTES: usize = 16 * 1024;
/// Dead letters kept, approximately (oldest trimmed first).
pub const DEAD_LETTER_MAX_LEN: usize = 100_000;

/// The Redis keys of one Skyglass deployment, under a namespace prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keys {
    /// The stream of buffered batches.
    pub posts: String,
    /// The number of rows in the stream's version-2 and -3 batches.
    pub rows: String,
    /// The prefix of the keys holding version-3 batches.
    pub batch_prefix: String,
    pub dead_letters: String,
    pub flusher_group: String,
}

impl Keys {
    pub fn new(namespace: &str) -> Keys {
        Keys {
            posts: format!("{namespace}:buffer:posts"),
            rows: format!("{namespace}:buffer:rows"),
            batch_prefix: format!("{namespace}:buffer:batch:"),
            dead_letters: format!("{namespace}:dlq"),
            flusher_group: "flushers".to_owned(),
        }
    }
}

impl Keys {
    /// The key holding the rows of the version-3 batch `name`.
    pub fn batch(&self, name: &str) -> String {
        format!("{}{name}", self.batch_prefix)
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
    // New variants go last: postcard names a variant by its index.
    Interaction(Interaction),
    InteractionDelete(InteractionDelete),
}

/// A name for the next batch this process appends: unique across processes and restarts (the
/// process id, its start time in nanoseconds, and a counter).
fn next_batch_name() -> String {
    static START_NS: std::sync::LazyLock<u128> = std::sync::LazyLock::new(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos())
    });
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    format!("{:x}-{:x}-{:x}", std::process::id(), *START_NS, COUNTER.fetch_add(1, Ordering::Relaxed))
}

/// Batches appended by this process, held for its own flusher so that it need not read them
/// back from Redis (decoding them again was an eighth of ingest's work). Redis holds each all
/// the same, so a batch missing here (read by another process, or after a restart, or evicted)
/// is fetched from there. A batch is held at most [`HANDOFF_MAX_AGE`] and at most
/// [`HANDOFF_MAX_BATCHES`] are held, so a batch that another process's flusher takes costs
/// memory only for a while.
#[derive(Default)]
pub struct Handoff {
    batches: Mutex<HashMap<String, Held>>,
    arrivals: AtomicU64,
}

/// A batch in the [`Handoff`].
struct Held {
    arrival: u64,
    since: Instant,
    rows: Vec<Entry>,
}

/// How long a batch waits in the [`Handoff`] for this process's flusher.
pub const HANDOFF_MAX_AGE: Duration = Duration::from_secs(60);
/// Batches held in the [`Handoff`] at most (of up to a thousand rows each).
pub const HANDOFF_MAX_BATCHES: usize = 1_000;

impl Handoff {
    pub fn put(&self, name: String, rows: Vec<Entry>) {
        let arrival = self.arrivals.fetch_add(1, Ordering::Relaxed);
        let mut batches = self.batches.lock().unwrap_or_else(|p| p.into_inner());
        batches.retain(|_, held| held.since.elapsed() < HANDOFF_MAX_AGE);
        if batches.len() >= HANDOFF_MAX_BATCHES {
            let oldest = batches.iter().min_by_key(|(_, held)| held.arrival).map(|(name, _)| name.clone());
            if let Some(oldest) = oldest {
                batches.remove(&oldest);
            }
        }
        batches.insert(name, Held { arrival, since: Instant::now(), rows });
    }

    /// The rows of batch `name`, if this process appended it and still holds it.
    pub fn take(&self, name: &str) -> Option<Vec<Entry>> {
        self.batches.lock().unwrap_or_else(|p| p.into_inner()).remove(name).map(|held| held.rows)
    }

    /// Batches held now.
    pub fn len(&self) -> usize {
        self.batches.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A batch of rows encoded for the buffer, under a fresh name.
pub struct Batch {
    name: String,
    rows: usize,
    encoded: Vec<u8>,
}

impl Batch {
    pub fn new(entries: &[Entry]) -> Batch {
        Batch { name: next_batch_name(), rows: entries.len(), encoded: encode_batch(entries) }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// A new name for the same rows. An append whose reply was lost may have been applied, so
    /// its retry must not make a second entry naming the same key (the first one flushed would
    /// delete the key from under the second): it appends a copy instead, whose repeated posts
    /// the flusher leaves out.
    pub fn rename(&mut self) {
        self.name = next_batch_name();
    }
}

/// Encodes a batch of rows as the value of a batch key (and of [`BATCH_FIELD_V2`]).
pub fn encode_batch(entries: &[Entry]) -> Vec<u8> {
    postcard::to_allocvec(entries).expect("rows always serialise")
}

/// Decodes the rows of one stream entry from its field name and value (for version 3, the
/// value of the batch key the entry names).
pub fn decode_entry(field: &str, bytes: &[u8]) -> anyhow::Result<Vec<Entry>> {
    let one = |entry| Ok(vec![entry]);
    match field {
        BATCH_NAME_FIELD_V3 | BATCH_FIELD_V2 => {
            postcard::from_bytes(bytes).context("failed to decode a buffered batch")
        }
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

/// Appends a batch to the buffer (its rows under its batch key, an entry naming it in the
/// stream, its rows counted), and dropped events to the dead-letter stream with their reason,
/// detail and (capped) raw bytes, in one transaction: one round trip, one outcome.
pub async fn append(
    conn: &mut ConnectionManager,
    keys: &Keys,
    batch: Option<&Batch>,
    drops: &[(Drop, Vec<u8>)],
) -> Result<(), redis::RedisError> {
    let batch = batch.filter(|b| b.rows > 0);
    if batch.is_none() && drops.is_empty() {
        return Ok(());
    }
    let mut pipe = redis::pipe();
    pipe.atomic();
    if let Some(batch) = batch {
        pipe.cmd("SET").arg(keys.batch(&batch.name)).arg(&batch.encoded).ignore();
        pipe.cmd("XADD")
            .arg(&keys.posts)
            .arg("*")
            .arg(ROWS_FIELD)
            .arg(batch.rows)
            .arg(BATCH_NAME_FIELD_V3)
            .arg(&batch.name)
            .ignore();
        pipe.cmd("INCRBY").arg(&keys.rows).arg(batch.rows).ignore();
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
    metrics::counter!(crate::metrics::BUFFER_APPENDED).increment(batch.map_or(0, |b| b.rows) as u64);
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
            did: "did:plc:a".into(),
            rkey: "1".into(),
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
        // Version 3 names a key that holds what version 2 held inline.
        assert_eq!(decode_entry(BATCH_NAME_FIELD_V3, &encode_batch(&entries)).unwrap(), entries);
    }

    #[test]
    fn batch_names_are_unique_and_keyed_under_the_namespace() {
        let (a, b) = (next_batch_name(), next_batch_name());
        assert_ne!(a, b);
        assert!(Keys::new("ns").batch(&a).starts_with("ns:buffer:batch:"));
    }

    #[test]
    fn the_handoff_gives_each_batch_once_and_holds_a_bounded_number() {
        let handoff = Handoff::default();
        let row =
            |n: i64| Entry::Delete(Delete { uri: format!("at://{n}"), did: "did:plc:a".into(), deleted_at_us: n });
        handoff.put("a".into(), vec![row(1)]);
        assert_eq!(handoff.take("a"), Some(vec![row(1)]));
        assert_eq!(handoff.take("a"), None, "taken once");
        assert_eq!(handoff.take("never"), None);
        for n in 0..HANDOFF_MAX_BATCHES as i64 + 10 {
            handoff.put(format!("b{n}"), vec![row(n)]);
        }
        assert_eq!(handoff.len(), HANDOFF_MAX_BATCHES);
        assert_eq!(handoff.take("b0"), None, "the oldest went first");
        assert!(handoff.take(&format!("b{}", HANDOFF_MAX_BATCHES + 9)).is_some());
    }
}
