//! Identifier kinds: the names under which identity nodes are stored.
//!
//! Normalization and the resolution rules build on these; this module only guarantees that a
//! kind is a well-formed name.

use std::fmt;

use crate::{ParseError, check_slug};

/// The name of an identifier kind: a built-in (`external_id`, `email`, `phone`,
/// `anonymous_id`) or a tenant-defined one (`device_id`, `identity_hash`, ...).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IdentifierKind(String);

impl IdentifierKind {
    pub const EXTERNAL_ID: &'static str = "external_id";
    pub const EMAIL: &'static str = "email";
    pub const PHONE: &'static str = "phone";
    pub const ANONYMOUS_ID: &'static str = "anonymous_id";

    pub fn parse(raw: &str) -> Result<Self, ParseError> {
        check_slug("identifier kind", raw, 40)?;
        Ok(Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for IdentifierKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
