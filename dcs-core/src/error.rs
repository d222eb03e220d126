//! The one error type of the contract, with variants a caller branches on.

use std::time::Duration;

/// Boxed source of a backend's own error, kept for logs.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// What went wrong in a DCS call.
///
/// Branch on the variant, not on the message. The two questions an HA loop asks are
/// "did I lose the leader lock for certain?" ([`Error::LeaseLost`]) and "may I retry and
/// keep my role until my lease deadline?" ([`Error::is_retryable`]). The backends map their
/// own codes into these variants one by one, so that an unreachable store is never reported
/// as a lost lock or the other way round (Patroni issues #3572 and #3403: confusing the two
/// demoted healthy primaries).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The leader lock is definitely not ours any more: the key is gone, held by someone
    /// else, or bound to another lease or holding than the one presented. Demote now.
    #[error("leader lease lost: {reason}")]
    LeaseLost {
        /// What the store showed instead of our holding.
        reason: String,
    },
    /// A compare-and-set precondition did not hold: the key changed since it was read, or a
    /// create-only write found the key present. Re-read and decide again.
    #[error("conflict on `{key}`: {reason}")]
    Conflict {
        /// The key, relative to the scope.
        key: String,
        /// The precondition that failed.
        reason: String,
    },
    /// The store could not be reached, or answered that it cannot serve now (no quorum,
    /// leader election in progress). The outcome of a write is unknown. Retryable.
    #[error("DCS unavailable: {message}")]
    Unavailable {
        /// What the client saw.
        message: String,
        /// The backend's own error, if any.
        #[source]
        source: Option<BoxError>,
    },
    /// The call did not finish before its deadline. The outcome of a write is unknown.
    /// Retryable.
    #[error("DCS call `{operation}` timed out after {after:?}")]
    Timeout {
        /// The contract method that timed out.
        operation: &'static str,
        /// The deadline that passed.
        after: Duration,
    },
    /// The store rejected our credentials.
    #[error("DCS authentication failed: {0}")]
    Unauthenticated(String),
    /// The credentials are valid but may not do this.
    #[error("DCS permission denied: {0}")]
    PermissionDenied(String),
    /// A configuration value is invalid; the message names it and says why.
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),
    /// The store holds data we cannot use where we must (not where lenient parsing can
    /// treat it as absent).
    #[error("corrupt data at `{key}`: {reason}")]
    Corrupt {
        /// The key, relative to the scope.
        key: String,
        /// What is wrong with it.
        reason: String,
    },
    /// This backend cannot do what was asked.
    #[error("not supported by this backend: {0}")]
    NotSupported(String),
    /// Anything that fits no other variant. Not retryable: a retry loop must not spin on a
    /// failure nobody classified.
    #[error("DCS error: {message}")]
    Other {
        /// What happened.
        message: String,
        /// The backend's own error, if any.
        #[source]
        source: Option<BoxError>,
    },
}

impl Error {
    /// Whether the same call may succeed if tried again: the store was unreachable or slow,
    /// and nothing says our state in it changed. A leader keeps its role across a retryable
    /// error until its lease's validity deadline, and no longer.
    #[must_use]
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Unavailable { .. } | Self::Timeout { .. })
    }

    /// An [`Error::Unavailable`] without a source.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::Unavailable {
            message: message.into(),
            source: None,
        }
    }

    /// An [`Error::LeaseLost`].
    pub fn lease_lost(reason: impl Into<String>) -> Self {
        Self::LeaseLost {
            reason: reason.into(),
        }
    }

    /// An [`Error::Conflict`].
    pub fn conflict(key: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::Conflict {
            key: key.into(),
            reason: reason.into(),
        }
    }
}

/// The contract's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Runs `future` with a hard deadline, so that no DCS call can block its caller past
/// `after` (Patroni issue #1981: a queued ZooKeeper request kept a primary alive while the
/// store was down).
pub async fn with_deadline<T>(
    operation: &'static str,
    after: Duration,
    future: impl Future<Output = Result<T>>,
) -> Result<T> {
    tokio::time::timeout(after, future)
        .await
        .unwrap_or(Err(Error::Timeout { operation, after }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_unreachable_and_slow_are_retryable() {
        let cases = [
            (Error::lease_lost("gone"), false),
            (Error::conflict("config", "stale"), false),
            (Error::unavailable("connection refused"), true),
            (
                Error::Timeout {
                    operation: "cluster",
                    after: Duration::from_secs(1),
                },
                true,
            ),
            (Error::Unauthenticated("bad password".into()), false),
            (Error::PermissionDenied("read-only user".into()), false),
            (Error::InvalidConfig("ttl".into()), false),
            (
                Error::Corrupt {
                    key: "leader".into(),
                    reason: "x".into(),
                },
                false,
            ),
            (Error::NotSupported("watch".into()), false),
            (
                Error::Other {
                    message: "?".into(),
                    source: None,
                },
                false,
            ),
        ];
        for (error, retryable) in cases {
            assert_eq!(error.is_retryable(), retryable, "{error}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn deadline_turns_a_hung_call_into_timeout() {
        let hung = std::future::pending::<Result<()>>();
        let error = with_deadline("cluster", Duration::from_secs(3), hung)
            .await
            .unwrap_err();
        assert!(matches!(
            error,
            Error::Timeout {
                operation: "cluster",
                ..
            }
        ));
        assert!(error.is_retryable());
    }
}
