//! IBANs: a known country code, that country's exact length, check digits
//! 02–98, and the ISO 7064 mod-97 check.

/// (country, total length) from the SWIFT IBAN registry.
const LENGTHS: &[(&[u8; 2], usize)] = &[
    (b"AD", 24),
    (b"AE", 23),
    (b"AL", 28),
    (b"AT", 20),
    (b"AZ", 28),
    (b"BA", 20),
    (b"BE", 16),
    (b"BG", 22),
    (b"BH", 22),
    (b"BR", 29),
    (b"BY", 28),
    (b"CH", 21),
    (b"CR", 22),
    (b"CY", 28),
    (b"CZ", 24),
    (b"DE", 22),
    (b"DK", 18),
    (b"DO", 28),
    (b"EE", 20),
    (b"EG", 29),
    (b"ES", 24),
    (b"FI", 18),
    (b"FO", 18),
    (b"FR", 27),
    (b"GB", 22),
    (b"GE", 22),
    (b"GI", 23),
    (b"GL", 18),
    (b"GR", 27),
    (b"GT", 28),
    (b"HR", 21),
    (b"HU", 28),
    (b"IE", 22),
    (b"IL", 23),
    (b"IQ", 23),
    (b"IS", 26),
    (b"IT", 27),
    (b"JO", 30),
    (b"KW", 30),
    (b"KZ", 20),
    (b"LB", 28),
    (b"LC", 32),
    (b"LI", 21),
    (b"LT", 20),
    (b"LU", 20),
    (b"LV", 21),
    (b"MC", 27),
    (b"MD", 24),
    (b"ME", 22),
    (b"MK", 19),
    (b"MR", 27),
    (b"MT", 31),
    (b"MU", 30),
    (b"NL", 18),
    (b"NO", 15),
    (b"PK", 24),
    (b"PL", 28),
    (b"PS", 29),
    (b"PT", 25),
    (b"QA", 29),
    (b"RO", 24),
    (b"RS", 22),
    (b"SA", 24),
    (b"SC", 31),
    (b"SE", 24),
    (b"SI", 19),
    (b"SK", 24),
    (b"SM", 27),
    (b"ST", 25),
    (b"SV", 28),
    (b"TL", 23),
    (b"TN", 24),
    (b"TR", 26),
    (b"UA", 29),
    (b"VA", 22),
    (b"VG", 24),
    (b"XK", 20),
];

pub(crate) fn country_len(cc: &[u8]) -> Option<usize> {
    LENGTHS
        .iter()
        .find(|(c, _)| c.eq_ignore_ascii_case(cc))
        .map(|&(_, n)| n)
}

/// ISO 7064 mod 97-10 over an IBAN's alphanumerics (country and check digits
/// moved to the end, letters as 10–35).
pub(crate) fn mod97(iban: &[u8]) -> u32 {
    let (head, tail) = iban.split_at(4);
    let mut r = 0u32;
    for &b in tail.iter().chain(head) {
        if b.is_ascii_digit() {
            r = (r * 10 + u32::from(b - b'0')) % 97;
        } else {
            let v = u32::from(b.to_ascii_uppercase() - b'A') + 10;
            r = (r * 100 + v) % 97;
        }
    }
    r
}

/// Validates a candidate (`CCdd` then alphanumerics with optional single
/// spaces). A candidate longer than its country's IBAN is cut to that length if
/// the cut falls at a space; returns the byte length of the IBAN within `text`.
pub(crate) fn check(text: &[u8]) -> Option<usize> {
    let want = country_len(&text[..2])?;
    let mut compact = [0u8; 34];
    let mut n = 0;
    let mut end = text.len();
    for (i, &b) in text.iter().enumerate() {
        if b == b' ' {
            continue;
        }
        if n == want {
            // Longer than the country's IBAN: accept only a clean cut at a space,
            // followed by something that is not a digit group (which would make
            // this one long number, not an IBAN and a number).
            let next_group = text[i..].split(|&b| b == b' ').next().unwrap_or_default();
            if text[i - 1] != b' ' || next_group.iter().all(u8::is_ascii_digit) {
                return None;
            }
            end = i - 1;
            break;
        }
        compact[n] = b;
        n += 1;
    }
    if n != want {
        return None;
    }
    let check_digits = u32::from(compact[2] - b'0') * 10 + u32::from(compact[3] - b'0');
    if !(2..=98).contains(&check_digits) {
        return None;
    }
    (mod97(&compact[..n]) == 1).then_some(end)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ibans() {
        for good in [
            "DE89370400440532013000",
            "DE89 3704 0044 0532 0130 00",
            "GB82WEST12345698765432",
            "GB82 WEST 1234 5698 7654 32",
            "FR1420041010050500013M02606",
            "NL91ABNA0417164300",
            "BE68539007547034",
            "de89 3704 0044 0532 0130 00",
        ] {
            assert_eq!(check(good.as_bytes()), Some(good.len()), "{good}");
        }
        assert_eq!(
            check(b"DE89 3704 0044 0532 0130 00 AB"),
            Some("DE89 3704 0044 0532 0130 00".len())
        );
        for bad in [
            "DE89370400440532013001",        // check fails
            "DE8937040044053201300",         // too short
            "DE893704004405320130001",       // too long, no clean cut
            "ZZ89370400440532013000",        // unknown country
            "DE89 3704 0044 0532 0130 00 1", // one digit too long
            "DE89 3704 0044 0532 0130 00 1 and",
            "GB00WEST12345698765432", // check digits 00
        ] {
            assert_eq!(check(bad.as_bytes()), None, "{bad}");
        }
    }
}
