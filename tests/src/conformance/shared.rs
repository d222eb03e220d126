//! One server shared by the tests of a binary that run at the same time.

use std::fmt::Display;
use std::sync::{Arc, Weak};

use dcs_core::{ClientOptions, ClusterPath, Timing};
use tokio::sync::Mutex;

use crate::require::skip_or_fail;

/// A slot for the server the running tests share, so a test binary pays for one server start,
/// not one per property (scopes keep properties apart). The slot holds no server itself: the
/// last test to drop its handle drops the server (stopping it and removing its directory),
/// and a test starting after that starts a new one.
pub(crate) struct SharedServer<S>(Mutex<Weak<S>>);

impl<S> SharedServer<S> {
    /// An empty slot.
    pub(crate) const fn new() -> Self {
        Self(Mutex::const_new(Weak::new()))
    }

    /// The running server, or one `start` starts; `None` (after [`skip_or_fail`] for
    /// `backend`) when it cannot start.
    pub(crate) async fn get_or_start<E: Display>(
        &self,
        backend: &str,
        start: impl Future<Output = Result<S, E>>,
    ) -> Option<Arc<S>> {
        // Held across the start, so tests arriving meanwhile wait for this server.
        let mut slot = self.0.lock().await;
        if let Some(server) = slot.upgrade() {
            return Some(server);
        }
        match start.await {
            Ok(server) => {
                let server = Arc::new(server);
                *slot = Arc::downgrade(&server);
                Some(server)
            }
            Err(e) => {
                skip_or_fail(backend, e);
                None
            }
        }
    }
}

/// The options of a suite client: member `name` on `scope`, with `timing`.
pub(crate) fn client_options(
    scope: &str,
    name: &str,
    timing: Timing,
) -> dcs_core::Result<ClientOptions> {
    Ok(ClientOptions::new(ClusterPath::new(scope)?, name)?.with_timing(timing))
}
