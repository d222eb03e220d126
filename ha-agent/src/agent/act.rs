//! One cycle: observe, decide, act. The act step performs a [`Decision`] in its order:
//! the lease step, the effects, the action.

use std::time::SystemTime;

use dcs_core::model::Role;
use dcs_core::{Acquire, ClusterState, DcsExt as _, Error, Precondition, StateKey, Version};
use tokio::time::Instant;

use super::observe::{Local, unix_now};
use super::{Agent, CycleEnd, Long};
use crate::api::LocalReply;
use crate::ha::{
    Action, DataDir, Decision, DemoteMode, Effect, LeaseState, LeaseStep, LocalMember, LongAction,
    Observation, PgState, Renewal, Settings, StartRole, decide,
};
use crate::postgres::{Conninfo, Postgres, StandbySettings, StopMode};

/// How many cycles in a row a replica must fail to stream past a fork before it is
/// stopped for a rewind.
const DIVERGED_CYCLES: u32 = 3;

/// How a long action ended.
pub(super) enum LongOutcome {
    /// `initdb`, the first start and the users are done; `initialize` is ours at this
    /// version.
    Bootstrapped {
        system_id: String,
        initialize: Version,
    },
    /// Done; nothing to follow up.
    Done(String),
    /// Failed, with the reason.
    Failed(String),
    /// The `pre_promote` fencing script failed, with the reason: give the lock up and do
    /// not race for it for a ttl (Patroni's backoff), so another member can promote.
    Fenced(String),
}

enum Renewed {
    Yes,
    Failed,
    Lost,
}

impl Agent {
    fn me(&self) -> LocalMember {
        let tags = &self.config.tags;
        // After a failed pre_promote, sit out the race for a ttl, as Patroni does.
        let backing_off = self
            .no_race_until
            .is_some_and(|until| Instant::now() < until);
        LocalMember {
            name: self.config.name.clone(),
            nofailover: !tags.may_fail_over() || backing_off,
            failover_priority: tags.effective_failover_priority(),
            replicatefrom: tags
                .all
                .get("replicatefrom")
                .and_then(serde_json::Value::as_str)
                .map(str::to_owned),
        }
    }

    /// One cycle of the HA loop.
    pub(super) async fn cycle(&mut self) -> CycleEnd {
        if let Some(end) = self.reap_long_action().await {
            return end;
        }
        let local = self.observe_postgres().await;
        self.update_node(&local);
        self.run_callbacks(&local);
        // Patroni's `touch_member` comes first, so the snapshot below has our own key
        // and peers racing right now see our position.
        let member = self.member_data(&local);
        if let Err(error) = self.bounded(self.dcs.publish_member(&member)).await {
            tracing::warn!("cannot publish the member key: {error}");
        }
        let cluster = self.bounded(self.dcs.cluster()).await;
        match &cluster {
            Ok(cluster) => self.absorb(cluster).await,
            Err(_) => self.last_cluster = None,
        }

        let mut observation = Observation {
            me: self.me(),
            cluster,
            lease: self.lease_state.clone(),
            now: Instant::now(),
            wall_clock: SystemTime::now(),
            postgres: local.postgres.clone(),
            settings: self.settings.clone(),
            peers: None,
            last_leader: self.last_leader.clone(),
            long_action: self.long.as_ref().map(|l| l.kind),
            can_bootstrap: true,
            highest_timeline: self.highest_timeline.get(),
        };
        let mut decision = decide(&observation);
        if let Action::ProbePeers { members } = &decision.action {
            if decision.lease == LeaseStep::Renew
                && let Renewed::Lost = self.renew().await
            {
                return CycleEnd::Again;
            }
            // `decide` asks for peers only with a snapshot; without one, nobody answered.
            let peers = match observation.cluster() {
                Some(cluster) => self.probe_peers(members, cluster).await,
                None => Vec::new(),
            };
            observation.peers = Some(peers);
            observation.lease = self.lease_state.clone();
            observation.now = Instant::now();
            decision = decide(&observation);
        }
        tracing::info!("{}", decision.reason);
        let end = self.act(decision, &observation, &local).await;
        if let Some(cluster) = observation.cluster() {
            self.leader_housekeeping(&local, cluster).await;
            // Patroni evaluates a scheduled restart only in a cluster with a leader.
            if cluster.leader.is_some() {
                self.evaluate_scheduled_restart().await;
            }
        }
        end
    }

    /// Calls the callback for what changed in PostgreSQL since the last cycle (none while
    /// bootstrapping: the new cluster is not started for good yet, as in Patroni).
    fn run_callbacks(&mut self, local: &Local) {
        if self
            .long
            .as_ref()
            .is_some_and(|l| l.kind == LongAction::Bootstrap)
        {
            return;
        }
        let now = match (&local.status, local.postgres.state) {
            (Some(status), _) => Some(super::callbacks::Seen {
                primary: !status.in_recovery,
                postmaster: status.postmaster_start.map(f64::to_bits),
            }),
            (None, PgState::Stopped { .. }) => None,
            // Running but not answering (starting up, or one status query that timed
            // out): nothing is known to have changed, and forgetting the last sight would
            // call `on_start` again when it answers.
            (None, _) => return,
        };
        let (call, memory) = super::callbacks::transition(self.callback_memory, now);
        self.callback_memory = memory;
        if let Some((action, seen)) = call {
            self.callbacks.call(action, seen.role());
        }
    }

    /// Takes in a fresh snapshot: the dynamic settings, the last leader, the API's view.
    async fn absorb(&mut self, cluster: &ClusterState) {
        self.dcs_last_seen = unix_now();
        self.node.dcs_last_seen = self.dcs_last_seen;
        if let Some(leader) = &cluster.leader {
            self.last_leader = Some(leader.name.clone());
        }
        self.highest_timeline.absorb(cluster);
        if let Some(config) = &cluster.config
            && config.value != self.dynamic
        {
            self.dynamic = config.value.clone();
            self.settings = Settings::from_config(&self.dynamic);
            for warning in crate::ha::config_warnings(&self.dynamic) {
                tracing::warn!("{warning}");
            }
            self.apply_parameters().await;
        }
        self.last_cluster = Some(cluster.clone());
    }

    /// Renews the held lease, bounded by its own validity.
    async fn renew(&mut self) -> Renewed {
        let Some(lease) = self.lease.take() else {
            return Renewed::Failed;
        };
        let outcome = self.bounded(self.dcs.renew_leader(&lease)).await;
        match outcome {
            Ok(renewed) => {
                self.lease_state = self.held(&renewed, Renewal::Succeeded);
                self.arm_deadman(&renewed);
                self.lease = Some(renewed);
                Renewed::Yes
            }
            Err(Error::LeaseLost { reason }) => {
                tracing::warn!("lost the leader lock: {reason}");
                self.lease_state = LeaseState::Lost { reason };
                Renewed::Lost
            }
            Err(error) => {
                tracing::warn!("failed to update the leader lock: {error}");
                // Still ours until its deadline: the next cycle retries.
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
        // A primary stays covered by the switch until the demotion stopped it.
        if !postgres_is_primary {
            self.deadman.disarm();
        }
    }

    /// Gives the lock up (compare-and-delete); PostgreSQL is not a primary any more.
    async fn release(&mut self) {
        self.lease_state = LeaseState::NotHeld;
        if let Some(lease) = self.lease.take() {
            match self.dcs.release_leader(lease).await {
                Ok(()) => tracing::info!("released the leader lock"),
                Err(error) => tracing::warn!("releasing the leader lock failed: {error}"),
            }
        }
        self.deadman.disarm();
    }

    async fn act(&mut self, decision: Decision, o: &Observation, local: &Local) -> CycleEnd {
        let primary = local.postgres.state == PgState::Primary;
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
            // A demotion gives the lock up only once PostgreSQL stopped.
            LeaseStep::Release if matches!(action, Action::Demote { .. }) => {}
            LeaseStep::Release => self.release().await,
            LeaseStep::None => {}
        }
        for effect in effects {
            self.apply_effect(effect).await;
        }
        let cluster = o.cluster();
        match action {
            // The lease step already released the lock for `ReleaseLeader`.
            Action::Wait
            | Action::StayPrimary
            | Action::ProbePeers { .. }
            | Action::ReleaseLeader => CycleEnd::Sleep,
            Action::Promote => {
                self.announce_promotion(local).await;
                let pg = self.pg.clone();
                self.standby = None;
                // Until the checkpoint after promotion, the new primary's pg_control still
                // names the old timeline and pg_rewind against it would compute the wrong
                // fork point: the member key says so, and replicas wait.
                self.checkpoint_pending = true;
                let fence = self
                    .config
                    .postgresql
                    .pre_promote
                    .as_deref()
                    .and_then(crate::config::split_command);
                // The lease stays renewed while the script runs; it has the lease's ttl.
                let fence_timeout = std::time::Duration::from_secs(self.dynamic.ttl());
                self.start_long(LongAction::Promote, None, async move {
                    if let Some(words) = fence
                        && let Err(error) = pg.run_script(&words, fence_timeout).await
                    {
                        return LongOutcome::Fenced(format!("pre_promote script failed: {error}"));
                    }
                    if let Err(error) = pg.promote().await {
                        return LongOutcome::Failed(format!("promote failed: {error}"));
                    }
                    match pg.query("CHECKPOINT").await {
                        Ok(_) => LongOutcome::Done("promoted PostgreSQL".into()),
                        Err(error) => LongOutcome::Failed(format!(
                            "promoted PostgreSQL, but the checkpoint after it failed: {error}"
                        )),
                    }
                });
                CycleEnd::Sleep
            }
            Action::AcquireLeader => self.acquire().await,
            Action::Follow { upstream, slot } => match cluster {
                Some(cluster) if local.postgres.state == PgState::Replica => {
                    self.follow(cluster, upstream.as_deref(), &slot, local)
                        .await
                }
                _ => CycleEnd::Sleep,
            },
            Action::StartPostgres { role } => {
                self.start_postgres(role, cluster, local);
                CycleEnd::Sleep
            }
            Action::Demote { mode } => {
                self.demote(mode).await;
                CycleEnd::Again
            }
            Action::RaceToBootstrap => self.bootstrap().await,
            Action::CloneFrom { member } => {
                self.clone_from(cluster, &member);
                CycleEnd::Sleep
            }
            Action::ExitWrongCluster { .. } => CycleEnd::Exit(super::AgentError::WrongCluster(
                format!("stopping: {}", wrong_cluster_reason(o)),
            )),
        }
    }

    /// Publishes, before promoting, the member key as `promoted` on the timeline the
    /// promotion will start (one past the newest history file PostgreSQL knows): the new
    /// primary may acknowledge writes at once, and if it is cut off right after, the
    /// others must still know that timeline exists (see `TimelineHighWater`).
    async fn announce_promotion(&self, local: &Local) {
        let newest = match self.pg.newest_history_timeline().await {
            Ok(newest) => newest,
            Err(error) => {
                tracing::warn!("cannot list the timeline history files: {error}");
                1
            }
        };
        let mut member = self.member_data(local);
        member.role = Role::Promoted;
        member.timeline = Some(newest.max(local.postgres.timeline.unwrap_or(1)) + 1);
        if let Err(error) = self.bounded(self.dcs.publish_member(&member)).await {
            tracing::warn!("cannot publish the member key before promoting: {error}");
        }
    }

    /// Keeps a running replica streaming from `upstream`; stops one that keeps failing to
    /// stream past a fork, so its next start rewinds it.
    async fn follow(
        &mut self,
        cluster: &ClusterState,
        upstream: Option<&str>,
        slot: &str,
        local: &Local,
    ) -> CycleEnd {
        let diverged = diverged_from(cluster, local);
        self.diverged_cycles = if diverged.is_some() {
            self.diverged_cycles + 1
        } else {
            0
        };
        // A replica may take a few seconds to start streaming after a switch (and its
        // checkpoint's timeline lags behind): only one that keeps failing is stopped.
        if let Some(leader) = diverged.filter(|_| self.diverged_cycles >= DIVERGED_CYCLES) {
            self.diverged_cycles = 0;
            self.needs_rewind = true;
            // Streaming cannot resume past a fork; a stopped server is rewound on its
            // way back (see `rewind_source`).
            tracing::warn!(
                "this replica's timeline forked off before its position: stopping it to \
                 rewind onto {leader}'s timeline"
            );
            if let Err(error) = self.pg.stop(StopMode::Fast).await {
                tracing::error!("cannot stop PostgreSQL to rewind it: {error}");
            }
            return CycleEnd::Again;
        }
        let standby = self.standby_settings(cluster, upstream, slot);
        match self.pg.follow(&standby).await {
            Ok(true) => tracing::info!("following {} now", upstream.unwrap_or("no leader")),
            Ok(false) => {}
            Err(error) => tracing::error!("cannot follow the new upstream: {error}"),
        }
        self.standby = Some(standby);
        CycleEnd::Sleep
    }

    async fn apply_effect(&mut self, effect: Effect) {
        match effect {
            Effect::ClearFailover { version } => {
                if let Err(error) = self.dcs.delete(StateKey::Failover, Some(&version)).await {
                    tracing::warn!("cannot remove the failover key: {error}");
                }
            }
            Effect::RecordSystemId {
                system_id,
                precondition,
            } => match self.dcs.set_system_id(&system_id, precondition).await {
                Ok(_) => tracing::info!("recorded the system identifier {system_id}"),
                Err(error) => tracing::warn!("cannot record the system identifier: {error}"),
            },
        }
    }

    async fn acquire(&mut self) -> CycleEnd {
        match self.dcs.try_acquire_leader().await {
            Ok(Acquire::Won(lease)) => {
                tracing::info!("acquired session lock as a leader");
                self.lease_state = self.held(&lease, Renewal::Succeeded);
                self.arm_deadman(&lease);
                self.lease = Some(lease);
                // Promote now, not a loop_wait later.
                CycleEnd::Again
            }
            // An earlier session of ours (a restarted agent): deciding again at once would
            // spin until the key expires; the watch wakes the loop when it does.
            Ok(Acquire::HeldBy(leader)) if leader.name == self.config.name => {
                tracing::info!("the leader key is held by an earlier session of mine");
                CycleEnd::Sleep
            }
            Ok(Acquire::HeldBy(leader)) => {
                tracing::info!("{} took the leader lock first", leader.name);
                CycleEnd::Again
            }
            Err(error) => {
                tracing::warn!("cannot acquire the leader lock: {error}");
                CycleEnd::Sleep
            }
        }
    }

    async fn demote(&mut self, mode: DemoteMode) {
        if self.never_demote && mode == DemoteMode::Immediate {
            tracing::error!("{}=1: not demoting", super::UNSAFE_NEVER_DEMOTE_VAR);
            return;
        }
        let stop = match mode {
            DemoteMode::Immediate => StopMode::Immediate,
            DemoteMode::Graceful => StopMode::Fast,
        };
        if let Some(long) = self.long.take() {
            long.task.abort();
            tracing::info!("abandoned {} to demote", long.kind.as_str());
        }
        self.checkpoint_pending = false;
        match self.pg.stop(stop).await {
            Ok(_) => {
                tracing::info!("demoted: PostgreSQL stopped ({})", stop.as_str());
                self.standby = None;
                if mode == DemoteMode::Graceful {
                    self.release().await;
                } else {
                    self.deadman.disarm();
                }
            }
            // The dead-man switch stays armed: it stops the server at the deadline.
            Err(error) => tracing::error!("demotion failed, PostgreSQL may still run: {error}"),
        }
    }

    /// The settings to stream from `upstream` (nothing when `None`) through `slot`.
    fn standby_settings(
        &self,
        cluster: &ClusterState,
        upstream: Option<&str>,
        slot: &str,
    ) -> StandbySettings {
        let source = upstream
            .and_then(|name| cluster.member(name))
            .and_then(|m| m.data.conn_url.as_deref())
            .and_then(Conninfo::from_conn_url);
        match source {
            Some(source) => {
                let slot = super::use_slots(&self.dynamic).then_some(slot);
                self.pg.standby_settings(&source, slot)
            }
            None => StandbySettings {
                primary_conninfo: String::new(),
                primary_slot_name: None,
            },
        }
    }

    fn start_postgres(&mut self, role: StartRole, cluster: Option<&ClusterState>, local: &Local) {
        let pg = self.pg.clone();
        match role {
            StartRole::Primary => {
                self.standby = None;
                self.start_long(LongAction::Restart, None, async move {
                    match pg.start(None).await {
                        Ok(()) => LongOutcome::Done("started PostgreSQL as primary".into()),
                        Err(error) => LongOutcome::Failed(format!("start failed: {error}")),
                    }
                });
            }
            StartRole::Replica { upstream, slot } => {
                let Some(cluster) = cluster else { return };
                let standby = self.standby_settings(cluster, upstream.as_deref(), &slot);
                self.standby = Some(standby.clone());
                let rewind_from = self.rewind_source(cluster, upstream.as_deref(), local);
                if must_wait_for_checkpoint(cluster, rewind_from.is_some()) {
                    tracing::info!("waiting for the new leader's checkpoint after promote");
                    return;
                }
                let kind = if rewind_from.is_some() {
                    LongAction::Rewind
                } else {
                    LongAction::Restart
                };
                self.start_long(kind, None, async move {
                    if let Some(source) = rewind_from
                        && let Err(error) = rewind(&pg, &source).await
                    {
                        return LongOutcome::Failed(format!("pg_rewind failed: {error}"));
                    }
                    match pg.start(Some(&standby)).await {
                        Ok(()) => LongOutcome::Done("started PostgreSQL as a replica".into()),
                        Err(error) => LongOutcome::Failed(format!("start failed: {error}")),
                    }
                });
            }
        }
    }

    /// Where to rewind from: a stopped former primary (or a replica found unable to stream
    /// past a fork) joining a leader on a later timeline, when `use_pg_rewind` is on.
    /// `pg_rewind` itself finds out whether the histories diverged.
    fn rewind_source(
        &self,
        cluster: &ClusterState,
        upstream: Option<&str>,
        local: &Local,
    ) -> Option<Conninfo> {
        let PgState::Stopped { was_primary } = local.postgres.state else {
            return None;
        };
        if !was_primary && !self.needs_rewind {
            return None;
        }
        let enabled = self
            .config
            .postgresql
            .use_pg_rewind
            .unwrap_or_else(|| super::use_pg_rewind(&self.dynamic));
        let leader = cluster.leader_member()?;
        if upstream != Some(leader.name.as_str()) {
            return None;
        }
        let later = leader.data.timeline? > local.postgres.timeline?;
        if later && !enabled {
            tracing::warn!(
                "{} is on a later timeline and use_pg_rewind is off: if this member's \
                 history diverged it cannot stream; reinitialize it then",
                leader.name
            );
        }
        (later && enabled)
            .then(|| {
                leader
                    .data
                    .conn_url
                    .as_deref()
                    .and_then(Conninfo::from_conn_url)
            })
            .flatten()
    }

    async fn bootstrap(&mut self) -> CycleEnd {
        let initialize = match self.dcs.initialize().await {
            Ok(version) => version,
            Err(Error::Conflict { .. }) => {
                tracing::info!("another member is bootstrapping the cluster");
                return CycleEnd::Again;
            }
            Err(error) => {
                tracing::warn!("cannot start the bootstrap race: {error}");
                return CycleEnd::Sleep;
            }
        };
        let pg = self.pg.clone();
        let initdb = self.config.bootstrap.initdb.clone();
        let pg_hba = self.config.bootstrap.pg_hba.clone();
        self.start_long(LongAction::Bootstrap, None, async move {
            match bootstrap(&pg, &initdb, &pg_hba).await {
                Ok(system_id) => LongOutcome::Bootstrapped {
                    system_id,
                    initialize,
                },
                Err(error) => LongOutcome::Failed(format!("bootstrap failed: {error}")),
            }
        });
        CycleEnd::Sleep
    }

    fn clone_from(&mut self, cluster: Option<&ClusterState>, member: &str) {
        let source = cluster
            .and_then(|c| c.member(member))
            .and_then(|m| m.data.conn_url.as_deref())
            .and_then(Conninfo::from_conn_url);
        let Some(source) = source else {
            tracing::warn!("cannot clone from {member}: its member key has no usable conn_url");
            return;
        };
        let pg = self.pg.clone();
        let member = member.to_owned();
        self.start_long(LongAction::Basebackup, None, async move {
            match pg.clone_from(&source).await {
                Ok(()) => LongOutcome::Done(format!("cloned the data directory from {member}")),
                Err(error) => {
                    remove_data_dir(&pg).await;
                    LongOutcome::Failed(format!("base backup from {member} failed: {error}"))
                }
            }
        });
    }

    pub(super) fn start_long(
        &mut self,
        kind: LongAction,
        reply: Option<tokio::sync::oneshot::Sender<LocalReply>>,
        work: impl std::future::Future<Output = LongOutcome> + Send + 'static,
    ) {
        let done = std::sync::Arc::clone(&self.long_done);
        let task = tokio::spawn(async move {
            let outcome = work.await;
            done.notify_one();
            outcome
        });
        tracing::info!("started {}", kind.as_str());
        self.long = Some(Long { kind, task, reply });
    }

    /// Collects a finished long action and carries out what follows it.
    async fn reap_long_action(&mut self) -> Option<CycleEnd> {
        if !self.long.as_ref()?.task.is_finished() {
            return None;
        }
        let long = self.long.take()?;
        let outcome = long
            .task
            .await
            .unwrap_or_else(|error| LongOutcome::Failed(format!("the task failed: {error}")));
        let (end, reply) = match outcome {
            LongOutcome::Bootstrapped {
                system_id,
                initialize,
            } => (
                Some(self.finish_bootstrap(&system_id, initialize).await),
                LocalReply {
                    status: 200,
                    message: "bootstrapped".into(),
                },
            ),
            LongOutcome::Done(message) => {
                tracing::info!("{message}");
                match long.kind {
                    LongAction::Promote => self.checkpoint_pending = false,
                    LongAction::Rewind => self.needs_rewind = false,
                    _ => {}
                }
                (
                    None,
                    LocalReply {
                        status: 200,
                        message,
                    },
                )
            }
            LongOutcome::Fenced(message) => {
                tracing::error!("{message}; giving the leader lock up instead of promoting");
                self.checkpoint_pending = false;
                self.release().await;
                self.no_race_until =
                    Some(Instant::now() + std::time::Duration::from_secs(self.dynamic.ttl()));
                (
                    Some(CycleEnd::Again),
                    LocalReply {
                        status: 503,
                        message,
                    },
                )
            }
            LongOutcome::Failed(message) => {
                tracing::error!("{message}");
                match long.kind {
                    LongAction::Bootstrap => self.abandon_bootstrap().await,
                    // A promotion that failed, or whose checkpoint failed: nothing left to
                    // wait for (a checkpoint will come with the next one anyway).
                    LongAction::Promote => self.checkpoint_pending = false,
                    _ => {}
                }
                (
                    None,
                    LocalReply {
                        status: 503,
                        message,
                    },
                )
            }
        };
        if let Some(sender) = long.reply {
            let _ = sender.send(reply);
        }
        end
    }

    /// After `initdb`: record the system id, write `config`, take the lock.
    async fn finish_bootstrap(&mut self, system_id: &str, initialize: Version) -> CycleEnd {
        if let Err(error) = self
            .dcs
            .set_system_id(system_id, Precondition::Version(initialize))
            .await
        {
            tracing::error!("cannot record the system identifier after bootstrap: {error}");
        }
        match self
            .dcs
            .set_config(&self.config.bootstrap.dcs, Precondition::Absent)
            .await
        {
            Ok(_) | Err(Error::Conflict { .. }) => {}
            Err(error) => tracing::error!("cannot write the cluster configuration: {error}"),
        }
        tracing::info!("initialized a new cluster (system identifier {system_id})");
        self.acquire().await
    }

    /// A failed bootstrap: stop what runs, move the data aside, let another member try.
    async fn abandon_bootstrap(&mut self) {
        let _ = self.pg.stop(StopMode::Immediate).await;
        let data_dir = self.pg.options().data_dir.clone();
        let aside = data_dir.with_file_name(format!(
            "{}_failed_{}",
            data_dir.file_name().unwrap_or_default().to_string_lossy(),
            unix_now()
        ));
        if tokio::fs::metadata(&data_dir).await.is_ok() {
            match tokio::fs::rename(&data_dir, &aside).await {
                Ok(()) => tracing::info!("moved the failed bootstrap to {}", aside.display()),
                Err(error) => tracing::error!("cannot move the failed bootstrap aside: {error}"),
            }
        }
        if let Err(error) = self.dcs.cancel_initialization().await {
            tracing::error!("cannot remove the initialize key after a failed bootstrap: {error}");
        }
    }

    /// Asks `members`' REST APIs `GET /patroni`, in parallel, each within 2 s.
    async fn probe_peers(
        &self,
        members: &[String],
        cluster: &ClusterState,
    ) -> Vec<crate::ha::PeerStatus> {
        let mut asks = tokio::task::JoinSet::new();
        for name in members {
            let url = cluster.member(name).and_then(|m| m.data.api_url.clone());
            let name = name.clone();
            asks.spawn(async move {
                let reply = match url {
                    Some(url) => super::leader::ask_peer(&url).await,
                    None => None,
                };
                crate::ha::PeerStatus { name, reply }
            });
        }
        let mut peers = Vec::with_capacity(members.len());
        while let Some(joined) = asks.join_next().await {
            if let Ok(peer) = joined {
                peers.push(peer);
            }
        }
        peers.sort_by(|a, b| a.name.cmp(&b.name));
        peers
    }
}

/// Why the data directory may not be used in this cluster.
fn wrong_cluster_reason(o: &Observation) -> String {
    match (
        &o.postgres.data_dir,
        o.cluster().and_then(|c| c.initialize.as_ref()),
    ) {
        (DataDir::Initialized { system_id }, Some(init)) => format!(
            "the data directory belongs to another cluster: system id {system_id}, the \
             cluster's is {}",
            init.value.to_value_string()
        ),
        _ => "the cluster is not initialized and PostgreSQL runs as a replica: start the \
              agent on the primary first"
            .to_owned(),
    }
}

/// Whether a replica start must wait for the leader's checkpoint after its promotion:
/// only when it rewinds against the leader (Patroni's rule), since until that checkpoint
/// the leader's `pg_control` names its old timeline and `pg_rewind` would compute the
/// wrong fork point. A plain start streams at once. Waiting on every start would never end
/// when the leader key is a stale one of our own (a demoted primary whose store session
/// outlived its lease): that "leader" is not a primary, so it never checkpoints.
fn must_wait_for_checkpoint(cluster: &ClusterState, rewinding: bool) -> bool {
    rewinding
        && cluster
            .leader_member()
            .is_some_and(|l| l.data.checkpoint_after_promote() == Some(false))
}

/// The leader's name when this running replica cannot stream from it: it is not
/// streaming, the leader is on a later timeline, and `/history` says our timeline ended
/// before the position we already replayed (the server's log says "forked off current
/// database system timeline ... before current recovery point").
fn diverged_from(cluster: &ClusterState, local: &Local) -> Option<String> {
    let status = local.status.as_ref()?;
    if status.is_streaming() {
        return None;
    }
    let leader = cluster.leader_member()?;
    let ours = local.postgres.timeline?;
    if leader.data.timeline? <= ours {
        return None;
    }
    let position = status.wal.replay.max(status.wal.receive)?;
    let history = &cluster.history.as_ref()?.value;
    let switch = history.lines.iter().find(|line| line.timeline == ours)?;
    (position > switch.lsn).then(|| leader.name.clone())
}

/// `initdb`, `bootstrap.pg_hba`, the first start as a primary, the users.
async fn bootstrap(
    pg: &Postgres,
    initdb: &[crate::config::InitdbOption],
    pg_hba: &[String],
) -> Result<String, crate::postgres::PostgresError> {
    pg.initdb(initdb).await?;
    if pg.options().pg_hba.is_empty() && !pg_hba.is_empty() {
        pg.append_pg_hba(pg_hba).await?;
    }
    pg.start(None).await?;
    pg.create_users().await?;
    Ok(pg.control_data().await?.system_id)
}

/// Brings a crashed former primary to a clean shutdown in recovery (read-only, no
/// upstream), then rewinds it onto `source`.
async fn rewind(pg: &Postgres, source: &Conninfo) -> Result<(), crate::postgres::PostgresError> {
    if !pg.control_data().await?.is_clean_shutdown() {
        // Crash recovery as a standby without an upstream: it replays the local WAL and
        // never accepts a write, then stops cleanly "in recovery", which pg_rewind takes.
        let idle = StandbySettings {
            primary_conninfo: String::new(),
            primary_slot_name: None,
        };
        pg.start(Some(&idle)).await?;
        pg.stop(StopMode::Fast).await?;
    }
    pg.rewind(source).await
}

async fn remove_data_dir(pg: &Postgres) {
    let dir = pg.options().data_dir.clone();
    if let Err(error) = tokio::fs::remove_dir_all(&dir).await
        && error.kind() != std::io::ErrorKind::NotFound
    {
        tracing::error!("cannot remove {}: {error}", dir.display());
    }
}

#[cfg(test)]
mod tests {
    use dcs_core::model::RawEntry;
    use dcs_core::{ClusterState, Version};

    use super::must_wait_for_checkpoint;

    fn cluster(leader: &str, member_json: &str) -> ClusterState {
        let entry = |key: &str, value: &str| RawEntry {
            key: key.to_owned(),
            value: value.as_bytes().to_vec(),
            version: Version::new(1),
            owner: None,
            created: 1,
        };
        ClusterState::from_entries(vec![
            entry("leader", leader),
            entry(&format!("members/{leader}"), member_json),
        ])
    }

    #[test]
    fn only_a_rewind_waits_for_the_leaders_checkpoint_after_promote() {
        let promoting = cluster(
            "node2",
            r#"{"role":"primary","version":"3.0.2","checkpoint_after_promote":false}"#,
        );
        assert!(must_wait_for_checkpoint(&promoting, true));
        assert!(!must_wait_for_checkpoint(&promoting, false));
        let checkpointed = cluster("node2", r#"{"role":"primary","version":"3.0.2"}"#);
        assert!(!must_wait_for_checkpoint(&checkpointed, true));
        // Our own stale key after a demotion (the store's session outlived the lease): a
        // "leader" that is not a primary never checkpoints, and a plain start must not
        // wait for it (it used to, forever: the seed 3291647184 ZooKeeper chaos run).
        let stale = cluster("node2", r#"{"role":"replica","version":"3.0.2"}"#);
        assert!(!must_wait_for_checkpoint(&stale, false));
    }
}
