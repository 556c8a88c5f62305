//! The API's connection to Redis, made on first need and kept: Redis may start after the API,
//! or go away and come back, and the API answers from the lake meanwhile.

use std::time::Duration;

use ingest::buffer::Keys;
use redis::aio::ConnectionManager;

/// How long the API waits for Redis before answering without it.
const REDIS_TIMEOUT: Duration = Duration::from_secs(1);

pub struct RedisLink {
    url: String,
    keys: Keys,
    connection: tokio::sync::Mutex<Option<ConnectionManager>>,
}

impl RedisLink {
    pub fn new(url: &str, keys: Keys) -> RedisLink {
        RedisLink { url: url.to_owned(), keys, connection: tokio::sync::Mutex::new(None) }
    }

    /// A connection, or `None` while Redis cannot be reached.
    pub(crate) async fn connection(&self) -> Option<ConnectionManager> {
        let mut slot = self.connection.lock().await;
        if slot.is_none() {
            *slot = ingest::buffer::connect(&self.url, REDIS_TIMEOUT).await.ok();
        }
        slot.clone()
    }

    /// Whether Redis answers (within [`REDIS_TIMEOUT`]).
    pub async fn ping(&self) -> bool {
        self.within_timeout(async {
            let mut connection = self.connection().await?;
            redis::cmd("PING").query_async::<String>(&mut connection).await.ok()
        })
        .await
        .is_some()
    }

    /// Rows waiting in the buffer stream for the flusher (posts, deletes and account events);
    /// `None` while Redis cannot be reached.
    pub async fn buffered_rows(&self) -> Option<u64> {
        let rows = self
            .within_timeout(async {
                let mut connection = self.connection().await?;
                redis::cmd("GET").arg(&self.keys.rows).query_async::<Option<i64>>(&mut connection).await.ok()
            })
            .await?;
        Some(rows.unwrap_or(0).max(0) as u64)
    }

    /// `work`, or `None` when it takes longer than [`REDIS_TIMEOUT`]: while Redis restarts, the
    /// connection's reconnection (with its retries) can take many seconds, and a probe or an
    /// answer must not wait for it.
    async fn within_timeout<T>(&self, work: impl std::future::Future<Output = Option<T>>) -> Option<T> {
        tokio::time::timeout(REDIS_TIMEOUT, work).await.ok().flatten()
    }
}
