//! Normalization case tables and properties, through the public API only.

use std::collections::{BTreeMap, BTreeSet};

use idgraph_core::identity::{
    IdentifierKind, IdentitySettings, KindRule, Policy, RejectReason, default_blocked_values,
};
use proptest::prelude::*;

/// What a case expects: the normalized value, blocked, or invalid with a reason containing text.
#[derive(Debug)]
enum Expect<'a> {
    Value(&'a str),
    Blocked,
    Invalid(&'a str),
}
use Expect::*;

fn check(settings: &IdentitySettings, kind: &str, cases: &[(&str, Expect<'_>)]) {
    for (raw, expected) in cases {
        let got = settings.normalize(kind, raw);
        match (expected, &got) {
            (Value(value), Ok(identifier)) => {
                assert_eq!(identifier.value(), *value, "{kind} {raw:?}");
                assert_eq!(identifier.kind().as_str(), kind);
            }
            (Blocked, Err(rejection)) if rejection.reason == RejectReason::Blocked => {}
            (Invalid(part), Err(rejection)) => match &rejection.reason {
                RejectReason::Invalid(reason) => {
                    assert!(
                        reason.contains(part),
                        "{kind} {raw:?}: {reason:?} lacks {part:?}"
                    );
                    assert_eq!(rejection.raw, *raw);
                }
                other => panic!("{kind} {raw:?}: expected invalid, got {other:?}"),
            },
            _ => panic!("{kind} {raw:?}: expected {expected:?}, got {got:?}"),
        }
    }
}

fn with_region(region: &str) -> IdentitySettings {
    IdentitySettings {
        default_region: region.to_owned(),
        ..IdentitySettings::default()
    }
}

#[test]
fn emails() {
    let long_local = format!("{}@example.com", "a".repeat(65));
    let long = format!("{}@{}.com", "a".repeat(60), "b".repeat(200));
    check(
        &IdentitySettings::default(),
        "email",
        &[
            ("  Ann@Example.COM ", Value("ann@example.com")),
            (
                "ann.lee+promo@mail.example.co.uk",
                Value("ann.lee+promo@mail.example.co.uk"),
            ),
            ("Ü@Exämple.de", Value("ü@exämple.de")),
            ("a@example.xn--p1ai", Value("a@example.xn--p1ai")),
            ("a@b", Invalid("domain has no dot")),
            ("foo@", Invalid("missing domain")),
            ("@x.com", Invalid("missing local part")),
            ("a b@x.com", Invalid("white space")),
            ("Ann <ann@x.com>", Invalid("white space")),
            ("ann", Invalid("missing '@'")),
            ("a@@x.com", Invalid("more than one '@'")),
            ("\"a@b\"@x.com", Invalid("quoted")),
            ("a@x.c", Invalid("top-level domain")),
            ("a@x.c0m", Invalid("top-level domain")),
            ("a@x.com.", Invalid("top-level domain")),
            ("a@x..com", Invalid("empty label")),
            ("a..b@x.com", Invalid("character")),
            ("a@[127.0.0.1]", Invalid("top-level domain")),
            ("a\u{7}@x.com", Invalid("control")),
            (long_local.as_str(), Invalid("local part longer than 64")),
            (long.as_str(), Invalid("longer than 254")),
            ("TEST@test.com", Blocked),
            (" null ", Blocked),
        ],
    );
}

#[test]
fn phones() {
    let us = IdentitySettings::default();
    check(
        &us,
        "phone",
        &[
            ("(415) 555-2671", Value("+14155552671")),
            (" +1 415.555.2671 ", Value("+14155552671")),
            ("+44 20 7946 0958", Value("+442079460958")),
            // The US international dialing prefix.
            ("011 44 20 7946 0958", Value("+442079460958")),
            ("12", Invalid("")),
            ("+999 1234", Invalid("unknown country code")),
            ("415-555-2671 ext. 12", Invalid("'e'")),
            ("1-800-FLOWERS", Invalid("'F'")),
            ("tel:+14155552671", Invalid("'t'")),
            ("415+5552671", Invalid("'+' may only start")),
            ("+1 415 555 267", Invalid("")),
            (&"1".repeat(70), Invalid("longer than 64")),
            ("000-000-0000", Blocked),
            ("0000000000", Blocked),
            ("+1 000-000-0000", Blocked),
            ("+44 0000 000000", Blocked),
            ("0", Blocked),
        ],
    );
    check(
        &with_region("GB"),
        "phone",
        &[
            ("020 7946 0958", Value("+442079460958")),
            ("+1 (415) 555-2671", Value("+14155552671")),
            // The GB international dialing prefix.
            ("001 415 555 2671", Value("+14155552671")),
        ],
    );
    // The same national number means something else in another region: it is not guessed.
    check(&us, "phone", &[("020 7946 0958", Invalid(""))]);
}

#[test]
fn ids_keep_their_case_and_are_bounded() {
    let max = "x".repeat(256);
    let too_long = "x".repeat(257);
    for kind in ["external_id", "anonymous_id"] {
        check(
            &IdentitySettings::default(),
            kind,
            &[
                ("  User-42 ", Value("User-42")),
                ("ÄÖÜ 7", Value("ÄÖÜ 7")),
                (max.as_str(), Value(max.as_str())),
                (too_long.as_str(), Invalid("longer than 256")),
                ("a\u{0}b", Invalid("control")),
                ("a\nb", Invalid("control")),
                ("", Blocked),
                (" \t\n ", Blocked),
            ],
        );
    }
}

#[test]
fn every_default_blocked_value_is_blocked_in_any_case() {
    let settings = IdentitySettings::default();
    assert!(default_blocked_values().contains(&"test@test.com"));
    for value in default_blocked_values() {
        let upper = value.to_uppercase();
        let mut title = value.to_string();
        if let Some(first) = title.get_mut(0..1) {
            first.make_ascii_uppercase();
        }
        for raw in [value.to_string(), upper, title, format!("  {value}\t")] {
            for kind in ["external_id", "anonymous_id", "email", "phone"] {
                let rejection = settings.normalize(kind, &raw).unwrap_err();
                assert_eq!(rejection.reason, RejectReason::Blocked, "{kind} {raw:?}");
            }
        }
    }
    // Near misses are ordinary ids.
    for raw in ["nullable", "none1", "guest-7", "00"] {
        assert!(settings.normalize("external_id", raw).is_ok(), "{raw}");
    }
}

#[test]
fn tenant_blocked_values_add_to_the_defaults() {
    let settings = IdentitySettings {
        blocked_values: BTreeMap::from([
            ("*".to_owned(), BTreeSet::from(["TBD".to_owned()])),
            (
                "email".to_owned(),
                BTreeSet::from(["NoReply@Shop.example".to_owned()]),
            ),
            // In E.164: a raw value written differently is caught on its normalized form.
            (
                "phone".to_owned(),
                BTreeSet::from(["+14155552671".to_owned()]),
            ),
        ]),
        ..IdentitySettings::default()
    };
    settings.validate().unwrap();
    let blocked = [
        ("external_id", "tbd"),
        ("anonymous_id", " Tbd "),
        ("email", "noreply@shop.example"),
        ("email", " NOREPLY@shop.EXAMPLE"),
        ("phone", "(415) 555-2671"),
        ("external_id", "null"),
    ];
    for (kind, raw) in blocked {
        let rejection = settings.normalize(kind, raw).unwrap_err();
        assert_eq!(rejection.reason, RejectReason::Blocked, "{kind} {raw:?}");
    }
    // A value blocked for one kind is fine for another.
    assert_eq!(
        settings
            .normalize("external_id", "noreply@shop.example")
            .unwrap()
            .value(),
        "noreply@shop.example"
    );
    assert!(settings.normalize("phone", "(415) 555-2672").is_ok());
}

#[test]
fn kinds_must_be_configured() {
    let mut settings = IdentitySettings::default();
    let rejection = settings.normalize("fax", "123").unwrap_err();
    assert_eq!(rejection.reason, RejectReason::UnknownKind);
    assert_eq!(
        rejection.to_string(),
        "\"fax\" is not a known identifier kind"
    );
    assert_eq!(
        settings.normalize("Email", "a@x.com").unwrap_err().reason,
        RejectReason::UnknownKind
    );
    settings.kinds.insert(
        IdentifierKind::parse("device_id").unwrap(),
        KindRule {
            priority: 5,
            policy: Policy::Shared,
            limit: None,
        },
    );
    let device = settings.normalize("device_id", " iPhone-ABC ").unwrap();
    assert_eq!(
        (device.kind().as_str(), device.value()),
        ("device_id", "iPhone-ABC")
    );
}

#[test]
fn rejections_explain_themselves() {
    let settings = IdentitySettings::default();
    assert_eq!(
        settings.normalize("email", "foo@").unwrap_err().to_string(),
        r#"email "foo@" is invalid: missing domain"#
    );
    assert_eq!(
        settings
            .normalize("phone", "000-000-0000")
            .unwrap_err()
            .to_string(),
        r#"phone "000-000-0000" is blocked"#
    );
}

fn normalize_twice(
    settings: &IdentitySettings,
    kind: &str,
    raw: &str,
) -> Result<(), TestCaseError> {
    if let Ok(first) = settings.normalize(kind, raw) {
        let second = settings.normalize(kind, first.value());
        prop_assert_eq!(second.as_ref(), Ok(&first), "{} {:?}", kind, raw);
    }
    Ok(())
}

proptest! {
    #[test]
    fn emails_normalize_idempotently(
        raw in prop_oneof![
            r"\s{0,2}[A-Za-z0-9._%+-]{1,12}@[A-Za-z0-9-]{1,10}\.[A-Za-z]{2,5}\s{0,2}",
            r"[A-Za-zÀ-ÿΣσς@. 0-9-]{0,20}",
            any::<String>(),
        ]
    ) {
        let settings = IdentitySettings::default();
        normalize_twice(&settings, "email", &raw)?;
        // Never changed beyond trimming and lower-casing.
        if let Ok(email) = settings.normalize("email", &raw) {
            prop_assert_eq!(email.value(), raw.trim().to_lowercase());
        }
    }

    #[test]
    fn phones_normalize_idempotently(
        raw in prop_oneof![
            r"\(?[2-9][0-9]{2}\)? ?[2-9][0-9]{2}-[0-9]{4}",
            r"\+(1|44|49|33|91) ?[0-9 ]{6,12}",
            r"[0-9 ()+.-]{0,16}",
        ],
        region in prop::sample::select(vec!["US", "GB", "DE", "FR", "IN"]),
    ) {
        let settings = with_region(region);
        normalize_twice(&settings, "phone", &raw)?;
        if let Ok(phone) = settings.normalize("phone", &raw) {
            prop_assert!(phone.value().starts_with('+'));
            prop_assert!(phone.value()[1..].bytes().all(|b| b.is_ascii_digit()));
        }
    }

    #[test]
    fn ids_normalize_idempotently(raw in any::<String>(), kind in prop::sample::select(vec!["external_id", "anonymous_id"])) {
        let settings = IdentitySettings::default();
        normalize_twice(&settings, kind, &raw)?;
        if let Ok(id) = settings.normalize(kind, &raw) {
            prop_assert_eq!(id.value(), raw.trim());
        }
    }
}
