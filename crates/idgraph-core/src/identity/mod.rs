//! Identifier kinds, normalized identifiers, and the per-tenant rules that turn raw values into them.
//!
//! A raw value becomes an [`Identifier`] only through [`IdentitySettings::normalize`], so code
//! that holds an `Identifier` never re-checks it. The resolution rules in [`crate::resolve`] build
//! on these types.

mod normalize;
mod phone;
mod settings;

use std::borrow::{Borrow, Cow};
use std::fmt;

use crate::{ParseError, check_slug};

pub use normalize::{RejectReason, Rejection, default_blocked_values};
pub use settings::{IdentitySettings, KindRule, Policy};

/// The name of an identifier kind: a built-in (`external_id`, `email`, `phone`,
/// `anonymous_id`) or a tenant-defined one (`device_id`, `identity_hash`, ...).
///
/// A built-in kind borrows its static name, so cloning it (every identifier and every person
/// view carries one) does not allocate, and comparing two of them is a pointer comparison.
#[derive(Debug, Clone, Eq)]
pub struct IdentifierKind(Cow<'static, str>);

impl std::hash::Hash for IdentifierKind {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.as_str().hash(state);
    }
}

impl IdentifierKind {
    /// Whether both are the same built-in name (the common case), which makes them equal
    /// without reading the bytes.
    fn same_name(&self, other: &Self) -> bool {
        let (a, b) = (self.as_str(), other.as_str());
        std::ptr::eq(a, b)
    }
}

// By name, as a derive would (and as `str` does, which `Borrow<str>` requires); the pointer
// comparison only skips the bytes when both name the same memory.
impl PartialEq for IdentifierKind {
    fn eq(&self, other: &Self) -> bool {
        self.same_name(other) || self.as_str() == other.as_str()
    }
}

impl PartialOrd for IdentifierKind {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for IdentifierKind {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        if self.same_name(other) {
            return std::cmp::Ordering::Equal;
        }
        self.as_str().cmp(other.as_str())
    }
}

impl IdentifierKind {
    pub const EXTERNAL_ID: &'static str = "external_id";
    pub const EMAIL: &'static str = "email";
    pub const PHONE: &'static str = "phone";
    pub const ANONYMOUS_ID: &'static str = "anonymous_id";
    /// Built-in custom kind: a hash of a normalized name and postal address, derived by imports.
    pub const IDENTITY_HASH: &'static str = "identity_hash";

    /// The built-in kinds, strongest first.
    pub const BUILT_IN: [&'static str; 4] = [
        Self::EXTERNAL_ID,
        Self::EMAIL,
        Self::PHONE,
        Self::ANONYMOUS_ID,
    ];

    pub fn parse(raw: &str) -> Result<Self, ParseError> {
        check_slug("identifier kind", raw, 40)?;
        let name = [Self::IDENTITY_HASH]
            .into_iter()
            .chain(Self::BUILT_IN)
            .find(|name| *name == raw);
        Ok(Self(match name {
            Some(name) => Cow::Borrowed(name),
            None => Cow::Owned(raw.to_owned()),
        }))
    }

    pub fn external_id() -> Self {
        Self(Cow::Borrowed(Self::EXTERNAL_ID))
    }

    pub fn email() -> Self {
        Self(Cow::Borrowed(Self::EMAIL))
    }

    pub fn phone() -> Self {
        Self(Cow::Borrowed(Self::PHONE))
    }

    pub fn anonymous_id() -> Self {
        Self(Cow::Borrowed(Self::ANONYMOUS_ID))
    }

    pub fn identity_hash() -> Self {
        Self(Cow::Borrowed(Self::IDENTITY_HASH))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

// Lets maps keyed by kind be queried with a plain `&str` (the derived Eq/Ord/Hash agree with
// `str`'s, which `Borrow` requires).
impl Borrow<str> for IdentifierKind {
    fn borrow(&self) -> &str {
        self.as_str()
    }
}

impl fmt::Display for IdentifierKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A normalized identifier: the only way to get one is through [`IdentitySettings::normalize`]
/// (or [`Identifier::from_stored`] for values that went through it before).
///
/// Ordering is by kind name, then value; it only serves deterministic output.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Identifier {
    kind: IdentifierKind,
    value: String,
}

impl Identifier {
    pub fn kind(&self) -> &IdentifierKind {
        &self.kind
    }

    pub fn value(&self) -> &str {
        &self.value
    }

    /// For values read back from the store, already normalized; no checks beyond non-empty.
    ///
    /// # Panics
    ///
    /// When `value` is empty: the store only ever holds normalized values, so an empty one is a
    /// corrupted row, and carrying on would let it glue persons together.
    pub fn from_stored(kind: IdentifierKind, value: String) -> Self {
        assert!(
            !value.is_empty(),
            "a stored {kind} identifier has an empty value"
        );
        Self { kind, value }
    }

    pub fn into_parts(self) -> (IdentifierKind, String) {
        (self.kind, self.value)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    #[test]
    fn kinds_are_slugs() {
        for name in IdentifierKind::BUILT_IN {
            assert_eq!(IdentifierKind::parse(name).unwrap().as_str(), name);
        }
        assert!(IdentifierKind::parse("Device Id").is_err());
        assert!(IdentifierKind::parse("").is_err());
    }

    #[test]
    fn parsed_and_built_in_kinds_are_interchangeable() {
        use std::collections::HashSet;
        let parsed = IdentifierKind::parse("email").unwrap();
        assert_eq!(parsed, IdentifierKind::email());
        let custom = IdentifierKind::parse("device_id").unwrap();
        assert_eq!(custom.as_str(), "device_id");
        assert_eq!(custom.clone(), custom);
        let set = HashSet::from([IdentifierKind::email(), custom]);
        assert!(set.contains(&parsed) && set.contains("device_id") && set.contains("email"));
        assert!(IdentifierKind::email() < IdentifierKind::parse("external_id").unwrap());
        let owned = IdentifierKind::parse("device_id").unwrap();
        assert_eq!(owned, IdentifierKind::parse("device_id").unwrap());
        assert_eq!(owned.cmp(&owned.clone()), std::cmp::Ordering::Equal);
        assert!(IdentifierKind::email() != owned && owned < IdentifierKind::email());
        assert!(owned > IdentifierKind::anonymous_id());
    }

    #[test]
    fn kind_maps_can_be_queried_by_str() {
        let map = BTreeMap::from([(IdentifierKind::email(), 1)]);
        assert_eq!(map.get("email"), Some(&1));
        assert_eq!(map.get("phone"), None);
    }

    #[test]
    #[should_panic(expected = "empty value")]
    fn stored_identifiers_must_not_be_empty() {
        Identifier::from_stored(IdentifierKind::email(), String::new());
    }
}
