//! The leader race (Patroni's `is_healthiest_node`) and the switchover check
//! (`is_failover_possible`), over the snapshot and the peers' `GET /patroni` answers.

use dcs_core::model::Failover;
use dcs_core::{ClusterState, Member};

use super::observation::{Observation, PeerReply, PgState};

/// The outcome of a check that may need the peers' answers first.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// We may take the lock.
    Healthiest(String),
    /// We may not; why.
    NotHealthiest(String),
    /// Ask these members first.
    NeedPeers(Vec<String>),
}

/// One race or switchover check: the observation and the snapshot it is about.
pub(crate) struct Race<'a> {
    pub(crate) o: &'a Observation,
    pub(crate) cluster: &'a ClusterState,
}

impl Race<'_> {
    fn me(&self) -> &str {
        &self.o.me.name
    }

    fn my_wal(&self) -> u64 {
        self.o.postgres.wal_position()
    }

    /// The cluster's timeline: from `/history` (Patroni's `Cluster.timeline`) or the
    /// highest a primary was seen on, whichever is later; `None` (neither known) disables
    /// the check, as Patroni's `Cluster.timeline == 0` does.
    fn cluster_timeline(&self) -> Option<u64> {
        let history = self
            .cluster
            .history
            .as_ref()
            .map(|h| h.value.next_timeline());
        history.max(self.o.highest_timeline)
    }

    fn behind_timeline(&self, timeline: Option<u64>) -> bool {
        self.o.settings.check_timeline
            && self
                .cluster_timeline()
                .is_some_and(|cluster| timeline.is_none_or(|t| t < cluster))
    }

    /// Whether `wal` is further behind `/status` than `maximum_lag_on_failover` allows.
    fn lagging(&self, wal: u64) -> bool {
        let last = self.cluster.status.as_ref().and_then(|s| s.value.optime);
        last.unwrap_or(0).saturating_sub(wal) > self.o.settings.maximum_lag_on_failover
    }

    fn sync_matches(&self, name: &str) -> bool {
        self.cluster
            .sync
            .as_ref()
            .is_some_and(|s| s.value.matches(name))
    }

    /// Every other member with a REST API: whom a check may ask.
    pub(crate) fn probe_list(&self) -> Vec<String> {
        self.cluster
            .members
            .iter()
            .filter(|m| m.name != self.me() && m.data.api_url.is_some())
            .map(|m| m.name.clone())
            .collect()
    }

    /// The peers' answers, or the members to ask when the loop has not asked yet.
    fn answers(&self) -> Result<&[super::observation::PeerStatus], Vec<String>> {
        if let Some(peers) = &self.o.peers {
            return Ok(peers);
        }
        let list = self.probe_list();
        if list.is_empty() { Ok(&[]) } else { Err(list) }
    }

    /// A reachable peer's answer, if it may promote (Patroni's `failover_limitation() is
    /// None`): it answered, is not `nofailover`, and its watchdog works.
    fn eligible(&self, name: &str) -> Result<Option<&PeerReply>, Vec<String>> {
        Ok(self
            .answers()?
            .iter()
            .find(|p| p.name == name)
            .and_then(|p| p.reply.as_ref())
            .filter(|r| !r.nofailover && !r.watchdog_failed))
    }

    /// The members a check compares us with: others that may fail over and have an API.
    fn contenders<'m>(&self, members: impl Iterator<Item = &'m Member>) -> Vec<&'m Member> {
        members
            .filter(|m| m.name != self.me() && !m.data.nofailover() && m.data.api_url.is_some())
            .collect()
    }

    /// Patroni's `is_healthiest_node` for a cluster without a leader.
    pub(crate) fn is_healthiest_node(&self) -> Verdict {
        let o = self.o;
        let failover = self.cluster.failover.as_ref().map(|f| &f.value);
        let requested = failover.filter(|f| !f.is_empty());

        // In pause only a manual failover to a named candidate may promote anyone.
        if o.settings.pause
            && !o.me.nofailover
            && let Some(failover) = requested.filter(|f| f.scheduled_at.is_none())
        {
            return self.manual_failover_without_leader(failover);
        }
        match o.postgres.state {
            PgState::Starting => {
                return Verdict::NotHealthiest("postgres is still starting".into());
            }
            PgState::Primary => return self.running_primary_may_lead(),
            PgState::Stopped { .. } | PgState::Replica => {}
        }
        if o.settings.pause {
            return Verdict::NotHealthiest("paused: no automatic failover".into());
        }
        if o.me.nofailover {
            return Verdict::NotHealthiest("I am tagged nofailover".into());
        }
        if let Some(failover) = requested {
            // A switchover in synchronous mode: only the synchronous members may race.
            if o.settings.synchronous_mode
                && failover.leader.is_some()
                && !self.sync_matches(self.me())
            {
                return Verdict::NotHealthiest(
                    "switchover in synchronous mode and I am not synchronous".into(),
                );
            }
            return self.manual_failover_without_leader(failover);
        }
        if o.settings.synchronous_mode
            && self
                .cluster
                .sync
                .as_ref()
                .is_some_and(|s| !s.value.is_empty())
            && !self.sync_matches(self.me())
        {
            return Verdict::NotHealthiest("synchronous mode and I am not synchronous".into());
        }
        self.healthiest_among(&self.cluster.members.iter().collect::<Vec<_>>(), true)
    }

    /// A member still running as primary without the lock (the agent restarted, or a
    /// pause ended) takes it back, unless it is behind the cluster's timeline: then it is
    /// a frozen former primary, and someone else was promoted meanwhile.
    fn running_primary_may_lead(&self) -> Verdict {
        let o = self.o;
        if o.settings.pause {
            let ours = match &o.postgres.data_dir {
                super::observation::DataDir::Initialized { system_id } => Some(system_id.as_str()),
                super::observation::DataDir::Empty => None,
            };
            let theirs = self.cluster.initialize.as_ref().map(|i| &i.value);
            return if theirs.is_none_or(|i| i.system_id() == ours) {
                Verdict::Healthiest("paused, and postgres runs as primary".into())
            } else {
                Verdict::NotHealthiest("paused, and our system id differs".into())
            };
        }
        let timeline = o.postgres.timeline;
        if let Some(cluster) = self.cluster_timeline()
            && timeline.is_some_and(|t| t < cluster)
        {
            return Verdict::NotHealthiest(format!(
                "postgres runs as primary on timeline {} behind the cluster's {cluster}",
                timeline.unwrap_or(0)
            ));
        }
        Verdict::Healthiest("postgres runs as primary".into())
    }

    /// Patroni's `manual_failover_process_no_leader`: a failover key in a leaderless
    /// cluster.
    fn manual_failover_without_leader(&self, failover: &Failover) -> Verdict {
        let o = self.o;
        let me = self.me();
        if let Some(candidate) = failover.candidate.as_deref() {
            if candidate == me {
                return Verdict::Healthiest(format!("manual failover: to me ({me})"));
            }
            if o.settings.pause {
                return Verdict::NotHealthiest(format!(
                    "paused: waiting for the failover candidate ({candidate})"
                ));
            }
            if o.settings.synchronous_mode && !self.sync_matches(me) {
                return Verdict::NotHealthiest(
                    "manual failover in synchronous mode and I am not synchronous".into(),
                );
            }
            if self.cluster.member(candidate).is_some() {
                match self.eligible(candidate) {
                    Err(members) => return Verdict::NeedPeers(members),
                    Ok(Some(_)) => {
                        return Verdict::NotHealthiest(format!(
                            "manual failover: to {candidate}, I am {me}"
                        ));
                    }
                    // The candidate cannot promote: every member may race instead.
                    Ok(None) => {}
                }
            }
        } else if o.settings.pause {
            return Verdict::NotHealthiest("paused: failover needs a named candidate".into());
        }

        let former = failover.leader.as_deref();
        if former == Some(me) {
            let others: Vec<&Member> = self
                .cluster
                .members
                .iter()
                .filter(|m| Some(m.name.as_str()) != failover.candidate.as_deref())
                .collect();
            return match self.failover_possible(&others) {
                Err(members) => Verdict::NeedPeers(members),
                Ok(true) => Verdict::NotHealthiest(
                    "I was the leader and another member can take over".into(),
                ),
                Ok(false) => {
                    Verdict::Healthiest("I was the leader and no other member is healthy".into())
                }
            };
        }
        let members: Vec<&Member> = self
            .cluster
            .members
            .iter()
            .filter(|m| Some(m.name.as_str()) != former)
            .collect();
        self.healthiest_among(&members, false)
    }

    /// Patroni's `_is_healthiest_node`: not lagging, not behind the timeline, and no
    /// reachable peer that may promote is a running primary, ahead in WAL, or equally
    /// far with a higher `failover_priority`.
    fn healthiest_among(&self, members: &[&Member], check_lag: bool) -> Verdict {
        let o = self.o;
        let my_wal = self.my_wal();
        if check_lag && self.lagging(my_wal) {
            return Verdict::NotHealthiest(format!(
                "my wal position {my_wal} exceeds maximum replication lag"
            ));
        }
        if self.behind_timeline(o.postgres.timeline) {
            return Verdict::NotHealthiest("my timeline is behind the cluster's".into());
        }
        // The former leader may be reachable and ahead of us in synchronous mode, where a
        // synchronous standby has every acknowledged commit anyway; and its priority does
        // not count, since it is the member being replaced.
        let sync_leader = self
            .cluster
            .sync
            .as_ref()
            .and_then(|s| s.value.leader.as_deref());
        let former = o.last_leader.as_deref();
        for member in self.contenders(members.iter().copied()) {
            let reply = match self.eligible(&member.name) {
                Err(list) => return Verdict::NeedPeers(list),
                Ok(None) => continue,
                Ok(Some(reply)) => reply,
            };
            let name = &member.name;
            if !reply.in_recovery {
                return Verdict::NotHealthiest(format!("primary ({name}) is still alive"));
            }
            // Positions compare only within one timeline: a peer on a later one saw a
            // promotion we did not, and WAL we have past its switch point is not the
            // cluster's. A reported timeline is never ahead of the true one.
            match (o.postgres.timeline, reply.timeline) {
                (Some(mine), Some(theirs)) if mine < theirs => {
                    return Verdict::NotHealthiest(format!(
                        "{name} is on a later timeline ({theirs} > {mine})"
                    ));
                }
                (Some(mine), Some(theirs)) if mine > theirs => continue,
                _ => {}
            }
            let theirs = reply.wal_position.unwrap_or(0);
            if my_wal < theirs {
                if o.settings.synchronous_mode && sync_leader == Some(name) {
                    continue;
                }
                return Verdict::NotHealthiest(format!(
                    "wal position of {name} is ahead of my wal position"
                ));
            }
            if my_wal == theirs
                && reply.failover_priority > o.me.failover_priority
                && former != Some(name)
            {
                return Verdict::NotHealthiest(format!(
                    "{name} has the same wal position and a higher failover priority ({} > {})",
                    reply.failover_priority, o.me.failover_priority
                ));
            }
        }
        Verdict::Healthiest("I am the healthiest member".into())
    }

    /// Patroni's `is_failover_possible`: whether one of `members` (other than us) answered,
    /// may promote, reports a WAL position within the lag limit and is not behind the
    /// timeline. `Err` lists whom to ask first.
    pub(crate) fn failover_possible(&self, members: &[&Member]) -> Result<bool, Vec<String>> {
        for member in self.contenders(members.iter().copied()) {
            let Some(reply) = self.eligible(&member.name)? else {
                continue;
            };
            if reply.wal_position.is_some_and(|wal| !self.lagging(wal))
                && !self.behind_timeline(reply.timeline)
            {
                return Ok(true);
            }
        }
        Ok(false)
    }
}
