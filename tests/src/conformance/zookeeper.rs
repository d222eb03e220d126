//! The conformance suite's view of `ZooKeeperDcs`, on real ZooKeeper started by the fixtures.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use dcs_core::{ClusterPath, Dcs, Timing};
use dcs_zk::{ZooKeeperConfig, ZooKeeperDcs};
use zookeeper_client::{Acls, Client, CreateMode};

use super::Backend;
use super::shared::{SharedServer, client_options};
use crate::fixtures::ZooKeeperServer;
use crate::require::skip_or_fail;

/// A real ZooKeeper (standalone or a 3-member ensemble) shared by the tests of one test
/// binary that run at the same time, so the suite pays for one JVM start, not one per
/// property; scopes keep properties apart. The last test to finish drops it (stopping it and
/// removing its directory); a test starting after that starts a new one.
#[derive(Clone, Debug)]
pub struct ZooKeeperBackend {
    server: Arc<ZooKeeperServer>,
}

static STANDALONE: SharedServer<ZooKeeperServer> = SharedServer::new();
static ENSEMBLE: SharedServer<ZooKeeperServer> = SharedServer::new();

impl ZooKeeperBackend {
    /// The shared standalone server, started if no running test holds it; `None` (after
    /// [`skip_or_fail`]) when it cannot start.
    pub async fn standalone() -> Option<Self> {
        Self::shared(&STANDALONE, 1).await
    }

    /// The shared 3-member ensemble, started if no running test holds it.
    pub async fn ensemble() -> Option<Self> {
        Self::shared(&ENSEMBLE, 3).await
    }

    /// A server of its own (for tests that pause or kill members).
    pub async fn dedicated(members: usize) -> Option<Self> {
        match ZooKeeperServer::start_ensemble(members).await {
            Ok(server) => Some(Self {
                server: Arc::new(server),
            }),
            Err(e) => {
                skip_or_fail("zookeeper", e);
                None
            }
        }
    }

    async fn shared(slot: &SharedServer<ZooKeeperServer>, members: usize) -> Option<Self> {
        let server = slot
            .get_or_start("zookeeper", ZooKeeperServer::start_ensemble(members))
            .await?;
        Some(Self { server })
    }

    /// The fixture, for tests that control members.
    #[must_use]
    pub fn server(&self) -> &Arc<ZooKeeperServer> {
        &self.server
    }

    /// The connection settings of the fixture's hosts.
    #[must_use]
    pub fn config(&self) -> ZooKeeperConfig {
        ZooKeeperConfig::new(self.server.hosts())
    }

    /// A raw zookeeper-client session on the fixture, for writes behind `ZooKeeperDcs`'s
    /// back. It closes its session when dropped.
    pub async fn raw_client(&self) -> dcs_core::Result<Client> {
        Client::connector()
            .with_session_timeout(self.timing().ttl())
            .connect(&self.server.connect_string())
            .await
            .map_err(|e| dcs_core::Error::unavailable(format!("raw ZooKeeper client: {e}")))
    }

    /// A new `ZooKeeperDcs` with the suite's timing.
    pub async fn zookeeper_client(
        &self,
        scope: &str,
        name: &str,
    ) -> dcs_core::Result<ZooKeeperDcs> {
        self.zookeeper_client_with(scope, name, self.timing()).await
    }

    /// A new `ZooKeeperDcs` with the given timing.
    pub async fn zookeeper_client_with(
        &self,
        scope: &str,
        name: &str,
        timing: Timing,
    ) -> dcs_core::Result<ZooKeeperDcs> {
        let options = client_options(scope, name, timing)?;
        ZooKeeperDcs::connect(&self.config(), options).await
    }
}

#[async_trait]
impl Backend for ZooKeeperBackend {
    fn name(&self) -> &'static str {
        "zookeeper"
    }

    fn timing(&self) -> Timing {
        // The fixture's tick is 500 ms and its shortest session 1 s. A 3 s session gives the
        // client (which pings every 15% of it and gives a connection up after 40% of
        // silence) room on two busy cores; loop_wait + 2 * retry_timeout <= ttl holds with
        // equality.
        Timing::new(
            Duration::from_secs(3),
            Duration::from_secs(1),
            Duration::from_secs(1),
        )
        .expect("valid timing")
    }

    fn expiry_slack(&self) -> Duration {
        // A dead client's session expires at the first tick (500 ms) after its timeout, on
        // the ensemble leader, which hears of a follower's clients every half tick; the
        // guard closes a silent client's session 100 ms after its deadline.
        Duration::from_millis(1500)
    }

    async fn client(&self, scope: &str, name: &str) -> dcs_core::Result<Arc<dyn Dcs>> {
        Ok(Arc::new(self.zookeeper_client(scope, name).await?))
    }

    async fn put_raw(&self, scope: &str, key: &str, value: &[u8]) -> dcs_core::Result<()> {
        let client = self.raw_client().await?;
        let path = ClusterPath::new(scope)?.key(key);
        let raw = |e: zookeeper_client::Error| {
            dcs_core::Error::unavailable(format!("raw ZooKeeper write of {path}: {e}"))
        };
        let options = CreateMode::Persistent.with_acls(Acls::anyone_all());
        loop {
            match client.set_data(&path, value, None).await {
                Ok(_) => return Ok(()),
                Err(zookeeper_client::Error::NoNode) => {}
                Err(e) => return Err(raw(e)),
            }
            let parent = &path[..path.rfind('/').unwrap_or(0)];
            match client.mkdir(parent, &options).await {
                Ok(()) | Err(zookeeper_client::Error::NodeExists) => {}
                Err(e) => return Err(raw(e)),
            }
            match client.create(&path, value, &options).await {
                Ok(_) => return Ok(()),
                Err(zookeeper_client::Error::NodeExists) => {}
                Err(e) => return Err(raw(e)),
            }
        }
    }
}
