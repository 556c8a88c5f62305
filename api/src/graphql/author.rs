//! Authors: resolved lazily from their DID, each field through a data loader so that many
//! authors in one answer (a page of posts, `topAuthors`) cost one statement per field. An
//! author asked for alone (`author(did:)`) has nothing to batch with: its fields ask the
//! loaders' own loaders at once ([`Author::load`]), without a loader's wait for more keys
//! (a millisecond or two each, before each of its statements).

use std::hash::Hash;
use std::sync::Arc;

use async_graphql::dataloader::Loader;
use async_graphql::{Context, ID, Object, SimpleObject};
use lake::exec::{AccountState, Reads, Summary};
use lake::plan::PostsPlan;

use super::loaders::{
    Accounts, ActivityShape, AuthorActivity, AuthorHashtags, AuthorKey, AuthorPosts, AuthorPostsKey, AuthorSummaries,
    PageShape, PostCounts,
};
use super::query::{connection, connection_post_columns, keyset, page_size, runner, selects};
use super::scalars::DateTime;
use super::types::{HashtagCount, Interval, PostConnection, PostFilter, PostOrder, TimeBucket};
use super::{COMPLEXITY_PAGE_CAP, RequestLoader};
use crate::error;

/// Longest DID accepted (the DID spec's limit).
const MAX_DID_LEN: usize = 2048;

/// A DID is `did:METHOD:ID` with a lower-case method and an ID of URL-safe characters.
pub fn validate_did(did: &str) -> async_graphql::Result<()> {
    let valid = did.len() <= MAX_DID_LEN
        && did.strip_prefix("did:").and_then(|rest| rest.split_once(':')).is_some_and(|(method, id)| {
            !method.is_empty()
                && method.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
                && !id.is_empty()
                && id.bytes().all(|b| b.is_ascii_alphanumeric() || b".-_:%".contains(&b))
                && !id.ends_with(':')
        });
    if valid {
        Ok(())
    } else {
        let shown: String = did.chars().take(64).collect();
        Err(error::bad_input(format!("`{shown}` is not a DID (such as did:plc:z72i7hdynmk6r22z27h6tvur)")))
    }
}

/// A Bluesky account, known by its DID.
pub struct Author {
    pub did: String,
    /// Whether it is alone in its part of the answer (`author(did:)`), not one of many (a
    /// page of posts, `topAuthors`) whose fields are batched.
    pub alone: bool,
}

impl Author {
    /// One of many authors of an answer.
    pub fn new(did: String) -> Author {
        Author { did, alone: false }
    }

    /// `key` through `loader`: batched with other authors' keys, or, for an author alone,
    /// asked of its loader at once and fed to its cache, for the fields that ask again. A
    /// field an answer asks twice under two names is then asked twice.
    async fn load<K, T>(&self, loader: &RequestLoader<T>, key: K) -> async_graphql::Result<Option<T::Value>>
    where
        K: Send + Sync + Hash + Eq + Clone + 'static,
        T: Loader<K, Error = async_graphql::Error>,
    {
        if !self.alone {
            return loader.load_one(key).await;
        }
        let value = loader.loader().load(std::slice::from_ref(&key)).await?.remove(&key);
        if let Some(value) = &value {
            loader.feed_one(key, value.clone()).await;
        }
        Ok(value)
    }

    /// Whether the lake knows this author (a post, or an identity or account event): asked
    /// first by `author(did:)`, which leaves its answers in the loaders' caches.
    pub async fn is_known(&self, ctx: &Context<'_>) -> async_graphql::Result<bool> {
        let (posts, account) = futures_util::try_join!(
            self.load(ctx.data::<RequestLoader<PostCounts>>()?, self.did.clone()),
            self.load(ctx.data::<RequestLoader<Accounts>>()?, self.did.clone())
        )?;
        Ok(posts.is_some_and(|n| n > 0) || account.is_some())
    }

    /// This author's posts matching `filter`, summarised; `None` when there are none.
    pub async fn summary(
        &self,
        ctx: &Context<'_>,
        filter: lake::plan::PostFilter,
    ) -> async_graphql::Result<Option<Summary>> {
        let loader = ctx.data::<RequestLoader<AuthorSummaries>>()?;
        let filter = lake::plan::PostFilter { authors: Vec::new(), ..filter };
        self.load(loader, AuthorKey { did: self.did.clone(), filter }).await
    }

    /// How many live posts this author has, in all.
    pub async fn post_total(&self, ctx: &Context<'_>) -> async_graphql::Result<u64> {
        Ok(ctx.data::<RequestLoader<PostCounts>>()?.load_one(self.did.clone()).await?.unwrap_or(0))
    }

    /// What identity and account events said last about this author.
    pub async fn account(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<Arc<AccountState>>> {
        ctx.data::<RequestLoader<Accounts>>()?.load_one(self.did.clone()).await
    }

    async fn received(&self, ctx: &Context<'_>, engagement: lake::plan::Engagement) -> async_graphql::Result<u64> {
        let loader = ctx.data::<RequestLoader<super::loaders::Received>>()?;
        Ok(self.load(loader, (self.did.clone(), engagement)).await?.unwrap_or(0))
    }

    fn own(&self, filter: Option<PostFilter>) -> async_graphql::Result<lake::plan::PostFilter> {
        let mut filter = filter.unwrap_or_default().into_plan()?;
        filter.authors = vec![self.did.clone()];
        Ok(filter)
    }
}

#[Object]
impl Author {
    async fn did(&self) -> ID {
        ID(self.did.clone())
    }

    /// The account's current handle, from the latest identity event that named one; null
    /// until the lake has seen one.
    async fn handle(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<String>> {
        Ok(self.account(ctx).await?.and_then(|a| a.handle.clone()))
    }

    /// Whether the account is active, from the latest account event (true until one says
    /// otherwise). The posts of a deactivated, taken-down, suspended or deleted account are
    /// left out of every answer while it stays so.
    async fn active(&self, ctx: &Context<'_>) -> async_graphql::Result<bool> {
        Ok(self.account(ctx).await?.and_then(|a| a.active).unwrap_or(true))
    }

    /// Why the account is not active (`deactivated`, `takendown`, `suspended`, `deleted`…);
    /// null while active.
    async fn status(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<String>> {
        Ok(self.account(ctx).await?.filter(|a| a.active == Some(false)).and_then(|a| a.status.clone()))
    }

    /// Posts of this author matching `filter`.
    async fn post_count(&self, ctx: &Context<'_>, filter: Option<PostFilter>) -> async_graphql::Result<u64> {
        let filter = filter.unwrap_or_default().into_plan()?;
        if filter == lake::plan::PostFilter::default() {
            return self.post_total(ctx).await;
        }
        Ok(self.summary(ctx, filter).await?.map_or(0, |s| s.n_posts))
    }

    /// Live likes of this author's live posts, in all: the sum of their `likeCount`.
    async fn likes_received(&self, ctx: &Context<'_>) -> async_graphql::Result<u64> {
        self.received(ctx, lake::plan::Engagement::Likes).await
    }

    /// Live reposts of this author's live posts, in all.
    async fn reposts_received(&self, ctx: &Context<'_>) -> async_graphql::Result<u64> {
        self.received(ctx, lake::plan::Engagement::Reposts).await
    }

    /// Live direct replies to this author's live posts (their own included), in all.
    async fn replies_received(&self, ctx: &Context<'_>) -> async_graphql::Result<u64> {
        self.received(ctx, lake::plan::Engagement::Replies).await
    }

    /// Live quotes of this author's live posts, in all.
    async fn quotes_received(&self, ctx: &Context<'_>) -> async_graphql::Result<u64> {
        self.received(ctx, lake::plan::Engagement::Quotes).await
    }

    async fn first_post_at(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<DateTime>> {
        let summary = self.summary(ctx, lake::plan::PostFilter::default()).await?;
        Ok(summary.and_then(|s| s.oldest_us).map(DateTime::from_micros))
    }

    async fn last_post_at(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<DateTime>> {
        let summary = self.summary(ctx, lake::plan::PostFilter::default()).await?;
        Ok(summary.and_then(|s| s.newest_us).map(DateTime::from_micros))
    }

    /// This author's posts, a page at a time.
    #[graphql(complexity = "first.unwrap_or(20).clamp(1, COMPLEXITY_PAGE_CAP) as usize * child_complexity")]
    async fn posts(
        &self,
        ctx: &Context<'_>,
        #[graphql(default_with = "Some(20)")] first: Option<i32>,
        after: Option<String>,
        #[graphql(default_with = "Some(PostOrder::Newest)")] order: Option<PostOrder>,
        filter: Option<PostFilter>,
    ) -> async_graphql::Result<PostConnection> {
        let page_size = page_size(ctx, "first", first)?;
        let filter = Arc::new(self.own(filter)?);
        let order = match order.unwrap_or_default().by_time() {
            Ok(order) => order,
            Err(engagement) => return super::query::ranked_page(ctx, engagement, filter, page_size, after).await,
        };
        let columns = connection_post_columns(ctx.field());
        let after = keyset(after)?;
        if page_size == 0 {
            return Ok(connection(Vec::new(), 0, filter));
        }
        let rows = match after {
            // A first page: batched with the other authors' first pages.
            None => {
                let mut shape_filter = (*filter).clone();
                shape_filter.authors.clear();
                let mut plan = PostsPlan::new(shape_filter, order, page_size + 1, columns);
                let page = PageShape {
                    filter: std::mem::take(&mut plan.filter),
                    order,
                    limit: plan.limit,
                    columns: plan.columns,
                };
                let loader = ctx.data::<RequestLoader<AuthorPosts>>()?;
                let key = AuthorPostsKey { did: self.did.clone(), page };
                self.load(loader, key).await?.map(|rows| rows.as_ref().clone()).unwrap_or_default()
            }
            Some(after) => {
                let mut plan = PostsPlan::new((*filter).clone(), order, page_size + 1, columns);
                plan.after = Some(after);
                let runner = runner(ctx)?;
                runner.run(runner.estimate(Reads::Page(&plan)), move |engine| engine.posts(&plan)).await?
            }
        };
        Ok(connection(rows, page_size, filter))
    }

    /// This author's posts per time bucket, as `timeBuckets` counts them.
    async fn activity(
        &self,
        ctx: &Context<'_>,
        interval: Interval,
        filter: Option<PostFilter>,
        #[graphql(default_with = "Some(\"UTC\".to_owned())")] time_zone: Option<String>,
    ) -> async_graphql::Result<Vec<TimeBucket>> {
        let zone_name = time_zone.unwrap_or_else(|| "UTC".to_owned());
        let zone = lake::zone::parse_zone(&zone_name).map_err(error::from_lake)?;
        let measures = lake::plan::Measures { authors: selects(ctx, "authors"), replies: selects(ctx, "replies") };
        // The loader asks for many authors at once; the filter's own authors do not apply.
        let filter = lake::plan::PostFilter { authors: Vec::new(), ..filter.unwrap_or_default().into_plan()? };
        let shape = ActivityShape { filter, interval: interval.into(), zone, measures };
        let loader = ctx.data::<RequestLoader<AuthorActivity>>()?;
        let buckets = self.load(loader, (self.did.clone(), shape)).await?.unwrap_or_default();
        Ok(buckets.iter().cloned().map(TimeBucket).collect())
    }

    /// The hashtags this author used on the most posts.
    #[graphql(complexity = "first.unwrap_or(10).clamp(1, COMPLEXITY_PAGE_CAP) as usize * child_complexity")]
    async fn top_hashtags(
        &self,
        ctx: &Context<'_>,
        #[graphql(default_with = "Some(10)")] first: Option<i32>,
        filter: Option<PostFilter>,
    ) -> async_graphql::Result<Vec<HashtagCount>> {
        let limit = page_size(ctx, "first", first.or(Some(10)))?;
        let filter = lake::plan::PostFilter { authors: Vec::new(), ..filter.unwrap_or_default().into_plan()? };
        let loader = ctx.data::<RequestLoader<AuthorHashtags>>()?;
        let tags = self.load(loader, (self.did.clone(), filter, limit)).await?.unwrap_or_default();
        Ok(tags.iter().cloned().map(HashtagCount).collect())
    }
}

#[derive(SimpleObject)]
pub struct AuthorCount {
    pub author: Author,
    /// Posts matching the filter.
    pub posts: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dids_are_checked_before_any_query() {
        for good in ["did:plc:z72i7hdynmk6r22z27h6tvur", "did:web:example.com", "did:web:localhost%3A8080"] {
            assert!(validate_did(good).is_ok(), "{good}");
        }
        for bad in ["", "did:", "did:plc:", "plc:abc", "did:PLC:abc", "did:plc:a b", "did:plc:abc:", "did:plc:'--"] {
            assert!(validate_did(bad).is_err(), "{bad}");
        }
    }
}
