//! Leader election demo: three contenders elect a leader on a chosen backend, the leader
//! is killed, another takes over, and the fencing tokens of every holding are printed.
//!
//! `cargo run -p dcs-tests --bin election -- [--backend NAME] [--ttl SECONDS] [--kills N]`

use std::process::ExitCode;
use std::sync::Arc;

use dcs_core::{
    Acquire, ClientOptions, ClusterPath, Dcs, Error, LeaderLease, MemberData, MemoryStore, Timing,
};
use dcs_etcd::{EtcdConfig, EtcdDcs};
use dcs_tests::fixtures::etcd::EtcdServer;
use dcs_tests::fixtures::zookeeper::ZooKeeperServer;
use dcs_zk::{ZooKeeperConfig, ZooKeeperDcs};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::{Instant, sleep};

const USAGE: &str = "\
usage: election [--backend memory|etcd|zookeeper] [--ttl SECONDS] [--kills N]

Three contenders (pg0, pg1, pg2) race for the leader lock of cluster `demo`. The holder
renews every loop_wait; the demo kills it N times (default 2) without a release, as kill -9
would, and the others take over once its lease has expired. Fencing tokens only grow.

  --backend  etcd (default: starts a real single-member etcd on a free loopback port),
             zookeeper (starts a real standalone ZooKeeper) or memory (an in-process
             store). consul and kubernetes are not implemented yet.
  --ttl      lease ttl in seconds (default 3); loop_wait and retry_timeout are ttl/3.
  --kills    how many leaders to kill (default 2).";

/// The store the contenders share.
enum Store {
    Memory(MemoryStore),
    // The servers are held so they run until the demo ends.
    Etcd(EtcdServer, EtcdConfig),
    ZooKeeper(ZooKeeperServer, ZooKeeperConfig),
}

impl Store {
    async fn start(backend: &str) -> Result<Self, String> {
        match backend {
            "memory" => Ok(Self::Memory(MemoryStore::new())),
            "etcd" => {
                let server = EtcdServer::start()
                    .await
                    .map_err(|e| format!("cannot start etcd: {e}"))?;
                let config = EtcdConfig::from_url(&format!(
                    "etcd://{}",
                    server.endpoints().join(",").replace("http://", "")
                ))
                .map_err(|e| e.to_string())?;
                Ok(Self::Etcd(server, config))
            }
            "zookeeper" => {
                let server = ZooKeeperServer::start()
                    .await
                    .map_err(|e| format!("cannot start ZooKeeper: {e}"))?;
                let config = ZooKeeperConfig::new(server.hosts());
                Ok(Self::ZooKeeper(server, config))
            }
            other => Err(format!("backend {other:?} is not available")),
        }
    }

    fn describe(&self) -> String {
        match self {
            Self::Memory(_) => "memory (in-process store)".to_owned(),
            Self::Etcd(server, _) => format!("etcd at {}", server.endpoints().join(",")),
            Self::ZooKeeper(server, _) => format!("zookeeper at {}", server.connect_string()),
        }
    }

    async fn client(&self, options: ClientOptions) -> Result<Arc<dyn Dcs>, String> {
        Ok(match self {
            Self::Memory(store) => Arc::new(store.client(options)),
            Self::Etcd(_, config) => Arc::new(
                EtcdDcs::connect(config, options)
                    .await
                    .map_err(|e| e.to_string())?,
            ),
            Self::ZooKeeper(_, config) => Arc::new(
                ZooKeeperDcs::connect(config, options)
                    .await
                    .map_err(|e| e.to_string())?,
            ),
        })
    }
}

struct Args {
    backend: String,
    ttl: u64,
    kills: usize,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        backend: "etcd".to_owned(),
        ttl: 3,
        kills: 2,
    };
    let mut words = std::env::args().skip(1);
    while let Some(flag) = words.next() {
        let mut value = |name: &str| words.next().ok_or(format!("{name} needs a value"));
        match flag.as_str() {
            "--backend" => match value("--backend")?.as_str() {
                name @ ("memory" | "etcd" | "zookeeper") => name.clone_into(&mut args.backend),
                other @ ("consul" | "kubernetes") => {
                    return Err(format!("the {other} backend is not implemented yet"));
                }
                other => return Err(format!("unknown backend {other:?}")),
            },
            "--ttl" => {
                args.ttl = value("--ttl")?
                    .parse()
                    .ok()
                    .filter(|ttl| *ttl >= 3)
                    .ok_or("--ttl must be a whole number of seconds, at least 3")?;
            }
            "--kills" => {
                args.kills = value("--kills")?
                    .parse()
                    .map_err(|_| "--kills must be a whole number")?;
            }
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(args)
}

/// What a contender reports to the narrator.
enum Event {
    Won { name: String, token: u64 },
    Lost { name: String, error: Error },
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(args) => args,
        Err(message) if message.is_empty() => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(message) => {
            eprintln!("election: {message}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match run(&args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("election: {message}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: &Args) -> Result<(), String> {
    let third = args.ttl / 3;
    let timing = Timing::from_secs(args.ttl, third, third).map_err(|e| e.to_string())?;
    let store = Store::start(&args.backend).await?;
    let path = ClusterPath::new("demo").map_err(|e| e.to_string())?;
    println!(
        "backend {}; cluster {path}; ttl {}s, loop_wait {}s",
        store.describe(),
        args.ttl,
        third
    );
    let options = |name: &str| {
        ClientOptions::new(path.clone(), name)
            .map(|options| options.with_timing(timing))
            .map_err(|e| e.to_string())
    };

    let started = Instant::now();
    let (events, mut reports) = mpsc::unbounded_channel();
    let mut contenders = Vec::new();
    for name in ["pg0", "pg1", "pg2"] {
        let client = store.client(options(name)?).await?;
        contenders.push((name, contend(client, name, timing, events.clone())));
    }
    let observer = store.client(options("observer")?).await?;

    let mut tokens = Vec::new();
    let mut killed_at: Option<Instant> = None;
    while tokens.len() <= args.kills {
        let event = reports.recv().await.ok_or("every contender stopped")?;
        let at = started.elapsed().as_secs_f64();
        match event {
            Event::Won { name, token } => {
                let since_kill = killed_at.map_or(String::new(), |kill| {
                    format!(
                        " ({:.1}s after the kill; the dead leader last renewed at most \
                         {}s before it, and its lease lasted {}s from then)",
                        kill.elapsed().as_secs_f64(),
                        third,
                        args.ttl
                    )
                });
                println!(
                    "[{at:6.2}s] {name} acquired the leader lock, fencing token {token}{since_kill}"
                );
                tokens.push((name.clone(), token));
                if tokens.len() > args.kills {
                    break;
                }
                // Let the leader renew a few times, then kill it.
                sleep(timing.loop_wait() * 2).await;
                let (_, task) = contenders
                    .iter()
                    .find(|(n, _)| *n == name)
                    .ok_or("unknown contender")?;
                task.abort();
                let state = observer.cluster().await.map_err(|e| e.to_string())?;
                let holder = state.leader.map_or("nobody".into(), |l| l.name);
                println!(
                    "[{:6.2}s] killed {name} without a release (the store still shows {holder} \
                     as leader); the others wait for its lease to expire",
                    started.elapsed().as_secs_f64()
                );
                killed_at = Some(Instant::now());
            }
            Event::Lost { name, error } => {
                println!("[{at:6.2}s] {name} lost the lock: {error}");
            }
        }
    }
    for (_, task) in &contenders {
        task.abort();
    }
    let order: Vec<String> = tokens.iter().map(|(n, t)| format!("{n}={t}")).collect();
    println!("fencing tokens in order of holding: {}", order.join(", "));
    if tokens.windows(2).all(|pair| pair[0].1 < pair[1].1) {
        println!("every new holder has a greater token: a stale leader can be fenced off");
        Ok(())
    } else {
        Err("fencing tokens did not increase".into())
    }
}

/// One contender's loop, as an HA agent would run it: publish, then acquire or renew, then
/// sleep `loop_wait`.
fn contend(
    client: Arc<dyn Dcs>,
    name: &'static str,
    timing: Timing,
    events: mpsc::UnboundedSender<Event>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let member = MemberData::default();
        let mut lease: Option<LeaderLease> = None;
        loop {
            // A failed publish only delays this member's visibility; the lock decides.
            let _ = client.publish_member(&member).await;
            lease = match lease.take() {
                Some(held) => match client.renew_leader(&held).await {
                    Ok(renewed) => Some(renewed),
                    Err(error) if error.is_retryable() && held.is_valid() => Some(held),
                    Err(error) => {
                        let _ = events.send(Event::Lost {
                            name: name.into(),
                            error,
                        });
                        None
                    }
                },
                None => match client.try_acquire_leader().await {
                    Ok(Acquire::Won(won)) => {
                        let token = won.token().0;
                        let _ = events.send(Event::Won {
                            name: name.into(),
                            token,
                        });
                        Some(won)
                    }
                    Ok(Acquire::HeldBy(_)) | Err(_) => None,
                },
            };
            sleep(timing.loop_wait()).await;
        }
    })
}
