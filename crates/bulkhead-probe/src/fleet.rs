//! The probe tenants: created (or given), each seeded with documents that carry
//! unique canaries and unique text, a session and a decision trace; the markers
//! every answer is checked against; and cleaning up afterwards.

use std::sync::Arc;
use std::time::Instant;

use aho_corasick::AhoCorasick;
use serde_json::{Value, json};

use crate::http::{Reply, Target};
use crate::scorecard::{Cleanup, Evidence, marker_digest};
use crate::{ExistingTenant, ProbeConfig, ProbeError, Progress};

/// The model that regurgitates the previous caller's prompt, preferred when the
/// target offers it: it turns every gateway attack into a real leak attempt that
/// only the output guard can stop.
pub const LEAKY_MODEL: &str = "bulkhead-echo-leaky";
/// Prefix of every created tenant's name, so leftovers are easy to find.
pub const TENANT_NAME_PREFIX: &str = "bulkhead-probe-";
/// Lifetime of the key that must have expired when token tampering uses it.
const EXPIRING_KEY_TTL_SECS: u64 = 1;

/// One tenant under test.
#[derive(Debug, Clone)]
pub struct ProbeTenant {
    pub id: String,
    /// The API key the attacks use (`bhk_<id>.<secret>`).
    pub key: String,
    pub key_id: String,
    /// True when this run created the tenant (and so deletes it).
    pub created: bool,
    pub documents: Vec<String>,
    pub sessions: Vec<String>,
    pub traces: Vec<String>,
    /// A key issued with a one-second lifetime, and when it was issued.
    pub expiring_key: Option<(String, Instant)>,
    /// A key issued and revoked at once.
    pub revoked_key: Option<String>,
    /// Keys this run issued besides `key` (revoked at cleanup for given tenants).
    pub issued_key_ids: Vec<String>,
}

/// A string that must never reach another tenant.
#[derive(Debug, Clone)]
struct Marker {
    owner: usize,
    text: String,
    evidence: Evidence,
}

/// A marker found where it does not belong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sighting {
    pub victim: usize,
    pub evidence: Evidence,
    pub marker_sha256: String,
}

/// The seeded tenants and everything the families need. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Fleet {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    target: Target,
    admin_token: String,
    tenants: Vec<ProbeTenant>,
    markers: Vec<Marker>,
    matcher: AhoCorasick,
    model: Option<String>,
    prompts: Vec<String>,
    documents_seeded: u64,
}

impl Fleet {
    pub fn target(&self) -> &Target {
        &self.inner.target
    }

    pub fn admin_token(&self) -> &str {
        &self.inner.admin_token
    }

    pub fn tenants(&self) -> &[ProbeTenant] {
        &self.inner.tenants
    }

    pub fn tenant(&self, i: usize) -> &ProbeTenant {
        &self.inner.tenants[i % self.inner.tenants.len()]
    }

    /// The model the gateway families call, if the target offers any.
    pub fn model(&self) -> Option<&str> {
        self.inner.model.as_deref()
    }

    pub fn prompts(&self) -> &[String] {
        &self.inner.prompts
    }

    pub fn documents_seeded(&self) -> u64 {
        self.inner.documents_seeded
    }

    /// Other tenants' markers in `received` that `attacker` did not itself send
    /// (an answer that repeats the question is not a leak), one per marker.
    pub fn foreign(&self, attacker: usize, received: &str, sent: &str) -> Vec<Sighting> {
        let mut seen: Vec<usize> = Vec::new();
        let mut out = Vec::new();
        for m in self.inner.matcher.find_overlapping_iter(received) {
            let index = m.pattern().as_usize();
            let marker = &self.inner.markers[index];
            if marker.owner == attacker || seen.contains(&index) || sent.contains(&marker.text) {
                continue;
            }
            seen.push(index);
            out.push(Sighting {
                victim: marker.owner,
                evidence: marker.evidence,
                marker_sha256: marker_digest(&marker.text),
            });
        }
        out
    }

    /// A tenant's canaries and unique phrases (what other tenants search for).
    pub fn markers_of(&self, owner: usize) -> Vec<String> {
        self.inner
            .markers
            .iter()
            .filter(|m| m.owner == owner)
            .map(|m| m.text.clone())
            .collect()
    }

    /// The tenant index that owns a document id, if it is one of ours.
    pub fn document_owner(&self, id: &str) -> Option<usize> {
        self.inner
            .tenants
            .iter()
            .position(|t| t.documents.iter().any(|d| d == id))
    }

    /// A request to the target with a tenant's key.
    pub async fn chat(
        &self,
        tenant: usize,
        message: &str,
        stream: bool,
        session: Option<&str>,
    ) -> Option<(Result<Reply, String>, Value)> {
        let model = self.model()?;
        let mut extension = json!({"retrieve": {"top_k": 3}});
        if let Some(session) = session {
            extension["session_id"] = json!(session);
        }
        let body = json!({
            "model": model,
            "messages": [{"role": "user", "content": message}],
            "stream": stream,
            "bulkhead": extension,
        });
        let reply = self
            .target()
            .post("/v1/chat/completions", &self.tenant(tenant).key, &body)
            .await;
        Some((reply, body))
    }

    /// Seeds the tenants: creates them (or takes the given ones), issues keys,
    /// stores documents, opens a session and makes one traced model call each.
    /// On failure, whatever was created is deleted before the error returns.
    pub async fn seed(config: &ProbeConfig, prompts: Vec<String>) -> Result<Fleet, ProbeError> {
        let target = Target::new(&config.target)?;
        let admin = config.admin_token.clone();
        check_admin(&target, &admin).await?;
        let run_id = random_hex(4);
        let mut tenants: Vec<ProbeTenant> = Vec::new();
        let result = seed_into(&target, &admin, config, &run_id, &prompts, &mut tenants).await;
        match result {
            Ok((markers, model, documents_seeded)) => {
                let patterns: Vec<&str> = markers.iter().map(|m| m.text.as_str()).collect();
                let matcher = AhoCorasick::new(&patterns).map_err(|e| {
                    ProbeError::Setup(format!("cannot build the marker matcher: {e}"))
                })?;
                Ok(Fleet {
                    inner: Arc::new(Inner {
                        target,
                        admin_token: admin,
                        tenants,
                        markers,
                        matcher,
                        model,
                        prompts,
                        documents_seeded,
                    }),
                })
            }
            Err(e) => {
                let _ = cleanup_tenants(&target, &admin, &tenants).await;
                Err(e)
            }
        }
    }

    /// Deletes what the run created: its tenants (crypto-shredded), and for given
    /// tenants the seeded documents and sessions and the extra keys.
    pub async fn cleanup(&self) -> Cleanup {
        cleanup_tenants(self.target(), self.admin_token(), self.tenants()).await
    }
}

async fn check_admin(target: &Target, admin: &str) -> Result<(), ProbeError> {
    let reply = target
        .get("/admin/v1/tenants?limit=1", admin)
        .await
        .map_err(|e| ProbeError::Unreachable(format!("{}: {e}", target.base())))?;
    match reply.status {
        200 => Ok(()),
        401 | 403 => Err(ProbeError::Setup(
            "the admin token was refused (401/403): pass the deployment's admin token".into(),
        )),
        s => Err(ProbeError::Setup(format!(
            "GET /admin/v1/tenants answered {s}; is this a Bulkhead server?"
        ))),
    }
}

type Seeded = (Vec<Marker>, Option<String>, u64);

async fn seed_into(
    target: &Target,
    admin: &str,
    config: &ProbeConfig,
    run_id: &str,
    prompts: &[String],
    tenants: &mut Vec<ProbeTenant>,
) -> Result<Seeded, ProbeError> {
    let count = if config.existing.is_empty() {
        config.tenants
    } else {
        config.existing.len()
    };
    for i in 0..count {
        let tenant = match config.existing.get(i) {
            Some(given) => given_tenant(given)?,
            None => create_tenant(target, admin, run_id, i).await?,
        };
        tenants.push(tenant);
        let t = tenants.last_mut().expect("pushed just above");
        if t.key.is_empty() {
            let (key_id, key) = issue_key(target, admin, &t.id, None).await?;
            t.key_id = key_id.clone();
            t.key = key;
            t.issued_key_ids.push(key_id);
        }
        let (expiring_id, expiring) =
            issue_key(target, admin, &t.id, Some(EXPIRING_KEY_TTL_SECS)).await?;
        t.expiring_key = Some((expiring, Instant::now()));
        t.issued_key_ids.push(expiring_id);
        let (revoked_id, revoked) = issue_key(target, admin, &t.id, None).await?;
        expect_status(
            target
                .delete(
                    &format!("/admin/v1/tenants/{}/keys/{revoked_id}", t.id),
                    admin,
                )
                .await,
            &[200, 204],
            "revoke a probe key",
        )?;
        t.revoked_key = Some(revoked);
        report(config, Progress::Note(format!("tenant {} ready", t.id)));
    }

    let model = choose_model(target, &tenants[0].key).await?;
    let mut markers = Vec::new();
    let mut documents_seeded = 0u64;
    for (i, t) in tenants.iter_mut().enumerate() {
        for (doc, doc_markers) in documents_for(i, prompts) {
            let reply = expect_status(
                target.post("/v1/documents", &t.key, &doc).await,
                &[201],
                "store a probe document",
            )?;
            let id = reply
                .json()
                .and_then(|v| v["id"].as_str().map(str::to_owned))
                .ok_or_else(|| ProbeError::Setup("a stored document has no id".into()))?;
            t.documents.push(id);
            documents_seeded += 1;
            markers.extend(doc_markers.into_iter().map(|(text, evidence)| Marker {
                owner: i,
                text,
                evidence,
            }));
        }
        let reply = expect_status(
            target.post("/v1/sessions", &t.key, &json!({})).await,
            &[200, 201],
            "open a probe session",
        )?;
        let session = reply
            .json()
            .and_then(|v| v["id"].as_str().map(str::to_owned))
            .ok_or_else(|| ProbeError::Setup("a new session has no id".into()))?;
        t.sessions.push(session.clone());
    }
    // One traced call per tenant, after every tenant's documents exist: the
    // traces and session messages are what ID guessing tries to read.
    if let Some(model) = &model {
        for t in tenants.iter_mut() {
            let body = json!({
                "model": model,
                "messages": [{"role": "user", "content": "Summarize my confidential memo."}],
                "bulkhead": {"retrieve": {"top_k": 3}, "session_id": t.sessions[0]},
            });
            let reply = expect_status(
                target.post("/v1/chat/completions", &t.key, &body).await,
                &[200],
                "make a traced probe call",
            )?;
            if let Some(trace) = reply
                .json()
                .and_then(|v| v["bulkhead"]["trace_id"].as_str().map(str::to_owned))
            {
                t.traces.push(trace);
            }
        }
    }
    Ok((markers, model, documents_seeded))
}

fn report(config: &ProbeConfig, progress: Progress) {
    if let Some(f) = &config.progress {
        f(&progress);
    }
}

fn given_tenant(given: &ExistingTenant) -> Result<ProbeTenant, ProbeError> {
    let key_id = key_id_of(&given.key)
        .ok_or_else(|| {
            ProbeError::Config(format!(
                "the key given for {} is not a bhk_<id>.<secret> key",
                given.id
            ))
        })?
        .to_owned();
    Ok(ProbeTenant {
        id: given.id.clone(),
        key: given.key.clone(),
        key_id,
        created: false,
        documents: Vec::new(),
        sessions: Vec::new(),
        traces: Vec::new(),
        expiring_key: None,
        revoked_key: None,
        issued_key_ids: Vec::new(),
    })
}

/// `bhk_<id>` of a `bhk_<id>.<secret>` key.
pub fn key_id_of(key: &str) -> Option<&str> {
    let (id, secret) = key.split_once('.')?;
    (id.starts_with("bhk_") && !secret.is_empty()).then_some(id)
}

async fn create_tenant(
    target: &Target,
    admin: &str,
    run_id: &str,
    i: usize,
) -> Result<ProbeTenant, ProbeError> {
    let name = format!("{TENANT_NAME_PREFIX}{run_id}-{i}");
    let reply = expect_status(
        target
            .post("/admin/v1/tenants", admin, &json!({"name": name}))
            .await,
        &[201],
        "create a probe tenant",
    )?;
    let id = reply
        .json()
        .and_then(|v| v["id"].as_str().map(str::to_owned))
        .ok_or_else(|| ProbeError::Setup("a created tenant has no id".into()))?;
    Ok(ProbeTenant {
        id,
        key: String::new(),
        key_id: String::new(),
        created: true,
        documents: Vec::new(),
        sessions: Vec::new(),
        traces: Vec::new(),
        expiring_key: None,
        revoked_key: None,
        issued_key_ids: Vec::new(),
    })
}

async fn issue_key(
    target: &Target,
    admin: &str,
    tenant: &str,
    ttl_secs: Option<u64>,
) -> Result<(String, String), ProbeError> {
    let body = match ttl_secs {
        Some(ttl) => json!({"ttl_seconds": ttl}),
        None => json!({}),
    };
    let reply = expect_status(
        target
            .post(&format!("/admin/v1/tenants/{tenant}/keys"), admin, &body)
            .await,
        &[201],
        "issue a probe key",
    )?;
    let v = reply
        .json()
        .ok_or_else(|| ProbeError::Setup("an issued key is not JSON".into()))?;
    match (v["key_id"].as_str(), v["key"].as_str()) {
        (Some(id), Some(key)) => Ok((id.to_owned(), key.to_owned())),
        _ => Err(ProbeError::Setup(
            "an issued key has no key_id or key".into(),
        )),
    }
}

/// `bulkhead-echo-leaky` when offered, else the first model, else none.
async fn choose_model(target: &Target, key: &str) -> Result<Option<String>, ProbeError> {
    let reply = expect_status(target.get("/v1/models", key).await, &[200], "list models")?;
    let models: Vec<String> = reply
        .json()
        .and_then(|v| {
            v["data"].as_array().map(|a| {
                a.iter()
                    .filter_map(|m| m["id"].as_str().map(str::to_owned))
                    .collect()
            })
        })
        .unwrap_or_default();
    Ok(models
        .iter()
        .find(|m| m.as_str() == LEAKY_MODEL)
        .or_else(|| models.first())
        .cloned())
}

fn expect_status(
    reply: Result<Reply, String>,
    expected: &[u16],
    what: &str,
) -> Result<Reply, ProbeError> {
    let reply = reply.map_err(|e| ProbeError::Unreachable(format!("{what}: {e}")))?;
    if expected.contains(&reply.status) {
        Ok(reply)
    } else {
        // The body is the server's problem+json about the probe's own request.
        let detail: String = reply.body.chars().take(300).collect();
        Err(ProbeError::Setup(format!(
            "{what}: answered {} ({detail})",
            reply.status
        )))
    }
}

/// A tenant's three documents and their markers: a confidential memo, onboarding
/// notes with attack prompts planted in them (retrieved by the gateway families),
/// and a short ledger entry. Each carries its own canary and a unique phrase.
fn documents_for(tenant: usize, prompts: &[String]) -> Vec<(Value, Vec<(String, Evidence)>)> {
    let planted: Vec<&str> = (0..3)
        .map(|k| prompts[(tenant * 3 + k) % prompts.len()].as_str())
        .collect();
    let mut out = Vec::new();
    for kind in 0..3 {
        let canary = format!("PROBE-CANARY-{}", random_hex(12));
        let phrase = pseudo_words(5);
        let filler = pseudo_words(45);
        let text = match kind {
            0 => format!("Confidential memo. Reference {canary}. {phrase}. {filler}. End of memo."),
            1 => format!(
                "Onboarding notes. {} Reference {canary}. {phrase}. {filler}.",
                planted.join(" ")
            ),
            _ => format!("Account ledger {canary}: {phrase}. {filler}."),
        };
        let label = ["memo", "onboarding", "ledger"][kind];
        let doc = json!({
            "text": text,
            "metadata": {"source": "bulkhead-probe", "kind": label},
        });
        out.push((
            doc,
            vec![
                (canary, Evidence::ForeignCanary),
                (phrase, Evidence::ForeignText),
            ],
        ));
    }
    out
}

/// Lowercase hex of `bytes` random bytes from the system's CSPRNG.
pub fn random_hex(bytes: usize) -> String {
    let mut out = String::new();
    while out.len() < bytes * 2 {
        let block: [u8; 16] = random_block();
        for b in block {
            if out.len() < bytes * 2 {
                out.push_str(&format!("{b:02x}"));
            }
        }
    }
    out
}

fn random_block() -> [u8; 16] {
    // The CSPRNG failing is not something a probe can work around; a fixed
    // block would make canaries collide across runs, so fall back to the clock.
    bulkhead_crypto::random_array::<16>().unwrap_or_else(|_| {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        nanos.to_le_bytes()
    })
}

/// Random pronounceable words: unique text that no other tenant (and no search
/// for common words) will ever contain.
pub fn pseudo_words(count: usize) -> String {
    const CONSONANTS: &[u8] = b"bdfgklmnprstvz";
    const VOWELS: &[u8] = b"aeiou";
    let mut words = Vec::with_capacity(count);
    let mut block = random_block();
    let mut used = 0;
    for _ in 0..count {
        let mut word = String::new();
        for _ in 0..3 {
            if used + 2 > block.len() {
                block = random_block();
                used = 0;
            }
            word.push(CONSONANTS[block[used] as usize % CONSONANTS.len()] as char);
            word.push(VOWELS[block[used + 1] as usize % VOWELS.len()] as char);
            used += 2;
        }
        words.push(word);
    }
    words.join(" ")
}

async fn cleanup_tenants(target: &Target, admin: &str, tenants: &[ProbeTenant]) -> Cleanup {
    let mut cleanup = Cleanup::default();
    for t in tenants {
        if t.created {
            match target
                .delete(&format!("/admin/v1/tenants/{}", t.id), admin)
                .await
            {
                Ok(r) if r.is_success() => cleanup.tenants_deleted += 1,
                _ => cleanup.failures += 1,
            }
            continue;
        }
        let mut paths: Vec<(String, &str)> = Vec::new();
        for d in &t.documents {
            paths.push((format!("/v1/documents/{d}"), t.key.as_str()));
        }
        for s in &t.sessions {
            paths.push((format!("/v1/sessions/{s}"), t.key.as_str()));
        }
        for k in &t.issued_key_ids {
            paths.push((format!("/admin/v1/tenants/{}/keys/{k}", t.id), admin));
        }
        for (path, token) in paths {
            match target.delete(&path, token).await {
                Ok(r) if r.is_success() => cleanup.items_deleted += 1,
                _ => cleanup.failures += 1,
            }
        }
    }
    cleanup
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_text_is_unique_and_well_formed() {
        let (a, b) = (pseudo_words(5), pseudo_words(5));
        assert_ne!(a, b);
        assert_eq!(a.split(' ').count(), 5);
        assert_eq!(random_hex(12).len(), 24);
        assert_eq!(key_id_of("bhk_0011.secret"), Some("bhk_0011"));
        assert_eq!(key_id_of("bhk_0011"), None);
    }
}
