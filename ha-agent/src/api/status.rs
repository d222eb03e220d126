//! What the agent knows about itself, as the API publishes it.

use std::time::{Duration, Instant, SystemTime};

use dcs_core::ClusterState;
use dcs_core::model::{MemberState, Role};
use serde_json::{Map, Value};

/// Everything one request is answered from: this node and the last cluster view.
///
/// Published by the HA loop after each cycle (see the [module docs](super)); requests
/// read the latest one and never wait for a newer one.
#[derive(Clone, Debug)]
pub struct Snapshot {
    /// This node.
    pub node: NodeStatus,
    /// The cluster as last read from the DCS; `None` before the first successful read
    /// and while the DCS is unreachable (Patroni's `dcs.cluster` is `None` then too).
    pub cluster: Option<ClusterState>,
}

/// What the agent knows about itself: Patroni's `get_postgresql_status()` plus the HA
/// state its health checks use.
///
/// Every field is filled in by the HA loop; nothing here is computed at request time
/// except comparisons with the cluster view and, for `/liveness`, the clock.
#[derive(Clone, Debug)]
#[allow(
    clippy::struct_excessive_bools,
    reason = "independent flags Patroni publishes one by one, not a state machine"
)]
pub struct NodeStatus {
    /// Member name (`name`), published as `patroni.name`.
    pub name: String,
    /// Cluster name (`scope`), published as `patroni.scope` and the metrics' label.
    pub scope: String,
    /// The Patroni version to publish (`"4.1.4"`-style dotted integers): other members
    /// pick code paths by it, so it must be a Patroni version, not the agent's own.
    pub version: String,
    /// PostgreSQL's state as the agent drives it (`running`, `starting`, `stopped`, ...).
    /// When the status query fails while it is `running`, publish `unknown`, as Patroni
    /// does.
    pub state: MemberState,
    /// The role: from PostgreSQL (`pg_is_in_recovery()`) when [`NodeStatus::postgres`]
    /// is known — `Primary` or `Replica`, `StandbyLeader` for the leader of a standby
    /// cluster — otherwise the agent's own idea (`Uninitialized`, `Demoted`, ...).
    pub role: Role,
    /// The result of the status query; `None` when PostgreSQL is not running or did not
    /// answer. Patroni then publishes only `state` and `role`.
    pub postgres: Option<PostgresStatus>,
    /// Whether this node holds the leader lock and its lease has not run out by the
    /// local clock (`LeaderLease::valid_until`, checked by the caller): Patroni's
    /// `Ha.is_leader()`. Decides `/primary`, `/leader` and `/standby-leader`.
    pub holds_lease: bool,
    /// Maintenance mode (`pause` in the cluster's `config`, or the local view of it).
    pub paused: bool,
    /// Effective tags (configured plus dynamic ones such as `nosync`), published as
    /// `tags` and matched by `?tag_<name>=<value>`.
    pub tags: Map<String, Value>,
    /// The `noloadbalance` tag: a replica that must not take read traffic is 503 on
    /// `/replica` and `/read-only`.
    pub noloadbalance: bool,
    /// `database_system_identifier`, once known.
    pub system_identifier: Option<String>,
    /// Some parameter change waits for a restart.
    pub pending_restart: bool,
    /// Which, as Patroni 4 publishes them: `{name: {"old_value", "new_value"}}`.
    pub pending_restart_reason: Map<String, Value>,
    /// The restart scheduled on this node, as `/patroni` shows it
    /// ([`ScheduledRestart::api_json`](crate::ha::ScheduledRestart::api_json)).
    pub scheduled_restart: Option<Map<String, Value>>,
    /// The watchdog could not be armed; peers do not let such a member promote.
    pub watchdog_failed: bool,
    /// Failsafe mode is keeping this primary up while the DCS is unreachable.
    pub failsafe_active: bool,
    /// When the DCS last answered, as Unix seconds (`dcs_last_seen`); 0 before then.
    pub dcs_last_seen: u64,
    /// `ttl` in effect: `/liveness` fails once the HA loop is `ttl` (primary) or
    /// `2 * ttl` (otherwise) late.
    pub ttl: Duration,
    /// When the HA loop is due to run next (Patroni's `next_run`); `/liveness` compares
    /// it with the request time.
    pub next_run: Instant,
}

/// The answer of PostgreSQL's status query (Patroni's `get_postgresql_status`).
#[derive(Clone, Debug, PartialEq)]
pub struct PostgresStatus {
    /// `pg_postmaster_start_time()`.
    pub postmaster_start_time: Option<SystemTime>,
    /// `server_version_num`, e.g. `160004`.
    pub server_version: u32,
    /// WAL positions, by role.
    pub xlog: Xlog,
    /// The timeline: `pg_control_checkpoint()`'s on a primary, the one received or
    /// cached on a replica.
    pub timeline: Option<u64>,
    /// `streaming` or `in archive recovery` (replicas, from the WAL receiver).
    pub replication_state: Option<String>,
    /// `pg_stat_replication` rows of the WAL senders on this node.
    pub replication: Vec<ReplicationConnection>,
}

/// WAL positions as `/patroni` publishes them under `xlog`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Xlog {
    /// Not in recovery: `{"location": pg_current_wal_lsn}`.
    Primary {
        /// The current WAL position (flush LSN), in bytes.
        location: u64,
    },
    /// In recovery.
    Replica {
        /// `pg_last_wal_receive_lsn()`, or the replayed position when nothing was
        /// received (Patroni's `row[4] or row[3]`).
        received_location: u64,
        /// `pg_last_wal_replay_lsn()`.
        replayed_location: u64,
        /// `pg_last_xact_replay_timestamp()`.
        replayed_timestamp: Option<SystemTime>,
        /// `pg_is_wal_replay_paused()`.
        paused: bool,
    },
}

/// One row of `pg_stat_replication`, as `/patroni` lists it under `replication`: what
/// the status query read ([`WalSender`](crate::postgres::WalSender)).
pub type ReplicationConnection = crate::postgres::WalSender;

impl NodeStatus {
    /// A node that knows only its names: PostgreSQL state unknown, role uninitialized,
    /// no lease, `ttl` 30 s and the loop due now. The HA loop fills in the rest.
    #[must_use]
    pub fn new(
        scope: impl Into<String>,
        name: impl Into<String>,
        version: impl Into<String>,
    ) -> Self {
        Self {
            name: name.into(),
            scope: scope.into(),
            version: version.into(),
            state: MemberState::Unknown,
            role: Role::Uninitialized,
            postgres: None,
            holds_lease: false,
            paused: false,
            tags: Map::new(),
            noloadbalance: false,
            system_identifier: None,
            pending_restart: false,
            pending_restart_reason: Map::new(),
            scheduled_restart: None,
            watchdog_failed: false,
            failsafe_active: false,
            dcs_last_seen: 0,
            ttl: Duration::from_secs(30),
            next_run: Instant::now(),
        }
    }

    /// The replayed position `/replica?lag=` compares with the leader's: 0 when not a
    /// replica or unknown, as in Patroni.
    pub(crate) fn replayed_location(&self) -> u64 {
        match self.postgres.as_ref().map(|pg| &pg.xlog) {
            Some(Xlog::Replica {
                replayed_location, ..
            }) => *replayed_location,
            _ => 0,
        }
    }
}

/// Whether `name` is a synchronous standby of `cluster` (`sync_standby` in `/patroni`).
/// Always false until the agent runs synchronous mode: its `config` never enables it.
pub(crate) fn is_sync_standby(name: &str, role: &Role, cluster: Option<&ClusterState>) -> bool {
    let Some(cluster) = cluster else {
        return false;
    };
    *role == Role::Replica
        && cluster
            .config
            .as_ref()
            .is_some_and(|c| c.value.synchronous_mode())
        && cluster.sync.as_ref().is_some_and(|s| s.value.matches(name))
}

/// No lock in the cluster view, or no view at all (`cluster_unlocked`).
pub(crate) fn cluster_unlocked(cluster: Option<&ClusterState>) -> bool {
    cluster.is_none_or(|c| c.leader.is_none())
}

/// The cluster's standby-cluster setting, from its `config`.
pub(crate) fn is_standby_cluster(cluster: Option<&ClusterState>) -> bool {
    cluster
        .and_then(|c| c.config.as_ref())
        .is_some_and(|c| c.value.is_standby_cluster())
}
