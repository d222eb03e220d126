//! A small HTTP/1.1 client for the agents' REST APIs: the leader race's `GET /patroni`,
//! `ha-agent ctl`'s requests and the tests'.
//!
//! One request per connection, a deadline on the whole exchange, Basic authentication
//! when credentials are given. Plain HTTP only: the API serves no TLS yet.

use std::time::Duration;

use base64::Engine as _;
use http_body_util::{BodyExt as _, Full};
use hyper::body::Bytes;
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HOST, HeaderValue};
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::config::Credentials;

/// Why a request got no answer.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// The URL is not `http://host:port/path`.
    #[error("invalid URL {url:?}: {reason}")]
    InvalidUrl {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// No connection, or the connection broke before the answer was complete.
    #[error("{url}: {reason}")]
    Unreachable {
        /// The URL asked.
        url: String,
        /// The transport's words.
        reason: String,
    },
    /// No complete answer before the deadline.
    #[error("{url}: no answer within {timeout:?}")]
    Timeout {
        /// The URL asked.
        url: String,
        /// The deadline.
        timeout: Duration,
    },
}

/// A complete answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpResponse {
    /// The status code.
    pub status: u16,
    /// The body, as text (lossy for bytes that are not UTF-8).
    pub body: String,
}

impl HttpResponse {
    /// Whether the status is 2xx.
    #[must_use]
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

/// The `Authorization` header value for Basic authentication.
#[must_use]
pub fn basic_auth(credentials: &Credentials) -> String {
    let pair = format!(
        "{}:{}",
        credentials.username,
        credentials.password.as_deref().unwrap_or_default()
    );
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(pair)
    )
}

/// Sends `method url` with an optional JSON `body` and waits at most `timeout` for the
/// whole answer.
///
/// # Errors
/// [`HttpError`]: a malformed URL, no connection, a broken exchange or the deadline.
pub async fn request(
    method: &str,
    url: &str,
    body: Option<&str>,
    auth: Option<&Credentials>,
    timeout: Duration,
) -> Result<HttpResponse, HttpError> {
    let target = Target::parse(url)?;
    let method = Method::from_bytes(method.as_bytes()).map_err(|_| HttpError::InvalidUrl {
        url: url.to_owned(),
        reason: "invalid method",
    })?;
    let exchange = exchange(&target, method, body, auth);
    match tokio::time::timeout(timeout, exchange).await {
        Ok(result) => result.map_err(|reason| HttpError::Unreachable {
            url: url.to_owned(),
            reason,
        }),
        Err(_) => Err(HttpError::Timeout {
            url: url.to_owned(),
            timeout,
        }),
    }
}

/// `GET url`, for the common case.
///
/// # Errors
/// As [`request`].
pub async fn get(url: &str, timeout: Duration) -> Result<HttpResponse, HttpError> {
    request("GET", url, None, None, timeout).await
}

struct Target {
    authority: String,
    path: String,
}

impl Target {
    fn parse(url: &str) -> Result<Self, HttpError> {
        let invalid = |reason| HttpError::InvalidUrl {
            url: url.to_owned(),
            reason,
        };
        let rest = url
            .strip_prefix("http://")
            .ok_or_else(|| invalid("only http:// is supported"))?;
        let (authority, path) = match rest.find('/') {
            Some(at) => (&rest[..at], &rest[at..]),
            None => (rest, "/"),
        };
        if authority.is_empty() {
            return Err(invalid("no host"));
        }
        // A bare host gets HTTP's port, as every client does.
        let authority = if authority
            .rsplit_once(':')
            .is_some_and(|(_, port)| !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()))
        {
            authority.to_owned()
        } else {
            format!("{authority}:80")
        };
        Ok(Self {
            authority,
            path: path.to_owned(),
        })
    }
}

async fn exchange(
    target: &Target,
    method: Method,
    body: Option<&str>,
    auth: Option<&Credentials>,
) -> Result<HttpResponse, String> {
    let stream = TcpStream::connect(target.authority.as_str())
        .await
        .map_err(|e| e.to_string())?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    let driver = tokio::spawn(connection);

    let mut builder = Request::builder()
        .method(method)
        .uri(&target.path)
        .header(HOST, &target.authority);
    if body.is_some() {
        builder = builder.header(CONTENT_TYPE, "application/json");
    }
    if let Some(credentials) = auth {
        let value = HeaderValue::from_str(&basic_auth(credentials)).map_err(|e| e.to_string())?;
        builder = builder.header(AUTHORIZATION, value);
    }
    let request = builder
        .body(Full::new(Bytes::from(body.unwrap_or_default().to_owned())))
        .map_err(|e| e.to_string())?;
    let result = async {
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| e.to_string())?;
        let status = response.status().as_u16();
        let bytes = response
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        Ok(HttpResponse {
            status,
            body: String::from_utf8_lossy(&bytes).into_owned(),
        })
    }
    .await;
    driver.abort();
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_without_a_port_get_port_80_and_a_root_path() {
        let target = Target::parse("http://example").unwrap();
        assert_eq!(
            (target.authority.as_str(), target.path.as_str()),
            ("example:80", "/")
        );
        let target = Target::parse("http://127.0.0.1:8008/patroni?x=1").unwrap();
        assert_eq!(
            (target.authority.as_str(), target.path.as_str()),
            ("127.0.0.1:8008", "/patroni?x=1")
        );
        assert!(Target::parse("https://127.0.0.1:8008/").is_err());
        assert!(Target::parse("http:///x").is_err());
    }

    #[test]
    fn basic_auth_is_rfc_7617() {
        let credentials = Credentials {
            username: "Aladdin".into(),
            password: Some("open sesame".into()),
            options: Vec::new(),
        };
        assert_eq!(
            basic_auth(&credentials),
            "Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ=="
        );
    }
}
