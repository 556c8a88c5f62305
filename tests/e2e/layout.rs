//! The shape of the workspace: the layout of DESIGN.md, and dependencies that flow one way
//! (lake ← ingest ← api). Read from the Cargo.toml files, so a new edge fails here.

use std::path::Path;

fn repo() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

fn dependencies(krate: &str) -> Vec<String> {
    let manifest = std::fs::read_to_string(repo().join(krate).join("Cargo.toml")).unwrap();
    let manifest: toml::Value = toml::from_str(&manifest).unwrap();
    ["dependencies", "dev-dependencies", "build-dependencies"]
        .iter()
        .filter_map(|section| manifest.get(section).and_then(|d| d.as_table()))
        .flat_map(|table| table.keys().cloned())
        .collect()
}

#[test]
fn dependencies_flow_from_lake_to_ingest_to_api_and_never_back() {
    let ours = ["lake", "ingest", "api", "skyglass-tests"];
    let allowed: [(&str, &[&str]); 3] = [("lake", &[]), ("ingest", &["lake"]), ("api", &["lake", "ingest"])];
    for (krate, may_use) in allowed {
        let used: Vec<String> = dependencies(krate).into_iter().filter(|d| ours.contains(&d.as_str())).collect();
        for dependency in &used {
            assert!(may_use.contains(&dependency.as_str()), "{krate} must not depend on {dependency}");
        }
    }
}

#[test]
fn only_lake_links_duckdb_and_lake_knows_nothing_of_graphql_http_or_redis() {
    for krate in ["ingest", "api", "tests"] {
        assert!(!dependencies(krate).iter().any(|d| d == "duckdb" || d == "libduckdb-sys"), "{krate} links duckdb");
    }
    let forbidden = ["async-graphql", "axum", "redis", "deadpool-redis", "tokio", "tower-http", "hyper"];
    for dependency in dependencies("lake") {
        assert!(!forbidden.contains(&dependency.as_str()), "lake depends on {dependency}");
    }
}

#[test]
fn the_repository_has_the_layout_of_the_design() {
    for path in [
        "Cargo.toml",
        "lake",
        "ingest",
        "api",
        "tests",
        "schema.graphql",
        "deploy",
        "README.md",
        "ARCHITECTURE.md",
        ".ci/run",
    ] {
        assert!(repo().join(path).exists(), "{path} is missing");
    }
}
