//! Every metric the API records, and the Prometheus recorder the whole process reports through.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::OnceLock;

use anyhow::Context;
use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
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
/// Cost units of the lake statements that ran for GraphQL requests (see `crate::throttle`).
pub const QUERY_COST: &str = "skyglass_query_cost_units_total";
/// Lake statements refused because their client's cost budget was spent.
pub const RATE_LIMITED: &str = "skyglass_rate_limited_total";

/// The lake's `posts` files, bytes and day partitions, refreshed every few seconds.
pub const LAKE_FILES: &str = "skyglass_lake_files";
pub const LAKE_BYTES: &str = "skyglass_lake_bytes";
pub const LAKE_PARTITIONS: &str = "skyglass_lake_partitions";

/// GraphQL answers by how the result cache served them (`HIT`, `MISS`, `BYPASS`).
pub const CACHE_REQUESTS: &str = "skyglass_cache_requests_total";
/// Result cache operations that failed (Redis unreachable or slow); the answer came uncached.
pub const CACHE_ERRORS: &str = "skyglass_cache_errors_total";

/// Compaction runs over a partition that changed it, by outcome.
pub const COMPACTIONS: &str = "skyglass_compactions_total";
/// Small files merged into bigger ones by compaction.
pub const COMPACTION_FILES_MERGED: &str = "skyglass_compaction_files_merged_total";
/// Posts compaction left out, by reason (`deleted`, `copy`).
pub const COMPACTION_ROWS_LEFT_OUT: &str = "skyglass_compaction_rows_left_out_total";
/// Time of one compaction pass over the lake.
pub const COMPACTION_DURATION: &str = "skyglass_compaction_duration_seconds";

/// Posts in the hot tier (still in the buffer, answered with the lake's).
pub const HOT_POSTS: &str = "skyglass_hot_posts";
/// Statements with text searches, by `path`: `index` (narrowed by the files' text indexes) or
/// `scan`.
pub const TEXT_SEARCH_STATEMENTS: &str = "skyglass_text_search_statements_total";
/// Pages of text searches with more candidates than a statement reads, answered from the posts
/// since their newest (or until their oldest) candidates.
pub const TEXT_SEARCH_CUT_PAGES: &str = "skyglass_text_search_cut_pages_total";
/// Statements that rollups can answer (`timeBuckets`, `topHashtags`), by `path`: `rollup`, or
/// `posts` when this one's filter, grouping or measures need the posts.
pub const ROLLUP_STATEMENTS: &str = "skyglass_rollup_statements_total";

/// Rankings of posts by likes or reposts, by `path`: among the rollups' largest rows
/// (`largest_rows`), among the posts with a large row (`candidates`), or the whole window.
pub const RANKINGS: &str = "skyglass_rankings_total";

/// Live subscriptions open now, and those ended for falling behind.
pub const LIVE_SUBSCRIBERS: &str = "skyglass_live_subscribers";
pub const LIVE_DROPPED: &str = "skyglass_live_dropped_total";

/// Export runs, by export and outcome.
pub const EXPORT_RUNS: &str = "skyglass_export_runs_total";
/// Time of one export run (query, file, manifest), by export.
pub const EXPORT_DURATION: &str = "skyglass_export_duration_seconds";
/// Rows and bytes of each export's last file.
pub const EXPORT_ROWS: &str = "skyglass_export_rows";
pub const EXPORT_BYTES: &str = "skyglass_export_bytes";
/// When each export last succeeded (Unix seconds).
pub const EXPORT_LAST_SUCCESS: &str = "skyglass_export_last_success_timestamp_seconds";
/// Failed scheduled export runs that were set to be tried again, by export.
pub const EXPORT_RETRIES: &str = "skyglass_export_retries_total";

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
        .set_buckets_for_metric(Matcher::Full(EXPORT_DURATION.to_owned()), COMPACTION_BUCKETS)?
        .set_buckets_for_metric(
            Matcher::Full(ingest::metrics::FLUSH_DURATION.to_owned()),
            ingest::metrics::FLUSH_DURATION_BUCKETS,
        )?
        .install_recorder()
        .context("failed to install the metrics recorder")?;
    describe_counter!(GRAPHQL_REQUESTS, "GraphQL requests, by operation name and outcome");
    describe_histogram!(GRAPHQL_DURATION, Unit::Seconds, "GraphQL request time, from parse to response, by operation");
    describe_gauge!(LAKE_FILES, "Data files of the lake's posts table");
    describe_gauge!(LAKE_BYTES, "Bytes of the lake's posts files");
    describe_gauge!(LAKE_PARTITIONS, "Day partitions of the lake's posts table");
    describe_histogram!(QUERY_DURATION, Unit::Seconds, "DuckDB time per resolver's lake work");
    describe_histogram!(QUERY_QUEUE_WAIT, Unit::Seconds, "Wait for a query slot (the concurrency cap)");
    describe_counter!(QUERY_TIMEOUTS, "Lake work interrupted at the query timeout");
    describe_counter!(QUERY_REJECTED, "Lake work refused: no query slot within the timeout");
    describe_counter!(QUERY_COST, "Cost units of the lake statements run for GraphQL requests");
    describe_counter!(RATE_LIMITED, "Lake statements refused: the client's cost budget was spent");
    metrics::counter!(QUERY_TIMEOUTS).increment(0);
    metrics::counter!(QUERY_REJECTED).increment(0);
    metrics::counter!(QUERY_COST).increment(0);
    metrics::counter!(RATE_LIMITED).increment(0);
    for outcome in [OUTCOME_OK, OUTCOME_ERROR] {
        metrics::counter!(GRAPHQL_REQUESTS, "operation" => ANONYMOUS, "outcome" => outcome).increment(0);
    }
    describe_counter!(COMPACTIONS, "Partition compactions that changed the partition, by table and outcome");
    describe_counter!(COMPACTION_FILES_MERGED, "Small files merged by compaction, by table");
    describe_counter!(
        COMPACTION_ROWS_LEFT_OUT,
        "Rows left out by compaction, by table and reason (deleted, copy; applied: deletes retired once applied)"
    );
    describe_histogram!(COMPACTION_DURATION, Unit::Seconds, "Time of one compaction pass over the lake");
    for table in lake::layout::COMPACTED_TABLES {
        for outcome in [OUTCOME_OK, OUTCOME_ERROR] {
            metrics::counter!(COMPACTIONS, "table" => table, "outcome" => outcome).increment(0);
        }
        metrics::counter!(COMPACTION_FILES_MERGED, "table" => table).increment(0);
    }
    describe_counter!(CACHE_REQUESTS, "GraphQL answers by how the result cache served them (HIT, MISS, BYPASS)");
    describe_counter!(CACHE_ERRORS, "Result cache operations that failed; those answers came uncached");
    for status in crate::cache::Status::ALL {
        metrics::counter!(CACHE_REQUESTS, "status" => status.as_str()).increment(0);
    }
    metrics::counter!(CACHE_ERRORS).increment(0);
    for (table, reason) in [
        (lake::layout::POSTS_TABLE, "deleted"),
        (lake::layout::POSTS_TABLE, "copy"),
        (lake::layout::INTERACTIONS_TABLE, "deleted"),
        (lake::layout::INTERACTION_DELETES_TABLE, "applied"),
        (lake::layout::DELETES_TABLE, "applied"),
    ] {
        metrics::counter!(COMPACTION_ROWS_LEFT_OUT, "table" => table, "reason" => reason).increment(0);
    }
    describe_gauge!(HOT_POSTS, "Posts in the hot tier: still in the buffer, answered with the lake's");
    describe_counter!(
        TEXT_SEARCH_STATEMENTS,
        "Lake statements with text searches, by path: narrowed by the text indexes (index) or not (scan)"
    );
    describe_counter!(
        TEXT_SEARCH_CUT_PAGES,
        "Pages of text searches with too many candidates to read, answered from the posts since their newest \
         (or until their oldest) candidates"
    );
    describe_counter!(
        ROLLUP_STATEMENTS,
        "Lake statements of a kind rollups answer, by path: from the rollups (rollup) or the posts (posts)"
    );
    describe_counter!(
        RANKINGS,
        "Rankings of posts by likes or reposts, by path: largest_rows, candidates or window (every post of it)"
    );
    metrics::gauge!(HOT_POSTS).set(0.0);
    describe_gauge!(LIVE_SUBSCRIBERS, "livePosts subscriptions open now");
    describe_counter!(LIVE_DROPPED, "livePosts subscriptions ended for falling behind");
    metrics::gauge!(LIVE_SUBSCRIBERS).set(0.0);
    metrics::counter!(LIVE_DROPPED).increment(0);
    describe_counter!(EXPORT_RUNS, "Export runs, by export and outcome");
    describe_histogram!(EXPORT_DURATION, Unit::Seconds, "Time of one export run, by export");
    describe_gauge!(EXPORT_ROWS, "Rows of each export's last file");
    describe_gauge!(EXPORT_BYTES, Unit::Bytes, "Bytes of each export's last file");
    describe_gauge!(EXPORT_LAST_SUCCESS, "When each export last succeeded, Unix seconds");
    describe_counter!(EXPORT_RETRIES, "Failed scheduled export runs set to be tried again, by export");
    ingest::metrics::describe();
    Ok(HANDLE.get_or_init(|| handle).clone())
}

/// The `operation` label of a request: its operation name when it is a plain identifier and one
/// of the first [`MAX_OPERATIONS`] seen, so a client cannot blow up the metric's series;
/// [`ANONYMOUS`] without a name and [`OTHER_OPERATION`] otherwise.
pub fn operation_label(name: Option<&str>) -> String {
    static SEEN: std::sync::Mutex<BTreeSet<String>> = std::sync::Mutex::new(BTreeSet::new());
    let Some(name) = name else { return ANONYMOUS.to_owned() };
    let plain = (1..=64).contains(&name.len()) && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if !plain {
        return OTHER_OPERATION.to_owned();
    }
    let mut seen = SEEN.lock().unwrap_or_else(|p| p.into_inner());
    if seen.contains(name) || seen.len() < MAX_OPERATIONS {
        seen.insert(name.to_owned());
        name.to_owned()
    } else {
        OTHER_OPERATION.to_owned()
    }
}

/// The name of a document's first operation (`query Latest { … }` → `Latest`), for requests
/// that do not send `operationName`; comments and whitespace before it are skipped.
pub fn first_operation_name(document: &str) -> Option<&str> {
    let mut rest = document.trim_start_matches('\u{feff}');
    loop {
        rest = rest.trim_start_matches(|c: char| c.is_whitespace() || c == ',');
        match rest.strip_prefix('#') {
            Some(comment) => rest = comment.split_once('\n').map_or("", |(_, after)| after),
            None => break,
        }
    }
    let rest = ["query", "mutation", "subscription"].iter().find_map(|keyword| rest.strip_prefix(keyword))?;
    if !rest.starts_with(char::is_whitespace) {
        return None;
    }
    let rest = rest.trim_start();
    let end = rest.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(rest.len());
    (end > 0 && !rest.starts_with(|c: char| c.is_ascii_digit())).then(|| &rest[..end])
}

pub const MAX_OPERATIONS: usize = 200;
pub const ANONYMOUS: &str = "anonymous";
pub const OTHER_OPERATION: &str = "other";

/// Keeps the lake gauges current (files, bytes, partitions, generation) until `stop`, and where
/// this process ingests from a source of kind `cursor_of`, the lag of its durable cursor.
pub async fn watch_lake(lake: PathBuf, cursor_of: Option<&'static str>, mut stop: tokio::sync::watch::Receiver<bool>) {
    loop {
        let dir = lake.clone();
        let read = tokio::task::spawn_blocking(move || {
            let files = lake::catalog::table_files(&dir, lake::layout::POSTS_TABLE)?;
            let state = lake::catalog::read_state(&dir)?;
            Ok::<_, lake::Error>((files, state))
        });
        if let Ok(Ok((files, state))) = read.await {
            metrics::gauge!(LAKE_FILES).set(files.files as f64);
            metrics::gauge!(LAKE_BYTES).set(files.bytes as f64);
            metrics::gauge!(LAKE_PARTITIONS).set(files.partitions.len() as f64);
            metrics::gauge!(ingest::metrics::LAKE_GENERATION).set(state.generation as f64);
        }
        // The cursor's lag keeps growing while nothing is flushed (a flush sets it too).
        if let Some(kind) = cursor_of
            && let Ok(Some(cursor)) = ingest::cursor::load(&lake, kind)
        {
            let lag_us = chrono::Utc::now().timestamp_micros().saturating_sub(cursor.time_us);
            metrics::gauge!(ingest::metrics::CURSOR_LAG).set(lag_us as f64 / 1e6);
        }
        tokio::select! {
            _ = tokio::time::sleep(LAKE_WATCH_EVERY) => {}
            _ = stop.wait_for(|stopping| *stopping) => return,
        }
    }
}

const LAKE_WATCH_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operation_labels_stay_few_and_plain() {
        assert_eq!(operation_label(None), ANONYMOUS);
        assert_eq!(operation_label(Some("Search_1")), "Search_1");
        assert_eq!(operation_label(Some("drop table; --")), OTHER_OPERATION);
        for n in 0..MAX_OPERATIONS + 10 {
            operation_label(Some(&format!("op{n}")));
        }
        assert_eq!(operation_label(Some("Search_1")), "Search_1", "a name seen before keeps its label");
        assert_eq!(operation_label(Some("brand_new")), OTHER_OPERATION);
    }

    #[test]
    fn a_document_names_its_first_operation() {
        assert_eq!(first_operation_name("query Latest { posts { nodes { uri } } }"), Some("Latest"));
        assert_eq!(first_operation_name("# top\n  mutation Run($x: Int) { a }"), Some("Run"));
        assert_eq!(first_operation_name("{ posts { totalCount } }"), None);
        assert_eq!(first_operation_name("query { lake { posts } }"), None);
        assert_eq!(first_operation_name("queryX { a }"), None);
    }
}
