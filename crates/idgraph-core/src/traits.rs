//! Trait precedence: whether a newly observed trait value replaces the current one.

use std::cmp::Ordering;
use std::fmt;
use std::str::FromStr;

use jiff::Timestamp;

use crate::ParseError;

/// Where a trait value came from, ranked `user` > `system` > `import` > `inferred` (the derived
/// order, weakest first).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SourceClass {
    Inferred,
    Import,
    System,
    User,
}

impl SourceClass {
    /// Strongest first.
    pub const ALL: [SourceClass; 4] = [
        SourceClass::User,
        SourceClass::System,
        SourceClass::Import,
        SourceClass::Inferred,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            SourceClass::Inferred => "inferred",
            SourceClass::Import => "import",
            SourceClass::System => "system",
            SourceClass::User => "user",
        }
    }
}

impl FromStr for SourceClass {
    type Err = ParseError;

    fn from_str(raw: &str) -> Result<Self, ParseError> {
        SourceClass::ALL
            .into_iter()
            .find(|class| class.as_str() == raw)
            .ok_or_else(|| {
                ParseError::new(
                    "source class",
                    format!("{raw:?} is not one of user, system, import, inferred"),
                )
            })
    }
}

impl fmt::Display for SourceClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where and when a trait value was observed, and how sure its source was.
#[derive(Debug, Clone, PartialEq)]
pub struct Provenance {
    pub class: SourceClass,
    /// 0..=1. Out-of-range values count as the nearest bound and NaN as 0, so a malformed
    /// confidence can never win by accident.
    pub confidence: f64,
    pub observed_at: Timestamp,
}

impl Provenance {
    fn effective_confidence(&self) -> f64 {
        if self.confidence.is_nan() {
            0.0
        } else {
            self.confidence.clamp(0.0, 1.0)
        }
    }

    /// Compares on (class, then confidence, then recency).
    fn strength_cmp(&self, other: &Provenance) -> Ordering {
        self.class
            .cmp(&other.class)
            .then_with(|| {
                self.effective_confidence()
                    .total_cmp(&other.effective_confidence())
            })
            .then_with(|| self.observed_at.cmp(&other.observed_at))
    }
}

/// Whether a new observation replaces the current value: compare (class, then confidence, then
/// recency); a tie in all three keeps the current. `set_once` = the current value is never
/// replaced once set. Without a current value the new one always wins.
pub fn replaces(new: &Provenance, current: Option<&Provenance>, set_once: bool) -> bool {
    match current {
        None => true,
        Some(_) if set_once => false,
        Some(current) => new.strength_cmp(current) == Ordering::Greater,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn seen(class: SourceClass, confidence: f64, second: i64) -> Provenance {
        Provenance {
            class,
            confidence,
            observed_at: Timestamp::from_second(second).unwrap(),
        }
    }

    #[test]
    fn classes_round_trip_and_rank() {
        for class in SourceClass::ALL {
            assert_eq!(class.as_str().parse::<SourceClass>().unwrap(), class);
        }
        assert!("admin".parse::<SourceClass>().is_err());
        assert!(SourceClass::User > SourceClass::System);
        assert!(SourceClass::System > SourceClass::Import);
        assert!(SourceClass::Import > SourceClass::Inferred);
    }

    #[test]
    fn precedence_cases() {
        use SourceClass::*;
        // (new, current, set_once, replaces)
        let cases = [
            (seen(Inferred, 0.1, 1), None, false, true),
            (seen(Inferred, 0.1, 1), None, true, true),
            // An inferred value never overwrites a user-given one, however sure and recent.
            (
                seen(Inferred, 1.0, 99),
                Some(seen(User, 0.0, 1)),
                false,
                false,
            ),
            (
                seen(User, 0.0, 1),
                Some(seen(Inferred, 1.0, 99)),
                false,
                true,
            ),
            (
                seen(System, 0.5, 1),
                Some(seen(Import, 0.9, 9)),
                false,
                true,
            ),
            (
                seen(Import, 0.9, 1),
                Some(seen(Import, 0.8, 9)),
                false,
                true,
            ),
            (
                seen(Import, 0.8, 9),
                Some(seen(Import, 0.9, 1)),
                false,
                false,
            ),
            (
                seen(Import, 0.8, 9),
                Some(seen(Import, 0.8, 1)),
                false,
                true,
            ),
            (
                seen(Import, 0.8, 1),
                Some(seen(Import, 0.8, 9)),
                false,
                false,
            ),
            // A tie in all three keeps the current value.
            (
                seen(Import, 0.8, 5),
                Some(seen(Import, 0.8, 5)),
                false,
                false,
            ),
            (
                seen(User, 1.0, 99),
                Some(seen(Inferred, 0.0, 1)),
                true,
                false,
            ),
            (
                seen(Import, f64::NAN, 9),
                Some(seen(Import, 0.0, 1)),
                false,
                true,
            ),
            (
                seen(Import, f64::NAN, 1),
                Some(seen(Import, 0.1, 9)),
                false,
                false,
            ),
            (
                seen(Import, 7.0, 1),
                Some(seen(Import, 1.0, 9)),
                false,
                false,
            ),
        ];
        for (new, current, set_once, expected) in cases {
            assert_eq!(
                replaces(&new, current.as_ref(), set_once),
                expected,
                "{new:?} over {current:?} (set_once {set_once})"
            );
        }
    }

    fn provenance() -> impl Strategy<Value = Provenance> {
        (0usize..4, 0u8..=4, 0i64..4).prop_map(|(class, tenths, second)| {
            seen(SourceClass::ALL[class], f64::from(tenths) / 4.0, second)
        })
    }

    proptest! {
        /// Precedence is a strict order: never both ways, and transitive, so applying
        /// observations in any order keeps the same winner.
        #[test]
        fn precedence_is_a_strict_order(a in provenance(), b in provenance(), c in provenance()) {
            prop_assert!(!(replaces(&a, Some(&b), false) && replaces(&b, Some(&a), false)));
            if replaces(&a, Some(&b), false) && replaces(&b, Some(&c), false) {
                prop_assert!(replaces(&a, Some(&c), false));
            }
        }
    }
}
