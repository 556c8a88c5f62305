//! The playground and the explorer in a real headless Chromium, against the real server fed by
//! a Jetstream stand-in: what a person sees, checked against numbers computed here from the
//! posts the test made.
//!
//! The pages must be built (`scripts/web`) and Chromium installed; the README's test command
//! does both and sets `REQUIRE_BROWSER_TESTS=1`, which makes a missing part a failure. Run
//! alone without them, the test says what is missing and passes.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Timelike, Utc};
use serde_json::{Value, json};
use skyglass_tests::browser::{Browser, chromium};
use skyglass_tests::jetstream::JetstreamStandIn;
use skyglass_tests::{App, RedisServer, poll, skyglass};

const TOPICS: [&str; 3] = ["lake", "river", "sea"];
const TAGS: [&str; 4] = ["blue", "green", "blue", "red"];
const LANGS: [&str; 2] = ["en", "de"];
const AUTHORS: usize = 4;
const POSTS: usize = 50;
const WAIT: Duration = Duration::from_secs(30);

/// A post the test made, as the explorer should show it.
struct Made {
    uri: String,
    did: String,
    text: String,
    created: DateTime<Utc>,
    tag: String,
    lang: String,
}

/// A Jetstream commit event creating a post, with its hashtag as a facet.
fn event(did: &str, rkey: &str, text: &str, lang: &str, created: DateTime<Utc>) -> String {
    let start = text.find('#').unwrap();
    json!({
        "did": did,
        "time_us": created.timestamp_micros() + 1_500,
        "kind": "commit",
        "commit": {
            "rev": format!("rev{rkey}"),
            "operation": "create",
            "collection": "app.bsky.feed.post",
            "rkey": rkey,
            "cid": format!("bafyrei{rkey}"),
            "record": {
                "$type": "app.bsky.feed.post",
                "createdAt": created.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                "text": text,
                "langs": [lang],
                "facets": [{
                    "index": { "byteStart": start, "byteEnd": text.len() },
                    "features": [{ "$type": "app.bsky.richtext.facet#tag", "tag": &text[start + 1..] }],
                }],
            },
        },
    })
    .to_string()
}

/// Fifty posts, one every 37 minutes from 2026-11-20 00:10 UTC, topics, hashtags, languages
/// and authors in turn.
fn made_posts() -> (Vec<String>, Vec<Made>) {
    let start = Utc.with_ymd_and_hms(2026, 11, 20, 0, 10, 0).unwrap();
    let mut lines = Vec::new();
    let mut made = Vec::new();
    for i in 0..POSTS {
        let did = format!("did:plc:browsertest{}", i % AUTHORS);
        let rkey = format!("3kbrowser{i:03}");
        let (topic, tag, lang) = (TOPICS[i % 3], TAGS[i % 4], LANGS[i % 2]);
        let text = format!("{topic} note {i} #{tag}");
        let created = start + chrono::Duration::minutes(37 * i as i64);
        lines.push(event(&did, &rkey, &text, lang, created));
        let uri = format!("at://{did}/app.bsky.feed.post/{rkey}");
        made.push(Made { uri, did, text, created, tag: tag.to_owned(), lang: lang.to_owned() });
    }
    (lines, made)
}

/// The buckets from the first post's to the last post's, named by `bucket` (every bucket is an
/// hour or longer, so a step of half an hour visits each).
fn bucket_count<K: Ord>(posts: &[&Made], bucket: impl Fn(DateTime<Utc>) -> K) -> usize {
    let first = posts.iter().map(|p| p.created).min().unwrap();
    let last = posts.iter().map(|p| p.created).max().unwrap();
    let mut keys = std::collections::BTreeSet::from([bucket(last)]);
    let mut at = first;
    while at <= last {
        keys.insert(bucket(at));
        at += chrono::Duration::minutes(30);
    }
    keys.len()
}

/// The most common value of `key` among `posts` (ties: the smallest), with its count.
fn top<'a>(posts: &[&'a Made], key: impl Fn(&'a Made) -> &'a str) -> (String, usize) {
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for post in posts {
        *counts.entry(key(post)).or_default() += 1;
    }
    let (value, count) = counts.iter().max_by_key(|(value, count)| (**count, std::cmp::Reverse(**value))).unwrap();
    (value.to_string(), *count)
}

/// Whether the browser tests must run here (the README's test command says so).
fn required() -> bool {
    std::env::var_os("REQUIRE_BROWSER_TESTS").is_some_and(|v| v == "1")
}

/// The built pages, or why the test cannot run.
fn ready() -> Result<(), String> {
    let dist = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../api/web/dist");
    if !dist.join("explore/index.html").is_file() {
        return Err(format!("the pages are not built ({}): run scripts/web", dist.display()));
    }
    if chromium().is_none() {
        return Err("Chromium is not installed (apt-get install chromium, or set CHROMIUM_BIN)".to_owned());
    }
    Ok(())
}

/// `__set(selector, value)`: sets a form control the way a person would, so React sees the change.
const SET_CONTROL: &str = r#"
window.__set = (selector, value) => {
  const element = document.querySelector(selector);
  if (element.type === 'checkbox') {
    if (element.checked !== value) element.click();
    return true;
  }
  Object.getOwnPropertyDescriptor(Object.getPrototypeOf(element), 'value').set.call(element, value);
  element.dispatchEvent(new Event(element.tagName === 'SELECT' ? 'change' : 'input', { bubbles: true }));
  return true;
};
"#;

fn explorer_state(browser: &mut Browser) -> Value {
    browser
        .eval(
            "({ total: document.querySelector('#total')?.textContent, \
                shown: [...document.querySelectorAll('#results li.post')].map(li => li.dataset.uri), \
                texts: [...document.querySelectorAll('#results li.post .text')].map(p => p.textContent), \
                busy: document.querySelector('main')?.getAttribute('aria-busy'), \
                more: !!document.querySelector('#more') })",
        )
        .unwrap()
}

/// Clicks "More" until the list ends; the uris shown, in order.
fn page_through(browser: &mut Browser) -> Vec<String> {
    loop {
        let state = explorer_state(browser);
        if !state["more"].as_bool().unwrap() {
            return state["shown"].as_array().unwrap().iter().map(|u| u.as_str().unwrap().to_owned()).collect();
        }
        let shown = state["shown"].as_array().unwrap().len();
        browser.eval("document.querySelector('#more').click()").unwrap();
        browser.wait_for(&format!("document.querySelectorAll('#results li.post').length > {shown}"), WAIT).unwrap();
    }
}

/// Waits for the explorer to show `total` posts and be idle.
fn wait_for_total(browser: &mut Browser, total: usize) {
    browser
        .wait_for(
            &format!(
                "document.querySelector('#total')?.textContent === '{total}' && \
                 document.querySelector('main')?.getAttribute('aria-busy') === 'false'"
            ),
            WAIT,
        )
        .unwrap();
}

#[test]
fn the_playground_and_the_explorer_work_in_a_real_browser() {
    if let Err(missing) = ready() {
        assert!(!required(), "the browser test cannot run: {missing}");
        eprintln!("skipped: {missing}; the README's test command installs and builds what it needs");
        return;
    }
    let redis = RedisServer::start().unwrap();
    let lake = tempfile::tempdir().unwrap();
    let (lines, made) = made_posts();
    let jetstream = JetstreamStandIn::start(lines, tokio::sync::watch::channel(true).1);
    let app = App::serve(
        skyglass(lake.path(), &redis.url())
            .args(["serve", "--listen", "127.0.0.1:0", "--flush-interval", "1h", "--source"])
            .arg(format!("jetstream:{}", jetstream.url)),
    )
    .unwrap();
    poll(WAIT, || {
        (app.query("{ posts { totalCount } }", json!({}))["posts"]["totalCount"] == json!(POSTS)).then_some(())
    })
    .expect("the made posts reach the hot tier");
    let mut browser = Browser::launch().unwrap();

    // The playground: loads with no internet, an example tab per root field, runs a query.
    browser.goto(&format!("{}/", app.base_url)).unwrap();
    // Ready once the editors show the first example with its variables.
    browser.wait_for("document.querySelectorAll('.graphiql-editor')[1]?.innerText.includes('langs')", WAIT).unwrap();
    let tabs = browser.wait_for("document.querySelectorAll('.graphiql-tab').length", WAIT).unwrap();
    assert_eq!(tabs, json!(root_fields().len()), "an example tab per root field");
    browser.eval("document.querySelector('.graphiql-execute-button').click()").unwrap();
    // The example asks for English posts, newest first: the newest English post heads the answer.
    let newest_english = made.iter().filter(|p| p.lang == "en").max_by_key(|p| p.created).unwrap();
    // Monaco wraps long lines: the response's text is compared without any whitespace.
    let response = |needle: &str| {
        let needle: String = needle.split_whitespace().collect();
        format!("document.querySelector('.graphiql-response')?.innerText.replace(/\\s+/g, '').includes({needle:?})")
    };
    browser.wait_for(&response(&format!("\"text\": \"{}\"", newest_english.text)), WAIT).unwrap();
    assert_same_origin(&mut browser);
    // The schema's docs are there (from introspection).
    browser
        .eval("document.querySelector('.graphiql-sidebar button[aria-label=\"Show Documentation Explorer\"]').click()")
        .unwrap();
    browser.wait_for("document.querySelector('.graphiql-doc-explorer')?.innerText.includes('Query')", WAIT).unwrap();
    // A subscription runs over /graphql/ws: the LivePosts tab shows a post pushed now.
    browser
        .eval("[...document.querySelectorAll('.graphiql-tab-button')].find(b => b.innerText.includes('LivePosts')).click()")
        .unwrap();
    browser
        .wait_for("document.querySelector('.graphiql-editor')?.innerText.replace(/\\u00a0/g, ' ').includes('subscription LivePosts')", WAIT)
        .unwrap();
    // GraphiQL picks the tab's operation name up after a moment, as a person would take.
    std::thread::sleep(Duration::from_secs(1));
    browser.eval("document.querySelector('.graphiql-execute-button').click()").unwrap();
    std::thread::sleep(Duration::from_millis(700));
    let playground_live = "at://did:plc:browsertest0/app.bsky.feed.post/3kplaygroundlive";
    assert!(jetstream.push(event("did:plc:browsertest0", "3kplaygroundlive", "sea live #blue", "en", Utc::now())));
    browser.wait_for(&response(playground_live), WAIT).unwrap();

    // The explorer: every post, newest first, a page at a time.
    let mut all: Vec<&Made> = made.iter().collect();
    all.sort_by_key(|p| std::cmp::Reverse(p.created));
    browser.goto(&format!("{}/explore", app.base_url)).unwrap();
    browser.eval(SET_CONTROL).unwrap();
    // The live post of the playground counts too: it is newer than all the made ones.
    wait_for_total(&mut browser, POSTS + 1);
    let shown = page_through(&mut browser);
    assert_eq!(shown.len(), POSTS + 1);
    assert_eq!(shown[0], playground_live);
    assert_eq!(shown[1..], all.iter().map(|p| p.uri.clone()).collect::<Vec<_>>()[..], "newest first, each once");
    let freshness = browser.eval("document.querySelector('#freshness').dataset.ingestedThrough").unwrap();
    assert!(freshness.as_str().is_some_and(|s| !s.is_empty()), "the freshness watermark shows: {freshness}");

    // A search: the count, the posts, the chart's points, the top hashtag and author.
    browser.eval("__set('input[name=q]', 'river')").unwrap();
    browser.eval("document.querySelector('form#search button[type=submit]').click()").unwrap();
    let river: Vec<&Made> = made.iter().filter(|p| p.text.contains("river")).collect();
    wait_for_total(&mut browser, river.len());
    let shown = page_through(&mut browser);
    let mut expected: Vec<&Made> = river.clone();
    expected.sort_by_key(|p| std::cmp::Reverse(p.created));
    assert_eq!(shown, expected.iter().map(|p| p.uri.clone()).collect::<Vec<_>>());
    assert!(
        explorer_state(&mut browser)["texts"].as_array().unwrap().iter().all(|t| t.as_str().unwrap().contains("river"))
    );
    let hours = bucket_count(&river, |t| (t.date_naive(), t.hour()));
    let points = browser.wait_for("document.querySelector('svg#chart')?.dataset.buckets", WAIT).unwrap();
    assert_eq!(points, json!(hours.to_string()), "an hourly point from the first river post's hour to the last's");
    let circles = browser.eval("document.querySelectorAll('svg#chart circle').length").unwrap();
    assert_eq!(circles, json!(hours));
    let (tag, tag_posts) = top(&river, |p| p.tag.as_str());
    let first_tag = browser.wait_for("document.querySelector('#top-hashtags li')?.innerText", WAIT).unwrap();
    assert_eq!(
        first_tag.as_str().unwrap().split_whitespace().collect::<Vec<_>>(),
        [format!("#{tag}"), tag_posts.to_string()]
    );
    let (did, did_posts) = top(&river, |p| p.did.as_str());
    let first_author = browser.eval("document.querySelector('#top-authors li')?.innerText").unwrap();
    assert_eq!(first_author.as_str().unwrap().split_whitespace().collect::<Vec<_>>(), [did, did_posts.to_string()]);

    // Days in a time zone half an hour off UTC, grouped by language: a point per day and language.
    let kolkata: chrono_tz::Tz = "Asia/Kolkata".parse().unwrap();
    browser.eval("__set('select[name=interval]', 'DAY')").unwrap();
    browser.eval("__set('select[name=tz]', 'Asia/Kolkata')").unwrap();
    browser.eval("__set('input[name=group]', true)").unwrap();
    let days = bucket_count(&river, |t| t.with_timezone(&kolkata).date_naive());
    let langs = river.iter().map(|p| p.lang.as_str()).collect::<std::collections::BTreeSet<_>>().len();
    browser
        .wait_for(
            &format!(
                "document.querySelector('svg#chart')?.dataset.buckets === '{days}' && \
                 document.querySelector('svg#chart').dataset.series === '{langs}'"
            ),
            WAIT,
        )
        .unwrap();
    assert_eq!(browser.eval("document.querySelectorAll('svg#chart circle').length").unwrap(), json!(days * langs));
    assert!(
        browser.eval("location.search").unwrap().as_str().unwrap().contains("tz=Asia%2FKolkata"),
        "the view is in the address"
    );

    // A date range is whole days in the chosen zone: 20 November in Kolkata.
    browser.eval("__set('input[name=since]', '2026-11-20')").unwrap();
    browser.eval("__set('input[name=until]', '2026-11-20')").unwrap();
    browser.eval("document.querySelector('form#search button[type=submit]').click()").unwrap();
    let day = |t: &DateTime<Utc>| {
        t.with_timezone(&kolkata).date_naive() == chrono::NaiveDate::from_ymd_opt(2026, 11, 20).unwrap()
    };
    let in_day = river.iter().filter(|p| day(&p.created)).count();
    assert!(in_day > 0 && in_day < river.len());
    wait_for_total(&mut browser, in_day);

    // The live feed: a post ingested now that matches the search shows without a reload.
    browser.wait_for("document.querySelector('#live-state')?.textContent === 'live'", WAIT).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let live_uri = "at://did:plc:browsertest1/app.bsky.feed.post/3kexplorerlive";
    assert!(jetstream.push(event("did:plc:browsertest1", "3kexplorerlive", "river live now #green", "en", Utc::now())));
    browser.wait_for(&format!("document.querySelector('#live li.post[data-uri=\"{live_uri}\"]')"), WAIT).unwrap();

    // The explorer sent persisted queries: GETs by hash, each document kept once in Redis.
    let persisted = browser
        .eval("performance.getEntriesByType('resource').filter(e => e.name.includes('/graphql?') && e.name.includes('persistedQuery')).length")
        .unwrap();
    assert!(persisted.as_u64().unwrap() >= 4, "{persisted}");
    let mut connection = redis.connection();
    let documents: Vec<String> = redis::cmd("KEYS").arg("skyglass:apq:*").query(&mut connection).unwrap();
    assert_eq!(documents.len(), 2, "the explorer's two query documents: {documents:?}");

    assert_same_origin(&mut browser);
    assert!(browser.exceptions.is_empty(), "the pages threw: {:?}", browser.exceptions);
    drop(browser);
    assert!(app.stop().success());
}

/// Everything the page loaded came from its own server: it works without internet access.
fn assert_same_origin(browser: &mut Browser) {
    let foreign = browser
        .eval("performance.getEntriesByType('resource').map(e => e.name).filter(n => new URL(n).origin !== location.origin)")
        .unwrap();
    assert_eq!(foreign, json!([]), "loaded from elsewhere");
}

/// The root fields of the schema (`Query`, `Mutation`, `Subscription`), from `schema.graphql`.
fn root_fields() -> Vec<String> {
    let schema = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../schema.graphql")).unwrap();
    let mut fields = Vec::new();
    let mut inside = false;
    let mut in_doc = false;
    for line in schema.lines() {
        let line = line.trim();
        // Descriptions: `"""` alone opens or closes one; a one-line one is skipped whole.
        if line == "\"\"\"" {
            in_doc = !in_doc;
            continue;
        }
        if in_doc || line.starts_with("\"\"\"") {
            continue;
        }
        if ["type Query {", "type Mutation {", "type Subscription {"].contains(&line) {
            inside = true;
        } else if line == "}" {
            inside = false;
        } else if inside && let Some(name) = line.split(['(', ':']).next() {
            fields.push(name.trim().to_owned());
        }
    }
    fields
}

/// Every root field has an example in the playground (checked without a browser).
#[test]
fn the_playground_has_an_example_for_every_root_field() {
    let examples = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../api/web/src/examples.js")).unwrap();
    let fields = root_fields();
    assert_eq!(fields.len(), 11, "{fields:?}");
    for field in fields {
        assert!(
            examples.contains(&format!("  {field}(")) || examples.contains(&format!("  {field} {{")),
            "no example uses {field}"
        );
    }
}

/// What a browser or a frontend on another site gets over HTTP: pages that revalidate, assets
/// kept for good and compressed, GET answers kept briefly and POST answers never, CORS only
/// for the configured origins, and a page that says how to build the pages when they are not.
#[test]
fn pages_answers_and_cors_carry_the_headers_a_browser_needs() {
    let redis = RedisServer::start().unwrap();
    let lake = tempfile::tempdir().unwrap();
    let serve = |extra: &[&str]| {
        App::serve(
            skyglass(lake.path(), &redis.url())
                .args(["serve", "--role", "api", "--listen", "127.0.0.1:0", "--cache-recent-ttl", "7s"])
                .args(extra),
        )
        .unwrap()
    };
    let client = reqwest::blocking::Client::new();
    let header = |response: &reqwest::blocking::Response, name: &str| {
        response.headers().get(name).map(|v| v.to_str().unwrap().to_owned())
    };

    // CORS: a configured origin may call, another may not.
    let app = serve(&["--cors-origins", "https://app.example.org,http://localhost:5173"]);
    let graphql = format!("{}/graphql", app.base_url);
    for (origin, allowed) in [("https://app.example.org", true), ("https://elsewhere.example", false)] {
        let preflight = client
            .request(reqwest::Method::OPTIONS, &graphql)
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header("access-control-request-headers", "content-type")
            .send()
            .unwrap();
        assert_eq!(header(&preflight, "access-control-allow-origin").is_some(), allowed, "{origin}");
        let answer = client
            .post(&graphql)
            .header("origin", origin)
            .json(&json!({"query": "{ lake { posts } }"}))
            .send()
            .unwrap();
        assert_eq!(header(&answer, "access-control-allow-origin").as_deref() == Some(origin), allowed, "{origin}");
    }

    // GraphQL answers: a GET one may be kept as long as the shortest cache lifetime, a POST
    // one or an error never.
    let get = client.get(format!("{graphql}?query=%7B%20lake%20%7B%20posts%20%7D%20%7D")).send().unwrap();
    assert_eq!(header(&get, "cache-control").as_deref(), Some("public, max-age=7"));
    let post = client.post(&graphql).json(&json!({"query": "{ lake { posts } }"})).send().unwrap();
    assert_eq!(header(&post, "cache-control").as_deref(), Some("no-store"));
    let error = client.get(format!("{graphql}?query=%7B%20nope%20%7D")).send().unwrap();
    assert_eq!(header(&error, "cache-control").as_deref(), Some("no-store"));
    assert!(app.stop().success());

    // Without a build the pages say how to make one; a --web-dir without one is refused.
    let empty = tempfile::tempdir().unwrap();
    let output = skyglass(lake.path(), &redis.url())
        .args(["serve", "--role", "api", "--listen", "127.0.0.1:0", "--web-dir"])
        .arg(empty.path())
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--web-dir") && stderr.contains("scripts/web"), "{stderr}");

    if let Err(missing) = ready() {
        assert!(!required(), "the pages cannot be checked: {missing}");
        eprintln!("the built pages are not checked: {missing}");
        return;
    }
    let dist = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../api/web/dist");
    let app = serve(&["--web-dir", dist.to_str().unwrap()]);
    for page in ["/", "/explore"] {
        let response = client.get(format!("{}{page}", app.base_url)).send().unwrap();
        assert_eq!(response.status(), 200, "{page}");
        assert_eq!(header(&response, "cache-control").as_deref(), Some("no-cache"), "{page}");
        let html = response.text().unwrap();
        assert!(!html.contains("https://"), "{page} loads nothing from elsewhere");
        // Each page's script, kept for good and compressed on the way.
        let script = html.split("src=\"").nth(1).and_then(|rest| rest.split('"').next()).unwrap().to_owned();
        assert!(script.starts_with("/assets/"), "{script}");
        let asset =
            client.get(format!("{}{script}", app.base_url)).header("accept-encoding", "br, gzip").send().unwrap();
        assert_eq!(asset.status(), 200, "{script}");
        assert_eq!(header(&asset, "cache-control").as_deref(), Some("public, max-age=31536000, immutable"));
        assert!(matches!(header(&asset, "content-encoding").as_deref(), Some("br" | "gzip")), "{script}");
    }
    let missing = client.get(format!("{}/assets/nothing-here.js", app.base_url)).send().unwrap();
    assert_eq!(missing.status(), 404);
    assert!(app.stop().success());
}
