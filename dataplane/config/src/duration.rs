//! Durations written with a unit: `"200us"`, `"5ms"`, `"1s"`, `"0.5s"`, `"10m"`, `"1h"`, `"7d"`.
//!
//! A bare number is rejected on purpose: `max_wait = 200` could mean nanoseconds to one reader and
//! milliseconds to another, and the two differ by six orders of magnitude.

use std::time::Duration;

const NANOS_PER_SEC: u128 = 1_000_000_000;

/// Units accepted after the number, with their length in nanoseconds. `µs` is accepted for
/// people who type it; [`format_duration`] always writes `us`. The unit is the whole suffix, so
/// `m` (minutes) never swallows `ms`.
const UNITS: [(&str, u128); 8] = [
    ("ns", 1),
    ("us", 1_000),
    ("µs", 1_000),
    ("ms", 1_000_000),
    ("s", NANOS_PER_SEC),
    ("m", 60 * NANOS_PER_SEC),
    ("h", 3600 * NANOS_PER_SEC),
    ("d", 86_400 * NANOS_PER_SEC),
];

/// Parses a non-negative duration written as a decimal number followed by a unit: `ns`, `us`,
/// `ms`, `s`, `m` (minutes), `h` or `d` (days of 24 hours), e.g. `"200us"`, `"5ms"`, `"1s"`,
/// `"0.5s"`, `"1h"`. Surrounding whitespace is ignored;
/// none is allowed between the number and the unit.
///
/// # Errors
///
/// A message phrased to follow the offending text (`has no unit; ...`) when the text is empty,
/// has no number or no unit, has an unknown unit, a malformed number, a fraction finer than one
/// nanosecond (`"0.5ns"`), or a value too large for [`Duration`].
// `%` instead of `is_multiple_of`, which needs Rust 1.87; the workspace declares 1.85.
#[allow(clippy::manual_is_multiple_of)]
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    const EXPECTED: &str = "expected a number with a unit (ns, us, ms, s, m, h, d), e.g. \"200us\"";
    let s = s.trim();
    if s.is_empty() {
        return Err(format!("is empty; {EXPECTED}"));
    }
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    if number.is_empty() {
        return Err(format!("has no number before the unit; {EXPECTED}"));
    }
    if unit.is_empty() {
        return Err(format!("has no unit; {EXPECTED}"));
    }
    let Some(&(_, unit_nanos)) = UNITS.iter().find(|(name, _)| *name == unit) else {
        return Err(format!(
            "has unknown unit {unit:?}; expected one of ns, us, ms, s, m, h, d"
        ));
    };

    let (int_part, frac_part) = match number.split_once('.') {
        Some((int_part, frac_part)) => (int_part, frac_part),
        None => (number, ""),
    };
    // `split` stopped at the first non-digit, non-dot character, so a second dot or an empty side
    // of the dot is the only way left to write a malformed number.
    if int_part.is_empty()
        || frac_part.contains('.')
        || (number.contains('.') && frac_part.is_empty())
    {
        return Err(format!(
            "is not a decimal number followed by a unit; {EXPECTED}"
        ));
    }
    let too_large = || "is too large for a duration".to_string();
    let int_value: u128 = int_part.parse().map_err(|_| too_large())?;

    // Trailing zeros add no precision; after removing them, a fraction with more than nine
    // digits always ends below one nanosecond because its last digit is not zero.
    let frac_digits = frac_part.trim_end_matches('0');
    if frac_digits.len() > 9 {
        return Err("is finer than 1ns".to_string());
    }
    let frac_value: u128 = if frac_digits.is_empty() {
        0
    } else {
        frac_digits.parse().map_err(|_| too_large())?
    };
    let frac_scale = 10u128.pow(frac_digits.len() as u32);
    let frac_nanos_scaled = frac_value * unit_nanos;
    if frac_nanos_scaled % frac_scale != 0 {
        return Err("is finer than 1ns".to_string());
    }

    let total_nanos = int_value
        .checked_mul(unit_nanos)
        .and_then(|n| n.checked_add(frac_nanos_scaled / frac_scale))
        .ok_or_else(too_large)?;
    let secs = u64::try_from(total_nanos / NANOS_PER_SEC).map_err(|_| too_large())?;
    let nanos = u32::try_from(total_nanos % NANOS_PER_SEC)
        .expect("a remainder of division by 10^9 fits in u32");
    Ok(Duration::new(secs, nanos))
}

/// Writes a duration in the largest of `d`, `h`, `m`, `s`, `ms`, `us`, `ns` that represents it
/// exactly, so that [`parse_duration`] reads back the same value: 200 µs is `"200us"`, 1.5 s is
/// `"1500ms"`, 90 s is `"90s"`, 3600 s is `"1h"`.
#[allow(clippy::manual_is_multiple_of)] // see parse_duration
pub fn format_duration(d: Duration) -> String {
    let nanos = d.as_nanos();
    let (value, unit) = if nanos == 0 {
        (0, "s")
    } else if nanos % (86_400 * NANOS_PER_SEC) == 0 {
        (nanos / (86_400 * NANOS_PER_SEC), "d")
    } else if nanos % (3600 * NANOS_PER_SEC) == 0 {
        (nanos / (3600 * NANOS_PER_SEC), "h")
    } else if nanos % (60 * NANOS_PER_SEC) == 0 {
        (nanos / (60 * NANOS_PER_SEC), "m")
    } else if nanos % NANOS_PER_SEC == 0 {
        (nanos / NANOS_PER_SEC, "s")
    } else if nanos % 1_000_000 == 0 {
        (nanos / 1_000_000, "ms")
    } else if nanos % 1_000 == 0 {
        (nanos / 1_000, "us")
    } else {
        (nanos, "ns")
    };
    format!("{value}{unit}")
}

/// `serialize_with` helper: a duration as its [`format_duration`] string.
pub(crate) fn serialize<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format_duration(*d))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(s: &str) -> Duration {
        match parse_duration(s) {
            Ok(d) => d,
            Err(e) => panic!("{s:?} should parse, got: {e}"),
        }
    }

    fn err(s: &str) -> String {
        match parse_duration(s) {
            Ok(d) => panic!("{s:?} should be rejected, got {d:?}"),
            Err(e) => e,
        }
    }

    #[test]
    fn parses_every_unit() {
        assert_eq!(ok("100ns"), Duration::from_nanos(100));
        assert_eq!(ok("200us"), Duration::from_micros(200));
        assert_eq!(ok("200µs"), Duration::from_micros(200));
        assert_eq!(ok("5ms"), Duration::from_millis(5));
        assert_eq!(ok("1s"), Duration::from_secs(1));
        assert_eq!(ok("0s"), Duration::ZERO);
        assert_eq!(ok("  7ms "), Duration::from_millis(7));
        assert_eq!(ok("10m"), Duration::from_secs(600));
        assert_eq!(ok("1h"), Duration::from_secs(3600));
        assert_eq!(ok("7d"), Duration::from_secs(7 * 86_400));
        assert_eq!(ok("1.5h"), Duration::from_secs(5400));
    }

    #[test]
    fn parses_exact_fractions() {
        assert_eq!(ok("0.5s"), Duration::from_millis(500));
        assert_eq!(ok("1.25ms"), Duration::from_micros(1250));
        assert_eq!(ok("0.001us"), Duration::from_nanos(1));
        assert_eq!(ok("0.000000001s"), Duration::from_nanos(1));
        assert_eq!(ok("2.500000000000s"), Duration::from_millis(2500));
    }

    #[test]
    fn rejects_malformed_text() {
        assert!(err("").starts_with("is empty"));
        assert!(err("200").starts_with("has no unit"));
        assert!(err("ms").starts_with("has no number"));
        assert!(err("-5ms").starts_with("has no number"));
        assert_eq!(
            err("5 ms"),
            "has unknown unit \" ms\"; expected one of ns, us, ms, s, m, h, d"
        );
        assert_eq!(
            err("5w"),
            "has unknown unit \"w\"; expected one of ns, us, ms, s, m, h, d"
        );
        assert!(err("5mh").starts_with("has unknown unit \"mh\""));
        assert!(err("1.2.3s").starts_with("is not a decimal number"));
        assert!(err(".5s").starts_with("is not a decimal number"));
        assert!(err("5.s").starts_with("is not a decimal number"));
    }

    #[test]
    fn rejects_sub_nanosecond_and_huge_values() {
        assert_eq!(err("0.5ns"), "is finer than 1ns");
        assert_eq!(err("0.0000000001s"), "is finer than 1ns");
        assert_eq!(err("0.0001us"), "is finer than 1ns");
        assert_eq!(err("18446744073709551616s"), "is too large for a duration");
        assert_eq!(
            err("99999999999999999999999999999999999999999999s"),
            "is too large for a duration"
        );
    }

    #[test]
    fn largest_second_count_still_fits() {
        assert_eq!(ok("18446744073709551615s"), Duration::from_secs(u64::MAX));
    }

    #[test]
    fn formats_in_the_largest_exact_unit() {
        assert_eq!(format_duration(Duration::from_micros(200)), "200us");
        assert_eq!(format_duration(Duration::from_millis(1500)), "1500ms");
        assert_eq!(format_duration(Duration::from_secs(3)), "3s");
        assert_eq!(
            format_duration(Duration::from_nanos(1_000_001)),
            "1000001ns"
        );
        assert_eq!(format_duration(Duration::ZERO), "0s");
        assert_eq!(format_duration(Duration::from_secs(90)), "90s");
        assert_eq!(format_duration(Duration::from_secs(600)), "10m");
        assert_eq!(format_duration(Duration::from_secs(3600)), "1h");
        assert_eq!(format_duration(Duration::from_secs(2 * 86_400)), "2d");
    }

    proptest::proptest! {
        #[test]
        fn format_then_parse_is_identity(secs in 0u64..=u64::MAX, nanos in 0u32..1_000_000_000) {
            let d = Duration::new(secs, nanos);
            proptest::prop_assert_eq!(parse_duration(&format_duration(d)), Ok(d));
        }

        #[test]
        fn never_panics(s in "\\PC{0,40}") {
            let _ = parse_duration(&s);
        }

        #[test]
        fn never_panics_on_numberish_text(s in "[0-9.]{0,30}(ns|us|ms|s|µs|m|h|d|x)?") {
            let _ = parse_duration(&s);
        }
    }
}
