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

use dcs_benches::{Comparison, Scopes, Series, interleaved, run, timed};
use dcs_core::{Dcs, Precondition, StateKey};
use dcs_tests::fixtures::ZooKeeperServer;
use dcs_zk::{ZooKeeperConfig, ZooKeeperDcs};
use tokio::time::Instant;
use zookeeper_client::{Acls, Client, CreateMode};

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
    scopes: Scopes<ZooKeeperDcs>,
    raw: Client,
    raw_version: i32,
}

const BASE: &str = "/service/bench-cas";
const RAW_LEADER: &str = "/service/bench-renew/leader";
const RAW_CONFIG: &str = "/bench-raw-config";
const RAW_ACQUIRE: &str = "/bench-raw-leader";

impl Bench {
    async fn start(server: &ZooKeeperServer) -> Self {
        let config = ZooKeeperConfig::new(server.hosts());
        let scopes =
            Scopes::prepare(async |options| ZooKeeperDcs::connect(&config, options).await).await;
        let raw = Client::connector()
            .with_session_timeout(Duration::from_secs(30))
            .connect(&server.connect_string())
            .await
            .expect("raw client");
        let open = CreateMode::Persistent.with_acls(Acls::anyone_all());
        raw.create(RAW_CONFIG, br#"{"ttl":30}"#, &open)
            .await
            .expect("raw config");
        Self {
            scopes,
            raw,
            raw_version: 0,
        }
    }

    /// One sample of each series, in the order of `main`'s table.
    async fn round(&mut self, raw_first: bool, round: usize) -> [(Duration, Duration); 6] {
        let acquire = self.acquire(raw_first).await;
        let (renew, get, synced_get) = self.renew(raw_first).await;
        let (snapshot, read, synced_read) = self.snapshot(raw_first).await;
        let cas = self.cas(raw_first, round).await;
        [
            acquire,
            (renew, get),
            (renew, synced_get),
            (snapshot, read),
            (snapshot, synced_read),
            cas,
        ]
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
        interleaved(raw_first, self.scopes.timed_acquire(), theirs).await
    }

    /// (ours, plain get, sync + get).
    async fn renew(&mut self, raw_first: bool) -> (Duration, Duration, Duration) {
        let scopes = &mut self.scopes;
        let ours = async { timed(scopes.holder.renew_leader(&scopes.lease)).await };
        let theirs = async { timed(self.raw.get_data(RAW_LEADER)).await.1 };
        let ((renewed, mine), get) = interleaved(raw_first, ours, theirs).await;
        scopes.lease = renewed.expect("renew");
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
            let (state, took) = timed(self.scopes.writer.cluster()).await;
            assert!(state.expect("snapshot").config.is_some());
            took
        };
        let theirs = async {
            let (read, took) = timed(self.multi_read()).await;
            read.expect("multi-read");
            took
        };
        let (mine, plain) = interleaved(raw_first, ours, theirs).await;
        let start = Instant::now();
        let sync = self.raw.sync(BASE);
        let read = self.multi_read();
        read.await.expect("multi-read");
        sync.await.expect("sync");
        (mine, plain, start.elapsed())
    }

    async fn cas(&mut self, raw_first: bool, round: usize) -> (Duration, Duration) {
        let value = format!(r#"{{"ttl":30,"round":{round}}}"#);
        let expected = Precondition::Version(self.scopes.version.clone());
        let ours =
            async { timed(self.scopes.writer.write(StateKey::Config, &value, expected)).await };
        // zookeeper-client sends a request when it is called, not when it is first polled.
        let theirs = async {
            let set = self
                .raw
                .set_data(RAW_CONFIG, value.as_bytes(), Some(self.raw_version));
            timed(set).await
        };
        let ((version, mine), (raw_version, theirs)) = interleaved(raw_first, ours, theirs).await;
        self.scopes.version = version.expect("CAS");
        self.raw_version = raw_version.expect("raw CAS").version;
        (mine, theirs)
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let zookeeper = match ZooKeeperServer::start().await {
        Ok(server) => server,
        Err(e) => {
            dcs_tests::require::skip_or_fail("zookeeper", e);
            return;
        }
    };
    let mut bench = Bench::start(&zookeeper).await;
    let comparison = Comparison {
        ours: "ZooKeeperDcs",
        raw: "zookeeper-client",
        server: "one standalone ZooKeeper 3.8",
        samples_var: "ZOOKEEPER_BENCH_SAMPLES",
    };
    let series = [
        Series::new("acquire", "create ephemeral"),
        Series::new("renew", "get_data"),
        Series::new("renew", "sync + get_data, pipelined"),
        Series::new("snapshot", "multi-read of the scope"),
        Series::new("snapshot", "sync + multi-read, pipelined"),
        Series::new("CAS", "set_data with version"),
    ];
    run(&comparison, series, async |raw_first, round| {
        bench.round(raw_first, round).await
    })
    .await;
}
