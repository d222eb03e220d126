//! `MemoryDcs`: a complete backend in process, for tests, simulations and examples.
//!
//! One [`MemoryStore`] is the server; each [`MemoryDcs`] is one client of it with its own
//! session, as an etcd client has its own lease. Time is tokio's, so a test that pauses
//! the clock (`#[tokio::test(start_paused = true)]`) can let a ttl pass in no real time.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::dcs::{
    Acquire, Capabilities, Dcs, Expiry, FencingSource, LeaderLease, Precondition, StateKey,
    WatchOutcome, lease_mismatch,
};
use crate::error::{Error, Result};
use crate::model::{ClusterState, FencingToken, MemberData, RawEntry, Version};
use crate::options::{ClientOptions, keys};

/// The shared store: the "server" that many [`MemoryDcs`] clients talk to. Cloning it
/// gives another handle to the same store.
#[derive(Clone, Debug, Default)]
pub struct MemoryStore {
    shared: Arc<Shared>,
}

#[derive(Debug, Default)]
struct Shared {
    state: Mutex<StoreState>,
    /// The store's revision after each change, so watchers wake without polling.
    changes: watch::Sender<u64>,
}

#[derive(Debug, Default)]
struct StoreState {
    /// Store-wide revision, bumped by every change, as etcd's: it makes versions and
    /// fencing tokens unique and increasing across all keys.
    revision: u64,
    keys: BTreeMap<String, Node>,
    /// Session id → the instant it expires.
    sessions: HashMap<u64, Instant>,
    next_session: u64,
}

#[derive(Debug)]
struct Node {
    value: Vec<u8>,
    created: u64,
    modified: u64,
    session: Option<u64>,
}

impl MemoryStore {
    /// An empty store.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// A new client of this store, with a session of its own.
    #[must_use]
    pub fn client(&self, options: ClientOptions) -> MemoryDcs {
        MemoryDcs {
            store: self.clone(),
            options,
            session: Mutex::new(None),
        }
    }

    /// Writes raw bytes at a full key path, as a foreign writer (a bug, an operator, an
    /// older tool) might. Not part of the contract: tests use it to check lenient parsing.
    pub fn put_raw(&self, key: &str, value: &[u8]) {
        let mut state = self.lock(Instant::now());
        let revision = state.bump();
        let created = state.keys.get(key).map_or(revision, |node| node.created);
        state.keys.insert(
            key.to_owned(),
            Node {
                value: value.to_vec(),
                created,
                modified: revision,
                session: None,
            },
        );
        self.notify(&state);
    }

    /// Every full key path in the store, sorted. For tests and debugging.
    #[must_use]
    pub fn keys(&self) -> Vec<String> {
        self.lock(Instant::now()).keys.keys().cloned().collect()
    }

    /// Locks the state after removing everything whose session expired by `now`.
    fn lock(&self, now: Instant) -> MutexGuard<'_, StoreState> {
        // A panic while holding the lock leaves the maps consistent (each change is one
        // insert or remove), so a poisoned lock is still safe to use.
        let mut state = self
            .shared
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if state.expire(now) {
            self.notify(&state);
        }
        state
    }

    fn notify(&self, state: &StoreState) {
        self.shared.changes.send_replace(state.revision);
    }
}

impl StoreState {
    fn bump(&mut self) -> u64 {
        self.revision += 1;
        self.revision
    }

    /// Removes expired sessions and the keys bound to them. Returns whether anything went.
    fn expire(&mut self, now: Instant) -> bool {
        let before = self.sessions.len();
        self.sessions.retain(|_, expires_at| *expires_at > now);
        if self.sessions.len() == before {
            return false;
        }
        let sessions = &self.sessions;
        let keys_before = self.keys.len();
        self.keys
            .retain(|_, node| node.session.is_none_or(|id| sessions.contains_key(&id)));
        if self.keys.len() != keys_before {
            self.bump();
        }
        true
    }

    fn version(&self, key: &str) -> Option<Version> {
        self.keys.get(key).map(|node| Version::new(node.modified))
    }

    fn earliest_expiry(&self) -> Option<Instant> {
        self.sessions.values().min().copied()
    }
}

/// One client of a [`MemoryStore`]: one member of one cluster.
#[derive(Debug)]
pub struct MemoryDcs {
    store: MemoryStore,
    options: ClientOptions,
    /// This client's session, created on first use and again after it expired, like an
    /// etcd lease that is re-granted after expiry.
    session: Mutex<Option<u64>>,
}

impl MemoryDcs {
    /// The store this client talks to.
    #[must_use]
    pub fn store(&self) -> &MemoryStore {
        &self.store
    }

    /// Who this client is.
    #[must_use]
    pub fn options(&self) -> &ClientOptions {
        &self.options
    }

    fn ttl(&self) -> Duration {
        self.options.timing().ttl()
    }

    fn key(&self, relative: &str) -> String {
        self.options.path().key(relative)
    }

    /// This client's live session, created if it has none, kept alive until `sent_at + ttl`.
    fn keep_alive(&self, state: &mut StoreState, sent_at: Instant) -> u64 {
        let mut session = self
            .session
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let id = match *session {
            Some(id) if state.sessions.contains_key(&id) => id,
            _ => {
                state.next_session += 1;
                let id = state.next_session;
                *session = Some(id);
                id
            }
        };
        state.sessions.insert(id, sent_at + self.ttl());
        id
    }

    /// The session this client holds now, if it is still alive.
    fn live_session(&self, state: &StoreState) -> Option<u64> {
        let session = *self
            .session
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        session.filter(|id| state.sessions.contains_key(id))
    }

    fn leader_entry(&self, state: &StoreState) -> Option<crate::model::Leader> {
        let key = self.key(keys::LEADER);
        let node = state.keys.get(&key)?;
        ClusterState::from_entries([raw_entry(keys::LEADER, node)]).leader
    }

    /// Whether `lease` is the holding the store shows now.
    fn holds(&self, state: &StoreState, lease: &LeaderLease) -> Result<()> {
        let leader = self.leader_entry(state);
        let session = self.live_session(state).map(|id| id.to_string());
        match &leader {
            Some(found)
                if found.name == lease.name()
                    && found.token == lease.token()
                    && found.owner.as_deref() == Some(lease.owner())
                    && session.as_deref() == Some(lease.owner()) =>
            {
                Ok(())
            }
            _ => Err(lease_mismatch(lease, leader.as_ref())),
        }
    }

    /// Whether a watched key of this scope differs from `since`.
    fn watched_keys_changed(&self, state: &StoreState, since: &ClusterState) -> bool {
        let watched = [
            (keys::LEADER, since.leader.as_ref().map(|l| &l.version)),
            (keys::CONFIG, since.config.as_ref().map(|v| &v.version)),
            (keys::FAILOVER, since.failover.as_ref().map(|v| &v.version)),
            (keys::SYNC, since.sync.as_ref().map(|v| &v.version)),
        ];
        watched
            .into_iter()
            .any(|(key, seen)| state.version(&self.key(key)).as_ref() != seen)
    }
}

fn raw_entry(relative: &str, node: &Node) -> RawEntry {
    RawEntry {
        key: relative.to_owned(),
        value: node.value.clone(),
        version: Version::new(node.modified),
        owner: node.session.map(|id| id.to_string()),
        created: node.created,
    }
}

#[async_trait]
impl Dcs for MemoryDcs {
    async fn cluster(&self) -> Result<ClusterState> {
        let state = self.store.lock(Instant::now());
        let path = self.options.path();
        let entries = state
            .keys
            .range(path.prefix().to_owned()..)
            .map_while(|(key, node)| Some(raw_entry(path.relative(key)?, node)));
        Ok(ClusterState::from_entries(entries))
    }

    async fn try_acquire_leader(&self) -> Result<Acquire> {
        let sent_at = Instant::now();
        let mut state = self.store.lock(sent_at);
        if let Some(holder) = self.leader_entry(&state) {
            let ours = self.live_session(&state).map(|id| id.to_string());
            if holder.name != self.options.name() || holder.owner.is_none() || holder.owner != ours
            {
                return Ok(Acquire::HeldBy(holder));
            }
            // Our own key under our live session: adopt it (see the trait docs).
            self.keep_alive(&mut state, sent_at);
            return Ok(Acquire::Won(LeaderLease::new(
                holder.name,
                holder.token,
                holder.version,
                ours.unwrap_or_default(),
                sent_at + self.ttl(),
            )));
        }
        let session = self.keep_alive(&mut state, sent_at);
        let revision = state.bump();
        state.keys.insert(
            self.key(keys::LEADER),
            Node {
                value: self.options.name().as_bytes().to_vec(),
                created: revision,
                modified: revision,
                session: Some(session),
            },
        );
        self.store.notify(&state);
        Ok(Acquire::Won(LeaderLease::new(
            self.options.name().to_owned(),
            FencingToken(revision),
            Version::new(revision),
            session.to_string(),
            sent_at + self.ttl(),
        )))
    }

    async fn renew_leader(&self, lease: &LeaderLease) -> Result<LeaderLease> {
        let sent_at = Instant::now();
        let mut state = self.store.lock(sent_at);
        self.holds(&state, lease)?;
        self.keep_alive(&mut state, sent_at);
        let version = state
            .version(&self.key(keys::LEADER))
            .unwrap_or_else(|| lease.version().clone());
        Ok(lease.renewed(sent_at + self.ttl(), version))
    }

    async fn release_leader(&self, lease: LeaderLease) -> Result<()> {
        let mut state = self.store.lock(Instant::now());
        self.holds(&state, &lease)?;
        state.keys.remove(&self.key(keys::LEADER));
        state.bump();
        self.store.notify(&state);
        Ok(())
    }

    async fn publish_member(&self, data: &MemberData) -> Result<Version> {
        let sent_at = Instant::now();
        let mut state = self.store.lock(sent_at);
        let session = self.keep_alive(&mut state, sent_at);
        let key = self.key(&format!("{}{}", keys::MEMBERS, self.options.name()));
        let value = data.to_json().into_bytes();
        if let Some(node) = state.keys.get(&key)
            && node.value == value
            && node.session == Some(session)
        {
            // Unchanged: the keep-alive above is all a publish needs, and skipping the
            // write spares watchers a wake-up (Patroni skips it too).
            return Ok(Version::new(node.modified));
        }
        let revision = state.bump();
        let created = state.keys.get(&key).map_or(revision, |node| node.created);
        state.keys.insert(
            key,
            Node {
                value,
                created,
                modified: revision,
                session: Some(session),
            },
        );
        self.store.notify(&state);
        Ok(Version::new(revision))
    }

    async fn write(
        &self,
        key: StateKey,
        value: &str,
        precondition: Precondition,
    ) -> Result<Version> {
        let mut state = self.store.lock(Instant::now());
        let full = self.key(key.as_str());
        let current = state.version(&full);
        if !precondition.holds_for(current.as_ref()) {
            return Err(Error::conflict(
                key.as_str(),
                format!("expected {precondition:?}, found {current:?}"),
            ));
        }
        let revision = state.bump();
        let created = state.keys.get(&full).map_or(revision, |node| node.created);
        state.keys.insert(
            full,
            Node {
                value: value.as_bytes().to_vec(),
                created,
                modified: revision,
                session: None,
            },
        );
        self.store.notify(&state);
        Ok(Version::new(revision))
    }

    async fn delete(&self, key: StateKey, expected: Option<&Version>) -> Result<()> {
        let mut state = self.store.lock(Instant::now());
        let full = self.key(key.as_str());
        let current = state.version(&full);
        if let Some(expected) = expected
            && current.as_ref() != Some(expected)
        {
            return Err(Error::conflict(
                key.as_str(),
                format!("expected version {expected}, found {current:?}"),
            ));
        }
        if state.keys.remove(&full).is_some() {
            state.bump();
            self.store.notify(&state);
        }
        Ok(())
    }

    async fn delete_cluster(&self) -> Result<()> {
        let mut state = self.store.lock(Instant::now());
        let prefix = self.options.path().prefix();
        let before = state.keys.len();
        state.keys.retain(|key, _| !key.starts_with(prefix));
        if state.keys.len() != before {
            state.bump();
            self.store.notify(&state);
        }
        Ok(())
    }

    async fn watch(&self, since: &ClusterState, timeout: Duration) -> Result<WatchOutcome> {
        let deadline = Instant::now() + timeout;
        // Subscribe before looking, so a change between the look and the wait still wakes us.
        let mut changes = self.store.shared.changes.subscribe();
        loop {
            let next_expiry = {
                let state = self.store.lock(Instant::now());
                if self.watched_keys_changed(&state, since) {
                    return Ok(WatchOutcome::Changed);
                }
                state.earliest_expiry()
            };
            if Instant::now() >= deadline {
                return Ok(WatchOutcome::TimedOut);
            }
            // Expiry happens lazily, on the next look at the store, so wake up at the
            // earliest session expiry too: a leader that dies must wake its watchers.
            let wake_at = next_expiry.map_or(deadline, |at| at.min(deadline));
            tokio::select! {
                _ = changes.changed() => {}
                () = tokio::time::sleep_until(wake_at) => {}
            }
        }
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            expiry: Expiry::ServerClock,
            linearizable_reads: true,
            atomic_snapshot: true,
            fencing: FencingSource::CreateRevision,
        }
    }
}
