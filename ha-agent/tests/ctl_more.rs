//! `ha-agent ctl flush`, `remove`, `version`, `dsn` and `query` as a user runs them: the
//! built binary against a cluster in a real etcd, member APIs that record what they were
//! sent, and (for `query`) a real PostgreSQL.
//!
//! Skips (or fails, when `DCS_TEST_REQUIRE` lists etcd or postgres) if a server cannot
//! start.

mod common;

use common::{Cluster, FakeApi, closed_api_url};
use dcs_core::model::Failover;
use dcs_core::{Dcs, DcsExt, Precondition};
use dcs_tests::fixtures::PostgresServer;
use dcs_tests::require::skip_or_fail;
use serde_json::{Value, json};

/// pg0's and pg1's member keys as `Cluster::start` writes them, with `extra` fields.
fn member(name: &str, api_url: &str, extra: &Value) -> Value {
    let mut data = match name {
        "pg0" => json!({
            "conn_url": "postgres://127.0.0.1:5432/postgres", "api_url": api_url,
            "state": "running", "role": "primary", "xlog_location": 67_420_024, "timeline": 2
        }),
        _ => json!({
            "conn_url": "postgres://127.0.0.1:5433/postgres", "api_url": api_url,
            "state": "running", "role": "replica", "xlog_location": 60_000_000,
            "replication_state": "streaming", "timeline": 2
        }),
    };
    let fields = data.as_object_mut().unwrap();
    for (key, value) in extra.as_object().unwrap() {
        fields.insert(key.clone(), value.clone());
    }
    data
}

fn scheduled_restart() -> Value {
    json!({"scheduled_restart": {"schedule": "2030-01-01T10:00:00+00:00", "postgres_version": null}})
}

fn requests(api: &FakeApi) -> Vec<(String, String)> {
    api.received()
        .into_iter()
        .map(|r| (r.method, r.path))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flush_restart_deletes_only_scheduled_restarts() {
    let api0 = FakeApi::start(200, "scheduled restart deleted").await;
    let api1 = FakeApi::start(200, "scheduled restart deleted").await;
    let Some(cluster) = Cluster::start([&api0.url, &api1.url]).await else {
        return;
    };
    cluster
        .publish("pg1", &member("pg1", &api1.url, &scheduled_restart()))
        .await;

    // Without a terminal, the confirmation needs --force; nothing is sent.
    let run = cluster.ctl(&["flush", "batman", "restart"]).await;
    assert_eq!(run.code, 1);
    assert!(
        run.stderr.contains("stdin is not a terminal; use --force"),
        "{}",
        run.stderr
    );
    assert!(api1.received().is_empty());

    let run = cluster
        .ctl(&["flush", "batman", "restart", "--force"])
        .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stdout.ends_with(
            "No scheduled restart for member pg0\nSuccess: flush scheduled restart for member \
             pg1\nNo scheduled restart for member pg2\n"
        ),
        "{}",
        run.stdout
    );
    assert!(api0.received().is_empty());
    assert_eq!(
        requests(&api1),
        [("DELETE".to_owned(), "/restart".to_owned())]
    );

    // A member with no restart left answers 404: a failure, exit code 1.
    let gone = FakeApi::start(404, "no restarts are scheduled").await;
    cluster
        .publish("pg1", &member("pg1", &gone.url, &scheduled_restart()))
        .await;
    let run = cluster
        .ctl(&["flush", "batman", "pg1", "restart", "--force"])
        .await;
    assert_eq!(run.code, 1);
    assert!(
        run.stdout.ends_with(
            "Failed: flush scheduled restart for member pg1, status code=404, (no restarts \
             are scheduled)\n"
        ),
        "{}",
        run.stdout
    );
    assert_eq!(requests(&gone).len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flush_switchover_asks_the_leader_or_clears_the_key() {
    let api0 = FakeApi::start(200, "scheduled switchover deleted").await;
    let api1 = FakeApi::start(200, "scheduled switchover deleted").await;
    let Some(cluster) = Cluster::start([&api0.url, &api1.url]).await else {
        return;
    };

    // Nothing scheduled: nothing is sent or written.
    let run = cluster.ctl(&["flush", "batman", "switchover"]).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(run.stdout, "No pending scheduled switchover\n");
    assert!(api0.received().is_empty() && api1.received().is_empty());
    assert!(
        cluster
            .reader()
            .await
            .cluster()
            .await
            .unwrap()
            .failover
            .is_none()
    );

    let scheduled = Failover {
        leader: Some("pg0".into()),
        candidate: Some("pg1".into()),
        scheduled_at: Some("2030-01-01T10:00:00+00:00".into()),
    };
    cluster
        .reader()
        .await
        .set_failover(&scheduled, Precondition::Absent)
        .await
        .unwrap();
    let run = cluster.ctl(&["flush", "batman", "switchover"]).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(run.stdout, "Success: scheduled switchover deleted\n");
    assert_eq!(
        requests(&api0),
        [("DELETE".to_owned(), "/switchover".to_owned())]
    );
    assert!(api1.received().is_empty());

    // No member answers: ctl clears the key itself.
    let down = closed_api_url().await;
    cluster
        .publish("pg0", &member("pg0", &down, &json!({})))
        .await;
    cluster
        .publish("pg1", &member("pg1", &down, &json!({})))
        .await;
    let run = cluster.ctl(&["flush", "batman", "switchover"]).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stdout
            .ends_with(" Could not find any accessible member of cluster batman\n"),
        "{}",
        run.stdout
    );
    assert!(
        run.stderr.contains("Member pg0 is not accessible")
            && run.stderr.contains("Member pg1 is not accessible"),
        "{}",
        run.stderr
    );
    let failover = cluster.reader().await.cluster().await.unwrap().failover;
    assert_eq!(failover.map(|f| f.value), Some(Failover::default()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remove_deletes_the_scope_only_after_three_right_answers() {
    let down = closed_api_url().await;
    let Some(cluster) = Cluster::start([&down, &down]).await else {
        return;
    };
    let other = cluster.client("robin", "robin0").await;
    other.initialize().await.unwrap();

    let wrong_answers = [
        ("robin\n", "Error: Cluster names specified do not match\n"),
        (
            "batman\nyes\n",
            "Error: You did not exactly type \"Yes I am aware\"\n",
        ),
        (
            "batman\nYes I am aware\npg1\n",
            "Error: You did not specify the current leader of the cluster\n",
        ),
        // Empty lines ask again; the end of input aborts.
        ("\nbatman\n\n", "Error: Aborted!\n"),
    ];
    for (answers, error) in wrong_answers {
        let run = cluster
            .ctl_with_stdin(&["remove", "batman"], Some(answers))
            .await;
        assert_eq!((run.code, run.stderr.as_str()), (1, error), "{answers:?}");
        let state = cluster.reader().await.cluster().await.unwrap();
        assert_eq!(state.members.len(), 3, "{answers:?} deleted nothing");
        assert!(state.leader.is_some() && state.config.is_some());
    }

    let run = cluster
        .ctl_with_stdin(&["remove", "batman"], Some("batman\nYes I am aware\npg0\n"))
        .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stdout
            .starts_with("+ Cluster: batman (7268616322854375442) -"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.ends_with(
            "Please confirm the cluster name to remove: You are about to remove all \
             information in DCS for batman, please type: \"Yes I am aware\": This cluster \
             currently is healthy. Please specify the leader name to continue: "
        ),
        "{}",
        run.stdout
    );
    let state = cluster.reader().await.cluster().await.unwrap();
    assert_eq!(state, dcs_core::ClusterState::default());
    // Another cluster in the same etcd keeps its keys.
    let robin = cluster.client("robin", "reader").await;
    assert!(robin.cluster().await.unwrap().initialize.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn version_prints_ours_then_each_members_versions() {
    let api = FakeApi::start(
        200,
        r#"{"state":"running","role":"primary","server_version":160004,"patroni":{"version":"4.0.4","scope":"batman"}}"#,
    )
    .await;
    let down = closed_api_url().await;
    let Some(cluster) = Cluster::start([&api.url, &down]).await else {
        return;
    };
    let first = format!(
        "ha-agent ctl version {} (Patroni-compatible ",
        env!("CARGO_PKG_VERSION")
    );

    let run = cluster.ctl(&["version"]).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.stdout.starts_with(&first), "{}", run.stdout);
    assert_eq!(run.stdout.lines().count(), 1);

    let run = cluster.ctl(&["version", "batman"]).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert!(lines[0].starts_with(&first), "{}", run.stdout);
    // pg2 publishes no API: patronictl skips it too.
    assert_eq!(lines.len(), 4, "{}", run.stdout);
    assert_eq!(lines[1..3], ["", "pg0: Patroni 4.0.4 PostgreSQL 16.4"]);
    assert!(
        lines[3].starts_with("pg1: failed to get version: "),
        "{}",
        run.stdout
    );
    assert_eq!(requests(&api), [("GET".to_owned(), "/patroni".to_owned())]);

    let run = cluster.ctl(&["version", "batman", "pg0"]).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stdout
            .ends_with("\n\npg0: Patroni 4.0.4 PostgreSQL 16.4\n"),
        "{}",
        run.stdout
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dsn_prints_the_chosen_members_host_and_port() {
    let down = closed_api_url().await;
    let Some(cluster) = Cluster::start([&down, &down]).await else {
        return;
    };
    for (args, dsn) in [
        (&["dsn"][..], "host=127.0.0.1 port=5432\n"),
        (
            &["dsn", "batman", "-r", "replica"],
            "host=127.0.0.1 port=5433\n",
        ),
        (&["dsn", "-m", "pg2"], "host=127.0.0.1 port=5434\n"),
    ] {
        let run = cluster.ctl(args).await;
        assert_eq!((run.code, run.stdout.as_str()), (0, dsn), "{}", run.stderr);
    }
    let run = cluster.ctl(&["dsn", "-m", "pg9"]).await;
    assert_eq!(
        (run.code, run.stderr.as_str()),
        (1, "Error: Can not find a suitable member\n")
    );
    let run = cluster.ctl(&["dsn", "-r", "replica", "-m", "pg1"]).await;
    assert_eq!(
        (run.code, run.stderr.as_str()),
        (
            1,
            "Error: --role and --member are mutually exclusive options\n"
        )
    );
    let run = cluster.ctl(&["dsn", "-r", "boss"]).await;
    assert_eq!(run.code, 2);
}

/// The user and password in a `postgres://user[:password]@host...` URL.
fn login(url: &str) -> (String, Option<String>) {
    let authority = url.split_once("://").map_or(url, |(_, rest)| rest);
    let userinfo = authority.split_once('@').map_or("postgres", |(u, _)| u);
    match userinfo.split_once(':') {
        Some((user, password)) => (user.to_owned(), Some(password.to_owned())),
        None => (userinfo.to_owned(), None),
    }
}

/// `ha-agent ctl query -U <user> -d postgres <args>`, with the password in `PGPASSWORD`.
async fn run_query(
    cluster: &Cluster,
    (user, password): &(String, Option<String>),
    args: &[&str],
) -> common::Run {
    let mut all = vec!["query", "-U", user, "-d", "postgres"];
    all.extend_from_slice(args);
    let env: Vec<(&str, &str)> = password
        .as_deref()
        .map(|p| ("PGPASSWORD", p))
        .into_iter()
        .collect();
    cluster.ctl_with_env(&all, None, &env).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_runs_sql_on_the_chosen_members_postgres() {
    let postgres = match PostgresServer::start().await {
        Ok(server) => server,
        Err(error) => return skip_or_fail("postgres", error),
    };
    let down = closed_api_url().await;
    let Some(cluster) = Cluster::start([&down, &down]).await else {
        return;
    };
    let conn_url = format!(
        "postgres://{}:{}/postgres",
        postgres.host(),
        postgres.port()
    );
    let extra = json!({"conn_url": conn_url});
    cluster.publish("pg0", &member("pg0", &down, &extra)).await;
    cluster.publish("pg1", &member("pg1", &down, &extra)).await;
    let login = login(postgres.url());
    let query = |args: &'static [&'static str]| run_query(&cluster, &login, args);

    let run = query(&[
        "-c",
        "SELECT 1 AS one, true AS yes, NULL AS nothing, 'x' AS t",
    ])
    .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(run.stdout, "one\tyes\tnothing\tt\n1\tTrue\tNone\tx\n");

    let run = query(&["-c", "SELECT 1 AS one", "--format", "json"]).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(run.stdout, "[{\"one\": 1}]\n");

    // Several statements: the last one's rows.
    let run = query(&["-m", "pg1", "-c", "SELECT 1; SELECT 2 AS two"]).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(run.stdout, "two\n2\n");

    // SQL from a file.
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), "SELECT 'from a file' AS source\n").unwrap();
    let run = run_query(&cluster, &login, &["-f", file.path().to_str().unwrap()]).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(run.stdout, "source\nfrom a file\n");

    // A failing statement prints patronictl's row and exits 1.
    let run = query(&["-c", "SELECT * FROM no_such_table"]).await;
    assert_eq!(run.code, 1);
    assert!(
        run.stdout.ends_with("\tERROR, SQLSTATE: 42P01\n"),
        "{}",
        run.stdout
    );
    assert!(run.stderr.contains("no_such_table"), "{}", run.stderr);

    // pg1's key says replica, but its server is not in recovery.
    let run = query(&["-r", "replica", "-c", "SELECT 1"]).await;
    assert_eq!(run.code, 1);
    assert!(
        run.stdout
            .ends_with("\tNo connection to role=replica is available\n"),
        "{}",
        run.stdout
    );

    // Bad command lines: patronictl's errors.
    let run = query(&[]).await;
    assert_eq!(
        (run.code, run.stderr.as_str()),
        (1, "Error: You need to specify either --command or --file\n")
    );
    let run = query(&["-c", "SELECT 1", "-f", "q.sql"]).await;
    assert_eq!(
        (run.code, run.stderr.as_str()),
        (
            1,
            "Error: --file and --command are mutually exclusive options\n"
        )
    );
    let run = query(&["-c", "SELECT 1", "--format", "xml"]).await;
    assert_eq!(run.code, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_commands_are_in_the_help_and_check_their_command_lines() {
    let down = closed_api_url().await;
    let Some(cluster) = Cluster::start([&down, &down]).await else {
        return;
    };
    let run = cluster.ctl(&["--help"]).await;
    assert_eq!(run.code, 0);
    for line in [
        "  dsn          Generate a dsn for the provided member",
        "  flush        Discard scheduled events",
        "  query        Query a Patroni PostgreSQL member",
        "  remove       Remove cluster from DCS",
        "  version      Output version of patronictl command",
    ] {
        assert!(run.stdout.contains(line), "{line}: {}", run.stdout);
    }
    let run = cluster.ctl(&["flush", "--help"]).await;
    assert_eq!(run.code, 0);
    assert!(
        run.stdout
            .starts_with("Usage: ha-agent ctl flush [OPTIONS] CLUSTER_NAME"),
        "{}",
        run.stdout
    );

    let run = cluster.ctl(&["flush", "batman"]).await;
    assert_eq!(run.code, 2);
    assert!(
        run.stderr
            .contains("Error: Missing argument '{restart|switchover}'."),
        "{}",
        run.stderr
    );
    let run = cluster.ctl(&["flush", "batman", "reboot"]).await;
    assert_eq!(run.code, 2);
    let run = cluster.ctl(&["remove"]).await;
    assert_eq!(run.code, 2);
    assert!(
        run.stderr
            .contains("Error: Missing argument 'CLUSTER_NAME'."),
        "{}",
        run.stderr
    );
    let run = cluster.ctl(&["flush", "batman", "pg9", "restart"]).await;
    assert_eq!(
        (run.code, run.stderr.as_str()),
        (1, "Error: No any among provided members\n")
    );
}
