//! The live Jetstream source: a websocket subscription to Bluesky's Jetstream (or any instance),
//! for the wanted collections, resumed from the durable cursor.
//!
//! It never stalls silently and never gives up: a connection that fails, closes, or delivers
//! nothing for `stall_timeout` is replaced by one to the next endpoint, after an exponential
//! backoff with full jitter (capped). Each (re)connection asks for events from a few seconds
//! before the last one seen (`rewind`), and events already forwarded are skipped, so a
//! reconnect loses nothing and duplicates nothing.

use std::collections::{HashSet, VecDeque};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::time::Duration;

use futures_util::StreamExt;
use rand::{Rng, SeedableRng};
use serde::Deserialize;
use tokio::sync::{mpsc, watch};
use tokio_tungstenite::tungstenite::Message;
use tracing::{Instrument, info, info_span, warn};

use super::RawEvent;

/// Bluesky's public Jetstream instances, tried in turn.
pub const DEFAULT_ENDPOINTS: &[&str] = &[
    "wss://jetstream1.us-east.bsky.network/subscribe",
    "wss://jetstream2.us-east.bsky.network/subscribe",
    "wss://jetstream1.us-west.bsky.network/subscribe",
    "wss://jetstream2.us-west.bsky.network/subscribe",
];

/// The largest event a compressed frame may decompress to.
const MAX_EVENT_BYTES: usize = 4 << 20;

/// The collections Skyglass asks for.
pub const WANTED_COLLECTIONS: &[&str] = &["app.bsky.feed.post"];

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JetstreamConfig {
    /// `ws://` or `wss://` subscribe URLs, rotated on each reconnect.
    pub endpoints: Vec<String>,
    pub wanted_collections: Vec<String>,
    /// Where to start (a Jetstream `time_us`), usually the durable cursor; `None` starts live.
    pub start_cursor_us: Option<i64>,
    /// How far before the last seen event a reconnection resumes.
    pub rewind: Duration,
    /// A connection that delivers nothing for this long is considered stalled and replaced.
    pub stall_timeout: Duration,
    pub connect_timeout: Duration,
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    /// With Jetstream's zstd dictionary, events are asked for compressed (`compress=true`).
    pub zstd_dictionary: Option<std::sync::Arc<[u8]>>,
}

impl Default for JetstreamConfig {
    fn default() -> Self {
        JetstreamConfig {
            endpoints: DEFAULT_ENDPOINTS.iter().map(|e| e.to_string()).collect(),
            wanted_collections: WANTED_COLLECTIONS.iter().map(|c| c.to_string()).collect(),
            start_cursor_us: None,
            rewind: Duration::from_secs(5),
            stall_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            backoff_min: Duration::from_millis(500),
            backoff_max: Duration::from_secs(60),
            zstd_dictionary: None,
        }
    }
}

/// The subscribe URL for an endpoint, the wanted collections and a resume cursor.
pub fn subscribe_url(endpoint: &str, wanted_collections: &[String], cursor_us: Option<i64>) -> String {
    let mut url = endpoint.to_owned();
    let mut separator = if url.contains('?') { '&' } else { '?' };
    for collection in wanted_collections {
        url.push(separator);
        url.push_str("wantedCollections=");
        url.push_str(collection);
        separator = '&';
    }
    if let Some(cursor) = cursor_us {
        url.push(separator);
        url.push_str(&format!("cursor={cursor}"));
    }
    url
}

/// The delay before reconnection attempt `attempt` (0-based): full jitter over an exponential
/// ceiling, capped at `max`.
pub fn backoff(attempt: u32, min: Duration, max: Duration, rng: &mut impl Rng) -> Duration {
    let ceiling = min.saturating_mul(2_u32.saturating_pow(attempt.min(20))).min(max);
    let millis = u64::try_from(ceiling.as_millis()).unwrap_or(u64::MAX).max(1);
    Duration::from_millis(rng.random_range(min.as_millis() as u64..=millis.max(min.as_millis() as u64)))
}

#[derive(Deserialize)]
struct EventTime {
    time_us: i64,
}

/// Remembers the events forwarded in the last `rewind` window, to skip them when a resumed
/// connection replays them.
struct Forwarded {
    window_us: i64,
    newest_us: Option<i64>,
    hashes: HashSet<u64>,
    order: VecDeque<(i64, u64)>,
}

impl Forwarded {
    fn new(rewind: Duration) -> Forwarded {
        let window_us = i64::try_from(rewind.as_micros()).unwrap_or(i64::MAX).saturating_mul(2);
        Forwarded { window_us, newest_us: None, hashes: HashSet::new(), order: VecDeque::new() }
    }

    /// Whether an event is new; records it if so.
    fn admit(&mut self, time_us: i64, line: &[u8]) -> bool {
        let mut hasher = DefaultHasher::new();
        line.hash(&mut hasher);
        let hash = hasher.finish();
        if self.newest_us.is_some_and(|newest| time_us <= newest) && self.hashes.contains(&hash) {
            return false;
        }
        self.newest_us = Some(self.newest_us.map_or(time_us, |n| n.max(time_us)));
        self.hashes.insert(hash);
        self.order.push_back((time_us, hash));
        let horizon = self.newest_us.unwrap_or(time_us).saturating_sub(self.window_us);
        while self.order.front().is_some_and(|(t, _)| *t < horizon) {
            let (_, old) = self.order.pop_front().expect("front exists");
            self.hashes.remove(&old);
        }
        true
    }
}

/// How one connection ended.
enum Ended {
    Stopped,
    ReceiverGone,
    Retry(String),
}

/// Streams events into `events` until `stop` turns true or the receiver goes away.
pub async fn run(
    config: JetstreamConfig,
    events: mpsc::Sender<RawEvent>,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    anyhow::ensure!(!config.endpoints.is_empty(), "the jetstream source needs at least one endpoint");
    // tokio-tungstenite's rustls has no crypto provider of its own: use ring (once per process).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut forwarded = Forwarded::new(config.rewind);
    let rewind_us = i64::try_from(config.rewind.as_micros()).unwrap_or(0);
    let mut resume_from = config.start_cursor_us.map(|c| c.saturating_sub(rewind_us));
    let mut attempt = 0_u32;
    let mut rng = rand::rngs::SmallRng::from_os_rng();
    for endpoint_index in (0..config.endpoints.len()).cycle() {
        if *stop.borrow() {
            return Ok(());
        }
        let mut url = subscribe_url(&config.endpoints[endpoint_index], &config.wanted_collections, resume_from);
        if config.zstd_dictionary.is_some() {
            url.push_str(if url.contains('?') { "&compress=true" } else { "?compress=true" });
        }
        let span = info_span!("jetstream", %url);
        let (ended, delivered) =
            connect_and_stream(&config, &url, &events, &mut forwarded, &mut stop).instrument(span).await;
        if delivered {
            attempt = 0;
        }
        resume_from = forwarded.newest_us.map(|t| t.saturating_sub(rewind_us)).or(resume_from);
        match ended {
            Ended::Stopped | Ended::ReceiverGone => return Ok(()),
            Ended::Retry(reason) => {
                metrics::counter!(crate::metrics::SOURCE_RECONNECTS).increment(1);
                let delay = backoff(attempt, config.backoff_min, config.backoff_max, &mut rng);
                warn!(%url, %reason, delay_ms = delay.as_millis() as u64, "jetstream connection ended; reconnecting");
                attempt = attempt.saturating_add(1);
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = stop.changed() => {}
                }
            }
        }
    }
    unreachable!("cycle over a non-empty range never ends")
}

/// One connection: returns how it ended and whether it delivered any event.
async fn connect_and_stream(
    config: &JetstreamConfig,
    url: &str,
    events: &mpsc::Sender<RawEvent>,
    forwarded: &mut Forwarded,
    stop: &mut watch::Receiver<bool>,
) -> (Ended, bool) {
    let connect = tokio::time::timeout(config.connect_timeout, tokio_tungstenite::connect_async(url));
    let mut socket = match connect.await {
        Ok(Ok((socket, _response))) => socket,
        Ok(Err(e)) => return (Ended::Retry(format!("failed to connect: {e}")), false),
        Err(_) => return (Ended::Retry("connection timed out".to_owned()), false),
    };
    info!("connected");
    let mut delivered = false;
    let mut decompressor = match config.zstd_dictionary.as_deref().map(zstd::bulk::Decompressor::with_dictionary) {
        None => None,
        Some(Ok(decompressor)) => Some(decompressor),
        Some(Err(e)) => return (Ended::Retry(format!("the zstd dictionary is unusable: {e}")), false),
    };
    loop {
        let next = tokio::select! {
            next = tokio::time::timeout(config.stall_timeout, socket.next()) => next,
            _ = stop.changed() => return (Ended::Stopped, delivered),
        };
        let message = match next {
            Err(_) => return (Ended::Retry(format!("stalled: nothing for {:?}", config.stall_timeout)), delivered),
            Ok(None) => return (Ended::Retry("the server closed the stream".to_owned()), delivered),
            Ok(Some(Err(e))) => return (Ended::Retry(format!("websocket error: {e}")), delivered),
            Ok(Some(Ok(message))) => message,
        };
        let line: Vec<u8> = match message {
            Message::Text(text) => text.as_bytes().to_vec(),
            Message::Binary(bytes) => match decompressor.as_mut() {
                // A frame that does not decompress is forwarded as it is: decode sends it to
                // the dead letters with the bytes.
                Some(decompressor) => decompressor.decompress(&bytes, MAX_EVENT_BYTES).unwrap_or_else(|e| {
                    warn!(error = %e, "a compressed event did not decompress");
                    bytes.to_vec()
                }),
                None => bytes.to_vec(),
            },
            Message::Close(frame) => {
                return (Ended::Retry(format!("the server closed the connection: {frame:?}")), delivered);
            }
            Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => continue,
        };
        // Unparseable lines are forwarded as they are: decode sends them to the dead letters.
        if let Ok(time) = serde_json::from_slice::<EventTime>(&line)
            && !forwarded.admit(time.time_us, &line)
        {
            continue;
        }
        delivered = true;
        if events.send(line).await.is_err() {
            return (Ended::ReceiverGone, delivered);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_subscribe_url_names_collections_and_the_cursor() {
        let collections = vec!["app.bsky.feed.post".to_owned(), "app.bsky.feed.like".to_owned()];
        assert_eq!(
            subscribe_url("ws://h/subscribe", &collections, Some(42)),
            "ws://h/subscribe?wantedCollections=app.bsky.feed.post&wantedCollections=app.bsky.feed.like&cursor=42"
        );
        assert_eq!(
            subscribe_url("ws://h/subscribe?compress=false", &collections[..1], None),
            "ws://h/subscribe?compress=false&wantedCollections=app.bsky.feed.post"
        );
    }

    #[test]
    fn backoff_grows_with_jitter_and_stays_under_the_cap() {
        let mut rng = rand::rngs::SmallRng::seed_from_u64(1);
        let (min, max) = (Duration::from_millis(100), Duration::from_secs(5));
        for attempt in 0..40 {
            let delay = backoff(attempt, min, max, &mut rng);
            assert!(delay >= min && delay <= max, "attempt {attempt}: {delay:?}");
        }
        let late: Vec<Duration> = (0..50).map(|_| backoff(10, min, max, &mut rng)).collect();
        assert!(late.iter().any(|d| *d > Duration::from_secs(1)), "no growth: {late:?}");
        assert!(late.windows(2).any(|w| w[0] != w[1]), "no jitter");
    }

    #[test]
    fn replayed_events_are_skipped_and_new_ones_admitted() {
        let mut seen = Forwarded::new(Duration::from_secs(5));
        assert!(seen.admit(10, b"a"));
        assert!(seen.admit(20, b"b"));
        assert!(!seen.admit(10, b"a"), "a replay of an earlier event");
        assert!(seen.admit(15, b"c"), "an older event never seen");
        assert!(seen.admit(30, b"a-later"));
    }

    use futures_util::SinkExt;
    use tokio::net::TcpListener;
    use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};

    fn event(second: i64) -> String {
        format!(r#"{{"did":"did:plc:a","time_us":{},"kind":"identity"}}"#, second * 1_000_000)
    }

    fn test_config(address: std::net::SocketAddr, start_cursor_us: Option<i64>) -> JetstreamConfig {
        JetstreamConfig {
            endpoints: vec![format!("ws://{address}/subscribe")],
            start_cursor_us,
            rewind: Duration::from_secs(2),
            stall_timeout: Duration::from_millis(300),
            backoff_min: Duration::from_millis(10),
            backoff_max: Duration::from_millis(50),
            ..JetstreamConfig::default()
        }
    }

    /// Accepts one websocket connection and reports the URI it asked for.
    #[allow(clippy::result_large_err)] // the handshake callback's signature is tungstenite's
    async fn accept(
        listener: &TcpListener,
        uris: &mpsc::UnboundedSender<String>,
    ) -> tokio_tungstenite::WebSocketStream<tokio::net::TcpStream> {
        let (tcp, _) = listener.accept().await.unwrap();
        let uris = uris.clone();
        tokio_tungstenite::accept_hdr_async(tcp, move |request: &Request, response: Response| {
            uris.send(request.uri().to_string()).unwrap();
            Ok(response)
        })
        .await
        .unwrap()
    }

    #[tokio::test]
    async fn a_dropped_connection_resumes_a_little_before_the_last_event_and_skips_the_replay() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let (uris_tx, mut uris) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            // The first connection delivers seconds 100..=105, then drops mid-stream.
            let mut first = accept(&listener, &uris_tx).await;
            for second in 100..=105 {
                first.send(Message::text(event(second))).await.unwrap();
            }
            drop(first);
            // The second replays from the resume cursor (seconds 103..=105 again), then goes on.
            let mut second = accept(&listener, &uris_tx).await;
            for s in 103..=109 {
                second.send(Message::text(event(s))).await.unwrap();
            }
            while second.next().await.is_some() {}
        });

        let (events_tx, mut events_rx) = mpsc::channel(100);
        let (stop_tx, stop_rx) = watch::channel(false);
        let source = tokio::spawn(run(test_config(address, Some(90_000_000)), events_tx, stop_rx));
        let mut received = Vec::new();
        while received.len() < 10 {
            let line = tokio::time::timeout(Duration::from_secs(10), events_rx.recv()).await.unwrap().unwrap();
            received.push(String::from_utf8(line).unwrap());
        }
        let expected: Vec<String> = (100..=109).map(event).collect();
        assert_eq!(received, expected, "every event exactly once, in order");

        let first_uri = uris.recv().await.unwrap();
        let second_uri = uris.recv().await.unwrap();
        assert_eq!(
            first_uri, "/subscribe?wantedCollections=app.bsky.feed.post&cursor=88000000",
            "durable cursor minus the rewind"
        );
        assert_eq!(
            second_uri, "/subscribe?wantedCollections=app.bsky.feed.post&cursor=103000000",
            "last event minus the rewind"
        );

        stop_tx.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(5), source).await.unwrap().unwrap().unwrap();
        assert_eq!(events_rx.recv().await, None, "nothing more than the server sent");
    }

    #[tokio::test]
    async fn a_silent_connection_is_taken_for_stalled_and_replaced() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let (uris_tx, mut uris) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut held = Vec::new();
            loop {
                held.push(accept(&listener, &uris_tx).await); // accepted, and never a word
            }
        });
        let (events_tx, _events_rx) = mpsc::channel(10);
        let (stop_tx, stop_rx) = watch::channel(false);
        let source = tokio::spawn(run(test_config(address, None), events_tx, stop_rx));
        for _ in 0..3 {
            let uri = tokio::time::timeout(Duration::from_secs(5), uris.recv()).await.expect("a reconnection").unwrap();
            assert_eq!(uri, "/subscribe?wantedCollections=app.bsky.feed.post", "no cursor: nothing was ever seen");
        }
        stop_tx.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(5), source).await.unwrap().unwrap().unwrap();
    }

    /// Jetstream's real dictionary when `../shared` has it, else a raw-content dictionary:
    /// zstd takes either.
    fn dictionary() -> Vec<u8> {
        let shared =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/data/jetstream/zstd_dictionary");
        std::fs::read(shared).unwrap_or_else(|_| (0..50).map(event).collect::<String>().into_bytes())
    }

    #[tokio::test]
    async fn compressed_events_are_asked_for_and_decompressed_with_the_dictionary() {
        let dictionary = dictionary();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let (uris_tx, mut uris) = mpsc::unbounded_channel();
        let server_dictionary = dictionary.clone();
        tokio::spawn(async move {
            let mut socket = accept(&listener, &uris_tx).await;
            let mut compressor = zstd::bulk::Compressor::with_dictionary(3, &server_dictionary).unwrap();
            for second in 1..=3 {
                let frame = compressor.compress(event(second).as_bytes()).unwrap();
                socket.send(Message::binary(frame)).await.unwrap();
            }
            // A frame that is not zstd at all goes on as it is (to the dead letters).
            socket.send(Message::binary(b"not zstd".to_vec())).await.unwrap();
            while socket.next().await.is_some() {}
        });

        let config = JetstreamConfig { zstd_dictionary: Some(dictionary.into()), ..test_config(address, None) };
        let (events_tx, mut events_rx) = mpsc::channel(10);
        let (stop_tx, stop_rx) = watch::channel(false);
        let source = tokio::spawn(run(config, events_tx, stop_rx));
        let mut received = Vec::new();
        while received.len() < 4 {
            let line = tokio::time::timeout(Duration::from_secs(10), events_rx.recv()).await.unwrap().unwrap();
            received.push(String::from_utf8(line).unwrap());
        }
        let mut expected: Vec<String> = (1..=3).map(event).collect();
        expected.push("not zstd".into());
        assert_eq!(received, expected);
        let uri = uris.recv().await.unwrap();
        assert_eq!(uri, "/subscribe?wantedCollections=app.bsky.feed.post&compress=true");
        stop_tx.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(5), source).await.unwrap().unwrap().unwrap();
    }
}
