//! Wall-clock time in Moscow: a fixed UTC+03:00 offset (Russia has kept no daylight saving time
//! since 2014), so no time-zone database is needed; the `time` crate does the calendar and the
//! RFC 3339 formatting.

use time::format_description::well_known::Rfc3339;
use time::macros::{format_description, offset};
use time::{OffsetDateTime, UtcOffset};

/// Moscow's offset from UTC.
pub const MOSCOW_OFFSET: UtcOffset = offset!(+3);

/// The IANA name of the zone [`MOSCOW_OFFSET`] stands for.
pub const MOSCOW_TIMEZONE: &str = "Europe/Moscow";

/// A local time to the second, with its offset from UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LocalTime(OffsetDateTime);

impl LocalTime {
    /// The time `unix_seconds` after the epoch at `offset`; `None` outside the years 0 to 9999
    /// that RFC 3339 can write.
    pub fn from_unix(unix_seconds: i64, offset: UtcOffset) -> Option<LocalTime> {
        let t = OffsetDateTime::from_unix_timestamp(unix_seconds)
            .ok()?
            .to_offset(offset);
        (0..=9999).contains(&t.year()).then_some(LocalTime(t))
    }

    /// Now, in Moscow.
    pub fn moscow_now() -> LocalTime {
        let now = OffsetDateTime::now_utc().to_offset(MOSCOW_OFFSET);
        // Whole seconds: RFC 3339 output would otherwise carry the nanoseconds.
        LocalTime(now.replace_nanosecond(0).unwrap_or(now))
    }

    /// RFC 3339, e.g. `2026-05-04T12:34:56+03:00`.
    pub fn rfc3339(&self) -> String {
        self.format(&Rfc3339)
    }

    /// The offset as RFC 3339 writes it, e.g. `+03:00`.
    pub fn utc_offset(&self) -> String {
        self.format(format_description!(
            "[offset_hour sign:mandatory]:[offset_minute]"
        ))
    }

    /// Human form for the HTML page, e.g. `2026-05-04 12:34:56`.
    pub fn display(&self) -> String {
        self.format(format_description!(
            "[year]-[month]-[day] [hour]:[minute]:[second]"
        ))
    }

    fn format(&self, format: &(impl time::formatting::Formattable + ?Sized)) -> String {
        // Cannot fail: the year is within 0..=9999 (checked by the constructors; `now` is never
        // that far off) and the offsets used here are whole minutes.
        self.0.format(format).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(unix: i64, offset: UtcOffset) -> LocalTime {
        LocalTime::from_unix(unix, offset).unwrap()
    }

    #[test]
    fn known_instants() {
        // `date -u -d @0` and `date -u -d @1709251199` (a leap-year February) computed independently.
        assert_eq!(at(0, UtcOffset::UTC).rfc3339(), "1970-01-01T00:00:00Z");
        assert_eq!(
            at(1_709_251_199, UtcOffset::UTC).display(),
            "2024-02-29 23:59:59"
        );
        // 21:00 UTC is already the next day in Moscow.
        let t = at(1_735_678_800, MOSCOW_OFFSET);
        assert_eq!(t.rfc3339(), "2025-01-01T00:00:00+03:00");
        assert_eq!(t.utc_offset(), "+03:00");
        assert_eq!(at(-1, UtcOffset::UTC).display(), "1969-12-31 23:59:59");
        // `TZ=America/St_Johns date -d @0 --rfc-3339=seconds`: 1969-12-31 20:30:00-03:30.
        let st_johns = UtcOffset::from_hms(-3, -30, 0).unwrap();
        assert_eq!(at(0, st_johns).rfc3339(), "1969-12-31T20:30:00-03:30");
        assert!(LocalTime::from_unix(253_402_300_800, UtcOffset::UTC).is_none());
    }

    #[test]
    fn now_is_whole_seconds_in_moscow() {
        let now = LocalTime::moscow_now();
        let text = now.rfc3339();
        assert!(text.ends_with("+03:00") && !text.contains('.'), "{text}");
    }
}
