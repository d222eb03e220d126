//! The conformance suite's view of `EtcdDcs`, on real etcd started by the fixtures.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use dcs_core::{ClusterPath, Dcs, Timing};
use dcs_etcd::{EtcdConfig, EtcdDcs};

use super::Backend;
use super::shared::{SharedServer, client_options};
use crate::fixtures::EtcdServer;

/// A real etcd (one member or a cluster) shared by the tests of one test binary that run at
/// the same time, so the suite pays for one server start, not one per property; scopes keep
/// properties apart. The last test to finish drops it (stopping it and removing its
/// directory); a test starting after that starts a new one.
#[derive(Clone, Debug)]
pub struct EtcdBackend {
    server: Arc<EtcdServer>,
}

static SINGLE: SharedServer<EtcdServer> = SharedServer::new();
static CLUSTER: SharedServer<EtcdServer> = SharedServer::new();

impl EtcdBackend {
    /// The shared single-member etcd, started if no running test holds it; `None` (after
    /// [`skip_or_fail`](crate::require::skip_or_fail)) when it cannot start.
    pub async fn single() -> Option<Self> {
        Self::shared(&SINGLE, 1).await
    }

    /// The shared 3-member etcd cluster, started if no running test holds it.
    pub async fn cluster() -> Option<Self> {
        Self::shared(&CLUSTER, 3).await
    }

    async fn shared(slot: &SharedServer<EtcdServer>, members: usize) -> Option<Self> {
        let server = slot
            .get_or_start("etcd", EtcdServer::start_cluster(members))
            .await?;
        Some(Self { server })
    }

    /// The fixture, for tests that control members.
    #[must_use]
    pub fn server(&self) -> &Arc<EtcdServer> {
        &self.server
    }

    /// The connection settings of the fixture's endpoints.
    #[must_use]
    pub fn config(&self) -> EtcdConfig {
        let hosts = self
            .server
            .endpoints()
            .iter()
            .map(|e| e.trim_start_matches("http://").to_owned())
            .collect();
        EtcdConfig {
            hosts: Some(dcs_etcd::Hosts::List(hosts)),
            ..EtcdConfig::default()
        }
    }

    /// A raw etcd client of the fixture, for writes behind `EtcdDcs`'s back.
    pub async fn raw_client(&self) -> dcs_core::Result<etcd_client::Client> {
        etcd_client::Client::connect(self.server.endpoints(), None)
            .await
            .map_err(|e| dcs_core::Error::unavailable(format!("raw etcd client: {e}")))
    }

    /// A new `EtcdDcs` with the suite's timing.
    pub async fn etcd_client(&self, scope: &str, name: &str) -> dcs_core::Result<EtcdDcs> {
        let options = client_options(scope, name, self.timing())?;
        EtcdDcs::connect(&self.config(), options).await
    }
}

#[async_trait]
impl Backend for EtcdBackend {
    fn name(&self) -> &'static str {
        "etcd"
    }

    fn timing(&self) -> Timing {
        // etcd's shortest lease is 1.5 election timeouts, rounded up to whole seconds: 2 s
        // with the fixture's 1 s election timeout. 3 s leaves room; the rule
        // loop_wait + 2 * retry_timeout <= ttl holds with equality.
        Timing::new(
            Duration::from_secs(3),
            Duration::from_secs(1),
            Duration::from_secs(1),
        )
        .expect("valid timing")
    }

    fn expiry_slack(&self) -> Duration {
        // The etcd leader looks for expired leases every 500 ms and revokes them through
        // raft; a revocation lands well within a second of the deadline.
        Duration::from_secs(1)
    }

    async fn client(&self, scope: &str, name: &str) -> dcs_core::Result<Arc<dyn Dcs>> {
        Ok(Arc::new(self.etcd_client(scope, name).await?))
    }

    async fn put_raw(&self, scope: &str, key: &str, value: &[u8]) -> dcs_core::Result<()> {
        let mut client = self.raw_client().await?;
        client
            .put(ClusterPath::new(scope)?.key(key), value, None)
            .await
            .map_err(|e| dcs_core::Error::unavailable(format!("raw etcd put: {e}")))?;
        Ok(())
    }
}
