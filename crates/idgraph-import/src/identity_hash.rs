//! The `identity_hash` identifier: one value for "this name at this address", however the file
//! spells them.
//!
//! Normalization (version 1; the version is part of the hashed text, so a change of rules never
//! collides with values made under the old ones):
//!
//! 1. **Case and accents**: lower-cased; common Latin accented letters folded to their base
//!    letter (`é` → `e`, `ß` → `ss`).
//! 2. **Punctuation**: everything but letters and digits becomes a space; runs of spaces are one.
//! 3. **Name**: first and last name columns, or a full name (`Last, First` is swapped). Titles
//!    (`mr`, `mrs`, `ms`, `miss`, `dr`, `prof`) and single-letter initials are dropped; the key
//!    is the first given-name token, the last family-name token, and a generational suffix
//!    (`jr`, `sr`, `ii`, `iii`, `iv`) when there is one: a father and a son at one address stay
//!    two persons.
//! 4. **Street**: every word goes through the USPS abbreviations (`Street` → `st`, `Avenue` →
//!    `ave`, `North` → `n`, ...); unit designators (`Apartment`, `Apt`, `Unit`, `Suite`, `Ste`,
//!    `#`, `Room`, `Lot`) become `unit`, and the unit number is kept with its letters joined
//!    (`Apt 4-B`, `#4b` → `unit 4b`): two households in one building stay apart. A second address
//!    line without a designator counts as the unit.
//! 5. **Place**: the ZIP code's first five digits (US), or the whole postcode without spaces
//!    (letters: UK, Canada...), or else city and state.
//!
//! A row gets an `identity_hash` only with a name, a street and a place. The value is the first
//! 32 hex digits of SHA-256 over `idh1`, the name key, the street key and the place key.

use sha2::{Digest, Sha256};

/// The parts of a row that make up an identity.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NameAndAddress<'a> {
    pub first_name: Option<&'a str>,
    pub last_name: Option<&'a str>,
    pub full_name: Option<&'a str>,
    pub address: Option<&'a str>,
    pub address2: Option<&'a str>,
    pub city: Option<&'a str>,
    pub state: Option<&'a str>,
    pub zip: Option<&'a str>,
}

/// The identity hash of a row, when it has a name, a street and a place.
pub fn identity_hash(parts: &NameAndAddress<'_>) -> Option<String> {
    let name = name_key(parts.first_name, parts.last_name, parts.full_name)?;
    let street = street_key(parts.address?, parts.address2)?;
    let place = place_key(parts.zip, parts.city, parts.state)?;
    let digest = Sha256::digest(format!("idh1\x1f{name}\x1f{street}\x1f{place}").as_bytes());
    Some(digest[..16].iter().map(|b| format!("{b:02x}")).collect())
}

/// Lower case, accents folded, punctuation to spaces, single spaces.
pub fn fold(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut space = true;
    // Lower-cased first, so the accent table needs only lower-case letters.
    for c in text.chars().flat_map(char::to_lowercase) {
        let folded = fold_char(c);
        for c in folded.chars().flat_map(char::to_lowercase) {
            if c.is_alphanumeric() {
                out.push(c);
                space = false;
            } else if !space {
                out.push(' ');
                space = true;
            }
        }
    }
    if out.ends_with(' ') {
        out.pop();
    }
    out
}

fn fold_char(c: char) -> std::borrow::Cow<'static, str> {
    let base = match c {
        'à' | 'á' | 'â' | 'ã' | 'ä' | 'å' | 'ā' | 'ă' | 'ą' | 'À' | 'Á' | 'Â' | 'Ã' | 'Ä' | 'Å' => {
            "a"
        }
        'ç' | 'ć' | 'č' | 'Ç' | 'Ć' | 'Č' => "c",
        'ď' | 'đ' | 'Ď' | 'Đ' => "d",
        'è' | 'é' | 'ê' | 'ë' | 'ē' | 'ė' | 'ę' | 'ě' | 'È' | 'É' | 'Ê' | 'Ë' => "e",
        'ì' | 'í' | 'î' | 'ï' | 'ī' | 'į' | 'Ì' | 'Í' | 'Î' | 'Ï' => "i",
        'ł' | 'ľ' | 'Ł' | 'Ľ' => "l",
        'ñ' | 'ń' | 'ň' | 'Ñ' | 'Ń' | 'Ň' => "n",
        'ò' | 'ó' | 'ô' | 'õ' | 'ö' | 'ø' | 'ō' | 'ő' | 'Ò' | 'Ó' | 'Ô' | 'Õ' | 'Ö' | 'Ø' => {
            "o"
        }
        'ř' | 'Ř' => "r",
        'ś' | 'š' | 'ş' | 'Ś' | 'Š' | 'Ş' => "s",
        'ť' | 'ţ' | 'Ť' | 'Ţ' => "t",
        'ù' | 'ú' | 'û' | 'ü' | 'ū' | 'ů' | 'ű' | 'Ù' | 'Ú' | 'Û' | 'Ü' => "u",
        'ý' | 'ÿ' | 'Ý' => "y",
        'ź' | 'ż' | 'ž' | 'Ź' | 'Ż' | 'Ž' => "z",
        'ß' => "ss",
        'æ' | 'Æ' => "ae",
        'œ' | 'Œ' => "oe",
        // An apostrophe joins rather than splits: O'Brien and OBrien are one name.
        '\'' | '’' => "",
        other => return std::borrow::Cow::Owned(other.to_string()),
    };
    std::borrow::Cow::Borrowed(base)
}

const TITLES: [&str; 6] = ["mr", "mrs", "ms", "miss", "dr", "prof"];
const SUFFIXES: [&str; 5] = ["jr", "sr", "ii", "iii", "iv"];

fn name_tokens(text: &str) -> Vec<String> {
    fold(text)
        .split(' ')
        .filter(|t| !t.is_empty())
        .map(str::to_owned)
        .collect()
}

/// `given family [suffix]`, from first/last name columns or a full name.
pub fn name_key(first: Option<&str>, last: Option<&str>, full: Option<&str>) -> Option<String> {
    fn present(value: Option<&str>) -> Option<&str> {
        value.filter(|s| !s.trim().is_empty())
    }
    let (given, family) = match (present(first), present(last), present(full)) {
        (Some(first), Some(last), _) => (name_tokens(first), name_tokens(last)),
        (_, _, Some(full)) => match full.split_once(',') {
            // "Smith, Ann B." — unless what follows the comma is only a suffix ("Ann Smith, Jr").
            Some((before, after))
                if !name_tokens(after)
                    .iter()
                    .all(|t| SUFFIXES.contains(&t.as_str())) =>
            {
                (name_tokens(after), name_tokens(before))
            }
            _ => {
                let tokens = name_tokens(full);
                (tokens.clone(), tokens)
            }
        },
        _ => return None,
    };
    let mut suffix = None;
    let mut family: Vec<String> = family
        .into_iter()
        .filter(|t| {
            if SUFFIXES.contains(&t.as_str()) {
                suffix = Some(t.clone());
                false
            } else {
                true
            }
        })
        .collect();
    family.retain(|t| t.chars().count() > 1 && !TITLES.contains(&t.as_str()));
    let given: Vec<String> = given
        .into_iter()
        .filter(|t| {
            t.chars().count() > 1
                && !TITLES.contains(&t.as_str())
                && !SUFFIXES.contains(&t.as_str())
        })
        .collect();
    let given = given.first()?;
    let family = family.last()?;
    if given == family && present(first).is_none() {
        // A full name of one word is not enough to tell people apart.
        return None;
    }
    Some(match suffix {
        Some(suffix) => format!("{given} {family} {suffix}"),
        None => format!("{given} {family}"),
    })
}

/// USPS Publication 28 abbreviations of street suffixes, directionals and secondary units,
/// applied to every word (consistently on both sides, so "Court St" and "Ct Street" agree).
fn abbreviate(word: &str) -> &str {
    match word {
        "alley" | "allee" | "ally" => "aly",
        "annex" | "anex" | "annx" => "anx",
        "avenue" | "av" | "aven" | "avenu" | "avn" | "avnue" => "ave",
        "boulevard" | "boul" | "boulv" => "blvd",
        "bypass" | "bypa" | "bypas" | "byps" => "byp",
        "causeway" | "causwa" => "cswy",
        "center" | "centre" | "cent" | "centr" | "cnter" | "cntr" => "ctr",
        "circle" | "circ" | "circl" | "crcl" | "crcle" => "cir",
        "court" | "crt" => "ct",
        "courts" => "cts",
        "cove" => "cv",
        "creek" => "crk",
        "crescent" | "crsent" | "crsnt" => "cres",
        "crossing" | "crssng" => "xing",
        "drive" | "driv" | "drv" => "dr",
        "expressway" | "exp" | "expr" | "express" | "expw" => "expy",
        "extension" | "extn" | "extnsn" => "ext",
        "freeway" | "frway" | "frwy" => "fwy",
        "gardens" | "gardn" | "grden" | "grdn" => "gdns",
        "grove" | "grov" => "grv",
        "harbor" | "harb" | "harbr" | "hrbor" => "hbr",
        "heights" | "ht" => "hts",
        "highway" | "highwy" | "hiway" | "hiwy" | "hway" => "hwy",
        "hill" => "hl",
        "hollow" | "hllw" | "hollows" | "holws" => "holw",
        "junction" | "jction" | "jctn" | "junctn" | "juncton" => "jct",
        "lake" => "lk",
        "lane" => "ln",
        "manor" => "mnr",
        "meadows" | "mdw" | "medows" => "mdws",
        "mount" => "mt",
        "mountain" | "mntain" | "mntn" | "mountin" => "mtn",
        "parkway" | "parkwy" | "pkway" | "pky" => "pkwy",
        "place" => "pl",
        "plaza" | "plza" => "plz",
        "point" => "pt",
        "port" => "prt",
        "ridge" | "rdge" => "rdg",
        "road" => "rd",
        "route" => "rte",
        "square" | "sqr" | "sqre" | "squ" => "sq",
        "station" | "statn" | "stn" => "sta",
        "street" | "strt" | "str" => "st",
        "terrace" | "terr" => "ter",
        "trail" | "trails" | "trls" => "trl",
        "turnpike" | "trnpk" | "turnpk" => "tpke",
        "valley" | "vally" | "vlly" => "vly",
        "view" => "vw",
        "village" | "vill" | "villag" | "villg" => "vlg",
        "north" => "n",
        "south" => "s",
        "east" => "e",
        "west" => "w",
        "northeast" => "ne",
        "northwest" => "nw",
        "southeast" => "se",
        "southwest" => "sw",
        "floor" => "fl",
        "building" => "bldg",
        other => other,
    }
}

fn is_unit_designator(word: &str) -> bool {
    matches!(
        word,
        "unit" | "apartment" | "apt" | "suite" | "ste" | "room" | "rm" | "lot" | "spc" | "space"
    )
}

/// `<street words> [unit <number>]`.
pub fn street_key(address: &str, address2: Option<&str>) -> Option<String> {
    let mut words: Vec<String> = Vec::new();
    let mut unit: Option<String> = None;
    let mut read = |text: &str, bare_is_unit: bool| {
        // `#` marks a unit number; read it as the word "unit" before punctuation goes away.
        let text = text.replace('#', " unit ");
        let tokens: Vec<String> = fold(&text)
            .split(' ')
            .filter(|t| !t.is_empty())
            .map(str::to_owned)
            .collect();
        match tokens.iter().position(|t| is_unit_designator(t)) {
            Some(at) => {
                words.extend(tokens[..at].iter().map(|t| abbreviate(t).to_owned()));
                let number: String = tokens[at + 1..]
                    .iter()
                    .filter(|t| !is_unit_designator(t))
                    .map(String::as_str)
                    .collect();
                if !number.is_empty() {
                    unit = Some(number);
                }
            }
            None if bare_is_unit => {
                let number: String = tokens.concat();
                if !number.is_empty() {
                    unit = Some(number);
                }
            }
            None => words.extend(tokens.iter().map(|t| abbreviate(t).to_owned())),
        }
    };
    read(address, false);
    if let Some(second) = address2 {
        read(second, true);
    }
    if words.is_empty() {
        return None;
    }
    let mut key = words.join(" ");
    if let Some(unit) = unit {
        key.push_str(" unit ");
        key.push_str(&unit);
    }
    Some(key)
}

/// A ZIP code's first five digits, a postcode without spaces, or city and state.
pub fn place_key(zip: Option<&str>, city: Option<&str>, state: Option<&str>) -> Option<String> {
    if let Some(zip) = zip.map(str::trim).filter(|z| !z.is_empty()) {
        let compact: String = zip
            .chars()
            .filter(char::is_ascii_alphanumeric)
            .map(|c| c.to_ascii_lowercase())
            .collect();
        if !compact.is_empty() && compact.chars().all(|c| c.is_ascii_digit()) {
            // ZIP+4 and ZIPs that lost their leading zero in a spreadsheet.
            let digits = if compact.len() > 5 {
                &compact[..5]
            } else {
                &compact
            };
            return Some(format!("zip {digits:0>5}"));
        }
        if !compact.is_empty() {
            return Some(format!("postcode {compact}"));
        }
    }
    let city = fold(city?);
    if city.is_empty() {
        return None;
    }
    let state = state.map(fold).unwrap_or_default();
    Some(format!("city {city} {state}").trim_end().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts<'a>(
        first: &'a str,
        last: &'a str,
        address: &'a str,
        zip: &'a str,
    ) -> NameAndAddress<'a> {
        NameAndAddress {
            first_name: Some(first),
            last_name: Some(last),
            address: Some(address),
            zip: Some(zip),
            ..NameAndAddress::default()
        }
    }

    #[test]
    fn spellings_of_one_identity_agree() {
        let reference = identity_hash(&parts("Ann", "Smith", "123 Main Street Apt 4B", "02139"));
        assert!(reference.is_some());
        for same in [
            parts("ANN", "smith", "123 main st., apt. 4-b", "02139-4307"),
            parts(" Ann ", "Smith", "123 Main St #4B", "2139"),
            parts("Dr. Ann M.", "Smith", "123 MAIN STR UNIT 4 B", "02139"),
            parts("Ánn", "Smith", "123 Main St Suite 4b", "02139"),
        ] {
            assert_eq!(identity_hash(&same), reference, "{same:?}");
        }
        let full = NameAndAddress {
            full_name: Some("Smith, Ann"),
            address: Some("123 Main St"),
            address2: Some("4B"),
            city: Some("Cambridge"),
            zip: Some("02139"),
            ..NameAndAddress::default()
        };
        assert_eq!(identity_hash(&full), reference);
    }

    #[test]
    fn different_people_and_homes_differ() {
        let ann = identity_hash(&parts("Ann", "Smith", "123 Main St Apt 4B", "02139"));
        for other in [
            parts("Bob", "Smith", "123 Main St Apt 4B", "02139"),
            parts("Ann", "Smith", "123 Main St Apt 5B", "02139"),
            parts("Ann", "Smith", "124 Main St Apt 4B", "02139"),
            parts("Ann", "Smith", "123 Main Ave Apt 4B", "02139"),
            parts("Ann", "Smith", "123 Main St Apt 4B", "02140"),
            parts("Ann", "Smith Jr", "123 Main St Apt 4B", "02139"),
        ] {
            assert_ne!(identity_hash(&other), ann, "{other:?}");
        }
    }

    #[test]
    fn incomplete_rows_have_no_hash() {
        assert_eq!(identity_hash(&parts("Ann", "Smith", "", "02139")), None);
        assert_eq!(identity_hash(&parts("", "", "1 Main St", "02139")), None);
        assert_eq!(identity_hash(&parts("Ann", "Smith", "1 Main St", "")), None);
        let one_word = NameAndAddress {
            full_name: Some("Madonna"),
            address: Some("1 Main St"),
            zip: Some("02139"),
            ..NameAndAddress::default()
        };
        assert_eq!(identity_hash(&one_word), None);
    }

    #[test]
    fn keys_read_as_documented() {
        assert_eq!(fold("  O'Brien-Smith, JOSÉ "), "obrien smith jose");
        assert_eq!(
            name_key(None, None, Some("Mr. John A. Smith Jr.")).as_deref(),
            Some("john smith jr")
        );
        assert_eq!(
            name_key(None, None, Some("Smith, John")).as_deref(),
            Some("john smith")
        );
        assert_eq!(
            street_key("100 North Park Avenue Apartment 12", None).as_deref(),
            Some("100 n park ave unit 12")
        );
        assert_eq!(
            place_key(Some("SW1A 1AA"), None, None).as_deref(),
            Some("postcode sw1a1aa")
        );
        assert_eq!(
            place_key(None, Some("New York"), Some("NY")).as_deref(),
            Some("city new york ny")
        );
    }

    proptest::proptest! {
        #[test]
        fn folding_is_idempotent(text in "\\PC{0,40}") {
            let once = fold(&text);
            proptest::prop_assert_eq!(fold(&once), once.clone());
            if let Some(key) = street_key(&text, None) {
                proptest::prop_assert_eq!(street_key(&key, None), Some(key));
            }
        }
    }
}
