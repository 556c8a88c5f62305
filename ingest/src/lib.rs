//! Skyglass ingest: sources of Jetstream events, their decoding into lake rows, the Redis stream
//! buffer, the flusher that moves buffered rows into Parquet, and the durable cursor.
//!
//! Data flows one way: source → decode → buffer (Redis) → flush → lake. This crate depends on
//! `lake` only; it knows nothing of GraphQL or HTTP.

pub mod buffer;
pub mod cursor;
pub mod decode;
pub mod flush;
pub mod generate;
pub mod language;
pub mod metrics;
pub mod pipeline;
pub mod reenrich;
pub mod source;
pub mod text;
