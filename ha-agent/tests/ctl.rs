//! `ha-agent ctl` as a user runs it: the built binary, a patronictl-style configuration
//! file, a real etcd holding a cluster written through the `Dcs` API, and (for the REST
//! commands) a member API that records what it was sent.
//!
//! Skips (or fails, when `DCS_TEST_REQUIRE` lists etcd) if etcd cannot start.

mod common;

use common::{Cluster, FakeApi, closed_api_url};
use dcs_core::Dcs;
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_prints_members_roles_and_lag_and_writes_nothing() {
    let down = closed_api_url().await;
    let Some(cluster) = Cluster::start([&down, &down]).await else {
        return;
    };
    let run = cluster.ctl(&["list", "-f", "json"]).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let rows: Value = serde_json::from_str(run.stdout.trim()).unwrap();
    assert_eq!(
        rows,
        json!([
            {"Cluster": "batman", "Member": "pg0", "Host": "127.0.0.1:5432", "Role": "Leader",
             "State": "running", "TL": 2},
            {"Cluster": "batman", "Member": "pg1", "Host": "127.0.0.1:5433", "Role": "Replica",
             "State": "running", "TL": 2, "Lag in MB": 7},
            {"Cluster": "batman", "Member": "pg2", "Host": "127.0.0.1:5434", "Role": "Replica",
             "State": "stopped", "Lag in MB": "unknown", "Tags": {"nofailover": true}}
        ])
    );

    let run = cluster.ctl(&["list"]).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert!(
        lines[0].starts_with("+ Cluster: batman (7268616322854375442) -"),
        "{}",
        run.stdout
    );
    assert_eq!(
        lines[1],
        "| Member | Host           | Role    | State   | TL | Lag in MB | Tags             |"
    );
    assert_eq!(lines.last(), Some(&" Maintenance mode: on"));

    let run = cluster.ctl(&["topology"]).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.stdout.contains("| + pg1 "), "{}", run.stdout);

    // Reading took no lock and published no member.
    let state = cluster.reader().await.cluster().await.unwrap();
    assert_eq!(state.leader.unwrap().name, "pg0");
    let names: Vec<&str> = state.members.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(names, ["pg0", "pg1", "pg2"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn show_config_and_history_print_the_keys() {
    let down = closed_api_url().await;
    let Some(cluster) = Cluster::start([&down, &down]).await else {
        return;
    };
    let run = cluster.ctl(&["show-config"]).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(
        run.stdout,
        "loop_wait: 10\npause: true\npostgresql:\n  parameters:\n    max_connections: 100\n\
         ttl: 30\n\n"
    );
    let run = cluster.ctl(&["history", "-f", "json"]).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(
        run.stdout.trim(),
        r#"[{"TL": 1, "LSN": 25165984, "Reason": "no recovery target specified", "Timestamp": "2024-09-24T12:00:00+00:00", "New Leader": "pg0"}]"#
    );
    let run = cluster.ctl(&["show-config", "robin"]).await;
    assert_eq!(run.code, 1);
    assert!(
        run.stderr.contains("cluster robin has no configuration"),
        "{}",
        run.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edit_config_changes_the_config_key() {
    let down = closed_api_url().await;
    let Some(cluster) = Cluster::start([&down, &down]).await else {
        return;
    };
    let run = cluster
        .ctl(&[
            "edit-config",
            "-s",
            "ttl=40",
            "-p",
            "work_mem=8MB",
            "-s",
            "pause=null",
            "--force",
        ])
        .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    // The diff is difflib's, from sorted YAML before and after.
    assert_eq!(
        run.stdout,
        "--- \n+++ \n@@ -1,6 +1,6 @@\n loop_wait: 10\n-pause: true\n postgresql:\n  \
         \x20parameters:\n     max_connections: 100\n-ttl: 30\n+    work_mem: 8MB\n+ttl: 40\n\
         Configuration changed\n"
    );
    let state = cluster.reader().await.cluster().await.unwrap();
    let data = Value::Object(state.config.unwrap().value.data);
    assert_eq!(
        data,
        json!({"ttl": 40, "loop_wait": 10,
               "postgresql": {"parameters": {"max_connections": 100, "work_mem": "8MB"}}})
    );

    let run = cluster
        .ctl(&["edit-config", "-s", "ttl=40", "--force"])
        .await;
    assert_eq!((run.code, run.stdout.as_str()), (0, "Not changed\n"));

    // A patch on stdin is shown but not applied without --force.
    let run = cluster
        .ctl_with_stdin(&["edit-config", "--apply", "-"], Some("loop_wait: 5\n"))
        .await;
    assert_eq!(run.code, 1);
    assert!(run.stdout.contains("+loop_wait: 5"), "{}", run.stdout);
    assert!(run.stderr.contains("Use --force option to apply changes"));
    let run = cluster
        .ctl_with_stdin(
            &["edit-config", "--apply", "-", "--force", "-q"],
            Some("loop_wait: 5\n"),
        )
        .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let state = cluster.reader().await.cluster().await.unwrap();
    assert_eq!(state.config.unwrap().value.loop_wait(), 5);

    // Synchronous replication is not implemented: turning it on is refused, not ignored.
    let run = cluster
        .ctl(&["edit-config", "-s", "synchronous_mode=true", "--force"])
        .await;
    assert_eq!(run.code, 1);
    assert!(
        run.stderr.contains("synchronous_mode is not supported"),
        "{}",
        run.stderr
    );
    let state = cluster.reader().await.cluster().await.unwrap();
    assert!(!state.config.unwrap().value.synchronous_mode());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_and_resume_patch_the_leaders_config_with_credentials() {
    let api = FakeApi::start(200, r#"{"pause":true}"#).await;
    let down = closed_api_url().await;
    // The leader's API is down: the request goes to the next member.
    let Some(cluster) = Cluster::start([&down, &api.url]).await else {
        return;
    };
    let run = cluster.ctl(&["pause"]).await;
    assert_eq!(run.code, 1);
    assert_eq!(run.stderr, "Error: Cluster is already paused\n");
    assert!(api.received().is_empty());

    let run = cluster.ctl(&["resume"]).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(run.stdout, "Success: cluster management is resumed\n");
    assert!(
        run.stderr.contains("Member pg0 is not accessible"),
        "{}",
        run.stderr
    );
    let received = api.received();
    assert_eq!(received.len(), 1);
    assert_eq!(
        (received[0].method.as_str(), received[0].path.as_str()),
        ("PATCH", "/config")
    );
    assert_eq!(
        serde_json::from_str::<Value>(&received[0].body).unwrap(),
        json!({"pause": null})
    );
    // admin:secret from ctl.authentication.
    assert_eq!(
        received[0].authorization.as_deref(),
        Some("Basic YWRtaW46c2VjcmV0")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switchover_posts_to_the_leader_and_falls_back_to_the_failover_key() {
    let api = FakeApi::start(200, "Successfully switched over to \"pg1\"").await;
    let down = closed_api_url().await;
    let Some(cluster) = Cluster::start([&api.url, &down]).await else {
        return;
    };
    let run = cluster
        .ctl(&["switchover", "--candidate", "pg1", "--force"])
        .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.stdout.starts_with("Current cluster topology\n"));
    assert!(
        run.stdout
            .contains(" Successfully switched over to \"pg1\"\n"),
        "{}",
        run.stdout
    );
    let received = api.received();
    assert_eq!(
        (received[0].method.as_str(), received[0].path.as_str()),
        ("POST", "/switchover")
    );
    assert_eq!(
        serde_json::from_str::<Value>(&received[0].body).unwrap(),
        json!({"leader": "pg0", "candidate": "pg1", "scheduled_at": null})
    );

    // Checks before anything is sent.
    let run = cluster
        .ctl(&["switchover", "--candidate", "pg2", "--force"])
        .await;
    assert_eq!(run.code, 1);
    assert!(
        run.stderr
            .contains("Member pg2 does not exist in cluster batman")
    );
    let run = cluster.ctl(&["switchover", "--candidate", "pg1"]).await;
    assert_eq!(run.code, 1);
    assert!(
        run.stderr.contains("stdin is not a terminal; use --force"),
        "{}",
        run.stderr
    );
    assert_eq!(api.received().len(), 1);

    // With the leader's API down, the request is written to the failover key.
    drop(api);
    let dead = Cluster::start([&down, &down]).await.unwrap();
    let run = dead
        .ctl(&["failover", "--candidate", "pg1", "--force"])
        .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stdout
            .contains("Could not failover using Patroni api, falling back to DCS"),
        "{}",
        run.stdout
    );
    let state = dead.reader().await.cluster().await.unwrap();
    let failover = state.failover.unwrap().value;
    assert_eq!(
        (failover.leader.as_deref(), failover.candidate.as_deref()),
        (Some("pg0"), Some("pg1"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_reports_each_members_answer() {
    let api = FakeApi::start(200, "restarted successfully").await;
    let down = closed_api_url().await;
    let Some(cluster) = Cluster::start([&api.url, &down]).await else {
        return;
    };
    let run = cluster
        .ctl(&["restart", "batman", "pg0", "--pending", "--force"])
        .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stdout.ends_with("Success: restart on member pg0\n"),
        "{}",
        run.stdout
    );
    let received = api.received();
    assert_eq!(received[0].path, "/restart");
    assert_eq!(
        serde_json::from_str::<Value>(&received[0].body).unwrap(),
        json!({"restart_pending": true})
    );
    // pg1's API is down: a failure, exit code 1.
    let run = cluster.ctl(&["restart", "batman", "pg1", "--force"]).await;
    assert_eq!(run.code, 1);
    assert!(
        run.stdout.contains("Failed: restart for member pg1"),
        "{}",
        run.stdout
    );
    let run = cluster.ctl(&["restart", "batman", "pg9", "--force"]).await;
    assert_eq!(run.code, 1);
    assert!(
        run.stderr.contains("No any among provided members"),
        "{}",
        run.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_command_lines_exit_2_and_failures_exit_1() {
    let down = closed_api_url().await;
    let Some(cluster) = Cluster::start([&down, &down]).await else {
        return;
    };
    let run = cluster.ctl(&["list", "--foo"]).await;
    assert_eq!(run.code, 2);
    assert!(
        run.stderr.contains("Error: No such option: --foo"),
        "{}",
        run.stderr
    );
    let run = cluster.ctl(&["frobnicate"]).await;
    assert_eq!(run.code, 2);
    let run = cluster.ctl(&["list", "--help"]).await;
    assert_eq!(run.code, 0);
    assert!(run.stdout.starts_with("Usage: ha-agent ctl list [OPTIONS]"));

    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_ha-agent"));
    let output = command
        .args(["ctl", "-c", "/nonexistent/patronictl.yaml", "list"])
        .output()
        .await
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("not existing or no read rights"));
}
