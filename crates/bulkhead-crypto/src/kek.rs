//! The master key (key-encryption key) and where it comes from.
//!
//! Callers see only `KeyEncryptionKey`: wrap and unwrap a data key with a binding.
//! That is the shape of a KMS (`Encrypt`/`Decrypt` with an encryption context), so a
//! KMS-backed provider can replace `LocalKek` without touching any caller; the master
//! key bytes never need to leave the provider.

use std::io::Write;
use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use zeroize::Zeroizing;

use crate::{CryptoError, SecretKey, Xaes256Gcm};

/// Wraps and unwraps 256-bit data keys. Implementations must bind `aad` so that a
/// wrapped key moved to another tenant or version fails to unwrap.
pub trait KeyEncryptionKey: Send + Sync + std::fmt::Debug + 'static {
    fn wrap(&self, key: &SecretKey, aad: &[u8]) -> Result<Vec<u8>, CryptoError>;
    fn unwrap(&self, wrapped: &[u8], aad: &[u8]) -> Result<SecretKey, CryptoError>;
    /// Where the key comes from, for logs (`env`, `file:/path`, a KMS key ARN).
    fn source(&self) -> &str;
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MasterKeyError {
    #[error(
        "master key must be 32 bytes given as 64 hex digits or standard base64 (generate one with `openssl rand -base64 32`)"
    )]
    Format,
    #[error("master key file {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Crypto(#[from] CryptoError),
}

/// A master key held in this process, read from `BULKHEAD_MASTER_KEY` or a file.
pub struct LocalKek {
    xaes: Xaes256Gcm,
    source: String,
}

impl std::fmt::Debug for LocalKek {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "LocalKek({})", self.source)
    }
}

impl LocalKek {
    pub fn new(key: &SecretKey, source: impl Into<String>) -> Result<Self, CryptoError> {
        Ok(Self {
            xaes: Xaes256Gcm::new(key)?,
            source: source.into(),
        })
    }

    /// Parses 64 hex digits or base64 of 32 bytes; surrounding whitespace is ignored.
    pub fn parse(text: &str, source: impl Into<String>) -> Result<Self, MasterKeyError> {
        let text = text.trim();
        let bytes = Zeroizing::new(
            if text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
                (0..64)
                    .step_by(2)
                    .map(|i| u8::from_str_radix(&text[i..i + 2], 16))
                    .collect::<Result<Vec<u8>, _>>()
                    .map_err(|_| MasterKeyError::Format)?
            } else {
                STANDARD.decode(text).map_err(|_| MasterKeyError::Format)?
            },
        );
        let key = SecretKey::from_slice(&bytes).map_err(|_| MasterKeyError::Format)?;
        Ok(Self::new(&key, source)?)
    }

    /// Reads the key file, or creates it (mode 0600, 32 random bytes in base64) when
    /// absent. Returns whether it was generated, so the caller can warn loudly.
    pub fn load_or_generate(path: &Path) -> Result<(Self, bool), MasterKeyError> {
        let source = format!("file:{}", path.display());
        let io = |source: std::io::Error| MasterKeyError::Io {
            path: path.display().to_string(),
            source,
        };
        match std::fs::read_to_string(path) {
            Ok(text) => {
                let text = Zeroizing::new(text);
                Ok((Self::parse(&text, source)?, false))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key = SecretKey::generate()?;
                let encoded = Zeroizing::new(STANDARD.encode(key.expose()));
                write_secret_file(path, encoded.as_bytes()).map_err(io)?;
                Ok((Self::new(&key, source)?, true))
            }
            Err(e) => Err(io(e)),
        }
    }
}

impl KeyEncryptionKey for LocalKek {
    fn wrap(&self, key: &SecretKey, aad: &[u8]) -> Result<Vec<u8>, CryptoError> {
        self.xaes.seal(aad, key.expose())
    }

    fn unwrap(&self, wrapped: &[u8], aad: &[u8]) -> Result<SecretKey, CryptoError> {
        let plain = self.xaes.open(aad, wrapped)?;
        SecretKey::from_slice(plain.as_slice())
    }

    fn source(&self) -> &str {
        &self.source
    }
}

/// Creates `path` with mode 0600 (failing if it exists, so a race never overwrites a
/// key) and writes `contents` durably.
pub fn write_secret_file(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(contents)?;
    file.write_all(b"\n")?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrap_binds_aad() {
        let kek = LocalKek::new(&SecretKey::generate().unwrap(), "test").unwrap();
        let dek = SecretKey::generate().unwrap();
        let wrapped = kek.wrap(&dek, b"tenant-a/v1").unwrap();
        assert_eq!(
            kek.unwrap(&wrapped, b"tenant-a/v1").unwrap().expose(),
            dek.expose()
        );
        assert!(kek.unwrap(&wrapped, b"tenant-b/v1").is_err());
        assert!(!wrapped.windows(32).any(|w| w == dek.expose()));
    }

    #[test]
    fn parses_hex_and_base64_and_rejects_short() {
        let hex = "00".repeat(32);
        assert!(LocalKek::parse(&hex, "env").is_ok());
        assert!(LocalKek::parse(&STANDARD.encode([7u8; 32]), "env").is_ok());
        assert!(matches!(
            LocalKek::parse("c2hvcnQ=", "env"),
            Err(MasterKeyError::Format)
        ));
        assert!(matches!(
            LocalKek::parse("not base64!", "env"),
            Err(MasterKeyError::Format)
        ));
    }

    #[test]
    fn generated_file_is_private_and_reloads() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("master.key");
        let (first, generated) = LocalKek::load_or_generate(&path).unwrap();
        assert!(generated);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let (second, generated) = LocalKek::load_or_generate(&path).unwrap();
        assert!(!generated);
        let dek = SecretKey::generate().unwrap();
        let wrapped = first.wrap(&dek, b"x").unwrap();
        assert_eq!(
            second.unwrap(&wrapped, b"x").unwrap().expose(),
            dek.expose()
        );
    }
}
