//! The HTTP/1.1 server: hyper's `http1` connection driver around [`respond`].

use std::convert::Infallible;
use std::future::Future;
use std::time::{Duration, Instant};

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::{Snapshot, respond};

/// A client that has not sent its request headers by then is dropped, so idle or
/// malicious connections cannot pile up (HAProxy sends its check at once).
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// How long to wait before accepting again after `accept` failed (out of file
/// descriptors): retrying at once would spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Serves the read-only REST API on `listener` until `shutdown` completes.
///
/// Each request is answered by [`respond`] from the snapshot current when it arrives
/// (`snapshots.borrow()`); the HA loop publishes new ones with
/// `watch::Sender::send_replace`. Requests never block on PostgreSQL or the DCS.
///
/// Connections are HTTP/1.1 with keep-alive (HAProxy and Prometheus reuse them). When
/// `shutdown` completes the listener is closed and open connections are dropped: every
/// endpoint is read-only, so cutting one off loses nothing. A failed `accept` is
/// logged and retried; `serve` itself never fails.
pub async fn serve(
    listener: TcpListener,
    snapshots: watch::Receiver<Snapshot>,
    shutdown: impl Future<Output = ()>,
) {
    let mut connections = JoinSet::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            () = &mut shutdown => break,
            // Reap finished connections so the set does not grow without bound.
            Some(_) = connections.join_next() => continue,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(error) => {
                    tracing::warn!(%error, "REST API: accept failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
        };
        let snapshots = snapshots.clone();
        connections.spawn(async move {
            let service = service_fn(move |request: Request<Incoming>| {
                let response = answer(&request, &snapshots);
                async move { Ok::<_, Infallible>(response) }
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

fn answer(
    request: &Request<Incoming>,
    snapshots: &watch::Receiver<Snapshot>,
) -> hyper::Response<Full<Bytes>> {
    let target = request
        .uri()
        .path_and_query()
        .map_or("/", hyper::http::uri::PathAndQuery::as_str);
    // The borrow is held only for the pure computation, never across an await.
    let reply = respond(
        request.method().as_str(),
        target,
        &snapshots.borrow(),
        Instant::now(),
    );
    let (content_type, body) = reply.body.unwrap_or(("text/plain", String::new()));
    let mut response = hyper::Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() =
        StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}
