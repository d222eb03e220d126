//! The bodies of `GET /patroni`, `/cluster`, `/history` and `/metrics`.

use std::fmt::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

use dcs_core::model::{ClusterConfig, MemberState, Role};
use dcs_core::{ClusterState, Member};
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
            let key = if quorum_commit_mode(cluster) {
                "quorum_standby"
            } else {
                "sync_standby"
            };
            doc.insert(key.into(), true.into());
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

/// `GET /cluster`: Patroni 4.x's `cluster_as_json` of the last cluster view, plus the
/// `scope` its `do_GET_cluster` adds.
///
/// `members` sorted by name, each with `name`; `role` (`leader`, `standby_leader`,
/// `sync_standby` — `quorum_standby` with `synchronous_mode: quorum` — or `replica`);
/// `state`, the member's `replication_state` (`streaming`, ...) unless it is the leader
/// of a primary cluster or has none, else its `state`; `api_url`; `host`/`port` from
/// `conn_url` (port 5432 when the URL names none); `timeline`, `pending_restart`,
/// `pending_restart_reason`, `scheduled_restart`, `tags` as published. Every member but
/// the leader then has `receive_lsn`/`receive_lag`, `replay_lsn`/`replay_lag` and
/// `lsn`/`lag` (from `xlog_location`): the position as `0/4000060` and its distance in
/// bytes behind `/status`'s optime, 0 when ahead of it, both `"unknown"` for a position
/// that is missing or 0. Then `pause`, `scheduled_switchover` (`at` as written) when set,
/// and `scope`.
#[must_use]
pub fn cluster_json(cluster: &ClusterState, scope: &str) -> Value {
    let leader = cluster.leader.as_ref().map(|l| l.name.as_str());
    let cluster_lsn = cluster
        .status
        .as_ref()
        .and_then(|s| s.value.optime)
        .unwrap_or(0);
    let config = cluster.config.as_ref().map(|c| &c.value);
    let standby = is_standby_cluster(Some(cluster));
    let sync = cluster
        .sync
        .as_ref()
        .map(|s| &s.value)
        .filter(|_| config.is_some_and(ClusterConfig::synchronous_mode));
    let sync_role = if config.is_some_and(ClusterConfig::quorum_commit_mode) {
        "quorum_standby"
    } else {
        "sync_standby"
    };
    let mut members: Vec<Value> = cluster
        .members
        .iter()
        .map(|m| {
            let is_leader = Some(m.name.as_str()) == leader;
            let role = if is_leader {
                if standby { "standby_leader" } else { "leader" }
            } else if sync.is_some_and(|s| s.matches(&m.name)) {
                sync_role
            } else {
                "replica"
            };
            member_json(m, role, (!is_leader).then_some(cluster_lsn))
        })
        .collect();
    members.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));

    let mut doc = Map::new();
    doc.insert("members".into(), Value::Array(members));
    if config.is_some_and(ClusterConfig::pause) {
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
    doc.insert("scope".into(), scope.into());
    Value::Object(doc)
}

/// One entry of `/cluster`'s `members` (see [`cluster_json`]); `cluster_lsn` is
/// `/status`'s optime for every member but the leader, which shows no positions.
fn member_json(m: &Member, role: &str, cluster_lsn: Option<u64>) -> Value {
    let data = &m.data;
    let replication_state = data
        .replication_state
        .as_deref()
        .filter(|s| role != "leader" && !s.is_empty());
    let state = match (replication_state, &data.state) {
        (Some(replication_state), _) => replication_state,
        (None, MemberState::Unknown) => "",
        (None, state) => state.as_str(),
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
    let Some(cluster_lsn) = cluster_lsn else {
        return Value::Object(member);
    };
    for (prefix, lsn) in [
        ("receive_", data.receive_lsn),
        ("replay_", data.replay_lsn),
        ("", data.xlog_location),
    ] {
        let (lsn_key, lag_key) = (format!("{prefix}lsn"), format!("{prefix}lag"));
        // Key order as Patroni's assignments produce it: `lsn` first when unknown,
        // `lag` first otherwise.
        match lsn.filter(|&lsn| lsn != 0) {
            None => {
                member.insert(lsn_key, "unknown".into());
                member.insert(lag_key, "unknown".into());
            }
            Some(lsn) => {
                member.insert(lag_key, cluster_lsn.saturating_sub(lsn).into());
                member.insert(lsn_key, format_lsn(lsn).into());
            }
        }
    }
    Value::Object(member)
}

/// PostgreSQL's text form of a WAL position, as Patroni's `format_lsn`: `0/4000060`.
fn format_lsn(lsn: u64) -> String {
    format!("{:X}/{:X}", lsn >> 32, lsn & 0xFFFF_FFFF)
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

/// `GET /metrics`: Prometheus text exposition with Patroni 4.x's metrics (`do_GET_metrics`),
/// in its order, with its help texts, types and labels (`{scope="...",name="..."}`).
///
/// `patroni_version` is the version without dots, each part padded to two digits
/// (`4.1.4` → `040104`). Times are Unix seconds as Python prints a float
/// (`1714557600.0`), `0` when unknown. `patroni_postgres_streaming` and
/// `patroni_postgres_in_archive_recovery` appear only with a known server version of
/// 9.6 or later, as in Patroni (so not while PostgreSQL is down).
/// `patroni_postgres_state` is the index of the state in Patroni's `PostgresqlState`,
/// listed in its `# Values:` line, and -1 for any other state (`unknown`).
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
    let synchronous = pg.is_some() && is_sync_standby(&node.name, &node.role, cluster);
    let quorum = quorum_commit_mode(cluster);
    let server_version = pg.map_or(0, |pg| pg.server_version);
    let flag = |b: bool| u8::from(b).to_string();

    let mut metrics: Vec<(&str, &str, &str, String)> = vec![
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
            flag(synchronous && !quorum),
        ),
        (
            "patroni_quorum_standby",
            "Value is 1 if this node is a quorum standby, 0 otherwise.",
            "gauge",
            flag(synchronous && quorum),
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
    ];
    if server_version >= 90_600 {
        metrics.extend([
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
        ]);
    }
    metrics.extend([
        (
            "patroni_postgres_server_version",
            "Version of Postgres (if running), 0 otherwise.",
            "gauge",
            server_version.to_string(),
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
            "gauge",
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
    ]);
    let mut text = String::new();
    for (name, help, kind, value) in metrics {
        let _ = writeln!(
            text,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name}{labels} {value}"
        );
    }
    let state = POSTGRES_STATES
        .iter()
        .position(|(value, _)| *value == node.state.as_str())
        .map_or_else(|| "-1".to_owned(), |index| index.to_string());
    let values = POSTGRES_STATES
        .iter()
        .enumerate()
        .map(|(index, (_, name))| format!("{index}={name}"))
        .collect::<Vec<_>>()
        .join(", ");
    let _ = writeln!(
        text,
        "# HELP patroni_postgres_state Numeric representation of Postgres state.\n\
         # Values: {values}\n\
         # TYPE patroni_postgres_state gauge\npatroni_postgres_state{labels} {state}"
    );
    text
}

/// Patroni 4.x's `PostgresqlState`: each state's value and its lowercased member name,
/// in the order (index) `patroni_postgres_state` numbers them.
const POSTGRES_STATES: [(&str, &str); 15] = [
    ("initializing new cluster", "initdb"),
    ("initdb failed", "initdb_failed"),
    ("running custom bootstrap script", "custom_bootstrap"),
    ("custom bootstrap failed", "custom_bootstrap_failed"),
    ("creating replica", "creating_replica"),
    ("running", "running"),
    ("starting", "starting"),
    ("starting after custom bootstrap", "bootstrap_starting"),
    ("start failed", "start_failed"),
    ("restarting", "restarting"),
    ("restart failed", "restart_failed"),
    ("stopping", "stopping"),
    ("stopped", "stopped"),
    ("stop failed", "stop_failed"),
    ("crashed", "crashed"),
];

/// `synchronous_mode: quorum` in the cluster's `config`: synchronous members are
/// `quorum_standby`, not `sync_standby`.
fn quorum_commit_mode(cluster: Option<&ClusterState>) -> bool {
    cluster
        .and_then(|c| c.config.as_ref())
        .is_some_and(|c| c.value.quorum_commit_mode())
}

fn escape_label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Python's `(t - epoch).total_seconds()` printed with `str`: microseconds divided once
/// (so the float is the one Python computes), whole seconds with `.0`; `0` when unknown.
fn epoch_seconds(time: Option<SystemTime>) -> String {
    let Some(since) = time.and_then(|t| t.duration_since(UNIX_EPOCH).ok()) else {
        return "0".to_owned();
    };
    let seconds = since.as_micros() as f64 / 1e6;
    if seconds.fract() == 0.0 {
        format!("{seconds:.1}")
    } else {
        seconds.to_string()
    }
}

/// `scheme://[user@]host[:port]/db` → host and port, as Patroni's `conn_kwargs` reads
/// `conn_url` with `urlparse`: the host lowercased, the port 5432 when absent or 0, and
/// no port when it is not a number below 65536 (where Python would raise).
fn host_port(conn_url: &str) -> Option<(String, Option<u16>)> {
    let (scheme, rest) = conn_url.split_once("://")?;
    let valid_scheme = scheme.starts_with(|c: char| c.is_ascii_alphabetic())
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    if !valid_scheme {
        return None;
    }
    let netloc = rest.split(['/', '?', '#']).next().unwrap_or("");
    let hostport = netloc.rsplit_once('@').map_or(netloc, |(_, h)| h);
    let (host, port) = if let Some(bracketed) = hostport.strip_prefix('[') {
        let (host, after) = bracketed.split_once(']')?;
        (host, after.strip_prefix(':'))
    } else {
        match hostport.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (hostport, None),
        }
    };
    let port = match port.filter(|p| !p.is_empty()) {
        None => Some(5432),
        Some(port) => port
            .parse::<u16>()
            .ok()
            .map(|p| if p == 0 { 5432 } else { p }),
    };
    (!host.is_empty()).then(|| (host.to_lowercase(), port))
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

    /// Each row is what Patroni's `conn_kwargs` (`urlparse`) gives for the URL.
    #[test]
    fn conn_url_gives_host_and_port() {
        for (url, expected) in [
            (
                "postgres://10.0.0.2:5432/postgres",
                Some(("10.0.0.2", Some(5432))),
            ),
            ("postgres://u@[::1]:5433/db", Some(("::1", Some(5433)))),
            ("postgres://u:pw@db1:5434", Some(("db1", Some(5434)))),
            // No port, an empty one or 0: `r.port or 5432`.
            ("postgres://db1/postgres", Some(("db1", Some(5432)))),
            ("postgres://db1:/postgres", Some(("db1", Some(5432)))),
            ("postgres://db1:0/postgres", Some(("db1", Some(5432)))),
            (
                "postgresql://DB1.Example/postgres",
                Some(("db1.example", Some(5432))),
            ),
            // Python raises on these ports; the host alone is still worth showing.
            ("postgres://db1:abc/postgres", Some(("db1", None))),
            ("postgres://:5432/postgres", None),
            ("nonsense", None),
        ] {
            let expected = expected.map(|(host, port)| (host.to_owned(), port));
            assert_eq!(host_port(url), expected, "{url}");
        }
    }

    #[test]
    fn lsns_print_like_postgres() {
        for (lsn, text) in [
            (0, "0/0"),
            (0x400_0060, "0/4000060"),
            (0x1_0000_0000, "1/0"),
            (0x2_ABCD_EF01, "2/ABCDEF01"),
        ] {
            assert_eq!(format_lsn(lsn), text, "{lsn}");
        }
    }

    #[test]
    fn times_print_like_python_total_seconds() {
        let t = UNIX_EPOCH + Duration::from_secs(1_714_557_600);
        assert_eq!(epoch_seconds(Some(t)), "1714557600.0");
        let t = t + Duration::from_millis(250);
        assert_eq!(epoch_seconds(Some(t)), "1714557600.25");
        let t = UNIX_EPOCH + Duration::from_micros(1_714_557_600_123_456);
        assert_eq!(epoch_seconds(Some(t)), "1714557600.123456");
        assert_eq!(epoch_seconds(None), "0");
    }
}
