//! Streaming: any chunking of a response yields the same findings, the same
//! released text and the same decision as scanning it whole; nothing of a blocked
//! finding is ever released; the hold-back stays within its bound.

use std::sync::OnceLock;

use bulkhead_guard::{
    Action, DetectorActions, Finding, FindingKind, Guard, GuardLimits, Policy, ScanOutcome, Verdict,
};
use bulkhead_types::TenantId;
use proptest::prelude::*;

use crate::common::{doc, prose, tenant};

struct World {
    guard: Guard,
    me: TenantId,
    doc_me: String,
    doc_b: String,
    canary_b: String,
    canary_me: String,
    boiler: String,
}

fn world() -> &'static World {
    static W: OnceLock<World> = OnceLock::new();
    W.get_or_init(|| {
        let guard = Guard::new([3u8; 32], GuardLimits::default());
        let (me, b, c, d) = (tenant(1), tenant(2), tenant(3), tenant(4));
        let doc_me = prose(10, 3000);
        let doc_b = prose(20, 3000);
        let boiler = prose(30, 600);
        guard
            .index_document(&me, &doc("own"), &doc_me)
            .expect("index");
        guard.index_document(&b, &doc("b"), &doc_b).expect("index");
        for t in [&b, &c, &d] {
            guard
                .index_document(t, &doc("boiler"), &boiler)
                .expect("index");
        }
        let canary_b = guard.seed_canary(&b).expect("seed");
        let canary_me = guard.seed_canary(&me).expect("seed");
        World {
            guard,
            me,
            doc_me,
            doc_b,
            canary_b,
            canary_me,
            boiler,
        }
    })
}

const PEM: &str = "-----BEGIN PRIVATE KEY-----\nMIIBVAIBADANBgkqhkiG9w0BAQEFAASCAT4wggE6AgEAAkEAq7BFUpkGp3+LQmlQ\nYx2eqzDV+xeG8kx/sQFV18S5JhzGeIJNA72wSeukEPojtqUyX2J0CciPBh7eqclQ\n-----END PRIVATE KEY-----";
const JWT: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvIn0.SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c";

/// One piece of a generated response.
fn fragment(w: &'static World) -> impl Strategy<Value = String> {
    let leak_b = (0usize..2000, 40usize..700)
        .prop_map(move |(at, len)| w.doc_b[at..(at + len).min(w.doc_b.len())].to_owned());
    let own = (0usize..2000, 40usize..700)
        .prop_map(move |(at, len)| w.doc_me[at..(at + len).min(w.doc_me.len())].to_owned());
    prop_oneof![
        4 => (0u64..1000, 10usize..300).prop_map(|(s, n)| prose(s, n)),
        2 => leak_b,
        1 => own,
        1 => Just(w.boiler.clone()),
        1 => Just(w.canary_b.clone()),
        1 => Just(w.canary_me.to_uppercase()),
        1 => prop::sample::select(vec![
            "4111 1111 1111 1111",
            "4111 1111 1111 1112",
            "536-22-1234",
            "jo.doe@example.com.",
            "+1 (415) 555-0100",
            "DE89 3704 0044 0532 0130 00",
            "10.20.30.40",
            "2001:db8::8a2e:370:7334",
            "AKIAZ2X7Q4MB3KPLR6WD",
            "sk_live_4eC39HqLyjWDarjtT1zdp7dc",
            "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",
            "Xk9fP2mQ7vLr4TzW8bN1cYd3",
            "550e8400-e29b-41d4-a716-446655440000",
            PEM,
            JWT,
            "Grüße aus München — 東京 ✓ ",
            "\n\n",
            "                                          ",
            "key=",
            ", ",
        ])
        .prop_map(str::to_owned),
    ]
}

fn response() -> impl Strategy<Value = String> {
    prop::collection::vec(fragment(world()), 1..12).prop_map(|parts| parts.join(" "))
}

fn policies() -> Vec<Policy> {
    let mut redact_all = Policy {
        actions: DetectorActions::all(Action::Redact),
        ..Policy::default()
    };
    redact_all.cross_tenant.min_fingerprints = 1;
    let allow_all = Policy {
        actions: DetectorActions::all(Action::Allow),
        ..Policy::default()
    };
    vec![Policy::default(), redact_all, allow_all]
}

/// Cuts `text` at the given fractions (rounded down to character boundaries).
fn chunks(text: &str, cuts: &[u16]) -> Vec<String> {
    let mut at: Vec<usize> = cuts
        .iter()
        .map(|&c| {
            let mut i = text.len() * usize::from(c) / usize::from(u16::MAX);
            while !text.is_char_boundary(i) {
                i -= 1;
            }
            i
        })
        .collect();
    at.push(0);
    at.push(text.len());
    at.sort_unstable();
    at.dedup();
    at.windows(2).map(|w| text[w[0]..w[1]].to_owned()).collect()
}

struct Streamed {
    released: String,
    /// Offset in the original text up to which text was released.
    released_upto: usize,
    findings: Vec<Finding>,
    blocked: bool,
}

fn stream(w: &World, text_chunks: &[String], policy: &Policy) -> Streamed {
    let mut s = w.guard.stream(&w.me, policy);
    let mut released = String::new();
    let mut findings = Vec::new();
    let mut blocked = false;
    let mut released_upto = 0;
    for c in text_chunks {
        let out = s.push(c);
        assert!(
            !blocked || out.release.is_empty(),
            "released after blocking"
        );
        released.push_str(&out.release);
        findings.extend(out.findings);
        blocked |= out.blocked;
        if !blocked {
            released_upto = s.received_bytes() - s.held_bytes();
        }
    }
    let out = s.finish();
    released.push_str(&out.release);
    findings.extend(out.findings);
    blocked |= out.blocked;
    findings.sort_by(|a, b| {
        (a.span.start, a.span.end, a.kind, a.owner.clone()).cmp(&(
            b.span.start,
            b.span.end,
            b.kind,
            b.owner.clone(),
        ))
    });
    Streamed {
        released,
        released_upto,
        findings,
        blocked,
    }
}

fn block_to_redact(p: &Policy) -> Policy {
    let mut q = p.clone();
    for a in [
        &mut q.actions.canary,
        &mut q.actions.cross_tenant,
        &mut q.actions.private_key,
        &mut q.actions.api_key,
        &mut q.actions.jwt,
        &mut q.actions.card,
        &mut q.actions.iban,
        &mut q.actions.ssn,
        &mut q.actions.email,
        &mut q.actions.phone,
        &mut q.actions.ip,
        &mut q.actions.high_entropy,
    ] {
        if *a == Action::Block {
            *a = Action::Redact;
        }
    }
    q
}

fn check(text: &str, cuts: &[u16]) {
    let w = world();
    let parts = chunks(text, cuts);
    for policy in policies() {
        let whole: ScanOutcome = w.guard.scan(&w.me, text, &policy);
        let got = stream(w, &parts, &policy);
        // Detector findings are identical for any chunking. Cross-tenant
        // evidence is read in segments cut at whitespace, so one leak may be
        // reported in differently cut pieces; its owners and the verdict are the
        // same.
        let (ct_got, rest_got): (Vec<_>, Vec<_>) = got
            .findings
            .iter()
            .partition(|f| f.kind == FindingKind::CrossTenant);
        let (ct_whole, rest_whole): (Vec<_>, Vec<_>) = whole
            .findings
            .iter()
            .partition(|f| f.kind == FindingKind::CrossTenant);
        assert_eq!(rest_got, rest_whole, "findings differ");
        let owners = |v: &[&Finding]| {
            let mut o: Vec<_> = v.iter().map(|f| f.owner.clone()).collect();
            o.sort();
            o.dedup();
            o
        };
        assert_eq!(
            owners(&ct_got),
            owners(&ct_whole),
            "cross-tenant owners differ"
        );
        assert_eq!(got.blocked, whole.verdict == Verdict::Blocked);
        if got.blocked {
            // What left before the block is exactly the start of the text the
            // policy would have sent had it redacted instead of blocking.
            let redacted = w.guard.scan(&w.me, text, &block_to_redact(&policy));
            let full = redacted.output(text).expect("not blocked");
            if ct_whole.is_empty() {
                assert!(
                    full.starts_with(&got.released),
                    "released text is not a prefix"
                );
            }
            // The stream's own blocking findings: cross-tenant evidence may be
            // clustered differently than in the whole scan (segments), so its
            // first blocking span is the stream's, not the whole scan's. That
            // nothing of a leak leaves is `a_blocked_stream_released_nothing_of_the_leak`.
            let first_block = got
                .findings
                .iter()
                .chain(rest_whole.iter().copied())
                .filter(|f| f.action == Action::Block)
                .map(|f| f.span.start)
                .min()
                .expect("a blocking finding");
            assert!(
                got.released_upto <= first_block,
                "released up to {} but a blocking finding starts at {first_block}",
                got.released_upto
            );
        } else if ct_whole.is_empty() && ct_got.is_empty() {
            assert_eq!(
                Some(got.released.as_str()),
                whole.output(text),
                "released text differs"
            );
        } else {
            // Redacted cross-tenant pieces may be cut differently; what is
            // released still never holds more than the whole scan would send.
            assert!(got.released.len() <= text.len() + 64);
        }
    }
}

/// A prompt of another tenant with salient facts, protected as ephemeral content.
const LEAKED_PROMPT: &str = "Please draft the renewal for Halvorsen Maritime: deal HX-77120, \
contact dana.whitfield@halvorsen-maritime.com, amount $1,284,500 due on account 40021873355.";
const LEAKED_TOKENS: &[&str] = &[
    "HX-77120",
    "dana.whitfield@halvorsen-maritime.com",
    "1,284,500",
    "40021873355",
];

fn leak_world() -> &'static (Guard, TenantId) {
    static L: OnceLock<(Guard, TenantId)> = OnceLock::new();
    L.get_or_init(|| {
        let guard = Guard::new([5u8; 32], GuardLimits::default());
        let (me, b) = (tenant(1), tenant(2));
        guard.protect(&b, LEAKED_PROMPT, 1_000);
        guard
            .index_document(&b, &doc("b"), &prose(20, 3000))
            .expect("index");
        (guard, me)
    })
}

/// Invariant 3's streaming half: whatever the chunking, when an answer carrying
/// another tenant's protected text is blocked, what was released before the block
/// holds none of its salient tokens and no 32-byte run of it.
fn check_nothing_of_the_leak_left(prefix: &str, leaked: &str, tokens: &[&str], cuts: &[u16]) {
    let (guard, me) = leak_world();
    let text = format!("{prefix}{leaked} and that is all.");
    let mut s = guard.stream(me, &Policy::default());
    let mut released = String::new();
    let mut blocked = false;
    for c in chunks(&text, cuts) {
        let out = s.push(&c);
        released.push_str(&out.release);
        blocked |= out.blocked;
        if blocked {
            break;
        }
    }
    if !blocked {
        let out = s.finish();
        released.push_str(&out.release);
        blocked = out.blocked;
    }
    assert!(blocked, "the leak was not blocked");
    let low = released.to_lowercase();
    for t in tokens {
        assert!(
            !low.contains(&t.to_lowercase()),
            "a protected token left before the block"
        );
    }
    let lb = leaked.as_bytes();
    for w in lb.windows(32) {
        let w = std::str::from_utf8(w).unwrap_or("");
        assert!(
            w.is_empty() || !released.contains(w),
            "a 32-byte run of the leak left"
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn a_blocked_stream_released_nothing_of_the_leak(
        words in 0usize..400,
        cuts in prop::collection::vec(any::<u16>(), 0..60),
        doc_at in 0usize..2000,
    ) {
        let prefix = prose(99, words);
        check_nothing_of_the_leak_left(&prefix, LEAKED_PROMPT, LEAKED_TOKENS, &cuts);
        let doc_b = prose(20, 3000);
        let at = doc_at.min(doc_b.len() - 400);
        let mut at = at;
        while !doc_b.is_char_boundary(at) { at += 1; }
        check_nothing_of_the_leak_left(&prefix, &doc_b[at..at + 400], &[], &cuts);
    }

    #[test]
    fn any_chunking_matches_the_whole(text in response(), cuts in prop::collection::vec(any::<u16>(), 0..40)) {
        check(&text, &cuts);
    }

    #[test]
    fn byte_sized_chunks_match_the_whole(text in response()) {
        let cuts: Vec<u16> = (1..text.len().min(600))
            .map(|i| (i * usize::from(u16::MAX) / text.len()) as u16)
            .collect();
        check(&text, &cuts);
    }
}

#[test]
fn hold_back_in_prose_stays_within_the_candidate_bound() {
    let w = world();
    let text = prose(77, 20_000);
    let mut s = w.guard.stream(&w.me, &Policy::default());
    let mut max_held = 0;
    for c in text.as_bytes().chunks(7) {
        let out = s.push(std::str::from_utf8(c).expect("ascii prose"));
        assert!(!out.blocked);
        max_held = max_held.max(s.held_bytes());
    }
    // 256-byte candidates decided 8 bytes later, plus the chunk just pushed.
    assert!(max_held <= 256 + 8 + 7, "held {max_held} bytes");
    assert!(max_held >= 200, "held only {max_held} bytes");
}

#[test]
fn a_leak_streamed_in_small_chunks_is_never_released() {
    let w = world();
    let leak = &w.doc_b[100..900];
    let text = format!("{} {} {}", prose(5, 400), leak, prose(6, 400));
    let mut s = w.guard.stream(&w.me, &Policy::default());
    let mut released = String::new();
    let mut blocked_at = None;
    let mut findings = Vec::new();
    for (i, c) in text.as_bytes().chunks(5).enumerate() {
        let out = s.push(std::str::from_utf8(c).expect("ascii prose"));
        released.push_str(&out.release);
        findings.extend(out.findings);
        if out.blocked && blocked_at.is_none() {
            blocked_at = Some(i * 5);
        }
    }
    let out = s.finish();
    assert!(out.blocked);
    findings.extend(out.findings);
    assert!(
        findings
            .iter()
            .any(|f| f.owner.as_ref().is_some_and(|o| *o == tenant(2)))
    );
    // Blocked within the guaranteed run length after the leak began, and no
    // 32-byte piece of the leak was released.
    let leak_start = text.find(leak).expect("leak in text");
    assert!(blocked_at.expect("blocked while streaming") < leak_start + 300);
    for piece in leak.as_bytes().chunks(32) {
        let piece = std::str::from_utf8(piece).expect("ascii");
        if piece.len() == 32 {
            assert!(!released.contains(piece), "leaked {piece:?}");
        }
    }
}
