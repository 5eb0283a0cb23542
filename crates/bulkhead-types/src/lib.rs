//! Identifier and time newtypes shared by every Bulkhead crate.
//!
//! Parse, don't validate: a `TenantId` or `DocumentId` that exists has already
//! been checked, so no layer below the edge ever sees a malformed one. This crate
//! does no I/O and must never grow any; it generates random ids only through a
//! byte source the caller passes in.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Why a string was refused as an identifier. The message is safe to show a client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} {problem}")]
pub struct InvalidId {
    pub what: &'static str,
    pub problem: &'static str,
}

fn check_token(
    what: &'static str,
    value: &str,
    len_max: usize,
    extra_chars: &str,
) -> Result<(), InvalidId> {
    if value.is_empty() {
        return Err(InvalidId {
            what,
            problem: "must not be empty",
        });
    }
    if value.len() > len_max {
        return Err(InvalidId {
            what,
            problem: "is too long",
        });
    }
    let allowed = |c: char| c.is_ascii_alphanumeric() || extra_chars.contains(c);
    if !value.chars().all(allowed) {
        return Err(InvalidId {
            what,
            problem: "contains characters outside the allowed set",
        });
    }
    Ok(())
}

/// Lowercase hex of some bytes.
pub fn hex_lower(bytes: &[u8]) -> String {
    use fmt::Write;
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        // Writing into a String cannot fail.
        let _ = write!(out, "{b:02x}");
    }
    out
}

macro_rules! prefixed_id {
    ($(#[$doc:meta])* $name:ident, $prefix:literal, $what:literal, $random_bytes:literal) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            pub const PREFIX: &'static str = $prefix;
            /// Number of random bytes in a generated id.
            pub const RANDOM_BYTES: usize = $random_bytes;

            /// Builds a fresh id from `RANDOM_BYTES` bytes of a CSPRNG.
            pub fn from_random(random: [u8; $random_bytes]) -> Self {
                Self(format!("{}{}", $prefix, hex_lower(&random)))
            }

            pub fn parse(value: &str) -> Result<Self, InvalidId> {
                let rest = value
                    .strip_prefix($prefix)
                    .ok_or(InvalidId { what: $what, problem: "has the wrong prefix" })?;
                if rest.len() != $random_bytes * 2
                    || !rest.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
                {
                    return Err(InvalidId { what: $what, problem: "is malformed" });
                }
                Ok(Self(value.to_owned()))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                Self::parse(&s).map_err(serde::de::Error::custom)
            }
        }
    };
}

prefixed_id!(
    /// A tenant: `tn_` and 96 random bits in hex, unguessable so that ids are not
    /// an enumeration oracle even before authorization is checked.
    TenantId,
    "tn_",
    "tenant id",
    12
);

prefixed_id!(
    /// The public half of an API key, used to find its row. It is not a secret:
    /// it appears in logs and in the audit trail.
    ApiKeyId,
    "bhk_",
    "key id",
    8
);

/// A document id, chosen by the client or generated (`doc_` and 96 random bits).
/// Unique within one tenant only: two tenants may use the same id, and neither can
/// learn that the other does.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct DocumentId(String);

impl DocumentId {
    pub const LEN_MAX: usize = 128;

    pub fn generate(random: [u8; 12]) -> Self {
        Self(format!("doc_{}", hex_lower(&random)))
    }

    /// Accepts 1 to 128 characters of `A-Z a-z 0-9 . _ : -`, so ids are safe in
    /// URLs, logs and file names without escaping.
    pub fn parse(value: &str) -> Result<Self, InvalidId> {
        check_token("document id", value, Self::LEN_MAX, "._:-")?;
        Ok(Self(value.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for DocumentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for DocumentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DocumentId({})", self.0)
    }
}

impl<'de> Deserialize<'de> for DocumentId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

macro_rules! name_token {
    ($(#[$doc:meta])* $name:ident, $what:literal, $len_max:literal, $default:literal) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, Serialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            pub fn parse(value: &str) -> Result<Self, InvalidId> {
                check_token($what, value, $len_max, "-_.")?;
                if value.bytes().any(|b| b.is_ascii_uppercase()) {
                    return Err(InvalidId { what: $what, problem: "must be lowercase" });
                }
                Ok(Self(value.to_owned()))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self($default.to_owned())
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                Self::parse(&s).map_err(serde::de::Error::custom)
            }
        }
    };
}

name_token!(
    /// A residency region tag such as `eu-west` (lowercase, at most 32 characters).
    Region,
    "region",
    32,
    "default"
);

name_token!(
    /// The name of a policy pack such as `gdpr` (lowercase, at most 32 characters).
    PolicyName,
    "policy",
    32,
    "default"
);

/// The version of a tenant's data key. Version 1 is created with the tenant; each
/// rotation adds one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct KeyVersion(u32);

impl KeyVersion {
    pub const FIRST: KeyVersion = KeyVersion(1);

    pub fn new(value: u32) -> Option<Self> {
        (value >= 1).then_some(Self(value))
    }

    pub fn get(self) -> u32 {
        self.0
    }

    /// The version a rotation creates; `None` once the space is exhausted.
    pub fn next(self) -> Option<Self> {
        self.0.checked_add(1).map(Self)
    }
}

impl fmt::Display for KeyVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "v{}", self.0)
    }
}

/// What a sealed record holds. The kind is bound into the record's associated data,
/// so a record moved to another kind's rows fails to open.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RecordKind(&'static str);

impl RecordKind {
    /// A document as ingested: id, text and metadata.
    pub const DOCUMENT: RecordKind = RecordKind("document");
    /// One chunk of a document, for retrieval: its text, metadata and embedding.
    /// Its record id is `<document id>#<index>`.
    pub const CHUNK: RecordKind = RecordKind("chunk");
    /// A tenant's canary token: a secret string planted in its context whose
    /// appearance in another tenant's output proves a leak.
    pub const CANARY: RecordKind = RecordKind("canary");
    /// The body of an audit event. Its record id is the hex of the entry's leaf hash,
    /// so a body moved to another entry fails to open.
    pub const AUDIT_EVENT: RecordKind = RecordKind("audit_event");
    /// A conversation session: its creation and expiry; the messages are its parts.
    pub const SESSION: RecordKind = RecordKind("session");
    /// One message of a session. Its record id is `<session id>#<seq, 8 digits>`.
    pub const SESSION_MESSAGE: RecordKind = RecordKind("session_message");
    /// The decision trace of one model call.
    pub const TRACE: RecordKind = RecordKind("trace");
    /// The output guard's keyed evidence of ephemeral content the tenant sent (a
    /// prompt, a tool result): hashes only, never text, kept for the protection
    /// window so every replica and a restarted server protect it too. Its record
    /// id is the hex of the evidence's keyed digest.
    pub const GUARD_EVIDENCE: RecordKind = RecordKind("guard_evidence");
    /// A setting the operator made for one tenant (its quotas). Its record id
    /// names the setting.
    pub const TENANT_SETTING: RecordKind = RecordKind("tenant_setting");

    /// Every kind there is. Later capabilities (sessions, traces, chunks) add theirs
    /// here as constants; a kind is never a string taken from a request.
    pub const ALL: &'static [RecordKind] = &[
        RecordKind::DOCUMENT,
        RecordKind::CHUNK,
        RecordKind::CANARY,
        RecordKind::SESSION,
        RecordKind::SESSION_MESSAGE,
        RecordKind::TRACE,
        RecordKind::GUARD_EVIDENCE,
        RecordKind::TENANT_SETTING,
    ];

    /// The kind a stored name stands for; `None` for a name this build does not know.
    pub fn from_stored(name: &str) -> Option<RecordKind> {
        Self::ALL.iter().copied().find(|k| k.0 == name)
    }

    pub fn as_str(self) -> &'static str {
        self.0
    }

    /// A kind for tests of the kind binding; never stored by the server.
    #[doc(hidden)]
    pub const fn test_only(name: &'static str) -> Self {
        Self(name)
    }
}

/// Which audit log: the operator's (admin actions, unattributable denials) or one
/// tenant's.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum LogId {
    Operator,
    Tenant(TenantId),
}

impl LogId {
    /// The stored and displayed name: `operator` or the tenant id.
    pub fn as_str(&self) -> &str {
        match self {
            LogId::Operator => "operator",
            LogId::Tenant(t) => t.as_str(),
        }
    }

    pub fn parse(raw: &str) -> Result<Self, InvalidId> {
        if raw == "operator" {
            Ok(LogId::Operator)
        } else {
            TenantId::parse(raw).map(LogId::Tenant)
        }
    }

    pub fn tenant(&self) -> Option<&TenantId> {
        match self {
            LogId::Operator => None,
            LogId::Tenant(t) => Some(t),
        }
    }
}

impl fmt::Display for LogId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether a tenant may use its keys. Quarantine stops every tenant-plane request
/// but leaves the tenant's data untouched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TenantStatus {
    Active,
    Quarantined,
}

impl TenantStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            TenantStatus::Active => "active",
            TenantStatus::Quarantined => "quarantined",
        }
    }

    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "active" => Some(TenantStatus::Active),
            "quarantined" => Some(TenantStatus::Quarantined),
            _ => None,
        }
    }
}

/// Milliseconds since the Unix epoch, UTC. Used for every stored time so that rows
/// sort and compare without parsing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct UnixMillis(pub i64);

impl UnixMillis {
    /// RFC 3339 in UTC, with fractional seconds when there are any.
    pub fn rfc3339(self) -> String {
        time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(self.0) * 1_000_000)
            .ok()
            .and_then(|dt| {
                dt.format(&time::format_description::well_known::Rfc3339)
                    .ok()
            })
            .unwrap_or_default()
    }

    pub fn saturating_add_secs(self, secs: u64) -> Self {
        let millis = i64::try_from(secs).unwrap_or(i64::MAX).saturating_mul(1000);
        Self(self.0.saturating_add(millis))
    }
}

/// The source of "now". Passed in so that time-based behaviour (expiry, TTLs) is
/// tested without sleeping.
pub trait Clock: Send + Sync + fmt::Debug + 'static {
    fn now(&self) -> UnixMillis;
}

/// The wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> UnixMillis {
        let since_epoch = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        UnixMillis(i64::try_from(since_epoch.as_millis()).unwrap_or(i64::MAX))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_and_reject_garbage() {
        let t = TenantId::from_random([0xab; 12]);
        assert_eq!(t.as_str(), "tn_abababababababababababab");
        assert_eq!(TenantId::parse(t.as_str()), Ok(t));
        for bad in [
            "",
            "tn_",
            "tn_ABABABABABABABABABABABAB",
            "xx_abababababababababababab",
            "tn_abab",
        ] {
            assert!(TenantId::parse(bad).is_err(), "{bad:?} accepted");
        }
        assert!(DocumentId::parse("invoice-2024.07:a_b").is_ok());
        for bad in ["", "a b", "a/b", "ä", &"x".repeat(129)] {
            assert!(DocumentId::parse(bad).is_err(), "{bad:?} accepted");
        }
        assert!(Region::parse("eu-west").is_ok());
        assert!(Region::parse("EU").is_err());
    }

    #[test]
    fn key_versions_start_at_one() {
        assert_eq!(KeyVersion::new(0), None);
        assert_eq!(KeyVersion::FIRST.next().map(KeyVersion::get), Some(2));
        assert_eq!(KeyVersion::new(u32::MAX).and_then(KeyVersion::next), None);
    }
}
