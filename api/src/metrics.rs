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

/// Outcomes of a GraphQL request, the label of [`GRAPHQL_REQUESTS`].
pub const OUTCOME_OK: &str = "ok";
pub const OUTCOME_ERROR: &str = "error";

const LATENCY_BUCKETS: &[f64] = &[0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

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
    ingest::metrics::describe();
    Ok(HANDLE.get_or_init(|| handle).clone())
}
