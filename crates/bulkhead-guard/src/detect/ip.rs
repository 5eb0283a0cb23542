//! IP addresses. IPv4: four decimal octets ≤ 255 without leading zeros, not part
//! of a longer dotted run (version numbers like `1.2.3.4.5`). IPv6: whatever the
//! standard library parses, with enough content that `a::b` in code or a clock
//! time is not taken for one.

use std::net::Ipv6Addr;

/// `before` and `after` are the bytes around the candidate (0 at the text's edge).
pub(crate) fn check_v4(text: &[u8], before: [u8; 2], after: [u8; 2]) -> bool {
    if (before[1] == b'.' && before[0].is_ascii_digit())
        || (after[0] == b'.' && after[1].is_ascii_digit())
    {
        return false;
    }
    let mut octets = 0;
    for part in text.split(|&b| b == b'.') {
        if part.is_empty() || part.len() > 3 || (part.len() > 1 && part[0] == b'0') {
            return false;
        }
        let v = part.iter().fold(0u32, |a, d| a * 10 + u32::from(d - b'0'));
        if v > 255 {
            return false;
        }
        octets += 1;
    }
    octets == 4
}

/// `after` are the two bytes after the candidate (0 at the text's edge).
pub(crate) fn check_v6(text: &[u8], after: [u8; 2]) -> bool {
    // A dotted-decimal tail would make this an IPv4-embedded form the pattern
    // does not cover; a following ':' means the run is longer than an address.
    if after[0] == b':' || (after[0] == b'.' && after[1].is_ascii_digit()) {
        return false;
    }
    let Ok(s) = std::str::from_utf8(text) else {
        return false;
    };
    if s.parse::<Ipv6Addr>().is_err() {
        return false;
    }
    let hex_digits = text.iter().filter(|b| b.is_ascii_hexdigit()).count();
    let groups = s.split(':').filter(|g| !g.is_empty()).count();
    let has_digit = text.iter().any(u8::is_ascii_digit);
    hex_digits >= 4 && groups >= 2 && has_digit
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v4() {
        let ok = |t: &str| check_v4(t.as_bytes(), [b' ', b' '], [b' ', b' ']);
        assert!(ok("192.168.1.20"));
        assert!(ok("8.8.8.8"));
        assert!(!ok("256.1.1.1"));
        assert!(!ok("01.2.3.4"));
        assert!(!check_v4(b"1.2.3.4", [b' ', b' '], [b'.', b'5']));
        assert!(!check_v4(b"2.3.4.5", [b'1', b'.'], [b' ', b' ']));
    }

    #[test]
    fn v6() {
        assert!(check_v6(b"2001:db8:85a3::8a2e:370:7334", [b' ', b' ']));
        assert!(check_v6(
            b"2001:0db8:0000:0000:0000:ff00:0042:8329",
            [b' ', b' ']
        ));
        assert!(check_v6(b"fe80::1ff:fe23:4567:890a", [b' ', b' ']));
        assert!(!check_v6(b"10:30:00", [b' ', b' ']));
        assert!(!check_v6(b"a::b", [b' ', b' ']));
        assert!(!check_v6(b"dead::beef", [b' ', b' ']));
        assert!(!check_v6(b"00:1A:2B:3C:4D:5E", [b' ', b' ']));
        assert!(check_v6(b"2001:db8::1:2", [b'.', b' ']));
        assert!(!check_v6(b"::ffff:c000:1", [b'.', b'2']));
    }
}
