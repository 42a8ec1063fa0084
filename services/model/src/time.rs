//! Time helpers: the wall clock in Unix ms, human durations for flags (`15s`, `24h`), and
//! readable timestamps for log lines.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The wall clock, Unix milliseconds.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Parses `1s`, `250ms`, `15m`, `24h`, `7d` (humantime syntax). Used as a clap value parser.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s.trim()).map_err(|e| format!("invalid duration {s:?}: {e}"))
}

/// Parses an RFC 3339 / ISO 8601 instant (`2021-03-01T00:00:00Z`, or a bare date
/// `2021-03-01` meaning midnight UTC) into Unix ms.
pub fn parse_instant_ms(s: &str) -> Result<i64, String> {
    let s = s.trim();
    let full = if s.len() == 10 {
        format!("{s}T00:00:00Z")
    } else {
        s.to_owned()
    };
    let t = humantime::parse_rfc3339_weak(full.trim_end_matches('Z'))
        .map_err(|e| format!("invalid instant {s:?} (want e.g. 2021-03-01T00:00:00Z): {e}"))?;
    Ok(t.duration_since(UNIX_EPOCH)
        .map_err(|_| format!("instant {s:?} is before 1970"))?
        .as_millis() as i64)
}

/// Formats Unix ms as RFC 3339 UTC with millisecond precision.
pub fn fmt_ms(ms: i64) -> String {
    if ms < 0 {
        return format!("{ms}ms");
    }
    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ms as u64)).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_instants() {
        assert_eq!(parse_duration("15s").unwrap(), Duration::from_secs(15));
        assert_eq!(parse_duration("24h").unwrap(), Duration::from_secs(86_400));
        assert!(parse_duration("fast").unwrap_err().contains("fast"));
        assert_eq!(parse_instant_ms("2021-03-01").unwrap(), 1_614_556_800_000);
        assert_eq!(
            parse_instant_ms("2021-03-01T00:01:00Z").unwrap(),
            1_614_556_860_000
        );
        assert!(parse_instant_ms("yesterday").is_err());
        assert_eq!(fmt_ms(1_614_556_800_000), "2021-03-01T00:00:00.000Z");
    }
}
