//! The scanning engine shared by `Guard::scan` and `StreamScanner`.
//!
//! Four stages run over the same bytes, each resumable from where it stopped:
//! canaries (Aho-Corasick), candidates (the multi-pattern automaton and its
//! validators), high-entropy token runs, and the cross-tenant leak stage
//! (`leak`: canonical form, decoded views, fingerprints, salient tokens and
//! sketches looked up in the global index, grouped per owner). Each stage keeps a
//! *decided frontier*: every candidate starting before it is known, and nothing
//! learned later can change it. A candidate is finalized once every stage's
//! frontier has passed its end (then every candidate overlapping it is known),
//! which makes the result independent of how the text was cut into chunks:
//! `scan` is simply one chunk with the end of text.
//!
//! Overlaps: a canary suppresses an overlapping candidate, and a candidate
//! (validated) suppresses an overlapping high-entropy token. Cross-tenant spans
//! stand apart; redaction spans that overlap are merged into one placeholder.
//!
//! Release: text is released only below the minimum of every frontier, the start
//! of every undecided candidate and, when cross-tenant hits block or redact, the
//! start of every open cluster — so no byte leaves before everything that could
//! cover it has been decided.

use std::collections::VecDeque;
use std::sync::Arc;

use bulkhead_types::TenantId;

use crate::canary::{CANARY_BYTES_MAX, CanarySet};
use crate::detect::entropy::{self, RUN_BYTES_MAX, TOKEN};
use crate::detect::{self, CANDIDATE_BYTES_MAX, Classified, Detectors};
use crate::finding::{Finding, FindingKind};
use crate::index::FingerprintIndex;
use crate::leak::{Joint, LeakConfig, LeakStage};
use crate::policy::{Action, Detector, Policy, SHARED_MIN_OWNERS_MAX};
use crate::winnow::FingerprintKeys;

/// Bytes past a candidate's longest possible end that a stage waits for, so that
/// word-boundary assertions and validators can look at the next bytes.
pub(crate) const MARGIN: usize = 8;
/// Bytes kept before the earliest position a stage resumes from (look-behind of
/// word boundaries and validators, and character-boundary rounding).
pub(crate) const CONTEXT_BYTES: usize = 16;

/// What every engine shares, from the guard.
#[derive(Debug, Clone)]
pub(crate) struct Scope {
    pub(crate) detectors: &'static Detectors,
    pub(crate) canaries: Arc<CanarySet>,
    pub(crate) index: Arc<FingerprintIndex>,
    pub(crate) keys: FingerprintKeys,
}

#[derive(Debug, Clone)]
struct Cand {
    start: usize,
    end: usize,
    kind: FindingKind,
    owner: Option<TenantId>,
    /// Never reported, only suppresses: the scanning tenant's own canary, or
    /// known public material.
    own: bool,
    done: bool,
}

const CANARY: usize = 0;
const REGEX: usize = 1;
const ENTROPY: usize = 2;

#[derive(Debug)]
pub(crate) struct Engine {
    scope: Scope,
    policy: Policy,
    tenant: TenantId,
    ct_action: Action,
    on: [bool; 3],
    on_winnow: bool,
    can_pos: usize,
    re_pos: usize,
    he_pos: usize,
    /// The run starting at `he_pos` continues a cut inline-data run.
    he_cont_data: bool,
    d: [usize; 3],
    leak: LeakStage,
    lists: [VecDeque<Cand>; 3],
    /// Finalized redaction spans not yet released, sorted by start.
    redactions: Vec<(usize, usize, &'static str)>,
    released: usize,
    blocked: bool,
    redacted_any: bool,
    emitted: Vec<Finding>,
}

fn floor_boundary(s: &[u8], mut i: usize) -> usize {
    while i > 0 && i < s.len() && (s[i] & 0xC0) == 0x80 {
        i -= 1;
    }
    i
}

/// Whether a list of disjoint spans sorted by start has one overlapping `s..e`.
fn overlaps(list: &VecDeque<Cand>, s: usize, e: usize) -> bool {
    let i = list.partition_point(|c| c.end <= s);
    list.get(i).is_some_and(|c| c.start < e)
}

impl Engine {
    pub(crate) fn new(scope: Scope, tenant: &TenantId, policy: &Policy) -> Self {
        Self::with_joint(scope, tenant, policy, None)
    }

    /// An engine for one part of an answer whose parts are judged together.
    pub(crate) fn with_joint(
        scope: Scope,
        tenant: &TenantId,
        policy: &Policy,
        joint: Option<Arc<Joint>>,
    ) -> Self {
        let a = &policy.actions;
        let regex_on = [
            Detector::PrivateKey,
            Detector::ApiKey,
            Detector::Jwt,
            Detector::Card,
            Detector::Iban,
            Detector::Ssn,
            Detector::Email,
            Detector::Phone,
            Detector::Ip,
        ]
        .iter()
        .any(|d| a.get(*d) != Action::Off);
        let canary_on = a.canary != Action::Off && scope.canaries.ac.is_some();
        let tenant_idx = scope.index.tenant_index(tenant);
        let min_fps = policy.cross_tenant.min_fingerprints.clamp(1, 64) as usize;
        let shared_min = policy
            .cross_tenant
            .shared_min_owners
            .clamp(2, SHARED_MIN_OWNERS_MAX) as usize;
        let leak = LeakStage::new(LeakConfig {
            index: Arc::clone(&scope.index),
            keys: scope.keys.clone(),
            me: tenant_idx,
            shared_min,
            min_fps,
            action: a.cross_tenant,
            joint,
        });
        Self {
            leak,
            scope,
            policy: policy.clone(),
            tenant: tenant.clone(),
            ct_action: a.cross_tenant,
            on: [canary_on, regex_on, a.high_entropy != Action::Off],
            on_winnow: a.cross_tenant != Action::Off,
            can_pos: 0,
            re_pos: 0,
            he_pos: 0,
            he_cont_data: false,
            d: [0; 3],
            lists: Default::default(),
            redactions: Vec::new(),
            released: 0,
            blocked: false,
            redacted_any: false,
            emitted: Vec::new(),
        }
    }

    pub(crate) fn released(&self) -> usize {
        self.released
    }

    pub(crate) fn blocked(&self) -> bool {
        self.blocked
    }

    pub(crate) fn redacted_any(&self) -> bool {
        self.redacted_any
    }

    pub(crate) fn take_findings(&mut self) -> Vec<Finding> {
        std::mem::take(&mut self.emitted)
    }

    /// Scans `text`, which holds the stream from byte `base` to its current end.
    pub(crate) fn advance(&mut self, text: &str, base: usize, is_final: bool) {
        let hay = text.as_bytes();
        let frontier = base + hay.len();
        if self.on[CANARY] {
            self.stage_canary(hay, base, is_final);
        } else {
            self.d[CANARY] = frontier;
        }
        if self.on[REGEX] {
            self.stage_regex(hay, base, is_final);
        } else {
            self.d[REGEX] = frontier;
        }
        if self.on[ENTROPY] {
            self.stage_entropy(hay, base, is_final);
        } else {
            self.d[ENTROPY] = frontier;
        }
        if self.on_winnow {
            self.leak.advance(text, base, is_final);
            if self.leak.blocked() {
                self.blocked = true;
            }
            for f in self.leak.take_findings() {
                self.emit(f);
            }
        }
        self.finalize();
    }

    fn push(
        &mut self,
        class: usize,
        start: usize,
        end: usize,
        kind: FindingKind,
        owner: Option<TenantId>,
        own: bool,
    ) {
        debug_assert!(self.lists[class].back().is_none_or(|c| c.end <= start));
        self.lists[class].push_back(Cand {
            start,
            end,
            kind,
            owner,
            own,
            done: false,
        });
    }

    fn stage_canary(&mut self, hay: &[u8], base: usize, is_final: bool) {
        let frontier = base + hay.len();
        let canaries = Arc::clone(&self.scope.canaries);
        let Some(ac) = canaries.ac.as_ref() else {
            self.can_pos = frontier;
            self.d[CANARY] = frontier;
            return;
        };
        // Candidates starting at or before `limit` are decided; `None`: none yet.
        let limit = if is_final {
            Some(usize::MAX)
        } else {
            frontier.checked_sub(CANARY_BYTES_MAX + MARGIN)
        };
        let input = aho_corasick::Input::new(hay).span(self.can_pos - base..hay.len());
        let mut pos = self.can_pos;
        for m in ac.find_iter(input) {
            let s = base + m.start();
            if limit.is_none_or(|l| s > l) {
                break;
            }
            let owner = &canaries.owners[m.pattern().as_usize()];
            let own = owner == &self.tenant;
            self.push(
                CANARY,
                s,
                base + m.end(),
                FindingKind::Canary,
                Some(owner.clone()),
                own,
            );
            pos = base + m.end();
        }
        self.can_pos = if is_final {
            frontier
        } else {
            pos.max(limit.unwrap_or(0))
        };
        self.d[CANARY] = self.can_pos;
    }

    fn stage_regex(&mut self, hay: &[u8], base: usize, is_final: bool) {
        let frontier = base + hay.len();
        let limit = if is_final {
            Some(usize::MAX)
        } else {
            frontier.checked_sub(CANDIDATE_BYTES_MAX + MARGIN)
        };
        let detectors = self.scope.detectors;
        let mut at = self.re_pos;
        let mut pinned = None;
        while at < frontier {
            let input = regex_automata::Input::new(hay).span(at - base..hay.len());
            let Some(m) = detectors.regex.search(&input) else {
                break;
            };
            let (s, e) = (base + m.start(), base + m.end());
            if limit.is_none_or(|l| s > l) {
                break;
            }
            let family = detectors.family(m.pattern().as_usize());
            if !detect::enabled(family, &self.policy) {
                at = e;
                continue;
            }
            // The leftmost-first candidate, then — if its validator refuses it —
            // each lower-priority family that also matches at the same start.
            let mut verdict = detect::classify(family, hay, s - base, e - base, is_final);
            let mut next = m.pattern().as_usize() + 1;
            while verdict == Classified::Reject && next < detectors.patterns() {
                let pid = next;
                next += 1;
                let family = detectors.family(pid);
                if !family.may_start(hay[s - base]) || !detect::enabled(family, &self.policy) {
                    continue;
                }
                // Bounded span: an anchored search may run an engine whose set-up
                // cost grows with the span, and no candidate is longer than this
                // (look-around still sees the bytes past the span's end).
                let span_end = (s - base + CANDIDATE_BYTES_MAX + MARGIN).min(hay.len());
                let input = regex_automata::Input::new(hay)
                    .span(s - base..span_end)
                    .anchored(regex_automata::Anchored::Pattern(
                        regex_automata::PatternID::new_unchecked(pid),
                    ));
                if let Some(m2) = detectors.regex.search(&input) {
                    verdict = detect::classify(family, hay, s - base, m2.end(), is_final);
                }
            }
            match verdict {
                Classified::Found(kind, cs, ce) => {
                    self.push(REGEX, base + cs, base + ce, kind, None, false);
                    at = e.max(base + ce);
                }
                Classified::Public(cs, ce) => {
                    // Silent: suppresses overlapping high-entropy tokens only.
                    self.push(
                        REGEX,
                        base + cs,
                        base + ce,
                        FindingKind::HighEntropy,
                        None,
                        true,
                    );
                    at = e.max(base + ce);
                }
                Classified::Reject => at = e,
                Classified::NeedMore => {
                    pinned = Some(s);
                    break;
                }
            }
        }
        match pinned {
            Some(s) => {
                self.re_pos = at;
                self.d[REGEX] = s;
            }
            None => {
                self.re_pos = if is_final {
                    frontier
                } else {
                    at.max(limit.unwrap_or(0))
                };
                self.d[REGEX] = self.re_pos;
            }
        }
    }

    fn stage_entropy(&mut self, hay: &[u8], base: usize, is_final: bool) {
        let frontier = base + hay.len();
        let min_len = self.policy.high_entropy.min_len;
        let mut i = self.he_pos - base;
        loop {
            // Skip to the next token byte.
            match hay[i..].iter().position(|&b| TOKEN[b as usize]) {
                Some(k) => i += k,
                None => {
                    self.he_pos = frontier;
                    break;
                }
            }
            let rs = i;
            let lim = (rs + RUN_BYTES_MAX).min(hay.len());
            let re = hay[rs..lim]
                .iter()
                .position(|&b| !TOKEN[b as usize])
                .map_or(lim, |k| rs + k);
            i = re;
            if re - rs < min_len && re < lim {
                // A short run that ended: nothing to judge (the common case).
                continue;
            }
            // A run right after `;base64,` is an inline data URI (an image, a
            // file): content, not a credential, however random it looks. Pieces
            // cut from such a run inherit that.
            let natural = rs == 0 || !TOKEN[hay[rs - 1] as usize];
            let data = if natural {
                rs >= 7 && &hay[rs - 7..rs] == b"base64,"
            } else {
                self.he_cont_data
            };
            if re == hay.len() && re - rs < RUN_BYTES_MAX && !is_final {
                self.he_pos = base + rs;
                self.he_cont_data = data;
                break;
            }
            self.he_cont_data = data && re - rs == RUN_BYTES_MAX;
            if !data
                && re - rs >= min_len
                && let Some((a, b)) = entropy::check(&hay[rs..re], &self.policy.high_entropy)
            {
                self.push(
                    ENTROPY,
                    base + rs + a,
                    base + rs + b,
                    FindingKind::HighEntropy,
                    None,
                    false,
                );
            }
        }
        self.d[ENTROPY] = self.he_pos;
    }

    fn emit(&mut self, f: Finding) {
        match f.action {
            Action::Block => self.blocked = true,
            Action::Redact => {
                let at = self.redactions.partition_point(|r| r.0 <= f.span.start);
                self.redactions
                    .insert(at, (f.span.start, f.span.end, f.kind.detector().label()));
                self.redacted_any = true;
            }
            Action::Allow | Action::Off => {}
        }
        self.emitted.push(f);
    }

    fn finalize(&mut self) {
        let mut d = self.d[CANARY].min(self.d[REGEX]).min(self.d[ENTROPY]);
        if self.on_winnow {
            // A high-entropy run inside a decoded view of the tenant's own data is
            // not reported: wait until the leak stage has read it.
            d = d.min(self.leak.pos());
        }
        let mut ready = Vec::new();
        for class in [CANARY, REGEX, ENTROPY] {
            let (lower, rest) = self.lists.split_at_mut(class);
            for c in rest[0].iter_mut().filter(|c| !c.done) {
                if c.end > d {
                    break;
                }
                c.done = true;
                let suppressed = lower.iter().any(|l| overlaps(l, c.start, c.end))
                    || (class == ENTROPY && self.leak.in_own_run(c.start, c.end));
                if !suppressed && !c.own {
                    ready.push((c.start, c.end, c.kind, c.owner.clone()));
                }
            }
        }
        for (start, end, kind, owner) in ready {
            let action = self.policy.actions.get(kind.detector());
            self.emit(Finding {
                kind,
                span: start..end,
                owner,
                action,
                fingerprints: 0,
            });
        }
        // Forget candidates that no later candidate can overlap.
        let undecided = self
            .lists
            .iter()
            .filter_map(|l| l.iter().find(|c| !c.done).map(|c| c.start))
            .min()
            .unwrap_or(usize::MAX);
        let gc = d.min(undecided);
        for l in &mut self.lists {
            while l.front().is_some_and(|c| c.done && c.end <= gc) {
                l.pop_front();
            }
        }
    }

    /// Everything before this offset is decided.
    pub(crate) fn release_point(&self, frontier: usize, is_final: bool) -> usize {
        if is_final {
            return frontier;
        }
        let mut r = frontier;
        for class in [CANARY, REGEX, ENTROPY] {
            if self.on[class] {
                r = r.min(self.d[class]);
            }
            if let Some(c) = self.lists[class].iter().find(|c| !c.done) {
                r = r.min(c.start);
            }
        }
        if self.on_winnow && matches!(self.ct_action, Action::Block | Action::Redact) {
            r = r.min(self.leak.release_point(is_final));
        }
        r.max(self.released)
    }

    /// Appends the decided text up to `upto` (redactions applied) to `out`.
    pub(crate) fn release(&mut self, text: &str, base: usize, upto: usize, out: &mut String) {
        if self.blocked {
            return;
        }
        let hay = text.as_bytes();
        let upto = (base + floor_boundary(hay, upto - base)).max(self.released);
        // Every offset used to slice below is a character boundary: candidate
        // spans are ASCII matches, cluster spans were widened to whole
        // characters, and `upto` was just rounded down.
        let slice = |a: usize, b: usize| &text[a - base..b - base];
        while let Some(&(rs, re, label)) = self.redactions.first() {
            if rs >= upto {
                break;
            }
            let mut end = re;
            let mut j = 1;
            while j < self.redactions.len() && self.redactions[j].0 < end {
                end = end.max(self.redactions[j].1);
                j += 1;
            }
            let rs = rs.max(self.released);
            if end > upto {
                // The merged span may still grow: release up to its start only.
                out.push_str(slice(self.released, rs));
                self.released = rs;
                return;
            }
            out.push_str(slice(self.released, rs));
            out.push_str("[REDACTED:");
            out.push_str(label);
            out.push(']');
            self.released = end.max(self.released);
            self.redactions.drain(..j);
        }
        if upto > self.released {
            out.push_str(slice(self.released, upto));
            self.released = upto;
        }
    }

    /// The earliest offset the engine may still read. Text before it can be
    /// dropped from a stream's buffer.
    pub(crate) fn keep_from(&self) -> usize {
        let mut k = if self.blocked {
            usize::MAX
        } else {
            self.released
        };
        if self.on[CANARY] {
            k = k.min(self.can_pos);
        }
        if self.on[REGEX] {
            k = k.min(self.re_pos);
        }
        if self.on[ENTROPY] {
            k = k.min(self.he_pos);
        }
        if self.on_winnow {
            // The leak stage's cue views look back over the last window read.
            k = k.min(
                self.leak
                    .pos()
                    .saturating_sub(crate::views::CUE_WINDOW_BYTES),
            );
        }
        k.saturating_sub(CONTEXT_BYTES)
    }
}
