//! The bodies of `GET /patroni`, `/cluster`, `/history` and `/metrics`.

use std::fmt::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

use dcs_core::ClusterState;
use dcs_core::model::{MemberState, Role};
use serde_json::{Map, Value, json};

use super::status::{NodeStatus, Xlog, cluster_unlocked, is_standby_cluster, is_sync_standby};

/// The status document of `GET /patroni` (and the body of every health check).
///
/// Other members parse it during the leader race (`role`, `xlog`, `timeline`, `tags`,
/// `watchdog_failed`), `patronictl version` reads `patroni.version`. Field order and
/// presence follow Patroni's `get_postgresql_status` and `_write_status_response`: without
/// a PostgreSQL status only `state` and `role` describe PostgreSQL; optional flags appear
/// only when true. Times are UTC in Python's `str(datetime)` form
/// (`2024-05-01 10:00:00.250000+00:00`). `role` is `primary` (Patroni 4.x), never `master`.
#[must_use]
pub fn patroni_json(node: &NodeStatus, cluster: Option<&ClusterState>) -> Value {
    let mut doc = Map::new();
    doc.insert("state".into(), node.state.as_str().into());
    if let Some(pg) = &node.postgres {
        doc.insert(
            "postmaster_start_time".into(),
            pg.postmaster_start_time.map(python_datetime).into(),
        );
        doc.insert("role".into(), node.role.as_str().into());
        doc.insert("server_version".into(), pg.server_version.into());
        let xlog = match &pg.xlog {
            Xlog::Primary { location } => json!({ "location": location }),
            Xlog::Replica {
                received_location,
                replayed_location,
                replayed_timestamp,
                paused,
            } => json!({
                "received_location": received_location,
                "replayed_location": replayed_location,
                "replayed_timestamp": replayed_timestamp.map(python_datetime),
                "paused": paused,
            }),
        };
        doc.insert("xlog".into(), xlog);
        if is_sync_standby(&node.name, &node.role, cluster) {
            doc.insert("sync_standby".into(), true.into());
        }
        if let Some(timeline) = pg.timeline {
            doc.insert("timeline".into(), timeline.into());
        }
        if let Some(state) = &pg.replication_state {
            doc.insert("replication_state".into(), state.as_str().into());
        }
        if !pg.replication.is_empty() {
            let rows = pg
                .replication
                .iter()
                .map(|r| {
                    json!({
                        "usename": r.usename,
                        "application_name": r.application_name,
                        "client_addr": r.client_addr,
                        "state": r.state,
                        "sync_state": r.sync_state,
                        "sync_priority": r.sync_priority,
                    })
                })
                .collect();
            doc.insert("replication".into(), Value::Array(rows));
        }
    } else {
        doc.insert("role".into(), node.role.as_str().into());
    }
    if cluster_unlocked(cluster) {
        doc.insert("cluster_unlocked".into(), true.into());
    }
    if node.failsafe_active {
        doc.insert("failsafe_mode_is_active".into(), true.into());
    }
    doc.insert("dcs_last_seen".into(), node.dcs_last_seen.into());
    if !node.tags.is_empty() {
        doc.insert("tags".into(), Value::Object(node.tags.clone()));
    }
    if let Some(sysid) = &node.system_identifier {
        doc.insert("database_system_identifier".into(), sysid.as_str().into());
    }
    if node.pending_restart {
        doc.insert("pending_restart".into(), true.into());
    }
    if !node.pending_restart_reason.is_empty() {
        doc.insert(
            "pending_restart_reason".into(),
            Value::Object(node.pending_restart_reason.clone()),
        );
    }
    if let Some(restart) = &node.scheduled_restart {
        doc.insert("scheduled_restart".into(), Value::Object(restart.clone()));
    }
    doc.insert(
        "patroni".into(),
        json!({ "version": node.version, "scope": node.scope, "name": node.name }),
    );
    if node.watchdog_failed {
        doc.insert("watchdog_failed".into(), true.into());
    }
    if node.paused {
        doc.insert("pause".into(), true.into());
    }
    Value::Object(doc)
}

/// `GET /cluster`: Patroni's `cluster_as_json` of the last cluster view.
///
/// `members` sorted by name, each with `name`, `role` (`leader`, `standby_leader`,
/// `sync_standby` or `replica`), `state`, `api_url`, `host`/`port` from `conn_url`,
/// `timeline`, `pending_restart`, `scheduled_restart`, `tags` when published, and for
/// non-leaders `lag` in bytes behind `/status`'s optime (`"unknown"` without
/// `xlog_location`). Then `pause` and `scheduled_switchover` when set.
#[must_use]
pub fn cluster_json(cluster: &ClusterState) -> Value {
    let leader = cluster.leader.as_ref().map(|l| l.name.as_str());
    let cluster_lsn = cluster
        .status
        .as_ref()
        .and_then(|s| s.value.optime)
        .unwrap_or(0);
    let standby = is_standby_cluster(Some(cluster));
    let sync = cluster.sync.as_ref().map(|s| &s.value);
    let mut members: Vec<Value> = cluster
        .members
        .iter()
        .map(|m| {
            let data = &m.data;
            let role = if Some(m.name.as_str()) == leader {
                if standby { "standby_leader" } else { "leader" }
            } else if sync.is_some_and(|s| s.matches(&m.name)) {
                "sync_standby"
            } else {
                "replica"
            };
            let state = match &data.state {
                MemberState::Unknown => "",
                state => state.as_str(),
            };
            let mut member = Map::new();
            member.insert("name".into(), m.name.as_str().into());
            member.insert("role".into(), role.into());
            member.insert("state".into(), state.into());
            member.insert("api_url".into(), data.api_url.clone().into());
            if let Some((host, port)) = data.conn_url.as_deref().and_then(host_port) {
                member.insert("host".into(), host.into());
                if let Some(port) = port {
                    member.insert("port".into(), port.into());
                }
            }
            if let Some(timeline) = data.timeline {
                member.insert("timeline".into(), timeline.into());
            }
            for key in [
                "pending_restart",
                "pending_restart_reason",
                "scheduled_restart",
            ] {
                if let Some(value) = data.extra.get(key) {
                    member.insert(key.into(), value.clone());
                }
            }
            if !data.tags.is_empty() {
                member.insert("tags".into(), Value::Object(data.tags.clone()));
            }
            if Some(m.name.as_str()) != leader {
                let lag = match data.xlog_location {
                    None => Value::from("unknown"),
                    Some(lsn) => cluster_lsn.saturating_sub(lsn).into(),
                };
                member.insert("lag".into(), lag);
            }
            Value::Object(member)
        })
        .collect();
    members.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));

    let mut doc = Map::new();
    doc.insert("members".into(), Value::Array(members));
    if cluster.config.as_ref().is_some_and(|c| c.value.pause()) {
        doc.insert("pause".into(), true.into());
    }
    if let Some(failover) = cluster.failover.as_ref().map(|f| &f.value)
        && let Some(at) = &failover.scheduled_at
    {
        let mut scheduled = Map::new();
        scheduled.insert("at".into(), at.as_str().into());
        if let Some(from) = &failover.leader {
            scheduled.insert("from".into(), from.as_str().into());
        }
        if let Some(to) = &failover.candidate {
            scheduled.insert("to".into(), to.as_str().into());
        }
        doc.insert("scheduled_switchover".into(), Value::Object(scheduled));
    }
    Value::Object(doc)
}

/// `GET /history`: the `history` key's lines
/// (`[[timeline, lsn, reason, timestamp, new_leader], ...]`), `[]` when there are none.
#[must_use]
pub fn history_json(cluster: &ClusterState) -> Value {
    cluster
        .history
        .as_ref()
        .and_then(|h| serde_json::from_str(&h.value.to_json()).ok())
        .unwrap_or_else(|| Value::Array(Vec::new()))
}

/// `GET /metrics`: Prometheus text exposition with Patroni 4.x's metric names, help
/// texts and labels (`{scope="...",name="..."}`).
///
/// `patroni_version` is the version without dots, each part padded to two digits
/// (`4.1.4` → `040104`). Times are Unix seconds, 0 when unknown. Not published (yet):
/// `patroni_failsafe_mode_enabled`, `patroni_failsafe_member`,
/// `patroni_failover_priority` (Patroni 4.1+), and 3.x's `patroni_master`.
#[must_use]
#[allow(
    clippy::too_many_lines,
    reason = "one flat table of Patroni's metrics, in its order, reads best in one place"
)]
pub fn metrics_text(node: &NodeStatus, cluster: Option<&ClusterState>) -> String {
    let pg = node.postgres.as_ref();
    let labels = format!(
        "{{scope=\"{}\",name=\"{}\"}}",
        escape_label(&node.scope),
        escape_label(&node.name)
    );
    let (location, received, replayed, replayed_ts, paused) = match pg.map(|pg| &pg.xlog) {
        Some(Xlog::Primary { location }) => (*location, 0, 0, None, false),
        Some(Xlog::Replica {
            received_location,
            replayed_location,
            replayed_timestamp,
            paused,
        }) => (
            0,
            *received_location,
            *replayed_location,
            *replayed_timestamp,
            *paused,
        ),
        None => (0, 0, 0, None, false),
    };
    let replication_state = pg.and_then(|pg| pg.replication_state.as_deref());
    let version = node
        .version
        .split('.')
        .fold(String::new(), |mut out, part| {
            let _ = write!(out, "{part:0>2}");
            out
        });
    let running = node.state == MemberState::Running;
    let flag = |b: bool| u8::from(b).to_string();

    let metrics: Vec<(&str, &str, &str, String)> = vec![
        (
            "patroni_version",
            "Patroni semver without periods.",
            "gauge",
            version,
        ),
        (
            "patroni_postgres_running",
            "Value is 1 if Postgres is running, 0 otherwise.",
            "gauge",
            flag(running),
        ),
        (
            "patroni_postmaster_start_time",
            "Epoch seconds since Postgres started.",
            "gauge",
            epoch_seconds(pg.and_then(|pg| pg.postmaster_start_time)),
        ),
        (
            "patroni_primary",
            "Value is 1 if this node is the leader, 0 otherwise.",
            "gauge",
            flag(node.role == Role::Primary),
        ),
        (
            "patroni_xlog_location",
            "Current location of the Postgres transaction log, 0 if this node is not the leader.",
            "counter",
            location.to_string(),
        ),
        (
            "patroni_standby_leader",
            "Value is 1 if this node is the standby_leader, 0 otherwise.",
            "gauge",
            flag(node.role == Role::StandbyLeader),
        ),
        (
            "patroni_replica",
            "Value is 1 if this node is a replica, 0 otherwise.",
            "gauge",
            flag(node.role == Role::Replica),
        ),
        (
            "patroni_sync_standby",
            "Value is 1 if this node is a sync standby, 0 otherwise.",
            "gauge",
            flag(pg.is_some() && is_sync_standby(&node.name, &node.role, cluster)),
        ),
        (
            "patroni_quorum_standby",
            "Value is 1 if this node is a quorum standby, 0 otherwise.",
            "gauge",
            flag(false),
        ),
        (
            "patroni_xlog_received_location",
            "Current location of the received Postgres transaction log, 0 if this node is not a replica.",
            "counter",
            received.to_string(),
        ),
        (
            "patroni_xlog_replayed_location",
            "Current location of the replayed Postgres transaction log, 0 if this node is not a replica.",
            "counter",
            replayed.to_string(),
        ),
        (
            "patroni_xlog_replayed_timestamp",
            "Current timestamp of the replayed Postgres transaction log, 0 if null.",
            "gauge",
            epoch_seconds(replayed_ts),
        ),
        (
            "patroni_xlog_paused",
            "Value is 1 if the Postgres xlog is paused, 0 otherwise.",
            "gauge",
            flag(paused),
        ),
        (
            "patroni_postgres_streaming",
            "Value is 1 if Postgres is streaming, 0 otherwise.",
            "gauge",
            flag(replication_state == Some("streaming")),
        ),
        (
            "patroni_postgres_in_archive_recovery",
            "Value is 1 if Postgres is replicating from archive, 0 otherwise.",
            "gauge",
            flag(replication_state == Some("in archive recovery")),
        ),
        (
            "patroni_postgres_server_version",
            "Version of Postgres (if running), 0 otherwise.",
            "gauge",
            pg.map_or(0, |pg| pg.server_version).to_string(),
        ),
        (
            "patroni_cluster_unlocked",
            "Value is 1 if the cluster is unlocked, 0 if locked.",
            "gauge",
            flag(cluster_unlocked(cluster)),
        ),
        (
            "patroni_failsafe_mode_is_active",
            "Value is 1 if failsafe mode is active, 0 if inactive.",
            "gauge",
            flag(node.failsafe_active),
        ),
        (
            "patroni_postgres_timeline",
            "Postgres timeline of this node (if running), 0 otherwise.",
            "counter",
            pg.and_then(|pg| pg.timeline).unwrap_or(0).to_string(),
        ),
        (
            "patroni_dcs_last_seen",
            "Epoch timestamp when DCS was last contacted successfully by Patroni.",
            "gauge",
            node.dcs_last_seen.to_string(),
        ),
        (
            "patroni_pending_restart",
            "Value is 1 if the node needs a restart, 0 otherwise.",
            "gauge",
            flag(node.pending_restart),
        ),
        (
            "patroni_is_paused",
            "Value is 1 if auto failover is disabled, 0 otherwise.",
            "gauge",
            flag(node.paused),
        ),
    ];
    let mut text = String::new();
    for (name, help, kind, value) in metrics {
        let _ = writeln!(
            text,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name}{labels} {value}"
        );
    }
    if let Some(index) = POSTGRES_STATES
        .iter()
        .position(|s| *s == node.state.as_str())
    {
        let _ = writeln!(
            text,
            "# HELP patroni_postgres_state Numeric representation of Postgres state.\n\
             # TYPE patroni_postgres_state gauge\npatroni_postgres_state{labels} {index}"
        );
    }
    text
}

/// Patroni 4.x's `PostgresqlState` values, in the order `patroni_postgres_state` numbers
/// them.
const POSTGRES_STATES: [&str; 15] = [
    "initializing new cluster",
    "initdb failed",
    "running custom bootstrap script",
    "custom bootstrap failed",
    "creating replica",
    "running",
    "starting",
    "starting after custom bootstrap",
    "start failed",
    "restarting",
    "restart failed",
    "stopping",
    "stopped",
    "stop failed",
    "crashed",
];

fn escape_label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn epoch_seconds(time: Option<SystemTime>) -> String {
    time.and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or_else(|| "0".to_owned(), |d| d.as_secs_f64().to_string())
}

/// `postgres://[user@]host[:port]/db` → host and port, as Patroni's `conn_kwargs`.
fn host_port(conn_url: &str) -> Option<(String, Option<u16>)> {
    let rest = conn_url
        .strip_prefix("postgres://")
        .or_else(|| conn_url.strip_prefix("postgresql://"))?;
    let netloc = rest.split(['/', '?']).next().unwrap_or("");
    let hostport = netloc.rsplit_once('@').map_or(netloc, |(_, h)| h);
    let (host, port) = if let Some(bracketed) = hostport.strip_prefix('[') {
        let (host, after) = bracketed.split_once(']')?;
        (host, after.strip_prefix(':'))
    } else {
        match hostport.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (hostport, None),
        }
    };
    (!host.is_empty()).then(|| (host.to_owned(), port.and_then(|p| p.parse().ok())))
}

/// Python's `str(datetime)` of an aware UTC datetime: `YYYY-MM-DD HH:MM:SS[.ffffff]+00:00`.
fn python_datetime(time: SystemTime) -> String {
    crate::civil::python_isoformat(time, ' ')
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn datetimes_print_like_python() {
        let t = UNIX_EPOCH + Duration::from_secs(1_714_557_600);
        assert_eq!(python_datetime(t), "2024-05-01 10:00:00+00:00");
        let t = t + Duration::from_millis(250);
        assert_eq!(python_datetime(t), "2024-05-01 10:00:00.250000+00:00");
        assert_eq!(python_datetime(UNIX_EPOCH), "1970-01-01 00:00:00+00:00");
        // A leap day.
        let t = UNIX_EPOCH + Duration::from_secs(951_782_400);
        assert_eq!(python_datetime(t), "2000-02-29 00:00:00+00:00");
    }

    #[test]
    fn conn_url_gives_host_and_port() {
        assert_eq!(
            host_port("postgres://10.0.0.2:5432/postgres"),
            Some(("10.0.0.2".into(), Some(5432)))
        );
        assert_eq!(
            host_port("postgres://u@[::1]:5433/db"),
            Some(("::1".into(), Some(5433)))
        );
        assert_eq!(
            host_port("postgres://db1/postgres"),
            Some(("db1".into(), None))
        );
        assert_eq!(host_port("nonsense"), None);
    }
}
