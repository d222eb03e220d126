//! Unit tests of the model with real Patroni values (examples written by Patroni 4.x and
//! 3.x) and garbage for every key.

use serde_json::json;

use super::*;

/// `members/<name>` of a 4.x replica, byte for byte as Patroni 4.1 writes it.
const MEMBER_4X: &str = r#"{"conn_url":"postgres://10.0.0.2:5432/postgres","api_url":"http://10.0.0.2:8008/patroni","state":"running","role":"replica","version":"4.1.4","tags":{"clonefrom":true},"xlog_location":67419744,"replay_lsn":67419744,"receive_lsn":67419744,"replication_state":"streaming","timeline":1}"#;

/// A 3.x primary right after promotion.
const MEMBER_3X_PRIMARY: &str = r#"{"conn_url":"postgres://10.0.0.1:5432/postgres","api_url":"http://10.0.0.1:8008/patroni","state":"running","role":"master","version":"3.0.2","checkpoint_after_promote":false,"xlog_location":50331968,"timeline":2}"#;

const CONFIG_4X: &str = r#"{"ttl":30,"loop_wait":10,"retry_timeout":10,"maximum_lag_on_failover":1048576,"postgresql":{"use_pg_rewind":true,"use_slots":true,"parameters":{"max_connections":100,"wal_level":"replica","hot_standby":"on"},"pg_hba":["host replication replicator 127.0.0.1/32 md5"]},"synchronous_mode":false,"failsafe_mode":false,"check_timeline":false,"pause":true,"slots":{"permanent_logical":{"type":"logical","database":"db","plugin":"pgoutput"}}}"#;

const STATUS_4X: &str = r#"{"optime":67420024,"slots":{"postgresql1":67420024,"permanent_logical":67419000},"retain_slots":["postgresql0","postgresql1"]}"#;

const HISTORY_4X: &str = r#"[[1,25623960,"no recovery target specified","2019-09-23T16:57:57+02:00","postgresql1"],[2,50331968,"no recovery target specified","2019-09-24T09:22:14+02:00","postgresql0"]]"#;

/// Garbage that every parser must survive.
const GARBAGE: &[&[u8]] = &[
    b"",
    b" ",
    b"\xff\xfe\x00garbage",
    b"{",
    b"null",
    b"[]",
    b"42",
    b"-1",
    b"1.5",
    b"\"text\"",
    b"true",
    b"{\"a\":",
    b"NaN",
];

fn entry(key: &str, value: &str) -> RawEntry {
    RawEntry {
        key: key.to_owned(),
        value: value.as_bytes().to_vec(),
        version: Version::new(format!("v-{key}")),
        owner: None,
        created: 0,
    }
}

// ---------------------------------------------------------------------------------------
// members/<name>

#[test]
fn member_4x_example_reads_every_field_and_writes_the_same_bytes() {
    let data = MemberData::parse(MEMBER_4X.as_bytes());
    assert_eq!(
        data.conn_url.as_deref(),
        Some("postgres://10.0.0.2:5432/postgres")
    );
    assert_eq!(
        data.api_url.as_deref(),
        Some("http://10.0.0.2:8008/patroni")
    );
    assert_eq!(data.state, MemberState::Running);
    assert_eq!(data.role, Role::Replica);
    assert_eq!(data.version.as_deref(), Some("4.1.4"));
    assert_eq!(data.tags.get("clonefrom"), Some(&json!(true)));
    assert_eq!(data.xlog_location, Some(67_419_744));
    assert_eq!(data.replay_lsn, Some(67_419_744));
    assert_eq!(data.receive_lsn, Some(67_419_744));
    assert_eq!(data.replication_state.as_deref(), Some("streaming"));
    assert_eq!(data.timeline, Some(1));
    assert!(data.extra.is_empty());
    assert!(data.is_running());
    assert!(data.clonefrom());
    assert_eq!(data.lsn(), Some(67_419_744));
    assert_eq!(data.patroni_version(), Some(vec![4, 1, 4]));

    assert_eq!(data.to_json(), MEMBER_4X);
    // The Serialize impl writes the same fields in the same order.
    assert_eq!(serde_json::to_string(&data).unwrap(), MEMBER_4X);
}

#[test]
fn member_3x_master_reads_as_primary_and_is_written_as_primary() {
    let data = MemberData::parse(MEMBER_3X_PRIMARY.as_bytes());
    assert_eq!(data.role, Role::Primary);
    assert_eq!(
        data.extra.get("checkpoint_after_promote"),
        Some(&json!(false))
    );
    // The flag is present: the post-promote checkpoint has not finished.
    assert_eq!(data.checkpoint_after_promote(), Some(false));
    assert_eq!(
        data.to_json(),
        r#"{"conn_url":"postgres://10.0.0.1:5432/postgres","api_url":"http://10.0.0.1:8008/patroni","state":"running","role":"primary","version":"3.0.2","xlog_location":50331968,"timeline":2,"checkpoint_after_promote":false}"#
    );
}

#[test]
fn checkpoint_after_promote_follows_patroni() {
    let primary = MemberData::parse(br#"{"role":"primary","version":"4.0.0"}"#);
    assert_eq!(primary.checkpoint_after_promote(), Some(true));
    let replica = MemberData::parse(br#"{"role":"replica","version":"4.0.0"}"#);
    assert_eq!(replica.checkpoint_after_promote(), Some(false));
    let old = MemberData::parse(br#"{"role":"master","version":"1.5.6"}"#);
    assert_eq!(old.checkpoint_after_promote(), None);
    let unparsable = MemberData::parse(br#"{"role":"master","version":"z"}"#);
    assert_eq!(unparsable.checkpoint_after_promote(), None);
}

#[test]
fn member_unknown_fields_are_kept_in_order_and_written_after_the_known_ones() {
    let raw = r#"{"pending_restart":true,"proxy_url":"postgres://proxy:6432/postgres","role":"replica","pending_restart_reason":{"max_connections":{"old_value":"100","new_value":"101"}},"conn_url":"postgres://h:5432/postgres"}"#;
    let data = MemberData::parse(raw.as_bytes());
    assert_eq!(data.extra.len(), 3);
    assert_eq!(
        data.to_json(),
        r#"{"conn_url":"postgres://h:5432/postgres","role":"replica","pending_restart":true,"proxy_url":"postgres://proxy:6432/postgres","pending_restart_reason":{"max_connections":{"old_value":"100","new_value":"101"}}}"#
    );
    assert_eq!(MemberData::parse(data.to_json().as_bytes()), data);
}

#[test]
fn member_extra_cannot_shadow_a_known_field() {
    let mut data = MemberData {
        role: Role::Primary,
        ..MemberData::default()
    };
    data.extra.insert("role".into(), json!("replica"));
    assert_eq!(data.to_json(), r#"{"role":"primary"}"#);
}

#[test]
fn member_positions_accept_numeric_strings_and_drop_garbage() {
    let data = MemberData::parse(
        br#"{"xlog_location":"67419744","replay_lsn":-1,"receive_lsn":1.5,"timeline":"x"}"#,
    );
    assert_eq!(data.xlog_location, Some(67_419_744));
    assert_eq!(data.replay_lsn, None);
    assert_eq!(data.receive_lsn, None);
    assert_eq!(data.timeline, None);
    // Written back as integers.
    assert_eq!(
        data.to_json(),
        r#"{"role":"uninitialized","xlog_location":67419744}"#
    );
}

#[test]
fn member_fields_of_the_wrong_type_read_as_absent() {
    let data = MemberData::parse(
        br#"{"conn_url":5,"api_url":null,"state":["running"],"role":1,"tags":"nofailover","version":4}"#,
    );
    assert_eq!(data, MemberData::default());
}

#[test]
fn member_state_keeps_other_strings_and_omits_unknown() {
    let stopped = MemberData::parse(br#"{"state":"stopped","role":"replica"}"#);
    assert_eq!(stopped.state, MemberState::Other("stopped".into()));
    assert!(!stopped.is_running());
    assert_eq!(stopped.to_json(), r#"{"state":"stopped","role":"replica"}"#);
    let absent = MemberData::parse(br#"{"role":"replica"}"#);
    assert_eq!(absent.state, MemberState::Unknown);
    assert_eq!(absent.state.as_str(), "unknown");
    assert_eq!(absent.to_json(), r#"{"role":"replica"}"#);
}

#[test]
fn member_garbage_reads_as_empty() {
    for raw in GARBAGE {
        assert_eq!(MemberData::parse(raw), MemberData::default(), "{raw:?}");
    }
}

#[test]
fn member_output_is_ascii_like_python() {
    let data = MemberData::parse(r#"{"role":"replica","tags":{"zone":"Zürich"}}"#.as_bytes());
    assert_eq!(
        data.to_json(),
        r#"{"role":"replica","tags":{"zone":"Z\u00fcrich"}}"#
    );
}

fn tags(tags: serde_json::Value) -> MemberData {
    let serde_json::Value::Object(tags) = tags else {
        panic!("tags are an object");
    };
    MemberData {
        conn_url: Some("postgres://h:5432/postgres".into()),
        tags,
        ..MemberData::default()
    }
}

/// Patroni 4.1's `Tags._bool_tag` / `_priority_tag`: the boolean wins when present
/// (Python truthiness), else the priority decides; priority defaults to 1.
#[test]
fn failover_tags_follow_patroni() {
    let cases = [
        (json!({}), false, 1),
        (json!({"nofailover": true}), true, 0),
        (json!({"nofailover": false}), false, 1),
        (json!({"nofailover": "false"}), true, 0),
        (json!({"nofailover": null}), false, 1),
        (json!({"failover_priority": 0}), true, 0),
        (json!({"failover_priority": -3}), true, -3),
        (json!({"failover_priority": "5"}), false, 5),
        (json!({"failover_priority": "x"}), false, 1),
        (json!({"failover_priority": 5, "nofailover": true}), true, 0),
        (
            json!({"failover_priority": 0, "nofailover": false}),
            false,
            0,
        ),
    ];
    for (tag_values, nofailover, priority) in cases {
        let data = tags(tag_values.clone());
        assert_eq!(data.nofailover(), nofailover, "nofailover of {tag_values}");
        assert_eq!(
            data.failover_priority(),
            priority,
            "failover_priority of {tag_values}"
        );
    }
}

#[test]
fn sync_tags_follow_patroni() {
    assert!(!tags(json!({})).nosync());
    assert_eq!(tags(json!({})).sync_priority(), 1);
    assert!(tags(json!({"nosync": true})).nosync());
    assert_eq!(tags(json!({"nosync": true})).sync_priority(), 0);
    assert!(tags(json!({"sync_priority": 0})).nosync());
    assert_eq!(tags(json!({"sync_priority": 3})).sync_priority(), 3);
}

#[test]
fn other_tags_follow_patroni() {
    assert!(tags(json!({"noloadbalance": "no"})).noloadbalance());
    assert!(!tags(json!({"noloadbalance": 0})).noloadbalance());
    assert!(tags(json!({"clonefrom": 1})).clonefrom());
    // clonefrom also needs a conn_url to clone from.
    let without_url = MemberData {
        conn_url: None,
        ..tags(json!({"clonefrom": true}))
    };
    assert!(!without_url.clonefrom());
    assert_eq!(
        tags(json!({"replicatefrom": "pg1"})).replicatefrom(),
        Some("pg1")
    );
    assert_eq!(tags(json!({"replicatefrom": 1})).replicatefrom(), None);
    assert!(tags(json!({"nostream": "on"})).nostream());
    assert!(!tags(json!({"nostream": "sure"})).nostream());
}

// ---------------------------------------------------------------------------------------
// initialize

#[test]
fn initialize_reads_bootstrap_sysid_and_garbage() {
    assert_eq!(Initialize::parse(b""), Initialize::Bootstrapping);
    assert_eq!(
        Initialize::parse(b"7268616322854375442"),
        Initialize::SystemId("7268616322854375442".into())
    );
    assert_eq!(
        Initialize::parse(b"123456789"),
        Initialize::Invalid("123456789".into())
    );
    assert_eq!(
        Initialize::parse(b" 7268616322854375442"),
        Initialize::Invalid(" 7268616322854375442".into())
    );
    assert_eq!(
        Initialize::parse(b"\xff"),
        Initialize::Invalid("\u{fffd}".into())
    );
    for value in ["", "7268616322854375442", "garbage"] {
        assert_eq!(Initialize::parse(value.as_bytes()).to_value_string(), value);
    }
    assert_eq!(
        Initialize::parse(b"7268616322854375442").system_id(),
        Some("7268616322854375442")
    );
    assert_eq!(Initialize::Bootstrapping.system_id(), None);
}

// ---------------------------------------------------------------------------------------
// config

#[test]
fn config_4x_example_reads_with_patroni_defaults() {
    let config = ClusterConfig::parse(CONFIG_4X.as_bytes());
    assert!(config.valid);
    assert_eq!(config.ttl(), 30);
    assert_eq!(config.loop_wait(), 10);
    assert_eq!(config.retry_timeout(), 10);
    assert_eq!(config.maximum_lag_on_failover(), 1_048_576);
    assert!(config.pause());
    assert!(!config.failsafe_mode());
    assert!(!config.synchronous_mode());
    assert!(!config.check_timeline());
    assert!(!config.is_standby_cluster());
    assert_eq!(ClusterConfig::parse(config.to_json().as_bytes()), config);
}

#[test]
fn config_defaults_apply_to_an_empty_object() {
    let config = ClusterConfig::parse(b"{}");
    assert!(config.valid);
    assert_eq!(
        (config.ttl(), config.loop_wait(), config.retry_timeout()),
        (30, 10, 10)
    );
    assert_eq!(config.maximum_lag_on_failover(), 1_048_576);
    assert_eq!(config.synchronous_node_count(), 1);
    assert!(!config.pause() && !config.failsafe_mode() && !config.synchronous_mode());
    assert_eq!(config.to_json(), "{}");
}

#[test]
fn config_garbage_reads_as_invalid() {
    for raw in GARBAGE {
        let config = ClusterConfig::parse(raw);
        assert!(!config.valid, "{raw:?}");
        assert!(config.data.is_empty());
        assert_eq!(config.ttl(), 30);
    }
}

#[test]
fn config_timeouts_are_validated_like_patroni_4() {
    let read = |raw: &str| {
        let config = ClusterConfig::parse(raw.as_bytes());
        (config.ttl(), config.loop_wait(), config.retry_timeout())
    };
    // Lenient integers.
    assert_eq!(
        read(r#"{"ttl":"40","loop_wait":5.9,"retry_timeout":" 12 "}"#),
        (40, 5, 12)
    );
    // Minimums: ttl 7, loop_wait 1, retry_timeout 3; a short ttl is kept.
    assert_eq!(
        read(r#"{"ttl":5,"loop_wait":0,"retry_timeout":-1}"#),
        (7, 1, 3)
    );
    assert_eq!(
        read(r#"{"ttl":10,"loop_wait":2,"retry_timeout":4}"#),
        (10, 2, 4)
    );
    // loop_wait + 2 * retry_timeout <= ttl, by shortening loop_wait first ...
    assert_eq!(
        read(r#"{"ttl":30,"loop_wait":10,"retry_timeout":12}"#),
        (30, 6, 12)
    );
    // ... then retry_timeout.
    assert_eq!(
        read(r#"{"ttl":20,"loop_wait":10,"retry_timeout":10}"#),
        (20, 1, 9)
    );
    // Garbage reads as the default.
    assert_eq!(
        read(r#"{"ttl":"thirty","loop_wait":null,"retry_timeout":[1]}"#),
        (30, 10, 10)
    );
    assert_eq!(read(r#"{"ttl":1e30}"#), (30, 10, 10));
}

#[test]
fn config_switches_accept_patroni_booleans() {
    for on in [r#""on""#, r#""TRUE""#, r#""yes""#, r#""1""#, "1", "true"] {
        let config =
            ClusterConfig::parse(format!(r#"{{"pause":{on},"failsafe_mode":{on}}}"#).as_bytes());
        assert!(config.pause() && config.failsafe_mode(), "{on}");
    }
    for off in [r#""off""#, r#""nope""#, "2", "null", "1.0", "{}"] {
        let config = ClusterConfig::parse(format!(r#"{{"pause":{off}}}"#).as_bytes());
        assert!(!config.pause(), "{off}");
    }
}

#[test]
fn config_synchronous_modes() {
    let quorum =
        ClusterConfig::parse(br#"{"synchronous_mode":"Quorum","synchronous_node_count":"2"}"#);
    assert!(quorum.quorum_commit_mode());
    assert!(quorum.synchronous_mode());
    assert_eq!(quorum.synchronous_node_count(), 2);
    let strict = ClusterConfig::parse(
        br#"{"synchronous_mode":"on","synchronous_mode_strict":true,"synchronous_node_count":0}"#,
    );
    assert!(strict.synchronous_mode() && !strict.quorum_commit_mode());
    assert_eq!(strict.synchronous_node_count(), 1);
    // A standby cluster never runs synchronous replication.
    let standby = ClusterConfig::parse(
        br#"{"synchronous_mode":true,"standby_cluster":{"host":"10.1.0.1","port":5432}}"#,
    );
    assert!(standby.is_standby_cluster());
    assert!(!standby.synchronous_mode());
    let empty_standby =
        ClusterConfig::parse(br#"{"standby_cluster":{"host":"","primary_slot_name":"x"}}"#);
    assert!(!empty_standby.is_standby_cluster());
}

#[test]
fn config_maximum_lag_reads_with_parse_int() {
    let lag = |raw: &str| ClusterConfig::parse(raw.as_bytes()).maximum_lag_on_failover();
    assert_eq!(lag(r#"{"maximum_lag_on_failover":"0x100"}"#), 256);
    // A unit needs a base unit to convert to, which this setting has not: the default.
    assert_eq!(lag(r#"{"maximum_lag_on_failover":"1kB"}"#), 1_048_576);
    assert_eq!(lag(r#"{"maximum_lag_on_failover":-1}"#), 0);
    assert_eq!(lag(r#"{"maximum_lag_on_failover":0}"#), 0);
}

// ---------------------------------------------------------------------------------------
// failover

#[test]
fn failover_reads_the_4x_example_and_writes_it_back() {
    let raw = r#"{"leader":"postgresql0","member":"postgresql1","scheduled_at":"2024-09-24T12:00:00+00:00"}"#;
    let failover = Failover::parse(raw.as_bytes());
    assert_eq!(failover.leader.as_deref(), Some("postgresql0"));
    assert_eq!(failover.candidate.as_deref(), Some("postgresql1"));
    assert_eq!(
        failover.scheduled_at.as_deref(),
        Some("2024-09-24T12:00:00+00:00")
    );
    assert!(!failover.is_empty());
    assert_eq!(failover.to_json(), raw);
}

#[test]
fn failover_reads_the_legacy_colon_form() {
    let both = Failover::parse(b"postgresql0: postgresql1");
    assert_eq!(both.leader.as_deref(), Some("postgresql0"));
    assert_eq!(both.candidate.as_deref(), Some("postgresql1"));
    let candidate_only = Failover::parse(b":postgresql1");
    assert_eq!(candidate_only.leader, None);
    assert_eq!(candidate_only.candidate.as_deref(), Some("postgresql1"));
    let leader_only = Failover::parse(b"postgresql0");
    assert_eq!(leader_only.leader.as_deref(), Some("postgresql0"));
    assert_eq!(leader_only.candidate, None);
}

#[test]
fn failover_empty_values_request_nothing() {
    for raw in [
        &b""[..],
        b"{}",
        b"null",
        b"[]",
        b"42",
        b"{\"leader\":\"\",\"member\":5}",
        b"\xff",
    ] {
        let failover = Failover::parse(raw);
        assert!(failover.is_empty(), "{raw:?}");
        assert_eq!(failover.to_json(), "{}");
    }
    // A lone schedule names nobody.
    let scheduled = Failover::parse(br#"{"scheduled_at":"2024-09-24T12:00:00+00:00"}"#);
    assert!(scheduled.is_empty());
    assert_eq!(Failover::default().to_json(), "{}");
}

// ---------------------------------------------------------------------------------------
// sync

#[test]
fn sync_reads_the_4x_example_and_writes_it_back() {
    let raw = r#"{"leader":"postgresql0","quorum":1,"sync_standby":"postgresql1,postgresql2"}"#;
    let sync = SyncState::parse(raw.as_bytes());
    assert_eq!(sync.leader.as_deref(), Some("postgresql0"));
    assert_eq!(sync.sync_standby, ["postgresql1", "postgresql2"]);
    assert_eq!(sync.quorum, 1);
    assert!(!sync.is_empty());
    assert_eq!(
        sync.members(),
        ["postgresql0", "postgresql1", "postgresql2"]
    );
    assert_eq!(sync.to_json(), raw);
}

#[test]
fn sync_reads_3x_values_and_nulls() {
    let v3 = SyncState::parse(br#"{"leader":"pg0","sync_standby":" pg2 ,pg1,,"}"#);
    assert_eq!(v3.quorum, 0);
    assert_eq!(v3.sync_standby, ["pg2", "pg1"]);
    // Written sorted, with quorum.
    assert_eq!(
        v3.to_json(),
        r#"{"leader":"pg0","quorum":0,"sync_standby":"pg1,pg2"}"#
    );
    let none = SyncState::parse(br#"{"leader":"pg0","quorum":0,"sync_standby":null}"#);
    assert!(none.sync_standby.is_empty());
    assert_eq!(
        none.to_json(),
        r#"{"leader":"pg0","quorum":0,"sync_standby":null}"#
    );
    assert_eq!(
        SyncState::default().to_json(),
        r#"{"leader":null,"quorum":0,"sync_standby":null}"#
    );
}

#[test]
fn sync_quorum_is_read_like_patroni() {
    // Without a leader the quorum is 0.
    assert_eq!(
        SyncState::parse(br#"{"quorum":2,"sync_standby":"a"}"#).quorum,
        0
    );
    assert_eq!(
        SyncState::parse(br#"{"leader":"a","quorum":"2"}"#).quorum,
        2
    );
    assert_eq!(
        SyncState::parse(br#"{"leader":"a","quorum":2.7}"#).quorum,
        2
    );
    // A falsy quorum is never converted.
    assert_eq!(SyncState::parse(br#"{"leader":"a","quorum":""}"#).quorum, 0);
    // An unconvertible one empties the whole key, as in Patroni.
    assert_eq!(
        SyncState::parse(br#"{"leader":"a","quorum":"two","sync_standby":"b"}"#),
        SyncState::default()
    );
}

#[test]
fn sync_matches_standbys_case_insensitively() {
    let sync = SyncState::parse(br#"{"leader":"Foo","quorum":0,"sync_standby":"bar,Zoo"}"#);
    assert!(sync.matches("BAR"));
    assert!(sync.matches("zoo"));
    assert!(!sync.matches("foo"), "4.x matches() looks at standbys only");
    assert!(sync.leader_matches("fOO"));
    assert!(!sync.matches("baz"));
    assert!(!sync.matches(""));
    let leaderless = SyncState::parse(br#"{"sync_standby":"bar"}"#);
    assert!(leaderless.is_empty());
    assert!(leaderless.voters().is_empty());
    assert!(!leaderless.matches("bar"));
    assert!(leaderless.members().is_empty());
}

#[test]
fn sync_garbage_reads_as_empty() {
    for raw in GARBAGE {
        assert_eq!(SyncState::parse(raw), SyncState::default(), "{raw:?}");
    }
    let wrong_types = SyncState::parse(br#"{"leader":1,"sync_standby":["a"]}"#);
    assert_eq!(wrong_types, SyncState::default());
}

// ---------------------------------------------------------------------------------------
// history

#[test]
fn history_reads_the_example_and_writes_it_back() {
    let history = TimelineHistory::parse(HISTORY_4X.as_bytes());
    assert_eq!(history.lines.len(), 2);
    assert_eq!(
        history.lines[0],
        HistoryLine {
            timeline: 1,
            lsn: 25_623_960,
            reason: "no recovery target specified".into(),
            timestamp: Some("2019-09-23T16:57:57+02:00".into()),
            new_leader: Some("postgresql1".into()),
        }
    );
    assert_eq!(history.next_timeline(), 3);
    assert_eq!(history.to_json(), HISTORY_4X);
}

#[test]
fn history_lines_keep_their_length() {
    let raw = r#"[[1,100,"a"],[2,200,"b","2024-01-01T00:00:00+00:00"],[3,300,"c",null,"pg1"]]"#;
    let history = TimelineHistory::parse(raw.as_bytes());
    assert_eq!(history.lines.len(), 3);
    assert_eq!(history.to_json(), raw);
}

#[test]
fn history_skips_malformed_lines() {
    let raw = r#"[[1,100,"ok"],["2","200","numeric strings"],[3],"x",[4,-1,"negative"],[5,500,7],[6,600,"odd types",1,2]]"#;
    let history = TimelineHistory::parse(raw.as_bytes());
    let timelines: Vec<u64> = history.lines.iter().map(|line| line.timeline).collect();
    assert_eq!(timelines, [1, 2, 6]);
    assert_eq!(history.lines[2].timestamp, None);
    assert_eq!(history.lines[2].new_leader, None);
}

#[test]
fn history_garbage_reads_as_no_lines() {
    for raw in GARBAGE {
        assert_eq!(
            TimelineHistory::parse(raw),
            TimelineHistory::default(),
            "{raw:?}"
        );
    }
    assert_eq!(TimelineHistory::parse(b"[]").next_timeline(), 1);
    assert_eq!(TimelineHistory::default().to_json(), "[]");
}

// ---------------------------------------------------------------------------------------
// status and optime/leader

#[test]
fn status_reads_the_4x_example() {
    let status = Status::parse(STATUS_4X.as_bytes());
    assert_eq!(status.optime, Some(67_420_024));
    assert_eq!(status.slots.get("postgresql1"), Some(&67_420_024));
    assert_eq!(status.slots.get("permanent_logical"), Some(&67_419_000));
    assert_eq!(status.retain_slots, ["postgresql0", "postgresql1"]);
    // Slots come out sorted by name.
    assert_eq!(
        status.to_json(),
        r#"{"optime":67420024,"slots":{"permanent_logical":67419000,"postgresql1":67420024},"retain_slots":["postgresql0","postgresql1"]}"#
    );
    assert_eq!(Status::parse(status.to_json().as_bytes()), status);
}

#[test]
fn status_reads_legacy_optime_and_kubernetes_strings() {
    assert_eq!(Status::parse(b"67420024").optime, Some(67_420_024));
    let k8s = Status::parse(
        br#"{"optime":"67420024","slots":"{\"pg1\":67420024}","retain_slots":"[\"pg0\"]"}"#,
    );
    assert_eq!(k8s.optime, Some(67_420_024));
    assert_eq!(k8s.slots.get("pg1"), Some(&67_420_024));
    assert_eq!(k8s.retain_slots, ["pg0"]);
}

#[test]
fn status_drops_garbage_fields_one_by_one() {
    let status = Status::parse(
        br#"{"optime":"x","slots":{"a":"0x10","b":null,"c":-5,"d":7},"retain_slots":["a",1,null]}"#,
    );
    assert_eq!(status.optime, None);
    assert_eq!(status.slots.len(), 2);
    assert_eq!(status.slots.get("a"), Some(&16));
    assert_eq!(status.retain_slots, ["a"]);
    let wrong_types = Status::parse(br#"{"optime":-3,"slots":[1],"retain_slots":{"a":1}}"#);
    assert_eq!(wrong_types, Status::default());
}

#[test]
fn status_writes_only_what_it_has() {
    assert_eq!(Status::default().to_json(), "{}");
    let optime_only = Status {
        optime: Some(5),
        ..Status::default()
    };
    assert_eq!(optime_only.to_json(), r#"{"optime":5}"#);
}

#[test]
fn status_garbage_reads_as_empty() {
    // `42` is not garbage here: it is the legacy plain-integer optime.
    for raw in GARBAGE.iter().filter(|raw| **raw != b"42") {
        assert_eq!(Status::parse(raw), Status::default(), "{raw:?}");
    }
}

// ---------------------------------------------------------------------------------------
// failsafe

#[test]
fn failsafe_reads_the_example_and_drops_non_strings() {
    let raw = r#"{"postgresql0":"http://10.0.0.1:8008/patroni","postgresql1":"http://10.0.0.2:8008/patroni"}"#;
    let failsafe = Failsafe::parse(raw.as_bytes());
    assert_eq!(failsafe.members.len(), 2);
    assert_eq!(failsafe.to_json(), raw);
    let mixed = Failsafe::parse(br#"{"a":"http://a:8008/patroni","b":null,"c":1}"#);
    assert_eq!(mixed.members.keys().collect::<Vec<_>>(), ["a"]);
    for raw in GARBAGE {
        assert_eq!(Failsafe::parse(raw), Failsafe::default(), "{raw:?}");
    }
}

// ---------------------------------------------------------------------------------------
// the whole scope

fn example_cluster() -> Vec<RawEntry> {
    vec![
        entry("initialize", "7268616322854375442"),
        entry("config", CONFIG_4X),
        RawEntry {
            owner: Some("lease-7".into()),
            created: 4711,
            ..entry("leader", "postgresql0\n")
        },
        entry("members/postgresql1", MEMBER_4X),
        entry("members/postgresql0", MEMBER_3X_PRIMARY),
        entry("failover", r#"{"member":"postgresql1"}"#),
        entry(
            "sync",
            r#"{"leader":"postgresql0","quorum":0,"sync_standby":"postgresql1"}"#,
        ),
        entry("history", HISTORY_4X),
        entry("status", STATUS_4X),
        entry("optime/leader", "1"),
        entry(
            "failsafe",
            r#"{"postgresql0":"http://10.0.0.1:8008/patroni"}"#,
        ),
    ]
}

#[test]
fn a_full_scope_is_parsed_key_by_key() {
    let state = ClusterState::from_entries(example_cluster());
    let initialize = state.initialize.as_ref().unwrap();
    assert_eq!(initialize.value.system_id(), Some("7268616322854375442"));
    assert_eq!(initialize.version.as_str(), "v-initialize");
    assert!(state.config.as_ref().unwrap().value.pause());

    let leader = state.leader.as_ref().unwrap();
    assert_eq!(leader.name, "postgresql0");
    assert_eq!(leader.owner.as_deref(), Some("lease-7"));
    assert_eq!(leader.token, FencingToken(4711));
    assert_eq!(leader.version.as_str(), "v-leader");

    let names: Vec<&str> = state.members.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(names, ["postgresql0", "postgresql1"]);
    assert_eq!(state.leader_member().unwrap().data.role, Role::Primary);
    assert_eq!(
        state.member("postgresql1").unwrap().data.role,
        Role::Replica
    );
    assert!(state.member("postgresql9").is_none());

    assert_eq!(
        state.failover.as_ref().unwrap().value.candidate.as_deref(),
        Some("postgresql1")
    );
    assert!(state.sync.as_ref().unwrap().value.matches("postgresql1"));
    assert_eq!(state.history.as_ref().unwrap().value.next_timeline(), 3);
    // `status` wins over the legacy key.
    let status = state.status.as_ref().unwrap();
    assert_eq!(status.value.optime, Some(67_420_024));
    assert_eq!(status.version.as_str(), "v-status");
    assert_eq!(state.failsafe.as_ref().unwrap().value.members.len(), 1);
}

#[test]
fn an_empty_scope_has_nothing() {
    assert_eq!(
        ClusterState::from_entries(Vec::new()),
        ClusterState::default()
    );
}

#[test]
fn status_falls_back_to_legacy_optime_only_when_absent() {
    let legacy = ClusterState::from_entries([entry("optime/leader", "67420024")]);
    let status = legacy.status.unwrap();
    assert_eq!(status.value.optime, Some(67_420_024));
    assert_eq!(status.version.as_str(), "v-optime/leader");

    let garbage_status =
        ClusterState::from_entries([entry("status", "{"), entry("optime/leader", "67420024")]);
    assert_eq!(garbage_status.status.unwrap().value, Status::default());
}

#[test]
fn a_leader_key_is_a_leader_whatever_it_holds() {
    for value in [&b""[..], b"  ", b"\xff\xfe", b"{\"json\":1}"] {
        let raw = RawEntry {
            value: value.to_vec(),
            ..entry("leader", "")
        };
        let state = ClusterState::from_entries([raw]);
        assert!(state.leader.is_some(), "{value:?}");
    }
}

#[test]
fn only_direct_member_keys_are_members() {
    let state = ClusterState::from_entries([
        entry("members/pg1", "{}"),
        entry("members/", "{}"),
        entry("members/a/b", "{}"),
        entry("membersx/pg2", "{}"),
        entry("0/members/pg3", "{}"),
        entry("1/leader", "pg3"),
        entry("something_new", "{}"),
    ]);
    let names: Vec<&str> = state.members.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(names, ["pg1"]);
    assert!(state.leader.is_none());
}

#[test]
fn duplicate_keys_last_one_wins() {
    let state = ClusterState::from_entries([
        entry("leader", "pg0"),
        entry("members/pg1", r#"{"role":"replica"}"#),
        entry("leader", "pg1"),
        entry("members/pg1", r#"{"role":"primary"}"#),
    ]);
    assert_eq!(state.leader.unwrap().name, "pg1");
    assert_eq!(state.members.len(), 1);
    assert_eq!(state.members[0].data.role, Role::Primary);
}

#[test]
fn every_key_survives_every_garbage_value() {
    let keys = [
        "initialize",
        "config",
        "leader",
        "members/pg0",
        "failover",
        "sync",
        "history",
        "status",
        "optime/leader",
        "failsafe",
    ];
    for key in keys {
        for raw in GARBAGE {
            let value = RawEntry {
                value: raw.to_vec(),
                ..entry(key, "")
            };
            let state = ClusterState::from_entries([value]);
            // Present keys stay present, whatever they hold.
            let present = match key {
                "initialize" => state.initialize.is_some(),
                "config" => state.config.is_some(),
                "leader" => state.leader.is_some(),
                "members/pg0" => state.members.len() == 1,
                "failover" => state.failover.is_some(),
                "sync" => state.sync.is_some(),
                "history" => state.history.is_some(),
                "status" | "optime/leader" => state.status.is_some(),
                _ => state.failsafe.is_some(),
            };
            assert!(present, "{key} = {raw:?}");
        }
    }
}
