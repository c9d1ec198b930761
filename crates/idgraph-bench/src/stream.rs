//! The synthetic Segment message stream: deterministic from a seed, with the identity churn of a
//! real site (anonymous visitors who later give an email, then a user id; second devices of known
//! people that merge into them) and, for the timeline workload, a few very active "big" persons.
//!
//! Who sends what, in which order, is fixed by the seed; only the timestamps follow the clock
//! (the stream spans the 30 days before `anchor`), so the server sees plausible times.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io::Write;

use anyhow::Context;
use jiff::Timestamp;
use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};
use serde::Serialize;
use serde_json::{Value, json};

/// Events each big person gets in the timeline workload.
pub(crate) const BIG_EVENTS_PER_PERSON: u64 = 10_000;

/// Visitors being interleaved at any time. Consecutive messages of one visitor end up about this
/// many messages apart, i.e. usually in different batches, as with real traffic. Short streams
/// use fewer, so that they too reach the advertised mix instead of ending while warming up.
fn active_sessions(events: u64) -> usize {
    usize::try_from((events / 50).clamp(16, 1024)).unwrap_or(1024)
}

/// A second device starts this many messages after its person's email became known, and
/// identifies at least the start of this range after its last anonymous message: in long streams
/// well beyond the messages in flight (100 x 16 by default), whose batches the server may process
/// in any order. Short streams scale it down to keep their merges.
fn second_device_delay(events: u64) -> std::ops::RangeInclusive<u64> {
    let start = (events / 20).clamp(1, 5_000);
    let end = (events / 5).clamp(start, 20_000);
    start..=end
}

/// The lifecycle mix. With these, a visitor sends 5 messages on average (so ~200k persons per 1M
/// messages) and a quarter of visitors have a second device whose identify causes a merge
/// (0.25 of 5 messages: 5% of all messages). `tests::mix_matches_the_advertised_rates` keeps the
/// arithmetic honest.
const P_GIVES_EMAIL: f64 = 0.6;
const P_GIVES_USER_ID: f64 = 0.5;
const P_SECOND_DEVICE: f64 = 5.0 / 12.0;

const SPAN_MILLIS: i64 = 30 * 24 * 3600 * 1000;

const TRACK_EVENTS: [&str; 6] = [
    "Product Viewed",
    "Product Added",
    "Checkout Started",
    "Order Completed",
    "Video Played",
    "Search Performed",
];
const PAGES: [(&str, &str); 5] = [
    ("Home", "/"),
    ("Pricing", "/pricing"),
    ("Docs", "/docs/getting-started"),
    ("Blog", "/blog/identity-resolution"),
    ("Checkout", "/checkout"),
];
const CATEGORIES: [&str; 4] = ["books", "garden", "kitchen", "outdoor"];
const PLANS: [&str; 3] = ["free", "team", "enterprise"];

/// What to generate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StreamSpec {
    pub(crate) events: u64,
    pub(crate) seed: u64,
    /// Persons with fixed user ids `big-0`.. that get `big_events_each` track events each, spread
    /// evenly over the stream.
    pub(crate) big_persons: u32,
    pub(crate) big_events_each: u64,
}

impl StreamSpec {
    pub(crate) fn big_events(&self) -> u64 {
        u64::from(self.big_persons) * self.big_events_each
    }
}

/// Counts of what a stream contained, to print next to the figures.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct StreamStats {
    pub(crate) messages: u64,
    pub(crate) tracks: u64,
    pub(crate) pages: u64,
    pub(crate) identifies: u64,
    /// Distinct people started (first devices); second devices are not counted again.
    pub(crate) visitors: u64,
    pub(crate) second_devices: u64,
    /// Identifies of a second device with its person's known email: each merges two persons.
    pub(crate) merge_signals: u64,
    pub(crate) big_person_messages: u64,
}

impl StreamStats {
    /// Persons the graph should hold afterwards: every visitor and big person, plus second
    /// devices that never got to identify.
    pub(crate) fn expected_persons(&self, big_persons: u32) -> u64 {
        self.visitors + self.second_devices - self.merge_signals + u64::from(big_persons)
    }
}

/// One request body for `/v1/batch`.
#[derive(Debug)]
pub(crate) struct Batch {
    pub(crate) body: Vec<u8>,
    pub(crate) messages: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// A page or track call with the anonymous id only.
    Browse,
    /// identify with anonymousId and traits.email; on a second device this is the merge.
    IdentifyEmail,
    /// identify with userId, anonymousId and traits.email.
    IdentifyUserId,
    /// A page or track call with userId and anonymousId, as Segment clients send after identify.
    BrowseAsUser,
}

#[derive(Debug)]
struct Session {
    visitor: u64,
    second_device: bool,
    will_have_second_device: bool,
    /// A second device's browsing, whose identify is scheduled separately when it ends.
    identify_later: bool,
    /// Remaining steps, last one first (so `pop` yields the next).
    steps: Vec<Step>,
}

/// Parts of a second device's life waiting for their start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Pending {
    /// Anonymous browsing, after the person's email became known.
    SecondDeviceBrowses,
    /// The identify that merges the device's person into the known one, well after its browsing:
    /// batches in flight are processed in any order, and an identify handled before the device's
    /// first message would find no second person to merge.
    SecondDeviceIdentifies,
}

/// Generates the stream message by message; cheap to create, so each measured run makes its own.
#[derive(Debug)]
pub(crate) struct MessageStream {
    spec: StreamSpec,
    rng: SmallRng,
    anchor_millis: i64,
    emitted: u64,
    big_emitted: u64,
    next_visitor: u64,
    active: Vec<Session>,
    /// Second devices waiting for their start: the message index they may start at, the visitor.
    delayed: BinaryHeap<Reverse<(u64, u64, Pending)>>,
    stats: StreamStats,
    merge_emails: Vec<String>,
    active_sessions: usize,
    second_device_delay: std::ops::RangeInclusive<u64>,
}

/// How many merge emails to keep for spot checks after the load.
const MERGE_SAMPLES: usize = 20;

impl MessageStream {
    pub(crate) fn new(spec: StreamSpec, anchor: Timestamp) -> Self {
        let visitor_messages = spec.events.saturating_sub(spec.big_events());
        Self {
            active_sessions: active_sessions(visitor_messages),
            second_device_delay: second_device_delay(visitor_messages),
            rng: SmallRng::seed_from_u64(spec.seed),
            spec,
            anchor_millis: anchor.as_millisecond(),
            emitted: 0,
            big_emitted: 0,
            next_visitor: 0,
            active: Vec::new(),
            delayed: BinaryHeap::new(),
            stats: StreamStats::default(),
            merge_emails: Vec::new(),
        }
    }

    pub(crate) fn stats(&self) -> &StreamStats {
        &self.stats
    }

    /// Emails whose identify merged a second device into a known person (the first few).
    pub(crate) fn merge_emails(&self) -> &[String] {
        &self.merge_emails
    }

    pub(crate) fn is_done(&self) -> bool {
        self.emitted >= self.spec.events
    }

    /// The next batches, up to `max_messages` messages in all, as ready-to-send bodies.
    pub(crate) fn next_batches(
        &mut self,
        max_messages: u64,
        batch_size: usize,
        sent_at: Timestamp,
    ) -> anyhow::Result<Vec<Batch>> {
        let sent_at = sent_at.to_string();
        let mut batches = Vec::new();
        let mut taken = 0u64;
        while taken < max_messages && !self.is_done() {
            let mut body = Vec::with_capacity(batch_size * 360 + 64);
            body.extend_from_slice(b"{\"batch\":[");
            let mut messages = 0u32;
            while (messages as usize) < batch_size && taken < max_messages {
                let Some(message) = self.next_message() else {
                    break;
                };
                if messages > 0 {
                    body.push(b',');
                }
                serde_json::to_writer(&mut body, &message).context("cannot serialize a message")?;
                messages += 1;
                taken += 1;
            }
            write!(body, "],\"sentAt\":\"{sent_at}\"}}").context("cannot finish a batch body")?;
            batches.push(Batch { body, messages });
        }
        Ok(batches)
    }

    /// The next message, or `None` at the end of the stream.
    pub(crate) fn next_message(&mut self) -> Option<Value> {
        if self.is_done() {
            return None;
        }
        let index = self.emitted;
        let remaining = self.spec.events - index;
        let big_left = self.spec.big_events().saturating_sub(self.big_emitted);
        // Selection sampling: exactly `big_events()` big messages, evenly spread.
        let message = if big_left > 0
            && (big_left >= remaining || self.rng.random_range(0..remaining) < big_left)
        {
            self.big_message(index)
        } else {
            self.visitor_message(index)
        };
        self.emitted += 1;
        self.stats.messages += 1;
        Some(message)
    }

    fn timestamp(&self, index: u64) -> String {
        let offset = i128::from(SPAN_MILLIS) * i128::from(index) / i128::from(self.spec.events);
        let millis = self.anchor_millis - SPAN_MILLIS + offset as i64;
        Timestamp::from_millisecond(millis)
            .unwrap_or(Timestamp::UNIX_EPOCH)
            .to_string()
    }

    fn big_message(&mut self, index: u64) -> Value {
        let person = self.big_emitted % u64::from(self.spec.big_persons);
        self.big_emitted += 1;
        self.stats.big_person_messages += 1;
        self.stats.tracks += 1;
        let event = TRACK_EVENTS[self.rng.random_range(0..TRACK_EVENTS.len())];
        json!({
            "type": "track",
            "messageId": message_id(index),
            "userId": format!("big-{person}"),
            "event": event,
            "properties": self.track_properties(),
            "timestamp": self.timestamp(index),
        })
    }

    fn visitor_message(&mut self, index: u64) -> Value {
        if self.active.len() < self.active_sessions {
            // Filling the pool at the start, or after sessions ended without a replacement.
            let session = self.next_session(index);
            self.active.push(session);
        }
        let slot = self.rng.random_range(0..self.active.len());
        let session = &mut self.active[slot];
        let step = session.steps.pop().unwrap_or(Step::Browse);
        let (visitor, second_device, will_have_second_device) = (
            session.visitor,
            session.second_device,
            session.will_have_second_device,
        );
        if session.steps.is_empty() {
            if session.identify_later {
                let gap = *self.second_device_delay.start();
                let delay = self.rng.random_range(gap..=2 * gap);
                self.delayed.push(Reverse((
                    index + delay,
                    visitor,
                    Pending::SecondDeviceIdentifies,
                )));
            }
            let next = self.next_session(index);
            self.active[slot] = next;
        }
        if step == Step::IdentifyEmail {
            if second_device {
                self.stats.merge_signals += 1;
                if self.merge_emails.len() < MERGE_SAMPLES {
                    self.merge_emails.push(email(visitor));
                }
            } else if will_have_second_device {
                let delay = self.rng.random_range(self.second_device_delay.clone());
                self.delayed.push(Reverse((
                    index + delay,
                    visitor,
                    Pending::SecondDeviceBrowses,
                )));
            }
        }
        self.render(index, step, visitor, second_device)
    }

    /// A waiting second device if its time has come, else a new visitor.
    fn next_session(&mut self, index: u64) -> Session {
        if let Some(Reverse((start, visitor, pending))) = self.delayed.peek().copied()
            && start <= index
        {
            self.delayed.pop();
            let steps = match pending {
                Pending::SecondDeviceBrowses => {
                    self.stats.second_devices += 1;
                    vec![Step::Browse; self.rng.random_range(1..=2)]
                }
                Pending::SecondDeviceIdentifies => {
                    let mut steps = vec![Step::Browse; self.rng.random_range(0..=1)];
                    steps.push(Step::IdentifyEmail);
                    steps
                }
            };
            return Session {
                visitor,
                second_device: true,
                will_have_second_device: false,
                identify_later: pending == Pending::SecondDeviceBrowses,
                steps,
            };
        }
        let visitor = self.next_visitor;
        self.next_visitor += 1;
        self.stats.visitors += 1;
        let mut steps = vec![Step::Browse; self.rng.random_range(1..=3)];
        let mut will_have_second_device = false;
        if self.rng.random_bool(P_GIVES_EMAIL) {
            steps.push(Step::IdentifyEmail);
            steps.extend(std::iter::repeat_n(
                Step::Browse,
                self.rng.random_range(0..=3),
            ));
            will_have_second_device = self.rng.random_bool(P_SECOND_DEVICE);
            if self.rng.random_bool(P_GIVES_USER_ID) {
                steps.push(Step::IdentifyUserId);
                steps.extend(std::iter::repeat_n(
                    Step::BrowseAsUser,
                    self.rng.random_range(0..=3),
                ));
            }
        }
        steps.reverse();
        Session {
            visitor,
            second_device: false,
            will_have_second_device,
            identify_later: false,
            steps,
        }
    }

    fn render(&mut self, index: u64, step: Step, visitor: u64, second_device: bool) -> Value {
        let anonymous_id = anonymous_id(self.spec.seed, visitor, second_device);
        let timestamp = self.timestamp(index);
        match step {
            Step::Browse | Step::BrowseAsUser => {
                let mut message = self.browse_message(index, timestamp, anonymous_id);
                if step == Step::BrowseAsUser {
                    message["userId"] = Value::String(user_id(visitor));
                }
                message
            }
            Step::IdentifyEmail | Step::IdentifyUserId => {
                self.stats.identifies += 1;
                // Second devices type the address their own way: normalization must unify it.
                let email = if second_device {
                    shouted_email(visitor)
                } else {
                    email(visitor)
                };
                let plan = PLANS[self.rng.random_range(0..PLANS.len())];
                let mut message = json!({
                    "type": "identify",
                    "messageId": message_id(index),
                    "anonymousId": anonymous_id,
                    "traits": {"email": email, "plan": plan, "first_name": format!("Visitor {visitor}")},
                    "timestamp": timestamp,
                });
                if step == Step::IdentifyUserId {
                    message["userId"] = Value::String(user_id(visitor));
                }
                message
            }
        }
    }

    fn browse_message(&mut self, index: u64, timestamp: String, anonymous_id: String) -> Value {
        if self.rng.random_bool(0.6) {
            self.stats.pages += 1;
            let (name, path) = PAGES[self.rng.random_range(0..PAGES.len())];
            json!({
                "type": "page",
                "messageId": message_id(index),
                "anonymousId": anonymous_id,
                "name": name,
                "properties": {
                    "path": path,
                    "url": format!("https://shop.example.com{path}"),
                    "title": name,
                    "referrer": "https://www.google.com/",
                },
                "timestamp": timestamp,
            })
        } else {
            self.stats.tracks += 1;
            let event = TRACK_EVENTS[self.rng.random_range(0..TRACK_EVENTS.len())];
            json!({
                "type": "track",
                "messageId": message_id(index),
                "anonymousId": anonymous_id,
                "event": event,
                "properties": self.track_properties(),
                "timestamp": timestamp,
            })
        }
    }

    fn track_properties(&mut self) -> Value {
        let cents: u32 = self.rng.random_range(199..=19_999);
        json!({
            "product_id": format!("p-{}", self.rng.random_range(0..5_000u32)),
            "category": CATEGORIES[self.rng.random_range(0..CATEGORIES.len())],
            "price": f64::from(cents) / 100.0,
            "currency": "USD",
        })
    }
}

fn message_id(index: u64) -> String {
    format!("bench-{index:010}")
}

fn user_id(visitor: u64) -> String {
    format!("user-{visitor}")
}

/// The address as the first device sends it (already normalized).
/// A name-like address, unique per visitor. Visitors arrive in number order; their addresses
/// must not, or a store keyed by the plain address would get a locality real traffic never
/// gives it (and a store keyed by a blind index never has).
pub(crate) fn email(visitor: u64) -> String {
    let h = splitmix64(visitor ^ 0x5EED_E3A1);
    let first = FIRST_NAMES[(h % FIRST_NAMES.len() as u64) as usize];
    let last = LAST_NAMES[((h >> 16) % LAST_NAMES.len() as u64) as usize];
    format!("{first}.{last}{visitor}@example{}.com", visitor % 97)
}

/// The same address as [`email`], typed with capitals: normalization must unify them.
fn shouted_email(visitor: u64) -> String {
    let address = email(visitor);
    let (local, domain) = address.split_once('@').unwrap_or((&address, ""));
    let mut chars = local.chars();
    let initial = chars
        .next()
        .map(|c| c.to_ascii_uppercase())
        .unwrap_or_default();
    format!(
        "{initial}{}@{}",
        chars.as_str(),
        domain.to_ascii_uppercase()
    )
}

const FIRST_NAMES: [&str; 16] = [
    "ann", "bob", "carla", "dev", "emma", "farid", "grace", "hiro", "ines", "jon", "kate", "luis",
    "mia", "noor", "omar", "pia",
];
const LAST_NAMES: [&str; 16] = [
    "adams", "baker", "chen", "diaz", "evans", "fischer", "garcia", "hill", "ito", "jones", "khan",
    "lee", "moreau", "nguyen", "okafor", "petrov",
];

/// A UUID-shaped id, so message sizes and index keys look like real client traffic.
fn anonymous_id(seed: u64, visitor: u64, second_device: bool) -> String {
    let a =
        splitmix64(seed ^ visitor.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ u64::from(second_device));
    let b = splitmix64(a);
    format!(
        "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0xfff,
        b >> 52,
        b & 0xffff_ffff_ffff
    )
}

fn splitmix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

#[cfg(test)]
mod tests {
    use std::collections::{HashMap, HashSet};

    use super::*;

    fn spec(events: u64) -> StreamSpec {
        StreamSpec {
            events,
            seed: 42,
            big_persons: 0,
            big_events_each: 0,
        }
    }

    fn anchor() -> Timestamp {
        "2026-01-01T00:00:00Z".parse().unwrap()
    }

    fn all_batches(spec: StreamSpec, batch_size: usize) -> (Vec<Batch>, MessageStream) {
        let mut stream = MessageStream::new(spec, anchor());
        let batches = stream.next_batches(u64::MAX, batch_size, anchor()).unwrap();
        (batches, stream)
    }

    #[test]
    fn same_seed_same_bytes_in_any_chunking() {
        let (whole, _) = all_batches(spec(5_000), 100);
        let mut stream = MessageStream::new(spec(5_000), anchor());
        let mut chunked = Vec::new();
        while !stream.is_done() {
            chunked.extend(stream.next_batches(700, 100, anchor()).unwrap());
        }
        let whole: Vec<u8> = whole.into_iter().flat_map(|b| b.body).collect();
        let chunked_bytes: Vec<u8> = chunked.iter().flat_map(|b| b.body.clone()).collect();
        // Chunk boundaries cut batches differently; the messages are what must agree.
        let messages = |bytes: &[u8]| -> Vec<Value> {
            let text = String::from_utf8(bytes.to_vec()).unwrap();
            text.split("{\"batch\":")
                .filter(|s| !s.is_empty())
                .flat_map(|s| {
                    let body: Value = serde_json::from_str(&format!("{{\"batch\":{s}")).unwrap();
                    body["batch"].as_array().unwrap().clone()
                })
                .collect()
        };
        assert_eq!(messages(&whole), messages(&chunked_bytes));
        let (other_seed, _) = all_batches(
            StreamSpec {
                seed: 7,
                ..spec(5_000)
            },
            100,
        );
        assert_ne!(
            whole,
            other_seed
                .into_iter()
                .flat_map(|b| b.body)
                .collect::<Vec<_>>()
        );
    }

    #[test]
    fn addresses_are_unique_unify_when_shouted_and_arrive_in_no_order() {
        let addresses: Vec<String> = (0..10_000).map(email).collect();
        let distinct: HashSet<&String> = addresses.iter().collect();
        assert_eq!(distinct.len(), addresses.len());
        for visitor in [0, 1, 96, 97, 9_999] {
            let shouted = shouted_email(visitor);
            assert_ne!(shouted, email(visitor));
            assert_eq!(shouted.to_lowercase(), email(visitor));
        }
        // Sorted arrival would give 1.0; independent order gives about one half.
        let rising = addresses.windows(2).filter(|w| w[0] < w[1]).count();
        let share = rising as f64 / (addresses.len() - 1) as f64;
        assert!((0.4..0.6).contains(&share), "{share}");
    }

    #[test]
    fn mix_matches_the_advertised_rates() {
        for (events, merges) in [(400_000, 0.045..0.055), (10_000, 0.035..0.06)] {
            let mut stream = MessageStream::new(spec(events), anchor());
            while stream.next_message().is_some() {}
            let stats = stream.stats().clone();
            assert_eq!(stats.messages, events);
            assert_eq!(stats.tracks + stats.pages + stats.identifies, events);
            let visitors_per_million = stats.visitors as f64 * 1e6 / events as f64;
            assert!(
                (180_000.0..225_000.0).contains(&visitors_per_million),
                "{stats:?}"
            );
            let merge_share = stats.merge_signals as f64 / events as f64;
            assert!(merges.contains(&merge_share), "{merge_share} {stats:?}");
        }
    }

    #[test]
    fn every_message_is_valid_and_ids_are_unique() {
        let (batches, _) = all_batches(spec(20_000), 100);
        let mut ids = HashSet::new();
        for batch in &batches {
            assert!(batch.body.len() < 100 * 1024, "{}", batch.body.len());
            let body: Value = serde_json::from_slice(&batch.body).unwrap();
            assert!(
                body["sentAt"]
                    .as_str()
                    .unwrap()
                    .parse::<Timestamp>()
                    .is_ok()
            );
            let items = body["batch"].as_array().unwrap();
            assert_eq!(items.len(), batch.messages as usize);
            for item in items {
                assert!(serde_json::to_vec(item).unwrap().len() < 1024);
                assert!(item.get("userId").is_some() || item.get("anonymousId").is_some());
                assert!(
                    item["timestamp"]
                        .as_str()
                        .unwrap()
                        .parse::<Timestamp>()
                        .is_ok()
                );
                assert!(ids.insert(item["messageId"].as_str().unwrap().to_owned()));
                match item["type"].as_str().unwrap() {
                    "track" => assert!(item["event"].is_string()),
                    "page" => assert!(item["name"].is_string()),
                    "identify" => assert!(item["traits"]["email"].is_string()),
                    other => panic!("unexpected type {other}"),
                }
            }
        }
        assert_eq!(ids.len(), 20_000);
    }

    #[test]
    fn a_second_device_identifies_well_after_the_first_and_its_own_browsing() {
        let mut stream = MessageStream::new(spec(200_000), anchor());
        let mut first_email_at: HashMap<String, u64> = HashMap::new();
        let mut last_seen: HashMap<String, u64> = HashMap::new();
        let (mut after_email, mut after_browsing) = (Vec::new(), Vec::new());
        let mut index = 0;
        while let Some(message) = stream.next_message() {
            let anonymous_id = message["anonymousId"].as_str().unwrap().to_owned();
            if message["type"] == "identify" && message.get("userId").is_none() {
                let raw = message["traits"]["email"].as_str().unwrap();
                let normalized = raw.to_lowercase();
                if raw == normalized {
                    first_email_at.insert(normalized, index);
                } else {
                    after_email.push(index - first_email_at[&normalized]);
                    after_browsing.push(index - last_seen[&anonymous_id]);
                }
            }
            last_seen.insert(anonymous_id, index);
            index += 1;
        }
        assert!(after_email.len() > 5_000, "{}", after_email.len());
        assert!(after_email.iter().all(|gap| *gap >= 5_000));
        assert!(after_browsing.iter().all(|gap| *gap >= 5_000));
        assert_eq!(stream.merge_emails().len(), MERGE_SAMPLES);
    }

    #[test]
    fn big_persons_get_exactly_their_events_spread_out() {
        let spec = StreamSpec {
            events: 100_000,
            seed: 1,
            big_persons: 3,
            big_events_each: 5_000,
        };
        let mut stream = MessageStream::new(spec, anchor());
        let mut per_person: HashMap<String, u64> = HashMap::new();
        let mut first_half = 0;
        let mut index = 0;
        while let Some(message) = stream.next_message() {
            if let Some(user) = message["userId"].as_str()
                && user.starts_with("big-")
            {
                assert_eq!(message["type"], "track");
                assert!(message.get("anonymousId").is_none());
                *per_person.entry(user.to_owned()).or_default() += 1;
                if index < 50_000 {
                    first_half += 1;
                }
            }
            index += 1;
        }
        assert_eq!(per_person.len(), 3);
        assert!(per_person.values().all(|n| *n == 5_000), "{per_person:?}");
        assert!((6_000..9_000).contains(&first_half), "{first_half}");
        assert_eq!(stream.stats().big_person_messages, 15_000);
    }

    #[test]
    fn timestamps_rise_over_thirty_days() {
        let mut stream = MessageStream::new(spec(1_000), anchor());
        let first: Timestamp = stream.next_message().unwrap()["timestamp"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        let mut last = first;
        while let Some(message) = stream.next_message() {
            let at: Timestamp = message["timestamp"].as_str().unwrap().parse().unwrap();
            assert!(at >= last);
            last = at;
        }
        assert_eq!(first, "2025-12-02T00:00:00Z".parse().unwrap());
        assert!(last < anchor());
    }
}
