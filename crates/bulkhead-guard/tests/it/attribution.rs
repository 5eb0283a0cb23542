//! Attribution (`Guard::supplied_owners`): another tenant's canary or text in
//! what the requester itself supplied is found in every form the model could
//! turn back into a match — written out, encoded, spelled out, reversed — and
//! the requester's own canary, its own text and unrelated text name no one.

use base64::Engine as _;
use bulkhead_guard::{Guard, GuardLimits, Policy};

use crate::common::{doc, prose, tenant};

fn guard() -> Guard {
    Guard::new([42u8; 32], GuardLimits::default())
}

fn spaced(s: &str, sep: &str) -> String {
    s.chars().map(String::from).collect::<Vec<_>>().join(sep)
}

fn rot13(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            'a'..='m' | 'A'..='M' => char::from(c as u8 + 13),
            'n'..='z' | 'N'..='Z' => char::from(c as u8 - 13),
            o => o,
        })
        .collect()
}

#[test]
fn another_tenants_canary_in_the_input_is_found_in_every_form() {
    let g = guard();
    let (a, b) = (tenant(1), tenant(2));
    let canary_a = g.seed_canary(&a).unwrap();
    let canary_b = g.seed_canary(&b).unwrap();
    let b64 = base64::engine::general_purpose::STANDARD;
    let reversed: String = canary_a.chars().rev().collect();
    let forms = [
        format!("please repeat {canary_a} back to me"),
        format!("tag: {}", canary_a.to_uppercase()),
        format!(
            "decode this: {}",
            b64.encode(format!("the tag is {canary_a} ok"))
        ),
        format!("hex {}", bulkhead_types::hex_lower(canary_a.as_bytes())),
        format!("join the letters: {}", spaced(&canary_a, " ")),
        format!("pieces \"{}\" + \"{}\"", &canary_a[..10], &canary_a[10..]),
        format!("backwards: {reversed}"),
        format!("backwards, spaced: {}", spaced(&reversed, "-")),
        format!("rot13: {}", rot13(&canary_a)),
    ];
    for form in &forms {
        let owners = g.supplied_owners(&b, &[form.as_str()], &Policy::default());
        assert_eq!(
            owners.into_iter().collect::<Vec<_>>(),
            vec![a.clone()],
            "not attributed: {form}"
        );
    }
    // Several texts: the owner is found in any of them.
    let owners = g.supplied_owners(&b, &["hello", &forms[4]], &Policy::default());
    assert!(owners.contains(&a));

    // The requester's own canary, and text without a canary, name no one.
    let own = format!("my tag {canary_b}, spelled {}", spaced(&canary_b, " "));
    assert!(
        g.supplied_owners(&b, &[&own], &Policy::default())
            .is_empty()
    );
    let plain = prose(7, 3000);
    assert!(
        g.supplied_owners(&b, &[&plain], &Policy::default())
            .is_empty()
    );
    // A short fragment of the canary is not enough.
    let fragment = format!("abc {}", &canary_a[4..12]);
    assert!(
        g.supplied_owners(&b, &[&fragment], &Policy::default())
            .is_empty()
    );
}

#[test]
fn another_tenants_text_in_the_input_names_its_owner_and_own_text_does_not() {
    let g = guard();
    let (a, b) = (tenant(1), tenant(2));
    let doc_a = prose(1, 4000);
    let doc_b = prose(2, 4000);
    g.index_document(&a, &doc("a1"), &doc_a).unwrap();
    g.index_document(&b, &doc("b1"), &doc_b).unwrap();
    let pasted = format!("Summarise this: {}", &doc_a[..1500]);
    let owners = g.supplied_owners(&b, &[&pasted], &Policy::default());
    assert_eq!(owners.into_iter().collect::<Vec<_>>(), vec![a.clone()]);
    assert!(
        g.supplied_owners(&b, &[&doc_b[..1500]], &Policy::default())
            .is_empty()
    );
}
