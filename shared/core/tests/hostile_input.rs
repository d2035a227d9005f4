//! Hostile input at the stream (issue #17): records from a stream whose view is not
//! `NEW_AND_OLD_IMAGES` are refused with a reason that names the view, whatever their event —
//! never forwarded or reconciled from half the picture — and application attributes named like
//! Ferry's own are judged, not trusted.

// `classify` takes `&EventRecord` (and may take more): keep the borrow that works with both.
#![allow(clippy::needless_borrows_for_generic_args)]

mod common;

use aws_lambda_events::event::dynamodb::EventRecord;
use common::{config, event_json, image, item, key, n, s, v, LOCAL};
use ferry_core::{classify, Classified, ClassifyError, Item};

/// A record as a stream of `view` delivers it: the images that view carries, and its name.
fn shaped(view: &str, name: &str, old: Option<&Item>, new: Option<&Item>) -> EventRecord {
    let (old, new) = match view {
        "KEYS_ONLY" => (None, None),
        "NEW_IMAGE" => (None, new),
        "OLD_IMAGE" => (old, None),
        _ => (old, new),
    };
    let mut json = event_json(name, &key("k"), old, new, None, 1_700_000_000.0);
    json["dynamodb"]["StreamViewType"] = view.into();
    serde_json::from_value(json).expect("a Lambda-shaped record")
}

#[test]
fn a_stream_without_both_images_is_refused_for_every_event_naming_its_view() {
    let c = config();
    let old = image("k", &[("a", n("1"))], Some(&v(100, LOCAL)));
    let new_stamped = image("k", &[("a", n("2"))], Some(&v(200, LOCAL)));
    let new_plain = item(&[("pk", s("k")), ("a", n("3"))]);
    for view in ["KEYS_ONLY", "NEW_IMAGE", "OLD_IMAGE"] {
        for (name, o, n) in [
            ("INSERT", None, Some(&new_stamped)),
            ("INSERT", None, Some(&new_plain)),
            ("MODIFY", Some(&old), Some(&new_stamped)),
            ("MODIFY", Some(&old), Some(&new_plain)),
            ("REMOVE", Some(&old), None),
        ] {
            let got = classify(&shaped(view, name, o, n), &c);
            match &got {
                Err(e @ ClassifyError::StreamView { .. }) => {
                    let text = e.to_string();
                    assert!(
                        text.contains(view) && text.contains("NEW_AND_OLD_IMAGES"),
                        "{text}"
                    );
                }
                other => panic!("{view} {name}: refused expected, got {other:?}"),
            }
        }
    }
    // The view Ferry needs still classifies.
    assert!(matches!(
        classify(
            &shaped("NEW_AND_OLD_IMAGES", "INSERT", None, Some(&new_stamped)),
            &c
        ),
        Ok(Classified::Forward(_))
    ));
}

fn insert(c: &ferry_core::Config, new: &Item) -> Result<Classified, ClassifyError> {
    classify(&shaped("NEW_AND_OLD_IMAGES", "INSERT", None, Some(new)), c)
}

#[test]
fn an_application_attribute_named_like_the_other_modes_version_is_poison_not_a_stall() {
    // Item mode: an application's own `ferry_versions` (not a version map) is that record's
    // fault, refused with the reason; it must not fail the batch as a mode mismatch would.
    let c = config();
    let mine = item(&[("pk", s("k")), ("ferry_versions", s("v2 of my schema"))]);
    match insert(&c, &mine) {
        Err(e @ ClassifyError::ReservedAttribute { .. }) => {
            assert!(e.to_string().contains("`ferry_versions`"), "{e}")
        }
        other => panic!("reserved attribute expected, got {other:?}"),
    }
    // A real version map is what an attribute-mode writer leaves: still a mode mismatch.
    let map = ferry_core::AttributeValue::M([("pk".to_string(), s("5@r2"))].into_iter().collect());
    let merged = item(&[("pk", s("k")), ("ferry_versions", map)]);
    assert!(matches!(
        insert(&c, &merged),
        Err(ClassifyError::ModeMismatch { .. })
    ));

    // Attribute mode: an application's `ferry_ts` that is no item version.
    let mut a = config();
    a.merge_mode = ferry_core::MergeMode::Attribute;
    let stamp_like = item(&[("pk", s("k")), ("a", n("1")), ("ferry_ts", s("yesterday"))]);
    match insert(&a, &stamp_like) {
        Err(e @ ClassifyError::ReservedAttribute { .. }) => {
            assert!(e.to_string().contains("`ferry_ts`"), "{e}")
        }
        other => panic!("reserved attribute expected, got {other:?}"),
    }
    let versioned = image("k", &[("a", n("1"))], Some(&v(100, LOCAL)));
    assert!(matches!(
        insert(&a, &versioned),
        Err(ClassifyError::ModeMismatch { .. })
    ));
}

#[test]
fn an_application_attribute_named_like_the_item_version_is_poison_with_its_name() {
    // Item mode: a `ferry_ts` of the application's (a string, no origin) cannot be read as a
    // version: the record is refused, naming the attribute — never stamped over or forwarded.
    let c = config();
    for bad in [
        item(&[("pk", s("k")), ("ferry_ts", s("2024-01-01"))]),
        item(&[("pk", s("k")), ("ferry_ts", n("5"))]),
        item(&[("pk", s("k")), ("ferry_origin", s("my-app"))]),
    ] {
        match insert(&c, &bad) {
            Err(e @ ClassifyError::BadVersion { .. }) => {
                let text = e.to_string();
                assert!(
                    text.contains("ferry_ts") || text.contains("ferry_origin"),
                    "{text}"
                );
            }
            other => panic!("{bad:?}: refused expected, got {other:?}"),
        }
    }
}
