//! The real-server fixtures do what the conformance suite and the chaos harness rely on: the
//! servers serve, member control does what it says, and nothing outlives the fixture.
//!
//! Each test skips (or fails, when `DCS_TEST_REQUIRE` lists the backend) if its server cannot
//! be started.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use dcs_tests::fixtures::process::{ProcessSpec, servers_die_with_test_process};
use dcs_tests::fixtures::zookeeper::four_letter_word;
use dcs_tests::fixtures::{
    EtcdServer, FixtureError, PostgresServer, ZooKeeperMode, ZooKeeperServer,
};
use dcs_tests::require::skip_or_fail;

/// Skips a test that does not apply here (a test of process control when the fixture points
/// at an external server). Not a failure even when the backend is required: the external
/// server is still tested by every test that only talks to it.
fn skip_not_applicable(backend: &str, why: &str) {
    eprintln!("SKIPPED {backend}: {why}");
}

/// Runs `etcdctl` (v3 API) against `endpoint` and returns its standard output.
async fn etcdctl(endpoint: &str, args: &[&str]) -> Result<String, String> {
    let output = tokio::process::Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .args([
            "--endpoints",
            endpoint,
            "--dial-timeout=2s",
            "--command-timeout=5s",
        ])
        .args(args)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|e| format!("cannot run etcdctl: {e}"))?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(format!(
            "etcdctl {args:?} via {endpoint}: {}: {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

/// Retries `etcdctl` while the cluster elects a new leader after a member was lost.
async fn etcdctl_eventually(endpoint: &str, args: &[&str]) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match etcdctl(endpoint, args).await {
            Ok(output) => return output,
            Err(e) if Instant::now() > deadline => panic!("{e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// Whether a process with this id exists at all (a zombie counts).
fn exists(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// Whether a process with this id runs (exists and is not a zombie waiting for its parent).
fn is_running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        // The state follows the parenthesised command name, which may contain spaces.
        stat.rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z")
    })
}

/// The real user id a process runs as, from `/proc/<pid>/status`.
fn process_uid(pid: u32) -> u32 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("process status");
    status
        .lines()
        .find_map(|line| line.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().next())
        .and_then(|uid| uid.parse().ok())
        .expect("a Uid line")
}

#[tokio::test]
async fn etcd_single_member_round_trips_a_key() {
    let etcd = match EtcdServer::start().await {
        Ok(etcd) => etcd,
        Err(e) => return skip_or_fail("etcd", e),
    };
    let endpoint = etcd.endpoint(0);
    etcdctl(endpoint, &["put", "/service/test/leader", "node-1"])
        .await
        .unwrap();
    let value = etcdctl(
        endpoint,
        &["get", "--print-value-only", "/service/test/leader"],
    )
    .await
    .unwrap();
    assert_eq!(value.trim(), "node-1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_cluster_replicates_and_survives_a_killed_member() {
    let etcd = match EtcdServer::start_cluster(3).await {
        Ok(etcd) => etcd,
        Err(e) => return skip_or_fail("etcd", e),
    };
    if etcd.is_external() {
        return skip_not_applicable(
            "etcd",
            "an external cluster cannot be killed member by member",
        );
    }
    assert_eq!(etcd.member_count(), 3);
    for i in 0..3 {
        assert!(
            etcd.health(i, Duration::from_secs(2)).await.unwrap(),
            "member {i}"
        );
    }
    assert!(
        etcd.leader().await.unwrap().is_some(),
        "a healthy cluster has a leader"
    );

    etcdctl(etcd.endpoint(0), &["put", "k", "before"])
        .await
        .unwrap();
    let value = etcdctl(etcd.endpoint(2), &["get", "--print-value-only", "k"])
        .await
        .unwrap();
    assert_eq!(value.trim(), "before");

    let pids: Vec<u32> = (0..3).map(|i| etcd.pid(i).unwrap()).collect();
    etcd.kill(0).unwrap();
    assert_eq!(etcd.pid(0), None);
    assert!(!exists(pids[0]), "a killed member is reaped");
    etcdctl_eventually(etcd.endpoint(1), &["put", "k", "after"]).await;

    // The restarted member catches up on what it missed while it was down.
    etcd.restart(0).await.unwrap();
    etcd.wait_healthy(Duration::from_secs(20)).await.unwrap();
    let value = etcdctl_eventually(etcd.endpoint(0), &["get", "--print-value-only", "k"]).await;
    assert_eq!(value.trim(), "after");

    let pids = [etcd.pid(0).unwrap(), pids[1], pids[2]];
    drop(etcd);
    for pid in pids {
        assert!(!exists(pid), "etcd pid {pid} survived the fixture");
    }
}

#[tokio::test]
async fn paused_etcd_member_stops_answering_until_resumed() {
    let etcd = match EtcdServer::start().await {
        Ok(etcd) => etcd,
        Err(e) => return skip_or_fail("etcd", e),
    };
    if etcd.is_external() {
        return skip_not_applicable("etcd", "an external server cannot be paused");
    }
    etcd.pause(0).unwrap();
    let answer = etcd.health(0, Duration::from_millis(500)).await;
    assert!(
        matches!(answer, Err(FixtureError::Timeout { .. })),
        "a paused member must not answer, got {answer:?}"
    );
    etcd.resume(0).unwrap();
    assert!(etcd.health(0, Duration::from_secs(5)).await.unwrap());
}

#[tokio::test]
async fn paused_etcd_is_stopped_by_drop() {
    let etcd = match EtcdServer::start().await {
        Ok(etcd) => etcd,
        Err(e) => return skip_or_fail("etcd", e),
    };
    if etcd.is_external() {
        return skip_not_applicable("etcd", "an external server cannot be paused");
    }
    let pid = etcd.pid(0).unwrap();
    etcd.pause(0).unwrap();
    drop(etcd);
    assert!(!exists(pid), "a paused etcd survived the fixture");
}

#[tokio::test]
async fn zookeeper_standalone_answers_ruok() {
    let zk = match ZooKeeperServer::start().await {
        Ok(zk) => zk,
        Err(e) => return skip_or_fail("zookeeper", e),
    };
    let host = &zk.hosts()[0];
    assert_eq!(zk.connect_string(), *host);
    let answer = four_letter_word(host, "ruok", Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(answer, "imok");
    if zk.is_external() {
        return;
    }
    assert_eq!(
        zk.mode(0, Duration::from_secs(5)).await.unwrap(),
        ZooKeeperMode::Standalone
    );
    let pid = zk.pid(0).unwrap();
    drop(zk);
    assert!(!exists(pid), "ZooKeeper pid {pid} survived the fixture");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zookeeper_ensemble_has_one_leader_and_elects_another_when_it_dies() {
    let zk = match ZooKeeperServer::start_ensemble(3).await {
        Ok(zk) => zk,
        Err(e) => return skip_or_fail("zookeeper", e),
    };
    if zk.is_external() {
        return skip_not_applicable(
            "zookeeper",
            "an external ensemble cannot be killed member by member",
        );
    }
    assert_eq!(zk.connect_string().split(',').count(), 3);
    let mut modes = Vec::new();
    for i in 0..3 {
        modes.push(zk.mode(i, Duration::from_secs(5)).await.unwrap());
    }
    let leaders = modes
        .iter()
        .filter(|&&m| m == ZooKeeperMode::Leader)
        .count();
    let followers = modes
        .iter()
        .filter(|&&m| m == ZooKeeperMode::Follower)
        .count();
    assert_eq!((leaders, followers), (1, 2), "modes: {modes:?}");

    let leader = zk
        .leader()
        .await
        .unwrap()
        .expect("a serving ensemble has a leader");
    let pids: Vec<u32> = (0..3).map(|i| zk.pid(i).unwrap()).collect();
    zk.kill(leader).unwrap();
    zk.wait_serving(Duration::from_secs(30)).await.unwrap();
    let new_leader = zk
        .leader()
        .await
        .unwrap()
        .expect("two of three members elect a leader");
    assert_ne!(new_leader, leader);

    drop(zk);
    for pid in pids {
        assert!(!exists(pid), "ZooKeeper pid {pid} survived the fixture");
    }
}

#[tokio::test]
async fn postgres_runs_sql_as_an_unprivileged_user() {
    let pg = match PostgresServer::start().await {
        Ok(pg) => pg,
        Err(e) => return skip_or_fail("postgres", e),
    };
    assert_eq!(pg.run_sql("SELECT 1").await.unwrap(), "1");
    assert_eq!(
        pg.run_sql("SELECT current_user").await.unwrap(),
        "postgres",
        "the fixture connects as the superuser"
    );
    if pg.is_external() {
        return;
    }
    let pid = pg.pid().unwrap();
    assert_eq!(process_uid(pid), pg.os_user().uid);
    if nix::unistd::Uid::effective().is_root() {
        assert_ne!(process_uid(pid), 0, "PostgreSQL must not run as root");
    }
    let data_dir = pg.data_dir().unwrap();
    assert!(data_dir.join("PG_VERSION").is_file());
    drop(pg);
    assert!(!exists(pid), "postmaster pid {pid} survived the fixture");
    assert!(!data_dir.exists(), "the data directory is removed");
}

#[tokio::test]
async fn postgres_keeps_committed_rows_across_a_crash() {
    let pg = match PostgresServer::start().await {
        Ok(pg) => pg,
        Err(e) => return skip_or_fail("postgres", e),
    };
    if pg.is_external() {
        return skip_not_applicable("postgres", "an external server cannot be killed");
    }
    pg.run_sql("CREATE TABLE t (x int); INSERT INTO t VALUES (42)")
        .await
        .unwrap();
    pg.kill().unwrap();
    assert!(
        pg.run_sql("SELECT 1").await.is_err(),
        "a killed server answers nothing"
    );
    pg.restart().await.unwrap();
    assert_eq!(pg.run_sql("SELECT x FROM t").await.unwrap(), "42");
}

#[tokio::test]
async fn dropped_process_leaves_no_process_of_its_group_running() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("sh.log");
    // A server with a child of its own, as the postmaster has backends; the shell exits on
    // SIGTERM without passing it on, so only the group sweep can stop the child.
    let process = ProcessSpec::new("shell", "/bin/sh", &log)
        .with_args(["-c", "sleep 1000 & echo child=$!; wait"])
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let child: u32 = loop {
        let text = std::fs::read_to_string(&log).unwrap();
        if let Some(pid) = text.lines().find_map(|line| line.strip_prefix("child=")) {
            break pid.trim().parse().unwrap();
        }
        assert!(
            Instant::now() < deadline,
            "the shell never started its child"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let leader = process.pid();
    assert!(is_running(child));
    drop(process);
    assert!(!exists(leader));
    // SIGKILL was sent to the group before drop returned; the kernel finishes it on its own
    // time.
    let deadline = Instant::now() + Duration::from_secs(5);
    while is_running(child) {
        assert!(
            Instant::now() < deadline,
            "the group's other process survived"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[test]
fn server_outlives_the_thread_that_started_it() {
    // The parent-death signal follows the thread that forked the server; a fixture started on
    // a short-lived thread (a blocking-pool thread, a per-test runtime) must not die with it.
    let started = std::thread::spawn(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(EtcdServer::start())
    })
    .join()
    .unwrap();
    let etcd = match started {
        Ok(etcd) => etcd,
        Err(e) => return skip_or_fail("etcd", e),
    };
    if etcd.is_external() {
        return skip_not_applicable("etcd", "an external server has no process");
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let healthy = runtime.block_on(etcd.health(0, Duration::from_secs(5)));
    assert!(
        healthy.unwrap(),
        "etcd died with the thread that started it"
    );
}

/// The process the next test kills: it starts etcd, reports its pid and waits to die. Ignored
/// so it runs only when that test starts it.
#[tokio::test]
#[ignore = "a helper that `servers_die_with_a_killed_test_process` runs in a child process"]
async fn helper_start_etcd_and_wait_to_be_killed() {
    if std::env::var_os("DCS_FIXTURE_HELPER").is_none() {
        return;
    }
    let etcd = EtcdServer::start().await.unwrap();
    println!("etcd-dir={}", etcd.dir().unwrap().display());
    println!("etcd-pid={}", etcd.pid(0).unwrap());
    tokio::time::sleep(Duration::from_secs(600)).await;
    drop(etcd);
}

#[test]
fn servers_die_with_a_killed_test_process() {
    if !servers_die_with_test_process() {
        return skip_not_applicable("etcd", "setpriv --pdeathsig is unavailable (util-linux)");
    }
    if std::env::var_os(dcs_tests::fixtures::etcd::ENDPOINTS_VAR).is_some() {
        return skip_not_applicable("etcd", "the etcd server is external");
    }
    let mut helper = Command::new(std::env::current_exe().unwrap())
        .args(["--ignored", "--exact", "--nocapture"])
        .arg("helper_start_etcd_and_wait_to_be_killed")
        .env("DCS_FIXTURE_HELPER", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut etcd_dir = None;
    let etcd_pid: Option<u32> = BufReader::new(helper.stdout.take().unwrap())
        .lines()
        .map_while(Result::ok)
        .find_map(|line| {
            if let Some(dir) = line.strip_prefix("etcd-dir=") {
                etcd_dir = Some(std::path::PathBuf::from(dir));
            }
            line.strip_prefix("etcd-pid=")
                .map(|pid| pid.parse().unwrap())
        });
    let Some(etcd_pid) = etcd_pid else {
        let status = helper.wait().unwrap();
        return skip_or_fail(
            "etcd",
            format!("the helper could not start etcd ({status})"),
        );
    };
    assert!(is_running(etcd_pid));
    helper.kill().unwrap();
    helper.wait().unwrap();
    // The kernel delivers the parent-death signal as the helper's threads exit.
    let deadline = Instant::now() + Duration::from_secs(10);
    while is_running(etcd_pid) {
        assert!(
            Instant::now() < deadline,
            "etcd outlived the killed test process"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // No Drop ran in the killed process, so its temporary directory is left to us.
    if let Some(dir) = etcd_dir {
        std::fs::remove_dir_all(dir).unwrap();
    }
}
