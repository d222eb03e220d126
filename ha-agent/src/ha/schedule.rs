//! `scheduled_at`: the ISO-8601 timestamps Patroni and `patronictl` write, read without a
//! date crate.

use std::time::{Duration, SystemTime};

use crate::civil::{days_from_civil, days_in_month};

/// Parses `YYYY-MM-DDTHH:MM:SS[.fraction](Z|±HH:MM|±HHMM)` (a space may replace the `T`,
/// as Python's `isoformat(' ')` writes) into a wall-clock instant.
///
/// `None` for anything else, including a time without a zone: Patroni cannot compare such
/// a value with its zone-aware clock either, and removes it as incorrect.
#[must_use]
pub fn parse_scheduled_at(text: &str) -> Option<SystemTime> {
    let text = text.trim();
    let bytes = text.as_bytes();
    let digits = |from: usize, len: usize| -> Option<i64> {
        let part = bytes.get(from..from + len)?;
        part.iter()
            .all(u8::is_ascii_digit)
            .then(|| part.iter().fold(0, |n, d| n * 10 + i64::from(d - b'0')))
    };
    let separator = |at: usize, allowed: &[u8]| bytes.get(at).is_some_and(|b| allowed.contains(b));
    let shape = [
        (4, b"-" as &[u8]),
        (7, b"-"),
        (10, b"Tt "),
        (13, b":"),
        (16, b":"),
    ];
    if !shape.iter().all(|(at, allowed)| separator(*at, allowed)) {
        return None;
    }
    let (year, month, day) = (digits(0, 4)?, digits(5, 2)?, digits(8, 2)?);
    let (hour, minute, second) = (digits(11, 2)?, digits(14, 2)?, digits(17, 2)?);
    if !(1..=12).contains(&month)
        || day < 1
        || day > days_in_month(year, month)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }

    let mut at = 19;
    let mut nanos = 0u32;
    if separator(at, b".,") {
        at += 1;
        let start = at;
        while bytes.get(at).is_some_and(u8::is_ascii_digit) {
            at += 1;
        }
        if at == start {
            return None;
        }
        // Nanosecond precision is all a SystemTime keeps; further digits are dropped.
        let fraction = &text[start..at.min(start + 9)];
        nanos = fraction.parse::<u32>().ok()? * 10u32.pow(9 - fraction.len() as u32);
    }

    let offset_seconds = match bytes.get(at)? {
        b'Z' | b'z' if at + 1 == bytes.len() => 0,
        sign @ (b'+' | b'-') => {
            let hours = digits(at + 1, 2)?;
            let minutes = match bytes.len() - at {
                6 if separator(at + 3, b":") => digits(at + 4, 2)?,
                5 => digits(at + 3, 2)?,
                3 => 0,
                _ => return None,
            };
            if hours > 23 || minutes > 59 {
                return None;
            }
            let offset = hours * 3600 + minutes * 60;
            if *sign == b'-' { -offset } else { offset }
        }
        _ => return None,
    };

    let seconds = days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second
        - offset_seconds;
    let whole = Duration::from_secs(seconds.unsigned_abs());
    let instant = if seconds >= 0 {
        SystemTime::UNIX_EPOCH.checked_add(whole)?
    } else {
        SystemTime::UNIX_EPOCH.checked_sub(whole)?
    };
    instant.checked_add(Duration::from_nanos(u64::from(nanos)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unix(seconds: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(seconds)
    }

    #[test]
    fn reads_the_forms_patroni_writes() {
        let cases = [
            ("1970-01-01T00:00:00+00:00", Some(unix(0))),
            ("2024-09-24T12:00:00+00:00", Some(unix(1_727_179_200))),
            ("2024-09-24T12:00:00Z", Some(unix(1_727_179_200))),
            ("2024-09-24 14:00:00+02:00", Some(unix(1_727_179_200))),
            ("2024-09-24T07:30:00-0430", Some(unix(1_727_179_200))),
            ("2024-09-24T12:00:00+00", Some(unix(1_727_179_200))),
            ("2024-02-29T00:00:00Z", Some(unix(1_709_164_800))),
            (
                "2024-09-24T12:00:00.250+00:00",
                Some(unix(1_727_179_200) + Duration::from_millis(250)),
            ),
        ];
        for (text, expected) in cases {
            assert_eq!(parse_scheduled_at(text), expected, "{text}");
        }
    }

    #[test]
    fn refuses_what_cannot_be_compared_with_the_clock() {
        for text in [
            "",
            "tomorrow",
            "2024-09-24T12:00:00",
            "2024-09-24",
            "2023-02-29T00:00:00Z",
            "2024-13-01T00:00:00Z",
            "2024-09-24T24:00:00Z",
            "2024-09-24T12:00:00+25:00",
            "2024-09-24T12:00:00Zjunk",
            "2024-09-24T12:00:00.Z",
        ] {
            assert_eq!(parse_scheduled_at(text), None, "{text:?}");
        }
    }
}
