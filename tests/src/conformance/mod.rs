//! The conformance suite: every promise of the `Dcs` contract, checked against a backend.
//!
//! Each property is one `pub async fn` taking a [`Backend`], named as the sentence it
//! checks. [`conformance_suite!`](crate::conformance_suite) lists every property once and
//! instantiates it as `<backend>::<property>` tests, so
//! `cargo test -p dcs-tests -- etcd::` runs one backend.
//!
//! Properties sleep on tokio's clock: on `MemoryDcs` the tests pause time and a ttl passes
//! in no real time; on real servers they really wait, so those backends use a short ttl.
//! No property asserts how long something took, only what the store shows before and
//! after the instants the contract names (a lease's deadline, a ttl).

mod etcd;
mod memory;
mod shared;
mod zookeeper;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use dcs_core::model::{
    ClusterConfig, Failover, Failsafe, HistoryLine, Initialize, MemberState, Role, Status,
    SyncState, TimelineHistory, Versioned,
};
use dcs_core::{
    Acquire, ClusterState, Dcs, DcsExt, Error, LeaderLease, MemberData, Precondition, StateKey,
    Timing, Version, WatchOutcome,
};
use tokio::task::JoinSet;
use tokio::time::{Instant, sleep, sleep_until};

pub use etcd::EtcdBackend;
pub use memory::MemoryBackend;
pub use zookeeper::ZooKeeperBackend;

/// A store under test, as the suite needs it: clients, and raw writes of a foreign writer.
#[async_trait]
pub trait Backend: Send + Sync {
    /// The backend's name in test names (`memory`, `etcd`, `zookeeper`, ...).
    fn name(&self) -> &'static str;

    /// The timing every client of the suite uses.
    fn timing(&self) -> Timing;

    /// How much later than its deadline the store may remove an expired key (lease
    /// granularity of the server). Properties wait this long past a deadline before they
    /// expect the key gone; they never expect it gone *before* the deadline.
    fn expiry_slack(&self) -> Duration;

    /// A new client: member `name` of cluster `scope`.
    async fn client(&self, scope: &str, name: &str) -> dcs_core::Result<Arc<dyn Dcs>>;

    /// Writes raw bytes at `key` (relative to `scope`) behind the contract's back, as a
    /// foreign writer might.
    async fn put_raw(&self, scope: &str, key: &str, value: &[u8]) -> dcs_core::Result<()>;
}

/// Lists every property once and instantiates it for one backend, as a module named after
/// the backend holding one test per property.
///
/// `setup` is an expression evaluated in each test that yields
/// `Option<impl Backend>` (a future); `None` means the backend cannot run here and has
/// already been reported (see [`crate::require`]). `test` is the test attribute to use.
///
/// ```ignore
/// dcs_tests::conformance_suite!(memory, setup = MemoryBackend::start(),
///     test = [tokio::test(start_paused = true)]);
/// ```
#[macro_export]
macro_rules! conformance_suite {
    ($backend:ident, setup = $setup:expr, test = [$attr:meta]) => {
        mod $backend {
            #[allow(unused_imports)]
            use super::*;
            $crate::conformance_suite!(@properties $setup, [$attr],
                leader_lock_is_exclusive,
                holder_can_renew_before_ttl,
                lease_validity_runs_from_the_send_time,
                renew_after_takeover_fails_with_lease_lost,
                release_makes_the_lock_immediately_acquirable,
                acquiring_again_under_the_same_lease_returns_the_same_holding,
                stale_lease_cannot_release_or_renew,
                expired_lease_can_be_taken_over_after_ttl_and_not_before,
                fencing_token_increases_across_holders,
                member_entry_expires_without_publish_and_stays_with_it,
                dead_client_member_and_leader_keys_disappear,
                cas_on_config_rejects_a_stale_version_and_accepts_the_current_one,
                cas_on_failover_rejects_a_stale_version_and_accepts_the_current_one,
                cas_on_sync_rejects_a_stale_version_and_accepts_the_current_one,
                initialize_is_create_only_under_a_race,
                snapshot_returns_every_key_with_the_values_and_versions_just_written,
                watch_wakes_on_a_leader_change,
                watch_wakes_on_a_config_failover_or_sync_change,
                watch_times_out_when_nothing_changes,
                delete_cluster_removes_all_of_its_scope_and_nothing_of_another,
                two_scopes_in_one_store_are_isolated,
                garbage_written_by_a_foreign_writer_reads_as_absent_or_unknown,
            );
        }
    };
    (@properties $setup:expr, [$attr:meta], $($property:ident),* $(,)?) => {
        $(
            #[$attr]
            async fn $property() {
                let Some(backend) = $setup.await else { return };
                $crate::conformance::$property(&backend).await;
            }
        )*
    };
}

/// A scope no other property of this run uses, so properties can share one server.
fn unique_scope(property: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("{property}-{}-{n}", std::process::id())
}

async fn client(backend: &dyn Backend, scope: &str, name: &str) -> Arc<dyn Dcs> {
    backend
        .client(scope, name)
        .await
        .unwrap_or_else(|e| panic!("{}: cannot create client {name}: {e}", backend.name()))
}

async fn clients(backend: &dyn Backend, scope: &str, count: usize) -> Vec<Arc<dyn Dcs>> {
    let mut all = Vec::with_capacity(count);
    for i in 0..count {
        all.push(client(backend, scope, &format!("pg{i}")).await);
    }
    all
}

async fn pair(backend: &dyn Backend, scope: &str) -> (Arc<dyn Dcs>, Arc<dyn Dcs>) {
    (
        client(backend, scope, "pg0").await,
        client(backend, scope, "pg1").await,
    )
}

async fn acquire(dcs: &dyn Dcs) -> LeaderLease {
    match dcs.try_acquire_leader().await.expect("acquire") {
        Acquire::Won(lease) => lease,
        Acquire::HeldBy(leader) => panic!("expected to win, but {} holds the lock", leader.name),
    }
}

async fn snapshot(dcs: &dyn Dcs) -> ClusterState {
    dcs.cluster().await.expect("snapshot")
}

fn leader_name(state: &ClusterState) -> Option<&str> {
    state.leader.as_ref().map(|leader| leader.name.as_str())
}

fn member_names(state: &ClusterState) -> Vec<&str> {
    state.members.iter().map(|m| m.name.as_str()).collect()
}

fn member_data(state: &str) -> MemberData {
    MemberData {
        conn_url: Some("postgres://127.0.0.1:5432/postgres".into()),
        api_url: Some("http://127.0.0.1:8008/patroni".into()),
        state: if state == "running" {
            MemberState::Running
        } else {
            MemberState::Other(state.into())
        },
        role: Role::Replica,
        version: Some("4.1.4".into()),
        xlog_location: Some(67_419_744),
        timeline: Some(1),
        ..MemberData::default()
    }
}

fn assert_lease_lost(result: Result<impl std::fmt::Debug, Error>, what: &str) {
    match result {
        Err(Error::LeaseLost { .. }) => {}
        other => panic!("{what}: expected LeaseLost, got {other:?}"),
    }
}

fn assert_conflict(result: Result<impl std::fmt::Debug, Error>, what: &str) {
    match result {
        Err(Error::Conflict { .. }) => {}
        other => panic!("{what}: expected Conflict, got {other:?}"),
    }
}

/// Waits until `dcs` can take the lock, polling; returns the lease and the instant of the
/// successful attempt's start. Panics after `limit`.
async fn acquire_when_free(
    dcs: &dyn Dcs,
    poll: Duration,
    limit: Duration,
) -> (LeaderLease, Instant) {
    let give_up = Instant::now() + limit;
    loop {
        let attempt = Instant::now();
        match dcs.try_acquire_leader().await.expect("acquire") {
            Acquire::Won(lease) => return (lease, attempt),
            Acquire::HeldBy(_) if attempt < give_up => sleep(poll).await,
            Acquire::HeldBy(holder) => {
                panic!("{} still holds the lock after {limit:?}", holder.name)
            }
        }
    }
}

/// N clients race for an empty lock, three rounds: exactly one wins each round, and every
/// loser is told who won.
pub async fn leader_lock_is_exclusive(backend: &dyn Backend) {
    let scope = unique_scope("exclusive");
    let members = clients(backend, &scope, 5).await;
    for round in 0..3 {
        let mut race = JoinSet::new();
        for member in &members {
            let member = Arc::clone(member);
            race.spawn(async move { member.try_acquire_leader().await });
        }
        let mut winners = Vec::new();
        let mut holders = Vec::new();
        while let Some(outcome) = race.join_next().await {
            match outcome.expect("task").expect("acquire") {
                Acquire::Won(lease) => winners.push(lease),
                Acquire::HeldBy(leader) => holders.push(leader.name),
            }
        }
        assert_eq!(
            winners.len(),
            1,
            "round {round}: exactly one winner, got {winners:?}"
        );
        let winner = winners.pop().expect("one winner");
        assert!(
            holders.iter().all(|name| name == winner.name()),
            "round {round}: {holders:?}"
        );
        let state = snapshot(members[0].as_ref()).await;
        assert_eq!(leader_name(&state), Some(winner.name()));
        let index: usize = winner.name()[2..].parse().expect("pgN");
        members[index]
            .release_leader(winner)
            .await
            .expect("release");
    }
}

/// The holder renews every half ttl for one and a half ttl: the lock stays its own.
pub async fn holder_can_renew_before_ttl(backend: &dyn Backend) {
    let scope = unique_scope("renew");
    let (holder, other) = pair(backend, &scope).await;
    let mut lease = acquire(holder.as_ref()).await;
    let first = lease.token();
    for _ in 0..3 {
        sleep(backend.timing().ttl() / 2).await;
        let renewed = holder.renew_leader(&lease).await.expect("renew before ttl");
        assert!(renewed.valid_until() > lease.valid_until());
        assert_eq!(renewed.token(), first, "renewal keeps the holding");
        lease = renewed;
    }
    assert!(
        matches!(other.try_acquire_leader().await.expect("acquire"), Acquire::HeldBy(l) if l.name == "pg0")
    );
    let state = snapshot(other.as_ref()).await;
    assert_eq!(state.leader.as_ref().map(|l| l.token), Some(first));
}

/// `valid_until` is `sent_at + ttl`: no earlier than the call's start plus ttl, no later
/// than its end plus ttl, for acquire and for renew.
pub async fn lease_validity_runs_from_the_send_time(backend: &dyn Backend) {
    let scope = unique_scope("send-time");
    let holder = client(backend, &scope, "pg0").await;
    let ttl = backend.timing().ttl();
    let before = Instant::now();
    let lease = acquire(holder.as_ref()).await;
    let after = Instant::now();
    assert!(lease.valid_until() >= before + ttl && lease.valid_until() <= after + ttl);
    assert!(lease.is_valid());
    sleep(ttl / 3).await;
    let before = Instant::now();
    let renewed = holder.renew_leader(&lease).await.expect("renew");
    let after = Instant::now();
    assert!(renewed.valid_until() >= before + ttl && renewed.valid_until() <= after + ttl);
}

/// A holder that stopped renewing, whose lock was taken over, gets `LeaseLost` when it
/// tries again; the new holder keeps the lock.
pub async fn renew_after_takeover_fails_with_lease_lost(backend: &dyn Backend) {
    let scope = unique_scope("takeover");
    let (old, new) = pair(backend, &scope).await;
    let old_lease = acquire(old.as_ref()).await;
    sleep_until(old_lease.valid_until() + backend.expiry_slack()).await;
    let (lease, _) = acquire_when_free(
        new.as_ref(),
        backend.timing().ttl() / 10,
        backend.timing().ttl(),
    )
    .await;
    assert_lease_lost(old.renew_leader(&old_lease).await, "renew after takeover");
    let state = snapshot(new.as_ref()).await;
    assert_eq!(leader_name(&state), Some("pg1"));
    new.renew_leader(&lease)
        .await
        .expect("the new holder still renews");
}

/// Release deletes the key at once: another member wins without waiting for any ttl.
pub async fn release_makes_the_lock_immediately_acquirable(backend: &dyn Backend) {
    let scope = unique_scope("release");
    let (first, second) = pair(backend, &scope).await;
    let lease = acquire(first.as_ref()).await;
    let valid_until = lease.valid_until();
    first.release_leader(lease).await.expect("release");
    let _lease = acquire(second.as_ref()).await;
    assert!(
        Instant::now() < valid_until,
        "won before the released lease would have expired"
    );
    assert_eq!(leader_name(&snapshot(first.as_ref()).await), Some("pg1"));
}

/// The holder asking again (as after an acquire whose answer was lost) gets its own
/// holding back, with the same token; it renews, and a second member still cannot win.
pub async fn acquiring_again_under_the_same_lease_returns_the_same_holding(backend: &dyn Backend) {
    let scope = unique_scope("adopt");
    let (holder, other) = pair(backend, &scope).await;
    let first = acquire(holder.as_ref()).await;
    let again = acquire(holder.as_ref()).await;
    assert_eq!(
        again.token(),
        first.token(),
        "the same holding, not a new one"
    );
    assert!(again.valid_until() >= first.valid_until());
    assert!(matches!(
        other.try_acquire_leader().await.expect("acquire"),
        Acquire::HeldBy(l) if l.name == "pg0" && l.token == first.token()
    ));
    let renewed = holder
        .renew_leader(&again)
        .await
        .expect("renew the adopted holding");
    holder.release_leader(renewed).await.expect("release");
    let _theirs = acquire(other.as_ref()).await;
}

/// A lease of an earlier holding — even one of the same member, even under the same
/// session — can neither renew nor release the current holding.
pub async fn stale_lease_cannot_release_or_renew(backend: &dyn Backend) {
    let scope = unique_scope("stale");
    let (member, other) = pair(backend, &scope).await;
    let stale = acquire(member.as_ref()).await;
    sleep_until(stale.valid_until() + backend.expiry_slack()).await;
    // The same member holds again, under a new holding.
    let (current, _) = acquire_when_free(
        member.as_ref(),
        backend.timing().ttl() / 10,
        backend.timing().ttl(),
    )
    .await;
    assert!(current.token() > stale.token());
    assert_lease_lost(member.renew_leader(&stale).await, "renew of a stale lease");
    assert_lease_lost(
        member.release_leader(stale).await,
        "release of a stale lease",
    );
    let shown = snapshot(other.as_ref()).await;
    assert_eq!(
        shown.leader.as_ref().map(|l| l.token),
        Some(current.token()),
        "the stale release deleted nothing"
    );
    // Deleted behind the holder's back (an operator removed the cluster) and taken again
    // by the same member while its session lives on: the earlier lease is stale although
    // nothing expired, and only the fencing token tells the two holdings apart.
    other.delete_cluster().await.expect("delete_cluster");
    let again = acquire(member.as_ref()).await;
    assert!(again.token() > current.token());
    assert_lease_lost(
        member.renew_leader(&current).await,
        "renew of a deleted holding",
    );
    assert_lease_lost(
        member.release_leader(current).await,
        "release of a deleted holding",
    );
    member
        .renew_leader(&again)
        .await
        .expect("the current holding is intact");
}

/// A holder that stops renewing keeps the lock until its lease's deadline; another member
/// polling all along wins only after it, and soon after it.
pub async fn expired_lease_can_be_taken_over_after_ttl_and_not_before(backend: &dyn Backend) {
    let scope = unique_scope("expiry");
    let (dead, waiting) = pair(backend, &scope).await;
    let lease = acquire(dead.as_ref()).await;
    let ttl = backend.timing().ttl();
    let (_won, attempt) = acquire_when_free(
        waiting.as_ref(),
        ttl / 200,
        ttl * 2 + backend.expiry_slack(),
    )
    .await;
    assert!(
        attempt >= lease.valid_until(),
        "the lock was taken {:?} before the holder's lease expired",
        lease.valid_until() - attempt
    );
    assert!(!lease.is_valid());
}

/// Holdings passed on by release and by expiry, across three members: every token is
/// greater than the one before, and the snapshot shows the current one.
pub async fn fencing_token_increases_across_holders(backend: &dyn Backend) {
    let scope = unique_scope("fencing");
    let members = clients(backend, &scope, 3).await;
    let mut last = None;
    for round in 0..6 {
        let member = &members[round % 3];
        let (lease, _) = acquire_when_free(
            member.as_ref(),
            backend.timing().ttl() / 10,
            backend.timing().ttl() * 2,
        )
        .await;
        if let Some(previous) = last {
            assert!(
                lease.token() > previous,
                "round {round}: {} after {previous}",
                lease.token()
            );
        }
        last = Some(lease.token());
        let state = snapshot(member.as_ref()).await;
        assert_eq!(state.leader.as_ref().map(|l| l.token), Some(lease.token()));
        if round % 2 == 0 {
            member.release_leader(lease).await.expect("release");
        } else {
            // Let this one expire instead.
            sleep_until(lease.valid_until() + backend.expiry_slack()).await;
        }
    }
}

/// A member that publishes every `loop_wait` stays listed for two ttl; once it stops, it
/// is gone after its ttl, and not before.
pub async fn member_entry_expires_without_publish_and_stays_with_it(backend: &dyn Backend) {
    let scope = unique_scope("member-ttl");
    let (member, observer) = pair(backend, &scope).await;
    let timing = backend.timing();
    let data = member_data("running");
    let until = Instant::now() + timing.ttl() * 2;
    let mut last_publish = Instant::now();
    while Instant::now() < until {
        last_publish = Instant::now();
        member.publish_member(&data).await.expect("publish");
        sleep(timing.loop_wait()).await;
        let state = snapshot(observer.as_ref()).await;
        assert_eq!(member_names(&state), ["pg0"], "listed while publishing");
        assert_eq!(state.members[0].data, data);
    }
    sleep_until(last_publish + timing.ttl() - timing.loop_wait().min(timing.ttl() / 4)).await;
    assert_eq!(
        member_names(&snapshot(observer.as_ref()).await),
        ["pg0"],
        "gone before its ttl"
    );
    sleep_until(last_publish + timing.ttl() + backend.expiry_slack()).await;
    assert!(
        snapshot(observer.as_ref()).await.members.is_empty(),
        "still listed after its ttl"
    );
}

/// A client that dies (dropped without releasing) loses its leader key and member key
/// together, after its ttl; another member can then take the lock.
pub async fn dead_client_member_and_leader_keys_disappear(backend: &dyn Backend) {
    let scope = unique_scope("dead-client");
    let (dying, observer) = pair(backend, &scope).await;
    dying
        .publish_member(&member_data("running"))
        .await
        .expect("publish");
    let lease = acquire(dying.as_ref()).await;
    let deadline = lease.valid_until();
    drop(dying);
    let state = snapshot(observer.as_ref()).await;
    assert_eq!(leader_name(&state), Some("pg0"));
    assert_eq!(member_names(&state), ["pg0"]);
    sleep_until(deadline + backend.expiry_slack()).await;
    let state = snapshot(observer.as_ref()).await;
    assert_eq!(leader_name(&state), None, "leader key of a dead client");
    assert!(state.members.is_empty(), "member key of a dead client");
    let _lease = acquire(observer.as_ref()).await;
}

/// Create-only, then compare-and-set: a stale version is refused and changes nothing; the
/// current version is accepted; the snapshot shows each returned version.
async fn cas_rejects_stale_and_accepts_current(
    backend: &dyn Backend,
    key: StateKey,
    values: [&str; 3],
    read: fn(&ClusterState) -> Option<Version>,
) {
    let scope = unique_scope(key.as_str());
    let (a, b) = pair(backend, &scope).await;
    let v1 = a
        .write(key, values[0], Precondition::Absent)
        .await
        .expect("create");
    assert_conflict(
        b.write(key, values[1], Precondition::Absent).await,
        "create of an existing key",
    );
    assert_eq!(read(&snapshot(b.as_ref()).await), Some(v1.clone()));
    let v2 = b
        .write(key, values[1], Precondition::Version(v1.clone()))
        .await
        .expect("CAS at the current version");
    assert_ne!(v1, v2);
    assert_conflict(
        a.write(key, values[2], Precondition::Version(v1.clone()))
            .await,
        "CAS at a stale version",
    );
    assert_conflict(a.delete(key, Some(&v1)).await, "delete at a stale version");
    assert_eq!(
        read(&snapshot(a.as_ref()).await),
        Some(v2.clone()),
        "a refused write changed nothing"
    );
    let v3 = a
        .write(key, values[2], Precondition::Version(v2))
        .await
        .expect("CAS at the current version");
    assert_eq!(read(&snapshot(b.as_ref()).await), Some(v3.clone()));
    b.delete(key, Some(&v3))
        .await
        .expect("delete at the current version");
    assert_eq!(read(&snapshot(a.as_ref()).await), None);
}

/// `config`: create-only refuses an existing key; compare-and-set refuses a stale version
/// and changes nothing, accepts the current one; each returned version is the one read back.
pub async fn cas_on_config_rejects_a_stale_version_and_accepts_the_current_one(
    backend: &dyn Backend,
) {
    let values = [
        r#"{"ttl":30}"#,
        r#"{"ttl":31}"#,
        r#"{"ttl":32,"pause":true}"#,
    ];
    cas_rejects_stale_and_accepts_current(backend, StateKey::Config, values, |s| {
        s.config.as_ref().map(|v| v.version.clone())
    })
    .await;
}

/// `failover`: create-only refuses an existing key; compare-and-set refuses a stale version
/// and changes nothing, accepts the current one; each returned version is the one read back.
pub async fn cas_on_failover_rejects_a_stale_version_and_accepts_the_current_one(
    backend: &dyn Backend,
) {
    let values = [
        r#"{"leader":"pg0"}"#,
        r#"{"leader":"pg0","member":"pg1"}"#,
        "{}",
    ];
    cas_rejects_stale_and_accepts_current(backend, StateKey::Failover, values, |s| {
        s.failover.as_ref().map(|v| v.version.clone())
    })
    .await;
}

/// `sync`: create-only refuses an existing key; compare-and-set refuses a stale version
/// and changes nothing, accepts the current one; each returned version is the one read back.
pub async fn cas_on_sync_rejects_a_stale_version_and_accepts_the_current_one(
    backend: &dyn Backend,
) {
    let values = [
        r#"{"leader":"pg0","quorum":0,"sync_standby":null}"#,
        r#"{"leader":"pg0","quorum":0,"sync_standby":"pg1"}"#,
        r#"{"leader":"pg1","quorum":0,"sync_standby":"pg0"}"#,
    ];
    cas_rejects_stale_and_accepts_current(backend, StateKey::Sync, values, |s| {
        s.sync.as_ref().map(|v| v.version.clone())
    })
    .await;
}

/// The bootstrap race: N members create `initialize` at once; exactly one succeeds, the
/// rest get `Conflict`, and only the winner's system id lands.
pub async fn initialize_is_create_only_under_a_race(backend: &dyn Backend) {
    let scope = unique_scope("initialize");
    let members = clients(backend, &scope, 5).await;
    let mut race = JoinSet::new();
    for (i, member) in members.iter().enumerate() {
        let member = Arc::clone(member);
        race.spawn(async move { (i, member.initialize().await) });
    }
    let mut winners = Vec::new();
    while let Some(outcome) = race.join_next().await {
        match outcome.expect("task") {
            (i, Ok(version)) => winners.push((i, version)),
            (_, result) => assert_conflict(result, "losing the bootstrap race"),
        }
    }
    assert_eq!(
        winners.len(),
        1,
        "exactly one member bootstraps: {winners:?}"
    );
    let (winner, version) = winners.pop().expect("one winner");
    let state = snapshot(members[0].as_ref()).await;
    assert_eq!(
        state.initialize.as_ref().map(|v| &v.value),
        Some(&Initialize::Bootstrapping)
    );
    let sysid = "7268616322854375442";
    members[winner]
        .set_system_id(sysid, Precondition::Version(version))
        .await
        .expect("record sysid");
    let state = snapshot(members[0].as_ref()).await;
    assert_eq!(
        state.initialize.map(|v| v.value),
        Some(Initialize::SystemId(sysid.into()))
    );
}

/// Every key written — the seven persistent keys, a member, the leader — reads back with
/// the value and the version its write returned.
pub async fn snapshot_returns_every_key_with_the_values_and_versions_just_written(
    backend: &dyn Backend,
) {
    let scope = unique_scope("snapshot");
    let (leader, replica) = pair(backend, &scope).await;

    let config = ClusterConfig::parse(br#"{"ttl":30,"loop_wait":10,"retry_timeout":10,"maximum_lag_on_failover":1048576,"postgresql":{"use_pg_rewind":true,"parameters":{"max_connections":100}}}"#);
    let failover = Failover {
        leader: Some("pg0".into()),
        candidate: Some("pg1".into()),
        scheduled_at: None,
    };
    let sync = SyncState {
        leader: Some("pg0".into()),
        sync_standby: vec!["pg1".into()],
        quorum: 0,
    };
    let history = TimelineHistory {
        lines: vec![HistoryLine {
            timeline: 1,
            lsn: 25_623_960,
            reason: "no recovery target specified".into(),
            timestamp: Some("2019-09-23T16:57:57+02:00".into()),
            new_leader: Some("pg0".into()),
        }],
    };
    let status = Status {
        optime: Some(67_420_024),
        slots: [("pg1".to_owned(), 67_420_024)].into(),
        retain_slots: vec!["pg0".into(), "pg1".into()],
    };
    let failsafe = Failsafe {
        members: [("pg0".to_owned(), "http://127.0.0.1:8008/patroni".to_owned())].into(),
    };

    let v_init = leader.initialize().await.expect("initialize");
    let v_config = leader
        .set_config(&config, Precondition::Absent)
        .await
        .expect("config");
    let v_failover = leader
        .set_failover(&failover, Precondition::Absent)
        .await
        .expect("failover");
    let v_sync = leader
        .set_sync(&sync, Precondition::Absent)
        .await
        .expect("sync");
    let v_history = leader.write_history(&history).await.expect("history");
    let v_status = leader.write_status(&status).await.expect("status");
    let v_failsafe = leader.write_failsafe(&failsafe).await.expect("failsafe");
    let mut primary = member_data("running");
    primary.role = Role::Primary;
    let v_leader_member = leader.publish_member(&primary).await.expect("publish");
    let v_replica_member = replica
        .publish_member(&member_data("streaming"))
        .await
        .expect("publish");
    let lease = acquire(leader.as_ref()).await;

    let state = snapshot(replica.as_ref()).await;
    assert_eq!(
        state.initialize.as_ref().map(|v| (&v.value, &v.version)),
        Some((&Initialize::Bootstrapping, &v_init))
    );
    assert_eq!(state.config.as_ref().map(|v| &v.value), Some(&config));
    assert_eq!(version_of(state.config.as_ref()), Some(v_config));
    assert_eq!(
        state.failover.as_ref().map(|v| (&v.value, &v.version)),
        Some((&failover, &v_failover))
    );
    assert_eq!(
        state.sync.as_ref().map(|v| (&v.value, &v.version)),
        Some((&sync, &v_sync))
    );
    assert_eq!(state.history.as_ref().map(|v| &v.value), Some(&history));
    assert_eq!(version_of(state.history.as_ref()), Some(v_history));
    assert_eq!(state.status.as_ref().map(|v| &v.value), Some(&status));
    assert_eq!(version_of(state.status.as_ref()), Some(v_status));
    assert_eq!(
        state.failsafe.as_ref().map(|v| (&v.value, &v.version)),
        Some((&failsafe, &v_failsafe))
    );
    assert_eq!(member_names(&state), ["pg0", "pg1"]);
    assert_eq!(
        (&state.members[0].data, &state.members[0].version),
        (&primary, &v_leader_member)
    );
    assert_eq!(
        (&state.members[1].data, &state.members[1].version),
        (&member_data("streaming"), &v_replica_member)
    );
    let holder = state.leader.expect("leader");
    assert_eq!(
        (holder.name.as_str(), holder.token, &holder.version),
        ("pg0", lease.token(), lease.version())
    );
}

fn version_of<T>(value: Option<&Versioned<T>>) -> Option<Version> {
    value.map(|v| v.version.clone())
}

/// Runs `change` while `watcher` watches from a fresh snapshot with a long timeout, and
/// checks that the watch reports the change.
async fn assert_watch_wakes(
    watcher: &Arc<dyn Dcs>,
    timeout: Duration,
    what: &str,
    change: impl Future<Output = ()>,
) {
    let since = snapshot(watcher.as_ref()).await;
    let watching = {
        let watcher = Arc::clone(watcher);
        tokio::spawn(async move { watcher.watch(&since, timeout).await })
    };
    // Give the watch time to start, so the change happens while it waits, as it would in
    // a loop that sleeps in `watch`.
    sleep(Duration::from_millis(50)).await;
    change.await;
    let outcome = watching.await.expect("watch task").expect("watch");
    assert_eq!(
        outcome,
        WatchOutcome::Changed,
        "watch did not wake on {what}"
    );
}

/// A watch wakes when a member takes the lock, when it releases it, and when its holder
/// dies and the key expires.
pub async fn watch_wakes_on_a_leader_change(backend: &dyn Backend) {
    let scope = unique_scope("watch-leader");
    let (watcher, holder) = pair(backend, &scope).await;
    let long = backend.timing().ttl() * 4;
    let mut lease = None;
    assert_watch_wakes(&watcher, long, "acquire", async {
        lease = Some(acquire(holder.as_ref()).await);
    })
    .await;
    let lease = lease.expect("acquired");
    assert_watch_wakes(&watcher, long, "release", async {
        holder.release_leader(lease).await.expect("release");
    })
    .await;
    let lease = acquire(holder.as_ref()).await;
    drop(holder);
    assert_watch_wakes(&watcher, long, "expiry", async {}).await;
    let state = snapshot(watcher.as_ref()).await;
    assert_eq!(leader_name(&state), None, "woken, and the key expired");
    assert!(!lease.is_valid());
}

/// A watch wakes on a write of `config`, `failover` or `sync`.
pub async fn watch_wakes_on_a_config_failover_or_sync_change(backend: &dyn Backend) {
    let scope = unique_scope("watch-config");
    let (watcher, writer) = pair(backend, &scope).await;
    let long = backend.timing().ttl() * 4;
    for (key, value) in [
        (StateKey::Config, r#"{"ttl":30}"#),
        (StateKey::Config, r#"{"ttl":40}"#),
        (StateKey::Failover, r#"{"member":"pg1"}"#),
        (
            StateKey::Sync,
            r#"{"leader":"pg0","quorum":0,"sync_standby":"pg1"}"#,
        ),
    ] {
        assert_watch_wakes(&watcher, long, key.as_str(), async {
            writer
                .write(key, value, Precondition::Any)
                .await
                .expect("write");
        })
        .await;
    }
}

/// With nothing changing, a watch returns `TimedOut` once its timeout passed.
pub async fn watch_times_out_when_nothing_changes(backend: &dyn Backend) {
    let scope = unique_scope("watch-quiet");
    let watcher = client(backend, &scope, "pg0").await;
    watcher
        .write(StateKey::Config, "{}", Precondition::Absent)
        .await
        .expect("config");
    let since = snapshot(watcher.as_ref()).await;
    let timeout = backend.timing().loop_wait();
    let started = Instant::now();
    let outcome = watcher.watch(&since, timeout).await.expect("watch");
    assert_eq!(outcome, WatchOutcome::TimedOut);
    assert!(
        started.elapsed() >= timeout,
        "a watch that timed out returned before its timeout"
    );
}

async fn fill_scope(backend: &dyn Backend, scope: &str) -> Arc<dyn Dcs> {
    let member = client(backend, scope, "pg0").await;
    for key in StateKey::ALL {
        member
            .write(key, "{}", Precondition::Any)
            .await
            .expect("write");
    }
    member
        .publish_member(&member_data("running"))
        .await
        .expect("publish");
    let _lease = acquire(member.as_ref()).await;
    member
}

/// `delete_cluster` of scope `x` leaves no key of `x`, and every key of scope `x2` (which
/// shares its prefix) intact.
pub async fn delete_cluster_removes_all_of_its_scope_and_nothing_of_another(backend: &dyn Backend) {
    let scope = unique_scope("delete");
    let neighbour = format!("{scope}2");
    let doomed = fill_scope(backend, &scope).await;
    let kept = fill_scope(backend, &neighbour).await;
    let before = snapshot(kept.as_ref()).await;
    doomed.delete_cluster().await.expect("delete_cluster");
    assert_eq!(
        snapshot(doomed.as_ref()).await,
        ClusterState::default(),
        "the deleted scope is empty"
    );
    assert_eq!(
        snapshot(kept.as_ref()).await,
        before,
        "the other scope is untouched"
    );
}

/// Two scopes each have their own lock, members and config.
pub async fn two_scopes_in_one_store_are_isolated(backend: &dyn Backend) {
    let a_scope = unique_scope("isolated-a");
    let b_scope = unique_scope("isolated-b");
    let a = client(backend, &a_scope, "pg0").await;
    let b = client(backend, &b_scope, "pg0").await;
    let a_lease = acquire(a.as_ref()).await;
    let b_lease = acquire(b.as_ref()).await;
    a.write(StateKey::Config, r#"{"ttl":30}"#, Precondition::Absent)
        .await
        .expect("config in a");
    b.publish_member(&member_data("running"))
        .await
        .expect("member in b");
    b.write(StateKey::Config, r#"{"ttl":60}"#, Precondition::Absent)
        .await
        .expect("config in b is a separate key");
    let a_state = snapshot(a.as_ref()).await;
    let b_state = snapshot(b.as_ref()).await;
    assert_eq!(a_state.leader.map(|l| l.token), Some(a_lease.token()));
    assert_eq!(
        b_state.leader.as_ref().map(|l| l.token),
        Some(b_lease.token())
    );
    assert!(a_state.members.is_empty());
    assert_eq!(member_names(&b_state), ["pg0"]);
    assert_eq!(a_state.config.map(|c| c.value.ttl()), Some(30));
    assert_eq!(b_state.config.map(|c| c.value.ttl()), Some(60));
}

/// Garbage in every key reads as absent or unknown, the snapshot still succeeds, and a
/// garbage leader key still holds the lock (reading it as free would be unsafe).
pub async fn garbage_written_by_a_foreign_writer_reads_as_absent_or_unknown(backend: &dyn Backend) {
    let scope = unique_scope("garbage");
    let member = client(backend, &scope, "pg0").await;
    let garbage: [&[u8]; 4] = [
        b"\xff\xfe{not json",
        b"[1,2,3]",
        b"null",
        br#"{"optime":-1.5,"slots":7,"leader":[],"member":{},"sync_standby":42,"timeline":true}"#,
    ];
    for (round, bytes) in garbage.iter().enumerate() {
        for key in [
            "initialize",
            "config",
            "failover",
            "sync",
            "history",
            "status",
            "failsafe",
            "members/pg9",
            "leader",
        ] {
            backend
                .put_raw(&scope, key, bytes)
                .await
                .expect("raw write");
        }
        let state = member
            .cluster()
            .await
            .unwrap_or_else(|e| panic!("round {round}: snapshot failed on garbage: {e}"));
        assert!(
            matches!(
                state.initialize.as_ref().map(|v| &v.value),
                Some(Initialize::Invalid(_))
            ),
            "round {round}"
        );
        let config = &state.config.as_ref().expect("config key exists").value;
        // A JSON object is a valid config, even with keys nobody knows.
        let is_object = bytes.starts_with(b"{");
        assert_eq!(config.valid, is_object, "round {round}: {config:?}");
        assert!(
            is_object || config.data.is_empty(),
            "round {round}: {config:?}"
        );
        assert!(
            state.failover.as_ref().expect("failover").value.is_empty(),
            "round {round}"
        );
        assert!(
            state.sync.as_ref().expect("sync").value.is_empty(),
            "round {round}"
        );
        assert!(
            state
                .history
                .as_ref()
                .expect("history")
                .value
                .lines
                .is_empty(),
            "round {round}"
        );
        assert_eq!(
            state.status.as_ref().expect("status").value.optime,
            None,
            "round {round}"
        );
        assert!(
            state
                .failsafe
                .as_ref()
                .expect("failsafe")
                .value
                .members
                .is_empty(),
            "round {round}"
        );
        assert_eq!(member_names(&state), ["pg9"], "round {round}");
        assert!(!state.members[0].data.is_running(), "round {round}");
        assert!(
            state.leader.is_some(),
            "round {round}: a garbage leader key still holds the lock"
        );
        assert!(
            matches!(
                member.try_acquire_leader().await.expect("acquire"),
                Acquire::HeldBy(_)
            ),
            "round {round}"
        );
    }
}
