//! What to do this cycle: the output of [`decide`](super::decide).

use std::fmt;

use dcs_core::{Precondition, Version};

/// One cycle's decision: what to do with the lease, the action, side effects on DCS keys,
/// and the log line.
///
/// The act step performs it in this order: the [`LeaseStep`] first, then the [`Effect`]s,
/// then the [`Action`]. A renewal that fails skips every action that
/// [needs the lock](Action::needs_lock) and becomes the next observation's
/// [`LeaseState`](super::LeaseState) ([`LeaseState::after_renewal`](super::LeaseState::after_renewal)).
/// After [`dcs_core::Error::LeaseLost`] the loop decides again at once (the decision is a
/// demotion); after a retryable failure it retries on its usual schedule, never later than
/// the lease's `valid_until`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    /// What happens to our lease.
    pub lease: LeaseStep,
    /// What happens to PostgreSQL or the lock.
    pub action: Action,
    /// Writes to persistent keys that go with the action.
    pub effects: Vec<Effect>,
    /// The log line, in Patroni's words where it has some
    /// (`no action. I am (pg0), the leader with the lock`).
    pub reason: String,
}

impl Decision {
    pub(crate) fn new(lease: LeaseStep, action: Action, reason: impl Into<String>) -> Self {
        Self {
            lease,
            action,
            effects: Vec::new(),
            reason: reason.into(),
        }
    }
}

impl fmt::Display for Decision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.reason)
    }
}

/// What happens to our lease this cycle.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LeaseStep {
    /// We hold none (or are about to race for one with [`Action::AcquireLeader`]).
    None,
    /// Renew it, before anything else: a leader keeps renewing during every action
    /// except the ones that give the lock up.
    Renew,
    /// Give the lock up (compare-and-delete) so another member can take it at once:
    /// after PostgreSQL stopped, when the action stops it.
    Release,
    /// Drop the lease without touching the key: it is lost or expired, so renewing or
    /// releasing it could only fail, and the act step must stop counting on it.
    Forget,
}

/// What happens to PostgreSQL, the lock or the data directory this cycle. Each variant
/// says what the act step does and what comes next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Nothing: stay as we are; the next cycle comes after `loop_wait` or a DCS event.
    Wait,
    /// We hold the lock and PostgreSQL runs as primary: nothing beyond the lease renewal.
    StayPrimary,
    /// We hold the lock and PostgreSQL runs as a replica: promote it (a long action),
    /// after writing `/sync` in synchronous mode and arming the watchdog.
    Promote,
    /// Ask these members' `GET /patroni` (in parallel, 2 s timeout, no retry), then decide
    /// again with the answers in [`Observation::peers`](super::Observation::peers).
    ProbePeers {
        /// The members to ask, by name, in name order.
        members: Vec<String>,
    },
    /// We are the healthiest member of a leaderless cluster: create the leader key
    /// (create-if-absent). Won: the next cycle promotes. Held by another: the next cycle
    /// follows it.
    AcquireLeader,
    /// Run (or keep running) PostgreSQL as a replica streaming from `upstream` (nothing
    /// when `None`: read-only, waiting for a leader), using the physical slot `slot` on the
    /// upstream. Reconfigures only what differs; rewinds first when the timelines diverged.
    Follow {
        /// The member to stream from: the leader, or the `replicatefrom` member.
        upstream: Option<String>,
        /// Our slot on the upstream, as Patroni names it.
        slot: String,
    },
    /// Start the stopped PostgreSQL.
    StartPostgres {
        /// As what.
        role: StartRole,
    },
    /// Stop being primary. What happens to the lock is the [`LeaseStep`]: `Forget` when it
    /// was lost, `Release` for a switchover. PostgreSQL restarts as a replica afterwards.
    Demote {
        /// How PostgreSQL is stopped.
        mode: DemoteMode,
    },
    /// Give the lock up without touching PostgreSQL (the lease step is `Release`): we hold
    /// it but cannot serve as primary (empty data directory, stopped while paused).
    ReleaseLeader,
    /// Empty data directory, no cluster yet: create `initialize` create-only; the winner
    /// runs `initdb` as a long action (then records the system id, writes `config` from
    /// `bootstrap.dcs` and takes the lock), a loser decides again.
    RaceToBootstrap,
    /// Empty data directory in an existing cluster: take a base backup from `member` (a
    /// long action), then start as its replica.
    CloneFrom {
        /// A running `clonefrom` member, or the leader.
        member: String,
    },
    /// The data directory belongs to another cluster (or the cluster was never
    /// initialized and we run as a replica): stop the agent with an error, touching
    /// nothing.
    ExitWrongCluster {
        /// Ours, from `pg_control`.
        system_id: String,
        /// The cluster's, from `initialize` (`None`: the cluster has none).
        cluster_system_id: Option<String>,
    },
}

impl Action {
    /// Whether the action may only run while we hold the lock: when the lease step before
    /// it fails, the act step skips it.
    #[must_use]
    pub fn needs_lock(&self) -> bool {
        matches!(
            self,
            Self::StayPrimary
                | Self::Promote
                | Self::StartPostgres {
                    role: StartRole::Primary
                }
        )
    }
}

/// As what a stopped PostgreSQL starts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StartRole {
    /// Read-write: only for the lock holder whose data was a primary's.
    Primary,
    /// In recovery, streaming from `upstream` (none: read-only until a leader appears).
    Replica {
        /// The member to stream from.
        upstream: Option<String>,
        /// Our slot on the upstream.
        slot: String,
    },
}

/// How a primary stops being one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DemoteMode {
    /// `pg_ctl stop -m immediate`: the lease is lost or expired, someone else may already
    /// be primary, so not one more write may be accepted (Patroni's `immediate-nolock`).
    Immediate,
    /// `pg_ctl stop -m fast` with a shutdown checkpoint, then release the lock so a caught-up
    /// replica takes over without losing a commit (a switchover).
    Graceful,
}

/// A write to a persistent key that goes with a decision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Effect {
    /// Delete the `failover` key at this version (compare-and-delete): the request was
    /// carried out, is stale, or cannot be carried out.
    ClearFailover {
        /// The version the snapshot showed.
        version: Version,
    },
    /// Write our system identifier to `initialize`: we adopt existing data into a cluster
    /// that has none, or repair an invalid value as the leader. A
    /// [`dcs_core::Error::Conflict`] means another member wrote first: decide again.
    RecordSystemId {
        /// Ours, from `pg_control`.
        system_id: String,
        /// Create-only when the key is absent, else compare-and-set on its version.
        precondition: Precondition,
    },
}
