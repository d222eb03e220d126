//! Basic authentication of the write endpoints (`restapi.authentication`), checked as
//! Patroni's `RestApiServer.check_auth_header` does.

use base64::Engine as _;

use crate::config::{Credentials, RestApi};

/// The `restapi` settings this API does not enforce, one sentence each; empty when
/// everything configured is enforced.
///
/// Each of them narrows who may call the write endpoints (`verify_client`) or protects
/// the credentials on the wire (`certfile`: TLS). Serving without them would be *less* protected than the operator
/// asked for, so the agent should refuse to start (`--validate-config` included) rather
/// than warn; the config parser accepts them because they are valid Patroni settings.
#[must_use]
pub fn unsupported_restapi_settings(restapi: &RestApi) -> Vec<String> {
    let mut unsupported = Vec::new();
    if restapi
        .verify_client
        .as_deref()
        .is_some_and(|mode| !mode.eq_ignore_ascii_case("none"))
    {
        unsupported.push(
            "restapi.verify_client is not supported: client certificates would not be checked"
                .to_owned(),
        );
    }
    if restapi.certfile.is_some() {
        unsupported.push(
            "restapi.certfile is not supported: the REST API serves plain HTTP only".to_owned(),
        );
    }
    unsupported
}

/// Why a write request was refused; the text is Patroni's 401 body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum AuthFailure {
    /// No `Authorization` header at all.
    NoHeader,
    /// A header that is not Basic, not base64, or names other credentials.
    NotAuthenticated,
}

impl AuthFailure {
    /// Patroni's 401 body.
    pub(super) fn message(self) -> &'static str {
        match self {
            Self::NoHeader => "no auth header received",
            Self::NotAuthenticated => "not authenticated",
        }
    }
}

/// Checks an `Authorization` header against `expected`; `None` lets every request
/// through, as Patroni does without `restapi.authentication`.
///
/// The scheme is matched case-insensitively (RFC 9110); the decoded `user:password` is
/// compared in time independent of where it first differs, so that response times do not
/// reveal how much of a guess was right.
pub(super) fn check_basic_auth(
    header: Option<&[u8]>,
    expected: Option<&Credentials>,
) -> Result<(), AuthFailure> {
    let Some(expected) = expected else {
        return Ok(());
    };
    let header = header.ok_or(AuthFailure::NoHeader)?;
    let encoded = header
        .get(..6)
        .filter(|scheme| scheme.eq_ignore_ascii_case(b"Basic "))
        .and_then(|_| header.get(6..))
        .ok_or(AuthFailure::NotAuthenticated)?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim_ascii())
        .map_err(|_| AuthFailure::NotAuthenticated)?;
    let wanted = format!(
        "{}:{}",
        expected.username,
        expected.password.as_deref().unwrap_or_default()
    );
    if constant_time_eq(&decoded, wanted.as_bytes()) {
        Ok(())
    } else {
        Err(AuthFailure::NotAuthenticated)
    }
}

/// Equality that reads every byte of the longer input whatever the contents: the
/// running time depends on the lengths only.
fn constant_time_eq(given: &[u8], wanted: &[u8]) -> bool {
    let length = given.len().max(wanted.len());
    let mut difference = u8::from(given.len() != wanted.len());
    for index in 0..length {
        let a = given.get(index).copied().unwrap_or(0);
        let b = wanted.get(index).copied().unwrap_or(0);
        difference |= a ^ b;
    }
    // `black_box` keeps the optimizer from turning the fold into an early exit.
    std::hint::black_box(difference) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn credentials(username: &str, password: Option<&str>) -> Credentials {
        Credentials {
            username: username.to_owned(),
            password: password.map(str::to_owned),
            options: Vec::new(),
        }
    }

    fn basic(pair: &str) -> String {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(pair)
        )
    }

    #[test]
    fn without_configured_credentials_every_request_is_allowed() {
        assert_eq!(check_basic_auth(None, None), Ok(()));
        assert_eq!(check_basic_auth(Some(b"Bearer x"), None), Ok(()));
    }

    #[test]
    fn basic_credentials_are_checked_like_patroni() {
        let admin = credentials("admin", Some("s3cr:et"));
        let table: &[(Option<&str>, Result<(), AuthFailure>)] = &[
            (None, Err(AuthFailure::NoHeader)),
            (Some(&basic("admin:s3cr:et")), Ok(())),
            (
                Some(&basic("admin:s3cr:et").replace("Basic", "basic")),
                Ok(()),
            ),
            (
                Some(&basic("admin:s3cr:eT")),
                Err(AuthFailure::NotAuthenticated),
            ),
            (
                Some(&basic("admin:s3cr:et ")),
                Err(AuthFailure::NotAuthenticated),
            ),
            (Some(&basic("admin")), Err(AuthFailure::NotAuthenticated)),
            (Some(&basic("")), Err(AuthFailure::NotAuthenticated)),
            (
                Some("Basic !!not base64!!"),
                Err(AuthFailure::NotAuthenticated),
            ),
            (Some("Basic"), Err(AuthFailure::NotAuthenticated)),
            (
                Some("Bearer YWRtaW46czNjcjpldA=="),
                Err(AuthFailure::NotAuthenticated),
            ),
            (Some(""), Err(AuthFailure::NotAuthenticated)),
        ];
        for (header, expected) in table {
            assert_eq!(
                check_basic_auth(header.map(str::as_bytes), Some(&admin)),
                *expected,
                "{header:?}"
            );
        }
    }

    #[test]
    fn a_user_without_password_authenticates_with_an_empty_one() {
        let user = credentials("patroni", None);
        assert_eq!(
            check_basic_auth(Some(basic("patroni:").as_bytes()), Some(&user)),
            Ok(())
        );
        assert_eq!(
            check_basic_auth(Some(basic("patroni:x").as_bytes()), Some(&user)),
            Err(AuthFailure::NotAuthenticated)
        );
    }

    fn restapi(extra: &str) -> RestApi {
        let yaml = format!(
            "scope: pg\nname: pg0\nrestapi:\n  listen: 127.0.0.1:8008\n{extra}\
             etcd3:\n  hosts: 127.0.0.1:2379\npostgresql:\n  listen: 127.0.0.1:5432\n  connect_address: 127.0.0.1:5432\n  \
             data_dir: /tmp/pg\n  authentication:\n    superuser: {{username: postgres}}\n    \
             replication: {{username: replicator}}\n"
        );
        match crate::config::Config::from_yaml_str(&yaml) {
            Ok((config, _)) => config.restapi,
            Err(error) => panic!("{error}\n{yaml}"),
        }
    }

    #[test]
    fn settings_the_api_cannot_enforce_are_named() {
        let table: &[(&str, &[&str])] = &[
            ("", &[]),
            (
                "  authentication: {username: a, password: b}\n  verify_client: none\n",
                &[],
            ),
            (
                "  allowlist: [127.0.0.1, 10.0.0.0/8]\n  allowlist_include_members: true\n",
                &[],
            ),
            (
                "  certfile: /etc/cert.pem\n  verify_client: required\n",
                &["restapi.verify_client", "restapi.certfile"],
            ),
        ];
        for (extra, expected) in table {
            let named: Vec<String> = unsupported_restapi_settings(&restapi(extra))
                .into_iter()
                .map(|sentence| sentence.split(' ').next().unwrap_or_default().to_owned())
                .collect();
            assert_eq!(named, *expected, "{extra}");
        }
    }

    #[test]
    fn equality_needs_the_same_length_and_bytes() {
        assert!(constant_time_eq(b"", b""));
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abc\0"));
        assert!(!constant_time_eq(b"abc\0", b"abc"));
    }
}
