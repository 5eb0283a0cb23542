//! The cross-tenant leak stage of the scanning engine.
//!
//! It reads the answer in segments cut at whitespace (never inside a word, a
//! salient token or an encoded run that may still continue), canonicalizes each
//! (`canon`), adds the decoded views of its encoded runs (`views`), computes the
//! evidence (`evidence`) and looks every value up in the global index at once.
//! Values held by the scanning tenant, or by `shared_min_owners` tenants or more,
//! are no evidence. The rest is grouped per owning tenant into clusters (hits
//! closer than `CLUSTER_GAP_BYTES`), and a cluster is a leak when its evidence
//! meets the rule:
//!
//! - `min_fingerprints` distinct fingerprints (a verbatim run of ~159 canonical
//!   bytes guarantees 2); or
//! - one strong salient token (an email, an identifier, a long number, a canary,
//!   an identifying URL); or
//! - two weak tokens; or one weak token and a phrase; or three phrases; or
//! - `SKETCH_MIN` sketch samples (about 4·`SKETCH_MIN` of the owner's content
//!   words nearby: a reordered or thinned-out copy) together with a weak token
//!   or a phrase; or a fingerprint with a weak token. Word-set evidence never blocks alone: an answer on the
//!   same topic as another tenant's text shares its vocabulary, and in a small
//!   deployment the tenant-count rule cannot tell topic words from secrets.
//!
//! When several texts make one answer (choices, tool calls), a `Joint` adds every
//! part's evidence per owner and applies the same rule to the union.
//!
//! Hold-back: text is released only below (a) the processed frontier, (b) the
//! start of any open cluster of foreign evidence, and (c) `FP_HOLD_CANON` canonical
//! bytes before the end of the processed canonical text, since a fingerprint is
//! selected only once the window after its k-gram is full and a leaked run may
//! begin up to W + K − 1 canonical bytes before its first fingerprint. So when a
//! block happens, no byte of the run that caused it has left.

use std::sync::{Arc, Mutex, PoisonError};

use crate::canon::{self, Canon};
use crate::evidence::{self, Ev, Item, Side};
use crate::finding::{Finding, FindingKind};
use crate::index::FingerprintIndex;
use crate::policy::Action;
use crate::views;
use crate::winnow::{FingerprintKeys, K, W, Winnower};

/// Foreign hits of one owner further apart than this (original bytes) start a new
/// cluster.
pub const CLUSTER_GAP_BYTES: usize = 512;
/// A cluster never spans more than this; a longer leak is reported in pieces.
pub const CLUSTER_SPAN_MAX: usize = 8192;
/// Sketch samples that alone make a leak.
pub const SKETCH_MIN: usize = 4;
/// Canonical bytes held back for fingerprint selection (see the module docs).
pub const FP_HOLD_CANON: usize = 2 * (W + K);
/// A segment is cut at whitespace once this much unprocessed text waits; a run
/// with no whitespace longer than `views::RUN_BYTES_MAX` is cut anyway.
const SEGMENT_BYTES_MIN: usize = 64;
/// Evidence values remembered per cluster.
const CLUSTER_VALUES_MAX: usize = 512;

#[derive(Debug, Default, Clone)]
pub(crate) struct Evidence {
    fps: Vec<u64>,
    strong: Vec<u64>,
    weak: Vec<u64>,
    phrase: Vec<u64>,
    sketch: Vec<u64>,
}

impl Evidence {
    fn add(&mut self, kind: Ev, value: u64) -> bool {
        let list = match kind {
            Ev::Fp => &mut self.fps,
            Ev::Strong | Ev::Canary => &mut self.strong,
            Ev::Weak => &mut self.weak,
            Ev::Phrase => &mut self.phrase,
            Ev::Sketch => &mut self.sketch,
        };
        if list.len() >= CLUSTER_VALUES_MAX || list.contains(&value) {
            return false;
        }
        list.push(value);
        true
    }

    /// The leak rule (module docs).
    pub(crate) fn is_leak(&self, min_fps: usize) -> bool {
        let (f, s, w, p, k) = (
            self.fps.len(),
            self.strong.len(),
            self.weak.len(),
            self.phrase.len(),
            self.sketch.len(),
        );
        f >= min_fps
            || s >= 1
            || w >= 2
            || (w >= 1 && p >= 1)
            || p >= 3
            || (f >= 1 && w >= 1)
            || (k >= SKETCH_MIN && (w >= 1 || p >= 1))
    }

    fn total(&self) -> usize {
        self.fps.len() + self.strong.len() + self.weak.len() + self.phrase.len() + self.sketch.len()
    }
}

/// Every part's foreign evidence per owner, for one answer made of several texts.
#[derive(Debug, Default)]
pub(crate) struct Joint {
    inner: Mutex<JointState>,
}

#[derive(Debug, Default)]
struct JointState {
    owners: Vec<(u32, Evidence)>,
    /// The owners whose evidence, added over all parts, is a leak; with the
    /// tenant id for the finding and whether that finding was handed out yet.
    leaks: Vec<(u32, Option<bulkhead_types::TenantId>, u32, bool)>,
}

impl Joint {
    /// Adds a hit; returns true when the union for that owner is a leak.
    fn add(
        &self,
        index: &FingerprintIndex,
        owner: u32,
        kind: Ev,
        value: u64,
        min_fps: usize,
    ) -> bool {
        let mut g = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let i = match g.owners.iter().position(|(o, _)| *o == owner) {
            Some(i) => i,
            None => {
                g.owners.push((owner, Evidence::default()));
                g.owners.len() - 1
            }
        };
        g.owners[i].1.add(kind, value);
        let ev = &g.owners[i].1;
        if ev.is_leak(min_fps) && !g.leaks.iter().any(|l| l.0 == owner) {
            let total = ev.total() as u32;
            g.leaks.push((owner, index.tenant_id(owner), total, false));
        }
        !g.leaks.is_empty()
    }

    pub(crate) fn blocked(&self) -> bool {
        !self
            .inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .leaks
            .is_empty()
    }

    /// The joint leaks not handed out yet, as findings with an empty span (the
    /// evidence is spread over several parts), so the caller can log and alert
    /// with the owner even when no single part was a leak.
    pub(crate) fn take_findings(&self, action: Action) -> Vec<Finding> {
        let mut g = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        g.leaks
            .iter_mut()
            .filter(|l| !l.3)
            .map(|l| {
                l.3 = true;
                Finding {
                    kind: FindingKind::CrossTenant,
                    span: 0..0,
                    owner: l.1.clone(),
                    action,
                    fingerprints: l.2,
                }
            })
            .collect()
    }
}

#[derive(Debug)]
struct Cluster {
    owner: u32,
    /// Where release stops while the cluster is open: up to W + K canonical
    /// bytes before its first fingerprint, where the run it belongs to may start.
    hold: usize,
    start: usize,
    last_end: usize,
    ev: Evidence,
}

/// What the stage needs from the engine.
#[derive(Debug, Clone)]
pub(crate) struct LeakConfig {
    pub(crate) index: Arc<FingerprintIndex>,
    pub(crate) keys: FingerprintKeys,
    pub(crate) me: Option<u32>,
    pub(crate) shared_min: usize,
    pub(crate) min_fps: usize,
    pub(crate) action: Action,
    pub(crate) joint: Option<Arc<Joint>>,
}

#[derive(Debug)]
pub(crate) struct LeakStage {
    cfg: LeakConfig,
    /// Original offset processed up to.
    pos: usize,
    /// Canonical text of recent segments; `canon_base` is the canonical offset of
    /// its first byte in the whole stream.
    canon: Canon,
    canon_base: usize,
    winnower: Winnower,
    clusters: Vec<Cluster>,
    /// Original spans of decoded runs whose evidence is the scanning tenant's own
    /// (its own base64 is no secret): high-entropy findings there are dropped.
    own_runs: Vec<(usize, usize)>,
    blocked: bool,
    findings: Vec<Finding>,
    items: Vec<(Item, usize, usize)>,
    values: Vec<u64>,
    order: Vec<u32>,
    hits: Vec<(u32, u32)>,
    own: Vec<u32>,
}

impl LeakStage {
    pub(crate) fn new(cfg: LeakConfig) -> Self {
        Self {
            winnower: Winnower::new(cfg.keys.clone()),
            cfg,
            pos: 0,
            canon: Canon::default(),
            canon_base: 0,
            clusters: Vec::new(),
            own_runs: Vec::new(),
            blocked: false,
            findings: Vec::new(),
            items: Vec::new(),
            values: Vec::new(),
            order: Vec::new(),
            hits: Vec::new(),
            own: Vec::new(),
        }
    }

    pub(crate) fn blocked(&self) -> bool {
        self.blocked || self.cfg.joint.as_ref().is_some_and(|j| j.blocked())
    }

    pub(crate) fn take_findings(&mut self) -> Vec<Finding> {
        std::mem::take(&mut self.findings)
    }

    /// Everything before this original offset has been read.
    pub(crate) fn pos(&self) -> usize {
        self.pos
    }

    /// Whether `s..e` lies in a decoded run of the tenant's own data.
    pub(crate) fn in_own_run(&self, s: usize, e: usize) -> bool {
        self.own_runs.iter().any(|&(a, b)| a <= s && e <= b)
    }

    /// The original offset below which text may be released.
    pub(crate) fn release_point(&self, is_final: bool) -> usize {
        if is_final {
            return usize::MAX;
        }
        let mut r = self.pos;
        let canon_end = self.canon_base + self.canon.text.len();
        let hold = canon_end.saturating_sub(FP_HOLD_CANON);
        if hold < canon_end {
            r = r.min(self.orig_at(hold));
        }
        if self.cfg.action != Action::Allow {
            for c in &self.clusters {
                r = r.min(c.hold);
            }
        }
        r
    }

    fn orig_at(&self, canon_pos: usize) -> usize {
        if canon_pos < self.canon_base {
            return 0;
        }
        let i = canon_pos - self.canon_base;
        self.canon.orig.get(i).map_or(self.pos, |&o| o as usize)
    }

    /// Reads `hay` (the stream from `base`) as far as it can be judged.
    pub(crate) fn advance(&mut self, text: &str, base: usize, is_final: bool) {
        let frontier = base + text.len();
        if self.pos >= frontier && !is_final {
            return;
        }
        let from = self.pos.max(base) - base;
        let pending = &text[from..];
        let cut = if is_final {
            pending.len()
        } else {
            let tail = views::open_tail(pending);
            let tail = if pending.len() - tail > views::RUN_BYTES_MAX {
                pending.len()
            } else {
                tail
            };
            // Back to the last whitespace at or before the open tail.
            let b = pending.as_bytes();
            let ws = b[..tail].iter().rposition(|c| c.is_ascii_whitespace());
            match ws {
                Some(p)
                    if p + 1 >= SEGMENT_BYTES_MIN.min(pending.len()) || tail == pending.len() =>
                {
                    p + 1
                }
                Some(p) => p + 1,
                None => 0,
            }
        };
        if cut > 0 {
            let seg_end = from + cut;
            let segment = &text[from..seg_end];
            // The cue window: what was read before the segment, as far as the
            // buffer still holds it (the engine keeps `CUE_WINDOW_BYTES`).
            let mut win = from.saturating_sub(views::CUE_WINDOW_BYTES);
            while !text.is_char_boundary(win) {
                win += 1;
            }
            let window = (&text[win..seg_end], base + win);
            self.process(segment, base + from, window);
            self.pos = base + seg_end;
        } else if is_final {
            self.pos = frontier;
        }
        self.close_clusters(is_final);
        self.prune();
    }

    fn process(&mut self, segment: &str, at: usize, window: (&str, usize)) {
        let canon_start = self.canon.text.len();
        canon::canonicalize_into(segment, at, &mut self.canon);
        let mut items = std::mem::take(&mut self.items);
        items.clear();
        // Fingerprints of the canonical stream (the winnower carries over).
        let abs = self.canon_base + canon_start;
        let new = &self.canon.text.as_bytes()[canon_start..];
        let canon_ref = &self.canon;
        let base_c = self.canon_base;
        self.winnower.feed(new, abs, |fp| {
            let (s, e) = canon_ref.span(fp.start - base_c, fp.end - base_c);
            items.push((
                Item {
                    value: fp.value,
                    kind: Ev::Fp,
                    start: fp.start,
                    end: fp.end,
                },
                s,
                e,
            ));
        });
        // Tokens, from a little before the segment so a number or phrase cut by the
        // segment boundary is seen whole (values repeat harmlessly: clusters keep
        // sets).
        let back = canon_start.saturating_sub(48);
        let tok_from = self.canon.text.as_bytes()[back..canon_start]
            .iter()
            .position(|&b| b == b' ')
            .map_or(back, |p| back + p + 1)
            .min(canon_start);
        let keys = self.cfg.keys.clone();
        evidence::tokens(
            &keys,
            &self.canon,
            tok_from,
            self.canon.text.len(),
            Side::Answer,
            &mut |it| {
                let (s, e) = self.canon.span(it.start, it.end);
                // A canary written plainly is the canary stage's finding; only a
                // disguised one (fullwidth, look-alikes) is this stage's.
                if it.kind == Ev::Canary && segment_ascii(segment, at, s, e) {
                    return;
                }
                items.push((it, s, e));
            },
        );
        // Decoded views: their evidence is attributed to the whole run.
        let mut budget = segment.len().saturating_mul(views::EXPANSION_MAX);
        let mut vs = Vec::new();
        views::run_views(segment, &mut budget, &mut vs);
        let runs = vs.len();
        let (wtext, wat) = window;
        let mut wbudget = wtext.len().saturating_mul(views::EXPANSION_MAX);
        views::window_views(wtext, &mut wbudget, &mut vs);
        let view_first = items.len();
        let mut view_of = Vec::new();
        for (vi, v) in vs.iter().enumerate() {
            let c = canon::canonicalize(&v.text);
            let vat = if vi < runs { at } else { wat };
            evidence::extract(&keys, &c, Side::Answer, &mut |it| {
                items.push((it, vat + v.start, vat + v.end));
                view_of.push(vi);
            });
        }
        self.lookup(&items, view_first, &view_of, (&vs, runs), at);
        self.items = items;
    }

    fn lookup(
        &mut self,
        items: &[(Item, usize, usize)],
        view_first: usize,
        view_of: &[usize],
        (vs, runs): (&[views::View], usize),
        at: usize,
    ) {
        if items.is_empty() {
            return;
        }
        let mut values = std::mem::take(&mut self.values);
        let mut order = std::mem::take(&mut self.order);
        let mut hits = std::mem::take(&mut self.hits);
        let mut own = std::mem::take(&mut self.own);
        values.clear();
        values.extend(items.iter().map(|(i, _, _)| i.value));
        self.cfg.index.foreign_owners_and_own(
            &values,
            self.cfg.me,
            self.cfg.shared_min,
            &mut order,
            &mut hits,
            &mut own,
        );
        // Views whose evidence is the tenant's own and nobody else's.
        if !own.is_empty() {
            let mut foreign_view = vec![false; vs.len()];
            for &(i, _) in &hits {
                if (i as usize) >= view_first {
                    foreign_view[view_of[i as usize - view_first]] = true;
                }
            }
            for &i in &own {
                if (i as usize) >= view_first {
                    let v = view_of[i as usize - view_first];
                    if !foreign_view[v] && v < runs {
                        self.own_runs.push((at + vs[v].start, at + vs[v].end));
                    }
                }
            }
        }
        // A weak value (short number, date, plain URL, phrase, word) that two or
        // more other tenants hold is most likely public ("ISO 9001", a
        // well-known site): no evidence against either. Strong values and
        // fingerprints stay evidence however many (below `shared_min`) hold them.
        let shared = |i: u32| {
            let lo = hits.partition_point(|h| h.0 < i);
            hits.get(lo + 1).is_some_and(|h| h.0 == i)
        };
        let mut ordered: Vec<(usize, usize, usize, u32, u32)> = hits
            .iter()
            .filter(|&&(i, _)| {
                !(matches!(items[i as usize].0.kind, Ev::Weak | Ev::Phrase | Ev::Sketch)
                    && shared(i))
            })
            .map(|&(i, owner)| {
                let (item, s, e) = items[i as usize];
                // A fingerprint's run may begin up to W + K canonical bytes before
                // its k-gram: the hold-back starts there.
                let hold = if item.kind == Ev::Fp && (i as usize) < view_first {
                    self.orig_at(item.start.saturating_sub(W + K)).min(s)
                } else {
                    s
                };
                (s, e, hold, i, owner)
            })
            .collect();
        ordered.sort_unstable();
        for (s, e, hold, i, owner) in ordered {
            let item = items[i as usize].0;
            self.hit(owner, item.kind, item.value, s, e, hold);
        }
        self.values = values;
        self.order = order;
        self.hits = hits;
        self.own = own;
    }

    fn hit(&mut self, owner: u32, kind: Ev, value: u64, s: usize, e: usize, hold: usize) {
        if let Some(j) = &self.cfg.joint
            && j.add(&self.cfg.index, owner, kind, value, self.cfg.min_fps)
            && self.cfg.action == Action::Block
        {
            self.blocked = true;
        }
        let i = match self.clusters.iter().position(|c| c.owner == owner) {
            Some(i)
                if s <= self.clusters[i].last_end + CLUSTER_GAP_BYTES
                    && e.saturating_sub(self.clusters[i].start) <= CLUSTER_SPAN_MAX =>
            {
                i
            }
            Some(i) => {
                let old = self.clusters.remove(i);
                self.close(old);
                self.open(owner, s, e)
            }
            None => self.open(owner, s, e),
        };
        let c = &mut self.clusters[i];
        c.hold = c.hold.min(hold);
        c.start = c.start.min(s);
        c.last_end = c.last_end.max(e);
        c.ev.add(kind, value);
        if c.ev.is_leak(self.cfg.min_fps) && self.cfg.action == Action::Block {
            self.blocked = true;
        }
    }

    fn open(&mut self, owner: u32, s: usize, e: usize) -> usize {
        self.clusters.push(Cluster {
            owner,
            hold: s,
            start: s,
            last_end: e,
            ev: Evidence::default(),
        });
        self.clusters.len() - 1
    }

    fn close(&mut self, c: Cluster) {
        if !c.ev.is_leak(self.cfg.min_fps) {
            return;
        }
        if self.cfg.action == Action::Block {
            self.blocked = true;
        }
        self.findings.push(Finding {
            kind: FindingKind::CrossTenant,
            span: c.start..c.last_end,
            owner: self.cfg.index.tenant_id(c.owner),
            action: self.cfg.action,
            fingerprints: c.ev.total() as u32,
        });
    }

    fn close_clusters(&mut self, is_final: bool) {
        let mut i = 0;
        while i < self.clusters.len() {
            if is_final || self.pos > self.clusters[i].last_end + CLUSTER_GAP_BYTES {
                let c = self.clusters.remove(i);
                self.close(c);
            } else {
                i += 1;
            }
        }
        if is_final
            && self.cfg.joint.as_ref().is_some_and(|j| j.blocked())
            && self.cfg.action == Action::Block
        {
            self.blocked = true;
        }
    }

    /// Drops canonical text no fingerprint or hold-back needs any more.
    fn prune(&mut self) {
        let keep = FP_HOLD_CANON + 64;
        if self.canon.text.len() <= 4 * keep {
            return;
        }
        let mut cut = self.canon.text.len() - keep;
        while !self.canon.text.is_char_boundary(cut) {
            cut -= 1;
        }
        self.canon.text.drain(..cut);
        self.canon.orig.drain(..cut);
        self.canon.ends.drain(..cut);
        let cut32 = cut as u32;
        self.canon.caps.retain(|&c| c >= cut32);
        for c in &mut self.canon.caps {
            *c -= cut32;
        }
        self.canon_base += cut;
        self.own_runs
            .retain(|&(_, e)| e + CLUSTER_SPAN_MAX > self.pos);
    }
}

fn segment_ascii(segment: &str, at: usize, s: usize, e: usize) -> bool {
    segment
        .as_bytes()
        .get(s.saturating_sub(at)..e.saturating_sub(at))
        .is_some_and(|b| b.is_ascii())
}

/// The evidence values a protected text is known by (distinct, sorted).
pub(crate) fn protected_values(keys: &FingerprintKeys, text: &str) -> Vec<u64> {
    let c = canon::canonicalize(text);
    let mut out = Vec::with_capacity(text.len() / 16 + 8);
    evidence::extract(keys, &c, Side::Protected, &mut |it| out.push(it.value));
    out.sort_unstable();
    out.dedup();
    out
}
