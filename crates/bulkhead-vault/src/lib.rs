//! Tenants, their key hierarchy, API keys and sealed documents.
//!
//! This is the only crate that turns stored rows into plaintext. Every tenant-plane
//! operation takes a `TenantCtx`, which only `Vault::authenticate` can construct from
//! a verified API key: there is no function here in which the tenant is a free
//! parameter of a request (invariant 1). Every record is sealed with XAES-256-GCM
//! under the tenant's data key, with associated data binding tenant id, record
//! kind, record id and key version (invariant 2).
//!
//! Must never: return or log plaintext of another tenant; accept a tenant id from
//! anything but a `TenantCtx` on the tenant plane; write a data key unwrapped.

#![forbid(unsafe_code)]

mod admission;
mod keys;

use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bulkhead_crypto::{
    CryptoError, KeyEncryptionKey, KeyedHasher, SecretKey, Xaes256Gcm, random_array,
};
use bulkhead_store::{ApiKeyRow, DataKeyRow, RecordRow, Store, StoreError, TenantRow};
use bulkhead_types::{
    ApiKeyId, Clock, DocumentId, KeyVersion, PolicyName, RecordKind, Region, TenantId,
    TenantStatus, UnixMillis,
};
use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, Zeroizing};

pub use admission::{Admission, Admitted};
pub use bulkhead_store::{ErasureCounts, StoreCounts, TenantRow as Tenant};
pub use keys::record_aad;
use keys::{KeyCache, dek_aad};

/// What went wrong, in a closed set the HTTP edge maps to statuses.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VaultError {
    #[error("not found")]
    NotFound,
    #[error("already exists")]
    Conflict,
    /// Input the caller can fix; the message is safe to show.
    #[error("{0}")]
    Invalid(String),
    /// A record failed to open: a wrong binding, a foreign row or tampering.
    #[error("a stored record failed its integrity check")]
    Integrity,
    #[error(
        "the master key does not open this data directory's keys; supply the BULKHEAD_MASTER_KEY it was created with"
    )]
    MasterKeyMismatch,
    /// A storage quota would be exceeded; the message names it and is safe to
    /// show.
    #[error("{0}")]
    QuotaExceeded(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("crypto: {0}")]
    Crypto(CryptoError),
}

impl From<CryptoError> for VaultError {
    fn from(e: CryptoError) -> Self {
        match e {
            CryptoError::Open => VaultError::Integrity,
            other => VaultError::Crypto(other),
        }
    }
}

pub type VaultResult<T> = Result<T, VaultError>;

/// Why a presented API key was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    #[error("the credential is not valid")]
    Invalid,
    #[error("the API key has expired")]
    Expired,
    #[error("the API key has been revoked")]
    Revoked,
    #[error(
        "the tenant is quarantined; its data is intact but no request is served until an operator releases it"
    )]
    Quarantined,
    #[error(
        "this key is quarantined; the tenant's data is intact and no request with this key is served until an operator releases it"
    )]
    KeyQuarantined,
    #[error("the credential could not be checked right now")]
    Unavailable,
}

/// A verified tenant: proof that the request carried a valid, unrevoked, unexpired
/// key of an active tenant. Only `Vault::authenticate` makes one.
#[derive(Debug, Clone)]
pub struct TenantCtx {
    tenant: TenantId,
    key_id: ApiKeyId,
}

impl TenantCtx {
    pub fn tenant(&self) -> &TenantId {
        &self.tenant
    }

    pub fn key_id(&self) -> &ApiKeyId {
        &self.key_id
    }
}

/// Limits the vault enforces whatever the caller is.
#[derive(Debug, Clone)]
pub struct VaultLimits {
    pub document_text_bytes_max: usize,
    pub metadata_bytes_max: usize,
    pub tenant_name_len_max: usize,
    pub ttl_secs_max: u64,
    pub page_len_max: u32,
    /// Unwrapped data keys kept in memory at most.
    pub key_cache_len_max: usize,
}

impl Default for VaultLimits {
    fn default() -> Self {
        Self {
            document_text_bytes_max: 1 << 20,
            metadata_bytes_max: 16 << 10,
            tenant_name_len_max: 200,
            ttl_secs_max: 10 * 365 * 24 * 3600,
            page_len_max: 100,
            key_cache_len_max: 10_000,
        }
    }
}

#[derive(Debug, Clone)]
pub struct NewTenant {
    pub name: String,
    pub region: Region,
    pub policy: PolicyName,
    /// The models the tenant may call; `None`: every model of its region.
    pub models: Option<Vec<String>>,
}

/// A record of a tenant-plane kind (sessions, their messages, traces) to seal.
#[derive(Debug)]
pub struct NewSealed {
    pub kind: RecordKind,
    pub record_id: String,
    pub body: Zeroizing<Vec<u8>>,
    pub expires_at: Option<UnixMillis>,
}

/// A row to seal: a `RecordRow` before its key version and ciphertext are known.
struct ToSeal {
    kind: RecordKind,
    record_id: String,
    plain: Zeroizing<Vec<u8>>,
    created_at: UnixMillis,
    expires_at: Option<UnixMillis>,
}

/// Times a write is sealed and tried while the store refuses it as sealed under
/// a retired key version (each retry reads the current version again; more
/// than one retry means rotations finishing back to back).
const STALE_KEY_ATTEMPTS: u32 = 4;

/// A record whose TTL ran out, found by the retention sweeper.
#[derive(Debug)]
pub struct Expired {
    pub tenant: TenantId,
    pub kind: RecordKind,
    pub record_id: String,
    /// A document's text, opened so that the guard can drop its fingerprints;
    /// `None` for other kinds (or a document that no longer opens).
    pub text: Option<Zeroizing<String>>,
}

/// A sealed record as opened; the body is wiped when dropped.
#[derive(Debug)]
pub struct OpenedRecord {
    pub record_id: String,
    pub body: bulkhead_crypto::Plaintext,
    pub created_at: UnixMillis,
    pub expires_at: Option<UnixMillis>,
}

/// An API key as issued: the token is shown once and never stored.
#[derive(Debug)]
pub struct IssuedKey {
    pub key_id: ApiKeyId,
    pub token: Zeroizing<String>,
    pub expires_at: Option<UnixMillis>,
}

#[derive(Debug)]
pub struct NewDocument {
    pub id: Option<DocumentId>,
    pub text: String,
    pub metadata: Option<serde_json::Map<String, serde_json::Value>>,
    pub ttl_secs: Option<u64>,
}

/// A chunk of a new document, as the retrieval layer cut it: its place in the
/// document, its text and, when an embedder is configured, its embedding.
#[derive(Debug)]
pub struct NewChunk {
    pub index: u32,
    pub text: Zeroizing<String>,
    pub embedding: Option<Vec<f32>>,
}

/// A chunk as opened. The text and embedding are wiped when dropped.
#[derive(Debug)]
pub struct Chunk {
    /// `<document id>#<index>`.
    pub chunk_id: String,
    pub document_id: String,
    pub index: u32,
    pub text: Zeroizing<String>,
    pub metadata: serde_json::Map<String, serde_json::Value>,
    pub embedding: Option<Zeroizing<Vec<f32>>>,
    pub expires_at: Option<UnixMillis>,
}

/// The id of chunk `index` of a document. `#` cannot occur in a document id, so a
/// chunk id names exactly one document.
pub fn chunk_id(document: &DocumentId, index: u32) -> String {
    format!("{document}#{index}")
}

#[derive(Serialize, Deserialize)]
struct ChunkBody {
    document_id: String,
    index: u32,
    text: String,
    #[serde(default)]
    metadata: serde_json::Map<String, serde_json::Value>,
    /// Little-endian f32s, base64: a quarter of the size of a JSON number list.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    embedding: Option<String>,
}

/// A document as opened. The text is wiped when dropped.
#[derive(Debug)]
pub struct Document {
    pub id: DocumentId,
    pub text: Zeroizing<String>,
    pub metadata: serde_json::Map<String, serde_json::Value>,
    pub created_at: UnixMillis,
    pub expires_at: Option<UnixMillis>,
}

#[derive(Debug)]
pub struct StoredDocument {
    pub id: DocumentId,
    pub created_at: UnixMillis,
    pub expires_at: Option<UnixMillis>,
}

/// One page of a whole-tenant pass (`documents_page`, `chunks_page`): the items
/// and where the next page starts (`None`: this was the last).
#[derive(Debug)]
pub struct Paged<T> {
    pub items: Vec<T>,
    pub next: Option<i64>,
}

#[derive(Debug)]
pub struct DocumentPage {
    pub documents: Vec<Document>,
    pub next_cursor: Option<String>,
}

/// Proof of a crypto-shred, returned once to the operator and kept (without the
/// tenant's name) as the tombstone of the id.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErasureReceipt {
    pub tenant_id: TenantId,
    pub erased_at: UnixMillis,
    pub data_keys_destroyed: u64,
    pub records_deleted: u64,
    pub api_keys_deleted: u64,
    /// How the erasure works, for the reader of the receipt.
    pub method: String,
}

/// The sealed payload of a document; the id is bound by the associated data.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct DocumentBody {
    text: String,
    #[serde(default)]
    metadata: serde_json::Map<String, serde_json::Value>,
}

const SERVER_SECRET_META: &str = "server_secret.v1";
/// The scope of the operator's tenant-list cursors.
const TENANT_LIST: &[u8] = b"tenants";
const SERVER_SECRET_AAD: &[u8] = b"bulkhead/server-secret/v1";

#[derive(Debug)]
pub struct Vault {
    store: Arc<dyn Store>,
    kek: Arc<dyn KeyEncryptionKey>,
    clock: Arc<dyn Clock>,
    keys: KeyCache,
    api_key_hasher: KeyedHasher,
    /// A server-wide secret (wrapped by the master key in the store) from which
    /// purpose-bound subkeys are derived.
    server_secret: SecretKey,
    /// Seals list cursors: opaque to clients (a global row sequence would tell a
    /// tenant how busy the others are) and bound to the listing they came from.
    cursors: Xaes256Gcm,
    limits: VaultLimits,
    /// The storage quota's gate, once the application sets one.
    admission: std::sync::OnceLock<Arc<dyn Admission>>,
}

impl Vault {
    /// Opens the vault over a store, creating the server secret on first use. Fails
    /// with `MasterKeyMismatch` if the master key is not the one the store was
    /// created with.
    pub async fn open(
        store: Arc<dyn Store>,
        kek: Arc<dyn KeyEncryptionKey>,
        clock: Arc<dyn Clock>,
        limits: VaultLimits,
    ) -> VaultResult<Self> {
        let fresh = SecretKey::generate()?;
        let wrapped_fresh = kek.wrap(&fresh, SERVER_SECRET_AAD)?;
        let wrapped = store
            .get_or_init_meta(SERVER_SECRET_META, wrapped_fresh)
            .await?;
        let server_secret = kek
            .unwrap(&wrapped, SERVER_SECRET_AAD)
            .map_err(|_| VaultError::MasterKeyMismatch)?;
        let api_key_hasher = KeyedHasher::new(&server_secret.derive("bulkhead/api-key-hash/v1"));
        let cursors = Xaes256Gcm::new(&server_secret.derive("bulkhead/list-cursor/v1"))?;
        Ok(Self {
            cursors,
            keys: KeyCache::new(limits.key_cache_len_max),
            store,
            kek,
            clock,
            api_key_hasher,
            server_secret,
            limits,
            admission: std::sync::OnceLock::new(),
        })
    }

    /// Sets the storage quota's gate: from then on every write of rows a quota
    /// counts asks it first, and every deletion tells it. Set once; a second call
    /// is ignored.
    pub fn set_admission(&self, admission: Arc<dyn Admission>) {
        let _ = self.admission.set(admission);
    }

    /// Asks the quota's gate to admit `rows` (free when no gate is set or no row
    /// is counted).
    async fn admit(&self, tenant: &TenantId, rows: &[RecordRow]) -> VaultResult<Admitted> {
        let (bytes, documents) = admission::measure(rows);
        match self.admission.get() {
            Some(gate) if bytes > 0 => gate.admit(tenant, bytes, documents).await,
            _ => Ok(Admitted::free()),
        }
    }

    /// Tells the quota's gate that counted rows of the tenant went away.
    fn released(&self, tenant: &TenantId) {
        if let Some(gate) = self.admission.get() {
            gate.released(tenant);
        }
    }

    /// A list cursor: the position sealed under the cursor key, bound to its
    /// listing (`scope`), so it reveals nothing and works nowhere else.
    fn encode_cursor(&self, scope: &[u8], seq: i64) -> VaultResult<String> {
        let sealed = self.cursors.seal(scope, &seq.to_le_bytes())?;
        Ok(URL_SAFE_NO_PAD.encode(sealed))
    }

    /// The position a cursor of this listing holds (0: the start).
    fn parse_cursor(&self, scope: &[u8], cursor: Option<&str>) -> VaultResult<i64> {
        let Some(cursor) = cursor else { return Ok(0) };
        let bad = || VaultError::Invalid("cursor is not one this server issued".into());
        let sealed = URL_SAFE_NO_PAD.decode(cursor).map_err(|_| bad())?;
        let plain = self.cursors.open(scope, &sealed).map_err(|_| bad())?;
        let bytes: [u8; 8] = plain.as_slice().try_into().map_err(|_| bad())?;
        Some(i64::from_le_bytes(bytes))
            .filter(|n| *n >= 0)
            .ok_or_else(bad)
    }

    pub fn limits(&self) -> &VaultLimits {
        &self.limits
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// Where the master key comes from (`env`, a file, a KMS), for evidence.
    pub fn master_key_source(&self) -> &str {
        self.kek.source()
    }

    /// A subkey of the server secret for one named purpose (later capabilities:
    /// cache salts, fingerprint keys).
    pub fn derive_server_key(&self, purpose: &str) -> SecretKey {
        self.server_secret.derive(purpose)
    }

    pub fn now(&self) -> UnixMillis {
        self.clock.now()
    }

    // ---- operator plane -------------------------------------------------------

    pub async fn create_tenant(&self, new: NewTenant) -> VaultResult<Tenant> {
        let name = new.name.trim();
        if name.is_empty() || name.chars().count() > self.limits.tenant_name_len_max {
            return Err(VaultError::Invalid(format!(
                "name must be 1 to {} characters",
                self.limits.tenant_name_len_max
            )));
        }
        if name.chars().any(char::is_control) {
            return Err(VaultError::Invalid(
                "name must not contain control characters".into(),
            ));
        }
        let id = TenantId::from_random(random_array()?);
        let now = self.clock.now();
        let dek = SecretKey::generate()?;
        let wrapped = self.kek.wrap(&dek, &dek_aad(&id, KeyVersion::FIRST))?;
        let tenant = TenantRow {
            id,
            name: name.to_owned(),
            region: new.region,
            policy: new.policy,
            status: TenantStatus::Active,
            current_key_version: KeyVersion::FIRST,
            created_at: now,
            models: new.models,
        };
        let first_key = DataKeyRow {
            version: KeyVersion::FIRST,
            wrapped,
            created_at: now,
        };
        self.store.create_tenant(tenant.clone(), first_key).await?;
        Ok(tenant)
    }

    pub async fn tenant(&self, id: &TenantId) -> VaultResult<Tenant> {
        self.store.tenant(id).await?.ok_or(VaultError::NotFound)
    }

    /// One page of tenants and the cursor of the next, if any.
    pub async fn list_tenants(
        &self,
        cursor: Option<&str>,
        limit: u32,
    ) -> VaultResult<(Vec<Tenant>, Option<String>)> {
        let limit = limit.clamp(1, self.limits.page_len_max);
        let after = self.parse_cursor(TENANT_LIST, cursor)?;
        let rows = self.store.list_tenants(after, limit + 1).await?;
        let next = match rows.len() > limit as usize {
            true => Some(self.encode_cursor(TENANT_LIST, rows[limit as usize - 1].0)?),
            false => None,
        };
        Ok((
            rows.into_iter()
                .take(limit as usize)
                .map(|(_, t)| t)
                .collect(),
            next,
        ))
    }

    /// Sets the tenant's compliance pack (the caller checked that it exists).
    pub async fn set_tenant_policy(
        &self,
        id: &TenantId,
        policy: &PolicyName,
    ) -> VaultResult<Tenant> {
        if !self.store.set_tenant_policy(id, policy).await? {
            return Err(VaultError::NotFound);
        }
        self.tenant(id).await
    }

    /// Sets or clears the tenant's model allow-list.
    pub async fn set_tenant_models(
        &self,
        id: &TenantId,
        models: Option<Vec<String>>,
    ) -> VaultResult<Tenant> {
        if !self.store.set_tenant_models(id, models).await? {
            return Err(VaultError::NotFound);
        }
        self.tenant(id).await
    }

    pub async fn set_quarantine(&self, id: &TenantId, quarantined: bool) -> VaultResult<Tenant> {
        let status = if quarantined {
            TenantStatus::Quarantined
        } else {
            TenantStatus::Active
        };
        if !self.store.set_tenant_status(id, status).await? {
            return Err(VaultError::NotFound);
        }
        self.tenant(id).await
    }

    /// Adds a new data key version; new records are sealed under it at once. Old
    /// records still open under their version until `reseal` moves them.
    pub async fn rotate_key(&self, id: &TenantId) -> VaultResult<KeyVersion> {
        let tenant = self.tenant(id).await?;
        let version = tenant
            .current_key_version
            .next()
            .ok_or_else(|| VaultError::Invalid("key version space exhausted".into()))?;
        let dek = SecretKey::generate()?;
        let wrapped = self.kek.wrap(&dek, &dek_aad(id, version))?;
        let row = DataKeyRow {
            version,
            wrapped,
            created_at: self.clock.now(),
        };
        if !self.store.add_data_key(id, row).await? {
            return Err(VaultError::NotFound);
        }
        Ok(version)
    }

    /// Re-seals up to `batch` records of the tenant that are under an older key
    /// version; once none remain, destroys the old wrapped keys. Returns how many
    /// records were re-sealed (0 means the tenant is fully rotated).
    pub async fn reseal(&self, id: &TenantId, batch: u32) -> VaultResult<usize> {
        let tenant = self.tenant(id).await?;
        let current = tenant.current_key_version;
        let rows = self
            .store
            .records_sealed_below(id, current, batch.max(1))
            .await?;
        let mut done = 0;
        for stored in &rows {
            let row = &stored.row;
            // The current key gone meanwhile: another rotation moved on (the
            // next pass reads the current version again); the row is left.
            let sealed = match self
                .reseal_one(
                    id,
                    row.kind,
                    &row.record_id,
                    row.key_version,
                    current,
                    &row.sealed,
                )
                .await
            {
                Err(VaultError::NotFound) if self.current_version(id).await? != current => {
                    continue;
                }
                other => other?,
            };
            if self
                .store
                .reseal_record(id, stored.seq, row.key_version, current, sealed)
                .await?
            {
                done += 1;
            }
        }
        // Audit event bodies are sealed under the same keys and move with them.
        let entries = self
            .store
            .audit_entries_sealed_below(id, current, batch.max(1))
            .await?;
        for entry in &entries {
            let (Some(old), Some(sealed)) = (KeyVersion::new(entry.key_version), &entry.sealed)
            else {
                continue;
            };
            let record_id = bulkhead_types::hex_lower(&entry.leaf_hash);
            let resealed = match self
                .reseal_one(
                    id,
                    RecordKind::AUDIT_EVENT,
                    &record_id,
                    old,
                    current,
                    sealed,
                )
                .await
            {
                Err(VaultError::NotFound) if self.current_version(id).await? != current => {
                    continue;
                }
                other => other?,
            };
            if self
                .store
                .reseal_audit_entry(id, entry.index, old, current, resealed)
                .await?
            {
                done += 1;
            }
        }
        if rows.is_empty() && entries.is_empty() {
            let retired = self.store.retire_data_keys(id, current).await?;
            if retired > 0 {
                self.keys.forget_below(id, current);
                tracing::info!(tenant = %id, retired, "old data key versions destroyed after re-sealing");
            }
        }
        Ok(done)
    }

    async fn reseal_one(
        &self,
        id: &TenantId,
        kind: RecordKind,
        record_id: &str,
        old: KeyVersion,
        current: KeyVersion,
        sealed: &[u8],
    ) -> VaultResult<Vec<u8>> {
        let old_key = self.keys.get(&self.store, &*self.kek, id, old).await?;
        let plain = old_key.open(&record_aad(id, kind, record_id, old), sealed)?;
        let new_key = self.keys.get(&self.store, &*self.kek, id, current).await?;
        let new_aad = record_aad(id, kind, record_id, current);
        Ok(new_key.seal(&new_aad, plain.as_slice())?)
    }

    /// Tenants whose re-sealing did not finish (for resuming after a restart).
    pub async fn tenants_needing_reseal(&self, limit: u32) -> VaultResult<Vec<TenantId>> {
        Ok(self.store.tenants_with_old_keys(limit).await?)
    }

    /// Crypto-shreds a tenant: its wrapped data keys are destroyed (after which no
    /// copy of its ciphertext, backups included, can be opened), its rows deleted,
    /// its in-memory keys dropped and wiped.
    pub async fn erase_tenant(&self, id: &TenantId) -> VaultResult<ErasureReceipt> {
        let erased_at = self.clock.now();
        let mut receipt = ErasureReceipt {
            tenant_id: id.clone(),
            erased_at,
            data_keys_destroyed: 0,
            records_deleted: 0,
            api_keys_deleted: 0,
            method: "crypto-shred: every wrapped data key of the tenant was deleted, so its \
                     ciphertext cannot be opened anywhere, backups included; its rows were then deleted"
                .into(),
        };
        let tombstone =
            serde_json::to_vec(&receipt).map_err(|e| VaultError::Invalid(e.to_string()))?;
        let counts = self
            .store
            .erase_tenant(id, erased_at, tombstone)
            .await?
            .ok_or(VaultError::NotFound)?;
        self.keys.forget_tenant(id);
        self.released(id);
        receipt.data_keys_destroyed = counts.data_keys;
        receipt.records_deleted = counts.records;
        receipt.api_keys_deleted = counts.api_keys;
        Ok(receipt)
    }

    /// Drops the tenant's data keys this process holds in memory: after another
    /// replica erased the tenant (that replica's own erasure drops them at once).
    pub fn forget_cached_keys(&self, id: &TenantId) {
        self.keys.forget_tenant(id);
    }

    /// Whether this process holds any data key of the tenant in memory.
    pub fn holds_keys_of(&self, id: &TenantId) -> bool {
        self.keys.holds(id)
    }

    pub async fn issue_api_key(
        &self,
        tenant: &TenantId,
        ttl_secs: Option<u64>,
    ) -> VaultResult<IssuedKey> {
        self.tenant(tenant).await?;
        let now = self.clock.now();
        let expires_at = self
            .check_ttl(ttl_secs)?
            .map(|t| now.saturating_add_secs(t));
        let key_id = ApiKeyId::from_random(random_array()?);
        let secret: Zeroizing<[u8; 32]> = Zeroizing::new(random_array()?);
        let secret_text = Zeroizing::new(URL_SAFE_NO_PAD.encode(secret.as_ref()));
        let row = ApiKeyRow {
            key_id: key_id.clone(),
            tenant_id: tenant.clone(),
            secret_hash: self.api_key_hasher.hash(secret_text.as_bytes()).to_vec(),
            created_at: now,
            expires_at,
            revoked_at: None,
            quarantined_at: None,
        };
        self.store.insert_api_key(row).await?;
        let token = Zeroizing::new(format!("{key_id}.{}", secret_text.as_str()));
        Ok(IssuedKey {
            key_id,
            token,
            expires_at,
        })
    }

    pub async fn revoke_api_key(&self, tenant: &TenantId, key_id: &ApiKeyId) -> VaultResult<()> {
        let now = self.clock.now();
        if self.store.revoke_api_key(tenant, key_id, now).await? {
            Ok(())
        } else {
            Err(VaultError::NotFound)
        }
    }

    /// Quarantines or releases one key of the tenant: while quarantined it is
    /// refused (403) like a revoked key, but an operator can release it.
    pub async fn set_key_quarantine(
        &self,
        tenant: &TenantId,
        key_id: &ApiKeyId,
        quarantined: bool,
    ) -> VaultResult<()> {
        let at = quarantined.then(|| self.clock.now());
        if self
            .store
            .set_api_key_quarantine(tenant, key_id, at)
            .await?
        {
            Ok(())
        } else {
            Err(VaultError::NotFound)
        }
    }

    /// Verifies a presented API key (`bhk_<id>.<secret>`) and returns the tenant it
    /// was issued to. The secret is compared as a keyed hash in constant time; an
    /// unknown key id costs the same hash so timing does not reveal which ids exist.
    pub async fn authenticate(&self, presented: &str) -> Result<TenantCtx, AuthError> {
        self.authenticate_attributed(presented)
            .await
            .map_err(|(e, _)| e)
    }

    /// Like `authenticate`, and on failure also says whose key was presented when
    /// the key id exists, so the denial can go into that tenant's audit log. The
    /// attribution names the key's owner, never the caller's claim.
    pub async fn authenticate_attributed(
        &self,
        presented: &str,
    ) -> Result<TenantCtx, (AuthError, Option<(TenantId, ApiKeyId)>)> {
        let (id_part, secret) = presented
            .split_once('.')
            .ok_or((AuthError::Invalid, None))?;
        let key_id = ApiKeyId::parse(id_part).map_err(|_| (AuthError::Invalid, None))?;
        let row = self
            .store
            .api_key(&key_id)
            .await
            .map_err(|_| (AuthError::Unavailable, None))?;
        let Some(row) = row else {
            let _ = self.api_key_hasher.verify(secret.as_bytes(), &[0u8; 32]);
            return Err((AuthError::Invalid, None));
        };
        let owner = Some((row.tenant_id.clone(), key_id.clone()));
        if !self
            .api_key_hasher
            .verify(secret.as_bytes(), &row.secret_hash)
        {
            return Err((AuthError::Invalid, owner));
        }
        if row.revoked_at.is_some() {
            return Err((AuthError::Revoked, owner));
        }
        if row.expires_at.is_some_and(|t| t <= self.clock.now()) {
            return Err((AuthError::Expired, owner));
        }
        if row.quarantined_at.is_some() {
            return Err((AuthError::KeyQuarantined, owner));
        }
        let tenant = self
            .store
            .tenant(&row.tenant_id)
            .await
            .map_err(|_| (AuthError::Unavailable, owner.clone()))?;
        match tenant {
            None => Err((AuthError::Invalid, None)),
            Some(t) if t.status == TenantStatus::Quarantined => {
                Err((AuthError::Quarantined, owner))
            }
            Some(t) => Ok(TenantCtx {
                tenant: t.id,
                key_id,
            }),
        }
    }

    // ---- tenant plane ---------------------------------------------------------

    pub async fn put_document(
        &self,
        ctx: &TenantCtx,
        new: NewDocument,
    ) -> VaultResult<StoredDocument> {
        self.put_document_chunked(ctx, new, Vec::new()).await
    }

    /// Stores a document and its chunks in one transaction: each chunk is its own
    /// sealed record (`chunk` kind, id `<document id>#<index>`) carrying the
    /// document's metadata and expiry, so a search can open a hit without opening
    /// the whole document, and an index can be rebuilt from chunks alone.
    pub async fn put_document_chunked(
        &self,
        ctx: &TenantCtx,
        new: NewDocument,
        chunks: Vec<NewChunk>,
    ) -> VaultResult<StoredDocument> {
        if new.text.len() > self.limits.document_text_bytes_max {
            return Err(VaultError::Invalid(format!(
                "text must be at most {} bytes",
                self.limits.document_text_bytes_max
            )));
        }
        let expires_at = self.check_ttl(new.ttl_secs)?;
        let id = match new.id {
            Some(id) => id,
            None => DocumentId::generate(random_array()?),
        };
        let mut body = DocumentBody {
            text: new.text,
            metadata: new.metadata.unwrap_or_default(),
        };
        let mut plain =
            serde_json::to_vec(&body).map_err(|e| VaultError::Invalid(e.to_string()))?;
        body.text.zeroize();
        if plain.len() > self.limits.document_text_bytes_max + self.limits.metadata_bytes_max {
            bulkhead_crypto::wipe(&mut plain);
            return Err(VaultError::Invalid(format!(
                "metadata must be at most {} bytes",
                self.limits.metadata_bytes_max
            )));
        }
        let tenant = ctx.tenant();
        let now = self.clock.now();
        let expires_at = expires_at.map(|t| now.saturating_add_secs(t));
        let mut rows = Vec::with_capacity(1 + chunks.len());
        rows.push(ToSeal {
            kind: RecordKind::DOCUMENT,
            record_id: id.as_str().to_owned(),
            plain: Zeroizing::new(plain),
            created_at: now,
            expires_at,
        });
        for chunk in chunks {
            let record_id = chunk_id(&id, chunk.index);
            let body = ChunkBody {
                document_id: id.to_string(),
                index: chunk.index,
                text: chunk.text.to_string(),
                metadata: body.metadata.clone(),
                embedding: chunk.embedding.as_deref().map(encode_embedding),
            };
            let plain =
                serde_json::to_vec(&body).map_err(|e| VaultError::Invalid(e.to_string()))?;
            let mut body = body;
            body.text.zeroize();
            rows.push(ToSeal {
                kind: RecordKind::CHUNK,
                record_id,
                plain: Zeroizing::new(plain),
                created_at: now,
                expires_at,
            });
        }
        self.insert_sealing(tenant, &rows, None).await?;
        Ok(StoredDocument {
            id,
            created_at: now,
            expires_at,
        })
    }

    pub async fn document(&self, ctx: &TenantCtx, id: &DocumentId) -> VaultResult<Document> {
        let now = self.clock.now();
        let stored = self
            .store
            .record(ctx.tenant(), RecordKind::DOCUMENT, id.as_str(), now)
            .await?
            .ok_or(VaultError::NotFound)?;
        self.open_document(ctx.tenant(), stored.row).await
    }

    pub async fn list_documents(
        &self,
        ctx: &TenantCtx,
        cursor: Option<&str>,
        limit: u32,
    ) -> VaultResult<DocumentPage> {
        let limit = limit.clamp(1, self.limits.page_len_max);
        let scope = format!("documents:{}", ctx.tenant());
        let after = self.parse_cursor(scope.as_bytes(), cursor)?;
        let now = self.clock.now();
        let rows = self
            .store
            .list_records(ctx.tenant(), RecordKind::DOCUMENT, after, limit + 1, now)
            .await?;
        let next_cursor = match rows.len() > limit as usize {
            true => Some(self.encode_cursor(scope.as_bytes(), rows[limit as usize - 1].seq)?),
            false => None,
        };
        let mut documents = Vec::with_capacity(rows.len().min(limit as usize));
        for stored in rows.into_iter().take(limit as usize) {
            documents.push(self.open_document(ctx.tenant(), stored.row).await?);
        }
        Ok(DocumentPage {
            documents,
            next_cursor,
        })
    }

    pub async fn delete_document(&self, ctx: &TenantCtx, id: &DocumentId) -> VaultResult<()> {
        let now = self.clock.now();
        if self
            .store
            .delete_record_with_parts(
                ctx.tenant(),
                RecordKind::DOCUMENT,
                id.as_str(),
                RecordKind::CHUNK,
                now,
            )
            .await?
        {
            self.released(ctx.tenant());
            Ok(())
        } else {
            Err(VaultError::NotFound)
        }
    }

    // ---- sealed records of later kinds (sessions, traces) ------------------------
    //
    // The kind is always a constant of the calling module, never a string from a
    // request; the tenant is the credential's.

    /// Seals and stores records all or nothing; `Conflict` if one exists.
    pub async fn put_sealed(&self, ctx: &TenantCtx, records: Vec<NewSealed>) -> VaultResult<()> {
        let rows = to_seal(records, self.clock.now());
        self.insert_sealing(ctx.tenant(), &rows, None).await
    }

    /// `put_sealed` for parts of one of the tenant's records (a session's
    /// messages, `<parent id>#…`): stored only while the parent exists,
    /// checked in the same transaction, else `NotFound` and nothing is stored.
    /// A concurrent `delete_sealed` of the parent deletes them or runs first;
    /// parts never outlive it.
    pub async fn put_sealed_parts(
        &self,
        ctx: &TenantCtx,
        parent_kind: RecordKind,
        parent_id: &str,
        records: Vec<NewSealed>,
    ) -> VaultResult<()> {
        let rows = to_seal(records, self.clock.now());
        self.insert_sealing(ctx.tenant(), &rows, Some((parent_kind, parent_id)))
            .await
    }

    /// Seals rows of the tenant under its current data key version and inserts
    /// them all or nothing; `Conflict` if one exists. A version retired between
    /// reading it and inserting (a rotation finishing on this or another replica)
    /// makes the store refuse the rows (`StaleKey`): they are sealed again under
    /// the version that is current now, and inserted again.
    /// Rows a storage quota counts are admitted first (`Admission`); sealing
    /// again under another version keeps every size, so one admission covers
    /// every attempt. With a `parent` (kind, id), the rows are its parts and are
    /// inserted only while it exists (`NotFound` otherwise).
    async fn insert_sealing(
        &self,
        tenant: &TenantId,
        rows: &[ToSeal],
        parent: Option<(RecordKind, &str)>,
    ) -> VaultResult<()> {
        let mut sealed = self.seal_rows(tenant, rows).await?;
        let admitted = self.admit(tenant, &sealed).await?;
        let mut attempt = 1;
        loop {
            let inserted = match parent {
                None => self.store.insert_records(sealed).await.map(|()| true),
                Some((kind, id)) => {
                    let now = self.clock.now();
                    self.store.insert_parts(kind, id, sealed, now).await
                }
            };
            match inserted {
                Ok(true) => {
                    admitted.commit();
                    return Ok(());
                }
                // Dropping the admission gives its bytes back.
                Ok(false) => return Err(VaultError::NotFound),
                Err(StoreError::Conflict) => return Err(VaultError::Conflict),
                Err(StoreError::StaleKey) if attempt < STALE_KEY_ATTEMPTS => {
                    tracing::debug!(tenant = %tenant, attempt, "data key retired while sealing; sealing again under the current version");
                    attempt += 1;
                    sealed = self.seal_rows(tenant, rows).await?;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// `rows` sealed under the tenant's current data key version.
    async fn seal_rows(&self, tenant: &TenantId, rows: &[ToSeal]) -> VaultResult<Vec<RecordRow>> {
        let (version, key) = self.current_key(tenant).await?;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let aad = record_aad(tenant, row.kind, &row.record_id, version);
            let mut sealed = row.plain.to_vec();
            key.seal_in_place(&aad, &mut sealed)?;
            out.push(RecordRow {
                tenant_id: tenant.clone(),
                kind: row.kind,
                record_id: row.record_id.clone(),
                key_version: version,
                sealed,
                created_at: row.created_at,
                expires_at: row.expires_at,
            });
        }
        Ok(out)
    }

    /// Seals records of the log's tenant for `Audit::record_with`, which commits
    /// them with an audit entry (and seals them again if the store refuses them
    /// as `StaleKey`). For the audit crate only: the tenant here comes from the
    /// log being written, never from a request.
    pub async fn seal_for_log(
        &self,
        tenant: &TenantId,
        records: &[NewSealed],
        created_at: UnixMillis,
    ) -> VaultResult<Vec<RecordRow>> {
        let rows: Vec<ToSeal> = records
            .iter()
            .map(|r| ToSeal {
                kind: r.kind,
                record_id: r.record_id.clone(),
                plain: r.body.clone(),
                created_at,
                expires_at: r.expires_at,
            })
            .collect();
        self.seal_rows(tenant, &rows).await
    }

    /// One record of the kind, opened; `None` if missing or expired.
    pub async fn get_sealed(
        &self,
        ctx: &TenantCtx,
        kind: RecordKind,
        record_id: &str,
    ) -> VaultResult<Option<OpenedRecord>> {
        let now = self.clock.now();
        let Some(stored) = self
            .store
            .record(ctx.tenant(), kind, record_id, now)
            .await?
        else {
            return Ok(None);
        };
        Ok(Some(
            self.open_opened(ctx.tenant(), kind, stored.row).await?,
        ))
    }

    /// The parts of a record (`record_id#…`), opened, in id order, at most `limit`.
    pub async fn sealed_parts(
        &self,
        ctx: &TenantCtx,
        part_kind: RecordKind,
        record_id: &str,
        limit: u32,
    ) -> VaultResult<Vec<OpenedRecord>> {
        let now = self.clock.now();
        let rows = self
            .store
            .record_parts(ctx.tenant(), part_kind, record_id, limit, now)
            .await?;
        let mut out = Vec::with_capacity(rows.len());
        for stored in rows {
            out.push(
                self.open_opened(ctx.tenant(), part_kind, stored.row)
                    .await?,
            );
        }
        Ok(out)
    }

    /// Deletes a record and its parts in one transaction; false if it did not
    /// exist (or had expired).
    pub async fn delete_sealed(
        &self,
        ctx: &TenantCtx,
        kind: RecordKind,
        record_id: &str,
        part_kind: RecordKind,
    ) -> VaultResult<bool> {
        let now = self.clock.now();
        let deleted = self
            .store
            .delete_record_with_parts(ctx.tenant(), kind, record_id, part_kind, now)
            .await?;
        if deleted && (admission::counted(kind) || admission::counted(part_kind)) {
            self.released(ctx.tenant());
        }
        Ok(deleted)
    }

    async fn open_opened(
        &self,
        tenant: &TenantId,
        kind: RecordKind,
        row: RecordRow,
    ) -> VaultResult<OpenedRecord> {
        let (record_id, created_at, expires_at) =
            (row.record_id.clone(), row.created_at, row.expires_at);
        let body = self
            .open_row(tenant, kind, &row.record_id, row.key_version, row.sealed)
            .await?;
        Ok(OpenedRecord {
            record_id,
            body,
            created_at,
            expires_at,
        })
    }

    /// One chunk, if it exists and has not expired.
    pub async fn chunk(&self, ctx: &TenantCtx, chunk_id: &str) -> VaultResult<Option<Chunk>> {
        let now = self.clock.now();
        let stored = self
            .store
            .record(ctx.tenant(), RecordKind::CHUNK, chunk_id, now)
            .await?;
        match stored {
            Some(stored) => Ok(Some(self.open_chunk(ctx.tenant(), stored.row).await?)),
            None => Ok(None),
        }
    }

    async fn open_chunk(&self, tenant: &TenantId, row: RecordRow) -> VaultResult<Chunk> {
        let plain = self
            .open_row(
                tenant,
                RecordKind::CHUNK,
                &row.record_id,
                row.key_version,
                row.sealed,
            )
            .await?;
        let body: ChunkBody =
            serde_json::from_slice(plain.as_slice()).map_err(|_| VaultError::Integrity)?;
        let embedding = match body.embedding {
            Some(ref b64) => Some(Zeroizing::new(decode_embedding(b64)?)),
            None => None,
        };
        Ok(Chunk {
            chunk_id: row.record_id,
            document_id: body.document_id,
            index: body.index,
            text: Zeroizing::new(body.text),
            metadata: body.metadata,
            embedding,
            expires_at: row.expires_at,
        })
    }

    // ---- server-internal: the output guard's state ------------------------------
    //
    // The guard keeps canaries and fingerprints in memory; at start the server
    // rebuilds them from these. The tenant here comes from the tenant list, never
    // from a request.

    /// Stores a canary token of the tenant, sealed. Its record id is a hash prefix,
    /// so the token never appears in the clear.
    pub async fn put_canary(&self, tenant: &TenantId, token: &str) -> VaultResult<()> {
        let digest = bulkhead_crypto::sha256(token.as_bytes());
        let row = ToSeal {
            kind: RecordKind::CANARY,
            record_id: format!("canary-{}", bulkhead_types::hex_lower(&digest[..8])),
            plain: Zeroizing::new(token.as_bytes().to_vec()),
            created_at: self.clock.now(),
            expires_at: None,
        };
        match self
            .insert_sealing(tenant, std::slice::from_ref(&row), None)
            .await
        {
            Ok(()) | Err(VaultError::Conflict) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Replaces one operator setting of the tenant (`name` is a constant of the
    /// calling module), sealed under the tenant's key like its data, so erasure
    /// shreds it too. `None` removes it. `NotFound` for a missing tenant.
    pub async fn set_tenant_setting(
        &self,
        tenant: &TenantId,
        name: &'static str,
        body: Option<&[u8]>,
    ) -> VaultResult<()> {
        // Checks the tenant exists (a missing one is `NotFound`).
        self.current_version(tenant).await?;
        let now = self.clock.now();
        // Delete-then-insert: two operators racing see one of them refused with
        // `Conflict`, never a torn value.
        self.store
            .delete_record(tenant, RecordKind::TENANT_SETTING, name, now)
            .await?;
        let Some(body) = body else { return Ok(()) };
        let row = ToSeal {
            kind: RecordKind::TENANT_SETTING,
            record_id: name.to_owned(),
            plain: Zeroizing::new(body.to_vec()),
            created_at: now,
            expires_at: None,
        };
        self.insert_sealing(tenant, std::slice::from_ref(&row), None)
            .await
    }

    /// One operator setting of the tenant, opened; `None` if never set.
    pub async fn tenant_setting(
        &self,
        tenant: &TenantId,
        name: &'static str,
    ) -> VaultResult<Option<bulkhead_crypto::Plaintext>> {
        let now = self.clock.now();
        let Some(stored) = self
            .store
            .record(tenant, RecordKind::TENANT_SETTING, name, now)
            .await?
        else {
            return Ok(None);
        };
        let row = stored.row;
        let body = self
            .open_row(
                tenant,
                RecordKind::TENANT_SETTING,
                name,
                row.key_version,
                row.sealed,
            )
            .await?;
        Ok(Some(body))
    }

    /// Stores the guard's keyed evidence of one ephemeral text of the tenant,
    /// sealed, until `expires_at`. Storing the same record id again keeps the first.
    pub async fn put_guard_evidence(
        &self,
        tenant: &TenantId,
        record_id: &str,
        body: &[u8],
        expires_at: UnixMillis,
    ) -> VaultResult<()> {
        let row = ToSeal {
            kind: RecordKind::GUARD_EVIDENCE,
            record_id: record_id.to_owned(),
            plain: Zeroizing::new(body.to_vec()),
            created_at: self.clock.now(),
            expires_at: Some(expires_at),
        };
        match self
            .insert_sealing(tenant, std::slice::from_ref(&row), None)
            .await
        {
            Ok(()) | Err(VaultError::Conflict) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// The tenant's unexpired guard evidence records, opened, all at once.
    pub async fn guard_evidence(&self, tenant: &TenantId) -> VaultResult<Vec<Zeroizing<Vec<u8>>>> {
        let (mut out, mut after) = (Vec::new(), 0);
        loop {
            let page = self.guard_evidence_page(tenant, after, 1000).await?;
            out.extend(page.items);
            match page.next {
                Some(next) => after = next,
                None => return Ok(out),
            }
        }
    }

    /// `documents_page` for guard evidence records.
    pub async fn guard_evidence_page(
        &self,
        tenant: &TenantId,
        after: i64,
        limit: u32,
    ) -> VaultResult<Paged<Zeroizing<Vec<u8>>>> {
        let kind = RecordKind::GUARD_EVIDENCE;
        let (rows, next) = self.records_page(tenant, kind, after, limit).await?;
        let mut items = Vec::with_capacity(rows.len());
        for row in rows {
            let plain = self
                .open_row(tenant, kind, &row.record_id, row.key_version, row.sealed)
                .await?;
            items.push(Zeroizing::new(plain.as_slice().to_vec()));
        }
        Ok(Paged { items, next })
    }

    /// The tenant's canary tokens.
    pub async fn canaries(&self, tenant: &TenantId) -> VaultResult<Vec<Zeroizing<String>>> {
        let mut out = Vec::new();
        for row in self.all_records(tenant, RecordKind::CANARY).await? {
            let plain = self
                .open_row(
                    tenant,
                    RecordKind::CANARY,
                    &row.record_id,
                    row.key_version,
                    row.sealed,
                )
                .await?;
            let token = std::str::from_utf8(plain.as_slice()).map_err(|_| VaultError::Integrity)?;
            out.push(Zeroizing::new(token.to_owned()));
        }
        Ok(out)
    }

    /// Every unexpired document of the tenant, opened, all at once: for the
    /// operator's export, whose caller bounds the total. Whole-tenant passes
    /// (the guard's rebuild and sync) page with `documents_page` instead, so
    /// that memory does not grow with what a tenant stores.
    pub async fn documents_of(&self, tenant: &TenantId) -> VaultResult<Vec<Document>> {
        let mut out = Vec::new();
        for row in self.all_records(tenant, RecordKind::DOCUMENT).await? {
            out.push(self.open_document(tenant, row).await?);
        }
        Ok(out)
    }

    /// Up to `limit` of the tenant's unexpired documents after position `after`
    /// (0: from the start), opened, in insertion order; `next` is where the
    /// following page starts, `None` at the end. A server-side pass over a whole
    /// tenant reads this way and holds one page at a time.
    pub async fn documents_page(
        &self,
        tenant: &TenantId,
        after: i64,
        limit: u32,
    ) -> VaultResult<Paged<Document>> {
        let (rows, next) = self
            .records_page(tenant, RecordKind::DOCUMENT, after, limit)
            .await?;
        let mut items = Vec::with_capacity(rows.len());
        for row in rows {
            items.push(self.open_document(tenant, row).await?);
        }
        Ok(Paged { items, next })
    }

    /// `documents_page` for chunks: what an index is built from, page by page.
    pub async fn chunks_page(
        &self,
        ctx: &TenantCtx,
        after: i64,
        limit: u32,
    ) -> VaultResult<Paged<Chunk>> {
        let (rows, next) = self
            .records_page(ctx.tenant(), RecordKind::CHUNK, after, limit)
            .await?;
        let mut items = Vec::with_capacity(rows.len());
        for row in rows {
            items.push(self.open_chunk(ctx.tenant(), row).await?);
        }
        Ok(Paged { items, next })
    }

    async fn records_page(
        &self,
        tenant: &TenantId,
        kind: RecordKind,
        after: i64,
        limit: u32,
    ) -> VaultResult<(Vec<RecordRow>, Option<i64>)> {
        let limit = limit.max(1);
        let rows = self
            .store
            .list_records(tenant, kind, after, limit + 1, self.clock.now())
            .await?;
        let next = match rows.len() > limit as usize {
            true => Some(rows[limit as usize - 1].seq),
            false => None,
        };
        Ok((
            rows.into_iter()
                .take(limit as usize)
                .map(|r| r.row)
                .collect(),
            next,
        ))
    }

    /// Every unexpired record of one kind of the tenant, opened, in insertion
    /// order: the operator's data-subject export (GDPR Art. 15/20). The caller
    /// bounds the total size and logs the export.
    pub async fn export_records(
        &self,
        tenant: &TenantId,
        kind: RecordKind,
    ) -> VaultResult<Vec<OpenedRecord>> {
        let mut out = Vec::new();
        for row in self.all_records(tenant, kind).await? {
            out.push(self.open_opened(tenant, kind, row).await?);
        }
        Ok(out)
    }

    async fn all_records(
        &self,
        tenant: &TenantId,
        kind: RecordKind,
    ) -> VaultResult<Vec<RecordRow>> {
        let now = self.clock.now();
        let mut out = Vec::new();
        let mut after = 0;
        loop {
            let rows = self
                .store
                .list_records(tenant, kind, after, 1000, now)
                .await?;
            let full = rows.len() == 1000;
            if let Some(last) = rows.last() {
                after = last.seq;
            }
            out.extend(rows.into_iter().map(|r| r.row));
            if !full {
                return Ok(out);
            }
        }
    }

    // ---- retention ---------------------------------------------------------------
    //
    // Expired records are already invisible (every read filters on `expires_at`);
    // the sweeper deletes them. It works across tenants, like the guard's rebuild:
    // the tenant here comes from the row, never from a request.

    /// Up to `limit` records whose time has run out, oldest first; documents are
    /// opened for their text.
    pub async fn expired(&self, limit: u32) -> VaultResult<Vec<Expired>> {
        let now = self.clock.now();
        let rows = self.store.expired_records(now, limit).await?;
        let mut out = Vec::with_capacity(rows.len());
        for stored in rows {
            let row = stored.row;
            let (tenant, kind, record_id) =
                (row.tenant_id.clone(), row.kind, row.record_id.clone());
            let text = if kind == RecordKind::DOCUMENT {
                match self.open_document(&tenant, row).await {
                    Ok(doc) => Some(doc.text),
                    Err(e) => {
                        tracing::warn!(tenant = %tenant, record = %record_id, error = %e,
                            "an expired document did not open; it is deleted without dropping its guard fingerprints");
                        None
                    }
                }
            } else {
                None
            };
            out.push(Expired {
                tenant,
                kind,
                record_id,
                text,
            });
        }
        Ok(out)
    }

    /// Deletes the records if (still) expired, in one transaction; returns how many.
    pub async fn delete_expired(&self, items: &[Expired]) -> VaultResult<u64> {
        let keys = items
            .iter()
            .map(|e| (e.tenant.clone(), e.kind, e.record_id.clone()))
            .collect();
        let deleted = self.store.delete_expired(keys, self.clock.now()).await?;
        for item in items.iter().filter(|e| admission::counted(e.kind)) {
            self.released(&item.tenant);
        }
        Ok(deleted)
    }

    // ---- audit event bodies ----------------------------------------------------

    /// Seals the body of an event for the tenant's own audit log under its current
    /// data key. The record id is the hex of the entry's leaf hash, so a body moved to
    /// another entry fails to open; crypto-shredding the tenant makes every body
    /// unreadable while the log's hashes still verify. For the audit crate only: the
    /// tenant here comes from the log being written, never from a request.
    pub async fn seal_audit_event(
        &self,
        tenant: &TenantId,
        leaf_hex: &str,
        body: &[u8],
    ) -> VaultResult<(KeyVersion, Vec<u8>)> {
        let (version, key) = self.current_key(tenant).await?;
        let aad = record_aad(tenant, RecordKind::AUDIT_EVENT, leaf_hex, version);
        Ok((version, key.seal(&aad, body)?))
    }

    pub async fn open_audit_event(
        &self,
        tenant: &TenantId,
        leaf_hex: &str,
        version: KeyVersion,
        sealed: &[u8],
    ) -> VaultResult<bulkhead_crypto::Plaintext> {
        let key = self
            .keys
            .get(&self.store, &*self.kek, tenant, version)
            .await?;
        let aad = record_aad(tenant, RecordKind::AUDIT_EVENT, leaf_hex, version);
        Ok(key.open(&aad, sealed)?)
    }

    pub async fn counts(&self) -> VaultResult<StoreCounts> {
        Ok(self.store.counts().await?)
    }

    /// A TTL must be at least a second and at most `ttl_secs_max`.
    fn check_ttl(&self, ttl_secs: Option<u64>) -> VaultResult<Option<u64>> {
        match ttl_secs {
            Some(0) => Err(VaultError::Invalid("ttl_seconds must be at least 1".into())),
            Some(t) if t > self.limits.ttl_secs_max => Err(VaultError::Invalid(format!(
                "ttl_seconds must be at most {}",
                self.limits.ttl_secs_max
            ))),
            other => Ok(other),
        }
    }

    /// The tenant's current data key version and key. A version retired between
    /// reading it and fetching its key (rotations back to back) is read again.
    async fn current_key(&self, tenant: &TenantId) -> VaultResult<(KeyVersion, Arc<Xaes256Gcm>)> {
        let mut attempt = 1;
        loop {
            let version = self.current_version(tenant).await?;
            match self
                .keys
                .get(&self.store, &*self.kek, tenant, version)
                .await
            {
                Ok(key) => return Ok((version, key)),
                Err(VaultError::NotFound)
                    if attempt < STALE_KEY_ATTEMPTS
                        && self.current_version(tenant).await? != version =>
                {
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }

    async fn current_version(&self, tenant: &TenantId) -> VaultResult<KeyVersion> {
        // The tenant row is read per write so that a rotation done by another
        // replica takes effect at once.
        Ok(self.tenant(tenant).await?.current_key_version)
    }

    /// Opens one sealed row of the tenant under the binding of its kind, id and key
    /// version; a row moved, altered or corrupted fails here, loudly.
    async fn open_row(
        &self,
        tenant: &TenantId,
        kind: RecordKind,
        record_id: &str,
        version: KeyVersion,
        sealed: Vec<u8>,
    ) -> VaultResult<bulkhead_crypto::Plaintext> {
        let key = self
            .keys
            .get(&self.store, &*self.kek, tenant, version)
            .await?;
        let aad = record_aad(tenant, kind, record_id, version);
        Ok(key.open_in_place(&aad, sealed).inspect_err(|_| {
            tracing::error!(tenant = %tenant, kind = kind.as_str(), record = %record_id,
                "a record failed to open under its tenant's key: the row was moved, altered or corrupted");
        })?)
    }

    async fn open_document(&self, tenant: &TenantId, row: RecordRow) -> VaultResult<Document> {
        // Paired with the write path: the row must be the tenant's and of the kind
        // asked for before any key is touched (the AAD check below is the real wall).
        debug_assert_eq!(&row.tenant_id, tenant);
        let plain = self
            .open_row(
                tenant,
                RecordKind::DOCUMENT,
                &row.record_id,
                row.key_version,
                row.sealed,
            )
            .await?;
        let body: DocumentBody =
            serde_json::from_slice(plain.as_slice()).map_err(|_| VaultError::Integrity)?;
        let id = DocumentId::parse(&row.record_id).map_err(|_| VaultError::Integrity)?;
        Ok(Document {
            id,
            text: Zeroizing::new(body.text),
            metadata: body.metadata,
            created_at: row.created_at,
            expires_at: row.expires_at,
        })
    }

    /// Opens a raw record of any kind for this tenant. For tests of the binding and
    /// for later capabilities that add kinds.
    pub async fn open_record(
        &self,
        ctx: &TenantCtx,
        kind: RecordKind,
        row: &RecordRow,
    ) -> VaultResult<bulkhead_crypto::Plaintext> {
        let key = self
            .keys
            .get(&self.store, &*self.kek, ctx.tenant(), row.key_version)
            .await?;
        let aad = record_aad(ctx.tenant(), kind, &row.record_id, row.key_version);
        Ok(key.open(&aad, &row.sealed)?)
    }
}

fn encode_embedding(values: &[f32]) -> String {
    let mut bytes = Vec::with_capacity(values.len() * 4);
    for v in values {
        bytes.extend_from_slice(&v.to_le_bytes());
    }
    let encoded = base64::engine::general_purpose::STANDARD.encode(&bytes);
    bulkhead_crypto::wipe(&mut bytes);
    encoded
}

fn decode_embedding(text: &str) -> VaultResult<Vec<f32>> {
    let mut bytes = base64::engine::general_purpose::STANDARD
        .decode(text)
        .map_err(|_| VaultError::Integrity)?;
    if bytes.len() % 4 != 0 {
        return Err(VaultError::Integrity);
    }
    let values = bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    bulkhead_crypto::wipe(&mut bytes);
    Ok(values)
}

/// New sealed records as rows to seal, created at `now`.
fn to_seal(records: Vec<NewSealed>, now: UnixMillis) -> Vec<ToSeal> {
    records
        .into_iter()
        .map(|r| ToSeal {
            kind: r.kind,
            record_id: r.record_id,
            plain: r.body,
            created_at: now,
            expires_at: r.expires_at,
        })
        .collect()
}
