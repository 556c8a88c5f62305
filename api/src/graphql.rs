//! The GraphQL schema: types over lake rows, input filters, and the query root whose resolvers
//! build one `lake` plan per field. Nested fields under many parents (a post's author, an
//! author's posts) go through data loaders, one statement per level. `schema.graphql` at the
//! repository root is this schema's SDL.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_graphql::Schema;
use async_graphql::dataloader::{DataLoader, HashMapCache};
use lake::exec::{Engine, Estimate, Interrupt, Reads, with_interrupt};
use tokio::sync::Semaphore;

use crate::error;
use crate::metrics as m;

mod author;
pub mod exports;
#[cfg(test)]
mod fuzz;
mod live;
mod loaders;
mod query;
mod scalars;
mod types;

pub use crate::auth::Caller;
pub use exports::Mutation;
pub use live::Subscription;
pub use query::Query;

pub type SkyglassSchema = Schema<Query, Mutation, Subscription>;

/// Rows in a page when `first` is not given.
pub const DEFAULT_PAGE_SIZE: i32 = 20;

/// The page size at which a list field's complexity stops growing. Complexity is checked before
/// resolvers run and cannot see the configured cap; a larger `first` is refused by the resolver
/// with a clear message instead of a bare "too complex".
pub const COMPLEXITY_PAGE_CAP: i32 = 100;

/// Limits on what one request may ask.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Most rows a page (`first`) may ask for.
    pub max_page_size: i32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_page_size: 100 }
    }
}

/// What resolvers reach through the context.
pub struct Services {
    pub runner: QueryRunner,
    pub limits: Limits,
    /// The buffer's Redis, for `lake.bufferedPosts`; `None` when the API has none.
    pub redis: Option<Arc<crate::redis_link::RedisLink>>,
    /// The declared exports, for `exports` and `runExport`; `None` where exports do not run.
    pub exports: Option<Arc<crate::export::Exports>>,
    /// Posts as they arrive in the buffer, for `livePosts`; `None` where no buffer is read.
    pub live: Option<tokio::sync::broadcast::Sender<Arc<lake::model::Post>>>,
}

/// The schema, with its services, and `access` applied to every operation where it is given.
pub fn build(services: Option<Services>, access: Option<Arc<crate::auth::Access>>) -> SkyglassSchema {
    let mut builder = Schema::build(Query, Mutation, Subscription).limit_depth(16).limit_complexity(10_000);
    if let Some(access) = access {
        builder = builder.extension(crate::auth::Admission(access));
    }
    match services {
        Some(services) => builder.data(services).finish(),
        None => builder.finish(),
    }
}

/// A data loader of one request, caching what it loaded for that request.
pub type RequestLoader<T> = DataLoader<T, HashMapCache>;

/// Gives a request its own data loaders: keys asked within the request are batched, and each
/// is answered once per request (cached for the request only, so never staler than it).
pub fn with_loaders(mut request: async_graphql::Request, runner: &QueryRunner) -> async_graphql::Request {
    add_loaders(&mut request.data, runner);
    request
}

/// Adds the data loaders to a request's or a websocket connection's data.
pub fn add_loaders(data: &mut async_graphql::Data, runner: &QueryRunner) {
    data.insert(DataLoader::with_cache(
        loaders::AuthorSummaries(runner.clone()),
        tokio::spawn,
        HashMapCache::default(),
    ));
    data.insert(DataLoader::with_cache(loaders::AuthorPosts(runner.clone()), tokio::spawn, HashMapCache::default()));
    data.insert(DataLoader::with_cache(loaders::PostCounts(runner.clone()), tokio::spawn, HashMapCache::default()));
    data.insert(DataLoader::with_cache(loaders::Accounts(runner.clone()), tokio::spawn, HashMapCache::default()));
    data.insert(DataLoader::with_cache(loaders::AuthorActivity(runner.clone()), tokio::spawn, HashMapCache::default()));
    data.insert(DataLoader::with_cache(loaders::AuthorHashtags(runner.clone()), tokio::spawn, HashMapCache::default()));
    data.insert(DataLoader::with_cache(loaders::Engagements(runner.clone()), tokio::spawn, HashMapCache::default()));
    data.insert(DataLoader::with_cache(loaders::Received(runner.clone()), tokio::spawn, HashMapCache::default()));
}

/// The runner of one request (it notes whether the request read the hot tier); resolvers use
/// it over the shared one in [`Services`].
pub struct RequestRunner(pub QueryRunner);

/// What the statements of one request read besides sealed past days (see
/// [`lake::exec::Touched`]), noted from the threads they ran on.
#[derive(Debug, Default)]
pub struct RequestTouched {
    hot: std::sync::atomic::AtomicBool,
    today: std::sync::atomic::AtomicBool,
    /// How each statement with a rollup path was answered, in the order they ran.
    answered: std::sync::Mutex<Vec<lake::exec::Answered>>,
    /// Whether the request asked to be explained: every question noted, with its statements.
    explain: bool,
}

impl RequestTouched {
    fn note(&self, touched: lake::exec::Touched, answered: Vec<lake::exec::Answered>) {
        use std::sync::atomic::Ordering;
        if !answered.is_empty() {
            self.answered.lock().unwrap_or_else(|p| p.into_inner()).extend(answered);
        }
        if touched.hot {
            self.hot.store(true, Ordering::Release);
        }
        if touched.today {
            self.today.store(true, Ordering::Release);
        }
    }

    /// The request's questions with a rollup path (every one when explained), and how each
    /// was answered.
    pub fn answered(&self) -> Vec<lake::exec::Answered> {
        self.answered.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn get(&self) -> lake::exec::Touched {
        use std::sync::atomic::Ordering;
        lake::exec::Touched { hot: self.hot.load(Ordering::Acquire), today: self.today.load(Ordering::Acquire) }
    }
}

/// How the API runs lake work: on a blocking thread, at most `max_concurrent` pieces of work
/// at once (the others queue), each interrupted in DuckDB when it outlives `timeout` (its
/// queueing included) or when its request goes away. A request with several lake statements
/// (nested fields) gives each its own `timeout`. In a request, each piece of work is priced
/// before it queues, and charged to the request's cost (and its client's budget: see
/// [`crate::throttle`]).
#[derive(Clone)]
pub struct QueryRunner {
    engine: Arc<Engine>,
    permits: Arc<Semaphore>,
    timeout: Duration,
    /// What the statements of this runner's request read besides sealed past days.
    touched: Option<Arc<RequestTouched>>,
    /// What this runner's request costs, and the budget it is charged to.
    cost: Option<Arc<crate::throttle::RequestCost>>,
}

impl QueryRunner {
    pub fn new(engine: Arc<Engine>, max_concurrent: usize, timeout: Duration) -> QueryRunner {
        QueryRunner {
            engine,
            permits: Arc::new(Semaphore::new(max_concurrent.max(1))),
            timeout,
            touched: None,
            cost: None,
        }
    }

    /// This runner for one request, charging `cost` (and explaining its statements with
    /// `explain`), and what its statements read besides sealed past days.
    pub fn for_request(
        &self,
        cost: Arc<crate::throttle::RequestCost>,
        explain: bool,
    ) -> (QueryRunner, Arc<RequestTouched>) {
        let touched = Arc::new(RequestTouched { explain, ..RequestTouched::default() });
        (QueryRunner { touched: Some(touched.clone()), cost: Some(cost), ..self.clone() }, touched)
    }

    /// What a statement is expected to read (see [`Engine::estimate`]), to pass to [`Self::run`].
    pub fn estimate(&self, reads: Reads<'_>) -> Estimate {
        self.engine.estimate(reads)
    }

    /// Runs `work`, expected to read `estimate`.
    pub async fn run<T: Send + 'static>(
        &self,
        estimate: Estimate,
        work: impl FnOnce(&Engine) -> lake::Result<T> + Send + 'static,
    ) -> async_graphql::Result<T> {
        if let Some(cost) = &self.cost {
            cost.charge(crate::throttle::cost(estimate))?;
        }
        let started = Instant::now();
        let permit = match tokio::time::timeout(self.timeout, self.permits.clone().acquire_owned()).await {
            Ok(Ok(permit)) => permit,
            _ => {
                metrics::counter!(m::QUERY_REJECTED).increment(1);
                return Err(error::overloaded(self.timeout));
            }
        };
        metrics::histogram!(m::QUERY_QUEUE_WAIT).record(started.elapsed().as_secs_f64());
        let interrupt = InterruptOnDrop(Interrupt::new());
        let engine = self.engine.clone();
        let task_interrupt = interrupt.0.clone();
        let request_touched = self.touched.clone();
        let mut task = tokio::task::spawn_blocking(move || {
            // The permit is held until DuckDB has really stopped.
            let _permit = permit;
            let began = Instant::now();
            // What other lake work on this pooled thread left noted is not this request's.
            let _ = (lake::exec::take_touched(), lake::exec::take_answered());
            lake::exec::explain_on_this_thread(request_touched.as_ref().is_some_and(|r| r.explain));
            let result = with_interrupt(&task_interrupt, || work(&engine));
            // Always taken: blocking threads are reused across requests.
            let (touched, answered) = (lake::exec::take_touched(), lake::exec::take_answered());
            lake::exec::explain_on_this_thread(false);
            if let Some(request) = &request_touched {
                request.note(touched, answered);
            }
            metrics::histogram!(m::QUERY_DURATION).record(began.elapsed().as_secs_f64());
            result
        });
        let remaining = self.timeout.saturating_sub(started.elapsed());
        let joined = match tokio::time::timeout(remaining, &mut task).await {
            Ok(joined) => joined,
            Err(_) => {
                interrupt.0.interrupt();
                metrics::counter!(m::QUERY_TIMEOUTS).increment(1);
                task.await
            }
        };
        match joined.map_err(|e| error::internal(&anyhow::Error::new(e)))? {
            Ok(value) => Ok(value),
            Err(lake::Error::Interrupted) => Err(error::timed_out(self.timeout)),
            Err(other) => Err(error::from_lake(other)),
        }
    }
}

/// Interrupts the work when the request's future is dropped before it finished.
struct InterruptOnDrop(Interrupt);

impl Drop for InterruptOnDrop {
    fn drop(&mut self) {
        self.0.interrupt();
    }
}

/// The schema's SDL, as checked in at `schema.graphql` and printed by `skyglass schema`.
pub fn sdl() -> String {
    build(None, None).sdl()
}
