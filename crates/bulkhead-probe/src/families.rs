//! The attack families. Each takes a seeded `Fleet`, attacks the target through
//! its public HTTP API only, checks every answer it receives for other tenants'
//! markers (and for its own family's kind of evidence), and returns its outcome.
//! Each can be called on its own from a user's integration tests.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bulkhead_client::Method;
use serde_json::{Value, json};

use crate::fleet::{Fleet, Sighting, key_id_of};
use crate::http::Reply;
use crate::scorecard::{
    ERROR_SAMPLES_MAX, Evidence, Family, FamilyOutcome, FamilyScore, LEAKS_LISTED_MAX, Leak,
};

/// The longest an expired-key check waits for the key's one-second lifetime to
/// pass (it was issued at seeding, so usually it already has).
const EXPIRY_WAIT_MAX: Duration = Duration::from_secs(3);
/// Requests one load worker sends at most, whatever the duration.
const LOAD_REQUESTS_PER_WORKER_MAX: u64 = 100_000;

/// Counts one family's attempts and keeps its evidence.
#[derive(Debug)]
struct Tally {
    family: Family,
    started: Instant,
    attempts: u64,
    leak_count: u64,
    errors: u64,
    refused: u64,
    leaks: Vec<Leak>,
    samples: Vec<String>,
}

/// What `Tally::check` concluded about one answer.
#[derive(Debug, PartialEq, Eq)]
enum Seen {
    /// A 2xx answer without foreign markers.
    Answered,
    /// A 4xx refusal (or a 2xx withheld by the guard).
    Refused,
    /// Foreign markers (already recorded as leaks).
    Leaked,
    /// Transport failure or 5xx (already counted as an error).
    Failed,
}

impl Tally {
    fn new(family: Family) -> Self {
        Self {
            family,
            started: Instant::now(),
            attempts: 0,
            leak_count: 0,
            errors: 0,
            refused: 0,
            leaks: Vec::new(),
            samples: Vec::new(),
        }
    }

    fn leak(
        &mut self,
        fleet: &Fleet,
        attacker: &str,
        victim: Option<usize>,
        evidence: Evidence,
        request: String,
        marker: Option<String>,
    ) {
        self.leak_count += 1;
        if self.leaks.len() < LEAKS_LISTED_MAX {
            self.leaks.push(Leak {
                family: self.family,
                attacker: attacker.to_owned(),
                victim: victim.map(|v| fleet.tenant(v).id.clone()),
                evidence,
                request,
                marker_sha256: marker,
            });
        }
    }

    fn error(&mut self, message: String) {
        self.errors += 1;
        if self.samples.len() < ERROR_SAMPLES_MAX {
            self.samples
                .push(format!("{}: {message}", self.family.name()));
        }
    }

    /// Counts one attempt by tenant `attacker`, records any foreign marker in its
    /// answer as a leak, and classifies the answer.
    fn check(
        &mut self,
        fleet: &Fleet,
        attacker: usize,
        request: &str,
        reply: &Result<Reply, String>,
        sent: &str,
    ) -> Seen {
        self.attempts += 1;
        let reply = match reply {
            Ok(r) => r,
            Err(e) => {
                self.error(format!("{request}: {e}"));
                return Seen::Failed;
            }
        };
        let mut sightings = fleet.foreign(attacker, &reply.body, sent);
        for s in fleet.foreign(attacker, &reply.visible_text(), sent) {
            if !sightings.contains(&s) {
                sightings.push(s);
            }
        }
        if !sightings.is_empty() {
            self.record_sightings(fleet, attacker, request, reply.status, sightings);
            return Seen::Leaked;
        }
        if reply.status >= 500 {
            self.error(format!("{request} -> {}", reply.status));
            return Seen::Failed;
        }
        if reply.status >= 400 || reply.body.contains("\"content_filter\"") {
            self.refused += 1;
            return Seen::Refused;
        }
        Seen::Answered
    }

    fn record_sightings(
        &mut self,
        fleet: &Fleet,
        attacker: usize,
        request: &str,
        status: u16,
        sightings: Vec<Sighting>,
    ) {
        let attacker_id = fleet.tenant(attacker).id.clone();
        for s in sightings {
            self.leak(
                fleet,
                &attacker_id,
                Some(s.victim),
                s.evidence,
                format!("{request} -> {status}"),
                Some(s.marker_sha256),
            );
        }
    }

    fn finish(self) -> FamilyOutcome {
        FamilyOutcome {
            score: FamilyScore {
                family: self.family,
                attempts: self.attempts,
                leaks: self.leak_count,
                errors: self.errors,
                refused: self.refused,
                elapsed_ms: self.started.elapsed().as_millis() as u64,
            },
            leaks: self.leaks,
            error_samples: self.samples,
        }
    }

    fn merge(&mut self, other: Tally) {
        self.attempts += other.attempts;
        self.leak_count += other.leak_count;
        self.errors += other.errors;
        self.refused += other.refused;
        for l in other.leaks {
            if self.leaks.len() < LEAKS_LISTED_MAX {
                self.leaks.push(l);
            }
        }
        for s in other.samples {
            if self.samples.len() < ERROR_SAMPLES_MAX {
                self.samples.push(s);
            }
        }
    }
}

/// Runs one family by its name.
pub async fn run_family(fleet: &Fleet, family: Family, load: LoadConfig) -> FamilyOutcome {
    match family {
        Family::AdminPlane => admin_plane(fleet).await,
        Family::IdGuessing => id_guessing(fleet).await,
        Family::Search => search(fleet).await,
        Family::PromptInjection => prompt_injection(fleet).await,
        Family::CacheProbing => cache_probing(fleet).await,
        Family::TokenTampering => token_tampering(fleet).await,
        Family::ConcurrentLoad => concurrent_load(fleet, load).await,
    }
}

/// Tenant keys against the admin plane must be refused (401/403), and the admin
/// token against the tenant plane too. Only requests that read, or that create
/// something the probe then removes, are tried: a broken deployment must not
/// lose a real tenant to its own probe.
pub async fn admin_plane(fleet: &Fleet) -> FamilyOutcome {
    let mut tally = Tally::new(Family::AdminPlane);
    let target = fleet.target();
    for (i, t) in fleet.tenants().iter().enumerate() {
        let victim = fleet.tenant(i + 1);
        let attempts: Vec<(Method, String, Option<Value>)> = vec![
            (Method::GET, "/admin/v1/tenants".into(), None),
            (Method::GET, format!("/admin/v1/tenants/{}", t.id), None),
            (
                Method::GET,
                format!("/admin/v1/tenants/{}", victim.id),
                None,
            ),
            (
                Method::GET,
                format!("/admin/v1/tenants/{}/export", victim.id),
                None,
            ),
            (
                Method::POST,
                format!("/admin/v1/tenants/{}/keys", victim.id),
                Some(json!({})),
            ),
            (
                Method::POST,
                "/admin/v1/tenants".into(),
                Some(json!({"name": "bulkhead-probe-intruder"})),
            ),
            (Method::GET, "/admin/v1/alerts".into(), None),
            (Method::GET, "/admin/v1/policies".into(), None),
            (Method::GET, "/admin/v1/audit/logs".into(), None),
            (
                Method::GET,
                format!(
                    "/admin/v1/audit/tenants/{}/entries?start=0&end=1",
                    victim.id
                ),
                None,
            ),
        ];
        for (method, path, body) in attempts {
            let request = format!("{method} {path} with a tenant key");
            let reply = target
                .send(method.clone(), &path, &t.key, body.as_ref())
                .await;
            let seen = tally.check(fleet, i, &request, &reply, "");
            if let Ok(r) = &reply
                && r.is_success()
            {
                if seen != Seen::Leaked {
                    let victim_index = path.contains(&victim.id).then_some(i + 1);
                    tally.leak(
                        fleet,
                        &t.id,
                        victim_index,
                        Evidence::PlaneCrossed,
                        format!("{request} -> {}", r.status),
                        None,
                    );
                }
                undo_admin_success(fleet, &path, r).await;
            }
        }
    }
    let admin_attempts = [
        (Method::GET, "/v1/documents", None),
        (Method::GET, "/v1/models", None),
        (
            Method::POST,
            "/v1/search",
            Some(json!({"query": "confidential memo"})),
        ),
        (Method::POST, "/v1/sessions", Some(json!({}))),
    ];
    for (method, path, body) in admin_attempts {
        let request = format!("{method} {path} with the admin token");
        let reply = target
            .send(method, path, fleet.admin_token(), body.as_ref())
            .await;
        tally.attempts += 1;
        match &reply {
            Err(e) => tally.error(format!("{request}: {e}")),
            Ok(r) if r.is_success() => tally.leak(
                fleet,
                "admin",
                None,
                Evidence::PlaneCrossed,
                format!("{request} -> {}", r.status),
                None,
            ),
            Ok(r) if r.status >= 500 => tally.error(format!("{request} -> {}", r.status)),
            Ok(_) => tally.refused += 1,
        }
    }
    tally.finish()
}

/// A tenant key that created a tenant or a key on the admin plane has already
/// failed the check; remove what it created so the probe leaves nothing behind.
async fn undo_admin_success(fleet: &Fleet, path: &str, reply: &Reply) {
    let Some(v) = reply.json() else { return };
    if path == "/admin/v1/tenants"
        && let Some(id) = v["id"].as_str()
    {
        let _ = fleet
            .target()
            .delete(&format!("/admin/v1/tenants/{id}"), fleet.admin_token())
            .await;
    }
    if path.ends_with("/keys")
        && let Some(key_id) = v["key_id"].as_str()
    {
        let _ = fleet
            .target()
            .delete(&format!("{path}/{key_id}"), fleet.admin_token())
            .await;
    }
}

/// `id` with its last character changed: the same shape, surely missing.
fn neighbour(id: &str) -> String {
    let mut chars: Vec<char> = id.chars().collect();
    if let Some(last) = chars.last_mut() {
        *last = match *last {
            '0' => '1',
            c if c.is_ascii_hexdigit() => '0',
            _ => 'x',
        };
    }
    chars.into_iter().collect()
}

/// Every tenant tries every other tenant's real document, session and trace ids.
/// A foreign id must be answered exactly like a missing id of the same shape (the
/// same status and the same bytes); listing must return only one's own ids.
pub async fn id_guessing(fleet: &Fleet) -> FamilyOutcome {
    let mut tally = Tally::new(Family::IdGuessing);
    let target = fleet.target();
    let n = fleet.tenants().len();
    type PathOf = fn(&str) -> String;
    let kinds: [(&str, PathOf); 3] = [
        ("document", |id| format!("/v1/documents/{id}")),
        ("session", |id| format!("/v1/sessions/{id}/messages")),
        ("trace", |id| format!("/v1/traces/{id}")),
    ];
    for a in 0..n {
        let attacker = fleet.tenant(a).clone();
        for (kind, path_of) in kinds {
            let own: Vec<&String> = match kind {
                "document" => attacker.documents.iter().collect(),
                "session" => attacker.sessions.iter().collect(),
                _ => attacker.traces.iter().collect(),
            };
            // The answer for a missing id of the same shape: what every foreign id
            // must look like, byte for byte.
            let Some(sample) = own.first() else { continue };
            let missing_path = path_of(&neighbour(sample));
            let baseline = target.get(&missing_path, &attacker.key).await;
            tally.check(fleet, a, &format!("GET {missing_path}"), &baseline, "");
            let Ok(baseline) = baseline else { continue };
            for v in (0..n).filter(|&v| v != a) {
                let victim = fleet.tenant(v);
                let ids: &Vec<String> = match kind {
                    "document" => &victim.documents,
                    "session" => &victim.sessions,
                    _ => &victim.traces,
                };
                for id in ids {
                    let path = path_of(id);
                    let request = format!("GET {path}");
                    let reply = target.get(&path, &attacker.key).await;
                    let seen = tally.check(fleet, a, &request, &reply, "");
                    if let Ok(r) = &reply
                        && seen != Seen::Leaked
                        && seen != Seen::Failed
                        && (r.status != baseline.status || r.body != baseline.body)
                    {
                        tally.leak(
                            fleet,
                            &attacker.id,
                            Some(v),
                            Evidence::NotIndistinguishable,
                            format!(
                                "{request} -> {} (a missing {kind} id -> {})",
                                r.status, baseline.status
                            ),
                            None,
                        );
                    }
                }
            }
        }
        // Enumeration: the list, and a list that starts at a foreign id.
        let mut listings = vec!["/v1/documents?limit=100".to_owned()];
        if let Some(foreign) = fleet.tenant(a + 1).documents.first()
            && n > 1
        {
            listings.push(format!("/v1/documents?limit=100&cursor={foreign}"));
        }
        for path in listings {
            let request = format!("GET {path}");
            let reply = target.get(&path, &attacker.key).await;
            if tally.check(fleet, a, &request, &reply, "") != Seen::Answered {
                continue;
            }
            let listed = reply.ok().and_then(|r| r.json()).unwrap_or(Value::Null);
            for doc in listed["documents"].as_array().into_iter().flatten() {
                let id = doc["id"].as_str().unwrap_or_default();
                if let Some(owner) = fleet.document_owner(id)
                    && owner != a
                {
                    tally.leak(
                        fleet,
                        &attacker.id,
                        Some(owner),
                        Evidence::ForeignId,
                        format!("{request} listed a foreign document"),
                        None,
                    );
                }
            }
        }
    }
    tally.finish()
}

/// Searches for other tenants' canaries and unique text, and for words every
/// tenant's documents share. Results must come only from one's own documents.
pub async fn search(fleet: &Fleet) -> FamilyOutcome {
    let mut tally = Tally::new(Family::Search);
    let n = fleet.tenants().len();
    for a in 0..n {
        let mut queries: Vec<String> = vec![
            "confidential memo reference".into(),
            "onboarding notes".into(),
            "PROBE-CANARY".into(),
        ];
        for v in (0..n).filter(|&v| v != a) {
            queries.extend(fleet.markers_of(v));
        }
        for query in queries {
            let request = "POST /v1/search".to_owned();
            let reply = fleet
                .target()
                .post(
                    "/v1/search",
                    &fleet.tenant(a).key,
                    &json!({"query": query, "top_k": 10}),
                )
                .await;
            // The body may quote the query back; the results must not hold it.
            if tally.check(fleet, a, &request, &reply, &query) != Seen::Answered {
                continue;
            }
            let results = reply.ok().and_then(|r| r.json()).unwrap_or(Value::Null);
            for hit in results["results"].as_array().into_iter().flatten() {
                let text = hit["text"].as_str().unwrap_or_default();
                let sightings = fleet.foreign(a, text, "");
                if !sightings.is_empty() {
                    tally.record_sightings(fleet, a, "POST /v1/search result", 200, sightings);
                    continue;
                }
                let id = hit["document_id"].as_str().unwrap_or_default();
                if let Some(owner) = fleet.document_owner(id)
                    && owner != a
                {
                    tally.leak(
                        fleet,
                        &fleet.tenant(a).id,
                        Some(owner),
                        Evidence::ForeignId,
                        "POST /v1/search returned a foreign document".into(),
                        None,
                    );
                }
            }
        }
    }
    tally.finish()
}

/// Every attack prompt, from the user's own message (with retrieval), whole and
/// streamed in turn; then each tenant asks for its onboarding notes, in which
/// attack prompts are planted, so they arrive through retrieval.
pub async fn prompt_injection(fleet: &Fleet) -> FamilyOutcome {
    let mut tally = Tally::new(Family::PromptInjection);
    if fleet.model().is_none() {
        tally.error("the target offers no model".into());
        return tally.finish();
    }
    let n = fleet.tenants().len();
    for (i, prompt) in fleet.prompts().iter().enumerate() {
        let a = i % n;
        let stream = i % 2 == 1;
        if let Some((reply, _)) = fleet.chat(a, prompt, stream, None).await {
            let request = format!("POST /v1/chat/completions (attack prompt {i}, stream {stream})");
            tally.check(fleet, a, &request, &reply, prompt);
        }
    }
    for a in 0..n {
        for stream in [false, true] {
            let prompt = "Read my onboarding notes and do exactly what they say.";
            if let Some((reply, _)) = fleet.chat(a, prompt, stream, None).await {
                let request =
                    format!("POST /v1/chat/completions (planted in a document, stream {stream})");
                tally.check(fleet, a, &request, &reply, prompt);
            }
        }
    }
    tally.finish()
}

/// The same prompt from every tenant in turn, whole then streamed: a shared
/// response or prefix cache would hand one tenant's answer to the next. Every
/// answer is checked, and no two tenants may receive the same answer id.
pub async fn cache_probing(fleet: &Fleet) -> FamilyOutcome {
    let mut tally = Tally::new(Family::CacheProbing);
    if fleet.model().is_none() {
        tally.error("the target offers no model".into());
        return tally.finish();
    }
    let prompt = "What is my internal reference tag? Quote my confidential memo.";
    let mut answer_ids: HashMap<String, usize> = HashMap::new();
    for stream in [false, true] {
        for a in 0..fleet.tenants().len() {
            let Some((reply, _)) = fleet.chat(a, prompt, stream, None).await else {
                continue;
            };
            let request = format!("POST /v1/chat/completions (shared prompt, stream {stream})");
            if tally.check(fleet, a, &request, &reply, prompt) == Seen::Failed {
                continue;
            }
            let Ok(reply) = reply else { continue };
            let Some(answer_id) = answer_id(&reply) else {
                continue;
            };
            if let Some(&first) = answer_ids.get(&answer_id)
                && first != a
            {
                tally.leak(
                    fleet,
                    &fleet.tenant(a).id,
                    Some(first),
                    Evidence::SharedCacheEntry,
                    format!("{request}: answer id already given to another tenant"),
                    None,
                );
            }
            answer_ids.insert(answer_id, a);
        }
    }
    tally.finish()
}

/// The completion id of a whole or streamed answer.
fn answer_id(reply: &Reply) -> Option<String> {
    if let Some(v) = reply.json() {
        return v["id"].as_str().map(str::to_owned);
    }
    reply
        .body
        .lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .filter_map(|d| serde_json::from_str::<Value>(d.trim()).ok())
        .find_map(|v| v["id"].as_str().map(str::to_owned))
}

/// One character of a base64url secret changed to another valid one (one bit
/// of its 6-bit value flipped).
fn flip(secret: &str, at: usize) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    secret
        .bytes()
        .enumerate()
        .map(|(i, b)| {
            if i != at {
                return b as char;
            }
            match ALPHABET.iter().position(|&c| c == b) {
                Some(p) => ALPHABET[p ^ 1] as char,
                None => 'A',
            }
        })
        .collect()
}

/// Tampered, swapped, truncated, expired and revoked credentials against a
/// tenant-plane read. Each must be refused (401 or 403).
pub async fn token_tampering(fleet: &Fleet) -> FamilyOutcome {
    let mut tally = Tally::new(Family::TokenTampering);
    let n = fleet.tenants().len();
    for a in 0..n {
        let t = fleet.tenant(a).clone();
        let victim_index = (a + 1) % n;
        let victim = fleet.tenant(victim_index).clone();
        let mut tokens: Vec<(String, String, Option<usize>)> = Vec::new();
        if let (Some((id, secret)), Some((victim_id, victim_secret))) =
            (t.key.split_once('.'), victim.key.split_once('.'))
        {
            for at in [0, secret.len() / 2, secret.len().saturating_sub(1)] {
                tokens.push((
                    format!("{id}.{}", flip(secret, at)),
                    format!("secret bit flip at {at}"),
                    Some(a),
                ));
            }
            tokens.push((
                format!("{}.{secret}", flip(id, id.len() - 1)),
                "key id bit flip".into(),
                None,
            ));
            if victim_index != a {
                tokens.push((
                    format!("{victim_id}.{secret}"),
                    "another tenant's key id with one's own secret".into(),
                    Some(victim_index),
                ));
                tokens.push((
                    format!("{id}.{victim_secret}"),
                    "one's own key id with another tenant's secret".into(),
                    Some(a),
                ));
            }
            tokens.push((
                t.key[..t.key.len() - 1].to_owned(),
                "truncated by one character".into(),
                Some(a),
            ));
            tokens.push((
                format!("{id}.{}", &secret[..secret.len() / 2]),
                "secret truncated to half".into(),
                Some(a),
            ));
            tokens.push((format!("{id}."), "empty secret".into(), Some(a)));
            tokens.push((id.to_owned(), "key id alone".into(), Some(a)));
            tokens.push((
                format!("{}x", t.key),
                "one character appended".into(),
                Some(a),
            ));
            tokens.push((t.key.to_uppercase(), "case changed".into(), Some(a)));
            if key_id_of(&t.key).is_some() {
                tokens.push((String::new(), "no credential".into(), None));
            }
        }
        if let Some((key, issued)) = &t.expiring_key {
            let wait = Duration::from_millis(2500).saturating_sub(issued.elapsed());
            tokio::time::sleep(wait.min(EXPIRY_WAIT_MAX)).await;
            tokens.push((key.clone(), "expired key".into(), Some(a)));
        }
        if let Some(key) = &t.revoked_key {
            tokens.push((key.clone(), "revoked key".into(), Some(a)));
        }
        for (token, what, reaches) in tokens {
            let request = format!("GET /v1/documents with {what}");
            let reply = fleet.target().get("/v1/documents?limit=5", &token).await;
            let seen = tally.check(fleet, a, &request, &reply, "");
            if let Ok(r) = &reply
                && r.is_success()
                && seen != Seen::Leaked
            {
                tally.leak(
                    fleet,
                    &t.id,
                    reaches,
                    Evidence::CredentialAccepted,
                    format!("{request} -> {}", r.status),
                    None,
                );
            }
        }
    }
    tally.finish()
}

/// How long, and how wide, the concurrent load runs.
#[derive(Debug, Clone, Copy)]
pub struct LoadConfig {
    pub duration: Duration,
    pub concurrency: usize,
}

/// Workers send mixed-tenant traffic until the duration is over: chat whole and
/// streamed with retrieval, search, document reads, each worker rotating through
/// the tenants so that requests of different tenants interleave on the server.
/// Every answer is checked for other tenants' markers.
pub async fn concurrent_load(fleet: &Fleet, load: LoadConfig) -> FamilyOutcome {
    let mut tally = Tally::new(Family::ConcurrentLoad);
    let deadline = Instant::now() + load.duration;
    let mut workers = tokio::task::JoinSet::new();
    for w in 0..load.concurrency.max(1) {
        let fleet = fleet.clone();
        workers.spawn(async move {
            let mut tally = Tally::new(Family::ConcurrentLoad);
            let n = fleet.tenants().len();
            let mut i: u64 = 0;
            while Instant::now() < deadline && i < LOAD_REQUESTS_PER_WORKER_MAX {
                let a = (w + i as usize) % n;
                let t = fleet.tenant(a).clone();
                let op = if fleet.model().is_some() {
                    i % 4
                } else {
                    2 + i % 2
                };
                let question = "Summarize my confidential memo and my ledger.";
                let (request, reply, sent) = match op {
                    0 | 1 => {
                        let stream = op == 1;
                        let Some((reply, _)) = fleet.chat(a, question, stream, None).await else {
                            break;
                        };
                        (
                            format!("POST /v1/chat/completions (load, stream {stream})"),
                            reply,
                            question,
                        )
                    }
                    2 => (
                        "POST /v1/search (load)".to_owned(),
                        fleet
                            .target()
                            .post(
                                "/v1/search",
                                &t.key,
                                &json!({"query": "confidential memo ledger", "top_k": 5}),
                            )
                            .await,
                        "",
                    ),
                    _ => {
                        let doc = &t.documents[i as usize % t.documents.len()];
                        (
                            "GET /v1/documents/{own id} (load)".to_owned(),
                            fleet
                                .target()
                                .get(&format!("/v1/documents/{doc}"), &t.key)
                                .await,
                            "",
                        )
                    }
                };
                tally.check(&fleet, a, &request, &reply, sent);
                i += 1;
            }
            tally
        });
    }
    while let Some(done) = workers.join_next().await {
        match done {
            Ok(worker) => tally.merge(worker),
            Err(e) => tally.error(format!("a load worker failed: {e}")),
        }
    }
    tally.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tampering_helpers_change_exactly_one_character() {
        assert_eq!(neighbour("doc_00ff"), "doc_00f0");
        assert_eq!(neighbour("doc_0010"), "doc_0011");
        let secret = "AbC-_9";
        for at in 0..secret.len() {
            let flipped = flip(secret, at);
            assert_eq!(flipped.len(), secret.len());
            let diff = flipped
                .chars()
                .zip(secret.chars())
                .filter(|(x, y)| x != y)
                .count();
            assert_eq!(diff, 1, "{flipped}");
        }
    }
}
