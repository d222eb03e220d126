//! The one place where a DCS backend is chosen: from the configuration's DCS section.

use std::sync::Arc;

use dcs_core::Dcs;
use dcs_etcd::EtcdDcs;
use dcs_zk::ZooKeeperDcs;

use crate::config::{Config, DcsConfig};

/// Connects to the DCS the configuration names (`etcd3` → [`EtcdDcs`], `zookeeper` →
/// [`ZooKeeperDcs`]) as this member, with [`Config::client_options`].
///
/// The rest of the agent sees only the [`Dcs`] contract, so its safety argument holds
/// whichever backend this picks.
pub async fn connect(config: &Config) -> dcs_core::Result<Arc<dyn Dcs>> {
    let options = config.client_options();
    Ok(match &config.dcs {
        DcsConfig::Etcd3(etcd) => Arc::new(EtcdDcs::connect(etcd, options).await?),
        DcsConfig::ZooKeeper(zk) => Arc::new(ZooKeeperDcs::connect(zk, options).await?),
    })
}
