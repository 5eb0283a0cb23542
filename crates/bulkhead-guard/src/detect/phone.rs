//! Phone numbers: E.164 (`+` and 8–15 digits, any grouping) and the common
//! national forms — North American `(415) 555-0100` / `415-555-0100` /
//! `415.555.0100`, and trunk-prefix forms such as `020 7946 0958` or
//! `06 12 34 56 78`. A national number must be written with separators: a bare run
//! of ten digits is as likely an order or account number.

/// Digit-group lengths and the separators between digits (excluding `+`), in
/// fixed buffers: the pattern bounds a candidate to 17 digits.
struct Layout {
    lens: [usize; 20],
    groups: usize,
    seps: [u8; 40],
    nseps: usize,
}

fn layout(text: &[u8]) -> Layout {
    let mut l = Layout {
        lens: [0; 20],
        groups: 0,
        seps: [0; 40],
        nseps: 0,
    };
    let mut cur = 0;
    for &b in text {
        if b.is_ascii_digit() {
            cur += 1;
        } else {
            if cur > 0 && l.groups < l.lens.len() {
                l.lens[l.groups] = cur;
                l.groups += 1;
                cur = 0;
            }
            if b != b'+' && l.nseps < l.seps.len() {
                l.seps[l.nseps] = b;
                l.nseps += 1;
            }
        }
    }
    if cur > 0 && l.groups < l.lens.len() {
        l.lens[l.groups] = cur;
        l.groups += 1;
    }
    l
}

fn nanp(digits: &[u8]) -> bool {
    let d = if digits.len() == 11 && digits[0] == b'1' {
        &digits[1..]
    } else {
        digits
    };
    if d.len() != 10 {
        return false;
    }
    let area_ok = (b'2'..=b'9').contains(&d[0]) && !(d[1] == b'1' && d[2] == b'1');
    let exchange_ok = (b'2'..=b'9').contains(&d[3]) && !(d[4] == b'1' && d[5] == b'1');
    area_ok && exchange_ok
}

pub(crate) fn check(text: &[u8]) -> bool {
    let Some((digits, n)) = super::digits_of::<20>(text) else {
        return false;
    };
    let digits = &digits[..n];
    if n < 2 {
        return false;
    }
    let l = layout(text);
    let lens = &l.lens[..l.groups];
    let seps = &l.seps[..l.nseps];
    let parens = seps.iter().filter(|&&b| b == b'(' || b == b')').count();
    if parens != 0 && parens != 2 {
        return false;
    }
    let mut plain = seps.iter().copied().filter(|&b| b != b'(' && b != b')');
    let first = plain.next();
    let one_sep = plain.all(|b| Some(b) == first);
    if text[0] == b'+' {
        // E.164: country code never starts with 0; 8 to 15 digits in all.
        return (8..=15).contains(&n) && digits[0] != b'0' && (parens > 0 || one_sep);
    }
    if seps.is_empty() {
        return false;
    }
    // `00` is the international prefix in most of the world: `0049 30 …`.
    if digits.starts_with(b"00") && digits[2] != b'0' {
        return (10..=17).contains(&n) && one_sep;
    }
    // North American forms: 3-3-4 (optionally after a 1), or (3) 3-4.
    let nanp_layout = matches!(lens, [3, 3, 4] | [1, 3, 3, 4]);
    if nanp_layout && nanp(digits) && (one_sep || parens == 2) {
        return true;
    }
    // Trunk-prefix national forms: a leading 0, 10 or 11 digits, one separator
    // throughout, at least three groups of two or more digits.
    digits[0] == b'0'
        && digits[1] != b'0'
        && (10..=11).contains(&n)
        && parens == 0
        && one_sep
        && lens.len() >= 3
        && lens.iter().all(|&g| g >= 2)
}

#[cfg(test)]
mod tests {
    #[test]
    fn phones() {
        for good in [
            "+1 415 555 0100",
            "+1 (415) 555-0100",
            "+14155550100",
            "+44 20 7946 0958",
            "+49 30 12345678",
            "(415) 555-0100",
            "415-555-0100",
            "415.555.0100",
            "1-415-555-0100",
            "020 7946 0958",
            "06 12 34 56 78",
            "0161 496 0018",
            "0049 30 12345678",
        ] {
            assert!(super::check(good.as_bytes()), "{good}");
        }
        for bad in [
            "4155550100", // bare national
            "2024-01-15", // date
            "2024-01-15 1030",
            "94105-1234",      // ZIP+4
            "415-555-01",      // short
            "111-555-0100",    // area code starts with 1
            "415 555-0100",    // mixed separators
            "+0 415 555 0100", // country code 0
            "+1 23",           // too short
            "12.34.56.78",     // dotted groups
        ] {
            assert!(!super::check(bad.as_bytes()), "{bad}");
        }
    }
}
