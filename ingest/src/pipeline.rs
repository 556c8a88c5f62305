//! The ingest role, wired: a source feeds raw events into a channel; this module decodes them,
//! appends posts to the Redis buffer (dead letters to the dead-letter stream), and runs the
//! flusher beside it. Stopping is cooperative: the source stops, everything it sent is
//! buffered, then the flusher drains the buffer into the lake.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use metrics::counter;
use redis::aio::ConnectionManager;
use tokio::sync::{mpsc, watch};
use tracing::{Instrument, debug, info, info_span, warn};

use crate::buffer::{self, Batch, Entry, Handoff, Keys};
use crate::decode::{Decoded, Drop, decode};
use crate::flush::{FlushConfig, Flushed, Flusher};
use crate::metrics as m;
use crate::source::{RawEvent, SourceContext, SourceSpec};

#[derive(Debug, Clone)]
pub struct IngestConfig {
    pub redis_url: String,
    pub keys: Keys,
    pub lake: PathBuf,
    pub flush: FlushConfig,
    /// Jetstream's zstd dictionary, to receive compressed events (about a third of the bytes).
    pub zstd_dictionary: Option<std::sync::Arc<[u8]>>,
}

/// What one ingest run saw.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IngestReport {
    pub events: u64,
    pub posts: u64,
    pub post_deletes: u64,
    /// Likes and reposts of posts.
    pub interactions: u64,
    /// Likes and reposts deleted.
    pub interaction_deletes: u64,
    /// Identity and account events.
    pub accounts: u64,
    pub other: u64,
    pub dropped: u64,
}

impl IngestReport {
    fn add(&mut self, other: IngestReport) {
        self.events += other.events;
        self.posts += other.posts;
        self.post_deletes += other.post_deletes;
        self.interactions += other.interactions;
        self.interaction_deletes += other.interaction_deletes;
        self.accounts += other.accounts;
        self.other += other.other;
        self.dropped += other.dropped;
    }
}

/// Posts appended to Redis per pipeline round trip, at most.
const APPEND_BATCH: usize = 1_000;
const CHANNEL_CAPACITY: usize = 10_000;

/// Decodes events until the channel closes, appending posts to the buffer in batches. One
/// append is in flight while the next batch is decoded (waiting for each reply idled the core
/// for a tenth of the time); appends stay in order.
pub async fn buffer_events(
    conn: ConnectionManager,
    keys: Keys,
    handoff: Arc<Handoff>,
    mut events: mpsc::Receiver<RawEvent>,
    stop: watch::Receiver<bool>,
) -> anyhow::Result<IngestReport> {
    let mut report = IngestReport::default();
    let mut entries: Vec<Entry> = Vec::with_capacity(APPEND_BATCH);
    let mut drops: Vec<(Drop, Vec<u8>)> = Vec::new();
    let mut in_flight: Option<tokio::task::JoinHandle<anyhow::Result<bool>>> = None;
    // The per-event counters, looked up once (a lookup per event was a percent of ingest).
    let (posts_in, deletes_in, dropped_in) = (
        counter!(m::EVENTS, "kind" => m::KIND_POST),
        counter!(m::EVENTS, "kind" => m::KIND_POST_DELETE),
        counter!(m::EVENTS, "kind" => m::KIND_DROPPED),
    );
    // By `InteractionKind as usize`: like, repost.
    let interactions_in = [counter!(m::EVENTS, "kind" => m::KIND_LIKE), counter!(m::EVENTS, "kind" => m::KIND_REPOST)];
    let interaction_deletes_in =
        [counter!(m::EVENTS, "kind" => m::KIND_LIKE_DELETE), counter!(m::EVENTS, "kind" => m::KIND_REPOST_DELETE)];
    while let Some(first) = events.recv().await {
        let mut next = Some(first);
        // Take what is already waiting, up to a batch, then write it in one round trip.
        while let Some(line) = next.take() {
            report.events += 1;
            match decode(&line) {
                Decoded::Post(post) => {
                    report.posts += 1;
                    posts_in.increment(1);
                    entries.push(Entry::Post(post));
                }
                Decoded::PostDelete(delete) => {
                    report.post_deletes += 1;
                    deletes_in.increment(1);
                    entries.push(Entry::Delete(delete));
                }
                Decoded::Interaction(interaction) => {
                    report.interactions += 1;
                    interactions_in[interaction.kind as usize].increment(1);
                    entries.push(Entry::Interaction(interaction));
                }
                Decoded::InteractionDelete(delete) => {
                    report.interaction_deletes += 1;
                    interaction_deletes_in[delete.kind as usize].increment(1);
                    entries.push(Entry::InteractionDelete(delete));
                }
                Decoded::Account(event) => {
                    report.accounts += 1;
                    let kind = if event.active.is_some() { m::KIND_ACCOUNT } else { m::KIND_IDENTITY };
                    counter!(m::EVENTS, "kind" => kind).increment(1);
                    entries.push(Entry::Account(event));
                }
                Decoded::Other { kind, .. } => {
                    report.other += 1;
                    counter!(m::EVENTS, "kind" => kind.as_str()).increment(1);
                }
                Decoded::Drop(drop) => {
                    report.dropped += 1;
                    dropped_in.increment(1);
                    counter!(m::DROPPED, "reason" => drop.reason.as_str()).increment(1);
                    debug!(reason = drop.reason.as_str(), detail = %drop.detail, "event dropped");
                    drops.push((drop, line));
                }
            }
            if entries.len() + drops.len() < APPEND_BATCH {
                next = events.try_recv().ok();
            }
        }
        // The rows go to this process's flusher in memory, before the append: its read of the
        // entry may come before the append's reply does.
        let batch = (!entries.is_empty()).then(|| Batch::new(&entries));
        if let Some(batch) = &batch {
            handoff.put(batch.name().to_owned(), std::mem::replace(&mut entries, Vec::with_capacity(APPEND_BATCH)));
        }
        if let Some(previous) = in_flight.take()
            && !previous.await.context("append task panicked")??
        {
            return Ok(report);
        }
        let append = append_durably(
            conn.clone(),
            keys.clone(),
            handoff.clone(),
            batch,
            std::mem::take(&mut drops),
            stop.clone(),
        );
        in_flight = Some(tokio::spawn(append));
        entries.clear();
    }
    if let Some(last) = in_flight {
        last.await.context("append task panicked")??;
    }
    Ok(report)
}

/// Appends a batch and dropped events, holding them and retrying during a Redis outage (the
/// bounded channel makes the source wait meanwhile, so memory stays bounded). Asked to stop
/// meanwhile, it gives them up and returns false: they are not durable yet, and the source
/// replays them from the durable cursor.
async fn append_durably(
    mut conn: ConnectionManager,
    keys: Keys,
    handoff: Arc<Handoff>,
    mut batch: Option<Batch>,
    drops: Vec<(Drop, Vec<u8>)>,
    stop: watch::Receiver<bool>,
) -> anyhow::Result<bool> {
    let mut attempt = 0;
    loop {
        let failed = match buffer::append(&mut conn, &keys, batch.as_ref(), &drops).await {
            Ok(()) => return Ok(true),
            Err(e) => e,
        };
        let rows = batch.as_ref().and_then(|b| handoff.take(b.name()));
        if !buffer::is_outage(&failed) {
            return Err(failed).context("failed to append to the redis buffer");
        }
        // Asked to stop, or the epoch is gone (its stop sender with it).
        if *stop.borrow() || stop.has_changed().is_err() {
            return Ok(false);
        }
        warn!(error = %failed, attempt, "redis is unreachable; holding the batch and retrying");
        if let (Some(batch), Some(rows)) = (&mut batch, rows) {
            batch.rename();
            handoff.put(batch.name().to_owned(), rows);
        }
        tokio::time::sleep(buffer::outage_backoff(attempt)).await;
        attempt += 1;
    }
}

/// Aborts the tasks it holds when dropped, so an epoch that ends early (an error, a panic)
/// leaves none of its tasks running. Aborting a finished task does nothing.
struct AbortOnDrop(Vec<tokio::task::AbortHandle>);

impl std::ops::Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.iter().for_each(tokio::task::AbortHandle::abort);
    }
}

/// Runs `source` into the buffer with a flusher beside it, until the source ends (a finite
/// source) or `stop` turns true; then drains the buffer into the lake and returns.
///
/// If Redis comes back empty after an outage (what was buffered is gone), the flusher writes
/// what it holds, and the source starts again from the durable cursor: nothing is lost.
pub async fn run(
    source: SourceSpec,
    config: IngestConfig,
    stop: watch::Receiver<bool>,
) -> anyhow::Result<IngestReport> {
    let span = info_span!("ingest", source = ?source);
    async move {
        let mut total = IngestReport::default();
        loop {
            let (report, ended) = run_epoch(source.clone(), &config, stop.clone()).await?;
            total.add(report);
            match ended {
                Flushed::Drained => return Ok(total),
                Flushed::RedisLost => warn!("redis lost the buffer; replaying the source from the durable cursor"),
            }
        }
    }
    .instrument(span)
    .await
}

/// One run of the source from the durable cursor.
async fn run_epoch(
    source: SourceSpec,
    config: &IngestConfig,
    stop: watch::Receiver<bool>,
) -> anyhow::Result<(IngestReport, Flushed)> {
    let writer = buffer::connect(&config.redis_url, Duration::from_secs(5)).await?;
    let flusher_conn = buffer::connect(&config.redis_url, Duration::from_secs(5)).await?;
    let handoff = Arc::new(Handoff::default());
    let flusher = Flusher::new(
        flusher_conn,
        config.keys.clone(),
        handoff.clone(),
        config.lake.clone(),
        config.flush.clone(),
        source.kind(),
    )
    .await?;
    let (drain_tx, drain_rx) = watch::channel(false);
    let mut flusher_task = tokio::spawn(flusher.run(drain_rx));
    let mut tasks = AbortOnDrop(vec![flusher_task.abort_handle()]);

    // The epoch stops when the caller stops, or when the flusher finds the buffer lost.
    let (epoch_stop_tx, epoch_stop) = watch::channel(false);
    let epoch_stop_tx = std::sync::Arc::new(epoch_stop_tx);
    let forward = {
        let (mut stop, epoch_stop_tx) = (stop.clone(), epoch_stop_tx.clone());
        tokio::spawn(async move {
            if stop.wait_for(|s| *s).await.is_ok() {
                epoch_stop_tx.send(true).ok();
            }
        })
    };
    tasks.0.push(forward.abort_handle());

    let lake = config.lake.clone();
    let kind = source.kind();
    let cursor = tokio::task::spawn_blocking(move || crate::cursor::load(&lake, kind))
        .await
        .context("cursor task panicked")??;
    let context =
        SourceContext { resume_from_us: cursor.map(|c| c.time_us), zstd_dictionary: config.zstd_dictionary.clone() };
    let (events_tx, events_rx) = mpsc::channel(CHANNEL_CAPACITY);
    let source_task = tokio::spawn(source.run(context, events_tx, epoch_stop.clone()));
    tasks.0.push(source_task.abort_handle());

    // A task of its own, like the source's: events handed between tasks of one worker thread
    // cost no switch between threads (the caller may be a runtime's main thread, and on one
    // core a switch per event was a fifth of ingest's time).
    let (keys, buffer_stop) = (config.keys.clone(), epoch_stop.clone());
    let mut buffering = tokio::spawn(buffer_events(writer, keys, handoff, events_rx, buffer_stop));
    tasks.0.push(buffering.abort_handle());
    let (report, ended) = tokio::select! {
        report = &mut buffering => {
            let report = report.context("buffering task panicked")??;
            info!(?report, "source ended; draining the buffer into the lake");
            drain_tx.send(true).ok();
            (report, flusher_task.await.context("flusher task panicked")??)
        }
        flushed = &mut flusher_task => {
            let ended = flushed.context("flusher task panicked")??;
            // The buffer was lost: stop this epoch's source and start again.
            epoch_stop_tx.send(true).ok();
            (buffering.await.context("buffering task panicked")??, ended)
        }
    };
    source_task.await.context("source task panicked")??;
    // Ends `forward`, which waits for a stop that may never come.
    drop(tasks);
    Ok((report, ended))
}
