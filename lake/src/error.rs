//! The one error type of the lake, with a small `kind()` that callers match on.

use std::path::PathBuf;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("failed to {action} {path}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to write parquet file {path}")]
    Parquet {
        path: PathBuf,
        #[source]
        source: parquet::errors::ParquetError,
    },
    #[error("failed to read parquet file {path}")]
    ParquetRead {
        path: PathBuf,
        #[source]
        source: parquet::errors::ParquetError,
    },
    #[error("failed to build arrow batch")]
    Arrow(#[from] arrow::error::ArrowError),
    #[error("duckdb query failed")]
    Query(#[from] duckdb::Error),
    #[error("invalid cursor: {0}")]
    InvalidCursor(String),
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    #[error("the query was interrupted")]
    Interrupted,
    #[error("unexpected data in the lake: {0}")]
    Corrupt(String),
    #[error("corrupt catalog file {path}: {detail}")]
    Catalog { path: PathBuf, detail: String },
}

/// What kind of failure an [`Error`] is, for callers that turn errors into user-facing codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The caller asked for something invalid (bad cursor, bad argument): their fault.
    BadInput,
    /// Storage or engine failure: ours.
    Internal,
    /// The caller interrupted the query (it ran out of time).
    Interrupted,
}

impl Error {
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::InvalidCursor(_) | Error::InvalidArgument(_) => ErrorKind::BadInput,
            Error::Interrupted => ErrorKind::Interrupted,
            _ => ErrorKind::Internal,
        }
    }

    pub(crate) fn io(action: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Error {
        let path = path.into();
        move |source| Error::Io { action, path, source }
    }
}
