//! End-to-end tests: the real binary, a private redis-server, real Parquet and DuckDB.
//! One test binary, so the harness is compiled once.

mod analytics;
mod auth;
mod browser;
mod cache;
mod compaction;
mod config;
mod crash;
mod engagement;
mod expected;
mod export_files;
mod export_runs;
mod exports;
mod ingest_and_query;
mod layout;
mod limits;
mod rate_limit;
mod real_data;
mod reenrich;
mod request_log;
mod scale_out;
mod serve_all;
mod verify;
