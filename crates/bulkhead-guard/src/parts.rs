//! Answers made of several texts (choices, refusals, tool calls): one verdict
//! over all of them, whole (`Guard::scan_parts`) or streamed (`AnswerStream`).
//! Each part keeps its own engine (spans, redactions and hold-back per part), and
//! every part's foreign evidence is also added to one `Joint` per answer, so a
//! leak cut over several parts is judged as one.

use std::collections::BTreeMap;
use std::sync::Arc;

use bulkhead_types::TenantId;

use crate::engine::{Engine, Scope};
use crate::finding::{Finding, StreamOutput, Verdict};
use crate::leak::Joint;
use crate::policy::Policy;
use crate::stream::StreamScanner;

/// The result of `Guard::scan_parts`.
#[derive(Clone, PartialEq, Eq)]
pub struct PartsOutcome {
    pub verdict: Verdict,
    /// Findings with the index of the part they are in.
    pub findings: Vec<(usize, Finding)>,
    /// Per part, the redacted text when that part was redacted (and nothing was
    /// blocked).
    pub redacted: Vec<Option<String>>,
}

impl std::fmt::Debug for PartsOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PartsOutcome")
            .field("verdict", &self.verdict)
            .field("findings", &self.findings)
            .field(
                "redacted_parts",
                &self.redacted.iter().filter(|r| r.is_some()).count(),
            )
            .finish()
    }
}

pub(crate) fn scan_parts(
    scope: &Scope,
    tenant: &TenantId,
    parts: &[&str],
    policy: &Policy,
) -> PartsOutcome {
    let joint = Arc::new(Joint::default());
    let mut findings = Vec::new();
    let mut redacted = Vec::with_capacity(parts.len());
    let mut blocked = false;
    let mut any_redacted = false;
    for (i, text) in parts.iter().enumerate() {
        let engine = Engine::with_joint(scope.clone(), tenant, policy, Some(Arc::clone(&joint)));
        let out = crate::scan_with(engine, text);
        blocked |= out.verdict == Verdict::Blocked;
        any_redacted |= out.verdict == Verdict::Redacted;
        findings.extend(out.findings.into_iter().map(|f| (i, f)));
        redacted.push(out.redacted);
    }
    blocked |= joint.blocked();
    // Leaks only the parts together make: one finding each, on part 0, unless a
    // part already reported that owner.
    for f in joint.take_findings(policy.actions.cross_tenant) {
        let known = findings
            .iter()
            .any(|(_, g): &(usize, Finding)| g.kind == f.kind && g.owner == f.owner);
        if !known {
            findings.push((0, f));
        }
    }
    let verdict = if blocked {
        redacted.iter_mut().for_each(|r| *r = None);
        Verdict::Blocked
    } else if any_redacted {
        Verdict::Redacted
    } else {
        Verdict::Allow
    };
    PartsOutcome {
        verdict,
        findings,
        redacted,
    }
}

/// The text an answer's content-bearing parts make when read one after the
/// other, for one extra scan next to the parts' own: a leak cut into many small
/// parts (tool calls of a few dozen characters, mid-word) leaves too little of
/// itself in any one part — a fingerprint needs a run of `W + K` canonical bytes —
/// and the joint union of per-part evidence then depends on where the keyed
/// winnowing happens to select. Read in order, the pieces are the leak again.
///
/// A part that is JSON (tool-call arguments, as a string or an object) gives the
/// string values it holds (an object's in key order), keys left out, so the wrapper
/// `{"text":"…"}` around each piece does not cut the run. Parts are joined with
/// nothing between them: a split may fall inside a word.
pub fn joined_view(parts: &[&str]) -> String {
    let mut out = String::with_capacity(parts.iter().map(|p| p.len()).sum());
    for part in parts {
        match serde_json::from_str::<serde_json::Value>(part) {
            Ok(value @ (serde_json::Value::Object(_) | serde_json::Value::Array(_))) => {
                push_strings(&value, &mut out);
            }
            _ => out.push_str(part),
        }
    }
    out
}

fn push_strings(value: &serde_json::Value, out: &mut String) {
    match value {
        serde_json::Value::String(s) => out.push_str(s),
        serde_json::Value::Array(items) => items.iter().for_each(|v| push_strings(v, out)),
        serde_json::Value::Object(map) => map.values().for_each(|v| push_strings(v, out)),
        serde_json::Value::Number(n) => out.push_str(&n.to_string()),
        _ => {}
    }
}

/// A streamed answer of several parts. Create one with `Guard::answer_stream`;
/// a part id is any number the caller chooses (a choice, a field of it).
#[derive(Debug)]
pub struct AnswerStream {
    scope: Scope,
    tenant: TenantId,
    policy: Policy,
    joint: Arc<Joint>,
    parts: BTreeMap<usize, (StreamScanner, bool)>,
}

impl AnswerStream {
    pub(crate) fn new(scope: Scope, tenant: &TenantId, policy: &Policy) -> Self {
        Self {
            scope,
            tenant: tenant.clone(),
            policy: policy.clone(),
            joint: Arc::new(Joint::default()),
            parts: BTreeMap::new(),
        }
    }

    fn part(&mut self, part: usize) -> &mut (StreamScanner, bool) {
        let (scope, tenant, policy, joint) = (&self.scope, &self.tenant, &self.policy, &self.joint);
        self.parts.entry(part).or_insert_with(|| {
            let engine = Engine::with_joint(scope.clone(), tenant, policy, Some(Arc::clone(joint)));
            (StreamScanner::new(engine), false)
        })
    }

    fn gate(&self, mut out: StreamOutput) -> StreamOutput {
        if self.blocked() {
            out.release.clear();
            out.blocked = true;
        }
        self.joint_findings(&mut out.findings);
        out
    }

    /// Adds the leaks only the parts together make, once each.
    fn joint_findings(&self, findings: &mut Vec<Finding>) {
        for f in self.joint.take_findings(self.policy.actions.cross_tenant) {
            if !findings
                .iter()
                .any(|g| g.kind == f.kind && g.owner == f.owner)
            {
                findings.push(f);
            }
        }
    }

    /// Scans the next chunk of `part`; returns what of that part may be sent now.
    pub fn push(&mut self, part: usize, chunk: &str) -> StreamOutput {
        let out = self.part(part).0.push(chunk);
        self.gate(out)
    }

    /// Ends one part: decides and releases what it still holds.
    pub fn finish_part(&mut self, part: usize) -> StreamOutput {
        let entry = self.part(part);
        entry.1 = true;
        let out = entry.0.finish();
        self.gate(out)
    }

    /// Ends every part that is still open; returns what each still releases.
    pub fn finish(&mut self) -> Vec<(usize, StreamOutput)> {
        let open: Vec<usize> = self
            .parts
            .iter()
            .filter(|(_, (_, done))| !done)
            .map(|(k, _)| *k)
            .collect();
        let mut outs: Vec<(usize, StreamOutput)> = open
            .into_iter()
            .map(|p| {
                let entry = self.part(p);
                entry.1 = true;
                (p, entry.0.finish())
            })
            .collect();
        if self.blocked() {
            for (_, o) in &mut outs {
                o.release.clear();
                o.blocked = true;
            }
        }
        let mut joint = Vec::new();
        self.joint_findings(&mut joint);
        if !joint.is_empty() {
            match outs.first_mut() {
                Some((_, o)) => o.findings.extend(joint),
                None => outs.push((
                    0,
                    StreamOutput {
                        findings: joint,
                        blocked: true,
                        ..StreamOutput::default()
                    },
                )),
            }
        }
        outs
    }

    /// True once any part, or the parts together, made a blocking decision.
    pub fn blocked(&self) -> bool {
        self.joint.blocked() || self.parts.values().any(|(s, _)| s.blocked())
    }
}
