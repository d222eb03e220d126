//! `EtcdDcs` and Patroni read each other's cluster state in etcd, both ways:
//!
//! - a cluster written through `EtcdDcs` is what Patroni's own `patronictl list` (and
//!   `show-config`, `history`) shows, from a configuration with an `etcd3:` section;
//! - a cluster written by Patroni's own `patroni.dcs.etcd3.Etcd3` class (bootstrap, config,
//!   three members, the leader race, status, history, sync, a switchover request) is what
//!   `EtcdDcs::cluster` reads.
//!
//! Runs the Debian `patroni` package (3.0.2) with `/usr/bin/python3`; no PostgreSQL is
//! needed. Skips (or fails, when `DCS_TEST_REQUIRE` lists it) as `patroni` when Patroni is
//! missing and as `etcd` when etcd is.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use dcs_core::model::{ClusterConfig, Initialize, MemberState, Role, Status, TimelineHistory};
use dcs_core::{
    Acquire, ClientOptions, ClusterPath, Dcs, DcsExt, MemberData, Precondition, Timing,
};
use dcs_etcd::{EtcdConfig, EtcdDcs, Hosts};
use dcs_tests::fixtures::EtcdServer;
use dcs_tests::require::skip_or_fail;

const PYTHON: &str = "/usr/bin/python3";

/// Writes a whole cluster through Patroni's own etcd3 DCS class.
const PATRONI_WRITER: &str = r"
import json, os, sys
from patroni.dcs.etcd3 import Etcd3

hosts, scope = sys.argv[1], sys.argv[2]

def client(name):
    return Etcd3({'hosts': hosts, 'scope': scope, 'name': name, 'namespace': '/service',
                  'ttl': 30, 'loop_wait': 10, 'retry_timeout': 10})

def dumps(value):
    return json.dumps(value, separators=(',', ':'))

pg0 = client('pg0')
assert pg0.initialize(create_new=True, sysid='')
assert pg0.initialize(create_new=False, sysid='7268616322854375442')
assert pg0.set_config_value(dumps({'ttl': 30, 'loop_wait': 10, 'retry_timeout': 10,
                                   'maximum_lag_on_failover': 1048576,
                                   'postgresql': {'use_pg_rewind': True}}))
for i, name in enumerate(['pg0', 'pg1', 'pg2']):
    member = pg0 if i == 0 else client(name)
    data = {'conn_url': 'postgres://127.0.0.%d:5432/postgres' % (i + 1),
            'api_url': 'http://127.0.0.%d:8008/patroni' % (i + 1),
            'state': 'running', 'role': 'master' if i == 0 else 'replica',
            'version': '3.0.2', 'xlog_location': 67420024 - i * 1048576, 'timeline': 2}
    if i:
        data['replication_state'] = 'streaming'
    assert member.touch_member(data) is not False
assert pg0.attempt_to_acquire_leader()
pg0.write_status({'optime': 67420024, 'slots': {'pg1': 67420024}})
assert pg0.set_history_value(dumps([[1, 25623960, 'no recovery target specified',
                                     '2019-09-23T16:57:57+02:00', 'pg0']]))
assert pg0.write_sync_state('pg0', ['pg1'])
assert pg0.manual_failover('pg0', 'pg2')
print('written')
sys.stdout.flush()
os._exit(0)
";

/// Runs `patronictl list --format json` and prints one normalised line per member.
const PATRONICTL_LIST: &str = r"
import json, subprocess, sys
out = subprocess.run(['patronictl', '-c', sys.argv[1], 'list', '--format', 'json'],
                     check=True, capture_output=True, text=True, timeout=60).stdout
for m in json.loads(out):
    print('|'.join(str(m.get(k, '')) for k in ('Cluster', 'Member', 'Host', 'Role', 'State',
                                                'TL', 'Lag in MB')))
";

fn timing() -> Timing {
    Timing::from_secs(30, 10, 10).expect("Patroni's default timing")
}

fn patroni_available() -> Result<(), String> {
    if !Path::new(PYTHON).exists() {
        return Err(format!("{PYTHON} is not installed"));
    }
    let ok = std::process::Command::new(PYTHON)
        .args(["-c", "import patroni.dcs.etcd3"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        return Err("Patroni's Python package (Debian patroni) is not installed".to_owned());
    }
    let ctl = std::process::Command::new("patronictl")
        .arg("--help")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ctl {
        return Err("patronictl is not installed".to_owned());
    }
    Ok(())
}

async fn etcd_and_patroni() -> Option<EtcdServer> {
    if let Err(why) = patroni_available() {
        skip_or_fail("patroni", why);
        return None;
    }
    match EtcdServer::start().await {
        Ok(server) => Some(server),
        Err(e) => {
            skip_or_fail("etcd", e);
            None
        }
    }
}

fn hosts(server: &EtcdServer) -> Vec<String> {
    server
        .endpoints()
        .iter()
        .map(|e| e.trim_start_matches("http://").to_owned())
        .collect()
}

async fn client(server: &EtcdServer, scope: &str, name: &str) -> EtcdDcs {
    let config = EtcdConfig {
        hosts: Some(Hosts::List(hosts(server))),
        ..EtcdConfig::default()
    };
    let options = ClientOptions::new(ClusterPath::new(scope).expect("scope"), name)
        .expect("name")
        .with_timing(timing());
    EtcdDcs::connect(&config, options).await.expect("client")
}

async fn python(args: &[&str]) -> String {
    let output = tokio::time::timeout(
        Duration::from_secs(90),
        tokio::process::Command::new(PYTHON)
            .args(args)
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("python finished in time")
    .expect("python runs");
    assert!(
        output.status.success(),
        "python {args:?}: {}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn member(index: u8, role: Role, xlog_location: u64) -> MemberData {
    MemberData {
        conn_url: Some(format!("postgres://127.0.0.{index}:5432/postgres")),
        api_url: Some(format!("http://127.0.0.{index}:8008/patroni")),
        state: MemberState::Running,
        role,
        version: Some("4.1.4".to_owned()),
        xlog_location: Some(xlog_location),
        replication_state: (index > 1).then(|| "streaming".to_owned()),
        timeline: Some(2),
        ..MemberData::default()
    }
}

/// Writes a cluster through `EtcdDcs`: three members, bootstrap, config, the lock (held by
/// pg0), status and history. Returns the clients and the lease, which keep the keys alive.
async fn write_cluster_through_etcd_dcs(
    etcd: &EtcdServer,
    scope: &str,
) -> (Vec<EtcdDcs>, dcs_core::LeaderLease) {
    let mut clients = Vec::new();
    for (i, name) in ["pg0", "pg1", "pg2"].into_iter().enumerate() {
        clients.push(client(etcd, scope, name).await);
        let index = u8::try_from(i + 1).expect("small");
        let (role, lag) = if i == 0 {
            (Role::Primary, 0)
        } else {
            (Role::Replica, 1_048_576 * i as u64)
        };
        clients[i]
            .publish_member(&member(index, role, 67_420_024 - lag))
            .await
            .expect("publish");
    }
    let leader = &clients[0];
    let version = leader.initialize().await.expect("initialize");
    leader
        .set_system_id("7268616322854375442", Precondition::Version(version))
        .await
        .expect("sysid");
    let config = ClusterConfig::parse(
        br#"{"ttl":30,"loop_wait":10,"retry_timeout":10,"maximum_lag_on_failover":1048576}"#,
    );
    leader
        .set_config(&config, Precondition::Absent)
        .await
        .expect("config");
    let Acquire::Won(lease) = leader.try_acquire_leader().await.expect("acquire") else {
        panic!("the lock is free");
    };
    leader
        .write_status(&Status {
            optime: Some(67_420_024),
            ..Status::default()
        })
        .await
        .expect("status");
    leader
        .write_history(&TimelineHistory::parse(
            br#"[[1,25623960,"no recovery target specified","2019-09-23T16:57:57+02:00","pg0"]]"#,
        ))
        .await
        .expect("history");

    (clients, lease)
}

/// A cluster written through `EtcdDcs` — leader, three members, config, status, history —
/// is what `patronictl list`, `show-config` and `history` show.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn patronictl_shows_a_cluster_written_through_etcd_dcs() {
    let Some(etcd) = etcd_and_patroni().await else {
        return;
    };
    let scope = "written-by-us";
    let _held = write_cluster_through_etcd_dcs(&etcd, scope).await;

    let dir = tempfile::tempdir().expect("tempdir");
    let config_path = dir.path().join("patronictl.yml");
    std::fs::write(
        &config_path,
        format!(
            "scope: {scope}\nnamespace: /service\netcd3:\n  hosts: {}\n",
            hosts(&etcd).join(",")
        ),
    )
    .expect("write config");
    let script = dir.path().join("list.py");
    std::fs::write(&script, PATRONICTL_LIST).expect("write script");
    let listed = python(&[
        script.to_str().expect("utf-8 path"),
        config_path.to_str().expect("utf-8 path"),
    ])
    .await;
    let lines: Vec<&str> = listed.lines().collect();
    // Cluster | Member | Host | Role | State | TL | Lag in MB (from `status`'s optime).
    assert_eq!(
        lines,
        [
            "written-by-us|pg0|127.0.0.1|Leader|running|2|",
            "written-by-us|pg1|127.0.0.2|Replica|running|2|1",
            "written-by-us|pg2|127.0.0.3|Replica|running|2|2",
        ],
        "patronictl list:\n{listed}"
    );

    let ctl = |args: &'static [&'static str]| {
        let config_path = config_path.clone();
        async move {
            let output = tokio::process::Command::new("patronictl")
                .arg("-c")
                .arg(&config_path)
                .args(args)
                .stdin(Stdio::null())
                .kill_on_drop(true)
                .output()
                .await
                .expect("patronictl runs");
            assert!(output.status.success(), "patronictl {args:?}: {output:?}");
            String::from_utf8_lossy(&output.stdout).into_owned()
        }
    };
    let shown = ctl(&["show-config"]).await;
    assert!(
        shown.contains("maximum_lag_on_failover: 1048576"),
        "{shown}"
    );
    let history = ctl(&["history", "--format", "json"]).await;
    assert!(
        history.contains("no recovery target specified"),
        "{history}"
    );
    assert!(history.contains("25623960"), "{history}");
}

/// A cluster written by Patroni's own `Etcd3` class is read correctly by `EtcdDcs::cluster`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_dcs_reads_a_cluster_written_by_patroni() {
    let Some(etcd) = etcd_and_patroni().await else {
        return;
    };
    let scope = "written-by-patroni";
    let dir = tempfile::tempdir().expect("tempdir");
    let script = dir.path().join("write.py");
    std::fs::write(&script, PATRONI_WRITER).expect("write script");
    let out = python(&[
        script.to_str().expect("utf-8 path"),
        &hosts(&etcd).join(","),
        scope,
    ])
    .await;
    assert!(out.contains("written"), "{out}");

    let reader = client(&etcd, scope, "reader").await;
    let state = reader.cluster().await.expect("snapshot");
    assert_eq!(
        state.initialize.as_ref().map(|v| &v.value),
        Some(&Initialize::SystemId("7268616322854375442".to_owned()))
    );
    let config = &state.config.as_ref().expect("config").value;
    assert!(config.valid);
    assert_eq!(config.ttl(), 30);
    assert_eq!(
        config
            .data
            .get("maximum_lag_on_failover")
            .map(ToString::to_string)
            .as_deref(),
        Some("1048576")
    );
    let leader = state.leader.as_ref().expect("leader");
    assert_eq!(leader.name, "pg0");
    assert!(
        leader.owner.is_some(),
        "Patroni binds the leader key to its lease"
    );
    let names: Vec<&str> = state.members.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(names, ["pg0", "pg1", "pg2"]);
    let primary = state.leader_member().expect("the leader's member key");
    assert_eq!(
        primary.data.role,
        Role::Primary,
        "3.x `master` reads as primary"
    );
    assert!(primary.data.is_running());
    assert_eq!(primary.data.xlog_location, Some(67_420_024));
    assert_eq!(
        primary.data.conn_url.as_deref(),
        Some("postgres://127.0.0.1:5432/postgres")
    );
    assert_eq!(primary.owner, leader.owner, "one lease for both keys");
    let replica = &state.members[2];
    assert_eq!(replica.data.role, Role::Replica);
    assert_eq!(replica.data.replication_state.as_deref(), Some("streaming"));
    assert_eq!(replica.data.timeline, Some(2));
    let status = &state.status.as_ref().expect("status").value;
    assert_eq!(status.optime, Some(67_420_024));
    assert_eq!(status.slots.get("pg1"), Some(&67_420_024));
    let history = &state.history.as_ref().expect("history").value;
    assert_eq!(history.lines.len(), 1);
    assert_eq!(history.lines[0].lsn, 25_623_960);
    assert_eq!(history.lines[0].new_leader.as_deref(), Some("pg0"));
    let sync = &state.sync.as_ref().expect("sync").value;
    assert_eq!(sync.leader.as_deref(), Some("pg0"));
    assert_eq!(sync.sync_standby, ["pg1"]);
    let failover = &state.failover.as_ref().expect("failover").value;
    assert_eq!(failover.leader.as_deref(), Some("pg0"));
    assert_eq!(failover.candidate.as_deref(), Some("pg2"));

    // And the lock Patroni holds is respected.
    assert!(matches!(
        reader.try_acquire_leader().await.expect("acquire"),
        Acquire::HeldBy(holder) if holder.name == "pg0"
    ));
}
