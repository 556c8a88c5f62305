//! GraphQL types: thin newtypes over `lake` rows, enums mapped to `lake` enums, and input
//! filters converted into `lake::plan::PostFilter`.

use std::sync::Arc;

use async_graphql::{ComplexObject, Context, Enum, ID, InputObject, Object, SimpleObject};
use lake::model::{self, Post};
use lake::plan;
use lake::search::TextQuery;

use super::RequestLoader;
use super::author::Author;
use super::loaders::{EngagementKey, Engagements};
use super::scalars::DateTime;
use crate::error;

#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
#[graphql(remote = "lake::model::EmbedType")]
pub enum EmbedType {
    None,
    Images,
    Video,
    External,
    Record,
    RecordWithMedia,
}

#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug, Default)]
pub enum PostOrder {
    /// Newest `createdAt` first.
    #[default]
    Newest,
    /// Oldest `createdAt` first.
    Oldest,
    /// Most liked first (ties by the author's DID, then the record key), counting the likes since `filter.since`, which it needs:
    /// the posts of a window ranked.
    MostLiked,
    /// Most reposted first, as `MOST_LIKED`.
    MostReposted,
    /// Most replied to first (direct replies), as `MOST_LIKED`.
    MostReplied,
    /// Most quoted first, as `MOST_LIKED`.
    MostQuoted,
}

impl PostOrder {
    /// The order by time, or the engagement a ranking is by.
    pub fn by_time(self) -> Result<plan::PostOrder, plan::Engagement> {
        match self {
            PostOrder::Newest => Ok(plan::PostOrder::Newest),
            PostOrder::Oldest => Ok(plan::PostOrder::Oldest),
            PostOrder::MostLiked => Err(plan::Engagement::Likes),
            PostOrder::MostReposted => Err(plan::Engagement::Reposts),
            PostOrder::MostReplied => Err(plan::Engagement::Replies),
            PostOrder::MostQuoted => Err(plan::Engagement::Quotes),
        }
    }
}

/// Which of a post's two times a filter or a bucket reads.
#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug, Default)]
#[graphql(remote = "lake::plan::Clock")]
pub enum Clock {
    /// The record's `createdAt`, written by the author's client: usually right, sometimes
    /// backdated or ahead (clamped to `indexedAt` when absurd).
    #[default]
    CreatedAt,
    /// When the firehose saw the post.
    IndexedAt,
}

/// How `text` matches. Words are runs of letters, digits and `_`; each Chinese or Japanese
/// character is a word of its own. Case-insensitive.
#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug, Default)]
#[graphql(remote = "lake::search::TextMode")]
pub enum TextMode {
    /// The query anywhere in the text, as typed (any script, emoji, punctuation).
    #[default]
    Substring,
    /// Every word of the query as a whole word, in any order.
    Words,
    /// The words of the query in this order, separated only by spaces or punctuation.
    Phrase,
    /// Every word of the query begins a word of the text (`rus` finds Rust and Russia).
    Prefix,
}

/// A text search.
#[derive(InputObject, Clone, Debug)]
pub struct TextSearch {
    pub query: String,
    #[graphql(default_with = "TextMode::Substring")]
    pub mode: TextMode,
}

#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
#[graphql(remote = "lake::zone::Interval")]
pub enum Interval {
    Minute,
    Hour,
    /// A local calendar day: 23 or 25 hours across a DST change.
    Day,
    /// From Monday, local.
    Week,
    Month,
}

/// What `timeBuckets` groups by, besides time. A post counts in every group it belongs to:
/// each of its languages (bare, lower-case: `en-US` counts as `en`) or hashtags; a post with
/// none counts in the null group.
#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
#[graphql(remote = "lake::plan::Dimension")]
pub enum Dimension {
    Lang,
    EmbedType,
    /// Groups `true` and `false`.
    IsReply,
    Hashtag,
    /// The author's DID (narrow with `filter.authors`: every author seen gets a row per bucket).
    Author,
}

/// Which posts to consider. Every list means "any of"; an empty or absent list does not
/// constrain. All conditions must hold together.
#[derive(InputObject, Default, Clone, Debug)]
pub struct PostFilter {
    /// `clock >= since`.
    pub since: Option<DateTime>,
    /// `clock < until`.
    pub until: Option<DateTime>,
    /// The time `since` and `until` compare with; `CREATED_AT` when absent.
    pub clock: Option<Clock>,
    /// Author DIDs.
    pub authors: Option<Vec<ID>>,
    /// Any of the record's languages; `en` also matches `en-US`. Case-insensitive.
    pub langs: Option<Vec<String>>,
    /// Any of these detected languages (`detectedLang`), case-insensitive.
    pub detected_langs: Option<Vec<String>>,
    /// Case-insensitive substring of the text (any script, emoji included); the same as
    /// `text: { query, mode: SUBSTRING }`.
    pub text_contains: Option<String>,
    /// A text search in the mode of your choice; with `textContains`, both must match.
    pub text: Option<TextSearch>,
    /// Any of these hashtags, case-insensitive, without '#'.
    pub hashtags: Option<Vec<String>>,
    /// Posts mentioning any of these DIDs.
    pub mentions: Option<Vec<ID>>,
    /// Only replies (`true`) or only top-level posts (`false`).
    pub is_reply: Option<bool>,
    pub embed_types: Option<Vec<EmbedType>>,
}

impl PostFilter {
    pub fn into_plan(self) -> async_graphql::Result<plan::PostFilter> {
        if let (Some(since), Some(until)) = (self.since, self.until)
            && since > until
        {
            return Err(error::bad_input(format!("filter.since ({since}) is after filter.until ({until})")));
        }
        let ids =
            |ids: Option<Vec<ID>>| -> Vec<String> { ids.unwrap_or_default().into_iter().map(|id| id.0).collect() };
        Ok(plan::PostFilter {
            since_us: self.since.map(DateTime::micros),
            until_us: self.until.map(DateTime::micros),
            clock: self.clock.unwrap_or_default().into(),
            uris: Vec::new(),
            authors: ids(self.authors),
            langs: self.langs.unwrap_or_default(),
            detected_langs: self.detected_langs.unwrap_or_default(),
            text: self
                .text_contains
                .map(|query| TextQuery { query, mode: lake::search::TextMode::Substring })
                .into_iter()
                .chain(self.text.map(|t| TextQuery { query: t.query, mode: t.mode.into() }))
                .collect(),
            hashtags: self.hashtags.unwrap_or_default(),
            mentions: ids(self.mentions),
            is_reply: self.is_reply,
            embed_types: self.embed_types.unwrap_or_default().into_iter().map(Into::into).collect(),
        })
    }
}

/// A Bluesky post.
pub struct PostNode(pub Post);

#[Object(name = "Post")]
impl PostNode {
    /// `at://{did}/app.bsky.feed.post/{rkey}`
    async fn uri(&self) -> ID {
        ID(self.0.uri.clone())
    }
    async fn cid(&self) -> &str {
        &self.0.cid
    }
    /// The author's DID.
    async fn author_did(&self) -> ID {
        ID(self.0.did.clone())
    }
    async fn author(&self) -> Author {
        Author::new(self.0.did.clone())
    }
    async fn text(&self) -> &str {
        &self.0.text
    }
    /// From the record (the client's clock); clamped to `indexedAt` when absurd.
    async fn created_at(&self) -> DateTime {
        DateTime::from_micros(self.0.created_at_us)
    }
    /// When the firehose saw the post.
    async fn indexed_at(&self) -> DateTime {
        DateTime::from_micros(self.0.indexed_at_us)
    }
    /// The languages the author's client declared.
    async fn langs(&self) -> &[String] {
        &self.0.langs
    }
    /// The language detected from the text (`en`, `ja`…), or null when the text is too short
    /// or the detector is not confident. Often differs from `langs`.
    async fn detected_lang(&self) -> Option<&str> {
        self.0.detected_lang.as_deref()
    }
    /// Lower-cased, without '#'.
    async fn hashtags(&self) -> &[String] {
        &self.0.hashtags
    }
    /// Mentioned DIDs.
    async fn mentions(&self) -> Vec<ID> {
        self.0.mentions.iter().cloned().map(ID).collect()
    }
    async fn links(&self) -> &[String] {
        &self.0.links
    }
    async fn reply_parent(&self) -> Option<ID> {
        self.0.reply_parent.clone().map(ID)
    }
    async fn reply_root(&self) -> Option<ID> {
        self.0.reply_root.clone().map(ID)
    }
    /// The quoted post, for record and record-with-media embeds.
    async fn quote_uri(&self) -> Option<ID> {
        self.0.quote_uri.clone().map(ID)
    }
    async fn embed_type(&self) -> EmbedType {
        self.0.embed_type.into()
    }
    async fn image_count(&self) -> i32 {
        self.0.image_count
    }
    /// Live likes: unliked ones and those of hidden accounts do not count. Likes still in the
    /// buffer count once flushed (within `--flush-interval`).
    async fn like_count(&self, ctx: &Context<'_>) -> async_graphql::Result<u64> {
        self.engagement(ctx, plan::Engagement::Likes).await
    }
    /// Live reposts, as `likeCount` counts likes.
    async fn repost_count(&self, ctx: &Context<'_>) -> async_graphql::Result<u64> {
        self.engagement(ctx, plan::Engagement::Reposts).await
    }
    /// Live posts replying to this one directly (whose `replyParent` it is), buffered ones too.
    async fn reply_count(&self, ctx: &Context<'_>) -> async_graphql::Result<u64> {
        self.engagement(ctx, plan::Engagement::Replies).await
    }
    /// Live posts quoting this one (whose `quoteUri` it is), buffered ones too.
    async fn quote_count(&self, ctx: &Context<'_>) -> async_graphql::Result<u64> {
        self.engagement(ctx, plan::Engagement::Quotes).await
    }
}

impl PostNode {
    async fn engagement(&self, ctx: &Context<'_>, engagement: plan::Engagement) -> async_graphql::Result<u64> {
        let key = EngagementKey { engagement, uri: self.0.uri.clone(), created_at_us: self.0.created_at_us };
        Ok(ctx.data::<RequestLoader<Engagements>>()?.load_one(key).await?.unwrap_or(0))
    }
}

/// What `trending` ranks.
#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
#[graphql(remote = "lake::plan::TrendKind")]
pub enum TrendKind {
    /// Hashtags, lower-cased.
    Hashtag,
    /// The hosts of posts' links and link cards, lower-cased, without `www.` or a port.
    LinkDomain,
    /// Declared languages, bare (`en-US` counts as `en`).
    Lang,
}

/// How `trending` orders what rose.
#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug, Default)]
#[graphql(remote = "lake::plan::TrendRank")]
pub enum TrendRank {
    /// By `ratio`: how many times its usual rate; small items rise first.
    #[default]
    Ratio,
    /// By `zScore`: how many standard deviations above its usual rate; big items weigh more.
    ZScore,
}

/// A span of time, `since` included, `until` not.
#[derive(InputObject, Clone, Copy, Debug)]
pub struct TimeRange {
    pub since: DateTime,
    pub until: DateTime,
}

/// An item rising in `trending`'s window against its baseline.
pub struct Trend(pub lake::exec::Trend);

#[Object]
impl Trend {
    /// The hashtag, link domain or language.
    async fn item(&self) -> &str {
        &self.0.item
    }
    /// Posts with it in the window.
    async fn posts(&self) -> u64 {
        self.0.posts
    }
    /// Posts with it in the baseline.
    async fn baseline_posts(&self) -> u64 {
        self.0.baseline_posts
    }
    /// The posts it would have had in the window at its baseline rate: `baselinePosts` times
    /// the window's length over the baseline's.
    async fn expected(&self) -> f64 {
        self.0.expected
    }
    /// `(posts + 1) / (expected + 1)`.
    async fn ratio(&self) -> f64 {
        self.0.ratio
    }
    /// `(posts - expected) / sqrt(expected + 1)`.
    async fn z_score(&self) -> f64 {
        self.0.z_score
    }
}

/// Maps `Post` field names to the lake columns they read (projection pushdown).
pub fn post_field_columns(field: &str) -> &'static [model::PostColumn] {
    use model::PostColumn as C;
    match field {
        "uri" => &[C::Uri],
        "cid" => &[C::Cid],
        "authorDid" | "author" => &[C::Did],
        "text" => &[C::Text],
        "createdAt" => &[C::CreatedAt],
        "indexedAt" => &[C::IndexedAt],
        "langs" => &[C::Langs],
        "detectedLang" => &[C::DetectedLang],
        "hashtags" => &[C::Hashtags],
        "mentions" => &[C::Mentions],
        "links" => &[C::Links],
        "replyParent" => &[C::ReplyParent],
        "replyRoot" => &[C::ReplyRoot],
        "quoteUri" => &[C::QuoteUri],
        "embedType" => &[C::EmbedType],
        "imageCount" => &[C::ImageCount],
        "likeCount" | "repostCount" | "replyCount" | "quoteCount" => &[C::Uri, C::CreatedAt],
        _ => &[],
    }
}

#[derive(SimpleObject)]
pub struct PageInfo {
    pub has_next_page: bool,
    /// Pass as `after` to get the next page.
    pub end_cursor: Option<String>,
}

#[derive(SimpleObject)]
pub struct PostEdge {
    pub cursor: String,
    pub node: PostNode,
}

/// A page of posts, in keyset order: pages stay stable while new posts arrive.
#[derive(SimpleObject)]
#[graphql(complex)]
pub struct PostConnection {
    pub edges: Vec<PostEdge>,
    pub page_info: PageInfo,
    #[graphql(skip)]
    pub filter: Arc<plan::PostFilter>,
}

#[ComplexObject]
impl PostConnection {
    async fn nodes(&self) -> Vec<&PostNode> {
        self.edges.iter().map(|e| &e.node).collect()
    }

    /// All posts matching the filter (not only this page); computed only when selected.
    async fn total_count(&self, ctx: &Context<'_>) -> async_graphql::Result<u64> {
        let filter = self.filter.clone();
        let runner = super::query::runner(ctx)?;
        let estimate = runner.estimate(lake::exec::Reads::Scan { filter: &filter, rows: 1 });
        runner.run(estimate, move |engine| engine.count(&filter)).await
    }
}

/// The lake's size and state.
pub struct LakeStats(pub lake::exec::LakeStats, pub Option<u64>);

#[Object]
impl LakeStats {
    /// Distinct posts in the Parquet files.
    async fn posts(&self) -> u64 {
        self.0.posts
    }
    async fn files(&self) -> u64 {
        self.0.files
    }
    /// Day partitions holding at least one file.
    async fn partitions(&self) -> u64 {
        self.0.partitions
    }
    /// Parquet bytes on disk.
    async fn bytes(&self) -> u64 {
        self.0.bytes
    }
    async fn oldest_post(&self) -> Option<DateTime> {
        self.0.oldest_post_us.map(DateTime::from_micros)
    }
    async fn newest_post(&self) -> Option<DateTime> {
        self.0.newest_post_us.map(DateTime::from_micros)
    }
    /// Bumped by every flush; caches key on it.
    async fn generation(&self) -> u64 {
        self.0.generation
    }
    /// Rows waiting in the Redis buffer for the next flush (posts, deletes and account
    /// events); null while Redis cannot be reached.
    async fn buffered_posts(&self) -> Option<u64> {
        self.1
    }
    async fn last_flush_at(&self) -> Option<DateTime> {
        self.0.last_flush_at_us.map(DateTime::from_micros)
    }
}

/// A hashtag and how many posts and authors used it.
pub struct HashtagCount(pub lake::exec::HashtagCount);

#[Object]
impl HashtagCount {
    /// Lower-case, without '#'.
    async fn tag(&self) -> &str {
        &self.0.tag
    }
    async fn posts(&self) -> u64 {
        self.0.posts
    }
    /// Distinct authors of those posts.
    async fn authors(&self) -> u64 {
        self.0.authors
    }
}

/// Counts for one time bucket (and group).
pub struct TimeBucket(pub lake::exec::Bucket);

#[Object]
impl TimeBucket {
    /// The bucket's first instant.
    async fn start(&self) -> DateTime {
        DateTime::from_micros(self.0.start_us)
    }
    /// The group, with `groupBy`; null for posts without a value (or without `groupBy`).
    async fn group(&self) -> Option<&str> {
        self.0.group.as_deref()
    }
    /// Distinct posts.
    async fn posts(&self) -> u64 {
        self.0.posts
    }
    /// Distinct authors of those posts.
    async fn authors(&self) -> u64 {
        self.0.authors
    }
    /// How many of those posts are replies.
    async fn replies(&self) -> u64 {
        self.0.replies
    }
}
