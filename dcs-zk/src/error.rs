//! ZooKeeper's errors, mapped one by one to the contract's [`Error`].
//!
//! | zookeeper-client error | contract error | why |
//! |---|---|---|
//! | `NodeExists`, `BadVersion`, `NoNode`, `NotEmpty` | [`Error::Conflict`] | a precondition on the node did not hold |
//! | `ConnectionLoss`, `NoHosts`, `Timeout`, `Throttled`, `NotReadOnly`, `SessionMoved` | [`Error::Unavailable`] | unreachable or cannot serve now; the outcome of a write is unknown |
//! | `SessionExpired`, `ClientClosed` | [`Error::Unavailable`] here; [`Error::LeaseLost`] for renew and release | the session, and every ephemeral node of it, is gone; other calls retry on a new session |
//! | `AuthFailed` | [`Error::Unauthenticated`] | `auth_data` or the TLS identity was refused |
//! | `NoAuth` | [`Error::PermissionDenied`] | an ACL forbids this |
//! | `InvalidAcl` | [`Error::InvalidConfig`] | `set_acls` is not acceptable to the server |
//! | `Unimplemented`, `ReconfigDisabled` | [`Error::NotSupported`] | the server is too old for the request |
//! | `NoChildrenForEphemerals` | [`Error::Corrupt`] | a foreign writer made a parent node ephemeral |
//! | a transport failure: an I/O error (broken pipe, reset) under the client's `Custom` error, or its "no response from connection" | [`Error::Unavailable`] | the connection broke under the request, or the member stopped answering; the client moves to another member |
//! | anything else (`QuotaExceeded`, `MarshallingError`, unmarshalling, unknown codes) | [`Error::Other`] | not retryable: nobody classified it |
//!
//! [`Dcs::renew_leader`](dcs_core::Dcs::renew_leader) and
//! [`Dcs::release_leader`](dcs_core::Dcs::release_leader) turn an ended session into
//! [`Error::LeaseLost`] themselves, with [`session_ended`]: the leader node was ephemeral to
//! that session, so the holding is gone for certain. A session that is only disconnected is
//! never reported as lost.

use dcs_core::Error;
use zookeeper_client as zk;

/// Maps a client error on `key` (relative to the scope) to the contract's error.
pub(crate) fn to_dcs(error: zk::Error, key: &str) -> Error {
    use zk::Error as Zk;
    match error {
        Zk::NodeExists => Error::conflict(key, "the node exists"),
        Zk::BadVersion => Error::conflict(key, "the node is at another version"),
        Zk::NoNode => Error::conflict(key, "the node does not exist"),
        Zk::NotEmpty => Error::conflict(key, "the node has children"),
        Zk::ConnectionLoss
        | Zk::NoHosts
        | Zk::Timeout
        | Zk::Throttled
        | Zk::NotReadOnly
        | Zk::SessionMoved
        | Zk::SessionExpired
        | Zk::ClientClosed => Error::Unavailable {
            message: format!("ZooKeeper: {error}"),
            source: Some(Box::new(error)),
        },
        Zk::AuthFailed => Error::Unauthenticated(format!("ZooKeeper: {error}")),
        Zk::NoAuth => Error::PermissionDenied(format!("ZooKeeper refused access to `{key}`")),
        Zk::InvalidAcl => Error::InvalidConfig(format!(
            "ZooKeeper refused the ACL of `{key}` (zookeeper.set_acls)"
        )),
        Zk::Unimplemented | Zk::ReconfigDisabled => {
            Error::NotSupported(format!("ZooKeeper server: {error} (on `{key}`)"))
        }
        Zk::NoChildrenForEphemerals => Error::Corrupt {
            key: key.to_owned(),
            reason: "a parent node is ephemeral, so it cannot have children".into(),
        },
        // The client reports a connection that broke while it wrote or read (the member
        // was killed) as `Custom` around the I/O error, not as `ConnectionLoss`.
        Zk::Custom(_) if caused_by_io(&error) || is_silent_connection(&error.to_string()) => {
            Error::Unavailable {
                message: format!("ZooKeeper: the connection broke: {error}"),
                source: Some(Box::new(error)),
            }
        }
        other => Error::Other {
            message: format!("ZooKeeper on `{key}`: {other}"),
            source: Some(Box::new(other)),
        },
    }
}

/// Whether the client gave up on a member that stopped answering (its session loop's
/// "no response from connection in N ms", a `Custom` error with no source): the request
/// met a dead or frozen member, and the client moves to another one.
fn is_silent_connection(shown: &str) -> bool {
    shown.starts_with("no response from connection")
}

/// Whether an I/O error is somewhere in `error`'s source chain.
fn caused_by_io(error: &(dyn std::error::Error + 'static)) -> bool {
    // The client keeps the cause as `Arc<dyn Error>`, a type of its own in the chain.
    type Shared = std::sync::Arc<dyn std::error::Error + Send + Sync>;
    let mut cause = error.source();
    while let Some(current) = cause {
        if current.is::<std::io::Error>()
            || current
                .downcast_ref::<Shared>()
                .is_some_and(|shared| shared.is::<std::io::Error>())
        {
            return true;
        }
        cause = current.source();
    }
    false
}

/// Whether the error says the session itself ended (expired, or closed by us): every
/// ephemeral node of it is gone, or will be as soon as the server notices.
pub(crate) fn session_ended(error: &zk::Error) -> bool {
    matches!(error, zk::Error::SessionExpired | zk::Error::ClientClosed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_maps_to_the_variant_of_the_table() {
        use zk::Error as Zk;
        type Check = fn(&Error) -> bool;
        let conflict: Check = |e| matches!(e, Error::Conflict { .. });
        let unavailable: Check = |e| matches!(e, Error::Unavailable { .. });
        let cases: [(Zk, Check); 20] = [
            (Zk::NodeExists, conflict),
            (Zk::BadVersion, conflict),
            (Zk::NoNode, conflict),
            (Zk::NotEmpty, conflict),
            (Zk::ConnectionLoss, unavailable),
            (Zk::NoHosts, unavailable),
            (Zk::Timeout, unavailable),
            (Zk::Throttled, unavailable),
            (Zk::NotReadOnly, unavailable),
            (Zk::SessionMoved, unavailable),
            (Zk::SessionExpired, unavailable),
            (Zk::ClientClosed, unavailable),
            (Zk::AuthFailed, |e| matches!(e, Error::Unauthenticated(_))),
            (Zk::NoAuth, |e| matches!(e, Error::PermissionDenied(_))),
            (Zk::InvalidAcl, |e| matches!(e, Error::InvalidConfig(_))),
            (Zk::Unimplemented, |e| matches!(e, Error::NotSupported(_))),
            (Zk::ReconfigDisabled, |e| {
                matches!(e, Error::NotSupported(_))
            }),
            (Zk::NoChildrenForEphemerals, |e| {
                matches!(e, Error::Corrupt { .. })
            }),
            (Zk::QuotaExceeded, |e| matches!(e, Error::Other { .. })),
            (Zk::UnexpectedErrorCode(-999), |e| {
                matches!(e, Error::Other { .. })
            }),
        ];
        for (zk_error, expected) in cases {
            let shown = zk_error.to_string();
            let error = to_dcs(zk_error, "leader");
            assert!(expected(&error), "{shown} became {error:?}");
        }
    }

    #[test]
    fn an_io_error_in_the_source_chain_is_a_transport_failure() {
        /// An error whose cause is `0`, kept as the client's `Custom` keeps it.
        #[derive(Debug)]
        struct Wrapper(std::sync::Arc<dyn std::error::Error + Send + Sync>);
        impl std::fmt::Display for Wrapper {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("wrapped")
            }
        }
        impl std::error::Error for Wrapper {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.0)
            }
        }

        let broken = Wrapper(std::sync::Arc::new(std::io::Error::from(
            std::io::ErrorKind::BrokenPipe,
        )));
        assert!(caused_by_io(&broken));
        let other = Wrapper(std::sync::Arc::new(std::fmt::Error));
        assert!(!caused_by_io(&other));
        assert!(!caused_by_io(&zk::Error::QuotaExceeded));
    }

    #[test]
    fn a_member_that_stopped_answering_is_a_transport_failure() {
        // zookeeper-client 0.11's session loop, word for word (its constructor is private).
        assert!(is_silent_connection(
            "no response from connection in 4000ms"
        ));
        assert!(!is_silent_connection(
            "ZooKeeper on `leader`: quota exceeded"
        ));
    }

    #[test]
    fn unreachable_is_retryable_and_never_a_lost_lease() {
        for zk_error in [
            zk::Error::ConnectionLoss,
            zk::Error::Timeout,
            zk::Error::NoHosts,
        ] {
            let error = to_dcs(zk_error, "leader");
            assert!(error.is_retryable(), "{error}");
            assert!(!matches!(error, Error::LeaseLost { .. }));
        }
        assert!(session_ended(&zk::Error::SessionExpired));
        assert!(session_ended(&zk::Error::ClientClosed));
        assert!(!session_ended(&zk::Error::ConnectionLoss));
    }
}
