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
    assert!(stdout.contains("0 errors, 0 warnings") && stdout.contains("of 3 tables"), "{stdout}");

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
