//! The browser pages: the GraphQL playground at `/` and the reference explorer at `/explore`.
//!
//! Both are written in `api/web` and built there by npm (`scripts/web`) into a directory of
//! static files, which this serves: the pages with `Cache-Control: no-cache` (a new build shows
//! at the next load), the content-hashed assets under `/assets` as immutable. Nothing is loaded
//! from elsewhere, so the pages work without internet access.
//!
//! Where the build is: `--web-dir`, else the checkout's `api/web/dist` (a binary built from a
//! checkout), else `/usr/share/skyglass/web` (the container image). Without a build, the pages
//! say how to make one and the API is unaffected.

use std::path::{Path, PathBuf};

use axum::Router;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse};
use axum::routing::get;
use tower_http::services::{ServeDir, ServeFile};
use tower_http::set_header::SetResponseHeaderLayer;

/// Where a binary built from a checkout finds the build.
const CHECKOUT_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/web/dist");
/// Where the container image puts it.
const INSTALLED_DIR: &str = "/usr/share/skyglass/web";
const PAGES: [(&str, &str); 4] = [
    ("/", "index.html"),
    ("/explore", "explore/index.html"),
    ("/explore/", "explore/index.html"),
    ("/favicon.svg", "favicon.svg"),
];
const IMMUTABLE: &str = "public, max-age=31536000, immutable";

/// The directory of the built pages: `flag` when given (it must hold a build), else the first
/// default that holds one; `Ok(None)` when none does.
pub fn locate(flag: Option<&Path>) -> anyhow::Result<Option<PathBuf>> {
    if let Some(dir) = flag {
        anyhow::ensure!(
            is_build(dir),
            "--web-dir {}: no built pages there (index.html and explore/index.html); build them with scripts/web",
            dir.display()
        );
        return Ok(Some(dir.to_owned()));
    }
    Ok([CHECKOUT_DIR, INSTALLED_DIR].into_iter().map(PathBuf::from).find(|dir| is_build(dir)))
}

fn is_build(dir: &Path) -> bool {
    PAGES.iter().all(|(_, file)| dir.join(file).is_file())
}

/// The pages' routes, served from `dir`, or a page that says how to build them.
pub fn routes<S: Clone + Send + Sync + 'static>(dir: Option<&Path>) -> Router<S> {
    let Some(dir) = dir else {
        return PAGES.iter().fold(Router::new(), |router, (path, _)| router.route(path, get(not_built)));
    };
    let pages = PAGES
        .iter()
        .fold(Router::new(), |router, (path, file)| router.route_service(path, ServeFile::new(dir.join(file))));
    let pages =
        pages.layer(SetResponseHeaderLayer::overriding(header::CACHE_CONTROL, HeaderValue::from_static("no-cache")));
    let assets = Router::new()
        .nest_service("/assets", ServeDir::new(dir.join("assets")))
        .layer(SetResponseHeaderLayer::overriding(header::CACHE_CONTROL, HeaderValue::from_static(IMMUTABLE)));
    pages.merge(assets)
}

async fn not_built() -> impl IntoResponse {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        Html(
            "<!doctype html><title>Skyglass</title><h1>The playground is not built</h1>\
             <p>Build the pages with <code>scripts/web</code> (npm in <code>api/web</code>) and reload, \
             or start skyglass with <code>--web-dir</code> pointing at a build. \
             GraphQL answers at <a href=\"/graphql\">/graphql</a> meanwhile.</p>",
        ),
    )
}

/// What browsers get from the API process.
#[derive(Debug, Clone, Default)]
pub struct Browser {
    /// Whether the pages are served at all (`--playground`).
    pub playground: bool,
    /// The built pages ([`locate`]); `None` serves the page that says how to build them.
    pub web_dir: Option<PathBuf>,
    /// Other sites' origins that may call the API (`*`: any); none by default.
    pub cors_origins: Vec<String>,
    /// How long a browser or proxy may keep a GET answer (the shortest time the result cache
    /// keeps one, so nobody holds an answer longer than the server would); zero: not at all.
    pub answer_max_age: std::time::Duration,
}

impl Browser {
    /// The CORS layer: only the configured origins, for GET and POST with the headers a
    /// GraphQL client sends.
    pub fn cors(&self) -> tower_http::cors::CorsLayer {
        use axum::http::Method;
        use tower_http::cors::{AllowOrigin, CorsLayer};
        if self.cors_origins.is_empty() {
            return CorsLayer::new();
        }
        let origins = if self.cors_origins.iter().any(|origin| origin == "*") {
            AllowOrigin::any()
        } else {
            AllowOrigin::list(self.cors_origins.iter().filter_map(|origin| HeaderValue::from_str(origin).ok()))
        };
        CorsLayer::new()
            .allow_origin(origins)
            .allow_methods([Method::GET, Method::POST])
            .allow_headers([header::CONTENT_TYPE, header::AUTHORIZATION, header::CACHE_CONTROL])
            .expose_headers([header::HeaderName::from_static("x-request-id")])
            .max_age(std::time::Duration::from_secs(3600))
    }

    /// `Cache-Control` of a GraphQL answer: a GET answer without errors may be kept for
    /// [`Browser::answer_max_age`], by shared caches too when `shared` (anyone may read it),
    /// else by the asking browser alone; anything else is not kept.
    pub fn answer_cache_control(&self, get: bool, ok: bool, shared: bool) -> HeaderValue {
        let seconds = self.answer_max_age.as_secs();
        if !(get && ok && seconds > 0) {
            return HeaderValue::from_static("no-store");
        }
        let scope = if shared { "public" } else { "private" };
        HeaderValue::from_str(&format!("{scope}, max-age={seconds}")).unwrap_or(HeaderValue::from_static("no-store"))
    }
}
