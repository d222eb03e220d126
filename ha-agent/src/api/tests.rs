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

#[test]
fn readiness_needs_the_lease_or_a_running_postgres_and_a_dcs_view() {
    let c = healthy_cluster();
    assert_eq!(readiness_status(&primary(), None), 200);
    assert_eq!(readiness_status(&replica(0), Some(&c)), 200);
    assert_eq!(readiness_status(&replica(0), None), 503);
    assert_eq!(readiness_status(&stopped(), Some(&c)), 503);
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

#[test]
fn the_cluster_document_lists_members_with_roles_and_lag() {
    let mut c = healthy_cluster();
    c = ClusterState {
        failover: cluster(&[(
            "failover",
            r#"{"leader":"pg0","member":"pg1","scheduled_at":"2024-09-24T12:00:00+00:00"}"#,
        )])
        .failover,
        ..c
    };
    let mut with_members = cluster(&[
        (
            "members/pg2",
            r#"{"api_url":"http://10.0.0.3:8008/patroni","role":"replica"}"#,
        ),
        ("config", r#"{"pause":true}"#),
    ]);
    c.members.append(&mut with_members.members);
    c.config = with_members.config;
    let body = json_body(&respond(
        "GET",
        "/cluster",
        &snapshot(primary(), Some(c)),
        Instant::now(),
    ));
    assert_eq!(
        body,
        json!({
            "members": [
                {"name": "pg0", "role": "leader", "state": "running",
                 "api_url": "http://10.0.0.1:8008/patroni", "host": "10.0.0.1", "port": 5432,
                 "timeline": 2},
                {"name": "pg1", "role": "replica", "state": "running",
                 "api_url": "http://10.0.0.2:8008/patroni", "host": "10.0.0.2", "port": 5432,
                 "timeline": 2, "lag": 100},
                {"name": "pg2", "role": "replica", "state": "",
                 "api_url": "http://10.0.0.3:8008/patroni", "lag": "unknown"},
            ],
            "pause": true,
            "scheduled_switchover": {"at": "2024-09-24T12:00:00+00:00", "from": "pg0", "to": "pg1"},
        })
    );
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

#[test]
fn metrics_use_patronis_names_and_values() {
    let now = Instant::now();
    let response = respond(
        "GET",
        "/metrics",
        &snapshot(primary(), Some(healthy_cluster())),
        now,
    );
    assert_eq!(response.status, 200);
    let (content_type, text) = response.body.unwrap();
    assert_eq!(content_type, "text/plain");
    assert!(text.contains("patroni_primary{scope=\"batman\",name=\"pg0\"} 1\n"));
    for (name, value) in [
        ("patroni_version", "040104"),
        ("patroni_postgres_running", "1"),
        ("patroni_postmaster_start_time", "1714557600"),
        ("patroni_primary", "1"),
        ("patroni_replica", "0"),
        ("patroni_standby_leader", "0"),
        ("patroni_xlog_location", "1000"),
        ("patroni_xlog_replayed_location", "0"),
        ("patroni_postgres_timeline", "2"),
        ("patroni_postgres_server_version", "160004"),
        ("patroni_cluster_unlocked", "0"),
        ("patroni_dcs_last_seen", "0"),
        ("patroni_is_paused", "0"),
        ("patroni_postgres_state", "5"),
    ] {
        assert_eq!(metric(&text, name), value, "{name}");
    }
    assert!(text.contains("# TYPE patroni_xlog_location counter\n"));

    let text = metrics_text(&replica(900), None);
    for (name, value) in [
        ("patroni_primary", "0"),
        ("patroni_replica", "1"),
        ("patroni_xlog_location", "0"),
        ("patroni_xlog_received_location", "900"),
        ("patroni_postgres_streaming", "1"),
        ("patroni_cluster_unlocked", "1"),
    ] {
        assert_eq!(metric(&text, name), value, "{name}");
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
}
