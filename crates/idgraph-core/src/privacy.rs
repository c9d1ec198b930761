//! Tombstones of erased identifiers: what is left of an identifier once its person is deleted.
//!
//! A tombstone is a keyed hash (HMAC-SHA-256 with the tenant's random salt) of the normalized
//! identifier. It answers "was this exact identifier erased?" for a value in hand, and nothing
//! else: without the salt a dictionary of phone numbers cannot be run against a stolen copy, and
//! the same number hashes differently in each tenant.

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use crate::identity::Identifier;

/// Length of a tenant's salt, in bytes.
pub const SALT_BYTES: usize = 32;

/// What stored values hold in place of an erased identifier's value, so a tombstone can never be
/// mistaken for (or collide with) a normalized value: no kind's normalizer produces a `~`.
pub const TOMBSTONE_PREFIX: &str = "~erased:";

/// The tombstone of `identifier` under `salt`: `~erased:` and 64 hex digits.
pub fn tombstone(salt: &[u8], identifier: &Identifier) -> String {
    // HMAC accepts keys of any length; `new_from_slice` cannot fail for it.
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(salt).expect("HMAC takes any key");
    // The kind is part of the input, so an email and an external id with the same text differ.
    mac.update(identifier.kind().as_str().as_bytes());
    mac.update(&[0]);
    mac.update(identifier.value().as_bytes());
    let digest = mac.finalize().into_bytes();
    let mut out = String::with_capacity(TOMBSTONE_PREFIX.len() + 64);
    out.push_str(TOMBSTONE_PREFIX);
    for byte in digest {
        out.push_str(&format!("{byte:02x}"));
    }
    out
}

/// What a signal or import row carrying an erased identifier does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ErasedIdentifiers {
    /// It is refused and reported, so a stale source cannot bring the person back.
    #[default]
    Block,
    /// It is resolved like any signal: the identifier starts a new person.
    Allow,
}

impl ErasedIdentifiers {
    pub fn as_str(self) -> &'static str {
        match self {
            ErasedIdentifiers::Block => "block",
            ErasedIdentifiers::Allow => "allow",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "block" => Some(ErasedIdentifiers::Block),
            "allow" => Some(ErasedIdentifiers::Allow),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::IdentifierKind;

    fn email(value: &str) -> Identifier {
        Identifier::from_stored(IdentifierKind::email(), value.to_owned())
    }

    #[test]
    fn a_tombstone_depends_on_salt_kind_and_value_and_hides_the_value() {
        let salt = [7u8; SALT_BYTES];
        let ann = tombstone(&salt, &email("ann@example.com"));
        assert_eq!(ann, tombstone(&salt, &email("ann@example.com")));
        assert!(ann.starts_with(TOMBSTONE_PREFIX));
        assert_eq!(ann.len(), TOMBSTONE_PREFIX.len() + 64);
        assert!(!ann.contains("ann"));
        assert_ne!(
            ann,
            tombstone(&[8u8; SALT_BYTES], &email("ann@example.com"))
        );
        assert_ne!(ann, tombstone(&salt, &email("bob@example.com")));
        let as_external_id =
            Identifier::from_stored(IdentifierKind::external_id(), "ann@example.com".to_owned());
        assert_ne!(ann, tombstone(&salt, &as_external_id));
    }
}
