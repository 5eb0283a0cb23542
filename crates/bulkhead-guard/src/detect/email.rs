//! Email addresses: a dot-atom local part, `@`, and a domain of at least two
//! labels whose last label (the TLD) is alphabetic. Sentence punctuation caught by
//! the candidate pattern is trimmed.

/// Validates a candidate; returns the trimmed span (relative to `text`).
pub(crate) fn check(text: &[u8]) -> Option<(usize, usize)> {
    let at = text.iter().position(|&b| b == b'@')?;
    let (mut s, mut e) = (0, text.len());
    // Leading punctuation belongs to the sentence, not the address.
    while s < at && !text[s].is_ascii_alphanumeric() {
        s += 1;
    }
    while e > at + 1 && matches!(text[e - 1], b'.' | b'-') {
        e -= 1;
    }
    let local = &text[s..at];
    let domain = &text[at + 1..e];
    if local.is_empty() || local.len() > 64 || local.ends_with(b".") {
        return None;
    }
    if local.windows(2).any(|w| w == b"..") {
        return None;
    }
    let labels: Vec<&[u8]> = domain.split(|&b| b == b'.').collect();
    if labels.len() < 2 || domain.len() > 253 {
        return None;
    }
    for l in &labels {
        if l.is_empty() || l.len() > 63 || l[0] == b'-' || l[l.len() - 1] == b'-' {
            return None;
        }
    }
    let tld = labels[labels.len() - 1];
    let tld_ok = (tld.len() >= 2 && tld.len() <= 24 && tld.iter().all(u8::is_ascii_alphabetic))
        || (tld.len() > 4 && tld[..4].eq_ignore_ascii_case(b"xn--"));
    tld_ok.then_some((s, e))
}

#[cfg(test)]
mod tests {
    use super::check;

    #[test]
    fn emails() {
        assert_eq!(check(b"john.doe@example.com"), Some((0, 20)));
        assert_eq!(check(b"a+tag@mail.example.co.uk"), Some((0, 24)));
        assert_eq!(check(b"x@y.io."), Some((0, 6)));
        assert_eq!(check(b".x@y.io"), Some((1, 7)));
        for bad in [
            &b"user@localhost"[..],
            b"pkg@1.2.3",
            b"a@b.c",
            b"john..doe@example.com",
            b"john.@example.com",
            b"a@-x.com",
            b"@example.com",
        ] {
            assert_eq!(check(bad), None, "{}", String::from_utf8_lossy(bad));
        }
    }
}
