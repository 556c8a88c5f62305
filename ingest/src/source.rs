//! Sources of Jetstream events. Each source sends raw event lines (one JSON object each) into
//! a channel; decoding happens downstream. A source knows nothing of Redis or the lake.

use std::path::PathBuf;
use std::str::FromStr;

use tokio::sync::{mpsc, watch};

pub mod file;
pub mod jetstream;
pub mod synthetic;

/// One raw event as it arrived: a JSON line without its newline.
pub type RawEvent = Vec<u8>;

/// Where events come from, as written on the command line (`--source SPEC`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceSpec {
    /// `file:PATH`: Jetstream JSON lines, plain, `.gz` or `.zst`.
    File(PathBuf),
    /// `synthetic[:EVENTS_PER_SEC]`: a realistic generated firehose.
    Synthetic { events_per_sec: u32 },
    /// `jetstream` (Bluesky's public instances) or `jetstream:URL[,URL…]`: the live firehose.
    Jetstream { endpoints: Vec<String> },
}

/// What a source may need from the rest of ingest.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SourceContext {
    /// The durable cursor (a Jetstream `time_us`): a live source resumes from it.
    pub resume_from_us: Option<i64>,
    /// Jetstream's zstd dictionary: with it, Jetstream is asked for compressed events.
    pub zstd_dictionary: Option<std::sync::Arc<[u8]>>,
}

pub const DEFAULT_SYNTHETIC_RATE: u32 = 50;

impl FromStr for SourceSpec {
    type Err = String;

    fn from_str(spec: &str) -> Result<Self, Self::Err> {
        let expected = "expected `jetstream`, `jetstream:WSS_URL`, `file:PATH` or `synthetic[:EVENTS_PER_SEC]`";
        let (kind, rest) = spec.split_once(':').map_or((spec, None), |(k, r)| (k, Some(r)));
        match (kind, rest) {
            ("file", Some(path)) if !path.is_empty() => Ok(SourceSpec::File(PathBuf::from(path))),
            ("file", _) => Err(format!("source `{spec}` has no path: {expected}")),
            ("synthetic", None) => Ok(SourceSpec::Synthetic { events_per_sec: DEFAULT_SYNTHETIC_RATE }),
            ("synthetic", Some(rate)) => match rate.parse::<u32>() {
                Ok(events_per_sec) if events_per_sec > 0 => Ok(SourceSpec::Synthetic { events_per_sec }),
                _ => Err(format!("source `{spec}`: the rate must be a whole number of events per second above 0")),
            },
            ("jetstream", None) => Ok(SourceSpec::Jetstream {
                endpoints: jetstream::DEFAULT_ENDPOINTS.iter().map(|e| e.to_string()).collect(),
            }),
            ("jetstream", Some(urls)) => {
                let endpoints: Vec<String> =
                    urls.split(',').map(str::trim).filter(|u| !u.is_empty()).map(str::to_owned).collect();
                if endpoints.is_empty() {
                    return Err(format!("source `{spec}` has no URL: {expected}"));
                }
                match endpoints.iter().find(|u| !(u.starts_with("ws://") || u.starts_with("wss://"))) {
                    Some(bad) => Err(format!("source `{spec}`: `{bad}` is not a ws:// or wss:// URL")),
                    None => Ok(SourceSpec::Jetstream { endpoints }),
                }
            }
            _ => Err(format!("unknown source `{spec}`: {expected}")),
        }
    }
}

impl SourceSpec {
    /// The kind of source, which names its durable cursor.
    pub fn kind(&self) -> &'static str {
        match self {
            SourceSpec::File(_) => "file",
            SourceSpec::Synthetic { .. } => "synthetic",
            SourceSpec::Jetstream { .. } => "jetstream",
        }
    }

    /// Whether the source ends by itself (required by `ingest --once`).
    pub fn is_finite(&self) -> bool {
        matches!(self, SourceSpec::File(_))
    }

    /// Sends every event of the source into `events` until it ends, `stop` turns true, or the
    /// receiver goes away.
    pub async fn run(
        self,
        context: SourceContext,
        events: mpsc::Sender<RawEvent>,
        stop: watch::Receiver<bool>,
    ) -> anyhow::Result<()> {
        match self {
            SourceSpec::File(path) => file::run(path, events, stop).await,
            SourceSpec::Synthetic { events_per_sec } => synthetic::run(events_per_sec, events, stop).await,
            SourceSpec::Jetstream { endpoints } => {
                let config = jetstream::JetstreamConfig {
                    endpoints,
                    start_cursor_us: context.resume_from_us,
                    zstd_dictionary: context.zstd_dictionary,
                    ..jetstream::JetstreamConfig::default()
                };
                jetstream::run(config, events, stop).await
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_specs_parse_or_say_what_is_expected() {
        assert_eq!("file:/tmp/a.jsonl".parse(), Ok(SourceSpec::File("/tmp/a.jsonl".into())));
        assert_eq!("synthetic".parse(), Ok(SourceSpec::Synthetic { events_per_sec: DEFAULT_SYNTHETIC_RATE }));
        assert_eq!("synthetic:500".parse(), Ok(SourceSpec::Synthetic { events_per_sec: 500 }));
        assert_eq!(
            "jetstream:ws://a/subscribe, wss://b/subscribe".parse(),
            Ok(SourceSpec::Jetstream { endpoints: vec!["ws://a/subscribe".into(), "wss://b/subscribe".into()] })
        );
        let SourceSpec::Jetstream { endpoints } = "jetstream".parse().unwrap() else { panic!() };
        assert!(endpoints.len() > 1 && endpoints.iter().all(|e| e.starts_with("wss://")));
        for bad in ["file:", "synthetic:0", "synthetic:fast", "kafka:x", "jetstream:", "jetstream:http://x"] {
            let error = bad.parse::<SourceSpec>().unwrap_err();
            assert!(error.contains("expected") || error.contains("rate") || error.contains("URL"), "{bad}: {error}");
        }
    }
}
