//! `ZooKeeperDcs` under member loss and partition, on real 3-member ensembles started by the
//! fixtures, and the session's edges (a clamped session timeout, a graceful close) on a
//! standalone server: `cargo test -p dcs-tests --test zookeeper_faults`.
//!
//! What a user cares about: a holder keeps its lock (same session, same fencing token)
//! through the loss of any one member, since the client moves its session to another
//! member; a holder cut off from the whole ensemble learns it cannot renew before its
//! lease's deadline, is told `LeaseLost` only once its session is gone, and another member
//! gets the lock only after that deadline, so there is never a second holder.

use std::time::Duration;

use dcs_core::{Acquire, Dcs, Error, LeaderLease, MemberData, Timing};
use dcs_tests::conformance::ZooKeeperBackend;
use tokio::time::{Instant, sleep};

/// Longer than the suite's: a ZooKeeper leader election on two busy cores can take a few
/// seconds, and the lease must outlive it for "keeps its lock" to be testable.
fn timing() -> Timing {
    Timing::new(
        Duration::from_secs(6),
        Duration::from_secs(2),
        Duration::from_secs(2),
    )
    .expect("valid timing")
}

/// For riding out the loss of a member: a new ZooKeeper leader election plus the client's
/// move to another member took longer than 6 s once on two cores busy with builds, and the
/// session (hence the lease) must outlive it for "keeps its lock" to be what is tested.
fn member_loss_timing() -> Timing {
    Timing::new(
        Duration::from_secs(12),
        Duration::from_secs(2),
        Duration::from_secs(4),
    )
    .expect("valid timing")
}

async fn acquire(dcs: &dyn Dcs) -> LeaderLease {
    match dcs.try_acquire_leader().await.expect("acquire") {
        Acquire::Won(lease) => lease,
        Acquire::HeldBy(leader) => panic!("{} holds the lock", leader.name),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_holder_keeps_its_lock_through_the_loss_of_any_one_member() {
    let Some(backend) = ZooKeeperBackend::dedicated(3).await else {
        return;
    };
    let scope = "member-loss";
    let holder = backend
        .zookeeper_client_with(scope, "pg0", member_loss_timing())
        .await
        .expect("client");
    let other = backend
        .zookeeper_client_with(scope, "pg1", member_loss_timing())
        .await
        .expect("client");
    holder
        .publish_member(&MemberData::default())
        .await
        .expect("publish");
    let mut lease = acquire(&holder).await;
    let token = lease.token();
    let owner = lease.owner().to_owned();
    let server = backend.server();
    // One member after the other, so the member the holder is connected to, and the
    // ensemble's leader, are each lost once.
    for member in 0..server.member_count() {
        server.kill(member).expect("kill");
        // Renew as an agent would, until a renewal went through on the surviving members.
        loop {
            assert!(
                lease.is_valid(),
                "member {member}: the lease ran out before a renewal"
            );
            match holder.renew_leader(&lease).await {
                Ok(renewed) => {
                    lease = renewed;
                    break;
                }
                Err(e) if e.is_retryable() => sleep(Duration::from_millis(200)).await,
                Err(e) => panic!("member {member} lost: the holder got {e:?}"),
            }
        }
        assert_eq!(lease.token(), token, "member {member}: the same holding");
        assert_eq!(lease.owner(), owner, "member {member}: the same session");
        match other.try_acquire_leader().await.expect("acquire") {
            Acquire::HeldBy(leader) => assert_eq!(leader.name, "pg0"),
            Acquire::Won(_) => panic!("member {member} lost: a second holder"),
        }
        let state = other.cluster().await.expect("snapshot");
        assert_eq!(state.leader.map(|l| l.token), Some(token));
        assert_eq!(state.members.len(), 1, "the holder's member key lives on");
        server.restart(member).await.expect("restart");
        server
            .wait_serving(Duration::from_secs(60))
            .await
            .expect("ensemble serves again");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_holder_cut_off_from_the_ensemble_learns_it_in_time_and_is_replaced_only_after_expiry() {
    let Some(backend) = ZooKeeperBackend::dedicated(3).await else {
        return;
    };
    let scope = "cut-off";
    let timing = timing();
    let holder = backend
        .zookeeper_client_with(scope, "pg0", timing)
        .await
        .expect("client");
    let other = backend
        .zookeeper_client_with(scope, "pg1", timing)
        .await
        .expect("client");
    let first = acquire(&holder).await;
    let server = backend.server();
    for member in 0..server.member_count() {
        server.pause(member).expect("pause");
    }
    // The holder goes on renewing every loop_wait, as an agent does.
    let mut lease = first;
    let mut first_failure = None;
    let lost_at = loop {
        let attempt = Instant::now();
        match holder.renew_leader(&lease).await {
            Ok(renewed) => lease = renewed,
            Err(Error::LeaseLost { .. }) => break Instant::now(),
            Err(e) => {
                assert!(e.is_retryable(), "unreachable is retryable, got {e}");
                first_failure.get_or_insert(Instant::now());
            }
        }
        assert!(
            attempt < lease.valid_until() + timing.ttl() * 2,
            "no LeaseLost long after the session must have ended"
        );
        sleep(timing.loop_wait()).await;
    };
    let learned = first_failure.expect("a failed renewal before the loss");
    assert!(
        learned < lease.valid_until(),
        "the holder learned it could not renew {:?} after its deadline",
        learned - lease.valid_until()
    );
    assert!(
        lost_at >= lease.valid_until(),
        "LeaseLost while the lease was still valid: a disconnected session is not lost"
    );
    for member in 0..server.member_count() {
        server.resume(member).expect("resume");
    }
    server
        .wait_serving(Duration::from_secs(60))
        .await
        .expect("ensemble serves again");
    // The other member races for the lock as soon as the ensemble answers.
    let (taken, attempt) = loop {
        let attempt = Instant::now();
        match other.try_acquire_leader().await {
            Ok(Acquire::Won(taken)) => break (taken, attempt),
            Ok(Acquire::HeldBy(_)) | Err(_) => sleep(Duration::from_millis(50)).await,
        }
    };
    assert!(
        attempt >= lease.valid_until(),
        "a second holder {:?} before the first one's deadline",
        lease.valid_until() - attempt
    );
    assert!(taken.token() > lease.token(), "a newer fencing token");
    assert!(matches!(
        holder.renew_leader(&lease).await,
        Err(Error::LeaseLost { .. })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_lasts_the_shorter_session_timeout_when_the_server_grants_less_than_ttl() {
    let Some(backend) = ZooKeeperBackend::standalone().await else {
        return;
    };
    // The fixture's maxSessionTimeout is 60 s: a 90 s ttl is clamped to it.
    let ttl = Timing::from_secs(90, 10, 10).expect("valid timing");
    let holder = backend
        .zookeeper_client_with("clamped", "pg0", ttl)
        .await
        .expect("client");
    let before = Instant::now();
    let lease = acquire(&holder).await;
    let after = Instant::now();
    let granted = Duration::from_secs(60);
    assert!(
        lease.valid_until() >= before + granted && lease.valid_until() <= after + granted,
        "valid for the session timeout the server granted, not for ttl"
    );
    holder.release_leader(lease).await.expect("release");
    holder.delete_cluster().await.expect("clean up");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_ends_the_session_so_another_member_takes_over_at_once() {
    let Some(backend) = ZooKeeperBackend::standalone().await else {
        return;
    };
    let scope = "graceful-close";
    let holder = backend
        .zookeeper_client(scope, "pg0")
        .await
        .expect("client");
    let other = backend
        .zookeeper_client(scope, "pg1")
        .await
        .expect("client");
    holder
        .publish_member(&MemberData::default())
        .await
        .expect("publish");
    let lease = acquire(&holder).await;
    holder.close().await.expect("close");
    let state = other.cluster().await.expect("snapshot");
    assert!(
        state.leader.is_none(),
        "the leader node went with the session"
    );
    assert!(
        state.members.is_empty(),
        "the member node went with the session"
    );
    let taken = acquire(&other).await;
    assert!(
        lease.is_valid(),
        "taken over before the old lease would have expired"
    );
    assert!(taken.token() > lease.token());
    other.delete_cluster().await.expect("clean up");
}
