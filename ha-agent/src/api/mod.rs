//! The REST API's read side, compatible with Patroni's (`patroni/api.py`, port 8008).
//!
//! Two layers, kept apart so that every status code is decided by a pure function:
//!
//! * [`respond`] turns a request line (method, path and query) plus a [`Snapshot`] of what
//!   the agent knows into a [`Response`] — status code, content type, body. It is the
//!   whole behaviour of the API and is tested table-driven, without sockets.
//! * [`serve`] is a small HTTP/1.1 server (hyper, `http1` only) that reads the latest
//!   [`Snapshot`] from a [`tokio::sync::watch`] channel for each request and writes what
//!   [`respond`] returned.
//!
//! The HA loop owns the snapshot: after each cycle it publishes a fresh [`NodeStatus`]
//! and the [`ClusterState`] it read, with `watch::Sender::send_replace`. A request never
//! touches PostgreSQL or the DCS, so a slow database cannot stall HAProxy's health checks
//! and a check never answers from a state newer than the one the HA loop acted on.
//!
//! # Endpoints
//!
//! | Request | Answer |
//! |---|---|
//! | `GET /patroni` | 200, the status document other members parse in the leader race |
//! | `GET /cluster` | 200, members with roles and lag (last DCS view, not a fresh read) |
//! | `GET /history` | 200, the `history` key's lines, `[]` when none |
//! | `GET /config` | 200 with the `config` key's JSON, 502 when there is none |
//! | `GET /failsafe` | 200 with the `failsafe` key's JSON, 502 when there is none |
//! | `GET /metrics` | 200, Prometheus text with Patroni 4.x's metric names and labels |
//! | `GET /liveness`, `GET /readiness` | 200/503, no body |
//! | any other `GET` | a health check ([`HealthCheck`]): 200/503 with the `/patroni` document |
//! | `HEAD`/`OPTIONS` on any path | the health check's 200/503, no body |
//! | any other method | 404, see below |
//!
//! Like Patroni, a health check is chosen by *substring* of the path (`/replica`,
//! `/replica?lag=1MB`, even `/xreplica`), and `HEAD`/`OPTIONS` always run the health
//! check — `HEAD /patroni` is 503 in Patroni too, because `/patroni` names no role.
//!
//! # Not (yet) implemented
//!
//! * The authenticated endpoints (`PATCH`/`PUT /config`, `POST /switchover`, `/failover`,
//!   `/restart`, `/reload`, `/reinitialize`, `DELETE /restart`, `/switchover`, `POST
//!   /failsafe`) answer **404** `Not Found` for now. Patroni would answer 501 for an
//!   unknown method; 404 says "this agent has no such endpoint" to `patronictl`, which
//!   then falls back to writing `/failover` in the DCS for a switchover.
//! * Synchronous replication is not implemented by the agent, so `/sync`, `/synchronous`,
//!   `/quorum`, `/read-only-quorum` are always 503 and `/read-only-sync` is 200 only on
//!   the leader; `/async` and `/asynchronous` behave like `/replica` (no member is
//!   synchronous). This follows from the rules below as long as the `sync` key is empty.
//! * `/readiness` follows Patroni 3.0.2 (leader, or PostgreSQL running while the DCS is
//!   reachable); 4.x's `?lag=` and `?mode=` are ignored.
//! * Basic authentication, the allowlist and TLS come with the write endpoints.

mod body;
mod control;
mod health;
mod server;
mod status;
#[cfg(test)]
mod tests;

pub use body::{cluster_json, history_json, metrics_text, patroni_json};
pub use control::{Control, LocalReply, LocalRequest};
pub use health::{HealthCheck, Query, health_status, liveness_status, readiness_status};
pub use server::serve;
pub use status::{NodeStatus, PostgresStatus, ReplicationConnection, Snapshot, Xlog};

use std::time::Instant;

use dcs_core::ClusterState;

/// What [`respond`] answers: the status code, and the body unless the request gets only a
/// status line (`HEAD`, `OPTIONS`, `/liveness`, `/readiness`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    /// The HTTP status code (200, 404, 502 or 503).
    pub status: u16,
    /// `(content type, body)`, or `None` for a status line only.
    pub body: Option<(&'static str, String)>,
}

impl Response {
    fn json(status: u16, value: &serde_json::Value) -> Self {
        Self {
            status,
            body: Some(("application/json", value.to_string())),
        }
    }

    fn status_only(status: u16) -> Self {
        Self { status, body: None }
    }
}

/// The API's whole read-side behaviour: the answer to `method target` (`target` is the
/// path with its optional `?query`) given the agent's `snapshot` at `now`.
///
/// `now` is only compared with [`NodeStatus::next_run`] by `/liveness`. See the
/// [module docs](self) for the routing table.
#[must_use]
pub fn respond(method: &str, target: &str, snapshot: &Snapshot, now: Instant) -> Response {
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let query = Query::parse(query);
    let node = &snapshot.node;
    let cluster = snapshot.cluster.as_ref();
    match method {
        // HAProxy's `option httpchk` sends OPTIONS and reads only the status line.
        "HEAD" | "OPTIONS" => Response::status_only(health_status(
            HealthCheck::from_path(path),
            &query,
            node,
            cluster,
        )),
        "GET" => get(path, &query, snapshot, now),
        _ => not_found(),
    }
}

fn get(path: &str, query: &Query, snapshot: &Snapshot, now: Instant) -> Response {
    let node = &snapshot.node;
    let cluster = snapshot.cluster.as_ref();
    // Patroni routes on the first path segment (`/patroni/x` is `/patroni`).
    let segment = path.trim_start_matches('/').split('/').next().unwrap_or("");
    match segment {
        "patroni" => Response::json(200, &patroni_json(node, cluster)),
        "cluster" => Response::json(200, &cluster_json(cluster.unwrap_or(&EMPTY))),
        "history" => Response::json(200, &history_json(cluster.unwrap_or(&EMPTY))),
        "config" => match cluster.and_then(|c| c.config.as_ref()) {
            Some(config) => {
                Response::json(200, &serde_json::Value::Object(config.value.data.clone()))
            }
            None => bad_gateway(),
        },
        "failsafe" => match cluster.and_then(|c| c.failsafe.as_ref()) {
            Some(failsafe) => Response::json(
                200,
                &serde_json::to_value(&failsafe.value.members).unwrap_or_default(),
            ),
            None => bad_gateway(),
        },
        "metrics" => Response {
            status: 200,
            body: Some(("text/plain", metrics_text(node, cluster))),
        },
        "liveness" => Response::status_only(liveness_status(node, now)),
        "readiness" => Response::status_only(readiness_status(node, cluster)),
        _ => Response::json(
            health_status(HealthCheck::from_path(path), query, node, cluster),
            &patroni_json(node, cluster),
        ),
    }
}

static EMPTY: ClusterState = ClusterState {
    initialize: None,
    config: None,
    leader: None,
    members: Vec::new(),
    failover: None,
    sync: None,
    history: None,
    status: None,
    failsafe: None,
};

/// Python's `send_error` body shape, so that a client printing the body says why.
fn error_page(status: u16, message: &str) -> Response {
    Response {
        status,
        body: Some((
            "text/html",
            format!(
                "<html><head><title>Error response</title></head><body>\
                 <h1>Error response</h1><p>Error code: {status}</p>\
                 <p>Message: {message}.</p></body></html>\n"
            ),
        )),
    }
}

fn not_found() -> Response {
    error_page(404, "Not Found")
}

fn bad_gateway() -> Response {
    error_page(502, "Bad Gateway")
}
