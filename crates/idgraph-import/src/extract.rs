//! PARSE: one landed row and a plan give an extraction (raw identifiers, traits, promoted
//! fields, the derived identity_hash) or the reason the row is rejected. Pure and deterministic,
//! so reprocessing the landed rows gives the same result for the same mapping.

use idgraph_core::identity::IdentifierKind;

use crate::identity_hash::{NameAndAddress, identity_hash};
use crate::mapping::{Family, Plan, Target};
use crate::records::{Defect, Limits, split_fields};

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
    let fields = split_fields(record, plan.delimiter);
    let width = plan.columns.len();
    if fields.len() != width {
        // A trailing delimiter (an empty extra field) is a common export quirk, not a shift.
        let only_empty_extra = fields.len() > width
            && fields[width..]
                .iter()
                .all(|f| f.iter().all(u8::is_ascii_whitespace));
        if !only_empty_extra {
            return Err(RowRejection(format!(
                "the row has {} fields; the header has {width}",
                fields.len()
            )));
        }
    }
    if fields.iter().all(|f| f.iter().all(u8::is_ascii_whitespace)) {
        return Err(RowRejection("empty row".to_owned()));
    }
    let mut texts: Vec<&str> = Vec::with_capacity(width);
    for (index, field) in fields.iter().take(width).enumerate() {
        match std::str::from_utf8(field) {
            Ok(text) => texts.push(text.trim()),
            Err(_) => {
                return Err(RowRejection(format!(
                    "column {} ({:?}) is not valid UTF-8",
                    index + 1,
                    plan.names[index]
                )));
            }
        }
    }
    let mut extraction = Extraction::default();
    let mut parts = NameAndAddress::default();
    for ((target, value), name) in plan.columns.iter().zip(&texts).zip(&plan.names) {
        if value.is_empty() {
            continue;
        }
        match target {
            Target::Keep => {}
            Target::Identifier(kind) => extraction
                .identifiers
                .push((kind.to_string(), (*value).to_owned())),
            Target::Trait(trait_name) => extraction
                .traits
                .push((trait_name.clone(), (*value).to_owned())),
            Target::Promote(field) => extraction
                .promoted
                .push((field.clone(), (*value).to_owned())),
            Target::Family(family) => {
                if let Some(kind) = family.identifier_kind() {
                    extraction
                        .identifiers
                        .push((kind.to_owned(), (*value).to_owned()));
                    continue;
                }
                if *family == Family::SuppressionReason {
                    extraction
                        .suppression_reason
                        .get_or_insert_with(|| (*value).to_owned());
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
                    extraction.traits.push((trait_name, (*value).to_owned()));
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
}
