//! Normalization of raw identifier values, and the blocked values that keep junk out of the graph.
//!
//! A value that fails is rejected with a reason; it is never silently changed into something
//! else, because a wrong identifier can glue two people together.

use std::fmt;
use std::str::FromStr;

use super::{Identifier, IdentifierKind, IdentitySettings};

/// Why a raw value did not become an identifier.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// The kind as the caller named it.
    pub kind: String,
    /// The value exactly as given.
    pub raw: String,
    pub reason: RejectReason,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RejectReason {
    /// A placeholder (`null`, `test@test.com`, an all-zero phone...) that would glue unrelated
    /// people together.
    Blocked,
    /// A sentence saying what is wrong, e.g. "missing domain".
    Invalid(String),
    /// The tenant has no such identifier kind.
    UnknownKind,
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Raw values can be huge (a pasted document); logs only need enough to recognize them.
        const SHOWN: usize = 80;
        let raw: String = self.raw.chars().take(SHOWN).collect();
        let ellipsis = if self.raw.chars().nth(SHOWN).is_some() {
            "…"
        } else {
            ""
        };
        match &self.reason {
            RejectReason::Blocked => write!(f, "{} {raw:?}{ellipsis} is blocked", self.kind),
            RejectReason::Invalid(reason) => {
                write!(f, "{} {raw:?}{ellipsis} is invalid: {reason}", self.kind)
            }
            RejectReason::UnknownKind => {
                write!(f, "{:?} is not a known identifier kind", self.kind)
            }
        }
    }
}

impl std::error::Error for Rejection {}

/// Placeholder values that are blocked for every kind, whatever the tenant configures, compared
/// case-insensitively with the trimmed raw value and with the normalized one. Whitespace-only
/// values trim to `""`. Phone numbers whose digits are all zeros are blocked too (see
/// [`IdentitySettings::normalize`]).
pub fn default_blocked_values() -> &'static [&'static str] {
    &[
        "",
        "null",
        "undefined",
        "nil",
        "none",
        "anonymous",
        "guest",
        "unknown",
        "0",
        "-1",
        "nan",
        "true",
        "false",
        "[object object]",
        "test@test.com",
        "n/a",
        "na",
    ]
}

const EMAIL_MAX_BYTES: usize = 254;
const EMAIL_LOCAL_MAX_BYTES: usize = 64;
const ID_MAX_CHARS: usize = 256;
/// Longer than any written phone number with punctuation; bounds the parser's work on junk.
const PHONE_MAX_CHARS: usize = 64;

impl IdentitySettings {
    /// Normalizes one raw value of a kind.
    ///
    /// - `email`: trimmed, lower-cased, then syntax-checked: exactly one `@`, a non-empty local
    ///   part of at most 64 bytes (no quoted local parts), a domain with a dot whose top-level
    ///   label is 2+ letters (or a punycode `xn--` label), no white space or control characters,
    ///   at most 254 bytes (RFC 5321 counts octets), and accepted by `email_address` without
    ///   display text or domain literals.
    /// - `phone`: only digits, spaces and `+ - . ( ) /` are accepted (no letters, so no vanity
    ///   numbers and no extensions, which an E.164 value could not keep); parsed with
    ///   `phonenumber` using `default_region` when there is no `+` country code; must be a valid
    ///   number; formatted E.164 (`+14155552671`).
    /// - every other kind (`external_id`, `anonymous_id`, custom kinds): trimmed, non-empty, at
    ///   most 256 characters, no control characters, case preserved.
    ///
    /// The blocked lists (built-in and the tenant's, for `"*"` and for this kind) are checked
    /// case-insensitively on the trimmed raw value **before** the syntax checks, so `"null"` as an
    /// email is reported as blocked rather than invalid, and again on the normalized value. A
    /// phone whose digits are all zeros (after a `+` country code, if any) is blocked.
    pub fn normalize(&self, kind: &str, raw: &str) -> Result<Identifier, Rejection> {
        let reject = |reason| Rejection {
            kind: kind.to_owned(),
            raw: raw.to_owned(),
            reason,
        };
        let Some((kind_key, _rule)) = self.kinds.get_key_value(kind) else {
            return Err(reject(RejectReason::UnknownKind));
        };
        let trimmed = raw.trim();
        if self.is_blocked(kind, trimmed) {
            return Err(reject(RejectReason::Blocked));
        }
        let value = match kind {
            IdentifierKind::EMAIL => normalize_email(trimmed),
            IdentifierKind::PHONE => normalize_phone(trimmed, &self.default_region),
            _ => normalize_id(trimmed),
        }
        .map_err(reject)?;
        if value != trimmed && self.is_blocked(kind, &value) {
            return Err(reject(RejectReason::Blocked));
        }
        Ok(Identifier {
            kind: kind_key.clone(),
            value,
        })
    }

    fn is_blocked(&self, kind: &str, value: &str) -> bool {
        let lowered = value.to_lowercase();
        if default_blocked_values().contains(&lowered.as_str()) {
            return true;
        }
        [Self::ALL_KINDS, kind]
            .into_iter()
            .filter_map(|key| self.blocked_values.get(key))
            .flatten()
            .any(|blocked| {
                blocked
                    .trim()
                    .chars()
                    .flat_map(char::to_lowercase)
                    .eq(lowered.chars())
            })
    }
}

fn invalid(reason: impl Into<String>) -> RejectReason {
    RejectReason::Invalid(reason.into())
}

fn normalize_email(trimmed: &str) -> Result<String, RejectReason> {
    if trimmed.chars().any(char::is_whitespace) {
        return Err(invalid("contains white space"));
    }
    if trimmed.chars().any(char::is_control) {
        return Err(invalid("contains control characters"));
    }
    let value = trimmed.to_lowercase();
    if value.len() > EMAIL_MAX_BYTES {
        return Err(invalid(format!("longer than {EMAIL_MAX_BYTES} bytes")));
    }
    let Some((local, domain)) = value.rsplit_once('@') else {
        return Err(invalid("missing '@'"));
    };
    if local.is_empty() {
        return Err(invalid("missing local part"));
    }
    if domain.is_empty() {
        return Err(invalid("missing domain"));
    }
    if local.contains('"') {
        return Err(invalid("quoted local parts are not accepted"));
    }
    if local.contains('@') {
        return Err(invalid("more than one '@'"));
    }
    if local.len() > EMAIL_LOCAL_MAX_BYTES {
        return Err(invalid(format!(
            "local part longer than {EMAIL_LOCAL_MAX_BYTES} bytes"
        )));
    }
    let Some((_, tld)) = domain.rsplit_once('.') else {
        return Err(invalid("domain has no dot"));
    };
    let tld_ok = (tld.chars().count() >= 2 && tld.chars().all(char::is_alphabetic))
        || (tld.len() > 4
            && tld.starts_with("xn--")
            && tld[4..]
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-'));
    if !tld_ok {
        return Err(invalid("the top-level domain must be at least two letters"));
    }
    let options = email_address::Options::default()
        .with_required_tld()
        .without_domain_literal()
        .without_display_text();
    email_address::EmailAddress::parse_with_options(&value, options)
        .map_err(|error| invalid(email_error_sentence(&error)))?;
    Ok(value)
}

fn email_error_sentence(error: &email_address::Error) -> String {
    use email_address::Error as E;
    match error {
        E::InvalidCharacter => "contains a character not allowed in an email address".to_owned(),
        E::MissingSeparator => "missing '@'".to_owned(),
        E::LocalPartEmpty => "missing local part".to_owned(),
        E::LocalPartTooLong => "local part too long".to_owned(),
        E::DomainEmpty => "missing domain".to_owned(),
        E::DomainTooLong => "domain too long".to_owned(),
        E::SubDomainEmpty | E::DomainInvalidSeparator => {
            "the domain has an empty label (two dots, or a dot at an end)".to_owned()
        }
        E::SubDomainTooLong => "a domain label is longer than 63 characters".to_owned(),
        E::DomainTooFew => "domain has no dot".to_owned(),
        other => format!("not an email address ({other})"),
    }
}

fn normalize_phone(trimmed: &str, default_region: &str) -> Result<String, RejectReason> {
    if trimmed.chars().count() > PHONE_MAX_CHARS {
        return Err(invalid(format!("longer than {PHONE_MAX_CHARS} characters")));
    }
    let allowed = |c: char| c.is_ascii_digit() || " +-.()/".contains(c);
    if let Some(bad) = trimmed.chars().find(|c| !allowed(*c)) {
        return Err(invalid(format!(
            "contains {bad:?}; a phone number may only hold digits, spaces and + - . ( ) /"
        )));
    }
    if trimmed.rfind('+').is_some_and(|at| at > 0) {
        return Err(invalid("'+' may only start the number"));
    }
    if is_all_zeros(trimmed) {
        return Err(RejectReason::Blocked);
    }
    let region = phonenumber::country::Id::from_str(default_region).map_err(|_| {
        invalid(format!(
            "the tenant's default region {default_region:?} is not a known region"
        ))
    })?;
    let number = phonenumber::parse(Some(region), trimmed).map_err(|error| {
        use phonenumber::ParseError as E;
        invalid(match error {
            E::NoNumber | E::MalformedInteger(_) => "not a phone number".to_owned(),
            E::InvalidCountryCode => "unknown country code".to_owned(),
            E::TooShortAfterIdd | E::TooShortNsn => "too short".to_owned(),
            E::TooLong => "too long".to_owned(),
        })
    })?;
    if number.extension().is_some() {
        return Err(invalid("has an extension, which an identifier cannot keep"));
    }
    if !super::phone::is_valid(&number) {
        return Err(invalid(format!(
            "not a valid number (read with default region {default_region})"
        )));
    }
    Ok(number.format().mode(phonenumber::Mode::E164).to_string())
}

/// Whether a phone number is all zeros: every digit, or every digit after a `+` country code.
fn is_all_zeros(phone: &str) -> bool {
    let digits: Vec<u8> = phone.bytes().filter(u8::is_ascii_digit).collect();
    if digits.is_empty() {
        return false;
    }
    if phone.starts_with('+') {
        // Country codes are prefix-free, so at most one length matches a known code.
        for code_len in 1..=3.min(digits.len() - 1) {
            let code = digits[..code_len]
                .iter()
                .fold(0u16, |code, d| code * 10 + u16::from(d - b'0'));
            if phonenumber::metadata::DATABASE.by_code(&code).is_some() {
                return digits[code_len..].iter().all(|d| *d == b'0');
            }
        }
    }
    digits.iter().all(|d| *d == b'0')
}

fn normalize_id(trimmed: &str) -> Result<String, RejectReason> {
    if trimmed.is_empty() {
        return Err(invalid("empty"));
    }
    if trimmed.chars().nth(ID_MAX_CHARS).is_some() {
        return Err(invalid(format!("longer than {ID_MAX_CHARS} characters")));
    }
    if trimmed.chars().any(char::is_control) {
        return Err(invalid("contains control characters"));
    }
    Ok(trimmed.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_zero_detection_skips_the_country_code() {
        for zeros in [
            "0",
            "000-000-0000",
            "+1 000-000-0000",
            "+44 0000 000000",
            "+0",
        ] {
            assert!(is_all_zeros(zeros), "{zeros}");
        }
        for number in [
            "+49 30 0000000",
            "+1 415 555 2671",
            "(415) 000-0000",
            "+",
            "",
        ] {
            assert!(!is_all_zeros(number), "{number}");
        }
    }

    #[test]
    fn rejections_read_as_sentences() {
        let rejection = Rejection {
            kind: "email".to_owned(),
            raw: "foo@".to_owned(),
            reason: RejectReason::Invalid("missing domain".to_owned()),
        };
        assert_eq!(
            rejection.to_string(),
            r#"email "foo@" is invalid: missing domain"#
        );
        let long = Rejection {
            kind: "external_id".to_owned(),
            raw: "x".repeat(500),
            reason: RejectReason::Blocked,
        };
        assert!(long.to_string().ends_with("… is blocked"));
        assert!(long.to_string().len() < 120);
    }
}
