//! `bulkhead_gateway::sse::SseReader` on arbitrary bytes split at arbitrary points:
//! the events must not depend on the chunking, and the reader never holds more
//! than its bound.
//!
//! Input: one byte for the number of cuts (0–15), two bytes per cut (a fraction of
//! the stream), one byte choosing a small event bound, then the stream.

use bulkhead_gateway::sse::{SseError, SseReader};

use crate::{Input, cut_points};

/// Large enough that no fuzz input reaches it: the reference runs.
const UNBOUNDED: usize = 1 << 30;

#[derive(Debug, PartialEq, Eq)]
struct Run {
    events: Vec<String>,
    error: Option<SseError>,
}

fn run_chunks(max: usize, chunks: &[&[u8]]) -> Run {
    let mut reader = SseReader::new(max);
    let mut events = Vec::new();
    for chunk in chunks {
        match reader.push(chunk) {
            Ok(got) => {
                events.extend(got);
                assert!(
                    reader.pending_bytes() <= max,
                    "holds {} bytes over the bound {max}",
                    reader.pending_bytes()
                );
            }
            Err(e) => {
                return Run {
                    events,
                    error: Some(e),
                };
            }
        }
    }
    Run {
        events,
        error: None,
    }
}

pub fn run(data: &[u8]) {
    let mut input = Input::new(data);
    let n_cuts = usize::from(input.byte() % 16);
    let cuts: Vec<u16> = (0..n_cuts).map(|_| input.u16()).collect();
    let small_max = 1 + usize::from(input.byte());
    let stream = input.rest();
    let at = cut_points(stream.len(), &cuts, |_| true);
    let chunks: Vec<&[u8]> = at.windows(2).map(|w| &stream[w[0]..w[1]]).collect();

    let whole = run_chunks(UNBOUNDED, &[stream]);
    let bytes: Vec<&[u8]> = stream.chunks(1).collect();
    let bytewise = run_chunks(UNBOUNDED, &bytes);
    let chunked = run_chunks(UNBOUNDED, &chunks);

    // Pushed a byte at a time, every push completes at most one event, so the
    // events before an error are all the good ones: the reference.
    assert_eq!(chunked.error, bytewise.error, "errors differ by chunking");
    assert_eq!(
        whole.error, bytewise.error,
        "errors differ whole vs bytewise"
    );
    match bytewise.error {
        None => {
            assert_eq!(chunked.events, bytewise.events, "events differ by chunking");
            assert_eq!(
                whole.events, bytewise.events,
                "events differ whole vs bytewise"
            );
        }
        // A push that fails returns no events, even those it completed before the
        // bad one; what came out before it is still in order.
        Some(_) => assert!(
            bytewise.events.starts_with(&chunked.events),
            "events before the error differ by chunking"
        ),
    }
    // Data fields are joined lines: no event carries a line break of its own kind.
    for e in &bytewise.events {
        assert!(!e.contains('\r'), "an event's data holds a CR: {e:?}");
    }

    // With a small bound an event may be refused, depending on how the bytes
    // arrive; but what is accepted is what the unbounded reader reads.
    let bounded = run_chunks(small_max, &chunks);
    assert!(
        bytewise.events.starts_with(&bounded.events),
        "a bounded reader read other events"
    );
    if bounded.error.is_none() {
        assert_eq!(bounded.events, bytewise.events);
    }
}
