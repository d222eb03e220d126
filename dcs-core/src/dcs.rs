//! The contract: the [`Dcs`] trait and the values it trades in.

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use tokio::time::Instant;

use crate::error::{Error, Result};
use crate::model::{
    ClusterConfig, ClusterState, Failover, Failsafe, FencingToken, Leader, MemberData, Status,
    SyncState, TimelineHistory, Version,
};

/// A distributed configuration store holding one cluster's state and its leader lock.
///
/// One value of this trait is one *client*: one member (`ClientOptions::name`) of one
/// cluster (`ClientOptions::path`), with one lease, session or ephemeral-node owner on the
/// server, to which the client's leader key and member key are bound. Hold it as
/// `Arc<dyn Dcs>`; conveniences live in [`DcsExt`], which every `Dcs` has.
///
/// # Contract
///
/// Every backend (memory, etcd, ZooKeeper, Consul, Kubernetes) keeps these promises, and the
/// conformance suite in `dcs-tests` checks each of them against each backend.
///
/// - **Exclusive lock.** [`try_acquire_leader`](Dcs::try_acquire_leader) creates the
///   `leader` key only if it is absent, atomically. No method ever overwrites a leader key
///   held by someone else, or writes it unconditionally. Losing the race is a value,
///   [`Acquire::HeldBy`], not an error. (A key bound to the caller's own current lease
///   or session is the caller's own: it is adopted, see
///   [`try_acquire_leader`](Dcs::try_acquire_leader).)
/// - **Fencing.** Every [`LeaderLease`] carries a [`FencingToken`] that is strictly greater
///   than the token of every earlier holding of the same scope.
/// - **Renewal is a compare-and-set on ownership.** [`renew_leader`](Dcs::renew_leader)
///   succeeds only if the key still holds our name, is bound to our lease/session and is the
///   same holding (same token). Otherwise it fails with [`Error::LeaseLost`]; an unreachable
///   store is [`Error::Unavailable`] or [`Error::Timeout`] instead, never `LeaseLost`.
/// - **Release consumes the lease** and deletes the key only if it is still this holding;
///   a stale lease can neither renew nor release.
/// - **Liveness of TTL-bound keys.** The leader key and the member key are bound to the
///   client's TTL (`Timing::ttl`). Each successful `try_acquire_leader`, `renew_leader` or
///   `publish_member` keeps both alive until at least `sent_at + ttl`; when a client makes
///   none of these calls for longer than `ttl` (it died, hung, or was cut off), the store
///   removes both keys by itself after `ttl` (observer-clock backends: once a reader has
///   seen no renewal for `ttl`).
/// - **Validity from the send time.** [`LeaderLease::valid_until`] is `sent_at + ttl`, where
///   `sent_at` is the *monotonic* instant at which the successful request was sent, not
///   when its answer arrived. The server cannot expire the key before that instant, since
///   it started counting only once it received the request.
/// - **Compare-and-set writes.** [`write`](Dcs::write) with [`Precondition::Version`] or
///   [`Precondition::Absent`] fails with [`Error::Conflict`] when the precondition does not
///   hold, and the returned [`Version`] is the one the next snapshot shows.
/// - **Snapshot.** [`cluster`](Dcs::cluster) returns every key of the scope with its value
///   and version, as one consistent read where [`Capabilities::atomic_snapshot`] says so.
///   Values another writer left malformed read as absent or unknown, never as an error.
/// - **Watch.** [`watch`](Dcs::watch) returns as soon as the `leader`, `config`, `failover`
///   or `sync` key differs from the snapshot given (created, changed, deleted or expired),
///   and at the latest after its timeout. It may wake early; it never sleeps through a change.
/// - **Deadlines.** Every call except `watch` finishes within the client's
///   `Timing::retry_timeout`, with [`Error::Timeout`] if the store did not answer.
/// - **Isolation.** A client reads and writes only the keys under its own cluster path;
///   [`delete_cluster`](Dcs::delete_cluster) removes all of them and nothing of another
///   scope, even one whose name shares a prefix.
///
/// # Safety argument
///
/// *Claim*: at any instant of real time, at most one member believes it holds a valid
/// leader lease of a scope, provided every holder stops acting as leader once
/// [`LeaderLease::is_valid`] turns false or renewal reports [`Error::LeaseLost`].
///
/// ## Guarantees
/// - A lease is valid until `sent_at + ttl` on the holder's monotonic clock. The store
///   received the request after `sent_at` and starts its own `ttl` countdown no earlier, so
///   it removes the key no earlier than the holder's lease expires, and the next holder's
///   creation happens after that removal.
/// - Creation is create-if-absent and renewal is compare-and-set on the holding, so two
///   holdings never overlap in the store, and each has a greater fencing token than the one
///   before. Anything that checks tokens refuses a stale holder even if the assumptions
///   below fail.
/// - A holder that cannot reach the store learns nothing false: it gets a retryable error
///   and keeps its role only until `valid_until`, which it knows without the store.
///
/// ## Assumptions
/// - Clock *rates* on the holder and the store differ by a negligible amount over one ttl
///   (no assumption about wall clocks, which the contract never reads).
/// - The holder acts on expiry promptly: the agent's dead-man task stops PostgreSQL before
///   `valid_until`, independently of its main loop, and a watchdog backs it up.
/// - The store itself is linearizable for the lock key (etcd, ZooKeeper, Consul and the
///   Kubernetes API server are; [`Capabilities`] says what else holds).
///
/// ## Caveats
/// - A process that is paused between checking `is_valid` and acting (a long GC pause, a
///   SIGSTOP) can act after its lease expired. Only fencing tokens checked by the resource
///   close this gap; the agent keeps the window small and the chaos tests measure it.
/// - On observer-clock backends (Kubernetes, [`Expiry::ObserverClock`]) expiry is decided
///   by the next candidate's own clock from the time it last saw the record change, so a
///   candidate that starts watching late waits longer, never shorter.
/// - A write that failed with a retryable error may still have been applied; re-read
///   before deciding.
#[async_trait]
pub trait Dcs: Send + Sync + fmt::Debug {
    /// One snapshot of the cluster: every key of the scope with its version.
    async fn cluster(&self) -> Result<ClusterState>;

    /// Creates the `leader` key with this member's name, bound to this client's TTL, if and
    /// only if it is absent. Returns the holder instead when it is present, even when the
    /// holder is this member under an earlier lease or session (which must expire first).
    ///
    /// One case is adopted rather than refused: a key holding this member's name *bound to
    /// this client's current lease or session*. Only this client can have written it — an
    /// earlier acquire whose answer was lost — and refusing it would leave a lock that
    /// nobody renews yet this client's own member key keeps alive. It is returned as
    /// [`Acquire::Won`] with that holding's token.
    async fn try_acquire_leader(&self) -> Result<Acquire>;

    /// Extends the lease, returning it with a new [`LeaderLease::valid_until`]. Fails with
    /// [`Error::LeaseLost`] when the key is not this holding any more.
    async fn renew_leader(&self, lease: &LeaderLease) -> Result<LeaderLease>;

    /// Gives the lock up: deletes the `leader` key if, and only if, it is still this
    /// holding, so that another member can take it at once. A stale lease deletes nothing
    /// and reports [`Error::LeaseLost`].
    async fn release_leader(&self, lease: LeaderLease) -> Result<()>;

    /// Writes `members/<name>` with Patroni's member JSON, bound to this client's TTL, and
    /// keeps the client's TTL-bound keys alive.
    async fn publish_member(&self, data: &MemberData) -> Result<Version>;

    /// Writes one persistent key, if `precondition` holds; returns the key's new version.
    async fn write(
        &self,
        key: StateKey,
        value: &str,
        precondition: Precondition,
    ) -> Result<Version>;

    /// Deletes one persistent key: unconditionally when `expected` is `None` (deleting an
    /// absent key succeeds), else only if the key is at that version.
    async fn delete(&self, key: StateKey, expected: Option<&Version>) -> Result<()>;

    /// Deletes every key of the scope, and nothing outside it.
    async fn delete_cluster(&self) -> Result<()>;

    /// Waits until the `leader`, `config`, `failover` or `sync` key differs from `since`, or
    /// until `timeout` passes. Not bounded by `retry_timeout`: the timeout is the caller's
    /// sleep (typically `loop_wait`).
    async fn watch(&self, since: &ClusterState, timeout: Duration) -> Result<WatchOutcome>;

    /// What this backend guarantees beyond the contract.
    fn capabilities(&self) -> Capabilities;
}

/// The outcome of [`Dcs::try_acquire_leader`].
#[derive(Debug)]
#[must_use = "a won lease must be renewed or released"]
pub enum Acquire {
    /// The key was absent and is now ours.
    Won(LeaderLease),
    /// Someone holds the key.
    HeldBy(Leader),
}

/// Proof of holding the leader lock, until [`LeaderLease::valid_until`].
///
/// Not `Clone`: [`Dcs::release_leader`] consumes it, so a released lease cannot be renewed
/// or released again by mistake. A renewed lease replaces the old one; the old value stays
/// usable only to show that stale leases are refused.
#[derive(Debug, PartialEq, Eq)]
pub struct LeaderLease {
    name: String,
    token: FencingToken,
    version: Version,
    owner: String,
    valid_until: Instant,
}

impl LeaderLease {
    /// Builds a lease. For backends: `owner` is the backend's lease, session or holder
    /// identity the key is bound to; `valid_until` is `sent_at + ttl` of the request that
    /// created or last confirmed the holding.
    #[must_use]
    pub fn new(
        name: String,
        token: FencingToken,
        version: Version,
        owner: String,
        valid_until: Instant,
    ) -> Self {
        Self {
            name,
            token,
            version,
            owner,
            valid_until,
        }
    }

    /// The same holding, confirmed again: valid until `valid_until` (never earlier than
    /// before) with the key now at `version`. For backends.
    #[must_use]
    pub fn renewed(&self, valid_until: Instant, version: Version) -> Self {
        Self {
            name: self.name.clone(),
            token: self.token,
            version,
            owner: self.owner.clone(),
            valid_until: valid_until.max(self.valid_until),
        }
    }

    /// The member name in the key.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The fencing token of this holding.
    #[must_use]
    pub fn token(&self) -> FencingToken {
        self.token
    }

    /// The version of the `leader` key as of the last acquire or renewal.
    #[must_use]
    pub fn version(&self) -> &Version {
        &self.version
    }

    /// The backend's lease, session or holder identity the key is bound to.
    #[must_use]
    pub fn owner(&self) -> &str {
        &self.owner
    }

    /// The monotonic instant until which no one else can hold the lock.
    #[must_use]
    pub fn valid_until(&self) -> Instant {
        self.valid_until
    }

    /// Whether the lease is still valid now.
    #[must_use]
    pub fn is_valid(&self) -> bool {
        Instant::now() < self.valid_until
    }
}

/// A persistent key of a cluster, as [`Dcs::write`] and [`Dcs::delete`] take it. The
/// TTL-bound keys (`leader`, `members/<name>`) have their own methods.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum StateKey {
    /// `initialize`: written create-only in the bootstrap race.
    Initialize,
    /// `config`: compare-and-set.
    Config,
    /// `failover`: compare-and-set.
    Failover,
    /// `sync`: compare-and-set.
    Sync,
    /// `history`: written by the leader.
    History,
    /// `status`: written by the leader.
    Status,
    /// `failsafe`: written by the leader.
    Failsafe,
}

impl StateKey {
    /// Every persistent key.
    pub const ALL: [StateKey; 7] = [
        Self::Initialize,
        Self::Config,
        Self::Failover,
        Self::Sync,
        Self::History,
        Self::Status,
        Self::Failsafe,
    ];

    /// The key relative to the scope, as Patroni names it.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        use crate::options::keys;
        match self {
            Self::Initialize => keys::INITIALIZE,
            Self::Config => keys::CONFIG,
            Self::Failover => keys::FAILOVER,
            Self::Sync => keys::SYNC,
            Self::History => keys::HISTORY,
            Self::Status => keys::STATUS,
            Self::Failsafe => keys::FAILSAFE,
        }
    }
}

impl fmt::Display for StateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// When a [`Dcs::write`] may happen.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Precondition {
    /// Always (plain write).
    Any,
    /// Only if the key does not exist (create-only).
    Absent,
    /// Only if the key exists at this version (compare-and-set).
    Version(Version),
}

impl Precondition {
    /// Compare-and-set against the version a snapshot showed, or create-only when the
    /// snapshot showed no key.
    #[must_use]
    pub fn from_snapshot(version: Option<&Version>) -> Self {
        version.map_or(Self::Absent, |v| Self::Version(v.clone()))
    }

    /// Whether a key currently at `current` (`None`: absent) satisfies the precondition.
    /// For backends that check preconditions themselves.
    #[must_use]
    pub fn holds_for(&self, current: Option<&Version>) -> bool {
        match self {
            Self::Any => true,
            Self::Absent => current.is_none(),
            Self::Version(expected) => current == Some(expected),
        }
    }
}

/// Why [`Dcs::watch`] returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WatchOutcome {
    /// A watched key differs from the snapshot: take a new one and decide again.
    Changed,
    /// Nothing changed before the timeout.
    TimedOut,
}

/// How a backend's TTL-bound keys expire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expiry {
    /// The server removes them on its own clock (etcd leases, ZooKeeper sessions, Consul
    /// sessions, MemoryDcs).
    ServerClock,
    /// Nothing removes them; each reader decides expiry on its own clock from when it last
    /// saw them change (Kubernetes).
    ObserverClock,
}

/// What the fencing token is in this store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FencingSource {
    /// A store-wide revision at which the leader key was created (etcd `create_revision`,
    /// MemoryDcs).
    CreateRevision,
    /// ZooKeeper's `czxid` of the leader node.
    CreateZxid,
    /// Consul's index of the key at acquisition.
    ModifyIndex,
    /// A transitions counter written with compare-and-set (Kubernetes).
    TransitionCounter,
}

/// What a backend guarantees beyond the contract, so that tests and callers read it
/// instead of guessing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Capabilities {
    /// How TTL-bound keys expire.
    pub expiry: Expiry,
    /// Whether a snapshot reflects every write that completed before it started.
    pub linearizable_reads: bool,
    /// Whether a snapshot is one consistent read of all keys (one revision), rather than
    /// several reads that another writer can interleave with.
    pub atomic_snapshot: bool,
    /// What the fencing token is.
    pub fencing: FencingSource,
}

/// Conveniences over [`Dcs`], in Patroni's terms. Every `Dcs` has them; implementors must
/// not implement this trait themselves.
#[async_trait]
pub trait DcsExt: Dcs {
    /// The bootstrap race: creates `initialize` with `""` if, and only if, it is absent.
    /// Exactly one of several racing members gets `Ok`; the others get
    /// [`Error::Conflict`].
    async fn initialize(&self) -> Result<Version> {
        self.write(StateKey::Initialize, "", Precondition::Absent)
            .await
    }

    /// Records the database system identifier once bootstrap succeeded.
    async fn set_system_id(&self, system_id: &str, expected: Precondition) -> Result<Version> {
        self.write(StateKey::Initialize, system_id, expected).await
    }

    /// Deletes `initialize` after a failed bootstrap, so another member can try.
    async fn cancel_initialization(&self) -> Result<()> {
        self.delete(StateKey::Initialize, None).await
    }

    /// Writes `config`.
    async fn set_config(&self, config: &ClusterConfig, expected: Precondition) -> Result<Version> {
        self.write(StateKey::Config, &config.to_json(), expected)
            .await
    }

    /// Writes `failover` (a switchover or failover request).
    async fn set_failover(&self, failover: &Failover, expected: Precondition) -> Result<Version> {
        self.write(StateKey::Failover, &failover.to_json(), expected)
            .await
    }

    /// Writes `sync`.
    async fn set_sync(&self, sync: &SyncState, expected: Precondition) -> Result<Version> {
        self.write(StateKey::Sync, &sync.to_json(), expected).await
    }

    /// Writes `status` (leader only).
    async fn write_status(&self, status: &Status) -> Result<Version> {
        self.write(StateKey::Status, &status.to_json(), Precondition::Any)
            .await
    }

    /// Writes `history` (leader only).
    async fn write_history(&self, history: &TimelineHistory) -> Result<Version> {
        self.write(StateKey::History, &history.to_json(), Precondition::Any)
            .await
    }

    /// Writes `failsafe` (leader only).
    async fn write_failsafe(&self, failsafe: &Failsafe) -> Result<Version> {
        self.write(StateKey::Failsafe, &failsafe.to_json(), Precondition::Any)
            .await
    }

    /// Acquires the lock, or returns `None` when someone else holds it; a convenience for
    /// callers that do not need the holder.
    async fn acquire_if_free(&self) -> Result<Option<LeaderLease>> {
        Ok(match self.try_acquire_leader().await? {
            Acquire::Won(lease) => Some(lease),
            Acquire::HeldBy(_) => None,
        })
    }
}

impl<T: Dcs + ?Sized> DcsExt for T {}

/// The error a backend returns when a lease does not match the stored key, with the
/// reason spelled the same way by every backend.
#[must_use]
pub fn lease_mismatch(lease: &LeaderLease, found: Option<&Leader>) -> Error {
    Error::lease_lost(match found {
        None => format!("the leader key is gone (held by {} before)", lease.name()),
        Some(leader) if leader.name != lease.name() => {
            format!("the leader key is now held by {}", leader.name)
        }
        Some(leader) if leader.token != lease.token() => format!(
            "the leader key was re-acquired (token {} instead of {})",
            leader.token,
            lease.token()
        ),
        Some(_) => "the leader key is bound to another lease".to_owned(),
    })
}
