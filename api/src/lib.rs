//! Skyglass API: the GraphQL schema and its resolvers (which build `lake` plans), HTTP serving,
//! metrics, configuration and the `skyglass` binary's commands.
//!
//! Depends on `lake` and `ingest`; nothing depends on it.

pub mod auth;
pub mod bench;
pub mod cache;
pub mod cli;
pub mod compaction;
pub mod config;
pub mod error;
pub mod export;
pub mod graphql;
pub mod hot;
pub mod http;
pub mod metrics;
pub mod redis_link;
pub mod serve;
pub mod telemetry;
pub mod throttle;
pub mod web;
