//! The ingest role, wired: a source feeds raw events into a channel; this module decodes them,
//! appends posts to the Redis buffer (dead letters to the dead-letter stream), and runs the
//! flusher beside it. Stopping is cooperative: the source stops, everything it sent is
//! buffered, then the flusher drains the buffer into the lake.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use metrics::counter;
use redis::aio::ConnectionManager;
use tokio::sync::{mpsc, watch};
use tracing::{Instrument, debug, info, info_span};

use crate::buffer::{self, Entry, Keys};
use crate::decode::{Decoded, Drop, decode};
use crate::flush::{FlushConfig, Flusher};
use crate::metrics as m;
use crate::source::{RawEvent, SourceContext, SourceSpec};

#[derive(Debug, Clone)]
pub struct IngestConfig {
    pub redis_url: String,
    pub keys: Keys,
    pub lake: PathBuf,
    pub flush: FlushConfig,
}

/// What one ingest run saw.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IngestReport {
    pub events: u64,
    pub posts: u64,
    pub post_deletes: u64,
    pub other: u64,
    pub dropped: u64,
}

/// Posts appended to Redis per pipeline round trip, at most.
const APPEND_BATCH: usize = 1_000;
const CHANNEL_CAPACITY: usize = 10_000;

/// Decodes events until the channel closes, appending posts to the buffer in batches.
pub async fn buffer_events(
    conn: &mut ConnectionManager,
    keys: &Keys,
    mut events: mpsc::Receiver<RawEvent>,
) -> anyhow::Result<IngestReport> {
    let mut report = IngestReport::default();
    let mut entries: Vec<Entry> = Vec::with_capacity(APPEND_BATCH);
    let mut drops: Vec<(Drop, Vec<u8>)> = Vec::new();
    while let Some(first) = events.recv().await {
        let mut next = Some(first);
        // Take what is already waiting, up to a batch, then write it in one round trip.
        while let Some(line) = next.take() {
            report.events += 1;
            match decode(&line) {
                Decoded::Post(post) => {
                    report.posts += 1;
                    counter!(m::EVENTS, "kind" => m::KIND_POST).increment(1);
                    entries.push(Entry::Post(post));
                }
                Decoded::PostDelete(delete) => {
                    report.post_deletes += 1;
                    counter!(m::EVENTS, "kind" => m::KIND_POST_DELETE).increment(1);
                    entries.push(Entry::Delete(delete));
                }
                Decoded::Other { kind, .. } => {
                    report.other += 1;
                    counter!(m::EVENTS, "kind" => kind.as_str()).increment(1);
                }
                Decoded::Drop(drop) => {
                    report.dropped += 1;
                    counter!(m::EVENTS, "kind" => m::KIND_DROPPED).increment(1);
                    counter!(m::DROPPED, "reason" => drop.reason.as_str()).increment(1);
                    debug!(reason = drop.reason.as_str(), detail = %drop.detail, "event dropped");
                    drops.push((drop, line));
                }
            }
            if entries.len() + drops.len() < APPEND_BATCH {
                next = events.try_recv().ok();
            }
        }
        buffer::append(conn, keys, &entries).await?;
        buffer::dead_letter(conn, keys, &drops).await?;
        entries.clear();
        drops.clear();
    }
    Ok(report)
}

/// Runs `source` into the buffer with a flusher beside it, until the source ends (a finite
/// source) or `stop` turns true; then drains the buffer into the lake and returns.
pub async fn run(
    source: SourceSpec,
    config: IngestConfig,
    stop: watch::Receiver<bool>,
) -> anyhow::Result<IngestReport> {
    let span = info_span!("ingest", source = ?source);
    async move {
        let mut writer = buffer::connect(&config.redis_url, Duration::from_secs(5)).await?;
        let flusher_conn = buffer::connect(&config.redis_url, Duration::from_secs(5)).await?;
        let flusher =
            Flusher::new(flusher_conn, config.keys.clone(), config.lake.clone(), config.flush.clone()).await?;
        let (drain_tx, drain_rx) = watch::channel(false);
        let mut flusher_task = tokio::spawn(flusher.run(drain_rx));

        let lake = config.lake.clone();
        let cursor =
            tokio::task::spawn_blocking(move || crate::cursor::load(&lake)).await.context("cursor task panicked")??;
        let context = SourceContext { resume_from_us: cursor.map(|c| c.time_us) };
        let (events_tx, events_rx) = mpsc::channel(CHANNEL_CAPACITY);
        let source_task = tokio::spawn(source.run(context, events_tx, stop));

        let report = tokio::select! {
            report = buffer_events(&mut writer, &config.keys, events_rx) => report?,
            flushed = &mut flusher_task => {
                // The flusher only returns early on a failure: stop everything loudly.
                flushed.context("flusher task panicked")??;
                anyhow::bail!("the flusher stopped before the source ended");
            }
        };
        source_task.await.context("source task panicked")??;
        info!(?report, "source ended; draining the buffer into the lake");
        drain_tx.send(true).ok();
        flusher_task.await.context("flusher task panicked")??;
        Ok(report)
    }
    .instrument(span)
    .await
}
