//! Table-driven tests of `decide`: one row per branch, named by the situation.
#![allow(
    clippy::too_many_lines,
    reason = "a table of situations reads best as one list, however long"
)]

use std::time::{Duration, SystemTime};

use dcs_core::model::RawEntry;
use dcs_core::{ClusterState, Error, Precondition, Version};
use tokio::time::Instant;

use super::*;

const SYSID: &str = "7268616322854375442";
const FOREIGN_SYSID: &str = "7000000000000000001";
/// 2024-09-24T12:00:00Z, the wall clock of every observation.
const WALL: u64 = 1_727_179_200;
const MIB: u64 = 1_048_576;
/// Our WAL position as a replica, and the leader's last `/status` optime.
const LSN: u64 = 100 * MIB;

/// The keys of one scope, built up row by row.
#[derive(Default)]
struct Keys(Vec<RawEntry>);

impl Keys {
    fn new() -> Self {
        Self::default().key("initialize", SYSID)
    }

    fn key(mut self, key: &str, value: &str) -> Self {
        self.0.retain(|e| e.key != key);
        self.0.push(RawEntry {
            key: key.to_owned(),
            value: value.as_bytes().to_vec(),
            version: Version::new(7),
            owner: None,
            created: 1,
        });
        self
    }

    fn without(mut self, key: &str) -> Self {
        self.0.retain(|e| e.key != key);
        self
    }

    fn leader(self, name: &str) -> Self {
        self.key("leader", name)
    }

    fn member(self, name: &str, role: &str, lsn: u64, tags: &str) -> Self {
        let value = format!(
            r#"{{"conn_url":"postgres://{name}:5432/postgres","api_url":"http://{name}:8008/patroni","state":"running","role":"{role}","xlog_location":{lsn},"timeline":1,"tags":{tags}}}"#
        );
        self.key(&format!("members/{name}"), &value)
    }

    fn replica(self, name: &str, lsn: u64) -> Self {
        self.member(name, "replica", lsn, "{}")
    }

    fn optime(self, optime: u64) -> Self {
        self.key("status", &format!(r#"{{"optime":{optime}}}"#))
    }

    fn failover(self, json: &str) -> Self {
        self.key("failover", json)
    }

    fn state(self) -> ClusterState {
        ClusterState::from_entries(self.0)
    }
}

/// The three-member cluster most rows start from: pg0 leads, pg1 (us) and pg2 replicate.
fn three() -> Keys {
    Keys::new()
        .leader("pg0")
        .member("pg0", "primary", LSN, "{}")
        .replica("pg1", LSN)
        .replica("pg2", LSN - MIB / 2)
        .optime(LSN)
}

/// Three members after pg0 vanished: no leader key, no pg0 member key.
fn leaderless() -> Keys {
    three().without("leader").without("members/pg0")
}

fn peer(name: &str, lsn: u64) -> PeerStatus {
    PeerStatus {
        name: name.to_owned(),
        reply: Some(PeerReply {
            in_recovery: true,
            wal_position: Some(lsn),
            timeline: Some(1),
            nofailover: false,
            failover_priority: 1,
            watchdog_failed: false,
        }),
    }
}

fn on_timeline(mut peer: PeerStatus, timeline: u64) -> PeerStatus {
    if let Some(reply) = &mut peer.reply {
        reply.timeline = Some(timeline);
    }
    peer
}

fn unreachable(name: &str) -> PeerStatus {
    PeerStatus {
        name: name.to_owned(),
        reply: None,
    }
}

/// pg1, a healthy streaming replica, seeing `keys`, with the peers already asked.
fn replica(keys: Keys) -> Observation {
    let now = Instant::now();
    Observation {
        me: LocalMember::new("pg1"),
        cluster: Ok(keys.state()),
        lease: LeaseState::NotHeld,
        now,
        wall_clock: SystemTime::UNIX_EPOCH + Duration::from_secs(WALL),
        postgres: LocalPostgres {
            data_dir: DataDir::Initialized {
                system_id: SYSID.to_owned(),
            },
            state: PgState::Replica,
            timeline: Some(1),
            wal: WalPosition {
                receive: Some(LSN),
                replay: Some(LSN),
                flush: None,
            },
        },
        settings: Settings::default(),
        peers: Some(vec![peer("pg2", LSN - MIB / 2)]),
        last_leader: Some("pg0".to_owned()),
        long_action: None,
        can_bootstrap: true,
        highest_timeline: None,
    }
}

/// pg0, the primary, holding a freshly renewed lease in the `three()` cluster.
fn primary(keys: Keys) -> Observation {
    let mut o = replica(keys);
    o.me = LocalMember::new("pg0");
    o.postgres.state = PgState::Primary;
    o.postgres.wal = WalPosition {
        flush: Some(LSN),
        ..WalPosition::default()
    };
    o.lease = held(&o, Duration::from_secs(20), Renewal::Succeeded);
    o.peers = Some(vec![peer("pg1", LSN), peer("pg2", LSN - MIB / 2)]);
    o
}

fn held(o: &Observation, left: Duration, last_renewal: Renewal) -> LeaseState {
    LeaseState::Held {
        valid_until: o.now + left,
        last_renewal,
    }
}

fn with(mut o: Observation, change: impl FnOnce(&mut Observation)) -> Observation {
    change(&mut o);
    o
}

fn failed() -> Renewal {
    Renewal::Failed {
        error: "DCS unavailable: connection refused".into(),
    }
}

fn follow(upstream: Option<&str>) -> Action {
    Action::Follow {
        upstream: upstream.map(str::to_owned),
        slot: "pg1".into(),
    }
}

const IMMEDIATE: Action = Action::Demote {
    mode: DemoteMode::Immediate,
};
const GRACEFUL: Action = Action::Demote {
    mode: DemoteMode::Graceful,
};

fn probe(members: &[&str]) -> Action {
    Action::ProbePeers {
        members: members.iter().map(|m| (*m).to_owned()).collect(),
    }
}

struct Row {
    situation: &'static str,
    observation: Observation,
    lease: LeaseStep,
    action: Action,
}

fn row(situation: &'static str, observation: Observation, lease: LeaseStep, action: Action) -> Row {
    Row {
        situation,
        observation,
        lease,
        action,
    }
}

fn check(rows: Vec<Row>) {
    let mut failures = Vec::new();
    for row in rows {
        let decision = decide(&row.observation);
        if (decision.lease, &decision.action) != (row.lease, &row.action) {
            failures.push(format!(
                "{}:\n    expected {:?} {:?}\n    got      {:?} {:?} ({})",
                row.situation,
                row.lease,
                row.action,
                decision.lease,
                decision.action,
                decision.reason
            ));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[test]
fn a_primary_keeps_its_role_exactly_while_its_lease_is_valid() {
    use LeaseStep::{Forget, None, Renew};
    check(vec![
        row(
            "primary whose renewal failed retryably, lease still valid → stays primary, retries",
            with(primary(three().leader("pg0")), |o| {
                o.lease = held(o, Duration::from_secs(5), failed());
            }),
            Renew,
            Action::StayPrimary,
        ),
        row(
            "primary whose lease expired (now == valid_until) → demotes immediately",
            with(primary(three()), |o| {
                o.lease = held(o, Duration::ZERO, failed());
            }),
            Forget,
            IMMEDIATE,
        ),
        row(
            "primary whose renewal said LeaseLost → demotes immediately",
            with(primary(three()), |o| {
                o.lease = LeaseState::Lost {
                    reason: "the leader key is now held by pg1".into(),
                };
            }),
            Forget,
            IMMEDIATE,
        ),
        row(
            "primary with a valid lease but the snapshot names another holder → demotes",
            primary(three().leader("pg2")),
            Forget,
            IMMEDIATE,
        ),
        row(
            "primary without a lease while someone else holds the lock → demotes",
            with(primary(three().leader("pg2")), |o| {
                o.lease = LeaseState::NotHeld;
            }),
            None,
            IMMEDIATE,
        ),
        row(
            "DCS unreachable, primary with a valid lease → stays primary (a blip demotes nobody)",
            with(primary(three()), |o| {
                o.cluster = Err(Error::unavailable("connection refused"));
                o.lease = held(o, Duration::from_secs(3), failed());
            }),
            Renew,
            Action::StayPrimary,
        ),
        row(
            "DCS unreachable, primary whose lease ran out → demotes immediately",
            with(primary(three()), |o| {
                o.cluster = Err(Error::unavailable("connection refused"));
                o.lease = held(o, Duration::ZERO, failed());
            }),
            Forget,
            IMMEDIATE,
        ),
        row(
            "DCS unreachable, primary that never held a lease → demotes immediately",
            with(primary(three()), |o| {
                o.cluster = Err(Error::unavailable("connection refused"));
                o.lease = LeaseState::NotHeld;
            }),
            None,
            IMMEDIATE,
        ),
        row(
            "DCS unreachable, replica → keeps replicating",
            with(replica(three()), |o| {
                o.cluster = Err(Error::unavailable("no quorum"));
            }),
            None,
            Action::Wait,
        ),
        row(
            "paused primary whose lease was lost → keeps running, forgets the lease",
            with(primary(three()), |o| {
                o.settings.pause = true;
                o.lease = LeaseState::Lost {
                    reason: "gone".into(),
                };
            }),
            Forget,
            Action::Wait,
        ),
        row(
            "replica whose lease expired before it promoted → forgets it, follows the new leader",
            with(replica(three()), |o| {
                o.lease = held(o, Duration::ZERO, failed());
            }),
            Forget,
            follow(Some("pg0")),
        ),
    ]);
}

#[test]
fn a_lock_left_by_an_earlier_holding_of_ours_is_taken_back_or_waited_out() {
    use LeaseStep::{Forget, None};
    check(vec![
        row(
            "agent restarted while postgres runs as primary, key still names us → takes it back \
             (the store adopts it only if it is still this session's)",
            with(primary(three()), |o| o.lease = LeaseState::NotHeld),
            None,
            Action::AcquireLeader,
        ),
        row(
            "replica whose acquire answer was lost, key names us, no lease → takes it back",
            with(replica(three().leader("pg1")), |o| {
                o.me = LocalMember::new("pg1");
                o.lease = LeaseState::NotHeld;
            }),
            None,
            Action::AcquireLeader,
        ),
        row(
            "replica whose lease was lost while the stale snapshot still names it → follows nobody",
            with(replica(three().leader("pg1")), |o| {
                o.lease = LeaseState::Lost {
                    reason: "bound to another lease".into(),
                };
            }),
            Forget,
            follow(Option::None),
        ),
        row(
            "holder, DCS unreachable, postgres is a replica → keeps renewing, waits",
            with(replica(three().leader("pg1")), |o| {
                o.cluster = Err(Error::unavailable("no quorum"));
                o.lease = held(o, Duration::from_secs(9), failed());
            }),
            LeaseStep::Renew,
            Action::Wait,
        ),
        row(
            "holder while postgres starts → keeps renewing, waits",
            with(primary(three()), |o| o.postgres.state = PgState::Starting),
            LeaseStep::Renew,
            Action::Wait,
        ),
    ]);
}

#[test]
fn the_lock_holder_renews_and_serves_as_primary() {
    use LeaseStep::{None, Release, Renew};
    let leader = |o: Observation| {
        with(o, |o| {
            o.me = LocalMember::new("pg1");
            o.lease = held(o, Duration::from_secs(20), Renewal::Succeeded);
        })
    };
    check(vec![
        row(
            "holder running as primary → no action, renew",
            primary(three()),
            Renew,
            Action::StayPrimary,
        ),
        row(
            "holder running as a replica → promotes",
            leader(replica(three().leader("pg1"))),
            Renew,
            Action::Promote,
        ),
        row(
            "holder running as a replica whose last renewal failed → does not promote yet",
            with(leader(replica(three().leader("pg1"))), |o| {
                o.lease = held(o, Duration::from_secs(15), failed());
            }),
            Renew,
            Action::Wait,
        ),
        row(
            "holder whose snapshot lacks the leader key → renews (the renewal settles it)",
            primary(three().without("leader")),
            Renew,
            Action::StayPrimary,
        ),
        row(
            "holder during a long action → keeps renewing, waits",
            with(primary(three()), |o| {
                o.long_action = Some(LongAction::Restart);
            }),
            Renew,
            Action::Wait,
        ),
        row(
            "non-holder whose promote is still running → stops it",
            with(replica(three()), |o| {
                o.long_action = Some(LongAction::Promote);
            }),
            None,
            IMMEDIATE,
        ),
        row(
            "bootstrap winner whose new primary runs before it takes the lock → waits",
            with(primary(three().without("leader")), |o| {
                o.lease = LeaseState::NotHeld;
                o.long_action = Some(LongAction::Bootstrap);
            }),
            None,
            Action::Wait,
        ),
        row(
            "non-holder whose postgres runs as primary during a restart → demotes",
            with(primary(three().leader("pg1")), |o| {
                o.lease = LeaseState::NotHeld;
                o.long_action = Some(LongAction::Restart);
            }),
            None,
            IMMEDIATE,
        ),
        row(
            "non-holder during a base backup → waits",
            with(replica(three()), |o| {
                o.long_action = Some(LongAction::Basebackup);
            }),
            None,
            Action::Wait,
        ),
        row(
            "paused holder whose postgres runs as a replica → releases the lock",
            with(leader(replica(three().leader("pg1"))), |o| {
                o.settings.pause = true;
            }),
            Release,
            Action::ReleaseLeader,
        ),
        row(
            "paused holder that is the failover candidate → promotes (manual failover)",
            with(
                leader(replica(
                    three().leader("pg1").failover(r#"{"member":"pg1"}"#),
                )),
                |o| o.settings.pause = true,
            ),
            Renew,
            Action::Promote,
        ),
    ]);
}

#[test]
fn the_healthiest_member_races_for_a_free_lock() {
    use LeaseStep::None;
    let acquire = Action::AcquireLeader;
    check(vec![
        row(
            "replica sees no leader and is the healthiest → acquires",
            replica(leaderless()),
            None,
            acquire.clone(),
        ),
        row(
            "replica sees no leader and has not asked its peers → asks them",
            with(replica(leaderless()), |o| o.peers = Option::None),
            None,
            probe(&["pg2"]),
        ),
        row(
            "a nofailover member never acquires",
            with(replica(leaderless()), |o| {
                o.me.nofailover = true;
                o.me.failover_priority = 0;
            }),
            None,
            follow(Option::None),
        ),
        row(
            "a member lagging more than maximum_lag_on_failover never acquires",
            replica(leaderless().optime(LSN + 2 * MIB)),
            None,
            follow(Option::None),
        ),
        row(
            "a member within maximum_lag_on_failover acquires",
            replica(leaderless().optime(LSN + MIB)),
            None,
            acquire.clone(),
        ),
        row(
            "a reachable peer ahead in WAL vetoes",
            with(replica(leaderless()), |o| {
                o.peers = Some(vec![peer("pg2", LSN + 1)]);
            }),
            None,
            follow(Option::None),
        ),
        row(
            "a reachable peer still running as primary vetoes",
            with(replica(leaderless()), |o| {
                let mut still_primary = peer("pg2", LSN - MIB);
                still_primary.reply.as_mut().unwrap().in_recovery = false;
                o.peers = Some(vec![still_primary]);
            }),
            None,
            follow(Option::None),
        ),
        row(
            "a peer at the same LSN with a higher failover_priority vetoes",
            with(replica(leaderless()), |o| {
                let mut preferred = peer("pg2", LSN);
                preferred.reply.as_mut().unwrap().failover_priority = 5;
                o.peers = Some(vec![preferred]);
            }),
            None,
            follow(Option::None),
        ),
        row(
            "a peer at the same LSN with a lower failover_priority does not veto",
            with(replica(leaderless()), |o| {
                o.me.failover_priority = 5;
                o.peers = Some(vec![peer("pg2", LSN)]);
            }),
            None,
            acquire.clone(),
        ),
        row(
            "the former leader's higher priority at the same LSN does not veto",
            with(replica(leaderless()), |o| {
                o.last_leader = Some("pg2".into());
                let mut former = peer("pg2", LSN);
                former.reply.as_mut().unwrap().failover_priority = 5;
                o.peers = Some(vec![former]);
            }),
            None,
            acquire.clone(),
        ),
        row(
            "an unreachable peer does not veto",
            with(replica(leaderless()), |o| {
                o.peers = Some(vec![unreachable("pg2")]);
            }),
            None,
            acquire.clone(),
        ),
        row(
            "a nofailover peer ahead in WAL does not veto",
            with(replica(leaderless()), |o| {
                let mut observer = peer("pg2", LSN + MIB);
                observer.reply.as_mut().unwrap().nofailover = true;
                o.peers = Some(vec![observer]);
            }),
            None,
            acquire.clone(),
        ),
        row(
            "paused, no leader → no automatic failover",
            with(replica(leaderless()), |o| o.settings.pause = true),
            None,
            follow(Option::None),
        ),
        row(
            "synchronous mode and not in /sync → does not race",
            with(
                replica(leaderless().key("sync", r#"{"leader":"pg0","sync_standby":"pg2"}"#)),
                |o| o.settings.synchronous_mode = true,
            ),
            None,
            follow(Option::None),
        ),
        row(
            "synchronous mode: the former leader (from /sync) ahead in WAL does not veto",
            with(
                replica(leaderless().key("sync", r#"{"leader":"pg2","sync_standby":"pg1"}"#)),
                |o| {
                    o.settings.synchronous_mode = true;
                    o.peers = Some(vec![peer("pg2", LSN + MIB)]);
                },
            ),
            None,
            acquire.clone(),
        ),
        row(
            "check_timeline: a member behind the cluster's timeline does not race",
            with(
                replica(leaderless().key("history", r#"[[1,50331648,"no recovery target"]]"#)),
                |o| o.settings.check_timeline = true,
            ),
            None,
            follow(Option::None),
        ),
        row(
            "check_timeline off (explicitly): a member behind the cluster's timeline races",
            with(
                replica(leaderless().key("history", r#"[[1,50331648,"no recovery target"]]"#)),
                |o| o.settings.check_timeline = false,
            ),
            None,
            acquire.clone(),
        ),
        row(
            "a promotion seen only in a primary's member key (no /history yet) → does not race",
            with(replica(leaderless()), |o| o.highest_timeline = Some(2)),
            None,
            follow(Option::None),
        ),
        row(
            "a peer on a later timeline vetoes, even with less WAL",
            with(replica(leaderless()), |o| {
                o.settings.check_timeline = false;
                o.peers = Some(vec![on_timeline(peer("pg2", LSN - MIB / 2), 2)]);
            }),
            None,
            follow(Option::None),
        ),
        row(
            "a peer on an earlier timeline with more WAL does not veto",
            with(replica(leaderless()), |o| {
                o.postgres.timeline = Some(2);
                o.peers = Some(vec![peer("pg2", LSN + MIB)]);
            }),
            None,
            acquire.clone(),
        ),
        row(
            "postgres still starting → waits",
            with(replica(leaderless()), |o| {
                o.postgres.state = PgState::Starting;
            }),
            None,
            Action::Wait,
        ),
        row(
            "postgres running as primary without the lock in a leaderless cluster → takes it back",
            with(primary(leaderless()), |o| o.lease = LeaseState::NotHeld),
            None,
            acquire.clone(),
        ),
        row(
            "a frozen former primary behind the cluster's timeline → demotes",
            with(
                primary(leaderless().key("history", r#"[[1,50331648,"no recovery target"]]"#)),
                |o| o.lease = LeaseState::NotHeld,
            ),
            None,
            IMMEDIATE,
        ),
    ]);
}

#[test]
fn a_manual_failover_without_a_leader_goes_to_the_named_candidate() {
    use LeaseStep::None;
    let acquire = Action::AcquireLeader;
    check(vec![
        row(
            "the named failover candidate acquires even when lagging",
            replica(
                leaderless()
                    .optime(LSN + 10 * MIB)
                    .failover(r#"{"member":"pg1"}"#),
            ),
            None,
            acquire.clone(),
        ),
        row(
            "paused, the named failover candidate acquires",
            with(replica(leaderless().failover(r#"{"member":"pg1"}"#)), |o| {
                o.settings.pause = true;
            }),
            None,
            acquire.clone(),
        ),
        row(
            "another healthy candidate is named → leaves it to them",
            replica(leaderless().failover(r#"{"member":"pg2"}"#)),
            None,
            follow(Option::None),
        ),
        row(
            "the named candidate is unreachable → races among the rest",
            with(replica(leaderless().failover(r#"{"member":"pg2"}"#)), |o| {
                o.peers = Some(vec![unreachable("pg2")]);
            }),
            None,
            acquire.clone(),
        ),
        row(
            "a switchover away from the former leader races without the lag check",
            replica(
                leaderless()
                    .optime(LSN + 10 * MIB)
                    .failover(r#"{"leader":"pg0"}"#),
            ),
            None,
            acquire.clone(),
        ),
    ]);
}

#[test]
fn the_leader_carries_out_switchovers() {
    use LeaseStep::{Release, Renew};
    let switchover = |json: &str| primary(three().failover(json));
    check(vec![
        row(
            "switchover to a healthy candidate → graceful demote, releasing the lock",
            switchover(r#"{"leader":"pg0","member":"pg1"}"#),
            Release,
            GRACEFUL,
        ),
        row(
            "switchover to any healthy member → graceful demote",
            switchover(r#"{"leader":"pg0"}"#),
            Release,
            GRACEFUL,
        ),
        row(
            "switchover before the candidates were asked → asks them, keeps renewing",
            with(switchover(r#"{"leader":"pg0","member":"pg1"}"#), |o| {
                o.peers = None;
            }),
            Renew,
            probe(&["pg1", "pg2"]),
        ),
        row(
            "switchover to a lagging candidate → not possible, stays primary",
            switchover(r#"{"leader":"pg0","member":"pg2"}"#).tap_optime(LSN + MIB),
            Renew,
            Action::StayPrimary,
        ),
        row(
            "switchover naming another leader → stays primary",
            switchover(r#"{"leader":"pg2","member":"pg1"}"#),
            Renew,
            Action::StayPrimary,
        ),
        row(
            "scheduled switchover in an hour → stays primary for now",
            switchover(
                r#"{"leader":"pg0","member":"pg1","scheduled_at":"2024-09-24T13:00:00+00:00"}"#,
            ),
            Renew,
            Action::StayPrimary,
        ),
        row(
            "scheduled switchover 5 s ahead, within loop_wait → waits for its time",
            switchover(
                r#"{"leader":"pg0","member":"pg1","scheduled_at":"2024-09-24T12:00:05+00:00"}"#,
            ),
            Renew,
            Action::StayPrimary,
        ),
        row(
            "scheduled switchover at its time → graceful demote",
            switchover(
                r#"{"leader":"pg0","member":"pg1","scheduled_at":"2024-09-24T12:00:00+00:00"}"#,
            ),
            Release,
            GRACEFUL,
        ),
        row(
            "scheduled switchover a little in the past → still carried out",
            switchover(
                r#"{"leader":"pg0","member":"pg1","scheduled_at":"2024-09-24T11:59:50+00:00"}"#,
            ),
            Release,
            GRACEFUL,
        ),
        row(
            "paused: a scheduled switchover is not carried out",
            with(
                switchover(
                    r#"{"leader":"pg0","member":"pg1","scheduled_at":"2024-09-24T12:00:00+00:00"}"#,
                ),
                |o| o.settings.pause = true,
            ),
            Renew,
            Action::StayPrimary,
        ),
        row(
            "paused: a switchover to a named candidate is carried out",
            with(switchover(r#"{"leader":"pg0","member":"pg1"}"#), |o| {
                o.settings.pause = true;
            }),
            Release,
            GRACEFUL,
        ),
    ]);
}

trait TapOptime {
    fn tap_optime(self, optime: u64) -> Self;
}

impl TapOptime for Observation {
    /// Moves `/status` forward, so that every replica in the snapshot lags.
    fn tap_optime(mut self, optime: u64) -> Self {
        if let Ok(cluster) = &mut self.cluster {
            cluster.status.as_mut().unwrap().value.optime = Some(optime);
        }
        self
    }
}

#[test]
fn the_leader_cleans_up_failover_requests_it_will_not_carry_out() {
    let cases = [
        ("candidate lags", r#"{"leader":"pg0","member":"pg2"}"#, true),
        ("leader name does not match", r#"{"leader":"pg2"}"#, false),
        ("I am already the leader", r#"{"member":"pg0"}"#, false),
        (
            "stale schedule (more than 1.5 loop_wait ago)",
            r#"{"leader":"pg0","scheduled_at":"2024-09-24T11:59:44+00:00"}"#,
            false,
        ),
        (
            "unparsable schedule",
            r#"{"leader":"pg0","scheduled_at":"noon"}"#,
            false,
        ),
    ];
    for (situation, json, lagging) in cases {
        let mut o = primary(three().failover(json));
        if lagging {
            o = o.tap_optime(LSN + MIB);
        }
        let decision = decide(&o);
        assert_eq!(decision.action, Action::StayPrimary, "{situation}");
        assert_eq!(
            decision.effects,
            vec![Effect::ClearFailover {
                version: Version::new(7)
            }],
            "{situation}: {}",
            decision.reason
        );
    }

    let paused = with(primary(three().failover(r#"{"leader":"pg0"}"#)), |o| {
        o.settings.pause = true;
    });
    assert!(
        matches!(&decide(&paused).effects[..], [Effect::ClearFailover { .. }]),
        "paused, a failover without a candidate is refused and cleaned up"
    );

    let waiting =
        primary(three().failover(r#"{"leader":"pg0","scheduled_at":"2024-09-24T13:00:00Z"}"#));
    assert_eq!(
        decide(&waiting).effects,
        vec![],
        "a future schedule is kept"
    );
}

#[test]
fn a_new_leader_promotes_and_clears_the_failover_that_brought_it() {
    let o = with(
        replica(
            three()
                .leader("pg1")
                .failover(r#"{"leader":"pg0","member":"pg1"}"#),
        ),
        |o| o.lease = held(o, Duration::from_secs(20), Renewal::Succeeded),
    );
    let decision = decide(&o);
    assert_eq!(decision.action, Action::Promote);
    assert_eq!(
        decision.effects,
        vec![Effect::ClearFailover {
            version: Version::new(7)
        }]
    );
}

#[test]
fn followers_stream_from_the_leader() {
    use LeaseStep::{None, Release, Renew};
    let start_replica = |upstream: Option<&str>| Action::StartPostgres {
        role: StartRole::Replica {
            upstream: upstream.map(str::to_owned),
            slot: "pg1".into(),
        },
    };
    let stopped = |o: &mut Observation| {
        o.postgres.state = PgState::Stopped { was_primary: false };
    };
    check(vec![
        row(
            "replica with a leader → follows it through its slot",
            replica(three()),
            None,
            follow(Some("pg0")),
        ),
        row(
            "replica tagged replicatefrom a running member → follows that member",
            with(replica(three()), |o| {
                o.me.replicatefrom = Some("pg2".into());
            }),
            None,
            follow(Some("pg2")),
        ),
        row(
            "replicatefrom a member that is gone → follows the leader",
            with(replica(three()), |o| {
                o.me.replicatefrom = Some("pg9".into());
            }),
            None,
            follow(Some("pg0")),
        ),
        row(
            "stopped with a leader → starts as its replica",
            with(replica(three()), stopped),
            None,
            start_replica(Some("pg0")),
        ),
        row(
            "stopped without a leader → starts read-only",
            with(replica(leaderless()), stopped),
            None,
            start_replica(Option::None),
        ),
        row(
            "stopped former primary holding the lock → starts as primary",
            with(primary(three()), |o| {
                o.postgres.state = PgState::Stopped { was_primary: true };
            }),
            Renew,
            Action::StartPostgres {
                role: StartRole::Primary,
            },
        ),
        row(
            "stopped while paused → nothing is started",
            with(replica(three()), |o| {
                stopped(o);
                o.settings.pause = true;
            }),
            None,
            Action::Wait,
        ),
        row(
            "stopped primary holding the lock while paused → releases the lock",
            with(primary(three()), |o| {
                o.postgres.state = PgState::Stopped { was_primary: true };
                o.settings.pause = true;
            }),
            Release,
            Action::ReleaseLeader,
        ),
    ]);
}

#[test]
fn an_empty_data_directory_bootstraps_or_clones() {
    use LeaseStep::{None, Release};
    let empty = |keys: Keys| {
        with(replica(keys), |o| {
            o.postgres.data_dir = DataDir::Empty;
            o.postgres.state = PgState::Stopped { was_primary: false };
            o.postgres.wal = WalPosition::default();
        })
    };
    let fresh = || Keys::default();
    check(vec![
        row(
            "empty data dir in a cluster never initialized → races to bootstrap",
            empty(fresh()),
            None,
            Action::RaceToBootstrap,
        ),
        row(
            "empty data dir, tagged nofailover → waits for another to bootstrap",
            with(empty(fresh()), |o| o.me.nofailover = true),
            None,
            Action::Wait,
        ),
        row(
            "empty data dir, no bootstrap section → waits",
            with(empty(fresh()), |o| o.can_bootstrap = false),
            None,
            Action::Wait,
        ),
        row(
            "empty data dir while another member bootstraps → waits",
            empty(fresh().key("initialize", "")),
            None,
            Action::Wait,
        ),
        row(
            "empty data dir with a leader → clones from the leader",
            empty(three()),
            None,
            Action::CloneFrom {
                member: "pg0".into(),
            },
        ),
        row(
            "empty data dir with a running clonefrom member → clones from it",
            empty(three().member("pg2", "replica", LSN, r#"{"clonefrom":true}"#)),
            None,
            Action::CloneFrom {
                member: "pg2".into(),
            },
        ),
        row(
            "empty data dir while holding the lock → releases it",
            with(empty(three().leader("pg1")), |o| {
                o.lease = held(o, Duration::from_secs(20), Renewal::Succeeded);
            }),
            Release,
            Action::ReleaseLeader,
        ),
    ]);
}

#[test]
fn the_system_identifier_ties_the_data_to_the_cluster() {
    use LeaseStep::None;
    check(vec![
        row(
            "data of another cluster → exits",
            replica(three().key("initialize", FOREIGN_SYSID)),
            None,
            Action::ExitWrongCluster {
                system_id: SYSID.into(),
                cluster_system_id: Some(FOREIGN_SYSID.into()),
            },
        ),
        row(
            "data of another cluster while paused → waits, touches nothing",
            with(replica(three().key("initialize", FOREIGN_SYSID)), |o| {
                o.settings.pause = true;
            }),
            None,
            Action::Wait,
        ),
        row(
            "cluster never initialized and postgres runs as a replica → exits",
            replica(leaderless().without("initialize")),
            None,
            Action::ExitWrongCluster {
                system_id: SYSID.into(),
                cluster_system_id: Option::None,
            },
        ),
    ]);

    let adopt = with(replica(leaderless().without("initialize")), |o| {
        o.postgres.state = PgState::Stopped { was_primary: true };
    });
    let decision = decide(&adopt);
    assert_eq!(
        decision.effects,
        vec![Effect::RecordSystemId {
            system_id: SYSID.into(),
            precondition: Precondition::Absent,
        }],
        "existing data in an uninitialized cluster is adopted"
    );

    let repair = primary(three().key("initialize", ""));
    let decision = decide(&repair);
    assert_eq!(decision.action, Action::StayPrimary);
    assert_eq!(
        decision.effects,
        vec![Effect::RecordSystemId {
            system_id: SYSID.into(),
            precondition: Precondition::Version(Version::new(7)),
        }],
        "the leader records the system id an unfinished bootstrap left out"
    );
}

#[test]
fn reasons_read_like_patroni_log_lines() {
    assert_eq!(
        decide(&primary(three())).reason,
        "no action. I am (pg0), the leader with the lock"
    );
    assert_eq!(
        decide(&replica(three())).reason,
        "no action. I am (pg1), a secondary, and following a leader (pg0)"
    );
    let blip = with(primary(three()), |o| {
        o.lease = held(o, Duration::from_secs(7), failed());
    });
    assert!(
        decide(&blip)
            .reason
            .starts_with("failed to update leader lock"),
        "{}",
        decide(&blip).reason
    );
}

#[test]
fn probing_peers_carries_no_effects() {
    // The loop decides again with the answers; effects listed twice would be applied twice.
    let o = with(replica(leaderless().without("initialize")), |o| {
        o.postgres.state = PgState::Stopped { was_primary: false };
        o.peers = None;
    });
    let decision = decide(&o);
    assert!(
        !matches!(decision.action, Action::ProbePeers { .. }) || decision.effects.is_empty(),
        "{decision:?}"
    );
}

#[test]
fn a_renewal_outcome_becomes_the_next_lease_state() {
    let now = Instant::now();
    let lease = |left| {
        dcs_core::LeaderLease::new(
            "pg0".into(),
            dcs_core::FencingToken(3),
            Version::new(1),
            "lease-1".into(),
            now + Duration::from_secs(left),
        )
    };
    let before = lease(10);
    assert_eq!(
        LeaseState::after_renewal(&before, &Ok(lease(30))),
        LeaseState::Held {
            valid_until: now + Duration::from_secs(30),
            last_renewal: Renewal::Succeeded,
        }
    );
    assert!(matches!(
        LeaseState::after_renewal(&before, &Err(Error::unavailable("down"))),
        LeaseState::Held { valid_until, last_renewal: Renewal::Failed { .. } }
            if valid_until == now + Duration::from_secs(10)
    ));
    assert!(matches!(
        LeaseState::after_renewal(&before, &Err(Error::lease_lost("held by pg1"))),
        LeaseState::Lost { .. }
    ));
}

#[test]
fn the_timeline_high_water_keeps_the_highest_primary_timeline_per_cluster() {
    let on = |keys: Keys, name: &str, role: &str, timeline: u64| {
        let value = format!(r#"{{"role":"{role}","timeline":{timeline}}}"#);
        keys.key(&format!("members/{name}"), &value)
    };
    let mut seen = TimelineHighWater::default();
    seen.absorb(&three().state());
    assert_eq!(seen.get(), Some(1));
    // A replica's reported timeline is not evidence of a promotion.
    seen.absorb(&on(three(), "pg2", "replica", 5).state());
    assert_eq!(seen.get(), Some(1));
    seen.absorb(&on(three(), "pg2", "promoted", 3).state());
    // The new primary's key expired: the timeline is remembered.
    seen.absorb(&leaderless().without("members/pg2").state());
    assert_eq!(seen.get(), Some(3));
    // Back, pg2 shows it never got there (its promotion failed): the claim is dropped.
    seen.absorb(&on(leaderless(), "pg2", "replica", 1).state());
    assert_eq!(seen.get(), Some(1));
    seen.absorb(&on(three(), "pg2", "primary", 3).state());
    // A former primary back on the timeline it led stays a claim on it.
    seen.absorb(&on(leaderless(), "pg2", "replica", 3).state());
    assert_eq!(seen.get(), Some(3));
    seen.absorb(
        &leaderless()
            .key("history", r#"[[1,1,""],[2,2,""],[3,3,""]]"#)
            .state(),
    );
    assert_eq!(seen.get(), Some(4));
    // Another cluster under the same scope (re-initialized): forgotten.
    seen.absorb(&leaderless().key("initialize", FOREIGN_SYSID).state());
    assert_eq!(seen.get(), None);
}

#[test]
fn the_timeline_is_checked_unless_the_config_says_false() {
    let settings =
        |json: &str| Settings::from_config(&dcs_core::model::ClusterConfig::parse(json.as_bytes()));
    assert!(settings("{}").check_timeline);
    assert!(settings(r#"{"check_timeline":true}"#).check_timeline);
    assert!(!settings(r#"{"check_timeline":false}"#).check_timeline);
    assert!(!settings(r#"{"check_timeline":"off"}"#).check_timeline);
}

#[test]
fn a_configuration_run_differently_from_what_it_says_is_named() {
    let warnings = |json: &str| {
        config_warnings(&dcs_core::model::ClusterConfig::parse(json.as_bytes()))
            .iter()
            .map(|w| w.split(' ').next().unwrap_or_default().to_owned())
            .collect::<Vec<_>>()
    };
    assert!(warnings("{}").is_empty());
    assert!(warnings(r#"{"ttl":10,"loop_wait":2,"retry_timeout":4}"#).is_empty());
    assert_eq!(
        warnings(r#"{"ttl":10,"loop_wait":3,"retry_timeout":4}"#),
        ["loop_wait"]
    );
    assert_eq!(
        warnings(r#"{"ttl":5}"#),
        ["ttl"],
        "only what the config says"
    );
    assert_eq!(
        warnings(r#"{"ttl":5,"loop_wait":10,"retry_timeout":10}"#),
        ["ttl", "loop_wait", "retry_timeout"]
    );
    assert_eq!(
        warnings(r#"{"synchronous_mode":true}"#),
        ["synchronous_mode"]
    );
    assert!(warnings(r#"{"synchronous_mode":false}"#).is_empty());
}
