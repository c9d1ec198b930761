//! A signal's trait observations as one stored value (decision 0021): a JSON array of
//! `[name, value, source class, confidence, observed at (µs), set once]`, sealed whole.
//!
//! A row of the benchmark's lead file observes 7.6 traits on average. Stored one row each, they
//! were that many random inserts into a wide index and as many seals per row, ~2 s of a 9.5 s
//! import of 100,000 rows (a build that wrote no traits); stored as
//! one value per signal they are one insert and one seal. Nothing reads a single trait by name
//! (a profile reads all of a person's), so the set loses no query.

use idgraph_core::traits::{Provenance, SourceClass};
use jiff::Timestamp;

use crate::vault::{Vault, column};
use crate::{StoreError, StoreResult, TraitObservation};

/// How a stored set holds its values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetForm {
    /// Moved from the one-row-per-observation layout: the array is plain and each value is
    /// sealed by itself (as `trait_values.value`). A re-seal rewrites it as [`SetForm::Whole`].
    EachValue,
    /// The array sealed as one value (plain where the store has no key).
    Whole,
}

impl SetForm {
    pub fn code(self) -> i64 {
        match self {
            SetForm::EachValue => 0,
            SetForm::Whole => 1,
        }
    }

    pub fn from_code(code: i64) -> StoreResult<Self> {
        match code {
            0 => Ok(SetForm::EachValue),
            1 => Ok(SetForm::Whole),
            other => Err(StoreError::Other(format!(
                "a trait set in an unknown form ({other})"
            ))),
        }
    }
}

type Element<'a> = (&'a str, &'a str, &'a str, f64, i64, bool);

/// The plain array of `observations` and how many it holds. A name observed twice by one
/// signal keeps its first observation, as the one-row-per-observation layout did by its key.
pub fn encode(observations: &[TraitObservation]) -> (String, usize) {
    let mut elements: Vec<Element<'_>> = Vec::with_capacity(observations.len());
    for observed in observations {
        if elements.iter().any(|e| e.0 == observed.name) {
            continue;
        }
        elements.push((
            &observed.name,
            &observed.value,
            observed.provenance.class.as_str(),
            observed.provenance.confidence,
            observed.provenance.observed_at.as_microsecond(),
            observed.set_once,
        ));
    }
    // Serializing strings, numbers and booleans cannot fail; an infinite confidence would be
    // written as null, which is why the reader takes it as 0 (as the comparison does NaN).
    let plain = serde_json::to_string(&elements).unwrap_or_else(|_| "[]".to_owned());
    (plain, elements.len())
}

pub fn decode(plain: &str) -> StoreResult<Vec<TraitObservation>> {
    let bad = |why: String| StoreError::Other(format!("a stored trait set is unreadable: {why}"));
    let elements: Vec<(String, String, String, Option<f64>, i64, bool)> =
        serde_json::from_str(plain).map_err(|e| bad(e.to_string()))?;
    elements
        .into_iter()
        .map(|(name, value, class, confidence, observed_at, set_once)| {
            let class: SourceClass = class
                .parse()
                .map_err(|_| bad(format!("unknown source class {class:?}")))?;
            let observed_at =
                Timestamp::from_microsecond(observed_at).map_err(|e| bad(e.to_string()))?;
            Ok(TraitObservation {
                name,
                value,
                provenance: Provenance {
                    class,
                    confidence: confidence.unwrap_or(0.0),
                    observed_at,
                },
                set_once,
            })
        })
        .collect()
}

/// A signal's observations as the store writes them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedSet {
    /// The array, sealed (plain where the store has no key).
    pub stored: String,
    /// How many observations it holds (a deletion reports them).
    pub observed: usize,
}

/// The stored form of a signal's observations, or `None` when it observed none.
pub fn seal(
    vault: &Vault,
    tenant: &str,
    observations: &[TraitObservation],
) -> StoreResult<Option<SealedSet>> {
    if observations.is_empty() {
        return Ok(None);
    }
    let (plain, observed) = encode(observations);
    let stored = vault.seal(tenant, column::TRAIT_SET, &plain)?;
    Ok(Some(SealedSet { stored, observed }))
}

/// The observations of a stored set, values opened.
pub fn open(
    vault: &Vault,
    tenant: &str,
    form: SetForm,
    stored: String,
) -> StoreResult<Vec<TraitObservation>> {
    match form {
        SetForm::Whole => decode(&vault.open(tenant, column::TRAIT_SET, stored)?),
        SetForm::EachValue => {
            let mut observed = decode(&stored)?;
            for o in &mut observed {
                o.value = vault.open(tenant, column::TRAIT, std::mem::take(&mut o.value))?;
            }
            Ok(observed)
        }
    }
}

/// A stored set under the current key, in the whole form.
pub fn reseal(vault: &Vault, tenant: &str, form: SetForm, stored: String) -> StoreResult<String> {
    let (plain, _) = encode(&open(vault, tenant, form, stored)?);
    vault.seal(tenant, column::TRAIT_SET, &plain)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn observation(name: &str, value: &str, micros: i64, set_once: bool) -> TraitObservation {
        TraitObservation {
            name: name.into(),
            value: value.into(),
            provenance: Provenance {
                class: SourceClass::Import,
                confidence: 0.7,
                observed_at: Timestamp::from_microsecond(micros).expect("in range"),
            },
            set_once,
        }
    }

    #[test]
    fn a_set_reads_back_what_was_observed_and_keeps_the_first_of_a_name() {
        let observations = vec![
            observation("first_name", "\"Ann\"", 1_732_500_000_123_456, false),
            observation("plan", "{\"tier\":\"pro\",\"seats\":[1,2]}", 7, true),
            observation("first_name", "\"Anne\"", 8, false),
            observation("score", "0.1", -5, false),
        ];
        let expected: Vec<TraitObservation> =
            [0, 1, 3].iter().map(|&i| observations[i].clone()).collect();
        for vault in [Vault::plaintext(), Vault::random().expect("vault")] {
            let SealedSet { stored, observed } = seal(&vault, "t", &observations)
                .expect("seal")
                .expect("some");
            assert_eq!(observed, 3);
            assert_eq!(vault.seals(), !stored.starts_with('['), "{stored}");
            assert_eq!(
                open(&vault, "t", SetForm::Whole, stored.clone()).expect("open"),
                expected
            );
            // Bound to its tenant like every sealed value.
            if vault.seals() {
                assert!(open(&vault, "u", SetForm::Whole, stored).is_err());
            }
        }
        assert_eq!(seal(&Vault::plaintext(), "t", &[]).expect("seal"), None);
    }

    #[test]
    fn a_set_moved_from_one_row_per_value_opens_each_value_and_reseals_whole() {
        let vault = Vault::random().expect("vault");
        let observations = [
            observation("city", "\"Lyon\"", 3, false),
            observation("zip", "\"69001\"", 4, true),
        ];
        // The migration's layout: the array plain, each value sealed as a trait value.
        let elements: Vec<(String, String, String, f64, i64, bool)> = observations
            .iter()
            .map(|o| {
                (
                    o.name.clone(),
                    vault.seal("t", column::TRAIT, &o.value).expect("seal"),
                    "import".to_owned(),
                    0.7,
                    o.provenance.observed_at.as_microsecond(),
                    o.set_once,
                )
            })
            .collect();
        let moved = serde_json::to_string(&elements).expect("json");
        let expected = observations.to_vec();
        assert_eq!(
            open(&vault, "t", SetForm::EachValue, moved.clone()).expect("open"),
            expected
        );
        let whole = reseal(&vault, "t", SetForm::EachValue, moved).expect("reseal");
        assert!(vault.is_current(&whole));
        assert_eq!(
            open(&vault, "t", SetForm::Whole, whole).expect("open"),
            expected
        );
    }

    #[test]
    fn an_unreadable_set_is_an_error_not_a_panic() {
        for stored in [
            "",
            "{}",
            "[[\"a\"]]",
            "[[\"a\",\"1\",\"psychic\",1.0,0,false]]",
        ] {
            assert!(decode(stored).is_err(), "{stored}");
        }
        assert!(SetForm::from_code(7).is_err());
    }
}
