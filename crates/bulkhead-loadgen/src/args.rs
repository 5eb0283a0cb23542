//! Parsing of the command line's value syntax: durations (`10s`, `500ms`, `2m`) and
//! headers (`'Name: value'`).

use std::time::Duration;

use hyper::header::{HeaderName, HeaderValue};

/// The longest duration accepted anywhere on the command line.
pub const DURATION_MAX: Duration = Duration::from_secs(24 * 3600);

/// A duration as a number and a unit: `ms`, `s`, `m` or `h` (`1.5s`, `250ms`).
/// A bare number is seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{s:?} is not a duration like 10s, 500ms or 2m"))?;
    let secs = match unit.trim() {
        "ms" => value / 1000.0,
        "" | "s" => value,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        other => {
            return Err(format!(
                "unknown unit {other:?} in {s:?}; use ms, s, m or h"
            ));
        }
    };
    let d = Duration::try_from_secs_f64(secs).map_err(|e| format!("{s:?}: {e}"))?;
    if d > DURATION_MAX {
        return Err(format!(
            "{s:?} is longer than {}h",
            DURATION_MAX.as_secs() / 3600
        ));
    }
    Ok(d)
}

/// A header as `Name: value`; the value is trimmed and may contain colons.
pub fn parse_header(s: &str) -> Result<(HeaderName, HeaderValue), String> {
    let (name, value) = s
        .split_once(':')
        .ok_or_else(|| format!("{s:?} is not a header like 'Name: value'"))?;
    let name =
        HeaderName::try_from(name.trim()).map_err(|e| format!("header name in {s:?}: {e}"))?;
    let value =
        HeaderValue::try_from(value.trim()).map_err(|e| format!("header value in {s:?}: {e}"))?;
    Ok((name, value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        let check = |s: &str, expect: Duration| assert_eq!(parse_duration(s), Ok(expect), "{s}");
        check("10s", Duration::from_secs(10));
        check("10", Duration::from_secs(10));
        check("500ms", Duration::from_millis(500));
        check("1.5s", Duration::from_millis(1500));
        check("2m", Duration::from_secs(120));
        check("1h", Duration::from_secs(3600));
        check("0s", Duration::ZERO);
        for bad in ["", "s", "ten", "10x", "-1s", "1.2.3s", "25h"] {
            assert!(parse_duration(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn headers() {
        let (name, value) = parse_header("Authorization: Bearer bk_abc:def ").unwrap();
        assert_eq!(name, "authorization");
        assert_eq!(value, "Bearer bk_abc:def");
        let (name, value) = parse_header("x-empty:").unwrap();
        assert_eq!((name.as_str(), value.as_bytes()), ("x-empty", &b""[..]));
        for bad in ["no colon", ": value", "bad name: v", "x: line\nbreak"] {
            assert!(parse_header(bad).is_err(), "{bad:?} accepted");
        }
    }
}
