//! The one place where failures become GraphQL errors. Clients get a message and an
//! `extensions.code`; internal details are logged in the request span, never sent.

use async_graphql::ErrorExtensions;

/// Codes a client may see in `extensions.code`.
pub const BAD_USER_INPUT: &str = "BAD_USER_INPUT";
pub const INTERNAL: &str = "INTERNAL_SERVER_ERROR";
pub const TIMEOUT: &str = "TIMEOUT";
pub const OVERLOADED: &str = "OVERLOADED";
pub const FORBIDDEN: &str = "FORBIDDEN";
pub const CONFLICT: &str = "CONFLICT";
pub const EXPORT_FAILED: &str = "EXPORT_FAILED";
/// `runExport` of a period a run exported already (without `force`).
pub const ALREADY_DONE: &str = "ALREADY_DONE";
pub const TOO_SLOW: &str = "TOO_SLOW";
/// No key where one is needed, or a key the server does not know (HTTP 401).
pub const UNAUTHENTICATED: &str = "UNAUTHENTICATED";
/// More aliases or root fields than the caps allow.
pub const TOO_COMPLEX: &str = "TOO_COMPLEX";
pub const INTROSPECTION_DISABLED: &str = "INTROSPECTION_DISABLED";
/// A document outside the allow-list, in allow-list mode.
pub const PERSISTED_QUERY_NOT_ALLOWED: &str = "PERSISTED_QUERY_NOT_ALLOWED";
/// The client's cost budget is spent (HTTP 429, `Retry-After`); see `crate::throttle`.
pub const RATE_LIMITED: &str = "RATE_LIMITED";

/// An error of the whole request, before any field runs (no path): a message and a code.
pub fn request_error(message: &str, code: &str) -> async_graphql::ServerError {
    let mut error = async_graphql::ServerError::new(message, None);
    let mut extensions = async_graphql::ErrorExtensionValues::default();
    extensions.set("code", code);
    error.extensions = Some(extensions);
    error
}

/// The JSON body of an answer that is only `errors`: the request was refused as a whole, before
/// anything ran. Its `extensions` are those of every answer: `cache` (`BYPASS`), `freshness`
/// and `cost` (0 units: it cost nothing).
pub fn refusal_body(error: async_graphql::ServerError, freshness: serde_json::Value) -> String {
    let mut response = async_graphql::Response::from_errors(vec![error]);
    let mut cost = async_graphql::indexmap::IndexMap::new();
    cost.insert(async_graphql::Name::new("units"), async_graphql::Value::from(0));
    response.extensions.insert("cache".to_owned(), async_graphql::Value::from(crate::cache::Status::Bypass.as_str()));
    response.extensions.insert("freshness".to_owned(), async_graphql::Value::from_json(freshness).unwrap_or_default());
    response.extensions.insert("cost".to_owned(), async_graphql::Value::Object(cost));
    serde_json::to_string(&response).unwrap_or_default()
}

/// An argument the client got wrong: the message says what to fix.
pub fn bad_input(message: impl Into<String>) -> async_graphql::Error {
    async_graphql::Error::new(message.into()).extend_with(|_, e| e.set("code", BAD_USER_INPUT))
}

/// The request needs a right its caller did not show.
pub fn forbidden(message: impl Into<String>) -> async_graphql::Error {
    async_graphql::Error::new(message.into()).extend_with(|_, e| e.set("code", FORBIDDEN))
}

/// Someone else is doing it now.
pub fn conflict(message: impl Into<String>) -> async_graphql::Error {
    async_graphql::Error::new(message.into()).extend_with(|_, e| e.set("code", CONFLICT))
}

/// The work was done already; nothing ran.
pub fn already_done(message: impl Into<String>) -> async_graphql::Error {
    async_graphql::Error::new(message.into()).extend_with(|_, e| e.set("code", ALREADY_DONE))
}

/// An export ran and failed: the reason is the operator's to read (the query's error, a full
/// disk), so it is sent.
pub fn export_failed(reason: impl Into<String>) -> async_graphql::Error {
    async_graphql::Error::new(reason.into()).extend_with(|_, e| e.set("code", EXPORT_FAILED))
}

/// A live subscriber fell too far behind and was dropped.
pub fn too_slow(missed: u64) -> async_graphql::Error {
    async_graphql::Error::new(format!(
        "this subscription fell behind by {missed} posts and was ended so that it does not hold up others; subscribe again"
    ))
    .extend_with(|_, e| e.set("code", TOO_SLOW))
}

/// A failure of ours: logged with its cause chain; the client sees a generic message.
pub fn internal(error: &anyhow::Error) -> async_graphql::Error {
    tracing::error!(error = format!("{error:#}"), "query failed");
    async_graphql::Error::new("internal error; the server log has the details")
        .extend_with(|_, e| e.set("code", INTERNAL))
}

/// The query ran longer than the server allows and was stopped.
pub fn timed_out(limit: std::time::Duration) -> async_graphql::Error {
    async_graphql::Error::new(format!(
        "the query ran longer than {} s and was stopped; narrow the filter or the time range",
        limit.as_secs_f64()
    ))
    .extend_with(|_, e| e.set("code", TIMEOUT))
}

/// Every query slot stayed busy for as long as a query may run.
pub fn overloaded(waited: std::time::Duration) -> async_graphql::Error {
    async_graphql::Error::new(format!(
        "the server is busy: no query slot freed up within {} s; retry later",
        waited.as_secs_f64()
    ))
    .extend_with(|_, e| e.set("code", OVERLOADED))
}

/// The client's cost budget is spent; `extensions.retryAfterSeconds` says when it is not.
pub fn rate_limited(wait: std::time::Duration) -> async_graphql::Error {
    let seconds = crate::throttle::whole_seconds(wait);
    async_graphql::Error::new(format!(
        "this client's query budget is spent (see extensions.cost in an answer); retry in {seconds} s, \
         or narrow the time range: a statement costs one unit per MiB of the days it reads"
    ))
    .extend_with(|_, e| {
        e.set("code", RATE_LIMITED);
        e.set("retryAfterSeconds", seconds);
    })
}

/// Turns a lake error into a GraphQL error by its kind.
pub fn from_lake(error: lake::Error) -> async_graphql::Error {
    match error.kind() {
        lake::ErrorKind::BadInput => bad_input(error.to_string()),
        lake::ErrorKind::Interrupted => {
            async_graphql::Error::new(error.to_string()).extend_with(|_, e| e.set("code", TIMEOUT))
        }
        lake::ErrorKind::Internal => internal(&anyhow::Error::new(error)),
    }
}
