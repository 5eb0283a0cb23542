//! Shared helpers: deterministic prose and tenants.

use bulkhead_types::{DocumentId, TenantId};

pub const WORDS: &[&str] = &[
    "account",
    "after",
    "agreement",
    "almost",
    "amount",
    "analysis",
    "answer",
    "approval",
    "archive",
    "balance",
    "before",
    "billing",
    "branch",
    "budget",
    "calendar",
    "campaign",
    "capacity",
    "carrier",
    "catalog",
    "change",
    "channel",
    "claim",
    "client",
    "closing",
    "contract",
    "control",
    "courier",
    "credit",
    "customer",
    "dashboard",
    "deadline",
    "delivery",
    "deposit",
    "design",
    "detail",
    "dispute",
    "draft",
    "estimate",
    "export",
    "factory",
    "feature",
    "figure",
    "forecast",
    "freight",
    "furniture",
    "garden",
    "harbor",
    "holiday",
    "invoice",
    "kitchen",
    "ledger",
    "license",
    "margin",
    "meeting",
    "mileage",
    "network",
    "office",
    "order",
    "outline",
    "package",
    "partner",
    "payment",
    "pipeline",
    "planning",
    "policy",
    "portal",
    "premium",
    "printer",
    "project",
    "purchase",
    "quarter",
    "receipt",
    "refund",
    "region",
    "renewal",
    "report",
    "request",
    "revenue",
    "review",
    "schedule",
    "season",
    "segment",
    "service",
    "shipment",
    "signature",
    "storage",
    "supplier",
    "support",
    "survey",
    "ticket",
    "timeline",
    "transfer",
    "upgrade",
    "vendor",
    "warehouse",
    "warranty",
    "window",
    "workshop",
];

pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        // splitmix64
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Sentences of random words: k-grams of 32 letters are practically unique per
/// seed.
pub fn prose(seed: u64, bytes: usize) -> String {
    let mut r = Rng(seed);
    let mut s = String::with_capacity(bytes + 16);
    let mut in_sentence = 0;
    while s.len() < bytes {
        let w = WORDS[r.below(WORDS.len())];
        if in_sentence == 0 {
            let mut c = w.chars();
            if let Some(f) = c.next() {
                s.extend(f.to_uppercase());
                s.push_str(c.as_str());
            }
        } else {
            s.push_str(w);
        }
        in_sentence += 1;
        if in_sentence > 6 && r.below(5) == 0 {
            s.push_str(". ");
            in_sentence = 0;
        } else {
            s.push(' ');
        }
    }
    s
}

pub fn tenant(i: u8) -> TenantId {
    TenantId::from_random([i; 12])
}

pub fn doc(id: &str) -> DocumentId {
    DocumentId::parse(id).expect("valid document id")
}
