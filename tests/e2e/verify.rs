//! `skyglass lake verify` through the binary: a lake ingested by Skyglass verifies clean, and
//! a damaged file makes it exit 1 naming the file.

use skyglass_tests::{RedisServer, fixtures_dir, ingest_once, skyglass};

#[test]
fn verify_passes_an_ingested_lake_and_fails_a_damaged_one() {
    let redis = RedisServer::start().unwrap();
    let lake = tempfile::tempdir().unwrap();
    ingest_once(lake.path(), &redis.url(), &fixtures_dir().join("jetstream_sample.jsonl"));

    let output = skyglass(lake.path(), &redis.url()).args(["lake", "verify"]).output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}");
    assert!(stdout.contains("0 errors, 0 warnings") && stdout.contains("of 4 tables"), "{stdout}");

    let glob = lake::layout::table_glob(lake.path(), lake::layout::POSTS_TABLE);
    let connection = lake::duckdb::Connection::open_in_memory().unwrap();
    let victim: String =
        connection.query_row(&format!("SELECT min(file) FROM glob('{glob}')"), [], |row| row.get(0)).unwrap();
    let bytes = std::fs::read(&victim).unwrap();
    std::fs::write(&victim, &bytes[..bytes.len() - 100]).unwrap();

    let output = skyglass(lake.path(), &redis.url()).args(["lake", "verify"]).output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains(&format!("error: {victim}: the Parquet footer does not read")), "{stdout}");
    assert!(stdout.contains("1 errors"), "{stdout}");
}

#[test]
fn lake_rollup_builds_the_rollups_verify_finds_missing_or_wrong() {
    let redis = RedisServer::start().unwrap();
    let lake = tempfile::tempdir().unwrap();
    ingest_once(lake.path(), &redis.url(), &fixtures_dir().join("jetstream_sample.jsonl"));
    let run = |args: &[&str]| {
        let output = skyglass(lake.path(), &redis.url()).args(args).output().unwrap();
        (output.status.code(), String::from_utf8_lossy(&output.stdout).into_owned())
    };
    let files = lake::catalog::table_files(lake.path(), lake::layout::POSTS_TABLE).unwrap().paths;
    assert!(files.len() >= 2, "the fixture spans days: {files:?}");
    let cells = |file: &std::path::Path| lake::rollup::path_for(file, lake::rollup::Kind::Cells);
    let likes = lake::catalog::table_files(lake.path(), lake::layout::INTERACTIONS_TABLE).unwrap().paths;
    assert!(!likes.is_empty(), "the fixture has likes");
    let subjects = lake::rollup::path_for(&likes[0], lake::rollup::Kind::Subjects);

    // Flushes wrote them; one removed is a warning, one that counts another file's posts an error.
    std::fs::remove_file(cells(&files[0])).unwrap();
    std::fs::remove_file(&subjects).unwrap();
    std::fs::copy(cells(&files[files.len() - 1]), cells(&files[1])).unwrap();
    let (code, stdout) = run(&["lake", "verify"]);
    assert_eq!(code, Some(1), "{stdout}");
    assert!(stdout.contains(&format!("warning: {}: no rollups", files[0].display())), "{stdout}");
    assert!(stdout.contains(&format!("warning: {}: no rollups", likes[0].display())), "{stdout}");
    assert!(stdout.contains(&format!("error: {}: the rollup counts", cells(&files[1]).display())), "{stdout}");

    // `lake rollup` builds the missing one; `--rebuild` redoes every one, the wrong one with it.
    let (code, stdout) = run(&["lake", "rollup"]);
    assert_eq!(code, Some(0), "{stdout}");
    assert!(stdout.contains("rolled up 2 files"), "{stdout}");
    assert!(subjects.is_file(), "the likes' rollup is back");
    let (code, stdout) = run(&["lake", "rollup", "--rebuild"]);
    assert_eq!(code, Some(0), "{stdout}");
    assert!(stdout.contains(&format!("rolled up {} files", files.len() + likes.len())), "{stdout}");
    let (code, stdout) = run(&["lake", "verify"]);
    assert_eq!(code, Some(0), "{stdout}");
    assert!(stdout.contains("0 errors, 0 warnings"), "{stdout}");
}
