//! The running agent: the HA loop around [`decide`](crate::ha::decide), the dead-man
//! switch, the REST API and the DCS connection.
//!
//! # The loop
//! Each cycle *observes* (one DCS snapshot, the local PostgreSQL, how the last renewal
//! went), *decides* with the pure [`decide`](crate::ha::decide) (asking the peers'
//! `GET /patroni` first when the decision needs them), then *acts*: the lease step, the
//! effects, the action; then it publishes the member key, the leader's `/status`,
//! `/history` and slots, and the REST API's snapshot. It sleeps until `loop_wait` has
//! passed, the DCS watch reports a change of `leader`, `config`, `failover` or `sync`, a
//! REST request arrives, a long action ends, or the lease needs attention.
//!
//! Long actions (`initdb`, `pg_basebackup`, `pg_rewind`, promote, start, restart) run as
//! tasks beside the loop, which keeps renewing the lease meanwhile.
//!
//! # Safety
//! - The loop counts a lease as expired a margin before its `valid_until` (a tenth of the
//!   ttl, between 0.5 and 2 s) and bounds every DCS call by the time left, so a slow or
//!   frozen store cannot keep it from demoting in time.
//! - The [`DeadMan`] switch fires shortly after that, and still before `valid_until`,
//!   if the loop did not stop PostgreSQL itself.
//! - PostgreSQL runs as the agent's own user (the agent refuses to run as root).

mod act;
mod callbacks;
mod deadman;
mod leader;
mod observe;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use dcs_core::model::ClusterConfig;
use dcs_core::{ClusterState, Dcs, LeaderLease, WatchOutcome};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

use crate::api::{self, Control, LocalRequest, NodeStatus, Snapshot};
use crate::config::Config;
use crate::ha::{LeaseState, LongAction, Settings};
use crate::postgres::{OsUser, Postgres, PostgresOptions};
pub use deadman::{DeadMan, run_guardian};

/// The test-only environment variable that turns off every safety stop: set to `1`, the
/// agent never demotes a primary on its own (lease lost or expired, another holder) and
/// never arms the dead-man switch. The chaos harness's negative control uses it to show
/// that its checker catches two writable primaries; nothing else may.
pub const UNSAFE_NEVER_DEMOTE_VAR: &str = "HA_AGENT_TEST_UNSAFE_NEVER_DEMOTE";

/// The Patroni version the agent publishes in its member key and `/patroni`: peers and
/// `patronictl` choose code paths by it, so it names the Patroni release whose behaviour
/// the agent follows.
pub const PATRONI_VERSION: &str = "4.0.4";

/// Why the agent stopped.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The REST API's address could not be bound.
    #[error("cannot listen on {address} for the REST API: {source}")]
    Listen {
        /// `restapi.listen`.
        address: String,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// The dead-man thread could not be started.
    #[error("cannot start the dead-man thread: {0}")]
    DeadMan(std::io::Error),
    /// The data directory belongs to another cluster, or the cluster was never
    /// initialized and this node is a replica: nothing may be touched.
    #[error("{0}")]
    WrongCluster(String),
    /// A `restapi` setting that would protect the API is not supported: serving without
    /// it would be less protected than the operator asked for.
    #[error("unsupported restapi settings: {}", .0.join("; "))]
    Unsupported(Vec<String>),
    /// A signal handler could not be installed.
    #[error("cannot install a signal handler: {0}")]
    Signal(std::io::Error),
}

/// Checks what `--validate-config` can check beyond the file itself: PostgreSQL's
/// programs and the data directory's parent.
///
/// # Errors
/// One line per problem.
pub fn check_environment(config: &Config) -> Result<(), Vec<String>> {
    let mut problems = api::unsupported_restapi_settings(&config.restapi);
    let programs = [
        "postgres",
        "pg_ctl",
        "initdb",
        "pg_controldata",
        "pg_basebackup",
        "psql",
    ];
    let rewind = config
        .postgresql
        .use_pg_rewind
        .unwrap_or_else(|| use_pg_rewind(&config.bootstrap.dcs));
    for program in programs.iter().chain(rewind.then_some(&"pg_rewind")) {
        let found = match &config.postgresql.bin_dir {
            Some(dir) => dir.join(program).is_file(),
            None => std::env::var_os("PATH").is_some_and(|path| {
                std::env::split_paths(&path).any(|dir| dir.join(program).is_file())
            }),
        };
        if !found {
            let place = config.postgresql.bin_dir.as_ref().map_or_else(
                || "on PATH".to_owned(),
                |dir| format!("in postgresql.bin_dir ({})", dir.display()),
            );
            problems.push(format!("postgresql: {program} not found {place}"));
        }
    }
    let data_dir = &config.postgresql.data_dir;
    if let Some(parent) = data_dir.parent().filter(|p| !p.as_os_str().is_empty())
        && !parent.is_dir()
    {
        problems.push(format!(
            "postgresql.data_dir: the parent directory {} does not exist",
            parent.display()
        ));
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems)
    }
}

/// `postgresql.use_pg_rewind` in a dynamic configuration (default off, as in Patroni).
fn use_pg_rewind(config: &ClusterConfig) -> bool {
    config
        .data
        .get("postgresql")
        .and_then(|pg| pg.get("use_pg_rewind"))
        .and_then(serde_json::Value::as_bool)
        .unwrap_or(false)
}

/// `postgresql.use_slots` in a dynamic configuration (default on, as in Patroni).
fn use_slots(config: &ClusterConfig) -> bool {
    config
        .data
        .get("postgresql")
        .and_then(|pg| pg.get("use_slots"))
        .and_then(serde_json::Value::as_bool)
        .unwrap_or(true)
}

/// How much earlier than a lease's `valid_until` the agent stops counting on it.
///
/// The loop treats the lease as expired `loop_margin` early, so it demotes with time to
/// spare; the dead-man switch fires `deadman_margin` early, after the loop had its
/// chance and still before anyone else can hold the lock.
#[derive(Clone, Copy, Debug)]
struct Margins {
    loop_margin: Duration,
    deadman_margin: Duration,
}

impl Margins {
    fn for_ttl(ttl: Duration) -> Self {
        // A tenth of the ttl, at least half a second and at most two: enough for one
        // `pg_ctl stop -m immediate`, small against the ttl.
        let loop_margin = (ttl / 10).clamp(Duration::from_millis(500), Duration::from_secs(2));
        Self {
            loop_margin,
            deadman_margin: loop_margin / 2,
        }
    }
}

/// A long action running beside the loop.
struct Long {
    kind: LongAction,
    task: tokio::task::JoinHandle<act::LongOutcome>,
    /// The REST request waiting for this action's end, if one started it.
    reply: Option<oneshot::Sender<api::LocalReply>>,
}

/// The loop's state between cycles.
struct Agent {
    config: Config,
    config_path: Option<PathBuf>,
    dcs: Arc<dyn Dcs>,
    pg: Postgres,
    lease: Option<LeaderLease>,
    lease_state: LeaseState,
    settings: Settings,
    dynamic: ClusterConfig,
    last_cluster: Option<ClusterState>,
    last_leader: Option<String>,
    long: Option<Long>,
    /// Notified by a long action when it ends, so the loop reaps it at once.
    long_done: Arc<tokio::sync::Notify>,
    deadman: DeadMan,
    margins: Margins,
    snapshots: watch::Sender<Snapshot>,
    node: NodeStatus,
    dcs_last_seen: u64,
    leader_cache: leader::Cache,
    /// Promoted, and the checkpoint after it has not finished (published as Patroni's
    /// `checkpoint_after_promote: false`).
    checkpoint_pending: bool,
    /// Consecutive cycles this running replica could not stream past a fork.
    diverged_cycles: u32,
    /// This replica was found forked off the leader's timeline: rewind it at its next
    /// start even though it was not a primary.
    needs_rewind: bool,
    /// [`UNSAFE_NEVER_DEMOTE_VAR`]: the negative control's broken agent.
    never_demote: bool,
    /// How PostgreSQL was last told to stream (`None`: as a primary, or not yet).
    standby: Option<crate::postgres::StandbySettings>,
    /// The highest timeline this running replica streamed (see `running_timeline`).
    streamed_timeline: Option<StreamedTimeline>,
    /// The highest timeline a primary of the cluster was seen on.
    highest_timeline: crate::ha::TimelineHighWater,
    /// `POST /restart` with a `schedule`, until it runs or is cancelled.
    scheduled_restart: Option<crate::ha::ScheduledRestart>,
    /// `postgresql.callbacks`, and what the last cycle saw to choose them.
    callbacks: callbacks::Callbacks,
    callback_memory: callbacks::Memory,
    /// Until when this member stays out of the leader race: its `pre_promote` script
    /// failed (Patroni's backoff).
    no_race_until: Option<Instant>,
}

/// A timeline a replica's WAL receiver streamed, and the postmaster it was seen in.
#[derive(Clone, Copy, Debug)]
struct StreamedTimeline {
    /// `pg_postmaster_start_time()` (its bits): a restarted server forgets.
    postmaster_start: Option<u64>,
    timeline: u64,
}

/// How a cycle ended.
enum CycleEnd {
    /// Sleep until the next wake-up.
    Sleep,
    /// Decide again at once (the lease was lost, a leader was just acquired, ...).
    Again,
    /// Stop the agent.
    Exit(AgentError),
}

/// Runs the agent until SIGTERM or SIGINT: connects to the DCS (retrying until it
/// answers), serves the REST API, and runs the HA loop. On the way out it stops
/// PostgreSQL (fast) and releases the leader lock, unless the cluster is paused; after an
/// error (a data directory of another cluster) it leaves PostgreSQL alone.
///
/// # Errors
/// [`AgentError`]: the REST API's port is taken, a signal handler or the dead-man
/// thread could not be set up, or the data directory belongs to another cluster.
pub async fn run(config: Config, config_path: Option<PathBuf>) -> Result<(), AgentError> {
    use tokio::signal::unix::{SignalKind, signal};

    let unsupported = api::unsupported_restapi_settings(&config.restapi);
    if !unsupported.is_empty() {
        return Err(AgentError::Unsupported(unsupported));
    }
    let mut stop_rx = stop_on_signals()?;
    let mut hangup = signal(SignalKind::hangup()).map_err(AgentError::Signal)?;

    let address = config.restapi.listen.to_string();
    let listener = TcpListener::bind(&address)
        .await
        .map_err(|source| AgentError::Listen {
            address: address.clone(),
            source,
        })?;
    tracing::info!("REST API listening on {address}");

    let Some(dcs) = connect_until_stopped(&config, &mut stop_rx).await else {
        return Ok(());
    };

    let mut node = NodeStatus::new(&config.scope, &config.name, PATRONI_VERSION);
    node.tags = config.tags.member_tags();
    node.noloadbalance = config.tags.noloadbalance;
    node.ttl = config.timing().ttl();
    let (snapshots, snapshot_rx) = watch::channel(Snapshot {
        node: node.clone(),
        cluster: None,
    });
    let (requests_tx, requests) = mpsc::channel(8);
    let control = Control {
        dcs: Arc::clone(&dcs),
        requests: requests_tx,
        authentication: config.restapi.authentication.clone(),
        allowlist: api::Allowlist::resolve(&config.restapi).await,
    };
    let mut api_stop = stop_rx.clone();
    let api = tokio::spawn(api::serve(
        listener,
        snapshot_rx,
        Some(control),
        async move {
            let _ = api_stop.wait_for(|stop| *stop).await;
        },
    ));

    let pg = Postgres::new(PostgresOptions::from_config(&config, OsUser::current()));
    let data_dir = pg.options().data_dir.clone();
    let mut deadman = DeadMan::start(data_dir.clone()).map_err(AgentError::DeadMan)?;
    match std::env::current_exe() {
        Ok(program) => deadman = deadman.with_guardian(&program, &data_dir),
        Err(error) => tracing::warn!(
            "cannot find the agent's own program for the dead-man guardian ({error}): a \
             frozen or killed agent will not have its primary stopped"
        ),
    }
    let settings = Settings::from_config(&config.bootstrap.dcs);
    let scripts = callbacks::Callbacks::new(&config.postgresql.callbacks, &config.scope);
    let mut agent = Agent {
        margins: Margins::for_ttl(config.timing().ttl()),
        dynamic: config.bootstrap.dcs.clone(),
        config,
        config_path,
        dcs,
        pg,
        lease: None,
        lease_state: LeaseState::NotHeld,
        settings,
        last_cluster: None,
        last_leader: None,
        long: None,
        long_done: Arc::new(tokio::sync::Notify::new()),
        deadman,
        snapshots,
        node,
        dcs_last_seen: 0,
        leader_cache: leader::Cache::default(),
        never_demote: unsafe_never_demote(),
        checkpoint_pending: false,
        diverged_cycles: 0,
        needs_rewind: false,
        standby: None,
        streamed_timeline: None,
        highest_timeline: crate::ha::TimelineHighWater::default(),
        scheduled_restart: None,
        callbacks: scripts,
        callback_memory: callbacks::Memory::default(),
        no_race_until: None,
    };
    let result = agent.run_loop(requests, &mut hangup, &mut stop_rx).await;
    if result.is_ok() {
        agent.shut_down().await;
    } else {
        // The data directory is not this cluster's: touch nothing, not even to stop it.
        agent.deadman.disarm();
        agent.deadman.flush(Duration::from_secs(1));
    }
    api.abort();
    result
}

/// A flag that turns true on SIGTERM or SIGINT.
fn stop_on_signals() -> Result<watch::Receiver<bool>, AgentError> {
    use tokio::signal::unix::{SignalKind, signal};

    let mut terminate = signal(SignalKind::terminate()).map_err(AgentError::Signal)?;
    let mut interrupt = signal(SignalKind::interrupt()).map_err(AgentError::Signal)?;
    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::spawn(async move {
        tokio::select! {
            _ = terminate.recv() => tracing::info!("received SIGTERM, shutting down"),
            _ = interrupt.recv() => tracing::info!("received SIGINT, shutting down"),
        }
        let _ = stop_tx.send(true);
    });
    Ok(stop_rx)
}

/// Whether the test-only [`UNSAFE_NEVER_DEMOTE_VAR`] is set, said loudly when it is.
fn unsafe_never_demote() -> bool {
    let set = std::env::var(UNSAFE_NEVER_DEMOTE_VAR).is_ok_and(|v| v == "1");
    if set {
        tracing::error!(
            "{UNSAFE_NEVER_DEMOTE_VAR}=1: this agent will NOT demote a primary that lost its \
             lease and has no dead-man switch. Test use only: it allows two primaries."
        );
    }
    set
}

/// Connects to the DCS, retrying every few seconds until it answers or the agent is told
/// to stop (Patroni also waits for its DCS at startup).
async fn connect_until_stopped(
    config: &Config,
    stop: &mut watch::Receiver<bool>,
) -> Option<Arc<dyn Dcs>> {
    let pause = Duration::from_secs(2);
    loop {
        let attempt = crate::connect::connect(config);
        tokio::select! {
            result = attempt => match result {
                Ok(dcs) => return Some(dcs),
                Err(error) => tracing::warn!("cannot connect to the DCS yet: {error}; retrying"),
            },
            _ = stop.wait_for(|stop| *stop) => return None,
        }
        tokio::select! {
            () = tokio::time::sleep(pause) => {}
            _ = stop.wait_for(|stop| *stop) => return None,
        }
    }
}

impl Agent {
    async fn run_loop(
        &mut self,
        mut requests: mpsc::Receiver<LocalRequest>,
        hangup: &mut tokio::signal::unix::Signal,
        stop: &mut watch::Receiver<bool>,
    ) -> Result<(), AgentError> {
        let mut quick_cycles = 0u32;
        loop {
            if *stop.borrow() {
                return Ok(());
            }
            let started = Instant::now();
            match self.cycle().await {
                CycleEnd::Exit(error) => return Err(error),
                // A bounded number of immediate cycles: a decision that keeps asking
                // for another one must not spin.
                CycleEnd::Again if quick_cycles < 5 => {
                    quick_cycles += 1;
                    continue;
                }
                CycleEnd::Again | CycleEnd::Sleep => quick_cycles = 0,
            }
            let until = self.next_wake(started);
            self.node.next_run = until.into_std();
            self.publish_snapshot();
            let wait = until.saturating_duration_since(Instant::now());
            let watched = self.last_cluster.clone();
            let dcs = Arc::clone(&self.dcs);
            let watch = async move {
                match watched {
                    Some(cluster) => match dcs.watch(&cluster, wait).await {
                        Ok(WatchOutcome::Changed) => {}
                        // The store did not answer the watch: sleep out the cycle.
                        Ok(WatchOutcome::TimedOut) | Err(_) => {
                            tokio::time::sleep_until(until).await;
                        }
                    },
                    None => tokio::time::sleep_until(until).await,
                }
            };
            let long_done = Arc::clone(&self.long_done);
            tokio::select! {
                () = watch => {}
                () = long_done.notified() => {}
                request = requests.recv() => {
                    if let Some(request) = request {
                        self.handle_request(request).await;
                    }
                }
                _ = hangup.recv() => self.reload().await.map_or_else(
                    |error| tracing::error!("reload failed: {error}"),
                    |message| tracing::info!("{message}"),
                ),
                _ = stop.wait_for(|stop| *stop) => return Ok(()),
            }
        }
    }

    /// When the next cycle is due: `loop_wait` after this one started, earlier when a
    /// held lease needs renewing before its margin or a scheduled switchover or restart
    /// falls due.
    fn next_wake(&self, started: Instant) -> Instant {
        let mut until = started + self.settings.loop_wait;
        if let LeaseState::Held { valid_until, .. } = self.lease_state {
            // Wake up in time to renew (or demote) before the lease runs out.
            until = until.min(valid_until);
        }
        let switchover = self
            .last_cluster
            .as_ref()
            .and_then(|c| c.failover.as_ref())
            .and_then(|f| f.value.scheduled_at.as_deref())
            .and_then(crate::ha::parse_scheduled_at);
        let restart = self.scheduled_restart.as_ref().map(|r| r.at);
        let wall_clock = std::time::SystemTime::now();
        for at in [switchover, restart].into_iter().flatten() {
            // A time already passed needs no wake-up: the next cycle handles it anyway.
            if let Ok(ahead) = at.duration_since(wall_clock) {
                until = until.min(Instant::now() + ahead);
            }
        }
        until.max(Instant::now() + Duration::from_millis(50))
    }

    fn publish_snapshot(&self) {
        self.snapshots.send_replace(Snapshot {
            node: self.node.clone(),
            cluster: self.last_cluster.clone(),
        });
    }

    /// The lease state as `decide` sees it: the lease's `valid_until` moved earlier by
    /// the loop's margin.
    fn held(&self, lease: &LeaderLease, last_renewal: crate::ha::Renewal) -> LeaseState {
        LeaseState::Held {
            valid_until: lease.valid_until() - self.margins.loop_margin,
            last_renewal,
        }
    }

    /// Arms the dead-man switch for `lease`.
    fn arm_deadman(&self, lease: &LeaderLease) {
        // Paused, the operator is in charge and a primary outlives its lease, as in
        // Patroni (which disables its watchdog in pause).
        if self.never_demote || self.settings.pause {
            self.deadman.disarm();
            return;
        }
        self.deadman
            .arm((lease.valid_until() - self.margins.deadman_margin).into_std());
    }

    /// Time left before the loop stops counting on the lease; `None` without one.
    fn lease_time_left(&self) -> Option<Duration> {
        match self.lease_state {
            LeaseState::Held { valid_until, .. } => {
                Some(valid_until.saturating_duration_since(Instant::now()))
            }
            LeaseState::NotHeld | LeaseState::Lost { .. } => None,
        }
    }

    /// Runs a DCS call, bounded by the time left on a held lease: a frozen store must not
    /// keep the loop from demoting in time.
    async fn bounded<T>(
        &self,
        call: impl std::future::Future<Output = dcs_core::Result<T>>,
    ) -> dcs_core::Result<T> {
        match self.lease_time_left() {
            Some(left) => tokio::time::timeout(left, call).await.unwrap_or_else(|_| {
                Err(dcs_core::Error::Timeout {
                    operation: "a DCS request",
                    after: left,
                })
            }),
            None => call.await,
        }
    }

    /// Stops the agent: PostgreSQL stopped (fast) and the lock released, unless paused.
    async fn shut_down(&mut self) {
        if let Some(long) = self.long.take() {
            tracing::info!("abandoning {} on shutdown", long.kind.as_str());
        }
        if self.settings.pause {
            tracing::info!(
                "paused: leaving PostgreSQL running and the leader key in place on shutdown"
            );
            self.deadman.disarm();
            self.deadman.flush(Duration::from_secs(1));
            return;
        }
        match self.pg.stop(crate::postgres::StopMode::Fast).await {
            Ok(true) => {
                tracing::info!("stopped PostgreSQL");
                let role = self
                    .callback_memory
                    .last_primary
                    .map_or(
                        "replica",
                        |primary| {
                            if primary { "primary" } else { "replica" }
                        },
                    );
                self.callbacks.call(callbacks::Action::Stop, role);
            }
            Ok(false) => {}
            Err(error) => tracing::error!("stopping PostgreSQL on shutdown failed: {error}"),
        }
        self.deadman.disarm();
        self.deadman.flush(Duration::from_secs(1));
        if let Some(lease) = self.lease.take() {
            match self.dcs.release_leader(lease).await {
                Ok(()) => tracing::info!("released the leader lock"),
                Err(error) => tracing::warn!("releasing the leader lock failed: {error}"),
            }
        }
    }
}
