//! Real-cluster chaos: three agents with PostgreSQL and a 3-member DCS, each node in its own
//! network namespace, under two minutes of mixed faults (partitions, kills, pauses, netem,
//! clock jumps): no two nodes may ever acknowledge writes as primary at once. The negative
//! control (agents that never demote) must be caught by the same checker.
//!
//! Needs root, `ip`, `nft`, `tc` and libfaketime: skipped otherwise, unless
//! `DCS_TEST_REQUIRE` lists `netns` (and `etcd` / `zookeeper` for the servers).
//! The runs take turns (one lock): they share two cores.

use std::sync::Mutex;
use std::time::Duration;

use dcs_tests::chaos::{ChaosError, ChaosOptions, Dcs, Summary, run};
use dcs_tests::require::skip_or_fail;

/// One chaos run at a time: each starts nine servers.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Mixed faults for this long (the issue asks for at least two minutes).
const MIXED: Duration = Duration::from_secs(120);

/// Runs `options`; `None` (after saying why) when this machine cannot.
fn chaos(options: &ChaosOptions) -> Option<Summary> {
    let _turn = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    match runtime.block_on(run(options)) {
        Ok((summary, _history)) => {
            println!("{summary}");
            Some(summary)
        }
        Err(e @ (ChaosError::NotRoot | ChaosError::Missing { .. })) => {
            skip_or_fail("netns", e);
            None
        }
        Err(e @ ChaosError::Fixture(_)) if e.is_environment() => {
            skip_or_fail(options.dcs.name(), e);
            None
        }
        Err(e) => panic!("the chaos run could not be done: {e}"),
    }
}

fn options(dcs: Dcs, seed: u64) -> ChaosOptions {
    // The servers' logs outlive a failed run, so it can be read afterwards.
    let logs = std::env::temp_dir().join(format!(
        "chaos-logs-{}-{seed}-{}",
        dcs.name(),
        std::process::id()
    ));
    println!("chaos: servers' logs go to {}", logs.display());
    ChaosOptions::new(dcs, env!("CARGO_BIN_EXE_ha-agent"))
        .with_duration(MIXED)
        .with_seed(seed)
        .with_logs(logs)
}

/// Removes the kept logs once the run's assertions held: only a failure's are worth keeping,
/// and every CI run would otherwise leave three nodes' logs behind.
fn discard_logs(options: &ChaosOptions) {
    if let Some(logs) = &options.logs {
        let _ = std::fs::remove_dir_all(logs);
    }
}

fn assert_one_writer_and_recovery(summary: &Summary) {
    assert!(
        summary.violations.is_empty(),
        "two primaries acknowledged writes at once:\n{summary}"
    );
    assert!(
        summary.faults.values().sum::<usize>() >= 4,
        "too few faults to mean anything:\n{summary}"
    );
    assert!(
        summary.ops.ok > 0,
        "no write was ever acknowledged:\n{summary}"
    );
    assert!(
        summary.recovered,
        "the healed cluster did not come back to one primary with streaming replicas:\n{summary}"
    );
}

#[test]
fn mixed_faults_on_etcd_never_give_two_writable_primaries() {
    let options = options(Dcs::Etcd, 0x6e7c_d001);
    if let Some(summary) = chaos(&options) {
        assert_one_writer_and_recovery(&summary);
    }
    discard_logs(&options);
}

#[test]
fn mixed_faults_on_zookeeper_never_give_two_writable_primaries() {
    let options = options(Dcs::ZooKeeper, 0x2003_c0de);
    if let Some(summary) = chaos(&options) {
        assert_one_writer_and_recovery(&summary);
    }
    discard_logs(&options);
}

#[test]
fn agents_that_never_demote_are_caught_by_the_single_writer_checker() {
    let options = options(Dcs::Etcd, 11)
        .with_duration(Duration::from_secs(40))
        .with_negative_control(true);
    if let Some(summary) = chaos(&options) {
        assert!(
            summary.faults.get("isolate-primary").copied().unwrap_or(0) >= 1,
            "{summary}"
        );
        assert!(
            !summary.violations.is_empty(),
            "an isolated primary that never demotes went unnoticed:\n{summary}"
        );
    }
    discard_logs(&options);
}
