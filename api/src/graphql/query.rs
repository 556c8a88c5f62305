//! The query root. Each resolver turns its arguments and selection set into one `lake` plan,
//! runs it on a blocking thread, and wraps the rows in GraphQL types.

use std::sync::Arc;

use async_graphql::{Context, ID, Object, SelectionField};
use lake::exec::Engine;
use lake::model::PostColumn;
use lake::plan::{Keyset, PostsPlan};

use super::types::{
    LakeStats, PageInfo, PostConnection, PostEdge, PostFilter, PostNode, PostOrder, post_field_columns,
};
use super::{DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE, Services, blocking};
use crate::error;

pub struct Query;

fn engine(ctx: &Context<'_>) -> async_graphql::Result<Arc<Engine>> {
    Ok(ctx.data::<Services>()?.engine.clone())
}

/// The lake columns that a selection of `Post` fields reads.
fn post_columns<'a>(fields: impl Iterator<Item = SelectionField<'a>>) -> Vec<PostColumn> {
    fields.flat_map(|f| post_field_columns(f.name()).iter().copied()).collect()
}

/// The `Post` fields selected under a connection's `nodes` and `edges { node }`.
fn connection_post_columns(connection: SelectionField<'_>) -> Vec<PostColumn> {
    let mut columns = Vec::new();
    for field in connection.selection_set() {
        match field.name() {
            "nodes" => columns.extend(post_columns(field.selection_set())),
            "edges" => {
                for edge_field in field.selection_set().filter(|f| f.name() == "node") {
                    columns.extend(post_columns(edge_field.selection_set()));
                }
            }
            _ => {}
        }
    }
    columns
}

#[Object]
impl Query {
    /// One post by its AT-URI, or null when the lake does not have it.
    async fn post(&self, ctx: &Context<'_>, uri: ID) -> async_graphql::Result<Option<PostNode>> {
        let engine = engine(ctx)?;
        let filter = lake::plan::PostFilter { uris: vec![uri.0], ..Default::default() };
        let plan = PostsPlan::new(filter, lake::plan::PostOrder::Newest, 1, post_columns(ctx.field().selection_set()));
        let rows = blocking(move || engine.posts(&plan)).await?;
        Ok(rows.into_iter().next().map(PostNode))
    }

    /// Posts matching `filter`, a page at a time: pass `pageInfo.endCursor` as `after`.
    async fn posts(
        &self,
        ctx: &Context<'_>,
        filter: Option<PostFilter>,
        #[graphql(default_with = "Some(PostOrder::Newest)")] order: Option<PostOrder>,
        #[graphql(default_with = "Some(20)")] first: Option<i32>,
        after: Option<String>,
    ) -> async_graphql::Result<PostConnection> {
        // An explicit null means the default, as an absent argument does.
        let order = order.unwrap_or_default();
        let first = first.unwrap_or(DEFAULT_PAGE_SIZE);
        if !(0..=MAX_PAGE_SIZE).contains(&first) {
            return Err(error::bad_input(format!("first must be between 0 and {MAX_PAGE_SIZE}, got {first}")));
        }
        let filter = Arc::new(filter.unwrap_or_default().into_plan()?);
        let after = after.map(|cursor| Keyset::decode(&cursor)).transpose().map_err(error::from_lake)?;
        let page_size = first as usize;
        let mut plan =
            PostsPlan::new((*filter).clone(), order.into(), first as u32 + 1, connection_post_columns(ctx.field()));
        plan.after = after;
        let engine = engine(ctx)?;
        let mut rows = if page_size == 0 { Vec::new() } else { blocking(move || engine.posts(&plan)).await? };
        let has_next_page = rows.len() > page_size;
        rows.truncate(page_size);
        let edges: Vec<PostEdge> = rows
            .into_iter()
            .map(|post| {
                let cursor = Keyset { created_at_us: post.created_at_us, uri: post.uri.clone() }.encode();
                PostEdge { cursor, node: PostNode(post) }
            })
            .collect();
        let end_cursor = edges.last().map(|e| e.cursor.clone());
        Ok(PostConnection { edges, page_info: PageInfo { has_next_page, end_cursor }, filter })
    }

    /// The lake's size and state.
    async fn lake(&self, ctx: &Context<'_>) -> async_graphql::Result<LakeStats> {
        let engine = engine(ctx)?;
        Ok(LakeStats(blocking(move || engine.stats()).await?))
    }
}
