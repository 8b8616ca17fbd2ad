//! Wall-clock time in Moscow, formatted by hand: a fixed UTC+03:00 offset (Russia has kept no
//! daylight saving time since 2014), so no time-zone database or date crate is needed.

use std::time::{SystemTime, UNIX_EPOCH};

/// Moscow's offset from UTC in seconds.
pub const MOSCOW_OFFSET_SECONDS: i64 = 3 * 3600;

/// A broken-down local time and its offset from UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LocalTime {
    pub year: i64,
    pub month: u32,
    pub day: u32,
    pub hour: u32,
    pub minute: u32,
    pub second: u32,
    pub offset_seconds: i64,
}

impl LocalTime {
    /// The time `unix_seconds` after the epoch, shifted by `offset_seconds`.
    pub fn from_unix(unix_seconds: i64, offset_seconds: i64) -> LocalTime {
        let t = unix_seconds + offset_seconds;
        let days = t.div_euclid(86_400);
        let secs = t.rem_euclid(86_400) as u32;
        let (year, month, day) = civil_from_days(days);
        LocalTime {
            year,
            month,
            day,
            hour: secs / 3600,
            minute: secs / 60 % 60,
            second: secs % 60,
            offset_seconds,
        }
    }

    /// Now, in Moscow.
    pub fn moscow_now() -> LocalTime {
        let unix = match SystemTime::now().duration_since(UNIX_EPOCH) {
            Ok(d) => d.as_secs() as i64,
            Err(e) => -(e.duration().as_secs() as i64),
        };
        LocalTime::from_unix(unix, MOSCOW_OFFSET_SECONDS)
    }

    /// RFC 3339, e.g. `2026-05-04T12:34:56+03:00`.
    pub fn rfc3339(&self) -> String {
        format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}{}",
            self.year,
            self.month,
            self.day,
            self.hour,
            self.minute,
            self.second,
            self.utc_offset()
        )
    }

    /// The offset as RFC 3339 writes it, e.g. `+03:00`.
    pub fn utc_offset(&self) -> String {
        let sign = if self.offset_seconds < 0 { '-' } else { '+' };
        let minutes = self.offset_seconds.unsigned_abs() / 60;
        format!("{sign}{:02}:{:02}", minutes / 60, minutes % 60)
    }

    /// Human form for the HTML page, e.g. `2026-05-04 12:34:56`.
    pub fn display(&self) -> String {
        format!(
            "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
            self.year, self.month, self.day, self.hour, self.minute, self.second
        )
    }
}

/// Days since 1970-01-01 to a proleptic Gregorian (year, month, day), after Howard Hinnant's
/// public-domain `civil_from_days` algorithm.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_instants() {
        // `date -u -d @0` and `date -u -d @1709251199` (a leap-year February) computed independently.
        assert_eq!(
            LocalTime::from_unix(0, 0).rfc3339(),
            "1970-01-01T00:00:00+00:00"
        );
        assert_eq!(
            LocalTime::from_unix(1_709_251_199, 0).display(),
            "2024-02-29 23:59:59"
        );
        // 21:00 UTC is already the next day in Moscow.
        let t = LocalTime::from_unix(1_735_678_800, MOSCOW_OFFSET_SECONDS);
        assert_eq!(t.rfc3339(), "2025-01-01T00:00:00+03:00");
        assert_eq!(LocalTime::from_unix(-1, 0).display(), "1969-12-31 23:59:59");
        // `TZ=America/St_Johns date -d @0 --rfc-3339=seconds`: 1969-12-31 20:30:00-03:30.
        assert_eq!(
            LocalTime::from_unix(0, -(3 * 3600 + 1800)).rfc3339(),
            "1969-12-31T20:30:00-03:30"
        );
    }
}
