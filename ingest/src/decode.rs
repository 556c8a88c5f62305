//! Decodes one Jetstream event (one JSON line) into what ingest does with it: a post row, a
//! post deletion, a like or repost of a post or its deletion, an identity or account event, an
//! event of another kind (counted, not stored), or a [`Drop`] with a reason. Pure, and never
//! panics on any input.

use std::borrow::Cow;

use chrono::DateTime;
use lake::model::{
    AccountEvent, Delete, EARLIEST_PLAUSIBLE_US, ENRICH_VERSION, EmbedType, Interaction, InteractionDelete,
    InteractionKind, MAX_FUTURE_SKEW_US, Post,
};
use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_json::Value;

use crate::text::{self, Facet};

pub const POST_COLLECTION: &str = "app.bsky.feed.post";
/// The lexicon's limit on post text, in UTF-8 bytes (`maxLength: 3000`).
pub const MAX_TEXT_BYTES: usize = 3000;

/// What one event becomes.
#[derive(Debug, Clone, PartialEq)]
pub enum Decoded {
    Post(Box<Post>),
    /// A post was deleted on Bluesky.
    PostDelete(Delete),
    /// A like or repost of a post.
    Interaction(Interaction),
    /// A like or repost was deleted (an unlike, an undone repost).
    InteractionDelete(InteractionDelete),
    /// An identity event (a handle) or an account event (active or not).
    Account(AccountEvent),
    /// A well-formed event that is not stored, by its kind label.
    Other {
        kind: OtherKind,
        time_us: i64,
    },
    Drop(Drop),
}

/// Events that are valid but not stored yet. A closed set, used as a metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OtherKind {
    /// A commit to another collection (follows, blocks, profiles, non-Bluesky lexicons…), or
    /// an update of a like or repost record.
    OtherCollection,
    /// An update of a post record.
    PostUpdate,
    /// A like of something that is not a post (a feed generator, a list…), or a repost of one.
    OtherSubject,
}

impl OtherKind {
    pub const ALL: [OtherKind; 3] = [OtherKind::OtherCollection, OtherKind::PostUpdate, OtherKind::OtherSubject];

    pub fn as_str(self) -> &'static str {
        match self {
            OtherKind::OtherCollection => "other_collection",
            OtherKind::PostUpdate => "post_update",
            OtherKind::OtherSubject => "other_subject",
        }
    }
}

/// Why an event was not turned into a row. A closed set: each is a metric label and the reason
/// recorded with the event in the dead-letter stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// The line is not a JSON object.
    InvalidJson,
    /// `kind` is not one Jetstream sends (`commit`, `identity`, `account`).
    UnknownKind,
    /// A field the event or record needs is absent or of the wrong type.
    MissingField,
    /// The author is not a `did:` identifier.
    BadDid,
    /// The record key cannot form an AT-URI.
    BadRkey,
    /// The commit's operation is not `create`, `update` or `delete`.
    UnknownOperation,
    /// The post text is longer than the lexicon allows.
    TextTooLong,
    /// The embed's `$type` is not one of the known embed types.
    UnknownEmbed,
    /// An identity event's handle is not a domain name.
    BadHandle,
    /// A like's or repost's subject is not the AT-URI of a record (`at://DID/COLLECTION/RKEY`).
    BadSubject,
}

impl DropReason {
    pub const ALL: [DropReason; 10] = [
        DropReason::InvalidJson,
        DropReason::UnknownKind,
        DropReason::MissingField,
        DropReason::BadDid,
        DropReason::BadRkey,
        DropReason::UnknownOperation,
        DropReason::TextTooLong,
        DropReason::UnknownEmbed,
        DropReason::BadHandle,
        DropReason::BadSubject,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::InvalidJson => "invalid_json",
            DropReason::UnknownKind => "unknown_kind",
            DropReason::MissingField => "missing_field",
            DropReason::BadDid => "bad_did",
            DropReason::BadRkey => "bad_rkey",
            DropReason::UnknownOperation => "unknown_operation",
            DropReason::TextTooLong => "text_too_long",
            DropReason::UnknownEmbed => "unknown_embed",
            DropReason::BadHandle => "bad_handle",
            DropReason::BadSubject => "bad_subject",
        }
    }
}

/// An event that was not turned into a row, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Drop {
    pub reason: DropReason,
    pub detail: String,
}

fn drop(reason: DropReason, detail: impl Into<String>) -> Decoded {
    Decoded::Drop(Drop { reason, detail: detail.into() })
}

/// `at://{did}/app.bsky.feed.post/{rkey}` (built by hand: `format!` was a fiftieth of ingest).
fn post_uri(did: &str, rkey: &str) -> String {
    let mut uri = String::with_capacity(7 + did.len() + POST_COLLECTION.len() + rkey.len());
    for part in ["at://", did, "/", POST_COLLECTION, "/", rkey] {
        uri.push_str(part);
    }
    uri
}

fn str_field<'a>(value: &'a Value, key: &str) -> Option<&'a str> {
    value.get(key).and_then(Value::as_str)
}

/// Decodes one Jetstream JSON line.
pub fn decode(line: &[u8]) -> Decoded {
    fast::decode_commit(line).unwrap_or_else(|| decode_value(line))
}

/// [`decode`] through a `serde_json::Value`: every event, however malformed, with the precise
/// reason of a drop. [`fast`] takes the common cases (well-formed commits) and leaves the
/// rest here.
fn decode_value(line: &[u8]) -> Decoded {
    let event: Value = match serde_json::from_slice(line) {
        Ok(value @ Value::Object(_)) => value,
        Ok(_) => return drop(DropReason::InvalidJson, "the event is not a JSON object"),
        Err(e) => return drop(DropReason::InvalidJson, e.to_string()),
    };
    let Some(did) = str_field(&event, "did") else {
        return drop(DropReason::MissingField, "did");
    };
    if !is_did(did) {
        return drop(DropReason::BadDid, format!("`{}` is not a DID", clip(did)));
    }
    let Some(time_us) = event.get("time_us").and_then(Value::as_i64) else {
        return drop(DropReason::MissingField, "time_us");
    };
    match str_field(&event, "kind") {
        Some("commit") => {}
        Some("identity") => return decode_identity(&event, did, time_us),
        Some("account") => return decode_account(&event, did, time_us),
        Some(other) => return drop(DropReason::UnknownKind, format!("kind `{}`", clip(other))),
        None => return drop(DropReason::MissingField, "kind"),
    }
    let Some(commit) = event.get("commit").filter(|c| c.is_object()) else {
        return drop(DropReason::MissingField, "commit");
    };
    let Some(collection) = str_field(commit, "collection") else {
        return drop(DropReason::MissingField, "commit.collection");
    };
    let Some(operation) = str_field(commit, "operation") else {
        return drop(DropReason::MissingField, "commit.operation");
    };
    if !matches!(operation, "create" | "update" | "delete") {
        return drop(DropReason::UnknownOperation, format!("operation `{}`", clip(operation)));
    }
    let interaction = InteractionKind::of_collection(collection);
    if collection != POST_COLLECTION && interaction.is_none() {
        return Decoded::Other { kind: OtherKind::OtherCollection, time_us };
    }
    let Some(rkey) = str_field(commit, "rkey") else {
        return drop(DropReason::MissingField, "commit.rkey");
    };
    if !is_rkey(rkey) {
        return drop(DropReason::BadRkey, format!("rkey `{}`", clip(rkey)));
    }
    if let Some(kind) = interaction {
        let record = commit.get("record").filter(|r| r.is_object());
        let subject = record.and_then(|r| r.get("subject")).filter(|s| s.is_object());
        let parts = InteractionParts {
            kind,
            did,
            rkey,
            operation,
            time_us,
            created_at: record.and_then(|r| str_field(r, "createdAt")),
            record: record.is_some(),
            subject_uri: subject.map(|s| str_field(s, "uri")),
        };
        return interaction_row(parts);
    }
    let uri = post_uri(did, rkey);
    match operation {
        "delete" => Decoded::PostDelete(Delete { uri, did: did.to_owned(), deleted_at_us: time_us }),
        "update" => Decoded::Other { kind: OtherKind::PostUpdate, time_us },
        _ => decode_post_record(commit, uri, did, rkey, time_us),
    }
}

/// What a like or repost event is made into, read from the event by either path of [`decode`].
struct InteractionParts<'a> {
    kind: InteractionKind,
    did: &'a str,
    rkey: &'a str,
    operation: &'a str,
    time_us: i64,
    created_at: Option<&'a str>,
    /// Whether the commit has a record.
    record: bool,
    /// The record's `subject.uri`: `None` without a subject, `Some(None)` without its uri.
    subject_uri: Option<Option<&'a str>>,
}

fn interaction_row(parts: InteractionParts<'_>) -> Decoded {
    let InteractionParts { kind, did, rkey, operation, time_us, .. } = parts;
    match operation {
        "delete" => {
            let delete = InteractionDelete { did: did.to_owned(), kind, rkey: rkey.to_owned(), deleted_at_us: time_us };
            return Decoded::InteractionDelete(delete);
        }
        "update" => return Decoded::Other { kind: OtherKind::OtherCollection, time_us },
        _ => {}
    }
    if !parts.record {
        return drop(DropReason::MissingField, "commit.record");
    }
    let Some(subject) = parts.subject_uri else {
        return drop(DropReason::MissingField, "record.subject");
    };
    let Some(subject) = subject else {
        return drop(DropReason::MissingField, "record.subject.uri");
    };
    let Some((subject_did, collection, subject_rkey)) = at_uri_parts(subject) else {
        return drop(DropReason::BadSubject, format!("subject `{}`", clip(subject)));
    };
    if collection != POST_COLLECTION {
        return Decoded::Other { kind: OtherKind::OtherSubject, time_us };
    }
    let (created_at_us, _) = created_at(parts.created_at, time_us);
    Decoded::Interaction(Interaction {
        did: did.to_owned(),
        kind,
        rkey: rkey.to_owned(),
        subject_did: subject_did.to_owned(),
        subject_rkey: subject_rkey.to_owned(),
        created_at_us,
        indexed_at_us: time_us,
    })
}

/// `at://DID/COLLECTION/RKEY` as its three parts, each checked.
fn at_uri_parts(uri: &str) -> Option<(&str, &str, &str)> {
    let mut parts = uri.strip_prefix("at://")?.split('/');
    let (did, collection, rkey) = (parts.next()?, parts.next()?, parts.next()?);
    let nsid = |c: &str| {
        c.len() <= 317
            && c.split('.').count() >= 3
            && c.split('.').all(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'))
    };
    (parts.next().is_none() && is_did(did) && nsid(collection) && is_rkey(rkey)).then_some((did, collection, rkey))
}

/// Longest handle accepted (a domain name's limit).
const MAX_HANDLE_LEN: usize = 253;

/// `{"kind":"identity","identity":{"handle":"alice.bsky.social",…}}`; an event without a
/// handle keeps the one known before.
fn decode_identity(event: &Value, did: &str, time_us: i64) -> Decoded {
    let Some(identity) = event.get("identity").filter(|i| i.is_object()) else {
        return drop(DropReason::MissingField, "identity");
    };
    let handle = match identity.get("handle") {
        None | Some(Value::Null) => None,
        Some(Value::String(handle)) if is_handle(handle) => Some(handle.to_ascii_lowercase()),
        Some(other) => return drop(DropReason::BadHandle, format!("handle {}", clip(&other.to_string()))),
    };
    Decoded::Account(AccountEvent { did: did.to_owned(), seen_at_us: time_us, handle, active: None, status: None })
}

/// `{"kind":"account","account":{"active":false,"status":"takendown",…}}`.
fn decode_account(event: &Value, did: &str, time_us: i64) -> Decoded {
    let Some(account) = event.get("account").filter(|a| a.is_object()) else {
        return drop(DropReason::MissingField, "account");
    };
    let Some(active) = account.get("active").and_then(Value::as_bool) else {
        return drop(DropReason::MissingField, "account.active");
    };
    let status = if active { None } else { str_field(account, "status").map(|s| clip(s).to_ascii_lowercase()) };
    Decoded::Account(AccountEvent {
        did: did.to_owned(),
        seen_at_us: time_us,
        handle: None,
        active: Some(active),
        status,
    })
}

/// A handle is a domain name: dot-separated labels of ASCII letters, digits and hyphens.
fn is_handle(handle: &str) -> bool {
    handle.len() <= MAX_HANDLE_LEN
        && handle.contains('.')
        && handle.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

fn decode_post_record(commit: &Value, uri: String, did: &str, rkey: &str, time_us: i64) -> Decoded {
    let Some(cid) = str_field(commit, "cid") else {
        return drop(DropReason::MissingField, "commit.cid");
    };
    let Some(record) = commit.get("record").filter(|r| r.is_object()) else {
        return drop(DropReason::MissingField, "commit.record");
    };
    let Some(text) = str_field(record, "text") else {
        return drop(DropReason::MissingField, "record.text");
    };
    let langs = record.get("langs").and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str);
    let fields = PostFields {
        uri,
        cid,
        did,
        rkey,
        time_us,
        text,
        created_at: str_field(record, "createdAt"),
        langs: langs.map(str::to_owned).collect(),
        reply: record.get("reply").map(Reply::from_value),
        embed: record.get("embed").filter(|e| e.is_object()).map(EmbedParts::from_value),
        facets: Facet::list_from_value(record.get("facets")),
        labels: record.get("labels").map(Labels::from_value),
    };
    post_row(fields)
}

/// What a post row is made from, read from the event by either path of [`decode`].
struct PostFields<'a> {
    uri: String,
    cid: &'a str,
    did: &'a str,
    rkey: &'a str,
    time_us: i64,
    text: &'a str,
    created_at: Option<&'a str>,
    langs: Vec<String>,
    reply: Option<Reply<'a>>,
    embed: Option<EmbedParts<'a>>,
    facets: Vec<Facet<'a>>,
    labels: Option<Labels<'a>>,
}

// The parts of a record's reply, embed and labels that a post row reads. Like
// [`text::Facet`], the fast path fills them straight from the JSON, strictly (another shape
// fails it, and the `Value` path decides), and the `Value` path leniently (`from_value`: a part
// of the wrong type counts as absent). What a row holds is then computed once, from these.

fn borrowed<'a>(value: &'a Value, key: &str) -> Option<Cow<'a, str>> {
    str_field(value, key).map(Cow::Borrowed)
}

/// `{"uri": …}`, as in a reply's root and parent, an external link, a quoted record.
#[derive(Debug, Default, Deserialize)]
struct UriRef<'a> {
    #[serde(borrow)]
    uri: Option<Cow<'a, str>>,
}

impl<'a> UriRef<'a> {
    fn from_value(value: &'a Value) -> UriRef<'a> {
        UriRef { uri: borrowed(value, "uri") }
    }
}

fn uri_of(reference: Option<&UriRef<'_>>) -> Option<String> {
    reference.and_then(|r| r.uri.as_deref()).map(str::to_owned)
}

#[derive(Debug, Default, Deserialize)]
struct Reply<'a> {
    #[serde(borrow)]
    root: Option<UriRef<'a>>,
    #[serde(borrow)]
    parent: Option<UriRef<'a>>,
}

impl<'a> Reply<'a> {
    fn from_value(reply: &'a Value) -> Reply<'a> {
        Reply { root: reply.get("root").map(UriRef::from_value), parent: reply.get("parent").map(UriRef::from_value) }
    }
}

/// `app.bsky.embed.*`: `images`, `external`, `record` (`{uri}`, or `{record: {uri}}` with
/// media), and the `media` of a record with media.
#[derive(Debug, Default, Deserialize)]
struct EmbedParts<'a> {
    #[serde(rename = "$type", borrow)]
    kind: Option<Cow<'a, str>>,
    images: Option<Vec<IgnoredAny>>,
    #[serde(borrow)]
    external: Option<UriRef<'a>>,
    #[serde(borrow)]
    record: Option<EmbeddedRecord<'a>>,
    #[serde(borrow)]
    media: Option<Box<EmbedParts<'a>>>,
}

#[derive(Debug, Default, Deserialize)]
struct EmbeddedRecord<'a> {
    #[serde(borrow)]
    uri: Option<Cow<'a, str>>,
    #[serde(borrow)]
    record: Option<UriRef<'a>>,
}

impl<'a> EmbedParts<'a> {
    fn from_value(embed: &'a Value) -> EmbedParts<'a> {
        let record = embed.get("record").map(|record| EmbeddedRecord {
            uri: borrowed(record, "uri"),
            record: record.get("record").map(UriRef::from_value),
        });
        EmbedParts {
            kind: borrowed(embed, "$type"),
            // Zero-sized items: a count, not an allocation.
            images: embed.get("images").and_then(Value::as_array).map(|images| vec![IgnoredAny; images.len()]),
            external: embed.get("external").map(UriRef::from_value),
            record,
            media: embed.get("media").map(|media| Box::new(EmbedParts::from_value(media))),
        }
    }

    fn image_count(&self) -> i32 {
        self.images.as_ref().map_or(0, |images| i32::try_from(images.len()).unwrap_or(i32::MAX))
    }
}

/// Self-labels: `{"values": [{"val": …}]}`.
#[derive(Debug, Default, Deserialize)]
struct Labels<'a> {
    #[serde(borrow)]
    values: Option<Vec<Label<'a>>>,
}

#[derive(Debug, Default, Deserialize)]
struct Label<'a> {
    #[serde(borrow)]
    val: Option<Cow<'a, str>>,
}

impl<'a> Labels<'a> {
    fn from_value(labels: &'a Value) -> Labels<'a> {
        let values = labels.get("values").and_then(Value::as_array);
        Labels { values: values.map(|values| values.iter().map(|v| Label { val: borrowed(v, "val") }).collect()) }
    }
}

/// The post row (enriched), or the drop of a post that breaks the lexicon.
fn post_row(fields: PostFields<'_>) -> Decoded {
    let PostFields {
        uri,
        cid,
        did,
        rkey,
        time_us,
        text,
        created_at: raw_created_at,
        langs,
        reply,
        embed: raw_embed,
        facets,
        labels,
    } = fields;
    if text.len() > MAX_TEXT_BYTES {
        return drop(DropReason::TextTooLong, format!("{} bytes", text.len()));
    }
    let (created_at_us, created_at_clamped) = created_at(raw_created_at, time_us);
    let embed = match embed(raw_embed.as_ref()) {
        Ok(embed) => embed,
        Err(kind) => return drop(DropReason::UnknownEmbed, format!("embed `{}`", clip(&kind))),
    };
    let features = text::features(text, &facets);
    let labels = labels
        .and_then(|l| l.values)
        .into_iter()
        .flatten()
        .filter_map(|label| label.val)
        .map(Cow::into_owned)
        .collect();

    Decoded::Post(Box::new(Post {
        uri,
        cid: cid.to_owned(),
        did: did.to_owned(),
        rkey: rkey.to_owned(),
        created_at_us,
        indexed_at_us: time_us,
        created_at_clamped,
        text: text.to_owned(),
        langs,
        detected_lang: crate::language::detect(text).map(str::to_owned),
        reply_root: uri_of(reply.as_ref().and_then(|r| r.root.as_ref())),
        reply_parent: uri_of(reply.as_ref().and_then(|r| r.parent.as_ref())),
        quote_uri: embed.quote_uri,
        embed_type: embed.embed_type,
        image_count: embed.image_count,
        external_uri: embed.external_uri,
        hashtags: features.hashtags,
        mentions: features.mentions,
        links: features.links,
        labels,
        text_len: i32::try_from(text.len()).unwrap_or(i32::MAX),
        enrich_version: ENRICH_VERSION,
    }))
}

/// The record's `createdAt` in UTC microseconds, or the event's `time_us` with the clamped flag
/// when `createdAt` is missing, unparseable or absurd (before Bluesky existed, or more than a day
/// after the firehose saw the post). A bad clock never costs a post.
fn created_at(raw: Option<&str>, time_us: i64) -> (i64, bool) {
    let parsed = raw.and_then(|raw| DateTime::parse_from_rfc3339(raw).ok()).map(|t| t.timestamp_micros());
    match parsed {
        Some(us) if us >= EARLIEST_PLAUSIBLE_US && us <= time_us.saturating_add(MAX_FUTURE_SKEW_US) => (us, false),
        _ => (time_us, true),
    }
}

#[derive(Default)]
struct Embed {
    embed_type: EmbedType,
    image_count: i32,
    external_uri: Option<String>,
    quote_uri: Option<String>,
}

/// Classifies the record's embed; `Err` carries an unknown `$type`.
fn embed(embed: Option<&EmbedParts<'_>>) -> Result<Embed, String> {
    let Some(embed) = embed else {
        return Ok(Embed::default());
    };
    let external = |e: &EmbedParts<'_>| uri_of(e.external.as_ref());
    Ok(match embed.kind.as_deref().unwrap_or_default() {
        "app.bsky.embed.images" => {
            Embed { embed_type: EmbedType::Images, image_count: embed.image_count(), ..Embed::default() }
        }
        "app.bsky.embed.video" => Embed { embed_type: EmbedType::Video, ..Embed::default() },
        "app.bsky.embed.external" => {
            Embed { embed_type: EmbedType::External, external_uri: external(embed), ..Embed::default() }
        }
        "app.bsky.embed.record" => Embed {
            embed_type: EmbedType::Record,
            quote_uri: embed.record.as_ref().and_then(|r| r.uri.as_deref()).map(str::to_owned),
            ..Embed::default()
        },
        "app.bsky.embed.recordWithMedia" => {
            let media = embed.media.as_deref();
            Embed {
                embed_type: EmbedType::RecordWithMedia,
                image_count: media.map_or(0, EmbedParts::image_count),
                external_uri: media.and_then(external),
                quote_uri: uri_of(embed.record.as_ref().and_then(|r| r.record.as_ref())),
            }
        }
        other => return Err(other.to_owned()),
    })
}

fn is_did(did: &str) -> bool {
    let mut parts = did.splitn(3, ':');
    matches!((parts.next(), parts.next(), parts.next()), (Some("did"), Some(method), Some(id))
        if !method.is_empty() && method.bytes().all(|b| b.is_ascii_lowercase())
            && !id.is_empty() && did.len() <= 2048
            && id.bytes().all(|b| b.is_ascii_alphanumeric() || b".-_:%".contains(&b)))
}

/// Record keys: 1–512 characters of `[A-Za-z0-9._:~-]`, not `.` or `..`.
fn is_rkey(rkey: &str) -> bool {
    (1..=512).contains(&rkey.len())
        && rkey != "."
        && rkey != ".."
        && rkey.bytes().all(|b| b.is_ascii_alphanumeric() || b"._:~-".contains(&b))
}

/// At most 200 characters of a value, for drop details.
fn clip(value: &str) -> String {
    value.chars().take(200).collect()
}

/// The fast path of [`decode`]: a well-formed commit (a post created, updated or deleted, or a
/// record of another collection), read into typed, borrowing structs (about three times faster
/// than building a `Value`; measured on synthetic events). Anything else, a wrong type anywhere
/// in the parts it reads, or any check failing, is `None`, and the `Value` path decides; where
/// both decode, they agree (`the_fast_path_agrees_with_the_value_path`).
mod fast {
    use std::borrow::Cow;

    use serde::Deserialize;

    use lake::model::{Delete, InteractionKind};

    use super::{
        Decoded, EmbedParts, InteractionParts, Labels, OtherKind, POST_COLLECTION, PostFields, Reply, UriRef,
        interaction_row, is_did, is_rkey, post_row, post_uri,
    };
    use crate::text::Facet;

    #[derive(Deserialize)]
    struct Event<'a> {
        #[serde(borrow)]
        did: Cow<'a, str>,
        time_us: i64,
        #[serde(borrow)]
        kind: Cow<'a, str>,
        #[serde(borrow)]
        commit: Option<Commit<'a>>,
    }

    #[derive(Deserialize)]
    struct Commit<'a> {
        #[serde(borrow)]
        collection: Cow<'a, str>,
        #[serde(borrow)]
        operation: Cow<'a, str>,
        #[serde(borrow)]
        rkey: Cow<'a, str>,
        #[serde(borrow)]
        cid: Option<Cow<'a, str>>,
        #[serde(borrow)]
        record: Option<Record<'a>>,
    }

    #[derive(Deserialize)]
    struct Record<'a> {
        #[serde(borrow)]
        text: Option<Cow<'a, str>>,
        #[serde(rename = "createdAt", borrow)]
        created_at: Option<Cow<'a, str>>,
        #[serde(borrow)]
        langs: Option<Vec<Cow<'a, str>>>,
        #[serde(borrow)]
        reply: Option<Reply<'a>>,
        #[serde(borrow)]
        embed: Option<EmbedParts<'a>>,
        #[serde(borrow)]
        facets: Option<Vec<Facet<'a>>>,
        #[serde(borrow)]
        labels: Option<Labels<'a>>,
        #[serde(borrow)]
        subject: Option<Subject<'a>>,
    }

    /// A like's or repost's `subject` (`{uri, cid}`), or another collection's (a follow's DID).
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Subject<'a> {
        Ref(#[serde(borrow)] UriRef<'a>),
        Other(serde::de::IgnoredAny),
    }

    pub(super) fn decode_commit(line: &[u8]) -> Option<Decoded> {
        // serde_json does not check the strings it skips for valid UTF-8 or lone surrogates,
        // as the `Value` path does: such a line must be judged there.
        let line = std::str::from_utf8(line).ok().filter(|line| !escapes_a_surrogate(line))?;
        let event: Event<'_> = serde_json::from_str(line).ok()?;
        let commit = event.commit.filter(|_| event.kind == "commit")?;
        if !is_did(&event.did) || !matches!(&*commit.operation, "create" | "update" | "delete") {
            return None;
        }
        let time_us = event.time_us;
        let interaction = InteractionKind::of_collection(&commit.collection);
        if commit.collection != POST_COLLECTION && interaction.is_none() {
            return Some(Decoded::Other { kind: OtherKind::OtherCollection, time_us });
        }
        if !is_rkey(&commit.rkey) {
            return None;
        }
        let (did, rkey) = (&*event.did, &*commit.rkey);
        if let Some(kind) = interaction {
            let record = commit.record.as_ref();
            let subject = match record.and_then(|r| r.subject.as_ref()) {
                None => None,
                Some(Subject::Ref(subject)) => Some(subject),
                // Not `{uri: string}`: the `Value` path says which part is wrong.
                Some(Subject::Other(_)) => return None,
            };
            let parts = InteractionParts {
                kind,
                did,
                rkey,
                operation: &commit.operation,
                time_us,
                created_at: record.and_then(|r| r.created_at.as_deref()),
                record: record.is_some(),
                subject_uri: subject.map(|s| s.uri.as_deref()),
            };
            return Some(interaction_row(parts));
        }
        match &*commit.operation {
            "delete" => {
                let delete = Delete { uri: post_uri(did, rkey), did: did.to_owned(), deleted_at_us: time_us };
                return Some(Decoded::PostDelete(delete));
            }
            "update" => return Some(Decoded::Other { kind: OtherKind::PostUpdate, time_us }),
            _ => {}
        }
        let (cid, record) = (commit.cid?, commit.record?);
        let text = record.text?;
        let fields = PostFields {
            uri: post_uri(did, rkey),
            cid: &cid,
            did,
            rkey,
            time_us,
            text: &text,
            created_at: record.created_at.as_deref(),
            langs: record.langs.into_iter().flatten().map(Cow::into_owned).collect(),
            reply: record.reply,
            embed: record.embed,
            facets: record.facets.unwrap_or_default(),
            labels: record.labels,
        };
        Some(post_row(fields))
    }

    /// Whether `line` may escape a UTF-16 surrogate (`\uD800` to `\uDFFF`). Erring towards
    /// yes (an escaped backslash before `u`) only sends the line down the slower path.
    fn escapes_a_surrogate(line: &str) -> bool {
        let bytes = line.as_bytes();
        memchr::memchr_iter(b'\\', bytes).any(|at| {
            matches!(bytes.get(at + 1..at + 4), Some([b'u', b'd' | b'D', b'8'..=b'9' | b'a'..=b'f' | b'A'..=b'F']))
        })
    }
}

#[cfg(test)]
mod tests;
