//! The Skyglass lake: the data model, the Parquet layout and writer, the catalog, typed query
//! plans, their compilation to DuckDB SQL and their execution.
//!
//! This crate is synchronous and knows nothing of GraphQL, HTTP, Redis or tokio: async callers
//! run it inside `spawn_blocking`. It is the only crate that links DuckDB; the others reach
//! Arrow, Parquet and DuckDB through the re-exports below so that one version exists.

pub use {arrow, duckdb, parquet};

pub mod catalog;
pub mod compact;
pub mod error;
pub mod exec;
pub mod layout;
pub mod live;
pub mod model;
pub mod plan;
pub mod rewrite;
pub mod rollup;
pub mod search;
pub mod sql;
pub mod textindex;
pub mod unique;
pub mod verify;
pub mod writer;
pub mod zone;

pub use error::{Error, ErrorKind, Result};
