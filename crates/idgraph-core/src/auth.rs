//! API key scopes, the key token format and key hashing.
//!
//! A key token reads `idg_<tenant>_<key id>_<secret>`. The tenant and key id let the server find
//! the key's row by primary key (tenant first, as every query must be); the 256-bit secret is
//! only ever stored as a SHA-256 hash. A slow password hash would add nothing for a random
//! 256-bit secret and would cost milliseconds on every request.

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

use sha2::{Digest, Sha256};

use crate::tenancy::TenantId;
use crate::{ParseError, check_slug};

/// One permission a key may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scope {
    EventsWrite,
    PersonsRead,
    PersonsWrite,
    ConsentRead,
    ConsentWrite,
    ImportsWrite,
    ImportsRead,
    WebhooksManage,
    KeysManage,
    AuditRead,
    /// Every other scope, within the key's tenant.
    Admin,
}

impl Scope {
    pub const ALL: [Scope; 11] = [
        Scope::EventsWrite,
        Scope::PersonsRead,
        Scope::PersonsWrite,
        Scope::ConsentRead,
        Scope::ConsentWrite,
        Scope::ImportsWrite,
        Scope::ImportsRead,
        Scope::WebhooksManage,
        Scope::KeysManage,
        Scope::AuditRead,
        Scope::Admin,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::EventsWrite => "events:write",
            Scope::PersonsRead => "persons:read",
            Scope::PersonsWrite => "persons:write",
            Scope::ConsentRead => "consent:read",
            Scope::ConsentWrite => "consent:write",
            Scope::ImportsWrite => "imports:write",
            Scope::ImportsRead => "imports:read",
            Scope::WebhooksManage => "webhooks:manage",
            Scope::KeysManage => "keys:manage",
            Scope::AuditRead => "audit:read",
            Scope::Admin => "admin",
        }
    }
}

impl FromStr for Scope {
    type Err = ParseError;

    fn from_str(raw: &str) -> Result<Self, ParseError> {
        Scope::ALL
            .into_iter()
            .find(|scope| scope.as_str() == raw)
            .ok_or_else(|| {
                let known: Vec<&str> = Scope::ALL.iter().map(|s| s.as_str()).collect();
                ParseError::new(
                    "scope",
                    format!("{raw:?} is not one of {}", known.join(", ")),
                )
            })
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The set of scopes a key holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scopes(BTreeSet<Scope>);

impl Scopes {
    pub fn all() -> Self {
        Self(BTreeSet::from([Scope::Admin]))
    }

    /// Parses a list of scope names; an empty list is refused because such a key is useless.
    pub fn parse<'a>(raw: impl IntoIterator<Item = &'a str>) -> Result<Self, ParseError> {
        let set = raw
            .into_iter()
            .map(str::parse)
            .collect::<Result<BTreeSet<Scope>, _>>()?;
        if set.is_empty() {
            return Err(ParseError::new("scopes", "at least one scope is needed"));
        }
        Ok(Self(set))
    }

    /// Whether a key with these scopes may do what `needed` guards; `admin` implies every scope.
    pub fn allows(&self, needed: Scope) -> bool {
        self.0.contains(&Scope::Admin) || self.0.contains(&needed)
    }

    /// Whether every scope of `other` is allowed by `self` (a key may not mint a stronger key).
    pub fn covers(&self, other: &Scopes) -> bool {
        other.0.iter().all(|scope| self.allows(*scope))
    }

    pub fn iter(&self) -> impl Iterator<Item = Scope> + '_ {
        self.0.iter().copied()
    }

    /// The canonical storage form: names joined by spaces, sorted.
    pub fn to_storage(&self) -> String {
        self.iter().map(Scope::as_str).collect::<Vec<_>>().join(" ")
    }

    pub fn from_storage(stored: &str) -> Result<Self, ParseError> {
        Self::parse(stored.split_whitespace())
    }
}

/// The SHA-256 of a key token: all the server ever stores of a secret.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct KeyHash(pub [u8; 32]);

impl KeyHash {
    pub fn of(token: &str) -> Self {
        Self(Sha256::digest(token.as_bytes()).into())
    }
}

impl fmt::Debug for KeyHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A hash of a high-entropy key is not secret, but short output keeps logs readable.
        write!(
            f,
            "KeyHash({:02x}{:02x}{:02x}{:02x}…)",
            self.0[0], self.0[1], self.0[2], self.0[3]
        )
    }
}

/// The parts of a well-formed key token.
#[derive(Clone, PartialEq, Eq)]
pub struct KeyToken {
    pub tenant_id: TenantId,
    pub key_id: String,
    secret_hex: String,
}

impl KeyToken {
    const PREFIX: &'static str = "idg_";

    /// Builds a token from fresh random bytes; randomness is the caller's (this crate has no IO).
    pub fn new(tenant_id: TenantId, key_id: &str, secret: [u8; 32]) -> Result<Self, ParseError> {
        check_key_id(key_id)?;
        let secret_hex = secret.iter().map(|b| format!("{b:02x}")).collect();
        Ok(Self {
            tenant_id,
            key_id: key_id.to_owned(),
            secret_hex,
        })
    }

    /// Splits a presented token; `None` when it is not in idgraph's format (it may still be an
    /// operator-chosen master key).
    pub fn parse(raw: &str) -> Option<Self> {
        let rest = raw.strip_prefix(Self::PREFIX)?;
        let mut parts = rest.rsplitn(3, '_');
        let secret_hex = parts.next()?;
        let key_id = parts.next()?;
        let tenant = parts.next()?;
        let secret_ok = secret_hex.len() == 64
            && secret_hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if !secret_ok || check_key_id(key_id).is_err() {
            return None;
        }
        Some(Self {
            tenant_id: TenantId::parse(tenant).ok()?,
            key_id: key_id.to_owned(),
            secret_hex: secret_hex.to_owned(),
        })
    }

    /// The full token, to be shown to the user exactly once.
    pub fn expose(&self) -> String {
        format!(
            "{}{}_{}_{}",
            Self::PREFIX,
            self.tenant_id,
            self.key_id,
            self.secret_hex
        )
    }

    pub fn hash(&self) -> KeyHash {
        KeyHash::of(&self.expose())
    }
}

impl fmt::Debug for KeyToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyToken")
            .field("tenant_id", &self.tenant_id)
            .field("key_id", &self.key_id)
            .field("secret", &"<redacted>")
            .finish()
    }
}

fn check_key_id(key_id: &str) -> Result<(), ParseError> {
    if key_id.contains('_') {
        return Err(ParseError::new("key id", "must not contain '_'"));
    }
    check_slug("key id", key_id, 40)
}

/// The smallest master key an operator may choose: below this it could be guessed.
pub const MASTER_KEY_MIN_LEN: usize = 24;

/// Checks an operator-chosen master key.
pub fn check_master_key(raw: &str) -> Result<(), ParseError> {
    if raw.chars().count() < MASTER_KEY_MIN_LEN {
        return Err(ParseError::new(
            "master key",
            format!("must be at least {MASTER_KEY_MIN_LEN} characters"),
        ));
    }
    if raw.chars().any(char::is_whitespace) {
        return Err(ParseError::new(
            "master key",
            "must not contain white space",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn admin_allows_everything_else_only_itself() {
        let admin = Scopes::all();
        let reader = Scopes::parse(["persons:read"]).unwrap();
        for scope in Scope::ALL {
            assert!(admin.allows(scope));
            assert_eq!(reader.allows(scope), scope == Scope::PersonsRead);
        }
        assert!(admin.covers(&reader));
        assert!(!reader.covers(&admin));
    }

    #[test]
    fn unknown_and_empty_scopes_are_refused() {
        assert!(
            Scopes::parse(["persons:delete"])
                .unwrap_err()
                .reason
                .contains("persons:read")
        );
        assert!(Scopes::parse([]).is_err());
    }

    #[test]
    fn storage_form_round_trips() {
        let scopes = Scopes::parse(["keys:manage", "audit:read"]).unwrap();
        assert_eq!(scopes.to_storage(), "keys:manage audit:read");
        assert_eq!(Scopes::from_storage(&scopes.to_storage()).unwrap(), scopes);
    }

    #[test]
    fn debug_never_shows_the_secret() {
        let token = KeyToken::new(TenantId::default_tenant(), "01abc", [7; 32]).unwrap();
        assert!(!format!("{token:?}").contains("0707"));
        assert!(token.expose().contains(&"07".repeat(32)));
    }

    #[test]
    fn malformed_tokens_are_not_parsed() {
        for raw in [
            "",
            "idg_",
            "idg_default_k_short",
            "Bearer x",
            &format!("idg_default_{}", "a".repeat(64)),
        ] {
            assert!(KeyToken::parse(raw).is_none(), "{raw:?}");
        }
    }

    #[test]
    fn master_keys_must_be_long() {
        assert!(check_master_key("short").is_err());
        assert!(check_master_key(&"x".repeat(24)).is_ok());
        assert!(check_master_key(&format!("{} x", "y".repeat(30))).is_err());
    }

    proptest! {
        #[test]
        fn tokens_round_trip(tenant in "[a-z0-9][a-z0-9_-]{0,20}", key_id in "[a-z0-9][a-z0-9-]{0,25}", secret in any::<[u8; 32]>()) {
            let token = KeyToken::new(TenantId::parse(&tenant).unwrap(), &key_id, secret).unwrap();
            let parsed = KeyToken::parse(&token.expose()).unwrap();
            prop_assert_eq!(parsed.hash(), token.hash());
            prop_assert_eq!(parsed.tenant_id.as_str(), tenant.as_str());
            prop_assert_eq!(parsed.key_id, key_id);
        }
    }
}
