//! The authenticated endpoints: routing, body rules, and the thin I/O around the pure
//! checks in [`failover`](super::failover), [`local`](super::local) and
//! [`patch`](super::patch) — DCS reads and writes, polling, and the HA loop's queue.

use std::future::Future;
use std::time::{Duration, SystemTime};

use dcs_core::model::{ClusterConfig, Failover, Versioned};
use dcs_core::{ClusterState, Dcs, DcsExt as _, Error as DcsError, Precondition, StateKey};
use serde_json::{Map, Value};
use tokio::sync::{mpsc, oneshot};

use super::failover::{self, Action, Outcome};
use super::local::{RestartPlan, parse_bool, plan_restart};
use super::patch::patch_config;
use super::{Control, LocalReply, LocalRequest, Response, Snapshot, error_page};
use crate::ha::ScheduledRestart;

/// The largest request body read; a config document is a few KiB.
pub(super) const MAX_BODY: usize = 64 * 1024;

/// A DCS call that takes longer than this is answered with 503; the backends bound
/// their own calls by `retry_timeout`, this only keeps a wedged one from holding a
/// request for ever.
const DCS_DEADLINE: Duration = Duration::from_secs(30);

/// How long `/reload` and `/reinitialize` wait for the HA loop: it answers between two
/// cycles (`loop_wait`, 10 s by default) and a reinitialize answers once it started.
const LOOP_ANSWER_DEADLINE: Duration = Duration::from_secs(60);

/// How long `/restart` waits without a `timeout` filter: Patroni's default
/// `primary_start_timeout` (300 s) for PostgreSQL to come back, plus a minute for the
/// loop to pick the request up and stop PostgreSQL.
const RESTART_START_TIMEOUT: u64 = 300;
const RESTART_MARGIN: Duration = Duration::from_secs(60);

/// An authenticated endpoint: Patroni's `do_<METHOD>_<first path segment>`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Endpoint {
    /// `POST /switchover`.
    Switchover,
    /// `POST /failover`.
    Failover,
    /// `DELETE /switchover`: cancel a scheduled switchover.
    CancelSwitchover,
    /// `PATCH /config`.
    PatchConfig,
    /// `PUT /config`.
    PutConfig,
    /// `POST /restart`.
    Restart,
    /// `DELETE /restart`: cancel a scheduled restart.
    CancelRestart,
    /// `POST /reload`.
    Reload,
    /// `POST /reinitialize`.
    Reinitialize,
}

/// Whether and how an endpoint reads its JSON body (Patroni's `_read_json_content`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum BodyRule {
    /// A non-empty JSON object; no `Content-Length` is 411.
    Required,
    /// A JSON object or nothing at all.
    Optional,
    /// Not read.
    Ignored,
}

impl Endpoint {
    /// The endpoint for `method path`, routed on the first path segment as Patroni does.
    pub(super) fn route(method: &str, path: &str) -> Option<Self> {
        let segment = path.trim_start_matches('/').split('/').next()?;
        Some(match (method, segment) {
            ("POST", "switchover") => Self::Switchover,
            ("POST", "failover") => Self::Failover,
            ("DELETE", "switchover") => Self::CancelSwitchover,
            ("PATCH", "config") => Self::PatchConfig,
            ("PUT", "config") => Self::PutConfig,
            ("POST", "restart") => Self::Restart,
            ("DELETE", "restart") => Self::CancelRestart,
            ("POST", "reload") => Self::Reload,
            ("POST", "reinitialize") => Self::Reinitialize,
            _ => return None,
        })
    }

    /// How this endpoint reads its body.
    pub(super) fn body_rule(self) -> BodyRule {
        match self {
            Self::Switchover | Self::Failover | Self::PatchConfig | Self::PutConfig => {
                BodyRule::Required
            }
            Self::Restart | Self::Reinitialize => BodyRule::Optional,
            Self::CancelSwitchover | Self::CancelRestart | Self::Reload => BodyRule::Ignored,
        }
    }
}

/// Parses a body by `rule`. `length_given` is whether the request carried a
/// `Content-Length` (Patroni answers 411 without one where a body is required).
pub(super) fn parse_body(
    rule: BodyRule,
    length_given: bool,
    body: &[u8],
) -> Result<Map<String, Value>, Response> {
    match rule {
        BodyRule::Ignored => return Ok(Map::new()),
        BodyRule::Optional if body.is_empty() => return Ok(Map::new()),
        BodyRule::Required if !length_given => {
            return Err(error_page(
                411,
                "Length Required",
                "the request needs a JSON body with a Content-Length",
            ));
        }
        BodyRule::Optional | BodyRule::Required => {}
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) if !map.is_empty() || rule == BodyRule::Optional => Ok(map),
        Ok(Value::Object(_)) => Err(error_page(
            400,
            "Bad Request",
            "the body is an empty JSON object",
        )),
        Ok(other) => Err(error_page(
            400,
            "Bad Request",
            &format!("the body must be a JSON object, not {}", kind(&other)),
        )),
        Err(error) => Err(error_page(
            400,
            "Bad Request",
            &format!("the body is not valid JSON: {error}"),
        )),
    }
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Carries out an authenticated, well-formed request. `snapshot` is the HA loop's last
/// one, for the restart filters.
pub(super) async fn handle(
    control: &Control,
    endpoint: Endpoint,
    body: Map<String, Value>,
    snapshot: Snapshot,
) -> Response {
    let dcs = control.dcs.as_ref();
    let requests = &control.requests;
    match endpoint {
        Endpoint::Switchover => switchover(dcs, Action::Switchover, &body).await,
        Endpoint::Failover => switchover(dcs, Action::Failover, &body).await,
        Endpoint::CancelSwitchover => cancel_switchover(dcs).await,
        Endpoint::PatchConfig => patch(dcs, &body).await,
        Endpoint::PutConfig => put(dcs, body).await,
        Endpoint::CancelRestart => {
            ask(
                requests,
                |reply| LocalRequest::CancelRestart { reply },
                LOOP_ANSWER_DEADLINE,
            )
            .await
        }
        Endpoint::Restart => match plan_restart(&body, &snapshot.node) {
            Ok(RestartPlan {
                schedule: Some(at),
                filters,
                ..
            }) => {
                let restart = ScheduledRestart {
                    at,
                    filters,
                    postmaster_start_time: None,
                };
                ask(
                    requests,
                    |reply| LocalRequest::ScheduleRestart { restart, reply },
                    LOOP_ANSWER_DEADLINE,
                )
                .await
            }
            Ok(plan) => {
                let start = plan.timeout.unwrap_or(RESTART_START_TIMEOUT);
                let wait = Duration::from_secs(start).saturating_add(RESTART_MARGIN);
                ask(requests, |reply| LocalRequest::Restart { reply }, wait).await
            }
            Err(outcome) => outcome.into(),
        },
        Endpoint::Reload => {
            ask(
                requests,
                |reply| LocalRequest::Reload { reply },
                LOOP_ANSWER_DEADLINE,
            )
            .await
        }
        Endpoint::Reinitialize => {
            let force = parse_bool(body.get("force"));
            let from_leader = parse_bool(body.get("from_leader"));
            ask(
                requests,
                |reply| LocalRequest::Reinitialize {
                    force,
                    from_leader,
                    reply,
                },
                LOOP_ANSWER_DEADLINE,
            )
            .await
        }
    }
}

impl From<Outcome> for Response {
    fn from(outcome: Outcome) -> Self {
        text(outcome.status, &outcome.message)
    }
}

/// A text answer, with Patroni's `text/html` content type.
fn text(status: u16, message: &str) -> Response {
    Response {
        status,
        body: Some(("text/html", message.to_owned())),
        headers: Vec::new(),
    }
}

fn dcs_failed(error: &DcsError) -> Response {
    error_page(
        503,
        "Service Unavailable",
        &format!("the DCS could not be read or written: {error}"),
    )
}

/// Runs one DCS call under [`DCS_DEADLINE`].
async fn bounded<T>(
    call: impl Future<Output = dcs_core::Result<T>>,
    operation: &'static str,
) -> dcs_core::Result<T> {
    tokio::time::timeout(DCS_DEADLINE, call)
        .await
        .unwrap_or(Err(DcsError::Timeout {
            operation,
            after: DCS_DEADLINE,
        }))
}

async fn switchover(dcs: &dyn Dcs, action: Action, body: &Map<String, Value>) -> Response {
    let cluster = match bounded(dcs.cluster(), "cluster").await {
        Ok(cluster) => cluster,
        Err(error) => return dcs_failed(&error),
    };
    let request = match failover::validate(action, body, &cluster, SystemTime::now()) {
        Ok(request) => request,
        Err(outcome) => return outcome.into(),
    };
    tracing::info!(
        leader = request.leader.as_deref().unwrap_or(""),
        candidate = request.candidate.as_deref().unwrap_or(""),
        scheduled_at = request.scheduled_at.as_deref().unwrap_or(""),
        "REST API: {} requested",
        action_name(action)
    );
    // A plain write, as Patroni's `manual_failover`: a newer request replaces an older.
    if let Err(error) = bounded(
        dcs.set_failover(&request, Precondition::Any),
        "set_failover",
    )
    .await
    {
        tracing::warn!(%error, "REST API: could not write the failover key");
        return failover::write_failed(action).into();
    }
    if request.scheduled_at.is_some() {
        return failover::scheduled(action).into();
    }
    let old_leader = cluster.leader.as_ref().map(|l| l.name.clone());
    let loop_wait = cluster.config.as_ref().map_or(10, |c| c.value.loop_wait());
    // Patroni polls `2 * max(10, loop_wait)` times one second.
    let budget = Duration::from_secs(2 * loop_wait.max(10));
    poll(
        dcs,
        action,
        old_leader.as_deref(),
        request.candidate.as_deref(),
        budget,
    )
    .await
    .into()
}

fn action_name(action: Action) -> &'static str {
    match action {
        Action::Switchover => "switchover",
        Action::Failover => "failover",
    }
}

/// Waits until [`failover::poll_outcome`] has an answer or `budget` has passed. Wakes on
/// every change of the `leader` or `failover` key (`Dcs::watch`), and at least once a
/// second so that a backend whose watch returns late cannot stretch the answer.
async fn poll(
    dcs: &dyn Dcs,
    action: Action,
    old_leader: Option<&str>,
    candidate: Option<&str>,
    budget: Duration,
) -> Outcome {
    let deadline = tokio::time::Instant::now() + budget;
    let mut seen: Option<ClusterState> = None;
    loop {
        let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
        if remaining.is_zero() {
            return failover::status_unknown(action);
        }
        let step = remaining.min(Duration::from_secs(1));
        match &seen {
            Some(since) => {
                // A failed watch is just a shorter sleep; the read below tells.
                if bounded(dcs.watch(since, step), "watch").await.is_err() {
                    tokio::time::sleep(step).await;
                }
            }
            // Patroni sleeps before its first read too: the loop has not acted yet.
            None => tokio::time::sleep(step.min(Duration::from_millis(100))).await,
        }
        match bounded(dcs.cluster(), "cluster").await {
            Ok(cluster) => {
                if let Some(outcome) =
                    failover::poll_outcome(action, old_leader, candidate, &cluster)
                {
                    return outcome;
                }
                seen = Some(cluster);
            }
            Err(error) => {
                tracing::debug!(%error, "REST API: polling the switchover result failed");
                seen = None;
                tokio::time::sleep(step).await;
            }
        }
    }
}

async fn cancel_switchover(dcs: &dyn Dcs) -> Response {
    match bounded(dcs.cluster(), "cluster").await {
        Ok(cluster) => cancel_read_switchover(dcs, cluster.failover).await,
        Err(error) => dcs_failed(&error),
    }
}

/// The write half of `DELETE /switchover`: `failover` is the key as read.
async fn cancel_read_switchover(dcs: &dyn Dcs, failover: Option<Versioned<Failover>>) -> Response {
    let Some(current) = failover.filter(|f| f.value.scheduled_at.is_some()) else {
        return text(404, "no switchover is scheduled");
    };
    // Compare-and-set: a request written since we read is not ours to clear.
    let cleared = bounded(
        dcs.set_failover(&Failover::default(), Precondition::Version(current.version)),
        "set_failover",
    )
    .await;
    match cleared {
        Ok(_) => text(200, "scheduled switchover deleted"),
        Err(DcsError::Conflict { .. }) => conflict("the failover key changed since it was read"),
        Err(error) => dcs_failed(&error),
    }
}

fn conflict(explain: &str) -> Response {
    error_page(409, "Conflict", explain)
}

async fn patch(dcs: &dyn Dcs, body: &Map<String, Value>) -> Response {
    if let Some(refused) = refuse_synchronous_mode(body, None) {
        return refused;
    }
    match bounded(dcs.cluster(), "cluster").await {
        Ok(cluster) => patch_read_config(dcs, body, cluster.config).await,
        Err(error) => dcs_failed(&error),
    }
}

/// The write half of `PATCH /config`: `config` is the key as read, and the write
/// succeeds only if the key is still at that version.
async fn patch_read_config(
    dcs: &dyn Dcs,
    body: &Map<String, Value>,
    config: Option<Versioned<ClusterConfig>>,
) -> Response {
    let Some(config) = config else {
        return error_page(
            503,
            "Service Unavailable",
            "there is no config key in the DCS to patch",
        );
    };
    let mut data = config.value.data;
    if patch_config(&mut data, body) {
        let new = ClusterConfig { data, valid: true };
        let written = bounded(
            dcs.set_config(&new, Precondition::Version(config.version)),
            "set_config",
        )
        .await;
        match written {
            Ok(_) => {}
            Err(DcsError::Conflict { .. }) => {
                return conflict("the config key changed since it was read; read it and try again");
            }
            Err(error) => return dcs_failed(&error),
        }
        data = new.data;
    }
    Response::json(200, &Value::Object(data))
}

/// 400 for a config write that turns synchronous replication on: the agent does not
/// implement it, and accepting the setting would promise that a committed transaction
/// survives a failover. A configuration that already has it on (written by another tool;
/// the agents log a warning) may still be changed otherwise.
fn refuse_synchronous_mode(
    requested: &Map<String, Value>,
    current: Option<&Versioned<ClusterConfig>>,
) -> Option<Response> {
    let on = |data: &Map<String, Value>| {
        ClusterConfig {
            data: data.clone(),
            valid: true,
        }
        .synchronous_mode()
    };
    let turned_on = on(requested) && !current.is_some_and(|c| on(&c.value.data));
    turned_on.then(|| {
        text(
            400,
            "synchronous_mode is not supported by this agent: synchronous replication is not \
             implemented",
        )
    })
}

async fn put(dcs: &dyn Dcs, body: Map<String, Value>) -> Response {
    let cluster = match bounded(dcs.cluster(), "cluster").await {
        Ok(cluster) => cluster,
        Err(error) => return dcs_failed(&error),
    };
    if let Some(refused) = refuse_synchronous_mode(&body, cluster.config.as_ref()) {
        return refused;
    }
    if cluster.config.as_ref().is_none_or(|c| c.value.data != body) {
        let new = ClusterConfig {
            data: body,
            valid: true,
        };
        if let Err(error) = bounded(
            dcs.write(StateKey::Config, &new.to_json(), Precondition::Any),
            "write",
        )
        .await
        {
            return error_page(
                502,
                "Bad Gateway",
                &format!("the config key could not be written: {error}"),
            );
        }
        return Response::json(200, &Value::Object(new.data));
    }
    Response::json(200, &Value::Object(body))
}

/// Hands a request to the HA loop and waits at most `wait` for its answer.
pub(super) async fn ask(
    requests: &mpsc::Sender<LocalRequest>,
    make: impl FnOnce(oneshot::Sender<LocalReply>) -> LocalRequest,
    wait: Duration,
) -> Response {
    let (reply, answer) = oneshot::channel();
    let exchange = async {
        // A full queue waits too: the loop drains it between cycles.
        if requests.send(make(reply)).await.is_err() {
            return text(503, "the HA loop is not running");
        }
        match answer.await {
            Ok(LocalReply { status, message }) => text(status, &message),
            Err(_) => text(503, "the HA loop dropped the request without an answer"),
        }
    };
    tokio::time::timeout(wait, exchange)
        .await
        .unwrap_or_else(|_| {
            text(
                503,
                &format!(
                    "no answer from the HA loop within {} s; the request may still be carried out",
                    wait.as_secs()
                ),
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_route_on_method_and_first_segment() {
        for (method, path, expected) in [
            ("POST", "/switchover", Some(Endpoint::Switchover)),
            ("POST", "/failover/x", Some(Endpoint::Failover)),
            ("DELETE", "/switchover", Some(Endpoint::CancelSwitchover)),
            ("PATCH", "/config", Some(Endpoint::PatchConfig)),
            ("PUT", "/config", Some(Endpoint::PutConfig)),
            ("POST", "/restart", Some(Endpoint::Restart)),
            ("DELETE", "/restart", Some(Endpoint::CancelRestart)),
            ("POST", "/reload", Some(Endpoint::Reload)),
            ("POST", "/reinitialize", Some(Endpoint::Reinitialize)),
            ("GET", "/switchover", None),
            ("POST", "/config", None),
            ("POST", "/", None),
            ("POST", "/failsafe", None),
            ("PUT", "/switchover", None),
        ] {
            assert_eq!(Endpoint::route(method, path), expected, "{method} {path}");
        }
    }

    #[test]
    fn bodies_follow_patronis_rules() {
        use BodyRule::{Ignored, Optional, Required};
        let status = |rule, given, body: &str| match parse_body(rule, given, body.as_bytes()) {
            Ok(map) => (200, Value::Object(map).to_string()),
            Err(response) => (response.status, String::new()),
        };
        assert_eq!(
            status(Required, true, r#"{"a":1}"#),
            (200, r#"{"a":1}"#.into())
        );
        assert_eq!(status(Required, false, ""), (411, String::new()));
        assert_eq!(status(Required, true, ""), (400, String::new()));
        assert_eq!(status(Required, true, "{}"), (400, String::new()));
        assert_eq!(status(Required, true, "[1]"), (400, String::new()));
        assert_eq!(status(Required, true, "{\"a\":"), (400, String::new()));
        assert_eq!(status(Optional, false, ""), (200, "{}".into()));
        assert_eq!(status(Optional, true, ""), (200, "{}".into()));
        assert_eq!(status(Optional, true, "{}"), (200, "{}".into()));
        assert_eq!(status(Optional, true, "null"), (400, String::new()));
        assert_eq!(status(Ignored, true, "garbage"), (200, "{}".into()));
    }

    #[test]
    fn a_bad_body_says_why() {
        let Err(response) = parse_body(BodyRule::Required, true, b"{\"leader\": pg0}") else {
            panic!("accepted invalid JSON");
        };
        let (_, page) = response.body.expect("an error page");
        assert!(page.contains("not valid JSON"), "{page}");
    }

    fn memory_dcs() -> dcs_core::MemoryDcs {
        let path = dcs_core::ClusterPath::new("batman").unwrap();
        dcs_core::MemoryStore::new().client(dcs_core::ClientOptions::new(path, "pg0").unwrap())
    }

    #[tokio::test]
    async fn a_patch_based_on_a_stale_read_is_a_conflict_and_writes_nothing() {
        let dcs = memory_dcs();
        let config = |json: &str| ClusterConfig::parse(json.as_bytes());
        dcs.set_config(&config(r#"{"ttl":30}"#), Precondition::Absent)
            .await
            .unwrap();
        let stale = dcs.cluster().await.unwrap().config;
        // Someone else edits the config between our read and our write.
        dcs.set_config(&config(r#"{"ttl":40}"#), Precondition::Any)
            .await
            .unwrap();

        let mut patch = Map::new();
        patch.insert("loop_wait".into(), Value::from(5));
        let answer = patch_read_config(&dcs, &patch, stale).await;
        assert_eq!(answer.status, 409);
        let now = dcs.cluster().await.unwrap().config.unwrap().value;
        assert_eq!(now.to_json(), r#"{"ttl":40}"#, "the other edit survives");

        // A patch that changes nothing writes nothing, so it cannot conflict.
        let stale = dcs.cluster().await.unwrap().config;
        dcs.set_config(&config(r#"{"ttl":40,"x":1}"#), Precondition::Any)
            .await
            .unwrap();
        let mut same = Map::new();
        same.insert("ttl".into(), Value::from(40));
        assert_eq!(patch_read_config(&dcs, &same, stale).await.status, 200);
    }

    #[tokio::test]
    async fn cancelling_a_switchover_replaced_since_it_was_read_is_a_conflict() {
        let dcs = memory_dcs();
        let scheduled = Failover {
            leader: Some("pg0".into()),
            candidate: None,
            scheduled_at: Some("2999-01-01T00:00:00Z".into()),
        };
        dcs.set_failover(&scheduled, Precondition::Any)
            .await
            .unwrap();
        let stale = dcs.cluster().await.unwrap().failover;
        let immediate = Failover {
            leader: Some("pg0".into()),
            candidate: Some("pg1".into()),
            scheduled_at: None,
        };
        dcs.set_failover(&immediate, Precondition::Any)
            .await
            .unwrap();

        assert_eq!(cancel_read_switchover(&dcs, stale).await.status, 409);
        let now = dcs.cluster().await.unwrap().failover.unwrap().value;
        assert_eq!(now, immediate, "the newer request is kept");
    }

    #[tokio::test]
    async fn the_loop_s_answer_is_passed_on_and_silence_is_503() {
        let (requests, mut queue) = mpsc::channel(1);
        let loop_task = tokio::spawn(async move {
            let Some(LocalRequest::Reload { reply }) = queue.recv().await else {
                panic!("expected a reload");
            };
            reply
                .send(LocalReply {
                    status: 202,
                    message: "reload scheduled".into(),
                })
                .unwrap();
            // The next request is taken but never answered.
            let Some(LocalRequest::Restart { reply }) = queue.recv().await else {
                panic!("expected a restart");
            };
            drop(reply);
            // Then one is held without an answer until the caller gives up.
            let held = queue.recv().await;
            tokio::time::sleep(Duration::from_secs(5)).await;
            drop(held);
        });
        let reload = ask(
            &requests,
            |reply| LocalRequest::Reload { reply },
            Duration::from_secs(5),
        )
        .await;
        assert_eq!(reload, text(202, "reload scheduled"));
        let dropped = ask(
            &requests,
            |reply| LocalRequest::Restart { reply },
            Duration::from_secs(5),
        )
        .await;
        assert_eq!(dropped.status, 503);
        let silent = ask(
            &requests,
            |reply| LocalRequest::Reload { reply },
            Duration::from_millis(50),
        )
        .await;
        assert_eq!(silent.status, 503);
        assert!(
            silent
                .body
                .unwrap()
                .1
                .contains("no answer from the HA loop"),
            "the timeout says so"
        );
        loop_task.abort();

        let (requests, queue) = mpsc::channel(1);
        drop(queue);
        let closed = ask(
            &requests,
            |reply| LocalRequest::Reload { reply },
            Duration::from_secs(5),
        )
        .await;
        assert_eq!(closed, text(503, "the HA loop is not running"));
    }
}
