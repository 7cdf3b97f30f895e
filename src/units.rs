//! Sizes and durations, as users write them and as xnatfs prints them.

use std::time::Duration;

/// Splits `12.5G` into a non-negative finite number and its unit (`"G"`).
fn number_and_unit(s: &str) -> Option<(f64, &str)> {
    let t = s.trim();
    let (num, unit) = t
        .find(|c: char| c.is_ascii_alphabetic())
        .map_or((t, ""), |i| (&t[..i], &t[i..]));
    let n: f64 = num.trim().parse().ok()?;
    (n.is_finite() && n >= 0.0).then_some((n, unit))
}

/// Parses a size like `500M`, `20G`, `1.5T` or a plain number of bytes.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let (n, unit) =
        number_and_unit(s).ok_or_else(|| format!("{s:?} is not a size (like 500M or 20G)"))?;
    let mult = match unit
        .to_ascii_uppercase()
        .trim_end_matches("IB")
        .trim_end_matches('B')
    {
        "" => 1u64,
        "K" => 1 << 10,
        "M" => 1 << 20,
        "G" => 1 << 30,
        "T" => 1 << 40,
        _ => return Err(format!("{s:?}: unknown unit (use K, M, G or T)")),
    };
    Ok((n * mult as f64) as u64)
}

/// A byte count in binary units: `512 B`, `1.5 KiB`, `2.0 GiB`.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

/// A rate in the same binary units: `12.5 MiB/s`.
pub fn human_rate(bytes_per_sec: f64) -> String {
    let n = if bytes_per_sec.is_finite() && bytes_per_sec > 0.0 {
        bytes_per_sec.round() as u64
    } else {
        0
    };
    format!("{}/s", human_bytes(n))
}

/// `n` with its noun, singular for one: `1 file`, `2 files`.
pub fn count(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// `1 file`, `3 files`.
pub fn files(n: u64) -> String {
    count(n, "file", "files")
}

/// The longest duration a flag accepts: a day (longer is surely a mistake).
pub const MAX_DURATION: Duration = Duration::from_secs(24 * 3600);

/// Parses a duration like `30s`, `5m`, `1h`, `250ms`, or a plain number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let (n, unit) = number_and_unit(s)
        .ok_or_else(|| format!("{s:?} is not a duration (like 30s, 5m or 1h)"))?;
    let secs = match unit {
        "" | "s" => n,
        "ms" => n / 1000.0,
        "m" | "min" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(format!("{s:?}: unknown unit (use ms, s, m or h)")),
    };
    if secs > MAX_DURATION.as_secs_f64() {
        return Err(format!("{s:?} is too long (at most 24h)"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// A time limit on waiting for the server: a duration (see [`parse_duration`]) of at least
/// one second (a shorter one would fail every request before it could be answered).
pub fn parse_timeout(s: &str) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    if d < Duration::from_secs(1) {
        return Err(format!("{s:?} is too short for a timeout (at least 1s)"));
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("500M").unwrap(), 500 << 20);
        assert_eq!(parse_size("20G").unwrap(), 20 << 30);
        assert_eq!(parse_size("2GiB").unwrap(), 2 << 30);
        assert_eq!(parse_size("1234").unwrap(), 1234);
        assert!(parse_size("lots").is_err() && parse_size("5Q").is_err());
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(3 << 30), "3.0 GiB");
        assert_eq!(human_rate(1.5 * 1024.0 * 1024.0), "1.5 MiB/s");
        assert_eq!(human_rate(f64::NAN), "0 B/s");
        assert_eq!(
            (files(1), files(0), files(2)),
            ("1 file".into(), "0 files".into(), "2 files".into())
        );
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("5m").unwrap(), Duration::from_secs(300));
        assert_eq!(parse_duration("1h").unwrap(), Duration::from_secs(3600));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        for bad in ["", "soon", "-1", "5d", "18446744073709551615", "NaN", "inf"] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
            assert!(parse_timeout(bad).is_err(), "{bad:?}");
        }
        assert_eq!(parse_timeout("1s").unwrap(), Duration::from_secs(1));
        for short in ["0", "0s", "999ms"] {
            let e = parse_timeout(short).unwrap_err();
            assert!(e.contains("at least 1s"), "{e}");
        }
    }
}
