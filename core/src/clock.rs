//! The one place twofactor reads the wall clock, behind a trait so tests control time.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// A source of the current time, in whole seconds since the Unix epoch.
pub trait Clock {
    /// Seconds since 1970-01-01T00:00:00Z.
    fn now(&self) -> u64;
}

/// The system's real-time clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    #[allow(clippy::disallowed_methods)] // the single sanctioned read of the clock
    fn now(&self) -> u64 {
        // A clock set before 1970 reads as 0; every TOTP code then fails, which is closed.
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
    }
}

/// A clock that stands still until told to move; shared between threads in tests.
#[derive(Debug, Default)]
pub struct ManualClock(AtomicU64);

impl ManualClock {
    /// A clock reading `now`.
    pub fn new(now: u64) -> Self {
        Self(AtomicU64::new(now))
    }

    /// Sets the time.
    pub fn set(&self, now: u64) {
        self.0.store(now, Ordering::SeqCst);
    }

    /// Moves the time forward.
    pub fn advance(&self, seconds: u64) {
        self.0.fetch_add(seconds, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

impl<C: Clock + ?Sized> Clock for &C {
    fn now(&self) -> u64 {
        (**self).now()
    }
}

/// Formats Unix time as `YYYY-MM-DD HH:MM:SS UTC`, for messages and `explain`.
pub fn format_utc(secs: u64) -> String {
    let days = secs / 86_400;
    let rem = secs % 86_400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 of a civil date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// A point in time as a command line gives it, in Unix seconds: an age back from `now`
/// (`90s`, `30m`, `2h`, `7d`), a UTC date (`2026-12-01`), a UTC date and time
/// (`2026-12-01 14:30`, `2026-12-01T14:30:00`, with or without a trailing `Z`), or
/// Unix seconds (`@1700000000`).
pub fn parse_time(text: &str, now: u64) -> Result<u64, String> {
    let bad = || {
        format!(
            "{text:?} is not a time: use an age (30m, 2h, 7d), a UTC date (2026-12-01), \
             a UTC date and time (2026-12-01 14:30) or @UNIXSECONDS"
        )
    };
    let t = text.trim();
    if let Some(secs) = t.strip_prefix('@') {
        return secs.parse().map_err(|_| bad());
    }
    let age = t.char_indices().last().filter(|(i, c)| {
        c.is_ascii_alphabetic() && *i > 0 && t[..*i].bytes().all(|b| b.is_ascii_digit())
    });
    if let Some((i, unit)) = age {
        let n: u64 = t[..i].parse().map_err(|_| bad())?;
        let scale = match unit {
            's' => 1,
            'm' => 60,
            'h' => 3_600,
            'd' => 86_400,
            'w' => 604_800,
            _ => return Err(bad()),
        };
        return Ok(now.saturating_sub(n.saturating_mul(scale)));
    }
    let t = t.strip_suffix('Z').unwrap_or(t);
    let (date, time) = t
        .split_once(['T', ' '])
        .map_or((t, None), |(d, tm)| (d, Some(tm)));
    let num = |s: &str, lo: i64, hi: i64| {
        s.parse::<i64>()
            .ok()
            .filter(|n| (lo..=hi).contains(n) && s.bytes().all(|b| b.is_ascii_digit()))
            .ok_or_else(bad)
    };
    let d: Vec<&str> = date.split('-').collect();
    let [y, mo, da] = d.as_slice() else {
        return Err(bad());
    };
    let (y, mo, da) = (num(y, 1970, 9999)?, num(mo, 1, 12)?, num(da, 1, 31)?);
    let mut secs = days_from_civil(y, mo, da) * 86_400;
    if let Some(time) = time {
        let parts: Vec<&str> = time.split(':').collect();
        let (h, m, s) = match parts.as_slice() {
            [h, m] => (num(h, 0, 23)?, num(m, 0, 59)?, 0),
            [h, m, s] => (num(h, 0, 23)?, num(m, 0, 59)?, num(s, 0, 60)?),
            _ => return Err(bad()),
        };
        secs += h * 3_600 + m * 60 + s;
    }
    u64::try_from(secs).map_err(|_| bad())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_parse_as_ages_dates_and_unix_seconds() {
        let now = 1_234_567_890;
        assert_eq!(parse_time("30m", now), Ok(now - 1_800));
        assert_eq!(parse_time("2h", now), Ok(now - 7_200));
        assert_eq!(parse_time("7d", now), Ok(now - 604_800));
        assert_eq!(parse_time("@42", now), Ok(42));
        assert_eq!(parse_time("2009-02-13", now), Ok(1_234_483_200));
        assert_eq!(parse_time("2009-02-13 23:31:30", now), Ok(1_234_567_890));
        assert_eq!(parse_time("2009-02-13T23:31:30Z", now), Ok(1_234_567_890));
        assert_eq!(parse_time("2000-02-29 00:00", now), Ok(951_782_400));
        for bad in [
            "",
            "yesterday",
            "2009-13-01",
            "2009-02-13 25:00",
            "5y",
            "-3d",
            "2009-2",
        ] {
            assert!(parse_time(bad, now).is_err(), "{bad:?} was taken");
        }
        // Round trip with the formatter.
        assert_eq!(
            parse_time(&format_utc(4_102_444_799).replace(" UTC", ""), now),
            Ok(4_102_444_799)
        );
    }

    #[test]
    fn utc_formatting() {
        assert_eq!(format_utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(format_utc(951_782_400), "2000-02-29 00:00:00 UTC");
        assert_eq!(format_utc(1_234_567_890), "2009-02-13 23:31:30 UTC");
        assert_eq!(format_utc(4_102_444_799), "2099-12-31 23:59:59 UTC");
    }

    #[test]
    fn manual_clock_moves_only_when_told() {
        let clock = ManualClock::new(100);
        assert_eq!(clock.now(), 100);
        clock.advance(30);
        assert_eq!(clock.now(), 130);
        clock.set(7);
        assert_eq!(clock.now(), 7);
    }

    #[test]
    fn system_clock_is_after_2020() {
        assert!(SystemClock.now() > 1_577_836_800);
    }
}
