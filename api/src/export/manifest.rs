//! What a run wrote, as the manifest beside its data file (`<file>.manifest.json`). Knows
//! nothing of Redis, the lake or GraphQL.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::Trigger;
use super::table::TablePlan;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    /// The export's name and period; none for an ad-hoc query.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub export: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub period: Option<ManifestPeriod>,
    pub query: String,
    pub operation_name: Option<String>,
    /// The variables as run: the period's and the relative ones resolved.
    pub variables: Value,
    /// The variables given as relative times, as written (`start of 7 days ago`); their values
    /// as run are in `variables`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub relative_variables: BTreeMap<String, String>,
    pub format: String,
    /// The data file, relative to the destination.
    pub file: String,
    pub rows: u64,
    pub bytes: u64,
    /// SHA-256 of the data file, hex.
    pub sha256: String,
    pub columns: Vec<ManifestColumn>,
    pub lake: ManifestLake,
    pub trigger: Trigger,
    pub started_at: DateTime<Utc>,
    /// When the data file was written (before it was renamed into place).
    pub finished_at: DateTime<Utc>,
    pub duration_seconds: f64,
    pub skyglass_version: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ManifestPeriod {
    pub label: String,
    /// As declared (`yesterday`, `last 7 days`).
    pub description: String,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    pub time_zone: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ManifestColumn {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub list: bool,
}

/// The lake the answer was computed from.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ManifestLake {
    pub generation: u64,
    /// The lake's event-time watermark: the newest event time any flush had written (the
    /// catalog's `flushed_through_us`, the API's `extensions.freshness.flushedThrough`). Posts
    /// still in the buffer then, which came later, are not in the file.
    pub flushed_through: Option<DateTime<Utc>>,
    /// When the last flush was published (wall clock).
    #[serde(default)]
    pub last_flush_at: Option<DateTime<Utc>>,
}

pub fn columns_of(table: &TablePlan) -> Vec<ManifestColumn> {
    table
        .columns
        .iter()
        .map(|c| ManifestColumn { name: c.name.clone(), kind: c.kind.name().to_owned(), list: c.list })
        .collect()
}
