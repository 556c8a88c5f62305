//! The lock of one export period across replicas: a Redis key set `NX` with a lease (`PX`),
//! renewed by a task while the run lasts. A run confirms it still holds the lock (renewing it
//! once more) right before it publishes its files, and publishes nothing when it does not: a
//! lease that lapsed (a long pause, Redis unreachable) or a lock another run took means another
//! replica may be writing the period. Knows nothing of files or GraphQL.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use redis::aio::ConnectionManager;
use tracing::warn;

/// Deletes the lock only while it is still ours.
const RELEASE: &str =
    "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) else return 0 end";
/// Extends the lease only while the lock is still ours.
const RENEW: &str =
    "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) else return 0 end";

/// A held lock; its renewal stops when it is released or dropped (the lease then runs out).
pub struct Lease {
    key: String,
    token: String,
    length: Duration,
    connection: ConnectionManager,
    lost: Arc<AtomicBool>,
    renewal: tokio::task::JoinHandle<()>,
}

/// Takes the lock `key` for `length` unless another run holds it (`None`).
pub async fn take(mut connection: ConnectionManager, key: String, length: Duration) -> Result<Option<Lease>, String> {
    let token = token();
    let taken: Option<String> = redis::cmd("SET")
        .arg(&key)
        .arg(&token)
        .arg("NX")
        .arg("PX")
        .arg(millis(length))
        .query_async(&mut connection)
        .await
        .map_err(|e| format!("cannot take the export lock: {e}"))?;
    if taken.is_none() {
        return Ok(None);
    }
    let lost = Arc::new(AtomicBool::new(false));
    let renewal =
        tokio::spawn(renew(connection.clone(), key.clone(), token.clone(), length, lost.clone(), Instant::now()));
    Ok(Some(Lease { key, token, length, connection, lost, renewal }))
}

impl Lease {
    /// Whether this run still holds the lock; renews it when it does, so that it lasts a whole
    /// lease from now (the publish that follows takes milliseconds).
    pub async fn confirm(&mut self) -> bool {
        if self.lost.load(Ordering::Acquire) {
            return false;
        }
        let renewed: Result<i64, _> = redis::Script::new(RENEW)
            .key(&self.key)
            .arg(&self.token)
            .arg(millis(self.length))
            .invoke_async(&mut self.connection)
            .await;
        let held = matches!(renewed, Ok(1));
        if !held {
            self.lost.store(true, Ordering::Release);
            warn!(key = %self.key, ?renewed, "the export lock is no longer ours");
        }
        held
    }

    /// Frees the lock for the next run (when it is still ours).
    pub async fn release(mut self) {
        self.renewal.abort();
        let _: Result<i64, _> =
            redis::Script::new(RELEASE).key(&self.key).arg(&self.token).invoke_async(&mut self.connection).await;
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.renewal.abort();
    }
}

/// Renews the lease every third of its length; marks it lost when another run holds the lock,
/// or when no renewal succeeded for a whole lease (Redis unreachable: it may have lapsed).
async fn renew(
    mut connection: ConnectionManager,
    key: String,
    token: String,
    length: Duration,
    lost: Arc<AtomicBool>,
    mut renewed_at: Instant,
) {
    let script = redis::Script::new(RENEW);
    loop {
        tokio::time::sleep(length / 3).await;
        let renewed: Result<i64, _> =
            script.key(&key).arg(&token).arg(millis(length)).invoke_async(&mut connection).await;
        match renewed {
            Ok(1) => renewed_at = Instant::now(),
            Ok(_) => {
                warn!(key, "the export lock was taken by another run; this run publishes nothing");
                lost.store(true, Ordering::Release);
                return;
            }
            Err(error) if renewed_at.elapsed() >= length => {
                warn!(key, %error, "the export lock's lease could not be renewed for a whole lease; this run publishes nothing");
                lost.store(true, Ordering::Release);
                return;
            }
            Err(error) => warn!(key, %error, "the export lock's lease could not be renewed; trying again"),
        }
    }
}

fn millis(length: Duration) -> u64 {
    u64::try_from(length.as_millis()).unwrap_or(u64::MAX).max(1)
}

/// A value no other run has: this process, a counter and the time.
fn token() -> String {
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{}-{}-{n}", std::process::id(), chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default())
}
