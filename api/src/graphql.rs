//! The GraphQL schema: types over lake rows, input filters, and the query root whose resolvers
//! build one `lake` plan per field. Nested fields under many parents (a post's author, an
//! author's posts) go through data loaders, one statement per level. `schema.graphql` at the
//! repository root is this schema's SDL.

use std::sync::Arc;

use async_graphql::dataloader::DataLoader;
use async_graphql::{EmptyMutation, EmptySubscription, Schema};
use lake::exec::Engine;

mod author;
mod loaders;
mod query;
mod scalars;
mod types;

pub use query::Query;

pub type SkyglassSchema = Schema<Query, EmptyMutation, EmptySubscription>;

/// Rows in a page when `first` is not given.
pub const DEFAULT_PAGE_SIZE: i32 = 20;

/// The page size at which a list field's complexity stops growing. Complexity is checked before
/// resolvers run and cannot see the configured cap; a larger `first` is refused by the resolver
/// with a clear message instead of a bare "too complex".
pub const COMPLEXITY_PAGE_CAP: i32 = 100;

/// Limits on what one request may ask.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Most rows a page (`first`) may ask for.
    pub max_page_size: i32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_page_size: 100 }
    }
}

/// What resolvers reach through the context.
pub struct Services {
    pub engine: Arc<Engine>,
    pub limits: Limits,
}

pub fn build(services: Option<Services>) -> SkyglassSchema {
    let builder = Schema::build(Query, EmptyMutation, EmptySubscription).limit_depth(16).limit_complexity(10_000);
    match services {
        Some(services) => {
            let engine = services.engine.clone();
            builder
                .data(DataLoader::new(loaders::AuthorSummaries(engine.clone()), tokio::spawn))
                .data(DataLoader::new(loaders::AuthorPosts(engine), tokio::spawn))
                .data(services)
                .finish()
        }
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
