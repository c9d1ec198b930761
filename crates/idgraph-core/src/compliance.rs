//! The compliance gate: may this address be contacted now, for this purpose? A pure evaluation
//! over the facts the store gathered (suppression entries, consent events, past contacts), so the
//! rules can be checked exhaustively against a reference.
//!
//! Rules, every one applied and reported:
//! - an active suppression entry at any applicable scope (global, the tenant, the workspace)
//!   denies (`suppressed`);
//! - consent: each subject (the address itself, and when it belongs to a person, every person
//!   merged into that person and every identifier of it) has a current state per purpose, set by
//!   its latest event (`occurred_at`, ties by the order they were recorded). A revoke of the
//!   purpose, or of its whole channel (`sms` for `sms:marketing`), on any subject denies
//!   (`consent_revoked`): the most restrictive subject wins, which is also what happens to two
//!   persons' consents when they merge. For purposes the tenant marks as needing an explicit
//!   grant, no subject currently granting the purpose itself denies (`consent_missing`); a channel
//!   grant (an SMS `START`) undoes a channel revoke but is not consent to a purpose;
//! - a contact of the same address within the cooldown denies (`cooldown`): 90 days within the
//!   same vertical, 45 across verticals by default; a contact whose vertical (or the check's) is
//!   unknown counts as the same vertical, and the window extends both ways from the check's time,
//!   so a contact already planned after it counts too;
//! - an address that is not a valid address of the channel denies (`invalid_address`).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::str::FromStr;

use jiff::{SignedDuration, Timestamp};

use crate::ParseError;

/// A channel contacts go out on; it decides which identifier kind `to` is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Channel {
    Sms,
    Email,
}

impl Channel {
    pub const ALL: [Channel; 2] = [Channel::Sms, Channel::Email];

    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Sms => "sms",
            Channel::Email => "email",
        }
    }

    /// The identifier kind an address of this channel is.
    pub fn identifier_kind(self) -> &'static str {
        match self {
            Channel::Sms => crate::identity::IdentifierKind::PHONE,
            Channel::Email => crate::identity::IdentifierKind::EMAIL,
        }
    }
}

impl FromStr for Channel {
    type Err = ParseError;

    fn from_str(raw: &str) -> Result<Self, ParseError> {
        Channel::ALL
            .into_iter()
            .find(|c| c.as_str() == raw)
            .ok_or_else(|| ParseError::new("channel", format!("{raw:?} is not one of sms, email")))
    }
}

impl fmt::Display for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What consent is about: a channel (`sms`), or a channel and a topic (`sms:marketing`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Purpose(String);

impl Purpose {
    /// `channel` or `channel:topic`, where topic is 1..=60 of `[a-z0-9_.-]`.
    pub fn parse(raw: &str) -> Result<Self, ParseError> {
        let (channel, topic) = match raw.split_once(':') {
            Some((channel, topic)) => (channel, Some(topic)),
            None => (raw, None),
        };
        channel.parse::<Channel>().map_err(|_| {
            ParseError::new(
                "purpose",
                format!("{raw:?} must start with a channel (sms or email), e.g. \"sms:marketing\""),
            )
        })?;
        if let Some(topic) = topic {
            let valid = !topic.is_empty()
                && topic.len() <= 60
                && topic.bytes().all(|b| {
                    b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'-' | b'.')
                });
            if !valid {
                return Err(ParseError::new(
                    "purpose",
                    format!(
                        "{raw:?}: the topic after ':' must be 1 to 60 of a-z, 0-9, '_', '-', '.'"
                    ),
                ));
            }
        }
        Ok(Self(raw.to_owned()))
    }

    /// The whole-channel purpose of an SMS `STOP` / `START`.
    pub fn channel_wide(channel: Channel) -> Self {
        Self(channel.as_str().to_owned())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn channel(&self) -> Channel {
        let name = self.0.split(':').next().unwrap_or_default();
        // Only `parse` and `channel_wide` make a Purpose, and both start with a channel.
        name.parse().unwrap_or(Channel::Sms)
    }

    pub fn is_channel_wide(&self) -> bool {
        !self.0.contains(':')
    }
}

impl fmt::Display for Purpose {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ConsentAction {
    Grant,
    Revoke,
}

impl ConsentAction {
    pub fn as_str(self) -> &'static str {
        match self {
            ConsentAction::Grant => "grant",
            ConsentAction::Revoke => "revoke",
        }
    }
}

impl FromStr for ConsentAction {
    type Err = ParseError;

    fn from_str(raw: &str) -> Result<Self, ParseError> {
        match raw {
            "grant" => Ok(ConsentAction::Grant),
            "revoke" => Ok(ConsentAction::Revoke),
            _ => Err(ParseError::new(
                "consent action",
                format!("{raw:?} is not one of grant, revoke"),
            )),
        }
    }
}

/// One consent event as the gate sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct ConsentFact {
    /// Whose consent: `person:<id>` or `<kind>:<value>`; events of one subject form one stream.
    pub subject: String,
    pub purpose: Purpose,
    pub action: ConsentAction,
    pub occurred_at: Timestamp,
    /// The order the store recorded it in; breaks ties on `occurred_at`.
    pub recorded: i64,
    /// The event's id, reported as the evidence of a decision.
    pub event_id: String,
}

impl ConsentFact {
    fn order(&self) -> (Timestamp, i64) {
        (self.occurred_at, self.recorded)
    }
}

/// Where a suppression applies.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SuppressionScope {
    /// Every tenant of the deployment (e.g. a national do-not-call list).
    Global,
    Tenant,
    Workspace(String),
}

impl SuppressionScope {
    pub fn name(&self) -> &'static str {
        match self {
            SuppressionScope::Global => "global",
            SuppressionScope::Tenant => "tenant",
            SuppressionScope::Workspace(_) => "workspace",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SuppressionReason {
    OptOut,
    Dnc,
    Litigator,
    Bounce,
    Complaint,
    Erasure,
}

impl SuppressionReason {
    pub const ALL: [SuppressionReason; 6] = [
        SuppressionReason::OptOut,
        SuppressionReason::Dnc,
        SuppressionReason::Litigator,
        SuppressionReason::Bounce,
        SuppressionReason::Complaint,
        SuppressionReason::Erasure,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            SuppressionReason::OptOut => "opt_out",
            SuppressionReason::Dnc => "dnc",
            SuppressionReason::Litigator => "litigator",
            SuppressionReason::Bounce => "bounce",
            SuppressionReason::Complaint => "complaint",
            SuppressionReason::Erasure => "erasure",
        }
    }
}

impl FromStr for SuppressionReason {
    type Err = ParseError;

    fn from_str(raw: &str) -> Result<Self, ParseError> {
        SuppressionReason::ALL
            .into_iter()
            .find(|r| r.as_str() == raw)
            .ok_or_else(|| {
                ParseError::new(
                    "suppression reason",
                    format!(
                        "{raw:?} is not one of opt_out, dnc, litigator, bounce, complaint, erasure"
                    ),
                )
            })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SuppressionAction {
    Add,
    Lift,
}

/// One suppression add or lift of the checked address, at a scope that applies to the check.
#[derive(Debug, Clone, PartialEq)]
pub struct SuppressionFact {
    pub scope: SuppressionScope,
    pub reason: SuppressionReason,
    pub action: SuppressionAction,
    /// The order the store recorded it in: a lift undoes the adds recorded before it.
    pub recorded: i64,
    pub entry_id: String,
    pub at: Timestamp,
}

/// A past contact attempt of the checked address.
#[derive(Debug, Clone, PartialEq)]
pub struct ContactFact {
    pub at: Timestamp,
    pub vertical: Option<String>,
    pub contact_id: String,
}

/// A tenant's compliance rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ComplianceSettings {
    /// Purposes that need a current explicit grant before a contact.
    pub require_grant: BTreeSet<Purpose>,
    pub cooldown_same_vertical: SignedDuration,
    pub cooldown_cross_vertical: SignedDuration,
}

impl Default for ComplianceSettings {
    fn default() -> Self {
        Self {
            require_grant: BTreeSet::new(),
            cooldown_same_vertical: SignedDuration::from_hours(90 * 24),
            cooldown_cross_vertical: SignedDuration::from_hours(45 * 24),
        }
    }
}

impl ComplianceSettings {
    /// How far back (and ahead) contacts can matter to a check.
    pub fn longest_cooldown(&self) -> SignedDuration {
        self.cooldown_same_vertical
            .max(self.cooldown_cross_vertical)
    }

    pub fn validate(&self) -> Result<(), ParseError> {
        if self.cooldown_same_vertical.is_negative() || self.cooldown_cross_vertical.is_negative() {
            return Err(ParseError::new(
                "compliance settings",
                "cooldowns cannot be negative",
            ));
        }
        Ok(())
    }
}

/// What is being checked; `to` is `None` when the address did not parse for the channel.
#[derive(Debug, Clone)]
pub struct Check<'a> {
    pub purpose: &'a Purpose,
    pub vertical: Option<&'a str>,
    pub at: Timestamp,
    /// Why the address is invalid, when it is.
    pub invalid_address: Option<&'a str>,
}

/// Everything the store knows that bears on one check.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Facts {
    pub suppressions: Vec<SuppressionFact>,
    /// Consent events of every subject of the check (the address, and its person's members and
    /// identifiers), in any order.
    pub consent: Vec<ConsentFact>,
    /// Contacts of the address near the check's time, in any order.
    pub contacts: Vec<ContactFact>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ReasonCode {
    Suppressed,
    ConsentRevoked,
    ConsentMissing,
    Cooldown,
    InvalidAddress,
}

impl ReasonCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ReasonCode::Suppressed => "suppressed",
            ReasonCode::ConsentRevoked => "consent_revoked",
            ReasonCode::ConsentMissing => "consent_missing",
            ReasonCode::Cooldown => "cooldown",
            ReasonCode::InvalidAddress => "invalid_address",
        }
    }
}

/// One reason a contact is denied, with a sentence and the record behind it.
#[derive(Debug, Clone, PartialEq)]
pub struct Reason {
    pub code: ReasonCode,
    pub detail: String,
    /// The id of the suppression entry, consent event or contact that caused it, if any.
    pub evidence: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub allowed: bool,
    /// Every reason found, in a stable order; empty when allowed.
    pub reasons: Vec<Reason>,
}

/// The current state of one purpose for one subject: its latest event.
fn latest<'a>(
    facts: &'a [ConsentFact],
    subject: &str,
    purpose: &Purpose,
) -> Option<&'a ConsentFact> {
    facts
        .iter()
        .filter(|f| f.subject == subject && f.purpose == *purpose)
        .max_by_key(|f| f.order())
}

/// Evaluates one check. Pure: the same facts always give the same decision.
pub fn evaluate(settings: &ComplianceSettings, check: &Check<'_>, facts: &Facts) -> Decision {
    let mut reasons = Vec::new();
    if let Some(why) = check.invalid_address {
        reasons.push(Reason {
            code: ReasonCode::InvalidAddress,
            detail: why.to_owned(),
            evidence: None,
        });
    }
    suppression_reasons(facts, &mut reasons);
    consent_reasons(settings, check, facts, &mut reasons);
    cooldown_reasons(settings, check, facts, &mut reasons);
    Decision {
        allowed: reasons.is_empty(),
        reasons,
    }
}

fn suppression_reasons(facts: &Facts, reasons: &mut Vec<Reason>) {
    // Per (scope, reason), the latest add or lift decides.
    let mut last: BTreeMap<(&SuppressionScope, SuppressionReason), &SuppressionFact> =
        BTreeMap::new();
    for fact in &facts.suppressions {
        let slot = last.entry((&fact.scope, fact.reason)).or_insert(fact);
        if fact.recorded > slot.recorded {
            *slot = fact;
        }
    }
    for ((scope, reason), fact) in last {
        if fact.action == SuppressionAction::Add {
            let scope = match scope {
                SuppressionScope::Workspace(name) => format!("workspace {name}"),
                other => other.name().to_owned(),
            };
            reasons.push(Reason {
                code: ReasonCode::Suppressed,
                detail: format!(
                    "on the {scope} suppression list ({}) since {}",
                    reason.as_str(),
                    fact.at
                ),
                evidence: Some(fact.entry_id.clone()),
            });
        }
    }
}

fn consent_reasons(
    settings: &ComplianceSettings,
    check: &Check<'_>,
    facts: &Facts,
    reasons: &mut Vec<Reason>,
) {
    let channel = Purpose::channel_wide(check.purpose.channel());
    let subjects: BTreeSet<&str> = facts.consent.iter().map(|f| f.subject.as_str()).collect();
    let mut revoked: Vec<&ConsentFact> = Vec::new();
    let mut granted = false;
    for subject in &subjects {
        for purpose in [check.purpose, &channel] {
            if let Some(fact) = latest(&facts.consent, subject, purpose) {
                match fact.action {
                    ConsentAction::Revoke => revoked.push(fact),
                    // A channel-wide grant only undoes a channel-wide revoke.
                    ConsentAction::Grant if purpose == check.purpose => granted = true,
                    ConsentAction::Grant => {}
                }
            }
            if check.purpose.is_channel_wide() {
                break;
            }
        }
    }
    if !revoked.is_empty() {
        revoked.sort_by_key(|f| std::cmp::Reverse(f.order()));
        let fact = revoked[0];
        reasons.push(Reason {
            code: ReasonCode::ConsentRevoked,
            detail: format!(
                "{} revoked for {} at {}",
                fact.purpose, fact.subject, fact.occurred_at
            ),
            evidence: Some(fact.event_id.clone()),
        });
    } else if !granted && settings.require_grant.contains(check.purpose) {
        reasons.push(Reason {
            code: ReasonCode::ConsentMissing,
            detail: format!("{} needs an explicit grant and has none", check.purpose),
            evidence: None,
        });
    }
}

fn cooldown_reasons(
    settings: &ComplianceSettings,
    check: &Check<'_>,
    facts: &Facts,
    reasons: &mut Vec<Reason>,
) {
    let same = |contact: &ContactFact| match (check.vertical, contact.vertical.as_deref()) {
        (Some(ours), Some(theirs)) => ours == theirs,
        // Unknown on either side: assume the stricter window.
        _ => true,
    };
    let blocking = facts
        .contacts
        .iter()
        .filter(|contact| {
            let window = if same(contact) {
                settings.cooldown_same_vertical
            } else {
                settings.cooldown_cross_vertical
            };
            check.at.duration_since(contact.at).abs() < window
        })
        .max_by_key(|contact| contact.at);
    if let Some(contact) = blocking {
        let (window, which) = if same(contact) {
            (settings.cooldown_same_vertical, "same vertical")
        } else {
            (settings.cooldown_cross_vertical, "another vertical")
        };
        let until = contact.at.checked_add(window).unwrap_or(Timestamp::MAX);
        reasons.push(Reason {
            code: ReasonCode::Cooldown,
            detail: format!(
                "contacted at {} ({which}{}); cooldown of {} days until {until}",
                contact.at,
                contact
                    .vertical
                    .as_deref()
                    .map(|v| format!(": {v}"))
                    .unwrap_or_default(),
                window.as_hours() / 24
            ),
            evidence: Some(contact.contact_id.clone()),
        });
    }
}

/// What an inbound message's body asks for, read as carriers read keywords: the whole message,
/// ignoring case, white space and surrounding punctuation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keyword {
    Stop,
    Start,
}

impl Keyword {
    const STOP: [&'static str; 8] = [
        "STOP",
        "STOPALL",
        "UNSUBSCRIBE",
        "CANCEL",
        "END",
        "QUIT",
        "REVOKE",
        "OPTOUT",
    ];
    const START: [&'static str; 3] = ["START", "UNSTOP", "YES"];

    /// `None` for an ordinary message. Punctuation around the word ("Stop.") and inside it
    /// ("opt-out") still counts: missing an opt-out is the error that must not happen.
    pub fn of(body: &str) -> Option<Keyword> {
        let word: String = body
            .chars()
            .filter(|c| !c.is_whitespace() && !matches!(c, '-' | '_'))
            .flat_map(char::to_uppercase)
            .collect();
        let word = word.trim_matches(|c: char| c.is_ascii_punctuation());
        if Self::STOP.contains(&word) {
            Some(Keyword::Stop)
        } else if Self::START.contains(&word) {
            Some(Keyword::Start)
        } else {
            None
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Keyword::Stop => "stop",
            Keyword::Start => "start",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(day: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + day * 86_400).unwrap()
    }

    fn purpose(raw: &str) -> Purpose {
        Purpose::parse(raw).unwrap()
    }

    fn consent(
        subject: &str,
        p: &str,
        action: ConsentAction,
        day: i64,
        recorded: i64,
    ) -> ConsentFact {
        ConsentFact {
            subject: subject.into(),
            purpose: purpose(p),
            action,
            occurred_at: t(day),
            recorded,
            event_id: format!("c{recorded}"),
        }
    }

    fn check<'a>(p: &'a Purpose, vertical: Option<&'a str>, day: i64) -> Check<'a> {
        Check {
            purpose: p,
            vertical,
            at: t(day),
            invalid_address: None,
        }
    }

    fn codes(decision: &Decision) -> Vec<&'static str> {
        decision.reasons.iter().map(|r| r.code.as_str()).collect()
    }

    use ConsentAction::{Grant, Revoke};

    #[test]
    fn purposes_parse_with_a_channel() {
        assert_eq!(purpose("sms:marketing").channel(), Channel::Sms);
        assert!(purpose("email").is_channel_wide());
        for bad in ["", "fax:marketing", "sms:", "sms:Marketing", "marketing"] {
            assert!(Purpose::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn nothing_known_is_allowed_unless_a_grant_is_required() {
        let p = purpose("sms:marketing");
        let decision = evaluate(
            &ComplianceSettings::default(),
            &check(&p, None, 0),
            &Facts::default(),
        );
        assert!(decision.allowed);
        let strict = ComplianceSettings {
            require_grant: BTreeSet::from([p.clone()]),
            ..ComplianceSettings::default()
        };
        let decision = evaluate(&strict, &check(&p, None, 0), &Facts::default());
        assert_eq!(codes(&decision), ["consent_missing"]);
    }

    #[test]
    fn the_latest_event_of_a_subject_decides_and_ties_go_to_the_later_record() {
        let p = purpose("sms:marketing");
        let settings = ComplianceSettings::default();
        let facts = |events: Vec<ConsentFact>| Facts {
            consent: events,
            ..Facts::default()
        };
        let revoked_then_granted = facts(vec![
            consent("phone:+1", "sms:marketing", Revoke, 1, 1),
            consent("phone:+1", "sms:marketing", Grant, 2, 2),
        ]);
        assert!(evaluate(&settings, &check(&p, None, 3), &revoked_then_granted).allowed);
        // A grant recorded later but backdated before the revoke does not win.
        let backdated = facts(vec![
            consent("phone:+1", "sms:marketing", Revoke, 2, 1),
            consent("phone:+1", "sms:marketing", Grant, 1, 2),
        ]);
        assert_eq!(
            codes(&evaluate(&settings, &check(&p, None, 3), &backdated)),
            ["consent_revoked"]
        );
        let tie = facts(vec![
            consent("phone:+1", "sms:marketing", Grant, 2, 2),
            consent("phone:+1", "sms:marketing", Revoke, 2, 1),
        ]);
        assert!(evaluate(&settings, &check(&p, None, 3), &tie).allowed);
    }

    #[test]
    fn the_most_restrictive_subject_wins() {
        let p = purpose("sms:marketing");
        let facts = Facts {
            consent: vec![
                consent("person:a", "sms:marketing", Revoke, 1, 1),
                consent("person:b", "sms:marketing", Grant, 5, 2),
            ],
            ..Facts::default()
        };
        let decision = evaluate(&ComplianceSettings::default(), &check(&p, None, 6), &facts);
        assert_eq!(codes(&decision), ["consent_revoked"]);
        assert_eq!(decision.reasons[0].evidence.as_deref(), Some("c1"));
    }

    #[test]
    fn a_channel_stop_blocks_every_purpose_and_start_only_undoes_it() {
        let p = purpose("sms:marketing");
        let strict = ComplianceSettings {
            require_grant: BTreeSet::from([p.clone()]),
            ..ComplianceSettings::default()
        };
        let mut facts = Facts {
            consent: vec![
                consent("phone:+1", "sms:marketing", Grant, 1, 1),
                consent("phone:+1", "sms", Revoke, 2, 2),
            ],
            ..Facts::default()
        };
        assert_eq!(
            codes(&evaluate(&strict, &check(&p, None, 3), &facts)),
            ["consent_revoked"]
        );
        facts.consent.push(consent("phone:+1", "sms", Grant, 3, 3));
        assert!(evaluate(&strict, &check(&p, None, 4), &facts).allowed);
        // START alone is not consent to marketing.
        facts.consent.remove(0);
        assert_eq!(
            codes(&evaluate(&strict, &check(&p, None, 4), &facts)),
            ["consent_missing"]
        );
    }

    #[test]
    fn suppression_per_scope_and_reason_until_lifted() {
        let p = purpose("sms:marketing");
        let fact = |scope, reason, action, recorded| SuppressionFact {
            scope,
            reason,
            action,
            recorded,
            entry_id: format!("s{recorded}"),
            at: t(0),
        };
        use SuppressionAction::{Add, Lift};
        use SuppressionReason::{Dnc, OptOut};
        let mut facts = Facts {
            suppressions: vec![
                fact(SuppressionScope::Tenant, OptOut, Add, 1),
                fact(SuppressionScope::Global, Dnc, Add, 2),
                fact(SuppressionScope::Tenant, OptOut, Lift, 3),
            ],
            ..Facts::default()
        };
        let decision = evaluate(&ComplianceSettings::default(), &check(&p, None, 1), &facts);
        assert_eq!(codes(&decision), ["suppressed"]);
        assert!(decision.reasons[0].detail.contains("global"));
        facts
            .suppressions
            .push(fact(SuppressionScope::Global, Dnc, Lift, 4));
        assert!(evaluate(&ComplianceSettings::default(), &check(&p, None, 1), &facts).allowed);
        // Lifting one reason leaves another in place.
        facts.suppressions.push(fact(
            SuppressionScope::Workspace("web".into()),
            OptOut,
            Add,
            5,
        ));
        facts.suppressions.push(fact(
            SuppressionScope::Workspace("web".into()),
            Dnc,
            Lift,
            6,
        ));
        let decision = evaluate(&ComplianceSettings::default(), &check(&p, None, 1), &facts);
        assert!(decision.reasons[0].detail.contains("workspace web"));
    }

    #[test]
    fn cooldown_depends_on_the_vertical_and_looks_both_ways() {
        let p = purpose("sms:marketing");
        let settings = ComplianceSettings::default();
        let contact = |day: i64, vertical: Option<&str>| ContactFact {
            at: t(day),
            vertical: vertical.map(str::to_owned),
            contact_id: format!("k{day}"),
        };
        let cases = [
            (contact(0, Some("solar")), Some("solar"), 89, false),
            (contact(0, Some("solar")), Some("solar"), 90, true),
            (contact(0, Some("solar")), Some("roofing"), 44, false),
            (contact(0, Some("solar")), Some("roofing"), 45, true),
            (contact(0, None), Some("roofing"), 60, false),
            (contact(0, Some("solar")), None, 60, false),
            // A contact planned after the checked time counts too.
            (contact(30, Some("solar")), Some("solar"), 0, false),
        ];
        for (c, vertical, day, allowed) in cases {
            let facts = Facts {
                contacts: vec![c.clone()],
                ..Facts::default()
            };
            let decision = evaluate(&settings, &check(&p, vertical, day), &facts);
            assert_eq!(
                decision.allowed, allowed,
                "{c:?} checked on day {day} for {vertical:?}"
            );
            if !allowed {
                assert_eq!(codes(&decision), ["cooldown"]);
            }
        }
    }

    #[test]
    fn every_reason_is_reported() {
        let p = purpose("sms:marketing");
        let facts = Facts {
            suppressions: vec![SuppressionFact {
                scope: SuppressionScope::Tenant,
                reason: SuppressionReason::OptOut,
                action: SuppressionAction::Add,
                recorded: 1,
                entry_id: "s1".into(),
                at: t(0),
            }],
            consent: vec![consent("phone:+1", "sms", Revoke, 0, 1)],
            contacts: vec![ContactFact {
                at: t(0),
                vertical: None,
                contact_id: "k".into(),
            }],
        };
        let mut c = check(&p, None, 1);
        c.invalid_address = Some("not a phone number");
        let decision = evaluate(&ComplianceSettings::default(), &c, &facts);
        assert!(!decision.allowed);
        assert_eq!(
            codes(&decision),
            [
                "invalid_address",
                "suppressed",
                "consent_revoked",
                "cooldown"
            ]
        );
    }

    #[test]
    fn stop_and_start_keywords() {
        for stop in [
            "STOP",
            " stop ",
            "Stop.",
            "stop!",
            "STOPALL",
            "Unsubscribe",
            "cancel",
            "END",
            "quit",
            "revoke",
            "opt out",
            "OPT-OUT",
        ] {
            assert_eq!(Keyword::of(stop), Some(Keyword::Stop), "{stop:?}");
        }
        for start in ["START", "unstop", "Yes", " yes "] {
            assert_eq!(Keyword::of(start), Some(Keyword::Start), "{start:?}");
        }
        for other in [
            "please stop calling",
            "stop it",
            "yesterday",
            "",
            "STOP STOP now",
        ] {
            assert_eq!(Keyword::of(other), None, "{other:?}");
        }
    }
}
