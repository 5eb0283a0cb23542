//! Unwrapped data keys in memory, and the associated data that binds ciphertext.

use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};

use lru::LruCache;

use bulkhead_crypto::{KeyEncryptionKey, Xaes256Gcm};
use bulkhead_store::Store;
use bulkhead_types::{KeyVersion, RecordKind, TenantId};

use crate::{VaultError, VaultResult};

/// The associated data of a record: domain label, then tenant id, kind and record
/// id (each length-prefixed, so no two field lists encode alike), then the key
/// version. Changing any of them makes the record fail to open.
pub fn record_aad(
    tenant: &TenantId,
    kind: RecordKind,
    record_id: &str,
    version: KeyVersion,
) -> Vec<u8> {
    let mut aad = Vec::with_capacity(64 + record_id.len());
    aad.extend_from_slice(b"bulkhead/record/v1");
    for field in [tenant.as_str(), kind.as_str(), record_id] {
        let len = u16::try_from(field.len()).unwrap_or(u16::MAX);
        aad.extend_from_slice(&len.to_be_bytes());
        aad.extend_from_slice(field.as_bytes());
    }
    aad.extend_from_slice(&version.get().to_be_bytes());
    aad
}

/// The associated data of a wrapped data key: a key moved to another tenant or
/// version fails to unwrap.
pub(crate) fn dek_aad(tenant: &TenantId, version: KeyVersion) -> Vec<u8> {
    let mut aad = Vec::with_capacity(48);
    aad.extend_from_slice(b"bulkhead/dek/v1");
    aad.extend_from_slice(&(tenant.as_str().len() as u16).to_be_bytes());
    aad.extend_from_slice(tenant.as_str().as_bytes());
    aad.extend_from_slice(&version.get().to_be_bytes());
    aad
}

/// Unwrapped data keys, least recently used first out, bounded in count. Keys are
/// wiped when the last user drops them (`Xaes256Gcm` holds its secrets in
/// zeroizing buffers, aws-lc cleanses its key schedules on free).
#[derive(Debug)]
pub(crate) struct KeyCache {
    keys: Mutex<LruCache<(TenantId, KeyVersion), Arc<Xaes256Gcm>>>,
}

impl KeyCache {
    pub(crate) fn new(len_max: usize) -> Self {
        let len_max = NonZeroUsize::new(len_max.max(1)).expect("at least 1");
        Self {
            keys: Mutex::new(LruCache::new(len_max)),
        }
    }

    fn lookup(&self, tenant: &TenantId, version: KeyVersion) -> Option<Arc<Xaes256Gcm>> {
        let mut keys = self.keys.lock().unwrap_or_else(|p| p.into_inner());
        keys.get(&(tenant.clone(), version)).cloned()
    }

    pub(crate) async fn get(
        &self,
        store: &Arc<dyn Store>,
        kek: &dyn KeyEncryptionKey,
        tenant: &TenantId,
        version: KeyVersion,
    ) -> VaultResult<Arc<Xaes256Gcm>> {
        if let Some(key) = self.lookup(tenant, version) {
            return Ok(key);
        }
        let rows = store.data_keys(tenant).await?;
        let row = rows
            .into_iter()
            .find(|r| r.version == version)
            .ok_or(VaultError::NotFound)?;
        let dek = kek
            .unwrap(&row.wrapped, &dek_aad(tenant, version))
            .map_err(|_| VaultError::Integrity)?;
        let key = Arc::new(Xaes256Gcm::new(&dek)?);
        let mut keys = self.keys.lock().unwrap_or_else(|p| p.into_inner());
        keys.put((tenant.clone(), version), Arc::clone(&key));
        Ok(key)
    }

    pub(crate) fn forget_tenant(&self, tenant: &TenantId) {
        self.forget(|t, _| t == tenant);
    }

    pub(crate) fn holds(&self, tenant: &TenantId) -> bool {
        let keys = self.keys.lock().unwrap_or_else(|p| p.into_inner());
        keys.iter().any(|((t, _), _)| t == tenant)
    }

    pub(crate) fn forget_below(&self, tenant: &TenantId, below: KeyVersion) {
        self.forget(|t, v| t == tenant && v < below);
    }

    fn forget(&self, doomed: impl Fn(&TenantId, KeyVersion) -> bool) {
        let mut keys = self.keys.lock().unwrap_or_else(|p| p.into_inner());
        let gone: Vec<(TenantId, KeyVersion)> = keys
            .iter()
            .filter(|((t, v), _)| doomed(t, *v))
            .map(|(k, _)| k.clone())
            .collect();
        for key in gone {
            keys.pop(&key);
        }
    }
}
