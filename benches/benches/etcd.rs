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

use dcs_benches::{Comparison, Scopes, Series, interleaved, run, timed};
use dcs_core::{ClusterPath, Dcs, Precondition, StateKey};
use dcs_etcd::{EtcdConfig, EtcdDcs, Hosts};
use dcs_tests::fixtures::EtcdServer;
use etcd_client::{
    Compare, CompareOp, GetOptions, LeaseKeepAliveStream, LeaseKeeper, PutOptions, Txn, TxnOp,
};
use tokio::time::Instant;

const RAW_ACQUIRE: &str = "/bench/raw-acquire/leader";
const RAW_LEADER: &str = "/bench/raw/leader";
const RAW_CONFIG: &str = "/bench/raw/config";

/// The clients and the state the samples work on.
struct Bench {
    scopes: Scopes<EtcdDcs>,
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
        let scopes =
            Scopes::prepare(async |options| EtcdDcs::connect(&config, options).await).await;

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
            scopes,
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

    /// One sample of each series, in the order of `main`'s table.
    async fn round(&mut self, raw_first: bool, round: usize) -> [(Duration, Duration); 5] {
        let acquire = self.acquire(raw_first).await;
        let (renew, get, keep_alive) = self.renew(raw_first).await;
        let snapshot = self.snapshot(raw_first).await;
        let cas = self.cas(raw_first, round).await;
        [acquire, (renew, get), (renew, keep_alive), snapshot, cas]
    }

    /// A winning acquire each, released (deleted) untimed.
    async fn acquire(&self, raw_first: bool) -> (Duration, Duration) {
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
        interleaved(raw_first, self.scopes.timed_acquire(), raw).await
    }

    /// A renewal, a raw read of the leader key and a raw keep-alive.
    async fn renew(&mut self, raw_first: bool) -> (Duration, Duration, Duration) {
        let mut raw = self.raw.clone();
        let raw_get = async { timed(raw.get(RAW_LEADER, None)).await.1 };
        let (keeper, stream) = (&mut self.keeper, &mut self.keep_alive);
        let raw_keep_alive = async {
            let start = Instant::now();
            keeper.keep_alive().await.expect("keep-alive");
            stream.message().await.expect("answer").expect("message");
            start.elapsed()
        };
        let scopes = &mut self.scopes;
        let ours = async { timed(scopes.holder.renew_leader(&scopes.lease)).await };
        let ((renewed, ours), (get, keep_alive)) = interleaved(raw_first, ours, async {
            (raw_get.await, raw_keep_alive.await)
        })
        .await;
        scopes.lease = renewed.expect("renew");
        (ours, get, keep_alive)
    }

    async fn snapshot(&self, raw_first: bool) -> (Duration, Duration) {
        let mut raw = self.raw.clone();
        let ours = async { timed(self.scopes.writer.cluster()).await.1 };
        let theirs = async {
            let range = raw.get(self.prefix.as_str(), Some(GetOptions::new().with_prefix()));
            timed(range).await.1
        };
        interleaved(raw_first, ours, theirs).await
    }

    async fn cas(&mut self, raw_first: bool, round: usize) -> (Duration, Duration) {
        let value = format!(r#"{{"ttl":30,"round":{round}}}"#);
        let mut raw = self.raw.clone();
        let raw_version = self.raw_version;
        let scopes = &mut self.scopes;
        let ours = async {
            let precondition = Precondition::Version(scopes.version.clone());
            timed(scopes.writer.write(StateKey::Config, &value, precondition)).await
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
        let ((written, ours), (revision, theirs)) = interleaved(raw_first, ours, theirs).await;
        self.scopes.version = written.expect("CAS");
        self.raw_version = revision;
        (ours, theirs)
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let etcd = match EtcdServer::start().await {
        Ok(etcd) => etcd,
        Err(e) => {
            dcs_tests::require::skip_or_fail("etcd", e);
            return;
        }
    };
    let mut bench = Bench::new(&etcd).await;
    let comparison = Comparison {
        ours: "EtcdDcs",
        raw: "etcd-client",
        server: "etcd",
        samples_var: "ETCD_BENCH_SAMPLES",
    };
    let series = [
        Series::new("acquire", "txn create_revision==0 → put"),
        Series::new("renew", "linearizable get"),
        Series::new("renew", "keep-alive on a stream"),
        Series::new("snapshot", "linearizable prefix range"),
        Series::new("CAS", "txn mod_revision==v → put"),
    ];
    run(&comparison, series, async |raw_first, round| {
        bench.round(raw_first, round).await
    })
    .await;
}
