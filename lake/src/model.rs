//! The shared vocabulary: the row types of each table and their Arrow schemas.
//!
//! Timestamps are microseconds since the Unix epoch, UTC, stored zone-less
//! (`Timestamp(Microsecond, None)`): the bundled DuckDB has no ICU, so `TIMESTAMPTZ` would make
//! bucketing fail. This module knows nothing of where rows come from or how they are queried.

use std::sync::{Arc, LazyLock};

use arrow::array::{
    ArrayRef, BooleanBuilder, Int32Builder, ListBuilder, StringBuilder, StringDictionaryBuilder,
    TimestampMicrosecondBuilder,
};
use arrow::datatypes::{DataType, Field, Int32Type, Schema, SchemaRef, TimeUnit};
use arrow::record_batch::RecordBatch;
use serde::{Deserialize, Serialize};

/// Longest hashtag kept, in characters (Bluesky's limit is 64).
pub const MAX_TAG_CHARS: usize = 64;

/// Normalises a hashtag, the same way at ingest and in filters: without leading '#' (or the
/// fullwidth '＃'), lower-cased, at most [`MAX_TAG_CHARS`] characters.
pub fn normalise_tag(tag: &str) -> String {
    tag.trim_start_matches(['#', '＃']).chars().take(MAX_TAG_CHARS).collect::<String>().to_lowercase()
}

/// The version of the enrichment that produced a row's derived columns. Bump it when
/// decoding or enrichment changes what a row holds, so old rows can be found and redone.
/// 2: `detected_lang` (whatlang). 3: `detected_lang` from ingest's own trigram classifier.
/// 4: `detected_lang` from the first 96 letters of the words only.
pub const ENRICH_VERSION: i32 = 4;

/// Bluesky's first posts are from November 2022; an earlier `createdAt` is a client clock gone
/// wrong, and ingest clamps it to the event's `time_us`.
pub const EARLIEST_PLAUSIBLE_US: i64 = 1_667_260_800_000_000; // 2022-11-01T00:00:00Z

/// How far past the event's `time_us` a stored `created_at` may be; ingest clamps a later one.
/// Queries rely on it: `indexed_at < t` implies `created_at < t + MAX_FUTURE_SKEW_US`, which
/// lets an `indexedAt` filter prune date partitions (partitioned by `created_at`).
pub const MAX_FUTURE_SKEW_US: i64 = 24 * 3600 * 1_000_000;

/// One Bluesky post (`app.bsky.feed.post` record) as stored in the `posts` table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Post {
    /// `at://{did}/app.bsky.feed.post/{rkey}`
    pub uri: String,
    pub cid: String,
    /// The author's DID.
    pub did: String,
    pub rkey: String,
    /// From the record's `createdAt` (client clock), UTC microseconds.
    pub created_at_us: i64,
    /// The event's `time_us`: when the firehose saw the post, UTC microseconds.
    pub indexed_at_us: i64,
    /// Set when `createdAt` was absurd (unparseable offsets aside) and `created_at_us` was
    /// clamped to `indexed_at_us`.
    pub created_at_clamped: bool,
    pub text: String,
    pub langs: Vec<String>,
    pub detected_lang: Option<String>,
    pub reply_root: Option<String>,
    pub reply_parent: Option<String>,
    pub quote_uri: Option<String>,
    pub embed_type: EmbedType,
    pub image_count: i32,
    pub external_uri: Option<String>,
    /// Lower-cased, without '#', from tag facets and from the text, deduplicated in order.
    pub hashtags: Vec<String>,
    /// DIDs from mention facets.
    pub mentions: Vec<String>,
    /// URIs from link facets.
    pub links: Vec<String>,
    /// Self-labels (`com.atproto.label.defs#selfLabels`).
    pub labels: Vec<String>,
    /// Length of `text` in UTF-8 bytes.
    pub text_len: i32,
    pub enrich_version: i32,
}

/// What a post embeds. Stored as its snake_case name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EmbedType {
    #[default]
    None,
    Images,
    Video,
    External,
    Record,
    RecordWithMedia,
}

impl EmbedType {
    pub const ALL: [EmbedType; 6] = [
        EmbedType::None,
        EmbedType::Images,
        EmbedType::Video,
        EmbedType::External,
        EmbedType::Record,
        EmbedType::RecordWithMedia,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EmbedType::None => "none",
            EmbedType::Images => "images",
            EmbedType::Video => "video",
            EmbedType::External => "external",
            EmbedType::Record => "record",
            EmbedType::RecordWithMedia => "record_with_media",
        }
    }

    pub fn parse(name: &str) -> Option<EmbedType> {
        EmbedType::ALL.into_iter().find(|e| e.as_str() == name)
    }
}

/// The columns of the `posts` table, in schema order. Plans name columns with this enum, so
/// no identifier in SQL ever comes from user text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PostColumn {
    Uri,
    Cid,
    Did,
    Rkey,
    CreatedAt,
    IndexedAt,
    CreatedAtClamped,
    Text,
    Langs,
    DetectedLang,
    ReplyRoot,
    ReplyParent,
    QuoteUri,
    EmbedType,
    ImageCount,
    ExternalUri,
    Hashtags,
    Mentions,
    Links,
    Labels,
    TextLen,
    EnrichVersion,
}

impl PostColumn {
    pub const ALL: [PostColumn; 22] = [
        PostColumn::Uri,
        PostColumn::Cid,
        PostColumn::Did,
        PostColumn::Rkey,
        PostColumn::CreatedAt,
        PostColumn::IndexedAt,
        PostColumn::CreatedAtClamped,
        PostColumn::Text,
        PostColumn::Langs,
        PostColumn::DetectedLang,
        PostColumn::ReplyRoot,
        PostColumn::ReplyParent,
        PostColumn::QuoteUri,
        PostColumn::EmbedType,
        PostColumn::ImageCount,
        PostColumn::ExternalUri,
        PostColumn::Hashtags,
        PostColumn::Mentions,
        PostColumn::Links,
        PostColumn::Labels,
        PostColumn::TextLen,
        PostColumn::EnrichVersion,
    ];

    pub fn name(self) -> &'static str {
        match self {
            PostColumn::Uri => "uri",
            PostColumn::Cid => "cid",
            PostColumn::Did => "did",
            PostColumn::Rkey => "rkey",
            PostColumn::CreatedAt => "created_at",
            PostColumn::IndexedAt => "indexed_at",
            PostColumn::CreatedAtClamped => "created_at_clamped",
            PostColumn::Text => "text",
            PostColumn::Langs => "langs",
            PostColumn::DetectedLang => "detected_lang",
            PostColumn::ReplyRoot => "reply_root",
            PostColumn::ReplyParent => "reply_parent",
            PostColumn::QuoteUri => "quote_uri",
            PostColumn::EmbedType => "embed_type",
            PostColumn::ImageCount => "image_count",
            PostColumn::ExternalUri => "external_uri",
            PostColumn::Hashtags => "hashtags",
            PostColumn::Mentions => "mentions",
            PostColumn::Links => "links",
            PostColumn::Labels => "labels",
            PostColumn::TextLen => "text_len",
            PostColumn::EnrichVersion => "enrich_version",
        }
    }
}

fn string_list(name: &str) -> Field {
    Field::new(name, DataType::List(Arc::new(Field::new("item", DataType::Utf8, true))), false)
}

static POSTS_SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    let ts = DataType::Timestamp(TimeUnit::Microsecond, None);
    let dict = DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8));
    Arc::new(Schema::new(vec![
        Field::new("cid", DataType::Utf8, false),
        Field::new("did", DataType::Utf8, false),
        Field::new("rkey", DataType::Utf8, false),
        Field::new("created_at", ts.clone(), false),
        Field::new("indexed_at", ts, false),
        Field::new("created_at_clamped", DataType::Boolean, false),
        Field::new("text", DataType::Utf8, false),
        string_list("langs"),
        Field::new("detected_lang", DataType::Utf8, true),
        Field::new("reply_root", DataType::Utf8, true),
        Field::new("reply_parent", DataType::Utf8, true),
        Field::new("quote_uri", DataType::Utf8, true),
        Field::new("embed_type", dict, false),
        Field::new("image_count", DataType::Int32, false),
        Field::new("external_uri", DataType::Utf8, true),
        string_list("hashtags"),
        string_list("mentions"),
        string_list("links"),
        string_list("labels"),
        Field::new("text_len", DataType::Int32, false),
        Field::new("enrich_version", DataType::Int32, false),
    ]))
});

/// The Arrow schema of the `posts` table (without the hive `date` partition column). A post's
/// uri is not stored: it is [`post_uri`] of its `did` and `rkey`, which readers make with
/// [`post_uri_sql`] (files written before kept a `uri` column, which readers leave unread).
pub fn posts_schema() -> SchemaRef {
    POSTS_SCHEMA.clone()
}

/// SQL for the uri of the post whose columns `did` and `rkey` are qualified by `alias` (none
/// when empty): [`post_uri`] in SQL.
pub fn post_uri_sql(alias: &str) -> String {
    let dot = if alias.is_empty() { "" } else { "." };
    format!("'at://' || {alias}{dot}did || '/app.bsky.feed.post/' || {alias}{dot}rkey")
}

/// The rows of `read_parquet` (the FROM clause of a `read_parquet` of `posts` files, which may
/// end in a WHERE) with their `uri` made from `did` and `rkey` in its usual place, first,
/// whether or not a file still stores one.
pub fn posts_with_uri_sql(read_parquet: &str) -> String {
    format!("SELECT {} AS uri, COLUMNS(lambda c: c <> 'uri') FROM {read_parquet}", post_uri_sql(""))
}

/// Whether the posts file `path` stores a `uri` column (as files written before uris were made
/// of `did` and `rkey` do); false for a file that does not read.
pub fn stores_uri(path: &std::path::Path) -> bool {
    use parquet::file::reader::FileReader;
    std::fs::File::open(path)
        .ok()
        .and_then(|file| parquet::file::reader::SerializedFileReader::new(file).ok())
        .is_some_and(|reader| {
            reader.metadata().file_metadata().schema_descr().columns().iter().any(|c| c.path().string() == "uri")
        })
}

/// SQL for the record key of a delete's `uri` (the last of its five `/`-separated parts), by
/// which with `did` deletes match posts without making every post's uri.
pub const DELETE_RKEY_SQL: &str = "split_part(uri, '/', 5)";

/// A post deleted on Bluesky: it disappears from every answer (anti-join at query time).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Delete {
    pub uri: String,
    /// The author's DID.
    pub did: String,
    /// The delete event's `time_us`, UTC microseconds.
    pub deleted_at_us: i64,
}

static DELETES_SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        Field::new("uri", DataType::Utf8, false),
        Field::new("did", DataType::Utf8, false),
        Field::new("deleted_at", DataType::Timestamp(TimeUnit::Microsecond, None), false),
    ]))
});

/// The Arrow schema of the `deletes` table (without the hive `date` partition column).
pub fn deletes_schema() -> SchemaRef {
    DELETES_SCHEMA.clone()
}

pub fn deletes_to_batch(deletes: &[Delete]) -> crate::Result<RecordBatch> {
    let mut uri = StringBuilder::new();
    let mut did = StringBuilder::new();
    let mut deleted_at = TimestampMicrosecondBuilder::with_capacity(deletes.len());
    for delete in deletes {
        uri.append_value(&delete.uri);
        did.append_value(&delete.did);
        deleted_at.append_value(delete.deleted_at_us);
    }
    let columns: Vec<ArrayRef> = vec![Arc::new(uri.finish()), Arc::new(did.finish()), Arc::new(deleted_at.finish())];
    Ok(RecordBatch::try_new(deletes_schema(), columns)?)
}

/// Account statuses whose posts stay visible: the relay's own states, not the account's.
pub const VISIBLE_INACTIVE_STATUSES: [&str; 2] = ["desynchronized", "throttled"];

/// An identity event (the DID's current handle) or an account event (whether the account is
/// active, and if not, why: `deactivated`, `takendown`, `suspended`, `deleted`…), as stored in
/// the `accounts` table. An account's state is its latest event of each kind. Posts of an
/// account that is inactive for any status but [`VISIBLE_INACTIVE_STATUSES`] disappear from
/// every answer until it is active again, as they do on Bluesky.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct AccountEvent {
    pub did: String,
    /// The event's `time_us`, UTC microseconds.
    pub seen_at_us: i64,
    /// From an identity event: the handle, when the event carries one.
    pub handle: Option<String>,
    /// From an account event.
    pub active: Option<bool>,
    /// From an account event that is not active.
    pub status: Option<String>,
}

static ACCOUNTS_SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        Field::new("did", DataType::Utf8, false),
        Field::new("seen_at", DataType::Timestamp(TimeUnit::Microsecond, None), false),
        Field::new("handle", DataType::Utf8, true),
        Field::new("active", DataType::Boolean, true),
        Field::new("status", DataType::Utf8, true),
    ]))
});

impl TableRow for AccountEvent {
    const TABLE: &'static str = crate::layout::ACCOUNTS_TABLE;
    fn partition_micros(&self) -> i64 {
        self.seen_at_us
    }
    fn tie_break(&self) -> &str {
        &self.did
    }
    fn schema() -> SchemaRef {
        ACCOUNTS_SCHEMA.clone()
    }
    fn to_batch(rows: &[Self]) -> crate::Result<RecordBatch> {
        let mut did = StringBuilder::new();
        let mut seen_at = TimestampMicrosecondBuilder::with_capacity(rows.len());
        let mut handle = StringBuilder::new();
        let mut active = BooleanBuilder::with_capacity(rows.len());
        let mut status = StringBuilder::new();
        for row in rows {
            did.append_value(&row.did);
            seen_at.append_value(row.seen_at_us);
            handle.append_option(row.handle.as_deref());
            active.append_option(row.active);
            status.append_option(row.status.as_deref());
        }
        let columns: Vec<ArrayRef> = vec![
            Arc::new(did.finish()),
            Arc::new(seen_at.finish()),
            Arc::new(handle.finish()),
            Arc::new(active.finish()),
            Arc::new(status.finish()),
        ];
        Ok(RecordBatch::try_new(Self::schema(), columns)?)
    }
}

/// A row type stored in a lake table, partitioned by UTC day.
pub trait TableRow: Sized {
    /// The table's directory name under the lake.
    const TABLE: &'static str;
    /// The timestamp whose UTC day is the row's partition (and by which a file is sorted,
    /// unless [`TableRow::sort_key`] says otherwise).
    fn partition_micros(&self) -> i64;
    /// Ties in `partition_micros` are broken by this, so files are deterministic.
    fn tie_break(&self) -> &str;
    /// The order of a file's rows: by partition timestamp, then tie-break, unless a table's
    /// queries prune better by something else.
    fn sort_key(&self) -> (i64, &str, &str) {
        (self.partition_micros(), self.tie_break(), "")
    }
    fn schema() -> SchemaRef;
    fn to_batch(rows: &[Self]) -> crate::Result<RecordBatch>;
}

impl TableRow for Post {
    const TABLE: &'static str = crate::layout::POSTS_TABLE;
    fn partition_micros(&self) -> i64 {
        self.created_at_us
    }
    fn tie_break(&self) -> &str {
        &self.uri
    }
    fn schema() -> SchemaRef {
        posts_schema()
    }
    fn to_batch(rows: &[Self]) -> crate::Result<RecordBatch> {
        posts_to_batch(rows)
    }
}

impl TableRow for Delete {
    const TABLE: &'static str = crate::layout::DELETES_TABLE;
    fn partition_micros(&self) -> i64 {
        self.deleted_at_us
    }
    fn tie_break(&self) -> &str {
        &self.uri
    }
    fn schema() -> SchemaRef {
        deletes_schema()
    }
    fn to_batch(rows: &[Self]) -> crate::Result<RecordBatch> {
        deletes_to_batch(rows)
    }
}

/// The URI of the post `rkey` of `did`.
pub fn post_uri(did: &str, rkey: &str) -> String {
    format!("at://{did}/app.bsky.feed.post/{rkey}")
}

/// The key by which posts of the same time (or count, in a ranking) are ordered: their DID,
/// then their record key; the `uri` itself for a uri that is not a post's. (Not the uri's own
/// order, which would have every row's uri made: the two differ only for a DID that begins
/// another and is followed in it by a character before `/`.)
pub fn post_order_key(uri: &str) -> (&str, &str) {
    post_uri_parts(uri).unwrap_or((uri, ""))
}

/// A post's uri (`at://{did}/app.bsky.feed.post/{rkey}`) as its DID and record key.
pub fn post_uri_parts(uri: &str) -> Option<(&str, &str)> {
    let (did, rkey) = uri.strip_prefix("at://")?.split_once("/app.bsky.feed.post/")?;
    (!did.is_empty() && !did.contains('/') && !rkey.is_empty() && !rkey.contains('/')).then_some((did, rkey))
}

/// What an interaction is: a like or a repost of a post. (Ingest indexes per-kind counters by
/// `kind as usize`: keep the order.)
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InteractionKind {
    #[default]
    Like,
    Repost,
}

impl InteractionKind {
    pub const ALL: [InteractionKind; 2] = [InteractionKind::Like, InteractionKind::Repost];

    /// As stored in the `kind` column.
    pub fn as_str(self) -> &'static str {
        match self {
            InteractionKind::Like => "like",
            InteractionKind::Repost => "repost",
        }
    }

    /// The record collection of its kind.
    pub fn collection(self) -> &'static str {
        match self {
            InteractionKind::Like => "app.bsky.feed.like",
            InteractionKind::Repost => "app.bsky.feed.repost",
        }
    }

    pub fn of_collection(collection: &str) -> Option<InteractionKind> {
        InteractionKind::ALL.into_iter().find(|k| k.collection() == collection)
    }
}

/// A like or repost of a post (an `app.bsky.feed.like` or `app.bsky.feed.repost` record), as
/// stored in the `interactions` table. Its own uri is `at://{did}/{collection}/{rkey}` and its
/// subject's `at://{subject_did}/app.bsky.feed.post/{subject_rkey}`; the table keeps their
/// parts, not the uris, which would double its size (likes are ten times as many as posts).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Interaction {
    /// Who liked or reposted.
    pub did: String,
    pub kind: InteractionKind,
    pub rkey: String,
    /// The post's author.
    pub subject_did: String,
    pub subject_rkey: String,
    /// From the record's `createdAt`, clamped as a post's is.
    pub created_at_us: i64,
    /// The event's `time_us`.
    pub indexed_at_us: i64,
}

static INTERACTIONS_SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        Field::new("did", DataType::Utf8, false),
        Field::new("kind", DataType::Utf8, false),
        Field::new("rkey", DataType::Utf8, false),
        Field::new("subject_did", DataType::Utf8, false),
        Field::new("subject_rkey", DataType::Utf8, false),
        Field::new("created_at", DataType::Timestamp(TimeUnit::Microsecond, None), false),
        Field::new("indexed_at", DataType::Timestamp(TimeUnit::Microsecond, None), false),
    ]))
});

impl TableRow for Interaction {
    const TABLE: &'static str = crate::layout::INTERACTIONS_TABLE;
    fn partition_micros(&self) -> i64 {
        self.created_at_us
    }
    fn tie_break(&self) -> &str {
        &self.rkey
    }
    /// By actor: an undo names the like (`did`, `kind`, `rkey`), and the row groups of nearby
    /// actors let the engine find the likes a batch of undos takes out in a few of them
    /// (`exec`'s interaction counts); a post's likes are looked for in the file's rollup of
    /// subjects ([`crate::rollup`]), sorted by subject. Measured on a generated file of 6 M
    /// likes: 60 undos found in 56 of 373 row groups, 35 ms; the file 8% larger than sorted by
    /// subject.
    fn sort_key(&self) -> (i64, &str, &str) {
        (0, &self.did, &self.rkey)
    }
    fn schema() -> SchemaRef {
        INTERACTIONS_SCHEMA.clone()
    }
    fn to_batch(rows: &[Self]) -> crate::Result<RecordBatch> {
        let n = rows.len();
        let mut did = StringBuilder::with_capacity(n, n * 32);
        let mut kind = StringBuilder::with_capacity(n, n * 6);
        let mut rkey = StringBuilder::with_capacity(n, n * 13);
        let mut subject_did = StringBuilder::with_capacity(n, n * 32);
        let mut subject_rkey = StringBuilder::with_capacity(n, n * 13);
        let mut created_at = TimestampMicrosecondBuilder::with_capacity(n);
        let mut indexed_at = TimestampMicrosecondBuilder::with_capacity(n);
        for row in rows {
            did.append_value(&row.did);
            kind.append_value(row.kind.as_str());
            rkey.append_value(&row.rkey);
            subject_did.append_value(&row.subject_did);
            subject_rkey.append_value(&row.subject_rkey);
            created_at.append_value(row.created_at_us);
            indexed_at.append_value(row.indexed_at_us);
        }
        let columns: Vec<ArrayRef> = vec![
            Arc::new(did.finish()),
            Arc::new(kind.finish()),
            Arc::new(rkey.finish()),
            Arc::new(subject_did.finish()),
            Arc::new(subject_rkey.finish()),
            Arc::new(created_at.finish()),
            Arc::new(indexed_at.finish()),
        ];
        Ok(RecordBatch::try_new(Self::schema(), columns)?)
    }
}

/// A like or repost deleted (an unlike, an undone repost), as stored in the
/// `interaction_deletes` table: it takes the interaction with the same `did`, `kind` and
/// `rkey` out of every count.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct InteractionDelete {
    pub did: String,
    pub kind: InteractionKind,
    pub rkey: String,
    /// The delete event's `time_us`.
    pub deleted_at_us: i64,
}

static INTERACTION_DELETES_SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        Field::new("did", DataType::Utf8, false),
        Field::new("kind", DataType::Utf8, false),
        Field::new("rkey", DataType::Utf8, false),
        Field::new("deleted_at", DataType::Timestamp(TimeUnit::Microsecond, None), false),
    ]))
});

impl TableRow for InteractionDelete {
    const TABLE: &'static str = crate::layout::INTERACTION_DELETES_TABLE;
    fn partition_micros(&self) -> i64 {
        self.deleted_at_us
    }
    fn tie_break(&self) -> &str {
        &self.rkey
    }
    fn schema() -> SchemaRef {
        INTERACTION_DELETES_SCHEMA.clone()
    }
    fn to_batch(rows: &[Self]) -> crate::Result<RecordBatch> {
        let mut did = StringBuilder::new();
        let mut kind = StringBuilder::new();
        let mut rkey = StringBuilder::new();
        let mut deleted_at = TimestampMicrosecondBuilder::with_capacity(rows.len());
        for row in rows {
            did.append_value(&row.did);
            kind.append_value(row.kind.as_str());
            rkey.append_value(&row.rkey);
            deleted_at.append_value(row.deleted_at_us);
        }
        let columns: Vec<ArrayRef> = vec![
            Arc::new(did.finish()),
            Arc::new(kind.finish()),
            Arc::new(rkey.finish()),
            Arc::new(deleted_at.finish()),
        ];
        Ok(RecordBatch::try_new(Self::schema(), columns)?)
    }
}

/// Builds one Arrow batch of `posts` rows, in the order given.
pub fn posts_to_batch(posts: &[Post]) -> crate::Result<RecordBatch> {
    let n = posts.len();
    let mut cid = StringBuilder::with_capacity(n, n * 60);
    let mut did = StringBuilder::with_capacity(n, n * 32);
    let mut rkey = StringBuilder::with_capacity(n, n * 13);
    let mut created_at = TimestampMicrosecondBuilder::with_capacity(n);
    let mut indexed_at = TimestampMicrosecondBuilder::with_capacity(n);
    let mut created_at_clamped = BooleanBuilder::with_capacity(n);
    let mut text = StringBuilder::with_capacity(n, n * 100);
    let mut langs = ListBuilder::new(StringBuilder::new());
    let mut detected_lang = StringBuilder::new();
    let mut reply_root = StringBuilder::new();
    let mut reply_parent = StringBuilder::new();
    let mut quote_uri = StringBuilder::new();
    let mut embed_type = StringDictionaryBuilder::<Int32Type>::new();
    let mut image_count = Int32Builder::with_capacity(n);
    let mut external_uri = StringBuilder::new();
    let mut hashtags = ListBuilder::new(StringBuilder::new());
    let mut mentions = ListBuilder::new(StringBuilder::new());
    let mut links = ListBuilder::new(StringBuilder::new());
    let mut labels = ListBuilder::new(StringBuilder::new());
    let mut text_len = Int32Builder::with_capacity(n);
    let mut enrich_version = Int32Builder::with_capacity(n);

    fn push_list(builder: &mut ListBuilder<StringBuilder>, values: &[String]) {
        for value in values {
            builder.values().append_value(value);
        }
        builder.append(true);
    }

    for post in posts {
        if post_uri_parts(&post.uri) != Some((post.did.as_str(), post.rkey.as_str())) {
            return Err(crate::Error::Corrupt(format!(
                "post {} is not at://{}/app.bsky.feed.post/{}: a post's uri is made of its did and rkey",
                post.uri, post.did, post.rkey
            )));
        }
        cid.append_value(&post.cid);
        did.append_value(&post.did);
        rkey.append_value(&post.rkey);
        created_at.append_value(post.created_at_us);
        indexed_at.append_value(post.indexed_at_us);
        created_at_clamped.append_value(post.created_at_clamped);
        text.append_value(&post.text);
        push_list(&mut langs, &post.langs);
        detected_lang.append_option(post.detected_lang.as_deref());
        reply_root.append_option(post.reply_root.as_deref());
        reply_parent.append_option(post.reply_parent.as_deref());
        quote_uri.append_option(post.quote_uri.as_deref());
        embed_type.append_value(post.embed_type.as_str());
        image_count.append_value(post.image_count);
        external_uri.append_option(post.external_uri.as_deref());
        push_list(&mut hashtags, &post.hashtags);
        push_list(&mut mentions, &post.mentions);
        push_list(&mut links, &post.links);
        push_list(&mut labels, &post.labels);
        text_len.append_value(post.text_len);
        enrich_version.append_value(post.enrich_version);
    }

    let columns: Vec<ArrayRef> = vec![
        Arc::new(cid.finish()),
        Arc::new(did.finish()),
        Arc::new(rkey.finish()),
        Arc::new(created_at.finish()),
        Arc::new(indexed_at.finish()),
        Arc::new(created_at_clamped.finish()),
        Arc::new(text.finish()),
        Arc::new(langs.finish()),
        Arc::new(detected_lang.finish()),
        Arc::new(reply_root.finish()),
        Arc::new(reply_parent.finish()),
        Arc::new(quote_uri.finish()),
        Arc::new(embed_type.finish()),
        Arc::new(image_count.finish()),
        Arc::new(external_uri.finish()),
        Arc::new(hashtags.finish()),
        Arc::new(mentions.finish()),
        Arc::new(links.finish()),
        Arc::new(labels.finish()),
        Arc::new(text_len.finish()),
        Arc::new(enrich_version.finish()),
    ];
    Ok(RecordBatch::try_new(posts_schema(), columns)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::Array;

    #[test]
    fn post_columns_are_the_uri_then_the_schema_fields_in_order() {
        let schema = posts_schema();
        let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
        let columns: Vec<&str> = PostColumn::ALL.iter().map(|c| c.name()).collect();
        assert_eq!(columns[0], "uri");
        assert_eq!(names, columns[1..]);
    }

    #[test]
    fn a_post_whose_uri_is_not_made_of_its_did_and_rkey_is_not_written() {
        let post = |uri: &str| Post { uri: uri.into(), did: "did:plc:a".into(), rkey: "1".into(), ..Post::default() };
        assert!(posts_to_batch(&[post("at://did:plc:a/app.bsky.feed.post/1")]).is_ok());
        for wrong in ["at://did:plc:b/app.bsky.feed.post/1", "at://did:plc:a/app.bsky.feed.post/2", "", "1"] {
            let error = posts_to_batch(&[post(wrong)]).unwrap_err().to_string();
            assert!(error.contains("made of its did and rkey"), "{wrong}: {error}");
        }
    }

    #[test]
    fn a_batch_has_one_row_per_post_and_keeps_list_values() {
        let post = Post {
            uri: "at://did:plc:a/app.bsky.feed.post/1".into(),
            did: "did:plc:a".into(),
            rkey: "1".into(),
            langs: vec!["en".into(), "ja".into()],
            hashtags: vec!["rust".into()],
            embed_type: EmbedType::Images,
            ..Post::default()
        };
        let other =
            Post { uri: post_uri("did:plc:b", "2"), did: "did:plc:b".into(), rkey: "2".into(), ..Post::default() };
        let batch = posts_to_batch(&[post.clone(), other]).unwrap();
        assert_eq!(batch.num_rows(), 2);
        let langs = batch.column(7).as_any().downcast_ref::<arrow::array::ListArray>().unwrap();
        assert_eq!(langs.value(0).len(), 2);
        assert_eq!(langs.value(1).len(), 0);
    }

    #[test]
    fn embed_types_round_trip_through_their_names() {
        for embed in EmbedType::ALL {
            assert_eq!(EmbedType::parse(embed.as_str()), Some(embed));
        }
        assert_eq!(EmbedType::parse("gif"), None);
    }
}
