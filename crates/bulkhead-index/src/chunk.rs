//! Splitting a document into chunks: paragraph-aware, then sentence-aware, with a
//! bounded overlap between neighbours.
//!
//! A chunk is a byte range of the document (`&text[start..end]`), always on `char`
//! boundaries; sizes are counted in `char`s (Unicode scalar values), not bytes, so
//! the limits mean the same for every script. The output is a pure function of the
//! text and the configuration.
//!
//! How it splits:
//! 1. The text is cut into *units*: sentences (ended by `.`, `!`, `?`, `…`, `。`,
//!    `！`, `？` and any closing quotes or brackets, followed by white space) and
//!    lines. White space after a unit belongs to it, so units tile the text; a
//!    unit followed by a blank line ends a paragraph. Abbreviations ("e.g. ") end a
//!    sentence too: a heuristic, and harmless because chunks hold many sentences.
//! 2. A unit longer than `max_chars` is split at the last white space that fits,
//!    or hard-split at `max_chars` when a run has no white space (a URL, a base64
//!    blob, CJK text without punctuation).
//! 3. Units are packed greedily up to `target_chars`; a chunk also closes at a
//!    paragraph end once it holds half the target, so paragraphs stay together.
//! 4. The next chunk starts with the last whole units of the previous one that fit
//!    in `overlap_chars`; when even the last unit is longer, with the last
//!    `overlap_chars` characters moved forward to a word start. A chunk never
//!    exceeds `max_chars`: the overlap is dropped when it would not fit.
//!
//! Must never: return a span that is out of bounds, splits a `char`, or leaves a
//! non-white-space character of the text uncovered.

use serde::{Deserialize, Serialize};

/// Sizes of chunks, in characters. Validated by [`Chunker::new`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChunkerConfig {
    /// Chunks are packed up to this size.
    pub target_chars: usize,
    /// No chunk is longer than this (longer sentences are split).
    pub max_chars: usize,
    /// Neighbouring chunks share at most this many characters.
    pub overlap_chars: usize,
}

impl ChunkerConfig {
    /// The largest `max_chars` accepted: a chunk is one sealed record and one
    /// embedding input, and embedding servers cap inputs far below this.
    pub const MAX_CHARS_LIMIT: usize = 100_000;
}

impl Default for ChunkerConfig {
    /// About 120–200 English words per chunk: small enough for precise retrieval,
    /// large enough to carry context; within the 512-token input of common
    /// embedding models.
    fn default() -> Self {
        Self {
            target_chars: 800,
            max_chars: 1200,
            overlap_chars: 100,
        }
    }
}

/// A configuration that cannot work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ChunkerConfigError {
    #[error("target_chars must be at least 1")]
    TargetZero,
    #[error("max_chars must be at least target_chars")]
    MaxBelowTarget,
    #[error("max_chars must be at most {}", ChunkerConfig::MAX_CHARS_LIMIT)]
    MaxTooLarge,
    #[error("overlap_chars must be less than half of target_chars")]
    OverlapTooLarge,
}

/// One chunk: its position in the document and its byte range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ChunkSpan {
    pub index: u32,
    pub start: usize,
    pub end: usize,
}

/// Splits documents into [`ChunkSpan`]s. Cheap to clone; holds only the sizes.
#[derive(Debug, Clone)]
pub struct Chunker {
    config: ChunkerConfig,
}

#[derive(Debug, Clone, Copy)]
struct Unit {
    start: usize,
    end: usize,
    chars: usize,
    paragraph_end: bool,
}

impl Chunker {
    pub fn new(config: ChunkerConfig) -> Result<Self, ChunkerConfigError> {
        if config.target_chars == 0 {
            return Err(ChunkerConfigError::TargetZero);
        }
        if config.max_chars < config.target_chars {
            return Err(ChunkerConfigError::MaxBelowTarget);
        }
        if config.max_chars > ChunkerConfig::MAX_CHARS_LIMIT {
            return Err(ChunkerConfigError::MaxTooLarge);
        }
        // Below half the target the packing loop always makes progress past the
        // overlap, so the number of chunks stays within about twice text/target.
        if config.overlap_chars > 0 && config.overlap_chars * 2 >= config.target_chars {
            return Err(ChunkerConfigError::OverlapTooLarge);
        }
        Ok(Self { config })
    }

    pub fn config(&self) -> &ChunkerConfig {
        &self.config
    }

    /// The chunks of `text`, in order. A text that is empty or only white space
    /// has none; otherwise the spans cover the whole text, the first starting at 0
    /// and the last ending at `text.len()`.
    pub fn split(&self, text: &str) -> Vec<ChunkSpan> {
        let units = self.units(text);
        let mut spans = Vec::new();
        if units.is_empty() {
            return spans;
        }
        let target = self.config.target_chars;
        let max = self.config.max_chars;
        let mut next = 0usize;
        let mut start = units[0].start;
        while next < units.len() {
            let first = next;
            let mut chars = char_count(&text[start..units[next].start]) + units[next].chars;
            if chars > max {
                // The overlap and the next unit do not fit together: drop the overlap.
                start = units[next].start;
                chars = units[next].chars;
            }
            let mut end = units[next].end;
            next += 1;
            while next < units.len() {
                if units[next - 1].paragraph_end && chars * 2 >= target {
                    break;
                }
                if chars + units[next].chars > target {
                    break;
                }
                chars += units[next].chars;
                end = units[next].end;
                next += 1;
            }
            debug_assert!(chars <= max, "chunk of {chars} chars over max {max}");
            spans.push(ChunkSpan {
                index: spans.len() as u32,
                start,
                end,
            });
            if next < units.len() {
                start = self.overlap_start(text, &units[first..next], start, end);
            }
        }
        spans
    }

    /// Where the chunk after `[start, end)` begins: at most `overlap_chars` before
    /// `end`, never at or before `start`.
    fn overlap_start(&self, text: &str, units: &[Unit], start: usize, end: usize) -> usize {
        let overlap = self.config.overlap_chars;
        if overlap == 0 {
            return end;
        }
        // Whole trailing units first (not the chunk's first unit: that would not
        // move forward).
        let mut chars = 0;
        let mut begin = end;
        for unit in units.iter().skip(1).rev() {
            if chars + unit.chars > overlap {
                break;
            }
            chars += unit.chars;
            begin = unit.start;
        }
        if begin < end {
            return begin;
        }
        // The last unit is longer than the overlap: take the last `overlap` chars,
        // moved forward to the first word start inside them.
        let window = &text[start..end];
        let Some((offset, _)) = window.char_indices().rev().nth(overlap.saturating_sub(1)) else {
            return end;
        };
        let tail = &window[offset..];
        let at_word_start = offset == 0 || window[..offset].ends_with(char::is_whitespace);
        let word_start = if at_word_start {
            offset
        } else {
            tail.char_indices()
                .skip_while(|(_, c)| !c.is_whitespace())
                .find(|(_, c)| !c.is_whitespace())
                .map(|(i, _)| offset + i)
                .unwrap_or(offset)
        };
        let begin = start + word_start;
        if begin > start && begin < end {
            begin
        } else {
            end
        }
    }

    /// Sentences and lines, each with its trailing white space, tiling the text;
    /// none longer than `max_chars`.
    fn units(&self, text: &str) -> Vec<Unit> {
        let chars: Vec<(usize, char)> = text.char_indices().collect();
        let n = chars.len();
        let mut units = Vec::new();
        let mut unit_start = 0usize;
        let mut k = 0usize;
        // Ends a unit at byte `end`, after the white space run that began at char
        // `ws`; returns the char index after it.
        let close = |units: &mut Vec<Unit>, unit_start: &mut usize, ws: usize| -> usize {
            let mut j = ws;
            let mut newlines = 0;
            while j < n && chars[j].1.is_whitespace() {
                if chars[j].1 == '\n' {
                    newlines += 1;
                }
                j += 1;
            }
            let end = if j < n { chars[j].0 } else { text.len() };
            let piece = &text[*unit_start..end];
            // Leading white space joins the next unit instead of making its own.
            if !piece.trim().is_empty() {
                self.push_unit(text, units, *unit_start, end, newlines >= 2);
                *unit_start = end;
            }
            j
        };
        while k < n {
            let c = chars[k].1;
            if is_terminator(c) {
                let mut j = k + 1;
                while j < n && is_closer(chars[j].1) {
                    j += 1;
                }
                if j == n || chars[j].1.is_whitespace() {
                    k = close(&mut units, &mut unit_start, j);
                } else {
                    k = j;
                }
            } else if c == '\n' {
                k = close(&mut units, &mut unit_start, k);
            } else {
                k += 1;
            }
        }
        if unit_start < text.len() {
            if text[unit_start..].trim().is_empty() {
                if let Some(last) = units.last_mut() {
                    last.end = text.len();
                    last.chars += char_count(&text[unit_start..]);
                    last.paragraph_end = true;
                }
            } else {
                self.push_unit(text, &mut units, unit_start, text.len(), true);
            }
        }
        units
    }

    /// Appends `[start, end)` as one unit, or as several when it is too long.
    fn push_unit(
        &self,
        text: &str,
        units: &mut Vec<Unit>,
        mut start: usize,
        end: usize,
        paragraph_end: bool,
    ) {
        let max = self.config.max_chars;
        loop {
            let piece = &text[start..end];
            let chars = char_count(piece);
            if chars <= max {
                units.push(Unit {
                    start,
                    end,
                    chars,
                    paragraph_end,
                });
                return;
            }
            // The byte offset just past `max` chars.
            let limit = piece
                .char_indices()
                .nth(max)
                .map(|(i, _)| i)
                .unwrap_or(piece.len());
            // Cut after the last white space within the limit, if there is one
            // that leaves something before it.
            let cut = piece[..limit]
                .char_indices()
                .rev()
                .find(|&(i, c)| c.is_whitespace() && !piece[..i].trim().is_empty())
                .map(|(i, c)| i + c.len_utf8())
                .unwrap_or(limit);
            units.push(Unit {
                start,
                end: start + cut,
                chars: char_count(&piece[..cut]),
                paragraph_end: false,
            });
            start += cut;
        }
    }
}

fn is_terminator(c: char) -> bool {
    matches!(c, '.' | '!' | '?' | '…' | '。' | '！' | '？')
}

fn is_closer(c: char) -> bool {
    matches!(
        c,
        '"' | '\'' | ')' | ']' | '»' | '”' | '’' | '」' | '』' | '）'
    )
}

fn char_count(s: &str) -> usize {
    s.chars().count()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn chunker(target: usize, max: usize, overlap: usize) -> Chunker {
        Chunker::new(ChunkerConfig {
            target_chars: target,
            max_chars: max,
            overlap_chars: overlap,
        })
        .expect("valid config")
    }

    fn check(c: &Chunker, text: &str, expect: &[&str]) {
        let got: Vec<&str> = c
            .split(text)
            .iter()
            .map(|s| &text[s.start..s.end])
            .collect();
        assert_eq!(got, expect);
    }

    #[test]
    fn config_is_validated() {
        let bad = |t, m, o| {
            Chunker::new(ChunkerConfig {
                target_chars: t,
                max_chars: m,
                overlap_chars: o,
            })
            .unwrap_err()
        };
        assert_eq!(bad(0, 10, 0), ChunkerConfigError::TargetZero);
        assert_eq!(bad(10, 9, 0), ChunkerConfigError::MaxBelowTarget);
        assert_eq!(bad(10, 10, 5), ChunkerConfigError::OverlapTooLarge);
        assert_eq!(bad(10, 200_000, 0), ChunkerConfigError::MaxTooLarge);
        assert!(Chunker::new(ChunkerConfig::default()).is_ok());
    }

    #[test]
    fn empty_and_blank_texts_have_no_chunks() {
        let c = chunker(20, 30, 0);
        check(&c, "", &[]);
        check(&c, " \n\n\t ", &[]);
    }

    #[test]
    fn sentences_are_packed_up_to_the_target() {
        let c = chunker(21, 30, 0);
        check(
            &c,
            "One two. Three four. Five six.",
            &["One two. Three four. ", "Five six."],
        );
        let c = chunker(20, 30, 0);
        check(
            &c,
            "One two. Three four. Five six.",
            &["One two. ", "Three four. ", "Five six."],
        );
    }

    #[test]
    fn paragraphs_close_chunks_once_half_full() {
        let c = chunker(40, 60, 0);
        check(
            &c,
            "First paragraph here.\n\nSecond one. More.",
            &["First paragraph here.\n\n", "Second one. More."],
        );
        // Below half the target a paragraph end does not close the chunk.
        check(
            &c,
            "Short.\n\nNext one here.",
            &["Short.\n\nNext one here."],
        );
    }

    #[test]
    fn overlap_repeats_whole_trailing_sentences() {
        let c = chunker(24, 40, 10);
        check(
            &c,
            "Aa bb. Cc dd. Ee ff. Gg hh. Ii jj.",
            &["Aa bb. Cc dd. Ee ff. ", "Ee ff. Gg hh. Ii jj."],
        );
    }

    #[test]
    fn overlap_inside_a_long_sentence_starts_at_a_word() {
        let c = chunker(20, 30, 6);
        let text = "alpha beta gamma delta epsilon zeta eta theta";
        let spans = c.split(text);
        assert!(spans.len() > 1);
        for w in spans.windows(2) {
            let b = w[1].start;
            assert!(text[..b].ends_with(' '), "overlap starts mid-word at {b}");
            assert!(w[0].end >= b);
        }
    }

    #[test]
    fn unsplittable_runs_are_hard_split_at_max() {
        let c = chunker(4, 5, 0);
        check(&c, "abcdefghijkl", &["abcde", "fghij", "kl"]);
        let c = chunker(3, 3, 0);
        check(&c, "日本語テキスト", &["日本語", "テキス", "ト"]);
    }

    #[test]
    fn leading_and_trailing_white_space_is_covered() {
        let c = chunker(100, 100, 0);
        check(
            &c,
            "\n\n  Hello there.  \n\n",
            &["\n\n  Hello there.  \n\n"],
        );
    }

    #[test]
    fn closing_quotes_stay_with_their_sentence() {
        let c = chunker(12, 20, 0);
        check(
            &c,
            "He said \"no.\" Then left.",
            &["He said \"no.\" ", "Then left."],
        );
    }

    fn arb_text() -> impl Strategy<Value = String> {
        let piece = prop_oneof![
            "[a-z]{1,12}",
            Just(" ".to_owned()),
            Just(". ".to_owned()),
            Just("\n".to_owned()),
            Just("\n\n".to_owned()),
            Just("! ".to_owned()),
            Just("é".to_owned()),
            Just("日本".to_owned()),
            Just("。".to_owned()),
            Just("🦀".to_owned()),
            "[a-z]{30,80}",
        ];
        proptest::collection::vec(piece, 0..80).prop_map(|v| v.concat())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]
        #[test]
        fn spans_are_bounded_cover_and_overlap_little(
            text in arb_text(),
            target in 4usize..120,
            extra in 0usize..60,
            overlap_pct in 0usize..50,
        ) {
            let overlap = target * overlap_pct / 100;
            let c = chunker(target, target + extra, overlap);
            let spans = c.split(&text);
            if text.trim().is_empty() {
                prop_assert!(spans.is_empty());
                return Ok(());
            }
            prop_assert!(!spans.is_empty());
            prop_assert_eq!(spans[0].start, 0);
            prop_assert_eq!(spans.last().map(|s| s.end), Some(text.len()));
            for (i, s) in spans.iter().enumerate() {
                prop_assert_eq!(s.index as usize, i);
                prop_assert!(s.start < s.end && s.end <= text.len());
                prop_assert!(text.is_char_boundary(s.start) && text.is_char_boundary(s.end));
                let chars = text[s.start..s.end].chars().count();
                prop_assert!(chars <= target + extra, "chunk of {} chars", chars);
            }
            for w in spans.windows(2) {
                // Contiguous or overlapping, always moving forward.
                prop_assert!(w[1].start <= w[0].end);
                prop_assert!(w[1].start > w[0].start && w[1].end > w[0].end);
                let shared = text[w[1].start..w[0].end].chars().count();
                prop_assert!(shared <= overlap, "{} chars shared, overlap {}", shared, overlap);
            }
            // Deterministic.
            prop_assert_eq!(c.split(&text), spans);
        }
    }
}
