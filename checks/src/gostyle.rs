//! Go-formatted texts, so check output reads the way Consul users and their scripts expect.
//!
//! Consul's check output is Go's `err.Error()` and `time.Duration.String()`; people grep for
//! `connection refused` and alert on `i/o timeout`. These helpers reproduce those texts from
//! Rust values. They are pure and cover the cases checks meet, not all of Go's formatting.

use std::io;
use std::time::Duration;

/// Go's `time.Duration.String()`: `30s`, `1m30s`, `1.5s`, `250ms`, `1h0m0s`, `0s`.
pub(crate) fn duration(d: Duration) -> String {
    let ns = d.as_nanos();
    if ns == 0 {
        return "0s".to_owned();
    }
    if ns < 1_000 {
        return format!("{ns}ns");
    }
    if ns < 1_000_000 {
        return format!("{}µs", with_fraction(ns, 3));
    }
    if ns < 1_000_000_000 {
        return format!("{}ms", with_fraction(ns, 6));
    }
    let secs = ns / 1_000_000_000;
    let frac = fraction_digits(ns % 1_000_000_000, 9);
    let (h, m, s) = (secs / 3600, (secs / 60) % 60, secs % 60);
    match (h, m) {
        (0, 0) => format!("{s}{frac}s"),
        (0, _) => format!("{m}m{s}{frac}s"),
        _ => format!("{h}h{m}m{s}{frac}s"),
    }
}

/// `value / 10^digits` with Go's trimmed decimal fraction (`1500, 3` → `1.5`).
fn with_fraction(value: u128, digits: u32) -> String {
    let unit = 10u128.pow(digits);
    format!(
        "{}{}",
        value / unit,
        fraction_digits(value % unit, digits as usize)
    )
}

/// `.5` for 500 of 3 digits, empty for 0; trailing zeros trimmed as Go does.
fn fraction_digits(rem: u128, digits: usize) -> String {
    if rem == 0 {
        return String::new();
    }
    let padded = format!("{rem:0digits$}");
    format!(".{}", padded.trim_end_matches('0'))
}

/// Go's text for a system error: the lower-cased `strerror` without Rust's
/// ` (os error N)` suffix (`connection refused`), or `i/o timeout` for timeouts.
pub(crate) fn errno_text(err: &io::Error) -> String {
    if err.kind() == io::ErrorKind::TimedOut && err.raw_os_error().is_none() {
        return "i/o timeout".to_owned();
    }
    let text = err.to_string();
    let text = match text.rfind(" (os error ") {
        Some(at) if err.raw_os_error().is_some() => &text[..at],
        _ => text.as_str(),
    };
    lower_first(text)
}

fn lower_first(s: &str) -> String {
    let mut chars = s.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// The `Op` of Go's `url.Error` for a method: `Get`, `Post`, `Head`...
pub(crate) fn url_error_op(method: &str) -> String {
    let mut chars = method.chars();
    match chars.next() {
        Some(first) => first
            .to_uppercase()
            .chain(chars.flat_map(char::to_lowercase))
            .collect(),
        None => "Get".to_owned(),
    }
}

/// Go's `net.SplitHostPort`, with its error texts (`address x: missing port in address`).
pub(crate) fn split_host_port(address: &str) -> Result<(&str, &str), String> {
    if let Some(rest) = address.strip_prefix('[') {
        let Some((host, after)) = rest.split_once(']') else {
            return Err(format!("address {address}: missing ']' in address"));
        };
        return match after.strip_prefix(':') {
            Some(port) if !port.contains(':') => Ok((host, port)),
            Some(_) => Err(format!("address {address}: too many colons in address")),
            None if after.is_empty() => Err(format!("address {address}: missing port in address")),
            None => Err(format!("address {address}: unexpected text after ']'")),
        };
    }
    match address.rsplit_once(':') {
        None => Err(format!("address {address}: missing port in address")),
        Some((host, _)) if host.contains(':') => {
            Err(format!("address {address}: too many colons in address"))
        }
        Some((host, port)) => Ok((host, port)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duration_matches_go() {
        let cases = [
            (Duration::ZERO, "0s"),
            (Duration::from_nanos(500), "500ns"),
            (Duration::from_micros(1500), "1.5ms"),
            (Duration::from_nanos(2_500), "2.5µs"),
            (Duration::from_millis(250), "250ms"),
            (Duration::from_secs(1), "1s"),
            (Duration::from_millis(1500), "1.5s"),
            (Duration::from_secs(30), "30s"),
            (Duration::from_secs(60), "1m0s"),
            (Duration::from_secs(90), "1m30s"),
            (Duration::from_secs(3600), "1h0m0s"),
            (Duration::from_millis(3_723_250), "1h2m3.25s"),
        ];
        for (d, want) in cases {
            assert_eq!(duration(d), want, "{d:?}");
        }
    }

    #[test]
    fn errno_text_matches_go_syscall_errors() {
        let refused = io::Error::from_raw_os_error(111); // ECONNREFUSED on Linux
        assert_eq!(errno_text(&refused), "connection refused");
        let unreachable = io::Error::from_raw_os_error(113); // EHOSTUNREACH
        assert_eq!(errno_text(&unreachable), "no route to host");
        let timeout = io::Error::from(io::ErrorKind::TimedOut);
        assert_eq!(errno_text(&timeout), "i/o timeout");
        let custom = io::Error::other("Something odd");
        assert_eq!(errno_text(&custom), "something odd");
    }

    #[test]
    fn url_error_op_is_go_capitalised() {
        assert_eq!(url_error_op("GET"), "Get");
        assert_eq!(url_error_op("POST"), "Post");
        assert_eq!(url_error_op("options"), "Options");
    }

    #[test]
    fn split_host_port_matches_go() {
        assert_eq!(split_host_port("localhost:3306"), Ok(("localhost", "3306")));
        assert_eq!(split_host_port("[::1]:53"), Ok(("::1", "53")));
        assert_eq!(split_host_port(":80"), Ok(("", "80")));
        assert_eq!(
            split_host_port("localhost"),
            Err("address localhost: missing port in address".to_owned())
        );
        assert_eq!(
            split_host_port("::1:53"),
            Err("address ::1:53: too many colons in address".to_owned())
        );
        assert_eq!(
            split_host_port("[::1]"),
            Err("address [::1]: missing port in address".to_owned())
        );
        assert!(split_host_port("[::1:53").is_err());
    }
}
