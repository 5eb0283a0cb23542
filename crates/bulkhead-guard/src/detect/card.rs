//! Payment card numbers: 13–19 digits, optionally grouped by one separator, that
//! pass the Luhn check and fall in an issuer (IIN) range with a length that issuer
//! uses. The grouping rule keeps ISBNs, order numbers and phone-like runs out.

/// Luhn (mod 10) over ASCII digits.
pub(crate) fn luhn(digits: &[u8]) -> bool {
    let mut sum = 0u32;
    for (i, d) in digits.iter().rev().enumerate() {
        let mut v = u32::from(d - b'0');
        if i % 2 == 1 {
            v *= 2;
            if v > 9 {
                v -= 9;
            }
        }
        sum += v;
    }
    sum.is_multiple_of(10)
}

fn prefix_in(digits: &[u8], len: usize, lo: u32, hi: u32) -> bool {
    if digits.len() < len {
        return false;
    }
    let v = digits[..len]
        .iter()
        .fold(0u32, |acc, d| acc * 10 + u32::from(d - b'0'));
    (lo..=hi).contains(&v)
}

/// Whether the number's prefix belongs to a card network that issues numbers of
/// this length.
pub(crate) fn iin_ok(digits: &[u8]) -> bool {
    let n = digits.len();
    let p = |len, lo, hi| prefix_in(digits, len, lo, hi);
    // Visa
    (p(1, 4, 4) && matches!(n, 13 | 16 | 19))
        // Mastercard, including the 2-series
        || ((p(2, 51, 55) || p(4, 2221, 2720)) && n == 16)
        // American Express
        || ((p(2, 34, 34) || p(2, 37, 37)) && n == 15)
        // Discover
        || ((p(4, 6011, 6011) || p(3, 644, 649) || p(2, 65, 65) || p(6, 622_126, 622_925))
            && (16..=19).contains(&n))
        // Diners Club
        || ((p(3, 300, 305) || p(4, 3095, 3095) || p(2, 36, 36) || p(2, 38, 39))
            && (14..=19).contains(&n))
        // JCB
        || (p(4, 3528, 3589) && (16..=19).contains(&n))
        // UnionPay
        || (p(2, 62, 62) && (16..=19).contains(&n))
        // Mir
        || (p(4, 2200, 2204) && (16..=19).contains(&n))
        // Maestro
        || ((p(4, 5018, 5018)
            || p(4, 5020, 5020)
            || p(4, 5038, 5038)
            || p(4, 5893, 5893)
            || p(4, 6304, 6304)
            || p(4, 6759, 6759)
            || p(4, 6761, 6763))
            && (12..=19).contains(&n))
}

/// Grouping: no separator at all, or one separator character used throughout
/// with the layouts cards are printed in (groups of four with a shorter last
/// group, or 4-6-5 / 4-6-4).
fn grouping_ok(text: &[u8]) -> bool {
    let mut sep = None;
    let mut groups: [usize; 8] = [0; 8];
    let mut g = 0;
    for &b in text {
        if b.is_ascii_digit() {
            groups[g] += 1;
        } else {
            match sep {
                None => sep = Some(b),
                Some(s) if s != b => return false,
                Some(_) => {}
            }
            g += 1;
            if g >= groups.len() {
                return false;
            }
        }
    }
    if sep.is_none() {
        return true;
    }
    let groups = &groups[..=g];
    let fours = groups[..groups.len() - 1].iter().all(|&n| n == 4)
        && (1..=4).contains(&groups[groups.len() - 1]);
    fours || groups == [4, 6, 5] || groups == [4, 6, 4]
}

/// Validates a candidate (digits with optional single separators).
pub(crate) fn check(text: &[u8]) -> bool {
    let Some((digits, n)) = super::digits_of::<19>(text) else {
        return false;
    };
    let digits = &digits[..n];
    if !(12..=19).contains(&n) || !grouping_ok(text) {
        return false;
    }
    // A run of one repeated digit passes Luhn for some lengths but is filler.
    if digits.iter().all(|&d| d == digits[0]) {
        return false;
    }
    luhn(digits) && iin_ok(digits)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn luhn_vectors() {
        assert!(luhn(b"79927398713"));
        assert!(!luhn(b"79927398710"));
        assert!(luhn(b"4111111111111111"));
        assert!(!luhn(b"4111111111111112"));
    }

    #[test]
    fn cards() {
        for good in [
            "4111 1111 1111 1111",
            "4111-1111-1111-1111",
            "4111111111111111",
            "5555555555554444",
            "2223003122003222",
            "378282246310005",
            "3782 822463 10005",
            "6011111111111117",
            "3566002020360505",
            "30569309025904",
            "4222222222222",
        ] {
            assert!(check(good.as_bytes()), "{good}");
        }
        for bad in [
            "4111 1111 1111 1112",  // Luhn
            "1234567812345670",     // passes Luhn, no issuer starts with 1
            "4111 1111-1111 1111",  // mixed separators
            "978-0-306-40615-7",    // ISBN layout
            "0000000000000000",     // filler
            "37828224631000",       // Amex prefix, wrong length
            "41111111111111111111", // too long
        ] {
            assert!(!check(bad.as_bytes()), "{bad}");
        }
    }
}
