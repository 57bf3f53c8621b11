//! Time as every Bulwark program counts it: whole seconds since 1970-01-01 00:00:00 UTC
//! (`UnixTime`), whole days since that date (`Days`), and the civil (proleptic Gregorian)
//! date of a day. The civil-date algorithm and "now" live here once; the root service links
//! this crate, so it has no dependencies.
//!
//! Formats (what the programs print, parsed by scripts and tests, so they never change):
//! - [`UnixTime::utc`]: `2026-11-18 11:06:40 UTC` (clients, reports);
//! - [`UnixTime::utc_minutes`]: `2026-11-18 11:06 UTC` (space report);
//! - [`UnixTime::zulu`]: `2026-11-18 11:06:40Z` (the immutability service's status);
//! - [`CivilDate`]'s `Display`: `2026-11-18`;
//! - [`human_bytes`]: sizes in binary units, `512 B`, `1.5 KiB`, `20.0 GiB` (the other unit
//!   every program prints, kept beside the times so that it too exists once).

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Bytes in binary units: `512 B`, `1.5 KiB`, `20.0 GiB` (B, KiB, MiB, GiB, TiB, PiB).
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// Seconds in a day (no leap seconds: unix time has none).
pub const SECS_PER_DAY: i64 = 86_400;

/// An instant: whole seconds since the unix epoch, UTC; negative before 1970.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct UnixTime(pub i64);

/// Whole days: a count of days, or a day number since 1970-01-01 (day 0).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Days(pub i64);

/// A date of the proleptic Gregorian calendar.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CivilDate {
    pub year: i64,
    /// 1 to 12.
    pub month: u32,
    /// 1 to 31.
    pub day: u32,
}

impl UnixTime {
    /// 1970-01-01 00:00:00 UTC.
    pub const EPOCH: UnixTime = UnixTime(0);

    /// This host's wall clock. A clock set before 1970 reads as the epoch.
    pub fn now() -> UnixTime {
        Self::now_precise().0
    }

    /// This host's wall clock with the nanoseconds of its current second.
    pub fn now_precise() -> (UnixTime, u32) {
        let d = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        (UnixTime::from_duration(d), d.subsec_nanos())
    }

    /// A file time or other `SystemTime`; times before 1970 read as the epoch.
    pub fn from_system(t: SystemTime) -> UnixTime {
        UnixTime::from_duration(t.duration_since(UNIX_EPOCH).unwrap_or_default())
    }

    fn from_duration(d: Duration) -> UnixTime {
        UnixTime(i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
    }

    /// The seconds since the epoch.
    pub fn secs(self) -> i64 {
        self.0
    }

    /// The day holding this instant.
    pub fn day(self) -> Days {
        Days(self.0.div_euclid(SECS_PER_DAY))
    }

    /// Seconds since midnight UTC, 0 to 86 399.
    pub fn secs_of_day(self) -> i64 {
        self.0.rem_euclid(SECS_PER_DAY)
    }

    /// The civil date of this instant, UTC.
    pub fn date(self) -> CivilDate {
        self.day().date()
    }

    /// `YYYY-MM-DD HH:MM:SS UTC`.
    pub fn utc(self) -> String {
        let (h, m, s) = self.hms();
        format!("{} {h:02}:{m:02}:{s:02} UTC", self.date())
    }

    /// `YYYY-MM-DD HH:MM UTC`.
    pub fn utc_minutes(self) -> String {
        let (h, m, _) = self.hms();
        format!("{} {h:02}:{m:02} UTC", self.date())
    }

    /// `YYYY-MM-DD HH:MM:SSZ`.
    pub fn zulu(self) -> String {
        let (h, m, s) = self.hms();
        format!("{} {h:02}:{m:02}:{s:02}Z", self.date())
    }

    fn hms(self) -> (i64, i64, i64) {
        let t = self.secs_of_day();
        (t / 3600, t % 3600 / 60, t % 60)
    }
}

impl std::ops::Add<Days> for UnixTime {
    type Output = UnixTime;
    fn add(self, d: Days) -> UnixTime {
        UnixTime(self.0 + d.secs())
    }
}

impl Days {
    /// The length in seconds.
    pub fn secs(self) -> i64 {
        self.0 * SECS_PER_DAY
    }

    /// Midnight UTC at the start of this day number.
    pub fn start(self) -> UnixTime {
        UnixTime(self.secs())
    }

    /// The civil date of this day number (days since 1970-01-01).
    pub fn date(self) -> CivilDate {
        // Howard Hinnant's civil_from_days: count from 0000-03-01 in 400-year eras of
        // 146 097 days, so the leap day ends each year of the count.
        let z = self.0 + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z - era * 146_097;
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
        let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
        CivilDate {
            year: yoe + era * 400 + i64::from(month <= 2),
            month,
            day,
        }
    }
}

impl fmt::Display for CivilDate {
    /// `YYYY-MM-DD`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}-{:02}-{:02}", self.year, self.month, self.day)
    }
}

/// Unix seconds as `YYYY-MM-DD HH:MM:SS UTC`.
pub fn utc(secs: i64) -> String {
    UnixTime(secs).utc()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn date(y: i64, m: u32, d: u32) -> CivilDate {
        CivilDate {
            year: y,
            month: m,
            day: d,
        }
    }

    #[test]
    fn known_instants_format_in_every_style() {
        assert_eq!(utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc(951_782_400), "2000-02-29 00:00:00 UTC");
        assert_eq!(utc(1_795_000_000), "2026-11-18 11:06:40 UTC");
        assert_eq!(UnixTime(951_782_400).utc_minutes(), "2000-02-29 00:00 UTC");
        assert_eq!(
            UnixTime(1_795_000_000).utc_minutes(),
            "2026-11-18 11:06 UTC"
        );
        assert_eq!(UnixTime(1_795_000_000).zulu(), "2026-11-18 11:06:40Z");
        assert_eq!(UnixTime(86_399).zulu(), "1970-01-01 23:59:59Z");
        assert_eq!(UnixTime(1_795_000_000).date().to_string(), "2026-11-18");
    }

    #[test]
    fn negative_instants_count_back_from_1970() {
        assert_eq!(utc(-1), "1969-12-31 23:59:59 UTC");
        assert_eq!(UnixTime(-1).day(), Days(-1));
        assert_eq!(UnixTime(-86_400).day(), Days(-1));
        assert_eq!(UnixTime(-86_401).day(), Days(-2));
        // 1900 is not a leap year: 1900-02-28 is followed by 1900-03-01.
        assert_eq!(utc(-2_203_977_600), "1900-02-28 00:00:00 UTC");
        assert_eq!(utc(-2_203_891_200), "1900-03-01 00:00:00 UTC");
        assert_eq!(Days(-25_509).date(), date(1900, 2, 28));
    }

    #[test]
    fn leap_days_follow_the_gregorian_rules() {
        // 2000 is a leap year (divisible by 400), 2100 is not (by 100), 2400 is.
        assert_eq!(utc(951_868_799), "2000-02-29 23:59:59 UTC");
        assert_eq!(utc(4_107_456_000), "2100-02-28 00:00:00 UTC");
        assert_eq!(utc(4_107_542_400), "2100-03-01 00:00:00 UTC");
        assert_eq!(utc(13_574_476_800), "2400-02-28 00:00:00 UTC");
        assert_eq!(utc(13_574_563_200), "2400-02-29 00:00:00 UTC");
        assert_eq!(utc(13_574_649_600), "2400-03-01 00:00:00 UTC");
        assert_eq!(utc(1_709_164_800), "2024-02-29 00:00:00 UTC");
        assert_eq!(utc(1_767_225_599), "2025-12-31 23:59:59 UTC");
    }

    #[test]
    fn every_day_follows_the_one_before() {
        // From 1600 to 2498 the date advances by exactly one calendar day per day number.
        let leap = |y: i64| y % 4 == 0 && (y % 100 != 0 || y % 400 == 0);
        let month_len = |y: i64, m: u32| match m {
            2 if leap(y) => 29,
            2 => 28,
            4 | 6 | 9 | 11 => 30,
            _ => 31,
        };
        let mut expect = date(1600, 1, 1);
        for n in -135_140..193_000 {
            assert_eq!(Days(n).date(), expect, "day {n}");
            expect = if expect.day < month_len(expect.year, expect.month) {
                date(expect.year, expect.month, expect.day + 1)
            } else if expect.month < 12 {
                date(expect.year, expect.month + 1, 1)
            } else {
                date(expect.year + 1, 1, 1)
            };
        }
    }

    #[test]
    fn days_and_instants_convert_both_ways() {
        assert_eq!(Days(7).secs(), 604_800);
        assert_eq!(Days(20_000).start().day(), Days(20_000));
        assert_eq!(UnixTime(100) + Days(1), UnixTime(86_500));
        assert_eq!(UnixTime(90_000).secs_of_day(), 3_600);
        assert_eq!(UnixTime(-3_600).secs_of_day(), 82_800);
        let t = UnixTime::from_system(UNIX_EPOCH + Duration::from_secs(42));
        assert_eq!(t, UnixTime(42));
        assert!(UnixTime::now() > UnixTime(1_700_000_000));
    }
}
