//! Every metric the API records, and the Prometheus recorder the whole process reports through.

use std::sync::OnceLock;

use anyhow::Context;
use metrics::{Unit, describe_counter, describe_histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

pub const GRAPHQL_REQUESTS: &str = "skyglass_graphql_requests_total";
pub const GRAPHQL_DURATION: &str = "skyglass_graphql_request_duration_seconds";

/// Time DuckDB spent on one lake statement (or a resolver's few), queueing excluded.
pub const QUERY_DURATION: &str = "skyglass_query_duckdb_seconds";
/// Time a resolver waited for a query slot.
pub const QUERY_QUEUE_WAIT: &str = "skyglass_query_queue_wait_seconds";
/// Lake work interrupted because its request ran out of time.
pub const QUERY_TIMEOUTS: &str = "skyglass_query_timeouts_total";
/// Lake work refused because no query slot freed up in time.
pub const QUERY_REJECTED: &str = "skyglass_query_rejected_total";

/// Compaction runs over a partition that changed it, by outcome.
pub const COMPACTIONS: &str = "skyglass_compactions_total";
/// Small files merged into bigger ones by compaction.
pub const COMPACTION_FILES_MERGED: &str = "skyglass_compaction_files_merged_total";
/// Posts compaction left out, by reason (`deleted`, `copy`).
pub const COMPACTION_ROWS_LEFT_OUT: &str = "skyglass_compaction_rows_left_out_total";
/// Time of one compaction pass over the lake.
pub const COMPACTION_DURATION: &str = "skyglass_compaction_duration_seconds";

/// Outcomes of a GraphQL request or a compaction, the label of [`GRAPHQL_REQUESTS`] and
/// [`COMPACTIONS`].
pub const OUTCOME_OK: &str = "ok";
pub const OUTCOME_ERROR: &str = "error";

const LATENCY_BUCKETS: &[f64] = &[0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

const COMPACTION_BUCKETS: &[f64] = &[0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the process-wide Prometheus recorder (once) and describes every metric.
pub fn install() -> anyhow::Result<PrometheusHandle> {
    if let Some(handle) = HANDLE.get() {
        return Ok(handle.clone());
    }
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Full(GRAPHQL_DURATION.to_owned()), LATENCY_BUCKETS)?
        .set_buckets_for_metric(Matcher::Full(QUERY_DURATION.to_owned()), LATENCY_BUCKETS)?
        .set_buckets_for_metric(Matcher::Full(QUERY_QUEUE_WAIT.to_owned()), LATENCY_BUCKETS)?
        .set_buckets_for_metric(Matcher::Full(COMPACTION_DURATION.to_owned()), COMPACTION_BUCKETS)?
        .set_buckets_for_metric(
            Matcher::Full(ingest::metrics::FLUSH_DURATION.to_owned()),
            ingest::metrics::FLUSH_DURATION_BUCKETS,
        )?
        .install_recorder()
        .context("failed to install the metrics recorder")?;
    describe_counter!(GRAPHQL_REQUESTS, "GraphQL requests, by outcome");
    describe_histogram!(GRAPHQL_DURATION, Unit::Seconds, "GraphQL request time, from parse to response");
    describe_histogram!(QUERY_DURATION, Unit::Seconds, "DuckDB time per resolver's lake work");
    describe_histogram!(QUERY_QUEUE_WAIT, Unit::Seconds, "Wait for a query slot (the concurrency cap)");
    describe_counter!(QUERY_TIMEOUTS, "Lake work interrupted at the query timeout");
    describe_counter!(QUERY_REJECTED, "Lake work refused: no query slot within the timeout");
    metrics::counter!(QUERY_TIMEOUTS).increment(0);
    metrics::counter!(QUERY_REJECTED).increment(0);
    for outcome in [OUTCOME_OK, OUTCOME_ERROR] {
        metrics::counter!(GRAPHQL_REQUESTS, "outcome" => outcome).increment(0);
    }
    describe_counter!(COMPACTIONS, "Partition compactions that changed the partition, by outcome");
    describe_counter!(COMPACTION_FILES_MERGED, "Small posts files merged by compaction");
    describe_counter!(COMPACTION_ROWS_LEFT_OUT, "Posts left out by compaction, by reason (deleted, copy)");
    describe_histogram!(COMPACTION_DURATION, Unit::Seconds, "Time of one compaction pass over the lake");
    for outcome in [OUTCOME_OK, OUTCOME_ERROR] {
        metrics::counter!(COMPACTIONS, "outcome" => outcome).increment(0);
    }
    ingest::metrics::describe();
    Ok(HANDLE.get_or_init(|| handle).clone())
}
