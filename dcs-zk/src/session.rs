//! One ZooKeeper session of a [`ZooKeeperDcs`](crate::ZooKeeperDcs): its client, its guard
//! and its persistent-recursive watch.
//!
//! The session is *detached*: dropping it closes the connection without telling the
//! server, exactly as a dead process would, and the server expires it after the session
//! timeout. Ending it on purpose (the guard, [`ZooKeeperDcs::close`](crate::ZooKeeperDcs::close))
//! goes through [`close_session`], which makes the server delete its ephemeral nodes at once.

use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use dcs_core::{Error, Result};
use tokio::sync::{Mutex as AsyncMutex, OnceCell, watch};
use tokio::task::AbortHandle;
use tokio::time::Instant;
use zookeeper_client::{AddWatchMode, Client, Connector, EventType, SessionState};

use crate::error::to_dcs;

/// How long after `last keep-alive + ttl` the guard ends a silent session. A competitor's
/// request sent just before the holder's deadline must not find the key already gone, so
/// the close leaves a margin for that request to arrive; the margin is well inside the
/// server's own expiry granularity (one tick).
pub(crate) const GUARD_GRACE: Duration = Duration::from_millis(100);

/// Where a client keeps its current session; the guard holds it weakly.
pub(crate) type Slot = Arc<AsyncMutex<Option<Arc<LiveSession>>>>;

/// How to open sessions: the connector template (TLS, auth; attached) and where to connect.
#[derive(Clone, Debug)]
pub(crate) struct Opener {
    pub(crate) connector: Connector,
    pub(crate) connect_string: String,
    pub(crate) secure: bool,
}

impl Opener {
    async fn connect(&self, connector: Connector) -> Result<Client, zookeeper_client::Error> {
        if self.secure {
            connector.secure_connect(&self.connect_string).await
        } else {
            connector.connect(&self.connect_string).await
        }
    }
}

/// The keep-alive bookkeeping the guard and the callers share.
#[derive(Debug, Default)]
struct KeepAlive {
    /// Send time of the latest acquire, renew or publish on this session, recorded *before*
    /// the request is sent, so the guard can never close under a request in flight.
    last: Option<Instant>,
    /// The guard (or `close`) decided to end this session: no more keep-alives on it.
    closing: bool,
}

/// A live session and what hangs off it.
#[derive(Debug)]
pub(crate) struct LiveSession {
    pub(crate) client: Client,
    /// The negotiated session timeout, which the server may have clamped.
    pub(crate) timeout: Duration,
    keepalive: Mutex<KeepAlive>,
    keepalive_changed: watch::Sender<()>,
    /// Bumped on every created/changed/deleted event of a watched key.
    events: watch::Sender<u64>,
    watching: OnceCell<()>,
    tasks: Mutex<Vec<AbortHandle>>,
}

impl Drop for LiveSession {
    fn drop(&mut self) {
        // A dropped session must not be kept alive, nor closed, by anything of ours.
        for task in self
            .tasks
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .drain(..)
        {
            task.abort();
        }
    }
}

impl LiveSession {
    /// Opens a new session and starts its guard.
    pub(crate) async fn open(opener: &Opener, ttl: Duration, slot: &Slot) -> Result<Arc<Self>> {
        // Detached: dropping it closes the connection without closing the session.
        let client = opener
            .connect(
                opener
                    .connector
                    .clone()
                    .with_session_timeout(ttl)
                    .with_detached(),
            )
            .await
            .map_err(|e| to_dcs(e, ""))?;
        let timeout = client.session_timeout();
        if timeout != ttl {
            tracing::warn!(
                requested = ?ttl,
                negotiated = ?timeout,
                "ZooKeeper negotiated another session timeout than ttl (minSessionTimeout / \
                 maxSessionTimeout); leases last the shorter of the two"
            );
        }
        let session = Arc::new(Self {
            client,
            timeout,
            keepalive: Mutex::new(KeepAlive::default()),
            keepalive_changed: watch::Sender::new(()),
            events: watch::Sender::new(0),
            watching: OnceCell::new(),
            tasks: Mutex::new(Vec::new()),
        });
        let guard = tokio::spawn(guard(
            Arc::downgrade(&session),
            Arc::downgrade(slot),
            session.keepalive_changed.subscribe(),
            opener.clone(),
            ttl,
        ));
        session.track(guard.abort_handle());
        Ok(session)
    }

    fn track(&self, task: AbortHandle) {
        self.tasks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(task);
    }

    /// The session id, as the `ephemeralOwner` of its nodes.
    pub(crate) fn id(&self) -> i64 {
        self.client.session_id().0
    }

    /// The session id as the contract's owner text.
    pub(crate) fn owner(&self) -> String {
        owner_text(self.id())
    }

    /// Whether nothing can be done on this session any more.
    pub(crate) fn is_over(&self) -> bool {
        self.client.state().is_terminated() || self.lock().closing
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, KeepAlive> {
        self.keepalive
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Records a keep-alive sent at `sent_at`; `false` if the session is being closed.
    pub(crate) fn keep_alive(&self, sent_at: Instant) -> bool {
        let mut state = self.lock();
        if state.closing {
            return false;
        }
        state.last = Some(state.last.map_or(sent_at, |last| last.max(sent_at)));
        drop(state);
        self.keepalive_changed.send_replace(());
        true
    }

    /// Marks the session as closing if its last keep-alive is still `seen`.
    fn start_closing(&self, seen: Option<Instant>) -> bool {
        let mut state = self.lock();
        if state.closing || state.last != seen {
            return false;
        }
        state.closing = true;
        true
    }

    /// Marks the session as closing, whatever its keep-alives.
    pub(crate) fn mark_closing(&self) {
        self.lock().closing = true;
    }

    /// Waits until the session is connected, bounded by the caller's deadline. `Ok(false)`
    /// when the session ended instead.
    pub(crate) async fn connected(&self) -> bool {
        let mut states = self.client.state_watcher();
        loop {
            match states.peek_state() {
                SessionState::SyncConnected | SessionState::ConnectedReadOnly => return true,
                state if state.is_terminated() => return false,
                _ => {
                    states.changed().await;
                }
            }
        }
    }

    /// Registers the one persistent-recursive watch of this session on `scope` (once), and
    /// returns a receiver of the event counter, already marked seen.
    ///
    /// `watched` are the full paths whose events count. One watch per session, and no
    /// standard watch ever (ZOOKEEPER-4466: a standard and a persistent watch on one path in
    /// one session lose events on 3.8).
    pub(crate) async fn watch(
        &self,
        scope: &str,
        watched: Arc<[String]>,
    ) -> Result<watch::Receiver<u64>> {
        // Subscribe first: an event between registration and the caller's read still counts.
        let receiver = self.events.subscribe();
        self.watching
            .get_or_try_init(|| async {
                let mut persistent = self
                    .client
                    .watch(scope, AddWatchMode::PersistentRecursive)
                    .await
                    .map_err(|e| to_dcs(e, ""))?;
                let events = self.events.clone();
                let task = tokio::spawn(async move {
                    loop {
                        let event = persistent.changed().await;
                        if event.event_type == EventType::Session {
                            if event.session_state.is_terminated() {
                                // No more events after a terminal state (the watcher panics).
                                return;
                            }
                            continue;
                        }
                        if watched.contains(&event.path) {
                            events.send_modify(|n| *n += 1);
                        }
                    }
                });
                self.track(task.abort_handle());
                Ok::<_, Error>(())
            })
            .await?;
        Ok(receiver)
    }
}

/// The owner text of a session id, as ZooKeeper prints it (`0x1000...`).
pub(crate) fn owner_text(id: i64) -> String {
    #[allow(clippy::cast_sign_loss, reason = "a session id is 64 opaque bits")]
    let bits = id as u64;
    format!("{bits:#x}")
}

/// Ends the session of `session` on the server, which deletes its ephemeral nodes at once.
///
/// zookeeper-client sends `closeSession` only when the last handle of a non-detached client
/// drops; ours is detached (so that a dropped `ZooKeeperDcs` behaves like a dead process).
/// So this re-attaches to the session through a second, non-detached connection and drops
/// it, then waits until the server confirmed the close. If that fails (the ensemble is
/// unreachable), the session expires on the server instead, one session timeout after it
/// last heard from us.
pub(crate) async fn close_session(session: Arc<LiveSession>, opener: &Opener) -> Result<()> {
    session.mark_closing();
    let info = session.client.session().clone();
    let timeout = session.timeout;
    let mut old = session.client.state_watcher();
    // The detached client goes first: two connections of one session steal it from each
    // other. Its connection closes without a word to the server once its last handle
    // drops; a handle a call still uses goes within that call's deadline.
    drop(session);
    while !old.peek_state().is_terminated() {
        old.changed().await;
    }
    // Not detached: dropping the last handle of this client sends closeSession.
    let connector = opener
        .connector
        .clone()
        .with_session(info)
        .with_session_timeout(timeout)
        .with_fail_eagerly();
    let client = match opener.connect(connector).await {
        Ok(client) => client,
        // Already expired: the server deleted the ephemeral nodes itself.
        Err(zookeeper_client::Error::SessionExpired) => return Ok(()),
        Err(e) => return Err(to_dcs(e, "")),
    };
    let mut states = client.state_watcher();
    drop(client);
    loop {
        let state = states.changed().await;
        if state.is_terminated() {
            return Ok(());
        }
    }
}

/// Ends the session once `ttl` (plus [`GUARD_GRACE`]) has passed since the last keep-alive
/// without a newer one. Holds only a weak reference: a dropped session is not kept alive.
async fn guard(
    session: Weak<LiveSession>,
    slot: Weak<AsyncMutex<Option<Arc<LiveSession>>>>,
    mut changed: watch::Receiver<()>,
    opener: Opener,
    ttl: Duration,
) {
    loop {
        let seen = match session.upgrade() {
            Some(session) => session.lock().last,
            None => return,
        };
        let Some(last) = seen else {
            if changed.changed().await.is_err() {
                return;
            }
            continue;
        };
        tokio::select! {
            result = changed.changed() => {
                if result.is_err() {
                    return;
                }
            }
            () = tokio::time::sleep_until(last + ttl + GUARD_GRACE) => {
                let Some(strong) = session.upgrade() else { return };
                if !strong.start_closing(seen) {
                    continue;
                }
                tracing::info!(
                    session = %strong.owner(),
                    "no acquire, renew or publish for ttl: closing the ZooKeeper session, \
                     which deletes its leader and member nodes"
                );
                // The close outlives this task, which the session aborts when it drops.
                let opener = opener.clone();
                let deadline = strong.timeout * 2;
                tokio::spawn(async move {
                    // Out of the client's hands first, so that its next call opens a new
                    // session and nothing keeps this one connected.
                    if let Some(slot) = slot.upgrade() {
                        let mut slot = slot.lock().await;
                        if slot.as_ref().is_some_and(|current| Arc::ptr_eq(current, &strong)) {
                            *slot = None;
                        }
                    }
                    match tokio::time::timeout(deadline, close_session(strong, &opener)).await {
                        Ok(Ok(())) => {}
                        Ok(Err(e)) => tracing::warn!(
                            error = %e,
                            "could not close a silent ZooKeeper session; it expires on the \
                             server instead"
                        ),
                        Err(_) => tracing::warn!(
                            "closing a silent ZooKeeper session timed out; it expires on the \
                             server instead"
                        ),
                    }
                });
                return;
            }
        }
    }
}
