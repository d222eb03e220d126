//! The bodies of `POST /restart` and `POST /reinitialize`: Patroni's filters and flags,
//! checked before the HA loop is asked. Pure.

use dcs_core::model::Role;
use serde_json::{Map, Value};

use super::NodeStatus;
use super::failover::Outcome;

/// An accepted `POST /restart`.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct RestartPlan {
    /// The `timeout` filter in seconds: how long PostgreSQL may take to come back.
    pub(super) timeout: Option<u64>,
    /// `schedule`: restart at this time rather than now.
    pub(super) schedule: Option<std::time::SystemTime>,
    /// The filters a scheduled restart keeps and checks again when it is due (`timeout`
    /// in seconds, the others as sent).
    pub(super) filters: Map<String, Value>,
}

/// Patroni 3.0.2's `do_POST_restart` checks, on this node's status as the HA loop last
/// published it. A restart for now must also match its filters (`restart_matches`); a
/// scheduled one is checked when it is due.
pub(super) fn plan_restart(
    request: &Map<String, Value>,
    node: &NodeStatus,
) -> Result<RestartPlan, Outcome> {
    let refuse = |status, message: String| Err(Outcome { status, message });
    if node.paused && request.contains_key("schedule") {
        return refuse(500, "Can't schedule restart in the paused state".to_owned());
    }
    let mut plan = RestartPlan {
        timeout: None,
        schedule: None,
        filters: Map::new(),
    };
    for (key, value) in request {
        match key.as_str() {
            "schedule" => {
                // Patroni's texts for a bad time.
                let time = value.as_str().and_then(crate::ha::parse_scheduled_at);
                match time {
                    Some(at) if at < std::time::SystemTime::now() => {
                        return refuse(422, "Cannot schedule restart in the past".to_owned());
                    }
                    Some(at) => plan.schedule = Some(at),
                    None => {
                        return refuse(
                            422,
                            "Unable to parse scheduled timestamp. It should be in an \
                             unambiguous format, e.g. ISO 8601"
                                .to_owned(),
                        );
                    }
                }
                continue;
            }
            "role" => {
                if !matches!(value.as_str(), Some("master" | "primary" | "replica")) {
                    return refuse(
                        400,
                        "PostgreSQL role should be either primary or replica".to_owned(),
                    );
                }
            }
            "postgres_version" => {
                if let Err(message) = postgres_version_to_int(value) {
                    return refuse(400, message);
                }
            }
            "timeout" => match parse_seconds(value) {
                Some(seconds) if seconds > 0 => {
                    plan.timeout = Some(seconds.unsigned_abs());
                    plan.filters.insert(key.clone(), seconds.into());
                    continue;
                }
                _ => {
                    return refuse(
                        400,
                        "Timeout should be a positive number of seconds".to_owned(),
                    );
                }
            },
            "restart_pending" => {}
            other => {
                return refuse(
                    400,
                    format!("Unknown filter for the scheduled restart: {other}"),
                );
            }
        }
        plan.filters.insert(key.clone(), value.clone());
    }
    if plan.schedule.is_some() || restart_matches(&plan.filters, node) {
        Ok(plan)
    } else {
        refuse(503, "restart conditions are not satisfied".to_owned())
    }
}

/// Patroni's `restart_matches`: every filter given holds for this node. `restart_pending`
/// counts by its presence, whatever its value, as in Patroni.
pub(crate) fn restart_matches(request: &Map<String, Value>, node: &NodeStatus) -> bool {
    let role_matches = request
        .get("role")
        .and_then(Value::as_str)
        .is_none_or(|role| Role::from(role) == node.role);
    // Restart only to pick up a newer binary: the running server must be older.
    let version_matches = request
        .get("postgres_version")
        .and_then(|v| postgres_version_to_int(v).ok())
        .is_none_or(|wanted| {
            wanted
                > node
                    .postgres
                    .as_ref()
                    .map_or(0, |p| u64::from(p.server_version))
        });
    let pending_matches = !request.contains_key("restart_pending") || node.pending_restart;
    role_matches && version_matches && pending_matches
}

/// Patroni's `postgres_version_to_int`: `X.Y.Z` (or `X.Y` from 10 on) as PostgreSQL's
/// `server_version_num`, e.g. `9.5.3` → 90503, `16.4` → 160004.
fn postgres_version_to_int(value: &Value) -> Result<u64, String> {
    let text = match value {
        Value::String(text) => text.clone(),
        other => other.to_string(),
    };
    let components: Vec<u64> = text
        .split('.')
        .map(|part| part.trim().parse::<u64>())
        .collect::<Result<_, _>>()
        .map_err(|_| format!("Invalid PostgreSQL version: {text}"))?;
    let [major, rest @ ..] = components.as_slice() else {
        return Err(format!("Invalid PostgreSQL version: {text}"));
    };
    let (minor, patch) = match rest {
        [patch] if *major >= 10 => (0, *patch),
        [minor, patch] => (*minor, *patch),
        _ => {
            return Err(format!(
                "Invalid PostgreSQL version format: X.Y or X.Y.Z is accepted: {text}"
            ));
        }
    };
    if minor > 99 || patch > 99 {
        return Err(format!("Invalid PostgreSQL version: {text}"));
    }
    Ok(major * 10_000 + minor * 100 + patch)
}

/// Patroni's `parse_int(value, 's')` for the restart `timeout`: a number of seconds, or a
/// string with an optional unit (`30`, `30s`, `5min`, `1h`, `1500ms`), rounded to whole
/// seconds. `None` for anything else.
fn parse_seconds(value: &Value) -> Option<i64> {
    match value {
        Value::Number(number) => number
            .as_i64()
            .or_else(|| number.as_f64().map(|f| f.round() as i64)),
        Value::String(text) => {
            let text = text.trim();
            let split = text
                .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '-' || c == '+'))
                .unwrap_or(text.len());
            let (number, unit) = text.split_at(split);
            let number: f64 = number.parse().ok()?;
            let per_unit = match unit.trim() {
                "ms" => 0.001,
                "" | "s" => 1.0,
                "min" => 60.0,
                "h" => 3600.0,
                "d" => 86_400.0,
                _ => return None,
            };
            Some((number * per_unit).round() as i64)
        }
        _ => None,
    }
}

/// Patroni's `parse_bool`: `true`/`on`/`yes`/`1` in any case (and JSON `true`, `1`);
/// anything else is false here, as Patroni's `parse_bool(...) or False`.
pub(super) fn parse_bool(value: Option<&Value>) -> bool {
    let text = match value {
        Some(Value::String(text)) => text.to_lowercase(),
        Some(Value::Bool(flag)) => return *flag,
        Some(Value::Number(number)) => number.to_string(),
        _ => return false,
    };
    matches!(text.as_str(), "on" | "true" | "yes" | "1")
}

#[cfg(test)]
mod tests {
    use dcs_core::model::MemberState;
    use serde_json::json;

    use super::*;
    use crate::api::{PostgresStatus, Xlog};

    fn node(role: Role, server_version: u32, pending_restart: bool) -> NodeStatus {
        let mut node = NodeStatus::new("batman", "pg0", "4.1.4");
        node.state = MemberState::Running;
        node.role = role;
        node.pending_restart = pending_restart;
        node.postgres = Some(PostgresStatus {
            postmaster_start_time: None,
            server_version,
            xlog: Xlog::Primary { location: 0 },
            timeline: Some(1),
            replication_state: None,
            replication: vec![],
        });
        node
    }

    fn body(value: Value) -> Map<String, Value> {
        match value {
            Value::Object(map) => map,
            other => panic!("not an object: {other}"),
        }
    }

    #[test]
    #[allow(clippy::too_many_lines, reason = "one table, one case per filter")]
    fn restart_filters_decide_like_patroni() {
        let primary = node(Role::Primary, 150_004, false);
        let pending = node(Role::Replica, 150_004, true);
        let mut paused = primary.clone();
        paused.paused = true;
        let ok = |timeout, filters| {
            Ok(RestartPlan {
                timeout,
                schedule: None,
                filters: body(filters),
            })
        };
        let refused = |status, message: &str| {
            Err(Outcome {
                status,
                message: message.to_owned(),
            })
        };
        let table: Vec<(&str, Value, &NodeStatus, Result<RestartPlan, Outcome>)> = vec![
            ("no filter", json!({}), &primary, ok(None, json!({}))),
            (
                "role as 3.x names it",
                json!({"role": "master"}),
                &primary,
                ok(None, json!({"role": "master"})),
            ),
            (
                "role matches",
                json!({"role": "primary"}),
                &primary,
                ok(None, json!({"role": "primary"})),
            ),
            (
                "role differs",
                json!({"role": "replica"}),
                &primary,
                refused(503, "restart conditions are not satisfied"),
            ),
            (
                "unknown role",
                json!({"role": "leader"}),
                &primary,
                refused(400, "PostgreSQL role should be either primary or replica"),
            ),
            (
                "a newer version is wanted",
                json!({"postgres_version": "15.5"}),
                &primary,
                ok(None, json!({"postgres_version": "15.5"})),
            ),
            (
                "the running version is that new already",
                json!({"postgres_version": "15.4"}),
                &primary,
                refused(503, "restart conditions are not satisfied"),
            ),
            (
                "old-style version",
                json!({"postgres_version": "9.6"}),
                &primary,
                refused(
                    400,
                    "Invalid PostgreSQL version format: X.Y or X.Y.Z is accepted: 9.6",
                ),
            ),
            (
                "no version",
                json!({"postgres_version": "a.b"}),
                &primary,
                refused(400, "Invalid PostgreSQL version: a.b"),
            ),
            (
                "pending restart wanted but not needed",
                json!({"restart_pending": true}),
                &primary,
                refused(503, "restart conditions are not satisfied"),
            ),
            (
                "pending restart wanted and needed",
                json!({"restart_pending": true, "role": "replica"}),
                &pending,
                ok(None, json!({"restart_pending": true, "role": "replica"})),
            ),
            (
                "timeout in seconds",
                json!({"timeout": 30}),
                &primary,
                ok(Some(30), json!({"timeout": 30})),
            ),
            (
                "timeout with a unit",
                json!({"timeout": "2min"}),
                &primary,
                ok(Some(120), json!({"timeout": 120})),
            ),
            (
                "zero timeout",
                json!({"timeout": 0}),
                &primary,
                refused(400, "Timeout should be a positive number of seconds"),
            ),
            (
                "timeout that is no number",
                json!({"timeout": "soon"}),
                &primary,
                refused(400, "Timeout should be a positive number of seconds"),
            ),
            (
                "unknown filter",
                json!({"when": "now"}),
                &primary,
                refused(400, "Unknown filter for the scheduled restart: when"),
            ),
            (
                "schedule while paused",
                json!({"schedule": "2999-01-01T00:00:00Z"}),
                &paused,
                refused(500, "Can't schedule restart in the paused state"),
            ),
            (
                "schedule in the past",
                json!({"schedule": "2000-01-01T00:00:00Z"}),
                &primary,
                refused(422, "Cannot schedule restart in the past"),
            ),
            (
                "a schedule: its filters are checked when it is due",
                json!({"schedule": "2999-01-01T00:00:00Z", "role": "replica", "timeout": "1min"}),
                &primary,
                Ok(RestartPlan {
                    timeout: Some(60),
                    schedule: crate::ha::parse_scheduled_at("2999-01-01T00:00:00Z"),
                    filters: body(json!({"role": "replica", "timeout": 60})),
                }),
            ),
        ];
        for (name, request, node, expected) in table {
            assert_eq!(plan_restart(&body(request), node), expected, "{name}");
        }
    }

    #[test]
    fn versions_convert_like_postgres_version_to_int() {
        for (text, expected) in [
            ("9.5.3", Ok(90_503)),
            ("9.3.13", Ok(90_313)),
            ("10.1", Ok(100_001)),
            ("16.4", Ok(160_004)),
            ("16.0.1", Ok(160_001)),
        ] {
            assert_eq!(postgres_version_to_int(&json!(text)), expected, "{text}");
        }
        for text in ["10", "9.6", "1.2.3.4", "a.b.c", "", "9.100.1"] {
            assert!(postgres_version_to_int(&json!(text)).is_err(), "{text}");
        }
    }

    #[test]
    fn flags_read_like_parse_bool() {
        for (value, expected) in [
            (Some(json!(true)), true),
            (Some(json!("on")), true),
            (Some(json!("YES")), true),
            (Some(json!(1)), true),
            (Some(json!("1")), true),
            (Some(json!(false)), false),
            (Some(json!("off")), false),
            (Some(json!("maybe")), false),
            (Some(json!(null)), false),
            (None, false),
        ] {
            assert_eq!(parse_bool(value.as_ref()), expected, "{value:?}");
        }
    }
}
