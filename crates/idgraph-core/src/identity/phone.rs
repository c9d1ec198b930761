//! Whether a parsed phone number is valid, by `phonenumber`'s metadata but with the metadata's
//! patterns compiled once per region (decision 0027).
//!
//! `phonenumber::is_valid` matches every pattern through one process-wide LRU of 100 compiled
//! patterns behind a mutex: each use hashes the pattern's source (kilobytes for the big
//! fixed-line patterns) and runs the match with the lock held, and the North American regions'
//! patterns alone outnumber the LRU, so patterns are evicted and compiled again. A lead file
//! with two phone columns spent about a tenth of an import's CPU there. The rules below are the
//! crate's (`validator::source_for` and `number_type`), so a number is valid here exactly when
//! it is valid there; `agrees_with_phonenumber` checks that over every region's examples.

use std::collections::HashMap;
use std::sync::{LazyLock, OnceLock};

use phonenumber::PhoneNumber;
use phonenumber::metadata::{DATABASE, Descriptor, Descriptors, Metadata};
use regex::Regex;

/// The id `phonenumber` gives the non-geographic entities of a country code (+800, +979…).
const NON_GEOGRAPHIC: &str = "001";

/// Whether `number` is a valid number of its country code, as `phonenumber::is_valid` says.
pub(crate) fn is_valid(number: &PhoneNumber) -> bool {
    let code = number.country().code();
    let Some(regions) = REGIONS.get(&code) else {
        return false;
    };
    let national = number.national().to_string();
    region_of(regions, &national).is_some_and(|region| region.matches_a_type(&national))
}

/// The region whose rules judge a number: the only one of its code, else the first whose
/// leading digits start the number or, lacking those, whose types match it.
fn region_of<'a>(regions: &'a [Region], national: &str) -> Option<&'a Patterns> {
    if let [only] = regions {
        return only.patterns();
    }
    regions.iter().find_map(|region| {
        let patterns = region.patterns()?;
        let claims = match &patterns.leading_digits {
            Some(leading) => leading.is_match(national),
            None => patterns.matches_a_type(national),
        };
        claims.then_some(patterns)
    })
}

/// Every country code's regions, in `phonenumber`'s order; a region's patterns are compiled on
/// its first number.
static REGIONS: LazyLock<HashMap<u16, Vec<Region>>> = LazyLock::new(|| {
    (1..=999u16)
        .filter_map(|code| {
            let ids = DATABASE.region(&code)?;
            let regions = ids
                .into_iter()
                .map(|id| Region {
                    code,
                    id: id.to_owned(),
                    patterns: OnceLock::new(),
                })
                .collect();
            Some((code, regions))
        })
        .collect()
});

struct Region {
    code: u16,
    id: String,
    /// `None` when the region has no metadata or a pattern did not compile: no number of it is
    /// valid, as `phonenumber` would not find its metadata either.
    patterns: OnceLock<Option<Patterns>>,
}

impl Region {
    fn patterns(&self) -> Option<&Patterns> {
        self.patterns
            .get_or_init(|| {
                let metadata = if self.id == NON_GEOGRAPHIC {
                    DATABASE.by_code(&self.code)?.into_iter().next()?
                } else {
                    DATABASE.by_id(self.id.as_str())?
                };
                Patterns::compile(metadata)
            })
            .as_ref()
    }
}

/// A region's patterns: the general one every valid number matches, then those of the number
/// types (premium rate, toll free, …, fixed line, mobile), one of which it must match too.
struct Patterns {
    leading_digits: Option<Regex>,
    general: Pattern,
    types: Vec<Pattern>,
}

impl Patterns {
    fn compile(metadata: &Metadata) -> Option<Self> {
        let descriptors = metadata.descriptors();
        Some(Self {
            leading_digits: match metadata.leading_digits() {
                Some(leading) => Some(anchored(leading.as_str())?),
                None => None,
            },
            general: Pattern::compile(descriptors.general())?,
            types: number_types(descriptors)
                .into_iter()
                .flatten()
                .map(Pattern::compile)
                .collect::<Option<_>>()?,
        })
    }

    /// `phonenumber`'s `number_type(..) != Type::Unknown`.
    fn matches_a_type(&self, national: &str) -> bool {
        self.general.matches(national) && self.types.iter().any(|t| t.matches(national))
    }
}

/// The descriptors of the number types, in the order `phonenumber`'s `number_type` tries them.
fn number_types(descriptors: &Descriptors) -> [Option<&Descriptor>; 10] {
    [
        descriptors.premium_rate(),
        descriptors.toll_free(),
        descriptors.shared_cost(),
        descriptors.voip(),
        descriptors.personal_number(),
        descriptors.pager(),
        descriptors.uan(),
        descriptors.voicemail(),
        descriptors.fixed_line(),
        descriptors.mobile(),
    ]
}

struct Pattern {
    regex: Regex,
    /// Lengths a number of the type can have; empty when the metadata gives none.
    lengths: Vec<u16>,
}

impl Pattern {
    fn compile(descriptor: &Descriptor) -> Option<Self> {
        Some(Self {
            regex: anchored(descriptor.national_number().as_str())?,
            lengths: descriptor.possible_length().to_vec(),
        })
    }

    /// `phonenumber`'s `Descriptor::is_match`: a possible length, and a match at the start.
    fn matches(&self, national: &str) -> bool {
        let length_ok = self.lengths.is_empty()
            || u16::try_from(national.len()).is_ok_and(|len| self.lengths.contains(&len));
        length_ok && self.regex.is_match(national)
    }
}

/// A metadata pattern as `phonenumber` compiles it (whitespace ignored), matching only at the
/// start of the text, as the crate's `find(..).start() == 0` does. The newline ends a `#`
/// comment the pattern might close with.
fn anchored(source: &str) -> Option<Regex> {
    regex::RegexBuilder::new(&format!("^(?:{source}\n)"))
        .ignore_whitespace(true)
        .build()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Numbers that probe each region's rules: every example number of every type, and variants
    /// of each one digit longer, one shorter and with a digit changed, parsed as national
    /// numbers of the region and as international ones.
    fn probes() -> Vec<(String, String)> {
        let mut probes = Vec::new();
        for (code, regions) in REGIONS.iter() {
            for region in regions {
                let metadata = if region.id == NON_GEOGRAPHIC {
                    DATABASE
                        .by_code(code)
                        .and_then(|all| all.into_iter().next())
                } else {
                    DATABASE.by_id(region.id.as_str())
                };
                let Some(metadata) = metadata else { continue };
                let descriptors = metadata.descriptors();
                let examples = std::iter::once(descriptors.general())
                    .chain(number_types(descriptors).into_iter().flatten())
                    .filter_map(Descriptor::example);
                for example in examples {
                    let mut variants = vec![
                        example.to_owned(),
                        format!("{example}7"),
                        example[..example.len().saturating_sub(1)].to_owned(),
                    ];
                    for at in 0..example.len() {
                        let mut changed = example.as_bytes().to_vec();
                        changed[at] = b'0' + (changed[at] - b'0' + 3) % 10;
                        variants.push(String::from_utf8(changed).expect("digits"));
                    }
                    for variant in variants {
                        probes.push((region.id.clone(), variant.clone()));
                        probes.push(("US".to_owned(), format!("+{code}{variant}")));
                    }
                }
            }
        }
        probes
    }

    #[test]
    fn agrees_with_phonenumber() {
        let probes = probes();
        assert!(probes.len() > 20_000, "{} probes", probes.len());
        let (mut valid, mut invalid) = (0, 0);
        for (region, text) in &probes {
            let region = region.parse().unwrap_or(phonenumber::country::Id::US);
            let Ok(number) = phonenumber::parse(Some(region), text) else {
                continue;
            };
            let expected = phonenumber::is_valid(&number);
            assert_eq!(is_valid(&number), expected, "{text} read in {region:?}");
            if expected {
                valid += 1;
            } else {
                invalid += 1;
            }
        }
        // Both answers are exercised in numbers, not only a few.
        assert!(
            valid > 5_000 && invalid > 5_000,
            "{valid} valid, {invalid} invalid"
        );
    }

    #[test]
    fn north_american_numbers_go_to_their_region() {
        let number = |text: &str| phonenumber::parse(None, text).expect("parses");
        // Toronto (CA), Kingston (JM) and San Francisco (US) share +1.
        for text in ["+1 416 555 0199", "+1 876 927 1234", "+1 415 555 2671"] {
            assert_eq!(
                is_valid(&number(text)),
                phonenumber::is_valid(&number(text))
            );
        }
        assert!(is_valid(&number("+1 650 253 0000")));
        assert!(!is_valid(&number("+1 253 0000")));
    }
}
