//! Wall-clock text: patronictl's timestamps and `--scheduled` times.
//!
//! The agent has no time-zone database, so a time without an offset is accepted only
//! when the local zone is UTC (patronictl would read it in the local zone); elsewhere the
//! user is asked to give the offset, rather than scheduling at a surprising hour.

use std::fmt::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::civil::{days_from_civil, days_in_month, format_utc};

/// A point in time with the UTC offset it was given in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Scheduled {
    /// Seconds since the Unix epoch.
    epoch: i64,
    /// Microseconds within the second.
    micros: u32,
    /// The offset it was written with, in minutes east of UTC.
    offset_minutes: i32,
}

impl Scheduled {
    /// Reads an ISO 8601 time: `YYYY-MM-DD[T| ]HH:MM[:SS[.ffffff]]` with `Z`, `±HH`,
    /// `±HHMM` or `±HH:MM`, or without an offset when `local_offset` (minutes) is known.
    pub(crate) fn parse(text: &str, local_offset: Option<i32>) -> Result<Self, String> {
        let bad = || {
            format!(
                "Unable to parse scheduled timestamp ({text}). It should be in an unambiguous \
                 format (e.g. ISO 8601)"
            )
        };
        let text = text.trim();
        let (date, rest) = text.split_at_checked(10).ok_or_else(bad)?;
        let rest = rest.strip_prefix(['T', 't', ' ']).ok_or_else(bad)?;
        let [year, month, day] = numbers(date, '-').ok_or_else(bad)?;
        // The offset starts at the first `Z`, `+` or `-` after the time.
        let (clock, zone) = match rest.find(['Z', 'z', '+', '-']) {
            Some(at) => (&rest[..at], Some(&rest[at..])),
            None => (rest, None),
        };
        let (clock, fraction) = clock.trim().split_once('.').unwrap_or((clock.trim(), ""));
        let mut parts = clock.split(':');
        let hour = number(parts.next()).ok_or_else(bad)?;
        let minute = number(parts.next()).ok_or_else(bad)?;
        let second = match parts.next() {
            Some(s) => number(Some(s)).ok_or_else(bad)?,
            None => 0,
        };
        if parts.next().is_some()
            || !(1..=12).contains(&month)
            || day < 1
            || i64::from(day) > days_in_month(i64::from(year), i64::from(month))
            || hour > 23
            || minute > 59
            || second > 59
            || fraction.len() > 6
            || !fraction.bytes().all(|b| b.is_ascii_digit())
        {
            return Err(bad());
        }
        let micros = if fraction.is_empty() {
            0
        } else {
            format!("{fraction:0<6}").parse().map_err(|_| bad())?
        };
        let offset_minutes = match zone.map(str::trim) {
            Some("Z" | "z") => 0,
            Some(zone) => {
                let sign = if zone.starts_with('-') { -1 } else { 1 };
                let digits: String = zone[1..].chars().filter(|c| *c != ':').collect();
                if !matches!(digits.len(), 2 | 4) || !digits.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(bad());
                }
                let hours: i32 = digits[..2].parse().map_err(|_| bad())?;
                let minutes: i32 = digits
                    .get(2..)
                    .filter(|m| !m.is_empty())
                    .unwrap_or("0")
                    .parse()
                    .map_err(|_| bad())?;
                if hours > 23 || minutes > 59 {
                    return Err(bad());
                }
                sign * (hours * 60 + minutes)
            }
            None => local_offset.ok_or_else(|| {
                format!(
                    "Scheduled timestamp {text} has no UTC offset and the local time zone is \
                     not UTC; add one (e.g. {text}+02:00 or {text}Z)"
                )
            })?,
        };
        let local = days_from_civil(i64::from(year), i64::from(month), i64::from(day)) * 86_400
            + i64::from(hour) * 3600
            + i64::from(minute) * 60
            + i64::from(second);
        Ok(Self {
            epoch: local - i64::from(offset_minutes) * 60,
            micros,
            offset_minutes,
        })
    }

    /// Python's `datetime.isoformat()`: `2030-01-01T10:00:00+02:00`, microseconds only
    /// when not zero.
    pub(crate) fn iso(&self) -> String {
        let local = self.epoch + i64::from(self.offset_minutes) * 60;
        let mut text = format_utc(local, 'T');
        if self.micros != 0 {
            write!(text, ".{:06}", self.micros).expect("writing to a String cannot fail");
        }
        let sign = if self.offset_minutes < 0 { '-' } else { '+' };
        let offset = self.offset_minutes.unsigned_abs();
        write!(text, "{sign}{:02}:{:02}", offset / 60, offset % 60)
            .expect("writing to a String cannot fail");
        text
    }
}

fn number(text: Option<&str>) -> Option<u32> {
    let text = text?;
    (!text.is_empty() && text.len() <= 4 && text.bytes().all(|b| b.is_ascii_digit()))
        .then(|| text.parse().ok())
        .flatten()
}

fn numbers(text: &str, separator: char) -> Option<[u32; 3]> {
    let mut parts = text.split(separator);
    let result = [
        number(parts.next())?,
        number(parts.next())?,
        number(parts.next())?,
    ];
    parts.next().is_none().then_some(result)
}

/// patronictl's `timestamp()`: `2024-09-24 12:00:00.12345` (five fractional digits), or
/// without the fraction when `fraction` is false. UTC (see the module docs).
pub(crate) fn timestamp(now: SystemTime, fraction: bool) -> String {
    let since = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    let seconds = i64::try_from(since.as_secs()).unwrap_or(i64::MAX);
    let mut text = format_utc(seconds, ' ');
    if fraction {
        write!(text, ".{:05}", since.subsec_micros() / 10)
            .expect("writing to a String cannot fail");
    }
    text
}

/// The local UTC offset in minutes when the local zone is known to be UTC, else `None`.
pub(crate) fn local_offset_if_utc() -> Option<i32> {
    const UTC_NAMES: [&str; 7] = [
        "UTC",
        "Etc/UTC",
        "UCT",
        "Etc/UCT",
        "Universal",
        "Zulu",
        "GMT",
    ];
    let utc = |name: &str| {
        let name = name.trim().trim_start_matches(':');
        UTC_NAMES.contains(&name)
            || name == "UTC0"
            || name == "GMT0"
            || name.ends_with("/UTC")
            || name.ends_with("/Etc/UTC")
            || name.ends_with("/Universal")
            || name.ends_with("/Zulu")
    };
    if let Ok(tz) = std::env::var("TZ") {
        return (tz.is_empty() || utc(&tz)).then_some(0);
    }
    match std::fs::read_link("/etc/localtime") {
        Ok(target) => utc(&target.to_string_lossy()).then_some(0),
        // glibc uses UTC when the file is missing.
        Err(_) if !std::path::Path::new("/etc/localtime").exists() => Some(0),
        Err(_) => std::fs::read_to_string("/etc/timezone")
            .ok()
            .filter(|name| utc(name))
            .map(|_| 0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn scheduled_times_read_like_dateutil_and_print_like_isoformat() {
        let cases = [
            ("2030-01-01T10:00", "2030-01-01T10:00:00+00:00"),
            ("2030-01-01 10:00:30Z", "2030-01-01T10:00:30+00:00"),
            ("2030-01-01T10:00:00+02:00", "2030-01-01T10:00:00+02:00"),
            (
                "2030-01-01T10:00:00.5-0130",
                "2030-01-01T10:00:00.500000-01:30",
            ),
            ("2024-02-29T23:59:59+05", "2024-02-29T23:59:59+05:00"),
        ];
        for (text, iso) in cases {
            assert_eq!(
                Scheduled::parse(text, Some(0)).unwrap().iso(),
                iso,
                "{text}"
            );
        }
        for bad in [
            "tomorrow",
            "2030-13-01T10:00",
            "2023-02-29T10:00",
            "2030-01-01T25:00",
            "2030-01-01",
            "2030-01-01T10:00+2",
        ] {
            assert!(Scheduled::parse(bad, Some(0)).is_err(), "{bad}");
        }
        let naive = Scheduled::parse("2030-01-01T10:00", None).unwrap_err();
        assert!(naive.contains("no UTC offset"), "{naive}");
    }

    #[test]
    fn the_same_instant_in_two_zones_is_equal_in_epoch() {
        let a = Scheduled::parse("2030-01-01T10:00:00+02:00", None).unwrap();
        let b = Scheduled::parse("2030-01-01T08:00:00Z", None).unwrap();
        assert_eq!(a.epoch, b.epoch);
        assert_eq!(a.epoch, 1_893_484_800);
    }

    #[test]
    fn timestamps_have_patronictls_shape() {
        let now = UNIX_EPOCH + Duration::from_micros(1_727_179_200_123_456);
        assert_eq!(timestamp(now, true), "2024-09-24 12:00:00.12345");
        assert_eq!(timestamp(now, false), "2024-09-24 12:00:00");
    }
}
