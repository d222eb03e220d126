//! Table-driven tests of every status code and body the API computes.

use std::time::{Duration, Instant, UNIX_EPOCH};

use dcs_core::ClusterState;
use dcs_core::model::{MemberState, RawEntry, Role, Version};
use serde_json::{Value, json};

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

const REPLICA_JSON: &str = r#"{"conn_url":"postgres://10.0.0.2:5432/postgres","api_url":"http://10.0.0.2:8008/patroni","state":"running","role":"replica","version":"4.1.4","xlog_location":900,"timeline":2}"#;
const PRIMARY_JSON: &str = r#"{"conn_url":"postgres://10.0.0.1:5432/postgres","api_url":"http://10.0.0.1:8008/patroni","state":"running","role":"primary","version":"4.1.4","xlog_location":1000,"timeline":2}"#;

/// pg0 leads, pg1 replicates; `/status` optime 1000.
fn healthy_cluster() -> ClusterState {
    cluster(&[
        ("leader", "pg0"),
        ("members/pg0", PRIMARY_JSON),
        ("members/pg1", REPLICA_JSON),
        ("status", r#"{"optime":1000}"#),
        ("config", r#"{"ttl":30,"loop_wait":10}"#),
    ])
}

fn primary() -> NodeStatus {
    let mut node = NodeStatus::new("batman", "pg0", "4.1.4");
    node.state = MemberState::Running;
    node.role = Role::Primary;
    node.holds_lease = true;
    node.postgres = Some(PostgresStatus {
        postmaster_start_time: Some(UNIX_EPOCH + Duration::from_secs(1_714_557_600)),
        server_version: 160_004,
        xlog: Xlog::Primary { location: 1000 },
        timeline: Some(2),
        replication_state: None,
        replication: vec![],
    });
    node
}

fn replica(replayed: u64) -> NodeStatus {
    let mut node = NodeStatus::new("batman", "pg1", "4.1.4");
    node.state = MemberState::Running;
    node.role = Role::Replica;
    node.postgres = Some(PostgresStatus {
        postmaster_start_time: None,
        server_version: 160_004,
        xlog: Xlog::Replica {
            received_location: replayed,
            replayed_location: replayed,
            replayed_timestamp: None,
            paused: false,
        },
        timeline: Some(2),
        replication_state: Some("streaming".into()),
        replication: vec![],
    });
    node.tags = json!({"clonefrom": true, "zone": "a"})
        .as_object()
        .unwrap()
        .clone();
    node
}

fn stopped() -> NodeStatus {
    let mut node = NodeStatus::new("batman", "pg2", "4.1.4");
    node.state = MemberState::Other("stopped".into());
    node
}

fn snapshot(node: NodeStatus, cluster: Option<ClusterState>) -> Snapshot {
    Snapshot { node, cluster }
}

/// `(path, expected status)` checked with GET, HEAD and OPTIONS: the codes must agree.
fn assert_codes(name: &str, snapshot: &Snapshot, table: &[(&str, u16)]) {
    let now = Instant::now();
    for (target, expected) in table {
        for method in ["GET", "HEAD", "OPTIONS"] {
            let response = respond(method, target, snapshot, now);
            assert_eq!(
                response.status, *expected,
                "{name}: {method} {target} answered {}",
                response.status
            );
            assert_eq!(
                response.body.is_some(),
                method == "GET",
                "{name}: {method} {target} body presence"
            );
        }
    }
}

#[test]
fn the_primary_holding_the_lease_is_healthy_as_primary_only() {
    assert_codes(
        "primary",
        &snapshot(primary(), Some(healthy_cluster())),
        &[
            ("/", 200),
            ("/primary", 200),
            ("/master", 200),
            ("/read-write", 200),
            ("/leader", 200),
            ("/read-only", 200),
            ("/health", 200),
            ("/replica", 503),
            ("/standby-leader", 503),
            ("/standby_leader", 503),
            ("/async", 503),
            ("/sync", 503),
            ("/synchronous", 503),
            ("/read-only-sync", 200),
            ("/quorum", 503),
            ("/read-only-quorum", 200),
            // Leader paths ignore tag filters.
            ("/primary?tag_zone=b", 200),
            ("/nonsense", 503),
        ],
    );
}

#[test]
fn a_primary_without_a_valid_lease_is_not_advertised_as_primary() {
    let mut node = primary();
    node.holds_lease = false;
    assert_codes(
        "lease lost",
        &snapshot(node, Some(healthy_cluster())),
        &[
            ("/primary", 503),
            ("/leader", 503),
            ("/read-write", 503),
            ("/read-only", 503),
            ("/replica", 503),
            ("/health", 200),
        ],
    );
}

#[test]
fn a_streaming_replica_takes_reads_unless_lagging_or_filtered() {
    assert_codes(
        "replica",
        &snapshot(replica(900), Some(healthy_cluster())),
        &[
            ("/replica", 200),
            ("/read-only", 200),
            ("/async", 200),
            ("/asynchronous", 200),
            ("/health", 200),
            ("/primary", 503),
            ("/", 503),
            ("/leader", 503),
            ("/sync", 503),
            ("/read-only-sync", 503),
            // 100 bytes behind /status's optime.
            ("/replica?lag=100", 200),
            ("/replica?lag=99", 503),
            ("/replica?lag=1kB", 200),
            ("/replica?lag=16MB", 200),
            ("/read-only?lag=10", 503),
            ("/replica?lag=", 200),
            ("/replica?lag=garbage", 200),
            // Tags: strings compare as written, other values as Python's str().lower().
            ("/replica?tag_zone=a", 200),
            ("/replica?tag_zone=b", 503),
            ("/replica?tag_clonefrom=true", 200),
            ("/replica?tag_clonefrom=True", 503),
            ("/replica?tag_nosuch=1", 503),
            ("/replica?tag_zone=a&tag_clonefrom=true&lag=1MB", 200),
            ("/replica?tag_zone=%61", 200),
        ],
    );
}

#[test]
fn a_noloadbalance_replica_takes_no_reads() {
    let mut node = replica(1000);
    node.noloadbalance = true;
    assert_codes(
        "noloadbalance",
        &snapshot(node, Some(healthy_cluster())),
        &[
            ("/replica", 503),
            ("/read-only", 503),
            ("/async", 503),
            ("/health", 200),
        ],
    );
}

#[test]
fn without_a_dcs_view_a_replica_still_serves_reads_but_sync_checks_fail() {
    assert_codes(
        "dcs down",
        &snapshot(replica(0), None),
        &[
            ("/replica", 200),
            ("/read-only", 200),
            ("/async", 503),
            ("/primary", 503),
        ],
    );
}

#[test]
fn paused_without_a_dcs_view_the_role_comes_from_postgres() {
    let mut node = primary();
    node.holds_lease = false;
    node.paused = true;
    assert_codes(
        "paused",
        &snapshot(node, None),
        &[
            ("/primary", 200),
            ("/leader", 200),
            ("/standby-leader", 503),
            ("/read-only", 200),
        ],
    );
}

#[test]
fn the_standby_leader_is_leader_and_standby_leader_but_not_primary() {
    let mut node = replica(0);
    node.role = Role::StandbyLeader;
    node.holds_lease = true;
    let standby = cluster(&[
        ("leader", "pg1"),
        (
            "config",
            r#"{"standby_cluster":{"host":"10.1.0.1","port":5432}}"#,
        ),
    ]);
    assert_codes(
        "standby leader",
        &snapshot(node, Some(standby)),
        &[
            ("/standby-leader", 200),
            ("/standby_leader", 200),
            ("/leader", 200),
            ("/primary", 503),
            ("/", 503),
            ("/replica", 503),
            ("/read-only", 200),
        ],
    );
}

#[test]
fn a_stopped_node_is_unhealthy_everywhere() {
    assert_codes(
        "stopped",
        &snapshot(stopped(), Some(healthy_cluster())),
        &[
            ("/", 503),
            ("/replica", 503),
            ("/read-only", 503),
            ("/health", 503),
            ("/leader", 503),
        ],
    );
}

#[test]
fn health_checks_match_path_substrings_like_patroni() {
    for (path, check) in [
        ("/", HealthCheck::Primary),
        ("/primary", HealthCheck::Primary),
        ("/master", HealthCheck::Primary),
        ("/read-write", HealthCheck::Primary),
        ("/leader", HealthCheck::Leader),
        ("/standby-leader", HealthCheck::StandbyLeader),
        ("/standby_leader", HealthCheck::StandbyLeader),
        ("/replica", HealthCheck::Replica),
        ("/replica/x", HealthCheck::Replica),
        ("/read-only", HealthCheck::ReadOnly),
        ("/read-only-sync", HealthCheck::ReadOnlySync),
        ("/read-only-synchronous", HealthCheck::ReadOnlySync),
        ("/read-only-quorum", HealthCheck::Quorum { or_leader: true }),
        ("/quorum", HealthCheck::Quorum { or_leader: false }),
        ("/sync", HealthCheck::Sync),
        ("/synchronous", HealthCheck::Sync),
        ("/async", HealthCheck::Async),
        ("/asynchronous", HealthCheck::Async),
        ("/health", HealthCheck::Health),
        ("/patroni", HealthCheck::None),
        ("/sync/", HealthCheck::None),
    ] {
        assert_eq!(HealthCheck::from_path(path), check, "{path}");
    }
}

#[test]
fn liveness_fails_only_when_the_loop_is_late_and_not_paused() {
    let now = Instant::now();
    let mut node = primary();
    node.next_run = now;
    assert_eq!(liveness_status(&node, now), 200);
    // The primary may be `ttl` late, a replica twice that.
    assert_eq!(liveness_status(&node, now + Duration::from_secs(31)), 503);
    node.role = Role::Replica;
    assert_eq!(liveness_status(&node, now + Duration::from_secs(31)), 200);
    assert_eq!(liveness_status(&node, now + Duration::from_secs(61)), 503);
    node.paused = true;
    assert_eq!(liveness_status(&node, now + Duration::from_secs(600)), 200);
}

/// A replica 100 bytes behind in replay and caught up in receipt (`/status` optime 1000).
fn receiving_replica() -> NodeStatus {
    let mut node = replica(900);
    if let Some(PostgresStatus {
        xlog: Xlog::Replica {
            received_location, ..
        },
        ..
    }) = &mut node.postgres
    {
        *received_location = 1000;
    }
    node
}

fn with_replication_state(mut node: NodeStatus, state: Option<&str>) -> NodeStatus {
    if let Some(pg) = &mut node.postgres {
        pg.replication_state = state.map(str::to_owned);
    }
    node
}

/// `healthy_cluster` with another `/status` optime and `config`.
fn cluster_at(optime: Option<u64>, config: &str) -> ClusterState {
    let status = optime.map(|optime| format!(r#"{{"optime":{optime}}}"#));
    let mut keys = vec![
        ("leader", "pg0"),
        ("members/pg0", PRIMARY_JSON),
        ("members/pg1", REPLICA_JSON),
        ("config", config),
    ];
    if let Some(status) = &status {
        keys.push(("status", status));
    }
    cluster(&keys)
}

/// `GET /readiness{query}`'s status, checking it has no body.
fn readiness(node: NodeStatus, cluster: Option<ClusterState>, query: &str) -> u16 {
    let target = format!("/readiness{query}");
    let response = respond("GET", &target, &snapshot(node, cluster), Instant::now());
    assert_eq!(response.body, None, "GET {target}: a status line only");
    response.status
}

#[test]
fn readiness_needs_the_lock_or_a_streaming_replica_with_a_dcs_view() {
    let healthy = Some(healthy_cluster());
    let mut stopped_leader = stopped();
    stopped_leader.holds_lease = true;
    let mut lease_lost = primary();
    lease_lost.holds_lease = false;
    let mut no_status_query = replica(900);
    no_status_query.postgres = None;
    let mut failsafe = replica(900);
    failsafe.failsafe_active = true;
    let archive = with_replication_state(replica(900), Some("in archive recovery"));
    let no_receiver = with_replication_state(replica(900), None);

    for (why, node, cluster, expected) in [
        ("the leader", primary(), healthy.clone(), 200),
        ("the leader needs no DCS view", primary(), None, 200),
        (
            "the lock holder, whatever its state",
            stopped_leader,
            healthy.clone(),
            200,
        ),
        (
            "a primary without the lock",
            lease_lost,
            healthy.clone(),
            503,
        ),
        ("a stopped node", stopped(), healthy.clone(), 503),
        (
            "no status query: nothing streams",
            no_status_query,
            healthy.clone(),
            503,
        ),
        (
            "a streaming replica 100 bytes behind",
            replica(900),
            healthy.clone(),
            200,
        ),
        (
            "a replica replaying from the archive",
            archive,
            healthy.clone(),
            503,
        ),
        (
            "a replica without a WAL receiver",
            no_receiver,
            healthy,
            503,
        ),
        ("no DCS view", replica(900), None, 503),
        ("no DCS view, in failsafe mode", failsafe, None, 200),
    ] {
        assert_eq!(readiness(node, cluster, ""), expected, "{why}");
    }
}

#[test]
fn readiness_limits_a_replicas_lag_by_query_or_maximum_lag_on_failover() {
    let healthy = healthy_cluster();
    // 3 MB behind a replica at 900: beyond the default `maximum_lag_on_failover` (1 MiB).
    let far = cluster_at(Some(3_000_900), "{}");
    let strict = cluster_at(Some(1000), r#"{"maximum_lag_on_failover":50}"#);
    let no_status = cluster_at(None, "{}");

    // (why, cluster, replayed position, query, expected); `healthy` is at 1000.
    for (why, cluster, replayed, query, expected) in [
        ("3 MB behind, default limit", &far, 900, "", 503),
        ("3 MB behind, ?lag=10MB", &far, 900, "?lag=10MB", 200),
        (
            "an unreadable ?lag= means the default",
            &far,
            900,
            "?lag=garbage",
            503,
        ),
        (
            "an unreadable ?lag= means the default",
            &healthy,
            900,
            "?lag=garbage",
            200,
        ),
        ("an empty ?lag= is absent", &far, 900, "?lag=", 503),
        ("?lag= equal to the lag", &healthy, 900, "?lag=100", 200),
        ("?lag= below the lag", &healthy, 900, "?lag=99", 503),
        ("?lag=0 and caught up", &healthy, 1000, "?lag=0", 200),
        (
            "a negative ?lag= fails even a caught-up replica",
            &healthy,
            1000,
            "?lag=-1",
            503,
        ),
        ("maximum_lag_on_failover from config", &strict, 900, "", 503),
        (
            "?lag= overrides maximum_lag_on_failover",
            &strict,
            900,
            "?lag=100",
            200,
        ),
        (
            "ahead of /status is not behind",
            &healthy,
            1500,
            "?lag=0",
            200,
        ),
        (
            "no /status: nothing to lag behind",
            &no_status,
            900,
            "?lag=0",
            200,
        ),
    ] {
        let status = readiness(replica(replayed), Some(cluster.clone()), query);
        assert_eq!(status, expected, "{why}: {query}");
    }
}

#[test]
fn readiness_measures_replay_unless_asked_for_mode_write() {
    // Received everything up to /status's 1000, replayed up to 900.
    for (query, expected) in [
        ("?lag=0", 503),
        ("?lag=0&mode=apply", 503),
        ("?lag=0&mode=write", 200),
        ("?lag=0&mode=WRITE", 503),
        ("?lag=0&mode=flush", 503),
        ("?lag=0&mode=", 503),
        ("?lag=99&mode=apply", 503),
        ("?lag=100&mode=apply", 200),
    ] {
        let status = readiness(receiving_replica(), Some(healthy_cluster()), query);
        assert_eq!(status, expected, "{query}");
    }
}

#[test]
fn liveness_and_readiness_answer_with_a_status_line_only() {
    let s = snapshot(primary(), Some(healthy_cluster()));
    for target in ["/liveness", "/readiness"] {
        let response = respond("GET", target, &s, Instant::now());
        assert_eq!((response.status, response.body), (200, None), "{target}");
    }
}

#[test]
fn head_and_options_on_liveness_and_readiness_run_the_health_check_like_patroni() {
    // Patroni has no `do_HEAD_readiness`: `do_HEAD` runs the health check, and these
    // paths name no role.
    for node in [primary(), replica(1000)] {
        let s = snapshot(node, Some(healthy_cluster()));
        for method in ["HEAD", "OPTIONS"] {
            for target in ["/readiness", "/readiness?mode=write", "/liveness"] {
                let response = respond(method, target, &s, Instant::now());
                assert_eq!(
                    (response.status, response.body),
                    (503, None),
                    "{method} {target}"
                );
            }
        }
    }
}

#[test]
fn unimplemented_methods_are_not_found() {
    let s = snapshot(primary(), Some(healthy_cluster()));
    for (method, target) in [
        ("POST", "/switchover"),
        ("POST", "/failover"),
        ("POST", "/restart"),
        ("DELETE", "/restart"),
        ("PATCH", "/config"),
        ("PUT", "/config"),
        ("POST", "/reload"),
    ] {
        assert_eq!(
            respond(method, target, &s, Instant::now()).status,
            404,
            "{method} {target}"
        );
    }
}

fn json_body(response: &Response) -> Value {
    let (content_type, body) = response.body.as_ref().expect("a body");
    assert_eq!(*content_type, "application/json");
    serde_json::from_str(body).expect("valid JSON")
}

#[test]
fn the_primary_status_document_has_patronis_fields_in_order() {
    let mut node = primary();
    node.system_identifier = Some("7300000000000000001".into());
    node.dcs_last_seen = 1_714_557_700;
    let response = respond(
        "GET",
        "/patroni",
        &snapshot(node, Some(healthy_cluster())),
        Instant::now(),
    );
    assert_eq!(response.status, 200);
    let body = json_body(&response);
    assert_eq!(
        body,
        json!({
            "state": "running",
            "postmaster_start_time": "2024-05-01 10:00:00+00:00",
            "role": "primary",
            "server_version": 160_004,
            "xlog": {"location": 1000},
            "timeline": 2,
            "dcs_last_seen": 1_714_557_700,
            "database_system_identifier": "7300000000000000001",
            "patroni": {"version": "4.1.4", "scope": "batman", "name": "pg0"},
        })
    );
    let keys: Vec<&str> = body
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        [
            "state",
            "postmaster_start_time",
            "role",
            "server_version",
            "xlog",
            "timeline",
            "dcs_last_seen",
            "database_system_identifier",
            "patroni"
        ]
    );
}

#[test]
fn the_replica_status_document_reports_its_positions_and_tags() {
    let body = json_body(&respond(
        "GET",
        "/patroni",
        &snapshot(replica(900), None),
        Instant::now(),
    ));
    assert_eq!(body["role"], "replica");
    assert_eq!(
        body["xlog"],
        json!({"received_location": 900, "replayed_location": 900, "replayed_timestamp": null, "paused": false})
    );
    assert_eq!(body["replication_state"], "streaming");
    assert_eq!(
        body["cluster_unlocked"], true,
        "no DCS view reads as unlocked"
    );
    assert_eq!(body["tags"], json!({"clonefrom": true, "zone": "a"}));
}

#[test]
fn a_node_without_postgres_status_publishes_state_and_role_with_its_flags() {
    let mut node = stopped();
    node.paused = true;
    node.pending_restart = true;
    node.watchdog_failed = true;
    let body = json_body(&respond(
        "GET",
        "/patroni",
        &snapshot(node, Some(cluster(&[]))),
        Instant::now(),
    ));
    assert_eq!(
        body,
        json!({
            "state": "stopped",
            "role": "uninitialized",
            "cluster_unlocked": true,
            "dcs_last_seen": 0,
            "pending_restart": true,
            "patroni": {"version": "4.1.4", "scope": "batman", "name": "pg2"},
            "watchdog_failed": true,
            "pause": true,
        })
    );
}

#[test]
fn a_health_check_answers_with_the_status_document() {
    let s = snapshot(replica(900), Some(healthy_cluster()));
    let check = respond("GET", "/primary", &s, Instant::now());
    assert_eq!(check.status, 503);
    assert_eq!(
        json_body(&check),
        json_body(&respond("GET", "/patroni", &s, Instant::now()))
    );
}

/// Patroni 4.1.5's `cluster_as_json` of these keys (built with `patroni.dcs` and printed
/// compactly), plus the `scope` its `do_GET_cluster` adds.
const CLUSTER_AS_JSON_4X: &str = r#"{"members":[{"name":"pg0","role":"leader","state":"running","api_url":"http://10.0.0.1:8008/patroni","host":"10.0.0.1","port":5432,"timeline":2},{"name":"pg1","role":"replica","state":"streaming","api_url":"http://10.0.0.2:8008/patroni","host":"10.0.0.2","port":5432,"timeline":2,"pending_restart":true,"pending_restart_reason":{"max_connections":{"old_value":"100","new_value":"200"}},"scheduled_restart":{"schedule":"2024-09-24T12:00:00+00:00"},"tags":{"zone":"a"},"receive_lag":10,"receive_lsn":"0/400007E","replay_lag":40,"replay_lsn":"0/4000060","lag":40,"lsn":"0/4000060"},{"name":"pg2","role":"replica","state":"","api_url":"http://10.0.0.3:8008/patroni","receive_lsn":"unknown","receive_lag":"unknown","replay_lsn":"unknown","replay_lag":"unknown","lsn":"unknown","lag":"unknown"},{"name":"pg3","role":"replica","state":"running","api_url":"http://10.0.0.4:8008/patroni","host":"pg3.example","port":5432,"timeline":2,"receive_lag":0,"receive_lsn":"0/4000150","replay_lsn":"unknown","replay_lag":"unknown","lag":0,"lsn":"0/4000150"},{"name":"pg4","role":"replica","state":"in archive recovery","api_url":"http://10.0.0.5:8008/patroni","host":"10.0.0.5","port":5432,"receive_lag":0,"receive_lsn":"1/0","replay_lag":0,"replay_lsn":"1/0","lag":0,"lsn":"1/0"}],"pause":true,"scheduled_switchover":{"at":"2024-09-24T12:00:00+00:00","from":"pg0","to":"pg1"}}"#;

#[test]
fn the_cluster_document_is_patroni_4s_cluster_as_json_with_scope() {
    let c = cluster(&[
        ("leader", "pg0"),
        (
            "members/pg0",
            r#"{"conn_url":"postgres://10.0.0.1:5432/postgres","api_url":"http://10.0.0.1:8008/patroni","state":"running","role":"primary","version":"4.0.4","xlog_location":67109000,"timeline":2}"#,
        ),
        // Streaming, behind in receipt and replay, with every optional attribute.
        (
            "members/pg1",
            r#"{"conn_url":"postgres://10.0.0.2:5432/postgres","api_url":"http://10.0.0.2:8008/patroni","state":"running","role":"replica","version":"4.0.4","tags":{"zone":"a"},"xlog_location":67108960,"replay_lsn":67108960,"receive_lsn":67108990,"replication_state":"streaming","timeline":2,"pending_restart":true,"pending_restart_reason":{"max_connections":{"old_value":"100","new_value":"200"}},"scheduled_restart":{"schedule":"2024-09-24T12:00:00+00:00"}}"#,
        ),
        // Nothing known: every position unknown, no host, empty state.
        (
            "members/pg2",
            r#"{"api_url":"http://10.0.0.3:8008/patroni","role":"replica"}"#,
        ),
        // Ahead of /status (lag 0), replay position 0 (unknown), empty replication
        // state (its `state` shows), no port in the URL (5432).
        (
            "members/pg3",
            r#"{"conn_url":"postgres://PG3.example/postgres","api_url":"http://10.0.0.4:8008/patroni","state":"running","role":"replica","xlog_location":67109200,"replay_lsn":0,"receive_lsn":67109200,"replication_state":"","timeline":2}"#,
        ),
        // Positions past 4 GiB print with a high half.
        (
            "members/pg4",
            r#"{"conn_url":"postgres://10.0.0.5:5432/postgres","api_url":"http://10.0.0.5:8008/patroni","state":"running","role":"replica","xlog_location":4294967296,"replay_lsn":4294967296,"receive_lsn":4294967296,"replication_state":"in archive recovery"}"#,
        ),
        ("status", r#"{"optime":67109000}"#),
        ("config", r#"{"pause":true}"#),
        (
            "failover",
            r#"{"leader":"pg0","member":"pg1","scheduled_at":"2024-09-24T12:00:00+00:00"}"#,
        ),
    ]);
    let response = respond(
        "GET",
        "/cluster",
        &snapshot(primary(), Some(c)),
        Instant::now(),
    );
    let mut expected: Value = serde_json::from_str(CLUSTER_AS_JSON_4X).unwrap();
    expected
        .as_object_mut()
        .unwrap()
        .insert("scope".into(), "batman".into());
    // Compared as text: key order included.
    assert_eq!(json_body(&response).to_string(), expected.to_string());
}

#[test]
fn cluster_roles_follow_the_synchronous_and_standby_settings() {
    let leader = r#"{"conn_url":"postgres://10.0.0.1:5432/postgres","state":"running","role":"replica","xlog_location":1000,"replication_state":"streaming"}"#;
    let replica = r#"{"state":"running","role":"replica","xlog_location":900,"replication_state":"streaming"}"#;
    // (config, pg0's role and state, pg1's role), each as Patroni 4.1.5 answered.
    for (config, leader_role, leader_state, replica_role) in [
        (
            r#"{"synchronous_mode":true}"#,
            "leader",
            "running",
            "sync_standby",
        ),
        (
            r#"{"synchronous_mode":"quorum"}"#,
            "leader",
            "running",
            "quorum_standby",
        ),
        (
            r#"{"synchronous_mode":false}"#,
            "leader",
            "running",
            "replica",
        ),
        ("{}", "leader", "running", "replica"),
        // A standby leader shows its replication state, and there is no sync role.
        (
            r#"{"synchronous_mode":true,"standby_cluster":{"host":"10.1.0.1"}}"#,
            "standby_leader",
            "streaming",
            "replica",
        ),
    ] {
        let c = cluster(&[
            ("leader", "pg0"),
            ("members/pg0", leader),
            ("members/pg1", replica),
            ("status", r#"{"optime":1000}"#),
            ("sync", r#"{"leader":"pg0","sync_standby":"pg1"}"#),
            ("config", config),
        ]);
        let body = cluster_json(&c, "batman");
        let members = body["members"].as_array().unwrap();
        assert_eq!(members[0]["role"], leader_role, "{config}");
        assert_eq!(members[0]["state"], leader_state, "{config}");
        assert!(
            members[0].get("lag").is_none(),
            "{config}: the leader has no lag"
        );
        assert_eq!(members[1]["role"], replica_role, "{config}");
        assert_eq!(members[1]["state"], "streaming", "{config}");
        assert_eq!(
            (&members[1]["lag"], &members[1]["lsn"]),
            (&json!(100), &json!("0/384"))
        );
    }
}

#[test]
fn without_a_dcs_view_the_cluster_document_is_empty_but_scoped() {
    let body = json_body(&respond(
        "GET",
        "/cluster",
        &snapshot(replica(900), None),
        Instant::now(),
    ));
    assert_eq!(body.to_string(), r#"{"members":[],"scope":"batman"}"#);
}

#[test]
fn history_is_the_keys_lines_or_empty() {
    let now = Instant::now();
    let none = snapshot(primary(), Some(healthy_cluster()));
    assert_eq!(
        json_body(&respond("GET", "/history", &none, now)),
        json!([])
    );
    let c = cluster(&[(
        "history",
        r#"[[1,25623960,"no recovery target specified","2019-09-23T16:57:57+02:00","pg1"]]"#,
    )]);
    assert_eq!(
        json_body(&respond(
            "GET",
            "/history",
            &snapshot(primary(), Some(c)),
            now
        )),
        json!([[
            1,
            25_623_960,
            "no recovery target specified",
            "2019-09-23T16:57:57+02:00",
            "pg1"
        ]])
    );
}

#[test]
fn config_and_failsafe_are_502_when_absent() {
    let now = Instant::now();
    let s = snapshot(primary(), Some(healthy_cluster()));
    let config = respond("GET", "/config", &s, now);
    assert_eq!(json_body(&config), json!({"ttl": 30, "loop_wait": 10}));
    assert_eq!(respond("GET", "/failsafe", &s, now).status, 502);
    let empty = snapshot(primary(), None);
    assert_eq!(respond("GET", "/config", &empty, now).status, 502);
    let c = cluster(&[("failsafe", r#"{"pg0":"http://10.0.0.1:8008/patroni"}"#)]);
    let failsafe = respond("GET", "/failsafe", &snapshot(primary(), Some(c)), now);
    assert_eq!(
        json_body(&failsafe),
        json!({"pg0": "http://10.0.0.1:8008/patroni"})
    );
}

fn metric(text: &str, name: &str) -> String {
    let prefix = format!("{name}{{scope=\"batman\",");
    let line = text
        .lines()
        .find(|l| l.starts_with(&prefix))
        .unwrap_or_else(|| panic!("{name} missing in:\n{text}"));
    line.rsplit(' ').next().unwrap().to_owned()
}

/// Patroni 4.1.5's `do_GET_metrics` for the node of [`primary`] (run with its
/// `get_postgresql_status` answering this node's status).
const METRICS_4X_PRIMARY: &str = "# HELP patroni_version Patroni semver without periods.\n\
# TYPE patroni_version gauge\n\
patroni_version{scope=\"batman\",name=\"pg0\"} 040104\n\
# HELP patroni_postgres_running Value is 1 if Postgres is running, 0 otherwise.\n\
# TYPE patroni_postgres_running gauge\n\
patroni_postgres_running{scope=\"batman\",name=\"pg0\"} 1\n\
# HELP patroni_postmaster_start_time Epoch seconds since Postgres started.\n\
# TYPE patroni_postmaster_start_time gauge\n\
patroni_postmaster_start_time{scope=\"batman\",name=\"pg0\"} 1714557600.0\n\
# HELP patroni_primary Value is 1 if this node is the leader, 0 otherwise.\n\
# TYPE patroni_primary gauge\n\
patroni_primary{scope=\"batman\",name=\"pg0\"} 1\n\
# HELP patroni_xlog_location Current location of the Postgres transaction log, 0 if this node is not the leader.\n\
# TYPE patroni_xlog_location counter\n\
patroni_xlog_location{scope=\"batman\",name=\"pg0\"} 1000\n\
# HELP patroni_standby_leader Value is 1 if this node is the standby_leader, 0 otherwise.\n\
# TYPE patroni_standby_leader gauge\n\
patroni_standby_leader{scope=\"batman\",name=\"pg0\"} 0\n\
# HELP patroni_replica Value is 1 if this node is a replica, 0 otherwise.\n\
# TYPE patroni_replica gauge\n\
patroni_replica{scope=\"batman\",name=\"pg0\"} 0\n\
# HELP patroni_sync_standby Value is 1 if this node is a sync standby, 0 otherwise.\n\
# TYPE patroni_sync_standby gauge\n\
patroni_sync_standby{scope=\"batman\",name=\"pg0\"} 0\n\
# HELP patroni_quorum_standby Value is 1 if this node is a quorum standby, 0 otherwise.\n\
# TYPE patroni_quorum_standby gauge\n\
patroni_quorum_standby{scope=\"batman\",name=\"pg0\"} 0\n\
# HELP patroni_xlog_received_location Current location of the received Postgres transaction log, 0 if this node is not a replica.\n\
# TYPE patroni_xlog_received_location counter\n\
patroni_xlog_received_location{scope=\"batman\",name=\"pg0\"} 0\n\
# HELP patroni_xlog_replayed_location Current location of the replayed Postgres transaction log, 0 if this node is not a replica.\n\
# TYPE patroni_xlog_replayed_location counter\n\
patroni_xlog_replayed_location{scope=\"batman\",name=\"pg0\"} 0\n\
# HELP patroni_xlog_replayed_timestamp Current timestamp of the replayed Postgres transaction log, 0 if null.\n\
# TYPE patroni_xlog_replayed_timestamp gauge\n\
patroni_xlog_replayed_timestamp{scope=\"batman\",name=\"pg0\"} 0\n\
# HELP patroni_xlog_paused Value is 1 if the Postgres xlog is paused, 0 otherwise.\n\
# TYPE patroni_xlog_paused gauge\n\
patroni_xlog_paused{scope=\"batman\",name=\"pg0\"} 0\n\
# HELP patroni_postgres_streaming Value is 1 if Postgres is streaming, 0 otherwise.\n\
# TYPE patroni_postgres_streaming gauge\n\
patroni_postgres_streaming{scope=\"batman\",name=\"pg0\"} 0\n\
# HELP patroni_postgres_in_archive_recovery Value is 1 if Postgres is replicating from archive, 0 otherwise.\n\
# TYPE patroni_postgres_in_archive_recovery gauge\n\
patroni_postgres_in_archive_recovery{scope=\"batman\",name=\"pg0\"} 0\n\
# HELP patroni_postgres_server_version Version of Postgres (if running), 0 otherwise.\n\
# TYPE patroni_postgres_server_version gauge\n\
patroni_postgres_server_version{scope=\"batman\",name=\"pg0\"} 160004\n\
# HELP patroni_cluster_unlocked Value is 1 if the cluster is unlocked, 0 if locked.\n\
# TYPE patroni_cluster_unlocked gauge\n\
patroni_cluster_unlocked{scope=\"batman\",name=\"pg0\"} 0\n\
# HELP patroni_failsafe_mode_is_active Value is 1 if failsafe mode is active, 0 if inactive.\n\
# TYPE patroni_failsafe_mode_is_active gauge\n\
patroni_failsafe_mode_is_active{scope=\"batman\",name=\"pg0\"} 0\n\
# HELP patroni_postgres_timeline Postgres timeline of this node (if running), 0 otherwise.\n\
# TYPE patroni_postgres_timeline gauge\n\
patroni_postgres_timeline{scope=\"batman\",name=\"pg0\"} 2\n\
# HELP patroni_dcs_last_seen Epoch timestamp when DCS was last contacted successfully by Patroni.\n\
# TYPE patroni_dcs_last_seen gauge\n\
patroni_dcs_last_seen{scope=\"batman\",name=\"pg0\"} 0\n\
# HELP patroni_pending_restart Value is 1 if the node needs a restart, 0 otherwise.\n\
# TYPE patroni_pending_restart gauge\n\
patroni_pending_restart{scope=\"batman\",name=\"pg0\"} 0\n\
# HELP patroni_is_paused Value is 1 if auto failover is disabled, 0 otherwise.\n\
# TYPE patroni_is_paused gauge\n\
patroni_is_paused{scope=\"batman\",name=\"pg0\"} 0\n\
# HELP patroni_postgres_state Numeric representation of Postgres state.\n\
# Values: 0=initdb, 1=initdb_failed, 2=custom_bootstrap, 3=custom_bootstrap_failed, 4=creating_replica, 5=running, 6=starting, 7=bootstrap_starting, 8=start_failed, 9=restarting, 10=restart_failed, 11=stopping, 12=stopped, 13=stop_failed, 14=crashed\n\
# TYPE patroni_postgres_state gauge\n\
patroni_postgres_state{scope=\"batman\",name=\"pg0\"} 5\n\
";

#[test]
fn metrics_are_patroni_4s_text() {
    let response = respond(
        "GET",
        "/metrics",
        &snapshot(primary(), Some(healthy_cluster())),
        Instant::now(),
    );
    assert_eq!(response.status, 200);
    let (content_type, text) = response.body.unwrap();
    assert_eq!(content_type, "text/plain");
    for (ours, patroni) in text.lines().zip(METRICS_4X_PRIMARY.lines()) {
        assert_eq!(ours, patroni);
    }
    assert_eq!(text, METRICS_4X_PRIMARY);
}

#[test]
fn metrics_use_patronis_names_and_values() {
    let text = metrics_text(&replica(900), None);
    for (name, value) in [
        ("patroni_primary", "0"),
        ("patroni_replica", "1"),
        ("patroni_xlog_location", "0"),
        ("patroni_xlog_received_location", "900"),
        ("patroni_postgres_streaming", "1"),
        ("patroni_postgres_in_archive_recovery", "0"),
        ("patroni_cluster_unlocked", "1"),
        ("patroni_postmaster_start_time", "0"),
    ] {
        assert_eq!(metric(&text, name), value, "{name}");
    }

    // Without a status query (PostgreSQL down), as Patroni: no streaming metrics, and the
    // state's index.
    let text = metrics_text(&stopped(), Some(&healthy_cluster()));
    assert!(!text.contains("patroni_postgres_streaming"), "{text}");
    assert!(
        !text.contains("patroni_postgres_in_archive_recovery"),
        "{text}"
    );
    for (name, value) in [
        ("patroni_postgres_running", "0"),
        ("patroni_postgres_server_version", "0"),
        ("patroni_postgres_timeline", "0"),
        ("patroni_postgres_state", "12"),
    ] {
        assert_eq!(metric(&text, name), value, "{name}");
    }

    // A state Patroni does not number is -1.
    let mut unknown = replica(900);
    unknown.state = MemberState::Unknown;
    assert_eq!(
        metric(&metrics_text(&unknown, None), "patroni_postgres_state"),
        "-1"
    );

    // In quorum mode a synchronous replica is a quorum standby, not a sync standby.
    let sync = |mode: &str| {
        cluster(&[
            ("leader", "pg0"),
            ("sync", r#"{"leader":"pg0","sync_standby":"pg1"}"#),
            ("config", mode),
        ])
    };
    for (mode, sync_standby, quorum_standby) in [
        (r#"{"synchronous_mode":true}"#, "1", "0"),
        (r#"{"synchronous_mode":"quorum"}"#, "0", "1"),
        (r#"{"synchronous_mode":false}"#, "0", "0"),
    ] {
        let c = sync(mode);
        let text = metrics_text(&replica(900), Some(&c));
        assert_eq!(
            metric(&text, "patroni_sync_standby"),
            sync_standby,
            "{mode}"
        );
        assert_eq!(
            metric(&text, "patroni_quorum_standby"),
            quorum_standby,
            "{mode}"
        );
        let status = patroni_json(&replica(900), Some(&c));
        assert_eq!(
            status.get("sync_standby").is_some(),
            sync_standby == "1",
            "{mode}"
        );
        assert_eq!(
            status.get("quorum_standby").is_some(),
            quorum_standby == "1",
            "{mode}"
        );
    }
}

#[test]
fn query_strings_decode_like_parse_qs() {
    let q = Query::parse("lag=16MB&lag=1&tag_a=x+y&tag_b=&c");
    assert_eq!(q.get("lag"), Some("16MB"));
    assert_eq!(q.max_lag(), Some(16 << 20));
    assert_eq!(q.get("tag_a"), Some("x y"));
    assert_eq!(q.get("tag_b"), None);
    assert_eq!(Query::parse("lag=0x10").max_lag(), Some(16));
    assert_eq!(Query::parse("lag=1.5kB").max_lag(), Some(1536));
    assert_eq!(Query::parse("lag=5XB").max_lag(), None);
    assert_eq!(Query::parse("lag=-1").max_lag(), Some(-1));
    // `+` is a space in a query string, and spaces around the number are fine.
    assert_eq!(Query::parse("lag=+5").max_lag(), Some(5));
    assert_eq!(Query::parse("lag=1%20MB").max_lag(), Some(1 << 20));
    assert_eq!(Query::parse("mode=write").lag_mode(), LagMode::Write);
}
