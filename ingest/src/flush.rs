//! The flusher: reads buffered posts from the Redis stream through a consumer group and moves
//! them into the lake.
//!
//! One flush, in this order, always (the durability invariant):
//! write a temp file, fsync, rename into place (per day) → publish the new lake generation →
//! advance the durable cursor → XACK and XDEL the entries. A crash anywhere before the XACK
//! leaves the entries pending; they are read again and rewritten under the same file name
//! (named from their stream-id range), and any duplicate row is removed by uri at query time.

use std::borrow::Cow;
use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use lake::model::{AccountEvent, Delete, Interaction, InteractionDelete, Post};
use lake::unique::Keyed;
use metrics::{counter, gauge, histogram};
use redis::aio::ConnectionManager;
use redis::streams::{StreamAutoClaimOptions, StreamAutoClaimReply, StreamId, StreamReadOptions, StreamReadReply};
use redis::{AsyncCommands, RedisError};
use tokio::sync::watch;
use tracing::{Instrument, info, info_span, warn};

use crate::buffer::{self, Entry, Handoff, Keys};
use crate::decode::{Drop, DropReason};
use crate::metrics as m;

#[derive(Debug, Clone)]
pub struct FlushConfig {
    /// Flush when the oldest unflushed row is this old.
    pub interval: Duration,
    /// Flush when this many rows are waiting.
    pub max_rows: usize,
    /// The consumer name in the flusher group. Keep it stable across restarts of one worker,
    /// so the worker finds its own pending entries again.
    pub consumer: String,
    /// Entries another consumer of the group read and left unacknowledged this long are
    /// claimed (XAUTOCLAIM): that flusher died. Must exceed `interval`, or live flushers'
    /// waiting entries would be taken from them.
    pub claim_after: Duration,
}

impl Default for FlushConfig {
    fn default() -> Self {
        let interval = Duration::from_secs(300);
        FlushConfig {
            interval,
            max_rows: 200_000,
            consumer: "flusher-1".to_owned(),
            claim_after: claim_after(interval),
        }
    }
}

/// What one flush did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlushReport {
    pub rows: usize,
    pub files: usize,
    pub bytes: u64,
    pub generation: u64,
}

/// How a flusher's run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flushed {
    /// Asked to stop, it read the stream to its end and flushed everything.
    Drained,
    /// Redis came back without the buffer (restarted empty): what the flusher held is flushed,
    /// the rest must be replayed from the durable cursor.
    RedisLost,
}

/// The default [`FlushConfig::claim_after`] for a flush interval: twice it, plus a minute.
pub fn claim_after(interval: Duration) -> Duration {
    interval.saturating_mul(2) + Duration::from_secs(60)
}

/// Failed reads (about 20 s of backoff) after which a flusher asked to stop gives up on Redis.
const STOP_OUTAGE_ATTEMPTS: u32 = 8;

/// Failed flushes (about 30 s of backoff) after which a flusher asked to stop gives up; what it
/// could not write stays pending in Redis for the next run.
const STOP_FLUSH_ATTEMPTS: u32 = 6;

/// How long a flusher waits before trying a failed flush again (`failures` so far, from 1):
/// half a second, doubling, at most 30 s.
fn flush_backoff(failures: u32) -> Duration {
    Duration::from_millis(500u64.saturating_mul(1 << failures.saturating_sub(1).min(6))).min(Duration::from_secs(30))
}

/// How often a flusher looks for entries abandoned by dead flushers.
const CLAIM_EVERY: Duration = Duration::from_secs(30);
/// How often the buffer's depth is sampled for [`m::BUFFER_DEPTH`].
const DEPTH_SAMPLE_EVERY: Duration = Duration::from_secs(5);

/// Stream entries read per XREADGROUP call (an entry is a batch of up to a thousand rows).
const READ_COUNT: usize = 50;
/// How long one read blocks when the stream is empty (below the connection's response timeout).
const READ_BLOCK: Duration = Duration::from_millis(200);

/// One stream entry read and not yet flushed.
struct Waiting {
    id: String,
    rows: Vec<Entry>,
    /// Its rows counted in `Keys::rows` (version-2 and -3 batches).
    counted: usize,
    /// The name of its version-3 batch, whose key goes when the entry does.
    batch: Option<String>,
}

/// A stream entry whose rows cannot be read: it goes to the dead-letter stream.
struct Corrupt {
    id: String,
    detail: String,
    bytes: Vec<u8>,
    counted: usize,
    batch: Option<String>,
}

impl Corrupt {
    fn new(id: &str, detail: &str, bytes: Vec<u8>, counted: usize, batch: Option<String>) -> Corrupt {
        Corrupt { id: id.to_owned(), detail: detail.to_owned(), bytes, counted, batch }
    }
}

pub struct Flusher {
    conn: ConnectionManager,
    /// Which durable cursor flushes advance: the kind of source feeding the buffer.
    cursor: &'static str,
    keys: Keys,
    /// Batches this process appended, taken instead of reading them back from Redis.
    handoff: Arc<Handoff>,
    lake: PathBuf,
    config: FlushConfig,
    /// Stream entries read and not yet flushed.
    waiting: Vec<Waiting>,
    /// The rows in `waiting`.
    waiting_rows: usize,
    /// The stream ids in `waiting`, so a claimed entry is never taken twice.
    waiting_ids: HashSet<String>,
    last_claim: Option<Instant>,
    last_depth_sample: Option<Instant>,
    oldest_waiting_since: Option<Instant>,
    /// Whether this worker's own pending entries (from before a restart) were read back.
    history_done: bool,
    history_from: String,
    /// Set when the consumer group vanished: Redis lost the buffer.
    lost: bool,
    /// Consecutive failed reads during an outage.
    outage_attempts: u32,
    /// Consecutive failed flushes (a full disk, say).
    failed_flushes: u32,
}

impl Flusher {
    /// A flusher for the buffer under `keys`; its flushes advance the durable cursor named
    /// `cursor` (the kind of source feeding the buffer, see `SourceSpec::kind`).
    pub async fn new(
        conn: ConnectionManager,
        keys: Keys,
        handoff: Arc<Handoff>,
        lake: PathBuf,
        config: FlushConfig,
        cursor: &'static str,
    ) -> anyhow::Result<Flusher> {
        let mut flusher = Flusher {
            conn,
            cursor,
            keys,
            handoff,
            lake,
            config,
            waiting: Vec::new(),
            waiting_rows: 0,
            waiting_ids: HashSet::new(),
            last_claim: None,
            last_depth_sample: None,
            oldest_waiting_since: None,
            history_done: false,
            history_from: "0".to_owned(),
            lost: false,
            outage_attempts: 0,
            failed_flushes: 0,
        };
        flusher.ensure_group().await?;
        // What a writer killed mid-flush left behind takes space and is never read.
        let lake = flusher.lake.clone();
        let removed = tokio::task::spawn_blocking(move || {
            let lock = lake::unique::FlushLock::acquire(&lake)?;
            lake::writer::remove_orphan_temporaries(&lake, &lock)
        })
        .await
        .context("cleanup task panicked")??;
        if removed > 0 {
            info!(removed, "removed temporary files a killed writer left in the lake");
        }
        Ok(flusher)
    }

    async fn ensure_group(&mut self) -> anyhow::Result<()> {
        let created: Result<(), RedisError> =
            self.conn.xgroup_create_mkstream(&self.keys.posts, &self.keys.flusher_group, "0").await;
        match created {
            Ok(()) => Ok(()),
            Err(e) if e.code() == Some("BUSYGROUP") => Ok(()),
            Err(e) => Err(e).context("failed to create the flusher consumer group"),
        }
    }

    /// Runs until `stop` turns true, then reads what is left in the stream, flushes it and
    /// returns. Flushes whenever `max_rows` rows wait or the oldest has waited `interval`.
    pub async fn run(mut self, stop: watch::Receiver<bool>) -> anyhow::Result<Flushed> {
        loop {
            // Read the flag before reading the stream: when it is set, everything the writers
            // will ever append is already in the stream, so an empty read means drained. A read
            // that failed (Redis unreachable) means nothing of the kind.
            let stopping = *stop.borrow();
            if self.last_claim.is_none_or(|t| t.elapsed() >= CLAIM_EVERY) {
                self.claim_abandoned().await?;
            }
            if self.last_depth_sample.is_none_or(|t| t.elapsed() >= DEPTH_SAMPLE_EVERY) {
                self.sample_depth().await;
            }
            // Only an empty read of new entries (`>`) means drained, not the end of the history.
            let reading_new = self.history_done;
            let n_read = self.read(!stopping).await?;
            if self.lost {
                self.flush().await?;
                return Ok(Flushed::RedisLost);
            }
            if stopping && n_read.is_none() && self.outage_attempts >= STOP_OUTAGE_ATTEMPTS {
                // Asked to stop while Redis stays unreachable: write what is held and go. What
                // Redis still holds stays pending for the next run; the cursor covers neither.
                warn!("stopping during a redis outage: flushing what was read, the rest stays in redis");
                self.flush().await?;
                return Ok(Flushed::Drained);
            }
            let drained = stopping && reading_new && n_read == Some(0);
            let due = self.waiting_rows >= self.config.max_rows
                || self.oldest_waiting_since.is_some_and(|t| t.elapsed() >= self.config.interval);
            if (due || drained)
                && let Err(error) = self.flush().await
            {
                // Nothing was acknowledged: the entries stay pending in Redis, and are read
                // again from there once the lake takes writes again.
                self.failed_flushes += 1;
                if stopping && self.failed_flushes >= STOP_FLUSH_ATTEMPTS {
                    return Err(error.context("giving up flushing while stopping; the entries stay pending in redis"));
                }
                let wait = flush_backoff(self.failed_flushes);
                tracing::error!(
                    error = format!("{error:#}"),
                    failures = self.failed_flushes,
                    retry_in_ms = wait.as_millis() as u64,
                    "flush failed; its entries stay pending in redis and are flushed again"
                );
                self.rewind();
                tokio::time::sleep(wait).await;
                continue;
            }
            if due || drained {
                self.failed_flushes = 0;
            }
            if drained {
                info!("flusher drained the buffer and stops");
                return Ok(Flushed::Drained);
            }
        }
    }

    /// Reads the next entries (first this consumer's own pending ones, then new ones) into
    /// `waiting`, waiting a little for new ones if `block`; returns how many were read, or
    /// `None` when Redis was unreachable (after waiting a backoff) or has lost the buffer
    /// (`self.lost`). A flusher asked to stop does not block: everything is in the stream.
    async fn read(&mut self, block: bool) -> anyhow::Result<Option<usize>> {
        let from = if self.history_done { ">".to_owned() } else { self.history_from.clone() };
        let mut options =
            StreamReadOptions::default().group(&self.keys.flusher_group, &self.config.consumer).count(READ_COUNT);
        if self.history_done && block {
            options = options.block(READ_BLOCK.as_millis() as usize);
        }
        let reply: Result<Option<StreamReadReply>, RedisError> =
            self.conn.xread_options(&[&self.keys.posts], &[&from], &options).await;
        let reply = match reply {
            Ok(reply) => reply,
            Err(e) if e.code() == Some("NOGROUP") => {
                warn!("the flusher group vanished from redis: the buffer was lost");
                self.lost = true;
                return Ok(None);
            }
            Err(e) if buffer::is_outage(&e) => {
                warn!(error = %e, attempt = self.outage_attempts, "redis is unreachable; the flusher waits");
                tokio::time::sleep(buffer::outage_backoff(self.outage_attempts)).await;
                self.outage_attempts += 1;
                return Ok(None);
            }
            Err(e) => return Err(e).context("failed to read the redis buffer stream"),
        };
        self.outage_attempts = 0;
        let entries: Vec<_> = reply.into_iter().flat_map(|r| r.keys).flat_map(|k| k.ids).collect();
        if !self.history_done {
            match entries.last() {
                Some(last) => self.history_from = last.id.clone(),
                None => self.history_done = true,
            }
        }
        self.accept(&entries).await?;
        gauge!(m::BUFFER_PENDING).set(self.waiting_rows as f64);
        Ok(Some(entries.len()))
    }

    /// Takes entries into `waiting` (once each): a version-3 batch from this process's
    /// [`Handoff`] or else from its Redis key, older versions decoded from the entry. What does
    /// not decode goes to the dead letters.
    async fn accept(&mut self, entries: &[StreamId]) -> anyhow::Result<()> {
        let mut corrupt = Vec::new();
        let mut fetch = Vec::new();
        for entry in entries {
            if self.waiting_ids.contains(&entry.id) {
                continue;
            }
            let counted = entry.get::<usize>(buffer::ROWS_FIELD).unwrap_or(0);
            let Some((field, value)) = entry.map.iter().find(|(field, _)| field.as_str() != buffer::ROWS_FIELD) else {
                corrupt.push(Corrupt::new(&entry.id, "entry has no rows field", Vec::new(), counted, None));
                continue;
            };
            if !buffer::KNOWN_FIELDS.contains(&field.as_str()) {
                // Written by a newer version: not ours to read, and not ours to delete. It
                // stays pending until a flusher that knows the field claims it.
                warn!(id = %entry.id, %field, "buffer entry from a newer writer left pending");
                continue;
            }
            let bytes = redis::from_redis_value_ref::<Vec<u8>>(value).unwrap_or_default();
            if field == buffer::BATCH_NAME_FIELD_V3 {
                let name = String::from_utf8_lossy(&bytes).into_owned();
                match self.handoff.take(&name) {
                    Some(rows) => {
                        counter!(m::BUFFER_BATCHES_READ, "from" => m::FROM_MEMORY).increment(1);
                        self.hold(&entry.id, rows, counted, Some(name));
                    }
                    None => fetch.push((entry.id.clone(), name, counted)),
                }
                continue;
            }
            match buffer::decode_entry(field, &bytes) {
                Ok(mut rows) => {
                    if field == buffer::BATCH_FIELD_V2 {
                        self.hold(&entry.id, rows, counted, None);
                        continue;
                    }
                    // Version 1 rows were buffered before language detection moved into
                    // decoding, and were never counted.
                    let posts = rows.iter_mut().filter_map(|row| match row {
                        Entry::Post(post) => Some(&mut **post),
                        _ => None,
                    });
                    posts.for_each(crate::reenrich::redo_enrichment);
                    self.hold(&entry.id, rows, 0, None);
                }
                Err(e) => corrupt.push(Corrupt::new(&entry.id, &format!("{e:#}"), bytes, counted, None)),
            }
        }
        if !fetch.is_empty() {
            self.fetch_batches(fetch, &mut corrupt).await?;
        }
        if !corrupt.is_empty() {
            self.dead_letter_corrupt(corrupt).await?;
        }
        Ok(())
    }

    /// Adds one entry's rows to `waiting`.
    fn hold(&mut self, id: &str, rows: Vec<Entry>, counted: usize, batch: Option<String>) {
        self.oldest_waiting_since.get_or_insert_with(Instant::now);
        self.waiting_ids.insert(id.to_owned());
        self.waiting_rows += rows.len();
        self.waiting.push(Waiting { id: id.to_owned(), rows, counted, batch });
    }

    /// Reads version-3 batches (stream id, batch name, rows counted) from their Redis keys. During
    /// an outage, the entries (pending for this consumer) are read again later from this
    /// consumer's history.
    async fn fetch_batches(
        &mut self,
        fetch: Vec<(String, String, usize)>,
        corrupt: &mut Vec<Corrupt>,
    ) -> anyhow::Result<()> {
        let keys: Vec<String> = fetch.iter().map(|(_, name, _)| self.keys.batch(name)).collect();
        let values: Result<Vec<Option<Vec<u8>>>, RedisError> =
            redis::cmd("MGET").arg(&keys).query_async(&mut self.conn).await;
        let values = match values {
            Ok(values) => values,
            Err(e) if buffer::is_outage(&e) => {
                warn!(error = %e, "redis is unreachable while reading batches; they are read again later");
                (self.history_done, self.history_from) = (false, "0".to_owned());
                return Ok(());
            }
            Err(e) => return Err(e).context("failed to read buffered batches"),
        };
        for ((id, name, counted), value) in fetch.into_iter().zip(values) {
            let Some(bytes) = value else {
                let detail = format!("batch {name}: its rows are missing from redis");
                corrupt.push(Corrupt::new(&id, &detail, Vec::new(), counted, Some(name)));
                continue;
            };
            match buffer::decode_entry(buffer::BATCH_NAME_FIELD_V3, &bytes) {
                Ok(rows) => {
                    counter!(m::BUFFER_BATCHES_READ, "from" => m::FROM_REDIS).increment(1);
                    self.hold(&id, rows, counted, Some(name));
                }
                Err(e) => corrupt.push(Corrupt::new(&id, &format!("batch {name}: {e:#}"), bytes, counted, Some(name))),
            }
        }
        Ok(())
    }

    /// Takes over entries that other consumers read long ago and never acknowledged: their
    /// flusher died. An outage skips this round.
    /// The buffer stream's length: entries appended and not yet flushed (flushed ones are
    /// deleted). A failed read (Redis unreachable) leaves the gauge as it was.
    async fn sample_depth(&mut self) {
        self.last_depth_sample = Some(Instant::now());
        let depth: Result<u64, RedisError> = self.conn.xlen(&self.keys.posts).await;
        if let Ok(depth) = depth {
            gauge!(m::BUFFER_DEPTH).set(depth as f64);
        }
    }

    async fn claim_abandoned(&mut self) -> anyhow::Result<()> {
        self.last_claim = Some(Instant::now());
        let min_idle_ms = u64::try_from(self.config.claim_after.as_millis()).unwrap_or(u64::MAX);
        let mut start = "0-0".to_owned();
        loop {
            let reply: Result<StreamAutoClaimReply, RedisError> = self
                .conn
                .xautoclaim_options(
                    &self.keys.posts,
                    &self.keys.flusher_group,
                    &self.config.consumer,
                    min_idle_ms,
                    &start,
                    StreamAutoClaimOptions::default().count(READ_COUNT),
                )
                .await;
            let reply = match reply {
                Ok(reply) => reply,
                Err(e) if buffer::is_outage(&e) || e.code() == Some("NOGROUP") => return Ok(()),
                Err(e) => return Err(e).context("failed to claim abandoned buffer entries"),
            };
            if !reply.claimed.is_empty() {
                warn!(n_entries = reply.claimed.len(), "claimed entries abandoned by another flusher");
                self.accept(&reply.claimed).await?;
            }
            // Bounded: the rest is claimed after the next flush.
            if reply.next_stream_id == "0-0" || self.waiting_rows >= self.config.max_rows {
                return Ok(());
            }
            start = reply.next_stream_id;
        }
    }

    /// Entries that do not decode are not ours to fix: they go to the dead-letter stream.
    async fn dead_letter_corrupt(&mut self, corrupt: Vec<Corrupt>) -> anyhow::Result<()> {
        warn!(n_entries = corrupt.len(), "undecodable entries in the buffer stream go to the dead-letter stream");
        let drops: Vec<(Drop, Vec<u8>)> = corrupt
            .iter()
            .map(|c| {
                let drop =
                    Drop { reason: DropReason::InvalidJson, detail: format!("buffer entry {}: {}", c.id, c.detail) };
                (drop, c.bytes.clone())
            })
            .collect();
        buffer::append(&mut self.conn, &self.keys, None, &drops).await.context("failed to write dead letters")?;
        let ids: Vec<&str> = corrupt.iter().map(|c| c.id.as_str()).collect();
        let counted = corrupt.iter().map(|c| c.counted).sum();
        let batches: Vec<&str> = corrupt.iter().filter_map(|c| c.batch.as_deref()).collect();
        self.acknowledge(&ids, counted, &batches).await
    }

    /// XACKs and XDELs entries, deletes their batches' keys and uncounts their rows
    /// (`counted`), in one transaction. The rows are durable already, so an outage here is not
    /// fatal: after a few tries the entries stay pending, and a restart rewrites the same file
    /// names.
    async fn acknowledge(&mut self, ids: &[&str], counted: usize, batches: &[&str]) -> anyhow::Result<()> {
        let mut pipe = redis::pipe();
        pipe.atomic();
        for chunk in ids.chunks(5_000) {
            pipe.xack(&self.keys.posts, &self.keys.flusher_group, chunk).ignore();
            pipe.cmd("XDEL").arg(&self.keys.posts).arg(chunk).ignore();
        }
        for chunk in batches.chunks(5_000) {
            let keys: Vec<String> = chunk.iter().map(|name| self.keys.batch(name)).collect();
            pipe.cmd("DEL").arg(keys).ignore();
        }
        if counted > 0 {
            pipe.cmd("DECRBY").arg(&self.keys.rows).arg(counted).ignore();
        }
        for attempt in 0.. {
            let acknowledged: Result<(), RedisError> = pipe.query_async(&mut self.conn).await;
            match acknowledged {
                Ok(()) => break,
                Err(e) if buffer::is_outage(&e) && attempt < 5 => {
                    tokio::time::sleep(buffer::outage_backoff(attempt)).await;
                }
                Err(e) if buffer::is_outage(&e) => {
                    warn!(error = %e, "could not acknowledge flushed entries; they stay pending");
                    break;
                }
                Err(e) => return Err(e).context("failed to acknowledge flushed entries"),
            }
        }
        Ok(())
    }

    /// Forgets what was read and not flushed, to read this consumer's pending entries again
    /// from the start (after a failed flush: the entries are all still in Redis).
    fn rewind(&mut self) {
        self.waiting.clear();
        self.waiting_rows = 0;
        self.waiting_ids.clear();
        self.oldest_waiting_since = None;
        self.history_done = false;
        self.history_from = "0".to_owned();
        gauge!(m::BUFFER_PENDING).set(0.0);
    }

    /// Writes everything waiting into the lake, durably, then acknowledges it.
    pub async fn flush(&mut self) -> anyhow::Result<Option<FlushReport>> {
        let (Some(first), Some(last)) = (self.waiting.first(), self.waiting.last()) else {
            return Ok(None);
        };
        let span = info_span!("flush", first_id = %first.id, last_id = %last.id, rows = self.waiting_rows);
        let started = Instant::now();
        let result = self.flush_waiting().instrument(span).await;
        match &result {
            Ok(report) => {
                histogram!(m::FLUSH_DURATION).record(started.elapsed().as_secs_f64());
                counter!(m::FLUSH_ROWS).increment(report.rows as u64);
                counter!(m::FLUSH_FILES).increment(report.files as u64);
                counter!(m::FLUSH_BYTES).increment(report.bytes);
                gauge!(m::LAKE_GENERATION).set(report.generation as f64);
                gauge!(m::BUFFER_PENDING).set(0.0);
            }
            Err(_) => counter!(m::FLUSH_FAILURES).increment(1),
        }
        result.map(Some)
    }

    async fn flush_waiting(&mut self) -> anyhow::Result<FlushReport> {
        // In stream order (claimed entries may have come in late), and named from the whole id
        // set: the same entries always make the same file, and a different set (a partial
        // acknowledgement, a claim) never replaces a file holding other rows.
        self.waiting.sort_by_key(|w| stream_id_order(&w.id));
        let ids: Vec<String> = self.waiting.iter().map(|w| w.id.clone()).collect();
        let counted = self.waiting.iter().map(|w| w.counted).sum();
        let batches: Vec<String> = self.waiting.iter().filter_map(|w| w.batch.clone()).collect();
        let file_name =
            lake::layout::data_file_name(&ids[0], &format!("{}-{:016x}", ids[ids.len() - 1], id_set_digest(&ids)));
        let mut posts: Vec<Post> = Vec::new();
        let mut deletes: Vec<Delete> = Vec::new();
        let mut accounts: Vec<AccountEvent> = Vec::new();
        let mut interactions: Vec<Interaction> = Vec::new();
        let mut interaction_deletes: Vec<InteractionDelete> = Vec::new();
        // Moved, not copied: a failed flush ends the flusher, and the entries stay pending in
        // Redis for the next run, so nothing needs them here afterwards.
        for entry in std::mem::take(&mut self.waiting).into_iter().flat_map(|w| w.rows) {
            match entry {
                Entry::Post(post) => posts.push(*post),
                Entry::Delete(delete) => deletes.push(delete),
                Entry::Account(event) => accounts.push(event),
                Entry::Interaction(interaction) => interactions.push(interaction),
                Entry::InteractionDelete(delete) => interaction_deletes.push(delete),
            }
        }
        let newest_time_us = posts
            .iter()
            .map(|p| p.indexed_at_us)
            .chain(deletes.iter().map(|d| d.deleted_at_us))
            .chain(accounts.iter().map(|a| a.seen_at_us))
            .chain(interactions.iter().map(|i| i.indexed_at_us))
            .chain(interaction_deletes.iter().map(|d| d.deleted_at_us))
            .max()
            .unwrap_or_default();
        let rows = posts.len() + deletes.len() + accounts.len() + interactions.len() + interaction_deletes.len();
        let lake = self.lake.clone();
        let cursor = self.cursor;

        // Durability order: files (fsync + rename) → generation → cursor → XACK. Under the
        // lake's flush lock, so that the copies check and the publish see the same lake; the
        // files show and the generation moves under the publish lock, so that a reader sees
        // both or neither (and never this flush's posts both in a file and in the hot tier).
        let (files, generation) = tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
            let _lock = lake::unique::FlushLock::acquire(&lake)?;
            let posts = without_copies(&lake, &file_name, posts)?;
            let mut staged = lake::writer::stage_rows(&lake, &file_name, posts)?;
            staged.extend(lake::writer::stage_rows(&lake, &file_name, deletes)?);
            staged.extend(lake::writer::stage_rows(&lake, &file_name, accounts)?);
            let interactions = without_copies(&lake, &file_name, interactions)?;
            staged.extend(lake::writer::stage_rows(&lake, &file_name, interactions)?);
            staged.extend(lake::writer::stage_rows(&lake, &file_name, interaction_deletes)?);
            let now_us = chrono::Utc::now().timestamp_micros();
            let flushed_through = (rows > 0).then_some(newest_time_us);
            let publishing = lake::catalog::PublishLock::exclusive(&lake)?;
            let files = lake::writer::place(staged)?;
            let generation = lake::catalog::publish_flush(&lake, now_us, flushed_through)?;
            drop(publishing);
            crate::cursor::advance(&lake, cursor, newest_time_us)?;
            Ok((files, generation))
        })
        .await
        .context("flush task panicked")??;

        let id_refs: Vec<&str> = ids.iter().map(String::as_str).collect();
        let batch_refs: Vec<&str> = batches.iter().map(String::as_str).collect();
        self.acknowledge(&id_refs, counted, &batch_refs).await?;
        self.waiting_rows = 0;
        self.waiting_ids.clear();
        self.oldest_waiting_since = None;
        let lag_us = chrono::Utc::now().timestamp_micros().saturating_sub(newest_time_us);
        gauge!(m::CURSOR_LAG).set(lag_us as f64 / 1e6);
        let bytes = files.iter().map(|f| f.bytes).sum();
        info!(rows, files = files.len(), bytes, generation, "flushed");
        Ok(FlushReport { rows, files: files.len(), bytes, generation })
    }
}

/// A stream id (`<ms>-<seq>`) as a sortable pair.
fn stream_id_order(id: &str) -> (u64, u64) {
    let (ms, seq) = id.split_once('-').unwrap_or((id, "0"));
    (ms.parse().unwrap_or(u64::MAX), seq.parse().unwrap_or(u64::MAX))
}

/// FNV-1a over the ids: stable across runs and versions (unlike `DefaultHasher`).
fn id_set_digest(ids: &[String]) -> u64 {
    let mut hash = 0xcbf2_9ce4_8422_2325_u64;
    for byte in ids.iter().flat_map(|id| id.bytes().chain([b','])) {
        hash = (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

/// Leaves out the rows the lake already has (a replay brings them back) and repeats within
/// the batch, so a post (a like, a repost) is in at most one row of the lake (see
/// `lake::unique`).
fn without_copies<R: Keyed>(lake: &std::path::Path, file_name: &str, rows: Vec<R>) -> anyhow::Result<Vec<R>> {
    // The first row of each key is a candidate; later ones in the batch are copies.
    let keys: Vec<Cow<'_, str>> = rows.iter().map(Keyed::key).collect();
    let mut seen = HashSet::with_capacity(rows.len());
    let mut first = Vec::with_capacity(rows.len());
    let mut by_day: std::collections::BTreeMap<chrono::NaiveDate, Vec<(&str, i64)>> = Default::default();
    for (row, key) in rows.iter().zip(&keys) {
        let is_first = seen.insert(&**key);
        first.push(is_first);
        if is_first {
            let time = row.partition_micros();
            by_day.entry(lake::layout::date_of_micros(time)).or_default().push((key, time));
        }
    }
    let mut known = HashSet::new();
    for (day, candidates) in by_day {
        known.extend(lake::unique::known_keys::<R>(lake, day, file_name, &candidates)?);
    }
    let keep: Vec<bool> = first.iter().zip(&keys).map(|(first, key)| *first && !known.contains(&**key)).collect();
    drop(seen);
    drop(keys);
    let before = rows.len();
    let kept: Vec<R> = rows.into_iter().zip(keep).filter(|(_, keep)| *keep).map(|(row, _)| row).collect();
    let copies = before - kept.len();
    if copies > 0 {
        counter!(crate::metrics::FLUSH_COPIES, "table" => R::TABLE).increment(copies as u64);
        tracing::info!(copies, table = R::TABLE, "left out rows the lake already has");
    }
    Ok(kept)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_keeps_the_first_row_of_each_uri_and_leaves_out_what_the_lake_has() {
        let lake = tempfile::tempdir().unwrap();
        let post = |n: u32, text: &str| Post {
            uri: format!("at://did:plc:a/app.bsky.feed.post/{n}"),
            did: "did:plc:a".into(),
            rkey: n.to_string(),
            created_at_us: 1_700_000_000_000_000 + i64::from(n),
            text: text.to_owned(),
            ..Post::default()
        };
        lake::writer::write_posts(lake.path(), "old.parquet", vec![post(9, "stored")]).unwrap();
        let batch = vec![post(1, "first"), post(2, "x"), post(1, "again"), post(9, "replayed"), post(3, "y")];
        let kept = without_copies(lake.path(), "new.parquet", batch).unwrap();
        let kept: Vec<(String, String)> = kept.into_iter().map(|p| (p.uri, p.text)).collect();
        let want: Vec<(String, String)> =
            [(1, "first"), (2, "x"), (3, "y")].iter().map(|(n, t)| (post(*n, t).uri, t.to_string())).collect();
        assert_eq!(kept, want);
    }

    #[test]
    fn stream_ids_sort_numerically_not_as_text() {
        let mut ids = vec!["10-0", "9-5", "9-10", "9-9"];
        ids.sort_by_key(|id| stream_id_order(id));
        assert_eq!(ids, vec!["9-5", "9-9", "9-10", "10-0"]);
    }

    #[test]
    fn the_same_id_set_names_the_same_file_and_another_set_another() {
        let set = |ids: &[&str]| id_set_digest(&ids.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        assert_eq!(set(&["1-0", "2-0", "3-0"]), set(&["1-0", "2-0", "3-0"]));
        assert_ne!(set(&["1-0", "2-0", "3-0"]), set(&["1-0", "3-0"]));
        assert_ne!(set(&["1-0", "23-0"]), set(&["1-0", "2-0", "3-0"]));
    }
}
