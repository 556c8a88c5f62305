//! Data loaders: the keys that resolvers under many parents ask for within one tick are
//! gathered and answered by one lake statement per distinct question (no N+1).

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use async_graphql::dataloader::Loader;
use lake::exec::{AccountState, Summary};
use lake::model::{Post, PostColumn};
use lake::plan::{PostFilter, PostOrder, PostsPlan};

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
                let summaries = self.0.run(move |engine| engine.author_summaries(&question)).await?;
                for (did, summary) in summaries {
                    found.insert(AuthorKey { did, filter: filter.clone() }, summary);
                }
            }
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
            for state in self.0.run(move |engine| engine.accounts(&chunk)).await? {
                found.insert(state.did.clone(), Arc::new(state));
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
                let rows = self.0.run(move |engine| engine.posts_per_author(&plan)).await?;
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

/// Groups DIDs by the question asked about them, each DID once per question.
fn group<Q: std::hash::Hash + Eq>(pairs: impl Iterator<Item = (Q, String)>) -> HashMap<Q, Vec<String>> {
    let mut groups: HashMap<Q, BTreeSet<String>> = HashMap::new();
    for (question, did) in pairs {
        groups.entry(question).or_default().insert(did);
    }
    groups.into_iter().map(|(q, dids)| (q, dids.into_iter().collect())).collect()
}
