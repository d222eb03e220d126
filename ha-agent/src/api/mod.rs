//! The REST API, compatible with Patroni's (`patroni/api.py`, port 8008): the read side
//! that health checks and peers use, and the authenticated write side that `patronictl`
//! and `ha-agent ctl` use.
//!
//! The read side has two layers, kept apart so that every status code is decided by a
//! pure function:
//!
//! * [`respond`] turns a request line (method, path and query) plus a [`Snapshot`] of what
//!   the agent knows into a [`Response`] — status code, content type, body. It is the
//!   whole behaviour of the API and is tested table-driven, without sockets.
//! * [`serve`] is a small HTTP/1.1 server (hyper, `http1` only) that reads the latest
//!   [`Snapshot`] from a [`tokio::sync::watch`] channel for each request and writes what
//!   [`respond`] returned.
//!
//! The HA loop owns the snapshot: after each cycle it publishes a fresh [`NodeStatus`]
//! and the [`ClusterState`] it read, with `watch::Sender::send_replace`. A read never
//! touches PostgreSQL or the DCS, so a slow database cannot stall HAProxy's health checks
//! and a check never answers from a state newer than the one the HA loop acted on.
//!
//! # Endpoints
//!
//! | Request | Answer |
//! |---|---|
//! | `GET /patroni` | 200, the status document other members parse in the leader race |
//! | `GET /cluster` | 200, Patroni 4.x's `cluster_as_json` plus `scope`: members with role, state (`streaming` for a streaming replica), positions and lags (last DCS view, not a fresh read) |
//! | `GET /history` | 200, the `history` key's lines, `[]` when none |
//! | `GET /config` | 200 with the `config` key's JSON, 502 when there is none |
//! | `GET /failsafe` | 200 with the `failsafe` key's JSON, 502 when there is none |
//! | `GET /metrics` | 200, Patroni 4.x's Prometheus text: its metrics, help, types and labels |
//! | `GET /liveness` | 200/503, no body: the HA loop is not late |
//! | `GET /readiness` (`?lag=`, `?mode=apply\|write`) | 200/503, no body: the leader, or a streaming replica within `lag` (default `maximum_lag_on_failover`), Patroni 4.x's rule |
//! | any other `GET` | a health check ([`HealthCheck`]): 200/503 with the `/patroni` document |
//! | `HEAD`/`OPTIONS` on any path | the health check's 200/503, no body |
//! | the write endpoints below | with a [`Control`] only; else 404 |
//! | any other method | 404 |
//!
//! Like Patroni, a health check is chosen by *substring* of the path (`/replica`,
//! `/replica?lag=1MB`, even `/xreplica`), and `HEAD`/`OPTIONS` always run the health
//! check — `HEAD /patroni`, `HEAD /liveness` and `HEAD /readiness` are 503 in Patroni
//! too, because those paths name no role.
//!
//! # Write endpoints
//!
//! Served only when [`serve`] is given a [`Control`] (else 404). Every one checks
//! `restapi.authentication` first, as Patroni does: no `Authorization` header is 401
//! `no auth header received`, wrong Basic credentials 401 `not authenticated`, both with
//! `WWW-Authenticate: Basic realm="Patroni"`. Bodies are JSON objects of at most 64 KiB
//! (413 beyond; 400 with the reason for anything that is not a JSON object; 411 without a
//! `Content-Length` where a body is required). Answers are Patroni's codes and texts:
//!
//! | Request | Answer |
//! |---|---|
//! | `POST /switchover` `{leader, candidate?, scheduled_at?}` | writes the `failover` key, then waits for the lock to move: 200 `Successfully switched over to "x"`, 503 `Switchover failed` / `Switchover status unknown`; 202 `Switchover scheduled`; 400/412/422 when refused |
//! | `POST /failover` `{candidate, leader?}` | the same, `failed over` |
//! | `DELETE /switchover` | 200 `scheduled switchover deleted`, 404 none, 409 changed meanwhile |
//! | `PATCH /config` | merge patch (`null` deletes), compare-and-set: 200 + the new config, 409 changed meanwhile, 503 no `config` key |
//! | `PUT /config` | replaces the config: 200 + the config, 502 not written |
//! | `POST /restart` `{role?, postgres_version?, restart_pending?, timeout?}` | the HA loop's answer (200 `restarted successfully`, 503 ...); 503 `restart conditions are not satisfied` |
//! | `POST /restart` `{schedule, ...}` | 202 `Restart scheduled` (the loop runs it when due if the filters still match), 409 one is already scheduled, 422 past or unreadable time, 500 paused |
//! | `POST /reload` | the HA loop's answer (202 `reload scheduled`) |
//! | `POST /reinitialize` `{force?, from_leader?}` | the HA loop's answer (200 `reinitialize started`, 503 reason) |
//! | `DELETE /restart` | 200 `scheduled restart deleted`, 404 `no restarts are scheduled` |
//!
//! The checks are pure functions table-tested on their own (`failover`, `local`,
//! `patch`); `write` does the DCS reads and writes against a fresh `Dcs::cluster`, and
//! hands PostgreSQL work to the HA loop as [`LocalRequest`]s, waiting for its
//! [`LocalReply`] with a bound (503 with a clear text when the loop is gone or silent).
//!
//! # Not (yet) implemented
//!
//! * The restart `timeout` filter only bounds how long the API waits for the loop's
//!   answer; it is not passed on (Patroni fails over a primary that does not come back
//!   within it).
//! * `POST /failsafe`, `/citus`, `/mpp` answer 404.
//! * A switchover/failover candidate is judged by its member key (present, not
//!   `nofailover`), not by asking its REST API as Patroni does: see `failover`.
//! * `restapi.verify_client` and TLS are not served; [`unsupported_restapi_settings`]
//!   names them so the agent can refuse to start with them rather than serve less
//!   protection than configured. `allowlist` and `allowlist_include_members` are
//!   enforced ([`Allowlist`]).
//! * Synchronous replication is not implemented by the agent, so `/sync`, `/synchronous`,
//!   `/quorum`, `/read-only-quorum` are always 503 and `/read-only-sync` is 200 only on
//!   the leader; `/async` and `/asynchronous` behave like `/replica` (no member is
//!   synchronous). This follows from the rules below as long as the `sync` key is empty.
//! * `/readiness` and the `?lag=` of `/replica` compare with `/status`'s optime only:
//!   Patroni 4.x also uses the WAL receiver's `latest_end_lsn` when it is ahead (and
//!   lets a replica without a DCS view be ready by it), which the agent does not read.

mod allow;
mod auth;
mod body;
mod control;
mod failover;
mod health;
mod local;
mod patch;
mod server;
mod status;
#[cfg(test)]
mod tests;
mod write;

pub use allow::{Allowlist, Network};
pub use auth::unsupported_restapi_settings;
pub use body::{cluster_json, history_json, metrics_text, patroni_json};
pub use control::{Control, LocalReply, LocalRequest};
pub use health::{HealthCheck, LagMode, Query, health_status, liveness_status, readiness_status};
pub(crate) use local::restart_matches;
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
    /// Further headers, `(name, value)`: `WWW-Authenticate` on a 401.
    pub headers: Vec<(&'static str, &'static str)>,
}

impl Response {
    fn json(status: u16, value: &serde_json::Value) -> Self {
        Self {
            status,
            body: Some(("application/json", value.to_string())),
            headers: Vec::new(),
        }
    }

    fn status_only(status: u16) -> Self {
        Self {
            status,
            body: None,
            headers: Vec::new(),
        }
    }
}

/// The API's whole read-side behaviour (the write side is served by [`serve`]): the answer to `method target` (`target` is the
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
        "cluster" => Response::json(200, &cluster_json(cluster.unwrap_or(&EMPTY), &node.scope)),
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
            headers: Vec::new(),
        },
        "liveness" => Response::status_only(liveness_status(node, now)),
        "readiness" => Response::status_only(readiness_status(query, node, cluster)),
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

/// Python's `send_error` body shape, so that a client printing the body says why;
/// `explain`, when not empty, is the line Python's `send_error(code, message, explain)`
/// adds.
fn error_page(status: u16, message: &str, explain: &str) -> Response {
    let explanation = if explain.is_empty() {
        String::new()
    } else {
        format!("<p>Error code explanation: {status} - {explain}.</p>")
    };
    Response {
        status,
        body: Some((
            "text/html",
            format!(
                "<html><head><title>Error response</title></head><body>\
                 <h1>Error response</h1><p>Error code: {status}</p>\
                 <p>Message: {message}.</p>{explanation}</body></html>\n"
            ),
        )),
        headers: Vec::new(),
    }
}

fn not_found() -> Response {
    error_page(404, "Not Found", "")
}

fn bad_gateway() -> Response {
    error_page(502, "Bad Gateway", "")
}
