//! The audit event, and the canonical bytes a log leaf hashes.
//!
//! An event says who did what to which ids, with which outcome — never content and
//! never a secret: content appears only as a SHA-256 (`sha256:<hex>`).
//!
//! Canonical encoding: JSON with object keys sorted by their bytes, no whitespace,
//! integers only, strings escaped as serde_json escapes them (the RFC 8785 rules for
//! the values events contain). A verifier needs no schema: it re-encodes whatever
//! `event` object the server returned, hashes it with the leaf prefix and compares.
//! Fields added by later versions therefore verify with today's verifier.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{Hash, leaf_hash};

/// The event format version this build writes.
pub const EVENT_VERSION: u32 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Allowed,
    Denied,
}

/// Something an event is about: a document, a key, a tenant, a chunk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Subject {
    pub kind: String,
    pub id: String,
    /// `sha256:<hex>` of the subject's content, where it has content.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash: Option<String>,
}

impl Subject {
    pub fn new(kind: &str, id: impl Into<String>) -> Self {
        Self {
            kind: kind.to_owned(),
            id: id.into(),
            hash: None,
        }
    }

    pub fn with_content(mut self, content: &[u8]) -> Self {
        self.hash = Some(content_hash(content));
        self
    }
}

/// `sha256:<hex>` of some content.
pub fn content_hash(content: &[u8]) -> String {
    format!("sha256:{}", crate::hex(&crate::sha256(content)))
}

/// A scalar attribute: a count, a version, a flag, a class name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Attr {
    Int(i64),
    Bool(bool),
    Text(String),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditEvent {
    pub v: u32,
    /// What happened, `noun.verb`: `document.read`, `key.issue`, `auth.deny`.
    pub kind: String,
    /// RFC 3339 UTC with milliseconds.
    pub time: String,
    /// Who: `key:<key id>`, `admin`, `system` or `anonymous`.
    pub actor: String,
    /// The tenant concerned, in operator-log events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subjects: Vec<Subject>,
    pub outcome: Outcome,
    /// Why it was denied: a class such as `not_found`, `revoked`, `quarantined`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub attrs: BTreeMap<String, Attr>,
}

impl AuditEvent {
    pub fn new(kind: &str, time: String, actor: String, outcome: Outcome) -> Self {
        Self {
            v: EVENT_VERSION,
            kind: kind.to_owned(),
            time,
            actor,
            tenant: None,
            subjects: Vec::new(),
            outcome,
            reason: None,
            request_id: None,
            attrs: BTreeMap::new(),
        }
    }

    /// The bytes the leaf hashes.
    pub fn canonical_bytes(&self) -> Vec<u8> {
        let value = serde_json::to_value(self).expect("an event serializes");
        canonical_json(&value).expect("an event holds no floats")
    }

    pub fn leaf_hash(&self) -> Hash {
        leaf_hash(&self.canonical_bytes())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CanonicalError {
    #[error("a number that is not an integer cannot be encoded canonically")]
    NotAnInteger,
}

/// The canonical encoding of any JSON value (see the module notes).
pub fn canonical_json(value: &Value) -> Result<Vec<u8>, CanonicalError> {
    let mut out = Vec::with_capacity(256);
    write_canonical(value, &mut out)?;
    Ok(out)
}

/// The leaf hash of an event given as JSON, as a verifier computes it.
pub fn leaf_hash_of_json(value: &Value) -> Result<Hash, CanonicalError> {
    Ok(leaf_hash(&canonical_json(value)?))
}

fn write_string(s: &str, out: &mut Vec<u8>) {
    // serde_json's string escaping: ", \, and control characters; \u00xx lowercase.
    out.extend_from_slice(
        serde_json::to_string(s)
            .expect("strings serialize")
            .as_bytes(),
    );
}

fn write_canonical(value: &Value, out: &mut Vec<u8>) -> Result<(), CanonicalError> {
    match value {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                out.extend_from_slice(i.to_string().as_bytes());
            } else if let Some(u) = n.as_u64() {
                out.extend_from_slice(u.to_string().as_bytes());
            } else {
                return Err(CanonicalError::NotAnInteger);
            }
        }
        Value::String(s) => write_string(s, out),
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_canonical(item, out)?;
            }
            out.push(b']');
        }
        Value::Object(map) => {
            // Sorted here, whatever order the map keeps (serde_json's
            // `preserve_order` feature, if any crate turns it on, would change it).
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push(b'{');
            for (i, key) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_string(key, out);
                out.push(b':');
                write_canonical(&map[key], out)?;
            }
            out.push(b'}');
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_form_is_stable_through_json_round_trips() {
        let mut event = AuditEvent::new(
            "document.read",
            "2026-11-27T12:00:00.000Z".into(),
            "key:bhk_0123456789abcdef".into(),
            Outcome::Allowed,
        );
        event
            .subjects
            .push(Subject::new("document", "doc-1").with_content(b"secret text"));
        event.attrs.insert("count".into(), Attr::Int(3));
        event.request_id = Some("req_1".into());
        let bytes = event.canonical_bytes();
        let text = String::from_utf8(bytes.clone()).unwrap();
        assert!(!text.contains("secret text"));
        assert!(
            text.starts_with(r#"{"actor":"key:bhk_0123456789abcdef","attrs":{"count":3},"kind""#)
        );
        // What a client gets back (pretty-printed, reordered) hashes the same.
        let value: Value =
            serde_json::from_str(&serde_json::to_string_pretty(&event).unwrap()).unwrap();
        assert_eq!(leaf_hash_of_json(&value).unwrap(), event.leaf_hash());
        let parsed: AuditEvent = serde_json::from_value(value).unwrap();
        assert_eq!(parsed, event);
        assert!(canonical_json(&serde_json::json!({"x": 1.5})).is_err());
    }
}
