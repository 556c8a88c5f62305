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

/// A position in the `(created_at, uri)` order of posts: the opaque `after` cursor of a page.
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
    /// A page of posts in `(created_at, uri)` order.
    Posts(PostsPlan),
    /// The first `limit` posts of each author in `filter.authors`, in the plan's order, for
    /// nested `posts` under many authors in one statement. `after` must be `None`.
    PostsPerAuthor(PostsPlan),
    /// How many distinct posts match a filter, and their oldest and newest `created_at`.
    Summary(PostFilter),
    /// Per author in `filter.authors` (all of them must be listed): distinct posts matching the
    /// filter and their oldest and newest `created_at`.
    AuthorSummaries(PostFilter),
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
}

impl Plan {
    /// The question the plan answers, as the API names it.
    pub fn question(&self) -> &'static str {
        match self {
            Plan::Posts(_) => "posts",
            Plan::PostsPerAuthor(_) => "author.posts",
            Plan::Summary(_) => "totalCount",
            Plan::AuthorSummaries(_) => "author.postCount",
            Plan::TopAuthors(_) => "topAuthors",
            Plan::TopHashtags(_) => "topHashtags",
            Plan::TopHashtagsPerAuthor(_) => "author.topHashtags",
            Plan::Buckets(_) => "timeBuckets",
            Plan::Accounts(_) => "accounts",
        }
    }

    /// The posts the plan reads; none for a plan that reads no posts.
    pub fn filter(&self) -> Option<&PostFilter> {
        match self {
            Plan::Posts(p) | Plan::PostsPerAuthor(p) => Some(&p.filter),
            Plan::Summary(filter) | Plan::AuthorSummaries(filter) => Some(filter),
            Plan::TopAuthors(p) | Plan::TopHashtags(p) | Plan::TopHashtagsPerAuthor(p) => Some(&p.filter),
            Plan::Buckets(p) => Some(&p.filter),
            Plan::Accounts(_) => None,
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
