//! [`decide`]: one HA cycle's decision, modelled on Patroni's `Ha._run_cycle`.

use std::time::Duration;

use dcs_core::model::{Failover, Initialize, Versioned, slot_name_from_member_name};
use dcs_core::{ClusterState, Precondition};

use super::decision::{Action, Decision, DemoteMode, Effect, LeaseStep, StartRole};
use super::observation::{DataDir, LeaseState, Observation, PgState, Renewal};
use super::race::{Race, Verdict};
use super::schedule::{Window, parse_scheduled_at, window};

/// Decides what this member does this cycle. Pure: no I/O, no clock.
///
/// The order follows Patroni's `_run_cycle` (see `patroni.md` §4.2), with the lock as the
/// one safety mechanism:
///
/// 1. **The lease.** A lease that is lost ([`LeaseState::Lost`]), expired
///    (`now >= valid_until`), or contradicted by the snapshot (another member's name in the
///    leader key) is forgotten, and a running primary is demoted with
///    [`DemoteMode::Immediate`]; paused, it keeps running (the operator is in charge).
///    A renewal that merely failed leaves the lease valid until its deadline: a DCS blip
///    shorter than that demotes nobody.
/// 2. **No snapshot** (the DCS is unreachable): a valid lease keeps a primary primary and
///    is retried; nothing else changes.
/// 3. **A long action** runs: the holder keeps renewing; a promotion without the lock is
///    stopped.
/// 4. **The data directory**: empty ⇒ bootstrap race, clone, or wait; a foreign system id
///    ⇒ exit; an uninitialized cluster adopts our data.
/// 5. **Stopped or starting** PostgreSQL is (re)started as what the lock says.
/// 6. **Someone else holds the lock**: follow it; a running primary demotes immediately.
/// 7. **We hold the lock**: switchover requests, then stay primary or promote.
/// 8. **Nobody holds it**: the leader race; the healthiest member acquires the lock.
///
/// A decision that needs the peers' answers and does not have them is
/// [`Action::ProbePeers`], carrying no effects: the loop asks, then calls `decide` again.
#[must_use]
pub fn decide(o: &Observation) -> Decision {
    let mut lease = assess_lease(o);
    if let Hold::Valid = lease
        && let Some(holder) = o.cluster().and_then(|c| c.leader.as_ref())
        && holder.name != o.me.name
    {
        lease = Hold::Gone(format!("the leader key is held by {}", holder.name));
    }

    let gone = matches!(lease, Hold::Gone(_));
    let decision = match lease {
        Hold::Gone(why) if o.postgres.state == PgState::Primary => {
            if o.settings.pause {
                Decision::new(
                    LeaseStep::Forget,
                    Action::Wait,
                    format!("{why}; paused, so postgres keeps running as primary"),
                )
            } else {
                Decision::new(
                    LeaseStep::Forget,
                    Action::Demote {
                        mode: DemoteMode::Immediate,
                    },
                    format!("demoting self because {why}"),
                )
            }
        }
        Hold::Valid => cycle(o, true),
        Hold::Gone(_) | Hold::None => cycle(o, false),
    };
    // A lost or expired lease is dropped whatever else this cycle does, so the act step
    // stops counting on it.
    if gone && decision.lease == LeaseStep::None {
        Decision {
            lease: LeaseStep::Forget,
            ..decision
        }
    } else {
        decision
    }
}

enum Hold {
    None,
    Valid,
    Gone(String),
}

fn assess_lease(o: &Observation) -> Hold {
    match &o.lease {
        LeaseState::NotHeld => Hold::None,
        LeaseState::Lost { reason } => Hold::Gone(format!("the leader lock was lost ({reason})")),
        LeaseState::Held { valid_until, .. } if o.now >= *valid_until => {
            Hold::Gone("the leader lease expired before it could be renewed".into())
        }
        LeaseState::Held { .. } => Hold::Valid,
    }
}

/// Time left on a held lease, for log lines.
fn lease_left(o: &Observation) -> Duration {
    match &o.lease {
        LeaseState::Held { valid_until, .. } => valid_until.saturating_duration_since(o.now),
        LeaseState::NotHeld | LeaseState::Lost { .. } => Duration::ZERO,
    }
}

fn renew(action: Action, reason: impl Into<String>) -> Decision {
    Decision::new(LeaseStep::Renew, action, reason)
}

fn plain(action: Action, reason: impl Into<String>) -> Decision {
    Decision::new(LeaseStep::None, action, reason)
}

fn demote_immediately(reason: impl Into<String>) -> Decision {
    plain(
        Action::Demote {
            mode: DemoteMode::Immediate,
        },
        reason,
    )
}

/// The rest of the cycle, once the lease is known to be valid (`holder`) or not ours.
fn cycle(o: &Observation, holder: bool) -> Decision {
    let paused = o.settings.pause;
    let primary = o.postgres.state == PgState::Primary;

    let cluster = match &o.cluster {
        Ok(cluster) => cluster,
        Err(error) => {
            let why = format!("DCS is not accessible ({error})");
            return if holder && primary {
                renew(
                    Action::StayPrimary,
                    format!(
                        "{why}; staying primary while the lease is valid ({}s left)",
                        lease_left(o).as_secs()
                    ),
                )
            } else if holder {
                renew(Action::Wait, why)
            } else if primary && !paused {
                demote_immediately(format!(
                    "{why} and postgres runs as primary without the lock"
                ))
            } else {
                plain(Action::Wait, why)
            };
        }
    };

    if let Some(action) = o.long_action {
        let name = action.as_str();
        return if holder {
            renew(Action::Wait, format!("updated leader lock during {name}"))
        } else if action == super::observation::LongAction::Promote {
            demote_immediately("lost the leader lock before promote finished")
        } else if primary && !paused && action != super::observation::LongAction::Bootstrap {
            // The bootstrap winner's new primary runs before it takes the lock: it holds
            // `initialize`, and nobody else can lead an uninitialized cluster.
            demote_immediately(format!(
                "postgres runs as primary without the lock during {name}"
            ))
        } else {
            plain(Action::Wait, format!("{name} in progress"))
        };
    }

    let system_id = match &o.postgres.data_dir {
        DataDir::Empty => return empty_data_dir(o, cluster, holder),
        DataDir::Initialized { system_id } => system_id,
    };

    let mut effects = Vec::new();
    let initialize = cluster.initialize.as_ref();
    match initialize.map(|i| &i.value) {
        Some(Initialize::SystemId(theirs)) if theirs != system_id => {
            let why = format!(
                "this node belongs to a different cluster: system id {system_id} != {theirs}"
            );
            return if paused && holder {
                Decision::new(LeaseStep::Release, Action::ReleaseLeader, why)
            } else if paused {
                plain(Action::Wait, why)
            } else {
                plain(
                    Action::ExitWrongCluster {
                        system_id: system_id.clone(),
                        cluster_system_id: Some(theirs.clone()),
                    },
                    why,
                )
            };
        }
        Some(Initialize::SystemId(_)) => {}
        None if cluster.leader.is_none() && !holder => {
            if o.postgres.state == PgState::Replica {
                return plain(
                    Action::ExitWrongCluster {
                        system_id: system_id.clone(),
                        cluster_system_id: None,
                    },
                    "the cluster is not initialized and postgres runs as a replica: \
                     start the agent on the primary first",
                );
            }
            effects.push(Effect::RecordSystemId {
                system_id: system_id.clone(),
                precondition: Precondition::Absent,
            });
        }
        // The leader repairs an invalid or unfinished value, or recreates a deleted one.
        _ if holder => effects.push(Effect::RecordSystemId {
            system_id: system_id.clone(),
            precondition: Precondition::from_snapshot(initialize.map(|i| &i.version)),
        }),
        _ => {}
    }

    let mut decision = with_initialized_data(o, cluster, holder);
    if !matches!(decision.action, Action::ProbePeers { .. }) {
        effects.append(&mut decision.effects);
        decision.effects = effects;
    }
    decision
}

/// An empty data directory: bootstrap, clone, or wait.
fn empty_data_dir(o: &Observation, cluster: &ClusterState, holder: bool) -> Decision {
    if holder {
        return Decision::new(
            LeaseStep::Release,
            Action::ReleaseLeader,
            "the data directory is empty: releasing the leader key",
        );
    }
    let Some(leader) = &cluster.leader else {
        if cluster.initialize.is_some() {
            return plain(Action::Wait, "waiting for leader to bootstrap");
        }
        if o.me.nofailover {
            return plain(
                Action::Wait,
                "nofailover: waiting for another member to bootstrap",
            );
        }
        if !o.can_bootstrap {
            return plain(
                Action::Wait,
                "no bootstrap section: waiting for leader to bootstrap",
            );
        }
        return plain(Action::RaceToBootstrap, "trying to bootstrap a new cluster");
    };
    // Patroni's `get_clone_member`: a running `clonefrom` member spares the leader the
    // base backup; the first by name keeps the choice stable between cycles.
    let clonefrom = cluster
        .members
        .iter()
        .find(|m| m.name != o.me.name && m.data.clonefrom() && m.data.is_running());
    match clonefrom.or_else(|| cluster.leader_member()) {
        Some(member) => plain(
            Action::CloneFrom {
                member: member.name.clone(),
            },
            format!("trying to bootstrap from {}", member.name),
        ),
        None => plain(
            Action::Wait,
            format!(
                "waiting for the leader ({}) to publish its member key",
                leader.name
            ),
        ),
    }
}

/// Our upstream: the `replicatefrom` member while it runs, else the leader.
fn upstream(o: &Observation, cluster: &ClusterState) -> Option<String> {
    let cascade =
        o.me.replicatefrom
            .as_deref()
            .and_then(|name| cluster.member(name));
    match cascade {
        Some(member) if member.name != o.me.name && member.data.is_running() => {
            Some(member.name.clone())
        }
        _ => cluster
            .leader
            .as_ref()
            .filter(|l| l.name != o.me.name)
            .map(|l| l.name.clone()),
    }
}

fn follow_action(o: &Observation, cluster: &ClusterState) -> Action {
    Action::Follow {
        upstream: upstream(o, cluster),
        slot: slot_name_from_member_name(&o.me.name),
    }
}

fn follow(o: &Observation, cluster: &ClusterState, reason: impl Into<String>) -> Decision {
    plain(follow_action(o, cluster), reason)
}

fn start_replica(o: &Observation, cluster: &ClusterState, lease: LeaseStep) -> Decision {
    let upstream = upstream(o, cluster);
    let reason = match &upstream {
        Some(name) => format!("starting as a secondary of {name}"),
        None => "starting as a readonly secondary: no leader".to_owned(),
    };
    Decision::new(
        lease,
        Action::StartPostgres {
            role: StartRole::Replica {
                upstream,
                slot: slot_name_from_member_name(&o.me.name),
            },
        },
        reason,
    )
}

/// Step 5: PostgreSQL is stopped or still starting.
fn not_running(
    o: &Observation,
    cluster: &ClusterState,
    holder: bool,
    candidate_is_me: bool,
) -> Option<Decision> {
    let paused = o.settings.pause;
    match o.postgres.state {
        PgState::Stopped { was_primary } => Some(if paused && holder && !candidate_is_me {
            Decision::new(
                LeaseStep::Release,
                Action::ReleaseLeader,
                "paused and postgres is not running: releasing the leader key",
            )
        } else if paused {
            plain(Action::Wait, "paused: postgres is not running")
        } else if holder && was_primary {
            renew(
                Action::StartPostgres {
                    role: StartRole::Primary,
                },
                "starting primary after failure",
            )
        } else {
            start_replica(
                o,
                cluster,
                if holder {
                    LeaseStep::Renew
                } else {
                    LeaseStep::None
                },
            )
        }),
        PgState::Starting => Some(if holder {
            renew(
                Action::Wait,
                "postgres is starting; keeping the leader lock",
            )
        } else {
            plain(Action::Wait, "postgres is starting")
        }),
        PgState::Primary | PgState::Replica => None,
    }
}

/// Steps 6 to 8, once the data directory is ours.
fn with_initialized_data(o: &Observation, cluster: &ClusterState, holder: bool) -> Decision {
    let me = o.me.name.as_str();
    let paused = o.settings.pause;
    let failover = cluster.failover.as_ref();
    let candidate_is_me = failover.is_some_and(|f| f.value.candidate.as_deref() == Some(me));

    if let Some(decision) = not_running(o, cluster, holder, candidate_is_me) {
        return decision;
    }
    let primary = o.postgres.state == PgState::Primary;

    if let Some(leader) = cluster.leader.as_ref().filter(|l| l.name != me) {
        return if primary && paused {
            plain(
                Action::Wait,
                format!(
                    "paused: postgres runs as primary while {} holds the lock",
                    leader.name
                ),
            )
        } else if primary {
            demote_immediately(format!(
                "demoting self because {} holds the leader lock",
                leader.name
            ))
        } else {
            follow(
                o,
                cluster,
                format!(
                    "no action. I am ({me}), a secondary, and following a leader ({})",
                    leader.name
                ),
            )
        };
    }

    if holder {
        return as_leader(o, cluster, failover, candidate_is_me);
    }
    if cluster.leader.is_some() && o.lease == LeaseState::NotHeld {
        // The key names us and we hold no lease: an acquire whose answer was lost, a
        // lease the loop gave up on while the store kept it, or an earlier run of this
        // agent. Acquiring is safe in every case: the store adopts a key bound to this
        // client's live lease or session (`Won`), and answers `HeldBy` for an earlier
        // one, which then expires. Waiting instead would never end in the first two
        // cases, since our own member key keeps that session, and so the key, alive.
        return plain(
            Action::AcquireLeader,
            format!("the leader key names me ({me}): taking it back if it is still mine"),
        );
    }
    if cluster.leader.is_some() {
        // The key names us but this lease was just lost or forgotten: nobody else can
        // take the lock until it expires, and neither can we. A running primary keeps
        // running meanwhile, as in Patroni: once the key expires it wins the race, since
        // every racer that reaches it sees a running primary and stands down.
        return plain(
            if primary {
                Action::Wait
            } else {
                follow_action(o, cluster)
            },
            format!(
                "the leader key names me ({me}) from an earlier holding: waiting for it to expire"
            ),
        );
    }

    let race = Race { o, cluster };
    match race.is_healthiest_node() {
        Verdict::NeedPeers(members) => plain(
            Action::ProbePeers { members },
            "no leader: asking the other members before the leader race",
        ),
        Verdict::Healthiest(why) => plain(
            Action::AcquireLeader,
            format!("no leader: {why}, acquiring the leader lock"),
        ),
        Verdict::NotHealthiest(why) if primary && !paused => {
            demote_immediately(format!("demoting self: no leader and {why}"))
        }
        Verdict::NotHealthiest(why) => {
            follow(o, cluster, format!("no leader and {why}: following"))
        }
    }
}

/// Step 7: we hold a valid lease and the leader key (or the snapshot lacks the key, which
/// the renewal will settle).
fn as_leader(
    o: &Observation,
    cluster: &ClusterState,
    failover: Option<&Versioned<Failover>>,
    candidate_is_me: bool,
) -> Decision {
    let me = o.me.name.as_str();
    let primary = o.postgres.state == PgState::Primary;
    if o.settings.pause && !primary && !candidate_is_me {
        return Decision::new(
            LeaseStep::Release,
            Action::ReleaseLeader,
            "paused and postgres is not primary: releasing the leader key",
        );
    }

    let mut notes = Vec::new();
    let mut effects = Vec::new();
    if let Some(failover) = failover {
        match leader_failover(o, cluster, failover) {
            LeaderFailover::Ignore => {}
            LeaderFailover::Note(note) => notes.push(note),
            LeaderFailover::Clear(note) => {
                notes.push(format!("{note}; cleaning up failover key"));
                effects.push(Effect::ClearFailover {
                    version: failover.version.clone(),
                });
            }
            LeaderFailover::NeedPeers(members) => {
                return renew(
                    Action::ProbePeers { members },
                    "switchover requested: asking the candidates",
                );
            }
            LeaderFailover::Demote(note) => {
                return Decision::new(
                    LeaseStep::Release,
                    Action::Demote {
                        mode: DemoteMode::Graceful,
                    },
                    note,
                );
            }
        }
    }

    let main = match (&o.lease, primary) {
        (
            LeaseState::Held {
                last_renewal: Renewal::Failed { error },
                ..
            },
            true,
        ) => renew(
            Action::StayPrimary,
            format!(
                "failed to update leader lock ({error}); staying primary while the lease is \
                 valid ({}s left)",
                lease_left(o).as_secs()
            ),
        ),
        (_, true) => renew(
            Action::StayPrimary,
            format!("no action. I am ({me}), the leader with the lock"),
        ),
        (
            LeaseState::Held {
                last_renewal: Renewal::Failed { error },
                ..
            },
            false,
        ) => renew(
            Action::Wait,
            format!("not promoting because failed to update leader lock in DCS ({error})"),
        ),
        (_, false) => renew(
            Action::Promote,
            "promoted self to leader because I had the session lock",
        ),
    };
    notes.push(main.reason);
    Decision {
        effects,
        reason: notes.join("; "),
        ..main
    }
}

enum LeaderFailover {
    /// No request for us to act on.
    Ignore,
    /// A request not due yet.
    Note(String),
    /// A request to drop.
    Clear(String),
    /// Ask the candidates first.
    NeedPeers(Vec<String>),
    /// Carry it out.
    Demote(String),
}

/// Patroni's `process_manual_failover_from_leader`.
fn leader_failover(
    o: &Observation,
    cluster: &ClusterState,
    failover: &Versioned<Failover>,
) -> LeaderFailover {
    let me = o.me.name.as_str();
    let paused = o.settings.pause;
    let request = &failover.value;
    if request.is_empty() {
        return LeaderFailover::Ignore;
    }
    if let Some(at) = request.scheduled_at.as_deref() {
        // Paused, nothing scheduled runs (Patroni's `should_run_scheduled_action`).
        if paused {
            return LeaderFailover::Ignore;
        }
        let Some(time) = parse_scheduled_at(at) else {
            return LeaderFailover::Clear(format!("incorrect value of scheduled_at: {at}"));
        };
        match window(o.wall_clock, time, o.settings.loop_wait) {
            Window::Ahead(ahead) => {
                return LeaderFailover::Note(format!(
                    "awaiting failover at {at} (in {:.0} seconds)",
                    ahead.as_secs_f64()
                ));
            }
            Window::Stale => {
                return LeaderFailover::Clear(format!("found a stale failover value: {at}"));
            }
            Window::Due => {}
        }
    }
    if request.leader.as_deref().is_some_and(|l| l != me) {
        return LeaderFailover::Clear(format!(
            "manual failover: leader name does not match: {} != {me}",
            request.leader.as_deref().unwrap_or_default()
        ));
    }
    let candidate = request.candidate.as_deref();
    if candidate == Some(me) {
        return LeaderFailover::Clear(
            "manual failover: I am already the leader, no need to failover".into(),
        );
    }
    if candidate.is_none() && paused {
        return LeaderFailover::Clear(
            "failover is possible only to a specific candidate in a paused state".into(),
        );
    }
    let sync = cluster.sync.as_ref().map(|s| &s.value);
    let members: Vec<_> = cluster
        .members
        .iter()
        .filter(|m| {
            if o.settings.synchronous_mode {
                let synchronous = |name: &str| sync.is_some_and(|s| s.matches(name));
                candidate.is_none_or(synchronous) && synchronous(&m.name)
            } else {
                candidate.is_none_or(|c| c == m.name)
            }
        })
        .collect();
    let target = candidate.map_or_else(|| "a healthy member".to_owned(), ToOwned::to_owned);
    match (Race { o, cluster }).failover_possible(&members) {
        Err(members) => LeaderFailover::NeedPeers(members),
        Ok(true) => LeaderFailover::Demote(format!(
            "manual failover: demoting myself in favour of {target}"
        )),
        Ok(false) => LeaderFailover::Clear(
            "manual failover: no healthy members found, failover is not possible".into(),
        ),
    }
}
