//! Mappings: which column holds what. The built-in `auto` mapping recognizes common headers; a
//! user mapping (TOML or JSON) names columns explicitly and may still fall back on `auto` for
//! the rest. Applied to a file's header, a mapping becomes a [`Plan`].

use std::collections::BTreeMap;

use idgraph_core::identity::IdentifierKind;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::stream::Header;

/// What a column holds, by family. Identifier families become identifiers; name and address
/// families feed the `identity_hash` and become traits of the same name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Family {
    ExternalId,
    Email,
    Phone,
    FirstName,
    LastName,
    FullName,
    Address,
    Address2,
    City,
    State,
    Zip,
    Country,
    /// Suppression imports: the reason of the row's entries (`dnc`, `litigator`...).
    SuppressionReason,
}

impl Family {
    pub const ALL: [Family; 13] = [
        Family::ExternalId,
        Family::Email,
        Family::Phone,
        Family::FirstName,
        Family::LastName,
        Family::FullName,
        Family::Address,
        Family::Address2,
        Family::City,
        Family::State,
        Family::Zip,
        Family::Country,
        Family::SuppressionReason,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Family::ExternalId => "external_id",
            Family::Email => "email",
            Family::Phone => "phone",
            Family::FirstName => "first_name",
            Family::LastName => "last_name",
            Family::FullName => "full_name",
            Family::Address => "address",
            Family::Address2 => "address2",
            Family::City => "city",
            Family::State => "state",
            Family::Zip => "zip",
            Family::Country => "country",
            Family::SuppressionReason => "suppression_reason",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|f| f.as_str() == raw)
    }

    /// The identifier kind of an identifier family.
    pub fn identifier_kind(self) -> Option<&'static str> {
        match self {
            Family::ExternalId => Some(IdentifierKind::EXTERNAL_ID),
            Family::Email => Some(IdentifierKind::EMAIL),
            Family::Phone => Some(IdentifierKind::PHONE),
            _ => None,
        }
    }

    /// The trait a name or address family is recorded as.
    pub fn trait_name(self) -> Option<&'static str> {
        match self {
            Family::FirstName => Some("first_name"),
            Family::LastName => Some("last_name"),
            Family::FullName => Some("name"),
            Family::Address => Some("address"),
            Family::Address2 => Some("address2"),
            Family::City => Some("city"),
            Family::State => Some("state"),
            Family::Zip => Some("zip"),
            Family::Country => Some("country"),
            _ => None,
        }
    }
}

/// Where one column goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Family(Family),
    /// A custom identifier kind of the tenant (`device_id`, `crm_id`...).
    Identifier(IdentifierKind),
    /// A trait of the person, under this name.
    Trait(String),
    /// Copied into the row's event properties under this name.
    Promote(String),
    /// Kept verbatim in the landed row only.
    Keep,
}

/// Presets change how a job resolves, not what it reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Preset {
    /// Lead files: phone numbers are `shared`, so a family landline links the people who give
    /// it without merging them.
    Leads,
}

impl Preset {
    pub fn as_str(self) -> &'static str {
        match self {
            Preset::Leads => "leads",
        }
    }
}

/// Why a mapping document was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid mapping: {0}")]
pub struct MappingError(pub String);

/// The normalized form of a header for matching: lower-case letters and digits only, so
/// `E-mail Address`, `email_address` and `EmailAddress` are one name.
pub fn header_key(name: &str) -> String {
    name.chars()
        .filter(|c| c.is_alphanumeric())
        .flat_map(char::to_lowercase)
        .collect()
}

/// The `auto` mapping's reading of a header key.
pub fn auto_family(key: &str) -> Option<Family> {
    let family = match key {
        "externalid" | "customerid" | "custid" | "customerno" | "customernumber" | "clientid"
        | "userid" | "crmid" | "accountid" => Family::ExternalId,
        "email" | "emailaddress" | "mail" | "emailaddr" => Family::Email,
        "phone" | "phonenumber" | "telephone" | "tel" | "homephone" | "workphone" | "landline"
        | "mobile" | "mobilephone" | "mobilenumber" | "cell" | "cellphone" | "cellular" => {
            Family::Phone
        }
        "firstname" | "first" | "fname" | "givenname" | "forename" => Family::FirstName,
        "lastname" | "last" | "lname" | "surname" | "familyname" => Family::LastName,
        "name" | "fullname" | "contactname" | "customername" => Family::FullName,
        "address" | "address1" | "street" | "streetaddress" | "addressline1" | "addr"
        | "street1" => Family::Address,
        "address2" | "addressline2" | "street2" | "unit" | "apt" | "apartment" | "suite" => {
            Family::Address2
        }
        "city" | "town" | "locality" => Family::City,
        "state" | "province" | "region" | "stateprovince" => Family::State,
        "zip" | "zipcode" | "postcode" | "postalcode" | "postal" | "zip5" => Family::Zip,
        "country" | "countrycode" => Family::Country,
        "suppressionreason" | "reason" | "dncreason" => Family::SuppressionReason,
        _ => return numbered_family(key),
    };
    Some(family)
}

/// `email1`..`emailN`, `phone1`..`phoneN` and their synonyms: one identifier each.
fn numbered_family(key: &str) -> Option<Family> {
    let stem = key.trim_end_matches(|c: char| c.is_ascii_digit());
    if stem.len() == key.len() || stem.is_empty() {
        return None;
    }
    match stem {
        "email" | "emailaddress" | "mail" => Some(Family::Email),
        "phone" | "phonenumber" | "telephone" | "tel" | "mobile" | "cell" | "cellphone"
        | "mobilephone" => Some(Family::Phone),
        _ => None,
    }
}

/// One column entry of a mapping document: a family name (`"email"`), `"keep"`, `"trait"`,
/// `"promote"`, or a table naming an identifier kind, a trait or a promoted field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ColumnDoc {
    Name(String),
    Table(ColumnTable),
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ColumnTable {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identifier: Option<String>,
    #[serde(default, rename = "trait", skip_serializing_if = "Option::is_none")]
    pub trait_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub promote: Option<String>,
}

/// A mapping file, as written.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MappingDoc {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preset: Option<String>,
    /// Whether columns not listed are read as the `auto` mapping reads them (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto: Option<bool>,
    #[serde(default)]
    pub columns: BTreeMap<String, ColumnDoc>,
}

/// A validated mapping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mapping {
    pub name: String,
    pub preset: Option<Preset>,
    pub auto: bool,
    /// Explicit columns: (name as written in the mapping, target).
    pub columns: Vec<(String, Target)>,
    doc: MappingDoc,
}

/// The built-in mappings.
pub const BUILT_IN: [&str; 2] = ["auto", "leads"];

impl Mapping {
    /// `auto`: common headers, case- and punctuation-insensitively.
    pub fn auto() -> Self {
        Self::from_doc(MappingDoc {
            name: Some("auto".into()),
            ..MappingDoc::default()
        })
        .unwrap_or_else(|_| unreachable!("the auto mapping is valid"))
    }

    /// `leads`: `auto` with the leads preset.
    pub fn leads() -> Self {
        Self::from_doc(MappingDoc {
            name: Some("leads".into()),
            preset: Some("leads".into()),
            ..MappingDoc::default()
        })
        .unwrap_or_else(|_| unreachable!("the leads mapping is valid"))
    }

    pub fn built_in(name: &str) -> Option<Self> {
        match name {
            "auto" => Some(Self::auto()),
            "leads" => Some(Self::leads()),
            _ => None,
        }
    }

    /// Reads a TOML mapping file.
    pub fn from_toml(text: &str) -> Result<Self, MappingError> {
        let doc: MappingDoc = toml::from_str(text).map_err(|e| MappingError(e.to_string()))?;
        Self::from_doc(doc)
    }

    /// Reads a JSON mapping file.
    pub fn from_json(text: &str) -> Result<Self, MappingError> {
        let doc: MappingDoc =
            serde_json::from_str(text).map_err(|e| MappingError(e.to_string()))?;
        Self::from_doc(doc)
    }

    /// Reads TOML or JSON, whichever the text is (JSON starts with `{`).
    pub fn from_text(text: &str) -> Result<Self, MappingError> {
        if text.trim_start().starts_with('{') {
            Self::from_json(text)
        } else {
            Self::from_toml(text)
        }
    }

    pub fn from_doc(doc: MappingDoc) -> Result<Self, MappingError> {
        let preset = match doc.preset.as_deref() {
            None | Some("") => None,
            Some("leads") => Some(Preset::Leads),
            Some(other) => {
                return Err(MappingError(format!(
                    "preset {other:?} is not one of: leads"
                )));
            }
        };
        let mut columns = Vec::new();
        for (column, entry) in &doc.columns {
            if header_key(column).is_empty() {
                return Err(MappingError(format!(
                    "column {column:?} has no letters or digits to match a header by"
                )));
            }
            let target = match entry {
                ColumnDoc::Name(name) => match name.as_str() {
                    "keep" | "ignore" => Target::Keep,
                    "trait" => Target::Trait(trait_name_of(column)?),
                    "promote" => Target::Promote(trait_name_of(column)?),
                    other => Target::Family(Family::parse(other).ok_or_else(|| {
                        let families: Vec<&str> = Family::ALL.iter().map(|f| f.as_str()).collect();
                        MappingError(format!(
                            "column {column:?}: {other:?} is not one of {}, keep, trait, promote \
                             (or a table: {{identifier = \"kind\"}}, {{trait = \"name\"}}, \
                             {{promote = \"name\"}})",
                            families.join(", ")
                        ))
                    })?),
                },
                ColumnDoc::Table(table) => {
                    let set = [
                        table.identifier.is_some(),
                        table.trait_name.is_some(),
                        table.promote.is_some(),
                    ];
                    if set.iter().filter(|s| **s).count() != 1 {
                        return Err(MappingError(format!(
                            "column {column:?}: give exactly one of identifier, trait, promote"
                        )));
                    }
                    if let Some(kind) = &table.identifier {
                        let kind = IdentifierKind::parse(kind)
                            .map_err(|e| MappingError(format!("column {column:?}: {e}")))?;
                        match Family::parse(kind.as_str()).filter(|f| f.identifier_kind().is_some())
                        {
                            Some(family) => Target::Family(family),
                            None => Target::Identifier(kind),
                        }
                    } else if let Some(name) = &table.trait_name {
                        Target::Trait(checked_name(column, name)?)
                    } else {
                        let name = table.promote.as_deref().unwrap_or_default();
                        Target::Promote(checked_name(column, name)?)
                    }
                }
            };
            columns.push((column.clone(), target));
        }
        Ok(Self {
            name: doc.name.clone().unwrap_or_else(|| "custom".to_owned()),
            preset,
            auto: doc.auto.unwrap_or(true),
            columns,
            doc,
        })
    }

    /// The document, for storage.
    pub fn doc(&self) -> &MappingDoc {
        &self.doc
    }

    /// Canonical JSON of the document: what a job freezes and what the digest covers.
    pub fn canonical_json(&self) -> String {
        serde_json::to_string(&self.doc).unwrap_or_default()
    }

    /// SHA-256 of the canonical JSON, in hex: two mappings that read files alike share it.
    pub fn digest(&self) -> String {
        Sha256::digest(self.canonical_json().as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    /// Applies the mapping to a file's header.
    pub fn plan(&self, header: &Header) -> Plan {
        let mut targets: Vec<Option<Target>> = vec![None; header.names.len()];
        let mut warnings = Vec::new();
        for (column, target) in &self.columns {
            // An exact name wins over a loose match, so `Email` and `email_2` stay addressable.
            let position = header
                .names
                .iter()
                .position(|name| name == column)
                .or_else(|| {
                    let key = header_key(column);
                    header.names.iter().position(|name| header_key(name) == key)
                });
            match position {
                Some(index) if targets[index].is_none() => targets[index] = Some(target.clone()),
                Some(_) => warnings.push(format!(
                    "the mapping names the column {column:?} twice; the first entry is used"
                )),
                None => warnings.push(format!(
                    "the mapping names a column {column:?} that the file does not have"
                )),
            }
        }
        let columns = targets
            .into_iter()
            .zip(&header.names)
            .map(|(target, name)| {
                target.unwrap_or_else(|| {
                    if self.auto {
                        auto_family(&header_key(name)).map_or(Target::Keep, Target::Family)
                    } else {
                        Target::Keep
                    }
                })
            })
            .collect();
        Plan {
            names: header.names.clone(),
            delimiter: header.delimiter,
            columns,
            warnings,
        }
    }
}

fn trait_name_of(column: &str) -> Result<String, MappingError> {
    let name: String = column
        .trim()
        .chars()
        .map(|c| {
            if c.is_alphanumeric() {
                c.to_lowercase().next().unwrap_or(c)
            } else {
                '_'
            }
        })
        .collect();
    let name = name.trim_matches('_').to_owned();
    if name.is_empty() {
        return Err(MappingError(format!(
            "column {column:?} has no letters or digits to name a trait by"
        )));
    }
    Ok(name)
}

fn checked_name(column: &str, name: &str) -> Result<String, MappingError> {
    let trimmed = name.trim();
    if trimmed.is_empty() || trimmed.len() > 128 {
        return Err(MappingError(format!(
            "column {column:?}: a trait or promoted name must have 1 to 128 characters"
        )));
    }
    Ok(trimmed.to_owned())
}

/// A mapping applied to one header: a target per column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub names: Vec<String>,
    pub delimiter: u8,
    pub columns: Vec<Target>,
    /// Mapping entries that matched nothing, or matched twice.
    pub warnings: Vec<String>,
}

impl Plan {
    /// Identifier kinds the plan reads, with the columns they come from.
    pub fn identifier_columns(&self) -> Vec<(usize, String)> {
        self.columns
            .iter()
            .enumerate()
            .filter_map(|(index, target)| match target {
                Target::Family(family) => family
                    .identifier_kind()
                    .map(|kind| (index, kind.to_owned())),
                Target::Identifier(kind) => Some((index, kind.to_string())),
                _ => None,
            })
            .collect()
    }

    pub fn has_family(&self, family: Family) -> bool {
        self.columns.contains(&Target::Family(family))
    }

    /// Whether rows can carry an `identity_hash` (a name and a street and a place).
    pub fn can_derive_identity_hash(&self) -> bool {
        let name = (self.has_family(Family::FirstName) && self.has_family(Family::LastName))
            || self.has_family(Family::FullName);
        let place = self.has_family(Family::Zip) || self.has_family(Family::City);
        name && self.has_family(Family::Address) && place
    }

    /// A one-line description per mapped column, for the job's summary.
    pub fn describe(&self) -> Vec<(String, String)> {
        self.names
            .iter()
            .zip(&self.columns)
            .filter_map(|(name, target)| {
                let what = match target {
                    Target::Family(family) => family.as_str().to_owned(),
                    Target::Identifier(kind) => format!("identifier {kind}"),
                    Target::Trait(trait_name) => format!("trait {trait_name}"),
                    Target::Promote(field) => format!("promoted {field}"),
                    Target::Keep => return None,
                };
                Some((name.clone(), what))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(names: &[&str]) -> Header {
        Header::parse(names.join(",").as_bytes(), b',').unwrap()
    }

    #[test]
    fn auto_reads_common_headers_loosely() {
        let plan = Mapping::auto().plan(&header(&[
            "First Name",
            "LAST_NAME",
            "E-mail",
            "Email2",
            "phone1",
            "Phone 2",
            "Mobile",
            "Street Address",
            "Apt",
            "City",
            "State",
            "Zip Code",
            "Country",
            "Customer ID",
            "Favourite colour",
        ]));
        use Family::*;
        let expected = [
            FirstName, LastName, Email, Email, Phone, Phone, Phone, Address, Address2, City, State,
            Zip, Country, ExternalId,
        ];
        for (index, family) in expected.iter().enumerate() {
            assert_eq!(
                plan.columns[index],
                Target::Family(*family),
                "{}",
                plan.names[index]
            );
        }
        assert_eq!(plan.columns[14], Target::Keep);
        assert_eq!(plan.identifier_columns().len(), 6);
        assert!(plan.can_derive_identity_hash());
    }

    #[test]
    fn user_mappings_read_toml_and_json_alike() {
        let toml_text = r#"
            name = "crm"
            preset = "leads"
            auto = false
            [columns]
            "Cust No" = "external_id"
            "Mail" = "email"
            "Device" = { identifier = "device_id" }
            "Score" = { trait = "lead_score" }
            "Campaign" = "promote"
            "Notes" = "keep"
        "#;
        let json_text = r#"{"name": "crm", "preset": "leads", "auto": false, "columns": {
            "Cust No": "external_id", "Mail": "email", "Device": {"identifier": "device_id"},
            "Score": {"trait": "lead_score"}, "Campaign": "promote", "Notes": "keep"}}"#;
        let from_toml = Mapping::from_text(toml_text).unwrap();
        let from_json = Mapping::from_text(json_text).unwrap();
        assert_eq!(from_toml, from_json);
        assert_eq!(from_toml.digest(), from_json.digest());
        assert_eq!(from_toml.preset, Some(Preset::Leads));
        let plan = from_toml.plan(&header(&[
            "cust_no", "Mail", "Device", "Score", "Campaign", "Phone", "Extra",
        ]));
        assert_eq!(plan.columns[0], Target::Family(Family::ExternalId));
        assert_eq!(
            plan.columns[2],
            Target::Identifier(IdentifierKind::parse("device_id").unwrap())
        );
        assert_eq!(plan.columns[3], Target::Trait("lead_score".into()));
        assert_eq!(plan.columns[4], Target::Promote("campaign".into()));
        assert_eq!(
            plan.columns[5],
            Target::Keep,
            "auto = false leaves Phone alone"
        );
        assert_eq!(
            plan.warnings.len(),
            1,
            "Notes is not in the file: {:?}",
            plan.warnings
        );
    }

    #[test]
    fn bad_mappings_say_what_is_wrong() {
        for (text, expected) in [
            ("[columns]\nA = \"emial\"", "not one of"),
            ("preset = \"family\"", "preset"),
            (
                "[columns]\nA = { identifier = \"Device ID\" }",
                "identifier kind",
            ),
            (
                "[columns]\nA = { trait = \"x\", promote = \"y\" }",
                "exactly one",
            ),
            ("colums = {}", "unknown field"),
            ("{\"columns\": 3}", "invalid type"),
        ] {
            let err = Mapping::from_text(text).unwrap_err();
            assert!(err.to_string().contains(expected), "{text}: {err}");
        }
    }
}
