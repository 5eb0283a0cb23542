//! `bulkhead_index::Chunker` on arbitrary text and sizes: never a panic, and the
//! spans keep what the module promises (in bounds, on char boundaries, covering
//! the text, within `max_chars`, overlapping by at most `overlap_chars`).
//!
//! Input: three bytes for target (1–160), extra (0–79) and overlap percent
//! (0–49), then the text (invalid UTF-8 replaced).

use bulkhead_index::{Chunker, ChunkerConfig};

use crate::Input;

pub fn run(data: &[u8]) {
    let mut input = Input::new(data);
    let target = 1 + usize::from(input.byte() % 160);
    let max = target + usize::from(input.byte() % 80);
    let overlap = target * usize::from(input.byte() % 50) / 100;
    let text = String::from_utf8_lossy(input.rest());
    let config = ChunkerConfig {
        target_chars: target,
        max_chars: max,
        overlap_chars: overlap,
    };
    let Ok(chunker) = Chunker::new(config) else {
        // Only the documented refusal: an overlap of half the target or more.
        assert!(overlap > 0 && overlap * 2 >= target, "{config:?} refused");
        return;
    };
    let spans = chunker.split(&text);
    if text.trim().is_empty() {
        assert!(spans.is_empty(), "white space gave chunks");
        return;
    }
    assert!(!spans.is_empty());
    assert_eq!(spans[0].start, 0);
    assert_eq!(spans.last().map(|s| s.end), Some(text.len()));
    for (i, s) in spans.iter().enumerate() {
        assert_eq!(s.index as usize, i);
        assert!(s.start < s.end && s.end <= text.len(), "{s:?}");
        assert!(
            text.is_char_boundary(s.start) && text.is_char_boundary(s.end),
            "{s:?}"
        );
        let chars = text[s.start..s.end].chars().count();
        assert!(chars <= max, "chunk of {chars} chars, max {max}");
    }
    for w in spans.windows(2) {
        // Contiguous or overlapping, always moving forward: together with the
        // first and last span this covers every byte of the text.
        assert!(
            w[1].start <= w[0].end,
            "gap between {:?} and {:?}",
            w[0],
            w[1]
        );
        assert!(
            w[1].start > w[0].start && w[1].end > w[0].end,
            "{:?} {:?}",
            w[0],
            w[1]
        );
        let shared = text[w[1].start..w[0].end].chars().count();
        assert!(
            shared <= overlap,
            "{shared} chars shared, overlap {overlap}"
        );
    }
    assert_eq!(chunker.split(&text), spans, "not deterministic");
}
