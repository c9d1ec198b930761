//! Webhook rules: the event types, the `whsec_` secret format, Standard Webhooks signatures,
//! endpoint URLs and the retry schedule.
//!
//! Signatures follow the Standard Webhooks spec so that its published verifiers (in every
//! language) accept our deliveries unchanged: HMAC-SHA256 over `<id>.<timestamp>.<body>`,
//! keyed with the secret's bytes, sent as `v1,<base64>`.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{KeyInit, Mac};
use sha2::Sha256;

use crate::ParseError;

/// What a subscription can ask to be told about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EventType {
    PersonCreated,
    PersonMerged,
    /// A merge was undone (`POST /api/v1/persons/{id}/unmerge`).
    PersonUnmerged,
    PersonDeleted,
    ConsentChanged,
    SuppressionAdded,
    ImportCompleted,
    MessageInbound,
}

impl EventType {
    pub const ALL: [EventType; 8] = [
        EventType::PersonCreated,
        EventType::PersonMerged,
        EventType::PersonUnmerged,
        EventType::PersonDeleted,
        EventType::ConsentChanged,
        EventType::SuppressionAdded,
        EventType::ImportCompleted,
        EventType::MessageInbound,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventType::PersonCreated => "person.created",
            EventType::PersonMerged => "person.merged",
            EventType::PersonUnmerged => "person.unmerged",
            EventType::PersonDeleted => "person.deleted",
            EventType::ConsentChanged => "consent.changed",
            EventType::SuppressionAdded => "suppression.added",
            EventType::ImportCompleted => "import.completed",
            EventType::MessageInbound => "message.inbound",
        }
    }
}

impl fmt::Display for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for EventType {
    type Err = ParseError;

    fn from_str(raw: &str) -> Result<Self, ParseError> {
        EventType::ALL
            .into_iter()
            .find(|t| t.as_str() == raw)
            .ok_or_else(|| {
                let known: Vec<&str> = EventType::ALL.iter().map(|t| t.as_str()).collect();
                ParseError::new(
                    "event type",
                    format!("unknown event type {raw:?}; known: {}", known.join(", ")),
                )
            })
    }
}

/// The prefix of a webhook secret, as Standard Webhooks defines it.
pub const SECRET_PREFIX: &str = "whsec_";
/// Fewer random bytes than this would make the HMAC key guessable; the spec asks for 24 to 64.
pub const MIN_SECRET_BYTES: usize = 24;

/// A signing secret: random bytes, shown to the user once as `whsec_<base64>`.
#[derive(Clone, PartialEq, Eq)]
pub struct WebhookSecret(Vec<u8>);

impl WebhookSecret {
    /// Wraps fresh random bytes; refuses fewer than [`MIN_SECRET_BYTES`] or more than 64.
    pub fn from_bytes(bytes: Vec<u8>) -> Result<Self, ParseError> {
        if !(MIN_SECRET_BYTES..=64).contains(&bytes.len()) {
            return Err(ParseError::new(
                "webhook secret",
                format!("must be {MIN_SECRET_BYTES} to 64 bytes"),
            ));
        }
        Ok(Self(bytes))
    }

    /// Reads the `whsec_<base64>` form.
    pub fn parse(raw: &str) -> Result<Self, ParseError> {
        let encoded = raw
            .strip_prefix(SECRET_PREFIX)
            .ok_or_else(|| ParseError::new("webhook secret", "must start with whsec_"))?;
        let bytes = STANDARD
            .decode(encoded)
            .map_err(|e| ParseError::new("webhook secret", format!("not base64: {e}")))?;
        Self::from_bytes(bytes)
    }

    pub fn bytes(&self) -> &[u8] {
        &self.0
    }

    /// The form given to the user, the one Standard Webhooks verifiers take.
    pub fn expose(&self) -> String {
        format!("{SECRET_PREFIX}{}", STANDARD.encode(&self.0))
    }

    /// The `webhook-signature` header value for a message.
    pub fn sign(&self, message_id: &str, timestamp: i64, body: &[u8]) -> String {
        let mut mac = <hmac::Hmac<Sha256> as KeyInit>::new_from_slice(&self.0)
            .expect("HMAC takes keys of any length");
        mac.update(message_id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
    }
}

impl fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("WebhookSecret(<redacted>)")
    }
}

/// An endpoint URL: absolute `http` or `https`, with a host, no credentials in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointUrl(String);

impl EndpointUrl {
    pub fn parse(raw: &str) -> Result<Self, ParseError> {
        let fail = |reason: &str| ParseError::new("webhook url", reason.to_owned());
        let raw = raw.trim();
        if raw.len() > 2048 {
            return Err(fail("must be at most 2048 characters"));
        }
        if raw.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(fail("must not contain spaces or control characters"));
        }
        let (scheme, rest) = raw
            .split_once("://")
            .ok_or_else(|| fail("must be an absolute http:// or https:// URL"))?;
        if !scheme.eq_ignore_ascii_case("http") && !scheme.eq_ignore_ascii_case("https") {
            return Err(fail("must use http or https"));
        }
        let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
        if authority.contains('@') {
            return Err(fail("must not carry credentials"));
        }
        let host = match authority.strip_prefix('[') {
            Some(v6) => v6.split(']').next().unwrap_or_default(),
            None => authority.rsplit_once(':').map_or(authority, |(h, _)| h),
        };
        if host.is_empty() {
            return Err(fail("must name a host"));
        }
        if let Some((_, port)) = authority.rsplit_once(':')
            && !authority.ends_with(']')
            && port.parse::<u16>().is_err()
        {
            return Err(fail("has an invalid port"));
        }
        Ok(Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// When failed deliveries are tried again: exponential backoff from `base`, capped, with
/// jitter, until `window` after the message was created, then the message fails for good.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetrySchedule {
    pub base: Duration,
    /// The longest wait between two attempts.
    pub cap: Duration,
    /// How long after its creation a message is still tried.
    pub window: Duration,
}

impl Default for RetrySchedule {
    /// 5 s, 20 s, 80 s, ~5 min, ~21 min, ~85 min, ~5.7 h, then every 12 h: about 3 days in all.
    fn default() -> Self {
        Self {
            base: Duration::from_secs(5),
            cap: Duration::from_secs(12 * 3600),
            window: Duration::from_secs(3 * 24 * 3600),
        }
    }
}

impl RetrySchedule {
    /// The wait after failed attempt number `attempt` (1 = the first). `jitter` in `[0, 1)`
    /// spreads the wait over ±20 % so that endpoints recovering from an outage are not hit by
    /// every queued message at the same instant.
    pub fn delay(&self, attempt: u32, jitter: f64) -> Duration {
        let exponent = attempt.saturating_sub(1).min(20);
        let plain = self
            .base
            .saturating_mul(4u32.saturating_pow(exponent))
            .min(self.cap);
        plain.mul_f64(0.8 + 0.4 * jitter.clamp(0.0, 1.0))
    }

    /// Whether a message `age` old, whose next attempt would come after `wait`, is still tried.
    pub fn retries(&self, age: Duration, wait: Duration) -> bool {
        age.saturating_add(wait) <= self.window
    }
}

/// What a delivery attempt's HTTP outcome means for the endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptVerdict {
    Delivered,
    /// Try again later.
    Retry,
    /// The receiver said the endpoint is gone (410): stop sending to it.
    Disable,
}

/// 2xx delivers; 410 Gone disables the endpoint (the Standard Webhooks convention); everything
/// else, including redirects (which are never followed), is retried.
pub fn verdict(status: Option<u16>) -> AttemptVerdict {
    match status {
        Some(200..=299) => AttemptVerdict::Delivered,
        Some(410) => AttemptVerdict::Disable,
        _ => AttemptVerdict::Retry,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_types_round_trip_and_unknown_ones_are_named() {
        for event in EventType::ALL {
            assert_eq!(event.as_str().parse::<EventType>(), Ok(event));
        }
        let error = "person.updated".parse::<EventType>().unwrap_err();
        assert!(error.reason.contains("person.updated"), "{error}");
    }

    #[test]
    fn signatures_match_the_standard_webhooks_reference_vector() {
        // The example published with the Standard Webhooks reference implementations.
        let secret = WebhookSecret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let body = b"{\"test\": 2432232314}";
        let signed = secret.sign("msg_p5jXN8AQM9LWM0D4loKWxJek", 1_614_265_330, body);
        assert_eq!(signed, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
        assert_eq!(secret.expose(), "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw");
        assert_ne!(signed, secret.sign("msg_other", 1_614_265_330, body));
        assert_ne!(
            signed,
            secret.sign("msg_p5jXN8AQM9LWM0D4loKWxJek", 1_614_265_331, body)
        );
    }

    #[test]
    fn short_secrets_are_refused() {
        assert!(WebhookSecret::from_bytes(vec![7; 23]).is_err());
        assert!(WebhookSecret::from_bytes(vec![7; 24]).is_ok());
        assert!(WebhookSecret::parse("nope_AAAA").is_err());
    }

    #[test]
    fn urls_must_be_absolute_http() {
        for ok in [
            "http://127.0.0.1:9000/hook",
            "https://example.com",
            "https://[::1]:8443/x?y=1",
        ] {
            assert!(EndpointUrl::parse(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "example.com/hook",
            "ftp://example.com",
            "https://",
            "https://user:pw@example.com/",
            "http://exa mple.com",
            "http://example.com:99999/",
            "/relative/path",
        ] {
            assert!(EndpointUrl::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_default_schedule_spans_about_three_days() {
        let schedule = RetrySchedule::default();
        let mut age = Duration::ZERO;
        let mut attempts = 1;
        loop {
            let wait = schedule.delay(attempts, 0.5);
            if !schedule.retries(age, wait) {
                break;
            }
            age += wait;
            attempts += 1;
        }
        assert!(age > Duration::from_secs(60 * 3600), "{age:?}");
        assert!(age <= Duration::from_secs(72 * 3600), "{age:?}");
        assert!((10..=20).contains(&attempts), "{attempts}");
        assert_eq!(schedule.delay(1, 0.5), Duration::from_secs(5));
        assert_eq!(schedule.delay(2, 0.5), Duration::from_secs(20));
        assert_eq!(schedule.delay(1, 0.0), Duration::from_secs(4));
        assert_eq!(schedule.delay(30, 0.5), Duration::from_secs(12 * 3600));
    }

    #[test]
    fn only_2xx_delivers_and_410_disables() {
        assert_eq!(verdict(Some(204)), AttemptVerdict::Delivered);
        assert_eq!(verdict(Some(410)), AttemptVerdict::Disable);
        assert_eq!(verdict(Some(301)), AttemptVerdict::Retry);
        assert_eq!(verdict(Some(500)), AttemptVerdict::Retry);
        assert_eq!(verdict(None), AttemptVerdict::Retry);
    }
}
