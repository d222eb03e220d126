//! Write unavailability of a three-node cluster during a switchover, a graceful stop of the
//! primary's agent and a crash of the primary (agent and postmaster killed together), and
//! the agents' idle footprint: `ha-agent` against Patroni, on the same fixture layout
//! (one etcd, three PostgreSQL 15, the same YAML), in the same run.
//!
//! ```text
//! cargo build --release -p ha-agent
//! cargo bench -p dcs-benches --bench failover
//! ```
//!
//! Environment: `FAILOVER_BENCH_RUNS` (default 5) runs per scenario; `HA_AGENT_BIN` (default
//! `target/release/ha-agent`, then `target/debug/ha-agent`); `PATRONI_BIN` (default
//! `/usr/bin/patroni`; the Patroni column is left out when it is missing).
//!
//! **Write unavailability** is the longest gap between two acknowledged writes, from the
//! fault until the cluster is whole again. One writer per node inserts a row every 10 ms over
//! its own connection (1 s timeouts, reconnecting on failure), so the gap is measured to
//! about 10 ms, whichever node is primary. Timing is `ttl` 10, `loop_wait` 2,
//! `retry_timeout` 4 for both agents.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use dcs_tests::fixtures::{AgentCluster, AgentClusterOptions, FixtureError};

/// How long a cluster may take to bootstrap or heal.
const HEAL: Duration = Duration::from_secs(180);
/// How long a writer waits for one insert or one connection.
const WRITE_TIMEOUT: Duration = Duration::from_secs(1);
/// The pause between two inserts of one writer.
const WRITE_EVERY: Duration = Duration::from_millis(10);
/// How long the idle footprint is sampled.
const IDLE_WINDOW: Duration = Duration::from_secs(20);
/// Linux's `USER_HZ`, the unit of `/proc/<pid>/stat` CPU times.
const CLOCK_TICKS: f64 = 100.0;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Scenario {
    Switchover,
    GracefulStop,
    Crash,
}

impl Scenario {
    const ALL: [Self; 3] = [Self::Switchover, Self::GracefulStop, Self::Crash];

    fn name(self) -> &'static str {
        match self {
            Self::Switchover => "switchover (POST /switchover)",
            Self::GracefulStop => "graceful stop (SIGTERM agent)",
            Self::Crash => "crash (kill -9 agent+postmaster)",
        }
    }
}

/// One agent implementation's results.
struct Results {
    name: &'static str,
    gaps: Vec<(Scenario, Vec<Duration>)>,
    rss_mib: f64,
    cpu_percent: f64,
}

/// Acknowledged writes: (node, when).
type Acks = Arc<Mutex<Vec<(usize, Instant)>>>;

struct Writers {
    acks: Acks,
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Writers {
    fn start(cluster: &AgentCluster) -> Self {
        let acks: Acks = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let tasks = (0..cluster.node_count())
            .map(|node| {
                let url = format!(
                    "{}?connect_timeout={}",
                    cluster.conninfo(node),
                    WRITE_TIMEOUT.as_secs()
                );
                tokio::spawn(write_forever(
                    node,
                    url,
                    Arc::clone(&acks),
                    Arc::clone(&stop),
                ))
            })
            .collect();
        Self { acks, stop, tasks }
    }

    fn acks(&self) -> Vec<(usize, Instant)> {
        self.acks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    async fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

async fn write_forever(node: usize, url: String, acks: Acks, stop: Arc<AtomicBool>) {
    while !stop.load(Ordering::Relaxed) {
        let connected = tokio::time::timeout(
            WRITE_TIMEOUT,
            tokio_postgres::connect(&url, tokio_postgres::NoTls),
        )
        .await;
        let Ok(Ok((client, connection))) = connected else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let driver = tokio::spawn(connection);
        while !stop.load(Ordering::Relaxed) {
            let insert = client.execute("INSERT INTO bench_writes DEFAULT VALUES", &[]);
            match tokio::time::timeout(WRITE_TIMEOUT, insert).await {
                Ok(Ok(_)) => acks
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push((node, Instant::now())),
                // A replica refuses writes: keep the connection, it may be promoted.
                Ok(Err(error)) if error.as_db_error().is_some() => {}
                _ => break,
            }
            tokio::time::sleep(WRITE_EVERY).await;
        }
        driver.abort();
    }
}

/// The longest gap between consecutive acknowledged writes around `fault`: from the last
/// write before it to the first one after it, and every gap after that until `until`.
fn longest_gap(acks: &[(usize, Instant)], fault: Instant, until: Instant) -> Duration {
    let mut times: Vec<Instant> = acks.iter().map(|(_, at)| *at).collect();
    times.sort();
    let start = times.iter().rposition(|&at| at <= fault).unwrap_or(0);
    times[start..]
        .windows(2)
        .take_while(|pair| pair[0] <= until)
        .map(|pair| pair[1] - pair[0])
        .max()
        .unwrap_or(Duration::ZERO)
}

fn median(values: &mut [Duration]) -> Duration {
    values.sort();
    values.get(values.len() / 2).copied().unwrap_or_default()
}

/// Waits until one node is primary and every other node streams from it, as the
/// primary's `pg_stat_replication` says: the same test for both agents, whatever their
/// `/patroni` documents publish (Patroni 3.0.2 has no `replication_state`).
async fn wait_healthy(cluster: &AgentCluster) -> Result<usize, FixtureError> {
    let replicas = cluster.node_count() - 1;
    let deadline = Instant::now() + HEAL;
    loop {
        if let [primary] = cluster.primaries().await[..] {
            let streaming = cluster
                .psql(
                    primary,
                    "SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'",
                )
                .await;
            if streaming.is_ok_and(|n| n.trim() == replicas.to_string()) {
                return Ok(primary);
            }
        }
        if Instant::now() > deadline {
            return Err(FixtureError::Timeout {
                what: "the cluster".to_owned(),
                goal: format!("have one primary streaming to {replicas} replicas"),
                after: HEAL,
                log_tail: cluster.log_tails(),
            });
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn run_scenario(
    cluster: &AgentCluster,
    writers: &Writers,
    scenario: Scenario,
) -> Result<Duration, FixtureError> {
    let primary = wait_healthy(cluster).await?;
    // Writes flow before the fault, so the gap starts at a real acknowledgement.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let fault = Instant::now();
    match scenario {
        Scenario::Switchover => {
            let candidate = (primary + 1) % cluster.node_count();
            let body = serde_json::json!({
                "leader": cluster.name(primary),
                "candidate": cluster.name(candidate),
            });
            let response = cluster.api_post(primary, "/switchover", &body).await?;
            if response.status != 200 {
                eprintln!("switchover answered {}: {}", response.status, response.body);
            }
        }
        Scenario::GracefulStop => {
            cluster.stop_agent(primary).await?;
        }
        Scenario::Crash => {
            cluster.kill_agent(primary)?;
            cluster.kill_postmaster(primary)?;
        }
    }
    // Recovered once another node acknowledged a write, plus a second to see any
    // later gap.
    let deadline = fault + HEAL;
    loop {
        let recovered = writers
            .acks()
            .iter()
            .any(|(node, at)| *at > fault && *node != primary);
        if recovered {
            break;
        }
        if Instant::now() > deadline {
            return Err(FixtureError::Timeout {
                what: "the cluster".to_owned(),
                goal: format!(
                    "acknowledge a write on a new primary after {}",
                    scenario.name()
                ),
                after: HEAL,
                log_tail: cluster.log_tails(),
            });
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let gap = longest_gap(&writers.acks(), fault, Instant::now());
    if scenario != Scenario::Switchover {
        cluster.start_agent(primary).await?;
    }
    Ok(gap)
}

/// The agent processes' RSS (MiB, summed) and CPU use (% of one core, summed, children
/// such as `psql` included) over an idle window. `ha-agent`'s dead-man guardians
/// (`ha-agent --dead-man <data_dir>`) count as part of it.
async fn footprint(cluster: &AgentCluster) -> (f64, f64) {
    let pids: Vec<u32> = (0..cluster.node_count())
        .flat_map(|i| {
            let mut pids = processes_naming(cluster.config_path(i));
            pids.extend(
                processes_naming(&cluster.data_dir(i))
                    .into_iter()
                    .filter(|&pid| {
                        std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|cmdline| {
                            cmdline.split(|&b| b == 0).any(|arg| arg == b"--dead-man")
                        })
                    }),
            );
            pids
        })
        .collect();
    let ticks = |pids: &[u32]| -> u64 { pids.iter().map(|&pid| cpu_ticks(pid)).sum() };
    let before = ticks(&pids);
    tokio::time::sleep(IDLE_WINDOW).await;
    let after = ticks(&pids);
    let rss_kib: u64 = pids.iter().map(|&pid| rss_kib(pid)).sum();
    #[allow(clippy::cast_precision_loss, reason = "tick counts are small")]
    let cpu = (after.saturating_sub(before)) as f64 / CLOCK_TICKS / IDLE_WINDOW.as_secs_f64();
    #[allow(clippy::cast_precision_loss, reason = "RSS in KiB is small")]
    let rss = rss_kib as f64 / 1024.0;
    (rss, cpu * 100.0)
}

/// The processes whose command line names `path` (not the `setpriv` that started them).
fn processes_naming(path: &Path) -> Vec<u32> {
    let wanted = path.to_string_lossy().into_owned();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| {
            let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
            let cmdline = std::fs::read(entry.path().join("cmdline")).ok()?;
            let args: Vec<&[u8]> = cmdline.split(|&b| b == 0).collect();
            let is_setpriv = args.first().is_some_and(|arg0| arg0.ends_with(b"setpriv"));
            (args.contains(&wanted.as_bytes()) && !is_setpriv).then_some(pid)
        })
        .collect()
}

/// utime + stime + cutime + cstime of `/proc/<pid>/stat`.
fn cpu_ticks(pid: u32) -> u64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0;
    };
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    rest.split_whitespace()
        .skip(11)
        .take(4)
        .filter_map(|field| field.parse::<u64>().ok())
        .sum()
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|line| line.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

async fn bench(name: &'static str, binary: &Path, runs: usize) -> Result<Results, FixtureError> {
    let options = AgentClusterOptions::new(binary).with_timing(10, 2, 4);
    let cluster = AgentCluster::start(options).await?;
    let primary = wait_healthy(&cluster).await?;
    cluster
        .psql(
            primary,
            "CREATE TABLE IF NOT EXISTS bench_writes (id bigserial PRIMARY KEY, at timestamptz DEFAULT now())",
        )
        .await?;
    // Idle first: no writers, a settled cluster.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let (rss_mib, cpu_percent) = footprint(&cluster).await;
    let writers = Writers::start(&cluster);
    let mut gaps = Vec::new();
    for scenario in Scenario::ALL {
        let mut samples = Vec::with_capacity(runs);
        for run in 0..runs {
            let gap = run_scenario(&cluster, &writers, scenario).await?;
            eprintln!(
                "{name}: {} run {}: {:.2} s",
                scenario.name(),
                run + 1,
                gap.as_secs_f64()
            );
            samples.push(gap);
        }
        gaps.push((scenario, samples));
    }
    writers.stop().await;
    Ok(Results {
        name,
        gaps,
        rss_mib,
        cpu_percent,
    })
}

fn agent_binary() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("HA_AGENT_BIN") {
        return Some(PathBuf::from(path));
    }
    let target = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target");
    ["release", "debug"]
        .iter()
        .map(|profile| target.join(profile).join("ha-agent"))
        .find(|path| path.is_file())
}

fn print(results: &[Results], runs: usize) {
    println!(
        "\nwrite unavailability, seconds (median [min, max] of {runs}); ttl 10 / loop_wait 2 / \
         retry_timeout 4; one etcd, three PostgreSQL 15"
    );
    print!("{:<34}", "scenario");
    for r in results {
        print!(" {:>24}", r.name);
    }
    if results.len() == 2 {
        print!(" {:>8}", "ratio");
    }
    println!();
    for (index, scenario) in Scenario::ALL.iter().enumerate() {
        print!("{:<34}", scenario.name());
        let mut medians = Vec::new();
        for r in results {
            let mut samples = r.gaps[index].1.clone();
            let med = median(&mut samples);
            medians.push(med);
            let (min, max) = (samples[0], samples[samples.len() - 1]);
            print!(
                " {:>9.2} [{:>5.2}, {:>5.2}]",
                med.as_secs_f64(),
                min.as_secs_f64(),
                max.as_secs_f64()
            );
        }
        if let [ours, theirs] = medians[..] {
            print!(" {:>8.2}", ours.as_secs_f64() / theirs.as_secs_f64());
        }
        println!();
    }
    println!("\nidle footprint of the three agents together (20 s, no writes)");
    for r in results {
        println!(
            "{:<34} RSS {:>6.1} MiB   CPU {:>5.2} % of one core",
            r.name, r.rss_mib, r.cpu_percent
        );
    }
    if let [ours, theirs] = results {
        println!(
            "{:<34} RSS {:>6.2}x       CPU {:>5.2}x",
            "ratio ha-agent / Patroni",
            ours.rss_mib / theirs.rss_mib,
            ours.cpu_percent / theirs.cpu_percent
        );
    }
}

fn main() {
    // `cargo test --benches` runs bench targets with `--bench` absent; do nothing then.
    if !std::env::args().any(|arg| arg == "--bench") {
        return;
    }
    let runs = std::env::var("FAILOVER_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let Some(agent) = agent_binary() else {
        eprintln!("no ha-agent binary: run `cargo build --release -p ha-agent` first");
        std::process::exit(1);
    };
    let patroni =
        PathBuf::from(std::env::var_os("PATRONI_BIN").unwrap_or_else(|| "/usr/bin/patroni".into()));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let mut results = Vec::new();
    eprintln!("ha-agent: {}", agent.display());
    match runtime.block_on(bench("ha-agent", &agent, runs)) {
        Ok(r) => results.push(r),
        Err(error) => {
            eprintln!("ha-agent benchmark failed: {error}");
            std::process::exit(1);
        }
    }
    if patroni.is_file() {
        eprintln!("Patroni: {}", patroni.display());
        match runtime.block_on(bench("Patroni", &patroni, runs)) {
            Ok(r) => results.push(r),
            Err(error) => eprintln!("Patroni benchmark failed (its column is left out): {error}"),
        }
    } else {
        eprintln!(
            "{} not found: the Patroni column is left out",
            patroni.display()
        );
    }
    print(&results, runs);
}
