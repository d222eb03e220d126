//! `EtcdDcs` under member faults on a real 3-member etcd cluster: a killed member that the
//! leader's client was talking to, and the whole cluster frozen for longer than a ttl.
//!
//! Each test starts its own cluster (they kill and freeze members) and skips, or fails when
//! `DCS_TEST_REQUIRE` lists etcd, if etcd cannot start.

use std::time::Duration;

use dcs_core::{Acquire, ClientOptions, ClusterPath, Dcs, Error, LeaderLease, Timing};
use dcs_etcd::{EtcdConfig, EtcdDcs, Hosts};
use dcs_tests::fixtures::EtcdServer;
use dcs_tests::require::skip_or_fail;
use tokio::time::{Instant, sleep};

fn timing() -> Timing {
    Timing::new(
        Duration::from_secs(3),
        Duration::from_secs(1),
        Duration::from_secs(1),
    )
    .expect("valid timing")
}

async fn cluster() -> Option<EtcdServer> {
    match EtcdServer::start_cluster(3).await {
        Ok(server) if server.is_external() => {
            eprintln!("SKIPPED etcd: member faults need a cluster the fixture started");
            None
        }
        Ok(server) => Some(server),
        Err(e) => {
            skip_or_fail("etcd", e);
            None
        }
    }
}

/// A client of `server` that talks to member `first` until it fails, then to the others.
async fn client(server: &EtcdServer, first: usize, name: &str) -> EtcdDcs {
    let n = server.member_count();
    let hosts = (0..n)
        .map(|i| {
            server
                .endpoint((first + i) % n)
                .trim_start_matches("http://")
                .to_owned()
        })
        .collect();
    let config = EtcdConfig {
        hosts: Some(Hosts::List(hosts)),
        ..EtcdConfig::default()
    };
    let path = ClusterPath::new("faults").expect("scope");
    let options = ClientOptions::new(path, name)
        .expect("name")
        .with_timing(timing());
    EtcdDcs::connect(&config, options).await.expect("client")
}

async fn acquire(dcs: &EtcdDcs) -> LeaderLease {
    match dcs.try_acquire_leader().await.expect("acquire") {
        Acquire::Won(lease) => lease,
        Acquire::HeldBy(holder) => panic!("{} holds the lock", holder.name),
    }
}

/// The leader's client talks to the etcd member that is also the raft leader; that member
/// is killed. The client moves to another member and keeps renewing (or learns it lost the
/// lock), while a contender polls for the lock all along: the contender never wins while
/// the holder's lease is valid, and the holder never renews once the contender won.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_member_a_holder_talks_to_never_yields_a_second_holder() {
    let Some(etcd) = cluster().await else { return };
    let raft_leader = etcd.leader().await.expect("status").expect("a raft leader");
    let holder = client(&etcd, raft_leader, "pg0").await;
    let contender = client(&etcd, (raft_leader + 1) % 3, "pg1").await;
    let mut lease = acquire(&holder).await;
    lease = holder
        .renew_leader(&lease)
        .await
        .expect("renew before the fault");
    assert_eq!(
        holder.current_endpoint(),
        0,
        "talks to the raft leader first"
    );

    etcd.kill(raft_leader).expect("kill");

    let timing = timing();
    let until = Instant::now() + timing.ttl() * 3;
    let mut renewed_elsewhere = false;
    let mut lost = false;
    let mut contender_won_at: Option<Instant> = None;
    while Instant::now() < until {
        if !lost {
            match holder.renew_leader(&lease).await {
                Ok(renewed) => {
                    assert!(
                        contender_won_at.is_none(),
                        "the holder renewed after the contender won"
                    );
                    lease = renewed;
                    renewed_elsewhere = holder.current_endpoint() != 0;
                }
                Err(Error::LeaseLost { reason }) => {
                    eprintln!("the holder lost the lock: {reason}");
                    lost = true;
                }
                Err(e) => assert!(e.is_retryable(), "unexpected error: {e}"),
            }
        }
        let attempt = Instant::now();
        match contender.try_acquire_leader().await {
            Ok(Acquire::Won(won)) => {
                assert!(
                    attempt >= lease.valid_until(),
                    "the contender won {:?} before the holder's lease expired",
                    lease.valid_until() - attempt
                );
                contender_won_at.get_or_insert(attempt);
                drop(won);
            }
            Ok(Acquire::HeldBy(_)) => {}
            Err(e) => assert!(e.is_retryable(), "unexpected error: {e}"),
        }
        sleep(timing.loop_wait()).await;
    }
    eprintln!(
        "after the kill: renewed through member {} of the list: {renewed_elsewhere}, lost: {lost}, \
         contender won: {}",
        holder.current_endpoint(),
        contender_won_at.is_some()
    );
    assert!(
        renewed_elsewhere || lost,
        "the holder neither renewed through another member nor learned it lost the lock"
    );
    if renewed_elsewhere && !lost {
        assert!(contender_won_at.is_none());
        let state = contender.cluster().await.expect("snapshot");
        assert_eq!(state.leader.map(|l| l.token), Some(lease.token()));
    }
}

/// The whole cluster freezes (SIGSTOP) for longer than a ttl right after a renewal. The
/// next renewal, made one `loop_wait` later as an agent would, reports a retryable error
/// before the lease's validity deadline, so the holder can stop in time. After the thaw,
/// the holder either renews the same holding or learns it lost the lock.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn freezing_the_whole_cluster_makes_renew_fail_before_the_lease_expires() {
    let Some(etcd) = cluster().await else { return };
    let holder = client(&etcd, 0, "pg0").await;
    let timing = timing();
    let lease = acquire(&holder).await;
    let lease = holder
        .renew_leader(&lease)
        .await
        .expect("renew before the fault");

    for i in 0..3 {
        etcd.pause(i).expect("pause");
    }
    sleep(timing.loop_wait()).await;
    let result = holder.renew_leader(&lease).await;
    let answered = Instant::now();
    match result {
        Err(e) if e.is_retryable() => {}
        other => {
            panic!("renew against a frozen cluster: expected a retryable error, got {other:?}")
        }
    }
    assert!(
        answered < lease.valid_until(),
        "the failure came {:?} after the lease expired",
        answered - lease.valid_until()
    );
    // Frozen for longer than a ttl in all.
    tokio::time::sleep_until(lease.valid_until() + timing.ttl()).await;
    for i in 0..3 {
        etcd.resume(i).expect("resume");
    }
    etcd.wait_healthy(Duration::from_secs(20))
        .await
        .expect("healthy again");

    let deadline = Instant::now() + timing.ttl() * 3;
    loop {
        match holder.renew_leader(&lease).await {
            Ok(renewed) => {
                eprintln!("after the thaw: the holder renewed the same holding");
                assert_eq!(renewed.token(), lease.token());
                break;
            }
            Err(Error::LeaseLost { reason }) => {
                eprintln!("after the thaw: the holder lost the lock: {reason}");
                let state = holder.cluster().await.expect("snapshot");
                assert!(
                    state
                        .leader
                        .as_ref()
                        .is_none_or(|l| l.token != lease.token()),
                    "LeaseLost while the store still shows the holding"
                );
                break;
            }
            Err(e) if e.is_retryable() && Instant::now() < deadline => {
                sleep(timing.loop_wait()).await;
            }
            Err(e) => panic!("renew after the thaw: {e}"),
        }
    }
}
