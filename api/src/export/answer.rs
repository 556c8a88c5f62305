//! An export's query answered through the schema at one lake generation: if a flush lands
//! while it runs, it answers again. The answer carries the catalog state it was computed at.

use serde_json::Value;

use super::{Exports, GENERATION_TRIES};
use crate::graphql;

/// An answer to an export's query and the lake state it was computed at.
pub(super) struct Answer {
    pub data: Value,
    pub lake: lake::catalog::CatalogState,
}

impl Exports {
    /// Answers a query at one lake generation.
    pub(super) async fn answer(
        &self,
        query: &str,
        operation_name: Option<&str>,
        variables: &serde_json::Map<String, Value>,
    ) -> Result<Answer, String> {
        for _ in 0..GENERATION_TRIES {
            let before = self.lake_state().await?;
            let mut request = async_graphql::Request::new(query)
                .variables(async_graphql::Variables::from_json(Value::Object(variables.clone())));
            if let Some(name) = operation_name {
                request = request.operation_name(name);
            }
            let request = graphql::with_loaders(request, &self.runner).data(crate::cache::Volatile::default());
            let response = self.schema.execute(request).await;
            if !response.errors.is_empty() {
                let messages: Vec<String> = response
                    .errors
                    .iter()
                    .map(|e| {
                        let path: Vec<String> = e
                            .path
                            .iter()
                            .map(|p| match p {
                                async_graphql::PathSegment::Field(name) => name.clone(),
                                async_graphql::PathSegment::Index(index) => index.to_string(),
                            })
                            .collect();
                        if path.is_empty() { e.message.clone() } else { format!("{}: {}", path.join("."), e.message) }
                    })
                    .collect();
                return Err(format!("the query failed: {}", messages.join("; ")));
            }
            let after = self.lake_state().await?;
            if after.generation == before.generation {
                let data = serde_json::to_value(&response.data).map_err(|e| e.to_string())?;
                return Ok(Answer { data, lake: before });
            }
        }
        Err(format!("the lake changed while the query ran, {GENERATION_TRIES} times in a row; try again"))
    }

    async fn lake_state(&self) -> Result<lake::catalog::CatalogState, String> {
        let lake = self.lake.clone();
        tokio::task::spawn_blocking(move || lake::catalog::read_state(&lake))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("cannot read the lake catalog: {e}"))
    }
}
