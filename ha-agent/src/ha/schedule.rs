//! Scheduled actions: the ISO-8601 timestamps Patroni and `patronictl` write (read without
//! a date crate), when a scheduled time is due, and the scheduled restart an agent keeps.

use std::time::{Duration, SystemTime};

use serde_json::{Map, Value};

use crate::civil::{days_from_civil, days_in_month, python_isoformat};

/// Where a scheduled time stands against the clock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Window {
    /// Still this far ahead: wait (the loop wakes up at the time).
    Ahead(Duration),
    /// Due: at the time, or past it by at most 1.5 `loop_wait` (whole seconds).
    Due,
    /// Further past: the loop ran too late to honour it, so it is dropped.
    Stale,
}

/// Patroni's `should_run_scheduled_action` window, except that an action is due at its
/// time, not up to `loop_wait` before it: Patroni sleeps in its loop until the time, this
/// agent wakes its loop up at the time instead.
#[must_use]
pub fn window(now: SystemTime, at: SystemTime, loop_wait: Duration) -> Window {
    match at.duration_since(now) {
        Ok(ahead) if !ahead.is_zero() => Window::Ahead(ahead),
        Ok(_) => Window::Due,
        Err(past) => {
            // Patroni's `int(loop_wait * 1.5)`.
            let grace = Duration::from_secs(loop_wait.as_secs() * 3 / 2);
            if past.duration() > grace {
                Window::Stale
            } else {
                Window::Due
            }
        }
    }
}

/// A restart asked for with `POST /restart {"schedule": ...}`. Like Patroni, the agent
/// keeps it in memory (a restarted agent forgets it) and publishes it in its member key.
#[derive(Clone, Debug, PartialEq)]
pub struct ScheduledRestart {
    /// When.
    pub at: SystemTime,
    /// The request's other fields (`role`, `postgres_version`, `restart_pending`, and
    /// `timeout` in seconds), checked again when the restart is due.
    pub filters: Map<String, Value>,
    /// `pg_postmaster_start_time()` when it was scheduled: a restart in between makes it
    /// moot.
    pub postmaster_start_time: Option<SystemTime>,
}

impl ScheduledRestart {
    /// The member key's `scheduled_restart`: the request with `schedule` in Python's
    /// `isoformat()` and `postmaster_start_time`, as Patroni's `touch_member` writes it.
    #[must_use]
    pub fn member_json(&self) -> Map<String, Value> {
        let mut json = self.api_json();
        json.insert(
            "postmaster_start_time".into(),
            self.postmaster_start_time
                .map(|t| python_isoformat(t, ' '))
                .into(),
        );
        json
    }

    /// `/patroni`'s `scheduled_restart`: the same without `postmaster_start_time`.
    #[must_use]
    pub fn api_json(&self) -> Map<String, Value> {
        let mut json = self.filters.clone();
        json.insert("schedule".into(), python_isoformat(self.at, 'T').into());
        json
    }
}

/// What a cycle does with a scheduled restart.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RestartStep {
    /// Not yet (or paused): keep it.
    Keep,
    /// Forget it, for this reason (logged).
    Drop(String),
    /// Restart now, if its filters still match, and forget it either way.
    Run,
}

/// Patroni's `evaluate_scheduled_restart`, for a cycle in which no long action runs:
/// a postmaster started since the restart was scheduled makes it moot; paused, nothing
/// runs; then [`window`] decides.
#[must_use]
pub fn evaluate_restart(
    restart: &ScheduledRestart,
    now: SystemTime,
    loop_wait: Duration,
    paused: bool,
    postmaster_start_time: Option<SystemTime>,
) -> RestartStep {
    if let (Some(then), Some(started)) = (restart.postmaster_start_time, postmaster_start_time)
        && then != started
    {
        return RestartStep::Drop(format!(
            "cancelling scheduled restart: postgres restart has already happened at {}",
            python_isoformat(started, ' ')
        ));
    }
    if paused {
        return RestartStep::Keep;
    }
    match window(now, restart.at, loop_wait) {
        Window::Ahead(_) => RestartStep::Keep,
        Window::Due => RestartStep::Run,
        Window::Stale => RestartStep::Drop(format!(
            "found a stale restart value, cleaning up: {}",
            python_isoformat(restart.at, 'T')
        )),
    }
}

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
    fn a_scheduled_time_is_due_from_its_time_until_one_and_a_half_loop_waits_after() {
        let at = unix(1_000);
        let loop_wait = Duration::from_secs(10);
        let cases = [
            (unix(900), Window::Ahead(Duration::from_secs(100))),
            (
                at - Duration::from_millis(1),
                Window::Ahead(Duration::from_millis(1)),
            ),
            (at, Window::Due),
            (unix(1_015), Window::Due),
            (unix(1_015) + Duration::from_millis(1), Window::Stale),
        ];
        for (now, expected) in cases {
            assert_eq!(window(now, at, loop_wait), expected, "{now:?}");
        }
    }

    #[test]
    fn a_scheduled_restart_runs_when_due_unless_paused_stale_or_already_restarted() {
        let started = unix(500);
        let restart = ScheduledRestart {
            at: unix(1_000),
            filters: Map::new(),
            postmaster_start_time: Some(started),
        };
        let loop_wait = Duration::from_secs(2);
        let step = |now, paused, postmaster| {
            evaluate_restart(&restart, unix(now), loop_wait, paused, postmaster)
        };
        assert_eq!(step(999, false, Some(started)), RestartStep::Keep);
        assert_eq!(step(1_000, false, Some(started)), RestartStep::Run);
        assert_eq!(
            step(1_000, true, Some(started)),
            RestartStep::Keep,
            "paused"
        );
        // PostgreSQL down (no start time): the restart still runs, as in Patroni.
        assert_eq!(step(1_001, false, None), RestartStep::Run);
        assert!(
            matches!(step(1_004, false, Some(started)), RestartStep::Drop(why) if why.contains("stale"))
        );
        assert!(
            matches!(step(999, true, Some(unix(900))), RestartStep::Drop(why) if why.contains("already happened")),
            "a restart in between cancels it even while paused"
        );
    }

    #[test]
    fn a_scheduled_restart_is_published_as_patroni_publishes_it() {
        let restart = ScheduledRestart {
            at: unix(1_727_179_200),
            filters: Map::from_iter([
                ("role".to_owned(), Value::from("replica")),
                ("timeout".to_owned(), Value::from(30)),
            ]),
            postmaster_start_time: Some(unix(1_727_000_000) + Duration::from_millis(250)),
        };
        assert_eq!(
            Value::Object(restart.member_json()),
            serde_json::json!({
                "schedule": "2024-09-24T12:00:00+00:00",
                "role": "replica",
                "timeout": 30,
                "postmaster_start_time": "2024-09-22 10:13:20.250000+00:00",
            })
        );
        assert_eq!(
            Value::Object(restart.api_json()),
            serde_json::json!({
                "schedule": "2024-09-24T12:00:00+00:00",
                "role": "replica",
                "timeout": 30,
            })
        );
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
