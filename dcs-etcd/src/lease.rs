//! The client's one etcd lease, kept alive on request only.
//!
//! A task owns the lease and its keep-alive stream; contract calls ask it for one
//! keep-alive and await the answer within their own deadline. The task never renews on its
//! own: when its caller goes silent (died, hung, cut off), the lease expires after its ttl
//! and takes the leader key and the member key with it. Because the task owns the stream, a
//! caller that gives up mid-request (its deadline passed) cannot leave an unread answer
//! behind for the next caller to mistake for its own.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use dcs_core::{Error, Result};
use etcd_client::{LeaseGrantResponse, LeaseKeepAliveStream, LeaseKeeper};
use tokio::sync::{mpsc, oneshot};
use tokio::time::{Instant, timeout_at};

use crate::endpoints::Endpoints;
use crate::error::{from_client, is_lease_not_found};

/// A lease known to be alive until `sent_at + ttl`: the server heard a grant or keep-alive
/// sent at `sent_at` and counts its ttl from when it received it, which is later.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Alive {
    pub(crate) id: i64,
    pub(crate) sent_at: Instant,
    pub(crate) ttl: Duration,
}

impl Alive {
    /// The instant until which the server keeps the lease, at least.
    pub(crate) fn valid_until(&self) -> Instant {
        self.sent_at + self.ttl
    }
}

enum Request {
    /// Extend the lease (granting a new one if it is gone) and report it.
    KeepAlive {
        deadline: Instant,
        reply: oneshot::Sender<Result<Alive>>,
    },
    /// The lease `id` is gone on the server (a write bound to it was refused): grant a new
    /// one next time.
    Forget { id: i64 },
    /// Revoke the lease, deleting every key bound to it.
    Revoke {
        deadline: Instant,
        reply: oneshot::Sender<Result<()>>,
    },
}

/// The handle contract calls use; the task stops when the last handle is dropped, without
/// revoking anything (a dropped client behaves as a dead process).
#[derive(Debug, Clone)]
pub(crate) struct Lease {
    requests: mpsc::Sender<Request>,
    /// The deadline of one call, reported when a keep-alive misses it.
    retry_timeout: Duration,
    /// The id of the lease the task holds, 0 for none: lets a call send its write bound to
    /// the lease together with the keep-alive instead of after it.
    current: Arc<AtomicI64>,
}

impl Lease {
    /// Starts the task. `ttl` is the contract's ttl; the lease is granted for it rounded up
    /// to whole seconds (etcd's unit), and validity uses the shorter of the two.
    pub(crate) fn start(endpoints: Arc<Endpoints>, ttl: Duration, retry_timeout: Duration) -> Self {
        let (requests, inbox) = mpsc::channel(16);
        let current = Arc::new(AtomicI64::new(0));
        let task = Keeper {
            endpoints,
            ttl,
            retry_timeout,
            lease: None,
            stream: None,
            current: Arc::clone(&current),
        };
        tokio::spawn(task.run(inbox));
        Self {
            requests,
            retry_timeout,
            current,
        }
    }

    /// The lease the task holds now, if any (it may have expired on the server).
    pub(crate) fn current(&self) -> Option<i64> {
        Some(self.current.load(Ordering::Acquire)).filter(|id| *id != 0)
    }

    /// One keep-alive of the client's lease (a new lease if it has none or it expired),
    /// answered before `deadline`.
    pub(crate) async fn keep_alive(&self, deadline: Instant) -> Result<Alive> {
        let (reply, answer) = oneshot::channel();
        self.send(Request::KeepAlive { deadline, reply }).await?;
        match timeout_at(deadline, answer).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(stopped()),
            Err(_) => Err(Error::Timeout {
                operation: "lease keep-alive",
                after: self.retry_timeout,
            }),
        }
    }

    /// Tells the task that lease `id` is gone on the server.
    pub(crate) async fn forget(&self, id: i64) {
        let _ = self.requests.send(Request::Forget { id }).await;
    }

    /// Revokes the lease: its keys disappear at once.
    pub(crate) async fn revoke(&self, deadline: Instant) -> Result<()> {
        let (reply, answer) = oneshot::channel();
        self.send(Request::Revoke { deadline, reply }).await?;
        answer.await.map_err(|_| stopped())?
    }

    async fn send(&self, request: Request) -> Result<()> {
        self.requests.send(request).await.map_err(|_| stopped())
    }
}

fn stopped() -> Error {
    Error::Other {
        message: "the etcd lease task stopped".to_owned(),
        source: None,
    }
}

struct Keeper {
    endpoints: Arc<Endpoints>,
    ttl: Duration,
    retry_timeout: Duration,
    /// The lease and the ttl the server granted for it.
    lease: Option<(i64, Duration)>,
    /// The keep-alive stream of the current lease, and the endpoint it runs on.
    stream: Option<(usize, LeaseKeeper, LeaseKeepAliveStream)>,
    /// `lease`'s id for [`Lease::current`], 0 for none.
    current: Arc<AtomicI64>,
}

impl Keeper {
    fn set_lease(&mut self, lease: Option<(i64, Duration)>) {
        self.lease = lease;
        self.stream = None;
        self.current
            .store(lease.map_or(0, |(id, _)| id), Ordering::Release);
    }

    async fn run(mut self, mut inbox: mpsc::Receiver<Request>) {
        while let Some(request) = inbox.recv().await {
            match request {
                Request::KeepAlive { deadline, reply } => {
                    if reply.is_closed() {
                        // The caller gave up: renewing now would keep its keys alive for
                        // a call that reported failure.
                        continue;
                    }
                    let result =
                        if let Ok(result) = timeout_at(deadline, self.keep_alive(deadline)).await {
                            result
                        } else {
                            // Whatever the stream still owes us is of no use now.
                            self.stream = None;
                            Err(Error::Timeout {
                                operation: "lease keep-alive",
                                after: self.retry_timeout,
                            })
                        };
                    let _ = reply.send(result);
                }
                Request::Forget { id } => {
                    if self.lease.is_some_and(|(current, _)| current == id) {
                        self.set_lease(None);
                    }
                }
                Request::Revoke { deadline, reply } => {
                    let _ = reply.send(self.revoke(deadline).await);
                }
            }
        }
    }

    /// The ttl to ask for: whole seconds, rounded up so the key lives at least `ttl`.
    fn ttl_secs(&self) -> i64 {
        i64::try_from(self.ttl.as_secs() + u64::from(self.ttl.subsec_nanos() > 0))
            .unwrap_or(i64::MAX)
    }

    /// The validity a server ttl gives: never more than the contract's ttl.
    fn validity(&self, server_ttl: i64) -> Duration {
        self.ttl
            .min(Duration::from_secs(u64::try_from(server_ttl).unwrap_or(0)))
    }

    async fn keep_alive(&mut self, deadline: Instant) -> Result<Alive> {
        loop {
            let Some((id, granted)) = self.lease else {
                return self.grant(deadline).await;
            };
            match self.refresh(id, granted).await {
                Ok(Some(alive)) => return Ok(alive),
                // Expired on the server: a new lease, whose keys start afresh.
                Ok(None) => {
                    tracing::info!(lease = id, "etcd lease expired; granting a new one");
                    self.set_lease(None);
                }
                Err(error) if error.is_retryable() => {
                    if let Some((index, _, _)) = self.stream.take() {
                        self.endpoints.rotate(index);
                    }
                    if Instant::now() + self.endpoints.attempt_timeout() / 4 >= deadline {
                        return Err(error);
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(error) => return Err(error),
            }
        }
    }

    async fn grant(&mut self, deadline: Instant) -> Result<Alive> {
        let ttl = self.ttl_secs();
        let sent_at = Instant::now();
        let reply = self
            .endpoints
            .call("lease grant", deadline, |mut client| async move {
                client.lease_grant(ttl, None).await
            })
            .await?;
        let response: LeaseGrantResponse = reply.response;
        if !response.error().is_empty() {
            return Err(Error::unavailable(format!(
                "etcd refused a lease: {}",
                response.error()
            )));
        }
        let granted = Duration::from_secs(u64::try_from(response.ttl()).unwrap_or(0));
        self.set_lease(Some((response.id(), granted)));
        Ok(Alive {
            id: response.id(),
            sent_at,
            ttl: self.validity(response.ttl()),
        })
    }

    /// One keep-alive on the stream (opened on the current endpoint if needed). `None` when
    /// the server no longer knows the lease.
    async fn refresh(&mut self, id: i64, granted: Duration) -> Result<Option<Alive>> {
        let attempt_deadline = Instant::now() + self.endpoints.attempt_timeout();
        let sent_at = Instant::now();
        if self.stream.is_none() {
            let index = self.endpoints.current();
            let opened = timeout_at(attempt_deadline, async {
                let mut client = self.endpoints.client(index).await?;
                client.lease_keep_alive(id).await.map_err(from_client)
            })
            .await;
            return match opened {
                // Opening the stream sent a keep-alive and read a positive ttl back.
                Ok(Ok((keeper, stream))) => {
                    self.stream = Some((index, keeper, stream));
                    Ok(Some(Alive {
                        id,
                        sent_at,
                        ttl: self.ttl.min(granted),
                    }))
                }
                Ok(Err(Error::Unavailable { message, .. }))
                    if message.contains("lease not found") =>
                {
                    Ok(None)
                }
                Ok(Err(error)) if is_lease_not_found(&error) => Ok(None),
                Ok(Err(error)) => {
                    self.endpoints.rotate(index);
                    Err(error)
                }
                Err(_) => {
                    self.endpoints.rotate(index);
                    Err(Error::Timeout {
                        operation: "lease keep-alive",
                        after: self.endpoints.attempt_timeout(),
                    })
                }
            };
        }
        let floor = self.endpoints.floor();
        let Some((_, keeper, stream)) = self.stream.as_mut() else {
            unreachable!("opened above");
        };
        let answer = timeout_at(attempt_deadline, async {
            keeper.keep_alive().await.map_err(from_client)?;
            stream.message().await.map_err(from_client)
        })
        .await;
        match answer {
            Ok(Ok(Some(response))) => {
                self.endpoints.check(floor, response.header())?;
                if response.ttl() <= 0 {
                    return Ok(None);
                }
                Ok(Some(Alive {
                    id,
                    sent_at,
                    ttl: self.validity(response.ttl()),
                }))
            }
            Ok(Ok(None)) => Err(Error::unavailable(
                "etcd closed the lease keep-alive stream",
            )),
            Ok(Err(error)) => Err(error),
            Err(_) => Err(Error::Timeout {
                operation: "lease keep-alive",
                after: self.endpoints.attempt_timeout(),
            }),
        }
    }

    async fn revoke(&mut self, deadline: Instant) -> Result<()> {
        let Some((id, _)) = self.lease else {
            return Ok(());
        };
        self.set_lease(None);
        let result = self
            .endpoints
            .call("lease revoke", deadline, |mut client| async move {
                client.lease_revoke(id).await
            })
            .await;
        match result {
            Ok(_) => Ok(()),
            // Already gone: what revoking wanted.
            Err(error) if is_lease_not_found(&error) => Ok(()),
            Err(error) => Err(error),
        }
    }
}
