//! PARSE: one landed row and a plan give an extraction (raw identifiers, traits, promoted
//! fields, the derived identity_hash) or the reason the row is rejected. Pure and deterministic,
//! so reprocessing the landed rows gives the same result for the same mapping.

use std::borrow::Cow;

use idgraph_core::identity::IdentifierKind;

use crate::identity_hash::{NameAndAddress, identity_hash};
use crate::mapping::{Family, Plan, Target};
use crate::records::{Defect, Limits, Span, split_spans};

/// The version of the parsing rules; part of a job's record so that a change is visible.
pub const PARSER_VERSION: u32 = 1;

/// What a row says, before identifier normalization (which is the tenant's).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Extraction {
    /// (kind, raw value), in column order; `identity_hash` last when derived.
    pub identifiers: Vec<(String, String)>,
    /// (trait name, value), non-empty values only.
    pub traits: Vec<(String, String)>,
    /// (field, value) for the event's properties.
    pub promoted: Vec<(String, String)>,
    pub suppression_reason: Option<String>,
}

/// Why a row is not used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowRejection(pub String);

/// The row's `plan.columns.len()` fields as text (untrimmed), or why the row is not used: a
/// ragged row, an empty one, a field that is not UTF-8 (checked in that order).
fn text_fields<'a>(plan: &Plan, record: &'a [u8]) -> Result<Vec<Cow<'a, str>>, RowRejection> {
    let width = plan.columns.len();
    let spans = split_spans(record, plan.delimiter, width + 1);
    check_shape(&spans, width, |span| {
        let bytes = match span {
            Span::Range(range) => &record[range.clone()],
            Span::Unquoted(bytes) => bytes.as_slice(),
        };
        bytes.iter().all(u8::is_ascii_whitespace)
    })?;
    // Checked once as a whole, the row's fields are slices of its text: checking each of 400
    // fields by itself took longer than splitting the row.
    let text = std::str::from_utf8(record).ok();
    let mut texts = Vec::with_capacity(width);
    for (index, span) in spans.into_iter().take(width).enumerate() {
        let field = match (span, text) {
            (Span::Range(range), Some(text)) => text.get(range).map(Cow::Borrowed),
            (Span::Range(range), None) => {
                std::str::from_utf8(&record[range]).ok().map(Cow::Borrowed)
            }
            (Span::Unquoted(bytes), _) => String::from_utf8(bytes).ok().map(Cow::Owned),
        };
        match field {
            Some(field) => texts.push(field),
            None => {
                return Err(RowRejection(format!(
                    "column {} ({:?}) is not valid UTF-8",
                    index + 1,
                    plan.names[index]
                )));
            }
        }
    }
    Ok(texts)
}

/// A row of `width` fields (or more, all blank beyond) that are not all blank.
fn check_shape<F>(
    fields: &[F],
    width: usize,
    blank: impl Fn(&F) -> bool,
) -> Result<(), RowRejection> {
    if fields.len() != width {
        // A trailing delimiter (an empty extra field) is a common export quirk, not a shift.
        let only_empty_extra = fields.len() > width && fields[width..].iter().all(&blank);
        if !only_empty_extra {
            return Err(RowRejection(format!(
                "the row has {} fields; the header has {width}",
                fields.len()
            )));
        }
    }
    if fields.iter().all(&blank) {
        return Err(RowRejection("empty row".to_owned()));
    }
    Ok(())
}

/// Reads one landed row with a plan.
pub fn parse_row(
    plan: &Plan,
    record: &[u8],
    defect: Option<Defect>,
    limits: &Limits,
) -> Result<Extraction, RowRejection> {
    if let Some(defect) = defect {
        return Err(RowRejection(defect.reason(limits)));
    }
    if record.iter().all(|b| b.is_ascii_whitespace()) {
        return Err(RowRejection("empty row".to_owned()));
    }
    let fields = text_fields(plan, record)?;
    let mut extraction = Extraction::default();
    let mut parts = NameAndAddress::default();
    for ((target, field), name) in plan.columns.iter().zip(&fields).zip(&plan.names) {
        if *target == Target::Keep {
            // Most columns of a wide file: left as they landed, not even trimmed.
            continue;
        }
        let value: &str = field.trim();
        if value.is_empty() {
            continue;
        }
        match target {
            Target::Keep => {}
            Target::Identifier(kind) => extraction
                .identifiers
                .push((kind.to_string(), value.to_owned())),
            Target::Trait(trait_name) => extraction
                .traits
                .push((trait_name.clone(), value.to_owned())),
            Target::Promote(field) => extraction.promoted.push((field.clone(), value.to_owned())),
            Target::Family(family) => {
                if let Some(kind) = family.identifier_kind() {
                    extraction
                        .identifiers
                        .push((kind.to_owned(), value.to_owned()));
                    continue;
                }
                if *family == Family::SuppressionReason {
                    extraction
                        .suppression_reason
                        .get_or_insert_with(|| value.to_owned());
                    continue;
                }
                let slot = match family {
                    Family::FirstName => &mut parts.first_name,
                    Family::LastName => &mut parts.last_name,
                    Family::FullName => &mut parts.full_name,
                    Family::Address => &mut parts.address,
                    Family::Address2 => &mut parts.address2,
                    Family::City => &mut parts.city,
                    Family::State => &mut parts.state,
                    Family::Zip => &mut parts.zip,
                    _ => &mut None,
                };
                // The first non-empty column of a family feeds the hash; every one is a trait.
                if slot.is_none() {
                    *slot = Some(value);
                }
                if let Some(trait_name) = family.trait_name() {
                    let trait_name = if extraction.traits.iter().any(|(n, _)| n == trait_name) {
                        // Two columns of one family: the second keeps its own name.
                        crate::mapping::header_key(name)
                    } else {
                        trait_name.to_owned()
                    };
                    extraction.traits.push((trait_name, value.to_owned()));
                }
            }
        }
    }
    if let Some(hash) = identity_hash(&parts) {
        extraction
            .identifiers
            .push((IdentifierKind::IDENTITY_HASH.to_owned(), hash));
    }
    Ok(extraction)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mapping::Mapping;
    use crate::stream::Header;

    fn plan(header: &str) -> Plan {
        Mapping::auto().plan(&Header::parse(header.as_bytes(), b',').unwrap())
    }

    fn parse(plan: &Plan, row: &[u8]) -> Result<Extraction, RowRejection> {
        parse_row(plan, row, None, &Limits::default())
    }

    #[test]
    fn numbered_columns_fan_out_and_a_hash_is_derived() {
        let plan = plan("first,last,email1,email2,phone1,phone2,address,zip,plan");
        let row = parse(
            &plan,
            b"Ann,Smith,ann@x.com,,415-555-2671,(415) 555 0000,1 Main St,02139,pro",
        )
        .unwrap();
        let kinds: Vec<&str> = row.identifiers.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(kinds, ["email", "phone", "phone", "identity_hash"]);
        assert!(row.traits.contains(&("first_name".into(), "Ann".into())));
        assert!(row.traits.contains(&("zip".into(), "02139".into())));
        assert!(
            !row.traits.iter().any(|(n, _)| n == "plan"),
            "unmapped columns stay verbatim"
        );
    }

    #[test]
    fn bad_rows_are_rejected_with_a_reason() {
        let plan = plan("email,name");
        assert_eq!(
            parse(&plan, b"a@x.com").unwrap_err().0,
            "the row has 1 fields; the header has 2"
        );
        assert_eq!(
            parse(&plan, b"a@x.com,Ann,extra").unwrap_err().0,
            "the row has 3 fields; the header has 2"
        );
        assert!(
            parse(&plan, b"a@x.com,Ann,").is_ok(),
            "a trailing delimiter is tolerated"
        );
        assert_eq!(parse(&plan, b"").unwrap_err().0, "empty row");
        assert_eq!(parse(&plan, b" , ").unwrap_err().0, "empty row");
        assert_eq!(
            parse(&plan, b"a@x.com,An\xFFn").unwrap_err().0,
            "column 2 (\"name\") is not valid UTF-8"
        );
        let defect = parse_row(
            &plan,
            b"\"a",
            Some(Defect::UnbalancedQuote),
            &Limits::default(),
        );
        assert!(defect.unwrap_err().0.contains("unbalanced quote"));
    }

    proptest::proptest! {
        /// A row's fields read as text are its fields split as bytes, each decoded by itself:
        /// the same text, or the first field that is not UTF-8 named, whatever the row holds.
        #[test]
        fn fields_read_as_text_are_the_split_fields_decoded(
            record in proptest::collection::vec(
                proptest::sample::select(vec![b'a', b',', b'"', b' ', 0xC3, 0xA9, 0xFF]), 0..40),
        ) {
            let plan = plan("a,b,c");
            let expected: Result<Vec<String>, String> = {
                let fields = crate::records::split_fields(&record, b',');
                if fields.len() < 3 || fields[3..].iter().any(|f| !f.iter().all(u8::is_ascii_whitespace)) {
                    Err("ragged".to_owned())
                } else if fields.iter().all(|f| f.iter().all(u8::is_ascii_whitespace)) {
                    Err("empty".to_owned())
                } else {
                    fields[..3]
                        .iter()
                        .enumerate()
                        .map(|(i, f)| String::from_utf8(f.to_vec()).map_err(|_| format!("column {}", i + 1)))
                        .collect()
                }
            };
            let got = text_fields(&plan, &record)
                .map(|fields| fields.into_iter().map(Cow::into_owned).collect::<Vec<_>>())
                .map_err(|RowRejection(why)| {
                    if why.contains("fields; the header has") {
                        "ragged".to_owned()
                    } else if why == "empty row" {
                        "empty".to_owned()
                    } else {
                        why.split(" (").next().unwrap_or_default().to_owned()
                    }
                });
            proptest::prop_assert_eq!(got, expected);
        }
    }
}
