//! A signal's trait observations as one stored value (decision 0021), sealed whole. Written in
//! the compact form: a JSON array of groups of observations that share a provenance,
//! `[source class, confidence, observed at (µs), [[name, value, set once (0 or 1)], …]]`,
//! sealed as bytes (a signal's observations usually share one provenance, which the first form,
//! `[name, value, class, confidence, observed at, set once]` per observation in text, repeated).
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
    /// The array of observations sealed as one text value (plain where the store has no key).
    /// A re-seal rewrites it as [`SetForm::Compact`].
    Whole,
    /// Groups of observations by provenance, sealed as bytes: what the store writes.
    Compact,
}

impl SetForm {
    pub fn code(self) -> i64 {
        match self {
            SetForm::EachValue => 0,
            SetForm::Whole => 1,
            SetForm::Compact => 2,
        }
    }

    pub fn from_code(code: i64) -> StoreResult<Self> {
        match code {
            0 => Ok(SetForm::EachValue),
            1 => Ok(SetForm::Whole),
            2 => Ok(SetForm::Compact),
            other => Err(StoreError::Other(format!(
                "a trait set in an unknown form ({other})"
            ))),
        }
    }
}

/// `[class, confidence, observed at, [[name, value, set once], …]]`, written.
type Group<'a> = (&'a str, f64, i64, Vec<(&'a str, &'a str, u8)>);
/// The same, read (a confidence written as null reads as 0).
type ReadGroup = (String, Option<f64>, i64, Vec<(String, String, u8)>);

/// The plain compact form of `observations` and how many it holds. A name observed twice by
/// one signal keeps its first observation, as the one-row-per-observation layout did by its
/// key.
pub fn encode(observations: &[TraitObservation]) -> (Vec<u8>, usize) {
    let mut groups: Vec<Group<'_>> = Vec::new();
    let mut kept: Vec<&str> = Vec::with_capacity(observations.len());
    for observed in observations {
        if kept.contains(&observed.name.as_str()) {
            continue;
        }
        kept.push(&observed.name);
        let provenance = &observed.provenance;
        let (class, at) = (
            provenance.class.as_str(),
            provenance.observed_at.as_microsecond(),
        );
        let element = (
            observed.name.as_str(),
            observed.value.as_str(),
            u8::from(observed.set_once),
        );
        match groups.last_mut() {
            Some(group)
                if group.0 == class
                    && group.1.to_bits() == provenance.confidence.to_bits()
                    && group.2 == at =>
            {
                group.3.push(element);
            }
            _ => groups.push((class, provenance.confidence, at, vec![element])),
        }
    }
    // Serializing strings and numbers cannot fail; an infinite confidence would be written as
    // null, which is why the reader takes it as 0 (as the comparison does NaN).
    let plain = serde_json::to_vec(&groups).unwrap_or_else(|_| b"[]".to_vec());
    (plain, kept.len())
}

/// The observations of a plain compact set.
pub fn decode_compact(plain: &[u8]) -> StoreResult<Vec<TraitObservation>> {
    let groups: Vec<ReadGroup> =
        serde_json::from_slice(plain).map_err(|e| unreadable(e.to_string()))?;
    let mut observed = Vec::new();
    for (class, confidence, observed_at, elements) in groups {
        let provenance = provenance(&class, confidence, observed_at)?;
        for (name, value, set_once) in elements {
            let set_once = match set_once {
                0 => false,
                1 => true,
                other => return Err(unreadable(format!("set once is {other}"))),
            };
            observed.push(TraitObservation {
                name,
                value,
                provenance: provenance.clone(),
                set_once,
            });
        }
    }
    Ok(observed)
}

fn unreadable(why: String) -> StoreError {
    StoreError::Other(format!("a stored trait set is unreadable: {why}"))
}

fn provenance(class: &str, confidence: Option<f64>, observed_at: i64) -> StoreResult<Provenance> {
    let class: SourceClass = class
        .parse()
        .map_err(|_| unreadable(format!("unknown source class {class:?}")))?;
    let observed_at =
        Timestamp::from_microsecond(observed_at).map_err(|e| unreadable(e.to_string()))?;
    Ok(Provenance {
        class,
        confidence: confidence.unwrap_or(0.0),
        observed_at,
    })
}

/// The observations of a plain array of the first form (`EachValue` and `Whole`).
pub fn decode(plain: &str) -> StoreResult<Vec<TraitObservation>> {
    let elements: Vec<(String, String, String, Option<f64>, i64, bool)> =
        serde_json::from_str(plain).map_err(|e| unreadable(e.to_string()))?;
    elements
        .into_iter()
        .map(|(name, value, class, confidence, observed_at, set_once)| {
            Ok(TraitObservation {
                name,
                value,
                provenance: provenance(&class, confidence, observed_at)?,
                set_once,
            })
        })
        .collect()
}

/// A signal's observations as the store writes them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedSet {
    /// The compact form, sealed as bytes (plain where the store has no key).
    pub stored: Vec<u8>,
    /// How many observations it holds (a deletion reports them).
    pub observed: usize,
}

/// The stored form of a signal's observations ([`SetForm::Compact`]), or `None` when it
/// observed none.
pub fn seal(
    vault: &Vault,
    tenant: &str,
    observations: &[TraitObservation],
) -> StoreResult<Option<SealedSet>> {
    if observations.is_empty() {
        return Ok(None);
    }
    let (plain, observed) = encode(observations);
    let stored = vault.seal_bytes(tenant, column::TRAIT_SET, &plain)?;
    Ok(Some(SealedSet { stored, observed }))
}

/// The observations of a stored set, values opened. The first form's sets are text.
pub fn open(
    vault: &Vault,
    tenant: &str,
    form: SetForm,
    stored: Vec<u8>,
) -> StoreResult<Vec<TraitObservation>> {
    let text =
        |stored: Vec<u8>| String::from_utf8(stored).map_err(|_| unreadable("not text".into()));
    match form {
        SetForm::Compact => decode_compact(&vault.open_bytes(tenant, column::TRAIT_SET, stored)?),
        SetForm::Whole => decode(&vault.open(tenant, column::TRAIT_SET, text(stored)?)?),
        SetForm::EachValue => {
            let mut observed = decode(&text(stored)?)?;
            for o in &mut observed {
                o.value = vault.open(tenant, column::TRAIT, std::mem::take(&mut o.value))?;
            }
            Ok(observed)
        }
    }
}

/// A stored set under the current key, in the compact form.
pub fn reseal(vault: &Vault, tenant: &str, form: SetForm, stored: Vec<u8>) -> StoreResult<Vec<u8>> {
    let (plain, _) = encode(&open(vault, tenant, form, stored)?);
    vault.seal_bytes(tenant, column::TRAIT_SET, &plain)
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
        let mut other = observation("score", "0.1", -5, false);
        other.provenance.class = SourceClass::User;
        let observations = vec![
            observation("first_name", "\"Ann\"", 1_732_500_000_123_456, false),
            observation("plan", "{\"tier\":\"pro\",\"seats\":[1,2]}", 7, true),
            observation("first_name", "\"Anne\"", 8, false),
            other,
            observation("city", "\"Lyon\"", 7, false),
        ];
        let expected: Vec<TraitObservation> = [0, 1, 3, 4]
            .iter()
            .map(|&i| observations[i].clone())
            .collect();
        for vault in [Vault::plaintext(), Vault::random().expect("vault")] {
            let SealedSet { stored, observed } = seal(&vault, "t", &observations)
                .expect("seal")
                .expect("some");
            assert_eq!(observed, 4);
            assert_eq!(
                vault.seals(),
                stored.starts_with(vault.current_bytes_prefix().unwrap_or(b"none")),
            );
            assert_eq!(vault.seals(), !stored.starts_with(b"["));
            assert_eq!(
                open(&vault, "t", SetForm::Compact, stored.clone()).expect("open"),
                expected
            );
            // Bound to its tenant like every sealed value.
            if vault.seals() {
                assert!(open(&vault, "u", SetForm::Compact, stored).is_err());
            }
        }
        assert_eq!(seal(&Vault::plaintext(), "t", &[]).expect("seal"), None);
    }

    #[test]
    fn observations_of_one_provenance_are_one_group() {
        let observations = [
            observation("first_name", "\"Ann\"", 9, false),
            observation("zip", "\"69001\"", 9, true),
        ];
        let (plain, observed) = encode(&observations);
        assert_eq!(observed, 2);
        assert_eq!(
            String::from_utf8(plain.clone()).expect("text"),
            r#"[["import",0.7,9,[["first_name","\"Ann\"",0],["zip","\"69001\"",1]]]]"#
        );
        assert_eq!(decode_compact(&plain).expect("decode"), observations);
    }

    #[test]
    fn sets_of_the_first_form_open_and_reseal_compact() {
        let vault = Vault::random().expect("vault");
        let observations = [
            observation("city", "\"Lyon\"", 3, false),
            observation("zip", "\"69001\"", 4, true),
        ];
        let expected = observations.to_vec();
        // The first form: one element per observation, with its provenance.
        let elements = |value: &dyn Fn(&TraitObservation) -> String| {
            let elements: Vec<(String, String, String, f64, i64, bool)> = observations
                .iter()
                .map(|o| {
                    (
                        o.name.clone(),
                        value(o),
                        "import".to_owned(),
                        0.7,
                        o.provenance.observed_at.as_microsecond(),
                        o.set_once,
                    )
                })
                .collect();
            serde_json::to_string(&elements).expect("json")
        };
        // The migration's layout: the array plain, each value sealed as a trait value.
        let moved = elements(&|o| vault.seal("t", column::TRAIT, &o.value).expect("seal"));
        // Sealed whole as text.
        let whole = vault
            .seal("t", column::TRAIT_SET, &elements(&|o| o.value.clone()))
            .expect("seal");
        for (form, stored) in [(SetForm::EachValue, moved), (SetForm::Whole, whole)] {
            let stored = stored.into_bytes();
            assert_eq!(
                open(&vault, "t", form, stored.clone()).expect("open"),
                expected
            );
            let compact = reseal(&vault, "t", form, stored).expect("reseal");
            assert!(compact.starts_with(vault.current_bytes_prefix().expect("sealing")));
            assert_eq!(
                open(&vault, "t", SetForm::Compact, compact).expect("open"),
                expected
            );
        }
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
        for stored in [
            "",
            "[]x",
            "[[\"import\",1.0,0]]",
            "[[\"psychic\",1.0,0,[]]]",
            "[[\"import\",1.0,0,[[\"a\",\"1\",2]]]]",
            "[[\"import\",1.0,0,[[\"a\",\"1\"]]]]",
        ] {
            assert!(decode_compact(stored.as_bytes()).is_err(), "{stored}");
        }
        let vault = Vault::random().expect("vault");
        assert!(open(&vault, "t", SetForm::Whole, vec![0xff, 0xfe]).is_err());
        assert!(SetForm::from_code(7).is_err());
    }
}
