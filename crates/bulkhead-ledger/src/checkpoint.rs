//! C2SP tlog-checkpoint bodies (c2sp.org/tlog-checkpoint): the text a signed note
//! carries to commit to a log's size and root.
//!
//! ```text
//! <origin>
//! <size, decimal>
//! <root, base64>
//! ```

use crate::note::{NoteError, NoteSigner, NoteVerifier};
use crate::{Hash, b64, hash_from_b64};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// The log's unique name, e.g. `bulkhead.example/tenants/tn_…`.
    pub origin: String,
    pub size: u64,
    pub root: Hash,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CheckpointError {
    #[error(transparent)]
    Note(#[from] NoteError),
    #[error("malformed checkpoint: {0}")]
    Malformed(&'static str),
    #[error("the checkpoint is for log {got:?}, not {want:?}")]
    WrongOrigin { got: String, want: String },
}

impl Checkpoint {
    /// The note text.
    pub fn body(&self) -> String {
        format!("{}\n{}\n{}\n", self.origin, self.size, b64(&self.root))
    }

    /// Parses a note text; extension lines after the root are allowed and ignored.
    pub fn parse_body(text: &str) -> Result<Self, CheckpointError> {
        let bad = CheckpointError::Malformed;
        let mut lines = text.split('\n');
        let origin = lines
            .next()
            .filter(|o| !o.is_empty())
            .ok_or(bad("no origin line"))?;
        let size = lines.next().ok_or(bad("no size line"))?;
        // Decimal without sign or leading zeros, as the spec requires.
        if size.is_empty()
            || !size.bytes().all(|b| b.is_ascii_digit())
            || (size.len() > 1 && size.starts_with('0'))
        {
            return Err(bad("size is not a decimal number"));
        }
        let size: u64 = size.parse().map_err(|_| bad("size is out of range"))?;
        let root = lines
            .next()
            .and_then(hash_from_b64)
            .ok_or(bad("root is not a base64 SHA-256 hash"))?;
        Ok(Self {
            origin: origin.to_owned(),
            size,
            root,
        })
    }

    pub fn sign(&self, signer: &NoteSigner) -> Result<String, CheckpointError> {
        Ok(signer.sign(&self.body())?)
    }

    /// Verifies a signed checkpoint note and parses it.
    pub fn open(note: &str, verifier: &NoteVerifier) -> Result<Self, CheckpointError> {
        let text = verifier.open(note)?;
        Self::parse_body(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_strict_parsing() {
        let signer = NoteSigner::generate("bulkhead.test").unwrap();
        let verifier = NoteVerifier::from_vkey(&signer.vkey()).unwrap();
        let cp = Checkpoint {
            origin: "bulkhead.test/operator".into(),
            size: 42,
            root: crate::leaf_hash(b"x"),
        };
        let note = cp.sign(&signer).unwrap();
        assert_eq!(Checkpoint::open(&note, &verifier).unwrap(), cp);
        for body in ["\n1\nAAAA\n", "o\n01\n", "o\n-1\n", "o\n1\nnotbase64\n"] {
            assert!(Checkpoint::parse_body(body).is_err(), "{body:?}");
        }
    }
}
