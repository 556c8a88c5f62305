//! The result cache: whole GraphQL answers in Redis, keyed by what they depend on.
//!
//! The key hashes the lake generation with the request, normalised: its document without
//! comments and insignificant whitespace or commas ([`normalize_document`]), its operation name,
//! and its variables with their keys sorted. Requests that differ only in layout share answers. Every change to the lake's files publishes a new generation, so a cached answer
//! is never older than the data it was computed from: no TTL guesses; the TTL only bounds how
//! long an unused answer takes room. Only answers without errors are kept.
//!
//! An answer that read the hot tier (posts still in the buffer) depends on more: under its key
//! is only a marker, and the answer itself is under that key and the hot tier's version, kept
//! for the short `recent_ttl` (the version names the last buffer entry the tier holds, so it
//! moves with every batch ingested, and replicas tailing one buffer agree on it:
//! [`crate::hot`]). The buffer's deletes and account events also hide posts of older days
//! within a second, uncached; an answer cached for such a day shows them from the next flush
//! on, which moves the generation. Answers over
//! today's partition are kept for `recent_ttl` too; older days for `ttl`.
//!
//! Identical requests that miss at the same time compute once: in one process, the first runs
//! and the others wait for its answer (single flight); across API replicas sharing Redis, the
//! process whose request first claims the key (`SET NX` with a lease) computes, and the others
//! wait for its answer to appear in Redis, or compute themselves if the claim goes without one. If Redis is unreachable, every request is
//! answered from the lake, uncached (`BYPASS`), and the cache tries Redis again a little later.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use tokio::sync::watch;

use crate::redis_link::RedisLink;

/// Set by a resolver whose answer depends on more than the lake (the Redis buffer, say): such an
/// answer is not kept. Each request carries its own, in its context data.
#[derive(Clone, Default)]
pub struct Volatile(Arc<std::sync::atomic::AtomicBool>);

impl Volatile {
    pub fn mark(&self) {
        self.0.store(true, std::sync::atomic::Ordering::Relaxed);
    }

    pub fn is_marked(&self) -> bool {
        self.0.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// What the key of an answer that read the hot tier holds instead of the answer (not JSON, so
/// never an answer).
const HOT_MARKER: &str = "\u{1}hot";

/// How long a persisted query document is kept after it was last sent whole.
const PERSISTED_SECONDS: u64 = 30 * 86_400;

/// Why a persisted query could not be used (Apollo's error messages, which clients act on).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Persisted {
    /// Not stored (or Redis is away): the client sends the document again, with its hash.
    NotFound,
    /// The document does not hash to the hash sent with it.
    Mismatch,
    /// `persistedQuery` is not an object with a SHA-256 hex `sha256Hash`.
    Invalid,
}

impl Persisted {
    pub fn message(self) -> &'static str {
        match self {
            Persisted::NotFound => "PersistedQueryNotFound",
            Persisted::Mismatch => "provided sha does not match query",
            Persisted::Invalid => "persistedQuery must be an object with a SHA-256 hex sha256Hash",
        }
    }

    pub fn code(self) -> &'static str {
        match self {
            Persisted::NotFound => "PERSISTED_QUERY_NOT_FOUND",
            Persisted::Mismatch | Persisted::Invalid => "BAD_USER_INPUT",
        }
    }
}

/// A GraphQL document without what the language ignores: comments, commas and whitespace
/// between tokens, but for one space between two tokens that would otherwise run together
/// (`query Q`, `[1 2]`). Strings and block strings are kept as they are. Two documents with the
/// same normal form have the same tokens, so the same answer.
pub fn normalize_document(document: &str) -> String {
    let word = |c: char| c.is_alphanumeric() || c == '_';
    let mut out = String::with_capacity(document.len());
    let mut chars = document.char_indices().peekable();
    // Whether ignored text was skipped since the last token.
    let mut gap = false;
    while let Some((at, c)) = chars.next() {
        match c {
            ' ' | '\t' | '\n' | '\r' | ',' | '\u{feff}' => gap = true,
            '#' => {
                while chars.next_if(|&(_, c)| c != '\n' && c != '\r').is_some() {}
                gap = true;
            }
            _ => {
                if gap && out.ends_with(word) && (word(c) || c == '-') {
                    out.push(' ');
                }
                gap = false;
                if c != '"' {
                    out.push(c);
                    continue;
                }
                // A string, copied whole up to its closing quote(s).
                let rest = &document[at..];
                let end = if rest.starts_with("\"\"\"") { block_string_end(rest) } else { string_end(rest) };
                out.push_str(&rest[..end]);
                while chars.next_if(|&(next, _)| next < at + end).is_some() {}
            }
        }
    }
    out
}

/// The length of the string `"…"` that `text` starts with (all of `text` if it is not closed).
fn string_end(text: &str) -> usize {
    let mut escaped = false;
    for (at, c) in text.char_indices().skip(1) {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            '"' => return at + 1,
            '\n' | '\r' => return at,
            _ => {}
        }
    }
    text.len()
}

/// The length of the block string `"""…"""` that `text` starts with (all of `text` if it is
/// not closed); `\"""` inside it is no end.
fn block_string_end(text: &str) -> usize {
    let mut from = 3;
    while let Some(found) = text[from..].find("\"\"\"") {
        let at = from + found;
        if text[..at].ends_with('\\') {
            from = at + 3;
            continue;
        }
        return at + 3;
    }
    text.len()
}

/// JSON with every object's keys sorted, so that the order a client sent them in does not matter.
fn canonical_json(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::Object(map) => {
            let mut entries: Vec<_> = map.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            let fields: Vec<String> = entries
                .into_iter()
                .map(|(key, value)| format!("{}:{}", serde_json::Value::from(key.as_str()), canonical_json(value)))
                .collect();
            format!("{{{}}}", fields.join(","))
        }
        serde_json::Value::Array(items) => {
            format!("[{}]", items.iter().map(canonical_json).collect::<Vec<_>>().join(","))
        }
        other => other.to_string(),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// How an answer was served, as `extensions.cache`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Hit,
    Miss,
    /// Not looked up: the client asked (`Cache-Control: no-cache`) or Redis is unreachable.
    Bypass,
}

impl Status {
    /// Every status, for the metric's pre-registered labels.
    pub const ALL: [Status; 3] = [Status::Hit, Status::Miss, Status::Bypass];

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Hit => "HIT",
            Status::Miss => "MISS",
            Status::Bypass => "BYPASS",
        }
    }
}

/// How long Redis may take to answer the cache before the request goes on without it.
const REDIS_BUDGET: Duration = Duration::from_millis(250);
/// After Redis failed, how long the cache leaves it alone.
const RETRY_AFTER: Duration = Duration::from_secs(2);

pub struct ResultCache {
    redis: Arc<RedisLink>,
    prefix: String,
    /// Where persisted query documents live, by their SHA-256.
    persisted_prefix: String,
    ttl: Duration,
    /// How long an answer that read the hot tier or today is kept.
    recent_ttl: Duration,
    /// Requests being computed now, by key: followers wait on the leader's answer.
    in_flight: Mutex<HashMap<String, watch::Receiver<Option<Arc<String>>>>>,
    down_until: Mutex<Option<Instant>>,
}

/// Who computes a missed answer among the replicas.
pub enum Claim {
    /// This process: release with [`ResultCache::release`] once the answer is kept.
    Mine(String),
    /// Another replica is computing it.
    Theirs,
    /// Redis cannot say: compute.
    Unknown,
}

/// How long a replica's claim to compute an answer lasts (a crashed one frees it this fast).
const CLAIM_LEASE: Duration = Duration::from_secs(30);
/// How often a waiting replica looks for the answer.
const CLAIM_POLL: Duration = Duration::from_millis(20);

/// Deletes a claim only while it is still ours.
const RELEASE_CLAIM: &str =
    "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) else return 0 end";

/// Who computes a missed answer.
pub enum Flight {
    /// This request computes it and must call [`Leader::finish`].
    Leader(Leader),
    /// Another request computed it (the answer), or failed to (`None`: compute it yourself).
    Follower(Option<Arc<String>>),
}

pub struct Leader {
    key: String,
    sender: watch::Sender<Option<Arc<String>>>,
}

impl ResultCache {
    pub fn new(redis: Arc<RedisLink>, namespace: &str, ttl: Duration, recent_ttl: Duration) -> ResultCache {
        ResultCache {
            redis,
            prefix: format!("{namespace}:cache:"),
            persisted_prefix: format!("{namespace}:apq:"),
            ttl,
            recent_ttl,
            in_flight: Mutex::new(HashMap::new()),
            down_until: Mutex::new(None),
        }
    }

    /// Whether answers are cached at all (a TTL of zero turns the cache off).
    pub fn enabled(&self) -> bool {
        !self.ttl.is_zero()
    }

    /// The key of a request at a lake generation.
    pub fn key(&self, generation: u64, request: &async_graphql::Request) -> String {
        let mut hash = Sha256::new();
        hash.update(generation.to_be_bytes());
        // The caller's role: what a role may see (introspection, the allow-list's documents) is
        // checked when an answer is computed, so one role's answer never serves another.
        let role = request.data.get(&std::any::TypeId::of::<crate::auth::Caller>());
        let role = role.and_then(|caller| caller.downcast_ref::<crate::auth::Caller>()).map(|caller| caller.role);
        for part in [
            role.unwrap_or_default().as_str().as_bytes(),
            normalize_document(&request.query).as_bytes(),
            request.operation_name.as_deref().unwrap_or_default().as_bytes(),
            canonical_json(&request.variables.clone().into_value().into_json().unwrap_or_default()).as_bytes(),
            // Sorted: the map's own order varies.
            serde_json::to_string(&request.extensions.0.iter().collect::<std::collections::BTreeMap<_, _>>())
                .unwrap_or_default()
                .as_bytes(),
        ] {
            hash.update((part.len() as u64).to_be_bytes());
            hash.update(part);
        }
        format!("{}{}", self.prefix, hex(&hash.finalize()))
    }

    /// Automatic persisted queries (Apollo's protocol): a request that names its document by
    /// `extensions.persistedQuery.sha256Hash` alone gets the document stored under that hash,
    /// and one that sends both has it checked and stored. Frontends then send a hash instead
    /// of the whole document. Replaces the extension by the document it names.
    /// A document of the allow-list (`access`) is found by its hash without Redis.
    pub async fn resolve_persisted(
        &self,
        request: &mut async_graphql::Request,
        access: &crate::auth::Access,
    ) -> Result<(), Persisted> {
        let Some(persisted) = request.extensions.0.remove("persistedQuery") else { return Ok(()) };
        let hash = match &persisted {
            async_graphql::Value::Object(fields) => match fields.get("sha256Hash") {
                Some(async_graphql::Value::String(hash)) => hash.to_ascii_lowercase(),
                _ => return Err(Persisted::Invalid),
            },
            _ => return Err(Persisted::Invalid),
        };
        if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(Persisted::Invalid);
        }
        let key = format!("{}{hash}", self.persisted_prefix);
        if request.query.is_empty()
            && let Some(document) = access.allowed_document(&hash)
        {
            request.query = document.to_owned();
            return Ok(());
        }
        if request.query.is_empty() {
            let stored = self.command::<Option<String>>(redis::cmd("GET").arg(&key)).await.ok().flatten();
            request.query = stored.ok_or(Persisted::NotFound)?;
            return Ok(());
        }
        if hex(&Sha256::digest(request.query.as_bytes())) != hash {
            return Err(Persisted::Mismatch);
        }
        let _ =
            self.command::<()>(redis::cmd("SET").arg(&key).arg(&request.query).arg("EX").arg(PERSISTED_SECONDS)).await;
        Ok(())
    }

    /// One Redis command within the cache's time budget; `Err` while Redis is away.
    async fn command<T: redis::FromRedisValue>(&self, command: &redis::Cmd) -> Result<T, ()> {
        if self.resting() {
            return Err(());
        }
        let run = async {
            let mut connection = self.redis.connection().await.ok_or(())?;
            command.query_async::<T>(&mut connection).await.map_err(|_| ())
        };
        let result = tokio::time::timeout(REDIS_BUDGET, run).await.unwrap_or(Err(()));
        if result.is_err() {
            self.rest();
        }
        result
    }

    /// The cached answer: `Ok(None)` on a miss, `Err(())` when Redis cannot be asked.
    pub async fn get(&self, key: &str) -> Result<Option<String>, ()> {
        self.command(redis::cmd("GET").arg(key)).await
    }

    /// Keeps an answer; a failure only costs the next request a miss.
    pub async fn put(&self, key: &str, body: &str) {
        let ttl_ms = u64::try_from(self.ttl.as_millis()).unwrap_or(u64::MAX);
        let _ = self.command::<()>(redis::cmd("SET").arg(key).arg(body).arg("PX").arg(ttl_ms)).await;
    }

    /// The answer kept for `key` at the hot tier's `hot_version` (see [`ResultCache::put_answer`]).
    pub async fn get_answer(&self, key: &str, hot_version: Option<&str>) -> Result<Option<String>, ()> {
        match self.get(key).await? {
            Some(marker) if marker == HOT_MARKER => match hot_version {
                Some(version) => self.get(&format!("{key}:hot:{version}")).await,
                None => Ok(None),
            },
            other => Ok(other),
        }
    }

    /// Keeps an answer: under `key` (for the short TTL when it read `today`), or, when it read
    /// the hot tier at `hot_version`, under `key` and that version for the short TTL, with a
    /// marker under `key` saying so.
    pub async fn put_answer(&self, key: &str, data: &str, hot_version: Option<&str>, today: bool) {
        let recent_ms = u64::try_from(self.recent_ttl.as_millis()).unwrap_or(u64::MAX).max(1);
        match hot_version {
            None if today => {
                let _ = self.command::<()>(redis::cmd("SET").arg(key).arg(data).arg("PX").arg(recent_ms)).await;
            }
            None => self.put(key, data).await,
            Some(version) => {
                self.put(key, HOT_MARKER).await;
                let hot_key = format!("{key}:hot:{version}");
                let _ = self.command::<()>(redis::cmd("SET").arg(hot_key).arg(data).arg("PX").arg(recent_ms)).await;
            }
        }
    }

    /// Claims the computation of `key` among the replicas sharing this Redis.
    pub async fn claim(&self, key: &str) -> Claim {
        static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let token = format!("{}-{n}", std::process::id());
        let lease = CLAIM_LEASE.as_millis() as u64;
        let set = redis::cmd("SET").arg(format!("{key}:claim")).arg(&token).arg("NX").arg("PX").arg(lease).clone();
        match self.command::<Option<String>>(&set).await {
            Ok(Some(_)) => Claim::Mine(token),
            Ok(None) => Claim::Theirs,
            Err(()) => Claim::Unknown,
        }
    }

    /// Ends this process's claim on `key`.
    pub async fn release(&self, key: &str, token: &str) {
        let Some(mut connection) = self.redis.connection().await else { return };
        let script = redis::Script::new(RELEASE_CLAIM);
        let mut invocation = script.key(format!("{key}:claim"));
        invocation.arg(token);
        let _ = tokio::time::timeout(REDIS_BUDGET, invocation.invoke_async::<i64>(&mut connection)).await;
    }

    /// Waits for the replica that claimed `key` to keep its answer: the answer, or `None` when
    /// the claim ends without one (it failed, or its answer is not to be kept) or `within` runs out.
    pub async fn wait_for(&self, key: &str, hot_version: Option<&str>, within: Duration) -> Option<String> {
        let deadline = Instant::now() + within;
        let claim = format!("{key}:claim");
        while Instant::now() < deadline {
            tokio::time::sleep(CLAIM_POLL).await;
            if let Ok(Some(answer)) = self.get_answer(key, hot_version).await {
                return Some(answer);
            }
            match self.command::<bool>(redis::cmd("EXISTS").arg(&claim)).await {
                Ok(true) => {}
                // The claim ended: its answer may have landed just before.
                Ok(false) => return self.get_answer(key, hot_version).await.ok().flatten(),
                Err(()) => return None,
            }
        }
        None
    }

    /// Joins the computation of `key`: the first caller leads, the others follow.
    pub async fn join(&self, key: &str) -> Flight {
        let receiver = {
            let mut in_flight = self.in_flight.lock().unwrap_or_else(|p| p.into_inner());
            // A leader whose request was dropped midway (the client went away) left its entry
            // with no sender: the next request leads instead.
            match in_flight.get(key).filter(|receiver| receiver.has_changed().is_ok()) {
                Some(receiver) => receiver.clone(),
                None => {
                    let (sender, receiver) = watch::channel(None);
                    in_flight.insert(key.to_owned(), receiver);
                    return Flight::Leader(Leader { key: key.to_owned(), sender });
                }
            }
        };
        let mut receiver = receiver;
        // The leader sends its answer, or drops its sender (failed or gone): then compute.
        let answer = receiver.wait_for(Option::is_some).await.ok().and_then(|answer| answer.clone());
        Flight::Follower(answer)
    }

    /// Ends a computation: followers get `answer` (none if it failed or is not to be shared).
    pub fn finish(&self, leader: Leader, answer: Option<Arc<String>>) {
        self.in_flight.lock().unwrap_or_else(|p| p.into_inner()).remove(&leader.key);
        if let Some(answer) = answer {
            leader.sender.send_replace(Some(answer));
        }
    }

    fn resting(&self) -> bool {
        let mut down = self.down_until.lock().unwrap_or_else(|p| p.into_inner());
        match *down {
            Some(until) if Instant::now() < until => true,
            Some(_) => {
                *down = None;
                false
            }
            None => false,
        }
    }

    fn rest(&self) {
        *self.down_until.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now() + RETRY_AFTER);
        metrics::counter!(crate::metrics::CACHE_ERRORS).increment(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache() -> ResultCache {
        let redis = Arc::new(RedisLink::new("redis://127.0.0.1:1", ingest::buffer::Keys::default()));
        ResultCache::new(redis, "test", Duration::from_secs(60), Duration::from_secs(5))
    }

    #[tokio::test]
    async fn followers_get_the_leaders_answer_and_a_dropped_leader_hands_over() {
        let cache = cache();
        let Flight::Leader(leader) = cache.join("a").await else { panic!("the first request leads") };
        let finish = async {
            tokio::task::yield_now().await;
            cache.finish(leader, Some(Arc::new("answer".to_owned())));
        };
        let (follower, ()) = tokio::join!(cache.join("a"), finish);
        assert!(matches!(follower, Flight::Follower(Some(answer)) if *answer == "answer"));

        // A leader dropped midway (its client went away): the next request leads.
        let Flight::Leader(leader) = cache.join("b").await else { panic!("the first request leads") };
        drop(leader);
        assert!(matches!(cache.join("b").await, Flight::Leader(_)));
    }

    #[test]
    fn keys_tell_generations_documents_and_variables_apart() {
        let cache = cache();
        let request = |query: &str, n: i64| {
            async_graphql::Request::new(query)
                .variables(async_graphql::Variables::from_json(serde_json::json!({ "n": n })))
        };
        let key = cache.key(1, &request("{ a }", 1));
        assert_eq!(key, cache.key(1, &request("{ a }", 1)));
        assert_ne!(key, cache.key(2, &request("{ a }", 1)));
        assert_ne!(key, cache.key(1, &request("{ b }", 1)));
        assert_ne!(key, cache.key(1, &request("{ a }", 2)));
        assert!(key.starts_with("test:cache:"));
        // Layout, comments and the order of variables do not matter.
        assert_eq!(key, cache.key(1, &request("  {\n  a, # the field\n}\n", 1)));
        let two = |json| async_graphql::Request::new("{ a }").variables(async_graphql::Variables::from_json(json));
        assert_eq!(
            cache.key(1, &two(serde_json::json!({ "n": 1, "m": { "x": 1, "y": [2, 3] } }))),
            cache.key(1, &two(serde_json::json!({ "m": { "y": [2, 3], "x": 1 }, "n": 1 })))
        );
    }

    #[test]
    fn a_normal_document_keeps_every_token_and_string() {
        let cases = [
            (
                "query Q($n: Int = 1) { posts(first: $n) { nodes { uri } } }",
                "query Q($n:Int=1){posts(first:$n){nodes{uri}}}",
            ),
            ("{ a(list: [1, 2 -3]) # note\n b }", "{a(list:[1 2 -3])b}"),
            ("{ a(s: \"x,  # y\\\" z\") }", "{a(s:\"x,  # y\\\" z\")}"),
            ("{ a(s: \"\"\"one \\\"\"\" , two\n  three\"\"\") }", "{a(s:\"\"\"one \\\"\"\" , two\n  three\"\"\")}"),
            ("{ ...on X { y } ... F }", "{...on X{y}...F}"),
            ("{ a(s: \"open", "{a(s:\"open"),
            ("{ é , ü }", "{é ü}"),
        ];
        for (document, normal) in cases {
            assert_eq!(normalize_document(document), normal, "{document}");
            assert_eq!(normalize_document(normal), normal, "normal forms are fixed points: {normal}");
        }
        assert_ne!(normalize_document("{ a b }"), normalize_document("{ ab }"));
        assert_ne!(normalize_document("{ a(s: \"x y\") }"), normalize_document("{ a(s: \"x  y\") }"));
    }
}
