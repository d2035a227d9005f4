//! The one way the `ferry` command reads a length of time: a whole number and its unit
//! (`250ms`, `30s`, `5m`, `1h`). A bare number is refused rather than guessed at, since the
//! flags it replaces each had a unit of their own.

use std::time::Duration;

/// `250ms`, `30s`, `5m` or `1h`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("`{text}` has no unit: write e.g. {text}s, {text}ms or {text}m"))?;
    let (number, unit) = text.split_at(split);
    let n: u64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a duration: write e.g. 30s, 500ms or 5m"))?;
    let ms = match unit {
        "ms" => Some(n),
        "s" => n.checked_mul(1000),
        "m" => n.checked_mul(60_000),
        "h" => n.checked_mul(3_600_000),
        _ => {
            return Err(format!(
                "`{text}`: the unit must be ms, s, m or h (e.g. 30s, 500ms, 5m)"
            ))
        }
    };
    ms.map(Duration::from_millis)
        .ok_or_else(|| format!("`{text}` is too long"))
}

/// A duration that may be negative (`-200ms`), in milliseconds: an offset between clocks.
pub fn parse_offset_ms(text: &str) -> Result<i64, String> {
    let text = text.trim();
    let (sign, rest) = match text.strip_prefix('-') {
        Some(rest) => (-1, rest),
        None => (1, text),
    };
    let ms = i64::try_from(parse_duration(rest)?.as_millis())
        .map_err(|_| format!("`{text}` is too long"))?;
    Ok(sign * ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_each_unit() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_offset_ms("-200ms"), Ok(-200));
        assert_eq!(parse_offset_ms("2s"), Ok(2000));
    }

    #[test]
    fn refuses_what_it_would_have_to_guess() {
        for bad in [
            "30",
            "",
            "s",
            "1.5s",
            "30 sec",
            "5d",
            "-3s",
            "99999999999999999999h",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
        assert!(parse_duration("30").unwrap_err().contains("30s"));
        assert!(parse_offset_ms("--1s").is_err());
    }
}
