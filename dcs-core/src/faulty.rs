//! `FaultyDcs`: any backend, with seeded faults, for deterministic simulation tests.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::watch;

use crate::dcs::{Acquire, Capabilities, Dcs, LeaderLease, Precondition, StateKey, WatchOutcome};
use crate::error::{Error, Result, with_deadline};
use crate::model::{ClusterState, MemberData, Version};

/// Wraps a client and injects faults drawn from a seeded generator, so that a failing
/// simulation replays exactly from its seed.
///
/// Faults, set through the [`FaultHandle`] (which can be cloned into a nemesis task):
/// - an error rate: the request is refused before it reaches the store
///   ([`Error::Unavailable`]; nothing happened);
/// - a lost-reply rate: the request is applied, but its answer is lost ([`Error::Timeout`];
///   the caller cannot tell whether it happened, as with a real network);
/// - latency, uniform in a range, before the request reaches the store;
/// - cut off: every request is refused, as if the client were partitioned away; the store
///   sees nothing from it, so its TTL-bound keys expire;
/// - paused: requests hang until resumed, as if the process were stopped; every call still
///   ends at its deadline, like a real client's.
#[derive(Debug)]
pub struct FaultyDcs<D> {
    inner: D,
    faults: FaultHandle,
    deadline: Duration,
}

impl<D: Dcs> FaultyDcs<D> {
    /// Wraps `inner` with no faults yet, drawing from `seed`. Calls are cut at `deadline`
    /// (the client's `retry_timeout`).
    pub fn new(inner: D, seed: u64, deadline: Duration) -> Self {
        Self {
            inner,
            faults: FaultHandle::new(seed),
            deadline,
        }
    }

    /// The handle that sets this client's faults.
    #[must_use]
    pub fn faults(&self) -> FaultHandle {
        self.faults.clone()
    }

    /// The wrapped client.
    #[must_use]
    pub fn inner(&self) -> &D {
        &self.inner
    }

    async fn call<T: Send>(
        &self,
        operation: &'static str,
        limit: Duration,
        request: impl Future<Output = Result<T>> + Send,
    ) -> Result<T> {
        with_deadline(operation, limit, async {
            self.faults.wait_until_running().await;
            let draw = self.faults.draw();
            if draw.cut_off {
                return Err(Error::unavailable(
                    "injected: client cut off from the store",
                ));
            }
            tokio::time::sleep(draw.latency).await;
            if draw.refuse {
                return Err(Error::unavailable("injected: request refused"));
            }
            let outcome = request.await;
            if draw.lose_reply && outcome.is_ok() {
                return Err(Error::Timeout {
                    operation,
                    after: limit,
                });
            }
            outcome
        })
        .await
    }
}

#[deny(clippy::missing_trait_methods)]
#[async_trait]
impl<D: Dcs> Dcs for FaultyDcs<D> {
    async fn cluster(&self) -> Result<ClusterState> {
        self.call("cluster", self.deadline, self.inner.cluster())
            .await
    }

    async fn try_acquire_leader(&self) -> Result<Acquire> {
        self.call(
            "try_acquire_leader",
            self.deadline,
            self.inner.try_acquire_leader(),
        )
        .await
    }

    async fn renew_leader(&self, lease: &LeaderLease) -> Result<LeaderLease> {
        self.call(
            "renew_leader",
            self.deadline,
            self.inner.renew_leader(lease),
        )
        .await
    }

    async fn release_leader(&self, lease: LeaderLease) -> Result<()> {
        self.call(
            "release_leader",
            self.deadline,
            self.inner.release_leader(lease),
        )
        .await
    }

    async fn publish_member(&self, data: &MemberData) -> Result<Version> {
        self.call(
            "publish_member",
            self.deadline,
            self.inner.publish_member(data),
        )
        .await
    }

    async fn write(
        &self,
        key: StateKey,
        value: &str,
        precondition: Precondition,
    ) -> Result<Version> {
        self.call(
            "write",
            self.deadline,
            self.inner.write(key, value, precondition),
        )
        .await
    }

    async fn delete(&self, key: StateKey, expected: Option<&Version>) -> Result<()> {
        self.call("delete", self.deadline, self.inner.delete(key, expected))
            .await
    }

    async fn delete_cluster(&self) -> Result<()> {
        self.call("delete_cluster", self.deadline, self.inner.delete_cluster())
            .await
    }

    async fn watch(&self, since: &ClusterState, timeout: Duration) -> Result<WatchOutcome> {
        // The watch's own timeout is the caller's sleep; the deadline only bounds the
        // injected pause and latency on top of it.
        self.call(
            "watch",
            timeout + self.deadline,
            self.inner.watch(since, timeout),
        )
        .await
    }

    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }
}

/// Sets the faults of one [`FaultyDcs`]. Cheap to clone; all clones act on the same client.
#[derive(Clone, Debug)]
pub struct FaultHandle {
    state: Arc<Mutex<FaultState>>,
    paused: Arc<watch::Sender<bool>>,
}

#[derive(Debug)]
struct FaultState {
    rng: SplitMix64,
    error_rate: f64,
    lost_reply_rate: f64,
    latency: (Duration, Duration),
    cut_off: bool,
}

/// The faults drawn for one request.
struct Draw {
    cut_off: bool,
    refuse: bool,
    lose_reply: bool,
    latency: Duration,
}

impl FaultHandle {
    fn new(seed: u64) -> Self {
        Self {
            state: Arc::new(Mutex::new(FaultState {
                rng: SplitMix64(seed),
                error_rate: 0.0,
                lost_reply_rate: 0.0,
                latency: (Duration::ZERO, Duration::ZERO),
                cut_off: false,
            })),
            paused: Arc::new(watch::Sender::new(false)),
        }
    }

    fn with_state<T>(&self, f: impl FnOnce(&mut FaultState) -> T) -> T {
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        f(&mut state)
    }

    /// Refuses this fraction (0.0–1.0) of requests before they reach the store.
    pub fn set_error_rate(&self, rate: f64) {
        self.with_state(|s| s.error_rate = rate.clamp(0.0, 1.0));
    }

    /// Loses the reply of this fraction (0.0–1.0) of requests that the store applied.
    pub fn set_lost_reply_rate(&self, rate: f64) {
        self.with_state(|s| s.lost_reply_rate = rate.clamp(0.0, 1.0));
    }

    /// Delays every request by a uniform draw in `min..=max` before it reaches the store.
    pub fn set_latency(&self, min: Duration, max: Duration) {
        self.with_state(|s| s.latency = (min, max.max(min)));
    }

    /// Cuts the client off from the store (`true`) or reconnects it (`false`).
    pub fn set_cut_off(&self, cut_off: bool) {
        self.with_state(|s| s.cut_off = cut_off);
    }

    /// Pauses the client: its requests hang until [`FaultHandle::resume`].
    pub fn pause(&self) {
        self.paused.send_replace(true);
    }

    /// Lets a paused client's requests go on.
    pub fn resume(&self) {
        self.paused.send_replace(false);
    }

    /// Removes every fault.
    pub fn heal(&self) {
        self.with_state(|s| {
            s.error_rate = 0.0;
            s.lost_reply_rate = 0.0;
            s.latency = (Duration::ZERO, Duration::ZERO);
            s.cut_off = false;
        });
        self.resume();
    }

    async fn wait_until_running(&self) {
        let mut paused = self.paused.subscribe();
        // The sender lives as long as this handle, so `wait_for` cannot fail here.
        let _ = paused.wait_for(|paused| !paused).await;
    }

    fn draw(&self) -> Draw {
        self.with_state(|s| {
            // Every request draws the same three numbers whatever the settings, so that
            // changing one rate does not shift the sequence the others see.
            let refuse = s.rng.next_f64() < s.error_rate;
            let lose_reply = s.rng.next_f64() < s.lost_reply_rate;
            let (min, max) = s.latency;
            let spread = max.saturating_sub(min).as_secs_f64();
            let latency = min + Duration::from_secs_f64(spread * s.rng.next_f64());
            Draw {
                cut_off: s.cut_off,
                refuse,
                lose_reply,
                latency,
            }
        })
    }
}

/// `SplitMix64`: tiny, fast and fully determined by its seed, on every platform and every
/// version of every dependency, which is what replaying a seed needs.
#[derive(Debug)]
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`, from the top 53 bits.
    fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::MemoryStore;
    use crate::options::{ClientOptions, ClusterPath};

    fn client(store: &MemoryStore, name: &str, seed: u64) -> FaultyDcs<crate::MemoryDcs> {
        let options = ClientOptions::new(ClusterPath::new("pg").unwrap(), name).unwrap();
        FaultyDcs::new(store.client(options), seed, Duration::from_secs(10))
    }

    #[test]
    fn same_seed_draws_the_same_faults() {
        let draws = |seed| {
            let handle = FaultHandle::new(seed);
            handle.set_error_rate(0.5);
            handle.set_latency(Duration::ZERO, Duration::from_millis(100));
            (0..64)
                .map(|_| {
                    let d = handle.draw();
                    (d.refuse, d.latency)
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(draws(7), draws(7));
        assert_ne!(draws(7), draws(8));
        let refused = draws(7).iter().filter(|(refused, _)| *refused).count();
        assert!(
            (16..=48).contains(&refused),
            "{refused} of 64 refused at rate 0.5"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn cut_off_client_is_unavailable_and_its_lease_expires() {
        let store = MemoryStore::new();
        let a = client(&store, "a", 1);
        let b = client(&store, "b", 2);
        let Acquire::Won(lease) = a.try_acquire_leader().await.unwrap() else {
            panic!("a should win an empty store");
        };
        a.faults().set_cut_off(true);
        let error = a.renew_leader(&lease).await.unwrap_err();
        assert!(error.is_retryable(), "{error}");
        tokio::time::sleep(Duration::from_secs(31)).await;
        assert!(matches!(
            b.try_acquire_leader().await.unwrap(),
            Acquire::Won(_)
        ));
        a.faults().heal();
        let error = a.renew_leader(&lease).await.unwrap_err();
        assert!(matches!(error, Error::LeaseLost { .. }), "{error}");
    }

    #[tokio::test(start_paused = true)]
    async fn paused_client_times_out_at_its_deadline_and_resumes() {
        let store = MemoryStore::new();
        let a = client(&store, "a", 1);
        a.faults().pause();
        let started = tokio::time::Instant::now();
        let error = a.cluster().await.unwrap_err();
        assert!(matches!(error, Error::Timeout { .. }), "{error}");
        assert_eq!(started.elapsed(), Duration::from_secs(10));
        a.faults().resume();
        assert!(a.cluster().await.is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn lost_reply_applies_the_write_but_reports_timeout() {
        let store = MemoryStore::new();
        let a = client(&store, "a", 1);
        a.faults().set_lost_reply_rate(1.0);
        let error = a
            .write(StateKey::Config, "{}", Precondition::Absent)
            .await
            .unwrap_err();
        assert!(error.is_retryable(), "{error}");
        a.faults().heal();
        assert!(a.cluster().await.unwrap().config.is_some());
    }
}
