//! A tenant's identity settings: which kinds exist, how strong each is, and what it may hold.

use std::collections::{BTreeMap, BTreeSet};
use std::str::FromStr;

use super::IdentifierKind;
use crate::ParseError;

/// Whether a value may belong to several persons.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// A value belongs to at most one person; a match means the same person.
    Unique,
    /// A value may link several persons and never causes a merge (a family landline).
    Shared,
}

/// How one identifier kind takes part in resolution.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KindRule {
    /// 1 = strongest. Decides which person survives a merge.
    pub priority: u32,
    pub policy: Policy,
    /// The most values of this kind one person may hold; `None` = unlimited.
    pub limit: Option<u32>,
}

/// The identity rules of one tenant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentitySettings {
    /// ISO 3166 alpha-2 region used to read phone numbers written without a country code.
    pub default_region: String,
    /// Every kind the tenant accepts: the four built-ins and any custom ones.
    pub kinds: BTreeMap<IdentifierKind, KindRule>,
    /// Blocked values the tenant adds on top of [`super::default_blocked_values`], keyed by kind
    /// name, or `"*"` for every kind. Compared case-insensitively.
    pub blocked_values: BTreeMap<String, BTreeSet<String>>,
    /// Values of otherwise `unique` kinds that behave as `shared`: they link the persons who
    /// carry them but never merge anyone (a shop kiosk's device id, a switchboard number).
    /// Keyed by kind name; values as normalized. Splitting a person apart by an identifier
    /// adds it here, so the same evidence does not glue the persons together again.
    pub shared_values: BTreeMap<String, BTreeSet<String>>,
    /// What a signal carrying an identifier of a deleted person does.
    pub erased_identifiers: crate::privacy::ErasedIdentifiers,
}

impl IdentitySettings {
    /// The key of `blocked_values` whose values are blocked for every kind.
    pub const ALL_KINDS: &'static str = "*";

    pub fn rule(&self, kind: &IdentifierKind) -> Option<&KindRule> {
        self.kinds.get(kind)
    }

    /// The policy this value follows: its kind's, unless the value is listed in
    /// `shared_values`. `None` for a kind the settings do not know.
    pub fn policy_of(&self, identifier: &super::Identifier) -> Option<Policy> {
        let rule = self.kinds.get(identifier.kind())?;
        Some(self.policy_under(rule, identifier))
    }

    /// [`Self::policy_of`] for a caller that already holds the identifier's kind rule.
    pub(crate) fn policy_under(&self, rule: &KindRule, identifier: &super::Identifier) -> Policy {
        if rule.policy == Policy::Unique
            && !self.shared_values.is_empty()
            && self
                .shared_values
                .get(identifier.kind().as_str())
                .is_some_and(|values| values.contains(identifier.value()))
        {
            return Policy::Shared;
        }
        rule.policy
    }

    /// Checks the settings themselves.
    ///
    /// - `default_region` is an upper-case ISO 3166 alpha-2 code the phone metadata knows;
    /// - the four built-in kinds are present (the API and the importer rely on them);
    /// - priorities are at least 1 and **unique**: the survivor of a merge is "the person found
    ///   through the highest-priority identifier", which is only a clear rule when no two kinds
    ///   share a rank (resolution still breaks such ties deterministically, by kind name);
    /// - limits, when set, are at least 1 (a kind no person may hold is a kind to remove);
    /// - every key of `blocked_values` is `"*"` or a configured kind, every key of
    ///   `shared_values` a configured kind.
    ///
    /// Kind names need no check here: an [`IdentifierKind`] is always a valid name.
    pub fn validate(&self) -> Result<(), ParseError> {
        let fail = |reason: String| Err(ParseError::new("identity settings", reason));
        let region = self.default_region.as_str();
        let region_known = region.len() == 2
            && region.bytes().all(|b| b.is_ascii_uppercase())
            && phonenumber::country::Id::from_str(region).is_ok()
            && phonenumber::metadata::DATABASE.by_id(region).is_some();
        if !region_known {
            return fail(format!(
                "default region {region:?} is not an upper-case ISO 3166 code known to the phone \
                 number metadata (e.g. \"US\", \"GB\")"
            ));
        }
        for built_in in IdentifierKind::BUILT_IN {
            if !self.kinds.contains_key(built_in) {
                return fail(format!("the built-in kind {built_in} must be configured"));
            }
        }
        let mut kind_by_priority: BTreeMap<u32, &IdentifierKind> = BTreeMap::new();
        for (kind, rule) in &self.kinds {
            if rule.priority == 0 {
                return fail(format!("{kind}: priority starts at 1 (the strongest)"));
            }
            if let Some(other) = kind_by_priority.insert(rule.priority, kind) {
                return fail(format!(
                    "{other} and {kind} share priority {}; each kind needs its own",
                    rule.priority
                ));
            }
            if rule.limit == Some(0) {
                return fail(format!(
                    "{kind}: a limit must be at least 1 (leave it unset for no limit)"
                ));
            }
        }
        for key in self.blocked_values.keys() {
            if key != Self::ALL_KINDS && !self.kinds.contains_key(key.as_str()) {
                return fail(format!(
                    "blocked values are listed for {key:?}, which is neither \"*\" nor a configured kind"
                ));
            }
        }
        for key in self.shared_values.keys() {
            if !self.kinds.contains_key(key.as_str()) {
                return fail(format!(
                    "shared values are listed for {key:?}, which is not a configured kind"
                ));
            }
        }
        Ok(())
    }
}

impl Default for IdentitySettings {
    fn default() -> Self {
        let rule = |priority, limit| KindRule {
            priority,
            policy: Policy::Unique,
            limit,
        };
        Self {
            default_region: "US".to_owned(),
            kinds: BTreeMap::from([
                (IdentifierKind::external_id(), rule(1, Some(1))),
                (IdentifierKind::email(), rule(2, Some(5))),
                (IdentifierKind::phone(), rule(3, Some(5))),
                (IdentifierKind::anonymous_id(), rule(4, None)),
                // Derived by imports from a normalized name and postal address: one household
                // member's identity, so unique, but a person may have lived at many addresses.
                (IdentifierKind::identity_hash(), rule(5, None)),
            ]),
            blocked_values: BTreeMap::new(),
            shared_values: BTreeMap::new(),
            erased_identifiers: crate::privacy::ErasedIdentifiers::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(name: &str) -> IdentifierKind {
        IdentifierKind::parse(name).unwrap()
    }

    #[test]
    fn defaults_are_valid() {
        IdentitySettings::default().validate().unwrap();
        let mut settings = IdentitySettings::default();
        settings.kinds.insert(
            kind("device_id"),
            KindRule {
                // 5 is the built-in identity_hash's.
                priority: 6,
                policy: Policy::Shared,
                limit: None,
            },
        );
        settings
            .blocked_values
            .insert("device_id".to_owned(), BTreeSet::from(["x".to_owned()]));
        settings.default_region = "GB".to_owned();
        settings.validate().unwrap();
    }

    #[test]
    fn broken_settings_are_refused_with_a_reason() {
        type Breaker = fn(&mut IdentitySettings);
        let cases: [(Breaker, &str); 7] = [
            (|s| s.default_region = "XX".to_owned(), "default region"),
            (|s| s.default_region = "us".to_owned(), "default region"),
            (
                |s| {
                    s.kinds.remove("phone");
                },
                "built-in kind phone",
            ),
            (
                |s| {
                    s.kinds.get_mut("email").unwrap().priority = 1;
                },
                "share priority 1",
            ),
            (
                |s| {
                    s.kinds.get_mut("email").unwrap().priority = 0;
                },
                "priority starts at 1",
            ),
            (
                |s| {
                    s.kinds.get_mut("phone").unwrap().limit = Some(0);
                },
                "at least 1",
            ),
            (
                |s| {
                    s.blocked_values.insert("fax".to_owned(), BTreeSet::new());
                },
                "\"fax\"",
            ),
        ];
        for (break_it, expected) in cases {
            let mut settings = IdentitySettings::default();
            break_it(&mut settings);
            let err = settings.validate().unwrap_err();
            assert!(err.reason.contains(expected), "{err} lacks {expected:?}");
        }
    }
}
