//! Every metric ingest records: names, descriptions and label values, in one place. Labels
//! come only from closed enums. Call [`describe`] once after a recorder is installed.

use metrics::{Unit, counter, describe_counter, describe_gauge, describe_histogram, gauge};

use crate::decode::{DropReason, OtherKind};

pub const EVENTS: &str = "skyglass_ingest_events_total";
pub const DROPPED: &str = "skyglass_ingest_dropped_total";
pub const BUFFER_APPENDED: &str = "skyglass_buffer_appended_total";
pub const BUFFER_PENDING: &str = "skyglass_buffer_pending_rows";
pub const BUFFER_DEPTH: &str = "skyglass_buffer_stream_entries";
pub const BUFFER_BATCHES_READ: &str = "skyglass_buffer_batches_read_total";
pub const FLUSH_ROWS: &str = "skyglass_flush_rows_total";
pub const FLUSH_FILES: &str = "skyglass_flush_files_total";
pub const FLUSH_BYTES: &str = "skyglass_flush_bytes_total";
pub const FLUSH_DURATION: &str = "skyglass_flush_duration_seconds";
pub const FLUSH_FAILURES: &str = "skyglass_flush_failures_total";
pub const FLUSH_COPIES: &str = "skyglass_flush_copies_skipped_total";
pub const LAKE_GENERATION: &str = "skyglass_lake_generation";
pub const CURSOR_LAG: &str = "skyglass_ingest_cursor_lag_seconds";
pub const SOURCE_RECONNECTS: &str = "skyglass_source_reconnects_total";

/// Event kinds counted in [`EVENTS`].
pub const KIND_POST: &str = "post";
pub const KIND_POST_DELETE: &str = "post_delete";
pub const KIND_LIKE: &str = "like";
pub const KIND_REPOST: &str = "repost";
pub const KIND_LIKE_DELETE: &str = "like_delete";
pub const KIND_REPOST_DELETE: &str = "repost_delete";
pub const KIND_IDENTITY: &str = "identity";
pub const KIND_ACCOUNT: &str = "account";
pub const KIND_DROPPED: &str = "dropped";

/// Where the flusher got a batch's rows, in [`BUFFER_BATCHES_READ`]: handed over in memory by
/// this process's ingest, or read from Redis.
pub const FROM_MEMORY: &str = "memory";
pub const FROM_REDIS: &str = "redis";

/// Histogram buckets of [`FLUSH_DURATION`], in seconds.
pub const FLUSH_DURATION_BUCKETS: &[f64] = &[0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

pub fn describe() {
    describe_counter!(EVENTS, "Events read from the source, by kind");
    describe_counter!(DROPPED, "Events dropped to the dead-letter stream, by reason");
    describe_counter!(BUFFER_APPENDED, "Rows appended to the Redis buffer stream");
    describe_gauge!(BUFFER_PENDING, "Rows read by the flusher and not yet written to the lake");
    describe_gauge!(BUFFER_DEPTH, "Entries (batches of rows) in the Redis buffer stream, appended and not yet flushed");
    describe_counter!(
        BUFFER_BATCHES_READ,
        "Buffered batches the flusher took, by where from: handed over in memory, or read from Redis"
    );
    describe_counter!(FLUSH_ROWS, "Rows written to the lake by the flusher");
    describe_counter!(FLUSH_FILES, "Parquet files written by the flusher");
    describe_counter!(FLUSH_BYTES, Unit::Bytes, "Parquet bytes written by the flusher");
    describe_histogram!(FLUSH_DURATION, Unit::Seconds, "Time to write, publish and acknowledge one flush");
    describe_counter!(FLUSH_FAILURES, "Flushes that failed");
    describe_counter!(FLUSH_COPIES, "Rows a flush left out because the lake already had them (replays), by table");
    describe_gauge!(LAKE_GENERATION, "The lake generation after the last flush");
    describe_gauge!(CURSOR_LAG, Unit::Seconds, "Now minus the durable cursor's event time");
    describe_counter!(SOURCE_RECONNECTS, "Reconnections of a live source after a failure, close or stall");
    // Pre-register every label value at zero so dashboards and alerts see them from the start.
    for reason in DropReason::ALL {
        counter!(DROPPED, "reason" => reason.as_str()).increment(0);
    }
    for kind in OtherKind::ALL.iter().map(|k| k.as_str()).chain([
        KIND_POST,
        KIND_POST_DELETE,
        KIND_LIKE,
        KIND_REPOST,
        KIND_LIKE_DELETE,
        KIND_REPOST_DELETE,
        KIND_IDENTITY,
        KIND_ACCOUNT,
        KIND_DROPPED,
    ]) {
        counter!(EVENTS, "kind" => kind).increment(0);
    }
    for from in [FROM_MEMORY, FROM_REDIS] {
        counter!(BUFFER_BATCHES_READ, "from" => from).increment(0);
    }
    counter!(FLUSH_FAILURES).increment(0);
    for table in [lake::layout::POSTS_TABLE, lake::layout::INTERACTIONS_TABLE] {
        counter!(FLUSH_COPIES, "table" => table).increment(0);
    }
    counter!(SOURCE_RECONNECTS).increment(0);
    gauge!(BUFFER_PENDING).set(0.0);
    gauge!(BUFFER_DEPTH).set(0.0);
}
