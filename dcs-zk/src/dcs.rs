//! [`ZooKeeperDcs`]: the contract on ZooKeeper sessions, ephemeral nodes and znode versions.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use dcs_core::dcs::lease_mismatch;
use dcs_core::error::with_deadline;
use dcs_core::model::RawEntry;
use dcs_core::options::keys;
use dcs_core::{
    Acquire, Capabilities, ClientOptions, ClusterState, Dcs, Error, Expiry, FencingSource, Leader,
    LeaderLease, MemberData, Precondition, Result, StateKey, Version, WatchOutcome,
};
use tokio::sync::Mutex as AsyncMutex;
use tokio::time::Instant;
use zookeeper_client::{
    self as zk, Acl, Acls, Client, CreateMode, CreateOptions, MultiReadResult, Stat, TlsOptions,
};

use crate::config::ZooKeeperConfig;
use crate::error::{session_ended, to_dcs};
use crate::session::{LiveSession, Opener, Slot, close_session, owner_text};

/// The keys a snapshot reads besides the members, relative to the scope.
const FIXED_KEYS: [&str; 9] = [
    keys::INITIALIZE,
    keys::CONFIG,
    keys::LEADER,
    keys::FAILOVER,
    keys::SYNC,
    keys::HISTORY,
    keys::STATUS,
    keys::LEGACY_OPTIME,
    keys::FAILSAFE,
];

/// How often a snapshot re-reads when the member list changed under it, before it settles
/// for member data read just after the rest.
const SNAPSHOT_ATTEMPTS: usize = 4;

/// How often one call retries after losing a race on a node (created or deleted between
/// two requests), before it reports a conflict.
const RACE_ATTEMPTS: usize = 4;

/// One client of a ZooKeeper ensemble: one member of one cluster, on one session at a time.
///
/// See the [crate docs](crate) for the guarantees, the session guard and the layout.
#[derive(Debug)]
pub struct ZooKeeperDcs {
    options: ClientOptions,
    opener: Opener,
    acls: Vec<Acl>,
    paths: Paths,
    session: Slot,
    /// Member names the last snapshot found, so the next one reads them in the same request.
    members_hint: Mutex<Vec<String>>,
    /// The member value this client last wrote, so an unchanged publish only checks it.
    published: Mutex<Option<Published>>,
    /// Whether the server answers multi-read (3.6+); cleared the first time it does not.
    multi_read: AtomicBool,
}

#[derive(Clone, Debug)]
struct Published {
    session: i64,
    value: String,
    version: i32,
}

/// Full paths of this client's nodes.
#[derive(Debug)]
struct Paths {
    /// `/service/<scope>`, without the trailing `/`.
    scope: String,
    leader: String,
    members: String,
    member: String,
    /// The paths whose events wake a watch.
    watched: Arc<[String]>,
}

impl ZooKeeperDcs {
    /// A client of the ensemble in `config`, for the member and cluster in `options`.
    ///
    /// Reads the TLS files named in `config` now; connects lazily, on the first call, so a
    /// client can be built while ZooKeeper is down.
    pub async fn connect(config: &ZooKeeperConfig, options: ClientOptions) -> Result<Self> {
        config.check()?;
        let mut connector = Client::connector();
        if config.use_ssl {
            connector = connector.with_tls(tls_options(config).await?);
        }
        for (scheme, credential) in &config.auth_data {
            connector = connector.with_auth(scheme, credential.as_bytes());
        }
        let path = options.path();
        let scope = path.prefix().trim_end_matches('/').to_owned();
        let watched = [keys::LEADER, keys::CONFIG, keys::FAILOVER, keys::SYNC]
            .map(|key| path.key(key))
            .to_vec();
        let paths = Paths {
            leader: path.key(keys::LEADER),
            members: path.key(keys::MEMBERS.trim_end_matches('/')),
            member: path.key(&format!("{}{}", keys::MEMBERS, options.name())),
            watched: watched.into(),
            scope,
        };
        Ok(Self {
            acls: config.acls()?,
            opener: Opener {
                connector,
                connect_string: config.connect_string(),
                secure: config.use_ssl,
            },
            paths,
            options,
            session: Arc::new(AsyncMutex::new(None)),
            members_hint: Mutex::new(Vec::new()),
            published: Mutex::new(None),
            multi_read: AtomicBool::new(true),
        })
    }

    /// Who this client is.
    #[must_use]
    pub fn options(&self) -> &ClientOptions {
        &self.options
    }

    /// Ends this client's session now, if it has one: the server deletes its leader and
    /// member nodes at once, so another member can take over without waiting for ttl.
    /// Dropping the client does *not* do this (it behaves like a dead process: the session
    /// expires after its timeout).
    pub async fn close(self) -> Result<()> {
        let session = self.session.lock().await.take();
        match session {
            None => Ok(()),
            Some(session) => {
                with_deadline(
                    "close",
                    self.retry_timeout(),
                    close_session(session, &self.opener),
                )
                .await
            }
        }
    }

    /// The id of this client's current session, as the `owner` of its nodes; `None` before
    /// the first call or after the session ended.
    pub async fn session_owner(&self) -> Option<String> {
        let session = self.session.lock().await;
        session.as_ref().filter(|s| !s.is_over()).map(|s| s.owner())
    }

    fn ttl(&self) -> Duration {
        self.options.timing().ttl()
    }

    fn retry_timeout(&self) -> Duration {
        self.options.timing().retry_timeout()
    }

    fn key_path(&self, key: StateKey) -> String {
        self.options.path().key(key.as_str())
    }

    fn create_options(&self, mode: CreateMode) -> CreateOptions<'_> {
        if self.acls.is_empty() {
            mode.with_acls(Acls::anyone_all())
        } else {
            mode.with_acls(Acls::new(&self.acls))
        }
    }

    /// `sent_at + ttl`, or `sent_at + session timeout` if the server granted less than ttl.
    fn valid_until(&self, session: &LiveSession, sent_at: Instant) -> Instant {
        sent_at + self.ttl().min(session.timeout)
    }

    /// The current session, opened if there is none or it ended.
    async fn session(&self) -> Result<Arc<LiveSession>> {
        let mut slot = self.session.lock().await;
        if let Some(session) = slot.as_ref()
            && !session.is_over()
        {
            return Ok(Arc::clone(session));
        }
        let session = LiveSession::open(&self.opener, self.ttl(), &self.session).await?;
        *slot = Some(Arc::clone(&session));
        Ok(session)
    }

    /// A connected session: waits out a disconnection (bounded by the caller's deadline),
    /// opens a new session if the current one ended.
    async fn ready(&self) -> Result<Arc<LiveSession>> {
        loop {
            let session = self.session().await?;
            if session.connected().await {
                return Ok(session);
            }
        }
    }

    /// The session a lease was taken on, connected; [`Error::LeaseLost`] if it ended.
    async fn lease_session(&self, lease: &LeaderLease) -> Result<Arc<LiveSession>> {
        let current = self.session.lock().await.clone();
        let session = match current {
            Some(session) if session.owner() == lease.owner() && !session.is_over() => session,
            _ => {
                return Err(Error::lease_lost(format!(
                    "the ZooKeeper session {} that held the leader node ended",
                    lease.owner()
                )));
            }
        };
        // Disconnected is not lost: wait for a reconnection within the call's deadline.
        if session.connected().await {
            Ok(session)
        } else {
            Err(Error::lease_lost(format!(
                "the ZooKeeper session {} that held the leader node expired",
                lease.owner()
            )))
        }
    }

    /// Creates `path`, creating its missing parents as persistent nodes (Patroni's makepath).
    async fn create(
        &self,
        client: &Client,
        path: &str,
        data: &[u8],
        mode: CreateMode,
    ) -> Result<Stat, zk::Error> {
        let options = self.create_options(mode);
        let mut attempt = 0;
        loop {
            match client.create(path, data, &options).await {
                Err(zk::Error::NoNode) if attempt < RACE_ATTEMPTS => {
                    attempt += 1;
                    let parent = &path[..path.rfind('/').unwrap_or(0)];
                    match client
                        .mkdir(parent, &self.create_options(CreateMode::Persistent))
                        .await
                    {
                        Ok(()) | Err(zk::Error::NodeExists) => {}
                        Err(e) => return Err(e),
                    }
                }
                result => return result.map(|(stat, _)| stat),
            }
        }
    }

    fn lease(&self, session: &LiveSession, stat: &Stat, sent_at: Instant) -> LeaderLease {
        LeaderLease::new(
            self.options.name().to_owned(),
            dcs_core::FencingToken(stamp(stat.czxid)),
            Version::new(stat.version),
            session.owner(),
            self.valid_until(session, sent_at),
        )
    }

    async fn acquire_once(
        &self,
        session: &LiveSession,
        sent_at: Instant,
    ) -> Result<Option<Acquire>, zk::Error> {
        let name = self.options.name().as_bytes();
        match self
            .create(
                &session.client,
                &self.paths.leader,
                name,
                CreateMode::Ephemeral,
            )
            .await
        {
            Ok(stat) => Ok(Some(Acquire::Won(self.lease(session, &stat, sent_at)))),
            Err(zk::Error::NodeExists) => {
                let (data, stat) = match session.client.get_data(&self.paths.leader).await {
                    Ok(found) => found,
                    // Released in between: race again.
                    Err(zk::Error::NoNode) => return Ok(None),
                    Err(e) => return Err(e),
                };
                let holder = parse_leader(data, &stat);
                if stat.ephemeral_owner == session.id() && holder.name == self.options.name() {
                    // Only this client creates ephemeral nodes on its session, so this node
                    // is the outcome of an earlier acquire of ours whose answer was lost
                    // (connection loss, deadline). The session proves the holding; adopting
                    // it is what keeps an orphan lock from blocking the cluster.
                    return Ok(Some(Acquire::Won(self.lease(session, &stat, sent_at))));
                }
                Ok(Some(Acquire::HeldBy(holder)))
            }
            Err(e) => Err(e),
        }
    }

    /// Reads the leader node after a `sync`, in one round trip (both requests are sent
    /// before either answer is awaited, and a session's requests are served in order).
    async fn read_leader_synced(&self, client: &Client) -> Result<Option<Leader>, zk::Error> {
        let sync = client.sync(&self.paths.leader);
        let read = client.get_data(&self.paths.leader);
        let read = read.await;
        match sync.await {
            Ok(()) | Err(zk::Error::NoNode) => {}
            Err(e) => return Err(e),
        }
        match read {
            Ok((data, stat)) => Ok(Some(parse_leader(data, &stat))),
            Err(zk::Error::NoNode) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Checks that the leader node is still the holding of `lease` on `session`.
    async fn check_holding(&self, session: &LiveSession, lease: &LeaderLease) -> Result<Leader> {
        let found = self
            .read_leader_synced(&session.client)
            .await
            .map_err(|e| lease_error(e, lease))?;
        match found {
            Some(leader)
                if leader.name == lease.name()
                    && leader.token == lease.token()
                    && leader.owner.as_deref() == Some(lease.owner()) =>
            {
                Ok(leader)
            }
            other => Err(lease_mismatch(lease, other.as_ref())),
        }
    }

    async fn publish_once(&self, session: &LiveSession, value: &str) -> Result<i32, zk::Error> {
        let path = &self.paths.member;
        let client = &session.client;
        let cached = self
            .published
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        if let Some(published) = cached
            && published.session == session.id()
            && published.value == value
            && let Some(stat) = client.check_stat(path).await?
            && stat.ephemeral_owner == session.id()
            && stat.version == published.version
        {
            // Unchanged: one read proves the node and the session; no write, no event.
            return Ok(stat.version);
        }
        for _ in 0..RACE_ATTEMPTS {
            match self
                .create(client, path, value.as_bytes(), CreateMode::Ephemeral)
                .await
            {
                Ok(stat) => return Ok(stat.version),
                Err(zk::Error::NodeExists) => {}
                Err(e) => return Err(e),
            }
            let (data, stat) = match client.get_data(path).await {
                Ok(found) => found,
                Err(zk::Error::NoNode) => continue,
                Err(e) => return Err(e),
            };
            if stat.ephemeral_owner == session.id() {
                if data == value.as_bytes() {
                    return Ok(stat.version);
                }
                match client
                    .set_data(path, value.as_bytes(), Some(stat.version))
                    .await
                {
                    Ok(stat) => return Ok(stat.version),
                    Err(zk::Error::BadVersion | zk::Error::NoNode) => continue,
                    Err(e) => return Err(e),
                }
            }
            // Another session's node (an earlier incarnation of this member, or a foreign
            // writer's persistent node): replace it with ours, as Patroni does, so that the
            // member key lives and dies with this client.
            match client.delete(path, Some(stat.version)).await {
                Ok(()) | Err(zk::Error::NoNode | zk::Error::BadVersion) => {}
                Err(e) => return Err(e),
            }
        }
        Err(zk::Error::BadVersion)
    }

    async fn write_once(
        &self,
        client: &Client,
        path: &str,
        value: &str,
        expected: Expect,
    ) -> Result<i32, zk::Error> {
        let data = value.as_bytes();
        match expected {
            Expect::Absent => self
                .create(client, path, data, CreateMode::Persistent)
                .await
                .map(|stat| stat.version),
            Expect::Version(version) => client
                .set_data(path, data, Some(version))
                .await
                .map(|stat| stat.version),
            Expect::Any => {
                for _ in 0..RACE_ATTEMPTS {
                    match client.set_data(path, data, None).await {
                        Ok(stat) => return Ok(stat.version),
                        Err(zk::Error::NoNode) => {}
                        Err(e) => return Err(e),
                    }
                    match self
                        .create(client, path, data, CreateMode::Persistent)
                        .await
                    {
                        Ok(stat) => return Ok(stat.version),
                        Err(zk::Error::NodeExists) => {}
                        Err(e) => return Err(e),
                    }
                }
                Err(zk::Error::NodeExists)
            }
        }
    }

    async fn delete_cluster_once(&self, client: &Client) -> Result<(), zk::Error> {
        for _ in 0..RACE_ATTEMPTS {
            let mut nodes = Vec::new();
            let mut pending = vec![self.paths.scope.clone()];
            while let Some(path) = pending.pop() {
                match client.list_children(&path).await {
                    Ok(children) => {
                        pending.extend(children.iter().map(|child| format!("{path}/{child}")));
                        nodes.push(path);
                    }
                    Err(zk::Error::NoNode) => {}
                    Err(e) => return Err(e),
                }
            }
            if nodes.is_empty() {
                return Ok(());
            }
            // Children first; one multi, so the scope goes all at once or not at all.
            nodes.sort_by_key(|path| std::cmp::Reverse(path.matches('/').count()));
            let mut writer = client.new_multi_writer();
            for path in &nodes {
                writer.add_delete(path, None)?;
            }
            match writer.commit().await {
                Ok(_) => return Ok(()),
                // A node appeared or went meanwhile: list again.
                Err(zk::MultiWriteError::OperationFailed {
                    source: zk::Error::NoNode | zk::Error::NotEmpty,
                    ..
                }) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Err(zk::Error::NotEmpty)
    }

    /// One snapshot: `sync`, then one multi-read of every key and every member the last
    /// snapshot saw, plus the member list; repeated while the member list changed under it.
    async fn cluster_once(&self, client: &Client) -> Result<ClusterState, zk::Error> {
        if !self.multi_read.load(Ordering::Relaxed) {
            return self.cluster_piecewise(client).await;
        }
        let mut hint = self
            .members_hint
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        for attempt in 1..=SNAPSHOT_ATTEMPTS {
            let mut reader = client.new_multi_reader();
            for key in FIXED_KEYS {
                reader.add_get_data(&self.options.path().key(key))?;
            }
            reader.add_get_children(&self.paths.members)?;
            for name in &hint {
                reader.add_get_data(&format!("{}/{name}", self.paths.members))?;
            }
            let sync = client.sync(&self.paths.scope);
            let read = reader.commit();
            let (read, synced) = (read.await, sync.await);
            match synced {
                Ok(()) | Err(zk::Error::NoNode) => {}
                Err(e) => return Err(e),
            }
            let results = match read {
                Ok(results) => results,
                Err(zk::Error::Unimplemented) => {
                    tracing::warn!(
                        "this ZooKeeper server has no multi-read (3.6+): snapshots are \
                         several reads from now on, not one"
                    );
                    self.multi_read.store(false, Ordering::Relaxed);
                    return self.cluster_piecewise(client).await;
                }
                Err(e) => return Err(e),
            };
            let mut results = results.into_iter();
            let mut entries = Vec::new();
            for key in FIXED_KEYS {
                if let Some(entry) = entry(key, results.next())? {
                    entries.push(entry);
                }
            }
            let children = match results.next() {
                Some(MultiReadResult::Children { mut children }) => {
                    children.sort();
                    children
                }
                Some(MultiReadResult::Error {
                    err: zk::Error::NoNode,
                })
                | None => Vec::new(),
                Some(MultiReadResult::Error { err }) => return Err(err),
                Some(other) => {
                    return Err(zk::Error::UnexpectedError(format!(
                        "multi-read answered {other:?} for a child list"
                    )));
                }
            };
            let listed: BTreeSet<&String> = children.iter().collect();
            let same = listed == hint.iter().collect::<BTreeSet<_>>();
            for name in &hint {
                let key = format!("{}{name}", keys::MEMBERS);
                let result = results.next();
                if listed.contains(name)
                    && let Some(entry) = entry(&key, result)?
                {
                    entries.push(entry);
                }
            }
            if same || attempt == SNAPSHOT_ATTEMPTS {
                // On the last attempt members that appeared meanwhile are read on their own,
                // just after the rest.
                for name in children.iter().filter(|name| !hint.contains(name)) {
                    let key = format!("{}{name}", keys::MEMBERS);
                    let read = client.get_data(&self.options.path().key(&key)).await;
                    if let Some(entry) = entry_from(&key, read)? {
                        entries.push(entry);
                    }
                }
                *self
                    .members_hint
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner) = children;
                return Ok(ClusterState::from_entries(entries));
            }
            hint = children;
        }
        unreachable!("the last attempt returns")
    }

    /// A snapshot without multi-read (ZooKeeper before 3.6): every read is sent before any
    /// answer is awaited, but other writers can interleave with them.
    async fn cluster_piecewise(&self, client: &Client) -> Result<ClusterState, zk::Error> {
        let sync = client.sync(&self.paths.scope);
        let children = client.list_children(&self.paths.members);
        let reads: Vec<_> = FIXED_KEYS
            .iter()
            .map(|key| client.get_data(&self.options.path().key(key)))
            .collect();
        match sync.await {
            Ok(()) | Err(zk::Error::NoNode) => {}
            Err(e) => return Err(e),
        }
        let children = match children.await {
            Ok(children) => children,
            Err(zk::Error::NoNode) => Vec::new(),
            Err(e) => return Err(e),
        };
        let mut entries = Vec::new();
        for (key, read) in FIXED_KEYS.iter().zip(reads) {
            if let Some(entry) = entry_from(key, read.await)? {
                entries.push(entry);
            }
        }
        let keys: Vec<String> = children
            .iter()
            .map(|name| format!("{}{name}", keys::MEMBERS))
            .collect();
        let reads: Vec<_> = keys
            .iter()
            .map(|key| client.get_data(&self.options.path().key(key)))
            .collect();
        for (key, read) in keys.iter().zip(reads) {
            if let Some(entry) = entry_from(key, read.await)? {
                entries.push(entry);
            }
        }
        Ok(ClusterState::from_entries(entries))
    }

    /// A snapshot on a ready session, retried on a new session if the current one ended.
    async fn snapshot(&self) -> Result<ClusterState> {
        loop {
            let session = self.ready().await?;
            match self.cluster_once(&session.client).await {
                Err(e) if session_ended(&e) => {}
                result => return result.map_err(|e| to_dcs(e, "")),
            }
        }
    }

    /// Registers the session's watch, then compares a fresh snapshot with `since`.
    async fn watch_setup(&self, since: &ClusterState) -> Result<WatchSetup> {
        let session = self.ready().await?;
        let events = session
            .watch(&self.paths.scope, Arc::clone(&self.paths.watched))
            .await?;
        let now = self.snapshot().await?;
        if watched_keys_differ(since, &now) {
            return Ok(WatchSetup::Changed);
        }
        let states = session.client.state_watcher();
        // Not the session itself: holding it would keep a closing session connected.
        Ok(WatchSetup::Watching(states, events))
    }
}

/// A [`Precondition`] in znode terms.
#[derive(Clone, Copy, Debug)]
enum Expect {
    Any,
    Absent,
    Version(i32),
}

enum WatchSetup {
    Changed,
    Watching(zk::StateWatcher, tokio::sync::watch::Receiver<u64>),
}

fn watched_keys_differ(a: &ClusterState, b: &ClusterState) -> bool {
    a.leader != b.leader || a.config != b.config || a.failover != b.failover || a.sync != b.sync
}

/// A znode stamp (czxid) as the contract's unsigned creation stamp.
fn stamp(zxid: i64) -> u64 {
    u64::try_from(zxid).unwrap_or(0)
}

fn raw_entry(key: &str, value: Vec<u8>, stat: &Stat) -> RawEntry {
    RawEntry {
        key: key.to_owned(),
        value,
        version: Version::new(stat.version),
        owner: (stat.ephemeral_owner != 0).then(|| owner_text(stat.ephemeral_owner)),
        created: stamp(stat.czxid),
    }
}

fn parse_leader(value: Vec<u8>, stat: &Stat) -> Leader {
    ClusterState::from_entries([raw_entry(keys::LEADER, value, stat)])
        .leader
        .expect("a leader entry parses as a leader")
}

fn entry(key: &str, result: Option<MultiReadResult>) -> Result<Option<RawEntry>, zk::Error> {
    match result {
        Some(MultiReadResult::Data { data, stat }) => Ok(Some(raw_entry(key, data, &stat))),
        Some(MultiReadResult::Error {
            err: zk::Error::NoNode,
        })
        | None => Ok(None),
        Some(MultiReadResult::Error { err }) => Err(err),
        Some(other) => Err(zk::Error::UnexpectedError(format!(
            "multi-read answered {other:?} for the data of {key}"
        ))),
    }
}

fn entry_from(
    key: &str,
    read: Result<(Vec<u8>, Stat), zk::Error>,
) -> Result<Option<RawEntry>, zk::Error> {
    match read {
        Ok((data, stat)) => Ok(Some(raw_entry(key, data, &stat))),
        Err(zk::Error::NoNode) => Ok(None),
        Err(e) => Err(e),
    }
}

/// A failed lease request: an ended session took the leader node with it.
fn lease_error(error: zk::Error, lease: &LeaderLease) -> Error {
    if session_ended(&error) {
        Error::lease_lost(format!(
            "the ZooKeeper session {} that held the leader node ended ({error})",
            lease.owner()
        ))
    } else {
        to_dcs(error, keys::LEADER)
    }
}

/// A version of this backend: the znode `version`, as text.
fn parse_version(key: StateKey, version: &Version) -> Result<i32> {
    version.as_str().parse().map_err(|_| {
        Error::conflict(
            key.as_str(),
            format!("version {version} is not a ZooKeeper znode version"),
        )
    })
}

async fn tls_options(config: &ZooKeeperConfig) -> Result<TlsOptions> {
    async fn read(key: &str, path: &str) -> Result<String> {
        tokio::fs::read_to_string(path)
            .await
            .map_err(|e| Error::InvalidConfig(format!("zookeeper.{key}: cannot read {path}: {e}")))
    }
    let bad = |key: &str, e: zk::Error| Error::InvalidConfig(format!("zookeeper.{key}: {e}"));
    let mut tls = TlsOptions::new();
    if let Some(path) = &config.cacert {
        tls = tls
            .with_pem_ca(&read("cacert", path).await?)
            .map_err(|e| bad("cacert", e))?;
    }
    if let (Some(cert), Some(key)) = (&config.cert, &config.key) {
        tls = tls
            .with_pem_identity(&read("cert", cert).await?, &read("key", key).await?)
            .map_err(|e| bad("cert", e))?;
    }
    Ok(tls)
}

#[async_trait]
impl Dcs for ZooKeeperDcs {
    async fn cluster(&self) -> Result<ClusterState> {
        with_deadline("cluster", self.retry_timeout(), self.snapshot()).await
    }

    async fn try_acquire_leader(&self) -> Result<Acquire> {
        with_deadline("try_acquire_leader", self.retry_timeout(), async {
            loop {
                let session = self.ready().await?;
                let sent_at = Instant::now();
                // Recorded before sending, so the guard never closes under this request.
                if !session.keep_alive(sent_at) {
                    continue;
                }
                match self.acquire_once(&session, sent_at).await {
                    Ok(Some(outcome)) => return Ok(outcome),
                    Ok(None) => {}
                    Err(e) if session_ended(&e) => {}
                    Err(e) => return Err(to_dcs(e, keys::LEADER)),
                }
            }
        })
        .await
    }

    async fn renew_leader(&self, lease: &LeaderLease) -> Result<LeaderLease> {
        with_deadline("renew_leader", self.retry_timeout(), async {
            let session = self.lease_session(lease).await?;
            let sent_at = Instant::now();
            if !session.keep_alive(sent_at) {
                return Err(Error::lease_lost(
                    "the ZooKeeper session is being closed: no keep-alive for ttl",
                ));
            }
            // ZooKeeper has nothing to extend: the session is the lease, alive while the
            // server hears from us. A synced read of the node, answered on this session,
            // proves both the holding and that the server heard us after `sent_at`.
            let leader = self.check_holding(&session, lease).await?;
            Ok(lease.renewed(self.valid_until(&session, sent_at), leader.version))
        })
        .await
    }

    async fn release_leader(&self, lease: LeaderLease) -> Result<()> {
        with_deadline("release_leader", self.retry_timeout(), async {
            let session = self.lease_session(&lease).await?;
            let leader = self.check_holding(&session, &lease).await?;
            // The node is an ephemeral of our own session at this version: deleting it at
            // that version deletes this holding and nothing else.
            let version: i32 = leader
                .version
                .as_str()
                .parse()
                .map_err(|_| Error::Corrupt {
                    key: keys::LEADER.into(),
                    reason: format!("znode version {} is not a number", leader.version),
                })?;
            match session
                .client
                .delete(&self.paths.leader, Some(version))
                .await
            {
                Ok(()) => Ok(()),
                Err(zk::Error::NoNode | zk::Error::BadVersion) => Err(Error::lease_lost(
                    "the leader node changed while releasing it",
                )),
                Err(e) => Err(lease_error(e, &lease)),
            }
        })
        .await
    }

    async fn publish_member(&self, data: &MemberData) -> Result<Version> {
        let value = data.to_json();
        with_deadline("publish_member", self.retry_timeout(), async {
            loop {
                let session = self.ready().await?;
                if !session.keep_alive(Instant::now()) {
                    continue;
                }
                match self.publish_once(&session, &value).await {
                    Ok(version) => {
                        *self
                            .published
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner) = Some(Published {
                            session: session.id(),
                            value: value.clone(),
                            version,
                        });
                        return Ok(Version::new(version));
                    }
                    Err(e) if session_ended(&e) => {}
                    Err(e) => {
                        let key = format!("{}{}", keys::MEMBERS, self.options.name());
                        return Err(to_dcs(e, &key));
                    }
                }
            }
        })
        .await
    }

    async fn write(
        &self,
        key: StateKey,
        value: &str,
        precondition: Precondition,
    ) -> Result<Version> {
        let expected = match &precondition {
            Precondition::Any => Expect::Any,
            Precondition::Absent => Expect::Absent,
            Precondition::Version(version) => Expect::Version(parse_version(key, version)?),
        };
        let path = self.key_path(key);
        with_deadline("write", self.retry_timeout(), async {
            loop {
                let session = self.ready().await?;
                match self
                    .write_once(&session.client, &path, value, expected)
                    .await
                {
                    Ok(version) => return Ok(Version::new(version)),
                    Err(e) if session_ended(&e) => {}
                    Err(e) => return Err(to_dcs(e, key.as_str())),
                }
            }
        })
        .await
    }

    async fn delete(&self, key: StateKey, expected: Option<&Version>) -> Result<()> {
        let version = expected.map(|v| parse_version(key, v)).transpose()?;
        let path = self.key_path(key);
        with_deadline("delete", self.retry_timeout(), async {
            loop {
                let session = self.ready().await?;
                match session.client.delete(&path, version).await {
                    Ok(()) => return Ok(()),
                    Err(zk::Error::NoNode) if version.is_none() => return Ok(()),
                    Err(e) if session_ended(&e) => {}
                    Err(e) => return Err(to_dcs(e, key.as_str())),
                }
            }
        })
        .await
    }

    async fn delete_cluster(&self) -> Result<()> {
        with_deadline("delete_cluster", self.retry_timeout(), async {
            loop {
                let session = self.ready().await?;
                match self.delete_cluster_once(&session.client).await {
                    Ok(()) => return Ok(()),
                    Err(e) if session_ended(&e) => {}
                    Err(e) => return Err(to_dcs(e, "")),
                }
            }
        })
        .await
    }

    async fn watch(&self, since: &ClusterState, timeout: Duration) -> Result<WatchOutcome> {
        let deadline = Instant::now() + timeout;
        let mut last_error = None;
        loop {
            let now = Instant::now();
            if now >= deadline {
                return last_error.map_or(Ok(WatchOutcome::TimedOut), Err);
            }
            let budget = (deadline - now).min(self.retry_timeout());
            let setup = tokio::time::timeout(budget, self.watch_setup(since)).await;
            let (mut states, mut events) = match setup {
                Ok(Ok(WatchSetup::Changed)) => return Ok(WatchOutcome::Changed),
                Ok(Ok(WatchSetup::Watching(states, events))) => (states, events),
                Ok(Err(e)) if e.is_retryable() => {
                    last_error = Some(e);
                    let pause =
                        Duration::from_millis(500).min(deadline - Instant::now().min(deadline));
                    tokio::time::sleep(pause).await;
                    continue;
                }
                Ok(Err(e)) => return Err(e),
                Err(_) => {
                    last_error = Some(Error::Timeout {
                        operation: "watch",
                        after: budget,
                    });
                    continue;
                }
            };
            last_error = None;
            // A terminal state is reported once; one already seen means a new session.
            while !states.peek_state().is_terminated() {
                tokio::select! {
                    changed = events.changed() => {
                        if changed.is_ok() {
                            return Ok(WatchOutcome::Changed);
                        }
                        break;
                    }
                    state = states.changed() => {
                        // Events during a disconnection can be lost (ZOOKEEPER-4698): after
                        // a reconnection or a new session, compare with a fresh read.
                        if state != zk::SessionState::Disconnected {
                            break;
                        }
                    }
                    () = tokio::time::sleep_until(deadline) => return Ok(WatchOutcome::TimedOut),
                }
            }
        }
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            expiry: Expiry::ServerClock,
            // `sync` then read: every write acknowledged before the snapshot started, except
            // across a ZooKeeper leader change (ZOOKEEPER-1675, ZOOKEEPER-2136).
            linearizable_reads: false,
            atomic_snapshot: self.multi_read.load(Ordering::Relaxed),
            fencing: FencingSource::CreateZxid,
        }
    }
}
