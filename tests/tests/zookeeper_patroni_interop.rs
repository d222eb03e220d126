//! Patroni and `ZooKeeperDcs` read each other's cluster state in ZooKeeper:
//! `patronictl list` shows a cluster written through `ZooKeeperDcs`, and
//! `ZooKeeperDcs::cluster()` reads one that Patroni's own ZooKeeper class wrote.
//! `cargo test -p dcs-tests --test zookeeper_patroni_interop`.
//!
//! Needs Patroni (Debian `patroni`, with `python3-kazoo`) besides ZooKeeper; without it the
//! tests skip, or fail when `DCS_TEST_REQUIRE` lists `patroni`.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use dcs_core::model::{ClusterConfig, Initialize, MemberState, Role};
use dcs_core::{Acquire, Dcs, DcsExt, MemberData, Precondition};
use dcs_tests::conformance::ZooKeeperBackend;
use dcs_tests::require::skip_or_fail;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

const PYTHON: &str = "/usr/bin/python3";
const PATRONICTL: &str = "/usr/bin/patronictl";

/// Whether Patroni's ZooKeeper class and `patronictl` are here; reports when not.
async fn patroni_available() -> bool {
    if !Path::new(PATRONICTL).exists() {
        skip_or_fail(
            "patroni",
            format!("{PATRONICTL} is not installed (Debian patroni)"),
        );
        return false;
    }
    let import = Command::new(PYTHON)
        .args(["-c", "import patroni.dcs.zookeeper"])
        .output()
        .await;
    match import {
        Ok(output) if output.status.success() => true,
        Ok(output) => {
            skip_or_fail(
                "patroni",
                format!(
                    "Patroni's ZooKeeper module does not import (python3-kazoo?): {}",
                    String::from_utf8_lossy(&output.stderr)
                ),
            );
            false
        }
        Err(e) => {
            skip_or_fail("patroni", format!("cannot run {PYTHON}: {e}"));
            false
        }
    }
}

fn hosts_yaml(backend: &ZooKeeperBackend) -> String {
    backend
        .server()
        .hosts()
        .iter()
        .map(|h| format!("'{h}'"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn patronictl_lists_a_cluster_written_through_zookeeper_dcs() {
    let Some(backend) = ZooKeeperBackend::standalone().await else {
        return;
    };
    if !patroni_available().await {
        return;
    }
    let scope = format!("interop-ours-{}", std::process::id());
    let leader = backend
        .zookeeper_client(&scope, "pg0")
        .await
        .expect("client");
    let replica = backend
        .zookeeper_client(&scope, "pg1")
        .await
        .expect("client");
    let version = leader.initialize().await.expect("initialize");
    leader
        .set_system_id("7268616322854375442", Precondition::Version(version))
        .await
        .expect("sysid");
    let config = ClusterConfig::parse(br#"{"ttl":30,"loop_wait":10,"retry_timeout":10}"#);
    leader
        .set_config(&config, Precondition::Absent)
        .await
        .expect("config");
    let member = |name: &str, role: Role| MemberData {
        conn_url: Some(format!("postgres://127.0.0.1:5432/{name}")),
        api_url: Some(format!("http://127.0.0.1:8008/{name}/patroni")),
        state: MemberState::Running,
        role,
        version: Some("3.0.2".into()),
        xlog_location: Some(67_419_744),
        timeline: Some(1),
        ..MemberData::default()
    };
    leader
        .publish_member(&member("pg0", Role::Primary))
        .await
        .expect("publish");
    replica
        .publish_member(&member("pg1", Role::Replica))
        .await
        .expect("publish");
    let Acquire::Won(_lease) = leader.try_acquire_leader().await.expect("acquire") else {
        panic!("the lock is free");
    };

    let dir = tempfile::tempdir().expect("tempdir");
    let config_file = dir.path().join("patronictl.yml");
    std::fs::write(
        &config_file,
        format!(
            "scope: {scope}\nnamespace: /service/\nzookeeper:\n  hosts: [{}]\n",
            hosts_yaml(&backend)
        ),
    )
    .expect("write config");
    let output = tokio::time::timeout(
        Duration::from_secs(60),
        Command::new(PATRONICTL)
            .arg("-c")
            .arg(&config_file)
            .args(["list", "--format", "json"])
            .output(),
    )
    .await
    .expect("patronictl finishes")
    .expect("patronictl runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "patronictl failed: {stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let rows: Vec<serde_json::Value> = serde_json::from_str(&stdout).expect("JSON rows");
    let row = |name: &str| {
        rows.iter()
            .find(|row| row["Member"] == name)
            .unwrap_or_else(|| panic!("{name} is not listed: {stdout}"))
    };
    assert_eq!(rows.len(), 2, "{stdout}");
    assert_eq!(row("pg0")["Role"], "Leader", "{stdout}");
    assert_eq!(row("pg1")["Role"], "Replica", "{stdout}");
    assert_eq!(row("pg0")["Cluster"], scope.as_str(), "{stdout}");
    assert_eq!(row("pg0")["State"], "running", "{stdout}");
    assert_eq!(row("pg1")["TL"], 1, "{stdout}");
    leader.delete_cluster().await.expect("clean up");
}

/// What Patroni 3.0.2's own `ZooKeeper` class writes: bootstrap, config, its member key and
/// the leader lock. It prints `written`, then holds its session until stdin closes.
const PATRONI_WRITER: &str = r"
import json, sys
from patroni.dcs.zookeeper import ZooKeeper
hosts, scope = sys.argv[1], sys.argv[2]
dcs = ZooKeeper({'hosts': hosts.split(','), 'scope': scope, 'name': 'patroni0',
                 'namespace': '/service/', 'ttl': 30, 'loop_wait': 10, 'retry_timeout': 10})
assert dcs.initialize(create_new=True, sysid='6998857766421483520')
assert dcs.set_config_value(json.dumps({'ttl': 30, 'loop_wait': 10, 'maximum_lag_on_failover': 1048576},
                                       separators=(',', ':')))
assert dcs.touch_member({'conn_url': 'postgres://10.0.0.1:5432/postgres',
                         'api_url': 'http://10.0.0.1:8008/patroni', 'state': 'running',
                         'role': 'master', 'version': '3.0.2', 'xlog_location': 50331648,
                         'timeline': 2})
assert dcs.attempt_to_acquire_leader()
print('written', flush=True)
sys.stdin.read()
dcs._client.stop()
dcs._client.close()
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zookeeper_dcs_reads_a_cluster_that_patroni_wrote() {
    let Some(backend) = ZooKeeperBackend::standalone().await else {
        return;
    };
    if !patroni_available().await {
        return;
    }
    let scope = format!("interop-patroni-{}", std::process::id());
    let mut patroni = Command::new(PYTHON)
        .args(["-c", PATRONI_WRITER])
        .arg(backend.server().connect_string())
        .arg(&scope)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("run Patroni's ZooKeeper class");
    let mut lines = BufReader::new(patroni.stdout.take().expect("stdout")).lines();
    let written = tokio::time::timeout(Duration::from_secs(60), lines.next_line())
        .await
        .expect("Patroni writes within a minute")
        .expect("read Patroni's output");
    assert_eq!(
        written.as_deref(),
        Some("written"),
        "Patroni's writer failed"
    );

    let ours = backend
        .zookeeper_client(&scope, "pg1")
        .await
        .expect("client");
    let state = ours.cluster().await.expect("snapshot");
    assert_eq!(
        state.initialize.as_ref().map(|v| &v.value),
        Some(&Initialize::SystemId("6998857766421483520".into()))
    );
    assert_eq!(state.config.as_ref().map(|c| c.value.ttl()), Some(30));
    let leader = state.leader.as_ref().expect("leader");
    assert_eq!(leader.name, "patroni0");
    assert!(leader.owner.is_some(), "Patroni's leader node is ephemeral");
    let member = state.member("patroni0").expect("Patroni's member key");
    assert_eq!(
        member.data.role,
        Role::Primary,
        "3.x `master` reads as primary"
    );
    assert!(member.data.is_running());
    assert_eq!(member.data.timeline, Some(2));
    assert_eq!(member.owner, leader.owner, "one Patroni session holds both");
    match ours.try_acquire_leader().await.expect("acquire") {
        Acquire::HeldBy(holder) => assert_eq!(holder.name, "patroni0"),
        Acquire::Won(_) => panic!("took the lock Patroni holds"),
    }

    // Patroni closes its session: its ephemeral nodes go at once, and the lock is free.
    drop(patroni.stdin.take());
    let status = tokio::time::timeout(Duration::from_secs(60), patroni.wait())
        .await
        .expect("Patroni exits")
        .expect("wait");
    assert!(status.success(), "Patroni's writer failed: {status}");
    let Acquire::Won(_lease) = ours.try_acquire_leader().await.expect("acquire") else {
        panic!("Patroni's lock outlived its session");
    };
    ours.delete_cluster().await.expect("clean up");
}
