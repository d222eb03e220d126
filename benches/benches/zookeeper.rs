//! `ZooKeeperDcs` latency as a ratio to the raw `zookeeper-client` round trip of the
//! equivalent request, on a real standalone ZooKeeper started by the fixtures, in one run.
//!
//! `cargo bench -p dcs-benches --bench zookeeper` (`ZOOKEEPER_BENCH_SAMPLES`, default 1000).
//! Samples of an operation and of its raw equivalent are interleaved (raw first on even
//! rounds, `ZooKeeperDcs` first on odd ones), so load from anything else on the machine hits
//! both alike. Each sample is one sequential call, timed with `Instant` around the awaited
//! future.
//!
//! | operation | `ZooKeeperDcs` call | raw equivalent |
//! |---|---|---|
//! | acquire | `try_acquire_leader` (winning; released untimed) | create an ephemeral node (deleted untimed) |
//! | renew | `renew_leader` (`sync` + read of `leader`, pipelined) | `get_data` of a node; also shown: `sync` + `get_data`, pipelined |
//! | snapshot | `cluster` (`sync` + one multi-read) | the same multi-read; also shown: `sync` + that multi-read |
//! | CAS | `write(config, Version)` | `set_data` with the expected version |

use std::time::Duration;

use dcs_core::{
    Acquire, ClientOptions, ClusterPath, Dcs, LeaderLease, MemberData, Precondition, StateKey,
    Timing, Version,
};
use dcs_tests::fixtures::ZooKeeperServer;
use dcs_zk::{ZooKeeperConfig, ZooKeeperDcs};
use tokio::time::Instant;
use zookeeper_client::{Acls, Client, CreateMode};

struct Series {
    name: &'static str,
    baseline: &'static str,
    ours: Vec<Duration>,
    raw: Vec<Duration>,
}

impl Series {
    fn new(name: &'static str, baseline: &'static str) -> Self {
        Self {
            name,
            baseline,
            ours: Vec::new(),
            raw: Vec::new(),
        }
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    #[allow(clippy::cast_sign_loss, reason = "a rank in 0..len")]
    let rank = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

async fn timed<T>(future: impl Future<Output = T>) -> (T, Duration) {
    let start = Instant::now();
    let value = future.await;
    (value, start.elapsed())
}

/// Runs `raw` and `ours` in the order of the round, returning (ours, raw).
async fn pair(
    raw_first: bool,
    raw: impl Future<Output = Duration>,
    ours: impl Future<Output = Duration>,
) -> (Duration, Duration) {
    if raw_first {
        let theirs = raw.await;
        (ours.await, theirs)
    } else {
        let mine = ours.await;
        (mine, raw.await)
    }
}

const FIXED: [&str; 9] = [
    "initialize",
    "config",
    "leader",
    "failover",
    "sync",
    "history",
    "status",
    "optime/leader",
    "failsafe",
];

/// The clients and the state the rounds work on.
struct Bench {
    acquirer: ZooKeeperDcs,
    holder: ZooKeeperDcs,
    writer: ZooKeeperDcs,
    raw: Client,
    lease: Option<LeaderLease>,
    version: Version,
    raw_version: i32,
}

const BASE: &str = "/service/bench-cas";
const RAW_LEADER: &str = "/service/bench-renew/leader";
const RAW_CONFIG: &str = "/bench-raw-config";
const RAW_ACQUIRE: &str = "/bench-raw-leader";

impl Bench {
    async fn start(server: &ZooKeeperServer) -> Self {
        let client = |scope: &str| {
            let options = ClientOptions::new(ClusterPath::new(scope).expect("scope"), "pg0")
                .expect("name")
                .with_timing(Timing::default());
            let config = ZooKeeperConfig::new(server.hosts());
            async move {
                ZooKeeperDcs::connect(&config, options)
                    .await
                    .expect("client")
            }
        };
        let acquirer = client("bench-acquire").await;
        let holder = client("bench-renew").await;
        let writer = client("bench-cas").await;
        let raw = Client::connector()
            .with_session_timeout(Duration::from_secs(30))
            .connect(&server.connect_string())
            .await
            .expect("raw client");
        // A full scope for the snapshot.
        let Acquire::Won(lease) = holder.try_acquire_leader().await.expect("acquire") else {
            unreachable!("fresh scope")
        };
        let version = writer
            .write(StateKey::Config, r#"{"ttl":30}"#, Precondition::Absent)
            .await
            .expect("config");
        for key in [
            StateKey::Status,
            StateKey::History,
            StateKey::Failover,
            StateKey::Sync,
        ] {
            writer
                .write(key, "{}", Precondition::Any)
                .await
                .expect("write");
        }
        writer
            .publish_member(&MemberData::default())
            .await
            .expect("publish");
        let open = CreateMode::Persistent.with_acls(Acls::anyone_all());
        raw.create(RAW_CONFIG, br#"{"ttl":30}"#, &open)
            .await
            .expect("raw config");
        Self {
            acquirer,
            holder,
            writer,
            raw,
            lease: Some(lease),
            version,
            raw_version: 0,
        }
    }

    fn multi_read(&self) -> impl Future<Output = Result<(), zookeeper_client::Error>> + '_ {
        let mut reader = self.raw.new_multi_reader();
        for key in FIXED {
            reader.add_get_data(&format!("{BASE}/{key}")).expect("path");
        }
        reader
            .add_get_children(&format!("{BASE}/members"))
            .expect("path");
        reader
            .add_get_data(&format!("{BASE}/members/pg0"))
            .expect("path");
        let read = reader.commit();
        async move { read.await.map(|_| ()) }
    }

    async fn acquire(&self, raw_first: bool) -> (Duration, Duration) {
        let ephemeral = CreateMode::Ephemeral.with_acls(Acls::anyone_all());
        let theirs = async {
            let (created, took) = timed(self.raw.create(RAW_ACQUIRE, b"pg0", &ephemeral)).await;
            created.expect("create");
            self.raw.delete(RAW_ACQUIRE, None).await.expect("delete");
            took
        };
        let ours = async {
            let (won, took) = timed(self.acquirer.try_acquire_leader()).await;
            let Acquire::Won(won) = won.expect("acquire") else {
                panic!("held")
            };
            self.acquirer.release_leader(won).await.expect("release");
            took
        };
        pair(raw_first, theirs, ours).await
    }

    /// (ours, plain get, sync + get).
    async fn renew(&mut self, raw_first: bool) -> (Duration, Duration, Duration) {
        let lease = self.lease.take().expect("lease");
        let mut renewed = None;
        let ours = async {
            let (result, took) = timed(self.holder.renew_leader(&lease)).await;
            renewed = Some(result.expect("renew"));
            took
        };
        let theirs = async { timed(self.raw.get_data(RAW_LEADER)).await.1 };
        let (mine, get) = pair(raw_first, theirs, ours).await;
        self.lease = renewed;
        let start = Instant::now();
        let sync = self.raw.sync(RAW_LEADER);
        let read = self.raw.get_data(RAW_LEADER);
        read.await.expect("get");
        sync.await.expect("sync");
        (mine, get, start.elapsed())
    }

    /// (ours, plain multi-read, sync + multi-read).
    async fn snapshot(&self, raw_first: bool) -> (Duration, Duration, Duration) {
        let ours = async {
            let (state, took) = timed(self.writer.cluster()).await;
            assert!(state.expect("snapshot").config.is_some());
            took
        };
        let theirs = async {
            let (read, took) = timed(self.multi_read()).await;
            read.expect("multi-read");
            took
        };
        let (mine, plain) = pair(raw_first, theirs, ours).await;
        let start = Instant::now();
        let sync = self.raw.sync(BASE);
        let read = self.multi_read();
        read.await.expect("multi-read");
        sync.await.expect("sync");
        (mine, plain, start.elapsed())
    }

    async fn cas(&mut self, raw_first: bool, round: usize) -> (Duration, Duration) {
        let value = format!(r#"{{"ttl":30,"round":{round}}}"#);
        let expected = Precondition::Version(self.version.clone());
        let (mut version, mut raw_version) = (None, None);
        let ours = async {
            let (result, took) = timed(self.writer.write(StateKey::Config, &value, expected)).await;
            version = Some(result.expect("CAS"));
            took
        };
        let theirs = async {
            let (result, took) = timed(self.raw.set_data(
                RAW_CONFIG,
                value.as_bytes(),
                Some(self.raw_version),
            ))
            .await;
            raw_version = Some(result.expect("raw CAS").version);
            took
        };
        let times = pair(raw_first, theirs, ours).await;
        self.version = version.expect("written");
        self.raw_version = raw_version.expect("written");
        times
    }
}

fn report(samples: usize, warmup: usize, series: &mut [Series]) {
    println!(
        "ZooKeeperDcs vs raw zookeeper-client on one standalone ZooKeeper 3.8 \
         ({samples} interleaved samples each, after {warmup} warm-up rounds)"
    );
    println!(
        "{:<9} {:<30} {:>22} {:>22} {:>17}",
        "operation", "raw equivalent", "ours p50/p90/p99 ms", "raw p50/p90/p99 ms", "ratio p50/p90"
    );
    for series in series {
        series.ours.sort();
        series.raw.sort();
        let ours = [0.5, 0.9, 0.99].map(|p| percentile(&series.ours, p));
        let raw = [0.5, 0.9, 0.99].map(|p| percentile(&series.raw, p));
        println!(
            "{:<9} {:<30} {:>6.3}/{:>6.3}/{:>6.3} {:>8.3}/{:>6.3}/{:>6.3} {:>8.2}/{:>6.2}",
            series.name,
            series.baseline,
            ms(ours[0]),
            ms(ours[1]),
            ms(ours[2]),
            ms(raw[0]),
            ms(raw[1]),
            ms(raw[2]),
            ms(ours[0]) / ms(raw[0]),
            ms(ours[1]) / ms(raw[1]),
        );
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let samples: usize = std::env::var("ZOOKEEPER_BENCH_SAMPLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let zookeeper = match ZooKeeperServer::start().await {
        Ok(server) => server,
        Err(e) => {
            dcs_tests::require::skip_or_fail("zookeeper", e);
            return;
        }
    };
    let mut bench = Bench::start(&zookeeper).await;
    let mut series = [
        Series::new("acquire", "create ephemeral"),
        Series::new("renew", "get_data"),
        Series::new("renew", "sync + get_data, pipelined"),
        Series::new("snapshot", "multi-read of the scope"),
        Series::new("snapshot", "sync + multi-read, pipelined"),
        Series::new("CAS", "set_data with version"),
    ];
    let warmup = 50;
    for round in 0..warmup + samples {
        let raw_first = round % 2 == 0;
        let acquire = bench.acquire(raw_first).await;
        let (renew, get, synced_get) = bench.renew(raw_first).await;
        let (snapshot, read, synced_read) = bench.snapshot(raw_first).await;
        let cas = bench.cas(raw_first, round).await;
        if round < warmup {
            continue;
        }
        let measured = [
            acquire,
            (renew, get),
            (renew, synced_get),
            (snapshot, read),
            (snapshot, synced_read),
            cas,
        ];
        for (series, (ours, raw)) in series.iter_mut().zip(measured) {
            series.ours.push(ours);
            series.raw.push(raw);
        }
    }
    report(samples, warmup, &mut series);
}
