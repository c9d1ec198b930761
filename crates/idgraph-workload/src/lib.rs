//! Deterministic synthetic workloads for benchmarks: the same seed always gives the same stream,
//! so figures from different runs and different layers (in-memory, store, HTTP) describe the
//! same work.
//!
//! Streams are iterators: a caller holding a million signals does so by choice, not because the
//! generator made it.
//!
//! [`leads`] writes lead files (CSV) with the truth of who each row is, for the import pipeline.

pub mod leads;

/// SplitMix64: tiny, fast, and good enough to pick persons and coin flips reproducibly.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number below `bound` (which must not be 0); the modulo bias is irrelevant here.
    pub fn below(&mut self, bound: u64) -> u64 {
        self.next_u64() % bound
    }
}

/// The shape of a signal stream with identity churn.
#[derive(Debug, Clone, Copy)]
pub struct StreamConfig {
    pub signals: usize,
    pub persons: u64,
    /// Chance, in percent, that a returning identified person shows up on a new device: an
    /// anonymous signal (a new person) followed by a login that merges it into the known one.
    pub new_device_percent: u64,
    pub seed: u64,
}

impl StreamConfig {
    /// 1M signals over 200k persons, about 5% of signals merging: the stream the resolution
    /// targets are stated for.
    pub const fn standard() -> Self {
        Self {
            signals: 1_000_000,
            persons: 200_000,
            new_device_percent: 19,
            seed: 42,
        }
    }

    /// The same mix at another size (persons scale with signals).
    pub fn scaled(signals: usize) -> Self {
        let standard = Self::standard();
        Self {
            signals,
            persons: (signals as u64 / 5).max(1),
            ..standard
        }
    }
}

/// One signal of the stream: the identifiers a Segment client would send, raw (not normalized).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamSignal {
    /// The synthetic person behind it (the ground truth).
    pub person: u64,
    pub user_id: Option<String>,
    pub email: Option<String>,
    pub anonymous_id: Option<String>,
}

impl StreamSignal {
    /// `(kind, raw value)` pairs, strongest kind first.
    pub fn identifiers(&self) -> impl Iterator<Item = (&'static str, &str)> {
        [
            ("external_id", self.user_id.as_deref()),
            ("email", self.email.as_deref()),
            ("anonymous_id", self.anonymous_id.as_deref()),
        ]
        .into_iter()
        .filter_map(|(kind, value)| Some((kind, value?)))
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct PersonState {
    stage: u8,
    devices: u32,
    pending_login: bool,
}

/// Persons are picked uniformly at random. Each goes anonymous → anonymous + email → email +
/// user id, then mostly returns with its user id and current device; now and then it appears
/// on a new device anonymously and logs in on its next signal, which merges the two.
#[derive(Debug)]
pub struct SignalStream {
    config: StreamConfig,
    rng: Rng,
    persons: Vec<PersonState>,
    emitted: usize,
}

impl SignalStream {
    pub fn new(config: StreamConfig) -> Self {
        Self {
            config,
            rng: Rng::new(config.seed),
            persons: vec![PersonState::default(); config.persons as usize],
            emitted: 0,
        }
    }
}

impl Iterator for SignalStream {
    type Item = StreamSignal;

    fn next(&mut self) -> Option<StreamSignal> {
        if self.emitted == self.config.signals {
            return None;
        }
        self.emitted += 1;
        let person = self.rng.below(self.config.persons);
        let new_device = self.rng.below(100) < self.config.new_device_percent;
        let state = &mut self.persons[person as usize];
        let anon = |device: u32| Some(format!("anon-{person}-{device}"));
        let email = Some(format!("person{person}@example.com"));
        let user = Some(format!("user-{person}"));
        let (user_id, email, anonymous_id) = match state.stage {
            0 => (None, None, anon(0)),
            1 => (None, email, anon(0)),
            2 => (user, email, None),
            _ if state.pending_login => {
                state.pending_login = false;
                (user, None, anon(state.devices))
            }
            _ if new_device => {
                state.devices += 1;
                state.pending_login = true;
                (None, None, anon(state.devices))
            }
            _ => (user, None, anon(state.devices)),
        };
        state.stage = state.stage.saturating_add(1);
        Some(StreamSignal {
            person,
            user_id,
            email,
            anonymous_id,
        })
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = self.config.signals - self.emitted;
        (left, Some(left))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_stream() {
        let config = StreamConfig::scaled(2_000);
        let a: Vec<StreamSignal> = SignalStream::new(config).collect();
        let b: Vec<StreamSignal> = SignalStream::new(config).collect();
        assert_eq!(a.len(), 2_000);
        assert_eq!(a, b);
        let other: Vec<StreamSignal> =
            SignalStream::new(StreamConfig { seed: 7, ..config }).collect();
        assert_ne!(a, other);
    }

    #[test]
    fn persons_progress_from_anonymous_to_identified() {
        let signals: Vec<StreamSignal> = SignalStream::new(StreamConfig::scaled(50_000)).collect();
        let first = signals
            .iter()
            .find(|s| s.person == signals[0].person)
            .expect("some");
        assert!(first.user_id.is_none() && first.email.is_none() && first.anonymous_id.is_some());
        // Every signal carries at least one identifier, and user ids always match their person.
        for signal in &signals {
            assert!(signal.identifiers().next().is_some());
            if let Some(user) = &signal.user_id {
                assert_eq!(user, &format!("user-{}", signal.person));
            }
        }
        let logins_on_new_devices = signals
            .iter()
            .filter(|s| {
                s.user_id.is_some()
                    && s.anonymous_id
                        .as_deref()
                        .is_some_and(|a| !a.ends_with("-0"))
            })
            .count();
        assert!(logins_on_new_devices > 0);
    }
}
