//! US social security numbers in their printed forms (`123-45-6789`,
//! `123 45 6789`) outside the ranges the SSA never issues: area 000, 666 and
//! 900–999, group 00, serial 0000, and the numbers known from advertising.

pub(crate) fn check(text: &[u8]) -> bool {
    let mut d = [0u32; 9];
    let mut n = 0;
    let mut sep = None;
    for &b in text {
        if b.is_ascii_digit() {
            if n == 9 {
                return false;
            }
            d[n] = u32::from(b - b'0');
            n += 1;
        } else {
            // One separator used throughout (the pattern allows only '-' or ' ').
            match sep {
                None => sep = Some(b),
                Some(s) if s != b => return false,
                Some(_) => {}
            }
        }
    }
    if n != 9 {
        return false;
    }
    let area = d[0] * 100 + d[1] * 10 + d[2];
    let group = d[3] * 10 + d[4];
    let serial = d[5] * 1000 + d[6] * 100 + d[7] * 10 + d[8];
    if area == 0 || area == 666 || area >= 900 || group == 0 || serial == 0 {
        return false;
    }
    // Printed on wallet inserts and in SSA examples; never a real person's.
    let famous = [(78, 5, 1120), (219, 9, 9999), (457, 55, 5462)];
    !famous.contains(&(area, group, serial))
}

#[cfg(test)]
mod tests {
    #[test]
    fn ssns() {
        for good in ["536-22-1234", "536 22 1234", "001-01-0001", "899-99-9999"] {
            assert!(super::check(good.as_bytes()), "{good}");
        }
        for bad in [
            "000-12-3456",
            "666-12-3456",
            "900-12-3456",
            "536-00-1234",
            "536-22-0000",
            "078-05-1120",
            "536-22 1234",
        ] {
            assert!(!super::check(bad.as_bytes()), "{bad}");
        }
    }
}
