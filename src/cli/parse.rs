//! Value parsers for command-line flags.

use std::time::Duration;
use zeroboot_wasm::{DirGrant, MAX_TIMEOUT};

pub fn dir_rw(s: &str) -> Result<DirGrant, String> {
    DirGrant::parse(s, false)
}

pub fn dir_ro(s: &str) -> Result<DirGrant, String> {
    DirGrant::parse(s, true)
}

/// `NAME=VALUE`, or `NAME` to pass the host's value through (like `wasmtime run --env`).
pub fn env_var(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some(("", _)) => Err(format!("invalid environment variable `{s}`: empty name")),
        Some((k, v)) => Ok((k.to_string(), v.to_string())),
        None if s.is_empty() => Err("invalid environment variable: empty name".into()),
        None => std::env::var(s).map(|v| (s.to_string(), v)).map_err(|_| {
            format!("environment variable `{s}` is not set on the host (use NAME=VALUE)")
        }),
    }
}

/// An optional deadline: a duration, or `none`.
#[derive(Debug, Clone, Copy)]
pub struct Deadline(pub Option<Duration>);

pub fn deadline(s: &str) -> Result<Deadline, String> {
    if s.eq_ignore_ascii_case("none") {
        return Ok(Deadline(None));
    }
    duration(s).map(|d| Deadline(Some(d)))
}

/// Splits `123abc` into (123, "abc").
fn number_and_unit(s: &str) -> Option<(f64, &str)> {
    let s = s.trim();
    let end = s.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(s.len());
    let n: f64 = s[..end].parse().ok()?;
    Some((n, s[end..].trim()))
}

/// `500ms`, `2s`, `1.5s`, `1m`, `250us`, `2h`, `1d`; a bare number is seconds. At most
/// [`MAX_TIMEOUT`].
pub fn duration(s: &str) -> Result<Duration, String> {
    let bad = || format!("invalid duration `{s}`: expected e.g. 500ms, 2s, 1m");
    let (n, unit) = number_and_unit(s).ok_or_else(bad)?;
    let secs = match unit {
        "" | "s" => n,
        "ms" => n / 1e3,
        "us" | "µs" => n / 1e6,
        "m" | "min" => n * 60.0,
        "h" => n * 3600.0,
        "d" => n * 86400.0,
        _ => return Err(bad()),
    };
    if secs.is_nan() || secs <= 0.0 {
        return Err(format!("invalid duration `{s}`: must be positive"));
    }
    let max = MAX_TIMEOUT.as_secs();
    // Checked before converting: `Duration::from_secs_f64` panics on values it cannot hold.
    if secs > MAX_TIMEOUT.as_secs_f64() {
        return Err(format!(
            "invalid duration `{s}`: longer than the maximum of {max}s (365 days)"
        ));
    }
    Duration::try_from_secs_f64(secs).map_err(|_| bad())
}

/// `1024`, `64KiB`, `64k`, `1MiB`, `1M`, `2GiB` (K/M/G are binary multiples).
pub fn size(s: &str) -> Result<usize, String> {
    let bad = || format!("invalid size `{s}`: expected e.g. 4096, 64KiB, 1MiB");
    let (n, unit) = number_and_unit(s).ok_or_else(bad)?;
    let mult: f64 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kb" | "kib" => 1024.0,
        "m" | "mb" | "mib" => 1024.0 * 1024.0,
        "g" | "gb" | "gib" => 1024.0 * 1024.0 * 1024.0,
        _ => return Err(bad()),
    };
    let bytes = n * mult;
    if !(0.0..=(usize::MAX as f64)).contains(&bytes) {
        return Err(bad());
    }
    Ok(bytes as usize)
}

pub fn size_u64(s: &str) -> Result<u64, String> {
    size(s).map(|n| n as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(duration("3"), Ok(Duration::from_secs(3)));
        assert_eq!(duration("1m"), Ok(Duration::from_secs(60)));
        assert!(duration("fast").is_err());
        assert!(duration("0s").is_err());
        assert!(duration("5 parsecs").is_err());
        assert_eq!(duration("365d"), Ok(MAX_TIMEOUT));
        assert!(duration("366d").is_err());
        assert!(duration("1e400").is_err());
        assert!(duration("99999999999999999999999999").is_err());
    }

    #[test]
    fn sizes() {
        assert_eq!(size("4096"), Ok(4096));
        assert_eq!(size("64KiB"), Ok(64 * 1024));
        assert_eq!(size("1MiB"), Ok(1 << 20));
        assert_eq!(size("1m"), Ok(1 << 20));
        assert!(size("lots").is_err());
    }

    #[test]
    fn env_vars() {
        assert_eq!(env_var("A=b=c"), Ok(("A".into(), "b=c".into())));
        assert_eq!(env_var("A="), Ok(("A".into(), String::new())));
        assert!(env_var("=x").is_err());
        assert!(env_var("ZEROBOOT_SURELY_UNSET_VAR").is_err());
    }
}
