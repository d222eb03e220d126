//! `EtcdDcs` latency as a ratio to the raw `etcd-client` round trip of the equivalent
//! request, on a real single-member etcd started by the fixtures, in one run.
//!
//! `cargo bench -p dcs-benches --bench etcd` (`ETCD_BENCH_SAMPLES`, default 1000). Samples
//! of an operation and of its raw equivalent are interleaved (raw first on even rounds,
//! `EtcdDcs` first on odd ones), so load from anything else on the machine hits both alike.
//! Each sample is one sequential call, timed with `Instant` around the awaited future.
//!
//! | operation | `EtcdDcs` call | raw equivalent |
//! |---|---|---|
//! | acquire | `try_acquire_leader` (winning; released untimed) | txn `create_revision == 0` → put with lease, else get (deleted untimed) |
//! | renew | `renew_leader` (keep-alive and leader read, overlapped) | a linearizable get of the leader key; also shown: one keep-alive on a stream |
//! | snapshot | `cluster` | a linearizable prefix range |
//! | CAS | `write(config, Version)` | txn `mod_revision == v` → put, else get |

// etcd-client's request futures are large; each is awaited once per sample, in place, and
// boxing them would only add an allocation next to the timed region.
#![allow(clippy::large_futures)]

use std::time::Duration;

use dcs_core::{
    Acquire, ClientOptions, ClusterPath, Dcs, LeaderLease, MemberData, Precondition, StateKey,
    Timing, Version,
};
use dcs_etcd::{EtcdConfig, EtcdDcs, Hosts};
use dcs_tests::fixtures::EtcdServer;
use etcd_client::{
    Compare, CompareOp, GetOptions, LeaseKeepAliveStream, LeaseKeeper, PutOptions, Txn, TxnOp,
};
use tokio::time::Instant;

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

    fn record(&mut self, ours: Duration, raw: Duration) {
        self.ours.push(ours);
        self.raw.push(raw);
    }

    fn print(&mut self) {
        self.ours.sort();
        self.raw.sort();
        let ours = [50, 90, 99].map(|p| percentile(&self.ours, p));
        let raw = [50, 90, 99].map(|p| percentile(&self.raw, p));
        let ratio = |i: usize| ours[i].as_secs_f64() / raw[i].as_secs_f64();
        println!(
            "{:<9} {:<30} {:>8.3} {:>8.3} {:>8.3} | {:>8.3} {:>8.3} {:>8.3} | {:>6.2} {:>6.2} {:>6.2}",
            self.name,
            self.baseline,
            ms(ours[0]),
            ms(ours[1]),
            ms(ours[2]),
            ms(raw[0]),
            ms(raw[1]),
            ms(raw[2]),
            ratio(0),
            ratio(1),
            ratio(2),
        );
    }
}

/// The nearest-rank percentile `p` (0..=100) of sorted samples.
fn percentile(sorted: &[Duration], p: usize) -> Duration {
    let rank = (sorted.len() * p).div_ceil(100).max(1);
    sorted[rank.min(sorted.len()) - 1]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

async fn timed<T>(future: impl Future<Output = T>) -> (T, Duration) {
    let start = Instant::now();
    let value = future.await;
    (value, start.elapsed())
}

/// Runs `first` then `second`, or the other way round, and returns their results in the
/// order given.
async fn interleaved<A, B>(
    swap: bool,
    first: impl Future<Output = A>,
    second: impl Future<Output = B>,
) -> (A, B) {
    if swap {
        let b = second.await;
        (first.await, b)
    } else {
        let a = first.await;
        (a, second.await)
    }
}

const RAW_ACQUIRE: &str = "/bench/raw-acquire/leader";
const RAW_LEADER: &str = "/bench/raw/leader";
const RAW_CONFIG: &str = "/bench/raw/config";

/// The clients and the state the samples work on.
struct Bench {
    acquirer: EtcdDcs,
    holder: EtcdDcs,
    writer: EtcdDcs,
    lease: LeaderLease,
    version: Version,
    raw: etcd_client::Client,
    raw_lease: i64,
    keeper: LeaseKeeper,
    keep_alive: LeaseKeepAliveStream,
    raw_version: i64,
    prefix: String,
}

impl Bench {
    async fn new(etcd: &EtcdServer) -> Self {
        let endpoint = etcd.endpoint(0).to_owned();
        let config = EtcdConfig {
            hosts: Some(Hosts::List(vec![
                endpoint.trim_start_matches("http://").to_owned(),
            ])),
            ..EtcdConfig::default()
        };
        let client = |scope: &str| {
            let options = ClientOptions::new(ClusterPath::new(scope).expect("scope"), "pg0")
                .expect("name")
                .with_timing(Timing::default());
            let config = config.clone();
            async move { EtcdDcs::connect(&config, options).await.expect("client") }
        };
        let acquirer = client("bench-acquire").await;
        let holder = client("bench-renew").await;
        let writer = client("bench-cas").await;
        let Acquire::Won(lease) = holder.try_acquire_leader().await.expect("acquire") else {
            unreachable!("a fresh scope");
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

        let mut raw = etcd_client::Client::connect([endpoint.as_str()], None)
            .await
            .expect("raw client");
        let raw_lease = raw.lease_grant(30, None).await.expect("grant").id();
        let (keeper, keep_alive) = raw.lease_keep_alive(raw_lease).await.expect("stream");
        let raw_version = raw
            .put(RAW_CONFIG, r#"{"ttl":30}"#, None)
            .await
            .expect("put")
            .header()
            .expect("header")
            .revision();
        raw.put(
            RAW_LEADER,
            "pg0",
            Some(PutOptions::new().with_lease(raw_lease)),
        )
        .await
        .expect("put");
        Self {
            acquirer,
            holder,
            writer,
            lease,
            version,
            raw,
            raw_lease,
            keeper,
            keep_alive,
            raw_version,
            prefix: ClusterPath::new("bench-cas")
                .expect("scope")
                .prefix()
                .to_owned(),
        }
    }

    /// A winning acquire each, released (deleted) untimed.
    async fn acquire(&self, swap: bool) -> (Duration, Duration) {
        let ours = async {
            let (won, took) = timed(self.acquirer.try_acquire_leader()).await;
            let Acquire::Won(won) = won.expect("acquire") else {
                panic!("the lock is held")
            };
            self.acquirer.release_leader(won).await.expect("release");
            took
        };
        let raw = async {
            let mut raw = self.raw.clone();
            let txn = Txn::new()
                .when([Compare::create_revision(RAW_ACQUIRE, CompareOp::Equal, 0)])
                .and_then([TxnOp::put(
                    RAW_ACQUIRE,
                    "pg0",
                    Some(PutOptions::new().with_lease(self.raw_lease)),
                )])
                .or_else([TxnOp::get(RAW_ACQUIRE, None)]);
            let (response, took) = timed(raw.txn(txn)).await;
            assert!(response.expect("txn").succeeded());
            raw.delete(RAW_ACQUIRE, None).await.expect("delete");
            took
        };
        interleaved(swap, ours, raw).await
    }

    /// A renewal, a raw read of the leader key and a raw keep-alive.
    async fn renew(&mut self, swap: bool) -> (Duration, Duration, Duration) {
        let mut raw = self.raw.clone();
        let raw_get = async { timed(raw.get(RAW_LEADER, None)).await.1 };
        let (keeper, stream) = (&mut self.keeper, &mut self.keep_alive);
        let raw_keep_alive = async {
            let start = Instant::now();
            keeper.keep_alive().await.expect("keep-alive");
            stream.message().await.expect("answer").expect("message");
            start.elapsed()
        };
        let ours = async { timed(self.holder.renew_leader(&self.lease)).await };
        let ((renewed, ours), (get, keep_alive)) =
            interleaved(swap, ours, async { (raw_get.await, raw_keep_alive.await) }).await;
        self.lease = renewed.expect("renew");
        (ours, get, keep_alive)
    }

    async fn snapshot(&self, swap: bool) -> (Duration, Duration) {
        let mut raw = self.raw.clone();
        let ours = async { timed(self.writer.cluster()).await.1 };
        let theirs = async {
            let range = raw.get(self.prefix.as_str(), Some(GetOptions::new().with_prefix()));
            timed(range).await.1
        };
        interleaved(swap, ours, theirs).await
    }

    async fn cas(&mut self, swap: bool, round: usize) -> (Duration, Duration) {
        let value = format!(r#"{{"ttl":30,"round":{round}}}"#);
        let mut raw = self.raw.clone();
        let raw_version = self.raw_version;
        let ours = async {
            let precondition = Precondition::Version(self.version.clone());
            timed(self.writer.write(StateKey::Config, &value, precondition)).await
        };
        let theirs = async {
            let txn = Txn::new()
                .when([Compare::mod_revision(
                    RAW_CONFIG,
                    CompareOp::Equal,
                    raw_version,
                )])
                .and_then([TxnOp::put(RAW_CONFIG, value.as_str(), None)])
                .or_else([TxnOp::get(RAW_CONFIG, None)]);
            let (response, took) = timed(raw.txn(txn)).await;
            let response = response.expect("txn");
            assert!(response.succeeded());
            (response.header().expect("header").revision(), took)
        };
        let ((written, ours), (revision, theirs)) = interleaved(swap, ours, theirs).await;
        self.version = written.expect("CAS");
        self.raw_version = revision;
        (ours, theirs)
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let samples: usize = std::env::var("ETCD_BENCH_SAMPLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let warmup = 50;
    let etcd = match EtcdServer::start().await {
        Ok(etcd) => etcd,
        Err(e) => {
            dcs_tests::require::skip_or_fail("etcd", e);
            return;
        }
    };
    let mut bench = Bench::new(&etcd).await;
    let mut acquire = Series::new("acquire", "txn create_revision==0 → put");
    let mut renew = Series::new("renew", "linearizable get");
    let mut renew_keep_alive = Series::new("renew", "keep-alive on a stream");
    let mut snapshot = Series::new("snapshot", "linearizable prefix range");
    let mut cas = Series::new("CAS", "txn mod_revision==v → put");
    for round in 0..warmup + samples {
        // Raw first on even rounds, EtcdDcs first on odd ones.
        let swap = round % 2 == 0;
        let a = bench.acquire(swap).await;
        let (r, get, keep_alive) = bench.renew(swap).await;
        let s = bench.snapshot(swap).await;
        let c = bench.cas(swap, round).await;
        if round >= warmup {
            acquire.record(a.0, a.1);
            renew.record(r, get);
            renew_keep_alive.record(r, keep_alive);
            snapshot.record(s.0, s.1);
            cas.record(c.0, c.1);
        }
    }
    println!(
        "EtcdDcs vs raw etcd-client on etcd ({samples} interleaved samples each after \
         {warmup} warm-up rounds; latency in ms, ratio EtcdDcs / raw)"
    );
    println!(
        "{:<9} {:<30} {:>8} {:>8} {:>8} | {:>8} {:>8} {:>8} | {:>6} {:>6} {:>6}",
        "op",
        "raw baseline",
        "p50",
        "p90",
        "p99",
        "raw p50",
        "raw p90",
        "raw p99",
        "×p50",
        "×p90",
        "×p99"
    );
    for series in [
        &mut acquire,
        &mut renew,
        &mut renew_keep_alive,
        &mut snapshot,
        &mut cas,
    ] {
        series.print();
    }
}
