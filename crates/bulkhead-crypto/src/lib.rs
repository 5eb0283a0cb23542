//! Sealing, key wrapping and keyed hashing for Bulkhead.
//!
//! This crate turns bytes into ciphertext and back. It knows nothing of tenants,
//! storage or HTTP: callers pass the associated data that binds a ciphertext to its
//! place (the vault builds it from tenant, kind, record id and key version).
//!
//! Construction: XAES-256-GCM (C2SP), a 192-bit random nonce per message. The key
//! for each message is derived from the data key and the first 96 bits of the nonce
//! (a NIST SP 800-108 counter-mode KDF over AES-256 in CMAC form), then AES-256-GCM
//! from aws-lc-rs seals with the last 96 bits. Random 192-bit nonces stay safe far
//! past 2^32 messages under one data key (about 2^80 messages before a collision in
//! the derived-key space is likely), which plain AES-GCM with random 96-bit nonces
//! does not. ARCHITECTURE.md records the measurements behind the choice.
//!
//! Must never: log or format key bytes or plaintext; return plaintext in a buffer
//! that is not zeroized on drop.

#![forbid(unsafe_code)]

mod kek;
mod xaes;

pub use kek::{KeyEncryptionKey, LocalKek, MasterKeyError, write_secret_file};
pub use xaes::{NONCE_LEN, OVERHEAD_BYTES, Plaintext, TAG_LEN, Xaes256Gcm, wipe};

use aws_lc_rs::{constant_time, hmac, rand};
use zeroize::Zeroizing;

/// A sealing or opening failed. Deliberately carries no detail: whether a tag was
/// wrong, the nonce short or the key mismatched is not something to tell a peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CryptoError {
    #[error("ciphertext failed to open (wrong key, wrong binding or tampered)")]
    Open,
    #[error("the system random source failed")]
    Random,
    #[error("key material has the wrong length")]
    KeyLength,
}

/// A 256-bit secret key (a tenant data key, the master key or a server secret).
/// Zeroized on drop; `Debug` prints nothing of it.
pub struct SecretKey(Zeroizing<[u8; 32]>);

impl SecretKey {
    pub const LEN: usize = 32;

    pub fn generate() -> Result<Self, CryptoError> {
        let mut bytes = Zeroizing::new([0u8; 32]);
        rand::fill(bytes.as_mut()).map_err(|_| CryptoError::Random)?;
        Ok(Self(bytes))
    }

    pub fn from_slice(bytes: &[u8]) -> Result<Self, CryptoError> {
        let array: [u8; 32] = bytes.try_into().map_err(|_| CryptoError::KeyLength)?;
        Ok(Self(Zeroizing::new(array)))
    }

    /// The raw bytes, for wrapping only.
    pub fn expose(&self) -> &[u8; 32] {
        &self.0
    }

    /// Derives an independent subkey for one named purpose (HMAC-SHA256 as a PRF,
    /// the label naming the purpose), so one stored secret can serve several uses
    /// without any two sharing a key.
    pub fn derive(&self, purpose: &str) -> SecretKey {
        let key = hmac::Key::new(hmac::HMAC_SHA256, self.0.as_ref());
        let tag = hmac::sign(&key, purpose.as_bytes());
        let mut bytes = Zeroizing::new([0u8; 32]);
        bytes.copy_from_slice(tag.as_ref());
        SecretKey(bytes)
    }
}

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretKey(..)")
    }
}

/// Fills an array from the system CSPRNG.
pub fn random_array<const N: usize>() -> Result<[u8; N], CryptoError> {
    let mut out = [0u8; N];
    rand::fill(&mut out).map_err(|_| CryptoError::Random)?;
    Ok(out)
}

/// A keyed hash (HMAC-SHA256). Used where a value must be findable but not
/// reversible: API key secrets are stored only as this.
pub struct KeyedHasher(hmac::Key);

impl KeyedHasher {
    pub fn new(key: &SecretKey) -> Self {
        Self(hmac::Key::new(hmac::HMAC_SHA256, key.expose()))
    }

    pub fn hash(&self, data: &[u8]) -> [u8; 32] {
        let tag = hmac::sign(&self.0, data);
        let mut out = [0u8; 32];
        out.copy_from_slice(tag.as_ref());
        out
    }

    /// Compares `data`'s hash with `expected` in constant time.
    pub fn verify(&self, data: &[u8], expected: &[u8]) -> bool {
        hmac::verify(&self.0, data, expected).is_ok()
    }
}

impl std::fmt::Debug for KeyedHasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeyedHasher(..)")
    }
}

/// HMAC-SHA256 under a key of any length, for signatures a third party checks
/// with the shared secret as it is (webhook deliveries).
pub fn hmac_sha256(key: &[u8], data: &[u8]) -> [u8; 32] {
    let key = hmac::Key::new(hmac::HMAC_SHA256, key);
    let mut out = [0u8; 32];
    out.copy_from_slice(hmac::sign(&key, data).as_ref());
    out
}

/// Constant-time equality for secrets compared directly (the admin token).
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    constant_time::verify_slices_are_equal(a, b).is_ok()
}

/// SHA-256, for content hashes that go into receipts and logs.
pub fn sha256(data: &[u8]) -> [u8; 32] {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, data);
    let mut out = [0u8; 32];
    out.copy_from_slice(digest.as_ref());
    out
}
