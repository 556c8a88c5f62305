//! Typed query plans: what a caller wants from the lake, with no SQL in it. The API builds a
//! plan from GraphQL arguments and the selection set; [`crate::sql::compile`] turns it into one
//! parameterised statement.

use std::collections::BTreeSet;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::error::{Error, Result};
use crate::model::{EmbedType, PostColumn};
use crate::search::TextQuery;
use crate::zone::{Interval, Offsets};

/// Which of a post's two times a filter or a bucket reads.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum Clock {
    /// The record's `createdAt`: the author's client clock (backdated or ahead at times).
    #[default]
    CreatedAt,
    /// When the firehose saw the post.
    IndexedAt,
}

impl Clock {
    pub fn column(self) -> &'static str {
        match self {
            Clock::CreatedAt => "created_at",
            Clock::IndexedAt => "indexed_at",
        }
    }
}

/// Which posts a plan is about. Every list is "any of"; an empty list does not constrain.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct PostFilter {
    /// `clock >= since`, UTC microseconds.
    pub since_us: Option<i64>,
    /// `clock < until`, UTC microseconds.
    pub until_us: Option<i64>,
    /// The time `since` and `until` read.
    pub clock: Clock,
    pub uris: Vec<String>,
    /// Author DIDs.
    pub authors: Vec<String>,
    /// Language tags; a tag without a region (`en`) also matches regional ones (`en-US`).
    pub langs: Vec<String>,
    /// Detected languages (`detected_lang`), case-insensitive.
    pub detected_langs: Vec<String>,
    /// Text queries that must all match.
    pub text: Vec<TextQuery>,
    /// Without '#', case-insensitive.
    pub hashtags: Vec<String>,
    pub mentions: Vec<String>,
    pub is_reply: Option<bool>,
    pub embed_types: Vec<EmbedType>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum PostOrder {
    #[default]
    Newest,
    Oldest,
}

/// A position in the `(created_at, did, rkey)` order of posts (see
/// [`crate::model::post_order_key`]): the opaque `after` cursor of a page.
/// Keyset pagination: a page starts strictly after it, so rows that arrive meanwhile cause
/// neither duplicates nor gaps.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Keyset {
    pub created_at_us: i64,
    pub uri: String,
}

impl Keyset {
    const VERSION: &'static str = "k1";

    /// Encodes the keyset as an opaque, URL-safe cursor string.
    pub fn encode(&self) -> String {
        URL_SAFE_NO_PAD.encode(format!("{}:{}:{}", Self::VERSION, self.created_at_us, self.uri))
    }

    pub fn decode(cursor: &str) -> Result<Keyset> {
        let invalid =
            || Error::InvalidCursor(format!("`{}` is not a cursor returned by this API", truncate(cursor, 64)));
        let bytes = URL_SAFE_NO_PAD.decode(cursor).map_err(|_| invalid())?;
        let text = String::from_utf8(bytes).map_err(|_| invalid())?;
        let mut parts = text.splitn(3, ':');
        let (Some(Self::VERSION), Some(micros), Some(uri)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(invalid());
        };
        let created_at_us: i64 = micros.parse().map_err(|_| invalid())?;
        if chrono::DateTime::from_timestamp_micros(created_at_us).is_none() {
            return Err(invalid());
        }
        Ok(Keyset { created_at_us, uri: uri.to_owned() })
    }
}

fn truncate(text: &str, max_chars: usize) -> String {
    text.chars().take(max_chars).collect()
}

/// A position in the (engagement, most first; DID, record key) order of a [`RankedPostsPlan`]: its
/// opaque `after` cursor, which the time order's cursors are not mistaken for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RankKeyset {
    pub count: u64,
    pub uri: String,
}

impl RankKeyset {
    const VERSION: &'static str = "r1";

    pub fn encode(&self) -> String {
        URL_SAFE_NO_PAD.encode(format!("{}:{}:{}", Self::VERSION, self.count, self.uri))
    }

    pub fn decode(cursor: &str) -> Result<RankKeyset> {
        let invalid = || {
            Error::InvalidCursor(format!(
                "`{}` is not a cursor of this order returned by this API",
                truncate(cursor, 64)
            ))
        };
        let bytes = URL_SAFE_NO_PAD.decode(cursor).map_err(|_| invalid())?;
        let text = String::from_utf8(bytes).map_err(|_| invalid())?;
        let mut parts = text.splitn(3, ':');
        let (Some(Self::VERSION), Some(count), Some(uri)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(invalid());
        };
        let count: u64 = count.parse().map_err(|_| invalid())?;
        if i64::try_from(count).is_err() {
            return Err(invalid());
        }
        Ok(RankKeyset { count, uri: uri.to_owned() })
    }
}

/// A page of the posts matching `filter` ranked by how much of `engagement` each got since
/// `filter.since_us` (less the clock-skew margin), most first, ties by DID then key. The filter must
/// have a `since` on `created_at`: a ranking is of a time window.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RankedPostsPlan {
    pub engagement: Engagement,
    pub filter: PostFilter,
    /// Rows to return (one more than the page, as for [`PostsPlan`]).
    pub limit: u32,
    pub after: Option<RankKeyset>,
    /// The columns to read; `uri` is always read.
    pub columns: BTreeSet<PostColumn>,
    /// Instead of the page, the first `candidates` of the posts with the most likes or reposts
    /// after the cursor, in the ranking's order, from the rollups of subjects alone, with the
    /// most any post left out can have (`sql::Builder::ranked_candidates`): the engine's first
    /// try for likes and reposts, which reads their posts itself, then the whole window.
    pub candidates: Option<u32>,
}

impl RankedPostsPlan {
    pub fn new(
        engagement: Engagement,
        filter: PostFilter,
        limit: u32,
        columns: impl IntoIterator<Item = PostColumn>,
    ) -> Result<RankedPostsPlan> {
        if filter.since_us.is_none() || filter.clock != Clock::CreatedAt {
            return Err(Error::InvalidArgument(
                "posts ranked by engagement are those of a window: give filter.since (on createdAt)".into(),
            ));
        }
        let mut columns: BTreeSet<PostColumn> = columns.into_iter().collect();
        columns.insert(PostColumn::Uri);
        Ok(RankedPostsPlan { engagement, filter, limit, after: None, columns, candidates: None })
    }
}

/// A page of posts.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PostsPlan {
    pub filter: PostFilter,
    pub order: PostOrder,
    /// Rows to return. Callers ask for one more than the page size to learn `hasNextPage`.
    pub limit: u32,
    pub after: Option<Keyset>,
    /// The columns to read (projection pushdown). `uri` and `created_at` are always read.
    pub columns: BTreeSet<PostColumn>,
}

impl PostsPlan {
    pub fn new(
        filter: PostFilter,
        order: PostOrder,
        limit: u32,
        columns: impl IntoIterator<Item = PostColumn>,
    ) -> Self {
        let mut columns: BTreeSet<PostColumn> = columns.into_iter().collect();
        columns.insert(PostColumn::Uri);
        columns.insert(PostColumn::CreatedAt);
        PostsPlan { filter, order, limit, after: None, columns }
    }
}

/// What `timeBuckets` groups posts by, besides time. A post counts in every group it belongs
/// to: each of its languages (bare and lower-cased: `en-US` is `en`) or hashtags; a post with
/// none counts in the null group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dimension {
    Lang,
    EmbedType,
    IsReply,
    Hashtag,
    /// The author's DID.
    Author,
}

/// The counts a bucket carries besides posts, computed only when asked for: distinct counts
/// cost more than the rest of the query.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Measures {
    pub authors: bool,
    pub replies: bool,
}

impl Measures {
    pub const ALL: Measures = Measures { authors: true, replies: true };
}

/// Posts counted per time bucket (and group).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BucketsPlan {
    pub filter: PostFilter,
    pub interval: Interval,
    pub zone: chrono_tz::Tz,
    /// The zone's offsets over every instant the plan may bucket.
    pub offsets: Offsets,
    pub group_by: Option<Dimension>,
    pub measures: Measures,
}

/// The `limit` largest groups of the posts matching `filter`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TopPlan {
    pub filter: PostFilter,
    pub limit: u32,
    /// Top hashtags only: also count each tag's distinct authors.
    pub count_authors: bool,
}

impl TopPlan {
    pub fn new(filter: PostFilter, limit: u32) -> TopPlan {
        TopPlan { filter, limit, count_authors: true }
    }
}

/// One question to the lake; compiled to one SQL statement.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Plan {
    /// A page of posts in `(created_at, did, rkey)` order.
    Posts(PostsPlan),
    /// The first `limit` posts of each author in `filter.authors`, in the plan's order, for
    /// nested `posts` under many authors in one statement. `after` must be `None`.
    PostsPerAuthor(PostsPlan),
    /// How many posts match a filter.
    Count(PostFilter),
    /// Per author in `filter.authors` (all of them must be listed): distinct posts matching the
    /// filter and their oldest and newest `created_at`.
    AuthorSummaries(PostFilter),
    /// How many live posts each of these authors has, in all.
    AuthorPosts(Vec<String>),
    /// Authors with the most posts.
    TopAuthors(TopPlan),
    /// Hashtags on the most posts, with how many authors used them.
    TopHashtags(TopPlan),
    /// Each author's (of `filter.authors`) `limit` most used hashtags, in one statement.
    TopHashtagsPerAuthor(TopPlan),
    /// Posts, authors and replies per bucket.
    Buckets(BucketsPlan),
    /// The latest handle and activity of these DIDs.
    Accounts(Vec<String>),
    /// How many likes, reposts, replies or quotes each of some posts got.
    Engagement(EngagementPlan),
    /// What is rising: items whose rate in a window is highest against their baseline rate.
    Trending(TrendPlan),
    /// A page of posts ranked by engagement.
    RankedPosts(RankedPostsPlan),
    /// How much of each engagement each author's live posts got, in all: one statement, which
    /// reads the authors' posts once.
    Received(Vec<Engagement>, Vec<String>),
}

/// What `trending` ranks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TrendKind {
    Hashtag,
    /// The host of a post's links and link card, lower-cased, without `www.`.
    LinkDomain,
    /// A declared language, bare (`en-US` is `en`).
    Lang,
}

/// How `trending` orders its items.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum TrendRank {
    /// `(posts + 1) / (expected + 1)`: how many times its usual rate.
    #[default]
    Ratio,
    /// `(posts − expected) / √(expected + 1)`: how far above its usual rate, in (Poisson)
    /// standard deviations; favours big items more than the ratio does.
    ZScore,
}

/// Items of `kind` on the posts matching `filter` in `window` (`[since, until)` on the filter's
/// clock), ranked against their rate in `baseline`: `expected` is the baseline's count scaled
/// to the window's length. Only items on at least `min_posts` posts of the window are ranked.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TrendPlan {
    pub kind: TrendKind,
    /// Its `since` and `until` span the window and the baseline (set by [`TrendPlan::new`]).
    pub filter: PostFilter,
    pub window: (i64, i64),
    pub baseline: (i64, i64),
    pub rank: TrendRank,
    pub min_posts: u32,
    pub limit: u32,
}

impl TrendPlan {
    /// Refuses an empty or reversed range; `filter`'s own `since` and `until` are replaced.
    pub fn new(
        kind: TrendKind,
        filter: PostFilter,
        window: (i64, i64),
        baseline: (i64, i64),
        rank: TrendRank,
        min_posts: u32,
        limit: u32,
    ) -> crate::Result<TrendPlan> {
        for (name, (since, until)) in [("window", window), ("baseline", baseline)] {
            if since >= until {
                return Err(crate::Error::InvalidArgument(format!("the {name} must end after it starts")));
            }
        }
        let filter =
            PostFilter { since_us: Some(window.0.min(baseline.0)), until_us: Some(window.1.max(baseline.1)), ..filter };
        Ok(TrendPlan { kind, filter, window, baseline, rank, min_posts, limit })
    }
}

/// What a post got from others.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Engagement {
    /// Live likes (`interactions` of kind `like`).
    Likes,
    /// Live reposts.
    Reposts,
    /// Live posts replying to it directly (`reply_parent`).
    Replies,
    /// Live posts quoting it (`quote_uri`).
    Quotes,
}

impl Engagement {
    pub const ALL: [Engagement; 4] = [Engagement::Likes, Engagement::Reposts, Engagement::Replies, Engagement::Quotes];

    /// The interactions it counts; `None` for replies and quotes, which are posts.
    pub fn interaction_kind(self) -> Option<crate::model::InteractionKind> {
        match self {
            Engagement::Likes => Some(crate::model::InteractionKind::Like),
            Engagement::Reposts => Some(crate::model::InteractionKind::Repost),
            Engagement::Replies | Engagement::Quotes => None,
        }
    }

    /// Its name in a statement's rows: its interaction kind's (`like`, `repost`), or `reply`,
    /// `quote`.
    pub fn as_str(self) -> &'static str {
        match self.interaction_kind() {
            Some(kind) => kind.as_str(),
            None if self == Engagement::Replies => "reply",
            None => "quote",
        }
    }

    /// The engagement [`Self::as_str`] names.
    pub fn of_str(name: &str) -> Option<Engagement> {
        Engagement::ALL.into_iter().find(|e| e.as_str() == name)
    }

    /// The post column that names the post engaged with, for replies and quotes.
    pub fn post_column(self) -> &'static str {
        if self == Engagement::Replies { "reply_parent" } else { "quote_uri" }
    }
}

/// How much of one [`Engagement`] each of `uris` got. Nothing that engages with a post is
/// older than it, less the clock skew a record's `createdAt` may have: rows created before
/// `since_us` are not read.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EngagementPlan {
    pub engagement: Engagement,
    pub uris: Vec<String>,
    pub since_us: i64,
}

impl EngagementPlan {
    /// Margin below the oldest post's `created_at`: a post's `createdAt` may be up to a day
    /// ahead of its author's clock (`MAX_FUTURE_SKEW_US`), and a reply's or like's a day behind.
    pub const SKEW_MARGIN_US: i64 = 2 * crate::model::MAX_FUTURE_SKEW_US;

    /// The plan for posts given as `(uri, created_at)`.
    pub fn new(engagement: Engagement, posts: &[(String, i64)]) -> EngagementPlan {
        let oldest = posts.iter().map(|p| p.1).min().unwrap_or_default();
        EngagementPlan {
            engagement,
            uris: posts.iter().map(|p| p.0.clone()).collect(),
            since_us: oldest.saturating_sub(Self::SKEW_MARGIN_US),
        }
    }
}

impl Plan {
    /// The question the plan answers, as the API names it.
    pub fn question(&self) -> &'static str {
        match self {
            Plan::Posts(_) => "posts",
            Plan::PostsPerAuthor(_) => "author.posts",
            Plan::Count(_) => "totalCount",
            Plan::AuthorSummaries(_) => "author.postCount",
            Plan::AuthorPosts(_) => "author.postCount",
            Plan::TopAuthors(_) => "topAuthors",
            Plan::TopHashtags(_) => "topHashtags",
            Plan::TopHashtagsPerAuthor(_) => "author.topHashtags",
            Plan::Buckets(_) => "timeBuckets",
            Plan::Accounts(_) => "accounts",
            Plan::Trending(_) => "trending",
            Plan::RankedPosts(_) => "posts",
            Plan::Received(engagements, _) => match engagements.as_slice() {
                [Engagement::Likes] => "Author.likesReceived",
                [Engagement::Reposts] => "Author.repostsReceived",
                [Engagement::Replies] => "Author.repliesReceived",
                [Engagement::Quotes] => "Author.quotesReceived",
                _ => "Author.received",
            },
            Plan::Engagement(plan) => match plan.engagement {
                Engagement::Likes => "Post.likeCount",
                Engagement::Reposts => "Post.repostCount",
                Engagement::Replies => "Post.replyCount",
                Engagement::Quotes => "Post.quoteCount",
            },
        }
    }

    /// The posts the plan reads; none for a plan that reads no posts.
    pub fn filter(&self) -> Option<&PostFilter> {
        match self {
            Plan::Posts(p) | Plan::PostsPerAuthor(p) => Some(&p.filter),
            Plan::Count(filter) | Plan::AuthorSummaries(filter) => Some(filter),
            Plan::TopAuthors(p) | Plan::TopHashtags(p) | Plan::TopHashtagsPerAuthor(p) => Some(&p.filter),
            Plan::Buckets(p) => Some(&p.filter),
            Plan::Trending(p) => Some(&p.filter),
            Plan::RankedPosts(p) => Some(&p.filter),
            Plan::Accounts(_) | Plan::Engagement(_) | Plan::Received(..) | Plan::AuthorPosts(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn garbage_cursors_are_rejected_as_bad_input() {
        let far = URL_SAFE_NO_PAD.encode(format!("k1:{}:at://x", i64::MAX));
        for cursor in ["", "!!!", "aGVsbG8", &URL_SAFE_NO_PAD.encode("k1:notanumber:at://x"), &far] {
            let error = Keyset::decode(cursor).unwrap_err();
            assert_eq!(error.kind(), crate::ErrorKind::BadInput, "{cursor}");
        }
    }

    proptest! {
        #[test]
        fn cursors_round_trip(created_at_us in -8_000_000_000_000_000_i64..8_000_000_000_000_000, uri in ".*") {
            let keyset = Keyset { created_at_us, uri };
            prop_assert_eq!(Keyset::decode(&keyset.encode()).unwrap(), keyset);
        }

        #[test]
        fn decoding_arbitrary_text_never_panics(cursor in ".*") {
            let _ = Keyset::decode(&cursor);
        }
    }
}
