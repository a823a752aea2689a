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

/// A number as written: whole (kept exact), or with a fraction or exponent.
#[derive(Debug, Clone, Copy)]
enum Number {
    Whole(u128),
    Real(f64),
}

/// Splits `123abc` into (123, "abc").
fn number_and_unit(s: &str) -> Option<(Number, &str)> {
    let s = s.trim();
    let end = s.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(s.len());
    let digits = &s[..end];
    // Whole numbers stay integers: through an f64 a large one (a 125-day deadline in
    // milliseconds, a size past 2^53 bytes) would come out a little off.
    let n = match digits.parse::<u128>() {
        Ok(n) => Number::Whole(n),
        Err(_) => Number::Real(digits.parse().ok()?),
    };
    Some((n, s[end..].trim()))
}

/// `500ms`, `2s`, `1.5s`, `1m`, `250us`, `2h`, `1d`; a bare number is seconds. At most
/// [`MAX_TIMEOUT`]. A whole number of any unit is exact.
pub fn duration(s: &str) -> Result<Duration, String> {
    let bad = || format!("invalid duration `{s}`: expected e.g. 500ms, 2s, 1m");
    let (n, unit) = number_and_unit(s).ok_or_else(bad)?;
    let nanos_per: u128 = match unit {
        "" | "s" => 1_000_000_000,
        "ms" => 1_000_000,
        "us" | "µs" => 1_000,
        "m" | "min" => 60_000_000_000,
        "h" => 3_600_000_000_000,
        "d" => 86_400_000_000_000,
        _ => return Err(bad()),
    };
    let max = MAX_TIMEOUT.as_secs();
    let too_long =
        || format!("invalid duration `{s}`: longer than the maximum of {max}s (365 days)");
    let positive = || format!("invalid duration `{s}`: must be positive");
    match n {
        Number::Whole(0) => Err(positive()),
        Number::Whole(n) => n
            .checked_mul(nanos_per)
            .filter(|&nanos| nanos <= MAX_TIMEOUT.as_nanos())
            .and_then(|nanos| u64::try_from(nanos).ok())
            .map(Duration::from_nanos)
            .ok_or_else(too_long),
        Number::Real(n) => {
            // Lossless: every unit is a whole number of nanoseconds below 2^53.
            let secs = n * (nanos_per as f64) / 1e9;
            if secs.is_nan() || secs <= 0.0 {
                return Err(positive());
            }
            // Checked before converting: `Duration::from_secs_f64` panics on values it
            // cannot hold.
            if secs > MAX_TIMEOUT.as_secs_f64() {
                return Err(too_long());
            }
            Duration::try_from_secs_f64(secs).map_err(|_| bad())
        }
    }
}

/// `1024`, `64KiB`, `64k`, `1MiB`, `1M`, `2GiB` (K/M/G are binary multiples). A whole number
/// of any unit is exact; one past the largest size is an error, never rounded.
pub fn size(s: &str) -> Result<usize, String> {
    let bad = || format!("invalid size `{s}`: expected e.g. 4096, 64KiB, 1MiB");
    let (n, unit) = number_and_unit(s).ok_or_else(bad)?;
    let mult: u128 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        _ => return Err(bad()),
    };
    let too_large = || format!("invalid size `{s}`: larger than {} bytes", usize::MAX);
    match n {
        Number::Whole(n) => {
            n.checked_mul(mult).and_then(|bytes| usize::try_from(bytes).ok()).ok_or_else(too_large)
        }
        Number::Real(n) => {
            let bytes = n * mult as f64;
            // `usize::MAX as f64` rounds up to 2^64, itself out of range.
            if !(0.0..(usize::MAX as f64)).contains(&bytes) {
                return Err(too_large());
            }
            Ok(bytes as usize)
        }
    }
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
        // Found by the property tests: a 125-day deadline in milliseconds came out 1 ns short
        // through an f64.
        assert_eq!(duration("10843009879ms"), Ok(Duration::from_millis(10_843_009_879)));
        assert_eq!(duration("1.5s"), Ok(Duration::from_millis(1500)));
    }

    #[test]
    fn sizes() {
        assert_eq!(size("4096"), Ok(4096));
        assert_eq!(size("64KiB"), Ok(64 * 1024));
        assert_eq!(size("1MiB"), Ok(1 << 20));
        assert_eq!(size("1m"), Ok(1 << 20));
        assert!(size("lots").is_err());
        // Found by the property tests: past 2^53 bytes a size was rounded, and 2^64 was
        // taken as usize::MAX instead of refused.
        assert_eq!(size("24559050511957585"), Ok(24_559_050_511_957_585));
        assert_eq!(size("18446744073709551615"), Ok(usize::MAX));
        assert!(size("18446744073709551616").is_err());
        assert!(size("17179869184GiB").is_err());
        assert_eq!(size("1.5KiB"), Ok(1536));
    }

    #[test]
    fn env_vars() {
        assert_eq!(env_var("A=b=c"), Ok(("A".into(), "b=c".into())));
        assert_eq!(env_var("A="), Ok(("A".into(), String::new())));
        assert!(env_var("=x").is_err());
        assert!(env_var("ZEROBOOT_SURELY_UNSET_VAR").is_err());
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    const MAX_MS: u64 = 365 * 24 * 3600 * 1000;

    proptest! {
        #[test]
        fn parsers_never_panic(s in any::<String>(), t in "[ 0-9.eE+-]{0,24}(ms|us|µs|s|m|min|h|d|k|KiB|M|MiB|G|GiB|b|x)?") {
            for s in [&s, &t] {
                let _ = duration(s);
                let _ = deadline(s);
                let _ = size(s);
                let _ = size_u64(s);
            }
        }

        /// Whole milliseconds, seconds, minutes… are exact, whichever unit they are written in.
        #[test]
        fn whole_durations_are_exact(ms in 1..=MAX_MS) {
            prop_assert_eq!(duration(&format!("{ms}ms")), Ok(Duration::from_millis(ms)));
            prop_assert_eq!(duration(&format!("{}us", ms * 1000)), Ok(Duration::from_millis(ms)));
            let s = ms / 1000;
            if s > 0 {
                prop_assert_eq!(duration(&format!("{s}s")), Ok(Duration::from_secs(s)));
                prop_assert_eq!(duration(&format!("{s}")), Ok(Duration::from_secs(s)));
            }
            let min = ms / 60_000;
            if min > 0 {
                prop_assert_eq!(duration(&format!("{min}m")), Ok(Duration::from_secs(min * 60)));
            }
        }

        /// Longer text never parses to a shorter deadline; past the maximum is an error.
        #[test]
        fn durations_are_monotonic(a in 1..=MAX_MS * 2, b in 1..=MAX_MS * 2) {
            let (lo, hi) = (a.min(b), a.max(b));
            match (duration(&format!("{lo}ms")), duration(&format!("{hi}ms"))) {
                (Ok(x), Ok(y)) => prop_assert!(x <= y),
                (Ok(_), Err(e)) => prop_assert!(hi > MAX_MS && e.contains("maximum")),
                (Err(e), Err(_)) => prop_assert!(lo > MAX_MS && e.contains("maximum")),
                (Err(_), Ok(_)) => prop_assert!(false, "{lo}ms refused but {hi}ms accepted"),
            }
        }

        /// A whole number of bytes (in any unit) is exact, or refused when it does not fit.
        #[test]
        fn whole_sizes_are_exact(n in any::<u64>(), unit in 0usize..4) {
            let (suffix, mult) = [("", 1u128), ("KiB", 1 << 10), ("m", 1 << 20), ("GiB", 1 << 30)][unit];
            let want = u128::from(n) * mult;
            match size(&format!("{n}{suffix}")) {
                Ok(got) => prop_assert_eq!(got as u128, want),
                Err(e) => {
                    prop_assert!(want > usize::MAX as u128, "{n}{suffix}: {e}");
                }
            }
        }

        #[test]
        fn sizes_are_monotonic(a in any::<u64>(), b in any::<u64>()) {
            let (lo, hi) = (a.min(b), a.max(b));
            if let (Ok(x), Ok(y)) = (size(&format!("{lo}")), size(&format!("{hi}"))) {
                prop_assert!(x <= y);
            }
        }
    }
}
