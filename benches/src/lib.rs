#![doc = include_str!("../README.md")]

use std::time::Duration;

use dcs_core::{
    Acquire, ClientOptions, ClusterPath, Dcs, LeaderLease, MemberData, Precondition, StateKey,
    Timing, Version,
};
use tokio::time::Instant;

/// Warm-up rounds run before the samples, and not recorded.
pub const WARMUP: usize = 50;

/// What one benchmark compares, for its table's title.
#[derive(Clone, Copy, Debug)]
pub struct Comparison {
    /// Our client, e.g. `EtcdDcs`.
    pub ours: &'static str,
    /// The raw client it is compared with, e.g. `etcd-client`.
    pub raw: &'static str,
    /// The server both talk to.
    pub server: &'static str,
    /// The environment variable holding the number of samples (default 1000).
    pub samples_var: &'static str,
}

/// The latencies of one operation and of its raw equivalent, one row of the table.
#[derive(Debug)]
pub struct Series {
    name: &'static str,
    baseline: &'static str,
    ours: Vec<Duration>,
    raw: Vec<Duration>,
}

impl Series {
    /// An empty series of operation `name`, compared with the raw request `baseline`.
    #[must_use]
    pub fn new(name: &'static str, baseline: &'static str) -> Self {
        Self {
            name,
            baseline,
            ours: Vec::new(),
            raw: Vec::new(),
        }
    }

    fn record(&mut self, (ours, raw): (Duration, Duration)) {
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

/// Awaits `future` and returns its output with how long it took.
pub async fn timed<T>(future: impl Future<Output = T>) -> (T, Duration) {
    let start = Instant::now();
    let value = future.await;
    (value, start.elapsed())
}

/// Awaits `raw` then `ours` when `raw_first`, else `ours` then `raw`; returns their outputs
/// as (ours, raw) either way.
pub async fn interleaved<A, B>(
    raw_first: bool,
    ours: impl Future<Output = A>,
    raw: impl Future<Output = B>,
) -> (A, B) {
    if raw_first {
        let b = raw.await;
        (ours.await, b)
    } else {
        let a = ours.await;
        (a, raw.await)
    }
}

/// Three clients of one backend, each on its own scope, and the state they start from.
#[derive(Debug)]
pub struct Scopes<D> {
    /// On `bench-acquire`, where the lock is free between samples.
    pub acquirer: D,
    /// On `bench-renew`, holding [`Scopes::lease`].
    pub holder: D,
    /// On `bench-cas`, a full scope: config at [`Scopes::version`], status, history,
    /// failover, sync and its own member key.
    pub writer: D,
    /// The holder's lease.
    pub lease: LeaderLease,
    /// The version of the writer's config.
    pub version: Version,
}

impl<D: Dcs> Scopes<D> {
    /// Connects the three clients (member `pg0`, default timing) with `connect` and fills
    /// their scopes.
    pub async fn prepare<F>(connect: impl Fn(ClientOptions) -> F) -> Self
    where
        F: Future<Output = dcs_core::Result<D>>,
    {
        let client = async |scope: &str| {
            let options = ClientOptions::new(ClusterPath::new(scope).expect("scope"), "pg0")
                .expect("name")
                .with_timing(Timing::default());
            connect(options).await.expect("client")
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
        Self {
            acquirer,
            holder,
            writer,
            lease,
            version,
        }
    }

    /// A winning acquire on the acquirer's scope, timed, then released untimed.
    pub async fn timed_acquire(&self) -> Duration {
        let (won, took) = timed(self.acquirer.try_acquire_leader()).await;
        let Acquire::Won(won) = won.expect("acquire") else {
            panic!("the lock is held")
        };
        self.acquirer.release_leader(won).await.expect("release");
        took
    }
}

/// Runs [`WARMUP`] rounds then as many samples as `comparison.samples_var` says (default
/// 1000), each one call of `round(raw_first, round)` (raw first on even rounds) that returns
/// one (ours, raw) pair per series; then prints the table of p50/p90/p99 in ms and the
/// ratios ours / raw.
pub async fn run<const N: usize>(
    comparison: &Comparison,
    mut series: [Series; N],
    mut round: impl AsyncFnMut(bool, usize) -> [(Duration, Duration); N],
) {
    let samples: usize = std::env::var(comparison.samples_var)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    for i in 0..WARMUP + samples {
        // Load from anything else on the machine hits both sides alike.
        let measured = round(i % 2 == 0, i).await;
        if i >= WARMUP {
            for (series, pair) in series.iter_mut().zip(measured) {
                series.record(pair);
            }
        }
    }
    let Comparison {
        ours, raw, server, ..
    } = comparison;
    println!(
        "{ours} vs raw {raw} on {server} ({samples} interleaved samples each after {WARMUP} \
         warm-up rounds; latency in ms, ratio {ours} / raw)"
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
    for series in &mut series {
        series.print();
    }
}
