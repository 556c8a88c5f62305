//! The long-running commands: `serve` (API, ingest and flusher by role) and `ingest`.
//! Both stop gracefully on SIGTERM or Ctrl-C: the source stops, the buffer is flushed into the
//! lake, in-flight requests finish, and the process exits 0.

use std::sync::Arc;

use anyhow::{Context, bail};
use ingest::buffer::Keys;
use ingest::flush::FlushConfig;
use ingest::pipeline::{self, IngestConfig};
use lake::exec::{Engine, EngineConfig};
use tokio::sync::watch;
use tracing::{info, warn};

use crate::cli::{ExportArgs, FlushArgs, IngestArgs, JetstreamArgs, LakeArgs, RedisArgs, Role, ServeArgs};
use crate::export::{self, ExportSpec, Exports, Trigger};
use crate::graphql::QueryRunner;
use crate::http::{self, AppState, Ops};
use crate::redis_link::RedisLink;

fn ingest_config(
    lake: &LakeArgs,
    redis: &RedisArgs,
    flush: &FlushArgs,
    jetstream: &JetstreamArgs,
) -> anyhow::Result<IngestConfig> {
    let zstd_dictionary = match &jetstream.jetstream_zstd_dictionary {
        None => None,
        Some(path) => Some(std::sync::Arc::from(
            std::fs::read(path)
                .with_context(|| format!("cannot read the Jetstream zstd dictionary {}", path.display()))?,
        )),
    };
    Ok(IngestConfig {
        redis_url: redis.redis_url.clone(),
        keys: Keys::new(&redis.redis_namespace),
        lake: lake.lake.clone(),
        flush: FlushConfig {
            interval: flush.flush_interval,
            max_rows: flush.flush_max_rows as usize,
            consumer: flush.flush_consumer.clone(),
            claim_after: flush.flush_claim_after.unwrap_or_else(|| ingest::flush::claim_after(flush.flush_interval)),
        },
        zstd_dictionary,
    })
}

/// A watch flag that turns true on SIGTERM or Ctrl-C.
fn shutdown_signal() -> watch::Receiver<bool> {
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        let ctrl_c = tokio::signal::ctrl_c();
        #[cfg(unix)]
        {
            let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                .expect("SIGTERM handler installs");
            tokio::select! {
                _ = ctrl_c => {}
                _ = term.recv() => {}
            }
        }
        #[cfg(not(unix))]
        ctrl_c.await.ok();
        info!("shutdown requested");
        tx.send(true).ok();
    });
    rx
}

pub async fn ingest(args: IngestArgs) -> anyhow::Result<()> {
    if args.once && !args.source.is_finite() {
        bail!("--once needs a source that ends (file:PATH); {:?} runs forever", args.source);
    }
    crate::metrics::install()?;
    std::fs::create_dir_all(&args.lake.lake)
        .with_context(|| format!("failed to create lake directory {}", args.lake.lake.display()))?;
    let config = ingest_config(&args.lake, &args.redis, &args.flush, &args.jetstream)?;
    let report = pipeline::run(args.source, config, shutdown_signal()).await?;
    let stats = lake::catalog::table_files(&args.lake.lake, lake::layout::POSTS_TABLE)?;
    info!(?report, files = stats.files, bytes = stats.bytes, "ingest finished");
    println!(
        "ingested {} events: {} posts, {} post deletes, {} likes and reposts, {} like and repost deletes, {} identity and account events, {} other, {} dropped to the dead-letter stream; lake has {} posts files",
        report.events,
        report.posts,
        report.post_deletes,
        report.interactions,
        report.interaction_deletes,
        report.accounts,
        report.other,
        report.dropped,
        stats.files
    );
    Ok(())
}

pub async fn serve(args: ServeArgs, exports: Vec<crate::export::ExportSpec>) -> anyhow::Result<()> {
    let metrics = crate::metrics::install()?;
    let lake = args.lake.lake.clone();
    std::fs::create_dir_all(&lake).with_context(|| format!("failed to create lake directory {}", lake.display()))?;
    let stop = shutdown_signal();
    let web_dir = if args.playground { crate::web::locate(args.web_dir.as_deref())? } else { None };
    let access = Arc::new(crate::auth::Access::load(&crate::auth::AccessConfig {
        keys_file: args.api_keys.clone(),
        admin_token: args.admin_token.clone(),
        anonymous: args.anonymous_read,
        introspection: args.introspection,
        max_aliases: args.max_aliases,
        max_root_fields: args.max_root_fields,
        // The explorer's own documents join the allow-list where the pages are served.
        allow_list: args.allow_list.clone().map(|mut manifests| {
            manifests.extend(web_dir.as_ref().map(|dir| dir.join("persisted-queries.json")).filter(|f| f.is_file()));
            manifests
        }),
    })?);
    let browser = crate::web::Browser {
        playground: args.playground,
        web_dir,
        cors_origins: args.cors_origins.clone(),
        answer_max_age: args.cache_ttl.min(args.cache_recent_ttl),
    };
    if args.role != Role::Ingest && args.playground && browser.web_dir.is_none() {
        warn!("the playground and explorer pages are not built (scripts/web); / and /explore say so");
    }

    let ingest_task = if args.role == Role::Api {
        None
    } else {
        let config = ingest_config(&args.lake, &args.redis, &args.flush, &args.jetstream)?;
        Some(tokio::spawn(pipeline::run(args.source.clone(), config, stop.clone())))
    };
    // The writers compact; API replicas only read.
    if args.role != Role::Api && !args.compact_every.is_zero() {
        let schedule = crate::compaction::run_schedule(
            lake.clone(),
            args.compact_every,
            args.compact_target.bytes(),
            stop.clone(),
        );
        tokio::spawn(schedule);
    }

    let cursor_of = (args.role != Role::Api).then(|| args.source.kind());
    tokio::spawn(crate::metrics::watch_lake(lake.clone(), cursor_of, stop.clone()));

    // Every role serves HTTP: the API roles GraphQL and the operations endpoints, `ingest`
    // the operations endpoints alone (for Prometheus and the orchestrator's probes).
    let mut ops = Ops {
        metrics,
        redis: Arc::new(RedisLink::new(&args.redis.redis_url, Keys::new(&args.redis.redis_namespace))),
        lake: lake.clone(),
        redis_required: args.role != Role::Api,
        ingest: (args.role != Role::Api)
            .then(|| http::IngestReadiness { source_kind: args.source.kind(), max_lag: args.ready_max_lag }),
        engine: None,
    };
    let router = if args.role == Role::Ingest {
        http::ops_router(ops)
    } else {
        let engine_config = EngineConfig {
            threads: args.query_threads.unwrap_or_else(|| EngineConfig::default().threads),
            rollups: args.rollups,
            text_indexes: args.text_indexes,
        };
        let engine_lake = lake.clone();
        let engine = Arc::new(
            tokio::task::spawn_blocking(move || Engine::open(&engine_lake, &engine_config))
                .await
                .context("engine task panicked")?
                .with_context(|| format!("failed to open lake {}", lake.display()))?,
        );
        // Exports share the lake with queries but get their own slot and a long timeout: an
        // aggregate over a month may take longer than a client may wait.
        let exports = (!exports.is_empty()).then(|| {
            let runner = QueryRunner::new(engine.clone(), 1, EXPORT_TIMEOUT);
            let namespace = &args.redis.redis_namespace;
            let settings = args.export_runs.settings();
            let exports = Arc::new(Exports::new(exports, runner, lake.clone(), ops.redis.clone(), namespace, settings));
            exports.spawn_schedules(stop.clone());
            info!(exports = exports.specs().len(), "export schedules started");
            exports
        });
        ops.engine = Some(engine.clone());
        tokio::spawn(keep_rollups_ready(engine.clone(), stop.clone()));
        // The hot tier: posts still in the buffer, answered with the lake's.
        let flushed_through = lake::catalog::read_state(&lake).ok().and_then(|state| state.flushed_through_us);
        let hot = Arc::new(crate::hot::HotState::new(flushed_through));
        tokio::spawn(crate::hot::tail(
            engine.clone(),
            args.redis.redis_url.clone(),
            Keys::new(&args.redis.redis_namespace),
            lake.clone(),
            hot.clone(),
            stop.clone(),
        ));
        let namespace = &args.redis.redis_namespace;
        http::router(AppState {
            runner: QueryRunner::new(engine, args.max_concurrent_queries as usize, args.query_timeout),
            cache: crate::cache::ResultCache::new(ops.redis.clone(), namespace, args.cache_ttl, args.cache_recent_ttl),
            limits: crate::graphql::Limits { max_page_size: args.max_page_size },
            ops,
            exports,
            access,
            hot: Some(hot),
            browser,
            throttle: crate::throttle::Throttle::new(args.rate_limit, args.rate_limit_burst.unwrap_or(args.rate_limit))
                .map(Arc::new),
            trusted_proxies: args.trusted_proxies.clone().into(),
        })
    };
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("failed to listen on {}", args.listen))?;
    let address = listener.local_addr()?;
    info!(%address, role = ?args.role, "serving HTTP");
    if args.role == Role::Ingest {
        println!("skyglass is ingesting: metrics http://{address}/metrics , readiness http://{address}/readyz");
    } else {
        println!("skyglass is serving: playground http://{address}/ , GraphQL http://{address}/graphql");
    }
    let server = tokio::spawn(serve_http(listener, router, stop.clone()));

    if let Some(task) = ingest_task {
        let report = task.await.context("ingest task panicked")??;
        info!(?report, "ingest stopped");
    }
    server.await.context("http server task panicked")??;
    Ok(())
}

/// Brings the engine's rollup tables up to each new lake generation as it is published, so that
/// no query waits for it (see `lake::exec::Engine::prepare_rollups`).
async fn keep_rollups_ready(engine: Arc<Engine>, mut stop: tokio::sync::watch::Receiver<bool>) {
    loop {
        let engine = engine.clone();
        match tokio::task::spawn_blocking(move || engine.prepare_rollups()).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => tracing::warn!(%error, "could not bring the rollup tables up to date"),
            Err(error) => tracing::warn!(%error, "the rollup task panicked"),
        }
        tokio::select! {
            _ = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
            _ = stop.changed() => return,
        }
    }
}

/// Longest one export's query may run.
pub const EXPORT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3600);

/// `skyglass export`: a declared export now (locked like a scheduled run), an ad-hoc query into
/// a file, or the list of declared exports.
pub async fn export(args: ExportArgs, specs: Vec<ExportSpec>) -> anyhow::Result<()> {
    if args.list {
        if specs.is_empty() {
            println!("no exports are declared (add [[export]] tables to the config file)");
        }
        let now = chrono::Utc::now();
        for spec in &specs {
            let next = spec.schedule.next_after(now, spec.time_zone).map(|t| t.to_rfc3339()).unwrap_or_default();
            let file = spec.destination.join(spec.file_name(&spec.window_at(now)));
            println!(
                "{}: {} in {}, at \"{}\" (next {next}), {} → {}",
                spec.name,
                spec.period,
                spec.time_zone.name(),
                spec.schedule.text,
                spec.format.extension(),
                file.display()
            );
        }
        return Ok(());
    }
    let lake = args.lake.lake.clone();
    let engine = tokio::task::spawn_blocking(move || Engine::open(&lake, &EngineConfig::default()))
        .await
        .context("engine task panicked")?
        .with_context(|| format!("failed to open lake {}", args.lake.lake.display()))?;
    let runner = QueryRunner::new(Arc::new(engine), 1, EXPORT_TIMEOUT);
    let redis = Arc::new(RedisLink::new(&args.redis.redis_url, Keys::new(&args.redis.redis_namespace)));
    let namespace = &args.redis.redis_namespace;
    let exports = Exports::new(specs, runner, args.lake.lake.clone(), redis, namespace, args.export_runs.settings());
    if let Some(query_file) = &args.query {
        let query = std::fs::read_to_string(query_file)
            .with_context(|| format!("cannot read the query file {}", query_file.display()))?;
        let variables = match &args.variables {
            None => serde_json::Map::new(),
            Some(text) => match serde_json::from_str(text) {
                Ok(serde_json::Value::Object(map)) => map,
                _ => bail!("--variables must be a JSON object, like '{{\"since\": \"2026-01-01T00:00:00Z\"}}'"),
            },
        };
        let (Some(format), Some(out)) = (args.format, &args.out) else { bail!("--query needs --format and --out") };
        let manifest = exports.run_query(&query, variables, format, out).await.map_err(anyhow::Error::msg)?;
        println!("exported {} rows ({} bytes) to {}", manifest.rows, manifest.bytes, out.display());
        return Ok(());
    }
    let name = args.name.as_deref().unwrap_or_default();
    let Some(spec) = exports.find(name) else {
        let names: Vec<&str> = exports.specs().iter().map(|s| s.name.as_str()).collect();
        if names.is_empty() {
            bail!(
                "no export is named {name:?}: the config file declares none (add [[export]] tables; see deploy/skyglass.example.toml)"
            );
        }
        bail!("no export is named {name:?}; the config file declares: {}", names.join(", "));
    };
    let at = match &args.as_of {
        None => chrono::Utc::now(),
        Some(text) => export::spec::parse_time(text, spec.time_zone).map_err(|e| anyhow::anyhow!("--as-of: {e}"))?,
    };
    let window = spec.window_at(at);
    match exports.run(spec, &window, Trigger::Command, 1, args.force).await {
        Ok(record) => {
            let file = spec.destination.join(record.file.unwrap_or_default());
            println!(
                "exported {} rows ({} bytes) of {} {} to {}",
                record.rows.unwrap_or(0),
                record.bytes.unwrap_or(0),
                spec.name,
                window.label,
                file.display()
            );
            Ok(())
        }
        Err(error @ export::RunError::AlreadyDone(_)) => {
            println!(
                "export {} {}: already done: {error}; nothing written (--force runs it again)",
                spec.name, window.label
            );
            Ok(())
        }
        Err(error @ export::RunError::Busy) => Err(crate::cli::Exit {
            code: crate::cli::EXIT_BUSY,
            message: format!("export {} {}: busy: {error}; nothing written (try again later)", spec.name, window.label),
        }
        .into()),
        Err(error) => bail!("export {} {} failed: {error}", spec.name, window.label),
    }
}

/// How long in-flight requests may run on after a shutdown signal.
pub const DRAIN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Serves until `stop`; then stops accepting and lets in-flight requests finish, for at most
/// [`DRAIN_TIMEOUT`].
async fn serve_http(
    listener: tokio::net::TcpListener,
    router: axum::Router,
    stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let stopped = |mut stop: watch::Receiver<bool>| async move {
        stop.wait_for(|stopping| *stopping).await.ok();
    };
    // Each request knows its peer's address: the rate limit's client when it sends no key.
    let router = router.into_make_service_with_connect_info::<std::net::SocketAddr>();
    let server = axum::serve(listener, router).with_graceful_shutdown(stopped(stop.clone()));
    tokio::select! {
        result = server => result.context("http server failed"),
        () = async { stopped(stop).await; tokio::time::sleep(DRAIN_TIMEOUT).await } => {
            warn!(seconds = DRAIN_TIMEOUT.as_secs(), "requests still running after the drain timeout; closing them");
            Ok(())
        }
    }
}
