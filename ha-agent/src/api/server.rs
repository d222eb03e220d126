//! The HTTP/1.1 server: hyper's `http1` connection driver around [`respond`] and, for
//! the authenticated endpoints, the write side.

use std::convert::Infallible;
use std::future::Future;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use http_body_util::{BodyExt as _, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::header::{AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, HeaderName, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::allow::member_addresses;
use super::auth::check_basic_auth;
use super::write::{self, BodyRule, Endpoint, MAX_BODY};
use super::{Control, Response, Snapshot, error_page, respond};

/// A client that has not sent its request headers by then is dropped, so idle or
/// malicious connections cannot pile up (HAProxy sends its check at once).
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// A client that has not sent its whole request body by then gets 408: the body is
/// small, and a trickling client must not hold a connection task.
const BODY_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// How long to wait before accepting again after `accept` failed (out of file
/// descriptors): retrying at once would spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Serves the REST API on `listener` until `shutdown` completes.
///
/// Read requests are answered by [`respond`] from the snapshot current when they arrive
/// (`snapshots.borrow()`); the HA loop publishes new ones with
/// `watch::Sender::send_replace`. They never block on PostgreSQL or the DCS.
///
/// With a `control`, the authenticated endpoints are served too (see the
/// [module docs](super)): each request is checked against `control.authentication`,
/// its body read (at most 64 KiB, 10 s), and then carried out against `control.dcs` or
/// handed to the HA loop on `control.requests`. Without one they answer 404.
///
/// Connections are HTTP/1.1 with keep-alive (HAProxy and Prometheus reuse them). When
/// `shutdown` completes the listener is closed and open connections are dropped, writes
/// in progress included: a DCS write either happened or did not, and a request already
/// handed to the HA loop is still carried out, only its answer is lost. A failed
/// `accept` is logged and retried; `serve` itself never fails.
pub async fn serve(
    listener: TcpListener,
    snapshots: watch::Receiver<Snapshot>,
    control: Option<Control>,
    shutdown: impl Future<Output = ()>,
) {
    let control = control.map(std::sync::Arc::new);
    let mut connections = JoinSet::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, client) = tokio::select! {
            () = &mut shutdown => break,
            // Reap finished connections so the set does not grow without bound.
            Some(_) = connections.join_next() => continue,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::warn!(%error, "REST API: accept failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
        };
        let snapshots = snapshots.clone();
        let control = control.clone();
        connections.spawn(async move {
            let service = service_fn(move |request: Request<Incoming>| {
                let snapshots = snapshots.clone();
                let control = control.clone();
                async move {
                    let reply = answer(request, client.ip(), &snapshots, control.as_deref()).await;
                    Ok::<_, Infallible>(into_hyper(reply))
                }
            });
            let connection = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service);
            if let Err(error) = connection.await {
                tracing::debug!(%error, "REST API: connection ended with an error");
            }
        });
    }
    // Dropping the set aborts the open connections.
    connections.shutdown().await;
}

async fn answer(
    request: Request<Incoming>,
    client: IpAddr,
    snapshots: &watch::Receiver<Snapshot>,
    control: Option<&Control>,
) -> Response {
    let target = request
        .uri()
        .path_and_query()
        .map_or("/", hyper::http::uri::PathAndQuery::as_str)
        .to_owned();
    let path = target.split('?').next().unwrap_or("/");
    let method = request.method().as_str();
    if let Some(control) = control {
        if let Some(endpoint) = Endpoint::route(method, path) {
            return write_request(request, client, endpoint, control, snapshots).await;
        }
    }
    // The borrow is held only for the pure computation, never across an await.
    respond(method, &target, &snapshots.borrow(), Instant::now())
}

/// Patroni's order: the client's address, then the credentials (nothing is read from an
/// unauthenticated client), then the body, then the endpoint.
async fn write_request(
    request: Request<Incoming>,
    client: IpAddr,
    endpoint: Endpoint,
    control: &Control,
    snapshots: &watch::Receiver<Snapshot>,
) -> Response {
    if let Some(allowlist) = &control.allowlist {
        let members = if allowlist.include_members {
            let cluster = snapshots.borrow().cluster.clone();
            member_addresses(cluster.as_ref()).await
        } else {
            Vec::new()
        };
        if !allowlist.allows(client, &members) {
            tracing::warn!("REST API: {client} is not in restapi.allowlist");
            return Response {
                status: 403,
                body: Some(("text/html", "Access is denied".to_owned())),
                headers: Vec::new(),
            };
        }
    }
    let authorization = request
        .headers()
        .get(AUTHORIZATION)
        .map(HeaderValue::as_bytes);
    if let Err(failure) = check_basic_auth(authorization, control.authentication.as_ref()) {
        return Response {
            status: 401,
            body: Some(("text/html", failure.message().to_owned())),
            headers: vec![("www-authenticate", "Basic realm=\"Patroni\"")],
        };
    }
    let rule = endpoint.body_rule();
    let length_given = request.headers().contains_key(CONTENT_LENGTH);
    let body = if rule == BodyRule::Ignored {
        Bytes::new()
    } else {
        match read_body(request).await {
            Ok(body) => body,
            Err(response) => return response,
        }
    };
    let body = match write::parse_body(rule, length_given, &body) {
        Ok(body) => body,
        Err(response) => return response,
    };
    let snapshot = snapshots.borrow().clone();
    write::handle(control, endpoint, body, snapshot).await
}

/// Reads the whole body, at most [`MAX_BODY`] bytes within [`BODY_READ_TIMEOUT`].
async fn read_body(request: Request<Incoming>) -> Result<Bytes, Response> {
    let too_large = || {
        error_page(
            413,
            "Request Entity Too Large",
            &format!("the body must not exceed {MAX_BODY} bytes"),
        )
    };
    // Refuse an announced oversize body before reading any of it.
    let announced = request
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if announced.is_some_and(|length| length > MAX_BODY as u64) {
        return Err(too_large());
    }
    let collect = Limited::new(request.into_body(), MAX_BODY).collect();
    match tokio::time::timeout(BODY_READ_TIMEOUT, collect).await {
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(error)) if error.is::<http_body_util::LengthLimitError>() => Err(too_large()),
        Ok(Err(error)) => Err(error_page(
            400,
            "Bad Request",
            &format!("the body could not be read: {error}"),
        )),
        Err(_) => Err(error_page(
            408,
            "Request Timeout",
            "the body did not arrive in time",
        )),
    }
}

fn into_hyper(reply: Response) -> hyper::Response<Full<Bytes>> {
    let (content_type, body) = reply.body.unwrap_or(("text/plain", String::new()));
    let mut response = hyper::Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() =
        StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    for (name, value) in reply.headers {
        headers.insert(
            HeaderName::from_static(name),
            HeaderValue::from_static(value),
        );
    }
    response
}
