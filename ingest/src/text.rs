//! Derived text features: hashtags, mentions and links from facets (UTF-8 byte ranges) and
//! hashtags written in the text itself. Pure functions.

use std::borrow::Cow;
use std::sync::LazyLock;

use lake::model::normalise_tag;
use memchr::memmem;
use serde::Deserialize;
use serde_json::Value;

/// What a post's facets and text say about tags, mentions and links.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Features {
    pub hashtags: Vec<String>,
    pub mentions: Vec<String>,
    pub links: Vec<String>,
}

fn push_unique(list: &mut Vec<String>, value: String) {
    if !value.is_empty() && !list.contains(&value) {
        list.push(value);
    }
}

/// Slices `text` by a facet's UTF-8 byte range; `None` when the range is outside the text or
/// cuts a character in two (a malformed facet).
pub fn facet_slice(text: &str, byte_start: u64, byte_end: u64) -> Option<&str> {
    let start = usize::try_from(byte_start).ok()?;
    let end = usize::try_from(byte_end).ok()?;
    if start > end {
        return None;
    }
    text.get(start..end)
}

/// One facet of a record (`app.bsky.richtext.facet`), the parts features are read from.
/// Decoding fills it either straight from the JSON, strictly (any other shape fails, and the
/// event goes the lenient way), or leniently from a `Value` ([`Facet::from_value`]), where a
/// part of the wrong type counts as absent.
#[derive(Debug, Default, Deserialize)]
pub struct Facet<'a> {
    index: Option<FacetIndex>,
    #[serde(borrow)]
    features: Option<Vec<FacetFeature<'a>>>,
}

#[derive(Debug, Default, Deserialize)]
struct FacetIndex {
    #[serde(rename = "byteStart")]
    byte_start: Option<u64>,
    #[serde(rename = "byteEnd")]
    byte_end: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
struct FacetFeature<'a> {
    #[serde(rename = "$type", borrow)]
    kind: Option<Cow<'a, str>>,
    #[serde(borrow)]
    tag: Option<Cow<'a, str>>,
    #[serde(borrow)]
    did: Option<Cow<'a, str>>,
    #[serde(borrow)]
    uri: Option<Cow<'a, str>>,
}

impl<'a> Facet<'a> {
    /// The record's `facets`, leniently: anything not an array is no facets, and a facet or a
    /// part of one of the wrong type is skipped.
    pub fn list_from_value(facets: Option<&'a Value>) -> Vec<Facet<'a>> {
        facets.and_then(Value::as_array).into_iter().flatten().map(Facet::from_value).collect()
    }

    fn from_value(facet: &'a Value) -> Facet<'a> {
        let text = |value: &'a Value, key: &str| value.get(key).and_then(Value::as_str).map(Cow::Borrowed);
        let index = facet.get("index").map(|index| FacetIndex {
            byte_start: index.get("byteStart").and_then(Value::as_u64),
            byte_end: index.get("byteEnd").and_then(Value::as_u64),
        });
        let features = facet.get("features").and_then(Value::as_array).map(|features| {
            features
                .iter()
                .map(|f| FacetFeature {
                    kind: text(f, "$type"),
                    tag: text(f, "tag"),
                    did: text(f, "did"),
                    uri: text(f, "uri"),
                })
                .collect()
        });
        Facet { index, features }
    }
}

/// Extracts features from the record's facets and from `#tags` in the text.
pub fn features(text: &str, facets: &[Facet<'_>]) -> Features {
    let mut out = Features::default();
    for facet in facets {
        let slice = match facet.index.as_ref().map(|i| (i.byte_start, i.byte_end)) {
            Some((Some(start), Some(end))) => facet_slice(text, start, end),
            _ => None,
        };
        for feature in facet.features.iter().flatten() {
            match feature.kind.as_deref().unwrap_or_default() {
                "app.bsky.richtext.facet#tag" => {
                    // The feature's own `tag` is authoritative; the sliced text is the fallback.
                    if let Some(tag) = feature.tag.as_deref().or(slice) {
                        push_unique(&mut out.hashtags, normalise_tag(tag));
                    }
                }
                "app.bsky.richtext.facet#mention" => {
                    if let Some(did) = feature.did.as_deref().filter(|d| d.starts_with("did:")) {
                        push_unique(&mut out.mentions, did.to_owned());
                    }
                }
                "app.bsky.richtext.facet#link" => {
                    if let Some(uri) = feature.uri.as_deref() {
                        push_unique(&mut out.links, uri.to_owned());
                    }
                }
                _ => {}
            }
        }
    }
    for tag in hashtags_in_text(text) {
        push_unique(&mut out.hashtags, tag);
    }
    out
}

/// `#tags` written in the text: a '#' (or fullwidth '＃') at the start or after whitespace,
/// then non-space characters, trailing punctuation removed; a tag must hold something other
/// than digits and punctuation (so `#1` is not a tag).
pub fn hashtags_in_text(text: &str) -> Vec<String> {
    // Most texts hold no '#' at all: two vectorised searches settle that, and otherwise the
    // walk starts at the first one.
    static FULLWIDTH: LazyLock<memmem::Finder<'static>> = LazyLock::new(|| memmem::Finder::new("＃"));
    let first = match (memchr::memchr(b'#', text.as_bytes()), FULLWIDTH.find(text.as_bytes())) {
        (None, None) => return Vec::new(),
        (ascii, fullwidth) => ascii.unwrap_or(usize::MAX).min(fullwidth.unwrap_or(usize::MAX)),
    };
    let mut tags = Vec::new();
    let mut previous: Option<char> = text[..first].chars().next_back();
    let mut chars = text[first..].char_indices().map(|(i, c)| (first + i, c)).peekable();
    while let Some((index, c)) = chars.next() {
        let at_boundary = previous.is_none_or(char::is_whitespace);
        previous = Some(c);
        if !(at_boundary && (c == '#' || c == '＃')) {
            continue;
        }
        let start = index + c.len_utf8();
        let mut end = start;
        while let Some(&(i, next)) = chars.peek() {
            if next.is_whitespace() || next == '#' || next == '＃' {
                break;
            }
            end = i + next.len_utf8();
            previous = Some(next);
            chars.next();
        }
        let candidate =
            text[start..end].trim_end_matches(|ch: char| ch.is_ascii_punctuation() || is_closing_punctuation(ch));
        let meaningful = candidate.chars().any(|ch| !ch.is_ascii_digit() && !ch.is_ascii_punctuation());
        if meaningful && !candidate.starts_with('\u{fe0f}') {
            tags.push(normalise_tag(candidate));
        }
    }
    tags
}

fn is_closing_punctuation(c: char) -> bool {
    matches!(c, '。' | '、' | '！' | '？' | '」' | '）' | '…')
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn facet_offsets_are_utf8_bytes_not_characters() {
        // "日本 #猫" : '日' and '本' are 3 bytes each, the space 1, '#' 1, '猫' 3.
        let text = "日本 #猫 https://x.org";
        assert_eq!(facet_slice(text, 7, 11), Some("#猫"));
        assert_eq!(facet_slice(text, 1, 4), None, "offset 1 cuts '日' in two");
        assert_eq!(facet_slice(text, 0, 999), None);
        assert_eq!(facet_slice(text, 5, 2), None);
    }

    #[test]
    fn features_come_from_facets_and_from_tags_in_the_text() {
        let text = "hi @al.bsky.social see https://ex.com/a #Rust and #DuckDB! #2024 #日本語。";
        let facets = json!([
            {"index": {"byteStart": 3, "byteEnd": 18},
             "features": [{"$type": "app.bsky.richtext.facet#mention", "did": "did:plc:al"}]},
            {"index": {"byteStart": 23, "byteEnd": 39},
             "features": [{"$type": "app.bsky.richtext.facet#link", "uri": "https://ex.com/a"}]},
            {"index": {"byteStart": 40, "byteEnd": 45},
             "features": [{"$type": "app.bsky.richtext.facet#tag", "tag": "Rust"}]},
            {"index": {"byteStart": 900, "byteEnd": 901},
             "features": [{"$type": "app.bsky.richtext.facet#tag"}]},
            {"features": [{"$type": "app.bsky.richtext.facet#weird"}]}
        ]);
        let got = features(text, &Facet::list_from_value(Some(&facets)));
        assert_eq!(got.mentions, vec!["did:plc:al"]);
        assert_eq!(got.links, vec!["https://ex.com/a"]);
        assert_eq!(got.hashtags, vec!["rust", "duckdb", "日本語"]);
    }

    #[test]
    fn a_hash_inside_a_word_or_a_url_is_not_a_tag() {
        assert_eq!(hashtags_in_text("C# and a#b https://x.org/#frag"), Vec::<String>::new());
        assert_eq!(hashtags_in_text("#a#b"), vec!["a"]);
        assert_eq!(hashtags_in_text("＃全角 #emoji🎉"), vec!["全角", "emoji🎉"]);
        assert_eq!(hashtags_in_text("x＃no a#no 日本 ＃yes #also"), vec!["yes", "also"]);
        assert_eq!(hashtags_in_text("🎉 #party"), vec!["party"]);
    }

    #[test]
    fn tags_are_capped_at_64_characters() {
        let long = format!("#{}", "x".repeat(100));
        assert_eq!(hashtags_in_text(&long)[0].chars().count(), 64);
    }
}
