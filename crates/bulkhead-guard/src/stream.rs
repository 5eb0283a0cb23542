//! Streaming scan with a bounded hold-back: text is released only once every
//! detector has decided every byte of it.
//!
//! Hold-back bound. A byte is held while a candidate could still start at or
//! before it and is not yet decided:
//! - candidate patterns match at most `CANDIDATE_BYTES_MAX` (256) bytes and are
//!   decided 8 bytes later: at most 264 bytes;
//! - canaries are at most 64 bytes (72 with the margin);
//! - high-entropy runs are judged in pieces of at most 256 bytes;
//! - winnowing decides a k-gram once the window after it is full: W + K − 2 = 94
//!   normalized bytes, each preceded by at most 32 dropped separator bytes (a
//!   longer run resets the winnower), so at most 3,102 original bytes in the
//!   pathological case and about 110 in prose;
//! - while a JWT or a private-key block is being read, from its head up to its
//!   end (capped at 8 KiB each);
//! - when cross-tenant hits block or redact, from the start of an open cluster of
//!   another tenant's fingerprints until it closes (a cluster spans at most
//!   4 KiB and closes 256 bytes after its last hit).
//!
//! In prose the hold-back is therefore about 264 bytes; the buffer holds that
//! plus 16 bytes of look-behind context plus the last chunk.

use crate::engine::Engine;
use crate::finding::StreamOutput;

/// Scans a response as it is produced. Create one with `Guard::stream`.
#[derive(Debug)]
pub struct StreamScanner {
    engine: Engine,
    /// The stream from `base` to the end received so far.
    buf: String,
    base: usize,
    finished: bool,
}

impl StreamScanner {
    pub(crate) fn new(engine: Engine) -> Self {
        Self {
            engine,
            buf: String::new(),
            base: 0,
            finished: false,
        }
    }

    /// Scans the next chunk; returns the text that may be sent now.
    pub fn push(&mut self, chunk: &str) -> StreamOutput {
        if self.finished {
            return StreamOutput {
                blocked: self.engine.blocked(),
                ..StreamOutput::default()
            };
        }
        self.buf.push_str(chunk);
        self.step(false)
    }

    /// Ends the stream: decides and releases everything still held. Later calls
    /// return nothing.
    pub fn finish(&mut self) -> StreamOutput {
        if self.finished {
            return StreamOutput {
                blocked: self.engine.blocked(),
                ..StreamOutput::default()
            };
        }
        self.finished = true;
        self.step(true)
    }

    /// Bytes received but not yet released (0 once blocked or finished).
    pub fn held_bytes(&self) -> usize {
        if self.engine.blocked() || self.finished {
            return 0;
        }
        self.base + self.buf.len() - self.engine.released()
    }

    /// True from the moment a blocking decision was taken.
    pub fn blocked(&self) -> bool {
        self.engine.blocked()
    }

    /// Total bytes received.
    pub fn received_bytes(&self) -> usize {
        self.base + self.buf.len()
    }

    fn step(&mut self, is_final: bool) -> StreamOutput {
        let frontier = self.base + self.buf.len();
        self.engine.advance(&self.buf, self.base, is_final);
        let upto = self.engine.release_point(frontier, is_final);
        let mut release = String::new();
        self.engine
            .release(&self.buf, self.base, upto, &mut release);
        // Drop what no stage will read again.
        let keep = self.engine.keep_from().min(frontier);
        if keep > self.base {
            let mut cut = keep - self.base;
            while !self.buf.is_char_boundary(cut) {
                cut -= 1;
            }
            self.buf.drain(..cut);
            self.base += cut;
        }
        StreamOutput {
            release,
            findings: self.engine.take_findings(),
            blocked: self.engine.blocked(),
        }
    }
}
