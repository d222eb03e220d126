//! `POST /switchover` and `POST /failover`: which requests are accepted, and what the
//! cluster's next state means for an accepted one. Pure; the DCS write and the polling
//! live in [`write`](super::write).
//!
//! The checks, their order, codes and texts are Patroni 3.0.2's `do_POST_failover` and
//! `is_failover_possible`, with one difference: Patroni asks every candidate's REST API
//! whether it may be promoted, we read the candidate's member key. A member key exists
//! only while its agent renews it, and `nofailover`/`failover_priority` are the tags it
//! publishes there, so the answer is the same except for a watchdog that failed since
//! (the HA loop refuses such a promotion anyway).

use std::time::SystemTime;

use dcs_core::ClusterState;
use dcs_core::model::Failover;
use serde_json::{Map, Value};

use crate::ha::parse_scheduled_at;

/// Which endpoint was called; the texts differ only in this word.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Action {
    /// `POST /switchover`: away from a named leader, to a candidate or any member.
    Switchover,
    /// `POST /failover`: to a named candidate, even from an unhealthy cluster.
    Failover,
}

impl Action {
    fn name(self) -> &'static str {
        match self {
            Self::Switchover => "switchover",
            Self::Failover => "failover",
        }
    }

    fn title(self) -> &'static str {
        match self {
            Self::Switchover => "Switchover",
            Self::Failover => "Failover",
        }
    }

    /// Python's `action[:-4] + 'ed'`: `switched`, `failed`.
    fn past(self) -> &'static str {
        match self {
            Self::Switchover => "switched",
            Self::Failover => "failed",
        }
    }
}

/// A refused or finished request: the status code and Patroni's text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Outcome {
    /// The HTTP status code.
    pub(super) status: u16,
    /// The body text.
    pub(super) message: String,
}

impl Outcome {
    fn new(status: u16, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }
}

/// Checks a request body against the cluster as just read and returns the `failover`
/// key to write; `scheduled_at` is set for a scheduled request.
///
/// `now` is the wall clock a `scheduled_at` must not be before.
pub(super) fn validate(
    action: Action,
    request: &Map<String, Value>,
    cluster: &ClusterState,
    now: SystemTime,
) -> Result<Failover, Outcome> {
    let leader = text_field(request, "leader")?;
    // `patronictl` sends `candidate`; older clients and the DCS value say `member`.
    let candidate = match text_field(request, "candidate")? {
        Some(candidate) => Some(candidate),
        None => text_field(request, "member")?,
    };
    let scheduled_at = text_field(request, "scheduled_at")?;
    let paused = cluster.config.as_ref().is_some_and(|c| c.value.pause());
    let (name, title) = (action.name(), action.title());

    if action == Action::Failover && candidate.is_none() {
        return Err(Outcome::new(
            400,
            "Failover could be performed only to a specific candidate",
        ));
    }
    if action == Action::Switchover && leader.is_none() {
        return Err(Outcome::new(
            400,
            "Switchover could be performed only from a specific leader",
        ));
    }
    if let Some(at) = &scheduled_at {
        if leader.is_none() {
            return Err(Outcome::new(
                400,
                format!("Scheduled {name} is possible only from a specific leader"),
            ));
        }
        if paused {
            return Err(Outcome::new(
                400,
                format!("Can't schedule {name} in the paused state"),
            ));
        }
        check_schedule(at, action, now)?;
    }
    if paused && candidate.is_none() {
        return Err(Outcome::new(
            400,
            format!("{title} is possible only to a specific candidate in a paused state"),
        ));
    }
    // Like Patroni, a scheduled request is checked against the cluster when it is due
    // (by the HA loop), not now.
    if scheduled_at.is_none() {
        if let Some(reason) =
            impossibility(cluster, leader.as_deref(), candidate.as_deref(), action)
        {
            return Err(Outcome::new(412, reason));
        }
    }
    Ok(Failover {
        leader,
        candidate,
        scheduled_at: scheduled_at.map(|at| at.trim().to_owned()),
    })
}

/// A string field; absent, `null` and `""` are all "not given", as in Python's `or`.
fn text_field(request: &Map<String, Value>, name: &str) -> Result<Option<String>, Outcome> {
    match request.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(text)) if text.is_empty() => Ok(None),
        Some(Value::String(text)) => Ok(Some(text.clone())),
        Some(other) => Err(Outcome::new(
            400,
            format!("`{name}` must be a string, not {other}"),
        )),
    }
}

/// Patroni's `parse_schedule`: a parsable, zone-aware time that is not in the past.
fn check_schedule(at: &str, action: Action, now: SystemTime) -> Result<(), Outcome> {
    let name = action.name();
    match parse_scheduled_at(at) {
        Some(time) if time < now => Err(Outcome::new(
            422,
            format!("Cannot schedule {name} in the past"),
        )),
        Some(_) => Ok(()),
        // The same text with a zone would parse: only the zone is missing.
        None if parse_scheduled_at(&format!("{}Z", at.trim())).is_some() => Err(Outcome::new(
            400,
            format!("Timezone information is mandatory for the scheduled {name}"),
        )),
        None => Err(Outcome::new(
            422,
            "Unable to parse scheduled timestamp. It should be in an unambiguous format, e.g. ISO 8601",
        )),
    }
}

/// Patroni's `is_failover_possible`: why the request cannot succeed now, if it cannot.
fn impossibility(
    cluster: &ClusterState,
    leader: Option<&str>,
    candidate: Option<&str>,
    action: Action,
) -> Option<String> {
    let name = action.name();
    let current = cluster.leader.as_ref().map(|l| l.name.as_str());
    if leader.is_some() && current != leader {
        return Some("leader name does not match".to_owned());
    }
    let synchronous = cluster
        .config
        .as_ref()
        .is_some_and(|c| c.value.synchronous_mode());
    let sync_standbys: &[String] = cluster
        .sync
        .as_ref()
        .map_or(&[], |s| s.value.sync_standby.as_slice());
    let candidates: Vec<_> = if let Some(candidate) = candidate {
        if action == Action::Switchover
            && synchronous
            && !sync_standbys.iter().any(|s| s == candidate)
        {
            return Some("candidate name does not match with sync_standby".to_owned());
        }
        match cluster.member(candidate) {
            Some(member) => vec![member],
            None => return Some("candidate does not exists".to_owned()),
        }
    } else if synchronous {
        let members: Vec<_> = cluster
            .members
            .iter()
            .filter(|m| sync_standbys.contains(&m.name))
            .collect();
        if members.is_empty() {
            return Some(format!("{name} is not possible: can not find sync_standby"));
        }
        members
    } else {
        let members: Vec<_> = cluster
            .members
            .iter()
            .filter(|m| Some(m.name.as_str()) != current && m.data.api_url.is_some())
            .collect();
        if members.is_empty() {
            return Some(format!(
                "{name} is not possible: cluster does not have members except leader"
            ));
        }
        members
    };
    if candidates.iter().any(|m| !m.data.nofailover()) {
        None
    } else {
        Some(format!(
            "{name} is not possible: no good candidates have been found"
        ))
    }
}

/// Patroni's `poll_failover_result` for one fresh read of the cluster: the final answer
/// once the lock moved away from `old_leader` or the `failover` key was cleared without
/// that, `None` while the request is still pending.
pub(super) fn poll_outcome(
    action: Action,
    old_leader: Option<&str>,
    candidate: Option<&str>,
    cluster: &ClusterState,
) -> Option<Outcome> {
    let (past, title) = (action.past(), action.title());
    if let Some(new) = cluster.leader.as_ref().map(|l| l.name.as_str()) {
        if Some(new) != old_leader {
            return Some(match candidate {
                Some(candidate) if candidate != new => {
                    // "Switched over to "b" instead of "c"".
                    let mut capital = past.to_owned();
                    capital[..1].make_ascii_uppercase();
                    Outcome::new(
                        200,
                        format!("{capital} over to \"{new}\" instead of \"{candidate}\""),
                    )
                }
                _ => Outcome::new(200, format!("Successfully {past} over to \"{new}\"")),
            });
        }
    }
    let pending = cluster
        .failover
        .as_ref()
        .is_some_and(|f| !f.value.is_empty());
    (!pending).then(|| Outcome::new(503, format!("{title} failed")))
}

/// The answer when polling ran out of time without an outcome.
pub(super) fn status_unknown(action: Action) -> Outcome {
    Outcome::new(503, format!("{} status unknown", action.title()))
}

/// The answer to an accepted scheduled request.
pub(super) fn scheduled(action: Action) -> Outcome {
    Outcome::new(202, format!("{} scheduled", action.title()))
}

/// The answer when the `failover` key could not be written.
pub(super) fn write_failed(action: Action) -> Outcome {
    Outcome::new(
        503,
        format!("failed to write {} key into DCS", action.name()),
    )
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use dcs_core::model::{RawEntry, Version};
    use serde_json::json;

    use super::*;

    fn cluster(keys: &[(&str, &str)]) -> ClusterState {
        ClusterState::from_entries(keys.iter().map(|(key, value)| RawEntry {
            key: (*key).to_owned(),
            value: value.as_bytes().to_vec(),
            version: Version::new(1),
            owner: None,
            created: 1,
        }))
    }

    const MEMBER: &str =
        r#"{"api_url":"http://127.0.0.1:8008/patroni","state":"running","role":"replica"}"#;
    const NOFAILOVER: &str = r#"{"api_url":"http://127.0.0.1:8008/patroni","state":"running","role":"replica","tags":{"nofailover":true}}"#;

    /// pg0 leads; pg1 and pg2 replicate, pg2 must never be promoted.
    fn three() -> ClusterState {
        cluster(&[
            ("leader", "pg0"),
            ("members/pg0", MEMBER),
            ("members/pg1", MEMBER),
            ("members/pg2", NOFAILOVER),
            ("config", r#"{"ttl":30,"loop_wait":10}"#),
        ])
    }

    fn with_config(config: &str) -> ClusterState {
        let mut cluster = three();
        cluster.config = self::cluster(&[("config", config)]).config;
        cluster
    }

    /// 2024-05-01T10:00:00Z.
    fn now() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_714_557_600)
    }

    fn body(value: Value) -> Map<String, Value> {
        match value {
            Value::Object(map) => map,
            other => panic!("not an object: {other}"),
        }
    }

    fn failover(leader: Option<&str>, candidate: Option<&str>, at: Option<&str>) -> Failover {
        Failover {
            leader: leader.map(str::to_owned),
            candidate: candidate.map(str::to_owned),
            scheduled_at: at.map(str::to_owned),
        }
    }

    /// Name, endpoint, body, cluster, expected result.
    type ValidationCase<'a> = (
        &'a str,
        Action,
        Value,
        &'a ClusterState,
        Result<Failover, Outcome>,
    );

    /// Name, endpoint, candidate, keys read, expected outcome.
    type PollCase<'a> = (
        &'a str,
        Action,
        Option<&'a str>,
        &'a [(&'a str, &'a str)],
        Option<(u16, &'a str)>,
    );

    #[test]
    #[allow(clippy::too_many_lines, reason = "one table, one case per check")]
    fn requests_are_validated_in_patronis_order_with_its_codes() {
        use Action::{Failover as F, Switchover as S};
        let healthy = three();
        let paused = with_config(r#"{"pause":true}"#);
        let sync = {
            let mut c = with_config(r#"{"synchronous_mode":true}"#);
            c.sync = cluster(&[("sync", r#"{"leader":"pg0","sync_standby":"pg2"}"#)]).sync;
            c
        };
        let alone = cluster(&[("leader", "pg0"), ("members/pg0", MEMBER)]);
        let no_good = cluster(&[
            ("leader", "pg0"),
            ("members/pg0", MEMBER),
            ("members/pg2", NOFAILOVER),
        ]);
        let refused = |status, text: &str| Err(Outcome::new(status, text));
        let table: Vec<ValidationCase<'_>> = vec![
            (
                "switchover to a named candidate",
                S,
                json!({"leader": "pg0", "candidate": "pg1"}),
                &healthy,
                Ok(failover(Some("pg0"), Some("pg1"), None)),
            ),
            (
                "patronictl's nulls are absent values",
                S,
                json!({"leader": "pg0", "candidate": null, "scheduled_at": null}),
                &healthy,
                Ok(failover(Some("pg0"), None, None)),
            ),
            (
                "member is the candidate's other name",
                F,
                json!({"member": "pg1"}),
                &healthy,
                Ok(failover(None, Some("pg1"), None)),
            ),
            (
                "failover with a leader names it",
                F,
                json!({"leader": "pg0", "candidate": "pg1"}),
                &healthy,
                Ok(failover(Some("pg0"), Some("pg1"), None)),
            ),
            (
                "failover needs a candidate",
                F,
                json!({"leader": "pg0"}),
                &healthy,
                refused(
                    400,
                    "Failover could be performed only to a specific candidate",
                ),
            ),
            (
                "switchover needs a leader",
                S,
                json!({"candidate": "pg1"}),
                &healthy,
                refused(
                    400,
                    "Switchover could be performed only from a specific leader",
                ),
            ),
            (
                "an empty leader is no leader",
                S,
                json!({"leader": "", "candidate": "pg1"}),
                &healthy,
                refused(
                    400,
                    "Switchover could be performed only from a specific leader",
                ),
            ),
            (
                "a leader that is not a string",
                S,
                json!({"leader": 5}),
                &healthy,
                refused(400, "`leader` must be a string, not 5"),
            ),
            (
                "the leader must hold the lock",
                S,
                json!({"leader": "pg1"}),
                &healthy,
                refused(412, "leader name does not match"),
            ),
            (
                "the candidate must be a member",
                S,
                json!({"leader": "pg0", "candidate": "pg9"}),
                &healthy,
                refused(412, "candidate does not exists"),
            ),
            (
                "the candidate must be allowed to fail over",
                S,
                json!({"leader": "pg0", "candidate": "pg2"}),
                &healthy,
                refused(
                    412,
                    "switchover is not possible: no good candidates have been found",
                ),
            ),
            (
                "a failover to a nofailover member is refused too",
                F,
                json!({"candidate": "pg2"}),
                &healthy,
                refused(
                    412,
                    "failover is not possible: no good candidates have been found",
                ),
            ),
            (
                "a switchover needs another member",
                S,
                json!({"leader": "pg0"}),
                &alone,
                refused(
                    412,
                    "switchover is not possible: cluster does not have members except leader",
                ),
            ),
            (
                "a switchover needs a member allowed to fail over",
                S,
                json!({"leader": "pg0"}),
                &no_good,
                refused(
                    412,
                    "switchover is not possible: no good candidates have been found",
                ),
            ),
            (
                "in synchronous mode the candidate must be a sync standby",
                S,
                json!({"leader": "pg0", "candidate": "pg1"}),
                &sync,
                refused(412, "candidate name does not match with sync_standby"),
            ),
            (
                "in synchronous mode the sync standby must be allowed to fail over",
                S,
                json!({"leader": "pg0"}),
                &sync,
                refused(
                    412,
                    "switchover is not possible: no good candidates have been found",
                ),
            ),
            (
                "paused: a failover to a candidate is allowed",
                F,
                json!({"candidate": "pg1"}),
                &paused,
                Ok(failover(None, Some("pg1"), None)),
            ),
            (
                "paused: a switchover needs a candidate",
                S,
                json!({"leader": "pg0"}),
                &paused,
                refused(
                    400,
                    "Switchover is possible only to a specific candidate in a paused state",
                ),
            ),
            (
                "a scheduled switchover is accepted with its time",
                S,
                json!({"leader": "pg0", "scheduled_at": "2024-05-01T12:00:00+02:00"}),
                &healthy,
                Ok(failover(
                    Some("pg0"),
                    None,
                    Some("2024-05-01T12:00:00+02:00"),
                )),
            ),
            (
                "a scheduled switchover is checked only when due",
                S,
                json!({"leader": "pg9", "scheduled_at": "2024-05-01T11:00:00Z"}),
                &healthy,
                Ok(failover(Some("pg9"), None, Some("2024-05-01T11:00:00Z"))),
            ),
            (
                "a scheduled failover needs a leader",
                F,
                json!({"candidate": "pg1", "scheduled_at": "2024-05-01T11:00:00Z"}),
                &healthy,
                refused(
                    400,
                    "Scheduled failover is possible only from a specific leader",
                ),
            ),
            (
                "nothing is scheduled while paused",
                S,
                json!({"leader": "pg0", "candidate": "pg1", "scheduled_at": "2024-05-01T11:00:00Z"}),
                &paused,
                refused(400, "Can't schedule switchover in the paused state"),
            ),
            (
                "a schedule needs a time zone",
                S,
                json!({"leader": "pg0", "scheduled_at": "2024-05-01T11:00:00"}),
                &healthy,
                refused(
                    400,
                    "Timezone information is mandatory for the scheduled switchover",
                ),
            ),
            (
                "a schedule in the past",
                S,
                json!({"leader": "pg0", "scheduled_at": "2024-05-01T09:59:59Z"}),
                &healthy,
                refused(422, "Cannot schedule switchover in the past"),
            ),
            (
                "a schedule that is no time",
                S,
                json!({"leader": "pg0", "scheduled_at": "tomorrow"}),
                &healthy,
                refused(
                    422,
                    "Unable to parse scheduled timestamp. It should be in an unambiguous format, e.g. ISO 8601",
                ),
            ),
        ];
        for (name, action, request, cluster, expected) in table {
            assert_eq!(
                validate(action, &body(request), cluster, now()),
                expected,
                "{name}"
            );
        }
    }

    #[test]
    fn polling_ends_when_the_lock_moves_or_the_request_is_dropped() {
        use Action::{Failover as F, Switchover as S};
        let pending = r#"{"leader":"pg0","member":"pg1"}"#;
        let table: &[PollCase<'_>] = &[
            (
                "still pending",
                S,
                Some("pg1"),
                &[("leader", "pg0"), ("failover", pending)],
                None,
            ),
            (
                "no leader yet, request still there",
                S,
                Some("pg1"),
                &[("failover", pending)],
                None,
            ),
            (
                "the candidate took over",
                S,
                Some("pg1"),
                &[("leader", "pg1")],
                Some((200, r#"Successfully switched over to "pg1""#)),
            ),
            (
                "any member took over",
                S,
                None,
                &[("leader", "pg2"), ("failover", pending)],
                Some((200, r#"Successfully switched over to "pg2""#)),
            ),
            (
                "another member took over",
                F,
                Some("pg1"),
                &[("leader", "pg2")],
                Some((200, r#"Failed over to "pg2" instead of "pg1""#)),
            ),
            (
                "the request was cleared, the leader stayed",
                S,
                Some("pg1"),
                &[("leader", "pg0"), ("failover", "{}")],
                Some((503, "Switchover failed")),
            ),
            (
                "the request was deleted, no leader",
                F,
                Some("pg1"),
                &[],
                Some((503, "Failover failed")),
            ),
        ];
        for (name, action, candidate, keys, expected) in table {
            assert_eq!(
                poll_outcome(*action, Some("pg0"), *candidate, &cluster(keys)),
                expected.map(|(status, text)| Outcome::new(status, text)),
                "{name}"
            );
        }
    }
}
