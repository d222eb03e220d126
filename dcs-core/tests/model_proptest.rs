//! Properties of the Patroni data model: every parser is total on any input, and every
//! well-formed value survives being written and read back.

use std::collections::BTreeMap;

use dcs_core::model::{
    ClusterConfig, ClusterState, Failover, Failsafe, HistoryLine, Initialize, MemberData,
    MemberState, RawEntry, Role, Status, SyncState, TimelineHistory, Version,
    slot_name_from_member_name,
};
use proptest::prelude::*;
use serde_json::{Map, Value};

/// Every field name any parser looks at, so generated objects hit the typed paths with
/// values of every type.
const FIELD_NAMES: &[&str] = &[
    "conn_url",
    "api_url",
    "state",
    "role",
    "version",
    "tags",
    "xlog_location",
    "replay_lsn",
    "receive_lsn",
    "replication_state",
    "timeline",
    "nofailover",
    "failover_priority",
    "clonefrom",
    "ttl",
    "loop_wait",
    "retry_timeout",
    "maximum_lag_on_failover",
    "pause",
    "synchronous_mode",
    "standby_cluster",
    "leader",
    "member",
    "scheduled_at",
    "quorum",
    "sync_standby",
    "optime",
    "slots",
    "retain_slots",
];

const KEYS: &[&str] = &[
    "initialize",
    "config",
    "leader",
    "members/pg0",
    "members/pg1",
    "failover",
    "sync",
    "history",
    "status",
    "optime/leader",
    "failsafe",
];

const ROLES: &[&str] = &[
    "primary",
    "master",
    "replica",
    "standby_leader",
    "demoted",
    "uninitialized",
    "promoted",
];

/// Floats with short exact decimal forms: `serde_json` here parses floats best-effort
/// (no `float_roundtrip` feature), so long ones may come back one ULP off.
fn short_float() -> impl Strategy<Value = f64> {
    (any::<i32>(), 0u32..8)
        .prop_map(|(mantissa, shift)| f64::from(mantissa) / f64::from(1u32 << shift))
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        short_float().prop_map(Value::from),
        "\\PC{0,12}".prop_map(Value::from),
        "[\\x00-\\x7f]{0,8}".prop_map(Value::from),
        prop::sample::select(ROLES).prop_map(Value::from),
        "[0-9]{1,20}".prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(field_name(), inner, 0..6)
                .prop_map(|map| Value::Object(map.into_iter().collect())),
        ]
    })
}

fn field_name() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(FIELD_NAMES).prop_map(str::to_owned),
        "\\PC{0,8}",
    ]
}

/// An object with Patroni's field names holding values of any type.
fn json_object() -> impl Strategy<Value = Map<String, Value>> {
    prop::collection::btree_map(field_name(), json_value(), 0..10)
        .prop_map(|map| map.into_iter().collect())
}

/// Text that is JSON, almost JSON (cut short or with a byte flipped), or not JSON.
fn json_like_bytes() -> impl Strategy<Value = Vec<u8>> {
    let text = prop_oneof![
        json_value().prop_map(|v| v.to_string()),
        json_object().prop_map(|map| Value::Object(map).to_string()),
    ];
    (text, any::<prop::sample::Index>(), any::<u8>(), 0u8..3).prop_map(|(text, at, byte, how)| {
        let mut bytes = text.into_bytes();
        if !bytes.is_empty() {
            let at = at.index(bytes.len());
            match how {
                0 => bytes.truncate(at),
                1 => bytes[at] = byte,
                _ => {}
            }
        }
        bytes
    })
}

fn any_input() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..256),
        json_like_bytes(),
        "postgres\\PC{0,40}".prop_map(String::into_bytes),
        "[0-9 :]{0,24}".prop_map(String::into_bytes),
    ]
}

/// Parses `raw` as every key and exercises every accessor: none may panic.
fn parse_as_everything(raw: &[u8]) {
    let member = MemberData::parse(raw);
    let _ = member.to_json();
    let _ = serde_json::to_string(&member).expect("member data serializes");
    let _ = (member.is_running(), member.lsn(), member.patroni_version());
    let _ = (
        member.nofailover(),
        member.failover_priority(),
        member.noloadbalance(),
    );
    let _ = (member.clonefrom(), member.nosync(), member.sync_priority());
    let _ = (
        member.replicatefrom(),
        member.nostream(),
        member.checkpoint_after_promote(),
    );

    let initialize = Initialize::parse(raw);
    let _ = (initialize.to_value_string(), initialize.system_id());

    let config = ClusterConfig::parse(raw);
    let _ = config.to_json();
    let _ = (config.ttl(), config.loop_wait(), config.retry_timeout());
    let _ = (
        config.maximum_lag_on_failover(),
        config.pause(),
        config.failsafe_mode(),
    );
    let _ = (
        config.synchronous_mode(),
        config.quorum_commit_mode(),
        config.synchronous_mode_strict(),
    );
    let _ = (
        config.synchronous_node_count(),
        config.check_timeline(),
        config.is_standby_cluster(),
    );

    let failover = Failover::parse(raw);
    let _ = (failover.to_json(), failover.is_empty());

    let sync = SyncState::parse(raw);
    let _ = (
        sync.to_json(),
        sync.is_empty(),
        sync.voters(),
        sync.members(),
    );
    let _ = (sync.matches("pg0"), sync.leader_matches("PG0"));

    let history = TimelineHistory::parse(raw);
    let _ = (history.to_json(), history.next_timeline());

    let _ = Status::parse(raw).to_json();
    let _ = Failsafe::parse(raw).to_json();
    let _ = slot_name_from_member_name(&String::from_utf8_lossy(raw));
}

/// Reading what we wrote from what we read gives the same value: parsing lands on a
/// normal form that writing preserves.
fn assert_reading_is_stable(raw: &[u8]) {
    let member = MemberData::parse(raw);
    assert_eq!(MemberData::parse(member.to_json().as_bytes()), member);
    let initialize = Initialize::parse(raw);
    assert_eq!(
        Initialize::parse(initialize.to_value_string().as_bytes()),
        initialize
    );
    let config = ClusterConfig::parse(raw);
    if config.valid {
        assert_eq!(ClusterConfig::parse(config.to_json().as_bytes()), config);
    }
    let failover = Failover::parse(raw);
    assert_eq!(Failover::parse(failover.to_json().as_bytes()), failover);
    let sync = SyncState::parse(raw);
    let mut sorted = sync.clone();
    sorted.sync_standby.sort();
    assert_eq!(SyncState::parse(sync.to_json().as_bytes()), sorted);
    let history = TimelineHistory::parse(raw);
    assert_eq!(
        TimelineHistory::parse(history.to_json().as_bytes()),
        history
    );
    let status = Status::parse(raw);
    assert_eq!(Status::parse(status.to_json().as_bytes()), status);
    let failsafe = Failsafe::parse(raw);
    assert_eq!(Failsafe::parse(failsafe.to_json().as_bytes()), failsafe);
}

fn raw_entry() -> impl Strategy<Value = RawEntry> {
    let key = prop_oneof![
        4 => prop::sample::select(KEYS).prop_map(str::to_owned),
        1 => "members/\\PC{0,6}(/\\PC{0,3})?",
        1 => "\\PC{0,16}",
    ];
    (
        key,
        any_input(),
        any::<u32>(),
        prop::option::of("\\PC{0,8}"),
        any::<u64>(),
    )
        .prop_map(|(key, value, version, owner, created)| RawEntry {
            key,
            value,
            version: Version::new(version),
            owner,
            created,
        })
}

fn non_empty_name() -> impl Strategy<Value = String> {
    "\\PC{1,12}"
}

/// A name that survives `sync_standby`'s comma split and whitespace trim.
fn sync_name() -> impl Strategy<Value = String> {
    "[^,\\s\\pC]([^,\\pC]{0,8}[^,\\s\\pC])?"
}

fn member_data() -> impl Strategy<Value = MemberData> {
    let text = || prop::option::of("\\PC{0,16}");
    let state = prop_oneof![
        Just(MemberState::Running),
        Just(MemberState::Unknown),
        "\\PC{0,12}"
            .prop_filter("not running", |s| s != "running")
            .prop_map(MemberState::Other),
    ];
    let role = prop_oneof![
        prop::sample::select(ROLES).prop_map(Role::from),
        "\\PC{0,12}"
            .prop_filter("not a known role", |s| !ROLES.contains(&s.as_str()))
            .prop_map(Role::Other),
    ];
    let tags = prop::collection::btree_map("\\PC{0,8}", json_value(), 0..4);
    let extra = prop::collection::btree_map(
        "\\PC{0,10}".prop_filter("not a typed field", |name| {
            !matches!(
                name.as_str(),
                "conn_url"
                    | "api_url"
                    | "state"
                    | "role"
                    | "version"
                    | "tags"
                    | "xlog_location"
                    | "replay_lsn"
                    | "receive_lsn"
                    | "replication_state"
                    | "timeline"
            )
        }),
        json_value(),
        0..4,
    );
    let positions = prop::array::uniform4(prop::option::of(any::<u64>()));
    (
        text(),
        text(),
        state,
        role,
        text(),
        tags,
        positions,
        text(),
        extra,
    )
        .prop_map(
            |(
                conn_url,
                api_url,
                state,
                role,
                version,
                tags,
                positions,
                replication_state,
                extra,
            )| {
                let [xlog_location, replay_lsn, receive_lsn, timeline] = positions;
                MemberData {
                    conn_url,
                    api_url,
                    state,
                    role,
                    version,
                    tags: tags.into_iter().collect(),
                    xlog_location,
                    replay_lsn,
                    receive_lsn,
                    replication_state,
                    timeline,
                    extra: extra.into_iter().collect(),
                }
            },
        )
}

fn history_line() -> impl Strategy<Value = HistoryLine> {
    (
        any::<u64>(),
        any::<u64>(),
        "\\PC{0,16}",
        prop::option::of("\\PC{0,16}"),
        prop::option::of("\\PC{0,8}"),
    )
        .prop_map(
            |(timeline, lsn, reason, timestamp, new_leader)| HistoryLine {
                timeline,
                lsn,
                reason,
                timestamp,
                new_leader,
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn every_parser_is_total_on_arbitrary_bytes(raw in prop::collection::vec(any::<u8>(), 0..512)) {
        parse_as_everything(&raw);
    }

    #[test]
    fn every_parser_is_total_on_json_like_text(raw in json_like_bytes()) {
        parse_as_everything(&raw);
    }

    #[test]
    fn every_parser_is_total_on_objects_with_patroni_fields_of_any_type(object in json_object()) {
        parse_as_everything(Value::Object(object).to_string().as_bytes());
    }

    #[test]
    fn reading_what_was_written_from_any_input_is_stable(raw in any_input()) {
        assert_reading_is_stable(&raw);
    }

    #[test]
    fn from_entries_is_total_and_keeps_its_invariants(entries in prop::collection::vec(raw_entry(), 0..16)) {
        let state = ClusterState::from_entries(entries.clone());
        let names: Vec<&str> = state.members.iter().map(|member| member.name.as_str()).collect();
        prop_assert!(names.windows(2).all(|pair| pair[0] < pair[1]), "members sorted and unique");
        prop_assert!(names.iter().all(|name| !name.is_empty() && !name.contains('/')));
        let has_leader_key = entries.iter().any(|entry| entry.key == "leader");
        prop_assert_eq!(state.leader.is_some(), has_leader_key);
        if let Some(leader) = &state.leader {
            let last = entries.iter().rev().find(|entry| entry.key == "leader").unwrap();
            prop_assert_eq!(leader.token.0, last.created);
            prop_assert_eq!(&leader.version, &last.version);
        }
        let has_status = entries.iter().any(|entry| entry.key == "status" || entry.key == "optime/leader");
        prop_assert_eq!(state.status.is_some(), has_status);
        for member in &state.members {
            prop_assert_eq!(state.member(&member.name), Some(member));
        }
    }

    #[test]
    fn member_data_round_trips(data in member_data()) {
        prop_assert_eq!(MemberData::parse(data.to_json().as_bytes()), data);
    }

    #[test]
    fn initialize_round_trips(value in prop_oneof![
        Just(Initialize::Bootstrapping),
        "[0-9]{10,24}".prop_map(Initialize::SystemId),
        "\\PC{1,24}"
            .prop_filter("not a system id", |s| s.len() < 10 || !s.bytes().all(|b| b.is_ascii_digit()))
            .prop_map(Initialize::Invalid),
    ]) {
        prop_assert_eq!(Initialize::parse(value.to_value_string().as_bytes()), value);
    }

    #[test]
    fn config_round_trips(data in json_object()) {
        let config = ClusterConfig { data, valid: true };
        prop_assert_eq!(ClusterConfig::parse(config.to_json().as_bytes()), config);
    }

    #[test]
    fn failover_round_trips(
        leader in prop::option::of(non_empty_name()),
        candidate in prop::option::of(non_empty_name()),
        scheduled_at in prop::option::of(non_empty_name()),
    ) {
        let failover = Failover { leader, candidate, scheduled_at };
        prop_assert_eq!(Failover::parse(failover.to_json().as_bytes()), failover);
    }

    #[test]
    fn sync_state_round_trips(
        leader in prop::option::of(non_empty_name()),
        mut sync_standby in prop::collection::vec(sync_name(), 0..5),
        quorum in 0..=i64::MAX.unsigned_abs(),
    ) {
        sync_standby.sort();
        let quorum = if leader.is_some() { quorum } else { 0 };
        let sync = SyncState { leader, sync_standby, quorum };
        prop_assert_eq!(SyncState::parse(sync.to_json().as_bytes()), sync);
    }

    #[test]
    fn timeline_history_round_trips(lines in prop::collection::vec(history_line(), 0..6)) {
        let history = TimelineHistory { lines };
        prop_assert_eq!(TimelineHistory::parse(history.to_json().as_bytes()), history);
    }

    #[test]
    fn status_round_trips(
        optime in prop::option::of(any::<u64>()),
        slots in prop::collection::btree_map("\\PC{0,10}", any::<u64>(), 0..5),
        retain_slots in prop::collection::vec("\\PC{0,10}", 0..5),
    ) {
        let status = Status { optime, slots, retain_slots };
        prop_assert_eq!(Status::parse(status.to_json().as_bytes()), status);
    }

    #[test]
    fn failsafe_round_trips(members in prop::collection::btree_map("\\PC{0,10}", "\\PC{0,20}", 0..5)) {
        let failsafe = Failsafe { members: members.into_iter().collect::<BTreeMap<_, _>>() };
        prop_assert_eq!(Failsafe::parse(failsafe.to_json().as_bytes()), failsafe);
    }

    #[test]
    fn slot_names_are_valid_postgres_names(name in "\\PC{0,80}") {
        let slot = slot_name_from_member_name(&name);
        prop_assert!(slot.len() <= 63);
        prop_assert!(slot.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'));
    }
}
