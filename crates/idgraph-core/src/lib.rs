//! The pure domain of idgraph: tenancy names, API key scopes and formats, identifier
//! normalization, identity resolution, trait precedence, the compliance gate and webhook
//! signatures.
//!
//! Nothing here does IO, spawns tasks, or knows about SQL or HTTP; every function is a plain
//! transformation of plain data, so it can be tested exhaustively.

pub mod auth;
pub mod compliance;
pub mod identity;
pub mod privacy;
pub mod resolve;
pub mod tenancy;
pub mod traits;
pub mod webhooks;

/// Why a value handed to a constructor in this crate was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what}: {reason}")]
pub struct ParseError {
    /// Which kind of value was being parsed (e.g. "workspace name").
    pub what: &'static str,
    /// A sentence a user can act on.
    pub reason: String,
}

impl ParseError {
    pub(crate) fn new(what: &'static str, reason: impl Into<String>) -> Self {
        Self {
            what,
            reason: reason.into(),
        }
    }
}

/// Checks a slug: 1..=max bytes of `[a-z0-9_-]`, starting with a letter or digit.
pub(crate) fn check_slug(what: &'static str, raw: &str, max: usize) -> Result<(), ParseError> {
    if raw.is_empty() {
        return Err(ParseError::new(what, "must not be empty"));
    }
    if raw.len() > max {
        return Err(ParseError::new(
            what,
            format!("must be at most {max} characters"),
        ));
    }
    let first_ok = raw
        .bytes()
        .next()
        .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    let all_ok = raw
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    if !first_ok || !all_ok {
        return Err(ParseError::new(
            what,
            format!("{raw:?} must use only a-z, 0-9, '_' and '-', starting with a letter or digit"),
        ));
    }
    Ok(())
}
