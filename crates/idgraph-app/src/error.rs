//! The error every use case returns: a kind (which the HTTP layer maps to a status), a stable
//! snake_case code for clients, and a message for humans.

use std::collections::BTreeMap;

use idgraph_store::StoreError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The request is malformed or breaks a rule (HTTP 400).
    InvalidInput,
    /// No credentials, or credentials that match nothing (HTTP 401).
    Unauthenticated,
    /// Valid credentials without the right to do this (HTTP 403).
    Forbidden,
    /// Absent, or not visible to the caller (HTTP 404).
    NotFound,
    /// Clashes with what exists (HTTP 409).
    Conflict,
    /// The store cannot be reached (HTTP 503).
    Unavailable,
    /// A bug or an unexpected failure (HTTP 500); the message is logged, not shown.
    Internal,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct AppError {
    pub kind: ErrorKind,
    pub code: &'static str,
    pub message: String,
    pub details: BTreeMap<String, String>,
}

impl AppError {
    pub fn new(kind: ErrorKind, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            kind,
            code,
            message: message.into(),
            details: BTreeMap::new(),
        }
    }

    pub fn invalid(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(ErrorKind::InvalidInput, code, message)
    }

    pub fn not_found(what: &str) -> Self {
        Self::new(
            ErrorKind::NotFound,
            "not_found",
            format!("{what} not found"),
        )
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Forbidden, "forbidden", message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Internal, "internal", message)
    }

    pub fn with_detail(mut self, key: &str, value: impl Into<String>) -> Self {
        self.details.insert(key.to_owned(), value.into());
        self
    }

    /// Maps a store error, naming the object for `NotFound`.
    pub fn from_store(what: &str) -> impl FnOnce(StoreError) -> AppError + '_ {
        move |error| match error {
            StoreError::NotFound => AppError::not_found(what),
            StoreError::Conflict(message) => {
                AppError::new(ErrorKind::Conflict, "conflict", message)
            }
            StoreError::Unusable(message) => {
                AppError::new(ErrorKind::Unavailable, "store_unavailable", message)
            }
            StoreError::Other(message) => AppError::internal(message),
        }
    }
}

impl From<idgraph_core::ParseError> for AppError {
    fn from(error: idgraph_core::ParseError) -> Self {
        AppError::invalid("invalid_input", error.to_string()).with_detail("field", error.what)
    }
}
