//! Settings from a config file, through the real binary: the file applies where no flag or
//! variable says otherwise, and a served API really runs with it.

use serde_json::json;
use skyglass_tests::{App, RedisServer, skyglass};

fn write_config(dir: &std::path::Path, text: &str) -> std::path::PathBuf {
    let path = dir.join("skyglass.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// The value and source of one line of `--print-config`.
fn printed<'a>(output: &'a str, key: &str) -> (&'a str, &'a str) {
    let line = output.lines().find(|l| l.starts_with(&format!("{key} ="))).unwrap_or_else(|| panic!("{key}: {output}"));
    let (setting, source) = line.split_once('#').unwrap();
    (setting.split_once(" = ").unwrap().1.trim(), source.trim())
}

#[test]
fn a_flag_beats_a_variable_which_beats_the_file_which_beats_the_default() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        "listen = \"127.0.0.1:9001\"\nflush_interval = \"1m\"\nmax_page_size = 50\nflush_consumer = \"from-file\"\n",
    );
    let output = skyglass(dir.path(), "redis://127.0.0.1:1")
        .env("SKYGLASS_FLUSH_INTERVAL", "2m")
        .env("SKYGLASS_MAX_PAGE_SIZE", "60")
        .args(["serve", "--config"])
        .arg(&config)
        .args(["--max-page-size", "70", "--print-config"])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let out = String::from_utf8(output.stdout).unwrap();
    assert_eq!(printed(&out, "max_page_size"), ("70", "flag"));
    assert_eq!(printed(&out, "flush_interval"), ("\"2m\"", "environment"));
    assert_eq!(printed(&out, "listen"), ("\"127.0.0.1:9001\"", "config file"));
    assert_eq!(printed(&out, "flush_consumer"), ("\"from-file\"", "config file"));
    assert_eq!(printed(&out, "query_timeout"), ("\"10s\"", "default"));
}

#[test]
fn a_bad_key_or_value_in_the_file_stops_the_binary_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    for (text, expected) in
        [("flush_intervall = \"1m\"\n", "unknown key `flush_intervall`"), ("role = \"boss\"\n", "`role = \"boss\"`")]
    {
        let config = write_config(dir.path(), text);
        let output =
            skyglass(dir.path(), "redis://127.0.0.1:1").args(["serve", "--config"]).arg(&config).output().unwrap();
        assert_eq!(output.status.code(), Some(2), "{text}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
        assert!(stderr.contains(expected), "{text}: {stderr}");
    }
}

#[test]
fn a_server_runs_with_the_settings_of_its_config_file() {
    let redis = RedisServer::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "role = \"api\"\nlisten = \"127.0.0.1:0\"\nmax_page_size = 3\n");
    let app = App::serve(skyglass(dir.path(), &redis.url()).arg("serve").arg("--config").arg(&config)).unwrap();
    let within = app.request("{ posts(first: 3) { nodes { uri } } }", json!({}));
    assert!(within.get("errors").is_none(), "{within}");
    let over = app.request("{ posts(first: 4) { nodes { uri } } }", json!({}));
    let message = over["errors"][0]["message"].as_str().unwrap_or_default();
    assert!(message.contains("between 0 and 3"), "{over}");
}
