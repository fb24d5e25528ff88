//! Times for people: the registry stores RFC 3339 UTC (and `--json` prints it as stored);
//! tables show local time with the age beside it (`2026-11-28 12:22 (5 minutes ago)`).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// `2025-01-02T03:04:05.123Z` -> `2025-01-02 04:04 (3 days ago)` in local time; a time that
/// does not parse is shown as it is.
pub fn when(t: &str) -> String {
    match tantra_store::parse_rfc3339(t) {
        Some(st) => format!("{} ({})", local(st), age(SystemTime::now(), st)),
        None => t.to_string(),
    }
}

/// How long before `now` `t` was: `just now`, `5 minutes ago`, `1 day ago`, `in the future`.
pub fn age(now: SystemTime, t: SystemTime) -> String {
    let Ok(d) = now.duration_since(t) else {
        return "in the future".into();
    };
    let s = d.as_secs();
    let (n, unit) = match s {
        0..=59 => return "just now".into(),
        60..=3599 => (s / 60, "minute"),
        3600..=86_399 => (s / 3600, "hour"),
        86_400..=2_591_999 => (s / 86_400, "day"),
        2_592_000..=31_535_999 => (s / 2_592_000, "month"),
        _ => (s / 31_536_000, "year"),
    };
    format!("{n} {unit}{} ago", if n == 1 { "" } else { "s" })
}

/// `t` as `YYYY-MM-DD HH:MM` in the local time zone (UTC where it cannot be known).
pub fn local(t: SystemTime) -> String {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs();
    let offset = local_offset(secs);
    let shifted = secs.saturating_add_signed(offset);
    let utc = tantra_store::format_rfc3339(UNIX_EPOCH + Duration::from_secs(shifted));
    // `YYYY-MM-DDTHH:MM:SS...` -> `YYYY-MM-DD HH:MM`.
    match utc.get(..16) {
        Some(s) => s.replacen('T', " ", 1),
        None => utc,
    }
}

/// Seconds east of UTC of the local zone at `secs` after the epoch.
#[cfg(unix)]
fn local_offset(secs: u64) -> i64 {
    let Ok(t) = libc::time_t::try_from(secs) else {
        return 0;
    };
    // SAFETY: `localtime_r` writes only into `tm`, which lives on this stack frame, and reads
    // only `t`; both pointers are valid for the call.
    unsafe {
        let mut tm: libc::tm = std::mem::zeroed();
        if libc::localtime_r(&t, &mut tm).is_null() {
            return 0;
        }
        tm.tm_gmtoff
    }
}

#[cfg(not(unix))]
fn local_offset(_secs: u64) -> i64 {
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_read_as_words() {
        let t = UNIX_EPOCH + Duration::from_secs(1_000_000_000);
        let after = |s| t + Duration::from_secs(s);
        assert_eq!(age(after(5), t), "just now");
        assert_eq!(age(after(60), t), "1 minute ago");
        assert_eq!(age(after(7200), t), "2 hours ago");
        assert_eq!(age(after(86_400 * 3), t), "3 days ago");
        assert_eq!(age(after(86_400 * 400), t), "1 year ago");
        assert_eq!(age(t, after(10)), "in the future");
        assert_eq!(when("not a time"), "not a time");
        assert!(when("2025-01-02T03:04:05Z").starts_with("2025-01-0"));
    }
}
