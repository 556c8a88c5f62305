//! The hot tier: posts still in the Redis buffer, answered with the lake's, so a post shows in
//! `posts` about a second after ingest accepted it while flushes stay minutes apart.
//!
//! A task tails the buffer stream (`XREAD`, from its start), reads each batch's rows, and keeps
//! the posts (one per uri, less those deleted in the buffer) whose event time is after what the
//! lake's flushes wrote through (`CatalogState::flushed_through_us`): those are in no file yet;
//! and the deletes and account states since then. After a change, at most every [`REFRESH`], it
//! hands them to the engine ([`lake::exec::Engine::set_hot`]), which unions the posts with the
//! files' in `posts` and applies the deletes and account states to both: a post deleted, or an
//! account taken down, leaves answers about a second later, flushed or not. Rows replayed from a
//! time the flushes already passed (a file ingested again) show from their own flush on.
//!
//! What the engine's hot tier holds is named by its [`HotState::version`]: the last buffer entry
//! it took in and the flush watermark. Every replica tailing the same buffer holds the same rows
//! at the same version, so replicas sharing the result cache share its hot answers too.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ingest::buffer::{self, Entry, Keys};
use lake::exec::{Engine, HotTier};
use lake::model::Post;
use redis::streams::{StreamId, StreamReadOptions, StreamReadReply};
use tokio::sync::watch;
use tracing::{debug, warn};

/// The most often the engine's hot table is rebuilt.
pub const REFRESH: Duration = Duration::from_millis(400);
/// How long one read waits for new entries.
const BLOCK: Duration = Duration::from_millis(250);
/// Entries per read (each a batch of up to a thousand rows).
const ENTRIES_PER_READ: usize = 200;

/// What the hot tier holds, for freshness and cache keys; shared with the HTTP handlers.
#[derive(Debug)]
pub struct HotState {
    /// What the engine's hot tier holds: `{last entry id}@{flushed through}` (see the module).
    version: Mutex<Arc<str>>,
    /// The newest event time in the buffer or the lake, UTC microseconds (0: none yet).
    ingested_through_us: AtomicI64,
    /// What the lake's flushes wrote through, UTC microseconds (0: none yet).
    flushed_through_us: AtomicI64,
    posts: AtomicU64,
    /// Each post the first time it is seen in the buffer, for live subscriptions.
    pub live: tokio::sync::broadcast::Sender<Arc<Post>>,
}

/// Posts a live subscriber may fall behind by before it is dropped.
pub const LIVE_CAPACITY: usize = 4096;

impl Default for HotState {
    fn default() -> Self {
        HotState {
            version: Mutex::new(version_name("0-0", 0)),
            ingested_through_us: AtomicI64::new(0),
            flushed_through_us: AtomicI64::new(0),
            posts: AtomicU64::new(0),
            live: tokio::sync::broadcast::channel(LIVE_CAPACITY).0,
        }
    }
}

/// How fresh an answer is: what it includes, by event time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Freshness {
    pub ingested_through_us: Option<i64>,
    pub flushed_through_us: Option<i64>,
}

impl Freshness {
    /// `extensions.freshness`: `ingestedThrough` and `flushedThrough` (RFC 3339) and `lagMs`,
    /// now minus `ingestedThrough`.
    pub fn to_json(self) -> serde_json::Value {
        let time =
            |us: Option<i64>| us.and_then(chrono::DateTime::from_timestamp_micros).map(crate::export::spec::rfc3339);
        let lag = self.ingested_through_us.map(|us| (chrono::Utc::now().timestamp_micros() - us).max(0) / 1000);
        serde_json::json!({
            "ingestedThrough": time(self.ingested_through_us),
            "flushedThrough": time(self.flushed_through_us),
            "lagMs": lag,
        })
    }
}

impl HotState {
    /// A hot tier, empty yet, over a lake flushed through `flushed_through_us`.
    pub fn new(flushed_through_us: Option<i64>) -> HotState {
        let state = HotState::default();
        state.flushed_through_us.store(flushed_through_us.unwrap_or(0), Ordering::Relaxed);
        state.ingested_through_us.store(flushed_through_us.unwrap_or(0), Ordering::Relaxed);
        *state.version.lock().unwrap_or_else(|p| p.into_inner()) = version_name("0-0", flushed_through_us.unwrap_or(0));
        state
    }

    /// What the engine's hot tier holds now, for cache keys.
    pub fn version(&self) -> Arc<str> {
        self.version.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn posts(&self) -> u64 {
        self.posts.load(Ordering::Relaxed)
    }

    pub fn freshness(&self) -> Freshness {
        let some = |value: i64| (value > 0).then_some(value);
        let flushed = some(self.flushed_through_us.load(Ordering::Relaxed));
        let ingested = some(self.ingested_through_us.load(Ordering::Relaxed)).max(flushed);
        Freshness { ingested_through_us: ingested, flushed_through_us: flushed }
    }
}

/// The name of the hot tier holding the buffer's entries through `last_id` over a lake flushed
/// through `flushed_through_us`.
fn version_name(last_id: &str, flushed_through_us: i64) -> Arc<str> {
    format!("{last_id}@{flushed_through_us}").into()
}

/// The buffered rows the tail has seen, less what the lake has.
#[derive(Default)]
struct Buffered {
    posts: HashMap<String, Post>,
    /// Deleted uris and when, so a post buffered after its delete stays hidden.
    deleted: HashMap<String, i64>,
    /// Each DID's latest account event in the buffer: when, and whether it hides the posts.
    accounts: HashMap<String, (i64, bool)>,
    flushed_through_us: i64,
    newest_us: i64,
}

impl Buffered {
    /// Takes in rows read from the buffer; each new post of an author the buffer's account
    /// states (else the lake's, `lake_hides`) do not hide also goes to `live`.
    fn add(
        &mut self,
        rows: Vec<Entry>,
        live: &tokio::sync::broadcast::Sender<Arc<Post>>,
        lake_hides: impl Fn(&str) -> bool,
    ) -> bool {
        let mut changed = false;
        for row in rows {
            match row {
                Entry::Post(post) => {
                    self.newest_us = self.newest_us.max(post.indexed_at_us);
                    if post.indexed_at_us > self.flushed_through_us
                        && !self.deleted.contains_key(&post.uri)
                        && !self.posts.contains_key(&post.uri)
                    {
                        let hidden = match self.accounts.get(&post.did) {
                            Some((_, hides)) => *hides,
                            None => lake_hides(&post.did),
                        };
                        if !hidden {
                            // No subscriber is no error.
                            let _ = live.send(Arc::new((*post).clone()));
                        }
                        self.posts.insert(post.uri.clone(), *post);
                        changed = true;
                    }
                }
                Entry::Delete(delete) => {
                    self.newest_us = self.newest_us.max(delete.deleted_at_us);
                    changed |= self.posts.remove(&delete.uri).is_some();
                    if delete.deleted_at_us > self.flushed_through_us {
                        // It hides the post wherever it is, files included.
                        changed |= self.deleted.insert(delete.uri, delete.deleted_at_us).is_none();
                    }
                }
                // Likes and reposts count once flushed: the hot tier holds posts.
                Entry::Interaction(interaction) => self.newest_us = self.newest_us.max(interaction.indexed_at_us),
                Entry::InteractionDelete(delete) => self.newest_us = self.newest_us.max(delete.deleted_at_us),
                Entry::Account(event) => {
                    self.newest_us = self.newest_us.max(event.seen_at_us);
                    let Some(active) = event.active else { continue };
                    let status = event.status.as_deref().unwrap_or_default();
                    let hides = !active && !lake::model::VISIBLE_INACTIVE_STATUSES.contains(&status);
                    match self.accounts.get_mut(&event.did) {
                        Some(latest) if event.seen_at_us >= latest.0 => {
                            changed |= latest.1 != hides;
                            *latest = (event.seen_at_us, hides);
                        }
                        Some(_) => {}
                        // One the lake's flushes passed is the lake's to apply.
                        None if event.seen_at_us <= self.flushed_through_us => {}
                        None => {
                            self.accounts.insert(event.did, (event.seen_at_us, hides));
                            changed = true;
                        }
                    }
                }
            }
        }
        changed
    }

    /// Forgets what the lake's flushes have written.
    fn flushed_through(&mut self, through_us: i64) -> bool {
        if through_us <= self.flushed_through_us {
            return false;
        }
        self.flushed_through_us = through_us;
        let before = (self.posts.len(), self.deleted.len(), self.accounts.len());
        self.posts.retain(|_, post| post.indexed_at_us > through_us);
        self.deleted.retain(|_, at| *at > through_us);
        self.accounts.retain(|_, (at, _)| *at > through_us);
        (self.posts.len(), self.deleted.len(), self.accounts.len()) != before
    }

    /// What the engine's hot tier is to hold: the posts (but those of accounts the buffer
    /// hides), the deleted uris and the account states.
    fn tier(&self) -> (Vec<Post>, Vec<String>, Vec<(String, bool)>) {
        let hidden = |did: &str| self.accounts.get(did).is_some_and(|(_, hides)| *hides);
        (
            self.posts.values().filter(|post| !hidden(&post.did)).cloned().collect(),
            self.deleted.keys().cloned().collect(),
            self.accounts.iter().map(|(did, (_, hides))| (did.clone(), *hides)).collect(),
        )
    }
}

/// Tails the buffer into the engine's hot tier until `stop`. Redis away: it waits and goes on
/// from where it was.
pub async fn tail(
    engine: Arc<Engine>,
    redis_url: String,
    keys: Keys,
    lake: PathBuf,
    state: Arc<HotState>,
    mut stop: watch::Receiver<bool>,
) {
    let mut buffered = Buffered {
        flushed_through_us: state.flushed_through_us.load(Ordering::Relaxed),
        newest_us: state.ingested_through_us.load(Ordering::Relaxed),
        ..Buffered::default()
    };
    let mut last_id = "0-0".to_owned();
    let mut connection = None;
    let mut dirty = false;
    let mut last_set: Option<Instant> = None;
    let mut attempt = 0;
    let catalog = lake::catalog::StateCache::new(&lake);
    while !*stop.borrow() {
        if connection.is_none() {
            connection = buffer::connect(&redis_url, BLOCK + Duration::from_secs(1)).await.ok();
        }
        let read = match connection.as_mut() {
            Some(connection) => read(connection, &keys, &last_id).await,
            None => Err(anyhow::anyhow!("Redis cannot be reached")),
        };
        match read {
            Ok(entries) => {
                attempt = 0;
                for (id, rows) in entries {
                    last_id = id;
                    dirty |= buffered.add(rows, &state.live, |did| engine.hides_author(did));
                }
            }
            Err(error) => {
                debug!(error = format!("{error:#}"), "the hot tier cannot read the buffer; retrying");
                connection = None;
                tokio::select! {
                    () = tokio::time::sleep(buffer::outage_backoff(attempt)) => {}
                    _ = stop.wait_for(|stopping| *stopping) => return,
                }
                attempt += 1;
            }
        }
        // A stat, unless a flush published.
        if let Some(through) = catalog.read().ok().and_then(|state| state.flushed_through_us) {
            dirty |= buffered.flushed_through(through);
        }
        state.flushed_through_us.store(buffered.flushed_through_us, Ordering::Relaxed);
        // `ingestedThrough` is a promise about what answers include: it moves only once the
        // engine holds the rows (an answer's freshness, read before it runs, is a lower bound).
        if !dirty {
            state.ingested_through_us.store(buffered.newest_us, Ordering::Relaxed);
            // Nothing changed since the engine's tier was set: it holds what the entries up to
            // here give, and says so, as every replica that read as far does.
            let version = version_name(&last_id, buffered.flushed_through_us);
            let mut current = state.version.lock().unwrap_or_else(|p| p.into_inner());
            if *current != version {
                *current = version;
            }
        }
        if dirty && last_set.is_none_or(|at| at.elapsed() >= REFRESH) {
            let (posts, deleted, accounts) = buffered.tier();
            let count = posts.len() as u64;
            let through = buffered.newest_us;
            let version = version_name(&last_id, buffered.flushed_through_us);
            let engine = engine.clone();
            let set = move || engine.set_hot(HotTier { posts: &posts, deleted: &deleted, accounts: &accounts });
            match tokio::task::spawn_blocking(set).await {
                Ok(Ok(())) => {
                    state.posts.store(count, Ordering::Relaxed);
                    *state.version.lock().unwrap_or_else(|p| p.into_inner()) = version;
                    state.ingested_through_us.store(through, Ordering::Relaxed);
                    metrics::gauge!(crate::metrics::HOT_POSTS).set(count as f64);
                    dirty = false;
                    last_set = Some(Instant::now());
                }
                Ok(Err(error)) => warn!(%error, "the hot tier could not be updated"),
                Err(error) => warn!(%error, "the hot tier task failed"),
            }
        }
    }
}

/// New stream entries after `last_id`, with their rows (batches fetched from their keys; one
/// already flushed and removed is skipped: its rows are in the lake).
async fn read(
    connection: &mut redis::aio::ConnectionManager,
    keys: &Keys,
    last_id: &str,
) -> anyhow::Result<Vec<(String, Vec<Entry>)>> {
    let options = StreamReadOptions::default().count(ENTRIES_PER_READ).block(BLOCK.as_millis() as usize);
    let reply: Option<StreamReadReply> =
        redis::AsyncCommands::xread_options(connection, &[&keys.posts], &[last_id], &options).await?;
    let entries: Vec<StreamId> = reply.into_iter().flat_map(|r| r.keys).flat_map(|k| k.ids).collect();
    let mut out = Vec::with_capacity(entries.len());
    for entry in entries {
        let Some((field, value)) = entry.map.iter().find(|(field, _)| field.as_str() != buffer::ROWS_FIELD) else {
            out.push((entry.id, Vec::new()));
            continue;
        };
        let bytes = redis::from_redis_value_ref::<Vec<u8>>(value).unwrap_or_default();
        let rows = if field == buffer::BATCH_NAME_FIELD_V3 {
            let name = String::from_utf8_lossy(&bytes).into_owned();
            let batch: Option<Vec<u8>> = redis::cmd("GET").arg(keys.batch(&name)).query_async(connection).await?;
            batch.map(|bytes| buffer::decode_entry(field, &bytes)).transpose()
        } else {
            buffer::decode_entry(field, &bytes).map(Some)
        };
        // A row that does not decode is the flusher's to dead-letter; the hot tier skips it.
        out.push((entry.id, rows.ok().flatten().unwrap_or_default()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use lake::model::{AccountEvent, Delete};

    fn post(did: &str, rkey: &str, at: i64) -> Entry {
        let uri = format!("at://{did}/app.bsky.feed.post/{rkey}");
        Entry::Post(Box::new(Post { uri, did: did.into(), rkey: rkey.into(), indexed_at_us: at, ..Post::default() }))
    }

    fn takedown(did: &str, at: i64) -> Entry {
        let status = Some("takendown".to_owned());
        Entry::Account(AccountEvent { did: did.into(), seen_at_us: at, active: Some(false), status, handle: None })
    }

    /// What the tail keeps: posts after the flush watermark, the deletes and account states that
    /// change the answers, and a live feed without hidden authors.
    #[test]
    fn the_buffer_keeps_what_changes_answers_and_streams_visible_posts() {
        let (live, mut received) = tokio::sync::broadcast::channel(16);
        let mut buffered = Buffered { flushed_through_us: 100, ..Buffered::default() };
        let lake_hides = |did: &str| did == "did:plc:hidden";
        assert!(!buffered.add(vec![post("did:plc:a", "old", 90)], &live, lake_hides), "flushed already");
        let rows = vec![post("did:plc:a", "1", 101), post("did:plc:hidden", "2", 102), post("did:plc:a", "1", 103)];
        assert!(buffered.add(rows, &live, lake_hides));
        assert_eq!(buffered.posts.len(), 2, "one per uri");
        // A takedown in the buffer, and one older than the flushes (the lake's to apply).
        assert!(buffered.add(vec![takedown("did:plc:b", 104)], &live, lake_hides));
        assert!(!buffered.add(vec![takedown("did:plc:c", 99)], &live, lake_hides));
        assert!(buffered.add(vec![post("did:plc:b", "3", 105)], &live, lake_hides));
        assert_eq!(buffered.posts.len(), 3);
        let streamed: Vec<String> = std::iter::from_fn(|| received.try_recv().ok()).map(|p| p.uri.clone()).collect();
        assert_eq!(streamed, ["at://did:plc:a/app.bsky.feed.post/1"], "hidden authors' posts stream to no one");

        // A delete of a buffered post changes the tier, even one older than the flushes.
        let delete = |rkey: &str, at| {
            Entry::Delete(Delete {
                uri: format!("at://did:plc:a/app.bsky.feed.post/{rkey}"),
                did: "did:plc:a".into(),
                deleted_at_us: at,
            })
        };
        assert!(buffered.add(vec![delete("1", 99)], &live, lake_hides));
        assert!(!buffered.posts.contains_key("at://did:plc:a/app.bsky.feed.post/1"));
        assert!(buffered.add(vec![delete("9", 106)], &live, lake_hides), "a delete of a flushed post hides it");
        let (posts, deleted, accounts) = buffered.tier();
        assert_eq!(posts.len(), 1, "the taken-down author's post is left out: {posts:?}");
        assert_eq!(deleted, ["at://did:plc:a/app.bsky.feed.post/9"]);
        assert_eq!(accounts, [("did:plc:b".to_owned(), true)]);

        // A flush through 106 takes it all out.
        assert!(buffered.flushed_through(106));
        assert_eq!(buffered.tier(), (Vec::new(), Vec::new(), Vec::new()));
    }
}
