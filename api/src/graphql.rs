//! The GraphQL schema: types over lake rows, input filters, and the query root whose resolvers
//! build one `lake` plan per field. `schema.graphql` at the repository root is this schema's SDL.

use std::sync::Arc;

use async_graphql::{EmptyMutation, EmptySubscription, Schema};
use lake::exec::Engine;

mod query;
mod scalars;
mod types;

pub use query::Query;

pub type SkyglassSchema = Schema<Query, EmptyMutation, EmptySubscription>;

/// Rows in a page when `first` is not given.
pub const DEFAULT_PAGE_SIZE: i32 = 20;

/// Most rows a page may ask for.
pub const MAX_PAGE_SIZE: i32 = 1_000;

/// What resolvers reach through the context.
pub struct Services {
    pub engine: Arc<Engine>,
}

pub fn build(services: Option<Services>) -> SkyglassSchema {
    let builder = Schema::build(Query, EmptyMutation, EmptySubscription).limit_depth(16).limit_complexity(5_000);
    match services {
        Some(services) => builder.data(services).finish(),
        None => builder.finish(),
    }
}

/// Runs lake work off the async runtime, its errors turned into GraphQL errors.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> lake::Result<T> + Send + 'static,
) -> async_graphql::Result<T> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| crate::error::internal(&anyhow::Error::new(e)))?
        .map_err(crate::error::from_lake)
}

/// The schema's SDL, as checked in at `schema.graphql` and printed by `skyglass schema`.
pub fn sdl() -> String {
    build(None).sdl()
}
