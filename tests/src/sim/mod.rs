//! The deterministic simulation: several agents' HA loops around the real
//! [`decide`](ha_agent::ha::decide), over [`FaultyDcs`] clients of one [`MemoryStore`],
//! each with a simulated PostgreSQL, written to by clients and hit by faults drawn from a
//! seed, all on a paused tokio clock. A run of a few simulated minutes takes
//! milliseconds, and one seed always gives the same [`History`].
//!
//! ```no_run
//! use dcs_tests::sim::{SimOptions, run};
//!
//! let report = run(42, &SimOptions::default());
//! assert!(report.violations.is_empty(), "{}", report.summary());
//! ```
//!
//! # What is simulated
//! - **Agents**: the real agent's observe → decide → act loop, lease margins,
//!   bounded DCS calls, dead-man, peer probes, `/status` and `/history`.
//! - **PostgreSQL**: stopped, starting, replica, promoting or primary; a timeline; a WAL
//!   of committed rows. A replica streams from its upstream while both run and its WAL
//!   is a prefix of the upstream's; start and promotion take [`PG_ACTION`] (a new
//!   timeline, one more than the server's own); a stop is immediate; a stopped server
//!   joining a leader on a later timeline is rewound onto it.
//! - **Clients**: one per node, writing one unique row every
//!   [`SimOptions::write_interval`], with a few milliseconds to commit and to answer. A
//!   write is `ok` when the server was primary at commit and still up at the answer,
//!   `unknown` when it committed but the server stopped before answering, `failed`
//!   otherwise.
//! - **Faults** ([`FaultKind`]), one at a time after a warm-up, on the primary half the
//!   time and on a random node otherwise, then healed; the run ends with everything
//!   healed and [`SimOptions::settle`] of quiet writes.
//!
//! # Determinism
//! One current-thread runtime with paused time: tasks interleave only at `await`s, in
//! an order fixed by the program; every random draw comes from `SplitMix64` generators
//! seeded from the run's seed; every `select!` is biased. No wall clock is read.

mod agent;
mod postgres;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dcs_core::model::ClusterConfig;
use dcs_core::{
    ClientOptions, ClusterPath, Dcs as _, DcsExt as _, FaultHandle, FaultyDcs, MemoryStore,
    Precondition, Timing,
};
use serde::Serialize;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::checker::{self, Availability, Durability, Violation};
use crate::history::{FaultEvent, History, Op, OpKind, Outcome};
use postgres::SimPostgres;

/// How long the cluster runs before the first fault: long enough to elect a leader.
pub const WARM_UP: Duration = Duration::from_secs(10);

/// How long a simulated `pg_ctl start` or `pg_ctl promote` takes.
pub const PG_ACTION: Duration = Duration::from_secs(1);

/// A fault the nemesis can inject.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FaultKind {
    /// The node's agent is cut off from the store: every request is refused.
    Partition,
    /// The agent's loop is stuck (a hung call, a starved runtime): it does nothing, its
    /// API does not change, but the dead-man thread still runs. PostgreSQL keeps
    /// accepting writes.
    LoopFreeze,
    /// The agent process is stopped (`SIGSTOP`): loop, API and dead-man all freeze;
    /// PostgreSQL, a separate process, keeps accepting writes. On `SIGCONT` the dead-man
    /// fires first if its deadline passed.
    ProcessFreeze,
    /// Half of the agent's store requests are applied but their replies lost.
    LostReplies,
    /// Every store request of the agent is delayed by 0.5 to 3 s.
    Latency,
    /// The agent process dies (`kill -9`; its dead-man with it) and is restarted after
    /// [`SimOptions::agent_restart`], with a new store session. PostgreSQL keeps
    /// running, as the real postmaster outlives its agent.
    AgentCrash,
    /// PostgreSQL crashes; the agent restarts it.
    PostgresCrash,
}

impl FaultKind {
    /// Every kind.
    pub const ALL: [Self; 7] = [
        Self::Partition,
        Self::LoopFreeze,
        Self::ProcessFreeze,
        Self::LostReplies,
        Self::Latency,
        Self::AgentCrash,
        Self::PostgresCrash,
    ];

    /// The name in [`FaultEvent::kind`].
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Partition => "partition",
            Self::LoopFreeze => "loop-freeze",
            Self::ProcessFreeze => "process-freeze",
            Self::LostReplies => "lost-replies",
            Self::Latency => "latency",
            Self::AgentCrash => "agent-crash",
            Self::PostgresCrash => "postgres-crash",
        }
    }
}

/// What one run simulates.
#[derive(Clone, Debug)]
pub struct SimOptions {
    /// How many nodes (agent + PostgreSQL each).
    pub nodes: usize,
    /// `ttl`, `loop_wait`, `retry_timeout` (the `config` key and every client's).
    pub timing: Timing,
    /// How long faults are injected, after a [`WARM_UP`].
    pub duration: Duration,
    /// How long the run goes on after the last fault was healed.
    pub settle: Duration,
    /// How often each client writes.
    pub write_interval: Duration,
    /// The kinds the nemesis draws from; empty for a run without faults.
    pub faults: Vec<FaultKind>,
    /// How long a fault lasts: uniform in this range.
    pub fault_length: (Duration, Duration),
    /// How long a crashed agent stays down: uniform in this range.
    pub agent_restart: (Duration, Duration),
    /// Whether a primary that lost its lease demotes (the real agent). `false` is the
    /// negative control: it keeps running as primary.
    pub demote_on_lease_loss: bool,
    /// Whether the dead-man switch is armed (the real agent). Off in the negative control.
    pub deadman: bool,
    /// Whether the agent's dead-man *guardian* — a process of its own
    /// (`ha-agent --dead-man`), fed the dead-man's deadline — is modelled: it fires even
    /// while the agent process is stopped or dead. On by default, as in the real agent;
    /// off shows why it is there.
    pub watchdog: bool,
}

impl Default for SimOptions {
    /// Three nodes, `ttl` 10 s, `loop_wait` 2 s, `retry_timeout` 4 s, two
    /// simulated minutes of every fault kind, the real agent's safety on (dead-man
    /// thread and guardian).
    fn default() -> Self {
        Self {
            nodes: 3,
            timing: Timing::from_secs(10, 2, 4).expect("valid timing"),
            duration: Duration::from_secs(120),
            settle: Duration::from_secs(20),
            write_interval: Duration::from_millis(500),
            faults: FaultKind::ALL.to_vec(),
            fault_length: (Duration::from_secs(1), Duration::from_secs(30)),
            agent_restart: (Duration::from_secs(1), Duration::from_secs(5)),
            demote_on_lease_loss: true,
            deadman: true,
            watchdog: true,
        }
    }
}

impl SimOptions {
    /// The negative control: no demotion on lease loss and no dead-man, so an isolated
    /// primary keeps accepting writes after another member took over.
    #[must_use]
    pub fn negative_control() -> Self {
        Self {
            demote_on_lease_loss: false,
            deadman: false,
            watchdog: false,
            ..Self::default()
        }
    }

    fn cluster_config(&self) -> ClusterConfig {
        let t = self.timing;
        ClusterConfig::parse(
            format!(
                r#"{{"ttl":{},"loop_wait":{},"retry_timeout":{},"maximum_lag_on_failover":1048576,"postgresql":{{"use_pg_rewind":true}}}}"#,
                t.ttl().as_secs(),
                t.loop_wait().as_secs(),
                t.retry_timeout().as_secs()
            )
            .as_bytes(),
        )
    }
}

/// What one run found.
#[derive(Clone, Debug)]
pub struct SimReport {
    /// The seed: [`run`] with it and the same options gives the same report.
    pub seed: u64,
    /// Every operation and fault.
    pub history: History,
    /// [`checker::single_writer`] over the history.
    pub violations: Vec<Violation>,
    /// [`checker::durability`] against the final primary; `None` when the run ended
    /// without one (no leader whose PostgreSQL runs as primary).
    pub durability: Option<Durability>,
    /// [`checker::availability`].
    pub availability: Availability,
    /// The final primary's name.
    pub final_primary: Option<String>,
    /// Promotions that finished.
    pub promotions: u64,
    /// Times a dead-man switch (or the watchdog) stopped PostgreSQL.
    pub deadman_fired: u64,
    /// Decisions the simulation cannot carry out (bootstrap, clone, exit): none expected.
    pub unexpected: Vec<String>,
    /// What happened, one line each with its simulated time: faults and heals,
    /// promotions, dead-man firings, and every decision that acts (not `Wait`).
    pub events: Vec<String>,
}

impl SimReport {
    /// How to run this seed again.
    #[must_use]
    pub fn replay_hint(&self) -> String {
        format!(
            "SIM_SEED={} cargo test -p dcs-tests --test simulation",
            self.seed
        )
    }

    /// A few lines: the seed, the counts, each violation.
    #[must_use]
    pub fn summary(&self) -> String {
        let count = |outcome| {
            self.history
                .ops
                .iter()
                .filter(|op| op.outcome == outcome)
                .count()
        };
        let mut faults: BTreeMap<&str, usize> = BTreeMap::new();
        for fault in &self.history.faults {
            *faults.entry(fault.kind.as_str()).or_default() += 1;
        }
        let mut text = format!(
            "seed {}: ops ok {} failed {} unknown {}; faults {faults:?}; promotions {}; \
             dead-man fired {}; final primary {:?}; lost acknowledged writes {}; \
             {} violation(s)",
            self.seed,
            count(Outcome::Ok),
            count(Outcome::Failed),
            count(Outcome::Unknown),
            self.promotions,
            self.deadman_fired,
            self.final_primary,
            self.durability
                .as_ref()
                .map_or_else(|| "n/a".to_owned(), |d| d.lost_count().to_string()),
            self.violations.len(),
        );
        for violation in &self.violations {
            let _ = write!(text, "\n  {violation}");
        }
        for unexpected in &self.unexpected {
            let _ = write!(text, "\n  {unexpected}");
        }
        if !self.violations.is_empty() {
            let _ = write!(text, "\n  replay: {}", self.replay_hint());
        }
        text
    }
}

/// Runs one seed on its own paused current-thread runtime and checks its history.
#[must_use]
pub fn run(seed: u64, options: &SimOptions) -> SimReport {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("a current-thread runtime builds");
    runtime.block_on(simulate(seed, options.clone()))
}

/// `SplitMix64`, as `FaultyDcs` draws from: fixed by its seed on every platform.
#[derive(Clone, Debug)]
struct Rng(u64);

impl Rng {
    fn new(seed: u64, stream: u64) -> Self {
        let mut rng = Self(seed ^ stream.wrapping_mul(0xA076_1D64_78BD_642F));
        rng.next();
        rng
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn chance(&mut self, p: f64) -> bool {
        ((self.next() >> 11) as f64 / (1u64 << 53) as f64) < p
    }

    fn between(&mut self, (min, max): (Duration, Duration)) -> Duration {
        let spread = max.saturating_sub(min).as_millis() as u64;
        min + Duration::from_millis(self.next() % (spread + 1))
    }
}

fn node_name(index: usize) -> String {
    format!("pg{index}")
}

fn node_index(name: &str) -> Option<usize> {
    name.strip_prefix("pg")?.parse().ok()
}

/// The store-side faults of one node, kept apart from its client so that a restarted
/// agent's new client is as cut off as the old one was.
#[derive(Clone, Copy, Debug, Default)]
struct NetFaults {
    cut_off: bool,
    lost_replies: bool,
    latency: bool,
}

impl NetFaults {
    fn apply(self, handle: &FaultHandle) {
        handle.set_cut_off(self.cut_off);
        handle.set_lost_reply_rate(if self.lost_replies { 0.5 } else { 0.0 });
        if self.latency {
            handle.set_latency(Duration::from_millis(500), Duration::from_secs(3));
        } else {
            handle.set_latency(Duration::ZERO, Duration::ZERO);
        }
    }
}

struct NodeState {
    pg: SimPostgres,
    agent_up: bool,
    loop_frozen: bool,
    process_frozen: bool,
    /// The armed dead-man deadline.
    deadman: Option<Instant>,
    /// The armed watchdog deadline ([`SimOptions::watchdog`]).
    watchdog: Option<Instant>,
    /// The agent's current holding, stamped on the writes its PostgreSQL accepts.
    lease_token: Option<u64>,
    net: NetFaults,
    faults: Option<FaultHandle>,
    agent: Option<JoinHandle<()>>,
    /// Agent incarnations, for each new client's seed.
    incarnation: u64,
}

impl NodeState {
    fn agent_frozen(&self) -> bool {
        self.loop_frozen || self.process_frozen
    }

    /// Whether `GET /patroni` is answered: the process runs and is not stopped.
    fn api_answers(&self) -> bool {
        self.agent_up && !self.process_frozen
    }
}

struct World {
    nodes: Vec<NodeState>,
    ops: Vec<Op>,
    faults: Vec<FaultEvent>,
    next_op: u64,
    promotions: u64,
    deadman_fired: u64,
    unexpected: Vec<String>,
    /// What happened, for a replay: faults, lock changes, decisions that act.
    events: Vec<String>,
    started: Instant,
}

impl World {
    fn log(&mut self, text: impl std::fmt::Display) {
        let at = self.started.elapsed().as_secs_f64();
        self.events.push(format!("{at:9.3}s {text}"));
    }

    /// Fires the dead-man switches that are due and can run.
    fn fire_deadmen(&mut self, now: Instant) {
        let mut fired = Vec::new();
        for (i, node) in self.nodes.iter_mut().enumerate() {
            if node.agent_up && !node.process_frozen && node.deadman.is_some_and(|d| d <= now) {
                node.deadman = None;
                node.pg.stop();
                self.deadman_fired += 1;
                fired.push((i, "dead-man"));
            }
            if node.watchdog.is_some_and(|d| d <= now) {
                node.watchdog = None;
                node.pg.stop();
                self.deadman_fired += 1;
                fired.push((i, "watchdog"));
            }
        }
        for (i, what) in fired {
            self.log(format_args!("{}: {what} stopped postgres", node_name(i)));
        }
    }

    /// Everything due at `now`: dead-men, starts, promotions, streaming.
    fn step(&mut self, now: Instant) {
        self.fire_deadmen(now);
        for i in 0..self.nodes.len() {
            if self.nodes[i].pg.advance(now) {
                self.promotions += 1;
                let timeline = self.nodes[i].pg.timeline;
                self.log(format_args!(
                    "{}: promoted to timeline {timeline}",
                    node_name(i)
                ));
            }
        }
        for i in 0..self.nodes.len() {
            let postgres::Run::Replica {
                upstream: Some(u),
                promote_at: None,
            } = self.nodes[i].pg.run
            else {
                continue;
            };
            if u == i || u >= self.nodes.len() || !self.nodes[u].pg.is_running() {
                self.nodes[i].pg.streaming = false;
                continue;
            }
            let (replica, source) = pair(&mut self.nodes, i, u);
            replica.pg.replicate_from(&source.pg);
        }
    }

    /// The next instant something is due, at the latest `limit`.
    fn next_event(&self, limit: Instant) -> Instant {
        let mut next = limit;
        for node in &self.nodes {
            if node.agent_up && !node.process_frozen {
                if let Some(d) = node.deadman {
                    next = next.min(d);
                }
            }
            if let Some(d) = node.watchdog {
                next = next.min(d);
            }
            match node.pg.run {
                postgres::Run::Starting { ready_at, .. } => next = next.min(ready_at),
                postgres::Run::Replica {
                    promote_at: Some(at),
                    ..
                } => next = next.min(at),
                _ => {}
            }
        }
        next
    }
}

/// `nodes[i]` mutably and `nodes[j]` shared, `i != j`.
fn pair(nodes: &mut [NodeState], i: usize, j: usize) -> (&mut NodeState, &NodeState) {
    if i < j {
        let (left, right) = nodes.split_at_mut(j);
        (&mut left[i], &right[0])
    } else {
        let (left, right) = nodes.split_at_mut(i);
        (&mut right[0], &left[j])
    }
}

/// What the tasks share: the world, and a bell that wakes the driver when an agent
/// armed a dead-man or started something on PostgreSQL.
struct Shared {
    world: Mutex<World>,
    bell: Notify,
}

impl Shared {
    fn with<T>(&self, f: impl FnOnce(&mut World) -> T) -> T {
        // One thread runs everything; a panic in a task already fails the run.
        let mut world = self
            .world
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        f(&mut world)
    }

    fn wake(&self) {
        self.bell.notify_one();
    }
}

/// The store and the world, and how to (re)start an agent on them.
struct Cluster {
    seed: u64,
    options: SimOptions,
    store: MemoryStore,
    path: ClusterPath,
    shared: Arc<Shared>,
}

impl Cluster {
    fn client_options(&self, name: &str) -> ClientOptions {
        ClientOptions::new(self.path.clone(), name)
            .expect("a valid member name")
            .with_timing(self.options.timing)
    }

    /// Starts the agent of node `index` with a new store session (a new process).
    fn start_agent(&self, index: usize) {
        let shared = &self.shared;
        let incarnation = shared.with(|w| {
            w.nodes[index].incarnation += 1;
            w.nodes[index].incarnation
        });
        let client = self.store.client(self.client_options(&node_name(index)));
        let dcs_seed = Rng::new(self.seed, 1000 + index as u64 * 100 + incarnation).next();
        let dcs = Arc::new(FaultyDcs::new(
            client,
            dcs_seed,
            self.options.timing.retry_timeout(),
        ));
        let handle = dcs.faults();
        let agent = agent::SimAgent::new(index, Arc::clone(shared), dcs, self.options.clone());
        let task = tokio::spawn(agent.run());
        shared.with(|w| {
            let node = &mut w.nodes[index];
            node.net.apply(&handle);
            node.faults = Some(handle);
            node.agent = Some(task);
            node.agent_up = true;
        });
    }

    /// Faults one at a time until `options.duration` after the warm-up, each healed
    /// before the next.
    async fn nemesis(&self, started: Instant) {
        let options = &self.options;
        let shared = &self.shared;
        let mut rng = Rng::new(self.seed, 1);
        tokio::time::sleep(WARM_UP).await;
        let end = Instant::now() + options.duration;
        while !options.faults.is_empty() {
            tokio::time::sleep(rng.between((Duration::from_secs(2), Duration::from_secs(12))))
                .await;
            if Instant::now() >= end {
                break;
            }
            let kind = options.faults[rng.below(options.faults.len())];
            let on_primary = rng.chance(0.5);
            let random = rng.below(options.nodes);
            let target = shared.with(|w| {
                w.nodes
                    .iter()
                    .position(|n| n.pg.is_primary())
                    .filter(|_| on_primary)
                    .unwrap_or(random)
            });
            let length = if kind == FaultKind::AgentCrash {
                rng.between(options.agent_restart)
            } else {
                rng.between(options.fault_length)
            };
            let start = started.elapsed();
            let (kind_name, target_name) = (kind.as_str(), node_name(target));
            shared.with(|w| {
                w.log(format_args!(
                    "fault {kind_name} on {target_name} for {length:?}"
                ));
            });
            inject(shared, target, kind, true);
            if kind == FaultKind::AgentCrash {
                tokio::time::sleep(length).await;
                self.start_agent(target);
            } else if kind != FaultKind::PostgresCrash {
                tokio::time::sleep(length).await;
                inject(shared, target, kind, false);
            }
            let finished = started.elapsed();
            shared.with(|w| {
                w.log(format_args!("healed {kind_name} on {target_name}"));
                w.faults.push(FaultEvent {
                    kind: kind_name.to_owned(),
                    target: target_name,
                    start,
                    end: Some(finished),
                });
            });
        }
        tokio::time::sleep_until(end.max(Instant::now()) + options.settle).await;
    }
}

fn new_world(nodes: usize, started: Instant) -> World {
    World {
        nodes: (0..nodes)
            .map(|_| NodeState {
                pg: SimPostgres::new(),
                agent_up: false,
                loop_frozen: false,
                process_frozen: false,
                deadman: None,
                watchdog: None,
                lease_token: None,
                net: NetFaults::default(),
                faults: None,
                agent: None,
                incarnation: 0,
            })
            .collect(),
        ops: Vec::new(),
        faults: Vec::new(),
        next_op: 0,
        promotions: 0,
        deadman_fired: 0,
        unexpected: Vec::new(),
        events: Vec::new(),
        started,
    }
}

/// The simulation proper; runs on a paused current-thread runtime.
async fn simulate(seed: u64, options: SimOptions) -> SimReport {
    let started = Instant::now();
    let cluster = Cluster {
        seed,
        store: MemoryStore::new(),
        path: ClusterPath::new("sim").expect("a valid scope"),
        shared: Arc::new(Shared {
            world: Mutex::new(new_world(options.nodes, started)),
            bell: Notify::new(),
        }),
        options,
    };
    let setup = cluster.store.client(cluster.client_options("setup"));
    setup
        .set_system_id(postgres::SYSTEM_ID, Precondition::Absent)
        .await
        .expect("the memory store accepts initialize");
    setup
        .set_config(&cluster.options.cluster_config(), Precondition::Absent)
        .await
        .expect("the memory store accepts config");

    let shared = &cluster.shared;
    let mut tasks = vec![tokio::spawn(drive(Arc::clone(shared)))];
    for index in 0..cluster.options.nodes {
        cluster.start_agent(index);
        tasks.push(tokio::spawn(write_forever(
            index,
            Arc::clone(shared),
            Rng::new(seed, 2000 + index as u64),
            cluster.options.write_interval,
            started,
        )));
    }
    cluster.nemesis(started).await;

    // The end: stop everything, then read the final state.
    let final_primary = match setup.cluster().await {
        Ok(cluster) => cluster.leader.map(|l| l.name),
        Err(_) => None,
    };
    shared.with(|w| {
        for node in &mut w.nodes {
            if let Some(agent) = node.agent.take() {
                agent.abort();
            }
        }
    });
    for task in tasks {
        task.abort();
    }
    let (history, rows, final_primary, promotions, deadman_fired, unexpected, events) = shared
        .with(|w| {
            let primary = final_primary
                .as_deref()
                .and_then(node_index)
                .filter(|&i| w.nodes[i].pg.is_primary());
            (
                History {
                    ops: std::mem::take(&mut w.ops),
                    faults: std::mem::take(&mut w.faults),
                },
                primary.map(|i| w.nodes[i].pg.rows()),
                primary.map(node_name),
                w.promotions,
                w.deadman_fired,
                std::mem::take(&mut w.unexpected),
                std::mem::take(&mut w.events),
            )
        });
    SimReport {
        seed,
        violations: checker::single_writer(&history.ops),
        durability: rows.map(|rows| checker::durability(&history.ops, &rows)),
        availability: checker::availability(&history.ops, &history.faults),
        history,
        final_primary,
        promotions,
        deadman_fired,
        unexpected,
        events,
    }
}

/// Starts (`on`) or heals a fault on one node.
fn inject(shared: &Shared, target: usize, kind: FaultKind, on: bool) {
    let now = Instant::now();
    shared.with(|w| {
        let node = &mut w.nodes[target];
        match kind {
            FaultKind::Partition => node.net.cut_off = on,
            FaultKind::LostReplies => node.net.lost_replies = on,
            FaultKind::Latency => node.net.latency = on,
            FaultKind::LoopFreeze => node.loop_frozen = on,
            FaultKind::ProcessFreeze if on => {
                node.process_frozen = true;
                if let Some(handle) = &node.faults {
                    handle.pause();
                }
            }
            FaultKind::ProcessFreeze => {
                // SIGCONT: the dead-man thread's deadline passed while stopped, so it
                // signals the postmaster before the loop can do anything.
                node.process_frozen = false;
                if let Some(handle) = &node.faults {
                    handle.resume();
                }
            }
            FaultKind::AgentCrash => {
                if let Some(agent) = node.agent.take() {
                    agent.abort();
                }
                node.agent_up = false;
                node.loop_frozen = false;
                node.process_frozen = false;
                node.deadman = None;
                node.lease_token = None;
            }
            FaultKind::PostgresCrash => {
                node.pg.stop();
            }
        }
        if let Some(handle) = &node.faults {
            node.net.apply(handle);
        }
        if kind == FaultKind::ProcessFreeze && !on {
            w.fire_deadmen(now);
        }
    });
    shared.wake();
}

/// The driver: dead-men, PostgreSQL's starts and promotions, streaming, every 250 ms
/// (replication lag) and at each due instant.
async fn drive(shared: Arc<Shared>) {
    loop {
        let limit = Instant::now() + Duration::from_millis(250);
        let next = shared.with(|w| w.next_event(limit));
        tokio::select! {
            biased;
            () = shared.bell.notified() => {}
            () = tokio::time::sleep_until(next) => {}
        }
        let now = Instant::now();
        shared.with(|w| w.step(now));
    }
}

/// One client: a unique row every `interval` through node `index`'s PostgreSQL.
async fn write_forever(
    index: usize,
    shared: Arc<Shared>,
    mut rng: Rng,
    interval: Duration,
    started: Instant,
) {
    let latency = (Duration::from_millis(1), Duration::from_millis(20));
    let mut next = Instant::now();
    loop {
        next += interval;
        tokio::time::sleep_until(next).await;
        let invoke = started.elapsed();
        let id = shared.with(|w| {
            w.next_op += 1;
            w.next_op
        });
        tokio::time::sleep(rng.between(latency)).await;
        let committed = shared.with(|w| {
            let node = &mut w.nodes[index];
            let incarnation = node.pg.incarnation;
            node.pg
                .commit(id)
                .map(|timeline| (timeline, node.lease_token, incarnation))
        });
        tokio::time::sleep(rng.between(latency)).await;
        shared.with(|w| {
            let (outcome, timeline, token) = match committed {
                None => (Outcome::Failed, None, None),
                Some((timeline, token, incarnation)) => {
                    if w.nodes[index].pg.incarnation == incarnation {
                        (Outcome::Ok, Some(timeline), token)
                    } else {
                        (Outcome::Unknown, None, None)
                    }
                }
            };
            w.ops.push(Op {
                id,
                client: index as u64,
                node: node_name(index),
                kind: OpKind::Write,
                invoke,
                complete: started.elapsed(),
                outcome,
                timeline,
                token,
                row: Some(id),
            });
        });
    }
}
