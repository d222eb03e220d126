//! How etcd's answers map onto the contract's [`Error`]: one table, unit-tested.
//!
//! The question every mapping answers is the one the HA loop asks: is the lock definitely
//! lost ([`Error::LeaseLost`]), may the caller retry and keep its role until its lease
//! deadline ([`Error::Unavailable`]), or is something wrong that a retry will not fix
//! (credentials, permissions, configuration)? Anything the transport reports — a refused
//! connection, a reset stream, an h2 protocol error, a server without a leader — is
//! retryable: none of them says anything about who holds the lock (Patroni issues #3572 and
//! #3403 demoted healthy primaries by confusing the two).
//!
//! | etcd answer | gRPC code | contract error |
//! |---|---|---|
//! | connection refused / reset, h2 errors, stream closed | transport, `Unavailable`, `Unknown`, `Internal`, `Cancelled` | `Unavailable` |
//! | `etcdserver: no leader`, `leader changed`, `request timed out`, `server stopped`, `not capable`, `unhealthy cluster` | `Unavailable` | `Unavailable` |
//! | a server-side deadline | `DeadlineExceeded` | `Unavailable` |
//! | `too many requests`, `mvcc: database space exceeded` | `ResourceExhausted` | `Unavailable` |
//! | `not leader` (raft state changing), `Aborted` | `FailedPrecondition`, `Aborted` | `Unavailable` |
//! | `revision of auth store is old` (token from before a role change) | `InvalidArgument` | `Unavailable` |
//! | `requested lease not found` (the lease expired or was revoked) | `NotFound` | `LeaseLost` |
//! | `authentication failed, invalid user ID or password` | `InvalidArgument` | `Unauthenticated` |
//! | `invalid auth token`, `user name is empty`, any `Unauthenticated` | `Unauthenticated` | `Unauthenticated` |
//! | `permission denied` | `PermissionDenied` | `PermissionDenied` |
//! | an API this server lacks | `Unimplemented` | `NotSupported` |
//! | `request is too large`, other invalid arguments, `OutOfRange`, `DataLoss`, ... | other codes | `Other` |
//! | a TLS certificate refused or not verifiable (either side) | transport | `Unauthenticated` |
//! | a bad endpoint URL or TLS setting | client-side `InvalidArgs`, `InvalidUri`, `EndpointError` | `InvalidConfig` |

use dcs_core::Error;
use tonic::Code;

/// Maps an error of the etcd client onto the contract.
pub(crate) fn from_client(error: etcd_client::Error) -> Error {
    use etcd_client::Error as E;
    if let Some(reason) = certificate_failure(&error) {
        // A refused or unverifiable certificate stays refused on retry: it is a credential
        // problem, not an outage.
        return Error::Unauthenticated(format!("etcd TLS: {reason}"));
    }
    match error {
        E::GRpcStatus(status) => {
            let message = format!("etcd: {}", status.message());
            from_code(status.code(), &message, Some(Box::new(status)))
        }
        E::TransportError(e) => Error::Unavailable {
            message: format!("etcd transport: {e}"),
            source: Some(Box::new(e)),
        },
        E::IoError(e) => Error::Unavailable {
            message: format!("etcd i/o: {e}"),
            source: Some(Box::new(e)),
        },
        // The client's stream plumbing: the stream to the member closed under us.
        E::WatchError(m) | E::LeaseKeepAliveError(m) => {
            Error::unavailable(format!("etcd stream closed: {m}"))
        }
        E::InvalidArgs(m) | E::EndpointError(m) => Error::InvalidConfig(format!("etcd3: {m}")),
        E::InvalidUri(e) => Error::InvalidConfig(format!("etcd3: invalid endpoint URL: {e}")),
        other => Error::Other {
            message: format!("etcd client: {other}"),
            source: Some(Box::new(other)),
        },
    }
}

/// The message of a TLS certificate failure anywhere in the error's source chain (a
/// handshake alert such as `BadCertificate`, an unknown issuer, a name mismatch).
fn certificate_failure(error: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut current = Some(error);
    while let Some(error) = current {
        let text = error.to_string();
        if text.to_ascii_lowercase().contains("certificate") {
            return Some(text);
        }
        current = error.source();
    }
    None
}

/// The table: one gRPC code (and, where etcd reuses a code for unrelated errors, the
/// message) to one contract error.
pub(crate) fn from_code(
    code: Code,
    message: &str,
    source: Option<dcs_core::error::BoxError>,
) -> Error {
    let unavailable = |source| Error::Unavailable {
        message: message.to_owned(),
        source,
    };
    match code {
        Code::Unavailable
        | Code::DeadlineExceeded
        | Code::ResourceExhausted
        | Code::FailedPrecondition
        | Code::Aborted
        | Code::Cancelled
        | Code::Unknown
        | Code::Internal => unavailable(source),
        Code::NotFound => Error::lease_lost(message),
        Code::Unauthenticated => Error::Unauthenticated(message.to_owned()),
        Code::PermissionDenied => Error::PermissionDenied(message.to_owned()),
        Code::InvalidArgument if message.contains("authentication failed") => {
            Error::Unauthenticated(message.to_owned())
        }
        Code::InvalidArgument if message.contains("revision of auth store is old") => {
            unavailable(source)
        }
        Code::Unimplemented => Error::NotSupported(message.to_owned()),
        Code::Ok
        | Code::InvalidArgument
        | Code::AlreadyExists
        | Code::OutOfRange
        | Code::DataLoss => Error::Other {
            message: message.to_owned(),
            source,
        },
    }
}

/// Whether the error says our lease is gone on the server (expired or revoked).
pub(crate) fn is_lease_not_found(error: &Error) -> bool {
    matches!(error, Error::LeaseLost { reason } if reason.contains("lease not found"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The conclusion a caller draws from an error.
    #[derive(Debug, PartialEq)]
    enum Kind {
        Retry,
        Lost,
        Auth,
        Denied,
        Unsupported,
        Other,
    }

    fn kind(error: &Error) -> Kind {
        match error {
            Error::Unavailable { .. } | Error::Timeout { .. } => Kind::Retry,
            Error::LeaseLost { .. } => Kind::Lost,
            Error::Unauthenticated(_) => Kind::Auth,
            Error::PermissionDenied(_) => Kind::Denied,
            Error::NotSupported(_) => Kind::Unsupported,
            _ => Kind::Other,
        }
    }

    /// What etcd 3.4 actually sends (server/etcdserver/api/v3rpc/rpctypes) and what the
    /// transport reports, with the conclusion the caller must draw.
    const TABLE: &[(Code, &str, Kind)] = &[
        (Code::Unavailable, "etcdserver: no leader", Kind::Retry),
        (Code::Unavailable, "etcdserver: leader changed", Kind::Retry),
        (
            Code::Unavailable,
            "etcdserver: request timed out",
            Kind::Retry,
        ),
        (
            Code::Unavailable,
            "etcdserver: request timed out, possibly due to previous leader failure",
            Kind::Retry,
        ),
        (Code::Unavailable, "etcdserver: server stopped", Kind::Retry),
        (Code::Unavailable, "etcdserver: not capable", Kind::Retry),
        (
            Code::Unavailable,
            "etcdserver: unhealthy cluster",
            Kind::Retry,
        ),
        (
            Code::Unavailable,
            "error trying to connect: tcp connect error",
            Kind::Retry,
        ),
        (Code::Unknown, "h2 protocol error: broken pipe", Kind::Retry),
        (
            Code::Internal,
            "h2 protocol error: connection reset",
            Kind::Retry,
        ),
        (Code::Cancelled, "operation was canceled", Kind::Retry),
        (
            Code::DeadlineExceeded,
            "context deadline exceeded",
            Kind::Retry,
        ),
        (
            Code::ResourceExhausted,
            "etcdserver: too many requests",
            Kind::Retry,
        ),
        (
            Code::ResourceExhausted,
            "etcdserver: mvcc: database space exceeded",
            Kind::Retry,
        ),
        (
            Code::FailedPrecondition,
            "etcdserver: not leader",
            Kind::Retry,
        ),
        (
            Code::InvalidArgument,
            "etcdserver: revision of auth store is old",
            Kind::Retry,
        ),
        (
            Code::NotFound,
            "etcdserver: requested lease not found",
            Kind::Lost,
        ),
        (
            Code::InvalidArgument,
            "etcdserver: authentication failed, invalid user ID or password",
            Kind::Auth,
        ),
        (
            Code::Unauthenticated,
            "etcdserver: invalid auth token",
            Kind::Auth,
        ),
        (
            Code::PermissionDenied,
            "etcdserver: permission denied",
            Kind::Denied,
        ),
        (Code::Unimplemented, "unknown service", Kind::Unsupported),
        (
            Code::InvalidArgument,
            "etcdserver: request is too large",
            Kind::Other,
        ),
        (
            Code::InvalidArgument,
            "etcdserver: duplicate key given in txn request",
            Kind::Other,
        ),
        (
            Code::OutOfRange,
            "etcdserver: mvcc: required revision has been compacted",
            Kind::Other,
        ),
        (Code::DataLoss, "etcdserver: corrupt cluster", Kind::Other),
    ];

    #[test]
    fn every_etcd_answer_maps_to_the_conclusion_a_caller_must_draw() {
        for (code, message, expected) in TABLE {
            let error = from_code(*code, message, None);
            assert_eq!(&kind(&error), expected, "{code:?} {message:?} -> {error:?}");
        }
    }

    #[test]
    fn client_side_failures_are_retryable_or_configuration() {
        let status = etcd_client::Error::GRpcStatus(tonic::Status::unavailable("no leader"));
        assert!(from_client(status).is_retryable());
        let io = etcd_client::Error::IoError(std::io::Error::from(
            std::io::ErrorKind::ConnectionRefused,
        ));
        assert!(from_client(io).is_retryable());
        let stream = etcd_client::Error::LeaseKeepAliveError("channel closed".into());
        assert!(from_client(stream).is_retryable());
        let args = etcd_client::Error::InvalidArgs(
            "TLS options are only supported with HTTPS URLs".into(),
        );
        assert!(matches!(from_client(args), Error::InvalidConfig(_)));
    }

    #[test]
    fn a_refused_certificate_is_a_credential_problem_not_an_outage() {
        let alert = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "received fatal alert: BadCertificate",
        );
        let status = tonic::Status::from_error(Box::new(alert));
        let error = from_client(etcd_client::Error::GRpcStatus(status));
        assert!(matches!(error, Error::Unauthenticated(_)), "{error:?}");
        let reset = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "connection reset");
        let status = tonic::Status::from_error(Box::new(reset));
        assert!(from_client(etcd_client::Error::GRpcStatus(status)).is_retryable());
    }

    #[test]
    fn only_a_missing_lease_counts_as_lease_not_found() {
        let gone = from_code(
            Code::NotFound,
            "etcd: etcdserver: requested lease not found",
            None,
        );
        assert!(is_lease_not_found(&gone));
        assert!(!is_lease_not_found(&Error::lease_lost("held by pg1")));
        assert!(!is_lease_not_found(&Error::unavailable("lease not found")));
    }
}
