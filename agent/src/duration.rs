//! Go durations: Consul's config files and HTTP API spell durations the way Go's
//! `time.ParseDuration` reads them (`"10s"`, `"1m30s"`, `"1.5h"`, `"250ms"`) and print them the
//! way Go's `Duration.String` writes them (`"1m30s"`, `"72h0m0s"`, `"0s"`).
//!
//! Invariants: [`parse_go_nanos`] accepts exactly Go's grammar
//! `[-+]?([0-9]*(\.[0-9]*)?[a-z]+)+` with the units `ns`, `us`, `µs` (U+00B5), `μs` (U+03BC),
//! `ms`, `s`, `m`, `h`, plus the bare `"0"`; it never panics and reports overflow as an error.
//! [`format_go_nanos`] is its inverse: every `i64` formats to a string that parses back to the
//! same value (property-tested below). The arithmetic, including the `f64` step for fractions,
//! mirrors Go's so both sides agree to the nanosecond.
//!
//! The [`serde_go`] helpers read either a Go duration string or a number of nanoseconds (the
//! HTTP API accepts both for check intervals, TTLs and the like) and write the Go string.

use std::time::Duration;

/// Why a duration string was rejected. The texts follow Go's `time.ParseDuration` errors.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DurationError {
    /// The text does not follow the grammar, or the value overflows an `i64` of nanoseconds.
    #[error("time: invalid duration \"{0}\"")]
    Invalid(String),
    /// A number without a unit, such as `"10"` (only `"0"` may omit the unit).
    #[error("time: missing unit in duration \"{0}\"")]
    MissingUnit(String),
    /// A unit Go does not know, such as `"5d"`.
    #[error("time: unknown unit \"{unit}\" in duration \"{input}\"")]
    UnknownUnit {
        /// The unit as written.
        unit: String,
        /// The whole input.
        input: String,
    },
    /// A valid Go duration below zero, where only non-negative durations make sense.
    #[error("duration \"{0}\" must not be negative")]
    Negative(String),
}

const NANOS_PER_MICRO: u64 = 1_000;
const NANOS_PER_MILLI: u64 = 1_000_000;
const NANOS_PER_SECOND: u64 = 1_000_000_000;
const NANOS_PER_MINUTE: u64 = 60 * NANOS_PER_SECOND;
const NANOS_PER_HOUR: u64 = 60 * NANOS_PER_MINUTE;
/// 1<<63: the magnitude of `i64::MIN`, the largest magnitude Go accepts (for negative input).
const LIMIT: u64 = 1 << 63;

fn unit_nanos(unit: &str) -> Option<u64> {
    Some(match unit {
        "ns" => 1,
        "us" | "\u{00b5}s" | "\u{03bc}s" => NANOS_PER_MICRO,
        "ms" => NANOS_PER_MILLI,
        "s" => NANOS_PER_SECOND,
        "m" => NANOS_PER_MINUTE,
        "h" => NANOS_PER_HOUR,
        _ => return None,
    })
}

/// Parses a Go duration into signed nanoseconds, exactly as Go's `time.ParseDuration` does.
pub fn parse_go_nanos(input: &str) -> Result<i64, DurationError> {
    let invalid = || DurationError::Invalid(input.to_owned());
    let mut s = input.as_bytes();
    let mut neg = false;
    if let Some(&c) = s.first()
        && (c == b'-' || c == b'+')
    {
        neg = c == b'-';
        s = &s[1..];
    }
    if s == b"0" {
        return Ok(0);
    }
    if s.is_empty() {
        return Err(invalid());
    }
    let mut total: u64 = 0;
    while !s.is_empty() {
        // The next character must be [0-9.].
        if !(s[0] == b'.' || s[0].is_ascii_digit()) {
            return Err(invalid());
        }
        // Integer part: overflow here is an error, as in Go's leadingInt.
        let before = s.len();
        let mut whole: u64 = 0;
        while let Some(&c) = s.first() {
            if !c.is_ascii_digit() {
                break;
            }
            if whole > LIMIT / 10 {
                return Err(invalid());
            }
            whole = whole * 10 + u64::from(c - b'0');
            if whole > LIMIT {
                return Err(invalid());
            }
            s = &s[1..];
        }
        let pre = before != s.len();
        // Fraction: stops accumulating precision on overflow instead of failing.
        let mut frac: u64 = 0;
        let mut scale: f64 = 1.0;
        let mut post = false;
        if s.first() == Some(&b'.') {
            s = &s[1..];
            let before = s.len();
            let mut overflow = false;
            while let Some(&c) = s.first() {
                if !c.is_ascii_digit() {
                    break;
                }
                s = &s[1..];
                if overflow {
                    continue;
                }
                if frac > (LIMIT - 1) / 10 {
                    overflow = true;
                    continue;
                }
                let next = frac * 10 + u64::from(c - b'0');
                if next > LIMIT {
                    overflow = true;
                    continue;
                }
                frac = next;
                scale *= 10.0;
            }
            post = before != s.len();
        }
        if !pre && !post {
            return Err(invalid());
        }
        // Unit: everything up to the next digit or '.'; this may be multi-byte (µs).
        let unit_len = s
            .iter()
            .position(|&c| c == b'.' || c.is_ascii_digit())
            .unwrap_or(s.len());
        if unit_len == 0 {
            return Err(DurationError::MissingUnit(input.to_owned()));
        }
        let unit_bytes = &s[..unit_len];
        s = &s[unit_len..];
        let unit_text = String::from_utf8_lossy(unit_bytes);
        let Some(unit) = unit_nanos(&unit_text) else {
            return Err(DurationError::UnknownUnit {
                unit: unit_text.into_owned(),
                input: input.to_owned(),
            });
        };
        if whole > LIMIT / unit {
            return Err(invalid());
        }
        let mut value = whole * unit;
        if frac > 0 {
            // Go uses float64 here so that fractions of hours stay nanosecond accurate.
            value += (frac as f64 * (unit as f64 / scale)) as u64;
            if value > LIMIT {
                return Err(invalid());
            }
        }
        // Go's uint64 sum can wrap here ("2^63ns" twice gives 0); refuse it instead.
        total = match total.checked_add(value) {
            Some(t) if t <= LIMIT => t,
            _ => return Err(invalid()),
        };
    }
    if neg {
        // total <= 1<<63, so the negation always fits (i64::MIN included).
        return Ok((total as i128).wrapping_neg() as i64);
    }
    if total > LIMIT - 1 {
        return Err(invalid());
    }
    Ok(total as i64)
}

/// Parses a Go duration that must not be negative.
pub fn parse_duration(input: &str) -> Result<Duration, DurationError> {
    let nanos = parse_go_nanos(input)?;
    if nanos < 0 {
        return Err(DurationError::Negative(input.to_owned()));
    }
    Ok(Duration::from_nanos(nanos as u64))
}

/// Formats signed nanoseconds the way Go's `Duration.String` does (`"1m30s"`, `"1.5ms"`, `"0s"`).
pub fn format_go_nanos(nanos: i64) -> String {
    let neg = nanos < 0;
    let mut u = nanos.unsigned_abs();
    let mut out = String::new();
    if u < NANOS_PER_SECOND {
        // Below one second Go switches to the smallest unit that keeps an integer part.
        let (prec, unit) = match u {
            0 => return "0s".to_owned(),
            n if n < NANOS_PER_MICRO => (0, "ns"),
            n if n < NANOS_PER_MILLI => (3, "\u{00b5}s"),
            _ => (6, "ms"),
        };
        let (int, frac) = split_fraction(u, prec);
        out.push_str(&int.to_string());
        out.push_str(&frac);
        out.push_str(unit);
    } else {
        let (seconds, frac) = split_fraction(u, 9);
        u = seconds;
        let secs = u % 60;
        u /= 60;
        if u > 0 {
            let minutes = u % 60;
            u /= 60;
            if u > 0 {
                out.push_str(&u.to_string());
                out.push('h');
            }
            out.push_str(&minutes.to_string());
            out.push('m');
        }
        out.push_str(&secs.to_string());
        out.push_str(&frac);
        out.push('s');
    }
    if neg {
        out.insert(0, '-');
    }
    out
}

/// Splits `v` into `v / 10^prec` and the fraction text (".5", ".125"), trailing zeros and the
/// point dropped when the fraction is zero, like Go's `fmtFrac`.
fn split_fraction(v: u64, prec: u32) -> (u64, String) {
    let div = 10u64.pow(prec);
    let frac = v % div;
    if frac == 0 {
        return (v / div, String::new());
    }
    let digits = format!("{frac:0width$}", width = prec as usize);
    (v / div, format!(".{}", digits.trim_end_matches('0')))
}

/// Formats a non-negative duration the way Go prints it. Durations beyond `i64::MAX`
/// nanoseconds (292 years) are clamped to it.
pub fn format_duration(d: Duration) -> String {
    format_go_nanos(i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

/// Reads a duration from a JSON value: a Go duration string or a number of nanoseconds, as
/// Consul's HTTP API accepts both. Negative values are rejected.
pub fn duration_from_json(value: &serde_json::Value) -> Result<Duration, String> {
    match value {
        serde_json::Value::String(s) => parse_duration(s).map_err(|e| e.to_string()),
        serde_json::Value::Number(n) => {
            if let Some(u) = n.as_u64() {
                Ok(Duration::from_nanos(u))
            } else if n.as_i64().is_some() {
                Err(format!("duration {n} must not be negative"))
            } else {
                // Go decodes JSON numbers as float64 and truncates to nanoseconds.
                match n.as_f64() {
                    Some(f) if (0.0..1.8e19).contains(&f) => Ok(Duration::from_nanos(f as u64)),
                    _ => Err(format!("invalid duration {n}")),
                }
            }
        }
        other => Err(format!(
            "expected a duration string or a number of nanoseconds, got {}",
            json_type_name(other)
        )),
    }
}

/// A short name of a JSON value's type, for error messages.
pub(crate) fn json_type_name(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "a list",
        serde_json::Value::Object(_) => "an object",
    }
}

/// Serde helpers for `Duration` fields in Consul's shape: written as a Go duration string,
/// read from a Go duration string or a number of nanoseconds.
///
/// ```
/// # use std::time::Duration;
/// #[derive(serde::Serialize, serde::Deserialize)]
/// struct Check {
///     #[serde(with = "muster::duration::serde_go")]
///     interval: Duration,
/// }
/// let c: Check = serde_json::from_str(r#"{"interval": "1m30s"}"#).unwrap();
/// assert_eq!(c.interval, Duration::from_secs(90));
/// let c: Check = serde_json::from_str(r#"{"interval": 1500000000}"#).unwrap();
/// assert_eq!(serde_json::to_string(&c).unwrap(), r#"{"interval":"1.5s"}"#);
/// ```
pub mod serde_go {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    /// Writes the duration as a Go duration string.
    pub fn serialize<S: Serializer>(d: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&super::format_duration(*d))
    }

    /// Reads a Go duration string or a number of nanoseconds.
    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
        let value = serde_json::Value::deserialize(deserializer)?;
        super::duration_from_json(&value).map_err(serde::de::Error::custom)
    }

    /// The same for `Option<Duration>`: `None` is written as `null`, and `null` reads as `None`.
    pub mod option {
        use serde::{Deserialize, Deserializer, Serializer};
        use std::time::Duration;

        /// Writes `Some` as a Go duration string and `None` as `null`.
        pub fn serialize<S: Serializer>(
            d: &Option<Duration>,
            serializer: S,
        ) -> Result<S::Ok, S::Error> {
            match d {
                Some(d) => serializer.serialize_str(&super::super::format_duration(*d)),
                None => serializer.serialize_none(),
            }
        }

        /// Reads `null`, a Go duration string or a number of nanoseconds.
        pub fn deserialize<'de, D: Deserializer<'de>>(
            deserializer: D,
        ) -> Result<Option<Duration>, D::Error> {
            match serde_json::Value::deserialize(deserializer)? {
                serde_json::Value::Null => Ok(None),
                value => super::super::duration_from_json(&value)
                    .map(Some)
                    .map_err(serde::de::Error::custom),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_go_examples() {
        let cases: &[(&str, i64)] = &[
            ("0", 0),
            ("5s", 5_000_000_000),
            ("30s", 30_000_000_000),
            ("1478s", 1_478_000_000_000),
            ("-5s", -5_000_000_000),
            ("+5s", 5_000_000_000),
            ("-0", 0),
            ("+0", 0),
            ("5.0s", 5_000_000_000),
            ("5.6s", 5_600_000_000),
            ("5.s", 5_000_000_000),
            (".5s", 500_000_000),
            ("1.0s", 1_000_000_000),
            ("1.00s", 1_000_000_000),
            ("1.004s", 1_004_000_000),
            ("100.00100s", 100_001_000_000),
            ("10ns", 10),
            ("11us", 11_000),
            ("12\u{00b5}s", 12_000),
            ("12\u{03bc}s", 12_000),
            ("13ms", 13_000_000),
            ("14s", 14_000_000_000),
            ("15m", 900_000_000_000),
            ("16h", 57_600_000_000_000),
            ("3h30m", 12_600_000_000_000),
            ("10.5s4m", 250_500_000_000),
            ("-2m3.4s", -123_400_000_000),
            ("1h2m3s4ms5us6ns", 3_723_004_005_006),
            ("39h9m14.425s", 140_954_425_000_000),
            ("52763797000ns", 52_763_797_000),
            ("0.3333333333333333333h", 1_200_000_000_000),
            ("9007199254740993ns", 9_007_199_254_740_993),
            ("9223372036854775807ns", i64::MAX),
            ("9223372036854775.807us", i64::MAX),
            ("9223372036s854ms775us807ns", i64::MAX),
            ("-9223372036854775808ns", i64::MIN),
            ("-9223372036854775.808us", i64::MIN),
            ("-9223372036s854ms775us808ns", i64::MIN),
            ("-2562047h47m16.854775808s", i64::MIN),
            ("0.100000000000000000000h", 360_000_000_000),
            ("0.830103483285477580700h", 2_988_372_539_827),
        ];
        for &(input, want) in cases {
            assert_eq!(parse_go_nanos(input), Ok(want), "{input}");
        }
    }

    #[test]
    fn rejects_what_go_rejects() {
        for input in [
            "",
            "3",
            "-",
            "s",
            ".",
            "-.",
            ".s",
            "+.s",
            "1d",
            "\u{ffff}",
            "1 s",
            " 1s",
            "1s ",
            "1.5 h",
            "10",
            "1S",
            "1H",
            "9223372036854775808ns",
            "9223372036854775.808us",
            "-9223372036854775809ns",
            "3000000h",
            "1e3s",
        ] {
            assert!(
                parse_go_nanos(input).is_err(),
                "{input:?} should be rejected"
            );
        }
        assert_eq!(
            parse_go_nanos("10"),
            Err(DurationError::MissingUnit("10".to_owned()))
        );
        assert_eq!(
            parse_go_nanos("5d").unwrap_err().to_string(),
            "time: unknown unit \"d\" in duration \"5d\""
        );
        assert_eq!(
            parse_duration("-1s"),
            Err(DurationError::Negative("-1s".to_owned()))
        );
    }

    #[test]
    fn formats_like_go() {
        let cases: &[(i64, &str)] = &[
            (0, "0s"),
            (1, "1ns"),
            (1_100, "1.1\u{00b5}s"),
            (2_200_000, "2.2ms"),
            (250_000_000, "250ms"),
            (1_500_000_000, "1.5s"),
            (10_000_000_000, "10s"),
            (90_000_000_000, "1m30s"),
            (4_000_000_000 * 60, "4m0s"),
            (3_600_000_000_000, "1h0m0s"),
            (72 * 3_600_000_000_000, "72h0m0s"),
            (-1_500_000_000, "-1.5s"),
            (i64::MAX, "2562047h47m16.854775807s"),
            (i64::MIN, "-2562047h47m16.854775808s"),
        ];
        for &(nanos, want) in cases {
            assert_eq!(format_go_nanos(nanos), want, "{nanos}");
        }
        assert_eq!(format_duration(Duration::from_secs(300)), "5m0s");
        assert_eq!(format_duration(Duration::MAX), "2562047h47m16.854775807s");
    }

    #[test]
    fn json_accepts_strings_and_nanoseconds() {
        use serde_json::json;
        assert_eq!(
            duration_from_json(&json!("10s")),
            Ok(Duration::from_secs(10))
        );
        assert_eq!(
            duration_from_json(&json!(1_000_000_000u64)),
            Ok(Duration::from_secs(1))
        );
        assert_eq!(
            duration_from_json(&json!(1.5e9)),
            Ok(Duration::from_millis(1500))
        );
        assert!(duration_from_json(&json!(-5)).is_err());
        assert!(duration_from_json(&json!(true)).is_err());
        assert!(duration_from_json(&json!("ten seconds")).is_err());
    }

    #[test]
    fn serde_helpers_round_trip() {
        #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
        struct Probe {
            #[serde(with = "serde_go")]
            every: Duration,
            #[serde(with = "serde_go::option", default)]
            ttl: Option<Duration>,
        }
        let p: Probe = serde_json::from_str(r#"{"every":"1m30s","ttl":null}"#).unwrap();
        assert_eq!(
            p,
            Probe {
                every: Duration::from_secs(90),
                ttl: None
            }
        );
        let p: Probe = serde_json::from_str(r#"{"every":5,"ttl":"2h"}"#).unwrap();
        assert_eq!(
            serde_json::to_string(&p).unwrap(),
            r#"{"every":"5ns","ttl":"2h0m0s"}"#
        );
        assert!(serde_json::from_str::<Probe>(r#"{"every":"5 s"}"#).is_err());
    }

    proptest! {
        #[test]
        fn format_then_parse_round_trips(nanos in any::<i64>()) {
            prop_assert_eq!(parse_go_nanos(&format_go_nanos(nanos)), Ok(nanos));
        }

        #[test]
        fn parser_never_panics(input in "\\PC{0,24}") {
            let _ = parse_go_nanos(&input);
        }

        #[test]
        fn parser_never_panics_on_duration_like_input(
            input in "[-+]?([0-9]{0,22}(\\.[0-9]{0,22})?(ns|us|µs|μs|ms|s|m|h|x)){1,4}"
        ) {
            let _ = parse_go_nanos(&input);
        }
    }
}
