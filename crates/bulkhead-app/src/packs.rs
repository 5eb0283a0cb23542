//! Compliance packs: one name (`gdpr`, `hipaa`, `pci-dss`, `soc2`, `default`, or an
//! operator's own) that sets a tenant's guard policy (detectors and actions),
//! retention (documents, sessions, traces), the audit-retention floor and where
//! its data may live.
//!
//! The built-in packs are TOML files compiled into the binary (`packs/*.toml`);
//! operators add their own from a folder (`policy_packs_dir`), validated at start
//! with errors that name the file and the field. A tenant names its pack at
//! creation; changing it is an audited admin action.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use bulkhead_guard::Policy;
use bulkhead_types::Region;
use serde::{Deserialize, Serialize};

const BUILTIN: &[(&str, &str)] = &[
    ("default.toml", include_str!("../packs/default.toml")),
    ("gdpr.toml", include_str!("../packs/gdpr.toml")),
    ("hipaa.toml", include_str!("../packs/hipaa.toml")),
    ("pci-dss.toml", include_str!("../packs/pci-dss.toml")),
    ("soc2.toml", include_str!("../packs/soc2.toml")),
];

/// Retention a pack sets. Absent values leave the choice to the client or the
/// server's settings.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Retention {
    /// The TTL of a document stored without one.
    #[serde(default)]
    pub document_ttl_secs_default: Option<u64>,
    /// The longest TTL a document may have (a document asked without one gets the
    /// default, or this).
    #[serde(default)]
    pub document_ttl_secs_max: Option<u64>,
    /// The TTL of a session created without one, and the longest it may have.
    #[serde(default)]
    pub session_ttl_secs: Option<u64>,
    /// How long decision traces are kept.
    #[serde(default)]
    pub trace_ttl_secs: Option<u64>,
    /// How long what a tenant sends through (prompts of every role, tool results,
    /// session history) stays protected by the output guard after it was last
    /// sent; unset: the server's `guard_prompt_window_secs`.
    #[serde(default)]
    pub prompt_window_secs: Option<u64>,
    /// The least time the tenant's audit log must stay available. Audit entries
    /// are never deleted by this server; the floor is what the evidence report
    /// holds the deployment to.
    pub audit_retention_days_min: u32,
}

/// Where a tenant of the pack may live: region patterns (`eu-*`); empty = any.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Residency {
    #[serde(default)]
    pub regions: Vec<String>,
}

impl Residency {
    pub fn allows(&self, region: &Region) -> bool {
        self.regions.is_empty()
            || self.regions.iter().any(|p| match p.strip_suffix('*') {
                Some(prefix) => region.as_str().starts_with(prefix),
                None => region.as_str() == p,
            })
    }
}

/// One pack, as written in its file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pack {
    pub name: String,
    pub description: String,
    pub retention: Retention,
    #[serde(default)]
    pub residency: Residency,
    #[serde(default)]
    pub guard: Policy,
    /// Limits on every tenant of the pack (a tenant's own quotas override them
    /// field by field; the server's defaults fill what neither sets).
    /// Left out of the pack's JSON when it sets none, so the policy hash of a
    /// pack without quotas is what it was before they existed.
    #[serde(
        default,
        skip_serializing_if = "bulkhead_api::quotas::Quotas::is_unset"
    )]
    pub quotas: bulkhead_api::quotas::Quotas,
    /// The content parts besides text the pack's tenants may send (`[content]
    /// allow = ["image_url", …]`); none by default. Left out of the pack's JSON
    /// when unset, like `quotas`, so the policy hash of a pack without it is what
    /// it was before it existed.
    #[serde(
        default,
        skip_serializing_if = "bulkhead_gateway::content::ContentPolicy::is_unset"
    )]
    pub content: bulkhead_gateway::content::ContentPolicy,
}

#[derive(Debug, thiserror::Error)]
pub enum PackError {
    #[error("policy pack {file}: {message}")]
    Invalid { file: String, message: String },
    #[error("policy pack folder {dir}: {message}")]
    Folder { dir: String, message: String },
}

fn parse(file: &str, text: &str) -> Result<Pack, PackError> {
    let invalid = |message: String| PackError::Invalid {
        file: file.to_owned(),
        message,
    };
    let pack: Pack = toml::from_str(text).map_err(|e| invalid(e.message().to_owned()))?;
    bulkhead_types::PolicyName::parse(&pack.name).map_err(|e| {
        invalid(format!(
            "name {:?}: {} (lowercase letters, digits, - _ .)",
            pack.name, e.problem
        ))
    })?;
    pack.guard
        .validate()
        .map_err(|e| invalid(format!("guard: {e}")))?;
    let r = &pack.retention;
    for (field, value) in [
        ("document_ttl_secs_default", r.document_ttl_secs_default),
        ("document_ttl_secs_max", r.document_ttl_secs_max),
        ("session_ttl_secs", r.session_ttl_secs),
        ("trace_ttl_secs", r.trace_ttl_secs),
        ("prompt_window_secs", r.prompt_window_secs),
    ] {
        if value == Some(0) {
            return Err(invalid(format!("retention.{field} must be at least 1")));
        }
    }
    if let (Some(d), Some(m)) = (r.document_ttl_secs_default, r.document_ttl_secs_max)
        && d > m
    {
        return Err(invalid(
            "retention.document_ttl_secs_default exceeds document_ttl_secs_max".into(),
        ));
    }
    pack.quotas
        .validate()
        .map_err(|e| invalid(format!("quotas.{e}")))?;
    for p in &pack.residency.regions {
        let bare = p.strip_suffix('*').unwrap_or(p);
        if p.is_empty() || bare.contains('*') {
            return Err(invalid(format!(
                "residency.regions: {p:?} must be a region or a prefix ending in *"
            )));
        }
    }
    Ok(pack)
}

/// Every pack the server knows, by name.
#[derive(Debug, Clone)]
pub struct Packs {
    by_name: BTreeMap<String, Arc<Pack>>,
}

impl Packs {
    /// Every pack with its guard policy changed by `f` (the test-only weakening).
    #[cfg(feature = "weakened-isolation-for-tests")]
    #[doc(hidden)]
    pub fn map_guard(mut self, f: impl Fn(&mut Policy)) -> Self {
        for pack in self.by_name.values_mut() {
            f(&mut Arc::make_mut(pack).guard);
        }
        self
    }

    /// The built-in packs.
    pub fn builtin() -> Self {
        let mut by_name = BTreeMap::new();
        for (file, text) in BUILTIN {
            // Tested in this module: a built-in pack that does not parse fails the
            // build's tests, never a start.
            let pack = parse(file, text).expect("built-in packs are valid");
            by_name.insert(pack.name.clone(), Arc::new(pack));
        }
        Self { by_name }
    }

    /// The built-in packs plus every `*.toml` in `dir`. A pack may not reuse a
    /// built-in name: `gdpr` means the same thing on every Bulkhead.
    pub fn with_folder(dir: &Path) -> Result<Self, PackError> {
        let folder = |message: String| PackError::Folder {
            dir: dir.display().to_string(),
            message,
        };
        let mut packs = Self::builtin();
        let mut entries: Vec<_> = std::fs::read_dir(dir)
            .map_err(|e| folder(e.to_string()))?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "toml"))
            .collect();
        entries.sort();
        for path in entries {
            let file = path.display().to_string();
            let text = std::fs::read_to_string(&path).map_err(|e| PackError::Invalid {
                file: file.clone(),
                message: e.to_string(),
            })?;
            let pack = parse(&file, &text)?;
            if packs.by_name.contains_key(&pack.name) {
                return Err(PackError::Invalid {
                    file,
                    message: format!(
                        "a pack named {:?} exists already (built-in names cannot be redefined; choose e.g. {:?})",
                        pack.name,
                        format!("{}-custom", pack.name)
                    ),
                });
            }
            packs.by_name.insert(pack.name.clone(), Arc::new(pack));
        }
        Ok(packs)
    }

    pub fn get(&self, name: &str) -> Option<&Arc<Pack>> {
        self.by_name.get(name)
    }

    /// The pack of a tenant. A tenant whose pack was removed from the folder
    /// since falls back to `default`, loudly: its data stays reachable.
    pub fn for_tenant(&self, name: &bulkhead_types::PolicyName) -> Arc<Pack> {
        match self.by_name.get(name.as_str()) {
            Some(p) => Arc::clone(p),
            None => {
                tracing::warn!(pack = %name, "a tenant names a policy pack this server does not have; applying `default`. Restore the pack file.");
                Arc::clone(&self.by_name["default"])
            }
        }
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.by_name.keys().map(String::as_str)
    }

    pub fn all(&self) -> impl Iterator<Item = &Arc<Pack>> {
        self.by_name.values()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_packs_parse_and_differ_where_it_matters() {
        let packs = Packs::builtin();
        let names: Vec<&str> = packs.names().collect();
        assert_eq!(names, ["default", "gdpr", "hipaa", "pci-dss", "soc2"]);
        assert_eq!(packs.get("default").unwrap().guard, Policy::default());
        let pci = packs.get("pci-dss").unwrap();
        assert_eq!(pci.guard.actions.card, bulkhead_guard::Action::Block);
        assert_eq!(pci.retention.audit_retention_days_min, 365);
        assert_eq!(
            packs
                .get("hipaa")
                .unwrap()
                .retention
                .audit_retention_days_min,
            6 * 365
        );
        let gdpr = packs.get("gdpr").unwrap();
        assert!(gdpr.residency.allows(&Region::parse("eu-west").unwrap()));
        assert!(!gdpr.residency.allows(&Region::parse("us-east").unwrap()));
        assert!(!gdpr.residency.allows(&Region::default()));
    }

    #[test]
    fn operator_packs_are_validated_with_the_file_and_field_named() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, text: &str| std::fs::write(dir.path().join(name), text).unwrap();
        write(
            "acme.toml",
            "name = \"acme-strict\"\ndescription = \"x\"\n[retention]\naudit_retention_days_min = 400\n[guard.actions]\nemail = \"block\"\n",
        );
        write(
            "metered.toml",
            "name = \"metered\"\ndescription = \"x\"\n[retention]\naudit_retention_days_min = 1\n[quotas]\nrequests_per_second = 50\ntokens_per_day = 1000000\n",
        );
        let packs = Packs::with_folder(dir.path()).unwrap();
        assert_eq!(
            packs.get("acme-strict").unwrap().guard.actions.email,
            bulkhead_guard::Action::Block
        );
        let metered = packs.get("metered").unwrap().quotas;
        assert_eq!(metered.requests_per_second, Some(50));
        assert_eq!(metered.tokens_per_day, Some(1_000_000));
        assert!(packs.get("acme-strict").unwrap().quotas.is_unset());
        std::fs::remove_file(dir.path().join("metered.toml")).unwrap();
        write(
            "vision.toml",
            "name = \"vision\"\ndescription = \"x\"\n[retention]\naudit_retention_days_min = 1\n[content]\nallow = [\"image_url\", \"file\"]\n",
        );
        let packs = Packs::with_folder(dir.path()).unwrap();
        let vision = &packs.get("vision").unwrap().content;
        use bulkhead_gateway::content::PartType;
        assert!(vision.allows(PartType::ImageUrl) && vision.allows(PartType::File));
        assert!(!vision.allows(PartType::InputAudio));
        // A pack without the table opens nothing, and its JSON (what the policy
        // hash covers) has no `content` key: hashes of existing packs are unchanged.
        let strict = packs.get("acme-strict").unwrap();
        assert!(strict.content.is_unset());
        let json = serde_json::to_value(&**strict).unwrap();
        assert!(
            json.get("content").is_none() && json.get("quotas").is_none(),
            "{json}"
        );
        let json = serde_json::to_value(&**packs.get("vision").unwrap()).unwrap();
        assert_eq!(
            json["content"],
            serde_json::json!({"allow": ["image_url", "file"]})
        );
        std::fs::remove_file(dir.path().join("vision.toml")).unwrap();
        for (text, needle) in [
            (
                "name = \"gdpr\"\ndescription = \"x\"\n[retention]\naudit_retention_days_min = 1\n",
                "exists already",
            ),
            (
                "name = \"x\"\ndescription = \"x\"\n[retention]\naudit_retention_days_min = 1\n[guard.actions]\nemail = \"shout\"\n",
                "shout",
            ),
            (
                "name = \"x\"\ndescription = \"x\"\n[retention]\naudit_retention_days_min = 1\nsession_ttl_secs = 0\n",
                "session_ttl_secs",
            ),
            (
                "name = \"x\"\ndescription = \"x\"\n[retention]\naudit_retention_days_min = 1\nkeep_forever = true\n",
                "keep_forever",
            ),
            (
                "name = \"x\"\ndescription = \"x\"\n[retention]\naudit_retention_days_min = 1\n[quotas]\ndocuments = 0\n",
                "quotas.documents must be at least 1",
            ),
            (
                "name = \"x\"\ndescription = \"x\"\n[retention]\naudit_retention_days_min = 1\n[quotas]\ntokens_per_hour = 5\n",
                "tokens_per_hour",
            ),
            (
                "name = \"x\"\ndescription = \"x\"\n[retention]\naudit_retention_days_min = 1\n[content]\nallow = [\"video_url\"]\n",
                "video_url",
            ),
            (
                "name = \"x\"\ndescription = \"x\"\n[retention]\naudit_retention_days_min = 1\n[content]\nallow = [\"file\"]\nfetch = true\n",
                "fetch",
            ),
        ] {
            write("bad.toml", text);
            let err = Packs::with_folder(dir.path()).unwrap_err().to_string();
            assert!(err.contains("bad.toml") && err.contains(needle), "{err}");
        }
    }
}
