//! What the loop saw this cycle: the input of [`decide`](super::decide).

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use dcs_core::model::{ClusterConfig, Role};
use dcs_core::{ClusterState, Error, LeaderLease};
use tokio::time::Instant;

/// Everything [`decide`](super::decide) may look at, gathered by the loop's observe step.
///
/// Time enters only here (`now`, `wall_clock`): `decide` reads no clock, so a test states
/// the instant it means and a cycle decides on one consistent view.
#[derive(Debug)]
pub struct Observation {
    /// This member: its name and the tags that matter to the leader race.
    pub me: LocalMember,
    /// This cycle's snapshot of the cluster, or why reading it failed. Any error counts as
    /// "the DCS cannot be reached": a primary keeps its role only until its lease expires,
    /// which [`Observation::lease`] bounds without the store.
    pub cluster: Result<ClusterState, Error>,
    /// Our hold on the leader lock, as the last acquire or renewal left it.
    pub lease: LeaseState,
    /// The loop's monotonic clock when it took the observation; compared with
    /// [`LeaseState::Held::valid_until`].
    pub now: Instant,
    /// The wall clock at the same moment: only a scheduled switchover's `scheduled_at`
    /// (wall-clock text) is compared with it, never the lease.
    pub wall_clock: SystemTime,
    /// The local PostgreSQL.
    pub postgres: LocalPostgres,
    /// The dynamic settings in force: from the snapshot's `config`, or the last valid one
    /// when the DCS is unreachable or holds none (see [`Settings::from_config`]).
    pub settings: Settings,
    /// The answers of peers to `GET /patroni`, when the loop asked them this cycle.
    /// `None` means "not asked": a decision that needs them returns
    /// [`Action::ProbePeers`](super::Action::ProbePeers) and the loop decides again with
    /// the answers.
    pub peers: Option<Vec<PeerStatus>>,
    /// The leader in the last snapshot that had one (Patroni's `old_cluster`): the former
    /// leader, whose WAL position and priority do not veto a race in synchronous mode.
    pub last_leader: Option<String>,
    /// A long action running in the background, if any; lease renewal continues meanwhile.
    pub long_action: Option<LongAction>,
    /// Whether the configuration has a `bootstrap` section, without which a member with
    /// an empty data directory never races to bootstrap the cluster.
    pub can_bootstrap: bool,
    /// The highest timeline a primary of this cluster was seen on, this snapshot
    /// included ([`TimelineHighWater`]); with `/history`, what "the cluster's timeline"
    /// means to the leader race.
    pub highest_timeline: Option<u64>,
}

impl Observation {
    /// The snapshot, when the DCS answered.
    #[must_use]
    pub fn cluster(&self) -> Option<&ClusterState> {
        self.cluster.as_ref().ok()
    }
}

/// This member, as the leader race sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalMember {
    /// The member name (`name:` in the config), also the leader key's value when we hold it.
    pub name: String,
    /// Effective `nofailover`, after Patroni's rule (a truthy `nofailover` tag, or
    /// `failover_priority <= 0`): never race for the lock.
    pub nofailover: bool,
    /// Effective `failover_priority` (0 when `nofailover`): breaks ties on equal WAL.
    pub failover_priority: i64,
    /// The `replicatefrom` tag: the member to stream from instead of the leader.
    pub replicatefrom: Option<String>,
}

impl LocalMember {
    /// A member with Patroni's default tags: may fail over, priority 1.
    #[must_use]
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            nofailover: false,
            failover_priority: 1,
            replicatefrom: None,
        }
    }
}

/// Our hold on the leader lock. The loop keeps the [`LeaderLease`] itself; `decide` needs
/// only its deadline and how the last renewal went.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LeaseState {
    /// We hold no lease: never acquired, released, or forgotten after a loss.
    NotHeld,
    /// We hold a lease, valid until `valid_until` whatever the store says meanwhile.
    Held {
        /// [`LeaderLease::valid_until`]: until this instant nobody else can hold the lock;
        /// at and after it, we must not act as primary.
        valid_until: Instant,
        /// How the last renewal went.
        last_renewal: Renewal,
    },
    /// The store said the lock is not ours any more ([`Error::LeaseLost`]): demote now.
    Lost {
        /// What the store showed instead of our holding.
        reason: String,
    },
}

impl LeaseState {
    /// The state after a renewal attempt: `previous` is the lease we tried to renew, so a
    /// failed renewal keeps its deadline; [`Error::LeaseLost`] is a loss, any other error
    /// a failure that leaves the lease valid until its deadline.
    #[must_use]
    pub fn after_renewal(previous: &LeaderLease, outcome: &Result<LeaderLease, Error>) -> Self {
        match outcome {
            Ok(lease) => Self::Held {
                valid_until: lease.valid_until(),
                last_renewal: Renewal::Succeeded,
            },
            Err(Error::LeaseLost { reason }) => Self::Lost {
                reason: reason.clone(),
            },
            Err(error) => Self::Held {
                valid_until: previous.valid_until(),
                last_renewal: Renewal::Failed {
                    error: error.to_string(),
                },
            },
        }
    }
}

/// How the last acquire or renewal of a held lease went.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Renewal {
    /// It succeeded (or the lease was just acquired).
    Succeeded,
    /// It failed without saying the lock is lost (the store was unreachable or slow): the
    /// lease stays valid until its deadline, and the next cycle retries.
    Failed {
        /// The error, for the log line.
        error: String,
    },
}

/// The local PostgreSQL: its data directory, whether and how it runs, where its WAL is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalPostgres {
    /// The data directory.
    pub data_dir: DataDir,
    /// Whether the server runs, and as what.
    pub state: PgState,
    /// The current timeline (`pg_control_checkpoint()` or the replica's received one).
    pub timeline: Option<u64>,
    /// The WAL positions, in bytes.
    pub wal: WalPosition,
}

impl LocalPostgres {
    /// Our WAL position as the leader race compares it (Patroni's `last_operation`): a
    /// primary's flush position, a replica's furthest of received and replayed, 0 unknown.
    #[must_use]
    pub fn wal_position(&self) -> u64 {
        match self.state {
            PgState::Primary => self.wal.flush.unwrap_or(0),
            _ => self
                .wal
                .receive
                .max(self.wal.replay)
                .or(self.wal.flush)
                .unwrap_or(0),
        }
    }
}

/// The data directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DataDir {
    /// Absent or empty: this member must bootstrap or clone.
    Empty,
    /// Initialized, with the database system identifier from `pg_control`.
    Initialized {
        /// The system identifier, e.g. `7268616322854375442`.
        system_id: String,
    },
}

/// Whether PostgreSQL runs, and as what.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PgState {
    /// Not running.
    Stopped {
        /// Whether it last ran as a primary (`pg_control` state "in production" or "shut
        /// down", not "in archive recovery"): a holder restarts it as one.
        was_primary: bool,
    },
    /// Started, not yet accepting connections.
    Starting,
    /// Running read-write (not in recovery).
    Primary,
    /// Running in recovery (a replica, or a demoted primary).
    Replica,
}

/// WAL positions in bytes; `None` where unknown or not applicable.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WalPosition {
    /// Received (replica: `pg_last_wal_receive_lsn`).
    pub receive: Option<u64>,
    /// Replayed (replica: `pg_last_wal_replay_lsn`).
    pub replay: Option<u64>,
    /// Flushed (primary: `pg_current_wal_flush_lsn`).
    pub flush: Option<u64>,
}

/// A long action running in the background while the loop keeps renewing the lease.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LongAction {
    /// `initdb` after winning the bootstrap race.
    Bootstrap,
    /// `pg_basebackup` from a member.
    Basebackup,
    /// `pg_ctl promote`.
    Promote,
    /// `pg_rewind` of a former primary.
    Rewind,
    /// A start, stop or restart of PostgreSQL.
    Restart,
}

impl LongAction {
    /// The name used in log lines.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Bootstrap => "bootstrap",
            Self::Basebackup => "basebackup",
            Self::Promote => "promote",
            Self::Rewind => "pg_rewind",
            Self::Restart => "restart",
        }
    }
}

/// One peer's answer to `GET /patroni`, asked during the leader race or before a
/// switchover.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerStatus {
    /// The member name.
    pub name: String,
    /// Its answer, or `None` when it did not answer in time (an unreachable peer does not
    /// veto, as in Patroni).
    pub reply: Option<PeerReply>,
}

/// What a reachable peer reported about itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerReply {
    /// `role` is not `primary`: PostgreSQL is in recovery. A peer still running as primary
    /// vetoes any race.
    pub in_recovery: bool,
    /// `xlog.location` (primary) or max of `xlog.received_location` and
    /// `xlog.replayed_location` (replica); `None` when not reported.
    pub wal_position: Option<u64>,
    /// `timeline`.
    pub timeline: Option<u64>,
    /// Effective `nofailover` from its `tags`: such a peer neither races nor vetoes.
    pub nofailover: bool,
    /// Effective `failover_priority` from its `tags`.
    pub failover_priority: i64,
    /// `watchdog_failed`: it could not arm its watchdog, so it may not promote.
    pub watchdog_failed: bool,
}

/// The dynamic settings `decide` uses, read from the cluster's `config`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    /// `loop_wait`: how early a scheduled switchover starts and when it is stale.
    pub loop_wait: Duration,
    /// `maximum_lag_on_failover` in bytes: a member further behind `/status` may not race.
    pub maximum_lag_on_failover: u64,
    /// `pause`: maintenance mode, no automatic promotion, demotion, start or failover.
    pub pause: bool,
    /// `check_timeline`: a member behind the cluster's timeline may not race. On unless
    /// the config says `false` (Patroni's default is off): promoting a member that never
    /// saw the cluster's latest promotion throws away what the new leader acknowledged
    /// and forks the history under a timeline number already used.
    pub check_timeline: bool,
    /// Synchronous replication (not quorum): only the members in `/sync` may promote.
    pub synchronous_mode: bool,
}

impl Settings {
    /// The settings of a `config` value, with Patroni's defaults for what it lacks.
    #[must_use]
    pub fn from_config(config: &ClusterConfig) -> Self {
        Self {
            loop_wait: Duration::from_secs(config.loop_wait()),
            maximum_lag_on_failover: config.maximum_lag_on_failover(),
            pause: config.pause(),
            check_timeline: config.check_timeline_setting() != Some(false),
            synchronous_mode: config.synchronous_mode() && !config.quorum_commit_mode(),
        }
    }
}

/// What an operator must know about a dynamic configuration this agent runs with
/// differently from what it says, one sentence each (logged when it takes effect):
/// synchronous replication, which the agent does not implement, and timeouts adjusted to
/// keep `loop_wait + 2 * retry_timeout <= ttl`.
#[must_use]
pub fn config_warnings(config: &ClusterConfig) -> Vec<String> {
    let mut warnings = Vec::new();
    if config.synchronous_mode() {
        warnings.push(
            "synchronous_mode is set in the cluster's configuration, but this agent does not \
             implement synchronous replication: commits are acknowledged before any replica \
             has them, and a failover can lose them"
                .to_owned(),
        );
    }
    let effective = [
        ("ttl", config.ttl()),
        ("loop_wait", config.loop_wait()),
        ("retry_timeout", config.retry_timeout()),
    ];
    for (key, used) in effective {
        if let Some(given) = config.data.get(key).and_then(serde_json::Value::as_u64)
            && given != used
        {
            warnings.push(format!(
                "{key} {given} in the cluster's configuration is used as {used}, so that \
                 loop_wait + 2 * retry_timeout <= ttl (ttl at least 7)"
            ));
        }
    }
    warnings
}

impl Default for Settings {
    /// Patroni's defaults (`loop_wait` 10 s, 1 MiB lag, not paused), except that the
    /// timeline is checked.
    fn default() -> Self {
        Self::from_config(&ClusterConfig::default())
    }
}

/// The highest timeline any primary of the cluster has published in its member key, over
/// every snapshot the loop saw (and `/history`'s).
///
/// A new leader publishes the timeline it is promoting to (role `promoted`) before it
/// promotes; if it is then cut off, its member key expires with its lease, before anyone
/// may race, and `/history` may not be written by then. Remembering the timeline keeps a
/// member on an older one (which never saw the promotion, or forked off before it) from
/// winning the race and promoting to the same timeline number again: two histories under
/// one timeline can neither stream from each other nor be told apart by `pg_rewind`'s
/// caller. If that leader never comes back, the cluster waits: `ha-agent ctl failover`
/// to a named candidate still promotes it (Patroni's manual failover skips the check).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TimelineHighWater {
    /// The cluster's system id when the timelines were seen: a re-initialized cluster
    /// starts again.
    system_id: Option<String>,
    /// Per member, the highest timeline it published as `primary` or `promoted`. A
    /// member that later publishes a lower timeline in another role never got there (its
    /// promotion failed, or its data was replaced): its claim drops to what it shows.
    claims: BTreeMap<String, u64>,
    /// The highest `/history` timeline seen.
    history: Option<u64>,
}

impl TimelineHighWater {
    /// Takes in a snapshot.
    pub fn absorb(&mut self, cluster: &dcs_core::ClusterState) {
        let system_id = cluster
            .initialize
            .as_ref()
            .and_then(|i| i.value.system_id())
            .map(str::to_owned);
        if system_id.is_some() && system_id != self.system_id {
            *self = Self {
                system_id,
                ..Self::default()
            };
        }
        for member in &cluster.members {
            let Some(timeline) = member.data.timeline else {
                continue;
            };
            let leads = matches!(member.data.role, Role::Primary | Role::Promoted);
            match self.claims.get_mut(&member.name) {
                Some(claim) if leads => *claim = (*claim).max(timeline),
                Some(claim) => *claim = (*claim).min(timeline),
                None if leads => {
                    self.claims.insert(member.name.clone(), timeline);
                }
                None => {}
            }
        }
        let history = cluster.history.as_ref().map(|h| h.value.next_timeline());
        self.history = self.history.max(history);
    }

    /// The highest timeline seen, if any.
    #[must_use]
    pub fn get(&self) -> Option<u64> {
        self.claims.values().copied().max().max(self.history)
    }
}
