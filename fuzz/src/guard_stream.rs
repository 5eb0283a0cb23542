//! `bulkhead_guard`: scanning a text whole and streaming it in arbitrary chunks
//! give the same verdict and findings, nothing is released after a block, and what
//! is released before one is a prefix of the redacted text. The same comparison
//! as `crates/bulkhead-guard/tests/it/stream.rs`, on libFuzzer's texts and cuts.
//!
//! Input: one byte choosing the policy, one for the number of cuts (0–15), two
//! bytes per cut, then the text (invalid UTF-8 replaced).

use std::sync::OnceLock;

use bulkhead_guard::{
    Action, DetectorActions, Finding, FindingKind, Guard, GuardLimits, Policy, ScanOutcome, Verdict,
};
use bulkhead_types::{DocumentId, TenantId};

use crate::{Input, cut_points};

/// Another tenant's canary, and the scanning tenant's own.
pub const CANARY_B: &str = "bhc_fuzzcanaryb7q4mb3kpl";
pub const CANARY_ME: &str = "bhc_fuzzcanarymez2x7q4mb";
/// Another tenant's prompt, protected as ephemeral content.
pub const LEAKED_PROMPT: &str = "Please draft the renewal for Halvorsen Maritime: deal HX-77120, \
contact dana.whitfield@halvorsen-maritime.com, amount $1,284,500 due on account 40021873355.";

pub struct World {
    pub guard: Guard,
    pub me: TenantId,
    pub doc_me: String,
    pub doc_b: String,
    pub policies: Vec<Policy>,
}

impl std::fmt::Debug for World {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("World").finish_non_exhaustive()
    }
}

const WORDS: &[&str] = &[
    "account",
    "agreement",
    "amount",
    "balance",
    "billing",
    "budget",
    "carrier",
    "claim",
    "contract",
    "courier",
    "credit",
    "customer",
    "deadline",
    "delivery",
    "deposit",
    "dispute",
    "estimate",
    "freight",
    "harbor",
    "invoice",
    "ledger",
    "license",
    "margin",
    "meeting",
    "order",
    "payment",
    "pallet",
    "quarter",
    "refund",
    "renewal",
    "shipment",
    "supplier",
    "tariff",
    "terminal",
    "transfer",
    "vessel",
    "warehouse",
    "window",
];

/// Deterministic prose of about `bytes` bytes (splitmix64 over `WORDS`).
pub fn prose(seed: u64, bytes: usize) -> String {
    let mut state = seed;
    let mut next = move |n: usize| {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        ((z ^ (z >> 31)) % n as u64) as usize
    };
    let mut s = String::with_capacity(bytes + 16);
    let mut in_sentence = 0;
    while s.len() < bytes {
        s.push_str(WORDS[next(WORDS.len())]);
        in_sentence += 1;
        if in_sentence > 6 && next(5) == 0 {
            s.push_str(". ");
            in_sentence = 0;
        } else {
            s.push(' ');
        }
    }
    s
}

fn tenant(i: u8) -> TenantId {
    TenantId::from_random([i; 12])
}

fn doc(id: &str) -> DocumentId {
    DocumentId::parse(id).expect("a valid document id")
}

pub fn world() -> &'static World {
    static W: OnceLock<World> = OnceLock::new();
    W.get_or_init(|| {
        let guard = Guard::new([3u8; 32], GuardLimits::default());
        let (me, b, c) = (tenant(1), tenant(2), tenant(3));
        let doc_me = prose(10, 2000);
        let doc_b = prose(20, 2000);
        let boiler = prose(30, 400);
        guard
            .index_document(&me, &doc("own"), &doc_me)
            .expect("index");
        guard.index_document(&b, &doc("b"), &doc_b).expect("index");
        for t in [&b, &c] {
            guard
                .index_document(t, &doc("boiler"), &boiler)
                .expect("index");
        }
        guard.add_canary(&b, CANARY_B).expect("canary");
        guard.add_canary(&me, CANARY_ME).expect("canary");
        guard.protect(&b, LEAKED_PROMPT, 1_000);
        let mut redact_all = Policy {
            actions: DetectorActions::all(Action::Redact),
            ..Policy::default()
        };
        redact_all.cross_tenant.min_fingerprints = 1;
        let allow_all = Policy {
            actions: DetectorActions::all(Action::Allow),
            ..Policy::default()
        };
        World {
            guard,
            me,
            doc_me,
            doc_b,
            policies: vec![Policy::default(), redact_all, allow_all],
        }
    })
}

struct Streamed {
    released: String,
    /// Offset in the text up to which text was released.
    released_upto: usize,
    findings: Vec<Finding>,
    blocked: bool,
}

fn stream(w: &World, chunks: &[&str], policy: &Policy) -> Streamed {
    let mut s = w.guard.stream(&w.me, policy);
    let mut released = String::new();
    let mut findings = Vec::new();
    let mut blocked = false;
    let mut released_upto = 0;
    for c in chunks {
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
    assert!(
        !blocked || out.release.is_empty(),
        "released after blocking"
    );
    released.push_str(&out.release);
    findings.extend(out.findings);
    blocked |= out.blocked;
    assert_eq!(s.held_bytes(), 0, "holds bytes after finish");
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

pub fn run(data: &[u8]) {
    let w = world();
    let mut input = Input::new(data);
    let policy = &w.policies[usize::from(input.byte()) % w.policies.len()];
    let n_cuts = usize::from(input.byte() % 16);
    let cuts: Vec<u16> = (0..n_cuts).map(|_| input.u16()).collect();
    let text = String::from_utf8_lossy(input.rest());
    let at = cut_points(text.len(), &cuts, |i| text.is_char_boundary(i));
    let chunks: Vec<&str> = at.windows(2).map(|c| &text[c[0]..c[1]]).collect();

    let whole: ScanOutcome = w.guard.scan(&w.me, &text, policy);
    let got = stream(w, &chunks, policy);
    // Detector findings are identical for any chunking. Cross-tenant evidence is
    // read in segments cut at white space, so one leak may be reported in
    // differently cut pieces; its owners and the verdict are the same.
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
    assert_eq!(
        got.blocked,
        whole.verdict == Verdict::Blocked,
        "verdicts differ"
    );
    if got.blocked {
        let redacted = w.guard.scan(&w.me, &text, &block_to_redact(policy));
        let full = redacted.output(&text).expect("not blocked once redacting");
        if ct_whole.is_empty() {
            assert!(
                full.starts_with(&got.released),
                "released text is not a prefix"
            );
        }
        // A detector's blocking finding is exact: nothing at or after its start
        // was released. Cross-tenant evidence is located coarsely (its span is
        // the white-space-cut segment it was read in, which may begin with
        // unrelated bytes already released), so for it the check is on content:
        // no run of another tenant's text far longer than the least evidence the
        // guard acts on (a shorter fragment alone is allowed by design) left.
        let first_block = rest_whole
            .iter()
            .filter(|f| f.action == Action::Block)
            .map(|f| f.span.start)
            .min();
        if let Some(first_block) = first_block {
            assert!(
                got.released_upto <= first_block,
                "released up to {} but a blocking finding starts at {first_block}",
                got.released_upto
            );
        }
        for foreign in [LEAKED_PROMPT, w.doc_b.as_str(), CANARY_B] {
            assert!(
                !shares_a_run(&got.released, foreign, 128),
                "released text carries 128 bytes of another tenant's text before the block"
            );
        }
    } else if ct_whole.is_empty() && ct_got.is_empty() {
        assert_eq!(
            Some(got.released.as_str()),
            whole.output(&text),
            "released text differs"
        );
    } else {
        assert!(got.released.len() <= text.len() + 64);
    }
}

/// Whether `a` and `b` share a run of `n` bytes (on char boundaries of `b`).
fn shares_a_run(a: &str, b: &str, n: usize) -> bool {
    if a.len() < n {
        return false;
    }
    (0..=b.len().saturating_sub(n))
        .filter(|&i| b.is_char_boundary(i) && b.is_char_boundary(i + n))
        .any(|i| a.contains(&b[i..i + n]))
}
