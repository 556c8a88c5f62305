//! `Subscription.livePosts`: posts as the API sees them arrive in the buffer, matching a
//! filter with the semantics of `posts` (checked in Rust by `lake::live::PostMatcher`).
//!
//! Each subscriber reads a bounded broadcast; one that falls more than its capacity behind is
//! dropped with an error that says so, and ingest never waits for anyone.

use std::sync::Arc;

use async_graphql::{Context, Subscription as SubscriptionRoot};
use futures_util::Stream;
use lake::model::Post;
use tokio::sync::broadcast;

use super::query::services;
use super::types::{PostFilter, PostNode};
use crate::error;
use crate::metrics as m;

pub struct Subscription;

#[SubscriptionRoot]
impl Subscription {
    /// Posts as they arrive (about when they reach the buffer, before any flush) that match
    /// `filter`, as `posts` would match them. A subscriber that falls too far behind is ended
    /// with an error (`extensions.code = TOO_SLOW`); subscribe again to go on.
    async fn live_posts(
        &self,
        ctx: &Context<'_>,
        filter: Option<PostFilter>,
    ) -> async_graphql::Result<impl Stream<Item = async_graphql::Result<PostNode>> + use<>> {
        let Some(live) = &services(ctx)?.live else {
            return Err(error::bad_input("this server has no live feed (it reads no buffer)"));
        };
        let filter = filter.unwrap_or_default().into_plan()?;
        let matcher = lake::live::PostMatcher::new(filter).map_err(error::from_lake)?;
        let state = Feed { receiver: live.subscribe(), matcher, ended: false, _subscriber: Subscriber::new() };
        Ok(futures_util::stream::unfold(state, |mut feed| async move {
            if feed.ended {
                return None;
            }
            loop {
                match feed.receiver.recv().await {
                    Ok(post) if feed.matcher.matches(&post) => {
                        return Some((Ok(PostNode(Post::clone(&post))), feed));
                    }
                    Ok(_) => {}
                    Err(broadcast::error::RecvError::Lagged(missed)) => {
                        metrics::counter!(m::LIVE_DROPPED).increment(1);
                        feed.ended = true;
                        return Some((Err(error::too_slow(missed)), feed));
                    }
                    Err(broadcast::error::RecvError::Closed) => return None,
                }
            }
        }))
    }
}

struct Feed {
    receiver: broadcast::Receiver<Arc<Post>>,
    matcher: lake::live::PostMatcher,
    ended: bool,
    _subscriber: Subscriber,
}

/// Counts a subscriber in the gauge while it lives.
struct Subscriber;

impl Subscriber {
    fn new() -> Subscriber {
        metrics::gauge!(m::LIVE_SUBSCRIBERS).increment(1.0);
        Subscriber
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        metrics::gauge!(m::LIVE_SUBSCRIBERS).decrement(1.0);
    }
}
