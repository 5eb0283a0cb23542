//! A server-sent events reader for upstream streams: bytes in, `data:` payloads out.
//!
//! Only what OpenAI-compatible servers send is needed: events separated by a blank
//! line, `data:` fields (several are joined with `\n`), comments and other fields
//! ignored. A whole crate would bring a stream abstraction we do not use; this is
//! the part of the WHATWG algorithm that matters here, with a bound on how much an
//! upstream can make us hold.

use thiserror::Error;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum SseError {
    #[error("an event exceeded {0} bytes")]
    EventTooLarge(usize),
    #[error("an event was not UTF-8")]
    NotUtf8,
}

/// Accumulates bytes and yields complete events' data.
#[derive(Debug)]
pub struct SseReader {
    buf: Vec<u8>,
    /// Bytes of `buf` already searched for an event end without finding one.
    scanned: usize,
    event_bytes_max: usize,
}

impl SseReader {
    pub fn new(event_bytes_max: usize) -> Self {
        Self {
            buf: Vec::new(),
            scanned: 0,
            event_bytes_max,
        }
    }

    /// Adds received bytes and returns the data of every event they completed.
    /// Events without a `data:` field are skipped.
    pub fn push(&mut self, bytes: &[u8]) -> Result<Vec<String>, SseError> {
        self.buf.extend_from_slice(bytes);
        let mut out = Vec::new();
        loop {
            let Some((end, sep)) = find_event_end(&self.buf, self.scanned) else {
                // Keep the last 3 bytes unscanned: a separator may straddle pushes.
                self.scanned = self.buf.len().saturating_sub(3);
                if self.buf.len() > self.event_bytes_max {
                    return Err(SseError::EventTooLarge(self.event_bytes_max));
                }
                return Ok(out);
            };
            let event = std::str::from_utf8(&self.buf[..end]).map_err(|_| SseError::NotUtf8)?;
            if let Some(data) = event_data(event) {
                out.push(data);
            }
            self.buf.drain(..end + sep);
            self.scanned = 0;
        }
    }

    /// Bytes held that do not yet form a whole event.
    pub fn pending_bytes(&self) -> usize {
        self.buf.len()
    }
}

/// The end of the first event at or after `from` and the separator's length.
fn find_event_end(buf: &[u8], from: usize) -> Option<(usize, usize)> {
    let mut i = from;
    while i + 1 < buf.len() {
        match (buf[i], buf[i + 1]) {
            (b'\n', b'\n') => return Some((i, 2)),
            (b'\r', b'\r') => return Some((i, 2)),
            (b'\r', b'\n') if buf.get(i + 2..i + 4) == Some(b"\r\n") => return Some((i, 4)),
            (b'\n', b'\r') if buf.get(i + 2) == Some(&b'\n') => return Some((i, 3)),
            _ => i += 1,
        }
    }
    None
}

fn event_data(event: &str) -> Option<String> {
    let mut data: Option<String> = None;
    for line in event.split(['\n', '\r']) {
        let Some(rest) = line.strip_prefix("data") else {
            continue;
        };
        let value = match rest.strip_prefix(':') {
            Some(v) => v.strip_prefix(' ').unwrap_or(v),
            None if rest.is_empty() => "",
            None => continue, // a field named e.g. "database"
        };
        match &mut data {
            Some(d) => {
                d.push('\n');
                d.push_str(value);
            }
            None => data = Some(value.to_owned()),
        }
    }
    data
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(chunks: &[&str], expect: &[&str]) {
        let mut reader = SseReader::new(1 << 20);
        let mut got = Vec::new();
        for c in chunks {
            got.extend(reader.push(c.as_bytes()).unwrap());
        }
        assert_eq!(got, expect);
    }

    #[test]
    fn events_split_anywhere_come_out_whole() {
        let stream = "data: {\"a\":1}\n\ndata: {\"b\":2}\n\n: comment\n\ndata: [DONE]\n\n";
        for cut in 0..stream.len() {
            check(
                &[&stream[..cut], &stream[cut..]],
                &["{\"a\":1}", "{\"b\":2}", "[DONE]"],
            );
        }
    }

    #[test]
    fn crlf_multiline_and_other_fields() {
        check(
            &["event: x\r\ndata: one\r\ndata:two\r\n\r\nid: 3\n\n"],
            &["one\ntwo"],
        );
        check(&["database: no\ndata\n\n"], &[""]);
    }

    #[test]
    fn an_endless_event_is_refused() {
        let mut reader = SseReader::new(64);
        assert_eq!(reader.push(&[b'x'; 100]), Err(SseError::EventTooLarge(64)));
    }
}
