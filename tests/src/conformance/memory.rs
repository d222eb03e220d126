//! The conformance suite's view of `MemoryDcs`.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use dcs_core::{ClientOptions, ClusterPath, Dcs, MemoryStore, Timing};

use super::Backend;

/// A fresh [`MemoryStore`] per test. Use it with paused tokio time: the suite then runs
/// with Patroni's default timing (ttl 30 s) in no real time.
#[derive(Debug, Default)]
pub struct MemoryBackend {
    store: MemoryStore,
}

impl MemoryBackend {
    /// A backend on an empty store. Always available, hence the `Option` only to match the
    /// other backends' setup.
    pub fn start() -> impl Future<Output = Option<Self>> {
        std::future::ready(Some(Self::default()))
    }
}

#[async_trait]
impl Backend for MemoryBackend {
    fn name(&self) -> &'static str {
        "memory"
    }

    fn timing(&self) -> Timing {
        Timing::default()
    }

    fn expiry_slack(&self) -> Duration {
        // The store removes a key at its deadline exactly; the slack only steps past it.
        Duration::from_millis(1)
    }

    async fn client(&self, scope: &str, name: &str) -> dcs_core::Result<Arc<dyn Dcs>> {
        let options =
            ClientOptions::new(ClusterPath::new(scope)?, name)?.with_timing(self.timing());
        Ok(Arc::new(self.store.client(options)))
    }

    async fn put_raw(&self, scope: &str, key: &str, value: &[u8]) -> dcs_core::Result<()> {
        self.store
            .put_raw(&ClusterPath::new(scope)?.key(key), value);
        Ok(())
    }
}
