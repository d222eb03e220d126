//! One simulated agent: the real agent's loop (`ha-agent/src/agent`) around the real
//! [`decide`], over a [`FaultyDcs`] and a simulated PostgreSQL.
//!
//! What is modelled as the agent does it:
//! - observe (member key first, then one snapshot), decide, ask peers when the decision
//!   says so, act: lease step, effects, action; then the leader's `/status` and
//!   `/history`;
//! - the lease counts as expired `loop_margin` early, and every DCS call made while
//!   holding it is bounded by the time left;
//! - the dead-man is armed at `valid_until - deadman_margin` on every acquire and
//!   renewal and disarmed as the agent disarms it; it is kept in the [`World`], where
//!   the driver fires it even while the agent loop is frozen;
//! - sleeps until `loop_wait` after the cycle started, a watched key changes, a long
//!   action ends, or the lease needs renewing; at most five immediate cycles in a row.
//!
//! Freezes are gates after every DCS call and before every action on PostgreSQL: a
//! frozen agent resumes where it stopped, with what it decided before.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use dcs_core::model::{HistoryLine, MemberData, MemberState, Role, Status, TimelineHistory};
use dcs_core::{
    Acquire, ClusterState, Dcs, DcsExt as _, Error, FaultyDcs, LeaderLease, MemoryDcs, StateKey,
    WatchOutcome,
};
use ha_agent::ha::{
    Action, Decision, DemoteMode, Effect, LeaseState, LeaseStep, LocalMember, LongAction,
    Observation, PeerReply, PeerStatus, PgState, Renewal, Settings, StartRole, TimelineHighWater,
    decide,
};
use tokio::time::Instant;

use super::postgres::{Run, lsn};
use super::{PG_ACTION, Shared, SimOptions};

/// How long an unanswered peer probe takes (the agent's `PEER_TIMEOUT`).
const PEER_TIMEOUT: Duration = Duration::from_secs(2);

enum CycleEnd {
    Sleep,
    Again,
}

enum Renewed {
    Yes,
    Failed,
    Lost,
}

pub(super) struct SimAgent {
    index: usize,
    name: String,
    shared: Arc<Shared>,
    dcs: Arc<FaultyDcs<MemoryDcs>>,
    options: SimOptions,
    lease: Option<LeaderLease>,
    lease_state: LeaseState,
    settings: Settings,
    last_cluster: Option<ClusterState>,
    last_leader: Option<String>,
    highest_timeline: TimelineHighWater,
    long: Option<LongAction>,
    loop_margin: Duration,
    deadman_margin: Duration,
    last_reason: String,
}

impl SimAgent {
    pub(super) fn new(
        index: usize,
        shared: Arc<Shared>,
        dcs: Arc<FaultyDcs<MemoryDcs>>,
        options: SimOptions,
    ) -> Self {
        let ttl = options.timing.ttl();
        // The agent's `Margins::for_ttl`.
        let loop_margin = (ttl / 10).clamp(Duration::from_millis(500), Duration::from_secs(2));
        Self {
            index,
            name: super::node_name(index),
            shared,
            dcs,
            settings: Settings::from_config(&options.cluster_config()),
            options,
            lease: None,
            lease_state: LeaseState::NotHeld,
            last_cluster: None,
            last_leader: None,
            highest_timeline: TimelineHighWater::default(),
            long: None,
            loop_margin,
            deadman_margin: loop_margin / 2,
            last_reason: String::new(),
        }
    }

    /// The HA loop, until the task is aborted (the agent process dies).
    pub(super) async fn run(mut self) {
        let mut quick_cycles = 0u32;
        loop {
            self.gate().await;
            let started = Instant::now();
            match self.cycle().await {
                CycleEnd::Again if quick_cycles < 5 => {
                    quick_cycles += 1;
                    continue;
                }
                CycleEnd::Again | CycleEnd::Sleep => quick_cycles = 0,
            }
            let mut until = started + self.settings.loop_wait;
            if let LeaseState::Held { valid_until, .. } = self.lease_state {
                until = until.min(valid_until);
            }
            until = until.max(Instant::now() + Duration::from_millis(50));
            let long_done = self.long_action_done_at().unwrap_or(until).min(until);
            let wait = until.saturating_duration_since(Instant::now());
            let watched = self.last_cluster.clone();
            let dcs = Arc::clone(&self.dcs);
            let watch = async move {
                match watched {
                    Some(cluster) => match dcs.watch(&cluster, wait).await {
                        Ok(WatchOutcome::Changed) => {}
                        Ok(WatchOutcome::TimedOut) | Err(_) => {
                            tokio::time::sleep_until(until).await;
                        }
                    },
                    None => tokio::time::sleep_until(until).await,
                }
            };
            tokio::select! {
                biased;
                () = watch => {}
                () = tokio::time::sleep_until(long_done) => {}
            }
        }
    }

    /// Waits while this agent is frozen (its loop stuck, or its whole process stopped).
    async fn gate(&self) {
        while self.shared.with(|w| w.nodes[self.index].agent_frozen()) {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn long_action_done_at(&self) -> Option<Instant> {
        self.long?;
        self.shared.with(|w| match w.nodes[self.index].pg.run {
            Run::Starting { ready_at, .. } => Some(ready_at),
            Run::Replica {
                promote_at: Some(at),
                ..
            } => Some(at),
            _ => None,
        })
    }

    fn lease_time_left(&self) -> Option<Duration> {
        match self.lease_state {
            LeaseState::Held { valid_until, .. } => {
                Some(valid_until.saturating_duration_since(Instant::now()))
            }
            LeaseState::NotHeld | LeaseState::Lost { .. } => None,
        }
    }

    /// A DCS call bounded by the time left on a held lease, then the freeze gate.
    async fn call<T>(
        &self,
        call: impl Future<Output = dcs_core::Result<T>>,
    ) -> dcs_core::Result<T> {
        let outcome = match self.lease_time_left() {
            Some(left) => tokio::time::timeout(left, call)
                .await
                .unwrap_or(Err(Error::Timeout {
                    operation: "a DCS request",
                    after: left,
                })),
            None => call.await,
        };
        self.gate().await;
        outcome
    }

    fn held(&self, lease: &LeaderLease, last_renewal: Renewal) -> LeaseState {
        LeaseState::Held {
            valid_until: lease.valid_until() - self.loop_margin,
            last_renewal,
        }
    }

    fn arm_deadman(&self, lease: &LeaderLease) {
        let deadline = lease.valid_until() - self.deadman_margin;
        let token = lease.token().0;
        let (deadman, watchdog) = (self.options.deadman, self.options.watchdog);
        self.shared.with(|w| {
            let node = &mut w.nodes[self.index];
            node.lease_token = Some(token);
            if deadman {
                node.deadman = Some(deadline);
            }
            if watchdog {
                node.watchdog = Some(deadline);
            }
        });
        self.shared.wake();
    }

    fn disarm_deadman(&self) {
        self.shared.with(|w| {
            let node = &mut w.nodes[self.index];
            node.deadman = None;
            node.watchdog = None;
        });
    }

    fn set_token(&self, token: Option<u64>) {
        self.shared
            .with(|w| w.nodes[self.index].lease_token = token);
    }

    async fn cycle(&mut self) -> CycleEnd {
        self.reap_long_action();
        let postgres = self.shared.with(|w| w.nodes[self.index].pg.observe());
        let member = self.member_data(&postgres);
        let _ = self.call(self.dcs.publish_member(&member)).await;
        let cluster = self.call(self.dcs.cluster()).await;
        match &cluster {
            Ok(cluster) => {
                if let Some(leader) = &cluster.leader {
                    self.last_leader = Some(leader.name.clone());
                }
                self.highest_timeline.absorb(cluster);
                if let Some(config) = &cluster.config {
                    self.settings = Settings::from_config(&config.value);
                }
                self.last_cluster = Some(cluster.clone());
            }
            Err(_) => self.last_cluster = None,
        }
        let mut observation = Observation {
            me: LocalMember::new(self.name.clone()),
            cluster,
            lease: self.lease_state.clone(),
            now: Instant::now(),
            wall_clock: SystemTime::UNIX_EPOCH,
            postgres,
            settings: self.settings.clone(),
            peers: None,
            last_leader: self.last_leader.clone(),
            long_action: self.long,
            can_bootstrap: true,
            highest_timeline: self.highest_timeline.get(),
        };
        let mut decision = self.decide(&observation);
        if let Action::ProbePeers { members } = &decision.action {
            if decision.lease == LeaseStep::Renew
                && let Renewed::Lost = self.renew().await
            {
                return CycleEnd::Again;
            }
            let peers = self.probe_peers(members).await;
            observation.peers = Some(peers);
            observation.lease = self.lease_state.clone();
            observation.now = Instant::now();
            decision = self.decide(&observation);
        }
        // The log keeps each change of mind, not every cycle's repetition.
        if self.last_reason != decision.reason {
            self.last_reason.clone_from(&decision.reason);
            let text = format!("{}: {}", self.name, decision.reason);
            self.shared.with(|w| w.log(text));
        }
        let end = self.act(decision, &observation).await;
        if let Some(cluster) = observation.cluster() {
            self.leader_housekeeping(cluster).await;
        }
        end
    }

    /// [`decide`], bent by the negative control: without demotion on lease loss, a
    /// primary that should stop stays primary.
    fn decide(&self, observation: &Observation) -> Decision {
        let decision = decide(observation);
        if !self.options.demote_on_lease_loss
            && matches!(
                decision.action,
                Action::Demote {
                    mode: DemoteMode::Immediate
                }
            )
        {
            return Decision {
                action: Action::Wait,
                ..decision
            };
        }
        decision
    }

    fn reap_long_action(&mut self) {
        let Some(kind) = self.long else { return };
        let running = self.shared.with(|w| {
            let pg = &w.nodes[self.index].pg;
            match kind {
                LongAction::Promote => pg.is_promoting(),
                _ => matches!(pg.run, Run::Starting { .. }),
            }
        });
        if !running {
            self.long = None;
        }
    }

    fn member_data(&self, postgres: &ha_agent::ha::LocalPostgres) -> MemberData {
        let running = matches!(postgres.state, PgState::Primary | PgState::Replica);
        let position = postgres.wal_position();
        MemberData {
            conn_url: Some(format!(
                "postgres://10.0.0.{}:5432/postgres",
                self.index + 1
            )),
            api_url: Some(format!("http://10.0.0.{}:8008/patroni", self.index + 1)),
            state: if running {
                MemberState::Running
            } else {
                MemberState::Other("stopped".into())
            },
            role: match postgres.state {
                PgState::Primary => Role::Primary,
                PgState::Stopped { was_primary: true } => Role::Demoted,
                _ => Role::Replica,
            },
            version: Some("4.0.4".into()),
            xlog_location: (running && position > 0).then_some(position),
            timeline: postgres.timeline,
            ..MemberData::default()
        }
    }

    async fn renew(&mut self) -> Renewed {
        let Some(lease) = self.lease.take() else {
            return Renewed::Failed;
        };
        match self.call(self.dcs.renew_leader(&lease)).await {
            Ok(renewed) => {
                self.lease_state = self.held(&renewed, Renewal::Succeeded);
                self.arm_deadman(&renewed);
                self.lease = Some(renewed);
                Renewed::Yes
            }
            Err(Error::LeaseLost { reason }) => {
                let text = format!("{}: lease lost: {reason}", self.name);
                self.shared.with(|w| w.log(text));
                self.lease_state = LeaseState::Lost { reason };
                self.set_token(None);
                Renewed::Lost
            }
            Err(error) => {
                self.lease_state = self.held(
                    &lease,
                    Renewal::Failed {
                        error: error.to_string(),
                    },
                );
                self.lease = Some(lease);
                Renewed::Failed
            }
        }
    }

    fn forget_lease(&mut self, postgres_is_primary: bool) {
        self.lease = None;
        self.lease_state = LeaseState::NotHeld;
        self.set_token(None);
        if !postgres_is_primary {
            self.disarm_deadman();
        }
    }

    async fn release(&mut self) {
        self.lease_state = LeaseState::NotHeld;
        if let Some(lease) = self.lease.take() {
            let _ = self.dcs.release_leader(lease).await;
            self.gate().await;
        }
        self.set_token(None);
        self.disarm_deadman();
    }

    async fn act(&mut self, decision: Decision, o: &Observation) -> CycleEnd {
        let primary = o.postgres.state == PgState::Primary;
        let Decision {
            lease,
            action,
            effects,
            ..
        } = decision;
        match lease {
            LeaseStep::Renew => match self.renew().await {
                Renewed::Lost => return CycleEnd::Again,
                Renewed::Failed if action.needs_lock() => return CycleEnd::Sleep,
                Renewed::Yes | Renewed::Failed => {}
            },
            LeaseStep::Forget => self.forget_lease(primary),
            LeaseStep::Release if matches!(action, Action::Demote { .. }) => {}
            LeaseStep::Release => self.release().await,
            LeaseStep::None => {}
        }
        for effect in effects {
            let _ = match effect {
                Effect::ClearFailover { version } => {
                    self.dcs.delete(StateKey::Failover, Some(&version)).await
                }
                Effect::RecordSystemId {
                    system_id,
                    precondition,
                } => self
                    .dcs
                    .set_system_id(&system_id, precondition)
                    .await
                    .map(|_| ()),
            };
            self.gate().await;
        }
        let cluster = o.cluster();
        match action {
            Action::Wait
            | Action::StayPrimary
            | Action::ProbePeers { .. }
            | Action::ReleaseLeader => CycleEnd::Sleep,
            Action::Promote => {
                // The agent's `announce_promotion`.
                let mut member = self.member_data(&o.postgres);
                member.role = Role::Promoted;
                member.timeline = Some(o.postgres.timeline.unwrap_or(1) + 1);
                let _ = self.call(self.dcs.publish_member(&member)).await;
                let at = Instant::now() + PG_ACTION;
                if self.shared.with(|w| w.nodes[self.index].pg.promote(at)) {
                    self.long = Some(LongAction::Promote);
                    self.shared.wake();
                }
                CycleEnd::Sleep
            }
            Action::AcquireLeader => self.acquire().await,
            Action::Follow { upstream, .. } => {
                if o.postgres.state == PgState::Replica
                    && let Some(cluster) = cluster
                {
                    if self.diverged(cluster) {
                        self.shared.with(|w| w.nodes[self.index].pg.stop());
                        return CycleEnd::Again;
                    }
                    let upstream = upstream.as_deref().and_then(super::node_index);
                    self.shared
                        .with(|w| w.nodes[self.index].pg.follow(upstream));
                }
                CycleEnd::Sleep
            }
            Action::StartPostgres { role } => {
                self.start_postgres(role, cluster, o);
                CycleEnd::Sleep
            }
            Action::Demote { mode } => {
                self.long = None;
                self.shared.with(|w| w.nodes[self.index].pg.stop());
                if mode == DemoteMode::Graceful {
                    self.release().await;
                } else {
                    self.disarm_deadman();
                }
                CycleEnd::Again
            }
            Action::RaceToBootstrap
            | Action::CloneFrom { .. }
            | Action::ExitWrongCluster { .. } => {
                // Every simulated data directory is initialized and of this cluster.
                let text = format!("{}: unexpected decision {action:?}", self.name);
                self.shared.with(|w| w.unexpected.push(text));
                CycleEnd::Sleep
            }
        }
    }

    async fn acquire(&mut self) -> CycleEnd {
        let outcome = self.dcs.try_acquire_leader().await;
        self.gate().await;
        match outcome {
            Ok(Acquire::Won(lease)) => {
                let text = format!(
                    "{}: acquired the lock, token {}",
                    self.name,
                    lease.token().0
                );
                self.shared.with(|w| w.log(text));
                self.lease_state = self.held(&lease, Renewal::Succeeded);
                self.arm_deadman(&lease);
                self.lease = Some(lease);
                CycleEnd::Again
            }
            // The agent's `acquire`: an earlier session of ours is waited out, not spun on.
            Ok(Acquire::HeldBy(leader)) if leader.name == self.name => CycleEnd::Sleep,
            Ok(Acquire::HeldBy(_)) => CycleEnd::Again,
            Err(_) => CycleEnd::Sleep,
        }
    }

    /// The agent's `diverged_from`: a running replica that does not stream, whose leader
    /// is on a later timeline that forked off before our position.
    fn diverged(&self, cluster: &ClusterState) -> bool {
        let Some(leader) = cluster.leader_member() else {
            return false;
        };
        let (streaming, ours, position) = self.shared.with(|w| {
            let pg = &w.nodes[self.index].pg;
            (pg.streaming, pg.timeline, lsn(pg.wal.len()))
        });
        if streaming || leader.data.timeline.is_none_or(|t| t <= ours) {
            return false;
        }
        let Some(history) = cluster.history.as_ref() else {
            return false;
        };
        history
            .value
            .lines
            .iter()
            .find(|line| line.timeline == ours)
            .is_some_and(|line| position > line.lsn)
    }

    fn start_postgres(&mut self, role: StartRole, cluster: Option<&ClusterState>, o: &Observation) {
        let now = Instant::now();
        match role {
            StartRole::Primary => {
                self.shared
                    .with(|w| w.nodes[self.index].pg.start(now, PG_ACTION, true, None));
                self.long = Some(LongAction::Restart);
            }
            StartRole::Replica { upstream, .. } => {
                let Some(cluster) = cluster else { return };
                let upstream_index = upstream.as_deref().and_then(super::node_index);
                // The agent's `rewind_source`: a stopped server joining a leader on a
                // later timeline is rewound first (use_pg_rewind is on).
                let leader = cluster.leader_member();
                let rewind_from = leader
                    .filter(|l| upstream.as_deref() == Some(l.name.as_str()))
                    .filter(|l| {
                        matches!(o.postgres.state, PgState::Stopped { .. })
                            && l.data
                                .timeline
                                .zip(o.postgres.timeline)
                                .is_some_and(|(t, ours)| t > ours)
                    })
                    .and_then(|l| super::node_index(&l.name));
                self.shared.with(|w| {
                    if let Some(source) = rewind_from {
                        // pg_rewind needs the source running.
                        if !w.nodes[source].pg.is_running() {
                            return;
                        }
                        let source = w.nodes[source].pg.clone();
                        w.nodes[self.index].pg.rewind_onto(&source);
                    }
                    w.nodes[self.index]
                        .pg
                        .start(now, PG_ACTION, false, upstream_index);
                });
                self.long = Some(if rewind_from.is_some() {
                    LongAction::Rewind
                } else {
                    LongAction::Restart
                });
            }
        }
        self.shared.wake();
    }

    /// Asks the peers' `GET /patroni`: a peer whose agent runs and is not stopped answers
    /// at once; if any does not, the probe takes the agent's full timeout.
    async fn probe_peers(&self, members: &[String]) -> Vec<PeerStatus> {
        let peers: Vec<PeerStatus> = self.shared.with(|w| {
            members
                .iter()
                .map(|name| {
                    let reply = super::node_index(name)
                        .map(|i| &w.nodes[i])
                        .filter(|node| node.api_answers())
                        .and_then(|node| {
                            let pg = node.pg.observe();
                            let running = matches!(pg.state, PgState::Primary | PgState::Replica);
                            running.then(|| PeerReply {
                                in_recovery: pg.state != PgState::Primary,
                                wal_position: Some(pg.wal_position()),
                                timeline: pg.timeline,
                                nofailover: false,
                                failover_priority: 1,
                                watchdog_failed: false,
                            })
                        });
                    PeerStatus {
                        name: name.clone(),
                        reply,
                    }
                })
                .collect()
        });
        let wait = if peers.iter().all(|p| p.reply.is_some()) {
            Duration::from_millis(10)
        } else {
            PEER_TIMEOUT
        };
        tokio::time::sleep(wait).await;
        self.gate().await;
        peers
    }

    /// The leader's `/status` and `/history`.
    async fn leader_housekeeping(&mut self, cluster: &ClusterState) {
        if self.lease.is_none() {
            return;
        }
        let (primary, position, timeline, history) = self.shared.with(|w| {
            let pg = &w.nodes[self.index].pg;
            (
                pg.is_primary(),
                lsn(pg.wal.len()),
                pg.timeline,
                pg.history.clone(),
            )
        });
        if !primary {
            return;
        }
        let status = Status {
            optime: Some(position),
            ..Status::default()
        };
        let _ = self.call(self.dcs.write_status(&status)).await;
        let recorded = cluster
            .history
            .as_ref()
            .map_or(1, |h| h.value.next_timeline());
        if timeline > 1 && recorded < timeline {
            let lines = history
                .iter()
                .map(|switch| HistoryLine {
                    timeline: switch.timeline,
                    lsn: lsn(switch.position),
                    reason: "no recovery target specified".into(),
                    timestamp: None,
                    new_leader: None,
                })
                .collect();
            let _ = self
                .call(self.dcs.write_history(&TimelineHistory { lines }))
                .await;
        }
    }
}
