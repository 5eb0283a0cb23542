//! Each verifier against logs built in memory with `bulkhead-ledger`: a valid
//! proof passes; an edited hash, a forged signature, a rollback and a truncated
//! proof fail.

use super::*;
use bulkhead_api::incident::{ImpactItem, ImpactSummary, LogSection};
use bulkhead_api::receipt::ReceiptLogEntry;
use bulkhead_ledger::note::NoteSigner;
use bulkhead_ledger::proof::{NodeId, ProofPlan, consistency_plan, inclusion_plan};
use bulkhead_ledger::root_of;
use serde_json::{Value, json};

struct Log {
    signer: NoteSigner,
    origin: String,
    events: Vec<Value>,
    leaves: Vec<Hash>,
}

fn log(n: usize) -> Log {
    let signer = NoteSigner::generate("bulkhead.test").unwrap();
    let events: Vec<Value> = (0..n)
        .map(|i| json!({"kind": "document.read", "n": i}))
        .collect();
    let leaves = events
        .iter()
        .map(|e| leaf_hash_of_json(e).unwrap())
        .collect();
    Log {
        signer,
        origin: "bulkhead.test/operator".into(),
        events,
        leaves,
    }
}

impl Log {
    fn push(&mut self, event: Value) -> u64 {
        self.leaves.push(leaf_hash_of_json(&event).unwrap());
        self.events.push(event);
        self.leaves.len() as u64 - 1
    }

    fn checkpoint(&self, size: usize) -> Checkpoint {
        Checkpoint {
            origin: self.origin.clone(),
            size: size as u64,
            root: root_of(&self.leaves[..size]),
        }
    }

    fn note(&self, size: usize) -> String {
        self.checkpoint(size).sign(&self.signer).unwrap()
    }

    fn verifier(&self) -> NoteVerifier {
        NoteVerifier::from_vkey(&self.signer.vkey()).unwrap()
    }

    fn resolve(&self, plan: ProofPlan) -> Vec<String> {
        let node = |id: NodeId| {
            let begin = usize::try_from(id.index << id.level).ok()?;
            let end = begin + (1usize << id.level);
            (end <= self.leaves.len()).then(|| root_of(&self.leaves[begin..end]))
        };
        plan.resolve(node).unwrap().iter().map(|h| b64(h)).collect()
    }

    fn inclusion(&self, index: u64, size: u64) -> Vec<String> {
        self.resolve(inclusion_plan(index, size).unwrap())
    }

    fn consistency(&self, old: u64, new: u64) -> Vec<String> {
        self.resolve(consistency_plan(old, new).unwrap())
    }
}

fn other_key() -> NoteVerifier {
    NoteVerifier::from_vkey(&NoteSigner::generate("bulkhead.test").unwrap().vkey()).unwrap()
}

#[test]
fn checkpoints_open_only_under_their_key_and_unedited() {
    let l = log(5);
    let note = l.note(5);
    assert_eq!(
        checkpoint(&note, &l.verifier(), "operator"),
        Ok(l.checkpoint(5))
    );
    let forged = checkpoint(&note, &other_key(), "operator");
    assert_eq!(
        forged,
        Err(VerifyError::Signature {
            log: "operator".into()
        })
    );
    let edited = note.replacen("\n5\n", "\n6\n", 1);
    assert!(checkpoint(&edited, &l.verifier(), "operator").is_err());
}

#[test]
fn inclusion_holds_for_the_entry_and_nothing_else() {
    let l = log(13);
    let cp = l.checkpoint(13);
    let proof = l.inclusion(6, 13);
    let leaf = b64(&l.leaves[6]);
    assert_eq!(inclusion("tenant", 6, &leaf, &proof, &cp), Ok(()));
    // An edited leaf hash.
    let other = b64(&l.leaves[7]);
    assert!(matches!(
        inclusion("tenant", 6, &other, &proof, &cp),
        Err(VerifyError::Inclusion {
            index: 6,
            size: 13,
            ..
        })
    ));
    // An edited proof hash.
    let mut edited = proof.clone();
    edited[0] = b64(&l.leaves[0]);
    assert!(inclusion("tenant", 6, &leaf, &edited, &cp).is_err());
    // A truncated proof.
    assert!(inclusion("tenant", 6, &leaf, &proof[..proof.len() - 1], &cp).is_err());
    // Not base64 hashes at all.
    assert!(matches!(
        inclusion("tenant", 6, "nope", &proof, &cp),
        Err(VerifyError::LeafHash { .. })
    ));
    assert!(matches!(
        inclusion("tenant", 6, &leaf, &["nope".to_owned()], &cp),
        Err(VerifyError::ProofEncoding { .. })
    ));
}

#[test]
fn consistency_holds_for_growth_and_fails_for_rewrites_and_rollbacks() {
    let l = log(21);
    let (old, new) = (l.checkpoint(8), l.checkpoint(21));
    let proof = l.consistency(8, 21);
    assert_eq!(consistency(&old, &new, &proof), Ok(()));
    assert!(matches!(
        consistency(&new, &old, &proof),
        Err(VerifyError::Rollback { old: 21, new: 8 })
    ));
    assert!(consistency(&old, &new, &proof[..proof.len() - 1]).is_err());
    // Another history of the same size.
    let mut fork = log(7);
    fork.push(json!({"kind": "forked"}));
    let forked = fork.checkpoint(8);
    assert!(matches!(
        consistency(&forked, &new, &proof),
        Err(VerifyError::Consistency { old: 8, new: 21 })
    ));
}

fn item(l: &Log, which: &str, index: u64, size: u64) -> ImpactItem {
    ImpactItem {
        log: which.into(),
        index,
        time: "2026-11-28T09:00:00Z".into(),
        kind: "document.read".into(),
        actor: "key:bhk_1".into(),
        outcome: "allowed".into(),
        reason: None,
        subjects: vec![],
        attrs: Default::default(),
        leaf_hash: b64(&l.leaves[index as usize]),
        proof: l.inclusion(index, size),
    }
}

fn report(tenant: &Log, operator: &Log) -> ImpactReport {
    let section = |l: &Log| LogSection {
        checkpoint: l.note(l.leaves.len()),
        size: l.leaves.len() as u64,
        scanned: l.leaves.len() as u64,
        truncated: false,
    };
    let (ts, os) = (tenant.leaves.len() as u64, operator.leaves.len() as u64);
    ImpactReport {
        tenant: "tn_1".into(),
        from: "2026-11-28T09:00:00Z".into(),
        to: "2026-11-28T10:00:00Z".into(),
        generated_at: "2026-11-28T10:00:01Z".into(),
        vkey: tenant.signer.vkey(),
        tenant_log: section(tenant),
        operator_log: section(operator),
        summary: ImpactSummary::default(),
        read: vec![item(tenant, "tenant", 2, ts), item(tenant, "tenant", 4, ts)],
        returned: vec![],
        blocked: vec![item(operator, "operator", 1, os)],
        other: vec![item(tenant, "tenant", 0, ts)],
    }
}

#[test]
fn impact_reports_verify_item_by_item() {
    let tenant = log(6);
    let mut operator = log(3);
    // One key signs both logs, as one server does.
    operator.signer = NoteSigner::from_skey(&tenant.signer.to_skey().unwrap()).unwrap();
    let r = report(&tenant, &operator);
    assert_eq!(impact_report(&r, &tenant.verifier()), Ok(4));

    let mut edited = r.clone();
    edited.read[1].leaf_hash = b64(&tenant.leaves[5]);
    assert_eq!(
        impact_report(&edited, &tenant.verifier()),
        Err(VerifyError::Inclusion {
            log: "tenant".into(),
            index: 4,
            size: 6
        })
    );
    let mut truncated = r.clone();
    truncated.blocked[0].proof.pop();
    assert!(matches!(
        impact_report(&truncated, &tenant.verifier()),
        Err(VerifyError::Inclusion { index: 1, .. })
    ));
    assert_eq!(
        impact_report(&r, &other_key()),
        Err(VerifyError::Signature {
            log: "tenant".into()
        })
    );
    // A checkpoint of another size than the proofs were made for.
    let mut shrunk = r.clone();
    shrunk.tenant_log.checkpoint = tenant.note(5);
    assert!(impact_report(&shrunk, &tenant.verifier()).is_err());
}

fn receipt(l: &mut Log) -> ErasureReceipt {
    let statement = json!({
        "tenant_id": "tn_gone",
        "erased_at": "2026-11-28T09:00:00Z",
        "data_keys_destroyed": 2,
        "records_deleted": 17,
        "api_keys_deleted": 1,
        "method": "crypto-shred",
        "server": "bulkhead.test",
    });
    let digest = hex(&sha256(&canonical_json(&statement).unwrap()));
    let event =
        json!({"kind": "tenant.erase", "tenant": "tn_gone", "attrs": {"receipt_sha256": digest}});
    let index = l.push(event.clone());
    l.push(json!({"kind": "later"}));
    let size = l.leaves.len() as u64;
    let Value::Object(statement) = statement else {
        unreachable!("a JSON object literal")
    };
    ErasureReceipt {
        statement,
        receipt_sha256: Some(digest),
        operator_log: Some(ReceiptLogEntry {
            index,
            event,
            leaf_hash: b64(&l.leaves[index as usize]),
            proof: l.inclusion(index, size),
            checkpoint: l.note(size as usize),
        }),
        vkey: Some(l.signer.vkey()),
    }
}

#[test]
fn erasure_receipts_verify_offline_and_edits_are_named() {
    let mut l = log(9);
    let r = receipt(&mut l);
    let (problems, cp) = receipt_offline(&r, &l.verifier());
    assert_eq!(problems, Vec::<String>::new());
    assert_eq!(cp, Some(l.checkpoint(11)));
    // The receipt round-trips through its wire shape.
    let wire = serde_json::to_value(&r).unwrap();
    assert_eq!(wire["records_deleted"], 17);
    assert_eq!(serde_json::from_value::<ErasureReceipt>(wire).unwrap(), r);

    let mut edited = r.clone();
    edited.statement.insert("records_deleted".into(), json!(0));
    let (problems, _) = receipt_offline(&edited, &l.verifier());
    assert!(
        problems.iter().any(|p| p.contains("it was edited")),
        "{problems:?}"
    );

    let (problems, cp) = receipt_offline(&r, &other_key());
    assert_eq!(
        problems,
        ["the checkpoint's signature does not verify under the key given"]
    );
    assert_eq!(cp, None);

    let mut truncated = r.clone();
    truncated.operator_log.as_mut().unwrap().proof.pop();
    let (problems, _) = receipt_offline(&truncated, &l.verifier());
    assert!(
        problems[0].starts_with("the inclusion proof of entry 9 does not verify"),
        "{problems:?}"
    );

    let mut forged_leaf = r.clone();
    forged_leaf.operator_log.as_mut().unwrap().leaf_hash = b64(&l.leaves[0]);
    let (problems, _) = receipt_offline(&forged_leaf, &l.verifier());
    assert_eq!(problems, ["the event does not hash to its leaf hash"]);

    let mut missing = r.clone();
    missing.statement.remove("server");
    let (problems, _) = receipt_offline(&missing, &l.verifier());
    assert_eq!(problems[0], "the receipt has no `server`");
}
