//! HTTP: the GraphQL endpoint, the playground, health, readiness and metrics, with the tower
//! layers every request goes through (trace, timeout, body limit, compression, CORS).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_graphql_axum::GraphQLRequest;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Json};
use axum::routing::get;
use metrics_exporter_prometheus::PrometheusHandle;
use tower_http::compression::CompressionLayer;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;
use tracing::Instrument;

use crate::cache;
use crate::graphql::{self, Services, SkyglassSchema};
use crate::metrics as m;
use crate::redis_link::RedisLink;

const REQUEST_ID: &str = "x-request-id";

/// Largest request body accepted.
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// Longest a request may take.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

pub struct AppState {
    pub runner: graphql::QueryRunner,
    pub cache: cache::ResultCache,
    pub limits: graphql::Limits,
    pub ops: Ops,
    /// The declared exports, where this process runs them.
    pub exports: Option<Arc<crate::export::Exports>>,
    /// Who may ask what: keys and roles, anonymous reading, introspection, the allow-list.
    pub access: Arc<crate::auth::Access>,
    /// The hot tier (posts still in the buffer), where this process tails the buffer.
    pub hot: Option<Arc<crate::hot::HotState>>,
    /// What browsers get: the pages, CORS, how long they may keep an answer.
    pub browser: crate::web::Browser,
    /// Each client's cost budget; `None`: no rate limit.
    pub throttle: Option<Arc<crate::throttle::Throttle>>,
    /// Peers whose `X-Forwarded-For` names the client (`--trusted-proxies`).
    pub trusted_proxies: Arc<[crate::throttle::AddressBlock]>,
}

/// Whether a request runs a mutation (never answered from or kept in the cache).
fn is_mutation(request: &async_graphql::Request) -> bool {
    request.query.contains("mutation")
        && async_graphql::parser::parse_query(&request.query).is_ok_and(|document| {
            document.operations.iter().any(|(name, operation)| {
                operation.node.ty == async_graphql::parser::types::OperationType::Mutation
                    && (request.operation_name.is_none()
                        || name.map(|n| n.as_str()) == request.operation_name.as_deref())
            })
        })
}

/// What the operations endpoints (`/metrics`, `/healthz`, `/readyz`) need: every role serves
/// them, `ingest` workers only them.
#[derive(Clone)]
pub struct Ops {
    pub metrics: PrometheusHandle,
    pub redis: Arc<RedisLink>,
    pub lake: PathBuf,
    /// For the roles that ingest: readiness also needs the lake to be this close behind the
    /// source (now minus the durable cursor of this kind of source).
    pub ingest: Option<IngestReadiness>,
    /// Whether this process needs Redis to do its work (the roles that ingest buffer in it). An
    /// API replica only caches there: without Redis it answers uncached, and stays ready.
    pub redis_required: bool,
    /// The engine, where this process answers queries: its counters are read at each scrape.
    pub engine: Option<Arc<lake::exec::Engine>>,
}

#[derive(Clone, Copy, Debug)]
pub struct IngestReadiness {
    pub source_kind: &'static str,
    pub max_lag: Duration,
}

#[derive(Clone)]
struct Shared {
    schema: SkyglassSchema,
    state: Arc<AppState>,
    catalog: Arc<lake::catalog::StateCache>,
}

/// The API: GraphQL, the playground and the operations endpoints.
pub fn router(state: AppState) -> Router {
    let state = Arc::new(state);
    let schema = graphql::build(
        Some(Services {
            runner: state.runner.clone(),
            limits: state.limits.clone(),
            redis: Some(state.ops.redis.clone()),
            exports: state.exports.clone(),
            live: state.hot.as_ref().map(|hot| hot.live.clone()),
        }),
        Some(state.access.clone()),
    );
    let ops = state.ops.clone();
    let catalog = Arc::new(lake::catalog::StateCache::new(&state.ops.lake));
    let pages =
        if state.browser.playground { crate::web::routes(state.browser.web_dir.as_deref()) } else { Router::new() };
    let cors = state.browser.cors();
    let shared = Shared { schema, state, catalog };
    let api = Router::new()
        .route("/graphql", get(graphql_handler).post(graphql_handler))
        .route("/graphql/ws", get(graphql_ws))
        .with_state(shared);
    layered(api.merge(pages).merge(ops_routes(ops))).layer(cors)
}

/// The operations endpoints alone, for the `ingest` role.
pub fn ops_router(ops: Ops) -> Router {
    layered(ops_routes(ops))
}

fn ops_routes(ops: Ops) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(ops)
}

fn layered(router: Router) -> Router {
    router
        .layer(RequestBodyLimitLayer::new(MAX_BODY_BYTES))
        .layer(TimeoutLayer::with_status_code(StatusCode::REQUEST_TIMEOUT, REQUEST_TIMEOUT))
        .layer(CompressionLayer::new())
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(|request: &axum::http::Request<_>| {
                    let id = request.headers().get(REQUEST_ID).and_then(|v| v.to_str().ok()).unwrap_or("-");
                    // The path alone: a GET's query string holds the caller's GraphQL document.
                    let path = request.uri().path();
                    tracing::info_span!("request", method = %request.method(), path = %path, request_id = %id)
                })
                // One line per request, as its response goes out, with the span's method, path
                // and request id.
                .on_response(|response: &axum::http::Response<_>, latency: Duration, _: &tracing::Span| {
                    let latency_ms = latency.as_secs_f64() * 1e3;
                    tracing::info!(status = response.status().as_u16(), latency_ms, "response");
                }),
        )
        // Outermost: every request gets an id (a client's own `x-request-id` is kept), its log
        // lines carry it, and the response returns it.
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
}

/// GraphQL over a websocket (graphql-transport-ws and the older graphql-ws), for `livePosts`.
/// Each connection gets its own data loaders for the fields nested under a live post.
/// The caller is who the upgrade request's headers say, else who the `connection_init`
/// payload says (a browser's websocket cannot send headers); a known key is needed where
/// anonymous reading is off.
async fn graphql_ws(
    State(shared): State<Shared>,
    headers: axum::http::HeaderMap,
    protocol: async_graphql_axum::GraphQLProtocol,
    upgrade: axum::extract::ws::WebSocketUpgrade,
) -> axum::response::Response {
    let access = shared.state.access.clone();
    let in_headers = crate::auth::Access::key_in_headers(&headers).map(str::to_owned);
    if in_headers.is_some()
        && let Err(refusal) = access.caller(in_headers.as_deref())
    {
        return unauthenticated(&shared, refusal);
    }
    upgrade
        .protocols(async_graphql::http::ALL_WEBSOCKET_PROTOCOLS)
        .on_upgrade(move |stream| {
            let mut data = async_graphql::Data::default();
            graphql::add_loaders(&mut data, &shared.state.runner);
            async_graphql_axum::GraphQLWebSocket::new(stream, shared.schema.clone(), protocol)
                .with_data(data)
                .on_connection_init(move |payload| async move {
                    let key = in_headers.or_else(|| crate::auth::Access::key_in_payload(&payload).map(str::to_owned));
                    let caller = access
                        .caller(key.as_deref())
                        .map_err(|refusal| async_graphql::Error::new(refusal.message()))?;
                    let mut data = async_graphql::Data::default();
                    data.insert(caller);
                    Ok(data)
                })
                .serve()
        })
        .into_response()
}

async fn graphql_handler(
    State(shared): State<Shared>,
    method: axum::http::Method,
    headers: axum::http::HeaderMap,
    extensions: axum::http::Extensions,
    request: GraphQLRequest,
) -> axum::response::Response {
    let mut caller = match shared.state.access.caller(crate::auth::Access::key_in_headers(&headers)) {
        Ok(caller) => caller,
        Err(refusal) => return unauthenticated(&shared, refusal),
    };
    if caller.client == crate::throttle::Client::Unknown
        && let Some(peer) = extensions.get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
    {
        let forwarded: Vec<&str> =
            headers.get_all("x-forwarded-for").iter().filter_map(|value| value.to_str().ok()).collect();
        let address = crate::throttle::client_address(peer.0.ip(), &forwarded, &shared.state.trusted_proxies);
        caller.client = crate::throttle::Client::Address(address);
    }
    // Admins are not rate limited.
    let limit = shared.state.throttle.clone().filter(|_| !caller.is_admin()).map(|throttle| (throttle, caller.client));
    let cost = Arc::new(crate::throttle::RequestCost::new(limit));
    let request = request.into_inner().data(caller);
    let name = request.operation_name.as_deref().or_else(|| m::first_operation_name(&request.query));
    let operation = m::operation_label(name);
    let span = tracing::info_span!("graphql", operation = %operation);
    let started = Instant::now();
    let answer = cached_answer(&shared, &headers, request, cost).instrument(span).await;
    let outcome = if answer.ok { m::OUTCOME_OK } else { m::OUTCOME_ERROR };
    metrics::counter!(m::GRAPHQL_REQUESTS, "operation" => operation.clone(), "outcome" => outcome).increment(1);
    metrics::histogram!(m::GRAPHQL_DURATION, "operation" => operation).record(started.elapsed().as_secs_f64());
    metrics::counter!(m::CACHE_REQUESTS, "status" => answer.status.as_str()).increment(1);
    // A proxy may share only what anyone may read: an answer to a key, or from a server
    // without anonymous reading, stays with the browser that asked.
    let shared_answer = crate::auth::Access::key_in_headers(&headers).is_none() && shared.state.access.anonymous;
    let cache_control =
        shared.state.browser.answer_cache_control(method == axum::http::Method::GET, answer.ok, shared_answer);
    let mut response = (
        [
            (axum::http::header::CONTENT_TYPE, axum::http::HeaderValue::from_static("application/json")),
            (axum::http::header::CACHE_CONTROL, cache_control),
        ],
        answer.body,
    )
        .into_response();
    // A statement refused for want of budget: the whole answer says when to come back.
    if let Some(wait) = answer.retry_after {
        *response.status_mut() = StatusCode::TOO_MANY_REQUESTS;
        response.headers_mut().insert(axum::http::header::RETRY_AFTER, crate::throttle::whole_seconds(wait).into());
    }
    response
}

/// HTTP 401 with a GraphQL error saying why (`extensions.code`: `UNAUTHENTICATED`).
fn unauthenticated(shared: &Shared, refusal: crate::auth::Refusal) -> axum::response::Response {
    metrics::counter!(m::GRAPHQL_REQUESTS, "operation" => "-", "outcome" => "unauthenticated").increment(1);
    let error = crate::error::request_error(refusal.message(), crate::error::UNAUTHENTICATED);
    let body = crate::error::refusal_body(error, freshness(shared, shared.catalog.read().ok()).to_json());
    let headers = [
        (axum::http::header::CONTENT_TYPE, "application/json"),
        (axum::http::header::WWW_AUTHENTICATE, "Bearer"),
        (axum::http::header::CACHE_CONTROL, "no-store"),
    ];
    (StatusCode::UNAUTHORIZED, headers, body).into_response()
}

/// A GraphQL answer as sent: its JSON body (with `extensions.cache`), whether it is free of
/// errors, and how long to wait when a statement was refused for want of budget.
struct Answer {
    body: String,
    ok: bool,
    status: cache::Status,
    retry_after: Option<Duration>,
}

/// Answers from the result cache when it can ([`crate::cache`]), from the lake otherwise.
/// `Cache-Control: no-cache` computes afresh (and keeps the new answer), `no-store` also keeps
/// nothing; an explained request (`"extensions": {"explain": true}`) is computed and not kept.
async fn cached_answer(
    shared: &Shared,
    headers: &axum::http::HeaderMap,
    mut request: async_graphql::Request,
    cost: Arc<crate::throttle::RequestCost>,
) -> Answer {
    // A stat, unless a publish changed the catalog.
    let catalog = shared.catalog.read().ok();
    let freshness = freshness(shared, catalog).to_json();
    if let Err(persisted) = shared.state.cache.resolve_persisted(&mut request, &shared.state.access).await {
        let error = crate::error::request_error(persisted.message(), persisted.code());
        let body = crate::error::refusal_body(error, freshness);
        return Answer { body, ok: false, status: cache::Status::Bypass, retry_after: None };
    }
    let explain = matches!(request.extensions.get("explain"), Some(async_graphql::Value::Boolean(true)));
    let extensions = Extensions { freshness: freshness.to_string(), cost, explain };
    let hot_version = shared.state.hot.as_ref().map(|hot| hot.version());
    let hot_version = hot_version.as_deref();
    let directives = headers.get(axum::http::header::CACHE_CONTROL).and_then(|v| v.to_str().ok()).unwrap_or("");
    let (no_cache, no_store) = (directives.contains("no-cache"), directives.contains("no-store"));
    let cache = &shared.state.cache;
    if !cache.enabled() || no_store || is_mutation(&request) || extensions.explain {
        return execute(shared, request, cache::Status::Bypass, &extensions).await.answer;
    }
    let Some(key) = catalog.map(|catalog| cache.key(catalog.generation, &request)) else {
        return execute(shared, request, cache::Status::Bypass, &extensions).await.answer;
    };
    let key = key.as_str();
    let keep = |computed: Computed| async move {
        if let Some(data) = &computed.keep {
            let touched = computed.touched;
            cache.put_answer(key, data, touched.hot.then_some(hot_version).flatten(), touched.today).await;
        }
        computed
    };
    if no_cache {
        return keep(execute(shared, request, cache::Status::Bypass, &extensions).await).await.answer;
    }
    let hit = |data: &str| Answer {
        body: body_of(data, cache::Status::Hit, &extensions, None),
        ok: true,
        status: cache::Status::Hit,
        retry_after: None,
    };
    match cache.get_answer(key, hot_version).await {
        Ok(Some(data)) => return hit(&data),
        Ok(None) => {}
        Err(()) => return execute(shared, request, cache::Status::Bypass, &extensions).await.answer,
    }
    match cache.join(key).await {
        cache::Flight::Follower(Some(data)) => hit(&data),
        cache::Flight::Follower(None) => {
            keep(execute(shared, request, cache::Status::Miss, &extensions).await).await.answer
        }
        cache::Flight::Leader(leader) => {
            // This process computes it, unless another replica already does.
            let token = match cache.claim(key).await {
                cache::Claim::Theirs => {
                    if let Some(data) = cache.wait_for(key, hot_version, REQUEST_TIMEOUT).await {
                        cache.finish(leader, Some(Arc::new(data.clone())));
                        return hit(&data);
                    }
                    None
                }
                cache::Claim::Mine(token) => Some(token),
                cache::Claim::Unknown => None,
            };
            let computed = keep(execute(shared, request, cache::Status::Miss, &extensions).await).await;
            if let Some(token) = token {
                cache.release(key, &token).await;
            }
            cache.finish(leader, computed.keep.map(Arc::new));
            computed.answer
        }
    }
}

/// How fresh answers are now: what the hot tier holds, or where this process does not tail the
/// buffer, what the files hold (`catalog`).
fn freshness(shared: &Shared, catalog: Option<lake::catalog::CatalogState>) -> crate::hot::Freshness {
    match &shared.state.hot {
        Some(hot) => hot.freshness(),
        None => {
            let flushed = catalog.and_then(|c| c.flushed_through_us);
            crate::hot::Freshness { ingested_through_us: flushed, flushed_through_us: flushed }
        }
    }
}

/// What every response's `extensions` carry besides `cache`: `freshness` (as JSON), and
/// `cost`, which the request's statements add to as they run.
struct Extensions {
    freshness: String,
    cost: Arc<crate::throttle::RequestCost>,
    /// Whether the request asked for `plans` with every question's statements.
    explain: bool,
}

/// A request run on the lake: the answer as sent, its `data` JSON when the cache may keep it,
/// and whether it read the hot tier or today.
struct Computed {
    answer: Answer,
    keep: Option<String>,
    touched: lake::exec::Touched,
}

/// Runs a request on the lake.
async fn execute(
    shared: &Shared,
    request: async_graphql::Request,
    status: cache::Status,
    extensions: &Extensions,
) -> Computed {
    let volatile = cache::Volatile::default();
    let (runner, touched) = shared.state.runner.for_request(extensions.cost.clone(), extensions.explain);
    let request = graphql::with_loaders(request, &runner).data(volatile.clone()).data(graphql::RequestRunner(runner));
    let mut response = shared.schema.execute(request).await;
    let answered = touched.answered();
    let plans = if answered.is_empty() { None } else { serde_json::to_string(&answered).ok() };
    let touched = touched.get();
    if response.is_ok() && response.extensions.is_empty() {
        let data = serde_json::to_string(&response.data).unwrap_or_else(|_| "null".to_owned());
        // An answer that shows more than the lake is served as it is and not kept.
        let (status, keep) = if volatile.is_marked() { (cache::Status::Bypass, false) } else { (status, true) };
        let answer =
            Answer { body: body_of(&data, status, extensions, plans.as_deref()), ok: true, status, retry_after: None };
        return Computed { answer, keep: keep.then_some(data), touched };
    }
    let ok = response.is_ok();
    response.extensions.insert("cache".to_owned(), async_graphql::Value::from(status.as_str()));
    if let Ok(freshness) = serde_json::from_str::<async_graphql::Value>(&extensions.freshness) {
        response.extensions.insert("freshness".to_owned(), freshness);
    }
    if let Ok(cost) = async_graphql::Value::from_json(extensions.cost.to_json()) {
        response.extensions.insert("cost".to_owned(), cost);
    }
    if let Some(plans) = plans.and_then(|p| serde_json::from_str::<async_graphql::Value>(&p).ok()) {
        response.extensions.insert("plans".to_owned(), plans);
    }
    let body = serde_json::to_string(&response).unwrap_or_else(|_| "{}".to_owned());
    let retry_after = extensions.cost.retry_after();
    Computed { answer: Answer { body, ok, status, retry_after }, keep: None, touched }
}

/// The body of an answer without errors, from its `data` JSON; with `plans` (JSON), how its
/// statements with a rollup path were answered (a cached answer ran none).
fn body_of(data: &str, status: cache::Status, extensions: &Extensions, plans: Option<&str>) -> String {
    let plans = plans.map(|p| format!(",\"plans\":{p}")).unwrap_or_default();
    format!(
        "{{\"data\":{data},\"extensions\":{{\"cache\":\"{}\",\"freshness\":{},\"cost\":{}{plans}}}}}",
        status.as_str(),
        extensions.freshness,
        extensions.cost.to_json()
    )
}

async fn metrics(State(ops): State<Ops>) -> impl IntoResponse {
    if let Some(engine) = &ops.engine {
        metrics::counter!(m::TEXT_SEARCH_STATEMENTS, "path" => "index").absolute(engine.text_index_uses());
        metrics::counter!(m::TEXT_SEARCH_STATEMENTS, "path" => "scan").absolute(engine.text_scans());
        metrics::counter!(m::TEXT_SEARCH_CUT_PAGES).absolute(engine.text_page_cuts());
        metrics::counter!(m::ROLLUP_STATEMENTS, "path" => "rollup").absolute(engine.rollup_uses());
        metrics::counter!(m::ROLLUP_STATEMENTS, "path" => "posts").absolute(engine.rollup_refusals());
        for ranked in lake::exec::Ranked::ALL {
            metrics::counter!(m::RANKINGS, "path" => ranked.as_str()).absolute(engine.rankings(ranked));
        }
    }
    ([("content-type", "text/plain; version=0.0.4")], ops.metrics.render())
}

/// Ready when the lake's catalog reads, Redis answers (where it is required: see
/// [`Ops::redis_required`]), the engine (where this process answers queries) has made its
/// rollup tables, so that no query waits a minute for them, and, where this process ingests,
/// the lake is at most `max_lag` behind the source (a process that has flushed nothing yet is not behind). The body says
/// which is which.
async fn readyz(State(ops): State<Ops>) -> impl IntoResponse {
    let redis_ok = ops.redis.ping().await;
    let lake = ops.lake.clone();
    let kind = ops.ingest.map(|i| i.source_kind);
    let (lake_ok, cursor) = tokio::task::spawn_blocking(move || {
        let lake_ok = lake::catalog::read_state(&lake).is_ok();
        let cursor = kind.and_then(|kind| ingest::cursor::load(&lake, kind).ok().flatten());
        (lake_ok, cursor)
    })
    .await
    .unwrap_or((false, None));
    let mut body = serde_json::json!({ "redis": redis_ok, "lake": lake_ok });
    let mut ready = lake_ok && (redis_ok || !ops.redis_required);
    if let Some(engine) = &ops.engine {
        let rollups = engine.rollups_prepared();
        body["rollups"] = serde_json::json!(rollups);
        ready &= rollups;
    }
    if let Some(ingest) = ops.ingest {
        let lag = cursor.map(|c| (chrono::Utc::now().timestamp_micros() - c.time_us).max(0) as f64 / 1e6);
        body["ingestLagSeconds"] = serde_json::json!(lag);
        ready &= ingest.max_lag.is_zero() || lag.is_none_or(|lag| lag <= ingest.max_lag.as_secs_f64());
    }
    let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, Json(body))
}
