//! Local cluster demo: three `ha-agent` nodes with real PostgreSQL on a real etcd (or
//! ZooKeeper), all on free loopback ports, until Ctrl-C.
//!
//! `cargo run -p dcs-tests --bin cluster -- --agent target/debug/ha-agent [--backend NAME]
//! [--nodes N] [--duration SECONDS]`

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use dcs_tests::fixtures::{AgentCluster, AgentClusterOptions, AgentDcs};

const USAGE: &str = "\
usage: cluster --agent PATH [--backend etcd|zookeeper] [--nodes N] [--duration SECONDS]

Starts a PostgreSQL high-availability cluster on this machine: a real etcd (or ZooKeeper)
and N ha-agent nodes (default 3), each managing its own PostgreSQL data directory, all on
free 127.0.0.1 ports in one temporary directory. Waits for one primary and N-1 streaming
replicas, shows `ha-agent ctl list`, prints how to reach every node, then runs until
Ctrl-C (or for --duration seconds) and removes everything.

  --agent     the ha-agent binary (scripts/demo.sh passes the one it built)
  --backend   etcd (default) or zookeeper
  --nodes     how many nodes (default 3)
  --duration  stop after this many seconds instead of waiting for Ctrl-C";

/// How long bootstrapping (initdb, base backups) may take on a busy two-core machine.
const BOOTSTRAP_TIMEOUT: Duration = Duration::from_secs(180);

/// How long the members' DCS entries may take to show what the nodes say.
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(30);

/// How long `ha-agent ctl list` may take.
const CTL_TIMEOUT: Duration = Duration::from_secs(30);

struct Args {
    agent: PathBuf,
    dcs: AgentDcs,
    nodes: usize,
    duration: Option<Duration>,
}

fn parse_args() -> Result<Args, String> {
    let mut agent = None;
    let mut dcs = AgentDcs::Etcd;
    let mut nodes = 3;
    let mut duration = None;
    let mut words = std::env::args().skip(1);
    while let Some(flag) = words.next() {
        let mut value = |name: &str| words.next().ok_or(format!("{name} needs a value"));
        match flag.as_str() {
            "--agent" => agent = Some(PathBuf::from(value("--agent")?)),
            "--backend" => {
                let name = value("--backend")?;
                dcs = match name.as_str() {
                    "consul" | "kubernetes" => {
                        return Err(format!("the {name} backend is not implemented yet"));
                    }
                    other => AgentDcs::from_name(other)
                        .ok_or_else(|| format!("unknown backend {other:?}"))?,
                };
            }
            "--nodes" => {
                nodes = value("--nodes")?
                    .parse()
                    .ok()
                    .filter(|n| (1..=9).contains(n))
                    .ok_or("--nodes must be a whole number from 1 to 9")?;
            }
            "--duration" => {
                let secs: u64 = value("--duration")?
                    .parse()
                    .map_err(|_| "--duration must be a whole number of seconds")?;
                duration = Some(Duration::from_secs(secs));
            }
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    let agent = agent.ok_or("--agent PATH is required (scripts/demo.sh passes it)")?;
    Ok(Args {
        agent,
        dcs,
        nodes,
        duration,
    })
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(args) => args,
        Err(message) if message.is_empty() => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(message) => {
            eprintln!("cluster: {message}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match run(&args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("cluster: {message}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: &Args) -> Result<(), String> {
    println!(
        "starting {} and {} ha-agent nodes ...",
        args.dcs.name(),
        args.nodes
    );
    let options = AgentClusterOptions::new(&args.agent)
        .with_dcs(args.dcs)
        .with_nodes(args.nodes);
    // Ctrl-C (or SIGTERM) at any point tears down whatever was started (the fixture's
    // Drop), which the default actions would not: the postmasters live in their own
    // sessions.
    let started = tokio::select! {
        started = AgentCluster::start(options) => started,
        () = interrupted() => {
            println!("interrupted; stopping");
            return Ok(());
        }
    };
    let cluster = started.map_err(|e| format!("cannot start the cluster: {e}"))?;
    println!(
        "waiting for one primary and {} streaming replicas (initdb, then base backups) ...",
        args.nodes - 1
    );
    let ready = tokio::select! {
        ready = cluster.wait_for_cluster(BOOTSTRAP_TIMEOUT) => ready,
        () = interrupted() => {
            println!("interrupted; stopping");
            return Ok(());
        }
    };
    let primary = ready.map_err(|e| format!("the cluster did not come up: {e}"))?;
    println!("{} is the primary\n", cluster.name(primary));
    // Members publish their state to the DCS once per loop; wait until the DCS view (what
    // `ctl list` shows) has caught up with what the nodes say, but show it regardless.
    let _ = cluster
        .wait_until(
            PUBLISH_TIMEOUT,
            "publish every member as running",
            || async { published_running(&cluster, primary).await.then_some(()) },
        )
        .await;

    show_list(args, &cluster).await;
    describe(args, &cluster);

    if let Some(duration) = args.duration {
        println!("running for {}s (--duration) ...", duration.as_secs());
        tokio::select! {
            () = tokio::time::sleep(duration) => {}
            () = interrupted() => {}
        }
    } else {
        println!("running; press Ctrl-C to stop and remove everything");
        interrupted().await;
    }
    println!("stopping the agents (each stops its PostgreSQL) and the DCS ...");
    drop(cluster);
    println!("stopped; the temporary directory is removed");
    Ok(())
}

/// Completes on SIGINT (Ctrl-C) or SIGTERM; never, if neither handler can be installed
/// (the default actions then stop the demo, as before).
async fn interrupted() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut interrupt), Ok(mut terminate)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = interrupt.recv() => {}
        _ = terminate.recv() => {}
    }
}

/// Prints `ha-agent ctl list` for the cluster, or, if ctl cannot list it, the primary's
/// `GET /cluster`.
async fn show_list(args: &Args, cluster: &AgentCluster) {
    let config = cluster.config_path(0);
    println!(
        "$ {} ctl -c {} list",
        args.agent.display(),
        config.display()
    );
    let run = tokio::process::Command::new(&args.agent)
        .args(["ctl", "-c"])
        .arg(config)
        .arg("list")
        .kill_on_drop(true)
        .output();
    let listed = match tokio::time::timeout(CTL_TIMEOUT, run).await {
        Ok(Ok(output)) if output.status.success() => {
            print!("{}", String::from_utf8_lossy(&output.stdout));
            true
        }
        Ok(Ok(output)) => {
            println!(
                "(ctl list failed: {}{})",
                String::from_utf8_lossy(&output.stdout).trim(),
                String::from_utf8_lossy(&output.stderr).trim()
            );
            false
        }
        Ok(Err(e)) => {
            println!("(cannot run ctl: {e})");
            false
        }
        Err(_) => {
            println!("(ctl list did not finish within {CTL_TIMEOUT:?})");
            false
        }
    };
    if !listed {
        match cluster.api_get(0, "/cluster").await {
            Ok(response) => println!(
                "GET {}/cluster:\n{}",
                cluster.api_url(0),
                response.body.trim()
            ),
            Err(e) => println!("(GET /cluster failed too: {e})"),
        }
    }
    println!();
}

/// Whether the primary's `GET /cluster` lists every node as running (or streaming).
async fn published_running(cluster: &AgentCluster, primary: usize) -> bool {
    let Ok(response) = cluster.api_get(primary, "/cluster").await else {
        return false;
    };
    let Ok(view) = serde_json::from_str::<serde_json::Value>(&response.body) else {
        return false;
    };
    let members = view["members"].as_array().map_or(&[][..], Vec::as_slice);
    members.len() == cluster.node_count()
        && members
            .iter()
            .all(|m| matches!(m["state"].as_str(), Some("running" | "streaming")))
}

/// How to reach each node.
fn describe(args: &Args, cluster: &AgentCluster) {
    let (user, password) = cluster.api_credentials();
    println!(
        "DCS: {} at {}",
        cluster.dcs().name(),
        cluster.dcs_hosts().join(",")
    );
    println!(
        "files (configs, data directories, logs): {}",
        cluster.dir().display()
    );
    println!("REST API credentials for writes: {user} / {password}\n");
    for i in 0..cluster.node_count() {
        println!("{}:", cluster.name(i));
        println!("  psql:   {}", cluster.psql_command(i));
        println!("  REST:   curl -s {}/patroni", cluster.api_url(i));
        println!("  config: {}", cluster.config_path(i).display());
        println!("  log:    {}", cluster.agent_log(i).display());
    }
    println!();
    println!("try:");
    println!(
        "  {} ctl -c {} list",
        args.agent.display(),
        cluster.config_path(0).display()
    );
    println!(
        "  {} ctl -c {} switchover --force",
        args.agent.display(),
        cluster.config_path(0).display()
    );
    println!(
        "  patronictl -c {} list     (Patroni's own CLI reads the same cluster)",
        cluster.config_path(0).display()
    );
    println!();
}
