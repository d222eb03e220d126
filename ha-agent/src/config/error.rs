//! What can be wrong with a configuration, and what is merely worth saying.

use std::fmt;
use std::path::PathBuf;

/// Why a configuration was refused. Every variant names the place of the problem as a
/// dotted YAML path (`postgresql.listen`), so one line tells the operator what to fix.
///
/// Refusal is reserved for what the agent cannot run safely with; a key it merely does not
/// use is a [`Warning`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The text is not YAML (or the environment's `PATRONI_CONFIGURATION` is not).
    #[error("not valid YAML: {message}")]
    Syntax {
        /// The parser's message, with line and column.
        message: String,
    },
    /// A required key is absent (or empty).
    #[error("{path}: required but not set")]
    Missing {
        /// Where it should be.
        path: String,
    },
    /// A value has the wrong type or form: `postgresql.listen: "abc" is not host:port`.
    #[error("{path}: {value} is not {expected}")]
    Invalid {
        /// Where it is.
        path: String,
        /// The value as written (JSON-quoted strings; secrets are never quoted back).
        value: String,
        /// What was expected, phrased to follow "is not".
        expected: String,
    },
    /// A key the agent recognises but does not implement, where running without it would
    /// be unsafe or would silently do something else than asked.
    #[error("{path}: not supported yet: {reason}")]
    Unsupported {
        /// The key.
        path: String,
        /// What ignoring it would break, and what to do instead.
        reason: String,
    },
    /// No DCS section (`etcd3` or `zookeeper`).
    #[error("no DCS configured: add an etcd3 or a zookeeper section")]
    NoDcs,
    /// More than one DCS section: which one leads would be ambiguous.
    #[error("{} are all configured: keep exactly one DCS section", sections.join(", "))]
    SeveralDcs {
        /// The sections found.
        sections: Vec<String>,
    },
    /// The DCS backend refused its section (bad hosts, half credentials, ...).
    #[error("{}", prefixed(path, message))]
    Dcs {
        /// The section (`etcd3`, `zookeeper`).
        path: String,
        /// The backend's explanation.
        message: String,
    },
}

impl ConfigError {
    /// The dotted YAML path of the problem, when there is one.
    #[must_use]
    pub fn path(&self) -> Option<&str> {
        match self {
            Self::Missing { path }
            | Self::Invalid { path, .. }
            | Self::Unsupported { path, .. }
            | Self::Dcs { path, .. } => Some(path),
            Self::Io { .. } | Self::Syntax { .. } | Self::NoDcs | Self::SeveralDcs { .. } => None,
        }
    }
}

/// The backend's messages usually start with the key (`etcd3.hosts entry ...`).
fn prefixed(path: &str, message: &str) -> String {
    if message.starts_with(path) {
        message.to_owned()
    } else {
        format!("{path}: {message}")
    }
}

/// What kind of thing a [`Warning`] reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum WarningKind {
    /// A key neither Patroni nor the agent knows: probably a typo.
    UnknownKey,
    /// A Patroni key the agent does not implement and safely ignores.
    Ignored,
    /// A value the agent changed as Patroni would (timing rules, minimums, conflicts).
    Adjusted,
    /// A `PATRONI_*` environment variable that maps to nothing.
    UnusedEnvironment,
}

/// A remark about a configuration that was nevertheless accepted; log each at startup.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Warning {
    /// What kind of remark.
    pub kind: WarningKind,
    /// The dotted YAML path (or the environment variable's name).
    pub path: String,
    /// The remark.
    pub message: String,
}

impl Warning {
    pub(crate) fn new(
        kind: WarningKind,
        path: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Self {
            kind,
            path: path.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}
