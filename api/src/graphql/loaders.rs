//! Data loaders: the keys that resolvers under many parents ask for within one tick are
//! gathered and answered by one lake statement per distinct question (no N+1).

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use async_graphql::dataloader::Loader;
use lake::exec::{AccountState, Bucket, HashtagCount, Reads, Summary};
use lake::model::{Post, PostColumn};
use lake::plan::{Engagement, EngagementPlan, Measures, PostFilter, PostOrder, PostsPlan, TopPlan};
use lake::zone::Interval;

use super::QueryRunner;

/// Most authors one statement asks about.
const MAX_AUTHORS_PER_STATEMENT: usize = 1_000;

/// One author's posts matching a filter (whose own `authors` list is empty).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AuthorKey {
    pub did: String,
    pub filter: PostFilter,
}

/// Per author: how many posts match, and the oldest and newest. Absent when none match.
pub struct AuthorSummaries(pub QueryRunner);

impl Loader<AuthorKey> for AuthorSummaries {
    type Value = Summary;
    type Error = async_graphql::Error;

    async fn load(&self, keys: &[AuthorKey]) -> Result<HashMap<AuthorKey, Summary>, Self::Error> {
        let mut found = HashMap::new();
        for (filter, dids) in group(keys.iter().map(|k| (k.filter.clone(), k.did.clone()))) {
            for chunk in dids.chunks(MAX_AUTHORS_PER_STATEMENT) {
                let question = PostFilter { authors: chunk.to_vec(), ..filter.clone() };
                let estimate = self.0.estimate(Reads::Scan { filter: &question, rows: chunk.len() as u64 });
                let summaries = self.0.run(estimate, move |engine| engine.author_summaries(&question)).await?;
                for (did, summary) in summaries {
                    found.insert(AuthorKey { did, filter: filter.clone() }, summary);
                }
            }
        }
        Ok(found)
    }
}

/// Per author: how many live posts it has, in all. Absent when none.
pub struct PostCounts(pub QueryRunner);

impl Loader<String> for PostCounts {
    type Value = u64;
    type Error = async_graphql::Error;

    async fn load(&self, dids: &[String]) -> Result<HashMap<String, u64>, Self::Error> {
        let mut found = HashMap::new();
        for chunk in dids.chunks(MAX_AUTHORS_PER_STATEMENT) {
            let chunk = chunk.to_vec();
            // Whole days from the author counts in memory; the rest from the hot tier.
            let estimate = self.0.estimate(Reads::Accounts(chunk.len()));
            found.extend(self.0.run(estimate, move |engine| engine.author_posts(&chunk)).await?);
        }
        Ok(found)
    }
}

/// What identity and account events said last about a DID. Absent when none was seen.
pub struct Accounts(pub QueryRunner);

impl Loader<String> for Accounts {
    type Value = Arc<AccountState>;
    type Error = async_graphql::Error;

    async fn load(&self, dids: &[String]) -> Result<HashMap<String, Self::Value>, Self::Error> {
        let mut found = HashMap::new();
        for chunk in dids.chunks(MAX_AUTHORS_PER_STATEMENT) {
            let chunk = chunk.to_vec();
            let estimate = self.0.estimate(Reads::Accounts(chunk.len()));
            for state in self.0.run(estimate, move |engine| engine.accounts(&chunk)).await? {
                found.insert(state.did.clone(), Arc::new(state));
            }
        }
        Ok(found)
    }
}

/// One author's time buckets: everything about the question but the author.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ActivityShape {
    /// Its `authors` list is empty.
    pub filter: PostFilter,
    pub interval: Interval,
    pub zone: chrono_tz::Tz,
    pub measures: Measures,
}

pub struct AuthorActivity(pub QueryRunner);

impl Loader<(String, ActivityShape)> for AuthorActivity {
    type Value = Arc<Vec<Bucket>>;
    type Error = async_graphql::Error;

    async fn load(
        &self,
        keys: &[(String, ActivityShape)],
    ) -> Result<HashMap<(String, ActivityShape), Self::Value>, Self::Error> {
        let mut found = HashMap::new();
        for (shape, dids) in group(keys.iter().map(|(did, shape)| (shape.clone(), did.clone()))) {
            for chunk in dids.chunks(MAX_AUTHORS_PER_STATEMENT) {
                let question = ActivityShape {
                    filter: PostFilter { authors: chunk.to_vec(), ..shape.filter.clone() },
                    ..shape.clone()
                };
                let estimate = self.0.estimate(Reads::Scan { filter: &question.filter, rows: chunk.len() as u64 });
                let mut by_author = self
                    .0
                    .run(estimate, move |engine| {
                        engine.time_buckets_per_author(
                            &question.filter,
                            question.interval,
                            question.zone,
                            question.measures,
                        )
                    })
                    .await?;
                for did in chunk {
                    let buckets = by_author.remove(did).unwrap_or_default();
                    found.insert((did.clone(), shape.clone()), Arc::new(buckets));
                }
            }
        }
        Ok(found)
    }
}

/// One author's most used hashtags: the filter (with an empty `authors` list) and how many.
pub struct AuthorHashtags(pub QueryRunner);

impl Loader<(String, PostFilter, u32)> for AuthorHashtags {
    type Value = Arc<Vec<HashtagCount>>;
    type Error = async_graphql::Error;

    async fn load(
        &self,
        keys: &[(String, PostFilter, u32)],
    ) -> Result<HashMap<(String, PostFilter, u32), Self::Value>, Self::Error> {
        let mut found = HashMap::new();
        for ((filter, limit), dids) in group(keys.iter().map(|(did, f, n)| ((f.clone(), *n), did.clone()))) {
            for chunk in dids.chunks(MAX_AUTHORS_PER_STATEMENT) {
                let plan = TopPlan::new(PostFilter { authors: chunk.to_vec(), ..filter.clone() }, limit);
                let rows = chunk.len() as u64 * u64::from(limit);
                let estimate = self.0.estimate(Reads::Scan { filter: &plan.filter, rows });
                let rows = self.0.run(estimate, move |engine| engine.top_hashtags_per_author(&plan)).await?;
                let mut by_author: HashMap<String, Vec<HashtagCount>> = HashMap::new();
                for (did, tag) in rows {
                    by_author.entry(did).or_default().push(tag);
                }
                for did in chunk {
                    let tags = by_author.remove(did).unwrap_or_default();
                    found.insert((did.clone(), filter.clone(), limit), Arc::new(tags));
                }
            }
        }
        Ok(found)
    }
}

/// The first page of one author's posts.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AuthorPostsKey {
    pub did: String,
    pub page: PageShape,
}

/// What a page asks, apart from its author.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PageShape {
    pub filter: PostFilter,
    pub order: PostOrder,
    pub limit: u32,
    pub columns: BTreeSet<PostColumn>,
}

pub struct AuthorPosts(pub QueryRunner);

impl Loader<AuthorPostsKey> for AuthorPosts {
    type Value = Arc<Vec<Post>>;
    type Error = async_graphql::Error;

    async fn load(&self, keys: &[AuthorPostsKey]) -> Result<HashMap<AuthorPostsKey, Self::Value>, Self::Error> {
        let mut found = HashMap::new();
        for (page, dids) in group(keys.iter().map(|k| (k.page.clone(), k.did.clone()))) {
            for chunk in dids.chunks(MAX_AUTHORS_PER_STATEMENT) {
                let filter = PostFilter { authors: chunk.to_vec(), ..page.filter.clone() };
                let plan = PostsPlan::new(filter, page.order, page.limit, page.columns.iter().copied());
                let rows = chunk.len() as u64 * u64::from(plan.limit);
                let estimate = self.0.estimate(Reads::Scan { filter: &plan.filter, rows });
                let rows = self.0.run(estimate, move |engine| engine.posts_per_author(&plan)).await?;
                let mut by_author: HashMap<String, Vec<Post>> = chunk.iter().map(|d| (d.clone(), Vec::new())).collect();
                for post in rows {
                    by_author.entry(post.did.clone()).or_default().push(post);
                }
                for (did, posts) in by_author {
                    found.insert(AuthorPostsKey { did, page: page.clone() }, Arc::new(posts));
                }
            }
        }
        Ok(found)
    }
}

/// One post's count of one kind of engagement: the post's uri and `created_at`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EngagementKey {
    pub engagement: Engagement,
    pub uri: String,
    pub created_at_us: i64,
}

/// Likes, reposts, replies or quotes of many posts, one statement per kind.
pub struct Engagements(pub QueryRunner);

impl Loader<EngagementKey> for Engagements {
    type Value = u64;
    type Error = async_graphql::Error;

    async fn load(&self, keys: &[EngagementKey]) -> Result<HashMap<EngagementKey, u64>, Self::Error> {
        let mut found = HashMap::new();
        for engagement in Engagement::ALL {
            let posts: Vec<(String, i64)> =
                keys.iter().filter(|k| k.engagement == engagement).map(|k| (k.uri.clone(), k.created_at_us)).collect();
            for chunk in posts.chunks(MAX_AUTHORS_PER_STATEMENT) {
                let plan = EngagementPlan::new(engagement, chunk);
                // Priced as the posts since the oldest of them.
                let since = PostFilter { since_us: Some(plan.since_us), ..PostFilter::default() };
                let estimate = self.0.estimate(Reads::Scan { filter: &since, rows: chunk.len() as u64 });
                let counts = self.0.run(estimate, move |engine| engine.engagement(&plan)).await?;
                for (uri, created_at_us) in chunk {
                    let n = counts.get(uri).copied().unwrap_or(0);
                    found.insert(EngagementKey { engagement, uri: uri.clone(), created_at_us: *created_at_us }, n);
                }
            }
        }
        Ok(found)
    }
}

/// What the live posts of many authors got in all: one statement for every engagement asked
/// (which reads the authors' posts once), per chunk of authors.
pub struct Received(pub QueryRunner);

impl Loader<(String, Engagement)> for Received {
    type Value = u64;
    type Error = async_graphql::Error;

    async fn load(&self, keys: &[(String, Engagement)]) -> Result<HashMap<(String, Engagement), u64>, Self::Error> {
        let engagements: BTreeSet<Engagement> = keys.iter().map(|(_, engagement)| *engagement).collect();
        let engagements: Vec<Engagement> = engagements.into_iter().collect();
        let dids: BTreeSet<&String> = keys.iter().map(|(did, _)| did).collect();
        let dids: Vec<String> = dids.into_iter().cloned().collect();
        let mut found = HashMap::new();
        for chunk in dids.chunks(MAX_AUTHORS_PER_STATEMENT) {
            let theirs = PostFilter { authors: chunk.to_vec(), ..PostFilter::default() };
            let estimate = self.0.estimate(Reads::Scan { filter: &theirs, rows: chunk.len() as u64 });
            let (asked, dids) = (engagements.clone(), chunk.to_vec());
            found.extend(self.0.run(estimate, move |engine| engine.received(&asked, &dids)).await?);
        }
        // What an author's posts got none of is 0; only the pairs asked are answered.
        Ok(keys.iter().map(|key| (key.clone(), found.get(key).copied().unwrap_or(0))).collect())
    }
}

/// Groups DIDs by the question asked about them, each DID once per question.
fn group<Q: std::hash::Hash + Eq>(pairs: impl Iterator<Item = (Q, String)>) -> HashMap<Q, Vec<String>> {
    let mut groups: HashMap<Q, BTreeSet<String>> = HashMap::new();
    for (question, did) in pairs {
        groups.entry(question).or_default().insert(did);
    }
    groups.into_iter().map(|(q, dids)| (q, dids.into_iter().collect())).collect()
}
