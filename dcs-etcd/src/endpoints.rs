//! The members a client talks to: one connection per endpoint, failover between them, a
//! deadline per attempt, and the guard that refuses answers from a stale member.

use std::future::Future;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use dcs_core::{Error, Result};
use etcd_client::{Client, ConnectOptions, ResponseHeader};
use tokio::sync::OnceCell;
use tokio::time::{Instant, sleep, timeout_at};

use crate::error::from_client;

/// The pause before retrying after every endpoint failed once, so a cluster without a
/// leader is not hammered; short against any `retry_timeout`.
const BACKOFF: Duration = Duration::from_millis(50);

/// The endpoints of one cluster, with a lazily opened connection to each.
pub(crate) struct Endpoints {
    urls: Vec<String>,
    options: ConnectOptions,
    clients: Vec<OnceCell<Client>>,
    /// The endpoint calls go to until it fails.
    current: AtomicUsize,
    /// How long one attempt on one endpoint may take before the next endpoint is tried.
    attempt_timeout: Duration,
    guard: Mutex<Guard>,
}

/// The newest cluster state this client has seen answered: an answer older than what was
/// seen before its request was sent comes from a member cut off from the cluster (Patroni
/// issue #3314) and is refused.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Guard {
    cluster_id: u64,
    revision: i64,
    raft_term: u64,
}

/// What a response says about the cluster, for the [`Guard`].
pub(crate) trait Answer {
    /// The response's header, if the server sent one.
    fn header(&self) -> Option<&ResponseHeader>;
}

macro_rules! answer {
    ($($response:ty),* $(,)?) => {$(
        impl Answer for $response {
            fn header(&self) -> Option<&ResponseHeader> {
                <$response>::header(self)
            }
        }
    )*};
}

answer!(
    etcd_client::GetResponse,
    etcd_client::PutResponse,
    etcd_client::DeleteResponse,
    etcd_client::TxnResponse,
    etcd_client::LeaseGrantResponse,
    etcd_client::LeaseKeepAliveResponse,
    etcd_client::LeaseRevokeResponse,
    etcd_client::WatchResponse,
);

/// A successful call: the response, and whether an earlier attempt failed in a way that may
/// have applied the request anyway (a timeout, a connection lost mid-request).
pub(crate) struct Reply<R> {
    pub(crate) response: R,
    pub(crate) retried: bool,
}

impl Endpoints {
    pub(crate) fn new(urls: Vec<String>, options: ConnectOptions, retry_timeout: Duration) -> Self {
        // Patroni's split: each member gets a share of the deadline, so one member that
        // hangs (paused, partitioned) leaves time to ask the others; a single member gets
        // two tries.
        let shares = u32::try_from(urls.len().max(2)).unwrap_or(u32::MAX);
        Self {
            clients: urls.iter().map(|_| OnceCell::new()).collect(),
            urls,
            options,
            current: AtomicUsize::new(0),
            attempt_timeout: retry_timeout / shares,
            guard: Mutex::new(Guard::default()),
        }
    }

    pub(crate) fn urls(&self) -> &[String] {
        &self.urls
    }

    /// The endpoint calls go to now.
    pub(crate) fn current(&self) -> usize {
        self.current.load(Ordering::Acquire)
    }

    pub(crate) fn attempt_timeout(&self) -> Duration {
        self.attempt_timeout
    }

    /// Moves on from `failed` to the next endpoint, unless another call did already.
    pub(crate) fn rotate(&self, failed: usize) {
        let next = (failed + 1) % self.urls.len();
        let _ = self
            .current
            .compare_exchange(failed, next, Ordering::AcqRel, Ordering::Acquire);
    }

    /// The connection to endpoint `index`, opened (and authenticated) on first use.
    pub(crate) async fn client(&self, index: usize) -> Result<Client> {
        self.clients[index]
            .get_or_try_init(|| async {
                Client::connect([self.urls[index].as_str()], Some(self.options.clone()))
                    .await
                    .map_err(from_client)
            })
            .await
            .cloned()
    }

    /// The guard as of now, to check a response to a request sent now.
    pub(crate) fn floor(&self) -> Guard {
        *self.lock_guard()
    }

    /// Refuses a response older than `floor` (the newest state seen when its request was
    /// sent) or from another cluster; otherwise records it.
    pub(crate) fn check(&self, floor: Guard, header: Option<&ResponseHeader>) -> Result<()> {
        let Some(header) = header else {
            return Ok(());
        };
        let mut guard = self.lock_guard();
        if guard.cluster_id != 0
            && header.cluster_id() != 0
            && header.cluster_id() != guard.cluster_id
        {
            return Err(Error::unavailable(format!(
                "etcd member {:x} belongs to cluster {:x}, not {:x}: refusing its answer",
                header.member_id(),
                header.cluster_id(),
                guard.cluster_id
            )));
        }
        if header.revision() < floor.revision || header.raft_term() < floor.raft_term {
            return Err(Error::unavailable(format!(
                "etcd member {:x} answered from the past (revision {}, raft term {}; already \
                 seen revision {}, term {}): it is cut off from the cluster, refusing its answer",
                header.member_id(),
                header.revision(),
                header.raft_term(),
                floor.revision,
                floor.raft_term
            )));
        }
        if guard.cluster_id == 0 {
            guard.cluster_id = header.cluster_id();
        }
        guard.revision = guard.revision.max(header.revision());
        guard.raft_term = guard.raft_term.max(header.raft_term());
        Ok(())
    }

    fn lock_guard(&self) -> std::sync::MutexGuard<'_, Guard> {
        // Three integers, each replaced whole: a poisoned lock still holds a usable value.
        self.guard
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Runs `request` on the current endpoint, moving to the next one when an attempt fails
    /// in a retryable way, hangs past its share of the deadline, or answers from the past;
    /// until `deadline`. Non-retryable errors return at once.
    pub(crate) async fn call<R, F, Fut>(
        &self,
        operation: &'static str,
        deadline: Instant,
        mut request: F,
    ) -> Result<Reply<R>>
    where
        R: Answer,
        F: FnMut(Client) -> Fut,
        Fut: Future<Output = Result<R, etcd_client::Error>>,
    {
        let mut retried = false;
        let mut rounds = 0_u32;
        loop {
            let index = self.current();
            let floor = self.floor();
            let attempt_deadline = deadline.min(Instant::now() + self.attempt_timeout);
            let attempt = async {
                let client = self.client(index).await?;
                request(client).await.map_err(from_client)
            };
            let error = match timeout_at(attempt_deadline, attempt).await {
                Ok(Ok(response)) => match self.check(floor, response.header()) {
                    Ok(()) => return Ok(Reply { response, retried }),
                    Err(stale) => stale,
                },
                Ok(Err(error)) if error.is_retryable() => error,
                Ok(Err(error)) => return Err(error),
                Err(_) => Error::Timeout {
                    operation,
                    after: self.attempt_timeout,
                },
            };
            tracing::debug!(endpoint = %self.urls[index], %error, operation, "etcd attempt failed");
            retried = true;
            self.rotate(index);
            if index + 1 == self.urls.len() {
                rounds += 1;
            }
            let pause = if rounds == 0 { Duration::ZERO } else { BACKOFF };
            if Instant::now() + pause >= deadline {
                return Err(error);
            }
            sleep(pause).await;
        }
    }
}

impl std::fmt::Debug for Endpoints {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoints")
            .field("urls", &self.urls)
            .field("current", &self.current())
            .field("attempt_timeout", &self.attempt_timeout)
            .field("guard", &self.floor())
            .finish_non_exhaustive()
    }
}
