//! Rate limiting by cost, over real HTTP against a lake of several days: what each answer says
//! it cost against the bytes of the partitions on disk, a spent budget answered 429 with when to
//! come back, other clients and admins unaffected, cached answers free.

use std::collections::BTreeMap;
use std::time::Duration;

use lake::model::Post;
use serde_json::{Value, json};
use skyglass_tests::{App, RedisServer, skyglass};

use crate::auth::add_key;

const DAY: i64 = 86_400_000_000;
/// The first day of the lake: 2025-03-01.
const FIRST_DAY: i64 = 20_148;
const DAYS: i64 = 5;
const MIB: u64 = 1 << 20;

/// Five days of posts whose texts do not compress away, so each day weighs a few MiB.
fn lake_of_days(dir: &std::path::Path) {
    let mut state = 7_u64;
    let mut word = move || {
        state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        format!("{:x}", state >> 20)
    };
    for day in 0..DAYS {
        let posts: Vec<Post> = (0..40_000_i64)
            .map(|i| {
                let did = format!("did:plc:author{}", i % 900);
                let created_at_us = (FIRST_DAY + day) * DAY + i * 2_000_000;
                Post {
                    uri: format!("at://{did}/app.bsky.feed.post/{day}{i:06}"),
                    cid: format!("c{day}{i}"),
                    rkey: format!("{day}{i:06}"),
                    created_at_us,
                    indexed_at_us: created_at_us,
                    text: format!("{} {} {} {} {}", word(), word(), word(), word(), word()),
                    langs: vec!["en".into()],
                    hashtags: vec![format!("tag{}", i % 13)],
                    did,
                    ..Post::default()
                }
            })
            .collect();
        lake::writer::write_posts(dir, &format!("day-{day}.parquet"), posts).unwrap();
    }
}

/// The bytes of each `posts` day partition (`date=YYYY-MM-DD` → bytes), from the directory.
fn partition_bytes(lake: &std::path::Path) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for partition in std::fs::read_dir(lake.join("posts")).unwrap() {
        let partition = partition.unwrap();
        let name = partition.file_name().to_string_lossy().into_owned();
        let Some(date) = name.strip_prefix("date=") else { continue };
        let bytes: u64 = std::fs::read_dir(partition.path())
            .unwrap()
            .map(|file| file.unwrap())
            .filter(|file| file.file_name().to_string_lossy().ends_with(".parquet"))
            .map(|file| file.metadata().unwrap().len())
            .sum();
        out.insert(date.to_owned(), bytes);
    }
    out
}

fn date(day: i64) -> String {
    chrono::DateTime::from_timestamp_micros(day * DAY).unwrap().format("%Y-%m-%d").to_string()
}

/// What a statement over the days `first..=last` returning `rows` rows costs, by the rule in
/// the README: one unit, one per MiB read, one per hundred rows.
fn cost(bytes: &BTreeMap<String, u64>, first: i64, last: i64, rows: u64) -> u64 {
    let read: u64 = (first..=last).map(|day| bytes[&date(day)]).sum();
    1 + read.div_ceil(MIB) + rows.div_ceil(100)
}

struct Answer {
    status: u16,
    retry_after: Option<u64>,
    body: Value,
}

fn post(app: &App, key: Option<&str>, query: &str) -> Answer {
    let mut request =
        reqwest::blocking::Client::new().post(format!("{}/graphql", app.base_url)).json(&json!({ "query": query }));
    if let Some(key) = key {
        request = request.header("X-Api-Key", key);
    }
    let response = request.send().unwrap();
    let retry_after = response.headers().get("retry-after").map(|v| v.to_str().unwrap().parse().unwrap());
    Answer { status: response.status().as_u16(), retry_after, body: response.json().unwrap() }
}

#[test]
fn each_answer_costs_what_it_reads_and_a_spent_budget_waits_for_its_refill() {
    let redis = RedisServer::start().unwrap();
    let lake = tempfile::tempdir().unwrap();
    lake_of_days(lake.path());
    let bytes = partition_bytes(lake.path());
    assert_eq!(bytes.len(), DAYS as usize);
    assert!(bytes.values().all(|b| *b > MIB), "each day weighs over a MiB: {bytes:?}");
    let keys = lake.path().join("keys.toml");
    let reader = add_key(&keys, "dashboard", "reader");
    let admin = add_key(&keys, "ops", "admin");
    let last = FIRST_DAY + DAYS - 1;
    let whole = cost(&bytes, FIRST_DAY, last, 0);
    // Room for a few scans of the whole lake; five units back a second.
    let burst = 6 * whole;
    let app = App::serve(
        skyglass(lake.path(), &redis.url())
            .args(["serve", "--role", "api", "--listen", "127.0.0.1:0", "--rate-limit", "300"])
            .args(["--rate-limit-burst", &burst.to_string(), "--api-keys"])
            .arg(&keys),
    )
    .unwrap();

    // Each answer's cost is what the partitions it reads weigh on disk.
    let since = format!("{}T00:00:00Z", date(FIRST_DAY + 1));
    let until = format!("{}T00:00:00Z", date(FIRST_DAY + 3));
    let asked = [
        (
            format!(r#"{{ topHashtags(first: 5, filter: {{since: "{since}", until: "{until}"}}) {{ tag posts }} }}"#),
            cost(&bytes, FIRST_DAY + 1, FIRST_DAY + 2, 5),
        ),
        ("{ timeBuckets(interval: DAY) { posts } }".to_owned(), whole),
        // The newest page reads the newest day alone (and asks one row more than it shows).
        ("{ posts(first: 10) { nodes { uri } } }".to_owned(), cost(&bytes, last, last, 11)),
        // No partition is left by a range before the lake.
        (r#"{ topAuthors(filter: {until: "2020-01-01T00:00:00Z"}) { posts } }"#.to_owned(), 1 + 1),
    ];
    let mut spent = 0;
    for (query, expected) in &asked {
        let answer = post(&app, Some(&reader), query);
        assert_eq!(answer.status, 200, "{query}: {:#}", answer.body);
        let cost = &answer.body["extensions"]["cost"];
        assert_eq!(cost["units"].as_u64(), Some(*expected), "{query}: {cost}");
        spent += expected;
        assert_eq!(cost["budget"]["capacity"].as_u64(), Some(burst));
        let remaining = cost["budget"]["remaining"].as_i64().unwrap();
        assert!((burst as i64 - spent as i64..burst as i64 - spent as i64 + 30).contains(&remaining), "{cost}");
    }
    // Two root fields: their costs add up.
    let both = format!("{{ a: {} b: {} }}", &asked[1].0[1..asked[1].0.len() - 1], &asked[3].0[1..asked[3].0.len() - 1]);
    let answer = post(&app, Some(&reader), &both);
    assert_eq!(answer.body["extensions"]["cost"]["units"].as_u64(), Some(whole + 2), "{:#}", answer.body);
    spent += whole + 2;

    // Whole-lake scans until the budget is spent: it may go below zero once, then refuses.
    let scan = |n: usize| {
        format!(r#"{{ timeBuckets(interval: DAY, filter: {{since: "2025-01-01T00:00:{n:02}Z"}}) {{ posts }} }}"#)
    };
    let mut answered = 0;
    let refused = loop {
        let answer = post(&app, Some(&reader), &scan(answered));
        if answer.status != 200 {
            break answer;
        }
        answered += 1;
        assert!(answered < 20, "never refused");
    };
    let left = burst as i64 - spent as i64;
    // As many as the budget held, or a little more when the scans were slow enough (a loaded
    // machine) for the refill to add up.
    let predicted = (left as f64 / whole as f64).ceil() as i64;
    assert!(
        (0..=2).contains(&(answered as i64 - predicted)),
        "{answered} scans answered from {left} units left at {whole} each"
    );
    assert_eq!(refused.status, 429, "{:#}", refused.body);
    let error = &refused.body["errors"][0];
    assert_eq!(error["extensions"]["code"], "RATE_LIMITED", "{:#}", refused.body);
    assert_eq!(error["path"], json!(["timeBuckets"]));
    let wait = refused.retry_after.expect("a Retry-After header");
    assert_eq!(error["extensions"]["retryAfterSeconds"].as_u64(), Some(wait));
    assert!((1..=whole / 5 + 1).contains(&wait), "{wait} s to regain at most {whole} units at 5 a second");
    assert_eq!(refused.body["extensions"]["cost"]["units"], 0, "a refused statement costs nothing");

    // A cached answer costs nothing and is served while the budget is spent.
    let cached = post(&app, Some(&reader), &scan(0));
    assert_eq!((cached.status, cached.body["extensions"]["cache"].as_str()), (200, Some("HIT")), "{:#}", cached.body);
    assert_eq!(cached.body["extensions"]["cost"]["units"], 0);
    // Other clients keep their own budgets; admins have none.
    let anonymous = post(&app, None, &scan(40));
    assert_eq!(anonymous.status, 200, "{:#}", anonymous.body);
    let remaining = anonymous.body["extensions"]["cost"]["budget"]["remaining"].as_i64().unwrap();
    assert!((0..=25).contains(&(remaining - (burst - whole) as i64)), "{:#}", anonymous.body);
    let by_admin = post(&app, Some(&admin), &scan(41));
    assert_eq!(by_admin.status, 200);
    assert_eq!(by_admin.body["extensions"]["cost"], json!({ "units": whole }));

    // A request refused before anything ran costs nothing, and says so too.
    let unknown = post(&app, Some("sgk_not_a_key"), &scan(43));
    assert_eq!(
        (unknown.status, &unknown.body["extensions"]["cost"]),
        (401, &json!({ "units": 0 })),
        "{:#}",
        unknown.body
    );

    // Once refilled as told, the reader is answered again.
    std::thread::sleep(Duration::from_secs(wait));
    let again = post(&app, Some(&reader), &scan(42));
    assert_eq!(again.status, 200, "{:#}", again.body);
    let metrics = app.get("/metrics").text().unwrap();
    assert!(metrics.lines().any(|l| l.starts_with("skyglass_rate_limited_total ") && !l.ends_with(" 0")), "{metrics}");
}

/// Behind a trusted proxy each client named in `X-Forwarded-For` spends its own budget; from any
/// other peer the header is not believed, so a client cannot change budgets by writing it.
#[test]
fn behind_a_trusted_proxy_each_forwarded_client_has_its_own_budget() {
    let redis = RedisServer::start().unwrap();
    let lake = tempfile::tempdir().unwrap();
    lake_of_days(lake.path());
    let whole = cost(&partition_bytes(lake.path()), FIRST_DAY, FIRST_DAY + DAYS - 1, 0);
    let query = json!({ "query": "{ posts(first: 1, filter: {textContains: \"zz\"}) { totalCount } }" });
    for trusted in [false, true] {
        let mut command = skyglass(lake.path(), &redis.url());
        // A budget of less than one scan of the lake, refilling a unit a second: the first
        // request (its newest day, then every day) runs on credit, the next finds it spent.
        // Not half a scan: a day's cost, rounded up to whole MiB, can reach that.
        command.args(["serve", "--role", "api", "--listen", "127.0.0.1:0", "--rate-limit", "60"]);
        command.args(["--rate-limit-burst", &(whole - 1).to_string()]);
        if trusted {
            command.args(["--trusted-proxies", "127.0.0.0/8,::1"]);
        }
        let app = App::serve(&mut command).unwrap();
        let status_for = |client: &str| {
            let request = app.client.post(format!("{}/graphql", app.base_url)).json(&query);
            let response =
                request.header("X-Forwarded-For", client).header("Cache-Control", "no-store").send().unwrap();
            response.status().as_u16()
        };
        assert_eq!(status_for("198.51.100.1"), 200, "the first scan runs on credit");
        assert_eq!(status_for("198.51.100.1"), 429, "then the budget is spent");
        let other = status_for("198.51.100.2");
        assert_eq!(other, if trusted { 200 } else { 429 }, "another client, trusted proxy: {trusted}");
        assert!(app.stop().success());
    }
}
