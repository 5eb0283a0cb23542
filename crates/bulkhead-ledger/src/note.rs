//! C2SP signed notes with Ed25519 (c2sp.org/signed-note), as Go's
//! `golang.org/x/mod/sumdb/note` writes them.
//!
//! ```text
//! <text, one or more lines, each ending in \n>
//! <blank line>
//! — <key name> <base64(key id ‖ signature)>
//! ```
//!
//! The key id is the first four bytes of SHA-256(key name ‖ "\n" ‖ 0x01 ‖ public
//! key); the verifier key ("vkey") is `name+hex(key id)+base64(0x01 ‖ public key)`;
//! the signing key file holds `PRIVATE+KEY+name+hex(key id)+base64(0x01 ‖ seed)`.

use aws_lc_rs::encoding::AsBigEndian as _;
use aws_lc_rs::signature::{self, Ed25519KeyPair, KeyPair as _, UnparsedPublicKey};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

const ED25519_ALG: u8 = 0x01;
const SIGNATURE_PREFIX: &str = "\u{2014} ";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NoteError {
    #[error("malformed verifier key: {0}")]
    BadVerifierKey(&'static str),
    #[error("malformed signing key: {0}")]
    BadSigningKey(&'static str),
    #[error("malformed note: {0}")]
    Malformed(&'static str),
    #[error("the note carries no signature by key {0}")]
    NoSignatureByKey(String),
    #[error(
        "the signature by key {0} does not verify: the note was altered or signed by another key"
    )]
    BadSignature(String),
    #[error("key name must be non-empty and contain no spaces or '+'")]
    BadKeyName,
}

fn check_name(name: &str) -> Result<(), NoteError> {
    if name.is_empty() || name.contains('+') || name.chars().any(|c| c.is_whitespace()) {
        return Err(NoteError::BadKeyName);
    }
    Ok(())
}

/// The key id of an Ed25519 key under `name`.
pub fn key_id(name: &str, public_key: &[u8]) -> u32 {
    let mut data = Vec::with_capacity(name.len() + 2 + public_key.len());
    data.extend_from_slice(name.as_bytes());
    data.push(b'\n');
    data.push(ED25519_ALG);
    data.extend_from_slice(public_key);
    let digest = crate::sha256(&data);
    u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]])
}

/// Signs notes under one Ed25519 key and name.
pub struct NoteSigner {
    name: String,
    key: Ed25519KeyPair,
    id: u32,
}

impl std::fmt::Debug for NoteSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NoteSigner")
            .field("name", &self.name)
            .field("key_id", &format_args!("{:08x}", self.id))
            .finish_non_exhaustive()
    }
}

impl NoteSigner {
    /// A fresh random key.
    pub fn generate(name: &str) -> Result<Self, NoteError> {
        check_name(name)?;
        let key = Ed25519KeyPair::generate()
            .map_err(|_| NoteError::BadSigningKey("generation failed"))?;
        Ok(Self::with_key(name, key))
    }

    fn with_key(name: &str, key: Ed25519KeyPair) -> Self {
        let id = key_id(name, key.public_key().as_ref());
        Self {
            name: name.to_owned(),
            key,
            id,
        }
    }

    /// Parses `PRIVATE+KEY+name+hexid+base64(0x01 ‖ seed)`.
    pub fn from_skey(skey: &str) -> Result<Self, NoteError> {
        let bad = NoteError::BadSigningKey;
        let rest = skey
            .trim()
            .strip_prefix("PRIVATE+KEY+")
            .ok_or(bad("missing PRIVATE+KEY+ prefix"))?;
        let mut parts = rest.splitn(3, '+');
        let (name, id_hex, key_b64) = match (parts.next(), parts.next(), parts.next()) {
            (Some(n), Some(i), Some(k)) => (n, i, k),
            _ => return Err(bad("expected name+keyid+key")),
        };
        check_name(name)?;
        let raw = STANDARD
            .decode(key_b64)
            .map_err(|_| bad("key is not base64"))?;
        let (alg, seed) = raw.split_first().ok_or(bad("empty key"))?;
        if *alg != ED25519_ALG || seed.len() != 32 {
            return Err(bad("not an Ed25519 seed"));
        }
        let key = Ed25519KeyPair::from_seed_unchecked(seed).map_err(|_| bad("invalid seed"))?;
        let signer = Self::with_key(name, key);
        if u32::from_str_radix(id_hex, 16).ok() != Some(signer.id) || id_hex.len() != 8 {
            return Err(bad("key id does not match the key"));
        }
        Ok(signer)
    }

    /// The signing key in the form `from_skey` reads. Secret: store it 0600.
    pub fn to_skey(&self) -> Result<String, NoteError> {
        let seed = self
            .key
            .seed()
            .map_err(|_| NoteError::BadSigningKey("seed not exportable"))?;
        let mut raw = vec![ED25519_ALG];
        raw.extend_from_slice(
            seed.as_be_bytes()
                .map_err(|_| NoteError::BadSigningKey("seed"))?
                .as_ref(),
        );
        Ok(format!(
            "PRIVATE+KEY+{}+{:08x}+{}",
            self.name,
            self.id,
            STANDARD.encode(&raw)
        ))
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn key_id(&self) -> u32 {
        self.id
    }

    /// The verifier key anyone can check notes with.
    pub fn vkey(&self) -> String {
        let mut raw = vec![ED25519_ALG];
        raw.extend_from_slice(self.key.public_key().as_ref());
        format!("{}+{:08x}+{}", self.name, self.id, STANDARD.encode(&raw))
    }

    /// Signs `text` (non-empty, ending in a newline, no blank line) into a note.
    pub fn sign(&self, text: &str) -> Result<String, NoteError> {
        check_text(text)?;
        let signature = self.key.sign(text.as_bytes());
        let mut blob = self.id.to_be_bytes().to_vec();
        blob.extend_from_slice(signature.as_ref());
        Ok(format!(
            "{text}\n{SIGNATURE_PREFIX}{} {}\n",
            self.name,
            STANDARD.encode(&blob)
        ))
    }
}

fn check_text(text: &str) -> Result<(), NoteError> {
    if text.is_empty() || !text.ends_with('\n') {
        return Err(NoteError::Malformed(
            "text must be non-empty and end with a newline",
        ));
    }
    if text.contains("\n\n") || text.starts_with('\n') {
        return Err(NoteError::Malformed("text must not contain a blank line"));
    }
    if text.chars().any(|c| c.is_control() && c != '\n') {
        return Err(NoteError::Malformed(
            "text must not contain control characters",
        ));
    }
    Ok(())
}

/// Checks notes against one verifier key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoteVerifier {
    name: String,
    id: u32,
    public_key: Vec<u8>,
}

impl NoteVerifier {
    /// Parses a vkey `name+hexid+base64(0x01 ‖ public key)`.
    pub fn from_vkey(vkey: &str) -> Result<Self, NoteError> {
        let bad = NoteError::BadVerifierKey;
        let mut parts = vkey.trim().splitn(3, '+');
        let (name, id_hex, key_b64) = match (parts.next(), parts.next(), parts.next()) {
            (Some(n), Some(i), Some(k)) => (n, i, k),
            _ => return Err(bad("expected name+keyid+key")),
        };
        check_name(name).map_err(|_| bad("bad key name"))?;
        let id = u32::from_str_radix(id_hex, 16)
            .ok()
            .filter(|_| id_hex.len() == 8)
            .ok_or(bad("key id is not 8 hex digits"))?;
        let raw = STANDARD
            .decode(key_b64)
            .map_err(|_| bad("key is not base64"))?;
        let (alg, public_key) = raw.split_first().ok_or(bad("empty key"))?;
        if *alg != ED25519_ALG || public_key.len() != 32 {
            return Err(bad("not an Ed25519 key"));
        }
        if key_id(name, public_key) != id {
            return Err(bad("key id does not match name and key"));
        }
        Ok(Self {
            name: name.to_owned(),
            id,
            public_key: public_key.to_vec(),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn key_id(&self) -> u32 {
        self.id
    }

    /// Verifies `note` and returns its text. Signatures by other keys are ignored;
    /// one valid signature by this key is required.
    pub fn open<'a>(&self, note: &'a str) -> Result<&'a str, NoteError> {
        let split = note
            .rfind("\n\n")
            .ok_or(NoteError::Malformed("no blank line before the signatures"))?;
        let text = &note[..split + 1];
        check_text(text)?;
        let signatures = &note[split + 2..];
        if signatures.is_empty() || !signatures.ends_with('\n') {
            return Err(NoteError::Malformed(
                "signature block must end with a newline",
            ));
        }
        let label = format!("{}+{:08x}", self.name, self.id);
        let mut saw_key = false;
        for line in signatures.lines() {
            let rest = line
                .strip_prefix(SIGNATURE_PREFIX)
                .ok_or(NoteError::Malformed(
                    "a signature line must start with an em dash",
                ))?;
            let (name, sig_b64) = rest.split_once(' ').ok_or(NoteError::Malformed(
                "a signature line needs a name and a signature",
            ))?;
            let blob = STANDARD
                .decode(sig_b64)
                .map_err(|_| NoteError::Malformed("signature is not base64"))?;
            if blob.len() < 5 {
                return Err(NoteError::Malformed("signature is too short"));
            }
            let id = u32::from_be_bytes([blob[0], blob[1], blob[2], blob[3]]);
            if name != self.name || id != self.id {
                continue;
            }
            saw_key = true;
            let key = UnparsedPublicKey::new(&signature::ED25519, &self.public_key);
            if key.verify(text.as_bytes(), &blob[4..]).is_ok() {
                return Ok(text);
            }
        }
        if saw_key {
            Err(NoteError::BadSignature(label))
        } else {
            Err(NoteError::NoSignatureByKey(label))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_open_and_key_round_trip() {
        let signer = NoteSigner::generate("bulkhead.test/audit").unwrap();
        let verifier = NoteVerifier::from_vkey(&signer.vkey()).unwrap();
        let note = signer.sign("hello\nworld\n").unwrap();
        assert_eq!(verifier.open(&note).unwrap(), "hello\nworld\n");
        let again = NoteSigner::from_skey(&signer.to_skey().unwrap()).unwrap();
        assert_eq!(again.vkey(), signer.vkey());
        let other = NoteSigner::generate("bulkhead.test/audit").unwrap();
        let forged = other.sign("hello\nworld\n").unwrap();
        assert!(matches!(
            verifier.open(&forged),
            Err(NoteError::NoSignatureByKey(_))
        ));
        assert!(signer.sign("no newline").is_err());
        assert!(signer.sign("blank\n\nline\n").is_err());
        assert!(NoteSigner::generate("has space").is_err());
    }
}
