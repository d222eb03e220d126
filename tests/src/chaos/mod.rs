//! The real-cluster chaos harness: three hosts (network namespaces) each running a DCS
//! member, PostgreSQL and `ha-agent`; a seeded nemesis that partitions, kills, pauses,
//! slows and shifts clocks; clients that write unique rows through every node; and the
//! checkers of [`crate::checker`] over the recorded [`History`].
//!
//! [`run`] does one whole run and returns its [`Summary`] and [`History`]; the `chaos` binary and
//! `ha-agent/tests/chaos.rs` are thin shells around it.
//!
//! ```no_run
//! # async fn example() -> Result<(), dcs_tests::chaos::ChaosError> {
//! use std::time::Duration;
//! use dcs_tests::chaos::{ChaosOptions, Dcs, run};
//!
//! let options = ChaosOptions::new(Dcs::Etcd, "target/release/ha-agent")
//!     .with_duration(Duration::from_secs(120))
//!     .with_seed(7);
//! let (summary, _history) = run(&options).await?;
//! assert!(summary.violations.is_empty(), "{summary}");
//! # Ok(())
//! # }
//! ```
//!
//! # Guarantees
//!
//! - Everything a run creates (namespaces, bridge, veths, nftables tables, qdiscs,
//!   processes, the temporary directory) is removed when [`run`] returns, fails, panics or
//!   its future is dropped (Ctrl-C in the binary), by the guards' `Drop`.
//! - The schedule of faults depends on the seed only ([`nemesis::schedule`]); what the
//!   cluster does under it is, of course, up to the cluster.
//!
//! # Caveats
//!
//! - Needs root (namespaces, nftables, tc), `ip`, `nft`, `tc`, `setpriv` and libfaketime
//!   ([`ChaosError::is_environment`] tells a test to skip).
//! - A harness killed with `SIGKILL` leaves its postmasters and namespaces behind (the
//!   other servers die with it through `setpriv --pdeathsig`); names carry the pid.

pub mod cluster;
pub mod nemesis;
pub mod net;
pub mod workload;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::checker::{self, Violation};
use crate::fixtures::FixtureError;
use crate::history::{History, HistoryError, Outcome};
use cluster::Cluster;
use nemesis::{FaultKind, Timing};
use net::Network;
use workload::{Endpoint, Recorder, Role};

/// How many hosts a run has.
pub const NODES: usize = 3;

/// How long the cluster may take to bootstrap, and to recover after the last heal.
const READY_TIMEOUT: Duration = Duration::from_secs(180);

/// Which DCS the hosts run: a 3-member etcd cluster or ZooKeeper ensemble.
pub use crate::fixtures::AgentDcs as Dcs;

/// What one run does: `with_*` setters over the defaults (60 s of every fault kind, seed
/// 1, `ttl` 10, `loop_wait` 2, `retry_timeout` 4).
#[derive(Clone, Debug)]
pub struct ChaosOptions {
    /// The DCS.
    pub dcs: Dcs,
    /// The `ha-agent` binary.
    pub agent: PathBuf,
    /// How long faults are injected (healing and checking come on top).
    pub duration: Duration,
    /// The nemesis's seed.
    pub seed: u64,
    /// The fault kinds to draw from.
    pub faults: Vec<FaultKind>,
    /// Agents that never demote (the checker must catch the split brain); faults are
    /// then only "isolate the primary".
    pub negative_control: bool,
    /// The leader lease, seconds.
    pub ttl: u64,
    /// The agents' loop period, seconds.
    pub loop_wait: u64,
    /// The agents' DCS retry budget, seconds.
    pub retry_timeout: u64,
    /// Where to copy the servers' logs before the temporary directory goes.
    pub logs: Option<PathBuf>,
}

impl ChaosOptions {
    /// Defaults for `dcs` with the agent binary at `agent`.
    pub fn new(dcs: Dcs, agent: impl Into<PathBuf>) -> Self {
        Self {
            dcs,
            agent: agent.into(),
            duration: Duration::from_secs(60),
            seed: 1,
            faults: FaultKind::ALL.to_vec(),
            negative_control: false,
            ttl: 10,
            loop_wait: 2,
            retry_timeout: 4,
            logs: None,
        }
    }

    /// Keeps the servers' logs in `dir` (`node<i>/agent.log`, `data.log`, `dcs.log`).
    #[must_use]
    pub fn with_logs(mut self, dir: impl Into<PathBuf>) -> Self {
        self.logs = Some(dir.into());
        self
    }

    /// Sets how long faults are injected.
    #[must_use]
    pub fn with_duration(mut self, duration: Duration) -> Self {
        self.duration = duration;
        self
    }

    /// Sets the seed.
    #[must_use]
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// Sets the fault kinds.
    #[must_use]
    pub fn with_faults(mut self, faults: Vec<FaultKind>) -> Self {
        self.faults = faults;
        self
    }

    /// Makes this the negative control.
    #[must_use]
    pub fn with_negative_control(mut self, on: bool) -> Self {
        self.negative_control = on;
        self
    }

    /// Sets `ttl`, `loop_wait` and `retry_timeout` (seconds).
    #[must_use]
    pub fn with_timing(mut self, ttl: u64, loop_wait: u64, retry_timeout: u64) -> Self {
        self.ttl = ttl;
        self.loop_wait = loop_wait;
        self.retry_timeout = retry_timeout;
        self
    }

    /// The fault kinds a run actually draws from.
    #[must_use]
    pub fn effective_faults(&self) -> Vec<FaultKind> {
        if self.negative_control {
            vec![FaultKind::IsolatePrimary]
        } else {
            self.faults.clone()
        }
    }
}

/// Why a run could not be done (as opposed to a run that found a violation).
#[derive(Debug, thiserror::Error)]
pub enum ChaosError {
    /// Namespaces, nftables and tc need root.
    #[error("the chaos harness needs root (network namespaces, nftables, tc); run it as root")]
    NotRoot,
    /// A program or library is missing.
    #[error("{program} is not installed ({hint})")]
    Missing {
        /// What is missing.
        program: String,
        /// Where to get it.
        hint: String,
    },
    /// A server could not be started.
    #[error(transparent)]
    Fixture(#[from] FixtureError),
    /// A file or process operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// An administrative command failed.
    #[error("`{command}` failed: {output}")]
    Command {
        /// The command line.
        command: String,
        /// Its error output.
        output: String,
    },
    /// The cluster did not bootstrap.
    #[error("{what}\n{logs}")]
    NotReady {
        /// What did not happen.
        what: String,
        /// The agents' log tails.
        logs: String,
    },
    /// Something else about the setup.
    #[error("{0}")]
    Setup(String),
    /// The history could not be written.
    #[error(transparent)]
    History(#[from] HistoryError),
}

impl ChaosError {
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io {
            context: context.into(),
            source,
        }
    }

    /// Whether the machine cannot run the harness at all (not root, a program missing):
    /// a test skips unless `DCS_TEST_REQUIRE` says otherwise.
    #[must_use]
    pub fn is_environment(&self) -> bool {
        matches!(
            self,
            Self::NotRoot | Self::Missing { .. } | Self::Fixture(FixtureError::NotInstalled { .. })
        )
    }
}

/// Checks that this process can run the harness.
pub fn check_environment() -> Result<(), ChaosError> {
    if !nix::unistd::Uid::effective().is_root() {
        return Err(ChaosError::NotRoot);
    }
    for (program, package) in [
        ("ip", "iproute2"),
        ("nft", "nftables"),
        ("tc", "iproute2"),
        ("setpriv", "util-linux"),
    ] {
        crate::fixtures::process::find_program(program, package).map_err(|_| {
            ChaosError::Missing {
                program: program.to_owned(),
                hint: format!("Debian package {package}"),
            }
        })?;
    }
    if !Path::new(cluster::FAKETIME_LIB).is_file() {
        return Err(ChaosError::Missing {
            program: cluster::FAKETIME_LIB.to_owned(),
            hint: "Debian package faketime".to_owned(),
        });
    }
    Ok(())
}

/// Operation counts by outcome.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct OpCounts {
    /// Acknowledged.
    pub ok: usize,
    /// Certainly not done.
    pub failed: usize,
    /// Maybe done.
    pub unknown: usize,
}

/// Unavailability of one fault kind, seconds.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct KindUnavailability {
    /// Faults of this kind.
    pub count: usize,
    /// Faults after which no write was acknowledged.
    pub unrecovered: usize,
    /// Median time from fault start to the next acknowledged write.
    pub median: f64,
    /// The longest such time.
    pub max: f64,
}

/// One fault and how long writes stopped after it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct FaultReport {
    /// Its kind.
    pub kind: String,
    /// What it hit.
    pub target: String,
    /// Start, seconds into the run.
    pub start_s: f64,
    /// How long it was held.
    pub held_s: Option<f64>,
    /// Seconds until the next acknowledged write, if one came.
    pub unavailable_s: Option<f64>,
}

/// What `summary.json` holds.
#[derive(Clone, Debug, Serialize)]
pub struct Summary {
    /// `etcd` or `zookeeper`.
    pub dcs: String,
    /// The nemesis's seed.
    pub seed: u64,
    /// How long faults were injected.
    pub duration_s: u64,
    /// Whether agents were the broken negative control.
    pub negative_control: bool,
    /// Faults injected, per kind.
    pub faults: BTreeMap<String, usize>,
    /// Operations by outcome.
    pub ops: OpCounts,
    /// Single-writer violations; empty when safe.
    pub violations: Vec<Violation>,
    /// Unavailability per fault kind.
    pub unavailability_s: BTreeMap<String, KindUnavailability>,
    /// Each fault.
    pub fault_log: Vec<FaultReport>,
    /// The longest gap between two acknowledged writes, seconds.
    pub longest_gap_s: f64,
    /// Acknowledged writes (with a row).
    pub acknowledged: usize,
    /// Acknowledged writes missing from the final primary (asynchronous replication may
    /// lose up to `maximum_lag_on_failover` bytes on a failover).
    pub lost: usize,
    /// Whether the healed cluster came back to one primary with streaming replicas.
    pub recovered: bool,
}

impl Summary {
    /// Whether the run found no single-writer violation.
    #[must_use]
    pub fn is_safe(&self) -> bool {
        self.violations.is_empty()
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "chaos on {} seed {} for {} s{}",
            self.dcs,
            self.seed,
            self.duration_s,
            if self.negative_control {
                " (NEGATIVE CONTROL: agents never demote)"
            } else {
                ""
            }
        )?;
        writeln!(
            f,
            "  ops: {} ok, {} failed, {} unknown; {} acknowledged rows, {} lost; recovered: {}",
            self.ops.ok,
            self.ops.failed,
            self.ops.unknown,
            self.acknowledged,
            self.lost,
            self.recovered
        )?;
        writeln!(
            f,
            "  longest gap between acknowledged writes: {:.1} s",
            self.longest_gap_s
        )?;
        writeln!(f, "  faults (count, unavailability median / max):")?;
        for (kind, u) in &self.unavailability_s {
            writeln!(
                f,
                "    {kind:<16} {:>3}  {:>6.1} s / {:>6.1} s{}",
                u.count,
                u.median,
                u.max,
                if u.unrecovered > 0 {
                    format!("  ({} without a later write)", u.unrecovered)
                } else {
                    String::new()
                }
            )?;
        }
        if self.violations.is_empty() {
            writeln!(f, "  single writer: OK, no violations")
        } else {
            writeln!(f, "  single writer: {} VIOLATION(S)", self.violations.len())?;
            for v in self.violations.iter().take(10) {
                writeln!(f, "    {v}")?;
            }
            Ok(())
        }
    }
}

/// The checkers' verdict on a history, plus what the final read found.
#[must_use]
pub fn summarize(
    options: &ChaosOptions,
    history: &History,
    final_rows: Option<&std::collections::BTreeSet<u64>>,
) -> Summary {
    let mut ops = OpCounts::default();
    for op in &history.ops {
        match op.outcome {
            Outcome::Ok => ops.ok += 1,
            Outcome::Failed => ops.failed += 1,
            Outcome::Unknown => ops.unknown += 1,
        }
    }
    let violations = checker::single_writer(&history.ops);
    let availability = checker::availability(&history.ops, &history.faults);
    let durability = final_rows.map(|rows| checker::durability(&history.ops, rows));
    let mut faults = BTreeMap::new();
    for fault in &history.faults {
        *faults.entry(fault.kind.clone()).or_insert(0) += 1;
    }
    let unavailability_s = availability
        .by_kind
        .iter()
        .map(|(kind, s)| {
            (
                kind.clone(),
                KindUnavailability {
                    count: s.count,
                    unrecovered: s.unrecovered,
                    median: s.median.as_secs_f64(),
                    max: s.max.as_secs_f64(),
                },
            )
        })
        .collect();
    let fault_log = history
        .faults
        .iter()
        .zip(&availability.faults)
        .map(|(fault, recovery)| FaultReport {
            kind: fault.kind.clone(),
            target: fault.target.clone(),
            start_s: fault.start.as_secs_f64(),
            held_s: fault
                .end
                .map(|end| end.saturating_sub(fault.start).as_secs_f64()),
            unavailable_s: recovery.unavailable.map(|d| d.as_secs_f64()),
        })
        .collect();
    Summary {
        dcs: options.dcs.name().to_owned(),
        seed: options.seed,
        duration_s: options.duration.as_secs(),
        negative_control: options.negative_control,
        faults,
        ops,
        violations,
        unavailability_s,
        fault_log,
        longest_gap_s: availability.longest_gap.as_secs_f64(),
        acknowledged: durability.as_ref().map_or(ops.ok, |d| d.acknowledged),
        lost: durability
            .as_ref()
            .map_or(0, checker::Durability::lost_count),
        recovered: final_rows.is_some(),
    }
}

/// Writes `summary.json` and `history.jsonl` into `dir` (created if needed).
pub fn save(dir: &Path, summary: &Summary, history: &History) -> Result<(), ChaosError> {
    std::fs::create_dir_all(dir)
        .map_err(|source| ChaosError::io(format!("creating {}", dir.display()), source))?;
    history.save(&dir.join("history.jsonl"))?;
    let json = serde_json::to_string_pretty(summary).expect("a summary serializes");
    let path = dir.join("summary.json");
    std::fs::write(&path, json + "\n")
        .map_err(|source| ChaosError::io(format!("writing {}", path.display()), source))
}

/// One whole run: hosts up, cluster bootstrapped, workload and nemesis for the duration,
/// everything healed, the cluster's recovery awaited, the final rows read, the checkers
/// run. Everything is torn down before it returns.
#[allow(
    clippy::too_many_lines,
    reason = "one run's phases in order, each a few lines"
)]
pub async fn run(options: &ChaosOptions) -> Result<(Summary, History), ChaosError> {
    check_environment()?;
    if !options.agent.is_file() {
        return Err(ChaosError::Missing {
            program: options.agent.display().to_string(),
            hint: "build it with `cargo build -p ha-agent`".to_owned(),
        });
    }
    let user = Cluster::user().await?;
    // Declared first so it is dropped last, after the processes and namespaces.
    let dir = tempfile::Builder::new()
        .prefix("chaos-")
        .tempdir()
        .map_err(|source| ChaosError::io("creating a temporary directory", source))?;
    cluster::give(dir.path(), &user)?;
    let network = Network::create(NODES)?;
    let cluster = Cluster::start(&network, options, dir.path(), user)?;
    let endpoints: Vec<Endpoint> = (0..NODES)
        .map(|node| Endpoint {
            node,
            address: network.address(node),
            password: cluster.password().to_owned(),
        })
        .collect();

    let keep_logs = || {
        if let Some(logs) = &options.logs {
            cluster.keep_logs(logs);
        }
    };
    let primary = wait_healthy(&endpoints, READY_TIMEOUT)
        .await
        .ok_or_else(|| ChaosError::NotReady {
            what: format!(
                "no primary with {} streaming replicas within {READY_TIMEOUT:?}",
                NODES - 1
            ),
            logs: {
                keep_logs();
                cluster.log_tails()
            },
        })?;
    workload::execute(&endpoints[primary], workload::CREATE_TABLE)
        .await
        .map_err(|e| ChaosError::Setup(format!("creating the table on node{primary}: {e}")))?;

    let recorder = Arc::new(Recorder::default());
    let origin = Instant::now();
    let (stop_clients, clients_stop) = tokio::sync::watch::channel(false);
    let clients: Vec<_> = endpoints
        .iter()
        .cloned()
        .map(|endpoint| {
            tokio::spawn(workload::client(
                endpoint,
                Arc::clone(&recorder),
                origin,
                options.seed,
                clients_stop.clone(),
            ))
        })
        .collect();

    let mut kinds = options.effective_faults();
    if kinds.contains(&FaultKind::Netem) {
        // Some kernels (containers, minimal VMs) lack sch_netem; say so and go on without.
        if let Err(e) = network.slow(0, 1, 0) {
            eprintln!("chaos: netem faults skipped, the kernel cannot do them: {e}");
            kinds.retain(|&kind| kind != FaultKind::Netem);
        }
        network.unslow(0);
    }
    let steps = nemesis::schedule(
        options.seed,
        options.duration,
        &kinds,
        Timing {
            ttl: options.ttl,
            loop_wait: options.loop_wait,
        },
    );
    let target = nemesis::Target {
        network: &network,
        cluster: &cluster,
        recorder: &recorder,
        origin,
    };
    let (_stop_nemesis, nemesis_stop) = tokio::sync::watch::channel(false);
    let nemesis_result = nemesis::run(&target, &steps, nemesis_stop).await;
    tokio::time::sleep((origin + options.duration).saturating_duration_since(Instant::now())).await;

    // Heal everything, whatever the nemesis managed, and let the cluster settle with the
    // clients still writing, so the last fault's recovery is measured too.
    network.partition(&[])?;
    for i in 0..NODES {
        network.unslow(i);
    }
    cluster.heal()?;
    nemesis_result?;
    // Agents that never demote need not recover (two primaries may stay); do not wait long.
    let recovery = if options.negative_control {
        Duration::from_secs(20)
    } else {
        READY_TIMEOUT
    };
    let healthy = wait_healthy(&endpoints, recovery).await;
    // A few more writes on the settled cluster.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let _ = stop_clients.send(true);
    for client in clients {
        let _ = client.await;
    }
    let final_rows = match healthy {
        Some(_) => match wait_healthy(&endpoints, recovery).await {
            Some(primary) => workload::rows(&endpoints[primary]).await.ok(),
            None => None,
        },
        None => None,
    };
    if final_rows.is_none() {
        eprintln!(
            "chaos: the healed cluster did not come back to one primary with streaming \
             replicas within {READY_TIMEOUT:?}\n{}",
            cluster.log_tails()
        );
    }
    keep_logs();
    let history = recorder.history();
    let summary = summarize(options, &history, final_rows.as_ref());
    Ok((summary, history))
}

/// Waits until exactly one node is primary with every other node streaming from it;
/// returns that node.
async fn wait_healthy(endpoints: &[Endpoint], timeout: Duration) -> Option<usize> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        let mut roles = Vec::with_capacity(endpoints.len());
        for endpoint in endpoints {
            roles.push(workload::role(endpoint).await);
        }
        let primaries: Vec<usize> = roles
            .iter()
            .enumerate()
            .filter(|(_, role)| matches!(role, Some(Role::Primary { .. })))
            .map(|(i, _)| i)
            .collect();
        if let [primary] = primaries[..]
            && roles[primary]
                == Some(Role::Primary {
                    streaming: endpoints.len() - 1,
                })
            && roles.iter().all(Option::is_some)
        {
            return Some(primary);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    None
}
