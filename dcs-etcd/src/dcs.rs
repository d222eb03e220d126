//! `EtcdDcs`: the contract over etcd v3, laid out as Patroni's `etcd3` backend.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use dcs_core::error::with_deadline;
use dcs_core::model::RawEntry;
use dcs_core::options::keys;
use dcs_core::{
    Acquire, Capabilities, ClientOptions, ClusterState, Dcs, Error, Expiry, FencingSource,
    FencingToken, Leader, LeaderLease, MemberData, Precondition, Result, StateKey, Version,
    WatchOutcome, dcs::lease_mismatch,
};
use etcd_client::{
    Certificate, Compare, CompareOp, ConnectOptions, DeleteOptions, EventType, GetOptions,
    Identity, KeyValue, PutOptions, TlsOptions, Txn, TxnOp, TxnOpResponse, TxnResponse,
    WatchOptions,
};
use tokio::time::{Instant, sleep, timeout_at};

use crate::config::EtcdConfig;
use crate::endpoints::Endpoints;
use crate::error::{from_client, is_lease_not_found};
use crate::lease::Lease;

/// The HTTP/2 ping interval: above etcd's default `--grpc-keepalive-min-time` (5 s).
const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(10);

/// The keys whose change wakes [`Dcs::watch`].
const WATCHED: [&str; 4] = [keys::LEADER, keys::CONFIG, keys::FAILOVER, keys::SYNC];

/// One client of an etcd v3 cluster: one member of one Patroni cluster, with one etcd lease
/// (ttl = `Timing::ttl`) to which its leader key and member key are bound.
///
/// See the [crate docs](crate) for what it guarantees and how.
#[derive(Debug)]
pub struct EtcdDcs {
    options: ClientOptions,
    endpoints: Arc<Endpoints>,
    lease: Lease,
}

impl EtcdDcs {
    /// Prepares a client of the cluster `config` names. Connections open lazily, on the
    /// first call (so this succeeds while etcd is down); configuration errors (bad hosts,
    /// unreadable certificates) are reported here as [`Error::InvalidConfig`].
    pub async fn connect(config: &EtcdConfig, options: ClientOptions) -> Result<Self> {
        let urls = config.endpoints()?;
        let retry_timeout = options.timing().retry_timeout();
        let mut connect = ConnectOptions::new()
            // A member without a leader refuses at once (Unavailable) instead of queueing.
            .with_require_leader(true)
            .with_connect_timeout(retry_timeout)
            // HTTP/2 pings notice a dead member under an open watch or keep-alive stream.
            // etcd answers pings more frequent than every 5 s, or pings without a stream,
            // with GOAWAY (`too_many_pings`), so: every 10 s, and only with streams open.
            .with_keep_alive(KEEP_ALIVE_INTERVAL, retry_timeout)
            .with_keep_alive_while_idle(false)
            .with_tcp_keepalive(options.timing().ttl());
        if let Some((user, password)) = config.credentials()? {
            connect = connect
                .with_user(user, password)
                .with_auto_token_refresh(true);
        }
        if config.uses_tls()? {
            connect = connect.with_tls(tls_options(config).await?);
        } else if config.cacert.is_some() || config.cert.is_some() {
            return Err(Error::InvalidConfig(
                "etcd3.cacert/cert are set but the endpoints use http; set etcd3.protocol: https"
                    .to_owned(),
            ));
        }
        let endpoints = Arc::new(Endpoints::new(urls, connect, retry_timeout));
        let lease = Lease::start(
            Arc::clone(&endpoints),
            options.timing().ttl(),
            retry_timeout,
        );
        Ok(Self {
            options,
            endpoints,
            lease,
        })
    }

    /// Who this client is.
    #[must_use]
    pub fn options(&self) -> &ClientOptions {
        &self.options
    }

    /// The client URLs this client fails over between.
    #[must_use]
    pub fn endpoints(&self) -> &[String] {
        self.endpoints.urls()
    }

    /// The endpoint calls go to now (an index into [`endpoints`](Self::endpoints)).
    #[must_use]
    pub fn current_endpoint(&self) -> usize {
        self.endpoints.current()
    }

    /// Leaves gracefully: revokes the client's lease, so its leader key (if it holds one)
    /// and its member key disappear at once instead of after the ttl. Dropping the client
    /// without `close` behaves as a crash: the keys stay until the ttl ran out.
    pub async fn close(self) -> Result<()> {
        let retry_timeout = self.retry_timeout();
        let deadline = Instant::now() + retry_timeout;
        with_deadline("close", retry_timeout, self.lease.revoke(deadline)).await
    }

    fn retry_timeout(&self) -> Duration {
        self.options.timing().retry_timeout()
    }

    fn key(&self, relative: &str) -> String {
        self.options.path().key(relative)
    }

    fn member_key(&self) -> String {
        self.key(&format!("{}{}", keys::MEMBERS, self.options.name()))
    }

    /// Runs `body` with the client's deadline.
    async fn bounded<T>(
        &self,
        operation: &'static str,
        body: impl AsyncFnOnce(Instant) -> Result<T>,
    ) -> Result<T> {
        let retry_timeout = self.retry_timeout();
        let deadline = Instant::now() + retry_timeout;
        with_deadline(operation, retry_timeout, body(deadline)).await
    }

    async fn txn(
        &self,
        operation: &'static str,
        deadline: Instant,
        txn: Txn,
    ) -> Result<(TxnResponse, bool)> {
        let reply = self
            .endpoints
            .call(operation, deadline, |mut client| {
                let txn = txn.clone();
                async move { client.txn(txn).await }
            })
            .await?;
        Ok((reply.response, reply.retried))
    }

    async fn get_leader(&self, deadline: Instant) -> Result<Option<Leader>> {
        let key = self.key(keys::LEADER);
        let reply = self
            .endpoints
            .call("get leader", deadline, |mut client| {
                let key = key.clone();
                async move { client.get(key, None).await }
            })
            .await?;
        Ok(reply.response.kvs().first().map(Self::leader_of))
    }

    fn leader_of(kv: &KeyValue) -> Leader {
        ClusterState::from_entries([raw_entry(keys::LEADER, kv)])
            .leader
            .expect("a leader entry parses as a leader")
    }

    /// The entries of the scope, and the revision they were read at.
    async fn read_scope(
        &self,
        operation: &'static str,
        deadline: Instant,
        keys_only: bool,
    ) -> Result<(Vec<RawEntry>, i64)> {
        let prefix = self.options.path().prefix().to_owned();
        let reply = self
            .endpoints
            .call(operation, deadline, |mut client| {
                let prefix = prefix.clone();
                let mut options = GetOptions::new().with_prefix();
                if keys_only {
                    options = options.with_keys_only();
                }
                async move { client.get(prefix, Some(options)).await }
            })
            .await?;
        let revision = reply
            .response
            .header()
            .map_or(0, etcd_client::ResponseHeader::revision);
        let path = self.options.path();
        let entries = reply
            .response
            .kvs()
            .iter()
            .filter_map(|kv| {
                let key = std::str::from_utf8(kv.key()).ok()?;
                Some(raw_entry(path.relative(key)?, kv))
            })
            .collect();
        Ok((entries, revision))
    }

    /// One watch: registered at the revision after a snapshot of the watched keys, so that
    /// nothing between the comparison and the wait can be missed.
    async fn watch_once(&self, since: &ClusterState, deadline: Instant) -> Result<WatchOutcome> {
        let setup_deadline = deadline.min(Instant::now() + self.retry_timeout());
        let (entries, revision) = self.read_scope("watch", setup_deadline, true).await?;
        if watched_versions(&entries) != since_versions(since) {
            return Ok(WatchOutcome::Changed);
        }
        let index = self.endpoints.current();
        let prefix = self.options.path().prefix().to_owned();
        let opened = timeout_at(setup_deadline, async {
            let mut client = self.endpoints.client(index).await?;
            let options = WatchOptions::new()
                .with_prefix()
                .with_start_revision(revision + 1);
            client
                .watch(prefix, Some(options))
                .await
                .map_err(from_client)
        })
        .await;
        let mut stream = match opened {
            Ok(Ok(stream)) => stream,
            Ok(Err(error)) => {
                self.endpoints.rotate(index);
                return Err(error);
            }
            Err(_) => {
                self.endpoints.rotate(index);
                return Err(Error::Timeout {
                    operation: "watch",
                    after: self.retry_timeout(),
                });
            }
        };
        let path = self.options.path();
        loop {
            let message = match stream.message().await {
                Ok(Some(message)) => message,
                Ok(None) => {
                    self.endpoints.rotate(index);
                    return Err(Error::unavailable("etcd closed the watch stream"));
                }
                Err(error) => {
                    self.endpoints.rotate(index);
                    return Err(from_client(error));
                }
            };
            if message.canceled() {
                // Compacted past our revision, or the member lost its leader: waking early
                // is allowed, and the caller's next snapshot tells what changed.
                return Ok(WatchOutcome::Changed);
            }
            let touched = message.events().iter().any(|event| {
                event
                    .kv()
                    .and_then(|kv| std::str::from_utf8(kv.key()).ok())
                    .and_then(|key| path.relative(key))
                    .is_some_and(|relative| WATCHED.contains(&relative))
                    && matches!(event.event_type(), EventType::Put | EventType::Delete)
            });
            if touched {
                return Ok(WatchOutcome::Changed);
            }
        }
    }
}

async fn tls_options(config: &EtcdConfig) -> Result<TlsOptions> {
    async fn read(key: &str, path: &std::path::Path) -> Result<Vec<u8>> {
        tokio::fs::read(path).await.map_err(|e| {
            Error::InvalidConfig(format!("etcd3.{key}: cannot read {}: {e}", path.display()))
        })
    }
    let mut tls = TlsOptions::new();
    match &config.cacert {
        Some(path) => tls = tls.ca_certificate(Certificate::from_pem(read("cacert", path).await?)),
        None => {
            return Err(Error::InvalidConfig(
                "etcd3.cacert is required with https (system roots are not loaded)".to_owned(),
            ));
        }
    }
    match (&config.cert, &config.key) {
        (Some(cert), Some(key)) => {
            tls = tls.identity(Identity::from_pem(
                read("cert", cert).await?,
                read("key", key).await?,
            ));
        }
        (None, None) => {}
        (Some(_), None) => {
            return Err(Error::InvalidConfig(
                "etcd3.cert is set but etcd3.key is not".to_owned(),
            ));
        }
        (None, Some(_)) => {
            return Err(Error::InvalidConfig(
                "etcd3.key is set but etcd3.cert is not".to_owned(),
            ));
        }
    }
    Ok(tls)
}

fn raw_entry(relative: &str, kv: &KeyValue) -> RawEntry {
    RawEntry {
        key: relative.to_owned(),
        value: kv.value().to_vec(),
        version: Version::new(kv.mod_revision()),
        owner: (kv.lease() != 0).then(|| kv.lease().to_string()),
        created: u64::try_from(kv.create_revision()).unwrap_or(0),
    }
}

fn watched_versions(entries: &[RawEntry]) -> [Option<Version>; 4] {
    WATCHED.map(|key| {
        entries
            .iter()
            .find(|entry| entry.key == key)
            .map(|entry| entry.version.clone())
    })
}

fn since_versions(since: &ClusterState) -> [Option<Version>; 4] {
    [
        since.leader.as_ref().map(|l| l.version.clone()),
        since.config.as_ref().map(|v| v.version.clone()),
        since.failover.as_ref().map(|v| v.version.clone()),
        since.sync.as_ref().map(|v| v.version.clone()),
    ]
}

/// The revision of a txn: the revision of its writes when it wrote.
fn revision(response: &TxnResponse) -> i64 {
    response
        .header()
        .map_or(0, etcd_client::ResponseHeader::revision)
}

/// An etcd revision from a contract version; `None` when it cannot be one (it then matches
/// no key).
fn parse_revision(version: &Version) -> Option<i64> {
    version.as_str().parse::<i64>().ok().filter(|r| *r > 0)
}

fn lease_id(lease: &LeaderLease) -> Option<i64> {
    lease.owner().parse().ok()
}

#[async_trait]
impl Dcs for EtcdDcs {
    async fn cluster(&self) -> Result<ClusterState> {
        self.bounded("cluster", async |deadline| {
            let (entries, _) = self.read_scope("cluster", deadline, false).await?;
            Ok(ClusterState::from_entries(entries))
        })
        .await
    }

    async fn try_acquire_leader(&self) -> Result<Acquire> {
        self.bounded("try_acquire_leader", async |deadline| {
            let key = self.key(keys::LEADER);
            let name = self.options.name();
            let acquire = |id: i64| {
                Txn::new()
                    .when([Compare::create_revision(key.as_str(), CompareOp::Equal, 0)])
                    .and_then([TxnOp::put(
                        key.as_str(),
                        name,
                        Some(PutOptions::new().with_lease(id)),
                    )])
                    .or_else([TxnOp::get(key.as_str(), None)])
            };
            loop {
                // The keep-alive and the txn bound to the same lease go out together: the
                // key lives as long as the lease, and the keep-alive's send time bounds
                // the lease from below whichever of the two the server handles first.
                let (alive, bound_to, answer) = if let Some(id) = self.lease.current() {
                    let (alive, answer) = tokio::join!(
                        self.lease.keep_alive(deadline),
                        self.txn("try_acquire_leader", deadline, acquire(id))
                    );
                    (alive?, id, answer)
                } else {
                    let alive = self.lease.keep_alive(deadline).await?;
                    let answer = self
                        .txn("try_acquire_leader", deadline, acquire(alive.id))
                        .await;
                    (alive, alive.id, answer)
                };
                let (response, _) = match answer {
                    Ok(answer) => answer,
                    Err(error) if is_lease_not_found(&error) => {
                        self.lease.forget(bound_to).await;
                        continue;
                    }
                    Err(error) => return Err(error),
                };
                if alive.id != bound_to {
                    // The lease the txn used expired meanwhile and a new one was granted:
                    // a key bound to the old one is gone or about to be.
                    if response.succeeded() {
                        return Err(Error::unavailable(
                            "the etcd lease expired while the leader key was created; retry",
                        ));
                    }
                    continue;
                }
                let lease = |token: i64, version: i64| {
                    LeaderLease::new(
                        name.to_owned(),
                        FencingToken(u64::try_from(token).unwrap_or(0)),
                        Version::new(version),
                        alive.id.to_string(),
                        alive.valid_until(),
                    )
                };
                if response.succeeded() {
                    let created = revision(&response);
                    return Ok(Acquire::Won(lease(created, created)));
                }
                let Some(kv) = txn_get_kv(&response) else {
                    // The compare saw the key and the read in the same txn did not: cannot
                    // happen in one revision; report it rather than guess.
                    return Err(Error::unavailable(
                        "etcd txn showed the leader key and then did not",
                    ));
                };
                let holder = Self::leader_of(&kv);
                if holder.name == name && kv.lease() == alive.id {
                    // Bound to this client's own lease, which no other client holds: created
                    // by this client, by an attempt whose answer was lost (a retry, or a call
                    // whose keep-alive failed after its txn landed). It is ours; returning
                    // `HeldBy` would leave a lock nobody leads with, kept alive by our own
                    // member key's keep-alives.
                    return Ok(Acquire::Won(lease(kv.create_revision(), kv.mod_revision())));
                }
                return Ok(Acquire::HeldBy(holder));
            }
        })
        .await
    }

    async fn renew_leader(&self, lease: &LeaderLease) -> Result<LeaderLease> {
        self.bounded("renew_leader", async |deadline| {
            // Keep-alive and check together: if the read shows the key bound to our lease
            // with our token, and the keep-alive found that lease alive, the key lives until
            // the lease expires, in whichever order the server handled the two.
            let (alive, found) =
                tokio::join!(self.lease.keep_alive(deadline), self.get_leader(deadline));
            let found = found?;
            let holds = found.as_ref().is_some_and(|leader| {
                leader.name == lease.name()
                    && leader.token == lease.token()
                    && leader.owner.as_deref() == Some(lease.owner())
            });
            if !holds {
                // A linearizable read showed someone else's holding: lost, whatever the
                // keep-alive says.
                return Err(lease_mismatch(lease, found.as_ref()));
            }
            let alive = alive?;
            match found {
                Some(leader) if alive.id.to_string() == lease.owner() => {
                    Ok(lease.renewed(alive.valid_until(), leader.version))
                }
                // Our lease expired and the task granted a new one: the key bound to the
                // old lease is being revoked.
                found => Err(lease_mismatch(lease, found.as_ref())),
            }
        })
        .await
    }

    async fn release_leader(&self, lease: LeaderLease) -> Result<()> {
        self.bounded("release_leader", async |deadline| {
            let key = self.key(keys::LEADER);
            let (Some(id), Ok(token)) = (lease_id(&lease), i64::try_from(lease.token().0)) else {
                return Err(lease_mismatch(
                    &lease,
                    self.get_leader(deadline).await?.as_ref(),
                ));
            };
            let txn = Txn::new()
                .when([
                    Compare::value(key.as_str(), CompareOp::Equal, lease.name()),
                    Compare::lease(key.as_str(), CompareOp::Equal, id),
                    Compare::create_revision(key.as_str(), CompareOp::Equal, token),
                ])
                .and_then([TxnOp::delete(key.as_str(), None)])
                .or_else([TxnOp::get(key.as_str(), None)]);
            let (response, retried) = self.txn("release_leader", deadline, txn).await?;
            if response.succeeded() {
                return Ok(());
            }
            match txn_get_kv(&response) {
                // An earlier attempt of this call deleted it and its answer was lost.
                None if retried => Ok(()),
                kv => Err(lease_mismatch(
                    &lease,
                    kv.map(|kv| Self::leader_of(&kv)).as_ref(),
                )),
            }
        })
        .await
    }

    async fn publish_member(&self, data: &MemberData) -> Result<Version> {
        self.bounded("publish_member", async |deadline| {
            let key = self.member_key();
            let value = data.to_json();
            let put = |id: i64| {
                let (key, value) = (key.clone(), value.clone());
                self.endpoints
                    .call("publish_member", deadline, move |mut client| {
                        let (key, value) = (key.clone(), value.clone());
                        async move {
                            client
                                .put(key, value, Some(PutOptions::new().with_lease(id)))
                                .await
                        }
                    })
            };
            loop {
                // As in acquire: the put bound to the lease and the keep-alive go together.
                let (alive, bound_to, answer) = if let Some(id) = self.lease.current() {
                    let (alive, answer) = tokio::join!(self.lease.keep_alive(deadline), put(id));
                    (alive?, id, answer)
                } else {
                    let alive = self.lease.keep_alive(deadline).await?;
                    (alive, alive.id, put(alive.id).await)
                };
                match answer {
                    Ok(_) if alive.id != bound_to => {}
                    Ok(reply) => {
                        return Ok(Version::new(
                            reply
                                .response
                                .header()
                                .map_or(0, etcd_client::ResponseHeader::revision),
                        ));
                    }
                    Err(error) if is_lease_not_found(&error) => self.lease.forget(bound_to).await,
                    Err(error) => return Err(error),
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
        self.bounded("write", async |deadline| {
            let full = self.key(key.as_str());
            let compare = match &precondition {
                Precondition::Any => None,
                Precondition::Absent => {
                    Some(Compare::create_revision(full.as_str(), CompareOp::Equal, 0))
                }
                Precondition::Version(version) => match parse_revision(version) {
                    Some(revision) => Some(Compare::mod_revision(
                        full.as_str(),
                        CompareOp::Equal,
                        revision,
                    )),
                    None => {
                        return Err(Error::conflict(
                            key.as_str(),
                            format!("version {version} is not an etcd revision"),
                        ));
                    }
                },
            };
            let mut txn = Txn::new();
            if let Some(compare) = compare {
                txn = txn.when([compare]);
            }
            let txn = txn
                .and_then([TxnOp::put(full.as_str(), value, None)])
                .or_else([TxnOp::get(full.as_str(), None)]);
            let (response, retried) = self.txn("write", deadline, txn).await?;
            if response.succeeded() {
                return Ok(Version::new(revision(&response)));
            }
            let found = txn_get_kv(&response);
            if retried
                && found
                    .as_ref()
                    .is_some_and(|kv| kv.value() == value.as_bytes())
            {
                // Our own earlier attempt may have landed: "conflict" would be a guess.
                return Err(Error::unavailable(format!(
                    "write of `{key}` may have been applied by an attempt whose answer was \
                     lost; re-read before deciding"
                )));
            }
            Err(Error::conflict(
                key.as_str(),
                format!(
                    "expected {precondition:?}, found {:?}",
                    found.map(|kv| Version::new(kv.mod_revision()))
                ),
            ))
        })
        .await
    }

    async fn delete(&self, key: StateKey, expected: Option<&Version>) -> Result<()> {
        self.bounded("delete", async |deadline| {
            let full = self.key(key.as_str());
            let mut txn = Txn::new();
            if let Some(expected) = expected {
                let Some(revision) = parse_revision(expected) else {
                    return Err(Error::conflict(
                        key.as_str(),
                        format!("version {expected} is not an etcd revision"),
                    ));
                };
                txn = txn.when([Compare::mod_revision(
                    full.as_str(),
                    CompareOp::Equal,
                    revision,
                )]);
            }
            let txn = txn
                .and_then([TxnOp::delete(full.as_str(), None)])
                .or_else([TxnOp::get(full.as_str(), None)]);
            let (response, retried) = self.txn("delete", deadline, txn).await?;
            if response.succeeded() {
                return Ok(());
            }
            match txn_get_kv(&response) {
                // Gone, by us (an attempt whose answer was lost) or not: what was wanted.
                None if retried => Ok(()),
                found => Err(Error::conflict(
                    key.as_str(),
                    format!(
                        "expected version {expected:?}, found {:?}",
                        found.map(|kv| Version::new(kv.mod_revision()))
                    ),
                )),
            }
        })
        .await
    }

    async fn delete_cluster(&self) -> Result<()> {
        self.bounded("delete_cluster", async |deadline| {
            let prefix = self.options.path().prefix().to_owned();
            self.endpoints
                .call("delete_cluster", deadline, |mut client| {
                    let prefix = prefix.clone();
                    async move {
                        client
                            .delete(prefix, Some(DeleteOptions::new().with_prefix()))
                            .await
                    }
                })
                .await?;
            Ok(())
        })
        .await
    }

    async fn watch(&self, since: &ClusterState, timeout: Duration) -> Result<WatchOutcome> {
        let deadline = Instant::now() + timeout;
        loop {
            match timeout_at(deadline, self.watch_once(since, deadline)).await {
                Err(_) => return Ok(WatchOutcome::TimedOut),
                Ok(Ok(outcome)) => return Ok(outcome),
                Ok(Err(error)) if error.is_retryable() => {
                    // An unreachable store is slept through like a quiet one; the caller's
                    // next snapshot reports the error.
                    tracing::debug!(%error, "etcd watch failed; watching again");
                    let pause = Duration::from_millis(100);
                    if Instant::now() + pause >= deadline {
                        sleep_until_deadline(deadline).await;
                        return Ok(WatchOutcome::TimedOut);
                    }
                    sleep(pause).await;
                }
                Ok(Err(error)) => return Err(error),
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

async fn sleep_until_deadline(deadline: Instant) {
    tokio::time::sleep_until(deadline).await;
}

/// The key a txn's `else` branch read, if it exists.
fn txn_get_kv(response: &TxnResponse) -> Option<KeyValue> {
    response.op_responses().into_iter().find_map(|op| match op {
        TxnOpResponse::Get(get) => get.kvs().first().cloned(),
        _ => None,
    })
}
