//! The agent's log lines on stderr, in Patroni's shape
//! (`2024-09-24 12:00:00,123 INFO: no action. I am (pg0), the leader with the lock`), from
//! `tracing` events; spans are not used.

use std::fmt::Write as _;
use std::io::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Metadata, Subscriber};

/// Installs the stderr logger for events at `level` and above. A second call does
/// nothing.
pub fn init(level: Level) {
    let _ = tracing::subscriber::set_global_default(StderrLog { level });
}

/// The level named by Patroni's `log.level` (`DEBUG`, `INFO`, `WARNING`, `ERROR`,
/// `CRITICAL`), case-insensitive.
#[must_use]
pub fn parse_level(text: &str) -> Option<Level> {
    match text.to_ascii_uppercase().as_str() {
        "TRACE" => Some(Level::TRACE),
        "DEBUG" => Some(Level::DEBUG),
        "INFO" => Some(Level::INFO),
        "WARN" | "WARNING" => Some(Level::WARN),
        "ERROR" | "CRITICAL" | "FATAL" => Some(Level::ERROR),
        _ => None,
    }
}

struct StderrLog {
    level: Level,
}

impl Subscriber for StderrLog {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        // Only our own crates: the clients' internals (h2, tonic) are noise at INFO.
        *metadata.level() <= self.level
            && ["ha_agent", "dcs_"]
                .iter()
                .any(|prefix| metadata.target().starts_with(prefix))
    }

    fn new_span(&self, _: &Attributes<'_>) -> Id {
        Id::from_u64(1)
    }

    fn record(&self, _: &Id, _: &Record<'_>) {}

    fn record_follows_from(&self, _: &Id, _: &Id) {}

    fn event(&self, event: &Event<'_>) {
        let mut line = String::with_capacity(160);
        line.push_str(&timestamp(SystemTime::now()));
        let level = match *event.metadata().level() {
            Level::ERROR => "ERROR",
            Level::WARN => "WARNING",
            Level::INFO => "INFO",
            Level::DEBUG => "DEBUG",
            Level::TRACE => "TRACE",
        };
        let _ = write!(line, " {level}: ");
        event.record(&mut Fields(&mut line));
        line.push('\n');
        // One write per line, so lines of concurrent tasks do not interleave.
        let _ = std::io::stderr().lock().write_all(line.as_bytes());
    }

    fn enter(&self, _: &Id) {}

    fn exit(&self, _: &Id) {}
}

struct Fields<'a>(&'a mut String);

impl Visit for Fields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.0.push_str(value);
        } else {
            let _ = write!(self.0, " {}={value}", field.name());
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.0, "{value:?}");
        } else {
            let _ = write!(self.0, " {}={value:?}", field.name());
        }
    }
}

/// `YYYY-MM-DD HH:MM:SS,mmm` in UTC, Python logging's default shape.
fn timestamp(now: SystemTime) -> String {
    let since = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    let seconds = i64::try_from(since.as_secs()).unwrap_or(i64::MAX);
    format!(
        "{},{:03}",
        crate::civil::format_utc(seconds, ' '),
        since.subsec_millis()
    )
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn timestamps_are_utc_in_python_logging_shape() {
        let at = UNIX_EPOCH + Duration::from_millis(1_727_179_200_250);
        assert_eq!(timestamp(at), "2024-09-24 12:00:00,250");
        assert_eq!(timestamp(UNIX_EPOCH), "1970-01-01 00:00:00,000");
        let leap = UNIX_EPOCH + Duration::from_secs(1_709_164_800 + 86_399);
        assert_eq!(timestamp(leap), "2024-02-29 23:59:59,000");
    }
}
